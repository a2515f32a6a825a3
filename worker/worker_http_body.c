/*
 * worker_http_body.c - what a provider sends back is untrusted input.  This
 * file owns the two ways it gets in: JSON decoded under a memory budget
 * (jansson's allocations are counted while it parses, so a body of tiny
 * objects such as {"words":[{},{},...]} cannot make a worker use 80 times
 * its size), and text that reaches the log, the database or a frame
 * (error messages, a model's refusal), which is cleaned of control bytes
 * and invalid UTF-8, cut to length and scrubbed of the key.  A
 * translation, made of many answers each within the cap, is bounded as a
 * whole too.
 */
#include "worker_http.h"

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

/* Live bytes jansson holds while a bounded load runs; budget 0 = idle. */
static size_t body_used;
static size_t body_budget;
static bool   body_over;

static void *
body_malloc(size_t n)
{
	void *p;

	if (body_budget != 0 && (n > body_budget || body_used > body_budget - n)) {
		body_over = true;
		return NULL;        /* jansson fails the load cleanly */
	}
	p = malloc(n);
	if (p != NULL && body_budget != 0)
		body_used += malloc_usable_size(p);
	return p;
}

static void
body_free(void *p)
{
	/* only blocks allocated during the load are freed during it */
	if (p != NULL && body_budget != 0) {
		size_t n = malloc_usable_size(p);
		body_used = n > body_used ? 0 : body_used - n;
	}
	free(p);
}

json_t *
worker_http_json_load(const char *body, size_t len, bool *too_big)
{
	static bool installed;
	json_error_t jerr;
	json_t *root;

	/* plain malloc underneath: json_dumps results stay free()-able */
	if (!installed) {
		json_set_alloc_funcs(body_malloc, body_free);
		installed = true;
	}
	body_used = 0;
	body_over = false;
	body_budget = len * WORKER_HTTP_JSON_FACTOR + WORKER_HTTP_JSON_SLACK;
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	body_budget = 0;
	if (too_big != NULL)
		*too_big = body_over;
	return root;
}

int
worker_http_json_fail(const char *provider, bool too_big, const char *what,
		      struct provider_result *res)
{
	if (too_big)
		provider_result_error(res, OUT_PERMANENT, "response from %s too "
		    "large to decode (more than %d times its size in memory)",
		    provider, WORKER_HTTP_JSON_FACTOR);
	else
		provider_result_error(res, OUT_TRANSIENT, "malformed response from "
		    "%s: %s", provider, what);
	return -1;
}

json_t *
worker_http_transcript_parse(struct buf *body, const char *provider,
			     const char *const *lists, struct provider_result *res)
{
	bool big;
	json_t *root = worker_http_json_load(body->data, body->len, &big);
	json_t *text = json_object_get(root, "text");

	if (!json_is_string(text)) {
		worker_http_json_fail(provider, big, root ? "no \"text\"" :
				      "not JSON", res);
		goto fail;
	}
	for (int i = 0; lists[i] != NULL; i++) {
		if (json_array_size(json_object_get(root, lists[i])) >
		    WORKER_HTTP_ITEMS_MAX) {
			provider_result_error(res, OUT_PERMANENT, "response from "
			    "%s has more than %d %s", provider,
			    WORKER_HTTP_ITEMS_MAX, lists[i]);
			goto fail;
		}
	}
	worker_http_transcript_add(res, json_string_value(text),
				   json_string_length(text), body);
	return root;
fail:
	json_decref(root);
	return NULL;
}

/* ---- a translation as a whole ----------------------------------------- */

size_t
worker_http_translation_max(const struct worker_http_opts *o, size_t text_len)
{
	size_t cap = o->max_response > 0 ? (size_t)o->max_response : 0;

	if (text_len > SIZE_MAX / WORKER_HTTP_TRANSLATION_FACTOR)
		return SIZE_MAX;
	text_len *= WORKER_HTTP_TRANSLATION_FACTOR;
	return text_len > cap ? text_len : cap;
}

int
worker_http_translation_append(struct buf *out, const char *s, size_t n,
			       size_t max, const char *provider,
			       struct provider_result *res)
{
	if (n > max || out->len > max - n) {
		provider_result_error(res, OUT_PERMANENT, "translation larger "
		    "than %zu bytes (answers from %s; the limit is the larger of "
		    "max_response_bytes and %d times the transcript)", max,
		    provider, WORKER_HTTP_TRANSLATION_FACTOR);
		return -1;
	}
	buf_append(out, s, n);
	return 0;
}

/* ---- untrusted text -------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n) (1-4), or 0 when there is
 * none (stray continuation, overlong form, surrogate, beyond U+10FFFF). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	size_t l;
	unsigned lo = 0x80, hi = 0xbf;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		l = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		l = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		l = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < l || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < l; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return l;
}

void
worker_http_text_clean(char *dst, size_t dstlen, const char *src, size_t n,
		       const char *secret)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t o = 0, l;
	bool space = false;

	if (dstlen == 0)
		return;
	for (size_t i = 0; i < n && s[i] && o + 1 < dstlen; i += l) {
		l = utf8_seq(s + i, n - i);
		if (l == 0) {           /* a byte that is not UTF-8 */
			l = 1;
			if (o + 2 >= dstlen)
				break;
			dst[o++] = '?';
			continue;
		}
		if (l == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
			space = o > 0;
			continue;
		}
		/* C1 controls (U+0080..U+009F) are controls too */
		if (l == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0) {
			space = o > 0;
			continue;
		}
		/* a control run is one space, never a second one beside a space */
		if (space && (s[i] == ' ' || dst[o - 1] == ' '))
			space = false;
		if (o + l + (space ? 1 : 0) + 1 > dstlen)
			break;          /* never cut a character in two */
		if (space)
			dst[o++] = ' ';
		space = false;
		memcpy(dst + o, s + i, l);
		o += l;
	}
	dst[o] = '\0';
	worker_http_scrub(dst, secret);
}

static const char *
json_str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static bool
code_is(const char *code, const char *what)
{
	return code != NULL && strcmp(code, what) == 0;
}

void
worker_http_error_parse(const char *body, size_t len, char *code,
			size_t codelen, char *msg, size_t msglen)
{
	json_t *root = worker_http_json_load(body, len, NULL);
	json_t *e, *d;
	const char *c = NULL, *m = NULL;

	code[0] = msg[0] = '\0';
	if (json_is_object(root)) {
		e = json_object_get(root, "error");
		d = json_object_get(root, "detail");
		if (json_is_object(e)) {                /* OpenAI */
			m = json_str(e, "message");
			c = json_str(e, "code");
			if (c == NULL || code_is(json_str(e, "type"),
						 "insufficient_quota"))
				c = json_str(e, "type");
		} else if (json_is_string(e)) {
			m = json_string_value(e);
		} else if (json_is_object(d)) {         /* ElevenLabs */
			m = json_str(d, "message");
			c = json_str(d, "status");
		} else if (json_is_string(d)) {
			m = json_string_value(d);
		} else if (json_is_array(d)) {          /* validation errors */
			m = json_str(json_array_get(d, 0), "msg");
			c = json_str(json_array_get(d, 0), "type");
		}
		if (m == NULL)                          /* DeepL */
			m = json_str(root, "message");
	}
	if (c != NULL)
		worker_http_text_clean(code, codelen, c, strlen(c), NULL);
	if (m != NULL)
		worker_http_text_clean(msg, msglen, m, strlen(m), NULL);
	else
		worker_http_text_clean(msg, msglen < 201 ? msglen : 201, body, len,
				       NULL);
	json_decref(root);
}

void
worker_http_scrub(char *msg, const char *secret)
{
	size_t slen = secret ? strlen(secret) : 0, o = 0;

	if (slen < 8)
		return;
	for (size_t i = 0; msg[i];) {
		size_t best = 0;
		for (size_t j = 0; j + best < slen; j++) {
			size_t k = 0;
			while (msg[i + k] && secret[j + k] &&
			       msg[i + k] == secret[j + k])
				k++;
			if (k > best)
				best = k;
		}
		if (best >= 8) {
			/* "***" is shorter than the run: msg never grows */
			memcpy(msg + o, "***", 3);
			o += 3;
			i += best;
		} else {
			msg[o++] = msg[i++];
		}
	}
	msg[o] = '\0';
}
