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
#include "common_store.h"
#include "ipc_frame.h"

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

/* Send a frame to the master; exits when the channel is gone. */
void worker_msg_send(const struct ipc_msg *m);

/* worker_batch.c: short jobs published several to a transaction. */
/* Jobs a worker may hold not yet started: the master's IPC_AHEAD_MAX sent
 * ahead, plus the one it already counts as running after a DONE, which the
 * worker may not have taken from this queue yet. */
#define WORKER_PENDING_MAX (IPC_AHEAD_MAX + 1)
struct provider_result;
struct job;
struct tree;
/* Write a finished job's outputs as temp files in their verified folders
 * and hold the job for the next flush.  0, or -1 with err and errno (the
 * temps written so far are removed, the job is still the caller's). */
int  worker_batch_add(const struct config *cfg, struct tree *t, struct job *j,
		      const struct provider_result *res, char *err,
		      size_t errlen);
bool worker_batch_due(const int64_t *pending, int npending, bool shutdown);
void worker_batch_flush(store_t *st, const struct config *cfg,
			const int64_t *pending, int npending, pid_t master);
/* A pending job claimed by the last flush: its claim's result (0 ours,
 * 1 not claimable) and the job, or -2 when it was not claimed there. */
int  worker_batch_take(int64_t id, struct job *j);
bool worker_batch_claimed(int64_t id);
int64_t worker_batch_oldest(void);     /* held job the master waits on */

#endif
