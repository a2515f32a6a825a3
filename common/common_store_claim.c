/*
 * common_store_claim.c - how a job becomes an attempt: the claim that
 * turns a runnable job into an in-progress one under a new lease.  On
 * SQLite (one master per file) the worker claims the job the master named.
 * On PostgreSQL many masters share the jobs table, and naming the same
 * oldest jobs to their workers made them queue on each other's row locks:
 * there the master claims a batch for its host (SELECT ... FOR UPDATE SKIP
 * LOCKED in a CTE, sized to what its workers can take), each worker
 * adopts the job it is handed (fenced by the lease the claim took), and
 * what the master claimed but could not hand out goes back untouched.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Per job, a claim is one write and a read, a completion three writes
 * (two for a translation).  The attempt row is written once, at the end,
 * from the job row it ran under.  On PostgreSQL the claim is one
 * statement: UPDATE ... FROM media_files RETURNING (the round trip is
 * what costs there); SQLite's RETURNING fills a temporary table, dearer
 * than the second look, q_claimed.  PostgreSQL takes the lease from the
 * sequence (see common_store_pg.c) and records the master's host, ?5, so
 * a host that goes silent can have its jobs back.
 */
#define STORE_CLAIMED_COLS "j.file_id, j.stage, j.lang, j.attempts, " \
	"j.lease, m.abs_path, m.rel_path, coalesce(m.src_root, m.scan_root), " \
	"coalesce(m.src_rel, m.rel_path), m.size, m.mtime_ns, " \
	"coalesce(m.dev, 0), coalesce(m.ino, 0)"
static struct store_sql q_claim = STORE_SQL2(
	"UPDATE jobs SET status = 'in-progress', attempts = attempts + 1, "
	"lease = coalesce(lease, 0) + 1, "
	"owner_pid = ?2, owner_master = ?3, started_at = ?4, finished_at = NULL "
	"WHERE job_id = ?1 AND status = 'not_started' AND ready = 1 AND "
	"run_after <= ?4",
	"UPDATE jobs j SET status = 'in-progress', attempts = j.attempts + 1, "
	"lease = nextval('mpfarm_lease'), owner_pid = ?2, owner_master = ?3, "
	"owner_host = nullif(?5, ''), started_at = ?4, finished_at = NULL "
	"FROM media_files m WHERE j.job_id = ?1 AND m.file_id = j.file_id AND "
	"j.status = 'not_started' AND j.ready = 1 AND j.run_after <= ?4 "
	"RETURNING " STORE_CLAIMED_COLS);
static struct store_sql q_claimed = STORE_SQL(
	"SELECT " STORE_CLAIMED_COLS " "
	"FROM jobs j JOIN media_files m ON m.file_id = j.file_id "
	"WHERE j.job_id = ?1");
/* PostgreSQL: the worker takes over a job its master claimed for it. */
static struct store_sql q_adopt = STORE_SQL(
	"UPDATE jobs j SET owner_pid = ?2, started_at = ?4 "
	"FROM media_files m WHERE j.job_id = ?1 AND j.lease = ?5 AND "
	"m.file_id = j.file_id AND j.status = 'in-progress' AND "
	"j.owner_pid IS NULL AND j.owner_master = ?3 "
	"RETURNING " STORE_CLAIMED_COLS);
/* PostgreSQL: a batch of one (stage, lang) for this host, oldest first;
 * rows another master is claiming are skipped, not waited for, and the
 * CTE makes LIMIT count rows claimed rather than rows looked at.  Nobody
 * runs them yet: owner_pid stays NULL until a worker adopts one. */
static struct store_sql q_claim_batch = STORE_SQL(
	"WITH c AS (SELECT job_id FROM jobs WHERE stage = ?1 AND lang = ?2 AND "
	"status = 'not_started' AND ready = 1 AND run_after <= ?3 "
	"ORDER BY run_after, job_id LIMIT ?4 FOR UPDATE SKIP LOCKED) "
	"UPDATE jobs j SET status = 'in-progress', attempts = j.attempts + 1, "
	"lease = nextval('mpfarm_lease'), owner_pid = NULL, owner_master = ?5, "
	"owner_host = nullif(?6, ''), started_at = ?3, finished_at = NULL "
	"FROM c WHERE j.job_id = c.job_id RETURNING j.job_id, j.lease, "
	"j.run_after");
/* PostgreSQL: a claimed job no worker adopted goes back as it was. */
static struct store_sql q_unclaim = STORE_SQL(
	"UPDATE jobs SET status = 'not_started', attempts = attempts - 1, "
	"owner_master = NULL, owner_host = NULL, started_at = NULL "
	"WHERE job_id = ?1 AND lease = ?2 AND status = 'in-progress' AND "
	"owner_pid IS NULL");
/* PostgreSQL: this host's claims no worker adopted and its master does
 * not hold (?2: the ids it holds, as an array) go back as they were. */
static struct store_sql q_claims_sweep = STORE_SQL2("SELECT NULL",
	"UPDATE jobs SET status = 'not_started', attempts = attempts - 1, "
	"owner_master = NULL, owner_host = NULL, started_at = NULL "
	"WHERE owner_host = ?1 AND status = 'in-progress' AND "
	"owner_pid IS NULL AND NOT (job_id = ANY (?2::bigint[]))");

int
store_job_claim(store_t *st, int64_t job_id, int64_t lease, pid_t worker,
		pid_t master, struct job *j)
{
	int64_t now = time_wall_ms();
	db_stmt_t *s;
	int rc = -1, step;
	bool own;

	memset(j, 0, sizeof(*j));
	if (lease > 0 && !store_is_pg(st))
		return store_fail(st, "job %lld: a lease from the master on "
		    "SQLite", (long long)job_id);
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, lease > 0 ? &q_adopt : &q_claim)) == NULL)
		goto out;
	db_bind_int64(s, 1, job_id);
	db_bind_int64(s, 2, worker);
	db_bind_int64(s, 3, master);
	db_bind_int64(s, 4, now);
	if (lease > 0) {
		db_bind_int64(s, 5, lease);
		if ((step = store_step(st, s)) < 0)
			goto out;
	} else if (store_is_pg(st)) {
		db_bind_text(s, 5, store_host_id());
		if ((step = store_step(st, s)) < 0)
			goto out;
	} else {
		if (store_run(st, s) < 0)
			goto out;
		step = db_changes(store_db(st)) > 0 ? DB_ROW : DB_DONE;
		if (step == DB_ROW) {
			if ((s = store_stmt(st, &q_claimed)) == NULL)
				goto out;
			db_bind_int64(s, 1, job_id);
			if ((step = store_step(st, s)) < 0)
				goto out;
			if (step != DB_ROW) {
				store_fail(st, "job %lld has no media file",
				    (long long)job_id);
				goto out;
			}
		}
	}
	if (step != DB_ROW) {
		rc = 1;         /* taken, finished, not due, or given back */
		goto out;
	}
	j->job_id = job_id;
	j->file_id = db_column_int64(s, 0);
	j->stage = job_stage_parse(db_column_text(s, 1));
	snprintf(j->lang, sizeof(j->lang), "%s", db_column_text(s, 2));
	j->attempts = db_column_int(s, 3);
	j->lease = db_column_int64(s, 4);
	j->abs_path = store_column_path(s, 5);
	j->rel_path = store_column_path(s, 6);
	j->open_root = store_column_path(s, 7);
	j->open_rel = store_column_path(s, 8);
	j->size = db_column_int64(s, 9);
	j->mtime_ns = db_column_int64(s, 10);
	j->dev = db_column_int64(s, 11);
	j->ino = db_column_int64(s, 12);
	rc = store_run(st, s);
out:
	rc = store_tx_leave(st, own, rc);
	if (rc != 0)
		job_clear(j);
	return rc;
}

struct store_claimed {
	struct job_ref ref;
	int64_t run_after;
};

static int
store_claimed_cmp(const void *a, const void *b)
{
	const struct store_claimed *x = a, *y = b;

	return store_dispatch_cmp(x->run_after, x->ref.job_id, y->run_after,
	    y->ref.job_id);
}

/* Claim up to n jobs of pair w into c[*nc..] (room for n more). */
static int
store_claim_pair(store_t *st, const struct store_want *w, int n,
		 int64_t now_ms, pid_t master, struct store_claimed *c,
		 int *nc)
{
	db_stmt_t *s = store_stmt(st, &q_claim_batch);
	int step, end = *nc + n;

	if (s == NULL)
		return -1;
	db_bind_text(s, 1, job_stage_name(w->stage));
	db_bind_text(s, 2, w->lang);
	db_bind_int64(s, 3, now_ms);
	db_bind_int64(s, 4, n);
	db_bind_int64(s, 5, master);
	db_bind_text(s, 6, store_host_id());
	while ((step = store_step(st, s)) == DB_ROW && *nc < end) {
		struct store_claimed *x = &c[(*nc)++];
		x->ref.job_id = db_column_int64(s, 0);
		x->ref.lease = db_column_int64(s, 1);
		x->run_after = db_column_int64(s, 2);
		x->ref.stage = w->stage;
		memcpy(x->ref.lang, w->lang, sizeof(x->ref.lang));
	}
	if (step == DB_ROW)     /* LIMIT holds: not reached */
		db_reset(s);
	return step < 0 ? -1 : 0;
}

/* Which pairs and how many of each: with one pair, all of max in one
 * statement (the usual run: one stage, or one language); with several,
 * each pair's share of the oldest max runnable jobs across them (a read
 * on the ordered index, store_runnable_fetch), claimed pair by pair in
 * one transaction.  A share another master took meanwhile comes back
 * short; the next refill asks again. */
int
store_jobs_claim(store_t *st, const struct config *cfg, int64_t now_ms,
		 pid_t master, struct job_ref *out, int max, int *nout)
{
	struct store_want w[STORE_WANTS_MAX];
	int share[STORE_WANTS_MAX] = { 0 };
	struct store_claimed *c = NULL;
	int nw, ncand = 0, nc = 0, rc = -1;
	bool own = false;

	*nout = 0;
	if (!store_is_pg(st))
		return store_fail(st, "a master claims jobs on PostgreSQL only");
	if (max <= 0 || (nw = store_wants(cfg, w)) == 0)
		return 0;
	if (nw == 1) {
		share[0] = max;
	} else {
		if (store_runnable_fetch(st, cfg, now_ms, NULL, 0, out, max,
		    &ncand) < 0)
			return -1;
		for (int i = 0; i < ncand; i++)
			for (int k = 0; k < nw; k++)
				if (out[i].stage == w[k].stage &&
				    strcmp(out[i].lang, w[k].lang) == 0)
					share[k]++;
		if (ncand == 0)
			return 0;
		if (store_tx_enter(st, &own) < 0)
			return -1;
	}
	c = xcalloc((size_t)max, sizeof(*c));
	for (int k = 0; k < nw; k++)
		if (share[k] > 0 && store_claim_pair(st, &w[k], share[k],
		    now_ms, master, c, &nc) < 0)
			goto out;
	rc = 0;
out:
	if (nw > 1)
		rc = store_tx_leave(st, own, rc);
	/* none claimed: nothing runnable, or all of it in other hands */
	if (rc == 0 && nc == 0)
		rc = ncand > 0 ? 1 : store_runnable_fetch(st, cfg, now_ms, NULL,
		    0, out, 1, &ncand) < 0 ? -1 : ncand > 0;
	if (rc >= 0) {
		qsort(c, (size_t)nc, sizeof(*c), store_claimed_cmp);
		for (int i = 0; i < nc; i++)
			out[i] = c[i].ref;
		*nout = nc;
	}
	free(c);
	return rc;
}

int
store_job_unclaim(store_t *st, const struct job_ref *refs, int n, int *given)
{
	db_stmt_t *s;
	int rc = -1;
	bool own;

	*given = 0;
	if (n <= 0)
		return 0;
	if (store_tx_enter(st, &own) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (refs[i].lease <= 0)
			continue;
		if ((s = store_stmt(st, &q_unclaim)) == NULL)
			goto out;
		db_bind_int64(s, 1, refs[i].job_id);
		db_bind_int64(s, 2, refs[i].lease);
		if (store_run(st, s) < 0)
			goto out;
		*given += db_changes(store_db(st)) > 0;
	}
	rc = 0;
out:
	rc = store_tx_leave(st, own, rc);
	if (rc != 0)
		*given = 0;
	return rc;
}

int
store_claims_sweep(store_t *st, const int64_t *held, int nheld, int *given)
{
	struct buf b;
	db_stmt_t *s;
	int rc = -1;

	*given = 0;
	if (!store_is_pg(st) || store_host_id()[0] == '\0')
		return 0;
	buf_init(&b);
	buf_append(&b, "{", 1);
	for (int i = 0; i < nheld; i++)
		buf_printf(&b, "%s%lld", i ? "," : "", (long long)held[i]);
	buf_append(&b, "}", 1);
	buf_terminate(&b);
	if ((s = store_stmt(st, &q_claims_sweep)) == NULL)
		goto out;
	db_bind_text(s, 1, store_host_id());
	db_bind_text(s, 2, b.data);
	if (store_run(st, s) < 0)
		goto out;
	*given = (int)db_changes(store_db(st));
	rc = 0;
out:
	buf_free(&b);
	return rc;
}
