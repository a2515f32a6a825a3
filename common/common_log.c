/*
 * common_log.c - one event per line, key=value pairs, written with a single
 * write(2) so that lines from the master and from workers (which write into
 * the master's log pipe) never interleave mid-line.  Lines are capped below
 * PIPE_BUF for that reason.
 */
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4000   /* < PIPE_BUF (4096): one atomic pipe write */

static enum log_level log_min = LOG_INFO;
static int log_fd = 2;
static void (*log_hook)(void);

static const char *const log_names[] = { "debug", "info", "warn", "error" };

int
log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_WARN;
		return 0;
	}
	return -1;
}

const char *
log_level_name(enum log_level lvl)
{
	return lvl >= LOG_DEBUG && lvl <= LOG_ERROR ? log_names[lvl] : "?";
}

void log_set_level(enum log_level lvl) { log_min = lvl; }
bool log_wants(enum log_level lvl) { return lvl >= log_min; }
void log_set_fd(int fd) { log_fd = fd; }
int log_get_fd(void) { return log_fd; }
void log_set_hook(void (*hook)(void)) { log_hook = hook; }

static void
log_write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(log_fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;  /* nowhere left to complain to */
		}
		p += w;
		n -= (size_t)w;
	}
}

void
log_event(enum log_level lvl, const char *event, const char *fmt, ...)
{
	char line[LOG_LINE_MAX + 2];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int saved = errno;

	if (lvl < log_min)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n,
	    ".%03ldZ level=%s pid=%d event=%s", ts.tv_nsec / 1000000L,
	    log_names[lvl], (int)getpid(), event);
	if (fmt != NULL && fmt[0] != '\0' && n < LOG_LINE_MAX) {
		va_list ap;
		line[n++] = ' ';
		va_start(ap, fmt);
		int m = vsnprintf(line + n, LOG_LINE_MAX - n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += (size_t)m < LOG_LINE_MAX - n ? (size_t)m : LOG_LINE_MAX - n - 1;
	}
	if (n > LOG_LINE_MAX)
		n = LOG_LINE_MAX;
	/* a value must never smuggle a newline into the log */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	if (log_hook != NULL)
		log_hook();
	log_write_all(line, n);
	errno = saved;
}

const char *
log_quote(const char *s)
{
	static char bufs[4][512];
	static int next;
	char *out = bufs[next];
	size_t o = 0, cap = sizeof(bufs[0]) - 6;
	bool plain = true;

	next = (next + 1) % 4;
	if (s == NULL)
		return "-";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '\\' || *p == '=')
			plain = false;
	if (plain && s[0] != '\0') {
		snprintf(out, sizeof(bufs[0]), "%s", s);
		return out;
	}
	out[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o < cap; p++) {
		if (*p == '"' || *p == '\\') {
			out[o++] = '\\';
			out[o++] = (char)*p;
		} else if (*p < ' ' || *p >= 0x7f) {
			o += (size_t)snprintf(out + o, 5, "\\x%02x", *p);
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

void
say_err(const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (log_hook != NULL)
		log_hook();
	(void)!write(2, "mpfarm: ", 8);
	(void)!write(2, line, (size_t)n);
}

