/*
 * common_db_sqlite.h - the SQLite driver's one extra: the raw handle, for
 * unit tests that inspect a store's own connection (its SQL functions,
 * its pragmas).  Nothing in the program proper includes this.
 */
#ifndef MPFARM_COMMON_DB_SQLITE_H
#define MPFARM_COMMON_DB_SQLITE_H

#include <sqlite3.h>
#include "common_db.h"

/* The sqlite3 handle of a DB_SQLITE connection; NULL for another kind. */
sqlite3 *db_sqlite_handle(db_t *db);

#endif
