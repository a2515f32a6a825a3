/*
 * master_signal.c - `mpfarm signal SIG`: the documented way to signal the
 * master of a database, instead of `kill $(cat DB.lock)`.  A pid read from
 * a file can be stale (a master killed with -9 leaves its pid behind, and
 * the pid may since belong to anything); so the target is the process
 * that holds the flock on "<db>.lock" now, as the kernel reports it in
 * /proc/locks.  The file's pid is used only where /proc/locks cannot be
 * read, and only while the lock is seen held.
 */
#include "master.h"
#include "common_db.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const struct {
	const char *name;
	int sig;
} master_signals[] = {
	{ "USR1", SIGUSR1 }, { "HUP", SIGHUP }, { "TTIN", SIGTTIN },
	{ "TTOU", SIGTTOU }, { "TERM", SIGTERM }, { "QUIT", SIGQUIT },
};
#define MASTER_NSIGNALS (sizeof(master_signals) / sizeof(master_signals[0]))

/* "usr1", "SIGUSR1", "SigHup" -> index into master_signals, or -1. */
static int
master_signal_parse(const char *s)
{
	if (strncasecmp(s, "SIG", 3) == 0)
		s += 3;
	for (size_t i = 0; i < MASTER_NSIGNALS; i++)
		if (strcasecmp(s, master_signals[i].name) == 0)
			return (int)i;
	return -1;
}

/* The pid holding a FLOCK on the file dev/ino, per /proc/locks: 0 when
 * none does, -1 when /proc/locks cannot be read. */
static pid_t
master_signal_flock_pid(dev_t dev, ino_t ino)
{
	FILE *fp = fopen("/proc/locks", "re");
	char line[256];
	pid_t found = 0;

	if (fp == NULL)
		return -1;
	/* "1: FLOCK  ADVISORY  WRITE 9977 fe:00:10952723 0 EOF"; waiters
	 * ("1: -> FLOCK ...") do not hold it and do not match */
	while (found == 0 && fgets(line, sizeof(line), fp) != NULL) {
		char type[16];
		unsigned int maj, mnr;
		unsigned long long inode;
		int pid;

		if (sscanf(line, "%*d: %15s %*s %*s %d %x:%x:%llu", type, &pid,
		    &maj, &mnr, &inode) != 5 || strcmp(type, "FLOCK") != 0)
			continue;
		if (maj == major(dev) && mnr == minor(dev) &&
		    inode == (unsigned long long)ino && pid > 0)
			found = (pid_t)pid;
	}
	fclose(fp);
	return found;
}

/* Without /proc/locks: the file's pid, if the lock is held right now. */
static pid_t
master_signal_file_pid(int fd)
{
	char buf[32] = "";
	ssize_t n;

	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		flock(fd, LOCK_UN);
		return 0;
	}
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)strtol(buf, NULL, 10);
}

/* The live master of db: its pid, 0 when there is none, -1 with errno
 * when the lock file exists but cannot be looked at. */
static pid_t
master_signal_target(const char *db)
{
	char *path = xasprintf("%s.lock", db);
	struct stat sb;
	pid_t pid = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	free(path);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &sb) < 0)
		goto fail;
	pid = master_signal_flock_pid(sb.st_dev, sb.st_ino);
	if (pid < 0)
		pid = master_signal_file_pid(fd);
	close(fd);
	return pid > 0 && proc_alive(pid) ? pid : 0;
fail:
	close(fd);
	return -1;
}

/* PostgreSQL has no lock file: the masters of this machine are the host
 * rows with its hostname, a heartbeat within the host timeout and a pid
 * that runs here.  Each gets the signal. */
static int
master_signal_pg(struct config *cfg, int k)
{
	struct store_host *h = NULL;
	char name[256] = "";
	store_t *st = NULL;
	int n = 0, sent = 0, ex = EXIT_FATAL;

	(void)gethostname(name, sizeof(name) - 1);
	if (master_store_open_into(cfg, STORE_READONLY | STORE_EMPTY_OK,
	    &st) < 0)
		return EXIT_FATAL;
	if (st == NULL) {
		say_err("no mpfarm master of %s is running (no farm in this "
		    "database yet)", cfg->db);
		return EXIT_FATAL;
	}
	if (store_hosts_list(st, &h, &n) < 0) {
		say_err("%s", store_errmsg(st));
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (!h[i].live || strcmp(h[i].hostname, name) != 0 ||
		    !proc_alive(h[i].pid))
			continue;
		if (kill(h[i].pid, master_signals[k].sig) < 0) {
			say_err("cannot send %s to the master of %s (pid %d): %s",
			    master_signals[k].name, cfg->db, (int)h[i].pid,
			    strerror(errno));
			goto out;
		}
		printf("mpfarm: sent %s to the master of %s (pid %d)\n",
		    master_signals[k].name, cfg->db, (int)h[i].pid);
		sent++;
	}
	if (sent == 0) {
		say_err("no mpfarm master of %s is running on this host (%s)",
		    cfg->db, name);
		goto out;
	}
	ex = fflush(stdout) == 0 ? EXIT_OK : EXIT_FATAL;
out:
	store_hosts_free(h, n);
	store_close(st);
	return ex;
}

int
master_signal_run(struct config *cfg)
{
	int k = master_signal_parse(cfg->args[0]);
	pid_t pid;

	if (k < 0) {
		say_err("unknown signal \"%s\" (USR1, HUP, TTIN, TTOU, TERM or "
		    "QUIT; the SIG prefix is optional)", cfg->args[0]);
		return EXIT_USAGE;
	}
	if (db_target_is_pg(cfg->db))
		return master_signal_pg(cfg, k);
	pid = master_signal_target(cfg->db);
	if (pid < 0) {
		say_err("cannot read %s.lock: %s", cfg->db, strerror(errno));
		return EXIT_FATAL;
	}
	if (pid == 0) {
		say_err("no mpfarm master is running on %s (nothing holds %s.lock)",
		    cfg->db, cfg->db);
		return EXIT_FATAL;
	}
	if (kill(pid, master_signals[k].sig) < 0) {
		say_err("cannot send %s to the master of %s (pid %d): %s",
		    master_signals[k].name, cfg->db, (int)pid, strerror(errno));
		return EXIT_FATAL;
	}
	printf("mpfarm: sent %s to the master of %s (pid %d)\n",
	    master_signals[k].name, cfg->db, (int)pid);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_FATAL;
}
