/*
 * fuzz_openai_transcript.c - OpenAI's transcription answer parser (text,
 * segments or words, subtitles) on any body, under the decoder's memory
 * budget.
 */
#include <stdint.h>
#include "worker_http.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct provider_result res = { 0 };
	struct buf body;

	buf_init(&body);
	buf_append(&body, data, size);
	buf_terminate(&body);
	worker_openai_transcript_parse(&body, &res);
	provider_result_free(&res);
	buf_free(&body);
	return 0;
}
