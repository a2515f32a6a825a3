/*
 * master_store.c - how the master's commands reach the store: one opener
 * for every command (the config's durability and busy timeout, errors
 * printed for a person), and for `run` the farm's own connection, which
 * master_spawn.c closes around every fork and which is opened again
 * here, plus the one lookup the farm's log lines make (a job's file).
 */
#include "master_farm.h"
#include "common_store_audit.h"

#include <stdlib.h>

int
master_store_open_into(const struct config *cfg, int flags, store_t **out)
{
	struct store_open_opts opts = { 0 };
	char err[600];

	opts.flags = flags | (cfg->durable ? STORE_DURABLE : 0);
	opts.busy_timeout_ms = cfg->busy_timeout_ms;
	if (store_open(out, cfg->db, &opts, err, sizeof(err)) < 0) {
		say_err("%s", err);
		return -1;
	}
	return 0;
}

store_t *
master_store_open(const struct config *cfg, int flags)
{
	store_t *st = NULL;

	return master_store_open_into(cfg, flags, &st) < 0 ? NULL : st;
}

int
farm_store_reopen(void)
{
	if (farm.st != NULL)
		return 0;
	farm.st = master_store_open(farm.cfg, 0);
	if (farm.st == NULL) {
		log_error("store_reopen_failed", "db=%s", log_quote(farm.cfg->db));
		return -1;
	}
	return 0;
}

/* The master's side of a database outage, so that a server restart
 * shows as two lines rather than one per call per second. */
static struct {
	bool    down;
	int64_t since;          /* mono ms of the first failure */
	int     swallowed;      /* failures not logged */
} farm_outage;

void
farm_store_failed(const char *event, enum log_level level)
{
	bool transient = farm.st != NULL && store_err_transient(farm.st);

	if (transient && farm_outage.down) {
		farm_outage.swallowed++;
		return;
	}
	if (transient) {
		farm_outage.down = true;
		farm_outage.since = time_mono_ms();
		farm_outage.swallowed = 0;
	}
	log_event(level, event, "error=%s%s", log_quote(farm.st ?
	    store_errmsg(farm.st) : "no database"), transient ?
	    " note=database-away-retrying" : "");
}

void
farm_store_ok(void)
{
	if (!farm_outage.down)
		return;
	farm_outage.down = false;
	log_info("store_reconnected", "outage_ms=%lld failures=%d",
	    (long long)(time_mono_ms() - farm_outage.since),
	    farm_outage.swallowed + 1);
}

const char *
farm_job_file(int64_t job_id)
{
	char *rel = NULL;
	const char *q;

	if (farm_store_reopen() < 0 ||
	    store_audit_job_rel(farm.st, job_id, &rel) < 0 || rel == NULL)
		return "-";
	q = log_quote(rel);
	free(rel);
	return q;
}
