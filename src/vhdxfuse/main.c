/*
 * main.c - start-up and teardown of vhdxfuse.
 *
 * main() is a sequence of named steps: parse the command line, check the
 * mount point, open, lock and validate the
 * image (all while errors still reach the terminal), mount, detach, serve
 * requests until unmounted, then close the image, which drops the lock.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vhdxfuse.h"

#define VF_BLKSIZE 4096

/*
 * A directory (holds the disk file) or a regular file (is the disk).  The
 * absolute path is kept: libfuse unmounts by path, after the daemon has
 * changed directory to /.
 */
static int vf_check_mountpoint(struct vf_fs *fs, const char *mountpoint)
{
	struct stat st;

	if (stat(mountpoint, &st)) {
		vf_log(LOG_ERR, "%s: %s", mountpoint, strerror(errno));
		return VF_EXIT_MOUNT;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		vf_log(LOG_ERR,
		       "%s: mount point is not a directory or "
		       "a regular file",
		       mountpoint);
		return VF_EXIT_MOUNT;
	}
	fs->root_is_dir = S_ISDIR(st.st_mode);
	fs->mountpoint = realpath(mountpoint, NULL);
	if (!fs->mountpoint) {
		vf_log(LOG_ERR, "%s: %s", mountpoint, strerror(errno));
		return VF_EXIT_MOUNT;
	}
	if (vhdx_mountinfo_find(fs->mountpoint, NULL, 0, NULL, 0) == 1) {
		vf_log(LOG_ERR,
		       "%s: already a mount point (in use); unmount it first",
		       mountpoint);
		return VF_EXIT_MOUNT;
	}
	return 0;
}

/*
 * Open and lock IMAGE through the library (vhdx_file_open): read-only
 * mounts share a read lock; a read-write mount takes an exclusive one, so
 * it never runs beside another mount of the image (or a qemu-img that locks
 * it).  OFD locks belong to the open file description, so the lock
 * survives the daemon's fork.
 */
static int vf_open_image_file(struct vf_fs *fs, const struct vf_options *opts,
			      struct stat *st)
{
	struct vhdx_file_status fst;
	char who[4200];
	int ret;

	ret = vhdx_file_open(fs->image, fs->ro ? 0 : VHDX_FILE_WRITE,
			     opts->lock_wait_ms, &fs->fd, &fst);
	if (ret == -EBUSY) {
		vhdx_lock_holder_describe(&fst.holder, who, sizeof(who));
		vf_log(LOG_ERR, "%s is in use (%s)", fs->image, who);
		return VF_EXIT_MOUNT;
	}
	if (!fs->ro && (ret == -EACCES || ret == -EROFS || ret == -EPERM)) {
		vf_log(LOG_ERR,
		       "%s: cannot open for writing: %s; mount with -o ro "
		       "to read it",
		       fs->image, strerror(-ret));
		return VF_EXIT_MOUNT;
	}
	if (ret) {
		vf_log(LOG_ERR, "%s: %s", fs->image,
		       ret == -EINVAL ? "not a regular file" : strerror(-ret));
		return VF_EXIT_MOUNT;
	}
	if (fst.lock_errno)
		vf_log(LOG_WARNING,
		       "%s: cannot lock (%s); continuing without a lock",
		       fs->image, strerror(fst.lock_errno));
	if (fstat(fs->fd, st)) {
		vf_log(LOG_ERR, "%s: %s", fs->image, strerror(errno));
		return VF_EXIT_MOUNT;
	}
	return 0;
}

static int vf_open_vhdx(struct vf_fs *fs, const struct vf_options *opts)
{
	struct vhdx_open_opts vopts;
	struct vhdx_io io;
	int ret;

	vhdx_io_fd_init(&io, &fs->fd);
	memset(&vopts, 0, sizeof(vopts));
	vopts.flags = fs->ro ? VHDX_OPEN_RDONLY : 0;
	if (opts->sparse)
		vopts.flags |= VHDX_OPEN_SPARSE;
	vopts.msg = vf_log_vhdx;
	vopts.msg_opaque = (void *)fs->image;
	vopts.path = fs->image;
	vopts.parent_path = opts->parent;
	ret = vhdx_open(&fs->img, &io, &vopts);
	if (!ret)
		return 0;
	fs->img = NULL;
	if (!vf_log_vhdx_errors())
		vf_log(LOG_ERR, "%s: cannot open the image: %s", fs->image,
		       strerror(-ret));
	return VF_EXIT_MOUNT;
}

/* What getattr reports (st_blocks is recomputed as blocks are allocated). */
static int vf_fill_attrs(struct vf_fs *fs, const struct vf_options *opts,
			 const struct stat *st)
{
	struct vhdx_info info;

	vhdx_get_info(fs->img, &info);
	fs->size = info.virtual_size;
	fs->alloc_bytes = vf_alloc_bytes(fs->img);
	fs->blksize = VF_BLKSIZE;
	fs->mtime = st->st_mtim;
	fs->uid = opts->uid_set ? opts->uid : getuid();
	fs->gid = opts->gid_set ? opts->gid : getgid();
	fs->file_mode = (fs->ro ? 0444 : 0644) & ~opts->umask;
	fs->dir_mode = (fs->ro ? 0555 : 0755) & ~opts->umask;
	if (opts->filename && !fs->root_is_dir)
		vf_log(LOG_WARNING, "filename= is ignored: the mount point is "
				    "a regular file");
	fs->filename = opts->filename ? strdup(opts->filename)
				      : vf_default_filename(fs->image);
	if (!fs->filename) {
		vf_log(LOG_ERR, "out of memory");
		return VF_EXIT_MOUNT;
	}
	return 0;
}

static int vf_setup(struct vf_fs *fs, const struct vf_options *opts)
{
	struct stat st;
	int ret;

	fs->image = opts->image;
	fs->ro = opts->ro;
	fs->wbc = !opts->ro && !opts->no_wbc;
	ret = vf_check_mountpoint(fs, opts->mountpoint);
	if (!ret)
		ret = vf_open_image_file(fs, opts, &st);
	if (!ret)
		ret = vf_open_vhdx(fs, opts);
	if (!ret)
		ret = vf_fill_attrs(fs, opts, &st);
	return ret;
}

/* libfuse's "not set" value for max_idle_threads, which it then rejects */
#define VF_IDLE_THREADS_UNSET UINT_MAX
#define VF_IDLE_THREADS	      10

/* Serve requests until unmounted or signalled: < 0 on failure. */
static int vf_loop(struct fuse_session *se, const struct vf_options *opts)
{
	struct fuse_loop_config cfg;

	if (opts->cmd.singlethread)
		return fuse_session_loop(se);
	memset(&cfg, 0, sizeof(cfg));
	cfg.clone_fd = opts->cmd.clone_fd;
	cfg.max_idle_threads = opts->cmd.max_idle_threads;
	if (cfg.max_idle_threads == VF_IDLE_THREADS_UNSET)
		cfg.max_idle_threads = VF_IDLE_THREADS;
	return fuse_session_loop_mt(se, &cfg);
}

/*
 * SIGTERM, SIGINT and SIGHUP end the mount cleanly.  With the writeback
 * cache the kernel may still hold written data that it sends only while
 * requests are served, so the signal handler just wakes a watcher thread,
 * which syncs the mounted file system through the running session, then
 * ends the loop.  The watcher also answers vf_request_size_fix().
 */
#define VF_WATCH_STOP	  0   /* the loop ended: the watcher returns */
#define VF_WATCH_SIZE_FIX 255 /* see vf_request_size_fix() */

static int vf_watch_fd[2] = {-1, -1};

/* The signals that unmount, with vf_on_signal() as their handler. */
static const int vf_stop_signals[] = {SIGTERM, SIGINT, SIGHUP};
#define VF_N_STOP_SIGNALS (sizeof(vf_stop_signals) / sizeof(vf_stop_signals[0]))

static void vf_on_signal(int sig)
{
	unsigned char c = (unsigned char)sig;
	int saved = errno;

	if (write(vf_watch_fd[1], &c, 1) < 0) {
		/* the pipe is full: a request is pending already */
	}
	errno = saved;
}

static int vf_set_signal_handlers(void)
{
	struct sigaction sa;

	if (pipe2(vf_watch_fd, O_CLOEXEC | O_NONBLOCK))
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL))
		return -1;
	/* no SA_RESTART: the signal must interrupt the loop's waits */
	sa.sa_handler = vf_on_signal;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < VF_N_STOP_SIGNALS; i++)
		if (sigaction(vf_stop_signals[i], &sa, NULL))
			return -1;
	return 0;
}

static void vf_remove_signal_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (size_t i = 0; i < VF_N_STOP_SIGNALS; i++)
		sigaction(vf_stop_signals[i], &sa, NULL);
	for (int i = 0; i < 2; i++) {
		if (vf_watch_fd[i] >= 0)
			close(vf_watch_fd[i]);
		vf_watch_fd[i] = -1;
	}
}

void vf_request_size_fix(void)
{
	vf_on_signal(VF_WATCH_SIZE_FIX);
}

/* The path of the disk file as the kernel shows it. */
static char *vf_disk_path(const struct vf_fs *fs)
{
	char *path;

	if (!fs->root_is_dir)
		return strdup(fs->mountpoint);
	path = malloc(strlen(fs->mountpoint) + strlen(fs->filename) + 2);
	if (path)
		sprintf(path, "%s/%s", fs->mountpoint, fs->filename);
	return path;
}

/*
 * Have the kernel send what its writeback cache holds, and wait: fsync of
 * the disk file (syncfs was seen to return before all of it was sent).
 */
static void vf_sync_mount(const struct vf_fs *fs)
{
	char *path = vf_disk_path(fs);
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) : -1;

	if (fd < 0 || fsync(fd))
		vf_log(LOG_WARNING, "%s: writing back cached data: %s",
		       fs->mountpoint, strerror(path ? errno : ENOMEM));
	if (fd >= 0)
		close(fd);
	free(path);
}

/*
 * After the writeback cache let a write(2) grow the file past the disk's
 * end (vf_write fails its write-back), set the kernel's size back: the
 * kernel takes the size a truncating setattr replies with.
 */
static void vf_fix_size(const struct vf_fs *fs)
{
	char *path = vf_disk_path(fs);

	if (!path || truncate(path, (off_t)fs->size))
		vf_log(LOG_DEBUG, "resetting the disk size failed: %s",
		       strerror(path ? errno : ENOMEM));
	free(path);
}

struct vf_watch {
	struct vf_fs *fs;
	struct fuse_session *se;
	pthread_t loop_thread;
};

static void *vf_watcher(void *arg)
{
	struct vf_watch *w = arg;
	struct pollfd pfd = {.fd = vf_watch_fd[0], .events = POLLIN};
	unsigned char c;

	for (;;) {
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return NULL;
		if (read(vf_watch_fd[0], &c, 1) != 1)
			continue;
		if (c == VF_WATCH_STOP)
			return NULL;
		if (c == VF_WATCH_SIZE_FIX) {
			vf_fix_size(w->fs);
			continue;
		}
		vf_log(LOG_INFO, "%s: signal %d: unmounting", w->fs->mountpoint,
		       c);
		if (w->fs->wbc)
			vf_sync_mount(w->fs);
		fuse_session_exit(w->se);
		/* interrupts the loop's wait for its workers */
		pthread_kill(w->loop_thread, SIGTERM);
		return NULL;
	}
}

extern char **environ;

/* Run mount(8) or umount(8) quietly and wait: its exit status, or -1. */
static int vf_run_quiet(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st, err;

	if (posix_spawn_file_actions_init(&fa))
		return -1;
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	err = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (err)
		return -1;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* vf_register_utab() added a utab entry */
static bool vf_utab_registered;

/* The daemon's runtime record (see vhdx_record_write); best effort. */
static void vf_record(const struct vf_fs *fs, bool closing)
{
	int err = vhdx_record_write(fs->fd, fs->mountpoint, closing);

	if (err)
		vf_log(LOG_DEBUG, "no runtime record: %s", strerror(-err));
}

/*
 * As root, give the mount a utab entry (mount(8) itself writes it, with
 * -f: no mount, -i: no helper) that names our umount helper.  Without an
 * entry, umount(8) takes the type from statfs(), which says only "fuse",
 * and so never runs umount.fuse.vhdxfuse; with it, umount(8) reads the
 * type from mountinfo and runs umount.vhdxfuse (helper=, uhelper= for
 * users' fstab mounts), which waits for the daemon to finish.
 */
static void vf_register_utab(const struct vf_fs *fs)
{
	char type[256], source[PATH_MAX + 1];
	char *argv[] = {"mount", "--no-canonicalize",
			"-i",	 "-f",
			"-t",	 type,
			"-o",	 "helper=vhdxfuse,uhelper=vhdxfuse",
			source,	 fs->mountpoint,
			NULL};

	if (geteuid() != 0 ||
	    vhdx_mountinfo_find(fs->mountpoint, type, sizeof(type), source,
				sizeof(source)) != 1)
		return;
	vf_utab_registered = vf_run_quiet(argv) == 0;
	if (!vf_utab_registered)
		vf_log(LOG_DEBUG, "mount -f for utab failed");
}

/* Does utab still have our entry for mountpoint? (libmount's escapes) */
static bool vf_utab_has(const char *mountpoint)
{
	FILE *f = fopen("/run/mount/utab", "re");
	char want[3 * PATH_MAX + 16], *w = want, *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	w += sprintf(w, "TARGET=");
	for (const char *p = mountpoint; *p; p++)
		w += strchr(" \t\n\\", *p) ? sprintf(w, "\\%03o", *p)
					   : sprintf(w, "%c", *p);
	sprintf(w, " ");
	while (!found && getline(&line, &cap, f) > 0)
		found = strstr(line, want) && strstr(line, "helper=vhdxfuse");
	free(line);
	fclose(f);
	return found;
}

/*
 * When the mount went away without umount(8) (fusermount3 -u, a signal),
 * its utab entry is left: remove it, through umount(8) again (--fake: no
 * unmount), unless the mount point is mounted anew already.
 */
static void vf_unregister_utab(const struct vf_fs *fs)
{
	char *argv[] = {"umount",	"--fake", "-i", "--no-canonicalize",
			fs->mountpoint, NULL};

	for (int i = 0; vf_utab_registered && i < 4; i++) {
		if (vhdx_mountinfo_find(fs->mountpoint, NULL, 0, NULL, 0) ||
		    !vf_utab_has(fs->mountpoint))
			return;
		if (vf_run_quiet(argv))
			return;
	}
}

/*
 * fuse_daemonize() with one more step: the daemon writes its runtime
 * record before the starting process returns, so that an unmount right
 * after the mount finds it.
 */
static int vf_daemonize(const struct vf_fs *fs, int foreground)
{
	int waiter[2], nullfd;
	char done = 0;
	ssize_t n;
	pid_t pid;

	if (foreground) {
		if (chdir("/")) {
			/* as fuse_daemonize(): not fatal */
		}
		vf_record(fs, false);
		return 0;
	}
	if (pipe2(waiter, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid < 0) {
		close(waiter[0]);
		close(waiter[1]);
		return -1;
	}
	if (pid > 0) {
		close(waiter[1]);
		while ((n = read(waiter[0], &done, 1)) < 0 && errno == EINTR)
			;
		_exit(n == 1 ? VF_EXIT_OK : VF_EXIT_MOUNT);
	}
	close(waiter[0]);
	if (setsid() < 0 || chdir("/")) {
		vf_log(LOG_ERR, "cannot detach: %s", strerror(errno));
		return -1;
	}
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd >= 0) {
		dup2(nullfd, 0);
		dup2(nullfd, 1);
		dup2(nullfd, 2);
		if (nullfd > 2)
			close(nullfd);
	}
	vf_record(fs, false);
	if (write(waiter[1], &done, 1) != 1) {
		/* the starting process is gone: nothing to tell */
	}
	close(waiter[1]);
	return 0;
}

/*
 * Mount, detach unless -f, serve until unmounted or signalled (a clean
 * exit), unmount.
 */
static int vf_serve(struct vf_fs *fs, struct fuse_session *se,
		    const struct vf_options *opts)
{
	struct vf_watch w = {.fs = fs, .se = se, .loop_thread = pthread_self()};
	unsigned char stop = VF_WATCH_STOP;
	pthread_t watcher;
	int ret = VF_EXIT_MOUNT, err;

	if (vf_set_signal_handlers()) {
		vf_log(LOG_ERR, "cannot set up signal handling: %s",
		       strerror(errno));
		goto out_signals;
	}
	if (fuse_session_mount(se, fs->mountpoint))
		goto out_signals;
	vf_register_utab(fs);
	if (vf_daemonize(fs, opts->cmd.foreground))
		goto out_unmount;
	if (!opts->cmd.foreground)
		vf_log_to_syslog();
	/* after fuse_daemonize(): threads do not survive its fork */
	errno = pthread_create(&watcher, NULL, vf_watcher, &w);
	if (errno) {
		vf_log(LOG_ERR, "cannot start a thread: %s", strerror(errno));
		goto out_unmount;
	}
	if (!fs->ro && (err = vf_wb_start(fs)) < 0)
		vf_log(LOG_WARNING, "no write-behind thread: %s",
		       strerror(-err));
	if (vf_loop(se, opts) < 0)
		vf_log(LOG_ERR, "%s: the FUSE session failed", fs->mountpoint);
	else
		ret = VF_EXIT_OK;
	/* waiters on the lock may now wait for us (see vhdx_file_open) */
	vf_record(fs, true);
	vf_wb_stop(fs);
	/* the pipe may be full: the watcher is draining it */
	while (write(vf_watch_fd[1], &stop, 1) < 0 &&
	       (errno == EAGAIN || errno == EINTR))
		usleep(1000);
	pthread_join(watcher, NULL);
out_unmount:
	fuse_session_unmount(se);
out_signals:
	vf_remove_signal_handlers();
	return ret;
}

static int vf_close(struct vf_fs *fs)
{
	int ret = 0;

	if (fs->img) {
		ret = vhdx_close(fs->img);
		if (ret)
			vf_log(LOG_ERR, "%s: closing the image failed: %s",
			       fs->image, strerror(-ret));
	}
	if (fs->fd >= 0)
		close(fs->fd);
	if (fs->mountpoint) {
		vf_unregister_utab(fs);
		vhdx_record_remove();
	}
	free(fs->filename);
	free(fs->mountpoint);
	return ret ? VF_EXIT_MOUNT : VF_EXIT_OK;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_session *se = NULL;
	struct vf_options opts;
	struct vf_fs fs;
	int ret, cret;

	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "-u") || !strcmp(argv[i], "--unmount"))
			return vf_unmount_main(argc, argv);
	memset(&opts, 0, sizeof(opts));
	memset(&fs, 0, sizeof(fs));
	fs.fd = -1;
	ret = vf_opt_parse(&args, &opts) ? VF_EXIT_USAGE : VF_EXIT_OK;
	if (ret)
		goto out;
	if (opts.show_help || opts.show_version) {
		if (opts.show_help)
			vf_print_help(argv[0]);
		else
			vf_print_version();
		goto out;
	}
	vf_log_set_debug(opts.cmd.debug);
	se = fuse_session_new(&args, &vf_ops, sizeof(vf_ops), &fs);
	if (!se) {
		vf_print_usage(argv[0]);
		ret = VF_EXIT_USAGE;
		goto out;
	}
	fs.se = se;
	ret = vf_setup(&fs, &opts);
	if (!ret)
		ret = vf_serve(&fs, se, &opts);
out:
	if (se)
		fuse_session_destroy(se);
	cret = vf_close(&fs);
	if (!ret)
		ret = cret;
	vf_opt_free(&opts);
	fuse_opt_free_args(&args);
	return ret;
}
