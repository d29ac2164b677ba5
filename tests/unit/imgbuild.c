/*
 * imgbuild.c - VHDX image builder for the unit tests (see imgbuild.h).
 *
 * Written from vhdx-format.md alone: own CRC-32C, own geometry, own field
 * offsets (the numbers below are the spec's, deliberately not format.h's).
 */
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"

/* ---- little helpers ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	int i;

	for (i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static uint32_t crc32c(const uint8_t *p, size_t len)
{
	static uint32_t table[256];
	static int ready;
	uint32_t crc = 0xFFFFFFFFu;
	size_t i;

	if (!ready) {
		uint32_t n, c;
		int k;

		for (n = 0; n < 256; n++) {
			c = n;
			for (k = 0; k < 8; k++)
				c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
			table[n] = c;
		}
		ready = 1;
	}
	for (i = 0; i < len; i++)
		crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
	return crc ^ 0xFFFFFFFFu;
}

/* CRC with the u32 at offset 4 zeroed, stored there. */
static void seal(uint8_t *p, size_t len)
{
	put32(p + 4, 0);
	put32(p + 4, crc32c(p, len));
}

static uint64_t roundup(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* A deterministic GUID (version 4 bits set) for a tag. */
static void make_guid(uint8_t g[16], uint64_t seed, uint64_t tag)
{
	put64(g, mix64(seed ^ (tag << 32)));
	put64(g + 8, mix64(~seed ^ tag));
	g[7] = (uint8_t)((g[7] & 0x0F) | 0x40);
	g[8] = (uint8_t)((g[8] & 0x3F) | 0x80);
}

/* ---- the GUIDs of fmt §5.2 and §6.2, on-disk byte order ---- */

static const uint8_t guid_bat[16] = {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6,
				     0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E,
				     0x9B, 0xFD, 0x4A, 0x08};
static const uint8_t guid_meta[16] = {0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47,
				      0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F,
				      0x05, 0x0F, 0x88, 0x6E};
static const uint8_t guid_items[5][16] = {
    {0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D, 0xB3, 0xB6, 0x33, 0xF0,
     0xAA, 0x44, 0xE7, 0x6B},
    {0x24, 0x42, 0xA5, 0x2F, 0x1B, 0xCD, 0x76, 0x48, 0xB2, 0x11, 0x5D, 0xBE,
     0xD8, 0x3B, 0xF4, 0xB8},
    {0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93, 0xEF, 0xC3, 0x09,
     0xE0, 0x00, 0xC7, 0x46},
    {0x1D, 0xBF, 0x41, 0x81, 0x6F, 0xA9, 0x09, 0x47, 0xBA, 0x47, 0xF2, 0x33,
     0xA8, 0xFA, 0xAB, 0x5F},
    {0xC7, 0x48, 0xA3, 0xCD, 0x5D, 0x44, 0x71, 0x44, 0x9C, 0xC9, 0xE9, 0x88,
     0x52, 0x51, 0xC5, 0x56},
};
static const uint32_t item_flags[5] = {0x4, 0x6, 0x6, 0x6, 0x6};
static const uint32_t item_len[5] = {8, 8, 16, 4, 4};

/* ---- set-up ---- */

int ib_init(struct ib_image *im, const struct ib_params *p)
{
	uint64_t pb;

	memset(im, 0, sizeof(*im));
	im->p = *p;
	if (!im->p.logical_sector)
		im->p.logical_sector = 512;
	if (!im->p.physical_sector)
		im->p.physical_sector = im->p.logical_sector;
	if (!im->p.hdr_seq)
		im->p.hdr_seq = 1000;
	if (!im->p.fill)
		im->p.fill = 1 * IB_MiB;
	if (!im->p.block_size || !im->p.virtual_size)
		return -1;

	im->cr = (1ull << 23) * im->p.logical_sector / im->p.block_size;
	if (im->cr == 0)
		return -1;
	im->n = (im->p.virtual_size + im->p.block_size - 1) / im->p.block_size;
	im->sb = (im->n + im->cr - 1) / im->cr;
	im->bat_entries = im->sb * (im->cr + 1);

	im->state = calloc(im->n, 1);
	im->block_off = calloc(im->n, sizeof(uint64_t));
	im->stale_off = calloc(im->n, sizeof(uint64_t));
	im->log_only = calloc(im->n, sizeof(bool));
	if (!im->state || !im->block_off || !im->stale_off || !im->log_only) {
		ib_free(im);
		return -1;
	}
	for (pb = 0; pb < im->n; pb++)
		im->state[pb] = im->p.fixed ? 6 : 0;
	make_guid(im->file_write_guid, im->p.seed, 1);
	make_guid(im->data_write_guid, im->p.seed, 2);
	make_guid(im->disk_id, im->p.seed, 3);
	im->log_seq = 1;
	return 0;
}

void ib_free(struct ib_image *im)
{
	free(im->state);
	free(im->block_off);
	free(im->stale_off);
	free(im->log_only);
	mem_io_free(im->m);
	memset(im, 0, sizeof(*im));
}

void ib_set_state(struct ib_image *im, uint64_t pb, uint8_t state)
{
	if (pb < im->n)
		im->state[pb] = state;
}

void ib_set_log_only(struct ib_image *im, uint64_t pb)
{
	if (pb < im->n) {
		im->state[pb] = 6;
		im->log_only[pb] = true;
	}
}

/* ---- payload ---- */

uint8_t ib_pattern(uint64_t seed, uint64_t v)
{
	return (uint8_t)(mix64(seed ^ (v >> 3)) >> (8 * (v & 7)));
}

static void pattern_fill(uint64_t seed, uint64_t v, uint8_t *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t w = mix64(seed ^ ((v + i) >> 3));
		unsigned int k;

		for (k = (unsigned int)((v + i) & 7); k < 8 && i < len;
		     k++, i++)
			buf[i] = (uint8_t)(w >> (8 * k));
	}
}

/* Bytes of block pb inside the virtual disk. */
static uint64_t in_disk(const struct ib_image *im, uint64_t pb)
{
	uint64_t start = pb * im->p.block_size;
	uint64_t left = im->p.virtual_size - start;

	return left < im->p.block_size ? left : im->p.block_size;
}

/* Does the builder put pattern at in-block offset x of block pb? */
static bool filled(const struct ib_image *im, uint64_t pb, uint64_t x)
{
	uint64_t len = in_disk(im, pb);

	if (x >= len)
		return false;
	if (len <= 2ull * im->p.fill)
		return true;
	return x < im->p.fill || x >= len - im->p.fill;
}

/* Write the pattern of block pb (virtual offsets, seed) at file offset. */
static void write_block(struct ib_image *im, uint64_t pb, uint64_t seed,
			uint64_t file_off)
{
	uint64_t len = in_disk(im, pb), v0 = pb * im->p.block_size;
	uint64_t ranges[2][2];
	size_t nr, r;
	uint8_t *buf = malloc(IB_MiB);

	if (!buf)
		abort();
	if (len <= 2ull * im->p.fill) {
		ranges[0][0] = 0;
		ranges[0][1] = len;
		nr = 1;
	} else {
		ranges[0][0] = 0;
		ranges[0][1] = im->p.fill;
		ranges[1][0] = len - im->p.fill;
		ranges[1][1] = len;
		nr = 2;
	}
	for (r = 0; r < nr; r++) {
		uint64_t x = ranges[r][0];

		while (x < ranges[r][1]) {
			uint64_t n = ranges[r][1] - x;

			if (n > IB_MiB)
				n = IB_MiB;
			pattern_fill(seed, v0 + x, buf, (size_t)n);
			mem_io_put(im->m, file_off + x, buf, (size_t)n);
			x += n;
		}
	}
	free(buf);
}

void ib_expected(const struct ib_image *im, uint64_t v, void *buf, size_t len)
{
	uint8_t *out = buf;

	while (len > 0) {
		uint64_t pb = v / im->p.block_size;
		uint64_t x = v % im->p.block_size;
		uint64_t n = im->p.block_size - x;

		if (n > len)
			n = len;
		if (pb < im->n && im->state[pb] == 6) {
			uint64_t i;

			pattern_fill(im->p.seed, v, out, (size_t)n);
			/* unfilled middle of a big block reads as zeros */
			for (i = 0; i < n; i++) {
				if (!filled(im, pb, x + i))
					out[i] = 0;
			}
		} else {
			memset(out, 0, (size_t)n);
		}
		out += n;
		v += n;
		len -= (size_t)n;
	}
}

/* ---- structures ---- */

uint64_t ib_header_offset(int slot)
{
	return slot ? 0x20000 : 0x10000;
}

uint64_t ib_region_offset(int copy)
{
	return copy ? 0x40000 : 0x30000;
}

uint64_t ib_region_entry(int copy, unsigned int i)
{
	return ib_region_offset(copy) + 16 + 32ull * i;
}

static void write_file_id(struct ib_image *im)
{
	static const char creator[] = "vhdxfuse unit test";
	uint8_t buf[520];
	size_t i;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, "vhdxfile", 8);
	for (i = 0; i < sizeof(creator) - 1; i++)
		put16(buf + 8 + 2 * i, (uint8_t)creator[i]);
	mem_io_put(im->m, 0, buf, sizeof(buf));
}

static void write_header(struct ib_image *im, int slot, uint64_t seq)
{
	uint8_t h[4096];

	memset(h, 0, sizeof(h));
	memcpy(h, "head", 4);
	put64(h + 8, seq);
	memcpy(h + 16, im->file_write_guid, 16);
	memcpy(h + 32, im->data_write_guid, 16);
	memcpy(h + 48, im->log_guid, 16);
	put16(h + 64, 0); /* LogVersion */
	put16(h + 66, 1); /* Version */
	put32(h + 68, im->log_length);
	put64(h + 72, im->log_offset);
	seal(h, sizeof(h));
	mem_io_put(im->m, ib_header_offset(slot), h, sizeof(h));
}

static void write_headers(struct ib_image *im)
{
	write_header(im, 0, im->p.hdr_seq + 1);
	write_header(im, 1, im->p.hdr_seq);
}

void ib_header_fix_crc(struct ib_image *im, int slot)
{
	uint8_t h[4096];

	mem_io_get(im->m, ib_header_offset(slot), h, sizeof(h));
	seal(h, sizeof(h));
	mem_io_put(im->m, ib_header_offset(slot), h, sizeof(h));
}

void ib_set_header_log_guid(struct ib_image *im, const uint8_t g[16])
{
	int slot;

	memcpy(im->log_guid, g, 16);
	for (slot = 0; slot < 2; slot++) {
		mem_io_put(im->m, ib_header_offset(slot) + 48, g, 16);
		ib_header_fix_crc(im, slot);
	}
}

static void write_regions(struct ib_image *im)
{
	uint8_t *rt = calloc(1, 65536);
	uint32_t req = im->p.known_not_required ? 0 : 1;
	uint32_t count = 0;
	uint8_t *e;
	int copy;

	if (!rt)
		abort();
	memcpy(rt, "regi", 4);
	if (!im->p.omit_bat_region) {
		e = rt + 16 + 32 * count++;
		memcpy(e, guid_bat, 16);
		put64(e + 16, im->bat_offset);
		put32(e + 24, im->bat_length);
		put32(e + 28, req);
	}
	e = rt + 16 + 32 * count++;
	memcpy(e, guid_meta, 16);
	put64(e + 16, im->meta_offset);
	put32(e + 24, im->meta_length);
	put32(e + 28, req);
	if (im->p.has_extra_region) {
		e = rt + 16 + 32 * count++;
		memcpy(e, im->p.extra_region_guid, 16);
		put64(e + 16, im->extra_region_offset);
		put32(e + 24, (uint32_t)IB_MiB);
		put32(e + 28, im->p.extra_region_required);
	}
	put32(rt + 8, count);
	seal(rt, 65536);
	for (copy = 0; copy < 2; copy++)
		mem_io_put(im->m, ib_region_offset(copy), rt, 65536);
	free(rt);
}

void ib_region_fix_crc(struct ib_image *im, int copy)
{
	uint8_t *rt = malloc(65536);

	if (!rt)
		abort();
	mem_io_get(im->m, ib_region_offset(copy), rt, 65536);
	seal(rt, 65536);
	mem_io_put(im->m, ib_region_offset(copy), rt, 65536);
	free(rt);
}

static void write_metadata(struct ib_image *im)
{
	uint8_t tbl[32 + 32 * IB_N_ITEMS];
	uint8_t val[16];
	uint64_t item = im->meta_offset + 0x10000;
	unsigned int count = 0;
	int i;

	memset(tbl, 0, sizeof(tbl));
	memcpy(tbl, "metadata", 8);
	for (i = 0; i < IB_N_ITEMS; i++) {
		const uint8_t *guid;
		uint32_t flags, len;
		uint8_t *e;

		if (im->p.meta_omit & (1u << i))
			continue;
		if (i == IB_ITEM_EXTRA) {
			if (!im->p.has_extra_item)
				continue;
			guid = im->p.extra_item_guid;
			flags = im->p.extra_item_flags;
			len = 8;
		} else {
			guid = guid_items[i];
			flags = item_flags[i];
			len = item_len[i];
		}
		memset(val, 0, sizeof(val));
		switch (i) {
		case IB_ITEM_FILE_PARAMS:
			put32(val, im->p.block_size);
			put32(val + 4, im->p.fixed ? 1 : 0);
			break;
		case IB_ITEM_DISK_SIZE:
			put64(val, im->p.virtual_size);
			break;
		case IB_ITEM_DISK_ID:
			memcpy(val, im->disk_id, 16);
			break;
		case IB_ITEM_LOGICAL_SECTOR:
			put32(val, im->p.logical_sector);
			break;
		case IB_ITEM_PHYSICAL_SECTOR:
			put32(val, im->p.physical_sector);
			break;
		default:
			memset(val, 0x5A, 8);
			break;
		}
		e = tbl + 32 + 32 * count++;
		memcpy(e, guid, 16);
		put32(e + 16, (uint32_t)(item - im->meta_offset));
		put32(e + 20, len);
		put32(e + 24, flags);
		im->item_off[i] = item;
		im->item_entry[i] = im->meta_offset + (uint64_t)(e - tbl);
		mem_io_put(im->m, item, val, len);
		item += len;
	}
	put16(tbl + 10, (uint16_t)count);
	mem_io_put(im->m, im->meta_offset, tbl, sizeof(tbl));
}

uint64_t ib_bat_index(const struct ib_image *im, uint64_t pb)
{
	return pb + pb / im->cr;
}

uint64_t ib_get_bat(struct ib_image *im, uint64_t index)
{
	return mem_io_get_le64(im->m, im->bat_offset + 8 * index);
}

void ib_put_bat(struct ib_image *im, uint64_t index, uint64_t entry)
{
	mem_io_put_le64(im->m, im->bat_offset + 8 * index, entry);
}

static uint64_t bat_entry_for(const struct ib_image *im, uint64_t pb)
{
	uint8_t s = im->state[pb];

	if (s == 6 || s == 7)
		return im->block_off[pb] | s;
	if ((s == 1 || s == 3) && im->stale_off[pb])
		return im->stale_off[pb] | s;
	return s;
}

/* Lay out the payload; returns the end of the data area. */
static uint64_t place_blocks(struct ib_image *im)
{
	uint64_t pb, off = im->data_start;

	for (pb = 0; pb < im->n; pb++) {
		if (im->state[pb] == 6) {
			im->block_off[pb] = off;
			off += im->p.block_size;
		} else if (im->p.stale_offsets &&
			   (im->state[pb] == 1 || im->state[pb] == 3)) {
			im->stale_off[pb] = off;
			off += im->p.block_size;
		}
	}
	return off;
}

/* The whole BAT as it should be (log-only entries included). */
static uint8_t *bat_image(struct ib_image *im)
{
	uint8_t *bat = calloc(1, im->bat_length);
	uint64_t pb;

	if (!bat)
		abort();
	for (pb = 0; pb < im->n; pb++) {
		if (8 * ib_bat_index(im, pb) + 8 <= im->bat_length)
			put64(bat + 8 * ib_bat_index(im, pb),
			      bat_entry_for(im, pb));
	}
	return bat;
}

/* One entry with a data descriptor per BAT sector holding a log-only
 * entry (at most what fits a 1 MiB log). */
static void write_log_for_bat(struct ib_image *im, const uint8_t *bat)
{
	struct ib_log_desc *d = calloc(200, sizeof(*d));
	uint64_t pb, sector, last = UINT64_MAX;
	uint32_t count = 0;

	if (!d)
		abort();
	for (pb = 0; pb < im->n && count < 200; pb++) {
		if (!im->log_only[pb])
			continue;
		sector = 8 * ib_bat_index(im, pb) / 4096 * 4096;
		if (sector == last)
			continue;
		last = sector;
		d[count].zero = false;
		d[count].file_offset = im->bat_offset + sector;
		d[count].data = bat + sector;
		count++;
	}
	if (count)
		ib_log_write_entry(im, 0, im->log_seq, 0, d, count);
	free(d);
}

int ib_build(struct ib_image *im)
{
	uint64_t pb, end;
	uint8_t *bat;
	bool any_log = false;

	mem_io_free(im->m);
	im->m = mem_io_new();
	if (!im->m)
		return -1;

	im->log_offset = 1 * IB_MiB;
	im->log_length = im->p.log_length ? im->p.log_length : (uint32_t)IB_MiB;
	im->bat_offset = im->log_offset + im->log_length;
	im->bat_length = im->p.bat_length
			     ? im->p.bat_length
			     : (uint32_t)roundup(8 * im->bat_entries, IB_MiB);
	im->meta_offset = im->bat_offset + im->bat_length;
	im->meta_length = (uint32_t)IB_MiB;
	im->data_start = im->meta_offset + im->meta_length;
	end = place_blocks(im);
	if (im->p.has_extra_region) {
		im->extra_region_offset = end;
		end += IB_MiB;
	}
	im->file_size = end;

	for (pb = 0; pb < im->n; pb++)
		any_log |= im->log_only[pb];
	if (any_log)
		make_guid(im->log_guid, im->p.seed, 4);

	write_file_id(im);
	write_headers(im);
	write_regions(im);
	write_metadata(im);

	bat = bat_image(im);
	if (any_log)
		write_log_for_bat(im, bat);
	for (pb = 0; pb < im->n; pb++) {
		if (im->log_only[pb] &&
		    8 * ib_bat_index(im, pb) + 8 <= im->bat_length)
			put64(bat + 8 * ib_bat_index(im, pb), 0);
	}
	mem_io_put(im->m, im->bat_offset, bat, im->bat_length);
	free(bat);

	for (pb = 0; pb < im->n; pb++) {
		if (im->block_off[pb])
			write_block(im, pb, im->p.seed, im->block_off[pb]);
		if (im->stale_off[pb])
			write_block(im, pb, im->p.seed ^ 0x5757,
				    im->stale_off[pb]);
	}
	mem_io_set_size(im->m, im->file_size);
	mem_io_reset_counts(im->m);
	return 0;
}

/* ---- log ---- */

static void ring_put(struct ib_image *im, uint32_t pos, const uint8_t *buf,
		     uint32_t len)
{
	uint32_t first = im->log_length - pos;

	if (first >= len) {
		mem_io_put(im->m, im->log_offset + pos, buf, len);
		return;
	}
	mem_io_put(im->m, im->log_offset + pos, buf, first);
	mem_io_put(im->m, im->log_offset, buf + first, len - first);
}

static void ring_get(struct ib_image *im, uint32_t pos, uint8_t *buf,
		     uint32_t len)
{
	uint32_t first = im->log_length - pos;

	if (first >= len) {
		mem_io_get(im->m, im->log_offset + pos, buf, len);
		return;
	}
	mem_io_get(im->m, im->log_offset + pos, buf, first);
	mem_io_get(im->m, im->log_offset, buf + first, len - first);
}

uint32_t ib_log_write_entry(struct ib_image *im, uint32_t pos, uint64_t seq,
			    uint32_t tail, const struct ib_log_desc *d,
			    uint32_t count)
{
	uint32_t nd = 0, i, dsect, len, di;
	uint8_t *e;

	for (i = 0; i < count; i++)
		nd += !d[i].zero;
	dsect = (count + 2 + 127) / 128;
	len = 4096 * (dsect + nd);
	e = calloc(1, len);
	if (!e)
		abort();
	memcpy(e, "loge", 4);
	put32(e + 8, len);
	put32(e + 12, tail);
	put64(e + 16, seq);
	put32(e + 24, count);
	memcpy(e + 32, im->log_guid, 16);
	put64(e + 48, im->file_size);
	put64(e + 56, im->file_size);
	di = dsect;
	for (i = 0; i < count; i++) {
		uint8_t *de = e + 64 + 32 * i;

		if (d[i].zero) {
			memcpy(de, "zero", 4);
			put64(de + 8, d[i].zero_length);
		} else {
			uint8_t *ds = e + 4096 * di++;

			memcpy(de, "desc", 4);
			memcpy(de + 4, d[i].data + 4092, 4);
			memcpy(de + 8, d[i].data, 8);
			memcpy(ds, "data", 4);
			put32(ds + 4, (uint32_t)(seq >> 32));
			memcpy(ds + 8, d[i].data + 8, 4084);
			put32(ds + 4092, (uint32_t)seq);
		}
		put64(de + 16, d[i].file_offset);
		put64(de + 24, seq);
	}
	seal(e, len);
	ring_put(im, pos, e, len);
	free(e);
	return len;
}

void ib_log_fix_crc(struct ib_image *im, uint32_t pos)
{
	uint8_t hdr[64];
	uint32_t len;
	uint8_t *e;

	ring_get(im, pos, hdr, sizeof(hdr));
	len = get32(hdr + 8);
	if (len > im->log_length || len < 64)
		len = im->log_length;
	e = malloc(len);
	if (!e)
		abort();
	ring_get(im, pos, e, len);
	seal(e, len);
	ring_put(im, pos, e, len);
	free(e);
}
