/*
 * common_store.h - the job store: media files, jobs and the attempts log,
 * in SQLite (a file path) or PostgreSQL (a postgresql:// URL) behind the
 * driver of common_db.h; nothing outside the store's own files knows
 * which.  Every process opens its own store_t (workers after fork); a
 * store_t is never shared across fork.  All writes are short write
 * transactions.  Status strings are exactly SPEC's.
 */
#ifndef MPFARM_COMMON_STORE_H
#define MPFARM_COMMON_STORE_H

#include "common.h"
#include "common_config.h"

#define STORE_SCHEMA_VERSION 5

#define JOB_NOT_STARTED "not_started"
#define JOB_IN_PROGRESS "in-progress"
#define JOB_COMPLETED   "completed"
#define JOB_FAILED      "failed"

enum job_status {
	JOB_ST_NOT_STARTED = 0, JOB_ST_IN_PROGRESS, JOB_ST_COMPLETED,
	JOB_ST_FAILED, JOB_ST_COUNT
};
/* The spelling of a status the view and every listing use ("not_started", "in-progress", ...);
 * "unknown" for a value outside the enum.  Never fails. */
const char *job_status_name(enum job_status st);
/* "transcribe" or "translate" for STAGE_*; "unknown" otherwise.  Never
 * fails. */
const char *job_stage_name(int stage);
/* The name a (stage, language) pair goes by in listings, `status --json`
 * and the dashboard: "transcribe" or "translate:de" (the stage name alone
 * when lang is ""), written into out (cut to outlen; JOB_STAGE_KEY_MAX
 * holds any) and returned.  Never fails. */
#define JOB_STAGE_KEY_MAX (sizeof("translate:") + CONFIG_LANG_MAX)
const char *job_stage_key(int stage, const char *lang, char *out,
			  size_t outlen);
/* The STAGE_* a stage name stands for, -1 for any other text. */
int         job_stage_parse(const char *s);

/* What happened in one attempt; the attempts log keeps the name. */
enum job_outcome {
	OUT_COMPLETED = 0,
	OUT_TRANSIENT,      /* retry after backoff; counts an attempt */
	OUT_RATE_LIMITED,   /* 429 and friends; retry, does NOT count */
	OUT_PERMANENT,      /* fail at once */
	OUT_CRASHED,        /* worker died (exit code or signal) */
	OUT_TIMEOUT,        /* hung: killed by the master */
	OUT_INTERRUPTED,    /* farm stopped or master died; does not count */
	OUT_COUNT
};
const char *job_outcome_name(enum job_outcome o);

#define STORE_DURABLE  0x01   /* synchronous=FULL */
#define STORE_READONLY 0x02   /* status/check: never writes, never migrates */
#define STORE_OLD_OK   0x04   /* with READONLY: an older schema is read as
			       * it is (scan --dry-run) */
#define STORE_NO_TRACE 0x08   /* with READONLY: leave no -wal/-shm behind;
			       * a database no connection has open (no
			       * -wal file) is read immutable */
#define STORE_EMPTY_OK 0x10   /* with READONLY: a database without mpfarm's
			       * schema (a new PostgreSQL one) is no farm
			       * yet: store_open returns 0 with *out NULL */

typedef struct store store_t;

struct store_open_opts {
	int flags;
	int busy_timeout_ms;      /* 0 = default 10000 */
};

/* Open (creating and migrating if needed, each migration in one
 * transaction) the database at `path`.  WAL mode, foreign keys on, the
 * busy handler of the store (short spins, then sleeps, bounded by the busy
 * timeout).  On failure writes a one-line message naming the file into err
 * (e.g. "media_tracking.db: file is not a database") and returns -1. */
int  store_open(store_t **out, const char *path,
		const struct store_open_opts *opts, char *err, size_t errlen);
void store_close(store_t *st);
/* True when the store is a PostgreSQL database (no files beside it: no
 * flock, no status file; see README). */
bool store_is_pg(store_t *st);
/* After a scan that added files: PostgreSQL plans its
 * prepared statements from table statistics, and those of tables that
 * grew from nothing (autovacuum looks once a minute) make it walk the
 * wrong index, a lookup by file id scanning every transcription
 * (measured: 3 ms per file at 10 000 files).  ANALYZE media_files and
 * jobs so the claims and lookups that follow see their size, waiting at
 * most a second for a lock.  Nothing on SQLite.  0, or -1 (store_errmsg:
 * worth a warning, the scan itself is committed). */
int  store_stats_refresh(store_t *st);
/* The id of this master's boot, recorded on the jobs its workers claim
 * (PostgreSQL; "" = none).  Process-wide: set it before forking. */
void store_host_id_set(const char *id);
const char *store_host_id(void);
/* The connection under the store (common_db.h), for the bench and tests
 * that run SQL of their own; the program proper calls only store_*. */
struct db;
struct db *store_db(store_t *st);
/* The message of the last failed call on this store (never NULL). */
const char *store_errmsg(store_t *st);
/* True when the last failed call failed for a reason that passes: the
 * PostgreSQL server went away (the connection is reset on a later call,
 * after a backoff) or a lock conflict.  The caller retries the call
 * rather than failing a job.  Always false on SQLite, whose busy timeout
 * already waited. */
bool store_err_transient(store_t *st);

/* Record the configured target languages: creates the missing translation
 * jobs of every file for new languages (ready if the transcript is
 * completed) and rebuilds the processing_status view when the set changed.
 * Languages are never removed from jobs; the view shows the configured
 * ones. */
int  store_langs_sync(store_t *st, const char (*langs)[CONFIG_LANG_MAX],
		      int nlangs);

/* One value of the store's settings (a key/value table the store shares
 * between hosts and runs): 0 with *value malloc'd, 1 when the key is not
 * set, -1 on a store error. */
int  store_setting_get(store_t *st, const char *key, char **value);
/* Set key to value unless it is already set (the first writer wins), in a
 * transaction of its own or the caller's: 0 or -1. */
int  store_setting_add(store_t *st, const char *key, const char *value);

/* ---- scan ------------------------------------------------------------ */
struct media_file {
	const char *root;       /* scan root, absolute, as given (realpath) */
	const char *rel;        /* path relative to root: the output name */
	const char *abs;        /* absolute path */
	int64_t     size;
	int64_t     mtime_ns;
	int64_t     dev, ino;   /* st_dev, st_ino; ino 0 = not known */
	/* A symbolic link the scan followed (--follow-symlinks): the file it
	 * resolved to, as a scan root and a path beneath it.  NULL for a
	 * plain file (the worker opens rel beneath root). */
	const char *src_root;
	const char *src_rel;
};
enum store_add_result {
	STORE_ADDED = 0,        /* new file, jobs created */
	STORE_UNCHANGED,        /* already known, same size and mtime */
	STORE_CHANGED,          /* known, size, mtime, inode or link target
				 * differ (recorded anew) */
	STORE_CONFLICT,         /* another file already maps to that rel path */
};
/* Inside store_tx_begin/commit.  *conflict_abs gets the other file's
 * absolute path (malloc'd) on STORE_CONFLICT. */
int  store_file_add(store_t *st, const struct media_file *mf,
		    const char (*langs)[CONFIG_LANG_MAX], int nlangs,
		    enum store_add_result *res, char **conflict_abs);
int  store_tx_begin(store_t *st);     /* BEGIN IMMEDIATE */
int  store_tx_commit(store_t *st);
int  store_tx_rollback(store_t *st);

/* ---- the farm -------------------------------------------------------- */
struct job_ref {                /* what the master queues */
	int64_t job_id;
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	int64_t lease;          /* claimed by the master (PostgreSQL), or 0 */
};

/* Up to `max` runnable jobs (not_started, ready, run_after <= now_ms) that
 * cfg wants (stage mask, run languages), oldest first, skipping the ids in
 * `skip` (jobs the master already holds).  Read only. */
int  store_runnable_fetch(store_t *st, const struct config *cfg,
			  int64_t now_ms, const int64_t *skip, int nskip,
			  struct job_ref *out, int max, int *nout);
/* Earliest run_after among not_started, ready jobs cfg wants that are not
 * yet due at now_ms (0 if none): how long the master may sleep.  Give it
 * the now_ms the store_runnable_fetch before it used: a job that fell due
 * between the two calls is then still counted here (with two clocks it
 * was in neither answer, and the farm slept an hour beside it).  0 or
 * -1. */
int  store_next_due(store_t *st, const struct config *cfg, int64_t now_ms,
		    int64_t *due_ms);

struct job {
	int64_t job_id;
	int64_t file_id;
	int64_t lease;          /* fencing token: bumped at every claim */
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	int     attempts;       /* attempts counted so far, this one included */
	char   *abs_path;       /* media file */
	char   *rel_path;       /* output name */
	/* what the worker opens, beneath open_root without following links,
	 * and checks against what the scan saw (ino 0: not recorded) */
	char   *open_root;
	char   *open_rel;
	int64_t size, mtime_ns, dev, ino;
};
void job_clear(struct job *j);

/* store_job_claim and store_job_complete run in a transaction of their
 * own, or join one the caller opened with store_tx_begin: a worker that
 * already holds its next job completes one and claims the other in one
 * write transaction. */

/* Worker: with lease 0, not_started -> in-progress with a new lease,
 * owner = worker pid and master pid, started_at = now: the job row is the
 * running attempt (its attempts-log row is written when it ends).  With
 * the lease of its master's claim (PostgreSQL, store_jobs_claim): adopts
 * that claim, owner = worker pid, started_at = now.  Returns 0 and fills
 * *j; 1 when the job is not claimable any more (taken, finished, not due,
 * given back); -1 on error. */
int  store_job_claim(store_t *st, int64_t job_id, int64_t lease,
		     pid_t worker, pid_t master, struct job *j);

/* Master, PostgreSQL (many masters on one database): claims for this host
 * up to max of the oldest runnable jobs cfg wants, with FOR UPDATE SKIP
 * LOCKED, so that masters never wait on each other's rows: each becomes
 * in-progress under a new lease with no owner pid, and out[i].lease is
 * the lease a worker adopts it with.  Oldest first.  0; 1 when jobs were
 * runnable but other masters were claiming every one of them (ask again
 * soon); -1. */
int  store_jobs_claim(store_t *st, const struct config *cfg, int64_t now_ms,
		      pid_t master, struct job_ref *out, int max, int *nout);
/* Master, PostgreSQL: gives back claimed jobs no worker adopted (their
 * lease still holds, no owner pid), as they were before the claim (the
 * attempt is not counted, no attempt row).  *given counts them; the
 * others were adopted or are no longer this claim's.  0 or -1. */
/* PostgreSQL: every claim of this host (store_host_id) that no worker
 * adopted and that is not among the nheld job ids its master holds goes
 * back to not_started as it was: claims whose COMMIT succeeded though
 * the master saw an error (the connection dropped before the answer),
 * and at a clean exit whatever is left.  *given: how many.  0 or -1;
 * SQLite: nothing. */
int  store_claims_sweep(store_t *st, const int64_t *held, int nheld,
			int *given);
int  store_job_unclaim(store_t *st, const struct job_ref *refs, int n,
		       int *given);

/* Worker, on success: in one BEGIN IMMEDIATE transaction, checks that the
 * lease still holds, writes the attempt's row, marks the job completed,
 * for a transcript makes the file's translation jobs ready, and renames
 * each out[i] temp onto its final name inside its verified folder
 * (renameat; fsyncing the folders when durable).  Returns 0; 1 when the lease
 * was lost (temps are unlinked, nothing is renamed); -1 on error (temps
 * unlinked).  Either way no temp is left: the caller tree_temp_free()s
 * each out[i].  Except on a transient error (store_err_transient): the
 * outputs are then left as they are, all still temps or all published,
 * and the caller settles with store_job_settle. */
struct tree_temp;
int  store_job_complete(store_t *st, const struct job *j,
			const struct tree_temp *out, int n, bool durable);

/* Worker: where a completion whose transaction ended without a known
 * outcome (the connection dropped, or the COMMIT got no answer) stands.
 * Reads job j back: 0 completed under j's lease (the completion
 * committed: outputs stay), 1 still in-progress under j's lease (nothing
 * committed: complete it again), 2 lost to someone else (publish
 * nothing), -1 on error (store_err_transient says whether to ask
 * again). */
int  store_job_settle(store_t *st, const struct job *j);

/* Worker, on failure of its own job (fenced by lease):
 *  OUT_TRANSIENT: attempts already counted; if attempts >= max_attempts
 *                 -> failed, else not_started with run_after = retry_at_ms;
 *  OUT_RATE_LIMITED: the attempt is given back (attempts - 1), not_started,
 *                 run_after = retry_at_ms;
 *  OUT_PERMANENT: failed at once.
 * msg becomes last_error (and the attempt row's message).  Returns 0, 1 if
 * the lease was lost, -1 on error.  *final_status (may be NULL) gets the
 * status the job ended in. */
struct job_result {
	enum job_outcome outcome;
	int   http_status;      /* 0 if none */
	int   exit_code;        /* -1 if none */
	int   signal;           /* 0 if none */
	int64_t retry_at_ms;    /* wall clock */
	const char *msg;
};
int  store_job_fail(store_t *st, const struct job *j,
		    const struct job_result *r, int max_attempts,
		    enum job_status *final_status);

/* Master, when the worker `owner` holding job_id died, hung or was stopped
 * with the farm: if the job is still in-progress and owned by that pid,
 * records the attempt's outcome (OUT_CRASHED / OUT_TIMEOUT count an
 * attempt, OUT_INTERRUPTED gives it back) and returns the job to
 * not_started at retry_at_ms, or failed when attempts >= max_attempts
 * (last_error then carries the history, e.g. "worker killed by signal 9 in
 * 3 attempts").  A job the master claimed itself (PostgreSQL, lease > 0)
 * is fenced by that lease instead: the worker may not have adopted it.
 * Returns 0, 1 if the job was not held by that pid or lease, -1. */
int  store_job_release(store_t *st, int64_t job_id, pid_t owner,
		       int64_t lease, const struct job_result *r,
		       int max_attempts,
		       enum job_status *final_status);

/* Master start-up (holding the farm lock, so every in-progress job belongs
 * to a master that is gone): each in-progress job is returned to
 * not_started (or failed at max_attempts), counting the attempt, with an
 * attempts row "interrupted: master pid N is gone".  *n gets the count. */
int  store_recover_orphans(store_t *st, int max_attempts, int *n);

/* ---- many masters on one database (PostgreSQL; common_store_host.c) ---
 * On SQLite every call below is a no-op returning 0 (one master per
 * file, held by the flock). */
#define STORE_HOST_TIMEOUT_DEFAULT_MS 30000

/* Register this master's boot: a random host id (store_host_id), a row
 * with hostname and pid; timeout_ms (0 = default) is how long a host may
 * stay silent before others take its jobs.  Rows of this machine whose
 * master pid no longer runs are marked silent, so that the start-up
 * store_recover_orphans returns their jobs at once.  Call before forking
 * workers.  0 or -1. */
int  store_host_register(store_t *st, int64_t timeout_ms);
/* The live figures (JSON text) the next heartbeats carry; NULL clears. */
void store_host_figures_set(const char *json);
/* At most once a second (cheap to call every tick): heartbeat, and if a
 * host went silent, return its in-flight jobs (counting an attempt) when
 * no other master is doing it.  *n gets how many jobs this call returned.
 * 0 or -1 (store_errmsg). */
int  store_host_tick(store_t *st, int max_attempts, int *n);
/* Return the in-flight jobs of silent hosts now; with always, also check
 * when no host row looks silent (start-up: jobs of hosts whose row is
 * gone).  0 or -1. */
int  store_host_reap(store_t *st, int max_attempts, bool always, int *n);
/* A clean exit: remove this host's row.  0 or -1. */
int  store_host_unregister(store_t *st);
/* How many in-flight jobs of the stages and languages `want` runs
 * (store_wants) other hosts hold (their row still there) that started by
 * since_ms (wall): a master that runs out of work waits for them, since
 * one that fails transiently, or whose host dies (taken over at the host
 * timeout), is runnable again; jobs started later (a --watch host busy
 * for ever) would make the wait endless.  0 or -1; SQLite: *n = 0. */
int  store_host_elsewhere(store_t *st, const struct config *want,
			  int64_t since_ms, int64_t *n);

struct store_host {
	char    id[40];
	char    hostname[256];
	pid_t   pid;
	int64_t started_at_ms, seen_at_ms;
	bool    live;               /* heartbeat within the host timeout */
	char   *figures;            /* JSON text, "" if none */
};
/* Every registered host, by hostname: 0 or -1; free with
 * store_hosts_free.  SQLite: none. */
int  store_hosts_list(store_t *st, struct store_host **out, int *n);
void store_hosts_free(struct store_host *v, int n);

/* ---- reports --------------------------------------------------------- */
struct store_stage_counts {
	int     stage;
	char    lang[CONFIG_LANG_MAX];      /* "" for transcribe */
	int64_t n[JOB_ST_COUNT];
	int64_t waiting;        /* translate: not_started, transcript not done */
	int64_t delayed;        /* not_started, ready, run_after in the future */
};
struct store_counts {
	int64_t files;
	struct store_stage_counts *stages;  /* transcribe first, then by lang */
	int     nstages;
	int64_t oldest_in_progress_ms;      /* started_at of the oldest, 0 */
};
int  store_counts_get(store_t *st, struct store_counts *c);
void store_counts_free(struct store_counts *c);


/* ---- answers: failed jobs, one file, throughput (common_store_query.c)
 * What `mpfarm failed`, `mpfarm show` and the `mpfarm serve` page read;
 * the page calls exactly these, so both tell the same facts.  All read
 * only; strings are malloc'd and freed by the matching _free. */
struct store_failed_job {
	int64_t job_id;
	int64_t file_id;
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	int     attempts;
	int64_t finished_at_ms;     /* 0 if unknown */
	char   *abs_path;
	char   *rel_path;
	char   *last_error;         /* "" if none */
};
/* The failed jobs of stage (-1 = all) and lang ("" or NULL = all), by
 * file path then stage and language, at most `max` (0 = all); *total gets
 * how many match in all (may be NULL).  0, or -1 (store_errmsg says why). */
int  store_failed_list(store_t *st, int stage, const char *lang, int max,
		       struct store_failed_job **out, int *n, int64_t *total);
void store_failed_free(struct store_failed_job *v, int n);

struct store_attempt {
	int     attempt;            /* the job's attempt number */
	int64_t worker_pid;         /* 0 if none (released by the master) */
	int64_t started_at_ms;
	int64_t ended_at_ms;        /* 0 while running */
	char   *outcome;            /* job_outcome_name, "" while running */
	int     http_status;        /* 0 if none */
	int     exit_code;          /* -1 if none */
	int     signal;             /* 0 if none */
	char   *message;            /* "" if none */
};
struct store_file_job {
	int64_t job_id;
	int     stage;
	char    lang[CONFIG_LANG_MAX];
	char    status[16];         /* JOB_* */
	int     attempts;
	int64_t started_at_ms, finished_at_ms;  /* 0 if unset */
	char   *last_error;         /* "" if none */
	struct store_attempt *tries;            /* oldest first */
	int     ntries;
};
struct store_file {
	int64_t file_id;
	char   *abs_path, *rel_path, *scan_root;
	int64_t size, mtime_ns, added_at_ms;
	struct store_file_job *jobs;            /* transcribe, then by lang */
	int     njobs;
};
/* Which file the user means by `what`: a path as stored, the same path
 * made absolute against the current directory (realpath when it exists),
 * a path relative to its scan root, else a decimal file id.  Returns 0
 * with *file_id set, 1 when no file matches, -1 on a store error. */
int  store_file_find(store_t *st, const char *what, int64_t *file_id);
/* One file with its jobs and every attempt: 0, 1 if there is no such
 * file, -1 on a store error.  Free with store_file_free (also after 1). */
int  store_file_get(store_t *st, int64_t file_id, struct store_file *f);
void store_file_free(struct store_file *f);

/* The file a job belongs to: 0 with *file_id and *rel_path (malloc'd)
 * set, 1 when there is no such job, -1 on a store error. */
int  store_job_file_get(store_t *st, int64_t job_id, int64_t *file_id,
			char **rel_path);

/* Attempts that ended per minute over the last `minutes` minutes before
 * now_ms: completed[i] and failed[i] (every outcome but completed,
 * rate_limited and interrupted) for the minute starting at
 * now_ms - (minutes - i) * 60000.  0 or -1. */
int  store_throughput_get(store_t *st, int64_t now_ms, int minutes,
			  int64_t *completed, int64_t *failed);

/* ---- internal to common_store*.c ---------------------------------------
 * The store is split over three files that share store_t through these
 * few helpers; define MPFARM_STORE_INTERNAL to see them.  Nothing outside
 * common_store*.c should need them. */
#ifdef MPFARM_STORE_INTERNAL
#include "common_db.h"
/* A statement the store prepares once per connection and keeps for the
 * life of the store_t (see struct db_sql); STORE_SQL2 gives PostgreSQL's
 * spelling when it differs. */
struct store_sql {
	struct db_sql q;
};
#define STORE_SQL(s)      { DB_SQL(s) }
#define STORE_SQL2(s, pg) { DB_SQL2(s, pg) }
/* The cached statement, reset with its bindings cleared; NULL on error. */
db_stmt_t *store_stmt(store_t *st, struct store_sql *q);
/* Step once: DB_ROW or DB_DONE (the statement is then reset), or -1 with
 * the error recorded and the statement reset. */
int  store_step(store_t *st, db_stmt_t *s);
/* Step to the end and reset: 0 or -1. */
int  store_run(store_t *st, db_stmt_t *s);
/* The dispatch order of runnable jobs, for qsort-style comparisons: the
 * earliest run_after first, then the oldest job id. */
static inline int
store_dispatch_cmp(int64_t run_after_a, int64_t id_a, int64_t run_after_b,
		   int64_t id_b)
{
	if (run_after_a != run_after_b)
		return run_after_a < run_after_b ? -1 : 1;
	return (id_a > id_b) - (id_a < id_b);
}
/* Record "PATH: <driver error>" (e.g. the locked message); returns -1. */
int  store_fail_db(store_t *st);
/* Record "PATH: <message>"; returns -1. */
int  store_fail(store_t *st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Begin a write transaction only when not already inside one; leave
 * commits (rc == 0) or rolls back what enter began.  leave returns rc, or
 * -1 when the commit fails. */
int  store_tx_enter(store_t *st, bool *own);
int  store_tx_leave(store_t *st, bool own, int rc);
/* Lower-case and check a language code ([a-z0-9_-]{1,15}): 0 or -1. */
int  store_lang_norm(const char *in, char out[CONFIG_LANG_MAX]);
/* Build processing_status from the stored languages if it is missing
 * (after a migration that dropped it): 0 or -1. */
int  store_view_ensure(store_t *st);
/* The target languages recorded by the last store_langs_sync. */
int  store_langs_load(store_t *st, char (*langs)[CONFIG_LANG_MAX], int max,
		      int *n);
/* The (stage, language) pairs cfg's run works on, transcripts first:
 * how many (at most STORE_WANTS_MAX). */
struct store_want {
	int  stage;
	char lang[CONFIG_LANG_MAX];
};
#define STORE_WANTS_MAX (1 + 2 * CONFIG_LANGS_MAX)
int  store_wants(const struct config *cfg, struct store_want *w);
/* Paths are kept as BLOBs (bytea) so that any byte sequence survives. */
int  store_bind_path(db_stmt_t *s, int idx, const char *path);
char *store_column_path(db_stmt_t *s, int col);
/* Messages (last_error, attempt messages) are TEXT: bytes that are not
 * valid UTF-8 (from a file name) are escaped as \xNN first.  NULL binds
 * NULL.  0 or -1. */
int  store_bind_msg(db_stmt_t *s, int idx, const char *msg);

/* PostgreSQL's schema (common_store_pg.c): migration i takes version i to
 * i+1, as store_migrations does for SQLite, one entry per version. */
extern const char *const store_pg_migrations[];
/* Inside a migration's transaction: keep other processes from migrating
 * at the same time (PostgreSQL: an advisory lock; SQLite's write lock
 * already does).  0 or -1. */
int  store_schema_lock(store_t *st);
/* A job whose holder is gone for good (a silent host): if still
 * in-progress under `lease`, its attempt ends interrupted with msg and
 * counts; the job goes back to not_started (failed at max_attempts).
 * 0, 1 if no longer held under that lease, -1. */
int  store_job_lost(store_t *st, int64_t job_id, int64_t lease,
		    const char *msg, int max_attempts);
#endif

#endif
