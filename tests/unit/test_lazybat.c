/*
 * test_lazybat.c - the BAT read on demand (bat.c): a read-only open of an
 * image whose BAT is larger than bat_eager_max reads no BAT at open and
 * one 32 KiB segment of it when an entry of the segment is first needed.
 *
 * The images are small; opts.bat_eager_max = 1 forces the lazy mode on
 * them.  Each test compares with the eager open of the same image (the
 * default for them): same data, states, allocation map and mappings for
 * every block, dynamic and differencing; a corrupt entry fails only the
 * reads of its segment; a BAT sector carried by a dirty log is read
 * through the log; concurrent first readers of a segment read it once.
 * The last tests open a 64 TiB disk of 32 MiB blocks (a 16 MiB BAT), made
 * by the library and by vhdxtool, and print what the open costs.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgbuild.h"
#include "mem_io.h"
#include "msgsink.h"
#include "unit.h"
#include "vhdx.h"
#include "vhdx_inspect.h"

#define MiB	IB_MiB
#define GiB	(1024ull * MiB)
#define TiB	(1024ull * GiB)
#define SEG	4096ull	  /* entries per segment (VHDX_BAT_SEG_ENTRIES) */
#define SEG_B	(SEG * 8) /* bytes of BAT per segment */
#define LAZY	1ull	  /* bat_eager_max forcing the lazy mode */
#define EAGER	0ull	  /* the default: eager for these images */
#define WIN	8192u	  /* bytes read at each place of a block */
#define THREADS 8

/* ---- message sink: errors and warnings ---- */

static struct msgsink sink = MSGSINK_INIT(VHDX_MSG_WARNING);

static bool sink_has(const char *needle)
{
	return msgsink_has(&sink, 0, needle);
}

/* ---- opening ---- */

struct fileset {
	struct mem_io *parent; /* the only file the parent lookup finds */
};

static int fo_open(void *opaque, const char *path, struct vhdx_io *io,
		   uint64_t id[2])
{
	struct fileset *fs = opaque;

	if (!fs->parent || strcmp(path, "/lazybat/parent.vhdx") != 0)
		return -ENOENT;
	mem_io_ops(io, fs->parent);
	id[0] = 0x1a2b;
	id[1] = 0x3c4d;
	return 0;
}

static void fo_close(void *opaque, struct vhdx_io *io)
{
	(void)opaque;
	(void)io;
}

static struct fileset files;
static const struct vhdx_file_ops file_ops = {fo_open, fo_close, &files};

/* Open m read-only (plus flags) with that bat_eager_max; 0 or -errno. */
static int open_m(struct mem_io *m, uint64_t eager_max, unsigned int flags,
		  struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = VHDX_OPEN_RDONLY | flags,
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	    .path = "/lazybat/child.vhdx",
	    .parent_path = "/lazybat/parent.vhdx",
	    .files = &file_ops,
	    .bat_eager_max = eager_max,
	};
	struct vhdx_io io;

	msgsink_reset(&sink);
	mem_io_ops(&io, m);
	mem_io_reset_counts(m);
	return vhdx_open(img, &io, &o);
}

static struct mem_io_counts counts(struct mem_io *m)
{
	struct mem_io_counts c;

	mem_io_get_counts(m, &c);
	return c;
}

/* ---- images ---- */

/*
 * Dynamic, 1 MiB blocks of 512-byte sectors: CR 4096, so a chunk (4097
 * entries) straddles segments.  20 GiB + 3 MiB: 20483 blocks, 6 chunks,
 * 24582 entries, 7 segments (the last one 6 entries long).
 */
static const struct ib_params geo_a = {
    .virtual_size = 20 * GiB + 3 * MiB,
    .block_size = 1 * MiB,
    .seed = 0x1A2B,
    .fill = 4096,
};

/*
 * 32 MiB blocks of 4096-byte sectors: CR 1024.  10000 blocks (312.5 GiB),
 * 10 chunks, 10250 entries, 3 segments.
 */
static const struct ib_params geo_b = {
    .virtual_size = 10000 * 32 * MiB,
    .block_size = 32 * MiB,
    .logical_sector = 4096,
    .seed = 0x3C4D,
    .fill = 4096,
};

/* A mix of states: present, zero, unmapped, undefined, not present. */
static uint8_t mix_state(uint64_t pb)
{
	static const uint8_t s[11] = {6, 0, 2, 0, 3, 6, 0, 1, 0, 0, 6};

	return s[pb % 11];
}

static int build(struct ib_image *im, const struct ib_params *p)
{
	if (ib_init(im, p) < 0)
		return -1;
	for (uint64_t pb = 0; pb < im->n; pb++)
		ib_set_state(im, pb, mix_state(pb));
	return ib_build(im);
}

static uint64_t seg_of_block(const struct ib_image *im, uint64_t pb)
{
	return ib_bat_index(im, pb) / SEG;
}

/* First block whose BAT entry is in segment seg at or after entry skip. */
static uint64_t block_in_seg(const struct ib_image *im, uint64_t seg,
			     uint64_t skip)
{
	for (uint64_t pb = 0; pb < im->n; pb++)
		if (ib_bat_index(im, pb) >= seg * SEG + skip &&
		    seg_of_block(im, pb) == seg)
			return pb;
	return UINT64_MAX;
}

/* ---- comparing two opens ---- */

typedef void (*expect_fn)(const void *model, uint64_t v, uint8_t *buf,
			  size_t len);

static void ib_expect(const void *model, uint64_t v, uint8_t *buf, size_t len)
{
	ib_expected(model, v, buf, len);
}

/* The places of block pb read by compare_block: start, middle, end. */
static void block_windows(uint64_t pb, uint64_t bs, uint64_t vsize,
			  uint64_t w[3])
{
	uint64_t start = pb * bs, end = start + bs;

	if (end > vsize)
		end = vsize;
	w[0] = start;
	w[1] = start + (end - start) / 2 - WIN / 2;
	w[2] = end - WIN;
}

/*
 * Read the windows of block pb through both images, compare with each
 * other and with the model; compare states, allocation map and mapping.
 */
static bool compare_block(struct vhdx_image *lazy, struct vhdx_image *eager,
			  uint64_t pb, expect_fn expect, const void *model)
{
	static uint8_t a[WIN], b[WIN], want[WIN];
	struct vhdx_info info;
	struct vhdx_mapping ma, mb;
	uint64_t w[3], la, lb;
	bool ok = true;

	vhdx_get_info(eager, &info);
	block_windows(pb, info.block_size, info.virtual_size, w);
	for (int k = 0; k < 3; k++) {
		long ra = vhdx_read(lazy, a, WIN, w[k]);
		long rb = vhdx_read(eager, b, WIN, w[k]);

		expect(model, w[k], want, WIN);
		ok &= ra == WIN && rb == WIN;
		ok &= !memcmp(a, b, WIN) && !memcmp(a, want, WIN);
	}
	ok &= vhdx_block_state(lazy, pb) == vhdx_block_state(eager, pb);
	la = lb = 3 * (uint64_t)info.block_size;
	ok &= vhdx_block_status(lazy, w[0], &la) ==
		  vhdx_block_status(eager, w[0], &lb) &&
	      la == lb;
	ok &= vhdx_map(lazy, w[0], 3 * (uint64_t)info.block_size, &ma) == 0 &&
	      vhdx_map(eager, w[0], 3 * (uint64_t)info.block_size, &mb) == 0;
	ok &= ma.kind == mb.kind && ma.length == mb.length &&
	      (ma.kind != VHDX_MAP_FILE || ma.file_offset == mb.file_offset);
	if (!ok)
		unit_note("block %llu differs between lazy and eager opens, "
			  "or from the model",
			  (unsigned long long)pb);
	return ok;
}

static bool compare_all(struct vhdx_image *lazy, struct vhdx_image *eager,
			uint64_t n, expect_fn expect, const void *model)
{
	uint64_t bad = 0;

	for (uint64_t pb = 0; pb < n && bad < 5; pb++)
		bad += !compare_block(lazy, eager, pb, expect, model);
	return CHECK_EQ_U64(bad, 0);
}

static void check_counts_match(struct vhdx_image *lazy,
			       struct vhdx_image *eager)
{
	struct vhdx_info li, ei;

	vhdx_get_info(lazy, &li);
	vhdx_get_info(eager, &ei);
	CHECK_EQ_INT(ei.state_count_known, 1);
	CHECK_EQ_INT(li.state_count_known, 1);
	for (int s = 0; s < 8; s++)
		CHECK_EQ_U64(li.state_count[s], ei.state_count[s]);
	CHECK_EQ_U64(li.bat_entries, ei.bat_entries);
}

/* ---- tests ---- */

/* Open reads no BAT at all; reading a block reads exactly its segment. */
TEST(open_reads_no_bat)
{
	struct ib_image im;
	struct vhdx_image *img, *eager;
	struct vhdx_info info;
	struct mem_io_counts c;
	uint8_t buf[4096];
	uint64_t used, pb, seg, eager_open_bytes;

	if (!CHECK_EQ_INT(build(&im, &geo_a), 0))
		goto out;
	used = im.sb * (im.cr + 1);
	CHECK_EQ_U64(used, 24582);
	mem_io_watch(im.m, im.bat_offset, im.bat_length);

	/* eager (the default for 192 KiB of BAT): all of it at open */
	if (!CHECK_EQ_INT(open_m(im.m, EAGER, 0, &eager), 0))
		goto out;
	c = counts(im.m);
	CHECK_EQ_U64(c.watch_bytes, used * 8);
	eager_open_bytes = c.bytes_read;

	if (!CHECK_EQ_INT(open_m(im.m, LAZY, 0, &img), 0)) {
		vhdx_close(eager);
		goto out;
	}
	c = counts(im.m);
	CHECK_EQ_U64(c.watch_reads, 0);
	CHECK_EQ_U64(c.watch_bytes, 0);
	CHECK_EQ_U64(c.bytes_read + used * 8, eager_open_bytes);
	unit_note("open read %llu bytes lazily, %llu eagerly",
		  (unsigned long long)c.bytes_read,
		  (unsigned long long)eager_open_bytes);
	vhdx_get_info(img, &info);
	CHECK_EQ_INT(info.state_count_known, 0);
	CHECK_EQ_U64(info.state_count[6], 0);
	CHECK_EQ_U64(info.bat_entries, used);

	/* a block in the middle of segment 3: that segment, nothing else */
	seg = 3;
	pb = block_in_seg(&im, seg, 2000);
	mem_io_reset_counts(im.m);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), pb * im.p.block_size),
		     sizeof(buf));
	c = counts(im.m);
	CHECK_EQ_U64(c.watch_reads, 1);
	CHECK_EQ_U64(c.watch_bytes, SEG_B);
	CHECK_EQ_U64(c.watch_lo, im.bat_offset + seg * SEG_B);
	CHECK_EQ_U64(c.watch_hi, im.bat_offset + (seg + 1) * SEG_B);

	/* again, and another block of the segment: no BAT read */
	mem_io_reset_counts(im.m);
	vhdx_read(img, buf, sizeof(buf), pb * im.p.block_size);
	vhdx_read(img, buf, sizeof(buf), (pb + 1) * im.p.block_size);
	CHECK_EQ_U64(counts(im.m).watch_bytes, 0);

	/* the last, short segment: its 6 entries */
	mem_io_reset_counts(im.m);
	CHECK_EQ_U64(vhdx_block_state(img, im.n - 1), mix_state(im.n - 1));
	c = counts(im.m);
	CHECK_EQ_U64(seg_of_block(&im, im.n - 1), 5);
	CHECK_EQ_U64(c.watch_lo, im.bat_offset + 5 * SEG_B);
	CHECK_EQ_U64(c.watch_bytes, SEG_B);
	/* describing reads the rest (segments 0-2, 4, 6), then counts are in */
	{
		struct vhdx_description *d = NULL;

		mem_io_reset_counts(im.m);
		CHECK_EQ_INT(vhdx_describe(img, &d), 0);
		vhdx_describe_free(d);
		c = counts(im.m);
		CHECK_EQ_U64(c.watch_reads, 5);
		CHECK_EQ_U64(c.watch_bytes, used * 8 - 2 * SEG_B);
		check_counts_match(img, eager);
	}
	vhdx_close(img);
	vhdx_close(eager);
out:
	ib_free(&im);
}

/* Every block reads the same through both opens, for two geometries. */
TEST(dynamic_same_as_eager)
{
	const struct ib_params *geos[2] = {&geo_a, &geo_b};

	for (int g = 0; g < 2; g++) {
		struct ib_image im;
		struct vhdx_image *lazy = NULL, *eager = NULL;
		struct vhdx_description *d = NULL;

		if (!CHECK_EQ_INT(build(&im, geos[g]), 0))
			goto next;
		if (!CHECK_EQ_INT(open_m(im.m, EAGER, 0, &eager), 0) ||
		    !CHECK_EQ_INT(open_m(im.m, LAZY, 0, &lazy), 0))
			goto next;
		compare_all(lazy, eager, im.n, ib_expect, &im);
		CHECK_EQ_U64(sink.n_err, 0);
		CHECK_EQ_INT(vhdx_describe(lazy, &d), 0);
		vhdx_describe_free(d);
		check_counts_match(lazy, eager);
		/* nothing written, ever */
		CHECK_EQ_U64(mem_io_modifications(im.m), 0);
	next:
		vhdx_close(lazy);
		vhdx_close(eager);
		ib_free(&im);
	}
}

/* VHDX_OPEN_FULL_BAT, or a threshold at the BAT's size: eager. */
TEST(full_bat_flag_and_threshold)
{
	struct ib_image im;
	struct vhdx_image *img;
	struct vhdx_info info;
	uint64_t bytes;

	if (!CHECK_EQ_INT(build(&im, &geo_b), 0))
		goto out;
	bytes = im.sb * (im.cr + 1) * 8;
	mem_io_watch(im.m, im.bat_offset, im.bat_length);
	if (CHECK_EQ_INT(open_m(im.m, LAZY, VHDX_OPEN_FULL_BAT, &img), 0)) {
		CHECK_EQ_U64(counts(im.m).watch_bytes, bytes);
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.state_count_known, 1);
		CHECK(info.state_count[6] > 0);
		vhdx_close(img);
	}
	if (CHECK_EQ_INT(open_m(im.m, bytes, 0, &img), 0)) {
		CHECK_EQ_U64(counts(im.m).watch_bytes, bytes);
		vhdx_close(img);
	}
	if (CHECK_EQ_INT(open_m(im.m, bytes - 1, 0, &img), 0)) {
		CHECK_EQ_U64(counts(im.m).watch_bytes, 0);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

/*
 * A corrupt entry in segment 2: the lazy open succeeds, blocks of segment
 * 2 fail with EIO and one message naming the entry, the others read; the
 * eager open refuses the image with the same message.
 */
struct corruption {
	const char *name;
	uint64_t (*entry)(struct ib_image *im, uint64_t idx, uint64_t *idx2);
	const char *msg;
};

static uint64_t bad_reserved(struct ib_image *im, uint64_t idx, uint64_t *i2)
{
	(void)i2;
	return ib_get_bat(im, idx) | 0x100;
}

static uint64_t bad_in_header(struct ib_image *im, uint64_t idx, uint64_t *i2)
{
	(void)im;
	(void)idx;
	(void)i2;
	return 0x0 | 6;
}

static uint64_t bad_past_eof(struct ib_image *im, uint64_t idx, uint64_t *i2)
{
	(void)idx;
	(void)i2;
	return (im->file_size + 64 * MiB) | 6;
}

static uint64_t bad_state(struct ib_image *im, uint64_t idx, uint64_t *i2)
{
	(void)im;
	(void)idx;
	(void)i2;
	return 7; /* PARTIALLY_PRESENT in a dynamic image */
}

/* Another present block of the segment points at the same space. */
static uint64_t bad_overlap(struct ib_image *im, uint64_t idx, uint64_t *i2)
{
	for (uint64_t j = idx + 1; j / SEG == idx / SEG; j++)
		if ((ib_get_bat(im, j) & 7) == 6) {
			*i2 = j;
			return ib_get_bat(im, j);
		}
	return 0;
}

static const struct corruption corruptions[] = {
    {"reserved bits", bad_reserved, "has reserved bits set"},
    {"in the header section", bad_in_header, "inside the header section"},
    {"past the end of file", bad_past_eof, "outside the file"},
    {"state 7 in a dynamic image", bad_state, "PARTIALLY_PRESENT"},
    {"overlap in the segment", bad_overlap, "overlap in the file"},
};

static void corrupt_case(const struct corruption *cr)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t buf[4096], want[4096];
	uint64_t pb, idx, idx2 = UINT64_MAX, e, seg = 2;
	unsigned int errs;
	char needle[64];
	bool ok = true;

	if (!CHECK_EQ_INT(build(&im, &geo_a), 0))
		goto out;
	pb = block_in_seg(&im, seg, 1000);
	while (pb < im.n && mix_state(pb) != 6)
		pb++;
	idx = ib_bat_index(&im, pb);
	e = cr->entry(&im, idx, &idx2);
	ib_put_bat(&im, idx, e);
	/* "entry N ...", or "entries N and M overlap" in either order */
	if (idx2 == UINT64_MAX)
		snprintf(needle, sizeof(needle), "entry %llu ",
			 (unsigned long long)idx);
	else
		snprintf(needle, sizeof(needle), " %llu ",
			 (unsigned long long)idx2);

	/* eager: refused */
	ok &= CHECK(open_m(im.m, EAGER, 0, &img) < 0);
	ok &= CHECK(sink_has(cr->msg));
	ok &= CHECK(sink_has(needle));

	ok &= CHECK_EQ_INT(open_m(im.m, LAZY, 0, &img), 0);
	if (!ok)
		goto dump;
	ok &= CHECK_EQ_U64(sink.n_err, 0);
	/* segment 1 and 3 read fine */
	for (uint64_t s = 1; s <= 3; s += 2) {
		uint64_t q = block_in_seg(&im, s, 5);

		while (q < im.n && mix_state(q) != 6)
			q++;
		ok &= CHECK_EQ_INT(
		    vhdx_read(img, buf, sizeof(buf), q * im.p.block_size),
		    sizeof(buf));
		ib_expected(&im, q * im.p.block_size, want, sizeof(want));
		ok &= CHECK_EQ_MEM(buf, want, sizeof(buf));
	}
	/* the broken entry, and another block of its segment */
	ok &=
	    CHECK_EQ_INT(vhdx_read(img, buf, 512, pb * im.p.block_size), -EIO);
	ok &= CHECK_EQ_U64(sink.n_err, 1);
	ok &= CHECK(sink_has(cr->msg));
	ok &= CHECK(sink_has(needle));
	ok &= CHECK(sink_has("fail with EIO"));
	errs = sink.n_err;
	ok &= CHECK_EQ_INT(
	    vhdx_read(img, buf, 512, block_in_seg(&im, seg, 0) * MiB), -EIO);
	ok &= CHECK_EQ_INT(vhdx_block_state(img, pb), -EIO);
	{
		uint64_t len = MiB;

		ok &= CHECK_EQ_INT(
		    vhdx_block_status(img, pb * im.p.block_size, &len), -EIO);
	}
	/* reported once */
	ok &= CHECK_EQ_U64(sink.n_err, errs);
	/* a block of segment 4, read after the failure */
	ok &= CHECK_EQ_INT(
	    vhdx_read(img, buf, 512, block_in_seg(&im, 4, 0) * MiB), 512);
	vhdx_close(img);
dump:
	if (!ok) {
		unit_note("case \"%s\" (entry %llu)", cr->name,
			  (unsigned long long)idx);
		msgsink_dump(&sink);
	}
out:
	ib_free(&im);
}

TEST(corrupt_segment)
{
	for (size_t i = 0; i < sizeof(corruptions) / sizeof(corruptions[0]);
	     i++)
		corrupt_case(&corruptions[i]);
}

/*
 * Not checked lazily: two blocks of different segments sharing space.  A
 * read-only open cannot be harmed by it; the eager open refuses it.
 */
TEST(cross_segment_overlap_not_checked)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t a[4096], b[4096];
	uint64_t p1, p2;

	if (!CHECK_EQ_INT(build(&im, &geo_a), 0))
		goto out;
	p1 = block_in_seg(&im, 1, 0);
	p2 = block_in_seg(&im, 4, 0);
	while (mix_state(p1) != 6)
		p1++;
	ib_put_bat(&im, ib_bat_index(&im, p2),
		   ib_get_bat(&im, ib_bat_index(&im, p1)));
	CHECK(open_m(im.m, EAGER, 0, &img) < 0);
	CHECK(sink_has("overlap in the file"));
	if (CHECK_EQ_INT(open_m(im.m, LAZY, 0, &img), 0)) {
		CHECK_EQ_INT(vhdx_read(img, a, sizeof(a), p1 * MiB), sizeof(a));
		CHECK_EQ_INT(vhdx_read(img, b, sizeof(b), p2 * MiB), sizeof(b));
		CHECK_EQ_MEM(a, b, sizeof(a));
		CHECK_EQ_U64(sink.n_err, 0);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

/* A failed read of a segment is not remembered: the next access retries. */
TEST(segment_read_error_retried)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t buf[4096], want[4096];
	uint64_t pb;

	if (!CHECK_EQ_INT(build(&im, &geo_a), 0))
		goto out;
	if (!CHECK_EQ_INT(open_m(im.m, LAZY, 0, &img), 0))
		goto out;
	pb = block_in_seg(&im, 2, 0);
	mem_io_fail_pread(im.m, 1, EIO);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), pb * MiB), -EIO);
	CHECK(sink_has("BAT: reading entries 8192 to 12287"));
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), pb * MiB), sizeof(buf));
	ib_expected(&im, pb * MiB, want, sizeof(want));
	CHECK_EQ_MEM(buf, want, sizeof(buf));
	vhdx_close(img);
out:
	ib_free(&im);
}

/*
 * A dirty log whose entry rewrites BAT sectors in segments 1, 3 and 5
 * (the file's BAT says NOT_PRESENT there): read through the overlay.
 */
TEST(log_carries_bat_sectors)
{
	struct ib_image im;
	struct vhdx_image *lazy, *eager;
	uint64_t logged[3];

	if (!CHECK_EQ_INT(ib_init(&im, &geo_a), 0))
		return;
	for (uint64_t pb = 0; pb < im.n; pb++)
		ib_set_state(&im, pb, mix_state(pb));
	for (int k = 0; k < 3; k++) {
		/* segment 5 holds the last 3 blocks */
		logged[k] =
		    block_in_seg(&im, 1 + 2 * (uint64_t)k, k < 2 ? 3000 : 1);
		ib_set_log_only(&im, logged[k]);
	}
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	for (int k = 0; k < 3; k++)
		CHECK_EQ_U64(ib_get_bat(&im, ib_bat_index(&im, logged[k])), 0);
	if (!CHECK_EQ_INT(open_m(im.m, EAGER, 0, &eager), 0))
		goto out;
	if (CHECK_EQ_INT(open_m(im.m, LAZY, 0, &lazy), 0)) {
		for (int k = 0; k < 3; k++) {
			CHECK_EQ_INT(vhdx_block_state(lazy, logged[k]), 6);
			CHECK(compare_block(lazy, eager, logged[k], ib_expect,
					    &im));
		}
		compare_all(lazy, eager, im.n, ib_expect, &im);
		vhdx_close(lazy);
	}
	vhdx_close(eager);
	CHECK_EQ_U64(mem_io_modifications(im.m), 0);
out:
	ib_free(&im);
}

/* ---- concurrent first readers of one segment ---- */

struct racer {
	pthread_barrier_t *go;
	struct vhdx_image *img;
	const struct ib_image *im;
	uint64_t pb;
	bool ok;
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	uint8_t got[WIN], want[WIN];
	uint64_t off = r->pb * r->im->p.block_size;

	pthread_barrier_wait(r->go);
	r->ok = vhdx_read(r->img, got, WIN, off) == WIN;
	ib_expected(r->im, off, want, WIN);
	r->ok &= !memcmp(got, want, WIN);
	r->ok &= vhdx_block_state(r->img, r->pb) == mix_state(r->pb);
	return NULL;
}

TEST(concurrent_first_reads)
{
	struct ib_image im;
	pthread_barrier_t go;
	pthread_t t[THREADS];
	struct racer r[THREADS];

	if (!CHECK_EQ_INT(build(&im, &geo_a), 0))
		goto out;
	mem_io_watch(im.m, im.bat_offset, im.bat_length);
	for (uint64_t seg = 0; seg < 6; seg++) {
		struct vhdx_image *img;
		int started = 0;

		if (!CHECK_EQ_INT(open_m(im.m, LAZY, 0, &img), 0))
			break;
		pthread_barrier_init(&go, NULL, THREADS);
		for (int i = 0; i < THREADS; i++) {
			/* half on one block, half spread over the segment */
			uint64_t first = block_in_seg(&im, seg, 0);
			uint64_t pb = first + (i % 2 ? 0 : 400 * (uint64_t)i);

			if (pb >= im.n || seg_of_block(&im, pb) != seg)
				pb = first;
			r[i] = (struct racer){&go, img, &im, pb, false};
			if (CHECK_EQ_INT(
				pthread_create(&t[i], NULL, racer_main, &r[i]),
				0))
				started++;
		}
		if (started < THREADS) {
			/* cannot happen; do not leave the others waiting */
			abort();
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_join(t[i], NULL);
			CHECK(r[i].ok);
		}
		pthread_barrier_destroy(&go);
		/* the segment was read once */
		CHECK_EQ_U64(counts(im.m).watch_reads, 1);
		CHECK_EQ_U64(counts(im.m).watch_bytes, SEG_B);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

/* ---- differencing ---- */

#define CHILD_SEED   0xC417Dull
#define PARTIAL_SEED 0x9A27ull
#define MAX_WRITES   512

/* What the child reads: the parent, its writes, its partial blocks. */
struct child_model {
	const struct ib_image *parent;
	uint64_t w_off[MAX_WRITES];
	size_t n_w;
	uint64_t partial[2]; /* PARTIALLY_PRESENT blocks */
	uint64_t bat_offset;
};

/* Sector s of a partial block (of 2048) is in the child. */
static bool partial_sector(uint64_t s)
{
	return (s / 5) % 3 == 0;
}

static void child_expect(const void *model, uint64_t v, uint8_t *buf,
			 size_t len)
{
	const struct child_model *cm = model;

	ib_expected(cm->parent, v, buf, len);
	for (size_t i = 0; i < cm->n_w; i++) {
		uint64_t lo = cm->w_off[i], hi = lo + WIN;

		for (uint64_t x = lo > v ? lo : v; x < hi && x < v + len; x++)
			buf[x - v] = ib_pattern(CHILD_SEED, x);
	}
	for (int k = 0; k < 2; k++) {
		uint64_t lo = cm->partial[k] * MiB, hi = lo + MiB;

		for (uint64_t x = lo > v ? lo : v; x < hi && x < v + len; x++)
			if (partial_sector((x - lo) / 512))
				buf[x - v] = ib_pattern(PARTIAL_SEED, x);
	}
}

static int open_child_rw(struct mem_io *m, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	    .path = "/lazybat/child.vhdx",
	    .parent_path = "/lazybat/parent.vhdx",
	    .files = &file_ops,
	};
	struct vhdx_io io;

	msgsink_reset(&sink);
	mem_io_ops(&io, m);
	return vhdx_open(img, &io, &o);
}

static bool child_write(struct vhdx_image *img, struct child_model *cm,
			uint64_t off)
{
	uint8_t buf[WIN];

	for (uint64_t x = 0; x < WIN; x++)
		buf[x] = ib_pattern(CHILD_SEED, off + x);
	if (cm->n_w == MAX_WRITES)
		return false;
	cm->w_off[cm->n_w++] = off;
	return vhdx_write(img, buf, WIN, off) == WIN;
}

/*
 * Blocks of 1 MiB (CR 4096) written here and there, three of them over
 * present parent blocks (copied up), and two PARTIALLY_PRESENT blocks
 * whose sector bitmap entry lies in the next segment.
 */
static struct mem_io *make_child(struct ib_image *parent,
				 struct child_model *cm)
{
	struct vhdx_create_opts co = {
	    .type = VHDX_TYPE_DIFFERENCING,
	    .virtual_size = parent->p.virtual_size,
	    .block_size = 1 * MiB,
	    .logical_sector = 512,
	    .parent_relative = "parent.vhdx",
	};
	struct mem_io *m = mem_io_new();
	struct vhdx_image *img;
	struct vhdx_description *d;
	struct vhdx_io io;
	uint8_t *blk = malloc(MiB);
	uint64_t end;
	bool ok = true;

	memset(cm, 0, sizeof(*cm));
	cm->parent = parent;
	memcpy(co.parent_linkage, parent->data_write_guid, 16);
	memcpy(co.disk_id, parent->disk_id, 16);
	files.parent = parent->m;
	mem_io_ops(&io, m);
	if (!blk || !CHECK_EQ_INT(vhdx_create(&io, &co), 0) ||
	    !CHECK_EQ_INT(open_child_rw(m, &img), 0))
		goto fail;
	for (uint64_t pb = 1; pb < parent->n && ok; pb += 61)
		ok &= child_write(img, cm, pb * MiB);
	for (uint64_t pb = 0; pb < parent->n && ok; pb += 4400)
		ok &= child_write(img, cm, pb * MiB + MiB / 2);
	ok &= CHECK_EQ_INT(vhdx_close(img), 0);
	if (!CHECK(ok) ||
	    !CHECK_EQ_INT(open_m(m, EAGER, VHDX_OPEN_NO_PARENT, &img), 0))
		goto fail;
	ok = CHECK_EQ_INT(vhdx_describe(img, &d), 0);
	cm->bat_offset = ok ? d->bat_offset : 0;
	vhdx_describe_free(d);
	vhdx_close(img);
	if (!ok)
		goto fail;

	/* block 4096 over an UNMAPPED parent block, 8200 over a present one */
	cm->partial[0] = 4096;
	cm->partial[1] = 8200;
	end = (mem_io_get_size(m) + MiB - 1) / MiB * MiB;
	for (int k = 0; k < 2; k++) {
		uint64_t pb = cm->partial[k], chunk = pb / 4096;
		uint64_t bm = end + 2 * (uint64_t)k * MiB, data = bm + MiB;
		uint64_t sb_idx = chunk * 4097 + 4096, idx = pb + chunk;

		memset(blk, 0, MiB);
		for (uint64_t s = 0; s < 2048; s++) {
			uint64_t bit = (pb % 4096) * 2048 + s;

			if (partial_sector(s))
				blk[bit / 8] |= (uint8_t)(1u << (bit % 8));
		}
		mem_io_put(m, bm, blk, MiB);
		for (uint64_t x = 0; x < MiB; x++)
			blk[x] = ib_pattern(PARTIAL_SEED, pb * MiB + x);
		mem_io_put(m, data, blk, MiB);
		mem_io_put_le64(m, cm->bat_offset + 8 * sb_idx, bm | 6);
		mem_io_put_le64(m, cm->bat_offset + 8 * idx, data | 7);
		/* the chunk's bitmap entry is in the next segment */
		CHECK_EQ_U64(sb_idx / SEG, idx / SEG + 1);
	}
	free(blk);
	return m;
fail:
	free(blk);
	mem_io_free(m);
	return NULL;
}

TEST(differencing_same_as_eager)
{
	static struct child_model cm;
	struct ib_image parent;
	struct mem_io *child = NULL;
	struct vhdx_image *lazy = NULL, *eager = NULL;
	struct vhdx_description *d = NULL;
	struct ib_params p = geo_a;
	uint8_t buf[512];
	uint64_t pidx, pb;

	p.virtual_size = 12 * GiB + 5 * MiB; /* 16388 entries, 5 segments */
	if (!CHECK_EQ_INT(build(&parent, &p), 0))
		goto out;
	child = make_child(&parent, &cm);
	if (!CHECK(child != NULL))
		goto out;
	mem_io_watch(parent.m, parent.bat_offset, parent.bat_length);
	if (!CHECK_EQ_INT(open_m(child, EAGER, 0, &eager), 0)) {
		msgsink_dump(&sink);
		goto out;
	}
	CHECK_EQ_U64(counts(parent.m).watch_bytes, parent.bat_entries * 8);
	mem_io_reset_counts(parent.m);
	if (!CHECK_EQ_INT(open_m(child, LAZY, 0, &lazy), 0))
		goto out;
	/* the parent inherits the threshold: its BAT is not read either */
	CHECK_EQ_U64(counts(parent.m).watch_bytes, 0);
	compare_all(lazy, eager, parent.n, child_expect, &cm);
	CHECK_EQ_U64(sink.n_err, 0);
	CHECK_EQ_INT(vhdx_block_state(lazy, 4096), 7);
	CHECK_EQ_INT(vhdx_describe(lazy, &d), 0);
	vhdx_describe_free(d);
	check_counts_match(lazy, eager);
	vhdx_close(lazy);
	lazy = NULL;

	/* a corrupt parent entry fails that block only, named as the parent's */
	pb = 2 * 4096 + 70; /* segment 2 of the parent, not in the child */
	while (mix_state(pb) != 6 || pb % 61 == 1)
		pb++;
	CHECK_EQ_U64(seg_of_block(&parent, pb), 2);
	pidx = ib_bat_index(&parent, pb);
	ib_put_bat(&parent, pidx, ib_get_bat(&parent, pidx) | 0x80000);
	if (CHECK_EQ_INT(open_m(child, LAZY, 0, &lazy), 0)) {
		char needle[96];

		snprintf(needle, sizeof(needle),
			 "parent /lazybat/parent.vhdx: BAT: entry %llu ",
			 (unsigned long long)pidx);
		CHECK_EQ_INT(vhdx_read(lazy, buf, sizeof(buf), pb * MiB), -EIO);
		CHECK(sink_has(needle));
		CHECK_EQ_INT(vhdx_read(lazy, buf, sizeof(buf), 1 * MiB),
			     sizeof(buf));
		vhdx_close(lazy);
		lazy = NULL;
	}
	ib_put_bat(&parent, pidx, ib_get_bat(&parent, pidx) & ~0x80000ull);

	/*
	 * PARTIALLY_PRESENT in chunk 0, whose bitmap entry (4096, segment 1)
	 * is NOT_PRESENT: the eager open refuses, the lazy one fails the read.
	 */
	mem_io_put_le64(child, cm.bat_offset + 8 * 100,
			(mem_io_get_size(child) - MiB) | 7);
	CHECK(open_m(child, EAGER, 0, &lazy) < 0);
	CHECK(sink_has("block 100 is PARTIALLY_PRESENT but its chunk has no "
		       "sector bitmap (entry 4096)"));
	if (CHECK_EQ_INT(open_m(child, LAZY, 0, &lazy), 0)) {
		CHECK_EQ_INT(vhdx_read(lazy, buf, sizeof(buf), 100 * MiB),
			     -EIO);
		CHECK(sink_has("block 100 is PARTIALLY_PRESENT but its chunk "
			       "has no sector bitmap (entry 4096)"));
		CHECK_EQ_U64(sink.n_err, 1);
		CHECK_EQ_INT(vhdx_read(lazy, buf, sizeof(buf), 100 * MiB),
			     -EIO);
		CHECK_EQ_U64(sink.n_err, 1);
		CHECK_EQ_INT(vhdx_read(lazy, buf, sizeof(buf), 4096 * MiB),
			     sizeof(buf));
	}
out:
	vhdx_close(lazy);
	vhdx_close(eager);
	mem_io_free(child);
	files.parent = NULL;
	ib_free(&parent);
}

/* ---- a 64 TiB disk of 32 MiB blocks: a 16 MiB BAT ---- */

#define HUGE_SIZE    (64 * TiB)
#define HUGE_BLOCK   (32 * MiB)
#define HUGE_ENTRIES 2113536ull /* 16384 chunks of 128 + 1 */

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Resident memory of this process in KiB (0 if unknown). */
static uint64_t rss_kib(void)
{
	unsigned long size, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

TEST(huge_library)
{
	struct vhdx_create_opts co = {
	    .type = VHDX_TYPE_DYNAMIC,
	    .virtual_size = HUGE_SIZE,
	    .block_size = HUGE_BLOCK,
	};
	struct mem_io *m = mem_io_new();
	struct vhdx_open_opts o = {.msg = msgsink_cb, .msg_opaque = &sink};
	struct vhdx_image *img;
	struct vhdx_description *d;
	struct vhdx_info info;
	struct mem_io_counts c;
	struct timespec t0;
	struct vhdx_io io;
	uint8_t w[4096], r[4096];
	double ms;

	for (size_t i = 0; i < sizeof(w); i++)
		w[i] = (uint8_t)(i * 7 + 1);
	mem_io_ops(&io, m);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0) ||
	    !CHECK_EQ_INT(vhdx_open(&img, &io, &o), 0))
		goto out;
	CHECK_EQ_INT(vhdx_write(img, w, sizeof(w), HUGE_SIZE - sizeof(w)),
		     sizeof(w));
	CHECK_EQ_INT(vhdx_write(img, w, sizeof(w), 0), sizeof(w));
	CHECK_EQ_INT(vhdx_close(img), 0);
	if (!CHECK_EQ_INT(open_m(m, EAGER, VHDX_OPEN_FULL_BAT, &img), 0))
		goto out;
	if (CHECK_EQ_INT(vhdx_describe(img, &d), 0)) {
		mem_io_watch(m, d->bat_offset, d->bat_length);
		vhdx_describe_free(d);
	}
	vhdx_close(img);

	/* a read-only open with the default threshold */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!CHECK_EQ_INT(open_m(m, EAGER, 0, &img), 0))
		goto out;
	ms = ms_since(&t0);
	c = counts(m);
	CHECK(c.bytes_read < 1 * MiB);
	CHECK_EQ_U64(c.watch_bytes, 0);
	unit_note("64 TiB, 32 MiB blocks, read-only: open read %llu bytes in "
		  "%lu preads (%.2f ms)",
		  (unsigned long long)c.bytes_read, c.pread, ms);
	vhdx_get_info(img, &info);
	CHECK_EQ_U64(info.bat_entries, HUGE_ENTRIES);
	CHECK_EQ_INT(info.state_count_known, 0);
	mem_io_reset_counts(m);
	CHECK_EQ_INT(vhdx_read(img, r, sizeof(r), HUGE_SIZE - sizeof(r)),
		     sizeof(r));
	CHECK_EQ_MEM(r, w, sizeof(r));
	CHECK_EQ_U64(counts(m).watch_bytes, SEG_B);
	CHECK_EQ_INT(vhdx_read(img, r, sizeof(r), 0), sizeof(r));
	CHECK_EQ_MEM(r, w, sizeof(r));
	CHECK_EQ_INT(vhdx_block_state(img, HUGE_SIZE / HUGE_BLOCK - 2), 0);
	vhdx_close(img);

	/* the same with the whole BAT */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (CHECK_EQ_INT(open_m(m, EAGER, VHDX_OPEN_FULL_BAT, &img), 0)) {
		ms = ms_since(&t0);
		c = counts(m);
		CHECK_EQ_U64(c.watch_bytes, HUGE_ENTRIES * 8);
		unit_note("with VHDX_OPEN_FULL_BAT: %llu bytes (%.2f ms)",
			  (unsigned long long)c.bytes_read, ms);
		vhdx_get_info(img, &info);
		CHECK_EQ_U64(info.state_count[6], 2);
		CHECK_EQ_U64(info.state_count[0], HUGE_SIZE / HUGE_BLOCK - 2);
		vhdx_close(img);
	}
out:
	mem_io_free(m);
}

/* pread through the fd backend, counted. */
struct counted_io {
	struct vhdx_io inner;
	uint64_t bytes;
	unsigned long calls;
};

static long counted_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct counted_io *c = opaque;
	long n = c->inner.pread(c->inner.opaque, buf, len, off);

	__atomic_add_fetch(&c->calls, 1, __ATOMIC_RELAXED);
	if (n > 0)
		__atomic_add_fetch(&c->bytes, (uint64_t)n, __ATOMIC_RELAXED);
	return n;
}

static int counted_size(void *opaque, uint64_t *size)
{
	struct counted_io *c = opaque;

	return c->inner.size(c->inner.opaque, size);
}

static int run_tool(const char *tool, const char *image)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execl(tool, tool, "create", "-q", "-s", "64T", "--block-size",
		      "32M", image, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Open the file read-only; print time, bytes and memory of the open. */
static void open_file(const char *path, unsigned int flags, const char *what)
{
	struct vhdx_open_opts o = {.flags = VHDX_OPEN_RDONLY | flags,
				   .msg = msgsink_cb,
				   .msg_opaque = &sink};
	struct counted_io c = {0};
	struct vhdx_image *img;
	struct vhdx_io io = {0};
	struct timespec t0;
	uint64_t rss0, rss1, rss2, bytes;
	unsigned long calls;
	uint8_t buf[4096], zero[4096] = {0};
	int fd = open(path, O_RDONLY);
	double ms;

	if (!CHECK(fd >= 0))
		return;
	vhdx_io_fd_init(&c.inner, &fd);
	io.opaque = &c;
	io.pread = counted_pread;
	io.size = counted_size;
	msgsink_reset(&sink);
	rss0 = rss_kib();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (CHECK_EQ_INT(vhdx_open(&img, &io, &o), 0)) {
		ms = ms_since(&t0);
		rss1 = rss_kib();
		bytes = c.bytes;
		calls = c.calls;
		if (!flags)
			CHECK(bytes < 1 * MiB);
		else
			CHECK(bytes > HUGE_ENTRIES * 8);
		CHECK_EQ_INT(
		    vhdx_read(img, buf, sizeof(buf), HUGE_SIZE - sizeof(buf)),
		    sizeof(buf));
		CHECK_EQ_MEM(buf, zero, sizeof(buf));
		rss2 = rss_kib();
		unit_note("%s: open %.2f ms, %llu bytes in %lu preads, "
			  "resident +%llu KiB (+%llu KiB after reading the "
			  "last block, +%llu bytes)",
			  what, ms, (unsigned long long)bytes, calls,
			  (unsigned long long)(rss1 - rss0),
			  (unsigned long long)(rss2 - rss0),
			  (unsigned long long)(c.bytes - bytes));
		vhdx_close(img);
	}
	close(fd);
}

TEST(huge_vhdxtool)
{
	const char *top = getenv("TOP_BUILDDIR");
	const char *tmp = getenv("TMPDIR");
	char tool[4096], dir[4096], image[4200];

	snprintf(tool, sizeof(tool), "%s/vhdxtool", top ? top : ".");
	if (access(tool, X_OK) != 0) {
		unit_skip("vhdxtool is not built (set TOP_BUILDDIR)");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/lazybat.XXXXXX", tmp ? tmp : "/tmp");
	if (!CHECK(mkdtemp(dir) != NULL))
		return;
	snprintf(image, sizeof(image), "%s/huge.vhdx", dir);
	if (CHECK_EQ_INT(run_tool(tool, image), 0)) {
		open_file(image, 0, "vhdxtool's 64T image, read-only");
		open_file(image, VHDX_OPEN_FULL_BAT, "the same, whole BAT");
	}
	unlink(image);
	rmdir(dir);
}

int main(void)
{
	/* first, while the heap is fresh: it prints resident memory */
	RUN_TEST(huge_vhdxtool);
	RUN_TEST(open_reads_no_bat);
	RUN_TEST(dynamic_same_as_eager);
	RUN_TEST(full_bat_flag_and_threshold);
	RUN_TEST(corrupt_segment);
	RUN_TEST(cross_segment_overlap_not_checked);
	RUN_TEST(segment_read_error_retried);
	RUN_TEST(log_carries_bat_sectors);
	RUN_TEST(concurrent_first_reads);
	RUN_TEST(differencing_same_as_eager);
	RUN_TEST(huge_library);
	return unit_done();
}
