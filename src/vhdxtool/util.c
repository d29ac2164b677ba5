/*
 * util.c - messages, the library's message sink, and parsing of option
 * values (sizes with K/M/G/T suffixes, sector sizes, the create options
 * shared by create and convert).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vhdxtool.h"

int vt_quiet;
int vt_verbose;

static void __attribute__((format(printf, 2, 0)))
vt_vmsg(const char *prefix, const char *fmt, va_list ap)
{
	fprintf(stderr, VT_PROG ": %s", prefix);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void vt_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vt_vmsg("", fmt, ap);
	va_end(ap);
}

void vt_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vt_vmsg("warning: ", fmt, ap);
	va_end(ap);
}

void vt_note(const char *fmt, ...)
{
	va_list ap;

	if (vt_quiet)
		return;
	va_start(ap, fmt);
	vt_vmsg("", fmt, ap);
	va_end(ap);
}

int vt_usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, VT_PROG " %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" VT_PROG " %s --help' for more information.\n",
		cmd);
	return VT_EXIT_USAGE;
}

int vt_bad_option(const char *cmd, char **argv)
{
	if (optopt > 0 && optopt < 128)
		return vt_usage_err(
		    cmd, "invalid option or missing argument: -%c", optopt);
	return vt_usage_err(cmd, "invalid option or missing argument: %s",
			    argv[optind - 1]);
}

void vt_vhdx_msg(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	const char *path = opaque;

	if (level >= VHDX_MSG_INFO && !vt_verbose)
		return;
	if (level == VHDX_MSG_NOTICE && vt_quiet)
		return;
	fprintf(stderr, VT_PROG ": %s: %s%s\n", path,
		level == VHDX_MSG_WARNING ? "warning: " : "", msg);
}

int vt_exit_for_open_error(int err)
{
	/* what the image contains (vhdx_open: -EUCLEAN damaged, -EOPNOTSUPP
	 * unsupported), as opposed to what happened reading it */
	return err == -EUCLEAN || err == -EOPNOTSUPP ? VT_EXIT_PROBLEMS
						     : VT_EXIT_FAILURE;
}

/* ---- sizes ---- */

static int vt_suffix_shift(const char *s, unsigned int *shift)
{
	static const char units[] = "KMGTP";
	const char *u;

	if (!*s) {
		*shift = 0;
		return 0;
	}
	u = strchr(units, toupper((unsigned char)s[0]));
	if (!u)
		return -EINVAL;
	s++;
	if (*s && strcmp(s, "iB") && strcmp(s, "B") && strcmp(s, "b"))
		return -EINVAL;
	*shift = 10u * (unsigned int)(u - units + 1);
	return 0;
}

int vt_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned int shift;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || vt_suffix_shift(end, &shift) < 0)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int vt_parse_size32(const char *s, uint32_t *out)
{
	uint64_t v;

	if (vt_parse_size(s, &v) < 0 || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int vt_parse_sector(const char *s, uint32_t *out)
{
	if (!strcmp(s, "512"))
		*out = 512;
	else if (!strcmp(s, "4096") || !strcmp(s, "4K") || !strcmp(s, "4k"))
		*out = 4096;
	else
		return -EINVAL;
	return 0;
}

void vt_human_size(uint64_t v, char *buf, size_t len)
{
	static const char *units[] = {"bytes", "KiB", "MiB", "GiB",
				      "TiB",   "PiB", "EiB"};
	unsigned int u = 0;
	double d = (double)v;

	while (d >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu bytes", (unsigned long long)v);
	else if (d == (double)(uint64_t)d)
		snprintf(buf, len, "%llu %s", (unsigned long long)d, units[u]);
	else
		snprintf(buf, len, "%.1f %s", d, units[u]);
}

/* ---- options of the VHDX being written ---- */

static int vt_image_type(const char *cmd, struct vt_create_args *a,
			 const char *arg)
{
	if (!strcmp(arg, "dynamic"))
		a->o.type = VHDX_TYPE_DYNAMIC;
	else if (!strcmp(arg, "fixed"))
		a->o.type = VHDX_TYPE_FIXED;
	else if (!strcmp(arg, "differencing"))
		a->o.type = VHDX_TYPE_DIFFERENCING;
	else
		return vt_usage_err(cmd,
				    "unknown image type '%s' (expected "
				    "dynamic, fixed or differencing)",
				    arg);
	a->type_given = true;
	return 0;
}

static int vt_bad_value(const char *cmd, const char *opt, const char *arg,
			const char *expect)
{
	return vt_usage_err(cmd, "invalid %s '%s': expected %s", opt, arg,
			    expect);
}

int vt_create_arg(const char *cmd, struct vt_create_args *a, int c,
		  const char *arg)
{
	static const char sz[] = "a size such as 32M";

	switch (c) {
	case 't':
		a->any_given = true;
		return vt_image_type(cmd, a, arg);
	case 's':
		a->size_given = true;
		if (vt_parse_size(arg, &a->o.virtual_size) < 0)
			return vt_bad_value(cmd, "size", arg,
					    "a number with an optional "
					    "K, M, G or T suffix");
		return 0;
	case VT_OPT_BLOCK_SIZE:
		a->any_given = true;
		if (vt_parse_size32(arg, &a->o.block_size) < 0 ||
		    !a->o.block_size)
			return vt_bad_value(cmd, "block size", arg, sz);
		return 0;
	case VT_OPT_LOGICAL:
	case VT_OPT_PHYSICAL:
		a->any_given = true;
		if (vt_parse_sector(arg, c == VT_OPT_LOGICAL
					     ? &a->o.logical_sector
					     : &a->o.physical_sector) < 0)
			return vt_bad_value(cmd, "sector size", arg,
					    "512 or 4096");
		return 0;
	case VT_OPT_LOG_SIZE:
		a->any_given = true;
		if (vt_parse_size32(arg, &a->o.log_size) < 0 || !a->o.log_size)
			return vt_bad_value(cmd, "log size", arg, sz);
		return 0;
	case VT_OPT_PARENT:
		a->any_given = true;
		a->parent = arg;
		return 0;
	case VT_OPT_CREATOR:
		a->any_given = true;
		a->o.creator = arg;
		return 0;
	case VT_OPT_SPARSE:
		a->sparse = true;
		return 0;
	default:
		return -1;
	}
}

bool vt_ntfs_sparse_check(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int sparse = fd < 0 ? -errno : vhdx_fd_ntfs_sparse(fd);

	if (fd >= 0)
		close(fd);
	if (sparse == 1)
		vt_ntfs_sparse_advice(path);
	return sparse == 1;
}

void vt_ntfs_sparse_advice(const char *path)
{
	printf("%s: warning: the file is flagged sparse on NTFS: Windows "
	       "refuses to attach it\n"
	       "%s: (Linux cannot clear the flag; on Windows: fsutil sparse "
	       "setflag FILE 0)\n",
	       path, path);
}

int vt_one_operand(const char *cmd, const char *what, int argc, char **argv,
		   const char **operand)
{
	if (optind == argc)
		return vt_usage_err(cmd, "no %s given", what);
	if (argc - optind > 1)
		return vt_usage_err(cmd, "too many arguments");
	if (operand)
		*operand = argv[optind];
	return 0;
}
