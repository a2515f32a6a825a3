/*
 * common_config.h - the settings of one mpfarm invocation: the INI file
 * (inih) overlaid by the command line (getopt_long).  Typed fields for what
 * the farm itself reads; every INI entry is also kept as raw section/key/
 * value so that providers read their own keys without this file growing a
 * field for each of them.
 */
#ifndef MPFARM_COMMON_CONFIG_H
#define MPFARM_COMMON_CONFIG_H

#include <stdio.h>
#include "common.h"

#define STAGE_TRANSCRIBE 0
#define STAGE_TRANSLATE  1
#define STAGE_COUNT      2
#define STAGE_MASK_TRANSCRIBE (1 << STAGE_TRANSCRIBE)
#define STAGE_MASK_TRANSLATE  (1 << STAGE_TRANSLATE)
#define STAGE_MASK_ALL        (STAGE_MASK_TRANSCRIBE | STAGE_MASK_TRANSLATE)

#define CONFIG_LANG_MAX 16      /* bytes of a language code, with NUL */
#define CONFIG_LANGS_MAX 64

/* The command words, in the order `mpfarm --help` lists them; the table
 * that describes each one (its options, arguments and help) is in
 * common_cli.c. */
enum config_cmd {
	CMD_RUN = 0, CMD_SCAN, CMD_STATUS, CMD_FAILED, CMD_SHOW, CMD_RETRY,
	CMD_FIX, CMD_CHECK, CMD_CONFIG, CMD_SIGNAL, CMD_SERVE, CMD_MIGRATE,
	CMD_HELP,
	CMD_COUNT
};

struct config_entry {
	char *section;
	char *key;
	char *value;
	char *where;                /* "FILE:LINE" */
};

/* Where a [farm] setting got its value, for `mpfarm config`. */
struct config_origin {
	char *key;                  /* [farm] key, e.g. "workers" */
	char *where;                /* "FILE:LINE", "environment MPFARM_DB",
				       "command line --workers" */
};

struct config {
	/* where the values came from, for messages */
	char *config_path;          /* NULL when no file was read */

	enum config_cmd cmd;
	char **args;                /* non-option arguments after the command */
	int    nargs;

	/* [farm] */
	int   workers;              /* 5 */
	int   batch_size;           /* at most N jobs this run; 0 = all */
	int   fetch_size;           /* jobs fetched per queue refill, 50 */
	int   job_timeout;          /* seconds, 3600 */
	int   heartbeat_timeout;    /* seconds of silence from a busy worker, 60 */
	int   max_attempts;         /* 3 */
	int   max_jobs_per_worker;  /* 0 = never recycle */
	int   grace;                /* seconds, 30 */
	int   check_interval;       /* seconds, 60 */
	int   host_timeout;         /* seconds a PostgreSQL farm's master may
				     * stay silent before others take its
				     * jobs, 30 */
	int   busy_timeout_ms;      /* SQLite busy timeout, 10000 */
	int   retry_delay_ms;       /* first backoff after a failure, 5000 */
	int   retry_max_delay_ms;   /* backoff and Retry-After cap, 600000 */
	bool  durable;              /* synchronous=FULL + fsync outputs */
	bool  watch;
	char *output;               /* "./output" */
	char *db;                   /* "media_tracking.db" */
	char *log_file;             /* NULL = stderr */
	enum log_level log_level;

	/* what this run works on */
	int   stage_mask;                   /* --stage */
	char  run_langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX]; /* --language */
	int   nrun_langs;                   /* 0 = all target languages */

	/* command-specific flags */
	bool  json;                 /* status/failed/show --json */
	bool  dry_run;              /* run/scan/retry/fix --dry-run */
	bool  follow_symlinks;      /* scan: links resolving inside a root */
	char *file;                 /* retry --file PATH */
	char *listen;               /* serve: ADDR:PORT, "127.0.0.1:8080" */
	char *migrate_to;           /* migrate --to URL, or NULL */
	char *allowed_hosts;        /* [serve] allowed_hosts, NULL = none */

	/* [translate] */
	char  langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];     /* [translate] languages */
	int   nlangs;

	/* every INI entry, in file order */
	struct config_entry *entries;
	int   nentries;

	/* where each [farm] value that is not a default came from */
	struct config_origin *origins;
	int   norigins;
};

/* Fill defaults, read the config file (explicit --config, else ./mpfarm.conf
 * if it exists), then MPFARM_DB, then the command line.  Options may stand
 * before or after the command word; one the command does not use is a
 * usage error.  Returns 0 to run cfg->cmd; CONFIG_PRINTED when help or the
 * version was printed (exit 0); CONFIG_EUSAGE after printing one message
 * naming the file and line (or option) to stderr (exit 2); CONFIG_EIO when
 * the help could not be written (exit 1). */
#define CONFIG_PRINTED   1
#define CONFIG_EUSAGE  (-1)
#define CONFIG_EIO     (-2)
int  config_load(struct config *cfg, int argc, char **argv);
/* Free everything cfg holds and zero it (safe to load or free again). */
void config_free(struct config *cfg);

/* Re-read the settings (HUP): the file again, the command line still
 * winning.  A file that does not parse, or that `check` refuses, is logged
 * and *cfg left untouched (-1).  db and output keep their running values. */
int  config_reload(struct config *cfg, int argc, char **argv,
		   int (*check)(const struct config *fresh, char *err,
				size_t errlen));

/* Raw lookup: value of section/key or NULL.  Last one wins. */
const char *config_get(const struct config *cfg, const char *section,
		       const char *key);
/* Typed lookups with a default; a value that does not parse gives dflt. */
long   config_get_long(const struct config *cfg, const char *section,
		       const char *key, long dflt);
double config_get_double(const struct config *cfg, const char *section,
			 const char *key, double dflt);

/* Provider name of a stage: transcribe -> [transcribe] provider;
 * translate -> [translate.LANG] provider, else [translate] provider.
 * NULL when none is configured: no provider is ever assumed. */
const char *config_provider(const struct config *cfg, int stage,
			    const char *lang);
/* Per-stage/per-language value of a key: [translate.LANG] key, else
 * [translate] key (or [transcribe] key). */
const char *config_stage_get(const struct config *cfg, int stage,
			     const char *lang, const char *key);

/* True if `lang` is one of the configured target languages. */
bool config_has_lang(const struct config *cfg, const char *lang);
/* True when this run works on stage/lang (--stage, --language). */
bool config_wants(const struct config *cfg, int stage, const char *lang);
/* The i-th (stage, language) pair the config names: i = 0 is the
 * transcription (lang ""), then one translation per configured language
 * in order.  True and *stage, *lang set, or false once i is past the last
 * (or negative), so that every pair is walked with
 *   for (int i = 0; config_stage_lang(cfg, i, &stage, &lang); i++)
 * Whether this run wants the pair is config_wants'. */
bool config_stage_lang(const struct config *cfg, int i, int *stage,
		       const char **lang);

/* Where section/key got its value ("FILE:LINE"), NULL if not from the
 * file; for [farm] keys also the environment or the command line. */
const char *config_where(const struct config *cfg, const char *section,
			 const char *key);

/* Print the usage of one command (or of all with CMD_COUNT) to fp, from
 * common_cli.c's table.  Write errors are fp's (ferror), not reported
 * here. */
void config_usage(FILE *fp, int cmd);
/* The command word of cmd ("run", "scan", ...); "?" when out of range. */
const char *config_cmd_name(int cmd);

/* ---- between common_config.c and common_cli.c ------------------------ */
/* The whole parse (defaults, file, environment, options) without printing:
 * the codes of config_load, the message in err. */
int  config_parse(struct config *cfg, int argc, char **argv, char *err,
		  size_t errlen);
/* Zero cfg and set every built-in default (workers 5, ./output, ...).
 * Never fails. */
void config_defaults(struct config *cfg);
/* Read an INI file into cfg (its entries, and its [farm] keys into the
 * typed fields): 0, or -1 with err as "FILE:LINE: message" (a file that
 * cannot be read, a syntax error, a bad [farm] value or unknown key);
 * what was read before the error stays in cfg. */
int  config_file_read(struct config *cfg, const char *file, char *err,
		      size_t errlen);
/* Set one [farm] key from the file, the environment or an option; where
 * says which.  -1 on a bad value (err without location), -2 unknown key. */
int  config_farm_set(struct config *cfg, const char *key, const char *v,
		     const char *where, char *err, size_t errlen);
/* "en, de,HE" -> {"en","de","he"}: codes start with a letter, then
 * letters, digits, '-' or '_'; lower-cased; a repeated code counts once.
 * 0 and *n set, or -1 with err naming the list (a bad code, more than
 * CONFIG_LANGS_MAX) and langs and *n not to be used. */
int  config_langs_parse(const char *s, char (*langs)[CONFIG_LANG_MAX],
			int *n, char *err, size_t errlen);

#endif
