/*
 * worker_provider.c - the result helpers every provider shares: outputs
 * collected with their ownership, and a failure recorded as an outcome and
 * a message (which frees whatever outputs were gathered before it).  The
 * registry of providers is common_provider.c.
 */
#include "worker_provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
