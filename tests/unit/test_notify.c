/*
 * test_notify.c - master_notify_send() against a real listener: a
 * datagram socket bound to a temporary path, and one in the abstract
 * namespace ("@name"), each receiving exactly the bytes sent; a no-op
 * without NOTIFY_SOCKET; clean errors for names it cannot use; and no
 * descriptor left behind by any call.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "master_notify.h"

static int
fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* A bound datagram listener with a 2 s receive timeout. */
static int
listener_open(const struct sockaddr_un *sa, socklen_t len)
{
	struct timeval tv = { 2, 0 };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
	    sizeof(tv)), 0);
	assert_int_equal(bind(fd, (const struct sockaddr *)sa, len), 0);
	return fd;
}

static void
expect_datagram(int fd, const char *want)
{
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

static void
test_unset_is_noop(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(master_notify_send("READY=1"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(master_notify_send("READY=1"), 0);
	unsetenv("NOTIFY_SOCKET");
}

static void
test_path_socket(void **state)
{
	char dir[] = "/tmp/mpfarm-notify-XXXXXX";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, before;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", dir);
	fd = listener_open(&sa, sizeof(sa));
	setenv("NOTIFY_SOCKET", sa.sun_path, 1);

	before = fd_count();
	assert_int_equal(master_notify_send("READY=1"), 0);
	expect_datagram(fd, "READY=1");
	assert_int_equal(master_notify_send("STATUS=3 workers busy, 17 jobs done"), 0);
	expect_datagram(fd, "STATUS=3 workers busy, 17 jobs done");
	assert_int_equal(master_notify_send("STOPPING=1\nSTATUS=stopping"), 0);
	expect_datagram(fd, "STOPPING=1\nSTATUS=stopping");
	assert_int_equal(fd_count(), before);

	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(sa.sun_path);
	rmdir(dir);
}

static void
test_abstract_socket(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char name[64];
	socklen_t len;
	int fd;

	(void)state;
	snprintf(name, sizeof(name), "@mpfarm-test-notify-%d", (int)getpid());
	memcpy(sa.sun_path, name, strlen(name));
	sa.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name));
	fd = listener_open(&sa, len);
	setenv("NOTIFY_SOCKET", name, 1);

	assert_int_equal(master_notify_send("READY=1"), 0);
	expect_datagram(fd, "READY=1");

	unsetenv("NOTIFY_SOCKET");
	close(fd);
}

static void
test_bad_names(void **state)
{
	char longpath[200];
	int before;

	(void)state;
	before = fd_count();
	/* nobody listening there */
	setenv("NOTIFY_SOCKET", "/tmp/mpfarm-no-such-dir/notify", 1);
	errno = 0;
	assert_int_equal(master_notify_send("READY=1"), -1);
	assert_int_not_equal(errno, 0);
	/* not a unix socket address */
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	assert_int_equal(master_notify_send("READY=1"), -1);
	assert_int_equal(errno, EAFNOSUPPORT);
	setenv("NOTIFY_SOCKET", "relative/notify", 1);
	assert_int_equal(master_notify_send("READY=1"), -1);
	/* longer than sun_path */
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longpath, 1);
	assert_int_equal(master_notify_send("READY=1"), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	/* an empty message says nothing */
	setenv("NOTIFY_SOCKET", "@mpfarm-test-unused", 1);
	assert_int_equal(master_notify_send(""), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(fd_count(), before);
	unsetenv("NOTIFY_SOCKET");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unset_is_noop),
		cmocka_unit_test(test_path_socket),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_bad_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
