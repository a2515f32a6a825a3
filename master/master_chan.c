/*
 * master_chan.c - the master's side of each worker channel: reading frames
 * (partial reads are normal; a malformed, oversized or unexpected frame
 * means the worker is broken and is killed, never trusted), the one switch
 * over what a worker may say, and handing queued jobs to idle workers.
 */
#include "master_farm.h"
#include "worker.h"
#include "master_notify.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

int
farm_job_send(struct slot *s, const struct job_ref *j)
{
	struct ipc_msg m = { .type = IPC_MSG_JOB };

	m.job_id = j->job_id;
	if (ipc_frame_send(s->fd, &m) < 0) {
		log_warn("job_send_failed", "slot=%d pid=%d error=%s", s->idx,
		    (int)s->pid, strerror(errno));
		return -1;
	}
	s->state = SLOT_BUSY;
	s->job = *j;
	s->job_started = s->last_beat = time_mono_ms();
	return 0;
}

/* Hand queued jobs to idle workers.  A job whose provider is paused or at
 * its concurrency limit is put back at the end of the queue for later. */
void
farm_dispatch(void)
{
	if (farm.stopping)
		return;
	for (int i = 0; i < farm.nslots && farm.qlen > 0; i++) {
		struct slot *s = farm.slots[i];
		int tries = farm.qlen;

		if (s->state != SLOT_IDLE || (s->flags & SLOT_F_RETIRE))
			continue;
		while (tries-- > 0 && farm.qlen > 0) {
			struct job_ref j = farm.queue[farm.qhead];
			const char *pname = config_provider(farm.cfg, j.stage, j.lang);
			int prov = farm_prov_index(pname);

			farm.qhead = (farm.qhead + 1) % farm.qcap;
			farm.qlen--;
			if (prov >= 0 && !farm_prov_may_start(prov)) {
				farm.queue[(farm.qhead + farm.qlen) % farm.qcap] = j;
				farm.qlen++;
				continue;
			}
			if (farm_job_send(s, &j) < 0) {
				farm_slot_kill(s, SIGKILL, SLOT_F_BROKEN);
				farm.dirty = true;
				break;
			}
			s->prov = prov;
			if (prov >= 0)
				farm_prov_job_start(prov);
			break;
		}
		if (s->state != SLOT_BUSY && tries < 0)
			break;      /* every queued job is held back */
	}
}

/* Stopping: idle workers get SHUTDOWN (busy ones finish first). */
void
farm_shutdown_idle(void)
{
	struct ipc_msg m = { .type = IPC_MSG_SHUTDOWN };

	for (int i = 0; i < farm.nslots; i++) {
		struct slot *s = farm.slots[i];
		if ((s->state == SLOT_IDLE || s->state == SLOT_STARTING) &&
		    s->fd >= 0 && !(s->flags & SLOT_F_STOPPED)) {
			if (s->state == SLOT_IDLE)
				(void)ipc_frame_send(s->fd, &m);
			else
				kill(s->pid, SIGKILL);
			s->flags |= SLOT_F_STOPPED;
		}
	}
}

static void
farm_done(struct slot *s, const struct ipc_msg *m)
{
	int st = s->job.stage;

	if (s->prov >= 0) {
		farm_prov_job_end(s->prov);
		s->prov = -1;
	}
	s->state = SLOT_IDLE;
	s->waiting_token = false;
	s->jobs_done++;
	farm.dirty = true;
	if (m->outcome == WORKER_OUT_SKIPPED) {
		farm.skipped++;
		log_debug("job_skipped", "slot=%d job=%lld", s->idx,
		    (long long)m->job_id);
	} else if (m->outcome == OUT_COMPLETED) {
		farm.stage[st].done++;
		farm_rate_add(1);
		s->fails = 0;
		farm.early_deaths = 0;
		log_debug("job_done", "slot=%d job=%lld", s->idx, (long long)m->job_id);
	} else {
		if (m->status == JOB_ST_FAILED) {
			farm.stage[st].failed++;
			farm.any_failed = true;
		} else {
			farm.stage[st].retried++;
		}
		log_event(m->status == JOB_ST_FAILED ? LOG_WARN : LOG_INFO,
		    "job_failed", "slot=%d job=%lld stage=%s lang=%s outcome=%s "
		    "status=%s http=%d provider=%s error=%s", s->idx,
		    (long long)m->job_id, job_stage_name(st),
		    s->job.lang[0] ? s->job.lang : "-", job_outcome_name(m->outcome),
		    job_status_name(m->status), m->http, m->provider,
		    log_quote(m->text));
	}
	if (s->flags & SLOT_F_RETIRE)
		farm_slots_adjust();
}

/* One switch over everything a worker may send.  Returns -1 when the
 * worker broke the protocol. */
static int
farm_msg_handle(struct slot *s, const struct ipc_msg *m)
{
	switch (m->type) {
	case IPC_MSG_READY:
		if (s->state != SLOT_STARTING || m->pid != s->pid)
			return -1;
		s->state = SLOT_IDLE;
		log_debug("worker_ready", "slot=%d pid=%d", s->idx, (int)s->pid);
		if (!farm.all_ready_logged) {
			int ready = 0;
			for (int i = 0; i < farm.nslots; i++)
				ready += farm.slots[i]->state == SLOT_IDLE ||
				    farm.slots[i]->state == SLOT_BUSY;
			if (ready >= farm.target) {
				farm.all_ready_logged = true;
				log_info("farm_ready", "workers=%d", ready);
				(void)master_notify_send("READY=1");
			}
		}
		if (farm.stopping)
			farm_shutdown_idle();
		return 0;
	case IPC_MSG_DONE:
		if (s->state != SLOT_BUSY || m->job_id != s->job.job_id)
			return -1;
		farm_done(s, m);
		return 0;
	case IPC_MSG_HEARTBEAT:
		if (s->state != SLOT_BUSY || m->job_id != s->job.job_id)
			return -1;
		s->last_beat = time_mono_ms();
		return 0;
	case IPC_MSG_TOKEN_REQ:
		if (s->state != SLOT_BUSY)
			return -1;
		s->last_beat = time_mono_ms();
		farm_prov_token_req(s, m->provider);
		return 0;
	case IPC_MSG_PROVIDER_EVENT:
		if (s->state != SLOT_BUSY)
			return -1;
		farm_prov_event(m);
		return 0;
	default:
		return -1;
	}
}

void
farm_chan_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct slot *s = w->data;
	struct ipc_msg m;
	ssize_t n;
	int rc;

	(void)revents;
	n = ipc_reader_fill(&s->rd, s->fd);
	if (n == 0 || (n < 0 && errno != EAGAIN)) {
		/* EOF: the worker is gone or going; the child watcher will say
		 * how.  Stop listening so the loop does not spin. */
		ev_io_stop(loop, w);
		return;
	}
	while ((rc = ipc_reader_next(&s->rd, &m)) == 1) {
		if (farm_msg_handle(s, &m) < 0) {
			rc = -1;
			break;
		}
	}
	if (rc < 0) {
		log_error("worker_broken", "slot=%d pid=%d type=%d note=bad-frame",
		    s->idx, (int)s->pid, m.type);
		farm.broken++;
		ev_io_stop(loop, w);
		farm_slot_kill(s, SIGKILL, SLOT_F_BROKEN);
		return;
	}
	farm_dispatch();
	if (farm.qlen == 0 && !farm.stopping)
		farm_refill_now();   /* keep workers fed without waiting */
}
