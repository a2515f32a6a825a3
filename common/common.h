/*
 * common.h - what every mpfarm process shares: logging, memory and time
 * helpers, exit codes.  Kept small on purpose; anything with state of its
 * own (the store, the config) has its own header.
 */
#ifndef MPFARM_COMMON_H
#define MPFARM_COMMON_H

#define _GNU_SOURCE 1
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MPFARM_VERSION "0.1.0"

/* Exit codes of `mpfarm run` and the other commands (SPEC). */
#define EXIT_OK        0
#define EXIT_FATAL     1   /* other fatal errors; `check` finding problems */
#define EXIT_USAGE     2   /* usage or config error, before any worker */
#define EXIT_JOBFAIL   3   /* some jobs ended failed */

/* A worker exits with this when its environment is unusable (database or
 * output folder cannot be opened): the master stops the farm instead of
 * respawning into a fork storm.  Same value as sysexits' EX_CONFIG. */
#define WORKER_EXIT_CONFIG 78

/* ---- logging (common_log.c) ------------------------------------------
 * One event per line, key=value pairs:
 *   ts=2026-11-25T10:00:00.123Z level=info pid=123 event=worker_spawn slot=2
 * The caller passes the event name and a printf-style tail of key=value
 * pairs.  Values that may contain spaces go through log_quote(). */
enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* "debug", "info", "warn" (or "warning"), "error", in any case, into *out:
 * 0, or -1 with *out untouched for any other word. */
int  log_level_parse(const char *s, enum log_level *out);
/* The word for a level ("info"); "?" for a value outside the enum. */
const char *log_level_name(enum log_level lvl);
/* Lines below this level are dropped from now on (default info).  Never
 * fails. */
void log_set_level(enum log_level lvl);
/* True when a line of this level would be written: lets a caller skip
 * the work of gathering values for a debug line nobody reads. */
bool log_wants(enum log_level lvl);
/* Where lines go: a file descriptor (default 2). The master points it at the
 * log file; workers write to the pipe the master forwards.  The caller
 * keeps owning fd (it is never closed here).  log_get_fd says which one is
 * in use. */
void log_set_fd(int fd);
int  log_get_fd(void);
/* Called before each log line is written, e.g. to clear a progress line
 * (NULL: none). */
void log_set_hook(void (*hook)(void));
/* Write one line "ts=... level=... pid=... event=EVENT " + fmt's pairs,
 * built whole first and written in one go (so lines of several processes
 * do not interleave: under PIPE_BUF, one atomic pipe write), cut at 4000
 * bytes, any newline in a value made a space.  Lines below the level are
 * skipped; errno is kept.  A line that cannot be written (full disk,
 * closed pipe) is dropped: logging never fails its caller. */
void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define log_debug(ev, ...) log_event(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)
/* Quote a value for a key=value line: returns a pointer into one of a few
 * rotating static buffers (safe for up to 4 uses in one log call).  Bytes
 * that are not printable ASCII are escaped as \xNN, so invalid UTF-8 and
 * newlines in file names never break the one-line-per-event rule.  NULL
 * gives "-"; a value too long for the buffer is cut.  Never fails. */
const char *log_quote(const char *s);
/* Print "mpfarm: message" to stderr for command-line tools (not
 * key=value); a failed write is ignored. */
void say_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- process titles (common_title.c) -------------------------------- */
/* First thing in main(): moves the command line's strings and the
 * environment to the heap so their memory can hold a title, and returns
 * the argv copy main() must use from then on (argv stays parseable).
 * Never fails: without a usable area, title_set only sets the short
 * name. */
char **title_init(int argc, char **argv);
/* Set the title `ps -o args` shows ("mpfarm: worker 3 idle"), truncated
 * to the original command line's and environment's length, and the
 * short name (comm) to "mpfarm-" and the title's role word.  Never
 * fails (what the kernel refuses is left as it was). */
void title_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- memory and strings (common_util.c) ----------------------------- */
/* malloc, calloc, realloc, strdup, strndup and asprintf that never return
 * NULL (a size of 0 is served as 1): when memory runs out the process
 * writes "mpfarm: out of memory" to stderr and aborts (a worker is then
 * respawned by its master; nothing is half-written, since every output
 * and database change is whole or nothing).  xstrndup copies at most n
 * bytes and always NUL-terminates. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer. */
struct buf {
	char  *data;
	size_t len;
	size_t cap;
};
/* An empty buffer that owns nothing (buf_free of it is a no-op). */
void buf_init(struct buf *b);
/* Free the bytes and leave b empty, ready for use again. */
void buf_free(struct buf *b);
/* Append n bytes (or printf's output), growing as needed; like the x*
 * allocators these never fail. */
void buf_append(struct buf *b, const void *p, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keep data NUL-terminated (not counted in len); data is non-NULL after. */
void buf_terminate(struct buf *b);

/* Text that every SQL client and terminal reads (common_util.c).
 * TEXT_ESCAPE_PATH: a file name as the processing_status view and the
 * command-line listings show it: a backslash is doubled, and a control
 * character (below 0x20, 0x7f) or a byte that is not part of a valid UTF-8
 * sequence becomes a backslash, 'x' and two lower-case hex digits (\xff);
 * everything else is kept.  Reversible (text_unescape_path) and the
 * identity on the usual names.  TEXT_ESCAPE_MSG: a message (last_error):
 * only bytes that are not valid UTF-8 become \xNN, so the result is valid
 * UTF-8 but not reversible.  TEXT_ESCAPE_SHOW: text for a terminal or a
 * process title (failed, show, the dashboard, a worker's title): like
 * PATH, but a backslash is kept and the C1 controls U+0080..U+009F
 * (UTF-8 c2 80..c2 9f) become \xc2\xNN too, so no byte of a file name
 * can drive the terminal; not reversible.  All return a malloc'd
 * NUL-terminated string and never fail. */
enum text_escape_mode { TEXT_ESCAPE_PATH, TEXT_ESCAPE_MSG, TEXT_ESCAPE_SHOW };
char *text_escape(const void *s, size_t n, enum text_escape_mode mode);
/* The bytes a TEXT_ESCAPE_PATH string stands for (malloc'd, *n gets the
 * length), or NULL when `s` is not such a string (a lone backslash, an
 * unknown escape, bad hex digits, or an escape of a byte the escaping
 * would have kept). */
char *text_unescape_path(const char *s, size_t *n);

/* ---- human languages and their text (common_text.c) ------------------ */
/* The English name of a language code ("de" -> "German"), matched on
 * the code's primary part without regard to case ("DE", "de-AT" and
 * "de_at" are all German).  NULL when the language is not one mpfarm
 * knows; never fails otherwise. */
const char *text_lang_name(const char *code);
/* The length of s[0..n) once the closing quotes and brackets at its end
 * are set aside (at least one byte is always kept).  Never fails. */
size_t text_closers_trim(const char *s, size_t n);
/* The length of the closing quote or bracket that ends s[0..n), or 0 when
 * it ends in none.  Never fails. */
size_t text_closer_len(const char *s, size_t n);
/* Does s[0..n) end with a mark that ends a sentence ('.', '!', '?', the
 * ellipsis, the Arabic, Devanagari and CJK marks)?  Closers must already
 * be trimmed (text_closers_trim).  *wide (may be NULL) is set for the CJK
 * marks, which end a sentence even with no space after them.  Never
 * fails. */
bool text_sentence_mark(const char *s, size_t n, bool *wide);
/* text_sentence_mark after text_closers_trim: does the word or text
 * s[0..n) end a sentence, closing quotes and brackets aside? */
bool text_sentence_end(const char *s, size_t n);

/* ---- time ----------------------------------------------------------- */
#define MS_PER_S   1000              /* milliseconds in a second */
#define MS_PER_H   (3600 * MS_PER_S) /* milliseconds in an hour */
/* Milliseconds of CLOCK_MONOTONIC (for timeouts and intervals: it never
 * jumps) and of CLOCK_REALTIME (for what the database and the operator
 * read).  Never fail. */
int64_t time_mono_ms(void);
int64_t time_wall_ms(void);
/* The n-th delay of a capped exponential backoff: base doubled n times
 * (n < 0 counts as 0), never more than cap and never overflowing however
 * large n is.  base <= 0 gives base; cap < base gives cap. */
int64_t backoff_delay(int64_t base, int64_t cap, int n);
/* A delay d spread at random over [d/2, 2 * (d/2)], halves rounded down
 * ("equal jitter"), so a burst of failures does not come back at one
 * moment.  d <= 0 gives d. */
int64_t backoff_jitter(int64_t d);

/* ---- files ----------------------------------------------------------- */
/* mkdir -p of the parent folders of `path` (not the last component),
 * each made 0777 less the umask.  0 (also when they exist), or -1 with
 * err naming the folder that could not be made or is not a folder. */
int  file_mkdirs_parent(const char *path, char *err, size_t errlen);
/* The mode a new output file gets: 0666 less the process umask (read
 * without changing it for good).  Never fails. */
mode_t file_output_mode(void);
/* Output paths: "DIR/transcripts/REL" + suffix, "DIR/translations/LANG/REL"
 * + suffix.  Returns a malloc'd string; never fails. */
char *file_output_path(const char *outdir, int stage, const char *lang,
		       const char *rel, const char *suffix);
/* open(2) a file mpfarm keeps beside its database (the lock, the status
 * file, the log file): O_NOFOLLOW and O_CLOEXEC are added, and what is
 * opened must be a regular file.  A descriptor, or -1 with errno set and
 * err naming the path; a symbolic link there is refused (ELOOP) and its
 * target never opened, created or truncated. */
int  file_open_regular(const char *path, int flags, mode_t mode, char *err,
		       size_t errlen);
/* True when the path's base name looks like one of our temp files
 * (".mpfarm-tmp."...).  Pure; never fails. */
bool file_is_temp(const char *path);

/* ---- processes ------------------------------------------------------ */
/* The first descriptor after stdin, stdout and stderr: where a worker's
 * channel sits, and the lowest number a descriptor handed to an engine
 * may have. */
#define FD_AFTER_STDIO 3
/* True if a process with this pid exists (kill(pid, 0) semantics: EPERM
 * counts as alive); false for pid <= 0. */
bool proc_alive(pid_t pid);
/* Set FD_CLOEXEC, or set (on) or clear O_NONBLOCK, keeping the other
 * flags: 0, or -1 with errno from fcntl. */
int fd_set_cloexec(int fd);
int fd_set_nonblock(int fd, bool on);
/* In a child before exec or its own work: close every descriptor from
 * `first` up except `keep` (-1: none), whatever opened it and however
 * (close_range, or one by one up to FD_CLOSE_SCAN_MAX on kernels without
 * it).  Async-signal-safe. */
#define FD_CLOSE_SCAN_MAX 1024
void fd_close_from(int first, int keep);

/* ---- process hardening and leftovers (common_proc.c) ----------------- */
/* Make this process (and the workers it forks) not dumpable and set the
 * soft RLIMIT_CORE to 0, remembering the old limit.  -1 (logged, not
 * fatal) when the kernel refuses. */
int  proc_harden(void);
/* In an engine child before exec: the core limit proc_harden() found.
 * Async-signal-safe. */
void proc_core_restore(void);
/* Become a child subreaper: orphans of our descendants become our
 * children.  -1 (logged) when the kernel refuses. */
int  proc_subreaper_set(void);
/* SIGKILL every child of ours (and the process group each leads) whose
 * pid is not in keep[].  Returns how many were signalled. */
int  proc_children_kill(const pid_t *keep, int nkeep);
/* Kill and reap every child until none is left; `tick` (may be NULL) is
 * called between rounds.  0, or -1 when some child was still there after
 * timeout_ms (logged). */
int  proc_children_end(int timeout_ms, void (*tick)(void));

#endif
