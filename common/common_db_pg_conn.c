/*
 * common_db_pg_conn.c - the life of a PostgreSQL connection: opening it,
 * the session's settings, errors and which of them are transient, and
 * surviving its loss.  A server that restarts or a connection that drops
 * must not stall the farm: a lost connection is reset on the next use
 * outside a transaction (no more often than a capped, jittered backoff
 * allows) and the session settings are applied again; until then each
 * call fails with an error db_err_busy calls transient, so the store's
 * callers retry instead of failing jobs.
 */
#include "common_db_pg.h"
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_PG_RETRY_BASE_MS 100     /* first wait before a reconnect */
#define DB_PG_RETRY_CAP_MS  2000    /* the longest wait between tries */

/* ---- errors -------------------------------------------------------- */

/* The primary message of res (or of the connection), one line. */
int
db_pg_fail_res(struct db_pg *d, const PGresult *res)
{
	const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
	    : NULL;
	const char *code = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE)
	    : NULL;
	size_t n;

	snprintf(d->sqlstate, sizeof(d->sqlstate), "%s", code ? code : "");
	if (d->c != NULL && PQstatus(d->c) == CONNECTION_BAD) {
		/* no answer at all: class 08, connection exception */
		d->broken = true;
		if (code == NULL || *code == '\0')
			snprintf(d->sqlstate, sizeof(d->sqlstate), "08006");
	}
	if (m == NULL)
		m = PQerrorMessage(d->c);
	if (m == NULL || *m == '\0')
		m = "PostgreSQL error";
	snprintf(d->base.errmsg, sizeof(d->base.errmsg), "%s", m);
	n = strlen(d->base.errmsg);
	while (n > 0 && (d->base.errmsg[n - 1] == '\n' ||
	    d->base.errmsg[n - 1] == ' '))
		d->base.errmsg[--n] = '\0';
	for (char *p = d->base.errmsg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return -1;
}

/* 40001 serialization failure, 40P01 deadlock, 55P03 lock not available;
 * and the server going away: class 08 (connection exception), 57P01-03
 * (shut down by the administrator, crash, not accepting connections yet),
 * and the idle-in-transaction timeout, which ends the session. */
bool
db_pg_err_busy(db_t *db)
{
	const char *s = PG(db)->sqlstate;

	return strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 ||
	    strcmp(s, "55P03") == 0 || strncmp(s, "08", 2) == 0 ||
	    strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 ||
	    strcmp(s, "57P03") == 0 || strcmp(s, "25P03") == 0 ||
	    PG(db)->broken;
}

/* A transient failure without a server answer. */
int
db_pg_fail_lost(struct db_pg *d, const char *why)
{
	snprintf(d->sqlstate, sizeof(d->sqlstate), "08006");
	return db_fail(&d->base, "%s", why);
}

static int db_pg_session_setup(struct db_pg *d);
static int db_pg_raw(struct db_pg *d, const char *sql);

/* Called before every use: a lost connection is reset here, outside a
 * transaction only (one half of a transaction must never run on the next
 * connection as if it were the whole), and no sooner than the backoff
 * allows, so a server that is down is not hammered by every worker. */
int
db_pg_ready(struct db_pg *d)
{
	int64_t now;

	if (!d->broken && PQstatus(d->c) == CONNECTION_OK)
		return 0;
	d->broken = true;
	if (d->tx)
		return db_pg_fail_lost(d, "the connection to the server was lost "
		    "inside a transaction");
	now = time_mono_ms();
	if (now < d->retry_at)
		return db_pg_fail_lost(d, "no connection to the server "
		    "(reconnecting)");
	PQreset(d->c);
	if (PQstatus(d->c) != CONNECTION_OK || db_pg_session_setup(d) < 0) {
		int64_t wait = backoff_jitter(backoff_delay(DB_PG_RETRY_BASE_MS,
		    DB_PG_RETRY_CAP_MS, d->nretry++));
		d->retry_at = time_mono_ms() + wait;
		d->broken = true;
		db_pg_fail_res(d, NULL);
		snprintf(d->sqlstate, sizeof(d->sqlstate), "08006");
		return -1;
	}
	d->broken = false;
	d->nretry = 0;
	d->retry_at = 0;
	d->epoch++;             /* the server forgot every prepared statement */
	return 0;
}

/* ---- opening ------------------------------------------------------- */

static void
db_pg_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;      /* NOTICEs (IF NOT EXISTS ...) are not ours to print */
}

/* The session's settings, on every new connection (open and reset). */
static int
db_pg_session_setup(struct db_pg *d)
{
	char sql[64];

	PQsetNoticeProcessor(d->c, db_pg_notice, NULL);
	/* as SQLite's synchronous=NORMAL: a power cut may lose the last
	 * commits, never consistency; durable waits for the flush */
	if (db_pg_raw(d, (d->flags & DB_DURABLE) ?
	    "SET synchronous_commit = on" : "SET synchronous_commit = off") < 0)
		return -1;
	/* a process paused inside a transaction (SIGSTOP, a frozen VM)
	 * must not hold its row locks over the other hosts for long: the
	 * server ends such a session, and its next statement fails */
	if (db_pg_raw(d, "SET idle_in_transaction_session_timeout = 10000") < 0)
		return -1;
	/* as SQLite's busy timeout: a lock another session holds (a long
	 * transaction of another program) fails the statement after a
	 * while, a transient error the caller retries or reports, instead
	 * of a command that waits for ever */
	snprintf(sql, sizeof(sql), "SET lock_timeout = %d", d->busy_ms);
	if (db_pg_raw(d, sql) < 0)
		return -1;
	if ((d->flags & DB_READONLY) && db_pg_raw(d,
	    "SET default_transaction_read_only = on") < 0)
		return -1;
	return 0;
}

/* A command on the connection as it is (no reset: the setup runs inside
 * one). */
static int
db_pg_raw(struct db_pg *d, const char *sql)
{
	PGresult *r = PQexec(d->c, sql);
	int rc = 0;

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		rc = db_pg_fail_res(d, r);
	PQclear(r);
	return rc;
}

void
db_pg_close(db_t *db)
{
	PQfinish(PG(db)->c);
	free(db);
}

int
db_pg_open(db_t **out, const char *target, int flags, int busy_ms, char *err,
	   size_t errlen)
{
	struct db_pg *d = xcalloc(1, sizeof(*d));

	d->base.ops = &db_pg_ops;
	d->flags = flags;
	d->busy_ms = busy_ms > 0 ? busy_ms : DB_BUSY_DEFAULT_MS;
	d->c = PQconnectdb(target);
	if (d->c == NULL || PQstatus(d->c) != CONNECTION_OK) {
		db_pg_fail_res(d, NULL);
		goto fail;
	}
	if (db_pg_session_setup(d) < 0)
		goto fail;
	*out = &d->base;
	return 0;
fail:
	snprintf(err, errlen, "%s", d->base.errmsg);
	db_pg_close(&d->base);
	return -1;
}

