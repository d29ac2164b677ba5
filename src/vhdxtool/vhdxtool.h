/*
 * vhdxtool.h - what the pieces of vhdxtool share: exit codes, messages,
 * option values, image and output file handling, the progress indicator
 * and the subcommands.
 */
#ifndef VHDXTOOL_H
#define VHDXTOOL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vhdx.h"

/* Exit codes (documented in --help and vhdxtool(1)). */
enum {
	VT_EXIT_OK = 0,	      /* success; check: the image is clean */
	VT_EXIT_USAGE = 1,    /* bad command line, or OUT exists without -f */
	VT_EXIT_PROBLEMS = 2, /* the image has problems; nothing changed */
	VT_EXIT_REMAIN = 3,   /* check --repair: problems remain */
	VT_EXIT_FAILURE = 4,  /* I/O error, cannot open, interrupted... */
};

#define VT_PROG "vhdxtool"
#define VT_EXIT_CODES_HELP                                                     \
	"Exit status:\n"                                                       \
	"  0  success; for check: the image is clean (after --repair: every\n" \
	"     problem was fixed)\n"                                            \
	"  1  usage error (bad command, option or value; OUT exists without "  \
	"-f)\n"                                                                \
	"  2  the image has problems (check found some, or the image is\n"     \
	"     damaged or unsupported and cannot be opened); nothing was "      \
	"changed\n"                                                            \
	"  3  check --repair: problems remain after repairing\n"               \
	"  4  operational failure: a file cannot be opened, read or "          \
	"written,\n"                                                           \
	"     out of memory, interrupted\n"

/* ---- messages (util.c) ---- */

extern int vt_quiet;   /* -q: no progress, no notices */
extern int vt_verbose; /* -v: also the library's informational messages */

/* "vhdxtool: ..." on stderr. */
void vt_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vt_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Suppressed by -q. */
void vt_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "vhdxtool CMD: ..." and a hint to --help; returns VT_EXIT_USAGE. */
int vt_usage_err(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * After the options, exactly one operand (what: "IMAGE", "CHILD"): 0 and
 * *operand set (if not NULL), or VT_EXIT_USAGE after a message.
 */
int vt_one_operand(const char *cmd, const char *what, int argc, char **argv,
		   const char **operand);
/* After getopt_long returned '?' (opterr = 0): name the option. */
int vt_bad_option(const char *cmd, char **argv);

/* Library sink to stderr; opaque is the image path (a const char *). */
void vt_vhdx_msg(void *opaque, enum vhdx_msg_level level, const char *msg);

/* The exit code for a failed vhdx_open: damage vs. operational. */
int vt_exit_for_open_error(int err);

/*
 * An image file flagged sparse on NTFS (Windows refuses to attach it):
 * print a warning and how to clear the flag to stdout.  _check opens
 * PATH itself and returns whether it printed.
 */
bool vt_ntfs_sparse_check(const char *path);
void vt_ntfs_sparse_advice(const char *path);

/* ---- option values (util.c) ---- */

/* "SIZE[K|M|G|T]" (binary multiples, "KiB" etc. too); 0 or -EINVAL. */
int vt_parse_size(const char *s, uint64_t *out);
/* A size that must fit 32 bits (block size, log size). */
int vt_parse_size32(const char *s, uint32_t *out);
/* "512" or "4096". */
int vt_parse_sector(const char *s, uint32_t *out);
/* "1.5 GiB"-style text for humans. */
void vt_human_size(uint64_t v, char *buf, size_t len);

/* Options shared by create and convert (the VHDX being written). */
struct vt_create_args {
	struct vhdx_create_opts o;
	bool size_given;
	bool any_given;	    /* some VHDX-only option appeared */
	bool type_given;    /* -t appeared */
	const char *parent; /* --parent: the parent of a differencing image */
	bool sparse;	    /* --sparse: leave holes in the new file */
};

/* --help text of the create options (create and convert). */
#define VT_CREATE_OPTIONS_HELP                                                 \
	"  -t, --type TYPE            dynamic (default) or fixed (all space\n" \
	"                             allocated now, every block present)\n"   \
	"      --block-size SIZE      payload block size: a power of two\n"    \
	"                             from 1M to 256M (default 32M; 1M for\n"  \
	"                             disks under 32M)\n"                      \
	"      --logical-sector N     512 (default) or 4096\n"                 \
	"      --physical-sector N    512 or 4096 (default), not smaller\n"    \
	"                             than the logical sector size\n"          \
	"      --log-size SIZE        a multiple of 1M up to 256M "            \
	"(default 1M)\n"                                                       \
	"      --creator TEXT         the creator string of the file\n"        \
	"                             identifier (UTF-8, at most 255 UTF-16\n" \
	"                             units; default \"vhdxfuse VERSION\")\n"  \
	"      --sparse               leave the file's unused space as "       \
	"holes\n"                                                              \
	"                             (default: allocated, no holes, so "      \
	"that\n"                                                               \
	"                             a copy to NTFS is not flagged sparse)\n"

/* Long options of struct vt_create_args, for getopt_long tables. */
enum {
	VT_OPT_BLOCK_SIZE = 0x100,
	VT_OPT_LOGICAL,
	VT_OPT_PHYSICAL,
	VT_OPT_LOG_SIZE,
	VT_OPT_PARENT,
	VT_OPT_JSON,
	VT_OPT_CREATOR,
	VT_OPT_SPARSE,
};

/*
 * Handle one create option (c as getopt_long returned it).  Returns 0 if
 * handled, -1 if c is not a create option, or VT_EXIT_USAGE after a message.
 */
int vt_create_arg(const char *cmd, struct vt_create_args *a, int c,
		  const char *arg);

/* ---- images and output files (image.c) ---- */

struct vt_image {
	const char *path;
	int fd;
	struct vhdx_io io;
	struct vhdx_image *img;
	bool file_failed; /* the open failed before the image was read */
};

/*
 * Flags of every image open.  The commands show, check, merge or convert
 * the whole image: the BAT is read and validated whole at open, as for a
 * read-write open, however large (the library would otherwise read a large
 * BAT of a read-only open on demand), and state counts are complete.
 */
#define VT_OPEN_FLAGS VHDX_OPEN_FULL_BAT

/*
 * -U (--force-share) of info and check: read-only opens take no lock, so an
 * image in use (mounted read-write, say) can be inspected.  Never set for
 * a command that writes.
 */
extern bool vt_force_share;
/* Said after "in use" when a vhdxfuse mount holds the image (a command's
 * advice on doing the same through the mount). */
extern const char *vt_busy_hint;

/*
 * Open and lock PATH (shared lock read-only, exclusive lock writable) and
 * the image in it.  sink/sink_opaque receive the library's messages (NULL:
 * vt_vhdx_msg).  Returns 0 or an exit code after a message.
 */
int vt_image_open(struct vt_image *vi, const char *path, bool writable,
		  vhdx_msg_fn sink, void *sink_opaque);
/*
 * The same for a differencing image whose parent is PARENT instead of the
 * file its parent locator names (NULL: found through the locator).
 */
int vt_image_open_chain(struct vt_image *vi, const char *path,
			const char *parent, bool writable, vhdx_msg_fn sink,
			void *sink_opaque);
/*
 * Open PATH read-only without its parent (vhdx_open_detached), to show the
 * structures of a differencing image whose parent cannot be used.
 */
int vt_image_open_detached(struct vt_image *vi, const char *path,
			   vhdx_msg_fn sink, void *sink_opaque);
/* Close the image and the file; returns 0 or an exit code. */
int vt_image_close(struct vt_image *vi);

/* Open PATH read-only, locked, for reading data (raw or VHDX input). */
int vt_open_input(const char *path, int *fd);
/* True if the file starts with the VHDX file type signature. */
bool vt_is_vhdx(int fd);

/*
 * An output file written unnamed (O_TMPFILE) in its directory and linked
 * under its name when complete; where O_TMPFILE is not supported, under a
 * temporary name renamed when complete.
 */
struct vt_outfile {
	const char *path;
	char *tmp; /* the named fallback, NULL: unnamed (O_TMPFILE) */
	int fd;
	bool force;
};

/*
 * Refuse an existing PATH unless force, then create the unnamed file in
 * PATH's directory (or PATH.tmp-XXXXXX).  Returns 0 or an exit code after a
 * message.
 */
int vt_outfile_open(struct vt_outfile *o, const char *path, bool force);
/* fsync, link as PATH (no-clobber unless force), fsync the directory. */
int vt_outfile_commit(struct vt_outfile *o);
/* Drop the unfinished file. */
void vt_outfile_abort(struct vt_outfile *o);

/* Set by SIGINT/SIGTERM/SIGHUP; long loops stop and clean up. */
extern volatile sig_atomic_t vt_interrupted;
void vt_catch_signals(void);

/* ---- progress (progress.c) ---- */

struct vt_progress {
	const char *label;
	uint64_t total;
	bool on;    /* stderr is a terminal and not -q */
	bool shown; /* something is on the line */
	uint64_t last_ms;
};

void vt_progress_begin(struct vt_progress *p, const char *label,
		       uint64_t total);
void vt_progress_update(struct vt_progress *p, uint64_t done);
/* Erase the line. */
void vt_progress_end(struct vt_progress *p);
/* vhdx_progress_fn adapter: opaque is a struct vt_progress. */
void vt_progress_cb(void *opaque, uint64_t done, uint64_t total);

/* ---- JSON output (json.c) ---- */

struct vt_json {
	FILE *f;
	int depth;
	bool need_comma;
};

void vt_json_begin(struct vt_json *j, FILE *f);
void vt_json_end(struct vt_json *j);
/* key is NULL inside arrays. */
void vt_json_object(struct vt_json *j, const char *key);
void vt_json_array(struct vt_json *j, const char *key);
void vt_json_close_object(struct vt_json *j);
void vt_json_close_array(struct vt_json *j);
void vt_json_str(struct vt_json *j, const char *key, const char *v);
void vt_json_u64(struct vt_json *j, const char *key, uint64_t v);
void vt_json_bool(struct vt_json *j, const char *key, bool v);
void vt_json_null(struct vt_json *j, const char *key);

/* ---- subcommands (cmd_*.c); argv[0] is the command name ---- */

int vt_cmd_create(int argc, char **argv);
int vt_cmd_convert(int argc, char **argv);
int vt_cmd_info(int argc, char **argv);
int vt_cmd_check(int argc, char **argv);
int vt_cmd_merge(int argc, char **argv);
int vt_cmd_compact(int argc, char **argv);
int vt_cmd_map(int argc, char **argv);
int vt_cmd_resize(int argc, char **argv);

#endif /* VHDXTOOL_H */
