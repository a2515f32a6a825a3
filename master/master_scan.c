/*
 * master_scan.c - `mpfarm scan DIR...`: find the media files under each
 * folder and register them with their jobs.
 *
 * It works in three phases: (1) walk every folder into memory without
 * touching the database; (2) find the files whose output name is already
 * another file's, registered before or met first in this scan: each is
 * named on stderr and skipped, so one file dropped into a folder cannot
 * block every later scan of it, and the name keeps its first owner; (3) add
 * the rest in transactions of SCAN_TX_FILES, short enough that a running
 * farm's workers are never starved of the write lock for long.
 *
 * Symbolic links are not followed: a link among the recordings could make
 * the farm upload any file the operator can read.  Each one with a media
 * extension is named and skipped; --follow-symlinks ([farm]
 * follow_symlinks) registers a link that resolves to a regular file
 * beneath one of this scan's roots, under the link's name, with the file
 * it resolves to recorded for the worker, which opens that beneath its root
 * (worker_media.c).  Links to folders are never followed (loops, files
 * seen twice).  --dry-run walks and compares the same way, then prints
 * what a scan would register and opens the database read-only, if at all.
 *
 * Exit status: 0 when everything was registered; 1 when a file or folder
 * inside a tree could not be read or a file was skipped for its name (the
 * rest is registered, like find(1)), or on a database error; 2 when a folder
 * given on the command line is missing, not a folder or unreadable (checked
 * before the database is opened, so it is left untouched).
 */
#include "master_scan.h"
#include "common_roots.h"
#include "common_db.h"
#include "common_store_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_TX_FILES 4000

/* Every argument must be a readable folder before anything else happens. */
static int
scan_roots_check(struct scan *sc, struct config *cfg)
{
	sc->roots = xcalloc((size_t)cfg->nargs, sizeof(*sc->roots));
	for (int i = 0; i < cfg->nargs; i++) {
		const char *arg = cfg->args[i];
		struct scan_root *r = &sc->roots[sc->nroots];
		struct stat sb;
		char *abs;
		int fd;

		if (stat(arg, &sb) < 0) {
			say_err("scan: cannot scan %s: %s", log_quote(arg),
			    strerror(errno));
			return -1;
		}
		if (!S_ISDIR(sb.st_mode)) {
			say_err("scan: %s is not a folder (give the folder that "
			    "holds the media files)", log_quote(arg));
			return -1;
		}
		fd = open(arg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			say_err("scan: cannot read folder %s: %s", log_quote(arg),
			    strerror(errno));
			return -1;
		}
		close(fd);
		if ((abs = realpath(arg, NULL)) == NULL) {
			say_err("scan: cannot resolve %s: %s", log_quote(arg),
			    strerror(errno));
			return -1;
		}
		bool dup = false;
		for (int k = 0; k < sc->nroots; k++) {
			const char *o = sc->roots[k].abs;
			size_t ol = strlen(o);
			if (strcmp(o, abs) == 0)
				dup = true;
			else if (strncmp(o, abs, ol) == 0 &&
			    (abs[ol] == '/' || strcmp(o, "/") == 0)) {
				say_err("scan: %s is inside %s, so its files are "
				    "scanned once, as part of %s", log_quote(abs),
				    log_quote(o), log_quote(o));
				dup = true;
			}
		}
		if (dup) {
			free(abs);
			continue;
		}
		r->arg = xstrdup(arg);
		r->abs = abs;
		sc->nroots++;
	}
	/* a root given after a folder inside it: drop the inner one */
	for (int i = 0; i < sc->nroots; i++) {
		for (int k = 0; k < sc->nroots; k++) {
			const char *o = sc->roots[k].abs, *a = sc->roots[i].abs;
			size_t ol = strlen(o);
			if (k == i || strncmp(o, a, ol) != 0 ||
			    !(a[ol] == '/' || strcmp(o, "/") == 0))
				continue;
			say_err("scan: %s is inside %s, so its files are scanned "
			    "once, as part of %s", log_quote(a), log_quote(o),
			    log_quote(o));
			free(sc->roots[i].arg);
			free(sc->roots[i].abs);
			memmove(&sc->roots[i], &sc->roots[i + 1],
			    (size_t)(sc->nroots - i - 1) * sizeof(*sc->roots));
			sc->nroots--;
			i = -1;
			break;
		}
	}
	return 0;
}

/* Skip entry e, whose output name belongs to `holder` (another path),
 * and say so; `before` tells whether holder was registered by an earlier
 * scan or met first in this one. */
static void
scan_conflict_skip(struct scan *sc, const struct config *cfg,
		   struct scan_entry *e, const char *holder, bool before)
{
	char *abs = master_scan_abs(sc, e);
	char *out = file_output_path(cfg->output, STAGE_TRANSCRIBE, "",
	    master_scan_rel(sc, e), ".txt");

	e->conflict = true;
	sc->roots[e->root].n_conflict++;
	sc->conflicts++;
	say_err("scan: %s %s: %s, %s, already has its output name (%s); scan "
	    "a folder that holds both, so their names differ, or use a "
	    "separate --db and --output",
	    cfg->dry_run ? "would skip" : "skipped", log_quote(abs),
	    log_quote(holder),
	    before ? "registered before" : "found first in this scan",
	    log_quote(out));
	free(out);
	free(abs);
}

static const struct scan *scan_sort_ctx;

/* Orders entry indices by rel path, then by root as given, then as
 * walked: the first of equal names is the one that keeps it. */
static int
scan_ent_cmp(const void *a, const void *b)
{
	size_t i = *(const size_t *)a, k = *(const size_t *)b;
	const struct scan_entry *x = &scan_sort_ctx->ents[i];
	const struct scan_entry *y = &scan_sort_ctx->ents[k];
	int c = strcmp(master_scan_rel(scan_sort_ctx, x),
	    master_scan_rel(scan_sort_ctx, y));

	if (c != 0)
		return c;
	if (x->root != y->root)
		return x->root < y->root ? -1 : 1;
	return i < k ? -1 : i > k;
}

/* Files of this scan sharing one name (only from different roots): the
 * first not already skipped keeps it. */
static void
scan_conflicts_within(struct scan *sc, const struct config *cfg)
{
	size_t *ix, first = 0;
	bool have = false;

	if (sc->nroots < 2 || sc->nents < 2)
		return;
	ix = xmalloc(sc->nents * sizeof(*ix));
	for (size_t i = 0; i < sc->nents; i++)
		ix[i] = i;
	scan_sort_ctx = sc;
	qsort(ix, sc->nents, sizeof(*ix), scan_ent_cmp);
	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[ix[i]];
		if (i > 0 && strcmp(master_scan_rel(sc, e),
		    master_scan_rel(sc, &sc->ents[ix[i - 1]])) != 0)
			have = false;
		if (e->conflict)
			continue;
		if (!have) {
			first = ix[i];
			have = true;
			continue;
		}
		char *holder = master_scan_abs(sc, &sc->ents[first]);
		scan_conflict_skip(sc, cfg, e, holder, false);
		free(holder);
	}
	free(ix);
}

/* Between the walk and phase 2: the roots that lie under a named root
 * ([roots]) take the spelling the store keeps, so that every host names a
 * shared file alike.  Device and inode numbers of a shared file differ
 * from host to host (NFS): they are not recorded, and a file there is
 * known by its path, size and modification time.  With `create` (a real
 * scan) a named root the store does not know yet is registered with this
 * host's mount point.  Returns 0, or -1 (reported). */
static int
scan_roots_canon(struct scan *sc, const struct config *cfg, store_t *st,
		 bool create)
{
	struct roots_map map;
	char err[512];

	if (roots_load(&map, cfg, st, create, err, sizeof(err)) < 0) {
		say_err("scan: %s", err);
		return -1;
	}
	for (int i = 0; i < sc->nroots; i++) {
		const struct roots_entry *re;
		char *canon = roots_to_canon(&map, sc->roots[i].abs, &re);
		free(sc->roots[i].abs);
		sc->roots[i].abs = canon;
		sc->roots[i].named = re != NULL;
	}
	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		if (sc->roots[e->root].named ||
		    (e->src_root >= 0 && sc->roots[e->src_root].named))
			e->dev = e->ino = 0;
	}
	roots_free(&map);
	return 0;
}

/* Phase 2: compare with the registered files (st NULL: no database yet)
 * and mark, name and count every file whose output name is taken.  Only
 * reads.  Returns 0, or -1 on a store error (reported). */
static int
scan_conflicts_check(struct scan *sc, const struct config *cfg, store_t *st)
{
	store_audit_lookup_t *lk = NULL;
	struct store_known_file kf = { 0 };
	int rc = -1;

	if (st != NULL && store_audit_lookup_open(st, &lk) < 0)
		goto fail;
	for (size_t i = 0; st != NULL && i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		char *abs = master_scan_abs(sc, e);
		int lrc = store_audit_lookup_file(lk, master_scan_rel(sc, e),
		    abs, &kf);
		free(abs);
		if (lrc < 0)
			goto fail;
		e->known = kf.found;
		e->old_size = kf.size;
		e->old_mtime_ns = kf.mtime_ns;
		e->old_dev = kf.dev;
		e->old_ino = kf.ino;
		if (kf.conflict_abs != NULL)
			scan_conflict_skip(sc, cfg, e, kf.conflict_abs, true);
	}
	scan_conflicts_within(sc, cfg);
	rc = 0;
	goto out;
fail:
	say_err("scan: %s", store_errmsg(st));
out:
	store_known_file_clear(&kf);
	store_audit_lookup_close(lk);
	return rc;
}

/* "changed: PATH (...)", the line scan prints for a file whose jobs
 * start again (verb "" or "would " for --dry-run). */
static void
scan_changed_say(const struct scan_entry *e, const char *abs,
		 const char *verb)
{
	if (e->known && e->old_size != e->size)
		printf("changed: %s (size %lld -> %lld bytes; its jobs %sstart "
		    "again)\n", log_quote(abs), (long long)e->old_size,
		    (long long)e->size, verb);
	else if (e->known && e->old_mtime_ns == e->mtime_ns)
		printf("changed: %s (another file under the same name; its jobs "
		    "%sstart again)\n", log_quote(abs), verb);
	else
		printf("changed: %s (modified since the last scan; its jobs "
		    "%sstart again)\n", log_quote(abs), verb);
}

/* Phase 3.  A conflict that appeared since phase 2 (another scan raced
 * this one) skips that file like the others.  Returns 0, or -1 on a store
 * error (reported; the batch under way is rolled back). */
static int
scan_store(struct scan *sc, const struct config *cfg, store_t *st)
{
	char *conflict = NULL, *abs = NULL;
	size_t batch = 0;
	bool in_tx = false, grew = false;
	int rc = -1;

	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		struct scan_root *r = &sc->roots[e->root];
		enum store_add_result res;

		if (e->conflict)
			continue;
		if (!in_tx) {
			if (store_tx_begin(st) < 0)
				goto fail;
			in_tx = true;
		}
		free(abs);
		abs = master_scan_abs(sc, e);
		struct media_file mf = { r->abs, master_scan_rel(sc, e), abs, e->size,
		    e->mtime_ns, e->dev, e->ino,
		    e->src_root >= 0 ? sc->roots[e->src_root].abs : NULL,
		    e->src_root >= 0 ? sc->names.data + e->src_off : NULL };
		free(conflict);
		conflict = NULL;
		if (store_file_add(st, &mf, cfg->langs, cfg->nlangs, &res,
		    &conflict) < 0)
			goto fail;
		grew |= res == STORE_ADDED;
		switch (res) {
		case STORE_ADDED: r->n_new++; break;
		case STORE_UNCHANGED: r->n_unchanged++; break;
		case STORE_CHANGED:
			r->n_changed++;
			scan_changed_say(e, abs, "");
			break;
		case STORE_CONFLICT:
			scan_conflict_skip(sc, cfg, e, conflict ? conflict :
			    "another file", true);
			break;
		}
		if (++batch == SCAN_TX_FILES) {
			if (store_tx_commit(st) < 0)
				goto fail;
			in_tx = false;
			batch = 0;
		}
	}
	if (in_tx && store_tx_commit(st) < 0)
		goto fail;
	in_tx = false;
	if (grew && store_stats_refresh(st) < 0)
		say_err("scan: warning: table statistics not refreshed (%s); "
		    "autovacuum will", store_errmsg(st));
	rc = 0;
	goto out;
fail:
	say_err("scan: %s", store_errmsg(st));
	if (in_tx)
		store_tx_rollback(st);
out:
	free(abs);
	free(conflict);
	return rc;
}

static void
scan_summary(const struct scan *sc, bool dry)
{
	for (int i = 0; i < sc->nroots; i++) {
		const struct scan_root *r = &sc->roots[i];
		printf("%s %s: %lld new, %lld unchanged, %lld changed, "
		    "%lld skipped (not media)", dry ? "would scan" : "scanned",
		    log_quote(r->abs),
		    (long long)r->n_new, (long long)r->n_unchanged,
		    (long long)r->n_changed, (long long)r->n_not_media);
		if (r->n_temp > 0)
			printf(", %lld temporary or system file%s skipped",
			    (long long)r->n_temp, r->n_temp == 1 ? "" : "s");
		if (r->n_links > 0)
			printf(", %lld symbolic link%s skipped (named above)",
			    (long long)r->n_links, r->n_links == 1 ? "" : "s");
		if (r->n_followed > 0)
			printf(", %lld symbolic link%s followed",
			    (long long)r->n_followed,
			    r->n_followed == 1 ? "" : "s");
		if (r->n_unreadable > 0)
			printf(", %lld unreadable (named above)",
			    (long long)r->n_unreadable);
		if (r->n_conflict > 0)
			printf(", %lld skipped (output name taken, named above)",
			    (long long)r->n_conflict);
		printf("\n");
	}
}

/* True when a registered file would be recorded anew (store_file_add's
 * STORE_CHANGED, by what the look up reads: size, mtime, inode). */
static bool
scan_is_changed(const struct scan_entry *e)
{
	return e->known && (e->old_size != e->size ||
	    e->old_mtime_ns != e->mtime_ns ||
	    (e->ino != 0 && e->old_ino != 0 &&
	    (e->old_dev != e->dev || e->old_ino != e->ino)));
}

/* scan --dry-run: what a scan would register and the jobs it would make,
 * with the database opened read-only (not created when missing, not
 * migrated when older).  Returns the exit status. */
static int
scan_dry_run(struct scan *sc, const struct config *cfg)
{
	int64_t nnew = 0, nchanged = 0, njobs = 0, missing;
	struct stat sb;
	store_t *st = NULL;
	int ex = EXIT_FATAL;
	bool exists = db_target_is_pg(cfg->db) || stat(cfg->db, &sb) == 0;

	if (exists) {
		if (master_store_open_into(cfg, STORE_READONLY | STORE_OLD_OK |
		    STORE_NO_TRACE | STORE_EMPTY_OK, &st) < 0)
			return EXIT_FATAL;
	} else if (errno != ENOENT) {
		say_err("scan: cannot use database %s: %s", log_quote(cfg->db),
		    strerror(errno));
		return EXIT_FATAL;
	}
	if (scan_roots_canon(sc, cfg, st, false) < 0 ||
	    scan_conflicts_check(sc, cfg, st) != 0)
		goto out;
	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		struct scan_root *r = &sc->roots[e->root];
		if (e->conflict)
			continue;
		char *abs = master_scan_abs(sc, e);
		if (!e->known) {
			printf("new: %s\n", log_quote(abs));
			r->n_new++;
			nnew++;
		} else if (scan_is_changed(e)) {
			scan_changed_say(e, abs, "would ");
			r->n_changed++;
			nchanged++;
		} else {
			r->n_unchanged++;
		}
		free(abs);
	}
	njobs = nnew * (1 + cfg->nlangs);
	for (int i = 0; st != NULL && i < cfg->nlangs; i++) {
		if (store_audit_lang_missing(st, cfg->langs[i], &missing) < 0) {
			say_err("scan: %s", store_errmsg(st));
			goto out;
		}
		if (missing > 0)
			printf("new language %s: %lld registered file%s would get "
			    "its translation job\n", cfg->langs[i],
			    (long long)missing, missing == 1 ? "" : "s");
		njobs += missing;
	}
	scan_summary(sc, true);
	printf("dry run: %lld new file%s, %lld changed; %lld job%s would be "
	    "created, the jobs of %lld file%s would start again; ",
	    (long long)nnew, nnew == 1 ? "" : "s",
	    (long long)nchanged, (long long)njobs, njobs == 1 ? "" : "s",
	    (long long)nchanged, nchanged == 1 ? "" : "s");
	if (sc->conflicts > 0)
		printf("%lld file%s would be skipped (output name taken); ",
		    (long long)sc->conflicts, sc->conflicts == 1 ? "" : "s");
	printf("nothing was written%s\n", st != NULL ? "" : exists ?
	    " (no farm in this database yet)" : " (no database yet)");
	ex = sc->unreadable > 0 || sc->conflicts > 0 ? EXIT_FATAL : EXIT_OK;
out:
	store_close(st);
	return ex;
}

int
master_scan_run(struct config *cfg)
{
	struct scan sc = { 0 };
	store_t *st = NULL;
	int ex = EXIT_FATAL;

	buf_init(&sc.names);
	sc.follow = cfg->follow_symlinks;
	if (scan_roots_check(&sc, cfg) < 0) {
		ex = EXIT_USAGE;
		goto out;
	}
	for (int i = 0; i < sc.nroots; i++)
		master_scan_dir(&sc, i, sc.roots[i].abs, "");

	/* easy to miss when scanning from another folder than the config's */
	if (cfg->nlangs == 0)
		say_err("scan: no target languages configured (%s%s): only "
		    "transcription jobs are created; translations are added by "
		    "a later scan with [translate] languages set",
		    cfg->config_path ? "none in " : "no mpfarm.conf read",
		    cfg->config_path ? log_quote(cfg->config_path) : "");
	if (cfg->dry_run) {
		ex = scan_dry_run(&sc, cfg);
		goto out;
	}
	if ((st = master_store_open(cfg, 0)) == NULL)
		goto out;
	if (scan_roots_canon(&sc, cfg, st, true) < 0 ||
	    scan_conflicts_check(&sc, cfg, st) < 0)
		goto out;
	if (store_langs_sync(st, cfg->langs, cfg->nlangs) < 0) {
		say_err("scan: %s", store_errmsg(st));
		goto out;
	}
	if (scan_store(&sc, cfg, st) < 0)
		goto out;
	scan_summary(&sc, false);
	ex = sc.unreadable > 0 || sc.conflicts > 0 ? EXIT_FATAL : EXIT_OK;
out:
	fflush(stdout);
	if (st != NULL)
		store_close(st);
	for (int i = 0; i < sc.nroots; i++) {
		free(sc.roots[i].arg);
		free(sc.roots[i].abs);
	}
	free(sc.roots);
	free(sc.ents);
	buf_free(&sc.names);
	return ex;
}
