/*
 * common_proc.c - keeping what mpfarm's processes hold, and what they
 * start, under control.  Every mpfarm process has the provider keys in its
 * environment (and workers in memory), so none may be dumped or traced by
 * a same-uid process; engines hold no key and get the operator's core
 * limit back.  And since an exec engine may leave processes behind (a
 * `sleep &`, a daemonising helper), the master and the workers are child
 * subreapers: whatever an engine started ends up their child, and is
 * killed and reaped here instead of outliving the farm.
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_CHILDREN_MAX 256
/* Between two rounds of proc_children_end: short, since the round is
 * cheap and the master is waiting to exit (10 ms). */
#define PROC_REAP_POLL_NS (10L * 1000 * 1000)

static struct rlimit proc_core_saved;
static bool proc_core_have;

int
proc_harden(void)
{
	struct rlimit none;
	int rc = 0;

	/* not dumpable: no core file, no ptrace, /proc/PID/environ and mem
	 * closed to other processes of the same user */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		rc = -1;
	if (getrlimit(RLIMIT_CORE, &proc_core_saved) == 0) {
		proc_core_have = true;
		/* the soft limit only: the hard one stays, so engines can
		 * have the operator's limit back */
		none = (struct rlimit){ 0, proc_core_saved.rlim_max };
		if (setrlimit(RLIMIT_CORE, &none) < 0)
			rc = -1;
	} else {
		rc = -1;
	}
	if (rc < 0)
		log_warn("harden_failed", "error=%s", log_quote(strerror(errno)));
	return rc;
}

void
proc_core_restore(void)
{
	if (proc_core_have)
		(void)setrlimit(RLIMIT_CORE, &proc_core_saved);
}

int
proc_subreaper_set(void)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		log_warn("subreaper_failed", "error=%s", log_quote(strerror(errno)));
		return -1;
	}
	return 0;
}

/* Append the pids listed in one /proc/.../children file.  -1 when the
 * file cannot be read (a kernel without CONFIG_PROC_CHILDREN). */
static int
proc_children_file(const char *path, pid_t *out, int *n, int max)
{
	char buf[4096];
	ssize_t len;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len < 0)
		return -1;
	buf[len] = '\0';
	for (char *p = buf, *end; *n < max; p = end) {
		long v = strtol(p, &end, 10);
		if (end == p)
			break;
		out[(*n)++] = (pid_t)v;
	}
	return 0;
}

/* Our children from every /proc/PID/stat whose parent is us: slow, for
 * kernels without the children files. */
static void
proc_children_scan(pid_t *out, int *n, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t self = getpid();

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL && *n < max) {
		char path[300], buf[512], *rp;
		int fd, ppid;
		ssize_t len;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = '\0';
		/* "pid (comm) state ppid": comm may hold spaces and parens */
		rp = strrchr(buf, ')');
		if (rp != NULL && sscanf(rp + 1, " %*c %d", &ppid) == 1 &&
		    ppid == self)
			out[(*n)++] = (pid_t)atoi(de->d_name);
	}
	closedir(d);
}

/* The pids of our children (every thread's), at most `max`. */
static int
proc_children_list(pid_t *out, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0, files = 0;

	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			char path[300];
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/self/task/%s/children",
			    de->d_name);
			if (proc_children_file(path, out, &n, max) == 0)
				files++;
		}
		closedir(d);
	}
	if (files == 0)
		proc_children_scan(out, &n, max);
	return n;
}

int
proc_children_kill(const pid_t *keep, int nkeep)
{
	pid_t kids[PROC_CHILDREN_MAX];
	int n = proc_children_list(kids, PROC_CHILDREN_MAX), killed = 0;

	for (int i = 0; i < n; i++) {
		bool kept = false;
		for (int k = 0; k < nkeep && !kept; k++)
			kept = keep[k] == kids[i];
		if (kept)
			continue;
		/* our child, not yet reaped: its pid (and so the group it
		 * leads) cannot have been reused */
		if (getpgid(kids[i]) == kids[i])
			(void)kill(-kids[i], SIGKILL);
		if (kill(kids[i], SIGKILL) == 0) {
			log_debug("leftover_killed", "pid=%d", (int)kids[i]);
			killed++;
		}
	}
	return killed;
}

int
proc_children_end(int timeout_ms, void (*tick)(void))
{
	int64_t deadline = time_mono_ms() + timeout_ms;

	for (;;) {
		int status;
		pid_t pid;

		(void)proc_children_kill(NULL, 0);
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			;
		if (pid < 0 && errno == ECHILD)
			return 0;
		if (time_mono_ms() >= deadline) {
			log_warn("leftover_unkillable", "note=child-still-running");
			return -1;
		}
		if (tick != NULL)
			tick();
		nanosleep(&(struct timespec){ 0, PROC_REAP_POLL_NS }, NULL);
	}
}
