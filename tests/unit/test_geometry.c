/*
 * test_geometry.c - derived geometry (fmt §7), BAT interleaving (fmt §8.2)
 * and BAT sizes (fmt §7.1).  Expected values are computed here from the
 * definitions, or taken from the tables and the worked example of fmt §14,
 * never from the library's own formulas.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

#define GiB (1024ull * MiB)
#define TiB (1024ull * GiB)

static const uint32_t block_sizes[] = {1 * MiB, 2 * MiB, 32 * MiB, 256 * MiB};
static const uint32_t sectors[] = {512, 4096};

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

TEST(chunk_ratio_table)
{
	/* fmt §7 table; 2 MiB filled in from CR = 2^23 * LSS / BlockSize */
	static const uint64_t cr[2][4] = {{4096, 2048, 128, 16},
					  {32768, 16384, 1024, 128}};
	struct vhdx_geom g;
	size_t s, i;

	for (s = 0; s < 2; s++) {
		for (i = 0; i < 4; i++) {
			memset(&g, 0xAA, sizeof(g));
			if (!CHECK_EQ_INT(vhdx_geom_init(&g, 1 * GiB,
							 block_sizes[i],
							 sectors[s]),
					  0))
				continue;
			CHECK_EQ_U64(g.chunk_ratio, cr[s][i]);
			CHECK_EQ_U64(g.chunk_ratio, (1ull << 23) * sectors[s] /
							block_sizes[i]);
			CHECK_EQ_U64(g.sectors_per_block,
				     block_sizes[i] / sectors[s]);
			CHECK_EQ_U64(g.block_size, block_sizes[i]);
			CHECK_EQ_U64(g.logical_sector, sectors[s]);
			CHECK_EQ_U64(g.virtual_size, 1 * GiB);
		}
	}
}

TEST(block_counts)
{
	/* sizes around block and chunk multiples */
	static const uint64_t sizes[] = {
	    4096,      1 * MiB - 4096, 1 * MiB,		1 * MiB + 4096,
	    3 * MiB,   1 * GiB,	       1 * GiB + 4096,	4 * GiB - 4096,
	    4 * GiB,   4 * GiB + 4096, 32 * GiB,	32 * GiB + 1 * MiB,
	    100 * GiB, 1 * TiB,	       64 * TiB - 4096, 64 * TiB,
	};
	size_t s, i, k;

	for (s = 0; s < 2; s++) {
		for (i = 0; i < 4; i++) {
			for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
				uint64_t cr =
				    (1ull << 23) * sectors[s] / block_sizes[i];
				uint64_t n = ceil_div(sizes[k], block_sizes[i]);
				struct vhdx_geom g;

				if (!CHECK_EQ_INT(vhdx_geom_init(&g, sizes[k],
								 block_sizes[i],
								 sectors[s]),
						  0))
					continue;
				CHECK_EQ_U64(g.payload_blocks, n);
				CHECK_EQ_U64(g.bitmap_blocks, ceil_div(n, cr));
				CHECK_EQ_U64(g.virtual_size, sizes[k]);
			}
		}
	}
}

TEST(invalid_inputs)
{
	static const struct {
		uint64_t size;
		uint32_t block;
		uint32_t sector;
	} bad[] = {
	    {1 * GiB, 3 * MiB, 512},	      /* not a power of two */
	    {1 * GiB, 1 * MiB + 512, 512},    /* not a power of two */
	    {1 * GiB, 96 * MiB, 4096},	      /* not a power of two */
	    {1 * GiB, 512 * 1024, 512},	      /* < 1 MiB */
	    {1 * GiB, 4096, 4096},	      /* < 1 MiB */
	    {1 * GiB, 0, 512},		      /* zero */
	    {1 * GiB, 512 * MiB, 512},	      /* > 256 MiB */
	    {1 * GiB, 0x80000000u, 512},      /* 2 GiB */
	    {1 * GiB, 32 * MiB, 1024},	      /* sector */
	    {1 * GiB, 32 * MiB, 0},	      /* sector */
	    {1 * GiB, 32 * MiB, 256},	      /* sector */
	    {1 * GiB, 32 * MiB, 2048},	      /* sector */
	    {1 * GiB, 32 * MiB, 8192},	      /* sector */
	    {1 * GiB, 32 * MiB, 513},	      /* sector */
	    {0, 32 * MiB, 512},		      /* empty disk */
	    {1 * GiB + 1, 32 * MiB, 512},     /* not sector multiple */
	    {513, 1 * MiB, 512},	      /* not sector multiple */
	    {1 * GiB + 512, 32 * MiB, 4096},  /* not sector multiple */
	    {512, 1 * MiB, 4096},	      /* below one sector */
	    {64 * TiB + 512, 32 * MiB, 512},  /* > 2^46 */
	    {64 * TiB + 4096, 1 * MiB, 4096}, /* > 2^46 */
	    {128 * TiB, 256 * MiB, 512},      /* > 2^46 */
	    {UINT64_MAX - 511, 1 * MiB, 512}, /* overflow bait */
	    {1ull << 63, 256 * MiB, 4096},    /* overflow bait */
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vhdx_geom g;
		int rc = vhdx_geom_init(&g, bad[i].size, bad[i].block,
					bad[i].sector);

		if (!CHECK_EQ_INT(rc, -EINVAL))
			unit_note("case %zu accepted: size %llu block %u "
				  "sector %u",
				  i, (unsigned long long)bad[i].size,
				  bad[i].block, bad[i].sector);
	}
}

TEST(limits_accepted)
{
	struct vhdx_geom g;

	/* exactly 2^46, the smallest disks, every valid combination */
	CHECK_EQ_INT(vhdx_geom_init(&g, 64 * TiB, 1 * MiB, 512), 0);
	CHECK_EQ_INT(vhdx_geom_init(&g, 64 * TiB, 256 * MiB, 4096), 0);
	CHECK_EQ_INT(vhdx_geom_init(&g, 512, 1 * MiB, 512), 0);
	CHECK_EQ_U64(g.payload_blocks, 1);
	CHECK_EQ_U64(g.bitmap_blocks, 1);
	CHECK_EQ_INT(vhdx_geom_init(&g, 4096, 256 * MiB, 4096), 0);
	CHECK_EQ_U64(g.payload_blocks, 1);
	CHECK_EQ_INT(vhdx_geom_init(&g, 4096, 256 * MiB, 512), 0);
}

/*
 * An explicitly enumerated interleaved BAT (fmt §8.2):
 * "PB0 .. PB(CR-1) SB0 PB(CR) .. PB(2CR-1) SB1 ..." and, for each payload
 * block and chunk, the slot where the enumeration put it.
 */
struct layout {
	uint64_t len;
	uint8_t *is_bitmap; /* per slot */
	uint64_t *pb_slot;  /* per payload block */
	uint64_t *sb_slot;  /* per chunk */
};

static int build_layout(struct layout *l, uint64_t cr, uint64_t chunks)
{
	uint64_t c, k, i = 0;

	l->len = chunks * (cr + 1);
	l->is_bitmap = calloc(l->len, 1);
	l->pb_slot = calloc(chunks * cr, sizeof(uint64_t));
	l->sb_slot = calloc(chunks, sizeof(uint64_t));
	if (!l->is_bitmap || !l->pb_slot || !l->sb_slot)
		return -1;
	for (c = 0; c < chunks; c++) {
		for (k = 0; k < cr; k++)
			l->pb_slot[c * cr + k] = i++;
		l->is_bitmap[i] = 1;
		l->sb_slot[c] = i++;
	}
	return 0;
}

static void free_layout(struct layout *l)
{
	free(l->is_bitmap);
	free(l->pb_slot);
	free(l->sb_slot);
}

static void check_interleave(uint32_t block, uint32_t sector)
{
	struct vhdx_geom g;
	struct layout l;
	uint64_t cr, i, pb, bad = 0;
	uint64_t probes[8];
	size_t p;

	/* three full chunks plus one block */
	cr = (1ull << 23) * sector / block;
	if (!CHECK_EQ_INT(
		vhdx_geom_init(&g, (3 * cr + 1) * block, block, sector), 0))
		return;
	if (!CHECK_EQ_INT(build_layout(&l, cr, 4), 0)) {
		free_layout(&l);
		return;
	}

	/* chunk boundaries, one check each so a failure names the block */
	probes[0] = 0;
	probes[1] = cr - 1;
	probes[2] = cr;
	probes[3] = cr + 1;
	probes[4] = 2 * cr - 1;
	probes[5] = 2 * cr;
	probes[6] = 2 * cr + 1;
	probes[7] = 3 * cr;
	for (p = 0; p < 8; p++) {
		pb = probes[p];
		CHECK_EQ_U64(vhdx_bat_payload_index(&g, pb), l.pb_slot[pb]);
		CHECK_EQ_U64(vhdx_bat_bitmap_index(&g, pb), l.sb_slot[pb / cr]);
		CHECK(!vhdx_bat_is_bitmap_slot(&g, l.pb_slot[pb]));
		CHECK(vhdx_bat_is_bitmap_slot(&g, l.sb_slot[pb / cr]));
	}
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, cr - 1), cr - 1);
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, cr), cr + 1);
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, 2 * cr), 2 * cr + 2);
	CHECK_EQ_U64(vhdx_bat_bitmap_index(&g, cr - 1), cr);
	CHECK_EQ_U64(vhdx_bat_bitmap_index(&g, cr), 2 * cr + 1);

	/* and every slot of the enumeration, counted */
	for (i = 0; i < l.len; i++)
		bad += vhdx_bat_is_bitmap_slot(&g, i) != (l.is_bitmap[i] != 0);
	for (pb = 0; pb < 4 * cr; pb++) {
		bad += vhdx_bat_payload_index(&g, pb) != l.pb_slot[pb];
		bad += vhdx_bat_bitmap_index(&g, pb) != l.sb_slot[pb / cr];
	}
	if (!CHECK_EQ_U64(bad, 0))
		unit_note("block %u sector %u: %llu mismatches", block, sector,
			  (unsigned long long)bad);
	free_layout(&l);
}

TEST(interleave)
{
	size_t s, i;

	for (s = 0; s < 2; s++) {
		for (i = 0; i < 4; i++)
			check_interleave(block_sizes[i], sectors[s]);
	}
}

TEST(worked_example)
{
	/* fmt §14: 1 GiB, 32 MiB blocks, 512-byte sectors */
	struct vhdx_geom g;
	uint64_t v = 100 * MiB + 4 * KiB, pb;

	if (!CHECK_EQ_INT(vhdx_geom_init(&g, 1 * GiB, 32 * MiB, 512), 0))
		return;
	CHECK_EQ_U64(g.sectors_per_block, 65536);
	CHECK_EQ_U64(g.chunk_ratio, 128);
	CHECK_EQ_U64(g.payload_blocks, 32);
	CHECK_EQ_U64(g.bitmap_blocks, 1);
	CHECK_EQ_U64(v, 104861696);
	pb = v / g.block_size;
	CHECK_EQ_U64(pb, 3);
	CHECK_EQ_U64(v % g.block_size, 0x401000);
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, pb), 3);
	CHECK_EQ_U64(vhdx_bat_bitmap_index(&g, pb), 128);
	CHECK(vhdx_bat_is_bitmap_slot(&g, 128));
	CHECK(!vhdx_bat_is_bitmap_slot(&g, 127));
	CHECK(!vhdx_bat_is_bitmap_slot(&g, 129));
	CHECK_EQ_U64(vhdx_bat_min_entries(&g, false), 32);
	CHECK_EQ_U64(vhdx_bat_min_entries(&g, true), 33);
	CHECK_EQ_U64(vhdx_bat_alloc_entries(&g), 129);

	/* fmt §8.2, verified image: 5 GiB, 32 MiB: block 130 -> index 131 */
	if (!CHECK_EQ_INT(vhdx_geom_init(&g, 5 * GiB, 32 * MiB, 512), 0))
		return;
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, 127), 127);
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, 128), 129);
	CHECK_EQ_U64(vhdx_bat_payload_index(&g, 130), 131);
}

TEST(bat_sizes)
{
	static const uint64_t sizes[] = {
	    4096,	    1 * MiB,	       4 * GiB - 1 * MiB,
	    4 * GiB,	    4 * GiB + 1 * MiB, 8 * GiB,
	    8 * GiB + 4096, 32 * GiB,	       32 * GiB + 1 * MiB,
	    100 * GiB,	    64 * TiB,
	};
	size_t s, i, k;

	for (s = 0; s < 2; s++) {
		for (i = 0; i < 4; i++) {
			for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
				struct vhdx_geom g;
				uint64_t cr, n, sb;

				if (!CHECK_EQ_INT(vhdx_geom_init(&g, sizes[k],
								 block_sizes[i],
								 sectors[s]),
						  0))
					continue;
				cr = (1ull << 23) * sectors[s] / block_sizes[i];
				n = ceil_div(sizes[k], block_sizes[i]);
				sb = ceil_div(n, cr);
				CHECK_EQ_U64(vhdx_bat_min_entries(&g, false),
					     n + (n - 1) / cr);
				CHECK_EQ_U64(vhdx_bat_min_entries(&g, true),
					     n + sb);
				CHECK_EQ_U64(vhdx_bat_alloc_entries(&g),
					     sb * (cr + 1));
				/* the last payload entry must fit */
				CHECK(vhdx_bat_payload_index(&g, n - 1) <
				      vhdx_bat_min_entries(&g, false));
				CHECK(vhdx_bat_bitmap_index(&g, n - 1) <
				      vhdx_bat_alloc_entries(&g));
			}
		}
	}
}

TEST(chunk_multiples)
{
	struct vhdx_geom g;

	/* N a multiple of CR: no partial last chunk */
	if (CHECK_EQ_INT(vhdx_geom_init(&g, 4 * GiB, 1 * MiB, 512), 0)) {
		CHECK_EQ_U64(g.payload_blocks, 4096);
		CHECK_EQ_U64(g.bitmap_blocks, 1);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, false), 4096);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, true), 4097);
		CHECK_EQ_U64(vhdx_bat_alloc_entries(&g), 4097);
	}
	/* one block into the second chunk */
	if (CHECK_EQ_INT(vhdx_geom_init(&g, 4 * GiB + 1 * MiB, 1 * MiB, 512),
			 0)) {
		CHECK_EQ_U64(g.payload_blocks, 4097);
		CHECK_EQ_U64(g.bitmap_blocks, 2);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, false), 4098);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, true), 4099);
		CHECK_EQ_U64(vhdx_bat_alloc_entries(&g), 8194);
		CHECK_EQ_U64(vhdx_bat_payload_index(&g, 4096), 4097);
	}
}

TEST(huge_disk)
{
	struct vhdx_geom g;

	/* fmt §7.1: 64 TiB, 1 MiB, 512 -> 67,108,864 + 16,384 entries */
	if (CHECK_EQ_INT(vhdx_geom_init(&g, 64 * TiB, 1 * MiB, 512), 0)) {
		CHECK_EQ_U64(g.chunk_ratio, 4096);
		CHECK_EQ_U64(g.payload_blocks, 67108864);
		CHECK_EQ_U64(g.bitmap_blocks, 16384);
		CHECK_EQ_U64(vhdx_bat_alloc_entries(&g), 67125248);
		CHECK_EQ_U64(vhdx_bat_alloc_entries(&g) * 8, 537001984);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, false), 67125247);
		CHECK_EQ_U64(vhdx_bat_min_entries(&g, true), 67125248);
		CHECK_EQ_U64(vhdx_bat_payload_index(&g, 67108863), 67125246);
		CHECK_EQ_U64(vhdx_bat_bitmap_index(&g, 67108863), 67125247);
		CHECK(vhdx_bat_is_bitmap_slot(&g, 67125247));
	}
	/* 4096-byte sectors: CR 32768, the 2^35 chunk size needs 64 bits */
	if (CHECK_EQ_INT(vhdx_geom_init(&g, 64 * TiB, 1 * MiB, 4096), 0)) {
		CHECK_EQ_U64(g.chunk_ratio, 32768);
		CHECK_EQ_U64(g.payload_blocks, 67108864);
		CHECK_EQ_U64(g.bitmap_blocks, 2048);
		CHECK_EQ_U64(g.sectors_per_block, 256);
		CHECK_EQ_U64(vhdx_bat_alloc_entries(&g), 2048ull * 32769);
		CHECK_EQ_U64(vhdx_bat_payload_index(&g, 67108863),
			     67108863ull + 2047);
	}
	if (CHECK_EQ_INT(vhdx_geom_init(&g, 64 * TiB, 256 * MiB, 512), 0)) {
		CHECK_EQ_U64(g.chunk_ratio, 16);
		CHECK_EQ_U64(g.payload_blocks, 262144);
		CHECK_EQ_U64(g.bitmap_blocks, 16384);
	}
}

int main(void)
{
	RUN_TEST(chunk_ratio_table);
	RUN_TEST(block_counts);
	RUN_TEST(invalid_inputs);
	RUN_TEST(limits_accepted);
	RUN_TEST(interleave);
	RUN_TEST(worked_example);
	RUN_TEST(bat_sizes);
	RUN_TEST(chunk_multiples);
	RUN_TEST(huge_disk);
	return unit_done();
}
