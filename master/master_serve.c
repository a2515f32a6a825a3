/*
 * master_serve.c - `mpfarm serve`: a read-only web dashboard and
 * Prometheus endpoint beside the farm, in its own process.  libmicrohttpd
 * does the HTTP; this file owns the listening address, the limits that
 * make it safe as a service (bounded connections, per-client connections,
 * request memory and idle time; only GET and HEAD; only known Host names
 * and no other site's Origin, against DNS rebinding), the routes, and the
 * one read-only store connection.  No route maps a URL onto the file
 * system: every answer is generated from the store and the status file.
 * It never writes the database and holds no API key.
 *
 * One polling thread answers every request, so the store (a SQLite
 * connection opened NOMUTEX) is only ever used by that thread; the main
 * thread waits for TERM/INT and stops the daemon.
 */
#include "master_serve.h"

#include <errno.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVE_CONN_MAX        64      /* connections at once */
#define SERVE_CONN_PER_IP     16
#define SERVE_CONN_MEMORY     (32 * 1024)  /* request line + headers */
#define SERVE_CONN_TIMEOUT_S  15
#define SERVE_URL_MAX         2048

#define SERVE_CT_HTML    "text/html; charset=utf-8"
#define SERVE_CT_TEXT    "text/plain; charset=utf-8"
#define SERVE_CT_JSON    "application/json"
#define SERVE_CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

int
serve_snap_take(struct serve_ctx *sc, struct serve_snap *s, char *err,
		size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->now_ms = time_wall_ms();
	if (sc->st == NULL) {
		struct store_open_opts o = { .flags = STORE_READONLY,
		    .busy_timeout_ms = 2000 };
		char e[512];
		if (store_open(&sc->st, sc->cfg->db, &o, e, sizeof(e)) < 0) {
			snprintf(err, errlen, "cannot open the database %s", e);
			return -1;
		}
	}
	if (store_counts_get(sc->st, &s->c) < 0) {
		snprintf(err, errlen, "%s", store_errmsg(sc->st));
		store_close(sc->st);
		sc->st = NULL;
		return -1;
	}
	s->farm = master_status_farm(sc->cfg->db);
	s->status = master_status_json(sc->cfg, &s->c, s->farm);
	return 0;
}

void
serve_snap_free(struct serve_snap *s)
{
	store_counts_free(&s->c);
	json_decref(s->farm);
	json_decref(s->status);
	memset(s, 0, sizeof(*s));
}

/* Queue body (copied) with its content type; HEAD gets the headers. */
static enum MHD_Result
serve_reply(struct MHD_Connection *conn, unsigned code, const char *ctype,
	    const struct buf *body)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    body->len, body->data ? body->data : (void *)"",
	    MHD_RESPMEM_MUST_COPY);
	enum MHD_Result rc;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	if (strcmp(ctype, SERVE_CT_HTML) == 0)
		MHD_add_response_header(r, "Content-Security-Policy",
		    "default-src 'none'; style-src 'unsafe-inline'; "
		    "script-src 'unsafe-inline'; img-src data:; "
		    "connect-src 'self'; frame-ancestors 'none'");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	rc = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result
serve_text(struct MHD_Connection *conn, unsigned code, const char *msg)
{
	struct buf b;
	enum MHD_Result rc;

	buf_init(&b);
	buf_printf(&b, "%s\n", msg);
	rc = serve_reply(conn, code, SERVE_CT_TEXT, &b);
	buf_free(&b);
	return rc;
}

/* "/file/123" -> 123; -1 when the rest is not a plain decimal id. */
static int64_t
serve_file_id(const char *url)
{
	const char *p = url + strlen("/file/");
	int64_t id = 0;

	if (*p == '\0' || strlen(p) > 18)
		return -1;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		id = id * 10 + (*p - '0');
	}
	return id;
}

/* Route one GET/HEAD.  *code and *ctype say how to send out. */
static void
serve_route(struct serve_ctx *sc, const char *url, unsigned *code,
	    const char **ctype, struct buf *out)
{
	struct serve_snap s;
	char err[600] = "";
	int rc;

	*code = MHD_HTTP_OK;
	*ctype = SERVE_CT_HTML;
	if (strncmp(url, "/file/", 6) == 0) {
		int64_t id = serve_file_id(url);
		rc = id < 0 ? 1 : serve_page_file(sc, id, out, err, sizeof(err));
		if (rc != 0) {
			out->len = 0;
			*code = rc > 0 ? MHD_HTTP_NOT_FOUND :
			    MHD_HTTP_SERVICE_UNAVAILABLE;
			serve_page_message(out, rc > 0 ? "No such file" :
			    "Database unavailable", rc > 0 ? "There is no file "
			    "with that id in this database." : err);
		}
		return;
	}
	if (strcmp(url, "/") != 0 && strcmp(url, "/metrics") != 0 &&
	    strcmp(url, "/api/status") != 0) {
		*code = MHD_HTTP_NOT_FOUND;
		serve_page_message(out, "Not found", "This server answers /, "
		    "/file/ID, /metrics and /api/status only.");
		return;
	}
	if (serve_snap_take(sc, &s, err, sizeof(err)) < 0) {
		*code = MHD_HTTP_SERVICE_UNAVAILABLE;
		if (strcmp(url, "/") == 0) {
			serve_page_message(out, "Database unavailable", err);
		} else {
			*ctype = SERVE_CT_TEXT;
			buf_printf(out, "%s\n", err);
		}
		return;
	}
	if (strcmp(url, "/metrics") == 0) {
		*ctype = SERVE_CT_METRICS;
		serve_metrics_write(&s, out);
	} else if (strcmp(url, "/api/status") == 0) {
		char *d = json_dumps(s.status, JSON_INDENT(2) | JSON_ENSURE_ASCII);
		*ctype = SERVE_CT_JSON;
		buf_printf(out, "%s\n", d ? d : "{}");
		free(d);
	} else if (serve_page_index(sc, &s, out, err, sizeof(err)) < 0) {
		out->len = 0;
		*code = MHD_HTTP_SERVICE_UNAVAILABLE;
		serve_page_message(out, "Database unavailable", err);
	}
	serve_snap_free(&s);
}

static bool
serve_has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	return cl != NULL && strspn(cl, "0") != strlen(cl);
}

/* Does `name` (len bytes, no port) equal one of the comma list's names,
 * or is the list "*"?  Case does not matter in host names. */
static bool
serve_host_listed(const char *list, const char *name, size_t len)
{
	for (const char *p = list; p != NULL; p = strchr(p, ',')) {
		size_t n;
		p += strspn(p, ", \t");
		n = strcspn(p, ",");
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if ((n == 1 && p[0] == '*') ||
		    (n == len && strncasecmp(p, name, n) == 0))
			return true;
	}
	return false;
}

/*
 * DNS rebinding: a page of attacker.example whose name later resolves to
 * 127.0.0.1 reaches this server with "Host: attacker.example".  Only
 * hosts that cannot be such a name are answered: an IP address literal
 * (a browser sends one only for a page whose origin is that address),
 * localhost, the host --listen names, and [serve] allowed_hosts.  A
 * request without Host (HTTP/1.0 tools; no browser) is answered too.
 */
bool
serve_host_allowed(const struct config *cfg, const char *host)
{
	char name[256], v6[INET6_ADDRSTRLEN + 8];
	const char *end, *listen = cfg->listen;
	size_t n;
	struct in6_addr a6;
	struct in_addr a4;

	if (host == NULL)
		return true;
	if (host[0] == '[') {                   /* [v6] or [v6]:port */
		end = strchr(host, ']');
		if (end == NULL || (end[1] != '\0' && end[1] != ':'))
			return false;
		n = (size_t)(end - host - 1);
		if (n >= sizeof(v6))
			return false;
		memcpy(v6, host + 1, n);
		v6[n] = '\0';
		return inet_pton(AF_INET6, v6, &a6) == 1;
	}
	n = strcspn(host, ":");
	if (host[n] == ':' && strspn(host + n + 1, "0123456789") !=
	    strlen(host + n + 1))
		return false;                   /* a port is digits only */
	if (n == 0 || n >= sizeof(name))
		return false;
	memcpy(name, host, n);
	if (name[n - 1] == '.')                 /* "localhost." is localhost */
		n--;
	name[n] = '\0';
	if (inet_pton(AF_INET, name, &a4) == 1 ||
	    strcasecmp(name, "localhost") == 0)
		return true;
	/* the name --listen gives (a literal address was taken above) */
	end = strrchr(listen, ':');
	if (end != NULL && listen[0] != '[' && (size_t)(end - listen) == n &&
	    strncasecmp(listen, name, n) == 0)
		return true;
	return cfg->allowed_hosts != NULL &&
	    serve_host_listed(cfg->allowed_hosts, name, n);
}

/* A cross-site page may send requests here (no rebinding needed): only
 * the server's own origin, http:// or https:// (a TLS proxy) and the Host
 * of this request, is answered; no Origin header (same-origin GETs,
 * curl, Prometheus) is fine. */
static bool
serve_origin_allowed(const char *origin, const char *host)
{
	const char *rest;

	if (origin == NULL)
		return true;
	if (host == NULL)
		return false;
	if (strncasecmp(origin, "http://", 7) == 0)
		rest = origin + 7;
	else if (strncasecmp(origin, "https://", 8) == 0)
		rest = origin + 8;
	else
		return false;                   /* "null", other schemes */
	return strcasecmp(rest, host) == 0;
}

static enum MHD_Result
serve_request(void *cls, struct MHD_Connection *conn, const char *url,
	      const char *method, const char *version, const char *upload,
	      size_t *upload_size, void **con_cls)
{
	static int seen;
	struct serve_ctx *sc = cls;
	const char *ctype, *host;
	unsigned code;
	struct buf out;
	enum MHD_Result rc;

	(void)version;
	(void)upload;
	/* answered on the first call, before any body is read: MHD then
	 * closes the connection instead of reading what was sent */
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return serve_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
		    "405 only GET and HEAD are allowed");
	host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_HOST);
	if (!serve_host_allowed(sc->cfg, host)) {
		log_info("serve_refused", "why=host host=%s", log_quote(host));
		return serve_text(conn, MHD_HTTP_MISDIRECTED_REQUEST,
		    "421 this server does not answer for that host name "
		    "(add it to [serve] allowed_hosts)");
	}
	if (!serve_origin_allowed(MHD_lookup_connection_value(conn,
	    MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN), host)) {
		log_info("serve_refused", "why=origin host=%s", log_quote(host));
		return serve_text(conn, MHD_HTTP_FORBIDDEN,
		    "403 requests from other sites are not answered");
	}
	if (*con_cls == NULL && (MHD_lookup_connection_value(conn,
	    MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL ||
	    serve_has_body(conn)))
		return serve_text(conn, MHD_HTTP_CONTENT_TOO_LARGE,
		    "413 a GET has no body here");
	if (*con_cls == NULL) {         /* headers only so far */
		*con_cls = &seen;
		return MHD_YES;
	}
	*upload_size = 0;
	if (strlen(url) > SERVE_URL_MAX)
		return serve_text(conn, MHD_HTTP_URI_TOO_LONG, "414 URL too long");
	buf_init(&out);
	serve_route(sc, url, &code, &ctype, &out);
	rc = serve_reply(conn, code, ctype, &out);
	buf_free(&out);
	log_debug("serve_request", "method=%s url=%s status=%u", method,
	    log_quote(url), code);
	return rc;
}

static void
serve_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("serve_http", "msg=%s", log_quote(msg));
}

/* "ADDR:PORT" or "[V6ADDR]:PORT" -> the first address it resolves to. */
static struct addrinfo *
serve_listen_parse(const char *listen, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
	    .ai_flags = AI_NUMERICSERV | AI_PASSIVE }, *ai = NULL;
	const char *colon = strrchr(listen, ':');
	char host[256];
	size_t hl;
	int rc;

	if (colon == NULL || colon[1] == '\0' || colon == listen) {
		snprintf(err, errlen, "--listen must be ADDR:PORT (e.g. "
		    "127.0.0.1:8080 or [::1]:8080), not \"%s\"", listen);
		return NULL;
	}
	hl = (size_t)(colon - listen);
	if (listen[0] == '[' && hl >= 2 && listen[hl - 1] == ']') {
		listen++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		snprintf(err, errlen, "--listen: address too long");
		return NULL;
	}
	memcpy(host, listen, hl);
	host[hl] = '\0';
	if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
		snprintf(err, errlen, "--listen %s: %s", listen, gai_strerror(rc));
		return NULL;
	}
	return ai;
}

int
master_serve_run(struct config *cfg)
{
	struct serve_ctx sc = { .cfg = cfg };
	struct MHD_Daemon *d = NULL;
	struct addrinfo *ai;
	char err[600];
	sigset_t set;
	int sig = 0, ex = EXIT_FATAL;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

	if ((ai = serve_listen_parse(cfg->listen, err, sizeof(err))) == NULL) {
		say_err("serve: %s", err);
		return EXIT_USAGE;
	}
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* the polling thread inherits this mask: only the main thread
	 * takes the signals, with sigwait.  A signal a parent left ignored
	 * (INT for a background job) would never reach sigwait. */
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	d = MHD_start_daemon(flags, 0, NULL, NULL, serve_request, &sc,
	    MHD_OPTION_EXTERNAL_LOGGER, serve_mhd_log, NULL,
	    MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)SERVE_CONN_MAX,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)SERVE_CONN_PER_IP,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SERVE_CONN_MEMORY,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SERVE_CONN_TIMEOUT_S,
	    MHD_OPTION_END);
	if (d == NULL) {
		say_err("serve: cannot listen on %s: %s", cfg->listen,
		    errno ? strerror(errno) : "libmicrohttpd refused");
		goto out;
	}
	/* the port actually bound: "--listen 127.0.0.1:0" picks a free one */
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(d,
	    MHD_DAEMON_INFO_BIND_PORT);
	log_info("serve_start", "listen=%s port=%u db=%s pid=%d",
	    log_quote(cfg->listen), di ? (unsigned)di->port : 0u,
	    log_quote(cfg->db), (int)getpid());
	while (sig != SIGTERM && sig != SIGINT) {
		if (sigwait(&set, &sig) != 0)
			break;
		if (sig == SIGHUP)
			log_info("serve_hup", "note=nothing-to-reload");
	}
	log_info("serve_stop", "signal=%d", sig);
	ex = EXIT_OK;
out:
	if (d != NULL)
		MHD_stop_daemon(d);
	if (sc.st != NULL)
		store_close(sc.st);
	freeaddrinfo(ai);
	return ex;
}
