/*
 * master_slot.c - the slot state machine: one table of state x event
 * (as s6-supervise keeps its actions[][]), and farm_slot_event, the one
 * function that moves a slot from state to state, keeps the slot's own
 * job bookkeeping in step (the job it runs, the jobs sent ahead) and
 * logs the move.  A pair the table refuses is logged and changes
 * nothing: for a message from a worker that is a protocol breach (the
 * caller kills it), as Postfix's master_status.c checks each child
 * message against its child table.  Also the slot table itself (slots
 * are stable across respawns) and the counts the farm asks of it.
 */
#include "master_farm.h"

#include <string.h>

#define R SLOT_REFUSED
#define S_EMPTY    SLOT_EMPTY
#define S_START    SLOT_STARTING
#define S_IDLE     SLOT_IDLE
#define S_BUSY     SLOT_BUSY
#define S_DRAIN    SLOT_DRAINING
#define S_KILLED   SLOT_KILLED
#define S_EXIT     SLOT_EXITING

/* Rows: the state a slot is in; columns: the event.  A state that stays
 * the same accepts the event without moving (a late READY or DONE from
 * a worker already killed: what it said before dying still counts). */
static const signed char slot_table[SLOT_NSTATES][SLOT_NEVENTS] = {
	/*            SPAWN    READY     JOB     NEXT      DONE      TALK
	 *            SHUTDOWN KILL      EOF     RETIRE    EXIT */
	[SLOT_EMPTY] = {
		      S_START, R,        R,      R,        R,        R,
		      R,       R,        R,      R,        R },
	[SLOT_STARTING] = {
		      R,       S_IDLE,   R,      R,        R,        R,
		      R,       S_KILLED, S_EXIT, S_EMPTY,  S_EMPTY },
	[SLOT_IDLE] = {
		      R,       R,        S_BUSY, R,        R,        R,
		      S_DRAIN, S_KILLED, S_EXIT, S_EMPTY,  S_EMPTY },
	[SLOT_BUSY] = {
		      R,       R,        S_BUSY, S_BUSY,   S_IDLE,   S_BUSY,
		      S_DRAIN, S_KILLED, S_EXIT, R,        S_EMPTY },
	[SLOT_DRAINING] = {
		      R,       R,        R,      S_DRAIN,  S_DRAIN,  S_DRAIN,
		      S_DRAIN, S_KILLED, S_EXIT, R,        S_EMPTY },
	[SLOT_KILLED] = {
		      R,       S_KILLED, R,      S_KILLED, S_KILLED, S_KILLED,
		      S_KILLED, S_KILLED, S_KILLED, R,     S_EMPTY },
	[SLOT_EXITING] = {
		      R,       R,        R,      R,        R,        R,
		      S_EXIT,  S_KILLED, S_EXIT, R,        S_EMPTY },
};

#undef R

static const struct {
	const char *name;
	bool        live;       /* has a process */
} slot_states[SLOT_NSTATES] = {
	[SLOT_EMPTY]    = { "empty", false },
	[SLOT_STARTING] = { "starting", true },
	[SLOT_IDLE]     = { "idle", true },
	[SLOT_BUSY]     = { "busy", true },
	[SLOT_DRAINING] = { "draining", true },
	[SLOT_KILLED]   = { "killed", true },
	[SLOT_EXITING]  = { "exiting", true },
};

static const char *const slot_events[SLOT_NEVENTS] = {
	[SLOT_EV_SPAWN] = "spawn", [SLOT_EV_READY] = "ready",
	[SLOT_EV_JOB] = "job", [SLOT_EV_NEXT] = "next", [SLOT_EV_DONE] = "done",
	[SLOT_EV_TALK] = "talk", [SLOT_EV_SHUTDOWN] = "shutdown",
	[SLOT_EV_KILL] = "kill", [SLOT_EV_EOF] = "eof",
	[SLOT_EV_RETIRE] = "retire", [SLOT_EV_EXIT] = "exit",
};

static const char *const slot_kills[SLOT_NKILLS] = {
	[SLOT_KILL_NONE] = "none", [SLOT_KILL_BROKEN] = "broken",
	[SLOT_KILL_HUNG] = "hung", [SLOT_KILL_STOPPED] = "stop",
};

int
slot_next(enum slot_state st, enum slot_event ev)
{
	if ((unsigned)st >= SLOT_NSTATES || (unsigned)ev >= SLOT_NEVENTS)
		return SLOT_REFUSED;
	return slot_table[st][ev];
}

const char *
slot_state_name(enum slot_state st)
{
	return (unsigned)st < SLOT_NSTATES ? slot_states[st].name : "?";
}

const char *
slot_event_name(enum slot_event ev)
{
	return (unsigned)ev < SLOT_NEVENTS ? slot_events[ev] : "?";
}

const char *
slot_kill_name(enum slot_kill why)
{
	return (unsigned)why < SLOT_NKILLS ? slot_kills[why] : "?";
}

bool
slot_state_live(enum slot_state st)
{
	return (unsigned)st < SLOT_NSTATES && slot_states[st].live;
}

const char *
slot_state_shown(enum slot_state st, bool holds_job)
{
	if (st == SLOT_EMPTY || st == SLOT_STARTING)
		return slot_states[st].name;
	return holds_job ? "busy" : "idle";
}

/* The slot's own bookkeeping that goes with each event: which job it
 * runs and since when; a slot that empties forgets its process. */
static void
farm_slot_enter(struct slot *s, enum slot_event ev, const struct job_ref *job)
{
	int64_t now = time_mono_ms();

	switch (ev) {
	case SLOT_EV_READY:
		if (s->ready_at == 0)
			s->ready_at = now;
		break;
	case SLOT_EV_JOB:
		if (farm_slot_holds_job(s)) {
			s->ahead[s->nahead++] = *job;
			break;
		}
		s->job = *job;
		s->job_started = s->last_beat = now;
		break;
	case SLOT_EV_NEXT:      /* the worker has already started it */
		s->job = s->ahead[0];
		s->prov = s->ahead_prov[0];
		--s->nahead;
		memmove(s->ahead, s->ahead + 1, sizeof(s->ahead[0]) *
		    (size_t)s->nahead);
		memmove(s->ahead_prov, s->ahead_prov + 1,
		    sizeof(s->ahead_prov[0]) * (size_t)s->nahead);
		farm_prov_job_start(s->prov);
		s->job_started = s->last_beat = now;
		break;
	case SLOT_EV_DONE:
		memset(&s->job, 0, sizeof(s->job));
		break;
	case SLOT_EV_RETIRE:
	case SLOT_EV_EXIT:
		s->pid = 0;
		s->killed = SLOT_KILL_NONE;
		s->kill_at = 0;
		s->ready_at = 0;
		s->nahead = 0;
		s->waiting_token = false;
		memset(&s->job, 0, sizeof(s->job));
		break;
	default:
		break;
	}
}

int
farm_slot_event(struct slot *s, enum slot_event ev, const struct job_ref *job)
{
	int next = slot_next(s->state, ev);

	if (next == SLOT_REFUSED || (ev == SLOT_EV_JOB && (job == NULL ||
	    s->nahead >= FARM_AHEAD_MAX)) || (ev == SLOT_EV_NEXT &&
	    s->nahead == 0)) {
		log_warn("slot_event_refused", "slot=%d worker_pid=%d state=%s "
		    "on=%s", s->idx, (int)s->pid, slot_state_name(s->state),
		    slot_event_name(ev));
		return -1;
	}
	if (next != (int)s->state && log_wants(LOG_DEBUG))
		log_debug("slot_state", "slot=%d worker_pid=%d from=%s to=%s "
		    "on=%s", s->idx, (int)s->pid, slot_state_name(s->state),
		    slot_state_name((enum slot_state)next), slot_event_name(ev));
	farm_slot_enter(s, ev, job);
	s->state = (enum slot_state)next;
	return 0;
}

bool
farm_slot_holds_job(const struct slot *s)
{
	return s->job.job_id > 0;
}

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

struct slot *
farm_slot_by_pid(pid_t pid)
{
	for (int i = 0; i < farm.nslots; i++)
		if (farm.slots[i]->pid == pid && slot_state_live(
		    farm.slots[i]->state))
			return farm.slots[i];
	return NULL;
}

int
farm_busy_count(void)
{
	int n = 0;
	for (int i = 0; i < farm.nslots; i++)
		n += farm_slot_holds_job(farm.slots[i]);
	return n;
}

int
farm_live_count(void)
{
	int n = 0;
	for (int i = 0; i < farm.nslots; i++)
		n += farm.slots[i]->pid > 0;
	return n;
}
