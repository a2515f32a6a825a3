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

struct worker_args {
	const struct config *cfg;
	int64_t cfg_gen;    /* the config generation cfg is (JOB frames') */
	int   chan_fd;      /* socketpair end */
	pid_t master_pid;
	int   slot;
};

/* Run the worker: open its own store and output tree, say READY, then run
 * the jobs the master sends until it closes the channel or says SHUTDOWN.
 * Never returns: exit 0 when told to go, WORKER_EXIT_CONFIG when the
 * store or the output tree cannot be opened, 1 on a broken channel. */
void worker_main(const struct worker_args *wa) __attribute__((noreturn));

/* Send a frame to the master; exits the worker when the channel is gone
 * (nobody is left to report to). */
void worker_msg_send(const struct ipc_msg *m);

/* A job the master sent: its id, the provider (registry index) the
 * master chose for it, and the lease of the master's claim (0: the
 * worker claims it). */
struct worker_pending {
	int64_t job_id;
	int     prov;
	int64_t lease;
};

/* worker_batch.c: short jobs published several to a transaction. */
/* Jobs a worker may hold not yet started: the master's IPC_AHEAD_MAX sent
 * ahead, plus the one it already counts as running after a DONE, which the
 * worker may not have taken from this queue yet. */
#define WORKER_PENDING_MAX (IPC_AHEAD_MAX + 1)
struct provider_result;
struct job;
struct tree;
/* Write a finished job's outputs (run with provider prov) as temp files
 * in their verified folders and hold the job for the next flush.  0, or
 * -1 with err and errno (the temps written so far are removed, the job is
 * still the caller's). */
int  worker_batch_add(const struct config *cfg, struct tree *t, struct job *j,
		      int prov, const struct provider_result *res, char *err,
		      size_t errlen);
/* Whether the held jobs should be published now: the batch is full or
 * old, the farm is stopping, or the next pending job was not claimed by
 * the last flush (it would need a transaction of its own anyway). */
bool worker_batch_due(const struct worker_pending *pending, int npending,
		      bool shutdown);
/* After a store call failed: true when the failure was the database's
 * outage (store_err_transient) and it has lasted under the bound, having
 * slept the next backoff step (the first failure logs store_outage) -
 * call again; false when the failure stands.  *tries and *since start
 * at 0 for each call retried. */
bool worker_store_retry(store_t *st, int *tries, int64_t *since);

/* Publish every held job and claim the pending ones in one transaction,
 * then send one DONE per held job in order.  When the transaction fails
 * the held jobs are recorded as transient failures one by one (or
 * reported skipped when even that fails).  Never fails itself. */
void worker_batch_flush(store_t *st, const struct config *cfg,
			const struct worker_pending *pending, int npending,
			pid_t master);
/* A pending job claimed by the last flush: its claim's result (0 ours,
 * 1 not claimable) and the job, or -2 when it was not claimed there. */
int  worker_batch_take(int64_t id, struct job *j);
/* True when the last flush claimed job id for this worker. */
bool worker_batch_claimed(int64_t id);
/* The oldest held job (the one the master counts as running), 0 none. */
int64_t worker_batch_oldest(void);

#endif
