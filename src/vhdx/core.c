/*
 * core.c - the bottom layer of the library, below every structure reader:
 * reading the image file through the in-memory log overlay, the registry
 * of file ranges that structures use (every overlap check), the broken
 * state a failed metadata write leaves, and the virtual size as the I/O
 * paths see it.  It calls nothing of the library but msg.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- the file through the log overlay ---- */

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
		return -EUCLEAN;
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

/* ---- used ranges of the file ---- */

int vhdx_extent_add(struct vhdx_image *img, uint64_t start, uint64_t length,
		    const char *what)
{
	struct vhdx_extent *e;

	if (length == 0)
		return 0;
	if (start > UINT64_MAX - length) {
		vhdx_err(img, "%s: range 0x%llx+0x%llx overflows", what,
			 (unsigned long long)start, (unsigned long long)length);
		return -EUCLEAN;
	}
	for (size_t i = 0; i < img->n_extents; i++) {
		e = &img->extents[i];
		if (start < e->start + e->length && e->start < start + length) {
			vhdx_err(img,
				 "%s at 0x%llx (0x%llx bytes) overlaps the %s "
				 "at 0x%llx (0x%llx bytes)",
				 what, (unsigned long long)start,
				 (unsigned long long)length, e->what,
				 (unsigned long long)e->start,
				 (unsigned long long)e->length);
			return -EUCLEAN;
		}
	}
	e = realloc(img->extents, (img->n_extents + 1) * sizeof(*e));
	if (!e)
		return -ENOMEM;
	img->extents = e;
	img->extents[img->n_extents++] = (struct vhdx_extent){
	    .start = start, .length = length, .what = what};
	return 0;
}

/* ---- state ---- */

void vhdx_set_broken(struct vhdx_image *img, int err, const char *what)
{
	if (img->broken)
		return;
	img->broken = err;
	/* writers test it without meta_lock, which set_broken's callers hold */
	__atomic_store_n(&img->read_only, true, __ATOMIC_RELEASE);
	vhdx_err(img,
		 "%s failed: %s; the image is now read-only to keep it "
		 "consistent",
		 what, strerror(-err));
}

uint64_t vhdx_virtual_size(const struct vhdx_image *img)
{
	/* vhdx_resize may change it under concurrent I/O */
	return __atomic_load_n(&img->g.virtual_size, __ATOMIC_ACQUIRE);
}
