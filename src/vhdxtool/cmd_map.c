/*
 * cmd_map.c - `vhdxtool map [--json] IMAGE`: the extents of the virtual
 * disk, each with what it reads from (data in the file of the image at some
 * depth of the chain, or zeros), the BAT state that says so and the place
 * in that file, as `qemu-img map` shows them for the formats it maps.  One
 * line per answer of vhdx_query.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "vhdxtool.h"

struct vt_map_cmd {
	const char *path;
	const char *parent; /* --parent */
	bool json;
};

/* The file of the image depth levels down the chain. */
static const char *vt_map_file(const struct vt_map_cmd *c,
			       struct vhdx_image *img, int depth)
{
	if (depth == 0)
		return c->path;
	for (int d = 1; d < depth && img; d++)
		img = vhdx_parent(img);
	return img ? vhdx_parent_path(img) : "";
}

static void vt_map_json(struct vt_json *j, const struct vt_map_cmd *c,
			struct vhdx_image *img, uint64_t off,
			const struct vhdx_extent_info *x)
{
	bool data = x->source == VHDX_SOURCE_FILE;

	vt_json_object(j, NULL);
	vt_json_u64(j, "start", off);
	vt_json_u64(j, "length", x->length);
	vt_json_u64(j, "depth", (uint64_t)x->depth);
	vt_json_str(j, "state", vhdx_block_state_name(x->state));
	vt_json_bool(j, "data", data);
	vt_json_bool(j, "zero", !data);
	if (data) {
		vt_json_u64(j, "offset", x->file_offset);
		vt_json_str(j, "file", vt_map_file(c, img, x->depth));
	}
	vt_json_close_object(j);
}

static void vt_map_text(const struct vt_map_cmd *c, struct vhdx_image *img,
			uint64_t off, const struct vhdx_extent_info *x)
{
	if (x->source == VHDX_SOURCE_FILE)
		printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " data  %-5d %-18s "
		       "0x%-16" PRIx64 " %s\n",
		       off, x->length, x->depth,
		       vhdx_block_state_name(x->state), x->file_offset,
		       vt_map_file(c, img, x->depth));
	else
		printf("0x%-16" PRIx64 " 0x%-16" PRIx64 " zero  %-5d %-18s -\n",
		       off, x->length, x->depth,
		       vhdx_block_state_name(x->state));
}

static int vt_map_run(const struct vt_map_cmd *c, struct vhdx_image *img)
{
	uint64_t size = vhdx_virtual_size(img), off = 0;
	struct vt_json j;

	if (c->json) {
		vt_json_begin(&j, stdout);
		vt_json_array(&j, NULL);
	} else {
		printf("%-18s %-18s %-5s %-5s %-18s %-18s %s\n", "Start",
		       "Length", "Reads", "Depth", "State", "Offset", "File");
	}
	while (off < size && !vt_interrupted) {
		struct vhdx_extent_info x;
		int ret = vhdx_query(img, off, size - off, &x);

		if (ret < 0) {
			vt_err("%s: cannot map the disk at offset %" PRIu64
			       ": %s",
			       c->path, off, strerror(-ret));
			return ret == -EIO ? VT_EXIT_PROBLEMS : VT_EXIT_FAILURE;
		}
		if (c->json)
			vt_map_json(&j, c, img, off, &x);
		else
			vt_map_text(c, img, off, &x);
		off += x.length;
	}
	if (c->json) {
		vt_json_close_array(&j);
		vt_json_end(&j);
	}
	return vt_interrupted ? VT_EXIT_FAILURE : VT_EXIT_OK;
}

static void vt_map_help(void)
{
	printf("usage: " VT_PROG " map [options] IMAGE\n"
	       "\n"
	       "Print the extents of the virtual disk in order: where each "
	       "reads from\n"
	       "(data in the file of the image at DEPTH of a differencing "
	       "chain, 0 being\n"
	       "IMAGE, or zeros), the state of its block there and, for "
	       "data, its offset\n"
	       "in that file.  The image is opened read-only.\n"
	       "\n"
	       "Options:\n"
	       "      --json         one JSON array of {start, length, depth, "
	       "state, data,\n"
	       "                     zero, offset, file} objects, like "
	       "qemu-img map\n"
	       "                     --output=json\n"
	       "      --parent PARENT\n"
	       "                     the parent of a differencing image, "
	       "instead of the\n"
	       "                     file its parent locator names\n"
	       "  -h, --help         print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_map_longopts[] = {
    {"json", no_argument, NULL, VT_OPT_JSON},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_map_parse(int argc, char **argv, struct vt_map_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "h", vt_map_longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case VT_OPT_JSON:
			c->json = true;
			break;
		case VT_OPT_PARENT:
			c->parent = optarg;
			break;
		case 'h':
			vt_map_help();
			return -1;
		default:
			return vt_bad_option("map", argv);
		}
	}
	if (vt_one_operand("map", "IMAGE", argc, argv, &c->path))
		return VT_EXIT_USAGE;
	return 0;
}

int vt_cmd_map(int argc, char **argv)
{
	struct vt_map_cmd c = {0};
	struct vt_image vi;
	int ret, ret2;

	ret = vt_map_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	vt_catch_signals();
	ret = vt_image_open_chain(&vi, c.path, c.parent, false, NULL, NULL);
	if (ret)
		return ret;
	ret = vt_map_run(&c, vi.img);
	ret2 = vt_image_close(&vi);
	return ret ? ret : ret2;
}
