/*
 * fuzz_transcript.c - the two transcription answer parsers, ElevenLabs'
 * (text, word list) and OpenAI's (text, segments or words), each with the
 * subtitles made from them, on any body under the decoder's memory budget.
 */
#include <stdint.h>
#include "worker_http.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int (*const parse[])(struct buf *, struct provider_result *) = {
		worker_elevenlabs_parse, worker_openai_transcript_parse,
	};

	for (int i = 0; i < 2; i++) {
		struct provider_result res = { 0 };
		struct buf body;

		buf_init(&body);
		buf_append(&body, data, size);
		buf_terminate(&body);
		parse[i](&body, &res);
		provider_result_free(&res);
		buf_free(&body);
	}
	return 0;
}
