/*
 * common_store_host.c - many masters on one PostgreSQL database.  A file
 * lock cannot span hosts, so each master registers a row in `hosts` (a
 * random id per boot, with hostname and pid for people), heartbeats it
 * with its live figures, and records its id on every job its workers
 * claim.  A master that stops heartbeating for the host timeout is gone:
 * the first master to notice returns its in-flight jobs (counting an
 * attempt, as a crash does), one master at a time under an advisory lock.
 * A paused host that wakes completes nothing it lost: completion is fenced
 * by lease and status, which the return changed.  On SQLite (one master,
 * the flock) every call here is a no-op.
 */
#define MPFARM_STORE_INTERNAL 1
#include "common_store.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The advisory lock the reaper holds: "mpreap" in ASCII. */
#define STORE_HOST_LOCK_REAP "120329521421680"
#define STORE_HOST_BEAT_MS   1000

static int64_t store_host_timeout_ms = STORE_HOST_TIMEOUT_DEFAULT_MS;
static int64_t store_host_beat_at;      /* monotonic ms of the next beat */
static char   *store_host_figs;         /* the figures the beat carries */

static struct store_sql q_host_put = STORE_SQL(
	"INSERT INTO hosts (host_id, hostname, pid, started_at, seen_at, "
	"figures) VALUES (?1, ?2, ?3, ?4, ?4, ?5) ON CONFLICT (host_id) DO "
	"UPDATE SET seen_at = excluded.seen_at, figures = excluded.figures");
static struct store_sql q_host_del = STORE_SQL(
	"DELETE FROM hosts WHERE host_id = ?1");
static struct store_sql q_host_try_lock = STORE_SQL(
	"SELECT pg_try_advisory_xact_lock(" STORE_HOST_LOCK_REAP ")");
/* a row a paused process still locks is not worth stalling the farm:
 * the next tick tries again */
static struct store_sql q_host_lock_timeout = STORE_SQL(
	"SET LOCAL lock_timeout = 2000");
/* in-flight jobs of silent hosts, and of hosts with no row at all (a
 * row is removed only after its jobs are returned) */
static struct store_sql q_host_lost_jobs = STORE_SQL(
	"SELECT j.job_id, j.lease, coalesce(j.owner_host, ''), "
	"coalesce(h.hostname, '?'), coalesce(h.pid, j.owner_master, 0), "
	"coalesce(h.seen_at, 0) FROM jobs j LEFT JOIN hosts h ON h.host_id = j.owner_host "
	"WHERE j.status = 'in-progress' AND (h.host_id IS NULL OR "
	"h.seen_at < ?1)");
static struct store_sql q_host_silent = STORE_SQL(
	"SELECT count(*) FROM hosts WHERE seen_at < ?1");
static struct store_sql q_host_forget = STORE_SQL(
	"DELETE FROM hosts WHERE seen_at < ?1");
/* a master of this machine whose pid no longer runs is gone now: no need
 * to wait for its heartbeat to age (a restart after kill -9) */
static struct store_sql q_host_local = STORE_SQL(
	"SELECT host_id, pid FROM hosts WHERE hostname = ?1 AND host_id <> ?2");
static struct store_sql q_host_silence = STORE_SQL(
	"UPDATE hosts SET seen_at = 0 WHERE host_id = ?1");
/* per (stage, lang), so that jobs_status (stage, lang, status, ...)
 * finds the in-progress rows without reading the table */
static struct store_sql q_host_elsewhere = STORE_SQL(
	"SELECT count(*) FROM jobs j JOIN hosts h ON h.host_id = j.owner_host "
	"WHERE j.stage = ?1 AND j.lang = ?2 AND j.status = 'in-progress' AND "
	"j.started_at <= ?3 AND h.host_id <> ?4");
static struct store_sql q_hosts_list = STORE_SQL(
	"SELECT host_id, hostname, pid, started_at, seen_at, "
	"coalesce(figures, '') FROM hosts ORDER BY hostname, started_at");

/* 32 hex digits from the kernel's random source (the clock and pid as a
 * fallback): unique per boot of a master, never the hostname. */
static void
store_host_id_make(char out[40])
{
	unsigned char r[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && read(fd, r, sizeof(r)) == (ssize_t)sizeof(r);

	if (fd >= 0)
		close(fd);
	if (!ok) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
		uint64_t b = (uint64_t)ts.tv_sec * 2654435761u;
		memcpy(r, &a, 8);
		memcpy(r + 8, &b, 8);
	}
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static int
store_host_put(store_t *st)
{
	char name[256] = "";
	db_stmt_t *s;

	(void)gethostname(name, sizeof(name) - 1);
	if ((s = store_stmt(st, &q_host_put)) == NULL)
		return -1;
	db_bind_text(s, 1, store_host_id());
	db_bind_text(s, 2, name);
	db_bind_int64(s, 3, getpid());
	db_bind_int64(s, 4, time_wall_ms());
	db_bind_text(s, 5, store_host_figs);
	return store_run(st, s);
}

/* Hosts of this machine whose master pid is not running: marked silent
 * so that the start-up reap returns their jobs at once. */
static int
store_host_local_dead(store_t *st)
{
	char name[256] = "", (*dead)[40] = NULL;
	int ndead = 0, step, rc = 0;
	db_stmt_t *s;

	(void)gethostname(name, sizeof(name) - 1);
	if ((s = store_stmt(st, &q_host_local)) == NULL)
		return -1;
	db_bind_text(s, 1, name);
	db_bind_text(s, 2, store_host_id());
	while ((step = store_step(st, s)) == DB_ROW) {
		pid_t pid = (pid_t)db_column_int64(s, 1);
		if (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM))
			continue;
		dead = xrealloc(dead, sizeof(*dead) * (size_t)(ndead + 1));
		snprintf(dead[ndead++], sizeof(dead[0]), "%s",
		    db_column_text(s, 0));
	}
	if (step < 0)
		rc = -1;
	for (int i = 0; rc == 0 && i < ndead; i++) {
		if ((s = store_stmt(st, &q_host_silence)) == NULL) {
			rc = -1;
			break;
		}
		db_bind_text(s, 1, dead[i]);
		rc = store_run(st, s);
	}
	free(dead);
	return rc;
}

int
store_host_register(store_t *st, int64_t timeout_ms)
{
	char id[40];

	if (!store_is_pg(st))
		return 0;
	if (timeout_ms > 0)
		store_host_timeout_ms = timeout_ms;
	store_host_id_make(id);
	store_host_id_set(id);
	store_host_beat_at = time_mono_ms() + STORE_HOST_BEAT_MS;
	if (store_host_put(st) < 0)
		return -1;
	return store_host_local_dead(st);
}

void
store_host_figures_set(const char *json)
{
	free(store_host_figs);
	store_host_figs = json ? xstrdup(json) : NULL;
}

int
store_host_unregister(store_t *st)
{
	db_stmt_t *s;

	if (!store_is_pg(st) || store_host_id()[0] == '\0')
		return 0;
	if ((s = store_stmt(st, &q_host_del)) == NULL)
		return -1;
	db_bind_text(s, 1, store_host_id());
	return store_run(st, s);
}

struct store_host_lost {
	int64_t job_id, lease, pid;
	bool    dead;               /* known dead, not merely silent */
	char    host[40];
	char    hostname[64];
};

/* In the caller's transaction, holding the reaper's lock. */
static int
store_host_reap_locked(store_t *st, int64_t cutoff, int max_attempts, int *n)
{
	struct store_host_lost *v = NULL;
	size_t nv = 0, cap = 0;
	db_stmt_t *s;
	int step, rc = -1;

	if ((s = store_stmt(st, &q_host_lost_jobs)) == NULL)
		return -1;
	db_bind_int64(s, 1, cutoff);
	while ((step = store_step(st, s)) == DB_ROW) {
		if (nv == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[nv].job_id = db_column_int64(s, 0);
		v[nv].lease = db_column_int64(s, 1);
		snprintf(v[nv].host, sizeof(v[nv].host), "%s",
		    db_column_text(s, 2));
		snprintf(v[nv].hostname, sizeof(v[nv].hostname), "%s",
		    db_column_text(s, 3));
		v[nv].dead = db_column_int64(s, 5) == 0;
		v[nv++].pid = db_column_int64(s, 4);
	}
	if (step < 0)
		goto out;
	for (size_t i = 0; i < nv; i++) {
		char msg[200];
		int one;

		if (v[i].host[0] && !v[i].dead)
			snprintf(msg, sizeof(msg), "host %s (%s, master pid %lld) "
			    "went silent", v[i].host, v[i].hostname,
			    (long long)v[i].pid);
		else if (v[i].host[0])
			snprintf(msg, sizeof(msg), "master pid %lld is gone "
			    "(host %s, %s)", (long long)v[i].pid, v[i].host,
			    v[i].hostname);
		else
			snprintf(msg, sizeof(msg), "master pid %lld is gone",
			    (long long)v[i].pid);
		if ((one = store_job_lost(st, v[i].job_id, v[i].lease, msg,
		    max_attempts)) < 0)
			goto out;
		if (one == 0)
			(*n)++;
	}
	if ((s = store_stmt(st, &q_host_forget)) == NULL)
		goto out;
	db_bind_int64(s, 1, cutoff);
	rc = store_run(st, s);
out:
	free(v);
	return rc;
}

int
store_host_reap(store_t *st, int max_attempts, bool always, int *n)
{
	int64_t cutoff = time_wall_ms() - store_host_timeout_ms;
	db_stmt_t *s;
	int step, rc = -1;
	bool own;

	*n = 0;
	if (!store_is_pg(st))
		return 0;
	if (!always) {
		/* the usual answer, from the small hosts table: nobody died */
		int64_t silent = 0;
		if ((s = store_stmt(st, &q_host_silent)) == NULL)
			return -1;
		db_bind_int64(s, 1, cutoff);
		if ((step = store_step(st, s)) < 0)
			return -1;
		if (step == DB_ROW)
			silent = db_column_int64(s, 0);
		db_reset(s);
		if (silent == 0)
			return 0;
	}
	if (store_tx_enter(st, &own) < 0)
		return -1;
	if ((s = store_stmt(st, &q_host_lock_timeout)) == NULL ||
	    store_run(st, s) < 0)
		goto out;
	if ((s = store_stmt(st, &q_host_try_lock)) == NULL ||
	    (step = store_step(st, s)) < 0)
		goto out;
	if (step != DB_ROW || db_column_int(s, 0) == 0) {
		db_reset(s);
		rc = 0;         /* another master is at it */
		goto out;
	}
	db_reset(s);
	rc = store_host_reap_locked(st, cutoff, max_attempts, n);
out:
	return store_tx_leave(st, own, rc);
}

int
store_host_elsewhere(store_t *st, const struct config *want, int64_t since_ms,
		     int64_t *n)
{
	struct store_want w[STORE_WANTS_MAX];
	int nw, step = DB_DONE;
	db_stmt_t *s;

	*n = 0;
	if (!store_is_pg(st))
		return 0;
	nw = store_wants(want, w);
	for (int i = 0; i < nw; i++) {
		if ((s = store_stmt(st, &q_host_elsewhere)) == NULL)
			return -1;
		db_bind_text(s, 1, job_stage_name(w[i].stage));
		db_bind_text(s, 2, w[i].lang);
		db_bind_int64(s, 3, since_ms);
		db_bind_text(s, 4, store_host_id());
		if ((step = store_step(st, s)) < 0)
			return -1;
		if (step == DB_ROW)
			*n += db_column_int64(s, 0);
		db_reset(s);
	}
	return 0;
}

int
store_host_tick(store_t *st, int max_attempts, int *n)
{
	int64_t now = time_mono_ms();

	*n = 0;
	if (!store_is_pg(st) || now < store_host_beat_at)
		return 0;
	store_host_beat_at = now + STORE_HOST_BEAT_MS;
	if (store_host_put(st) < 0)
		return -1;
	return store_host_reap(st, max_attempts, false, n);
}

int
store_hosts_list(store_t *st, struct store_host **out, int *n)
{
	int64_t cutoff = time_wall_ms() - store_host_timeout_ms;
	struct store_host *v = NULL;
	int cap = 0, step;
	db_stmt_t *s;

	*out = NULL;
	*n = 0;
	if (!store_is_pg(st))
		return 0;
	if ((s = store_stmt(st, &q_hosts_list)) == NULL)
		return -1;
	while ((step = store_step(st, s)) == DB_ROW) {
		struct store_host *h;
		if (*n == cap) {
			cap = cap ? cap * 2 : 4;
			v = xrealloc(v, sizeof(*v) * (size_t)cap);
		}
		h = &v[(*n)++];
		memset(h, 0, sizeof(*h));
		snprintf(h->id, sizeof(h->id), "%s", db_column_text(s, 0));
		snprintf(h->hostname, sizeof(h->hostname), "%s",
		    db_column_text(s, 1));
		h->pid = (pid_t)db_column_int64(s, 2);
		h->started_at_ms = db_column_int64(s, 3);
		h->seen_at_ms = db_column_int64(s, 4);
		h->live = h->seen_at_ms >= cutoff;
		h->figures = xstrdup(db_column_text(s, 5));
	}
	if (step < 0) {
		store_hosts_free(v, *n);
		*n = 0;
		return -1;
	}
	*out = v;
	return 0;
}

void
store_hosts_free(struct store_host *v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i].figures);
	free(v);
}
