/*
 * common_config.c - settings: defaults, then the INI file (inih), then
 * MPFARM_DB, then the command line (getopt_long), which wins.  The file is
 * checked strictly where a typo would silently change behaviour ([farm]
 * keys, section names, provider names, numbers); provider sections accept
 * any key because each provider reads its own.  Errors name file and line.
 */
#include <stdio.h>
#include "common_config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct config_parse {
	struct config *cfg;
	char *err;
	size_t errlen;
	const char *file;
};

static const char *const config_sections[] = {
	"farm", "transcribe", "translate", "elevenlabs", "openai", "deepl",
	"exec", "noop", "serve", NULL
};
static const char *const transcribe_providers[] = {
	"elevenlabs", "openai", "exec", "noop", NULL
};
static const char *const translate_providers[] = {
	"deepl", "openai", "exec", "noop", NULL
};

static bool
word_in(const char *w, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(w, *list) == 0)
			return true;
	return false;
}

static void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = 5;
	cfg->batch_size = 50;
	cfg->job_timeout = 3600;
	cfg->heartbeat_timeout = 60;
	cfg->max_attempts = 3;
	cfg->grace = 30;
	cfg->check_interval = 60;
	cfg->busy_timeout_ms = 10000;
	cfg->retry_delay_ms = 5000;
	cfg->retry_max_delay_ms = 600000;
	cfg->output = xstrdup("./output");
	cfg->db = xstrdup("media_tracking.db");
	cfg->listen = xstrdup("127.0.0.1:8080");
	cfg->log_level = LOG_INFO;
	cfg->stage_mask = STAGE_MASK_ALL;
}

/* Strict integer: whole string, within [lo, hi]. */
static int
parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int
parse_bool(const char *s, bool *out)
{
	if (!strcasecmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on"))
		*out = true;
	else if (!strcasecmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off"))
		*out = false;
	else
		return -1;
	return 0;
}

/* "en, de,HE" -> {"en","de","he"}; a code is [A-Za-z0-9_-]{1,15}. */
static int
parse_langs(const char *s, char (*langs)[CONFIG_LANG_MAX], int *n,
	    char *err, size_t errlen)
{
	int count = 0;
	const char *p = s;

	while (*p) {
		char code[CONFIG_LANG_MAX];
		size_t k = 0;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		while (*p && *p != ',' && !isspace((unsigned char)*p)) {
			unsigned char c = (unsigned char)*p++;
			if (!(isalnum(c) || c == '_' || c == '-') || k >= CONFIG_LANG_MAX - 1) {
				snprintf(err, errlen, "invalid language list \"%s\" "
				    "(codes like en,de,he)", s);
				return -1;
			}
			code[k++] = (char)tolower(c);
		}
		code[k] = '\0';
		bool dup = false;
		for (int i = 0; i < count; i++)
			if (strcmp(langs[i], code) == 0)
				dup = true;
		if (dup)
			continue;
		if (count >= CONFIG_LANGS_MAX) {
			snprintf(err, errlen, "too many languages (at most %d)",
			    CONFIG_LANGS_MAX);
			return -1;
		}
		memcpy(langs[count++], code, k + 1);
	}
	*n = count;
	return 0;
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

/* [farm] key or a command-line option of the same name. err gets a
 * message without location; returns -1 on a bad value, -2 unknown key. */
static int
config_set_farm(struct config *cfg, const char *key, const char *v,
		char *err, size_t errlen)
{
	struct { const char *k; int *p; long lo, hi; } ints[] = {
		{ "workers", &cfg->workers, 0, 1024 },
		{ "batch_size", &cfg->batch_size, 1, 100000 },
		{ "job_timeout", &cfg->job_timeout, 1, 86400 * 30 },
		{ "heartbeat_timeout", &cfg->heartbeat_timeout, 1, 86400 },
		{ "max_attempts", &cfg->max_attempts, 1, 1000 },
		{ "max_jobs_per_worker", &cfg->max_jobs_per_worker, 0, 1000000000 },
		{ "grace", &cfg->grace, 0, 86400 },
		{ "check_interval", &cfg->check_interval, 1, 86400 },
		{ "busy_timeout", &cfg->busy_timeout_ms, 1, 3600000 },
		{ "retry_delay_ms", &cfg->retry_delay_ms, 1, 86400000 },
		{ "retry_max_delay_ms", &cfg->retry_max_delay_ms, 1, 86400000 },
	};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		if (strcmp(key, ints[i].k) != 0)
			continue;
		if (parse_int(v, ints[i].lo, ints[i].hi, ints[i].p) < 0) {
			snprintf(err, errlen, "%s must be a whole number from %ld "
			    "to %ld, not \"%s\"", key, ints[i].lo, ints[i].hi, v);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "durable") == 0 || strcmp(key, "watch") == 0) {
		bool *b = key[0] == 'd' ? &cfg->durable : &cfg->watch;
		if (parse_bool(v, b) < 0) {
			snprintf(err, errlen, "%s must be yes or no, not \"%s\"", key, v);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "output") == 0 || strcmp(key, "db") == 0 ||
	    strcmp(key, "log_file") == 0) {
		if (v[0] == '\0') {
			snprintf(err, errlen, "%s must not be empty", key);
			return -1;
		}
		set_str(key[0] == 'o' ? &cfg->output : key[0] == 'd' ? &cfg->db
		    : &cfg->log_file, v);
		return 0;
	}
	if (strcmp(key, "log_level") == 0) {
		if (log_level_parse(v, &cfg->log_level) < 0) {
			snprintf(err, errlen, "log_level must be debug, info, "
			    "warn or error, not \"%s\"", v);
			return -1;
		}
		return 0;
	}
	snprintf(err, errlen, "unknown key \"%s\" in [farm]", key);
	return -2;
}

static int
config_ini_handler(void *user, const char *section, const char *key,
		   const char *value)
{
	struct config_parse *cp = user;
	struct config *cfg = cp->cfg;
	char msg[400] = "";
	bool lang_section = strncmp(section, "translate.", 10) == 0;

	if (key == NULL)        /* a bare [section] line */
		return 1;
	if (!word_in(section, config_sections) && !lang_section) {
		snprintf(msg, sizeof(msg), "unknown section [%s]", section);
		goto fail;
	}
	if (lang_section) {
		char one[1][CONFIG_LANG_MAX];
		int n = 0;
		if (parse_langs(section + 10, one, &n, msg, sizeof(msg)) < 0 || n != 1) {
			snprintf(msg, sizeof(msg), "bad language in section [%s]", section);
			goto fail;
		}
	}
	if (strcmp(section, "farm") == 0 &&
	    config_set_farm(cfg, key, value, msg, sizeof(msg)) < 0)
		goto fail;
	if (strcmp(section, "serve") == 0) {
		if (strcmp(key, "listen") != 0) {
			snprintf(msg, sizeof(msg), "unknown key \"%s\" in [serve]",
			    key);
			goto fail;
		}
		set_str(&cfg->listen, value);
	}
	if (strcmp(key, "provider") == 0) {
		bool tr = strcmp(section, "transcribe") == 0;
		if (tr && !word_in(value, transcribe_providers)) {
			snprintf(msg, sizeof(msg), "unknown transcription provider "
			    "\"%s\" (elevenlabs, openai, exec or noop)", value);
			goto fail;
		}
		if ((lang_section || strcmp(section, "translate") == 0) &&
		    !word_in(value, translate_providers)) {
			snprintf(msg, sizeof(msg), "unknown translation provider "
			    "\"%s\" (deepl, openai, exec or noop)", value);
			goto fail;
		}
	}
	if (strcmp(section, "translate") == 0 && strcmp(key, "languages") == 0 &&
	    parse_langs(value, cfg->langs, &cfg->nlangs, msg, sizeof(msg)) < 0)
		goto fail;
	if (strcmp(key, "max_concurrency") == 0 || strcmp(key, "rate") == 0) {
		char *end;
		double d = strtod(value, &end);
		if (end == value || *end != '\0' || d < 0) {
			snprintf(msg, sizeof(msg), "%s must be a positive number, "
			    "not \"%s\"", key, value);
			goto fail;
		}
	}
	cfg->entries = xrealloc(cfg->entries,
	    sizeof(*cfg->entries) * (size_t)(cfg->nentries + 1));
	cfg->entries[cfg->nentries++] = (struct config_entry){
		xstrdup(section), xstrdup(key), xstrdup(value) };
	return 1;
fail:
	/* Debian's inih passes no line number; ini_parse_file returns it */
	snprintf(cp->err, cp->errlen, "%s", msg);
	return 0;
}

static const struct option config_longopts[] = {
	{ "workers", required_argument, NULL, 'w' },
	{ "batch-size", required_argument, NULL, 'b' },
	{ "stage", required_argument, NULL, 's' },
	{ "language", required_argument, NULL, 'l' },
	{ "languages", required_argument, NULL, 'l' },
	{ "watch", no_argument, NULL, 'W' },
	{ "check-interval", required_argument, NULL, 'i' },
	{ "job-timeout", required_argument, NULL, 't' },
	{ "heartbeat-timeout", required_argument, NULL, 'H' },
	{ "max-attempts", required_argument, NULL, 'a' },
	{ "max-jobs-per-worker", required_argument, NULL, 'm' },
	{ "grace", required_argument, NULL, 'g' },
	{ "config", required_argument, NULL, 'c' },
	{ "db", required_argument, NULL, 'd' },
	{ "output", required_argument, NULL, 'o' },
	{ "log-file", required_argument, NULL, 'L' },
	{ "log-level", required_argument, NULL, 'v' },
	{ "durable", no_argument, NULL, 'D' },
	{ "json", no_argument, NULL, 'j' },
	{ "dry-run", no_argument, NULL, 'n' },
	{ "listen", required_argument, NULL, 'A' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* option letter -> [farm] key, for the options that mirror one */
static const char *
config_opt_key(int c)
{
	switch (c) {
	case 'w': return "workers";
	case 'b': return "batch_size";
	case 'i': return "check_interval";
	case 't': return "job_timeout";
	case 'H': return "heartbeat_timeout";
	case 'a': return "max_attempts";
	case 'm': return "max_jobs_per_worker";
	case 'g': return "grace";
	case 'd': return "db";
	case 'o': return "output";
	case 'L': return "log_file";
	case 'v': return "log_level";
	}
	return NULL;
}

void
config_usage(FILE *fp)
{
	fprintf(fp,
"usage: mpfarm [run] [options]          run the farm until there is nothing left to do\n"
"       mpfarm scan DIR...              register media files and create their jobs\n"
"       mpfarm status [--json]          counts per stage and status; live farm figures\n"
"       mpfarm retry [--stage S] [--language L]   failed jobs back to not_started\n"
"       mpfarm fix [--dry-run]          reconcile the database with the files on disk\n"
"       mpfarm check                    verify integrity; exit 1 if anything is off\n"
"       mpfarm failed [--stage S] [--language L] [--json]   the failed jobs\n"
"       mpfarm show FILE|FILE_ID [--json]   one file: jobs, outputs, attempts\n"
"       mpfarm serve [--listen ADDR:PORT]   read-only web dashboard and /metrics\n"
"       mpfarm --help | --version\n"
"\n"
"options (each also settable in the config file; the command line wins):\n"
"  --workers N              worker processes (default 5)\n"
"  --batch-size N           most jobs taken from the database per refill (50)\n"
"  --stage S                transcribe, translate or all (default all)\n"
"  --language L[,L...]      translation targets to work on (alias --languages)\n"
"  --watch                  keep running and pick up new work\n"
"  --check-interval SEC     how often --watch looks for new work (60)\n"
"  --job-timeout SEC        a job running longer is hung (3600)\n"
"  --heartbeat-timeout SEC  a busy worker silent this long is wedged (60)\n"
"  --max-attempts N         attempts before a job ends failed (3)\n"
"  --max-jobs-per-worker N  recycle a worker after about N jobs (0 = never)\n"
"  --grace SEC              how long TERM lets running jobs finish (30)\n"
"  --durable                fsync outputs and use synchronous=FULL\n"
"  --config FILE            INI config (default ./mpfarm.conf if present)\n"
"  --db PATH                database (default media_tracking.db, or $MPFARM_DB)\n"
"  --output DIR             output folder (default ./output)\n"
"  --log-file FILE          log here instead of stderr (HUP reopens it)\n"
"  --log-level LEVEL        debug, info, warn or error (info)\n"
"  --json                   status, failed, show: JSON\n"
"  --listen ADDR:PORT       serve: where to listen (127.0.0.1:8080)\n"
"  --dry-run                fix: list the changes, make none\n"
"  --help, --version\n");
}

static int
config_parse(struct config *cfg, int argc, char **argv, char *err,
	     size_t errlen)
{
	const char *file = NULL;
	int c, rc;

	config_defaults(cfg);
	/* pass 1: --config, --help, --version */
	opterr = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, "+:", config_longopts, NULL)) != -1) {
		if (c == 'c') {
			file = optarg;
		} else if (c == 'h' || c == 'V') {
			if (c == 'h')
				config_usage(stdout);
			else
				printf("mpfarm %s\n", MPFARM_VERSION);
			return 1;
		}
	}
	if (file == NULL && access("mpfarm.conf", F_OK) == 0)
		file = "mpfarm.conf";
	if (file != NULL) {
		struct config_parse cp = { cfg, err, errlen, file };
		FILE *fp = fopen(file, "r");
		if (fp == NULL) {
			snprintf(err, errlen, "cannot read config %s: %s", file,
			    strerror(errno));
			return -1;
		}
		err[0] = '\0';
		rc = ini_parse_file(fp, config_ini_handler, &cp);
		fclose(fp);
		if (rc != 0) {
			char msg[400];
			snprintf(msg, sizeof(msg), "%s", err[0] ? err : "syntax error");
			if (rc > 0)
				snprintf(err, errlen, "%s:%d: %s", file, rc, msg);
			else
				snprintf(err, errlen, "%s: %s", file, msg);
			return -1;
		}
		cfg->config_path = xstrdup(file);
	}
	if (getenv("MPFARM_DB") != NULL && getenv("MPFARM_DB")[0] != '\0')
		set_str(&cfg->db, getenv("MPFARM_DB"));

	/* pass 2: everything else, permuting so options may follow the command */
	optind = 0;
	while ((c = getopt_long(argc, argv, ":", config_longopts, NULL)) != -1) {
		char msg[300];
		const char *key = config_opt_key(c);

		if (c == '?') {
			snprintf(err, errlen, "unknown option %s (see mpfarm --help)",
			    argv[optind - 1]);
			return -1;
		}
		if (c == ':') {
			snprintf(err, errlen, "option %s needs a value",
			    argv[optind - 1]);
			return -1;
		}
		if (key != NULL) {
			if (config_set_farm(cfg, key, optarg, msg, sizeof(msg)) < 0) {
				snprintf(err, errlen, "--%s: %s", key, msg);
				for (char *p = err + 2; *p && *p != ':'; p++)
					if (*p == '_')
						*p = '-';
				return -1;
			}
			continue;
		}
		switch (c) {
		case 'W': cfg->watch = true; break;
		case 'D': cfg->durable = true; break;
		case 'j': cfg->json = true; break;
		case 'n': cfg->dry_run = true; break;
		case 'c': break;
		case 'A': set_str(&cfg->listen, optarg); break;
		case 's':
			if (strcmp(optarg, "transcribe") == 0)
				cfg->stage_mask = STAGE_MASK_TRANSCRIBE;
			else if (strcmp(optarg, "translate") == 0)
				cfg->stage_mask = STAGE_MASK_TRANSLATE;
			else if (strcmp(optarg, "all") == 0)
				cfg->stage_mask = STAGE_MASK_ALL;
			else {
				snprintf(err, errlen, "--stage must be transcribe, "
				    "translate or all, not \"%s\"", optarg);
				return -1;
			}
			break;
		case 'l':
			if (parse_langs(optarg, cfg->run_langs, &cfg->nrun_langs,
			    msg, sizeof(msg)) < 0) {
				snprintf(err, errlen, "--language: %s", msg);
				return -1;
			}
			break;
		}
	}

	static const char *const cmds[] = {
		"run", "scan", "status", "retry", "fix", "check", "failed",
		"show", "serve", NULL
	};
	cfg->cmd = CMD_RUN;
	if (optind < argc) {
		int k = 0;
		while (cmds[k] && strcmp(cmds[k], argv[optind]) != 0)
			k++;
		if (cmds[k] == NULL) {
			snprintf(err, errlen, "unknown command \"%s\" (see mpfarm "
			    "--help)", argv[optind]);
			return -1;
		}
		cfg->cmd = (enum config_cmd)k;
		optind++;
	}
	cfg->args = argv + optind;
	cfg->nargs = argc - optind;
	if (cfg->cmd == CMD_SCAN && cfg->nargs == 0) {
		snprintf(err, errlen, "scan needs at least one folder");
		return -1;
	}
	if (cfg->cmd == CMD_SHOW && cfg->nargs != 1) {
		snprintf(err, errlen, "show needs one file (a path or a file id)");
		return -1;
	}
	if (cfg->cmd != CMD_SCAN && cfg->cmd != CMD_SHOW && cfg->nargs > 0) {
		snprintf(err, errlen, "unexpected argument \"%s\"", cfg->args[0]);
		return -1;
	}
	/* --language names work to do: it must be a configured target */
	for (int i = 0; i < cfg->nrun_langs; i++) {
		if (!config_has_lang(cfg, cfg->run_langs[i])) {
			if (cfg->cmd == CMD_RUN || cfg->cmd == CMD_RETRY) {
				snprintf(err, errlen, "--language %s is not a target "
				    "language (set [translate] languages in the "
				    "config%s%s)", cfg->run_langs[i],
				    cfg->config_path ? ", now " : "",
				    cfg->config_path ? cfg->config_path : "");
				return -1;
			}
		}
	}
	log_set_level(cfg->log_level);
	return 0;
}

int
config_load(struct config *cfg, int argc, char **argv)
{
	char err[600] = "";
	int rc = config_parse(cfg, argc, argv, err, sizeof(err));

	if (rc < 0)
		say_err("%s", err);
	return rc;
}

int
config_reload(struct config *cfg, int argc, char **argv,
	      int (*check)(const struct config *fresh, char *err, size_t errlen))
{
	struct config fresh;
	char err[600] = "";

	if (config_parse(&fresh, argc, argv, err, sizeof(err)) != 0 ||
	    (check != NULL && check(&fresh, err, sizeof(err)) < 0)) {
		log_error("config_reload_failed", "error=%s keeping=old",
		    log_quote(err));
		config_free(&fresh);
		return -1;
	}
	/* the database and the output folder belong to the running farm (its
	 * lock, its workers' files): they change with a restart only */
	if (strcmp(fresh.db, cfg->db) != 0 || strcmp(fresh.output, cfg->output) != 0)
		log_warn("config_reload_partial", "note=db-and-output-change-"
		    "on-restart-only db=%s output=%s", log_quote(cfg->db),
		    log_quote(cfg->output));
	free(fresh.db);
	free(fresh.output);
	fresh.db = xstrdup(cfg->db);
	fresh.output = xstrdup(cfg->output);
	config_free(cfg);
	*cfg = fresh;
	return 0;
}

void
config_free(struct config *cfg)
{
	for (int i = 0; i < cfg->nentries; i++) {
		free(cfg->entries[i].section);
		free(cfg->entries[i].key);
		free(cfg->entries[i].value);
	}
	free(cfg->entries);
	free(cfg->config_path);
	free(cfg->output);
	free(cfg->db);
	free(cfg->log_file);
	free(cfg->listen);
	memset(cfg, 0, sizeof(*cfg));
}

const char *
config_get(const struct config *cfg, const char *section, const char *key)
{
	for (int i = cfg->nentries - 1; i >= 0; i--)
		if (strcmp(cfg->entries[i].section, section) == 0 &&
		    strcmp(cfg->entries[i].key, key) == 0)
			return cfg->entries[i].value;
	return NULL;
}

long
config_get_long(const struct config *cfg, const char *section,
		const char *key, long dflt)
{
	const char *v = config_get(cfg, section, key);
	char *end;
	long n;

	if (v == NULL)
		return dflt;
	n = strtol(v, &end, 10);
	return (end == v || *end != '\0') ? dflt : n;
}

double
config_get_double(const struct config *cfg, const char *section,
		  const char *key, double dflt)
{
	const char *v = config_get(cfg, section, key);
	char *end;
	double d;

	if (v == NULL)
		return dflt;
	d = strtod(v, &end);
	return (end == v || *end != '\0') ? dflt : d;
}

const char *
config_stage_get(const struct config *cfg, int stage, const char *lang,
		 const char *key)
{
	const char *v = NULL;

	if (stage == STAGE_TRANSCRIBE)
		return config_get(cfg, "transcribe", key);
	if (lang != NULL && lang[0] != '\0') {
		char sec[CONFIG_LANG_MAX + 16];
		snprintf(sec, sizeof(sec), "translate.%s", lang);
		v = config_get(cfg, sec, key);
	}
	return v != NULL ? v : config_get(cfg, "translate", key);
}

const char *
config_provider(const struct config *cfg, int stage, const char *lang)
{
	const char *v = config_stage_get(cfg, stage, lang, "provider");
	return v != NULL ? v : "noop";
}

bool
config_has_lang(const struct config *cfg, const char *lang)
{
	for (int i = 0; i < cfg->nlangs; i++)
		if (strcmp(cfg->langs[i], lang) == 0)
			return true;
	return false;
}

bool
config_wants(const struct config *cfg, int stage, const char *lang)
{
	if (!(cfg->stage_mask & (1 << stage)))
		return false;
	if (stage == STAGE_TRANSCRIBE || cfg->nrun_langs == 0)
		return true;
	for (int i = 0; i < cfg->nrun_langs; i++)
		if (strcmp(cfg->run_langs[i], lang) == 0)
			return true;
	return false;
}
