/*
 * fuzz_http_error.c - error bodies of the three providers' shapes
 * (worker_http_error_parse) and the cleaning every provider message goes
 * through: the results are NUL-terminated within their buffers, hold no
 * control byte, are valid UTF-8 and never carry a run of the key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "worker_http.h"

#define FUZZ_KEY "sk-fuzz-0123456789abcdef"

static void
check_clean(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	json_t *j;

	if (n >= cap)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
	j = json_stringn(s, n);     /* NULL when not UTF-8 */
	if (j == NULL)
		abort();
	json_decref(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char code[64], msg[400], clean[200];
	char *body = malloc(size + 1);

	if (body == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	worker_http_error_parse(body, size, code, sizeof(code), msg, sizeof(msg));
	check_clean(code, sizeof(code));
	check_clean(msg, sizeof(msg));
	worker_http_text_clean(clean, sizeof(clean), body, size, FUZZ_KEY);
	check_clean(clean, sizeof(clean));
	if (strstr(clean, "0123456789") != NULL)
		abort();
	free(body);
	return 0;
}
