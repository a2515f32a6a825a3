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

enum slot_state {
	SLOT_EMPTY = 0,     /* no process (waiting to respawn, or unused) */
	SLOT_STARTING,      /* forked, READY not seen yet */
	SLOT_IDLE,
	SLOT_BUSY,
};

/* Jobs a busy worker may hold beyond the one it runs: short jobs are
 * then published and claimed several to a transaction. */
#define FARM_AHEAD_MAX  IPC_AHEAD_MAX

#define SLOT_F_HUNG     0x01  /* killed by us: job timeout or no heartbeat */
#define SLOT_F_STOPPED  0x02  /* killed by us: farm stopping (QUIT/grace) */
#define SLOT_F_BROKEN   0x04  /* sent a bad frame: killed by us */
#define SLOT_F_RETIRE   0x08  /* leave after the current job (TTOU) */
#define SLOT_F_SHUTDOWN 0x10  /* SHUTDOWN sent: finish the current job */
#define SLOT_F_EOF      0x20  /* channel closed: dying, not yet reaped */

struct slot {
	int      idx;
	pid_t    pid;
	unsigned gen;           /* incremented at every spawn into this slot */
	int      fd;            /* channel, -1 when none */
	ev_io    io;
	struct ipc_reader rd;
	enum slot_state state;
	int      flags;
	struct job_ref job;     /* current job when BUSY */
	int      prov;          /* provider (registry index) of the job, -1 */
	struct job_ref ahead[FARM_AHEAD_MAX];   /* sent ahead, in order */
	int      ahead_prov[FARM_AHEAD_MAX];    /* and their providers */
	int64_t  cfg_gen;       /* config generation the worker runs with */
	int      nahead;
	int64_t  avg_job_ms;    /* recent job duration (EWMA), 0 = unknown */
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
 * from the tick; the farm does not end while one is owed. */
struct owed {
	int64_t job_id;
	pid_t   pid;
	int     stage;
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
	int64_t next_fetch;     /* mono ms: earliest next refill when !dirty */

	ev_timer tick;
	ev_timer respawn;       /* fires at the earliest slot respawn_at */
	bool    reaping;        /* in the child callback: no slot changes */
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
	int64_t respawns, hung_kills, deaths_signal, deaths_exit, broken;
	int64_t rate_ring[FARM_RATE_SECS];
	int64_t rate_sec;       /* mono second of rate_ring's newest bucket */
	int64_t spawn_block_until;   /* farm-wide throttle, mono ms */
	int     early_deaths;        /* consecutive deaths before READY */
	bool    all_ready_logged;
	int64_t total_jobs;     /* for the progress line */
	int64_t jobs_last;      /* highest job id when total_jobs was counted */
	bool    progress;       /* stderr is a terminal */
	int64_t last_status_write;
	int64_t budget_used;    /* jobs started toward --batch-size */
	int64_t budget_reset_at;    /* mono ms: --watch starts a new budget */
};

extern struct farm farm;

/* master_spawn.c */
int  farm_slot_spawn(struct slot *s);
struct slot *farm_slot_get(int idx);
void farm_slots_adjust(void);               /* spawn/retire toward target */
void farm_respawn_arm(void);
int  farm_store_reopen(void);

/* master_reap.c */
void farm_child_cb(struct ev_loop *loop, ev_child *w, int revents);
void farm_slot_kill(struct slot *s, int sig, int flag);
void farm_hung_check(int64_t now);
void farm_job_release(struct slot *s, const struct job_ref *job,
		      enum job_outcome outcome, const char *msg);
void farm_owed_retry(void);
void farm_temps_remove(pid_t pid, const struct job_ref *job);
/* The job's media path relative to its scan root, quoted for the file=
 * of a log line (log_quote's rotating buffer); "-" when the database
 * cannot say. */
const char *farm_job_file(int64_t job_id);

/* master_farm.c */
void farm_refill_now(void);
bool farm_budget_spent(void);      /* --batch-size jobs started */
bool farm_budget_take(void);       /* count one start; false when spent */

/* master_chan.c */
void farm_chan_cb(struct ev_loop *loop, ev_io *w, int revents);
int  farm_chan_read(struct slot *s);
/* Send job j, to run with provider prov (registry index), to slot s;
 * the slot becomes busy or holds it ahead.  0, or -1 when the channel
 * failed (logged; the caller kills the worker). */
int  farm_job_send(struct slot *s, const struct job_ref *j, int prov);
void farm_dispatch(void);
void farm_shutdown_idle(void);

/* master_stats.c */
void farm_stats_log(void);
void farm_rate_add(int64_t n);
double farm_rate_get(void);
void farm_progress_show(bool final);
void farm_progress_clear(void);
void farm_status_write(void);
int  farm_busy_count(void);
int  farm_live_count(void);

/* master_provider.c: farm-wide provider limits.  A provider is named by
 * its registry index (common_provider.h); the limits apply only to those
 * whose descriptor says `limited`, the others always may start and get
 * their tokens at once. */
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
