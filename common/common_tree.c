/*
 * common_tree.c - the output tree, walked without following links (see
 * common_tree.h).  Workers publish through it, the master removes dead
 * workers' temp files through it, and `fix`/`check` read it the same way,
 * so that a symbolic link planted in output/ can never make mpfarm write,
 * replace, read or delete anything outside the tree it owns.
 *
 * A worker walks the same folder for every output of a job, and usually
 * for the next job too: the last folder's descriptor is kept for a moment
 * (TREE_CACHE_MS) instead of re-walking each time.  Re-walking would not
 * close the window in which someone moves a folder away (that race exists
 * during any walk); the short lifetime only keeps it as small as a walk's.
 */
#include "common_tree.h"
#include "common_config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TREE_CACHE_MS  1000
#define TREE_DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static const char *
tree_errname(int e)
{
	const char *n = strerrorname_np(e);
	return n ? n : "?";
}

bool
tree_errno_permanent(int e)
{
	return e == ELOOP || e == ENOTDIR || e == EISDIR || e == EACCES ||
	    e == EPERM || e == EROFS || e == ENAMETOOLONG || e == EINVAL;
}

char *
tree_output_rel(int stage, const char *lang, const char *rel,
		const char *suffix)
{
	if (stage == STAGE_TRANSCRIBE)
		return xasprintf("transcripts/%s%s", rel, suffix);
	return xasprintf("translations/%s/%s%s", lang, rel, suffix);
}

static void
tree_cache_drop(struct tree *t)
{
	if (t->cfd >= 0)
		close(t->cfd);
	t->cfd = -1;
	free(t->cdir);
	t->cdir = NULL;
}

int
tree_open(struct tree *t, const char *root, bool create, bool durable,
	  char *err, size_t errlen)
{
	struct stat sb;

	memset(t, 0, sizeof(*t));
	t->rootfd = -1;
	t->cfd = -1;
	t->durable = durable;
	t->root = xstrdup(root);
	if (create) {
		/* the root is the operator's path: links in it are theirs */
		char *probe = xasprintf("%s/x", root);
		int rc = file_mkdirs_parent(probe, err, errlen);
		free(probe);
		if (rc < 0)
			return -1;
	}
	t->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->rootfd < 0) {
		int e = errno;
		if (e == ENOTDIR || (stat(root, &sb) == 0 && !S_ISDIR(sb.st_mode)))
			snprintf(err, errlen, "output %s is not a folder",
			    log_quote(root));
		else
			snprintf(err, errlen, "cannot open output folder %s: %s",
			    log_quote(root), strerror(e));
		errno = e;
		return -1;
	}
	return 0;
}

void
tree_close(struct tree *t)
{
	tree_cache_drop(t);
	if (t->rootfd >= 0)
		close(t->rootfd);
	t->rootfd = -1;
	free(t->root);
	t->root = NULL;
}

/* "ROOT/reldir[0..len)" for a message. */
static const char *
tree_shown(const struct tree *t, const char *rel, size_t len)
{
	static char s[4][1024];
	static int k;
	char *p = s[k++ & 3];

	snprintf(p, sizeof(s[0]), "%s%s%.*s", t->root, len ? "/" : "",
	    (int)len, rel);
	return log_quote(p);
}

/* Why openat refused one component: a link, a non-folder, or errno. */
static void
tree_step_explain(const struct tree *t, int fd, const char *comp,
		  const char *rel, size_t len, int e, char *err, size_t errlen)
{
	struct stat sb;

	if ((e == ELOOP || e == ENOTDIR || e == EMLINK) &&
	    fstatat(fd, comp, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(sb.st_mode)) {
			snprintf(err, errlen, "%s is a symbolic link, not a "
			    "folder: mpfarm follows no link in its output tree",
			    tree_shown(t, rel, len));
			errno = ELOOP;
			return;
		}
		if (!S_ISDIR(sb.st_mode)) {
			snprintf(err, errlen, "%s is not a folder",
			    tree_shown(t, rel, len));
			errno = ENOTDIR;
			return;
		}
	}
	snprintf(err, errlen, "cannot open folder %s: %s (%s)",
	    tree_shown(t, rel, len), strerror(e), tree_errname(e));
	errno = e;
}

/* Enter (making it when missing and `create`) one component below fd. */
static int
tree_step(struct tree *t, int fd, const char *comp, const char *rel,
	  size_t len, bool create, char *err, size_t errlen)
{
	int nfd = openat(fd, comp, TREE_DIR_FLAGS);

	if (nfd < 0 && errno == ENOENT && create) {
		if (mkdirat(fd, comp, 0777) < 0 && errno != EEXIST) {
			int e = errno;
			snprintf(err, errlen, "cannot create folder %s: %s (%s)",
			    tree_shown(t, rel, len), strerror(e), tree_errname(e));
			errno = e;
			return -1;
		}
		if (t->durable)
			(void)fsync(fd);        /* the new entry survives power loss */
		nfd = openat(fd, comp, TREE_DIR_FLAGS);
	}
	if (nfd < 0)
		tree_step_explain(t, fd, comp, rel, len, errno, err, errlen);
	return nfd;
}

/* The folder's descriptor, owned by the tree's cache (valid until the
 * next walk): the check before paying and each write of a job reuse one
 * walk. */
static int
tree_dir_borrow(struct tree *t, const char *reldir, bool create, char *err,
		size_t errlen)
{
	char comp[NAME_MAX + 2];
	const char *p = reldir;
	int fd;

	if (t->cdir != NULL && strcmp(t->cdir, reldir) == 0 &&
	    time_mono_ms() - t->cached_ms < TREE_CACHE_MS)
		return t->cfd;
	fd = fcntl(t->rootfd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "output %s: %s", log_quote(t->root),
		    strerror(errno));
		return -1;
	}
	while (*p != '\0') {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		int nfd;

		if (n == 0 || n > NAME_MAX || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.')) {
			snprintf(err, errlen, "%s: %s", tree_shown(t, reldir,
			    (size_t)(end - reldir)), n > NAME_MAX ?
			    "name too long for a folder (ENAMETOOLONG)" :
			    "not a plain folder name");
			close(fd);
			errno = n > NAME_MAX ? ENAMETOOLONG : EINVAL;
			return -1;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		nfd = tree_step(t, fd, comp, reldir, (size_t)(end - reldir),
		    create, err, errlen);
		if (nfd < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		close(fd);
		fd = nfd;
		p = *end ? end + 1 : end;
	}
	tree_cache_drop(t);
	t->cfd = fd;
	t->cdir = xstrdup(reldir);
	t->cached_ms = time_mono_ms();
	t->name_max = fpathconf(fd, _PC_NAME_MAX);
	if (t->name_max <= 0)
		t->name_max = NAME_MAX;
	return fd;
}

int
tree_dir_open(struct tree *t, const char *reldir, bool create, char *err,
	      size_t errlen)
{
	int fd = tree_dir_borrow(t, reldir, create, err, errlen);

	if (fd < 0)
		return -1;
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		snprintf(err, errlen, "output %s: %s", log_quote(t->root),
		    strerror(errno));
	return fd;
}

/* The folder of relpath (borrowed from the cache, or a descriptor of
 * the caller's own when `own`) and its base name. */
static int
tree_parent_open(struct tree *t, const char *relpath, bool create, bool own,
		 const char **base, char *err, size_t errlen)
{
	const char *slash = strrchr(relpath, '/');
	char *dir = slash ? xstrndup(relpath, (size_t)(slash - relpath))
	    : xstrdup("");
	int fd = own ? tree_dir_open(t, dir, create, err, errlen)
	    : tree_dir_borrow(t, dir, create, err, errlen);

	free(dir);
	*base = slash ? slash + 1 : relpath;
	return fd;
}

int
tree_check_writable(struct tree *t, const char *relpath, char *err,
		    size_t errlen)
{
	const char *base;
	int fd = tree_parent_open(t, relpath, true, false, &base, err, errlen);
	int e;

	if (fd < 0)
		return -1;
	if (faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0) {
		e = errno;
		snprintf(err, errlen, "cannot write in output folder %s: %s (%s)",
		    tree_shown(t, relpath, (size_t)(base - relpath) - (base >
		    relpath)), strerror(e), tree_errname(e));
		errno = e;
		return -1;
	}
	if (strlen(base) + TREE_SUFFIX_MAX > (size_t)t->name_max) {
		snprintf(err, errlen, "name too long for the output folder: %s "
		    "(%zu bytes with its suffix, the folder takes %ld) (%s)",
		    tree_shown(t, relpath, strlen(relpath)),
		    strlen(base) + TREE_SUFFIX_MAX, t->name_max,
		    tree_errname(ENAMETOOLONG));
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* A fresh ".mpfarm-tmp.PID.XXXXXX" in dirfd, created exclusively. */
static int
tree_temp_create(int dirfd, char **name)
{
	static const char abc[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	static unsigned seq;

	for (int tries = 0; tries < 100; tries++) {
		unsigned v = (unsigned)random() ^ (++seq * 2654435761u);
		char sfx[7];
		int fd;

		for (int i = 0; i < 6; i++, v /= 62)
			sfx[i] = abc[v % 62];
		sfx[6] = '\0';
		*name = xasprintf(".mpfarm-tmp.%d.%s", (int)getpid(), sfx);
		fd = openat(dirfd, *name, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
		free(*name);
		*name = NULL;
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

int
tree_temp_write(struct tree *t, const char *relpath, const void *data,
		size_t len, bool durable, struct tree_temp *tt, char *err,
		size_t errlen)
{
	const char *base, *p = data;
	int fd = -1, e = 0;

	memset(tt, 0, sizeof(*tt));
	tt->dirfd = -1;
	for (int pass = 0; pass < 2 && fd < 0; pass++) {
		if (tt->dirfd >= 0)
			close(tt->dirfd);
		tt->dirfd = tree_parent_open(t, relpath, true, true, &base, err,
		    errlen);
		if (tt->dirfd < 0)
			goto fail_errno;
		fd = tree_temp_create(tt->dirfd, &tt->tmp);
		/* a cached folder removed meanwhile: walk again */
		if (fd < 0 && errno == ENOENT)
			tree_cache_drop(t);
		else
			break;
	}
	tt->path = xasprintf("%s/%s", t->root, relpath);
	if (fd < 0) {
		e = errno;
		snprintf(err, errlen, "cannot create a file beside %s: %s (%s)",
		    log_quote(tt->path), strerror(e), tree_errname(e));
		goto fail;
	}
	tt->name = xstrdup(base);
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto fail_write;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fchmod(fd, file_output_mode()) < 0 || (durable && fsync(fd) < 0))
		goto fail_write;
	e = close(fd);
	fd = -1;
	if (e < 0)
		goto fail_write;
	return 0;
fail_write:
	e = errno;
	snprintf(err, errlen, "cannot write %s: %s (%s)", log_quote(tt->path),
	    strerror(e), tree_errname(e));
	goto fail;
fail_errno:
	e = errno;
fail:
	if (fd >= 0)
		close(fd);
	tree_temp_discard(tt);
	errno = e;
	return -1;
}

int
tree_temp_publish(const struct tree_temp *tt)
{
	return renameat(tt->dirfd, tt->tmp, tt->dirfd, tt->name);
}

void
tree_temp_unpublish(const struct tree_temp *tt)
{
	(void)unlinkat(tt->dirfd, tt->name, 0);
}

void
tree_temp_discard(struct tree_temp *tt)
{
	if (tt->tmp != NULL && tt->dirfd >= 0)
		(void)unlinkat(tt->dirfd, tt->tmp, 0);
	tree_temp_free(tt);
}

void
tree_temp_free(struct tree_temp *tt)
{
	if (tt->dirfd >= 0)
		close(tt->dirfd);
	free(tt->tmp);
	free(tt->name);
	free(tt->path);
	memset(tt, 0, sizeof(*tt));
	tt->dirfd = -1;
}

int
tree_file_open(struct tree *t, const char *relpath, char *err, size_t errlen)
{
	const char *base;
	int dfd = tree_parent_open(t, relpath, false, false, &base, err, errlen);
	int fd = -1, e = 0;
	struct stat sb;

	if (dfd < 0)
		return -1;
	/* O_NONBLOCK: a FIFO planted there must not hang the open */
	fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		if (e == ELOOP)
			snprintf(err, errlen, "%s is a symbolic link: mpfarm "
			    "follows no link in its output tree",
			    tree_shown(t, relpath, strlen(relpath)));
		else
			snprintf(err, errlen, "%s: %s",
			    tree_shown(t, relpath, strlen(relpath)), strerror(e));
	} else if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) ||
	    fd_set_nonblock(fd, false) < 0) {
		e = EINVAL;
		snprintf(err, errlen, "%s is not a regular file",
		    tree_shown(t, relpath, strlen(relpath)));
		close(fd);
		fd = -1;
	}
	errno = e;
	return fd;
}

int
tree_file_stat(struct tree *t, const char *relpath, struct stat *sb)
{
	const char *base;
	char err[16];
	int dfd = tree_parent_open(t, relpath, false, false, &base, err,
	    sizeof(err));

	if (dfd < 0 || fstatat(dfd, base, sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	return S_ISREG(sb->st_mode) ? 0 : -1;
}

static int
tree_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tree_name *)a)->name,
	    ((const struct tree_name *)b)->name);
}

int
tree_dir_list(int dfd, struct tree_name **out, size_t *n)
{
	int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0), e = 0;
	struct tree_name *v = NULL;
	struct dirent *de;
	size_t cap = 0;
	DIR *d;

	*out = NULL;
	*n = 0;
	if (fd < 0)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	rewinddir(d);           /* a duplicate shares the caller's offset */
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			e = errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[*n].name = xstrdup(de->d_name);
		v[*n].type = de->d_type;
		(*n)++;
	}
	closedir(d);
	if (*n > 1)
		qsort(v, *n, sizeof(*v), tree_name_cmp);
	*out = v;
	errno = e;
	return e != 0 ? -1 : 0;
}

void
tree_names_free(struct tree_name *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

bool
tree_file_is_regular(struct tree *t, const char *relpath)
{
	struct stat sb;

	return tree_file_stat(t, relpath, &sb) == 0;
}
