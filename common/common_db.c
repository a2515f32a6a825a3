/*
 * common_db.c - the driver-neutral half of common_db.h: which engine a
 * target names, scrubbing passwords out of it, the per-connection cache of
 * prepared statements and the calls that dispatch to a driver's table.
 * The engines themselves are common_db_sqlite.c and common_db_pg.c.
 */
#include "common_db_impl.h"
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Slots are handed out per process in first-use order; every db_t of the
 * process indexes its stmts[] with them. */
static int db_nslots;

bool
db_target_is_pg(const char *t)
{
	if (t == NULL)
		return false;
	if (strncmp(t, "postgresql://", 13) == 0 ||
	    strncmp(t, "postgres://", 11) == 0)
		return true;
	/* a libpq keyword string: "dbname=farm host=/run/pg" */
	return strncmp(t, "dbname=", 7) == 0 || strstr(t, " dbname=") != NULL;
}

/* Replace the value after each "password=" (keyword string or URL query)
 * up to the next separator. */
static void
db_scrub_keyword(struct buf *b, const char *t)
{
	const char *p = t, *k;

	while ((k = strstr(p, "password=")) != NULL) {
		const char *v = k + 9, *e = v;
		if (*e == '\'') {
			for (e++; *e && *e != '\''; e++)
				if (*e == '\\' && e[1])
					e++;
			if (*e)
				e++;
		} else {
			e += strcspn(e, " &;#");
		}
		buf_append(b, p, (size_t)(v - p));
		buf_append(b, "***", 3);
		p = e;
	}
	buf_append(b, p, strlen(p));
}

char *
db_target_scrub(const char *t)
{
	struct buf b, out;
	const char *scheme, *auth, *end, *at, *colon;

	if (t == NULL)
		return xstrdup("");
	buf_init(&b);
	scheme = strstr(t, "://");
	if (db_target_is_pg(t) && scheme != NULL) {
		auth = scheme + 3;
		end = auth + strcspn(auth, "/?#");
		/* the last '@' of the authority: a password may hold '@' */
		at = NULL;
		for (const char *p = auth; p < end; p++)
			if (*p == '@')
				at = p;
		colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon != NULL) {
			buf_append(&b, t, (size_t)(colon + 1 - t));
			buf_append(&b, "***", 3);
			buf_append(&b, at, strlen(at));
		} else {
			buf_append(&b, t, strlen(t));
		}
	} else {
		buf_append(&b, t, strlen(t));
	}
	buf_terminate(&b);
	if (!db_target_is_pg(t))
		return b.data;
	buf_init(&out);
	db_scrub_keyword(&out, b.data);
	buf_terminate(&out);
	buf_free(&b);
	return out.data;
}

static int
db_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* %XX decoded (a URL's password), or a keyword value's quotes and
 * backslashes undone. */
static char *
db_secret_decode(const char *p, size_t n, bool url)
{
	char *out = xmalloc(n + 1), *o = out;
	const char *e = p + n;

	if (!url && n >= 2 && p[0] == '\'' && e[-1] == '\'') {
		p++;
		e--;
	}
	for (; p < e; p++) {
		if (url && *p == '%' && e - p >= 3 && db_hex(p[1]) >= 0 &&
		    db_hex(p[2]) >= 0) {
			*o++ = (char)(db_hex(p[1]) * 16 + db_hex(p[2]));
			p += 2;
		} else if (!url && *p == '\\' && p + 1 < e) {
			*o++ = *++p;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

int
db_target_secret_move(char **target)
{
	const char *t = *target, *scheme, *auth, *end, *at = NULL, *colon;
	char *pw = NULL;
	struct buf b;

	if (!db_target_is_pg(t))
		return 0;
	buf_init(&b);
	scheme = strstr(t, "://");
	if (scheme != NULL) {
		auth = scheme + 3;
		end = auth + strcspn(auth, "/?#");
		for (const char *p = auth; p < end; p++)
			if (*p == '@')
				at = p;
		colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon != NULL) {
			pw = db_secret_decode(colon + 1, (size_t)(at - colon - 1),
			    true);
			buf_append(&b, t, (size_t)(colon - t));
			t = at;
		}
	}
	/* "password=" as a URL parameter or a keyword */
	for (const char *k; (k = strstr(t, "password=")) != NULL; ) {
		const char *v = k + 9, *e = v;
		bool url = scheme != NULL;
		if (!url && *e == '\'') {
			for (e++; *e && *e != '\''; e++)
				if (*e == '\\' && e[1])
					e++;
			if (*e)
				e++;
		} else {
			e += strcspn(e, url ? "&#" : " ");
		}
		free(pw);
		pw = db_secret_decode(v, (size_t)(e - v), url);
		/* drop "password=V" with one separator */
		if (*e == '&' || *e == ' ')
			e++;
		else if (k > t && (k[-1] == '&' || k[-1] == ' '))
			k--;
		buf_append(&b, t, (size_t)(k - t));
		t = e;
	}
	buf_append(&b, t, strlen(t));
	buf_terminate(&b);
	if (pw != NULL) {
		setenv("PGPASSWORD", pw, 1);
		memset(pw, 0, strlen(pw));
		free(pw);
		free(*target);
		*target = b.data;
	} else {
		buf_free(&b);
	}
	return 0;
}

int
db_fail(db_t *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
	va_end(ap);
	return -1;
}

int
db_open(db_t **out, const char *target, int flags, int busy_ms, char *err,
	size_t errlen)
{
	const struct db_ops *ops = db_target_is_pg(target) ? &db_pg_ops
	    : &db_sqlite_ops;

	*out = NULL;
	if (ops->open(out, target, flags, busy_ms, err, errlen) < 0)
		return -1;
	(*out)->ops = ops;
	return 0;
}

void
db_close(db_t *db)
{
	if (db == NULL)
		return;
	for (int i = 0; i < DB_STMT_MAX; i++)
		if (db->stmts[i] != NULL)
			db->ops->finalize(db->stmts[i]);
	db->ops->close(db);
}

enum db_kind
db_kind(const db_t *db)
{
	return db->ops->kind;
}

const char *
db_errmsg(db_t *db)
{
	return db && db->errmsg[0] ? db->errmsg : "no error";
}

bool
db_err_busy(db_t *db)
{
	return db->ops->err_busy(db);
}

db_stmt_t *
db_stmt(db_t *db, struct db_sql *q)
{
	db_stmt_t *s;
	const char *text;

	if (q->slot == 0) {
		if (db_nslots >= DB_STMT_MAX) {
			db_fail(db, "internal: more than %d cached statements",
			    DB_STMT_MAX);
			return NULL;
		}
		q->slot = ++db_nslots;
	}
	s = db->stmts[q->slot - 1];
	if (s != NULL) {
		db->ops->reset(s);
		return s;
	}
	text = db->ops->kind == DB_PG && q->pg != NULL ? q->pg : q->text;
	if ((s = db->ops->prepare(db, text, true)) == NULL)
		return NULL;
	db->stmts[q->slot - 1] = s;
	return s;
}

db_stmt_t *
db_prepare(db_t *db, const char *sql)
{
	return db->ops->prepare(db, sql, false);
}

void
db_finalize(db_stmt_t *s)
{
	if (s != NULL)
		s->db->ops->finalize(s);
}

void
db_reset(db_stmt_t *s)
{
	s->db->ops->reset(s);
}

int
db_bind_int64(db_stmt_t *s, int idx, int64_t v)
{
	return s->db->ops->bind_int64(s, idx, v);
}

int
db_bind_text(db_stmt_t *s, int idx, const char *v)
{
	if (v == NULL)
		return s->db->ops->bind_null(s, idx);
	return s->db->ops->bind_text(s, idx, v);
}

int
db_bind_blob(db_stmt_t *s, int idx, const void *p, size_t n)
{
	return s->db->ops->bind_blob(s, idx, p, n);
}

int
db_bind_null(db_stmt_t *s, int idx)
{
	return s->db->ops->bind_null(s, idx);
}

int
db_step(db_stmt_t *s)
{
	return s->db->ops->step(s);
}

int
db_run(db_stmt_t *s)
{
	int rc;

	while ((rc = db_step(s)) == DB_ROW)
		;
	return rc < 0 ? -1 : 0;
}

int64_t
db_column_int64(db_stmt_t *s, int col)
{
	return s->db->ops->column_int64(s, col);
}

int
db_column_int(db_stmt_t *s, int col)
{
	return (int)s->db->ops->column_int64(s, col);
}

const char *
db_column_text(db_stmt_t *s, int col)
{
	return s->db->ops->column_text(s, col);
}

bool
db_column_null(db_stmt_t *s, int col)
{
	return s->db->ops->column_null(s, col);
}

char *
db_column_bytes(db_stmt_t *s, int col, size_t *len)
{
	return s->db->ops->column_bytes(s, col, len);
}

int64_t
db_changes(db_t *db)
{
	return db->ops->changes(db);
}

int64_t
db_last_insert_id(db_t *db)
{
	return db->ops->last_insert_id(db);
}

int
db_exec(db_t *db, const char *sql)
{
	return db->ops->exec(db, sql);
}

bool
db_in_tx(db_t *db)
{
	return db->ops->in_tx(db);
}

int
db_begin(db_t *db, bool write)
{
	return db->ops->begin(db, write);
}

int
db_commit(db_t *db)
{
	return db->ops->commit(db);
}

int
db_rollback(db_t *db)
{
	return db->ops->rollback(db);
}

int
db_version_get(db_t *db, int *v)
{
	return db->ops->version_get(db, v);
}

int
db_version_set(db_t *db, int v)
{
	return db->ops->version_set(db, v);
}

int
db_names_count(db_t *db, const char *const *names, int n, int *count)
{
	return db->ops->names_count(db, names, n, count);
}

int
db_integrity_check(db_t *db, char **problem)
{
	return db->ops->integrity_check(db, problem);
}
