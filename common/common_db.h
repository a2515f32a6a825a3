/*
 * common_db.h - the SQL driver under the job store.  The store's logic
 * (fencing, attempts, the view, reports) is written once against this
 * small interface; each engine is one sibling file behind it
 * (common_db_sqlite.c, common_db_pg.c).  Statements are written with
 * SQLite's numbered placeholders (?1, ?2, ...); a driver that spells them
 * otherwise rewrites them when it prepares.  A statement whose text
 * differs by dialect carries the other spelling in its descriptor, so
 * each fact of the schema stays in one place per engine.
 *
 * One db_t belongs to one process and one thread (workers open their own
 * after fork).  Errors are recorded on the db_t (db_errmsg) and returned
 * as -1; nothing here exits.
 */
#ifndef MPFARM_COMMON_DB_H
#define MPFARM_COMMON_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db db_t;
typedef struct db_stmt db_stmt_t;

enum db_kind { DB_SQLITE = 0, DB_PG };

#define DB_ROW  1       /* db_step: a row is ready */
#define DB_DONE 0       /* db_step: no more rows (the statement is reset) */

/* Open flags. */
#define DB_DURABLE  0x01    /* every commit reaches the disk */
#define DB_READONLY 0x02    /* never writes */
#define DB_NO_TRACE 0x04    /* SQLite, read only: leave no -wal/-shm behind */

/* A statement the store prepares once per connection and keeps: `text`
 * in SQLite's dialect, `pg` when PostgreSQL needs another spelling (NULL:
 * the same text, placeholders rewritten).  slot is assigned on first use. */
struct db_sql {
	const char *text;
	const char *pg;
	int         slot;
};
#define DB_SQL(s)      { (s), NULL, 0 }
#define DB_SQL2(s, pg) { (s), (pg), 0 }

/* True when `target` names a PostgreSQL database (postgresql:// or
 * postgres:// URL, or a libpq "key=value" string with dbname=) rather than
 * a file. */
bool db_target_is_pg(const char *target);

/* `target` fit for a message or a log line: a URL's password (and a
 * password= keyword's value) replaced by "***".  malloc'd. */
char *db_target_scrub(const char *target);

/* A password inside a PostgreSQL target (URL user:password@, or a
 * password= parameter or keyword) moves to libpq's PGPASSWORD, inherited
 * by the workers, and *target (malloc'd, replaced) keeps the rest: every
 * message that names the database then carries no secret.  A file path is
 * left alone.  0. */
int  db_target_secret_move(char **target);

/* Open `target` (a file path or a PostgreSQL URL) with DB_* flags;
 * busy_ms (0: DB_BUSY_DEFAULT_MS) bounds the wait for a lock: SQLite's
 * write lock, PostgreSQL's row and table locks (lock_timeout).  On
 * failure writes a one-line reason (without the target's name) into err
 * and returns -1. */
#define DB_BUSY_DEFAULT_MS 10000
int  db_open(db_t **out, const char *target, int flags, int busy_ms,
	     char *err, size_t errlen);
/* Finalizes every statement and closes; NULL is fine. */
void db_close(db_t *db);
enum db_kind db_kind(const db_t *db);

/* The message of the last failure on this connection (never NULL), with
 * the engine's detail (e.g. "database is locked (busy for 10000 ms)"). */
const char *db_errmsg(db_t *db);
/* True when the last failure was a lock or serialization conflict that
 * a retry of the whole transaction may cure. */
bool db_err_busy(db_t *db);

/* The cached statement for q on this connection, reset with its bindings
 * cleared; NULL on error (db_errmsg). */
db_stmt_t *db_stmt(db_t *db, struct db_sql *q);
/* A one-off statement (free with db_finalize); NULL on error. */
db_stmt_t *db_prepare(db_t *db, const char *sql);
void db_finalize(db_stmt_t *s);
void db_reset(db_stmt_t *s);

/* Bindings by 1-based index.  Text and blobs are copied.  Return 0, or -1
 * when the index is out of range. */
int  db_bind_int64(db_stmt_t *s, int idx, int64_t v);
int  db_bind_text(db_stmt_t *s, int idx, const char *v);    /* NULL: NULL */
int  db_bind_blob(db_stmt_t *s, int idx, const void *p, size_t n);
int  db_bind_null(db_stmt_t *s, int idx);

/* Step once: DB_ROW, DB_DONE (statement reset), or -1 with the error
 * recorded and the statement reset. */
int  db_step(db_stmt_t *s);
/* Step to the end: 0 or -1. */
int  db_run(db_stmt_t *s);

/* Column getters of the current row, 0-based.  Text is valid until the
 * next step or reset; NULL for SQL NULL.  A boolean reads as 0 or 1. */
int64_t     db_column_int64(db_stmt_t *s, int col);
int         db_column_int(db_stmt_t *s, int col);
const char *db_column_text(db_stmt_t *s, int col);
bool        db_column_null(db_stmt_t *s, int col);
/* The column's bytes (a BLOB/bytea, or text) as a malloc'd NUL-terminated
 * copy; "" for NULL. */
char       *db_column_bytes(db_stmt_t *s, int col, size_t *len);

/* Rows the last finished INSERT/UPDATE/DELETE changed. */
int64_t db_changes(db_t *db);
/* The rowid of the last INSERT (SQLite); 0 where the engine has none
 * (PostgreSQL: use RETURNING). */
int64_t db_last_insert_id(db_t *db);

/* Run a script of one or more statements without results: 0 or -1. */
int  db_exec(db_t *db, const char *sql);

/* Transactions: a write transaction takes the engine's write lock at once
 * where it has one (SQLite BEGIN IMMEDIATE); a read transaction sees one
 * snapshot.  commit rolls back what is still open when it fails. */
bool db_in_tx(db_t *db);
int  db_begin(db_t *db, bool write);
int  db_commit(db_t *db);
int  db_rollback(db_t *db);

/* The schema version recorded in the database (SQLite: PRAGMA
 * user_version; PostgreSQL: the one-row table mpfarm_schema, 0 when it
 * does not exist yet).  set runs inside the caller's transaction. */
int  db_version_get(db_t *db, int *v);
int  db_version_set(db_t *db, int v);
/* How many of `names` exist as tables or views: 0 or -1. */
int  db_names_count(db_t *db, const char *const *names, int n, int *count);
/* The engine's own consistency check: *problem NULL when sound, else a
 * malloc'd summary.  0 or -1. */
int  db_integrity_check(db_t *db, char **problem);

#endif
