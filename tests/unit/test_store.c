/*
 * test_store.c - the job store: schema creation and migration, the error
 * messages for corrupt and locked databases, every job transition and its
 * lease fence, translation readiness, the processing_status view, reports,
 * query plans that stay index-driven at scale, and several processes
 * claiming and completing jobs at once without a job done twice.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common_store.h"
#include "common_db_sqlite.h"
#include "common_store_audit.h"
#include "common_tree.h"

#define OK(e) assert_int_equal((e), 0)

static char dir[64], db[128];
static const char langs2[][CONFIG_LANG_MAX] = { "en", "de" };

static int
setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/mpfarm-test-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/media_tracking.db", dir);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

static int
try_open(store_t **st, int flags, int busy_ms, char *err, size_t errlen)
{
	struct store_open_opts o = { .flags = flags, .busy_timeout_ms = busy_ms };
	int rc = store_open(st, db, &o, err, errlen);

	if (rc < 0)
		assert_null(*st);
	return rc;
}

static store_t *
open_ok(int flags, int busy_ms)
{
	char err[512] = "";
	store_t *st = NULL;

	if (try_open(&st, flags, busy_ms, err, sizeof(err)) < 0)
		fail_msg("store_open: %s", err);
	return st;
}

static sqlite3 *
raw_open(void)
{
	sqlite3 *h;
	OK(sqlite3_open(db, &h));
	return h;
}

static void
x(sqlite3 *h, const char *sql)
{
	if (sqlite3_exec(h, sql, NULL, NULL, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(h));
}

/* The first column of the first row, as an integer or as text (in one of
 * two rotating buffers). */
static sqlite3_stmt *
q_row(sqlite3 *h, const char *fmt, va_list ap)
{
	char sql[512];
	sqlite3_stmt *s;

	vsnprintf(sql, sizeof(sql), fmt, ap);
	if (sqlite3_prepare_v2(h, sql, -1, &s, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(h));
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_finalize(s);
		return NULL;
	}
	return s;
}

static int64_t
q_int(sqlite3 *h, const char *fmt, ...)
{
	va_list ap;
	int64_t v = -1;

	va_start(ap, fmt);
	sqlite3_stmt *s = q_row(h, fmt, ap);
	va_end(ap);
	if (s) {
		v = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	return v;
}

static const char *
q_str(sqlite3 *h, const char *fmt, ...)
{
	static char buf[2][512];
	static int k;
	char *out = buf[k++ & 1];
	va_list ap;

	va_start(ap, fmt);
	sqlite3_stmt *s = q_row(h, fmt, ap);
	va_end(ap);
	out[0] = '\0';
	if (s && sqlite3_column_text(s, 0))
		snprintf(out, sizeof(buf[0]), "%s", sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	return out;
}

static void
add_files(store_t *st, int n, const char (*langs)[CONFIG_LANG_MAX], int nl)
{
	OK(store_tx_begin(st));
	for (int i = 0; i < n; i++) {
		char rel[64], abs[128];
		enum store_add_result res;
		snprintf(rel, sizeof(rel), "f%04d.mp3", i);
		snprintf(abs, sizeof(abs), "/media/f%04d.mp3", i);
		struct media_file mf = { "/media", rel, abs, 1000 + i, 7 };
		OK(store_file_add(st, &mf, langs, nl, &res, NULL));
		assert_int_equal(res, STORE_ADDED);
	}
	OK(store_tx_commit(st));
}

static void
cfg_init(struct config *cfg, int mask)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->stage_mask = mask;
	memcpy(cfg->langs, langs2, sizeof(langs2));
	cfg->nlangs = 2;
}

static int64_t
job_of(store_t *st, int64_t file_id, const char *stage, const char *lang)
{
	return q_int(db_sqlite_handle(store_db(st)), "SELECT job_id FROM jobs WHERE file_id = %lld "
	    "AND stage = '%s' AND lang = '%s'", (long long)file_id, stage, lang);
}

static const char *
status_of(store_t *st, int64_t job_id)
{
	return q_str(db_sqlite_handle(store_db(st)), "SELECT status FROM jobs WHERE job_id = %lld",
	    (long long)job_id);
}

/* A temp output beside `final`, as a worker would write it. */
static void
tmp_file(char *tmp, char *final, const char *name)
{
	sprintf(final, "%s/%s.txt", dir, name);
	sprintf(tmp, "%s/.mpfarm-tmp.%s", dir, name);
	FILE *fp = fopen(tmp, "w");
	assert_non_null(fp);
	fputs("text\n", fp);
	fclose(fp);
}

static bool
exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Claim and complete (no outputs) or fail a job, to set up states. */
static void
run_job(store_t *st, int64_t job_id, enum job_outcome o, int64_t retry_at)
{
	struct job j;
	struct job_result r = { .outcome = o, .exit_code = -1,
	    .retry_at_ms = retry_at, .msg = "boom" };

	OK(store_job_claim(st, job_id, 0, 9, 8, &j));
	if (o == OUT_COMPLETED)
		OK(store_job_complete(st, &j, NULL, 0, false));
	else
		OK(store_job_fail(st, &j, &r, 3, NULL));
	job_clear(&j);
}

static int
fetch(store_t *st, const struct config *cfg, int64_t now,
      struct job_ref *out, int max)
{
	int n = -1;
	OK(store_runnable_fetch(st, cfg, now, NULL, 0, out, max, &n));
	return n;
}

/* ---- schema and errors --------------------------------------------- */

static void
test_open_creates_schema(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));

	assert_int_equal(q_int(h, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_string_equal(q_str(h, "PRAGMA journal_mode"), "wal");
	assert_int_equal(q_int(h, "PRAGMA foreign_keys"), 1);
	assert_int_equal(q_int(h, "PRAGMA page_size"), 2048);
	assert_int_equal(q_int(h, "PRAGMA synchronous"), 1);       /* NORMAL */
	assert_int_equal(q_int(h, "SELECT count(*) FROM sqlite_master WHERE "
	    "name IN ('media_files', 'jobs', 'attempts', 'settings', "
	    "'processing_status', 'jobs_failed', 'jobs_status')"), 7);
	store_close(st);
	st = open_ok(STORE_DURABLE, 0);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "PRAGMA synchronous"), 2);
	store_close(st);
}

static void
test_migrate_from_v0(void **state)
{
	(void)state;
	sqlite3 *h = raw_open();
	x(h, "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('keep')");
	sqlite3_close(h);

	store_t *st = open_ok(0, 0);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "PRAGMA user_version"),
	    STORE_SCHEMA_VERSION);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM notes"), 1);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM jobs"), 0);
	OK(store_langs_sync(st, langs2, 2));
	store_close(st);

	/* reopening a current database changes nothing in the schema */
	h = raw_open();
	int64_t cookie = q_int(h, "PRAGMA schema_version");
	st = open_ok(0, 0);
	OK(store_langs_sync(st, langs2, 2));                /* the same set */
	store_close(st);
	assert_int_equal(q_int(h, "PRAGMA schema_version"), cookie);
	sqlite3_close(h);
}

/*
 * A database as schema version 3 left it, written out here (not made by
 * the store, whose migrations moved on): three files, a completed
 * transcript whose translation is ready, a transcript running under
 * worker 77 (its attempt row still open, an earlier attempt crashed) and
 * a failed one.  Version 1 and 2 databases are this one without the
 * columns their successors added.
 */
static const char v3_schema[] =
	"CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
	"  WITHOUT ROWID;"
	"CREATE TABLE media_files (file_id INTEGER PRIMARY KEY,"
	"  scan_root BLOB NOT NULL, rel_path BLOB NOT NULL UNIQUE,"
	"  abs_path BLOB NOT NULL UNIQUE, size INTEGER NOT NULL,"
	"  mtime_ns INTEGER NOT NULL, added_at INTEGER NOT NULL,"
	"  dev INTEGER, ino INTEGER, src_root BLOB, src_rel BLOB,"
	"  abs_path_text TEXT);"
	"CREATE TABLE jobs (job_id INTEGER PRIMARY KEY,"
	"  file_id INTEGER NOT NULL"
	"    REFERENCES media_files(file_id) ON DELETE CASCADE,"
	"  stage TEXT NOT NULL CHECK (stage IN ('transcribe', 'translate')),"
	"  lang TEXT NOT NULL DEFAULT '',"
	"  status TEXT NOT NULL DEFAULT 'not_started' CHECK (status IN"
	"    ('not_started', 'in-progress', 'completed', 'failed')),"
	"  ready INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0,"
	"  run_after INTEGER NOT NULL DEFAULT 0, lease INTEGER DEFAULT 0,"
	"  owner_pid INTEGER, owner_master INTEGER, started_at INTEGER,"
	"  finished_at INTEGER, last_error TEXT, UNIQUE (file_id, stage, lang),"
	"  CHECK ((stage = 'transcribe') = (lang = '')));"
	"CREATE INDEX jobs_status ON jobs (stage, lang, status, ready, run_after);"
	"CREATE INDEX jobs_failed ON jobs (stage, lang) WHERE status = 'failed';"
	"CREATE TRIGGER jobs_transcript_ready AFTER UPDATE OF status ON jobs"
	"  WHEN new.stage = 'transcribe'"
	"   AND (old.status = 'completed') <> (new.status = 'completed')"
	"  BEGIN UPDATE jobs SET ready = (new.status = 'completed')"
	"   WHERE file_id = new.file_id AND stage = 'translate'; END;"
	"CREATE TABLE attempts (attempt_id INTEGER PRIMARY KEY,"
	"  job_id INTEGER NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,"
	"  attempt INTEGER NOT NULL, worker_pid INTEGER,"
	"  started_at INTEGER NOT NULL, ended_at INTEGER, outcome TEXT,"
	"  http_status INTEGER, exit_code INTEGER, signal INTEGER, message TEXT);"
	"CREATE INDEX attempts_job ON attempts (job_id, attempt_id);"
	"INSERT INTO settings VALUES ('target_langs', 'de');"
	"INSERT INTO media_files (file_id, scan_root, rel_path, abs_path, size,"
	"  mtime_ns, added_at, abs_path_text) VALUES"
	"  (1, X'2F6D', X'612E6D7033', X'2F6D2F612E6D7033', 1, 1, 1, '/m/a.mp3'),"
	"  (2, X'2F6D', X'622E6D7033', X'2F6D2F622E6D7033', 2, 2, 2, '/m/b.mp3'),"
	"  (3, X'2F6D', X'632E6D7033', X'2F6D2F632E6D7033', 3, 3, 3, '/m/c.mp3');"
	"INSERT INTO jobs (job_id, file_id, stage, lang, status, ready, attempts,"
	"  lease, owner_pid, owner_master, started_at, finished_at, last_error)"
	"  VALUES (1, 1, 'transcribe', '', 'completed', 1, 1, 1, NULL, NULL,"
	"    100, 200, NULL),"
	"  (2, 2, 'transcribe', '', 'in-progress', 1, 2, 4, 77, 76, 1000, NULL,"
	"    'worker killed by signal 9'),"
	"  (3, 3, 'transcribe', '', 'failed', 1, 1, 3, NULL, NULL, 300, 400,"
	"    'bad key'),"
	"  (4, 1, 'translate', 'de', 'not_started', 1, 0, 0, NULL, NULL, NULL,"
	"    NULL, NULL),"
	"  (5, 2, 'translate', 'de', 'not_started', 0, 0, 0, NULL, NULL, NULL,"
	"    NULL, NULL),"
	"  (6, 3, 'translate', 'de', 'not_started', 0, 0, 0, NULL, NULL, NULL,"
	"    NULL, NULL);"
	"INSERT INTO attempts VALUES"
	"  (1, 1, 1, 70, 100, 200, 'completed', NULL, NULL, NULL, NULL),"
	"  (2, 2, 1, 71, 500, 600, 'crashed', NULL, NULL, 9,"
	"    'worker killed by signal 9'),"
	"  (3, 3, 1, 72, 300, 400, 'permanent', 401, NULL, NULL, 'bad key'),"
	"  (4, 2, 2, 77, 1000, NULL, NULL, NULL, NULL, NULL, NULL);"
	"PRAGMA user_version = 3;";

/* The v3 database at `version` (1, 2 or 3): what each migration added is
 * taken away again. */
static void
v3_db_make(int version)
{
	sqlite3 *h = raw_open();

	x(h, v3_schema);
	if (version < 3)
		x(h, "ALTER TABLE media_files DROP COLUMN abs_path_text");
	if (version < 2)
		x(h, "ALTER TABLE media_files DROP COLUMN dev;"
		    "ALTER TABLE media_files DROP COLUMN ino;"
		    "ALTER TABLE media_files DROP COLUMN src_root;"
		    "ALTER TABLE media_files DROP COLUMN src_rel;");
	if (version < 3) {
		char v[48];
		snprintf(v, sizeof(v), "PRAGMA user_version = %d", version);
		x(h, v);
	}
	sqlite3_close(h);
}

/* Schema 4 from 1, 2 and 3: every row kept (no attempt lost to the
 * rebuild of jobs), the running attempt now told by its job row, and
 * the store works on the result as on a new one. */
static void
test_migrate_to_v4(void **state)
{
	(void)state;
	for (int from = 1; from <= 3; from++) {
		struct store_file f;
		struct job j;
		int n = 0;
		char tmp[256], fin[256];
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct tree_temp tp[1] = { { dfd, tmp, fin, fin } };

		unlink(db);
		v3_db_make(from);
		store_t *st = open_ok(0, 0);
		sqlite3 *h = db_sqlite_handle(store_db(st));

		assert_int_equal(q_int(h, "PRAGMA user_version"),
		    STORE_SCHEMA_VERSION);
		assert_int_equal(q_int(h, "PRAGMA foreign_keys"), 1);
		assert_int_equal(q_int(h, "SELECT count(*) FROM "
		    "pragma_foreign_key_check"), 0);
		assert_string_equal(q_str(h, "SELECT group_concat(status || "
		    "ready || attempts || lease, ',') FROM (SELECT * FROM jobs "
		    "ORDER BY job_id)"), "completed111,in-progress124,failed113,"
		    "not_started100,not_started000,not_started000");
		/* the open attempt row is gone, the ended ones stay */
		assert_string_equal(q_str(h, "SELECT group_concat(attempt_id || "
		    "outcome, ',') FROM (SELECT * FROM attempts ORDER BY "
		    "attempt_id)"), "1completed,2crashed,3permanent");
		assert_string_equal(q_str(h, "SELECT file_path FROM "
		    "processing_status WHERE file_id = 2"), "/m/b.mp3");
		/* the new CHECK holds, the trigger still serves other programs */
		assert_int_not_equal(sqlite3_exec(h, "UPDATE jobs SET status = "
		    "'done' WHERE job_id = 4", NULL, NULL, NULL), SQLITE_OK);
		assert_int_equal(q_int(h, "SELECT count(*) FROM sqlite_master "
		    "WHERE type = 'trigger' AND name = 'jobs_transcript_ready'"), 1);

		/* show: the crash, then the attempt worker 77 is running */
		OK(store_file_get(st, 2, &f));
		assert_int_equal(f.njobs, 2);
		assert_int_equal(f.jobs[0].ntries, 2);
		assert_string_equal(f.jobs[0].tries[0].outcome, "crashed");
		assert_string_equal(f.jobs[0].tries[1].outcome, "");
		assert_int_equal(f.jobs[0].tries[1].worker_pid, 77);
		assert_int_equal(f.jobs[0].tries[1].attempt, 2);
		assert_int_equal(f.jobs[0].tries[1].started_at_ms, 1000);
		store_file_free(&f);

		/* its master is gone: the attempt is written down as it was */
		OK(store_recover_orphans(st, 3, &n));
		assert_int_equal(n, 1);
		assert_int_equal(q_int(h, "SELECT count(*) FROM attempts WHERE "
		    "job_id = 2 AND attempt = 2 AND worker_pid = 77 AND "
		    "started_at = 1000 AND outcome = 'interrupted' AND "
		    "message = 'master pid 76 is gone'"), 1);
		OK(store_file_get(st, 2, &f));
		assert_int_equal(f.jobs[0].ntries, 2);
		assert_string_equal(f.jobs[0].tries[1].outcome, "interrupted");
		store_file_free(&f);

		/* and the jobs go on: a lease past the old one, a completion */
		OK(store_job_claim(st, 2, 0, 9, 8, &j));
		assert_int_equal(j.lease, 5);
		tmp_file(tmp, fin, "b");
		OK(store_job_complete(st, &j, tp, 1, false));
		job_clear(&j);
		assert_string_equal(status_of(st, 2), "completed");
		assert_int_equal(q_int(h, "SELECT ready FROM jobs WHERE "
		    "job_id = 5"), 1);
		OK(store_job_claim(st, 4, 0, 9, 8, &j));
		job_clear(&j);
		assert_int_equal(q_int(h, "SELECT count(*) FROM attempts"), 5);
		store_close(st);
		close(dfd);
	}
}

static void
test_refuses_foreign_and_newer(void **state)
{
	(void)state;
	char err[512];
	store_t *st = NULL;
	sqlite3 *h = raw_open();

	/* the older Python tooling's own tables, no user_version */
	x(h, "CREATE TABLE media_files (file_path TEXT)");
	assert_int_equal(try_open(&st, 0, 0, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not an mpfarm database"));
	assert_int_equal(strncmp(err, db, strlen(db)), 0);
	assert_int_equal(q_int(h, "PRAGMA user_version"), 0);   /* untouched */
	x(h, "DROP TABLE media_files; PRAGMA user_version = 99");
	sqlite3_close(h);
	assert_int_equal(try_open(&st, 0, 0, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "schema version 99 is newer"));
}

static void
test_readonly(void **state)
{
	(void)state;
	char err[512], want[256];
	store_t *st = NULL;
	enum store_add_result res;
	struct store_counts c;

	assert_int_equal(try_open(&st, STORE_READONLY, 0, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: No such file or directory", db);
	assert_string_equal(err, want);

	sqlite3 *h = raw_open();                     /* version 0: no migration */
	x(h, "CREATE TABLE notes (t)");
	assert_int_equal(try_open(&st, STORE_READONLY, 0, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no mpfarm schema"));
	assert_int_equal(q_int(h, "SELECT count(*) FROM sqlite_master"), 1);
	sqlite3_close(h);

	st = open_ok(0, 0);
	add_files(st, 2, langs2, 2);
	store_close(st);
	st = open_ok(STORE_READONLY, 0);
	OK(store_counts_get(st, &c));
	assert_int_equal(c.files, 2);
	store_counts_free(&c);
	struct media_file mf = { "/m", "x.mp3", "/m/x.mp3", 1, 1 };
	assert_int_equal(store_file_add(st, &mf, langs2, 2, &res, NULL), -1);
	assert_non_null(strstr(store_errmsg(st), "readonly"));
	store_close(st);
}

static void
test_corrupt_file(void **state)
{
	(void)state;
	char err[512], want[256], junk[4096];
	store_t *st = NULL;
	int fd = open(db, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	srand(42);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(rand() & 0xff);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	snprintf(want, sizeof(want), "%s: file is not a database", db);
	assert_int_equal(try_open(&st, 0, 0, err, sizeof(err)), -1);
	assert_string_equal(err, want);
	assert_int_equal(try_open(&st, STORE_READONLY, 0, err, sizeof(err)), -1);
	assert_string_equal(err, want);
}

static void
assert_locked(const char *msg, int64_t t0)
{
	int64_t took = time_mono_ms() - t0;
	char pat[300];
	regmatch_t m[2];
	regex_t re;

	snprintf(pat, sizeof(pat), "^%s: database is locked \\(busy for "
	    "([0-9]+) ms\\)$", db);
	OK(regcomp(&re, pat, REG_EXTENDED));
	if (regexec(&re, msg, 2, m, 0) != 0)
		fail_msg("unexpected message: %s", msg);
	assert_true(atoi(msg + m[1].rm_so) >= 200);
	assert_true(took >= 200 && took < 2000);
	regfree(&re);
}

static void
test_locked(void **state)
{
	(void)state;
	char err[512];
	store_t *st = NULL;

	/* a fresh database another connection holds exclusively */
	sqlite3 *h = raw_open();
	x(h, "CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)");
	int64_t t0 = time_mono_ms();
	assert_int_equal(try_open(&st, 0, 200, err, sizeof(err)), -1);
	assert_locked(err, t0);
	x(h, "COMMIT");

	/* in WAL mode readers go on; the writer waits, then says so */
	st = open_ok(0, 200);
	x(h, "BEGIN EXCLUSIVE");
	t0 = time_mono_ms();
	assert_int_equal(store_tx_begin(st), -1);
	assert_locked(store_errmsg(st), t0);
	x(h, "COMMIT");
	OK(store_tx_begin(st));
	OK(store_tx_commit(st));
	store_close(st);
	sqlite3_close(h);
}

/* ---- files and transitions ----------------------------------------- */

static void
test_file_add(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	const char *weird = "/m/line\nbreak \xff\xfe.mp3";
	struct media_file mf = { "/m", weird + 3, weird, 10, 20 };
	struct media_file clash = { "/n", weird + 3, "/n/x.mp3", 1, 1 };
	const char bad[][CONFIG_LANG_MAX] = { "e n" };
	enum store_add_result res;
	char *other = NULL;
	struct job j;

	OK(store_file_add(st, &mf, langs2, 2, &res, NULL));
	assert_int_equal(res, STORE_ADDED);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM jobs"), 3);
	OK(store_file_add(st, &mf, langs2, 2, &res, NULL));
	assert_int_equal(res, STORE_UNCHANGED);
	/* another file that would write the same outputs */
	OK(store_file_add(st, &clash, langs2, 2, &res, &other));
	assert_int_equal(res, STORE_CONFLICT);
	assert_string_equal(other, weird);
	free(other);

	/* byte-exact round trip of the name through a claim */
	OK(store_job_claim(st, job_of(st, 1, "transcribe", ""), 0, 9, 8, &j));
	assert_string_equal(j.abs_path, weird);
	assert_string_equal(j.rel_path, weird + 3);
	assert_int_equal(j.stage, STAGE_TRANSCRIBE);
	job_clear(&j);

	/* a changed recording starts over and fences the running worker */
	mf.size = 11;
	OK(store_file_add(st, &mf, langs2, 2, &res, NULL));
	assert_int_equal(res, STORE_CHANGED);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM jobs WHERE "
	    "status = 'not_started' AND attempts = 0"), 3);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM attempts "
	    "WHERE outcome = 'interrupted'"), 1);
	assert_int_equal(store_file_add(st, &mf, bad, 1, &res, NULL), -1);
	assert_non_null(strstr(store_errmsg(st), "invalid language"));
	store_close(st);
}

static void
test_claim_complete(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	char tmp[2][256], fin[2][256];
	/* absolute names: renameat ignores the folder descriptor for them */
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct tree_temp tp[2] = { { dfd, tmp[0], fin[0], fin[0] },
	    { dfd, tmp[1], fin[1], fin[1] } };
	struct job j, j2;

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, 1, langs2, 2);
	int64_t tr = job_of(st, 1, "transcribe", "");
	int64_t en = job_of(st, 1, "translate", "en");
	assert_int_equal(store_job_claim(st, en, 0, 9, 8, &j), 1);  /* not ready */
	OK(store_job_claim(st, tr, 0, 9, 8, &j));
	assert_int_equal(j.attempts, 1);
	assert_true(j.lease > 0);
	assert_string_equal(status_of(st, tr), "in-progress");
	assert_int_equal(q_int(h, "SELECT owner_pid * 1000 + owner_master FROM "
	    "jobs WHERE job_id = %lld", (long long)tr), 9008);
	assert_int_equal(store_job_claim(st, tr, 0, 10, 8, &j2), 1);  /* taken */

	tmp_file(tmp[0], fin[0], "a");
	tmp_file(tmp[1], fin[1], "a.json");
	assert_int_equal(q_int(h, "SELECT sum(ready) FROM jobs WHERE stage = "
	    "'translate'"), 0);
	OK(store_job_complete(st, &j, tp, 2, true));
	assert_string_equal(status_of(st, tr), "completed");
	assert_true(exists(fin[0]) && exists(fin[1]) && !exists(tmp[0]));
	/* the translations became ready with the same commit */
	assert_int_equal(q_int(h, "SELECT sum(ready) FROM jobs WHERE stage = "
	    "'translate'"), 2);
	/* the attempt is written once, as it ends */
	assert_int_equal(q_int(h, "SELECT count(*) FROM attempts WHERE "
	    "job_id = %lld AND attempt = 1 AND outcome = 'completed' AND "
	    "ended_at IS NOT NULL AND worker_pid = 9", (long long)tr), 1);
	assert_int_equal(q_int(h, "SELECT count(*) FROM attempts"), 1);
	/* completing twice is a lost lease */
	tmp_file(tmp[0], fin[0], "b");
	assert_int_equal(store_job_complete(st, &j, tp, 1, false), 1);
	assert_true(!exists(tmp[0]) && !exists(fin[0]));
	job_clear(&j);

	/* a publish that fails leaves no output and the job in-progress */
	OK(store_job_claim(st, en, 0, 9, 8, &j));
	tmp_file(tmp[0], fin[0], "c");
	tmp_file(tmp[1], fin[1], "d");
	sprintf(fin[1], "%s/no/such/dir/c.json", dir);
	assert_int_equal(store_job_complete(st, &j, tp, 2, false), -1);
	assert_non_null(strstr(store_errmsg(st), "cannot publish"));
	assert_true(!exists(fin[0]) && !exists(tmp[1]));
	assert_string_equal(status_of(st, en), "in-progress");
	job_clear(&j);
	close(dfd);
	store_close(st);
}

static void
test_lease_fencing(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	char tmp[256], fin[256];
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct tree_temp tp[1] = { { dfd, tmp, fin, fin } };
	struct job stale, fresh;
	struct job_result hung = { .outcome = OUT_TIMEOUT, .exit_code = -1 };
	struct job_result tr = { .outcome = OUT_TRANSIENT, .exit_code = -1,
	    .msg = "late" };
	enum job_status fs;

	add_files(st, 1, langs2, 0);
	OK(store_job_claim(st, 1, 0, 100, 1, &stale));
	/* the master declares it hung and someone else takes it */
	assert_int_equal(store_job_release(st, 1, 101, 0, &hung, 3, &fs), 1);
	OK(store_job_release(st, 1, 100, 0, &hung, 3, &fs));
	assert_int_equal(fs, JOB_ST_NOT_STARTED);
	OK(store_job_claim(st, 1, 0, 200, 1, &fresh));
	assert_true(fresh.lease > stale.lease);
	assert_int_equal(fresh.attempts, 2);

	tmp_file(tmp, fin, "stale");
	assert_int_equal(store_job_complete(st, &stale, tp, 1, false), 1);
	assert_true(!exists(tmp) && !exists(fin));
	assert_int_equal(store_job_fail(st, &stale, &tr, 3, &fs), 1);
	assert_string_equal(status_of(st, 1), "in-progress");

	tmp_file(tmp, fin, "fresh");
	OK(store_job_complete(st, &fresh, tp, 1, false));
	assert_true(exists(fin));
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM attempts "
	    "WHERE outcome IN ('timeout', 'completed')"), 2);
	job_clear(&stale);
	job_clear(&fresh);
	close(dfd);
	store_close(st);
}

static void
test_fail_outcomes(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	struct job j;
	enum job_status fs;
	struct job_result rl = { .outcome = OUT_RATE_LIMITED, .http_status = 429,
	    .exit_code = -1, .retry_at_ms = 1, .msg = "slow down" };
	struct job_result tr = { .outcome = OUT_TRANSIENT, .http_status = 503,
	    .exit_code = -1, .retry_at_ms = 1, .msg = "unavailable" };
	struct job_result pm = { .outcome = OUT_PERMANENT, .http_status = 401,
	    .exit_code = -1, .msg = "bad key" };

	add_files(st, 2, langs2, 0);
	for (int i = 0; i < 5; i++) {           /* rate limits never count */
		OK(store_job_claim(st, 1, 0, 9, 8, &j));
		assert_int_equal(j.attempts, 1);
		OK(store_job_fail(st, &j, &rl, 3, &fs));
		assert_int_equal(fs, JOB_ST_NOT_STARTED);
		job_clear(&j);
	}
	for (int i = 1; i <= 3; i++) {
		OK(store_job_claim(st, 1, 0, 9, 8, &j));
		assert_int_equal(j.attempts, i);
		OK(store_job_fail(st, &j, &tr, 3, &fs));
		assert_int_equal(fs, i < 3 ? JOB_ST_NOT_STARTED : JOB_ST_FAILED);
		job_clear(&j);
	}
	assert_non_null(strstr(q_str(h, "SELECT last_error FROM jobs WHERE "
	    "job_id = 1"), "unavailable (attempt 3 of 3; earlier: "));
	assert_int_equal(q_int(h, "SELECT count(*) FROM attempts WHERE job_id = 1 "
	    "AND outcome = 'rate_limited' AND http_status = 429"), 5);

	OK(store_job_claim(st, 2, 0, 9, 8, &j));
	OK(store_job_fail(st, &j, &pm, 3, &fs));
	assert_int_equal(fs, JOB_ST_FAILED);
	assert_string_equal(q_str(h, "SELECT last_error FROM jobs WHERE "
	    "job_id = 2"), "bad key");
	job_clear(&j);
	store_close(st);
}

static void
test_release_and_recover(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	struct job j;
	enum job_status fs;
	struct job_result kill9 = { .outcome = OUT_CRASHED, .signal = 9,
	    .exit_code = -1 };
	struct job_result stop = { .outcome = OUT_INTERRUPTED, .exit_code = -1 };
	int n = 0;

	add_files(st, 3, langs2, 0);
	for (int i = 1; i <= 3; i++) {
		OK(store_job_claim(st, 1, 0, 50 + i, 8, &j));
		job_clear(&j);
		OK(store_job_release(st, 1, 50 + i, 0, &kill9, 3, &fs));
	}
	assert_int_equal(fs, JOB_ST_FAILED);
	assert_non_null(strstr(q_str(h, "SELECT last_error FROM jobs WHERE "
	    "job_id = 1"), "worker killed by signal 9 (attempt 3 of 3"));

	/* a stopped farm gives the attempt back */
	OK(store_job_claim(st, 2, 0, 60, 8, &j));
	job_clear(&j);
	OK(store_job_release(st, 2, 60, 0, &stop, 3, &fs));
	assert_int_equal(q_int(h, "SELECT attempts FROM jobs WHERE job_id = 2"), 0);

	/* a master that died: its jobs come back, the attempt counted */
	OK(store_job_claim(st, 2, 0, 61, 4242, &j));
	job_clear(&j);
	OK(store_job_claim(st, 3, 0, 62, 4242, &j));
	job_clear(&j);
	x(h, "UPDATE jobs SET attempts = 3 WHERE job_id = 3");
	OK(store_recover_orphans(st, 3, &n));
	assert_int_equal(n, 2);
	assert_string_equal(status_of(st, 2), "not_started");
	assert_int_equal(q_int(h, "SELECT attempts FROM jobs WHERE job_id = 2"), 1);
	assert_string_equal(status_of(st, 3), "failed");
	assert_int_equal(q_int(h, "SELECT count(*) FROM attempts WHERE outcome = "
	    "'interrupted' AND message = 'master pid 4242 is gone'"), 2);
	OK(store_recover_orphans(st, 3, &n));
	assert_int_equal(n, 0);
	store_close(st);
}

/* ---- the view, languages, reports ---------------------------------- */

/* mpfarm retry of one stage (-1 all) and language (NULL all): how many. */
static int64_t
retry(store_t *st, int stage, const char *lang)
{
	char l[1][CONFIG_LANG_MAX];
	struct store_retry_filter f = { stage, NULL, 0, 0 };
	struct store_retry_jobs js;
	int64_t n;

	if (lang != NULL) {
		snprintf(l[0], sizeof(l[0]), "%s", lang);
		f.langs = (const char (*)[CONFIG_LANG_MAX])l;
		f.nlangs = 1;
	}
	OK(store_audit_retry(st, &f, true, &js));
	n = (int64_t)js.n;
	store_audit_retry_free(&js);
	return n;
}

static void
test_view(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	sqlite3_stmt *s;
	const char *cols[] = { "file_id", "file_path", "status",
	    "transcription_status", "translation_en_status",
	    "translation_de_status", "file_path_bytes" };

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, 4, langs2, 2);
	OK(sqlite3_prepare_v2(h, "SELECT * FROM processing_status", -1, &s,
	    NULL));
	assert_int_equal(sqlite3_column_count(s), 7);
	for (int i = 0; i < 7; i++)
		assert_string_equal(sqlite3_column_name(s, i), cols[i]);
	sqlite3_finalize(s);

	run_job(st, job_of(st, 2, "transcribe", ""), OUT_COMPLETED, 0);
	run_job(st, job_of(st, 3, "transcribe", ""), OUT_PERMANENT, 0);
	run_job(st, job_of(st, 4, "transcribe", ""), OUT_COMPLETED, 0);
	run_job(st, job_of(st, 4, "translate", "en"), OUT_COMPLETED, 0);
	run_job(st, job_of(st, 4, "translate", "de"), OUT_COMPLETED, 0);
	assert_string_equal(q_str(h, "SELECT group_concat(status, ',') FROM "
	    "(SELECT status FROM processing_status ORDER BY file_id)"),
	    "not_started,in-progress,failed,completed");
	assert_string_equal(q_str(h, "SELECT group_concat(transcription_status "
	    "|| ':' || translation_en_status, ',') FROM (SELECT * FROM "
	    "processing_status ORDER BY file_id)"), "not_started:not_started,"
	    "completed:not_started,failed:not_started,completed:completed");
	assert_string_equal(q_str(h, "SELECT typeof(file_path) || ' ' || "
	    "file_path FROM processing_status WHERE file_id = 1"),
	    "text /media/f0000.mp3");
	/* what users of the older tooling type */
	assert_int_equal(q_int(h, "SELECT count(*) FROM (SELECT "
	    "transcription_status, COUNT(*) FROM processing_status GROUP BY 1)"),
	    3);
	store_close(st);
}

static void
test_langs_sync(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	const char en[][CONFIG_LANG_MAX] = { "en" };
	const char en_de[][CONFIG_LANG_MAX] = { "en", "DE", "en" };
	const char bad[][CONFIG_LANG_MAX] = { "en", "d;e" };

	OK(store_langs_sync(st, en, 1));
	add_files(st, 3, en, 1);
	run_job(st, job_of(st, 1, "transcribe", ""), OUT_COMPLETED, 0);
	OK(store_langs_sync(st, en_de, 3));
	assert_int_equal(q_int(h, "SELECT count(*) FROM jobs WHERE lang = 'de'"), 3);
	assert_int_equal(q_int(h, "SELECT group_concat(ready, '') FROM (SELECT "
	    "ready FROM jobs WHERE lang = 'de' ORDER BY file_id)"), 100);
	assert_int_equal(q_int(h, "SELECT count(translation_de_status) FROM "
	    "processing_status"), 3);
	assert_string_equal(q_str(h, "SELECT value FROM settings"), "en,de");

	/* dropping a language hides it but keeps its jobs */
	OK(store_langs_sync(st, en, 1));
	assert_int_equal(q_int(h, "SELECT count(*) FROM jobs WHERE lang = 'de'"), 3);
	assert_int_not_equal(sqlite3_exec(h, "SELECT translation_de_status FROM "
	    "processing_status", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(store_langs_sync(st, bad, 2), -1);
	assert_non_null(strstr(store_errmsg(st), "invalid language code"));
	store_close(st);
}

static void
test_runnable_fetch(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	struct config cfg;
	struct job_ref out[16];
	int n;
	int64_t now = time_wall_ms(), due;

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, 3, langs2, 2);
	cfg_init(&cfg, STAGE_MASK_ALL);
	assert_int_equal(fetch(st, &cfg, now, out, 16), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(out[i].job_id, job_of(st, i + 1, "transcribe", ""));
		assert_int_equal(out[i].stage, STAGE_TRANSCRIBE);
	}
	int64_t skip[1] = { out[0].job_id };
	OK(store_runnable_fetch(st, &cfg, now, skip, 1, out, 1, &n));
	assert_int_equal(n, 1);
	assert_int_equal(out[0].job_id, job_of(st, 2, "transcribe", ""));

	cfg_init(&cfg, STAGE_MASK_TRANSLATE);
	assert_int_equal(fetch(st, &cfg, now, out, 16), 0);
	run_job(st, job_of(st, 1, "transcribe", ""), OUT_COMPLETED, 0);
	assert_int_equal(fetch(st, &cfg, now, out, 16), 2);
	strcpy(cfg.run_langs[0], "de");
	cfg.nrun_langs = 1;
	assert_int_equal(fetch(st, &cfg, now, out, 16), 1);
	assert_int_equal(out[0].stage, STAGE_TRANSLATE);
	assert_string_equal(out[0].lang, "de");

	/* a transient failure waits for its time */
	cfg_init(&cfg, STAGE_MASK_ALL);
	run_job(st, job_of(st, 2, "transcribe", ""), OUT_TRANSIENT, now + 60000);
	assert_int_equal(fetch(st, &cfg, now, out, 16), 3);  /* f3, f1 en, de */
	OK(store_next_due(st, &cfg, now, &due));
	assert_int_equal(due, now + 60000);
	assert_int_equal(fetch(st, &cfg, now + 60000, out, 16), 4);
	store_close(st);
}

static void
test_counts_and_retry(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	struct store_counts c;
	struct job j;
	int64_t now = time_wall_ms(), n;

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, 4, langs2, 2);
	run_job(st, job_of(st, 1, "transcribe", ""), OUT_COMPLETED, 0);
	run_job(st, job_of(st, 1, "translate", "de"), OUT_PERMANENT, 0);
	run_job(st, job_of(st, 2, "transcribe", ""), OUT_PERMANENT, 0);
	run_job(st, job_of(st, 3, "transcribe", ""), OUT_TRANSIENT, now + 60000);
	OK(store_job_claim(st, job_of(st, 4, "transcribe", ""), 0, 9, 8, &j));
	OK(store_counts_get(st, &c));
	assert_int_equal(c.files, 4);
	assert_int_equal(c.nstages, 3);
	assert_int_equal(c.stages[0].stage, STAGE_TRANSCRIBE);
	assert_string_equal(c.stages[1].lang, "de");
	assert_string_equal(c.stages[2].lang, "en");
	for (int k = 0; k < JOB_ST_COUNT; k++)
		assert_int_equal(c.stages[0].n[k], 1);
	assert_int_equal(c.stages[0].delayed, 1);
	assert_int_equal(c.stages[1].n[JOB_ST_FAILED], 1);
	assert_int_equal(c.stages[1].waiting, 3);
	assert_int_equal(c.stages[2].waiting, 3);
	assert_int_equal(c.stages[2].n[JOB_ST_NOT_STARTED], 4);
	assert_true(c.oldest_in_progress_ms >= now);
	store_counts_free(&c);
	job_clear(&j);

	n = retry(st, STAGE_TRANSLATE, "en");
	assert_int_equal(n, 0);
	n = retry(st, STAGE_TRANSLATE, "DE");
	assert_int_equal(n, 1);
	n = retry(st, -1, NULL);
	assert_int_equal(n, 1);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT count(*) FROM jobs WHERE "
	    "status = 'failed' OR (job_id = %lld AND attempts != 0)",
	    (long long)job_of(st, 2, "transcribe", "")), 0);
	store_close(st);
}

/* Every statement the store cached must be served by an index: a SCAN
 * of a table, or a temporary sort, would not survive a million files. */
static void
test_query_plans(void **state)
{
	(void)state;
	store_t *st = open_ok(0, 0);
	struct config cfg;
	struct store_counts c;
	struct job_ref out[4];
	struct job j;
	int n, checked = 0;
	int64_t due, nr;

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, 20, langs2, 2);
	run_job(st, 1, OUT_COMPLETED, 0);
	run_job(st, 4, OUT_TRANSIENT, 0);
	cfg_init(&cfg, STAGE_MASK_ALL);
	fetch(st, &cfg, time_wall_ms(), out, 4);
	OK(store_next_due(st, &cfg, time_wall_ms(), &due));
	OK(store_job_claim(st, 2, 0, 9, 8, &j));
	job_clear(&j);
	OK(store_counts_get(st, &c));
	assert_true(c.oldest_in_progress_ms > 0);
	store_counts_free(&c);
	x(db_sqlite_handle(store_db(st)), "UPDATE jobs SET status = 'failed' WHERE job_id = 4");
	nr = retry(st, -1, NULL);
	assert_int_equal(nr, 1);
	OK(store_recover_orphans(st, 3, &n));

	sqlite3 *h = db_sqlite_handle(store_db(st));
	for (sqlite3_stmt *s = sqlite3_next_stmt(h, NULL); s;
	    s = sqlite3_next_stmt(h, s)) {
		const char *sql = sqlite3_sql(s);
		char eqp[1200];
		sqlite3_stmt *e;
		snprintf(eqp, sizeof(eqp), "EXPLAIN QUERY PLAN %s", sql);
		if (sqlite3_prepare_v2(h, eqp, -1, &e, NULL) != SQLITE_OK)
			continue;       /* BEGIN and friends */
		while (sqlite3_step(e) == SQLITE_ROW) {
			const char *d = (const char *)sqlite3_column_text(e, 3);
			if (getenv("STORE_PLANS"))
				printf("%s\n    %s\n", sql, d);
			/* scans of an index, the schema or a one-row
			 * subquery are fine */
			if ((strncmp(d, "SCAN ", 5) == 0 && !strstr(d, "INDEX") &&
			    strcmp(d, "SCAN sqlite_master") != 0 &&
			    strncmp(d, "SCAN (subquery", 14) != 0) ||
			    strstr(d, "TEMP B-TREE"))
				fail_msg("%s\n  plan: %s", sql, d);
			if (strstr(sql, "LIMIT ?4"))
				assert_non_null(strstr(d, "COVERING INDEX jobs_status "
				    "(stage=? AND lang=? AND status=? AND ready=? AND "
				    "run_after<?)"));
			if (strstr(sql, "GROUP BY stage"))
				assert_non_null(strstr(d, "COVERING INDEX jobs_status"));
		}
		sqlite3_finalize(e);
		checked++;
	}
	assert_true(checked >= 15);
	store_close(st);
}

/* ---- several processes --------------------------------------------- */

/* A worker: fetch, claim, publish one output, complete, until nothing has
 * been runnable for a second; reports each job it completed on wfd. */
static int
child_work(int wfd)
{
	struct store_open_opts o = { 0 };
	struct config cfg;
	struct job_ref refs[8];
	char err[512], tmp[256], fin[256];
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct tree_temp tp[1] = { { dfd, tmp, fin, fin } };
	store_t *st;
	int n, idle = 0;

	if (store_open(&st, db, &o, err, sizeof(err)) < 0)
		return 10;
	cfg_init(&cfg, STAGE_MASK_ALL);
	while (idle < 2000) {
		if (store_runnable_fetch(st, &cfg, time_wall_ms(), NULL, 0, refs, 8,
		    &n) < 0)
			return 11;
		idle = n ? 0 : idle + 1;
		if (n == 0)
			usleep(500);
		for (int i = 0; i < n; i++) {
			struct job j;
			int rc = store_job_claim(st, refs[i].job_id, 0, getpid(), 1, &j);
			if (rc == 1)
				continue;
			if (rc < 0)
				return 12;
			snprintf(tmp, sizeof(tmp), "%s/.mpfarm-tmp.%lld", dir,
			    (long long)j.job_id);
			snprintf(fin, sizeof(fin), "%s/out.%lld", dir,
			    (long long)j.job_id);
			int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
			if (fd < 0)
				return 13;
			close(fd);
			if (store_job_complete(st, &j, tp, 1, false) != 0)
				return 14;
			job_clear(&j);
			if (write(wfd, &refs[i].job_id, sizeof(int64_t)) != 8)
				return 15;
		}
	}
	store_close(st);
	return 0;
}

static void
test_concurrent_workers(void **state)
{
	(void)state;
	enum { NFILES = 250, NJOBS = NFILES * 3, NKIDS = 4 };
	static char seen[NJOBS + 1];
	store_t *st = open_ok(0, 0);
	int pfd[2], status;
	pid_t kids[NKIDS];
	int64_t id, total = 0;

	OK(store_langs_sync(st, langs2, 2));
	add_files(st, NFILES, langs2, 2);
	store_close(st);                    /* never shared across fork */
	OK(pipe(pfd));
	for (int k = 0; k < NKIDS; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			close(pfd[0]);
			_exit(child_work(pfd[1]));
		}
	}
	close(pfd[1]);
	while (read(pfd[0], &id, sizeof(id)) == sizeof(id)) {
		assert_true(id >= 1 && id <= NJOBS);
		assert_int_equal(seen[id], 0);          /* done exactly once */
		seen[id] = 1;
		total++;
	}
	close(pfd[0]);
	for (int k = 0; k < NKIDS; k++) {
		assert_int_equal(waitpid(kids[k], &status, 0), kids[k]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(total, NJOBS);
	st = open_ok(0, 0);
	sqlite3 *h = db_sqlite_handle(store_db(st));
	assert_int_equal(q_int(h, "SELECT count(*) FROM jobs WHERE status = "
	    "'completed' AND attempts = 1"), NJOBS);
	assert_int_equal(q_int(h, "SELECT count(*) FROM attempts"), NJOBS);
	assert_int_equal(q_int(h, "SELECT count(DISTINCT job_id) FROM attempts "
	    "WHERE outcome = 'completed'"), NJOBS);
	store_close(st);
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(job_status_name(JOB_ST_IN_PROGRESS), "in-progress");
	assert_string_equal(job_status_name(JOB_ST_NOT_STARTED), "not_started");
	assert_string_equal(job_stage_name(STAGE_TRANSLATE), "translate");
	assert_int_equal(job_stage_parse("transcribe"), STAGE_TRANSCRIBE);
	assert_int_equal(job_stage_parse("bogus"), -1);
	assert_string_equal(job_outcome_name(OUT_RATE_LIMITED), "rate_limited");
	assert_string_equal(job_outcome_name(OUT_INTERRUPTED), "interrupted");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
		T(test_open_creates_schema), T(test_migrate_from_v0),
		T(test_migrate_to_v4),
		T(test_refuses_foreign_and_newer), T(test_readonly),
		T(test_corrupt_file), T(test_locked), T(test_file_add),
		T(test_claim_complete), T(test_lease_fencing),
		T(test_fail_outcomes), T(test_release_and_recover), T(test_view),
		T(test_langs_sync), T(test_runnable_fetch),
		T(test_counts_and_retry), T(test_query_plans),
		T(test_concurrent_workers), T(test_names),
#undef T
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
