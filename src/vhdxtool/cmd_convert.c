/*
 * cmd_convert.c - `vhdxtool convert IN OUT` between raw and VHDX images in
 * either direction (and VHDX to VHDX, to change the layout).
 *
 * Only data is copied: holes of a raw input (SEEK_DATA/SEEK_HOLE) and
 * blocks a VHDX input does not store are skipped without reading, and
 * all-zero 4 KiB pieces of what is read are not written, so VHDX output
 * allocates no block that holds only zeros and raw output stays sparse.
 * OUT is written under a temporary name and renamed when complete.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

#define VT_CHUNK (1024 * 1024) /* read size */
#define VT_GRAIN 4096	       /* zero detection granularity */

struct vt_src {
	const char *path;
	bool vhdx;
	int fd;		    /* raw input */
	bool seek_data;	    /* SEEK_DATA/SEEK_HOLE work on fd */
	struct vt_image vi; /* VHDX input */
	uint64_t size;
};

struct vt_dst {
	const char *path;
	bool vhdx;
	struct vt_outfile out;
	struct vhdx_io io;
	struct vhdx_image *img; /* VHDX output */
	uint64_t size;
};

struct vt_convert_cmd {
	struct vt_create_args a;
	const char *out_format; /* -O, NULL: the other format */
	bool force;
	const char *in, *out;
};

static void vt_convert_help(void)
{
	printf("usage: " VT_PROG " convert [options] IN OUT\n"
	       "\n"
	       "Convert a raw disk image to VHDX or a VHDX image to raw.  "
	       "The format of IN\n"
	       "is recognised by its content; OUT gets the other format "
	       "unless -O says\n"
	       "otherwise.  Blocks holding only zeros are not allocated in "
	       "a VHDX OUT,\n"
	       "a raw OUT is sparse.  OUT appears only when complete.\n"
	       "\n"
	       "Options:\n"
	       "  -O, --output-format FMT    raw or vhdx\n"
	       "  -f, --force                overwrite OUT if it exists\n"
	       "  -q, --quiet                no progress indicator\n"
	       "  -h, --help                 print this help and exit\n"
	       "\n"
	       "Options for a VHDX OUT (as for create; converting VHDX to "
	       "VHDX keeps\n"
	       "the geometry of IN unless given):\n" VT_CREATE_OPTIONS_HELP
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_convert_longopts[] = {
    {"output-format", required_argument, NULL, 'O'},
    {"type", required_argument, NULL, 't'},
    {"block-size", required_argument, NULL, VT_OPT_BLOCK_SIZE},
    {"logical-sector", required_argument, NULL, VT_OPT_LOGICAL},
    {"physical-sector", required_argument, NULL, VT_OPT_PHYSICAL},
    {"log-size", required_argument, NULL, VT_OPT_LOG_SIZE},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"creator", required_argument, NULL, VT_OPT_CREATOR},
    {"sparse", no_argument, NULL, VT_OPT_SPARSE},
    {"force", no_argument, NULL, 'f'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_convert_opt(struct vt_convert_cmd *c, int ch, const char *arg)
{
	switch (ch) {
	case 'O':
		if (strcmp(arg, "raw") && strcmp(arg, "vhdx"))
			return vt_usage_err("convert",
					    "unknown output format '%s' "
					    "(expected raw or vhdx)",
					    arg);
		c->out_format = arg;
		return 0;
	case 'f':
		c->force = true;
		return 0;
	case 'q':
		vt_quiet = 1;
		return 0;
	case 'h':
		vt_convert_help();
		return -1;
	default:
		return VT_EXIT_USAGE; /* reported by vt_convert_parse */
	}
}

static int vt_convert_parse(int argc, char **argv, struct vt_convert_cmd *c)
{
	int ch, ret;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "O:t:fqh", vt_convert_longopts,
				 NULL)) != -1) {
		if (ch == '?')
			return vt_bad_option("convert", argv);
		ret = vt_create_arg("convert", &c->a, ch, optarg);
		if (ret < 0)
			ret = vt_convert_opt(c, ch, optarg);
		if (ret)
			return ret;
	}
	if (c->a.o.type == VHDX_TYPE_DIFFERENCING || c->a.parent)
		return vt_usage_err("convert",
				    "convert writes dynamic or fixed images "
				    "only; make a differencing image with "
				    "'create -t differencing --parent PARENT'");
	if (argc - optind != 2)
		return vt_usage_err("convert", argc - optind < 2
						   ? "IN and OUT are required"
						   : "too many arguments");
	c->in = argv[optind];
	c->out = argv[optind + 1];
	return 0;
}

/* ---- the input ---- */

static int vt_src_open(struct vt_src *s, const char *path)
{
	struct vhdx_io io;
	int ret;

	s->path = path;
	s->fd = -1;
	ret = vt_open_input(path, &s->fd);
	if (ret)
		return ret;
	s->vhdx = vt_is_vhdx(s->fd);
	if (s->vhdx) {
		close(s->fd);
		s->fd = -1;
		ret = vt_image_open(&s->vi, path, false, NULL, NULL);
		if (ret == 0)
			s->size = vhdx_virtual_size(s->vi.img);
		return ret;
	}
	s->seek_data = true;
	vhdx_io_fd_init(&io, &s->fd);
	ret = io.size(io.opaque, &s->size);
	if (ret < 0) {
		vt_err("%s: %s", path, strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	return 0;
}

static void vt_src_close(struct vt_src *s)
{
	if (s->vhdx)
		vt_image_close(&s->vi);
	else if (s->fd >= 0)
		close(s->fd);
}

/* Whether [off, off + *len) of a raw input starts with data or a hole. */
static int vt_raw_status(struct vt_src *s, uint64_t off, uint64_t *len)
{
	off_t data, hole;

	if (!s->seek_data)
		return 1;
	data = lseek(s->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno == ENXIO)
		return 0; /* a hole up to the end of the file */
	if (data < 0)
		goto no_seek;
	if ((uint64_t)data > off) {
		if ((uint64_t)data - off < *len)
			*len = (uint64_t)data - off;
		return 0;
	}
	hole = lseek(s->fd, (off_t)off, SEEK_HOLE);
	if (hole < 0)
		goto no_seek;
	if ((uint64_t)hole > off && (uint64_t)hole - off < *len)
		*len = (uint64_t)hole - off;
	return 1;
no_seek:
	s->seek_data = false; /* e.g. a block device: read everything */
	return 1;
}

static int vt_src_status(struct vt_src *s, uint64_t off, uint64_t *len)
{
	if (s->vhdx)
		return vhdx_block_status(s->vi.img, off, len);
	return vt_raw_status(s, off, len);
}

static long vt_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	ssize_t r;

	while (done < len) {
		r = pread(fd, (char *)buf + done, len - done,
			  (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (long)done;
}

static int vt_src_read(struct vt_src *s, void *buf, size_t len, uint64_t off)
{
	long n = s->vhdx ? vhdx_read(s->vi.img, buf, len, off)
			 : vt_pread_full(s->fd, buf, len, off);

	if (n >= 0 && (size_t)n == len)
		return 0;
	vt_err("%s: read failed at offset %llu: %s", s->path,
	       (unsigned long long)off,
	       n < 0 ? strerror((int)-n) : "unexpected end of file");
	return -EIO;
}

/* ---- the output ---- */

static uint64_t vt_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* VHDX to VHDX: keep the geometry of IN where no option says otherwise. */
static void vt_inherit_geometry(struct vhdx_create_opts *o,
				const struct vt_src *s)
{
	struct vhdx_info info;

	if (!s->vhdx)
		return;
	vhdx_get_info(s->vi.img, &info);
	if (!o->block_size)
		o->block_size = info.block_size;
	if (!o->logical_sector)
		o->logical_sector = info.logical_sector;
	if (!o->physical_sector && info.physical_sector >= o->logical_sector)
		o->physical_sector = info.physical_sector;
}

static int vt_dst_open_vhdx(struct vt_dst *d, const struct vt_convert_cmd *c,
			    const struct vt_src *s)
{
	struct vhdx_create_opts o = c->a.o;
	struct vhdx_open_opts oo = {.msg = vt_vhdx_msg,
				    .msg_opaque = (void *)d->path};
	int ret;

	vt_inherit_geometry(&o, s);
	o.virtual_size =
	    vt_round_up(s->size, o.logical_sector ? o.logical_sector : 512);
	if (o.virtual_size != s->size)
		vt_warn("%s is %llu bytes, not a multiple of the logical "
			"sector size; %s is padded with zeros to %llu bytes",
			s->path, (unsigned long long)s->size, d->path,
			(unsigned long long)o.virtual_size);
	o.msg = vt_vhdx_msg;
	o.msg_opaque = (void *)d->path;
	vhdx_io_fd_init(&d->io, &d->out.fd);
	if (!c->a.sparse)
		vhdx_io_fd_dense(&d->io);
	ret = vhdx_create(&d->io, &o);
	if (ret < 0)
		return ret == -EINVAL ? VT_EXIT_USAGE : VT_EXIT_FAILURE;
	ret = vhdx_open(&d->img, &d->io, &oo);
	if (ret < 0)
		return VT_EXIT_FAILURE;
	d->size = o.virtual_size;
	return 0;
}

static int vt_dst_open(struct vt_dst *d, const struct vt_convert_cmd *c,
		       const struct vt_src *s)
{
	int ret;

	d->path = c->out;
	ret = vt_outfile_open(&d->out, d->path, c->force);
	if (ret)
		return ret;
	if (d->vhdx) {
		ret = vt_dst_open_vhdx(d, c, s);
	} else if (ftruncate(d->out.fd, (off_t)s->size) < 0) {
		vt_err("%s: %s", d->path, strerror(errno));
		ret = VT_EXIT_FAILURE;
	}
	d->size = s->size;
	if (ret)
		vt_outfile_abort(&d->out);
	return ret;
}

static int vt_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	ssize_t r;

	while (done < len) {
		r = pwrite(fd, (const char *)buf + done, len - done,
			   (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		done += (size_t)r;
	}
	return 0;
}

static int vt_dst_write(struct vt_dst *d, const void *buf, size_t len,
			uint64_t off)
{
	int ret;

	if (d->vhdx) {
		long n = vhdx_write(d->img, buf, len, off);

		ret = n == (long)len ? 0 : n < 0 ? (int)n : -EIO;
	} else {
		ret = vt_pwrite_full(d->out.fd, buf, len, off);
	}
	if (ret < 0)
		vt_err("%s: write failed at offset %llu: %s", d->path,
		       (unsigned long long)off, strerror(-ret));
	return ret;
}

static int vt_dst_finish(struct vt_dst *d)
{
	int ret = 0;

	if (d->img) {
		ret = vhdx_close(d->img);
		d->img = NULL;
	}
	if (ret < 0) {
		vt_err("%s: %s", d->path, strerror(-ret));
		vt_outfile_abort(&d->out);
		return VT_EXIT_FAILURE;
	}
	return vt_outfile_commit(&d->out);
}

static void vt_dst_abort(struct vt_dst *d)
{
	if (d->img)
		vhdx_close(d->img);
	d->img = NULL;
	vt_outfile_abort(&d->out);
}

/* ---- copying ---- */

static bool vt_is_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

/* Write the runs of buf that are not all-zero 4 KiB pieces. */
static int vt_write_data(struct vt_dst *d, const uint8_t *buf, size_t n,
			 uint64_t off)
{
	size_t i = 0, start, g;
	int ret;

	while (i < n) {
		while (i < n &&
		       vt_is_zero(buf + i,
				  g = n - i < VT_GRAIN ? n - i : VT_GRAIN))
			i += g;
		start = i;
		while (i < n &&
		       !vt_is_zero(buf + i,
				   g = n - i < VT_GRAIN ? n - i : VT_GRAIN))
			i += g;
		if (i > start) {
			ret = vt_dst_write(d, buf + start, i - start,
					   off + start);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Copy the data run [off, off + len). */
static int vt_copy_run(struct vt_src *s, struct vt_dst *d, uint8_t *buf,
		       uint64_t off, uint64_t len, struct vt_progress *p)
{
	int ret;

	while (len) {
		size_t n = len < VT_CHUNK ? (size_t)len : VT_CHUNK;

		if (vt_interrupted)
			return -EINTR;
		ret = vt_src_read(s, buf, n, off);
		if (ret == 0)
			ret = vt_write_data(d, buf, n, off);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
		vt_progress_update(p, off);
	}
	return 0;
}

static int vt_copy(struct vt_src *s, struct vt_dst *d)
{
	struct vt_progress p;
	uint8_t *buf = malloc(VT_CHUNK);
	uint64_t off = 0, len;
	int ret = 0, st;

	if (!buf) {
		vt_err("out of memory");
		return -ENOMEM;
	}
	vt_progress_begin(&p, "converting", s->size);
	while (off < s->size && ret == 0) {
		len = s->size - off;
		st = vt_src_status(s, off, &len);
		if (vt_interrupted) {
			ret = -EINTR;
		} else if (st < 0) {
			ret = st;
			vt_err("%s: %s", s->path, strerror(-ret));
		} else if (st) {
			ret = vt_copy_run(s, d, buf, off, len, &p);
		}
		off += len;
		vt_progress_update(&p, off);
	}
	vt_progress_end(&p);
	free(buf);
	if (ret == -EINTR)
		vt_err("interrupted; %s was not written", d->path);
	return ret;
}

int vt_cmd_convert(int argc, char **argv)
{
	struct vt_convert_cmd c = {0};
	struct vt_src s = {0};
	struct vt_dst d = {0};
	int ret;

	ret = vt_convert_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	s.vi.fd = -1;
	ret = vt_src_open(&s, c.in);
	if (ret)
		goto out;
	d.vhdx = c.out_format ? !strcmp(c.out_format, "vhdx") : !s.vhdx;
	if (!d.vhdx && c.a.any_given) {
		ret = vt_usage_err("convert", "-t, --block-size, "
					      "--logical-sector, "
					      "--physical-sector and "
					      "--log-size apply to VHDX "
					      "output only");
		goto out;
	}
	ret = vt_dst_open(&d, &c, &s);
	if (ret)
		goto out;
	if (vt_copy(&s, &d) < 0) {
		vt_dst_abort(&d);
		ret = VT_EXIT_FAILURE;
		goto out;
	}
	ret = vt_dst_finish(&d);
out:
	vt_src_close(&s);
	return ret;
}
