/*
 * test_review_worker.c - the worker-side bounds of the security review:
 * words spread over OpenAI segments share one budget (nothing grows past
 * it, a refused segment appends nothing), a transcription answer of one
 * long "a a a ..." segment fails permanently, a translation assembled
 * from many answers is bounded as a whole, and an exec translation
 * command may not use {input} (quoted counts, escaped does not).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common_config.h"
#include "worker_http.h"
#include "worker_subtitle.h"

static void
test_spread_budget(void **state)
{
	struct sub_word *w = NULL;
	size_t n = 0, cap = 0;
	(void)state;

	assert_int_equal(worker_subtitle_spread("a b c", 0, 1, 5, &w, &n, &cap),
			 0);
	/* three more would make six: refused whole, nothing appended */
	assert_int_equal(worker_subtitle_spread(" d e  f ", 1, 2, 5, &w, &n,
						&cap), -1);
	assert_int_equal(n, 3);
	assert_int_equal(worker_subtitle_spread("d e", 1, 2, 5, &w, &n, &cap), 0);
	assert_int_equal(n, 5);
	assert_true(cap <= 5);          /* the array never grows past max */
	assert_memory_equal(w[4].text, "e", 1);
	assert_int_equal(worker_subtitle_spread("   ", 2, 3, 5, &w, &n, &cap), 0);
	assert_int_equal(worker_subtitle_spread("x", 2, 3, 5, &w, &n, &cap), -1);
	free(w);
}

static char *
long_segment(size_t words, size_t *len)
{
	const char *head = "{\"text\":\"x\",\"segments\":[{\"start\":0,\"end\":1,"
		"\"text\":\"";
	const char *tail = "\"}]}";
	size_t hl = strlen(head), tl = strlen(tail);
	char *s = malloc(hl + 2 * words + tl + 1);

	memcpy(s, head, hl);
	for (size_t i = 0; i < words; i++)
		memcpy(s + hl + 2 * i, "a ", 2);
	memcpy(s + hl + 2 * words, tail, tl + 1);
	*len = hl + 2 * words + tl;
	return s;
}

static void
test_long_segment_refused(void **state)
{
	struct provider_result res = { 0 };
	struct buf b;
	size_t len;
	char *s = long_segment(200000, &len);
	(void)state;

	buf_init(&b);
	buf_append(&b, s, len);
	buf_terminate(&b);
	assert_int_equal(worker_openai_transcript_parse(&b, &res), -1);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	assert_non_null(strstr(res.msg, "words in its segments"));
	assert_int_equal(res.nout, 0);  /* no .txt or .json left behind */
	provider_result_free(&res);
	buf_free(&b);
	free(s);

	/* a real-shaped answer: segments of sentences, subtitles made */
	memset(&res, 0, sizeof(res));
	buf_init(&b);
	s = "{\"text\":\"Hello there. How are you?\",\"segments\":[{\"id\":0,"
	    "\"start\":0.0,\"end\":1.2,\"text\":\" Hello there.\",\"tokens\":"
	    "[50364,2425,456,13]},{\"id\":1,\"start\":1.5,\"end\":2.6,\"text\":"
	    "\" How are you?\",\"tokens\":[1012,366,291,30]}]}";
	buf_append(&b, s, strlen(s));
	buf_terminate(&b);
	assert_int_equal(worker_openai_transcript_parse(&b, &res), 0);
	assert_int_equal(res.nout, 4);  /* .txt .json .srt .vtt */
	assert_string_equal(res.out[2].suffix, ".srt");
	assert_non_null(strstr(res.out[2].data, "How are you?"));
	provider_result_free(&res);
	buf_free(&b);
}

static void
test_translation_bound(void **state)
{
	struct worker_http_opts o = { .max_response = 1000 };
	struct provider_result res = { 0 };
	struct buf out;
	(void)state;

	assert_int_equal(worker_http_translation_max(&o, 10), 1000);
	assert_int_equal(worker_http_translation_max(&o, 100),
			 100 * WORKER_HTTP_TRANSLATION_FACTOR);
	assert_int_equal(worker_http_translation_max(&o, SIZE_MAX / 2), SIZE_MAX);
	buf_init(&out);
	assert_int_equal(worker_http_translation_append(&out, "abcdef", 6, 10,
	    "openai", &res), 0);
	assert_int_equal(worker_http_translation_append(&out, "ghij", 4, 10,
	    "openai", &res), 0);
	assert_int_equal(out.len, 10);
	assert_int_equal(worker_http_translation_append(&out, "k", 1, 10,
	    "openai", &res), -1);
	assert_int_equal(out.len, 10);  /* left as it was */
	assert_int_equal(res.outcome, OUT_PERMANENT);
	assert_non_null(strstr(res.msg, "translation larger than 10 bytes"));
	buf_free(&out);
}

/* The exec provider's check for translate_command = cmd. */
static int
exec_translate_check(const char *cmd, char *err, size_t errlen)
{
	char path[] = "/tmp/mpfarm-test-review-XXXXXX";
	char *text = xasprintf("[transcribe]\nprovider = noop\n[translate]\n"
	    "provider = exec\nlanguages = de\n[exec]\ntranscribe_command = "
	    "cat {input}\ntranslate_command = %s\n", cmd);
	int fd = mkstemp(path), rc;
	struct config cfg;
	char *argv[] = { "mpfarm", "--config", path, NULL };

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	free(text);
	assert_int_equal(config_load(&cfg, 3, argv), 0);
	unlink(path);
	err[0] = '\0';
	rc = provider_find("exec")->check(&cfg, STAGE_TRANSLATE, "de", err,
					  errlen);
	if (rc == 0)    /* the transcriber keeps its {input} */
		assert_int_equal(provider_find("exec")->check(&cfg,
		    STAGE_TRANSCRIBE, "", err, errlen), 0);
	config_free(&cfg);
	return rc;
}

static void
test_exec_translate_input(void **state)
{
	char err[300];
	(void)state;

	assert_int_equal(exec_translate_check("apertium eng-deu", err,
					      sizeof(err)), 0);
	assert_int_equal(exec_translate_check("tr --to={lang} \\{input}", err,
					      sizeof(err)), 0);
	assert_int_equal(exec_translate_check("sh -c 'cat {input}'", err,
					      sizeof(err)), -1);
	assert_non_null(strstr(err, "{input} is not available"));
	assert_int_equal(exec_translate_check("tr --file={input}", err,
					      sizeof(err)), -1);
	assert_int_equal(exec_translate_check("tr \"{input}\" {lang}", err,
					      sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spread_budget),
		cmocka_unit_test(test_long_segment_refused),
		cmocka_unit_test(test_translation_bound),
		cmocka_unit_test(test_exec_translate_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
