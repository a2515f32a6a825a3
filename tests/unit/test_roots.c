/*
 * test_roots.c - common_roots.c: the prefix swap between this host's mount
 * points and the store's spelling (component boundaries, nested roots, the
 * identity when no root matches), the `[roots]` line check, and loading the
 * map from a store (first registration wins, read-only load maps a root
 * the store does not know to itself).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common_roots.h"

static struct roots_entry entries[] = {
	{ "archive", "/net/rec", "/mnt/archive" },
	{ "inner",   "/data/in", "/mnt/archive/inner" },
	{ "top",     "/",        "/srv/top" },
};

static void
swap_is(bool to_canon, const struct roots_map *m, const char *in,
	const char *want, const char *want_name)
{
	const struct roots_entry *re = NULL;
	char *got = to_canon ? roots_to_canon(m, in, &re) :
	    roots_to_local(m, in, &re);

	assert_string_equal(got, want);
	if (want_name == NULL)
		assert_null(re);
	else
		assert_string_equal(re->name, want_name);
	free(got);
}

static void
test_swap(void **state)
{
	struct roots_map m = { entries, 2 };
	(void)state;

	swap_is(true, &m, "/net/rec/a/b.wav", "/mnt/archive/a/b.wav", "archive");
	swap_is(true, &m, "/net/rec", "/mnt/archive", "archive");
	/* a prefix matches at a component boundary only */
	swap_is(true, &m, "/net/record/x.wav", "/net/record/x.wav", NULL);
	swap_is(true, &m, "/elsewhere/x.wav", "/elsewhere/x.wav", NULL);
	swap_is(false, &m, "/mnt/archive/a/b.wav", "/net/rec/a/b.wav", "archive");
	/* nested roots: the longest canonical prefix wins */
	swap_is(false, &m, "/mnt/archive/inner/c.wav", "/data/in/c.wav", "inner");
	swap_is(false, &m, "/mnt/archive/innerx/c.wav",
	    "/net/rec/innerx/c.wav", "archive");
	swap_is(true, &m, "/data/in/c.wav", "/mnt/archive/inner/c.wav", "inner");
}

static void
test_slash_root(void **state)
{
	struct roots_map m = { &entries[2], 1 };
	(void)state;

	swap_is(true, &m, "/a/b.wav", "/srv/top/a/b.wav", "top");
	swap_is(false, &m, "/srv/top/a/b.wav", "/a/b.wav", "top");
	swap_is(false, &m, "/srv/top", "/", "top");
	swap_is(false, &m, "/srv/topper", "/srv/topper", NULL);
}

static void
test_line_check(void **state)
{
	char msg[256];
	(void)state;

	assert_int_equal(roots_line_check("archive_1.x-y", "/m", msg,
	    sizeof(msg)), 0);
	assert_int_equal(roots_line_check("bad name", "/m", msg, sizeof(msg)),
	    -1);
	assert_non_null(strstr(msg, "name"));
	assert_int_equal(roots_line_check("", "/m", msg, sizeof(msg)), -1);
	assert_int_equal(roots_line_check("a", "rel/x", msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "absolute"));
}

static void
config_with_root(struct config *cfg, struct config_entry *e, char *value)
{
	memset(cfg, 0, sizeof(*cfg));
	e->section = "roots";
	e->key = "archive";
	e->value = value;
	e->where = "test:1";
	cfg->entries = e;
	cfg->nentries = 1;
}

static void
test_load_first_wins(void **state)
{
	char dir[] = "/tmp/mpfarm-roots-XXXXXX", db[64], err[256];
	struct config cfg;
	struct config_entry e;
	struct roots_map m;
	store_t *st;
	(void)state;

	assert_non_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/t.db", dir);
	assert_int_equal(store_open(&st, db, NULL, err, sizeof(err)), 0);

	/* read only: an unknown root maps to itself, nothing is written */
	config_with_root(&cfg, &e, "/hostA/mnt/");
	assert_int_equal(roots_load(&m, &cfg, st, false, err, sizeof(err)), 0);
	assert_int_equal(m.n, 1);
	assert_string_equal(m.v[0].local, "/hostA/mnt");
	assert_string_equal(m.v[0].canon, "/hostA/mnt");
	roots_free(&m);
	char *v = NULL;
	assert_int_equal(store_setting_get(st, "root:archive", &v), 1);

	/* the first host to register names it; later hosts read that */
	assert_int_equal(roots_load(&m, &cfg, st, true, err, sizeof(err)), 0);
	roots_free(&m);
	config_with_root(&cfg, &e, "/hostB/net");
	assert_int_equal(roots_load(&m, &cfg, st, true, err, sizeof(err)), 0);
	assert_string_equal(m.v[0].local, "/hostB/net");
	assert_string_equal(m.v[0].canon, "/hostA/mnt");
	roots_free(&m);
	assert_int_equal(store_setting_get(st, "root:archive", &v), 0);
	assert_string_equal(v, "/hostA/mnt");
	free(v);

	store_close(st);
	unlink(db);
	char side[80];
	snprintf(side, sizeof(side), "%s-wal", db);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", db);
	unlink(side);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_swap),
		cmocka_unit_test(test_slash_root),
		cmocka_unit_test(test_line_check),
		cmocka_unit_test(test_load_first_wins),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
