/*
 * inspect.c - a detailed description of an open image for tools: both
 * headers, both region tables, the metadata table and parent locator, the
 * log's entries and active sequence, BAT counts; and the allocation map.
 *
 * Structures are read again through vhdx_file_read, so a read-only open of
 * an image with a dirty log is described as the replay would leave it, and
 * nothing here ever writes.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "vhdx_inspect.h"

static void guid_text(const uint8_t *g, char out[VHDX_GUID_TEXT_LEN])
{
	vhdx_guid_to_str(g, out);
}

static void describe_headers(const struct vhdx_image *img,
			     struct vhdx_description *d)
{
	static const uint64_t offs[2] = {VHDX_HEADER1_OFFSET,
					 VHDX_HEADER2_OFFSET};

	for (int i = 0; i < 2; i++) {
		const uint8_t *h = img->hdr[i];
		struct vhdx_header_desc *o = &d->header[i];

		o->offset = offs[i];
		o->valid = img->hdr_valid[i];
		o->current = img->cur == i;
		o->checksum = le32_get(h + VHDX_HDR_CHECKSUM);
		o->seq = le64_get(h + VHDX_HDR_SEQ);
		guid_text(h + VHDX_HDR_FILE_WRITE_GUID, o->file_write_guid);
		guid_text(h + VHDX_HDR_DATA_WRITE_GUID, o->data_write_guid);
		guid_text(h + VHDX_HDR_LOG_GUID, o->log_guid);
		o->log_version = le16_get(h + VHDX_HDR_LOG_VERSION);
		o->version = le16_get(h + VHDX_HDR_VERSION);
		o->log_length = le32_get(h + VHDX_HDR_LOG_LENGTH);
		o->log_offset = le64_get(h + VHDX_HDR_LOG_OFFSET);
	}
}

/* ---- region tables ---- */

bool vhdx_region_table_ok(const uint8_t *t)
{
	return !memcmp(t, VHDX_REGION_SIG, 4) &&
	       le32_get(t + VHDX_RT_CHECKSUM) ==
		   vhdx_crc32c_skip(t, VHDX_REGION_TABLE_SIZE,
				    VHDX_RT_CHECKSUM) &&
	       le32_get(t + VHDX_RT_ENTRY_COUNT) <= VHDX_RT_MAX_ENTRIES;
}

int vhdx_region_tables_read(struct vhdx_image *img, uint8_t *buf, bool valid[2])
{
	static const uint64_t offs[2] = {VHDX_REGION1_OFFSET,
					 VHDX_REGION2_OFFSET};
	int ret;

	for (int i = 0; i < 2; i++) {
		uint8_t *t = buf + (size_t)i * VHDX_REGION_TABLE_SIZE;

		ret = vhdx_file_read(img, t, VHDX_REGION_TABLE_SIZE, offs[i]);
		if (ret < 0)
			return ret;
		valid[i] = vhdx_region_table_ok(t);
	}
	return 0;
}

static const char *region_name(const uint8_t *guid)
{
	static const uint8_t bat[16] = VHDX_GUID_BAT_REGION;
	static const uint8_t meta[16] = VHDX_GUID_METADATA_REGION;

	if (!memcmp(guid, bat, 16))
		return "bat";
	if (!memcmp(guid, meta, 16))
		return "metadata";
	return NULL;
}

static int describe_regions(struct vhdx_image *img, struct vhdx_description *d)
{
	uint8_t *buf = malloc(2 * VHDX_REGION_TABLE_SIZE);
	const uint8_t *t;
	uint32_t count;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vhdx_region_tables_read(img, buf, d->region_valid);
	if (ret < 0)
		goto out;
	d->region_copy = img->region_copy;
	d->regions_identical =
	    !memcmp(buf, buf + VHDX_REGION_TABLE_SIZE, VHDX_REGION_TABLE_SIZE);
	t = buf + (size_t)(img->region_copy - 1) * VHDX_REGION_TABLE_SIZE;
	count = le32_get(t + VHDX_RT_ENTRY_COUNT);
	d->regions = calloc(count ? count : 1, sizeof(*d->regions));
	if (!d->regions) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e =
		    t + VHDX_RT_HEADER_SIZE + (size_t)i * VHDX_RT_ENTRY_SIZE;
		struct vhdx_region_desc *r = &d->regions[i];

		guid_text(e + VHDX_RTE_GUID, r->guid);
		r->name = region_name(e + VHDX_RTE_GUID);
		r->offset = le64_get(e + VHDX_RTE_FILE_OFFSET);
		r->length = le32_get(e + VHDX_RTE_LENGTH);
		r->required = le32_get(e + VHDX_RTE_REQUIRED);
	}
	d->n_regions = count;
out:
	free(buf);
	return ret;
}

/* ---- metadata table and parent locator ---- */

static const struct {
	uint8_t guid[16];
	const char *name;
} meta_names[] = {
    {VHDX_GUID_FILE_PARAMETERS, "file_parameters"},
    {VHDX_GUID_VIRTUAL_DISK_SIZE, "virtual_disk_size"},
    {VHDX_GUID_VIRTUAL_DISK_ID, "virtual_disk_id"},
    {VHDX_GUID_LOGICAL_SECTOR_SIZE, "logical_sector_size"},
    {VHDX_GUID_PHYSICAL_SECTOR_SIZE, "physical_sector_size"},
    {VHDX_GUID_PARENT_LOCATOR, "parent_locator"},
};

static const char *meta_name(const uint8_t *guid, uint32_t flags)
{
	if (flags & VHDX_MT_FLAG_IS_USER)
		return NULL;
	for (size_t i = 0; i < sizeof(meta_names) / sizeof(meta_names[0]); i++)
		if (!memcmp(guid, meta_names[i].guid, 16))
			return meta_names[i].name;
	return NULL;
}

/*
 * UTF-16LE (len bytes, even) to a new NUL-terminated UTF-8 string; unpaired
 * surrogates and NULs become '?'.  NULL if out of memory.
 */
static char *utf16_to_utf8(const uint8_t *s, size_t len)
{
	char *out = malloc(len / 2 * 3 + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i + 1 < len; i += 2) {
		uint32_t c = le16_get(s + i);

		if (c >= 0xD800 && c < 0xDC00 && i + 3 < len &&
		    le16_get(s + i + 2) >= 0xDC00 &&
		    le16_get(s + i + 2) < 0xE000) {
			c = 0x10000 + ((c - 0xD800) << 10) +
			    (le16_get(s + i + 2) - 0xDC00);
			i += 2;
		} else if ((c >= 0xD800 && c < 0xE000) || c == 0) {
			c = '?';
		}
		if (c < 0x80) {
			out[o++] = (char)c;
		} else if (c < 0x800) {
			out[o++] = (char)(0xC0 | (c >> 6));
			out[o++] = (char)(0x80 | (c & 0x3F));
		} else if (c < 0x10000) {
			out[o++] = (char)(0xE0 | (c >> 12));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
			out[o++] = (char)(0x80 | (c & 0x3F));
		} else {
			out[o++] = (char)(0xF0 | (c >> 18));
			out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
			out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
			out[o++] = (char)(0x80 | (c & 0x3F));
		}
	}
	out[o] = '\0';
	return out;
}

/* A key or value of the locator: in bounds, non-empty, even length. */
static bool locator_span_ok(uint32_t off, uint16_t len, uint32_t item_len)
{
	return off >= VHDX_PL_HEADER_SIZE && len > 0 && len % 2 == 0 &&
	       (uint64_t)off + len <= item_len;
}

/* Decode the key/value table (d->locator_ok: well formed); 0 or -ENOMEM. */
static int parse_locator(struct vhdx_description *d, const uint8_t *pl,
			 uint32_t len)
{
	uint16_t n;

	if (len < VHDX_PL_HEADER_SIZE)
		return 0;
	guid_text(pl + VHDX_PL_TYPE, d->locator_type);
	n = le16_get(pl + VHDX_PL_KEY_VALUE_COUNT);
	if (VHDX_PL_HEADER_SIZE + (uint64_t)n * VHDX_PL_ENTRY_SIZE > len)
		return 0;
	d->locator = calloc(n ? n : 1, sizeof(*d->locator));
	if (!d->locator)
		return -ENOMEM;
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *e =
		    pl + VHDX_PL_HEADER_SIZE + (size_t)i * VHDX_PL_ENTRY_SIZE;
		uint32_t ko = le32_get(e), vo = le32_get(e + 4);
		uint16_t kl = le16_get(e + 8), vl = le16_get(e + 10);
		struct vhdx_kv *kv = &d->locator[i];

		if (!locator_span_ok(ko, kl, len) ||
		    !locator_span_ok(vo, vl, len))
			return 0;
		kv->key = utf16_to_utf8(pl + ko, kl);
		kv->value = utf16_to_utf8(pl + vo, vl);
		d->n_locator = i + 1u;
		if (!kv->key || !kv->value)
			return -ENOMEM;
	}
	d->locator_ok = true;
	return 0;
}

static int describe_locator(struct vhdx_image *img, struct vhdx_description *d,
			    const struct vhdx_meta_desc *m)
{
	uint8_t *pl;
	int ret;

	d->has_locator = true;
	if (m->length < VHDX_PL_HEADER_SIZE ||
	    (uint64_t)m->offset + m->length > img->meta_length)
		return 0;
	pl = malloc(m->length);
	if (!pl)
		return -ENOMEM;
	ret = vhdx_file_read(img, pl, m->length, img->meta_offset + m->offset);
	if (ret == 0)
		ret = parse_locator(d, pl, m->length);
	free(pl);
	return ret;
}

static int describe_metadata(struct vhdx_image *img, struct vhdx_description *d)
{
	uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
	uint16_t count;
	int ret;

	if (!t)
		return -ENOMEM;
	d->metadata_offset = img->meta_offset;
	d->metadata_length = img->meta_length;
	ret =
	    vhdx_file_read(img, t, VHDX_METADATA_TABLE_SIZE, img->meta_offset);
	if (ret < 0)
		goto out;
	count = le16_get(t + VHDX_MT_ENTRY_COUNT);
	if (count > VHDX_MT_MAX_ENTRIES)
		count = VHDX_MT_MAX_ENTRIES; /* cannot happen after open */
	d->meta = calloc(count ? count : 1, sizeof(*d->meta));
	if (!d->meta) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint16_t i = 0; i < count && ret == 0; i++) {
		const uint8_t *e =
		    t + VHDX_MT_HEADER_SIZE + (size_t)i * VHDX_MT_ENTRY_SIZE;
		struct vhdx_meta_desc *m = &d->meta[i];

		guid_text(e + VHDX_MTE_ITEM_ID, m->guid);
		m->offset = le32_get(e + VHDX_MTE_OFFSET);
		m->length = le32_get(e + VHDX_MTE_LENGTH);
		m->flags = le32_get(e + VHDX_MTE_FLAGS);
		m->name = meta_name(e + VHDX_MTE_ITEM_ID, m->flags);
		d->n_meta = i + 1u;
		if (m->name && !strcmp(m->name, "parent_locator") &&
		    !d->has_locator)
			ret = describe_locator(img, d, m);
	}
out:
	free(t);
	return ret;
}

/* ---- the log ---- */

struct log_scan {
	const uint8_t *buf;
	uint32_t len;
	const uint8_t *guid;
};

/* CRC of the entry at pos (length len), wrapping around the ring. */
static uint32_t log_entry_crc(const struct log_scan *s, uint32_t pos,
			      uint32_t len)
{
	static const uint8_t zero[4];
	const uint8_t *h = s->buf + pos;
	uint32_t crc = vhdx_crc32c_update(0xFFFFFFFFu, h, VHDX_LE_CHECKSUM);

	crc = vhdx_crc32c_update(crc, zero, 4);
	crc = vhdx_crc32c_update(crc, h + 8, VHDX_LOG_SECTOR_SIZE - 8);
	for (uint32_t o = VHDX_LOG_SECTOR_SIZE; o < len;
	     o += VHDX_LOG_SECTOR_SIZE)
		crc = vhdx_crc32c_update(crc, s->buf + (pos + o) % s->len,
					 VHDX_LOG_SECTOR_SIZE);
	return ~crc;
}

/* The entry at pos, if its header is sane and its checksum matches. */
static bool log_entry_at(const struct log_scan *s, uint32_t pos,
			 struct vhdx_log_entry_desc *e)
{
	const uint8_t *h = s->buf + pos;
	uint64_t desc_sectors;

	if (memcmp(h, VHDX_LOG_ENTRY_SIG, 4) != 0 ||
	    memcmp(h + VHDX_LE_LOG_GUID, s->guid, 16) != 0)
		return false;
	*e = (struct vhdx_log_entry_desc){
	    .offset = pos,
	    .length = le32_get(h + VHDX_LE_ENTRY_LENGTH),
	    .tail = le32_get(h + VHDX_LE_TAIL),
	    .seq = le64_get(h + VHDX_LE_SEQ),
	    .descriptors = le32_get(h + VHDX_LE_DESC_COUNT),
	};
	desc_sectors = ((uint64_t)e->descriptors + 2 + 127) / 128;
	if (e->length == 0 || e->length % VHDX_LOG_SECTOR_SIZE ||
	    e->length > s->len || e->tail % VHDX_LOG_SECTOR_SIZE ||
	    e->tail >= s->len || e->seq == 0 ||
	    desc_sectors * VHDX_LOG_SECTOR_SIZE > e->length)
		return false;
	return log_entry_crc(s, pos, e->length) ==
	       le32_get(h + VHDX_LE_CHECKSUM);
}

static int log_push(struct vhdx_log_desc *l, size_t *cap,
		    const struct vhdx_log_entry_desc *e)
{
	if (l->n_entries == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct vhdx_log_entry_desc *v =
		    realloc(l->entries, ncap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->entries = v;
		*cap = ncap;
	}
	l->entries[l->n_entries++] = *e;
	return 0;
}

/* Index of the entry starting at pos, or -1 (entries sorted by offset). */
static long log_find(const struct vhdx_log_desc *l, uint32_t pos)
{
	size_t lo = 0, hi = l->n_entries;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->entries[mid].offset < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n_entries && l->entries[lo].offset == pos ? (long)lo
								 : -1;
}

/*
 * Follow the run of consecutive entries from index i (fmt §12.4); returns
 * its length in entries and marks them in seen[].
 */
static size_t log_run(const struct vhdx_log_desc *l, uint32_t len, size_t i,
		      size_t *run, bool *seen)
{
	uint64_t total = 0;
	size_t n = 0;
	long k = (long)i;

	while (k >= 0) {
		const struct vhdx_log_entry_desc *e = &l->entries[k];

		if (n && e->seq != l->entries[run[n - 1]].seq + 1)
			break;
		if (total + e->length > len)
			break;
		run[n++] = (size_t)k;
		seen[k] = true;
		total += e->length;
		k = log_find(l, (uint32_t)((e->offset + e->length) % len));
	}
	return n;
}

/* Pick the active sequence: the complete run with the highest head. */
static int log_active(struct vhdx_log_desc *l, uint32_t len)
{
	size_t *run = malloc(l->n_entries * sizeof(*run));
	size_t *best = malloc(l->n_entries * sizeof(*best));
	bool *seen = calloc(l->n_entries, 1);
	size_t n_best = 0;
	int ret = -ENOMEM;

	if (!run || !best || !seen)
		goto out;
	for (size_t i = 0; i < l->n_entries; i++) {
		size_t n, t;

		if (seen[i])
			continue; /* inside an earlier run: same head */
		n = log_run(l, len, i, run, seen);
		for (t = 0; t < n; t++)
			if (l->entries[run[t]].offset ==
			    l->entries[run[n - 1]].tail)
				break;
		if (t == n || (l->has_active && l->entries[run[n - 1]].seq <=
						    l->active_last_seq))
			continue;
		n_best = n - t;
		memcpy(best, run + t, n_best * sizeof(*best));
		l->has_active = true;
		l->active_first_seq = l->entries[run[t]].seq;
		l->active_last_seq = l->entries[run[n - 1]].seq;
	}
	l->active_entries = n_best;
	for (size_t k = 0; k < n_best; k++)
		l->entries[best[k]].active = true;
	ret = 0;
out:
	free(run);
	free(best);
	free(seen);
	return ret;
}

static int describe_log(struct vhdx_image *img, struct vhdx_description *d)
{
	struct vhdx_log_desc *l = &d->log;
	struct log_scan s = {.len = img->log_length, .guid = img->log_guid};
	struct vhdx_log_entry_desc e;
	uint8_t *buf;
	size_t cap = 0;
	int ret;

	l->offset = img->log_offset;
	l->length = img->log_length;
	guid_text(img->log_guid, l->guid);
	l->dirty = !vhdx_guid_is_zero(img->log_guid);
	l->replayed = img->log_replayed;
	l->sectors_to_replay = img->ov_count;
	if (!l->dirty || !img->log_length)
		return 0;
	buf = malloc(img->log_length);
	if (!buf)
		return -ENOMEM;
	ret = vhdx_file_read(img, buf, img->log_length, img->log_offset);
	s.buf = buf;
	for (uint32_t pos = 0; ret == 0 && pos < s.len;) {
		if (!log_entry_at(&s, pos, &e)) {
			pos += VHDX_LOG_SECTOR_SIZE;
			continue;
		}
		ret = log_push(l, &cap, &e);
		pos += e.length < s.len - pos ? e.length : s.len - pos;
	}
	if (ret == 0 && l->n_entries)
		ret = log_active(l, s.len);
	free(buf);
	return ret;
}

/* ---- BAT ---- */

static void describe_bat(struct vhdx_image *img, struct vhdx_description *d)
{
	uint64_t n = vhdx_bat_alloc_entries(&img->g);

	d->bat_offset = img->bat_offset;
	d->bat_length = img->bat_length;
	if (n > img->bat_entries)
		n = img->bat_entries;
	pthread_rwlock_rdlock(&img->lock);
	for (uint64_t i = 0; i < n; i++) {
		unsigned int state = img->bat[i] & VHDX_BAT_STATE_MASK;
		uint64_t pb = vhdx_bat_entry_block(&img->g, i);

		if (vhdx_bat_is_bitmap_slot(&img->g, i)) {
			if (state == VHDX_SB_BLOCK_PRESENT) {
				d->bitmap_present++;
				d->bitmap_bytes +=
				    VHDX_SECTOR_BITMAP_BLOCK_SIZE;
			} else {
				d->bitmap_not_present++;
			}
		} else if (pb < img->g.payload_blocks &&
			   (state == VHDX_BLOCK_FULLY_PRESENT ||
			    state == VHDX_BLOCK_PARTIALLY_PRESENT)) {
			d->payload_bytes += img->g.block_size;
		}
	}
	pthread_rwlock_unlock(&img->lock);
}

int vhdx_describe(struct vhdx_image *img, struct vhdx_description **out)
{
	struct vhdx_description *d;
	int ret;

	*out = NULL;
	/* a BAT read on demand is read whole: describe_bat counts it all */
	ret = vhdx_bat_load_all(img);
	if (ret < 0)
		return ret;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	vhdx_get_info(img, &d->info);
	guid_text(img->disk_id, d->disk_id);
	d->file_parameter_flags = img->fp_flags;
	describe_headers(img, d);
	describe_bat(img, d);
	ret = describe_regions(img, d);
	if (ret == 0)
		ret = describe_metadata(img, d);
	if (ret == 0)
		ret = describe_log(img, d);
	if (ret < 0) {
		vhdx_describe_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

void vhdx_describe_free(struct vhdx_description *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_locator; i++) {
		free(d->locator[i].key);
		free(d->locator[i].value);
	}
	free(d->locator);
	free(d->regions);
	free(d->meta);
	free(d->log.entries);
	free(d);
}

/* ---- allocation map ---- */

int vhdx_block_status(struct vhdx_image *img, uint64_t off, uint64_t *len)
{
	struct vhdx_extent_info x;
	int ret = vhdx_query(img, off, *len, &x);

	if (ret < 0)
		return ret;
	*len = x.length;
	return x.source == VHDX_SOURCE_FILE;
}
