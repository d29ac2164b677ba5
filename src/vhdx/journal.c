/*
 * journal.c - writing metadata through the log (fmt §12.6).
 *
 * Strategy ("session log"): one LogGuid per stretch of the ring.  Entries
 * are appended one after another, each with Tail = its own offset, and each
 * is applied in place right after it is flushed.  Before an entry is
 * written, the previous entry's in-place writes are flushed, so the newest
 * valid entry always describes the current on-disk metadata and replaying it
 * is harmless.  When the ring is full (its last two sectors stay unused,
 * see commit_entry) the LogGuid is rotated, which makes
 * every older entry invalid at once; the log is therefore never overwritten
 * in place under a live GUID, and a torn entry cannot expose a stale one.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

/* Descriptors in one entry: fills the first descriptor sector. */
#define JOURNAL_MAX_DESC 126u

/* Bytes at the end of the log that no entry reaches (see commit_entry). */
#define VHDX_LOG_TAIL_ROOM (2 * VHDX_LOG_SECTOR_SIZE)

/*
 * The on-disk image of BAT sector s, from the in-memory BAT (whole in a
 * read-write open: vhdx_write_init refuses a lazy one).
 */
static void bat_sector_image(struct vhdx_image *img, uint64_t s, uint8_t *out)
{
	uint64_t per = VHDX_LOG_SECTOR_SIZE / VHDX_BAT_ENTRY_SIZE;

	pthread_rwlock_rdlock(&img->lock);
	for (uint64_t k = 0; k < per; k++) {
		uint64_t i = s * per + k;

		le64_put(out + k * 8, i < img->bat_entries ? img->bat[i] : 0);
	}
	pthread_rwlock_unlock(&img->lock);
}

static int flush_applied(struct vhdx_image *img)
{
	int ret;

	if (!img->apply_unflushed)
		return 0;
	ret = img->io.flush(img->io.opaque);
	if (ret < 0) {
		img->flush_failed = true;
		return ret;
	}
	img->apply_unflushed = false;
	return 0;
}

/* Start a fresh stretch of log under a new LogGuid. */
static int log_rotate(struct vhdx_image *img)
{
	uint8_t guid[16];
	int ret;

	ret = flush_applied(img);
	if (ret < 0)
		return ret;
	vhdx_guid_generate(guid);
	ret = vhdx_header_update(img, guid, false);
	if (ret < 0)
		return ret;
	img->log_active = true;
	img->log_pos = 0;
	img->log_seq = 1;
	return 0;
}

/* Log sectors taken by the descriptors of an entry of n data sectors. */
static uint64_t desc_sectors(uint32_t n)
{
	return ((uint64_t)n + 2 + 127) / 128;
}

/*
 * Build the entry for the sector images data[0..n) of the file offsets
 * off[0..n) into buf (desc_sectors(n) + n log sectors).  The descriptors
 * follow the entry header contiguously, across descriptor sectors.
 */
static void build_entry(struct vhdx_image *img, const uint64_t *off,
			const uint8_t *const *data, uint32_t n, uint8_t *buf)
{
	uint64_t ds = desc_sectors(n);
	uint32_t len = (uint32_t)((ds + n) * VHDX_LOG_SECTOR_SIZE);
	uint64_t seq = img->log_seq;
	uint8_t *h = buf;

	memset(buf, 0, ds * VHDX_LOG_SECTOR_SIZE);
	memcpy(h, VHDX_LOG_ENTRY_SIG, 4);
	le32_put(h + VHDX_LE_ENTRY_LENGTH, len);
	le32_put(h + VHDX_LE_TAIL, (uint32_t)img->log_pos);
	le64_put(h + VHDX_LE_SEQ, seq);
	le32_put(h + VHDX_LE_DESC_COUNT, n);
	memcpy(h + VHDX_LE_LOG_GUID, img->log_guid, 16);
	le64_put(h + VHDX_LE_FLUSHED_FILE_OFFSET, img->flushed_size);
	le64_put(h + VHDX_LE_LAST_FILE_OFFSET, img->alloc_end);
	for (uint32_t k = 0; k < n; k++) {
		uint8_t *d = buf + VHDX_LE_HEADER_SIZE + k * VHDX_LOG_DESC_SIZE;
		uint8_t *dsec = buf + (ds + k) * VHDX_LOG_SECTOR_SIZE;
		const uint8_t *img4k = data[k];

		memcpy(d, VHDX_LOG_DESC_DATA_SIG, 4);
		memcpy(d + VHDX_LD_TRAILING, img4k + VHDX_LS_SEQ_LOW, 4);
		memcpy(d + VHDX_LD_LEADING, img4k, 8);
		le64_put(d + VHDX_LD_FILE_OFFSET, off[k]);
		le64_put(d + VHDX_LD_SEQ, seq);
		memcpy(dsec, VHDX_LOG_DATA_SIG, 4);
		le32_put(dsec + VHDX_LS_SEQ_HIGH, (uint32_t)(seq >> 32));
		memcpy(dsec + VHDX_LS_DATA, img4k + 8, VHDX_LS_DATA_LEN);
		le32_put(dsec + VHDX_LS_SEQ_LOW, (uint32_t)seq);
	}
	le32_put(h + VHDX_LE_CHECKSUM, vhdx_crc32c(buf, len));
}

/* Write the sector images of a flushed entry to their home locations. */
static int apply_entry(struct vhdx_image *img, const uint64_t *off,
		       const uint8_t *const *data, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		int ret = img->io.pwrite(img->io.opaque, data[k],
					 VHDX_LOG_SECTOR_SIZE, off[k]);

		if (ret < 0)
			return ret;
	}
	img->apply_unflushed = true;
	return 0;
}

/* Room for one entry of n data sectors in the log, or -ENOSPC. */
static int entry_fits(const struct vhdx_image *img, uint32_t n)
{
	uint64_t len = (desc_sectors(n) + n) * VHDX_LOG_SECTOR_SIZE;

	return len + VHDX_LOG_TAIL_ROOM > img->log_length ? -ENOSPC : 0;
}

/*
 * At most JOURNAL_MAX_DESC: qemu-img 7.2 (Debian 12) refuses to open an
 * image whose log holds an entry with a second descriptor sector (observed:
 * "Invalid argument" on an entry of 128 descriptors, replayed by us), so
 * entries stay within one.
 */
uint32_t vhdx_journal_max_sectors(const struct vhdx_image *img)
{
	uint32_t n = JOURNAL_MAX_DESC;

	while (n && entry_fits(img, n) < 0)
		n--;
	return n;
}

/* Journal and apply one entry holding data[0..n) for off[0..n). */
static int commit_entry(struct vhdx_image *img, const uint64_t *off,
			const uint8_t *const *data, uint32_t n, uint8_t *buf)
{
	uint64_t len = (desc_sectors(n) + n) * VHDX_LOG_SECTOR_SIZE;
	int ret;

	if (entry_fits(img, n) < 0)
		return -ENOSPC;
	/*
	 * No entry ends in the last VHDX_LOG_TAIL_ROOM bytes of the log.
	 * QEMU's search for the active sequence (qemu-img 7.2, Debian 12)
	 * scans from offset 0 and stops only once its read position wraps
	 * below where the scan started; a run of entries from offset 0 that
	 * ends one sector before the end, or at the end with a torn entry,
	 * brings it back to exactly 0, and qemu-img then loops forever on the
	 * image a crash left.  With two sectors to spare it never does.
	 */
	if (!img->log_active ||
	    img->log_pos + len + VHDX_LOG_TAIL_ROOM > img->log_length) {
		ret = log_rotate(img);
		if (ret < 0)
			return ret;
	}
	ret = flush_applied(img);
	if (ret < 0)
		return ret;
	build_entry(img, off, data, n, buf);
	ret = img->io.pwrite(img->io.opaque, buf, (size_t)len,
			     img->log_offset + img->log_pos);
	if (ret == 0)
		ret = img->io.flush(img->io.opaque);
	if (ret == 0)
		ret = apply_entry(img, off, data, n);
	if (ret < 0)
		return ret;
	img->log_pos += len;
	img->log_seq++;
	return 0;
}

/*
 * Give the free places at the end of the file back (fmt §12.1, §19.3):
 * after a commit, nothing durable points there.  First an entry (the first
 * under a new LogGuid) whose
 * FlushedFileOffset and LastFileOffset hold the new size is written and
 * flushed (a BAT sector rewritten as it is), then the file is cut.  A crash
 * in between leaves a longer file than the entry says, which is allowed.
 * Only with every BAT sector committed: the entry must not carry changes
 * whose data was not flushed.
 */
static int release_tail(struct vhdx_image *img, uint8_t *buf)
{
	uint64_t end = vhdx_freemap_tail(img), old_end;
	uint64_t off0 = img->bat_offset;
	uint8_t sec0[VHDX_LOG_SECTOR_SIZE];
	const uint8_t *data0 = sec0;
	int ret;

	if (end >= img->alloc_end || img->n_dirty || img->trimming ||
	    end < VHDX_HEADER_SECTION_SIZE)
		return 0;
	old_end = img->alloc_end;
	img->trimming = true;
	/*
	 * Under a fresh LogGuid: QEMU replays every entry of the chain, not
	 * only from the head's Tail, and refuses the file if any of them has
	 * a FlushedFileOffset beyond its end.  The older entries, written
	 * for the longer file, must stop being valid first.
	 */
	img->log_active = false;
	img->alloc_end = end;
	if (img->flushed_size > end)
		img->flushed_size = end;
	bat_sector_image(img, 0, sec0);
	ret = commit_entry(img, &off0, &data0, 1, buf);
	img->trimming = false;
	if (ret < 0) {
		vhdx_set_broken(img, ret, "log write");
		return ret;
	}
	if (img->file_size > end) {
		/*
		 * On failure the file only stays longer, which the log allows;
		 * but its old bytes stay too, so the places keep being free
		 * places (zeroed when reused), not space past alloc_end that
		 * new blocks take as reading zeros.
		 */
		ret = img->io.truncate(img->io.opaque, end);
		if (ret < 0) {
			img->alloc_end = old_end;
			return ret;
		}
		__atomic_store_n(&img->file_size, end, __ATOMIC_RELEASE);
	}
	vhdx_freemap_cut(img, end);
	if (img->eff_size > end)
		img->eff_size = end;
	return 0;
}

int vhdx_journal_sectors(struct vhdx_image *img, const uint64_t *off,
			 const uint8_t *const *data, uint32_t n)
{
	uint8_t *buf;
	int ret;

	if (img->broken)
		return img->broken;
	if (!n)
		return 0;
	if (entry_fits(img, n) < 0)
		return -ENOSPC;
	buf = malloc((desc_sectors(n) + n) * VHDX_LOG_SECTOR_SIZE);
	if (!buf)
		return -ENOMEM;
	ret = commit_entry(img, off, data, n, buf);
	if (ret < 0)
		vhdx_set_broken(img, ret, "log write");
	free(buf);
	return ret;
}

int vhdx_journal_commit(struct vhdx_image *img)
{
	uint64_t sectors[JOURNAL_MAX_DESC], offs[JOURNAL_MAX_DESC];
	const uint8_t *data[JOURNAL_MAX_DESC];
	uint64_t n_sectors =
	    (img->bat_length + VHDX_LOG_SECTOR_SIZE - 1) / VHDX_LOG_SECTOR_SIZE;
	/* places freed before this commit: free once it is durable */
	size_t n_pend = vhdx_freemap_commit_begin(img);
	uint8_t *buf, *images;
	int ret = 0;

	if (img->broken)
		return img->broken;
	if (!img->n_dirty && !n_pend &&
	    vhdx_freemap_tail(img) >= img->alloc_end)
		return 0;
	buf = malloc((JOURNAL_MAX_DESC + 1) * VHDX_LOG_SECTOR_SIZE);
	images = malloc(JOURNAL_MAX_DESC * VHDX_LOG_SECTOR_SIZE);
	if (!buf || !images) {
		free(buf);
		free(images);
		return -ENOMEM;
	}
	for (uint64_t s = 0; s < n_sectors && img->n_dirty;) {
		uint32_t n = 0;

		for (; s < n_sectors && n < JOURNAL_MAX_DESC; s++) {
			if (!img->dirty[s])
				continue;
			sectors[n] = s;
			offs[n] = img->bat_offset + s * VHDX_LOG_SECTOR_SIZE;
			data[n] = images + (size_t)n * VHDX_LOG_SECTOR_SIZE;
			bat_sector_image(
			    img, s, images + (size_t)n * VHDX_LOG_SECTOR_SIZE);
			n++;
		}
		if (!n)
			continue;
		ret = commit_entry(img, offs, data, n, buf);
		if (ret < 0) {
			vhdx_set_broken(img, ret, "log write");
			break;
		}
		for (uint32_t k = 0; k < n; k++)
			img->dirty[sectors[k]] = 0;
		img->n_dirty -= n;
	}
	if (ret == 0) {
		vhdx_freemap_durable(img, n_pend);
		ret = release_tail(img, buf);
	}
	free(images);
	free(buf);
	return ret;
}

int vhdx_journal_close(struct vhdx_image *img)
{
	static const uint8_t zero[16];
	int ret;

	if (!img->log_active || img->broken)
		return img->broken;
	ret = flush_applied(img);
	if (ret < 0) {
		vhdx_set_broken(img, ret, "flush");
		return ret;
	}
	ret = vhdx_header_update(img, zero, false);
	if (ret < 0)
		return ret;
	img->log_active = false;
	return 0;
}

/*
 * Close the log of an image that turned read-only because a log or BAT
 * write failed (a full disk, typically).  Every entry written before the
 * failure was applied; once that is flushed nothing needs replay, so the
 * LogGuid can be cleared and the image left clean.  The BAT updates that
 * never reached the log belong to writes whose flush failed: losing them is
 * within the contract.  Not after a failed fdatasync: then the applied
 * sectors may be lost, and the log must stay for the next open to replay.
 */
int vhdx_journal_salvage(struct vhdx_image *img)
{
	static const uint8_t zero[16];
	int broken = img->broken;
	int ret;

	if (!img->log_active || img->flush_failed)
		return broken;
	ret = img->io.flush(img->io.opaque);
	if (ret < 0)
		return broken;
	img->apply_unflushed = false;
	img->broken = 0; /* let the header update run once more */
	ret = vhdx_header_update(img, zero, false);
	img->broken = broken;
	if (ret < 0)
		return broken;
	img->log_active = false;
	vhdx_warn(img, "the log was closed cleanly after the error; writes "
		       "not flushed before it are lost");
	return broken;
}
