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
#include "master.h"
#include "common_store_audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_TX_FILES 4000

static const char *const scan_media_exts[] = {
	"wav", "mp3", "m4a", "flac", "ogg", "oga", "opus", "aac", "wma",
	"aiff", "aif", "aifc", "mp4", "mov", "mkv", "webm", "avi", "m4v",
	"mpg", "mpeg", "3gp", "3g2", "amr", "wv", "ape", "mka", "m4b", "ts",
	"mts", "m2ts", "wmv", "flv", "ogv", "caf", "au", "spx", NULL
};

/* Partial downloads and copies, editor droppings and our own temp files:
 * never media, whatever their extension says. */
static const char *const scan_temp_exts[] = {
	"part", "partial", "crdownload", "download", "tmp", "temp", NULL
};

struct scan_root {
	char   *arg;            /* as given */
	char   *abs;            /* realpath */
	int64_t n_new, n_unchanged, n_changed, n_not_media;
	int64_t n_temp, n_unreadable, n_links, n_followed;
};

struct scan_entry {
	int     root;
	size_t  rel_off;        /* into scan.names */
	int64_t size;
	int64_t mtime_ns;
	int64_t dev, ino;
	int     src_root;       /* a followed link: the root of its file, */
	size_t  src_off;        /* and its rel path (scan.names); else -1 */
	int64_t old_size;       /* as registered before, for "changed" lines */
	int64_t old_mtime_ns, old_dev, old_ino;
	bool    known;
};

struct scan {
	struct scan_root  *roots;
	int                nroots;
	bool               follow;  /* --follow-symlinks */
	struct buf         names;   /* NUL-separated rel paths */
	struct scan_entry *ents;
	size_t             nents, cap;
	int                unreadable;
};

static const char *
scan_rel(const struct scan *sc, const struct scan_entry *e)
{
	return sc->names.data + e->rel_off;
}

static char *
scan_abs(const struct scan *sc, const struct scan_entry *e)
{
	const char *root = sc->roots[e->root].abs;
	return xasprintf("%s%s%s", root, strcmp(root, "/") == 0 ? "" : "/",
	    scan_rel(sc, e));
}

/* Extension after the last dot of the base name, or "" (".mp3" alone is a
 * hidden file with no extension). */
static const char *
scan_ext(const char *name)
{
	const char *dot = strrchr(name, '.');
	return (dot == NULL || dot == name) ? "" : dot + 1;
}

static bool
scan_ext_in(const char *ext, const char *const *list)
{
	for (; *list; list++)
		if (strcasecmp(ext, *list) == 0)
			return true;
	return false;
}

static bool
scan_is_temp(const char *name)
{
	size_t n = strlen(name);

	return file_is_temp(name) || strncmp(name, "._", 2) == 0 ||
	    strncmp(name, ".~lock.", 7) == 0 || (n > 0 && name[n - 1] == '~') ||
	    scan_ext_in(scan_ext(name), scan_temp_exts);
}

static struct scan_entry *
scan_add(struct scan *sc, int ri, const char *relpfx, const char *name,
	 const struct stat *sb)
{
	struct scan_entry *e;

	if (sc->nents == sc->cap) {
		sc->cap = sc->cap ? sc->cap * 2 : 1024;
		sc->ents = xrealloc(sc->ents, sc->cap * sizeof(*sc->ents));
	}
	e = &sc->ents[sc->nents++];
	e->root = ri;
	e->rel_off = sc->names.len;
	e->size = (int64_t)sb->st_size;
	e->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
	e->dev = (int64_t)sb->st_dev;
	e->ino = (int64_t)sb->st_ino;
	e->src_root = -1;
	e->known = false;
	buf_append(&sc->names, relpfx, strlen(relpfx));
	buf_append(&sc->names, name, strlen(name) + 1);
	return e;
}

/* "scan: <what about> DIR/NAME<tail>" with the whole path quoted once. */
static void
scan_say_path(const char *dir, const char *name, const char *what,
	      const char *tail)
{
	char *path = xasprintf("%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/",
	    name);
	say_err("scan: %s%s%s", what, log_quote(path), tail);
	free(path);
}

static int
scan_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The scan root holding `real` (a resolved path), or -1. */
static int
scan_root_of(const struct scan *sc, const char *real)
{
	for (int k = 0; k < sc->nroots; k++) {
		const char *root = sc->roots[k].abs;
		size_t n = strlen(root);
		if (strcmp(root, "/") == 0 ||
		    (strncmp(real, root, n) == 0 && real[n] == '/'))
			return k;
	}
	return -1;
}

/* A symbolic link with a media extension: named and skipped, or with
 * --follow-symlinks registered when it resolves to a regular file beneath
 * a scan root (see the top of this file). */
static void
scan_link(struct scan *sc, int ri, const char *abs, const char *relpfx,
	  const char *name)
{
	struct scan_root *r = &sc->roots[ri];
	char *path = xasprintf("%s%s%s", abs, strcmp(abs, "/") == 0 ? "" : "/",
	    name);
	char *real = NULL, why[PATH_MAX + 80];
	struct stat sb;
	int k;

	r->n_links++;
	if (!sc->follow) {
		say_err("scan: skipped symbolic link %s (links are not followed; "
		    "--follow-symlinks includes links to files inside a scan "
		    "root)", log_quote(path));
		goto out;
	}
	if ((real = realpath(path, NULL)) == NULL ||
	    lstat(real, &sb) < 0) {
		say_err("scan: skipped symbolic link %s: %s", log_quote(path),
		    errno == ENOENT ? "broken" : strerror(errno));
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		/* following them risks loops and files seen twice */
		say_err("scan: skipped symbolic link %s: links to folders are "
		    "never followed", log_quote(path));
		goto out;
	}
	if ((k = scan_root_of(sc, real)) < 0) {
		snprintf(why, sizeof(why), "%s", log_quote(real));
		say_err("scan: skipped symbolic link %s: it leads outside the "
		    "scan roots (to %s)", log_quote(path), why);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		say_err("scan: skipped symbolic link %s: not a link to a regular "
		    "file", log_quote(path));
		goto out;
	}
	if (access(real, R_OK) < 0) {
		say_err("scan: cannot read %s (through symbolic link %s): %s "
		    "(skipped)", log_quote(real), log_quote(path),
		    strerror(errno));
		r->n_unreadable++;
		sc->unreadable++;
		goto out;
	}
	const char *root = sc->roots[k].abs;
	const char *src = real + (strcmp(root, "/") == 0 ? 1 : strlen(root) + 1);
	size_t off = sc->names.len;
	buf_append(&sc->names, src, strlen(src) + 1);
	struct scan_entry *e = scan_add(sc, ri, relpfx, name, &sb);
	e->src_root = k;
	e->src_off = off;
	r->n_links--;
	r->n_followed++;
out:
	free(path);
	free(real);
}

/* One folder: files are registered in name order, then each subfolder is
 * walked with this folder closed, so a deep tree costs one descriptor. */
static void
scan_dir(struct scan *sc, int ri, const char *abs, const char *relpfx)
{
	struct scan_root *r = &sc->roots[ri];
	char **names = NULL, **subs = NULL;
	size_t nnames = 0, cap = 0, nsubs = 0;
	struct dirent *de;
	DIR *dir = NULL;
	int fd;

	fd = open(abs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		say_err("scan: cannot read folder %s: %s (skipped)",
		    log_quote(abs), strerror(errno));
		if (fd >= 0)
			close(fd);
		r->n_unreadable++;
		sc->unreadable++;
		return;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(dir)) == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (nnames == cap) {
			cap = cap ? cap * 2 : 64;
			names = xrealloc(names, cap * sizeof(*names));
		}
		/* the d_type byte rides in front of the name: one allocation */
		size_t len = strlen(de->d_name);
		char *p = xmalloc(len + 2);
		p[0] = (char)de->d_type;
		memcpy(p + 1, de->d_name, len + 1);
		names[nnames++] = p + 1;
	}
	if (errno != 0) {
		say_err("scan: cannot list folder %s: %s (partly skipped)",
		    log_quote(abs), strerror(errno));
		r->n_unreadable++;
		sc->unreadable++;
	}
	if (nnames > 1)
		qsort(names, nnames, sizeof(*names), scan_name_cmp);
	subs = xmalloc((nnames ? nnames : 1) * sizeof(*subs));

	for (size_t i = 0; i < nnames; i++) {
		const char *name = names[i];
		unsigned char type = (unsigned char)name[-1];
		bool media = scan_ext_in(scan_ext(name), scan_media_exts);
		struct stat sb;
		char why[160];

		if (type == DT_UNKNOWN) {
			if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
				goto unreadable;
			type = S_ISDIR(sb.st_mode) ? DT_DIR : S_ISLNK(sb.st_mode)
			    ? DT_LNK : S_ISREG(sb.st_mode) ? DT_REG : DT_FIFO;
		}
		if (type == DT_DIR) {
			subs[nsubs++] = (char *)name;
			continue;
		}
		if (scan_is_temp(name)) {
			r->n_temp++;
			continue;
		}
		if (type == DT_LNK) {
			/* named: media, and folders the user may expect walked */
			if (!media && (fstatat(fd, name, &sb, 0) < 0 ||
			    !S_ISDIR(sb.st_mode)))
				r->n_not_media++;
			else
				scan_link(sc, ri, abs, relpfx, name);
			continue;
		}
		if (!media) {
			r->n_not_media++;
			continue;
		}
		if (type != DT_REG) {
			scan_say_path(abs, name, "", " is not a regular file "
			    "(skipped)");
			r->n_not_media++;
			continue;
		}
		if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    faccessat(fd, name, R_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) < 0)
			goto unreadable;
		if (!S_ISREG(sb.st_mode))
			continue;       /* swapped since the listing: next scan */
		scan_add(sc, ri, relpfx, name, &sb);
		continue;
unreadable:
		snprintf(why, sizeof(why), ": %s (skipped)", strerror(errno));
		scan_say_path(abs, name, "cannot read ", why);
		r->n_unreadable++;
		sc->unreadable++;
	}
	closedir(dir);

	for (size_t i = 0; i < nsubs; i++) {
		char *sub_abs = xasprintf("%s%s%s", abs,
		    strcmp(abs, "/") == 0 ? "" : "/", subs[i]);
		char *sub_rel = xasprintf("%s%s/", relpfx, subs[i]);
		scan_dir(sc, ri, sub_abs, sub_rel);
		free(sub_abs);
		free(sub_rel);
	}
	for (size_t i = 0; i < nnames; i++)
		free(names[i] - 1);
	free(names);
	free(subs);
}

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
	return strcmp(scan_rel(scan_sort_ctx, x), scan_rel(scan_sort_ctx, y));
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
			if (strcmp(scan_rel(sc, &tmp[i - 1]), scan_rel(sc, &tmp[i])) != 0)
				continue;
			char *a = scan_abs(sc, &tmp[i - 1]), *b = scan_abs(sc, &tmp[i]);
			scan_conflict_say(cfg, a, b, scan_rel(sc, &tmp[i]), 0);
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
		char *abs = scan_abs(sc, e);
		if (store_audit_lookup_file(lk, scan_rel(sc, e), abs, &kf) < 0) {
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
			    scan_rel(sc, e), 0);
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
		abs = scan_abs(sc, e);
		struct media_file mf = { r->abs, scan_rel(sc, e), abs, e->size,
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
			    abs, scan_rel(sc, e), i - i % SCAN_TX_FILES);
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
		char *abs = scan_abs(sc, e);
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
		scan_dir(&sc, i, sc.roots[i].abs, "");

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
