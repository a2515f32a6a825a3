/*
 * fuzz_retry_after.c - Retry-After values (delta-seconds or HTTP dates)
 * and OpenAI's reset durations: never negative, never past the cap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker_http.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *v = malloc(size + 1);
	int64_t ms;

	if (v == NULL)
		return 0;
	memcpy(v, data, size);
	v[size] = '\0';
	ms = worker_http_retry_after_parse(v, 1700000000);
	if (ms < 0 || ms > WORKER_HTTP_RETRY_AFTER_MAX_MS)
		abort();
	ms = worker_http_duration_parse(v);
	if (ms < -1 || ms > WORKER_HTTP_RETRY_AFTER_MAX_MS)
		abort();
	free(v);
	return 0;
}
