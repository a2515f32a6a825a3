/*
 * worker_elevenlabs.c - speech to text with ElevenLabs Scribe
 * (POST /v1/speech-to-text).  The media file is streamed from disk as a
 * multipart upload; the answer's word list (words, spacing and audio
 * events, each timed) gives the subtitles.  ElevenLabs limits concurrent
 * requests per account, and says so with too_many_concurrent_requests,
 * which the HTTP layer turns into a farm-wide concurrency decrease.
 */
#include "worker_http.h"
#include "worker_subtitle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#define ELEVENLABS_BASE "https://api.elevenlabs.io"

/* Options passed through to the API as they are written in [elevenlabs],
 * after a check of their form here (the API's own 422 would only come
 * after a long upload). */
static const struct {
	const char *key;
	const char *const allowed[4];   /* NULL-terminated; empty = a number */
} el_opts[] = {
	{ "diarize", { "true", "false", NULL } },
	{ "tag_audio_events", { "true", "false", NULL } },
	{ "timestamps_granularity", { "none", "word", "character", NULL } },
	{ "num_speakers", { NULL } },
};

static int
el_opts_check(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(el_opts) / sizeof(el_opts[0]); i++) {
		const char *v = config_get(cfg, "elevenlabs", el_opts[i].key);
		bool ok = false;
		if (v == NULL)
			continue;
		if (el_opts[i].allowed[0] == NULL) {
			long n = config_get_long(cfg, "elevenlabs", el_opts[i].key, -1);
			ok = n >= 1 && n <= 32;
		}
		for (int k = 0; el_opts[i].allowed[k]; k++)
			ok = ok || strcmp(v, el_opts[i].allowed[k]) == 0;
		if (!ok) {
			snprintf(err, errlen, "[elevenlabs] %s: \"%s\" is not %s",
			    el_opts[i].key, v, el_opts[i].allowed[0] == NULL ?
			    "a number of speakers from 1 to 32" :
			    el_opts[i].allowed[2] ? "none, word or character" :
			    "true or false");
			return -1;
		}
	}
	return 0;
}

static int
el_setup(const struct config *cfg, char **key, struct worker_http_opts *o,
	 char *err, size_t errlen)
{
	if (worker_http_key_load(cfg, "elevenlabs", provider_elevenlabs.key_env, key,
				 err, errlen) < 0)
		return -1;
	if (worker_http_opts_load(cfg, "elevenlabs", ELEVENLABS_BASE, o, err,
				  errlen) < 0)
		return -1;
	return el_opts_check(cfg, err, errlen);
}

static int
el_check(const struct config *cfg, int stage, const char *lang, char *err,
	 size_t errlen)
{
	struct worker_http_opts o;
	char *key = NULL;
	int rc;

	(void)lang;
	if (stage != STAGE_TRANSCRIBE) {
		snprintf(err, errlen, "elevenlabs transcribes; it cannot translate");
		return -1;
	}
	rc = el_setup(cfg, &key, &o, err, errlen);
	worker_http_key_free(key);
	return rc;
}

static double
el_time(json_t *w, const char *k)
{
	json_t *v = json_object_get(w, k);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

static void
el_subtitles(json_t *words, struct provider_result *res)
{
	size_t i, n = 0;
	struct sub_word *w;
	json_t *x;
	bool space = false;

	if (json_array_size(words) == 0)
		return;
	w = xcalloc(json_array_size(words), sizeof(*w));
	json_array_foreach(words, i, x) {
		const char *type = json_string_value(json_object_get(x, "type"));
		json_t *t = json_object_get(x, "text");
		if (type != NULL && strcmp(type, "spacing") == 0) {
			space = true;
			continue;
		}
		if (!json_is_string(t))
			continue;
		/* "word" and "audio_event" ((laughter)) are both shown */
		w[n].text = json_string_value(t);
		w[n].len = json_string_length(t);
		w[n].start = el_time(x, "start");
		w[n].end = el_time(x, "end");
		w[n].space_before = space || n == 0;
		space = false;
		n++;
	}
	worker_subtitle_add(res, w, n);
	free(w);
}

int
worker_elevenlabs_parse(struct buf *body, struct provider_result *res)
{
	static const char *const lists[] = { "words", NULL };
	json_t *root = worker_http_transcript_parse(body, "elevenlabs", lists,
						    res);

	if (root == NULL)
		return -1;
	el_subtitles(json_object_get(root, "words"), res);
	json_decref(root);
	return 0;
}

static int
el_run(const struct provider_req *req, struct provider_result *res)
{
	const struct config *cfg = req->cfg;
	struct worker_http_opts o;
	struct worker_http_call c = { 0 };
	const char *model = config_get(cfg, "transcribe", "model");
	const char *lang = config_get(cfg, "transcribe", "language");
	char err[400], *key = NULL, *hdr;
	int64_t size;
	int rc = -1;

	if (worker_http_media_check(req->input_fd, req->input_path, &size,
	    res) < 0)
		goto done;
	if (el_setup(cfg, &key, &o, err, sizeof(err)) < 0) {
		provider_result_error(res, OUT_PERMANENT, "%s", err);
		goto done;
	}
	if (model == NULL)
		model = config_get(cfg, "elevenlabs", "model_id");
	hdr = xasprintf("xi-api-key: %s", key);
	c.headers = curl_slist_append(NULL, hdr);
	explicit_bzero(hdr, strlen(hdr));
	free(hdr);
	c.mime = curl_mime_init(worker_http_handle());
	if (c.mime == NULL) {
		provider_result_error(res, OUT_TRANSIENT, "cannot start libcurl");
		goto done;
	}
	worker_http_mime_text(c.mime, "model_id", model ? model : "scribe_v1");
	if (lang != NULL && lang[0] != '\0')
		worker_http_mime_text(c.mime, "language_code", lang);
	for (size_t i = 0; i < sizeof(el_opts) / sizeof(el_opts[0]); i++) {
		const char *v = config_get(cfg, "elevenlabs", el_opts[i].key);
		if (v != NULL)
			worker_http_mime_text(c.mime, el_opts[i].key, v);
	}
	if (worker_http_mime_file(c.mime, "file", req->input_fd,
	    req->input_path, size, res) < 0)
		goto done;
	c.opts = &o;
	c.secret = key;
	c.url = xasprintf("%s/v1/speech-to-text", o.base_url);
	if (worker_http_exchange(&c, res) < 0)
		goto done;
	if (worker_elevenlabs_parse(&c.resp, res) < 0) {
		res->http_status = (int)c.status;
		goto done;
	}
	res->outcome = OUT_COMPLETED;
	rc = 0;
done:
	curl_mime_free(c.mime);
	worker_http_headers_free(c.headers);
	free((char *)c.url);
	buf_free(&c.resp);
	worker_http_key_free(key);
	return rc;
}

const struct provider_desc provider_elevenlabs = {
	.name = "elevenlabs",
	.stages = STAGE_MASK_TRANSCRIBE,
	.limited = true,
	/* model_id, then el_opts' keys (passed through to the API) */
	.keys = (const char *const[]){ "model_id", "diarize",
		"tag_audio_events", "timestamps_granularity", "num_speakers",
		NULL },
	.key_env = "ELEVENLABS_API_KEY",
	.code_refused = { "quota_exceeded" },
	.code_concurrency = { "too_many_concurrent_requests" },
	.check = el_check,
	.run = el_run,
};
