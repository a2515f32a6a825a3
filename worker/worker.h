/*
 * worker.h - entry point of a worker process, called in the child right
 * after fork.  The worker owns its own SQLite connection (opened here, never
 * inherited), takes job IDs from the master's channel and records outcomes
 * itself, fenced by the job's lease.
 */
#ifndef MPFARM_WORKER_H
#define MPFARM_WORKER_H

#include "common.h"
#include "common_config.h"

/* DONE outcome when the job was not claimable (taken, finished, not due). */
#define WORKER_OUT_SKIPPED (-1)

struct worker_args {
	const struct config *cfg;
	int   chan_fd;      /* socketpair end */
	pid_t master_pid;
	int   slot;
};

/* Never returns. */
void worker_main(const struct worker_args *wa) __attribute__((noreturn));

/* Retry time for a failed attempt: Retry-After when the provider gave
 * one (capped), else exponential backoff with full jitter. Wall ms. */
int64_t worker_retry_at(const struct config *cfg, int attempts,
			int64_t retry_after_ms);

#endif
