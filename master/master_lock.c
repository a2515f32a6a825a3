/*
 * master_lock.c - one master per database.  The farm lock is a flock on
 * "<db>.lock" holding the master's pid; it is what lets a new master treat
 * every in-progress job as an orphan of a dead one, and lets `status`,
 * `fix` and `check` tell a live farm from a stale one.  flock dies with the
 * process that holds it, so a kill -9 never leaves a stale lock.  Workers
 * never hold it (the master closes it in every child).  A clean exit
 * empties the file before unlocking: it names a pid only while locked.
 */
#include "master.h"
#include "common_db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static pid_t
master_lock_read_pid(int fd)
{
	char buf[32] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

int
master_lock_acquire(const char *db, int *fd_out, pid_t *holder, char *err,
		    size_t errlen)
{
	char *path;
	char pid[32];
	int fd, n;

	*holder = 0;
	*fd_out = -1;
	/* many masters share a PostgreSQL database: each registers a host
	 * row instead (common_store_host.c) */
	if (db_target_is_pg(db))
		return 0;
	path = xasprintf("%s.lock", db);
	/* a link planted there is refused: its target is never truncated */
	fd = file_open_regular(path, O_RDWR | O_CREAT, 0644, err, errlen);
	free(path);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		*holder = master_lock_read_pid(fd);
		close(fd);
		snprintf(err, errlen, "%s.lock is held by another process", db);
		errno = EWOULDBLOCK;
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		snprintf(err, errlen, "cannot write %s.lock: %s", db,
		    strerror(errno));
		close(fd);
		return -1;
	}
	*fd_out = fd;
	return 0;
}

void
master_lock_release(int fd)
{
	if (fd < 0)
		return;
	/* an unlocked file must not name a pid someone might signal */
	(void)!ftruncate(fd, 0);
	close(fd);
}

/* PostgreSQL: a farm is live while any host row heartbeats.  The pid of
 * this machine's live master, else -1 (live elsewhere), else 0. */
static pid_t
master_lock_holder_pg(const char *db)
{
	struct store_open_opts o = { .flags = STORE_READONLY };
	struct store_host *h = NULL;
	char err[600], name[256] = "";
	store_t *st = NULL;
	pid_t pid = 0;
	int n = 0;

	(void)gethostname(name, sizeof(name) - 1);
	if (store_open(&st, db, &o, err, sizeof(err)) < 0)
		return 0;       /* no schema yet: no farm */
	if (store_hosts_list(st, &h, &n) < 0)
		pid = -1;       /* cannot tell: assume one runs */
	for (int i = 0; i < n; i++) {
		if (!h[i].live)
			continue;
		if (strcmp(h[i].hostname, name) == 0) {
			if (proc_alive(h[i].pid)) {
				pid = h[i].pid;
				break;
			}
			/* a master of this machine that died: its row
			 * stays live until host_timeout, it does not */
			continue;
		}
		pid = -1;
	}
	store_hosts_free(h, n);
	store_close(st);
	return pid;
}

pid_t
master_lock_holder(const char *db)
{
	char *path, err[8];
	int fd;
	pid_t pid = 0;

	if (db_target_is_pg(db))
		return master_lock_holder_pg(db);
	path = xasprintf("%s.lock", db);
	/* a link there is no lock of ours: no master */
	fd = file_open_regular(path, O_RDONLY, 0, err, sizeof(err));
	free(path);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
		pid = master_lock_read_pid(fd);
		if (pid <= 0)
			pid = -1;   /* held, pid unknown */
	} else {
		flock(fd, LOCK_UN);
	}
	close(fd);
	return pid;
}
