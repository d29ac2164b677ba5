/*
 * fuzz_open.c - libFuzzer target for the whole open path: headers, log
 * replay (in memory and into the file), region table, metadata, BAT, and
 * reads.  Invariant checked beyond "no crash": an image that the library
 * opened read-write and wrote to must open again afterwards.
 */
#include <stdlib.h>

#include "fuzz_common.h"

#define READ_CAP (8u * 1024u * 1024u)

static void read_some(struct vhdx_image *img)
{
	static uint8_t buf[256 * 1024];
	uint64_t size = vhdx_virtual_size(img);
	uint64_t step = size / 32 + 1;

	/* a strided sample, plus the very end of the disk */
	for (uint64_t off = 0, done = 0; off < size && done < READ_CAP;
	     off += step, done += sizeof(buf))
		vhdx_read(img, buf, sizeof(buf), off);
	if (size > 100)
		vhdx_read(img, buf, 100, size - 100);
}

static void try_rw(const uint8_t *data, size_t size)
{
	struct vhdx_open_opts o = {.flags = 0, .msg = fuzz_quiet};
	struct mem_io *m = mem_io_new();
	struct vhdx_image *img;
	struct vhdx_io io;
	uint8_t pat[5000];

	fuzz_decode_sparse(m, data, size);
	mem_io_ops(&io, m);
	if (vhdx_open(&img, &io, &o) == 0) {
		uint64_t vs = vhdx_virtual_size(img);

		memset(pat, 0xA5, sizeof(pat));
		vhdx_write(img, pat, sizeof(pat), vs / 3);
		vhdx_flush(img);
		vhdx_write(img, pat, 17, vs - 17);
		if (vhdx_close(img) == 0) {
			o.flags = VHDX_OPEN_RDONLY;
			if (vhdx_open(&img, &io, &o) != 0)
				abort(); /* we broke an image we accepted */
			vhdx_close(img);
		}
	}
	mem_io_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vhdx_open_opts o = {.flags = VHDX_OPEN_RDONLY,
				   .msg = fuzz_quiet};
	struct mem_io *m = mem_io_new();
	struct vhdx_image *img;
	struct vhdx_io io;

	fuzz_decode_sparse(m, data, size);
	mem_io_ops(&io, m);
	if (vhdx_open(&img, &io, &o) == 0) {
		read_some(img);
		vhdx_close(img);
		mem_io_free(m);
		try_rw(data, size);
		return 0;
	}
	mem_io_free(m);
	return 0;
}
