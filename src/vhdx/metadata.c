/*
 * metadata.c - the metadata region (fmt §6): the 64 KiB table, the five
 * mandatory system items and the parent locator, with every range and value
 * checked before use.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

enum item_id {
	ITEM_FILE_PARAMETERS,
	ITEM_VIRTUAL_DISK_SIZE,
	ITEM_VIRTUAL_DISK_ID,
	ITEM_LOGICAL_SECTOR_SIZE,
	ITEM_PHYSICAL_SECTOR_SIZE,
	ITEM_PARENT_LOCATOR,
	ITEM_COUNT
};

static const struct known_item {
	uint8_t guid[16];
	const char *name;
	uint32_t min_len;
} known_items[ITEM_COUNT] = {
    [ITEM_FILE_PARAMETERS] = {VHDX_GUID_FILE_PARAMETERS, "file parameters", 8},
    [ITEM_VIRTUAL_DISK_SIZE] = {VHDX_GUID_VIRTUAL_DISK_SIZE,
				"virtual disk size", 8},
    [ITEM_VIRTUAL_DISK_ID] = {VHDX_GUID_VIRTUAL_DISK_ID, "virtual disk id", 16},
    [ITEM_LOGICAL_SECTOR_SIZE] = {VHDX_GUID_LOGICAL_SECTOR_SIZE,
				  "logical sector size", 4},
    [ITEM_PHYSICAL_SECTOR_SIZE] = {VHDX_GUID_PHYSICAL_SECTOR_SIZE,
				   "physical sector size", 4},
    [ITEM_PARENT_LOCATOR] = {VHDX_GUID_PARENT_LOCATOR, "parent locator",
			     VHDX_PL_HEADER_SIZE},
};

struct item_loc {
	bool present;
	uint32_t offset;
	uint32_t length;
};

static int lookup_known(const uint8_t *guid)
{
	for (int i = 0; i < ITEM_COUNT; i++)
		if (!memcmp(guid, known_items[i].guid, 16))
			return i;
	return -1;
}

/* Validate one table entry; record it if it is a known system item. */
static int check_entry(struct vhdx_image *img, const uint8_t *e,
		       unsigned int idx, struct item_loc *loc)
{
	char gs[VHDX_GUID_STR_LEN];
	uint32_t off = le32_get(e + VHDX_MTE_OFFSET);
	uint32_t len = le32_get(e + VHDX_MTE_LENGTH);
	uint32_t flags = le32_get(e + VHDX_MTE_FLAGS);
	bool user = flags & VHDX_MT_FLAG_IS_USER;
	int k = user ? -1 : lookup_known(e + VHDX_MTE_ITEM_ID);

	vhdx_guid_to_str(e + VHDX_MTE_ITEM_ID, gs);
	if (len > VHDX_MT_ITEM_MAX_LEN || (len == 0 && off != 0) ||
	    (len != 0 && (off < VHDX_METADATA_TABLE_SIZE ||
			  (uint64_t)off + len > img->meta_length))) {
		vhdx_err(img,
			 "metadata: item {%s} (entry %u) has offset 0x%x "
			 "length 0x%x outside the metadata region",
			 gs, idx, off, len);
		return -EUCLEAN;
	}
	if (k < 0) {
		if (flags & VHDX_MT_FLAG_IS_REQUIRED) {
			vhdx_err(img,
				 "metadata: unknown %s item {%s} is marked "
				 "required; refusing to open",
				 user ? "user" : "system", gs);
			return -EOPNOTSUPP;
		}
		return 0;
	}
	if (loc[k].present) {
		vhdx_err(img, "metadata: duplicate %s item",
			 known_items[k].name);
		return -EUCLEAN;
	}
	if (len < known_items[k].min_len) {
		vhdx_err(img, "metadata: %s item is %u bytes (needs %u)",
			 known_items[k].name, len, known_items[k].min_len);
		return -EUCLEAN;
	}
	loc[k] = (struct item_loc){true, off, len};
	return 0;
}

static int check_table(struct vhdx_image *img, const uint8_t *t,
		       struct item_loc *loc)
{
	uint16_t count = le16_get(t + VHDX_MT_ENTRY_COUNT);
	unsigned int users = 0;
	int ret;

	if (memcmp(t, VHDX_METADATA_SIG, 8) != 0) {
		vhdx_err(img, "metadata: table signature 'metadata' not found "
			      "at the start of the metadata region");
		return -EUCLEAN;
	}
	if (count > VHDX_MT_MAX_ENTRIES) {
		vhdx_err(img, "metadata: table has %u entries (at most %u)",
			 count, VHDX_MT_MAX_ENTRIES);
		return -EUCLEAN;
	}
	for (unsigned int i = 0; i < count; i++) {
		const uint8_t *e =
		    t + VHDX_MT_HEADER_SIZE + (size_t)i * VHDX_MT_ENTRY_SIZE;

		if (le32_get(e + VHDX_MTE_FLAGS) & VHDX_MT_FLAG_IS_USER)
			users++;
		for (unsigned int j = 0; j < i; j++) {
			const uint8_t *o = t + VHDX_MT_HEADER_SIZE +
					   (size_t)j * VHDX_MT_ENTRY_SIZE;
			if (!memcmp(e, o, 16) &&
			    ((le32_get(e + VHDX_MTE_FLAGS) ^
			      le32_get(o + VHDX_MTE_FLAGS)) &
			     VHDX_MT_FLAG_IS_USER) == 0) {
				vhdx_err(img,
					 "metadata: entries %u and %u "
					 "have the same item id",
					 j, i);
				return -EUCLEAN;
			}
		}
		ret = check_entry(img, e, i, loc);
		if (ret < 0)
			return ret;
	}
	if (users > VHDX_MT_MAX_USER_ENTRIES) {
		vhdx_err(img, "metadata: %u user items (at most %u)", users,
			 VHDX_MT_MAX_USER_ENTRIES);
		return -EUCLEAN;
	}
	return 0;
}

static int read_item(struct vhdx_image *img, const struct item_loc *l,
		     uint8_t *buf, size_t len)
{
	int ret = vhdx_file_read(img, buf, len, img->meta_offset + l->offset);

	if (ret < 0)
		vhdx_err(img, "metadata: read failed: %s", strerror(-ret));
	return ret;
}

/* Read the fixed-size items and derive the geometry. */
static int read_items(struct vhdx_image *img, const struct item_loc *loc)
{
	uint8_t fp[8], vs[8], lss[4], pss[4];
	uint32_t block_size;
	uint64_t vsize;
	int ret;

	for (int k = 0; k < ITEM_PARENT_LOCATOR; k++) {
		if (!loc[k].present) {
			vhdx_err(img, "metadata: required %s item is missing",
				 known_items[k].name);
			return -EUCLEAN;
		}
	}
	if ((ret = read_item(img, &loc[ITEM_FILE_PARAMETERS], fp, 8)) < 0 ||
	    (ret = read_item(img, &loc[ITEM_VIRTUAL_DISK_SIZE], vs, 8)) < 0 ||
	    (ret = read_item(img, &loc[ITEM_VIRTUAL_DISK_ID], img->disk_id,
			     16)) < 0 ||
	    (ret = read_item(img, &loc[ITEM_LOGICAL_SECTOR_SIZE], lss, 4)) <
		0 ||
	    (ret = read_item(img, &loc[ITEM_PHYSICAL_SECTOR_SIZE], pss, 4)) < 0)
		return ret;
	block_size = le32_get(fp + VHDX_FP_BLOCK_SIZE);
	img->fp_flags = le32_get(fp + VHDX_FP_FLAGS);
	vsize = le64_get(vs);
	img->physical_sector = le32_get(pss);
	if (img->fp_flags &
	    ~(VHDX_FP_LEAVE_BLOCKS_ALLOCATED | VHDX_FP_HAS_PARENT))
		vhdx_warn(img,
			  "metadata: file parameters have reserved flag "
			  "bits set (0x%x); ignored",
			  img->fp_flags);
	if (img->physical_sector != 512 && img->physical_sector != 4096) {
		vhdx_err(img,
			 "metadata: physical sector size %u is not 512 "
			 "or 4096",
			 img->physical_sector);
		return -EUCLEAN;
	}
	return vhdx_geom_init_report(img, vsize, block_size, le32_get(lss));
}

static int read_parent_locator(struct vhdx_image *img, const struct item_loc *l)
{
	if (!(img->fp_flags & VHDX_FP_HAS_PARENT))
		return 0;
	if (!l->present) {
		vhdx_err(img,
			 "metadata: differencing image (HasParent) without "
			 "a parent locator item");
		return -EUCLEAN;
	}
	img->parent_locator = malloc(l->length);
	if (!img->parent_locator)
		return -ENOMEM;
	img->parent_locator_len = l->length;
	return read_item(img, l, img->parent_locator, l->length);
}

int vhdx_read_metadata(struct vhdx_image *img)
{
	struct item_loc loc[ITEM_COUNT] = {0};
	uint8_t *t = malloc(VHDX_METADATA_TABLE_SIZE);
	int ret;

	if (!t)
		return -ENOMEM;
	ret =
	    vhdx_file_read(img, t, VHDX_METADATA_TABLE_SIZE, img->meta_offset);
	if (ret < 0) {
		vhdx_err(img, "metadata: read failed: %s", strerror(-ret));
		goto out;
	}
	ret = check_table(img, t, loc);
	if (ret < 0)
		goto out;
	ret = read_items(img, loc);
	if (ret < 0)
		goto out;
	ret = read_parent_locator(img, &loc[ITEM_PARENT_LOCATOR]);
out:
	free(t);
	return ret;
}
