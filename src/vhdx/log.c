/*
 * log.c - the metadata log (fmt §12): validating entries, finding the active
 * sequence and replaying it.  A read-only open replays into an in-memory
 * overlay of 4 KiB sectors that vhdx_file_read consults; the file itself is
 * never written.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "vhdx_inspect.h"

/* The log, read whole, and what the scan needs to know about it. */
struct log_ctx {
	struct vhdx_image *img;
	uint8_t *buf; /* LogLength bytes */
	uint32_t len; /* LogLength */
	const uint8_t *guid;
	uint64_t crc_budget; /* bytes the scan may still checksum */
};

/*
 * The scan checksums each candidate entry.  Real logs cost about one pass;
 * a crafted log of overlapping full-length entries would cost LogLength
 * squared, so the work is capped and such a log is refused.
 */
#define LOG_CRC_PASSES 16

/* Largest log this implementation reads (it is read whole). */
#define LOG_MAX_LENGTH (256 * MiB)

/* A validated entry. */
struct log_entry {
	uint32_t pos; /* log-relative offset */
	uint32_t length;
	uint32_t tail;
	uint64_t seq;
	uint32_t desc_count;
	uint32_t desc_sectors;
	uint64_t flushed_file_offset;
	uint64_t last_file_offset;
};

/* The 4 KiB log sector at log-relative offset pos (wrapping). */
static const uint8_t *log_sector(const struct log_ctx *c, uint64_t pos)
{
	return c->buf + (pos % c->len);
}

/* Descriptor i of the entry at pos (descriptors never straddle sectors). */
static const uint8_t *log_desc(const struct log_ctx *c, uint32_t pos,
			       uint64_t i)
{
	uint64_t byte = VHDX_LE_HEADER_SIZE + i * VHDX_LOG_DESC_SIZE;

	return log_sector(c, pos + byte / VHDX_LOG_SECTOR_SIZE *
				       VHDX_LOG_SECTOR_SIZE) +
	       byte % VHDX_LOG_SECTOR_SIZE;
}

static bool entry_header_ok(const struct log_ctx *c, uint32_t pos,
			    struct log_entry *e)
{
	const uint8_t *h = log_sector(c, pos);

	if (memcmp(h, VHDX_LOG_ENTRY_SIG, 4) != 0 ||
	    memcmp(h + VHDX_LE_LOG_GUID, c->guid, 16) != 0)
		return false;
	e->pos = pos;
	e->length = le32_get(h + VHDX_LE_ENTRY_LENGTH);
	e->tail = le32_get(h + VHDX_LE_TAIL);
	e->seq = le64_get(h + VHDX_LE_SEQ);
	e->desc_count = le32_get(h + VHDX_LE_DESC_COUNT);
	e->flushed_file_offset = le64_get(h + VHDX_LE_FLUSHED_FILE_OFFSET);
	e->last_file_offset = le64_get(h + VHDX_LE_LAST_FILE_OFFSET);
	if (e->length == 0 || e->length % VHDX_LOG_SECTOR_SIZE ||
	    e->length > c->len || e->tail % VHDX_LOG_SECTOR_SIZE ||
	    e->tail >= c->len || e->seq == 0)
		return false;
	/* u64: a huge DescriptorCount must not wrap (fmt §17 #3) */
	e->desc_sectors = (uint32_t)(((uint64_t)e->desc_count + 2 + 127) / 128);
	if ((uint64_t)e->desc_sectors * VHDX_LOG_SECTOR_SIZE > e->length)
		return false;
	return true;
}

/* Descriptors and data sectors; counts the data sectors. */
static bool entry_descs_ok(const struct log_ctx *c, const struct log_entry *e)
{
	uint64_t data = 0;

	for (uint64_t i = 0; i < e->desc_count; i++) {
		const uint8_t *d = log_desc(c, e->pos, i);
		uint64_t off = le64_get(d + VHDX_LD_FILE_OFFSET);
		bool is_data = !memcmp(d, VHDX_LOG_DESC_DATA_SIG, 4);
		uint64_t span = is_data ? VHDX_LOG_SECTOR_SIZE
					: le64_get(d + VHDX_LD_ZERO_LENGTH);

		if (!is_data && memcmp(d, VHDX_LOG_DESC_ZERO_SIG, 4) != 0)
			return false;
		if (le64_get(d + VHDX_LD_SEQ) != e->seq ||
		    off % VHDX_LOG_SECTOR_SIZE || span % VHDX_LOG_SECTOR_SIZE ||
		    off < VHDX_REGION1_OFFSET || off > VHDX_MAX_OFF - span)
			return false;
		/* the log never describes writes into itself */
		if (off < c->img->log_offset + c->len &&
		    c->img->log_offset < off + span)
			return false;
		if (!is_data)
			continue;
		if ((e->desc_sectors + data + 1) * VHDX_LOG_SECTOR_SIZE >
		    e->length)
			return false;
		const uint8_t *s =
		    log_sector(c, e->pos + (e->desc_sectors + data) *
					       VHDX_LOG_SECTOR_SIZE);
		uint64_t sseq = (uint64_t)le32_get(s + VHDX_LS_SEQ_HIGH) << 32 |
				le32_get(s + VHDX_LS_SEQ_LOW);

		if (memcmp(s, VHDX_LOG_DATA_SIG, 4) != 0 || sseq != e->seq)
			return false;
		data++;
	}
	return true;
}

static bool entry_crc_ok(struct log_ctx *c, const struct log_entry *e)
{
	const uint8_t *h = log_sector(c, e->pos);
	uint32_t crc = vhdx_crc32c_update(0xFFFFFFFFu, h, VHDX_LE_CHECKSUM);
	static const uint8_t zero[4];

	if (c->crc_budget < e->length) {
		c->crc_budget = 0;
		return false;
	}
	c->crc_budget -= e->length;
	crc = vhdx_crc32c_update(crc, zero, 4);
	crc = vhdx_crc32c_update(crc, h + 8, VHDX_LOG_SECTOR_SIZE - 8);
	for (uint32_t o = VHDX_LOG_SECTOR_SIZE; o < e->length;
	     o += VHDX_LOG_SECTOR_SIZE)
		crc = vhdx_crc32c_update(crc, log_sector(c, e->pos + o),
					 VHDX_LOG_SECTOR_SIZE);
	return ~crc == le32_get(h + VHDX_LE_CHECKSUM);
}

static bool entry_valid(struct log_ctx *c, uint32_t pos, struct log_entry *e)
{
	return entry_header_ok(c, pos, e) && entry_descs_ok(c, e) &&
	       entry_crc_ok(c, e);
}

/* The best complete sequence found by the scan (fmt §12.4). */
struct log_seq {
	struct log_entry *v;
	size_t n;
	size_t cap;
};

static int seq_push(struct log_seq *s, const struct log_entry *e)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		struct log_entry *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = *e;
	return 0;
}

/* Collect the run of valid, consecutive entries starting at pos. */
static int collect_run(struct log_ctx *c, uint32_t pos, struct log_seq *run)
{
	uint64_t total = 0;
	struct log_entry e;
	int ret;

	run->n = 0;
	while (entry_valid(c, pos, &e)) {
		if (run->n && e.seq != run->v[run->n - 1].seq + 1)
			break;
		if (total + e.length > c->len)
			break;
		ret = seq_push(run, &e);
		if (ret < 0)
			return ret;
		total += e.length;
		pos = (uint32_t)((pos + e.length) % c->len);
	}
	return 0;
}

/* Index in run of the entry the head's Tail names, or -1 (incomplete). */
static long run_tail_index(const struct log_seq *run)
{
	uint32_t tail = run->v[run->n - 1].tail;

	for (size_t i = 0; i < run->n; i++)
		if (run->v[i].pos == tail)
			return (long)i;
	return -1;
}

/*
 * Find the active sequence: the complete run whose head has the highest
 * sequence number.  *any_valid says whether any valid entry was seen; all,
 * if not NULL, receives every valid entry the scan met, in log order.
 */
static int find_active(struct log_ctx *c, struct log_seq *best, bool *any_valid,
		       struct log_seq *all)
{
	struct log_seq run = {0};
	uint64_t best_seq = 0;
	int ret = 0;

	*any_valid = false;
	for (uint64_t pos = 0; pos < c->len && ret == 0;) {
		ret = collect_run(c, (uint32_t)pos, &run);
		if (ret < 0)
			break;
		if (!run.n) {
			pos += VHDX_LOG_SECTOR_SIZE;
			continue;
		}
		*any_valid = true;
		long t = run_tail_index(&run);

		if (t >= 0 && run.v[run.n - 1].seq > best_seq) {
			best_seq = run.v[run.n - 1].seq;
			best->n = 0;
			for (size_t i = (size_t)t; i < run.n && ret == 0; i++)
				ret = seq_push(best, &run.v[i]);
		}
		/*
		 * A run starting inside this one is a suffix of it, with the
		 * same head: nothing better can start there.  Entries of a
		 * run that wrapped were met before, at their own place.
		 */
		for (size_t i = 0; i < run.n && ret == 0; i++) {
			if (all && pos < c->len)
				ret = seq_push(all, &run.v[i]);
			pos += run.v[i].length;
		}
	}
	free(run.v);
	if (ret == 0 && c->crc_budget == 0) {
		vhdx_err(c->img, "log: too many overlapping entry candidates "
				 "(scan limit reached); refusing the log");
		ret = -EUCLEAN;
	}
	return ret;
}

/* ---- the overlay ---- */

static int ov_add(struct vhdx_image *img, size_t *cap, uint64_t off,
		  const uint8_t *lead, const uint8_t *data,
		  const uint8_t *trail)
{
	struct vhdx_overlay_sector *s;
	uint8_t *copy = NULL;

	if (img->ov_count == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;

		s = realloc(img->ov, ncap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		img->ov = s;
		*cap = ncap;
	}
	if (data) {
		copy = malloc(VHDX_LOG_SECTOR_SIZE);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, lead, 8);
		memcpy(copy + 8, data, VHDX_LS_DATA_LEN);
		memcpy(copy + VHDX_LS_SEQ_LOW, trail, 4);
	}
	img->ov[img->ov_count++] =
	    (struct vhdx_overlay_sector){.offset = off, .data = copy};
	return 0;
}

/* Order by offset, later additions first, so the newest image wins. */
static int cmp_ov(const void *a, const void *b)
{
	const struct vhdx_overlay_sector *x = a, *y = b;

	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->rank > y->rank ? -1 : x->rank < y->rank;
}

/* The most zero-descriptor bytes a read-only replay keeps in memory. */
#define VHDX_OV_MAX_ZERO_BYTES (256 * MiB)

static int replay_entry(const struct log_ctx *c, const struct log_entry *e,
			size_t *cap, uint64_t *zero_bytes)
{
	struct vhdx_image *img = c->img;
	uint64_t data = 0;
	int ret;

	for (uint64_t i = 0; i < e->desc_count; i++) {
		const uint8_t *d = log_desc(c, e->pos, i);
		uint64_t off = le64_get(d + VHDX_LD_FILE_OFFSET);

		if (!memcmp(d, VHDX_LOG_DESC_ZERO_SIG, 4)) {
			uint64_t zl = le64_get(d + VHDX_LD_ZERO_LENGTH);

			*zero_bytes += zl;
			if (*zero_bytes > VHDX_OV_MAX_ZERO_BYTES) {
				vhdx_err(img, "log: zero descriptors cover "
					      "more than 256 MiB");
				return -EUCLEAN;
			}
			for (uint64_t z = 0; z < zl;
			     z += VHDX_LOG_SECTOR_SIZE) {
				ret =
				    ov_add(img, cap, off + z, NULL, NULL, NULL);
				if (ret < 0)
					return ret;
			}
			continue;
		}
		const uint8_t *s =
		    log_sector(c, e->pos + (e->desc_sectors + data++) *
					       VHDX_LOG_SECTOR_SIZE);

		ret = ov_add(img, cap, off, d + VHDX_LD_LEADING,
			     s + VHDX_LS_DATA, d + VHDX_LD_TRAILING);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Sort the overlay and drop every image but the newest of each sector. */
static void overlay_finish(struct vhdx_image *img)
{
	size_t w = 0;

	if (!img->ov_count)
		return;
	for (size_t i = 0; i < img->ov_count; i++)
		img->ov[i].rank = i;
	qsort(img->ov, img->ov_count, sizeof(*img->ov), cmp_ov);
	for (size_t i = 0; i < img->ov_count; i++) {
		if (w && img->ov[w - 1].offset == img->ov[i].offset) {
			free(img->ov[i].data);
			continue;
		}
		img->ov[w++] = img->ov[i];
	}
	img->ov_count = w;
}

static int build_overlay(const struct log_ctx *c, const struct log_seq *best)
{
	size_t cap = 0;
	uint64_t zero_bytes = 0;
	int ret;

	for (size_t i = 0; i < best->n; i++) {
		ret = replay_entry(c, &best->v[i], &cap, &zero_bytes);
		if (ret < 0)
			return ret;
	}
	overlay_finish(c->img);
	return 0;
}

static int log_read(struct vhdx_image *img, struct log_ctx *c)
{
	int ret;

	if (img->log_offset + img->log_length > img->file_size) {
		vhdx_err(img,
			 "log: 0x%llx+0x%x extends past the end of the file "
			 "(%llu bytes): truncated image?",
			 (unsigned long long)img->log_offset, img->log_length,
			 (unsigned long long)img->file_size);
		return -EUCLEAN;
	}
	if (img->log_length > LOG_MAX_LENGTH) {
		vhdx_err(img,
			 "log: %u bytes is larger than this implementation "
			 "reads (%llu MiB)",
			 img->log_length, LOG_MAX_LENGTH / MiB);
		return -EOPNOTSUPP;
	}
	c->img = img;
	c->len = img->log_length;
	c->guid = img->log_guid;
	c->crc_budget = (uint64_t)LOG_CRC_PASSES * c->len;
	c->buf = malloc(c->len);
	if (!c->buf)
		return -ENOMEM;
	ret = vhdx_file_read(img, c->buf, c->len, img->log_offset);
	if (ret < 0)
		vhdx_err(img, "log: read failed: %s", strerror(-ret));
	return ret;
}

/* What the active sequence's head says about the file size (fmt §12.5). */
static int check_head(struct vhdx_image *img, const struct log_entry *head)
{
	if (head->flushed_file_offset > img->file_size) {
		vhdx_err(img,
			 "log: the file is %llu bytes but the log says %llu "
			 "bytes were durable: truncated image",
			 (unsigned long long)img->file_size,
			 (unsigned long long)head->flushed_file_offset);
		return -EUCLEAN;
	}
	if (head->last_file_offset > VHDX_MAX_OFF) {
		vhdx_err(img, "log: last file offset 0x%llx is out of range",
			 (unsigned long long)head->last_file_offset);
		return -EUCLEAN;
	}
	if (head->last_file_offset > img->eff_size)
		img->eff_size = head->last_file_offset;
	return 0;
}

int vhdx_log_load(struct vhdx_image *img)
{
	struct log_ctx c = {0};
	struct log_seq best = {0};
	char gs[VHDX_GUID_STR_LEN];
	bool any_valid;
	int ret;

	if (vhdx_guid_is_zero(img->log_guid))
		return 0;
	vhdx_guid_to_str(img->log_guid, gs);
	ret = log_read(img, &c);
	if (ret < 0)
		goto out;
	ret = find_active(&c, &best, &any_valid, NULL);
	if (ret < 0)
		goto out;
	if (!best.n) {
		if (any_valid) {
			vhdx_err(img,
				 "log: entries for log GUID {%s} exist but "
				 "none forms a complete sequence",
				 gs);
			ret = -EUCLEAN;
			goto out;
		}
		/* a crash between setting LogGuid and the first entry */
		vhdx_warn(img,
			  "log: log GUID {%s} is set but the log holds no "
			  "valid entry; treating the log as empty",
			  gs);
		goto out;
	}
	ret = check_head(img, &best.v[best.n - 1]);
	if (ret < 0)
		goto out;
	ret = build_overlay(&c, &best);
	if (ret < 0)
		goto out;
	img->log_replayed = true;
	vhdx_info(img,
		  "log: active sequence of %zu entr%s (%llu..%llu), %zu "
		  "sectors to replay",
		  best.n, best.n == 1 ? "y" : "ies",
		  (unsigned long long)best.v[0].seq,
		  (unsigned long long)best.v[best.n - 1].seq, img->ov_count);
out:
	free(best.v);
	free(c.buf);
	return ret;
}

int vhdx_log_scan(struct vhdx_image *img, struct vhdx_log_desc *l)
{
	struct log_ctx c = {0};
	struct log_seq best = {0}, all = {0};
	bool any_valid;
	int ret;

	if (vhdx_guid_is_zero(img->log_guid) || !img->log_length)
		return 0;
	ret = log_read(img, &c);
	if (ret == 0)
		ret = find_active(&c, &best, &any_valid, &all);
	if (ret == 0 && all.n) {
		l->entries = calloc(all.n, sizeof(*l->entries));
		if (!l->entries)
			ret = -ENOMEM;
	}
	for (size_t i = 0; ret == 0 && i < all.n; i++) {
		const struct log_entry *e = &all.v[i];
		struct vhdx_log_entry_desc *d = &l->entries[i];

		*d = (struct vhdx_log_entry_desc){
		    .offset = e->pos,
		    .length = e->length,
		    .tail = e->tail,
		    .seq = e->seq,
		    .descriptors = e->desc_count,
		};
		for (size_t k = 0; k < best.n; k++)
			d->active |= best.v[k].pos == e->pos;
	}
	if (ret == 0) {
		l->n_entries = all.n;
		l->has_active = best.n > 0;
		l->active_entries = best.n;
		if (best.n) {
			l->active_first_seq = best.v[0].seq;
			l->active_last_seq = best.v[best.n - 1].seq;
		}
	}
	free(all.v);
	free(best.v);
	free(c.buf);
	return ret;
}

void vhdx_log_free(struct vhdx_image *img)
{
	for (size_t i = 0; i < img->ov_count; i++)
		free(img->ov[i].data);
	free(img->ov);
	img->ov = NULL;
	img->ov_count = 0;
}

int vhdx_log_replay_to_file(struct vhdx_image *img)
{
	static const uint8_t zero_guid[16];
	static const uint8_t zero[VHDX_LOG_SECTOR_SIZE];
	int ret;

	if (vhdx_guid_is_zero(img->log_guid))
		return 0;
	/* new FileWriteGuid before anything else is written (fmt §4.3) */
	ret = vhdx_header_update(img, NULL, false);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < img->ov_count; i++) {
		const struct vhdx_overlay_sector *s = &img->ov[i];

		ret = img->io.pwrite(img->io.opaque, s->data ? s->data : zero,
				     VHDX_LOG_SECTOR_SIZE, s->offset);
		if (ret < 0)
			goto fail;
	}
	if (img->eff_size > img->file_size) {
		ret = img->io.truncate(img->io.opaque, img->eff_size);
		if (ret < 0)
			goto fail;
		img->file_size = img->eff_size;
	}
	ret = img->io.flush(img->io.opaque);
	if (ret < 0)
		goto fail;
	if (img->ov_count)
		vhdx_info(img, "log: replayed %zu sectors into the file",
			  img->ov_count);
	vhdx_log_free(img);
	img->log_replayed = true;
	return vhdx_header_update(img, zero_guid, false);
fail:
	vhdx_err(img, "log: replay into the file failed: %s", strerror(-ret));
	return ret;
}
