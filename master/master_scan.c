/*
 * master_scan.c - `mpfarm scan DIR...`: find the media files under each
 * folder and register them with their jobs.
 *
 * It works in three phases so that a refused scan leaves the database as it
 * was: (1) walk every folder into memory without touching the database;
 * (2) check that no two files map to the same output name, neither within
 * this scan nor against files already registered; (3) add the files in
 * transactions of SCAN_TX_FILES, short enough that a running farm's workers
 * are never starved of the write lock for long.
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
 * inside a tree could not be read (the rest is registered, like find(1)),
 * on a conflict (nothing registered) or a database error; 2 when a folder
 * given on the command line is missing, not a folder or unreadable (checked
 * before the database is opened, so it is left untouched).
 */
#include "master_scan.h"
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

/* `done` files of this scan were committed before the conflict showed
 * (only when another scan raced this one between phases 2 and 3). */
static void
scan_conflict_say(const struct config *cfg, const char *a, const char *b,
		  const char *rel, size_t done)
{
	char *out = file_output_path(cfg->output, STAGE_TRANSCRIBE, "", rel, ".txt");
	char what[96] = "nothing from this scan was registered";

	if (done > 0)
		snprintf(what, sizeof(what), "the scan stopped after registering "
		    "%zu files", done);
	say_err("scan refused: %s and %s would both be written to %s; %s "
	    "(scan a folder that holds both, so their names differ, or use a "
	    "separate --db and --output)", log_quote(a), log_quote(b),
	    log_quote(out), what);
	free(out);
}

static const struct scan *scan_sort_ctx;

static int
scan_ent_cmp(const void *a, const void *b)
{
	const struct scan_entry *x = a, *y = b;
	return strcmp(master_scan_rel(scan_sort_ctx, x), master_scan_rel(scan_sort_ctx, y));
}

/* Phase 2: a conflict refuses the whole scan before anything is written.
 * Returns 0, 1 on a conflict (reported), -1 on a store error. */
static int
scan_conflicts_check(struct scan *sc, const struct config *cfg, store_t *st)
{
	store_audit_lookup_t *lk = NULL;
	struct store_known_file kf = { 0 };
	int rc = -1;

	if (sc->nroots > 1 && sc->nents > 1) {
		struct scan_entry *tmp = xmalloc(sc->nents * sizeof(*tmp));
		memcpy(tmp, sc->ents, sc->nents * sizeof(*tmp));
		scan_sort_ctx = sc;
		qsort(tmp, sc->nents, sizeof(*tmp), scan_ent_cmp);
		for (size_t i = 1; i < sc->nents; i++) {
			if (strcmp(master_scan_rel(sc, &tmp[i - 1]), master_scan_rel(sc, &tmp[i])) != 0)
				continue;
			char *a = master_scan_abs(sc, &tmp[i - 1]), *b = master_scan_abs(sc, &tmp[i]);
			scan_conflict_say(cfg, a, b, master_scan_rel(sc, &tmp[i]), 0);
			free(a);
			free(b);
			free(tmp);
			return 1;
		}
		free(tmp);
	}
	if (st == NULL) {       /* scan --dry-run and no database yet */
		rc = 0;
		goto out;
	}
	if (store_audit_lookup_open(st, &lk) < 0)
		goto fail;
	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		char *abs = master_scan_abs(sc, e);
		if (store_audit_lookup_file(lk, master_scan_rel(sc, e), abs, &kf) < 0) {
			free(abs);
			goto fail;
		}
		e->known = kf.found;
		e->old_size = kf.size;
		e->old_mtime_ns = kf.mtime_ns;
		e->old_dev = kf.dev;
		e->old_ino = kf.ino;
		if (kf.conflict_abs != NULL)
			scan_conflict_say(cfg, kf.conflict_abs, abs,
			    master_scan_rel(sc, e), 0);
		free(abs);
		if (kf.conflict_abs != NULL) {
			rc = 1;
			goto out;
		}
	}
	rc = 0;
	goto out;
fail:
	say_err("scan: %s: %s", log_quote(cfg->db), store_errmsg(st));
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

/* Phase 3.  Returns 0, 1 on a conflict that appeared since phase 2 (another
 * scan raced us: this batch is rolled back), -1 on a store error. */
static int
scan_store(struct scan *sc, const struct config *cfg, store_t *st)
{
	char *conflict = NULL, *abs = NULL;
	bool in_tx = false;
	int rc = -1;

	for (size_t i = 0; i < sc->nents; i++) {
		const struct scan_entry *e = &sc->ents[i];
		struct scan_root *r = &sc->roots[e->root];
		enum store_add_result res;

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
		if (store_file_add(st, &mf, cfg->langs, cfg->nlangs, &res,
		    &conflict) < 0)
			goto fail;
		switch (res) {
		case STORE_ADDED: r->n_new++; break;
		case STORE_UNCHANGED: r->n_unchanged++; break;
		case STORE_CHANGED:
			r->n_changed++;
			scan_changed_say(e, abs, "");
			break;
		case STORE_CONFLICT:
			store_tx_rollback(st);
			in_tx = false;
			scan_conflict_say(cfg, conflict ? conflict : "another file",
			    abs, master_scan_rel(sc, e), i - i % SCAN_TX_FILES);
			rc = 1;
			goto out;
		}
		if ((i + 1) % SCAN_TX_FILES == 0 || i + 1 == sc->nents) {
			if (store_tx_commit(st) < 0)
				goto fail;
			in_tx = false;
		}
	}
	rc = 0;
	goto out;
fail:
	say_err("scan: %s: %s", log_quote(cfg->db), store_errmsg(st));
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
	    (e->old_ino != 0 && (e->old_dev != e->dev || e->old_ino != e->ino)));
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

	if (stat(cfg->db, &sb) == 0) {
		st = master_store_open(cfg, STORE_READONLY | STORE_OLD_OK |
		    STORE_NO_TRACE);
		if (st == NULL)
			return EXIT_FATAL;
	} else if (errno != ENOENT) {
		say_err("scan: cannot use database %s: %s", log_quote(cfg->db),
		    strerror(errno));
		return EXIT_FATAL;
	}
	if (scan_conflicts_check(sc, cfg, st) != 0)
		goto out;
	for (size_t i = 0; i < sc->nents; i++) {
		struct scan_entry *e = &sc->ents[i];
		struct scan_root *r = &sc->roots[e->root];
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
			say_err("scan: %s: %s", log_quote(cfg->db),
			    store_errmsg(st));
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
	    "created, the jobs of %lld file%s would start again; nothing was "
	    "written%s\n", (long long)nnew, nnew == 1 ? "" : "s",
	    (long long)nchanged, (long long)njobs, njobs == 1 ? "" : "s",
	    (long long)nchanged, nchanged == 1 ? "" : "s",
	    st == NULL ? " (no database yet)" : "");
	ex = sc->unreadable > 0 ? EXIT_FATAL : EXIT_OK;
out:
	store_close(st);
	return ex;
}

int
master_scan_run(struct config *cfg)
{
	struct scan sc = { 0 };
	store_t *st = NULL;
	int rc, ex = EXIT_FATAL;

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
	/* the check only reads: a refused scan changes nothing at all, not
	 * even the languages */
	if ((rc = scan_conflicts_check(&sc, cfg, st)) != 0)
		goto out;
	if (store_langs_sync(st, cfg->langs, cfg->nlangs) < 0) {
		say_err("scan: %s: %s", log_quote(cfg->db), store_errmsg(st));
		goto out;
	}
	if ((rc = scan_store(&sc, cfg, st)) != 0)
		goto out;
	scan_summary(&sc, false);
	ex = sc.unreadable > 0 ? EXIT_FATAL : EXIT_OK;
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
