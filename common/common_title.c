/*
 * common_title.c - process titles that `ps -o args` and `top -c` show:
 * "mpfarm: master DB", "mpfarm: worker 3 idle", "mpfarm: worker 3
 * transcribe FILE", as PostgreSQL and gunicorn name their processes.
 *
 * Linux has no setproctitle(3): /proc/PID/cmdline is read straight from
 * the memory that held the original argv strings (and, once that area's
 * last byte is no longer a NUL, from the environment strings that follow
 * it).  So, as PostgreSQL's ps_status.c does on Linux, title_init() moves
 * argv's strings and the environment to copies on the heap and keeps the
 * contiguous area they occupied for the title; title_set() writes into it
 * and pads with NULs.  The short name (comm, what `top` and `pgrep -x`
 * see, 15 bytes) is set with prctl(PR_SET_NAME).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char  *title_area;       /* start of the old argv strings, or NULL */
static char **title_argv;       /* the copy of argv main() goes on with */
static char **title_env;        /* the environment's copy, kept reachable */
static size_t title_size;       /* bytes up to the last contiguous string */

/* End (one past the NUL) of the strings in `v` that lie back to back
 * from `end`; strings elsewhere (moved by a putenv) end the area. */
static char *
title_area_end(char **v, int n, char *end)
{
	for (int i = 0; i < n && v[i] != NULL; i++) {
		if (v[i] != end)
			break;
		end = v[i] + strlen(v[i]) + 1;
	}
	return end;
}

char **
title_init(int argc, char **argv)
{
	char *end;
	int nenv = 0;

	if (argc <= 0 || argv == NULL || argv[0] == NULL)
		return argv;
	end = title_area_end(argv, argc, argv[0]);
	if (end != argv[argc - 1] + strlen(argv[argc - 1]) + 1)
		goto copy_args;         /* argv not contiguous: no title area */
	while (environ != NULL && environ[nenv] != NULL)
		nenv++;
	end = title_area_end(environ, nenv, end);
	/* the environment moves to the heap: setenv and exec still work */
	if (nenv > 0) {
		title_env = xcalloc((size_t)nenv + 1, sizeof(*title_env));
		for (int i = 0; i < nenv; i++)
			title_env[i] = xstrdup(environ[i]);
		environ = title_env;
	}
	title_area = argv[0];
	title_size = (size_t)(end - argv[0]);
copy_args:
	/* the command line stays readable (HUP parses it again) */
	title_argv = xcalloc((size_t)argc + 1, sizeof(*title_argv));
	for (int i = 0; i < argc; i++)
		title_argv[i] = xstrdup(argv[i]);
	return title_argv;
}

void
title_set(const char *fmt, ...)
{
	char title[512], comm[16];
	const char *role;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(title, sizeof(title), fmt, ap);
	va_end(ap);
	/* comm: "mpfarm-" and the role word, "mpfarm-worker" */
	role = strncmp(title, "mpfarm: ", 8) == 0 ? title + 8 : title;
	n = strcspn(role, " ");
	snprintf(comm, sizeof(comm), "mpfarm-%.*s", (int)n, role);
	(void)prctl(PR_SET_NAME, comm, 0, 0, 0);
	if (title_area == NULL || title_size < 2)
		return;
	n = strlen(title);
	if (n > title_size - 1)
		n = title_size - 1;
	memcpy(title_area, title, n);
	/* NUL padding: nothing of the old command line or environment
	 * (which may hold an API key) shows through */
	memset(title_area + n, 0, title_size - n);
}
