/*
 * test_deepl_chunk.c - the DeepL splitter and request planner: pieces
 * come back in order and rebuild the text byte for byte, no piece or
 * request breaks a limit, cuts prefer paragraphs over sentences over
 * words, and a sentence longer than the limit is cut only between UTF-8
 * characters.  Also the target_lang mapping.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "worker_http.h"

__attribute__((weak)) void worker_heartbeat(void) {}
__attribute__((weak)) int worker_token_acquire(void) { return 0; }
__attribute__((weak)) void
worker_provider_event(int k, int64_t ms, int http, const char *t)
{
	(void)k; (void)ms; (void)http; (void)t;
}

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	       c == '\f' || c == '\v';
}

static bool
utf8_valid(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	bool ok = j != NULL;

	json_decref(j);
	return ok;
}

/* Every invariant the provider relies on, for any text and limit. */
static void
check_pieces(const char *t, size_t len, size_t max, const struct deepl_piece *p,
	     int n, bool valid_utf8)
{
	struct buf re;
	size_t pos = n > 0 ? p[0].off : len;

	buf_init(&re);
	for (size_t i = 0; i < pos; i++)
		assert_true(is_space(t[i]));
	buf_append(&re, t, pos);
	for (int i = 0; i < n; i++) {
		assert_int_equal(p[i].off, pos);
		assert_true(p[i].len > 0);
		assert_true(p[i].len <= max);
		assert_false(is_space(t[p[i].off]));
		assert_false(is_space(t[p[i].off + p[i].len - 1]));
		for (size_t k = 0; k < p[i].sep_len; k++)
			assert_true(is_space(t[p[i].off + p[i].len + k]));
		if (valid_utf8)
			assert_true(utf8_valid(t + p[i].off, p[i].len));
		buf_append(&re, t + p[i].off, p[i].len + p[i].sep_len);
		pos = p[i].off + p[i].len + p[i].sep_len;
	}
	assert_int_equal(pos, len);
	assert_int_equal(re.len, len);
	assert_memory_equal(re.data ? re.data : "", t, len);
	buf_free(&re);
}

static void
test_small_text(void **state)
{
	const char *t = "\n  Hello world.  How are you?\n";
	struct deepl_piece *p;
	int n;

	(void)state;
	assert_int_equal(worker_deepl_split(t, strlen(t), 1000, &p, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(p[0].off, 3);
	assert_int_equal(p[0].len, strlen("Hello world.  How are you?"));
	assert_int_equal(p[0].sep_len, 1);
	check_pieces(t, strlen(t), 1000, p, n, true);
	free(p);

	assert_int_equal(worker_deepl_split(" \n\t ", 4, 1000, &p, &n), 0);
	assert_int_equal(n, 0);
	free(p);
	assert_int_equal(worker_deepl_split("", 0, 1000, &p, &n), 0);
	assert_int_equal(n, 0);
	free(p);
	assert_int_equal(worker_deepl_split("abc", 3, 3, &p, &n), -1);
}

static void
test_prefers_paragraphs(void **state)
{
	/* both sentences of paragraph 1 and the start of paragraph 2 fit in
	 * 60 bytes, but the cut goes at the paragraph break */
	const char *t = "One two three. Four five six.\n\nSeven eight. Nine ten "
			"eleven twelve thirteen.";
	struct deepl_piece *p;
	int n;

	(void)state;
	assert_int_equal(worker_deepl_split(t, strlen(t), 60, &p, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(p[0].len, strlen("One two three. Four five six."));
	assert_int_equal(p[0].sep_len, 2);
	check_pieces(t, strlen(t), 60, p, n, true);
	free(p);
}

static void
test_prefers_sentences(void **state)
{
	const char *t = "Alpha beta gamma. Delta epsilon zeta eta theta iota "
			"kappa lambda.";
	struct deepl_piece *p;
	int n;

	(void)state;
	assert_int_equal(worker_deepl_split(t, strlen(t), 40, &p, &n), 0);
	assert_true(n >= 2);
	assert_int_equal(p[0].len, strlen("Alpha beta gamma."));
	check_pieces(t, strlen(t), 40, p, n, true);
	free(p);

	/* CJK sentence marks end a sentence with no space after them */
	const char *c = "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82\xe5\x86\x8d\xe8"
			"\xa7\x81\xe3\x80\x82\xe8\xb0\xa2\xe8\xb0\xa2";
	assert_int_equal(worker_deepl_split(c, strlen(c), 14, &p, &n), 0);
	assert_int_equal(p[0].len, 9);
	assert_int_equal(p[0].sep_len, 0);
	check_pieces(c, strlen(c), 14, p, n, true);
	free(p);
}

static void
test_long_sentence_utf8(void **state)
{
	struct buf t;
	struct deepl_piece *p;
	int n;

	(void)state;
	buf_init(&t);
	/* no space anywhere: Hebrew (2 bytes), CJK (3), emoji (4), ASCII */
	for (int i = 0; i < 500; i++)
		buf_append(&t, "\xd7\xa9\xe4\xb8\xad\xf0\x9f\x98\x80x", 10);
	for (size_t max = 4; max < 40; max++) {
		assert_int_equal(worker_deepl_split(t.data, t.len, max, &p, &n), 0);
		assert_true(n > 1);
		check_pieces(t.data, t.len, max, p, n, true);
		free(p);
	}
	buf_free(&t);
}

static void
test_random_texts(void **state)
{
	static const char *const words[] = { "the", "Gr\xc3\xbc\xc3\x9f" "e",
		"\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d", "word.", "end!", "why?",
		"\"quoted.\"", "\xe4\xb8\xad\xe6\x96\x87\xe3\x80\x82", "a",
		"longerwordwithoutanybreaksinsideit", "tab\tbed", "\\back" };
	static const char *const seps[] = { " ", " ", " ", "  ", "\n", "\n\n",
		" \n \n", "\r\n" };
	struct deepl_piece *p;
	int n;

	(void)state;
	srand(42);
	for (int round = 0; round < 300; round++) {
		struct buf t;
		int nw = rand() % 400;
		size_t max = 4 + (size_t)(rand() % 200);
		buf_init(&t);
		if (rand() % 3 == 0)
			buf_append(&t, "\n ", 2);
		for (int i = 0; i < nw; i++) {
			const char *w = words[rand() % 12];
			const char *s = seps[rand() % 8];
			buf_append(&t, w, strlen(w));
			buf_append(&t, s, strlen(s));
		}
		buf_terminate(&t);
		assert_int_equal(worker_deepl_split(t.data, t.len, max, &p, &n), 0);
		check_pieces(t.data, t.len, max, p, n, true);
		free(p);
		buf_free(&t);
	}
}

static void
test_json_len(void **state)
{
	const char *const s[] = { "plain", "quote\" back\\ slash/", "\n\r\t\b\f",
		"\x01\x1f ctl", "\xc3\xbc\xd7\xa9\xf0\x9f\x98\x80", "" };

	(void)state;
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		json_t *j = json_string(s[i]);
		char *d = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
		assert_int_equal(worker_deepl_json_len(s[i], strlen(s[i])),
				 strlen(d) - 2);
		free(d);
		json_decref(j);
	}
}

/* Build each request body as the provider does and measure it. */
static void
check_plan(const char *t, size_t len, size_t max_body, int max_texts)
{
	struct deepl_piece *p;
	int n, nb, last = -1;

	assert_int_equal(worker_deepl_plan(t, len, 20000, max_body, max_texts,
					   &p, &n, &nb), 0);
	check_pieces(t, len, max_body < 20000 ? max_body : 20000, p, n, false);
	for (int b = 0; b < nb; b++) {
		json_t *body = json_object(), *arr = json_array();
		int count = 0;
		for (int i = 0; i < n; i++) {
			if (p[i].batch != b)
				continue;
			assert_true(i == 0 || p[i - 1].batch <= b);
			assert_true(last < i);     /* in order */
			last = i;
			json_array_append_new(arr, json_stringn_nocheck(t + p[i].off,
								       p[i].len));
			count++;
		}
		assert_true(count >= 1);
		assert_true(count <= max_texts);
		json_object_set_new(body, "text", arr);
		json_object_set_new(body, "target_lang", json_string("EN-GB"));
		json_object_set_new(body, "formality", json_string("prefer_less"));
		char *d = json_dumps(body, JSON_COMPACT);
		assert_true(strlen(d) < max_body);
		free(d);
		json_decref(body);
	}
	assert_int_equal(last, n - 1);
	free(p);
}

static void
test_plan_limits(void **state)
{
	struct buf t;
	int n, nb;
	struct deepl_piece *p;

	(void)state;
	/* one long paragraph of ~600 KB: several requests under 128 KiB */
	buf_init(&t);
	for (int i = 0; i < 12000; i++)
		buf_append(&t, "Sentence \"number\" here.\tAnd on. ", 32);
	buf_terminate(&t);
	check_plan(t.data, t.len, 128 * 1024, 50);
	assert_int_equal(worker_deepl_plan(t.data, t.len, 20000, 128 * 1024, 50,
					   &p, &n, &nb), 0);
	assert_true(nb >= 4);
	free(p);
	buf_free(&t);

	/* many short paragraphs: at most 50 texts per request */
	buf_init(&t);
	for (int i = 0; i < 2000; i++)
		buf_printf(&t, "Paragraph %d has a few words in it.\n\n", i);
	buf_terminate(&t);
	check_plan(t.data, t.len, 128 * 1024, 50);
	check_plan(t.data, t.len, 4096, 3);
	buf_free(&t);

	/* escaping-heavy text still fits: control bytes take 6 each */
	buf_init(&t);
	for (int i = 0; i < 60000; i++)
		buf_append(&t, "\x01", 1);
	buf_terminate(&t);
	check_plan(t.data, t.len, 128 * 1024, 50);
	buf_free(&t);

	assert_int_equal(worker_deepl_plan("  ", 2, 20000, 128 * 1024, 50,
					   &p, &n, &nb), 0);
	assert_int_equal(n, 0);
	assert_int_equal(nb, 0);
	free(p);
}

static void
test_target(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(worker_deepl_target("en", NULL, NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "EN-US");
	assert_int_equal(worker_deepl_target("en", "EN-GB", NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "EN-GB");
	assert_int_equal(worker_deepl_target("en", "gb", NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "EN-GB");
	assert_int_equal(worker_deepl_target("en", "en_us", NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "EN-US");
	assert_int_equal(worker_deepl_target("en", "fr", NULL, out, sizeof(out)), -1);
	assert_int_equal(worker_deepl_target("pt", NULL, NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "PT-BR");
	assert_int_equal(worker_deepl_target("pt", NULL, "pt-pt", out, sizeof(out)), 0);
	assert_string_equal(out, "PT-PT");
	assert_int_equal(worker_deepl_target("pt", NULL, "PT-US", out, sizeof(out)), -1);
	assert_int_equal(worker_deepl_target("de", "EN-GB", NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "DE");
	assert_int_equal(worker_deepl_target("zh-hans", NULL, NULL, out, sizeof(out)), 0);
	assert_string_equal(out, "ZH-HANS");
}

/* The inputs that made the splitter quadratic: a long run of trailing
 * whitespace (it was trimmed again for every piece), a long run of
 * closing quotes (walked back from every position), and a long run of
 * whitespace in the middle.  Correctness here; the 100 MB timing is in
 * `make bench` (bench_split). */
static void
test_long_runs(void **state)
{
	size_t words = 400000, ws = 2000000, len = 0, mid;
	char *t = malloc(words + ws * 2 + 16);
	struct deepl_piece *p;
	int n;

	(void)state;
	for (size_t i = 0; i < words; i++)
		t[len++] = i % 7 == 6 ? ' ' : (i % 301 == 300 ? '.' : 'w');
	mid = len;
	memset(t + len, ' ', ws / 2);          /* spaces in the middle */
	len += ws / 2;
	t[len++] = 'x';
	memset(t + len, '\n', 3);
	len += 3;
	memset(t + len, ' ', ws);              /* trailing whitespace */
	len += ws;
	assert_int_equal(worker_deepl_split(t, len, 12000, &p, &n), 0);
	check_pieces(t, len, 12000, p, n, true);
	assert_true(n >= (int)(words / 12000));
	/* the middle run of spaces is one separator, not cut into */
	bool found = false;
	for (int i = 0; i < n; i++)
		found = found || (p[i].off + p[i].len == mid &&
				  p[i].sep_len == ws / 2);
	assert_true(found);
	assert_int_equal(p[n - 1].sep_len, ws + 3);
	free(p);

	/* a run of closing quotes longer than any piece */
	len = 0;
	memcpy(t, "Hi.", 3);
	len = 3;
	memset(t + len, '"', ws);
	len += ws;
	memcpy(t + len, " end", 4);
	len += 4;
	assert_int_equal(worker_deepl_split(t, len, 20000, &p, &n), 0);
	check_pieces(t, len, 20000, p, n, true);
	free(p);
	free(t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_small_text),
		cmocka_unit_test(test_prefers_paragraphs),
		cmocka_unit_test(test_prefers_sentences),
		cmocka_unit_test(test_long_sentence_utf8),
		cmocka_unit_test(test_random_texts),
		cmocka_unit_test(test_json_len),
		cmocka_unit_test(test_plan_limits),
		cmocka_unit_test(test_target),
		cmocka_unit_test(test_long_runs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
