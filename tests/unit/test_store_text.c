/*
 * test_store_text.c - the escaping that makes every file name valid UTF-8
 * for processing_status (text_escape / text_unescape_path): ordinary names
 * unchanged, invalid bytes and control characters as \xNN, backslashes
 * doubled, and the way back exact; the SQL functions the store registers
 * for its writes and migrations; messages with invalid bytes stored as
 * valid UTF-8.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MPFARM_STORE_INTERNAL 1     /* store_bind_msg */
#include "common.h"
#define MPFARM_STORE_INTERNAL 1   /* store_bind_msg */
#include "common_store.h"
#include "common_db_sqlite.h"

static void
esc_eq(const char *in, size_t n, enum text_escape_mode m, const char *want)
{
	char *got = text_escape(in, n, m);
	assert_string_equal(got, want);
	free(got);
}

static void
test_escape_path(void **state)
{
	(void)state;
	esc_eq("/rec/a.wav", 10, TEXT_ESCAPE_PATH, "/rec/a.wav");
	esc_eq("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa4", 14, TEXT_ESCAPE_PATH,
	    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa4");
	esc_eq("a\\b", 3, TEXT_ESCAPE_PATH, "a\\\\b");
	esc_eq("bad\xff.wav", 8, TEXT_ESCAPE_PATH, "bad\\xff.wav");
	esc_eq("t\tn\n\x7f", 5, TEXT_ESCAPE_PATH, "t\\x09n\\x0a\\x7f");
	/* overlong, surrogate, past U+10FFFF, truncated, lone continuation */
	esc_eq("\xc0\xaf", 2, TEXT_ESCAPE_PATH, "\\xc0\\xaf");
	esc_eq("\xed\xa0\x80", 3, TEXT_ESCAPE_PATH, "\\xed\\xa0\\x80");
	esc_eq("\xf4\x90\x80\x80", 4, TEXT_ESCAPE_PATH, "\\xf4\\x90\\x80\\x80");
	esc_eq("x\xe2\x82", 3, TEXT_ESCAPE_PATH, "x\\xe2\\x82");
	esc_eq("\x80z", 2, TEXT_ESCAPE_PATH, "\\x80z");
	esc_eq("", 0, TEXT_ESCAPE_PATH, "");
	/* messages: only invalid bytes, backslashes and newlines stay */
	esc_eq("a\\b\n\xff", 5, TEXT_ESCAPE_MSG, "a\\b\n\\xff");
}

static void
test_unescape_round_trip(void **state)
{
	(void)state;
	const char *names[] = { "/rec/a.wav", "a\\b", "bad\xff\\xff.wav",
	    "\x01\x7f\\\\", "caf\xc3\xa9\xc3" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *e = text_escape(names[i], strlen(names[i]),
		    TEXT_ESCAPE_PATH);
		size_t n = 0;
		char *back = text_unescape_path(e, &n);
		assert_non_null(back);
		assert_int_equal(n, strlen(names[i]));
		assert_memory_equal(back, names[i], n);
		free(back);
		free(e);
	}
	/* not the escaping's output: no second spelling of a name */
	const char *bad[] = { "a\\", "a\\q", "\\xg0", "\\x4", "\\x41",
	    "\\xFF", "\\x", "x\\x0" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = 0;
		assert_null(text_unescape_path(bad[i], &n));
	}
}

static void
test_sql_functions_and_messages(void **state)
{
	(void)state;
	char path[] = "/tmp/mpfarm-test-text-XXXXXX";
	char db[64], err[256];
	int fd = mkstemp(path);
	store_t *st;
	sqlite3_stmt *s;

	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	snprintf(db, sizeof(db), "%s.db", path);
	assert_int_equal(store_open(&st, db, NULL, err, sizeof(err)), 0);
	assert_int_equal(sqlite3_prepare_v2(db_sqlite_handle(store_db(st)),
	    "SELECT mpfarm_path_text(X'61ff5c'), mpfarm_msg_text(X'61ff5c'), "
	    "mpfarm_path_text(NULL) IS NULL", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0),
	    "a\\xff\\\\");
	assert_string_equal((const char *)sqlite3_column_text(s, 1),
	    "a\\xff\\");
	assert_int_equal(sqlite3_column_int(s, 2), 1);
	sqlite3_finalize(s);
	/* store_bind_msg through the driver: the escape happens above it */
	db_stmt_t *ds;
	assert_int_equal(db_exec(store_db(st), "CREATE TEMP TABLE m (t)"), 0);
	assert_non_null(ds = db_prepare(store_db(st), "INSERT INTO m VALUES (?1)"));
	assert_int_equal(store_bind_msg(ds, 1, "open /r/\xfe.wav: gone"), 0);
	assert_int_equal(db_step(ds), DB_DONE);
	db_finalize(ds);
	assert_non_null(ds = db_prepare(store_db(st), "SELECT t FROM m"));
	assert_int_equal(db_step(ds), DB_ROW);
	assert_string_equal(db_column_text(ds, 0), "open /r/\\xfe.wav: gone");
	db_finalize(ds);
	store_close(st);
	unlink(db);
	snprintf(err, sizeof(err), "%s-wal", db);
	unlink(err);
	snprintf(err, sizeof(err), "%s-shm", db);
	unlink(err);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_path),
		cmocka_unit_test(test_unescape_round_trip),
		cmocka_unit_test(test_sql_functions_and_messages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
