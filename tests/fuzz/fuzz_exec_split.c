/*
 * fuzz_exec_split.c - the exec provider's command splitting (quotes,
 * backslashes, {input} and {lang} substitution): NULL or a well-formed
 * NULL-terminated argv, nothing else.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "worker_provider.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *cmd = malloc(size + 1), **argv;

	if (cmd == NULL)
		return 0;
	memcpy(cmd, data, size);
	cmd[size] = '\0';
	argv = worker_exec_split(cmd, "/media/a b/'x\".mp3", "de");
	for (int i = 0; argv != NULL && argv[i] != NULL; i++)
		(void)strlen(argv[i]);
	worker_exec_free(argv);
	free(cmd);
	return 0;
}
