/*
 * replay_main.c - the main() that turns a libFuzzer target into a plain
 * regression test: every file named on the command line, or found in a
 * folder named there, is fed once to LLVMFuzzerTestOneInput.  Built with
 * the normal compiler (and again under ASan+UBSan) so `make check` replays
 * the saved corpus, crashes and hostile inputs included, without clang.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
	FILE *fp = fopen(path, "rbe");
	uint8_t *data = NULL;
	size_t len = 0, cap = 0, n;

	if (fp == NULL) {
		perror(path);
		return -1;
	}
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			data = realloc(data, cap);
			if (data == NULL) {
				fclose(fp);
				return -1;
			}
		}
		n = fread(data + len, 1, cap - len, fp);
		len += n;
	} while (n > 0);
	fclose(fp);
	/* the copy is exactly len bytes, so ASan sees any read past it */
	uint8_t *exact = malloc(len ? len : 1);
	if (exact == NULL) {
		free(data);
		return -1;
	}
	memcpy(exact, data, len);
	free(data);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	return 0;
}

static int
replay_path(const char *path, int *count)
{
	struct stat st;
	struct dirent **names;
	int n, rc = 0;

	if (stat(path, &st) < 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return replay_file(path);
	}
	n = scandir(path, &names, NULL, alphasort);
	if (n < 0) {
		perror(path);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (names[i]->d_name[0] != '.') {
			size_t l = strlen(path) + strlen(names[i]->d_name) + 2;
			char *p = malloc(l);
			if (p == NULL)
				rc = -1;
			else {
				snprintf(p, l, "%s/%s", path, names[i]->d_name);
				if (replay_path(p, count) < 0)
					rc = -1;
				free(p);
			}
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	int count = 0, rc = 0;

	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &count) < 0)
			rc = 1;
	printf("%s: %d inputs replayed%s\n", argv[0], count,
	       rc ? ", some unreadable" : "");
	return rc;
}
