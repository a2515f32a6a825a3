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

/* Milliseconds in a second: config seconds (timeouts, grace, intervals)
 * to the clocks' milliseconds (time_mono_ms, time_wall_ms) and back. */
#define MS_PER_S 1000

/* Each command returns the process exit status (common.h: EXIT_OK,
 * EXIT_USAGE for a usage or config error found before anything changed,
 * EXIT_JOBFAIL when a run leaves failed jobs, EXIT_FATAL for the rest)
 * and says what went wrong on stderr itself; none calls exit().  run
 * (master_farm_run) holds the farm lock, forks the workers and runs the
 * loop until the work is done or it is told to stop; it returns only
 * after every worker it started is gone. */
int master_scan_run(struct config *cfg);     /* mpfarm scan DIR... */
int master_status_run(struct config *cfg);   /* mpfarm status [--json] */
int master_retry_run(struct config *cfg);    /* mpfarm retry [--file P] */
int master_fix_run(struct config *cfg);      /* mpfarm fix [--dry-run] */
int master_check_run(struct config *cfg);    /* mpfarm check */
int master_signal_run(struct config *cfg);   /* mpfarm signal SIG */
int master_farm_run(struct config *cfg, int argc, char **argv); /* run */
int master_plan_run(struct config *cfg);     /* mpfarm run --dry-run */
int master_config_run(struct config *cfg);   /* mpfarm config */
int master_migrate_run(struct config *cfg);  /* mpfarm migrate --to URL */

/* master_config.c: the checks a farm makes before it starts.  report is
 * called once per check, with what was checked ("transcribe", "output"),
 * a sentence, and whether it passed. */
typedef void (*master_check_report_fn)(void *arg, const char *what,
				       const char *msg, bool ok);
/* Workers and every provider this run uses (known, keys, base_url,
 * engines found); with MASTER_CHECK_FILES also the output tree (real
 * folders, no link, writable) and the database's folder and the files
 * beside it; MASTER_CHECK_CREATE makes a missing output root first, as a
 * run does.  Returns the number of problems (0 = ready). */
#define MASTER_CHECK_CONFIG 0
#define MASTER_CHECK_FILES  1
#define MASTER_CHECK_CREATE 2
int master_config_check(const struct config *cfg, int files,
			master_check_report_fn report, void *arg);
/* Each stage (and language) this run wants that has work in st and no
 * provider configured; returns how many.  0 when st is NULL. */
int master_config_unprovided(const struct config *cfg, store_t *st,
			     master_check_report_fn report, void *arg);

/* The media file a user names (master_retry.c): PATH relative to the
 * current folder or absolute (resolved through symbolic links when it
 * exists, else taken literally), else the output name stored for it,
 * else the escaped name processing_status shows (\xNN, \\) decoded;
 * a path under a named root ([roots], may be NULL) also in the store's
 * spelling.  0 and *file_id, 1 when nothing matches, -1 on a store error. */
struct roots_map;
int master_file_resolve(store_t *st, const struct roots_map *roots,
			const char *path, int64_t *file_id);

/* More commands, exit status as above. */
int master_failed_run(struct config *cfg);   /* mpfarm failed */
int master_show_run(struct config *cfg);     /* mpfarm show FILE */
int master_serve_run(struct config *cfg);    /* mpfarm serve */

/* The live figures of the master of database `db`, read from its status
 * file, plus "stale" (that master is gone) and "age_s"; NULL when there
 * is no status file or it does not parse.  The caller json_decref's it. */
struct json_t *master_status_farm(const char *db);
/* The object `status --json` prints (and `serve` answers at /api/status):
 * counts from c, live figures from farm (may be NULL; "providers" is then
 * {}).  Never NULL; the caller json_decref's it. */
struct json_t *master_status_json(const struct config *cfg,
				  const struct store_counts *c,
				  struct json_t *farm);

/* A string as JSON: itself when it is UTF-8, else with every byte
 * outside ASCII (and backslash) written \xNN.  Never NULL (a new
 * reference the caller owns). */
struct json_t *master_json_text(const char *s);
/* Local time "YYYY-MM-DD HH:MM:SS" of wall-clock ms, "-" when ms <= 0. */
void master_time_text(int64_t ms, char *out, size_t outlen);
/* What `show` and the serve page say about one file (jobs, outputs on
 * disk under cfg->output, attempts).  Never NULL. */
struct json_t *master_show_json(const struct config *cfg,
				const struct store_file *f);

/* Open the store for a command (master_store.c) with flags (STORE_*)
 * and the config's durability and busy timeout.  On failure prints
 * "mpfarm: <error>" and returns NULL. */
store_t *master_store_open(const struct config *cfg, int flags);
/* The same, for flags with STORE_EMPTY_OK: 0 with *out (NULL for a
 * database without mpfarm's schema), or -1 (said). */
int master_store_open_into(const struct config *cfg, int flags,
			   store_t **out);

/* ---- the farm ------------------------------------------------------- */

/* The farm lock: a flock on "<db>.lock", a regular file opened without
 * following a link.  One master per database; a second gets -1 and the
 * holder's pid in *holder (0 if unknown); err says why in every case. */
int  master_lock_acquire(const char *db, int *fd_out, pid_t *holder,
			 char *err, size_t errlen);
/* Empty the lock file (it names no pid once unlocked), then close fd,
 * which releases the lock.  Errors are ignored: the lock goes anyway. */
void master_lock_release(int fd);
/* For status/check/fix: the pid of a live master holding the lock, -1
 * when one holds it but its pid is unknown, or 0.  PostgreSQL (no lock
 * file): this machine's live master, -1 when only other hosts' masters
 * heartbeat, 0 when none does. */
pid_t master_lock_holder(const char *db);

/* The path of the live status file "<db>.status" (JSON) the master
 * refreshes (master_status.c reads it), malloc'd; NULL for a PostgreSQL
 * database, whose figures travel in the master's host row. */
char *master_status_path(const char *db);

#endif
