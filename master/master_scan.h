/*
 * master_scan.h - what the two halves of `mpfarm scan` share: the walk of
 * the media folders into memory (master_scan_walk.c) and the comparison
 * with the store, the dry run and the registering (master_scan.c).
 */
#ifndef MPFARM_MASTER_SCAN_H
#define MPFARM_MASTER_SCAN_H

#include "master.h"

struct scan_root {
	char   *arg;            /* as given */
	char   *abs;            /* realpath */
	int64_t n_new, n_unchanged, n_changed, n_not_media;
	int64_t n_temp, n_unreadable, n_links, n_followed;
	int64_t n_conflict;     /* skipped: its output name is another file's */
	bool    named;          /* lies under a [roots] entry: abs is the
				 * canonical spelling (common_roots.h) */
};

struct scan_entry {
	int     root;
	size_t  rel_off;        /* into scan.names */
	int64_t size;
	int64_t mtime_ns;
	int64_t dev, ino;
	int     src_root;       /* a followed link: the root of its file (else -1)
				 * and its rel path, in scan.names */
	size_t  src_off;
	int64_t old_size;       /* as registered before, for "changed" lines */
	int64_t old_mtime_ns, old_dev, old_ino;
	bool    known;
	bool    conflict;       /* named and skipped (master_scan.c) */
};

struct scan {
	struct scan_root  *roots;
	int                nroots;
	bool               follow;  /* --follow-symlinks */
	struct buf         names;   /* NUL-separated rel paths */
	struct scan_entry *ents;
	size_t             nents, cap;
	int                unreadable;
	int64_t            conflicts;  /* entries skipped as conflicts */
};

/* The path of an entry relative to its root (points into sc->names,
 * valid until sc changes).  Never fails. */
const char *master_scan_rel(const struct scan *sc, const struct scan_entry *e);
/* Its absolute path, malloc'd (the caller frees it); never NULL. */
char *master_scan_abs(const struct scan *sc, const struct scan_entry *e);
/* Walk one folder of root ri (abs, with relpfx "" or "sub/" for the
 * entries) and every folder beneath it, adding media files to sc.  What
 * cannot be read is named on stderr and counted (sc->unreadable); links
 * are named and skipped or followed as the top of master_scan.c says.
 * Never fails as a whole. */
void master_scan_dir(struct scan *sc, int ri, const char *abs,
		     const char *relpfx);

#endif
