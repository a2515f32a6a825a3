/*
 * test_outcome.c - the one place the farm counts outcomes
 * (farm_outcome_count, master_stats.c): per stage and in total, the
 * jobs/s rate fed by completions only, and any_failed (what makes a run
 * exit 3) set by a failure and by nothing else.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "master_farm.h"

static int
farm_reset(void **state)
{
	(void)state;
	memset(&farm, 0, sizeof(farm));
	farm.started_mono = time_mono_ms();
	return 0;
}

static void
test_counts_per_stage_and_total(void **state)
{
	(void)state;
	farm_outcome_count(STAGE_TRANSCRIBE, FARM_COUNT_DONE, 3);
	farm_outcome_count(STAGE_TRANSLATE, FARM_COUNT_DONE, 2);
	farm_outcome_count(STAGE_TRANSLATE, FARM_COUNT_RETRIED, 4);
	farm_outcome_count(STAGE_TRANSCRIBE, FARM_COUNT_RETRIED, 1);
	assert_int_equal(farm.stage[STAGE_TRANSCRIBE].done, 3);
	assert_int_equal(farm.stage[STAGE_TRANSLATE].done, 2);
	assert_int_equal(farm.stage[STAGE_TRANSLATE].retried, 4);
	assert_int_equal(farm.stage[STAGE_TRANSCRIBE].retried, 1);
	assert_int_equal(farm.total.done, 5);
	assert_int_equal(farm.total.retried, 5);
	assert_int_equal(farm.total.failed, 0);
	/* retries are no failure */
	assert_false(farm.any_failed);
	/* the rate counts completions only: 5 within the first second */
	assert_true(farm_rate_get() > 4.99 && farm_rate_get() < 5.01);
}

static void
test_failures_mark_the_run(void **state)
{
	(void)state;
	/* a provider with nothing left to fail counts zero: no mark */
	farm_outcome_count(STAGE_TRANSLATE, FARM_COUNT_FAILED, 0);
	assert_false(farm.any_failed);
	farm_outcome_count(STAGE_TRANSLATE, FARM_COUNT_FAILED, 2);
	farm_outcome_count(STAGE_TRANSCRIBE, FARM_COUNT_FAILED, 1);
	assert_true(farm.any_failed);
	assert_int_equal(farm.stage[STAGE_TRANSLATE].failed, 2);
	assert_int_equal(farm.stage[STAGE_TRANSCRIBE].failed, 1);
	assert_int_equal(farm.total.failed, 3);
	assert_int_equal(farm.total.done, 0);
	assert_true(farm_rate_get() < 0.001);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_counts_per_stage_and_total, farm_reset),
		cmocka_unit_test_setup(test_failures_mark_the_run, farm_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
