/*
 * replay.c - a main() for the fuzz targets when built without libFuzzer:
 * runs every file named on the command line (or found in a named
 * directory) through LLVMFuzzerTestOneInput once.  make check uses it to
 * keep every input that once crashed a target as a regression test.  Each
 * input is one TAP line ("ok - path"); tests/fuzz/regress.sh adds the plan.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;

	if (!f) {
		printf("not ok - %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)len + 1)) ||
	    fread(buf, 1, (size_t)len, f) != (size_t)len) {
		printf("not ok - %s: cannot read\n", path);
		fclose(f);
		free(buf);
		return 1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	free(buf);
	printf("ok - %s\n", path);
	return 0;
}

static int run_dir(const char *dir, int *count)
{
	struct dirent *d;
	DIR *dp = opendir(dir);
	int fails = 0;

	if (!dp) {
		printf("not ok - %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((d = readdir(dp))) {
		char path[4096];

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		fails += run_file(path);
		(*count)++;
	}
	closedir(dp);
	return fails;
}

int main(int argc, char **argv)
{
	int fails = 0, count = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			fails += run_dir(argv[i], &count);
		} else {
			fails += run_file(argv[i]);
			count++;
		}
	}
	printf("# %d passed, %d failed\n", count - fails, fails);
	return fails ? 1 : 0;
}
