/*
 * master_farm.h - the master's private state for `mpfarm run`: the table of
 * worker slots (stable across respawns), the job queue, counters, and the
 * functions the farm's files call on each other.  Everything here is
 * touched only from the libev loop, never from a signal handler.
 */
#ifndef MPFARM_MASTER_FARM_H
#define MPFARM_MASTER_FARM_H

#include <ev.h>
#include "master.h"
#include "master_slot.h"

/* Jobs a busy worker may hold beyond the one it runs: short jobs are
 * then published and claimed several to a transaction. */
#define FARM_AHEAD_MAX  IPC_AHEAD_MAX


struct slot {
	int      idx;
	pid_t    pid;
	unsigned gen;           /* incremented at every spawn into this slot */
	int      fd;            /* channel, -1 when none */
	ev_io    io;
	struct ipc_reader rd;
	enum slot_state state;  /* moved only by farm_slot_event */
	enum slot_kill killed;  /* why the master signalled it, or NONE */
	struct job_ref job;     /* the job it runs; job_id 0 when none */
	int      prov;          /* provider index of the job, -1 */
	struct job_ref ahead[FARM_AHEAD_MAX];   /* sent ahead, in order */
	int      ahead_prov[FARM_AHEAD_MAX];    /* and their providers */
	int64_t  cfg_gen;       /* config generation the worker runs with */
	int      nahead;
	int64_t  avg_job_ms;    /* recent job duration (EWMA), 0 = unknown */
	int64_t  ready_at;      /* mono ms READY came, 0 before */
	int64_t  job_started;   /* mono ms */
	int64_t  last_beat;     /* mono ms */
	int64_t  kill_at;       /* mono ms: SIGKILL after SIGTERM, 0 */
	int64_t  respawn_at;    /* mono ms, when EMPTY */
	int      jobs_done;     /* by the current process */
	int      jobs_limit;    /* recycle after this many (0 = never) */
	int      fails;         /* consecutive abnormal deaths of this slot */
	bool     waiting_token;
	int      prov_wait;     /* provider index it waits a token for */
	int64_t  token_since;   /* mono ms the wait began */
};

/* A job whose release could not be written yet (database busy): retried
 * by the owed timer; the farm does not end while one is owed. */
struct owed {
	struct job_ref job;     /* its lease: a claim of the master's own */
	pid_t   pid;            /* 0: a claim to give back untouched */
	enum job_outcome outcome;
	char    msg[300];
};

struct retiree {                /* an old worker leaving after recycling */
	pid_t pid;
	int   slot;
};

#define FARM_RATE_SECS 60

struct farm_stage_stats {
	int64_t done, failed, retried;
};

struct farm {
	struct config *cfg;
	int64_t cfg_gen;        /* bumped at every HUP reload that took */
	int     argc;
	char  **argv;
	struct ev_loop *loop;
	store_t *st;            /* closed around every fork */
	int     lock_fd;
	pid_t   pid;

	struct slot **slots;
	int     nslots;         /* allocated */
	int     target;         /* workers wanted */
	struct retiree *retirees;
	int     nretirees;

	struct owed *owed;
	int     nowed;

	struct job_ref *queue;
	int     qhead, qlen, qcap;
	bool    dirty;          /* something changed: refill may find work */
	/* PostgreSQL, out of work: waiting for other hosts' jobs
	 * (farm_finished) */
	bool    waited_hosts;   /* waiting_for_hosts logged */
	bool    claims_unsure;  /* a claim failed: it may have committed */
	int64_t wait_since;     /* wall ms the wait began, 0 before */
	int64_t elsewhere;      /* their jobs at the last look */
	int64_t elsewhere_next; /* mono ms of the next look */
	int64_t next_fetch;     /* mono ms: earliest next refill when !dirty */

	/* one timer per purpose; their intervals are named in master_farm.c */
	ev_timer hang_timer;    /* hung and silent workers, TERM escalation */
	ev_timer refill_timer;  /* the timed look for work (and respawns) */
	ev_timer prov_timer;    /* provider pauses and limits */
	ev_timer owed_timer;    /* releases the database refused */
	ev_timer stop_timer;    /* while stopping: grace, kills, the end */
	ev_timer figures_timer; /* progress line and status file */
	ev_timer host_timer;    /* PostgreSQL: heartbeat, silent hosts */
	ev_timer respawn;       /* fires at the earliest slot respawn_at */
	ev_child child;
	ev_signal sigs[8];
	int     log_pipe[2];
	ev_io   log_io;
	struct buf log_partial;

	/* stop state */
	bool    stopping;       /* TERM: no new jobs */
	bool    quitting;       /* QUIT or grace over: kill */
	int64_t stop_deadline;
	int     exit_code;
	bool    any_failed;

	/* counters for USR1, status file and the end summary */
	int64_t started_mono;
	struct farm_stage_stats stage[STAGE_COUNT];
	struct farm_stage_stats total;     /* all stages: farm_outcome_count */
	int64_t respawns, hung_kills, deaths_signal, deaths_exit, broken;
	int64_t rate_ring[FARM_RATE_SECS];
	int64_t rate_sec;       /* mono second of rate_ring's newest bucket */
	int64_t spawn_block_until;   /* farm-wide throttle, mono ms */
	int     early_deaths;        /* consecutive deaths before READY */
	bool    all_ready_logged;
	int64_t total_jobs;     /* for the progress line */
	int64_t jobs_last;      /* highest job id when total_jobs was counted */
	bool    progress;       /* stderr is a terminal */
	int64_t budget_used;    /* jobs started toward --batch-size */
	int64_t budget_reset_at;    /* mono ms: --watch starts a new budget */
};

extern struct farm farm;

/* ---- master_slot.c: the slot table and its state machine ------------ */

/* Move slot s by event ev (job: the job sent, for SLOT_EV_JOB only, else
 * NULL) as the table in master_slot.c says, keep its job bookkeeping in
 * step and log the move (debug).  A pair the table refuses (or a JOB
 * beyond FARM_AHEAD_MAX, a NEXT with nothing sent ahead) is logged as
 * slot_event_refused and changes nothing: returns -1; else 0. */
int  farm_slot_event(struct slot *s, enum slot_event ev,
		     const struct job_ref *job);
/* Whether s holds a job (runs one, or will finish the one it has). */
bool farm_slot_holds_job(const struct slot *s);
/* Slot idx, growing the table with empty slots as needed.  Never NULL
 * (allocation failure aborts, as xcalloc does everywhere). */
struct slot *farm_slot_get(int idx);
/* The slot whose live worker has this pid, or NULL (a retiree, or a
 * process that is not a worker). */
struct slot *farm_slot_by_pid(pid_t pid);
/* Slots holding a job; slots with a process.  Never fail. */
int  farm_busy_count(void);
int  farm_live_count(void);

/* ---- master_spawn.c: starting workers ------------------------------- */

/* Fork a worker into slot s (EMPTY): its channel is watched, the slot
 * is STARTING.  The master's store is closed around the fork and opened
 * again after it.  On failure (socketpair, fork) it is logged, the slot
 * stays EMPTY and -1 is returned; the respawn timer tries again. */
int  farm_slot_spawn(struct slot *s);
/* Bring the live workers toward farm.target: spawn into empty slots whose
 * backoff is over, retire idle or starting workers past the target (busy
 * ones leave after their job), recycle workers past their job limit.
 * Does nothing while the farm stops.  Failures are logged and retried. */
void farm_slots_adjust(void);
/* Arm the respawn timer for the earliest slot respawn_at (or the
 * farm-wide throttle); stopped when no slot waits or the farm stops. */
void farm_respawn_arm(void);

/* ---- master_store.c: the master's own store connection -------------- */

/* Open farm.st again if a fork or an error closed it.  0, or -1 with the
 * error logged (callers treat it as "the database cannot say now"). */
int  farm_store_reopen(void);
/* A store call of the master failed (event: what failed, with the store's
 * error): logged always, except while the PostgreSQL server is away
 * (store_err_transient), when only the first failure of the outage is
 * logged and the rest are counted.  The caller retries on its own
 * schedule (refill, host tick, owed releases). */
void farm_store_failed(const char *event, enum log_level level);
/* A store call of the master succeeded: ends an outage, logging
 * store_reconnected with its length and the failures it swallowed. */
void farm_store_ok(void);
/* The job's media path relative to its scan root, quoted for the file=
 * of a log line (log_quote's rotating buffer); "-" when the database
 * cannot say. */
const char *farm_job_file(int64_t job_id);

/* ---- master_reap.c: a worker died ----------------------------------- */

/* libev's child watcher: a retiree is forgotten, a worker's last words
 * are read, its jobs released with the cause, the slot emptied and
 * scheduled for a respawn (with backoff after repeated deaths; a farm-
 * wide throttle for deaths before READY).  A worker exiting with
 * WORKER_EXIT_CONFIG stops the farm.  Never fails: problems are logged. */
void farm_child_cb(struct ev_loop *loop, ev_child *w, int revents);

/* ---- master_hang.c: making hung workers die ------------------------- */

/* Signal s's worker for reason why (the slot becomes KILLED; a TERM is
 * followed by a KILL after a grace).  Does nothing without a process. */
void farm_slot_kill(struct slot *s, int sig, enum slot_kill why);
/* Kill workers past the job timeout or silent past the heartbeat
 * timeout, and escalate TERMs whose grace is over. */
void farm_hung_check(int64_t now);

/* ---- master_release.c: jobs a worker no longer runs ----------------- */

/* Return a job that slot s's worker no longer runs, fenced by its pid
 * (or by the lease of the master's claim, on PostgreSQL): counted,
 * logged, and when the database refuses the write, owed (kept and
 * retried by farm_owed_retry; the farm does not end while owed). */
void farm_job_release(struct slot *s, const struct job_ref *job,
		      enum job_outcome outcome, const char *msg);
/* Give back jobs the master claimed (PostgreSQL) and no worker adopted,
 * untouched: no attempt counted.  Jobs the worker did adopt are left
 * alone (*given says how many went back).  Owed when the database
 * refuses.  Without a lease (SQLite) nothing was claimed: no-op. */
void farm_jobs_giveback(const struct job_ref *jobs, int n, int *given);
int  farm_held_ids(int64_t **ids);
int  farm_claims_sweep(void);
/* The job a dead worker held, released with the outcome its death
 * means: interrupted (farm stopping), timeout (hung), else crashed;
 * cause says how it ended ("exited with code 3"). */
void farm_job_release_dead(struct slot *s, const struct job_ref *job,
			   const char *cause);
/* Write the owed releases again; those still refused stay owed. */
void farm_owed_retry(void);
/* Remove the temp files worker pid may have left beside job's outputs
 * (never following a link out of the output tree).  Silent on errors. */
void farm_temps_remove(pid_t pid, const struct job_ref *job);

/* ---- master_farm.c: the loop ---------------------------------------- */

/* After a worker spoke: refill the queue if it is empty, hand out jobs,
 * and begin the stop when nothing is left to do.  Never fails. */
void farm_refill_dispatch_or_stop(void);
/* --batch-size: whether N jobs were started already (never when the
 * option is off); farm_budget_take counts one start, false when spent. */
bool farm_budget_spent(void);
bool farm_budget_take(void);
/* Make sure the stop timer runs (farm.stopping was set). */
void farm_stop_watch(void);
/* TERM, INT, QUIT, or nothing left (why says which, for the log): no new
 * job; workers finish their current one within the grace (quit: they are
 * killed now).  Never fails; a second call only adds quit. */
void farm_stop_begin(bool quit, const char *why);

/* ---- master_queue.c: the job queue ---------------------------------- */

/* Refill the empty queue from the store when it is due (dirty, or its
 * timed look came) and set when to look next.  A store error is logged
 * and retried after a second. */
/* Empty the queue; on PostgreSQL the jobs it held (claims of this
 * master's own) go back to the store untouched. */
void farm_queue_clear(void);
void farm_refill(int64_t now);
/* True when nothing is in flight and nothing is left: no job runnable now
 * (even one held back by a paused provider), none waiting for its retry
 * time, no release owed.  Any doubt (a database error) is false. */
bool farm_finished(void);
/* Under --watch, --batch-size's budget starts again every check
 * interval. */
void farm_budget_tick(int64_t now);

/* ---- master_log.c: the master's log and its workers' ---------------- */

/* The --log-file (if any) as the log, and the pipe every worker's stderr
 * goes into, watched by the loop.  -1 with the reason on stderr. */
int  farm_log_open(void);
/* HUP: open the --log-file again (it may have been rotated); on failure
 * the old one stays and log_reopen_failed is logged. */
void farm_log_reopen(void);
/* Forward what the workers' pipe still holds (whole lines).  Never
 * fails; nothing when the pipe was never opened. */
void farm_log_drain(void);
/* Close the pipe and the --log-file; the log goes to stderr again. */
void farm_log_close(void);

/* ---- master_chan.c: the channel to each worker ---------------------- */

/* libev's io watcher of a channel: read, dispatch, keep workers fed. */
void farm_chan_cb(struct ev_loop *loop, ev_io *w, int revents);
/* Read and handle what s's worker sent; with drain, read to EOF (the
 * worker is dead, its last words are all there).  -1 when it broke the
 * protocol (it is then killed as broken), else 0 (EOF included: the
 * slot becomes EXITING and the child watcher says how it ended). */
int  farm_chan_read(struct slot *s, bool drain);
/* Send job j, to run with provider prov (registry index), to s (IDLE: it
 * runs it; BUSY: sent ahead).  -1 when the channel refuses it (logged;
 * the caller kills the worker). */
int  farm_job_send(struct slot *s, const struct job_ref *j, int prov);
/* Hand queued jobs to idle workers, then (when none is idle or
 * starting) short jobs ahead to busy ones.  Nothing while stopping. */
void farm_dispatch(void);
/* How many jobs farm_dispatch would hand out now, were they queued: one
 * per idle worker, or (none idle or starting) the room sent-ahead jobs
 * have left.  With worth_it false when that room is only a sliver of the
 * sent-ahead room (no worker idle), so a claim (PostgreSQL) can wait to
 * be a batch rather than one job per DONE. */
int  farm_dispatch_room(bool *worth_it);
/* The farm stops: every idle or busy worker is told SHUTDOWN (it
 * finishes its current job, skips any sent ahead, and exits); one still
 * starting is killed.  Each worker is told once. */
void farm_workers_shutdown(void);

/* ---- master_stats.c: figures ---------------------------------------- */

/* What an outcome adds to the figures of this run. */
enum farm_count {
	FARM_COUNT_DONE,        /* completed */
	FARM_COUNT_FAILED,      /* failed for good (status failed) */
	FARM_COUNT_RETRIED,     /* will run again */
};
/* The one place outcomes are counted: n jobs of stage (0 transcribe,
 * 1 translate) ended as what.  Also the rate, and any_failed. */
void farm_outcome_count(int stage, enum farm_count what, int64_t n);
/* The USR1 line (log event "stats"). */
void farm_stats_log(void);
/* Jobs completed per second over the last minute (or since start). */
double farm_rate_get(void);
/* The terminal progress line, redrawn in place; final: the summary
 * line instead.  Nothing when stderr is not a terminal. */
void farm_progress_show(bool final);
/* Erase the progress line before a log line shares the terminal. */
void farm_progress_clear(void);
/* Replace "<db>.status" with the live figures (JSON) and tell systemd
 * the same in a STATUS= line.  A failure is logged; the old file stays. */
void farm_status_write(void);

/* ---- master_provider.c: farm-wide provider limits -------------------
 * A provider is named by its registry index (common_provider.h); the
 * limits apply only to those whose descriptor says `limited`, the others
 * always may start and get their tokens at once.  None of these fails:
 * store errors are logged where they occur. */
/* The provider the master runs a job of stage/lang with under the current
 * config: its registry index, -1 when none is configured. */
int  farm_prov_of(int stage, const char *lang);
/* True when the farm-wide limits apply to provider prov. */
bool farm_prov_limited(int prov);
/* Read the limits of every limited provider from the config ([NAME]
 * max_concurrency, rate) and clear pauses, counts and waiters. */
void farm_prov_init(void);
/* After a HUP: read the limits again (jobs in flight, pauses, waiters
 * and disabled providers stay as they are). */
void farm_prov_reload(void);
/* May a job of provider prov start now: not disabled, not paused, below
 * its concurrency limit.  True for unlimited providers and prov < 0. */
bool farm_prov_may_start(int prov);
/* How many more jobs of provider prov may start now (farm_prov_may_start
 * counted out): 0 when none, INT_MAX without a limit. */
int  farm_prov_room(int prov);
/* A job of provider prov started / ended (counts jobs in flight; nothing
 * for an unlimited provider or prov < 0). */
void farm_prov_job_start(int prov);
void farm_prov_job_end(int prov);
/* Slot s asks for a request token for provider prov: granted now, or
 * queued until the pause, the rate or the concurrency allow. */
void farm_prov_token_req(struct slot *s, int prov);
/* A worker reported a provider-wide condition (its provider already
 * checked against the job's): adjust the limit, pause or disable. */
void farm_prov_event(const struct ipc_event *e);
/* Periodic: grant what became possible, note providers unblocked. */
void farm_prov_tick(int64_t now);
/* Slot s lost its worker: its job no longer counts, its wait is void. */
void farm_prov_slot_gone(struct slot *s);
/* True when the provider called name is limited and cannot start a job
 * now (paused, full or disabled); false for unknown names. */
bool farm_prov_blocked(const char *name);
/* Fail again the jobs of every disabled provider that came back since. */
void farm_prov_fail_disabled(void);
/* The figures of each provider in use, "NAME_inflight=N ...", appended
 * to b. */
void farm_prov_stats(struct buf *b);
/* The same figures for the status file: {"NAME": {"inflight": N, "limit":
 * N or null when unlimited, "requests": N, "rate_limited": N, "paused_s":
 * N, "disabled": bool}} for each provider in use.  Never NULL. */
struct json_t;
struct json_t *farm_prov_stats_json(void);

#endif
