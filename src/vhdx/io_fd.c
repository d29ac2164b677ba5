/*
 * io_fd.c - the real storage backend: a file descriptor used with
 * pread/pwrite/fdatasync/ftruncate.
 */
#include <errno.h>
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

void vhdx_io_fd_init(struct vhdx_io *io, int *fdp)
{
	io->opaque = fdp;
	io->pread = fd_pread;
	io->pwrite = fd_pwrite;
	io->flush = fd_flush;
	io->truncate = fd_truncate;
	io->size = fd_size;
	io->allocate = fd_allocate;
}
