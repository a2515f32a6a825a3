/*
 * bench_floor.c - the single-process floor of `make bench`: one C loop that
 * does exactly the per-job work of an mpfarm worker, through the same
 * store and provider code, with no master, no fork and no IPC.  It refills
 * from the store like the master (store_runnable_fetch, fetch_size at a
 * time), then per job: store_job_claim, the check before paying
 * (tree_check_writable), the provider's run (noop), each output to a temp
 * file in its verified folder (tree_temp_write), store_job_complete (renames
 * under the write lock, marks completed).  What mpfarm loses against this
 * loop is the price of the farm itself: fork, socketpairs, msgpack, the
 * master's event loop and the workers' write-lock contention.
 *
 * Takes the same options as `mpfarm run` (--config, --db, --output,
 * --stage, --language, --durable; fetch_size from the config); prints
 * one line "floor jobs=N failed=F seconds=S rate=R" on stdout.  Exit 0,
 * or 1.
 *
 * BENCH_FLOOR_SHARD=I/N in the environment makes it take only the jobs
 * with job_id % N == I: N such processes side by side are the farm's
 * database work without the farm (no master, no IPC), which tells the
 * cost of several SQLite writers apart from the cost of the channel.
 */
#include "common.h"
#include "common_config.h"
#include "common_store.h"
#include "common_tree.h"
#include "common_db_sqlite.h"
#include "worker_provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sqlite3_stmt *shard_q;     /* finalized before store_close */
static struct tree floor_out;     /* the output tree, as a worker has it */

/* The shard's next runnable jobs, oldest first (a read, like a refill). */
static int
floor_shard_fetch(store_t *st, int shard, int nshards, struct job_ref *out,
		  int max, int *nout)
{
	static int64_t after;   /* resume past the last batch: no rescans */
	sqlite3_stmt *q;
	int rc;

	*nout = 0;
	/* NOT INDEXED: walk the rowid from `after` instead of sorting the
	 * whole not_started part of jobs_status at every refill */
	if (shard_q == NULL && sqlite3_prepare_v2(db_sqlite_handle(store_db(st)),
	    "SELECT job_id FROM jobs NOT INDEXED WHERE stage = 'transcribe' "
	    "AND lang = '' AND status = 'not_started' AND ready = 1 "
	    "AND job_id % ?1 = ?2 AND job_id > ?4 ORDER BY job_id LIMIT ?3",
	    -1, &shard_q, NULL) != SQLITE_OK) {
		fprintf(stderr, "bench_floor: shard fetch: %s\n",
		    sqlite3_errmsg(db_sqlite_handle(store_db(st))));
		return -1;
	}
	q = shard_q;
	sqlite3_bind_int(q, 1, nshards);
	sqlite3_bind_int(q, 2, shard);
	sqlite3_bind_int(q, 3, max);
	sqlite3_bind_int64(q, 4, after);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW && *nout < max) {
		out[*nout].job_id = after = sqlite3_column_int64(q, 0);
		out[*nout].stage = STAGE_TRANSCRIBE;
		out[*nout].lang[0] = '\0';
		(*nout)++;
	}
	sqlite3_reset(q);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		fprintf(stderr, "bench_floor: shard fetch: %s\n",
		    sqlite3_errmsg(db_sqlite_handle(store_db(st))));
		return -1;
	}
	return 0;
}

/* Publish the provider's outputs the way the worker does. 0, 1, -1. */
static int
floor_publish(store_t *st, const struct config *cfg, const struct job *j,
	      struct provider_result *res, char *err, size_t errlen)
{
	struct tree_temp out[PROVIDER_OUT_MAX];
	int n = 0, rc = -1;

	for (; n < res->nout; n++) {
		char *rel = tree_output_rel(j->stage, j->lang, j->rel_path,
		    res->out[n].suffix);
		rc = tree_temp_write(&floor_out, rel, res->out[n].data,
		    res->out[n].len, cfg->durable, &out[n], err, errlen);
		free(rel);
		if (rc < 0) {
			for (int i = 0; i < n; i++)
				tree_temp_discard(&out[i]);
			return -1;
		}
	}
	rc = store_job_complete(st, j, out, n, cfg->durable);
	if (rc < 0)
		snprintf(err, errlen, "%s", store_errmsg(st));
	for (int i = 0; i < n; i++)
		tree_temp_free(&out[i]);
	return rc;
}

/* One job: 0 completed, 1 skipped (not claimable), -1 failed. */
static int
floor_job(store_t *st, const struct config *cfg, int64_t job_id, pid_t self)
{
	struct job j;
	struct provider_req req = { 0 };
	struct provider_result res = { 0 };
	const struct provider_desc *ops;
	char err[512] = "";
	int rc;

	rc = store_job_claim(st, job_id, 0, self, self, &j);
	if (rc != 0) {
		if (rc < 0)
			fprintf(stderr, "bench_floor: claim %lld: %s\n",
			    (long long)job_id, store_errmsg(st));
		return rc;
	}
	ops = provider_find(config_provider(cfg, j.stage, j.lang));
	req.cfg = cfg;
	req.stage = j.stage;
	req.lang = j.lang;
	req.input_path = j.abs_path;
	req.input_fd = -1;
	req.text = "";
	req.job_id = job_id;
	res.exit_code = -1;
	char *rel = tree_output_rel(j.stage, j.lang, j.rel_path, "");
	int writable = tree_check_writable(&floor_out, rel, err, sizeof(err));
	free(rel);
	if (writable < 0) {
		fprintf(stderr, "bench_floor: job %lld: %s\n", (long long)job_id,
		    err);
		rc = -1;
	} else if (ops == NULL || j.stage != STAGE_TRANSCRIBE) {
		/* the floor measures the transcribe stage only */
		fprintf(stderr, "bench_floor: job %lld: only the noop transcribe "
		    "stage is measured\n", (long long)job_id);
		rc = -1;
	} else if (ops->run(&req, &res) < 0) {
		fprintf(stderr, "bench_floor: job %lld: %s\n", (long long)job_id,
		    res.msg);
		rc = -1;
	} else {
		rc = floor_publish(st, cfg, &j, &res, err, sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "bench_floor: job %lld: %s\n",
			    (long long)job_id, rc < 0 ? err : "lease lost");
			rc = -1;
		}
	}
	provider_result_free(&res);
	job_clear(&j);
	return rc;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	struct store_open_opts opts = { 0 };
	struct job_ref *refs;
	store_t *st = NULL;
	char err[512];
	int64_t t0, done = 0, failed = 0;
	pid_t self = getpid();
	int rc, batch, shard = -1, nshards = 0;
	const char *sh = getenv("BENCH_FLOOR_SHARD");

	rc = config_load(&cfg, argc, argv);
	if (rc != 0) {
		config_free(&cfg);
		return rc > 0 ? 0 : 2;
	}
	if (sh != NULL && (sscanf(sh, "%d/%d", &shard, &nshards) != 2 ||
	    nshards < 1 || shard < 0 || shard >= nshards)) {
		fprintf(stderr, "bench_floor: BENCH_FLOOR_SHARD=%s is not I/N\n",
		    sh);
		return 2;
	}
	batch = cfg.fetch_size > 0 ? cfg.fetch_size : 50;   /* the refill size */
	opts.flags = cfg.durable ? STORE_DURABLE : 0;
	opts.busy_timeout_ms = cfg.busy_timeout_ms;
	refs = xcalloc((size_t)batch, sizeof(*refs));
	t0 = time_mono_ms();
	if (tree_open(&floor_out, cfg.output, true, cfg.durable, err,
	    sizeof(err)) < 0 ||
	    store_open(&st, cfg.db, &opts, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_floor: %s\n", err);
		tree_close(&floor_out);
		free(refs);
		config_free(&cfg);
		return 1;
	}
	for (;;) {
		int n = 0;
		if (nshards > 0) {
			if (floor_shard_fetch(st, shard, nshards, refs, batch,
			    &n) < 0) {
				rc = 1;
				break;
			}
		} else if (store_runnable_fetch(st, &cfg, time_wall_ms(), NULL,
		    0, refs, batch, &n) < 0) {
			fprintf(stderr, "bench_floor: fetch: %s\n",
			    store_errmsg(st));
			rc = 1;
			break;
		}
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			int one = floor_job(st, &cfg, refs[i].job_id, self);
			if (one == 0)
				done++;
			else if (one < 0)
				failed++;
		}
		if (failed > 0) {
			rc = 1;
			break;
		}
	}
	sqlite3_finalize(shard_q);
	store_close(st);
	tree_close(&floor_out);
	{
		double s = (double)(time_mono_ms() - t0) / 1000.0;
		printf("floor jobs=%lld failed=%lld seconds=%.3f rate=%.0f\n",
		    (long long)done, (long long)failed, s,
		    s > 0 ? (double)done / s : 0.0);
	}
	free(refs);
	config_free(&cfg);
	return rc;
}
