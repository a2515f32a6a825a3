/*
 * bench_split.c - time of the DeepL/OpenAI text splitter on large texts
 * (`make bench`): a 100 MB transcript of ordinary sentences, the same
 * ending in 50 MB of whitespace (trimmed once per piece, it made the
 * splitter quadratic), and 100 MB of closing quotes (walked back from
 * every position).  Each must split in well under a second; the pieces
 * are checked to rebuild the text, so a fast wrong answer cannot pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker_http.h"

#define BENCH_MB        (100u << 20)
#define BENCH_TARGET_S  1.0

static double
bench_now(void)
{
	struct timespec ts;

	/* CPU time: the machine running the bench may be shared */
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
bench_one(const char *what, const char *t, size_t len, size_t max)
{
	struct deepl_piece *p;
	size_t pos;
	int n;
	double t0 = bench_now(), dt;

	if (worker_deepl_split(t, len, max, &p, &n) < 0)
		return -1;
	dt = bench_now() - t0;
	pos = n > 0 ? p[0].off : len;
	for (int i = 0; i < n; i++) {
		if (p[i].off != pos || p[i].len > max)
			pos = (size_t)-1;
		else
			pos = p[i].off + p[i].len + p[i].sep_len;
	}
	free(p);
	printf("  %-40s %6.3f s CPU  %6d pieces  %s\n", what, dt, n,
	       pos == len && dt < BENCH_TARGET_S ? "PASS" : "MISS");
	return 0;
}

int
main(void)
{
	static const char sentence[] = "This is a sentence of a long "
	    "interview, spoken slowly. ";
	size_t sl = sizeof(sentence) - 1, half = BENCH_MB / 2;
	char *t = malloc(BENCH_MB);

	if (t == NULL)
		return 1;
	for (size_t i = 0; i < BENCH_MB; i++)
		t[i] = sentence[i % sl];
	printf("Text splitter (DeepL 20000-byte and OpenAI 12000-byte pieces), "
	       "target < %.0f s each\n", BENCH_TARGET_S);
	bench_one("100 MB of sentences, 12000-byte pieces", t, BENCH_MB, 12000);
	memset(t + half, ' ', BENCH_MB - half);
	bench_one("50 MB text + 50 MB trailing spaces", t, BENCH_MB, 12000);
	memset(t + half, '\n', BENCH_MB - half);
	bench_one("50 MB text + 50 MB trailing newlines", t, BENCH_MB, 20000);
	memcpy(t, "Hi.", 3);
	memset(t + 3, '"', BENCH_MB - 8);
	memcpy(t + BENCH_MB - 5, " end.", 5);
	bench_one("100 MB of closing quotes", t, BENCH_MB, 20000);
	free(t);
	return 0;
}
