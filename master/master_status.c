/*
 * master_status.c - `mpfarm status [--json]`: counts per stage and status,
 * laid out like the older tooling's "Current Status" report so its users
 * read it at a glance, plus what that report never said: how many
 * translations wait for their transcript, how many jobs wait for a retry,
 * and how long the oldest running job has been at it.  The store is opened
 * read only, so status works beside a running farm.  When a master runs,
 * its live figures come from the status file it refreshes ("<db>.status").
 */
#include "master.h"
#include "common_db.h"
#include "common_store_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The status file a master writes is a few KiB; anything larger is not
 * one (read no more than this). */
#define STATUS_FILE_MAX (1024 * 1024)

/* "English", "English (en-gb)", or the code itself when unknown. */
char *
master_status_path(const char *db)
{
	/* a URL has no folder to put a file beside: the figures travel in
	 * the master's host row */
	if (db_target_is_pg(db))
		return NULL;
	return xasprintf("%s.status", db);
}

static char *
status_lang_title(const char *code)
{
	const char *name = text_lang_name(code);

	if (name == NULL)
		return xstrdup(code);
	if (code[strcspn(code, "-_")] == '\0')
		return xstrdup(name);
	return xasprintf("%s (%s)", name, code);
}

static char *
status_age(int64_t secs)
{
	if (secs < 0)
		secs = 0;
	if (secs < 60)
		return xasprintf("%llds", (long long)secs);
	if (secs < 3600)
		return xasprintf("%lldm %02llds", (long long)(secs / 60),
		    (long long)(secs % 60));
	if (secs < 86400)
		return xasprintf("%lldh %02lldm", (long long)(secs / 3600),
		    (long long)(secs % 3600 / 60));
	return xasprintf("%lldd %02lldh", (long long)(secs / 86400),
	    (long long)(secs % 86400 / 3600));
}

/*
 * The hook for live figures of a running farm.  The master refreshes
 * "<db>.status", a JSON object with at least "pid"; this reads it and adds
 * "stale": true when that master is gone (it died without removing it)
 * and "age_s", the seconds since it was written.  NULL when there is no
 * status file, it does not parse (a master writes it by rename, so a
 * half-written file is never seen), or it is not a regular file of at
 * most STATUS_FILE_MAX bytes (a link or a FIFO planted there is ignored,
 * never followed nor waited on).  Live means: that pid runs and holds
 * the farm lock.
 */
json_t *
master_status_farm(const char *db)
{
	char *path = master_status_path(db);
	json_error_t jerr;
	struct stat sb;
	json_t *farm = NULL;
	struct buf b;
	char err[512];
	int fd = -1;

	buf_init(&b);
	/* no link followed, and a FIFO planted there neither blocks the open
	 * nor gets read; only a regular file of sane size is read */
	if (path == NULL || (fd = file_open_regular(path, O_RDONLY, 0, err,
	    sizeof(err))) < 0) {
		if (path != NULL && errno != ENOENT)
			log_debug("status_file_skipped", "why=%s", log_quote(err));
		goto out;
	}
	if (fstat(fd, &sb) < 0 || sb.st_size > STATUS_FILE_MAX)
		goto out;
	for (;;) {
		char chunk[8192];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || b.len + (size_t)n > STATUS_FILE_MAX)
			goto out;
		if (n == 0)
			break;
		buf_append(&b, chunk, (size_t)n);
	}
	farm = json_loadb(b.data ? b.data : "", b.len, 0, &jerr);
	if (farm == NULL || !json_is_object(farm)) {
		json_decref(farm);
		farm = NULL;
		goto out;
	}
	json_int_t pid = json_integer_value(json_object_get(farm, "pid"));
	/* a pid alone may have been reused since; the farm lock cannot be
	 * held by a master that is gone */
	pid_t holder = master_lock_holder(db);
	json_object_set_new(farm, "stale", json_boolean(pid <= 0 ||
	    !proc_alive((pid_t)pid) || holder == 0 ||
	    (holder > 0 && holder != (pid_t)pid)));
	json_object_set_new(farm, "age_s",
	    json_integer((json_int_t)(time(NULL) - sb.st_mtime)));
out:
	if (fd >= 0)
		close(fd);
	buf_free(&b);
	free(path);
	return farm;
}

static json_int_t
status_int(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *
status_plural(json_int_t n)
{
	return n == 1 ? "" : "s";
}

/* "Worker 2 (pid 123) is busy with job 45 for 3s, 7 jobs done." */
static void
status_slot_print(json_t *slot)
{
	const char *state = json_string_value(json_object_get(slot, "state"));
	json_int_t pid = status_int(slot, "pid"), done = status_int(slot,
	    "jobs_done");

	printf("- Worker %lld", (long long)status_int(slot, "slot"));
	if (pid > 0)
		printf(" (pid %lld)", (long long)pid);
	if (state != NULL && strcmp(state, "busy") == 0) {
		char *age = status_age(status_int(slot, "job_age_s"));
		printf(" is busy with job %lld for %s", (long long)status_int(slot,
		    "job"), age);
		free(age);
	} else if (state != NULL && strcmp(state, "empty") == 0) {
		printf(" is not running");
	} else {
		printf(" is %s", state ? state : "in an unknown state");
	}
	printf(", %lld job%s done.\n", (long long)done, status_plural(done));
}

/* "openai: 2 requests in flight (at most 4); 120 requests, 3 refused
 * with 429; paused for 5s more." */
static void
status_provider_print(const char *name, json_t *p)
{
	json_int_t inflight = status_int(p, "inflight");
	json_int_t req = status_int(p, "requests");
	json_int_t rl = status_int(p, "rate_limited");
	json_int_t paused = status_int(p, "paused_s");
	json_t *limit = json_object_get(p, "limit");

	printf("- %s: %lld request%s in flight", name, (long long)inflight,
	    status_plural(inflight));
	if (json_is_integer(limit))
		printf(" (at most %lld at a time)",
		    (long long)json_integer_value(limit));
	else
		printf(" (no concurrency limit)");
	printf("; %lld request%s made, %lld answered \"too many requests\" "
	    "(429)", (long long)req, status_plural(req), (long long)rl);
	if (paused > 0)
		printf("; paused for %llds more", (long long)paused);
	if (json_is_true(json_object_get(p, "disabled")))
		printf("; stopped for this run (key or quota refused)");
	printf(".\n");
}

/* The master's live figures as sentences. */
static void
status_farm_print(json_t *farm)
{
	json_int_t pid = status_int(farm, "pid");
	char *age = status_age(status_int(farm, "age_s"));
	char *up = status_age(status_int(farm, "uptime_s"));
	json_t *stages = json_object_get(farm, "stages"), *v;
	json_t *provs = json_object_get(farm, "providers");
	const char *key;
	size_t i;

	printf("\nFarm:\n");
	if (json_is_true(json_object_get(farm, "stale")))
		printf("- The master (pid %lld) is not running: these figures are "
		    "stale (written %s ago).\n", (long long)pid, age);
	else
		printf("- The master (pid %lld) has been running for %s%s "
		    "(figures from %s ago).\n", (long long)pid, up,
		    json_is_true(json_object_get(farm, "stopping")) ?
		    " and is stopping" : "", age);
	printf("- Workers: %lld of %lld running, %lld busy; %lld job%s queued "
	    "in the master.\n", (long long)status_int(farm, "workers_live"),
	    (long long)status_int(farm, "workers_target"),
	    (long long)status_int(farm, "workers_busy"),
	    (long long)status_int(farm, "queue_depth"),
	    status_plural(status_int(farm, "queue_depth")));
	json_object_foreach(stages, key, v)
		printf("- This run, %s: %lld done, %lld failed, %lld to be "
		    "retried.\n", key, (long long)status_int(v, "done"),
		    (long long)status_int(v, "failed"),
		    (long long)status_int(v, "retried"));
	printf("- Rate: %.2f jobs/s over the last minute; %lld worker%s "
	    "respawned, %lld hung job%s killed.\n",
	    json_number_value(json_object_get(farm, "rate_per_s")),
	    (long long)status_int(farm, "respawns"),
	    status_plural(status_int(farm, "respawns")),
	    (long long)status_int(farm, "hung_kills"),
	    status_plural(status_int(farm, "hung_kills")));
	json_array_foreach(json_object_get(farm, "slots"), i, v)
		status_slot_print(v);
	if (json_is_object(provs) && json_object_size(provs) > 0) {
		printf("\nProviders:\n");
		json_object_foreach(provs, key, v)
			status_provider_print(key, v);
	}
	free(up);
	free(age);
}

/* Transcription first, then the target languages in the order the config
 * names them (the order users think in), then languages no longer
 * configured.  Returns a malloc'd permutation of c->stages. */
static int *
status_stage_order(const struct config *cfg, const struct store_counts *c)
{
	int *order = xmalloc(((size_t)c->nstages + 1) * sizeof(*order));
	bool *used = xcalloc((size_t)c->nstages + 1, sizeof(*used));
	int n = 0;

	for (int i = 0; i < c->nstages; i++)
		if (c->stages[i].stage == STAGE_TRANSCRIBE) {
			order[n++] = i;
			used[i] = true;
		}
	for (int l = 0; l < cfg->nlangs; l++)
		for (int i = 0; i < c->nstages; i++)
			if (!used[i] && strcmp(c->stages[i].lang, cfg->langs[l]) == 0) {
				order[n++] = i;
				used[i] = true;
			}
	for (int i = 0; i < c->nstages; i++)
		if (!used[i])
			order[n++] = i;
	free(used);
	return order;
}

static void
status_print_text(const struct config *cfg, const struct store_counts *c,
		  json_t *farm)
{
	static const struct { enum job_status st; const char *label; } rows[] = {
		{ JOB_ST_COMPLETED, "Completed" },
		{ JOB_ST_NOT_STARTED, "Not started" },
		{ JOB_ST_IN_PROGRESS, "In progress" },
		{ JOB_ST_FAILED, "Failed" },
	};
	char when[64];
	time_t now = time(NULL);
	struct tm tm;
	int *order = status_stage_order(cfg, c);

	localtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", &tm);
	printf("Current Status of %s (%s)\n\n", log_quote(cfg->db), when);
	printf("Files: %lld\n", (long long)c->files);

	for (int i = 0; i < c->nstages; i++) {
		const struct store_stage_counts *sc = &c->stages[order[i]];
		char *title = sc->stage == STAGE_TRANSCRIBE ? xstrdup("Transcription")
		    : status_lang_title(sc->lang);

		printf("\n%s%s:%s\n", title, sc->stage == STAGE_TRANSCRIBE ? ""
		    : " Translations", sc->stage == STAGE_TRANSLATE &&
		    !config_has_lang(cfg, sc->lang) ? " (not a configured "
		    "target language)" : "");
		for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
			int64_t n = sc->n[rows[r].st];
			printf("- %s: %lld file%s", rows[r].label, (long long)n,
			    n == 1 ? "" : "s");
			if (rows[r].st == JOB_ST_NOT_STARTED &&
			    (sc->waiting > 0 || sc->delayed > 0)) {
				const char *sep = " (";
				if (sc->waiting > 0) {
					printf("%s%lld waiting for transcript", sep,
					    (long long)sc->waiting);
					sep = ", ";
				}
				if (sc->delayed > 0)
					printf("%s%lld waiting for retry", sep,
					    (long long)sc->delayed);
				printf(")");
			}
			printf("\n");
		}
		free(title);
	}
	if (c->oldest_in_progress_ms > 0) {
		char *age = status_age((time_wall_ms() - c->oldest_in_progress_ms)
		    / MS_PER_S);
		printf("\nOldest job in progress: running for %s\n", age);
		free(age);
	}
	if (farm != NULL)
		status_farm_print(farm);
	free(order);
}

json_t *
master_status_json(const struct config *cfg, const struct store_counts *c,
		   json_t *farm)
{
	json_t *root = json_object(), *stages = json_object();
	json_t *waiting = json_object(), *delayed = json_object();
	int64_t tw = 0, td = 0;

	/* a path that is not UTF-8 cannot be a JSON string: show it escaped */
	json_t *db = json_string(cfg->db);
	json_object_set_new(root, "db", db ? db : json_string(log_quote(cfg->db)));
	json_object_set_new(root, "files", json_integer(c->files));
	for (int i = 0; i < c->nstages; i++) {
		const struct store_stage_counts *sc = &c->stages[i];
		char key[JOB_STAGE_KEY_MAX];
		json_t *o = json_object();

		job_stage_key(sc->stage, sc->lang, key, sizeof(key));
		for (int s = 0; s < JOB_ST_COUNT; s++)
			json_object_set_new(o, job_status_name((enum job_status)s),
			    json_integer(sc->n[s]));
		json_object_set_new(stages, key, o);
		/* extras live outside "stages" so a stage's values add up to
		 * its job count */
		if (sc->stage == STAGE_TRANSLATE)
			json_object_set_new(waiting, key, json_integer(sc->waiting));
		json_object_set_new(delayed, key, json_integer(sc->delayed));
		tw += sc->waiting;
		td += sc->delayed;
	}
	json_object_set_new(root, "stages", stages);
	json_object_set_new(root, "waiting_for_transcript", waiting);
	json_object_set_new(root, "waiting_for_retry", delayed);
	json_object_set_new(root, "waiting", json_integer(tw));
	json_object_set_new(root, "delayed", json_integer(td));
	json_object_set_new(root, "oldest_in_progress_age_s",
	    c->oldest_in_progress_ms > 0 ? json_integer(
	    (time_wall_ms() - c->oldest_in_progress_ms) / MS_PER_S) :
	    json_null());
	/* per provider, an object of objects; {} without a live master */
	json_t *provs = farm ? json_object_get(farm, "providers") : NULL;
	json_object_set_new(root, "providers", json_is_object(provs) ?
	    json_deep_copy(provs) : json_object());
	if (farm != NULL)
		json_object_set(root, "farm", farm);
	return root;
}

/* PostgreSQL: every registered master (host) with the figures its last
 * heartbeat carried, as the status file holds them for SQLite, plus
 * host_id, hostname, age_s and stale (silent past host_timeout).  NULL
 * when there is none. */
static json_t *
status_hosts(store_t *st)
{
	struct store_host *h = NULL;
	int64_t now = time_wall_ms();
	json_t *arr;
	int n = 0;

	if (store_hosts_list(st, &h, &n) < 0 || n == 0) {
		store_hosts_free(h, n);
		return NULL;
	}
	arr = json_array();
	for (int i = 0; i < n; i++) {
		json_t *o = json_loads(h[i].figures, 0, NULL);
		if (!json_is_object(o)) {
			json_decref(o);
			o = json_object();
			json_object_set_new(o, "pid", json_integer(h[i].pid));
		}
		json_object_set_new(o, "host_id", json_string(h[i].id));
		json_object_set_new(o, "hostname", json_string(h[i].hostname));
		json_object_set_new(o, "stale", json_boolean(!h[i].live));
		json_object_set_new(o, "age_s",
		    json_integer((now - h[i].seen_at_ms) / 1000));
		json_array_append_new(arr, o);
	}
	store_hosts_free(h, n);
	return arr;
}

static void
status_hosts_print(json_t *hosts)
{
	json_t *v;
	size_t i;

	json_array_foreach(hosts, i, v) {
		printf("\nHost %s (%s):", json_string_value(json_object_get(v,
		    "hostname")), json_string_value(json_object_get(v,
		    "host_id")));
		if (json_object_get(v, "slots") != NULL) {
			status_farm_print(v);
		} else {
			printf("\n- The master (pid %lld) has sent no figures yet "
			    "(heartbeat %llds ago).\n",
			    (long long)status_int(v, "pid"),
			    (long long)status_int(v, "age_s"));
		}
	}
}

int
master_status_run(struct config *cfg)
{
	struct store_counts c = { 0 };
	store_t *st = NULL;
	json_t *farm = NULL, *hosts = NULL;
	int ex = EXIT_FATAL;

	if (store_audit_db_missing(cfg->db, "status"))
		goto out;
	if ((st = master_store_open(cfg, STORE_READONLY)) == NULL)
		goto out;
	if (store_counts_get(st, &c) < 0) {
		say_err("status: %s", store_errmsg(st));
		goto out;
	}
	farm = master_status_farm(cfg->db);
	hosts = status_hosts(st);
	if (cfg->json) {
		if (hosts != NULL && farm == NULL)
			farm = json_incref(json_array_get(hosts, 0));
		json_t *root = master_status_json(cfg, &c, farm);
		if (hosts != NULL)
			json_object_set(root, "hosts", hosts);
		int rc = json_dumpf(root, stdout, JSON_INDENT(2) |
		    JSON_ENSURE_ASCII);
		json_decref(root);
		printf("\n");
		if (rc < 0)
			goto out;
	} else {
		status_print_text(cfg, &c, hosts != NULL ? NULL : farm);
		if (hosts != NULL)
			status_hosts_print(hosts);
	}
	ex = EXIT_OK;
out:
	if (fflush(stdout) != 0 && ex == EXIT_OK) {
		say_err("status: cannot write the report: %s", strerror(errno));
		ex = EXIT_FATAL;
	}
	json_decref(farm);
	json_decref(hosts);
	store_counts_free(&c);
	if (st != NULL)
		store_close(st);
	return ex;
}
