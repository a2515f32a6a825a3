/*
 * worker_subtitle.c - SRT and WebVTT built from word timings.  Cues follow
 * the usual broadcast rules (two lines of about 42 characters, at most
 * 7 seconds, new cue at a pause or after a sentence) so that the files are
 * usable as they are, not just a dump of timestamps.  Lengths count UTF-8
 * code points, since most of the archives are not English.
 */
#include "worker_subtitle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB_CLAUSE_BONUS 6

static size_t
sub_cps(const char *s, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			c++;
	return c;
}

/* Trim the word and tell whether there is anything left. */
static bool
sub_word_span(const struct sub_word *w, const char **p, size_t *n)
{
	const char *s = w->text;
	size_t len = w->text ? w->len : 0;

	while (len > 0 && (unsigned char)s[0] <= ' ') {
		s++;
		len--;
	}
	while (len > 0 && (unsigned char)s[len - 1] <= ' ')
		len--;
	*p = s;
	*n = len;
	return len > 0;
}

/* 1 when word i of a cue starting at a is preceded by a space. */
static size_t
sub_space(const struct sub_word *w, const size_t *wl, size_t a, size_t i)
{
	return wl[i] > 0 && i > a && w[i].space_before;
}

/* The layout of words [a, b): where to break into two lines (index of the
 * first word of line 2, or b for one line) and the longer line's length. */
static size_t
sub_layout(const struct sub_word *w, const size_t *wl, size_t a, size_t b,
	   size_t *brk)
{
	size_t total = 0, left = 0, best = (size_t)-1, best_worst = (size_t)-1;

	for (size_t i = a; i < b; i++)
		total += wl[i] + sub_space(w, wl, a, i);
	*brk = b;
	if (total <= SUB_LINE_MAX)
		return total;
	for (size_t k = a + 1; k < b; k++) {
		left += wl[k - 1] + sub_space(w, wl, a, k - 1);
		if (wl[k] == 0)
			continue;       /* breaks go before a visible word */
		size_t right = total - left - sub_space(w, wl, a, k);
		size_t worst = left > right ? left : right;
		/* a line ending at a clause reads better: allow it to be a
		 * few characters less balanced */
		size_t score = worst + SUB_CLAUSE_BONUS;
		const char *p;
		size_t pn = 0;
		for (size_t j = k; j-- > a && pn == 0;)
			sub_word_span(&w[j], &p, &pn);
		if (pn > 0 && strchr(",;:", p[pn - 1]) != NULL)
			score = worst;
		bool fits = worst <= SUB_LINE_MAX;
		bool best_fits = best_worst <= SUB_LINE_MAX;
		if ((fits && (!best_fits || score < best)) ||
		    (!fits && !best_fits && worst < best_worst)) {
			best = score;
			best_worst = worst;
			*brk = k;
		}
	}
	return best_worst == (size_t)-1 ? total : best_worst;
}

static void
sub_cue_emit(const struct sub_word *w, const size_t *wl, size_t a, size_t b,
	     double start, double end, struct sub_cue *cue)
{
	struct buf t;
	size_t brk;

	buf_init(&t);
	sub_layout(w, wl, a, b, &brk);
	for (size_t i = a; i < b; i++) {
		const char *p;
		size_t n;
		if (!sub_word_span(&w[i], &p, &n))
			continue;
		if (i == brk && t.len > 0)
			buf_append(&t, "\n", 1);
		else if (i > a && w[i].space_before && t.len > 0)
			buf_append(&t, " ", 1);
		for (size_t j = 0; j < n; j++) {
			/* a newline inside a word would end the cue early */
			char ch = ((unsigned char)p[j] < ' ') ? ' ' : p[j];
			buf_append(&t, &ch, 1);
		}
	}
	buf_terminate(&t);
	cue->start = start;
	cue->end = end;
	cue->text = t.data;
}

int
worker_subtitle_cues(const struct sub_word *w, size_t n,
		     struct sub_cue **cues, size_t *ncues)
{
	size_t *wl = xcalloc(n ? n : 1, sizeof(*wl));
	struct sub_cue *out = xcalloc(n ? n : 1, sizeof(*out));
	size_t nout = 0, a = 0, b = 0, brk;
	double t = 0, cstart = 0, cend = 0, prev_end = 0;
	const char *p;

	for (size_t i = 0; i < n; i++) {
		size_t len;
		wl[i] = sub_word_span(&w[i], &p, &len) ? sub_cps(p, len) : 0;
	}
	for (size_t i = 0; i <= n; i++) {
		if (i < n && wl[i] == 0)
			continue;
		double ws = (i < n && isfinite(w[i].start)) ? w[i].start : t;
		double we = (i < n && isfinite(w[i].end)) ? w[i].end : ws;
		if (we < ws)
			we = ws;
		if (b > a) {
			bool cut = i == n;
			if (!cut) {
				size_t plen, len;
				sub_word_span(&w[b - 1], &p, &plen);
				len = sub_layout(w, wl, a, i + 1, &brk);
				cut = ws - prev_end > SUB_PAUSE ||
				      text_sentence_end(p, plen) ||
				      we - cstart > SUB_DUR_MAX ||
				      len > SUB_LINE_MAX;
			}
			if (cut) {
				sub_cue_emit(w, wl, a, b, cstart, cend, &out[nout++]);
				a = i;
			}
		}
		if (i == n)
			break;
		if (b <= a) {
			a = i;
			cstart = ws;
		}
		b = i + 1;
		cend = we;
		prev_end = t = we;
	}
	/* hold short cues a little longer, never into the next one */
	for (size_t i = 0; i < nout; i++) {
		double limit = i + 1 < nout ? out[i + 1].start : INFINITY;
		if (out[i].end - out[i].start < SUB_DUR_MIN)
			out[i].end = fmin(out[i].start + SUB_DUR_MIN, limit);
		if (out[i].end > limit)
			out[i].end = limit;
		if (out[i].end < out[i].start)
			out[i].end = out[i].start;
	}
	free(wl);
	*cues = out;
	*ncues = nout;
	return 0;
}

void
worker_subtitle_cues_free(struct sub_cue *cues, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(cues[i].text);
	free(cues);
}

static void
sub_time(struct buf *b, double t, char frac_sep)
{
	long long ms = (isfinite(t) && t > 0) ? llround(t * MS_PER_S) : 0;

	buf_printf(b, "%02lld:%02lld:%02lld%c%03lld", ms / MS_PER_H,
	    ms / (60 * MS_PER_S) % 60, ms / MS_PER_S % 60, frac_sep,
	    ms % MS_PER_S);
}

char *
worker_subtitle_srt(const struct sub_cue *cues, size_t n, size_t *len)
{
	struct buf b;

	buf_init(&b);
	buf_terminate(&b);
	for (size_t i = 0; i < n; i++) {
		buf_printf(&b, "%zu\n", i + 1);
		sub_time(&b, cues[i].start, ',');
		buf_append(&b, " --> ", 5);
		sub_time(&b, cues[i].end, ',');
		buf_printf(&b, "\n%s\n\n", cues[i].text);
	}
	*len = b.len;
	return b.data;
}

char *
worker_subtitle_vtt(const struct sub_cue *cues, size_t n, size_t *len)
{
	struct buf b;

	buf_init(&b);
	buf_append(&b, "WEBVTT\n\n", 8);
	for (size_t i = 0; i < n; i++) {
		sub_time(&b, cues[i].start, '.');
		buf_append(&b, " --> ", 5);
		sub_time(&b, cues[i].end, '.');
		buf_append(&b, "\n", 1);
		/* cue text is HTML-ish in WebVTT: "-->" or "<" would break it */
		for (const char *p = cues[i].text; *p; p++) {
			if (*p == '&')
				buf_append(&b, "&amp;", 5);
			else if (*p == '<')
				buf_append(&b, "&lt;", 4);
			else if (*p == '>')
				buf_append(&b, "&gt;", 4);
			else
				buf_append(&b, p, 1);
		}
		buf_append(&b, "\n\n", 2);
	}
	*len = b.len;
	return b.data;
}

int
worker_subtitle_spread(const char *text, double start, double end, size_t max,
		       struct sub_word **w, size_t *n, size_t *cap)
{
	size_t total = 0, done = 0, words = 0, i = 0;
	size_t len = text ? strlen(text) : 0;

	if (!isfinite(start) || !isfinite(end) || end < start)
		end = start;
	/* counted before anything grows: one hostile segment of "a a a ..."
	 * is millions of words, each far bigger here than in the answer */
	for (size_t j = 0; j < len; j++) {
		bool word = (unsigned char)text[j] > ' ';
		total += word;
		words += word && (j == 0 || (unsigned char)text[j - 1] <= ' ');
	}
	if (words > max || *n > max - words)
		return -1;
	while (i < len) {
		size_t s;
		while (i < len && (unsigned char)text[i] <= ' ')
			i++;
		if (i >= len)
			break;
		s = i;
		while (i < len && (unsigned char)text[i] > ' ')
			i++;
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			if (*cap > max)
				*cap = max;     /* max >= *n + words > *n here */
			*w = xrealloc(*w, *cap * sizeof(**w));
		}
		/* time by share of characters: long words take longer */
		struct sub_word *x = &(*w)[(*n)++];
		x->text = text + s;
		x->len = i - s;
		x->start = start + (end - start) * (double)done / (double)total;
		done += i - s;
		x->end = start + (end - start) * (double)done / (double)total;
		x->space_before = true;
	}
	return 0;
}

void
worker_subtitle_add(struct provider_result *res, const struct sub_word *w,
		    size_t n)
{
	struct sub_cue *cues = NULL;
	size_t ncues = 0, len;
	char *data;

	if (n == 0 || worker_subtitle_cues(w, n, &cues, &ncues) < 0)
		return;
	if (ncues > 0) {
		data = worker_subtitle_srt(cues, ncues, &len);
		provider_result_add(res, ".srt", data, len);
		data = worker_subtitle_vtt(cues, ncues, &len);
		provider_result_add(res, ".vtt", data, len);
	}
	worker_subtitle_cues_free(cues, ncues);
}
