/*
 * create.c - writing a new image (fmt §13), laid out as Hyper-V does:
 * header section, log, BAT, metadata region, then payload.  Known regions
 * and items are marked required; absent blocks are NOT_PRESENT with offset
 * 0; a fixed image has every block FULLY_PRESENT and its space reserved.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

struct layout {
	struct vhdx_geom g;
	uint64_t log_offset, log_length;
	uint64_t bat_offset, bat_length;
	uint64_t meta_offset, meta_length;
	uint64_t data_offset;
	uint64_t file_size;
};

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/*
 * Default block size: 32 MiB as Hyper-V uses for base disks, 2 MiB for
 * differencing disks (its checkpoint default), 1 MiB for tiny disks.
 */
static uint32_t default_block_size(const struct vhdx_create_opts *o)
{
	if (o->virtual_size < 32 * MiB)
		return (uint32_t)MiB;
	if (o->type == VHDX_TYPE_DIFFERENCING)
		return (uint32_t)(2 * MiB);
	return (uint32_t)(32 * MiB);
}

static int check_opts(const struct vhdx_create_opts *o, struct layout *l,
		      struct vhdx_image *sink)
{
	uint32_t bs = o->block_size ? o->block_size : default_block_size(o);
	uint32_t lss = o->logical_sector ? o->logical_sector : 512;
	uint32_t pss = o->physical_sector ? o->physical_sector : 4096;
	uint64_t log = o->log_size ? o->log_size : MiB;
	const char *why = vhdx_geom_problem(o->virtual_size, bs, lss);
	uint8_t creator16[VHDX_FILE_ID_CREATOR_LEN - 2];

	if (!why && pss != 512 && pss != 4096)
		why = "physical sector size must be 512 or 4096";
	if (!why && pss < lss)
		why = "physical sector size must not be smaller than the "
		      "logical sector size";
	if (!why && (log % MiB || log > 256 * MiB))
		why = "log size must be a multiple of 1 MiB, at most 256 MiB";
	if (!why && o->type != VHDX_TYPE_DYNAMIC &&
	    o->type != VHDX_TYPE_FIXED && o->type != VHDX_TYPE_DIFFERENCING)
		why = "unknown image type";
	if (!why && o->type == VHDX_TYPE_DIFFERENCING &&
	    (!o->parent_relative || !*o->parent_relative ||
	     vhdx_guid_is_zero(o->parent_linkage)))
		why = "a differencing image needs the parent's path and "
		      "DataWriteGuid";
	if (!why && o->creator && *o->creator &&
	    !vhdx_utf8_to_utf16(o->creator, creator16, sizeof(creator16)))
		why = "the creator string must be valid UTF-8 of at most 255 "
		      "UTF-16 code units";
	if (why) {
		vhdx_err(sink, "%s", why);
		return -EINVAL;
	}
	vhdx_geom_init(&l->g, o->virtual_size, bs, lss);
	l->log_offset = VHDX_HEADER_SECTION_SIZE;
	l->log_length = log;
	l->bat_offset = l->log_offset + log;
	l->bat_length = round_up(vhdx_bat_alloc_entries(&l->g) * 8, MiB);
	l->meta_offset = l->bat_offset + l->bat_length;
	l->meta_length = MiB;
	l->data_offset = l->meta_offset + l->meta_length;
	l->file_size = l->data_offset;
	if (o->type == VHDX_TYPE_FIXED)
		l->file_size += l->g.payload_blocks * bs;
	return 0;
}

static void build_headers(uint8_t *sec, const struct layout *l,
			  const char *creator)
{
	uint8_t fwg[16], dwg[16];

	memcpy(sec, VHDX_FILE_ID_SIG, 8);
	/* checked by check_opts: valid, and leaves room for a NUL */
	vhdx_utf8_to_utf16(creator, sec + VHDX_FILE_ID_CREATOR,
			   VHDX_FILE_ID_CREATOR_LEN - 2);
	vhdx_guid_generate(fwg);
	vhdx_guid_generate(dwg);
	for (int i = 0; i < 2; i++) {
		uint8_t *h =
		    sec + (i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET);

		memcpy(h, VHDX_HEADER_SIG, 4);
		le64_put(h + VHDX_HDR_SEQ, (uint64_t)i + 1);
		memcpy(h + VHDX_HDR_FILE_WRITE_GUID, fwg, 16);
		memcpy(h + VHDX_HDR_DATA_WRITE_GUID, dwg, 16);
		le16_put(h + VHDX_HDR_LOG_VERSION, 0);
		le16_put(h + VHDX_HDR_VERSION, 1);
		le32_put(h + VHDX_HDR_LOG_LENGTH, (uint32_t)l->log_length);
		le64_put(h + VHDX_HDR_LOG_OFFSET, l->log_offset);
		le32_put(h + VHDX_HDR_CHECKSUM,
			 vhdx_crc32c(h, VHDX_HEADER_SIZE));
	}
}

static void build_region_tables(uint8_t *sec, const struct layout *l)
{
	static const uint8_t bat[16] = VHDX_GUID_BAT_REGION;
	static const uint8_t meta[16] = VHDX_GUID_METADATA_REGION;
	uint8_t *t = sec + VHDX_REGION1_OFFSET;
	uint8_t *e = t + VHDX_RT_HEADER_SIZE;

	memcpy(t, VHDX_REGION_SIG, 4);
	le32_put(t + VHDX_RT_ENTRY_COUNT, 2);
	memcpy(e + VHDX_RTE_GUID, bat, 16);
	le64_put(e + VHDX_RTE_FILE_OFFSET, l->bat_offset);
	le32_put(e + VHDX_RTE_LENGTH, (uint32_t)l->bat_length);
	le32_put(e + VHDX_RTE_REQUIRED, 1);
	e += VHDX_RT_ENTRY_SIZE;
	memcpy(e + VHDX_RTE_GUID, meta, 16);
	le64_put(e + VHDX_RTE_FILE_OFFSET, l->meta_offset);
	le32_put(e + VHDX_RTE_LENGTH, (uint32_t)l->meta_length);
	le32_put(e + VHDX_RTE_REQUIRED, 1);
	le32_put(t + VHDX_RT_CHECKSUM, vhdx_crc32c(t, VHDX_REGION_TABLE_SIZE));
	memcpy(sec + VHDX_REGION2_OFFSET, t, VHDX_REGION_TABLE_SIZE);
}

/* Append one metadata item; returns the next free item offset. */
static uint32_t add_item(uint8_t *m, unsigned int idx, const uint8_t *guid,
			 uint32_t flags, uint32_t off, const void *val,
			 uint32_t len)
{
	uint8_t *e = m + VHDX_MT_HEADER_SIZE + idx * VHDX_MT_ENTRY_SIZE;

	memcpy(e + VHDX_MTE_ITEM_ID, guid, 16);
	le32_put(e + VHDX_MTE_OFFSET, off);
	le32_put(e + VHDX_MTE_LENGTH, len);
	le32_put(e + VHDX_MTE_FLAGS, flags);
	memcpy(m + off, val, len);
	return off + len;
}

/* The parent locator item (fmt §6.3); returns its length, 0 on error. */
static uint32_t build_locator(uint8_t *pl, size_t max,
			      const struct vhdx_create_opts *o)
{
	static const uint8_t type[16] = VHDX_GUID_PARENT_LOCATOR_TYPE;
	char linkage[VHDX_GUID_STR_LEN + 2];
	const char *keys[3] = {"parent_linkage", "relative_path",
			       "absolute_win32_path"};
	const char *vals[3];
	unsigned int n = o->parent_absolute ? 3 : 2;
	size_t off = VHDX_PL_HEADER_SIZE + n * VHDX_PL_ENTRY_SIZE;

	linkage[0] = '{';
	vhdx_guid_to_str(o->parent_linkage, linkage + 1);
	strcat(linkage, "}");
	vals[0] = linkage;
	vals[1] = o->parent_relative;
	vals[2] = o->parent_absolute;
	memcpy(pl + VHDX_PL_TYPE, type, 16);
	le16_put(pl + VHDX_PL_KEY_VALUE_COUNT, (uint16_t)n);
	for (unsigned int i = 0; i < n; i++) {
		uint8_t *e = pl + VHDX_PL_HEADER_SIZE + i * VHDX_PL_ENTRY_SIZE;
		size_t kl = vhdx_utf8_to_utf16(keys[i], pl + off, max - off);
		size_t vl = kl ? vhdx_utf8_to_utf16(vals[i], pl + off + kl,
						    max - off - kl)
			       : 0;

		if (!kl || !vl || vl > 0xFFFF)
			return 0;
		le32_put(e, (uint32_t)off);
		le32_put(e + 4, (uint32_t)(off + kl));
		le16_put(e + 8, (uint16_t)kl);
		le16_put(e + 10, (uint16_t)vl);
		off += kl + vl;
	}
	return (uint32_t)off;
}

/* Append the parent locator item as metadata entry 5. */
static int add_locator(uint8_t *m, uint32_t off,
		       const struct vhdx_create_opts *o)
{
	static const uint8_t pl_id[16] = VHDX_GUID_PARENT_LOCATOR;
	uint8_t *e = m + VHDX_MT_HEADER_SIZE + 5 * VHDX_MT_ENTRY_SIZE;
	uint32_t len = build_locator(m + off, 64 * KiB, o);

	if (!len)
		return -EINVAL;
	memcpy(e + VHDX_MTE_ITEM_ID, pl_id, 16);
	le32_put(e + VHDX_MTE_OFFSET, off);
	le32_put(e + VHDX_MTE_LENGTH, len);
	le32_put(e + VHDX_MTE_FLAGS, VHDX_MT_FLAG_IS_REQUIRED);
	le16_put(m + VHDX_MT_ENTRY_COUNT, 6);
	return 0;
}

static int build_metadata(uint8_t *m, const struct layout *l,
			  const struct vhdx_create_opts *o)
{
	static const uint8_t fp_id[16] = VHDX_GUID_FILE_PARAMETERS;
	static const uint8_t vs_id[16] = VHDX_GUID_VIRTUAL_DISK_SIZE;
	static const uint8_t id_id[16] = VHDX_GUID_VIRTUAL_DISK_ID;
	static const uint8_t ls_id[16] = VHDX_GUID_LOGICAL_SECTOR_SIZE;
	static const uint8_t ps_id[16] = VHDX_GUID_PHYSICAL_SECTOR_SIZE;
	const uint32_t req = VHDX_MT_FLAG_IS_REQUIRED;
	const uint32_t vreq = req | VHDX_MT_FLAG_IS_VIRTUAL_DISK;
	uint8_t fp[8] = {0}, vs[8], id[16], ls[4], ps[4];
	uint32_t off = VHDX_METADATA_TABLE_SIZE;

	le32_put(fp, l->g.block_size);
	if (o->type == VHDX_TYPE_FIXED)
		le32_put(fp + 4, VHDX_FP_LEAVE_BLOCKS_ALLOCATED);
	else if (o->type == VHDX_TYPE_DIFFERENCING)
		le32_put(fp + 4, VHDX_FP_HAS_PARENT);
	le64_put(vs, l->g.virtual_size);
	if (o->type == VHDX_TYPE_DIFFERENCING)
		memcpy(id, o->disk_id, 16); /* IsVirtualDisk: the parent's */
	else
		vhdx_guid_generate(id);
	le32_put(ls, l->g.logical_sector);
	le32_put(ps, o->physical_sector ? o->physical_sector : 4096);
	memcpy(m, VHDX_METADATA_SIG, 8);
	le16_put(m + VHDX_MT_ENTRY_COUNT, 5);
	off = add_item(m, 0, fp_id, req, off, fp, 8);
	off = add_item(m, 1, vs_id, vreq, off, vs, 8);
	off = add_item(m, 2, id_id, vreq, off, id, 16);
	off = add_item(m, 3, ls_id, vreq, off, ls, 4);
	off = add_item(m, 4, ps_id, vreq, off, ps, 4);
	if (o->type == VHDX_TYPE_DIFFERENCING)
		return add_locator(m, off, o);
	return 0;
}

/* BAT of a fixed image: block i at data_offset + i * block_size. */
static int write_fixed_bat(const struct vhdx_io *io, const struct layout *l)
{
	uint64_t n = vhdx_bat_alloc_entries(&l->g);
	uint8_t *bat = calloc(n, 8);
	int ret;

	if (!bat)
		return -ENOMEM;
	for (uint64_t pb = 0; pb < l->g.payload_blocks; pb++)
		le64_put(bat + vhdx_bat_payload_index(&l->g, pb) * 8,
			 (l->data_offset + pb * l->g.block_size) |
			     VHDX_BLOCK_FULLY_PRESENT);
	ret = io->pwrite(io->opaque, bat, n * 8, l->bat_offset);
	free(bat);
	return ret;
}

int vhdx_create(const struct vhdx_io *io, const struct vhdx_create_opts *o)
{
	struct vhdx_image sink = {.msg = o->msg, .msg_opaque = o->msg_opaque};
	char creator[64];
	struct layout l;
	uint8_t *buf;
	int ret;

	ret = check_opts(o, &l, &sink);
	if (ret < 0)
		return ret;
	snprintf(creator, sizeof(creator), "vhdxfuse %s", PACKAGE_VERSION);
	buf = calloc(1, VHDX_HEADER_SECTION_SIZE);
	if (!buf)
		return -ENOMEM;
	ret = io->truncate(io->opaque, l.file_size);
	if (ret == 0 && o->type == VHDX_TYPE_FIXED && io->allocate)
		ret = io->allocate(io->opaque, l.data_offset,
				   l.file_size - l.data_offset);
	if (ret < 0)
		goto out;
	build_headers(buf, &l, o->creator ? o->creator : creator);
	build_region_tables(buf, &l);
	ret = io->pwrite(io->opaque, buf, VHDX_HEADER_SECTION_SIZE, 0);
	if (ret < 0)
		goto out;
	memset(buf, 0, VHDX_HEADER_SECTION_SIZE);
	ret = build_metadata(buf, &l, o);
	if (ret < 0) {
		vhdx_err(&sink, "parent locator: the parent's paths are not "
				"valid UTF-8 or too long");
		goto out;
	}
	ret = io->pwrite(io->opaque, buf, 2 * VHDX_METADATA_TABLE_SIZE,
			 l.meta_offset);
	if (ret == 0 && o->type == VHDX_TYPE_FIXED)
		ret = write_fixed_bat(io, &l);
	if (ret == 0)
		ret = io->flush(io->opaque);
out:
	if (ret < 0 && ret != -EINVAL)
		vhdx_err(&sink, "writing the new image failed: %s",
			 strerror(-ret));
	free(buf);
	return ret;
}
