/*
 * common_store_report.c - what there is to do and how far along it is:
 * the target languages and the processing_status view users query with
 * the sqlite3 shell, the runnable jobs the master hands out and the counts
 * behind `mpfarm status` (`mpfarm retry` is in common_store_audit.c).
 * Everything here reads
 * through the indexes made for it (see the schema in common_store.c), so
 * it stays fast with a million files.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_VIEW "processing_status"

/* ---- languages and the view ---------------------------------------- */

static struct store_sql q_view_exists = STORE_SQL2(
	"SELECT count(*) FROM sqlite_master "
	"WHERE type = 'view' AND name = '" STORE_VIEW "'",
	"SELECT count(*) FROM pg_catalog.pg_views "
	"WHERE schemaname = current_schema() AND viewname = '" STORE_VIEW "'");

static int
store_view_exists(store_t *st, bool *yes)
{
	db_stmt_t *s = store_stmt(st, &q_view_exists);
	int step;

	*yes = false;
	if (s == NULL || (step = store_step(st, s)) < 0)
		return -1;
	if (step == DB_ROW) {
		*yes = db_column_int(s, 0) > 0;
		db_reset(s);
	}
	return 0;
}

static struct store_sql q_langs_get = STORE_SQL(
	"SELECT value FROM settings WHERE key = 'target_langs'");
static struct store_sql q_langs_put = STORE_SQL2(
	"INSERT OR REPLACE INTO settings (key, value) "
	"VALUES ('target_langs', ?1)",
	"INSERT INTO settings (key, value) VALUES ('target_langs', ?1) "
	"ON CONFLICT (key) DO UPDATE SET value = excluded.value");
/* New language: a job for every file, ready if its transcript is done. */
static struct store_sql q_langs_jobs = STORE_SQL2(
	"INSERT INTO jobs (file_id, stage, lang, ready) "
	"SELECT f.file_id, 'translate', ?1, coalesce((SELECT t.status = "
	"'completed' FROM jobs t WHERE t.file_id = f.file_id AND "
	"t.stage = 'transcribe' AND t.lang = ''), 0) "
	"FROM media_files f WHERE true ON CONFLICT DO NOTHING",
	"INSERT INTO jobs (file_id, stage, lang, ready) "
	"SELECT f.file_id, 'translate', ?1::text, coalesce((SELECT "
	"(t.status = 'completed')::int FROM jobs t WHERE t.file_id = "
	"f.file_id AND t.stage = 'transcribe' AND t.lang = ''), 0) "
	"FROM media_files f WHERE true ON CONFLICT DO NOTHING");

static struct store_sql q_setting_get = STORE_SQL(
	"SELECT value FROM settings WHERE key = ?1");
static struct store_sql q_setting_add = STORE_SQL(
	"INSERT INTO settings (key, value) VALUES (?1, ?2) "
	"ON CONFLICT (key) DO NOTHING");

int
store_setting_get(store_t *st, const char *key, char **value)
{
	db_stmt_t *s = store_stmt(st, &q_setting_get);
	int rc;

	*value = NULL;
	if (s == NULL)
		return -1;
	db_bind_text(s, 1, key);
	if ((rc = store_step(st, s)) < 0)
		return -1;
	if (rc != DB_ROW)
		return 1;
	*value = xstrdup(db_column_text(s, 0));
	db_reset(s);
	return 0;
}

int
store_setting_add(store_t *st, const char *key, const char *value)
{
	db_stmt_t *s;
	bool own;
	int rc = -1;

	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_setting_add)) != NULL) {
		db_bind_text(s, 1, key);
		db_bind_text(s, 2, value);
		rc = store_run(st, s);
	}
	return store_tx_leave(st, own, rc);
}

/* The stored list as one comma-separated string ("" when none). */
static int
store_langs_text(store_t *st, char *out, size_t outlen, bool *found)
{
	db_stmt_t *s = store_stmt(st, &q_langs_get);
	int rc;

	*found = false;
	out[0] = '\0';
	if (s == NULL || (rc = store_step(st, s)) < 0)
		return -1;
	if (rc == DB_ROW) {
		*found = true;
		snprintf(out, outlen, "%s", db_column_text(s, 0));
		db_reset(s);
	}
	return 0;
}

int
store_langs_load(store_t *st, char (*langs)[CONFIG_LANG_MAX], int max,
		 int *n)
{
	char text[CONFIG_LANGS_MAX * CONFIG_LANG_MAX];
	bool found;

	*n = 0;
	if (store_langs_text(st, text, sizeof(text), &found) < 0)
		return -1;
	for (char *save = NULL, *w = strtok_r(text, ",", &save);
	    w != NULL && *n < max; w = strtok_r(NULL, ",", &save))
		if (store_lang_norm(w, langs[*n]) == 0)
			(*n)++;
	return 0;
}

/*
 * The view users query with the sqlite3 shell.  Per file, `status` sums up
 * its transcription and its configured translations:
 *   completed   every one of those jobs is completed;
 *   failed      otherwise, if any of them failed (needs mpfarm retry);
 *   in-progress otherwise, if any is running or some are completed;
 *   not_started otherwise.
 * Each column is a correlated lookup on jobs' (file_id, stage, lang) key,
 * so a query reading only transcription_status costs one index probe per
 * file.  file_path is the name escaped into valid UTF-8 (text_escape:
 * every SQL client decodes the whole view); file_path_bytes, last so that
 * the older tooling's column positions hold, is the exact name as a BLOB.
 * Language codes were checked by store_lang_norm, so putting them
 * into literals and quoted identifiers is safe.
 */
static int
store_view_build(store_t *st, char (*langs)[CONFIG_LANG_MAX], int n)
{
	/* PostgreSQL sums no booleans: it counts with a filter */
	const char *sum_a = "sum(", *sum_b = ")";
	struct buf b;
	int rc;

	if (store_is_pg(st)) {
		sum_a = "count(*) FILTER (WHERE ";
		sum_b = ")";
	}
	buf_init(&b);
	buf_printf(&b, "DROP VIEW IF EXISTS " STORE_VIEW "; "
	    "CREATE VIEW " STORE_VIEW " AS SELECT f.file_id AS file_id, "
	    "f.abs_path_text AS file_path, "
	    "(SELECT CASE WHEN count(*) = 0 THEN 'not_started' "
	    "WHEN %sj.status = 'completed'%s = count(*) THEN 'completed' "
	    "WHEN %sj.status = 'failed'%s > 0 THEN 'failed' "
	    "WHEN %sj.status IN ('in-progress', 'completed')%s > 0 "
	    "THEN 'in-progress' ELSE 'not_started' END "
	    "FROM jobs j WHERE j.file_id = f.file_id AND (j.stage = 'transcribe'",
	    sum_a, sum_b, sum_a, sum_b, sum_a, sum_b);
	if (n > 0) {
		buf_printf(&b, " OR (j.stage = 'translate' AND j.lang IN (");
		for (int i = 0; i < n; i++)
			buf_printf(&b, "%s'%s'", i ? ", " : "", langs[i]);
		buf_printf(&b, "))");
	}
	buf_printf(&b, ")) AS status, (SELECT j.status FROM jobs j WHERE "
	    "j.file_id = f.file_id AND j.stage = 'transcribe' AND j.lang = '') "
	    "AS transcription_status");
	for (int i = 0; i < n; i++)
		buf_printf(&b, ", (SELECT j.status FROM jobs j WHERE j.file_id = "
		    "f.file_id AND j.stage = 'translate' AND j.lang = '%s') AS "
		    "\"translation_%s_status\"", langs[i], langs[i]);
	buf_printf(&b, ", f.abs_path AS file_path_bytes FROM media_files f");
	rc = db_exec(store_db(st), b.data) == 0 ? 0 : store_fail_db(st);
	buf_free(&b);
	return rc;
}

int
store_langs_sync(store_t *st, const char (*langs)[CONFIG_LANG_MAX],
		 int nlangs)
{
	char want[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	char have[CONFIG_LANGS_MAX * CONFIG_LANG_MAX];
	char text[CONFIG_LANGS_MAX * CONFIG_LANG_MAX] = "";
	char lang[CONFIG_LANG_MAX];
	int n = 0, rc = -1;
	db_stmt_t *s;
	bool own, found, view;
	size_t len = 0;

	for (int i = 0; i < nlangs; i++) {
		if (store_lang_norm(langs[i], lang) < 0)
			return store_fail(st, "invalid language code \"%.*s\" "
			    "(letters, digits, '_' and '-', at most %d)",
			    CONFIG_LANG_MAX - 1, langs[i], CONFIG_LANG_MAX - 1);
		bool dup = false;
		for (int k = 0; k < n; k++)
			dup = dup || strcmp(want[k], lang) == 0;
		if (dup || n == CONFIG_LANGS_MAX)
			continue;
		memcpy(want[n++], lang, sizeof(lang));
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s",
		    len ? "," : "", lang);
	}
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if (store_langs_text(st, have, sizeof(have), &found) < 0 ||
	    store_view_exists(st, &view) < 0)
		goto out;
	if (found && strcmp(have, text) == 0 && view) {
		rc = 0;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		/* whole-word match in the stored comma list */
		char key[CONFIG_LANG_MAX + 2], list[sizeof(have) + 2];
		snprintf(key, sizeof(key), ",%.*s,", CONFIG_LANG_MAX - 1, want[i]);
		snprintf(list, sizeof(list), ",%s,", have);
		if (strstr(list, key) != NULL)
			continue;
		if ((s = store_stmt(st, &q_langs_jobs)) == NULL)
			goto out;
		db_bind_text(s, 1, want[i]);
		if (store_run(st, s) < 0)
			goto out;
	}
	if ((s = store_stmt(st, &q_langs_put)) == NULL)
		goto out;
	db_bind_text(s, 1, text);
	if (store_run(st, s) < 0 || store_view_build(st, want, n) < 0)
		goto out;
	rc = 0;
out:
	return store_tx_leave(st, own, rc);
}

int
store_view_ensure(store_t *st)
{
	char langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	int nl = 0, rc = -1;
	bool view;

	if (store_view_exists(st, &view) < 0)
		return -1;
	if (view)
		return 0;
	if (store_tx_begin(st) < 0)
		return -1;
	/* another process may have built it while we waited */
	if (store_view_exists(st, &view) < 0)
		goto out;
	rc = 0;
	if (!view && (store_langs_load(st, langs, CONFIG_LANGS_MAX, &nl) < 0 ||
	    store_view_build(st, langs, nl) < 0))
		rc = -1;
out:
	return store_tx_leave(st, true, rc);
}

/* ---- what to run --------------------------------------------------- */

/* The (stage, language) pairs this run works on.  Translations are taken
 * for the configured target languages (and any --language), filtered by
 * config_wants, so jobs of a language dropped from the config stay put. */
int
store_wants(const struct config *cfg, struct store_want *w)
{
	int n = 0;

	if (config_wants(cfg, STAGE_TRANSCRIBE, "")) {
		w[n].stage = STAGE_TRANSCRIBE;
		w[n++].lang[0] = '\0';
	}
	for (int pass = 0; pass < 2; pass++) {
		const char (*l)[CONFIG_LANG_MAX] = pass ? cfg->run_langs : cfg->langs;
		int nl = pass ? cfg->nrun_langs : cfg->nlangs;
		for (int i = 0; i < nl && n < STORE_WANTS_MAX; i++) {
			char lang[CONFIG_LANG_MAX];
			bool dup = false;
			if (store_lang_norm(l[i], lang) < 0 ||
			    !config_wants(cfg, STAGE_TRANSLATE, lang))
				continue;
			for (int k = 0; k < n; k++)
				dup = dup || (w[k].stage == STAGE_TRANSLATE &&
				    strcmp(w[k].lang, lang) == 0);
			if (dup)
				continue;
			w[n].stage = STAGE_TRANSLATE;
			memcpy(w[n++].lang, lang, sizeof(lang));
		}
	}
	return n;
}

static struct store_sql q_runnable = STORE_SQL(
	"SELECT job_id, run_after FROM jobs WHERE stage = ?1 AND lang = ?2 AND "
	"status = 'not_started' AND ready = 1 AND run_after <= ?3 "
	"ORDER BY run_after, job_id LIMIT ?4");
static struct store_sql q_next_due = STORE_SQL(
	"SELECT min(run_after) FROM jobs WHERE stage = ?1 AND lang = ?2 AND "
	"status = 'not_started' AND ready = 1 AND run_after > ?3");

struct store_cand {
	int64_t run_after;
	int64_t job_id;
	int     want;
};

static int
store_cand_cmp(const void *a, const void *b)
{
	const struct store_cand *x = a, *y = b;

	return store_dispatch_cmp(x->run_after, x->job_id, y->run_after,
	    y->job_id);
}

static int
store_id_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* One ordered index range per wanted pair, merged here: a single query
 * over several stages could not use the index order and would sort every
 * runnable job. */
int
store_runnable_fetch(store_t *st, const struct config *cfg, int64_t now_ms,
		     const int64_t *skip, int nskip, struct job_ref *out,
		     int max, int *nout)
{
	struct store_want w[STORE_WANTS_MAX];
	struct store_cand *c = NULL;
	int64_t *sk = NULL;
	int nw = store_wants(cfg, w), nc = 0, per, rc = -1, step;
	db_stmt_t *s;

	*nout = 0;
	if (max <= 0 || nw == 0)
		return 0;
	per = max + (nskip > 0 ? nskip : 0);
	c = xmalloc(sizeof(*c) * (size_t)per * (size_t)nw);
	for (int i = 0; i < nw; i++) {
		if ((s = store_stmt(st, &q_runnable)) == NULL)
			goto out;
		db_bind_text(s, 1, job_stage_name(w[i].stage));
		db_bind_text(s, 2, w[i].lang);
		db_bind_int64(s, 3, now_ms);
		db_bind_int64(s, 4, per);
		while ((step = store_step(st, s)) == DB_ROW) {
			c[nc].job_id = db_column_int64(s, 0);
			c[nc].run_after = db_column_int64(s, 1);
			c[nc++].want = i;
		}
		if (step < 0)
			goto out;
	}
	if (nw > 1)
		qsort(c, (size_t)nc, sizeof(*c), store_cand_cmp);
	if (nskip > 0) {
		sk = xmalloc(sizeof(*sk) * (size_t)nskip);
		memcpy(sk, skip, sizeof(*sk) * (size_t)nskip);
		qsort(sk, (size_t)nskip, sizeof(*sk), store_id_cmp);
	}
	for (int i = 0; i < nc && *nout < max; i++) {
		if (sk && bsearch(&c[i].job_id, sk, (size_t)nskip, sizeof(*sk),
		    store_id_cmp))
			continue;
		out[*nout].job_id = c[i].job_id;
		out[*nout].stage = w[c[i].want].stage;
		memcpy(out[*nout].lang, w[c[i].want].lang, CONFIG_LANG_MAX);
		(*nout)++;
	}
	rc = 0;
out:
	free(c);
	free(sk);
	return rc;
}

int
store_next_due(store_t *st, const struct config *cfg, int64_t now,
	       int64_t *due_ms)
{
	struct store_want w[STORE_WANTS_MAX];
	int nw = store_wants(cfg, w), step;
	db_stmt_t *s;

	*due_ms = 0;
	for (int i = 0; i < nw; i++) {
		if ((s = store_stmt(st, &q_next_due)) == NULL)
			return -1;
		db_bind_text(s, 1, job_stage_name(w[i].stage));
		db_bind_text(s, 2, w[i].lang);
		db_bind_int64(s, 3, now);
		if ((step = store_step(st, s)) < 0)
			return -1;
		if (step == DB_ROW) {
			if (!db_column_null(s, 0)) {
				int64_t t = db_column_int64(s, 0);
				if (*due_ms == 0 || t < *due_ms)
					*due_ms = t;
			}
			db_reset(s);
		}
	}
	return 0;
}


/* ---- counts -------------------------------------------------------- */

/* Walks jobs_status in order, so transcribe ('transc' < 'transl') comes
 * first and languages come sorted, with no temporary sort. */
static struct store_sql q_counts = STORE_SQL2(
	"SELECT stage, lang, status, ready, count(*), sum(run_after > ?1) "
	"FROM jobs GROUP BY stage, lang, status, ready",
	"SELECT stage, lang, status, ready, count(*), "
	"count(*) FILTER (WHERE run_after > ?1) "
	"FROM jobs GROUP BY stage, lang, status, ready");
static struct store_sql q_files = STORE_SQL(
	"SELECT count(*) FROM media_files");
static struct store_sql q_oldest = STORE_SQL(
	"SELECT min(started_at) FROM jobs "
	"WHERE stage = ?1 AND lang = ?2 AND status = 'in-progress'");

static struct store_stage_counts *
store_counts_stage(struct store_counts *c, int stage, const char *lang)
{
	struct store_stage_counts *sc;

	for (int i = 0; i < c->nstages; i++)
		if (c->stages[i].stage == stage &&
		    strcmp(c->stages[i].lang, lang) == 0)
			return &c->stages[i];
	c->stages = xrealloc(c->stages, sizeof(*sc) * (size_t)(c->nstages + 1));
	sc = &c->stages[c->nstages++];
	memset(sc, 0, sizeof(*sc));
	sc->stage = stage;
	snprintf(sc->lang, sizeof(sc->lang), "%s", lang);
	return sc;
}

static int
store_counts_cmp(const void *a, const void *b)
{
	const struct store_stage_counts *x = a, *y = b;

	if (x->stage != y->stage)
		return x->stage - y->stage;
	return strcmp(x->lang, y->lang);
}

static int
store_int64_query(store_t *st, struct store_sql *q, int64_t *out)
{
	db_stmt_t *s = store_stmt(st, q);
	int step;

	*out = 0;
	if (s == NULL || (step = store_step(st, s)) < 0)
		return -1;
	if (step == DB_ROW) {
		*out = db_column_int64(s, 0);
		db_reset(s);
	}
	return 0;
}

static int
store_counts_oldest(store_t *st, const struct store_stage_counts *sc,
		    int64_t *oldest)
{
	db_stmt_t *s = store_stmt(st, &q_oldest);
	int step;

	if (s == NULL)
		return -1;
	db_bind_text(s, 1, job_stage_name(sc->stage));
	db_bind_text(s, 2, sc->lang);
	if ((step = store_step(st, s)) < 0)
		return -1;
	if (step == DB_ROW) {
		int64_t t = db_column_int64(s, 0);
		if (t > 0 && (*oldest == 0 || t < *oldest))
			*oldest = t;
		db_reset(s);
	}
	return 0;
}

/* Transcribe always, then every language that has jobs or is a target,
 * so a fresh database still reports the stages it will have.  waiting and
 * delayed are parts of not_started, not extra statuses. */
int
store_counts_get(store_t *st, struct store_counts *c)
{
	char langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];
	int64_t now = time_wall_ms();
	db_stmt_t *s;
	int nl = 0, step, rc = -1;
	bool own = !db_in_tx(store_db(st));

	memset(c, 0, sizeof(*c));
	/* one snapshot for all the figures; a plain BEGIN works read-only */
	if (own && db_begin(store_db(st), false) < 0)
		return store_fail_db(st);
	store_counts_stage(c, STAGE_TRANSCRIBE, "");
	if (store_int64_query(st, &q_files, &c->files) < 0 ||
	    store_langs_load(st, langs, CONFIG_LANGS_MAX, &nl) < 0)
		goto out;
	if ((s = store_stmt(st, &q_counts)) == NULL)
		goto out;
	db_bind_int64(s, 1, now);
	while ((step = store_step(st, s)) == DB_ROW) {
		int stage = job_stage_parse(db_column_text(s, 0));
		const char *status = db_column_text(s, 2);
		bool ready = db_column_int(s, 3) != 0;
		int64_t n = db_column_int64(s, 4);
		struct store_stage_counts *sc;
		int k;

		if (stage < 0)
			continue;
		sc = store_counts_stage(c, stage,
		    db_column_text(s, 1));
		for (k = 0; k < JOB_ST_COUNT; k++)
			if (strcmp(status, job_status_name(k)) == 0)
				break;
		if (k == JOB_ST_COUNT)
			continue;
		sc->n[k] += n;
		if (k == JOB_ST_NOT_STARTED && !ready)
			sc->waiting += n;
		if (k == JOB_ST_NOT_STARTED && ready)
			sc->delayed += db_column_int64(s, 5);
	}
	if (step < 0)
		goto out;
	for (int i = 0; i < c->nstages; i++)
		if (c->stages[i].n[JOB_ST_IN_PROGRESS] > 0 &&
		    store_counts_oldest(st, &c->stages[i],
		    &c->oldest_in_progress_ms) < 0)
			goto out;
	for (int i = 0; i < nl; i++)
		store_counts_stage(c, STAGE_TRANSLATE, langs[i]);
	qsort(c->stages, (size_t)c->nstages, sizeof(*c->stages),
	    store_counts_cmp);
	rc = 0;
out:
	if (own)
		store_tx_leave(st, true, -1);   /* nothing to keep: roll back */
	if (rc < 0)
		store_counts_free(c);
	return rc;
}

void
store_counts_free(struct store_counts *c)
{
	free(c->stages);
	memset(c, 0, sizeof(*c));
}
