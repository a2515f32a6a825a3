/*
 * common_store_audit.h - the store queries of the bookkeeping commands
 * (scan's conflict pre-check, retry, fix and check) that the farm itself never
 * needs: reading every job with its file's paths and setting a job's status
 * by hand.  Kept apart from common_store.c so the farm's store API stays
 * small; it uses the same schema and driver (common_db.h).
 */
#ifndef MPFARM_COMMON_STORE_AUDIT_H
#define MPFARM_COMMON_STORE_AUDIT_H

#include "common_store.h"

/* status, retry, fix and check have nothing to work on without a database
 * and must not create an empty one: true (after saying so, naming the file
 * and the command that creates it) when `path` does not exist. */
bool store_audit_db_missing(const char *path, const char *cmd);

/* ---- scan: what the store already knows about a file ----------------- */
struct store_known_file {
	bool    found;          /* registered: store_file_add will say
				 * unchanged or changed */
	int64_t size;           /* as registered */
	int64_t mtime_ns;
	int64_t dev, ino;       /* ino 0: not recorded (schema 1) */
	char   *conflict_abs;   /* malloc'd: another file holds this rel path,
				 * store_file_add will say STORE_CONFLICT */
};
typedef struct store_audit_lookup store_audit_lookup_t;

/* Prepared look ups, reused for every file of a scan. */
int  store_audit_lookup_open(store_t *st, store_audit_lookup_t **out);
/* What store_file_add would find for (rel, abs), without writing: the same
 * rules (a file is known by its rel path, or by its absolute path when an
 * earlier scan registered it from another root under another name).
 * Fills *kf (clearing it first); returns 0 or -1. */
int  store_audit_lookup_file(store_audit_lookup_t *lk, const char *rel,
			     const char *abs, struct store_known_file *kf);
void store_audit_lookup_close(store_audit_lookup_t *lk);
void store_known_file_clear(struct store_known_file *kf);
/* scan --dry-run: how many translation jobs for `lang` a scan would add to
 * files already registered (those without one).  0 or -1. */
int  store_audit_lang_missing(store_t *st, const char *lang, int64_t *n);

/* ---- fix / check: every job with its file ----------------------------- */
struct store_audit_job {
	int64_t job_id;
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	enum job_status status;
	pid_t   owner_pid;      /* worker holding an in-progress job, or 0 */
	char   *rel;            /* shared by the jobs of one file */
	char   *abs;
	bool    owns_paths;     /* the first job of its file frees them */
};
struct store_audit_jobs {
	struct store_audit_job *v;
	size_t n;
	int64_t files;
};
/* All jobs, ordered by file then stage then language. Read only. */
int  store_audit_jobs_load(store_t *st, struct store_audit_jobs *out);
void store_audit_jobs_free(struct store_audit_jobs *js);

/* One hand-made status change (to not_started, completed or failed), in
 * its own short BEGIN IMMEDIATE transaction, applied only if the job is
 * still in status `from` (a farm may be running).  Owner and lease are
 * cleared; a job going back to not_started is due at once and keeps its
 * attempts.  The schema's trigger makes a file's translations ready when
 * its transcript becomes completed and waiting again when it leaves
 * completed.  Leaving in-progress closes the open attempt row; `why` is
 * kept as its message (and as last_error for not_started and failed).
 * Returns 0 when changed, 1 when the job was no longer in `from`, -1 on
 * error (store_errmsg). */
int  store_audit_job_set(store_t *st, int64_t job_id, enum job_status from,
			 enum job_status to, const char *why);

/* Every not_started job of stage/lang ends failed with `why` (a provider
 * refused the key or quota).  Joins the caller's transaction if one is
 * open.  *n gets how many.  0 / -1. */
int  store_audit_fail_pending(store_t *st, int stage, const char *lang,
			      const char *why, int64_t *n);

/* The output name (rel path) of a job's media file: *rel is malloc'd,
 * NULL when the job does not exist.  0 / -1. */
int  store_audit_job_rel(store_t *st, int64_t job_id, char **rel);
/* The highest job id (0 when there is none): it moves when a scan or a
 * new language adds jobs, and costs one index lookup, so the progress
 * line can recompute its total only then.  0 / -1. */
int  store_audit_jobs_last(store_t *st, int64_t *last);

/* Each in-progress job with its owner pid, for the master's start-up
 * clean-up of a dead farm's temp files; stops at fn's -1.  0 / -1. */
int  store_audit_in_progress_each(store_t *st,
	int (*fn)(const struct job_ref *job, pid_t owner, void *arg), void *arg);

/* ---- retry ------------------------------------------------------------ */

/* The file registered with this exact path (bytes): by its absolute path,
 * or with by_rel by its output name (path relative to its scan root).
 * 0 and *file_id when found, 1 when not, -1 on error. */
int  store_audit_file_find(store_t *st, const char *path, bool by_rel,
			   int64_t *file_id);

struct store_retry_filter {
	int     stage;                          /* -1 = both */
	const char (*langs)[CONFIG_LANG_MAX];   /* translations of these only */
	int     nlangs;                         /* 0 = every language */
	int64_t file_id;                        /* 0 = every file */
};
struct store_retry_job {
	int64_t job_id;
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	int     attempts;
	char   *file;           /* as the view's file_path shows it */
	char   *last_error;     /* NULL if none */
};
struct store_retry_jobs {
	struct store_retry_job *v;
	size_t n;
};
/* The failed jobs the filter selects, ordered by file, stage, language.
 * With apply, in one BEGIN IMMEDIATE transaction (or the caller's), they
 * also go back to not_started with attempts, last_error and the backoff
 * reset: exactly the listed jobs, no other.  Without apply nothing is
 * written (a read-only store works).  An invalid language code is an
 * error.  0, or -1 with nothing changed and *out empty. */
int  store_audit_retry(store_t *st, const struct store_retry_filter *f,
		       bool apply, struct store_retry_jobs *out);
void store_audit_retry_free(struct store_retry_jobs *js);

/* check: the engine's own consistency check (SQLite: PRAGMA quick_check;
 * PostgreSQL: that the server answers, its pages being its own to check).
 * *problem is NULL when the database is sound, else a malloc'd summary of
 * what the engine found.  -1 on error. */
int  store_audit_quick_check(store_t *st, char **problem);

#endif
