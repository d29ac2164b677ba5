/*
 * fuse_ops.c - the FUSE low-level operations.
 *
 * The file system has at most two inodes: the root, and the disk file.  When
 * MOUNTPOINT is a regular file the root *is* the disk file; when it is a
 * directory the root holds the disk file under vf_fs.filename.  Nothing here
 * knows the VHDX format: reads and writes go through vhdx_read() and
 * vhdx_write(), which are safe to call from every worker thread at once.
 *
 * fallocate(2) punches holes and zeroes ranges through vhdx_zero().
 *
 * Durability: fsync, fdatasync, flush (every close) and release call
 * vhdx_flush(), which makes the data and the BAT durable; unmount closes the
 * image, which also marks its log empty.
 *
 * The disk behaves like a block device: O_TRUNC is ignored (as Linux
 * ignores it for block devices).  Growing the file (truncate -s, ftruncate)
 * grows the virtual disk online through vhdx_resize(); shrinking a mounted
 * disk is refused with EINVAL and logged (vhdxtool resize does it offline).
 *
 * A read-write mount turns read-only when the library does (after a failed
 * flush or metadata write, see vf_note_read_only); the disk file's data
 * is read through vhdx_read() when the image file is shorter than the
 * range to splice from it (another program truncated it), so such reads
 * fail with EIO instead of ending early.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/mount.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vhdxfuse.h"

/*
 * Nothing changes the image behind our back (a read-write mount holds an
 * exclusive lock): let the kernel cache attributes and data for long.
 */
#define VF_TIMEOUT 3600.0

/* Largest read or write request we ask the kernel for. */
#define VF_MAX_IO (1024 * 1024)

static struct vf_fs *vf_fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static fuse_ino_t vf_file_ino(const struct vf_fs *fs)
{
	return fs->root_is_dir ? VF_INO_FILE : VF_INO_ROOT;
}

static int vf_is_file(const struct vf_fs *fs, fuse_ino_t ino)
{
	return ino == vf_file_ino(fs);
}

/* Bytes of the disk its payload blocks hold, for st_blocks (du). */
uint64_t vf_alloc_bytes(const struct vhdx_image *img)
{
	struct vhdx_allocation a;

	vhdx_allocation(img, &a);
	return a.disk_bytes;
}

/* Allocated bytes now: blocks are allocated while a rw mount is used. */
static uint64_t vf_disk_alloc(const struct vf_fs *fs)
{
	return fs->ro ? fs->alloc_bytes : vf_alloc_bytes(fs->img);
}

/* Writes are refused: a read-only mount, or the image turned read-only. */
static int vf_read_only(const struct vf_fs *fs)
{
	return fs->ro || vhdx_is_read_only(fs->img);
}

/*
 * The mount point's own read-only flag: statfs(2) reports only that
 * (ST_RDONLY; the kernel ignores what the file system says), and it makes
 * access(W_OK) fail for root too, whom the mode bits do not stop.  Only
 * the per-mount flag changes (mount_setattr), which the kernel refuses
 * while a file on the mount is open for writing (EBUSY: tried again at
 * the next request) and to an unprivileged daemon (EPERM: given up).
 * 0 still trying, 1 done, -1 given up.
 */
static int vf_remount_state;

static void vf_try_remount_ro(const struct vf_fs *fs)
{
#ifdef SYS_mount_setattr
	struct mount_attr attr;
	int ret;

	if (__atomic_load_n(&vf_remount_state, __ATOMIC_RELAXED))
		return;
	memset(&attr, 0, sizeof(attr));
	attr.attr_set = MOUNT_ATTR_RDONLY;
	ret = (int)syscall(SYS_mount_setattr, AT_FDCWD, fs->mountpoint, 0,
			   &attr, sizeof(attr));
	if (ret == 0) {
		__atomic_store_n(&vf_remount_state, 1, __ATOMIC_RELAXED);
		vf_log(LOG_NOTICE, "%s: the mount point is read-only now",
		       fs->mountpoint);
	} else if (errno != EBUSY) {
		__atomic_store_n(&vf_remount_state, -1, __ATOMIC_RELAXED);
		vf_log(LOG_DEBUG,
		       "%s: cannot make the mount point read-only: %s",
		       fs->mountpoint, strerror(errno));
	}
#else
	(void)fs;
#endif
}

/*
 * Called after requests that may have failed: when the library has just
 * switched the image to read-only, say so once, make the kernel fetch the
 * attributes again (without write permission bits) and mark the mount
 * point read-only.
 */
static void vf_note_read_only(const struct vf_fs *fs)
{
	static int noted;

	if (fs->ro || !vhdx_is_read_only(fs->img))
		return;
	if (!__atomic_exchange_n(&noted, 1, __ATOMIC_RELAXED)) {
		vf_log(LOG_ERR,
		       "%s: the image turned read-only after the error above "
		       "and so does the mount: writes fail with EROFS, data "
		       "not flushed before the error is lost; unmount, then "
		       "run vhdxtool check",
		       fs->image);
		fuse_lowlevel_notify_inval_inode(fs->se, VF_INO_ROOT, -1, 0);
		if (fs->root_is_dir)
			fuse_lowlevel_notify_inval_inode(fs->se, VF_INO_FILE,
							 -1, 0);
	}
	vf_try_remount_ro(fs);
}

static void vf_fill_times(const struct vf_fs *fs, struct stat *st)
{
	st->st_atim = fs->mtime;
	st->st_mtim = fs->mtime;
	st->st_ctim = fs->mtime;
}

/* Fill *st for ino; -ENOENT if there is no such inode. */
static int vf_stat(const struct vf_fs *fs, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = fs->blksize;
	vf_fill_times(fs, st);
	if (vf_is_file(fs, ino)) {
		st->st_mode = S_IFREG | fs->file_mode;
		if (vf_read_only(fs))
			st->st_mode &= ~(mode_t)0222;
		st->st_nlink = 1;
		st->st_size = (off_t)fs->size;
		st->st_blocks = (blkcnt_t)((vf_disk_alloc(fs) + 511) / 512);
		return 0;
	}
	if (ino == VF_INO_ROOT && fs->root_is_dir) {
		st->st_mode = S_IFDIR | fs->dir_mode;
		if (vf_read_only(fs))
			st->st_mode &= ~(mode_t)0222;
		st->st_nlink = 2;
		return 0;
	}
	return -ENOENT;
}

/*
 * With the writeback cache the kernel owns the file size and ignores the
 * size that getattr reports.  A directory mount point's file gets its size
 * from lookup; the root inode of a file mount point, however, is made at
 * mount time with size 0.  Storing the disk's last page into the kernel's
 * cache of that inode sets its size.  Called from init, before the kernel
 * is told that the writeback cache is on; 0 or -errno.
 */
static int vf_announce_size(struct vf_fs *fs)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t off, len;
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);
	char *buf;
	long n;
	int ret;

	if (page <= 0)
		page = 4096;
	off = (fs->size - 1) / (uint64_t)page * (uint64_t)page;
	len = fs->size - off;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	n = vhdx_read(fs->img, buf, len, off);
	if (n < 0 || (uint64_t)n != len) {
		free(buf);
		return n < 0 ? (int)n : -EIO;
	}
	bv.buf[0].mem = buf;
	bv.buf[0].size = len;
	ret =
	    fuse_lowlevel_notify_store(fs->se, VF_INO_ROOT, (off_t)off, &bv, 0);
	free(buf);
	return ret;
}

static void vf_init(void *userdata, struct fuse_conn_info *conn)
{
	struct vf_fs *fs = userdata;
	int ret;

	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	/* replies straight from the image file's pages */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	conn->max_write = VF_MAX_IO;
	if (conn->max_readahead > VF_MAX_IO)
		conn->max_readahead = VF_MAX_IO;

	if (fs->wbc && !(conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
		vf_log(LOG_INFO, "the kernel offers no writeback cache");
		fs->wbc = 0;
	}
	if (fs->wbc && !fs->root_is_dir) {
		ret = vf_announce_size(fs);
		if (ret) {
			vf_log(LOG_WARNING,
			       "writeback cache off: cannot tell the kernel "
			       "the disk size: %s",
			       strerror(-ret));
			fs->wbc = 0;
		}
	}
	if (fs->wbc) {
		/*
		 * The kernel caches writes and sends them in the background;
		 * fsync and close still wait for them (and get their errors).
		 * O_TRUNC then comes as a setattr, see vf_setattr().
		 */
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC; /* libfuse's default */
	} else if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) {
		/* O_TRUNC arrives with open(), where it is ignored */
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	}
}

static void vf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vf_fs *fs = vf_fs_of(req);
	struct fuse_entry_param e;

	if (parent != VF_INO_ROOT || !fs->root_is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (strcmp(name, fs->filename)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = VF_INO_FILE;
	e.attr_timeout = VF_TIMEOUT;
	e.entry_timeout = VF_TIMEOUT;
	vf_stat(fs, e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void vf_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	struct stat st;
	int ret = vf_stat(fs, ino, &st);

	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, VF_TIMEOUT);
	vf_note_read_only(fs);
}

/* The one place that decides whether the disk may be changed. */
static int vf_check_writable(const struct vf_fs *fs)
{
	return vf_read_only(fs) ? -EROFS : 0;
}

static void vf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	int ret;

	if (!vf_is_file(fs, ino)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		ret = vf_check_writable(fs);
		if (ret) {
			fuse_reply_err(req, -ret);
			vf_note_read_only(fs);
			return;
		}
	}
	/* The content cannot change behind the kernel's back. */
	fi->keep_cache = 1;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		__atomic_add_fetch(&fs->writers, 1, __ATOMIC_RELAXED);
	fuse_reply_open(req, fi);
}

/* Zeros to reply with for unallocated ranges, without copying. */
static const char vf_zeros[VF_MAX_IO];

#define VF_MAX_SEGS 16

/*
 * Describe [pos, pos + size) as file ranges of the image and zero ranges,
 * so libfuse can reply without a copy (splicing from the image file where
 * the kernel allows).  Returns 0, or -1 when some part needs vhdx_read.
 */
static int vf_map_read(struct vf_fs *fs, uint64_t pos, size_t size,
		       struct fuse_bufvec *bv)
{
	size_t done = 0;
	uint64_t file_end = 0;
	struct stat st;

	bv->count = 0;
	while (done < size) {
		struct fuse_buf *b = &bv->buf[bv->count];
		struct vhdx_mapping m;

		if (bv->count == VF_MAX_SEGS ||
		    vhdx_map(fs->img, pos + done, size - done, &m) < 0 ||
		    m.kind == VHDX_MAP_OTHER)
			return -1;
		memset(b, 0, sizeof(*b));
		b->size = (size_t)m.length;
		if (m.kind == VHDX_MAP_FILE) {
			b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK |
				   FUSE_BUF_FD_RETRY;
			b->fd = fs->fd;
			b->pos = (off_t)m.file_offset;
			if (m.file_offset + m.length > file_end)
				file_end = m.file_offset + m.length;
		} else {
			b->mem = (void *)vf_zeros;
		}
		bv->count++;
		done += b->size;
	}
	/*
	 * A splice past the end of a file that another program shortened
	 * would end the reply early: the kernel takes that for the end of
	 * the disk file.  vhdx_read fails such a read with EIO (and logs
	 * it).  Only a truncation between this check and the splice
	 * escapes it.
	 */
	if (file_end && (fstat(fs->fd, &st) || (uint64_t)st.st_size < file_end))
		return -1;
	return 0;
}

static void vf_read_copy(fuse_req_t req, struct vf_fs *fs, size_t size,
			 uint64_t pos)
{
	char *buf = malloc(size);
	long ret;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = vhdx_read(fs->img, buf, size, pos);
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
	free(buf);
}

static void vf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	uint64_t pos = (uint64_t)off;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (pos >= fs->size || !size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > fs->size - pos)
		size = (size_t)(fs->size - pos);
	if (size <= VF_MAX_IO) {
		struct {
			struct fuse_bufvec bv;
			struct fuse_buf more[VF_MAX_SEGS - 1];
		} v;

		memset(&v.bv, 0, sizeof(v.bv));
		if (vf_map_read(fs, pos, size, &v.bv) == 0) {
			fuse_reply_data(req, &v.bv, FUSE_BUF_SPLICE_MOVE);
			return;
		}
	}
	vf_read_copy(req, fs, size, pos);
}

/*
 * Write-behind: streaming writes (requests of VF_WB_MIN_IO or more) start
 * the host's writeback of the image every VF_WB_STEP bytes, in the
 * write-behind thread, so that the disk works while more data arrives
 * instead of all at the next fsync.  Small random writes do not count:
 * starting writeback of scattered pages early only costs them.
 */
#define VF_WB_MIN_IO (64 * 1024)
#define VF_WB_STEP   (16 * 1024 * 1024)

static void vf_write_behind(struct vf_fs *fs, uint64_t n)
{
	uint64_t now;

	if (n < VF_WB_MIN_IO)
		return;
	now = __atomic_add_fetch(&fs->wb_bytes, n, __ATOMIC_RELAXED);
	if (now / VF_WB_STEP != (now - n) / VF_WB_STEP)
		vf_wb_kick(fs);
}

static void vf_warn_past_end(struct vf_fs *fs, uint64_t off)
{
	static int warned;

	if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		return;
	vf_log(LOG_WARNING,
	       "%s: data written past the end of the disk (%llu bytes, "
	       "offset %llu) is lost: fsync and close fail with ENOSPC",
	       fs->image, (unsigned long long)fs->size,
	       (unsigned long long)off);
}

static void vf_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	int ret = vf_check_writable(fs);
	long n;

	if (ret) {
		fuse_reply_err(req, -ret);
		vf_note_read_only(fs);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	n = vhdx_write(fs->img, buf, size, (uint64_t)off);
	if (n >= 0 && (size_t)n < size && fs->wbc) {
		/*
		 * The writeback cache accepted a write(2) past the end of the
		 * disk and the kernel now writes it back: keep what fits, and
		 * fail so that fsync and close report the rest as lost.
		 */
		vf_warn_past_end(fs, (uint64_t)off + (uint64_t)n);
		n = -ENOSPC;
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
	if (n > 0)
		vf_write_behind(fs, (uint64_t)n);
	else if (fs->wbc && n == -ENOSPC)
		vf_request_size_fix(); /* after the reply: it waits for us */
	else if (n < 0)
		vf_note_read_only(fs);
}

static void vf_reply_ok(fuse_req_t req)
{
	fuse_reply_err(req, 0);
}

/* Make everything written so far durable (a no-op when read-only). */
static void vf_sync(fuse_req_t req)
{
	struct vf_fs *fs = vf_fs_of(req);
	int ret = fs->ro ? 0 : vhdx_flush(fs->img);

	fuse_reply_err(req, ret < 0 ? -ret : 0);
	vf_note_read_only(fs);
}

static void vf_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/*
	 * A reader's close cannot make anything durable once the image has
	 * turned read-only: it must not fail with the flush's error.
	 */
	if ((fi->flags & O_ACCMODE) == O_RDONLY && vf_read_only(vf_fs_of(req)))
		vf_reply_ok(req);
	else
		vf_sync(req);
}

static void vf_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		__atomic_sub_fetch(&vf_fs_of(req)->writers, 1,
				   __ATOMIC_RELAXED);
		vf_sync(req);
	} else {
		vf_reply_ok(req);
	}
}

static void vf_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	vf_sync(req);
}

/*
 * fallocate(2): FALLOC_FL_PUNCH_HOLE (discard: fstrim through a loop device,
 * blkdiscard) and FALLOC_FL_ZERO_RANGE (write zeroes: mkfs) make the range
 * read as zeros; whole blocks give their space back (fmt §10.5).  Both only
 * with FALLOC_FL_KEEP_SIZE, or inside the disk: the size cannot change.
 * Preallocation (mode 0) is refused: blocks are allocated by writes.
 */
static void vf_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			 off_t len, struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	int op = mode & ~FALLOC_FL_KEEP_SIZE;
	int ret = vf_check_writable(fs);

	if (!ret && !vf_is_file(fs, ino))
		ret = -EISDIR;
	else if (!ret && op != FALLOC_FL_PUNCH_HOLE &&
		 op != FALLOC_FL_ZERO_RANGE)
		ret = -EOPNOTSUPP;
	else if (!ret && (off < 0 || len <= 0))
		ret = -EINVAL;
	else if (!ret && !(mode & FALLOC_FL_KEEP_SIZE) &&
		 (uint64_t)off + (uint64_t)len > fs->size)
		ret = -ENOSPC; /* would grow the disk */
	if (!ret)
		ret =
		    vhdx_zero(fs->img, (uint64_t)off, (uint64_t)len,
			      op == FALLOC_FL_PUNCH_HOLE ? VHDX_ZERO_UNMAP : 0);
	fuse_reply_err(req, -ret);
	if (ret)
		vf_note_read_only(fs);
}

/*
 * Truncation to 0 without a file handle: open(O_TRUNC) when the kernel does
 * not send O_TRUNC with open (writeback cache), ignored like there.  The
 * reply carries the real size, which the kernel then keeps.  A truncate(2)
 * to 0 by path looks the same and is ignored too; ftruncate(2) is refused.
 */
static int vf_is_o_trunc(const struct vf_fs *fs, const struct stat *attr,
			 const struct fuse_file_info *fi)
{
	return fs->wbc && !fi && attr->st_size == 0;
}

/*
 * Online grow: the virtual disk takes the new size, crash-safely (one log
 * entry).  Reads and writes keep running meanwhile: the library publishes
 * the new BAT before the new size.  A shrink would cut data under whoever
 * uses the disk (a loop device, a mounted file system): refused.
 */
static int vf_resize(struct vf_fs *fs, uint64_t size)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t old;
	int ret;

	/* one size change at a time: fs->size ends as the image's size */
	pthread_mutex_lock(&lock);
	old = fs->size;
	ret = size < old ? -EINVAL : vhdx_resize(fs->img, size, 0);
	if (ret == 0)
		__atomic_store_n(&fs->size, size, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&lock);
	if (size < old) {
		vf_log(LOG_WARNING,
		       "%s: refusing to shrink the mounted disk from %llu to "
		       "%llu bytes (EINVAL); shrink it unmounted with "
		       "vhdxtool resize",
		       fs->image, (unsigned long long)old,
		       (unsigned long long)size);
		return -EINVAL;
	}
	if (ret < 0) {
		vf_log(LOG_WARNING,
		       "%s: growing the disk to %llu bytes failed: %s",
		       fs->image, (unsigned long long)size, strerror(-ret));
		return ret;
	}
	vf_log(LOG_INFO, "%s: disk grown from %llu to %llu bytes", fs->image,
	       (unsigned long long)old, (unsigned long long)size);
	return 0;
}

/* Times and modes are not stored (nothing to change); the size grows. */
static void vf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	struct stat st;
	int ret = vf_stat(fs, ino, &st);

	if (!ret && (to_set & FUSE_SET_ATTR_SIZE) &&
	    (uint64_t)attr->st_size != fs->size &&
	    !vf_is_o_trunc(fs, attr, fi)) {
		if (!vf_is_file(fs, ino))
			ret = -EINVAL;
		else if (vf_read_only(fs))
			ret = -EROFS;
		else
			ret = vf_resize(fs, (uint64_t)attr->st_size);
		if (!ret)
			ret = vf_stat(fs, ino, &st);
	}
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, VF_TIMEOUT);
}

static void vf_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);

	if (ino != VF_INO_ROOT || !fs->root_is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->cache_readdir = 1;
	fuse_reply_open(req, fi);
}

/* Append entry number idx (".", "..", the disk file) to buf; 0 if full. */
static size_t vf_add_dirent(fuse_req_t req, const struct vf_fs *fs, off_t idx,
			    char *buf, size_t len)
{
	static const char *const dots[] = {".", ".."};
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_ino = idx < 2 ? VF_INO_ROOT : VF_INO_FILE;
	st.st_mode = idx < 2 ? S_IFDIR : S_IFREG;
	return fuse_add_direntry(
	    req, buf, len, idx < 2 ? dots[idx] : fs->filename, &st, idx + 1);
}

static void vf_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	size_t used = 0, n;
	char *buf;

	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (; off >= 0 && off < 3; off++) {
		n = vf_add_dirent(req, fs, off, buf + used, size - used);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void vf_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	vf_reply_ok(req);
}

static void vf_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	vf_reply_ok(req);
}

static void vf_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct vf_fs *fs = vf_fs_of(req);
	struct statvfs sv;

	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = fs->blksize;
	sv.f_frsize = fs->blksize;
	sv.f_blocks = (fs->size + fs->blksize - 1) / fs->blksize;
	sv.f_files = fs->root_is_dir ? 2 : 1;
	sv.f_namemax = NAME_MAX;
	/* the kernel reports the mount's flags, not these (see above) */
	if (vf_read_only(fs))
		sv.f_flag |= ST_RDONLY;
	vf_note_read_only(fs); /* before the reply: the flag counts now */
	fuse_reply_statfs(req, &sv);
}

/*
 * SEEK_DATA and SEEK_HOLE (lseek(2)) from the block query, through the
 * parent chain: what reads as zeros without being stored (blocks not
 * present, ZERO, UNMAPPED, sectors of a partial block a parent leaves
 * empty) is a hole, the rest is data.  The end of the disk is a hole.
 *
 * With the writeback cache the kernel may still hold written pages that
 * have not reached us, and it does not send them before asking: while a
 * writable handle is open the whole disk is then called data, which is
 * always true (and what the kernel answers without this op).
 */
static int vf_seek(struct vf_fs *fs, uint64_t pos, int whence, uint64_t *out)
{
	int want_data = whence == SEEK_DATA;

	if (fs->wbc && __atomic_load_n(&fs->writers, __ATOMIC_RELAXED)) {
		*out = pos;
		if (!want_data)
			*out = fs->size;
		return 0;
	}
	while (pos < fs->size) {
		struct vhdx_extent_info x;
		int ret = vhdx_query(fs->img, pos, fs->size - pos, &x);

		if (ret < 0)
			return ret;
		if ((x.source == VHDX_SOURCE_FILE) == want_data)
			break;
		pos += x.length;
	}
	if (pos >= fs->size && want_data)
		return -ENXIO;
	*out = pos < fs->size ? pos : fs->size;
	return 0;
}

static void vf_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct vf_fs *fs = vf_fs_of(req);
	uint64_t pos;
	int ret;

	if (!vf_is_file(fs, ino) ||
	    (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= fs->size) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	ret = vf_seek(fs, (uint64_t)off, whence, &pos);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_lseek(req, (off_t)pos);
}

/*
 * The directory holds the disk's file and nothing else, for root too (the
 * kernel refuses others by the directory's mode): nothing is created,
 * removed or renamed in it.  EPERM, not the ENOSYS ("Function not
 * implemented") that an absent handler would give.
 */
static void vf_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	fuse_reply_err(req, EPERM);
}

static void vf_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	fuse_reply_err(req, EPERM);
}

static void vf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	fuse_reply_err(req, EPERM);
}

static void vf_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EPERM);
}

static void vf_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent,
		    const char *name)
{
	(void)ino, (void)parent, (void)name;
	fuse_reply_err(req, EPERM);
}

static void vf_remove(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, EPERM);
}

static void vf_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	fuse_reply_err(req, EPERM);
}

const struct fuse_lowlevel_ops vf_ops = {
    .init = vf_init,
    .lookup = vf_lookup,
    .getattr = vf_getattr,
    .open = vf_open,
    .read = vf_read,
    .write = vf_write,
    .setattr = vf_setattr,
    .flush = vf_flush,
    .release = vf_release,
    .fsync = vf_fsync,
    .fallocate = vf_fallocate,
    .opendir = vf_opendir,
    .readdir = vf_readdir,
    .releasedir = vf_releasedir,
    .fsyncdir = vf_fsyncdir,
    .statfs = vf_statfs,
    .lseek = vf_lseek,
    .create = vf_create,
    .mknod = vf_mknod,
    .mkdir = vf_mkdir,
    .symlink = vf_symlink,
    .link = vf_link,
    .unlink = vf_remove,
    .rmdir = vf_remove,
    .rename = vf_rename,
};
