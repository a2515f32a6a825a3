/*
 * fuzz_deepl.c - DeepL's translation answer parser.  The first byte is
 * the number of texts the request sent; the rest is the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker_http.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct provider_result res = { 0 };
	char *tr[64] = { 0 }, *body;
	int n;

	if (size < 1)
		return 0;
	n = data[0] % 64;
	body = malloc(size);
	if (body == NULL)
		return 0;
	memcpy(body, data + 1, size - 1);
	body[size - 1] = '\0';
	if (worker_deepl_parse(body, size - 1, n, tr, &res) == 0)
		for (int i = 0; i < n; i++) {
			if (tr[i] == NULL)
				abort();
			free(tr[i]);
		}
	provider_result_free(&res);
	free(body);
	return 0;
}
