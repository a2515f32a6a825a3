/*
 * common_config.c - settings: defaults, then the INI file (inih), then
 * MPFARM_DB, then the command line (common_cli.c), which wins.  The file is
 * checked strictly where a typo or a value out of range would silently
 * change behaviour (section names, every section's keys, provider names,
 * numbers, language codes, text that is not UTF-8): a key no code reads
 * would otherwise leave a default in force unnoticed.  Every value
 * remembers where it came from (FILE:LINE), for error messages and
 * `mpfarm config`.
 */
#include <stdio.h>
#include "common_config.h"
#include "common_roots.h"
#include "common_provider.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct config_parse {
	struct config *cfg;
	char *err;
	size_t errlen;
	const char *file;
	FILE *fp;
	int line;                   /* of the line inih is handling */
	int next_line;
	int err_line;               /* of the error in err, or 0 */
	bool too_long;              /* the line did not fit inih's buffer */
	bool indented;              /* it starts with blanks: inih takes it
				     * for more of the value above */
};

/* The sections besides one per provider (common_provider.h). */
static const char *const config_sections[] = {
	"farm", "transcribe", "translate", "serve", "roots", NULL
};

/* The keys of the sections besides [farm] (config_farm_set knows its
 * own), [roots] (any name: roots_line_check) and the providers' (their
 * descriptors).  Every stage section takes provider (config_provider),
 * model (the HTTP providers' model) and command (exec's engine), which
 * config_stage_get reads from [translate.LANG] before [translate];
 * [transcribe] also takes language (the spoken-language hint the HTTP
 * providers send), [translate] the target languages. */
static const char *const config_stage_keys[] = {
	"provider", "model", "command", NULL
};
static const char *const config_transcribe_keys[] = { "language", NULL };
static const char *const config_translate_keys[] = { "languages", NULL };
static const char *const config_serve_keys[] = {
	"listen", "allowed_hosts", NULL
};

/* Numbers any provider section may hold, with their ranges: a value that
 * parses but makes no sense (inf, 2.5 requests in flight, 4294967295)
 * would otherwise stall or unlimit the farm at run time. */
static const struct config_num {
	const char *key;
	bool   whole;
	double lo, hi;
} config_nums[] = {
	{ "rate", false, 1e-6, 1e6 },
	{ "max_concurrency", true, 1, 10000 },
	{ "quota_pause", true, 1, 86400 * 30 },
	{ "delay_ms", true, 0, MS_PER_H },
	{ "connect_timeout", true, 1, 3600 },
	{ "low_speed_time", true, 1, 86400 },
};

static bool
word_in(const char *w, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(w, *list) == 0)
			return true;
	return false;
}

void
config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = 5;
	cfg->batch_size = 0;
	cfg->fetch_size = 50;
	cfg->job_timeout = 3600;
	cfg->heartbeat_timeout = 60;
	cfg->max_attempts = 3;
	cfg->grace = 30;
	cfg->check_interval = 60;
	cfg->host_timeout = 30;
	cfg->busy_timeout_ms = 10000;
	cfg->retry_delay_ms = 5000;
	cfg->retry_max_delay_ms = 600000;
	cfg->output = xstrdup("./output");
	cfg->db = xstrdup("media_tracking.db");
	cfg->listen = xstrdup("127.0.0.1:8080");
	cfg->log_level = LOG_INFO;
	cfg->stage_mask = STAGE_MASK_ALL;
}

/* [serve] allowed_hosts: a comma list of host names (letters, digits,
 * '-', '.', '_') or "*"; spaces around the commas are fine.  0, or -1 with
 * msg naming the bad entry. */
static int
config_hosts_check(const char *v, char *msg, size_t msglen)
{
	for (const char *p = v; ; p++) {
		size_t n;
		p += strspn(p, " \t");
		n = strcspn(p, ",");
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		bool star = n == 1 && p[0] == '*';
		if (n == 0 || (!star && strspn(p, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") < n)) {
			snprintf(msg, msglen, "[serve] allowed_hosts: \"%.*s\" is "
			    "not a host name (give names separated by commas, "
			    "or *)", (int)(n > 64 ? 64 : n), p);
			return -1;
		}
		p = strchr(p, ',');
		if (p == NULL)
			return 0;
	}
}

/* Strict integer: whole string, within [lo, hi]. */
static int
parse_int(const char *s, long lo, long hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static int
parse_bool(const char *s, bool *out)
{
	if (!strcasecmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on"))
		*out = true;
	else if (!strcasecmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off"))
		*out = false;
	else
		return -1;
	return 0;
}

/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool
utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		unsigned c = *p;
		int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 :
		    (c >> 3) == 30 ? 3 : -1;
		unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f :
		    c & 0x07;
		if (n < 0)
			return false;
		p++;
		for (int i = 0; i < n; i++, p++) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*p & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

int
config_langs_parse(const char *s, char (*langs)[CONFIG_LANG_MAX], int *n,
		   char *err, size_t errlen)
{
	int count = 0;
	const char *p = s;

	while (*p) {
		char code[CONFIG_LANG_MAX];
		size_t k = 0;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		while (*p && *p != ',' && !isspace((unsigned char)*p)) {
			unsigned char c = (unsigned char)*p++;
			/* a letter first: "--verbose" must never reach an
			 * engine's command line as {lang} */
			if (!(isalnum(c) || c == '_' || c == '-') ||
			    (k == 0 && !isalpha(c)) || k >= CONFIG_LANG_MAX - 1) {
				snprintf(err, errlen, "invalid language list \"%s\" "
				    "(codes like en,de,he: a letter, then letters, "
				    "digits, - or _)", s);
				return -1;
			}
			code[k++] = (char)tolower(c);
		}
		code[k] = '\0';
		bool dup = false;
		for (int i = 0; i < count; i++)
			if (strcmp(langs[i], code) == 0)
				dup = true;
		if (dup)
			continue;
		if (count >= CONFIG_LANGS_MAX) {
			snprintf(err, errlen, "too many languages (at most %d)",
			    CONFIG_LANGS_MAX);
			return -1;
		}
		memcpy(langs[count++], code, k + 1);
	}
	*n = count;
	return 0;
}

static void
set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = xstrdup(v);
}

static void
config_origin_set(struct config *cfg, const char *key, const char *where)
{
	for (int i = 0; i < cfg->norigins; i++) {
		if (strcmp(cfg->origins[i].key, key) == 0) {
			set_str(&cfg->origins[i].where, where);
			return;
		}
	}
	cfg->origins = xrealloc(cfg->origins,
	    sizeof(*cfg->origins) * (size_t)(cfg->norigins + 1));
	cfg->origins[cfg->norigins++] = (struct config_origin){
		xstrdup(key), xstrdup(where) };
}

int
config_farm_set(struct config *cfg, const char *key, const char *v,
		const char *where, char *err, size_t errlen)
{
	struct { const char *k; int *p; long lo, hi; } ints[] = {
		{ "workers", &cfg->workers, 0, 1024 },
		{ "batch_size", &cfg->batch_size, 0, 1000000000 },
		{ "fetch_size", &cfg->fetch_size, 1, 100000 },
		{ "job_timeout", &cfg->job_timeout, 1, 86400 * 30 },
		{ "heartbeat_timeout", &cfg->heartbeat_timeout, 1, 86400 },
		{ "max_attempts", &cfg->max_attempts, 1, 1000 },
		{ "max_jobs_per_worker", &cfg->max_jobs_per_worker, 0, 1000000000 },
		{ "grace", &cfg->grace, 0, 86400 },
		{ "check_interval", &cfg->check_interval, 1, 86400 },
		{ "host_timeout", &cfg->host_timeout, 1, 24L * 3600 },
		{ "busy_timeout", &cfg->busy_timeout_ms, 1, MS_PER_H },
		{ "retry_delay_ms", &cfg->retry_delay_ms, 1, 24L * MS_PER_H },
		{ "retry_max_delay_ms", &cfg->retry_max_delay_ms, 1,
		  24L * MS_PER_H },
	};
	struct { const char *k; bool *p; } bools[] = {
		{ "durable", &cfg->durable },
		{ "watch", &cfg->watch },
		{ "follow_symlinks", &cfg->follow_symlinks },
	};
	struct { const char *k; char **p; } strs[] = {
		{ "output", &cfg->output },
		{ "db", &cfg->db },
		{ "log_file", &cfg->log_file },
	};
	size_t i;

	for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		if (strcmp(key, ints[i].k) != 0)
			continue;
		if (parse_int(v, ints[i].lo, ints[i].hi, ints[i].p) < 0) {
			snprintf(err, errlen, "%s must be a whole number from %ld "
			    "to %ld, not \"%s\"", key, ints[i].lo, ints[i].hi, v);
			return -1;
		}
		goto ok;
	}
	for (i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		if (strcmp(key, bools[i].k) != 0)
			continue;
		if (parse_bool(v, bools[i].p) < 0) {
			snprintf(err, errlen, "%s must be yes or no, not \"%s\"",
			    key, v);
			return -1;
		}
		goto ok;
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		if (strcmp(key, strs[i].k) != 0)
			continue;
		if (v[0] == '\0') {
			snprintf(err, errlen, "%s must not be empty", key);
			return -1;
		}
		set_str(strs[i].p, v);
		goto ok;
	}
	if (strcmp(key, "log_level") == 0) {
		if (log_level_parse(v, &cfg->log_level) < 0) {
			snprintf(err, errlen, "log_level must be debug, info, "
			    "warn or error, not \"%s\"", v);
			return -1;
		}
		goto ok;
	}
	snprintf(err, errlen, "unknown key \"%s\" in [farm]", key);
	return -2;
ok:
	config_origin_set(cfg, key, where);
	return 0;
}

/* A number a provider section holds: finite, whole where it must be, in
 * range.  0, or -1 with a message. */
static int
config_num_check(const char *key, const char *v, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof(config_nums) / sizeof(config_nums[0]); i++) {
		const struct config_num *n = &config_nums[i];
		char *end;
		double d;

		if (strcmp(key, n->key) != 0)
			continue;
		errno = 0;
		d = strtod(v, &end);
		if (end == v || *end != '\0' || errno != 0 || !isfinite(d) ||
		    d < n->lo || d > n->hi || (n->whole && d != floor(d)) ||
		    (n->whole && strpbrk(v, ".eExXpP") != NULL)) {
			if (n->whole)
				snprintf(err, errlen, "%s must be a whole number "
				    "from %.0f to %.0f, not \"%s\"", key, n->lo,
				    n->hi, v);
			else
				snprintf(err, errlen, "%s must be a number above 0 "
				    "and at most %.0f, not \"%s\"", key, n->hi, v);
			return -1;
		}
	}
	return 0;
}

/* `provider = value` in section: a provider the registry has, serving
 * that section's stage.  0, or -1 with a message listing those that do. */
static int
config_provider_check(const char *section, const char *value, char *msg,
		      size_t msglen)
{
	const struct provider_desc *p = provider_find(value);
	bool tr = strcmp(section, "transcribe") == 0;
	int mask = tr ? STAGE_MASK_TRANSCRIBE : STAGE_MASK_TRANSLATE;
	char names[200];

	if (!tr && strcmp(section, "translate") != 0 &&
	    strncmp(section, "translate.", 10) != 0)
		return 0;       /* not a stage section: refused as a key */
	if (p != NULL && (p->stages & mask))
		return 0;
	provider_names(mask, PROVIDER_NAMES_ALL, names, sizeof(names));
	snprintf(msg, msglen, "unknown %s provider \"%s\" (%s)", tr ?
	    "transcription" : "translation", value, names);
	return -1;
}

/* The key lists of section, at most two (the rest NULL): false for a
 * section whose keys are not listed here ([farm], [roots], unknown). */
static bool
config_section_keys(const char *section, const char *const *lists[2])
{
	const struct provider_desc *p = provider_find(section);

	lists[0] = lists[1] = NULL;
	if (strcmp(section, "serve") == 0) {
		lists[0] = config_serve_keys;
	} else if (strcmp(section, "transcribe") == 0) {
		lists[0] = config_stage_keys;
		lists[1] = config_transcribe_keys;
	} else if (strcmp(section, "translate") == 0) {
		lists[0] = config_stage_keys;
		lists[1] = config_translate_keys;
	} else if (strncmp(section, "translate.", 10) == 0) {
		lists[0] = config_stage_keys;
	} else if (p != NULL) {
		provider_key_lists(p, lists);
	} else {
		return false;
	}
	return true;
}

/* Whether section takes key.  [farm] is asked through config_farm_set on
 * a scratch config, so that its keys stay listed in one place. */
static bool
config_section_takes(const char *section, const char *key)
{
	const char *const *lists[2];

	if (strcmp(section, "farm") == 0) {
		struct config scratch;
		char err[200];
		int rc;
		config_defaults(&scratch);
		rc = config_farm_set(&scratch, key, "", "", err, sizeof(err));
		config_free(&scratch);
		return rc != -2;
	}
	if (strcmp(section, "roots") == 0)
		return true;
	if (!config_section_keys(section, lists))
		return false;
	return (lists[0] != NULL && word_in(key, lists[0])) ||
	    (lists[1] != NULL && word_in(key, lists[1]));
}

/* Edit distance of a and b (insertions, deletions, substitutions), for
 * "did you mean"; anything past 63 bytes counts as far. */
static int
config_key_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int row[64];

	if (la >= 64 || lb >= 64)
		return 64;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int up = row[j];
			int best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The separator before item i of n in "a, b or c". */
static const char *
config_list_sep(int i, int n)
{
	return i == 0 ? "" : i == n - 1 ? " or " : ", ";
}

/* Append to msg[cap] the sections other than section that take key, as
 * "[farm] key" or "[a] key, [b] key or [c] key"; how many.  [roots] takes
 * any name, so it is never one of them. */
static int
config_key_elsewhere(const char *section, const char *key, char *msg,
		     size_t cap)
{
	const char *found[32];
	int n = 0, nfixed = 0;

	while (config_sections[nfixed] != NULL)
		nfixed++;
	for (int i = 0; i < nfixed + provider_count() && n < 32; i++) {
		const char *s = i < nfixed ? config_sections[i] :
		    provider_at(i - nfixed)->name;
		if (strcmp(s, section) != 0 && strcmp(s, "roots") != 0 &&
		    config_section_takes(s, key))
			found[n++] = s;
	}
	for (int i = 0; i < n; i++) {
		size_t len = strlen(msg);
		snprintf(msg + len, cap - len, "%s[%s] %.64s",
		    config_list_sep(i, n), found[i], key);
	}
	return n;
}

/* section (a known one) does not take key: msg[cap] says so, with a hint
 * that puts the fix one look away: the section(s) the key belongs in,
 * else the section's own key it is a typo of, else the keys it takes
 * ([farm]'s are not listed: config_farm_set owns them). */
static void
config_key_unknown(const char *section, const char *key, char *msg,
		   size_t cap)
{
	const char *const *lists[2];
	const char *keys[64], *near = NULL;
	int n = 0, best = 3;    /* at most 2 edits, and a third of the key */
	size_t len;

	snprintf(msg, cap, "unknown key \"%.64s\" in [%.40s]", key, section);
	len = strlen(msg);
	snprintf(msg + len, cap - len, "; did you mean ");
	if (config_key_elsewhere(section, key, msg, cap) > 0) {
		len = strlen(msg);
		snprintf(msg + len, cap - len, "?");
		return;
	}
	msg[len] = '\0';
	if (!config_section_keys(section, lists))
		return;
	for (int l = 0; l < 2; l++)
		for (int i = 0; lists[l] != NULL && lists[l][i] != NULL && n < 64;
		    i++)
			keys[n++] = lists[l][i];
	for (int i = 0; i < n; i++) {
		int d = config_key_distance(key, keys[i]);
		if (d < best && (size_t)d * 3 <= strlen(key)) {
			best = d;
			near = keys[i];
		}
	}
	if (near != NULL) {
		snprintf(msg + len, cap - len, "; did you mean %s?", near);
		return;
	}
	snprintf(msg + len, cap - len, " (it takes %s", n == 0 ? "no keys" : "");
	for (int i = 0; i < n; i++) {
		len = strlen(msg);
		snprintf(msg + len, cap - len, "%s%s", config_list_sep(i, n),
		    keys[i]);
	}
	len = strlen(msg);
	snprintf(msg + len, cap - len, ")");
}

/* "key = ..." or "key: ...": what an indented line of INI files that
 * indent their keys looks like, and a value's continuation does not. */
static bool
config_looks_like_key(const char *line)
{
	const char *p = line;

	if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'))
		return false;
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
	    (*p >= '0' && *p <= '9') || *p == '_')
		p++;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '=' || (*p == ':' && (p[1] == ' ' || p[1] == '\t' ||
	    p[1] == '\0'));
}

static const struct config_entry *
config_entry_find(const struct config *cfg, const char *section,
		  const char *key)
{
	for (int i = 0; i < cfg->nentries; i++)
		if (strcmp(cfg->entries[i].section, section) == 0 &&
		    strcmp(cfg->entries[i].key, key) == 0)
			return &cfg->entries[i];
	return NULL;
}

static void
config_entry_free(struct config_entry *e)
{
	free(e->section);
	free(e->key);
	free(e->value);
	free(e->where);
}

static int
config_ini_handler(void *user, const char *section, const char *key,
		   const char *value)
{
	struct config_parse *cp = user;
	struct config *cfg = cp->cfg;
	const struct config_entry *prev;
	char msg[600] = "", *joined = NULL;
	char where[600];
	bool lang_section = strncmp(section, "translate.", 10) == 0;

	/* inih reads on after an error: the first one is the one to report
	 * (the line ini_parse_stream returns), and nothing after it counts */
	if (cp->err[0] != '\0')
		return 0;
	snprintf(where, sizeof(where), "%s:%d", cp->file, cp->line);
	if (cp->too_long) {
		snprintf(msg, sizeof(msg), "line longer than %d bytes (a "
		    "long value goes on over indented lines)", INI_MAX_LINE - 1);
		goto fail;
	}
	if (key == NULL)        /* a bare [section] line */
		return 1;
	if (cp->indented && cfg->nentries > 0 &&
	    strcmp(cfg->entries[cfg->nentries - 1].section, section) == 0 &&
	    strcmp(cfg->entries[cfg->nentries - 1].key, key) == 0) {
		/* a long value goes on over indented lines, joined with a
		 * space, and is checked whole, from its first line */
		struct config_entry *e = &cfg->entries[cfg->nentries - 1];
		size_t n;
		if (config_looks_like_key(value)) {
			/* "    model = x" under [openai] would silently
			 * become part of the value above */
			snprintf(msg, sizeof(msg), "indented key line \"%.64s\": "
			    "a key starts its line (an indented line goes on "
			    "with the value above)", value);
			goto fail;
		}
		/* inih drops a "; comment" from a value's first line only */
		n = strlen(value);
		for (const char *c = strchr(value, ';'); c != NULL;
		    c = strchr(c + 1, ';'))
			if (c > value && (c[-1] == ' ' || c[-1] == '\t')) {
				n = (size_t)(c - value);
				break;
			}
		while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
			n--;
		value = joined = xasprintf("%s%s%.*s", e->value,
		    e->value[0] && n ? " " : "", (int)n, value);
		snprintf(where, sizeof(where), "%s", e->where);
		config_entry_free(e);
		cfg->nentries--;
	} else if ((prev = config_entry_find(cfg, section, key)) != NULL) {
		snprintf(msg, sizeof(msg), "[%.40s] %.64s given twice (first "
		    "at %s)", section, key, prev->where);
		goto fail;
	}
	if (!word_in(section, config_sections) && !lang_section &&
	    provider_find(section) == NULL) {
		snprintf(msg, sizeof(msg), "unknown section [%s]", section);
		goto fail;
	}
	if (strcmp(section, "farm") != 0 && !config_section_takes(section, key)) {
		config_key_unknown(section, key, msg, sizeof(msg));
		goto fail;
	}
	if (!utf8_valid(value)) {
		snprintf(msg, sizeof(msg), "[%s] %s is not valid UTF-8", section,
		    key);
		goto fail;
	}
	if (lang_section) {
		char one[1][CONFIG_LANG_MAX];
		int n = 0;
		if (config_langs_parse(section + 10, one, &n, msg, sizeof(msg)) < 0 ||
		    n != 1) {
			snprintf(msg, sizeof(msg), "bad language in section [%s]", section);
			goto fail;
		}
	}
	if (strcmp(section, "farm") == 0) {
		int rc = config_farm_set(cfg, key, value, where, msg, sizeof(msg));
		size_t len = strlen(msg);
		/* the value's message, or "unknown key": then where it belongs */
		if (rc == -2) {
			snprintf(msg + len, sizeof(msg) - len, "; did you mean ");
			if (config_key_elsewhere(section, key, msg, sizeof(msg)) > 0)
				snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
				    "?");
			else
				msg[len] = '\0';
		}
		if (rc < 0)
			goto fail;
	}
	if (strcmp(section, "serve") == 0 && strcmp(key, "allowed_hosts") == 0) {
		if (config_hosts_check(value, msg, sizeof(msg)) < 0)
			goto fail;
		set_str(&cfg->allowed_hosts, value);
	}
	if (strcmp(section, "serve") == 0 && strcmp(key, "listen") == 0)
		set_str(&cfg->listen, value);
	if (strcmp(key, "provider") == 0 &&
	    config_provider_check(section, value, msg, sizeof(msg)) < 0)
		goto fail;
	if (strcmp(section, "translate") == 0 && strcmp(key, "languages") == 0 &&
	    config_langs_parse(value, cfg->langs, &cfg->nlangs, msg,
	    sizeof(msg)) < 0)
		goto fail;
	if (strcmp(section, "roots") == 0 &&
	    roots_line_check(key, value, msg, sizeof(msg)) < 0)
		goto fail;
	if (strcmp(section, "farm") != 0 && strcmp(section, "roots") != 0) {
		char num[300];
		if (config_num_check(key, value, num, sizeof(num)) < 0) {
			snprintf(msg, sizeof(msg), "[%.40s] %s", section, num);
			goto fail;
		}
	}
	cfg->entries = xrealloc(cfg->entries,
	    sizeof(*cfg->entries) * (size_t)(cfg->nentries + 1));
	cfg->entries[cfg->nentries++] = (struct config_entry){
		xstrdup(section), xstrdup(key), xstrdup(value), xstrdup(where) };
	free(joined);
	return 1;
fail:
	snprintf(cp->err, cp->errlen, "%s: %s", where, msg);
	cp->err_line = cp->line;
	free(joined);
	return 0;
}

/* inih's reader: fgets that counts lines, so that every value knows its
 * line (Debian's inih is built without INI_HANDLER_LINENO).  A line too
 * long for inih's buffer would come back as two, the rest taken for a
 * line of its own (a stray key, or an error on a line the file does not
 * have): it is read whole and handed on as "=", which makes inih call the
 * handler, which reports it.  So inih's line numbers are the file's. */
static char *
config_reader(char *str, int num, void *stream)
{
	struct config_parse *cp = stream;
	char *r = fgets(str, num, cp->fp);
	size_t n;
	int c;

	if (r == NULL)
		return NULL;
	cp->line = cp->next_line++;
	cp->indented = (r[0] == ' ' || r[0] == '\t') &&
	    r[strspn(r, " \t\r\n")] != '\0' &&
	    strchr(";#", r[strspn(r, " \t")]) == NULL;
	n = strlen(r);
	if (n > 0 && r[n - 1] == '\n')
		return r;
	while ((c = getc(cp->fp)) != EOF && c != '\n')
		cp->too_long = true;
	if (cp->too_long && num >= 3)
		snprintf(str, (size_t)num, "=\n");
	return r;
}

int
config_file_read(struct config *cfg, const char *file, char *err,
		 size_t errlen)
{
	struct config_parse cp = { cfg, err, errlen, file, NULL, 1, 1, 0, false,
	    false };
	int rc;

	cp.fp = fopen(file, "re");
	if (cp.fp == NULL) {
		snprintf(err, errlen, "cannot read config %s: %s", file,
		    strerror(errno));
		return -1;
	}
	err[0] = '\0';
	rc = ini_parse_stream(config_reader, &cp, config_ini_handler, &cp);
	fclose(cp.fp);
	if (rc != 0) {
		/* rc is the first bad line: a syntax error there, unless the
		 * handler's error is that line's */
		if (rc > 0 && cp.err_line != rc)
			snprintf(err, errlen, "%s:%d: syntax error", file, rc);
		else if (err[0] == '\0')
			snprintf(err, errlen, "%s: cannot parse", file);
		return -1;
	}
	set_str(&cfg->config_path, file);
	return 0;
}

int
config_reload(struct config *cfg, int argc, char **argv,
	      int (*check)(const struct config *fresh, char *err, size_t errlen))
{
	struct config fresh;
	char err[600] = "";

	if (config_parse(&fresh, argc, argv, err, sizeof(err)) != 0 ||
	    (check != NULL && check(&fresh, err, sizeof(err)) < 0)) {
		log_error("config_reload_failed", "error=%s keeping=old",
		    log_quote(err));
		config_free(&fresh);
		return -1;
	}
	/* the database and the output folder belong to the running farm (its
	 * lock, its workers' files): they change with a restart only */
	if (strcmp(fresh.db, cfg->db) != 0 || strcmp(fresh.output, cfg->output) != 0)
		log_warn("config_reload_partial", "note=db-and-output-change-"
		    "on-restart-only db=%s output=%s", log_quote(cfg->db),
		    log_quote(cfg->output));
	free(fresh.db);
	free(fresh.output);
	fresh.db = xstrdup(cfg->db);
	fresh.output = xstrdup(cfg->output);
	config_free(cfg);
	*cfg = fresh;
	return 0;
}

void
config_free(struct config *cfg)
{
	for (int i = 0; i < cfg->nentries; i++)
		config_entry_free(&cfg->entries[i]);
	free(cfg->entries);
	for (int i = 0; i < cfg->norigins; i++) {
		free(cfg->origins[i].key);
		free(cfg->origins[i].where);
	}
	free(cfg->origins);
	free(cfg->config_path);
	free(cfg->output);
	free(cfg->db);
	free(cfg->log_file);
	free(cfg->file);
	free(cfg->listen);
	free(cfg->migrate_to);
	free(cfg->allowed_hosts);
	free(cfg->args);
	memset(cfg, 0, sizeof(*cfg));
}

const char *
config_get(const struct config *cfg, const char *section, const char *key)
{
	for (int i = cfg->nentries - 1; i >= 0; i--)
		if (strcmp(cfg->entries[i].section, section) == 0 &&
		    strcmp(cfg->entries[i].key, key) == 0)
			return cfg->entries[i].value;
	return NULL;
}

long
config_get_long(const struct config *cfg, const char *section,
		const char *key, long dflt)
{
	const char *v = config_get(cfg, section, key);
	char *end;
	long n;

	if (v == NULL)
		return dflt;
	n = strtol(v, &end, 10);
	return (end == v || *end != '\0') ? dflt : n;
}

double
config_get_double(const struct config *cfg, const char *section,
		  const char *key, double dflt)
{
	const char *v = config_get(cfg, section, key);
	char *end;
	double d;

	if (v == NULL)
		return dflt;
	d = strtod(v, &end);
	return (end == v || *end != '\0') ? dflt : d;
}

const char *
config_stage_get(const struct config *cfg, int stage, const char *lang,
		 const char *key)
{
	const char *v = NULL;

	if (stage == STAGE_TRANSCRIBE)
		return config_get(cfg, "transcribe", key);
	if (lang != NULL && lang[0] != '\0') {
		char sec[CONFIG_LANG_MAX + 16];
		snprintf(sec, sizeof(sec), "translate.%s", lang);
		v = config_get(cfg, sec, key);
	}
	return v != NULL ? v : config_get(cfg, "translate", key);
}

const char *
config_provider(const struct config *cfg, int stage, const char *lang)
{
	return config_stage_get(cfg, stage, lang, "provider");
}

const char *
config_where(const struct config *cfg, const char *section, const char *key)
{
	if (strcmp(section, "farm") == 0)
		for (int i = 0; i < cfg->norigins; i++)
			if (strcmp(cfg->origins[i].key, key) == 0)
				return cfg->origins[i].where;
	for (int i = cfg->nentries - 1; i >= 0; i--)
		if (strcmp(cfg->entries[i].section, section) == 0 &&
		    strcmp(cfg->entries[i].key, key) == 0)
			return cfg->entries[i].where;
	return NULL;
}

bool
config_has_lang(const struct config *cfg, const char *lang)
{
	for (int i = 0; i < cfg->nlangs; i++)
		if (strcmp(cfg->langs[i], lang) == 0)
			return true;
	return false;
}

bool
config_stage_lang(const struct config *cfg, int i, int *stage,
		  const char **lang)
{
	if (i < 0 || i > cfg->nlangs)
		return false;
	*stage = i == 0 ? STAGE_TRANSCRIBE : STAGE_TRANSLATE;
	*lang = i == 0 ? "" : cfg->langs[i - 1];
	return true;
}

bool
config_wants(const struct config *cfg, int stage, const char *lang)
{
	if (!(cfg->stage_mask & (1 << stage)))
		return false;
	if (stage == STAGE_TRANSCRIBE || cfg->nrun_langs == 0)
		return true;
	for (int i = 0; i < cfg->nrun_langs; i++)
		if (strcmp(cfg->run_langs[i], lang) == 0)
			return true;
	return false;
}
