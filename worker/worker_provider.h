/*
 * worker_provider.h - the small interface every engine implements: given a
 * media file (transcribe) or a transcript (translate), produce the output
 * files' contents or a classified error.  Providers never touch the store or
 * the final output paths; the worker writes outputs whole and records the
 * outcome.  Adding a provider means adding one file and one table entry.
 */
#ifndef MPFARM_WORKER_PROVIDER_H
#define MPFARM_WORKER_PROVIDER_H

#include "../common/common.h"
#include "../common/common_config.h"
#include "../common/common_store.h"

#define PROVIDER_OUT_MAX 4

struct provider_req {
	const struct config *cfg;
	int         stage;          /* STAGE_TRANSCRIBE / STAGE_TRANSLATE */
	const char *lang;           /* target language ("" for transcribe) */
	const char *input_path;     /* transcribe: the media file */
	const char *text;           /* translate: the transcript */
	size_t      text_len;
	int64_t     job_id;
};

/* One output file: suffix appended to the output name (".txt", ".json",
 * ".srt", ".vtt") and its malloc'd bytes. */
struct provider_out {
	const char *suffix;
	char       *data;
	size_t      len;
};

struct provider_result {
	struct provider_out out[PROVIDER_OUT_MAX];
	int     nout;
	/* on error: */
	enum job_outcome outcome;   /* OUT_COMPLETED on success */
	int     http_status;
	int     exit_code;          /* exec: the command's exit status, or -1 */
	int     signal;
	int64_t retry_after_ms;     /* from Retry-After (0 = use backoff) */
	char    msg[512];           /* provider's own message, key-free */
};

struct provider_ops {
	const char *name;
	/* the environment variable that holds its API key, NULL if none;
	 * exec engines never see these */
	const char *key_env;
	/* Check the config and keys before any worker starts (master side):
	 * returns 0, or -1 with a message in err (exit 2). May be NULL. */
	int (*check)(const struct config *cfg, int stage, const char *lang,
		     char *err, size_t errlen);
	/* Run one job.  Returns 0 when res->outcome == OUT_COMPLETED, else -1
	 * with res filled.  Must call worker_heartbeat() at least every few
	 * seconds while waiting (curl progress callback, poll timeout). */
	int (*run)(const struct provider_req *req, struct provider_result *res);
};

/* The provider called name, NULL for an unknown name or NULL. */
const struct provider_ops *provider_find(const char *name);
/* The i-th built-in provider, NULL past the last: for listings. */
const struct provider_ops *provider_at(int i);
void provider_result_add(struct provider_result *res, const char *suffix,
			 char *data, size_t len);   /* takes ownership */
void provider_result_free(struct provider_result *res);
void provider_result_error(struct provider_result *res, enum job_outcome o,
			   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Worker-side services providers may call (worker_main.c). */
void worker_heartbeat(void);                /* rate-limited to ~1/s */
/* Ask the master for a farm-wide request token for `provider` (blocks);
 * 0 = granted, -1 = channel broken or farm stopping. */
int  worker_token_acquire(const char *provider);
/* Tell the master about a provider-wide condition (429 pause, quota). */
void worker_provider_event(const char *provider, int kind, int64_t ms,
			   int http, const char *text);

/* The built-in providers. */
extern const struct provider_ops provider_noop;
extern const struct provider_ops provider_exec;
extern const struct provider_ops provider_elevenlabs;
extern const struct provider_ops provider_openai;
extern const struct provider_ops provider_deepl;

/* exec's word splitting, exposed for its unit test: NULL-terminated,
 * malloc'd; NULL on unbalanced quotes. */
char **worker_exec_split(const char *cmd, const char *input, const char *lang);
void   worker_exec_free(char **argv);

#endif
