/*
 * cmd_check.c - `vhdxtool check [--repair] IMAGE`.
 *
 * A check opens the image read-only (the file descriptor itself is
 * read-only, so nothing can be written) and runs vhdx_check.  With --repair,
 * and only if something is repairable, the image is then opened read-write,
 * which replays a dirty log, vhdx_repair fixes what it safely can, and a
 * second read-only check decides the exit status.  Findings and the summary
 * go to stdout, prefixed with the image name.
 */
#include "config.h"

#include <getopt.h>
#include <string.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

struct vt_check_cmd {
	const char *path;
	const char *parent; /* --parent */
	bool repair;
};

/* The message sink of a check; opaque is a struct vt_check_sink. */
struct vt_check_sink {
	const char *path;
	bool problems_only; /* the check after a repair */
	unsigned int errors;
};

static void vt_check_msg(void *opaque, enum vhdx_msg_level level,
			 const char *msg)
{
	struct vt_check_sink *s = opaque;
	const char *label = "";

	if (level <= VHDX_MSG_ERR) {
		label = "problem: ";
		s->errors++;
	} else if (level == VHDX_MSG_WARNING) {
		if (s->problems_only || vt_quiet)
			return;
		label = "warning: ";
	} else if (level == VHDX_MSG_NOTICE) {
		if (vt_quiet)
			return;
	} else if (!vt_verbose) {
		return;
	}
	printf("%s: %s%s\n", s->path, label, msg);
}

/*
 * Open read-only and check.  *opened is false if the image cannot be
 * opened because of what it contains (then r->problems says so).  Returns
 * 0 or an exit code for an operational failure.
 */
static int vt_check_pass(const struct vt_check_cmd *c,
			 struct vhdx_check_report *r, bool problems_only,
			 bool *opened)
{
	struct vt_check_sink sink = {c->path, problems_only, 0};
	struct vt_progress p;
	struct vt_image vi;
	int ret;

	memset(r, 0, sizeof(*r));
	*opened = false;
	ret = vt_image_open_chain(&vi, c->path, c->parent, false, vt_check_msg,
				  &sink);
	if (ret == VT_EXIT_PROBLEMS) {
		r->problems = sink.errors ? sink.errors : 1;
		return 0;
	}
	if (ret)
		return ret;
	*opened = true;
	vt_progress_begin(&p, "checking", 0);
	ret = vhdx_check(vi.img, r, vt_progress_cb, &p);
	vt_progress_end(&p);
	if (ret < 0) {
		vt_err("%s: the check failed: %s", c->path, strerror(-ret));
		vt_image_close(&vi);
		return VT_EXIT_FAILURE;
	}
	return vt_image_close(&vi);
}

/* Open read-write (replaying a dirty log) and repair. */
static int vt_repair_pass(const struct vt_check_cmd *c, unsigned int *changes)
{
	struct vt_check_sink sink = {c->path, false, 0};
	struct vhdx_check_report r = {0};
	struct vhdx_info info;
	struct vt_image vi;
	int ret, ret2;

	ret = vt_image_open_chain(&vi, c->path, c->parent, true, vt_check_msg,
				  &sink);
	if (ret)
		return ret;
	vhdx_get_info(vi.img, &info);
	if (info.log_replayed) {
		printf("%s: repaired: replayed the log into the file and "
		       "marked it empty\n",
		       c->path);
		(*changes)++;
	}
	ret = vhdx_repair(vi.img, &r) < 0 ? VT_EXIT_FAILURE : VT_EXIT_OK;
	*changes += r.repaired;
	ret2 = vt_image_close(&vi);
	return ret ? ret : ret2;
}

static const char *vt_plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

static void vt_check_summary(const struct vt_check_cmd *c,
			     const struct vhdx_check_report *r, bool opened)
{
	if (!opened) {
		printf("%s: the image cannot be opened (damaged or "
		       "unsupported)%s\n",
		       c->path,
		       c->repair ? "; --repair cannot fix this"
				 : "; nothing was changed");
		return;
	}
	if (!r->problems) {
		printf("%s: no problems found (%u warning%s); free space: %llu "
		       "byte%s in %llu place%s\n",
		       c->path, r->warnings, vt_plural(r->warnings, "", "s"),
		       (unsigned long long)r->free_bytes,
		       vt_plural(r->free_bytes, "", "s"),
		       (unsigned long long)r->free_places,
		       vt_plural(r->free_places, "", "s"));
		return;
	}
	printf("%s: %u problem%s found (%u repairable), %u warning%s; "
	       "nothing was changed%s\n",
	       c->path, r->problems, vt_plural(r->problems, "", "s"),
	       r->repairable, r->warnings, vt_plural(r->warnings, "", "s"),
	       r->repairable && !c->repair ? "; run with --repair to fix" : "");
}

/* --repair after the first check; returns the exit status. */
static int vt_check_repair(const struct vt_check_cmd *c)
{
	struct vhdx_check_report r;
	unsigned int changes = 0;
	bool opened;
	int ret;

	ret = vt_repair_pass(c, &changes);
	if (ret)
		return ret == VT_EXIT_PROBLEMS ? VT_EXIT_REMAIN : ret;
	ret = vt_check_pass(c, &r, true, &opened);
	if (ret)
		return ret;
	if (!opened || r.problems) {
		printf("%s: %u change%s made; %u problem%s remain%s\n", c->path,
		       changes, vt_plural(changes, "", "s"), r.problems,
		       vt_plural(r.problems, "", "s"),
		       vt_plural(r.problems, "s", ""));
		return VT_EXIT_REMAIN;
	}
	printf("%s: %u change%s made; the image is clean\n", c->path, changes,
	       vt_plural(changes, "", "s"));
	return VT_EXIT_OK;
}

static void vt_check_help(void)
{
	printf("usage: " VT_PROG " check [options] IMAGE\n"
	       "\n"
	       "Validate a VHDX image as opening it does, and cross-check "
	       "it: both header\n"
	       "and region table copies, the log, metadata items, every BAT "
	       "entry (offsets\n"
	       "unique, inside the file, clear of the other structures), "
	       "sector bitmaps,\n"
	       "and space no structure uses.  Without --repair the image is "
	       "opened\n"
	       "read-only and never changed.\n"
	       "\n"
	       "Options:\n"
	       "  -r, --repair   replay a dirty log, rewrite a damaged header "
	       "or region\n"
	       "                 table copy from the good one, truncate "
	       "free space at\n"
	       "                 the end of the file; says what it changed\n"
	       "      --parent PARENT\n"
	       "                 the parent of a differencing image, "
	       "instead of the file\n"
	       "                 its parent locator names\n"
	       "  -U, --force-share\n"
	       "                 take no lock: check an image in use "
	       "(mounted read-write,\n"
	       "                 say) read-only; the result may be stale "
	       "(not with --repair)\n"
	       "  -q, --quiet    no progress indicator, no warnings\n"
	       "  -v, --verbose  also print informational messages\n"
	       "  -h, --help     print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_check_longopts[] = {
    {"repair", no_argument, NULL, 'r'},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"force-share", no_argument, NULL, 'U'},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_check_parse(int argc, char **argv, struct vt_check_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "rUqvh", vt_check_longopts,
				 NULL)) != -1) {
		switch (ch) {
		case 'U':
			vt_force_share = true;
			break;
		case 'r':
			c->repair = true;
			break;
		case VT_OPT_PARENT:
			c->parent = optarg;
			break;
		case 'q':
			vt_quiet = 1;
			break;
		case 'v':
			vt_verbose = 1;
			break;
		case 'h':
			vt_check_help();
			return -1;
		default:
			return vt_bad_option("check", argv);
		}
	}
	if (vt_one_operand("check", "IMAGE", argc, argv, &c->path))
		return VT_EXIT_USAGE;
	if (c->repair && vt_force_share)
		return vt_usage_err("check",
				    "--repair writes: it cannot be used with "
				    "-U (--force-share)");
	return 0;
}

int vt_cmd_check(int argc, char **argv)
{
	struct vt_check_cmd c = {0};
	struct vhdx_check_report r;
	bool opened;
	int ret;

	ret = vt_check_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	ret = vt_check_pass(&c, &r, false, &opened);
	if (ret)
		return ret;
	if (vt_ntfs_sparse_check(c.path))
		r.warnings++;
	if (c.repair && opened && (r.repairable || r.leaked_bytes))
		return vt_check_repair(&c);
	vt_check_summary(&c, &r, opened);
	if (!r.problems)
		return VT_EXIT_OK;
	return c.repair ? VT_EXIT_REMAIN : VT_EXIT_PROBLEMS;
}
