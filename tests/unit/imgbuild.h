/*
 * imgbuild.h - builds VHDX images in a mem_io for the unit tests.
 *
 * The builder follows fmt §13 (file identifier, two headers, two region
 * tables, metadata region with the five system items, BAT, payload blocks)
 * with its own geometry arithmetic; it does not call the library.  Payload
 * contents are a pattern of the *virtual* offset, so data read from the
 * wrong block is always detected; ib_expected() says what a correct reader
 * returns for any virtual range.
 *
 * Usage: ib_init(), optional ib_set_state()/ib_set_log_only()/options,
 * ib_build(); then open im.m with mem_io_ops().  After ib_build() the
 * helpers below patch single structures (and fix their CRCs) to make
 * corrupt variants.
 */
#ifndef IMGBUILD_H
#define IMGBUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem_io.h"

#define IB_MiB (1024ull * 1024ull)

/* The five system metadata items, as bits for ib_params.meta_omit. */
enum ib_item {
	IB_ITEM_FILE_PARAMS = 0,
	IB_ITEM_DISK_SIZE,
	IB_ITEM_DISK_ID,
	IB_ITEM_LOGICAL_SECTOR,
	IB_ITEM_PHYSICAL_SECTOR,
	IB_ITEM_EXTRA, /* ib_params.extra_item, if has_extra_item */
	IB_N_ITEMS
};

struct ib_params {
	uint64_t virtual_size;
	uint32_t block_size;
	uint32_t logical_sector;  /* 0: 512 */
	uint32_t physical_sector; /* 0: same as logical */
	bool fixed;		  /* LeaveBlockAllocated; all blocks start 6 */
	uint64_t seed;		  /* payload pattern */
	uint64_t hdr_seq;	  /* header 2 gets this, header 1 this + 1;
				     0: 1000 */
	uint32_t fill;		  /* pattern bytes at each end of a block;
				     0: 1 MiB */
	bool stale_offsets;	  /* states 1 and 3 point at old data */
	bool known_not_required;  /* Required = 0 on BAT/metadata (qemu) */

	unsigned int meta_omit; /* bit (1 << ib_item): leave the item out */
	bool has_extra_item;
	uint8_t extra_item_guid[16];
	uint32_t extra_item_flags;

	uint32_t log_length; /* 0: 1 MiB */
	uint32_t bat_length; /* BAT region bytes; 0: 8 * SB * (CR + 1)
				rounded up to 1 MiB */
	bool omit_bat_region;
	bool has_extra_region;
	uint8_t extra_region_guid[16];
	uint32_t extra_region_required;
};

struct ib_image {
	struct ib_params p;
	struct mem_io *m;

	/* geometry, computed here from fmt §7 */
	uint64_t cr, n, sb;
	uint64_t bat_entries; /* SB * (CR + 1) */

	/* per payload block */
	uint8_t *state;
	uint64_t *block_off; /* file offset of the data, 0 if none */
	uint64_t *stale_off; /* old data behind states 1/3, 0 if none */
	bool *log_only;	     /* BAT entry only in the log */

	/* layout */
	uint64_t log_offset;
	uint32_t log_length;
	uint64_t bat_offset;
	uint32_t bat_length;
	uint64_t meta_offset;
	uint32_t meta_length;
	uint64_t data_start;
	uint64_t extra_region_offset;
	uint64_t file_size;
	uint64_t item_off[IB_N_ITEMS];	 /* file offset of each item */
	uint64_t item_entry[IB_N_ITEMS]; /* file offset of its table entry */

	uint8_t file_write_guid[16];
	uint8_t data_write_guid[16];
	uint8_t log_guid[16];
	uint8_t disk_id[16];
	uint64_t log_seq; /* sequence number of the built log entry */
};

/* Geometry and arrays; -1 if the parameters cannot be built. */
int ib_init(struct ib_image *im, const struct ib_params *p);
void ib_free(struct ib_image *im);

void ib_set_state(struct ib_image *im, uint64_t pb, uint8_t state);
/* pb is FULLY_PRESENT, but the on-disk BAT says NOT_PRESENT: the real entry
 * is in a log entry (LogGuid set in the headers). */
void ib_set_log_only(struct ib_image *im, uint64_t pb);

/* Write the image into a fresh im->m; resets its counters.  0 or -1. */
int ib_build(struct ib_image *im);

/* Pattern byte of virtual offset v for a seed. */
uint8_t ib_pattern(uint64_t seed, uint64_t v);
/* What a correct reader returns for [v, v + len) (inside the disk). */
void ib_expected(const struct ib_image *im, uint64_t v, void *buf, size_t len);

/* ---- patching a built image ---- */

/* Header slot 0 (0x10000) or 1 (0x20000). */
uint64_t ib_header_offset(int slot);
void ib_header_fix_crc(struct ib_image *im, int slot);
/* Rewrite both headers with LogGuid g (fixing the CRCs). */
void ib_set_header_log_guid(struct ib_image *im, const uint8_t g[16]);

/* Region table copy 0 (0x30000) or 1 (0x40000). */
uint64_t ib_region_offset(int copy);
void ib_region_fix_crc(struct ib_image *im, int copy);
/* File offset of entry i of both copies' tables (same in both). */
uint64_t ib_region_entry(int copy, unsigned int i);

uint64_t ib_bat_index(const struct ib_image *im, uint64_t pb);
uint64_t ib_get_bat(struct ib_image *im, uint64_t index);
void ib_put_bat(struct ib_image *im, uint64_t index, uint64_t entry);

/* ---- log entries ---- */

struct ib_log_desc {
	bool zero;	      /* zero descriptor, else data descriptor */
	uint64_t file_offset; /* 4 KiB aligned target */
	uint64_t zero_length; /* zero descriptors */
	const uint8_t *data;  /* data descriptors: the 4096-byte image */
};

/*
 * Write a valid entry at log position pos (wrapping in the ring) with the
 * image's LogGuid, Tail tail, FlushedFileOffset = LastFileOffset =
 * im->file_size.  Returns the EntryLength.
 */
uint32_t ib_log_write_entry(struct ib_image *im, uint32_t pos, uint64_t seq,
			    uint32_t tail, const struct ib_log_desc *d,
			    uint32_t count);
/* Recompute the CRC of the entry at pos (over min(EntryLength, log)). */
void ib_log_fix_crc(struct ib_image *im, uint32_t pos);

#endif /* IMGBUILD_H */
