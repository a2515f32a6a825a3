/*
 * master_farm.c - `mpfarm run`: start-up checks (before any worker, so a
 * usage or config error exits 2 with nothing started), the farm lock, crash
 * recovery, the libev loop with its signals and timers (one per purpose)
 * and the stop.  The job queue (master_queue.c), workers, the channel,
 * reaping and the log (master_log.c) live in their own files.
 */
#include "master_farm.h"
#include "worker_provider.h"
#include "master_notify.h"
#include "common_store_audit.h"
#include "common_tree.h"
#include "common_db.h"

#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct farm farm;

/* The loop's timers, one per purpose (seconds).  Hang checks and the
 * stop watch are as fine as a TERM's escalation needs; the refill's
 * timed look (a job's retry time come, a respawn, --batch-size under
 * --watch) backs up the refills a DONE triggers at once; the figures
 * (progress line, status file) are for people, about once a second
 * (the first soon after the start). */
#define FARM_HANG_CHECK_S   0.1
#define FARM_REFILL_S       0.1
#define FARM_PROV_TICK_S    0.1
#define FARM_OWED_RETRY_S   0.1
#define FARM_STOP_CHECK_S   0.1
#define FARM_FIGURES_S      1.0
#define FARM_HOST_TICK_S    0.1     /* the store beats once a second */
#define FARM_FIGURES_FIRST_S 0.1

/* The engines' leftovers get this long to end when the farm exits. */
#define FARM_LEFTOVERS_END_MS 2000

static int farm_config_check(const struct config *cfg, char *err,
			     size_t errlen);

static const int farm_sigs[] = {
	SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGTTIN, SIGTTOU
};

void
farm_stop_begin(bool quit, const char *why)
{
	int64_t now = time_mono_ms();

	if (!farm.stopping) {
		(void)master_notify_send("STOPPING=1");
		farm.stopping = true;
		farm.stop_deadline = now + (int64_t)farm.cfg->grace * MS_PER_S;
		log_info("farm_stopping", "reason=%s grace_s=%d busy=%d", why,
		    farm.cfg->grace, farm_busy_count());
	}
	if (quit && !farm.quitting) {
		farm.quitting = true;
		log_info("farm_quitting", "reason=%s busy=%d", why, farm_busy_count());
	}
	farm_queue_clear();
	farm_workers_shutdown();
	farm_stop_watch();
}

static void
farm_hang_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	farm_hung_check(time_mono_ms());
}

static void
farm_prov_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	farm_prov_tick(time_mono_ms());
}

static void
farm_owed_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (farm.nowed > 0)
		farm_owed_retry();
}

/* PostgreSQL: this host's heartbeat, and the jobs of hosts gone silent
 * taken back (the store paces both; nothing on SQLite). */
static void
farm_host_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	int taken = 0;

	(void)loop;
	(void)w;
	(void)revents;
	if (farm.st == NULL)
		return;
	if (store_host_tick(farm.st, farm.cfg->max_attempts, &taken) < 0)
		farm_store_failed("host_tick_failed", LOG_WARN);
	else
		farm_store_ok();
	if (taken > 0) {
		log_info("recovered", "jobs=%d note=in-progress-on-a-silent-host",
		    taken);
		farm.dirty = true;
	}
}

/* While stopping: the grace ends in kills (QUIT now), workers are told
 * to leave, and the loop ends once the last worker is gone and nothing
 * is owed.  Owed releases get until the grace is over plus one busy
 * timeout; after that the next run's recovery returns them. */
static void
farm_stop_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	int64_t now = time_mono_ms();

	(void)w;
	(void)revents;
	if (!farm.quitting && now >= farm.stop_deadline) {
		log_warn("grace_over", "busy=%d", farm_busy_count());
		farm.quitting = true;
	}
	if (farm.quitting) {
		for (int i = 0; i < farm.nslots; i++)
			if (farm.slots[i]->pid > 0 &&
			    farm.slots[i]->killed != SLOT_KILL_STOPPED)
				farm_slot_kill(farm.slots[i], SIGKILL,
				    SLOT_KILL_STOPPED);
		for (int i = 0; i < farm.nretirees; i++)
			kill(farm.retirees[i].pid, SIGKILL);
	}
	farm_workers_shutdown();
	if (farm_live_count() == 0 && farm.nretirees == 0 &&
	    (farm.nowed == 0 || now > farm.stop_deadline +
	    farm.cfg->busy_timeout_ms))
		ev_break(loop, EVBREAK_ALL);
}

void
farm_stop_watch(void)
{
	if (farm.loop != NULL && !ev_is_active(&farm.stop_timer))
		ev_timer_start(farm.loop, &farm.stop_timer);
}

/* The timed look for work: the --watch budget, respawns and recycling,
 * the refill, handing out jobs, and the end when nothing is left. */
static void
farm_refill_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	int64_t now = time_mono_ms();

	(void)loop;
	(void)w;
	(void)revents;
	if (farm.stopping)
		return;
	farm_budget_tick(now);
	farm_slots_adjust();
	farm_refill(now);
	farm_dispatch();
	if (farm_finished())
		farm_stop_begin(false, "done");
}

static void
farm_figures_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	farm_progress_show(false);
	farm_status_write();
}

/* Every timer at its own interval; the stop watch starts with the stop. */
static void
farm_timers_start(void)
{
	static const struct {
		size_t off;
		void (*cb)(struct ev_loop *, ev_timer *, int);
		double after, every;
	} timers[] = {
		{ offsetof(struct farm, hang_timer), farm_hang_cb,
		  FARM_HANG_CHECK_S, FARM_HANG_CHECK_S },
		{ offsetof(struct farm, refill_timer), farm_refill_cb,
		  FARM_REFILL_S, FARM_REFILL_S },
		{ offsetof(struct farm, prov_timer), farm_prov_cb,
		  FARM_PROV_TICK_S, FARM_PROV_TICK_S },
		{ offsetof(struct farm, owed_timer), farm_owed_cb,
		  FARM_OWED_RETRY_S, FARM_OWED_RETRY_S },
		{ offsetof(struct farm, figures_timer), farm_figures_cb,
		  FARM_FIGURES_FIRST_S, FARM_FIGURES_S },
		{ offsetof(struct farm, host_timer), farm_host_cb,
		  FARM_HOST_TICK_S, FARM_HOST_TICK_S },
	};

	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
		ev_timer *t = (ev_timer *)((char *)&farm + timers[i].off);
		ev_timer_init(t, timers[i].cb, timers[i].after, timers[i].every);
		ev_timer_start(farm.loop, t);
	}
	ev_timer_init(&farm.stop_timer, farm_stop_cb, FARM_STOP_CHECK_S,
	    FARM_STOP_CHECK_S);
	if (farm.stopping)
		ev_timer_start(farm.loop, &farm.stop_timer);
}

/* Signals, taken in the loop: TERM/INT stop (a second one: do not wait),
 * QUIT stops now, USR1 logs the figures, HUP reloads the config and
 * reopens the log file, TTIN/TTOU move the worker target by one. */
static void
farm_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)revents;
	switch (w->signum) {
	case SIGTERM:
	case SIGINT:
		/* a second TERM/INT means: do not wait */
		farm_stop_begin(farm.stopping, w->signum == SIGTERM ? "TERM" : "INT");
		break;
	case SIGQUIT:
		farm_stop_begin(true, "QUIT");
		break;
	case SIGUSR1:
		farm_stats_log();
		break;
	case SIGHUP:
		if (config_reload(farm.cfg, farm.argc, farm.argv,
		    farm_config_check) == 0) {
			/* workers hold the old config: each is replaced once
			 * idle, and none gets a job decided under the new one */
			farm.cfg_gen++;
			farm.target = farm.cfg->workers;
			farm_prov_reload();
			log_info("config_reloaded", "workers=%d job_timeout=%d "
			    "config_gen=%lld", farm.cfg->workers,
			    farm.cfg->job_timeout, (long long)farm.cfg_gen);
			farm_slots_adjust();
		}
		farm_log_reopen();
		break;
	case SIGTTIN:
		farm.target++;
		log_info("workers_target", "target=%d by=TTIN", farm.target);
		farm_slots_adjust();
		break;
	case SIGTTOU:
		if (farm.target > 1)
			farm.target--;
		log_info("workers_target", "target=%d by=TTOU", farm.target);
		farm_slots_adjust();
		break;
	}
}

struct farm_first_problem {
	char  *err;
	size_t errlen;
	int    n;
};

static void
farm_first_problem(void *arg, const char *what, const char *msg, bool ok)
{
	struct farm_first_problem *fp = arg;

	if (ok || fp->n++ > 0)
		return;
	if (strcmp(what, "workers") == 0)
		snprintf(fp->err, fp->errlen, "%s", msg);
	else
		snprintf(fp->err, fp->errlen, "%s: %s", what, msg);
}

/* What a config must satisfy to run a farm: at least one worker, every
 * provider it uses built in and ready (keys, commands): the checks of
 * `mpfarm config`.  At start-up and for a HUP reload alike. */
static int
farm_config_check(const struct config *cfg, char *err, size_t errlen)
{
	struct farm_first_problem fp = { err, errlen, 0 };

	return master_config_check(cfg, MASTER_CHECK_CONFIG, farm_first_problem,
	    &fp) > 0 ?
	    -1 : 0;
}

/* Everything that can make the run fail is checked here, before any
 * worker exists: exit 2 on usage and config errors, an unusable output
 * tree included. */
static int
farm_preflight(void)
{
	struct config *cfg = farm.cfg;
	char err[1024];

	struct farm_first_problem fp = { err, sizeof(err), 0 };

	if (master_config_check(cfg, MASTER_CHECK_CREATE, farm_first_problem,
	    &fp) > 0) {
		say_err("%s", err);
		return -1;
	}
	return 0;
}

/* SIGPIPE ignored (a dead worker's channel); the others as watchers. */
static void
farm_signals_start(void)
{
	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(farm_sigs) / sizeof(farm_sigs[0]); i++) {
		ev_signal_init(&farm.sigs[i], farm_signal_cb, farm_sigs[i]);
		ev_signal_start(farm.loop, &farm.sigs[i]);
	}
}

/* What the user should know when the run ends with nothing done. */
static void
farm_explain_idle(void)
{
	struct store_counts c;
	int64_t waiting = 0, failed = 0, done = 0;

	if (store_counts_get(farm.st, &c) < 0)
		return;
	for (int i = 0; i < c.nstages; i++) {
		struct store_stage_counts *s = &c.stages[i];
		if (!config_wants(farm.cfg, s->stage, s->lang))
			continue;
		waiting += s->waiting;
		failed += s->n[JOB_ST_FAILED];
		done += s->n[JOB_ST_COMPLETED];
	}
	if (c.files == 0)
		say_err("nothing to do: no media files registered yet "
		    "(mpfarm scan DIR adds them)");
	else
		say_err("nothing to do: %lld completed, %lld translations wait "
		    "for their transcripts, %lld jobs failed%s",
		    (long long)done, (long long)waiting, (long long)failed,
		    failed ? " (mpfarm retry runs them again)" : "");
	store_counts_free(&c);
}

/* farm_start names the provider of every stage and language this run
 * works on ("none" when the config names none). */
static void
farm_start_log(void)
{
	const struct config *cfg = farm.cfg;
	const char *p, *lang;
	struct buf b;
	int stage;

	buf_init(&b);
	for (int i = 0; config_stage_lang(cfg, i, &stage, &lang); i++) {
		if (!config_wants(cfg, stage, lang))
			continue;
		p = config_provider(cfg, stage, lang);
		buf_printf(&b, " %s%s%s=%s", job_stage_name(stage),
		    lang[0] ? "." : "", lang, p != NULL ? p : "none");
	}
	buf_terminate(&b);
	log_info("farm_start", "workers=%d db=%s output=%s stage=%s%s",
	    farm.target, log_quote(cfg->db), log_quote(cfg->output),
	    cfg->stage_mask == STAGE_MASK_ALL ? "all" :
	    cfg->stage_mask == STAGE_MASK_TRANSCRIBE ? "transcribe" : "translate",
	    b.data != NULL ? b.data : "");
	buf_free(&b);
}

/* For each job a dead farm left in progress: its worker's temp files. */
static int
farm_orphan_temps(const struct job_ref *job, pid_t owner, void *arg)
{
	(void)arg;
	if (owner > 0)
		farm_temps_remove(owner, job);
	return 0;
}

/* `mpfarm run`, in order: the stop signals are held back; preflight
 * (config, providers, output tree: exit 2 before anything starts); the
 * farm lock (one master per database); the store, a stage with work and
 * no provider (exit 2), temp files and in-progress jobs of a dead farm
 * recovered; the loop with its signals, child watcher and timers; no
 * worker at all when there is nothing to do; then ev_run until the stop
 * ends it.  Afterwards: engines' leftovers ended, the summary, owed
 * releases reported (exit 1), failed jobs (exit 3), everything closed,
 * the status file removed and the lock released. */
int
master_farm_run(struct config *cfg, int argc, char **argv)
{
	pid_t holder = 0;
	int n = 0, done_total;
	char err[600];

	sigset_t stopsigs, oldmask;

	/* a TERM that arrives before the loop's watchers exist must wait for
	 * them, not kill the master mid-start */
	sigemptyset(&stopsigs);
	for (size_t i = 0; i < sizeof(farm_sigs) / sizeof(farm_sigs[0]); i++)
		sigaddset(&stopsigs, farm_sigs[i]);
	sigprocmask(SIG_BLOCK, &stopsigs, &oldmask);
	memset(&farm, 0, sizeof(farm));
	farm.cfg = cfg;
	farm.argc = argc;
	farm.argv = argv;
	farm.pid = getpid();
	(void)proc_subreaper_set();     /* engines' leftovers: master_reap.c */
	farm.lock_fd = -1;
	farm.log_pipe[0] = farm.log_pipe[1] = -1;
	farm.exit_code = EXIT_OK;
	if (farm_preflight() < 0)
		return EXIT_USAGE;
	if (master_lock_acquire(cfg->db, &farm.lock_fd, &holder, err,
	    sizeof(err)) < 0) {
		if (holder > 0)
			say_err("another mpfarm (pid %d) is running on %s",
			    (int)holder, cfg->db);
		else
			say_err("cannot lock the database: %s", err);
		return EXIT_FATAL;
	}
	title_set("mpfarm: master %s", cfg->db);
	farm.st = master_store_open(cfg, 0);
	if (farm.st == NULL)
		goto fail;
	if (store_host_register(farm.st, (int64_t)cfg->host_timeout * 1000) < 0) {
		say_err("%s", store_errmsg(farm.st));
		goto fail;
	}
	{
		/* a stage with work and no provider: say how to set one, rather
		 * than fake the work (noop) or leave it silently undone */
		struct farm_first_problem fp = { err, sizeof(err), 0 };
		if (master_config_unprovided(cfg, farm.st, farm_first_problem,
		    &fp) > 0) {
			say_err("%s", err);
			farm.exit_code = EXIT_USAGE;
			goto out;
		}
	}
	/* a dead farm's workers may have left temp files beside the outputs
	 * of the jobs they held: those jobs are about to be recovered */
	(void)store_audit_in_progress_each(farm.st, farm_orphan_temps, NULL);
	if (store_langs_sync(farm.st, (const char (*)[CONFIG_LANG_MAX])cfg->langs,
	    cfg->nlangs) < 0 || store_recover_orphans(farm.st, cfg->max_attempts,
	    &n) < 0) {
		say_err("%s", store_errmsg(farm.st));
		goto fail;
	}
	farm.loop = ev_default_loop(EVFLAG_AUTO);
	if (farm.loop == NULL || farm_log_open() < 0)
		goto fail;
	if (n > 0)
		log_info("recovered", "jobs=%d note=in-progress-from-a-gone-master", n);
	farm.qcap = cfg->fetch_size;
	farm.budget_reset_at = time_mono_ms() + (int64_t)cfg->check_interval *
	    MS_PER_S;
	farm.queue = xcalloc((size_t)farm.qcap, sizeof(*farm.queue));
	farm.dirty = true;
	farm.target = cfg->workers;
	farm.started_mono = time_mono_ms();
	/* the progress line is for a person at a terminal, wherever the log
	 * goes; it is cleared before a log line only when both share it */
	farm.progress = isatty(2);
	if (farm.progress && cfg->log_file == NULL)
		log_set_hook(farm_progress_clear);
	farm_prov_init();
	farm_signals_start();
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	ev_child_init(&farm.child, farm_child_cb, 0, 0);
	ev_child_start(farm.loop, &farm.child);
	farm_timers_start();
	farm_start_log();
	/* a run with nothing to do forks no worker: decided before any */
	if (!cfg->watch) {
		farm_refill(time_mono_ms());
		if (farm_finished())
			farm_stop_begin(false, "done");
	}
	/* the total counted before a worker can finish a job: a job done in
	 * the database whose DONE the loop has not read yet counts nowhere */
	if (!farm.stopping)
		farm_progress_show(false);
	farm_slots_adjust();
	ev_run(farm.loop, 0);
	(void)proc_children_end(FARM_LEFTOVERS_END_MS, NULL);

	farm_progress_show(true);
	done_total = (int)farm.total.done;
	log_info("farm_exit", "completed=%lld failed=%lld retried=%lld respawns=%lld "
	    "hung_kills=%lld", (long long)done_total,
	    (long long)farm.total.failed,
	    (long long)farm.total.retried,
	    (long long)farm.respawns, (long long)farm.hung_kills);
	if (done_total == 0 && !farm.any_failed && farm.st != NULL &&
	    !farm.quitting && farm.exit_code == EXIT_OK)
		farm_explain_idle();
	if (farm.nowed > 0) {
		say_err("%d jobs could not be returned to the database (%s); the "
		    "next mpfarm run recovers them%s", farm.nowed, cfg->db,
		    db_target_is_pg(cfg->db) ? ", or another host after "
		    "host_timeout" : "");
		farm.exit_code = EXIT_FATAL;
	}
	if (farm.exit_code == EXIT_OK && farm.any_failed)
		farm.exit_code = EXIT_JOBFAIL;
	goto out;
fail:
	farm.exit_code = EXIT_FATAL;
out:
	farm_log_drain();
	if (farm.lock_fd >= 0) {
		char *sp = master_status_path(cfg->db);
		unlink(sp);
		free(sp);
	}
	if (farm.st != NULL) {
		/* with releases still owed, the row stays: it goes silent and
		 * another master (or the next one here) returns those jobs */
		if (farm.nowed == 0 && farm_claims_sweep() == 0)
			(void)store_host_unregister(farm.st);
		store_close(farm.st);
	}
	for (int i = 0; i < farm.nslots; i++) {
		if (farm.slots[i]->fd >= 0)
			close(farm.slots[i]->fd);
		free(farm.slots[i]);
	}
	free(farm.slots);
	free(farm.retirees);
	free(farm.owed);
	free(farm.queue);
	farm_log_close();
	master_lock_release(farm.lock_fd);
	if (farm.loop != NULL)
		ev_loop_destroy(farm.loop);
	return farm.exit_code;
}
