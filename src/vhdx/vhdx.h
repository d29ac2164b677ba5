/*
 * vhdx.h - public interface of the VHDX format library.
 *
 * The library knows nothing of FUSE or of how the image is stored: it reaches
 * the image only through a struct vhdx_io supplied by the caller, returns
 * -errno on failure and reports human-readable diagnostics through a single
 * message sink chosen by the front end.
 */
#ifndef VHDX_H
#define VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Storage backend.  Every callback returns 0 (pread: the number of bytes
 * read) or a negative errno.  pread may return fewer bytes than asked only
 * at end of file.  pwrite must write everything or fail.  Callbacks must be
 * safe to call from several threads at once.
 */
struct vhdx_io {
	void *opaque;
	long (*pread)(void *opaque, void *buf, size_t len, uint64_t off);
	int (*pwrite)(void *opaque, const void *buf, size_t len, uint64_t off);
	int (*flush)(void *opaque);
	int (*truncate)(void *opaque, uint64_t size);
	int (*size)(void *opaque, uint64_t *size);
	/* optional (may be NULL): reserve space, reading as zeros */
	int (*allocate)(void *opaque, uint64_t off, uint64_t len);
	/*
	 * optional (may be NULL): make [off, off + len) read as zeros without
	 * changing the size; unmap != 0 may give the space back (a hole),
	 * unmap == 0 keeps it allocated.  -EOPNOTSUPP: the library writes
	 * zeros instead (or, for unmap, leaves the space as it is).
	 */
	int (*zero)(void *opaque, uint64_t off, uint64_t len, int unmap);
};

/*
 * Backend on an open file descriptor (pread/pwrite/fdatasync/ftruncate).
 * *fdp must be open: on NTFS (ntfs-3g, ntfs3) the backend then never makes
 * a hole, which would flag the file sparse (Windows refuses to attach a
 * sparse VHDX): growth is written as zeros, discard writes zeros instead
 * of punching holes, and nothing is fallocate'd.
 */
void vhdx_io_fd_init(struct vhdx_io *io, int *fdp);

/*
 * After vhdx_io_fd_init: never extend the file without allocating the new
 * space (fallocate, or zeros written where the file system has none), so
 * that it has no holes and a plain copy of it stays dense.  For writing
 * new images; on NTFS nothing more to do.
 */
void vhdx_io_fd_dense(struct vhdx_io *io);

/*
 * 1 if fd is a file on NTFS flagged sparse (FILE_ATTRIBUTE_SPARSE_FILE, as
 * ntfs-3g and ntfs3 show it in the system.ntfs_attrib_be attribute), 0 if
 * on NTFS and not, -ENOTSUP if not on NTFS, or -errno.
 */
int vhdx_fd_ntfs_sparse(int fd);

/*
 * Opening an image file and taking its lock (file.c): one set of rules for
 * every file the library, the daemon and the tool open as an image.
 * Regular files only (-EISDIR, -EINVAL otherwise).  The lock is an OFD
 * lock on the whole file, shared to read and exclusive with
 * VHDX_FILE_WRITE, so a read-write open never runs beside any other open
 * of the image (nor beside a qemu-img that locks it).  A file system
 * without locks is opened without one (status->locked false).
 */
#define VHDX_FILE_WRITE 0x1u /* read-write and an exclusive lock */
#define VHDX_FILE_NOLOCK \
	0x2u /* no lock (the caller holds one elsewhere,
				 or inspects an image in use: force share) */
#define VHDX_FILE_UNTRUSTED_PATH \
	0x4u /* a path read from an image: refuse
					 /proc, /sys and /dev (-EPERM) */

/* Who holds the lock of an image file, as far as can be found out. */
struct vhdx_lock_holder {
	long pid;	       /* 0: not found */
	char prog[32];	       /* its command name, "" if unknown */
	char mountpoint[4096]; /* a vhdxfuse daemon's mount point, or "" */
	bool closing;	       /* a daemon that is unmounted, shutting down */
};

struct vhdx_file_status {
	bool locked;	/* false: asked for none, or lock_errno */
	int lock_errno; /* why the file system gave no lock */
	unsigned long long dev, ino;
	struct vhdx_lock_holder holder; /* on -EBUSY: who has the lock */
};

/*
 * Open path into *fdp and lock it.  When the lock is taken by a daemon
 * that is shutting down (its mount is gone), wait for it up to wait_ms
 * milliseconds.  0, -EBUSY (status->holder says who), or -errno.  status
 * may be NULL.
 */
int vhdx_file_open(const char *path, unsigned int flags, unsigned int wait_ms,
		   int *fdp, struct vhdx_file_status *status);
/* Default of the wait above for both front ends, in milliseconds. */
#define VHDX_LOCK_WAIT_DEFAULT_MS 5000

/* Find who holds a lock on the file open as fd: 1 if found. */
int vhdx_lock_holder_find(int fd, struct vhdx_lock_holder *h);
/* "locked by PID 123 (vhdxfuse), mounted at /mnt" */
void vhdx_lock_holder_describe(const struct vhdx_lock_holder *h, char *buf,
			       size_t len);

/*
 * A running vhdxfuse daemon's record (in /run/vhdxfuse for root, else in
 * $XDG_RUNTIME_DIR/vhdxfuse): its PID, the image's device and inode, its
 * mount point and whether it is closing.  Written by the daemon, removed at
 * its exit; read by vhdx_lock_holder_find() and vhdx_daemon_find().
 */
int vhdx_record_write(int fd, const char *mountpoint, bool closing);
void vhdx_record_remove(void);
/* Has process pid exited (gone, or a zombie not yet reaped)? */
bool vhdx_pid_exited(long pid);
/* The daemon serving mountpoint (absolute, resolved): 1 if found. */
int vhdx_daemon_find(const char *mountpoint, struct vhdx_lock_holder *h);
/*
 * The mount at path (absolute, resolved) in /proc/self/mountinfo: 1 and its
 * type and source (either may be NULL), 0 if none, -errno.
 */
int vhdx_mountinfo_find(const char *path, char *fstype, size_t fstype_len,
			char *source, size_t source_len);

/* Message severities passed to the sink (same values as syslog's). */
enum vhdx_msg_level {
	VHDX_MSG_ERR = 3,
	VHDX_MSG_WARNING = 4,
	VHDX_MSG_NOTICE = 5,
	VHDX_MSG_INFO = 6,
	VHDX_MSG_DEBUG = 7,
};

typedef void (*vhdx_msg_fn)(void *opaque, enum vhdx_msg_level level,
			    const char *msg);

/* Flags for struct vhdx_open_opts.flags. */
#define VHDX_OPEN_RDONLY 0x1u /* never write to the image, not even headers */
/* with RDONLY: do not open the parent of a differencing image (it then
 * reads as zeros); for inspecting a child whose parent is missing */
#define VHDX_OPEN_NO_PARENT 0x2u
/*
 * Read and validate the whole BAT at open, whatever its size, so that
 * vhdx_info.state_count is complete.  Read-write opens always do; without
 * this flag a read-only open of an image whose BAT is larger than
 * bat_eager_max reads it on demand, a segment at a time (see bat_eager_max).
 */
#define VHDX_OPEN_FULL_BAT 0x4u
/*
 * Do not reserve the space of newly allocated payload blocks (the io
 * table's allocate op): the image file stays sparse, taking room only for
 * what is written.  Without it a new block's whole extent is reserved as
 * Hyper-V does: fewer host fragments, and a full host file system fails the
 * write that allocates instead of the later writeback of its data.
 */
#define VHDX_OPEN_SPARSE 0x8u
/*
 * Differencing images, read-only opens only (vhdxtool merge): also accept
 * the parent whose DataWriteGuid is the one a merge of this image into it
 * gives it (vhdx_merge_parent_guid): a parent on which such a merge was
 * interrupted, or has finished.
 */
#define VHDX_OPEN_MERGE_RESUME 0x100u
/*
 * The same for a parent whatever its DataWriteGuid, for finishing a merge
 * that an older vhdxtool left with an unrelated one.  The caller vouches
 * that nothing but a merge of this image changed the parent since the
 * image was made; the library cannot tell.  Still refused: a parent whose
 * DataWriteGuid says that a merge of another image set it.
 */
#define VHDX_OPEN_ANY_LINKAGE 0x200u

/*
 * How the library opens the parent files of a differencing image.  open
 * gets a candidate path and must open it read-only, refuse anything but a
 * regular file, fill *io and set id to a value unique to the file (device
 * and inode) for cycle detection; close releases what open acquired.
 */
struct vhdx_file_ops {
	int (*open)(void *opaque, const char *path, struct vhdx_io *io,
		    uint64_t id[2]);
	void (*close)(void *opaque, struct vhdx_io *io);
	void *opaque;
};

/* The default: open(2) read-only, regular files only, shared OFD lock. */
const struct vhdx_file_ops *vhdx_fd_file_ops(void);
/*
 * The same without the lock, for a caller that already holds an exclusive
 * lock on the parent through another open file (vhdxtool merge).
 */
const struct vhdx_file_ops *vhdx_fd_file_ops_unlocked(void);

struct vhdx_open_opts {
	unsigned int flags;
	vhdx_msg_fn msg;  /* may be NULL: messages are dropped */
	void *msg_opaque; /* passed to msg */
	/* differencing images only: */
	const char *path;	 /* this image's path; parents are looked up
				    relative to its directory */
	const char *parent_path; /* use this parent instead of the locator's
				    paths (still checked against the linkage) */
	const struct vhdx_file_ops *files; /* NULL: vhdx_fd_file_ops() */
	/*
	 * Read-only opens without VHDX_OPEN_FULL_BAT: if the BAT entries the
	 * geometry uses take more than this many bytes, the BAT is not read
	 * at open but 32 KiB segments of it on first use (each validated
	 * then; a corrupt segment fails the reads that need it with -EIO).
	 * 0: VHDX_BAT_EAGER_MAX_DEFAULT.  The parents of a differencing image
	 * inherit it.
	 */
	uint64_t bat_eager_max;
};

/* Default of vhdx_open_opts.bat_eager_max: 4 MiB, 524,288 entries. */
#define VHDX_BAT_EAGER_MAX_DEFAULT (4ull << 20)

struct vhdx_image;

/* Payload block states (MS-VHDX 2.5.1.1). */
enum vhdx_block_state {
	VHDX_BLOCK_NOT_PRESENT = 0,
	VHDX_BLOCK_UNDEFINED = 1,
	VHDX_BLOCK_ZERO = 2,
	VHDX_BLOCK_UNMAPPED = 3,
	VHDX_BLOCK_UNMAPPED_V095 = 5,
	VHDX_BLOCK_FULLY_PRESENT = 6,
	VHDX_BLOCK_PARTIALLY_PRESENT = 7,
};

/* A summary of an open image, for front ends and tools. */
struct vhdx_info {
	uint64_t virtual_size;	     /* bytes */
	uint64_t file_size;	     /* bytes, at open */
	uint32_t block_size;	     /* bytes */
	uint32_t logical_sector;     /* 512 or 4096 */
	uint32_t physical_sector;    /* 512 or 4096 */
	int leave_blocks_allocated;  /* "fixed" image */
	int has_parent;		     /* differencing image */
	int log_replayed;	     /* a dirty log was replayed at open */
	int current_header;	     /* 1 or 2 */
	uint64_t header_seq;	     /* sequence number of the current header */
	uint64_t bat_entries;	     /* BAT entries the geometry uses */
	uint64_t payload_blocks;     /* N */
	uint64_t chunk_ratio;	     /* CR */
	uint64_t state_count[8];     /* payload entries per state, if known */
	int state_count_known;	     /* 0: the BAT is read on demand (see
					bat_eager_max) and not all of it has
					been read: state_count is all zero */
	uint8_t creator[256];	     /* creator string, UTF-8, NUL-terminated */
	uint8_t data_write_guid[16]; /* current DataWriteGuid (on-disk order) */
	uint8_t disk_id[16];	     /* Virtual Disk ID (on-disk order) */
	int chain_depth;	     /* 0, or parents below this image */
};

/* The parent of a differencing image (NULL otherwise). */
struct vhdx_image *vhdx_parent(const struct vhdx_image *img);

/* Path the parent was opened from ("" for none). */
const char *vhdx_parent_path(const struct vhdx_image *img);

/*
 * Open and validate an image.  On success *out holds the image and 0 is
 * returned; on failure a negative errno is returned and at least one
 * VHDX_MSG_ERR message naming the broken structure has been sent to the sink.
 * The errors say whose fault it is: -EUCLEAN the file is not a valid VHDX
 * image (a damaged or foreign structure), -EOPNOTSUPP it uses what is not
 * supported, -EINVAL the caller's options are contradictory; the others
 * (-EIO, -ENOMEM, -ENOENT or -ESTALE for a parent, ...) are what happened.
 * The library never returns -EINVAL for the contents of an image.
 * The io table is copied; its opaque pointer must outlive the image.
 */
int vhdx_open(struct vhdx_image **out, const struct vhdx_io *io,
	      const struct vhdx_open_opts *opts);

/*
 * Open an image read-only like vhdx_open, but never its parent: a
 * differencing image opened this way reads as zeros wherever it would read
 * its parent.  For showing the structures of a child whose parent is
 * missing or does not match; opts->path, parent_path, files and flags
 * other than VHDX_OPEN_FULL_BAT are ignored.
 */
int vhdx_open_detached(struct vhdx_image **out, const struct vhdx_io *io,
		       const struct vhdx_open_opts *opts);

/*
 * Close the image and free it.  A read-write image is flushed and its log
 * marked empty first.  Returns 0 or the first error seen (the image is freed
 * either way).
 */
int vhdx_close(struct vhdx_image *img);

/* Fill *info.  Never fails. */
void vhdx_get_info(const struct vhdx_image *img, struct vhdx_info *info);

/* Size of the virtual disk in bytes. */
uint64_t vhdx_virtual_size(const struct vhdx_image *img);

/* The space an image's own blocks take (this image, not its parents). */
struct vhdx_allocation {
	uint64_t payload_bytes; /* file bytes of payload blocks that hold
				   data (FULLY_ or PARTIALLY_PRESENT) */
	uint64_t bitmap_bytes;	/* file bytes of sector bitmap blocks */
	uint64_t disk_bytes;	/* bytes of the virtual disk those payload
				   blocks hold: payload_bytes less what the
				   last block reaches past the disk's end */
	int known;		/* 0: a BAT read on demand is not all read
				   yet; disk_bytes is then an estimate (the
				   file size, at most the disk size) and the
				   others are 0 */
};

/* Fill *a: one definition of "allocated" for every front end. */
void vhdx_allocation(const struct vhdx_image *img, struct vhdx_allocation *a);

/*
 * Read len bytes of the virtual disk at off into buf.  Reads that go past the
 * end of the disk are truncated; the number of bytes read is returned, or a
 * negative errno.  Safe to call from several threads at once.
 */
long vhdx_read(struct vhdx_image *img, void *buf, size_t len, uint64_t off);

/*
 * Write len bytes at off.  A write that starts at or past the end of the
 * disk fails with -ENOSPC; one that crosses it is truncated.  Returns the
 * number of bytes written or a negative errno (-EROFS on a read-only image,
 * or after a metadata write failed and the image was switched read-only).
 * Safe to call from several threads at once, also with vhdx_read.
 *
 * Durability: data and metadata written before a successful vhdx_flush or
 * vhdx_close survive a crash.  Between those points the image is consistent
 * at every instant; a write not yet flushed reads back after a crash either
 * as before or as written.
 */
long vhdx_write(struct vhdx_image *img, const void *buf, size_t len,
		uint64_t off);

/*
 * Make guid the DataWriteGuid of this read-write session now (both headers
 * written and flushed), instead of a random one at the first write that
 * changes the disk.  Call before any write.  0, -EROFS on a read-only
 * image, -EBUSY if the session has already renewed it, or the error of the
 * header write.
 */
int vhdx_set_data_write_guid(struct vhdx_image *img, const uint8_t guid[16]);

/* Flags of vhdx_zero. */
#define VHDX_ZERO_UNMAP 0x1u /* give the space back (discard, punch hole) */

/*
 * Make len bytes at off read as zeros (fmt §10.5).  A whole payload block
 * of a dynamic or differencing image becomes ZERO, journaled with the next
 * flush, when it has no data of its own in the file or VHDX_ZERO_UNMAP is
 * given; with VHDX_ZERO_UNMAP its old space in the file then becomes a hole
 * (the file keeps its size; the space is not reused).  A fully present
 * block is otherwise zeroed in place and stays allocated, as are parts of
 * blocks (with VHDX_ZERO_UNMAP as holes) and every block of a fixed image
 * (never holes: a fixed image keeps its space).  Parts of blocks that are
 * not present in a differencing image are written with zeros, which
 * allocates them.  Blocks that already read as zeros are left alone.
 *
 * The range is clipped at the end of the disk.  Returns 0 or a negative
 * errno (-EROFS on a read-only image, -EINVAL for unknown flags).
 * Thread safety and durability as vhdx_write.
 */
int vhdx_zero(struct vhdx_image *img, uint64_t off, uint64_t len,
	      unsigned int flags);

/* Flags of vhdx_resize. */
#define VHDX_RESIZE_ALLOW_DATA_LOSS 0x1u /* shrink even over data */
#define VHDX_RESIZE_SPARSE	    0x2u /* do not reserve a fixed image's new blocks */

/*
 * Change the virtual disk size to new_size (a multiple of the logical
 * sector size, at most 64 TiB), crash-safely: one log entry carries the
 * BAT, region table and size changes, so a crash leaves the old size or
 * the new one (fmt §19.4).  Growing: new space reads as zeros (a fixed
 * image gets new blocks, reserved unless VHDX_RESIZE_SPARSE or
 * VHDX_OPEN_SPARSE; a differencing image hides a larger parent there);
 * the BAT grows in place when the space after it is free, else moves to
 * the end of the file.  Shrinking: refused with -EFBIG (and a message)
 * when the part cut off holds data or a partition of an MBR or GPT table
 * ends past new_size, unless VHDX_RESIZE_ALLOW_DATA_LOSS; the cut blocks
 * become NOT_PRESENT, their space stays in the file.  Renews the
 * DataWriteGuid (children of the image no longer open).
 *
 * A grow is safe with concurrent vhdx_read/vhdx_write/vhdx_zero (readers
 * see the old or the new size); a shrink must not run with other I/O.
 * Returns 0, -EINVAL (bad size or flags, reported), -EROFS, -EFBIG or
 * another -errno (an I/O error turns the image read-only).
 */
int vhdx_resize(struct vhdx_image *img, uint64_t new_size, unsigned int flags);

/* Make everything written so far durable (data, BAT, log).  0 or -errno. */
int vhdx_flush(struct vhdx_image *img);

/* Nonzero if writes are refused (opened read-only, or after an error). */
int vhdx_is_read_only(const struct vhdx_image *img);

/* ---- creating images ---- */

enum vhdx_type {
	VHDX_TYPE_DYNAMIC = 0,
	VHDX_TYPE_FIXED = 1,
	VHDX_TYPE_DIFFERENCING = 2,
};

struct vhdx_create_opts {
	enum vhdx_type type;
	uint64_t virtual_size;	  /* bytes, a multiple of logical_sector */
	uint32_t block_size;	  /* 0: chosen from the size like Hyper-V */
	uint32_t logical_sector;  /* 0: 512 */
	uint32_t physical_sector; /* 0: 4096 */
	uint32_t log_size;	  /* 0: 1 MiB */
	const char *creator;	  /* NULL: "vhdxfuse <version>" */
	vhdx_msg_fn msg;	  /* reasons for refusing the options */
	void *msg_opaque;
	/* differencing: the parent's identity and where to find it */
	uint8_t parent_linkage[16];  /* the parent's DataWriteGuid */
	uint8_t disk_id[16];	     /* the parent's Virtual Disk ID */
	const char *parent_relative; /* relative_path (Windows form) */
	const char *parent_absolute; /* absolute_win32_path, or NULL */
};

/*
 * Write a new, empty image through io (whose file must be empty).  Returns
 * 0 or a negative errno (-EINVAL with a message for invalid options).
 */
int vhdx_create(const struct vhdx_io *io, const struct vhdx_create_opts *o);

/* ---- what a range of the virtual disk reads (query.c) ---- */

enum vhdx_source {
	VHDX_SOURCE_ZERO = 0, /* reads as zeros, stored nowhere */
	VHDX_SOURCE_FILE = 1, /* stored in the file of the image at depth */
};

struct vhdx_extent_info {
	uint64_t length;	 /* bytes from off answered alike (> 0) */
	enum vhdx_source source; /* where they are read from */
	int depth;		 /* the image whose BAT answers: 0 this one,
				    d the parent d levels down the chain */
	unsigned int state;	 /* its block's state (enum vhdx_block_state);
				    for FILE, FULLY_ or PARTIALLY_PRESENT */
	uint64_t file_offset;	 /* FILE: where off is in that image's file */
};

/*
 * The one block query: how the range [off, off + len) (off < virtual size;
 * len clipped to the end of the disk) starts.  Follows the chain of a
 * differencing image (NOT_PRESENT blocks, and the sectors of a
 * PARTIALLY_PRESENT block whose bitmap bit is 0) down to the image that
 * holds the data or says zeros, and answers with the longest run from off
 * that reads from the same image, in the same state and, for FILE, from
 * consecutive file bytes.  A range a smaller parent does not cover reads as
 * zeros (state NOT_PRESENT at the depth of the child).  Valid until the
 * next write to the range.  0, -EINVAL (off or len out of range), or the
 * error of a BAT entry or sector bitmap that cannot be read (-EIO).
 */
int vhdx_query(struct vhdx_image *img, uint64_t off, uint64_t len,
	       struct vhdx_extent_info *x);

/*
 * State of payload block pb (enum vhdx_block_state), -EINVAL if pb is past
 * the last block, or -EIO (BAT read on demand) if its BAT entry cannot be
 * read or is invalid.
 */
int vhdx_block_state(struct vhdx_image *img, uint64_t pb);

/* Where a range of the virtual disk lives (vhdx_map). */
enum vhdx_map_kind {
	VHDX_MAP_FILE,	/* bytes at file_offset of the image file */
	VHDX_MAP_ZERO,	/* reads as zeros */
	VHDX_MAP_OTHER, /* anything else: use vhdx_read */
};

struct vhdx_mapping {
	enum vhdx_map_kind kind;
	uint64_t length;      /* bytes from off with this mapping */
	uint64_t file_offset; /* VHDX_MAP_FILE only */
};

/*
 * Describe the longest run starting at off (< virtual size, at most len
 * bytes) that maps one way, so a front end can serve it without copying
 * (splice from the image file, a shared zero page).  The answer is valid
 * until the next write to that range.  0 or -EINVAL (off out of range).
 */
int vhdx_map(struct vhdx_image *img, uint64_t off, uint64_t len,
	     struct vhdx_mapping *m);

/* Text of a payload block state, e.g. "FULLY_PRESENT". */
const char *vhdx_block_state_name(unsigned int state);

/* Library version string. */
const char *vhdx_version(void);

/* ---- parent linkage (linkage.c) ---- */

/* A GUID in on-disk order as lower-case text, without braces (guid.c). */
#define VHDX_GUID_STR_LEN 37 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\0" */
void vhdx_guid_to_str(const uint8_t g[16], char out[VHDX_GUID_STR_LEN]);

/* How the parent of a differencing image was accepted. */
enum vhdx_parent_match {
	VHDX_PARENT_LINKED = 0,	 /* parent_linkage(2) = its DataWriteGuid */
	VHDX_PARENT_MERGING = 1, /* VHDX_OPEN_MERGE_RESUME matched */
	VHDX_PARENT_FORCED = 2,	 /* VHDX_OPEN_ANY_LINKAGE accepted it */
};

/* enum vhdx_parent_match of an image with a parent, else -EINVAL. */
int vhdx_parent_match(const struct vhdx_image *child);

/* A differencing image's link to its parent, as its locator and open say. */
struct vhdx_linkage {
	int has_parent;		/* HasParent: a differencing image */
	int linkage_valid;	/* parent_linkage is a GUID (else zeros) */
	uint8_t linkage[16];	/* parent_linkage: the parent's DataWriteGuid
				    it was made against (on-disk order) */
	int parent_open;	/* the parent was opened (not detached) */
	int match;		/* parent_open: enum vhdx_parent_match */
	uint8_t parent_dwg[16]; /* parent_open: its DataWriteGuid */
};

/*
 * Fill *l for img: whether and how its parent is linked.  The one place
 * the front ends learn the linkage (vhdxtool info prints it, merge and
 * the daemon act on the match); the check itself is the open's.
 */
void vhdx_parent_linkage(const struct vhdx_image *img, struct vhdx_linkage *l);

/*
 * The DataWriteGuid a merge of child gives its parent: derived from the
 * child's parent_linkage and the child's own DataWriteGuid, so that a
 * rerun of an interrupted merge recognises the parent it was working on,
 * while every other child of that parent (whose own DataWriteGuid differs)
 * sees a changed parent.  0, or -EINVAL for an image without a parent.
 */
int vhdx_merge_parent_guid(const struct vhdx_image *child, uint8_t guid[16]);

#endif /* VHDX_H */
