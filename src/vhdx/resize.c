/*
 * resize.c - changing the virtual disk size (fmt §19.4).
 *
 * One resize is one log entry: the BAT sectors that change inside the
 * current BAT region, both region table copies (when the BAT region moves
 * or grows) and the metadata sector holding VirtualDiskSize.  Everything
 * that entry refers to and that is not yet live - new payload blocks of a
 * fixed image, the part of a BAT region that grows in place, a complete
 * new BAT elsewhere, zeros past the old end of the last block - is written
 * and flushed before it, so a crash leaves the old size with the old BAT or
 * the new size with the new one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const uint8_t guid_bat[16] = VHDX_GUID_BAT_REGION;
static const uint8_t guid_vds[16] = VHDX_GUID_VIRTUAL_DISK_SIZE;

/* What one resize changes, built before anything is written. */
struct resize {
	struct vhdx_image *img;
	struct vhdx_geom ng; /* the new geometry */
	uint64_t *nb;	     /* the new BAT, n_entries of it */
	uint64_t n_entries;  /* vhdx_bat_alloc_entries(&ng) */
	uint64_t bat_offset; /* where the new BAT lives */
	uint32_t bat_length; /* its region length */
	bool sparse;	     /* new fixed blocks are not reserved */
	/* the sectors of the log entry */
	uint64_t *off;
	uint8_t **data;
	uint32_t n, cap;
};

static uint64_t round_mib(uint64_t v)
{
	return (v + VHDX_ALIGN - 1) & ~(VHDX_ALIGN - 1);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (!p[0] && !memcmp(p, p + 1, n - 1));
}

/* ---- refusing to lose data on a shrink ---- */

/* The part [from, to) of the disk reads as zeros?  1, 0 or -errno. */
static int range_is_zero(struct vhdx_image *img, uint64_t from, uint64_t to)
{
	const size_t chunk = 1024 * 1024;
	uint8_t *buf = malloc(chunk);
	int ret = 1;

	if (!buf)
		return -ENOMEM;
	for (uint64_t o = from; o < to && ret == 1;) {
		size_t n = to - o < chunk ? (size_t)(to - o) : chunk;
		struct vhdx_mapping m;
		long got;

		if (vhdx_map(img, o, n, &m) == 0 && m.kind == VHDX_MAP_ZERO) {
			o += m.length; /* nothing stored there */
			continue;
		}
		got = vhdx_read(img, buf, n, o);
		if (got < 0)
			ret = (int)got;
		else if (!all_zero(buf, (size_t)got))
			ret = 0;
		o += n;
	}
	free(buf);
	return ret;
}

/*
 * The end (in bytes) of the last partition an MBR or GPT partition table
 * in the first sectors describes, 0 if there is none.  Only what is needed
 * to refuse a shrink: primary MBR entries and the GPT entry array.
 */
static int partitions_end(struct vhdx_image *img, uint64_t *end)
{
	uint32_t lss = img->g.logical_sector;
	uint8_t *s = malloc(2 * lss);
	uint64_t max = 0;
	bool gpt = false;
	int ret = 0;

	*end = 0;
	if (!s)
		return -ENOMEM;
	if (vhdx_read(img, s, 2 * lss, 0) < (long)(2 * lss))
		goto out; /* a disk of one sector has no table */
	if (s[510] != 0x55 || s[511] != 0xaa)
		goto out;
	/* a file system's boot sector (FAT, NTFS, exFAT) is no MBR */
	if (!memcmp(s + 3, "NTFS    ", 8) || !memcmp(s + 3, "EXFAT   ", 8) ||
	    !memcmp(s + 54, "FAT", 3) || !memcmp(s + 82, "FAT32", 5))
		goto out;
	for (int k = 0; k < 4; k++) {
		const uint8_t *p = s + 446 + 16 * k;

		if ((p[0] != 0 && p[0] != 0x80) ||
		    (p[4] && (!le32_get(p + 8) || !le32_get(p + 12))))
			goto out; /* not a partition table */
	}
	for (int k = 0; k < 4; k++) {
		const uint8_t *p = s + 446 + 16 * k;
		uint64_t last = (uint64_t)le32_get(p + 8) + le32_get(p + 12);

		if (p[4] == 0xee)
			gpt = true;
		else if (p[4] && last * lss > max)
			max = last * lss;
	}
	if (gpt && !memcmp(s + lss, "EFI PART", 8)) {
		const uint8_t *h = s + lss;
		uint64_t lba = le64_get(h + 72);
		uint32_t count = le32_get(h + 80), esz = le32_get(h + 84);
		uint8_t *e;

		if (esz < 128 || esz > 4096 || count > 65536)
			goto out;
		e = malloc((size_t)count * esz);
		if (!e) {
			ret = -ENOMEM;
			goto out;
		}
		if (vhdx_read(img, e, (size_t)count * esz, lba * lss) ==
		    (long)((size_t)count * esz)) {
			for (uint32_t k = 0; k < count; k++) {
				const uint8_t *p = e + (size_t)k * esz;
				uint64_t last = le64_get(p + 40) + 1;

				if (!all_zero(p, 16) && last * lss > max)
					max = last * lss;
			}
		}
		free(e);
	}
	*end = max;
out:
	free(s);
	return ret;
}

static int check_shrink(struct vhdx_image *img, uint64_t new_size)
{
	uint64_t pend;
	int ret = partitions_end(img, &pend);

	if (ret < 0)
		return ret;
	if (pend > new_size) {
		vhdx_err(img,
			 "resize: a partition ends at byte %llu, past the new "
			 "size %llu; shrink the partition first (or allow the "
			 "data loss explicitly)",
			 (unsigned long long)pend,
			 (unsigned long long)new_size);
		return -EFBIG;
	}
	ret = range_is_zero(img, new_size, img->g.virtual_size);
	if (ret < 0)
		return ret;
	if (!ret) {
		vhdx_err(img,
			 "resize: the part of the disk past %llu bytes holds "
			 "data that the shrink would lose (shrink the file "
			 "system first, or allow the data loss explicitly)",
			 (unsigned long long)new_size);
		return -EFBIG;
	}
	return 0;
}

/* ---- free space ---- */

/*
 * Are the 1 MiB units of [start, start + len) unused: no header section,
 * log or region there, no block the BAT (old or new) points to, and, in a
 * read-write session, free in the free-space map (freemap.c), which also
 * keeps places whose freeing is not durable yet?  The scan covers what the
 * map does not: the new BAT's entries, and the file past alloc_end.
 */
static bool units_unused(struct resize *r, uint64_t start, uint64_t len)
{
	struct vhdx_image *img = r->img;
	const uint64_t *bats[2] = {img->bat, r->nb};
	const uint64_t counts[2] = {img->bat_entries, r->n_entries};

	for (size_t x = 0; x < img->n_extents; x++) {
		const struct vhdx_extent *e = &img->extents[x];

		if (start < e->start + e->length && e->start < start + len)
			return false;
	}
	for (int b = 0; b < 2; b++) {
		for (uint64_t i = 0; i < counts[b]; i++) {
			uint64_t e = bats[b][i];
			uint64_t o = e & VHDX_BAT_OFFSET_MASK;
			uint64_t l = vhdx_bat_is_bitmap_slot(&img->g, i)
					 ? VHDX_SECTOR_BITMAP_BLOCK_SIZE
					 : img->g.block_size;

			/* also UNMAPPED/UNDEFINED offsets: still in use */
			if (o && start < o + l && o < start + len)
				return false;
		}
	}
	if (img->fm && start < img->alloc_end)
		return vhdx_freemap_is_free(img, start,
					    len < img->alloc_end - start
						? len
						: img->alloc_end - start);
	return true;
}

/* ---- the new BAT ---- */

/*
 * Give n new blocks their space at the end of the file, in one piece (one
 * reservation, one truncate); *first is the entry of the first one.
 */
static int alloc_blocks(struct resize *r, uint64_t n, uint64_t *first)
{
	struct vhdx_image *img = r->img;
	uint64_t off = img->alloc_end;
	uint64_t end;
	int ret;

	if (n > (VHDX_MAX_OFF - off) / img->g.block_size)
		return -EFBIG;
	end = off + n * img->g.block_size;
	ret = vhdx_grow_file(img, end, !r->sparse);
	if (ret < 0)
		return ret;
	*first = off | VHDX_BLOCK_FULLY_PRESENT;
	return 0;
}

/* Give one new block its space at the end of the file. */
static int alloc_fixed(struct resize *r, uint64_t *entry)
{
	return alloc_blocks(r, 1, entry);
}

/*
 * Differencing image: block pb, cut by the old end, would show its
 * parent's data past that end.  Write what it shows below the old end and
 * zeros after it into its own space (a PARTIALLY_PRESENT block: in place,
 * where bit-0 sectors are never read; else new space), as a fully present
 * block whose entry the resize then publishes.
 */
static int materialize(struct resize *r, uint64_t pb, uint64_t *entry)
{
	struct vhdx_image *img = r->img;
	uint64_t first = pb * img->g.block_size;
	uint64_t keep = img->g.virtual_size - first;
	uint64_t base;
	uint8_t *buf;
	int ret;

	if ((*entry & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_PARTIALLY_PRESENT) {
		base = *entry & VHDX_BAT_OFFSET_MASK;
	} else {
		bool sparse = r->sparse;

		r->sparse = true; /* only the written part needs space */
		ret = alloc_fixed(r, entry);
		r->sparse = sparse;
		if (ret < 0)
			return ret;
		base = *entry & VHDX_BAT_OFFSET_MASK;
	}
	buf = malloc(keep);
	if (!buf)
		return -ENOMEM;
	ret = (int)vhdx_read(img, buf, keep, first);
	if (ret >= 0)
		ret = img->io.pwrite(img->io.opaque, buf, keep, base);
	free(buf);
	if (ret == 0)
		ret = vhdx_zero_file(img, base + keep, img->g.block_size - keep,
				     false);
	*entry = base | VHDX_BLOCK_FULLY_PRESENT;
	return ret;
}

/*
 * The part of the last block past the old end must read as zeros once it
 * is inside the disk (fmt §19.4): what lies there in the file is whatever
 * an earlier writer or size left.
 */
static int clear_old_tail(struct resize *r)
{
	struct vhdx_image *img = r->img;
	uint64_t bs = img->g.block_size;
	uint64_t old = img->g.virtual_size;
	uint64_t pb = old / bs, idx;
	uint64_t psize = img->parent ? img->parent->g.virtual_size : 0;
	uint64_t e;
	unsigned int state;

	if (old % bs == 0)
		return 0;
	idx = vhdx_bat_payload_index(&img->g, pb);
	e = r->nb[idx];
	state = e & VHDX_BAT_STATE_MASK;
	if (img->parent && psize > old &&
	    (state == VHDX_BLOCK_NOT_PRESENT ||
	     state == VHDX_BLOCK_PARTIALLY_PRESENT)) {
		int ret = materialize(r, pb, &e);

		if (ret == 0)
			r->nb[idx] = e;
		return ret;
	}
	if (state == VHDX_BLOCK_FULLY_PRESENT ||
	    state == VHDX_BLOCK_PARTIALLY_PRESENT) {
		uint64_t off = e & VHDX_BAT_OFFSET_MASK;
		/* a block cut short by the end of file: all of it is needed */
		int ret = vhdx_grow_file(img, off + bs, false);

		return ret ? ret
			   : vhdx_zero_file(img, off + old % bs, bs - old % bs,
					    false);
	}
	return 0; /* reads as zeros, or as the parent, zeros past its end */
}

/* Build r->nb: the old entries, cut or extended to the new geometry. */
static int build_bat(struct resize *r)
{
	struct vhdx_image *img = r->img;
	const struct vhdx_geom *ng = &r->ng;
	bool fixed = (img->fp_flags & VHDX_FP_LEAVE_BLOCKS_ALLOCATED) &&
		     !(img->fp_flags & VHDX_FP_HAS_PARENT);
	uint64_t psize = img->parent ? img->parent->g.virtual_size : 0;
	uint64_t old_n = img->g.payload_blocks;
	uint64_t keep;
	int ret;

	r->n_entries = vhdx_bat_alloc_entries(ng);
	r->nb = calloc(r->n_entries, sizeof(*r->nb));
	if (!r->nb)
		return -ENOMEM;
	keep =
	    img->bat_entries < r->n_entries ? img->bat_entries : r->n_entries;
	memcpy(r->nb, img->bat, keep * sizeof(*r->nb));
	/* payload slots past the new end: NOT_PRESENT, their space freed */
	for (uint64_t i = 0; i < r->n_entries; i++) {
		if (vhdx_bat_is_bitmap_slot(ng, i))
			continue;
		uint64_t pb = vhdx_bat_entry_block(ng, i);

		if (pb >= ng->payload_blocks || pb >= old_n)
			r->nb[i] = 0;
	}
	if (ng->virtual_size > img->g.virtual_size &&
	    (ret = clear_old_tail(r)) < 0)
		return ret;
	if (fixed && ng->payload_blocks > old_n) {
		uint64_t e;

		ret = alloc_blocks(r, ng->payload_blocks - old_n, &e);
		if (ret < 0)
			return ret;
		for (uint64_t pb = old_n; pb < ng->payload_blocks; pb++)
			r->nb[vhdx_bat_payload_index(ng, pb)] =
			    e + (pb - old_n) * ng->block_size;
		return 0;
	}
	for (uint64_t pb = old_n; pb < ng->payload_blocks; pb++) {
		uint64_t idx = vhdx_bat_payload_index(ng, pb);

		if (pb * ng->block_size < psize) {
			r->nb[idx] = VHDX_BLOCK_ZERO; /* hide the parent */
		}
	}
	return 0;
}

/* ---- the log entry ---- */

static int add_sector(struct resize *r, uint64_t off, const uint8_t *img4k)
{
	uint8_t *d;

	if (r->n == r->cap) {
		uint32_t cap = r->cap ? 2 * r->cap : 64;
		uint64_t *o = realloc(r->off, cap * sizeof(*o));
		uint8_t **p;

		if (!o)
			return -ENOMEM;
		r->off = o;
		p = realloc(r->data, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		r->data = p;
		r->cap = cap;
	}
	d = malloc(VHDX_LOG_SECTOR_SIZE);
	if (!d)
		return -ENOMEM;
	memcpy(d, img4k, VHDX_LOG_SECTOR_SIZE);
	r->off[r->n] = off;
	r->data[r->n++] = d;
	return 0;
}

/* The on-disk image of sector s of the new BAT. */
static void new_bat_sector(const struct resize *r, uint64_t s, uint8_t *out)
{
	const uint64_t per = VHDX_LOG_SECTOR_SIZE / VHDX_BAT_ENTRY_SIZE;

	for (uint64_t k = 0; k < per; k++) {
		uint64_t i = s * per + k;

		le64_put(out + k * 8, i < r->n_entries ? r->nb[i] : 0);
	}
}

/*
 * The sectors of the current BAT region that differ in the new BAT, as
 * log sectors; with a moved BAT there are none.  The old region is
 * compared as it is on disk (flushed and committed before), from the
 * first entry the resize may change.
 */
static int bat_changes(struct resize *r, uint64_t first_idx)
{
	struct vhdx_image *img = r->img;
	uint64_t per = VHDX_LOG_SECTOR_SIZE / VHDX_BAT_ENTRY_SIZE;
	uint64_t last =
	    img->bat_entries > r->n_entries ? img->bat_entries : r->n_entries;
	uint64_t end_s = (last + per - 1) / per;
	uint64_t region_s = img->bat_length / VHDX_LOG_SECTOR_SIZE;
	uint8_t cur[VHDX_LOG_SECTOR_SIZE], want[VHDX_LOG_SECTOR_SIZE];
	int ret;

	if (end_s > region_s)
		end_s = region_s;
	for (uint64_t s = first_idx / per; s < end_s; s++) {
		uint64_t off = img->bat_offset + s * VHDX_LOG_SECTOR_SIZE;

		ret = vhdx_file_read(img, cur, sizeof(cur), off);
		if (ret < 0)
			return ret;
		new_bat_sector(r, s, want);
		if (memcmp(cur, want, sizeof(want)) &&
		    (ret = add_sector(r, off, want)) < 0)
			return ret;
	}
	return 0;
}

/* Both region table copies pointing at the new BAT region. */
static int region_changes(struct resize *r)
{
	static const uint64_t offs[2] = {VHDX_REGION1_OFFSET,
					 VHDX_REGION2_OFFSET};
	struct vhdx_image *img = r->img;
	uint8_t *buf = malloc(3 * VHDX_REGION_TABLE_SIZE);
	uint8_t *t = buf + 2 * VHDX_REGION_TABLE_SIZE;
	bool valid[2];
	uint32_t count;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vhdx_region_tables_read(img, buf, valid);
	if (ret < 0)
		goto out;
	memcpy(t, buf + (size_t)(img->region_copy - 1) * VHDX_REGION_TABLE_SIZE,
	       VHDX_REGION_TABLE_SIZE);
	count = le32_get(t + VHDX_RT_ENTRY_COUNT);
	for (uint32_t i = 0; i < count; i++) {
		uint8_t *e =
		    t + VHDX_RT_HEADER_SIZE + (size_t)i * VHDX_RT_ENTRY_SIZE;

		if (memcmp(e, guid_bat, 16))
			continue;
		le64_put(e + VHDX_RTE_FILE_OFFSET, r->bat_offset);
		le32_put(e + VHDX_RTE_LENGTH, r->bat_length);
	}
	le32_put(t + VHDX_RT_CHECKSUM, 0);
	le32_put(t + VHDX_RT_CHECKSUM, vhdx_crc32c(t, VHDX_REGION_TABLE_SIZE));
	for (int c = 0; c < 2; c++) {
		const uint8_t *cur = buf + (size_t)c * VHDX_REGION_TABLE_SIZE;

		for (uint32_t k = 0; k < VHDX_REGION_TABLE_SIZE;
		     k += VHDX_LOG_SECTOR_SIZE) {
			if (!memcmp(cur + k, t + k, VHDX_LOG_SECTOR_SIZE))
				continue;
			ret = add_sector(r, offs[c] + k, t + k);
			if (ret < 0)
				goto out;
		}
	}
out:
	free(buf);
	return ret;
}

/* The metadata sector(s) holding VirtualDiskSize, with the new size. */
static int size_item_change(struct resize *r)
{
	struct vhdx_image *img = r->img;
	uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
	uint8_t sec[2 * VHDX_LOG_SECTOR_SIZE];
	uint32_t count;
	uint64_t at = 0, first;
	int ret;

	if (!t)
		return -ENOMEM;
	ret =
	    vhdx_file_read(img, t, VHDX_METADATA_TABLE_SIZE, img->meta_offset);
	if (ret < 0)
		goto out;
	count = le16_get(t + VHDX_MT_ENTRY_COUNT);
	for (uint32_t i = 0; i < count && i < VHDX_MT_MAX_ENTRIES; i++) {
		const uint8_t *e =
		    t + VHDX_MT_HEADER_SIZE + (size_t)i * VHDX_MT_ENTRY_SIZE;

		if (!memcmp(e + VHDX_MTE_ITEM_ID, guid_vds, 16) &&
		    !(le32_get(e + VHDX_MTE_FLAGS) & VHDX_MT_FLAG_IS_USER))
			at = img->meta_offset + le32_get(e + VHDX_MTE_OFFSET);
	}
	ret = -EIO; /* validated at open: cannot happen */
	if (!at)
		goto out;
	first = at & ~(uint64_t)(VHDX_LOG_SECTOR_SIZE - 1);
	ret = vhdx_file_read(img, sec, sizeof(sec), first);
	if (ret < 0)
		goto out;
	le64_put(sec + (at - first), r->ng.virtual_size);
	ret = add_sector(r, first, sec);
	if (ret == 0 && at - first + 8 > VHDX_LOG_SECTOR_SIZE)
		ret = add_sector(r, first + VHDX_LOG_SECTOR_SIZE,
				 sec + VHDX_LOG_SECTOR_SIZE);
out:
	free(t);
	return ret;
}

/*
 * Write the BAT sectors of the new region from from_byte on (past the old
 * region, or all of a moved BAT) directly: nothing refers to them yet.
 * Zeros at or past fresh (the file's old end) are there already.
 */
static int write_unlinked_bat(struct resize *r, uint64_t from_byte,
			      uint64_t fresh)
{
	struct vhdx_image *img = r->img;
	uint8_t *buf = malloc(VHDX_ALIGN);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (uint64_t o = from_byte; o < r->bat_length && ret == 0;
	     o += VHDX_ALIGN) {
		uint64_t n = r->bat_length - o < VHDX_ALIGN ? r->bat_length - o
							    : VHDX_ALIGN;

		for (uint64_t k = 0; k < n; k += VHDX_LOG_SECTOR_SIZE)
			new_bat_sector(r, (o + k) / VHDX_LOG_SECTOR_SIZE,
				       buf + k);
		if (all_zero(buf, n) && r->bat_offset + o >= fresh)
			continue; /* past the old end: zeros already */
		ret = img->io.pwrite(img->io.opaque, buf, n, r->bat_offset + o);
	}
	free(buf);
	return ret;
}

/*
 * Choose where the new BAT lives and collect the BAT sectors of the entry.
 * In place (the region as it is, or grown over free units after it) when
 * the changed sectors fit in one log entry with the region table and
 * metadata sectors; otherwise a complete new BAT at the end of the file.
 */
static int place_bat(struct resize *r, uint64_t first_idx)
{
	struct vhdx_image *img = r->img;
	uint64_t need = round_mib(r->n_entries * VHDX_BAT_ENTRY_SIZE);
	uint32_t max = vhdx_journal_max_sectors(img);
	uint32_t before = r->n;
	uint64_t fresh = img->alloc_end; /* the file reads zeros from here */
	int ret;

	if (need < img->bat_length)
		need = img->bat_length; /* never shrink the region */
	if (need > UINT32_MAX)
		return -EFBIG;
	r->bat_offset = img->bat_offset;
	r->bat_length = (uint32_t)need;
	if (need == img->bat_length ||
	    units_unused(r, img->bat_offset + img->bat_length,
			 need - img->bat_length)) {
		ret = bat_changes(r, first_idx);
		if (ret < 0)
			return ret;
		/* room for the region table sectors, at most 2 x 16 */
		if (r->n + (need != img->bat_length ? 32 : 0) <= max) {
			if (need == img->bat_length)
				return 0;
			/* the BAT's new units are no longer free places */
			vhdx_freemap_use(img, img->bat_offset + img->bat_length,
					 need - img->bat_length);
			ret =
			    vhdx_grow_file(img, img->bat_offset + need, false);
			if (ret == 0)
				ret = write_unlinked_bat(r, img->bat_length,
							 fresh);
			return ret;
		}
		while (r->n > before)
			free(r->data[--r->n]);
	}
	/* move: a complete new BAT after everything else */
	r->bat_offset = img->alloc_end;
	r->bat_length = (uint32_t)round_mib(r->n_entries * VHDX_BAT_ENTRY_SIZE);
	ret = vhdx_grow_file(img, r->bat_offset + r->bat_length, false);
	if (ret == 0)
		ret = write_unlinked_bat(r, 0, fresh);
	return ret;
}

/* ---- publishing ---- */

static void count_states(struct vhdx_image *img)
{
	memset(img->state_count, 0, sizeof(img->state_count));
	for (uint64_t i = 0; i < img->bat_entries; i++) {
		if (vhdx_bat_is_bitmap_slot(&img->g, i) ||
		    vhdx_bat_entry_block(&img->g, i) >= img->g.payload_blocks)
			continue;
		img->state_count[img->bat[i] & VHDX_BAT_STATE_MASK]++;
	}
}

/* Make the new geometry and BAT the image's.  Cannot fail after alloc. */
static int publish(struct resize *r)
{
	struct vhdx_image *img = r->img;
	uint64_t n_sectors = r->bat_length / VHDX_LOG_SECTOR_SIZE;
	uint8_t *dirty = calloc(n_sectors ? n_sectors : 1, 1);

	if (!dirty)
		return -ENOMEM;
	/*
	 * bitmap_lock keeps the sector bitmap cache, and chunk_bitmap's look
	 * at the BAT, out of the way while both change.
	 */
	pthread_mutex_lock(&img->bitmap_lock);
	if (vhdx_bitmaps_resize_locked(img, r->ng.bitmap_blocks) < 0) {
		pthread_mutex_unlock(&img->bitmap_lock);
		free(dirty);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&img->lock);
	{
		uint64_t *old = img->bat;

		img->bat = r->nb;
		r->nb = old;
		__atomic_store_n(&img->bat_entries, r->n_entries,
				 __ATOMIC_RELAXED);
		for (size_t x = 0; x < img->n_extents; x++)
			if (img->extents[x].start == img->bat_offset &&
			    img->extents[x].length == img->bat_length) {
				img->extents[x].start = r->bat_offset;
				img->extents[x].length = r->bat_length;
			}
		img->bat_offset = r->bat_offset;
		img->bat_length = r->bat_length;
		img->g.payload_blocks = r->ng.payload_blocks;
		img->g.bitmap_blocks = r->ng.bitmap_blocks;
		/* last: readers that see the new size find the new BAT */
		__atomic_store_n(&img->g.virtual_size, r->ng.virtual_size,
				 __ATOMIC_RELEASE);
		count_states(img);
	}
	pthread_rwlock_unlock(&img->lock);
	pthread_mutex_unlock(&img->bitmap_lock);
	free(img->dirty);
	img->dirty = dirty;
	img->n_dirty = 0;
	return 0;
}

/* ---- the steps ---- */

/* New DataWriteGuid (and a live log) before the first visible change. */
static int start_session(struct vhdx_image *img)
{
	uint8_t guid[16];
	int ret;

	if (img->data_guid_renewed)
		return 0;
	vhdx_guid_generate(guid);
	ret = vhdx_header_update(img, guid, true);
	if (ret < 0)
		return ret;
	img->data_guid_renewed = true;
	img->log_active = true;
	img->log_pos = 0;
	img->log_seq = 1;
	return 0;
}

static int resize_locked(struct vhdx_image *img, uint64_t new_size,
			 unsigned int flags)
{
	struct resize r = {.img = img};
	uint64_t old = img->g.virtual_size;
	uint64_t low = old < new_size ? old : new_size;
	uint64_t first_idx;
	int ret;

	r.sparse =
	    (flags & VHDX_RESIZE_SPARSE) || (img->flags & VHDX_OPEN_SPARSE);
	ret = vhdx_geom_init(&r.ng, new_size, img->g.block_size,
			     img->g.logical_sector);
	if (ret < 0)
		return ret;
	if (new_size < old && !(flags & VHDX_RESIZE_ALLOW_DATA_LOSS) &&
	    (ret = check_shrink(img, new_size)) < 0)
		return ret;
	if ((ret = start_session(img)) < 0)
		return ret;
	/* what writes left dirty goes first, on its own */
	if ((ret = vhdx_flush_data(img)) < 0 ||
	    (ret = vhdx_journal_commit(img)) < 0)
		return ret;
	if ((ret = build_bat(&r)) < 0)
		goto out;
	first_idx = vhdx_bat_payload_index(&img->g, low / img->g.block_size);
	if ((ret = size_item_change(&r)) < 0)
		goto out;
	if ((ret = place_bat(&r, first_idx)) < 0)
		goto out;
	if (r.bat_offset != img->bat_offset ||
	    r.bat_length != img->bat_length) {
		if ((ret = region_changes(&r)) < 0)
			goto out;
	}
	/* everything the entry refers to is durable before it */
	if ((ret = vhdx_flush_data(img)) < 0)
		goto out;
	ret = vhdx_journal_sectors(img, r.off, (const uint8_t *const *)r.data,
				   r.n);
	if (ret < 0)
		goto out;
	ret = publish(&r);
	if (ret < 0)
		vhdx_set_broken(img, ret, "resize");
out:
	for (uint32_t k = 0; k < r.n; k++)
		free(r.data[k]);
	free(r.data);
	free(r.off);
	free(r.nb);
	return ret;
}

int vhdx_resize(struct vhdx_image *img, uint64_t new_size, unsigned int flags)
{
	const char *why;
	int ret;

	if (flags & ~(VHDX_RESIZE_ALLOW_DATA_LOSS | VHDX_RESIZE_SPARSE))
		return -EINVAL;
	if (img->read_only)
		return -EROFS;
	if (img->bat_lazy)
		return -EINVAL;
	why = vhdx_geom_problem(new_size, img->g.block_size,
				img->g.logical_sector);
	if (why) {
		vhdx_err(img, "resize: %s (asked for %llu bytes)", why,
			 (unsigned long long)new_size);
		return -EINVAL;
	}
	if (new_size == img->g.virtual_size)
		return 0;
	pthread_mutex_lock(&img->meta_lock);
	ret = img->broken ? -EROFS : resize_locked(img, new_size, flags);
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}
