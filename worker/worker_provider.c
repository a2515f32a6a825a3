/*
 * worker_provider.c - the provider registry, the result helpers every
 * provider shares, and `noop`: a provider that makes no external call and
 * writes a short deterministic text, for dry runs, benchmarks and tests.
 * `[noop] delay_ms` makes each job take that long (heartbeating), so chaos
 * tests can kill workers in the middle of jobs.
 */
#include "worker_provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct provider_ops *const provider_table[] = {
	&provider_noop,
	&provider_exec,
	&provider_elevenlabs,
	&provider_openai,
	&provider_deepl,
	NULL
};

const struct provider_ops *
provider_at(int i)
{
	int n = (int)(sizeof(provider_table) / sizeof(provider_table[0])) - 1;

	return i >= 0 && i < n ? provider_table[i] : NULL;
}

const struct provider_ops *
provider_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (int i = 0; provider_table[i] != NULL; i++)
		if (strcmp(provider_table[i]->name, name) == 0)
			return provider_table[i];
	return NULL;
}

void
provider_result_add(struct provider_result *res, const char *suffix,
		    char *data, size_t len)
{
	if (res->nout >= PROVIDER_OUT_MAX) {
		free(data);
		return;
	}
	res->out[res->nout++] = (struct provider_out){ suffix, data, len };
}

void
provider_result_free(struct provider_result *res)
{
	for (int i = 0; i < res->nout; i++)
		free(res->out[i].data);
	res->nout = 0;
}

void
provider_result_error(struct provider_result *res, enum job_outcome o,
		      const char *fmt, ...)
{
	va_list ap;

	provider_result_free(res);
	res->outcome = o;
	va_start(ap, fmt);
	vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
	va_end(ap);
}

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
	long delay = config_get_long(req->cfg, "noop", "delay_ms", 0);
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

const struct provider_ops provider_noop = {
	.name = "noop",
	.check = NULL,
	.run = noop_run,
};
