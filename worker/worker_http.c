/*
 * worker_http.c - the libcurl layer under the cloud providers.  It owns the
 * one easy handle a worker process reuses (so connections stay alive from
 * job to job), the single table that turns an HTTP answer into a job
 * outcome plus an event for the master, so that every provider retries,
 * pauses and fails alike, and the checks and streamed uploads of media
 * files.  Keys and options come from worker_http_conf.c.
 */
#include "worker_http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc_frame.h"

static CURL *http_easy;
static bool  http_global;

/* ---- pure helpers ---------------------------------------------------- */

int64_t
worker_http_retry_after_parse(const char *value, time_t now)
{
	double secs;
	char *end;

	if (value == NULL)
		return 0;
	while (isspace((unsigned char)*value))
		value++;
	if (isdigit((unsigned char)*value)) {
		secs = strtod(value, &end);
		while (isspace((unsigned char)*end))
			end++;
		if (*end != '\0' || !isfinite(secs))
			return 0;
	} else {
		time_t t = curl_getdate(value, NULL);
		if (t == (time_t)-1)
			return 0;
		secs = difftime(t, now);
	}
	if (secs <= 0)
		return 0;
	if (secs * MS_PER_S >= WORKER_HTTP_RETRY_AFTER_MAX_MS)
		return WORKER_HTTP_RETRY_AFTER_MAX_MS;
	return (int64_t)ceil(secs * MS_PER_S);
}

int64_t
worker_http_duration_parse(const char *value)
{
	double total = 0;
	const char *p = value;

	if (p == NULL || *p == '\0')
		return -1;
	while (*p) {
		char *end;
		double d = strtod(p, &end);
		if (end == p || d < 0 || !isfinite(d))
			return -1;
		p = end;
		if (strncmp(p, "ms", 2) == 0) {
			total += d;
			p += 2;
		} else if (*p == 'h') {
			total += d * MS_PER_H;
			p++;
		} else if (*p == 'm') {
			total += d * 60 * MS_PER_S;
			p++;
		} else if (*p == 's') {
			total += d * MS_PER_S;
			p++;
		} else {
			return -1;
		}
	}
	return total > WORKER_HTTP_RETRY_AFTER_MAX_MS ?
		WORKER_HTTP_RETRY_AFTER_MAX_MS : (int64_t)ceil(total);
}

void
worker_http_classify(const struct provider_desc *p, long status, CURLcode cc,
		     const char *code, struct worker_http_class *out)
{
	out->event = -1;
	if (status == 0) {
		switch (cc) {
		/* a wrong base_url or a certificate that does not verify will
		 * not mend itself: say so at once instead of retrying */
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_NOT_BUILT_IN:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_FILESIZE_EXCEEDED:
			out->outcome = OUT_PERMANENT;
			break;
		default:
			out->outcome = OUT_TRANSIENT;
			break;
		}
		return;
	}
	if (status >= 200 && status < 300) {
		out->outcome = OUT_COMPLETED;
		out->event = IPC_PROV_OK;
	} else if (provider_code_in(p->code_refused, code)) {
		/* said with a 429 too (OpenAI): retrying cannot help */
		out->outcome = OUT_PERMANENT;
		out->event = IPC_PROV_QUOTA;
	} else if (status == 429 || provider_http_in(p->http_rate_limited,
	    status)) {
		out->outcome = OUT_RATE_LIMITED;
		out->event = provider_code_in(p->code_concurrency, code) ?
			IPC_PROV_CONCURRENCY : IPC_PROV_RATE_LIMITED;
	} else if (status == 401 || status == 403 ||
	    provider_http_in(p->http_refused, status)) {
		out->outcome = OUT_PERMANENT;
		out->event = IPC_PROV_QUOTA;
	} else if (status == 408 || status >= 500) {
		out->outcome = OUT_TRANSIENT;
	} else {
		/* 400, 404, 413, 422 and the redirects we do not follow */
		out->outcome = OUT_PERMANENT;
	}
}

/* ---- the exchange ---------------------------------------------------- */

CURL *
worker_http_handle(void)
{
	if (http_easy != NULL)
		return http_easy;
	if (!http_global) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		http_global = true;
	}
	http_easy = curl_easy_init();
	return http_easy;
}

struct http_sink {
	struct buf *b;
	size_t max;
	bool over;
};

static size_t
http_write(char *p, size_t size, size_t n, void *ud)
{
	struct http_sink *s = ud;

	if (s->b->len + size * n > s->max) {
		s->over = true;
		return 0;
	}
	buf_append(s->b, p, size * n);
	return size * n;
}

static int
http_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow,
	      curl_off_t ultotal, curl_off_t ulnow)
{
	(void)ud; (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
	worker_heartbeat();     /* rate-limited by the worker */
	return 0;
}

static const char *
http_header(CURL *h, const char *name)
{
	struct curl_header *hd;

	if (curl_easy_header(h, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK)
		return NULL;
	return hd->value;
}

/* How long the provider asked us to wait: Retry-After (or OpenAI's
 * retry-after-ms); for a 429 without one, the x-ratelimit reset of the
 * limit that ran out. */
static int64_t
http_wait_ms(CURL *h, long status)
{
	const char *v = http_header(h, "retry-after-ms");
	int64_t ms = 0;

	if (v != NULL) {
		char *end;
		double d = strtod(v, &end);
		if (end != v && d > 0 && isfinite(d))
			ms = d > WORKER_HTTP_RETRY_AFTER_MAX_MS ?
				WORKER_HTTP_RETRY_AFTER_MAX_MS : (int64_t)d;
	}
	if (ms == 0)
		ms = worker_http_retry_after_parse(http_header(h, "retry-after"),
						   time(NULL));
	if (ms != 0 || status != 429)
		return ms;
	static const char *const kinds[] = { "requests", "tokens" };
	for (int i = 0; i < 2; i++) {
		char name[64];
		snprintf(name, sizeof(name), "x-ratelimit-remaining-%s", kinds[i]);
		v = http_header(h, name);
		if (v == NULL || strcmp(v, "0") != 0)
			continue;
		snprintf(name, sizeof(name), "x-ratelimit-reset-%s", kinds[i]);
		int64_t d = worker_http_duration_parse(http_header(h, name));
		if (d > ms)
			ms = d;
	}
	return ms;
}

static void
http_setup(CURL *h, struct worker_http_call *c, struct http_sink *sink,
	   char *errbuf)
{
	const struct worker_http_opts *o = c->opts;

	curl_easy_reset(h);     /* keeps the connection cache */
	curl_easy_setopt(h, CURLOPT_URL, c->url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mpfarm/" MPFARM_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, o->connect_timeout);
	/* a provider working on a long file sends nothing for a while;
	 * low_speed_time bounds that silence, the job timeout the rest */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, o->low_speed_time);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_response);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, http_progress);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (c->mime != NULL) {
		curl_easy_setopt(h, CURLOPT_MIMEPOST, c->mime);
	} else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)c->body_len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
	}
}

int
worker_http_exchange(struct worker_http_call *c, struct provider_result *res)
{
	const char *prov = c->opts->provider;
	char errbuf[CURL_ERROR_SIZE] = "", code[64], text[400];
	struct http_sink sink = { &c->resp, (size_t)c->opts->max_response, false };
	struct worker_http_class cls;
	CURL *h = worker_http_handle();
	int64_t t0 = time_mono_ms();
	CURLcode cc;

	c->status = 0;
	c->retry_after_ms = 0;
	buf_init(&c->resp);
	if (h == NULL) {
		provider_result_error(res, OUT_TRANSIENT, "cannot start libcurl");
		return -1;
	}
	if (worker_token_acquire() < 0) {
		provider_result_error(res, OUT_INTERRUPTED, "farm stopping before "
		    "the request to %s", prov);
		return -1;
	}
	http_setup(h, c, &sink, errbuf);
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &c->status);
	c->retry_after_ms = http_wait_ms(h, c->status);
	/* drop the pointers to this frame's buffers and the caller's mime */
	curl_easy_reset(h);
	buf_terminate(&c->resp);
	log_debug("http_request", "provider=%s status=%ld curl=%d ms=%lld "
	    "bytes=%zu", prov, c->status, (int)cc,
	    (long long)(time_mono_ms() - t0), c->resp.len);

	if (sink.over || cc == CURLE_FILESIZE_EXCEEDED) {
		provider_result_error(res, OUT_PERMANENT, "response from %s larger "
		    "than %ld bytes", prov, c->opts->max_response);
		res->http_status = (int)c->status;
		return -1;
	}
	if (cc != CURLE_OK) {
		worker_http_classify(c->opts->desc, 0, cc, NULL, &cls);
		/* curl quotes what the server said in its message */
		worker_http_text_clean(text, sizeof(text), errbuf, strlen(errbuf),
				       c->secret);
		if (strcmp(text, curl_easy_strerror(cc)) == 0)
			text[0] = '\0';
		provider_result_error(res, cls.outcome, "request to %s failed: "
		    "%s%s%s", prov, curl_easy_strerror(cc), text[0] ? ": " : "",
		    text);
		res->retry_after_ms = c->retry_after_ms;
		return -1;
	}
	if (c->status >= 200 && c->status < 300) {
		worker_provider_event(IPC_PROV_OK, 0, (int)c->status, "");
		return 0;
	}
	worker_http_error_parse(c->resp.data, c->resp.len, code, sizeof(code),
				text, sizeof(text));
	worker_http_classify(c->opts->desc, c->status, cc, code, &cls);
	worker_http_scrub(text, c->secret);
	worker_http_scrub(code, c->secret);
	provider_result_error(res, cls.outcome, "HTTP %ld from %s: %s%s%s%s",
	    c->status, prov, text[0] ? text : "(no message)",
	    code[0] ? " (" : "", code, code[0] ? ")" : "");
	res->http_status = (int)c->status;
	res->retry_after_ms = c->retry_after_ms;
	if (cls.event >= 0)
		worker_provider_event(cls.event, c->retry_after_ms,
				      (int)c->status, res->msg);
	return -1;
}

/* ---- media files and forms ------------------------------------------ */

int
worker_http_media_check(int fd, const char *path, int64_t *size,
			struct provider_result *res)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		provider_result_error(res, OUT_TRANSIENT, "cannot read %s: %s",
		    path, fd < 0 ? "not opened" : strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		provider_result_error(res, OUT_PERMANENT, "%s is not a regular "
		    "file", path);
		return -1;
	}
	if (st.st_size == 0) {
		provider_result_error(res, OUT_PERMANENT, "empty file: %s", path);
		return -1;
	}
	*size = st.st_size;
	return 0;
}

/* The upload reads the worker's descriptor with pread at its own offset:
 * libcurl may rewind (a redirect, an auth retry) through the seek
 * callback, and the descriptor's own offset stays untouched. */
struct http_upload {
	int   fd;
	off_t off, size;
	const char *path;
};

static size_t
http_upload_read(char *dst, size_t size, size_t nitems, void *arg)
{
	struct http_upload *u = arg;
	size_t want = size * nitems;
	ssize_t n;

	if (u->off >= u->size)
		return 0;
	if ((off_t)want > u->size - u->off)
		want = (size_t)(u->size - u->off);
	do
		n = pread(u->fd, dst, want, u->off);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		log_warn("upload_read_failed", "file=%s error=%s",
		    log_quote(u->path), log_quote(strerror(errno)));
		return CURL_READFUNC_ABORT;
	}
	if (n == 0)             /* shrank under us: the length was promised */
		return CURL_READFUNC_ABORT;
	u->off += n;
	return (size_t)n;
}

static int
http_upload_seek(void *arg, curl_off_t offset, int origin)
{
	struct http_upload *u = arg;
	curl_off_t base = origin == SEEK_SET ? 0 : origin == SEEK_CUR ?
	    u->off : u->size;

	if (base + offset < 0 || base + offset > u->size)
		return CURL_SEEKFUNC_FAIL;
	u->off = (off_t)(base + offset);
	return CURL_SEEKFUNC_OK;
}

int
worker_http_mime_file(curl_mime *mime, const char *field, int fd,
		      const char *path, int64_t size,
		      struct provider_result *res)
{
	const char *base = strrchr(path, '/');
	curl_mimepart *part = curl_mime_addpart(mime);
	struct http_upload *u = xcalloc(1, sizeof(*u));
	char name[128];
	size_t n = 0;

	base = base ? base + 1 : path;
	/* the name only hints at the format (providers look at the
	 * extension): keep it plain so no header can be bent by it */
	for (; *base && n + 1 < sizeof(name); base++) {
		unsigned char ch = (unsigned char)*base;
		name[n++] = (isalnum(ch) || ch == '.' || ch == '-' || ch == '_') ?
			(char)ch : '_';
	}
	name[n] = '\0';
	u->fd = fd;
	u->size = (off_t)size;
	u->path = path;
	if (part == NULL || curl_mime_name(part, field) != CURLE_OK ||
	    curl_mime_data_cb(part, (curl_off_t)size, http_upload_read,
	    http_upload_seek, free, u) != CURLE_OK) {
		free(u);        /* curl owns it only once data_cb succeeded */
		goto fail;
	}
	if (curl_mime_filename(part, n ? name : "media") != CURLE_OK ||
	    curl_mime_type(part, "application/octet-stream") != CURLE_OK)
		goto fail;
	return 0;
fail:
	provider_result_error(res, OUT_TRANSIENT, "cannot prepare the "
	    "upload of %s", path);
	return -1;
}

void
worker_http_mime_text(curl_mime *mime, const char *field, const char *value)
{
	curl_mimepart *part = curl_mime_addpart(mime);

	curl_mime_name(part, field);
	curl_mime_data(part, value, CURL_ZERO_TERMINATED);
}

void
worker_http_transcript_add(struct provider_result *res, const char *text,
			   size_t len, struct buf *raw)
{
	struct buf t;

	buf_init(&t);
	buf_append(&t, text, len);
	if (len == 0 || text[len - 1] != '\n')
		buf_append(&t, "\n", 1);
	provider_result_add(res, ".txt", t.data, t.len);
	buf_terminate(raw);
	provider_result_add(res, ".json", raw->data, raw->len);
	buf_init(raw);
}
