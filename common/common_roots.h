/*
 * common_roots.h - named scan roots, so that hosts which mount the same
 * recordings at different places share one farm.  `[roots] NAME = /mount`
 * tells where the root NAME is mounted on this host.  The store keeps
 * every path in one canonical spelling: the mount point of the first host
 * that registered the root (a `root:NAME` row in the store's settings).
 * Paths go in canonical (scan) and come out local (the worker's open,
 * `show`, `retry --file`); with no [roots] section both mappings are the
 * identity and nothing changes.
 */
#ifndef MPFARM_COMMON_ROOTS_H
#define MPFARM_COMMON_ROOTS_H

#include "common.h"
#include "common_config.h"
#include "common_store.h"

#define ROOTS_NAME_MAX 64           /* bytes of a root's name */

struct roots_entry {
	char *name;
	char *local;                /* this host's mount point, no trailing / */
	char *canon;                /* the spelling the store keeps */
};

struct roots_map {
	struct roots_entry *v;
	int n;
};

/* Check one `[roots]` line: NAME is [A-Za-z0-9_.-]{1,64} and the value an
 * absolute path.  0, or -1 with the reason in msg. */
int  roots_line_check(const char *name, const char *value, char *msg,
		      size_t msglen);

/* Build this host's map from cfg's [roots] lines and the store's
 * `root:NAME` settings.  With `create`, a root the store does not know yet
 * is registered with this host's mount point as its canonical spelling
 * (inside its own transaction); without it, such a root maps to itself.
 * Returns 0, or -1 with a one-line message in err (m is then empty). */
int  roots_load(struct roots_map *m, const struct config *cfg, store_t *st,
		bool create, char *err, size_t errlen);
void roots_free(struct roots_map *m);

/* The canonical spelling of a path of this host (malloc'd; a copy of
 * `local` when it lies under no named root).  *entry (may be NULL) gets
 * the root it lies under, or NULL. */
char *roots_to_canon(const struct roots_map *m, const char *local,
		     const struct roots_entry **entry);
/* This host's spelling of a canonical path (malloc'd; a copy when it lies
 * under no named root).  *entry as above. */
char *roots_to_local(const struct roots_map *m, const char *canon,
		     const struct roots_entry **entry);

#endif
