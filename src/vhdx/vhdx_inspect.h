/*
 * vhdx_inspect.h - looking inside an open image, for tools: a detailed
 * description of every on-disk structure (inspect.c), a consistency check
 * with safe repairs (check.c), and the allocation map of the virtual disk.
 *
 * Like the rest of the library these functions never print: findings go to
 * the image's message sink, results come back in structures, failures are
 * returned as -errno.
 */
#ifndef VHDX_INSPECT_H
#define VHDX_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhdx.h"

/* Text form of a GUID, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" and NUL. */
#define VHDX_GUID_TEXT_LEN 37

/* One of the two headers (fmt §4), as stored. */
struct vhdx_header_desc {
	uint64_t offset; /* 0x10000 or 0x20000 */
	bool valid;	 /* signature and checksum good */
	bool current;	 /* the header the image is opened through */
	uint32_t checksum;
	uint64_t seq;
	char file_write_guid[VHDX_GUID_TEXT_LEN];
	char data_write_guid[VHDX_GUID_TEXT_LEN];
	char log_guid[VHDX_GUID_TEXT_LEN];
	uint16_t log_version;
	uint16_t version;
	uint32_t log_length;
	uint64_t log_offset;
};

/* An entry of the region table in use (fmt §5). */
struct vhdx_region_desc {
	char guid[VHDX_GUID_TEXT_LEN];
	const char *name; /* "bat", "metadata", or NULL if unknown */
	uint64_t offset;
	uint32_t length;
	uint32_t required; /* the raw Required field; bit 0 is the flag */
};

/* An entry of the metadata table (fmt §6). */
struct vhdx_meta_desc {
	char guid[VHDX_GUID_TEXT_LEN];
	const char *name; /* e.g. "file_parameters", NULL if unknown */
	uint32_t offset;  /* relative to the metadata region */
	uint32_t length;
	uint32_t flags; /* IsUser 0x1, IsVirtualDisk 0x2, IsRequired 0x4 */
};

/* A key/value pair of the parent locator, converted to UTF-8. */
struct vhdx_kv {
	char *key;
	char *value;
};

/* A log entry that carries the current LogGuid and a good checksum. */
struct vhdx_log_entry_desc {
	uint32_t offset; /* relative to the log */
	uint32_t length;
	uint32_t tail;
	uint64_t seq;
	uint32_t descriptors;
	bool active; /* part of the active sequence (would be replayed) */
};

struct vhdx_log_desc {
	uint64_t offset;
	uint32_t length;
	char guid[VHDX_GUID_TEXT_LEN]; /* LogGuid of the current header */
	bool dirty;		       /* LogGuid is not zero */
	bool replayed;		       /* into the file (read-write open) or
					* into memory (read-only open) */
	uint64_t sectors_to_replay;    /* read-only open of a dirty log */
	size_t n_entries;
	struct vhdx_log_entry_desc *entries;
	bool has_active; /* a complete sequence was found */
	uint64_t active_first_seq;
	uint64_t active_last_seq;
	size_t active_entries;
};

/* Everything vhdxtool info shows. */
struct vhdx_description {
	struct vhdx_info info;
	char disk_id[VHDX_GUID_TEXT_LEN];
	uint32_t file_parameter_flags;

	struct vhdx_header_desc header[2];

	int region_copy;      /* 1 or 2: the table in use */
	bool region_valid[2]; /* signature, checksum, entry count */
	bool regions_identical;
	size_t n_regions;
	struct vhdx_region_desc *regions;

	uint64_t metadata_offset;
	uint32_t metadata_length;
	size_t n_meta;
	struct vhdx_meta_desc *meta;

	bool has_locator; /* a parent locator item exists */
	bool locator_ok;  /* and its key/value table is well formed */
	char locator_type[VHDX_GUID_TEXT_LEN];
	size_t n_locator;
	struct vhdx_kv *locator;

	struct vhdx_log_desc log;

	uint64_t bat_offset;
	uint32_t bat_length;
	uint64_t bitmap_present; /* sector bitmap entries SB_BLOCK_PRESENT */
	uint64_t bitmap_not_present;
	/* the bytes blocks take: vhdx_allocation */
};

/*
 * Describe an open image (read-only or read-write).  On success *out must
 * be released with vhdx_describe_free.  Reads the structures again through
 * the log (as the open did), and all of a BAT the open left to be read on
 * demand (-EIO if a part of it is invalid); returns 0 or -errno.
 */
int vhdx_describe(struct vhdx_image *img, struct vhdx_description **out);
void vhdx_describe_free(struct vhdx_description *d);

/*
 * Allocation map (vhdx_query).  Returns 1 if the len bytes at off (a
 * virtual disk offset) start with data stored in the image or in a parent,
 * 0 if they start with a range that reads as zeros without being stored (a
 * block that is not present, ZERO, UNMAPPED...), or -errno.  *len is cut to
 * the length of that run (and to the end of the disk).
 */
int vhdx_block_status(struct vhdx_image *img, uint64_t off, uint64_t *len);

/* ---- check and repair (check.c) ---- */

/* Called now and then with the work done so far; may be NULL. */
typedef void (*vhdx_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct vhdx_check_report {
	unsigned int problems;	 /* the image is not as the format requires */
	unsigned int repairable; /* of those, what vhdx_repair can fix */
	unsigned int warnings;	 /* legal but odd, or wasteful */
	unsigned int repaired;	 /* changes made by vhdx_repair */
	uint64_t leaked_bytes;	 /* file bytes past the last structure */
	uint64_t unused_bytes;	 /* bytes in gaps between structures */
	uint64_t unused_ranges;
	/* free space: the gaps and the end past the last structure */
	uint64_t free_bytes;
	uint64_t free_places;
};

/*
 * Cross-check an open image beyond what vhdx_open validates: both header
 * copies and both region table copies, the log, metadata item overlaps, every
 * BAT entry (offsets unique, inside the file, clear of the header section,
 * log, regions and each other; sector bitmap entries consistent with the
 * payload states) and file space no structure uses.  Each finding goes to
 * the sink: problems as VHDX_MSG_ERR, warnings as VHDX_MSG_WARNING, the
 * rest as VHDX_MSG_INFO.  Never writes.  Fills *r; returns 0 or -errno (the
 * check could not be carried out).
 */
int vhdx_check(struct vhdx_image *img, struct vhdx_check_report *r,
	       vhdx_progress_fn progress, void *progress_opaque);

/*
 * Fix what can be fixed safely on an image opened read-write (the open
 * itself has replayed a dirty log): rewrite a damaged header or region
 * table copy from the good one, and truncate leaked space at the end of
 * the file.  Each change is reported to the sink (VHDX_MSG_NOTICE) and
 * counted in r->repaired.  Returns 0 or -errno.
 */
int vhdx_repair(struct vhdx_image *img, struct vhdx_check_report *r);

/* ---- compaction (compact.c), fmt §19.3 ---- */

/* First turn blocks whose bytes are all zero into ZERO blocks. */
#define VHDX_COMPACT_ZEROS 0x1u

struct vhdx_compact_opts {
	unsigned int flags; /* VHDX_COMPACT_* */
	vhdx_progress_fn progress;
	void *progress_opaque;
	/* if non-NULL: stop (-EINTR) after the current move once *stop != 0 */
	const volatile int *stop;
};

struct vhdx_compact_result {
	uint64_t size_before, size_after; /* file sizes */
	uint64_t blocks_moved;		  /* payload blocks */
	uint64_t bitmaps_moved;		  /* sector bitmap blocks */
	uint64_t blocks_zeroed;		  /* made ZERO (VHDX_COMPACT_ZEROS) */
	uint64_t free_bytes;		  /* free places left before the end */
};

/*
 * Shrink the file of an image opened read-write, in place: blocks move
 * into free places from the end of the file down, each move made durable
 * (data flushed, new BAT entry journaled) before its old place is reused,
 * and the file is cut after its last used byte and left without holes
 * (unless opened VHDX_OPEN_SPARSE).  What the disk reads is unchanged, and
 * so is DataWriteGuid.  Safe to interrupt at any point.  Returns 0 or
 * -errno (reported to the sink).
 */
int vhdx_compact(struct vhdx_image *img, const struct vhdx_compact_opts *o,
		 struct vhdx_compact_result *r);

#endif /* VHDX_INSPECT_H */
