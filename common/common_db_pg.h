/*
 * common_db_pg.h - what the two halves of the PostgreSQL driver share:
 * the connection (common_db_pg_conn.c: opening, session settings, errors,
 * the reset after a loss) and its use (common_db_pg.c: statements,
 * results, transactions).  Internal to them.
 */
#ifndef MPFARM_COMMON_DB_PG_H
#define MPFARM_COMMON_DB_PG_H

#include "common_db_impl.h"

#include <libpq-fe.h>

struct db_pg {
	struct db base;
	PGconn   *c;
	int       flags;
	int       busy_ms;          /* lock_timeout */
	int64_t   changes;
	unsigned  nstmts;           /* names of prepared statements */
	char      sqlstate[6];
	bool      tx;               /* the caller's transaction is open */
	bool      broken;           /* the connection was lost */
	unsigned  epoch;            /* connections so far: statements
	                             * prepared on an older one prepare again */
	int       nretry;           /* reconnects failed in a row */
	int64_t   retry_at;         /* no reconnect before (monotonic ms) */
};

#define PG(db)  ((struct db_pg *)(db))

/* Record res's primary message (or the connection's) and SQLSTATE; a
 * connection found bad is marked broken.  Returns -1. */
int  db_pg_fail_res(struct db_pg *d, const PGresult *res);
/* A transient failure without a server answer.  Returns -1. */
int  db_pg_fail_lost(struct db_pg *d, const char *why);
/* Whether the last failure is worth retrying (locks, the server gone). */
bool db_pg_err_busy(db_t *db);
/* Before every use: 0 with a working connection (reset after a loss,
 * outside a transaction, within the backoff), else -1 (transient). */
int  db_pg_ready(struct db_pg *d);
int  db_pg_open(db_t **out, const char *target, int flags, int busy_ms,
		char *err, size_t errlen);
void db_pg_close(db_t *db);

#endif
