/*
 * worker_http.h - the HTTP layer the cloud providers share (libcurl): one
 * reused easy handle per worker process, keys kept out of every message,
 * and one place that turns an HTTP answer into a job outcome and a
 * provider-wide event for the master.  The pure helpers (Retry-After,
 * classification, DeepL chunking) are declared here so unit tests reach
 * them.
 */
#ifndef MPFARM_WORKER_HTTP_H
#define MPFARM_WORKER_HTTP_H

#include <time.h>
#include <curl/curl.h>
#include <jansson.h>
#include "worker_provider.h"

#define WORKER_HTTP_RETRY_AFTER_MAX_MS (15 * 60 * MS_PER_S)  /* cap on any pause */
#define WORKER_HTTP_RESPONSE_MAX (16L * 1024 * 1024)    /* default body cap */
/* Decoding a JSON body may take at most FACTOR times its size plus SLACK
 * bytes of jansson's memory (a real answer takes about 10 times; a body of
 * empty objects 80), and an answer may carry at most ITEMS_MAX words or
 * segments. */
#define WORKER_HTTP_JSON_FACTOR  16
#define WORKER_HTTP_JSON_SLACK   (256 * 1024)
#define WORKER_HTTP_ITEMS_MAX    2000000
/* Words spread over a segment's timing (OpenAI's segments) may number at
 * most one per SPREAD_BYTES of the answer, and ITEMS_MAX in all. */
#define WORKER_HTTP_SPREAD_BYTES 8
/* A translation may be at most max(max_response_bytes, FACTOR times the
 * transcript's bytes) long in all, however many answers make it up. */
#define WORKER_HTTP_TRANSLATION_FACTOR 16

/* Per-provider settings from its config section ([openai] ...). */
struct worker_http_opts {
	const char *provider;       /* its name: section, messages */
	const struct provider_desc *desc;   /* its quirks */
	char  base_url[512];        /* without trailing '/' */
	long  connect_timeout;      /* seconds (connect_timeout, 10) */
	long  low_speed_time;       /* seconds without a byte (low_speed_time, 300) */
	long  max_response;         /* bytes (max_response_bytes) */
};

/* One request and its answer. */
struct worker_http_call {
	const struct worker_http_opts *opts;
	const char *url;
	const char *secret;         /* the key, only to scrub it from messages */
	struct curl_slist *headers; /* caller-owned; carries the auth header */
	const char *body;           /* JSON body, or NULL with mime */
	size_t      body_len;
	curl_mime  *mime;           /* caller-owned multipart upload */
	/* filled by worker_http_exchange */
	long        status;
	struct buf  resp;           /* NUL-terminated; caller buf_free()s */
	int64_t     retry_after_ms;
};

/* Fill opts from [section]; default_base is used when base_url is unset.
 * Returns -1 with a message when a value is unusable. */
int  worker_http_opts_load(const struct config *cfg, const char *section,
			   const char *default_base, struct worker_http_opts *o,
			   char *err, size_t errlen);

/* The API key: environment variable `env` if set and non-empty, else
 * [section] api_key_file, which must not be readable by others.  Leading
 * and trailing whitespace is stripped.  *key is malloc'd (free with
 * worker_http_key_free, which wipes it). */
int  worker_http_key_load(const struct config *cfg, const char *section,
			  const char *env, char **key, char *err, size_t errlen);
void worker_http_key_free(char *key);
/* curl_slist_free_all, wiping each header first (one holds the key). */
void worker_http_headers_free(struct curl_slist *headers);

/* The process-wide handle (created on first use; reused for keep-alive).
 * Providers need it to build a curl_mime. NULL if curl cannot start. */
CURL *worker_http_handle(void);

/* Take a farm-wide token, send the request, and classify the answer.
 * Returns 0 for a 2xx answer (body in c->resp; IPC_PROV_OK sent); else -1
 * with res filled (outcome, http_status, retry_after_ms, key-free msg) and
 * the matching provider event sent. */
int  worker_http_exchange(struct worker_http_call *c,
			  struct provider_result *res);
/* Check the job's media descriptor before any upload: not a regular file
 * or empty ("empty file", naming path) fill res and return -1; else 0
 * with its size. */
int  worker_http_media_check(int fd, const char *path, int64_t *size,
			     struct provider_result *res);
/* A multipart file part of `size` bytes streamed from the descriptor fd
 * (curl_mime_data_cb and pread: never read whole, never reopened by
 * name), sent under a tamed copy of path's base name.  fd stays the
 * caller's.  0 / -1 (res filled). */
int  worker_http_mime_file(curl_mime *mime, const char *field, int fd,
			   const char *path, int64_t size,
			   struct provider_result *res);
/* Add a text field to a multipart form. */
void worker_http_mime_text(curl_mime *mime, const char *field,
			   const char *value);
/* Add a transcript's ".txt" (text plus a final newline) and ".json" (the
 * provider's answer as received; raw is taken over and emptied). */
void worker_http_transcript_add(struct provider_result *res, const char *text,
				size_t len, struct buf *raw);

/* ---- pure helpers (unit-tested) -------------------------------------- */

/* Retry-After value, delta-seconds or HTTP date, as ms from `now`
 * (0 when absent, unparsable or in the past; capped). */
int64_t worker_http_retry_after_parse(const char *value, time_t now);
/* OpenAI's x-ratelimit-reset-* durations ("1s", "6m0s", "20ms", "1.5s")
 * in ms, or -1. */
int64_t worker_http_duration_parse(const char *value);

struct worker_http_class {
	enum job_outcome outcome;
	int  event;                 /* enum ipc_prov_event, or -1 for none */
};
/* Classify one exchange with provider p's quirks (its own codes for rate
 * limits and refused keys).  status is 0 when curl failed (cc says how);
 * code is the provider's machine-readable error code from the body
 * ("insufficient_quota", "too_many_concurrent_requests", ...) or NULL.
 * Never fails. */
void worker_http_classify(const struct provider_desc *p, long status, CURLcode cc,
			  const char *code, struct worker_http_class *out);
/* Pull the error code and human message out of an error body of any of
 * the three providers' shapes; falls back to a printable prefix of the
 * body.  Both outputs are always NUL-terminated. */
void worker_http_error_parse(const char *body, size_t len, char *code,
			     size_t codelen, char *msg, size_t msglen);
/* Replace any run of 8 or more characters of `secret` found in msg. */
void worker_http_scrub(char *msg, const char *secret);

/* ---- untrusted bodies (worker_http_body.c) ---------------------------- */

/* Decode a JSON body (duplicate keys refused) under the memory budget
 * above.  Returns the root, or NULL when it is not JSON or would take more
 * memory than allowed (*too_big is then true; too_big may be NULL). */
json_t *worker_http_json_load(const char *body, size_t len, bool *too_big);
/* Fill res for a 2xx body that did not decode: permanent "too large to
 * decode" when too_big, else transient "malformed response from P: what".
 * Returns -1. */
int  worker_http_json_fail(const char *provider, bool too_big,
			   const char *what, struct provider_result *res);
/* Copy provider text src[0..n) into dst[dstlen] fit for a log line, the
 * database and a frame: control characters (C0, DEL, C1) become single
 * spaces between words, bytes that are not UTF-8 become '?', a character
 * is never cut in two, and runs of the secret (if any) are scrubbed.
 * dst is always NUL-terminated (dstlen > 0). */
void worker_http_text_clean(char *dst, size_t dstlen, const char *src,
			    size_t n, const char *secret);

/* The most bytes a translation of text_len bytes may take in all:
 * max(o->max_response, WORKER_HTTP_TRANSLATION_FACTOR * text_len). */
size_t worker_http_translation_max(const struct worker_http_opts *o,
				   size_t text_len);
/* Append s[0..n) to a translation being assembled when out stays within
 * max bytes; else leave out as it is, fill res (permanent "translation
 * larger than max bytes") and return -1. */
int  worker_http_translation_append(struct buf *out, const char *s, size_t n,
				    size_t max, const char *provider,
				    struct provider_result *res);

/* What both transcription answers share: decode body, require a string
 * "text", refuse more than ITEMS_MAX entries in any array named in lists
 * (NULL-terminated), add the .txt and the .json (body taken over).
 * Returns the root for the subtitles (caller json_decref()s it), or NULL
 * with res filled. */
json_t *worker_http_transcript_parse(struct buf *body, const char *provider,
				     const char *const *lists,
				     struct provider_result *res);

/* ---- response parsers (one per answer shape; fuzzed) ------------------ */

/* ElevenLabs speech-to-text and OpenAI transcription answers: on success
 * the transcript (.txt), the answer as received (.json; body is taken over
 * and emptied) and the subtitles are added to res and 0 is returned; else
 * -1 with res filled (malformed: transient; too large or too many words or
 * segments, or for OpenAI more words in its segments than
 * WORKER_HTTP_SPREAD_BYTES allows: permanent).  body must be
 * NUL-terminated (buf_terminate). */
int  worker_elevenlabs_parse(struct buf *body, struct provider_result *res);
int  worker_openai_transcript_parse(struct buf *body,
				    struct provider_result *res);
/* An OpenAI chat completion: *out is the malloc'd translation, or -1 with
 * res filled (a refusal, cleaned and scrubbed of secret, is permanent). */
int  worker_openai_chat_parse(const char *body, size_t len, const char *secret,
			      char **out, struct provider_result *res);
/* A DeepL answer to n texts: tr[0..n) get malloc'd translations, or -1
 * with res filled and tr[] untouched. */
int  worker_deepl_parse(const char *body, size_t len, int n, char **tr,
			struct provider_result *res);

/* ---- DeepL chunking (worker_deepl.c) ---------------------------------- */

/* One piece of a text: bytes [off, off+len) are sent; the sep_len bytes
 * after them (whitespace, or nothing) are kept as they are and put back
 * between the translations. */
struct deepl_piece {
	size_t off;
	size_t len;
	size_t sep_len;
	int    batch;               /* request number, from worker_deepl_plan */
};
/* Split text into pieces of at most max_piece bytes, cutting at the last
 * paragraph break, else line break, else sentence end, else space, else
 * UTF-8 character boundary that fits.  Text before the first piece is
 * text[0..pieces[0].off).  Returns 0 (no pieces for blank text) or -1 when
 * max_piece < 4. */
int  worker_deepl_split(const char *text, size_t len, size_t max_piece,
			struct deepl_piece **pieces, int *npieces);
/* Put a split text back together, the one way both translators do: the
 * text before the first piece (its leading whitespace, or all of a blank
 * text) is copied into out as it is.  Never fails. */
void worker_deepl_lead_put(struct buf *out, const char *text, size_t len,
			   const struct deepl_piece *pieces, int npieces);
/* Then, piece by piece in order: the translation tr[0..tl) of piece p,
 * followed by the whitespace that followed p in text.  0, or -1 with res
 * filled when out would grow past max (worker_http_translation_append;
 * provider names the answers in the message). */
int  worker_deepl_piece_put(struct buf *out, const char *text,
			    const struct deepl_piece *p, const char *tr,
			    size_t tl, size_t max, const char *provider,
			    struct provider_result *res);
/* Bytes a string takes inside a JSON string literal (quotes excluded),
 * escaped as jansson does. */
size_t worker_deepl_json_len(const char *s, size_t len);
/* Split and group into requests whose JSON body stays under max_body
 * bytes with at most max_texts texts each; sets pieces[i].batch and
 * *nbatches.  max_piece is lowered when a piece of that size could
 * escape past max_body. */
int  worker_deepl_plan(const char *text, size_t len, size_t max_piece,
		       size_t max_body, int max_texts,
		       struct deepl_piece **pieces, int *npieces, int *nbatches);
/* DeepL's target_lang for our language code: en -> EN-US / EN-GB
 * (english_variant), pt -> PT-BR / PT-PT (portuguese_variant), else the
 * code upper-cased.  Returns -1 for an unknown variant. */
int  worker_deepl_target(const char *lang, const char *english_variant,
			 const char *portuguese_variant, char *out, size_t outlen);

#endif
