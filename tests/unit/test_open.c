/*
 * test_open.c - vhdx_open/vhdx_read on images built in memory by imgbuild:
 * every block state, sector and block size, chunk boundaries, read edges,
 * concurrent readers, in-memory log replay on a read-only open, the
 * corruptions of fmt §16 and injected I/O errors.  Every open is read-only
 * and must leave the image untouched (no pwrite, flush or truncate).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "imgbuild.h"
#include "mem_io.h"
#include "msgsink.h"
#include "unit.h"
#include "vhdx.h"
#include "vhdx_inspect.h"

/*
 * Policy for a log holding an entry with signature 'loge' and our LogGuid
 * that fails validation (bad CRC, bad descriptor, ...), so that no complete
 * sequence exists.  The spec calls the file corrupt; the project decided
 * (lead, fmt §12.5/§18) to refuse the open in that case, and to treat only
 * a log without any such entry as empty (with a warning).
 */
#define TORN_LOG_REFUSED 0

#define MiB IB_MiB
#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

/* ---- message sink ---- */

static struct msgsink sink = MSGSINK_INIT(VHDX_MSG_DEBUG);

/* ---- opening ---- */

static int try_open(struct ib_image *im, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = VHDX_OPEN_RDONLY, .msg = msgsink_cb, .msg_opaque = &sink};
	struct vhdx_io io;

	msgsink_reset(&sink);
	mem_io_ops(&io, im->m);
	mem_io_reset_counts(im->m);
	*img = (struct vhdx_image *)&io; /* must be overwritten */
	return vhdx_open(img, &io, &o);
}

/* The image must not have been modified through the io table. */
static bool untouched(struct ib_image *im, uint64_t digest)
{
	struct mem_io_counts c;
	bool ok = true;

	mem_io_get_counts(im->m, &c);
	ok &= CHECK_EQ_U64(c.pwrite, 0);
	ok &= CHECK_EQ_U64(c.flush, 0);
	ok &= CHECK_EQ_U64(c.truncate, 0);
	ok &= CHECK_EQ_U64(mem_io_digest(im->m), digest);
	return ok;
}

/*
 * Open must fail with an ERR message containing needle (and needle2 if
 * given), no change to the image, and the error of an image's contents:
 * -EUCLEAN (damaged) or -EOPNOTSUPP (unsupported), never -EINVAL (which
 * names a caller's mistake).  Returns the errno.
 */
static int expect_refused(const char *name, struct ib_image *im,
			  const char *needle, const char *needle2)
{
	uint64_t digest = mem_io_digest(im->m);
	struct vhdx_image *img;
	bool ok = true;
	int rc;

	rc = try_open(im, &img);
	ok &= CHECK(rc == -EUCLEAN || rc == -EOPNOTSUPP);
	ok &= CHECK(img == NULL);
	ok &= CHECK(sink.n_err > 0);
	ok &= CHECK(msgsink_has(&sink, 'E', needle));
	if (needle2)
		ok &= CHECK(msgsink_has(&sink, 'E', needle2));
	ok &= untouched(im, digest);
	if (!ok) {
		unit_note(
		    "case \"%s\": rc %d, wanted an error naming \"%s\"%s%s",
		    name, rc, needle, needle2 ? " and " : "",
		    needle2 ? needle2 : "");
		msgsink_dump(&sink);
	}
	if (rc == 0 && img)
		vhdx_close(img);
	return rc;
}

/* Open must succeed without ERR messages; *img is left open. */
static bool expect_opens(const char *name, struct ib_image *im,
			 struct vhdx_image **img)
{
	bool ok = true;
	int rc;

	rc = try_open(im, img);
	ok &= CHECK_EQ_INT(rc, 0);
	ok &= CHECK(rc != 0 || *img != NULL);
	ok &= CHECK_EQ_U64(sink.n_err, 0);
	if (!ok) {
		unit_note("case \"%s\": rc %d", name, rc);
		msgsink_dump(&sink);
	}
	if (rc != 0)
		*img = NULL;
	return rc == 0;
}

/* ---- reading and comparing ---- */

#define CMP_CHUNK (4 * MiB)

/*
 * Read [off, off + len) through vhdx_read in pieces of at most `piece`
 * bytes and compare with the model.  One CHECK per call.
 */
static bool verify_piece(struct vhdx_image *img, const struct ib_image *im,
			 uint64_t off, uint64_t len, size_t piece)
{
	uint8_t *got = malloc(piece), *want = malloc(piece);
	uint64_t vsize = im->p.virtual_size;
	bool ok = true;

	if (!got || !want) {
		free(got);
		free(want);
		return CHECK(!"out of memory");
	}
	if (off >= vsize)
		len = 0;
	else if (len > vsize - off)
		len = vsize - off;
	while (ok && len > 0) {
		size_t n = len < piece ? (size_t)len : piece;
		long r;

		memset(got, 0xCC, n);
		r = vhdx_read(img, got, n, off);
		ib_expected(im, off, want, n);
		if (r != (long)n) {
			unit_note("vhdx_read(%zu bytes at 0x%llx) = %ld", n,
				  (unsigned long long)off, r);
			ok = false;
			break;
		}
		if (memcmp(got, want, n) != 0) {
			size_t i = 0;

			while (got[i] == want[i])
				i++;
			unit_note(
			    "data mismatch at virtual 0x%llx (block "
			    "%llu + 0x%llx): got 0x%02x want 0x%02x",
			    (unsigned long long)(off + i),
			    (unsigned long long)((off + i) / im->p.block_size),
			    (unsigned long long)((off + i) % im->p.block_size),
			    got[i], want[i]);
			ok = false;
		}
		off += n;
		len -= n;
	}
	free(got);
	free(want);
	return CHECK(ok);
}

static bool verify(struct vhdx_image *img, const struct ib_image *im,
		   uint64_t off, uint64_t len)
{
	return verify_piece(img, im, off, len, CMP_CHUNK);
}

/* Windows around every block boundary, the filled ends, the middle. */
static bool verify_windows(struct vhdx_image *img, const struct ib_image *im)
{
	uint64_t bs = im->p.block_size, pb;
	uint64_t w = 64 * 1024, fill = im->p.fill;
	bool ok = true;

	for (pb = 0; pb < im->n && ok; pb++) {
		uint64_t start = pb * bs;
		uint64_t end = start + bs;

		ok &= verify(img, im, start > w ? start - w : 0, 2 * w);
		ok &= verify(img, im, start, fill + w);
		ok &= verify(img, im, start + bs / 2 - 4096, 8192);
		ok &= verify(img, im, end - fill - w, fill + 2 * w);
	}
	return ok;
}

static bool verify_all(struct vhdx_image *img, const struct ib_image *im)
{
	return verify(img, im, 0, im->p.virtual_size);
}

/* ---- image recipes ---- */

/* A small dynamic image: 40 MiB of 1 MiB blocks, a few present. */
static int base_image(struct ib_image *im)
{
	struct ib_params p = {0};

	p.virtual_size = 40 * MiB;
	p.block_size = 1 * MiB;
	p.seed = 0xBA5E;
	if (ib_init(im, &p) < 0)
		return -1;
	ib_set_state(im, 0, 6);
	ib_set_state(im, 1, 2);
	ib_set_state(im, 3, 6);
	ib_set_state(im, 39, 6);
	return ib_build(im);
}

static int meta_image(struct ib_image *im, unsigned int omit,
		      const uint8_t *extra_guid, uint32_t extra_flags);
static void meta_value(struct ib_image *im, enum ib_item it, unsigned int off,
		       uint64_t v, int width);

/* ---- tests: reading ---- */

static const uint32_t block_sizes[] = {1 * MiB, 2 * MiB, 32 * MiB, 256 * MiB};
static const uint32_t sectors[] = {512, 4096};

static void check_info(struct vhdx_image *img, const struct ib_image *im)
{
	struct vhdx_info info;
	uint64_t counts[8] = {0}, pb;
	int s;

	for (pb = 0; pb < im->n; pb++)
		counts[im->state[pb] & 7]++;
	memset(&info, 0xAB, sizeof(info));
	vhdx_get_info(img, &info);
	CHECK_EQ_U64(info.virtual_size, im->p.virtual_size);
	CHECK_EQ_U64(vhdx_virtual_size(img), im->p.virtual_size);
	CHECK_EQ_U64(info.file_size, im->file_size);
	CHECK_EQ_U64(info.block_size, im->p.block_size);
	CHECK_EQ_U64(info.logical_sector, im->p.logical_sector);
	CHECK_EQ_U64(info.physical_sector, im->p.physical_sector);
	CHECK_EQ_INT(info.leave_blocks_allocated, im->p.fixed ? 1 : 0);
	CHECK_EQ_INT(info.has_parent, 0);
	/* the entries in use: whole chunks, but no more than the region */
	{
		uint64_t sb = (im->n + im->cr - 1) / im->cr;
		uint64_t used = sb * (im->cr + 1);

		if (used > im->bat_length / 8)
			used = im->bat_length / 8;
		CHECK_EQ_U64(info.bat_entries, used);
	}
	CHECK_EQ_U64(info.payload_blocks, im->n);
	CHECK_EQ_U64(info.chunk_ratio, im->cr);
	for (s = 0; s < 8; s++)
		CHECK_EQ_U64(info.state_count[s], counts[s]);
	CHECK_EQ_STR((const char *)info.creator, "vhdxfuse unit test");
}

TEST(states_all_geometries)
{
	/* 8 blocks, the last one half inside the disk */
	static const uint8_t states[8] = {6, 0, 6, 1, 2, 3, 6, 6};
	size_t s, b;

	for (s = 0; s < 2; s++) {
		for (b = 0; b < 4; b++) {
			struct ib_image im;
			struct ib_params p = {0};
			struct vhdx_image *img;
			struct vhdx_info info;
			uint64_t digest, pb;

			p.virtual_size =
			    7ull * block_sizes[b] + block_sizes[b] / 2;
			p.block_size = block_sizes[b];
			p.logical_sector = sectors[s];
			p.physical_sector = 4096;
			p.seed = s * 16 + b + 1;
			p.stale_offsets = true; /* 1 and 3 hide old data */
			if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
				continue;
			for (pb = 0; pb < 8; pb++)
				ib_set_state(&im, pb, states[pb]);
			if (!CHECK_EQ_INT(ib_build(&im), 0)) {
				ib_free(&im);
				continue;
			}
			digest = mem_io_digest(im.m);
			if (expect_opens("states", &im, &img)) {
				if (!verify_windows(img, &im))
					unit_note(
					    "sector %u block %u MiB",
					    sectors[s],
					    (unsigned)(block_sizes[b] / MiB));
				if (p.virtual_size <= 64 * MiB)
					verify_all(img, &im);
				check_info(img, &im);
				vhdx_get_info(img, &info);
				CHECK_EQ_INT(info.current_header, 1);
				CHECK_EQ_U64(info.header_seq, 1001);
				CHECK_EQ_INT(info.log_replayed, 0);
				CHECK_EQ_INT(vhdx_close(img), 0);
			}
			untouched(&im, digest);
			ib_free(&im);
		}
	}
}

TEST(disk_smaller_than_block)
{
	static const struct {
		uint64_t size;
		uint32_t block;
		uint32_t sector;
	} cases[] = {
	    {3 * MiB + 4096, 256 * MiB, 512}, {512, 256 * MiB, 512},
	    {4096, 256 * MiB, 4096},	      {512 * 1024 + 512, 1 * MiB, 512},
	    {1 * MiB - 4096, 32 * MiB, 4096},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ib_image im;
		struct ib_params p = {0};
		struct vhdx_image *img;
		uint8_t buf[8192];

		p.virtual_size = cases[i].size;
		p.block_size = cases[i].block;
		p.logical_sector = cases[i].sector;
		p.seed = 77 + i;
		if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
			continue;
		CHECK_EQ_U64(im.n, 1);
		ib_set_state(&im, 0, 6);
		if (CHECK_EQ_INT(ib_build(&im), 0) &&
		    expect_opens("small disk", &im, &img)) {
			verify_all(img, &im);
			/* the read stops at the end of the disk */
			CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf),
					       cases[i].size - 512),
				     512);
			check_info(img, &im);
			vhdx_close(img);
		}
		ib_free(&im);
	}
}

TEST(fixed_image)
{
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;

	p.virtual_size = 20 * MiB + 4096;
	p.block_size = 2 * MiB;
	p.fixed = true;
	p.seed = 0xF1;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	if (CHECK_EQ_INT(ib_build(&im), 0) &&
	    expect_opens("fixed", &im, &img)) {
		verify_all(img, &im);
		check_info(img, &im);
		vhdx_close(img);
	}
	ib_free(&im);
}

TEST(qemu_style_required_zero)
{
	/* qemu-img writes Required = 0 for the known regions (fmt §5.2) */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;

	p.virtual_size = 8 * MiB;
	p.block_size = 1 * MiB;
	p.known_not_required = true;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 2, 6);
	if (CHECK_EQ_INT(ib_build(&im), 0) &&
	    expect_opens("required 0", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
	ib_free(&im);
}

/* Blocks on both sides of the first chunk boundary (fmt §17 #5). */
static void chunk_case(uint32_t block, uint32_t sector)
{
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	uint64_t cr = (1ull << 23) * sector / block;
	uint64_t chunk = cr * block, digest;
	uint8_t buf[4096];

	p.virtual_size = chunk + 3ull * block;
	p.block_size = block;
	p.logical_sector = sector;
	p.seed = cr;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 0, 6);
	ib_set_state(&im, cr - 3, 2);
	ib_set_state(&im, cr - 2, 6);
	ib_set_state(&im, cr - 1, 6);
	ib_set_state(&im, cr, 6);
	ib_set_state(&im, cr + 1, 0);
	ib_set_state(&im, cr + 2, 6);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	/* the builder's layout: block CR sits after the bitmap slot */
	CHECK_EQ_U64(ib_get_bat(&im, cr) & 7, 0);
	CHECK_EQ_U64(ib_get_bat(&im, cr + 1) & 7, 6);
	digest = mem_io_digest(im.m);
	if (!expect_opens("chunk", &im, &img))
		goto out;
	verify(img, &im, 0, 2 * MiB);
	/* one read across the chunk boundary, several blocks */
	verify_piece(img, &im, chunk - 2ull * block - 4096, 5ull * block + 8192,
		     8 * MiB);
	/* unaligned pieces straddling the boundary */
	verify_piece(img, &im, chunk - 1000, 3000, 4096);
	verify_piece(img, &im, chunk - block - 7, 2ull * block + 14, 777777);
	/* the end: truncated reads */
	verify(img, &im, p.virtual_size - block, block);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), p.virtual_size - 100),
		     100);
	check_info(img, &im);
	vhdx_close(img);
	untouched(&im, digest);
out:
	ib_free(&im);
}

TEST(chunk_boundaries)
{
	chunk_case(1 * MiB, 512);  /* CR 4096: 4 GiB chunk */
	chunk_case(2 * MiB, 512);  /* CR 2048 */
	chunk_case(1 * MiB, 4096); /* CR 32768: 32 GiB chunk */
	chunk_case(256 * MiB, 512);
}

TEST(read_edges)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t buf[8192];
	uint64_t size;

	if (!CHECK_EQ_INT(base_image(&im), 0))
		return;
	size = im.p.virtual_size;
	if (!expect_opens("edges", &im, &img))
		goto out;
	memset(buf, 0xCC, sizeof(buf));
	CHECK_EQ_INT(vhdx_read(img, buf, 0, 0), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), size), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), size + 1), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), size + 4096), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), UINT64_MAX), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), UINT64_MAX - 100), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), 1ull << 63), 0);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), size - 1), 1);
	CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), size - 4096), 4096);
	/* a huge length is truncated at the end of the disk */
	{
		uint8_t *big = malloc(2 * MiB);

		if (CHECK(big != NULL)) {
			CHECK_EQ_INT(
			    vhdx_read(img, big, SIZE_MAX, size - 2 * MiB),
			    2 * MiB);
			free(big);
		}
	}
	/* odd offsets and lengths, across block boundaries */
	verify_piece(img, &im, 1, 3 * MiB, 4095);
	verify_piece(img, &im, 1 * MiB - 3, 7, 7);
	verify_piece(img, &im, 3 * MiB - 513, 1 * MiB + 1025, 1 * MiB + 1);
	verify_piece(img, &im, size - 3 * MiB + 17, 3 * MiB, 65537);
	verify_all(img, &im);
	vhdx_close(img);
out:
	ib_free(&im);
}

/* ---- concurrent readers ---- */

struct reader {
	struct vhdx_image *img;
	const struct ib_image *im;
	unsigned int seed;
	unsigned long reads;
	unsigned long bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint64_t vsize = r->im->p.virtual_size;
	uint8_t *got = malloc(3 * MiB), *want = malloc(3 * MiB);
	unsigned long i;

	if (!got || !want) {
		r->bad++;
		goto out;
	}
	for (i = 0; i < 300; i++) {
		uint64_t off, len;
		long n, expect;

		r->seed = r->seed * 1103515245u + 12345u;
		off = ((uint64_t)r->seed << 7) % (vsize + 4096);
		r->seed = r->seed * 1103515245u + 12345u;
		len = (r->seed >> 4) % (3 * MiB) + 1;
		expect = off >= vsize
			     ? 0
			     : (long)(len < vsize - off ? len : vsize - off);
		n = vhdx_read(r->img, got, (size_t)len, off);
		r->reads++;
		if (n != expect) {
			r->bad++;
			continue;
		}
		if (n > 0) {
			ib_expected(r->im, off, want, (size_t)n);
			if (memcmp(got, want, (size_t)n) != 0)
				r->bad++;
		}
	}
out:
	free(got);
	free(want);
	return NULL;
}

TEST(concurrent_reads)
{
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct reader r[4];
	pthread_t t[4];
	uint64_t pb, digest;
	int i, started = 0;

	p.virtual_size = 64 * MiB - 4096;
	p.block_size = 1 * MiB;
	p.seed = 0xC0C0;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	for (pb = 0; pb < im.n; pb++)
		ib_set_state(&im, pb, (pb % 3) ? 6 : (uint8_t)(pb % 4));
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	digest = mem_io_digest(im.m);
	if (!expect_opens("threads", &im, &img))
		goto out;
	for (i = 0; i < 4; i++) {
		r[i] = (struct reader){img, &im, 1000u + (unsigned)i, 0, 0};
		if (CHECK_EQ_INT(
			pthread_create(&t[i], NULL, reader_main, &r[i]), 0))
			started++;
	}
	for (i = 0; i < started; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_U64(r[i].reads, 300);
		CHECK_EQ_U64(r[i].bad, 0);
	}
	vhdx_close(img);
	untouched(&im, digest);
out:
	ib_free(&im);
}

/* ---- the log (fmt §12.5): replay in memory on a read-only open ---- */

TEST(log_replay_readonly)
{
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct vhdx_info info;
	uint64_t digest;

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	p.seed = 0x106;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 0, 6);
	ib_set_log_only(&im, 2);
	ib_set_log_only(&im, 5);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	/* on disk the blocks are NOT_PRESENT; only the log has them */
	CHECK_EQ_U64(ib_get_bat(&im, 2), 0);
	CHECK_EQ_U64(ib_get_bat(&im, 5), 0);
	CHECK_EQ_U64(ib_get_bat(&im, 0) & 7, 6);
	digest = mem_io_digest(im.m);
	if (expect_opens("log replay", &im, &img)) {
		verify_all(img, &im);
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.log_replayed, 1);
		CHECK_EQ_U64(info.state_count[6], 3);
		vhdx_close(img);
	}
	untouched(&im, digest);
	/* the file still says NOT_PRESENT */
	CHECK_EQ_U64(ib_get_bat(&im, 2), 0);
out:
	ib_free(&im);
}

/* One BAT sector, as the builder wrote it, with entries patched. */
static void bat_sector(struct ib_image *im, uint8_t sec[4096])
{
	mem_io_get(im->m, im->bat_offset, sec, 4096);
}

static void sector_entry(uint8_t sec[4096], uint64_t index, uint64_t e)
{
	int i;

	for (i = 0; i < 8; i++)
		sec[8 * index + (size_t)i] = (uint8_t)(e >> (8 * i));
}

/* A 16-block image whose blocks 2 and 5 exist in the file but not in the
 * on-disk BAT; the log is left to the test. */
static int log_base(struct ib_image *im, uint64_t off[2])
{
	struct ib_params p = {0};
	static const uint8_t guid[16] = {1,    2,  3,  4,  5,  6,  7,  0x48,
					 0x89, 10, 11, 12, 13, 14, 15, 16};

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	p.seed = 0x1062;
	if (ib_init(im, &p) < 0)
		return -1;
	ib_set_state(im, 2, 6);
	ib_set_state(im, 5, 6);
	if (ib_build(im) < 0)
		return -1;
	off[0] = im->block_off[2];
	off[1] = im->block_off[5];
	ib_put_bat(im, 2, 0);
	ib_put_bat(im, 5, 0);
	ib_set_header_log_guid(im, guid);
	return 0;
}

TEST(log_sequence_newest_wins)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t a[4096], b[4096];
	struct ib_log_desc d = {0};
	uint64_t off[2];
	uint32_t len;

	if (!CHECK_EQ_INT(log_base(&im, off), 0))
		goto out;
	bat_sector(&im, a);
	memcpy(b, a, sizeof(b));
	/* entry A (seq 7): block 2 present; entry B (seq 8): block 2 ZERO,
	 * block 5 present.  B's Tail names A: replay A then B. */
	sector_entry(a, 2, off[0] | 6);
	sector_entry(b, 2, 2);
	sector_entry(b, 5, off[1] | 6);
	d.file_offset = im.bat_offset;
	d.data = a;
	len = ib_log_write_entry(&im, 0, 7, 0, &d, 1);
	CHECK_EQ_U64(len, 8192);
	d.data = b;
	ib_log_write_entry(&im, len, 8, 0, &d, 1);
	ib_set_state(&im, 2, 2);
	if (expect_opens("sequence", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

/*
 * An entry whose header and checksum are good but whose descriptor fails
 * the open's checks (it targets the log itself) is not replayed; the
 * description (vhdxtool info) must say the same, not call it active.
 */
TEST(log_description_agrees_with_open)
{
	struct ib_image im;
	struct vhdx_image *img;
	struct vhdx_description *desc;
	struct vhdx_info info;
	uint8_t a[4096];
	struct ib_log_desc d = {0};
	uint64_t off[2];
	uint32_t len;

	if (!CHECK_EQ_INT(log_base(&im, off), 0))
		goto out;
	bat_sector(&im, a);
	sector_entry(a, 2, off[0] | 6);
	d.data = a;
	/* a good entry (seq 4), then one (seq 5) writing into the log */
	d.file_offset = im.bat_offset;
	len = ib_log_write_entry(&im, 0, 4, 0, &d, 1);
	d.file_offset = im.log_offset;
	ib_log_write_entry(&im, len, 5, 0, &d, 1);
	ib_set_state(&im, 2, 6);
	ib_set_state(&im, 5, 0);
	if (!expect_opens("bad descriptor", &im, &img))
		goto out;
	verify_all(img, &im);
	vhdx_get_info(img, &info);
	CHECK_EQ_INT(info.log_replayed, 1);
	if (CHECK_EQ_INT(vhdx_describe(img, &desc), 0)) {
		/* only the first entry is valid, and it alone is replayed */
		CHECK_EQ_U64(desc->log.n_entries, 1);
		CHECK(desc->log.has_active);
		CHECK_EQ_U64(desc->log.active_entries, 1);
		CHECK_EQ_U64(desc->log.active_first_seq, 4);
		CHECK_EQ_U64(desc->log.active_last_seq, 4);
		if (desc->log.n_entries == 1) {
			CHECK_EQ_U64(desc->log.entries[0].seq, 4);
			CHECK(desc->log.entries[0].active);
		}
		vhdx_describe_free(desc);
	}
	vhdx_close(img);
out:
	ib_free(&im);
}

TEST(log_empty_entry)
{
	/* a valid entry without descriptors replays nothing */
	struct ib_image im;
	struct vhdx_image *img;
	uint64_t off[2];

	if (!CHECK_EQ_INT(log_base(&im, off), 0))
		goto out;
	ib_log_write_entry(&im, 0, 1, 0, NULL, 0);
	CHECK_EQ_U64(mem_io_get_le32(im.m, im.log_offset + 8), 4096);
	ib_set_state(&im, 2, 0);
	ib_set_state(&im, 5, 0);
	if (expect_opens("empty entry", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

TEST(log_entry_wraps)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t a[4096];
	struct ib_log_desc d = {0};
	uint64_t off[2];
	uint32_t pos;

	if (!CHECK_EQ_INT(log_base(&im, off), 0))
		goto out;
	bat_sector(&im, a);
	sector_entry(a, 2, off[0] | 6);
	sector_entry(a, 5, off[1] | 6);
	d.file_offset = im.bat_offset;
	d.data = a;
	/* the header sector is the last of the ring, the data sector the
	 * first */
	pos = im.log_length - 4096;
	ib_log_write_entry(&im, pos, 3, pos, &d, 1);
	if (expect_opens("wrap", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

TEST(log_zero_descriptor)
{
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct ib_log_desc d = {0};
	static const uint8_t guid[16] = {9,    9, 9, 9, 9, 9, 9, 0x49,
					 0x89, 9, 9, 9, 9, 9, 9, 9};

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	p.seed = 0x2E;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 1, 6);
	ib_set_state(&im, 4, 6);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	/* the log zeroes the first BAT sector: every block NOT_PRESENT */
	ib_set_header_log_guid(&im, guid);
	d.zero = true;
	d.file_offset = im.bat_offset;
	d.zero_length = 4096;
	ib_log_write_entry(&im, 0, 1, 0, &d, 1);
	ib_set_state(&im, 1, 0);
	ib_set_state(&im, 4, 0);
	if (expect_opens("zero desc", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

TEST(log_guid_set_log_empty)
{
	/* LogGuid set, no entry at all: a crash before the first entry;
	 * the library treats the log as empty with a warning. */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct vhdx_info info;
	uint8_t *zero = calloc(1, MiB);
	uint64_t digest;

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	if (!CHECK(zero != NULL) || !CHECK_EQ_INT(ib_init(&im, &p), 0)) {
		free(zero);
		return;
	}
	ib_set_state(&im, 0, 6);
	ib_set_log_only(&im, 3);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	mem_io_put(im.m, im.log_offset, zero, im.log_length);
	ib_set_state(&im, 3, 0); /* what the file says */
	digest = mem_io_digest(im.m);
	if (expect_opens("empty log", &im, &img)) {
		CHECK(sink.n_warn > 0);
		CHECK(msgsink_has(&sink, 'W', "log"));
		verify_all(img, &im);
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.log_replayed, 0);
		vhdx_close(img);
	}
	untouched(&im, digest);
out:
	free(zero);
	ib_free(&im);
}

TEST(log_other_guid_ignored)
{
	/* an entry of an older session (other LogGuid) is not ours */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_log_only(&im, 3);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	mem_io_put_le32(im.m, im.log_offset + 32, 0xDEADBEEF);
	ib_log_fix_crc(&im, 0);
	ib_set_state(&im, 3, 0);
	if (expect_opens("other guid", &im, &img)) {
		CHECK(msgsink_has(&sink, 'W', "log"));
		verify_all(img, &im);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

TEST(log_rewrites_metadata)
{
	/* the log carries a newer metadata item sector: Virtual Disk Size
	 * 16 MiB -> 12 MiB; every metadata read must go through it */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct vhdx_info info;
	struct ib_log_desc d = {0};
	uint8_t sec[4096];
	uint64_t at;
	static const uint8_t guid[16] = {5,    5, 5, 5, 5, 5, 5, 0x45,
					 0x85, 5, 5, 5, 5, 5, 5, 5};

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	p.seed = 0x3E7A;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 0, 6);
	ib_set_state(&im, 11, 6);
	ib_set_state(&im, 15, 6);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	at = im.item_off[IB_ITEM_DISK_SIZE];
	mem_io_get(im.m, at & ~4095ull, sec, sizeof(sec));
	sector_entry(sec + (at & 4095), 0, 12 * MiB);
	ib_set_header_log_guid(&im, guid);
	d.file_offset = at & ~4095ull;
	d.data = sec;
	ib_log_write_entry(&im, 0, 1, 0, &d, 1);
	/* the file itself still says 16 MiB */
	CHECK_EQ_U64(mem_io_get_le64(im.m, at), 16 * MiB);
	if (expect_opens("log metadata", &im, &img)) {
		vhdx_get_info(img, &info);
		CHECK_EQ_U64(info.virtual_size, 12 * MiB);
		CHECK_EQ_U64(info.payload_blocks, 12);
		CHECK_EQ_INT(info.log_replayed, 1);
		im.p.virtual_size = 12 * MiB;
		verify_all(img, &im);
		CHECK_EQ_INT(vhdx_read(img, sec, sizeof(sec), 12 * MiB), 0);
		vhdx_close(img);
	}
out:
	ib_free(&im);
}

TEST(log_many_descriptors)
{
	/* 130 BAT sectors in one entry: two descriptor sectors (126 + 4) */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct vhdx_info info;
	uint64_t k, digest;
	bool ok = true;

	p.virtual_size = 131 * 512 * MiB;
	p.block_size = 1 * MiB;
	p.fill = 4096;
	p.seed = 0x130;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	for (k = 0; k < 130; k++)
		ib_set_log_only(&im, k * 512);
	ib_set_state(&im, 5, 6);
	ib_set_state(&im, 4097, 6);
	if (!CHECK_EQ_INT(ib_build(&im), 0))
		goto out;
	CHECK_EQ_U64(mem_io_get_le32(im.m, im.log_offset + 24), 130);
	CHECK_EQ_U64(mem_io_get_le32(im.m, im.log_offset + 8), 132 * 4096);
	digest = mem_io_digest(im.m);
	if (expect_opens("130 descriptors", &im, &img)) {
		vhdx_get_info(img, &info);
		CHECK_EQ_INT(info.log_replayed, 1);
		CHECK_EQ_U64(info.state_count[6], 132);
		for (k = 0; k < 130 && ok; k++) {
			uint64_t v = k * 512 * MiB;

			ok &= verify(img, &im, v ? v - 4096 : 0, 3 * 4096);
			ok &= verify(img, &im, v + 1 * MiB - 8192, 8192);
		}
		verify(img, &im, 4 * MiB, 2 * MiB);
		verify(img, &im, 4096 * MiB, 2 * MiB);
		vhdx_close(img);
	}
	untouched(&im, digest);
out:
	ib_free(&im);
}

static int log_only_image(struct ib_image *im)
{
	struct ib_params p = {0};

	p.virtual_size = 16 * MiB;
	p.block_size = 1 * MiB;
	if (ib_init(im, &p) < 0)
		return -1;
	ib_set_log_only(im, 3);
	return ib_build(im);
}

/* An invalid entry of ours in the log: see TORN_LOG_REFUSED. */
static void expect_torn_log(const char *name, struct ib_image *im)
{
	struct vhdx_image *img;

	if (TORN_LOG_REFUSED) {
		expect_refused(name, im, "log", NULL);
		return;
	}
	if (expect_opens(name, im, &img)) {
		CHECK(msgsink_has(&sink, 'W', "log"));
		vhdx_close(img);
	}
}

TEST(log_refused)
{
	static const uint32_t counts[] = {0xFFFFFFFFu, 0xFFFFFFFEu, 0x7FFFFFFFu,
					  0x80000000u, 0x01000000u, 127};
	struct ib_image im;
	size_t i;

	/* bad CRC (a data byte flipped), LogGuid set */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		uint8_t x;

		mem_io_get(im.m, im.log_offset + 4096 + 100, &x, 1);
		x ^= 0x10;
		mem_io_put(im.m, im.log_offset + 4096 + 100, &x, 1);
		expect_torn_log("log bad crc", &im);
	}
	ib_free(&im);

	/* huge DescriptorCount with a matching CRC: no overflow, no crash */
	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		if (!CHECK_EQ_INT(log_only_image(&im), 0))
			break;
		mem_io_put_le32(im.m, im.log_offset + 24, counts[i]);
		ib_log_fix_crc(&im, 0);
		unit_note("DescriptorCount 0x%x", counts[i]);
		expect_torn_log("log descriptor count", &im);
		ib_free(&im);
	}

	/* EntryLength larger than the log, CRC fixed over the log */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		mem_io_put_le32(im.m, im.log_offset + 8, 0x7FFFF000u);
		ib_log_fix_crc(&im, 0);
		expect_torn_log("log entry length", &im);
	}
	ib_free(&im);

	/* the file is shorter than FlushedFileOffset: truncated */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		mem_io_put_le64(im.m, im.log_offset + 48,
				im.file_size + 1 * MiB);
		ib_log_fix_crc(&im, 0);
		expect_refused("log flushed offset", &im, "log", "truncated");
	}
	ib_free(&im);

	/* a descriptor aimed at header 1 (hardening, fmt §12.3 item 6) */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		mem_io_put_le64(im.m, im.log_offset + 64 + 16, 0x10000);
		ib_log_fix_crc(&im, 0);
		expect_torn_log("log targets header", &im);
	}
	ib_free(&im);

	/* sequence number in the data sector does not match */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		mem_io_put_le32(im.m, im.log_offset + 4096 + 4092, 99);
		ib_log_fix_crc(&im, 0);
		expect_torn_log("log data seq", &im);
	}
	ib_free(&im);

	/* a zero descriptor whose range overflows */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		static const uint8_t guid[16] = {7,    7, 7, 7, 7, 7, 7, 0x47,
						 0x87, 7, 7, 7, 7, 7, 7, 7};
		struct ib_log_desc d = {0};

		ib_set_header_log_guid(&im, guid);
		d.zero = true;
		d.file_offset = 1ull << 62;
		d.zero_length = 1ull << 62;
		ib_log_write_entry(&im, 0, 1, 0, &d, 1);
		expect_torn_log("log zero overflow", &im);
	}
	ib_free(&im);

	/* Tail names no entry of the sequence: incomplete */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		mem_io_put_le32(im.m, im.log_offset + 12, 0x80000);
		ib_log_fix_crc(&im, 0);
		expect_refused("log tail", &im, "log", NULL);
	}
	ib_free(&im);

	/* the log lies past the end of the file */
	if (CHECK_EQ_INT(log_only_image(&im), 0)) {
		int slot;

		for (slot = 0; slot < 2; slot++) {
			mem_io_put_le64(im.m, ib_header_offset(slot) + 72,
					im.file_size + 64 * MiB);
			ib_header_fix_crc(&im, slot);
		}
		expect_refused("log past eof", &im, "log", NULL);
	}
	ib_free(&im);
}

/* ---- corruptions (fmt §16) ---- */

TEST(bad_file_identifier)
{
	struct ib_image im;

	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put(im.m, 7, "f", 1);
		expect_refused("signature", &im, "file identifier", NULL);
	}
	ib_free(&im);
	/* shorter than the header section, and empty */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_set_size(im.m, 512 * 1024);
		expect_refused("short file", &im, "file identifier", NULL);
		mem_io_set_size(im.m, 0);
		expect_refused("empty file", &im, "file", NULL);
	}
	ib_free(&im);
}

static void flip(struct ib_image *im, uint64_t off)
{
	uint8_t x;

	mem_io_get(im->m, off, &x, 1);
	x ^= 0x01;
	mem_io_put(im->m, off, &x, 1);
}

TEST(bat_minimum_size)
{
	/*
	 * fmt §7.1: a non-differencing file needs only N + floor((N-1)/CR)
	 * entries (the last chunk's bitmap slot may be missing).  With 1 MiB
	 * blocks and 512-byte sectors, N = 131041 fills a 1 MiB BAT exactly;
	 * one block more does not fit.
	 */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;
	struct vhdx_info info;

	p.virtual_size = 131041 * MiB;
	p.block_size = 1 * MiB;
	p.bat_length = 1 * MiB;
	p.seed = 0xB47;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	CHECK_EQ_U64(im.n + (im.n - 1) / im.cr, 131072);
	CHECK(im.bat_entries > 131072);
	ib_set_state(&im, 0, 6);
	ib_set_state(&im, im.n - 1, 6);
	if (CHECK_EQ_INT(ib_build(&im), 0) &&
	    expect_opens("minimal BAT", &im, &img)) {
		vhdx_get_info(img, &info);
		CHECK_EQ_U64(info.bat_entries, 131072);
		verify(img, &im, p.virtual_size - 2 * MiB, 2 * MiB);
		verify(img, &im, 0, 1 * MiB);
		vhdx_close(img);
	}
	ib_free(&im);

	p.virtual_size = 131042 * MiB;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	if (CHECK_EQ_INT(ib_build(&im), 0))
		expect_refused("BAT one entry short", &im, "BAT", NULL);
	ib_free(&im);
}

TEST(tolerated_oddities)
{
	struct ib_image im;
	struct vhdx_image *img;
	int slot;

	/* reserved File Parameters flag bits: ignored (with a warning) */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		meta_value(&im, IB_ITEM_FILE_PARAMS, 4, 0x80000000u, 4);
		if (expect_opens("fp reserved flags", &im, &img)) {
			verify_all(img, &im);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* LogVersion != 0 is only fatal with a non-empty log (fmt §4.2) */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		for (slot = 0; slot < 2; slot++) {
			mem_io_put_le16(im.m, ib_header_offset(slot) + 64, 1);
			ib_header_fix_crc(&im, slot);
		}
		if (expect_opens("log version 1, empty log", &im, &img))
			vhdx_close(img);
	}
	ib_free(&im);

	/* no log at all */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		for (slot = 0; slot < 2; slot++) {
			mem_io_put_le32(im.m, ib_header_offset(slot) + 68, 0);
			ib_header_fix_crc(&im, slot);
		}
		if (expect_opens("log length 0", &im, &img)) {
			verify_all(img, &im);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* garbage in the reserved part of the header section and in the
	 * unused space of the metadata region */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		static const uint8_t junk[16] = "junkjunkjunkjunk";

		mem_io_put(im.m, 0x50000, junk, sizeof(junk));
		mem_io_put(im.m, 0xFFFF0, junk, sizeof(junk));
		mem_io_put(im.m, im.meta_offset + 0x8000, junk, sizeof(junk));
		mem_io_put(im.m, im.meta_offset + 0x20000, junk, sizeof(junk));
		if (expect_opens("junk", &im, &img))
			vhdx_close(img);
	}
	ib_free(&im);
}

TEST(headers)
{
	struct ib_image im;
	struct vhdx_image *img;
	struct vhdx_info info;
	uint64_t digest;

	/* both checksums bad */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		flip(&im, ib_header_offset(0) + 200);
		flip(&im, ib_header_offset(1) + 4095);
		expect_refused("both headers", &im, "header", NULL);
	}
	ib_free(&im);

	/* header 1 (the current one) damaged: header 2 is used */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		flip(&im, ib_header_offset(0) + 3000);
		digest = mem_io_digest(im.m);
		if (expect_opens("header 1 bad", &im, &img)) {
			vhdx_get_info(img, &info);
			CHECK_EQ_INT(info.current_header, 2);
			CHECK_EQ_U64(info.header_seq, 1000);
			verify_all(img, &im);
			vhdx_close(img);
		}
		untouched(&im, digest);
	}
	ib_free(&im);

	/* header 2 damaged: header 1 */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put(im.m, ib_header_offset(1), "HEAD", 4);
		if (expect_opens("header 2 bad", &im, &img)) {
			vhdx_get_info(img, &info);
			CHECK_EQ_INT(info.current_header, 1);
			CHECK_EQ_U64(info.header_seq, 1001);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* header 2 newer */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put_le64(im.m, ib_header_offset(1) + 8, 5000);
		ib_header_fix_crc(&im, 1);
		if (expect_opens("header 2 newer", &im, &img)) {
			vhdx_get_info(img, &info);
			CHECK_EQ_INT(info.current_header, 2);
			CHECK_EQ_U64(info.header_seq, 5000);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* equal sequence numbers, different content: refused */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put_le64(im.m, ib_header_offset(1) + 8, 1001);
		flip(&im, ib_header_offset(1) + 32); /* DataWriteGuid */
		ib_header_fix_crc(&im, 1);
		expect_refused("equal seq", &im, "header", NULL);
	}
	ib_free(&im);

	/* equal sequence numbers, identical headers: accepted */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put_le64(im.m, ib_header_offset(1) + 8, 1001);
		ib_header_fix_crc(&im, 1);
		if (expect_opens("identical headers", &im, &img)) {
			vhdx_get_info(img, &info);
			CHECK_EQ_U64(info.header_seq, 1001);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* version 2 in the current header */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_put_le16(im.m, ib_header_offset(0) + 66, 2);
		ib_header_fix_crc(&im, 0);
		expect_refused("version 2", &im, "version", NULL);
	}
	ib_free(&im);

	/* log not 1 MiB aligned */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		int slot;

		for (slot = 0; slot < 2; slot++) {
			mem_io_put_le64(im.m, ib_header_offset(slot) + 72,
					1 * MiB + 4096);
			ib_header_fix_crc(&im, slot);
		}
		expect_refused("log offset", &im, "log", NULL);
	}
	ib_free(&im);
}

/* Patch entry i (offset field) of both region tables, fixing the CRCs. */
static void region_set(struct ib_image *im, unsigned int i, unsigned int field,
		       uint64_t v, int width)
{
	int copy;

	for (copy = 0; copy < 2; copy++) {
		uint64_t at = ib_region_entry(copy, i) + field;

		if (width == 8)
			mem_io_put_le64(im->m, at, v);
		else
			mem_io_put_le32(im->m, at, (uint32_t)v);
		ib_region_fix_crc(im, copy);
	}
}

TEST(region_tables)
{
	static const uint8_t odd_guid[16] = {0x78, 0x56, 0x34, 0x12, 0xBC, 0x9A,
					     0xF0, 0x4E, 0x81, 0x23, 0x45, 0x67,
					     0x89, 0xAB, 0xCD, 0xEF};
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;

	/* copy 1 damaged: copy 2 is used */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		flip(&im, ib_region_offset(0) + 60000);
		if (expect_opens("region 1 bad", &im, &img)) {
			verify_all(img, &im);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* both damaged */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		flip(&im, ib_region_offset(0) + 60000);
		mem_io_put(im.m, ib_region_offset(1), "regX", 4);
		expect_refused("both region tables", &im, "region table", NULL);
	}
	ib_free(&im);

	/* unknown required region: refused, its GUID in the message */
	p.virtual_size = 8 * MiB;
	p.block_size = 1 * MiB;
	p.has_extra_region = true;
	memcpy(p.extra_region_guid, odd_guid, 16);
	p.extra_region_required = 1;
	if (CHECK_EQ_INT(ib_init(&im, &p), 0) && CHECK_EQ_INT(ib_build(&im), 0))
		expect_refused("unknown required region", &im,
			       "12345678-9abc-4ef0-8123-456789abcdef",
			       "region");
	ib_free(&im);

	/* the same region, optional: accepted and skipped */
	p.extra_region_required = 0;
	if (CHECK_EQ_INT(ib_init(&im, &p), 0) &&
	    CHECK_EQ_INT(ib_build(&im), 0) &&
	    expect_opens("optional region", &im, &img))
		vhdx_close(img);
	ib_free(&im);

	/* reserved Required bits only: still optional */
	p.extra_region_required = 0xFFFFFFFEu;
	if (CHECK_EQ_INT(ib_init(&im, &p), 0) &&
	    CHECK_EQ_INT(ib_build(&im), 0) &&
	    expect_opens("region required bit 0 clear", &im, &img))
		vhdx_close(img);
	ib_free(&im);

	/* no BAT region */
	memset(&p, 0, sizeof(p));
	p.virtual_size = 8 * MiB;
	p.block_size = 1 * MiB;
	p.omit_bat_region = true;
	if (CHECK_EQ_INT(ib_init(&im, &p), 0) && CHECK_EQ_INT(ib_build(&im), 0))
		expect_refused("no BAT region", &im, "BAT", NULL);
	ib_free(&im);

	/* metadata region on top of the BAT region */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		region_set(&im, 1, 16, im.bat_offset, 8);
		expect_refused("overlapping regions", &im, "overlap", NULL);
	}
	ib_free(&im);

	/* BAT region on top of the log */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		region_set(&im, 0, 16, im.log_offset, 8);
		expect_refused("region over log", &im, "overlap", "log");
	}
	ib_free(&im);

	/* BAT region inside the header section */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		region_set(&im, 0, 16, 0, 8);
		expect_refused("region at 0", &im, "region", NULL);
	}
	ib_free(&im);

	/* unaligned region */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		region_set(&im, 1, 16, im.meta_offset + 4096, 8);
		expect_refused("unaligned region", &im, "region", NULL);
	}
	ib_free(&im);

	/* region past the end of the file */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		region_set(&im, 1, 16, im.file_size + 16 * MiB, 8);
		expect_refused("region past eof", &im, "region", NULL);
	}
	ib_free(&im);

	/* the same GUID twice */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		int copy;

		for (copy = 0; copy < 2; copy++) {
			uint8_t g[16];

			mem_io_get(im.m, ib_region_entry(copy, 0), g, 16);
			mem_io_put(im.m, ib_region_entry(copy, 1), g, 16);
		}
		region_set(&im, 1, 16, im.meta_offset, 8);
		expect_refused("duplicate region", &im, "region", NULL);
	}
	ib_free(&im);

	/* entry count beyond 2047 */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		int copy;

		for (copy = 0; copy < 2; copy++) {
			mem_io_put_le32(im.m, ib_region_offset(copy) + 8,
					0xFFFFFFFFu);
			ib_region_fix_crc(&im, copy);
		}
		expect_refused("region count", &im, "region table", NULL);
	}
	ib_free(&im);
}

static int meta_image(struct ib_image *im, unsigned int omit,
		      const uint8_t *extra_guid, uint32_t extra_flags)
{
	struct ib_params p = {0};

	p.virtual_size = 8 * MiB;
	p.block_size = 1 * MiB;
	p.meta_omit = omit;
	if (extra_guid) {
		p.has_extra_item = true;
		memcpy(p.extra_item_guid, extra_guid, 16);
		p.extra_item_flags = extra_flags;
	}
	if (ib_init(im, &p) < 0)
		return -1;
	ib_set_state(im, 1, 6);
	return ib_build(im);
}

TEST(metadata_items)
{
	static const uint8_t odd_guid[16] = {0xEF, 0xBE, 0xAD, 0xDE, 0x34, 0x12,
					     0x78, 0x46, 0x9A, 0xBC, 0xDE, 0xF0,
					     0x01, 0x23, 0x45, 0x67};
	static const char *const names[] = {
	    "file parameters",	   "virtual disk size",	   "virtual disk id",
	    "logical sector size", "physical sector size",
	};
	struct ib_image im;
	struct vhdx_image *img;
	unsigned int i;

	for (i = 0; i < 5; i++) {
		if (CHECK_EQ_INT(meta_image(&im, 1u << i, NULL, 0), 0))
			expect_refused(names[i], &im, "metadata", names[i]);
		ib_free(&im);
	}

	/* unknown required system item: GUID in the message */
	if (CHECK_EQ_INT(meta_image(&im, 0, odd_guid, 0x4), 0))
		expect_refused("unknown item", &im,
			       "deadbeef-1234-4678-9abc-def001234567",
			       "metadata");
	ib_free(&im);
	/* ... required user item */
	if (CHECK_EQ_INT(meta_image(&im, 0, odd_guid, 0x5), 0))
		expect_refused("unknown user item", &im,
			       "deadbeef-1234-4678-9abc-def001234567", NULL);
	ib_free(&im);
	/* ... optional: fine */
	if (CHECK_EQ_INT(meta_image(&im, 0, odd_guid, 0x2), 0) &&
	    expect_opens("optional item", &im, &img)) {
		verify_all(img, &im);
		vhdx_close(img);
	}
	ib_free(&im);

	/* table signature */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		mem_io_put(im.m, im.meta_offset, "METADATA", 8);
		expect_refused("metadata signature", &im, "metadata", NULL);
	}
	ib_free(&im);

	/* an item outside the region */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		mem_io_put_le32(im.m, im.item_entry[IB_ITEM_DISK_SIZE] + 16,
				im.meta_length - 4);
		expect_refused("item offset", &im, "metadata", NULL);
	}
	ib_free(&im);

	/* an item inside the table (offset < 64 KiB) */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		mem_io_put_le32(im.m, im.item_entry[IB_ITEM_DISK_SIZE] + 16,
				0x100);
		expect_refused("item in table", &im, "metadata", NULL);
	}
	ib_free(&im);

	/* an item too short for its value */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		mem_io_put_le32(im.m, im.item_entry[IB_ITEM_DISK_SIZE] + 20, 4);
		expect_refused("item length", &im, "metadata", NULL);
	}
	ib_free(&im);

	/* a known item twice */
	if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
		uint8_t g[16];

		mem_io_get(im.m, im.item_entry[IB_ITEM_DISK_SIZE], g, 16);
		mem_io_put(im.m, im.item_entry[IB_ITEM_DISK_ID], g, 16);
		expect_refused("duplicate item", &im, "metadata", NULL);
	}
	ib_free(&im);
}

/* Patch a metadata value in place (items carry no checksum). */
static void meta_value(struct ib_image *im, enum ib_item it, unsigned int off,
		       uint64_t v, int width)
{
	if (width == 8)
		mem_io_put_le64(im->m, im->item_off[it] + off, v);
	else
		mem_io_put_le32(im->m, im->item_off[it] + off, (uint32_t)v);
}

TEST(geometry_values)
{
	static const struct {
		const char *name;
		enum ib_item it;
		unsigned int off;
		uint64_t v;
		int width;
		const char *needle;
	} cases[] = {
	    {"block size 3 MiB", IB_ITEM_FILE_PARAMS, 0, 3 * MiB, 4,
	     "block size"},
	    {"block size 0", IB_ITEM_FILE_PARAMS, 0, 0, 4, "block size"},
	    {"block size 512 MiB", IB_ITEM_FILE_PARAMS, 0, 512 * MiB, 4,
	     "block size"},
	    {"block size 512 KiB", IB_ITEM_FILE_PARAMS, 0, 512 * 1024, 4,
	     "block size"},
	    {"logical sector 1024", IB_ITEM_LOGICAL_SECTOR, 0, 1024, 4,
	     "sector"},
	    {"logical sector 0", IB_ITEM_LOGICAL_SECTOR, 0, 0, 4, "sector"},
	    {"physical sector 1024", IB_ITEM_PHYSICAL_SECTOR, 0, 1024, 4,
	     "sector"},
	    {"virtual size 0", IB_ITEM_DISK_SIZE, 0, 0, 8, "size"},
	    {"virtual size 2^46+512", IB_ITEM_DISK_SIZE, 0, 64 * TiB + 512, 8,
	     "size"},
	    {"virtual size 2^64-512", IB_ITEM_DISK_SIZE, 0, UINT64_MAX - 511, 8,
	     "size"},
	    {"virtual size odd", IB_ITEM_DISK_SIZE, 0, 8 * MiB + 256, 8,
	     "size"},
	    /* 200 GiB of 1 MiB blocks needs > 1 MiB of BAT */
	    {"BAT too small", IB_ITEM_DISK_SIZE, 0, 200 * GiB, 8, "BAT"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ib_image im;

		if (CHECK_EQ_INT(meta_image(&im, 0, NULL, 0), 0)) {
			meta_value(&im, cases[i].it, cases[i].off, cases[i].v,
				   cases[i].width);
			expect_refused(cases[i].name, &im, cases[i].needle,
				       NULL);
		}
		ib_free(&im);
	}
	/* the limit itself is fine: 64 TiB needs a bigger BAT, so use
	 * 256 MiB blocks (262144 entries + bitmaps fit in 3 MiB) */
	{
		struct ib_image im;
		struct ib_params p = {0};
		struct vhdx_image *img;

		p.virtual_size = 64 * TiB;
		p.block_size = 256 * MiB;
		if (CHECK_EQ_INT(ib_init(&im, &p), 0)) {
			ib_set_state(&im, im.n - 1, 6);
			if (CHECK_EQ_INT(ib_build(&im), 0) &&
			    expect_opens("64 TiB", &im, &img)) {
				verify(img, &im, 64 * TiB - 2 * MiB, 2 * MiB);
				verify(img, &im, 0, 1 * MiB);
				vhdx_close(img);
			}
		}
		ib_free(&im);
	}
}

TEST(bat_entries)
{
	struct ib_image im;
	struct vhdx_image *img;

	/* reserved bits 3..19 */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 0, ib_get_bat(&im, 0) | (1ull << 3));
		expect_refused("reserved bit 3", &im, "BAT", "reserved");
	}
	ib_free(&im);
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 5, 1ull << 19);
		expect_refused("reserved bit 19", &im, "BAT", "reserved");
	}
	ib_free(&im);

	/* state 4 (reserved) */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 5, 4);
		expect_refused("state 4", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* state 7 in a non-differencing file */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 0, (ib_get_bat(&im, 0) & ~7ull) | 7);
		expect_refused("state 7", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* a sector bitmap entry in a non-differencing file */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, im.cr, im.file_size | 6);
		mem_io_set_size(im.m, im.file_size + 1 * MiB);
		expect_refused("bitmap present", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* state 5 (UNMAPPED of draft v0.95): zeros */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, 5);
		ib_set_state(&im, 3, 5);
		if (expect_opens("state 5", &im, &img)) {
			verify_all(img, &im);
			vhdx_close(img);
		}
	}
	ib_free(&im);

	/* offset past the end of the file */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 0, (im.file_size + 64 * MiB) | 6);
		expect_refused("past eof", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* file truncated inside the last block */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		mem_io_set_size(im.m, im.file_size - 512 * 1024);
		expect_refused("truncated", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* two blocks at the same offset */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, ib_get_bat(&im, 0));
		expect_refused("duplicate offset", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* a block inside the BAT, metadata region, log, header section */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, im.bat_offset | 6);
		expect_refused("block on BAT", &im, "BAT", NULL);
	}
	ib_free(&im);
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, im.meta_offset | 6);
		expect_refused("block on metadata", &im, "BAT", "metadata");
	}
	ib_free(&im);
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, im.log_offset | 6);
		expect_refused("block on log", &im, "BAT", "log");
	}
	ib_free(&im);
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, 0 | 6);
		expect_refused("block at 0", &im, "BAT", NULL);
	}
	ib_free(&im);

	/* a block offset that overflows when the block size is added */
	if (CHECK_EQ_INT(base_image(&im), 0)) {
		ib_put_bat(&im, 3, 0xFFFFFFFFFFF00006ull);
		expect_refused("offset overflow", &im, "BAT", NULL);
	}
	ib_free(&im);
}

TEST(partial_last_block_in_file)
{
	/* the file ends where the disk's last (partial) block ends */
	struct ib_image im;
	struct ib_params p = {0};
	struct vhdx_image *img;

	p.virtual_size = 5 * MiB + 512 * 1024;
	p.block_size = 2 * MiB;
	p.seed = 0x9A;
	if (!CHECK_EQ_INT(ib_init(&im, &p), 0))
		return;
	ib_set_state(&im, 0, 6);
	ib_set_state(&im, 2, 6);
	if (CHECK_EQ_INT(ib_build(&im), 0)) {
		mem_io_set_size(im.m, im.block_off[2] + 1 * MiB + 512 * 1024);
		im.file_size = mem_io_get_size(im.m);
		if (expect_opens("partial last block", &im, &img)) {
			verify_all(img, &im);
			vhdx_close(img);
		}
	}
	ib_free(&im);
}

/* ---- I/O errors ---- */

TEST(pread_errors)
{
	struct ib_image im;
	struct vhdx_image *img;
	struct mem_io_counts c;
	unsigned long n, preads;
	int rc;

	if (!CHECK_EQ_INT(log_only_image(&im), 0))
		goto out;
	/* how many preads does a clean open take? */
	if (!expect_opens("count preads", &im, &img))
		goto out;
	mem_io_get_counts(im.m, &c);
	preads = c.pread;
	CHECK(preads > 0);
	/* a failing read is not a short read: -EIO out, all-zero data */
	mem_io_fail_pread(im.m, 1, EIO);
	{
		uint8_t buf[4096];

		CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), 3 * MiB), -EIO);
		CHECK_EQ_INT(vhdx_read(img, buf, sizeof(buf), 3 * MiB), 4096);
	}
	vhdx_close(img);

	/* fail each of them in turn: -EIO, an error message, no leak */
	for (n = 1; n <= preads; n++) {
		mem_io_fail_pread(im.m, n, EIO);
		rc = try_open(&im, &img);
		if (!CHECK_EQ_INT(rc, -EIO))
			unit_note("pread %lu of %lu failing: open gave %d", n,
				  preads, rc);
		CHECK(img == NULL);
		CHECK(sink.n_err > 0);
		if (rc == 0)
			vhdx_close(img);
	}
	mem_io_fail_pread(im.m, 0, 0);
	CHECK(expect_opens("after faults", &im, &img));
	if (img)
		vhdx_close(img);
out:
	ib_free(&im);
}

/* ---- the test backend itself ---- */

TEST(mem_io_selftest)
{
	struct mem_io *m = mem_io_new();
	struct mem_io_counts c;
	struct vhdx_io io;
	uint8_t buf[200000], back[200000];
	uint64_t d0, size;
	size_t i;

	if (!CHECK(m != NULL))
		return;
	mem_io_ops(&io, m);
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	/* sparse: a write far out allocates only what it touches */
	CHECK_EQ_INT(io.pwrite(io.opaque, buf, sizeof(buf), 5 * GiB - 1000), 0);
	CHECK(io.size(io.opaque, &size) == 0);
	CHECK_EQ_U64(size, 5 * GiB - 1000 + sizeof(buf));
	CHECK(mem_io_allocated(m) <= 5 * MEM_IO_CHUNK);
	CHECK_EQ_INT(io.pread(io.opaque, back, sizeof(back), 5 * GiB - 1000),
		     sizeof(back));
	CHECK_EQ_MEM(back, buf, sizeof(buf));
	/* holes read as zeros; a read at the end is short */
	memset(back, 0xEE, 100);
	CHECK_EQ_INT(io.pread(io.opaque, back, 100, 1 * GiB), 100);
	CHECK(back[0] == 0 && back[99] == 0);
	CHECK_EQ_INT(io.pread(io.opaque, back, 100, size - 10), 10);
	CHECK_EQ_INT(io.pread(io.opaque, back, 100, size), 0);
	CHECK_EQ_INT(io.pread(io.opaque, back, 100, size + 12345), 0);
	/* shrink then grow: the cut-off bytes come back as zeros */
	CHECK_EQ_INT(io.truncate(io.opaque, 5 * GiB - 500), 0);
	CHECK_EQ_INT(io.truncate(io.opaque, 5 * GiB + 300000), 0);
	CHECK_EQ_INT(io.pread(io.opaque, back, 1000, 5 * GiB - 1000), 1000);
	CHECK_EQ_MEM(back, buf, 500);
	CHECK(back[500] == 0 && back[999] == 0);
	/* counters */
	mem_io_get_counts(m, &c);
	CHECK_EQ_U64(c.pwrite, 1);
	CHECK_EQ_U64(c.truncate, 2);
	CHECK_EQ_U64(c.flush, 0);
	CHECK_EQ_U64(mem_io_modifications(m), 3);
	mem_io_reset_counts(m);
	CHECK_EQ_U64(mem_io_modifications(m), 0);
	/* faults: the 2nd pwrite fails and changes nothing */
	mem_io_fail_pwrite(m, 2, ENOSPC);
	CHECK_EQ_INT(io.pwrite(io.opaque, buf, 10, 100), 0);
	d0 = mem_io_digest(m);
	CHECK_EQ_INT(io.pwrite(io.opaque, buf + 1, 10, 100), -ENOSPC);
	CHECK_EQ_U64(mem_io_digest(m), d0);
	CHECK_EQ_INT(io.pwrite(io.opaque, buf + 1, 10, 100), 0);
	CHECK(mem_io_digest(m) != d0);
	mem_io_fail_flush(m, 1, EIO);
	CHECK_EQ_INT(io.flush(io.opaque), -EIO);
	CHECK_EQ_INT(io.flush(io.opaque), 0);
	mem_io_fail_pread(m, 3, EBADF);
	CHECK_EQ_INT(io.pread(io.opaque, back, 10, 0), 10);
	CHECK_EQ_INT(io.pread(io.opaque, back, 10, 0), 10);
	CHECK_EQ_INT(io.pread(io.opaque, back, 10, 0), -EBADF);
	CHECK_EQ_INT(io.pread(io.opaque, back, 10, 0), 10);
	/* a zero-filled chunk does not count as a change */
	d0 = mem_io_digest(m);
	memset(back, 0, 4096);
	mem_io_put(m, 3 * GiB, back, 4096);
	CHECK_EQ_U64(mem_io_digest(m), d0);
	mem_io_free(m);
}

/* ---- small API pieces ---- */

TEST(rdonly_refuses_writes)
{
	struct ib_image im;
	struct vhdx_image *img;
	uint8_t buf[4096];
	uint64_t digest;

	if (!CHECK_EQ_INT(base_image(&im), 0))
		goto out;
	digest = mem_io_digest(im.m);
	if (expect_opens("rdonly write", &im, &img)) {
		memset(buf, 0x42, sizeof(buf));
		CHECK(vhdx_is_read_only(img) != 0);
		CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 0), -EROFS);
		CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 5 * MiB),
			     -EROFS);
		vhdx_flush(img);
		CHECK_EQ_INT(vhdx_close(img), 0);
	}
	untouched(&im, digest);
out:
	ib_free(&im);
}

TEST(state_names)
{
	unsigned int s;

	CHECK_EQ_STR(vhdx_block_state_name(0), "NOT_PRESENT");
	CHECK_EQ_STR(vhdx_block_state_name(1), "UNDEFINED");
	CHECK_EQ_STR(vhdx_block_state_name(2), "ZERO");
	CHECK_EQ_STR(vhdx_block_state_name(3), "UNMAPPED");
	CHECK_EQ_STR(vhdx_block_state_name(6), "FULLY_PRESENT");
	CHECK_EQ_STR(vhdx_block_state_name(7), "PARTIALLY_PRESENT");
	for (s = 0; s < 300; s++)
		CHECK(vhdx_block_state_name(s) != NULL);
	CHECK(vhdx_block_state_name(UINT32_MAX) != NULL);
	CHECK(vhdx_version() != NULL && vhdx_version()[0] != '\0');
}

/*
 * Whose fault: options that contradict each other are the caller's
 * mistake (-EINVAL, the image untouched); a damaged image is -EUCLEAN.
 */
TEST(error_says_whose_fault)
{
	static const unsigned int bad_flags[] = {
	    VHDX_OPEN_ANY_LINKAGE, VHDX_OPEN_MERGE_RESUME, VHDX_OPEN_NO_PARENT};
	struct vhdx_open_opts o = {.msg = msgsink_cb, .msg_opaque = &sink};
	struct vhdx_image *img;
	struct ib_image im;
	struct vhdx_io io;
	uint64_t digest;

	if (!CHECK_EQ_INT(base_image(&im), 0))
		goto out;
	mem_io_ops(&io, im.m);
	digest = mem_io_digest(im.m);
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		/* read-write with a read-only-only option */
		o.flags = bad_flags[i];
		img = NULL;
		mem_io_reset_counts(im.m);
		CHECK_EQ_INT(vhdx_open(&img, &io, &o), -EINVAL);
		CHECK(img == NULL);
		untouched(&im, digest);
	}
	/* the same image with its file identifier signature broken */
	o.flags = VHDX_OPEN_RDONLY;
	mem_io_put(im.m, 0, "X", 1);
	CHECK_EQ_INT(vhdx_open(&img, &io, &o), -EUCLEAN);
out:
	ib_free(&im);
}

TEST(no_sink)
{
	/* a NULL message callback and NULL opts are allowed */
	struct ib_image im;
	struct vhdx_open_opts o = {.flags = VHDX_OPEN_RDONLY};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;

	if (!CHECK_EQ_INT(base_image(&im), 0))
		goto out;
	mem_io_ops(&io, im.m);
	if (CHECK_EQ_INT(vhdx_open(&img, &io, &o), 0))
		vhdx_close(img);
	mem_io_put(im.m, 0, "X", 1);
	CHECK(vhdx_open(&img, &io, &o) < 0);
	CHECK(img == NULL);
	CHECK_EQ_INT(vhdx_close(NULL), 0);
out:
	ib_free(&im);
}

int main(void)
{
	RUN_TEST(mem_io_selftest);
	RUN_TEST(states_all_geometries);
	RUN_TEST(disk_smaller_than_block);
	RUN_TEST(fixed_image);
	RUN_TEST(qemu_style_required_zero);
	RUN_TEST(chunk_boundaries);
	RUN_TEST(read_edges);
	RUN_TEST(concurrent_reads);
	RUN_TEST(log_replay_readonly);
	RUN_TEST(log_sequence_newest_wins);
	RUN_TEST(log_entry_wraps);
	RUN_TEST(log_empty_entry);
	RUN_TEST(log_description_agrees_with_open);
	RUN_TEST(log_zero_descriptor);
	RUN_TEST(log_guid_set_log_empty);
	RUN_TEST(log_other_guid_ignored);
	RUN_TEST(log_rewrites_metadata);
	RUN_TEST(log_many_descriptors);
	RUN_TEST(log_refused);
	RUN_TEST(bad_file_identifier);
	RUN_TEST(bat_minimum_size);
	RUN_TEST(tolerated_oddities);
	RUN_TEST(headers);
	RUN_TEST(region_tables);
	RUN_TEST(metadata_items);
	RUN_TEST(geometry_values);
	RUN_TEST(bat_entries);
	RUN_TEST(partial_last_block_in_file);
	RUN_TEST(pread_errors);
	RUN_TEST(rdonly_refuses_writes);
	RUN_TEST(state_names);
	RUN_TEST(no_sink);
	RUN_TEST(error_says_whose_fault);
	return unit_done();
}
