/*
 * test_config.c - settings: defaults, a good INI file, the command line
 * winning over the file, and malformed files whose errors must name the
 * file and line.  Also exec's shell-like word splitting, which decides what
 * a local engine receives as argv.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common_config.h"
#include "worker_provider.h"

static char cfgpath[64];

static void
write_cfg(const char *text)
{
	strcpy(cfgpath, "/tmp/mpfarm-test-cfg-XXXXXX");
	int fd = mkstemp(cfgpath);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* Run config_load with stderr captured into err[]. */
static int
load(struct config *cfg, char *err, size_t errlen, int argc, char **argv)
{
	int pfd[2], saved = dup(2), rc;
	ssize_t n;

	assert_int_equal(pipe(pfd), 0);
	dup2(pfd[1], 2);
	close(pfd[1]);
	rc = config_load(cfg, argc, argv);
	dup2(saved, 2);
	close(saved);
	n = read(pfd[0], err, errlen - 1);
	err[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	return rc;
}

static void
test_defaults(void **state)
{
	struct config cfg;
	char err[512];
	char *argv[] = { "mpfarm", "--config", "/dev/null", NULL };
	(void)state;

	assert_int_equal(load(&cfg, err, sizeof(err), 3, argv), 0);
	assert_int_equal(cfg.cmd, CMD_RUN);
	assert_int_equal(cfg.workers, 5);
	assert_int_equal(cfg.max_attempts, 3);
	assert_string_equal(cfg.output, "./output");
	assert_int_equal(cfg.stage_mask, STAGE_MASK_ALL);
	/* no provider is ever assumed */
	assert_null(config_provider(&cfg, STAGE_TRANSCRIBE, ""));
	assert_int_equal(cfg.batch_size, 0);        /* all */
	assert_int_equal(cfg.fetch_size, 50);
	assert_null(config_where(&cfg, "farm", "workers"));
	config_free(&cfg);
}

static void
test_file_and_cli_override(void **state)
{
	struct config cfg;
	char err[512];
	(void)state;

	write_cfg("[farm]\nworkers = 7\njob_timeout = 99\ndurable = yes\n"
	    "[transcribe]\nprovider = exec\n"
	    "[translate]\nprovider = deepl\nlanguages = en, DE,he\n"
	    "[translate.he]\nprovider = openai\nmodel = gpt-x\n"
	    "[exec]\ntranscribe_command = echo {input}\n"
	    "[deepl]\nrate = 2.5\nmax_concurrency = 4\n");
	char *argv[] = { "mpfarm", "--config", cfgpath, "--workers", "3",
		"run", "--stage", "translate", "--language", "he", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 10, argv), 0);
	assert_int_equal(cfg.workers, 3);           /* command line wins */
	assert_int_equal(cfg.job_timeout, 99);
	assert_true(cfg.durable);
	assert_int_equal(cfg.nlangs, 3);
	assert_string_equal(cfg.langs[1], "de");
	assert_int_equal(cfg.stage_mask, STAGE_MASK_TRANSLATE);
	assert_true(config_wants(&cfg, STAGE_TRANSLATE, "he"));
	assert_false(config_wants(&cfg, STAGE_TRANSLATE, "en"));
	assert_false(config_wants(&cfg, STAGE_TRANSCRIBE, ""));
	assert_string_equal(config_provider(&cfg, STAGE_TRANSLATE, "he"), "openai");
	assert_string_equal(config_provider(&cfg, STAGE_TRANSLATE, "de"), "deepl");
	assert_string_equal(config_stage_get(&cfg, STAGE_TRANSLATE, "he", "model"),
	    "gpt-x");
	assert_true(config_get_double(&cfg, "deepl", "rate", 0) == 2.5);
	assert_int_equal(config_get_long(&cfg, "deepl", "max_concurrency", 0), 4);
	config_free(&cfg);
	unlink(cfgpath);
}

static void
expect_bad(const char *text, const char *needle, int line)
{
	struct config cfg;
	char err[512], where[96];

	write_cfg(text);
	char *argv[] = { "mpfarm", "--config", cfgpath, NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 3, argv), -1);
	snprintf(where, sizeof(where), "%s:%d:", cfgpath, line);
	if (strstr(err, where) == NULL || strstr(err, needle) == NULL)
		fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", err, where, needle);
	config_free(&cfg);
	unlink(cfgpath);
}

static void
test_malformed(void **state)
{
	(void)state;
	expect_bad("[farm]\nworkers = many\n", "workers must be a whole number", 2);
	expect_bad("[farm]\n\nworkerz = 3\n", "unknown key", 3);
	expect_bad("[farms]\nworkers = 3\n", "unknown section", 2);
	expect_bad("[transcribe]\nprovider = whisper\n", "unknown transcription", 2);
	expect_bad("[translate]\nlanguages = en,d$e\n", "invalid language", 2);
	expect_bad("[farm]\nthis line has no equals sign\n", "syntax", 2);
	expect_bad("[deepl]\nrate = fast\n", "rate must be", 2);
	/* values that parse but would break the run */
	expect_bad("[openai]\n\nrate = inf\n", "rate must be", 3);
	expect_bad("[openai]\nrate = nan\n", "rate must be", 2);
	expect_bad("[openai]\nrate = 0\n", "rate must be", 2);
	expect_bad("[openai]\nmax_concurrency = 4294967295\n", "max_concurrency", 2);
	expect_bad("[openai]\nmax_concurrency = 2.5\n", "whole number", 2);
	expect_bad("[openai]\nmax_concurrency = 0\n", "max_concurrency", 2);
	expect_bad("[deepl]\nquota_pause = -5\n", "quota_pause", 2);
	expect_bad("[transcribe]\nprovider = openai\nmodel = \xff\xfe\n",
	    "not valid UTF-8", 3);
	expect_bad("[translate]\nlanguages = en,--verbose\n", "invalid language", 2);
	expect_bad("[translate]\nlanguages = 1en\n", "invalid language", 2);
	expect_bad("[translate.-x]\nprovider = deepl\n", "bad language", 2);
	expect_bad("[farm]\nbatch_size = -1\n", "batch_size", 2);
	/* every section checks its keys, and says where a key belongs */
	expect_bad("[noop]\n\nbogus = 1\n", "unknown key \"bogus\" in [noop] "
	    "(it takes delay_ms)", 3);
	expect_bad("[openai]\nmax_concurency = 2\n",
	    "did you mean max_concurrency?", 2);
	expect_bad("[deepl]\nhost_timeout = 2\n",
	    "did you mean [farm] host_timeout?", 2);
	expect_bad("[farm]\nformality = more\n", "did you mean [deepl] formality?",
	    2);
	expect_bad("[translate.de]\nlanguages = en\n",
	    "did you mean [translate] languages?", 2);
	/* the first error is the one named, whatever follows */
	expect_bad("[noop]\nx = 1\n[deepl]\ny = 2\n", "\"x\" in [noop]", 2);
	expect_bad("[farm\n[noop]\nx = 1\n", "syntax", 1);
	/* a line too long for inih is refused whole, not cut in two */
	char longline[300];
	snprintf(longline, sizeof(longline), "[exec]\ntranscribe_command = %0200d\n"
	    "[noop]\ndelay_ms = 1\n", 0);
	expect_bad(longline, "line longer than", 2);
}

/* Options before and after the command word mean the same; an option the
 * command does not use is refused, naming both. */
static void
test_cli_placement(void **state)
{
	struct config cfg;
	char err[512];
	(void)state;

	write_cfg("[farm]\nworkers = 7\ndb = from-file.db\n");
	char *a1[] = { "mpfarm", "status", "--config", cfgpath, "--json", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 5, a1), 0);
	assert_int_equal(cfg.cmd, CMD_STATUS);
	assert_string_equal(cfg.db, "from-file.db");
	assert_true(cfg.json);
	assert_non_null(strstr(config_where(&cfg, "farm", "db"), ":3"));
	config_free(&cfg);

	char *a2[] = { "mpfarm", "scan", "d1", "--config", cfgpath, "d2",
		"--db", "x.db", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 8, a2), 0);
	assert_int_equal(cfg.cmd, CMD_SCAN);
	assert_int_equal(cfg.nargs, 2);
	assert_string_equal(cfg.args[0], "d1");
	assert_string_equal(cfg.args[1], "d2");
	assert_string_equal(cfg.db, "x.db");
	assert_string_equal(config_where(&cfg, "farm", "db"), "command line --db");
	config_free(&cfg);

	char *a3[] = { "mpfarm", "retry", "--workers", "2", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 4, a3), -1);
	assert_non_null(strstr(err, "retry"));
	assert_non_null(strstr(err, "--workers"));
	config_free(&cfg);

	char *a4[] = { "mpfarm", "--json", NULL };      /* run takes no --json */
	assert_int_equal(load(&cfg, err, sizeof(err), 2, a4), -1);
	config_free(&cfg);

	char *a5[] = { "mpfarm", "--config", cfgpath, "--batch-size", "10",
		"--dry-run", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 6, a5), 0);
	assert_int_equal(cfg.cmd, CMD_RUN);
	assert_int_equal(cfg.batch_size, 10);
	assert_true(cfg.dry_run);
	config_free(&cfg);

	char *a6[] = { "mpfarm", "status", "extra", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 3, a6), -1);
	assert_non_null(strstr(err, "unexpected argument"));
	config_free(&cfg);
	unlink(cfgpath);
}

static void
test_cli_errors(void **state)
{
	struct config cfg;
	char err[512];
	(void)state;

	char *a1[] = { "mpfarm", "--config", "/dev/null", "--workers", "x", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 5, a1), -1);
	assert_non_null(strstr(err, "--workers"));
	config_free(&cfg);
	char *a2[] = { "mpfarm", "--config", "/dev/null", "frobnicate", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 4, a2), -1);
	assert_non_null(strstr(err, "unknown command"));
	config_free(&cfg);
	char *a3[] = { "mpfarm", "--config", "/dev/null", "--bogus", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 4, a3), -1);
	assert_non_null(strstr(err, "unknown option"));
	config_free(&cfg);
	char *a4[] = { "mpfarm", "--config", "/nonexistent/mpfarm.conf", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 3, a4), -1);
	assert_non_null(strstr(err, "/nonexistent/mpfarm.conf"));
	config_free(&cfg);
	char *a5[] = { "mpfarm", "--config", "/dev/null", "run", "--language",
		"xx", NULL };
	assert_int_equal(load(&cfg, err, sizeof(err), 6, a5), -1);
	assert_non_null(strstr(err, "not a target language"));
	config_free(&cfg);
}

static void
test_exec_split(void **state)
{
	char **v;
	(void)state;

	v = worker_exec_split("pocketsphinx_continuous -infile {input}",
	    "/data/my file\n.wav", "");
	assert_non_null(v);
	assert_string_equal(v[0], "pocketsphinx_continuous");
	assert_string_equal(v[2], "/data/my file\n.wav");
	assert_null(v[3]);
	worker_exec_free(v);

	v = worker_exec_split("sh -c 'echo \"$1\"' x --to={lang} \"a b\" c\\ d",
	    "", "es");
	assert_non_null(v);
	assert_string_equal(v[2], "echo \"$1\"");
	assert_string_equal(v[4], "--to=es");
	assert_string_equal(v[5], "a b");
	assert_string_equal(v[6], "c d");
	assert_null(v[7]);
	worker_exec_free(v);

	assert_null(worker_exec_split("echo 'unbalanced", "", ""));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_file_and_cli_override),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_cli_errors),
		cmocka_unit_test(test_cli_placement),
		cmocka_unit_test(test_exec_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
