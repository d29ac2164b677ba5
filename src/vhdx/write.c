/*
 * write.c - the write path (fmt §10.3): in-place writes into present
 * blocks, allocation of new blocks (in a free place of the file, else at
 * its end: freemap.c), and the flush
 * that makes data and metadata durable.
 *
 * Ordering: a new block's space is made part of the file (reserved with the
 * allocate op unless VHDX_OPEN_SPARSE, then ftruncate; both read as zeros)
 * before its BAT entry is published in memory; BAT sectors
 * are journaled only by vhdx_journal_commit, after a flush of the data, so
 * no on-disk metadata ever points at space that is not durable.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int vhdx_is_read_only(const struct vhdx_image *img)
{
	return __atomic_load_n(&img->read_only, __ATOMIC_ACQUIRE);
}

/*
 * First write of the session: new FileWriteGuid, DataWriteGuid, LogGuid.
 * Later writes only test a flag: they must not wait for meta_lock, which a
 * flush holds across its fdatasyncs.
 */
static int ensure_session(struct vhdx_image *img)
{
	uint8_t guid[16];
	int ret = 0;

	/* acquire: pairs with the release below, after the header update */
	if (__atomic_load_n(&img->data_guid_renewed, __ATOMIC_ACQUIRE))
		return vhdx_is_read_only(img) ? -EROFS : 0;
	pthread_mutex_lock(&img->meta_lock);
	if (img->broken) {
		ret = -EROFS;
	} else if (!img->data_guid_renewed) {
		vhdx_guid_generate(guid);
		ret = vhdx_header_update(img, guid, true);
		if (ret == 0) {
			img->log_active = true;
			img->log_pos = 0;
			img->log_seq = 1;
			__atomic_store_n(&img->data_guid_renewed, true,
					 __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}

static void mark_dirty(struct vhdx_image *img, uint64_t idx)
{
	uint64_t s = idx * VHDX_BAT_ENTRY_SIZE / VHDX_LOG_SECTOR_SIZE;

	if (!img->dirty[s]) {
		img->dirty[s] = 1;
		img->n_dirty++;
	}
}

static bool all_zero(const uint8_t *p, size_t n)
{
	return !n || (!p[0] && !memcmp(p, p + 1, n - 1));
}

/*
 * Reads of a block with entry e return zeros without touching the file:
 * zeros written there change nothing, so they allocate nothing either
 * (mkfs zeroing inode tables and journals, dd of a sparse image).
 */
static bool reads_as_zero(const struct vhdx_image *img, uint64_t e)
{
	unsigned int state = e & VHDX_BAT_STATE_MASK;

	if (state == VHDX_BLOCK_NOT_PRESENT)
		return !img->parent;
	return vhdx_state_reads_zero(state);
}

/*
 * Differencing images: before a block becomes FULLY_PRESENT, put into it
 * what readers see now through the parent.  A NOT_PRESENT block gets the
 * parent's data in new space, which reads as zeros (zero runs stay
 * sparse); a PARTIALLY_PRESENT block gets the parent's data in the
 * sectors whose bitmap bit is 0, zeros included: its own space there
 * holds whatever it held (fmt §9), never shown until now.  Only the BAT
 * entry then changes, so the journal needs no sector bitmap updates.
 */
static int copy_up(struct vhdx_image *img, uint64_t pb, uint64_t old_e,
		   uint64_t base)
{
	const size_t chunk = 1024 * 1024;
	uint64_t first = pb * img->g.block_size;
	uint64_t len = img->g.virtual_size - first;
	unsigned int state = old_e & VHDX_BAT_STATE_MASK;
	uint8_t *buf;
	int ret = 0;

	if (len > img->g.block_size)
		len = img->g.block_size;
	if (state != VHDX_BLOCK_NOT_PRESENT &&
	    state != VHDX_BLOCK_PARTIALLY_PRESENT)
		return 0; /* ZERO, UNMAPPED, UNDEFINED: zeros, as allocated */
	buf = malloc(chunk);
	if (!buf)
		return -ENOMEM;
	for (uint64_t o = 0; o < len && ret == 0; o += chunk) {
		size_t n = len - o < chunk ? (size_t)(len - o) : chunk;

		/* what a reader sees now, parent and this file combined:
		 * the BAT entry is still old_e (meta_lock held) */
		long got = vhdx_read(img, buf, n, first + o);

		ret = got < 0 ? (int)got : 0;
		if (ret == 0 && (size_t)got < n)
			memset(buf + got, 0, n - (size_t)got);
		if (ret == 0 && (state == VHDX_BLOCK_PARTIALLY_PRESENT ||
				 !all_zero(buf, n)))
			ret = img->io.pwrite(img->io.opaque, buf, n, base + o);
	}
	free(buf);
	return ret;
}

/*
 * Prepare the free place [off, end) for a new block: it may hold anything
 * (a discard that could not punch a hole, an old structure), and a new
 * block must read as zeros.  Zero it, keeping it allocated unless
 * VHDX_OPEN_SPARSE; extend the file if the place reaches past its end.
 */
static int prepare_free_place(struct vhdx_image *img, uint64_t off,
			      uint64_t end)
{
	bool sparse = (img->flags & VHDX_OPEN_SPARSE) || !img->io.allocate;
	int ret;

	if (end > img->file_size) {
		ret = img->io.truncate(img->io.opaque, end);
		if (ret < 0)
			return ret;
		__atomic_store_n(&img->file_size, end, __ATOMIC_RELEASE);
	}
	ret = vhdx_zero_file(img, off, end - off, sparse);
	if (ret == 0 && !sparse)
		ret = img->io.allocate(img->io.opaque, off, end - off);
	return ret;
}

/* Give payload block pb file space; returns its BAT entry.  meta_lock held. */
static int alloc_block(struct vhdx_image *img, uint64_t pb, uint64_t *entry)
{
	uint64_t idx = vhdx_bat_payload_index(&img->g, pb);
	uint64_t e = img->bat[idx];
	uint64_t off = img->alloc_end;
	uint64_t end = off + img->g.block_size;
	uint64_t place = 0;
	int ret;

	if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_FULLY_PRESENT) {
		*entry = e; /* another thread allocated it meanwhile */
		return 0;
	}
	if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_PARTIALLY_PRESENT) {
		/* the block has space: complete it in place */
		off = e & VHDX_BAT_OFFSET_MASK;
		end = 0;
	} else if ((place = vhdx_freemap_take(img, img->g.block_size)) != 0) {
		/* a free place inside the file first, lowest first (§19.2) */
		off = place;
		end = 0;
		ret = prepare_free_place(img, off, off + img->g.block_size);
		if (ret < 0) {
			vhdx_freemap_give(img, off, img->g.block_size);
			return ret;
		}
	} else if (end > VHDX_MAX_OFF || end < off) {
		return -EFBIG;
	}
	/* the whole block reserved: one host extent, not one per write */
	if (end && (ret = vhdx_grow_file(img, end,
					 !(img->flags & VHDX_OPEN_SPARSE))) < 0)
		return ret;
	if (img->parent && (ret = copy_up(img, pb, e, off)) < 0) {
		if (place)
			vhdx_freemap_give(img, place, img->g.block_size);
		return ret;
	}
	e = off | VHDX_BLOCK_FULLY_PRESENT;
	pthread_rwlock_wrlock(&img->lock);
	img->state_count[img->bat[idx] & VHDX_BAT_STATE_MASK]--;
	img->state_count[VHDX_BLOCK_FULLY_PRESENT]++;
	img->bat[idx] = e;
	pthread_rwlock_unlock(&img->lock);
	mark_dirty(img, idx);
	*entry = e;
	return 0;
}

/* Write part of one payload block. */
static int write_in_block(struct vhdx_image *img, const uint8_t *buf,
			  size_t len, uint64_t off)
{
	uint64_t pb = off / img->g.block_size;
	uint64_t idx = vhdx_bat_payload_index(&img->g, pb);
	uint64_t e;
	int ret = 0;

	pthread_rwlock_rdlock(&img->lock);
	e = img->bat[idx];
	pthread_rwlock_unlock(&img->lock);
	if ((e & VHDX_BAT_STATE_MASK) != VHDX_BLOCK_FULLY_PRESENT) {
		if (reads_as_zero(img, e) && all_zero(buf, len))
			return 0;
		pthread_mutex_lock(&img->meta_lock);
		ret = img->broken ? -EROFS : alloc_block(img, pb, &e);
		pthread_mutex_unlock(&img->meta_lock);
		if (ret < 0)
			return ret;
	}
	return img->io.pwrite(img->io.opaque, buf, len,
			      (e & VHDX_BAT_OFFSET_MASK) +
				  off % img->g.block_size);
}

long vhdx_write(struct vhdx_image *img, const void *buf, size_t len,
		uint64_t off)
{
	uint64_t vsize = vhdx_virtual_size(img);
	const uint8_t *p = buf;
	size_t done = 0;
	int ret;

	if (vhdx_is_read_only(img))
		return -EROFS;
	if (off >= vsize)
		return len ? -ENOSPC : 0;
	if (len > vsize - off)
		len = (size_t)(vsize - off);
	if (len > LONG_MAX)
		len = LONG_MAX;
	ret = ensure_session(img);
	if (ret < 0)
		return ret;
	while (done < len) {
		uint64_t o = off + done;
		uint64_t left = img->g.block_size - o % img->g.block_size;
		size_t n = len - done < left ? len - done : (size_t)left;

		ret = write_in_block(img, p + done, n, o);
		if (ret < 0)
			return done ? (long)done : ret;
		done += n;
	}
	return (long)done;
}

int vhdx_grow_file(struct vhdx_image *img, uint64_t end, bool reserve)
{
	uint64_t off = img->alloc_end;
	int ret;

	if (end <= off)
		return 0;
	if (reserve && img->io.allocate) {
		ret = img->io.allocate(img->io.opaque, off, end - off);
		if (ret < 0)
			return ret;
	}
	ret = img->io.truncate(img->io.opaque, end);
	if (ret < 0)
		return ret;
	img->alloc_end = end;
	/* readers of the file test it without meta_lock */
	__atomic_store_n(&img->file_size, end, __ATOMIC_RELEASE);
	return 0;
}

/* ---- zeroing and discard (fmt §10.5) ---- */

static const uint8_t zeros[64 * 1024];

int vhdx_zero_file(struct vhdx_image *img, uint64_t foff, uint64_t len,
		   bool unmap)
{
	uint64_t size = vhdx_known_size(img);
	int ret;

	if (foff >= size)
		return 0; /* a short last block: reads as zeros already */
	if (len > size - foff)
		len = size - foff;
	if (img->io.zero) {
		ret = img->io.zero(img->io.opaque, foff, len, unmap);
		if (ret != -EOPNOTSUPP)
			return ret;
	}
	while (len) {
		size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);

		ret = img->io.pwrite(img->io.opaque, zeros, n, foff);
		if (ret < 0)
			return ret;
		foff += n;
		len -= n;
	}
	return 0;
}

/*
 * A whole block without data of its own, or to be unmapped: make it ZERO.
 * Returns 1 if a fully present block is to be zeroed in place instead.
 */
static int zero_whole_block(struct vhdx_image *img, uint64_t pb,
			    unsigned int flags)
{
	uint64_t idx = vhdx_bat_payload_index(&img->g, pb);
	uint64_t e, space = 0;
	unsigned int state;
	int ret = 0;

	pthread_mutex_lock(&img->meta_lock);
	e = img->bat[idx]; /* changes only under meta_lock */
	state = e & VHDX_BAT_STATE_MASK;
	if (img->broken) {
		ret = -EROFS;
	} else if (reads_as_zero(img, e)) {
		ret = 0;
	} else if (state == VHDX_BLOCK_FULLY_PRESENT &&
		   !(flags & VHDX_ZERO_UNMAP)) {
		ret = 1;
	} else {
		if (state == VHDX_BLOCK_FULLY_PRESENT ||
		    state == VHDX_BLOCK_PARTIALLY_PRESENT)
			space = e & VHDX_BAT_OFFSET_MASK;
		pthread_rwlock_wrlock(&img->lock);
		img->state_count[state]--;
		img->state_count[VHDX_BLOCK_ZERO]++;
		img->bat[idx] = VHDX_BLOCK_ZERO;
		pthread_rwlock_unlock(&img->lock);
		mark_dirty(img, idx);
	}
	pthread_mutex_unlock(&img->meta_lock);
	/*
	 * Nothing refers to the old space any more, and allocation does not
	 * reuse it before ZERO is durable: give it back.  Before the next flush journals ZERO, the
	 * BAT on disk still points here, so after a crash meanwhile each
	 * sector reads either as before (the parent's, for a sector whose
	 * bitmap bit is 0) or as zeros: what an unsynced discard may leave.
	 * Best effort: a file system that cannot punch holes keeps the
	 * space.
	 */
	if (space && (flags & VHDX_ZERO_UNMAP) && img->io.zero &&
	    img->io.zero(img->io.opaque, space, img->g.block_size, 1) < 0)
		vhdx_debug(img,
			   "discard: the space of block %llu stays "
			   "allocated",
			   (unsigned long long)pb);
	/*
	 * Only now, after the hole is punched, may the place go to another
	 * block, and only once the ZERO entry is durable (fmt §19.2).
	 */
	if (space) {
		pthread_mutex_lock(&img->meta_lock);
		vhdx_freemap_defer(img, space, img->g.block_size);
		pthread_mutex_unlock(&img->meta_lock);
	}
	return ret;
}

/* Zero part or all of one payload block. */
static int zero_in_block(struct vhdx_image *img, uint64_t off, uint64_t len,
			 unsigned int flags)
{
	uint64_t bs = img->g.block_size;
	uint64_t pb = off / bs;
	uint64_t in = off % bs;
	uint64_t in_disk = img->g.virtual_size - pb * bs;
	bool fixed = img->fp_flags & VHDX_FP_LEAVE_BLOCKS_ALLOCATED;
	bool unmap = (flags & VHDX_ZERO_UNMAP) && !fixed;
	uint64_t e;
	int ret;

	if (in_disk > bs)
		in_disk = bs;
	if (in == 0 && len == in_disk && !fixed) {
		ret = zero_whole_block(img, pb, unmap ? VHDX_ZERO_UNMAP : 0);
		if (ret <= 0)
			return ret;
	}
	pthread_rwlock_rdlock(&img->lock);
	e = img->bat[vhdx_bat_payload_index(&img->g, pb)];
	pthread_rwlock_unlock(&img->lock);
	if (reads_as_zero(img, e))
		return 0;
	if ((e & VHDX_BAT_STATE_MASK) == VHDX_BLOCK_FULLY_PRESENT)
		return vhdx_zero_file(img, (e & VHDX_BAT_OFFSET_MASK) + in, len,
				      unmap);
	/* not present here: the parent shows through; write zeros over it */
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < sizeof(zeros) ? (size_t)(len - done)
						      : sizeof(zeros);

		ret = write_in_block(img, zeros, n, off + done);
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

int vhdx_zero(struct vhdx_image *img, uint64_t off, uint64_t len,
	      unsigned int flags)
{
	uint64_t vsize = vhdx_virtual_size(img);
	int ret;

	if (flags & ~VHDX_ZERO_UNMAP)
		return -EINVAL;
	if (vhdx_is_read_only(img))
		return -EROFS;
	if (off >= vsize || !len)
		return 0;
	if (len > vsize - off)
		len = vsize - off;
	ret = ensure_session(img);
	if (ret < 0)
		return ret;
	for (uint64_t done = 0; done < len;) {
		uint64_t o = off + done;
		uint64_t left = img->g.block_size - o % img->g.block_size;
		uint64_t n = len - done < left ? len - done : left;

		ret = zero_in_block(img, o, n, flags);
		if (ret < 0)
			return ret;
		done += n;
	}
	return 0;
}

int vhdx_flush_data(struct vhdx_image *img)
{
	int ret = img->io.flush(img->io.opaque);

	if (ret < 0) {
		/*
		 * After a failed fsync the kernel may have dropped the dirty
		 * pages: committing BAT entries now could point them at data
		 * that never reached the disk.  Stop writing instead.
		 */
		img->flush_failed = true;
		vhdx_set_broken(img, ret, "flush");
		return ret;
	}
	img->apply_unflushed = false;
	img->flushed_size = img->file_size & ~(VHDX_ALIGN - 1);
	return 0;
}

/* Flush data, then journal the dirty BAT sectors.  meta_lock held. */
static int flush_locked(struct vhdx_image *img)
{
	int ret = vhdx_flush_data(img);

	return ret < 0 ? ret : vhdx_journal_commit(img);
}

int vhdx_flush(struct vhdx_image *img)
{
	int ret = 0;

	if (img->flags & VHDX_OPEN_RDONLY)
		return 0;
	pthread_mutex_lock(&img->meta_lock);
	if (img->broken)
		ret = img->broken;
	else if (img->session_started)
		ret = flush_locked(img);
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}

/* Clean close of a read-write session: flush, then mark the log empty. */
int vhdx_write_close(struct vhdx_image *img)
{
	int ret = 0;

	pthread_mutex_lock(&img->meta_lock);
	if (img->session_started && !img->broken) {
		ret = flush_locked(img);
		if (ret == 0)
			ret = vhdx_journal_close(img);
	}
	if (img->broken) {
		vhdx_journal_salvage(img);
		if (ret == 0)
			ret = img->broken;
	}
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}

/* Prepare the in-memory state for writing (after a successful open). */
int vhdx_write_init(struct vhdx_image *img)
{
	uint64_t n_sectors =
	    (img->bat_length + VHDX_LOG_SECTOR_SIZE - 1) / VHDX_LOG_SECTOR_SIZE;

	/* the writer reads and changes img->bat directly: it must be whole */
	if (img->bat_lazy)
		return -EINVAL;
	img->dirty = calloc(n_sectors ? n_sectors : 1, 1);
	if (!img->dirty)
		return -ENOMEM;
	img->alloc_end = (img->eff_size + VHDX_ALIGN - 1) & ~(VHDX_ALIGN - 1);
	if (vhdx_freemap_build(img) < 0)
		return -ENOMEM;
	/*
	 * The log of a fresh image is often a hole: give it space now, so a
	 * full disk stops a data write, not a log write.  (Best effort.)
	 */
	if (img->io.allocate && img->log_length &&
	    img->io.allocate(img->io.opaque, img->log_offset, img->log_length) <
		0)
		vhdx_debug(img, "log: could not reserve its space");
	img->flushed_size = img->file_size & ~(VHDX_ALIGN - 1);
	return 0;
}

/*
 * What the first write of a session does (write.c: a new LogGuid and
 * DataWriteGuid in one header update), with the caller's DataWriteGuid:
 * the header update copies the current header's defined bytes, so the
 * GUID is put there first.
 */
int vhdx_set_data_write_guid(struct vhdx_image *img, const uint8_t guid[16])
{
	uint8_t lg[16];
	int ret;

	pthread_mutex_lock(&img->meta_lock);
	if (img->read_only) {
		ret = img->broken ? img->broken : -EROFS;
	} else if (img->data_guid_renewed) {
		ret = -EBUSY;
	} else {
		memcpy(img->hdr[img->cur] + VHDX_HDR_DATA_WRITE_GUID, guid, 16);
		vhdx_guid_generate(lg);
		ret = vhdx_header_update(img, lg, false);
		if (ret == 0) {
			memcpy(img->data_write_guid, guid, 16);
			img->data_guid_renewed = true;
			img->log_active = true;
			img->log_pos = 0;
			img->log_seq = 1;
		}
	}
	pthread_mutex_unlock(&img->meta_lock);
	return ret;
}
