/*
 * test_proc.c - common_proc.c: hardening (not dumpable, soft core limit 0,
 * the old limit given back to engines) and the leftover sweep (children
 * killed with the process group they lead, kept pids spared, everything
 * reaped, processes that left their group included).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

/* A child that sleeps; in its own process group when `group`, with a
 * grandchild in that group when `grandchild` (whose pid goes to *gc). */
static pid_t
child_start(bool group, bool grandchild, pid_t *gc)
{
	int p[2];
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (group)
			setpgid(0, 0);
		if (grandchild) {
			pid_t g = fork();
			if (g == 0) {
				pause();
				_exit(0);
			}
			(void)write(p[1], &g, sizeof(g));
		}
		close(p[1]);
		pause();
		_exit(0);
	}
	if (group)
		(void)setpgid(pid, pid);
	close(p[1]);
	if (grandchild)
		assert_int_equal(read(p[0], gc, sizeof(*gc)), sizeof(*gc));
	else
		(void)read(p[0], gc, 0);
	close(p[0]);
	return pid;
}

static bool
gone(pid_t pid)
{
	/* not ours to reap (a grandchild): wait for kill(0) to fail, or for
	 * it to be a zombie of a dead parent */
	for (int i = 0; i < 500; i++) {
		char path[64], st[256];
		FILE *fp;
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return true;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		fp = fopen(path, "r");
		if (fp != NULL) {
			bool z = fgets(st, sizeof(st), fp) != NULL &&
			    strstr(st, ") Z ") != NULL;
			fclose(fp);
			if (z)
				return true;
		}
		usleep(10000);
	}
	return false;
}

static void
test_harden(void **state)
{
	struct rlimit before, now;

	(void)state;
	before.rlim_cur = 12345 * 1024;
	before.rlim_max = RLIM_INFINITY;
	assert_int_equal(setrlimit(RLIMIT_CORE, &before), 0);
	assert_int_equal(proc_harden(), 0);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	assert_int_equal(getrlimit(RLIMIT_CORE, &now), 0);
	assert_int_equal(now.rlim_cur, 0);
	assert_true(now.rlim_max == RLIM_INFINITY);    /* can be given back */
	proc_core_restore();
	assert_int_equal(getrlimit(RLIMIT_CORE, &now), 0);
	assert_int_equal(now.rlim_cur, 12345 * 1024);
	(void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

static void
test_children_kill_keeps_and_groups(void **state)
{
	pid_t keep, lead, gc = 0, status;
	int st;

	(void)state;
	keep = child_start(false, false, &gc);
	lead = child_start(true, true, &gc);
	assert_int_equal(proc_children_kill(&keep, 1), 1);
	assert_int_equal(waitpid(lead, &st, 0), lead);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_true(gone(gc));          /* killed with the group it is in */
	assert_int_equal(kill(keep, 0), 0);     /* spared */
	assert_int_equal(proc_children_kill(NULL, 0), 1);
	status = waitpid(keep, &st, 0);
	assert_int_equal(status, keep);
	assert_int_equal(proc_children_end(1000, NULL), 0);
}

static void
test_children_end_adopted(void **state)
{
	pid_t mid, gc = 0;

	(void)state;
	/* as a subreaper, a grandchild whose parent dies becomes ours: the
	 * sweep kills and reaps it too, even out of its parent's group */
	assert_int_equal(proc_subreaper_set(), 0);
	mid = child_start(false, true, &gc);
	assert_int_equal(kill(mid, SIGKILL), 0);
	assert_int_equal(waitpid(mid, NULL, 0), mid);
	assert_int_equal(kill(gc, 0), 0);       /* adopted, alive */
	assert_int_equal(proc_children_end(5000, NULL), 0);
	assert_int_equal(kill(gc, 0), -1);      /* killed and reaped */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	(void)prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_harden),
		cmocka_unit_test(test_children_kill_keeps_and_groups),
		cmocka_unit_test(test_children_end_adopted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
