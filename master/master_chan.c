/*
 * master_chan.c - the master's side of each worker channel: reading frames
 * (partial reads are normal; a malformed, oversized or unexpected frame
 * means the worker is broken and is killed, never trusted), the one switch
 * over what a worker may say (each message is checked against the slot's
 * state by the table in master_slot.c and against the job it holds, as
 * Postfix checks a child's status against its child table), and handing
 * queued jobs to idle workers.
 */
#include "master_farm.h"
#include "master_notify.h"
#include "common_provider.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

int
farm_job_send(struct slot *s, const struct job_ref *j, int prov)
{
	struct ipc_msg m = { .type = IPC_MSG_JOB };
	bool ahead = farm_slot_holds_job(s);

	m.u.job.job_id = j->job_id;
	m.u.job.provider = prov;
	m.u.job.gen = farm.cfg_gen;
	m.u.job.lease = j->lease;
	if (ipc_frame_send(s->fd, &m) < 0) {
		log_warn("job_send_failed", "slot=%d worker_pid=%d error=%s", s->idx,
		    (int)s->pid, strerror(errno));
		return -1;
	}
	if (farm_slot_event(s, SLOT_EV_JOB, j) < 0)
		return -1;
	if (ahead) {
		s->ahead_prov[s->nahead - 1] = prov;
	} else {
		s->prov = prov;
		farm_prov_job_start(prov);
	}
	return 0;
}

/* Sending a job ahead pays only when jobs take less than about a
 * master round trip's worth of scheduling; for slower jobs it would make
 * a job wait behind another while a worker may be free. */
#define FARM_AHEAD_MAX_MS 50

/* May this slot take a job now?  An idle worker may; a busy one may take
 * one more in advance (so it never waits for the master between jobs)
 * when every worker is busy, its jobs are short, and the job's provider
 * has no farm-wide limits: a job queued behind another must not hold a
 * concurrency place it is not using. */
static bool
farm_slot_takes(const struct slot *s, bool ahead)
{
	/* a worker started before a HUP runs the old config: it takes no
	 * new job and is replaced once idle (farm_slots_adjust) */
	if (s->cfg_gen != farm.cfg_gen)
		return false;
	if (ahead && (s->avg_job_ms <= 0 || s->avg_job_ms > FARM_AHEAD_MAX_MS))
		return false;
	if (s->idx >= farm.target)      /* leaves after its job (TTOU) */
		return false;
	if (!ahead)
		return s->state == SLOT_IDLE && (s->jobs_limit <= 0 ||
		    s->jobs_done < s->jobs_limit);
	/* within the job limit counting the job it runs, those sent ahead
	 * and this one */
	return s->state == SLOT_BUSY && s->nahead < FARM_AHEAD_MAX &&
	    !farm_prov_limited(s->prov) && !s->waiting_token &&
	    (s->jobs_limit <= 0 || s->jobs_done + 1 + s->nahead + 1 <=
	    s->jobs_limit);
}

/* Give slot s the first queued job it may take. */
static void
farm_dispatch_one(struct slot *s, bool ahead)
{
	int given;

	for (int tries = farm.qlen; tries > 0 && farm.qlen > 0; tries--) {
		struct job_ref j = farm.queue[farm.qhead];
		int prov = farm_prov_of(j.stage, j.lang);

		farm.qhead = (farm.qhead + 1) % farm.qcap;
		farm.qlen--;
		if (prov < 0) {
			/* fetched before a HUP took its stage's provider away:
			 * it stays (goes back to) not_started, and the refill
			 * leaves it out */
			farm_jobs_giveback(&j, 1, &given);
			farm.dirty = true;
			continue;
		}
		if (farm_prov_limited(prov) && ahead) {  /* fine for an idle worker later */
			farm.queue[(farm.qhead + farm.qlen) % farm.qcap] = j;
			farm.qlen++;
			continue;
		}
		if (farm_budget_spent()) {
			/* --batch-size reached: the rest stays not_started */
			farm_jobs_giveback(&j, 1, &given);
			farm_queue_clear();
			return;
		}
		if (!farm_prov_may_start(prov)) {
			/* paused, full or disabled: drop it (it stays not_started)
			 * so it cannot crowd out other work; the refill leaves its
			 * provider out until it can start jobs again */
			farm_jobs_giveback(&j, 1, &given);
			farm.dirty = true;
			continue;
		}
		(void)farm_budget_take();
		if (farm_job_send(s, &j, prov) < 0) {
			/* not sent: nobody adopts it */
			farm_jobs_giveback(&j, 1, &given);
			farm_slot_kill(s, SIGKILL, SLOT_KILL_BROKEN);
			farm.dirty = true;
			return;
		}
		return;
	}
}

/* Idle workers first, each the first queued job it may take; then, while
 * no worker is idle or starting (one soon will be: sending ahead would
 * only make its job wait), short jobs ahead to busy workers, round robin.
 * A job whose provider cannot start one now is dropped from the queue
 * (it stays not_started); --batch-size ends the handing out. */
void
farm_dispatch(void)
{
	bool waiting = false;

	if (farm.stopping)
		return;
	/* idle workers first, then one job ahead for each busy one, but only
	 * when no worker is idle or starting */
	for (int i = 0; i < farm.nslots && farm.qlen > 0; i++)
		if (farm_slot_takes(farm.slots[i], false))
			farm_dispatch_one(farm.slots[i], false);
	for (int i = 0; i < farm.nslots; i++)
		if (farm.slots[i]->state == SLOT_IDLE ||
		    farm.slots[i]->state == SLOT_STARTING)
			waiting = true;
	/* round robin, so every busy worker gets its share */
	for (int k = 0; k < FARM_AHEAD_MAX && !waiting; k++)
		for (int i = 0; i < farm.nslots && farm.qlen > 0; i++)
			if (farm_slot_takes(farm.slots[i], true))
				farm_dispatch_one(farm.slots[i], true);
}

/* What one slot could hold sent ahead once it runs a job: nothing for
 * long jobs or a limited provider (farm_slot_takes), else up to
 * FARM_AHEAD_MAX within its job limit. */
static int
farm_slot_ahead_room(const struct slot *s, bool idle)
{
	int room;

	if (idle ? s->avg_job_ms <= 0 || s->avg_job_ms > FARM_AHEAD_MAX_MS :
	    !farm_slot_takes(s, true))
		return 0;
	room = FARM_AHEAD_MAX - s->nahead;
	if (s->jobs_limit > 0 && s->jobs_limit - s->jobs_done - 1 - s->nahead <
	    room)
		room = s->jobs_limit - s->jobs_done - 1 - s->nahead;
	return room > 0 ? room : 0;
}

int
farm_dispatch_room(bool *worth_it)
{
	int idle = 0, ahead = 0, ahead_all = 0;
	bool starting = false;

	*worth_it = false;
	if (farm.stopping)
		return 0;
	for (int i = 0; i < farm.nslots; i++) {
		const struct slot *s = farm.slots[i];
		int room;
		if (s->state == SLOT_STARTING)
			starting = true;
		if (farm_slot_takes(s, false)) {
			idle++;
			room = farm_slot_ahead_room(s, true);
		} else {
			room = farm_slot_ahead_room(s, false);
		}
		ahead += room;
		ahead_all += room > 0 || s->nahead > 0 ? FARM_AHEAD_MAX : 0;
	}
	/* once the idle ones run a job, none is idle: dispatch sends ahead
	 * unless a worker is still starting */
	if (starting)
		ahead = 0;
	*worth_it = idle > 0 || (ahead > 0 && 4 * ahead >= ahead_all);
	return idle + ahead;
}

void
farm_workers_shutdown(void)
{
	struct ipc_msg m = { .type = IPC_MSG_SHUTDOWN };

	for (int i = 0; i < farm.nslots; i++) {
		struct slot *s = farm.slots[i];
		if (s->fd < 0)
			continue;
		if (s->state == SLOT_STARTING) {
			kill(s->pid, SIGKILL);
			s->killed = SLOT_KILL_STOPPED;
			(void)farm_slot_event(s, SLOT_EV_KILL, NULL);
		} else if (s->state == SLOT_IDLE || s->state == SLOT_BUSY) {
			(void)ipc_frame_send(s->fd, &m);
			(void)farm_slot_event(s, SLOT_EV_SHUTDOWN, NULL);
		}
	}
}

/* A DONE: the provider place it held is free, the outcome counted and
 * logged, and the next job sent ahead (if any) becomes its job.  A
 * SKIPPED outcome is released in case the worker claimed it. */
static void
farm_done(struct slot *s, const struct ipc_done *m)
{
	int st = s->job.stage, prov = s->prov;

	if (s->prov >= 0) {
		farm_prov_job_end(s->prov);
		s->prov = -1;
	}
	s->waiting_token = false;
	s->jobs_done++;
	farm.dirty = true;
	{
		int64_t dur = time_mono_ms() - s->job_started;
		s->avg_job_ms = s->avg_job_ms > 0 ? (3 * s->avg_job_ms + dur) / 4
		    : dur;
		if (s->avg_job_ms < 1)      /* known, and under a millisecond */
			s->avg_job_ms = 1;
	}
	if (m->outcome == IPC_OUT_SKIPPED) {
		if (log_wants(LOG_DEBUG))
			log_debug("job_skipped", "slot=%d job=%lld file=%s", s->idx,
			    (long long)m->job_id, farm_job_file(m->job_id));
		/* usually not claimable, and this changes nothing; but a worker
		 * that claimed the job and then could not record its outcome
		 * (database busy, disk full) leaves it in-progress under its
		 * pid, and nobody else would ever give it back */
		farm_job_release(s, &s->job, OUT_TRANSIENT,
		    "the worker could not record the job's outcome");
	} else if (m->outcome == OUT_COMPLETED) {
		farm_outcome_count(st, FARM_COUNT_DONE, 1);
		s->fails = 0;
		farm.early_deaths = 0;
		if (log_wants(LOG_DEBUG))
			log_debug("job_done", "slot=%d job=%lld file=%s", s->idx,
			    (long long)m->job_id, farm_job_file(m->job_id));
	} else {
		farm_outcome_count(st, m->status == JOB_ST_FAILED ?
		    FARM_COUNT_FAILED : FARM_COUNT_RETRIED, 1);
		log_event(m->status == JOB_ST_FAILED ? LOG_WARN : LOG_INFO,
		    "job_failed", "slot=%d job=%lld file=%s stage=%s lang=%s "
		    "outcome=%s status=%s http=%d retry_after_ms=%lld provider=%s "
		    "error=%s", s->idx, (long long)m->job_id,
		    farm_job_file(m->job_id), job_stage_name(st),
		    s->job.lang[0] ? s->job.lang : "-", job_outcome_name(m->outcome),
		    job_status_name(m->status), (int)m->http,
		    (long long)m->retry_after_ms, prov >= 0 ?
		    provider_at(prov)->name : "", log_quote(m->text));
	}
	(void)farm_slot_event(s, s->nahead > 0 ? SLOT_EV_NEXT : SLOT_EV_DONE,
	    NULL);
}

/* One switch over everything a worker may send: the slot's state must
 * accept the message's event (master_slot.c) and a job's message must
 * name the job the slot runs.  Returns -1 when the worker broke the
 * protocol. */
static int
farm_msg_handle(struct slot *s, const struct ipc_msg *m)
{
	switch (m->type) {
	case IPC_MSG_READY:
		if (m->u.ready.pid != s->pid ||
		    farm_slot_event(s, SLOT_EV_READY, NULL) < 0)
			return -1;
		if (s->state != SLOT_IDLE)      /* killed meanwhile: too late */
			return 0;
		log_debug("worker_ready", "slot=%d worker_pid=%d", s->idx,
		    (int)s->pid);
		if (!farm.all_ready_logged) {
			int ready = 0;
			for (int i = 0; i < farm.nslots; i++)
				ready += farm.slots[i]->state == SLOT_IDLE ||
				    farm_slot_holds_job(farm.slots[i]);
			if (ready >= farm.target) {
				farm.all_ready_logged = true;
				log_info("farm_ready", "workers=%d", ready);
				(void)master_notify_send("READY=1");
			}
		}
		if (farm.stopping)
			farm_workers_shutdown();
		return 0;
	/* every provider a worker names must be the one the master chose
	 * for the job it counts as running */
	case IPC_MSG_DONE:
		if (!farm_slot_holds_job(s) || m->u.done.job_id != s->job.job_id ||
		    m->u.done.provider != s->prov ||
		    slot_next(s->state, SLOT_EV_DONE) == SLOT_REFUSED)
			return -1;
		farm_done(s, &m->u.done);
		return 0;
	case IPC_MSG_HEARTBEAT:
		if (!farm_slot_holds_job(s) ||
		    m->u.heartbeat.job_id != s->job.job_id ||
		    farm_slot_event(s, SLOT_EV_TALK, NULL) < 0)
			return -1;
		s->last_beat = time_mono_ms();
		return 0;
	case IPC_MSG_TOKEN_REQ:
		if (!farm_slot_holds_job(s) || m->u.token_req.provider != s->prov ||
		    farm_slot_event(s, SLOT_EV_TALK, NULL) < 0)
			return -1;
		s->last_beat = time_mono_ms();
		farm_prov_token_req(s, s->prov);
		return 0;
	case IPC_MSG_PROVIDER_EVENT:
		if (!farm_slot_holds_job(s) || m->u.event.provider != s->prov ||
		    farm_slot_event(s, SLOT_EV_TALK, NULL) < 0)
			return -1;
		farm_prov_event(&m->u.event);
		return 0;
	default:
		return -1;
	}
}

int
farm_chan_read(struct slot *s, bool drain)
{
	struct ipc_msg m;
	ssize_t n;
	int rc;

	do {
		n = ipc_reader_fill(&s->rd, s->fd);
		while ((rc = ipc_reader_next(&s->rd, &m)) == 1)
			if (farm_msg_handle(s, &m) < 0) {
				rc = -1;
				break;
			}
		if (rc < 0) {
			log_error("worker_broken", "slot=%d worker_pid=%d type=%d "
			    "note=bad-frame", s->idx, (int)s->pid, m.type);
			farm.broken++;
			ev_io_stop(farm.loop, &s->io);
			farm_slot_kill(s, SIGKILL, SLOT_KILL_BROKEN);
			return -1;
		}
	} while (n > 0 && drain);
	if (n == 0 || (n < 0 && errno != EAGAIN)) {
		ev_io_stop(farm.loop, &s->io);
		(void)farm_slot_event(s, SLOT_EV_EOF, NULL);
	}
	return 0;
}

void
farm_chan_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct slot *s = w->data;

	(void)loop;
	(void)revents;
	if (farm_chan_read(s, false) < 0)
		return;
	/* past the target (TTOU) and now idle: it leaves */
	if (s->idx >= farm.target && s->state == SLOT_IDLE)
		farm_slots_adjust();
	farm_dispatch();
	if (farm.qlen == 0 && !farm.stopping)
		farm_refill_dispatch_or_stop();  /* keep workers fed */
}
