/*
 * worker_http_conf.c - what the HTTP providers take from the config and
 * the environment: the API key (environment first, else a key file that
 * is a regular file of the running user's that no one else may read or
 * write; stripped, checked for bytes that could bend a
 * header, wiped when freed, never printed) and the per-provider options
 * (base_url, timeouts, response cap), checked so that `mpfarm run` stops
 * with a clear message before any worker starts.
 */
#include "worker_http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX 4096

static void
key_strip(char *k)
{
	size_t n = strlen(k), i = 0;

	while (n > 0 && isspace((unsigned char)k[n - 1]))
		k[--n] = '\0';
	while (isspace((unsigned char)k[i]))
		i++;
	memmove(k, k + i, n - i + 1);
}

/* The key file must be the operator's own secret: a regular file (not
 * followed through a link, not a FIFO that would block), owned by the
 * user mpfarm runs as, that nobody else can read or change. */
static char *
key_file_read(const char *path, char *err, size_t errlen)
{
	struct stat st;
	char *k = NULL;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW |
	    O_NONBLOCK);

	if (fd < 0 && errno == ELOOP) {
		snprintf(err, errlen, "api_key_file %s is a symbolic link; "
		    "refusing to follow it (name the file itself)", path);
		goto fail;
	}
	if (fd < 0) {
		snprintf(err, errlen, "api_key_file %s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "api_key_file %s is not a regular file", path);
		goto fail;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "api_key_file %s is owned by uid %u, not by "
		    "the user mpfarm runs as (uid %u); refusing to use it", path,
		    (unsigned)st.st_uid, (unsigned)geteuid());
		goto fail;
	}
	if (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) {
		snprintf(err, errlen, "api_key_file %s is%s%s%s%s (mode %04o); "
		    "refusing to use it (chmod 600 %s)", path,
		    st.st_mode & S_IRGRP ? " group-readable" : "",
		    st.st_mode & S_IWGRP ? " group-writable" : "",
		    st.st_mode & S_IROTH ? " world-readable" : "",
		    st.st_mode & S_IWOTH ? " world-writable" : "",
		    (unsigned)(st.st_mode & 07777), path);
		goto fail;
	}
	if (st.st_size > KEY_FILE_MAX) {
		snprintf(err, errlen, "api_key_file %s is too large to hold a key",
		    path);
		goto fail;
	}
	k = xcalloc(1, KEY_FILE_MAX + 1);
	n = read(fd, k, KEY_FILE_MAX);
	if (n < 0) {
		snprintf(err, errlen, "api_key_file %s: %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	return k;
fail:
	if (fd >= 0)
		close(fd);
	worker_http_key_free(k);
	return NULL;
}

int
worker_http_key_load(const struct config *cfg, const char *section,
		     const char *env, char **key, char *err, size_t errlen)
{
	const char *v = getenv(env);
	const char *file = config_get(cfg, section, "api_key_file");
	const char *from = env;
	char *k = NULL;

	*key = NULL;
	if (v != NULL && v[0] != '\0') {
		k = xstrdup(v);
	} else if (file != NULL && file[0] != '\0') {
		k = key_file_read(file, err, errlen);
		if (k == NULL)
			goto fail;
		from = file;
	} else {
		snprintf(err, errlen, "%s is not set (or [%s] api_key_file)",
		    env, section);
		goto fail;
	}
	key_strip(k);
	if (k[0] == '\0') {
		snprintf(err, errlen, "the API key in %s is empty", from);
		goto fail;
	}
	for (const char *p = k; *p; p++) {
		/* a key goes into a header line: no control bytes, ever */
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(err, errlen, "the API key in %s contains control "
			    "characters", from);
			goto fail;
		}
	}
	*key = k;
	return 0;
fail:
	worker_http_key_free(k);
	return -1;
}

void
worker_http_key_free(char *key)
{
	if (key == NULL)
		return;
	explicit_bzero(key, strlen(key));
	free(key);
}

void
worker_http_headers_free(struct curl_slist *headers)
{
	/* one of them carries the key: wipe the copies curl made */
	for (struct curl_slist *h = headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(headers);
}

static int
opt_long(const struct config *cfg, const char *section, const char *key,
	 long dflt, long lo, long hi, long *out, char *err, size_t errlen)
{
	const char *v = config_get(cfg, section, key);
	char *end;

	*out = dflt;
	if (v == NULL)
		return 0;
	errno = 0;
	*out = strtol(v, &end, 10);
	if (end == v || *end != '\0' || errno != 0 || *out < lo || *out > hi) {
		snprintf(err, errlen, "[%s] %s must be a whole number from %ld "
		    "to %ld, not \"%s\"", section, key, lo, hi, v);
		return -1;
	}
	return 0;
}

int
worker_http_opts_load(const struct config *cfg, const char *section,
		      const char *default_base, struct worker_http_opts *o,
		      char *err, size_t errlen)
{
	const char *base = config_get(cfg, section, "base_url");
	size_t n;

	memset(o, 0, sizeof(*o));
	o->provider = section;
	o->desc = provider_find(section);
	if (o->desc == NULL) {
		snprintf(err, errlen, "[%s] is not a provider", section);
		return -1;
	}
	if (base == NULL || base[0] == '\0')
		base = default_base;
	if (strncmp(base, "https://", 8) != 0 && strncmp(base, "http://", 7) != 0) {
		snprintf(err, errlen, "[%s] base_url must start with https:// or "
		    "http://, not \"%s\"", section, base);
		return -1;
	}
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	if (n >= sizeof(o->base_url)) {
		snprintf(err, errlen, "[%s] base_url is too long", section);
		return -1;
	}
	memcpy(o->base_url, base, n);
	o->base_url[n] = '\0';
	if (opt_long(cfg, section, "connect_timeout", 10, 1, 3600,
		     &o->connect_timeout, err, errlen) < 0 ||
	    opt_long(cfg, section, "low_speed_time", 300, 1, 86400,
		     &o->low_speed_time, err, errlen) < 0 ||
	    opt_long(cfg, section, "max_response_bytes", WORKER_HTTP_RESPONSE_MAX,
		     1024, 1L << 32, &o->max_response, err, errlen) < 0)
		return -1;
	return 0;
}

