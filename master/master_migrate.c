/*
 * master_migrate.c - `mpfarm migrate --to postgresql://...`: the step from
 * one machine to many.  The SQLite farm named by --db (or the config) is
 * copied into an empty PostgreSQL farm, and the counts of both sides are
 * printed and compared, so the user sees that nothing was lost.  The
 * source's farm lock is held throughout: a running master would go on
 * changing rows the copy has already read, so one refuses the migration,
 * and none can start until it is done.  The source is left as it was.
 */
#include "master.h"
#include "common_db.h"
#include "common_store_migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int
master_migrate_run(struct config *cfg)
{
	struct store_open_opts opts = { 0 };
	int64_t nsrc[STORE_MIGRATE_TABLES], ndst[STORE_MIGRATE_TABLES];
	store_t *src = NULL, *dst = NULL;
	char err[700], *to_shown = NULL;
	int lock = -1, rc = EXIT_FATAL;
	pid_t holder = 0;
	bool empty, same = true;

	if (cfg->migrate_to == NULL || !db_target_is_pg(cfg->migrate_to)) {
		say_err("mpfarm migrate needs --to postgresql://... (the "
		    "PostgreSQL farm to copy into)");
		return EXIT_USAGE;
	}
	if (db_target_is_pg(cfg->db)) {
		say_err("mpfarm migrate copies a SQLite farm: --db names "
		    "PostgreSQL already");
		return EXIT_USAGE;
	}
	if (access(cfg->db, F_OK) != 0) {
		say_err("%s: no such database (nothing to migrate)", cfg->db);
		return EXIT_FATAL;
	}
	to_shown = db_target_scrub(cfg->migrate_to);
	if (master_lock_acquire(cfg->db, &lock, &holder, err,
	    sizeof(err)) < 0) {
		if (holder > 0)
			say_err("a master (pid %d) is running on %s: stop it "
			    "first (mpfarm signal TERM)", (int)holder, cfg->db);
		else
			say_err("cannot lock the database: %s", err);
		goto out;
	}
	opts.busy_timeout_ms = cfg->busy_timeout_ms;
	if (store_open(&src, cfg->db, &opts, err, sizeof(err)) < 0) {
		say_err("%s", err);
		goto out;
	}
	if (store_open(&dst, cfg->migrate_to, &opts, err, sizeof(err)) < 0) {
		say_err("%s", err);
		goto out;
	}
	if (store_migrate_empty(dst, &empty) < 0) {
		say_err("%s", store_errmsg(dst));
		goto out;
	}
	if (!empty) {
		say_err("%s already holds a farm (files, jobs or attempts): "
		    "migrate copies only into an empty one", to_shown);
		goto out;
	}
	if (store_migrate_copy(src, dst, err, sizeof(err)) < 0) {
		say_err("migrate failed, nothing copied: %s", err);
		goto out;
	}
	if (store_migrate_counts(src, nsrc) < 0) {
		say_err("%s", store_errmsg(src));
		goto out;
	}
	if (store_migrate_counts(dst, ndst) < 0) {
		say_err("%s", store_errmsg(dst));
		goto out;
	}
	printf("migrated %s to %s\n%-12s %10s %10s\n", cfg->db, to_shown,
	    "table", "sqlite", "postgresql");
	for (int i = 0; i < STORE_MIGRATE_TABLES; i++) {
		printf("%-12s %10lld %10lld%s\n", store_migrate_table_name(i),
		    (long long)nsrc[i], (long long)ndst[i],
		    nsrc[i] == ndst[i] ? "" : "  MISMATCH");
		same = same && nsrc[i] == ndst[i];
	}
	if (!same) {
		say_err("the counts differ: check the target before using it");
		goto out;
	}
	printf("next: stop using %s; run every master with --db %s\n",
	    cfg->db, to_shown);
	if (fflush(stdout) != 0)
		goto out;
	rc = EXIT_OK;
out:
	store_close(dst);
	store_close(src);
	master_lock_release(lock);
	free(to_shown);
	return rc;
}
