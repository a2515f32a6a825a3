/*
 * worker_batch.c - publishing short jobs several to a transaction.  When
 * the master has sent a worker jobs ahead (it does so only for jobs that
 * take a few milliseconds), each finished job's outputs wait as temp files
 * while the next already-claimed job runs; then one write transaction
 * publishes them all (each fenced by its own lease, as store_job_complete
 * does) and claims every job waiting behind them.  A farm of fast jobs so
 * pays one SQLite commit per few jobs instead of two per job, which is
 * what several processes sharing one database on few cores can afford.
 *
 * DONE frames must reach the master in the order it sent the jobs, so any
 * other reply (a failure, a skip) flushes the batch first.
 */
#include "worker.h"
#include "worker_provider.h"
#include "ipc_frame.h"
#include "common_tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX     16      /* finished jobs held back at most */
#define BATCH_AGE_MS  20      /* and never longer than this */

struct batch_job {
	struct job j;
	int        prov;      /* the provider the master chose */
	struct tree_temp out[PROVIDER_OUT_MAX];
	int        n;
};

struct batch_pre {            /* claimed in a flush, not started yet */
	int64_t    id;
	int        rc;        /* the claim's result: 0 ours, 1 not claimable */
	struct job j;
};

static struct {
	struct batch_job done[BATCH_MAX];
	int        ndone;
	int64_t    first_ms;
	struct batch_pre pre[WORKER_PENDING_MAX];
	int        npre;
} b;

static int
batch_pre_find(int64_t id)
{
	for (int i = 0; i < b.npre; i++)
		if (b.pre[i].id == id)
			return i;
	return -1;
}

bool
worker_batch_claimed(int64_t id)
{
	int i = batch_pre_find(id);
	return i >= 0 && b.pre[i].rc == 0;
}

int
worker_batch_take(int64_t id, struct job *j)
{
	int i = batch_pre_find(id), rc;

	if (i < 0)
		return -2;
	rc = b.pre[i].rc;
	*j = b.pre[i].j;
	b.pre[i] = b.pre[--b.npre];
	return rc;
}

int64_t
worker_batch_oldest(void)
{
	return b.ndone > 0 ? b.done[0].j.job_id : 0;
}

static void
batch_job_free(struct batch_job *bj, bool unlink_tmp)
{
	for (int i = 0; i < bj->n; i++) {
		if (unlink_tmp)
			tree_temp_discard(&bj->out[i]);
		else
			tree_temp_free(&bj->out[i]);
	}
	job_clear(&bj->j);
	memset(bj, 0, sizeof(*bj));
}

int
worker_batch_add(const struct config *cfg, struct tree *t, struct job *j,
		 int prov, const struct provider_result *res, char *err,
		 size_t errlen)
{
	struct batch_job *bj = &b.done[b.ndone];

	memset(bj, 0, sizeof(*bj));
	for (; bj->n < res->nout; bj->n++) {
		int k = bj->n, e;
		char *rel = tree_output_rel(j->stage, j->lang, j->rel_path,
		    res->out[k].suffix);
		int rc = tree_temp_write(t, rel, res->out[k].data,
		    res->out[k].len, cfg->durable, &bj->out[k], err, errlen);
		free(rel);
		if (rc < 0) {
			e = errno;
			batch_job_free(bj, true);
			errno = e;
			return -1;
		}
	}
	bj->j = *j;                 /* the batch owns the job now */
	bj->prov = prov;
	memset(j, 0, sizeof(*j));
	if (b.ndone++ == 0)
		b.first_ms = time_mono_ms();
	return 0;
}

bool
worker_batch_due(const struct worker_pending *pending, int npending,
		 bool shutdown)
{
	if (b.ndone == 0)
		return false;
	/* hold back only while the next job can start without a transaction
	 * of its own: it was claimed with the last flush */
	return b.ndone >= BATCH_MAX || shutdown || npending == 0 ||
	    !worker_batch_claimed(pending[0].job_id) ||
	    time_mono_ms() - b.first_ms >= BATCH_AGE_MS;
}

/* One transaction: complete every held job, claim every pending job not
 * yet claimed.  Then one DONE per held job, in order.  When the
 * transaction fails, the held jobs are recorded as transient failures one
 * by one (their outputs are whole on disk but not marked: a rerun writes
 * them again). */
void
worker_batch_flush(store_t *st, const struct config *cfg,
		   const struct worker_pending *pending, int npending,
		   pid_t master)
{
	int rcs[BATCH_MAX];
	bool ok;

	if (b.ndone == 0)
		return;
	ok = store_tx_begin(st) == 0;
	for (int i = 0; ok && i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		rcs[i] = store_job_complete(st, &bj->j, bj->out, bj->n,
		    cfg->durable);
		if (rcs[i] < 0)
			ok = false;
		/* complete unlinks or renames the temps: nothing left here */
		for (int k = 0; k < bj->n; k++)
			tree_temp_free(&bj->out[k]);
	}
	for (int i = 0; ok && i < npending && b.npre < WORKER_PENDING_MAX; i++) {
		struct batch_pre *p;
		if (batch_pre_find(pending[i].job_id) >= 0)
			continue;
		p = &b.pre[b.npre];
		memset(p, 0, sizeof(*p));
		p->rc = store_job_claim(st, pending[i].job_id, getpid(), master,
		    &p->j);
		if (p->rc < 0)
			break;          /* it will be claimed on its own later */
		p->id = pending[i].job_id;
		b.npre++;
	}
	if (ok && store_tx_commit(st) < 0)
		ok = false;
	if (!ok) {
		store_tx_rollback(st);
		while (b.npre > 0)      /* rolled back: not claimed after all */
			job_clear(&b.pre[--b.npre].j);
	}
	for (int i = 0; i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		struct ipc_msg m = { .type = IPC_MSG_DONE };
		struct ipc_done *done = &m.u.done;
		enum job_status final = JOB_ST_COMPLETED;

		done->job_id = bj->j.job_id;
		done->provider = bj->prov;
		if (ok && rcs[i] == 0) {
			done->outcome = OUT_COMPLETED;
			done->status = JOB_ST_COMPLETED;
		} else if (ok && rcs[i] == 1) {
			log_warn("job_lease_lost", "job=%lld file=%s",
			    (long long)done->job_id, log_quote(bj->j.rel_path));
			done->outcome = IPC_OUT_SKIPPED;
		} else {
			struct job_result jr = {
				.outcome = OUT_TRANSIENT, .exit_code = -1,
				.retry_at_ms = provider_retry_at(cfg,
				    bj->j.attempts, 0),
				.msg = store_errmsg(st),
			};
			snprintf(done->text, sizeof(done->text), "%s",
			    store_errmsg(st));
			if (store_job_fail(st, &bj->j, &jr, cfg->max_attempts, &final) == 0) {
				done->outcome = OUT_TRANSIENT;
				done->status = final;
			} else {
				done->outcome = IPC_OUT_SKIPPED;  /* master returns it */
			}
		}
		worker_msg_send(&m);
		batch_job_free(bj, true);   /* temps of jobs never attempted */
	}
	b.ndone = 0;
}
