/*
 * read.c - the read path: file bytes through the log overlay, and virtual
 * disk reads translated through the BAT (fmt §10.1-§10.2).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "internal.h"

/* The overlay sector at offset, or NULL. */
static const struct vhdx_overlay_sector *ov_find(const struct vhdx_image *img,
						 uint64_t offset)
{
	size_t lo = 0, hi = img->ov_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (img->ov[mid].offset < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < img->ov_count && img->ov[lo].offset == offset)
		return &img->ov[lo];
	return NULL;
}

/*
 * The file ended at off, inside what it held at open (or allocation has
 * added since): another program shortened it under us (the lock is only
 * advisory).  Said once per image; the read fails with -EIO.
 */
static int file_shrank(struct vhdx_image *img, uint64_t off)
{
	if (!__atomic_exchange_n(&img->shrink_reported, 1, __ATOMIC_RELAXED))
		vhdx_err(img,
			 "the image file ends at byte %llu but held %llu "
			 "bytes: another program truncated it; reads of "
			 "the lost part fail with EIO",
			 (unsigned long long)off,
			 (unsigned long long)vhdx_known_size(img));
	return -EIO;
}

static int raw_read(struct vhdx_image *img, uint8_t *buf, size_t len,
		    uint64_t off)
{
	long n = img->io.pread(img->io.opaque, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len) {
		/*
		 * Past the end of the file at open, structures read as zeros
		 * (a log that extends the file, a last block cut short); a
		 * file that now ends before that lost data.
		 */
		if (off + (uint64_t)n < vhdx_known_size(img))
			return file_shrank(img, off + (uint64_t)n);
		memset(buf + n, 0, len - (size_t)n);
	}
	return 0;
}

int vhdx_file_read(struct vhdx_image *img, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	int ret;

	if (off > VHDX_MAX_OFF || len > VHDX_MAX_OFF - off)
		return -EINVAL;
	if (!img->ov_count)
		return raw_read(img, p, len, off);
	while (len) {
		uint64_t sec = off & ~(uint64_t)(VHDX_LOG_SECTOR_SIZE - 1);
		size_t in = (size_t)(off - sec);
		size_t n = VHDX_LOG_SECTOR_SIZE - in;
		const struct vhdx_overlay_sector *s = ov_find(img, sec);

		if (n > len)
			n = len;
		if (s && s->data)
			memcpy(p, s->data + in, n);
		else if (s)
			memset(p, 0, n);
		else if ((ret = raw_read(img, p, n, off)) < 0)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Read part of one payload block. */
static int read_in_block(struct vhdx_image *img, uint8_t *buf, size_t len,
			 uint64_t off)
{
	const struct vhdx_geom *g = &img->g;
	uint64_t pb = off / g->block_size;
	uint64_t in_block = off % g->block_size;
	uint64_t idx = vhdx_bat_payload_index(g, pb);
	uint64_t e;
	int ret;

	if (idx >= img->bat_entries)
		return -EIO; /* cannot happen after validation */
	pthread_rwlock_rdlock(&img->lock);
	ret = vhdx_bat_get(img, idx, &e);
	pthread_rwlock_unlock(&img->lock);
	if (ret < 0)
		return ret;

	switch (e & VHDX_BAT_STATE_MASK) {
	case VHDX_BLOCK_FULLY_PRESENT:
		return vhdx_file_read(img, buf, len,
				      (e & VHDX_BAT_OFFSET_MASK) + in_block);
	case VHDX_BLOCK_PARTIALLY_PRESENT:
		return vhdx_read_partial(img, buf, len, off, e);
	case VHDX_BLOCK_NOT_PRESENT:
		if (img->parent)
			return vhdx_read_parent(img, buf, len, off);
		memset(buf, 0, len);
		return 0;
	case VHDX_BLOCK_UNDEFINED:
	case VHDX_BLOCK_ZERO:
	case VHDX_BLOCK_UNMAPPED:
	case VHDX_BLOCK_UNMAPPED_V095:
		/* zeros: never expose stale content (fmt §8.3) */
		memset(buf, 0, len);
		return 0;
	default:
		vhdx_err(img, "BAT: entry %llu has unexpected state %u",
			 (unsigned long long)idx,
			 (unsigned)(e & VHDX_BAT_STATE_MASK));
		return -EIO;
	}
}

long vhdx_read(struct vhdx_image *img, void *buf, size_t len, uint64_t off)
{
	uint64_t vsize = img->g.virtual_size;
	uint8_t *p = buf;
	size_t done = 0;

	if (off >= vsize)
		return 0;
	if (len > vsize - off)
		len = (size_t)(vsize - off);
	if (len > LONG_MAX)
		len = LONG_MAX;
	while (done < len) {
		uint64_t o = off + done;
		uint64_t left = img->g.block_size - o % img->g.block_size;
		size_t n = len - done < left ? len - done : (size_t)left;
		int ret = read_in_block(img, p + done, n, o);

		if (ret < 0)
			return ret;
		done += n;
	}
	return (long)done;
}

/* How one block maps: kind and, for FILE, the file offset of off. */
static enum vhdx_map_kind map_block(struct vhdx_image *img, uint64_t off,
				    uint64_t *file_off)
{
	uint64_t pb = off / img->g.block_size;
	uint64_t idx = vhdx_bat_payload_index(&img->g, pb);
	uint64_t e;
	int ret;

	if (idx >= img->bat_entries)
		return VHDX_MAP_OTHER;
	pthread_rwlock_rdlock(&img->lock);
	ret = vhdx_bat_get(img, idx, &e);
	pthread_rwlock_unlock(&img->lock);
	if (ret < 0)
		return VHDX_MAP_OTHER; /* vhdx_read reports it */
	switch (e & VHDX_BAT_STATE_MASK) {
	case VHDX_BLOCK_FULLY_PRESENT:
		*file_off =
		    (e & VHDX_BAT_OFFSET_MASK) + off % img->g.block_size;
		/* the log overlay or a block cut short by EOF: read normally */
		if (img->ov_count || *file_off >= vhdx_known_size(img))
			return VHDX_MAP_OTHER;
		return VHDX_MAP_FILE;
	case VHDX_BLOCK_NOT_PRESENT:
		return img->parent ? VHDX_MAP_OTHER : VHDX_MAP_ZERO;
	case VHDX_BLOCK_UNDEFINED:
	case VHDX_BLOCK_ZERO:
	case VHDX_BLOCK_UNMAPPED:
	case VHDX_BLOCK_UNMAPPED_V095:
		return VHDX_MAP_ZERO;
	default:
		return VHDX_MAP_OTHER;
	}
}

int vhdx_map(struct vhdx_image *img, uint64_t off, uint64_t len,
	     struct vhdx_mapping *m)
{
	uint64_t vsize = img->g.virtual_size, bs = img->g.block_size;
	uint64_t fo = 0, next_fo = 0, size;

	if (off >= vsize || !len)
		return -EINVAL;
	if (len > vsize - off)
		len = vsize - off;
	m->kind = map_block(img, off, &fo);
	m->file_offset = fo;
	m->length = bs - off % bs;
	/* extend over following blocks that continue the same way */
	while (m->length < len &&
	       map_block(img, off + m->length, &next_fo) == m->kind &&
	       (m->kind != VHDX_MAP_FILE || next_fo == fo + m->length))
		m->length += bs;
	if (m->length > len)
		m->length = len;
	size = vhdx_known_size(img);
	if (m->kind == VHDX_MAP_FILE && fo + m->length > size)
		m->length = size > fo ? size - fo : 0;
	return 0;
}
