/*
 * master_provider.c - farm-wide limits for the paid APIs.  Only the master
 * sees every worker, so it holds, per provider: the jobs in flight against
 * `max_concurrency` (lowered multiplicatively when ElevenLabs says too many
 * concurrent requests, raised additively as requests succeed), a token
 * bucket for `rate` requests/s that workers draw from before each request,
 * and a pause after a 429 that holds every worker until Retry-After (or a
 * backoff) passes.  A rejected key stops the provider for this run: its
 * remaining jobs fail at once, with one log line, instead of one by one.
 * Which providers are metered is the `limited` of their descriptor
 * (common_provider.h); provs[] is indexed like the provider registry.
 * On PostgreSQL several masters share a provider: the bucket is then
 * filled each tick from the farm's row, the concurrency limit is this
 * host's share of it, and pauses travel through the row too
 * (common_store_limits.c).
 */
#include "master_farm.h"
#include "common_provider.h"
#include "common_store_audit.h"
#include "common_store_limits.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PROV_BACKOFF_MIN_MS 1000
#define PROV_BACKOFF_MAX_MS 60000
/* A host that started none of a provider's jobs for this long asks for
 * one concurrency slot only, leaving the rest to the busy hosts. */
#define PROV_SHARE_IDLE_MS  5000

struct prov {
	const char *name;
	bool    limited;        /* the descriptor's: else never metered */
	int     max_conc;       /* 0 = unlimited */
	double  limit;          /* AIMD-adjusted concurrency */
	int     inflight;
	double  rate;           /* requests/s, 0 = unlimited */
	double  tokens;
	int64_t tokens_at;      /* mono ms of the last refill */
	int64_t paused_until;   /* mono ms */
	int64_t backoff_ms;
	bool    disabled;       /* its jobs fail: a key or quota was refused */
	char    why[IPC_TEXT_MAX];
	bool    was_blocked;
	bool    shared;         /* limits held with other hosts (PostgreSQL) */
	int     held;           /* shared: this host's concurrency share */
	int64_t active_at;      /* shared: mono ms of the last job start */
	bool    share_failed;   /* shared: the last sync failed (logged) */
	struct prov_waiter { int idx; unsigned gen; } *waiters;  /* FIFO */
	int     nwait, capwait;
	int64_t granted, rate_limited;
	ev_timer timer;
};

static struct prov provs[IPC_PROVIDER_MAX];
#define NPROVS provider_count()

int
farm_prov_of(int stage, const char *lang)
{
	return provider_index(config_provider(farm.cfg, stage, lang));
}

bool
farm_prov_limited(int i)
{
	return i >= 0 && i < NPROVS && provs[i].limited;
}

static void prov_pump(struct prov *p);
static void prov_share_init(void);
static void prov_share_tick(struct prov *p);
static void prov_share_pause(struct prov *p, int64_t ms);

static void
prov_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	prov_pump(w->data);
	farm_dispatch();
}

/* The limits [NAME] sets for p: concurrency (restarting the AIMD limit
 * there) and request rate. */
static void
prov_limits_read(struct prov *p)
{
	p->max_conc = !p->limited ? 0 : (int)config_get_long(farm.cfg,
	    p->name, "max_concurrency", 0);
	p->limit = p->max_conc;
	p->rate = !p->limited ? 0 : config_get_double(farm.cfg, p->name,
	    "rate", 0);
}

void
farm_prov_init(void)
{
	for (int i = 0; i < NPROVS; i++) {
		struct prov *p = &provs[i];
		p->name = provider_at(i)->name;
		p->limited = provider_at(i)->limited;
		prov_limits_read(p);
		p->tokens = 1;
		p->tokens_at = time_mono_ms();
		p->paused_until = 0;
		p->backoff_ms = PROV_BACKOFF_MIN_MS;
		p->disabled = false;
		p->inflight = p->nwait = 0;
		p->was_blocked = false;
		ev_timer_init(&p->timer, prov_timer_cb, 0, 0);
		p->timer.data = p;
	}
	prov_share_init();
}

void
farm_prov_reload(void)
{
	for (int i = 0; i < NPROVS; i++) {
		if (!provs[i].limited)
			continue;
		prov_limits_read(&provs[i]);
		prov_pump(&provs[i]);   /* a higher rate may serve waiters now */
	}
}

bool
farm_prov_may_start(int i)
{
	struct prov *p = &provs[i];

	if (!farm_prov_limited(i))
		return true;
	if (p->disabled || time_mono_ms() < p->paused_until)
		return false;
	if (p->shared && p->max_conc > 0 && p->inflight >= p->held)
		return false;
	return p->max_conc == 0 || p->inflight < (int)floor(p->limit);
}

int
farm_prov_room(int i)
{
	struct prov *p = &provs[i];
	int room = INT_MAX;

	if (!farm_prov_may_start(i))
		return 0;
	if (!farm_prov_limited(i))
		return INT_MAX;
	if (p->shared && p->max_conc > 0)
		room = p->held - p->inflight;
	if (p->max_conc > 0 && (int)floor(p->limit) - p->inflight < room)
		room = (int)floor(p->limit) - p->inflight;
	return room > 0 ? room : 0;
}

void
farm_prov_job_start(int i)
{
	if (!farm_prov_limited(i))
		return;
	provs[i].inflight++;
	provs[i].active_at = time_mono_ms();
}

void
farm_prov_job_end(int i)
{
	if (farm_prov_limited(i) && provs[i].inflight > 0)
		provs[i].inflight--;
}

bool
farm_prov_blocked(const char *name)
{
	int i = provider_index(name);

	return farm_prov_limited(i) && !farm_prov_may_start(i);
}

/* Still the worker that asked, and still asking (a slot respawned since,
 * or one that died waiting, must not get the token). */
static bool
prov_waiter_valid(const struct prov *p, const struct prov_waiter *wt)
{
	const struct slot *s;

	if (wt->idx >= farm.nslots)
		return false;
	s = farm.slots[wt->idx];
	return s->gen == wt->gen && farm_slot_holds_job(s) && s->waiting_token &&
	    s->prov_wait == p - provs;
}

/* Grant what the bucket and the pause allow; re-arm for the rest. */
static void
prov_pump(struct prov *p)
{
	int64_t now = time_mono_ms();
	double wait_s = 0;

	if (p->rate > 0 && !p->shared) {
		p->tokens += (double)(now - p->tokens_at) * p->rate / 1000.0;
		if (p->tokens > 1)      /* burst of one: pace, don't bunch */
			p->tokens = 1;
	}
	p->tokens_at = now;
	/* a disabled provider answers at once: the request fails with the
	 * provider's own error, so no worker waits for ever */
	while (p->nwait > 0 && (p->disabled || (now >= p->paused_until &&
	    (p->rate <= 0 || p->tokens >= 1)))) {
		struct prov_waiter wt = p->waiters[0];
		memmove(p->waiters, p->waiters + 1, sizeof(wt) * (size_t)--p->nwait);
		if (!prov_waiter_valid(p, &wt))
			continue;
		struct slot *s = farm.slots[wt.idx];
		struct ipc_msg m = { .type = IPC_MSG_TOKEN_GRANT };
		m.u.token_grant.provider = p - provs;
		s->waiting_token = false;
		s->last_beat = now;
		/* waiting for the provider is not the job hanging */
		s->job_started += now - s->token_since;
		if (ipc_frame_send(s->fd, &m) < 0)
			continue;
		p->granted++;
		if (p->rate > 0 && !p->disabled)
			p->tokens -= 1;
	}
	ev_timer_stop(farm.loop, &p->timer);
	if (p->nwait == 0 || p->disabled)
		return;
	if (now < p->paused_until)
		wait_s = (double)(p->paused_until - now) / 1000.0;
	else if (p->shared && p->rate > 0)
		return;         /* the next tick brings the farm's tokens */
	else if (p->rate > 0)
		wait_s = (1 - p->tokens) / p->rate;
	ev_timer_set(&p->timer, wait_s > 0.001 ? wait_s : 0.001, 0);
	ev_timer_start(farm.loop, &p->timer);
}

void
farm_prov_token_req(struct slot *s, int i)
{
	struct ipc_msg m = { .type = IPC_MSG_TOKEN_GRANT };

	if (!farm_prov_limited(i)) {    /* not metered: go ahead */
		m.u.token_grant.provider = i;
		(void)ipc_frame_send(s->fd, &m);
		return;
	}
	struct prov *p = &provs[i];
	if (p->nwait == p->capwait) {
		p->capwait = p->capwait ? 2 * p->capwait : 16;
		p->waiters = xrealloc(p->waiters, sizeof(*p->waiters) *
		    (size_t)p->capwait);
	}
	s->waiting_token = true;
	s->prov_wait = i;
	s->token_since = time_mono_ms();
	p->waiters[p->nwait++] = (struct prov_waiter){ s->idx, s->gen };
	prov_pump(p);
}

/* Every job this provider would still run fails now, with the reason:
 * once when the key or quota is refused, and again at each refill for
 * jobs that came back since (a request in flight that timed out).  The
 * provider counts as disabled only once that is committed.  Returns how
 * many jobs failed, or -1. */
static int64_t
prov_fail_pending(struct prov *p, const char *why)
{
	int64_t n[STAGE_COUNT] = { 0, 0 };
	const char *lang;
	int stage;

	if (farm_store_reopen() < 0 || store_tx_begin(farm.st) < 0)
		return -1;
	for (int k = 0; config_stage_lang(farm.cfg, k, &stage, &lang); k++) {
		int64_t one;
		if (farm_prov_of(stage, lang) != p - provs ||
		    !config_wants(farm.cfg, stage, lang))
			continue;
		if (store_audit_fail_pending(farm.st, stage, lang, why, &one) < 0)
			goto fail;
		n[stage] += one;
	}
	if (store_tx_commit(farm.st) < 0)
		goto fail;
	/* counted once committed: a rolled-back attempt failed nothing */
	farm_outcome_count(STAGE_TRANSCRIBE, FARM_COUNT_FAILED, n[0]);
	farm_outcome_count(STAGE_TRANSLATE, FARM_COUNT_FAILED, n[1]);
	return n[0] + n[1];
fail:
	log_error("provider_fail_jobs_failed", "provider=%s error=%s", p->name,
	    log_quote(store_errmsg(farm.st)));
	store_tx_rollback(farm.st);
	return -1;
}

static void
prov_disable(struct prov *p, const char *why)
{
	int64_t n;

	snprintf(p->why, sizeof(p->why), "%s", why);
	n = prov_fail_pending(p, why);
	if (n < 0)
		return;         /* not disabled yet: the next event tries again */
	p->disabled = true;
	farm_queue_clear();     /* the queue may hold its jobs; refetch */
	farm.dirty = true;
	log_error("provider_disabled", "provider=%s jobs_failed=%lld reason=%s "
	    "note=fix-the-key-or-quota-then-mpfarm-retry", p->name, (long long)n,
	    log_quote(why));
	prov_pump(p);           /* answer the waiting workers */
}

void
farm_prov_fail_disabled(void)
{
	for (int i = 0; i < NPROVS; i++)
		if (farm_prov_limited(i) && provs[i].disabled)
			(void)prov_fail_pending(&provs[i], provs[i].why);
}

void
farm_prov_event(const struct ipc_event *m)
{
	int i = (int)m->provider;
	int64_t now = time_mono_ms();

	if (!farm_prov_limited(i))
		return;
	struct prov *p = &provs[i];
	switch (m->kind) {
	case IPC_PROV_OK:
		p->backoff_ms = PROV_BACKOFF_MIN_MS;
		if (p->max_conc > 0 && p->limit < p->max_conc)
			p->limit += 1.0 / (p->limit > 1 ? p->limit : 1);
		if (p->limit > p->max_conc)
			p->limit = p->max_conc;
		break;
	case IPC_PROV_CONCURRENCY:
		if (p->max_conc > 0) {
			p->limit = p->limit / 2 < 1 ? 1 : p->limit / 2;
			log_warn("provider_concurrency", "provider=%s limit=%.1f",
			    p->name, p->limit);
		}
		/* FALLTHROUGH */
	case IPC_PROV_RATE_LIMITED: {
		int64_t ms = m->pause_ms > 0 ? m->pause_ms : p->backoff_ms;
		if (ms > farm.cfg->retry_max_delay_ms)
			ms = farm.cfg->retry_max_delay_ms;
		p->rate_limited++;
		if (now + ms > p->paused_until) {
			bool was = now < p->paused_until;
			p->paused_until = now + ms;
			if (!was)
				log_warn("provider_paused", "provider=%s for_ms=%lld "
				    "http=%d retry_after=%s", p->name, (long long)ms,
				    (int)m->http, m->pause_ms > 0 ? "yes" : "no");
		}
		prov_share_pause(p, ms);
		if (m->pause_ms <= 0)
			p->backoff_ms = backoff_delay(p->backoff_ms,
			    PROV_BACKOFF_MAX_MS, 1);
		break;
	}
	case IPC_PROV_QUOTA:
		if (!p->disabled && farm.cfg->watch) {
			int64_t ms = config_get_long(farm.cfg, p->name, "quota_pause",
			    3600) * 1000;
			p->paused_until = now + ms;
			log_error("provider_paused", "provider=%s for_ms=%lld "
			    "reason=%s", p->name, (long long)ms, log_quote(m->text));
		} else if (!p->disabled) {
			prov_disable(p, m->text);
		}
		break;
	}
	prov_pump(p);
}

void
farm_prov_tick(int64_t now)
{
	(void)now;
	for (int i = 0; i < NPROVS; i++) {
		if (!farm_prov_limited(i))
			continue;
		bool blocked = !farm_prov_may_start(i);
		/* a pause ended or a place freed up: its jobs may be fetched */
		if (provs[i].was_blocked && !blocked)
			farm.dirty = true;
		provs[i].was_blocked = blocked;
		prov_share_tick(&provs[i]);
		if (provs[i].nwait > 0)
			prov_pump(&provs[i]);
	}
}

void
farm_prov_slot_gone(struct slot *s)
{
	if (s->prov >= 0) {
		farm_prov_job_end(s->prov);
		s->prov = -1;
	}
	s->waiting_token = false;   /* prov_pump skips it */
}

void
farm_prov_stats(struct buf *b)
{
	int64_t now = time_mono_ms();

	for (int i = 0; i < NPROVS; i++) {
		struct prov *p = &provs[i];
		if (!p->limited || (p->granted == 0 && p->inflight == 0 &&
		    p->max_conc == 0 && p->rate == 0))
			continue;
		buf_printf(b, "%s%s_inflight=%d %s_limit=%.1f %s_requests=%lld "
		    "%s_rate_limited=%lld %s_paused_s=%lld%s%s%s", b->len ? " " : "",
		    p->name, p->inflight, p->name, p->limit, p->name,
		    (long long)p->granted, p->name, (long long)p->rate_limited,
		    p->name, (long long)(p->paused_until > now ?
		    (p->paused_until - now) / 1000 : 0),
		    p->disabled ? " " : "", p->disabled ? p->name : "",
		    p->disabled ? "_disabled=1" : "");
	}
}

json_t *
farm_prov_stats_json(void)
{
	int64_t now = time_mono_ms();
	json_t *o = json_object();

	for (int i = 0; i < NPROVS; i++) {
		struct prov *p = &provs[i];
		if (!p->limited || (p->granted == 0 && p->inflight == 0 &&
		    p->max_conc == 0 && p->rate == 0))
			continue;
		json_object_set_new(o, p->name, json_pack("{sisosIsIsIsb}",
		    "inflight", p->inflight,
		    "limit", p->max_conc > 0 ? json_integer(
		    (json_int_t)floor(p->limit)) : json_null(),
		    "requests", (json_int_t)p->granted,
		    "rate_limited", (json_int_t)p->rate_limited,
		    "paused_s", (json_int_t)(p->paused_until > now ?
		    (p->paused_until - now + 999) / 1000 : 0),
		    "disabled", p->disabled));
	}
	return o;
}

/* ---- limits shared with other hosts (PostgreSQL) ---------------------- */

/* A provider this run may call, with a limit to share. */
static bool
prov_share_wanted(const struct prov *p)
{
	if (!store_is_pg(farm.st) || (p->rate <= 0 && p->max_conc <= 0))
		return false;
	for (int stage = 0; stage < 2; stage++) {
		int nl = stage == STAGE_TRANSCRIBE ? 1 : farm.cfg->nlangs;
		for (int k = 0; k < nl; k++) {
			const char *pn = config_provider(farm.cfg, stage,
			    stage ? farm.cfg->langs[k] : "");
			if (pn != NULL && strcmp(pn, p->name) == 0)
				return true;
		}
	}
	return false;
}

static void
prov_share_init(void)
{
	bool any = false;

	for (int i = 0; i < NPROVS; i++) {
		struct prov *p = &provs[i];
		p->shared = farm.st != NULL && prov_share_wanted(p);
		p->held = 0;
		p->tokens = p->shared ? 0 : p->tokens;
		p->active_at = time_mono_ms();  /* a fresh host wants its part */
		any |= p->shared;
	}
	if (any && store_limits_init(farm.st) < 0)
		log_warn("provider_share_failed", "error=%s",
		    log_quote(store_errmsg(farm.st)));
}

/* One tick: take the tokens the waiting workers need and this host's
 * concurrency share from the farm's row; learn its pause. */
static void
prov_share_tick(struct prov *p)
{
	int64_t now = time_mono_ms();
	int workers = farm.target > 0 ? farm.target : 1;
	struct store_limit_sync ls = {
		.rate = p->rate, .max_conc = p->max_conc,
		.inflight = p->inflight,
	};

	if (!p->shared || farm.st == NULL)
		return;
	/* a disabled provider answers its workers itself: it takes nothing
	 * and hands its share back as its last requests end */
	ls.want_tokens = p->disabled ? 0 : p->nwait - (int)floor(p->tokens);
	if (ls.want_tokens < 0)
		ls.want_tokens = 0;
	if (farm.stopping || p->disabled)
		ls.want_slots = p->inflight;
	else if (p->inflight > 0 || now - p->active_at < PROV_SHARE_IDLE_MS)
		ls.want_slots = workers;
	else
		ls.want_slots = 1;
	if (ls.want_slots > p->max_conc)
		ls.want_slots = p->max_conc;
	if (store_limits_sync(farm.st, p->name, &ls) < 0) {
		/* nothing granted: the workers wait, the next tick tries again */
		if (!p->share_failed)
			log_warn("provider_share_failed", "provider=%s error=%s",
			    p->name, log_quote(store_errmsg(farm.st)));
		p->share_failed = true;
		return;
	}
	p->share_failed = false;
	p->tokens += ls.tokens;
	p->held = ls.held;
	if (ls.paused_ms > 0 && now + ls.paused_ms > p->paused_until) {
		if (now >= p->paused_until)
			log_warn("provider_paused", "provider=%s for_ms=%lld "
			    "by=another-host", p->name, (long long)ls.paused_ms);
		p->paused_until = now + ls.paused_ms;
	}
}

/* A 429 here pauses every host: written to the farm's row at once. */
static void
prov_share_pause(struct prov *p, int64_t ms)
{
	if (!p->shared || farm.st == NULL)
		return;
	if (store_limits_pause(farm.st, p->name, ms) < 0)
		log_warn("provider_share_failed", "provider=%s error=%s",
		    p->name, log_quote(store_errmsg(farm.st)));
}
