/*
 * worker_noop.c - `noop`: a provider that makes no external call and writes
 * a short deterministic text, for dry runs, benchmarks and tests.
 * `[noop] delay_ms` makes each job take that long (heartbeating), so chaos
 * tests can kill workers in the middle of jobs.
 */
#include "worker_provider.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void
noop_sleep(long ms)
{
	while (ms > 0) {
		long step = ms > 200 ? 200 : ms;
		struct timespec ts = { step / 1000, (step % 1000) * 1000000L };
		nanosleep(&ts, NULL);
		ms -= step;
		worker_heartbeat();
	}
}

static int
noop_run(const struct provider_req *req, struct provider_result *res)
{
	long delay = config_get_long(req->cfg, provider_noop.name, "delay_ms", 0);
	const char *base;
	char *txt, *json;

	if (delay > 0)
		noop_sleep(delay);
	if (req->stage == STAGE_TRANSCRIBE) {
		base = strrchr(req->input_path, '/');
		base = base ? base + 1 : req->input_path;
		txt = xasprintf("noop transcript of %s\n", base);
		json = xasprintf("{\"provider\":\"noop\",\"job\":%lld}\n",
		    (long long)req->job_id);
		provider_result_add(res, ".txt", txt, strlen(txt));
		provider_result_add(res, ".json", json, strlen(json));
	} else {
		txt = xasprintf("[%s] %.*s", req->lang, (int)req->text_len,
		    req->text);
		provider_result_add(res, ".txt", txt, strlen(txt));
	}
	res->outcome = OUT_COMPLETED;
	return 0;
}

const struct provider_desc provider_noop = {
	.name = "noop",
	.stages = STAGE_MASK_TRANSCRIBE | STAGE_MASK_TRANSLATE,
	.limited = false,
	.fake = true,
	.keys = (const char *const[]){ "delay_ms", NULL },
	.check = NULL,
	.run = noop_run,
};
