/*
 * fuzz_config.c - the config file parser (config_load on the bytes as
 * mpfarm.conf, read through a memfd so no file is left behind).  Errors
 * are fine; crashes, leaks and reads past the input are not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"
#include "common_config.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool quiet;
	struct config cfg;
	char path[64];
	char *argv[5];
	int fd = memfd_create("mpfarm-fuzz.conf", MFD_CLOEXEC);

	if (!quiet) {       /* one message per bad input would flood the run */
		log_set_level(LOG_ERROR);
		quiet = true;
	}
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/dev/fd/%d", fd);
	argv[0] = (char *)"mpfarm";
	argv[1] = (char *)"--config";
	argv[2] = path;
	argv[3] = (char *)"status";
	argv[4] = NULL;
	memset(&cfg, 0, sizeof(cfg));
	config_load(&cfg, 4, argv);
	config_free(&cfg);
	close(fd);
	return 0;
}
