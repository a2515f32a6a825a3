/*
 * master.h - the commands the mpfarm binary runs (master_main.c dispatches
 * on the first word) and the farm's shared state: one table of worker
 * slots, stable across respawns, owned by the master's event loop.
 */
#ifndef MPFARM_MASTER_H
#define MPFARM_MASTER_H

#include "common.h"
#include "common_config.h"
#include "common_store.h"
#include "ipc_frame.h"

/* Each command returns the process exit status. */
int master_scan_run(struct config *cfg);     /* mpfarm scan DIR... */
int master_status_run(struct config *cfg);   /* mpfarm status [--json] */
int master_retry_run(struct config *cfg);    /* mpfarm retry */
int master_fix_run(struct config *cfg);      /* mpfarm fix [--dry-run] */
int master_check_run(struct config *cfg);    /* mpfarm check */
int master_signal_run(struct config *cfg);   /* mpfarm signal SIG */
int master_farm_run(struct config *cfg, int argc, char **argv); /* run */

/* Open the store for a command, printing "mpfarm: <error>" on failure. */
store_t *master_store_open(const struct config *cfg, int flags);

/* ---- the farm ------------------------------------------------------- */

/* The farm lock: a flock on "<db>.lock".  One master per database; a
 * second gets -1 and the holder's pid in *holder (0 if unknown). */
int  master_lock_acquire(const char *db, int *fd_out, pid_t *holder);
/* Empty the lock file (it names no pid once unlocked), then close fd,
 * which releases the lock.  Errors are ignored: the lock goes anyway. */
void master_lock_release(int fd);
/* For status/check/fix: the pid of a live master holding the lock, or 0. */
pid_t master_lock_holder(const char *db);

/* The live status file "<db>.status" (JSON) the master refreshes. */
char *master_status_path(const char *db);

#endif
