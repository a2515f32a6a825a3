/*
 * test_http_body.c - provider answers as untrusted input: the JSON
 * decoder's memory budget refuses a body of empty objects but takes a
 * real answer, the parsers classify what they refuse, and provider text
 * is cleaned (controls, C1, invalid UTF-8, length at a character
 * boundary) and scrubbed of the key, a refusal included.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker_http.h"

#define KEY "sk-test-Z9y8X7w6V5u4"

static char *
repeat(const char *head, const char *item, size_t n, const char *tail,
       size_t *len)
{
	size_t hl = strlen(head), il = strlen(item), tl = strlen(tail);
	char *s = malloc(hl + il * n + tl + 1), *p = s;

	memcpy(p, head, hl);
	p += hl;
	for (size_t i = 0; i < n; i++, p += il)
		memcpy(p, item, il);
	memcpy(p, tail, tl + 1);
	*len = hl + il * n + tl;
	return s;
}

static void
test_budget(void **state)
{
	size_t len;
	bool big = false;
	char *s = repeat("{\"text\":\"x\",\"words\":[", "{},", 300000, "{}]}",
			 &len);
	json_t *j;
	(void)state;

	/* about 75 bytes of objects per 3 bytes of body: refused */
	assert_null(worker_http_json_load(s, len, &big));
	assert_true(big);
	free(s);
	/* real-shaped words take about 8: accepted */
	s = repeat("{\"text\":\"x\",\"words\":[", "{\"text\":\"word\",\"start\":"
		   "1.25,\"end\":1.5,\"type\":\"word\",\"logprob\":-0.1},", 30000,
		   "{}]}", &len);
	j = worker_http_json_load(s, len, &big);
	assert_non_null(j);
	assert_false(big);
	assert_int_equal(json_array_size(json_object_get(j, "words")), 30001);
	json_decref(j);
	free(s);
	/* not JSON is not "too big"; duplicate keys are refused */
	assert_null(worker_http_json_load("{\"text\": nope", 13, &big));
	assert_false(big);
	assert_null(worker_http_json_load("{\"a\":1,\"a\":2}", 13, &big));
}

static void
test_parse_classifies(void **state)
{
	struct provider_result res = { 0 };
	struct buf b;
	size_t len;
	char *s = repeat("{\"text\":\"x\",\"words\":[", "{},", 300000, "{}]}",
			 &len);
	(void)state;

	buf_init(&b);
	buf_append(&b, s, len);
	buf_terminate(&b);
	assert_int_equal(worker_elevenlabs_parse(&b, &res), -1);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	assert_non_null(strstr(res.msg, "too large to decode"));
	buf_free(&b);
	free(s);

	memset(&res, 0, sizeof(res));
	buf_append(&b, "{\"txt\":1}", 9);
	buf_terminate(&b);
	assert_int_equal(worker_openai_transcript_parse(&b, &res), -1);
	assert_int_equal(res.outcome, OUT_TRANSIENT);
	assert_string_equal(res.msg, "malformed response from openai: no \"text\"");
	buf_free(&b);

	memset(&res, 0, sizeof(res));
	s = "{\"text\":\"Hi there.\",\"words\":[{\"text\":\"Hi\",\"start\":0,"
	    "\"end\":0.5,\"type\":\"word\"},{\"text\":\" \",\"type\":\"spacing\"},"
	    "{\"text\":\"there.\",\"start\":0.5,\"end\":1,\"type\":\"word\"}]}";
	buf_append(&b, s, strlen(s));
	buf_terminate(&b);
	assert_int_equal(worker_elevenlabs_parse(&b, &res), 0);
	assert_int_equal(res.nout, 4);          /* .txt .json .srt .vtt */
	assert_memory_equal(res.out[0].data, "Hi there.\n", 10);
	assert_int_equal(b.len, 0);             /* taken over as the .json */
	provider_result_free(&res);
	buf_free(&b);
}

static void
test_refusal_cleaned(void **state)
{
	struct provider_result res = { 0 };
	const char *body = "{\"choices\":[{\"message\":{\"content\":null,"
	    "\"refusal\":\"No\\u001b[2J way\\r\\n\\u0085 key " KEY " \\u00e9t\\u00e9\"}}]}";
	char *out = NULL;
	(void)state;

	assert_int_equal(worker_openai_chat_parse(body, strlen(body), KEY, &out,
						  &res), -1);
	assert_null(out);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	assert_string_equal(res.msg, "the model refused to translate: "
			    "No [2J way key *** \xc3\xa9t\xc3\xa9");
}

static void
test_text_clean(void **state)
{
	char d[16];
	(void)state;

	/* invalid bytes become '?', controls one space between words */
	worker_http_text_clean(d, sizeof(d), "a\xff\x01\x02" "b\xc3", 6, NULL);
	assert_string_equal(d, "a? b?");
	/* a character is never cut in two at the end of the buffer */
	worker_http_text_clean(d, 6, "abcd\xc3\xa9", 6, NULL);
	assert_string_equal(d, "abcd");
	/* overlong forms and surrogates are not UTF-8 */
	worker_http_text_clean(d, sizeof(d), "\xc0\xaf\xed\xa0\x80", 5, NULL);
	assert_string_equal(d, "?????");
	/* scrubbed runs of the key */
	worker_http_text_clean(d, sizeof(d), "k=" KEY, strlen(KEY) + 2, KEY);
	assert_string_equal(d, "k=***");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_parse_classifies),
		cmocka_unit_test(test_refusal_cleaned),
		cmocka_unit_test(test_text_clean),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
