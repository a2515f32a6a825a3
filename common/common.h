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

int  log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level lvl);   /* "info" */
void log_set_level(enum log_level lvl);
/* True when a line of this level would be written: lets a caller skip
 * the work of gathering values for a debug line nobody reads. */
bool log_wants(enum log_level lvl);
/* Where lines go: a file descriptor (default 2). The master points it at the
 * log file; workers write to the pipe the master forwards. */
void log_set_fd(int fd);
int  log_get_fd(void);
/* Called before each log line is written, e.g. to clear a progress line. */
void log_set_hook(void (*hook)(void));
void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define log_debug(ev, ...) log_event(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)
/* Quote a value for a key=value line: returns a pointer into one of a few
 * rotating static buffers (safe for up to 4 uses in one log call).  Bytes
 * that are not printable ASCII are escaped as \xNN, so invalid UTF-8 and
 * newlines in file names never break the one-line-per-event rule. */
const char *log_quote(const char *s);
/* Print "mpfarm: message" to stderr for command-line tools (not key=value). */
void say_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Start-up only: print and exit(code). */
void fatal(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

/* ---- process titles (common_title.c) -------------------------------- */
/* First thing in main(): moves the command line's strings and the
 * environment to the heap so their memory can hold a title, and returns
 * the argv copy main() must use from then on (argv stays parseable).
 * Never fails: without a usable area, title_set only sets the short
 * name. */
char **title_init(int argc, char **argv);
/* Set the title `ps -o args` shows ("mpfarm: worker 3 idle"), truncated
 * to the original command line's and environment's length, and the
 * short name (comm) to "mpfarm-" and the title's role word. */
void title_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- memory and strings (common_util.c) ----------------------------- */
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
void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keep data NUL-terminated (not counted in len). */
void buf_terminate(struct buf *b);

/* ---- time ----------------------------------------------------------- */
int64_t time_mono_ms(void);   /* CLOCK_MONOTONIC, for timeouts */
int64_t time_wall_ms(void);   /* CLOCK_REALTIME, for the database */

/* ---- files ----------------------------------------------------------- */
/* mkdir -p of the parent folders of `path` (not the last component). */
int  file_mkdirs_parent(const char *path, char *err, size_t errlen);
/* Write `len` bytes to a temporary file beside `final` (same folder, name
 * starting with ".mpfarm-tmp."), optionally fsync it.  On success *tmp_out
 * holds the malloc'd temp path; the caller renames it (under the store's
 * write lock) or unlinks it. */
int  file_write_temp(const char *final, const void *data, size_t len,
		     bool durable, char **tmp_out, char *err, size_t errlen);
/* fsync the folder that holds `path` (durable mode, after a rename). */
int  file_fsync_dir(const char *path);
/* Output paths: "DIR/transcripts/REL" + suffix, "DIR/translations/LANG/REL"
 * + suffix.  Returns malloc'd string. */
char *file_output_path(const char *outdir, int stage, const char *lang,
		       const char *rel, const char *suffix);
/* True when the path's base name looks like one of our temp files. */
bool file_is_temp(const char *path);

/* ---- processes ------------------------------------------------------ */
/* True if a process with this pid exists (kill(pid, 0) semantics). */
bool proc_alive(pid_t pid);
/* Set FD_CLOEXEC / O_NONBLOCK. */
int fd_set_cloexec(int fd);
int fd_set_nonblock(int fd, bool on);

#endif
