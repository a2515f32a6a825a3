/*
 * common_store_audit.c - the SQL of the bookkeeping commands: scan's look
 * up of an output name, the job list that fix and check compare with the
 * disk, and the hand-made status changes fix applies.  The farm never runs
 * these; they live here so that common_store.c keeps only what every
 * process needs.  Paths are BLOBs in the schema and are bound as BLOBs:
 * comparing a TEXT with a BLOB never matches in SQLite.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store_audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool
store_audit_db_missing(const char *path, const char *cmd)
{
	struct stat sb;

	if (db_target_is_pg(path) || stat(path, &sb) == 0)
		return false;   /* a server: opening it tells */
	if (errno == ENOENT)
		say_err("%s: no database %s here yet (mpfarm scan DIR creates "
		    "it; --db or MPFARM_DB name another)", cmd, log_quote(path));
	else
		say_err("%s: cannot use database %s: %s", cmd, log_quote(path),
		    strerror(errno));
	return true;
}

/* ---- scan's look up ------------------------------------------------- */

struct store_audit_lookup {
	store_t      *st;
	bool          v1;       /* schema 1: no dev/ino yet */
};

/* Prepared once per connection (a statement a file, so on PostgreSQL no
 * parse per file); a database from schema 1, which scan --dry-run reads
 * without migrating it, has no dev/ino. */
#define STORE_AUDIT_BY_REL(seen) STORE_SQL("SELECT size, mtime_ns, " seen \
	", abs_path FROM media_files WHERE rel_path = ?1")
#define STORE_AUDIT_BY_ABS(seen) STORE_SQL("SELECT size, mtime_ns, " seen \
	" FROM media_files WHERE abs_path = ?1")
#define STORE_AUDIT_SEEN "coalesce(dev, 0), coalesce(ino, 0)"
static struct store_sql q_audit_by_rel = STORE_AUDIT_BY_REL(STORE_AUDIT_SEEN);
static struct store_sql q_audit_by_abs = STORE_AUDIT_BY_ABS(STORE_AUDIT_SEEN);
static struct store_sql q_audit_by_rel_v1 = STORE_AUDIT_BY_REL("0, 0");
static struct store_sql q_audit_by_abs_v1 = STORE_AUDIT_BY_ABS("0, 0");

int
store_audit_lookup_open(store_t *st, store_audit_lookup_t **out)
{
	store_audit_lookup_t *lk = xcalloc(1, sizeof(*lk));
	int v = 0;

	lk->st = st;
	if (db_version_get(store_db(st), &v) < 0)
		v = 0;
	lk->v1 = v < 2;
	*out = lk;
	return 0;
}

void
store_known_file_clear(struct store_known_file *kf)
{
	free(kf->conflict_abs);
	memset(kf, 0, sizeof(*kf));
}

/* One row of by_rel or by_abs into *kf: 1 found, 0 not, -1 error.  *abs
 * (by_rel only) gets the registered absolute path. */
static int
store_audit_lookup_one(store_audit_lookup_t *lk, struct store_sql *q,
		       const char *key, struct store_known_file *kf,
		       char **abs)
{
	db_stmt_t *s;
	int rc;

	if ((s = store_stmt(lk->st, q)) == NULL)
		return -1;
	store_bind_path(s, 1, key);
	if ((rc = store_step(lk->st, s)) < 0)
		return -1;
	if (rc != DB_ROW)
		return 0;
	kf->size = db_column_int64(s, 0);
	kf->mtime_ns = db_column_int64(s, 1);
	kf->dev = db_column_int64(s, 2);
	kf->ino = db_column_int64(s, 3);
	if (abs != NULL)
		*abs = store_column_path(s, 4);
	db_reset(s);
	return 1;
}

int
store_audit_lookup_file(store_audit_lookup_t *lk, const char *rel,
			const char *abs, struct store_known_file *kf)
{
	char *known_abs = NULL;
	int rc;

	store_known_file_clear(kf);
	rc = store_audit_lookup_one(lk, lk->v1 ? &q_audit_by_rel_v1 :
	    &q_audit_by_rel, rel, kf, &known_abs);
	if (rc < 0)
		return -1;
	if (rc == 1 && strcmp(known_abs, abs) == 0) {
		free(known_abs);
		kf->found = true;
		return 0;
	}
	if (rc == 1) {
		/* the name is taken by another file: store_file_add refuses
		 * it before it ever looks at the absolute path */
		memset(kf, 0, sizeof(*kf));
		kf->conflict_abs = known_abs;
		return 0;
	}
	rc = store_audit_lookup_one(lk, lk->v1 ? &q_audit_by_abs_v1 :
	    &q_audit_by_abs, abs, kf, NULL);
	if (rc < 0)
		return -1;
	kf->found = rc == 1;
	return 0;
}

void
store_audit_lookup_close(store_audit_lookup_t *lk)
{
	free(lk);
}

static struct store_sql q_audit_lang_missing = STORE_SQL(
	"SELECT count(*) FROM media_files f WHERE NOT EXISTS (SELECT 1 FROM "
	"jobs j WHERE j.file_id = f.file_id AND j.stage = 'translate' AND "
	"j.lang = ?1)");

int
store_audit_lang_missing(store_t *st, const char *lang, int64_t *n)
{
	char norm[CONFIG_LANG_MAX];
	db_stmt_t *s;
	int rc;

	*n = 0;
	if (store_lang_norm(lang, norm) < 0)
		return store_fail(st, "invalid language code \"%.*s\"",
		    CONFIG_LANG_MAX - 1, lang);
	if ((s = store_stmt(st, &q_audit_lang_missing)) == NULL)
		return -1;
	db_bind_text(s, 1, norm);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc == DB_ROW)
		*n = db_column_int64(s, 0);
	db_reset(s);
	return 0;
}

/* ---- the job list ----------------------------------------------------- */

static enum job_status
store_audit_status_parse(const char *s)
{
	for (int i = 0; i < JOB_ST_COUNT; i++)
		if (s != NULL && strcmp(s, job_status_name((enum job_status)i)) == 0)
			return (enum job_status)i;
	return JOB_ST_COUNT;
}

/* Both reads in one read transaction: the count and the list agree even
 * while a farm writes. */
int
store_audit_jobs_load(store_t *st, struct store_audit_jobs *out)
{
	db_t *db = store_db(st);
	db_stmt_t *s = NULL;
	size_t cap = 0;
	int64_t last_file = -1;
	char *rel = NULL, *abs = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (db_begin(db, false) < 0)
		return store_fail_db(st);
	if ((s = db_prepare(db, "SELECT count(*) FROM media_files")) == NULL ||
	    db_step(s) != DB_ROW)
		goto fail;
	out->files = db_column_int64(s, 0);
	db_finalize(s);
	s = NULL;
	if ((s = db_prepare(db, "SELECT j.job_id, j.file_id, j.stage, "
	    "j.lang, j.status, j.owner_pid, f.rel_path, f.abs_path "
	    "FROM jobs j JOIN media_files f "
	    "ON f.file_id = j.file_id ORDER BY j.file_id, j.stage, j.lang"))
	    == NULL)
		goto fail;
	while ((rc = db_step(s)) == DB_ROW) {
		struct store_audit_job *j;
		int64_t file_id = db_column_int64(s, 1);

		if (out->n == cap) {
			cap = cap ? cap * 2 : 1024;
			out->v = xrealloc(out->v, cap * sizeof(*out->v));
		}
		j = &out->v[out->n];
		memset(j, 0, sizeof(*j));
		j->job_id = db_column_int64(s, 0);
		j->stage = job_stage_parse(db_column_text(s, 2));
		snprintf(j->lang, sizeof(j->lang), "%s",
		    db_column_text(s, 3));
		j->status = store_audit_status_parse(
		    db_column_text(s, 4));
		j->owner_pid = (pid_t)db_column_int64(s, 5);
		/* a file's jobs share its paths: a million files with three
		 * languages would otherwise copy each path four times */
		if (file_id != last_file) {
			rel = store_column_path(s, 6);
			abs = store_column_path(s, 7);
			j->owns_paths = true;
			last_file = file_id;
		}
		j->rel = rel;
		j->abs = abs;
		out->n++;
	}
	if (rc != DB_DONE)
		goto fail;
	db_finalize(s);
	db_rollback(db);        /* read only: nothing to keep */
	return 0;
fail:
	store_fail_db(st);
	db_finalize(s);
	db_rollback(db);
	store_audit_jobs_free(out);
	return -1;
}

void
store_audit_jobs_free(struct store_audit_jobs *js)
{
	for (size_t i = 0; i < js->n; i++) {
		if (!js->v[i].owns_paths)
			continue;
		free(js->v[i].rel);
		free(js->v[i].abs);
	}
	free(js->v);
	memset(js, 0, sizeof(*js));
}

/* ---- hand-made changes -------------------------------------------------- */

/* Back to be run: no owner, due now.  The lease stays (the next claim
 * takes the one after it, which no stale worker holds), and the attempts
 * already counted stay counted. */
static struct store_sql q_audit_to_not_started = STORE_SQL(
	"UPDATE jobs SET status = 'not_started', owner_pid = NULL, "
	"owner_master = NULL, run_after = 0, finished_at = NULL, "
	"last_error = CASE WHEN status = 'in-progress' THEN ?3 "
	"ELSE last_error END "
	"WHERE job_id = ?1 AND status = ?2");
static struct store_sql q_audit_to_completed = STORE_SQL(
	"UPDATE jobs SET status = 'completed', owner_pid = NULL, "
	"owner_master = NULL, finished_at = ?3, last_error = NULL "
	"WHERE job_id = ?1 AND status = ?2");
static struct store_sql q_audit_to_failed = STORE_SQL(
	"UPDATE jobs SET status = 'failed', owner_pid = NULL, "
	"owner_master = NULL, finished_at = ?3, last_error = ?4 "
	"WHERE job_id = ?1 AND status = ?2");
/* The attempt an in-progress job was in ends with the change: written
 * from the job row before the change forgets its owner. */
static struct store_sql q_audit_end_attempt = STORE_SQL2(
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, message) SELECT job_id, attempts, owner_pid, "
	"coalesce(started_at, ?2), ?2, ?3, ?4 FROM jobs "
	"WHERE job_id = ?1 AND status = 'in-progress'",
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, message) SELECT job_id, attempts, owner_pid, "
	"coalesce(started_at, ?2::bigint), ?2::bigint, ?3::text, ?4::text "
	"FROM jobs WHERE job_id = ?1 AND status = 'in-progress'");
/* A transcript's translations are ready exactly when it is completed
 * (what the schema's trigger does for changes made outside mpfarm). */
static struct store_sql q_audit_translations_sync = STORE_SQL2(
	"UPDATE jobs SET ready = (SELECT t.status = 'completed' FROM jobs t "
	"WHERE t.job_id = ?1) WHERE stage = 'translate' AND file_id = "
	"(SELECT t.file_id FROM jobs t WHERE t.job_id = ?1 AND "
	"t.stage = 'transcribe')",
	"UPDATE jobs SET ready = (SELECT (t.status = 'completed')::int "
	"FROM jobs t WHERE t.job_id = ?1) WHERE stage = 'translate' AND "
	"file_id = (SELECT t.file_id FROM jobs t WHERE t.job_id = ?1 AND "
	"t.stage = 'transcribe')");

int
store_audit_job_set(store_t *st, int64_t job_id, enum job_status from,
		    enum job_status to, const char *why)
{
	char msg[512];
	int64_t now = time_wall_ms();
	db_stmt_t *s;
	bool own;
	int rc = -1, changed;

	snprintf(msg, sizeof(msg), "mpfarm fix: %s", why ? why : "by hand");
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if (from == JOB_ST_IN_PROGRESS) {
		if ((s = store_stmt(st, &q_audit_end_attempt)) == NULL)
			goto out;
		db_bind_int64(s, 1, job_id);
		db_bind_int64(s, 2, now);
		db_bind_text(s, 3, to == JOB_ST_COMPLETED ? "completed"
		    : "interrupted");
		store_bind_msg(s, 4, msg);
		if (store_run(st, s) < 0)
			goto out;
	}
	switch (to) {
	case JOB_ST_NOT_STARTED:
		s = store_stmt(st, &q_audit_to_not_started);
		break;
	case JOB_ST_COMPLETED:
		s = store_stmt(st, &q_audit_to_completed);
		break;
	case JOB_ST_FAILED:
		s = store_stmt(st, &q_audit_to_failed);
		break;
	default:
		store_fail(st, "internal: cannot set a job to %s by hand",
		    job_status_name(to));
		goto out;
	}
	if (s == NULL)
		goto out;
	db_bind_int64(s, 1, job_id);
	db_bind_text(s, 2, job_status_name(from));
	if (to == JOB_ST_NOT_STARTED)
		store_bind_msg(s, 3, msg);
	else
		db_bind_int64(s, 3, now);
	if (to == JOB_ST_FAILED)
		store_bind_msg(s, 4, msg);
	if (store_run(st, s) < 0)
		goto out;
	changed = db_changes(store_db(st));
	if (changed == 0) {
		rc = 1;
		goto out;
	}
	if (from == JOB_ST_COMPLETED || to == JOB_ST_COMPLETED) {
		if ((s = store_stmt(st, &q_audit_translations_sync)) == NULL)
			goto out;
		db_bind_int64(s, 1, job_id);
		if (store_run(st, s) < 0)
			goto out;
	}
	rc = 0;
out:
	return store_tx_leave(st, own, rc);
}

/* ---- integrity ---------------------------------------------------------- */

int
store_audit_quick_check(store_t *st, char **problem)
{
	return db_integrity_check(store_db(st), problem) < 0 ?
	    store_fail_db(st) : 0;
}

static struct store_sql q_audit_job_rel = STORE_SQL(
	"SELECT m.rel_path FROM jobs j JOIN media_files m USING (file_id) "
	"WHERE j.job_id = ?1");

int
store_audit_job_rel(store_t *st, int64_t job_id, char **rel)
{
	db_stmt_t *s = store_stmt(st, &q_audit_job_rel);
	int step;

	*rel = NULL;
	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, job_id);
	if ((step = store_step(st, s)) < 0)
		return -1;
	if (step == DB_ROW)
		*rel = store_column_path(s, 0);
	db_reset(s);
	return 0;
}

static struct store_sql q_audit_jobs_last = STORE_SQL(
	"SELECT coalesce(max(job_id), 0) FROM jobs");

int
store_audit_jobs_last(store_t *st, int64_t *last)
{
	db_stmt_t *s = store_stmt(st, &q_audit_jobs_last);
	int step;

	*last = 0;
	if (s == NULL)
		return -1;
	if ((step = store_step(st, s)) < 0)
		return -1;
	if (step == DB_ROW)
		*last = db_column_int64(s, 0);
	db_reset(s);
	return 0;
}

static struct store_sql q_audit_in_progress = STORE_SQL(
	"SELECT job_id, stage, lang, owner_pid FROM jobs "
	"WHERE status = 'in-progress'");

int
store_audit_in_progress_each(store_t *st,
    int (*fn)(const struct job_ref *job, pid_t owner, void *arg), void *arg)
{
	db_stmt_t *s = store_stmt(st, &q_audit_in_progress);
	struct job_ref *jobs = NULL;
	pid_t *owners = NULL;
	int n = 0, step, rc = 0;

	if (s == NULL)
		return -1;
	/* collected first: fn may run statements of its own */
	while ((step = store_step(st, s)) == DB_ROW) {
		jobs = xrealloc(jobs, sizeof(*jobs) * (size_t)(n + 1));
		owners = xrealloc(owners, sizeof(*owners) * (size_t)(n + 1));
		jobs[n].job_id = db_column_int64(s, 0);
		jobs[n].stage = job_stage_parse(db_column_text(s, 1));
		snprintf(jobs[n].lang, sizeof(jobs[n].lang), "%s",
		    db_column_text(s, 2));
		owners[n] = (pid_t)db_column_int64(s, 3);
		n++;
	}
	db_reset(s);
	if (step < 0)
		rc = -1;
	for (int i = 0; rc == 0 && i < n; i++)
		if (fn(&jobs[i], owners[i], arg) < 0)
			rc = -1;
	free(jobs);
	free(owners);
	return rc;
}

static struct store_sql q_audit_fail_pending = STORE_SQL(
	"UPDATE jobs SET status = 'failed', last_error = ?1, finished_at = ?4 "
	"WHERE status = 'not_started' AND stage = ?2 AND lang = ?3");

int
store_audit_fail_pending(store_t *st, int stage, const char *lang,
			 const char *why, int64_t *n)
{
	db_stmt_t *s;
	bool own;
	int rc = -1;

	*n = 0;
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_audit_fail_pending)) == NULL)
		goto out;
	store_bind_msg(s, 1, why);
	db_bind_text(s, 2, job_stage_name(stage));
	db_bind_text(s, 3, lang);
	db_bind_int64(s, 4, time_wall_ms());
	if (store_run(st, s) < 0)
		goto out;
	*n = db_changes(store_db(st));
	rc = 0;
out:
	return store_tx_leave(st, own, rc);
}

/* ---- retry ---------------------------------------------------------- */

static struct store_sql q_audit_file_by_abs = STORE_SQL(
	"SELECT file_id FROM media_files WHERE abs_path = ?1");
static struct store_sql q_audit_file_by_rel = STORE_SQL(
	"SELECT file_id FROM media_files WHERE rel_path = ?1");

int
store_audit_file_find(store_t *st, const char *path, bool by_rel,
		      int64_t *file_id)
{
	db_stmt_t *s = store_stmt(st, by_rel ? &q_audit_file_by_rel
	    : &q_audit_file_by_abs);
	int step;

	*file_id = 0;
	if (s == NULL)
		return -1;
	store_bind_path(s, 1, path);
	if ((step = store_step(st, s)) < 0)
		return -1;
	if (step != DB_ROW)
		return 1;
	*file_id = db_column_int64(s, 0);
	db_reset(s);
	return 0;
}

/* Failed jobs are few and reached through the jobs_failed partial index;
 * the order is the listing's, so a one-off statement (not cached). */
static const char q_audit_failed[] =
	"SELECT j.job_id, j.stage, j.lang, j.attempts, j.last_error, "
	"f.abs_path_text FROM jobs j JOIN media_files f USING (file_id) "
	"WHERE j.status = 'failed' AND (?1 IS NULL OR j.stage = ?1) "
	"AND (?2 IS NULL OR j.file_id = ?2) "
	"ORDER BY f.abs_path_text, j.stage, j.lang";
static const char q_audit_failed_pg[] =
	"SELECT j.job_id, j.stage, j.lang, j.attempts, j.last_error, "
	"f.abs_path_text FROM jobs j JOIN media_files f USING (file_id) "
	"WHERE j.status = 'failed' AND (?1::text IS NULL OR j.stage = ?1) "
	"AND (?2::bigint IS NULL OR j.file_id = ?2) "
	"ORDER BY f.abs_path_text, j.stage, j.lang";
/* The reset, fenced on the status: a job a farm changed meanwhile is not
 * touched (and cannot be: the caller holds the write lock). */
static struct store_sql q_audit_retry = STORE_SQL(
	"UPDATE jobs SET status = 'not_started', attempts = 0, run_after = 0, "
	"last_error = NULL, finished_at = NULL "
	"WHERE job_id = ?1 AND status = 'failed'");

static bool
store_audit_lang_in(const char *lang, const char (*langs)[CONFIG_LANG_MAX],
		    int nlangs)
{
	for (int i = 0; i < nlangs; i++)
		if (strcmp(lang, langs[i]) == 0)
			return true;
	return false;
}

static int
store_audit_failed_load(store_t *st, const struct store_retry_filter *f,
			struct store_retry_jobs *out)
{
	db_stmt_t *s = NULL;
	size_t cap = 0;
	int rc;

	if ((s = db_prepare(store_db(st), store_is_pg(st) ? q_audit_failed_pg
	    : q_audit_failed)) == NULL)
		return store_fail_db(st);
	if (f->stage >= 0)
		db_bind_text(s, 1, job_stage_name(f->stage));
	if (f->file_id > 0)
		db_bind_int64(s, 2, f->file_id);
	while ((rc = db_step(s)) == DB_ROW) {
		struct store_retry_job *j;
		const char *lang = db_column_text(s, 2);
		const char *err = db_column_text(s, 4);
		const char *file = db_column_text(s, 5);

		/* a language names translations; transcripts have none */
		if (f->nlangs > 0 && !store_audit_lang_in(lang, f->langs,
		    f->nlangs))
			continue;
		if (out->n == cap) {
			cap = cap ? cap * 2 : 64;
			out->v = xrealloc(out->v, cap * sizeof(*out->v));
		}
		j = &out->v[out->n++];
		memset(j, 0, sizeof(*j));
		j->job_id = db_column_int64(s, 0);
		j->stage = job_stage_parse(db_column_text(s, 1));
		snprintf(j->lang, sizeof(j->lang), "%s", lang);
		j->attempts = db_column_int(s, 3);
		j->last_error = err ? xstrdup(err) : NULL;
		j->file = xstrdup(file ? file : "");
	}
	if (rc != DB_DONE) {
		store_fail_db(st);
		db_finalize(s);
		return -1;
	}
	db_finalize(s);
	return 0;
}

int
store_audit_retry(store_t *st, const struct store_retry_filter *f,
		  bool apply, struct store_retry_jobs *out)
{
	struct store_retry_filter norm = *f;
	char langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	db_stmt_t *s;
	bool own = false;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (f->nlangs > CONFIG_LANGS_MAX)
		return store_fail(st, "too many languages");
	for (int i = 0; i < f->nlangs; i++)
		if (store_lang_norm(f->langs[i], langs[i]) < 0)
			return store_fail(st, "invalid language code \"%.*s\"",
			    CONFIG_LANG_MAX - 1, f->langs[i]);
	norm.langs = (const char (*)[CONFIG_LANG_MAX])langs;
	if (apply && store_tx_enter(st, &own) < 0)
		return -1;
	if (store_audit_failed_load(st, &norm, out) < 0)
		goto out;
	for (size_t i = 0; apply && i < out->n; i++) {
		if ((s = store_stmt(st, &q_audit_retry)) == NULL)
			goto out;
		db_bind_int64(s, 1, out->v[i].job_id);
		if (store_run(st, s) < 0)
			goto out;
	}
	rc = 0;
out:
	if (apply)
		rc = store_tx_leave(st, own, rc);
	if (rc < 0)
		store_audit_retry_free(out);
	return rc;
}

void
store_audit_retry_free(struct store_retry_jobs *js)
{
	for (size_t i = 0; i < js->n; i++) {
		free(js->v[i].file);
		free(js->v[i].last_error);
	}
	free(js->v);
	memset(js, 0, sizeof(*js));
}
