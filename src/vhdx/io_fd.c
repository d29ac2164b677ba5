/*
 * io_fd.c - the real storage backend: a file descriptor used with
 * pread/pwrite/fdatasync/ftruncate.
 */
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static long fd_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	int fd = *(int *)opaque;
	size_t done = 0;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (long)done;
}

static int fd_pwrite(void *opaque, const void *buf, size_t len, uint64_t off)
{
	int fd = *(int *)opaque;
	size_t done = 0;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int fd_flush(void *opaque)
{
	return fdatasync(*(int *)opaque) < 0 ? -errno : 0;
}

static int fd_truncate(void *opaque, uint64_t size)
{
	if (size > INT64_MAX)
		return -EINVAL;
	return ftruncate(*(int *)opaque, (off_t)size) < 0 ? -errno : 0;
}

static int fd_size(void *opaque, uint64_t *size)
{
	struct stat st;

	if (fstat(*(int *)opaque, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(*(int *)opaque, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		*size = bytes;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

static int fd_allocate(void *opaque, uint64_t off, uint64_t len)
{
	if (off > VHDX_MAX_OFF || len > VHDX_MAX_OFF - off)
		return -EINVAL;
	if (fallocate(*(int *)opaque, 0, (off_t)off, (off_t)len) == 0)
		return 0;
	/* file systems without fallocate: the space stays sparse */
	return errno == EOPNOTSUPP ? 0 : -errno;
}

static int fd_zero(void *opaque, uint64_t off, uint64_t len, int unmap)
{
	int mode = FALLOC_FL_KEEP_SIZE |
		   (unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);

	if (off > VHDX_MAX_OFF || len > VHDX_MAX_OFF - off)
		return -EINVAL;
	if (fallocate(*(int *)opaque, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	/* not this mode here (tmpfs has no ZERO_RANGE, NFS neither) */
	if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)
		return -EOPNOTSUPP;
	return -errno;
}

void vhdx_io_fd_init(struct vhdx_io *io, int *fdp)
{
	io->opaque = fdp;
	io->pread = fd_pread;
	io->pwrite = fd_pwrite;
	io->flush = fd_flush;
	io->truncate = fd_truncate;
	io->size = fd_size;
	io->allocate = fd_allocate;
	io->zero = fd_zero;
	vhdx_io_dense_setup(io, *fdp); /* on NTFS: never a hole */
}

/* ---- the default way to open parent files ---- */

static int fdf_open(void *opaque, const char *path, struct vhdx_io *io,
		    uint64_t id[2])
{
	/* a parent is read by us, so nobody may write it meanwhile */
	unsigned int flags =
	    VHDX_FILE_UNTRUSTED_PATH | (opaque ? VHDX_FILE_NOLOCK : 0);
	struct vhdx_file_status st;
	int *fdp, fd, ret;

	ret = vhdx_file_open(path, flags, VHDX_LOCK_WAIT_DEFAULT_MS, &fd, &st);
	if (ret)
		return ret;
	fdp = malloc(sizeof(*fdp));
	if (!fdp) {
		close(fd);
		return -ENOMEM;
	}
	*fdp = fd;
	vhdx_io_fd_init(io, fdp);
	id[0] = st.dev;
	id[1] = st.ino;
	return 0;
}

static void fdf_close(void *opaque, struct vhdx_io *io)
{
	int *fdp = io->opaque;

	(void)opaque;
	if (fdp) {
		close(*fdp);
		free(fdp);
	}
	io->opaque = NULL;
}

const struct vhdx_file_ops *vhdx_fd_file_ops(void)
{
	static const struct vhdx_file_ops ops = {fdf_open, fdf_close, NULL};

	return &ops;
}

const struct vhdx_file_ops *vhdx_fd_file_ops_unlocked(void)
{
	static int unlocked; /* a non-NULL opaque: take no lock */
	static const struct vhdx_file_ops ops = {fdf_open, fdf_close,
						 &unlocked};

	return &ops;
}
