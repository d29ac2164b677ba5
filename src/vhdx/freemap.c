/*
 * freemap.c - the free 1 MiB places of the file (fmt §19.1, §19.2).
 *
 * Rebuilt from the BAT and the region table when a read-write session
 * starts; nothing is stored in the file.  A place is free when no structure
 * uses it: the header section, the log, every region of the region table,
 * the space of FULLY_ or PARTIALLY_PRESENT payload blocks and of present
 * sector bitmap blocks, and any other entry's non-zero FileOffsetMB (fmt
 * §19.1: in use until rewritten).  The map covers the file up to
 * img->alloc_end; beyond it the file is extended instead.
 *
 * A place given up by an in-memory BAT change (discard, a move) is
 * "pending": it becomes free only once that change is durable, which
 * journal.c says by calling vhdx_freemap_durable after its commit.  Until
 * then a crash could replay a BAT that still points at it.
 *
 * Every function is called with img->meta_lock held (or before the image
 * is shared).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define UNIT	  VHDX_ALIGN
#define WORD_BITS 64u

struct vhdx_freemap {
	uint64_t *bits; /* 1: the unit is free */
	uint64_t n_words;
	uint64_t n_free; /* units whose bit is set */
	uint64_t hint;	 /* no free unit below this one */
	struct vhdx_place *pend;
	size_t n_pend, cap_pend;
	uint64_t reused; /* blocks placed in free places */
};

struct vhdx_place {
	uint64_t off, len;
};

bool vhdx_freemap_unsafe_reuse;

static bool bit_get(const struct vhdx_freemap *fm, uint64_t u)
{
	return u / WORD_BITS < fm->n_words &&
	       (fm->bits[u / WORD_BITS] >> (u % WORD_BITS) & 1);
}

static int ensure_units(struct vhdx_freemap *fm, uint64_t units)
{
	uint64_t words = (units + WORD_BITS - 1) / WORD_BITS;
	uint64_t *b;

	if (words <= fm->n_words)
		return 0;
	if (words < 2 * fm->n_words)
		words = 2 * fm->n_words;
	b = realloc(fm->bits, words * sizeof(*b));
	if (!b)
		return -ENOMEM;
	memset(b + fm->n_words, 0, (words - fm->n_words) * sizeof(*b));
	fm->bits = b;
	fm->n_words = words;
	return 0;
}

/* Set units [u, u + n) free (free) or used; keeps n_free right. */
static void set_units(struct vhdx_freemap *fm, uint64_t u, uint64_t n,
		      bool free_)
{
	for (uint64_t k = u; k < u + n && k / WORD_BITS < fm->n_words; k++) {
		uint64_t *w = &fm->bits[k / WORD_BITS];
		uint64_t m = 1ull << (k % WORD_BITS);

		if (free_ && !(*w & m)) {
			*w |= m;
			fm->n_free++;
		} else if (!free_ && (*w & m)) {
			*w &= ~m;
			fm->n_free--;
		}
	}
	if (free_ && u < fm->hint)
		fm->hint = u;
}

/* Units touched by the file range [off, off + len). */
static void range_units(uint64_t off, uint64_t len, uint64_t *u, uint64_t *n)
{
	uint64_t end = off + len;

	*u = off / UNIT;
	*n = len ? (end + UNIT - 1) / UNIT - *u : 0;
}

static void mark_used(struct vhdx_freemap *fm, uint64_t off, uint64_t len)
{
	uint64_t u, n;

	range_units(off, len, &u, &n);
	set_units(fm, u, n, false);
}

int vhdx_freemap_build(struct vhdx_image *img)
{
	struct vhdx_freemap *fm = calloc(1, sizeof(*fm));
	uint64_t units = img->alloc_end / UNIT;

	if (!fm)
		return -ENOMEM;
	if (ensure_units(fm, units ? units : 1) < 0) {
		free(fm);
		return -ENOMEM;
	}
	set_units(fm, 0, units, true);
	fm->hint = 0;
	mark_used(fm, 0, VHDX_HEADER_SECTION_SIZE);
	for (size_t k = 0; k < img->n_extents; k++)
		mark_used(fm, img->extents[k].start, img->extents[k].length);
	mark_used(fm, img->log_offset, img->log_length);
	mark_used(fm, img->bat_offset, img->bat_length);
	mark_used(fm, img->meta_offset, img->meta_length);
	for (uint64_t i = 0; i < img->bat_entries; i++) {
		uint64_t e = img->bat[i];
		uint64_t off = e & VHDX_BAT_OFFSET_MASK;
		uint64_t len = VHDX_ALIGN;

		if (!off)
			continue;
		/* payload slots hold blocks; bitmap slots 1 MiB */
		if (!vhdx_bat_is_bitmap_slot(&img->g, i))
			len = img->g.block_size;
		mark_used(fm, off, len);
	}
	img->fm = fm;
	return 0;
}

void vhdx_freemap_destroy(struct vhdx_image *img)
{
	if (!img->fm)
		return;
	free(img->fm->bits);
	free(img->fm->pend);
	free(img->fm);
	img->fm = NULL;
}

bool vhdx_freemap_is_free(const struct vhdx_image *img, uint64_t off,
			  uint64_t len)
{
	uint64_t u, n;

	if (!img->fm || off % UNIT)
		return false;
	range_units(off, len, &u, &n);
	for (uint64_t k = u; k < u + n; k++)
		if (!bit_get(img->fm, k))
			return false;
	return true;
}

void vhdx_freemap_use(struct vhdx_image *img, uint64_t off, uint64_t len)
{
	if (img->fm)
		mark_used(img->fm, off, len);
}

uint64_t vhdx_freemap_find(const struct vhdx_image *img, uint64_t len,
			   uint64_t below)
{
	const struct vhdx_freemap *fm = img->fm;
	uint64_t need = (len + UNIT - 1) / UNIT;
	uint64_t limit = below / UNIT;

	if (!fm || !need || fm->n_free < need)
		return 0;
	if (limit > fm->n_words * WORD_BITS)
		limit = fm->n_words * WORD_BITS;
	for (uint64_t u = fm->hint; u + need <= limit;) {
		uint64_t run = 0;

		if (!(u % WORD_BITS) && !fm->bits[u / WORD_BITS]) {
			u += WORD_BITS;
			continue;
		}
		while (run < need && bit_get(fm, u + run))
			run++;
		if (run == need)
			return u * UNIT;
		u += run + 1;
	}
	return 0;
}

uint64_t vhdx_freemap_take(struct vhdx_image *img, uint64_t len)
{
	uint64_t off = vhdx_freemap_find(img, len, img->alloc_end);

	if (off) {
		mark_used(img->fm, off, len);
		img->fm->reused++;
	}
	return off;
}

void vhdx_freemap_give(struct vhdx_image *img, uint64_t off, uint64_t len)
{
	uint64_t u, n;

	if (!img->fm || !len)
		return;
	if (off + len > img->alloc_end)
		len = off < img->alloc_end ? img->alloc_end - off : 0;
	/* only whole units: a partial one may still hold a structure */
	u = (off + UNIT - 1) / UNIT;
	n = (off + len) / UNIT > u ? (off + len) / UNIT - u : 0;
	if (n && ensure_units(img->fm, u + n) == 0)
		set_units(img->fm, u, n, true);
}

void vhdx_freemap_defer(struct vhdx_image *img, uint64_t off, uint64_t len)
{
	struct vhdx_freemap *fm = img->fm;

	if (!fm || !len)
		return;
	if (vhdx_freemap_unsafe_reuse) {
		vhdx_freemap_give(img, off, len); /* tests only: the bug */
		return;
	}
	if (fm->n_pend == fm->cap_pend) {
		size_t cap = fm->cap_pend ? 2 * fm->cap_pend : 16;
		struct vhdx_place *p = realloc(fm->pend, cap * sizeof(*p));

		if (!p)
			return; /* the place stays in use: leaked, not lost */
		fm->pend = p;
		fm->cap_pend = cap;
	}
	fm->pend[fm->n_pend++] = (struct vhdx_place){off, len};
}

size_t vhdx_freemap_commit_begin(const struct vhdx_image *img)
{
	return img->fm ? img->fm->n_pend : 0;
}

void vhdx_freemap_durable(struct vhdx_image *img, size_t n)
{
	struct vhdx_freemap *fm = img->fm;

	if (!fm)
		return;
	if (n > fm->n_pend)
		n = fm->n_pend;
	if (!n)
		return; /* also: pend may still be NULL */
	for (size_t k = 0; k < n; k++)
		vhdx_freemap_give(img, fm->pend[k].off, fm->pend[k].len);
	memmove(fm->pend, fm->pend + n, (fm->n_pend - n) * sizeof(*fm->pend));
	fm->n_pend -= n;
}

uint64_t vhdx_freemap_tail(const struct vhdx_image *img)
{
	uint64_t u = img->alloc_end / UNIT;

	if (!img->fm)
		return img->alloc_end;
	while (u > 0 && bit_get(img->fm, u - 1))
		u--;
	return u * UNIT;
}

void vhdx_freemap_cut(struct vhdx_image *img, uint64_t end)
{
	struct vhdx_freemap *fm = img->fm;
	uint64_t u = (end + UNIT - 1) / UNIT;

	if (fm && u < fm->n_words * WORD_BITS)
		set_units(fm, u, fm->n_words * WORD_BITS - u, false);
}

void vhdx_freemap_stats(const struct vhdx_image *img, uint64_t *free_bytes,
			uint64_t *reused)
{
	*free_bytes = img->fm ? img->fm->n_free * UNIT : 0;
	*reused = img->fm ? img->fm->reused : 0;
}
