/*
 * test_common.c - the facts and helpers stated once in common/ and used
 * by several callers: the capped exponential backoff (worker respawns,
 * job retries, provider pauses), language names (status, the OpenAI
 * instruction), sentence ends (subtitles, the DeepL splitter), stage
 * keys ("translate:de") and the walk over configured (stage, language)
 * pairs.  A wrong answer here would show in every caller at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "common_config.h"
#include "common_store.h"
#include "common_tree.h"
#include "worker_http.h"

static void
test_backoff_delay(void **state)
{
	(void)state;
	/* doubles from the base */
	assert_int_equal(backoff_delay(50, 10000, 0), 50);
	assert_int_equal(backoff_delay(50, 10000, 1), 100);
	assert_int_equal(backoff_delay(50, 10000, 7), 6400);
	/* capped exactly, not at the next power of two */
	assert_int_equal(backoff_delay(50, 10000, 8), 10000);
	assert_int_equal(backoff_delay(1000, 60000, 6), 60000);
	/* no overflow however large n is */
	assert_int_equal(backoff_delay(5000, 600000, 1000000), 600000);
	assert_int_equal(backoff_delay(INT64_MAX / 2 + 1, INT64_MAX, 5),
	    INT64_MAX);
	/* odd corners stay within [.., cap] */
	assert_int_equal(backoff_delay(5000, 600000, -3), 5000);
	assert_int_equal(backoff_delay(5000, 100, 2), 100);
	assert_int_equal(backoff_delay(0, 100, 2), 0);
}

static void
test_backoff_jitter(void **state)
{
	(void)state;
	for (int i = 0; i < 1000; i++) {
		int64_t d = backoff_jitter(1001);
		assert_true(d >= 500 && d <= 1000);
	}
	assert_int_equal(backoff_jitter(1), 0);
	assert_int_equal(backoff_jitter(0), 0);
	assert_int_equal(backoff_jitter(-5), -5);
}

static void
test_lang_name(void **state)
{
	(void)state;
	assert_string_equal(text_lang_name("de"), "German");
	assert_string_equal(text_lang_name("DE"), "German");
	assert_string_equal(text_lang_name("en-gb"), "English");
	assert_string_equal(text_lang_name("pt_BR"), "Portuguese");
	assert_string_equal(text_lang_name("lad"), "Ladino");
	assert_string_equal(text_lang_name("he"), "Hebrew");
	assert_null(text_lang_name("xx"));
	assert_null(text_lang_name("l"));       /* not a prefix match */
	assert_null(text_lang_name("ladx"));
	assert_null(text_lang_name(""));
}

static void
test_sentence_end(void **state)
{
	const char *const yes[] = { "end.", "why?", "so!", "wait\xe2\x80\xa6",
		"\"Stop.\"", "(done.)", "'x.')]", "said \xc2\xab" "no.\xc2\xbb",
		"\xe2\x80\x9cgo.\xe2\x80\x9d", "\xe4\xb8\xad\xe3\x80\x82",
		"\xd8\x9f", "\xe0\xa5\xa4", "\xef\xbc\x81", NULL };
	const char *const no[] = { "word", "e.g", "\"", "\"\"", ")", "a,",
		"3.5x", "\xe3\x80\x82x", "", NULL };
	bool wide;

	(void)state;
	for (int i = 0; yes[i]; i++)
		assert_true(text_sentence_end(yes[i], strlen(yes[i])));
	for (int i = 0; no[i]; i++)
		assert_false(text_sentence_end(no[i], strlen(no[i])));
	/* only the CJK marks are wide */
	assert_true(text_sentence_mark("\xe3\x80\x82", 3, &wide));
	assert_true(wide);
	assert_true(text_sentence_mark("\xef\xbc\x9f", 3, &wide));
	assert_true(wide);
	assert_true(text_sentence_mark("a.", 2, &wide));
	assert_false(wide);
	assert_false(text_sentence_mark("a", 1, &wide));
	assert_false(wide);
	/* closers: their length, and trimming keeps at least one byte */
	assert_int_equal(text_closer_len("a\"", 2), 1);
	assert_int_equal(text_closer_len("a\xe2\x80\x9d", 4), 3);
	assert_int_equal(text_closer_len("a\xc2\xbb", 3), 2);
	assert_int_equal(text_closer_len("ab", 2), 0);
	assert_int_equal(text_closer_len("", 0), 0);
	assert_int_equal(text_closers_trim("x.\")\xe2\x80\x99", 7), 2);
	assert_int_equal(text_closers_trim("\"\"\"", 3), 1);
}

/* The DeepL splitter sees a closing curly quote as the subtitles do: the
 * sentence before it ends there. */
static void
test_split_after_curly_quote(void **state)
{
	const char *t = "He said \xe2\x80\x9cStop.\xe2\x80\x9d Then he left "
			"the room and went home.";
	struct deepl_piece *p;
	int n;

	(void)state;
	assert_int_equal(worker_deepl_split(t, strlen(t), 30, &p, &n), 0);
	assert_true(n >= 2);
	assert_int_equal(p[0].len, strlen("He said \xe2\x80\x9cStop.\xe2\x80\x9d"));
	free(p);
}

/* The pieces and their whitespace go back as they were around the
 * translations, and the cap holds over the whole. */
static void
test_piece_put(void **state)
{
	const char *t = "  one.\n\ntwo. ";
	struct deepl_piece *p;
	struct provider_result res;
	struct buf out;
	int n;

	(void)state;
	memset(&res, 0, sizeof(res));
	assert_int_equal(worker_deepl_split(t, strlen(t), 6, &p, &n), 0);
	assert_int_equal(n, 2);
	buf_init(&out);
	worker_deepl_lead_put(&out, t, strlen(t), p, n);
	assert_int_equal(worker_deepl_piece_put(&out, t, &p[0], "EINS.", 5, 100,
	    "test", &res), 0);
	assert_int_equal(worker_deepl_piece_put(&out, t, &p[1], "ZWEI.", 5, 100,
	    "test", &res), 0);
	buf_terminate(&out);
	assert_string_equal(out.data, "  EINS.\n\nZWEI. ");
	/* over the cap: refused, out untouched */
	size_t len = out.len;
	assert_int_equal(worker_deepl_piece_put(&out, t, &p[1], "ZWEI.", 5,
	    len + 3, "test", &res), -1);
	assert_int_equal(out.len, len);
	assert_int_equal(res.outcome, OUT_PERMANENT);
	buf_free(&out);
	provider_result_free(&res);
	free(p);

	/* a blank text has no pieces: it is copied whole */
	assert_int_equal(worker_deepl_split(" \n", 2, 6, &p, &n), 0);
	assert_int_equal(n, 0);
	buf_init(&out);
	worker_deepl_lead_put(&out, " \n", 2, p, n);
	assert_int_equal(out.len, 2);
	buf_free(&out);
	free(p);
}

static void
test_stage_key(void **state)
{
	char k[JOB_STAGE_KEY_MAX], small[8];

	(void)state;
	assert_string_equal(job_stage_key(STAGE_TRANSCRIBE, "", k, sizeof(k)),
	    "transcribe");
	assert_string_equal(job_stage_key(STAGE_TRANSLATE, "de", k, sizeof(k)),
	    "translate:de");
	assert_string_equal(job_stage_key(STAGE_TRANSLATE, "", k, sizeof(k)),
	    "translate");
	/* the longest language fits */
	char lang[CONFIG_LANG_MAX];
	memset(lang, 'x', sizeof(lang) - 1);
	lang[sizeof(lang) - 1] = '\0';
	job_stage_key(STAGE_TRANSLATE, lang, k, sizeof(k));
	assert_int_equal(strlen(k), strlen("translate:") + strlen(lang));
	/* a short buffer is cut, never overrun */
	assert_string_equal(job_stage_key(STAGE_TRANSLATE, "de", small,
	    sizeof(small)), "transla");
}

static void
test_stage_lang_walk(void **state)
{
	struct config cfg;
	const char *lang;
	int stage, i;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	strcpy(cfg.langs[0], "de");
	strcpy(cfg.langs[1], "he");
	cfg.nlangs = 2;
	assert_true(config_stage_lang(&cfg, 0, &stage, &lang));
	assert_int_equal(stage, STAGE_TRANSCRIBE);
	assert_string_equal(lang, "");
	assert_true(config_stage_lang(&cfg, 1, &stage, &lang));
	assert_int_equal(stage, STAGE_TRANSLATE);
	assert_string_equal(lang, "de");
	assert_true(config_stage_lang(&cfg, 2, &stage, &lang));
	assert_string_equal(lang, "he");
	assert_false(config_stage_lang(&cfg, 3, &stage, &lang));
	assert_false(config_stage_lang(&cfg, -1, &stage, &lang));
	for (i = 0; config_stage_lang(&cfg, i, &stage, &lang); i++)
		;
	assert_int_equal(i, 1 + cfg.nlangs);
	/* no languages: the transcription alone */
	cfg.nlangs = 0;
	for (i = 0; config_stage_lang(&cfg, i, &stage, &lang); i++)
		assert_int_equal(stage, STAGE_TRANSCRIBE);
	assert_int_equal(i, 1);
}

/* The one folder listing scan, fix and check walk: sorted bytewise,
 * without "." and "..", types given, the caller's descriptor untouched. */
static void
test_dir_list(void **state)
{
	char dir[] = "/tmp/mpfarm-test-list-XXXXXX", p[128];
	const char *const files[] = { "b", "a", "B", ".hidden", "a0" };
	struct tree_name *v;
	size_t n;
	int dfd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		int fd = open(p, O_CREAT | O_WRONLY, 0600);
		assert_true(fd >= 0);
		close(fd);
	}
	snprintf(p, sizeof(p), "%s/sub", dir);
	assert_int_equal(mkdir(p, 0700), 0);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(tree_dir_list(dfd, &v, &n), 0);
		assert_int_equal(n, 6);
		assert_string_equal(v[0].name, ".hidden");
		assert_string_equal(v[1].name, "B");
		assert_string_equal(v[2].name, "a");
		assert_string_equal(v[3].name, "a0");
		assert_string_equal(v[4].name, "b");
		assert_string_equal(v[5].name, "sub");
		assert_true(v[5].type == DT_DIR || v[5].type == DT_UNKNOWN);
		tree_names_free(v, n);
	}
	/* dfd is still the caller's */
	struct stat sb;
	assert_int_equal(fstatat(dfd, "sub", &sb, 0), 0);
	close(dfd);
	/* not a folder: -1, nothing listed */
	assert_int_equal(tree_dir_list(-1, &v, &n), -1);
	assert_null(v);
	assert_int_equal(n, 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		unlink(p);
	}
	snprintf(p, sizeof(p), "%s/sub", dir);
	rmdir(p);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_delay),
		cmocka_unit_test(test_backoff_jitter),
		cmocka_unit_test(test_lang_name),
		cmocka_unit_test(test_sentence_end),
		cmocka_unit_test(test_split_after_curly_quote),
		cmocka_unit_test(test_piece_put),
		cmocka_unit_test(test_stage_key),
		cmocka_unit_test(test_stage_lang_walk),
		cmocka_unit_test(test_dir_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
