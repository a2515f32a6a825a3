/*
 * master_retry.c - `mpfarm retry [--stage S] [--language L] [--file PATH]
 * [--dry-run]`: failed jobs back to not_started with their attempts reset,
 * the one way out of `failed` (translations that waited for a failed
 * transcript need no retry of their own: they become runnable once it
 * completes).  It says what it resets, one line per job, because the user
 * is about to pay for those jobs again; --dry-run prints the same list and
 * opens the database read-only, so the file stays byte-identical.
 *
 * A file named with --file is looked for the way a user means it: a path
 * relative to the current folder or absolute (followed through symbolic
 * links when it exists, taken literally when it was moved away), then as
 * the output name the database stores (relative to its scan root), then,
 * for a name copied from processing_status or from this command's own
 * listing, its escaped form (\xNN, \\) decoded back to the exact bytes.
 */
#include "master.h"
#include "common_store_audit.h"
#include "common_roots.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETRY_ERR_SHOWN 120     /* bytes of last_error in a listing line */

/* PATH made absolute against the current folder with "." and ".." folded
 * away, without touching the disk (the file may be gone). */
static char *
retry_path_lexical(const char *path)
{
	char cwd[PATH_MAX];
	char *joined, *out, *save = NULL;
	size_t o = 0;

	if (path[0] == '/')
		joined = xstrdup(path);
	else if (getcwd(cwd, sizeof(cwd)) != NULL)
		joined = xasprintf("%s/%s", cwd, path);
	else
		return NULL;
	out = xmalloc(strlen(joined) + 2);
	for (char *w = strtok_r(joined, "/", &save); w != NULL;
	    w = strtok_r(NULL, "/", &save)) {
		if (strcmp(w, ".") == 0)
			continue;
		if (strcmp(w, "..") == 0) {
			while (o > 0 && out[--o] != '/')
				;
			continue;
		}
		o += (size_t)sprintf(out + o, "/%s", w);
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	free(joined);
	return out;
}

/* One spelling of the path: on disk, literally absolute, as stored. */
static int
retry_file_try(store_t *st, const struct roots_map *roots, const char *path,
	       int64_t *file_id)
{
	char *abs[4] = { realpath(path, NULL), retry_path_lexical(path) };
	int rc = 1;

	/* and each in the store's spelling of a named root ([roots]) */
	for (int i = 0; i < 2; i++)
		if (roots != NULL && abs[i] != NULL)
			abs[i + 2] = roots_to_canon(roots, abs[i], NULL);
	for (int i = 0; i < 4 && rc == 1; i++)
		if (abs[i] != NULL)
			rc = store_audit_file_find(st, abs[i], false, file_id);
	if (rc == 1)
		rc = store_audit_file_find(st, path, true, file_id);
	for (int i = 0; i < 4; i++)
		free(abs[i]);
	return rc;
}

int
master_file_resolve(store_t *st, const struct roots_map *roots,
		    const char *path, int64_t *file_id)
{
	size_t n;
	char *raw;
	int rc;

	if ((rc = retry_file_try(st, roots, path, file_id)) != 1)
		return rc;
	raw = text_unescape_path(path, &n);
	/* an embedded NUL cannot name a file */
	if (raw != NULL && strlen(raw) == n && strcmp(raw, path) != 0)
		rc = retry_file_try(st, roots, raw, file_id);
	free(raw);
	return rc;
}

/* last_error on one line, cut short: control characters become spaces,
 * the cut never splits a UTF-8 sequence. */
static void
retry_err_print(const char *err)
{
	size_t n = strlen(err);

	if (n > RETRY_ERR_SHOWN) {
		n = RETRY_ERR_SHOWN;
		while (n > 0 && ((unsigned char)err[n] & 0xc0) == 0x80)
			n--;
	}
	for (size_t i = 0; i < n; i++)
		putchar((unsigned char)err[i] < 0x20 ? ' ' : err[i]);
	if (n < strlen(err))
		fputs("...", stdout);
}

static void
retry_list_print(const struct store_retry_jobs *js, bool dry_run)
{
	for (size_t i = 0; i < js->n; i++) {
		const struct store_retry_job *j = &js->v[i];
		printf("%s: %s: %s%s%s (failed after %d attempt%s", dry_run ?
		    "would retry" : "retry", j->file, job_stage_name(j->stage),
		    j->lang[0] ? " " : "", j->lang, j->attempts,
		    j->attempts == 1 ? "" : "s");
		if (j->last_error != NULL && j->last_error[0] != '\0') {
			fputs(": ", stdout);
			retry_err_print(j->last_error);
		}
		fputs(")\n", stdout);
	}
	if (dry_run)
		printf("%zu failed job%s would go back to not_started (dry run: "
		    "nothing changed)\n", js->n, js->n == 1 ? "" : "s");
	else
		printf("%zu failed job%s back to not_started\n", js->n,
		    js->n == 1 ? "" : "s");
}

int
master_retry_run(struct config *cfg)
{
	struct store_retry_filter f = { -1, NULL, 0, 0 };
	struct store_retry_jobs js = { NULL, 0 };
	struct roots_map roots = { 0 };
	store_t *st = NULL;
	int ex = EXIT_FATAL, rc;

	if (cfg->stage_mask == STAGE_MASK_TRANSCRIBE)
		f.stage = STAGE_TRANSCRIBE;
	else if (cfg->stage_mask == STAGE_MASK_TRANSLATE)
		f.stage = STAGE_TRANSLATE;
	/* a language names translations; transcripts have none */
	if (cfg->nrun_langs > 0 && f.stage != STAGE_TRANSCRIBE) {
		f.stage = STAGE_TRANSLATE;
		f.langs = (const char (*)[CONFIG_LANG_MAX])cfg->run_langs;
		f.nlangs = cfg->nrun_langs;
	}
	if (store_audit_db_missing(cfg->db, "retry"))
		goto out;
	if ((st = master_store_open(cfg, cfg->dry_run ? STORE_READONLY : 0))
	    == NULL)
		goto out;
	if (cfg->file != NULL) {
		char rerr[512];
		if (roots_load(&roots, cfg, st, false, rerr, sizeof(rerr)) < 0) {
			say_err("retry: %s", rerr);
			goto out;
		}
		if ((rc = master_file_resolve(st, &roots, cfg->file,
		    &f.file_id)) < 0)
			goto fail;
		if (rc == 1) {
			say_err("retry: no media file in %s matches %s (give its "
			    "path, absolute or relative to this folder, or the "
			    "name processing_status shows)", log_quote(cfg->db),
			    log_quote(cfg->file));
			goto out;
		}
	}
	if (store_audit_retry(st, &f, !cfg->dry_run, &js) < 0)
		goto fail;
	retry_list_print(&js, cfg->dry_run);
	ex = EXIT_OK;
	goto out;
fail:
	say_err("retry: %s", store_errmsg(st));
out:
	fflush(stdout);
	store_audit_retry_free(&js);
	roots_free(&roots);
	if (st != NULL)
		store_close(st);
	return ex;
}
