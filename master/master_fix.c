/*
 * master_fix.c - the repair commands.  `mpfarm fix [--dry-run]` and
 * `mpfarm check` reconcile the database with the outputs on disk, the
 * older tooling's fix_stalled_files.py and check_missing_transcripts.py
 * done for every stage.  The output that decides whether a job's work
 * exists is its .txt (the other suffixes are extras written in the same
 * step); it counts as whole when its final name exists, because workers
 * only ever rename finished temp files (".mpfarm-tmp.*") onto it.
 *
 * The two agree by construction: check reports exactly what fix repairs
 * (both judge every output with fix_output_judge), so after a fix, check
 * exits 0 unless a file under the output folder matches no job of this
 * database, which fix never removes.  The rule they share: a job is
 * completed exactly when its .txt exists, and a job that is not completed
 * has no outputs (its stale .json/.srt/.vtt are removed), which is how a
 * worker's whole-or-nothing completion leaves things.
 *
 * An in-progress job belongs to a running farm as long as a live master
 * holds the farm lock: then fix and check leave it alone, and temp files
 * and stale outputs too, since a worker may be renaming onto them right
 * now.  Without a master, a job whose owner pid is gone is an orphan of a
 * crash.
 *
 * The output tree is read through common_tree.c: no link in it is ever
 * followed (a link where a folder should be is reported and left alone),
 * and files are removed relative to the folder they were found in, so
 * neither command can touch anything outside the tree.
 */
#include "master.h"
#include "common_store_audit.h"
#include "common_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const fix_suffixes[] = { ".txt", ".json", ".srt", ".vtt", NULL };

struct fix_ctx {
	struct config *cfg;
	store_t *st;
	struct store_audit_jobs js;
	pid_t   master;         /* live master holding the farm lock, or 0 */
	size_t *job_index;      /* hash table "lang:rel" -> job index + 1
				 * (open addressing, 0 = free bucket) */
	size_t  job_index_size; /* buckets, a power of two */
	int64_t problems, changes, races, held;
	int64_t fixable;        /* check: problems `mpfarm fix` repairs */
	int64_t unknown;        /* fix: outputs no job writes, left alone */
	const char *cmd;        /* "fix" / "check" */
	struct tree tree;       /* the output tree, when it exists */
	bool    have_tree;
};

/* ---- jobs by output name ----------------------------------------------- */

static uint64_t
fix_hash(const char *lang, const char *rel)
{
	uint64_t h = 1469598103934665603ULL;
	for (const char *p = lang; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	h = (h ^ ':') * 1099511628211ULL;
	for (const char *p = rel; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

static void
fix_index_build(struct fix_ctx *fc)
{
	fc->job_index_size = 16;
	while (fc->job_index_size < fc->js.n * 2 + 1)
		fc->job_index_size *= 2;
	fc->job_index = xcalloc(fc->job_index_size, sizeof(*fc->job_index));
	for (size_t i = 0; i < fc->js.n; i++) {
		const struct store_audit_job *j = &fc->js.v[i];
		size_t k = fix_hash(j->lang, j->rel) & (fc->job_index_size - 1);
		while (fc->job_index[k] != 0)
			k = (k + 1) & (fc->job_index_size - 1);
		fc->job_index[k] = i + 1;
	}
}

/* The job writing to this output name ("" lang for transcripts), or NULL. */
static const struct store_audit_job *
fix_index_find(const struct fix_ctx *fc, const char *lang, const char *rel)
{
	size_t k = fix_hash(lang, rel) & (fc->job_index_size - 1);

	for (; fc->job_index[k] != 0; k = (k + 1) & (fc->job_index_size - 1)) {
		const struct store_audit_job *j = &fc->js.v[fc->job_index[k] - 1];
		if (strcmp(j->lang, lang) == 0 && strcmp(j->rel, rel) == 0)
			return j;
	}
	return NULL;
}

/* ---- helpers ------------------------------------------------------------ */

/* Whole: a regular file at the final name, reached without a link. */
static bool
fix_output_whole(struct fix_ctx *fc, const struct store_audit_job *j)
{
	char *rel = tree_output_rel(j->stage, j->lang, j->rel, ".txt");
	bool whole = fc->have_tree && tree_file_is_regular(&fc->tree, rel);

	free(rel);
	return whole;
}

/* Without a live master, an in-progress job is an orphan unless its owner
 * pid still runs (then something we do not know holds it: leave it). */
static bool
fix_owner_gone(const struct fix_ctx *fc, const struct store_audit_job *j)
{
	return fc->master == 0 && !proc_alive(j->owner_pid);
}

/* A file found in the tree: the folder holding it (valid during the
 * call), its name there, its path for messages. */
typedef void (*fix_file_fn)(struct fix_ctx *fc, int dirfd, const char *name,
			    const char *path, const char *lang,
			    const char *rel);

/* Something in the tree mpfarm will not enter: said, counted, left. */
static void
fix_refused(struct fix_ctx *fc, const char *what)
{
	printf("%s: %s; left alone\n", fc->cmd, what);
	fc->problems++;
}

/* Every regular file under the folder dfd (path `dir`, closed here), in
 * name order, with its path relative to the walk's base (relpfx ends in
 * '/' or is "").  Sub-folders are entered with O_NOFOLLOW from their
 * parent's descriptor; links are reported, never followed. */
static void
fix_walk(struct fix_ctx *fc, int dfd, const char *dir, const char *lang,
	 const char *relpfx, fix_file_fn fn)
{
	struct tree_name *names = NULL;
	size_t n = 0;

	if (tree_dir_list(dfd, &names, &n) < 0) {
		say_err("%s: cannot read folder %s: %s", fc->cmd, log_quote(dir),
		    strerror(errno));
		fc->problems++;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = names[i].name;
		char *path = xasprintf("%s/%s", dir, name);
		char *rel = xasprintf("%s%s", relpfx, name);
		struct stat sb;
		int sub;

		if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			;       /* gone since the listing: nothing to judge */
		} else if (S_ISLNK(sb.st_mode)) {
			char *what = xasprintf("%s is a symbolic link in the "
			    "output tree, not followed", log_quote(path));
			fix_refused(fc, what);
			free(what);
		} else if (S_ISDIR(sb.st_mode)) {
			sub = openat(dfd, name, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				char *pfx = xasprintf("%s/", rel);
				fix_walk(fc, sub, path, lang, pfx, fn);
				free(pfx);
			} else if (errno != ENOENT) {
				say_err("%s: cannot read folder %s: %s", fc->cmd,
				    log_quote(path), strerror(errno));
				fc->problems++;
			}
		} else if (S_ISREG(sb.st_mode)) {
			fn(fc, dfd, name, path, lang, rel);
		}
		free(path);
		free(rel);
	}
	tree_names_free(names, n);
	close(dfd);
}

/* One folder of the tree by its relative name: walked, or (missing)
 * nothing, or (a link, not a folder, unreadable) reported. */
static void
fix_walk_sub(struct fix_ctx *fc, const char *sub, const char *lang,
	     fix_file_fn fn)
{
	char err[1024];
	int fd = tree_dir_open(&fc->tree, sub, false, err, sizeof(err));
	char *path;

	if (fd < 0) {
		if (errno != ENOENT)
			fix_refused(fc, err);
		return;
	}
	path = xasprintf("%s/%s", fc->cfg->output, sub);
	fix_walk(fc, fd, path, lang, "", fn);
	free(path);
}

/* Both output trees: transcripts/REL and translations/LANG/REL. */
static void
fix_walk_outputs(struct fix_ctx *fc, fix_file_fn fn)
{
	char err[1024];
	struct tree_name *langs;
	size_t n = 0;
	int fd;

	if (!fc->have_tree)
		return;
	fix_walk_sub(fc, "transcripts", "", fn);
	fd = tree_dir_open(&fc->tree, "translations", false, err, sizeof(err));
	if (fd < 0) {
		if (errno != ENOENT)
			fix_refused(fc, err);
		return;
	}
	(void)tree_dir_list(fd, &langs, &n);
	close(fd);
	for (size_t i = 0; i < n; i++) {
		if (langs[i].name[0] != '.') {
			char *sub = xasprintf("translations/%s", langs[i].name);
			fix_walk_sub(fc, sub, langs[i].name, fn);
			free(sub);
		}
	}
	tree_names_free(langs, n);
}

/* What an output file under the output folder is to fix and check:
 *  FIX_OUT_OK       the output of a completed job, or of a job a running
 *                   farm holds, or anything while a master runs (a worker
 *                   may be renaming onto it right now);
 *  FIX_OUT_TEMP     a temp file no worker can still be writing;
 *  FIX_OUT_TXT      the .txt of a job not marked completed: fix marks it
 *                   completed (the .txt decides whether the work exists);
 *  FIX_OUT_SIDECAR  a .json/.srt/.vtt of a job that is not completed and
 *                   has no .txt: left from an earlier result (the .txt was
 *                   deleted, or the media changed); fix removes it, so a
 *                   job that is not completed has no outputs, as a
 *                   worker's whole-or-nothing completion leaves it;
 *  FIX_OUT_UNKNOWN  no job of this database writes that name: neither
 *                   removed nor counted by fix; a problem for check. */
enum fix_out {
	FIX_OUT_OK = 0, FIX_OUT_TEMP, FIX_OUT_TXT, FIX_OUT_SIDECAR,
	FIX_OUT_UNKNOWN,
};

static enum fix_out
fix_output_judge(struct fix_ctx *fc, const char *name, const char *lang,
		 const char *rel, const struct store_audit_job **jp)
{
	const struct store_audit_job *j = NULL;
	size_t n = strlen(rel);

	*jp = NULL;
	if (file_is_temp(name))
		return fc->master == 0 ? FIX_OUT_TEMP : FIX_OUT_OK;
	for (int i = 0; fix_suffixes[i] && j == NULL; i++) {
		size_t sl = strlen(fix_suffixes[i]);
		if (n <= sl || strcmp(rel + n - sl, fix_suffixes[i]) != 0)
			continue;
		char *base = xstrndup(rel, n - sl);
		j = fix_index_find(fc, lang, base);
		free(base);
	}
	*jp = j;
	if (j == NULL)
		return FIX_OUT_UNKNOWN;
	if (j->status == JOB_ST_COMPLETED)
		return FIX_OUT_OK;
	/* a running farm renames and marks in one step: not a problem */
	if (j->status == JOB_ST_IN_PROGRESS && !fix_owner_gone(fc, j))
		return FIX_OUT_OK;
	if (fix_output_whole(fc, j))
		return FIX_OUT_TXT;
	return fc->master == 0 ? FIX_OUT_SIDECAR : FIX_OUT_OK;
}

static int
fix_begin(struct fix_ctx *fc, struct config *cfg, const char *cmd, int flags)
{
	char err[1024];

	memset(fc, 0, sizeof(*fc));
	fc->tree.rootfd = fc->tree.cfd = -1;
	fc->cfg = cfg;
	fc->cmd = cmd;
	if (store_audit_db_missing(cfg->db, cmd))
		return -1;
	if ((fc->st = master_store_open(cfg, flags)) == NULL)
		return -1;
	fc->master = master_lock_holder(cfg->db);
	if (tree_open(&fc->tree, cfg->output, false, false, err,
	    sizeof(err)) == 0) {
		fc->have_tree = true;
	} else if (errno != ENOENT) {
		say_err("%s: %s", cmd, err);
		return -1;
	}
	if (store_audit_jobs_load(fc->st, &fc->js) < 0) {
		say_err("%s: %s", cmd, store_errmsg(fc->st));
		return -1;
	}
	fix_index_build(fc);
	return 0;
}

static void
fix_end(struct fix_ctx *fc)
{
	fflush(stdout);
	free(fc->job_index);
	store_audit_jobs_free(&fc->js);
	if (fc->st != NULL)
		store_close(fc->st);
	tree_close(&fc->tree);
}

/* ---- fix ---------------------------------------------------------------- */

/* Applies (or with --dry-run lists) one status change; the job's status
 * in fc follows, so the walk over the outputs judges the job as fix
 * leaves it. */
static int
fix_apply(struct fix_ctx *fc, struct store_audit_job *j,
	  enum job_status to, const char *why)
{
	char name[JOB_STAGE_KEY_MAX];
	const char *from = job_status_name(j->status);
	int rc = 0;

	job_stage_key(j->stage, j->lang, name, sizeof(name));
	if (fc->cfg->dry_run) {
		printf("would fix: job %lld %s %s: %s -> %s (%s)\n",
		    (long long)j->job_id, name, log_quote(j->abs), from,
		    job_status_name(to), why);
		fc->changes++;
		j->status = to;
		goto out;
	}
	rc = store_audit_job_set(fc->st, j->job_id, j->status, to, why);
	if (rc < 0) {
		say_err("fix: job %lld: %s", (long long)j->job_id,
		    store_errmsg(fc->st));
		goto out;
	}
	if (rc == 1) {
		printf("fix: job %lld %s %s: no longer %s, left alone\n",
		    (long long)j->job_id, name, log_quote(j->abs), from);
		fc->races++;
		rc = 0;
		goto out;
	}
	printf("fix: job %lld %s %s: %s -> %s (%s)\n", (long long)j->job_id,
	    name, log_quote(j->abs), from, job_status_name(to), why);
	fc->changes++;
	j->status = to;
out:
	return rc;
}

static int
fix_job(struct fix_ctx *fc, struct store_audit_job *j)
{
	bool whole = fix_output_whole(fc, j);
	char why[160];

	switch (j->status) {
	case JOB_ST_IN_PROGRESS:
		if (!fix_owner_gone(fc, j)) {
			fc->held++;
			return 0;
		}
		snprintf(why, sizeof(why), "output %s, owner %d gone",
		    whole ? "exists" : "missing", (int)j->owner_pid);
		return fix_apply(fc, j, whole ? JOB_ST_COMPLETED
		    : JOB_ST_NOT_STARTED, why);
	case JOB_ST_NOT_STARTED:
	case JOB_ST_FAILED:
		if (!whole)
			return 0;
		return fix_apply(fc, j, JOB_ST_COMPLETED, "output exists");
	case JOB_ST_COMPLETED:
		if (whole)
			return 0;
		return fix_apply(fc, j, JOB_ST_NOT_STARTED, "output missing");
	default:
		return 0;
	}
}

/* Removes (or with --dry-run lists) one output fix judged stale. */
static void
fix_remove(struct fix_ctx *fc, int dirfd, const char *name, const char *path,
	   const char *what)
{
	if (fc->cfg->dry_run) {
		printf("would fix: remove %s %s\n", what, log_quote(path));
	} else if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) {
		say_err("fix: cannot remove %s: %s", log_quote(path),
		    strerror(errno));
		fc->problems++;
		return;
	} else {
		printf("fix: removed %s %s\n", what, log_quote(path));
	}
	fc->changes++;
}

static void
fix_output_file(struct fix_ctx *fc, int dirfd, const char *name,
		const char *path, const char *lang, const char *rel)
{
	const struct store_audit_job *j;
	char what[96];

	switch (fix_output_judge(fc, name, lang, rel, &j)) {
	case FIX_OUT_TEMP:
		fix_remove(fc, dirfd, name, path, "stale temp file");
		break;
	case FIX_OUT_SIDECAR:
		snprintf(what, sizeof(what), "stale output of %s job %lld",
		    job_status_name(j->status), (long long)j->job_id);
		fix_remove(fc, dirfd, name, path, what);
		break;
	case FIX_OUT_UNKNOWN:
		fc->unknown++;
		break;
	default:
		break;
	}
}

int
master_fix_run(struct config *cfg)
{
	struct fix_ctx fc;
	int ex = EXIT_FATAL;

	if (fix_begin(&fc, cfg, "fix", 0) < 0)
		goto out;
	/* transcripts first: a transcript going back to not_started makes its
	 * translations wait before they are looked at */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < fc.js.n; i++)
			if (fc.js.v[i].stage == pass &&
			    fix_job(&fc, &fc.js.v[i]) < 0)
				goto out;
	if (fc.master != 0) {
		char who[48];
		if (fc.master > 0)
			snprintf(who, sizeof(who), "master pid %d", (int)fc.master);
		else
			snprintf(who, sizeof(who), "a master (pid unknown)");
		if (fc.held > 0)
			printf("fix: %s is running: its %lld in-progress job%s "
			    "left alone\n", who, (long long)fc.held,
			    fc.held == 1 ? " was" : "s were");
		printf("fix: %s is running: temp files and stale outputs left "
		    "alone\n", who);
	} else {
		if (fc.held > 0)
			printf("fix: %lld in-progress job%s left alone: owner "
			    "still running\n", (long long)fc.held,
			    fc.held == 1 ? "" : "s");
		fix_walk_outputs(&fc, fix_output_file);
	}
	if (fc.unknown > 0)
		printf("fix: %lld file%s under %s match%s no job of this "
		    "database: left alone (fix removes only what mpfarm "
		    "wrote)\n", (long long)fc.unknown, fc.unknown == 1 ? "" : "s",
		    log_quote(cfg->output), fc.unknown == 1 ? "es" : "");
	if (fc.changes == 0)
		printf("fix: nothing to fix (%lld files, %zu jobs)\n",
		    (long long)fc.js.files, fc.js.n);
	else if (cfg->dry_run)
		printf("fix: %lld change%s would be made (dry run: nothing "
		    "changed)\n", (long long)fc.changes, fc.changes == 1 ? "" : "s");
	else
		printf("fix: %lld change%s made\n", (long long)fc.changes,
		    fc.changes == 1 ? "" : "s");
	ex = fc.problems > 0 ? EXIT_FATAL : EXIT_OK;
out:
	fix_end(&fc);
	return ex;
}

/* ---- check -------------------------------------------------------------- */

static void
check_job(struct fix_ctx *fc, const struct store_audit_job *j)
{
	char name[JOB_STAGE_KEY_MAX];

	job_stage_key(j->stage, j->lang, name, sizeof(name));
	if (j->status == JOB_ST_COMPLETED && !fix_output_whole(fc, j)) {
		char *out = file_output_path(fc->cfg->output, j->stage, j->lang,
		    j->rel, ".txt");
		printf("check: job %lld %s %s: completed but its output %s is "
		    "missing\n", (long long)j->job_id, name, log_quote(j->abs),
		    log_quote(out));
		free(out);
		fc->problems++;
		fc->fixable++;
	} else if (j->status == JOB_ST_IN_PROGRESS && fix_owner_gone(fc, j)) {
		printf("check: job %lld %s %s: in-progress but its owner %d is "
		    "gone and no master runs\n", (long long)j->job_id, name,
		    log_quote(j->abs), (int)j->owner_pid);
		fc->problems++;
		fc->fixable++;
	}
}

static void
check_file(struct fix_ctx *fc, int dirfd, const char *name, const char *path,
	   const char *lang, const char *rel)
{
	const struct store_audit_job *j;

	(void)dirfd;
	switch (fix_output_judge(fc, name, lang, rel, &j)) {
	case FIX_OUT_TEMP:
		printf("check: stale temp file %s\n", log_quote(path));
		break;
	case FIX_OUT_UNKNOWN:
		printf("check: %s matches no job (not written by mpfarm for "
		    "this database?)\n", log_quote(path));
		fc->problems++;
		return;
	case FIX_OUT_TXT:
		printf("check: %s exists but job %lld is %s\n", log_quote(path),
		    (long long)j->job_id, job_status_name(j->status));
		break;
	case FIX_OUT_SIDECAR:
		printf("check: %s exists but job %lld is %s and its .txt is "
		    "missing (a stale output)\n", log_quote(path),
		    (long long)j->job_id, job_status_name(j->status));
		break;
	default:
		return;
	}
	fc->problems++;
	fc->fixable++;
}

int
master_check_run(struct config *cfg)
{
	struct fix_ctx fc;
	char *msg = NULL;
	int ex = EXIT_FATAL;

	if (fix_begin(&fc, cfg, "check", STORE_READONLY) < 0)
		goto out;
	if (store_audit_quick_check(fc.st, &msg) < 0) {
		say_err("check: %s", store_errmsg(fc.st));
		goto out;
	}
	if (msg != NULL) {
		printf("check: database %s: %s\n", log_quote(cfg->db), msg);
		fc.problems++;
	}
	for (size_t i = 0; i < fc.js.n; i++)
		check_job(&fc, &fc.js.v[i]);
	fix_walk_outputs(&fc, check_file);
	if (fc.problems > 0) {
		printf("check: %lld problem%s in %lld files, %zu jobs",
		    (long long)fc.problems, fc.problems == 1 ? "" : "s",
		    (long long)fc.js.files, fc.js.n);
		if (fc.fixable == fc.problems)
			printf(" (mpfarm fix repairs %s)", fc.problems == 1 ? "it"
			    : "them");
		else if (fc.fixable > 0)
			printf(" (mpfarm fix repairs %lld of them)",
			    (long long)fc.fixable);
		printf("\n");
		goto out;
	}
	printf("check: %lld files, %zu jobs, no problems\n",
	    (long long)fc.js.files, fc.js.n);
	ex = EXIT_OK;
out:
	free(msg);
	fix_end(&fc);
	return ex;
}
