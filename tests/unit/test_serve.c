/*
 * test_serve.c - the pure parts of `mpfarm serve`: HTML escaping of names
 * (markup, quotes, control characters, bytes that are not UTF-8, valid
 * multi-byte UTF-8 kept), master_json_text for names that are not UTF-8,
 * and /metrics built from a status --json object: families declared once,
 * labels split from "translate:de", counters with _total, the master's
 * figures only while it is live.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "master_serve.h"

static char *
html(const char *s)
{
	struct buf b;
	char *out;

	buf_init(&b);
	serve_html_text(&b, s);
	buf_terminate(&b);
	out = xstrdup(b.data ? b.data : "");
	buf_free(&b);
	return out;
}

static void
test_html_escapes(void **state)
{
	(void)state;
	char *s = html("<script>alert('x')</script>&\"");
	assert_string_equal(s, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
	    "&amp;&quot;");
	free(s);
	s = html("a\nb\x1b" "c");
	assert_string_equal(s, "a\\x0ab\\x1bc");
	free(s);
	/* valid UTF-8 stays; a lone byte, a cut sequence and 0xff do not */
	s = html("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d.mp3");
	assert_string_equal(s, "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d.mp3");
	free(s);
	s = html("a\xff" "b\xd7" "c\xe2\x82");
	assert_string_equal(s, "a\\xffb\\xd7c\\xe2\\x82");
	free(s);
}

static void
test_json_text(void **state)
{
	(void)state;
	json_t *j = master_json_text("ok \xc3\xa9");
	assert_string_equal(json_string_value(j), "ok \xc3\xa9");
	json_decref(j);
	j = master_json_text("bad\xff\\");
	assert_string_equal(json_string_value(j), "bad\\xff\\x5c");
	json_decref(j);
}

static char *
metrics(const char *status_json)
{
	struct serve_snap s = { 0 };
	struct buf b;
	char *out;

	s.status = json_loads(status_json, 0, NULL);
	assert_non_null(s.status);
	buf_init(&b);
	serve_metrics_write(&s, &b);
	buf_terminate(&b);
	out = xstrdup(b.data);
	buf_free(&b);
	json_decref(s.status);
	return out;
}

static int
count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
test_metrics_no_master(void **state)
{
	(void)state;
	char *m = metrics("{\"files\": 3, \"stages\": {\"transcribe\": "
	    "{\"completed\": 2, \"failed\": 1}, \"translate:de\": "
	    "{\"completed\": 1}}, \"waiting_for_transcript\": {\"translate:de\": "
	    "2}, \"oldest_in_progress_age_s\": null, \"providers\": {}}");
	assert_non_null(strstr(m, "\nmpfarm_files 3\n"));
	assert_non_null(strstr(m, "mpfarm_jobs{stage=\"transcribe\",lang=\"\","
	    "status=\"failed\"} 1\n"));
	assert_non_null(strstr(m, "mpfarm_jobs{stage=\"translate\",lang=\"de\","
	    "status=\"completed\"} 1\n"));
	assert_non_null(strstr(m, "mpfarm_jobs_waiting_for_transcript{stage="
	    "\"translate\",lang=\"de\"} 2\n"));
	assert_int_equal(count(m, "# TYPE mpfarm_jobs gauge\n"), 1);
	assert_non_null(strstr(m, "\nmpfarm_master_up 0\n"));
	assert_null(strstr(m, "oldest_in_progress"));
	assert_null(strstr(m, "_total"));
	free(m);
}

static void
test_metrics_live_master(void **state)
{
	(void)state;
	char *m = metrics("{\"files\": 1, \"stages\": {}, \"providers\": "
	    "{\"openai\": {\"inflight\": 2, \"limit\": null, \"requests\": 9, "
	    "\"rate_limited\": 1, \"paused_s\": 0}}, \"farm\": {\"pid\": 1, "
	    "\"stale\": false, \"respawns\": 4, \"hung_kills\": 0, "
	    "\"rate_per_s\": 0.5, \"slots\": [{\"state\": \"busy\"}, "
	    "{\"state\": \"busy\"}, {\"state\": \"idle\"}], \"stages\": "
	    "{\"transcribe\": {\"done\": 7, \"failed\": 1, \"retried\": 2}}}}");
	assert_non_null(strstr(m, "\nmpfarm_master_up 1\n"));
	assert_non_null(strstr(m, "# TYPE mpfarm_worker_respawns_total counter\n"
	    "mpfarm_worker_respawns_total 4\n"));
	assert_non_null(strstr(m, "mpfarm_workers{state=\"busy\"} 2\n"));
	assert_non_null(strstr(m, "mpfarm_workers{state=\"idle\"} 1\n"));
	assert_non_null(strstr(m, "mpfarm_jobs_completed_total{stage="
	    "\"transcribe\"} 7\n"));
	assert_non_null(strstr(m, "mpfarm_provider_inflight{provider="
	    "\"openai\"} 2\n"));
	assert_non_null(strstr(m, "mpfarm_provider_requests_total{provider="
	    "\"openai\"} 9\n"));
	/* unlimited: no limit sample */
	assert_null(strstr(m, "mpfarm_provider_limit{"));
	assert_non_null(strstr(m, "mpfarm_jobs_per_second 0.5\n"));
	free(m);
	/* a stale master: its figures are not served */
	m = metrics("{\"files\": 1, \"stages\": {}, \"farm\": {\"stale\": true, "
	    "\"respawns\": 4}}");
	assert_non_null(strstr(m, "\nmpfarm_master_up 0\n"));
	assert_null(strstr(m, "respawns"));
	free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_html_escapes),
		cmocka_unit_test(test_json_text),
		cmocka_unit_test(test_metrics_no_master),
		cmocka_unit_test(test_metrics_live_master),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
