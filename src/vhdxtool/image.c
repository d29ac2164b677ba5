/*
 * image.c - files: opening and locking images (the same OFD locks as the
 * daemon takes, so a repair never runs under a mount), output files that
 * appear under their name only when complete, and interruption.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdxtool.h"

volatile sig_atomic_t vt_interrupted;

static void vt_on_signal(int sig)
{
	(void)sig;
	vt_interrupted = 1;
}

void vt_catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = vt_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

bool vt_force_share;
const char *vt_busy_hint;

/*
 * How long to wait for a lock whose holder is shutting down: $VHDXFUSE_LOCK_WAIT
 * seconds, else VHDX_LOCK_WAIT_DEFAULT_MS.
 */
static unsigned int vt_lock_wait_ms(void)
{
	const char *env = getenv("VHDXFUSE_LOCK_WAIT");
	char *end;
	double s;

	if (!env || !*env)
		return VHDX_LOCK_WAIT_DEFAULT_MS;
	s = strtod(env, &end);
	if (*end || !(s >= 0) || s > 3600) {
		vt_warn("ignoring VHDXFUSE_LOCK_WAIT=%s (seconds, 0 to 3600)",
			env);
		return VHDX_LOCK_WAIT_DEFAULT_MS;
	}
	return (unsigned int)(s * 1000);
}

/* After an open with -U: say so if a writer holds the image. */
static void vt_note_shared(int fd, const char *path)
{
	struct vhdx_lock_holder h;
	struct flock fl;
	char who[4200];

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, F_OFD_GETLK, &fl) || fl.l_type == F_UNLCK)
		return;
	vhdx_lock_holder_find(fd, &h);
	vhdx_lock_holder_describe(&h, who, sizeof(who));
	vt_warn("%s is in use (%s); read without a lock (-U): what is shown "
		"may be stale or inconsistent",
		path, who);
}

/*
 * Open and lock (shared to read, exclusive to write) through the library;
 * 0 or an exit code after a message.  vt_force_share: read-only opens take
 * no lock.
 */
static int vt_open_file(const char *path, bool writable, int *fd)
{
	unsigned int flags = writable ? VHDX_FILE_WRITE : 0;
	struct vhdx_file_status st;
	char who[4200];
	int ret;

	if (!writable && vt_force_share)
		flags |= VHDX_FILE_NOLOCK;
	ret = vhdx_file_open(path, flags, vt_lock_wait_ms(), fd, &st);
	if (ret == -EBUSY) {
		vhdx_lock_holder_describe(&st.holder, who, sizeof(who));
		vt_err("%s is in use (%s)%s", path, who,
		       writable ? ""
				: "; -U (--force-share) inspects it anyway");
		if (vt_busy_hint && st.holder.mountpoint[0] &&
		    !st.holder.closing)
			vt_err("%s", vt_busy_hint);
		return VT_EXIT_FAILURE;
	}
	if (ret) {
		vt_err("%s: %s", path,
		       ret == -EINVAL ? "not a regular file" : strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	if (flags & VHDX_FILE_NOLOCK)
		vt_note_shared(*fd, path);
	return 0;
}

int vt_open_input(const char *path, int *fd)
{
	return vt_open_file(path, false, fd);
}

bool vt_is_vhdx(int fd)
{
	char sig[8];

	return pread(fd, sig, sizeof(sig), 0) == (ssize_t)sizeof(sig) &&
	       !memcmp(sig, "vhdxfile", sizeof(sig));
}

int vt_image_open(struct vt_image *vi, const char *path, bool writable,
		  vhdx_msg_fn sink, void *sink_opaque)
{
	return vt_image_open_chain(vi, path, NULL, writable, sink, sink_opaque);
}

int vt_image_open_chain(struct vt_image *vi, const char *path,
			const char *parent, bool writable, vhdx_msg_fn sink,
			void *sink_opaque)
{
	struct vhdx_open_opts opts = {
	    .flags = VT_OPEN_FLAGS | (writable ? 0 : VHDX_OPEN_RDONLY),
	    .msg = sink ? sink : vt_vhdx_msg,
	    .msg_opaque = sink ? sink_opaque : (void *)path,
	    .path = path,
	    .parent_path = parent,
	};
	int ret;

	vi->path = path;
	vi->img = NULL;
	if (!writable && vt_force_share)
		opts.files = vhdx_fd_file_ops_unlocked();
	ret = vt_open_file(path, writable, &vi->fd);
	vi->file_failed = ret != 0;
	if (ret)
		return ret;
	vhdx_io_fd_init(&vi->io, &vi->fd);
	ret = vhdx_open(&vi->img, &vi->io, &opts);
	if (ret == 0)
		return 0;
	close(vi->fd);
	vi->fd = -1;
	return vt_exit_for_open_error(ret);
}

int vt_image_open_detached(struct vt_image *vi, const char *path,
			   vhdx_msg_fn sink, void *sink_opaque)
{
	struct vhdx_open_opts opts = {
	    .flags = VT_OPEN_FLAGS | VHDX_OPEN_RDONLY,
	    .msg = sink,
	    .msg_opaque = sink_opaque,
	};
	int ret;

	vi->path = path;
	vi->img = NULL;
	ret = vt_open_file(path, false, &vi->fd);
	vi->file_failed = ret != 0;
	if (ret)
		return ret;
	vhdx_io_fd_init(&vi->io, &vi->fd);
	ret = vhdx_open_detached(&vi->img, &vi->io, &opts);
	if (ret == 0)
		return 0;
	close(vi->fd);
	vi->fd = -1;
	return vt_exit_for_open_error(ret);
}

int vt_image_close(struct vt_image *vi)
{
	int ret = vhdx_close(vi->img);
	int status = VT_EXIT_OK;

	vi->img = NULL;
	if (ret < 0) {
		vt_err("%s: closing the image failed: %s", vi->path,
		       strerror(-ret));
		status = VT_EXIT_FAILURE;
	}
	if (vi->fd >= 0 && close(vi->fd) < 0 && !status) {
		vt_err("%s: %s", vi->path, strerror(errno));
		status = VT_EXIT_FAILURE;
	}
	vi->fd = -1;
	return status;
}

/* ---- output files ---- */

/*
 * The output is written to an unnamed file (O_TMPFILE) in OUT's directory
 * and linked under its name only when complete: whatever kills the process
 * before, the kernel frees the file and no name is left.  File systems
 * without O_TMPFILE get a named PATH.tmp-XXXXXX instead, removed on every
 * error and signal we see (not on SIGKILL or a crash).
 */

static char *vt_dir_of(const char *path)
{
	char *copy = strdup(path), *dir;

	if (!copy)
		return NULL;
	dir = strdup(dirname(copy));
	free(copy);
	return dir;
}

static int vt_outfile_named(struct vt_outfile *o)
{
	if (asprintf(&o->tmp, "%s.tmp-XXXXXX", o->path) < 0) {
		o->tmp = NULL;
		vt_err("out of memory");
		return VT_EXIT_FAILURE;
	}
	o->fd = mkostemp(o->tmp, O_CLOEXEC);
	if (o->fd < 0) {
		vt_err("%s: %s", o->tmp, strerror(errno));
		free(o->tmp);
		o->tmp = NULL;
		return VT_EXIT_FAILURE;
	}
	return 0;
}

int vt_outfile_open(struct vt_outfile *o, const char *path, bool force)
{
	struct stat st;
	mode_t mask;
	char *dir;

	memset(o, 0, sizeof(*o));
	o->path = path;
	o->force = force;
	o->fd = -1;
	if (lstat(path, &st) == 0) {
		if (!force) {
			vt_err("%s already exists (use -f to overwrite it)",
			       path);
			return VT_EXIT_USAGE;
		}
		if (!S_ISREG(st.st_mode)) {
			vt_err("%s exists and is not a regular file; not "
			       "overwriting it",
			       path);
			return VT_EXIT_USAGE;
		}
	}
	mask = umask(0);
	umask(mask);
	dir = vt_dir_of(path);
	if (!dir) {
		vt_err("out of memory");
		return VT_EXIT_FAILURE;
	}
	o->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666 & ~mask);
	if (o->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR ||
			  errno == EINVAL || errno == ENOSYS)) {
		free(dir);
		if (vt_outfile_named(o))
			return VT_EXIT_FAILURE;
		if (fchmod(o->fd, 0666 & ~mask) < 0)
			vt_warn("%s: %s", o->tmp, strerror(errno));
		return 0;
	}
	if (o->fd < 0) {
		vt_err("%s: cannot create a file in %s: %s", path, dir,
		       strerror(errno));
		free(dir);
		return VT_EXIT_FAILURE;
	}
	free(dir);
	return 0;
}

/* Give the unnamed file the name NAME; fails with EEXIST if it exists. */
static int vt_link_unnamed(int fd, const char *name)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	if (errno != ENOENT && errno != ENOTDIR)
		return -1;
	/* no /proc: needs CAP_DAC_READ_SEARCH */
	return linkat(fd, "", AT_FDCWD, name, AT_EMPTY_PATH);
}

/*
 * Link the unnamed file under o->path.  Replacing an existing file (-f)
 * takes a second name for the time of one rename(2): a hidden
 * .NAME.vhdxtool-PID-N next to it, whose creation and rename follow each
 * other immediately.
 */
static int vt_link_out(struct vt_outfile *o)
{
	char *copy, *base, *dir, *tmp;
	int ret = -1;

	if (!o->force)
		return vt_link_unnamed(o->fd, o->path);
	copy = strdup(o->path);
	dir = vt_dir_of(o->path);
	if (!copy || !dir) {
		free(copy);
		free(dir);
		errno = ENOMEM;
		return -1;
	}
	base = basename(copy);
	for (int attempt = 0; attempt < 100 && ret < 0; attempt++) {
		if (asprintf(&tmp, "%s/.%s.vhdxtool-%ld-%d", dir, base,
			     (long)getpid(), attempt) < 0) {
			errno = ENOMEM;
			break;
		}
		ret = vt_link_unnamed(o->fd, tmp);
		if (ret == 0 && rename(tmp, o->path) < 0) {
			int err = errno;

			unlink(tmp);
			errno = err;
			free(tmp);
			ret = -1;
			break;
		}
		free(tmp);
		if (ret < 0 && errno != EEXIST)
			break;
	}
	free(copy);
	free(dir);
	return ret;
}

/* rename(2) without replacing an existing file unless forced. */
static int vt_rename(const struct vt_outfile *o)
{
	if (o->force)
		return rename(o->tmp, o->path);
	if (renameat2(AT_FDCWD, o->tmp, AT_FDCWD, o->path, RENAME_NOREPLACE) ==
	    0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* file systems without RENAME_NOREPLACE: link fails if it exists */
	if (link(o->tmp, o->path) < 0)
		return -1;
	return unlink(o->tmp);
}

static void vt_sync_dir(const char *path)
{
	char *dir = vt_dir_of(path);
	int fd;

	if (!dir)
		return;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(dir);
}

int vt_outfile_commit(struct vt_outfile *o)
{
	const char *what = o->tmp ? o->tmp : o->path;
	int ret;

	if (fsync(o->fd) < 0) {
		vt_err("%s: %s", what, strerror(errno));
		vt_outfile_abort(o);
		return VT_EXIT_FAILURE;
	}
	ret = o->tmp ? vt_rename(o) : vt_link_out(o);
	if (ret < 0) {
		int err = errno;

		if (o->tmp)
			vt_err("cannot rename %s to %s: %s", o->tmp, o->path,
			       strerror(err));
		else
			vt_err("cannot create %s: %s", o->path, strerror(err));
		vt_outfile_abort(o);
		return err == EEXIST ? VT_EXIT_USAGE : VT_EXIT_FAILURE;
	}
	if (close(o->fd) < 0) {
		o->fd = -1;
		vt_err("%s: %s", o->path, strerror(errno));
		return VT_EXIT_FAILURE;
	}
	o->fd = -1;
	vt_sync_dir(o->path);
	free(o->tmp);
	o->tmp = NULL;
	return VT_EXIT_OK;
}

void vt_outfile_abort(struct vt_outfile *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	if (o->tmp)
		unlink(o->tmp);
	free(o->tmp);
	o->tmp = NULL;
}
