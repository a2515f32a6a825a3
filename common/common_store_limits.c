/*
 * common_store_limits.c - farm-wide provider limits on PostgreSQL.  With
 * one master the master's own bucket and counters are the whole truth;
 * with several masters on one database they would each spend the whole
 * `rate` and `max_concurrency`.  So the farm's bucket lives in one row
 * per provider (tokens in thousandths, refilled by the database's clock)
 * and each master takes from it every tick what its waiting workers ask
 * for; a 429 writes paused_until there, which every master reads at its
 * next tick.  Concurrency is shared out per host row (provider_slots,
 * dropped with the host row when a silent host's jobs are returned), so
 * a dead host's share is freed with its jobs.  The tables are created
 * lazily, outside the versioned schema: they hold only live state, and
 * a farm that never runs a limited provider on PostgreSQL never has them.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store_limits.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The farm's bucket holds at most this many seconds of tokens (and at
 * least one): masters tick every 100 ms, so a fifth of a second keeps
 * every waiting worker served without letting a quiet spell turn into
 * a burst the provider would refuse. */
#define LIMITS_BURST_S 0.2
#define LIMITS_MILLI   1000

/* The database's clock in ms: one clock for every host. */
#define LIMITS_NOW "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

static const char limits_schema[] =
	"CREATE TABLE IF NOT EXISTS provider_limits ("
	"  provider     TEXT COLLATE \"C\" PRIMARY KEY,"
	"  tokens_m     BIGINT NOT NULL DEFAULT 0,"
	"  tokens_at    BIGINT NOT NULL DEFAULT 0,"
	"  paused_until BIGINT NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE IF NOT EXISTS provider_slots ("
	"  provider TEXT COLLATE \"C\" NOT NULL,"
	"  host_id  TEXT COLLATE \"C\" NOT NULL"
	"           REFERENCES hosts(host_id) ON DELETE CASCADE,"
	"  want     INTEGER NOT NULL,"
	"  held     INTEGER NOT NULL,"
	"  inflight INTEGER NOT NULL,"
	"  PRIMARY KEY (provider, host_id)"
	");";

static struct store_sql q_lim_lock = STORE_SQL(
	"SELECT pg_advisory_xact_lock(120329521427053)");
static struct store_sql q_lim_row = STORE_SQL(
	"INSERT INTO provider_limits (provider, tokens_m, tokens_at) "
	"VALUES (?1, 0, " LIMITS_NOW ") ON CONFLICT (provider) DO NOTHING");
static struct store_sql q_lim_get = STORE_SQL(
	"SELECT tokens_m, tokens_at, paused_until, " LIMITS_NOW " "
	"FROM provider_limits WHERE provider = ?1 FOR UPDATE");
static struct store_sql q_lim_put = STORE_SQL(
	"UPDATE provider_limits SET tokens_m = ?2, tokens_at = ?3 "
	"WHERE provider = ?1");
static struct store_sql q_lim_pause = STORE_SQL(
	"INSERT INTO provider_limits (provider, tokens_m, tokens_at, "
	"paused_until) VALUES (?1, 0, " LIMITS_NOW ", " LIMITS_NOW " + ?2) "
	"ON CONFLICT (provider) DO UPDATE SET paused_until = "
	"greatest(provider_limits.paused_until, excluded.paused_until)");
/* every host's share, this one's included (its row may not exist yet) */
static struct store_sql q_lim_slots = STORE_SQL(
	"SELECT host_id, want, held, inflight FROM provider_slots "
	"WHERE provider = ?1 ORDER BY host_id");
static struct store_sql q_lim_slot_put = STORE_SQL(
	"INSERT INTO provider_slots (provider, host_id, want, held, inflight) "
	"VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (provider, host_id) DO "
	"UPDATE SET want = excluded.want, held = excluded.held, "
	"inflight = excluded.inflight");

int
store_limits_init(store_t *st)
{
	db_stmt_t *s;
	bool own;
	int rc = -1;

	if (!store_is_pg(st))
		return 0;
	/* two masters starting at once must not both create the tables */
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_lim_lock)) == NULL || store_run(st, s) < 0)
		goto out;
	if (db_exec(store_db(st), limits_schema) < 0) {
		rc = store_fail_db(st);
		goto out;
	}
	rc = 0;
out:
	return store_tx_leave(st, own, rc);
}

/* The refill and this host's take, under the row lock. */
static int
limits_tokens(store_t *st, const char *provider, struct store_limit_sync *ls)
{
	int64_t tokens, at, paused, now, cap;
	db_stmt_t *s;
	int step;

	if ((s = store_stmt(st, &q_lim_row)) == NULL)
		return -1;
	db_bind_text(s, 1, provider);
	if (store_run(st, s) < 0 || (s = store_stmt(st, &q_lim_get)) == NULL)
		return -1;
	db_bind_text(s, 1, provider);
	if ((step = store_step(st, s)) < 0)
		return -1;
	if (step != DB_ROW)
		return store_fail(st, "provider row %s vanished", provider);
	tokens = db_column_int64(s, 0);
	at = db_column_int64(s, 1);
	paused = db_column_int64(s, 2);
	now = db_column_int64(s, 3);
	db_reset(s);
	ls->paused_ms = paused > now ? paused - now : 0;
	if (ls->rate <= 0)
		return 0;
	cap = (int64_t)(ls->rate * LIMITS_BURST_S * LIMITS_MILLI);
	if (cap < LIMITS_MILLI)
		cap = LIMITS_MILLI;
	if (now > at)
		tokens += (int64_t)((double)(now - at) * ls->rate);
	if (tokens > cap)
		tokens = cap;
	/* a pause spends nothing: the bucket waits with the provider */
	if (ls->paused_ms == 0 && ls->want_tokens > 0) {
		int64_t n = tokens / LIMITS_MILLI;
		if (n > ls->want_tokens)
			n = ls->want_tokens;
		ls->tokens = (int)n;
		tokens -= n * LIMITS_MILLI;
	}
	if ((s = store_stmt(st, &q_lim_put)) == NULL)
		return -1;
	db_bind_text(s, 1, provider);
	db_bind_int64(s, 2, tokens);
	db_bind_int64(s, 3, now);
	return store_run(st, s);
}

struct limits_host {
	char id[40];
	int  want, held, inflight;
};

/* This host's concurrency share.  Each host wanting slots has a fair
 * part (max_conc split evenly, the remainder to the first by host id);
 * a host may also use what others want less than their part, but never
 * more than they leave free: what a host runs counts even when its
 * share has since shrunk, so the farm never exceeds max_conc. */
static int
limits_slots(store_t *st, const char *provider, struct store_limit_sync *ls)
{
	struct limits_host *v = NULL;
	int n = 0, cap = 0, step, rc = -1, nwant = 0, rank = -1, me = -1;
	int used = 0, spare = 0, held;
	db_stmt_t *s;

	if ((s = store_stmt(st, &q_lim_slots)) == NULL)
		return -1;
	db_bind_text(s, 1, provider);
	while ((step = store_step(st, s)) == DB_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			v = xrealloc(v, sizeof(*v) * (size_t)cap);
		}
		snprintf(v[n].id, sizeof(v[n].id), "%s", db_column_text(s, 0));
		v[n].want = db_column_int(s, 1);
		v[n].held = db_column_int(s, 2);
		v[n].inflight = db_column_int(s, 3);
		if (strcmp(v[n].id, store_host_id()) == 0)
			me = n;
		n++;
	}
	if (step < 0)
		goto out;
	if (me < 0) {
		if (n == cap)
			v = xrealloc(v, sizeof(*v) * (size_t)++cap);
		me = n++;
		snprintf(v[me].id, sizeof(v[me].id), "%s", store_host_id());
	}
	v[me].want = ls->want_slots;
	v[me].inflight = ls->inflight;
	/* rank among the wanting hosts, by id (the rows come sorted; this
	 * host's new row, if any, goes last: it learns its place next tick) */
	for (int i = 0; i < n; i++)
		if (v[i].want > 0) {
			if (i == me)
				rank = nwant;
			nwant++;
		}
	for (int i = 0; i < n; i++) {
		if (i == me)
			continue;
		used += v[i].held > v[i].inflight ? v[i].held : v[i].inflight;
		if (v[i].want > 0) {
			int r = 0;
			for (int k = 0; k < i; k++)
				r += v[k].want > 0;
			int part = ls->max_conc / nwant +
			    (r < ls->max_conc % nwant);
			if (v[i].want < part)
				spare += part - v[i].want;
		}
	}
	held = 0;
	if (ls->want_slots > 0 && nwant > 0) {
		held = ls->max_conc / nwant + (rank < ls->max_conc % nwant) +
		    spare;
		if (held > ls->want_slots)
			held = ls->want_slots;
		if (held > ls->max_conc - used)
			held = ls->max_conc - used;
		if (held < 0)
			held = 0;
	}
	ls->held = held;
	if ((s = store_stmt(st, &q_lim_slot_put)) == NULL)
		goto out;
	db_bind_text(s, 1, provider);
	db_bind_text(s, 2, store_host_id());
	db_bind_int64(s, 3, ls->want_slots);
	db_bind_int64(s, 4, held);
	db_bind_int64(s, 5, ls->inflight);
	rc = store_run(st, s);
out:
	free(v);
	return rc;
}

int
store_limits_sync(store_t *st, const char *provider,
		  struct store_limit_sync *ls)
{
	bool own;
	int rc;

	ls->tokens = 0;
	ls->held = 0;
	ls->paused_ms = 0;
	if (!store_is_pg(st))
		return 0;
	if (store_tx_enter(st, &own) < 0)
		return -1;
	/* the provider row's lock also orders the slot shares */
	rc = limits_tokens(st, provider, ls);
	if (rc == 0 && ls->max_conc > 0)
		rc = limits_slots(st, provider, ls);
	rc = store_tx_leave(st, own, rc);
	if (rc < 0) {
		ls->tokens = 0;
		ls->held = 0;
	}
	return rc;
}

int
store_limits_pause(store_t *st, const char *provider, int64_t ms)
{
	db_stmt_t *s;

	if (!store_is_pg(st))
		return 0;
	if ((s = store_stmt(st, &q_lim_pause)) == NULL)
		return -1;
	db_bind_text(s, 1, provider);
	db_bind_int64(s, 2, ms);
	return store_run(st, s);
}
