/*
 * test_http.c - the pure parts of the HTTP layer: Retry-After in both of
 * its forms, OpenAI's reset durations, the outcome/event table every
 * provider relies on, error bodies of each provider, key scrubbing, key
 * loading (file permissions, whitespace) and the media checks that must
 * fail before any upload.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker_http.h"
#include "ipc_frame.h"

/* The worker's services; the real ones win when worker_main.o is linked. */
__attribute__((weak)) void worker_heartbeat(void) {}
__attribute__((weak)) int worker_token_acquire(void) { return 0; }
__attribute__((weak)) void
worker_provider_event(int k, int64_t ms, int http, const char *t)
{
	(void)k; (void)ms; (void)http; (void)t;
}

/* Wed, 21 Oct 2015 07:28:00 GMT */
#define NOW ((time_t)1445412480)

static void
test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(worker_http_retry_after_parse("120", NOW), 120000);
	assert_int_equal(worker_http_retry_after_parse(" 5 ", NOW), 5000);
	assert_int_equal(worker_http_retry_after_parse("1.5", NOW), 1500);
	assert_int_equal(worker_http_retry_after_parse("0", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse("", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse(NULL, NOW), 0);
	assert_int_equal(worker_http_retry_after_parse("soon", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse("12abc", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse("-3", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse("99999999", NOW),
			 WORKER_HTTP_RETRY_AFTER_MAX_MS);
}

static void
test_retry_after_date(void **state)
{
	(void)state;
	assert_int_equal(worker_http_retry_after_parse(
	    "Wed, 21 Oct 2015 07:28:30 GMT", NOW), 30000);
	assert_int_equal(worker_http_retry_after_parse(
	    "Wednesday, 21-Oct-15 07:29:00 GMT", NOW), 60000);
	assert_int_equal(worker_http_retry_after_parse(
	    "Wed Oct 21 07:28:10 2015", NOW), 10000);
	/* in the past or now: no wait */
	assert_int_equal(worker_http_retry_after_parse(
	    "Wed, 21 Oct 2015 07:00:00 GMT", NOW), 0);
	assert_int_equal(worker_http_retry_after_parse(
	    "Wed, 21 Oct 2015 07:28:00 GMT", NOW), 0);
	/* far future: capped */
	assert_int_equal(worker_http_retry_after_parse(
	    "Fri, 01 Jan 2016 00:00:00 GMT", NOW), WORKER_HTTP_RETRY_AFTER_MAX_MS);
	assert_int_equal(worker_http_retry_after_parse("Not a date", NOW), 0);
}

static void
test_duration(void **state)
{
	(void)state;
	assert_int_equal(worker_http_duration_parse("1s"), 1000);
	assert_int_equal(worker_http_duration_parse("20ms"), 20);
	assert_int_equal(worker_http_duration_parse("1.5s"), 1500);
	assert_int_equal(worker_http_duration_parse("6m0s"), 360000);
	assert_int_equal(worker_http_duration_parse("1m30.5s"), 90500);
	assert_int_equal(worker_http_duration_parse("0s"), 0);
	assert_int_equal(worker_http_duration_parse("2h"),
			 WORKER_HTTP_RETRY_AFTER_MAX_MS);
	assert_int_equal(worker_http_duration_parse(""), -1);
	assert_int_equal(worker_http_duration_parse(NULL), -1);
	assert_int_equal(worker_http_duration_parse("5"), -1);
	assert_int_equal(worker_http_duration_parse("5x"), -1);
}

static const struct {
	const char *prov;
	long status;
	CURLcode cc;
	const char *code;
	enum job_outcome outcome;
	int event;
} table[] = {
	{ "openai", 200, CURLE_OK, NULL, OUT_COMPLETED, IPC_PROV_OK },
	{ "deepl", 204, CURLE_OK, NULL, OUT_COMPLETED, IPC_PROV_OK },
	/* transport failures */
	{ "openai", 0, CURLE_COULDNT_CONNECT, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_OPERATION_TIMEDOUT, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_GOT_NOTHING, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_PARTIAL_FILE, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_RECV_ERROR, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_COULDNT_RESOLVE_HOST, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 0, CURLE_PEER_FAILED_VERIFICATION, NULL, OUT_PERMANENT, -1 },
	{ "openai", 0, CURLE_UNSUPPORTED_PROTOCOL, NULL, OUT_PERMANENT, -1 },
	{ "openai", 0, CURLE_URL_MALFORMAT, NULL, OUT_PERMANENT, -1 },
	/* transient statuses */
	{ "openai", 408, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 500, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	{ "elevenlabs", 502, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	{ "deepl", 503, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	{ "openai", 504, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	/* rate limits */
	{ "openai", 429, CURLE_OK, "rate_limit_exceeded", OUT_RATE_LIMITED,
	  IPC_PROV_RATE_LIMITED },
	{ "deepl", 429, CURLE_OK, NULL, OUT_RATE_LIMITED, IPC_PROV_RATE_LIMITED },
	{ "deepl", 529, CURLE_OK, NULL, OUT_RATE_LIMITED, IPC_PROV_RATE_LIMITED },
	{ "openai", 529, CURLE_OK, NULL, OUT_TRANSIENT, -1 },
	{ "elevenlabs", 429, CURLE_OK, "too_many_concurrent_requests",
	  OUT_RATE_LIMITED, IPC_PROV_CONCURRENCY },
	{ "elevenlabs", 429, CURLE_OK, "system_busy", OUT_RATE_LIMITED,
	  IPC_PROV_RATE_LIMITED },
	/* quota and keys */
	{ "openai", 429, CURLE_OK, "insufficient_quota", OUT_PERMANENT,
	  IPC_PROV_QUOTA },
	{ "openai", 401, CURLE_OK, "invalid_api_key", OUT_PERMANENT, IPC_PROV_QUOTA },
	{ "elevenlabs", 401, CURLE_OK, "quota_exceeded", OUT_PERMANENT,
	  IPC_PROV_QUOTA },
	{ "deepl", 403, CURLE_OK, NULL, OUT_PERMANENT, IPC_PROV_QUOTA },
	{ "deepl", 456, CURLE_OK, NULL, OUT_PERMANENT, IPC_PROV_QUOTA },
	/* the request itself is wrong */
	{ "openai", 400, CURLE_OK, NULL, OUT_PERMANENT, -1 },
	{ "openai", 404, CURLE_OK, NULL, OUT_PERMANENT, -1 },
	{ "openai", 413, CURLE_OK, NULL, OUT_PERMANENT, -1 },
	{ "elevenlabs", 422, CURLE_OK, NULL, OUT_PERMANENT, -1 },
	{ "openai", 456, CURLE_OK, NULL, OUT_PERMANENT, -1 },
	/* error codes are each provider's own (its descriptor's) */
	{ "deepl", 429, CURLE_OK, "too_many_concurrent_requests",
	  OUT_RATE_LIMITED, IPC_PROV_RATE_LIMITED },
	{ "elevenlabs", 429, CURLE_OK, "insufficient_quota", OUT_RATE_LIMITED,
	  IPC_PROV_RATE_LIMITED },
	{ "openai", 301, CURLE_OK, NULL, OUT_PERMANENT, -1 },
};

static void
test_classify(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		struct worker_http_class c;
		worker_http_classify(provider_find(table[i].prov), table[i].status,
				     table[i].cc, table[i].code, &c);
		if ((int)c.outcome != (int)table[i].outcome ||
		    c.event != table[i].event)
			fail_msg("row %zu (%s %ld curl %d %s): got outcome %d event "
			    "%d, want %d %d", i, table[i].prov, table[i].status,
			    (int)table[i].cc, table[i].code ? table[i].code : "-",
			    (int)c.outcome, c.event, (int)table[i].outcome,
			    table[i].event);
	}
}

static void
error_case(const char *body, const char *code, const char *msg)
{
	char c[64], m[256];

	worker_http_error_parse(body, strlen(body), c, sizeof(c), m, sizeof(m));
	assert_string_equal(c, code);
	assert_string_equal(m, msg);
}

static void
test_error_parse(void **state)
{
	(void)state;
	error_case("{\"error\":{\"message\":\"You exceeded your current quota\","
	    "\"type\":\"insufficient_quota\",\"param\":null,"
	    "\"code\":\"insufficient_quota\"}}", "insufficient_quota",
	    "You exceeded your current quota");
	error_case("{\"error\":{\"message\":\"Rate limit\",\"type\":\"requests\","
	    "\"code\":\"rate_limit_exceeded\"}}", "rate_limit_exceeded",
	    "Rate limit");
	error_case("{\"error\":{\"message\":\"no quota\",\"type\":"
	    "\"insufficient_quota\",\"code\":null}}", "insufficient_quota",
	    "no quota");
	error_case("{\"detail\":{\"status\":\"too_many_concurrent_requests\","
	    "\"message\":\"Too many\\nrequests\"}}",
	    "too_many_concurrent_requests", "Too many requests");
	error_case("{\"detail\":[{\"loc\":[\"body\",\"file\"],\"msg\":\"field "
	    "required\",\"type\":\"value_error.missing\"}]}",
	    "value_error.missing", "field required");
	error_case("{\"detail\":\"Not Found\"}", "", "Not Found");
	error_case("{\"message\":\"Quota exceeded\"}", "", "Quota exceeded");
	error_case("<html>\r\n<h1>502 Bad\tGateway</h1></html>", "",
	    "<html> <h1>502 Bad Gateway</h1></html>");
	error_case("", "", "");
}

static void
test_scrub(void **state)
{
	char m[200];

	(void)state;
	snprintf(m, sizeof(m), "Incorrect API key provided: sk-abcdefghijklmnop.");
	worker_http_scrub(m, "sk-abcdefghijklmnop");
	assert_string_equal(m, "Incorrect API key provided: ***.");
	snprintf(m, sizeof(m), "key ...hijklmnop and sk-abc and xyz");
	worker_http_scrub(m, "sk-abcdefghijklmnop");
	assert_string_equal(m, "key ...*** and sk-abc and xyz");
	snprintf(m, sizeof(m), "nothing here");
	worker_http_scrub(m, NULL);
	worker_http_scrub(m, "short");
	assert_string_equal(m, "nothing here");
}

static struct config_entry entries[4];

static void
config_with(struct config *cfg, const char *sec, const char *key,
	    const char *val)
{
	memset(cfg, 0, sizeof(*cfg));
	if (sec == NULL)
		return;
	entries[0] = (struct config_entry){ (char *)sec, (char *)key,
		(char *)val };
	cfg->entries = entries;
	cfg->nentries = 1;
}

static void
write_file(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static void
test_key_load(void **state)
{
	char dir[] = "/tmp/mpfarm-test-http.XXXXXX", path[128], err[300];
	struct config cfg;
	char *key;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);

	unsetenv("OPENAI_API_KEY");
	config_with(&cfg, NULL, NULL, NULL);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), -1);
	assert_string_equal(err, "OPENAI_API_KEY is not set (or [openai] "
			    "api_key_file)");

	setenv("OPENAI_API_KEY", "  sk-from-env\n", 1);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), 0);
	assert_string_equal(key, "sk-from-env");
	worker_http_key_free(key);
	setenv("OPENAI_API_KEY", "", 1);

	write_file(path, "sk-secret-in-file\n\n", 0644);
	config_with(&cfg, "openai", "api_key_file", path);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "world-readable"));
	assert_null(strstr(err, "sk-secret"));

	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), 0);
	assert_string_equal(key, "sk-secret-in-file");
	worker_http_key_free(key);

	write_file(path, " \n\t\n", 0600);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));

	write_file(path, "sk-one\nsk-two\n", 0600);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "control characters"));
	assert_null(strstr(err, "sk-one"));

	unlink(path);
	assert_int_equal(worker_http_key_load(&cfg, "openai", "OPENAI_API_KEY",
					      &key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	rmdir(dir);
	unsetenv("OPENAI_API_KEY");
}

static void
test_opts(void **state)
{
	struct worker_http_opts o;
	struct config cfg;
	char err[300];

	(void)state;
	config_with(&cfg, NULL, NULL, NULL);
	assert_int_equal(worker_http_opts_load(&cfg, "openai",
	    "https://api.openai.com", &o, err, sizeof(err)), 0);
	assert_string_equal(o.base_url, "https://api.openai.com");
	assert_int_equal(o.connect_timeout, 10);
	assert_int_equal(o.max_response, WORKER_HTTP_RESPONSE_MAX);

	config_with(&cfg, "openai", "base_url", "http://127.0.0.1:8080//");
	assert_int_equal(worker_http_opts_load(&cfg, "openai", "https://x",
					       &o, err, sizeof(err)), 0);
	assert_string_equal(o.base_url, "http://127.0.0.1:8080");

	config_with(&cfg, "openai", "base_url", "ftp://example.org");
	assert_int_equal(worker_http_opts_load(&cfg, "openai", "https://x",
					       &o, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "[openai] base_url"));

	config_with(&cfg, "deepl", "low_speed_time", "soon");
	assert_int_equal(worker_http_opts_load(&cfg, "deepl", "https://x",
					       &o, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "[deepl] low_speed_time"));
}

static void
test_media_check(void **state)
{
	char dir[] = "/tmp/mpfarm-test-media.XXXXXX", path[128];
	struct provider_result res;
	int64_t size;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/empty file.mp3", dir);
	write_file(path, "", 0644);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	memset(&res, 0, sizeof(res));
	assert_int_equal(worker_http_media_check(fd, path, &size, &res), -1);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	assert_non_null(strstr(res.msg, "empty file"));
	close(fd);

	write_file(path, "abc", 0644);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	memset(&res, 0, sizeof(res));
	assert_int_equal(worker_http_media_check(fd, path, &size, &res), 0);
	assert_int_equal(size, 3);
	close(fd);
	unlink(path);

	/* no descriptor: the worker could not open it (its own message) */
	memset(&res, 0, sizeof(res));
	assert_int_equal(worker_http_media_check(-1, path, &size, &res), -1);
	assert_non_null(strstr(res.msg, path));

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	memset(&res, 0, sizeof(res));
	assert_int_equal(worker_http_media_check(fd, dir, &size, &res), -1);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	close(fd);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_date),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_error_parse),
		cmocka_unit_test(test_scrub),
		cmocka_unit_test(test_key_load),
		cmocka_unit_test(test_opts),
		cmocka_unit_test(test_media_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
