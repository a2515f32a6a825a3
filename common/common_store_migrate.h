/*
 * common_store_migrate.h - copying a SQLite farm into an empty PostgreSQL
 * farm (`mpfarm migrate`, common_store_migrate.c).
 */
#ifndef MPFARM_COMMON_STORE_MIGRATE_H
#define MPFARM_COMMON_STORE_MIGRATE_H
#include "common_store.h"

/* The tables copied, in order: settings, media_files, jobs, attempts. */
#define STORE_MIGRATE_TABLES 4
const char *store_migrate_table_name(int i);

/* The rows of each copied table (settings: those copied as they are,
 * the languages aside).  0 or -1 (store_errmsg). */
int  store_migrate_counts(store_t *st, int64_t n[STORE_MIGRATE_TABLES]);

/* *empty: no files, jobs or attempts in st.  0 or -1. */
int  store_migrate_empty(store_t *st, bool *empty);

/* Copy every row of src (read in one snapshot) into dst in one
 * transaction, keeping ids, refusing a dst that holds files, jobs or
 * attempts; then record src's languages on dst (which builds its view)
 * and move dst's id and lease sequences past the copied ones.  On
 * failure nothing is written to dst, err says why, and -1. */
int  store_migrate_copy(store_t *src, store_t *dst, char *err, size_t errlen);

#endif
