/*
 * test_discard.c - vhdx_zero (fmt §8.3, §10.5): zeroing and discarding
 * ranges of dynamic, fixed and differencing images made by vhdx_create in
 * memory, and of one on a real file through the fd backend; and the space
 * a new block takes (the allocate op, VHDX_OPEN_SPARSE).
 *
 * Every test keeps its own model of what the disk must read (the pattern
 * it wrote, zeros where it zeroed) and of each block's state, and compares
 * the image with it byte for byte, block by block and in the state counts
 * of vhdx_get_info.  The mem_io backend has no zero callback, so the
 * library writes zeros there; a wrapper with one checks what the library
 * asks of a backend that has it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgbuild.h"
#include "mem_io.h"
#include "msgsink.h"
#include "unit.h"
#include "vhdx.h"
#include "vhdx_inspect.h"

#define MiB IB_MiB
#define KiB 1024ull
#define BS  (1 * MiB) /* block size of every image here */

#define NP VHDX_BLOCK_NOT_PRESENT
#define ZB VHDX_BLOCK_ZERO
#define FP VHDX_BLOCK_FULLY_PRESENT

#define MAX_BLOCKS 16

static struct msgsink sink = MSGSINK_INIT(VHDX_MSG_WARNING);

/* ---- the model: what the disk must read, and each block's state ---- */

struct model {
	uint64_t vsize;
	uint64_t n; /* payload blocks */
	uint8_t *data;
	int state[MAX_BLOCKS];
};

static bool model_init(struct model *md, uint64_t vsize, int state)
{
	md->vsize = vsize;
	md->n = (vsize + BS - 1) / BS;
	md->data = calloc(1, vsize);
	for (uint64_t pb = 0; pb < MAX_BLOCKS; pb++)
		md->state[pb] = state;
	return CHECK(md->n <= MAX_BLOCKS) && CHECK(md->data != NULL);
}

static void model_free(struct model *md)
{
	free(md->data);
	md->data = NULL;
}

/* Pattern byte of virtual offset v: never zero, so zeros stand out. */
static uint8_t pat(uint32_t seed, uint64_t v)
{
	uint64_t x = ((v + 1) * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)seed << 32);

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (uint8_t)(x % 255 + 1);
}

/* vhdx_write the pattern over [off, off + len) and into the model. */
static bool write_pat(struct vhdx_image *img, struct model *md, uint64_t off,
		      uint64_t len, uint32_t seed)
{
	uint8_t *buf = malloc(len);
	bool ok;

	if (!CHECK(buf != NULL))
		return false;
	for (uint64_t i = 0; i < len; i++)
		buf[i] = pat(seed, off + i);
	ok = CHECK_EQ_INT(vhdx_write(img, buf, len, off), len);
	if (ok)
		memcpy(md->data + off, buf, len);
	free(buf);
	return ok;
}

/* vhdx_zero must succeed; the model reads zeros there (up to the end). */
static bool zero_ok(struct vhdx_image *img, struct model *md, uint64_t off,
		    uint64_t len, unsigned int flags)
{
	int ret = vhdx_zero(img, off, len, flags);

	if (!CHECK_EQ_INT(ret, 0)) {
		unit_note("vhdx_zero(0x%llx, 0x%llx, %u) = %d",
			  (unsigned long long)off, (unsigned long long)len,
			  flags, ret);
		return false;
	}
	if (off < md->vsize) {
		if (len > md->vsize - off)
			len = md->vsize - off;
		memset(md->data + off, 0, len);
	}
	return true;
}

/* The whole disk reads as the model, byte for byte. */
static bool verify_data(struct vhdx_image *img, const struct model *md,
			const char *what)
{
	uint8_t *got = malloc(md->vsize);
	bool ok;
	long r;

	if (!CHECK(got != NULL))
		return false;
	memset(got, 0xCC, md->vsize);
	r = vhdx_read(img, got, md->vsize, 0);
	ok = CHECK_EQ_INT(r, md->vsize);
	if (ok && !CHECK_EQ_MEM(got, md->data, md->vsize)) {
		/* the first wrong byte of every block that has one */
		for (uint64_t i = 0; i < md->vsize; i++) {
			if (got[i] == md->data[i])
				continue;
			unit_note("%s: virtual 0x%llx (block %llu + 0x%llx) "
				  "reads 0x%02x, want 0x%02x",
				  what, (unsigned long long)i,
				  (unsigned long long)(i / BS),
				  (unsigned long long)(i % BS), got[i],
				  md->data[i]);
			i = i / BS * BS + BS - 1;
		}
		ok = false;
	}
	free(got);
	return ok;
}

/* Every block's state and the state counts of vhdx_get_info. */
static bool verify_states(struct vhdx_image *img, const struct model *md,
			  const char *what)
{
	uint64_t want[8] = {0};
	struct vhdx_info info;
	bool ok = true;

	for (uint64_t pb = 0; pb < md->n; pb++) {
		int st = vhdx_block_state(img, pb);

		want[md->state[pb]]++;
		if (!CHECK_EQ_INT(st, md->state[pb])) {
			unit_note(
			    "%s: block %llu is %s, want %s", what,
			    (unsigned long long)pb,
			    vhdx_block_state_name((unsigned int)st),
			    vhdx_block_state_name((unsigned int)md->state[pb]));
			ok = false;
		}
	}
	CHECK_EQ_INT(vhdx_block_state(img, md->n), -EINVAL);
	vhdx_get_info(img, &info);
	ok &= CHECK_EQ_U64(info.payload_blocks, md->n);
	ok &= CHECK_EQ_INT(info.state_count_known, 1);
	for (int s = 0; s < 8; s++)
		ok &= CHECK_EQ_U64(info.state_count[s], want[s]);
	if (!ok)
		unit_note("%s: block states differ from the model", what);
	return ok;
}

static bool verify(struct vhdx_image *img, const struct model *md,
		   const char *what)
{
	bool ok = verify_data(img, md, what);

	return verify_states(img, md, what) && ok;
}

/* ---- images in memory ---- */

/* The parent of the differencing tests, found by this path only. */
#define PARENT_PATH "/discard/parent.vhdx"

static struct mem_io *parent_file;

static int fo_open(void *opaque, const char *path, struct vhdx_io *io,
		   uint64_t id[2])
{
	(void)opaque;
	if (!parent_file || strcmp(path, PARENT_PATH) != 0)
		return -ENOENT;
	mem_io_ops(io, parent_file);
	id[0] = 0xd15c;
	id[1] = 0xa4d;
	return 0;
}

static void fo_close(void *opaque, struct vhdx_io *io)
{
	(void)opaque;
	(void)io;
}

static const struct vhdx_file_ops file_ops = {fo_open, fo_close, NULL};

/* Open m through io (NULL: plain mem_io) after resetting its counters. */
static bool open_io(struct mem_io *m, const struct vhdx_io *io,
		    unsigned int flags, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = flags,
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	    .path = "/discard/child.vhdx",
	    .parent_path = PARENT_PATH,
	    .files = &file_ops,
	};
	struct vhdx_io mio;
	int ret;

	if (!io) {
		mem_io_ops(&mio, m);
		io = &mio;
	}
	msgsink_reset(&sink);
	mem_io_reset_counts(m);
	*img = NULL;
	ret = vhdx_open(img, io, &o);
	if (!CHECK_EQ_INT(ret, 0)) {
		msgsink_dump(&sink);
		*img = NULL;
		return false;
	}
	return true;
}

static bool open_m(struct mem_io *m, unsigned int flags,
		   struct vhdx_image **img)
{
	return open_io(m, NULL, flags, img);
}

static bool create_m(struct mem_io *m, enum vhdx_type type, uint64_t vsize,
		     const struct ib_image *parent)
{
	struct vhdx_create_opts co = {
	    .type = type,
	    .virtual_size = vsize,
	    .block_size = BS,
	    .logical_sector = 512,
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	};
	struct vhdx_io io;

	if (parent) {
		memcpy(co.parent_linkage, parent->data_write_guid, 16);
		memcpy(co.disk_id, parent->disk_id, 16);
		co.parent_relative = "parent.vhdx";
	}
	mem_io_ops(&io, m);
	msgsink_reset(&sink);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0)) {
		msgsink_dump(&sink);
		return false;
	}
	return true;
}

static struct mem_io_counts counts(struct mem_io *m)
{
	struct mem_io_counts c;

	mem_io_get_counts(m, &c);
	return c;
}

/* Nothing was written, flushed or truncated since the last reset. */
static bool no_modification(struct mem_io *m)
{
	struct mem_io_counts c = counts(m);
	bool ok = true;

	ok &= CHECK_EQ_U64(c.pwrite, 0);
	ok &= CHECK_EQ_U64(c.flush, 0);
	ok &= CHECK_EQ_U64(c.truncate, 0);
	return ok;
}

/*
 * The current header (signature "head", the higher SequenceNumber) has a
 * zero LogGuid: the log is empty (fmt §4.1).  hdr holds the first 64
 * bytes of the headers at 0x10000 and 0x20000.
 */
static bool log_empty(const uint8_t hdr[2][64])
{
	static const uint8_t zero[16];
	uint64_t seq[2] = {0, 0};
	int cur = -1;

	for (int h = 0; h < 2; h++) {
		if (memcmp(hdr[h], "head", 4) != 0)
			continue;
		for (int i = 7; i >= 0; i--)
			seq[h] = seq[h] << 8 | hdr[h][8 + i];
		if (cur < 0 || seq[h] > seq[cur])
			cur = h;
	}
	if (!CHECK(cur >= 0))
		return false;
	return CHECK_EQ_MEM(hdr[cur] + 48, zero, 16);
}

static bool log_empty_m(struct mem_io *m)
{
	uint8_t hdr[2][64];

	mem_io_get(m, 0x10000, hdr[0], 64);
	mem_io_get(m, 0x20000, hdr[1], 64);
	return log_empty(hdr);
}

/* Close cleanly, check that the log is empty, reopen read-only, verify. */
static void close_reopen_verify(struct vhdx_image **img, struct mem_io *m,
				const struct model *md, const char *what)
{
	CHECK_EQ_INT(vhdx_close(*img), 0);
	*img = NULL;
	log_empty_m(m);
	if (open_m(m, VHDX_OPEN_RDONLY, img))
		verify(*img, md, what);
}

/* File offset of virtual offset v, which must map to the file. */
static uint64_t file_offset_of(struct vhdx_image *img, uint64_t v)
{
	struct vhdx_mapping mp;

	if (!CHECK_EQ_INT(vhdx_map(img, v, 1, &mp), 0) ||
	    !CHECK_EQ_INT(mp.kind, VHDX_MAP_FILE))
		return 0;
	return mp.file_offset;
}

/* ---- dynamic images ---- */

/* 7 MiB + 384 KiB: blocks 0-6 whole, block 7 only 384 KiB inside. */
#define DYN_SIZE   (7 * MiB + 384 * KiB)
#define DYN_BLOCKS 8
#define SEED_A	   0xA11CEu
#define SEED_B	   0xB0Bu

/*
 * Create a dynamic image, write the pattern over every block but block 6,
 * then zero: block 1 whole with unmap, block 2 whole without, two ranges
 * inside block 0, a range from inside block 3 over block 4 to inside block
 * 5 with unmap, the short block 7 whole with unmap, and the never-written
 * block 6 whole and in part, with and without unmap.  Checks after each step what it wrote; returns
 * the image open read-write.
 */
static struct vhdx_image *dynamic_scenario(struct mem_io *m, struct model *md)
{
	struct vhdx_image *img;
	struct mem_io_counts c;
	uint64_t size, lo, hi;

	if (!model_init(md, DYN_SIZE, NP) ||
	    !create_m(m, VHDX_TYPE_DYNAMIC, DYN_SIZE, NULL) ||
	    !open_m(m, 0, &img))
		return NULL;
	if (!CHECK_EQ_U64(vhdx_virtual_size(img), DYN_SIZE) ||
	    !verify(img, md, "new image") ||
	    !write_pat(img, md, 0, 6 * MiB, SEED_A) ||
	    !write_pat(img, md, 7 * MiB, DYN_SIZE - 7 * MiB, SEED_A))
		goto fail;
	for (uint64_t pb = 0; pb < DYN_BLOCKS; pb++)
		md->state[pb] = pb == 6 ? NP : FP;
	verify(img, md, "after writing");
	size = mem_io_get_size(m);

	/* whole block, unmap: ZERO, without writing any data */
	mem_io_reset_counts(m);
	zero_ok(img, md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	md->state[1] = ZB;
	c = counts(m);
	CHECK_EQ_U64(c.pwrite, 0);
	CHECK_EQ_U64(c.truncate, 0);

	/* whole present block, no unmap: zeros written in place */
	mem_io_reset_counts(m);
	zero_ok(img, md, 2 * MiB, BS, 0);
	c = counts(m);
	CHECK_EQ_U64(c.bytes_written, BS);
	CHECK_EQ_U64(c.truncate, 0);

	/* inside block 0, unaligned, without and with unmap */
	mem_io_reset_counts(m);
	zero_ok(img, md, 0x12345, 0x23456, 0);
	zero_ok(img, md, 0x80001, 0x1000 - 3, VHDX_ZERO_UNMAP);
	c = counts(m);
	CHECK_EQ_U64(c.bytes_written, 0x23456 + 0x1000 - 3);
	CHECK_EQ_U64(c.truncate, 0);

	/* partial 3 + whole 4 + partial 5, unmap: only 4 becomes ZERO */
	lo = 3 * MiB + 0xC0007;
	hi = 5 * MiB + 0x2000 - 5;
	mem_io_reset_counts(m);
	zero_ok(img, md, lo, hi - lo, VHDX_ZERO_UNMAP);
	md->state[4] = ZB;
	c = counts(m);
	CHECK_EQ_U64(c.bytes_written, (4 * MiB - lo) + (hi - 5 * MiB));

	/* the short last block is whole with its 384 KiB */
	zero_ok(img, md, 7 * MiB, DYN_SIZE - 7 * MiB, VHDX_ZERO_UNMAP);
	md->state[7] = ZB;

	/* never written, and block 1 already ZERO: nothing to do */
	mem_io_reset_counts(m);
	zero_ok(img, md, 6 * MiB, BS, VHDX_ZERO_UNMAP);
	zero_ok(img, md, 6 * MiB, BS, 0);
	zero_ok(img, md, 6 * MiB + 100, 5000, 0);
	zero_ok(img, md, 6 * MiB + 100, 5000, VHDX_ZERO_UNMAP);
	zero_ok(img, md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	zero_ok(img, md, 1 * MiB, BS, 0);
	zero_ok(img, md, 1 * MiB + 4096, 8192, 0);
	no_modification(m);

	CHECK_EQ_U64(mem_io_get_size(m), size); /* nothing allocated */
	return img;
fail:
	vhdx_close(img);
	return NULL;
}

TEST(dynamic_zero)
{
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = dynamic_scenario(m, &md);
	static const int want[DYN_BLOCKS] = {FP, ZB, FP, FP, ZB, FP, NP, ZB};

	if (img) {
		verify(img, &md, "after zeroing");
		/* the model's states, written out once more by hand */
		for (uint64_t pb = 0; pb < DYN_BLOCKS; pb++)
			CHECK_EQ_INT(vhdx_block_state(img, pb), want[pb]);
		/* the bytes at the edges of the ranges, by hand */
		CHECK_EQ_INT(md.data[0x12344], pat(SEED_A, 0x12344));
		CHECK_EQ_INT(md.data[0x12345], 0);
		CHECK_EQ_INT(md.data[0x12345 + 0x23455], 0);
		CHECK_EQ_INT(md.data[0x12345 + 0x23456],
			     pat(SEED_A, 0x12345 + 0x23456));
		CHECK_EQ_INT(md.data[3 * MiB + 0xC0006],
			     pat(SEED_A, 3 * MiB + 0xC0006));
		CHECK_EQ_INT(md.data[5 * MiB + 0x1FFB],
			     pat(SEED_A, 5 * MiB + 0x1FFB));
		CHECK_EQ_INT(md.data[5 * MiB + 0x1FFA], 0);
		CHECK_EQ_INT(vhdx_close(img), 0);
	}
	model_free(&md);
	mem_io_free(m);
}

TEST(dynamic_durable)
{
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = dynamic_scenario(m, &md);
	struct vhdx_info info;

	if (!img)
		goto out;
	CHECK_EQ_INT(vhdx_flush(img), 0);
	verify(img, &md, "after flush");
	if (!CHECK_EQ_INT(vhdx_close(img), 0))
		goto out;
	log_empty_m(m);

	/* read-only: same contents and states, nothing replayed or written */
	if (open_m(m, VHDX_OPEN_RDONLY, &img)) {
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.log_replayed, 0);
		verify(img, &md, "reopened read-only");
		CHECK_EQ_INT(vhdx_zero(img, 0, BS, 0), -EROFS);
		vhdx_close(img);
		no_modification(m);
	}
	/* read-write: the same, and zeroing goes on from there */
	if (open_m(m, 0, &img)) {
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.log_replayed, 0);
		verify(img, &md, "reopened read-write");
		zero_ok(img, &md, 0, BS, VHDX_ZERO_UNMAP);
		md.state[0] = ZB;
		verify(img, &md, "block 0 zeroed after reopening");
		CHECK_EQ_INT(vhdx_close(img), 0);
		log_empty_m(m);
	}
	if (open_m(m, VHDX_OPEN_RDONLY, &img)) {
		verify(img, &md, "reopened read-only again");
		vhdx_close(img);
	}
out:
	model_free(&md);
	mem_io_free(m);
}

/*
 * A write into a block made ZERO takes a free place (fmt §19.2): not its old
 * place while ZERO is not durable, the old place once it is.  mem_io cannot
 * punch holes, so the old place still holds the old pattern: the new block
 * must read as zeros around what is written (the place is zeroed first).
 */
TEST(write_after_zero)
{
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	uint64_t size, old_off, new_off;
	uint8_t raw[4096], want[4096];

	if (!model_init(&md, 4 * MiB, NP) ||
	    !create_m(m, VHDX_TYPE_DYNAMIC, 4 * MiB, NULL) ||
	    !open_m(m, 0, &img) || !write_pat(img, &md, 0, 4 * MiB, SEED_A))
		goto out;
	for (int pb = 0; pb < 4; pb++)
		md.state[pb] = FP;
	CHECK_EQ_INT(vhdx_flush(img), 0);
	old_off = file_offset_of(img, 1 * MiB);
	size = mem_io_get_size(m);

	/* not durable yet: the old place is not reused */
	zero_ok(img, &md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[1] = ZB;
	write_pat(img, &md, 1 * MiB + 0x40000, 4096, SEED_B);
	md.state[1] = FP;
	verify(img, &md, "written into the ZERO block before a flush");
	new_off = file_offset_of(img, 1 * MiB);
	CHECK(new_off >= old_off + BS || new_off + BS <= old_off);
	CHECK_EQ_U64(mem_io_get_size(m), size + BS);
	mem_io_get(m, old_off + 0x40000, raw, sizeof(raw));
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = pat(SEED_A, 1 * MiB + 0x40000 + i);
	CHECK_EQ_MEM(raw, want, sizeof(raw));

	/* durable: the old place is the lowest free one and is reused */
	CHECK_EQ_INT(vhdx_flush(img), 0);
	zero_ok(img, &md, 2 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[2] = ZB;
	CHECK_EQ_INT(vhdx_flush(img), 0);
	write_pat(img, &md, 2 * MiB + 0x40000, 4096, SEED_B);
	md.state[2] = FP;
	verify(img, &md, "written into a ZERO block after a flush");
	CHECK_EQ_U64(file_offset_of(img, 2 * MiB), old_off);
	/* zeroed before use: the old pattern is gone */
	mem_io_get(m, old_off + 0x80000, raw, sizeof(raw));
	memset(want, 0, sizeof(want));
	CHECK_EQ_MEM(raw, want, sizeof(raw));

	/* and the block can go back to ZERO */
	zero_ok(img, &md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[1] = ZB;
	write_pat(img, &md, 2 * MiB - 512, 512, SEED_B);
	md.state[1] = FP;
	verify(img, &md, "ZERO, then written again");
	close_reopen_verify(&img, m, &md, "reopened");
out:
	vhdx_close(img);
	model_free(&md);
	mem_io_free(m);
}

/* ---- fixed images ---- */

/* A fixed image never leaves state 6 and keeps its space (fmt §10.5). */
TEST(fixed_zero)
{
	const uint64_t vsize = 3 * MiB + 256 * KiB;
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	struct vhdx_info info;
	struct mem_io_counts c;
	uint64_t size, off1, off3;
	uint8_t *raw = malloc(BS);
	uint8_t *zeros = calloc(1, BS);

	if (!CHECK(raw && zeros) || !model_init(&md, vsize, FP) ||
	    !create_m(m, VHDX_TYPE_FIXED, vsize, NULL) || !open_m(m, 0, &img))
		goto out;
	vhdx_get_info(img, &info);
	CHECK_EQ_INT(info.leave_blocks_allocated, 1);
	verify(img, &md, "new fixed image");
	if (!write_pat(img, &md, 0, vsize, SEED_A))
		goto out;
	size = mem_io_get_size(m);
	off1 = file_offset_of(img, 1 * MiB);
	off3 = file_offset_of(img, 3 * MiB);

	mem_io_reset_counts(m);
	zero_ok(img, &md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	zero_ok(img, &md, 2 * MiB, BS, 0);
	zero_ok(img, &md, 3 * MiB, vsize - 3 * MiB, VHDX_ZERO_UNMAP);
	zero_ok(img, &md, 0x3001, 0x5000, VHDX_ZERO_UNMAP);
	c = counts(m);
	CHECK_EQ_U64(c.truncate, 0);
	CHECK_EQ_U64(mem_io_get_size(m), size);
	verify(img, &md, "zeroed");
	/* zeroed in place: the same space, now zeros */
	CHECK_EQ_U64(file_offset_of(img, 1 * MiB), off1);
	mem_io_get(m, off1, raw, BS);
	CHECK_EQ_MEM(raw, zeros, BS);
	CHECK_EQ_U64(file_offset_of(img, 3 * MiB), off3);
	mem_io_get(m, off3, raw, vsize - 3 * MiB);
	CHECK_EQ_MEM(raw, zeros, vsize - 3 * MiB);

	close_reopen_verify(&img, m, &md, "fixed, reopened");
out:
	vhdx_close(img);
	model_free(&md);
	mem_io_free(m);
	free(raw);
	free(zeros);
}

/* ---- differencing images ---- */

#define DIFF_SIZE   (7 * MiB)
#define SEED_PARENT 0x9A9Eull
#define SEED_CHILD  0xC41Du

/*
 * Build the parent of the differencing tests: every block FULLY_PRESENT,
 * except NOT_PRESENT where absent(pb) (may be NULL); md starts as a child
 * that shows the parent, and parent_file points at it.  Returns 0, or
 * after a failed check -1 (nothing to free) or 1 (ib_free the parent).
 */
static int make_parent(struct ib_image *parent, const struct ib_params *p,
		       struct model *md, bool (*absent)(uint64_t pb))
{
	if (!CHECK_EQ_INT(ib_init(parent, p), 0))
		return -1;
	for (uint64_t pb = 0; pb < parent->n; pb++)
		ib_set_state(parent, pb, absent && absent(pb) ? NP : FP);
	if (!CHECK_EQ_INT(ib_build(parent), 0) ||
	    !model_init(md, DIFF_SIZE, NP))
		return 1;
	ib_expected(parent, 0, md->data, DIFF_SIZE);
	parent_file = parent->m;
	return 0;
}

/*
 * Parent (built by imgbuild, every block present with its pattern) and a
 * new child.  In the child: block 1 whole (NOT_PRESENT) without unmap and
 * block 2 with unmap become ZERO; ranges inside the NOT_PRESENT blocks 3
 * and 5 become zeros with the parent's data around them; block 4, written
 * in the child, zeroed whole without unmap stays present; block 0, written,
 * zeroed whole with unmap becomes ZERO; block 6 shows the parent.
 */
TEST(differencing_zero)
{
	struct ib_params p = {.virtual_size = DIFF_SIZE,
			      .block_size = BS,
			      .logical_sector = 512,
			      .seed = SEED_PARENT};
	static const int want[7] = {ZB, ZB, ZB, FP, FP, FP, NP};
	struct ib_image parent;
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	uint64_t digest;
	int ret;

	ret = make_parent(&parent, &p, &md, NULL);
	if (ret < 0)
		goto out_free;
	if (ret > 0)
		goto out;
	digest = mem_io_digest(parent.m);
	if (!create_m(m, VHDX_TYPE_DIFFERENCING, DIFF_SIZE, &parent) ||
	    !open_m(m, 0, &img))
		goto out;
	mem_io_reset_counts(parent.m);
	verify(img, &md, "new child");
	/* the parent's data is not all zeros where it is to be hidden */
	CHECK(md.data[1 * MiB + 12345] || md.data[1 * MiB + 12346]);

	write_pat(img, &md, 4 * MiB + 0x8000, 0x1000, SEED_CHILD);
	write_pat(img, &md, 0 * MiB + 0x100, 0x300, SEED_CHILD);
	md.state[4] = md.state[0] = FP;
	verify(img, &md, "child written");

	zero_ok(img, &md, 1 * MiB, BS, 0);
	zero_ok(img, &md, 2 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[1] = md.state[2] = ZB;
	zero_ok(img, &md, 3 * MiB + 0x1005, 0x2345, 0);
	zero_ok(img, &md, 5 * MiB + 0x10000, 0x30123, VHDX_ZERO_UNMAP);
	md.state[3] = md.state[5] = FP; /* the parent's data copied up */
	zero_ok(img, &md, 4 * MiB, BS, 0);
	zero_ok(img, &md, 0 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[0] = ZB;
	verify(img, &md, "child zeroed");
	for (uint64_t pb = 0; pb < 7; pb++)
		CHECK_EQ_INT(vhdx_block_state(img, pb), want[pb]);
	/* block 6 is the parent's, block 3 around its range too */
	CHECK_EQ_INT(md.data[6 * MiB + 77],
		     ib_pattern(SEED_PARENT, 6 * MiB + 77));
	CHECK_EQ_INT(md.data[3 * MiB + 0x1004],
		     ib_pattern(SEED_PARENT, 3 * MiB + 0x1004));
	CHECK_EQ_INT(md.data[3 * MiB + 0x1005], 0);

	close_reopen_verify(&img, m, &md, "child reopened");
	no_modification(parent.m);
	CHECK_EQ_U64(mem_io_digest(parent.m), digest);
out:
	vhdx_close(img);
	parent_file = NULL;
	ib_free(&parent);
out_free:
	model_free(&md);
	mem_io_free(m);
}

/*
 * PARTIALLY_PRESENT blocks (fmt §9): the child's data where a sector's
 * bitmap bit is 1, the parent's where it is 0.  The file space under the
 * 0 bits holds stale bytes that no reader may ever see, also not after a
 * range of the block was zeroed (or written), which makes the block
 * FULLY_PRESENT in its own space.
 */
#define SECTORS	 (BS / 512)
#define SB_INDEX 4096 /* CR = 2^23 * 512 / 1 MiB; chunk 0's bitmap entry */
#define STALE	 0xEE

/* Blocks 2 and 5 read as zeros: the parent has none there. */
static bool reads_zeros(uint64_t pb)
{
	return pb == 2 || pb == 5;
}

/* Sector s of block pb is in the child (bit 1). */
static bool in_child(uint64_t pb, uint64_t s)
{
	return reads_zeros(pb) ? s < 16 : (s / 3) % 2 == 0;
}

/*
 * Give blocks 2 to 5 of the child m PARTIALLY_PRESENT data (blocks 2 and
 * 5: zeros in their first 16 sectors, so with the parent's zeros they read
 * as zeros; 3 and 4: the child pattern in every other three sectors) and
 * put what a reader must see into the model.
 */
static bool make_partial(struct mem_io *m, struct model *md)
{
	struct vhdx_description *d;
	struct vhdx_image *img;
	uint64_t bat, end, pb;
	uint8_t *bm = calloc(1, BS), *blk = malloc(BS);
	bool ok = false;

	if (!CHECK(bm && blk) || !open_m(m, VHDX_OPEN_RDONLY, &img))
		goto out;
	ok = CHECK_EQ_INT(vhdx_describe(img, &d), 0);
	bat = ok ? d->bat_offset : 0;
	if (ok)
		vhdx_describe_free(d);
	vhdx_close(img);
	if (!ok)
		goto out;
	end = (mem_io_get_size(m) + MiB - 1) / MiB * MiB;
	for (pb = 2; pb <= 5; pb++) {
		uint64_t data = end + (pb - 1) * MiB;

		for (uint64_t s = 0; s < SECTORS; s++) {
			uint64_t bit = pb * SECTORS + s;
			uint64_t v = pb * MiB + s * 512;

			if (!in_child(pb, s)) {
				memset(blk + s * 512, STALE, 512);
				continue;
			}
			bm[bit / 8] |= (uint8_t)(1u << (bit % 8));
			for (uint64_t i = 0; i < 512; i++) {
				blk[s * 512 + i] = reads_zeros(pb)
						       ? 0
						       : pat(SEED_CHILD, v + i);
				md->data[v + i] = blk[s * 512 + i];
			}
		}
		mem_io_put(m, data, blk, BS);
		mem_io_put_le64(m, bat + 8 * pb, data | 7);
		md->state[pb] = VHDX_BLOCK_PARTIALLY_PRESENT;
	}
	mem_io_put(m, end, bm, BS);
	mem_io_put_le64(m, bat + 8 * SB_INDEX, end | 6);
	mem_io_set_size(m, end + 5 * MiB);
out:
	free(bm);
	free(blk);
	return ok;
}

TEST(differencing_partial)
{
	struct ib_params p = {.virtual_size = DIFF_SIZE,
			      .block_size = BS,
			      .logical_sector = 512,
			      .seed = SEED_PARENT};
	struct ib_image parent;
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	uint64_t digest;
	int ret;

	ret = make_parent(&parent, &p, &md, reads_zeros);
	if (ret < 0)
		goto out_free;
	if (ret > 0)
		goto out;
	digest = mem_io_digest(parent.m);
	if (!create_m(m, VHDX_TYPE_DIFFERENCING, DIFF_SIZE, &parent) ||
	    !make_partial(m, &md) || !open_m(m, 0, &img))
		goto out;
	verify(img, &md, "partially present blocks");

	/* block 2 reads as zeros throughout: a range of it zeroed */
	zero_ok(img, &md, 2 * MiB + 0x80000, 0x1000, 0);
	md.state[2] = FP;
	verify(img, &md, "in block 2 (all zeros)");
	/* a range of block 3, across sectors of the child and the parent */
	zero_ok(img, &md, 3 * MiB + 0x403, 0x2000, 0);
	md.state[3] = FP;
	/* block 4 whole, unmap */
	zero_ok(img, &md, 4 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[4] = ZB;
	/* vhdx_write completes a block the same way */
	write_pat(img, &md, 5 * MiB + 0x10000, 0x1000, SEED_B);
	md.state[5] = FP;
	verify(img, &md, "partially present blocks zeroed");

	close_reopen_verify(&img, m, &md, "partially present, reopened");
	CHECK_EQ_U64(mem_io_digest(parent.m), digest);
out:
	vhdx_close(img);
	parent_file = NULL;
	ib_free(&parent);
out_free:
	model_free(&md);
	mem_io_free(m);
}

/* ---- refusals and clipping ---- */

TEST(refused_and_clipped)
{
	static const unsigned int bad_flags[] = {0x2, 0x3, 0x80000000u,
						 ~VHDX_ZERO_UNMAP, ~0u};
	static const uint64_t past[][2] = {
	    {DYN_SIZE, 1},
	    {DYN_SIZE, BS},
	    {DYN_SIZE + 1, 1},
	    {DYN_SIZE + 10 * MiB, UINT64_MAX},
	    {UINT64_MAX - 10, 5},
	    {UINT64_MAX, UINT64_MAX},
	    {0, 0},
	    {3 * MiB, 0},
	};
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	uint64_t digest, size;

	if (!model_init(&md, DYN_SIZE, FP) ||
	    !create_m(m, VHDX_TYPE_DYNAMIC, DYN_SIZE, NULL) ||
	    !open_m(m, 0, &img) || !write_pat(img, &md, 0, DYN_SIZE, SEED_A) ||
	    !CHECK_EQ_INT(vhdx_close(img), 0))
		goto out;
	img = NULL;
	digest = mem_io_digest(m);
	size = mem_io_get_size(m);

	/* read-only */
	if (!open_m(m, VHDX_OPEN_RDONLY, &img))
		goto out;
	CHECK_EQ_INT(vhdx_zero(img, 0, BS, 0), -EROFS);
	CHECK_EQ_INT(vhdx_zero(img, 0, BS, VHDX_ZERO_UNMAP), -EROFS);
	CHECK_EQ_INT(vhdx_zero(img, 100, 10, 0), -EROFS);
	verify(img, &md, "read-only");
	vhdx_close(img);
	img = NULL;
	no_modification(m);
	CHECK_EQ_U64(mem_io_digest(m), digest);

	/* unknown flags, and ranges at or past the end: nothing written,
	 * not even the headers of a new session */
	if (!open_m(m, 0, &img))
		goto out;
	digest = mem_io_digest(m);
	mem_io_reset_counts(m);
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++)
		CHECK_EQ_INT(vhdx_zero(img, 0, BS, bad_flags[i]), -EINVAL);
	for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++) {
		CHECK_EQ_INT(vhdx_zero(img, past[i][0], past[i][1], 0), 0);
		CHECK_EQ_INT(
		    vhdx_zero(img, past[i][0], past[i][1], VHDX_ZERO_UNMAP), 0);
	}
	no_modification(m);
	CHECK_EQ_U64(mem_io_digest(m), digest);
	verify(img, &md, "refused");

	/* the last 1000 bytes, len clipped */
	zero_ok(img, &md, DYN_SIZE - 1000, UINT64_MAX, 0);
	verify(img, &md, "last 1000 bytes");
	CHECK_EQ_INT(md.data[DYN_SIZE - 1001], pat(SEED_A, DYN_SIZE - 1001));
	CHECK_EQ_INT(md.data[DYN_SIZE - 1000], 0);
	/* off + len overflows: clipped; the short block 7 zeroed in place */
	zero_ok(img, &md, 6 * MiB + 5, UINT64_MAX - 3, 0);
	verify(img, &md, "clipped, no unmap");
	CHECK_EQ_INT(md.data[6 * MiB + 4], pat(SEED_A, 6 * MiB + 4));
	CHECK_EQ_INT(md.data[6 * MiB + 5], 0);
	CHECK_EQ_INT(md.data[DYN_SIZE - 1], 0);
	/* clipped to exactly the short block 7: whole, so ZERO */
	zero_ok(img, &md, 7 * MiB, 10 * MiB, VHDX_ZERO_UNMAP);
	md.state[7] = ZB;
	verify(img, &md, "clipped, unmap");
	CHECK_EQ_U64(mem_io_get_size(m), size);
	CHECK_EQ_INT(vhdx_close(img), 0);
	img = NULL;
	if (open_m(m, VHDX_OPEN_RDONLY, &img))
		verify(img, &md, "clipped, reopened");
out:
	vhdx_close(img);
	model_free(&md);
	mem_io_free(m);
}

/* ---- what the library asks of a backend with a zero callback ---- */

struct zero_call {
	uint64_t off, len;
	int unmap;
};

/* One backend at a time: mem_io plus this zero callback. */
static struct {
	struct mem_io *m;
	int ret; /* 0: zero the range; else return this */
	unsigned int n;
	struct zero_call call[8];
} zb;

static int zb_zero(void *opaque, uint64_t off, uint64_t len, int unmap)
{
	uint8_t zeros[4096] = {0};
	uint64_t size;

	CHECK(opaque == zb.m);
	if (zb.n < 8)
		zb.call[zb.n] = (struct zero_call){off, len, unmap};
	zb.n++;
	if (zb.ret)
		return zb.ret;
	size = mem_io_get_size(zb.m);
	for (uint64_t o = off; o < off + len && o < size;) {
		uint64_t n = off + len - o < sizeof(zeros) ? off + len - o
							   : sizeof(zeros);

		mem_io_put(zb.m, o, zeros, n);
		o += n;
	}
	CHECK_EQ_U64(mem_io_get_size(zb.m), size);
	return 0;
}

/* Exactly one call since the last one, with these arguments. */
static bool one_call(uint64_t off, uint64_t len, int unmap)
{
	bool ok = CHECK_EQ_U64(zb.n, 1);

	if (ok) {
		ok &= CHECK_EQ_U64(zb.call[0].off, off);
		ok &= CHECK_EQ_U64(zb.call[0].len, len);
		ok &= CHECK_EQ_INT(zb.call[0].unmap, unmap);
	}
	zb.n = 0;
	return ok;
}

TEST(zero_callback)
{
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;
	uint64_t off[4];
	uint8_t raw[4096], want[4096];

	zb.m = m;
	zb.ret = 0;
	zb.n = 0;
	mem_io_ops(&io, m);
	io.zero = zb_zero;
	if (!model_init(&md, 4 * MiB, FP) ||
	    !create_m(m, VHDX_TYPE_DYNAMIC, 4 * MiB, NULL) ||
	    !open_io(m, &io, 0, &img) ||
	    !write_pat(img, &md, 0, 4 * MiB, SEED_A))
		goto out;
	for (int pb = 0; pb < 4; pb++)
		off[pb] = file_offset_of(img, (uint64_t)pb * MiB);
	CHECK_EQ_U64(zb.n, 0);

	/* whole block, unmap: ZERO, and its old space handed back */
	mem_io_reset_counts(m);
	zero_ok(img, &md, 1 * MiB, BS, VHDX_ZERO_UNMAP);
	md.state[1] = ZB;
	one_call(off[1], BS, 1);
	/* whole present block, no unmap: zeroed in place, kept */
	zero_ok(img, &md, 2 * MiB, BS, 0);
	one_call(off[2], BS, 0);
	/* part of a block, unmap: a hole in place */
	zero_ok(img, &md, 3 * MiB + 0x100, 0x200, VHDX_ZERO_UNMAP);
	one_call(off[3] + 0x100, 0x200, 1);
	no_modification(m);
	verify(img, &md, "through the callback");

	/* the backend cannot: zeros written instead */
	zb.ret = -EOPNOTSUPP;
	mem_io_reset_counts(m);
	zero_ok(img, &md, 0x1000, 0x3000, VHDX_ZERO_UNMAP);
	one_call(off[0] + 0x1000, 0x3000, 1);
	CHECK_EQ_U64(counts(m).bytes_written, 0x3000);
	zero_ok(img, &md, 2 * MiB + 7, 9, 0);
	one_call(off[2] + 7, 9, 0);
	/* ... except for a whole block, whose space then stays as it was */
	mem_io_reset_counts(m);
	zero_ok(img, &md, 0, BS, VHDX_ZERO_UNMAP);
	md.state[0] = ZB;
	one_call(off[0], BS, 1);
	no_modification(m);
	mem_io_get(m, off[0] + 0x8000, raw, sizeof(raw));
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = pat(SEED_A, 0x8000 + i);
	CHECK_EQ_MEM(raw, want, sizeof(raw));
	verify(img, &md, "without the callback");

	/* an I/O error zeroing in place is returned */
	zb.ret = -EIO;
	CHECK_EQ_INT(vhdx_zero(img, 3 * MiB + 0x1000, 0x1000, 0), -EIO);
	one_call(off[3] + 0x1000, 0x1000, 0);
	zb.ret = 0;
	verify(img, &md, "after the error");

	CHECK_EQ_INT(vhdx_close(img), 0);
	img = NULL;
	if (open_m(m, VHDX_OPEN_RDONLY, &img))
		verify(img, &md, "reopened");
out:
	vhdx_close(img);
	model_free(&md);
	mem_io_free(m);
	zb.m = NULL;
}

/* ---- reserving a new block's space: the allocate op ---- */

static struct {
	int ret;	   /* what the next calls return */
	int n;		   /* calls */
	uint64_t off, len; /* of the last call */
} ra;

static int ra_allocate(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	ra.n++;
	ra.off = off;
	ra.len = len;
	return ra.ret;
}

/*
 * A new block's whole extent is reserved before the block is used; when
 * that fails the write fails and nothing changes, and the next try takes
 * the same place.  VHDX_OPEN_SPARSE reserves nothing.
 */
TEST(reserve_callback)
{
	struct mem_io *m = mem_io_new();
	struct model md = {0};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;
	uint64_t size0, size1, off5;
	uint8_t buf[4096];

	memset(&ra, 0, sizeof(ra));
	mem_io_ops(&io, m);
	io.allocate = ra_allocate;
	if (!model_init(&md, 8 * MiB, NP) ||
	    !create_m(m, VHDX_TYPE_DYNAMIC, 8 * MiB, NULL) ||
	    !open_io(m, &io, 0, &img) ||
	    !write_pat(img, &md, 0x1000, 0x1000, SEED_A)) /* starts the log */
		goto out;
	md.state[0] = FP;

	/* a write into block 2: its whole extent, where it then lies */
	ra.n = 0;
	if (!write_pat(img, &md, 2 * MiB + 0x3000, 0x1000, SEED_A))
		goto out;
	md.state[2] = FP;
	CHECK_EQ_INT(ra.n, 1);
	CHECK_EQ_U64(ra.len, BS);
	CHECK_EQ_U64(ra.off, file_offset_of(img, 2 * MiB));
	/* into the same block again: nothing more */
	if (!write_pat(img, &md, 2 * MiB + 0x9000, 0x1000, SEED_B))
		goto out;
	CHECK_EQ_INT(ra.n, 1);

	/* the host is full: the write fails, block 5 stays unallocated */
	ra.ret = -ENOSPC;
	ra.n = 0;
	size0 = mem_io_get_size(m);
	memset(buf, 0x5A, sizeof(buf));
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 5 * MiB), -ENOSPC);
	CHECK_EQ_INT(ra.n, 1);
	off5 = ra.off;
	CHECK_EQ_U64(mem_io_get_size(m), size0);
	verify(img, &md, "after ENOSPC");
	/* room again: the same place */
	ra.ret = 0;
	ra.n = 0;
	if (!write_pat(img, &md, 5 * MiB, 0x1000, SEED_A))
		goto out;
	md.state[5] = FP;
	CHECK_EQ_INT(ra.n, 1);
	CHECK_EQ_U64(ra.off, off5);
	CHECK_EQ_U64(file_offset_of(img, 5 * MiB), off5);
	size1 = mem_io_get_size(m);
	CHECK_EQ_U64(size1, off5 + BS);
	close_reopen_verify(&img, m, &md, "reserved blocks, reopened");
	vhdx_close(img);
	img = NULL;

	/* VHDX_OPEN_SPARSE: a new block is not reserved */
	if (!open_io(m, &io, VHDX_OPEN_SPARSE, &img))
		goto out;
	ra.n = 0;
	if (!write_pat(img, &md, 7 * MiB + 0x100, 0x200, SEED_B))
		goto out;
	md.state[7] = FP;
	CHECK_EQ_INT(ra.n, 0);
	CHECK_EQ_U64(mem_io_get_size(m), size1 + BS);
	close_reopen_verify(&img, m, &md, "sparse block, reopened");
out:
	vhdx_close(img);
	model_free(&md);
	mem_io_free(m);
}

/* ---- a real file: fallocate through the fd backend ---- */

struct tmp {
	char dir[4096];
	char img[4200];
	char probe[4200];
};

static bool tmp_make(struct tmp *t)
{
	const char *base = getenv("TMPDIR");

	memset(t, 0, sizeof(*t));
	if (!base || !*base)
		base = "/tmp";
	snprintf(t->dir, sizeof(t->dir), "%s/vhdx-discard.XXXXXX", base);
	if (!CHECK(mkdtemp(t->dir) != NULL)) {
		unit_note("mkdtemp in %s: %s", base, strerror(errno));
		t->dir[0] = '\0';
		return false;
	}
	snprintf(t->img, sizeof(t->img), "%s/disk.vhdx", t->dir);
	snprintf(t->probe, sizeof(t->probe), "%s/probe", t->dir);
	return true;
}

static void tmp_remove(struct tmp *t)
{
	if (!t->dir[0])
		return;
	unlink(t->img);
	unlink(t->probe);
	CHECK_EQ_INT(rmdir(t->dir), 0);
}

/*
 * Can this file system punch holes, and do st_blocks and SEEK_HOLE show
 * them?  NULL if so, else the reason.
 */
static const char *holes_unsupported(const char *path)
{
	static char why[160];
	uint8_t buf[64 * 1024];
	struct stat st0, st1;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	off_t hole;

	if (!CHECK(fd >= 0))
		return "cannot create a probe file";
	memset(buf, 0xAB, sizeof(buf));
	if (!CHECK_EQ_INT(pwrite(fd, buf, sizeof(buf), 0), sizeof(buf)) ||
	    !CHECK_EQ_INT(fsync(fd), 0) || !CHECK_EQ_INT(fstat(fd, &st0), 0)) {
		close(fd);
		return "cannot write a probe file";
	}
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      sizeof(buf)) < 0) {
		snprintf(why, sizeof(why),
			 "the temporary file system cannot punch holes "
			 "(fallocate: %s)",
			 strerror(errno));
		close(fd);
		return why;
	}
	hole = lseek(fd, 0, SEEK_HOLE);
	CHECK_EQ_INT(fstat(fd, &st1), 0);
	close(fd);
	if (hole != 0)
		return "the temporary file system does not report holes "
		       "(SEEK_HOLE)";
	if (st1.st_blocks >= st0.st_blocks)
		return "the temporary file system does not count holes in "
		       "st_blocks";
	return NULL;
}

static bool open_fd(int *fd, struct vhdx_io *io, const char *path,
		    unsigned int flags, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {.flags = flags,
				   .msg = msgsink_cb,
				   .msg_opaque = &sink,
				   .path = path};

	vhdx_io_fd_init(io, fd);
	msgsink_reset(&sink);
	*img = NULL;
	if (!CHECK_EQ_INT(vhdx_open(img, io, &o), 0)) {
		msgsink_dump(&sink);
		*img = NULL;
		return false;
	}
	return true;
}

/* A hole starts at off and spans at least len bytes. */
static bool hole_at(int fd, uint64_t off, uint64_t len)
{
	off_t h = lseek(fd, (off_t)off, SEEK_HOLE);
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	bool ok = CHECK_EQ_INT(h, off);

	/* no data up to off + len (ENXIO: none up to the end of the file) */
	ok &= CHECK(d < 0 ? errno == ENXIO : (uint64_t)d >= off + len);
	if (!ok)
		unit_note("at file offset 0x%llx: SEEK_HOLE 0x%llx, "
			  "SEEK_DATA 0x%llx",
			  (unsigned long long)off, (long long)h, (long long)d);
	return ok;
}

static bool headers_fd(int fd, uint8_t hdr[2][64])
{
	return CHECK_EQ_INT(pread(fd, hdr[0], 64, 0x10000), 64) &&
	       CHECK_EQ_INT(pread(fd, hdr[1], 64, 0x20000), 64);
}

TEST(fd_backend)
{
	const uint64_t vsize = 8 * MiB;
	struct vhdx_create_opts co = {.type = VHDX_TYPE_DYNAMIC,
				      .virtual_size = vsize,
				      .block_size = BS,
				      .logical_sector = 512};
	struct tmp t;
	struct model md = {0};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;
	struct stat st0, st1;
	const char *why;
	uint64_t off[8];
	uint8_t hdr[2][64];
	int fd = -1;

	if (!tmp_make(&t) || !model_init(&md, vsize, FP))
		goto out;
	why = holes_unsupported(t.probe);
	fd = open(t.img, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (!CHECK(fd >= 0))
		goto out;
	vhdx_io_fd_init(&io, &fd);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0) ||
	    !open_fd(&fd, &io, t.img, 0, &img) ||
	    !write_pat(img, &md, 0, vsize, SEED_A) ||
	    !CHECK_EQ_INT(vhdx_flush(img), 0))
		goto out;
	for (uint64_t pb = 0; pb < 8; pb++)
		off[pb] = file_offset_of(img, pb * MiB);
	CHECK_EQ_INT(fstat(fd, &st0), 0);

	/* blocks 2 and 3 whole, unmap: ZERO, their space a hole */
	zero_ok(img, &md, 2 * MiB, 2 * BS, VHDX_ZERO_UNMAP);
	md.state[2] = md.state[3] = ZB;
	CHECK_EQ_INT(fstat(fd, &st1), 0);
	CHECK_EQ_U64(st1.st_size, st0.st_size);
	if (!why) {
		int64_t freed = ((int64_t)st0.st_blocks - st1.st_blocks) * 512;

		unit_note("st_blocks freed %lld bytes for 2 MiB of blocks",
			  (long long)freed);
		CHECK(freed >= (int64_t)(2 * MiB - 64 * KiB));
		CHECK(freed <= (int64_t)(2 * MiB + 64 * KiB));
		hole_at(fd, off[2], BS);
		hole_at(fd, off[3], BS);
	}

	/* parts of blocks: zero range in block 5, a hole in block 6 */
	zero_ok(img, &md, 5 * MiB + 0x1234, 0x3000, 0);
	zero_ok(img, &md, 6 * MiB + 0x20000, 0x40000, VHDX_ZERO_UNMAP);
	if (!why) {
		hole_at(fd, off[6] + 0x20000, 0x40000);
		CHECK_EQ_INT(lseek(fd, (off_t)off[6] + 0x20000, SEEK_DATA),
			     off[6] + 0x60000);
	}
	CHECK_EQ_INT(fstat(fd, &st1), 0);
	CHECK_EQ_U64(st1.st_size, st0.st_size);
	verify(img, &md, "fd backend");
	if (!CHECK_EQ_INT(vhdx_close(img), 0))
		goto out;
	img = NULL;
	if (headers_fd(fd, hdr))
		log_empty(hdr);
	if (!why) { /* the close did not write into the holes */
		hole_at(fd, off[2], BS);
		hole_at(fd, off[6] + 0x20000, 0x40000);
	}
	if (open_fd(&fd, &io, t.img, VHDX_OPEN_RDONLY, &img))
		verify(img, &md, "fd backend, reopened");
	if (why)
		unit_skip(why);
out:
	vhdx_close(img);
	if (fd >= 0)
		close(fd);
	tmp_remove(&t);
	model_free(&md);
}

/* Bytes the file takes on its file system. */
static int64_t used_bytes(int fd)
{
	struct stat st;

	if (!CHECK_EQ_INT(fstat(fd, &st), 0))
		return -1;
	return (int64_t)st.st_blocks * 512;
}

/*
 * Through the fd backend a new block takes its whole extent on the host
 * (fallocate); with VHDX_OPEN_SPARSE only what is written.
 */
TEST(fd_reserve)
{
	const uint64_t vsize = 8 * MiB;
	struct vhdx_create_opts co = {.type = VHDX_TYPE_DYNAMIC,
				      .virtual_size = vsize,
				      .block_size = BS,
				      .logical_sector = 512};
	struct tmp t;
	struct model md = {0};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;
	const char *why;
	int64_t u0, u1;
	int fd = -1;

	if (!tmp_make(&t) || !model_init(&md, vsize, NP))
		goto out;
	why = holes_unsupported(t.probe);
	fd = open(t.img, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (!CHECK(fd >= 0))
		goto out;
	vhdx_io_fd_init(&io, &fd);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0) ||
	    !open_fd(&fd, &io, t.img, 0, &img) ||
	    !write_pat(img, &md, 0, 0x1000, SEED_A)) /* starts the log */
		goto out;
	md.state[0] = FP;
	u0 = used_bytes(fd);
	if (!write_pat(img, &md, 3 * MiB + 0x8000, 0x1000, SEED_A))
		goto out;
	md.state[3] = FP;
	u1 = used_bytes(fd);
	unit_note("a 4 KiB write into a new 1 MiB block: %lld bytes more on "
		  "the host",
		  (long long)(u1 - u0));
	if (!why)
		CHECK(u1 - u0 >= (int64_t)BS);
	if (!CHECK_EQ_INT(vhdx_close(img), 0))
		goto out;
	img = NULL;

	if (!open_fd(&fd, &io, t.img, VHDX_OPEN_SPARSE, &img) ||
	    !write_pat(img, &md, 0x2000, 0x1000, SEED_B)) /* starts the log */
		goto out;
	u0 = used_bytes(fd);
	if (!write_pat(img, &md, 6 * MiB + 0x8000, 0x1000, SEED_B))
		goto out;
	md.state[6] = FP;
	u1 = used_bytes(fd);
	unit_note("the same with VHDX_OPEN_SPARSE: %lld bytes more",
		  (long long)(u1 - u0));
	if (!why)
		CHECK(u1 - u0 <= (int64_t)(BS / 4));
	verify(img, &md, "fd backend, sparse");
	if (!CHECK_EQ_INT(vhdx_close(img), 0))
		goto out;
	img = NULL;
	if (open_fd(&fd, &io, t.img, VHDX_OPEN_RDONLY, &img))
		verify(img, &md, "fd backend, reserved and sparse, reopened");
	if (why)
		unit_skip(why);
out:
	vhdx_close(img);
	if (fd >= 0)
		close(fd);
	tmp_remove(&t);
	model_free(&md);
}

int main(void)
{
	RUN_TEST(dynamic_zero);
	RUN_TEST(dynamic_durable);
	RUN_TEST(write_after_zero);
	RUN_TEST(fixed_zero);
	RUN_TEST(differencing_zero);
	RUN_TEST(differencing_partial);
	RUN_TEST(refused_and_clipped);
	RUN_TEST(zero_callback);
	RUN_TEST(reserve_callback);
	RUN_TEST(fd_backend);
	RUN_TEST(fd_reserve);
	return unit_done();
}
