/*
 * master_reap.c - what happens when a worker dies.  libev's child watcher
 * reaps in the loop (never in a handler); here the dead worker's jobs are
 * attributed from its slot and released with the cause (exit code, or a
 * signal mpfarm did not send: usually the OOM killer; master_release.c),
 * what its engine left behind is killed, and the slot is emptied and
 * scheduled for a respawn with backoff.  A worker that dies before READY
 * throttles the whole farm; one that exits with WORKER_EXIT_CONFIG stops
 * it.  Hung workers are made to die in master_hang.c.
 */
#include "master_farm.h"
#include "worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Respawn backoff (backoff_delay): from FARM_RESPAWN_MIN_MS, doubled for
 * each death in a row, at most FARM_RESPAWN_MAX_MS. */
#define FARM_RESPAWN_MIN_MS 50
#define FARM_RESPAWN_MAX_MS 10000

/* How the worker ended, in words, for its job's attempt and the log. */
static void
farm_cause(int status, enum slot_kill killed, char *buf, size_t len)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		if (killed != SLOT_KILL_NONE)
			snprintf(buf, len, "killed by signal %d (sent by mpfarm)", sig);
		else
			snprintf(buf, len, "killed by signal %d (%s)", sig,
			    sig == SIGKILL ? "not sent by mpfarm: the OOM killer?"
			    : strsignal(sig));
	} else {
		snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
	}
}

static bool
farm_retiree_reap(pid_t pid)
{
	for (int i = 0; i < farm.nretirees; i++) {
		if (farm.retirees[i].pid != pid)
			continue;
		log_info("worker_retired", "slot=%d worker_pid=%d", farm.retirees[i].slot,
		    (int)pid);
		farm.retirees[i] = farm.retirees[--farm.nretirees];
		return true;
	}
	return false;
}

/* The master is a child subreaper: what an engine started, and the engine
 * itself, become its children when their worker dies without cleaning up
 * (SIGKILL).  Every child that is not a worker is such a leftover. */
static void
farm_leftovers_kill(void)
{
	pid_t keep[64], *k = keep;
	int n = 0, cap = farm.nslots + farm.nretirees;

	if (cap > (int)(sizeof(keep) / sizeof(keep[0])))
		k = xcalloc((size_t)cap, sizeof(*k));
	for (int i = 0; i < farm.nslots; i++)
		if (farm.slots[i]->pid > 0)
			k[n++] = farm.slots[i]->pid;
	for (int i = 0; i < farm.nretirees; i++)
		k[n++] = farm.retirees[i].pid;
	n = proc_children_kill(k, n);
	if (n > 0)
		log_warn("engine_leftovers_killed", "count=%d", n);
	if (k != keep)
		free(k);
}

/* The death counts and the slot's backoff: a death the master did not
 * cause counts against the slot (and, before READY, the whole farm). */
static void
farm_death_note(struct slot *s, bool clean)
{
	bool early = s->ready_at == 0;

	if (early && !farm.stopping) {
		/* died before taking a job: a broken install or config must
		 * not become a fork storm */
		int64_t d = backoff_delay(FARM_RESPAWN_MIN_MS,
		    FARM_RESPAWN_MAX_MS, farm.early_deaths);
		farm.early_deaths++;
		farm.spawn_block_until = time_mono_ms() + d;
		log_warn("worker_early_death", "slot=%d consecutive=%d throttle_ms=%lld",
		    s->idx, farm.early_deaths, (long long)d);
	}
	if (!clean && s->killed != SLOT_KILL_STOPPED && s->fails > 0) {
		/* per-slot backoff with jitter from the second death in a row
		 * on; the first is replaced at once */
		s->respawn_at = time_mono_ms() + backoff_jitter(backoff_delay(
		    FARM_RESPAWN_MIN_MS, FARM_RESPAWN_MAX_MS, s->fails));
	} else {
		s->respawn_at = 0;
	}
	if (!clean && s->killed != SLOT_KILL_STOPPED)
		s->fails++;
}

void
farm_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct slot *s;
	char cause[160];
	int status = w->rstatus;

	(void)loop;
	(void)revents;
	if (farm_retiree_reap(w->rpid))
		return;
	s = farm_slot_by_pid(w->rpid);
	if (s == NULL) {
		/* a leftover reaped: its own children are ours now */
		farm_leftovers_kill();
		return;
	}
	farm_leftovers_kill();  /* what its engine left, if it died first */
	/* what it said before dying (a DONE, a heartbeat) counts first; a
	 * broken channel is not read again */
	if (s->fd >= 0 && s->killed != SLOT_KILL_BROKEN)
		(void)farm_chan_read(s, true);
	farm_cause(status, s->killed, cause, sizeof(cause));
	bool held = farm_slot_holds_job(s);
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !held;
	bool ours = s->killed != SLOT_KILL_NONE;
	if (!clean && !ours) {
		if (WIFSIGNALED(status))
			farm.deaths_signal++;
		else
			farm.deaths_exit++;
	}
	log_event(clean || s->killed == SLOT_KILL_STOPPED ? LOG_INFO : LOG_WARN,
	    "worker_exit", "slot=%d worker_pid=%d cause=%s job=%lld file=%s",
	    s->idx, (int)s->pid, log_quote(cause),
	    held ? (long long)s->job.job_id : 0LL,
	    held ? farm_job_file(s->job.job_id) : "-");
	if (held) {
		farm_job_release_dead(s, &s->job, cause);
		farm_prov_slot_gone(s);
		if (!clean)
			farm_temps_remove(s->pid, &s->job);
	}
	/* jobs sent ahead: usually never claimed, nothing to undo; but the
	 * refill skipped them while this slot held them, so it must look
	 * again now (else, if they were all that was left, the farm would
	 * wait for its next timed look with runnable jobs and idle workers) */
	for (int k = 0; k < s->nahead; k++) {
		farm_job_release_dead(s, &s->ahead[k], cause);
		if (!clean)
			farm_temps_remove(s->pid, &s->ahead[k]);
	}
	if (s->nahead > 0)
		farm.dirty = true;
	s->nahead = 0;
	farm_death_note(s, clean);
	if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_CONFIG &&
	    !farm.stopping) {
		say_err("worker cannot start (database %s or output %s unusable); "
		    "stopping the farm", farm.cfg->db, farm.cfg->output);
		farm.exit_code = EXIT_FATAL;
		farm.stopping = farm.quitting = true;
		farm_stop_watch();
	}
	if (s->fd >= 0) {
		ev_io_stop(farm.loop, &s->io);
		close(s->fd);
		s->fd = -1;
	}
	(void)farm_slot_event(s, SLOT_EV_EXIT, NULL);
	if (!farm.stopping) {
		farm_slots_adjust();
		farm_respawn_arm();
	} else if (farm_live_count() == 0 && farm.nretirees == 0 &&
	    farm.nowed == 0) {
		ev_break(farm.loop, EVBREAK_ALL);   /* the last one is gone */
	}
}
