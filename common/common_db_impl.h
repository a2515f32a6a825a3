/*
 * common_db_impl.h - what a driver behind common_db.h provides: its
 * operations table and the base of its connection and statement structs
 * (each driver embeds them first).  Only common_db*.c include this.
 */
#ifndef MPFARM_COMMON_DB_IMPL_H
#define MPFARM_COMMON_DB_IMPL_H

#include "common_db.h"

#define DB_STMT_MAX 160

struct db_ops {
	enum db_kind kind;
	int  (*open)(db_t **out, const char *target, int flags, int busy_ms,
		     char *err, size_t errlen);
	void (*close)(db_t *db);
	db_stmt_t *(*prepare)(db_t *db, const char *sql, bool keep);
	void (*finalize)(db_stmt_t *s);
	void (*reset)(db_stmt_t *s);        /* and clear the bindings */
	int  (*bind_int64)(db_stmt_t *s, int idx, int64_t v);
	int  (*bind_text)(db_stmt_t *s, int idx, const char *v);
	int  (*bind_blob)(db_stmt_t *s, int idx, const void *p, size_t n);
	int  (*bind_null)(db_stmt_t *s, int idx);
	int  (*step)(db_stmt_t *s);
	int64_t (*column_int64)(db_stmt_t *s, int col);
	const char *(*column_text)(db_stmt_t *s, int col);
	bool (*column_null)(db_stmt_t *s, int col);
	char *(*column_bytes)(db_stmt_t *s, int col, size_t *len);
	int64_t (*changes)(db_t *db);
	int64_t (*last_insert_id)(db_t *db);
	int  (*exec)(db_t *db, const char *sql);
	bool (*in_tx)(db_t *db);
	int  (*begin)(db_t *db, bool write);
	int  (*commit)(db_t *db);
	int  (*rollback)(db_t *db);
	int  (*version_get)(db_t *db, int *v);
	int  (*version_set)(db_t *db, int v);
	int  (*names_count)(db_t *db, const char *const *names, int n,
			    int *count);
	int  (*integrity_check)(db_t *db, char **problem);
	bool (*err_busy)(db_t *db);
};

struct db {
	const struct db_ops *ops;
	db_stmt_t *stmts[DB_STMT_MAX];      /* the cache, by db_sql slot */
	char errmsg[1024];
};

struct db_stmt {
	db_t *db;
};

extern const struct db_ops db_sqlite_ops;
extern const struct db_ops db_pg_ops;

/* Record a message on db; returns -1. */
int db_fail(db_t *db, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
