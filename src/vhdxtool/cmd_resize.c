/*
 * cmd_resize.c - `vhdxtool resize -s SIZE IMAGE`: grow or shrink the
 * virtual disk of an image in place (vhdx_resize), offline.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "vhdxtool.h"

enum {
	VT_OPT_ALLOW_LOSS = 0x200,
	VT_OPT_RESIZE_SPARSE,
};

struct vt_resize_cmd {
	const char *image;
	const char *size;
	unsigned int flags;
};

static void vt_resize_help(void)
{
	printf("usage: " VT_PROG " resize -s [+|-]SIZE [options] IMAGE\n"
	       "\n"
	       "Change the size of IMAGE's virtual disk, crash-safely (the "
	       "image keeps\n"
	       "its old size or gets the new one).  New space reads as "
	       "zeros; a fixed\n"
	       "image gets new, reserved blocks.  A shrink is refused when "
	       "the part cut\n"
	       "off holds data or a partition ends past the new size, "
	       "unless --force.\n"
	       "The image's children (differencing images) no longer open "
	       "afterwards.\n"
	       "Grow the file system or partition inside afterwards (e.g. "
	       "resize2fs);\n"
	       "shrink it before shrinking the disk.  A mounted image is "
	       "refused: grow\n"
	       "a mounted disk with truncate -s SIZE on its file under the "
	       "mount point.\n"
	       "\n"
	       "Options:\n"
	       "  -s, --size [+|-]SIZE       the new size, or a change of it; "
	       "suffixes\n"
	       "                             K, M, G, T (binary); a multiple "
	       "of the\n"
	       "                             logical sector size\n"
	       "  -f, --force, --allow-data-loss\n"
	       "                             shrink even if data or a "
	       "partition is cut off\n"
	       "      --sparse               do not reserve the new blocks of "
	       "a fixed\n"
	       "                             image on the host (they take no "
	       "space\n"
	       "                             until written)\n"
	       "  -q, --quiet                print nothing but errors\n"
	       "  -v, --verbose              also print informational "
	       "messages\n"
	       "  -h, --help                 print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_resize_longopts[] = {
    {"size", required_argument, NULL, 's'},
    {"force", no_argument, NULL, 'f'},
    {"allow-data-loss", no_argument, NULL, VT_OPT_ALLOW_LOSS},
    {"sparse", no_argument, NULL, VT_OPT_RESIZE_SPARSE},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_resize_parse(int argc, char **argv, struct vt_resize_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "s:fqvh", vt_resize_longopts,
				 NULL)) != -1) {
		switch (ch) {
		case 's':
			c->size = optarg;
			break;
		case 'f':
		case VT_OPT_ALLOW_LOSS:
			c->flags |= VHDX_RESIZE_ALLOW_DATA_LOSS;
			break;
		case VT_OPT_RESIZE_SPARSE:
			c->flags |= VHDX_RESIZE_SPARSE;
			break;
		case 'q':
			vt_quiet = 1;
			break;
		case 'v':
			vt_verbose = 1;
			break;
		case 'h':
			vt_resize_help();
			return -1;
		default:
			return vt_bad_option("resize", argv);
		}
	}
	if (!c->size)
		return vt_usage_err("resize", "no size given (-s SIZE)");
	if (vt_one_operand("resize", "IMAGE", argc, argv, &c->image))
		return VT_EXIT_USAGE;
	return 0;
}

/* SIZE, +SIZE or -SIZE against the current size. */
static int vt_resize_target(const char *s, uint64_t cur, uint64_t *out)
{
	uint64_t v;
	int sign = 0;

	if (*s == '+' || *s == '-')
		sign = *s++ == '+' ? 1 : -1;
	if (vt_parse_size(s, &v) < 0)
		return -EINVAL;
	if (sign > 0 && v > UINT64_MAX - cur)
		return -EINVAL;
	if (sign < 0 && v >= cur)
		return -EINVAL;
	*out = sign > 0 ? cur + v : sign < 0 ? cur - v : v;
	return 0;
}

int vt_cmd_resize(int argc, char **argv)
{
	struct vt_resize_cmd c = {0};
	struct vt_image vi;
	char before[32], after[32];
	uint64_t cur, target;
	int ret, status;

	ret = vt_resize_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	vt_busy_hint = "to grow a mounted disk, truncate -s SIZE its file "
		       "under the mount point (Online grow in vhdxfuse(1)); "
		       "to shrink it, unmount first";
	status = vt_image_open(&vi, c.image, true, NULL, NULL);
	if (status)
		return status;
	cur = vhdx_virtual_size(vi.img);
	if (vt_resize_target(c.size, cur, &target) < 0) {
		vt_image_close(&vi);
		return vt_usage_err("resize", "invalid size '%s'", c.size);
	}
	ret = vhdx_resize(vi.img, target, c.flags);
	if (ret == -EINVAL || ret == -EFBIG) {
		/* the library said why; nothing was changed */
		status = ret == -EINVAL ? VT_EXIT_USAGE : VT_EXIT_PROBLEMS;
	} else if (ret < 0) {
		vt_err("%s: resize failed: %s", c.image, strerror(-ret));
		status = VT_EXIT_FAILURE;
	}
	ret = vt_image_close(&vi);
	if (!status)
		status = ret;
	if (!status && !vt_quiet) {
		vt_human_size(cur, before, sizeof(before));
		vt_human_size(target, after, sizeof(after));
		printf("%s: virtual size %s -> %s\n", c.image, before, after);
	}
	return status;
}
