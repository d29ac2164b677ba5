/*
 * compact.c - shrink an image file in place (fmt §19.3), as Hyper-V's
 * Optimize-VHD does.
 *
 * 1. Entries that hold no data but still name a place (ZERO, UNMAPPED,
 *    NOT_PRESENT... with a FileOffsetMB) are rewritten with offset 0.
 * 2. With VHDX_COMPACT_ZEROS, FULLY_PRESENT blocks whose bytes are all zero
 *    become ZERO: they read the same, in a differencing image too (ZERO
 *    hides the parent, as the zeros did).  Steps 1 and 2 are skipped for
 *    fixed images, whose blocks stay allocated (fmt §10.5).
 * 3. Blocks are moved, from the end of the file down, into the lowest free
 *    places below them.  Each move: copy the bytes, fdatasync, journal the
 *    new FileOffsetMB (same state), flush; the old place is free only then
 *    (freemap.c, journal.c), and the free end of the file is cut away by
 *    the commit that frees it (journal.c, release_tail).
 * 4. The holes left before the new end of the file (punched by discards)
 *    are filled, so the file is dense (Windows refuses sparse VHDX files),
 *    unless the image was opened with VHDX_OPEN_SPARSE.
 *
 * Nothing a reader sees changes, so DataWriteGuid is kept and children of
 * the image stay linked.  Parents are never written.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "vhdx_inspect.h"

#define COPY_CHUNK (1024 * 1024)
/* moves per commit: the batch shares one fdatasync and one log entry */
#define MOVE_BATCH 16

struct owner {
	uint64_t off; /* file offset of the place */
	uint64_t idx; /* BAT index */
	uint32_t len; /* block size, or 1 MiB for a sector bitmap block */
};

struct compact {
	struct vhdx_image *img;
	const struct vhdx_compact_opts *o;
	struct vhdx_compact_result *r;
	uint8_t *buf;
	uint64_t done, total;
};

static void progress(struct compact *c)
{
	if (c->o && c->o->progress)
		c->o->progress(c->o->progress_opaque, c->done, c->total);
}

static void mark_dirty(struct vhdx_image *img, uint64_t idx)
{
	uint64_t s = idx * VHDX_BAT_ENTRY_SIZE / VHDX_LOG_SECTOR_SIZE;

	if (!img->dirty[s]) {
		img->dirty[s] = 1;
		img->n_dirty++;
	}
}

/* Set BAT entry idx to e (in memory; journaled by the next flush). */
static void set_entry(struct vhdx_image *img, uint64_t idx, uint64_t e)
{
	pthread_rwlock_wrlock(&img->lock);
	if (!vhdx_bat_is_bitmap_slot(&img->g, idx)) {
		img->state_count[img->bat[idx] & VHDX_BAT_STATE_MASK]--;
		img->state_count[e & VHDX_BAT_STATE_MASK]++;
	}
	img->bat[idx] = e;
	pthread_rwlock_unlock(&img->lock);
	mark_dirty(img, idx);
}

/*
 * Start a session that keeps DataWriteGuid: new FileWriteGuid and LogGuid
 * only (a write would renew DataWriteGuid; a move is not a write).
 */
static int start_session(struct vhdx_image *img)
{
	uint8_t guid[16];
	int ret = 0;

	pthread_mutex_lock(&img->meta_lock);
	if (img->broken) {
		ret = -EROFS;
	} else if (!img->session_started) {
		vhdx_guid_generate(guid);
		ret = vhdx_header_update(img, guid, false);
		if (ret == 0) {
			img->log_active = true;
			img->log_pos = 0;
			img->log_seq = 1;
		}
	}
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (!p[0] && !memcmp(p, p + 1, n - 1));
}

/* Read file bytes; what lies past the end of the file reads as zeros. */
static int read_place(struct vhdx_image *img, uint8_t *buf, size_t n,
		      uint64_t off)
{
	long got = img->io.pread(img->io.opaque, buf, n, off);

	if (got < 0)
		return (int)got;
	if ((size_t)got < n)
		memset(buf + got, 0, n - (size_t)got);
	return 0;
}

/* Steps 1 and 2: entries that hold no data give their place up. */
static int release_empty(struct compact *c)
{
	struct vhdx_image *img = c->img;
	uint64_t bs = img->g.block_size;
	int ret = 0;

	/* a fixed image keeps every block allocated (fmt §10.5) */
	if (img->fp_flags & VHDX_FP_LEAVE_BLOCKS_ALLOCATED)
		return 0;
	pthread_mutex_lock(&img->meta_lock);
	for (uint64_t i = 0; i < img->bat_entries && ret == 0; i++) {
		uint64_t e = img->bat[i];
		uint64_t off = e & VHDX_BAT_OFFSET_MASK;
		unsigned int st = e & VHDX_BAT_STATE_MASK;
		bool bitmap = vhdx_bat_is_bitmap_slot(&img->g, i);

		if (bitmap) {
			if (off && st != VHDX_SB_BLOCK_PRESENT) {
				set_entry(img, i, st);
				vhdx_freemap_defer(img, off, VHDX_ALIGN);
			}
			continue;
		}
		c->done++;
		if (!off)
			continue;
		if (st != VHDX_BLOCK_FULLY_PRESENT &&
		    st != VHDX_BLOCK_PARTIALLY_PRESENT) {
			set_entry(img, i, st);
			vhdx_freemap_defer(img, off, bs);
			continue;
		}
		if (!(c->o && (c->o->flags & VHDX_COMPACT_ZEROS)) ||
		    st != VHDX_BLOCK_FULLY_PRESENT)
			continue;
		/* the part of the block inside the virtual disk */
		uint64_t pb = vhdx_bat_entry_block(&img->g, i);
		uint64_t len = img->g.virtual_size - pb * bs;
		bool zero = true;

		if (len > bs)
			len = bs;
		for (uint64_t o = 0; o < len && zero && ret == 0;
		     o += COPY_CHUNK) {
			size_t n = len - o < COPY_CHUNK ? (size_t)(len - o)
							: COPY_CHUNK;

			ret = read_place(img, c->buf, n, off + o);
			zero = ret == 0 && all_zero(c->buf, n);
		}
		if (ret == 0 && zero) {
			set_entry(img, i, VHDX_BLOCK_ZERO);
			vhdx_freemap_defer(img, off, bs);
			c->r->blocks_zeroed++;
		}
		if (!(c->done & 63))
			progress(c);
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (ret == 0)
		ret = vhdx_flush(img);
	return ret;
}

static int cmp_owner_desc(const void *a, const void *b)
{
	const struct owner *x = a, *y = b;

	return x->off < y->off ? 1 : x->off > y->off ? -1 : 0;
}

/* Every place a BAT entry holds data in, highest first. */
static int collect_owners(struct vhdx_image *img, struct owner **out,
			  size_t *n_out)
{
	struct owner *v = NULL;
	size_t n = 0, cap = 0;

	for (uint64_t i = 0; i < img->bat_entries; i++) {
		uint64_t e = img->bat[i];
		unsigned int st = e & VHDX_BAT_STATE_MASK;
		bool bitmap = vhdx_bat_is_bitmap_slot(&img->g, i);

		if (!(e & VHDX_BAT_OFFSET_MASK))
			continue;
		if (bitmap ? st != VHDX_SB_BLOCK_PRESENT
			   : st != VHDX_BLOCK_FULLY_PRESENT &&
				 st != VHDX_BLOCK_PARTIALLY_PRESENT)
			continue;
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 256;
			struct owner *p = realloc(v, nc * sizeof(*p));

			if (!p) {
				free(v);
				return -ENOMEM;
			}
			v = p;
			cap = nc;
		}
		v[n++] =
		    (struct owner){e & VHDX_BAT_OFFSET_MASK, i,
				   bitmap ? VHDX_ALIGN : img->g.block_size};
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_owner_desc);
	*out = v;
	*n_out = n;
	return 0;
}

/* Copy len bytes of the file from src to dst (dst written whole: dense). */
static int copy_place(struct compact *c, uint64_t src, uint64_t dst,
		      uint64_t len)
{
	struct vhdx_image *img = c->img;
	int ret = 0;

	for (uint64_t o = 0; o < len && ret == 0; o += COPY_CHUNK) {
		size_t n =
		    len - o < COPY_CHUNK ? (size_t)(len - o) : COPY_CHUNK;

		ret = read_place(img, c->buf, n, src + o);
		if (ret == 0)
			ret =
			    img->io.pwrite(img->io.opaque, c->buf, n, dst + o);
	}
	return ret;
}

/* Step 3: move blocks down.  The BAT of the batch goes out with one flush. */
static int move_blocks(struct compact *c)
{
	struct vhdx_image *img = c->img;
	struct owner *v;
	size_t n, batch = 0;
	int ret;

	ret = collect_owners(img, &v, &n);
	if (ret < 0)
		return ret;
	c->total += n;
	for (size_t k = 0; k < n && ret == 0; k++) {
		uint64_t dst;

		if (c->o && c->o->stop && *c->o->stop) {
			ret = -EINTR; /* the moves so far are flushed below */
			break;
		}

		pthread_mutex_lock(&img->meta_lock);
		dst = vhdx_freemap_find(img, v[k].len, v[k].off);
		if (dst)
			vhdx_freemap_use(img, dst, v[k].len);
		pthread_mutex_unlock(&img->meta_lock);
		if (!dst) {
			/*
			 * Nothing below has room for it.  Places freed by the
			 * batch become free with its commit: try once more.
			 */
			if (batch) {
				ret = vhdx_flush(img);
				batch = 0;
				k--;
				continue;
			}
			break;
		}
		ret = copy_place(c, v[k].off, dst, v[k].len);
		if (ret < 0) {
			pthread_mutex_lock(&img->meta_lock);
			vhdx_freemap_give(img, dst, v[k].len);
			pthread_mutex_unlock(&img->meta_lock);
			break;
		}
		/*
		 * Published in memory now, durable with the next vhdx_flush,
		 * which flushes the copied data before it journals the entry.
		 */
		pthread_mutex_lock(&img->meta_lock);
		set_entry(img, v[k].idx,
			  dst | (img->bat[v[k].idx] & VHDX_BAT_STATE_MASK));
		vhdx_freemap_defer(img, v[k].off, v[k].len);
		pthread_mutex_unlock(&img->meta_lock);
		if (v[k].len == VHDX_ALIGN &&
		    vhdx_bat_is_bitmap_slot(&img->g, v[k].idx))
			c->r->bitmaps_moved++;
		else
			c->r->blocks_moved++;
		c->done++;
		progress(c);
		if (++batch == MOVE_BATCH) {
			ret = vhdx_flush(img);
			batch = 0;
		}
	}
	free(v);
	if (ret == 0 || ret == -EINTR) {
		int r2 = vhdx_flush(img);

		if (r2 < 0)
			ret = r2;
	}
	return ret;
}

/* Step 4: no holes before the end of the file. */
static int fill_holes(struct compact *c)
{
	struct vhdx_image *img = c->img;
	int ret;

	if ((img->flags & VHDX_OPEN_SPARSE) || !img->io.allocate)
		return 0;
	ret = img->io.allocate(img->io.opaque, 0, img->file_size);
	if (ret == 0)
		ret = img->io.flush(img->io.opaque);
	return ret;
}

int vhdx_compact(struct vhdx_image *img, const struct vhdx_compact_opts *o,
		 struct vhdx_compact_result *r)
{
	struct compact c = {.img = img, .o = o, .r = r};
	uint64_t reused;
	int ret;

	memset(r, 0, sizeof(*r));
	r->size_before = img->file_size;
	if (img->read_only)
		return -EROFS;
	if (!img->fm)
		return -EINVAL;
	c.buf = malloc(COPY_CHUNK);
	if (!c.buf)
		return -ENOMEM;
	c.total = img->g.payload_blocks;
	ret = start_session(img);
	if (ret == 0)
		ret = release_empty(&c);
	if (ret == 0)
		ret = move_blocks(&c);
	if (ret == 0)
		ret = fill_holes(&c);
	free(c.buf);
	c.done = c.total;
	progress(&c);
	r->size_after = img->file_size;
	pthread_mutex_lock(&img->meta_lock);
	vhdx_freemap_stats(img, &r->free_bytes, &reused);
	pthread_mutex_unlock(&img->meta_lock);
	if (ret < 0 && ret != -EINTR)
		vhdx_err(img, "compact: %s", strerror(-ret));
	return ret;
}
