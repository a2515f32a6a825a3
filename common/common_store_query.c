/*
 * common_store_query.c - the answers people used to get with the sqlite3
 * shell: which jobs failed and why, everything about one file (its jobs
 * and every attempt), and how many attempts ended per minute lately.
 * `mpfarm failed`, `mpfarm show` and the `mpfarm serve` page all read
 * through these functions, so the terminal and the page never disagree,
 * and a later PostgreSQL store only has to provide them again.  Read only.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A text column, "" when NULL; malloc'd. */
static char *
store_column_str(db_stmt_t *s, int col)
{
	const char *t = db_column_text(s, col);
	return xstrdup(t ? (const char *)t : "");
}

static void
store_column_lang(db_stmt_t *s, int col, char out[CONFIG_LANG_MAX])
{
	const char *t = db_column_text(s, col);
	snprintf(out, CONFIG_LANG_MAX, "%s", t ? (const char *)t : "");
}

/* Room for one more element in a growing array of n elements. */
static void *
store_grow(void *v, int n, int *cap, size_t size)
{
	if (n == *cap) {
		*cap = *cap ? *cap * 2 : 8;
		v = xrealloc(v, size * (size_t)*cap);
	}
	return v;
}

/* ---- failed jobs --------------------------------------------------- */

/* ?1 stage or NULL, ?2 lang or NULL, ?3 limit (-1 = all) */
static struct store_sql q_failed = STORE_SQL2(
	"SELECT j.job_id, j.file_id, j.stage, j.lang, j.attempts, "
	"coalesce(j.finished_at, 0), f.abs_path, f.rel_path, "
	"coalesce(j.last_error, '') FROM jobs j "
	"JOIN media_files f ON f.file_id = j.file_id "
	"WHERE j.status = 'failed' AND (?1 IS NULL OR j.stage = ?1) "
	"AND (?2 IS NULL OR j.lang = ?2) "
	"ORDER BY f.rel_path, j.stage = 'translate', j.lang LIMIT ?3",
	"SELECT j.job_id, j.file_id, j.stage, j.lang, j.attempts, "
	"coalesce(j.finished_at, 0), f.abs_path, f.rel_path, "
	"coalesce(j.last_error, '') FROM jobs j "
	"JOIN media_files f ON f.file_id = j.file_id "
	"WHERE j.status = 'failed' AND (?1::text IS NULL OR j.stage = ?1) "
	"AND (?2::text IS NULL OR j.lang = ?2) "
	"ORDER BY f.rel_path, j.stage = 'translate', j.lang "
	"LIMIT nullif(?3::bigint, -1)");
static struct store_sql q_failed_count = STORE_SQL2(
	"SELECT count(*) FROM jobs WHERE status = 'failed' "
	"AND (?1 IS NULL OR stage = ?1) AND (?2 IS NULL OR lang = ?2)",
	"SELECT count(*) FROM jobs WHERE status = 'failed' "
	"AND (?1::text IS NULL OR stage = ?1) "
	"AND (?2::text IS NULL OR lang = ?2)");

static void
store_failed_bind(db_stmt_t *s, int stage, const char *lang)
{
	if (stage >= 0)
		db_bind_text(s, 1, job_stage_name(stage));
	if (lang != NULL && lang[0] != '\0')
		db_bind_text(s, 2, lang);
}

int
store_failed_list(store_t *st, int stage, const char *lang, int max,
		  struct store_failed_job **out, int *n, int64_t *total)
{
	struct store_failed_job *v = NULL;
	db_stmt_t *s;
	int cnt = 0, cap = 0, rc;

	*out = NULL;
	*n = 0;
	if (total != NULL) {
		if ((s = store_stmt(st, &q_failed_count)) == NULL)
			return -1;
		store_failed_bind(s, stage, lang);
		if ((rc = store_step(st, s)) < 0)
			return -1;
		*total = rc == DB_ROW ? db_column_int64(s, 0) : 0;
		db_reset(s);
	}
	if ((s = store_stmt(st, &q_failed)) == NULL)
		return -1;
	store_failed_bind(s, stage, lang);
	db_bind_int64(s, 3, max > 0 ? max : -1);
	while ((rc = store_step(st, s)) == DB_ROW) {
		struct store_failed_job *j;
		v = store_grow(v, cnt, &cap, sizeof(*v));
		j = &v[cnt++];
		memset(j, 0, sizeof(*j));
		j->job_id = db_column_int64(s, 0);
		j->file_id = db_column_int64(s, 1);
		j->stage = job_stage_parse(db_column_text(s, 2));
		store_column_lang(s, 3, j->lang);
		j->attempts = db_column_int(s, 4);
		j->finished_at_ms = db_column_int64(s, 5);
		j->abs_path = store_column_path(s, 6);
		j->rel_path = store_column_path(s, 7);
		j->last_error = store_column_str(s, 8);
	}
	if (rc < 0) {
		store_failed_free(v, cnt);
		return -1;
	}
	*out = v;
	*n = cnt;
	return 0;
}

void
store_failed_free(struct store_failed_job *v, int n)
{
	for (int i = 0; i < n; i++) {
		free(v[i].abs_path);
		free(v[i].rel_path);
		free(v[i].last_error);
	}
	free(v);
}

/* ---- one file ------------------------------------------------------ */

static struct store_sql q_file_by_abs = STORE_SQL(
	"SELECT file_id FROM media_files WHERE abs_path = ?1");
static struct store_sql q_file_by_rel = STORE_SQL(
	"SELECT file_id FROM media_files WHERE rel_path = ?1");
static struct store_sql q_file_by_id = STORE_SQL(
	"SELECT file_id FROM media_files WHERE file_id = ?1");

/* 0 found, 1 not, -1 error; path bound as a BLOB like the stored ones. */
static int
store_file_lookup(store_t *st, struct store_sql *q, const char *path,
		  int64_t id, int64_t *file_id)
{
	db_stmt_t *s = store_stmt(st, q);
	int rc;

	if (s == NULL)
		return -1;
	if (path != NULL)
		store_bind_path(s, 1, path);
	else
		db_bind_int64(s, 1, id);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc != DB_ROW)
		return 1;
	*file_id = db_column_int64(s, 0);
	db_reset(s);
	return 0;
}

static bool
store_is_decimal(const char *s)
{
	if (*s == '\0' || strlen(s) > 18)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

int
store_file_find(store_t *st, const char *what, int64_t *file_id)
{
	char *real = realpath(what, NULL), *joined = NULL, cwd[PATH_MAX];
	int rc;

	rc = store_file_lookup(st, &q_file_by_abs, what, 0, file_id);
	if (rc == 1 && real != NULL)
		rc = store_file_lookup(st, &q_file_by_abs, real, 0, file_id);
	/* a file gone from disk has no realpath: join it to the cwd */
	if (rc == 1 && what[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL) {
		const char *w = strncmp(what, "./", 2) == 0 ? what + 2 : what;
		joined = xasprintf("%s/%s", cwd, w);
		rc = store_file_lookup(st, &q_file_by_abs, joined, 0, file_id);
	}
	if (rc == 1)
		rc = store_file_lookup(st, &q_file_by_rel, what, 0, file_id);
	if (rc == 1 && store_is_decimal(what))
		rc = store_file_lookup(st, &q_file_by_id, NULL,
		    strtoll(what, NULL, 10), file_id);
	free(real);
	free(joined);
	return rc;
}

static struct store_sql q_file_get = STORE_SQL(
	"SELECT abs_path, rel_path, scan_root, size, mtime_ns, added_at "
	"FROM media_files WHERE file_id = ?1");
static struct store_sql q_file_jobs = STORE_SQL(
	"SELECT job_id, stage, lang, status, attempts, coalesce(started_at, 0), "
	"coalesce(finished_at, 0), coalesce(last_error, '') FROM jobs "
	"WHERE file_id = ?1 ORDER BY stage = 'translate', lang");
/* The ended attempts, then the running one: that is the job row itself
 * (its attempt row is written when it ends, see the schema's version 4).
 * A row still open from before version 4 shows as running too. */
static struct store_sql q_job_attempts = STORE_SQL(
	"SELECT attempt, coalesce(worker_pid, 0), started_at, "
	"coalesce(ended_at, 0), coalesce(outcome, ''), coalesce(http_status, 0), "
	"coalesce(exit_code, -1), coalesce(signal, 0), coalesce(message, ''), "
	"attempt_id FROM attempts WHERE job_id = ?1 "
	"UNION ALL SELECT attempts, coalesce(owner_pid, 0), "
	"coalesce(started_at, 0), 0, '', 0, -1, 0, '', 9223372036854775807 "
	"FROM jobs WHERE job_id = ?1 AND status = 'in-progress' ORDER BY 10");

static int
store_job_tries(store_t *st, struct store_file_job *j)
{
	db_stmt_t *s = store_stmt(st, &q_job_attempts);
	int rc, cap = 0;

	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, j->job_id);
	while ((rc = store_step(st, s)) == DB_ROW) {
		struct store_attempt *a;
		j->tries = store_grow(j->tries, j->ntries, &cap, sizeof(*a));
		a = &j->tries[j->ntries++];
		a->attempt = db_column_int(s, 0);
		a->worker_pid = db_column_int64(s, 1);
		a->started_at_ms = db_column_int64(s, 2);
		a->ended_at_ms = db_column_int64(s, 3);
		a->outcome = store_column_str(s, 4);
		a->http_status = db_column_int(s, 5);
		a->exit_code = db_column_int(s, 6);
		a->signal = db_column_int(s, 7);
		a->message = store_column_str(s, 8);
	}
	return rc < 0 ? -1 : 0;
}

int
store_file_get(store_t *st, int64_t file_id, struct store_file *f)
{
	db_stmt_t *s;
	int rc, cap = 0;

	memset(f, 0, sizeof(*f));
	f->file_id = file_id;
	if ((s = store_stmt(st, &q_file_get)) == NULL)
		return -1;
	db_bind_int64(s, 1, file_id);
	if ((rc = store_step(st, s)) != DB_ROW)
		return rc < 0 ? -1 : 1;
	f->abs_path = store_column_path(s, 0);
	f->rel_path = store_column_path(s, 1);
	f->scan_root = store_column_path(s, 2);
	f->size = db_column_int64(s, 3);
	f->mtime_ns = db_column_int64(s, 4);
	f->added_at_ms = db_column_int64(s, 5);
	db_reset(s);

	if ((s = store_stmt(st, &q_file_jobs)) == NULL)
		return -1;
	db_bind_int64(s, 1, file_id);
	while ((rc = store_step(st, s)) == DB_ROW) {
		struct store_file_job *j;
		f->jobs = store_grow(f->jobs, f->njobs, &cap, sizeof(*j));
		j = &f->jobs[f->njobs++];
		memset(j, 0, sizeof(*j));
		j->job_id = db_column_int64(s, 0);
		j->stage = job_stage_parse(db_column_text(s, 1));
		store_column_lang(s, 2, j->lang);
		snprintf(j->status, sizeof(j->status), "%s",
		    db_column_text(s, 3));
		j->attempts = db_column_int(s, 4);
		j->started_at_ms = db_column_int64(s, 5);
		j->finished_at_ms = db_column_int64(s, 6);
		j->last_error = store_column_str(s, 7);
	}
	if (rc < 0)
		return -1;
	/* after the jobs statement is done: one statement steps at a time */
	for (int i = 0; i < f->njobs; i++)
		if (store_job_tries(st, &f->jobs[i]) < 0)
			return -1;
	return 0;
}

void
store_file_free(struct store_file *f)
{
	for (int i = 0; i < f->njobs; i++) {
		struct store_file_job *j = &f->jobs[i];
		for (int k = 0; k < j->ntries; k++) {
			free(j->tries[k].outcome);
			free(j->tries[k].message);
		}
		free(j->tries);
		free(j->last_error);
	}
	free(f->jobs);
	free(f->abs_path);
	free(f->rel_path);
	free(f->scan_root);
	memset(f, 0, sizeof(*f));
}

static struct store_sql q_job_file = STORE_SQL(
	"SELECT f.file_id, f.rel_path FROM jobs j JOIN media_files f "
	"ON f.file_id = j.file_id WHERE j.job_id = ?1");

int
store_job_file_get(store_t *st, int64_t job_id, int64_t *file_id,
		   char **rel_path)
{
	db_stmt_t *s = store_stmt(st, &q_job_file);
	int rc;

	*rel_path = NULL;
	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, job_id);
	if ((rc = store_step(st, s)) != DB_ROW)
		return rc < 0 ? -1 : 1;
	*file_id = db_column_int64(s, 0);
	*rel_path = store_column_path(s, 1);
	db_reset(s);
	return 0;
}

/* ---- throughput ---------------------------------------------------- */

/* ?1 first minute's start, ?2 now.  Scans the attempts log (no index on
 * ended_at in schema 1): fine for the page's refresh of a few seconds. */
static struct store_sql q_throughput = STORE_SQL2(
	"SELECT (ended_at - ?1) / 60000, sum(outcome = 'completed'), "
	"sum(outcome NOT IN ('completed', 'rate_limited', 'interrupted')) "
	"FROM attempts WHERE ended_at >= ?1 AND ended_at < ?2 GROUP BY 1",
	"SELECT (ended_at - ?1::bigint) / 60000, "
	"count(*) FILTER (WHERE outcome = 'completed'), "
	"count(*) FILTER (WHERE outcome NOT IN ('completed', 'rate_limited', "
	"'interrupted')) "
	"FROM attempts WHERE ended_at >= ?1 AND ended_at < ?2 GROUP BY 1");

int
store_throughput_get(store_t *st, int64_t now_ms, int minutes,
		     int64_t *completed, int64_t *failed)
{
	db_stmt_t *s = store_stmt(st, &q_throughput);
	int64_t from = now_ms - (int64_t)minutes * 60000;
	int rc;

	for (int i = 0; i < minutes; i++)
		completed[i] = failed[i] = 0;
	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, from);
	db_bind_int64(s, 2, now_ms);
	while ((rc = store_step(st, s)) == DB_ROW) {
		int64_t m = db_column_int64(s, 0);
		if (m < 0 || m >= minutes)
			continue;
		completed[m] = db_column_int64(s, 1);
		failed[m] = db_column_int64(s, 2);
	}
	return rc < 0 ? -1 : 0;
}
