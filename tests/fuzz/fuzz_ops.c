/*
 * fuzz_ops.c - libFuzzer target for the I/O path: a fresh image takes a
 * fuzzer-chosen sequence of reads, writes, flushes, clean reopens and
 * simulated crashes, checked against a plain in-memory model of the disk.
 *
 * Input: byte 0 picks the geometry; then 8-byte operations:
 *   op u8 (mod 6), offset u24 (scaled to the disk), length u16, fill u8,
 *   flags u8 (writes: bit 0 makes it a vhdx_zero, bit 1 with unmap).
 * Model: cur[] is what the disk must read now; dur[] what it held at the
 * last flush.  After a crash (the file as it stands, opened afresh) every
 * byte must read as either its cur or its dur value.
 */
#include <stdlib.h>

#include "fuzz_common.h"

#define DISK_SIZE (6u * 1024u * 1024u)

struct state {
	struct mem_io *m;
	struct vhdx_io io;
	struct vhdx_image *img;
	uint8_t *cur, *dur, *buf;
};

static struct vhdx_image *open_img(struct vhdx_io *io, unsigned int flags)
{
	struct vhdx_open_opts o = {.flags = flags, .msg = fuzz_quiet};
	struct vhdx_image *img;

	if (vhdx_open(&img, io, &o) != 0)
		abort();
	return img;
}

static void check_all(struct vhdx_image *img, const uint8_t *cur,
		      const uint8_t *dur, uint8_t *buf)
{
	if (vhdx_read(img, buf, DISK_SIZE, 0) != DISK_SIZE)
		abort();
	for (size_t i = 0; i < DISK_SIZE; i++)
		if (buf[i] != cur[i] && (!dur || buf[i] != dur[i]))
			abort();
}

/* The file as it is now, opened by a fresh process after a crash. */
static void crash_check(struct state *s)
{
	struct mem_io *copy = mem_io_new();
	uint64_t size = mem_io_get_size(s->m);
	struct vhdx_image *img;
	struct vhdx_io io;

	for (uint64_t off = 0; off < size; off += 1024 * 1024) {
		uint64_t n =
		    size - off < 1024 * 1024 ? size - off : 1024 * 1024;

		mem_io_get(s->m, off, s->buf, n);
		mem_io_put(copy, off, s->buf, n);
	}
	mem_io_set_size(copy, size);
	mem_io_ops(&io, copy);
	img = open_img(&io, VHDX_OPEN_RDONLY);
	check_all(img, s->cur, s->dur, s->buf);
	vhdx_close(img);
	mem_io_free(copy);
}

static void do_op(struct state *s, const uint8_t *p)
{
	uint64_t off = (uint64_t)(p[1] | p[2] << 8 | p[3] << 16) *
		       (DISK_SIZE / (1u << 24));
	size_t len = (size_t)(p[4] | p[5] << 8) * 8 + 1;

	if (off >= DISK_SIZE)
		off = DISK_SIZE - 1;
	if (len > DISK_SIZE - off)
		len = DISK_SIZE - off;
	switch (p[0] % 6) {
	case 0: /* write */
	case 1:
		if (p[7] & 1) { /* zero (discard) */
			if (vhdx_zero(s->img, off, len,
				      p[7] & 2 ? VHDX_ZERO_UNMAP : 0) != 0)
				abort();
			memset(s->cur + off, 0, len);
			break;
		}
		memset(s->buf, p[6], len);
		if (vhdx_write(s->img, s->buf, len, off) != (long)len)
			abort();
		memset(s->cur + off, p[6], len);
		break;
	case 2: /* read a range */
		if (vhdx_read(s->img, s->buf, len, off) != (long)len ||
		    memcmp(s->buf, s->cur + off, len) != 0)
			abort();
		break;
	case 3: /* fsync */
		if (vhdx_flush(s->img) != 0)
			abort();
		memcpy(s->dur, s->cur, DISK_SIZE);
		break;
	case 4: /* clean close and reopen */
		if (vhdx_close(s->img) != 0)
			abort();
		memcpy(s->dur, s->cur, DISK_SIZE);
		s->img = open_img(&s->io, 0);
		check_all(s->img, s->cur, NULL, s->buf);
		break;
	case 5:
		crash_check(s);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t blocks[4] = {1u << 20, 2u << 20, 4u << 20,
					   1u << 20};
	struct vhdx_create_opts c = {.virtual_size = DISK_SIZE,
				     .msg = fuzz_quiet};
	struct state s = {0};

	if (size < 1 || size > 8 * 64 + 1)
		return 0;
	c.block_size = blocks[data[0] & 3];
	c.logical_sector = data[0] & 4 ? 4096 : 512;
	c.type = data[0] & 8 ? VHDX_TYPE_FIXED : VHDX_TYPE_DYNAMIC;
	s.m = mem_io_new();
	s.cur = calloc(1, DISK_SIZE);
	s.dur = calloc(1, DISK_SIZE);
	s.buf = malloc(DISK_SIZE);
	mem_io_ops(&s.io, s.m);
	if (vhdx_create(&s.io, &c) != 0)
		abort();
	s.img = open_img(&s.io, 0);
	for (size_t i = 1; i + 8 <= size; i += 8)
		do_op(&s, data + i);
	if (vhdx_close(s.img) != 0)
		abort();
	free(s.cur);
	free(s.dur);
	free(s.buf);
	mem_io_free(s.m);
	return 0;
}
