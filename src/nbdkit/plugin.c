/*
 * plugin.c - nbdkit-vhdx-plugin: the virtual disk of a VHDX image served over
 * NBD by nbdkit.
 *
 * A thin front end like the FUSE daemon: every request goes through the
 * format library (vhdx_read, vhdx_write, vhdx_zero, vhdx_flush, vhdx_map),
 * which is thread safe, so nbdkit runs requests in parallel.  There is one
 * image per server, shared by every connection: one lock on the file, one
 * BAT, and a flush on any connection makes every acknowledged write durable,
 * which is what makes multi-conn safe.
 *
 * nbdkit tells a plugin about its -r option only when a client connects
 * (.open's readonly).  So the image is opened read-only (shared lock, never
 * written) before the server accepts anyone, which puts a bad image on the
 * terminal and in the exit status; with -r that open is kept.  Without -r
 * the first connection reopens it read-write with the exclusive lock, and
 * that open is kept until nbdkit exits.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "vhdx.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Parameters. */
static char *vn_file;	/* file=, absolute (nbdkit changes to / later) */
static char *vn_parent; /* parent=, absolute, or NULL */
static int vn_sparse;	/* sparse=true */

/*
 * The image, opened by vn_open_image() and closed at exit.  vn_mutex
 * serializes opening against the connections' .open; the data path reads
 * vn_img without it, as it only changes while no connection is open.
 */
static pthread_mutex_t vn_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct vhdx_image *vn_img;
static int vn_img_ro; /* vn_img was opened with VHDX_OPEN_RDONLY */
static int vn_fd = -1;
static int vn_conns; /* connections open */
static struct vhdx_io vn_io;

/* A connection only needs to remember whether it may write. */
static int vn_handle_ro = 1, vn_handle_rw = 0;

/* library errors seen: vn_open_image adds a reason only if none came */
static int vn_nerr;

static void vn_msg(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	(void)opaque;
	if (level <= VHDX_MSG_ERR) {
		__atomic_add_fetch(&vn_nerr, 1, __ATOMIC_RELAXED);
		nbdkit_error("%s: %s", vn_file, msg);
	} else if (level == VHDX_MSG_WARNING) {
		nbdkit_error("%s: warning: %s", vn_file, msg);
	} else {
		nbdkit_debug("%s: %s", vn_file, msg);
	}
}

static void vn_unload(void)
{
	free(vn_file);
	free(vn_parent);
}

static int vn_config(const char *key, const char *value)
{
	char **dst = NULL;

	if (!strcmp(key, "file"))
		dst = &vn_file;
	else if (!strcmp(key, "parent"))
		dst = &vn_parent;
	if (dst) {
		free(*dst);
		*dst = nbdkit_realpath(value);
		return *dst ? 0 : -1;
	}
	if (!strcmp(key, "sparse")) {
		vn_sparse = nbdkit_parse_bool(value);
		return vn_sparse < 0 ? -1 : 0;
	}
	nbdkit_error("unknown parameter '%s'", key);
	return -1;
}

static int vn_config_complete(void)
{
	if (!vn_file) {
		nbdkit_error("you must supply the file=IMAGE parameter");
		return -1;
	}
	return 0;
}

#define vn_config_help                                                      \
	"file=IMAGE      (required) the VHDX image to serve\n"              \
	"parent=PATH     the parent of a differencing image (default: its " \
	"locator)\n"                                                        \
	"sparse=true     keep newly allocated blocks sparse in the image file"

static void vn_dump_plugin(void)
{
	printf("vhdx_library_version=%s\n", vhdx_version());
}

/*
 * Close the image and drop the lock explicitly: a process nbdkit forked
 * (--run) shares the open file description, so closing our descriptor
 * alone would leave the lock in place.
 */
static void vn_close_image(void)
{
	struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
	int ret;

	if (!vn_img)
		return;
	ret = vhdx_close(vn_img);
	if (ret)
		nbdkit_error("%s: closing the image: %s", vn_file,
			     strerror(-ret));
	vn_img = NULL;
	fcntl(vn_fd, F_OFD_SETLK, &fl);
	close(vn_fd);
	vn_fd = -1;
}

/*
 * Open the image file, lock it (shared read-only, else exclusive, as
 * vhdxfuse and vhdxtool do) and open the image on it.  0 or -1 with the
 * reason sent to nbdkit_error.
 */
static int vn_open_image(int ro)
{
	struct vhdx_open_opts o = {
	    .flags = (ro ? VHDX_OPEN_RDONLY : 0) |
		     (vn_sparse ? VHDX_OPEN_SPARSE : 0),
	    .msg = vn_msg,
	    .path = vn_file,
	    .parent_path = vn_parent,
	};
	struct vhdx_file_status fs;
	int ret, nerr = __atomic_load_n(&vn_nerr, __ATOMIC_RELAXED);

	/* the library's one way to open and lock an image file */
	ret = vhdx_file_open(vn_file, ro ? 0 : VHDX_FILE_WRITE,
			     VHDX_LOCK_WAIT_DEFAULT_MS, &vn_fd, &fs);
	if (ret == -EBUSY) {
		char who[4200];

		vhdx_lock_holder_describe(&fs.holder, who, sizeof(who));
		nbdkit_error("%s is in use (%s)", vn_file, who);
		return -1;
	}
	if (ret < 0) {
		nbdkit_error(
		    "%s: %s%s", vn_file,
		    ret == -EINVAL ? "not a regular file" : strerror(-ret),
		    !ro && (ret == -EACCES || ret == -EROFS || ret == -EPERM)
			? " (nbdkit -r serves it read-only)"
			: "");
		return -1;
	}
	if (!fs.locked)
		nbdkit_debug("%s: cannot lock (%s); continuing without a lock",
			     vn_file, strerror(fs.lock_errno));
	vhdx_io_fd_init(&vn_io, &vn_fd);
	ret = vhdx_open(&vn_img, &vn_io, &o);
	if (ret) {
		vn_img = NULL;
		if (__atomic_load_n(&vn_nerr, __ATOMIC_RELAXED) == nerr)
			nbdkit_error("%s: cannot open the image: %s", vn_file,
				     strerror(-ret));
		goto fail;
	}
	vn_img_ro = ro;
	nbdkit_debug("%s: opened %s", vn_file, ro ? "read-only" : "read-write");
	return 0;
fail:
	close(vn_fd);
	vn_fd = -1;
	return -1;
}

/* Validate the image before the first client, with the lock -r takes. */
static int vn_get_ready(void)
{
	return vn_open_image(1);
}

static void vn_cleanup(void)
{
	vn_close_image();
}

static void *vn_open(int readonly)
{
	void *h = NULL;

	pthread_mutex_lock(&vn_mutex);
	if (!readonly && vn_img && vn_img_ro && !vn_conns)
		vn_close_image(); /* the startup check: reopen to write */
	if (vn_img || vn_open_image(readonly) == 0) {
		h = readonly ? &vn_handle_ro : &vn_handle_rw;
		vn_conns++;
	}
	pthread_mutex_unlock(&vn_mutex);
	return h;
}

static void vn_close(void *handle)
{
	pthread_mutex_lock(&vn_mutex);
	vn_conns--;
	pthread_mutex_unlock(&vn_mutex);
}

static int64_t vn_get_size(void *handle)
{
	return (int64_t)vhdx_virtual_size(vn_img);
}

static int vn_can_write(void *handle)
{
	return !*(int *)handle && !vhdx_is_read_only(vn_img);
}

static int vn_can_true(void *handle)
{
	return 1;
}

static int vn_can_fua(void *handle)
{
	return NBDKIT_FUA_NATIVE;
}

/* Fail with -ret (a negative errno from the library). */
static int vn_fail(int ret, const char *what, uint32_t count, uint64_t off)
{
	nbdkit_debug("%s of %" PRIu32 " bytes at %" PRIu64 ": %s", what, count,
		     off, strerror(-ret));
	nbdkit_set_error(-ret);
	return -1;
}

static int vn_fua(uint32_t flags, const char *what, uint32_t count,
		  uint64_t off)
{
	int ret;

	if (!(flags & NBDKIT_FLAG_FUA))
		return 0;
	ret = vhdx_flush(vn_img);
	return ret ? vn_fail(ret, what, count, off) : 0;
}

static int vn_pread(void *handle, void *buf, uint32_t count, uint64_t off,
		    uint32_t flags)
{
	long n = vhdx_read(vn_img, buf, count, off);

	if (n >= 0 && n != (long)count)
		n = -EIO; /* nbdkit checks the range: cannot happen */
	return n < 0 ? vn_fail((int)n, "read", count, off) : 0;
}

static int vn_pwrite(void *handle, const void *buf, uint32_t count,
		     uint64_t off, uint32_t flags)
{
	long n = vhdx_write(vn_img, buf, count, off);

	if (n >= 0 && n != (long)count)
		n = -EIO;
	if (n < 0)
		return vn_fail((int)n, "write", count, off);
	return vn_fua(flags, "write", count, off);
}

static int vn_flush(void *handle, uint32_t flags)
{
	int ret = vhdx_flush(vn_img);

	return ret ? vn_fail(ret, "flush", 0, 0) : 0;
}

static int vn_zero_range(uint32_t count, uint64_t off, uint32_t flags,
			 unsigned int zflags, const char *what)
{
	int ret = vhdx_zero(vn_img, off, count, zflags);

	if (ret)
		return vn_fail(ret, what, count, off);
	return vn_fua(flags, what, count, off);
}

/* Discard: whole blocks become ZERO and holes in the image file. */
static int vn_trim(void *handle, uint32_t count, uint64_t off, uint32_t flags)
{
	return vn_zero_range(count, off, flags, VHDX_ZERO_UNMAP, "trim");
}

static int vn_zero(void *handle, uint32_t count, uint64_t off, uint32_t flags)
{
	unsigned int zflags =
	    flags & NBDKIT_FLAG_MAY_TRIM ? VHDX_ZERO_UNMAP : 0;

	return vn_zero_range(count, off, flags, zflags, "zero");
}

/*
 * The extent type of the run at off (at most len bytes), from the library's
 * block query: through the parent chain, with the sector bitmaps of
 * partially present blocks.
 */
static int vn_extent(uint64_t off, uint64_t len, uint64_t *run, uint32_t *type)
{
	struct vhdx_extent_info x;
	int ret = vhdx_query(vn_img, off, len, &x);

	if (ret)
		return ret;
	*run = x.length;
	*type = x.source == VHDX_SOURCE_ZERO
		    ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO
		    : 0;
	return 0;
}

static int vn_extents(void *handle, uint32_t count, uint64_t off,
		      uint32_t flags, struct nbdkit_extents *extents)
{
	uint64_t end = off + count;

	while (off < end) {
		uint64_t run = 0;
		uint32_t type = 0;
		int ret = vn_extent(off, end - off, &run, &type);

		if (ret)
			return vn_fail(ret, "extents", count, off);
		if (nbdkit_add_extent(extents, off, run, type))
			return -1;
		off += run;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static int vn_thread_model(void)
{
	return NBDKIT_THREAD_MODEL_PARALLEL;
}

static struct nbdkit_plugin plugin = {
    .name = "vhdx",
    .longname = "nbdkit VHDX plugin (vhdxfuse)",
    .version = PACKAGE_VERSION,
    .description = "serve the virtual disk of a VHDX image",
    .unload = vn_unload,
    .config = vn_config,
    .config_complete = vn_config_complete,
    .config_help = vn_config_help,
    .magic_config_key = "file",
    .dump_plugin = vn_dump_plugin,
    .get_ready = vn_get_ready,
    .cleanup = vn_cleanup,
    .open = vn_open,
    .close = vn_close,
    .get_size = vn_get_size,
    .can_write = vn_can_write,
    .can_flush = vn_can_true,
    .can_trim = vn_can_true,
    .can_zero = vn_can_true,
    .can_fua = vn_can_fua,
    .can_multi_conn = vn_can_true,
    .can_extents = vn_can_true,
    .pread = vn_pread,
    .pwrite = vn_pwrite,
    .flush = vn_flush,
    .trim = vn_trim,
    .zero = vn_zero,
    .extents = vn_extents,
    .thread_model = vn_thread_model,
    .errno_is_preserved = 0,
};

struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
