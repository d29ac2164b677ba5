/*
 * query.c - the one block query: for a range of the virtual disk, what it
 * reads from (a file range of this image or of a parent, or zeros), the
 * BAT state that says so, and where in that file (fmt §8.3, §9, §10.1).
 * The read path, vhdx_map, the allocation map of vhdxtool convert, SEEK_DATA
 * and SEEK_HOLE of the daemon and vhdxtool map are built on it.
 */
#include <errno.h>

#include "internal.h"

struct vhdx_image *vhdx_chain_image(struct vhdx_image *img, int depth)
{
	while (img && depth-- > 0)
		img = img->parent;
	return img;
}

static int query_block(struct vhdx_image *img, int depth, uint64_t off,
		       uint64_t len, struct vhdx_extent_info *x);

/*
 * What [off, off + len) of img's block reads through its parent: the
 * parent's answer, or zeros past the end of a smaller (or absent) parent.
 */
static int query_parent(struct vhdx_image *img, int depth, uint64_t off,
			uint64_t len, struct vhdx_extent_info *x)
{
	/* no parent: a read-only open that leaves it alone (zeros) */
	uint64_t psize = img->parent ? img->parent->g.virtual_size : 0;

	if (off >= psize) {
		*x = (struct vhdx_extent_info){.length = len,
					       .source = VHDX_SOURCE_ZERO,
					       .depth = depth,
					       .state = VHDX_BLOCK_NOT_PRESENT};
		return 0;
	}
	if (len > psize - off)
		len = psize - off;
	return query_block(img->parent, depth + 1, off, len, x);
}

/* A PARTIALLY_PRESENT block: the run of sectors whose bits agree. */
static int query_partial(struct vhdx_image *img, int depth, uint64_t off,
			 uint64_t len, uint64_t e, struct vhdx_extent_info *x)
{
	uint32_t lss = img->g.logical_sector;
	const uint8_t *bm;
	uint64_t bit, n;
	bool present;
	int ret = 0;

	bm = vhdx_chunk_bitmap(img, off / img->g.block_size, &ret);
	if (!bm)
		return ret;
	bit = off / lss % VHDX_SECTORS_PER_CHUNK;
	present = bm[bit / 8] >> (bit % 8) & 1;
	n = lss - off % lss;
	while (n < len) {
		uint64_t b = (off + n) / lss % VHDX_SECTORS_PER_CHUNK;

		if ((bool)(bm[b / 8] >> (b % 8) & 1) != present)
			break;
		n += lss;
	}
	if (n > len)
		n = len;
	if (!present)
		return query_parent(img, depth, off, n, x);
	*x = (struct vhdx_extent_info){.length = n,
				       .source = VHDX_SOURCE_FILE,
				       .depth = depth,
				       .state = VHDX_BLOCK_PARTIALLY_PRESENT,
				       .file_offset =
					   (e & VHDX_BAT_OFFSET_MASK) +
					   off % img->g.block_size};
	return 0;
}

/* The answer for off, within its block of img (at most len bytes). */
static int query_block(struct vhdx_image *img, int depth, uint64_t off,
		       uint64_t len, struct vhdx_extent_info *x)
{
	const struct vhdx_geom *g = &img->g;
	uint64_t in = off % g->block_size;
	uint64_t idx = vhdx_bat_payload_index(g, off / g->block_size);
	uint64_t e;
	unsigned int state;
	int ret;

	if (len > g->block_size - in)
		len = g->block_size - in;
	pthread_rwlock_rdlock(&img->lock);
	ret = vhdx_bat_get(img, idx, &e);
	pthread_rwlock_unlock(&img->lock);
	if (ret < 0)
		return ret;
	state = e & VHDX_BAT_STATE_MASK;
	*x = (struct vhdx_extent_info){.length = len,
				       .source = VHDX_SOURCE_ZERO,
				       .depth = depth,
				       .state = state};
	switch (state) {
	case VHDX_BLOCK_FULLY_PRESENT:
		x->source = VHDX_SOURCE_FILE;
		x->file_offset = (e & VHDX_BAT_OFFSET_MASK) + in;
		return 0;
	case VHDX_BLOCK_PARTIALLY_PRESENT:
		return query_partial(img, depth, off, len, e, x);
	case VHDX_BLOCK_NOT_PRESENT:
		return img->parent ? query_parent(img, depth, off, len, x) : 0;
	default:
		if (vhdx_state_reads_zero(state))
			return 0; /* never expose stale content (fmt §8.3) */
		vhdx_err(img, "BAT: entry %llu has unexpected state %u",
			 (unsigned long long)idx, state);
		return -EIO;
	}
}

/* Whether y continues x as one extent. */
static bool continues(const struct vhdx_extent_info *x,
		      const struct vhdx_extent_info *y)
{
	return x->source == y->source && x->depth == y->depth &&
	       x->state == y->state &&
	       (x->source != VHDX_SOURCE_FILE ||
		y->file_offset == x->file_offset + x->length);
}

int vhdx_query(struct vhdx_image *img, uint64_t off, uint64_t len,
	       struct vhdx_extent_info *x)
{
	uint64_t vsize = vhdx_virtual_size(img);
	int ret;

	if (off >= vsize || !len)
		return -EINVAL;
	if (len > vsize - off)
		len = vsize - off;
	ret = query_block(img, 0, off, len, x);
	while (ret == 0 && x->length < len) {
		struct vhdx_extent_info y;

		/* an entry that cannot be read ends the run (asked alone,
		 * it reports its error) */
		if (query_block(img, 0, off + x->length, len - x->length, &y) <
			0 ||
		    !continues(x, &y))
			break;
		x->length += y.length;
	}
	return ret;
}

int vhdx_block_state(struct vhdx_image *img, uint64_t pb)
{
	uint64_t idx, e;
	int ret = 0;

	if (pb >= img->g.payload_blocks)
		return -EINVAL;
	idx = vhdx_bat_payload_index(&img->g, pb);
	if (idx >= img->bat_entries)
		return VHDX_BLOCK_NOT_PRESENT;
	pthread_rwlock_rdlock(&img->lock);
	ret = vhdx_bat_get(img, idx, &e);
	pthread_rwlock_unlock(&img->lock);
	return ret < 0 ? ret : (int)(e & VHDX_BAT_STATE_MASK);
}
