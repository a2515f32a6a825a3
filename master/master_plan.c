/*
 * master_plan.c - `mpfarm run --dry-run`: what a run would do, read from
 * the store without changing it.  It makes the start-up checks of a real
 * run (so a config that would exit 2 exits 2 here too), then prints the
 * work per stage, language and provider and the first files in dispatch
 * order.  No provider call, no fork, no lock, no database write: the store
 * is opened read-only and a missing one is not created.
 */
#include "master.h"
#include "common_db.h"
#include "common_store_audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLAN_SAMPLE 10          /* files listed */

static void
plan_problem(void *arg, const char *what, const char *msg, bool ok)
{
	int *n = arg;

	if (ok)
		return;
	(*n)++;
	say_err("%s: %s", what, msg);
}

/* One line per stage (and language) this run wants. */
static void
plan_stages(const struct config *cfg, const struct store_counts *c,
	    int64_t *runnable)
{
	int64_t delayed = 0, orphans = 0;

	*runnable = 0;
	printf("%-16s %-11s %10s %10s %10s %10s\n", "stage", "provider",
	    "runnable", "waiting", "retry-later", "done");
	for (int i = 0; i < c->nstages; i++) {
		const struct store_stage_counts *s = &c->stages[i];
		const char *p = config_provider(cfg, s->stage, s->lang);
		char name[64];
		int64_t now;

		if (!config_wants(cfg, s->stage, s->lang) ||
		    (s->stage == STAGE_TRANSLATE && !config_has_lang(cfg, s->lang)))
			continue;
		now = s->n[JOB_ST_NOT_STARTED] - s->waiting - s->delayed;
		job_stage_key(s->stage, s->lang, name, sizeof(name));
		printf("%-16s %-11s %10lld %10lld %10lld %10lld\n", name,
		    p ? p : "(none)", (long long)now, (long long)s->waiting,
		    (long long)s->delayed, (long long)s->n[JOB_ST_COMPLETED]);
		*runnable += now;
		delayed += s->delayed;
		orphans += s->n[JOB_ST_IN_PROGRESS];
	}
	if (orphans > 0)
		printf("%lld jobs are in-progress: with no master running, a run "
		    "first returns them to be run again\n", (long long)orphans);
	if (delayed > 0)
		printf("%lld jobs wait for a retry after a transient error\n",
		    (long long)delayed);
}

/* The first files a run would hand out, in its order. */
static int
plan_sample(store_t *st, const struct config *cfg, int64_t limit)
{
	struct job_ref refs[PLAN_SAMPLE];
	int n = 0, max = PLAN_SAMPLE;

	if (limit > 0 && limit < max)
		max = (int)limit;
	if (store_runnable_fetch(st, cfg, time_wall_ms(), NULL, 0, refs, max,
	    &n) < 0)
		return -1;
	if (n > 0)
		printf("first %s:\n", n == 1 ? "job" : "jobs");
	for (int i = 0; i < n; i++) {
		char *rel = NULL, name[64];
		if (store_audit_job_rel(st, refs[i].job_id, &rel) < 0)
			return -1;
		job_stage_key(refs[i].stage, refs[i].lang, name, sizeof(name));
		printf("  %-16s %s\n", name, log_quote(rel ? rel : "?") );
		free(rel);
	}
	return 0;
}

int
master_plan_run(struct config *cfg)
{
	struct store_open_opts o = { .flags = STORE_READONLY | STORE_EMPTY_OK,
		.busy_timeout_ms = cfg->busy_timeout_ms };
	struct store_counts c;
	store_t *st = NULL;
	char err[600];
	int problems = 0, rc = EXIT_FATAL;
	int64_t runnable = 0;
	pid_t holder;

	if (master_config_check(cfg, MASTER_CHECK_CONFIG, plan_problem,
	    &problems) > 0)
		return EXIT_USAGE;
	printf("dry run: nothing is started, called or written\n");
	if (!db_target_is_pg(cfg->db) && access(cfg->db, F_OK) != 0) {
		printf("database %s does not exist: nothing registered yet "
		    "(mpfarm scan DIR adds files)\n", cfg->db);
		return EXIT_OK;
	}
	if (store_open(&st, cfg->db, &o, err, sizeof(err)) < 0) {
		say_err("%s", err);
		return EXIT_FATAL;
	}
	if (st == NULL) {
		printf("database %s holds no farm yet: nothing registered yet "
		    "(mpfarm scan DIR adds files)\n", cfg->db);
		return EXIT_OK;
	}
	if (master_config_unprovided(cfg, st, plan_problem, &problems) > 0) {
		rc = EXIT_USAGE;
		goto out;
	}
	if (store_counts_get(st, &c) < 0) {
		say_err("%s", store_errmsg(st));
		goto out;
	}
	printf("database %s: %lld media files\n", cfg->db, (long long)c.files);
	plan_stages(cfg, &c, &runnable);
	store_counts_free(&c);
	if (cfg->batch_size > 0 && runnable > cfg->batch_size)
		printf("--batch-size %d: this run would start %d of the %lld "
		    "runnable jobs\n", cfg->batch_size, cfg->batch_size,
		    (long long)runnable);
	if (runnable == 0)
		printf("nothing to run now\n");
	else
		printf("workers: %lld would start\n", (long long)(runnable <
		    cfg->workers ? runnable : cfg->workers));
	if (plan_sample(st, cfg, cfg->batch_size) < 0) {
		say_err("%s", store_errmsg(st));
		goto out;
	}
	holder = master_lock_holder(cfg->db);
	if (holder > 0)
		printf("a master (pid %d) is running on this database: a second "
		    "run would exit 1\n", (int)holder);
	rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_FATAL;
out:
	store_close(st);
	return rc;
}
