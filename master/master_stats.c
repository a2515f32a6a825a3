/*
 * master_stats.c - what the farm tells people while it runs: the USR1
 * key=value line, the one-line progress display on a terminal (and the
 * summary line a run ends with there), the jobs/s rate over the last
 * minute, and the live status file "<db>.status" that `mpfarm status`
 * reads (JSON, replaced atomically about once a second).
 */
#include "master_farm.h"
#include "master_notify.h"
#include "common_store_audit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool progress_shown;

static void
farm_rate_roll(void)
{
	int64_t sec = time_mono_ms() / MS_PER_S;

	if (farm.rate_sec == 0)
		farm.rate_sec = sec;
	while (farm.rate_sec < sec) {
		farm.rate_sec++;
		farm.rate_ring[farm.rate_sec % FARM_RATE_SECS] = 0;
		if (sec - farm.rate_sec > FARM_RATE_SECS)
			farm.rate_sec = sec - FARM_RATE_SECS;
	}
}

static void
farm_rate_add(int64_t n)
{
	farm_rate_roll();
	farm.rate_ring[farm.rate_sec % FARM_RATE_SECS] += n;
}

void
farm_outcome_count(int stage, enum farm_count what, int64_t n)
{
	struct farm_stage_stats *st = &farm.stage[stage], *all = &farm.total;

	switch (what) {
	case FARM_COUNT_DONE:
		st->done += n;
		all->done += n;
		farm_rate_add(n);
		break;
	case FARM_COUNT_FAILED:
		st->failed += n;
		all->failed += n;
		if (n > 0)
			farm.any_failed = true;
		break;
	case FARM_COUNT_RETRIED:
		st->retried += n;
		all->retried += n;
		break;
	}
}

/* Jobs per second over the last minute (or since start, if shorter). */
double
farm_rate_get(void)
{
	int64_t sum = 0, up = (time_mono_ms() - farm.started_mono) /
	    MS_PER_S;

	farm_rate_roll();
	for (int i = 0; i < FARM_RATE_SECS; i++)
		sum += farm.rate_ring[i];
	if (up < 1)
		up = 1;
	return (double)sum / (double)(up < FARM_RATE_SECS ? up : FARM_RATE_SECS);
}

/* The farm's live figures at one moment, taken once and then rendered:
 * as the status file's JSON, the USR1 key=value line and systemd's
 * STATUS= line, so the three never disagree. */
struct farm_figures {
	int64_t uptime_s;
	int     target, live, busy;
	int     queue_depth;
	double  rate_per_s;
};

static void
farm_figures_take(struct farm_figures *f)
{
	f->uptime_s = (time_mono_ms() - farm.started_mono) / MS_PER_S;
	f->target = farm.target;
	f->live = farm_live_count();
	f->busy = farm_busy_count();
	f->queue_depth = farm.qlen;
	f->rate_per_s = farm_rate_get();
}

void
farm_stats_log(void)
{
	struct farm_figures f;
	struct buf pb;

	farm_figures_take(&f);
	buf_init(&pb);
	farm_prov_stats(&pb);
	log_info("stats", "uptime_s=%lld workers_target=%d workers_live=%d "
	    "workers_busy=%d workers_idle=%d "
	    "transcribe_done=%lld transcribe_failed=%lld transcribe_retried=%lld "
	    "translate_done=%lld translate_failed=%lld translate_retried=%lld "
	    "in_flight=%d queue_depth=%d respawns=%lld deaths_signal=%lld "
	    "deaths_exit=%lld broken=%lld hung_kills=%lld rate_per_s=%.2f%s%s",
	    (long long)f.uptime_s, f.target, f.live, f.busy, f.live - f.busy,
	    (long long)farm.stage[0].done, (long long)farm.stage[0].failed,
	    (long long)farm.stage[0].retried, (long long)farm.stage[1].done,
	    (long long)farm.stage[1].failed, (long long)farm.stage[1].retried,
	    f.busy, f.queue_depth, (long long)farm.respawns,
	    (long long)farm.deaths_signal, (long long)farm.deaths_exit,
	    (long long)farm.broken, (long long)farm.hung_kills, f.rate_per_s,
	    pb.len ? " " : "", pb.len ? pb.data : "");
	buf_free(&pb);
}

void
farm_progress_clear(void)
{
	if (progress_shown) {
		(void)!write(2, "\r\033[K", 4);
		progress_shown = false;
	}
}

/* The progress line's total: what this run already finished plus what
 * it still has to do.  Counted again whenever jobs were added (a scan
 * while the farm runs, under --watch or not), which the highest job id
 * tells at the cost of one index lookup. */
static void
farm_progress_total(void)
{
	struct store_counts c;
	int64_t last = 0, total;

	if (farm.st == NULL || store_audit_jobs_last(farm.st, &last) < 0 ||
	    (last == farm.jobs_last && farm.total_jobs > 0))
		return;
	if (store_counts_get(farm.st, &c) < 0)
		return;
	farm.jobs_last = last;
	total = farm.total.done + farm.total.failed;
	for (int i = 0; i < c.nstages; i++)
		if (config_wants(farm.cfg, c.stages[i].stage, c.stages[i].lang))
			total += c.stages[i].n[JOB_ST_NOT_STARTED] +
			    c.stages[i].n[JOB_ST_IN_PROGRESS];
	store_counts_free(&c);
	/* never down: a job done that the loop has not heard of yet is in
	 * neither part of the sum */
	if (total > farm.total_jobs)
		farm.total_jobs = total;
}

/* "1h02m", "3m20s", "42s" */
static void
farm_eta_format(int64_t s, char *out, size_t len)
{
	if (s >= 3600)
		snprintf(out, len, "%lldh%02lldm", (long long)(s / 3600),
		    (long long)(s % 3600 / 60));
	else if (s >= 60)
		snprintf(out, len, "%lldm%02llds", (long long)(s / 60),
		    (long long)(s % 60));
	else
		snprintf(out, len, "%llds", (long long)s);
}

/* The line a run ends with on a terminal: what it did, how fast. */
static void
farm_progress_summary(void)
{
	int64_t done = farm.total.done;
	int64_t failed = farm.total.failed;
	double secs = (double)(time_mono_ms() - farm.started_mono) /
	    MS_PER_S;
	char line[200];

	if (done + failed == 0)
		return;         /* the "nothing to do" message says why */
	snprintf(line, sizeof(line), "mpfarm: %lld completed, %lld failed in "
	    "%.*f s (%.1f jobs/s)\n", (long long)done, (long long)failed,
	    secs < 10 ? 1 : 0, secs, secs > 0 ? (double)done / secs : 0.0);
	(void)!write(2, line, strlen(line));
}

/* done/total, failed, rate and ETA on one terminal line, redrawn in
 * place by the figures timer; at the end, the summary line instead. */
void
farm_progress_show(bool final)
{
	int64_t done, failed, left;
	char line[240], eta[32] = "-";
	double rate;

	if (!farm.progress)
		return;
	if (final) {
		farm_progress_clear();
		farm_progress_summary();
		return;
	}
	farm_progress_total();
	done = farm.total.done;
	failed = farm.total.failed;
	left = farm.total_jobs - done - failed;
	rate = farm_rate_get();
	if (rate > 0 && left > 0)
		farm_eta_format((int64_t)((double)left / rate + 0.5), eta,
		    sizeof(eta));
	else if (left <= 0)
		snprintf(eta, sizeof(eta), "0s");
	snprintf(line, sizeof(line), "\r\033[K%lld/%lld jobs done, %lld failed, "
	    "%.1f jobs/s, ETA %s", (long long)done, (long long)farm.total_jobs,
	    (long long)failed, rate, eta);
	(void)!write(2, line, strlen(line));
	progress_shown = true;
}

/* Replace `path` whole: a fresh temp made with mkstemp beside it (never
 * a fixed name a link could be planted at), then rename, which replaces
 * whatever is at `path` without following it. */
static void
farm_status_replace(const char *path, json_t *o)
{
	char *tmp = xasprintf("%s.XXXXXX", path);
	char *text = json_dumps(o, JSON_COMPACT);
	int fd = mkostemp(tmp, O_CLOEXEC);
	size_t len = text ? strlen(text) : 0, off = 0;

	if (fd < 0 || text == NULL) {
		log_warn("status_write_failed", "file=%s error=%s",
		    log_quote(path), fd < 0 ? strerror(errno) : "json");
		goto out;
	}
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break;
		off += (size_t)w;
	}
	/* readable like the database beside it, not only by its owner */
	bool ok = off == len && fchmod(fd, 0644) == 0;
	if (close(fd) < 0 || !ok || rename(tmp, path) < 0)
		unlink(tmp);
	fd = -1;
out:
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	}
	free(text);
	free(tmp);
}

void
farm_status_write(void)
{
	int64_t now = time_mono_ms();
	struct farm_figures f;
	json_t *o, *slots, *stages;
	char *path, line[200];

	farm_figures_take(&f);
	o = json_object();
	json_object_set_new(o, "pid", json_integer(farm.pid));
	json_object_set_new(o, "updated_at_ms", json_integer(time_wall_ms()));
	json_object_set_new(o, "uptime_s", json_integer(f.uptime_s));
	json_object_set_new(o, "workers_target", json_integer(f.target));
	json_object_set_new(o, "workers_live", json_integer(f.live));
	json_object_set_new(o, "workers_busy", json_integer(f.busy));
	json_object_set_new(o, "queue_depth", json_integer(f.queue_depth));
	json_object_set_new(o, "respawns", json_integer(farm.respawns));
	json_object_set_new(o, "hung_kills", json_integer(farm.hung_kills));
	json_object_set_new(o, "rate_per_s", json_real(f.rate_per_s));
	json_object_set_new(o, "stopping", json_boolean(farm.stopping));
	stages = json_object();
	for (int st = 0; st < STAGE_COUNT; st++)
		json_object_set_new(stages, job_stage_name(st), json_pack("{sIsIsI}",
		    "done", (json_int_t)farm.stage[st].done,
		    "failed", (json_int_t)farm.stage[st].failed,
		    "retried", (json_int_t)farm.stage[st].retried));
	json_object_set_new(o, "stages", stages);
	slots = json_array();
	for (int i = 0; i < farm.nslots; i++) {
		struct slot *s = farm.slots[i];
		bool held = farm_slot_holds_job(s);
		json_t *so = json_pack("{sisIsssi}", "slot", s->idx,
		    "pid", (json_int_t)s->pid, "state", slot_state_shown(s->state,
		    held), "jobs_done", s->jobs_done);
		if (held) {
			json_object_set_new(so, "job", json_integer(s->job.job_id));
			json_object_set_new(so, "job_age_s",
			    json_integer((now - s->job_started) / MS_PER_S));
		}
		json_array_append_new(slots, so);
	}
	json_object_set_new(o, "slots", slots);
	json_object_set_new(o, "providers", farm_prov_stats_json());
	snprintf(line, sizeof(line), "STATUS=workers %d/%d busy %d, done %lld, "
	    "failed %lld, %.1f jobs/s", f.live, f.target, f.busy,
	    (long long)farm.total.done, (long long)farm.total.failed,
	    f.rate_per_s);
	(void)master_notify_send(line);
	path = master_status_path(farm.cfg->db);
	if (path != NULL) {
		farm_status_replace(path, o);
	} else {
		/* PostgreSQL: the host row's next heartbeat carries them */
		char *js = json_dumps(o, JSON_COMPACT);
		store_host_figures_set(js);
		free(js);
	}
	free(path);
	json_decref(o);
}
