/*
 * test_subtitle.c - cue building and the two file formats: exact SRT and
 * WebVTT bytes for a small case, cuts at pauses and sentence ends, and
 * the length, line and duration limits on long speech (counted in
 * characters, not bytes), plus the odd inputs providers send (missing
 * times, words without spaces between them, markup in WebVTT).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker_subtitle.h"

__attribute__((weak)) void worker_heartbeat(void) {}
__attribute__((weak)) int worker_token_acquire(void) { return 0; }
__attribute__((weak)) void
worker_provider_event(int k, int64_t ms, int http, const char *t)
{
	(void)k; (void)ms; (void)http; (void)t;
}

#define W(t, s, e) { t, sizeof(t) - 1, s, e, true }

static size_t
cps(const char *s, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xC0) != 0x80;
	return c;
}

static void
test_simple_files(void **state)
{
	const struct sub_word w[] = {
		W("Hello", 0.0, 0.4), W("world.", 0.5, 1.0),
		W("Second", 3660.0, 3660.5), W("cue", 3660.6, 3661.0),
		W("here", 3661.1, 3661.2),
	};
	struct sub_cue *c;
	size_t n, len;
	char *s;

	(void)state;
	assert_int_equal(worker_subtitle_cues(w, 5, &c, &n), 0);
	assert_int_equal(n, 2);
	s = worker_subtitle_srt(c, n, &len);
	assert_string_equal(s,
	    "1\n00:00:00,000 --> 00:00:01,000\nHello world.\n\n"
	    "2\n01:01:00,000 --> 01:01:01,200\nSecond cue here\n\n");
	assert_int_equal(len, strlen(s));
	free(s);
	s = worker_subtitle_vtt(c, n, &len);
	assert_string_equal(s, "WEBVTT\n\n"
	    "00:00:00.000 --> 00:00:01.000\nHello world.\n\n"
	    "01:01:00.000 --> 01:01:01.200\nSecond cue here\n\n");
	free(s);
	worker_subtitle_cues_free(c, n);
}

static void
test_pause_and_sentence(void **state)
{
	const struct sub_word w[] = {
		W("no", 0.0, 0.3), W("pause", 0.4, 0.8),
		W("after", 1.6, 2.0),                     /* gap 0.8 s */
		W("short", 2.2, 2.5), W("gap", 3.1, 3.3), /* gap 0.6 s */
		W("Done!", 3.4, 3.8), W("next", 3.9, 4.2),
	};
	struct sub_cue *c;
	size_t n;

	(void)state;
	assert_int_equal(worker_subtitle_cues(w, 7, &c, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0].text, "no pause");
	assert_string_equal(c[1].text, "after short gap Done!");
	assert_string_equal(c[2].text, "next");
	/* short cues are held up to 1 s, never into the next one */
	assert_true(fabs(c[0].end - 1.0) < 1e-9);
	assert_true(fabs(c[1].start - 1.6) < 1e-9);
	assert_true(fabs(c[1].end - 3.8) < 1e-9);
	assert_true(fabs(c[2].end - 4.9) < 1e-9);
	worker_subtitle_cues_free(c, n);
}

static void
test_limits(void **state)
{
	static const char *const vocab[] = { "interview", "\xd7\xa9\xd7\x9c"
		"\xd7\x95\xd7\x9d", "Gr\xc3\xbc\xc3\x9f" "e", "and", "a",
		"remembered", "the", "village" };
	struct sub_word w[2000];
	struct sub_cue *c;
	size_t n;
	double t = 0;

	(void)state;
	for (int i = 0; i < 2000; i++) {
		const char *v = vocab[(i * 7) % 8];
		w[i] = (struct sub_word){ v, strlen(v), t, t + 0.25, true };
		t += 0.3;
	}
	assert_int_equal(worker_subtitle_cues(w, 2000, &c, &n), 0);
	assert_true(n > 50);
	for (size_t i = 0; i < n; i++) {
		const char *nl = strchr(c[i].text, '\n');
		size_t l1 = nl ? (size_t)(nl - c[i].text) : strlen(c[i].text);
		assert_true(cps(c[i].text, l1) <= SUB_LINE_MAX);
		if (nl != NULL) {
			assert_null(strchr(nl + 1, '\n'));
			assert_true(cps(nl + 1, strlen(nl + 1)) <= SUB_LINE_MAX);
			/* two lines only when one would not do */
			assert_true(cps(c[i].text, strlen(c[i].text)) > SUB_LINE_MAX);
		}
		assert_true(c[i].end - c[i].start <= SUB_DUR_MAX + 1e-9);
		assert_true(c[i].end >= c[i].start);
		if (i + 1 < n)
			assert_true(c[i].end <= c[i + 1].start);
	}
	worker_subtitle_cues_free(c, n);
}

static void
test_odd_words(void **state)
{
	struct sub_word w[] = {
		W("  <b>", NAN, NAN), W("", 0.5, 0.6), W("a&b", 0.5, 1.2),
		W("line\nbreak", NAN, 1.5),
		/* no space between CJK words */
		{ "\xe4\xbd\xa0\xe5\xa5\xbd", 6, 3.0, 3.2, true },
		{ "\xe4\xb8\x96\xe7\x95\x8c", 6, 3.2, 3.4, false },
	};
	struct sub_cue *c;
	size_t n, len;
	char *s;

	(void)state;
	assert_int_equal(worker_subtitle_cues(w, 6, &c, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[0].text, "<b> a&b line break");
	assert_true(c[0].start == 0.0);
	assert_string_equal(c[1].text, "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96"
			    "\xe7\x95\x8c");
	s = worker_subtitle_vtt(c, n, &len);
	assert_non_null(strstr(s, "\n&lt;b&gt; a&amp;b line break\n"));
	free(s);
	worker_subtitle_cues_free(c, n);

	assert_int_equal(worker_subtitle_cues(w, 0, &c, &n), 0);
	assert_int_equal(n, 0);
	s = worker_subtitle_srt(c, n, &len);
	assert_string_equal(s, "");
	assert_int_equal(len, 0);
	free(s);
	worker_subtitle_cues_free(c, n);
}

static void
test_spread(void **state)
{
	struct sub_word *w = NULL;
	size_t n = 0, cap = 0;

	(void)state;
	worker_subtitle_spread(" ab  cd\n", 10.0, 14.0, 100, &w, &n, &cap);
	worker_subtitle_spread("", 14.0, 15.0, 100, &w, &n, &cap);
	worker_subtitle_spread("efgh", 15.0, 16.0, 100, &w, &n, &cap);
	assert_int_equal(n, 3);
	assert_int_equal(w[0].len, 2);
	assert_memory_equal(w[0].text, "ab", 2);
	assert_true(fabs(w[0].start - 10.0) < 1e-9);
	assert_true(fabs(w[0].end - 12.0) < 1e-9);
	assert_true(fabs(w[1].start - 12.0) < 1e-9);
	assert_true(fabs(w[1].end - 14.0) < 1e-9);
	assert_memory_equal(w[2].text, "efgh", 4);
	assert_true(fabs(w[2].end - 16.0) < 1e-9);
	free(w);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_files),
		cmocka_unit_test(test_pause_and_sentence),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_odd_words),
		cmocka_unit_test(test_spread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
