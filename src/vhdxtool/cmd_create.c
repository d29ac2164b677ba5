/*
 * cmd_create.c - `vhdxtool create`: a new, empty dynamic or fixed image,
 * written under a temporary name and renamed into place when complete.
 * The library (vhdx_create) lays it out and refuses invalid combinations.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "vhdxtool.h"

static void vt_create_help(void)
{
	printf("usage: " VT_PROG " create [options] -s SIZE IMAGE\n"
	       "\n"
	       "Create a new, empty VHDX image laid out as Hyper-V lays "
	       "images out.\n"
	       "\n"
	       "Options:\n"
	       "  -s, --size SIZE            virtual disk size, e.g. 10G: a "
	       "multiple of\n"
	       "                             the logical sector size, at most "
	       "64T\n" VT_CREATE_OPTIONS_HELP
	       "  -f, --force                overwrite IMAGE if it exists\n"
	       "  -q, --quiet                print nothing but errors\n"
	       "  -h, --help                 print this help and exit\n"
	       "\n"
	       "SIZE accepts the suffixes K, M, G and T (powers of 1024).\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_create_longopts[] = {
    {"type", required_argument, NULL, 't'},
    {"size", required_argument, NULL, 's'},
    {"block-size", required_argument, NULL, VT_OPT_BLOCK_SIZE},
    {"logical-sector", required_argument, NULL, VT_OPT_LOGICAL},
    {"physical-sector", required_argument, NULL, VT_OPT_PHYSICAL},
    {"log-size", required_argument, NULL, VT_OPT_LOG_SIZE},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"force", no_argument, NULL, 'f'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct vt_create_cmd {
	struct vt_create_args a;
	bool force;
	const char *image;
};

/* 0 to go on, or an exit code (also VT_EXIT_OK after --help). */
static int vt_create_parse(int argc, char **argv, struct vt_create_cmd *c)
{
	int ch, ret;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "t:s:fqh", vt_create_longopts,
				 NULL)) != -1) {
		ret = vt_create_arg("create", &c->a, ch, optarg);
		if (ret == 0)
			continue;
		if (ret > 0)
			return ret;
		switch (ch) {
		case 'f':
			c->force = true;
			break;
		case 'q':
			vt_quiet = 1;
			break;
		case 'h':
			vt_create_help();
			return -1;
		default:
			return vt_bad_option("create", argv);
		}
	}
	if (optind + 1 != argc)
		return vt_usage_err("create", optind == argc
						  ? "no IMAGE given"
						  : "too many arguments");
	if (!c->a.size_given)
		return vt_usage_err("create", "the size (-s SIZE) is required");
	c->image = argv[optind];
	return 0;
}

int vt_cmd_create(int argc, char **argv)
{
	struct vt_create_cmd c = {0};
	struct vt_outfile out;
	struct vhdx_io io;
	int ret;

	ret = vt_create_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	ret = vt_outfile_open(&out, c.image, c.force);
	if (ret)
		return ret;
	c.a.o.msg = vt_vhdx_msg;
	c.a.o.msg_opaque = (void *)c.image;
	vhdx_io_fd_init(&io, &out.fd);
	ret = vhdx_create(&io, &c.a.o);
	if (ret == 0 && vt_interrupted)
		ret = -EINTR;
	if (ret < 0) {
		if (ret == -EINTR)
			vt_err("%s: interrupted", c.image);
		vt_outfile_abort(&out);
		return ret == -EINVAL ? VT_EXIT_USAGE : VT_EXIT_FAILURE;
	}
	return vt_outfile_commit(&out);
}
