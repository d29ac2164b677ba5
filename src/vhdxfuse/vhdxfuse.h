/*
 * vhdxfuse.h - shared declarations of the vhdxfuse daemon.
 *
 * The daemon is split into option parsing (options.c), logging (logging.c),
 * the FUSE low-level operations (fuse_ops.c) and start-up/teardown (main.c).
 * Everything the VHDX format needs goes through the library in src/vhdx/.
 */
#ifndef VHDXFUSE_H
#define VHDXFUSE_H

/* API 3.5 keeps the daemon buildable against every libfuse >= 3.10. */
#define FUSE_USE_VERSION 35

#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>
#include <fuse_lowlevel.h>

#include "vhdx.h"

/* Exit statuses, as mount(8) and fuse2fs use them. */
#define VF_EXIT_OK    0
#define VF_EXIT_USAGE 1	 /* bad invocation or option */
#define VF_EXIT_MOUNT 32 /* the image or the mount failed */

/* Inode numbers.  In file mode the root inode is the disk file itself. */
#define VF_INO_ROOT FUSE_ROOT_ID
#define VF_INO_FILE 2

/* Everything the command line sets; filled by vf_opt_parse(). */
struct vf_options {
	char *image;	  /* IMAGE as given */
	char *mountpoint; /* MOUNTPOINT as given */
	char *filename;	  /* -o filename=, NULL for the default */
	char *parent;	  /* -o parent=, NULL: the locator's paths */
	unsigned int uid, gid, umask;
	int uid_set, gid_set;
	int ro;		 /* -o ro / -r; the last of ro and rw wins */
	int no_wbc;	 /* -o no_writeback_cache */
	int sparse;	 /* -o sparse */
	int fsname_set;	 /* the user gave -o fsname= */
	int subtype_set; /* the user gave -o subtype= */
	int show_help;
	int show_version;
	unsigned int lock_wait_ms; /* -o lock_wait=, $VHDXFUSE_LOCK_WAIT */
	int nargs;		   /* positional arguments seen */
	struct fuse_cmdline_opts cmd;
};

/* State of a running mount, shared by all FUSE worker threads. */
struct vf_fs {
	struct vhdx_image *img;
	int fd;		   /* the image file; holds the OFD lock */
	const char *image; /* IMAGE as given, for messages */
	char *mountpoint;  /* absolute path of MOUNTPOINT */
	char *filename;	   /* name of the disk file in directory mode */
	int root_is_dir;   /* MOUNTPOINT is a directory */
	int ro;		   /* refuse every modification */
	int wbc;	   /* use the kernel's writeback cache (rw only) */
	struct fuse_session *se; /* for notifications */
	uint64_t wb_bytes;	 /* streaming bytes written, see vf_write */
	struct vf_wb *wb;	 /* the write-behind thread, if running */
	uint64_t size;		 /* virtual disk size in bytes */
	uint64_t alloc_bytes;	 /* bytes backed by payload blocks */
	uint32_t blksize;	 /* st_blksize of the disk file */
	unsigned int writers;	 /* open writable handles (atomic), see
				    vf_lseek */
	struct timespec mtime;	 /* the image file's mtime */
	uid_t uid;
	gid_t gid;
	mode_t file_mode; /* permission bits of the disk file */
	mode_t dir_mode;  /* permission bits of the root directory */
};

/* options.c */

/*
 * Parse argv into *opts and leave in *args what libfuse must see (mount
 * options, -d, ...).  Prints a message and returns -1 on a usage error.
 */
int vf_opt_parse(struct fuse_args *args, struct vf_options *opts);

/* The name of the disk file: -o filename= or derived from IMAGE. */
char *vf_default_filename(const char *image);

/* --help and --version text, to stdout. */
void vf_print_help(const char *progname);
void vf_print_version(void);

/* A one-line usage hint, to stderr. */
void vf_print_usage(const char *progname);

/* Parse SECONDS (0 to 3600, fractions allowed) into *ms; -1 after a message. */
int vf_opt_lock_wait(const char *val, unsigned int *ms);

/* Free what vf_opt_parse() allocated. */
void vf_opt_free(struct vf_options *opts);

/* logging.c */

/*
 * One sink for every message of the daemon and the library: stderr (with a
 * "vhdxfuse: " prefix) until vf_log_to_syslog() is called, syslog after.
 * level is a syslog level; LOG_DEBUG is dropped unless vf_log_set_debug(1).
 */
void vf_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void vf_log_set_debug(int debug);
void vf_log_to_syslog(void);

/* vhdx_msg_fn for the library; opaque is the image path for the prefix. */
void vf_log_vhdx(void *opaque, enum vhdx_msg_level level, const char *msg);

/* How many error messages the library has sent so far. */
int vf_log_vhdx_errors(void);

/* fuse_ops.c: bytes of the disk its payload blocks hold (st_blocks). */
uint64_t vf_alloc_bytes(const struct vhdx_image *img);

/*
 * main.c: have the watcher thread set the kernel's idea of the disk size
 * back to the real one (async-signal-safe; see vf_write).
 */
void vf_request_size_fix(void);

/*
 * writeback.c: a thread that starts the host's writeback of the image file
 * when asked (sync_file_range), so the disk works during streaming writes.
 */
struct vf_wb;
int vf_wb_start(struct vf_fs *fs);
void vf_wb_kick(struct vf_fs *fs);
void vf_wb_stop(struct vf_fs *fs);

/* unmount.c: vhdxfuse -u [-z] [-w SECONDS] MOUNTPOINT; an exit status. */
int vf_unmount_main(int argc, char *argv[]);

/* fuse_ops.c */

extern const struct fuse_lowlevel_ops vf_ops;

#endif /* VHDXFUSE_H */
