/*
 * test_pg.h - for the unit tests that also run on PostgreSQL (make unit-pg
 * sets $MPFARM_TEST_PG to a throwaway server's URL naming its `postgres`
 * database): a fresh database per test, or a skip message without one.
 * Include after cmocka.h and common_db.h.
 */
#ifndef MPFARM_TEST_PG_H
#define MPFARM_TEST_PG_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Drop and create database NAME_<pid> on the server and write its URL
 * into target; false (with a message) when no server is given. */
static inline bool
test_pg_fresh(const char *name, char *target, size_t targetlen)
{
	const char *base = getenv("MPFARM_TEST_PG"), *p;
	char err[256], sql[128];
	db_t *db;

	if (base == NULL || *base == '\0') {
		print_message("MPFARM_TEST_PG is not set: PostgreSQL cases skipped "
		    "(make unit-pg starts a server)\n");
		return false;
	}
	assert_int_equal(db_open(&db, base, 0, 0, err, sizeof(err)), 0);
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s_%d", name,
	    (int)getpid());
	assert_int_equal(db_exec(db, sql), 0);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s_%d", name, (int)getpid());
	assert_int_equal(db_exec(db, sql), 0);
	db_close(db);
	/* the base URL names the postgres database: swap the name */
	p = strstr(base, "/postgres");
	assert_non_null(p);
	snprintf(target, targetlen, "%.*s/%s_%d%s", (int)(p - base), base,
	    name, (int)getpid(), p + strlen("/postgres"));
	return true;
}

#endif
