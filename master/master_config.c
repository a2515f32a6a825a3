/*
 * master_config.c - what a farm checks before it starts, and `mpfarm
 * config`, which shows the effective settings with where each came from
 * and then runs those same checks (as `nginx -t` does, with `git config
 * --show-origin`'s origins).  One list of checks serves both, so the
 * command never passes a config that `run` would refuse.
 */
#include "master.h"
#include "common_db.h"
#include "common_provider.h"
#include "common_store_audit.h"
#include "common_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The folder a path would be created in: the path itself when it is an
 * existing folder, else its nearest existing ancestor. */
static char *
config_existing_dir(const char *path)
{
	char *p = xstrdup(path);
	struct stat sb;

	while (stat(p, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		char *d = xstrdup(dirname(p));
		bool top = strcmp(d, p) == 0;
		free(p);
		p = d;
		if (top)
			break;
	}
	return p;
}

/* A folder (or the place it would be made in) the farm must write. */
static int
config_dir_check(const char *what, const char *path, char *err, size_t errlen)
{
	struct stat sb;
	char *dir;
	int rc = 0;

	if (stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "%s %s is not a folder", what, path);
		return -1;
	}
	dir = config_existing_dir(path);
	if (access(dir, W_OK | X_OK) < 0) {
		snprintf(err, errlen, "%s %s: cannot write in %s: %s", what, path,
		    dir, strerror(errno));
		rc = -1;
	}
	free(dir);
	return rc;
}

/* One folder of the output tree the run will write in, when it exists:
 * a real folder (no link) that mpfarm may write in. */
static int
config_output_dir_check(struct tree *t, const char *sub, char *err,
		      size_t errlen)
{
	int fd = tree_dir_open(t, sub, false, err, errlen);

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0) {
		int e = errno;
		snprintf(err, errlen, "output folder %s%s%s is not writable: %s "
		    "(%s); no job could save its result, so none is run",
		    log_quote(t->root), *sub ? "/" : "", sub, strerror(e),
		    strerrorname_np(e) ? strerrorname_np(e) : "?");
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Check before paying, for the whole run: the output root (made when
 * missing) and the stage folders this run writes in are real folders
 * mpfarm may write in.  Otherwise every job would pay for its provider
 * call and then fail to save it. */
static int
config_output_check(const struct config *cfg, bool create, char *err,
		    size_t errlen)
{
	struct tree t;
	int rc = -1;

	if (tree_open(&t, cfg->output, create, cfg->durable, err, errlen) < 0) {
		/* not made yet (mpfarm config): where it would be made */
		if (!create && errno == ENOENT)
			rc = config_dir_check("output", cfg->output, err, errlen);
		goto out;
	}
	if (config_output_dir_check(&t, "", err, errlen) < 0)
		goto out;
	if (config_wants(cfg, STAGE_TRANSCRIBE, "") &&
	    config_output_dir_check(&t, "transcripts", err, errlen) < 0)
		goto out;
	for (int i = 0; i < cfg->nlangs; i++) {
		char *sub;
		if (!config_wants(cfg, STAGE_TRANSLATE, cfg->langs[i]))
			continue;
		if (config_output_dir_check(&t, "translations", err, errlen) < 0)
			goto out;
		sub = xasprintf("translations/%s", cfg->langs[i]);
		int bad = config_output_dir_check(&t, sub, err, errlen);
		free(sub);
		if (bad < 0)
			goto out;
	}
	rc = 0;
out:
	tree_close(&t);
	return rc;
}

/* The live status file beside the database is replaced by rename, which
 * would not follow a link there; one is still refused, so that nobody
 * mistakes what it points at for the farm's figures. */
static int
config_beside_db_check(const struct config *cfg, char *err, size_t errlen)
{
	char *path = master_status_path(cfg->db);
	struct stat sb;
	int rc = 0;

	if (path != NULL && lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s is %s: mpfarm keeps only regular files "
		    "beside its database (remove it)", log_quote(path),
		    S_ISLNK(sb.st_mode) ? "a symbolic link" : "not a regular file");
		rc = -1;
	}
	free(path);
	return rc;
}

int
master_config_check(const struct config *cfg, int files,
		    master_check_report_fn report, void *arg)
{
	char err[600], name[JOB_STAGE_KEY_MAX];
	const char *lang;
	int problems = 0, stage;

	if (cfg->workers < 1) {
		report(arg, "workers", "--workers must be at least 1", false);
		problems++;
	}
	for (int i = 0; config_stage_lang(cfg, i, &stage, &lang); i++) {
		const char *pname = config_provider(cfg, stage, lang);
		const struct provider_desc *ops = provider_find(pname);

		if (!config_wants(cfg, stage, lang))
			continue;
		job_stage_key(stage, lang, name, sizeof(name));
		if (pname == NULL)
			continue;       /* only a problem with work: run says */
		err[0] = '\0';
		if (ops == NULL)
			snprintf(err, sizeof(err), "provider %s is not built "
			    "into this mpfarm", pname);
		else if (ops->check != NULL)
			(void)ops->check(cfg, stage, lang, err, sizeof(err));
		if (err[0] != '\0') {
			char msg[700];
			snprintf(msg, sizeof(msg), "provider %s: %s", pname, err);
			report(arg, name, msg, false);
			problems++;
		} else {
			char msg[120];
			snprintf(msg, sizeof(msg), "provider %s ready", pname);
			report(arg, name, msg, true);
		}
	}
	if (files == MASTER_CHECK_CONFIG)
		return problems;
	for (int i = 0; i < cfg->nentries; i++) {
		const struct config_entry *e = &cfg->entries[i];
		struct stat sb;
		char key[80], msg[700];

		if (strcmp(e->section, "roots") != 0)
			continue;
		snprintf(key, sizeof(key), "root %.60s", e->key);
		if (stat(e->value, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
			snprintf(msg, sizeof(msg), "%s (%s): %s", log_quote(e->value),
			    e->where, stat(e->value, &sb) < 0 ? strerror(errno) :
			    "not a folder");
			report(arg, key, msg, false);
			problems++;
		} else {
			snprintf(msg, sizeof(msg), "mounted at %s", log_quote(e->value));
			report(arg, key, msg, true);
		}
	}
	if (config_output_check(cfg, files == MASTER_CHECK_CREATE, err,
	    sizeof(err)) < 0) {
		report(arg, "output", err, false);
		problems++;
	} else {
		report(arg, "output", "writable, no link in the way", true);
	}
	if (db_target_is_pg(cfg->db)) {
		/* no folder: the server is asked when the store opens */
		report(arg, "database", "PostgreSQL (no files beside it)", true);
	} else {
		char *dbdir = xstrdup(cfg->db);
		char *d = dirname(dbdir);
		if (config_dir_check("database folder", d, err, sizeof(err)) < 0 ||
		    config_beside_db_check(cfg, err, sizeof(err)) < 0) {
			report(arg, "database", err, false);
			problems++;
		} else {
			report(arg, "database", "folder writable", true);
		}
		free(dbdir);
	}
	return problems;
}

/* A stage this run wants, with work waiting, and no provider: the run
 * would either do nothing for it or (as before) fake it.  Reports each;
 * returns how many.  No store, or a store that cannot be read: 0. */
int
master_config_unprovided(const struct config *cfg, store_t *st,
			 master_check_report_fn report, void *arg)
{
	struct store_counts c;
	int problems = 0;

	if (st == NULL || store_counts_get(st, &c) < 0)
		return 0;
	for (int i = 0; i < c.nstages; i++) {
		struct store_stage_counts *s = &c.stages[i];
		int64_t todo = s->n[JOB_ST_NOT_STARTED] + s->n[JOB_ST_IN_PROGRESS];
		char name[64], msg[700], real[200], fake[100];

		if (todo == 0 || !config_wants(cfg, s->stage, s->lang) ||
		    config_provider(cfg, s->stage, s->lang) != NULL)
			continue;
		if (s->stage == STAGE_TRANSLATE && !config_has_lang(cfg, s->lang))
			continue;
		job_stage_key(s->stage, s->lang, name, sizeof(name));
		provider_names(1 << s->stage, PROVIDER_NAMES_REAL, real,
		    sizeof(real));
		provider_names(1 << s->stage, PROVIDER_NAMES_FAKE, fake,
		    sizeof(fake));
		if (s->stage == STAGE_TRANSCRIBE)
			snprintf(msg, sizeof(msg), "%lld jobs to do and no provider: "
			    "set [transcribe] provider = %s in the config (%s only "
			    "fakes the work, for tests)", (long long)todo, real,
			    fake);
		else
			snprintf(msg, sizeof(msg), "%lld jobs to do and no provider: "
			    "set [translate] provider (or [translate.%s] provider) "
			    "= %s in the config (%s only fakes the work, for tests)",
			    (long long)todo, s->lang, real, fake);
		report(arg, name, msg, false);
		problems++;
	}
	store_counts_free(&c);
	return problems;
}

/* ---- mpfarm config -------------------------------------------------- */

static void
config_show_line(const char *key, const char *value, const char *where)
{
	char lhs[1200];

	snprintf(lhs, sizeof(lhs), "%s = %s", key, value);
	printf("%-40s ; %s\n", lhs, where ? where : "default");
}

static void
config_show_farm(const struct config *cfg)
{
	struct { const char *key; long v; } ints[] = {
		{ "workers", cfg->workers }, { "batch_size", cfg->batch_size },
		{ "fetch_size", cfg->fetch_size },
		{ "job_timeout", cfg->job_timeout },
		{ "heartbeat_timeout", cfg->heartbeat_timeout },
		{ "max_attempts", cfg->max_attempts },
		{ "max_jobs_per_worker", cfg->max_jobs_per_worker },
		{ "grace", cfg->grace }, { "check_interval", cfg->check_interval },
		{ "host_timeout", cfg->host_timeout },
		{ "busy_timeout", cfg->busy_timeout_ms },
		{ "retry_delay_ms", cfg->retry_delay_ms },
		{ "retry_max_delay_ms", cfg->retry_max_delay_ms },
	};
	char v[64];

	printf("[farm]\n");
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		snprintf(v, sizeof(v), "%ld%s", ints[i].v,
		    strcmp(ints[i].key, "batch_size") == 0 && ints[i].v == 0 ?
		    " (all)" : "");
		config_show_line(ints[i].key, v, config_where(cfg, "farm",
		    ints[i].key));
	}
	config_show_line("durable", cfg->durable ? "yes" : "no",
	    config_where(cfg, "farm", "durable"));
	config_show_line("watch", cfg->watch ? "yes" : "no",
	    config_where(cfg, "farm", "watch"));
	config_show_line("follow_symlinks", cfg->follow_symlinks ? "yes" : "no",
	    config_where(cfg, "farm", "follow_symlinks"));
	config_show_line("output", cfg->output, config_where(cfg, "farm", "output"));
	config_show_line("db", cfg->db, config_where(cfg, "farm", "db"));
	config_show_line("log_file", cfg->log_file ? cfg->log_file : "(stderr)",
	    config_where(cfg, "farm", "log_file"));
	config_show_line("log_level", log_level_name(cfg->log_level),
	    config_where(cfg, "farm", "log_level"));
}

/* The other sections, as the file has them, keys hidden where they are
 * secrets; then each HTTP provider's key as set or unset. */
static void
config_show_sections(const struct config *cfg)
{
	const char *last = "farm";

	for (int i = 0; i < cfg->nentries; i++) {
		const struct config_entry *e = &cfg->entries[i];
		if (strcmp(e->section, "farm") == 0)
			continue;
		if (config_get(cfg, e->section, e->key) != e->value)
			continue;       /* overridden further down the file */
		if (strcmp(e->section, last) != 0)
			printf("[%s]\n", e->section);
		last = e->section;
		config_show_line(e->key, strstr(e->key, "key") != NULL &&
		    strcmp(e->key, "api_key_file") != 0 ? "(hidden)" : e->value,
		    e->where);
	}
	printf("[keys]\n");
	for (int i = 0; provider_at(i) != NULL; i++) {
		const struct provider_desc *p = provider_at(i);
		const char *env, *file;
		char v[600];
		if (p->key_env == NULL)
			continue;
		env = getenv(p->key_env);
		file = config_get(cfg, p->name, "api_key_file");
		if (env != NULL && env[0] != '\0')
			snprintf(v, sizeof(v), "set");
		else if (file != NULL && file[0] != '\0')
			snprintf(v, sizeof(v), "from file %s", file);
		else
			snprintf(v, sizeof(v), "unset");
		char where[200];
		snprintf(where, sizeof(where), env && env[0] ? "environment %s" :
		    file && file[0] ? "%s" : "%s: not in the environment",
		    env && env[0] ? p->key_env : file && file[0] ?
		    config_where(cfg, p->name, "api_key_file") : p->key_env);
		char k[80];
		snprintf(k, sizeof(k), "%s api key", p->name);
		config_show_line(k, v, where);
	}
}

static void
config_show_stages(const struct config *cfg)
{
	char langs[CONFIG_LANGS_MAX * CONFIG_LANG_MAX + 1] = "";
	const char *lang;
	int stage;

	for (int i = 0; i < cfg->nlangs; i++) {
		if (i > 0)
			strcat(langs, ",");
		strcat(langs, cfg->langs[i]);
	}
	printf("[what runs]\n");
	config_show_line("stage", cfg->stage_mask == STAGE_MASK_ALL ? "all" :
	    cfg->stage_mask == STAGE_MASK_TRANSCRIBE ? "transcribe" :
	    "translate", NULL);
	config_show_line("languages", cfg->nlangs ? langs : "(none)",
	    config_where(cfg, "translate", "languages"));
	for (int i = 0; config_stage_lang(cfg, i, &stage, &lang); i++) {
		const char *p = config_provider(cfg, stage, lang);
		char sec[CONFIG_LANG_MAX + 16], key[64], sk[JOB_STAGE_KEY_MAX];
		const char *where = NULL;
		if (stage == STAGE_TRANSCRIBE) {
			where = config_where(cfg, "transcribe", "provider");
		} else {
			snprintf(sec, sizeof(sec), "translate.%s", lang);
			where = config_where(cfg, sec, "provider");
			if (where == NULL)
				where = config_where(cfg, "translate", "provider");
		}
		snprintf(key, sizeof(key), "provider of %s",
		    job_stage_key(stage, lang, sk, sizeof(sk)));
		config_show_line(key, p ? p : "(none)", where);
	}
}

struct config_report {
	int ok, bad;
};

static void
config_report_print(void *arg, const char *what, const char *msg, bool ok)
{
	struct config_report *r = arg;

	if (ok)
		r->ok++;
	else
		r->bad++;
	printf("%-5s %-16s %s\n", ok ? "ok" : "FAIL", what, msg);
}

int
master_config_run(struct config *cfg)
{
	struct config_report r = { 0, 0 };
	store_t *st = NULL;

	printf("# mpfarm %s: the effective configuration; after each value, "
	    "where it came from\n", MPFARM_VERSION);
	printf("config file = %s\n", cfg->config_path ? cfg->config_path :
	    "(none: no --config and no ./mpfarm.conf)");
	config_show_farm(cfg);
	config_show_stages(cfg);
	config_show_sections(cfg);
	printf("\n# checks (the ones mpfarm run makes before it starts)\n");
	(void)master_config_check(cfg, MASTER_CHECK_FILES, config_report_print,
	    &r);
	if (db_target_is_pg(cfg->db) || access(cfg->db, F_OK) == 0) {
		/* a database without mpfarm's tables yet is where a first
		 * scan starts, as a missing SQLite file is */
		struct store_open_opts o = { .flags = STORE_READONLY |
		    STORE_EMPTY_OK };
		char err[600];
		if (store_open(&st, cfg->db, &o, err, sizeof(err)) < 0)
			config_report_print(&r, "database", err, false);
		else if (st == NULL)
			config_report_print(&r, "database", "no farm in it yet "
			    "(mpfarm scan DIR makes one)", true);
		else
			(void)master_config_unprovided(cfg, st, config_report_print,
			    &r);
		store_close(st);
	}
	if (fflush(stdout) != 0 || ferror(stdout))
		return EXIT_FATAL;
	if (r.bad > 0) {
		say_err("%d problem%s (listed above with FAIL)", r.bad,
		    r.bad == 1 ? "" : "s");
		return EXIT_USAGE;
	}
	return EXIT_OK;
}
