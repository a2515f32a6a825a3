/*
 * worker_provider.h - the small interface every engine implements: given a
 * media file (transcribe) or a transcript (translate), produce the output
 * files' contents or a classified error.  Providers never touch the store or
 * the final output paths; the worker writes outputs whole and records the
 * outcome.  A provider is described once, by its struct provider_desc
 * (common_provider.h) in its own file; README "Adding a provider" says
 * how to add one.
 */
#ifndef MPFARM_WORKER_PROVIDER_H
#define MPFARM_WORKER_PROVIDER_H

#include "common.h"
#include "common_config.h"
#include "common_provider.h"
#include "common_store.h"

#define PROVIDER_OUT_MAX 4

struct provider_req {
	const struct config *cfg;
	int         stage;          /* STAGE_TRANSCRIBE / STAGE_TRANSLATE */
	const char *lang;           /* target language ("" for transcribe) */
	const char *input_path;     /* transcribe: the media file's name, for
				     * messages and form file names only */
	int         input_fd;       /* transcribe: the media file, opened and
				     * checked (worker_media.h); read it with
				     * pread, never close it.  -1 otherwise */
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

/* Add one output to res (ownership of data passes to res; past
 * PROVIDER_OUT_MAX outputs it is freed and dropped). */
void provider_result_add(struct provider_result *res, const char *suffix,
			 char *data, size_t len);   /* takes ownership */
/* Free every output res holds; res stays usable. */
void provider_result_free(struct provider_result *res);
/* Drop the outputs and record a failure: outcome o and the message. */
void provider_result_error(struct provider_result *res, enum job_outcome o,
			   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Worker-side services providers may call (worker_main.c); they are
 * about the job being run and its provider, as the master's JOB said. */
/* Tell the master the job is alive; rate-limited to about once a second,
 * so call it as often as convenient.  Exits the worker when the channel
 * is gone. */
void worker_heartbeat(void);
/* Ask the master for a farm-wide request token for the job's provider
 * (blocks, heartbeating); 0 = granted, -1 = farm stopping.  Exits the
 * worker when the channel breaks. */
int  worker_token_acquire(void);
/* Tell the master about a condition of the job's provider (enum
 * ipc_prov_event kind; pause_ms the provider asked every worker to wait,
 * 0 = none said; the HTTP status; a key-free text).  Exits the worker
 * when the channel is gone. */
void worker_provider_event(int kind, int64_t pause_ms, int http,
			   const char *text);

/* exec's word splitting, exposed for its unit test: NULL-terminated,
 * malloc'd; NULL on unbalanced quotes. */
char **worker_exec_split(const char *cmd, const char *input, const char *lang);
void   worker_exec_free(char **argv);

#endif
