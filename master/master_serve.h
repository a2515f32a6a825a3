/*
 * master_serve.h - what the three parts of `mpfarm serve` share: the
 * server and its routes (master_serve.c), the HTML pages
 * (master_serve_page.c) and the Prometheus text (master_serve_metrics.c).
 * Every answer is built from one snapshot of the store and the live
 * status file, taken with the same functions `mpfarm status --json`,
 * `failed` and `show` use, so the page, /metrics, /api/status and the
 * command line tell the same facts.
 */
#ifndef MPFARM_MASTER_SERVE_H
#define MPFARM_MASTER_SERVE_H

#include "master.h"

#include <jansson.h>

#define SERVE_CHART_MINUTES 60
#define SERVE_FAILED_MAX    500     /* failed jobs listed on the page */

/* The server's state, used from its one polling thread only. */
struct serve_ctx {
	const struct config *cfg;
	store_t *st;            /* opened read only on first need */
};

/* One moment of the farm: the counts, the master's live figures (NULL
 * with no status file) and the status --json object built from both. */
struct serve_snap {
	struct store_counts c;
	json_t *farm;
	json_t *status;
	int64_t now_ms;
};
/* True when a request with this Host header (NULL: none) may be
 * answered: an IP address literal, localhost, the --listen host name or a
 * [serve] allowed_hosts name, any port.  Pure; never fails. */
bool serve_host_allowed(const struct config *cfg, const char *host);

/* Take a snapshot, opening the store if needed: 0, or -1 with a message
 * for the client in err (the store is closed so the next request opens
 * it again, e.g. once the database exists). */
int  serve_snap_take(struct serve_ctx *sc, struct serve_snap *s, char *err,
		     size_t errlen);
/* Free what a snapshot holds (s itself is the caller's); a snapshot
 * zeroed or freed before is fine. */
void serve_snap_free(struct serve_snap *s);

/* The dashboard "/" into out (HTML, UTF-8): 0, or -1 on a store error
 * (message in err). */
int  serve_page_index(struct serve_ctx *sc, const struct serve_snap *s,
		      struct buf *out, char *err, size_t errlen);
/* The page of one file "/file/ID": 0, 1 when there is no such file, -1
 * on a store error (message in err). */
int  serve_page_file(struct serve_ctx *sc, int64_t file_id, struct buf *out,
		     char *err, size_t errlen);
/* A page that only says msg (errors, 404), escaped, into out.  Never
 * fails (allocation failure aborts, as everywhere). */
void serve_page_message(struct buf *out, const char *title, const char *msg);

/* /metrics from snapshot s into out: the Prometheus text exposition
 * format (version 0.0.4); a figure missing from s (no live master) is
 * left out, never guessed.  Never fails. */
void serve_metrics_write(const struct serve_snap *s, struct buf *out);

/* Append s to b as text for HTML: & < > " ' as entities, bytes that are
 * not UTF-8 as \xNN, control characters (C1 included) as \xNN:
 * text_escape's SHOW form, as failed and show print it.  Never fails. */
void serve_html_text(struct buf *b, const char *s);

#endif
