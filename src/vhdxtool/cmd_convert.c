/*
 * cmd_convert.c - `vhdxtool convert IN OUT` between raw and VHDX images in
 * either direction (and VHDX to VHDX: a fresh, compact copy).  IN is
 * recognised by its content and other containers are refused; OUT's format
 * comes from -O or its name, which must agree.
 *
 * Only data is copied: holes of a raw input (SEEK_DATA/SEEK_HOLE) and
 * blocks a VHDX input does not store are skipped without reading, and
 * all-zero 4 KiB pieces of what is read are not written, so VHDX output
 * allocates no block that holds only zeros and raw output stays sparse.
 * OUT is written as an unnamed file linked under its name when complete
 * (vt_outfile).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
	const char *out_format; /* -O, NULL: from OUT's name */
	const char *in_format;	/* --input-format, NULL: from IN's content */
	bool force;
	const char *in, *out;
};

#define VT_OPT_INPUT_FORMAT 0x200

static void vt_convert_help(void)
{
	printf("usage: " VT_PROG " convert [options] IN OUT\n"
	       "\n"
	       "Convert a raw disk image to VHDX, a VHDX image to raw, or "
	       "make a fresh,\n"
	       "compact copy of a VHDX image.  The format of IN is "
	       "recognised by its\n"
	       "content: other containers (VHD, qcow2, VMDK, VDI, QED) are "
	       "refused with\n"
	       "exit status 2; convert them with qemu-img convert.  OUT is "
	       "VHDX if its\n"
	       "name ends in .vhdx or .avhdx, else raw, unless -O says "
	       "otherwise; -O\n"
	       "must not contradict the name (.vhdx or .avhdx, or .raw, "
	       ".img or .bin).\n"
	       "Blocks holding only zeros are not allocated in a VHDX OUT, "
	       "a raw OUT is\n"
	       "sparse.  OUT appears only when complete; until then it is "
	       "an unnamed\n"
	       "file that vanishes whatever stops the command.\n"
	       "\n"
	       "Options:\n"
	       "  -O, --output-format FMT    raw or vhdx\n"
	       "      --input-format FMT     raw: copy IN's bytes as a raw "
	       "disk, whatever\n"
	       "                             they contain; vhdx: IN must be "
	       "VHDX\n"
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
    {"input-format", required_argument, NULL, VT_OPT_INPUT_FORMAT},
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
	case VT_OPT_INPUT_FORMAT:
		if (strcmp(arg, "raw") && strcmp(arg, "vhdx"))
			return vt_usage_err("convert",
					    "unknown input format '%s' "
					    "(expected raw or vhdx)",
					    arg);
		c->in_format = arg;
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

/* ---- what IN and OUT are ---- */

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

/* What the first and last bytes of a file say it is. */
struct vt_kind {
	const char *name; /* for messages; NULL: raw */
	const char *qemu; /* qemu-img's format name */
	bool vhdx;	  /* ours */
};

static const struct vt_kind vt_kind_raw = {NULL, "raw", false};
static const struct vt_kind vt_kind_vhdx = {"VHDX", "vhdx", true};

static bool vt_has(const uint8_t *buf, size_t n, size_t off, const char *sig,
		   size_t len)
{
	return off + len <= n && !memcmp(buf + off, sig, len);
}

/* A VMDK descriptor: a text file starting with its comment line. */
static bool vt_vmdk_descriptor(const uint8_t *buf, size_t n)
{
	static const char line[] = "# Disk DescriptorFile";
	size_t i = 0;

	if (n >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3))
		i = 3;
	while (i < n && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' ||
			 buf[i] == '\n'))
		i++;
	return vt_has(buf, n, i, line, sizeof(line) - 1);
}

/*
 * Recognise IN by its content.  A VHD's footer ("conectix") is at the end
 * of a fixed VHD (512 bytes, or 511 in files of old Virtual PC versions)
 * and copied at offset 0 in dynamic and differencing ones.
 */
static int vt_probe(int fd, uint64_t size, const struct vt_kind **kind)
{
	static const struct vt_kind kinds[] = {
	    {"VHD (dynamic or differencing)", "vpc", false},
	    {"VHD (fixed)", "vpc", false},
	    {"qcow", "qcow2", false},
	    {"QED", "qed", false},
	    {"VMDK (sparse)", "vmdk", false},
	    {"VMDK (descriptor file)", "vmdk", false},
	    {"VDI", "vdi", false},
	};
	uint8_t head[4096], tail[512];
	long n, t = 0;

	n = vt_pread_full(fd, head, sizeof(head), 0);
	if (n < 0)
		return (int)n;
	if (size >= sizeof(tail)) {
		t = vt_pread_full(fd, tail, sizeof(tail), size - sizeof(tail));
		if (t < 0)
			return (int)t;
	}
	*kind = &vt_kind_raw;
	if (vt_has(head, (size_t)n, 0, "vhdxfile", 8))
		*kind = &vt_kind_vhdx;
	else if (vt_has(head, (size_t)n, 0, "conectix", 8))
		*kind = &kinds[0];
	else if (vt_has(tail, (size_t)t, 0, "conectix", 8) ||
		 vt_has(tail, (size_t)t, 1, "conectix", 8))
		*kind = &kinds[1];
	else if (vt_has(head, (size_t)n, 0, "QFI\xfb", 4))
		*kind = &kinds[2];
	else if (vt_has(head, (size_t)n, 0, "QED\0", 4))
		*kind = &kinds[3];
	else if (vt_has(head, (size_t)n, 0, "KDMV", 4) ||
		 vt_has(head, (size_t)n, 0, "COWD", 4))
		*kind = &kinds[4];
	else if (vt_vmdk_descriptor(head, (size_t)n))
		*kind = &kinds[5];
	else if (vt_has(head, (size_t)n, 0x40, "\x7f\x10\xda\xbe", 4))
		*kind = &kinds[6];
	return 0;
}

/* What OUT's name says: "vhdx", "raw", NULL (nothing) or another format. */
static const char *vt_name_format(const char *path, const char **other)
{
	static const char *const raw[] = {"raw", "img", "bin"};
	static const char *const others[] = {"vhd",   "avhd", "vpc",  "qcow",
					     "qcow2", "qed",  "vmdk", "vdi"};
	const char *slash = strrchr(path, '/');
	const char *dot = strrchr(slash ? slash + 1 : path, '.');

	*other = NULL;
	if (!dot || dot[1] == '\0')
		return NULL;
	dot++;
	if (!strcasecmp(dot, "vhdx") || !strcasecmp(dot, "avhdx"))
		return "vhdx";
	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++)
		if (!strcasecmp(dot, raw[i]))
			return "raw";
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		if (!strcasecmp(dot, others[i])) {
			*other = dot;
			return NULL;
		}
	return NULL;
}

/* OUT's format from -O and its name; 0 or VT_EXIT_USAGE after a message. */
static int vt_out_format(const struct vt_convert_cmd *c, bool *vhdx)
{
	const char *other, *named = vt_name_format(c->out, &other);

	if (other)
		return vt_usage_err("convert",
				    "%s: vhdxtool writes raw and VHDX images "
				    "only, not .%s; name OUT .vhdx or .raw, "
				    "or use qemu-img convert -O FORMAT for "
				    "other formats",
				    c->out, other);
	if (c->out_format && named && strcmp(c->out_format, named))
		return vt_usage_err("convert",
				    "-O %s contradicts the name %s, which "
				    "says %s; rename OUT or drop -O",
				    c->out_format, c->out, named);
	*vhdx = !strcmp(c->out_format ? c->out_format
			: named	      ? named
				      : "raw",
			"vhdx");
	return 0;
}

/* ---- the input ---- */

/* Refuse a container vhdxtool does not read, with the way to convert it. */
static int vt_refuse_kind(const struct vt_convert_cmd *c,
			  const struct vt_kind *k)
{
	vt_err("%s is a %s image, not a raw disk or VHDX; vhdxtool converts "
	       "only those.\n"
	       "  Convert it with qemu-img: qemu-img convert -f %s -O vhdx "
	       "%s OUT.vhdx\n"
	       "  (or -O raw OUT.raw).  To copy its bytes as a raw disk "
	       "anyway, add\n"
	       "  --input-format raw.",
	       c->in, k->name, k->qemu, c->in);
	return VT_EXIT_PROBLEMS;
}

static int vt_src_open(struct vt_src *s, const struct vt_convert_cmd *c)
{
	const char *path = c->in;
	const struct vt_kind *kind = &vt_kind_raw;
	struct vhdx_io io;
	int ret;

	s->path = path;
	s->fd = -1;
	ret = vt_open_input(path, &s->fd);
	if (ret)
		return ret;
	vhdx_io_fd_init(&io, &s->fd);
	ret = io.size(io.opaque, &s->size);
	if (ret == 0)
		ret = vt_probe(s->fd, s->size, &kind);
	if (ret < 0) {
		vt_err("%s: %s", path, strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	if (c->in_format && !strcmp(c->in_format, "raw")) {
		if (kind != &vt_kind_raw)
			vt_note("%s looks like a %s image; copying its bytes "
				"as a raw disk (--input-format raw)",
				path, kind->name);
		kind = &vt_kind_raw;
	} else if (c->in_format && !kind->vhdx) {
		vt_err("%s is not a VHDX image (--input-format vhdx)", path);
		return VT_EXIT_PROBLEMS;
	} else if (kind != &vt_kind_raw && !kind->vhdx) {
		return vt_refuse_kind(c, kind);
	}
	s->vhdx = kind->vhdx;
	if (s->vhdx) {
		close(s->fd);
		s->fd = -1;
		ret = vt_image_open(&s->vi, path, false, NULL, NULL);
		if (ret == 0)
			s->size = vhdx_virtual_size(s->vi.img);
		return ret;
	}
	s->seek_data = true;
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
	ret = vt_out_format(&c, &d.vhdx);
	if (ret)
		goto out;
	ret = vt_src_open(&s, &c);
	if (ret)
		goto out;
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
