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
#define STAGE_MASK_TRANSCRIBE (1 << STAGE_TRANSCRIBE)
#define STAGE_MASK_TRANSLATE  (1 << STAGE_TRANSLATE)
#define STAGE_MASK_ALL        (STAGE_MASK_TRANSCRIBE | STAGE_MASK_TRANSLATE)

#define CONFIG_LANG_MAX 16      /* bytes of a language code, with NUL */
#define CONFIG_LANGS_MAX 64

enum config_cmd {
	CMD_RUN = 0, CMD_SCAN, CMD_STATUS, CMD_RETRY, CMD_FIX, CMD_CHECK,
	CMD_FAILED, CMD_SHOW, CMD_SERVE,
};

struct config_entry {
	char *section;
	char *key;
	char *value;
};

struct config {
	/* where the values came from, for messages */
	char *config_path;          /* NULL when no file was read */

	enum config_cmd cmd;
	char **args;                /* non-option arguments after the command */
	int    nargs;

	/* [farm] */
	int   workers;              /* 5 */
	int   batch_size;           /* 50 */
	int   job_timeout;          /* seconds, 3600 */
	int   heartbeat_timeout;    /* seconds of silence from a busy worker, 60 */
	int   max_attempts;         /* 3 */
	int   max_jobs_per_worker;  /* 0 = never recycle */
	int   grace;                /* seconds, 30 */
	int   check_interval;       /* seconds, 60 */
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
	bool  json;                 /* status --json */
	bool  dry_run;              /* fix --dry-run */
	char *listen;               /* serve --listen / [serve] listen,
				     * "127.0.0.1:8080" */

	/* [translate] */
	char  langs[CONFIG_LANGS_MAX][CONFIG_LANG_MAX];     /* [translate] languages */
	int   nlangs;

	/* every INI entry, in file order */
	struct config_entry *entries;
	int   nentries;
};

/* Fill defaults, read the config file (explicit --config, else ./mpfarm.conf
 * if it exists), then the command line, then MPFARM_DB.  On a usage or
 * config error prints one message naming the file and line (or option) to
 * stderr and returns -1; the caller exits EXIT_USAGE.  Returns 1 when
 * --help or --version was printed (caller exits 0). */
int  config_load(struct config *cfg, int argc, char **argv);
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
 * Defaults to "noop". */
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

void config_usage(FILE *fp);

#endif
