/*
 * common_store_limits.h - a provider's `rate` and `max_concurrency` held
 * for every master of a PostgreSQL farm together (common_store_limits.c).
 * The master keeps serving its workers from a local bucket; these calls
 * are how that bucket is filled from, and its pauses shared through, one
 * row per provider.  On SQLite (one master) each call is a no-op that
 * leaves the figures as they were.
 */
#ifndef MPFARM_COMMON_STORE_LIMITS_H
#define MPFARM_COMMON_STORE_LIMITS_H
#include "common_store.h"

/* One tick's exchange with the provider's row. */
struct store_limit_sync {
	/* in */
	double  rate;           /* requests/s for the whole farm, 0 = none */
	int     max_conc;       /* jobs at once for the whole farm, 0 = none */
	int     want_tokens;    /* requests this host's workers wait to make */
	int     want_slots;     /* jobs this host could run at once now */
	int     inflight;       /* jobs this host runs now */
	/* out */
	int     tokens;         /* requests granted to this host */
	int     held;           /* jobs this host may run at once */
	int64_t paused_ms;      /* the farm-wide pause still to run, 0 */
};

/* Create the limit tables when missing (PostgreSQL; after
 * store_host_register, whose host row the slots hang from).  0 or -1. */
int  store_limits_init(store_t *st);

/* In one short transaction holding the provider's row lock: refill the
 * farm's bucket by the time passed (the database's clock, so hosts'
 * clocks need not agree), take up to want_tokens whole tokens, and set
 * this host's concurrency share: its fair part of max_conc (what other
 * hosts want less than their part is spare), never more than the
 * others leave free counting what they still run.  A dead host's share
 * goes with its host row.  0, or -1 with store_errmsg (the out fields
 * are then 0: nothing granted). */
int  store_limits_sync(store_t *st, const char *provider,
		       struct store_limit_sync *ls);

/* A 429 seen here pauses the provider for every host for ms (the later
 * pause wins).  0 or -1. */
int  store_limits_pause(store_t *st, const char *provider, int64_t ms);

#endif
