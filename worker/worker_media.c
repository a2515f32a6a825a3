/*
 * worker_media.c - opening a job's media file safely (see worker_media.h).
 *
 * Media folders are written by other people and programs while the farm
 * runs, so the name the scan saw proves nothing at run time: a link planted
 * among the recordings, or a folder swapped for a link after the scan,
 * would make the worker read (and upload) any file it can read.  So the
 * worker resolves the path itself, beneath a descriptor of the scan root,
 * refusing every symbolic link, and then compares the file it holds with
 * the scan's record.  Providers and exec engines only ever get that
 * descriptor, so nothing can be swapped between the check and the upload.
 */
#include "worker_media.h"
#include "common_roots.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MEDIA_OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)

/* for the life of the worker process: it exits, never reloads */
static struct roots_map media_roots;

int
worker_media_roots_load(const struct config *cfg, store_t *st, char *err,
			size_t errlen)
{
	roots_free(&media_roots);
	return roots_load(&media_roots, cfg, st, false, err, errlen);
}

/* One openat(O_NOFOLLOW) per component: every folder on the way, then
 * the file.  "" "." and ".." components are refused (EXDEV): a stored rel
 * path never has them, and ".." could leave the root. */
static int
media_walk(int rootfd, const char *rel)
{
	char *copy = xstrdup(rel), *p = copy, *slash;
	int dir = rootfd, fd = -1, e = 0;

	for (;;) {
		slash = strchr(p, '/');
		if (slash != NULL)
			*slash = '\0';
		if (p[0] == '\0' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
			e = EXDEV;
			goto out;
		}
		if (slash == NULL)
			break;
		fd = openat(dir, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (fd < 0) {
			struct stat sb;
			/* O_DIRECTORY answers ENOTDIR for a link: say ELOOP,
			 * as openat2 does */
			e = errno == ENOTDIR && fstatat(dir, p, &sb,
			    AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode) ?
			    ELOOP : errno;
			goto out;
		}
		if (dir != rootfd)
			close(dir);
		dir = fd;
		fd = -1;
		p = slash + 1;
	}
	if ((fd = openat(dir, p, MEDIA_OPEN_FLAGS | O_NOFOLLOW)) < 0)
		e = errno;
out:
	if (dir != rootfd)
		close(dir);
	free(copy);
	errno = e;
	return fd;
}

int
worker_media_open_at(int rootfd, const char *rel, int flags)
{
	int fd = -1;

	if (!(flags & WORKER_MEDIA_WALK)) {
		struct open_how how = {
			.flags = MEDIA_OPEN_FLAGS,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			    RESOLVE_NO_MAGICLINKS,
		};
		fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
		/* EPERM: a seccomp filter that predates openat2 (older
		 * container runtimes); the walk is just as strict */
		if (fd < 0 && errno != ENOSYS && errno != EPERM)
			return -1;
	}
	if (fd < 0 && (fd = media_walk(rootfd, rel)) < 0)
		return -1;
	if (fd < FD_AFTER_STDIO) {
		/* exec engines get it as /dev/fd/N next to their stdio */
		int hi = fcntl(fd, F_DUPFD_CLOEXEC, FD_AFTER_STDIO);
		int e = errno;
		close(fd);
		errno = e;
		fd = hi;
	}
	return fd;
}

/* What went wrong opening it, in words an operator acts on. */
static const char *
media_why(int e, bool *permanent)
{
	*permanent = true;
	switch (e) {
	case ELOOP:
		return "a symbolic link is in the way (media are never read "
		    "through links)";
	case EXDEV:
		return "the path leads outside its scan root";
	case ENOENT:
		return "it is gone (moved or deleted since the scan)";
	case ENOTDIR:
		return "a folder on its path is no longer a folder";
	case EACCES: case EPERM:
		return "permission denied";
	default:
		*permanent = false;
		return strerror(e);
	}
}

int
worker_media_open(const struct job *j, char *err, size_t errlen,
		  bool *permanent)
{
	char *path = roots_to_local(&media_roots, j->abs_path, NULL);
	char *root = roots_to_local(&media_roots, j->open_root, NULL);
	int rootfd = -1, fd = -1;
	struct stat sb;

	*permanent = true;
	/* the root is the operator's own folder (realpath at scan time):
	 * only its last component must not have become a link */
	rootfd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rootfd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open media file %s: scan root %s: "
		    "%s", log_quote(path), log_quote(root),
		    media_why(e, permanent));
		goto fail;
	}
	fd = worker_media_open_at(rootfd, j->open_rel, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot open media file %s: %s",
		    log_quote(path), media_why(e, permanent));
		goto fail;
	}
	if (fstat(fd, &sb) < 0) {
		snprintf(err, errlen, "cannot read media file %s: %s",
		    log_quote(path), strerror(errno));
		*permanent = false;
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "media file %s is no longer a regular file",
		    log_quote(path));
		goto fail;
	}
	int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000 +
	    sb.st_mtim.tv_nsec;
	const char *what = NULL;
	if (j->ino != 0 && ((int64_t)sb.st_dev != j->dev ||
	    (int64_t)sb.st_ino != j->ino))
		what = "replaced by another file: device or inode differ";
	else if ((int64_t)sb.st_size != j->size)
		what = "resized";
	else if (mtime != j->mtime_ns)
		what = "modified";
	if (what != NULL) {
		snprintf(err, errlen, "media file %s changed since the scan (%s); "
		    "nothing was sent: run mpfarm scan again to register it "
		    "anew", log_quote(path), what);
		goto fail;
	}
	close(rootfd);
	free(path);
	free(root);
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	if (rootfd >= 0)
		close(rootfd);
	free(path);
	free(root);
	return -1;
}
