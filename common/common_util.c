/*
 * common_util.c - small helpers every process needs: checked allocation,
 * a growable buffer, clocks, whole-or-nothing output files and the output
 * naming rule of SPEC (DIR/transcripts/REL.txt, DIR/translations/L/REL.txt),
 * and the escaping that turns any file name into valid UTF-8 for the
 * database's text columns and the command-line listings.
 */
#include "common.h"
#include "common_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
	return (int64_t)ts.tv_sec * MS_PER_S + ts.tv_nsec / 1000000;
}

int64_t
time_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * MS_PER_S + ts.tv_nsec / 1000000;
}

/* The one capped exponential backoff: worker respawns, job retries and
 * provider pauses all grow their delays here. */
int64_t
backoff_delay(int64_t base, int64_t cap, int n)
{
	int64_t d = base;

	if (base <= 0)
		return base;
	if (cap < base)
		return cap;
	/* doubling stops at the cap, so it never overflows */
	for (int i = 0; i < n && d < cap; i++)
		d = d > cap / 2 ? cap : d * 2;
	return d;
}

int64_t
backoff_jitter(int64_t d)
{
	if (d <= 0)
		return d;
	return d / 2 + (int64_t)(random() % (d / 2 + 1));
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

/* The mode a new output gets: 0666 less the umask, as any program that
 * creates a file would give it (mkstemp's 0600 is for the temp name only).
 * The umask is read once; reading it means setting it, so it is put back
 * at once (processes here are single-threaded). */
mode_t
file_output_mode(void)
{
	static mode_t mode;
	static bool known;

	if (!known) {
		mode_t mask = umask(077);
		umask(mask);
		mode = 0666 & ~mask;
		known = true;
	}
	return mode;
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

static void
fd_close_range(int first, int last)
{
	if (first > last)
		return;
	if (syscall(SYS_close_range, (unsigned)first, (unsigned)last, 0) == 0)
		return;
	for (int fd = first; fd <= last && fd < FD_CLOSE_SCAN_MAX; fd++)
		close(fd);
}

void
fd_close_from(int first, int keep)
{
	if (keep >= first) {
		fd_close_range(first, keep - 1);
		first = keep + 1;
	}
	fd_close_range(first, INT_MAX);
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

/* ---- text every client reads ---------------------------------------- */

/* Length (1-4) of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), 0 if none. */
static size_t
utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

char *
text_escape(const void *s, size_t n, enum text_escape_mode mode)
{
	const unsigned char *p = s;
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < n;) {
		size_t len = utf8_seq_len(p + i, n - i);
		bool ctl = p[i] < 0x20 || p[i] == 0x7f;
		/* U+0080..U+009F: C1 controls a terminal may act on */
		bool c1 = len == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0;

		if (len == 0 || (mode != TEXT_ESCAPE_MSG && ctl)) {
			buf_printf(&b, "\\x%02x", p[i]);
			i++;
		} else if (mode == TEXT_ESCAPE_SHOW && c1) {
			buf_printf(&b, "\\x%02x\\x%02x", p[i], p[i + 1]);
			i += 2;
		} else if (mode == TEXT_ESCAPE_PATH && p[i] == '\\') {
			buf_append(&b, "\\\\", 2);
			i++;
		} else {
			buf_append(&b, p + i, len);
			i += len;
		}
	}
	buf_terminate(&b);
	return b.data;
}

static int
text_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *
text_unescape_path(const char *s, size_t *n)
{
	size_t len = strlen(s), o = 0;
	char *out = xmalloc(len + 1);

	for (size_t i = 0; i < len;) {
		int h, l;
		if (s[i] != '\\') {
			out[o++] = s[i++];
			continue;
		}
		if (s[i + 1] == '\\') {
			out[o++] = '\\';
			i += 2;
			continue;
		}
		if (s[i + 1] != 'x' || (h = text_hex(s[i + 2])) < 0 ||
		    (l = text_hex(s[i + 3])) < 0)
			goto fail;
		out[o++] = (char)(h << 4 | l);
		i += 4;
	}
	out[o] = '\0';
	/* only the escaping's own output, so that one name has one form */
	char *again = text_escape(out, o, TEXT_ESCAPE_PATH);
	bool same = strcmp(again, s) == 0;
	free(again);
	if (!same)
		goto fail;
	*n = o;
	return out;
fail:
	free(out);
	return NULL;
}
