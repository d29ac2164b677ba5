/*
 * region.c - the region table (fmt §5): choosing the copy, validating the
 * entries, locating the BAT and metadata regions, and the registry of file
 * extents used for every overlap check.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static const uint8_t guid_bat[16] = VHDX_GUID_BAT_REGION;
static const uint8_t guid_meta[16] = VHDX_GUID_METADATA_REGION;

void vhdx_region_entry_get(const uint8_t *t, uint32_t i,
			   struct vhdx_region_entry *e)
{
	const uint8_t *p =
	    t + VHDX_RT_HEADER_SIZE + (size_t)i * VHDX_RT_ENTRY_SIZE;

	memcpy(e->guid, p + VHDX_RTE_GUID, 16);
	e->offset = le64_get(p + VHDX_RTE_FILE_OFFSET);
	e->length = le32_get(p + VHDX_RTE_LENGTH);
	e->required = le32_get(p + VHDX_RTE_REQUIRED);
}

/* Why copy t is not a valid table (into why), or false if it is valid. */
static bool table_problem(const uint8_t *t, char *why, size_t n)
{
	uint32_t stored = le32_get(t + VHDX_RT_CHECKSUM);
	uint32_t crc =
	    vhdx_crc32c_skip(t, VHDX_REGION_TABLE_SIZE, VHDX_RT_CHECKSUM);
	uint32_t count = le32_get(t + VHDX_RT_ENTRY_COUNT);

	if (memcmp(t, VHDX_REGION_SIG, 4) != 0)
		snprintf(why, n, "bad signature");
	else if (stored != crc)
		snprintf(why, n,
			 "checksum mismatch (stored 0x%08x, computed 0x%08x)",
			 stored, crc);
	else if (count > VHDX_RT_MAX_ENTRIES)
		snprintf(why, n, "%u entries (at most %u)", count,
			 VHDX_RT_MAX_ENTRIES);
	else
		return false;
	return true;
}

bool vhdx_region_table_ok(const uint8_t *t)
{
	char why[80];

	return !table_problem(t, why, sizeof(why));
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

static bool table_valid(struct vhdx_image *img, const uint8_t *t, int copy)
{
	char why[80];

	if (!table_problem(t, why, sizeof(why)))
		return true;
	vhdx_warn(img, "region table %d: %s", copy, why);
	return false;
}

/* Validate one entry and record what it locates. */
static int region_entry(struct vhdx_image *img, const uint8_t *t,
			unsigned int idx, bool *seen_bat, bool *seen_meta)
{
	char gs[VHDX_GUID_STR_LEN];
	struct vhdx_region_entry re;
	uint64_t off;
	uint32_t len, req;
	bool is_bat, is_meta;
	const char *what;

	vhdx_region_entry_get(t, idx, &re);
	off = re.offset;
	len = re.length;
	req = re.required;
	is_bat = !memcmp(re.guid, guid_bat, 16);
	is_meta = !memcmp(re.guid, guid_meta, 16);
	what = is_bat	 ? "BAT region"
	       : is_meta ? "metadata region"
			 : "unknown region";

	vhdx_guid_to_str(re.guid, gs);
	if (!is_bat && !is_meta && (req & 1)) {
		vhdx_err(img,
			 "region table: unknown region {%s} is marked "
			 "required; refusing to open",
			 gs);
		return -EOPNOTSUPP;
	}
	if ((is_bat && *seen_bat) || (is_meta && *seen_meta)) {
		vhdx_err(img, "region table: duplicate %s entry", what);
		return -EUCLEAN;
	}
	if (off % VHDX_ALIGN || off < VHDX_ALIGN || len == 0 ||
	    len % VHDX_ALIGN || off > VHDX_MAX_OFF - len) {
		vhdx_err(img,
			 "region table: entry %u ({%s}, %s) has offset 0x%llx "
			 "length 0x%x: not non-empty and 1 MiB aligned",
			 idx, gs, what, (unsigned long long)off, len);
		return -EUCLEAN;
	}
	if (off + len > img->file_size) {
		vhdx_err(img,
			 "region table: %s at 0x%llx (0x%x bytes) extends past "
			 "the end of the file (%llu bytes): truncated image?",
			 what, (unsigned long long)off, len,
			 (unsigned long long)img->file_size);
		return -EUCLEAN;
	}
	if (is_bat) {
		*seen_bat = true;
		img->bat_offset = off;
		img->bat_length = len;
	} else if (is_meta) {
		*seen_meta = true;
		img->meta_offset = off;
		img->meta_length = len;
	}
	return vhdx_extent_add(img, off, len, what);
}

static int parse_table(struct vhdx_image *img, const uint8_t *t)
{
	uint32_t count = le32_get(t + VHDX_RT_ENTRY_COUNT);
	bool seen_bat = false, seen_meta = false;
	int ret;

	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e =
		    t + VHDX_RT_HEADER_SIZE + (size_t)i * VHDX_RT_ENTRY_SIZE;

		for (uint32_t j = 0; j < i; j++) {
			const uint8_t *o = t + VHDX_RT_HEADER_SIZE +
					   (size_t)j * VHDX_RT_ENTRY_SIZE;
			if (!memcmp(e, o, 16)) {
				char gs[VHDX_GUID_STR_LEN];

				vhdx_guid_to_str(e, gs);
				vhdx_err(img,
					 "region table: region {%s} listed "
					 "twice",
					 gs);
				return -EUCLEAN;
			}
		}
		ret = region_entry(img, t, i, &seen_bat, &seen_meta);
		if (ret < 0)
			return ret;
	}
	if (!seen_bat || !seen_meta) {
		vhdx_err(img, "region table: no %s region entry",
			 !seen_bat ? "BAT" : "metadata");
		return -EUCLEAN;
	}
	return 0;
}

int vhdx_read_regions(struct vhdx_image *img)
{
	static const uint64_t offs[2] = {VHDX_REGION1_OFFSET,
					 VHDX_REGION2_OFFSET};
	uint8_t *t = malloc(VHDX_REGION_TABLE_SIZE);
	int ret = -EUCLEAN;

	if (!t)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		ret = vhdx_file_read(img, t, VHDX_REGION_TABLE_SIZE, offs[i]);
		if (ret < 0) {
			vhdx_err(img, "region table %d: read failed: %s", i + 1,
				 strerror(-ret));
			goto out;
		}
		if (table_valid(img, t, i + 1)) {
			img->region_copy = i + 1;
			if (i == 1)
				vhdx_warn(img, "region table 1 is damaged; "
					       "using region table 2");
			ret = parse_table(img, t);
			goto out;
		}
	}
	vhdx_err(img, "region table: neither copy is valid (signature, "
		      "checksum or entry count)");
	ret = -EUCLEAN;
out:
	free(t);
	return ret;
}
