/*
 * common_store_job.c - the life of a job in the store: registering media
 * files and their jobs, and the transitions of a job that succeeds (claim,
 * complete, and settling a completion whose COMMIT got no answer); the
 * other ways an attempt ends are in common_store_end.c.
 * Every transition is one short BEGIN IMMEDIATE transaction fenced by the
 * job's lease, which is what lets crashed, hung and stale workers never
 * publish or record anything for a job that is no longer theirs.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"
#include "common_tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- scan ---------------------------------------------------------- */

/* Columns 1.. of both look-ups: what decides "unchanged". */
#define STORE_FILE_SEEN "size, mtime_ns, coalesce(dev, 0), coalesce(ino, 0), " \
	"coalesce(src_root, x''), coalesce(src_rel, x'')"
#define STORE_FILE_SEEN_PG "size, mtime_ns, coalesce(dev, 0), " \
	"coalesce(ino, 0), coalesce(src_root, ''::bytea), " \
	"coalesce(src_rel, ''::bytea)"
static struct store_sql q_file_by_rel = STORE_SQL2(
	"SELECT file_id, " STORE_FILE_SEEN ", abs_path FROM media_files "
	"WHERE rel_path = ?1",
	"SELECT file_id, " STORE_FILE_SEEN_PG ", abs_path FROM media_files "
	"WHERE rel_path = ?1");
static struct store_sql q_file_by_abs = STORE_SQL2(
	"SELECT file_id, " STORE_FILE_SEEN " FROM media_files "
	"WHERE abs_path = ?1",
	"SELECT file_id, " STORE_FILE_SEEN_PG " FROM media_files "
	"WHERE abs_path = ?1");
/* PostgreSQL has no mpfarm_path_text: ?11 brings the escaped name.  There
 * the new file's jobs go in with it, in one statement (?12: its target
 * languages as an array), since each statement is a round trip to the
 * server: a scan of 10 000 new files took 11 s with one per job, 7 s
 * so; SQLite, in process, adds the jobs one by one (store_file_jobs). */
static struct store_sql q_file_insert = STORE_SQL2(
	"INSERT INTO media_files (scan_root, rel_path, abs_path, size, "
	"mtime_ns, added_at, dev, ino, src_root, src_rel, abs_path_text) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, nullif(?7, 0), nullif(?8, 0), ?9, ?10, "
	"mpfarm_path_text(?3))",
	"WITH f AS (INSERT INTO media_files (scan_root, rel_path, abs_path, "
	"size, mtime_ns, added_at, dev, ino, src_root, src_rel, abs_path_text) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, nullif(?7::bigint, 0), "
	"nullif(?8::bigint, 0), ?9, ?10, ?11) RETURNING file_id), "
	"j AS (INSERT INTO jobs (file_id, stage, lang, ready) "
	"SELECT file_id, 'transcribe', '', 1 FROM f UNION ALL "
	"SELECT file_id, 'translate', l, 0 FROM f, unnest(?12::text[]) AS l "
	"ON CONFLICT DO NOTHING) SELECT file_id FROM f");
static struct store_sql q_file_update = STORE_SQL2(
	"UPDATE media_files SET size = ?2, mtime_ns = ?3, dev = nullif(?4, 0), "
	"ino = nullif(?5, 0), src_root = ?6, src_rel = ?7 WHERE file_id = ?1",
	"UPDATE media_files SET size = ?2, mtime_ns = ?3, "
	"dev = nullif(?4::bigint, 0), ino = nullif(?5::bigint, 0), "
	"src_root = ?6, src_rel = ?7 WHERE file_id = ?1");
static struct store_sql q_file_transcribed = STORE_SQL(
	"SELECT status = 'completed' FROM jobs "
	"WHERE file_id = ?1 AND stage = 'transcribe' AND lang = ''");
static struct store_sql q_job_insert = STORE_SQL(
	"INSERT INTO jobs (file_id, stage, lang, ready) VALUES (?1, ?2, ?3, ?4) "
	"ON CONFLICT DO NOTHING");
/* PostgreSQL: a known file's jobs in one round trip (?2: its target
 * languages as an array), translations ready behind a completed
 * transcript. */
static struct store_sql q_file_jobs = STORE_SQL2("SELECT NULL",
	"INSERT INTO jobs (file_id, stage, lang, ready) "
	"SELECT ?1::bigint, 'transcribe', '', 1 UNION ALL "
	"SELECT ?1::bigint, 'translate', l, coalesce((SELECT "
	"(status = 'completed')::int FROM jobs WHERE file_id = ?1::bigint AND "
	"stage = 'transcribe' AND lang = ''), 0) "
	"FROM unnest(?2::text[]) AS l ON CONFLICT DO NOTHING");
/* The running attempts end with the change (the rows the claims did not
 * write: see the schema's version 4). */
static struct store_sql q_file_reset_attempts = STORE_SQL2(
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, message) SELECT job_id, attempts, owner_pid, "
	"coalesce(started_at, ?2), ?2, 'interrupted', "
	"'media file changed on disk' FROM jobs "
	"WHERE file_id = ?1 AND status = 'in-progress'",
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome, message) SELECT job_id, attempts, owner_pid, "
	"coalesce(started_at, ?2::bigint), ?2::bigint, 'interrupted', "
	"'media file changed on disk' FROM jobs "
	"WHERE file_id = ?1 AND status = 'in-progress'");
static struct store_sql q_file_reset_jobs = STORE_SQL2(
	"UPDATE jobs SET status = 'not_started', ready = (stage = 'transcribe'), "
	"attempts = 0, run_after = 0, owner_pid = NULL, owner_master = NULL, "
	"started_at = NULL, finished_at = NULL, last_error = NULL "
	"WHERE file_id = ?1",
	"UPDATE jobs SET status = 'not_started', "
	"ready = (stage = 'transcribe')::int, attempts = 0, run_after = 0, "
	"owner_pid = NULL, owner_master = NULL, owner_host = NULL, "
	"started_at = NULL, finished_at = NULL, last_error = NULL "
	"WHERE file_id = ?1");

static int
store_norm_langs(store_t *st, const char (*in)[CONFIG_LANG_MAX], int n,
		 char (*out)[CONFIG_LANG_MAX])
{
	for (int i = 0; i < n; i++)
		if (store_lang_norm(in[i], out[i]) < 0)
			return store_fail(st, "invalid language code \"%.*s\"",
			    CONFIG_LANG_MAX - 1, in[i]);
	return 0;
}

/* "{en,de}": normalized language codes ([a-z0-9_-]) need no quoting in
 * a PostgreSQL array. */
static char *
store_lang_array(char (*langs)[CONFIG_LANG_MAX], int n)
{
	struct buf b;

	buf_init(&b);
	buf_append(&b, "{", 1);
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%s%s", i ? "," : "", langs[i]);
	buf_append(&b, "}", 1);
	buf_terminate(&b);
	return b.data;
}

/* The file's jobs: the transcription and one per language (existing ones
 * are kept as they are).  A file just added has no transcript yet, so
 * its translations wait without asking. */
static int
store_file_jobs(store_t *st, int64_t file_id, char (*langs)[CONFIG_LANG_MAX],
		int nlangs, bool added)
{
	db_stmt_t *s;
	int ready = 0, rc;

	if (store_is_pg(st)) {
		char *a = store_lang_array(langs, nlangs);
		if ((s = store_stmt(st, &q_file_jobs)) == NULL) {
			free(a);
			return -1;
		}
		db_bind_int64(s, 1, file_id);
		db_bind_text(s, 2, a);
		free(a);
		return store_run(st, s);
	}
	for (int i = -1; i < nlangs; i++) {
		if ((s = store_stmt(st, &q_job_insert)) == NULL)
			return -1;
		db_bind_int64(s, 1, file_id);
		db_bind_text(s, 2, job_stage_name(i < 0 ? STAGE_TRANSCRIBE :
		    STAGE_TRANSLATE));
		db_bind_text(s, 3, i < 0 ? "" : langs[i]);
		db_bind_int64(s, 4, i < 0 ? 1 : ready);
		if (store_run(st, s) < 0)
			return -1;
		if (i >= 0 || added)
			continue;
		/* translations are ready only behind a completed transcript */
		if ((s = store_stmt(st, &q_file_transcribed)) == NULL)
			return -1;
		db_bind_int64(s, 1, file_id);
		if ((rc = store_step(st, s)) < 0)
			return -1;
		if (rc == DB_ROW) {
			ready = db_column_int(s, 0);
			db_reset(s);
		}
	}
	return 0;
}

/* A known file whose size or mtime changed is a new recording under an
 * old name: its outputs are stale, so every job starts again, and a
 * worker still busy with one loses it at completion (status check). */
static int
store_file_update(store_t *st, int64_t file_id, const struct media_file *mf)
{
	db_stmt_t *s;

	if ((s = store_stmt(st, &q_file_update)) == NULL)
		return -1;
	db_bind_int64(s, 1, file_id);
	db_bind_int64(s, 2, mf->size);
	db_bind_int64(s, 3, mf->mtime_ns);
	db_bind_int64(s, 4, mf->dev);
	db_bind_int64(s, 5, mf->ino);
	if (mf->src_root != NULL && mf->src_rel != NULL) {
		store_bind_path(s, 6, mf->src_root);
		store_bind_path(s, 7, mf->src_rel);
	}
	return store_run(st, s);
}

static int
store_file_reset(store_t *st, int64_t file_id, const struct media_file *mf)
{
	db_stmt_t *s;

	if (store_file_update(st, file_id, mf) < 0)
		return -1;
	if ((s = store_stmt(st, &q_file_reset_attempts)) == NULL)
		return -1;
	db_bind_int64(s, 1, file_id);
	db_bind_int64(s, 2, time_wall_ms());
	if (store_run(st, s) < 0)
		return -1;
	if ((s = store_stmt(st, &q_file_reset_jobs)) == NULL)
		return -1;
	db_bind_int64(s, 1, file_id);
	return store_run(st, s);
}

/* What the scan saw of a registered file, from q_file_by_rel/by_abs. */
struct store_file_seen {
	int64_t size, mtime_ns, dev, ino;
	char   *src_root, *src_rel;     /* "" when not a followed link */
};

static void
store_file_seen_read(db_stmt_t *s, struct store_file_seen *fs)
{
	fs->size = db_column_int64(s, 1);
	fs->mtime_ns = db_column_int64(s, 2);
	fs->dev = db_column_int64(s, 3);
	fs->ino = db_column_int64(s, 4);
	fs->src_root = store_column_path(s, 5);
	fs->src_rel = store_column_path(s, 6);
}

/* 0 unchanged, 1 changed, 2 unchanged but the device and inode were never
 * recorded (a row from schema 1: filled in without a reset). */
static int
store_file_seen_cmp(const struct store_file_seen *fs,
		    const struct media_file *mf)
{
	const char *root = mf->src_root ? mf->src_root : "";
	const char *rel = mf->src_rel ? mf->src_rel : "";

	if (fs->size != mf->size || fs->mtime_ns != mf->mtime_ns ||
	    strcmp(fs->src_root, root) != 0 || strcmp(fs->src_rel, rel) != 0)
		return 1;
	if (fs->ino == 0)
		return mf->ino != 0 ? 2 : 0;
	if (mf->ino == 0)       /* a shared root ([roots]): not compared */
		return 0;
	return fs->dev != mf->dev || fs->ino != mf->ino;
}

int
store_file_add(store_t *st, const struct media_file *mf,
	       const char (*langs)[CONFIG_LANG_MAX], int nlangs,
	       enum store_add_result *res, char **conflict_abs)
{
	char norm[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	struct store_file_seen fs = { 0 };
	int64_t file_id = 0;
	db_stmt_t *s;
	bool own, known = false;
	int step, cmp, rc = -1;

	*res = STORE_ADDED;
	if (conflict_abs)
		*conflict_abs = NULL;
	if (nlangs > CONFIG_LANGS_MAX)
		nlangs = CONFIG_LANGS_MAX;
	if (store_norm_langs(st, langs, nlangs, norm) < 0)
		return -1;
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_file_by_rel)) == NULL)
		goto out;
	store_bind_path(s, 1, mf->rel);
	if ((step = store_step(st, s)) < 0)
		goto out;
	if (step == DB_ROW) {
		char *abs = store_column_path(s, 7);
		known = true;
		file_id = db_column_int64(s, 0);
		store_file_seen_read(s, &fs);
		db_reset(s);
		if (strcmp(abs, mf->abs) != 0) {
			/* outputs are named by rel: two files cannot share one */
			*res = STORE_CONFLICT;
			if (conflict_abs)
				*conflict_abs = abs;
			else
				free(abs);
			rc = 0;
			goto out;
		}
		free(abs);
	} else {
		/* the same file scanned from another root keeps its first
		 * name, so its outputs do not move */
		if ((s = store_stmt(st, &q_file_by_abs)) == NULL)
			goto out;
		store_bind_path(s, 1, mf->abs);
		if ((step = store_step(st, s)) < 0)
			goto out;
		if (step == DB_ROW) {
			known = true;
			file_id = db_column_int64(s, 0);
			store_file_seen_read(s, &fs);
			db_reset(s);
		}
	}
	if (!known) {
		if ((s = store_stmt(st, &q_file_insert)) == NULL)
			goto out;
		store_bind_path(s, 1, mf->root);
		store_bind_path(s, 2, mf->rel);
		store_bind_path(s, 3, mf->abs);
		db_bind_int64(s, 4, mf->size);
		db_bind_int64(s, 5, mf->mtime_ns);
		db_bind_int64(s, 6, time_wall_ms());
		db_bind_int64(s, 7, mf->dev);
		db_bind_int64(s, 8, mf->ino);
		if (mf->src_root != NULL && mf->src_rel != NULL) {
			store_bind_path(s, 9, mf->src_root);
			store_bind_path(s, 10, mf->src_rel);
		}
		if (store_is_pg(st)) {
			char *t = text_escape(mf->abs, strlen(mf->abs),
			    TEXT_ESCAPE_PATH), *a = store_lang_array(norm, nlangs);
			db_bind_text(s, 11, t);
			db_bind_text(s, 12, a);
			free(t);
			free(a);
		}
		/* PostgreSQL returns the new id; SQLite has it at hand */
		if ((step = store_step(st, s)) < 0)
			goto out;
		file_id = step == DB_ROW ? db_column_int64(s, 0)
		    : db_last_insert_id(store_db(st));
		if (step == DB_ROW && store_run(st, s) < 0)
			goto out;
		if (store_is_pg(st)) {
			rc = 0;         /* its jobs went in with it */
			goto out;
		}
	} else if ((cmp = store_file_seen_cmp(&fs, mf)) != 1) {
		*res = STORE_UNCHANGED;
		if (cmp == 2 && store_file_update(st, file_id, mf) < 0)
			goto out;
	} else {
		*res = STORE_CHANGED;
		if (store_file_reset(st, file_id, mf) < 0)
			goto out;
	}
	rc = store_file_jobs(st, file_id, norm, nlangs, !known);
out:
	free(fs.src_root);
	free(fs.src_rel);
	return store_tx_leave(st, own, rc);
}

/* ---- complete --------------------------------------------------- */

/* The fence of a completion: no row when the lease is not held. */
static struct store_sql q_attempt_done = STORE_SQL2(
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome) SELECT job_id, attempts, owner_pid, started_at, ?3, "
	"'completed' FROM jobs "
	"WHERE job_id = ?1 AND lease = ?2 AND status = 'in-progress'",
	"INSERT INTO attempts (job_id, attempt, worker_pid, started_at, "
	"ended_at, outcome) SELECT job_id, attempts, owner_pid, started_at, "
	"?3::bigint, 'completed' FROM jobs "
	"WHERE job_id = ?1 AND lease = ?2 AND status = 'in-progress'");
static struct store_sql q_complete = STORE_SQL(
	"UPDATE jobs SET status = 'completed', finished_at = ?3, "
	"owner_pid = NULL, owner_master = NULL, last_error = NULL "
	"WHERE job_id = ?1 AND lease = ?2 AND status = 'in-progress'");
/* What the trigger would do, for a transcript just completed. */
static struct store_sql q_translations_ready = STORE_SQL(
	"UPDATE jobs SET ready = 1 "
	"WHERE file_id = ?1 AND stage = 'translate' AND ready = 0");


void
job_clear(struct job *j)
{
	free(j->abs_path);
	free(j->rel_path);
	free(j->open_root);
	free(j->open_rel);
	memset(j, 0, sizeof(*j));
}

static bool
store_same_dir(const char *a, const char *b)
{
	const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
	size_t la = sa ? (size_t)(sa - a) : 0, lb = sb ? (size_t)(sb - b) : 0;

	return la == lb && memcmp(a, b, la) == 0;
}

/* Under the write lock and only for the lease holder: that is the fence
 * that keeps a stale worker from replacing a newer worker's output. */
int
store_job_complete(store_t *st, const struct job *j,
		   const struct tree_temp *out,
		   int n, bool durable)
{
	int64_t now = time_wall_ms();
	db_stmt_t *s;
	int rc = -1, moved = 0;
	bool own = true;

	if (store_tx_enter(st, &own) < 0)
		goto out;
	for (int k = 0; k < 2; k++) {
		/* the attempt row first: it reads the owner the job row
		 * forgets */
		if ((s = store_stmt(st, k ? &q_complete : &q_attempt_done)) ==
		    NULL)
			goto out;
		db_bind_int64(s, 1, j->job_id);
		db_bind_int64(s, 2, j->lease);
		db_bind_int64(s, 3, now);
		if (store_run(st, s) < 0)
			goto out;
		if (db_changes(store_db(st)) == 0) {
			rc = 1;         /* lease lost: not ours to publish */
			goto out;
		}
	}
	if (j->stage == STAGE_TRANSCRIBE) {
		if ((s = store_stmt(st, &q_translations_ready)) == NULL)
			goto out;
		db_bind_int64(s, 1, j->file_id);
		if (store_run(st, s) < 0)
			goto out;
	}
	/* renamed inside the folder the worker verified: no link between */
	for (; moved < n; moved++)
		if (tree_temp_publish(&out[moved]) < 0) {
			store_fail(st, "cannot publish %s: %s", out[moved].path,
			    strerror(errno));
			goto out;
		}
	for (int i = 0; durable && i < n; i++) {
		bool seen = false;
		for (int k = 0; k < i; k++)
			seen = seen || store_same_dir(out[k].path, out[i].path);
		if (!seen && fsync(out[i].dirfd) < 0) {
			store_fail(st, "cannot sync the folder of %s: %s",
			    out[i].path, strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	rc = store_tx_leave(st, own, rc);
	if (rc < 0 && store_err_transient(st))
		/* the database went away: whether this committed is read back
		 * (store_job_settle), the outputs wait for the answer */
		return rc;
	for (int i = 0; i < n; i++) {
		/* whole or not at all: a job not marked completed keeps none
		 * of the outputs this call published */
		if (rc != 0 && i < moved)
			tree_temp_unpublish(&out[i]);
		else if (rc != 0)
			(void)unlinkat(out[i].dirfd, out[i].tmp, 0);
	}
	return rc;
}

static struct store_sql q_settle = STORE_SQL(
	"SELECT status, lease FROM jobs WHERE job_id = ?1");

int
store_job_settle(store_t *st, const struct job *j)
{
	db_stmt_t *s = store_stmt(st, &q_settle);
	int step, rc = 2;

	if (s == NULL)
		return -1;
	db_bind_int64(s, 1, j->job_id);
	step = store_step(st, s);
	if (step < 0)
		return -1;
	if (step == DB_ROW && db_column_int64(s, 1) == j->lease) {
		const char *status = db_column_text(s, 0);
		if (status != NULL && strcmp(status, "completed") == 0)
			rc = 0;
		else if (status != NULL && strcmp(status, "in-progress") == 0)
			rc = 1;
	}
	db_reset(s);
	return rc;
}
