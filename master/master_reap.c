/*
 * master_reap.c - what happens when a worker dies, and making hung workers
 * die.  libev's child watcher reaps in the loop (never in a handler); here
 * the dead worker's job is attributed from its slot, its attempt recorded
 * with the cause (exit code, or a signal mpfarm did not send: usually the
 * OOM killer), and the slot scheduled for a respawn with backoff.  A worker
 * that dies before READY throttles the whole farm; one that exits with
 * WORKER_EXIT_CONFIG stops it.
 */
#include "master_farm.h"
#include "common_provider.h"
#include "common_store_audit.h"
#include "common_tree.h"

#include <dirent.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FARM_TERM_GRACE_MS 2000
#define FARM_RESPAWN_MIN_MS 50
#define FARM_RESPAWN_MAX_MS 10000

void
farm_slot_kill(struct slot *s, int sig, int flag)
{
	if (s->pid <= 0)
		return;
	s->flags |= flag;
	if (kill(s->pid, sig) == 0 && sig == SIGTERM)
		s->kill_at = time_mono_ms() + FARM_TERM_GRACE_MS;
	log_info("worker_kill", "slot=%d worker_pid=%d signal=%d reason=%s", s->idx,
	    (int)s->pid, sig, flag == SLOT_F_HUNG ? "hung" : flag == SLOT_F_BROKEN
	    ? "broken" : "stop");
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
		if (s->state != SLOT_BUSY || (s->flags & SLOT_F_HUNG))
			continue;
		if (now - s->job_started > (int64_t)farm.cfg->job_timeout * 1000) {
			log_warn("job_hung", "slot=%d worker_pid=%d job=%lld "
			    "file=%s age_s=%lld", s->idx, (int)s->pid,
			    (long long)s->job.job_id, farm_job_file(s->job.job_id),
			    (long long)(now - s->job_started) / 1000);
			farm.hung_kills++;
			farm_slot_kill(s, SIGTERM, SLOT_F_HUNG);
		} else if (!s->waiting_token && now - s->last_beat >
		    (int64_t)farm.cfg->heartbeat_timeout * 1000) {
			/* no heartbeat: stopped (SIGSTOP) or wedged; TERM would
			 * not be delivered to a stopped process */
			log_warn("worker_silent", "slot=%d worker_pid=%d job=%lld "
			    "file=%s silent_s=%lld", s->idx, (int)s->pid,
			    (long long)s->job.job_id, farm_job_file(s->job.job_id),
			    (long long)(now - s->last_beat) / 1000);
			farm.hung_kills++;
			farm_slot_kill(s, SIGKILL, SLOT_F_HUNG);
		}
	}
}

static void
farm_cause(int status, int flags, char *buf, size_t len)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		if (flags & (SLOT_F_HUNG | SLOT_F_STOPPED | SLOT_F_BROKEN))
			snprintf(buf, len, "killed by signal %d (sent by mpfarm)", sig);
		else
			snprintf(buf, len, "killed by signal %d (%s)", sig,
			    sig == SIGKILL ? "not sent by mpfarm: the OOM killer?"
			    : strsignal(sig));
	} else {
		snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
	}
}

/* Return a job its worker no longer runs (died, hung, stopped, or could
 * not record the outcome itself), fenced by that worker's pid: a job it
 * never claimed or already finished is left alone.  When the database
 * cannot be written now, the release is owed and retried from the tick. */
static int
farm_release_write(int64_t job_id, pid_t pid, int stage,
		   enum job_outcome outcome, const char *msg, int fails)
{
	struct job_result jr = { 0 };
	enum job_status final = JOB_ST_NOT_STARTED;
	int rc;

	jr.outcome = outcome;
	jr.exit_code = -1;
	jr.msg = msg;
	/* the attempt that died is already counted: back off from it */
	jr.retry_at_ms = outcome == OUT_INTERRUPTED ? 0 :
	    provider_retry_at(farm.cfg, fails + 1, 0);
	if (farm_store_reopen() < 0)
		return -1;
	rc = store_job_release(farm.st, job_id, pid, &jr, farm.cfg->max_attempts,
	    &final);
	if (rc != 0)            /* -1: owed; 1: not held by that pid */
		return rc;
	farm.dirty = true;
	if (final == JOB_ST_FAILED) {
		farm.stage[stage].failed++;
		farm.any_failed = true;
	} else if (outcome != OUT_INTERRUPTED) {
		farm.stage[stage].retried++;
	}
	log_info("job_released", "job=%lld file=%s outcome=%s status=%s "
	    "reason=%s", (long long)job_id, farm_job_file(job_id),
	    job_outcome_name(outcome), job_status_name(final), log_quote(msg));
	return 0;
}

void
farm_job_release(struct slot *s, const struct job_ref *job,
		 enum job_outcome outcome, const char *msg)
{
	struct owed *o;

	if (farm_release_write(job->job_id, s->pid, job->stage, outcome, msg,
	    s->fails) >= 0)
		return;
	log_error("job_release_owed", "job=%lld worker_pid=%d error=%s",
	    (long long)job->job_id, (int)s->pid,
	    log_quote(farm.st ? store_errmsg(farm.st) : "no database"));
	farm.owed = xrealloc(farm.owed, sizeof(*farm.owed) *
	    (size_t)(farm.nowed + 1));
	o = &farm.owed[farm.nowed++];
	o->job_id = job->job_id;
	o->pid = s->pid;
	o->stage = job->stage;
	o->outcome = outcome;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
}

void
farm_owed_retry(void)
{
	for (int i = 0; i < farm.nowed; ) {
		struct owed *o = &farm.owed[i];
		if (farm_release_write(o->job_id, o->pid, o->stage, o->outcome,
		    o->msg, 0) < 0) {
			i++;
			continue;
		}
		farm.owed[i] = farm.owed[--farm.nowed];
	}
}

/* The job a dead worker held goes back to be run (or ends failed). */
static void
farm_job_attribute(struct slot *s, const struct job_ref *job, const char *cause)
{
	enum job_outcome outcome;
	char msg[300];

	if (s->flags & SLOT_F_STOPPED) {
		outcome = OUT_INTERRUPTED;
		snprintf(msg, sizeof(msg), "farm stopped: worker %s", cause);
	} else if (s->flags & SLOT_F_HUNG) {
		outcome = OUT_TIMEOUT;
		snprintf(msg, sizeof(msg), "hung (no progress within the timeout): "
		    "worker %s", cause);
	} else {
		outcome = OUT_CRASHED;
		snprintf(msg, sizeof(msg), "worker %s%s", cause,
		    (s->flags & SLOT_F_BROKEN) ? " after a malformed frame" : "");
	}
	farm_job_release(s, job, outcome, msg);
}

const char *
farm_job_file(int64_t job_id)
{
	char *rel = NULL;
	const char *q;

	if (farm_store_reopen() < 0 ||
	    store_audit_job_rel(farm.st, job_id, &rel) < 0 || rel == NULL)
		return "-";
	q = log_quote(rel);
	free(rel);
	return q;
}

/* A worker killed while writing leaves its temp files (named after its
 * pid) beside the outputs of the jobs it held; nobody else will remove
 * them while a farm runs, so the master does, folder by folder.  The
 * folder is reached through the output tree without following a link:
 * a link planted there never points this cleanup outside the tree. */
void
farm_temps_remove(pid_t pid, const struct job_ref *job)
{
	char *rel = NULL, *sub, *slash, prefix[48], err[512];
	struct tree t;
	DIR *d = NULL;
	struct dirent *e;
	int n, fd;

	if (farm_store_reopen() < 0 ||
	    store_audit_job_rel(farm.st, job->job_id, &rel) < 0 || rel == NULL)
		return;
	sub = tree_output_rel(job->stage, job->lang, rel, "");
	slash = strrchr(sub, '/');
	if (slash != NULL)
		*slash = '\0';
	n = snprintf(prefix, sizeof(prefix), ".mpfarm-tmp.%d.", (int)pid);
	if (tree_open(&t, farm.cfg->output, false, false, err, sizeof(err)) == 0) {
		fd = tree_dir_open(&t, sub, false, err, sizeof(err));
		if (fd >= 0 && (d = fdopendir(fd)) == NULL)
			close(fd);
		while (d != NULL && (e = readdir(d)) != NULL) {
			if (strncmp(e->d_name, prefix, (size_t)n) != 0)
				continue;
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				log_debug("temp_removed", "dir=%s temp=%s",
				    log_quote(sub), log_quote(e->d_name));
		}
		if (d != NULL)
			closedir(d);
	}
	tree_close(&t);
	free(sub);
	free(rel);
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

void
farm_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct slot *s = NULL;
	char cause[160];
	int status = w->rstatus;

	(void)loop;
	(void)revents;
	if (farm_retiree_reap(w->rpid))
		return;
	for (int i = 0; i < farm.nslots; i++)
		if (farm.slots[i]->pid == w->rpid)
			s = farm.slots[i];
	if (s == NULL) {
		/* a leftover reaped: its own children are ours now */
		farm_leftovers_kill();
		return;
	}
	farm_leftovers_kill();  /* what its engine left, if it died first */
	/* what it said before dying (a DONE, a heartbeat) counts first */
	if (s->fd >= 0) {
		farm.reaping = true;
		(void)farm_chan_read(s);
		farm.reaping = false;
	}
	farm_cause(status, s->flags, cause, sizeof(cause));
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    s->state != SLOT_BUSY;
	bool ours = (s->flags & (SLOT_F_HUNG | SLOT_F_STOPPED | SLOT_F_BROKEN)) != 0;
	if (!clean && !ours) {
		if (WIFSIGNALED(status))
			farm.deaths_signal++;
		else
			farm.deaths_exit++;
	}
	log_event(clean || (s->flags & SLOT_F_STOPPED) ? LOG_INFO : LOG_WARN,
	    "worker_exit", "slot=%d worker_pid=%d cause=%s job=%lld file=%s",
	    s->idx, (int)s->pid, log_quote(cause),
	    s->state == SLOT_BUSY ? (long long)s->job.job_id : 0LL,
	    s->state == SLOT_BUSY ? farm_job_file(s->job.job_id) : "-");
	if (s->state == SLOT_BUSY) {
		farm_job_attribute(s, &s->job, cause);
		farm_prov_slot_gone(s);
		if (!clean)
			farm_temps_remove(s->pid, &s->job);
	}
	/* jobs sent ahead: usually never claimed, nothing to undo; but the
	 * refill skipped them while this slot held them, so it must look
	 * again now (else, if they were all that was left, the farm would
	 * wait for its next timed look with runnable jobs and idle workers) */
	for (int k = 0; k < s->nahead; k++) {
		farm_job_attribute(s, &s->ahead[k], cause);
		if (!clean)
			farm_temps_remove(s->pid, &s->ahead[k]);
	}
	if (s->nahead > 0)
		farm.dirty = true;
	s->nahead = 0;
	if (s->state == SLOT_STARTING && !farm.stopping) {
		/* died before taking a job: a broken install or config must
		 * not become a fork storm */
		int64_t d = backoff_delay(FARM_RESPAWN_MIN_MS,
		    FARM_RESPAWN_MAX_MS, farm.early_deaths);
		farm.early_deaths++;
		farm.spawn_block_until = time_mono_ms() + d;
		log_warn("worker_early_death", "slot=%d consecutive=%d throttle_ms=%lld",
		    s->idx, farm.early_deaths, (long long)d);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_CONFIG &&
	    !farm.stopping) {
		say_err("worker cannot start (database %s or output %s unusable); "
		    "stopping the farm", farm.cfg->db, farm.cfg->output);
		farm.exit_code = EXIT_FATAL;
		farm.stopping = farm.quitting = true;
	}
	if (s->fd >= 0) {
		ev_io_stop(farm.loop, &s->io);
		close(s->fd);
		s->fd = -1;
	}
	if (!clean && !(s->flags & SLOT_F_STOPPED) && s->fails > 0) {
		/* per-slot backoff with jitter from the second death in a row
		 * on; the first is replaced at once */
		s->respawn_at = time_mono_ms() + backoff_jitter(backoff_delay(
		    FARM_RESPAWN_MIN_MS, FARM_RESPAWN_MAX_MS, s->fails));
	} else {
		s->respawn_at = 0;
	}
	if (!clean && !(s->flags & SLOT_F_STOPPED))
		s->fails++;
	s->pid = 0;
	s->state = SLOT_EMPTY;
	s->flags = 0;
	s->waiting_token = false;
	if (!farm.stopping) {
		farm_slots_adjust();
		farm_respawn_arm();
	} else if (farm_live_count() == 0 && farm.nretirees == 0 &&
	    farm.nowed == 0) {
		ev_break(farm.loop, EVBREAK_ALL);   /* the last one is gone */
	}
}
