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
		struct vhdx_region_entry e;
		struct vhdx_region_desc *r = &d->regions[i];

		vhdx_region_entry_get(t, i, &e);
		guid_text(e.guid, r->guid);
		r->name = region_name(e.guid);
		r->offset = e.offset;
		r->length = e.length;
		r->required = e.required;
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
	if (ret == 0) {
		guid_text(pl + VHDX_PL_TYPE, d->locator_type);
		/* the open's decoder: what it refuses is shown as malformed */
		ret = vhdx_locator_decode(img, pl, m->length, &d->locator,
					  &d->n_locator);
		d->locator_ok = ret == 0;
		if (ret == -EUCLEAN)
			ret = 0;
	}
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

static int describe_log(struct vhdx_image *img, struct vhdx_description *d)
{
	struct vhdx_log_desc *l = &d->log;

	l->offset = img->log_offset;
	l->length = img->log_length;
	guid_text(img->log_guid, l->guid);
	l->dirty = !vhdx_guid_is_zero(img->log_guid);
	l->replayed = img->log_replayed;
	l->sectors_to_replay = img->ov_count;
	/* the scan of the open, with the same checks (log.c) */
	return vhdx_log_scan(img, l);
}

/* ---- BAT ---- */

static void describe_bat(struct vhdx_image *img, struct vhdx_description *d)
{
	uint64_t n = vhdx_bat_alloc_entries(&img->g);
	uint64_t step = img->g.chunk_ratio + 1;

	d->bat_offset = img->bat_offset;
	d->bat_length = img->bat_length;
	if (n > img->bat_entries)
		n = img->bat_entries;
	pthread_rwlock_rdlock(&img->lock);
	for (uint64_t i = img->g.chunk_ratio; i < n; i += step) {
		if ((img->bat[i] & VHDX_BAT_STATE_MASK) ==
		    VHDX_SB_BLOCK_PRESENT)
			d->bitmap_present++;
		else
			d->bitmap_not_present++;
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
	vhdx_locator_free(d->locator, d->n_locator);
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
