/*
 * test_media.c - media files opened safely: the openat2 path and the
 * O_NOFOLLOW walk refuse links at every level and paths leaving the root;
 * a job's file is checked against the scan's device, inode, size and
 * mtime; the store records and compares them (schema 2, migrated from 1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker_media.h"
#include "common_db_sqlite.h"

#define OK(e) assert_int_equal((e), 0)

static char dir[64];

static int
setup(void **state)
{
	char p[256];
	FILE *f;

	(void)state;
	strcpy(dir, "/tmp/mpfarm-test-media-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof(p), "%s/root", dir);
	OK(mkdir(p, 0755));
	snprintf(p, sizeof(p), "%s/root/sub", dir);
	OK(mkdir(p, 0755));
	snprintf(p, sizeof(p), "%s/root/sub/a.mp3", dir);
	assert_non_null(f = fopen(p, "w"));
	fputs("media bytes", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/secret", dir);
	assert_non_null(f = fopen(p, "w"));
	fputs("secret", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/root/link.mp3", dir);
	OK(symlink("sub/a.mp3", p));
	snprintf(p, sizeof(p), "%s/root/out.mp3", dir);
	OK(symlink("../secret", p));
	snprintf(p, sizeof(p), "%s/root/dirlink", dir);
	OK(symlink("sub", p));
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
root_fd(void)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/root", dir);
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* Same answers from openat2 and from the walk. */
static void
test_open_at(void **state)
{
	int root = root_fd();
	char buf[32];

	(void)state;
	for (int flags = 0; flags <= WORKER_MEDIA_WALK; flags += WORKER_MEDIA_WALK) {
		int fd = worker_media_open_at(root, "sub/a.mp3", flags);
		assert_true(fd >= 3);
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		assert_int_equal(pread(fd, buf, sizeof(buf), 0), 11);
		close(fd);
		errno = 0;
		assert_int_equal(worker_media_open_at(root, "link.mp3", flags), -1);
		assert_int_equal(errno, ELOOP);
		assert_int_equal(worker_media_open_at(root, "out.mp3", flags), -1);
		assert_int_equal(errno, ELOOP);
		assert_int_equal(worker_media_open_at(root, "dirlink/a.mp3",
		    flags), -1);
		assert_int_equal(errno, ELOOP);
		assert_int_equal(worker_media_open_at(root, "../secret", flags), -1);
		assert_int_equal(errno, EXDEV);
		assert_int_equal(worker_media_open_at(root, "sub/nope.mp3",
		    flags), -1);
		assert_int_equal(errno, ENOENT);
	}
	/* with stdin closed, the descriptor still never lands on 0..2 */
	int saved = dup(0);
	close(0);
	int fd = worker_media_open_at(root, "sub/a.mp3", WORKER_MEDIA_WALK);
	assert_true(fd >= 3);
	close(fd);
	dup2(saved, 0);
	close(saved);
	close(root);
}

static void
job_for(struct job *j, const char *rel)
{
	char p[256];
	struct stat sb;

	memset(j, 0, sizeof(*j));
	snprintf(p, sizeof(p), "%s/root/%s", dir, rel);
	assert_int_equal(stat(p, &sb), 0);
	j->abs_path = xstrdup(p);
	snprintf(p, sizeof(p), "%s/root", dir);
	j->open_root = xstrdup(p);
	j->open_rel = xstrdup(rel);
	j->size = sb.st_size;
	j->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	j->dev = (int64_t)sb.st_dev;
	j->ino = (int64_t)sb.st_ino;
}

static void
test_job_check(void **state)
{
	struct job j;
	char err[512];
	bool perm;
	int fd;

	(void)state;
	job_for(&j, "sub/a.mp3");
	fd = worker_media_open(&j, err, sizeof(err), &perm);
	assert_true(fd >= 3);
	close(fd);

	j.ino++;
	assert_int_equal(worker_media_open(&j, err, sizeof(err), &perm), -1);
	assert_true(perm);
	assert_non_null(strstr(err, "changed since the scan"));
	assert_non_null(strstr(err, j.abs_path));
	j.ino = 0;              /* not recorded: size and mtime still count */
	j.size++;
	assert_int_equal(worker_media_open(&j, err, sizeof(err), &perm), -1);
	assert_non_null(strstr(err, "resized"));
	job_clear(&j);

	job_for(&j, "sub/a.mp3");
	free(j.open_rel);
	j.open_rel = xstrdup("dirlink/a.mp3");
	assert_int_equal(worker_media_open(&j, err, sizeof(err), &perm), -1);
	assert_true(perm);
	assert_non_null(strstr(err, "symbolic link"));
	job_clear(&j);
}

static int64_t
q_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void
test_store_identity(void **state)
{
	char db[128], err[256];
	store_t *st;
	enum store_add_result res;
	struct job j;
	struct media_file mf = { "/m", "a.mp3", "/m/a.mp3", 10, 20, 0, 0 };
	struct media_file ln = { "/m", "l.mp3", "/m/l.mp3", 10, 20, 5, 6,
	    "/m", "a.mp3" };

	(void)state;
	snprintf(db, sizeof(db), "%s/t.db", dir);
	OK(store_open(&st, db, NULL, err, sizeof(err)));
	/* a database from schema 1 */
	OK(sqlite3_exec(db_sqlite_handle(store_db(st)), "DROP VIEW IF EXISTS processing_status;"
	    "ALTER TABLE media_files DROP COLUMN dev;"
	    "ALTER TABLE media_files DROP COLUMN ino;"
	    "ALTER TABLE media_files DROP COLUMN src_root;"
	    "ALTER TABLE media_files DROP COLUMN src_rel;"
	    "ALTER TABLE media_files DROP COLUMN abs_path_text;"
	    "PRAGMA user_version = 1", NULL, NULL, NULL));
	store_close(st);
	OK(store_open(&st, db, NULL, err, sizeof(err)));
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "PRAGMA user_version"), STORE_SCHEMA_VERSION);

	OK(store_file_add(st, &mf, NULL, 0, &res, NULL));
	assert_int_equal(res, STORE_ADDED);
	/* inode first seen: recorded without starting over */
	mf.dev = 5;
	mf.ino = 6;
	OK(store_file_add(st, &mf, NULL, 0, &res, NULL));
	assert_int_equal(res, STORE_UNCHANGED);
	assert_int_equal(q_int(db_sqlite_handle(store_db(st)), "SELECT ino FROM media_files"), 6);
	/* same size and mtime, another inode: another file */
	mf.ino = 7;
	OK(store_file_add(st, &mf, NULL, 0, &res, NULL));
	assert_int_equal(res, STORE_CHANGED);

	/* a followed link: the worker opens its target beneath its root */
	OK(store_file_add(st, &ln, NULL, 0, &res, NULL));
	assert_int_equal(res, STORE_ADDED);
	OK(store_job_claim(st, 2, 0, 9, 8, &j));
	assert_string_equal(j.rel_path, "l.mp3");
	assert_string_equal(j.open_root, "/m");
	assert_string_equal(j.open_rel, "a.mp3");
	assert_int_equal(j.ino, 6);
	job_clear(&j);
	ln.src_rel = "b.mp3";   /* retargeted: its jobs start over */
	OK(store_file_add(st, &ln, NULL, 0, &res, NULL));
	assert_int_equal(res, STORE_CHANGED);
	OK(store_job_claim(st, 1, 0, 9, 8, &j));
	assert_string_equal(j.open_rel, "a.mp3");      /* plain file: rel */
	job_clear(&j);
	store_close(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_at),
		cmocka_unit_test(test_job_check),
		cmocka_unit_test(test_store_identity),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
