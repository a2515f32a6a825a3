/*
 * common_store.c - opening the job store: connection pragmas, the busy
 * handler, the versioned schema and its migrations, the statement cache,
 * transactions and errors.  Job transitions live in common_store_job.c;
 * what there is to do and how far along it is (runnable jobs, counts, the
 * processing_status view and its languages) in common_store_report.c.
 * The three share store_t through the internal section of common_store.h
 * so that the struct itself stays private here.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define STORE_BUSY_DEFAULT_MS 10000
#define STORE_WAL_FRAMES      8000      /* see store_wal_hook */
#define STORE_CKPT_WAIT_US    5000
#define STORE_CKPT_BACKOFF_US 1000000
/* Small pages: a job's transactions dirty ~5-9 pages that all go to the
 * WAL, so 2 KiB pages measured ~30% more jobs/s than 4 KiB; index keys up
 * to ~480 bytes (the path indexes) still fit a page.  Only a new database
 * takes it. */
#define STORE_PAGE_SIZE       "2048"
#define STORE_STMT_MAX        128

struct store {
	sqlite3      *db;
	char         *path;
	int           flags;
	int           busy_timeout_ms;
	int64_t       busy_start_us;    /* start of the current wait */
	int64_t       busy_waited_ms;   /* how long the last give-up waited */
	bool          busy_gave_up;
	bool          in_ckpt;          /* see store_wal_hook */
	int64_t       ckpt_after_us;    /* no checkpoint before (monotonic) */
	sqlite3_stmt *stmts[STORE_STMT_MAX];
	char          errmsg[1024];
};

/* Slots are handed out per process in first-use order; every store_t of
 * the process indexes its stmts[] with them. */
static int store_nslots;

/*
 * The schema, one entry per version: entry i takes user_version i to i+1
 * in its own transaction.  Adding version 2 is appending its SQL here and
 * bumping STORE_SCHEMA_VERSION.  The processing_status view is not part of
 * a migration because its columns depend on the configured languages: it
 * is rebuilt whenever it is missing (a migration may simply drop it) or
 * the languages change.
 *
 * Why the indexes look like this (a million files means 1M + 1M*languages
 * jobs, and every claim and completion rewrites index entries): one index,
 * jobs_status (stage, lang, status, ready, run_after), serves both hot
 * reads.  A refill is a seek to (stage, lang, 'not_started', 1) and a walk
 * in run_after, job_id order, stopping at LIMIT; the status report counts
 * it in order without touching the table; running jobs are found by a
 * seek per stage and language too.  Each extra index on a column a claim
 * or a completion changes costs every job a page write (measured: a
 * partial index of running jobs alone cost 20% of throughput), so there
 * is none; jobs_failed is partial on a status jobs rarely reach, which
 * keeps retry cheap at no cost to the farm.
 *
 * A job's lease is its claim count: every claim takes the job's next
 * number and nothing in mpfarm ever lowers it (a reset by mpfarm fix, a
 * retry or a changed recording keep it), so a stale worker, holding an
 * older number of the same job, can never match a later claim, even if
 * somebody resets the job's status by hand.  Every fence compares job_id
 * and lease together.  (Until version 4 it was the attempt row's id,
 * unique in the whole database; that cost every claim an attempt row, or
 * a shared counter: an extra statement and an extra page per commit.)
 *
 * Translation jobs are ready exactly when their file's transcript is
 * completed.  Each of this program's statements that moves a transcript
 * into or out of completed says so itself (complete, fix, a changed
 * recording); the trigger does it for everybody else (the sqlite3 shell,
 * other programs).  mpfarm's own connections switch triggers off
 * (store_open): a table with a trigger makes SQLite gather every UPDATE's
 * rows in a temporary table first and run the trigger's program per row,
 * which cost the farm 10% of its per-job instructions, for nothing.
 *
 * Version 4 is the per-job diet (bench/bench_instr.py counts it: from 252k
 * to 139k instructions per job in bench_floor, 403k to ~180k in the
 * farm):
 *  - the attempt row is written once, when the attempt ends; the running
 *    attempt is the job row itself (lease, attempts, owner_pid,
 *    started_at), which is what `mpfarm show` lists while it runs and
 *    what the master's release or the start-up recovery writes down when
 *    its worker dies;
 *  - CHECKs on the status written as OR chains: SQLite evaluates `x IN
 *    (4 constants)` through a temporary b-tree built at every execution,
 *    and every claim and completion checks the status (24% of the
 *    instructions per job);
 *  - the claim reads its job and paths in one join instead of RETURNING
 *    plus a look-up (RETURNING also fills a temporary table);
 *  - the lease is the job's own (above): nothing else to write.
 * Every index left serves a query (the refill, the counts, retry and
 * failed, show and the history, scan's look-ups).  Tried and left out:
 * attempts WITHOUT ROWID keyed (job_id, n), to save attempts_job, cost
 * 13% more per job; a partial index of not_started jobs instead of
 * jobs_status saves 10% per job but turns `mpfarm status` into a table
 * scan (1.7 s instead of 0.3 s at a million jobs).
 */
static const char *const store_migrations[] = {
	/* version 1 */
	"CREATE TABLE settings ("
	"  key   TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE media_files ("
	"  file_id   INTEGER PRIMARY KEY,"
	"  scan_root BLOB NOT NULL,"
	"  rel_path  BLOB NOT NULL UNIQUE,"
	"  abs_path  BLOB NOT NULL UNIQUE,"
	"  size      INTEGER NOT NULL,"
	"  mtime_ns  INTEGER NOT NULL,"
	"  added_at  INTEGER NOT NULL"
	");"
	"CREATE TABLE jobs ("
	"  job_id       INTEGER PRIMARY KEY,"
	"  file_id      INTEGER NOT NULL"
	"               REFERENCES media_files(file_id) ON DELETE CASCADE,"
	"  stage        TEXT NOT NULL CHECK (stage IN ('transcribe', 'translate')),"
	"  lang         TEXT NOT NULL DEFAULT '',"
	"  status       TEXT NOT NULL DEFAULT 'not_started' CHECK (status IN"
	"               ('not_started', 'in-progress', 'completed', 'failed')),"
	"  ready        INTEGER NOT NULL DEFAULT 1,"
	"  attempts     INTEGER NOT NULL DEFAULT 0,"
	"  run_after    INTEGER NOT NULL DEFAULT 0,"
	"  lease        INTEGER DEFAULT 0,"
	"  owner_pid    INTEGER,"
	"  owner_master INTEGER,"
	"  started_at   INTEGER,"
	"  finished_at  INTEGER,"
	"  last_error   TEXT,"
	"  UNIQUE (file_id, stage, lang),"
	"  CHECK ((stage = 'transcribe') = (lang = ''))"
	");"
	"CREATE INDEX jobs_status ON jobs (stage, lang, status, ready, run_after);"
	"CREATE INDEX jobs_failed ON jobs (stage, lang) WHERE status = 'failed';"
	"CREATE TRIGGER jobs_transcript_ready AFTER UPDATE OF status ON jobs"
	"  WHEN new.stage = 'transcribe'"
	"   AND (old.status = 'completed') <> (new.status = 'completed')"
	"BEGIN"
	"  UPDATE jobs SET ready = (new.status = 'completed')"
	"   WHERE file_id = new.file_id AND stage = 'translate';"
	"END;"
	"CREATE TABLE attempts ("
	"  attempt_id  INTEGER PRIMARY KEY,"
	"  job_id      INTEGER NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,"
	"  attempt     INTEGER NOT NULL,"
	"  worker_pid  INTEGER,"
	"  started_at  INTEGER NOT NULL,"
	"  ended_at    INTEGER,"
	"  outcome     TEXT,"
	"  http_status INTEGER,"
	"  exit_code   INTEGER,"
	"  signal      INTEGER,"
	"  message     TEXT"
	");"
	"CREATE INDEX attempts_job ON attempts (job_id, attempt_id);",
	/* version 2: what the worker checks before it uploads (the file the
	 * scan saw: device and inode), and for a symbolic link the scan was
	 * told to follow, the file it resolved to beneath a scan root.  NULL
	 * on rows scanned before: the next scan fills dev and ino in. */
	"ALTER TABLE media_files ADD COLUMN dev INTEGER;"
	"ALTER TABLE media_files ADD COLUMN ino INTEGER;"
	"ALTER TABLE media_files ADD COLUMN src_root BLOB;"
	"ALTER TABLE media_files ADD COLUMN src_rel BLOB;",
	/* version 3: text every SQL client can decode.  Paths are BLOBs
	 * (any bytes); abs_path_text is the file name escaped into valid
	 * UTF-8 (text_escape), what the view shows as file_path.  Messages
	 * written before version 2 may carry invalid bytes from a file name:
	 * escaped too.  The view is dropped and so rebuilt with its new
	 * columns.  mpfarm_path_text and mpfarm_msg_text are this program's
	 * SQL functions (store_functions), used only in its own writes. */
	"ALTER TABLE media_files ADD COLUMN abs_path_text TEXT;"
	"UPDATE media_files SET abs_path_text = mpfarm_path_text(abs_path);"
	"UPDATE jobs SET last_error = mpfarm_msg_text(last_error)"
	"  WHERE last_error IS NOT mpfarm_msg_text(last_error);"
	"UPDATE attempts SET message = mpfarm_msg_text(message)"
	"  WHERE message IS NOT mpfarm_msg_text(message);"
	"DROP VIEW IF EXISTS processing_status;",
	/* version 4: see above.  jobs is rebuilt for its CHECKs (SQLite
	 * cannot change one in place; foreign keys are off meanwhile, see
	 * store_schema), same columns in the same order.  Attempt rows still
	 * open belong to running jobs, whose row now tells the same. */
	"DROP VIEW IF EXISTS processing_status;"
	"CREATE TABLE jobs_v4 ("
	"  job_id       INTEGER PRIMARY KEY,"
	"  file_id      INTEGER NOT NULL"
	"               REFERENCES media_files(file_id) ON DELETE CASCADE,"
	"  stage        TEXT NOT NULL"
	"               CHECK (stage = 'transcribe' OR stage = 'translate'),"
	"  lang         TEXT NOT NULL DEFAULT '',"
	"  status       TEXT NOT NULL DEFAULT 'not_started'"
	"               CHECK (status = 'not_started' OR status = 'in-progress'"
	"               OR status = 'completed' OR status = 'failed'),"
	"  ready        INTEGER NOT NULL DEFAULT 1,"
	"  attempts     INTEGER NOT NULL DEFAULT 0,"
	"  run_after    INTEGER NOT NULL DEFAULT 0,"
	"  lease        INTEGER DEFAULT 0,"
	"  owner_pid    INTEGER,"
	"  owner_master INTEGER,"
	"  started_at   INTEGER,"
	"  finished_at  INTEGER,"
	"  last_error   TEXT,"
	"  UNIQUE (file_id, stage, lang),"
	"  CHECK ((stage = 'transcribe') = (lang = ''))"
	");"
	"INSERT INTO jobs_v4 SELECT job_id, file_id, stage, lang, status, ready,"
	"  attempts, run_after, lease, owner_pid, owner_master, started_at,"
	"  finished_at, last_error FROM jobs;"
	"DROP TABLE jobs;"
	"ALTER TABLE jobs_v4 RENAME TO jobs;"
	"CREATE INDEX jobs_status ON jobs (stage, lang, status, ready, run_after);"
	"CREATE INDEX jobs_failed ON jobs (stage, lang) WHERE status = 'failed';"
	"CREATE TRIGGER jobs_transcript_ready AFTER UPDATE OF status ON jobs"
	"  WHEN new.stage = 'transcribe'"
	"   AND (old.status = 'completed') <> (new.status = 'completed')"
	"BEGIN"
	"  UPDATE jobs SET ready = (new.status = 'completed')"
	"   WHERE file_id = new.file_id AND stage = 'translate';"
	"END;"
	"DELETE FROM attempts WHERE ended_at IS NULL AND attempt_id IN"
	"  (SELECT lease FROM jobs WHERE status = 'in-progress');",
};
_Static_assert(sizeof(store_migrations) / sizeof(store_migrations[0]) ==
	       STORE_SCHEMA_VERSION, "one migration per schema version");

/* Names version 1 creates: finding one in a database without our
 * user_version means another program's schema (the older Python tooling
 * used media_tracking.db too), which we refuse rather than mangle. */
static const char *const store_own_names[] = {
	"settings", "media_files", "jobs", "attempts", "processing_status",
};

/* ---- names --------------------------------------------------------- */

const char *
job_status_name(enum job_status s)
{
	static const char *const names[JOB_ST_COUNT] = {
		JOB_NOT_STARTED, JOB_IN_PROGRESS, JOB_COMPLETED, JOB_FAILED,
	};
	return (unsigned)s < JOB_ST_COUNT ? names[s] : "unknown";
}

const char *
job_stage_name(int stage)
{
	if (stage == STAGE_TRANSCRIBE)
		return "transcribe";
	if (stage == STAGE_TRANSLATE)
		return "translate";
	return "unknown";
}

int
job_stage_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "transcribe") == 0)
		return STAGE_TRANSCRIBE;
	if (strcmp(s, "translate") == 0)
		return STAGE_TRANSLATE;
	return -1;
}

const char *
job_outcome_name(enum job_outcome o)
{
	static const char *const names[OUT_COUNT] = {
		"completed", "transient", "rate_limited", "permanent",
		"crashed", "timeout", "interrupted",
	};
	return (unsigned)o < OUT_COUNT ? names[o] : "unknown";
}

/* ---- errors -------------------------------------------------------- */

const char *
store_errmsg(store_t *st)
{
	return st && st->errmsg[0] ? st->errmsg : "no error";
}

int
store_fail(store_t *st, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(st->errmsg, sizeof(st->errmsg), "%s: %s", st->path, msg);
	return -1;
}

int
store_fail_db(store_t *st)
{
	int code = st->db ? sqlite3_errcode(st->db) & 0xff : SQLITE_NOMEM;

	if (code == SQLITE_BUSY || code == SQLITE_LOCKED) {
		if (st->busy_gave_up)
			return store_fail(st, "database is locked (busy for %lld ms)",
			    (long long)st->busy_waited_ms);
		return store_fail(st, "database is locked");
	}
	if (code == SQLITE_CANTOPEN && sqlite3_system_errno(st->db) != 0)
		return store_fail(st, "%s (%s)", sqlite3_errmsg(st->db),
		    strerror(sqlite3_system_errno(st->db)));
	return store_fail(st, "%s", st->db ? sqlite3_errmsg(st->db)
	    : "out of memory");
}

/* ---- busy handler -------------------------------------------------- */

static int64_t
store_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * SQLite's own busy_timeout sleeps a millisecond or more at once, while a
 * farm transaction holds the write lock for tens of microseconds: waiters
 * would sleep through dozens of free slots.  So first yield the CPU (on a
 * box with fewer cores than workers the holder is often waiting for one),
 * then sleep 10 us, doubling up to 250 us, and only after a second of
 * waiting (someone holds a long lock, e.g. the sqlite3 shell) settle into
 * 5 ms naps.  The limit is measured on the monotonic clock.
 */
static int
store_busy(void *arg, int count)
{
	store_t *st = arg;
	int64_t now = store_mono_us(), waited, limit, us;
	struct timespec ts;

	if (count == 0) {
		st->busy_start_us = now;
		st->busy_gave_up = false;
	}
	waited = now - st->busy_start_us;
	limit = st->in_ckpt ? STORE_CKPT_WAIT_US :
	    (int64_t)st->busy_timeout_ms * 1000;
	if (waited >= limit) {
		st->busy_gave_up = true;
		st->busy_waited_ms = waited / 1000;
		return 0;
	}
	if (count < 4) {
		sched_yield();
		return 1;
	}
	if (waited > 1000000)
		us = 5000;
	else if (count - 4 >= 5)
		us = 250;
	else
		us = 10 << (count - 4);
	if (us > limit - waited)
		us = limit - waited;
	ts.tv_sec = us / 1000000;
	ts.tv_nsec = (long)(us % 1000000) * 1000;
	nanosleep(&ts, NULL);
	return 1;
}

/* ---- checkpoints --------------------------------------------------- */

/*
 * SQLite's automatic checkpoint is PASSIVE: it copies the WAL back while
 * other processes keep committing, so with busy workers it never catches
 * up, the WAL is never restarted and, once past the threshold, every
 * commit of every worker runs another checkpoint with its two fsyncs.
 * Instead the connection whose commit finds the WAL past STORE_WAL_FRAMES
 * runs a RESTART checkpoint: it takes the writer lock, copies everything
 * and lets the next writer start the WAL over; writers pause for that one
 * copy, every few thousand transactions.  RESTART also waits for readers,
 * and a user's long query (sqlite3 on the view) must not stall the farm:
 * while checkpointing, the busy handler gives up after
 * STORE_CKPT_WAIT_US, and a process whose checkpoint could not finish
 * leaves the next try to others for STORE_CKPT_BACKOFF_US.  A checkpoint
 * is never an error of the transaction that triggered it.
 */
static int
store_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	store_t *st = arg;
	int64_t now;

	if (frames < STORE_WAL_FRAMES)
		return SQLITE_OK;
	now = store_mono_us();
	if (now < st->ckpt_after_us)
		return SQLITE_OK;
	st->in_ckpt = true;
	if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART,
	    NULL, NULL) != SQLITE_OK)
		st->ckpt_after_us = now + STORE_CKPT_BACKOFF_US;
	st->in_ckpt = false;
	return SQLITE_OK;
}

/* ---- statements ---------------------------------------------------- */

sqlite3_stmt *
store_stmt(store_t *st, struct store_sql *q)
{
	sqlite3_stmt *s;

	st->busy_gave_up = false;       /* a message about this statement only */
	if (q->slot == 0) {
		if (store_nslots >= STORE_STMT_MAX) {
			store_fail(st, "internal: more than %d cached statements",
			    STORE_STMT_MAX);
			return NULL;
		}
		q->slot = ++store_nslots;
	}
	s = st->stmts[q->slot - 1];
	if (s != NULL) {
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		return s;
	}
	if (sqlite3_prepare_v3(st->db, q->text, -1, SQLITE_PREPARE_PERSISTENT,
	    &s, NULL) != SQLITE_OK) {
		store_fail_db(st);
		return NULL;
	}
	st->stmts[q->slot - 1] = s;
	return s;
}

int
store_step(store_t *st, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return rc;
	if (rc == SQLITE_DONE) {
		sqlite3_reset(s);
		return rc;
	}
	store_fail_db(st);
	sqlite3_reset(s);
	return -1;
}

int
store_run(store_t *st, sqlite3_stmt *s)
{
	int rc;

	while ((rc = store_step(st, s)) == SQLITE_ROW)
		;
	return rc < 0 ? -1 : 0;
}

int
store_bind_path(sqlite3_stmt *s, int idx, const char *path)
{
	return sqlite3_bind_blob(s, idx, path, (int)strlen(path),
	    SQLITE_TRANSIENT);
}

char *
store_column_path(sqlite3_stmt *s, int col)
{
	const void *p = sqlite3_column_blob(s, col);
	int n = sqlite3_column_bytes(s, col);
	char *out = xmalloc((size_t)n + 1);

	if (n > 0)
		memcpy(out, p, (size_t)n);
	out[n] = '\0';
	return out;
}

int
store_bind_msg(sqlite3_stmt *s, int idx, const char *msg)
{
	const unsigned char *p = (const unsigned char *)msg;

	if (msg == NULL)
		return sqlite3_bind_null(s, idx);
	while (*p != '\0' && *p < 0x80)
		p++;
	if (*p == '\0')        /* ASCII, the usual case: no copy */
		return sqlite3_bind_text(s, idx, msg, -1, SQLITE_TRANSIENT);
	return sqlite3_bind_text(s, idx, text_escape(msg, strlen(msg),
	    TEXT_ESCAPE_MSG), -1, free);
}

/* mpfarm_path_text(X) and mpfarm_msg_text(X): text_escape of X's bytes
 * (NULL stays NULL).  Registered on every connection this program opens;
 * only our own writes and migrations call them, never the view, so the
 * sqlite3 shell and other clients read everything without them. */
static void
store_fn_escape(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	enum text_escape_mode mode = *(const enum text_escape_mode *)
	    sqlite3_user_data(ctx);
	const void *p;
	int n;

	(void)argc;
	if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
		sqlite3_result_null(ctx);
		return;
	}
	p = sqlite3_value_blob(argv[0]);
	n = sqlite3_value_bytes(argv[0]);
	sqlite3_result_text(ctx, text_escape(p ? p : "", (size_t)n, mode), -1,
	    free);
}

static int
store_functions(store_t *st)
{
	static const enum text_escape_mode path = TEXT_ESCAPE_PATH;
	static const enum text_escape_mode msg = TEXT_ESCAPE_MSG;
	int fl = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;

	if (sqlite3_create_function_v2(st->db, "mpfarm_path_text", 1, fl,
	    (void *)&path, store_fn_escape, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function_v2(st->db, "mpfarm_msg_text", 1, fl,
	    (void *)&msg, store_fn_escape, NULL, NULL, NULL) != SQLITE_OK)
		return store_fail_db(st);
	return 0;
}

/* ---- transactions -------------------------------------------------- */

static struct store_sql q_begin = STORE_SQL("BEGIN IMMEDIATE");
static struct store_sql q_commit = STORE_SQL("COMMIT");
static struct store_sql q_rollback = STORE_SQL("ROLLBACK");

int
store_tx_begin(store_t *st)
{
	sqlite3_stmt *s = store_stmt(st, &q_begin);

	return s ? store_run(st, s) : -1;
}

int
store_tx_commit(store_t *st)
{
	sqlite3_stmt *s = store_stmt(st, &q_commit);

	if (s == NULL || store_run(st, s) < 0) {
		/* keep the commit's message; undo what is still open */
		if (!sqlite3_get_autocommit(st->db))
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

int
store_tx_rollback(store_t *st)
{
	sqlite3_stmt *s;

	if (sqlite3_get_autocommit(st->db))
		return 0;       /* an error already rolled it back */
	s = store_stmt(st, &q_rollback);
	return s ? store_run(st, s) : -1;
}

int
store_tx_enter(store_t *st, bool *own)
{
	*own = sqlite3_get_autocommit(st->db) != 0;
	return *own ? store_tx_begin(st) : 0;
}

int
store_tx_leave(store_t *st, bool own, int rc)
{
	if (!own)
		return rc;
	if (rc == 0)
		return store_tx_commit(st) < 0 ? -1 : 0;
	char keep[sizeof(st->errmsg)];
	memcpy(keep, st->errmsg, sizeof(keep));
	store_tx_rollback(st);
	memcpy(st->errmsg, keep, sizeof(keep));
	return rc;
}

/* ---- opening ------------------------------------------------------- */

sqlite3 *
store_db(store_t *st)
{
	return st->db;
}

static int
store_exec(store_t *st, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	sqlite3_free(msg);      /* store_fail_db reads the same message */
	return store_fail_db(st);
}

static int
store_pragma_int(store_t *st, const char *sql, int *out)
{
	sqlite3_stmt *s = NULL;
	int rc;

	if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
		return store_fail_db(st);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		store_fail_db(st);
		sqlite3_finalize(s);
		return -1;
	}
	*out = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	sqlite3_finalize(s);
	return 0;
}

static int
store_pragmas(store_t *st)
{
	char sql[64];
	int dummy;

	if (st->flags & STORE_READONLY)
		return 0;
	/* The first statement reads the header: a file that is not a
	 * database fails here with "file is not a database". */
	if (store_exec(st, "PRAGMA page_size = " STORE_PAGE_SIZE) < 0 ||
	    store_pragma_int(st, "PRAGMA journal_mode = WAL", &dummy) < 0)
		return -1;
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
	    (st->flags & STORE_DURABLE) ? "FULL" : "NORMAL");
	if (store_exec(st, sql) < 0 ||
	    store_exec(st, "PRAGMA foreign_keys = ON") < 0 ||
	    store_exec(st, "PRAGMA temp_store = MEMORY") < 0 ||
	    store_exec(st, "PRAGMA journal_size_limit = 67108864") < 0)
		return -1;
	sqlite3_wal_hook(st->db, store_wal_hook, st);   /* replaces autocheckpoint */
	return 0;
}

/* Version 0 must be empty of our names; see store_own_names. */
static int
store_check_foreign(store_t *st)
{
	char sql[256];
	int n = 0;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE "
	    "name IN ('%s', '%s', '%s', '%s', '%s')", store_own_names[0],
	    store_own_names[1], store_own_names[2], store_own_names[3],
	    store_own_names[4]);
	if (store_pragma_int(st, sql, &n) < 0)
		return -1;
	if (n > 0)
		return store_fail(st, "not an mpfarm database: it has no schema "
		    "version but already holds tables such as media_files or "
		    "processing_status (from another program?); use another "
		    "--db");
	return 0;
}

/* One migration, one transaction.  Another process may have migrated
 * while we waited for the lock, so the version is read again inside. */
static int
store_migrate_one(store_t *st, int to)
{
	char sql[64];
	int v = 0;

	if (store_tx_begin(st) < 0)
		return -1;
	if (store_pragma_int(st, "PRAGMA user_version", &v) < 0)
		goto fail;
	if (v >= to)
		return store_tx_commit(st);
	if (v == 0 && store_check_foreign(st) < 0)
		goto fail;
	if (store_exec(st, store_migrations[to - 1]) < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", sqlite3_errmsg(st->db));
		store_fail(st, "cannot migrate the schema to version %d: %s",
		    to, why);
		goto fail;
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", to);
	if (store_exec(st, sql) < 0)
		goto fail;
	return store_tx_commit(st);
fail:
	store_tx_leave(st, true, -1);
	return -1;
}

static int
store_schema(store_t *st)
{
	int v = 0;

	if (store_pragma_int(st, "PRAGMA user_version", &v) < 0)
		return -1;
	if (v > STORE_SCHEMA_VERSION)
		return store_fail(st, "database schema version %d is newer than "
		    "this mpfarm %s understands (%d)", v, MPFARM_VERSION,
		    STORE_SCHEMA_VERSION);
	if (st->flags & STORE_READONLY) {
		if (v == 0)
			return store_fail(st, "no mpfarm schema in this database "
			    "yet (run mpfarm scan first)");
		if (v < STORE_SCHEMA_VERSION && !(st->flags & STORE_OLD_OK))
			return store_fail(st, "database schema version %d is older "
			    "than this mpfarm's (%d); a read-write command such as "
			    "mpfarm scan migrates it", v, STORE_SCHEMA_VERSION);
		return 0;
	}
	/* A migration may rebuild a table others reference (version 4):
	 * with foreign keys on, dropping the old one would delete their rows
	 * (ON DELETE CASCADE).  The pragma is a no-op inside a transaction,
	 * hence out here, around all of them. */
	if (v < STORE_SCHEMA_VERSION &&
	    store_exec(st, "PRAGMA foreign_keys = OFF") < 0)
		return -1;
	for (int to = v + 1; to <= STORE_SCHEMA_VERSION; to++)
		if (store_migrate_one(st, to) < 0)
			return -1;
	if (v < STORE_SCHEMA_VERSION &&
	    store_exec(st, "PRAGMA foreign_keys = ON") < 0)
		return -1;
	return store_view_ensure(st);
}

/* True when `path` has no -wal file beside it: in WAL mode, no connection
 * has the database open (the last one to close removes it). */
static bool
store_no_wal(const char *path)
{
	char *wal = xasprintf("%s-wal", path);
	struct stat sb;
	bool none = lstat(wal, &sb) < 0 && errno == ENOENT;

	free(wal);
	return none;
}

/* "file:PATH?immutable=1" with the bytes a URI path cannot hold escaped. */
static char *
store_uri_immutable(const char *path)
{
	struct buf b;

	buf_init(&b);
	/* "file:///abs" (empty authority) or "file:rel" */
	buf_append(&b, path[0] == '/' ? "file://" : "file:", path[0] == '/' ?
	    7 : 5);
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		char esc[4];
		if (*p == '%' || *p == '?' || *p == '#' || *p < 0x21 ||
		    *p >= 0x7f) {
			snprintf(esc, sizeof(esc), "%%%02X", *p);
			buf_append(&b, esc, 3);
		} else {
			buf_append(&b, (const char *)p, 1);
		}
	}
	buf_append(&b, "?immutable=1", 13);     /* with the NUL */
	return b.data;
}

int
store_open(store_t **out, const char *path,
	   const struct store_open_opts *opts, char *err, size_t errlen)
{
	store_t *st = xcalloc(1, sizeof(*st));
	int oflags = SQLITE_OPEN_NOMUTEX;   /* one thread per store_t */
	struct stat sb;

	*out = NULL;
	st->path = xstrdup(path);
	st->flags = opts ? opts->flags : 0;
	st->busy_timeout_ms = opts && opts->busy_timeout_ms > 0 ?
	    opts->busy_timeout_ms : STORE_BUSY_DEFAULT_MS;
	if (st->flags & STORE_READONLY) {
		/* sqlite would only say "unable to open database file" */
		if (stat(path, &sb) < 0) {
			store_fail(st, "%s", strerror(errno));
			goto fail;
		}
		oflags |= SQLITE_OPEN_READONLY;
	} else {
		oflags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	}
	if ((st->flags & STORE_NO_TRACE) && store_no_wal(path)) {
		/* nobody has it open, and nothing may appear beside it */
		char *uri = store_uri_immutable(path);
		int rc = sqlite3_open_v2(uri, &st->db, oflags | SQLITE_OPEN_URI,
		    NULL);
		free(uri);
		if (rc != SQLITE_OK) {
			store_fail_db(st);
			goto fail;
		}
	} else if (sqlite3_open_v2(path, &st->db, oflags, NULL) != SQLITE_OK) {
		store_fail_db(st);
		goto fail;
	}
	sqlite3_busy_handler(st->db, store_busy, st);
	/* our statements keep translations ready themselves: see the
	 * trigger's comment at store_migrations (SQLite only) */
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
	if (store_functions(st) < 0 || store_pragmas(st) < 0 ||
	    store_schema(st) < 0)
		goto fail;
	*out = st;
	return 0;
fail:
	snprintf(err, errlen, "%s", st->errmsg);
	store_close(st);
	return -1;
}

void
store_close(store_t *st)
{
	if (st == NULL)
		return;
	for (int i = 0; i < STORE_STMT_MAX; i++)
		sqlite3_finalize(st->stmts[i]);
	sqlite3_close_v2(st->db);
	free(st->path);
	free(st);
}

/* ---- language codes ------------------------------------------------- */

int
store_lang_norm(const char *in, char out[CONFIG_LANG_MAX])
{
	size_t n = in ? strlen(in) : 0;

	if (n == 0 || n >= CONFIG_LANG_MAX)
		return -1;
	for (size_t i = 0; i <= n; i++) {
		char c = in[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		else if (c != '\0' && !(c >= 'a' && c <= 'z') &&
		    !(c >= '0' && c <= '9') && c != '_' && c != '-')
			return -1;
		out[i] = c;
	}
	return 0;
}
