/*
 * test_store_db.c - the SQL driver under the store (common_db.h) and the
 * store on PostgreSQL.  The driver cases run on SQLite always and on
 * PostgreSQL when $MPFARM_TEST_PG names a server (make check starts one;
 * without it those cases skip, saying so).  On PostgreSQL the store's
 * own path is checked too: schema, scan, claim, a lease that fences a
 * stale worker, a silent host whose jobs another master takes back.
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
#include "common_store.h"
#include "common_store_audit.h"

#define OK(e) assert_int_equal((e), 0)

static char tmpdir[64], target[512];

/* ---- target names ------------------------------------------------------ */

static void
test_target_scrub(void **state)
{
	char *s;

	(void)state;
	assert_true(db_target_is_pg("postgresql://u:p@h/db"));
	assert_true(db_target_is_pg("postgres://h/db"));
	assert_true(db_target_is_pg("dbname=farm host=/run/pg"));
	assert_false(db_target_is_pg("media_tracking.db"));
	assert_false(db_target_is_pg("/srv/postgresql/x.db"));
	s = db_target_scrub("postgresql://farm:s3cr@t@db.example/farm?sslmode=require");
	assert_string_equal(s, "postgresql://farm:***@db.example/farm?sslmode=require");
	free(s);
	s = db_target_scrub("postgres://h/db?user=a&password=xyz&x=1");
	assert_string_equal(s, "postgres://h/db?user=a&password=***&x=1");
	free(s);
	s = db_target_scrub("dbname=farm password='a b' host=h");
	assert_string_equal(s, "dbname=farm password=*** host=h");
	free(s);
	s = db_target_scrub("postgresql://farm@h/db");
	assert_string_equal(s, "postgresql://farm@h/db");
	free(s);
	s = db_target_scrub("/tmp/x.db");
	assert_string_equal(s, "/tmp/x.db");
	free(s);

	/* the password leaves the name for PGPASSWORD */
	unsetenv("PGPASSWORD");
	s = xstrdup("postgresql://farm:p%40ss@db.example:5432/farm");
	OK(db_target_secret_move(&s));
	assert_string_equal(s, "postgresql://farm@db.example:5432/farm");
	assert_string_equal(getenv("PGPASSWORD"), "p@ss");
	free(s);
	s = xstrdup("postgres://h/db?user=a&password=xyz&sslmode=disable");
	OK(db_target_secret_move(&s));
	assert_string_equal(s, "postgres://h/db?user=a&sslmode=disable");
	assert_string_equal(getenv("PGPASSWORD"), "xyz");
	free(s);
	s = xstrdup("dbname=farm password='a b\\'c' host=h");
	OK(db_target_secret_move(&s));
	assert_string_equal(s, "dbname=farm host=h");
	assert_string_equal(getenv("PGPASSWORD"), "a b'c");
	free(s);
	s = xstrdup("/srv/farm:secret@x.db");
	OK(db_target_secret_move(&s));
	assert_string_equal(s, "/srv/farm:secret@x.db");
	free(s);
	unsetenv("PGPASSWORD");
}

/* ---- the driver, on either engine ------------------------------------ */

static void
driver_roundtrip(const char *t)
{
	static struct db_sql q_ins = DB_SQL(
	    "INSERT INTO kv (k, n, b) VALUES (?1, ?2, ?3)");
	static struct db_sql q_get = DB_SQL2(
	    "SELECT k, n, b, n > 5, b IS NULL FROM kv WHERE n >= ?1 ORDER BY n",
	    "SELECT k, n, b, n > 5, b IS NULL FROM kv WHERE n >= ?1 ORDER BY n");
	const char bytes[] = { 'a', (char)0xff, 0, 'z' };
	char err[256], *b;
	db_t *db;
	db_stmt_t *s;
	size_t len;
	int v = -1, count = -1;
	const char *names[] = { "kv", "nothere" };

	OK(db_open(&db, t, 0, 0, err, sizeof(err)));
	OK(db_exec(db, db_kind(db) == DB_PG ?
	    "CREATE TABLE kv (k TEXT, n BIGINT, b BYTEA)" :
	    "CREATE TABLE kv (k TEXT, n INTEGER, b BLOB)"));
	OK(db_version_get(db, &v));
	assert_int_equal(v, 0);
	OK(db_begin(db, true));
	assert_true(db_in_tx(db));
	OK(db_version_set(db, 7));
	for (int i = 0; i < 3; i++) {
		assert_non_null(s = db_stmt(db, &q_ins));
		OK(db_bind_text(s, 1, i == 0 ? "zero" : "more"));
		OK(db_bind_int64(s, 2, (int64_t)i * 5000000000LL));
		if (i == 1)
			OK(db_bind_blob(s, 3, bytes, sizeof(bytes)));
		OK(db_run(s));
		assert_int_equal(db_changes(db), 1);
	}
	OK(db_commit(db));
	assert_false(db_in_tx(db));
	OK(db_version_get(db, &v));
	assert_int_equal(v, 7);
	OK(db_names_count(db, names, 2, &count));
	assert_int_equal(count, 1);

	assert_non_null(s = db_stmt(db, &q_get));
	OK(db_bind_int64(s, 1, 1));
	assert_int_equal(db_step(s), DB_ROW);
	assert_string_equal(db_column_text(s, 0), "more");
	assert_true(db_column_int64(s, 1) == 5000000000LL);
	b = db_column_bytes(s, 2, &len);
	assert_int_equal(len, sizeof(bytes));
	assert_memory_equal(b, bytes, sizeof(bytes));
	free(b);
	assert_int_equal(db_column_int(s, 3), 1);      /* a boolean reads 1 */
	assert_int_equal(db_column_int(s, 4), 0);
	assert_int_equal(db_step(s), DB_ROW);
	assert_true(db_column_null(s, 2));
	b = db_column_bytes(s, 2, &len);
	assert_string_equal(b, "");
	free(b);
	assert_int_equal(db_step(s), DB_DONE);

	/* a rollback undoes; an error is reported, not fatal */
	OK(db_begin(db, true));
	OK(db_exec(db, "DELETE FROM kv"));
	OK(db_rollback(db));
	assert_non_null(s = db_prepare(db, "SELECT count(*) FROM kv"));
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int(s, 0), 3);
	db_finalize(s);
	assert_int_equal(db_exec(db, "SELECT nosuchcolumn FROM kv"), -1);
	assert_non_null(strstr(db_errmsg(db), "nosuchcolumn"));
	assert_false(db_err_busy(db));
	db_close(db);
}

static void
test_driver_sqlite(void **state)
{
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/driver.db", tmpdir);
	driver_roundtrip(path);
}

static bool
pg_fresh(const char *name)
{
	return test_pg_fresh(name, target, sizeof(target));
}

static void
test_driver_pg(void **state)
{
	(void)state;
	if (!pg_fresh("t_driver"))
		skip();
	driver_roundtrip(target);
}

/* End every other session of the test database, as a server restart
 * does: the next call on them finds its connection gone. */
static void
pg_kill_others(void)
{
	char err[256];
	db_t *killer;
	db_stmt_t *s;

	OK(db_open(&killer, target, 0, 0, err, sizeof(err)));
	s = db_prepare(killer, "SELECT count(pg_terminate_backend(pid)) FROM "
	    "pg_stat_activity WHERE datname = current_database() AND "
	    "pid <> pg_backend_pid()");
	assert_non_null(s);
	assert_int_equal(db_step(s), DB_ROW);
	assert_true(db_column_int(s, 0) >= 1);
	db_finalize(s);
	db_close(killer);
	usleep(100 * 1000);     /* the backend is gone before we speak */
}

/* A connection the server ended is reset on the next use: its failure is
 * transient (db_err_busy), the cached statement is prepared again on the
 * new connection, the session settings are back; inside a transaction it
 * stays failed until the caller ends the transaction. */
static void
test_driver_pg_reconnect(void **state)
{
	static struct db_sql q = DB_SQL("SELECT ?1 + 1");
	char err[256];
	db_t *db;
	db_stmt_t *s, *show;

	(void)state;
	if (!pg_fresh("t_reconnect"))
		skip();
	OK(db_open(&db, target, 0, 0, err, sizeof(err)));
	s = db_stmt(db, &q);
	assert_non_null(s);
	db_bind_int64(s, 1, 41);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int(s, 0), 42);

	pg_kill_others();
	s = db_stmt(db, &q);
	db_bind_int64(s, 1, 1);
	assert_int_equal(db_step(s), -1);
	assert_true(db_err_busy(db));
	/* the next use reconnects and prepares the statement again */
	s = db_stmt(db, &q);
	db_bind_int64(s, 1, 1);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int(s, 0), 2);
	show = db_prepare(db, "SHOW idle_in_transaction_session_timeout");
	assert_non_null(show);
	assert_int_equal(db_step(show), DB_ROW);
	assert_string_equal(db_column_text(show, 0), "10s");
	db_finalize(show);

	/* lost inside a transaction: no statement runs outside it */
	OK(db_begin(db, true));
	pg_kill_others();
	s = db_stmt(db, &q);
	db_bind_int64(s, 1, 1);
	assert_int_equal(db_step(s), -1);
	assert_true(db_err_busy(db));
	assert_true(db_in_tx(db));
	s = db_stmt(db, &q);
	db_bind_int64(s, 1, 1);
	assert_int_equal(db_step(s), -1);
	assert_true(db_err_busy(db));
	assert_int_equal(db_commit(db), -1);    /* never sent: rolled back */
	assert_true(db_err_busy(db));
	assert_false(db_in_tx(db));
	s = db_stmt(db, &q);
	db_bind_int64(s, 1, 5);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int(s, 0), 6);
	db_reset(s);

	/* lost again, outside a transaction (db_exec's path): one call
	 * finds out, transient; the next is on a new connection */
	pg_kill_others();
	assert_int_equal(db_exec(db, "SELECT 1"), -1);
	assert_true(db_err_busy(db));
	OK(db_exec(db, "SELECT 1"));
	db_close(db);
}

/* ---- the store on PostgreSQL ----------------------------------------- */

static void
test_store_pg(void **state)
{
	static const char langs[][CONFIG_LANG_MAX] = { "en" };
	char err[512], rel[64], abs[128];
	store_t *st, *st2;
	enum store_add_result res;
	struct job j = { 0 }, j2 = { 0 };
	struct store_counts c;
	int n = -1;

	(void)state;
	if (!pg_fresh("t_store"))
		skip();
	OK(store_open(&st, target, NULL, err, sizeof(err)));
	assert_true(store_is_pg(st));
	OK(store_langs_sync(st, langs, 1));
	for (int i = 0; i < 3; i++) {
		struct media_file mf = { .root = "/r", .rel = rel, .abs = abs,
		    .size = 10 + i, .mtime_ns = 1, .dev = 1, .ino = 3000000000LL + i };
		snprintf(rel, sizeof(rel), "f%d\xff.wav", i);
		snprintf(abs, sizeof(abs), "/r/%s", rel);
		OK(store_file_add(st, &mf, langs, 1, &res, NULL));
		assert_int_equal(res, STORE_ADDED);
		OK(store_file_add(st, &mf, langs, 1, &res, NULL));
		assert_int_equal(res, STORE_UNCHANGED);
	}
	OK(store_counts_get(st, &c));
	assert_int_equal(c.files, 3);
	assert_int_equal(c.nstages, 2);
	assert_int_equal(c.stages[0].n[JOB_ST_NOT_STARTED], 3);
	assert_int_equal(c.stages[1].waiting, 3);
	store_counts_free(&c);

	/* host A claims job 1; its stale copy of the lease cannot complete
	 * once host B has taken the job back from the silent host */
	OK(store_host_register(st, 1000));
	OK(store_job_claim(st, 1, 0, 111, 100, &j));
	assert_true(j.lease > 0);
	assert_string_equal(j.rel_path, "f0\xff.wav");
	assert_int_equal(store_job_claim(st, 1, 0, 112, 100, &j2), 1);
	store_close(st);

	OK(store_open(&st2, target, NULL, err, sizeof(err)));
	sleep(2);       /* host A is silent past its 1 s timeout */
	OK(store_host_register(st2, 1000));
	OK(store_recover_orphans(st2, 3, &n));
	assert_int_equal(n, 1);
	/* the worker of the silent host comes back: fenced */
	assert_int_equal(store_job_complete(st2, &j, NULL, 0, false), 1);
	assert_int_equal(store_job_settle(st2, &j), 2);        /* lost */
	OK(store_job_claim(st2, 1, 0, 222, 200, &j2));
	assert_true(j2.lease > j.lease);
	assert_int_equal(j2.attempts, 2);
	assert_int_equal(store_job_settle(st2, &j2), 1);       /* in-progress */
	OK(store_job_complete(st2, &j2, NULL, 0, false));
	OK(store_job_settle(st2, &j2));                        /* completed */
	assert_int_equal(store_job_settle(st2, &j), 2);
	assert_false(store_err_transient(st2));
	OK(store_counts_get(st2, &c));
	assert_int_equal(c.stages[0].n[JOB_ST_COMPLETED], 1);
	assert_int_equal(c.stages[1].waiting, 2);       /* f0's translation ready */
	store_counts_free(&c);
	{
		struct store_file f;
		OK(store_file_get(st2, 1, &f));
		assert_int_equal(f.njobs, 2);
		assert_int_equal(f.jobs[0].ntries, 2);
		assert_string_equal(f.jobs[0].tries[0].outcome, "interrupted");
		assert_non_null(strstr(f.jobs[0].tries[0].message, "went silent"));
		assert_string_equal(f.jobs[0].tries[1].outcome, "completed");
		store_file_free(&f);
	}
	{
		struct store_host *h;
		int nh;
		OK(store_hosts_list(st2, &h, &nh));
		assert_int_equal(nh, 1);        /* the silent one is forgotten */
		assert_true(h[0].live);
		store_hosts_free(h, nh);
	}
	OK(store_host_unregister(st2));
	job_clear(&j);
	job_clear(&j2);
	store_close(st2);
}

/* The transcribe job of file_id: its status and attempts as stored. */
static void
pg_job_is(store_t *st, int64_t file_id, const char *status, int attempts)
{
	struct store_file f;

	OK(store_file_get(st, file_id, &f));
	assert_string_equal(f.jobs[0].status, status);
	assert_int_equal(f.jobs[0].attempts, attempts);
	store_file_free(&f);
}

/* Many masters on one database: a master's claim skips the rows another
 * is claiming (no wait), takes the oldest first and no more than asked;
 * only its worker adopts a claim, with its lease; a claim nobody adopted
 * goes back untouched, and its release is fenced by the lease. */
/* n files /r/PREFIXi.wav registered, with jobs for langs. */
static void
pg_files_add(store_t *st, const char *prefix, int n,
	     const char (*langs)[CONFIG_LANG_MAX], int nlangs)
{
	char rel[64], abs[128];
	enum store_add_result res;

	for (int i = 0; i < n; i++) {
		struct media_file mf = { .root = "/r", .rel = rel, .abs = abs,
		    .size = 10 + i, .mtime_ns = 1, .dev = 1, .ino = 10 + i };
		snprintf(rel, sizeof(rel), "%s%d.wav", prefix, i);
		snprintf(abs, sizeof(abs), "/r/%s", rel);
		OK(store_file_add(st, &mf, langs, nlangs, &res, NULL));
	}
}

static void
test_store_pg_claim(void **state)
{
	static const char langs[][CONFIG_LANG_MAX] = { "en" };
	char err[512];
	store_t *a, *b;
	struct config cfg;
	struct job_ref ra[8], rb[8];
	struct job j = { 0 }, j2 = { 0 };
	struct job_result crash = { .outcome = OUT_CRASHED, .exit_code = -1,
	    .signal = 9 };
	enum job_status fs;
	int64_t now = time_wall_ms();
	int na = -1, nb = -1, given = -1;

	(void)state;
	if (!pg_fresh("t_claim"))
		skip();
	OK(store_open(&a, target, NULL, err, sizeof(err)));
	OK(store_open(&b, target, NULL, err, sizeof(err)));
	OK(store_langs_sync(a, langs, 1));
	pg_files_add(a, "c", 6, langs, 1);
	memset(&cfg, 0, sizeof(cfg));
	cfg.stage_mask = STAGE_MASK_TRANSCRIBE;

	/* A's claim of the two oldest is not committed yet: B does not wait
	 * for it, it takes what is left */
	OK(store_tx_begin(a));
	OK(store_jobs_claim(a, &cfg, now, 100, ra, 2, &na));
	assert_int_equal(na, 2);
	assert_int_equal(ra[0].job_id, 1);
	assert_int_equal(ra[1].job_id, 3);      /* 2 is c0's translation */
	assert_true(ra[0].lease > 0 && ra[1].lease > 0 &&
	    ra[0].lease != ra[1].lease);
	OK(store_jobs_claim(b, &cfg, now, 200, rb, 8, &nb));
	assert_int_equal(nb, 4);
	for (int i = 0; i < nb; i++) {
		assert_int_equal(rb[i].stage, STAGE_TRANSCRIBE);
		assert_true(rb[i].job_id != ra[0].job_id &&
		    rb[i].job_id != ra[1].job_id);
		assert_true(i == 0 || rb[i].job_id > rb[i - 1].job_id);
	}
	OK(store_tx_commit(a));
	pg_job_is(a, 1, "in-progress", 1);
	OK(store_jobs_claim(b, &cfg, now, 200, rb + 4, 4, &nb));
	assert_int_equal(nb, 0);        /* nothing runnable: 0, not 1 */

	/* only the claim's own worker adopts it */
	assert_int_equal(store_job_claim(a, 1, ra[0].lease + 1000, 111, 100,
	    &j), 1);
	assert_int_equal(store_job_claim(a, 1, ra[0].lease, 111, 999, &j), 1);
	OK(store_job_claim(a, 1, ra[0].lease, 111, 100, &j));
	assert_int_equal(j.lease, ra[0].lease);
	assert_int_equal(j.attempts, 1);
	assert_string_equal(j.rel_path, "c0.wav");
	assert_int_equal(store_job_claim(b, 1, ra[0].lease, 112, 100, &j2), 1);

	/* given back: the adopted one stays the worker's, the other is as it
	 * was before the claim, and could be claimed again */
	OK(store_job_unclaim(a, ra, 2, &given));
	assert_int_equal(given, 1);
	pg_job_is(a, 1, "in-progress", 1);
	pg_job_is(a, 2, "not_started", 0);
	assert_int_equal(store_job_claim(a, 3, ra[1].lease, 113, 100, &j2), 1);

	/* while B claims it, A finds it runnable but taken: 1, none */
	OK(store_tx_begin(b));
	OK(store_jobs_claim(b, &cfg, now, 200, rb + 4, 1, &nb));
	assert_int_equal(nb, 1);
	assert_int_equal(store_jobs_claim(a, &cfg, now, 100, ra, 4, &na), 1);
	assert_int_equal(na, 0);
	OK(store_tx_commit(b));

	/* B's worker died before adopting rb[0]: the release is fenced by
	 * the lease, not the pid (there is none) */
	assert_int_equal(store_job_release(b, rb[0].job_id, 0,
	    rb[0].lease + 1000, &crash, 3, &fs), 1);
	OK(store_job_release(b, rb[0].job_id, 0, rb[0].lease, &crash, 3, &fs));
	assert_int_equal(fs, JOB_ST_NOT_STARTED);

	OK(store_job_complete(a, &j, NULL, 0, false));
	pg_job_is(a, 1, "completed", 1);
	job_clear(&j);

	/* several pairs: c0's translation (ready now) with the transcripts
	 * still runnable, each claimed once, under the pair it belongs to */
	cfg.stage_mask = STAGE_MASK_ALL;
	memcpy(cfg.langs, langs, sizeof(langs));
	cfg.nlangs = 1;
	OK(store_jobs_claim(a, &cfg, time_wall_ms(), 100, ra, 8, &na));
	assert_true(na >= 2);
	{
		bool tr = false;
		for (int i = 0; i < na; i++) {
			assert_true(ra[i].lease > 0);
			if (ra[i].job_id == 2) {
				tr = true;
				assert_int_equal(ra[i].stage, STAGE_TRANSLATE);
				assert_string_equal(ra[i].lang, "en");
			} else {
				assert_int_equal(ra[i].stage, STAGE_TRANSCRIBE);
			}
			for (int k = 0; k < i; k++)
				assert_true(ra[k].job_id != ra[i].job_id);
		}
		assert_true(tr);
	}
	assert_int_equal(store_jobs_claim(b, &cfg, time_wall_ms(), 200, rb, 8,
	    &nb), 0);
	assert_int_equal(nb, 0);
	store_close(a);
	store_close(b);
}

/* A claim whose COMMIT went through though its master saw an error:
 * the sweep gives back what this host claimed and nobody holds, and
 * leaves what a worker adopted or the master still holds. */
static void
test_store_pg_sweep(void **state)
{
	char err[512];
	store_t *a;
	struct config cfg;
	struct job_ref r[4];
	struct job j = { 0 };
	int n = -1, given = -1;
	int64_t held;

	(void)state;
	if (!pg_fresh("t_sweep"))
		skip();
	OK(store_open(&a, target, NULL, err, sizeof(err)));
	pg_files_add(a, "s", 3, NULL, 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.stage_mask = STAGE_MASK_TRANSCRIBE;
	store_host_id_set("sweep0");
	OK(store_jobs_claim(a, &cfg, time_wall_ms(), 100, r, 4, &n));
	assert_int_equal(n, 3);
	OK(store_job_claim(a, r[0].job_id, r[0].lease, 111, 100, &j));
	job_clear(&j);
	/* another host's sweep touches none of them */
	store_host_id_set("sweep1");
	OK(store_claims_sweep(a, NULL, 0, &given));
	assert_int_equal(given, 0);
	store_host_id_set("sweep0");
	held = r[1].job_id;
	OK(store_claims_sweep(a, &held, 1, &given));
	assert_int_equal(given, 1);
	pg_job_is(a, 1, "in-progress", 1);     /* adopted */
	pg_job_is(a, 2, "in-progress", 1);     /* held */
	pg_job_is(a, 3, "not_started", 0);     /* as before the claim */
	store_host_id_set("");
	store_close(a);
}

static int
setup(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/mpfarm-test-db-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_target_scrub),
		cmocka_unit_test(test_driver_sqlite),
		cmocka_unit_test(test_driver_pg),
		cmocka_unit_test(test_driver_pg_reconnect),
		cmocka_unit_test(test_store_pg),
		cmocka_unit_test(test_store_pg_claim),
		cmocka_unit_test(test_store_pg_sweep),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
