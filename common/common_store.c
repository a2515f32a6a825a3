/*
 * common_store.c - opening the job store: the versioned schema and its
 * migrations, statements, transactions and errors, over the SQL driver of
 * common_db.h (each engine's own tuning lives in its driver, PostgreSQL's
 * schema in common_store_pg.c).  Job transitions live in
 * common_store_job.c; what there is to do and how far along it is
 * (runnable jobs, counts, the processing_status view and its languages)
 * in common_store_report.c; many masters on one database in
 * common_store_host.c.  They share store_t through the internal section
 * of common_store.h so that the struct itself stays private here.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The master's host id (PostgreSQL): set before the workers fork, so
 * every process of the farm claims in its name. */
static char store_host[64];

struct store {
	db_t         *db;
	char         *path;             /* as messages name it (no password) */
	int           flags;
	bool          transient;        /* the last failure may pass */
	char          errmsg[1024];
};

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
 * a shared counter: an extra statement and an extra page per commit.
 * PostgreSQL still takes it from a sequence: see common_store_pg.c.)
 *
 * Translation jobs are ready exactly when their file's transcript is
 * completed.  Each of this program's statements that moves a transcript
 * into or out of completed says so itself (complete, fix, a changed
 * recording); the trigger does it for everybody else (the sqlite3 shell,
 * other programs).  mpfarm's own SQLite connections switch triggers off
 * (db_sqlite_open): a table with a trigger makes SQLite gather every
 * UPDATE's rows in a temporary table first and run the trigger's program
 * per row, which cost the farm 10% of its per-job instructions, for
 * nothing.  PostgreSQL keeps its trigger on (switching it off per session
 * would take foreign keys with it); it agrees with our statements.
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
	/* version 5: PostgreSQL's runnable index ends in job_id, as
	 * SQLite's does already (its rowid) */
	"SELECT 1",
};
_Static_assert(sizeof(store_migrations) / sizeof(store_migrations[0]) ==
	       STORE_SCHEMA_VERSION, "one migration per schema version");

/* The migration that takes this store's engine to version `to`. */
static const char *
store_schema_migration(store_t *st, int to)
{
	return db_kind(st->db) == DB_PG ? store_pg_migrations[to - 1]
	    : store_migrations[to - 1];
}

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

const char *
job_stage_key(int stage, const char *lang, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s", job_stage_name(stage),
	    lang[0] ? ":" : "", lang);
	return out;
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
	st->transient = false;
	return -1;
}

int
store_fail_db(store_t *st)
{
	store_fail(st, "%s", db_errmsg(st->db));
	st->transient = db_kind(st->db) == DB_PG && db_err_busy(st->db);
	return -1;
}

bool
store_err_transient(store_t *st)
{
	return st->transient;
}

/* ---- statements ---------------------------------------------------- */

db_stmt_t *
store_stmt(store_t *st, struct store_sql *q)
{
	db_stmt_t *s = db_stmt(st->db, &q->q);

	if (s == NULL)
		store_fail_db(st);
	return s;
}

int
store_step(store_t *st, db_stmt_t *s)
{
	int rc = db_step(s);

	if (rc < 0)
		store_fail_db(st);
	return rc;
}

int
store_run(store_t *st, db_stmt_t *s)
{
	int rc;

	while ((rc = store_step(st, s)) == DB_ROW)
		;
	return rc < 0 ? -1 : 0;
}

int
store_bind_path(db_stmt_t *s, int idx, const char *path)
{
	return db_bind_blob(s, idx, path, strlen(path));
}

char *
store_column_path(db_stmt_t *s, int col)
{
	return db_column_bytes(s, col, NULL);
}

int
store_bind_msg(db_stmt_t *s, int idx, const char *msg)
{
	const unsigned char *p = (const unsigned char *)msg;
	char *esc;
	int rc;

	if (msg == NULL)
		return db_bind_null(s, idx);
	while (*p != '\0' && *p < 0x80)
		p++;
	if (*p == '\0')        /* ASCII, the usual case: no copy */
		return db_bind_text(s, idx, msg);
	esc = text_escape(msg, strlen(msg), TEXT_ESCAPE_MSG);
	rc = db_bind_text(s, idx, esc);
	free(esc);
	return rc;
}

/* ---- transactions -------------------------------------------------- */

int
store_tx_begin(store_t *st)
{
	return db_begin(st->db, true) < 0 ? store_fail_db(st) : 0;
}

int
store_tx_commit(store_t *st)
{
	return db_commit(st->db) < 0 ? store_fail_db(st) : 0;
}

int
store_tx_rollback(store_t *st)
{
	return db_rollback(st->db) < 0 ? store_fail_db(st) : 0;
}

int
store_tx_enter(store_t *st, bool *own)
{
	*own = !db_in_tx(st->db);
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

db_t *
store_db(store_t *st)
{
	return st->db;
}

/* Version 0 must be empty of our names; see store_own_names. */
static int
store_check_foreign(store_t *st)
{
	int n = 0;

	if (db_names_count(st->db, store_own_names, (int)(sizeof(store_own_names)
	    / sizeof(store_own_names[0])), &n) < 0)
		return store_fail_db(st);
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
	int v = 0;

	if (store_tx_begin(st) < 0)
		return -1;
	if (store_schema_lock(st) < 0)
		goto fail;
	if (db_version_get(st->db, &v) < 0) {
		store_fail_db(st);
		goto fail;
	}
	if (v >= to)
		return store_tx_commit(st);
	if (v == 0 && store_check_foreign(st) < 0)
		goto fail;
	if (db_exec(st->db, store_schema_migration(st, to)) < 0) {
		store_fail(st, "cannot migrate the schema to version %d: %s",
		    to, db_errmsg(st->db));
		goto fail;
	}
	if (db_version_set(st->db, to) < 0) {
		store_fail_db(st);
		goto fail;
	}
	return store_tx_commit(st);
fail:
	store_tx_leave(st, true, -1);
	return -1;
}

/* Check, or create and migrate, the schema: 0, -1 (errmsg), or 1 for a
 * database without one opened STORE_READONLY | STORE_EMPTY_OK. */
static int
store_schema(store_t *st)
{
	int v = 0;

	if (db_version_get(st->db, &v) < 0)
		return store_fail_db(st);
	if (v > STORE_SCHEMA_VERSION)
		return store_fail(st, "database schema version %d is newer than "
		    "this mpfarm %s understands (%d)", v, MPFARM_VERSION,
		    STORE_SCHEMA_VERSION);
	if (st->flags & STORE_READONLY) {
		/* empty only if a first scan could make it a farm */
		if (v == 0 && (st->flags & STORE_EMPTY_OK))
			return store_check_foreign(st) < 0 ? -1 : 1;
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
	 * hence out here, around all of them.  (SQLite only: PostgreSQL's
	 * migrations change tables in place.) */
	if (v < STORE_SCHEMA_VERSION && !store_is_pg(st) &&
	    db_exec(st->db, "PRAGMA foreign_keys = OFF") < 0)
		return store_fail_db(st);
	for (int to = v + 1; to <= STORE_SCHEMA_VERSION; to++)
		if (store_migrate_one(st, to) < 0)
			return -1;
	if (v < STORE_SCHEMA_VERSION && !store_is_pg(st) &&
	    db_exec(st->db, "PRAGMA foreign_keys = ON") < 0)
		return store_fail_db(st);
	return store_view_ensure(st);
}

int
store_open(store_t **out, const char *path,
	   const struct store_open_opts *opts, char *err, size_t errlen)
{
	store_t *st = xcalloc(1, sizeof(*st));
	int flags = opts ? opts->flags : 0, dflags = 0, rc;
	char why[sizeof(st->errmsg)];

	*out = NULL;
	st->path = db_target_scrub(path);
	st->flags = flags;
	if (flags & STORE_DURABLE)
		dflags |= DB_DURABLE;
	if (flags & STORE_READONLY)
		dflags |= DB_READONLY;
	if (flags & STORE_NO_TRACE)
		dflags |= DB_NO_TRACE;
	if (db_open(&st->db, path, dflags, opts ? opts->busy_timeout_ms : 0,
	    why, sizeof(why)) < 0) {
		store_fail(st, "%s", why);
		goto fail;
	}
	if ((rc = store_schema(st)) < 0)
		goto fail;
	if (rc > 0)
		goto empty;
	*out = st;
	return 0;
empty:
	store_close(st);
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
	db_close(st->db);
	free(st->path);
	free(st);
}

void
store_host_id_set(const char *id)
{
	snprintf(store_host, sizeof(store_host), "%s", id ? id : "");
}

const char *
store_host_id(void)
{
	return store_host;
}

bool
store_is_pg(store_t *st)
{
	return db_kind(st->db) == DB_PG;
}

int
store_stats_refresh(store_t *st)
{
	if (!store_is_pg(st))
		return 0;
	/* behind a VACUUM or another scan's ANALYZE it is not worth a wait:
	 * autovacuum comes round anyway */
	if (store_tx_begin(st) < 0)
		return -1;
	if (db_exec(st->db, "SET LOCAL lock_timeout = 1000") < 0 ||
	    db_exec(st->db, "ANALYZE media_files, jobs") < 0) {
		store_fail_db(st);
		store_tx_rollback(st);
		return -1;
	}
	return store_tx_commit(st);
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
