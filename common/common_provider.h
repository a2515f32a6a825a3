/*
 * common_provider.h - the provider descriptor: the one place a provider is
 * named and described (its name, the stages it serves, whether the farm's
 * limits apply, the keys its config section takes, its key's environment
 * variable, the HTTP status codes that mean something special to it, its
 * config check and its run function), and the registry of all of them.
 * Config validation, the master's limits, error classification and the
 * worker read it; the master sends a provider's index in the registry to
 * the worker, never a name.
 *
 * The type and the registry live in common/ because config validation
 * (common_config.c) needs the names, stages and keys, the master the
 * limits and the worker the run function; each descriptor is defined in
 * its provider's own file under worker/, which includes this header
 * (never the reverse), and plugs in with one word in PROVIDER_LIST below.
 */
#ifndef MPFARM_COMMON_PROVIDER_H
#define MPFARM_COMMON_PROVIDER_H

#include "common.h"
#include "common_config.h"

struct provider_req;            /* worker_provider.h */
struct provider_result;

#define PROVIDER_HTTP_CODES_MAX 4

struct provider_desc {
	/* its name in `provider =` and its config section [name] */
	const char *name;
	int     stages;             /* STAGE_MASK_* it serves */
	/* whether the farm-wide limits apply ([name] max_concurrency, rate,
	 * quota_pause; 429 pauses; a refused key disabling it): the master
	 * then meters its requests with tokens.  Every limited provider is an
	 * HTTP service, so its section also takes provider_http_keys. */
	bool    limited;
	/* The keys its own section [name] takes (NULL-terminated; NULL for
	 * none) besides provider_http_keys: what its check and run functions
	 * read there.  Any other key in [name] is a config error, so that a
	 * typo never silently leaves a default in force. */
	const char *const *keys;
	/* it does no real work (dry runs, tests, benchmarks): listed as a
	 * choice, never suggested as the fix for missing work */
	bool    fake;
	/* the environment variable that holds its API key, NULL if none;
	 * exec engines never see any of these */
	const char *key_env;
	/* HTTP status codes that mean, besides 429, "too many requests" and,
	 * besides 401 and 403, "key or quota refused" (0-terminated) */
	int     http_rate_limited[PROVIDER_HTTP_CODES_MAX];
	int     http_refused[PROVIDER_HTTP_CODES_MAX];
	/* error codes in its answers' bodies that mean "quota gone" (retrying
	 * cannot help, whatever the status) and "too many concurrent
	 * requests" (NULL-terminated) */
	const char *code_refused[PROVIDER_HTTP_CODES_MAX];
	const char *code_concurrency[PROVIDER_HTTP_CODES_MAX];
	/* Check the config and keys for a stage before any worker starts
	 * (master side): 0, or -1 with a message in err.  May be NULL. */
	int   (*check)(const struct config *cfg, int stage, const char *lang,
		       char *err, size_t errlen);
	/* Run one job (worker side).  Returns 0 when the result's outcome is
	 * OUT_COMPLETED, else -1 with the result filled.  Must call
	 * worker_heartbeat() at least every few seconds while waiting. */
	int   (*run)(const struct provider_req *req, struct provider_result *res);
};

/* The built-in providers, in registry order (the index a JOB frame
 * carries).  Each NAME is defined as provider_NAME in worker/worker_NAME.c;
 * a new provider is that file and one word here. */
#define PROVIDER_LIST(X) \
	X(elevenlabs) \
	X(openai) \
	X(deepl) \
	X(exec) \
	X(noop)

#define PROVIDER_EXTERN_(n) extern const struct provider_desc provider_##n;
PROVIDER_LIST(PROVIDER_EXTERN_)
#undef PROVIDER_EXTERN_

/* The keys the section of every limited provider takes besides its own
 * (NULL-terminated): its endpoint, key file and transfer bounds, which
 * worker_http_conf.c reads for each HTTP provider, and the farm's limits
 * on it, which master_provider.c reads.  One list, so that a key the HTTP
 * layer learns is accepted for every such provider at once. */
extern const char *const provider_http_keys[];
/* The keys [p->name] takes, as two NULL-terminated lists, either of
 * them NULL: provider_http_keys when p is limited, and p->keys. */
void provider_key_lists(const struct provider_desc *p,
			const char *const *lists[2]);

/* How many providers are built in (the registry's indexes are 0 to
 * provider_count() - 1, stable for the life of the binary). */
int  provider_count(void);
/* The provider at index i, NULL outside the registry. */
const struct provider_desc *provider_at(int i);
/* The provider called name, NULL for an unknown name or NULL. */
const struct provider_desc *provider_find(const char *name);
/* The index of the provider called name, -1 for an unknown name or NULL. */
int  provider_index(const char *name);
/* The providers serving any stage of stage_mask, for a message:
 * "elevenlabs, openai, exec or noop", into buf[cap] (always
 * NUL-terminated, "" when none); which says whether all of them, only
 * the real ones or only the fake ones. */
#define PROVIDER_NAMES_ALL  0
#define PROVIDER_NAMES_REAL 1
#define PROVIDER_NAMES_FAKE 2
void provider_names(int stage_mask, int which, char *buf, size_t cap);
/* True when status is in a 0-terminated list of HTTP codes. */
bool provider_http_in(const int *codes, long status);
/* True when code (may be NULL) is in a NULL-terminated list of error
 * codes. */
bool provider_code_in(const char *const *codes, const char *code);

/* When a failed attempt may run again (wall ms): after what the provider
 * asked (Retry-After, capped at retry_max_delay_ms), else after capped
 * exponential backoff from retry_delay_ms with full jitter, so that a
 * burst of failures does not come back as a burst.  Master and worker
 * share this policy.  Never fails. */
int64_t provider_retry_at(const struct config *cfg, int attempts,
			  int64_t retry_after_ms);

#endif
