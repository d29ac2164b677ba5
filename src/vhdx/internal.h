/*
 * internal.h - what the pieces of the library share with each other (and
 * with the unit tests).  Not installed, not used by the front ends.
 */
#ifndef VHDX_INTERNAL_H
#define VHDX_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>

#include "format.h"
#include "vhdx.h"

#if defined(__GNUC__)
#define VHDX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VHDX_PRINTF(a, b)
#endif

/* ---- CRC-32C (crc32c.c) ---- */

/* Running update without the initial/final inversion. */
uint32_t vhdx_crc32c_update(uint32_t crc, const void *buf, size_t len);
/* Standard CRC-32C: init 0xFFFFFFFF, final xor 0xFFFFFFFF. */
uint32_t vhdx_crc32c(const void *buf, size_t len);
/*
 * CRC of a structure whose u32 checksum field at csum_off is taken as zero
 * (the buffer is not modified).
 */
uint32_t vhdx_crc32c_skip(const uint8_t *buf, size_t len, size_t csum_off);

/* ---- text (utf16.c): UTF-16LE in the image, UTF-8 everywhere else ---- */

#define VHDX_U16_STRICT	   0x1u /* fail on odd length, NUL, lone surrogate */
#define VHDX_U16_STOP_NUL  0x2u /* a NUL ends the text (else '?', or fails) */
#define VHDX_U16_PRINTABLE 0x4u /* control characters become '?' */

/*
 * Decode len bytes of UTF-16LE into out (outlen bytes, NUL-terminated).
 * Without VHDX_U16_STRICT, unpaired surrogates and NULs become '?' and text
 * that does not fit is cut at a whole character.  Returns the length of
 * the UTF-8 text, or -1 (strict: invalid or does not fit; out is "").
 */
long vhdx_utf16_decode(const uint8_t *s, size_t len, unsigned int flags,
		       char *out, size_t outlen);
/* The same into a new string (free it); NULL if invalid (strict) or no
 * memory. */
char *vhdx_utf16_to_utf8(const uint8_t *s, size_t len, unsigned int flags);
/*
 * Valid UTF-8 (no overlong forms, no surrogates) to UTF-16LE, without a
 * terminator; returns the bytes written, 0 if invalid or over max bytes.
 */
size_t vhdx_utf8_to_utf16(const char *s, uint8_t *out, size_t max);

/* ---- GUIDs (guid.c); 16 bytes in on-disk (mixed-endian) order ---- */

/* vhdx_guid_to_str: vhdx.h */
/* Parse text (braces optional, any case) into on-disk order: 0 or -EINVAL. */
int vhdx_guid_from_str(const char *s, uint8_t g[16]);
bool vhdx_guid_is_zero(const uint8_t g[16]);
/* A fresh random GUID (version 4) in on-disk order. */
void vhdx_guid_generate(uint8_t g[16]);

/* ---- geometry (bat.c), fmt §7-§8.2 ---- */

struct vhdx_geom {
	uint64_t virtual_size;
	uint32_t block_size;
	uint32_t logical_sector;
	uint64_t sectors_per_block;
	uint64_t chunk_ratio;	 /* CR: payload blocks per chunk */
	uint64_t payload_blocks; /* N */
	uint64_t bitmap_blocks;	 /* SB */
};

/* Validate the inputs and compute the rest.  0 or -EINVAL. */
int vhdx_geom_init(struct vhdx_geom *g, uint64_t virtual_size,
		   uint32_t block_size, uint32_t logical_sector);

static inline uint64_t vhdx_bat_payload_index(const struct vhdx_geom *g,
					      uint64_t pb)
{
	return pb + pb / g->chunk_ratio;
}

static inline uint64_t vhdx_bat_bitmap_index(const struct vhdx_geom *g,
					     uint64_t pb)
{
	return (pb / g->chunk_ratio) * (g->chunk_ratio + 1) + g->chunk_ratio;
}

/* The payload block of BAT entry i (meaningless for a bitmap slot). */
static inline uint64_t vhdx_bat_entry_block(const struct vhdx_geom *g,
					    uint64_t i)
{
	return i - i / (g->chunk_ratio + 1);
}

/*
 * A payload block state that reads as zeros whatever the file holds
 * (fmt §8.3): never expose stale content.  NOT_PRESENT is not one of them:
 * it reads the parent in a differencing image.
 */
static inline bool vhdx_state_reads_zero(unsigned int state)
{
	return state == VHDX_BLOCK_UNDEFINED || state == VHDX_BLOCK_ZERO ||
	       state == VHDX_BLOCK_UNMAPPED ||
	       state == VHDX_BLOCK_UNMAPPED_V095;
}

static inline bool vhdx_bat_is_bitmap_slot(const struct vhdx_geom *g,
					   uint64_t i)
{
	return i % (g->chunk_ratio + 1) == g->chunk_ratio;
}

/* Why these values are not a valid geometry, or NULL if they are. */
const char *vhdx_geom_problem(uint64_t virtual_size, uint32_t block_size,
			      uint32_t logical_sector);

/* Smallest number of BAT entries a valid file must hold (fmt §7.1). */
uint64_t vhdx_bat_min_entries(const struct vhdx_geom *g, bool differencing);
/* BAT entries a writer allocates: SB * (CR + 1). */
uint64_t vhdx_bat_alloc_entries(const struct vhdx_geom *g);

/*
 * Lazy BAT (bat.c).  A read-only open of a large BAT reserves the array
 * but reads it in segments of this many entries (32 KiB of BAT) when an
 * entry of the segment is first needed.
 */
#define VHDX_BAT_SEG_ENTRIES 4096u

enum vhdx_seg_state {
	VHDX_SEG_ABSENT = 0, /* not read yet (or the read failed: retried) */
	VHDX_SEG_READY = 1,  /* decoded and validated */
	VHDX_SEG_BAD = 2,    /* an entry failed validation (reported once) */
};

/* Deepest differencing chain accepted (parents below the top image). */
#define VHDX_MAX_CHAIN 32

/* ---- the image ---- */

/* A sector image taken from the log, overriding the file (read-only open). */
struct vhdx_overlay_sector {
	uint64_t offset; /* 4 KiB aligned file offset */
	uint8_t *data;	 /* 4096 bytes, NULL for a zeroed sector */
	size_t rank;	 /* order of replay; the highest wins */
};

/* A file range occupied by some structure, for overlap checks. */
struct vhdx_extent {
	uint64_t start;
	uint64_t length;
	const char *what;
	uint64_t index; /* BAT index for blocks, else 0 */
};

struct vhdx_image {
	struct vhdx_io io;
	unsigned int flags;
	vhdx_msg_fn msg;
	void *msg_opaque;

	uint64_t file_size; /* physical size at open */
	uint64_t eff_size;  /* as seen through the log (>= file_size) */

	/* headers (header.c) */
	uint8_t hdr[2][VHDX_HEADER_SIZE];
	bool hdr_valid[2];
	int cur; /* index of the current header, 0 or 1 */
	uint64_t seq;
	uint8_t log_guid[16];
	uint8_t data_write_guid[16];
	uint64_t log_offset;
	uint32_t log_length;
	char creator[256];

	/* log (log.c) */
	struct vhdx_overlay_sector *ov;
	size_t ov_count;
	bool log_replayed;

	/* regions (region.c) */
	int region_copy; /* 1 or 2: the table that was used */
	uint64_t bat_offset;
	uint32_t bat_length;
	uint64_t meta_offset;
	uint32_t meta_length;
	struct vhdx_extent *extents; /* header, log, regions */
	size_t n_extents;

	/* metadata (metadata.c) */
	uint32_t fp_flags;
	uint32_t physical_sector;
	uint8_t disk_id[16];
	uint8_t *parent_locator; /* raw item, NULL if none */
	uint32_t parent_locator_len;
	struct vhdx_geom g;

	/*
	 * BAT (bat.c).  Read through vhdx_bat_get() unless the whole BAT is
	 * known to be loaded (!bat_lazy: read-write opens, VHDX_OPEN_FULL_BAT,
	 * small BATs), as write.c, journal.c and check.c assume.
	 */
	uint64_t *bat; /* decoded entries, bat_entries of them */
	uint64_t bat_entries;
	uint64_t state_count[8]; /* lazy: of the ready segments so far */
	uint64_t bat_eager_max;	 /* opts->bat_eager_max or the default */
	bool bat_lazy;		 /* segments are read on first use */
	size_t bat_map_len;	 /* lazy: bat is an mmap of this length */
	uint8_t *bat_seg;	 /* lazy: VHDX_SEG_* per segment (atomic) */
	uint64_t bat_n_segs;
	uint64_t bat_segs_ready;      /* atomic; counts complete at n_segs */
	pthread_mutex_t bat_seg_lock; /* serialises segment loads */

	pthread_rwlock_t lock; /* BAT entries, counts, header fields */

	/* differencing (parent.c) */
	struct vhdx_image *parent;
	struct vhdx_io parent_io; /* the parent file, closed with files */
	struct vhdx_file_ops files;
	char *parent_path;
	int depth;	     /* parents below this image */
	int parent_match;    /* enum vhdx_parent_match */
	uint8_t linkage[16]; /* parent_linkage, parsed */
	uint64_t chain_ids[VHDX_MAX_CHAIN + 1][2]; /* files above and this */
	int n_chain_ids;
	pthread_mutex_t bitmap_lock;
	uint8_t **bitmaps; /* per chunk: 1 MiB sector bitmap, lazily */

	/* read-write session state (write.c, journal.c) */
	pthread_mutex_t meta_lock; /* allocation, commit, header updates */
	bool session_started;	   /* FileWriteGuid renewed */
	bool data_guid_renewed;	   /* DataWriteGuid renewed (atomic) */
	bool read_only;		   /* opened RO, or switched after an error
				      (atomic: read without a lock) */
	int shrink_reported;	   /* atomic: vhdx_file_read saw the file
				      shorter than at open (reported once) */
	int broken;		   /* -errno of a failed metadata write */
	uint64_t alloc_end;	   /* next free 1 MiB-aligned file offset */
	uint64_t flushed_size;	   /* file size known to be durable */
	uint8_t *dirty;		   /* one flag per 4 KiB BAT sector */
	uint64_t n_dirty;
	uint64_t log_pos;	 /* where the next entry goes */
	uint64_t log_seq;	 /* sequence number of the next entry */
	bool log_active;	 /* LogGuid in the header is non-zero */
	bool apply_unflushed;	 /* applied sectors not yet flushed */
	bool flush_failed;	 /* an fdatasync failed: keep the log */
	struct vhdx_freemap *fm; /* free places of the file (freemap.c) */
	bool trimming;		 /* journal.c: giving the free tail back */
};

/*
 * Locks and their order.  A thread holding one may take only those after
 * it in this list, never one before (nor a second image's meta_lock):
 *
 *  1. meta_lock (mutex): allocation of new blocks, ZERO transitions, the
 *     flush and journal commit (held across their fdatasyncs), header
 *     updates, session start.  Only what changes metadata takes it; a
 *     write into a FULLY_PRESENT block, a read and vhdx_get_info never do,
 *     so none of them waits for a flush in progress.  Held while reading
 *     the parent (copy_up): a parent's locks come after it.
 *  2. bitmap_lock (mutex, parent.c): the sector bitmap cache.
 *  3. lock (rwlock): img->bat entries, state_count, and the header fields
 *     that vhdx_get_info reports (hdr, cur, seq, data_write_guid,
 *     log_guid).  Written (wrlock) only with meta_lock held too, so a
 *     meta_lock holder may read them without it; everyone else takes the
 *     rdlock.  Held only for memory accesses, never across I/O.
 *  4. bat_seg_lock (mutex, bat.c): loading a lazy BAT segment (taken under
 *     lock's rdlock by vhdx_bat_get, or under bitmap_lock).
 *  The message sink and the io callbacks may be called with any of them
 *  held; they must not call back into the library.
 *
 * Lock-free fields: file_size (vhdx_known_size; grows under meta_lock),
 * read_only, data_guid_renewed, shrink_reported and the lazy BAT flags are
 * accessed with __atomic builtins.
 */

/* img->file_size: the file size at open, grown by allocation. */
static inline uint64_t vhdx_known_size(const struct vhdx_image *img)
{
	return __atomic_load_n(&img->file_size, __ATOMIC_ACQUIRE);
}

/* ---- messages (msg.c) ---- */

void vhdx_msgf(const struct vhdx_image *img, enum vhdx_msg_level level,
	       const char *fmt, ...) VHDX_PRINTF(3, 4);
#define vhdx_err(img, ...)   vhdx_msgf((img), VHDX_MSG_ERR, __VA_ARGS__)
#define vhdx_warn(img, ...)  vhdx_msgf((img), VHDX_MSG_WARNING, __VA_ARGS__)
#define vhdx_info(img, ...)  vhdx_msgf((img), VHDX_MSG_INFO, __VA_ARGS__)
#define vhdx_debug(img, ...) vhdx_msgf((img), VHDX_MSG_DEBUG, __VA_ARGS__)

/* ---- the bottom layer (core.c) ---- */

/*
 * Read file bytes as the current metadata sees them: through the log
 * overlay, with bytes past the physical end of file at open (or past the
 * end that allocation has grown it to) read as zeros.  A file now shorter
 * than that fails the read with -EIO (reported once); a range past what
 * any VHDX file can hold comes from a damaged structure: -EUCLEAN.
 */
int vhdx_file_read(struct vhdx_image *img, void *buf, size_t len, uint64_t off);
/* Register a used range; fails with -EUCLEAN if it overlaps another. */
int vhdx_extent_add(struct vhdx_image *img, uint64_t start, uint64_t length,
		    const char *what);
/* Report a failed metadata write once and turn the image read-only. */
void vhdx_set_broken(struct vhdx_image *img, int err, const char *what);

/* ---- files without holes (io_dense.c) ---- */

/*
 * If fd is a file on NTFS, replace the fd backend's pwrite, truncate,
 * allocate and zero in io by ones that never leave a hole (the file would
 * be flagged sparse).  Returns whether it did.
 */
bool vhdx_io_dense_setup(struct vhdx_io *io, int fd);

/* ---- open steps, in order (each reports its own errors) ---- */

int vhdx_read_file_id(struct vhdx_image *img);
int vhdx_read_headers(struct vhdx_image *img);
int vhdx_log_load(struct vhdx_image *img); /* replay into the overlay */
void vhdx_log_free(struct vhdx_image *img);
struct vhdx_log_desc;
/*
 * The log as the open sees it, for vhdx_describe: every entry the open's
 * scan finds valid, and which of them form the active sequence.  Fills the
 * entry fields of *l; 0 or -errno.
 */
int vhdx_log_scan(struct vhdx_image *img, struct vhdx_log_desc *l);
int vhdx_read_regions(struct vhdx_image *img);
int vhdx_read_metadata(struct vhdx_image *img);
int vhdx_read_bat(struct vhdx_image *img);
void vhdx_bat_free(struct vhdx_image *img);
/* vhdx_geom_init into img->g, reporting what is wrong through the sink. */
int vhdx_geom_init_report(struct vhdx_image *img, uint64_t virtual_size,
			  uint32_t block_size, uint32_t logical_sector);

/* ---- BAT access (bat.c) ---- */

/* Slow path of vhdx_bat_get: read, decode and validate segment seg. */
int vhdx_bat_load(struct vhdx_image *img, uint64_t seg);

/*
 * BAT entry idx (< bat_entries) into *entry: 0, or -EIO if idx is out of
 * range or its segment is invalid (reported when first found), or the
 * error of reading it.  Callers that may race with the writer hold
 * img->lock for reading, as for a plain img->bat[idx].
 */
static inline int vhdx_bat_get(struct vhdx_image *img, uint64_t idx,
			       uint64_t *entry)
{
	if (idx >= img->bat_entries)
		return -EIO;
	if (img->bat_lazy) {
		uint64_t seg = idx / VHDX_BAT_SEG_ENTRIES;

		/* acquire: pairs with the release that published it */
		if (__atomic_load_n(&img->bat_seg[seg], __ATOMIC_ACQUIRE) !=
		    VHDX_SEG_READY) {
			int ret = vhdx_bat_load(img, seg);

			if (ret < 0)
				return ret;
		}
	}
	*entry = img->bat[idx];
	return 0;
}

/* Lazy mode: load every segment (for check and describe).  0 or -errno. */
int vhdx_bat_load_all(struct vhdx_image *img);

/* ---- the parent locator's key/value table (locator.c) ---- */

struct vhdx_kv;
/*
 * Decode the n entries of the locator item pl (len bytes): each key and
 * value past the header, non-empty, of even length, inside the item and
 * valid UTF-16.  On success *kv holds the pairs (vhdx_locator_free);
 * otherwise -EUCLEAN (reported to img's sink) or -ENOMEM.
 */
int vhdx_locator_decode(const struct vhdx_image *img, const uint8_t *pl,
			uint32_t len, struct vhdx_kv **kv, size_t *n);
void vhdx_locator_free(struct vhdx_kv *kv, size_t n);

/* ---- differencing (parent.c) ---- */

/* Open the chain below img (HasParent set).  Reports what it tried. */
int vhdx_open_parent(struct vhdx_image *img, const struct vhdx_open_opts *opts);
void vhdx_parent_free(struct vhdx_image *img);
/* The image depth levels down the chain (0: img), NULL past its end. */
struct vhdx_image *vhdx_chain_image(struct vhdx_image *img, int depth);

/* ---- parent linkage and the merge GUID (linkage.c) ---- */

/*
 * The parent DataWriteGuid a merge of a child whose parent_linkage is
 * linkage and whose own DataWriteGuid is dwg sets.
 */
void vhdx_merge_guid(const uint8_t linkage[16], const uint8_t dwg[16],
		     uint8_t out[16]);
/* Whether a DataWriteGuid carries the tag vhdx_merge_guid puts in it. */
bool vhdx_is_merge_guid(const uint8_t g[16]);
#define VHDX_MERGE_TAG0 0x6d /* 'm' */
#define VHDX_MERGE_TAG1 0x67 /* 'g' */

/* ---- the sector bitmap cache (bat.c) ---- */

/*
 * The sector bitmap of the chunk of PARTIALLY_PRESENT block pb, loaded on
 * first use; NULL with *err set if it cannot be had.
 */
const uint8_t *vhdx_chunk_bitmap(struct vhdx_image *img, uint64_t pb, int *err);
/* Resize the sector bitmap cache to n chunks (resize).  bitmap_lock held. */
int vhdx_bitmaps_resize_locked(struct vhdx_image *img, uint64_t n);
void vhdx_bitmaps_free(struct vhdx_image *img);

/* The open path with chain bookkeeping (open.c). */
int vhdx_open_chain(struct vhdx_image **out, const struct vhdx_io *io,
		    const struct vhdx_open_opts *opts, int depth,
		    const uint64_t (*ids)[2], int n_ids);

/* ---- writing (header.c, journal.c, write.c) ---- */

/*
 * Rewrite both headers (fmt §4.4).  The first update of a session also
 * renews FileWriteGuid; renew_data_guid renews DataWriteGuid.  log_guid: the
 * new LogGuid (NULL keeps the current one).
 */
int vhdx_header_update(struct vhdx_image *img, const uint8_t *log_guid,
		       bool renew_data_guid);

/* Replay the overlay built by vhdx_log_load into the file (read-write). */
int vhdx_log_replay_to_file(struct vhdx_image *img);

/*
 * Journal every dirty BAT sector through the log and apply it in place.
 * Called with meta_lock held.  The data the entries point to must have been
 * flushed by the caller.
 */
int vhdx_journal_commit(struct vhdx_image *img);

/*
 * Journal the 4 KiB sector images data[0..n) for the 4 KiB aligned file
 * offsets off[0..n) in one log entry, and apply them in place.  meta_lock
 * held; what they refer to must be durable.  -ENOSPC if n sectors do not
 * fit in one entry (see vhdx_journal_max_sectors); other errors turn the
 * image read-only.
 */
int vhdx_journal_sectors(struct vhdx_image *img, const uint64_t *off,
			 const uint8_t *const *data, uint32_t n);
/* The most sectors one entry may hold in this image's log (<= 126). */
uint32_t vhdx_journal_max_sectors(const struct vhdx_image *img);

/* Clear LogGuid after the last commit (clean close).  meta_lock held. */
int vhdx_journal_close(struct vhdx_image *img);
/* Clear it after a failed log or BAT write, when that is safe. */
int vhdx_journal_salvage(struct vhdx_image *img);

/* Set up and tear down the write path (write.c). */
int vhdx_write_init(struct vhdx_image *img);
int vhdx_write_close(struct vhdx_image *img);

/*
 * Make the data written so far durable (fdatasync); on failure the image
 * turns read-only for good (the kernel may have dropped the pages).
 * meta_lock held.  0 or -errno.
 */
int vhdx_flush_data(struct vhdx_image *img);

/*
 * Grow the file from alloc_end to end (nothing if it reaches that far) for
 * new space: reserved on the host first when reserve is set (ENOSPC now
 * rather than at writeback), then the size set; alloc_end and file_size
 * follow.  On failure they stay, so the next allocation tries the same
 * place.  meta_lock held.  0 or -errno.
 */
int vhdx_grow_file(struct vhdx_image *img, uint64_t end, bool reserve);

/*
 * Make [foff, foff + len) of the file read as zeros in place, clipped at
 * its end: the io zero op (unmap: may punch a hole), else zeros written.
 * 0 or -errno.
 */
int vhdx_zero_file(struct vhdx_image *img, uint64_t foff, uint64_t len,
		   bool unmap);

/* ---- free places of the file (freemap.c), fmt §19 ---- */

/*
 * Build the map of free 1 MiB places below img->alloc_end from the BAT and
 * the region table (vhdx_write_init).  0 or -ENOMEM.
 */
int vhdx_freemap_build(struct vhdx_image *img);
void vhdx_freemap_destroy(struct vhdx_image *img);
/* Is every 1 MiB unit of [off, off + len) free now? (off 1 MiB aligned) */
bool vhdx_freemap_is_free(const struct vhdx_image *img, uint64_t off,
			  uint64_t len);
/* Lowest free place of len bytes that ends at or below `below`, or 0. */
uint64_t vhdx_freemap_find(const struct vhdx_image *img, uint64_t len,
			   uint64_t below);
/* vhdx_freemap_find below alloc_end, and mark it used; 0 if none. */
uint64_t vhdx_freemap_take(struct vhdx_image *img, uint64_t len);
/* Mark [off, off + len) used (e.g. claimed by a new structure). */
void vhdx_freemap_use(struct vhdx_image *img, uint64_t off, uint64_t len);
/* Free now: a place nothing durable refers to (e.g. a failed allocation). */
void vhdx_freemap_give(struct vhdx_image *img, uint64_t off, uint64_t len);
/* Freed by an in-memory BAT change: free once that change is durable. */
void vhdx_freemap_defer(struct vhdx_image *img, uint64_t off, uint64_t len);
/*
 * Commit protocol (journal.c): n = vhdx_freemap_commit_begin() before the
 * dirty BAT sectors are journaled; after they are durable,
 * vhdx_freemap_durable(n) frees the places deferred before the commit.
 */
size_t vhdx_freemap_commit_begin(const struct vhdx_image *img);
void vhdx_freemap_durable(struct vhdx_image *img, size_t n);
/* Start of the run of free units that ends at alloc_end. */
uint64_t vhdx_freemap_tail(const struct vhdx_image *img);
/* Forget the units at and after end (the file was cut there). */
void vhdx_freemap_cut(struct vhdx_image *img, uint64_t end);
void vhdx_freemap_stats(const struct vhdx_image *img, uint64_t *free_bytes,
			uint64_t *reused);
/*
 * Tests only (test_crash --unsafe-reuse): free deferred places at once,
 * breaking fmt §19.2, to show the crash harness catches it.
 */
extern bool vhdx_freemap_unsafe_reuse;

/* ---- region tables (region.c) ---- */

/* Entry i of a region table, decoded. */
struct vhdx_region_entry {
	uint8_t guid[16];
	uint64_t offset;
	uint32_t length;
	uint32_t required;
};
void vhdx_region_entry_get(const uint8_t *t, uint32_t i,
			   struct vhdx_region_entry *e);
/* Signature, checksum and entry count of a 64 KiB region table copy. */
bool vhdx_region_table_ok(const uint8_t *t);
/*
 * Read both region table copies (2 x 64 KiB into buf, through the log) and
 * say which are valid.  0 or -errno.
 */
int vhdx_region_tables_read(struct vhdx_image *img, uint8_t *buf,
			    bool valid[2]);

#endif /* VHDX_INTERNAL_H */
