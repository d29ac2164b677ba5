/*
 * test_query.c - vhdx_query (the one block query) and what is built on it
 * (vhdx_map, vhdx_block_status), on images built in memory by imgbuild,
 * whose BAT states and block offsets are the oracle: every state, block
 * and sector sizes, the last block cut short by the end of the disk, runs
 * merged only where state and file offsets continue, argument errors.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "mem_io.h"
#include "msgsink.h"
#include "unit.h"
#include "vhdx.h"
#include "vhdx_inspect.h"

#define MiB IB_MiB

static struct msgsink sink = MSGSINK_INIT(VHDX_MSG_DEBUG);

static int open_ro(struct ib_image *im, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = VHDX_OPEN_RDONLY, .msg = msgsink_cb, .msg_opaque = &sink};
	struct vhdx_io io;

	msgsink_reset(&sink);
	mem_io_ops(&io, im->m);
	return vhdx_open(img, &io, &o);
}

/* What the builder put at virtual offset v: source, state, file offset. */
static void expect_at(const struct ib_image *im, uint64_t v,
		      enum vhdx_source *src, unsigned int *state,
		      uint64_t *foff)
{
	uint64_t pb = v / im->p.block_size;

	*state = im->state[pb];
	*src = *state == VHDX_BLOCK_FULLY_PRESENT ? VHDX_SOURCE_FILE
						  : VHDX_SOURCE_ZERO;
	*foff = im->block_off[pb] + v % im->p.block_size;
}

/*
 * Walk the whole disk with vhdx_query: the extents must tile it, each must
 * agree with the builder at both of its ends, and two neighbours must
 * differ (else the query should have merged them).
 */
static void walk(struct vhdx_image *img, const struct ib_image *im)
{
	uint64_t size = im->p.virtual_size, off = 0;
	struct vhdx_extent_info prev = {0};
	bool have_prev = false;

	while (off < size) {
		struct vhdx_extent_info x;
		enum vhdx_source src;
		unsigned int state;
		uint64_t foff, last;

		if (!CHECK_EQ_INT(vhdx_query(img, off, size - off, &x), 0))
			return;
		if (!CHECK(x.length > 0 && x.length <= size - off))
			return;
		CHECK_EQ_INT(x.depth, 0);
		for (int end = 0; end < 2; end++) {
			uint64_t v = end ? off + x.length - 1 : off;

			expect_at(im, v, &src, &state, &foff);
			CHECK_EQ_INT(x.source, src);
			CHECK_EQ_INT(x.state, state);
			if (src == VHDX_SOURCE_FILE)
				CHECK_EQ_U64(x.file_offset + (v - off), foff);
		}
		/* the extent ends where the next byte answers otherwise */
		last = off + x.length;
		if (last < size) {
			expect_at(im, last, &src, &state, &foff);
			CHECK(src != x.source || state != x.state ||
			      (src == VHDX_SOURCE_FILE &&
			       foff != x.file_offset + x.length));
		}
		if (have_prev)
			CHECK(
			    prev.source != x.source || prev.state != x.state ||
			    (x.source == VHDX_SOURCE_FILE &&
			     prev.file_offset + prev.length != x.file_offset));
		prev = x;
		have_prev = true;
		off = last;
	}
	CHECK_EQ_U64(off, size);
}

TEST(states_and_runs)
{
	static const uint32_t block_sizes[] = {1 * MiB, 2 * MiB, 32 * MiB};
	static const uint32_t sectors[] = {512, 4096};
	/* neighbours alike (merged) and different, every state */
	static const uint8_t states[] = {6, 6, 0, 0, 2, 3, 6, 1, 5, 6, 6, 0};
	const unsigned int n = sizeof(states);

	for (unsigned int b = 0; b < 3; b++) {
		for (unsigned int s = 0; s < 2; s++) {
			struct ib_image im;
			struct ib_params p = {0};
			struct vhdx_image *img;

			p.virtual_size = (uint64_t)(n - 1) * block_sizes[b] +
					 block_sizes[b] / 2 + sectors[s];
			p.block_size = block_sizes[b];
			p.logical_sector = sectors[s];
			p.seed = b * 2 + s + 1;
			if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
				continue;
			for (unsigned int pb = 0; pb < n; pb++)
				ib_set_state(&im, pb, states[pb]);
			if (CHECK_EQ_INT(ib_build(&im), 0) &&
			    CHECK_EQ_INT(open_ro(&im, &img), 0)) {
				walk(img, &im);
				CHECK_EQ_INT(vhdx_close(img), 0);
			}
			ib_free(&im);
		}
	}
}

/* vhdx_map and vhdx_block_status agree with the query they are built on. */
TEST(map_and_block_status)
{
	static const uint8_t states[] = {6, 0, 2, 6, 6, 3};
	struct ib_image im;
	struct ib_params p = {
	    .virtual_size = 6 * MiB, .block_size = 1 * MiB, .seed = 7};
	struct vhdx_image *img;

	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	for (unsigned int pb = 0; pb < sizeof(states); pb++)
		ib_set_state(&im, pb, states[pb]);
	if (!CHECK_EQ_INT(ib_build(&im), 0) ||
	    !CHECK_EQ_INT(open_ro(&im, &img), 0)) {
		ib_free(&im);
		return;
	}
	for (uint64_t off = 0; off < p.virtual_size; off += 256 * 1024) {
		struct vhdx_extent_info x;
		struct vhdx_mapping m;
		uint64_t len = p.virtual_size - off;
		int data;

		if (!CHECK_EQ_INT(vhdx_query(img, off, len, &x), 0) ||
		    !CHECK_EQ_INT(vhdx_map(img, off, len, &m), 0))
			break;
		CHECK_EQ_INT(m.kind, x.source == VHDX_SOURCE_FILE
					 ? VHDX_MAP_FILE
					 : VHDX_MAP_ZERO);
		CHECK_EQ_U64(m.length, x.length);
		if (m.kind == VHDX_MAP_FILE)
			CHECK_EQ_U64(m.file_offset, x.file_offset);
		data = vhdx_block_status(img, off, &len);
		CHECK_EQ_INT(data, x.source == VHDX_SOURCE_FILE);
		CHECK_EQ_U64(len, x.length);
	}
	CHECK_EQ_INT(vhdx_close(img), 0);
	ib_free(&im);
}

TEST(bad_arguments)
{
	struct ib_image im;
	struct ib_params p = {.virtual_size = 3 * MiB, .block_size = 1 * MiB};
	struct vhdx_extent_info x;
	struct vhdx_image *img;

	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 1, 6);
	if (CHECK_EQ_INT(ib_build(&im), 0) &&
	    CHECK_EQ_INT(open_ro(&im, &img), 0)) {
		CHECK_EQ_INT(vhdx_query(img, 3 * MiB, 1, &x), -EINVAL);
		CHECK_EQ_INT(vhdx_query(img, 0, 0, &x), -EINVAL);
		/* a length past the end is clipped */
		CHECK_EQ_INT(vhdx_query(img, 2 * MiB + 512, ~0ull, &x), 0);
		CHECK_EQ_U64(x.length, 1 * MiB - 512);
		/* one byte: one byte */
		CHECK_EQ_INT(vhdx_query(img, 1 * MiB + 7, 1, &x), 0);
		CHECK_EQ_U64(x.length, 1);
		CHECK_EQ_INT(x.source, VHDX_SOURCE_FILE);
		CHECK_EQ_U64(x.file_offset, im.block_off[1] + 7);
		CHECK_EQ_INT(vhdx_close(img), 0);
	}
	ib_free(&im);
}

int main(void)
{
	RUN_TEST(states_and_runs);
	RUN_TEST(map_and_block_status);
	RUN_TEST(bad_arguments);
	return unit_done();
}
