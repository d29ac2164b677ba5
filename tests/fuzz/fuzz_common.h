/*
 * fuzz_common.h - shared by the libFuzzer targets: a silent message sink and
 * the decoder of the sparse-file input format.
 *
 * Input format of fuzz_open (a sparse image, so that real images fit in a
 * few kilobytes and the fuzzer mutates their structures, not their data):
 *   u32 LE  file size in 4 KiB pages (taken modulo FUZZ_MAX_PAGES, min 1)
 *   then records of: u32 LE page index (modulo the size), 4096 bytes of
 *   page content (a short last record is padded with zeros).
 * tests/fuzz/mkseed.py turns a .vhdx file into this format.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <string.h>

#include "mem_io.h"
#include "vhdx.h"

#define FUZZ_PAGE      4096u
#define FUZZ_MAX_PAGES (64u * 1024u) /* 256 MiB: bounds what the BAT costs */

static void fuzz_quiet(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

static inline uint32_t fuzz_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Build the file described by data into m. */
static inline void fuzz_decode_sparse(struct mem_io *m, const uint8_t *data,
				      size_t size)
{
	uint8_t page[FUZZ_PAGE];
	uint32_t pages;

	if (size < 4)
		return;
	pages = fuzz_le32(data) % FUZZ_MAX_PAGES;
	if (!pages)
		pages = 1;
	mem_io_set_size(m, (uint64_t)pages * FUZZ_PAGE);
	data += 4;
	size -= 4;
	while (size >= 4) {
		uint32_t idx = fuzz_le32(data) % pages;
		size_t n = size - 4 < FUZZ_PAGE ? size - 4 : FUZZ_PAGE;

		memset(page, 0, sizeof(page));
		memcpy(page, data + 4, n);
		mem_io_put(m, (uint64_t)idx * FUZZ_PAGE, page, FUZZ_PAGE);
		data += 4 + n;
		size -= 4 + n;
	}
}

#endif /* FUZZ_COMMON_H */
