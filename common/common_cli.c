/*
 * common_cli.c - the command line: which commands there are, which options
 * each one takes, their help, and the parse that layers the command line
 * over the config file.  Two tables say it all: a command's row names its
 * arguments and help; an option's row names the commands that use it.  An
 * option may stand before or after the command word, and one the chosen
 * command does not use is a usage error: mpfarm spends money and marks
 * files done, so nothing the user typed is ever silently ignored.
 */
#include <stdio.h>
#include "common_config.h"
#include "common_db.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define C(x)   (1u << CMD_##x)
#define C_ALL  ((1u << CMD_COUNT) - 1)
/* run's options, which `config` also takes to show their effect */
#define C_RUN  (C(RUN) | C(CONFIG))

struct cli_cmd {
	const char *name;
	const char *synopsis;       /* after "mpfarm NAME" */
	int         min_args, max_args;
	const char *summary;
};

static const struct cli_cmd cli_cmds[CMD_COUNT] = {
	[CMD_RUN]    = { "run", "[options]", 0, 0,
		"run the farm until there is nothing left to do" },
	[CMD_SCAN]   = { "scan", "DIR...", 1, 1 << 20,
		"register media files and create their jobs" },
	[CMD_STATUS] = { "status", "[--json]", 0, 0,
		"counts per stage and status; live farm figures" },
	[CMD_FAILED] = { "failed", "[--stage S] [--language L] [--json]", 0, 0,
		"every failed job: file, stage/language, attempts, last error" },
	[CMD_SHOW]   = { "show", "FILE|ID [--json]", 1, 1,
		"one file: its jobs, outputs and attempt history" },
	[CMD_RETRY]  = { "retry", "[--stage S] [--language L] [--file PATH]",
		0, 0, "failed jobs back to not_started" },
	[CMD_FIX]    = { "fix", "[--dry-run]", 0, 0,
		"reconcile the database with the files on disk" },
	[CMD_CHECK]  = { "check", "", 0, 0,
		"verify integrity; exit 1 if anything is off" },
	[CMD_CONFIG] = { "config", "[run options]", 0, 0,
		"the effective configuration, where each value came from, "
		"and the start-up checks" },
	[CMD_SIGNAL] = { "signal", "SIG", 1, 1,
		"send USR1/HUP/TTIN/TTOU/TERM/QUIT to the live master" },
	[CMD_SERVE]  = { "serve", "[--listen ADDR:PORT]", 0, 0,
		"read-only web dashboard, /metrics, /api/status" },
	[CMD_MIGRATE] = { "migrate", "--to postgresql://...", 0, 0,
		"copy this SQLite farm into an empty PostgreSQL farm" },
	[CMD_HELP]   = { "help", "[COMMAND]", 0, 1,
		"this text, or one command's" },
};

enum cli_opt_id {
	OPT_HELP = 'h', OPT_VERSION = 'V',
	OPT_WORKERS = 256, OPT_BATCH, OPT_STAGE, OPT_LANG, OPT_WATCH,
	OPT_INTERVAL, OPT_JOB_TIMEOUT, OPT_HEARTBEAT, OPT_ATTEMPTS,
	OPT_PER_WORKER, OPT_GRACE, OPT_CONFIG, OPT_DB, OPT_OUTPUT, OPT_LOG_FILE,
	OPT_LOG_LEVEL, OPT_DURABLE, OPT_JSON, OPT_DRY_RUN, OPT_FILE, OPT_LISTEN,
	OPT_FOLLOW, OPT_TO,
};

struct cli_opt {
	const char *name;
	const char *alias;          /* a second spelling, or NULL */
	int         id;
	const char *arg;            /* its value's name; NULL for a flag */
	const char *key;            /* the [farm] key it sets, or NULL */
	unsigned    cmds;           /* the commands that use it */
	const char *help;
};

static const struct cli_opt cli_opts[] = {
	{ "workers", NULL, OPT_WORKERS, "N", "workers", C_RUN,
	  "worker processes (default 5)" },
	{ "batch-size", NULL, OPT_BATCH, "N", "batch_size", C_RUN,
	  "at most N jobs this run; under --watch, per check interval "
	  "(default: all)" },
	{ "stage", NULL, OPT_STAGE, "S", NULL, C_RUN | C(RETRY) | C(FAILED),
	  "transcribe, translate or all (default all)" },
	{ "language", "languages", OPT_LANG, "L[,L...]", NULL,
	  C_RUN | C(RETRY) | C(FAILED), "translation targets to work on" },
	{ "watch", NULL, OPT_WATCH, NULL, "watch", C_RUN,
	  "keep running and pick up new work" },
	{ "check-interval", NULL, OPT_INTERVAL, "SEC", "check_interval", C_RUN,
	  "how often --watch looks for new work (60)" },
	{ "job-timeout", NULL, OPT_JOB_TIMEOUT, "SEC", "job_timeout", C_RUN,
	  "a job running longer is hung (3600)" },
	{ "heartbeat-timeout", NULL, OPT_HEARTBEAT, "SEC", "heartbeat_timeout",
	  C_RUN, "a busy worker silent this long is wedged (60)" },
	{ "max-attempts", NULL, OPT_ATTEMPTS, "N", "max_attempts", C_RUN,
	  "attempts before a job ends failed (3)" },
	{ "max-jobs-per-worker", NULL, OPT_PER_WORKER, "N",
	  "max_jobs_per_worker", C_RUN,
	  "recycle a worker after about N jobs (0 = never)" },
	{ "grace", NULL, OPT_GRACE, "SEC", "grace", C_RUN,
	  "how long TERM lets running jobs finish (30)" },
	{ "durable", NULL, OPT_DURABLE, NULL, "durable", C_RUN,
	  "fsync outputs and use synchronous=FULL" },
	{ "output", NULL, OPT_OUTPUT, "DIR", "output",
	  C_RUN | C(SCAN) | C(SHOW) | C(FIX) | C(CHECK) | C(SERVE),
	  "output folder (default ./output)" },
	{ "log-file", NULL, OPT_LOG_FILE, "FILE", "log_file", C_RUN | C(SERVE),
	  "log here instead of stderr (HUP reopens it)" },
	{ "log-level", NULL, OPT_LOG_LEVEL, "LEVEL", "log_level",
	  C_RUN | C(SERVE), "debug, info, warn or error (info)" },
	{ "dry-run", NULL, OPT_DRY_RUN, NULL, NULL,
	  C(RUN) | C(SCAN) | C(RETRY) | C(FIX),
	  "show what would happen; change nothing" },
	{ "follow-symlinks", NULL, OPT_FOLLOW, NULL, "follow_symlinks", C(SCAN),
	  "also register links that resolve inside a scanned folder" },
	{ "json", NULL, OPT_JSON, NULL, NULL, C(STATUS) | C(FAILED) | C(SHOW),
	  "one JSON document instead of text" },
	{ "file", NULL, OPT_FILE, "PATH", NULL, C(RETRY),
	  "only this media file's jobs" },
	{ "listen", NULL, OPT_LISTEN, "ADDR:PORT", NULL, C(SERVE),
	  "where to serve (default 127.0.0.1:8080)" },
	{ "to", NULL, OPT_TO, "URL", NULL, C(MIGRATE),
	  "the PostgreSQL farm to copy into (empty)" },
	{ "config", NULL, OPT_CONFIG, "FILE", NULL, C_ALL,
	  "INI config (default ./mpfarm.conf if present)" },
	{ "db", NULL, OPT_DB, "PATH", "db", C_ALL,
	  "database (default media_tracking.db, or $MPFARM_DB)" },
	{ "help", NULL, OPT_HELP, NULL, NULL, C_ALL, "this help (-h)" },
	{ "version", NULL, OPT_VERSION, NULL, NULL, C_ALL,
	  "the version (-V)" },
};
#define CLI_NOPTS (sizeof(cli_opts) / sizeof(cli_opts[0]))

/* What the command line said, before it is applied over the file. */
struct cli_said {
	const struct cli_opt *opt;
	const char *arg;
	const char *typed;          /* as typed, for messages */
};

const char *
config_cmd_name(int cmd)
{
	return cmd >= 0 && cmd < CMD_COUNT ? cli_cmds[cmd].name : "?";
}

static const struct cli_opt *
cli_opt_by_id(int id)
{
	for (size_t i = 0; i < CLI_NOPTS; i++)
		if (cli_opts[i].id == id)
			return &cli_opts[i];
	return NULL;
}

static int
cli_cmd_find(const char *word)
{
	for (int k = 0; k < CMD_COUNT; k++)
		if (strcmp(cli_cmds[k].name, word) == 0)
			return k;
	return -1;
}

static void
cli_opt_line(FILE *fp, const struct cli_opt *o)
{
	char lhs[64];

	snprintf(lhs, sizeof(lhs), "--%s%s%s", o->name, o->arg ? " " : "",
	    o->arg ? o->arg : "");
	fprintf(fp, "  %-26s %s", lhs, o->help);
	if (o->alias != NULL)
		fprintf(fp, " (also --%s)", o->alias);
	fputc('\n', fp);
}

void
config_usage(FILE *fp, int cmd)
{
	if (cmd >= 0 && cmd < CMD_COUNT) {
		const struct cli_cmd *c = &cli_cmds[cmd];
		fprintf(fp, "usage: mpfarm %s %s\n       %s\n\noptions:\n",
		    c->name, c->synopsis, c->summary);
		for (size_t i = 0; i < CLI_NOPTS; i++)
			if (cli_opts[i].cmds & (1u << cmd))
				cli_opt_line(fp, &cli_opts[i]);
		if (cmd == CMD_RUN)
			fprintf(fp, "\nEach option is also a [farm] key of the "
			    "config file; the command line wins.\n");
		return;
	}
	for (int k = 0; k < CMD_COUNT; k++) {
		char lhs[64];
		snprintf(lhs, sizeof(lhs), "%s %s", cli_cmds[k].name,
		    k == CMD_RUN ? "[options]" : k == CMD_SCAN ? "DIR..." :
		    k == CMD_SHOW ? "FILE|ID" : k == CMD_SIGNAL ? "SIG" :
		    k == CMD_HELP ? "[COMMAND]" : k == CMD_MIGRATE ? "--to URL" : "");
		fprintf(fp, "%s mpfarm %-17s %s\n", k == 0 ? "usage:" : "      ",
		    lhs, cli_cmds[k].summary);
	}
	fprintf(fp, "       mpfarm --help | --version\n\n"
	    "Options may come before or after the command word; "
	    "`mpfarm help COMMAND`\nor `mpfarm COMMAND --help` lists the "
	    "options of one command.\n\nrun options (the default command):\n");
	for (size_t i = 0; i < CLI_NOPTS; i++)
		if (cli_opts[i].cmds & C(RUN))
			cli_opt_line(fp, &cli_opts[i]);
}

/* getopt_long's table, built from cli_opts so that each option is stated
 * once. */
static void
cli_longopts(struct option *lo)
{
	size_t n = 0;

	for (size_t i = 0; i < CLI_NOPTS; i++) {
		lo[n++] = (struct option){ cli_opts[i].name,
		    cli_opts[i].arg ? required_argument : no_argument, NULL,
		    cli_opts[i].id };
		if (cli_opts[i].alias != NULL)
			lo[n++] = (struct option){ cli_opts[i].alias,
			    cli_opts[i].arg ? required_argument : no_argument,
			    NULL, cli_opts[i].id };
	}
	lo[n] = (struct option){ NULL, 0, NULL, 0 };
}

/* Apply one option over the file's values. */
static int
cli_apply(struct config *cfg, const struct cli_said *s, char *err,
	  size_t errlen)
{
	const struct cli_opt *o = s->opt;
	char msg[400], where[80];

	if (o->key != NULL) {
		snprintf(where, sizeof(where), "command line --%s", o->name);
		if (config_farm_set(cfg, o->key, o->arg ? s->arg : "yes", where,
		    msg, sizeof(msg)) < 0) {
			/* "batch_size must be ..." -> "--batch-size must be ..." */
			const char *rest = msg + strlen(o->key);
			if (strncmp(msg, o->key, strlen(o->key)) != 0)
				rest = msg;
			snprintf(err, errlen, "--%s%s%s", o->name,
			    rest == msg ? ": " : "", rest);
			return -1;
		}
		return 0;
	}
	switch (o->id) {
	case OPT_JSON:    cfg->json = true; break;
	case OPT_DRY_RUN: cfg->dry_run = true; break;
	case OPT_FILE:
		free(cfg->file);
		cfg->file = xstrdup(s->arg);
		break;
	case OPT_LISTEN:
		free(cfg->listen);
		cfg->listen = xstrdup(s->arg);
		break;
	case OPT_TO:
		free(cfg->migrate_to);
		cfg->migrate_to = xstrdup(s->arg);
		break;
	case OPT_STAGE:
		if (strcmp(s->arg, "transcribe") == 0)
			cfg->stage_mask = STAGE_MASK_TRANSCRIBE;
		else if (strcmp(s->arg, "translate") == 0)
			cfg->stage_mask = STAGE_MASK_TRANSLATE;
		else if (strcmp(s->arg, "all") == 0)
			cfg->stage_mask = STAGE_MASK_ALL;
		else {
			snprintf(err, errlen, "--stage must be transcribe, "
			    "translate or all, not \"%s\"", s->arg);
			return -1;
		}
		break;
	case OPT_LANG:
		if (config_langs_parse(s->arg, cfg->run_langs, &cfg->nrun_langs,
		    msg, sizeof(msg)) < 0) {
			snprintf(err, errlen, "--language: %s", msg);
			return -1;
		}
		break;
	}
	return 0;
}

/* Print help or the version; CONFIG_EIO when stdout took it badly (a full
 * disk, a closed pipe): a script must not believe it got the text. */
static int
cli_print(struct config *cfg, int what, int cmd, char *err, size_t errlen)
{
	if (what == OPT_VERSION)
		printf("mpfarm %s\n", MPFARM_VERSION);
	else
		config_usage(stdout, cmd);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		snprintf(err, errlen, "cannot write to standard output: %s",
		    strerror(errno));
		return CONFIG_EIO;
	}
	(void)cfg;
	return CONFIG_PRINTED;
}

int
config_parse(struct config *cfg, int argc, char **argv, char *err,
	     size_t errlen)
{
	struct option lo[2 * CLI_NOPTS + 1];
	struct cli_said *said = xcalloc((size_t)argc + 1, sizeof(*said));
	char **pos = xcalloc((size_t)argc + 1, sizeof(*pos));
	int nsaid = 0, npos = 0, nargs, c, rc = CONFIG_EUSAGE, cmd = CMD_RUN;
	int print = 0;
	const char *file = NULL;

	config_defaults(cfg);
	cli_longopts(lo);
	/* "-" first: words that are not options come back in order as 1,
	 * so the command word may stand anywhere (even with POSIXLY_CORRECT) */
	opterr = 0;
	optind = 0;
	while ((c = getopt_long(argc, argv, "-:hV", lo, NULL)) != -1) {
		const char *typed = argv[optind - 1];
		if (c == 1) {
			pos[npos++] = optarg;
			continue;
		}
		if (c == '?') {
			if (optopt != 0 && optopt < 256)
				snprintf(err, errlen, "unknown option -%c (see "
				    "mpfarm --help)", optopt);
			else
				snprintf(err, errlen, "unknown option %s (see "
				    "mpfarm --help)", typed);
			goto out;
		}
		if (c == ':') {
			snprintf(err, errlen, "option %s needs a value", typed);
			goto out;
		}
		said[nsaid++] = (struct cli_said){ cli_opt_by_id(c), optarg,
		    typed };
	}
	while (optind < argc)           /* after "--" */
		pos[npos++] = argv[optind++];

	if (npos > 0) {
		cmd = cli_cmd_find(pos[0]);
		if (cmd < 0) {
			snprintf(err, errlen, "unknown command \"%s\" (see mpfarm "
			    "--help%s)", pos[0], access(pos[0], F_OK) == 0 ?
			    "; to register a folder: mpfarm scan DIR" : "");
			goto out;
		}
	}
	cfg->cmd = (enum config_cmd)cmd;
	for (int i = 0; i < nsaid; i++) {
		const struct cli_opt *o = said[i].opt;
		if (o->id == OPT_HELP || o->id == OPT_VERSION) {
			print = o->id;
			continue;
		}
		if (!(o->cmds & (1u << cmd))) {
			snprintf(err, errlen, "mpfarm %s does not take --%s (see "
			    "mpfarm %s --help)", cli_cmds[cmd].name, o->name,
			    cli_cmds[cmd].name);
			goto out;
		}
		if (o->id == OPT_CONFIG)
			file = said[i].arg;
	}
	if (print != 0 || cmd == CMD_HELP) {
		/* "help" alone: everything; "help --help": help's own usage */
		int which = npos == 0 || (cmd == CMD_HELP && print == 0) ?
		    CMD_COUNT : cmd;
		if (cmd == CMD_HELP && npos > 2) {
			snprintf(err, errlen, "help takes one command");
			goto out;
		}
		if (cmd == CMD_HELP && npos == 2 &&
		    (which = cli_cmd_find(pos[1])) < 0) {
			snprintf(err, errlen, "no command \"%s\" (see mpfarm "
			    "--help)", pos[1]);
			goto out;
		}
		rc = cli_print(cfg, print == OPT_VERSION ? OPT_VERSION : OPT_HELP,
		    which, err, errlen);
		goto out;
	}
	nargs = npos > 0 ? npos - 1 : 0;
	if (nargs < cli_cmds[cmd].min_args || nargs > cli_cmds[cmd].max_args) {
		if (nargs < cli_cmds[cmd].min_args)
			snprintf(err, errlen, "mpfarm %s needs %s (usage: mpfarm "
			    "%s %s)", cli_cmds[cmd].name, cmd == CMD_SCAN ?
			    "at least one folder" : cmd == CMD_SHOW ? "a file or "
			    "file ID" : "a signal name", cli_cmds[cmd].name,
			    cli_cmds[cmd].synopsis);
		else
			snprintf(err, errlen, "mpfarm %s: unexpected argument "
			    "\"%s\" (usage: mpfarm %s %s)", cli_cmds[cmd].name,
			    pos[1 + cli_cmds[cmd].max_args], cli_cmds[cmd].name,
			    cli_cmds[cmd].synopsis);
		goto out;
	}

	/* the file, then the environment, then the options in order */
	if (file == NULL && access("mpfarm.conf", F_OK) == 0)
		file = "mpfarm.conf";
	if (file != NULL && config_file_read(cfg, file, err, errlen) < 0)
		goto out;
	if (getenv("MPFARM_DB") != NULL && getenv("MPFARM_DB")[0] != '\0' &&
	    config_farm_set(cfg, "db", getenv("MPFARM_DB"),
	    "environment MPFARM_DB", err, errlen) < 0)
		goto out;
	for (int i = 0; i < nsaid; i++)
		if (said[i].opt->id != OPT_CONFIG &&
		    cli_apply(cfg, &said[i], err, errlen) < 0)
			goto out;
	/* no message may show a PostgreSQL password: it leaves the name */
	(void)db_target_secret_move(&cfg->db);
	if (cfg->migrate_to != NULL)
		(void)db_target_secret_move(&cfg->migrate_to);

	/* the positional words stay in argv's storage for the commands */
	cfg->nargs = nargs;
	cfg->args = xcalloc((size_t)cfg->nargs + 1, sizeof(*cfg->args));
	for (int i = 0; i < cfg->nargs; i++)
		cfg->args[i] = pos[i + 1];
	/* --language names work to do: it must be a configured target */
	for (int i = 0; i < cfg->nrun_langs; i++) {
		if (config_has_lang(cfg, cfg->run_langs[i]))
			continue;
		snprintf(err, errlen, "--language %s is not a target language "
		    "(set [translate] languages in the config%s%s)",
		    cfg->run_langs[i], cfg->config_path ? ", now " : "",
		    cfg->config_path ? cfg->config_path : "");
		goto out;
	}
	log_set_level(cfg->log_level);
	rc = 0;
out:
	free(said);
	free(pos);
	return rc;
}

int
config_load(struct config *cfg, int argc, char **argv)
{
	char err[700] = "";
	int rc = config_parse(cfg, argc, argv, err, sizeof(err));

	if (rc < 0)
		say_err("%s", err);
	return rc;
}
