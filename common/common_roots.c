/*
 * common_roots.c - named scan roots: one farm, recordings mounted at a
 * different place on each host.  The store never learns where a host
 * mounts anything; it keeps the spelling the first host registered
 * (settings row `root:NAME`), and each host translates on the way in and
 * out by replacing one leading path prefix with another.  A prefix matches
 * only at a component boundary, so /mnt/a never captures /mnt/ab.
 */
#include "common_roots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROOTS_KEY_PREFIX "root:"

int
roots_line_check(const char *name, const char *value, char *msg,
		 size_t msglen)
{
	size_t n = strlen(name);

	if (n == 0 || n > ROOTS_NAME_MAX ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_.-") != n) {
		snprintf(msg, msglen, "[roots] name \"%.80s\" must be 1 to %d "
		    "letters, digits, '_', '.' or '-'", name, ROOTS_NAME_MAX);
		return -1;
	}
	if (value[0] != '/') {
		snprintf(msg, msglen, "[roots] %s must be an absolute path, not "
		    "\"%.200s\"", name, value);
		return -1;
	}
	return 0;
}

/* A copy of p without trailing slashes ("/" stays "/"). */
static char *
roots_path_trim(const char *p)
{
	size_t n = strlen(p);

	while (n > 1 && p[n - 1] == '/')
		n--;
	return xstrndup(p, n);
}

void
roots_free(struct roots_map *m)
{
	for (int i = 0; i < m->n; i++) {
		free(m->v[i].name);
		free(m->v[i].local);
		free(m->v[i].canon);
	}
	free(m->v);
	m->v = NULL;
	m->n = 0;
}

int
roots_load(struct roots_map *m, const struct config *cfg, store_t *st,
	   bool create, char *err, size_t errlen)
{
	char key[sizeof(ROOTS_KEY_PREFIX) + ROOTS_NAME_MAX];

	m->v = NULL;
	m->n = 0;
	for (int i = 0; i < cfg->nentries; i++) {
		const struct config_entry *e = &cfg->entries[i];
		struct roots_entry *r;
		char *canon = NULL;
		int rc;

		if (strcmp(e->section, "roots") != 0)
			continue;
		m->v = xrealloc(m->v, sizeof(*m->v) * (size_t)(m->n + 1));
		r = &m->v[m->n++];
		r->name = xstrdup(e->key);
		r->local = roots_path_trim(e->value);
		r->canon = NULL;
		snprintf(key, sizeof(key), ROOTS_KEY_PREFIX "%s", e->key);
		rc = st ? store_setting_get(st, key, &canon) : 1;
		if (rc == 1 && create) {
			if (store_setting_add(st, key, r->local) < 0 ||
			    store_setting_get(st, key, &canon) != 0)
				rc = -1;
		}
		if (rc < 0) {
			snprintf(err, errlen, "[roots] %s: %s", e->key,
			    store_errmsg(st));
			roots_free(m);
			return -1;
		}
		r->canon = canon ? canon : xstrdup(r->local);
	}
	return 0;
}

/* The entry whose `which` prefix (local or canon) path lies under, the
 * longest one when roots nest; NULL if none. */
static const struct roots_entry *
roots_match(const struct roots_map *m, const char *path, bool canon)
{
	const struct roots_entry *best = NULL;
	size_t bestlen = 0;

	for (int i = 0; i < m->n; i++) {
		const char *p = canon ? m->v[i].canon : m->v[i].local;
		size_t n = strlen(p);

		if (strcmp(p, "/") == 0)
			n = 0;
		if (strncmp(path, p, n) != 0 ||
		    (path[n] != '\0' && path[n] != '/'))
			continue;
		if (best == NULL || n > bestlen) {
			best = &m->v[i];
			bestlen = n;
		}
	}
	return best;
}

static char *
roots_swap(const struct roots_map *m, const char *path, bool from_canon,
	   const struct roots_entry **entry)
{
	const struct roots_entry *r = roots_match(m, path, from_canon);
	const char *from, *to;
	size_t n;

	if (entry)
		*entry = r;
	if (r == NULL)
		return xstrdup(path);
	from = from_canon ? r->canon : r->local;
	to = from_canon ? r->local : r->canon;
	n = strcmp(from, "/") == 0 ? 0 : strlen(from);
	if (path[n] == '\0')
		return xstrdup(to);
	return xasprintf("%s%s", strcmp(to, "/") == 0 ? "" : to, path + n);
}

char *
roots_to_canon(const struct roots_map *m, const char *local,
	       const struct roots_entry **entry)
{
	return roots_swap(m, local, false, entry);
}

char *
roots_to_local(const struct roots_map *m, const char *canon,
	       const struct roots_entry **entry)
{
	return roots_swap(m, canon, true, entry);
}
