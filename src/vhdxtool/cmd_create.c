/*
 * cmd_create.c - `vhdxtool create`: a new, empty dynamic, fixed or
 * differencing image, written under a temporary name and renamed into
 * place when complete.  The library (vhdx_create) lays it out and refuses
 * invalid combinations.
 *
 * A differencing image takes its geometry from its parent, which is opened
 * read-only (with its own chain, and a shared lock held until the child is
 * complete, so that nobody writes it meanwhile).  Its parent locator
 * records the parent's current DataWriteGuid, its path relative to the
 * child's directory and its absolute path, both in Windows form.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vhdxtool.h"

static void vt_create_help(void)
{
	printf("usage: " VT_PROG " create [options] -s SIZE IMAGE\n"
	       "       " VT_PROG " create -t differencing --parent PARENT "
	       "[options] IMAGE\n"
	       "\n"
	       "Create a new, empty VHDX image laid out as Hyper-V lays "
	       "images out.\n"
	       "A differencing image starts out showing its parent's "
	       "content, has its\n"
	       "size and sector sizes, and records where it is and its "
	       "DataWriteGuid.\n"
	       "\n"
	       "Options:\n"
	       "  -s, --size SIZE            virtual disk size, e.g. 10G: a "
	       "multiple of\n"
	       "                             the logical sector size, at most "
	       "64T\n" VT_CREATE_OPTIONS_HELP
	       "  -t differencing            a child of --parent (default "
	       "block size 2M)\n"
	       "      --parent PARENT        the parent of a differencing "
	       "image (implies\n"
	       "                             -t differencing)\n"
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
    {"creator", required_argument, NULL, VT_OPT_CREATOR},
    {"sparse", no_argument, NULL, VT_OPT_SPARSE},
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
	if (c->a.parent && !c->a.type_given)
		c->a.o.type = VHDX_TYPE_DIFFERENCING;
	if (c->a.o.type == VHDX_TYPE_DIFFERENCING && !c->a.parent)
		return vt_usage_err("create", "a differencing image needs its "
					      "parent (--parent PARENT)");
	if (c->a.o.type != VHDX_TYPE_DIFFERENCING && c->a.parent)
		return vt_usage_err("create", "--parent goes with -t "
					      "differencing only");
	if (!c->a.size_given && c->a.o.type != VHDX_TYPE_DIFFERENCING)
		return vt_usage_err("create", "the size (-s SIZE) is required");
	c->image = argv[optind];
	return 0;
}

/* ---- differencing: the parent and its locator paths ---- */

struct vt_parent {
	struct vt_image vi;
	char *real;	/* realpath of the parent */
	char *relative; /* relative_path, Windows form */
	char *absolute; /* absolute_win32_path */
};

/* Path components of an absolute path, for vt_relative_path. */
static int vt_split(char *path, char **parts, int max)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(path, "/", &save); t;
	     t = strtok_r(NULL, "/", &save)) {
		if (n == max)
			return -1;
		parts[n++] = t;
	}
	return n;
}

/* TO relative to the directory FROM (both absolute, no . or ..), '\'. */
static char *vt_relative_path(const char *from, const char *to)
{
	enum { MAXP = PATH_MAX / 2 };
	char *f = strdup(from), *t = strdup(to), *out = NULL;
	char **fp = calloc(MAXP, sizeof(char *));
	char **tp = calloc(MAXP, sizeof(char *));
	int nf, nt, common = 0;
	size_t len = 1, pos = 0;

	if (!f || !t || !fp || !tp)
		goto out;
	nf = vt_split(f, fp, MAXP);
	nt = vt_split(t, tp, MAXP);
	if (nf < 0 || nt < 1)
		goto out;
	while (common < nf && common < nt - 1 &&
	       !strcmp(fp[common], tp[common]))
		common++;
	len += (size_t)(nf - common) * 3;
	for (int i = common; i < nt; i++)
		len += strlen(tp[i]) + 1;
	out = malloc(len);
	if (!out)
		goto out;
	for (int i = common; i < nf; i++) {
		memcpy(out + pos, "..\\", 3);
		pos += 3;
	}
	for (int i = common; i < nt; i++) {
		size_t n = strlen(tp[i]);

		memcpy(out + pos, tp[i], n);
		pos += n;
		out[pos++] = i + 1 < nt ? '\\' : '\0';
	}
out:
	free(f);
	free(t);
	free(fp);
	free(tp);
	return out;
}

/* The parent locator's paths to the parent, seen from the child IMAGE. */
static int vt_locator_paths(struct vt_parent *p, const char *image)
{
	char *copy = strdup(image), *dir = NULL;

	if (!copy)
		goto nomem;
	dir = realpath(dirname(copy), NULL);
	if (!dir) {
		vt_err("%s: %s", image, strerror(errno));
		free(copy);
		return VT_EXIT_FAILURE;
	}
	free(copy);
	p->relative = vt_relative_path(dir, p->real);
	p->absolute = strdup(p->real);
	free(dir);
	if (!p->relative || !p->absolute)
		goto nomem;
	for (char *s = p->absolute; *s; s++)
		if (*s == '/')
			*s = '\\';
	return 0;
nomem:
	vt_err("out of memory");
	return VT_EXIT_FAILURE;
}

/*
 * Refuse to replace (with -f) a file of the parent's chain by its own
 * child: the chain would be gone.
 */
static int vt_not_in_chain(const struct vt_parent *p, const char *image)
{
	struct vhdx_image *img = p->vi.img;
	struct stat si, sp;
	const char *path = p->vi.path;

	if (stat(image, &si) != 0)
		return 0;
	for (; img; path = vhdx_parent_path(img), img = vhdx_parent(img)) {
		if (stat(path, &sp) == 0 && sp.st_dev == si.st_dev &&
		    sp.st_ino == si.st_ino) {
			vt_err("%s is %s of the new image's chain; not "
			       "replacing it",
			       image,
			       img == p->vi.img ? "the parent" : "a part");
			return VT_EXIT_USAGE;
		}
	}
	return 0;
}

/* Open PARENT, copy its geometry and identity into the create options. */
static int vt_parent_open(struct vt_parent *p, struct vt_create_cmd *c)
{
	struct vhdx_create_opts *o = &c->a.o;
	struct vhdx_info info;
	int ret;

	ret = vt_image_open(&p->vi, c->a.parent, false, NULL, NULL);
	if (ret)
		return ret;
	vhdx_get_info(p->vi.img, &info);
	if (c->a.size_given && o->virtual_size != info.virtual_size)
		return vt_usage_err("create",
				    "a differencing image has its parent's "
				    "size (%llu bytes, not %llu); leave out -s",
				    (unsigned long long)info.virtual_size,
				    (unsigned long long)o->virtual_size);
	if ((o->logical_sector && o->logical_sector != info.logical_sector) ||
	    (o->physical_sector && o->physical_sector != info.physical_sector))
		return vt_usage_err("create",
				    "a differencing image has its parent's "
				    "sector sizes (logical %u, physical %u)",
				    info.logical_sector, info.physical_sector);
	o->virtual_size = info.virtual_size;
	o->logical_sector = info.logical_sector;
	o->physical_sector = info.physical_sector;
	memcpy(o->parent_linkage, info.data_write_guid, 16);
	memcpy(o->disk_id, info.disk_id, 16);
	p->real = realpath(c->a.parent, NULL);
	if (!p->real) {
		vt_err("%s: %s", c->a.parent, strerror(errno));
		return VT_EXIT_FAILURE;
	}
	if (strchr(p->real, '\\')) {
		vt_err("%s: a parent locator cannot name a path that contains "
		       "a backslash",
		       p->real);
		return VT_EXIT_USAGE;
	}
	ret = vt_locator_paths(p, c->image);
	if (ret == 0)
		ret = vt_not_in_chain(p, c->image);
	if (ret)
		return ret;
	o->parent_relative = p->relative;
	o->parent_absolute = p->absolute;
	return 0;
}

static void vt_parent_close(struct vt_parent *p)
{
	if (p->vi.img)
		vt_image_close(&p->vi);
	free(p->real);
	free(p->relative);
	free(p->absolute);
}

/*
 * The new child (still unnamed, or under its temporary name, in its final
 * directory) must find its parent through the locator just written, looked
 * up from the name it is about to get.
 */
static int vt_verify_child(const struct vt_outfile *out, const char *image)
{
	struct vhdx_open_opts opts = {
	    .flags = VT_OPEN_FLAGS | VHDX_OPEN_RDONLY,
	    .msg = vt_vhdx_msg,
	    .msg_opaque = (void *)image,
	    .path = image,
	};
	struct vhdx_image *img;
	struct vhdx_io io;
	int fd = out->fd;
	int ret;

	vhdx_io_fd_init(&io, &fd);
	ret = vhdx_open(&img, &io, &opts);
	if (ret < 0)
		return vt_exit_for_open_error(ret);
	return vhdx_close(img) < 0 ? VT_EXIT_FAILURE : 0;
}

int vt_cmd_create(int argc, char **argv)
{
	struct vt_create_cmd c = {0};
	struct vt_parent p = {0};
	struct vt_outfile out;
	struct vhdx_io io;
	int ret;

	p.vi.fd = -1;
	ret = vt_create_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	if (c.a.o.type == VHDX_TYPE_DIFFERENCING) {
		ret = vt_parent_open(&p, &c);
		if (ret)
			goto out;
	}
	ret = vt_outfile_open(&out, c.image, c.force);
	if (ret)
		goto out;
	c.a.o.msg = vt_vhdx_msg;
	c.a.o.msg_opaque = (void *)c.image;
	vhdx_io_fd_init(&io, &out.fd);
	if (!c.a.sparse)
		vhdx_io_fd_dense(&io);
	ret = vhdx_create(&io, &c.a.o);
	if (ret == 0 && vt_interrupted)
		ret = -EINTR;
	if (ret < 0) {
		if (ret == -EINTR)
			vt_err("%s: interrupted", c.image);
		vt_outfile_abort(&out);
		ret = ret == -EINVAL ? VT_EXIT_USAGE : VT_EXIT_FAILURE;
		goto out;
	}
	if (c.a.o.type == VHDX_TYPE_DIFFERENCING &&
	    (ret = vt_verify_child(&out, c.image)) != 0) {
		vt_err("%s: the new image does not find its parent; not "
		       "created",
		       c.image);
		vt_outfile_abort(&out);
		goto out;
	}
	ret = vt_outfile_commit(&out);
out:
	vt_parent_close(&p);
	return ret;
}
