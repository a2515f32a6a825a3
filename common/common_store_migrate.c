/*
 * common_store_migrate.c - the copy under `mpfarm migrate`: a SQLite farm
 * (settings, files, jobs, attempts) into an empty PostgreSQL farm of the
 * same schema version, row for row with the same ids, in one transaction
 * on each side (a snapshot read, one write), then the target's sequences
 * moved past the copied ids so new files, jobs and leases never collide
 * with old ones.  Each table's columns are listed once, with the type the
 * value travels as; the two schemas agree on everything else.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store_migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mig_type { MIG_INT, MIG_TEXT, MIG_BLOB };

struct mig_col {
	const char   *name;
	enum mig_type type;
};

struct mig_table {
	const char *name;
	const struct mig_col *cols;
	int ncols;
	const char *skip;           /* WHERE that leaves rows out, or NULL */
};

static const struct mig_col mig_settings[] = {
	{ "key", MIG_TEXT }, { "value", MIG_TEXT },
};
static const struct mig_col mig_files[] = {
	{ "file_id", MIG_INT }, { "scan_root", MIG_BLOB },
	{ "rel_path", MIG_BLOB }, { "abs_path", MIG_BLOB }, { "size", MIG_INT },
	{ "mtime_ns", MIG_INT }, { "added_at", MIG_INT }, { "dev", MIG_INT },
	{ "ino", MIG_INT }, { "src_root", MIG_BLOB }, { "src_rel", MIG_BLOB },
	{ "abs_path_text", MIG_TEXT },
};
static const struct mig_col mig_jobs[] = {
	{ "job_id", MIG_INT }, { "file_id", MIG_INT }, { "stage", MIG_TEXT },
	{ "lang", MIG_TEXT }, { "status", MIG_TEXT }, { "ready", MIG_INT },
	{ "attempts", MIG_INT }, { "run_after", MIG_INT }, { "lease", MIG_INT },
	{ "owner_pid", MIG_INT }, { "owner_master", MIG_INT },
	{ "started_at", MIG_INT }, { "finished_at", MIG_INT },
	{ "last_error", MIG_TEXT },
};
static const struct mig_col mig_attempts[] = {
	{ "attempt_id", MIG_INT }, { "job_id", MIG_INT }, { "attempt", MIG_INT },
	{ "worker_pid", MIG_INT }, { "started_at", MIG_INT },
	{ "ended_at", MIG_INT }, { "outcome", MIG_TEXT },
	{ "http_status", MIG_INT }, { "exit_code", MIG_INT },
	{ "signal", MIG_INT }, { "message", MIG_TEXT },
};
#define MIG_N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* In STORE_MIGRATE_TABLES order.  The languages are not copied as a
 * setting: store_langs_sync records them on the target and builds its
 * view from them. */
static const struct mig_table mig_tables[STORE_MIGRATE_TABLES] = {
	{ "settings", mig_settings, MIG_N(mig_settings),
	  "key <> 'target_langs'" },
	{ "media_files", mig_files, MIG_N(mig_files), NULL },
	{ "jobs", mig_jobs, MIG_N(mig_jobs), NULL },
	{ "attempts", mig_attempts, MIG_N(mig_attempts), NULL },
};

const char *
store_migrate_table_name(int i)
{
	return i >= 0 && i < STORE_MIGRATE_TABLES ? mig_tables[i].name : "?";
}

/* The target's sequences past every copied id (nextval then returns
 * the max + 1). */
static const char mig_sequences[] =
	"SELECT setval(pg_get_serial_sequence('media_files', 'file_id'), "
	"  coalesce((SELECT max(file_id) FROM media_files), 0) + 1, false);"
	"SELECT setval(pg_get_serial_sequence('jobs', 'job_id'), "
	"  coalesce((SELECT max(job_id) FROM jobs), 0) + 1, false);"
	"SELECT setval('mpfarm_lease', greatest("
	"  coalesce((SELECT max(attempt_id) FROM attempts), 0),"
	"  coalesce((SELECT max(lease) FROM jobs), 0)) + 1, false);";

static int
mig_count(store_t *st, const struct mig_table *t, bool all, int64_t *n)
{
	char *sql = xasprintf("SELECT count(*) FROM %s%s%s", t->name,
	    t->skip && !all ? " WHERE " : "", t->skip && !all ? t->skip : "");
	db_stmt_t *s = db_prepare(store_db(st), sql);
	int rc = -1;

	free(sql);
	if (s == NULL)
		return store_fail_db(st);
	if (db_step(s) == DB_ROW) {
		*n = db_column_int64(s, 0);
		rc = 0;
	} else {
		store_fail_db(st);
	}
	db_finalize(s);
	return rc;
}

int
store_migrate_counts(store_t *st, int64_t n[STORE_MIGRATE_TABLES])
{
	for (int i = 0; i < STORE_MIGRATE_TABLES; i++)
		if (mig_count(st, &mig_tables[i], false, &n[i]) < 0)
			return -1;
	return 0;
}

/* Every row of one table, source to target. */
static int
mig_copy_table(store_t *src, store_t *dst, const struct mig_table *t,
	       store_t **bad)
{
	struct buf sel, ins;
	db_stmt_t *r = NULL, *w = NULL;
	int step, rc = -1;

	buf_init(&sel);
	buf_init(&ins);
	buf_printf(&sel, "SELECT ");
	buf_printf(&ins, "INSERT INTO %s (", t->name);
	for (int c = 0; c < t->ncols; c++) {
		buf_printf(&sel, "%s%s", c ? ", " : "", t->cols[c].name);
		buf_printf(&ins, "%s%s", c ? ", " : "", t->cols[c].name);
	}
	buf_printf(&sel, " FROM %s%s%s ORDER BY 1", t->name,
	    t->skip ? " WHERE " : "", t->skip ? t->skip : "");
	buf_printf(&ins, ") VALUES (");
	for (int c = 0; c < t->ncols; c++)
		buf_printf(&ins, "%s?%d", c ? ", " : "", c + 1);
	buf_printf(&ins, ")");
	if ((r = db_prepare(store_db(src), sel.data)) == NULL) {
		store_fail_db(src);
		*bad = src;
		goto out;
	}
	if ((w = db_prepare(store_db(dst), ins.data)) == NULL) {
		store_fail_db(dst);
		goto out;
	}
	while ((step = db_step(r)) == DB_ROW) {
		db_reset(w);
		for (int c = 0; c < t->ncols; c++) {
			if (db_column_null(r, c)) {
				db_bind_null(w, c + 1);
				continue;
			}
			switch (t->cols[c].type) {
			case MIG_INT:
				db_bind_int64(w, c + 1, db_column_int64(r, c));
				break;
			case MIG_TEXT:
				db_bind_text(w, c + 1, db_column_text(r, c));
				break;
			case MIG_BLOB: {
				size_t len;
				char *b = db_column_bytes(r, c, &len);
				db_bind_blob(w, c + 1, b, len);
				free(b);
				break;
			}
			}
		}
		if (db_run(w) < 0) {
			store_fail(dst, "%s: %s", t->name, db_errmsg(store_db(dst)));
			goto out;
		}
	}
	if (step < 0) {
		store_fail(src, "%s: %s", t->name, db_errmsg(store_db(src)));
		*bad = src;
		goto out;
	}
	rc = 0;
out:
	db_finalize(r);
	db_finalize(w);
	buf_free(&sel);
	buf_free(&ins);
	return rc;
}

int
store_migrate_empty(store_t *dst, bool *empty)
{
	*empty = true;
	for (int i = 1; i < STORE_MIGRATE_TABLES; i++) {
		int64_t n = 0;
		if (mig_count(dst, &mig_tables[i], true, &n) < 0)
			return -1;
		if (n > 0)
			*empty = false;
	}
	return 0;
}

int
store_migrate_copy(store_t *src, store_t *dst, char *err, size_t errlen)
{
	char langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	int nl = 0, rc = -1;
	store_t *bad = src;
	bool empty;

	if (db_begin(store_db(src), false) < 0) {
		store_fail_db(src);
		goto fail;
	}
	if (store_langs_load(src, langs, CONFIG_LANGS_MAX, &nl) < 0)
		goto out_src;
	bad = dst;
	if (store_tx_begin(dst) < 0)
		goto out_src;
	/* checked again under the write: another migrate may have won */
	if (store_migrate_empty(dst, &empty) < 0)
		goto out;
	if (!empty) {
		store_fail(dst, "the target farm is not empty");
		goto out;
	}
	if (db_exec(store_db(dst), "DELETE FROM settings WHERE key <> "
	    "'target_langs'") < 0) {
		store_fail_db(dst);
		goto out;
	}
	for (int i = 0; i < STORE_MIGRATE_TABLES; i++)
		if (mig_copy_table(src, dst, &mig_tables[i], &bad) < 0)
			goto out;
	if (db_exec(store_db(dst), mig_sequences) < 0) {
		store_fail_db(dst);
		goto out;
	}
	/* joins this transaction: the languages and the view they shape
	 * arrive with the rows or not at all */
	if (store_langs_sync(dst, (const char (*)[CONFIG_LANG_MAX])langs,
	    nl) < 0)
		goto out;
	rc = 0;
out:
	rc = store_tx_leave(dst, true, rc);
out_src:
	(void)db_rollback(store_db(src));
fail:
	if (rc < 0)
		snprintf(err, errlen, "%s", store_errmsg(bad));
	return rc;
}
