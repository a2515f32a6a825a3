/*
 * master_queue.c - the master's job queue: which stages and languages this
 * run works on (a configured provider, one that can start a job now), the
 * refill from the store (the jobs no slot holds, oldest first; when none is
 * runnable, when to look again), --batch-size's budget of job starts, and
 * whether the farm has nothing left to do.  The store is asked both of its
 * questions (runnable now, next due) at one wall-clock time, so a retry
 * that falls due in between is never missed.
 */
#include "master_farm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* When the store cannot be asked (an error) or every provider is held
 * back, the refill looks again after this long. */
#define FARM_REFILL_RETRY_MS 1000
/* With nothing runnable and no retry time due, a farm without --watch
 * still looks once an hour (a scan may have added work). */
#define FARM_IDLE_LOOK_MS   (3600 * MS_PER_S)
/* How often a master out of work asks whether other hosts still run
 * jobs it could take over (PostgreSQL). */
#define FARM_ELSEWHERE_MS   MS_PER_S

/* Whether the farm runs a stage's jobs at all (a provider is configured:
 * none is ever assumed) and, with held, whether its provider can start a
 * job now (not paused, at its concurrency limit or disabled). */
static bool
farm_stage_runs(int stage, const char *lang, bool held)
{
	const char *p = config_provider(farm.cfg, stage, lang);

	return p != NULL && !(held && farm_prov_blocked(p));
}

/* The settings a refill fetches with: this run's stages and languages,
 * less those without a provider and, with held, those whose provider
 * cannot start a job now, so that their jobs never crowd the queue while
 * other work waits.  A shallow copy: only the filters change. */
static void
farm_fetch_filter(struct config *fc, bool held)
{
	const struct config *cfg = farm.cfg;
	int n = 0;

	*fc = *cfg;
	if (!farm_stage_runs(STAGE_TRANSCRIBE, "", held))
		fc->stage_mask &= ~STAGE_MASK_TRANSCRIBE;
	for (int i = 0; i < cfg->nlangs; i++) {
		const char *lang = cfg->langs[i];
		if (!config_wants(cfg, STAGE_TRANSLATE, lang) ||
		    !farm_stage_runs(STAGE_TRANSLATE, lang, held))
			continue;
		memcpy(fc->run_langs[n++], lang, CONFIG_LANG_MAX);
	}
	fc->nrun_langs = n;
	if (n == 0)
		fc->stage_mask &= ~STAGE_MASK_TRANSLATE;
}

/* PostgreSQL: how many jobs to claim for this host now.  What its
 * workers can take (farm_dispatch_room), no more than the providers of
 * the wanted stages may start or --batch-size has left, so that a claim
 * is seldom given back; 0 while the room is too small to be worth a
 * round trip of its own (every worker still has jobs sent ahead). */
static int
farm_claim_size(const struct config *fc)
{
	bool worth, seen[IPC_PROVIDER_MAX] = { false };
	int room = farm_dispatch_room(&worth), prov_room = 0;
	int64_t max;

	if (!worth || room <= 0)
		return 0;
	/* the pairs the claim asks for, as the store lists them: the
	 * transcripts, then the languages configured and those run */
	for (int i = -1; i < fc->nlangs + fc->nrun_langs; i++) {
		int stage = i < 0 ? STAGE_TRANSCRIBE : STAGE_TRANSLATE, p, r;
		const char *lang = i < 0 ? "" : i < fc->nlangs ? fc->langs[i] :
		    fc->run_langs[i - fc->nlangs];
		if (!config_wants(fc, stage, lang) ||
		    (p = farm_prov_of(stage, lang)) < 0 || seen[p])
			continue;
		seen[p] = true;
		r = farm_prov_room(p);
		prov_room = r > INT_MAX - prov_room ? INT_MAX : prov_room + r;
	}
	max = room < prov_room ? room : prov_room;
	if (max > farm.qcap)
		max = farm.qcap;
	if (farm.cfg->batch_size > 0 &&
	    max > farm.cfg->batch_size - farm.budget_used)
		max = farm.cfg->batch_size - farm.budget_used;
	return max > 0 ? (int)max : 0;
}

/* The ids of the jobs the slots hold (running or sent ahead) and the
 * queue: *ids malloc'd, the count returned. */
int
farm_held_ids(int64_t **ids)
{
	int n = 0;

	*ids = xcalloc((FARM_AHEAD_MAX + 1) * (size_t)farm.nslots +
	    (size_t)farm.qlen + 1, sizeof(**ids));
	for (int i = 0; i < farm.nslots; i++) {
		if (farm_slot_holds_job(farm.slots[i]))
			(*ids)[n++] = farm.slots[i]->job.job_id;
		for (int k = 0; k < farm.slots[i]->nahead; k++)
			(*ids)[n++] = farm.slots[i]->ahead[k].job_id;
	}
	for (int i = 0; i < farm.qlen; i++)
		(*ids)[n++] = farm.queue[(farm.qhead + i) % farm.qcap].job_id;
	return n;
}

/* PostgreSQL: give back this host's claims that nobody holds (after a
 * claim whose outcome an error hid, and at the end).  0 or -1. */
int
farm_claims_sweep(void)
{
	int64_t *held;
	int nheld = farm_held_ids(&held), given = 0, rc;

	rc = store_claims_sweep(farm.st, held, nheld, &given);
	free(held);
	if (rc < 0)
		return -1;
	farm.claims_unsure = false;
	if (given > 0) {
		log_info("claims_swept", "jobs=%d note=claimed-but-never-handed-"
		    "out", given);
		farm.dirty = true;
	}
	return 0;
}

/* The jobs the queue held go back (claims of the master's own, on
 * PostgreSQL) and the queue is empty. */
void
farm_queue_clear(void)
{
	struct job_ref *q;
	int n = farm.qlen, given;

	if (n == 0)
		return;
	q = xcalloc((size_t)n, sizeof(*q));
	for (int i = 0; i < n; i++)
		q[i] = farm.queue[(farm.qhead + i) % farm.qcap];
	farm.qlen = 0;
	farm.qhead = 0;
	farm_jobs_giveback(q, n, &given);
	free(q);
}

/* Refill the queue from the store when it is empty and it may help.  On
 * SQLite (this master alone) it reads the oldest runnable jobs and each
 * worker claims the one it is handed; on PostgreSQL the master claims
 * them for its host, as many as its workers can take. */
void
farm_refill(int64_t now)
{
	struct config fc;
	int64_t *skip = NULL, wall = time_wall_ms();
	int nskip = 0, n = 0, rc;

	if (farm.stopping || farm.qlen > 0)
		return;
	if (!farm.dirty && now < farm.next_fetch)
		return;
	if (farm.st == NULL && farm_store_reopen() < 0)
		return;
	farm_prov_fail_disabled();
	farm_fetch_filter(&fc, true);
	if (farm_budget_spent())
		fc.stage_mask = 0;
	farm.qhead = 0;
	if (fc.stage_mask == 0) {       /* every provider is held back */
		farm.dirty = false;
		farm.next_fetch = now + FARM_REFILL_RETRY_MS;
		return;
	}
	if (store_is_pg(farm.st)) {
		int max = farm_claim_size(&fc);
		if (max == 0)
			return;         /* dirty stays: the next event asks */
		if (farm.claims_unsure && farm_claims_sweep() < 0)
			rc = -1;
		else
			rc = store_jobs_claim(farm.st, &fc, wall, getpid(),
			    farm.queue, max, &n);
		/* an error may hide a claim that did commit */
		farm.claims_unsure |= rc < 0;
	} else {
		/* the jobs no slot holds */
		nskip = farm_held_ids(&skip);
		rc = store_runnable_fetch(farm.st, &fc, wall, skip, nskip,
		    farm.queue, farm.qcap, &n);
		free(skip);
	}
	if (rc < 0) {
		farm_store_failed("queue_refill_failed", LOG_ERROR);
		farm.next_fetch = now + FARM_REFILL_RETRY_MS;   /* dirty stays */
		return;
	}
	if (rc == 1)            /* other masters held them: dirty stays */
		return;
	farm_store_ok();
	farm.qlen = n;
	farm.dirty = false;
	if (n == 0) {
		int64_t due = 0;
		/* nothing runnable now: look again at the next retry time, or
		 * at the watch interval */
		farm.next_fetch = now + (farm.cfg->watch ?
		    (int64_t)farm.cfg->check_interval * MS_PER_S :
		    FARM_IDLE_LOOK_MS);
		if (store_next_due(farm.st, &fc, wall, &due) == 0 && due > 0) {
			int64_t wait = due - time_wall_ms();
			if (wait < 0)
				wait = 0;
			if (now + wait < farm.next_fetch)
				farm.next_fetch = now + wait;
		}
	}
}

void
farm_refill_dispatch_or_stop(void)
{
	farm_refill(time_mono_ms());
	farm_dispatch();
	/* the last DONE: stop now rather than at the next timed look */
	if (!farm.stopping && farm.qlen == 0 && farm_busy_count() == 0 &&
	    farm_finished())
		farm_stop_begin(false, "done");
}

/* The loop is done when nothing is in flight and nothing is left: no job
 * runnable now (even one held back by a paused provider), none waiting
 * for its retry time, none another host runs, no release still owed.
 * Any doubt (a database error) means not done. */
bool
farm_finished(void)
{
	struct config fc;
	struct job_ref one;
	int64_t due = 0, wall, elsewhere = 0, now = time_mono_ms();
	int n = 0;

	if (farm.cfg->watch || farm.qlen > 0 || farm_busy_count() > 0 ||
	    farm.nowed > 0)
		return false;
	/* --batch-size reached: what was started has ended; jobs waiting for
	 * a retry are the next run's */
	if (farm_budget_spent())
		return true;
	if (farm.st == NULL)
		return false;
	farm_fetch_filter(&fc, false);
	if (fc.stage_mask == 0)
		return true;
	wall = time_wall_ms();  /* one clock for both questions */
	if (store_runnable_fetch(farm.st, &fc, wall, NULL, 0, &one, 1, &n) < 0 ||
	    n > 0)
		return false;
	if (store_next_due(farm.st, &fc, wall, &due) < 0 || due > 0)
		return false;
	/* PostgreSQL: what other hosts had started when this master ran out
	 * of work may come back (a transient failure, or their death at the
	 * host timeout); asked once a second, the loop asks ten times */
	if (farm.wait_since == 0)
		farm.wait_since = wall;
	if (now < farm.elsewhere_next)
		return farm.elsewhere == 0;
	if (store_host_elsewhere(farm.st, &fc, farm.wait_since, &elsewhere) < 0)
		return false;
	farm.elsewhere = elsewhere;
	farm.elsewhere_next = now + FARM_ELSEWHERE_MS;
	if (elsewhere > 0) {
		if (!farm.waited_hosts)
			log_info("waiting_for_hosts", "jobs=%lld",
			    (long long)elsewhere);
		farm.waited_hosts = true;
		return false;
	}
	return true;
}

/* --batch-size: at most N jobs started this run (under --watch, per
 * check interval).  Each start counts, a retry within the run too. */
bool
farm_budget_spent(void)
{
	return farm.cfg->batch_size > 0 &&
	    farm.budget_used >= farm.cfg->batch_size;
}

bool
farm_budget_take(void)
{
	if (farm_budget_spent())
		return false;
	farm.budget_used++;
	return true;
}

/* --batch-size under --watch: a new budget every check interval. */
void
farm_budget_tick(int64_t now)
{
	if (!farm.cfg->watch || farm.cfg->batch_size <= 0 ||
	    now < farm.budget_reset_at)
		return;
	if (farm.budget_used > 0)
		farm.dirty = true;
	farm.budget_used = 0;
	farm.budget_reset_at = now + (int64_t)farm.cfg->check_interval *
	    MS_PER_S;
}
