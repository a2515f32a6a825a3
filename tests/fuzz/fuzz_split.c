/*
 * fuzz_split.c - the DeepL/OpenAI text splitter and request planner.  The
 * first two bytes give the piece limit, the rest is the text.  The pieces
 * must rebuild the text byte for byte, stay within the limit, start and
 * end on non-space, and every request must fit DeepL's limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker_http.h"

static bool
fuzz_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	       c == '\f' || c == '\v';
}

static void
check(const char *t, size_t len, size_t max, const struct deepl_piece *p,
      int n)
{
	size_t pos = n > 0 ? p[0].off : len;

	for (size_t i = 0; i < pos; i++)
		if (!fuzz_space(t[i]))
			abort();
	for (int i = 0; i < n; i++) {
		if (p[i].off != pos || p[i].len == 0 || p[i].len > max ||
		    fuzz_space(t[p[i].off]) ||
		    fuzz_space(t[p[i].off + p[i].len - 1]))
			abort();
		for (size_t k = 0; k < p[i].sep_len; k++)
			if (!fuzz_space(t[p[i].off + p[i].len + k]))
				abort();
		pos = p[i].off + p[i].len + p[i].sep_len;
	}
	if (pos != len)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct deepl_piece *p = NULL;
	const char *t;
	size_t len, max;
	int n, nb;

	if (size < 2)
		return 0;
	max = ((size_t)data[0] << 8 | data[1]) % 4096;
	t = (const char *)data + 2;
	len = size - 2;
	if (worker_deepl_split(t, len, max, &p, &n) == 0)
		check(t, len, max, p, n);
	else if (max >= 4)
		abort();
	free(p);
	if (worker_deepl_plan(t, len, max + 64, 4096, 5, &p, &n, &nb) == 0) {
		for (int i = 0; i < n; i++)
			if (p[i].batch < 0 || p[i].batch >= nb ||
			    (i > 0 && p[i].batch < p[i - 1].batch))
				abort();
	}
	free(p);
	return 0;
}
