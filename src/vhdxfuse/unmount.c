/*
 * unmount.c - "vhdxfuse -u MOUNTPOINT": an unmount that returns only once
 * the daemon has flushed, closed and unlocked the image.
 *
 * umount(2) (and so umount(8) alone and fusermount3 -u) returns as soon as
 * the kernel has detached the mount; the daemon learns of it afterwards and
 * only then writes its last metadata, clears its log and drops its lock.
 * So: find the daemon of the mount (its runtime record, else the process
 * that holds the image's lock), hold a pidfd on it, unmount the usual way
 * (umount -i as root, which keeps utab right; fusermount3 -u otherwise),
 * then wait for the daemon to exit.  The installed umount.vhdxfuse helper
 * runs this, so that umount(8) waits too.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vhdxfuse.h"

#define VF_UNMOUNT_WAIT_MS 60000

extern char **environ;

struct vf_unmount {
	const char *arg;
	char path[PATH_MAX];
	int lazy, force;
	unsigned int wait_ms;
};

static void vf_unmount_usage(void)
{
	fprintf(stderr, "usage: vhdxfuse -u [-z] [-f] [-w SECONDS] MOUNTPOINT\n"
			"Try 'vhdxfuse --help' for more information.\n");
}

static int vf_unmount_parse(int argc, char *argv[], struct vf_unmount *u)
{
	u->wait_ms = VF_UNMOUNT_WAIT_MS;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-u") || !strcmp(a, "--unmount"))
			continue;
		if (!strcmp(a, "-z") || !strcmp(a, "--lazy")) {
			u->lazy = 1;
		} else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
			u->force = 1;
		} else if (!strcmp(a, "-w") && i + 1 < argc) {
			if (vf_opt_lock_wait(argv[++i], &u->wait_ms))
				return -1;
		} else if (!strcmp(a, "--") && i + 2 == argc) {
			u->arg = argv[++i];
		} else if (a[0] == '-' || u->arg) {
			vf_log(LOG_ERR, "unexpected argument '%s'", a);
			return -1;
		} else {
			u->arg = a;
		}
	}
	if (!u->arg) {
		vf_log(LOG_ERR, "missing MOUNTPOINT");
		return -1;
	}
	return 0;
}

/*
 * The absolute path of the mount point.  A mount whose daemon died gives
 * ENOTCONN on stat, so the argument is then only made absolute.
 */
static int vf_unmount_path(struct vf_unmount *u)
{
	char cwd[PATH_MAX];

	if (realpath(u->arg, u->path))
		return 0;
	if (u->arg[0] == '/') {
		snprintf(u->path, sizeof(u->path), "%s", u->arg);
		return 0;
	}
	if (!getcwd(cwd, sizeof(cwd)) ||
	    snprintf(u->path, sizeof(u->path), "%s/%s", cwd, u->arg) >=
		(int)sizeof(u->path)) {
		vf_log(LOG_ERR, "%s: %s", u->arg, strerror(errno));
		return -1;
	}
	return 0;
}

/* The daemon's PID: from its record, else the holder of the image's lock. */
static long vf_unmount_daemon(const char *mountpoint, const char *source)
{
	struct vhdx_lock_holder h;
	int fd;

	if (vhdx_daemon_find(mountpoint, &h) == 1)
		return h.pid;
	fd = open(source, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return 0;
	if (vhdx_lock_holder_find(fd, &h) != 1 || strcmp(h.prog, "vhdxfuse"))
		h.pid = 0;
	close(fd);
	return h.pid;
}

/* Run argv (looked up in PATH); its exit status, 127 if it cannot run. */
static int vf_run(char *const argv[])
{
	pid_t pid;
	int st;

	if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ))
		return 127;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 127;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* umount -i (no helper: that is us) as root, fusermount3 -u otherwise. */
static int vf_do_unmount(const struct vf_unmount *u)
{
	char *argv[8];
	int n = 0;

	if (geteuid() == 0) {
		argv[n++] = "umount";
		argv[n++] = "-i";
		if (u->lazy)
			argv[n++] = "-l";
		if (u->force)
			argv[n++] = "-f";
	} else {
		argv[n++] = "fusermount3";
		argv[n++] = u->lazy ? "-uz" : "-u";
	}
	argv[n++] = "--";
	argv[n++] = (char *)u->path;
	argv[n] = NULL;
	return vf_run(argv);
}

static int vf_pidfd_open(long pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static uint64_t vf_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait up to ms for the daemon to exit: 0, or -1 on timeout. */
static int vf_wait_daemon(long pid, int pidfd, unsigned int ms)
{
	uint64_t deadline = vf_now_ms() + ms;

	for (;;) {
		uint64_t now = vf_now_ms();
		struct pollfd pfd = {.fd = pidfd, .events = POLLIN};

		if (pidfd < 0 ? vhdx_pid_exited(pid) : 0)
			return 0;
		if (now >= deadline)
			return -1;
		if (pidfd < 0) {
			usleep(10000);
			continue;
		}
		if (poll(&pfd, 1, (int)(deadline - now)) > 0)
			return 0;
	}
}

int vf_unmount_main(int argc, char *argv[])
{
	struct vf_unmount u;
	char type[256], source[PATH_MAX];
	long pid;
	int pidfd = -1, ret;

	memset(&u, 0, sizeof(u));
	if (vf_unmount_parse(argc, argv, &u)) {
		vf_unmount_usage();
		return VF_EXIT_USAGE;
	}
	if (vf_unmount_path(&u))
		return VF_EXIT_USAGE;
	if (vhdx_mountinfo_find(u.path, type, sizeof(type), source,
				sizeof(source)) != 1) {
		vf_log(LOG_ERR, "%s: not mounted", u.arg);
		return VF_EXIT_MOUNT;
	}
	if (strcmp(type, "fuse.vhdxfuse")) {
		vf_log(LOG_ERR, "%s: not a vhdxfuse mount (type %s)", u.arg,
		       type);
		return VF_EXIT_MOUNT;
	}
	pid = vf_unmount_daemon(u.path, source);
	if (pid > 0)
		pidfd = vf_pidfd_open(pid);
	ret = vf_do_unmount(&u);
	if (ret) {
		if (pidfd >= 0)
			close(pidfd);
		if (ret == 127)
			vf_log(LOG_ERR, "cannot run %s",
			       geteuid() ? "fusermount3" : "umount");
		return VF_EXIT_MOUNT;
	}
	if (u.lazy)
		return VF_EXIT_OK; /* the daemon ends when the mount is unused */
	if (pid <= 0) {
		vf_log(LOG_WARNING,
		       "%s: unmounted, but its daemon was not found: not "
		       "waiting for it to close %s",
		       u.arg, source);
		return VF_EXIT_OK;
	}
	ret = vf_wait_daemon(pid, pidfd, u.wait_ms);
	if (pidfd >= 0)
		close(pidfd);
	if (ret) {
		vf_log(LOG_ERR,
		       "%s: unmounted, but its daemon (PID %ld) is still "
		       "closing %s after %u s",
		       u.arg, pid, source, u.wait_ms / 1000);
		return VF_EXIT_MOUNT;
	}
	return VF_EXIT_OK;
}
