/*
 * read.c - the read path: virtual disk reads translated through the block
 * query (query.c, fmt §10.1-§10.2), the file read through the log overlay
 * (core.c).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "internal.h"

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
