/*
 * io_dense.c - image files without holes.
 *
 * Windows refuses to attach a VHDX whose file is flagged sparse on NTFS
 * ("virtual hard disk files must be uncompressed and unencrypted and must
 * not be sparse"), and the flag cannot be cleared from Linux.  ntfs-3g sets
 * it as soon as a file gets a hole: extended with ftruncate, written past
 * its end, or a hole punched; the kernel's ntfs3 likewise for punched
 * holes.  On NTFS the fd backend therefore never makes a hole: growth is
 * written as zeros, discard writes zeros (or, for whole blocks, leaves the
 * old bytes behind a ZERO block) and nothing is fallocate'd, so whatever
 * the driver does with preallocation cannot flag the file either.
 *
 * Elsewhere a caller may ask for the same (vhdx_io_fd_dense: vhdxtool
 * create and convert by default) so that a plain copy of the file to NTFS
 * later stays dense: growth is then allocated with fallocate (zeros
 * written where the file system has no fallocate).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "internal.h"

#define VHDX_FUSE_SUPER_MAGIC 0x65735546u /* ntfs-3g is a FUSE file system */
#define VHDX_NTFS3_MAGIC      0x7366746eu /* the kernel's ntfs3 */
#define VHDX_NTFS_OLD_MAGIC   0x5346544eu /* the kernel's old ntfs driver */
/* NTFS file attributes as ntfs-3g and ntfs3 show them, big-endian */
#define VHDX_NTFS_ATTRIB_XATTR "system.ntfs_attrib_be"
#define VHDX_NTFS_ATTR_SPARSE  0x200u

/* The pwrite of the plain fd backend, set by vhdx_io_dense_setup. */
static int (*plain_pwrite)(void *opaque, const void *buf, size_t len,
			   uint64_t off);

/* NTFS file attributes of fd into *attr: 0, or -errno (not NTFS). */
static int ntfs_attrib(int fd, uint32_t *attr)
{
	uint8_t b[4];
	ssize_t n = fgetxattr(fd, VHDX_NTFS_ATTRIB_XATTR, b, sizeof(b));

	if (n < 0)
		return -errno;
	if (n != sizeof(b))
		return -EINVAL;
	*attr = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
		(uint32_t)b[2] << 8 | b[3];
	return 0;
}

/* Whether fd is a file on NTFS (ntfs-3g, ntfs3, the old ntfs driver). */
static bool on_ntfs(int fd)
{
	struct statfs sf;
	uint32_t attr;

	if (fstatfs(fd, &sf) < 0)
		return false;
	if ((uint32_t)sf.f_type == VHDX_NTFS3_MAGIC ||
	    (uint32_t)sf.f_type == VHDX_NTFS_OLD_MAGIC)
		return true;
	/* a FUSE file system that shows NTFS attributes: ntfs-3g */
	return (uint32_t)sf.f_type == VHDX_FUSE_SUPER_MAGIC &&
	       ntfs_attrib(fd, &attr) == 0;
}

int vhdx_fd_ntfs_sparse(int fd)
{
	uint32_t attr;
	int ret;

	if (!on_ntfs(fd))
		return -ENOTSUP;
	ret = ntfs_attrib(fd, &attr);
	if (ret < 0)
		return ret;
	return (attr & VHDX_NTFS_ATTR_SPARSE) != 0;
}

static int file_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

/* Write zeros over [from, to) (past the end of the file: extends it). */
static int write_zeros(void *opaque, uint64_t from, uint64_t to)
{
	static const uint8_t zeros[1024 * 1024];
	int ret = 0;

	while (from < to && ret == 0) {
		size_t n = to - from < sizeof(zeros) ? (size_t)(to - from)
						     : sizeof(zeros);

		ret = plain_pwrite(opaque, zeros, n, from);
		from += n;
	}
	return ret;
}

/* Extend the file to end with zeros written (NTFS) or allocated. */
static int grow(void *opaque, uint64_t end, bool try_fallocate)
{
	int fd = *(int *)opaque;
	uint64_t size;
	int ret = file_size(fd, &size);

	if (ret < 0 || end <= size)
		return ret;
	if (end > VHDX_MAX_OFF)
		return -EINVAL;
	if (try_fallocate &&
	    fallocate(fd, 0, (off_t)size, (off_t)(end - size)) == 0)
		return 0;
	if (try_fallocate && errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	return write_zeros(opaque, size, end);
}

/* Set the size; a growth is written (zeros, or fallocate when tried). */
static int set_size(void *opaque, uint64_t size, bool try_fallocate)
{
	int fd = *(int *)opaque;
	uint64_t cur;
	int ret = file_size(fd, &cur);

	if (ret < 0)
		return ret;
	if (size > cur)
		return grow(opaque, size, try_fallocate);
	return ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
}

static int ntfs_truncate(void *opaque, uint64_t size)
{
	return set_size(opaque, size, false);
}

/* Reserve space: past the end of the file, zeros; inside, NTFS files
 * without holes are allocated already. */
static int ntfs_allocate(void *opaque, uint64_t off, uint64_t len)
{
	if (off > VHDX_MAX_OFF || len > VHDX_MAX_OFF - off)
		return -EINVAL;
	return grow(opaque, off + len, false);
}

/* Never punch or fallocate: the library writes zeros instead, or leaves
 * the old bytes of a whole block it made ZERO. */
static int ntfs_zero(void *opaque, uint64_t off, uint64_t len, int unmap)
{
	(void)opaque;
	(void)off;
	(void)len;
	(void)unmap;
	return -EOPNOTSUPP;
}

/* A write past the end of the file fills the gap first: no hole. */
static int ntfs_pwrite(void *opaque, const void *buf, size_t len, uint64_t off)
{
	uint64_t size;
	int ret = file_size(*(int *)opaque, &size);

	if (ret == 0 && off > size)
		ret = write_zeros(opaque, size, off);
	return ret < 0 ? ret : plain_pwrite(opaque, buf, len, off);
}

static int dense_truncate(void *opaque, uint64_t size)
{
	return set_size(opaque, size, true);
}

static int dense_allocate(void *opaque, uint64_t off, uint64_t len)
{
	int fd = *(int *)opaque;

	if (off > VHDX_MAX_OFF || len > VHDX_MAX_OFF - off)
		return -EINVAL;
	if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	return grow(opaque, off + len, false);
}

bool vhdx_io_dense_setup(struct vhdx_io *io, int fd)
{
	if (!on_ntfs(fd))
		return false;
	plain_pwrite = io->pwrite;
	io->pwrite = ntfs_pwrite;
	io->truncate = ntfs_truncate;
	io->allocate = ntfs_allocate;
	io->zero = ntfs_zero;
	return true;
}

void vhdx_io_fd_dense(struct vhdx_io *io)
{
	if (io->truncate == ntfs_truncate)
		return; /* NTFS: zeros written already */
	plain_pwrite = io->pwrite;
	io->truncate = dense_truncate;
	io->allocate = dense_allocate;
}
