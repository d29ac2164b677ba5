/*
 * read.c - the read path: file bytes through the log overlay, and virtual
 * disk reads translated through the block query (query.c, fmt §10.1-§10.2).
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

long vhdx_read(struct vhdx_image *img, void *buf, size_t len, uint64_t off)
{
	uint64_t vsize = vhdx_virtual_size(img);
	uint8_t *p = buf;
	size_t done = 0;

	if (off >= vsize)
		return 0;
	if (len > vsize - off)
		len = (size_t)(vsize - off);
	if (len > LONG_MAX)
		len = LONG_MAX;
	while (done < len) {
		struct vhdx_extent_info x;
		int ret = vhdx_query(img, off + done, len - done, &x);

		if (ret == 0 && x.source == VHDX_SOURCE_FILE)
			ret = vhdx_file_read(vhdx_chain_image(img, x.depth),
					     p + done, (size_t)x.length,
					     x.file_offset);
		else if (ret == 0)
			memset(p + done, 0, (size_t)x.length);
		if (ret < 0)
			return ret;
		done += (size_t)x.length;
	}
	return (long)done;
}

int vhdx_map(struct vhdx_image *img, uint64_t off, uint64_t len,
	     struct vhdx_mapping *m)
{
	uint64_t vsize = vhdx_virtual_size(img), bs = img->g.block_size;
	struct vhdx_extent_info x;
	uint64_t size = vhdx_known_size(img);

	if (off >= vsize || !len)
		return -EINVAL;
	if (len > vsize - off)
		len = vsize - off;
	if (vhdx_query(img, off, len, &x) < 0) {
		/* vhdx_read reports it */
		m->kind = VHDX_MAP_OTHER;
		m->length = bs - off % bs < len ? bs - off % bs : len;
		return 0;
	}
	m->length = x.length;
	m->file_offset = x.file_offset;
	if (x.source == VHDX_SOURCE_ZERO)
		m->kind = VHDX_MAP_ZERO;
	/* a parent's file, the log overlay or a block cut short by EOF:
	 * read normally */
	else if (x.depth || img->ov_count || x.file_offset >= size)
		m->kind = VHDX_MAP_OTHER;
	else
		m->kind = VHDX_MAP_FILE;
	if (m->kind == VHDX_MAP_FILE && x.file_offset + m->length > size)
		m->length = size - x.file_offset;
	return 0;
}
