/*
 * test_review_master.c - the pure parts of the security review's master
 * fixes: text_escape's SHOW form (what failed, show, the dashboard and a
 * worker's title print: C0, DEL, C1 and bytes that are not UTF-8 as \xNN,
 * everything else kept) and serve's Host check against DNS rebinding.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "master_serve.h"

static void
show_eq(const char *in, const char *want)
{
	char *got = text_escape(in, strlen(in), TEXT_ESCAPE_SHOW);
	assert_string_equal(got, want);
	free(got);
}

static void
test_escape_show(void **state)
{
	(void)state;
	show_eq("/rec/a.wav", "/rec/a.wav");
	show_eq("a\\b", "a\\b");                      /* kept, not doubled */
	show_eq("caf\xc3\xa9 \xd7\x90\xd7\x91 \xf0\x9f\x8e\xa4",
	    "caf\xc3\xa9 \xd7\x90\xd7\x91 \xf0\x9f\x8e\xa4");
	show_eq("e\x1b[2J\x07", "e\\x1b[2J\\x07");
	show_eq("c1\xc2\x9b" "31m\xc2\x85", "c1\\xc2\\x9b31m\\xc2\\x85");
	show_eq("nbsp\xc2\xa0ok", "nbsp\xc2\xa0ok");  /* U+00A0 is text */
	show_eq("raw\x9b\x85\xff", "raw\\x9b\\x85\\xff");
	show_eq("del\x7f", "del\\x7f");
}

static void
test_host_allowed(void **state)
{
	struct config cfg = { 0 };
	static const char *const ok[] = {
		NULL, "127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1",
		"localhost.", "[::1]", "[::1]:8080", "192.168.1.5:8080",
		"[fe80::1]:80", "farm.lan:8080", "Dash.Example.org",
		"other.lan:9", NULL
	};
	static const char *const bad[] = {
		"attacker.example", "attacker.example:8080", "", ":8080",
		"127.0.0.1.evil", "localhost.evil", "[::1", "[::1]x",
		"[nothex]:80", "127.0.0.1:80x", "farm.lan.evil", "example.org",
		"1.2.3.4:5:6", NULL
	};

	(void)state;
	cfg.listen = "farm.lan:8080";
	cfg.allowed_hosts = "dash.example.org , other.lan";
	assert_true(serve_host_allowed(&cfg, NULL));
	for (int i = 1; ok[i]; i++)
		if (!serve_host_allowed(&cfg, ok[i]))
			fail_msg("refused %s", ok[i]);
	for (int i = 0; bad[i]; i++)
		if (serve_host_allowed(&cfg, bad[i]))
			fail_msg("accepted %s", bad[i]);
	cfg.allowed_hosts = "*";
	assert_true(serve_host_allowed(&cfg, "anything.example:1"));
	cfg.allowed_hosts = NULL;
	cfg.listen = "127.0.0.1:8080";
	assert_false(serve_host_allowed(&cfg, "dash.example.org"));
	assert_true(serve_host_allowed(&cfg, "127.0.0.1:8080"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_show),
		cmocka_unit_test(test_host_allowed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
