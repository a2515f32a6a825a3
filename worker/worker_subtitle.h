/*
 * worker_subtitle.h - SRT and WebVTT from the word timings a speech
 * provider returns.  Pure functions (no I/O) so they are unit-tested on
 * their own; the providers feed them words and add the two files.
 */
#ifndef MPFARM_WORKER_SUBTITLE_H
#define MPFARM_WORKER_SUBTITLE_H

#include <stdbool.h>
#include <stddef.h>
#include "worker_provider.h"

#define SUB_LINE_MAX  42        /* characters (code points) per line */
#define SUB_LINES     2
#define SUB_DUR_MAX   7.0       /* seconds a cue may last */
#define SUB_PAUSE     0.7       /* a silence this long starts a new cue */
#define SUB_DUR_MIN   1.0       /* short cues are held this long if free */

/* One spoken word; text need not be NUL-terminated.  A start or end that
 * is not finite (NAN) means "not given". */
struct sub_word {
	const char *text;
	size_t      len;
	double      start;
	double      end;
	bool        space_before;   /* joined to the previous word by a space */
};

struct sub_cue {
	double start;
	double end;
	char  *text;                /* lines separated by '\n' */
};

/* Group words into cues: at most SUB_LINES lines of SUB_LINE_MAX
 * characters and SUB_DUR_MAX seconds, broken at pauses over SUB_PAUSE and
 * after sentence ends.  0 / -1. */
int  worker_subtitle_cues(const struct sub_word *w, size_t n,
			  struct sub_cue **cues, size_t *ncues);
/* Free the cues worker_subtitle_cues made (NULL is fine). */
void worker_subtitle_cues_free(struct sub_cue *cues, size_t n);

/* The two file formats; malloc'd, NUL-terminated, *len set. */
char *worker_subtitle_srt(const struct sub_cue *cues, size_t n, size_t *len);
char *worker_subtitle_vtt(const struct sub_cue *cues, size_t n, size_t *len);

/* Append the words of `text` spread evenly over [start, end] (for
 * providers that time whole segments, not words).  *w grows as needed,
 * never past max entries: when the words would take *n past max, nothing
 * is appended and -1 is returned (the caller's budget, shared by all its
 * segments); else 0. */
int  worker_subtitle_spread(const char *text, double start, double end,
			    size_t max, struct sub_word **w, size_t *n,
			    size_t *cap);

/* Add ".srt" and ".vtt" outputs to res when there is at least one cue. */
void worker_subtitle_add(struct provider_result *res,
			 const struct sub_word *w, size_t n);

#endif
