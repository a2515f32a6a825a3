/*
 * worker_main.c - the life of one worker process: detach from the master's
 * signal set-up, die with the master, open a private store, then take one
 * job at a time from the channel, run the provider the master chose for
 * it, publish the outputs whole and record the outcome.  The worker never
 * works out a job's provider from its own config: after a HUP the master
 * sends it no more jobs and replaces it, so the two never disagree.  The
 * worker is single-threaded and blocks; providers call worker_heartbeat()
 * so the master can tell a slow job from a stopped or wedged worker.
 */
#include "worker.h"
#include "worker_provider.h"
#include "worker_media.h"
#include "ipc_frame.h"
#include "common_tree.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKER_TRANSCRIPT_MAX (256L * 1024 * 1024)
/* A busy worker says it is alive this often (the master's
 * heartbeat_timeout is in seconds, 60 by default). */
#define WORKER_BEAT_MS        MS_PER_S
/* A store call the database's outage failed is tried again, waiting
 * from WORKER_RETRY_MS up to WORKER_RETRY_CAP_MS, for WORKER_OUTAGE_MS. */
#define WORKER_RETRY_MS       100
#define WORKER_RETRY_CAP_MS   2000
#define WORKER_OUTAGE_MS      30000
/* claims a lost COMMIT undid, made again at most this often in a row */
#define WORKER_CLAIM_TRIES    3

static struct {
	const struct config *cfg;
	int64_t cfg_gen;        /* the generation cfg is */
	int     fd;
	pid_t   master;
	int     slot;
	int64_t job_id;         /* job being run, 0 when idle */
	int     prov;           /* its provider (registry index) */
	int64_t last_beat;
	bool    shutdown;       /* SHUTDOWN seen: finish the job, skip the rest */
	struct worker_pending pending[WORKER_PENDING_MAX]; /* sent ahead, FIFO */
	int     npending;
	store_t *st;
	struct tree out;        /* the output tree, walked without links */
	struct ipc_reader rd;
} w;

static void
worker_signals_reset(void)
{
	sigset_t none;
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		(void)sigaction(s, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	(void)sigaction(SIGPIPE, &sa, NULL);   /* EPIPE instead */
	/* the interactive keys are for the master: it decides the stop */
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGQUIT, &sa, NULL);
	(void)sigaction(SIGHUP, &sa, NULL);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
}

void
worker_msg_send(const struct ipc_msg *m)
{
	if (ipc_frame_send(w.fd, m) < 0) {
		/* the master is gone or the channel broke: nothing to report to */
		log_warn("worker_channel_lost", "errno=%d", errno);
		_exit(0);
	}
}

/* A frame that is not an answer: a job sent ahead or SHUTDOWN. */
static int
worker_frame_take(const struct ipc_msg *m)
{
	if (m->type == IPC_MSG_SHUTDOWN) {
		w.shutdown = true;
		return 0;
	}
	if (m->type == IPC_MSG_JOB && w.npending < WORKER_PENDING_MAX) {
		const struct ipc_job *j = &m->u.job;
		if (j->gen != w.cfg_gen || provider_at((int)j->provider) == NULL) {
			/* decided under a config this worker does not have */
			log_error("worker_job_refused", "job=%lld gen=%lld "
			    "worker_gen=%lld provider=%lld", (long long)j->job_id,
			    (long long)j->gen, (long long)w.cfg_gen,
			    (long long)j->provider);
			return -1;
		}
		w.pending[w.npending++] = (struct worker_pending){ j->job_id,
		    (int)j->provider, j->lease };
		return 0;
	}
	if (m->type == IPC_MSG_TOKEN_GRANT)
		return 0;       /* late: for a request it gave up on */
	log_error("worker_bad_frame", "type=%d pending=%d", m->type, w.npending);
	return -1;
}

void
worker_heartbeat(void)
{
	int64_t now = time_mono_ms();
	struct ipc_msg m = { .type = IPC_MSG_HEARTBEAT };

	if (w.job_id == 0 || now - w.last_beat < WORKER_BEAT_MS)
		return;
	w.last_beat = now;
	/* the master's current job is the oldest it has no DONE for */
	m.u.heartbeat.job_id = worker_batch_oldest() ? worker_batch_oldest() :
	    w.job_id;
	worker_msg_send(&m);
}

int
worker_token_acquire(void)
{
	struct ipc_msg m = { .type = IPC_MSG_TOKEN_REQ };

	if (w.shutdown)
		return -1;
	m.u.token_req.provider = w.prov;
	worker_msg_send(&m);
	for (;;) {
		struct ipc_msg in;
		int rc = ipc_frame_recv(w.fd, &w.rd, &in, WORKER_BEAT_MS);
		if (rc < 0 && errno == ETIMEDOUT) {
			worker_heartbeat();
			continue;
		}
		if (rc <= 0)
			_exit(0);
		if (in.type == IPC_MSG_TOKEN_GRANT &&
		    in.u.token_grant.provider == w.prov)
			return 0;
		if (worker_frame_take(&in) < 0)
			_exit(1);
		if (w.shutdown)
			return -1;
	}
}

void
worker_provider_event(int kind, int64_t pause_ms, int http, const char *text)
{
	struct ipc_msg m = { .type = IPC_MSG_PROVIDER_EVENT };
	struct ipc_event *e = &m.u.event;

	e->provider = w.prov;
	e->kind = kind;
	e->pause_ms = pause_ms > 0 ? pause_ms : 0;
	e->http = http >= 0 && http <= 999 ? http : 0;
	snprintf(e->text, sizeof(e->text), "%s", text ? text : "");
	worker_msg_send(&m);
}

/* The transcript a translation job reads, from inside the output tree:
 * a link planted in its place is refused, never read and sent on. */
static int
worker_transcript_load(const struct job *j, struct buf *b, char *err,
		       size_t errlen)
{
	char *rel = tree_output_rel(STAGE_TRANSCRIBE, "", j->rel_path, ".txt");
	char chunk[65536];
	ssize_t n;
	int fd = tree_file_open(&w.out, rel, err, errlen), rc = -1;

	if (fd < 0) {
		size_t k = strlen(err);
		snprintf(err + k, errlen - k, " (transcript; mpfarm fix runs its "
		    "transcription again)");
		goto fail;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "cannot read transcript %s/%s: %s",
			    log_quote(w.out.root), log_quote(rel), strerror(errno));
			goto fail;
		}
		if (b->len + (size_t)n > (size_t)WORKER_TRANSCRIPT_MAX) {
			snprintf(err, errlen, "transcript %s/%s is larger than %ld "
			    "bytes", log_quote(w.out.root), log_quote(rel),
			    WORKER_TRANSCRIPT_MAX);
			goto fail;
		}
		buf_append(b, chunk, (size_t)n);
	}
	buf_terminate(b);
	rc = 0;
fail:
	if (fd >= 0)
		close(fd);
	free(rel);
	return rc;
}

/* Check before paying: the job's output folder is a real folder of the
 * tree (made now when missing) that this worker may write in, and its
 * names fit.  -1 with err and an outcome: permanent when retrying cannot
 * help (a link, no permission, read-only, a name too long). */
static int
worker_outputs_check(const struct job *j, enum job_outcome *why, char *err,
		     size_t errlen)
{
	char *rel = tree_output_rel(j->stage, j->lang, j->rel_path, "");
	int rc = tree_check_writable(&w.out, rel, err, errlen);

	if (rc < 0)
		*why = tree_errno_permanent(errno) ? OUT_PERMANENT : OUT_TRANSIENT;
	free(rel);
	return rc;
}

/* Take every frame already sent, without waiting.  0, or -1 when the
 * channel broke (the main loop will see it again and leave). */
static int
worker_frames_drain(void)
{
	struct ipc_msg m;
	int rc;

	while ((rc = ipc_frame_recv(w.fd, &w.rd, &m, 0)) == 1)
		if (worker_frame_take(&m) < 0)
			return -1;
	return rc < 0 && errno != ETIMEDOUT ? -1 : 0;
}


/* The database went away under a store call (PostgreSQL restarting):
 * wait the next backoff step and say whether to call again.  The job's
 * bookkeeping is retried rather than the job failed; after
 * WORKER_OUTAGE_MS of outage the call's failure stands.  *tries and
 * *since (0 before the first failure) carry the state between calls. */
bool
worker_store_retry(store_t *st, int *tries, int64_t *since)
{
	if (!store_err_transient(st))
		return false;
	if (*tries == 0) {
		*since = time_mono_ms();
		log_warn("store_outage", "error=%s", log_quote(store_errmsg(st)));
	}
	if (time_mono_ms() - *since >= WORKER_OUTAGE_MS)
		return false;
	usleep((useconds_t)backoff_jitter(backoff_delay(WORKER_RETRY_MS,
	    WORKER_RETRY_CAP_MS, (*tries)++)) * 1000);
	return true;
}

/* Claim job_id in a transaction of its own.  A COMMIT the database's
 * outage left without an answer is settled by reading the job back: in
 * progress under the lease the claim took, it is ours (claiming it again
 * would find it taken, and the master would hand it back with an attempt
 * counted).  As store_job_claim: 0, 1 not claimable, -1 (transient or
 * not, store_err_transient). */
static int
worker_claim(store_t *st, int64_t job_id, int64_t lease, struct job *j)
{
	for (int again = 0; again < WORKER_CLAIM_TRIES; again++) {
		int rc, settled = -1, tries = 0;
		int64_t since = 0;

		if (store_tx_begin(st) < 0)
			return -1;
		rc = store_job_claim(st, job_id, lease, getpid(), w.master, j);
		if (rc != 0) {
			store_tx_rollback(st);
			return rc;
		}
		if (store_tx_commit(st) == 0)
			return 0;
		while (store_err_transient(st) &&
		    (settled = store_job_settle(st, j)) < 0 &&
		    worker_store_retry(st, &tries, &since))
			;
		if (settled >= 0)
			log_info("job_settled", "job=%lld what=claim result=%s",
			    (long long)job_id, settled == 1 ? "claimed" :
			    "not-claimed");
		if (settled == 1)
			return 0;
		job_clear(j);
		if (settled != 2)
			return -1;
		/* not committed: claim again */
	}
	return -1;
}

/* Publish what the batch holds now, so that a reply about another job
 * reaches the master after the DONEs it is waiting for. */
static void
worker_flush(void)
{
	(void)worker_frames_drain();
	worker_batch_flush(w.st, w.cfg, w.pending, w.shutdown ? 0 : w.npending,
	    w.master);
}

static void
worker_job_run(store_t *st, const struct worker_pending *pj)
{
	int64_t job_id = pj->job_id;
	struct job j = { 0 };
	struct provider_req req = { 0 };
	struct provider_result res = { 0 };
	struct ipc_msg m = { .type = IPC_MSG_DONE };
	struct ipc_done *done = &m.u.done;
	enum job_status final = JOB_ST_COMPLETED;
	enum job_outcome why = OUT_TRANSIENT;
	const struct provider_desc *ops = provider_at(pj->prov);
	struct buf text;
	char err[512] = "";
	bool permanent;
	int rc;

	buf_init(&text);
	done->job_id = job_id;
	done->provider = pj->prov;
	rc = worker_batch_take(job_id, &j);     /* claimed by the last flush? */
	if (rc == -2) {
		int tries = 0;
		int64_t since = 0;
		worker_flush();         /* a transaction anyway: publish too */
		while ((rc = worker_claim(st, job_id, pj->lease, &j)) < 0 &&
		    worker_store_retry(st, &tries, &since))
			;
		if (rc >= 0 && tries > 0)
			log_info("store_reconnected", "tries=%d", tries);
	}
	if (rc != 0) {
		if (rc < 0)
			log_error("job_claim_failed", "job=%lld error=%s",
			    (long long)job_id, log_quote(store_errmsg(st)));
		worker_flush();
		done->outcome = IPC_OUT_SKIPPED;
		worker_msg_send(&m);
		job_clear(&j);
		return;
	}
	w.job_id = job_id;
	w.prov = pj->prov;
	w.last_beat = time_mono_ms();
	/* the name as failed and show print it: no control byte of a file
	 * name reaches /proc/PID/cmdline or a terminal running ps */
	char *shown = text_escape(j.rel_path, strlen(j.rel_path),
	    TEXT_ESCAPE_SHOW);
	if (j.stage == STAGE_TRANSCRIBE)
		title_set("mpfarm: worker %d transcribe %s", w.slot, shown);
	else
		title_set("mpfarm: worker %d translate:%s %s", w.slot, j.lang,
		    shown);
	free(shown);
	req.cfg = w.cfg;
	req.stage = j.stage;
	req.lang = j.lang;
	req.input_path = j.abs_path;
	req.input_fd = -1;
	req.job_id = job_id;
	res.exit_code = -1;
	if (!(ops->stages & (1 << j.stage))) {
		/* the master chose it from a validated config: not reached */
		provider_result_error(&res, OUT_TRANSIENT, "provider %s does not "
		    "%s", ops->name, job_stage_name(j.stage));
	} else if (worker_outputs_check(&j, &why, err, sizeof(err)) < 0) {
		/* check before paying: outputs that cannot be written */
		provider_result_error(&res, why, "%s", err);
	} else if (j.stage == STAGE_TRANSCRIBE &&
	    (req.input_fd = worker_media_open(&j, err, sizeof(err),
	    &permanent)) < 0) {
		/* before any provider call: a link or a swapped file is
		 * never read, let alone uploaded */
		provider_result_error(&res, permanent ? OUT_PERMANENT :
		    OUT_TRANSIENT, "%s", err);
	} else if (j.stage == STAGE_TRANSLATE &&
	    worker_transcript_load(&j, &text, err, sizeof(err)) < 0) {
		provider_result_error(&res, OUT_PERMANENT, "%s", err);
	} else {
		req.text = text.data ? text.data : "";
		req.text_len = text.len;
		(void)ops->run(&req, &res);
	}
	if (req.input_fd >= 0)
		close(req.input_fd);
	if (res.outcome == OUT_COMPLETED) {
		/* held for a flush, which also sends its DONE: the main loop
		 * decides when, right after it reads what the master sent */
		if (worker_batch_add(w.cfg, &w.out, &j, pj->prov, &res, err,
		    sizeof(err)) == 0) {
			w.job_id = 0;
			title_set("mpfarm: worker %d idle", w.slot);
			provider_result_free(&res);
			buf_free(&text);
			return;
		}
		/* full disk, vanished folder: worth a retry; a link or lost
		 * permission planted since the check is not */
		why = tree_errno_permanent(errno) ? OUT_PERMANENT : OUT_TRANSIENT;
		provider_result_error(&res, why, "%s", err);
	}
	worker_flush();                 /* DONEs go out in order */
	if (res.outcome != OUT_COMPLETED) {
		struct job_result jr = {
			.outcome = res.outcome, .http_status = res.http_status,
			.exit_code = res.exit_code, .signal = res.signal,
			.retry_at_ms = provider_retry_at(w.cfg, j.attempts,
			    res.retry_after_ms),
			.msg = res.msg,
		};
		int tries = 0;
		int64_t since = 0;
		while ((rc = store_job_fail(st, &j, &jr, w.cfg->max_attempts,
		    &final)) < 0 && worker_store_retry(st, &tries, &since))
			;
		if (rc >= 0 && tries > 0)
			log_info("store_reconnected", "tries=%d", tries);
		if (rc != 0) {
			log_error("job_record_failed", "job=%lld file=%s error=%s",
			    (long long)job_id, log_quote(j.rel_path),
			    rc < 0 ? log_quote(store_errmsg(st)) : "lease-lost");
			done->outcome = IPC_OUT_SKIPPED;
			goto out;
		}
		snprintf(done->text, sizeof(done->text), "%s", res.msg);
		done->retry_after_ms = res.retry_after_ms > 0 ?
		    res.retry_after_ms : 0;
	}
	done->outcome = res.outcome;
	done->status = final;
	done->http = res.http_status >= 0 && res.http_status <= 999 ?
	    res.http_status : 0;
out:
	w.job_id = 0;
	title_set("mpfarm: worker %d idle", w.slot);
	worker_msg_send(&m);
	provider_result_free(&res);
	buf_free(&text);
	job_clear(&j);
}

void
worker_main(const struct worker_args *wa)
{
	struct store_open_opts opts = { 0 };
	struct ipc_msg m = { .type = IPC_MSG_READY };
	store_t *st = NULL;
	char err[512];

	w.cfg = wa->cfg;
	w.cfg_gen = wa->cfg_gen;
	w.fd = wa->chan_fd;
	w.master = wa->master_pid;
	w.slot = wa->slot;
	title_set("mpfarm: worker %d idle", w.slot);
	ipc_reader_init(&w.rd);
	worker_signals_reset();
	/* die with the master, even on kill -9; the check closes the race
	 * where the master died before prctl */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != wa->master_pid)
		_exit(0);
	/* what an exec engine leaves behind becomes ours to kill (not
	 * dumpable and no core: inherited from the master) */
	(void)proc_subreaper_set();
	srandom((unsigned)(getpid() ^ time_mono_ms()));

	opts.flags = w.cfg->durable ? STORE_DURABLE : 0;
	opts.busy_timeout_ms = w.cfg->busy_timeout_ms;
	if (store_open(&st, w.cfg->db, &opts, err, sizeof(err)) < 0) {
		log_error("worker_store_failed", "slot=%d error=%s", wa->slot,
		    log_quote(err));
		_exit(WORKER_EXIT_CONFIG);
	}
	if (tree_open(&w.out, w.cfg->output, true, w.cfg->durable, err,
	    sizeof(err)) < 0) {
		log_error("worker_output_failed", "slot=%d error=%s", wa->slot,
		    log_quote(err));
		store_close(st);
		_exit(WORKER_EXIT_CONFIG);
	}
	if (worker_media_roots_load(w.cfg, st, err, sizeof(err)) < 0) {
		log_error("worker_store_failed", "slot=%d error=%s", wa->slot,
		    log_quote(err));
		_exit(WORKER_EXIT_CONFIG);
	}
	w.st = st;
	m.u.ready.pid = getpid();
	worker_msg_send(&m);
	for (;;) {
		int rc;

		/* take everything already sent: a SHUTDOWN behind a job sent
		 * ahead must be seen before that job starts */
		while ((rc = ipc_frame_recv(w.fd, &w.rd, &m, 0)) == 1)
			if (worker_frame_take(&m) < 0)
				goto broken;
		if (rc == 0)
			break;          /* master closed the channel: leave */
		if (errno != ETIMEDOUT)
			goto broken;
		if (worker_batch_due(w.pending, w.npending, w.shutdown))
			worker_batch_flush(st, w.cfg, w.pending,
			    w.shutdown ? 0 : w.npending, w.master);
		if (w.shutdown) {
			struct ipc_msg skip = { .type = IPC_MSG_DONE };
			skip.u.done.outcome = IPC_OUT_SKIPPED;
			worker_flush();
			for (int i = 0; i < w.npending; i++) {
				if (worker_batch_claimed(w.pending[i].job_id)) {
					/* already claimed: run it rather
					 * than leave it in-progress */
					worker_job_run(st, &w.pending[i]);
					continue;
				}
				/* after the DONEs of the jobs run before it:
				 * the master expects them in the order sent */
				worker_flush();
				skip.u.done.job_id = w.pending[i].job_id;
				skip.u.done.provider = w.pending[i].prov;
				worker_msg_send(&skip);
			}
			break;
		}
		if (w.npending == 0) {
			rc = ipc_frame_recv(w.fd, &w.rd, &m, -1);
			if (rc == 0)
				break;
			if (rc < 0 || worker_frame_take(&m) < 0)
				goto broken;
			continue;
		}
		struct worker_pending pj = w.pending[0];
		memmove(w.pending, w.pending + 1, sizeof(w.pending[0]) *
		    (size_t)--w.npending);
		worker_job_run(st, &pj);
	}
	worker_flush();         /* nothing finished stays unpublished */
	store_close(st);
	tree_close(&w.out);
	_exit(0);
broken:
	log_error("worker_bad_frame", "slot=%d", wa->slot);
	worker_flush();
	store_close(st);
	tree_close(&w.out);
	_exit(1);
}
