/*
 * master_hang.c - making hung workers die.  A worker past the job
 * timeout gets a TERM (the worker cleans up, its engine too) and, when
 * that grace is over, a KILL; one silent past the heartbeat timeout is
 * killed at once: it is stopped (SIGSTOP) or wedged, and a TERM would
 * not be delivered to a stopped process.  A worker waiting for a
 * provider token is not silent: it waits for the master.  What its
 * death means for its job is master_reap.c's and master_release.c's.
 */
#include "master_farm.h"

#include <signal.h>

/* How long a worker sent SIGTERM gets before SIGKILL. */
#define FARM_TERM_GRACE_MS 2000

void
farm_slot_kill(struct slot *s, int sig, enum slot_kill why)
{
	if (s->pid <= 0)
		return;
	if (why > s->killed)
		s->killed = why;
	(void)farm_slot_event(s, SLOT_EV_KILL, NULL);
	if (kill(s->pid, sig) == 0 && sig == SIGTERM)
		s->kill_at = time_mono_ms() + FARM_TERM_GRACE_MS;
	log_info("worker_kill", "slot=%d worker_pid=%d signal=%d reason=%s", s->idx,
	    (int)s->pid, sig, slot_kill_name(why));
}

void
farm_hung_check(int64_t now)
{
	for (int i = 0; i < farm.nslots; i++) {
		struct slot *s = farm.slots[i];
		if (s->pid <= 0)
			continue;
		if (s->kill_at > 0 && now >= s->kill_at) {
			kill(s->pid, SIGKILL);
			s->kill_at = 0;
			continue;
		}
		/* one killed already dies (a worker killed as broken, or for
		 * the stop, is never "hung" on top) */
		if (!farm_slot_holds_job(s) || s->state == SLOT_KILLED)
			continue;
		if (now - s->job_started > (int64_t)farm.cfg->job_timeout *
		    MS_PER_S) {
			log_warn("job_hung", "slot=%d worker_pid=%d job=%lld "
			    "file=%s age_s=%lld", s->idx, (int)s->pid,
			    (long long)s->job.job_id, farm_job_file(s->job.job_id),
			    (long long)(now - s->job_started) / MS_PER_S);
			farm.hung_kills++;
			farm_slot_kill(s, SIGTERM, SLOT_KILL_HUNG);
		} else if (!s->waiting_token && now - s->last_beat >
		    (int64_t)farm.cfg->heartbeat_timeout * MS_PER_S) {
			log_warn("worker_silent", "slot=%d worker_pid=%d job=%lld "
			    "file=%s silent_s=%lld", s->idx, (int)s->pid,
			    (long long)s->job.job_id, farm_job_file(s->job.job_id),
			    (long long)(now - s->last_beat) / MS_PER_S);
			farm.hung_kills++;
			farm_slot_kill(s, SIGKILL, SLOT_KILL_HUNG);
		}
	}
}
