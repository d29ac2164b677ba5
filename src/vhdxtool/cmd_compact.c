/*
 * cmd_compact.c - vhdxtool compact: shrink an image file in place (the
 * library does the work: vhdx_compact, compact.c).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

struct vt_compact_cmd {
	const char *path;
	const char *parent;
	bool zeros;
	bool json;
};

static void vt_compact_help(void)
{
	printf("usage: " VT_PROG " compact [options] IMAGE\n"
	       "\n"
	       "Shrink the file of a VHDX image in place, as Hyper-V's "
	       "Optimize-VHD does:\n"
	       "move blocks from the end of the file into free places "
	       "(space given back\n"
	       "by discard, e.g. fstrim), then cut the file after its last "
	       "used byte.  The\n"
	       "result has no holes.  Every GUID is kept, so differencing "
	       "children of the\n"
	       "image stay linked; a parent is never written.  Each move is "
	       "crash-safe:\n"
	       "an interrupted compact leaves a valid image with the same "
	       "data.  The image\n"
	       "must not be in use (mounted).\n"
	       "\n"
	       "Options:\n"
	       "  -z, --zeros    first turn blocks whose data is all zeros "
	       "into blocks\n"
	       "                 without data (in a differencing image they "
	       "still hide\n"
	       "                 the parent)\n"
	       "      --parent PARENT\n"
	       "                 the parent of a differencing image, "
	       "instead of the file\n"
	       "                 its parent locator names (only read)\n"
	       "      --json     print the summary as JSON\n"
	       "  -q, --quiet    no progress indicator, no summary\n"
	       "  -h, --help     print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_compact_longopts[] = {
    {"zeros", no_argument, NULL, 'z'},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"json", no_argument, NULL, VT_OPT_JSON},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_compact_parse(int argc, char **argv, struct vt_compact_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "zqh", vt_compact_longopts,
				 NULL)) != -1) {
		switch (ch) {
		case 'z':
			c->zeros = true;
			break;
		case VT_OPT_PARENT:
			c->parent = optarg;
			break;
		case VT_OPT_JSON:
			c->json = true;
			break;
		case 'q':
			vt_quiet = 1;
			break;
		case 'h':
			vt_compact_help();
			return -1;
		default:
			return vt_bad_option("compact", argv);
		}
	}
	if (vt_one_operand("compact", "IMAGE", argc, argv, &c->path))
		return VT_EXIT_USAGE;
	return 0;
}

static void vt_compact_report(const struct vt_compact_cmd *c,
			      const struct vhdx_compact_result *r)
{
	char before[32], after[32], freed[32];

	if (c->json) {
		struct vt_json j;

		vt_json_begin(&j, stdout);
		vt_json_object(&j, NULL);
		vt_json_str(&j, "image", c->path);
		vt_json_u64(&j, "size_before", r->size_before);
		vt_json_u64(&j, "size_after", r->size_after);
		vt_json_u64(&j, "blocks_moved", r->blocks_moved);
		vt_json_u64(&j, "bitmaps_moved", r->bitmaps_moved);
		vt_json_u64(&j, "blocks_zeroed", r->blocks_zeroed);
		vt_json_u64(&j, "free_bytes_left", r->free_bytes);
		vt_json_close_object(&j);
		vt_json_end(&j);
		return;
	}
	if (vt_quiet)
		return;
	vt_human_size(r->size_before, before, sizeof(before));
	vt_human_size(r->size_after, after, sizeof(after));
	vt_human_size(
	    r->size_before > r->size_after ? r->size_before - r->size_after : 0,
	    freed, sizeof(freed));
	printf("%s: %s -> %s (%s given back); %llu block%s moved", c->path,
	       before, after, freed, (unsigned long long)r->blocks_moved,
	       r->blocks_moved == 1 ? "" : "s");
	if (r->bitmaps_moved)
		printf(", %llu sector bitmap block%s moved",
		       (unsigned long long)r->bitmaps_moved,
		       r->bitmaps_moved == 1 ? "" : "s");
	if (c->zeros)
		printf(", %llu all-zero block%s dropped",
		       (unsigned long long)r->blocks_zeroed,
		       r->blocks_zeroed == 1 ? "" : "s");
	printf("\n");
}

int vt_cmd_compact(int argc, char **argv)
{
	struct vt_compact_cmd c = {0};
	struct vhdx_compact_opts o = {0};
	struct vhdx_compact_result r;
	struct vt_progress p;
	struct vt_image vi;
	int ret, ret2;

	ret = vt_compact_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	/* exclusive lock: refused while mounted; the parent is opened read-only */
	ret = vt_image_open_chain(&vi, c.path, c.parent, true, NULL,
				  (void *)c.path);
	if (ret)
		return ret;
	vt_progress_begin(&p, "compacting", 0);
	o.flags = c.zeros ? VHDX_COMPACT_ZEROS : 0;
	o.progress = vt_progress_cb;
	o.progress_opaque = &p;
	o.stop = &vt_interrupted;
	ret = vhdx_compact(vi.img, &o, &r);
	vt_progress_end(&p);
	ret2 = vt_image_close(&vi);
	if (ret == -EINTR) {
		vt_err("%s: interrupted; the blocks moved so far stay moved, "
		       "the image reads as before (run compact again to "
		       "finish)",
		       c.path);
		return VT_EXIT_FAILURE;
	}
	if (ret < 0) {
		vt_err("%s: compact failed: %s; the image is consistent and "
		       "reads as before",
		       c.path, strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	if (ret2)
		return ret2;
	vt_compact_report(&c, &r);
	return VT_EXIT_OK;
}
