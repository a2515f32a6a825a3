/*
 * common_store_end.c - the ways an attempt ends other than success: the
 * worker's own failure (transient, rate limited, permanent), the master's
 * release of a job whose worker died, hung or was stopped, start-up
 * recovery of every job a dead master left in progress, and a job lost
 * mid-run.  Each writes the attempt row once, from the job row it ran
 * under (a running attempt is its job row), and is fenced by the owner or
 * lease, so a stale worker or master never ends an attempt that is no
 * longer its own.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct store_sql q_attempt_end = STORE_SQL2(
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, http_status, exit_code, signal, message) "
	"VALUES (?1, ?2, ?3, coalesce(?4, ?5), ?5, ?6, ?7, ?8, ?9, ?10)",
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, http_status, exit_code, signal, message) "
	"VALUES (?1, ?2, ?3, coalesce(?4::bigint, ?5::bigint), ?5, ?6, ?7, "
	"?8, ?9, ?10)");

/* PostgreSQL: the row stays locked to the end of the transaction (other
 * hosts write concurrently), and a pid is only unique with its host. */
static struct store_sql q_job_state = STORE_SQL2(
	"SELECT status, lease, attempts, owner_pid, started_at FROM jobs "
	"WHERE job_id = ?1",
	"SELECT status, lease, attempts, owner_pid, started_at, "
	"coalesce(owner_host, '') FROM jobs WHERE job_id = ?1 FOR UPDATE");
static struct store_sql q_job_end = STORE_SQL(
	"UPDATE jobs SET status = ?2, attempts = ?3, "
	"run_after = coalesce(?4, run_after), last_error = ?5, "
	"finished_at = ?6, owner_pid = NULL, owner_master = NULL "
	"WHERE job_id = ?1");
/* The ended attempts, latest first (the one ending now has no row yet). */
static struct store_sql q_history = STORE_SQL(
	"SELECT attempt, outcome, message FROM attempts "
	"WHERE job_id = ?1 AND outcome IS NOT NULL "
	"ORDER BY attempt_id DESC LIMIT 4");

struct store_end {
	int64_t job_id;
	int64_t lease;          /* fence on the lease (worker), or 0 */
	pid_t   owner;          /* fence on the owner pid (master), or 0 */
	bool    count_always;   /* recovery: even an interruption counts */
	bool    keep_run_after;
};

static const char *
store_default_msg(const struct job_result *r, char *buf, size_t len)
{
	if (r->msg && r->msg[0])
		return r->msg;
	switch (r->outcome) {
	case OUT_CRASHED:
		if (r->signal > 0)
			snprintf(buf, len, "worker killed by signal %d", r->signal);
		else if (r->exit_code >= 0)
			snprintf(buf, len, "worker exited with status %d",
			    r->exit_code);
		else
			snprintf(buf, len, "worker died");
		return buf;
	case OUT_TIMEOUT:
		return "job hung past the job timeout; its worker was killed";
	case OUT_INTERRUPTED:
		return "the farm stopped before the job finished";
	default:
		return job_outcome_name(r->outcome);
	}
}

/* "MSG (attempt 3 of 3; earlier: #1 crashed, #2 timeout: MSG2)": why a
 * job ended failed after several tries, in one line. */
static int
store_history(store_t *st, int64_t job_id, const char *msg, int attempts,
	      int max, struct buf *b)
{
	struct { int n; char outcome[16]; char msg[64]; } h[4];
	db_stmt_t *s = store_stmt(st, &q_history);
	int nh = 0, step;

	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, job_id);
	while ((step = store_step(st, s)) == DB_ROW && nh < 4) {
		const char *m = db_column_text(s, 2);
		h[nh].n = db_column_int(s, 0);
		snprintf(h[nh].outcome, sizeof(h[nh].outcome), "%s",
		    db_column_text(s, 1));
		snprintf(h[nh].msg, sizeof(h[nh].msg), "%s",
		    m && strcmp(m, msg) != 0 ? m : "");
		nh++;
	}
	if (step < 0)
		return -1;
	buf_printf(b, "%s (attempt %d of %d", msg, attempts, max);
	for (int i = nh - 1; i >= 0; i--)
		buf_printf(b, "%s#%d %s%s%s", i == nh - 1 ? "; earlier: " : ", ",
		    h[i].n, h[i].outcome, h[i].msg[0] ? ": " : "", h[i].msg);
	buf_printf(b, ")");
	return 0;
}

/* What the job row said of the attempt it held (q_job_state). */
struct store_held {
	int64_t lease;
	int     attempt;
	int64_t owner;          /* 0 if none */
	int64_t started_at;     /* 0 if none */
};

/* The attempt the job row held, written down as it ends. */
static int
store_attempt_end(store_t *st, int64_t job_id, const struct store_held *h,
		  const struct job_result *r, const char *msg, int64_t now)
{
	db_stmt_t *s = store_stmt(st, &q_attempt_end);

	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, job_id);
	db_bind_int64(s, 2, h->attempt);
	if (h->owner > 0)
		db_bind_int64(s, 3, h->owner);
	if (h->started_at > 0)
		db_bind_int64(s, 4, h->started_at);
	db_bind_int64(s, 5, now);
	db_bind_text(s, 6, job_outcome_name(r->outcome));
	if (r->http_status > 0)
		db_bind_int64(s, 7, r->http_status);
	if (r->exit_code >= 0)
		db_bind_int64(s, 8, r->exit_code);
	if (r->signal > 0)
		db_bind_int64(s, 9, r->signal);
	store_bind_msg(s, 10, msg);
	return store_run(st, s);
}

/* Ends an in-progress attempt with r's outcome.  Only rate limits and
 * interruptions give the attempt back; running out of attempts fails the
 * job.  0, 1 when the job is not held as the fence says, -1. */
static int
store_job_end(store_t *st, const struct store_end *e,
	      const struct job_result *r, int max_attempts,
	      enum job_status *final_status)
{
	int64_t now = time_wall_ms();
	struct store_held h;
	const char *msg;
	char dflt[96];
	struct buf err;
	db_stmt_t *s;
	int attempts, step, rc = -1;
	bool own, counts, failed;
	enum job_status to;

	buf_init(&err);
	if (r->outcome <= OUT_COMPLETED || r->outcome >= OUT_COUNT)
		return store_fail(st, "job %lld: %s is not a failure",
		    (long long)e->job_id, job_outcome_name(r->outcome));
	if (max_attempts < 1)
		max_attempts = 1;
	msg = store_default_msg(r, dflt, sizeof(dflt));
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_job_state)) == NULL)
		goto out;
	db_bind_int64(s, 1, e->job_id);
	if ((step = store_step(st, s)) < 0)
		goto out;
	rc = 1;
	if (step != DB_ROW)
		goto out;
	h.lease = db_column_int64(s, 1);
	h.attempt = attempts = db_column_int(s, 2);
	h.owner = db_column_int64(s, 3);
	h.started_at = db_column_int64(s, 4);
	if (strcmp(db_column_text(s, 0), JOB_IN_PROGRESS) != 0 ||
	    (e->lease && h.lease != e->lease) ||
	    (e->owner && h.owner != e->owner) ||
	    (e->owner && store_is_pg(st) &&
	    strcmp(db_column_text(s, 5), store_host_id()) != 0)) {
		db_reset(s);
		goto out;
	}
	db_reset(s);
	rc = -1;
	counts = e->count_always || (r->outcome != OUT_RATE_LIMITED &&
	    r->outcome != OUT_INTERRUPTED);
	if (!counts && attempts > 0)
		attempts--;
	failed = r->outcome == OUT_PERMANENT ||
	    (counts && attempts >= max_attempts);
	to = failed ? JOB_ST_FAILED : JOB_ST_NOT_STARTED;
	if (failed && r->outcome != OUT_PERMANENT) {
		if (store_history(st, e->job_id, msg, attempts, max_attempts,
		    &err) < 0)
			goto out;
	} else {
		buf_printf(&err, "%s", msg);
	}
	if ((s = store_stmt(st, &q_job_end)) == NULL)
		goto out;
	db_bind_int64(s, 1, e->job_id);
	db_bind_text(s, 2, job_status_name(to));
	db_bind_int64(s, 3, attempts);
	if (!failed && !e->keep_run_after)
		db_bind_int64(s, 4, r->retry_at_ms);
	store_bind_msg(s, 5, err.data);
	if (failed)
		db_bind_int64(s, 6, now);
	if (store_run(st, s) < 0 ||
	    store_attempt_end(st, e->job_id, &h, r, msg, now) < 0)
		goto out;
	if (final_status)
		*final_status = to;
	rc = 0;
out:
	rc = store_tx_leave(st, own, rc);
	buf_free(&err);
	return rc;
}

int
store_job_fail(store_t *st, const struct job *j, const struct job_result *r,
	       int max_attempts, enum job_status *final_status)
{
	struct store_end e = { .job_id = j->job_id, .lease = j->lease };

	if (j->lease == 0)
		return store_fail(st, "job %lld: no lease", (long long)j->job_id);
	return store_job_end(st, &e, r, max_attempts, final_status);
}

int
store_job_release(store_t *st, int64_t job_id, pid_t owner, int64_t lease,
		  const struct job_result *r, int max_attempts,
		  enum job_status *final_status)
{
	struct store_end e = { .job_id = job_id, .lease = lease,
	    .owner = lease > 0 ? 0 : owner };

	if (owner <= 0 && lease <= 0)
		return store_fail(st, "job %lld: no owner pid", (long long)job_id);
	return store_job_end(st, &e, r, max_attempts, final_status);
}

/* jobs_status walked as a loose index scan: one seek per (stage, lang)
 * present, then one seek for the running jobs of each. */
static struct store_sql q_next_pair = STORE_SQL2(
	"SELECT * FROM (SELECT stage, lang FROM jobs WHERE stage = ?1 AND "
	"lang > ?2 ORDER BY lang LIMIT 1) UNION ALL SELECT * FROM (SELECT "
	"stage, lang FROM jobs WHERE stage > ?1 ORDER BY stage, lang LIMIT 1) "
	"LIMIT 1",
	"SELECT * FROM (SELECT stage, lang FROM jobs WHERE stage = ?1 AND "
	"lang > ?2 ORDER BY lang LIMIT 1) a UNION ALL SELECT * FROM (SELECT "
	"stage, lang FROM jobs WHERE stage > ?1 ORDER BY stage, lang LIMIT 1) "
	"b LIMIT 1");
static struct store_sql q_orphans = STORE_SQL(
	"SELECT job_id, lease, owner_master FROM jobs "
	"WHERE stage = ?1 AND lang = ?2 AND status = 'in-progress'");

struct store_orphan {
	int64_t job_id, lease, master;
};

static int
store_orphans_of(store_t *st, const char *stage, const char *lang,
		 struct store_orphan **o, size_t *no, size_t *cap)
{
	db_stmt_t *s = store_stmt(st, &q_orphans);
	int step;

	if (s == NULL)
		return -1;
	db_bind_text(s, 1, stage);
	db_bind_text(s, 2, lang);
	while ((step = store_step(st, s)) == DB_ROW) {
		if (*no == *cap) {
			*cap = *cap ? *cap * 2 : 16;
			*o = xrealloc(*o, *cap * sizeof(**o));
		}
		(*o)[*no].job_id = db_column_int64(s, 0);
		(*o)[*no].lease = db_column_int64(s, 1);
		(*o)[(*no)++].master = db_column_int64(s, 2);
	}
	return step < 0 ? -1 : 0;
}

/* One transaction for all of them: a start-up either recovers every
 * orphan or none. */
int
store_recover_orphans(store_t *st, int max_attempts, int *n)
{
	struct store_orphan *o = NULL;
	char stage[16] = "", lang[CONFIG_LANG_MAX] = "";
	size_t no = 0, cap = 0;
	db_stmt_t *s;
	int rc = -1, step;
	bool own;

	*n = 0;
	/* many masters: only the jobs of silent hosts are orphans */
	if (store_is_pg(st))
		return store_host_reap(st, max_attempts, true, n);
	if (store_tx_enter(st, &own) < 0)
		return -1;
	for (;;) {
		if ((s = store_stmt(st, &q_next_pair)) == NULL)
			goto out;
		db_bind_text(s, 1, stage);
		db_bind_text(s, 2, lang);
		if ((step = store_step(st, s)) < 0)
			goto out;
		if (step == DB_DONE)
			break;
		snprintf(stage, sizeof(stage), "%s", db_column_text(s, 0));
		snprintf(lang, sizeof(lang), "%s", db_column_text(s, 1));
		db_reset(s);
		if (store_orphans_of(st, stage, lang, &o, &no, &cap) < 0)
			goto out;
	}
	for (size_t i = 0; i < no; i++) {
		char msg[64];
		struct store_end e = { .job_id = o[i].job_id,
		    .lease = o[i].lease, .count_always = true,
		    .keep_run_after = true };
		struct job_result r = { .outcome = OUT_INTERRUPTED,
		    .exit_code = -1, .msg = msg };
		snprintf(msg, sizeof(msg), "master pid %lld is gone",
		    (long long)o[i].master);
		int one = store_job_end(st, &e, &r, max_attempts, NULL);
		if (one < 0)
			goto out;
		if (one == 0)
			(*n)++;
	}
	rc = 0;
out:
	free(o);
	return store_tx_leave(st, own, rc);
}

int
store_job_lost(store_t *st, int64_t job_id, int64_t lease, const char *msg,
	       int max_attempts)
{
	struct store_end e = { .job_id = job_id, .lease = lease,
	    .count_always = true, .keep_run_after = true };
	struct job_result r = { .outcome = OUT_INTERRUPTED, .exit_code = -1,
	    .msg = msg };

	return store_job_end(st, &e, &r, max_attempts, NULL);
}
