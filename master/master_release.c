/*
 * master_release.c - jobs a worker no longer runs: it died, hung, was
 * stopped, or could not record the outcome itself.  Each is returned to
 * the store fenced by that worker's pid (a job it never claimed or
 * already finished is left alone) or, for a job the master claimed
 * itself (PostgreSQL), by the claim's lease; counted and logged.  A claim
 * no worker adopted goes back untouched.  A release or give-back the
 * database refuses now is owed and written again by the owed timer (the
 * farm does not end while one is owed).  A worker killed while writing
 * leaves temp files beside the outputs of the jobs it held: removed
 * here too, since nobody else would while a farm runs.
 */
#include "master_farm.h"
#include "common_provider.h"
#include "common_store_audit.h"
#include "common_tree.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write one release.  fails is the slot's count of deaths in a row: the
 * attempt that died is already counted, so the retry backs off from it.
 * 0 written, 1 not held by that pid (nothing to do), -1 database error. */
static int
farm_release_write(const struct job_ref *job, pid_t pid,
		   enum job_outcome outcome, const char *msg, int fails)
{
	int64_t job_id = job->job_id;
	struct job_result jr = { 0 };
	enum job_status final = JOB_ST_NOT_STARTED;
	int rc;

	jr.outcome = outcome;
	jr.exit_code = -1;
	jr.msg = msg;
	jr.retry_at_ms = outcome == OUT_INTERRUPTED ? 0 :
	    provider_retry_at(farm.cfg, fails + 1, 0);
	if (farm_store_reopen() < 0)
		return -1;
	rc = store_job_release(farm.st, job_id, pid, job->lease, &jr,
	    farm.cfg->max_attempts, &final);
	if (rc != 0)            /* -1: owed; 1: not held by that pid */
		return rc;
	farm.dirty = true;
	if (final == JOB_ST_FAILED)
		farm_outcome_count(job->stage, FARM_COUNT_FAILED, 1);
	else if (outcome != OUT_INTERRUPTED)
		farm_outcome_count(job->stage, FARM_COUNT_RETRIED, 1);
	log_info("job_released", "job=%lld file=%s outcome=%s status=%s "
	    "reason=%s", (long long)job_id, farm_job_file(job_id),
	    job_outcome_name(outcome), job_status_name(final), log_quote(msg));
	return 0;
}

static void
farm_owe(const struct job_ref *job, pid_t pid, enum job_outcome outcome,
	 const char *msg)
{
	struct owed *o;

	log_error(pid ? "job_release_owed" : "job_giveback_owed",
	    "job=%lld worker_pid=%d error=%s", (long long)job->job_id, (int)pid,
	    log_quote(farm.st ? store_errmsg(farm.st) : "no database"));
	farm.owed = xrealloc(farm.owed, sizeof(*farm.owed) *
	    (size_t)(farm.nowed + 1));
	o = &farm.owed[farm.nowed++];
	o->job = *job;
	o->pid = pid;
	o->outcome = outcome;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
}

/* 0 written (*given counted), -1 database error. */
static int
farm_giveback_write(const struct job_ref *jobs, int n, int *given)
{
	*given = 0;
	if (farm_store_reopen() < 0 ||
	    store_job_unclaim(farm.st, jobs, n, given) < 0)
		return -1;
	if (*given > 0) {
		farm.dirty = true;
		log_debug("jobs_given_back", "jobs=%d of=%d", *given, n);
	}
	return 0;
}

/* A claim of the master's own that the worker never adopted (it died or
 * skipped it first) goes back untouched; one it adopted is its attempt. */
void
farm_job_release(struct slot *s, const struct job_ref *job,
		 enum job_outcome outcome, const char *msg)
{
	int given = 0;

	if (job->lease > 0 && farm_giveback_write(job, 1, &given) == 0 &&
	    given == 1)
		return;
	if (farm_release_write(job, s->pid, outcome, msg, s->fails) < 0)
		farm_owe(job, s->pid, outcome, msg);
}

void
farm_jobs_giveback(const struct job_ref *jobs, int n, int *given)
{
	int k = 0;

	*given = 0;
	for (int i = 0; i < n; i++)     /* only claims of the master's own */
		k += jobs[i].lease > 0;
	if (k == 0)
		return;
	if (farm_giveback_write(jobs, n, given) == 0)
		return;
	for (int i = 0; i < n; i++)
		if (jobs[i].lease > 0)
			farm_owe(&jobs[i], 0, OUT_INTERRUPTED, "given back");
}

void
farm_owed_retry(void)
{
	for (int i = 0; i < farm.nowed; ) {
		struct owed *o = &farm.owed[i];
		int given, rc = o->pid == 0 ?
		    farm_giveback_write(&o->job, 1, &given) :
		    farm_release_write(&o->job, o->pid, o->outcome, o->msg, 0);
		if (rc < 0) {
			i++;
			continue;
		}
		farm.owed[i] = farm.owed[--farm.nowed];
	}
}

void
farm_job_release_dead(struct slot *s, const struct job_ref *job,
		      const char *cause)
{
	enum job_outcome outcome;
	char msg[300];

	if (s->killed == SLOT_KILL_STOPPED) {
		outcome = OUT_INTERRUPTED;
		snprintf(msg, sizeof(msg), "farm stopped: worker %s", cause);
	} else if (s->killed == SLOT_KILL_HUNG) {
		outcome = OUT_TIMEOUT;
		snprintf(msg, sizeof(msg), "hung (no progress within the timeout): "
		    "worker %s", cause);
	} else {
		outcome = OUT_CRASHED;
		snprintf(msg, sizeof(msg), "worker %s%s", cause,
		    s->killed == SLOT_KILL_BROKEN ? " after a malformed frame" : "");
	}
	farm_job_release(s, job, outcome, msg);
}

/* The temp files are named after the worker's pid; the folder is
 * reached through the output tree without following a link: a link
 * planted there never points this cleanup outside the tree. */
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
