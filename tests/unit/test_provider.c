/*
 * test_provider.c - the provider registry (common_provider.c): every
 * descriptor is complete and its name unique, lookups by name and index
 * agree, the name lists error messages quote follow the stages each
 * provider serves, config validation takes its sections, their keys and
 * the stage choices from the registry, and the retry policy stays within
 * its bounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common_provider.h"
#include "ipc_frame.h"

static void
test_descriptors_complete(void **state)
{
	(void)state;
	assert_true(provider_count() >= 1);
	assert_true(provider_count() <= IPC_PROVIDER_MAX);
	assert_null(provider_at(-1));
	assert_null(provider_at(provider_count()));
	for (int i = 0; i < provider_count(); i++) {
		const struct provider_desc *p = provider_at(i);
		assert_non_null(p);
		assert_non_null(p->name);
		assert_non_null(p->run);
		assert_true(p->stages != 0);
		assert_true((p->stages & ~STAGE_MASK_ALL) == 0);
		/* one name, one index, both ways */
		assert_int_equal(provider_index(p->name), i);
		assert_ptr_equal(provider_find(p->name), p);
		for (int k = 0; k < i; k++)
			assert_string_not_equal(provider_at(k)->name, p->name);
		/* a metered provider is a paid API: it has a key */
		if (p->limited)
			assert_non_null(p->key_env);
	}
	assert_int_equal(provider_index("no-such-provider"), -1);
	assert_int_equal(provider_index(NULL), -1);
	assert_null(provider_find(NULL));
}

static void
test_http_quirks(void **state)
{
	const struct provider_desc *d = provider_find("deepl");
	(void)state;

	assert_non_null(d);
	assert_true(provider_http_in(d->http_rate_limited, 529));
	assert_true(provider_http_in(d->http_refused, 456));
	assert_false(provider_http_in(d->http_refused, 0));
	assert_false(provider_http_in(provider_find("openai")->http_refused, 456));
}

static void
test_names(void **state)
{
	char buf[200];
	(void)state;

	provider_names(STAGE_MASK_TRANSCRIBE, PROVIDER_NAMES_ALL, buf,
	    sizeof(buf));
	assert_string_equal(buf, "elevenlabs, openai, exec or noop");
	provider_names(STAGE_MASK_TRANSLATE, PROVIDER_NAMES_REAL, buf,
	    sizeof(buf));
	assert_string_equal(buf, "openai, deepl or exec");
	provider_names(STAGE_MASK_TRANSLATE, PROVIDER_NAMES_FAKE, buf,
	    sizeof(buf));
	assert_string_equal(buf, "noop");
	/* always terminated, even cut short */
	provider_names(STAGE_MASK_ALL, PROVIDER_NAMES_ALL, buf, 8);
	assert_int_equal(strlen(buf), 7);
	provider_names(0, PROVIDER_NAMES_ALL, buf, sizeof(buf));
	assert_string_equal(buf, "");
}

/* Read text as a config file: config_file_read's 0 or -1, the message
 * in err. */
static int
parse(const char *text, char *err, size_t errlen)
{
	char path[] = "/tmp/test_provider_XXXXXX";
	int fd = mkstemp(path);
	struct config cfg;
	int rc;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	config_defaults(&cfg);
	err[0] = '\0';
	rc = config_file_read(&cfg, path, err, errlen);
	config_free(&cfg);
	unlink(path);
	return rc;
}

static void
test_config_reads_registry(void **state)
{
	char err[600];
	(void)state;

	/* every provider's section is known and takes its descriptor's keys
	 * (and the HTTP ones when limited), and no other */
	for (int i = 0; i < provider_count(); i++) {
		const struct provider_desc *p = provider_at(i);
		char text[200], want[120];
		const char *const *lists[2];
		provider_key_lists(p, lists);
		assert_ptr_equal(lists[1], p->keys);
		assert_true(p->limited == (lists[0] == provider_http_keys));
		for (int k = 0; p->keys != NULL && p->keys[k] != NULL; k++) {
			/* each key listed once: its own, or shared */
			for (int h = 0; p->limited && provider_http_keys[h]; h++)
				assert_string_not_equal(p->keys[k],
				    provider_http_keys[h]);
			snprintf(text, sizeof(text), "[%s]\n%s = 1\n", p->name,
			    p->keys[k]);
			assert_int_equal(parse(text, err, sizeof(err)), 0);
		}
		for (int k = 0; provider_http_keys[k] != NULL; k++) {
			snprintf(text, sizeof(text), "[%s]\n%s = 1\n", p->name,
			    provider_http_keys[k]);
			assert_int_equal(parse(text, err, sizeof(err)),
			    p->limited ? 0 : -1);
		}
		snprintf(text, sizeof(text), "[%s]\nsome_key = 1\n", p->name);
		assert_int_equal(parse(text, err, sizeof(err)), -1);
		snprintf(want, sizeof(want), "unknown key \"some_key\" in [%s]",
		    p->name);
		assert_non_null(strstr(err, want));
	}
	assert_int_equal(parse("[nosuch]\nx = 1\n", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "unknown section"));
	/* a stage takes only the providers serving it, and says which */
	assert_int_equal(parse("[translate]\nprovider = elevenlabs\n", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "(openai, deepl, exec or noop)"));
	assert_int_equal(parse("[translate.de]\nprovider = elevenlabs\n", err,
	    sizeof(err)), -1);
	assert_int_equal(parse("[transcribe]\nprovider = deepl\n", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "(elevenlabs, openai, exec or noop)"));
	assert_int_equal(parse("[transcribe]\nprovider = openai\n[translate]\n"
	    "provider = openai\n", err, sizeof(err)), 0);
	/* provider is a stage's key, not a provider section's */
	assert_int_equal(parse("[exec]\nprovider = whatever\n", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "did you mean [transcribe] provider or "
	    "[translate] provider?"));
}

static void
test_retry_at_bounds(void **state)
{
	struct config cfg;
	(void)state;

	config_defaults(&cfg);
	cfg.retry_delay_ms = 1000;
	cfg.retry_max_delay_ms = 8000;
	for (int attempts = 1; attempts < 40; attempts++) {
		int64_t now = time_wall_ms();
		int64_t at = provider_retry_at(&cfg, attempts, 0);
		int64_t want = attempts > 4 ? 8000 : 1000LL << (attempts - 1);
		/* full jitter: between half the delay and the delay */
		assert_true(at >= now + want / 2);
		assert_true(at <= time_wall_ms() + want);
	}
	/* what the provider asked, capped */
	int64_t now = time_wall_ms();
	int64_t at = provider_retry_at(&cfg, 1, 3000);
	assert_true(at >= now + 3000 && at <= time_wall_ms() + 3000);
	at = provider_retry_at(&cfg, 1, 999999);
	assert_true(at <= time_wall_ms() + 8000);
	config_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_descriptors_complete),
		cmocka_unit_test(test_http_quirks),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_config_reads_registry),
		cmocka_unit_test(test_retry_at_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
