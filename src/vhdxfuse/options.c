/*
 * options.c - the command line of vhdxfuse.
 *
 * Our own options are parsed with fuse_opt_parse() into struct vf_options;
 * whatever libfuse understands (-f, -s, -d, mount options) is left in the
 * argument vector for fuse_parse_cmdline() and fuse_session_new().  The
 * words that only mean something to mount(8) in an fstab line are dropped
 * here, so that fstab entries work.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "vhdxfuse.h"

#define VF_OPT(t, p, v)                              \
	{                                            \
		t, offsetof(struct vf_options, p), v \
	}

enum {
	VF_KEY_UID,
	VF_KEY_GID,
	VF_KEY_UMASK,
	VF_KEY_FILENAME,
	VF_KEY_LOCK_WAIT,
};

static const struct fuse_opt vf_opt_spec[] = {
    VF_OPT("-h", show_help, 1),
    VF_OPT("--help", show_help, 1),
    VF_OPT("-V", show_version, 1),
    VF_OPT("--version", show_version, 1),

    /* Noted here and also passed on: libfuse sets MS_RDONLY from them. */
    VF_OPT("-r", ro, 1),
    VF_OPT("ro", ro, 1),
    VF_OPT("rw", ro, 0),
    FUSE_OPT_KEY("-r", FUSE_OPT_KEY_KEEP),
    FUSE_OPT_KEY("ro", FUSE_OPT_KEY_KEEP),
    FUSE_OPT_KEY("rw", FUSE_OPT_KEY_KEEP),
    VF_OPT("fsname=", fsname_set, 1),
    VF_OPT("subtype=", subtype_set, 1),
    FUSE_OPT_KEY("fsname=", FUSE_OPT_KEY_KEEP),
    FUSE_OPT_KEY("subtype=", FUSE_OPT_KEY_KEEP),

    FUSE_OPT_KEY("uid=", VF_KEY_UID),
    FUSE_OPT_KEY("gid=", VF_KEY_GID),
    FUSE_OPT_KEY("umask=", VF_KEY_UMASK),
    FUSE_OPT_KEY("filename=", VF_KEY_FILENAME),
    FUSE_OPT_KEY("lock_wait=", VF_KEY_LOCK_WAIT),
    VF_OPT("parent=%s", parent, 0),
    VF_OPT("writeback_cache", no_wbc, 0),
    VF_OPT("no_writeback_cache", no_wbc, 1),
    VF_OPT("sparse", sparse, 1),

    /* fstab words for mount(8); x-* and comment= in vf_opt_proc() */
    FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_END,
};

/* Parse an unsigned number of the given base that must fill all of s. */
static int vf_parse_uint(const char *s, int base, unsigned long max,
			 unsigned int *out)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, base);
	if (errno || *end || v > max)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

static int vf_filename_valid(const char *name)
{
	return *name && !strchr(name, '/') && strcmp(name, ".") &&
	       strcmp(name, "..") && strlen(name) <= NAME_MAX;
}

static int vf_opt_filename(struct vf_options *opts, const char *arg)
{
	const char *name = arg + strlen("filename=");

	if (!vf_filename_valid(name)) {
		vf_log(LOG_ERR,
		       "invalid option '%s': the name must be one path "
		       "component other than . and ..",
		       arg);
		return -1;
	}
	free(opts->filename);
	opts->filename = strdup(name);
	return opts->filename ? 0 : -1;
}

static int vf_opt_number(const char *arg, int base, unsigned long max,
			 unsigned int *out, int *set)
{
	const char *val = strchr(arg, '=') + 1;

	if (vf_parse_uint(val, base, max, out)) {
		vf_log(LOG_ERR, "invalid value in option '%s'", arg);
		return -1;
	}
	if (set)
		*set = 1;
	return 0;
}

int vf_opt_lock_wait(const char *val, unsigned int *ms)
{
	char *end;
	double s;

	errno = 0;
	s = strtod(val, &end);
	if (errno || end == val || *end || !(s >= 0) || s > 3600) {
		vf_log(LOG_ERR,
		       "invalid lock wait '%s': seconds from 0 to 3600", val);
		return -1;
	}
	*ms = (unsigned int)(s * 1000 + 0.5);
	return 0;
}

static int vf_opt_nonopt(struct vf_options *opts, const char *arg)
{
	switch (opts->nargs++) {
	case 0:
		opts->image = strdup(arg);
		return opts->image ? 0 : -1;
	case 1:
		opts->mountpoint = strdup(arg);
		return opts->mountpoint ? 0 : -1;
	default:
		vf_log(LOG_ERR, "unexpected argument '%s'", arg);
		return -1;
	}
}

static int vf_opt_proc(void *data, const char *arg, int key,
		       struct fuse_args *outargs)
{
	struct vf_options *opts = data;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		return vf_opt_nonopt(opts, arg);
	case FUSE_OPT_KEY_OPT:
		/* x-* and comment= belong to mount(8) and systemd. */
		if (!strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8))
			return 0;
		return 1;
	case VF_KEY_UID:
		return vf_opt_number(arg, 10, UINT_MAX - 1, &opts->uid,
				     &opts->uid_set);
	case VF_KEY_GID:
		return vf_opt_number(arg, 10, UINT_MAX - 1, &opts->gid,
				     &opts->gid_set);
	case VF_KEY_UMASK:
		return vf_opt_number(arg, 8, 0777, &opts->umask, NULL);
	case VF_KEY_FILENAME:
		return vf_opt_filename(opts, arg);
	case VF_KEY_LOCK_WAIT:
		return vf_opt_lock_wait(arg + strlen("lock_wait="),
					&opts->lock_wait_ms);
	}
	return 1;
}

/* IMAGE as an absolute path, for fsname; need not exist yet. */
static char *vf_abs_path(const char *path)
{
	char *abs = realpath(path, NULL);
	char cwd[PATH_MAX];

	if (abs || path[0] == '/')
		return abs ? abs : strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return strdup(path);
	abs = malloc(strlen(cwd) + strlen(path) + 2);
	if (abs)
		sprintf(abs, "%s/%s", cwd, path);
	return abs;
}

static int vf_add_opt_escaped(struct fuse_args *args, const char *key,
			      const char *val)
{
	char *opt = malloc(strlen(key) + strlen(val) + 1);
	char *esc = NULL;
	int ret = -1;

	if (!opt)
		goto out;
	sprintf(opt, "%s%s", key, val);
	if (fuse_opt_add_opt_escaped(&esc, opt) == -1)
		goto out;
	ret = fuse_opt_add_arg(args, "-o");
	if (!ret)
		ret = fuse_opt_add_arg(args, esc);
out:
	free(esc);
	free(opt);
	return ret;
}

/*
 * fsname=IMAGE,subtype=vhdxfuse so that findmnt shows "IMAGE fuse.vhdxfuse";
 * default_permissions so that the kernel enforces uid=, gid= and umask=.
 */
static int vf_opt_add_defaults(struct fuse_args *args,
			       const struct vf_options *opts)
{
	char *abs;
	int ret;

	if (fuse_opt_add_arg(args, "-odefault_permissions"))
		return -1;
	if (!opts->subtype_set && fuse_opt_add_arg(args, "-osubtype=vhdxfuse"))
		return -1;
	if (opts->fsname_set)
		return 0;
	abs = vf_abs_path(opts->image);
	if (!abs)
		return -1;
	ret = vf_add_opt_escaped(args, "fsname=", abs);
	free(abs);
	return ret;
}

int vf_opt_parse(struct fuse_args *args, struct vf_options *opts)
{
	const char *prog = args->argv[0];
	const char *env = getenv("VHDXFUSE_LOCK_WAIT");

	opts->lock_wait_ms = VHDX_LOCK_WAIT_DEFAULT_MS;
	if (env && *env && vf_opt_lock_wait(env, &opts->lock_wait_ms))
		goto usage;
	if (fuse_opt_parse(args, opts, vf_opt_spec, vf_opt_proc) == -1)
		goto usage;
	if (opts->show_help || opts->show_version)
		return 0;
	if (opts->nargs < 2) {
		vf_log(LOG_ERR, "missing %s",
		       opts->nargs ? "MOUNTPOINT" : "IMAGE and MOUNTPOINT");
		goto usage;
	}
	if (vf_opt_add_defaults(args, opts)) {
		vf_log(LOG_ERR, "out of memory");
		return -1;
	}
	/* -f, -s, -d and friends; leaves the rest for fuse_session_new() */
	if (fuse_parse_cmdline(args, &opts->cmd) == -1)
		goto usage;
	return 0;
usage:
	vf_print_usage(prog);
	return -1;
}

char *vf_default_filename(const char *image)
{
	static const char *const exts[] = {".vhdx", ".avhdx"};
	const char *base = strrchr(image, '/');
	size_t len, i, n;
	char *name;

	base = base ? base + 1 : image;
	len = strlen(base);
	for (i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		n = strlen(exts[i]);
		if (len > n && !strcasecmp(base + len - n, exts[i])) {
			len -= n;
			break;
		}
	}
	name = malloc(len + sizeof(".raw"));
	if (!name)
		return NULL;
	memcpy(name, base, len);
	strcpy(name + len, ".raw");
	return name;
}

void vf_print_usage(const char *progname)
{
	fprintf(stderr,
		"usage: %s [options] IMAGE MOUNTPOINT\n"
		"       %s -u [-z] [-f] [-w SECONDS] MOUNTPOINT\n"
		"Try '%s --help' for more information.\n",
		progname, progname, progname);
}

void vf_print_help(const char *progname)
{
	printf(
	    "usage: %s [options] IMAGE MOUNTPOINT\n"
	    "\n"
	    "Expose the virtual disk of the VHDX image IMAGE as one raw "
	    "file.  If MOUNTPOINT\n"
	    "is a regular file, it becomes the disk; if it is a directory, "
	    "the disk appears\n"
	    "in it as a single file.\n"
	    "\n"
	    "vhdxfuse options:\n"
	    "    -o ro, -r              read-only: the image file is never "
	    "written (a dirty\n"
	    "                           log is replayed in memory); default: "
	    "read-write\n"
	    "    -o rw                  read-write (the default)\n"
	    "    -o writeback_cache     the kernel caches writes and sends "
	    "them in the\n"
	    "                           background (default when read-write)\n"
	    "    -o no_writeback_cache  every write(2) reaches the image "
	    "before it returns\n"
	    "    -o sparse              new blocks take host space only where "
	    "written\n"
	    "                           (default: their whole extent is "
	    "reserved)\n"
	    "    -o parent=PATH         parent of a differencing image, "
	    "instead "
	    "of the\n"
	    "                           paths its parent locator names\n"
	    "    -o uid=N               owner of the files "
	    "(default: the invoking user)\n"
	    "    -o gid=N               group of the files "
	    "(default: the invoking group)\n"
	    "    -o umask=OOO           permission bits to clear "
	    "(default: 000)\n"
	    "    -o filename=NAME       name of the disk file in a directory "
	    "mount point\n"
	    "                           (default: IMAGE's name with .vhdx "
	    "or .avhdx -> .raw)\n"
	    "    -o allow_other         allow access by other users\n"
	    "    -o fsname=NAME         source shown by findmnt\n"
	    "                           (default: IMAGE's absolute path)\n"
	    "    -o subtype=NAME        file system subtype "
	    "(default: vhdxfuse)\n"
	    "    -o lock_wait=SECONDS   wait this long for the lock of an "
	    "image whose\n"
	    "                           daemon is unmounted but still closing "
	    "it "
	    "(default: 5,\n"
	    "                           or $VHDXFUSE_LOCK_WAIT)\n"
	    "    -h, --help             print this help and exit\n"
	    "    -V, --version          print version information and exit\n"
	    "\n"
	    "%s -u [-z] [-f] [-w SECONDS] MOUNTPOINT\n"
	    "    unmount, then wait (up to 60 s, or -w) until the daemon has "
	    "flushed,\n"
	    "    closed and unlocked the image; -z: lazy unmount, no wait.  "
	    "umount(8) does\n"
	    "    the same through the installed umount.vhdxfuse helper.  -f: "
	    "force.\n"
	    "\n"
	    "Ignored fstab words: auto, noauto, user, users, nouser, "
	    "_netdev, nofail,\n"
	    "defaults, comment=..., x-*\n"
	    "\n"
	    "FUSE options:\n",
	    progname, progname);
	fflush(stdout);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

void vf_print_version(void)
{
	printf("vhdxfuse version %s\n", PACKAGE_VERSION);
	printf("vhdx library version %s\n", vhdx_version());
	printf("FUSE library version %s\n", fuse_pkgversion());
	fflush(stdout);
	fuse_lowlevel_version();
}

void vf_opt_free(struct vf_options *opts)
{
	free(opts->image);
	free(opts->mountpoint);
	free(opts->filename);
	free(opts->parent);
	free(opts->cmd.mountpoint);
}
