/*
 * worker_deepl.c - translation with DeepL (POST /v2/translate).  DeepL caps
 * a request at 128 KiB and 50 texts, and a transcript of a long interview
 * is often one paragraph, so the text is cut at the best boundary that
 * fits (paragraph, line, sentence, word, character), the pieces are sent
 * in as few requests as the limits allow, and the translations are put
 * back in order with the original whitespace between them.  The splitter
 * is shared with the OpenAI translator.
 */
#include "worker_http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#define DEEPL_MAX_BODY  (128 * 1024)
#define DEEPL_MAX_TEXTS 50
#define DEEPL_PIECE     20000   /* even if every byte escaped to 6, < 128 KiB */
#define DEEPL_OVERHEAD  1024    /* target_lang and the other fields */
#define DEEPL_QH        4       /* > the longest closer (common_text.c) */

enum { CUT_CHAR, CUT_WORD, CUT_SENTENCE, CUT_LINE, CUT_PARA, CUT_LEVELS };

static bool
deepl_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	       c == '\f' || c == '\v';
}

/* The best cut in text[pos..pos+max]: the last paragraph break, else line
 * break, else sentence end, else space; 0 when there is none.  One pass
 * over the window: each whitespace run is measured once (stopping at the
 * second newline), and q, where the text before the closing quotes and
 * brackets at i ends, is carried along: a closer of l bytes ending at i
 * gives q(i) = q(i - l), kept for the last few i in qh, so a long run of
 * quotes costs nothing per position. */
static size_t
deepl_best_cut(const char *text, size_t len, size_t pos, size_t max)
{
	size_t cut[CUT_LEVELS] = { 0 }, q = pos, e = 0, qh[DEEPL_QH], cl;
	bool wide;

	qh[pos % DEEPL_QH] = pos;
	for (size_t i = pos + 1; i <= pos + max; i++) {
		cl = text_closer_len(text + pos, i - pos);
		q = cl > 0 ? qh[(i - cl) % DEEPL_QH] : i;
		qh[i % DEEPL_QH] = q;
		if (deepl_space(text[i]) && !deepl_space(text[i - 1])) {
			int nl = 0;
			for (size_t r = i; r < len && deepl_space(text[r]) && nl < 2; r++)
				nl += text[r] == '\n';
			cut[nl >= 2 ? CUT_PARA : nl == 1 ? CUT_LINE :
			    text_sentence_mark(text + pos, q - pos, &wide) ?
			    CUT_SENTENCE : CUT_WORD] = i;
		} else if (q > pos && (unsigned char)text[q - 1] >= 0x80 &&
			   !deepl_space(text[i]) &&
			   text_sentence_mark(text + pos, q - pos, &wide) && wide) {
			/* only a CJK mark (non-ASCII) cuts with no space after */
			cut[CUT_SENTENCE] = i;
		}
	}
	for (int lv = CUT_PARA; lv > CUT_CHAR && e == 0; lv--)
		e = cut[lv];
	return e;
}

int
worker_deepl_split(const char *text, size_t len, size_t max_piece,
		   struct deepl_piece **pieces, int *npieces)
{
	struct deepl_piece *out = NULL;
	int n = 0, cap = 0;
	size_t pos = 0, end = len, e, r;

	*pieces = NULL;
	*npieces = 0;
	if (max_piece < 4)
		return -1;
	while (pos < len && deepl_space(text[pos]))
		pos++;
	/* trailing whitespace is measured once, not once per piece: a long
	 * run of it made the split quadratic */
	while (end > pos && deepl_space(text[end - 1]))
		end--;
	while (pos < len) {
		if (end - pos <= max_piece) {
			e = end;
		} else if ((e = deepl_best_cut(text, len, pos, max_piece)) == 0) {
			/* one endless word: cut between characters */
			e = pos + max_piece;
			while (e > pos && ((unsigned char)text[e] & 0xC0) == 0x80)
				e--;
			if (e == pos)           /* not UTF-8 at all */
				e = pos + max_piece;
		}
		for (r = e; r < len && deepl_space(text[r]); r++)
			;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			out = xrealloc(out, (size_t)cap * sizeof(*out));
		}
		out[n++] = (struct deepl_piece){ pos, e - pos, r - e, 0 };
		pos = r;
	}
	*pieces = out;
	*npieces = n;
	return 0;
}

void
worker_deepl_lead_put(struct buf *out, const char *text, size_t len,
		      const struct deepl_piece *pieces, int npieces)
{
	buf_append(out, text, npieces > 0 ? pieces[0].off : len);
}

int
worker_deepl_piece_put(struct buf *out, const char *text,
		       const struct deepl_piece *p, const char *tr, size_t tl,
		       size_t max, const char *provider,
		       struct provider_result *res)
{
	if (worker_http_translation_append(out, tr, tl, max, provider, res) < 0)
		return -1;
	return worker_http_translation_append(out, text + p->off + p->len,
	    p->sep_len, max, provider, res);
}

size_t
worker_deepl_json_len(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\' || c == '\b' || c == '\f' ||
		    c == '\n' || c == '\r' || c == '\t')
			n += 2;
		else if (c < 0x20)
			n += 6;
		else
			n += 1;
	}
	return n;
}

int
worker_deepl_plan(const char *text, size_t len, size_t max_piece,
		  size_t max_body, int max_texts, struct deepl_piece **pieces,
		  int *npieces, int *nbatches)
{
	size_t used = 0, budget = max_body > DEEPL_OVERHEAD ?
		max_body - DEEPL_OVERHEAD : max_body / 2;
	int batch = 0, count = 0;

	*nbatches = 0;
	/* any piece must fit a request alone, even if every byte escapes */
	if (max_piece > (budget - 3) / 6)
		max_piece = (budget - 3) / 6;
	if (worker_deepl_split(text, len, max_piece, pieces, npieces) < 0)
		return -1;
	for (int i = 0; i < *npieces; i++) {
		struct deepl_piece *p = &(*pieces)[i];
		size_t need = worker_deepl_json_len(text + p->off, p->len) + 3;
		if (count > 0 && (used + need > budget || count >= max_texts)) {
			batch++;
			used = 0;
			count = 0;
		}
		p->batch = batch;
		used += need;
		count++;
	}
	*nbatches = *npieces > 0 ? batch + 1 : 0;
	return 0;
}

static int
deepl_variant(const char *v, const char *prefix, const char *a,
	      const char *b, char *out, size_t outlen)
{
	char u[16];
	size_t i;

	for (i = 0; v[i] && i + 1 < sizeof(u); i++)
		u[i] = v[i] == '_' ? '-' : (char)toupper((unsigned char)v[i]);
	u[i] = '\0';
	if (strcmp(u, a) == 0 || strcmp(u, b) == 0)
		snprintf(out, outlen, "%s-%s", prefix, u);
	else if ((strncmp(u, prefix, 2) == 0 && u[2] == '-') &&
		 (strcmp(u + 3, a) == 0 || strcmp(u + 3, b) == 0))
		snprintf(out, outlen, "%s", u);
	else
		return -1;
	return 0;
}

int
worker_deepl_target(const char *lang, const char *english_variant,
		    const char *portuguese_variant, char *out, size_t outlen)
{
	size_t i;

	if (strcasecmp(lang, "en") == 0)
		return deepl_variant(english_variant ? english_variant : "EN-US",
				     "EN", "US", "GB", out, outlen);
	if (strcasecmp(lang, "pt") == 0)
		return deepl_variant(portuguese_variant ? portuguese_variant :
				     "PT-BR", "PT", "BR", "PT", out, outlen);
	for (i = 0; lang[i] && i + 1 < outlen; i++)
		out[i] = lang[i] == '_' ? '-' : (char)toupper((unsigned char)lang[i]);
	out[i] = '\0';
	return 0;
}

/* ---- the provider ---------------------------------------------------- */

static int
deepl_setup(const struct config *cfg, const char *lang, char **key,
	    struct worker_http_opts *o, char *target, char *err, size_t errlen)
{
	const char *ev = config_get(cfg, "deepl", "english_variant");
	const char *pv = config_get(cfg, "deepl", "portuguese_variant");

	if (worker_http_key_load(cfg, "deepl", provider_deepl.key_env, key, err,
				 errlen) < 0)
		return -1;
	/* free-plan keys end in ":fx" and only work on the free host */
	size_t kl = strlen(*key);
	const char *host = (kl > 3 && strcmp(*key + kl - 3, ":fx") == 0) ?
		"https://api-free.deepl.com" : "https://api.deepl.com";
	if (worker_http_opts_load(cfg, "deepl", host, o, err, errlen) < 0)
		return -1;
	if (lang != NULL && worker_deepl_target(lang, ev, pv, target, 16) < 0) {
		snprintf(err, errlen, "[deepl] %s \"%s\" is not one DeepL knows "
		    "(%s)", strcasecmp(lang, "en") == 0 ? "english_variant" :
		    "portuguese_variant", strcasecmp(lang, "en") == 0 ?
		    (ev ? ev : "") : (pv ? pv : ""),
		    strcasecmp(lang, "en") == 0 ? "EN-US or EN-GB" :
		    "PT-BR or PT-PT");
		return -1;
	}
	return 0;
}

static int
deepl_check(const struct config *cfg, int stage, const char *lang,
	    char *err, size_t errlen)
{
	struct worker_http_opts o;
	char target[16], *key = NULL;
	int rc;

	if (stage != STAGE_TRANSLATE) {
		snprintf(err, errlen, "deepl translates; it cannot transcribe");
		return -1;
	}
	rc = deepl_setup(cfg, lang, &key, &o, target, err, errlen);
	worker_http_key_free(key);
	return rc;
}

int
worker_deepl_parse(const char *body, size_t len, int n, char **tr,
		   struct provider_result *res)
{
	bool big;
	json_t *root = worker_http_json_load(body, len, &big);
	json_t *arr = json_object_get(root, "translations");
	int rc = -1;

	if (n < 0 || json_array_size(arr) != (size_t)n) {
		worker_http_json_fail("deepl", big, root ? "wrong number of "
		    "translations" : "not JSON", res);
		goto done;
	}
	for (int k = 0; k < n; k++) {
		json_t *t = json_object_get(json_array_get(arr, (size_t)k), "text");
		if (!json_is_string(t)) {
			worker_http_json_fail("deepl", false, "translation without "
			    "text", res);
			goto done;
		}
	}
	for (int k = 0; k < n; k++) {
		json_t *t = json_object_get(json_array_get(arr, (size_t)k), "text");
		tr[k] = xstrndup(json_string_value(t), json_string_length(t));
	}
	rc = 0;
done:
	json_decref(root);
	return rc;
}

/* One request: the pieces of batch b, whose translations are appended to
 * out at once, each followed by the original whitespace after its piece,
 * so no more than one answer's texts are held apart from out. */
static int
deepl_batch(struct worker_http_call *c, const struct provider_req *req,
	    const char *target, const struct deepl_piece *p, int np, int b,
	    size_t max, struct buf *out, struct provider_result *res)
{
	json_t *body = json_object(), *texts = json_array();
	const char *formality = config_get(req->cfg, "deepl", "formality");
	char *dump = NULL, *tr[DEEPL_MAX_TEXTS] = { NULL };
	int first = -1, n = 0, rc = -1;

	for (int i = 0; i < np; i++) {
		if (p[i].batch != b)
			continue;
		json_t *s = json_stringn(req->text + p[i].off, p[i].len);
		if (s == NULL) {
			provider_result_error(res, OUT_PERMANENT, "the transcript is "
			    "not valid UTF-8 (near byte %zu)", p[i].off);
			goto done;
		}
		json_array_append_new(texts, s);
		first = first < 0 ? i : first;
		n++;
	}
	if (n > DEEPL_MAX_TEXTS) {      /* worker_deepl_plan never does this */
		provider_result_error(res, OUT_PERMANENT, "%d texts in one DeepL "
		    "request", n);
		goto done;
	}
	json_object_set_new(body, "text", texts);
	texts = NULL;
	json_object_set_new(body, "target_lang", json_string(target));
	if (formality != NULL)
		json_object_set_new(body, "formality", json_string(formality));
	dump = json_dumps(body, JSON_COMPACT);
	c->body = dump;
	c->body_len = strlen(dump);
	if (worker_http_exchange(c, res) < 0)
		goto done;
	if (worker_deepl_parse(c->resp.data, c->resp.len, n, tr, res) < 0) {
		res->http_status = (int)c->status;
		goto done;
	}
	/* a batch's pieces are consecutive (worker_deepl_plan) */
	for (int k = 0; k < n; k++)
		if (worker_deepl_piece_put(out, req->text, &p[first + k], tr[k],
		    strlen(tr[k]), max, "deepl", res) < 0)
			goto done;
	rc = 0;
done:
	for (int k = 0; k < n && k < DEEPL_MAX_TEXTS; k++)
		free(tr[k]);
	json_decref(texts);
	json_decref(body);
	free(dump);
	buf_free(&c->resp);
	return rc;
}

static int
deepl_run(const struct provider_req *req, struct provider_result *res)
{
	struct worker_http_opts o;
	struct worker_http_call c = { 0 };
	struct deepl_piece *p = NULL;
	char target[16], err[400], *key = NULL, *hdr, *url = NULL;
	int np = 0, nb = 0, rc = -1;
	size_t max;
	struct buf out;

	buf_init(&out);
	if (deepl_setup(req->cfg, req->lang, &key, &o, target, err,
			sizeof(err)) < 0) {
		provider_result_error(res, OUT_PERMANENT, "%s", err);
		goto done;
	}
	/* each answer is within the cap; together they must be too */
	max = worker_http_translation_max(&o, req->text_len);
	worker_deepl_plan(req->text, req->text_len, DEEPL_PIECE, DEEPL_MAX_BODY,
			  DEEPL_MAX_TEXTS, &p, &np, &nb);
	hdr = xasprintf("Authorization: DeepL-Auth-Key %s", key);
	c.headers = curl_slist_append(NULL, hdr);
	explicit_bzero(hdr, strlen(hdr));
	free(hdr);
	c.headers = curl_slist_append(c.headers, "Content-Type: application/json");
	c.headers = curl_slist_append(c.headers, "Expect:");
	url = xasprintf("%s/v2/translate", o.base_url);
	c.opts = &o;
	c.url = url;
	c.secret = key;
	/* the original whitespace goes back between the translations */
	worker_deepl_lead_put(&out, req->text, req->text_len, p, np);
	for (int b = 0; b < nb; b++) {
		if (deepl_batch(&c, req, target, p, np, b, max, &out, res) < 0)
			goto done;
		worker_heartbeat();
	}
	buf_terminate(&out);
	provider_result_add(res, ".txt", out.data, out.len);
	buf_init(&out);
	res->outcome = OUT_COMPLETED;
	rc = 0;
done:
	free(url);
	free(p);
	worker_http_headers_free(c.headers);
	worker_http_key_free(key);
	buf_free(&out);
	return rc;
}

const struct provider_desc provider_deepl = {
	.name = "deepl",
	.stages = STAGE_MASK_TRANSLATE,
	.limited = true,
	.keys = (const char *const[]){ "english_variant",
		"portuguese_variant", "formality", NULL },
	.key_env = "DEEPL_AUTH_KEY",
	/* DeepL's own codes: 529 too many requests, 456 quota exceeded */
	.http_rate_limited = { 529 },
	.http_refused = { 456 },
	.check = deepl_check,
	.run = deepl_run,
};
