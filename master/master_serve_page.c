/*
 * master_serve_page.c - the HTML of `mpfarm serve`: the dashboard "/" and
 * a page per file "/file/ID".  One self-contained page (CSS and a small
 * script inline, nothing from a CDN, so it works offline) that reloads
 * itself every few seconds.  Every figure comes from the snapshot the
 * server took (the status --json object) or from the store functions
 * `mpfarm failed` and `mpfarm show` use.  Status is always spelled out in
 * words beside any colour, and every name from the store goes through
 * serve_html_text, so a file called <script> is only text.
 */
#include "master_serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_REFRESH_S 5

static const char page_css[] =
"body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:70em;"
"padding:.5em 1em;color:#111;background:#fff}"
"h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em;border-bottom:1px "
"solid #ccc}table{border-collapse:collapse;width:100%}"
"td,th{text-align:left;padding:.2em .4em;border-bottom:1px solid #eee;"
"vertical-align:top}td.n,th.n{text-align:right}"
".bar{display:flex;height:1.2em;border:1px solid #888;margin:.2em 0}"
".bar span{display:block;height:100%}.s-completed{background:#2a7}"
".s-in-progress{background:#38c}.s-failed{background:#c33;"
"background-image:repeating-linear-gradient(45deg,transparent 0 4px,"
"rgba(255,255,255,.5) 4px 6px)}.s-not_started{background:#ddd}"
".err{word-break:break-word}.muted{color:#555}code{word-break:break-all}"
"svg{width:100%;height:8em;border:1px solid #ccc}"
"@media(max-width:40em){td,th{display:block;border:0}tr{display:block;"
"border-bottom:1px solid #ccc;padding:.3em 0}}";

static const char page_js[] =
"(function(){var f=document.getElementById('filter'),"
"p=document.getElementById('pause');"
"function apply(){if(!f)return;var q=f.value.toLowerCase(),n=0;"
"document.querySelectorAll('#failed tbody tr').forEach(function(r){"
"var on=r.textContent.toLowerCase().indexOf(q)>=0;r.hidden=!on;n+=on;});"
"var c=document.getElementById('failed-shown');if(c)c.textContent=n;"
"history.replaceState(null,'',q?'#q='+encodeURIComponent(q):'#');}"
"if(f){var h=location.hash.match(/^#q=(.*)$/);"
"if(h)f.value=decodeURIComponent(h[1]);f.addEventListener('input',apply);"
"apply();}"
"setTimeout(function(){if(!(p&&p.checked)&&document.activeElement!==f)"
"location.reload();else setTimeout(arguments.callee,%d000);},%d000);})();";

void
serve_html_text(struct buf *b, const char *s)
{
	/* what failed and show print (C0, C1, not UTF-8 as \xNN), then
	 * the five characters HTML gives a meaning */
	char *t = text_escape(s, strlen(s), TEXT_ESCAPE_SHOW);

	for (const char *p = t; *p; p++) {
		switch (*p) {
		case '&': buf_printf(b, "&amp;"); break;
		case '<': buf_printf(b, "&lt;"); break;
		case '>': buf_printf(b, "&gt;"); break;
		case '"': buf_printf(b, "&quot;"); break;
		case '\'': buf_printf(b, "&#39;"); break;
		default: buf_append(b, p, 1);
		}
	}
	free(t);
}

static void
page_head(struct buf *b, const char *title, bool refresh)
{
	buf_printf(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset="
	    "\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,"
	    "initial-scale=1\"><title>");
	serve_html_text(b, title);
	buf_printf(b, "</title><style>%s</style></head><body>\n", page_css);
	if (refresh)
		buf_printf(b, "<noscript><meta http-equiv=\"refresh\" content="
		    "\"%d\"></noscript>\n", PAGE_REFRESH_S);
}

static void
page_tail(struct buf *b, bool script)
{
	if (script) {
		buf_printf(b, "<script>");
		buf_printf(b, page_js, PAGE_REFRESH_S, PAGE_REFRESH_S);
		buf_printf(b, "</script>");
	}
	buf_printf(b, "\n</body></html>\n");
}

void
serve_page_message(struct buf *out, const char *title, const char *msg)
{
	page_head(out, title, false);
	buf_printf(out, "<h1>");
	serve_html_text(out, title);
	buf_printf(out, "</h1><p>");
	serve_html_text(out, msg);
	buf_printf(out, "</p><p><a href=\"/\">Dashboard</a></p>");
	page_tail(out, false);
}

static json_int_t
page_int(json_t *o, const char *k)
{
	return json_integer_value(json_object_get(o, k));
}

static void
page_age(struct buf *b, json_int_t s)
{
	if (s < 60)
		buf_printf(b, "%llds", (long long)s);
	else if (s < 3600)
		buf_printf(b, "%lldm %02llds", (long long)s / 60,
		    (long long)s % 60);
	else
		buf_printf(b, "%lldh %02lldm", (long long)s / 3600,
		    (long long)s % 3600 / 60);
}

/* Bars per stage and language, totals, rate and ETA. */
static void
page_progress(struct buf *b, const struct serve_snap *s, double rate)
{
	static const char *const sts[] = {
		"completed", "in-progress", "failed", "not_started"
	};
	json_t *stages = json_object_get(s->status, "stages"), *o;
	json_int_t tot[4] = { 0 }, all = 0;
	const char *key;

	buf_printf(b, "<h2>Progress</h2><table id=\"progress\"><thead><tr>"
	    "<th>Stage</th><th class=\"n\">Completed</th><th class=\"n\">In "
	    "progress</th><th class=\"n\">Failed</th><th class=\"n\">Not "
	    "started</th><th class=\"n\">Total</th></tr></thead><tbody>\n");
	json_object_foreach(stages, key, o) {
		json_int_t n[4], sum = 0;
		for (int i = 0; i < 4; i++) {
			n[i] = page_int(o, sts[i]);
			sum += n[i];
			tot[i] += n[i];
		}
		all += sum;
		buf_printf(b, "<tr data-stage=\"");
		serve_html_text(b, key);
		buf_printf(b, "\"><td>");
		serve_html_text(b, key);
		buf_printf(b, "<div class=\"bar\" role=\"img\" aria-label=\"");
		for (int i = 0; i < 4; i++)
			buf_printf(b, "%s%lld %s", i ? ", " : "", (long long)n[i],
			    sts[i]);
		buf_printf(b, "\">");
		for (int i = 0; i < 4; i++)
			if (n[i] > 0 && sum > 0)
				buf_printf(b, "<span class=\"s-%s\" style=\"width:"
				    "%.2f%%\" title=\"%s %lld\"></span>", sts[i],
				    100.0 * (double)n[i] / (double)sum, sts[i],
				    (long long)n[i]);
		buf_printf(b, "</div></td>");
		for (int i = 0; i < 4; i++)
			buf_printf(b, "<td class=\"n\" data-status=\"%s\">%lld</td>",
			    sts[i], (long long)n[i]);
		buf_printf(b, "<td class=\"n\">%lld</td></tr>\n", (long long)sum);
	}
	buf_printf(b, "</tbody><tfoot><tr id=\"totals\"><th>All jobs</th>");
	for (int i = 0; i < 4; i++)
		buf_printf(b, "<th class=\"n\" data-status=\"%s\">%lld</th>",
		    sts[i], (long long)tot[i]);
	buf_printf(b, "<th class=\"n\">%lld</th></tr></tfoot></table>\n",
	    (long long)all);
	/* translations waiting for a transcript run only as far as those
	 * transcripts are still to come (a failed one holds them back) */
	json_int_t waiting = page_int(s->status, "waiting"), tr_left = 0, left;
	int ntr = 0;
	json_object_foreach(stages, key, o) {
		if (strcmp(key, "transcribe") == 0)
			tr_left = page_int(o, "not_started") + page_int(o,
			    "in-progress");
		else
			ntr++;
	}
	left = tot[1] + tot[3] - waiting;
	left += waiting < tr_left * ntr ? waiting : tr_left * ntr;
	buf_printf(b, "<p id=\"rate\">Files: %lld. Rate: %.2f jobs/min; %lld "
	    "jobs left to run", (long long)page_int(s->status, "files"),
	    rate * 60, (long long)left);
	if (rate > 0 && left > 0) {
		buf_printf(b, ", about ");
		page_age(b, (json_int_t)((double)left / rate));
		buf_printf(b, " at this rate");
	} else if (left > 0) {
		buf_printf(b, "; no estimate (nothing completed lately)");
	}
	buf_printf(b, ".</p>\n");
}

/* Completed attempts per minute as bars, failed ones as marks below. */
static void
page_chart(struct buf *b, const int64_t *done, const int64_t *failed)
{
	int64_t max = 1, sd = 0, sf = 0;
	const int w = 10, h = 100;

	for (int i = 0; i < SERVE_CHART_MINUTES; i++) {
		if (done[i] + failed[i] > max)
			max = done[i] + failed[i];
		sd += done[i];
		sf += failed[i];
	}
	buf_printf(b, "<h2>Last hour</h2><p id=\"throughput\" data-completed="
	    "\"%lld\" data-failed=\"%lld\">%lld attempts completed, %lld failed "
	    "in the last hour (most in one minute: %lld). Bars: completed per "
	    "minute; hatched tops: failed.</p>\n<svg viewBox=\"0 0 %d %d\" "
	    "preserveAspectRatio=\"none\" role=\"img\" aria-label=\"jobs per "
	    "minute over the last hour\">", (long long)sd, (long long)sf,
	    (long long)sd, (long long)sf, (long long)max,
	    SERVE_CHART_MINUTES * w, h);
	for (int i = 0; i < SERVE_CHART_MINUTES; i++) {
		double hd = (double)h * (double)done[i] / (double)max;
		double hf = (double)h * (double)failed[i] / (double)max;
		if (done[i] > 0)
			buf_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" "
			    "height=\"%.1f\" fill=\"#2a7\"><title>%d min ago: %lld "
			    "completed</title></rect>", i * w + 1, h - hd, w - 2, hd,
			    SERVE_CHART_MINUTES - i, (long long)done[i]);
		if (failed[i] > 0)
			buf_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" "
			    "height=\"%.1f\" fill=\"#c33\" stroke=\"#000\"><title>"
			    "%d min ago: %lld failed</title></rect>", i * w + 1,
			    h - hd - hf, w - 2, hf, SERVE_CHART_MINUTES - i,
			    (long long)failed[i]);
	}
	buf_printf(b, "</svg>\n");
}

/* The running master, its worker slots and the providers. */
static void
page_farm(struct buf *b, struct serve_ctx *sc, const struct serve_snap *s)
{
	json_t *farm = s->farm, *v, *provs;
	const char *key;
	size_t i;

	buf_printf(b, "<h2>Master</h2>");
	if (farm == NULL) {
		buf_printf(b, "<p id=\"master\">No master is running on this "
		    "database: these are the database's figures alone.</p>\n");
		return;
	}
	buf_printf(b, "<p id=\"master\">");
	if (json_is_true(json_object_get(farm, "stale")))
		buf_printf(b, "The last master (pid %lld) is gone; its figures "
		    "below are stale.", (long long)page_int(farm, "pid"));
	else
		buf_printf(b, "Master pid %lld running for ", (long long)page_int(
		    farm, "pid")), page_age(b, page_int(farm, "uptime_s")),
		buf_printf(b, ".");
	buf_printf(b, " Workers %lld of %lld running, %lld busy; %lld jobs "
	    "queued; %lld respawns; %lld hung jobs killed.</p>\n",
	    (long long)page_int(farm, "workers_live"),
	    (long long)page_int(farm, "workers_target"),
	    (long long)page_int(farm, "workers_busy"),
	    (long long)page_int(farm, "queue_depth"),
	    (long long)page_int(farm, "respawns"),
	    (long long)page_int(farm, "hung_kills"));
	buf_printf(b, "<table id=\"slots\"><thead><tr><th>Slot</th><th>pid</th>"
	    "<th>State</th><th>File</th><th class=\"n\">For</th><th class="
	    "\"n\">Jobs done</th></tr></thead><tbody>\n");
	json_array_foreach(json_object_get(farm, "slots"), i, v) {
		const char *state = json_string_value(json_object_get(v, "state"));
		bool busy = state && strcmp(state, "busy") == 0;
		buf_printf(b, "<tr><td>%lld</td><td>%lld</td><td>",
		    (long long)page_int(v, "slot"), (long long)page_int(v, "pid"));
		serve_html_text(b, state ? state : "?");
		buf_printf(b, "</td><td>");
		if (busy) {
			int64_t fid;
			char *rel = NULL;
			if (sc->st != NULL && store_job_file_get(sc->st,
			    page_int(v, "job"), &fid, &rel) == 0) {
				buf_printf(b, "<a href=\"/file/%lld\">", (long long)fid);
				serve_html_text(b, rel);
				buf_printf(b, "</a>");
			} else {
				buf_printf(b, "job %lld", (long long)page_int(v, "job"));
			}
			free(rel);
		}
		buf_printf(b, "</td><td class=\"n\">");
		if (busy)
			page_age(b, page_int(v, "job_age_s"));
		buf_printf(b, "</td><td class=\"n\">%lld</td></tr>\n",
		    (long long)page_int(v, "jobs_done"));
	}
	buf_printf(b, "</tbody></table>\n");
	provs = json_object_get(s->status, "providers");
	if (!json_is_object(provs) || json_object_size(provs) == 0)
		return;
	buf_printf(b, "<h2>Providers</h2><table id=\"providers\"><thead><tr>"
	    "<th>Provider</th><th class=\"n\">In flight</th><th class=\"n\">"
	    "Limit</th><th class=\"n\">Requests</th><th class=\"n\">429s</th>"
	    "<th class=\"n\">Paused for</th></tr></thead><tbody>\n");
	json_object_foreach(provs, key, v) {
		json_t *lim = json_object_get(v, "limit");
		buf_printf(b, "<tr><td>");
		serve_html_text(b, key);
		buf_printf(b, "%s</td><td class=\"n\">%lld</td><td class=\"n\">",
		    json_is_true(json_object_get(v, "disabled")) ?
		    " (stopped: key or quota refused)" : "",
		    (long long)page_int(v, "inflight"));
		if (json_is_integer(lim))
			buf_printf(b, "%lld", (long long)json_integer_value(lim));
		else
			buf_printf(b, "none");
		buf_printf(b, "</td><td class=\"n\">%lld</td><td class=\"n\">%lld"
		    "</td><td class=\"n\">%llds</td></tr>\n",
		    (long long)page_int(v, "requests"),
		    (long long)page_int(v, "rate_limited"),
		    (long long)page_int(v, "paused_s"));
	}
	buf_printf(b, "</tbody></table>\n");
}

static void
page_stage_text(struct buf *b, int stage, const char *lang)
{
	buf_printf(b, "%s", job_stage_name(stage));
	if (stage == STAGE_TRANSLATE) {
		buf_printf(b, ":");
		serve_html_text(b, lang);
	}
}

static int
page_failed(struct buf *b, struct serve_ctx *sc, char *err, size_t errlen)
{
	struct store_failed_job *v;
	int n;
	int64_t total;

	if (store_failed_list(sc->st, -1, NULL, SERVE_FAILED_MAX, &v, &n,
	    &total) < 0) {
		snprintf(err, errlen, "%s", store_errmsg(sc->st));
		return -1;
	}
	buf_printf(b, "<h2>Failed jobs</h2><p><label>Filter <input id=\"filter\" "
	    "type=\"search\" placeholder=\"file, stage, language or error\">"
	    "</label> <span id=\"failed-shown\">%d</span> shown of <span id="
	    "\"failed-total\">%lld</span>%s.</p>\n<table id=\"failed\"><thead>"
	    "<tr><th>File</th><th>Stage</th><th class=\"n\">Attempts</th><th>"
	    "Last error</th></tr></thead><tbody>\n", n, (long long)total,
	    total > n ? " (the first ones; `mpfarm failed` lists all)" : "");
	for (int i = 0; i < n; i++) {
		buf_printf(b, "<tr><td><a href=\"/file/%lld\">",
		    (long long)v[i].file_id);
		serve_html_text(b, v[i].rel_path);
		buf_printf(b, "</a></td><td>");
		page_stage_text(b, v[i].stage, v[i].lang);
		buf_printf(b, "</td><td class=\"n\">%d</td><td class=\"err\">",
		    v[i].attempts);
		serve_html_text(b, v[i].last_error);
		buf_printf(b, "</td></tr>\n");
	}
	buf_printf(b, "</tbody></table>\n");
	store_failed_free(v, n);
	return 0;
}

int
serve_page_index(struct serve_ctx *sc, const struct serve_snap *s,
		 struct buf *out, char *err, size_t errlen)
{
	int64_t done[SERVE_CHART_MINUTES], failed[SERVE_CHART_MINUTES];
	char when[32];
	double rate;
	int64_t recent = 0;

	if (store_throughput_get(sc->st, s->now_ms, SERVE_CHART_MINUTES, done,
	    failed) < 0) {
		snprintf(err, errlen, "%s", store_errmsg(sc->st));
		return -1;
	}
	/* the live rate of a running master, else the last 10 minutes' */
	if (s->farm != NULL && !json_is_true(json_object_get(s->farm, "stale"))) {
		rate = json_number_value(json_object_get(s->farm, "rate_per_s"));
	} else {
		for (int i = SERVE_CHART_MINUTES - 10; i < SERVE_CHART_MINUTES; i++)
			recent += done[i];
		rate = (double)recent / 600.0;
	}
	page_head(out, "mpfarm", true);
	master_time_text(s->now_ms, when, sizeof(when));
	buf_printf(out, "<h1>mpfarm: <code>");
	serve_html_text(out, sc->cfg->db);
	buf_printf(out, "</code></h1><p class=\"muted\">As of %s; refreshes every "
	    "%d s. <label><input id=\"pause\" type=\"checkbox\"> pause"
	    "</label> · <a href=\"/metrics\">metrics</a> · <a href=\"/api/"
	    "status\">JSON</a></p>\n", when, PAGE_REFRESH_S);
	page_progress(out, s, rate);
	page_chart(out, done, failed);
	page_farm(out, sc, s);
	if (page_failed(out, sc, err, errlen) < 0)
		return -1;
	page_tail(out, true);
	return 0;
}

/* One job of the file page: status, outputs, attempts. */
static void
page_file_job(struct buf *b, json_t *j)
{
	json_t *v, *o;
	size_t i;
	const char *lang = json_string_value(json_object_get(j, "language"));
	const char *status = json_string_value(json_object_get(j, "status"));

	buf_printf(b, "<h2>");
	serve_html_text(b, json_string_value(json_object_get(j, "stage")));
	if (lang != NULL) {
		buf_printf(b, ":");
		serve_html_text(b, lang);
	}
	buf_printf(b, ": <span class=\"job-status\">%s</span>, %lld attempts"
	    "</h2>\n", status ? status : "?", (long long)page_int(j, "attempts"));
	if ((v = json_object_get(j, "last_error")) != NULL && json_is_string(v)) {
		buf_printf(b, "<p class=\"err\">Last error: ");
		serve_html_text(b, json_string_value(v));
		buf_printf(b, "</p>\n");
	}
	json_array_foreach(json_object_get(j, "outputs"), i, o) {
		buf_printf(b, "<p>Output: <code>");
		serve_html_text(b, json_string_value(json_object_get(o, "path")));
		buf_printf(b, "</code> (%lld bytes)</p>\n",
		    (long long)page_int(o, "bytes"));
	}
	buf_printf(b, "<table class=\"attempts\"><thead><tr><th>#</th><th>"
	    "Started</th><th>Worker</th><th>Outcome</th><th>HTTP</th><th>"
	    "Error</th></tr></thead><tbody>\n");
	json_array_foreach(json_object_get(j, "history"), i, o) {
		char when[32];
		const char *oc = json_string_value(json_object_get(o, "outcome"));
		master_time_text(page_int(o, "started_at_ms"), when, sizeof(when));
		buf_printf(b, "<tr><td>%lld</td><td>%s</td><td>",
		    (long long)page_int(o, "attempt"), when);
		if (page_int(o, "worker_pid") > 0)
			buf_printf(b, "%lld", (long long)page_int(o, "worker_pid"));
		buf_printf(b, "</td><td>%s</td><td>", oc ? oc : "running");
		if (page_int(o, "http_status") > 0)
			buf_printf(b, "%lld", (long long)page_int(o, "http_status"));
		buf_printf(b, "</td><td class=\"err\">");
		serve_html_text(b, json_string_value(json_object_get(o, "error")));
		buf_printf(b, "</td></tr>\n");
	}
	buf_printf(b, "</tbody></table>\n");
}

int
serve_page_file(struct serve_ctx *sc, int64_t file_id, struct buf *out,
		char *err, size_t errlen)
{
	struct serve_snap s;
	struct store_file f;
	json_t *js, *j;
	size_t i;
	int rc;

	/* opens the store when needed, as every page does */
	if (serve_snap_take(sc, &s, err, errlen) < 0)
		return -1;
	serve_snap_free(&s);
	rc = store_file_get(sc->st, file_id, &f);
	if (rc != 0) {
		if (rc < 0)
			snprintf(err, errlen, "%s", store_errmsg(sc->st));
		store_file_free(&f);
		return rc;
	}
	js = master_show_json(sc->cfg, &f);
	page_head(out, f.rel_path, false);
	buf_printf(out, "<p><a href=\"/\">Dashboard</a></p><h1 id=\"file\">");
	serve_html_text(out, f.rel_path);
	buf_printf(out, "</h1><p>File %lld: <code>", (long long)f.file_id);
	serve_html_text(out, f.abs_path);
	buf_printf(out, "</code>, %lld bytes%s.</p>\n", (long long)f.size,
	    json_is_true(json_object_get(js, "exists")) ? "" :
	    " (no longer on disk)");
	json_array_foreach(json_object_get(js, "jobs"), i, j)
		page_file_job(out, j);
	page_tail(out, false);
	json_decref(js);
	store_file_free(&f);
	return 0;
}
