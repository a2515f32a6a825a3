/*
 * master_spawn.c - starting workers into slots.  The master's own store is
 * closed around every fork so that no SQLite connection (nor its locks and
 * shared-memory bookkeeping) is ever inherited: the worker opens its own.
 * Also here: keeping the number of live workers at the target (TTIN/TTOU,
 * HUP, respawn backoff, the farm-wide throttle) and recycling workers after
 * --max-jobs-per-worker jobs, replacement first.
 */
#include "master_farm.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The descriptors a worker starts with: its stderr is the master's log
 * pipe, its channel a fixed number it is told; everything above is
 * closed. */
#define FARM_CHILD_FD_LOG           2
#define FARM_CHILD_FD_CHAN          FD_AFTER_STDIO

/* Recycling jitter: a worker's job limit is --max-jobs-per-worker
 * +- 1/FARM_JOBS_JITTER_DIV of it. */
#define FARM_JOBS_JITTER_DIV 5

/* Recycle threshold with +-20% jitter so workers started together do not
 * all leave together. */
static int
farm_jobs_limit(void)
{
	int n = farm.cfg->max_jobs_per_worker;

	if (n <= 0)
		return 0;
	int j = n / FARM_JOBS_JITTER_DIV;
	return n - j + (j > 0 ? (int)(random() % (2 * j + 1)) : 0);
}

static void
farm_child_setup(int chan, int slot)
{
	struct worker_args wa = {
		.cfg = farm.cfg, .cfg_gen = farm.cfg_gen, .chan_fd = FARM_CHILD_FD_CHAN,
		.master_pid = farm.pid, .slot = slot,
	};

	/* the log pipe, the channel, nothing else: no other worker's
	 * channel, no lock, no libev internals */
	if (dup2(farm.log_pipe[1], FARM_CHILD_FD_LOG) < 0 ||
	    dup2(chan, FARM_CHILD_FD_CHAN) < 0 ||
	    fd_set_cloexec(FARM_CHILD_FD_CHAN) < 0)  /* engines get no channel */
		_exit(WORKER_EXIT_CONFIG);
	fd_close_from(FARM_CHILD_FD_CHAN + 1, -1);
	log_set_fd(FARM_CHILD_FD_LOG);
	log_set_hook(NULL);
	worker_main(&wa);
}

/* Fork a worker for slot index idx: its end of a new channel in *fd
 * (non-blocking), its pid in *pid.  The master's store is closed around
 * the fork (no SQLite connection is ever inherited) and opened again.
 * -1 on failure, logged; nothing is left open. */
static int
farm_worker_fork(int idx, pid_t *pid, int *fd)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("spawn_failed", "slot=%d error=%s", idx, strerror(errno));
		return -1;
	}
	if (farm.st != NULL) {
		store_close(farm.st);
		farm.st = NULL;
	}
	*pid = fork();
	if (*pid < 0) {
		log_error("spawn_failed", "slot=%d error=%s", idx, strerror(errno));
		close(sv[0]);
		close(sv[1]);
		farm_store_reopen();
		return -1;
	}
	if (*pid == 0) {
		close(sv[0]);
		farm_child_setup(sv[1], idx);
	}
	close(sv[1]);
	fd_set_nonblock(sv[0], true);
	*fd = sv[0];
	farm_store_reopen();
	return 0;
}

/* The new worker pid, on channel fd, becomes slot s's (now EMPTY). */
static void
farm_slot_install(struct slot *s, pid_t pid, int fd)
{
	s->pid = pid;
	s->gen++;
	s->fd = fd;
	s->cfg_gen = farm.cfg_gen;
	s->prov = -1;
	s->jobs_done = 0;
	s->jobs_limit = farm_jobs_limit();
	s->avg_job_ms = 0;
	(void)farm_slot_event(s, SLOT_EV_SPAWN, NULL);
	ipc_reader_init(&s->rd);
	ev_io_init(&s->io, farm_chan_cb, s->fd, EV_READ);
	s->io.data = s;
	ev_io_start(farm.loop, &s->io);
	log_info("worker_spawn", "slot=%d worker_pid=%d gen=%u", s->idx, (int)pid,
	    s->gen);
}

int
farm_slot_spawn(struct slot *s)
{
	pid_t pid;
	int fd;

	if (farm_worker_fork(s->idx, &pid, &fd) < 0)
		return -1;
	farm_slot_install(s, pid, fd);
	return 0;
}

/* Slot s's worker (idle or starting) leaves: closing its channel is its
 * signal to exit; it is reaped as a retiree, and the slot is EMPTY. */
static void
farm_slot_retire(struct slot *s)
{
	ev_io_stop(farm.loop, &s->io);
	close(s->fd);
	s->fd = -1;
	farm.retirees = xrealloc(farm.retirees, sizeof(*farm.retirees) *
	    (size_t)(farm.nretirees + 1));
	farm.retirees[farm.nretirees++] = (struct retiree){ s->pid, s->idx };
	(void)farm_slot_event(s, SLOT_EV_RETIRE, NULL);
}

/* An idle worker past its job limit, or started under a config a HUP
 * has replaced, leaves once its replacement runs. */
static void
farm_recycle_check(struct slot *s)
{
	pid_t old = s->pid, pid;
	bool stale = s->cfg_gen != farm.cfg_gen;
	int fd;

	if ((!stale && (s->jobs_limit <= 0 || s->jobs_done < s->jobs_limit)) ||
	    s->state != SLOT_IDLE || farm.nretirees > 0)
		return;
	/* the replacement first: if it cannot start, the old one works on
	 * and the next look tries again */
	if (farm_worker_fork(s->idx, &pid, &fd) < 0)
		return;
	farm_slot_retire(s);
	farm_slot_install(s, pid, fd);
	log_info("worker_recycle", "slot=%d old_pid=%d new_pid=%d reason=%s",
	    s->idx, (int)old, (int)s->pid, stale ? "config" : "jobs");
}

void
farm_slots_adjust(void)
{
	int64_t now = time_mono_ms();

	if (farm.stopping)
		return;
	for (int i = 0; i < farm.nslots || i < farm.target; i++) {
		struct slot *s = farm_slot_get(i);

		if (i >= farm.target) {
			/* TTOU: slots past the target empty out */
			if (s->state == SLOT_IDLE || s->state == SLOT_STARTING) {
				log_info("worker_retire", "slot=%d worker_pid=%d", i,
				    (int)s->pid);
				farm_slot_retire(s);
			}
			/* a busy one takes no new job (farm_slot_takes) and
			 * leaves here once idle */
			continue;
		}
		if (s->state == SLOT_EMPTY) {
			if (now < s->respawn_at || now < farm.spawn_block_until)
				continue;
			if (s->gen > 0)
				farm.respawns++;
			farm_slot_spawn(s);
		} else {
			farm_recycle_check(s);
		}
	}
}

static void
farm_respawn_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	farm_slots_adjust();
	farm_respawn_arm();
}

/* Respawns wait for their backoff, not for the next timed look. */
void
farm_respawn_arm(void)
{
	int64_t now = time_mono_ms(), at = 0;

	for (int i = 0; i < farm.nslots && i < farm.target; i++) {
		struct slot *s = farm.slots[i];
		if (s->state != SLOT_EMPTY)
			continue;
		int64_t t = s->respawn_at > farm.spawn_block_until ? s->respawn_at
		    : farm.spawn_block_until;
		if (at == 0 || t < at)
			at = t;
	}
	ev_timer_stop(farm.loop, &farm.respawn);
	if (at == 0 || farm.stopping)
		return;
	ev_timer_init(&farm.respawn, farm_respawn_cb,
	    at > now ? (double)(at - now) / MS_PER_S : 0.0, 0.0);
	ev_timer_start(farm.loop, &farm.respawn);
}
