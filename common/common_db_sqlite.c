/*
 * common_db_sqlite.c - the SQLite driver behind common_db.h: opening a
 * database file (WAL, foreign keys, the busy handler, checkpoints, the
 * SQL functions the store's own writes use), statements and errors.  All
 * of SQLite's tuning for a farm of processes sharing one file lives here,
 * so the store above it is engine-neutral.
 */
#include "common_db_impl.h"
#include "common_db_sqlite.h"
#include "common.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DB_SQLITE_WAL_FRAMES      8000      /* see db_sqlite_wal_hook */
#define DB_SQLITE_CKPT_WAIT_US    5000
#define DB_SQLITE_CKPT_BACKOFF_US 1000000
/* Small pages: a job's transactions dirty ~5-9 pages that all go to the
 * WAL, so 2 KiB pages measured ~30% more jobs/s than 4 KiB; index keys up
 * to ~480 bytes (the path indexes) still fit a page.  Only a new database
 * takes it. */
#define DB_SQLITE_PAGE_SIZE       "2048"

struct db_sqlite {
	struct db     base;
	sqlite3      *h;
	int           flags;
	int           busy_timeout_ms;
	int64_t       busy_start_us;    /* start of the current wait */
	int64_t       busy_waited_ms;   /* how long the last give-up waited */
	bool          busy_gave_up;
	bool          in_ckpt;          /* see db_sqlite_wal_hook */
	int64_t       ckpt_after_us;    /* no checkpoint before (monotonic) */
};

struct db_sqlite_stmt {
	struct db_stmt base;
	sqlite3_stmt  *s;
};

#define SQ(db)  ((struct db_sqlite *)(db))
#define SQS(st) (((struct db_sqlite_stmt *)(st))->s)

sqlite3 *
db_sqlite_handle(db_t *db)
{
	return db && db->ops->kind == DB_SQLITE ? SQ(db)->h : NULL;
}

/* ---- errors -------------------------------------------------------- */

static int
db_sqlite_fail(struct db_sqlite *d)
{
	int code = d->h ? sqlite3_errcode(d->h) & 0xff : SQLITE_NOMEM;

	if (code == SQLITE_BUSY || code == SQLITE_LOCKED) {
		if (d->busy_gave_up)
			return db_fail(&d->base, "database is locked (busy for "
			    "%lld ms)", (long long)d->busy_waited_ms);
		return db_fail(&d->base, "database is locked");
	}
	if (code == SQLITE_CANTOPEN && sqlite3_system_errno(d->h) != 0)
		return db_fail(&d->base, "%s (%s)", sqlite3_errmsg(d->h),
		    strerror(sqlite3_system_errno(d->h)));
	return db_fail(&d->base, "%s", d->h ? sqlite3_errmsg(d->h)
	    : "out of memory");
}

static bool
db_sqlite_err_busy(db_t *db)
{
	int code = SQ(db)->h ? sqlite3_errcode(SQ(db)->h) & 0xff : 0;

	return code == SQLITE_BUSY || code == SQLITE_LOCKED;
}

/* ---- busy handler -------------------------------------------------- */

static int64_t
db_sqlite_mono_us(void)
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
db_sqlite_busy(void *arg, int count)
{
	struct db_sqlite *d = arg;
	int64_t now = db_sqlite_mono_us(), waited, limit, us;
	struct timespec ts;

	if (count == 0) {
		d->busy_start_us = now;
		d->busy_gave_up = false;
	}
	waited = now - d->busy_start_us;
	limit = d->in_ckpt ? DB_SQLITE_CKPT_WAIT_US :
	    (int64_t)d->busy_timeout_ms * 1000;
	if (waited >= limit) {
		d->busy_gave_up = true;
		d->busy_waited_ms = waited / 1000;
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
 * Instead the connection whose commit finds the WAL past
 * DB_SQLITE_WAL_FRAMES runs a RESTART checkpoint: it takes the writer
 * lock, copies everything and lets the next writer start the WAL over;
 * writers pause for that one copy, every few thousand transactions.
 * RESTART also waits for readers, and a user's long query (sqlite3 on the
 * view) must not stall the farm: while checkpointing, the busy handler
 * gives up after DB_SQLITE_CKPT_WAIT_US, and a process whose checkpoint
 * could not finish leaves the next try to others for
 * DB_SQLITE_CKPT_BACKOFF_US.  A checkpoint is never an error of the
 * transaction that triggered it.
 */
static int
db_sqlite_wal_hook(void *arg, sqlite3 *h, const char *name, int frames)
{
	struct db_sqlite *d = arg;
	int64_t now;

	if (frames < DB_SQLITE_WAL_FRAMES)
		return SQLITE_OK;
	now = db_sqlite_mono_us();
	if (now < d->ckpt_after_us)
		return SQLITE_OK;
	d->in_ckpt = true;
	if (sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_RESTART,
	    NULL, NULL) != SQLITE_OK)
		d->ckpt_after_us = now + DB_SQLITE_CKPT_BACKOFF_US;
	d->in_ckpt = false;
	return SQLITE_OK;
}

/* ---- statements ---------------------------------------------------- */

static db_stmt_t *
db_sqlite_prepare(db_t *db, const char *sql, bool keep)
{
	struct db_sqlite *d = SQ(db);
	struct db_sqlite_stmt *st;
	sqlite3_stmt *s;

	d->busy_gave_up = false;        /* a message about this statement only */
	if (sqlite3_prepare_v3(d->h, sql, -1, keep ? SQLITE_PREPARE_PERSISTENT
	    : 0, &s, NULL) != SQLITE_OK) {
		db_sqlite_fail(d);
		return NULL;
	}
	st = xcalloc(1, sizeof(*st));
	st->base.db = db;
	st->s = s;
	return &st->base;
}

static void
db_sqlite_finalize(db_stmt_t *s)
{
	sqlite3_finalize(SQS(s));
	free(s);
}

static void
db_sqlite_reset(db_stmt_t *s)
{
	SQ(s->db)->busy_gave_up = false;
	sqlite3_reset(SQS(s));
	sqlite3_clear_bindings(SQS(s));
}

static int
db_sqlite_bind_rc(db_stmt_t *s, int rc)
{
	return rc == SQLITE_OK ? 0 : db_sqlite_fail(SQ(s->db));
}

static int
db_sqlite_bind_int64(db_stmt_t *s, int idx, int64_t v)
{
	return db_sqlite_bind_rc(s, sqlite3_bind_int64(SQS(s), idx, v));
}

static int
db_sqlite_bind_text(db_stmt_t *s, int idx, const char *v)
{
	return db_sqlite_bind_rc(s, sqlite3_bind_text(SQS(s), idx, v, -1,
	    SQLITE_TRANSIENT));
}

static int
db_sqlite_bind_blob(db_stmt_t *s, int idx, const void *p, size_t n)
{
	return db_sqlite_bind_rc(s, sqlite3_bind_blob(SQS(s), idx, p, (int)n,
	    SQLITE_TRANSIENT));
}

static int
db_sqlite_bind_null(db_stmt_t *s, int idx)
{
	return db_sqlite_bind_rc(s, sqlite3_bind_null(SQS(s), idx));
}

static int
db_sqlite_step(db_stmt_t *s)
{
	int rc = sqlite3_step(SQS(s));

	if (rc == SQLITE_ROW)
		return DB_ROW;
	if (rc == SQLITE_DONE) {
		sqlite3_reset(SQS(s));
		return DB_DONE;
	}
	db_sqlite_fail(SQ(s->db));
	sqlite3_reset(SQS(s));
	return -1;
}

static int64_t
db_sqlite_column_int64(db_stmt_t *s, int col)
{
	return sqlite3_column_int64(SQS(s), col);
}

static const char *
db_sqlite_column_text(db_stmt_t *s, int col)
{
	return (const char *)sqlite3_column_text(SQS(s), col);
}

static bool
db_sqlite_column_null(db_stmt_t *s, int col)
{
	return sqlite3_column_type(SQS(s), col) == SQLITE_NULL;
}

static char *
db_sqlite_column_bytes(db_stmt_t *s, int col, size_t *len)
{
	const void *p = sqlite3_column_blob(SQS(s), col);
	int n = sqlite3_column_bytes(SQS(s), col);
	char *out = xmalloc((size_t)n + 1);

	if (n > 0)
		memcpy(out, p, (size_t)n);
	out[n] = '\0';
	if (len != NULL)
		*len = (size_t)n;
	return out;
}

static int64_t
db_sqlite_changes(db_t *db)
{
	return sqlite3_changes(SQ(db)->h);
}

static int64_t
db_sqlite_last_insert_id(db_t *db)
{
	return sqlite3_last_insert_rowid(SQ(db)->h);
}

static int
db_sqlite_exec(db_t *db, const char *sql)
{
	char *msg = NULL;

	SQ(db)->busy_gave_up = false;
	if (sqlite3_exec(SQ(db)->h, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	sqlite3_free(msg);      /* db_sqlite_fail reads the same message */
	return db_sqlite_fail(SQ(db));
}

/* ---- transactions -------------------------------------------------- */

static struct db_sql q_begin_write = DB_SQL("BEGIN IMMEDIATE");
static struct db_sql q_begin_read = DB_SQL("BEGIN");
static struct db_sql q_commit = DB_SQL("COMMIT");
static struct db_sql q_rollback = DB_SQL("ROLLBACK");

static bool
db_sqlite_in_tx(db_t *db)
{
	return sqlite3_get_autocommit(SQ(db)->h) == 0;
}

static int
db_sqlite_begin(db_t *db, bool write)
{
	db_stmt_t *s = db_stmt(db, write ? &q_begin_write : &q_begin_read);

	return s ? db_run(s) : -1;
}

static int
db_sqlite_commit(db_t *db)
{
	db_stmt_t *s = db_stmt(db, &q_commit);

	if (s == NULL || db_run(s) < 0) {
		/* keep the commit's message; undo what is still open */
		if (!sqlite3_get_autocommit(SQ(db)->h))
			sqlite3_exec(SQ(db)->h, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static int
db_sqlite_rollback(db_t *db)
{
	db_stmt_t *s;

	if (sqlite3_get_autocommit(SQ(db)->h))
		return 0;       /* an error already rolled it back */
	s = db_stmt(db, &q_rollback);
	return s ? db_run(s) : -1;
}

/* ---- schema helpers ------------------------------------------------ */

static int
db_sqlite_int_query(struct db_sqlite *d, const char *sql, int *out)
{
	sqlite3_stmt *s = NULL;
	int rc;

	if (sqlite3_prepare_v2(d->h, sql, -1, &s, NULL) != SQLITE_OK)
		return db_sqlite_fail(d);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_sqlite_fail(d);
		sqlite3_finalize(s);
		return -1;
	}
	*out = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
	sqlite3_finalize(s);
	return 0;
}

static int
db_sqlite_version_get(db_t *db, int *v)
{
	return db_sqlite_int_query(SQ(db), "PRAGMA user_version", v);
}

static int
db_sqlite_version_set(db_t *db, int v)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
	return db_sqlite_exec(db, sql);
}

static int
db_sqlite_names_count(db_t *db, const char *const *names, int n, int *count)
{
	struct buf b;
	int rc;

	/* names are the store's own identifiers, never user input */
	buf_init(&b);
	buf_printf(&b, "SELECT count(*) FROM sqlite_master WHERE name IN (");
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%s'%s'", i ? ", " : "", names[i]);
	buf_printf(&b, ")");
	rc = db_sqlite_int_query(SQ(db), b.data, count);
	buf_free(&b);
	return rc;
}

static int
db_sqlite_integrity_check(db_t *db, char **problem)
{
	sqlite3_stmt *s = NULL;
	struct buf b;
	int rc, nlines = 0;

	*problem = NULL;
	buf_init(&b);
	if (sqlite3_prepare_v2(SQ(db)->h, "PRAGMA quick_check(20)", -1, &s,
	    NULL) != SQLITE_OK)
		return db_sqlite_fail(SQ(db));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *line = (const char *)sqlite3_column_text(s, 0);
		if (line == NULL || strcmp(line, "ok") == 0)
			continue;
		buf_printf(&b, "%s%s", nlines++ ? "; " : "", line);
	}
	if (rc != SQLITE_DONE) {
		db_sqlite_fail(SQ(db));
		sqlite3_finalize(s);
		buf_free(&b);
		return -1;
	}
	sqlite3_finalize(s);
	if (nlines > 0)
		*problem = b.data;
	else
		buf_free(&b);
	return 0;
}

/* ---- opening ------------------------------------------------------- */

/* mpfarm_path_text(X) and mpfarm_msg_text(X): text_escape of X's bytes
 * (NULL stays NULL).  Registered on every connection this program opens;
 * only the store's own writes and migrations call them, never the view,
 * so the sqlite3 shell and other clients read everything without them. */
static void
db_sqlite_fn_escape(sqlite3_context *ctx, int argc, sqlite3_value **argv)
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
db_sqlite_functions(struct db_sqlite *d)
{
	static const enum text_escape_mode path = TEXT_ESCAPE_PATH;
	static const enum text_escape_mode msg = TEXT_ESCAPE_MSG;
	int fl = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;

	if (sqlite3_create_function_v2(d->h, "mpfarm_path_text", 1, fl,
	    (void *)&path, db_sqlite_fn_escape, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function_v2(d->h, "mpfarm_msg_text", 1, fl,
	    (void *)&msg, db_sqlite_fn_escape, NULL, NULL, NULL) != SQLITE_OK)
		return db_sqlite_fail(d);
	return 0;
}

static int
db_sqlite_pragmas(struct db_sqlite *d)
{
	char sql[64];
	int dummy;

	if (d->flags & DB_READONLY)
		return 0;
	/* The first statement reads the header: a file that is not a
	 * database fails here with "file is not a database". */
	if (db_sqlite_exec(&d->base, "PRAGMA page_size = "
	    DB_SQLITE_PAGE_SIZE) < 0 ||
	    db_sqlite_int_query(d, "PRAGMA journal_mode = WAL", &dummy) < 0)
		return -1;
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s",
	    (d->flags & DB_DURABLE) ? "FULL" : "NORMAL");
	if (db_sqlite_exec(&d->base, sql) < 0 ||
	    db_sqlite_exec(&d->base, "PRAGMA foreign_keys = ON") < 0 ||
	    db_sqlite_exec(&d->base, "PRAGMA temp_store = MEMORY") < 0 ||
	    db_sqlite_exec(&d->base, "PRAGMA journal_size_limit = 67108864") < 0)
		return -1;
	/* replaces autocheckpoint */
	sqlite3_wal_hook(d->h, db_sqlite_wal_hook, d);
	return 0;
}

/* True when `path` has no -wal file beside it: in WAL mode, no connection
 * has the database open (the last one to close removes it). */
static bool
db_sqlite_no_wal(const char *path)
{
	char *wal = xasprintf("%s-wal", path);
	struct stat sb;
	bool none = lstat(wal, &sb) < 0 && errno == ENOENT;

	free(wal);
	return none;
}

/* "file:PATH?immutable=1" with the bytes a URI path cannot hold escaped. */
static char *
db_sqlite_uri_immutable(const char *path)
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

static void
db_sqlite_close(db_t *db)
{
	sqlite3_close_v2(SQ(db)->h);
	free(db);
}

static int
db_sqlite_open(db_t **out, const char *path, int flags, int busy_ms,
	       char *err, size_t errlen)
{
	struct db_sqlite *d = xcalloc(1, sizeof(*d));
	int oflags = SQLITE_OPEN_NOMUTEX;   /* one thread per connection */
	struct stat sb;
	int rc;

	d->base.ops = &db_sqlite_ops;
	d->flags = flags;
	d->busy_timeout_ms = busy_ms > 0 ? busy_ms : DB_BUSY_DEFAULT_MS;
	if (flags & DB_READONLY) {
		/* sqlite would only say "unable to open database file" */
		if (stat(path, &sb) < 0) {
			db_fail(&d->base, "%s", strerror(errno));
			goto fail;
		}
		oflags |= SQLITE_OPEN_READONLY;
	} else {
		oflags |= SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	}
	if ((flags & DB_NO_TRACE) && db_sqlite_no_wal(path)) {
		/* nobody has it open, and nothing may appear beside it */
		char *uri = db_sqlite_uri_immutable(path);
		rc = sqlite3_open_v2(uri, &d->h, oflags | SQLITE_OPEN_URI, NULL);
		free(uri);
	} else {
		rc = sqlite3_open_v2(path, &d->h, oflags, NULL);
	}
	if (rc != SQLITE_OK) {
		db_sqlite_fail(d);
		goto fail;
	}
	sqlite3_busy_handler(d->h, db_sqlite_busy, d);
	/* The store's statements keep translations ready themselves; the
	 * schema's trigger is there for other programs (see store_migrations
	 * in common_store.c).  A table with a trigger makes SQLite gather
	 * every UPDATE's rows in a temporary table first: 10% of the farm's
	 * instructions per job, for nothing. */
	sqlite3_db_config(d->h, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
	if (db_sqlite_functions(d) < 0 || db_sqlite_pragmas(d) < 0)
		goto fail;
	*out = &d->base;
	return 0;
fail:
	snprintf(err, errlen, "%s", d->base.errmsg);
	db_sqlite_close(&d->base);
	return -1;
}

const struct db_ops db_sqlite_ops = {
	.kind = DB_SQLITE,
	.open = db_sqlite_open,
	.close = db_sqlite_close,
	.prepare = db_sqlite_prepare,
	.finalize = db_sqlite_finalize,
	.reset = db_sqlite_reset,
	.bind_int64 = db_sqlite_bind_int64,
	.bind_text = db_sqlite_bind_text,
	.bind_blob = db_sqlite_bind_blob,
	.bind_null = db_sqlite_bind_null,
	.step = db_sqlite_step,
	.column_int64 = db_sqlite_column_int64,
	.column_text = db_sqlite_column_text,
	.column_null = db_sqlite_column_null,
	.column_bytes = db_sqlite_column_bytes,
	.changes = db_sqlite_changes,
	.last_insert_id = db_sqlite_last_insert_id,
	.exec = db_sqlite_exec,
	.in_tx = db_sqlite_in_tx,
	.begin = db_sqlite_begin,
	.commit = db_sqlite_commit,
	.rollback = db_sqlite_rollback,
	.version_get = db_sqlite_version_get,
	.version_set = db_sqlite_version_set,
	.names_count = db_sqlite_names_count,
	.integrity_check = db_sqlite_integrity_check,
	.err_busy = db_sqlite_err_busy,
};
