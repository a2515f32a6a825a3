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
#include <sys/syscall.h>
#include <unistd.h>

struct slot *
farm_slot_get(int idx)
{
	while (farm.nslots <= idx) {
		struct slot *s = xcalloc(1, sizeof(*s));
		s->idx = farm.nslots;
		s->fd = -1;
		s->prov = -1;
		farm.slots = xrealloc(farm.slots, sizeof(*farm.slots) *
		    (size_t)(farm.nslots + 1));
		farm.slots[farm.nslots++] = s;
	}
	return farm.slots[idx];
}

int
farm_store_reopen(void)
{
	if (farm.st != NULL)
		return 0;
	farm.st = master_store_open(farm.cfg, 0);
	if (farm.st == NULL) {
		log_error("store_reopen_failed", "db=%s", log_quote(farm.cfg->db));
		return -1;
	}
	return 0;
}

/* Recycle threshold with +-20% jitter so workers started together do not
 * all leave together. */
static int
farm_jobs_limit(void)
{
	int n = farm.cfg->max_jobs_per_worker;

	if (n <= 0)
		return 0;
	int j = n / 5;
	return n - j + (j > 0 ? (int)(random() % (2 * j + 1)) : 0);
}

static void
farm_child_setup(int chan, int slot)
{
	struct worker_args wa = {
		.cfg = farm.cfg, .cfg_gen = farm.cfg_gen, .chan_fd = 3,
		.master_pid = farm.pid, .slot = slot,
	};

	/* fd 2 -> the master's log pipe, fd 3 -> the channel, nothing else:
	 * no other worker's channel, no lock, no libev internals */
	if (dup2(farm.log_pipe[1], 2) < 0 || dup2(chan, 3) < 0 ||
	    fd_set_cloexec(3) < 0)      /* engines the worker runs get no channel */
		_exit(WORKER_EXIT_CONFIG);
	if (syscall(SYS_close_range, 4U, ~0U, 0) < 0)
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
	log_set_fd(2);
	log_set_hook(NULL);
	worker_main(&wa);
}

int
farm_slot_spawn(struct slot *s)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("spawn_failed", "slot=%d error=%s", s->idx, strerror(errno));
		return -1;
	}
	if (farm.st != NULL) {
		store_close(farm.st);
		farm.st = NULL;
	}
	pid = fork();
	if (pid < 0) {
		log_error("spawn_failed", "slot=%d error=%s", s->idx, strerror(errno));
		close(sv[0]);
		close(sv[1]);
		farm_store_reopen();
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		farm_child_setup(sv[1], s->idx);
	}
	close(sv[1]);
	fd_set_nonblock(sv[0], true);
	s->pid = pid;
	s->gen++;
	s->fd = sv[0];
	s->state = SLOT_STARTING;
	s->cfg_gen = farm.cfg_gen;
	s->flags = 0;
	s->prov = -1;
	s->kill_at = 0;
	s->jobs_done = 0;
	s->jobs_limit = farm_jobs_limit();
	s->avg_job_ms = 0;
	s->nahead = 0;
	s->waiting_token = false;
	ipc_reader_init(&s->rd);
	ev_io_init(&s->io, farm_chan_cb, s->fd, EV_READ);
	s->io.data = s;
	ev_io_start(farm.loop, &s->io);
	log_info("worker_spawn", "slot=%d worker_pid=%d gen=%u", s->idx, (int)pid,
	    s->gen);
	farm_store_reopen();
	return 0;
}

/* An idle worker past its job limit, or started under a config a HUP
 * has replaced, leaves once its replacement runs. */
static void
farm_recycle_check(struct slot *s)
{
	pid_t old = s->pid;
	bool stale = s->cfg_gen != farm.cfg_gen;

	if ((!stale && (s->jobs_limit <= 0 || s->jobs_done < s->jobs_limit)) ||
	    s->state != SLOT_IDLE || farm.nretirees > 0)
		return;
	ev_io_stop(farm.loop, &s->io);
	int oldfd = s->fd;
	s->fd = -1;
	if (farm_slot_spawn(s) < 0) {
		/* keep the old one working; try again later */
		s->fd = oldfd;
		s->pid = old;
		s->state = SLOT_IDLE;
		ev_io_init(&s->io, farm_chan_cb, s->fd, EV_READ);
		s->io.data = s;
		ev_io_start(farm.loop, &s->io);
		return;
	}
	/* closing its channel is the old worker's signal to exit */
	close(oldfd);
	farm.retirees = xrealloc(farm.retirees, sizeof(*farm.retirees) *
	    (size_t)(farm.nretirees + 1));
	farm.retirees[farm.nretirees++] = (struct retiree){ old, s->idx };
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
				ev_io_stop(farm.loop, &s->io);
				close(s->fd);
				s->fd = -1;
				farm.retirees = xrealloc(farm.retirees,
				    sizeof(*farm.retirees) * (size_t)(farm.nretirees + 1));
				farm.retirees[farm.nretirees++] =
				    (struct retiree){ s->pid, s->idx };
				s->pid = 0;
				s->state = SLOT_EMPTY;
			} else if (s->state == SLOT_BUSY) {
				s->flags |= SLOT_F_RETIRE;
			}
			continue;
		}
		s->flags &= ~SLOT_F_RETIRE;
		if (s->state == SLOT_EMPTY && s->pid == 0) {
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

/* Respawns wait for their backoff, not for the next tick. */
void
farm_respawn_arm(void)
{
	int64_t now = time_mono_ms(), at = 0;

	for (int i = 0; i < farm.nslots && i < farm.target; i++) {
		struct slot *s = farm.slots[i];
		if (s->state != SLOT_EMPTY || s->pid != 0)
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
	    at > now ? (double)(at - now) / 1000.0 : 0.0, 0.0);
	ev_timer_start(farm.loop, &farm.respawn);
}
