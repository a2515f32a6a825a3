/*
 * master_retry.c - `mpfarm retry [--stage S] [--language L]`: failed jobs
 * go back to not_started with their attempts reset, the one way out of
 * `failed` (SPEC).  Translations that waited for a failed transcript need no
 * retry of their own: they become runnable once the transcript completes.
 */
#include "master.h"
#include "common_store_audit.h"

#include <stdio.h>
#include <string.h>

int
master_retry_run(struct config *cfg)
{
	int stage = -1;
	int64_t total = 0;
	store_t *st = NULL;
	int ex = EXIT_FATAL;

	if (cfg->stage_mask == STAGE_MASK_TRANSCRIBE)
		stage = STAGE_TRANSCRIBE;
	else if (cfg->stage_mask == STAGE_MASK_TRANSLATE)
		stage = STAGE_TRANSLATE;
	if (store_audit_db_missing(cfg->db, "retry"))
		goto out;
	if ((st = master_store_open(cfg, 0)) == NULL)
		goto out;

	if (cfg->nrun_langs == 0 || stage == STAGE_TRANSCRIBE) {
		if (store_retry_failed(st, stage, NULL, &total) < 0)
			goto fail;
	} else {
		/* a language names translations; transcripts have none */
		if (stage == -1)
			stage = STAGE_TRANSLATE;
		for (int i = 0; i < cfg->nrun_langs; i++) {
			int64_t n = 0;
			if (store_retry_failed(st, stage, cfg->run_langs[i], &n) < 0)
				goto fail;
			total += n;
		}
	}
	printf("%lld failed job%s back to not_started\n", (long long)total,
	    total == 1 ? "" : "s");
	ex = EXIT_OK;
	goto out;
fail:
	say_err("retry: %s: %s", log_quote(cfg->db), store_errmsg(st));
out:
	fflush(stdout);
	if (st != NULL)
		store_close(st);
	return ex;
}
