/*
 * fuzz_openai_chat.c - OpenAI's chat completion parser (content, refusal,
 * finish_reason) on any body.  A refusal's text must come out clean: no
 * control byte, and never the key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker_http.h"

#define FUZZ_KEY "sk-fuzz-0123456789abcdef"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct provider_result res = { 0 };
	char *out = NULL, *body = malloc(size + 1);

	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	if (worker_openai_chat_parse(body, size, FUZZ_KEY, &out, &res) == 0) {
		free(out);
	} else {
		for (const char *p = res.msg; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				abort();
		if (strstr(res.msg, "0123456789") != NULL)
			abort();
	}
	provider_result_free(&res);
	free(body);
	return 0;
}
