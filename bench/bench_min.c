/*
 * bench_min.c - the physical floor of `make bench`: the least a job
 * tracker can do per file and still be one.  A single process, one table,
 * plain sqlite3 (WAL, synchronous=NORMAL, SQLite's defaults otherwise)
 * and, per job:
 *   claim     UPDATE ... SET status = 'in-progress', lease = lease + 1
 *             WHERE id = ? AND status = 'not_started' RETURNING ...
 *             (its own transaction)
 *   outputs   REL.txt and REL.json under OUTDIR/transcripts, each written
 *             whole: a temp file in the folder, then rename (the same
 *             names and bytes as mpfarm's noop provider)
 *   complete  UPDATE ... SET status = 'completed' WHERE id = ? AND lease = ?
 *             AND status = 'in-progress' (its own transaction)
 * Work is found in rowid order, a batch at a time, past the last batch.
 * No attempt history, no index, no checks before writing, no farm: what
 * mpfarm does beyond this is its price, and the bench holds it to this.
 *
 *   bench_min init DB MEDIA_ROOT      one row per file (untimed set-up)
 *   bench_min run DB OUTDIR [FETCH]   prints "min jobs=N failed=F
 *                                     seconds=S rate=R"; exit 0 or 1
 *
 * Deliberately self-contained (sqlite3 and libc only), so that it stays the
 * same yardstick whatever the store becomes.
 */
#define _GNU_SOURCE 1
#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIN_FETCH_DEFAULT 50

static const char min_schema[] =
	"PRAGMA journal_mode = WAL;"
	"PRAGMA synchronous = NORMAL;"
	"CREATE TABLE IF NOT EXISTS jobs ("
	"  id          INTEGER PRIMARY KEY,"
	"  path        BLOB NOT NULL,"
	"  rel         BLOB NOT NULL,"
	"  status      TEXT NOT NULL DEFAULT 'not_started',"
	"  lease       INTEGER NOT NULL DEFAULT 0,"
	"  started_at  INTEGER,"
	"  finished_at INTEGER"
	");";

static sqlite3 *min_db;
static sqlite3_stmt *min_ins;
static size_t min_rootlen;

static int64_t
min_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
min_mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
min_fail(const char *what)
{
	fprintf(stderr, "bench_min: %s: %s\n", what,
	    min_db ? sqlite3_errmsg(min_db) : "cannot open");
	return -1;
}

static int
min_open(const char *path)
{
	if (sqlite3_open(path, &min_db) != SQLITE_OK ||
	    sqlite3_exec(min_db, min_schema, NULL, NULL, NULL) != SQLITE_OK)
		return min_fail(path);
	sqlite3_busy_timeout(min_db, 10000);
	return 0;
}

static int
min_add(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (type != FTW_F)
		return 0;
	sqlite3_bind_blob(min_ins, 1, path, (int)strlen(path), SQLITE_STATIC);
	sqlite3_bind_blob(min_ins, 2, path + min_rootlen + 1,
	    (int)strlen(path + min_rootlen + 1), SQLITE_STATIC);
	if (sqlite3_step(min_ins) != SQLITE_DONE)
		return min_fail("insert");
	sqlite3_reset(min_ins);
	return 0;
}

/* Untimed: every file under root, in the order the walk meets them. */
static int
min_init(const char *db, const char *root)
{
	char *abs = realpath(root, NULL);
	int rc = -1;

	if (abs == NULL) {
		fprintf(stderr, "bench_min: %s: %s\n", root, strerror(errno));
		return -1;
	}
	min_rootlen = strlen(abs);
	if (min_open(db) < 0 ||
	    sqlite3_prepare_v2(min_db, "INSERT INTO jobs (path, rel) "
	    "VALUES (?1, ?2)", -1, &min_ins, NULL) != SQLITE_OK ||
	    sqlite3_exec(min_db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		min_fail("init");
		goto out;
	}
	if (nftw(abs, min_add, 32, FTW_PHYS) != 0 ||
	    sqlite3_exec(min_db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	rc = 0;
out:
	sqlite3_finalize(min_ins);
	free(abs);
	return rc;
}

/* The output folder of rel (made if missing), kept open while the jobs
 * stay in it: a farm's files come folder by folder. */
static int
min_dir(const char *outdir, const char *rel)
{
	static char *cur;
	static int cfd = -1;
	const char *slash = strrchr(rel, '/');
	size_t n = slash ? (size_t)(slash - rel) : 0;
	char *want, *p;

	if (asprintf(&want, "%s/transcripts/%.*s", outdir, (int)n, rel) < 0)
		return -1;
	if (cur != NULL && strcmp(cur, want) == 0) {
		free(want);
		return cfd;
	}
	for (p = want + strlen(outdir) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		(void)mkdir(want, 0755);
		*p = '/';
	}
	(void)mkdir(want, 0755);
	if (cfd >= 0)
		close(cfd);
	free(cur);
	cur = want;
	cfd = open(want, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return cfd;
}

/* One output written whole: temp beside it, then rename. */
static int
min_write(int dfd, const char *name, const char *suffix, const char *data)
{
	char tmp[64], final[4096];
	size_t len = strlen(data);
	int fd;

	snprintf(tmp, sizeof(tmp), ".tmp.%ld%s", (long)getpid(), suffix);
	snprintf(final, sizeof(final), "%s%s", name, suffix);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		unlinkat(dfd, tmp, 0);
		return -1;
	}
	close(fd);
	return renameat(dfd, tmp, dfd, final);
}

static int
min_job(const char *outdir, sqlite3_stmt *claim, sqlite3_stmt *done,
	int64_t id)
{
	char rel[4096], txt[4200], json[64];
	const char *base, *name;
	int64_t lease;
	int dfd, rc;

	sqlite3_bind_int64(claim, 1, id);
	sqlite3_bind_int64(claim, 2, min_wall_ms());
	rc = sqlite3_step(claim);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(claim);
		return rc == SQLITE_DONE ? 1 : min_fail("claim");
	}
	snprintf(rel, sizeof(rel), "%.*s", sqlite3_column_bytes(claim, 0),
	    (const char *)sqlite3_column_blob(claim, 0));
	lease = sqlite3_column_int64(claim, 1);
	if (sqlite3_step(claim) != SQLITE_DONE) {
		sqlite3_reset(claim);
		return min_fail("claim");
	}
	sqlite3_reset(claim);

	base = strrchr(rel, '/');
	name = base ? base + 1 : rel;
	snprintf(txt, sizeof(txt), "noop transcript of %s\n", name);
	snprintf(json, sizeof(json), "{\"provider\":\"noop\",\"job\":%lld}\n",
	    (long long)id);
	if ((dfd = min_dir(outdir, rel)) < 0 ||
	    min_write(dfd, name, ".txt", txt) < 0 ||
	    min_write(dfd, name, ".json", json) < 0) {
		fprintf(stderr, "bench_min: %s: %s\n", rel, strerror(errno));
		return -1;
	}

	sqlite3_bind_int64(done, 1, id);
	sqlite3_bind_int64(done, 2, lease);
	sqlite3_bind_int64(done, 3, min_wall_ms());
	rc = sqlite3_step(done);
	sqlite3_reset(done);
	if (rc != SQLITE_DONE)
		return min_fail("complete");
	return sqlite3_changes(min_db) == 1 ? 0 : 1;
}

static int
min_run(const char *db, const char *outdir, int fetch)
{
	sqlite3_stmt *next = NULL, *claim = NULL, *done = NULL;
	int64_t *ids = calloc((size_t)fetch, sizeof(*ids)), after = 0;
	long jobs = 0, failed = 0;
	double t0 = min_mono_s(), s;
	int rc = -1;

	if (ids == NULL || min_open(db) < 0)
		goto out;
	(void)mkdir(outdir, 0755);
	if (sqlite3_prepare_v2(min_db, "SELECT id FROM jobs WHERE id > ?1 AND "
	    "status = 'not_started' ORDER BY id LIMIT ?2", -1, &next,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(min_db, "UPDATE jobs SET status = 'in-progress', "
	    "lease = lease + 1, started_at = ?2 WHERE id = ?1 AND "
	    "status = 'not_started' RETURNING rel, lease", -1, &claim,
	    NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(min_db, "UPDATE jobs SET status = 'completed', "
	    "finished_at = ?3 WHERE id = ?1 AND lease = ?2 AND "
	    "status = 'in-progress'", -1, &done, NULL) != SQLITE_OK) {
		min_fail("prepare");
		goto out;
	}
	for (;;) {
		int n = 0;

		sqlite3_bind_int64(next, 1, after);
		sqlite3_bind_int(next, 2, fetch);
		while (sqlite3_step(next) == SQLITE_ROW)
			ids[n++] = after = sqlite3_column_int64(next, 0);
		if (sqlite3_reset(next) != SQLITE_OK) {
			min_fail("fetch");
			goto out;
		}
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			int one = min_job(outdir, claim, done, ids[i]);
			if (one == 0)
				jobs++;
			else if (one < 0)
				failed++;
		}
		if (failed > 0)
			goto out;
	}
	rc = 0;
out:
	sqlite3_finalize(next);
	sqlite3_finalize(claim);
	sqlite3_finalize(done);
	sqlite3_close(min_db);
	free(ids);
	s = min_mono_s() - t0;
	printf("min jobs=%ld failed=%ld seconds=%.3f rate=%.0f\n", jobs, failed,
	    s, s > 0 ? (double)jobs / s : 0.0);
	return rc;
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("bench_min\n");     /* bench_farm.py probes its copy */
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "init") == 0)
		return min_init(argv[2], argv[3]) < 0 ? 1 : 0;
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "run") == 0) {
		int fetch = argc == 5 ? atoi(argv[4]) : MIN_FETCH_DEFAULT;
		return min_run(argv[2], argv[3], fetch > 0 ? fetch :
		    MIN_FETCH_DEFAULT) < 0 ? 1 : 0;
	}
	fprintf(stderr, "usage: bench_min init DB MEDIA_ROOT\n"
	    "       bench_min run DB OUTDIR [FETCH]\n");
	return 2;
}
