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
 *
 * A flush the database's going away interrupts (PostgreSQL restarting) is
 * tried again with backoff rather than failing finished work: first each
 * job whose completion may have committed is read back (store_job_settle)
 * - completed under its lease: done, outputs stay; still in-progress
 * under it: completed again (its outputs, already published or still
 * temps, are not written twice); lost: whatever it published is removed.
 */
#include "worker.h"
#include "worker_provider.h"
#include "ipc_frame.h"
#include "common_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX     16      /* finished jobs held back at most */
#define BATCH_AGE_MS  20      /* and never longer than this */
/* A database outage longer than this fails the held jobs after all (the
 * master returns them); the waits between tries grow to the cap. */
#define BATCH_OUTAGE_MS   30000
#define BATCH_WAIT_MS     100
#define BATCH_WAIT_CAP_MS 2000

enum batch_state {
	BJ_TODO = 0,          /* to complete in the next transaction */
	BJ_COMMITTING,        /* completed in the open transaction */
	BJ_UNSURE,            /* that transaction's outcome is unknown */
	BJ_DONE,              /* completed, committed */
	BJ_LOST,              /* the lease was lost: nothing published */
	BJ_FAILED,            /* the store refused for good: temps gone */
};

struct batch_job {
	struct job j;
	int        prov;      /* the provider the master chose */
	struct tree_temp out[PROVIDER_OUT_MAX];
	int        n;
	enum batch_state state;
	bool       published; /* out[] renamed onto their final names */
};

struct batch_pre {            /* claimed in a flush, not started yet */
	int64_t    id;
	int        rc;        /* the claim's result: 0 ours, 1 not claimable */
	bool       unsure;    /* claimed in a transaction of unknown outcome */
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

/* Outputs a completion left as they were on a transient failure: all
 * still temps, or all published. */
static bool
batch_job_published(const struct batch_job *bj)
{
	return bj->n > 0 && faccessat(bj->out[0].dirfd, bj->out[0].tmp, F_OK,
	    AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
}

static void
batch_job_unpublish(struct batch_job *bj)
{
	for (int k = 0; bj->published && k < bj->n; k++)
		tree_temp_unpublish(&bj->out[k]);
	bj->published = false;
}

/* One transaction: complete every held job still to do, claim every
 * pending job not yet claimed.  0, or -1 with the transaction rolled back
 * (store_err_transient says whether a retry may cure it). */
static int
batch_try(store_t *st, const struct config *cfg,
	  const struct worker_pending *pending, int npending, pid_t master)
{
	bool transient;
	int npre0 = b.npre;     /* claims before this try: already settled */

	if (store_tx_begin(st) < 0)
		return -1;
	for (int i = 0; i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		int rc;
		if (bj->state != BJ_TODO)
			continue;
		/* published by a try that did not commit: only mark it */
		rc = store_job_complete(st, &bj->j, bj->published ? NULL :
		    bj->out, bj->published ? 0 : bj->n, cfg->durable);
		if (rc == 1) {
			bj->state = BJ_LOST;
			batch_job_unpublish(bj);
		} else if (rc < 0 && store_err_transient(st)) {
			bj->published = bj->published || batch_job_published(bj);
			goto fail;
		} else if (rc < 0) {
			bj->state = BJ_FAILED;  /* its temps were removed */
			goto fail;
		} else {
			bj->published = bj->published || bj->n > 0;
			bj->state = BJ_COMMITTING;
		}
	}
	for (int i = 0; i < npending && b.npre < WORKER_PENDING_MAX; i++) {
		struct batch_pre *p;
		if (batch_pre_find(pending[i].job_id) >= 0)
			continue;
		p = &b.pre[b.npre];
		memset(p, 0, sizeof(*p));
		p->rc = store_job_claim(st, pending[i].job_id, pending[i].lease,
		    getpid(), master, &p->j);
		if (p->rc < 0)
			break;          /* it will be claimed on its own later */
		p->id = pending[i].job_id;
		b.npre++;
	}
	if (store_tx_commit(st) < 0)
		goto fail;
	for (int i = 0; i < b.ndone; i++)
		if (b.done[i].state == BJ_COMMITTING)
			b.done[i].state = BJ_DONE;
	return 0;
fail:
	transient = store_err_transient(st);
	store_tx_rollback(st);
	for (int i = npre0; i < b.npre; ) {
		struct batch_pre *p = &b.pre[i];
		/* rolled back: not claimed after all; unless the COMMIT
		 * reached the server: a claim of ours is read back (claims of
		 * earlier flushes stand) */
		if (transient && p->rc == 0) {
			p->unsure = true;
			i++;
			continue;
		}
		job_clear(&p->j);
		b.pre[i] = b.pre[--b.npre];
	}
	for (int i = 0; i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		/* the COMMIT may have reached the server: read it back; any
		 * other failure rolled back for sure */
		if (bj->state == BJ_COMMITTING || (transient &&
		    bj->state == BJ_TODO && bj->published))
			bj->state = transient ? BJ_UNSURE : BJ_TODO;
	}
	return -1;
}

/* Read back every job whose last transaction has an unknown outcome:
 * held jobs and claims.  0, or -1 when the store did not answer. */
static int
batch_settle(store_t *st)
{
	for (int i = 0; i < b.npre; ) {
		struct batch_pre *p = &b.pre[i];
		int rc;
		if (!p->unsure) {
			i++;
			continue;
		}
		rc = store_job_settle(st, &p->j);
		if (rc < 0)
			return -1;
		log_info("job_settled", "job=%lld what=claim result=%s",
		    (long long)p->id, rc == 1 ? "claimed" : "not-claimed");
		if (rc == 1) {          /* in-progress under our lease */
			p->unsure = false;
			i++;
			continue;
		}
		job_clear(&p->j);       /* never claimed: claim it again */
		b.pre[i] = b.pre[--b.npre];
	}
	for (int i = 0; i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		int rc;
		if (bj->state != BJ_UNSURE)
			continue;
		rc = store_job_settle(st, &bj->j);
		if (rc < 0)
			return -1;
		log_info("job_settled", "job=%lld what=completion result=%s",
		    (long long)bj->j.job_id, rc == 0 ? "committed" :
		    rc == 1 ? "retry" : "lost");
		if (rc == 0) {
			bj->state = BJ_DONE;
		} else if (rc == 1) {
			bj->state = BJ_TODO;
		} else {
			bj->state = BJ_LOST;
			batch_job_unpublish(bj);
		}
	}
	return 0;
}

/* Complete every held job and claim every pending job, in one
 * transaction; through a database outage, again with backoff until it
 * commits or BATCH_OUTAGE_MS pass.  Then one DONE per held job, in order.
 * A job the store refused for good is recorded as a transient failure
 * (its outputs are removed: a rerun writes them again). */
void
worker_batch_flush(store_t *st, const struct config *cfg,
		   const struct worker_pending *pending, int npending,
		   pid_t master)
{
	int64_t deadline;
	bool ok = false;
	int tries = 0;

	if (b.ndone == 0)
		return;
	deadline = time_mono_ms() + BATCH_OUTAGE_MS;
	for (;; tries++) {
		if (batch_settle(st) == 0 &&
		    batch_try(st, cfg, pending, npending, master) == 0) {
			ok = true;
			break;
		}
		if (!store_err_transient(st) || time_mono_ms() >= deadline)
			break;
		if (tries == 0)
			log_warn("store_outage", "jobs=%d error=%s", b.ndone,
			    log_quote(store_errmsg(st)));
		usleep((useconds_t)backoff_jitter(backoff_delay(BATCH_WAIT_MS,
		    BATCH_WAIT_CAP_MS, tries)) * 1000);
	}
	if (ok && tries > 0)
		log_info("store_reconnected", "tries=%d", tries);
	for (int i = 0; !ok && i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		/* not committed for sure: nothing of it stays published; an
		 * unsettled one keeps its outputs (if it did commit they are
		 * right, if not its rerun writes the same bytes) */
		if (bj->state == BJ_TODO)
			batch_job_unpublish(bj);
	}
	for (int i = 0; i < b.ndone; i++) {
		struct batch_job *bj = &b.done[i];
		struct ipc_msg m = { .type = IPC_MSG_DONE };
		struct ipc_done *done = &m.u.done;
		enum job_status final = JOB_ST_COMPLETED;

		done->job_id = bj->j.job_id;
		done->provider = bj->prov;
		if (bj->state == BJ_DONE) {
			done->outcome = OUT_COMPLETED;
			done->status = JOB_ST_COMPLETED;
		} else if (bj->state == BJ_LOST) {
			log_warn("job_lease_lost", "job=%lld file=%s",
			    (long long)done->job_id, log_quote(bj->j.rel_path));
			done->outcome = IPC_OUT_SKIPPED;
		} else if (bj->state == BJ_UNSURE) {
			log_warn("job_outcome_unknown", "job=%lld file=%s",
			    (long long)done->job_id, log_quote(bj->j.rel_path));
			done->outcome = IPC_OUT_SKIPPED;  /* master returns it */
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
