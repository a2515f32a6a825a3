/*
 * master_show.c - `mpfarm failed` and `mpfarm show FILE`: the answers
 * people used to dig out of the database with SQL - which jobs failed and
 * why, and everything about one file (its jobs, the outputs on disk and
 * every attempt).  The facts come from common_store_query.c, the same
 * functions the `mpfarm serve` page reads.  The store is opened read only,
 * so both work beside a running farm.  File names are printed as they are,
 * except control characters, C1 included, and bytes that are not UTF-8
 * (shown \xNN), so one job stays one line and no name drives the
 * terminal.  Outputs are looked up beneath the output root without
 * following a link (common_tree.h), as check and fix do; JSON
 * gets names that are not UTF-8 with each byte outside ASCII as \xNN.
 */
#include "master.h"
#include "common_store_audit.h"
#include "common_roots.h"
#include "common_tree.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The suffixes a job may leave beside its .txt (subtitles, raw JSON). */
static const char *const show_suffixes[] = {
	".txt", ".json", ".srt", ".vtt", NULL
};

const char *const *
master_output_suffixes(void)
{
	return show_suffixes;
}

json_t *
master_json_text(const char *s)
{
	json_t *j = json_string(s ? s : "");
	struct buf b;

	if (j != NULL)
		return j;
	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p >= 0x80 || *p == '\\')
			buf_printf(&b, "\\x%02x", *p);
		else
			buf_append(&b, p, 1);
	}
	buf_terminate(&b);
	j = json_string(b.data ? b.data : "");
	buf_free(&b);
	return j;
}

/* Text for a terminal: control characters (C0, DEL, C1) and bytes that
 * are not UTF-8 as \xNN, the rest as is. */
static void
show_put(const char *s)
{
	char *t = text_escape(s, strlen(s), TEXT_ESCAPE_SHOW);

	fputs(t, stdout);
	free(t);
}

void
master_time_text(int64_t ms, char *out, size_t outlen)
{
	time_t t = (time_t)(ms / MS_PER_S);
	struct tm tm;

	if (ms <= 0) {
		snprintf(out, outlen, "-");
		return;
	}
	localtime_r(&t, &tm);
	strftime(out, outlen, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Parse --stage/--language into a filter: -1 = every stage. */
static int
show_filter_stage(const struct config *cfg)
{
	if (cfg->stage_mask == STAGE_MASK_TRANSCRIBE)
		return STAGE_TRANSCRIBE;
	if (cfg->stage_mask == STAGE_MASK_TRANSLATE)
		return STAGE_TRANSLATE;
	return -1;
}

/* Report a failed write of stdout once; the exit status says so. */
static int
show_flush(const char *cmd, int ex)
{
	if (fflush(stdout) != 0 && ex == EXIT_OK) {
		say_err("%s: cannot write the report: %s", cmd, strerror(errno));
		return EXIT_FATAL;
	}
	return ex;
}

static int
show_json_print(json_t *root)
{
	int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
	printf("\n");
	json_decref(root);
	return rc;
}

int
master_failed_run(struct config *cfg)
{
	struct store_failed_job *v = NULL;
	int n = 0, ex = EXIT_FATAL, stage = show_filter_stage(cfg);
	store_t *st = NULL;
	const char *lang = cfg->nrun_langs > 0 ? cfg->run_langs[0] : NULL;

	if (cfg->nrun_langs > 1) {
		say_err("failed: give one --language at a time");
		return EXIT_USAGE;
	}
	if (store_audit_db_missing(cfg->db, "failed"))
		goto out;
	if ((st = master_store_open(cfg, STORE_READONLY)) == NULL)
		goto out;
	if (store_failed_list(st, stage, lang, 0, &v, &n, NULL) < 0) {
		say_err("failed: %s", store_errmsg(st));
		goto out;
	}
	if (cfg->json) {
		json_t *arr = json_array();
		for (int i = 0; i < n; i++) {
			char when[32];
			master_time_text(v[i].finished_at_ms, when, sizeof(when));
			json_array_append_new(arr, json_pack("{sIsIsosssosisoso}",
			    "job_id", (json_int_t)v[i].job_id,
			    "file_id", (json_int_t)v[i].file_id,
			    "file", master_json_text(v[i].abs_path),
			    "stage", job_stage_name(v[i].stage),
			    "language", v[i].stage == STAGE_TRANSCRIBE ? json_null()
			    : json_string(v[i].lang),
			    "attempts", v[i].attempts,
			    "failed_at_ms", v[i].finished_at_ms > 0 ? json_integer(
			    v[i].finished_at_ms) : json_null(),
			    "last_error", master_json_text(v[i].last_error)));
		}
		if (show_json_print(json_pack("{sIso}", "count", (json_int_t)n,
		    "failed", arr)) < 0)
			goto out;
	} else {
		for (int i = 0; i < n; i++) {
			char key[JOB_STAGE_KEY_MAX];
			job_stage_key(v[i].stage, v[i].lang, key, sizeof(key));
			show_put(v[i].abs_path);
			printf("  %s  %d attempt%s  ", key, v[i].attempts,
			    v[i].attempts == 1 ? "" : "s");
			show_put(v[i].last_error[0] ? v[i].last_error
			    : "(no error recorded)");
			printf("\n");
		}
		if (n == 0)
			fprintf(stderr, "mpfarm: no failed jobs%s%s\n",
			    stage >= 0 || lang ? " matching " : "",
			    lang ? lang : stage >= 0 ? job_stage_name(stage) : "");
	}
	ex = EXIT_OK;
out:
	ex = show_flush("failed", ex);
	store_failed_free(v, n);
	if (st != NULL)
		store_close(st);
	return ex;
}

/* The outputs of one job that exist on disk, as [{"path", "bytes"}]: only
 * regular files reached from the output root without following a link,
 * as check and fix see them, so a link planted in the tree never shows
 * its target's size.  No tree (t NULL: no output folder) -> []. */
static json_t *
show_outputs(struct tree *t, const struct config *cfg,
	     const struct store_file *f, const struct store_file_job *j)
{
	json_t *arr = json_array();

	for (int k = 0; t != NULL && show_suffixes[k]; k++) {
		char *rel = tree_output_rel(j->stage, j->lang, f->rel_path,
		    show_suffixes[k]);
		struct stat sb;
		if (tree_file_stat(t, rel, &sb) == 0) {
			char *p = file_output_path(cfg->output, j->stage, j->lang,
			    f->rel_path, show_suffixes[k]);
			json_array_append_new(arr, json_pack("{sosI}", "path",
			    master_json_text(p), "bytes", (json_int_t)sb.st_size));
			free(p);
		}
		free(rel);
	}
	return arr;
}

/* The output tree for show_outputs, opened without creating it: NULL
 * when there is none (nothing to list). */
static struct tree *
show_tree_open(const struct config *cfg, struct tree *t)
{
	char err[512];

	if (tree_open(t, cfg->output, false, false, err, sizeof(err)) < 0) {
		tree_close(t);
		return NULL;
	}
	return t;
}

static void
show_tree_close(struct tree *t)
{
	if (t != NULL)
		tree_close(t);
}

json_t *
master_show_json(const struct config *cfg, const struct store_file *f)
{
	json_t *jobs = json_array();
	struct tree tbuf, *t = show_tree_open(cfg, &tbuf);

	for (int i = 0; i < f->njobs; i++) {
		const struct store_file_job *j = &f->jobs[i];
		json_t *tries = json_array();
		for (int k = 0; k < j->ntries; k++) {
			const struct store_attempt *a = &j->tries[k];
			json_array_append_new(tries, json_pack(
			    "{sisIsosososososo}", "attempt", a->attempt,
			    "started_at_ms", (json_int_t)a->started_at_ms,
			    "ended_at_ms", a->ended_at_ms > 0 ?
			    json_integer(a->ended_at_ms) : json_null(),
			    "worker_pid", a->worker_pid > 0 ?
			    json_integer(a->worker_pid) : json_null(),
			    "outcome", a->outcome[0] ? json_string(a->outcome)
			    : json_null(),
			    "http_status", a->http_status > 0 ?
			    json_integer(a->http_status) : json_null(),
			    "exit_code", a->exit_code >= 0 ?
			    json_integer(a->exit_code) : json_null(),
			    "error", master_json_text(a->message)));
		}
		json_array_append_new(jobs, json_pack("{sIsssosssisososo}",
		    "job_id", (json_int_t)j->job_id,
		    "stage", job_stage_name(j->stage),
		    "language", j->stage == STAGE_TRANSCRIBE ? json_null() :
		    json_string(j->lang),
		    "status", j->status, "attempts", j->attempts,
		    "last_error", j->last_error[0] ?
		    master_json_text(j->last_error) : json_null(),
		    "outputs", show_outputs(t, cfg, f, j), "history", tries));
	}
	show_tree_close(t);
	return json_pack("{sIsososososIsIsIso}",
	    "file_id", (json_int_t)f->file_id,
	    "file", master_json_text(f->abs_path),
	    "rel_path", master_json_text(f->rel_path),
	    "scan_root", master_json_text(f->scan_root),
	    "exists", json_boolean(access(f->abs_path, F_OK) == 0),
	    "size", (json_int_t)f->size, "mtime_ns", (json_int_t)f->mtime_ns,
	    "added_at_ms", (json_int_t)f->added_at_ms, "jobs", jobs);
}

static void
show_print_text(const struct config *cfg, const struct store_file *f)
{
	char when[32];
	struct tree tbuf, *tr = show_tree_open(cfg, &tbuf);

	printf("File %lld: ", (long long)f->file_id);
	show_put(f->abs_path);
	printf("\n- %lld bytes%s; added %s\n", (long long)f->size,
	    access(f->abs_path, F_OK) == 0 ? "" : " (no longer on disk)",
	    (master_time_text(f->added_at_ms, when, sizeof(when)), when));
	for (int i = 0; i < f->njobs; i++) {
		const struct store_file_job *j = &f->jobs[i];
		char key[JOB_STAGE_KEY_MAX];
		json_t *outs = show_outputs(tr, cfg, f, j), *o;
		size_t k;

		job_stage_key(j->stage, j->lang, key, sizeof(key));
		printf("\n%s: %s, %d attempt%s\n", key, j->status, j->attempts,
		    j->attempts == 1 ? "" : "s");
		if (j->last_error[0]) {
			printf("- last error: ");
			show_put(j->last_error);
			printf("\n");
		}
		json_array_foreach(outs, k, o) {
			printf("- output: ");
			show_put(json_string_value(json_object_get(o, "path")));
			printf(" (%lld bytes)\n", (long long)json_integer_value(
			    json_object_get(o, "bytes")));
		}
		for (int t = 0; t < j->ntries; t++) {
			const struct store_attempt *a = &j->tries[t];
			master_time_text(a->started_at_ms, when, sizeof(when));
			printf("- attempt %d at %s", a->attempt, when);
			if (a->worker_pid > 0)
				printf(" by worker pid %lld", (long long)a->worker_pid);
			printf(": %s", a->outcome[0] ? a->outcome : "running");
			if (a->http_status > 0)
				printf(", HTTP %d", a->http_status);
			if (a->exit_code >= 0)
				printf(", exit code %d", a->exit_code);
			if (a->signal > 0)
				printf(", signal %d", a->signal);
			if (a->message[0]) {
				printf(": ");
				show_put(a->message);
			}
			printf("\n");
		}
		json_decref(outs);
	}
	show_tree_close(tr);
}

/* A path the user typed on this host, in the store's spelling when it
 * lies under a named root ([roots]); NULL when that changes nothing. */
static char *
show_path_canon(const struct roots_map *map, const char *what)
{
	const struct roots_entry *re = NULL;
	char *real = realpath(what, NULL), *canon = NULL;

	if (real != NULL)
		canon = roots_to_canon(map, real, &re);
	free(real);
	if (re == NULL) {
		free(canon);
		return NULL;
	}
	return canon;
}

/* The file's paths as this host sees them, for the lines printed and the
 * "exists" check. */
static void
show_paths_local(const struct roots_map *map, struct store_file *f)
{
	char *p = roots_to_local(map, f->abs_path, NULL);
	free(f->abs_path);
	f->abs_path = p;
	p = roots_to_local(map, f->scan_root, NULL);
	free(f->scan_root);
	f->scan_root = p;
}

int
master_show_run(struct config *cfg)
{
	struct store_file f = { 0 };
	store_t *st = NULL;
	int64_t id = 0;
	int ex = EXIT_FATAL, rc;
	const char *what = cfg->args[0];
	struct roots_map map = { 0 };
	char *canon = NULL, err[512];

	if (store_audit_db_missing(cfg->db, "show"))
		goto out;
	if ((st = master_store_open(cfg, STORE_READONLY)) == NULL)
		goto out;
	if (roots_load(&map, cfg, st, false, err, sizeof(err)) < 0) {
		say_err("show: %s", err);
		goto out;
	}
	rc = store_file_find(st, what, &id);
	if (rc == 1 && (canon = show_path_canon(&map, what)) != NULL)
		rc = store_file_find(st, canon, &id);
	if (rc == 0 && (rc = store_file_get(st, id, &f)) == 0)
		show_paths_local(&map, &f);
	if (rc < 0) {
		say_err("show: %s", store_errmsg(st));
		goto out;
	}
	if (rc > 0) {
		say_err("show: no file %s in %s (give its path, absolute, "
		    "relative to here or to its scan folder, or its file id)",
		    log_quote(what), log_quote(cfg->db));
		ex = EXIT_FATAL;
		goto out;
	}
	if (cfg->json) {
		if (show_json_print(master_show_json(cfg, &f)) < 0)
			goto out;
	} else {
		show_print_text(cfg, &f);
	}
	ex = EXIT_OK;
out:
	ex = show_flush("show", ex);
	store_file_free(&f);
	roots_free(&map);
	free(canon);
	if (st != NULL)
		store_close(st);
	return ex;
}
