/*
 * test_store_limits.c - the farm-wide provider limits of
 * common_store_limits.c on PostgreSQL (skipped unless $MPFARM_TEST_PG
 * names a server; `make unit-pg` starts one), three hosts played by one
 * process switching its host id: concurrency shares that converge to an
 * even split and never add up past max_concurrency, counting what a host
 * still runs after its share shrank; tokens bounded by the rate and the
 * burst; a pause every host sees; a gone host's share dropped with its row.
 * On SQLite every call is a no-op.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"
#include "common_db.h"
#include "test_pg.h"
#include "common_store_limits.h"

#define OK(x) assert_int_equal((x), 0)

static char target[512];

static bool
pg_fresh(const char *name)
{
	return test_pg_fresh(name, target, sizeof(target));
}

struct host {
	store_t *st;
	char     id[40];
	int      held, inflight;
};

static void
host_sync(struct host *h, int want, struct store_limit_sync *ls)
{
	store_host_id_set(h->id);
	memset(ls, 0, sizeof(*ls));
	ls->max_conc = 4;
	ls->want_slots = want;
	ls->inflight = h->inflight;
	OK(store_limits_sync(h->st, "elevenlabs", ls));
	h->held = ls->held;
}

/* What the farm may run at once by the shares and what runs. */
static int
farm_used(const struct host *v, int n)
{
	int used = 0;

	for (int i = 0; i < n; i++)
		used += v[i].held > v[i].inflight ? v[i].held : v[i].inflight;
	return used;
}

static void
test_slots_shared(void **state)
{
	struct host v[3];
	struct store_limit_sync ls;
	char err[512];

	(void)state;
	if (!pg_fresh("t_limits"))
		skip();
	for (int i = 0; i < 3; i++) {
		memset(&v[i], 0, sizeof(v[i]));
		OK(store_open(&v[i].st, target, NULL, err, sizeof(err)));
		OK(store_host_register(v[i].st, 60000));
		snprintf(v[i].id, sizeof(v[i].id), "%s", store_host_id());
	}
	OK(store_limits_init(v[0].st));
	OK(store_limits_init(v[1].st));         /* twice is fine */

	/* the first host alone takes all it wants; it runs them */
	host_sync(&v[0], 4, &ls);
	assert_int_equal(v[0].held, 4);
	v[0].inflight = 4;
	/* the others get nothing while it runs four */
	host_sync(&v[1], 4, &ls);
	host_sync(&v[2], 4, &ls);
	assert_int_equal(v[1].held, 0);
	assert_int_equal(v[2].held, 0);
	assert_true(farm_used(v, 3) <= 4);
	/* its share shrinks at once, the others grow as its jobs end */
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 3; i++) {
			host_sync(&v[i], 4, &ls);
			/* each host runs what its share allows */
			if (v[i].inflight > v[i].held)
				v[i].inflight--;        /* one job ends */
			else
				v[i].inflight = v[i].held;
			assert_true(farm_used(v, 3) <= 4);
		}
	}
	/* converged: an even split of 4 over 3 (2, 1, 1 by host id) */
	assert_int_equal(v[0].held + v[1].held + v[2].held, 4);
	for (int i = 0; i < 3; i++)
		assert_true(v[i].held >= 1 && v[i].held <= 2);

	/* a host that wants less leaves its part to the others */
	v[2].inflight = 0;
	host_sync(&v[2], 0, &ls);
	assert_int_equal(v[2].held, 0);
	host_sync(&v[0], 4, &ls);
	host_sync(&v[1], 4, &ls);
	host_sync(&v[0], 4, &ls);
	assert_int_equal(v[0].held + v[1].held, 4);

	/* a host gone: its share goes with its row */
	store_host_id_set(v[1].id);
	OK(store_host_unregister(v[1].st));
	v[1].held = v[1].inflight = 0;
	v[0].inflight = v[0].held;
	host_sync(&v[0], 4, &ls);
	assert_int_equal(v[0].held, 4);
	for (int i = 0; i < 3; i++)
		store_close(v[i].st);
}

static void
test_tokens_and_pause(void **state)
{
	struct store_limit_sync ls;
	char err[512];
	store_t *st;
	int got = 0;

	(void)state;
	if (!pg_fresh("t_tokens"))
		skip();
	OK(store_open(&st, target, NULL, err, sizeof(err)));
	OK(store_host_register(st, 60000));
	OK(store_limits_init(st));
	memset(&ls, 0, sizeof(ls));
	ls.rate = 10;
	ls.want_tokens = 100;
	OK(store_limits_sync(st, "deepl", &ls));
	assert_int_equal(ls.tokens, 0);         /* a new bucket starts empty */
	usleep(600 * 1000);
	/* 0.6 s at 10/s is 6, but the bucket holds 0.2 s: 2 */
	OK(store_limits_sync(st, "deepl", &ls));
	assert_int_equal(ls.tokens, 2);
	/* over about a second, never more than the rate allows (the
	 * bucket starts empty again; a slow spell may lose some, past the
	 * burst, but never adds) */
	int64_t t0 = time_mono_ms();
	for (int i = 0; i < 20; i++) {
		usleep(50 * 1000);
		OK(store_limits_sync(st, "deepl", &ls));
		got += ls.tokens;
	}
	int64_t took = time_mono_ms() - t0;
	print_message("tokens %d in %lld ms at 10/s\n", got, (long long)took);
	assert_true(got >= 1 && got <= 10 * took / 1000 + 1);
	/* a pause: no tokens until it is over, and every host sees it */
	OK(store_limits_pause(st, "deepl", 3000));
	usleep(300 * 1000);
	OK(store_limits_sync(st, "deepl", &ls));
	assert_int_equal(ls.tokens, 0);
	assert_true(ls.paused_ms > 2000 && ls.paused_ms <= 3000);
	/* a shorter pause does not shorten it */
	OK(store_limits_pause(st, "deepl", 100));
	OK(store_limits_sync(st, "deepl", &ls));
	assert_true(ls.paused_ms > 2000);
	store_close(st);
}

static void
test_sqlite_noop(void **state)
{
	char dir[] = "/tmp/mpfarm-limits-XXXXXX", path[64], err[512];
	struct store_limit_sync ls = { .rate = 5, .max_conc = 2,
	    .want_tokens = 3, .want_slots = 2 };
	store_t *st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/m.db", dir);
	OK(store_open(&st, path, NULL, err, sizeof(err)));
	OK(store_limits_init(st));
	OK(store_limits_sync(st, "openai", &ls));
	assert_int_equal(ls.tokens, 0);
	assert_int_equal(ls.held, 0);
	OK(store_limits_pause(st, "openai", 1000));
	store_close(st);
	unlink(path);
	snprintf(path, sizeof(path), "%s/m.db-wal", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/m.db-shm", dir);
	unlink(path);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sqlite_noop),
		cmocka_unit_test(test_slots_shared),
		cmocka_unit_test(test_tokens_and_pause),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
