/*
 * common_provider.c - the provider registry: the list of built-in
 * providers (one word each; the descriptor itself is in the provider's own
 * file under worker/), lookups by index and by name, the keys a
 * provider's section takes, the name lists that error messages quote, and
 * the retry policy after a failed attempt that the master and the workers
 * share.
 *
 * Adding a provider: write worker/worker_NAME.c defining
 * `const struct provider_desc provider_NAME`, and add NAME to
 * PROVIDER_LIST (common_provider.h).  The order is the registry's index order (what JOB frames
 * carry); it only has to be the same in the master and its workers, which
 * are one binary.
 */
#include "common_provider.h"
#include "ipc_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct provider_desc *const provider_table[] = {
#define PROVIDER_ROW_(n) &provider_##n,
	PROVIDER_LIST(PROVIDER_ROW_)
#undef PROVIDER_ROW_
};
#define PROVIDER_N ((int)(sizeof(provider_table) / sizeof(provider_table[0])))

/* the index travels in JOB, DONE, TOKEN_REQ and PROVIDER_EVENT frames */
_Static_assert(PROVIDER_N <= IPC_PROVIDER_MAX,
	       "more providers than a frame's provider field allows");

const char *const provider_http_keys[] = {
	"base_url", "api_key_file", "max_concurrency", "rate", "quota_pause",
	"connect_timeout", "low_speed_time", "max_response_bytes", NULL
};

void
provider_key_lists(const struct provider_desc *p, const char *const *lists[2])
{
	lists[0] = p->limited ? provider_http_keys : NULL;
	lists[1] = p->keys;
}

int
provider_count(void)
{
	return PROVIDER_N;
}

const struct provider_desc *
provider_at(int i)
{
	return i >= 0 && i < PROVIDER_N ? provider_table[i] : NULL;
}

int
provider_index(const char *name)
{
	for (int i = 0; name != NULL && i < PROVIDER_N; i++)
		if (strcmp(provider_table[i]->name, name) == 0)
			return i;
	return -1;
}

const struct provider_desc *
provider_find(const char *name)
{
	return provider_at(provider_index(name));
}

/* Whether provider p belongs in a provider_names() list. */
static bool
provider_listed(const struct provider_desc *p, int stage_mask, int which)
{
	if (!(p->stages & stage_mask))
		return false;
	return which == PROVIDER_NAMES_ALL ||
	    (which == PROVIDER_NAMES_FAKE) == p->fake;
}

void
provider_names(int stage_mask, int which, char *buf, size_t cap)
{
	int n = 0, k = 0;
	size_t len;

	if (cap == 0)
		return;
	buf[0] = '\0';
	for (int i = 0; i < PROVIDER_N; i++)
		n += provider_listed(provider_table[i], stage_mask, which);
	for (int i = 0; i < PROVIDER_N; i++) {
		if (!provider_listed(provider_table[i], stage_mask, which))
			continue;
		len = strlen(buf);
		snprintf(buf + len, cap - len, "%s%s", k == 0 ? "" : k == n - 1 ?
		    " or " : ", ", provider_table[i]->name);
		k++;
	}
}

bool
provider_http_in(const int *codes, long status)
{
	for (int i = 0; i < PROVIDER_HTTP_CODES_MAX && codes[i] != 0; i++)
		if (codes[i] == status)
			return true;
	return false;
}

bool
provider_code_in(const char *const *codes, const char *code)
{
	for (int i = 0; code != NULL && i < PROVIDER_HTTP_CODES_MAX &&
	    codes[i] != NULL; i++)
		if (strcmp(codes[i], code) == 0)
			return true;
	return false;
}

int64_t
provider_retry_at(const struct config *cfg, int attempts, int64_t retry_after_ms)
{
	int64_t base = cfg->retry_delay_ms, cap = cfg->retry_max_delay_ms;
	int64_t delay;

	if (retry_after_ms > 0) {
		delay = retry_after_ms < cap ? retry_after_ms : cap;
	} else {
		delay = backoff_jitter(backoff_delay(base, cap, attempts - 1));
	}
	return time_wall_ms() + delay;
}
