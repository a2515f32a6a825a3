/*
 * common_db_pg.c - the PostgreSQL driver behind common_db.h (libpq).  The
 * store's statements arrive in SQLite's spelling with numbered
 * placeholders; this driver rewrites ?N into $N, prepares each cached
 * statement once per connection (server side, named), sends integers and
 * text as text and paths as binary bytea, and reads every result in text
 * form (booleans read as 0/1, bytea unescaped on demand).  A whole result
 * arrives at the first step; later steps walk its rows.  Every cached
 * statement is prepared again on a new connection (the server forgot
 * them; the connection's life is common_db_pg_conn.c).  A COMMIT the
 * connection dropped under has an unknown outcome: it fails as transient
 * and the caller settles it by reading back what it wrote.
 */
#include "common_db_impl.h"
#include "common_db_pg.h"
#include "common.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_PG_PARAMS_MAX 32
#define DB_PG_BYTEA_OID  17
#define DB_PG_TEXT_OID   25

struct db_pg_stmt {
	struct db_stmt base;
	char      *sql;             /* $N spelling */
	char       name[24];        /* "" for a one-off (unnamed, not kept) */
	bool       prepared;
	unsigned   epoch;           /* the connection it was prepared on */
	int        nparams;
	Oid        types[DB_PG_PARAMS_MAX];
	char      *vals[DB_PG_PARAMS_MAX];
	int        lens[DB_PG_PARAMS_MAX];
	int        fmts[DB_PG_PARAMS_MAX];
	PGresult  *res;
	int        row, nrows;
};

#define PGS(st) ((struct db_pg_stmt *)(st))

/* ---- statements ---------------------------------------------------- */

/* ?N -> $N outside quotes and comments; a bare ? takes the next number.
 * *maxp gets the highest number, used[] which ones appear. */
static char *
db_pg_rewrite(const char *sql, int *maxp, bool *used)
{
	struct buf b;
	int next = 1, max = 0;
	char q = 0;

	buf_init(&b);
	for (const char *p = sql; *p; p++) {
		if (q) {
			if (*p == q)
				q = 0;
			buf_append(&b, p, 1);
			continue;
		}
		if (*p == '\'' || *p == '"') {
			q = *p;
			buf_append(&b, p, 1);
			continue;
		}
		if (*p != '?') {
			buf_append(&b, p, 1);
			continue;
		}
		int n = 0;
		while (p[1] >= '0' && p[1] <= '9')
			n = n * 10 + (*++p - '0');
		if (n == 0)
			n = next;
		next = n + 1;
		if (n > max)
			max = n;
		if (n <= DB_PG_PARAMS_MAX)
			used[n - 1] = true;
		buf_printf(&b, "$%d", n);
	}
	buf_terminate(&b);
	*maxp = max;
	return b.data;
}

static void
db_pg_clear_result(struct db_pg_stmt *s)
{
	PQclear(s->res);
	s->res = NULL;
	s->row = -1;
	s->nrows = 0;
}

static void
db_pg_clear_binds(struct db_pg_stmt *s)
{
	for (int i = 0; i < DB_PG_PARAMS_MAX; i++) {
		free(s->vals[i]);
		s->vals[i] = NULL;
		s->lens[i] = 0;
		s->fmts[i] = 0;
	}
}

static db_stmt_t *
db_pg_prepare(db_t *db, const char *sql, bool keep)
{
	struct db_pg_stmt *s = xcalloc(1, sizeof(*s));
	bool used[DB_PG_PARAMS_MAX] = { false };

	s->base.db = db;
	s->row = -1;
	s->sql = db_pg_rewrite(sql, &s->nparams, used);
	if (s->nparams > DB_PG_PARAMS_MAX) {
		db_fail(db, "internal: more than %d parameters", DB_PG_PARAMS_MAX);
		free(s->sql);
		free(s);
		return NULL;
	}
	/* a number the text skips still counts: send it as text */
	for (int i = 0; i < s->nparams; i++)
		s->types[i] = used[i] ? 0 : DB_PG_TEXT_OID;
	if (keep)
		snprintf(s->name, sizeof(s->name), "mpf%u", ++PG(db)->nstmts);
	return &s->base;
}

static void
db_pg_finalize(db_stmt_t *st)
{
	struct db_pg_stmt *s = PGS(st);

	db_pg_clear_result(s);
	db_pg_clear_binds(s);
	free(s->sql);
	/* the server forgets prepared statements with the connection */
	free(s);
}

static void
db_pg_reset(db_stmt_t *st)
{
	db_pg_clear_result(PGS(st));
	db_pg_clear_binds(PGS(st));
}

static int
db_pg_bind(db_stmt_t *st, int idx, char *val, int len, int fmt)
{
	struct db_pg_stmt *s = PGS(st);

	db_pg_clear_result(s);
	if (idx < 1 || idx > s->nparams) {
		/* a parameter only the other dialect's text has */
		free(val);
		return -1;
	}
	free(s->vals[idx - 1]);
	s->vals[idx - 1] = val;
	s->lens[idx - 1] = len;
	s->fmts[idx - 1] = fmt;
	return 0;
}

static int
db_pg_bind_int64(db_stmt_t *st, int idx, int64_t v)
{
	return db_pg_bind(st, idx, xasprintf("%lld", (long long)v), 0, 0);
}

static int
db_pg_bind_text(db_stmt_t *st, int idx, const char *v)
{
	return db_pg_bind(st, idx, xstrdup(v), 0, 0);
}

static int
db_pg_bind_blob(db_stmt_t *st, int idx, const void *p, size_t n)
{
	char *v = xmalloc(n + 1);

	memcpy(v, p, n);
	v[n] = '\0';
	return db_pg_bind(st, idx, v, (int)n, 1);
}

static int
db_pg_bind_null(db_stmt_t *st, int idx)
{
	return db_pg_bind(st, idx, NULL, 0, 0);
}

static int
db_pg_execute(struct db_pg_stmt *s)
{
	struct db_pg *d = PG(s->base.db);
	ExecStatusType es;
	const char *n;

	if (db_pg_ready(d) < 0)
		return -1;
	if (s->epoch != d->epoch)
		s->prepared = false;
	if (s->name[0] && !s->prepared) {
		PGresult *r = PQprepare(d->c, s->name, s->sql, s->nparams,
		    s->types);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			db_pg_fail_res(d, r);
			PQclear(r);
			return -1;
		}
		PQclear(r);
		s->prepared = true;
		s->epoch = d->epoch;
	}
	if (s->name[0])
		s->res = PQexecPrepared(d->c, s->name, s->nparams,
		    (const char *const *)s->vals, s->lens, s->fmts, 0);
	else
		s->res = PQexecParams(d->c, s->sql, s->nparams, s->types,
		    (const char *const *)s->vals, s->lens, s->fmts, 0);
	es = PQresultStatus(s->res);
	if (es != PGRES_TUPLES_OK && es != PGRES_COMMAND_OK) {
		db_pg_fail_res(d, s->res);
		db_pg_clear_result(s);
		return -1;
	}
	/* as sqlite3_changes: rows of the last INSERT, UPDATE or DELETE */
	n = PQcmdStatus(s->res);
	if (n != NULL && (strncmp(n, "INSERT", 6) == 0 ||
	    strncmp(n, "UPDATE", 6) == 0 || strncmp(n, "DELETE", 6) == 0))
		d->changes = strtoll(PQcmdTuples(s->res), NULL, 10);
	s->nrows = es == PGRES_TUPLES_OK ? PQntuples(s->res) : 0;
	s->row = -1;
	return 0;
}

static int
db_pg_step(db_stmt_t *st)
{
	struct db_pg_stmt *s = PGS(st);

	if (s->res == NULL && db_pg_execute(s) < 0)
		return -1;
	if (++s->row < s->nrows)
		return DB_ROW;
	db_pg_clear_result(s);          /* bindings stay, as in SQLite */
	return DB_DONE;
}

static bool
db_pg_column_null(db_stmt_t *st, int col)
{
	struct db_pg_stmt *s = PGS(st);

	return s->res == NULL || s->row < 0 || s->row >= s->nrows ||
	    col >= PQnfields(s->res) || PQgetisnull(s->res, s->row, col);
}

static const char *
db_pg_column_text(db_stmt_t *st, int col)
{
	struct db_pg_stmt *s = PGS(st);

	if (db_pg_column_null(st, col))
		return NULL;
	return PQgetvalue(s->res, s->row, col);
}

static int64_t
db_pg_column_int64(db_stmt_t *st, int col)
{
	const char *v = db_pg_column_text(st, col);

	if (v == NULL)
		return 0;
	if (v[0] == 't' && v[1] == '\0')
		return 1;       /* a boolean */
	if (v[0] == 'f' && v[1] == '\0')
		return 0;
	return strtoll(v, NULL, 10);
}

static char *
db_pg_column_bytes(db_stmt_t *st, int col, size_t *len)
{
	struct db_pg_stmt *s = PGS(st);
	const char *v = db_pg_column_text(st, col);
	unsigned char *raw;
	size_t n = 0;
	char *out;

	if (v == NULL) {
		if (len)
			*len = 0;
		return xstrdup("");
	}
	if (PQftype(s->res, col) != DB_PG_BYTEA_OID) {
		if (len)
			*len = strlen(v);
		return xstrdup(v);
	}
	raw = PQunescapeBytea((const unsigned char *)v, &n);
	out = xmalloc(n + 1);
	if (raw != NULL && n > 0)
		memcpy(out, raw, n);
	out[raw ? n : 0] = '\0';
	if (len)
		*len = raw ? n : 0;
	PQfreemem(raw);
	return out;
}

static int64_t
db_pg_changes(db_t *db)
{
	return PG(db)->changes;
}

static int64_t
db_pg_last_insert_id(db_t *db)
{
	(void)db;
	return 0;
}

static int
db_pg_exec(db_t *db, const char *sql)
{
	PGresult *r;
	ExecStatusType es;
	int rc = 0;

	if (db_pg_ready(PG(db)) < 0)
		return -1;
	r = PQexec(PG(db)->c, sql);
	es = PQresultStatus(r);

	if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK &&
	    es != PGRES_EMPTY_QUERY)
		rc = db_pg_fail_res(PG(db), r);
	PQclear(r);
	return rc;
}

/* ---- transactions -------------------------------------------------- */

static bool
db_pg_in_tx(db_t *db)
{
	PGTransactionStatusType t = PQtransactionStatus(PG(db)->c);

	if (PG(db)->broken || t == PQTRANS_UNKNOWN)
		return PG(db)->tx;  /* open until the caller ends it */
	return t == PQTRANS_INTRANS || t == PQTRANS_INERROR ||
	    t == PQTRANS_ACTIVE;
}

/* Writes run READ COMMITTED: every fence is a row lock taken by the
 * UPDATE that checks it, which is what READ COMMITTED re-checks on a
 * concurrent change.  Reads that must agree with each other (status
 * figures) take one snapshot. */
static int
db_pg_begin(db_t *db, bool write)
{
	if (db_pg_exec(db, write ? "BEGIN" :
	    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") < 0)
		return -1;
	PG(db)->tx = true;
	return 0;
}

static int
db_pg_commit(db_t *db)
{
	struct db_pg *d = PG(db);
	PGresult *r;
	int rc = 0;

	if (db_pg_ready(d) < 0) {
		/* lost before COMMIT was sent: rolled back for sure */
		d->tx = false;
		return -1;
	}
	r = PQexec(d->c, "COMMIT");
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		rc = db_pg_fail_res(d, r);
		if (d->broken)
			/* sent, and no answer: it may have committed */
			db_fail(db, "the connection to the server was lost during "
			    "COMMIT (outcome unknown)");
	}
	else if (strcmp(PQcmdStatus(r), "ROLLBACK") == 0)
		/* COMMIT of a transaction an error aborted */
		rc = db_fail(db, "the transaction was aborted and rolled back");
	PQclear(r);
	d->tx = false;
	if (rc < 0 && !d->broken && db_pg_in_tx(db))
		PQclear(PQexec(d->c, "ROLLBACK"));
	return rc;
}

/* On a lost connection the server has already rolled back. */
static int
db_pg_rollback(db_t *db)
{
	struct db_pg *d = PG(db);

	d->tx = false;
	if (d->broken || PQstatus(d->c) != CONNECTION_OK)
		return 0;
	if (!db_pg_in_tx(db))
		return 0;
	return db_pg_exec(db, "ROLLBACK");
}

/* ---- schema helpers ------------------------------------------------ */

/* One integer from a parameterless query; 0 when there is no row. */
static int
db_pg_int_query(db_t *db, const char *sql, int *out)
{
	PGresult *r;
	int rc = 0;

	*out = 0;
	if (db_pg_ready(PG(db)) < 0)
		return -1;
	r = PQexec(PG(db)->c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		rc = db_pg_fail_res(PG(db), r);
	else if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		*out = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return rc;
}

/* The version lives in a one-row table; its absence is version 0.  Read
 * without ever failing on a missing table, which would abort the
 * migration's transaction. */
static int
db_pg_version_get(db_t *db, int *v)
{
	int exists = 0;

	*v = 0;
	if (db_pg_int_query(db, "SELECT count(*) FROM pg_catalog.pg_tables "
	    "WHERE schemaname = current_schema() AND tablename = "
	    "'mpfarm_schema'", &exists) < 0)
		return -1;
	if (!exists)
		return 0;
	return db_pg_int_query(db, "SELECT max(version) FROM mpfarm_schema", v);
}

static int
db_pg_version_set(db_t *db, int v)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "CREATE TABLE IF NOT EXISTS mpfarm_schema "
	    "(version INTEGER NOT NULL); DELETE FROM mpfarm_schema; "
	    "INSERT INTO mpfarm_schema VALUES (%d)", v);
	return db_pg_exec(db, sql);
}

static int
db_pg_names_count(db_t *db, const char *const *names, int n, int *count)
{
	struct buf b;
	int rc;

	/* names are the store's own identifiers, never user input */
	buf_init(&b);
	buf_printf(&b, "SELECT count(*) FROM pg_catalog.pg_class c JOIN "
	    "pg_catalog.pg_namespace s ON s.oid = c.relnamespace WHERE "
	    "s.nspname = current_schema() AND c.relname IN (");
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%s'%s'", i ? ", " : "", names[i]);
	buf_printf(&b, ")");
	rc = db_pg_int_query(db, b.data, count);
	buf_free(&b);
	return rc;
}

/* PostgreSQL checks its pages itself (checksums, amcheck for the
 * administrator); what mpfarm can check is that the server answers. */
static int
db_pg_integrity_check(db_t *db, char **problem)
{
	int one = 0;

	*problem = NULL;
	return db_pg_int_query(db, "SELECT 1", &one);
}

const struct db_ops db_pg_ops = {
	.kind = DB_PG,
	.open = db_pg_open,
	.close = db_pg_close,
	.prepare = db_pg_prepare,
	.finalize = db_pg_finalize,
	.reset = db_pg_reset,
	.bind_int64 = db_pg_bind_int64,
	.bind_text = db_pg_bind_text,
	.bind_blob = db_pg_bind_blob,
	.bind_null = db_pg_bind_null,
	.step = db_pg_step,
	.column_int64 = db_pg_column_int64,
	.column_text = db_pg_column_text,
	.column_null = db_pg_column_null,
	.column_bytes = db_pg_column_bytes,
	.changes = db_pg_changes,
	.last_insert_id = db_pg_last_insert_id,
	.exec = db_pg_exec,
	.in_tx = db_pg_in_tx,
	.begin = db_pg_begin,
	.commit = db_pg_commit,
	.rollback = db_pg_rollback,
	.version_get = db_pg_version_get,
	.version_set = db_pg_version_set,
	.names_count = db_pg_names_count,
	.integrity_check = db_pg_integrity_check,
	.err_busy = db_pg_err_busy,
};
