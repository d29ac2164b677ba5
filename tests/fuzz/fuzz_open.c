/*
 * fuzz_open.c - libFuzzer target for the whole open path: headers, log
 * replay (in memory and into the file), region table, metadata, BAT, and
 * reads.  Each input is also opened with a BAT read on demand (forced by
 * bat_eager_max = 1), which validates the segments of every block read.
 * Invariants checked beyond "no crash": an image that the library opened
 * read-write and wrote to must open again afterwards; the BAT read on
 * demand opens whatever the eager open accepts, and reads it the same.
 */
#include <stdlib.h>

#include "fuzz_common.h"
#include "vhdx_inspect.h"

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

#define LAZY_BLOCKS 65536u /* blocks visited, spread over the disk */

/*
 * Every block (or a spread of LAZY_BLOCKS of them) through the lazy BAT:
 * a sector of each, its state, allocation map and mapping.  eager (may be
 * NULL) is the same image opened eagerly: a block read there must read
 * the same here.
 */
static void read_lazily(struct vhdx_image *img, struct vhdx_image *eager)
{
	static uint8_t a[512], b[512];
	struct vhdx_info info;
	struct vhdx_mapping mp;
	uint64_t step, len;

	vhdx_get_info(img, &info);
	step = info.payload_blocks / LAZY_BLOCKS + 1;
	for (uint64_t pb = 0; pb < info.payload_blocks; pb += step) {
		uint64_t off = pb * info.block_size;
		size_t n = info.virtual_size - off < sizeof(a)
			       ? (size_t)(info.virtual_size - off)
			       : sizeof(a);
		long ra = vhdx_read(img, a, n, off);

		if (eager && vhdx_read(eager, b, n, off) == (long)n &&
		    (ra != (long)n || memcmp(a, b, n)))
			abort(); /* lazy and eager disagree */
		vhdx_block_state(img, pb);
		len = info.block_size;
		vhdx_block_status(img, off, &len);
		vhdx_map(img, off, 2 * (uint64_t)info.block_size, &mp);
	}
	vhdx_get_info(img, &info);
}

static void try_lazy(struct vhdx_io *io, struct vhdx_image *eager)
{
	struct vhdx_open_opts o = {
	    .flags = VHDX_OPEN_RDONLY, .msg = fuzz_quiet, .bat_eager_max = 1};
	struct vhdx_image *img;

	if (vhdx_open(&img, io, &o) != 0) {
		if (eager)
			abort(); /* lazy opens check less, never more */
		return;
	}
	read_lazily(img, eager);
	vhdx_close(img);
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
		try_lazy(&io, img);
		vhdx_close(img);
		mem_io_free(m);
		try_rw(data, size);
		return 0;
	}
	try_lazy(&io, NULL);
	mem_io_free(m);
	return 0;
}
