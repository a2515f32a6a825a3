/*
 * master_serve_metrics.c - /metrics of `mpfarm serve` in the Prometheus
 * text exposition format 0.0.4, so a stock scrape config works.  Every
 * sample is read from the very object `mpfarm status --json` prints (and
 * /api/status serves), so the three never disagree.  Names follow the
 * Prometheus conventions: an mpfarm_ prefix, base units in the name
 * (_seconds), _total for counters.  The master's counters (jobs done this
 * run, respawns, provider requests) start at zero with each master, as
 * counters do when a process restarts; they are left out while no master
 * runs (mpfarm_master_up 0), and the database gauges are always there.
 */
#include "master_serve.h"

#include <stdio.h>
#include <string.h>

static void
metrics_family(struct buf *b, const char *name, const char *type,
	       const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void
metrics_label(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			buf_printf(b, "\\n");
		else
			buf_append(b, v, 1);
	}
}

/* name{k="v",...} value; labels as alternating key/value strings. */
static void
metrics_sample(struct buf *b, const char *name, json_t *value, int nlabels,
	       const char *const *labels)
{
	buf_printf(b, "%s", name);
	for (int i = 0; i < nlabels; i++) {
		buf_printf(b, "%s%s=\"", i ? "," : "{", labels[2 * i]);
		metrics_label(b, labels[2 * i + 1]);
		buf_printf(b, "\"%s", i == nlabels - 1 ? "}" : "");
	}
	if (json_is_integer(value))
		buf_printf(b, " %lld\n", (long long)json_integer_value(value));
	else
		buf_printf(b, " %.17g\n", json_number_value(value));
}

/* A gauge or counter of one unlabelled value, skipped when absent. */
static void
metrics_one(struct buf *b, const char *name, const char *type,
	    const char *help, json_t *value)
{
	if (!json_is_number(value))
		return;
	metrics_family(b, name, type, help);
	metrics_sample(b, name, value, 0, NULL);
}

/* "transcribe" -> stage, ""; "translate:de" -> translate, "de". */
static void
metrics_stage_split(const char *key, char *stage, size_t slen,
		    const char **lang)
{
	const char *colon = strchr(key, ':');
	size_t n = colon ? (size_t)(colon - key) : strlen(key);

	snprintf(stage, slen, "%.*s", (int)n, key);
	*lang = colon ? colon + 1 : "";
}

/* One gauge per stage and language from an object keyed like "stages". */
static void
metrics_per_stage(struct buf *b, const char *name, const char *help,
		  json_t *obj)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj) || json_object_size(obj) == 0)
		return;
	metrics_family(b, name, "gauge", help);
	json_object_foreach(obj, key, v) {
		char stage[32];
		const char *lang, *labels[4];
		metrics_stage_split(key, stage, sizeof(stage), &lang);
		labels[0] = "stage", labels[1] = stage;
		labels[2] = "lang", labels[3] = lang;
		metrics_sample(b, name, v, 2, labels);
	}
}

static void
metrics_jobs(struct buf *b, json_t *stages)
{
	const char *key, *status;
	json_t *o, *v;

	metrics_family(b, "mpfarm_jobs", "gauge",
	    "Jobs in the database by stage, target language and status.");
	json_object_foreach(stages, key, o) {
		char stage[32];
		const char *lang, *labels[6];
		metrics_stage_split(key, stage, sizeof(stage), &lang);
		json_object_foreach(o, status, v) {
			labels[0] = "stage", labels[1] = stage;
			labels[2] = "lang", labels[3] = lang;
			labels[4] = "status", labels[5] = status;
			metrics_sample(b, "mpfarm_jobs", v, 3, labels);
		}
	}
}

/* The master's counters per stage of this run: done/failed/retried. */
static void
metrics_run_stages(struct buf *b, json_t *stages)
{
	static const struct { const char *field, *name, *help; } m[] = {
		{ "done", "mpfarm_jobs_completed_total",
		  "Jobs completed by the running master." },
		{ "failed", "mpfarm_jobs_failed_total",
		  "Jobs that ended failed under the running master." },
		{ "retried", "mpfarm_jobs_retried_total",
		  "Failed attempts sent back for a retry by the running master." },
	};
	const char *key;
	json_t *o;

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		metrics_family(b, m[i].name, "counter", m[i].help);
		json_object_foreach(stages, key, o) {
			const char *labels[2] = { "stage", key };
			metrics_sample(b, m[i].name, json_object_get(o, m[i].field),
			    1, labels);
		}
	}
}

static void
metrics_workers(struct buf *b, json_t *slots)
{
	static const char *const states[] = {
		"busy", "idle", "starting", "empty"
	};
	json_t *v;
	size_t i;

	metrics_family(b, "mpfarm_workers", "gauge",
	    "Worker slots of the running master by state.");
	for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
		json_int_t n = 0;
		const char *labels[2] = { "state", states[s] };
		json_array_foreach(slots, i, v) {
			const char *st = json_string_value(json_object_get(v,
			    "state"));
			n += st != NULL && strcmp(st, states[s]) == 0;
		}
		json_t *jn = json_integer(n);
		metrics_sample(b, "mpfarm_workers", jn, 1, labels);
		json_decref(jn);
	}
}

static void
metrics_providers(struct buf *b, json_t *provs)
{
	static const struct { const char *field, *name, *type, *help; } m[] = {
		{ "inflight", "mpfarm_provider_inflight", "gauge",
		  "Requests in flight to the provider." },
		{ "limit", "mpfarm_provider_limit", "gauge",
		  "Concurrency limit of the provider (absent when unlimited)." },
		{ "requests", "mpfarm_provider_requests_total", "counter",
		  "Requests granted to the provider by the running master." },
		{ "rate_limited", "mpfarm_provider_rate_limited_total", "counter",
		  "Answers 429 (too many requests) from the provider." },
		{ "paused_s", "mpfarm_provider_paused_seconds", "gauge",
		  "Seconds left of the pause after a 429." },
	};
	const char *key;
	json_t *o;

	if (!json_is_object(provs) || json_object_size(provs) == 0)
		return;
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		metrics_family(b, m[i].name, m[i].type, m[i].help);
		json_object_foreach(provs, key, o) {
			const char *labels[2] = { "provider", key };
			json_t *v = json_object_get(o, m[i].field);
			if (json_is_number(v))
				metrics_sample(b, m[i].name, v, 1, labels);
		}
	}
}

void
serve_metrics_write(const struct serve_snap *s, struct buf *out)
{
	json_t *st = s->status, *farm = json_object_get(st, "farm");
	bool up = farm != NULL && !json_is_true(json_object_get(farm, "stale"));
	json_t *jup = json_integer(up);

	metrics_one(out, "mpfarm_files", "gauge", "Media files in the database.",
	    json_object_get(st, "files"));
	metrics_jobs(out, json_object_get(st, "stages"));
	metrics_per_stage(out, "mpfarm_jobs_waiting_for_transcript", "Translation "
	    "jobs not started whose transcript is not done yet.",
	    json_object_get(st, "waiting_for_transcript"));
	metrics_per_stage(out, "mpfarm_jobs_waiting_for_retry", "Jobs not "
	    "started that wait for their retry time.",
	    json_object_get(st, "waiting_for_retry"));
	metrics_one(out, "mpfarm_oldest_in_progress_age_seconds", "gauge",
	    "How long the oldest job in progress has been running.",
	    json_object_get(st, "oldest_in_progress_age_s"));
	metrics_one(out, "mpfarm_master_up", "gauge", "1 when a master runs on "
	    "this database and its status file is live, else 0.", jup);
	json_decref(jup);
	if (!up)
		return;
	metrics_one(out, "mpfarm_master_uptime_seconds", "gauge",
	    "Seconds since the running master started.",
	    json_object_get(farm, "uptime_s"));
	metrics_one(out, "mpfarm_status_age_seconds", "gauge",
	    "Age of the master's status file.", json_object_get(farm, "age_s"));
	metrics_one(out, "mpfarm_workers_target", "gauge",
	    "Workers the master keeps running.",
	    json_object_get(farm, "workers_target"));
	metrics_workers(out, json_object_get(farm, "slots"));
	metrics_one(out, "mpfarm_queue_depth", "gauge", "Jobs queued in the "
	    "master, fetched from the database and not yet handed out.",
	    json_object_get(farm, "queue_depth"));
	metrics_one(out, "mpfarm_worker_respawns_total", "counter",
	    "Workers respawned after they died or were recycled.",
	    json_object_get(farm, "respawns"));
	metrics_one(out, "mpfarm_hung_kills_total", "counter",
	    "Workers killed because their job hung.",
	    json_object_get(farm, "hung_kills"));
	metrics_one(out, "mpfarm_jobs_per_second", "gauge",
	    "Jobs completed per second over the last minute.",
	    json_object_get(farm, "rate_per_s"));
	metrics_run_stages(out, json_object_get(farm, "stages"));
	metrics_providers(out, json_object_get(st, "providers"));
}
