/*
 * failsync.c - fault injection for the bats tests, loaded with LD_PRELOAD
 * into the daemon: fdatasync(2) and fsync(2) fail with EIO while the file
 * named by $FAILSYNC_TRIGGER exists (as after a disk error; this kernel
 * may have no device-mapper error target to make a real one).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failsync_armed(void)
{
	const char *t = getenv("FAILSYNC_TRIGGER");

	return t && *t && access(t, F_OK) == 0;
}

int fdatasync(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");

	if (failsync_armed() || !real) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

int fsync(int fd)
{
	int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");

	if (failsync_armed() || !real) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}
