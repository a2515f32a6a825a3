/*
 * test_slot.c - the master's slot state machine (master_slot.c): every
 * state x event pair is either the transition written down here or a
 * refusal; a refusal is logged and changes nothing; the job bookkeeping
 * that goes with JOB, NEXT, DONE and EXIT; the names the status file
 * shows.  The expected table is written out again on purpose: a change
 * to the machine has to be made in both places.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master_farm.h"

struct want { enum slot_state from; enum slot_event ev; enum slot_state to; };

static const struct want wants[] = {
	{ SLOT_EMPTY, SLOT_EV_SPAWN, SLOT_STARTING },

	{ SLOT_STARTING, SLOT_EV_READY, SLOT_IDLE },
	{ SLOT_STARTING, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_STARTING, SLOT_EV_EOF, SLOT_EXITING },
	{ SLOT_STARTING, SLOT_EV_RETIRE, SLOT_EMPTY },
	{ SLOT_STARTING, SLOT_EV_EXIT, SLOT_EMPTY },

	{ SLOT_IDLE, SLOT_EV_JOB, SLOT_BUSY },
	{ SLOT_IDLE, SLOT_EV_SHUTDOWN, SLOT_DRAINING },
	{ SLOT_IDLE, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_IDLE, SLOT_EV_EOF, SLOT_EXITING },
	{ SLOT_IDLE, SLOT_EV_RETIRE, SLOT_EMPTY },
	{ SLOT_IDLE, SLOT_EV_EXIT, SLOT_EMPTY },

	{ SLOT_BUSY, SLOT_EV_JOB, SLOT_BUSY },
	{ SLOT_BUSY, SLOT_EV_NEXT, SLOT_BUSY },
	{ SLOT_BUSY, SLOT_EV_DONE, SLOT_IDLE },
	{ SLOT_BUSY, SLOT_EV_TALK, SLOT_BUSY },
	{ SLOT_BUSY, SLOT_EV_SHUTDOWN, SLOT_DRAINING },
	{ SLOT_BUSY, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_BUSY, SLOT_EV_EOF, SLOT_EXITING },
	{ SLOT_BUSY, SLOT_EV_EXIT, SLOT_EMPTY },

	{ SLOT_DRAINING, SLOT_EV_NEXT, SLOT_DRAINING },
	{ SLOT_DRAINING, SLOT_EV_DONE, SLOT_DRAINING },
	{ SLOT_DRAINING, SLOT_EV_TALK, SLOT_DRAINING },
	{ SLOT_DRAINING, SLOT_EV_SHUTDOWN, SLOT_DRAINING },
	{ SLOT_DRAINING, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_DRAINING, SLOT_EV_EOF, SLOT_EXITING },
	{ SLOT_DRAINING, SLOT_EV_EXIT, SLOT_EMPTY },

	/* killed: its last words still count, nothing moves it but the reap */
	{ SLOT_KILLED, SLOT_EV_READY, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_NEXT, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_DONE, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_TALK, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_SHUTDOWN, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_EOF, SLOT_KILLED },
	{ SLOT_KILLED, SLOT_EV_EXIT, SLOT_EMPTY },

	/* exiting: the channel is closed, no message can come any more */
	{ SLOT_EXITING, SLOT_EV_SHUTDOWN, SLOT_EXITING },
	{ SLOT_EXITING, SLOT_EV_KILL, SLOT_KILLED },
	{ SLOT_EXITING, SLOT_EV_EOF, SLOT_EXITING },
	{ SLOT_EXITING, SLOT_EV_EXIT, SLOT_EMPTY },
};

static const struct want *
want_find(int st, int ev)
{
	for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++)
		if ((int)wants[i].from == st && (int)wants[i].ev == ev)
			return &wants[i];
	return NULL;
}

/* Every pair: the written transition, else refused. */
static void
test_table_complete(void **state)
{
	int defined = 0, refused = 0;

	(void)state;
	for (int st = 0; st < SLOT_NSTATES; st++)
		for (int ev = 0; ev < SLOT_NEVENTS; ev++) {
			const struct want *w = want_find(st, ev);
			int got = slot_next((enum slot_state)st, (enum slot_event)ev);
			if (w == NULL && got != SLOT_REFUSED)
				fail_msg("%s x %s: moves to %s, expected a refusal",
				    slot_state_name((enum slot_state)st),
				    slot_event_name((enum slot_event)ev),
				    slot_state_name((enum slot_state)got));
			if (w != NULL && got != (int)w->to)
				fail_msg("%s x %s: %s, expected %s",
				    slot_state_name((enum slot_state)st),
				    slot_event_name((enum slot_event)ev),
				    got == SLOT_REFUSED ? "refused" :
				    slot_state_name((enum slot_state)got),
				    slot_state_name(w->to));
			if (w != NULL)
				defined++;
			else
				refused++;
		}
	assert_int_equal(defined, (int)(sizeof(wants) / sizeof(wants[0])));
	assert_int_equal(defined + refused, SLOT_NSTATES * SLOT_NEVENTS);
	/* out of range is refused, never read past the table */
	assert_int_equal(slot_next(SLOT_NSTATES, SLOT_EV_SPAWN), SLOT_REFUSED);
	assert_int_equal(slot_next(SLOT_IDLE, SLOT_NEVENTS), SLOT_REFUSED);
	assert_int_equal(slot_next((enum slot_state)-1, SLOT_EV_EXIT),
	    SLOT_REFUSED);
	/* only EMPTY has no process */
	for (int st = 0; st < SLOT_NSTATES; st++)
		assert_int_equal(slot_state_live((enum slot_state)st),
		    st != SLOT_EMPTY);
	assert_string_equal(slot_state_name(SLOT_NSTATES), "?");
	assert_string_equal(slot_event_name(SLOT_NEVENTS), "?");
	for (int ev = 0; ev < SLOT_NEVENTS; ev++)
		assert_string_not_equal(slot_event_name((enum slot_event)ev), "?");
}

/* What farm_slot_event logs goes to a pipe: the test reads it back. */
static int log_rd = -1;

static int
log_capture(void **state)
{
	int p[2];

	(void)state;
	if (pipe2(p, O_NONBLOCK) < 0)
		return -1;
	log_rd = p[0];
	log_set_fd(p[1]);
	log_set_level(LOG_DEBUG);
	return 0;
}

static int
log_restore(void **state)
{
	(void)state;
	close(log_get_fd());
	log_set_fd(2);
	close(log_rd);
	log_rd = -1;
	return 0;
}

static char *
log_take(void)
{
	static char text[16384];
	ssize_t n = read(log_rd, text, sizeof(text) - 1);

	text[n > 0 ? n : 0] = '\0';
	return text;
}

/* Every refused pair, from a slot put in each state: -1, the state and
 * the job unchanged, one slot_event_refused line naming both. */
static void
test_refusal_logged(void **state)
{
	(void)state;
	for (int st = 0; st < SLOT_NSTATES; st++)
		for (int ev = 0; ev < SLOT_NEVENTS; ev++) {
			struct slot s = { .idx = 3, .pid = 77, .fd = -1 };
			struct job_ref j = { .job_id = 9 };
			char want[160];

			if (want_find(st, ev) != NULL)
				continue;
			s.state = (enum slot_state)st;
			s.job.job_id = 5;
			(void)log_take();
			assert_int_equal(farm_slot_event(&s, (enum slot_event)ev, &j),
			    -1);
			assert_int_equal(s.state, st);
			assert_int_equal(s.job.job_id, 5);
			assert_int_equal(s.nahead, 0);
			assert_int_equal(s.pid, 77);
			snprintf(want, sizeof(want), "event=slot_event_refused "
			    "slot=3 worker_pid=77 state=%s on=%s",
			    slot_state_name((enum slot_state)st),
			    slot_event_name((enum slot_event)ev));
			if (strstr(log_take(), want) == NULL)
				fail_msg("no \"%s\" in the log", want);
		}
}

/* A transition is logged (debug) with both states and the event. */
static void
test_transition_logged(void **state)
{
	struct slot s = { .idx = 1, .pid = 42, .fd = -1 };

	(void)state;
	(void)log_take();
	assert_int_equal(farm_slot_event(&s, SLOT_EV_SPAWN, NULL), 0);
	assert_int_equal(s.state, SLOT_STARTING);
	assert_non_null(strstr(log_take(), "event=slot_state slot=1 "
	    "worker_pid=42 from=empty to=starting on=spawn"));
	/* staying put is accepted and not logged as a move */
	s.state = SLOT_KILLED;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_READY, NULL), 0);
	assert_int_equal(s.state, SLOT_KILLED);
	assert_null(strstr(log_take(), "slot_state"));
}

/* The job a slot holds follows JOB, NEXT, DONE; EXIT forgets the
 * process.  JOB beyond FARM_AHEAD_MAX and NEXT with nothing ahead are
 * refused even though the table has the pair. */
static void
test_job_bookkeeping(void **state)
{
	struct slot s = { .idx = 0, .pid = 5, .fd = -1 };
	struct job_ref j = { 0 };

	(void)state;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_SPAWN, NULL), 0);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_READY, NULL), 0);
	assert_true(s.ready_at > 0);
	assert_false(farm_slot_holds_job(&s));
	assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, NULL), -1);
	j.job_id = 1;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, &j), 0);
	assert_int_equal(s.state, SLOT_BUSY);
	assert_true(farm_slot_holds_job(&s));
	assert_int_equal(s.job.job_id, 1);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_NEXT, NULL), -1);
	for (int k = 0; k < FARM_AHEAD_MAX; k++) {
		j.job_id = 10 + k;
		assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, &j), 0);
	}
	assert_int_equal(s.nahead, FARM_AHEAD_MAX);
	j.job_id = 99;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, &j), -1);
	assert_int_equal(s.nahead, FARM_AHEAD_MAX);
	assert_int_equal(s.job.job_id, 1);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_NEXT, NULL), 0);
	assert_int_equal(s.job.job_id, 10);
	assert_int_equal(s.nahead, FARM_AHEAD_MAX - 1);
	assert_int_equal(s.ahead[0].job_id, 11);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_SHUTDOWN, NULL), 0);
	assert_int_equal(s.state, SLOT_DRAINING);
	while (s.nahead > 0)
		assert_int_equal(farm_slot_event(&s, SLOT_EV_NEXT, NULL), 0);
	assert_int_equal(s.job.job_id, 10 + FARM_AHEAD_MAX - 1);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_DONE, NULL), 0);
	assert_int_equal(s.state, SLOT_DRAINING);
	assert_false(farm_slot_holds_job(&s));
	/* a draining slot takes no job */
	assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, &j), -1);
	s.killed = SLOT_KILL_STOPPED;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_KILL, NULL), 0);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_EXIT, NULL), 0);
	assert_int_equal(s.state, SLOT_EMPTY);
	assert_int_equal(s.pid, 0);
	assert_int_equal(s.killed, SLOT_KILL_NONE);
	assert_int_equal(s.ready_at, 0);
	assert_int_equal(s.nahead, 0);
	assert_false(farm_slot_holds_job(&s));
	/* a busy worker that dies: the reap empties it the same way */
	s.pid = 6;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_SPAWN, NULL), 0);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_READY, NULL), 0);
	j.job_id = 7;
	assert_int_equal(farm_slot_event(&s, SLOT_EV_JOB, &j), 0);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_EOF, NULL), 0);
	assert_int_equal(s.state, SLOT_EXITING);
	assert_true(farm_slot_holds_job(&s));   /* its job is still to release */
	assert_int_equal(farm_slot_event(&s, SLOT_EV_DONE, NULL), -1);
	assert_int_equal(farm_slot_event(&s, SLOT_EV_EXIT, NULL), 0);
	assert_false(farm_slot_holds_job(&s));
}

/* The status file knows four names; a slot that holds a job is busy. */
static void
test_shown_names(void **state)
{
	(void)state;
	assert_string_equal(slot_state_shown(SLOT_EMPTY, false), "empty");
	assert_string_equal(slot_state_shown(SLOT_STARTING, false), "starting");
	assert_string_equal(slot_state_shown(SLOT_IDLE, false), "idle");
	assert_string_equal(slot_state_shown(SLOT_BUSY, true), "busy");
	assert_string_equal(slot_state_shown(SLOT_DRAINING, true), "busy");
	assert_string_equal(slot_state_shown(SLOT_DRAINING, false), "idle");
	assert_string_equal(slot_state_shown(SLOT_KILLED, true), "busy");
	assert_string_equal(slot_state_shown(SLOT_EXITING, false), "idle");
	assert_string_equal(slot_kill_name(SLOT_KILL_HUNG), "hung");
	assert_string_equal(slot_kill_name(SLOT_KILL_BROKEN), "broken");
	assert_string_equal(slot_kill_name(SLOT_KILL_STOPPED), "stop");
	/* precedence: a stop outranks a hang, a hang a broken frame */
	assert_true(SLOT_KILL_STOPPED > SLOT_KILL_HUNG);
	assert_true(SLOT_KILL_HUNG > SLOT_KILL_BROKEN);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_complete),
		cmocka_unit_test(test_refusal_logged),
		cmocka_unit_test(test_transition_logged),
		cmocka_unit_test(test_job_bookkeeping),
		cmocka_unit_test(test_shown_names),
	};

	return cmocka_run_group_tests(tests, log_capture, log_restore);
}
