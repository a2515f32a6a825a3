/*
 * common_util.c - small helpers every process needs: checked allocation,
 * a growable buffer, clocks, whole-or-nothing output files and the output
 * naming rule of SPEC (DIR/transcripts/REL.txt, DIR/translations/L/REL.txt).
 */
#include "common.h"
#include "common_config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void
oom(void)
{
	static const char msg[] = "mpfarm: out of memory\n";
	(void)!write(2, msg, sizeof(msg) - 1);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		oom();
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (p == NULL)
		oom();
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		oom();
	return p;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		oom();
	va_end(ap);
	return p;
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

static void
buf_reserve(struct buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_terminate(struct buf *b)
{
	buf_reserve(b, 0);
	b->data[b->len] = '\0';
}

int64_t
time_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
time_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
file_mkdirs_parent(const char *path, char *err, size_t errlen)
{
	char *p = xstrdup(path);
	struct stat sb;
	int rc = -1;

	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0777) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create folder %s: %s",
			    log_quote(p), strerror(errno));
			goto fail;
		}
		if (stat(p, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			snprintf(err, errlen, "%s is not a folder", log_quote(p));
			goto fail;
		}
		*s = '/';
	}
	rc = 0;
fail:
	free(p);
	return rc;
}

char *
file_output_path(const char *outdir, int stage, const char *lang,
		 const char *rel, const char *suffix)
{
	if (stage == STAGE_TRANSCRIBE)
		return xasprintf("%s/transcripts/%s%s", outdir, rel, suffix);
	return xasprintf("%s/translations/%s/%s%s", outdir, lang, rel, suffix);
}

int
file_open_regular(const char *path, int flags, mode_t mode, char *err,
		  size_t errlen)
{
	struct stat sb;
	int e;
	/* O_NONBLOCK: a FIFO planted there must not hang the open */
	int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode);

	if (fd < 0) {
		e = errno;
		if (e == ELOOP)
			snprintf(err, errlen, "%s is a symbolic link: mpfarm "
			    "follows no link for the files beside its database "
			    "(remove it)", log_quote(path));
		else
			snprintf(err, errlen, "cannot open %s: %s",
			    log_quote(path), strerror(e));
		errno = e;
		return -1;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		snprintf(err, errlen, "%s is not a regular file", log_quote(path));
		errno = EINVAL;
		return -1;
	}
	if (!(flags & O_NONBLOCK) && fd_set_nonblock(fd, false) < 0) {
		e = errno;
		close(fd);
		snprintf(err, errlen, "cannot open %s: %s", log_quote(path),
		    strerror(e));
		errno = e;
		return -1;
	}
	return fd;
}

bool
file_is_temp(const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	return strncmp(base, ".mpfarm-tmp.", 12) == 0;
}

bool
proc_alive(pid_t pid)
{
	if (pid <= 0)
		return false;
	return kill(pid, 0) == 0 || errno == EPERM;
}

int
fd_set_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);
	if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
		return -1;
	return 0;
}

int
fd_set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	return fcntl(fd, F_SETFL, fl) < 0 ? -1 : 0;
}
