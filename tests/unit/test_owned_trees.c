/*
 * test_owned_trees.c - common_tree.c and file_open_regular() on a real
 * temporary tree: folders made and entered without following links, a
 * link or a file where a folder should be refused with the path named,
 * "." and ".." refused, temps written, published and discarded inside
 * their folder, the check before paying (permissions, long names), a
 * cached folder removed meanwhile, links beside the database refused with
 * their target untouched, and no descriptor left behind.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common_tree.h"

static char dir[256], outside[300], root[300];

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

static void
put(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static char *
get(const char *path)
{
	static char b[256];
	FILE *fp = fopen(path, "r");
	size_t n;

	if (fp == NULL)
		return NULL;
	n = fread(b, 1, sizeof(b) - 1, fp);
	b[n] = '\0';
	fclose(fp);
	return b;
}

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/mpfarm-tree-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(outside, sizeof(outside), "%s/outside", dir);
	snprintf(root, sizeof(root), "%s/out", dir);
	assert_int_equal(mkdir(outside, 0755), 0);
	put(strcat(strcpy((char[400]){ 0 }, outside), "/a.wav.txt"), "precious");
	return 0;
}

static int
teardown(void **state)
{
	char cmd[400];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
test_write_publish_discard(void **state)
{
	struct tree t;
	struct tree_temp tt, t2;
	char err[512], path[512];
	int fds = fd_count();

	(void)state;
	assert_int_equal(tree_open(&t, root, true, true, err, sizeof(err)), 0);
	assert_int_equal(tree_temp_write(&t, "transcripts/x/y/a.wav.txt", "hi\n",
	    3, true, &tt, err, sizeof(err)), 0);
	assert_true(strncmp(tt.tmp, ".mpfarm-tmp.", 12) == 0);
	assert_string_equal(tt.name, "a.wav.txt");
	assert_int_equal(tree_temp_publish(&tt), 0);
	snprintf(path, sizeof(path), "%s/transcripts/x/y/a.wav.txt", root);
	assert_string_equal(get(path), "hi\n");
	assert_true(tree_file_is_regular(&t, "transcripts/x/y/a.wav.txt"));
	tree_temp_free(&tt);

	/* discarded: no temp left, final untouched */
	assert_int_equal(tree_temp_write(&t, "transcripts/x/y/a.wav.txt", "no",
	    2, false, &t2, err, sizeof(err)), 0);
	tree_temp_discard(&t2);
	assert_string_equal(get(path), "hi\n");
	snprintf(path, sizeof(path), "%s/transcripts/x/y", root);
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.' || strncmp(e->d_name, ".mpfarm", 7) == 0;
	closedir(d);
	assert_int_equal(n, 1);
	tree_close(&t);
	assert_int_equal(fd_count(), fds);
}

static void
test_links_and_dots_refused(void **state)
{
	struct tree t;
	struct tree_temp tt;
	char err[512], path[512];
	int fds = fd_count(), fd;

	(void)state;
	assert_int_equal(tree_open(&t, root, true, false, err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/transcripts/link", root);
	fd = tree_dir_open(&t, "transcripts", true, err, sizeof(err));
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(symlink(outside, path), 0);
	assert_int_equal(tree_temp_write(&t, "transcripts/link/a.wav.txt", "x",
	    1, false, &tt, err, sizeof(err)), -1);
	assert_int_equal(errno, ELOOP);
	assert_true(tree_errno_permanent(errno));
	assert_non_null(strstr(err, "transcripts/link"));
	assert_non_null(strstr(err, "symbolic link"));
	assert_string_equal(get(strcat(strcpy((char[400]){ 0 }, outside),
	    "/a.wav.txt")), "precious");
	assert_int_equal(tree_check_writable(&t, "transcripts/link/b.wav", err,
	    sizeof(err)), -1);
	assert_int_equal(errno, ELOOP);
	assert_false(tree_file_is_regular(&t, "transcripts/link/a.wav.txt"));
	assert_int_equal(tree_file_open(&t, "transcripts/link/a.wav.txt", err,
	    sizeof(err)), -1);

	/* a file where a folder should be */
	snprintf(path, sizeof(path), "%s/transcripts/file", root);
	put(path, "f");
	assert_int_equal(tree_dir_open(&t, "transcripts/file/sub", true, err,
	    sizeof(err)), -1);
	assert_int_equal(errno, ENOTDIR);
	assert_non_null(strstr(err, "is not a folder"));

	/* a link as the final name: not read */
	snprintf(path, sizeof(path), "%s/transcripts/l.txt", root);
	assert_int_equal(symlink(strcat(strcpy((char[400]){ 0 }, outside),
	    "/a.wav.txt"), path), 0);
	assert_int_equal(tree_file_open(&t, "transcripts/l.txt", err,
	    sizeof(err)), -1);
	assert_int_equal(errno, ELOOP);
	assert_false(tree_file_is_regular(&t, "transcripts/l.txt"));

	assert_int_equal(tree_dir_open(&t, "transcripts/../..", true, err,
	    sizeof(err)), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(tree_dir_open(&t, "a//b", true, err, sizeof(err)), -1);
	tree_close(&t);
	assert_int_equal(fd_count(), fds);
}

static void
test_check_before_paying(void **state)
{
	struct tree t;
	char err[512], name[300], path[600];

	(void)state;
	assert_int_equal(tree_open(&t, root, true, false, err, sizeof(err)), 0);
	assert_int_equal(tree_check_writable(&t, "translations/en/new/a.wav",
	    err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/translations/en/new", root);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);       /* made by the check */
	memset(name, 'n', 251);
	memcpy(name + 251, ".wav", 5);
	snprintf(path, sizeof(path), "transcripts/%s", name);
	assert_int_equal(tree_check_writable(&t, path, err, sizeof(err)), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	assert_non_null(strstr(err, "ENAMETOOLONG"));
	tree_close(&t);
}

static void
test_cached_folder_removed(void **state)
{
	struct tree t;
	struct tree_temp tt;
	char err[512], path[512];

	(void)state;
	assert_int_equal(tree_open(&t, root, true, false, err, sizeof(err)), 0);
	assert_int_equal(tree_check_writable(&t, "transcripts/gone/a.wav",
	    err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/transcripts/gone", root);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(tree_temp_write(&t, "transcripts/gone/a.wav.txt", "x",
	    1, false, &tt, err, sizeof(err)), 0);
	assert_int_equal(tree_temp_publish(&tt), 0);
	tree_temp_free(&tt);
	snprintf(path, sizeof(path), "%s/transcripts/gone/a.wav.txt", root);
	assert_string_equal(get(path), "x");
	tree_close(&t);
}

static void
test_beside_db_links(void **state)
{
	char err[512], link[512], target[512];
	int fd;

	(void)state;
	snprintf(target, sizeof(target), "%s/a.wav.txt", outside);
	snprintf(link, sizeof(link), "%s/db.lock", dir);
	assert_int_equal(symlink(target, link), 0);
	fd = file_open_regular(link, O_RDWR | O_CREAT | O_TRUNC, 0644, err,
	    sizeof(err));
	assert_int_equal(fd, -1);
	assert_int_equal(errno, ELOOP);
	assert_non_null(strstr(err, "symbolic link"));
	assert_string_equal(get(target), "precious");
	/* a dangling link is not created through either */
	snprintf(target, sizeof(target), "%s/new-file", outside);
	snprintf(link, sizeof(link), "%s/db.log", dir);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(file_open_regular(link, O_WRONLY | O_CREAT | O_APPEND,
	    0644, err, sizeof(err)), -1);
	assert_int_equal(access(target, F_OK), -1);
	/* a folder is not a regular file */
	assert_int_equal(file_open_regular(outside, O_RDONLY, 0, err,
	    sizeof(err)), -1);
	snprintf(link, sizeof(link), "%s/db.real", dir);
	fd = file_open_regular(link, O_RDWR | O_CREAT, 0644, err, sizeof(err));
	assert_true(fd >= 0);
	assert_true((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
	assert_true((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_publish_discard),
		cmocka_unit_test(test_links_and_dots_refused),
		cmocka_unit_test(test_check_before_paying),
		cmocka_unit_test(test_cached_folder_removed),
		cmocka_unit_test(test_beside_db_links),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
