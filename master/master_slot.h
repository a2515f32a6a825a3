/*
 * master_slot.h - the life of one worker slot as a state x event table
 * (the shape of s6-supervise's actions[][]): the states a slot can be
 * in, the events that move it, and the pure lookup the table answers.
 * Nothing here touches a process or the farm; master_slot.c holds the
 * table and the one function that performs a transition on a slot.
 */
#ifndef MPFARM_MASTER_SLOT_H
#define MPFARM_MASTER_SLOT_H

#include <stdbool.h>

enum slot_state {
	SLOT_EMPTY = 0,     /* no process (waiting to respawn, or unused) */
	SLOT_STARTING,      /* forked, READY not seen yet */
	SLOT_IDLE,          /* ready, no job: may be given one */
	SLOT_BUSY,          /* runs s->job, maybe with jobs sent ahead */
	SLOT_DRAINING,      /* told SHUTDOWN: finishes what it holds, exits */
	SLOT_KILLED,        /* signalled by the master (s->killed says why);
			     * what it says until it dies still counts */
	SLOT_EXITING,       /* its channel closed: dying, not yet reaped */
	SLOT_NSTATES
};

enum slot_event {
	SLOT_EV_SPAWN = 0,  /* a worker was forked into the slot */
	SLOT_EV_READY,      /* the worker said READY */
	SLOT_EV_JOB,        /* a job was sent to it (or sent ahead) */
	SLOT_EV_NEXT,       /* DONE; a job sent ahead is now its job */
	SLOT_EV_DONE,       /* DONE; it holds no job any more */
	SLOT_EV_TALK,       /* HEARTBEAT, TOKEN_REQ, PROVIDER_EVENT */
	SLOT_EV_SHUTDOWN,   /* SHUTDOWN was sent to it */
	SLOT_EV_KILL,       /* the master signalled it */
	SLOT_EV_EOF,        /* its channel was closed by the worker */
	SLOT_EV_RETIRE,     /* handed to the retirees (TTOU, recycling) */
	SLOT_EV_EXIT,       /* reaped */
	SLOT_NEVENTS
};

/* Why the master signalled a worker, in order of precedence: a slot
 * killed twice keeps the later of the two in this order (a worker hung,
 * then killed because the farm stops, was interrupted by the stop). */
enum slot_kill {
	SLOT_KILL_NONE = 0,
	SLOT_KILL_BROKEN,   /* sent a malformed or unexpected frame */
	SLOT_KILL_HUNG,     /* job timeout or no heartbeat */
	SLOT_KILL_STOPPED,  /* the farm stops (QUIT, grace over) */
	SLOT_NKILLS
};

/* The table's entry for a refused pair. */
#define SLOT_REFUSED (-1)

/* The state event ev leads to from state st, or SLOT_REFUSED when the
 * pair is not a transition (a worker breaking the protocol, or a master
 * bug).  Out-of-range arguments are refused too. */
int slot_next(enum slot_state st, enum slot_event ev);

/* Names for logs and tests; "?" when out of range.  Never NULL. */
const char *slot_state_name(enum slot_state st);
const char *slot_event_name(enum slot_event ev);
const char *slot_kill_name(enum slot_kill why);

/* Whether a slot in state st has a live process (a pid to reap). */
bool slot_state_live(enum slot_state st);

/* The name the status file shows for a slot in state st: one of
 * "empty", "starting", "idle", "busy" (what `status`, `serve` and the
 * metrics know), "busy" whenever the slot holds a job. */
const char *slot_state_shown(enum slot_state st, bool holds_job);

#endif
