/*
 * bat.c - geometry (fmt §7) and the Block Allocation Table (fmt §8): loading
 * it, and validating every entry's state and location before any I/O.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

const char *vhdx_geom_problem(uint64_t virtual_size, uint32_t block_size,
			      uint32_t logical_sector)
{
	if (!is_pow2(block_size) || block_size < VHDX_MIN_BLOCK_SIZE ||
	    block_size > VHDX_MAX_BLOCK_SIZE)
		return "block size must be a power of two from 1 MiB to "
		       "256 MiB";
	if (logical_sector != 512 && logical_sector != 4096)
		return "logical sector size must be 512 or 4096";
	if (virtual_size == 0 || virtual_size > VHDX_MAX_VIRTUAL_SIZE)
		return "virtual disk size must be from 1 sector to 64 TiB";
	if (virtual_size % logical_sector)
		return "virtual disk size must be a multiple of the logical "
		       "sector size";
	return NULL;
}

int vhdx_geom_init(struct vhdx_geom *g, uint64_t virtual_size,
		   uint32_t block_size, uint32_t logical_sector)
{
	if (vhdx_geom_problem(virtual_size, block_size, logical_sector))
		return -EINVAL;
	g->virtual_size = virtual_size;
	g->block_size = block_size;
	g->logical_sector = logical_sector;
	g->sectors_per_block = block_size / logical_sector;
	g->chunk_ratio = VHDX_SECTORS_PER_CHUNK * logical_sector / block_size;
	g->payload_blocks = (virtual_size + block_size - 1) / block_size;
	g->bitmap_blocks =
	    (g->payload_blocks + g->chunk_ratio - 1) / g->chunk_ratio;
	return 0;
}

int vhdx_geom_init_report(struct vhdx_image *img, uint64_t virtual_size,
			  uint32_t block_size, uint32_t logical_sector)
{
	const char *why =
	    vhdx_geom_problem(virtual_size, block_size, logical_sector);

	if (why) {
		vhdx_err(img,
			 "metadata: %s (block size %u, logical sector size %u, "
			 "virtual disk size %llu)",
			 why, block_size, logical_sector,
			 (unsigned long long)virtual_size);
		return -EINVAL;
	}
	return vhdx_geom_init(&img->g, virtual_size, block_size,
			      logical_sector);
}

uint64_t vhdx_bat_min_entries(const struct vhdx_geom *g, bool differencing)
{
	if (differencing)
		return g->payload_blocks + g->bitmap_blocks;
	return g->payload_blocks + (g->payload_blocks - 1) / g->chunk_ratio;
}

uint64_t vhdx_bat_alloc_entries(const struct vhdx_geom *g)
{
	return g->bitmap_blocks * (g->chunk_ratio + 1);
}

const char *vhdx_block_state_name(unsigned int state)
{
	switch (state) {
	case VHDX_BLOCK_NOT_PRESENT:
		return "NOT_PRESENT";
	case VHDX_BLOCK_UNDEFINED:
		return "UNDEFINED";
	case VHDX_BLOCK_ZERO:
		return "ZERO";
	case VHDX_BLOCK_UNMAPPED:
		return "UNMAPPED";
	case VHDX_BLOCK_UNMAPPED_V095:
		return "UNMAPPED(v0.95)";
	case VHDX_BLOCK_FULLY_PRESENT:
		return "FULLY_PRESENT";
	case VHDX_BLOCK_PARTIALLY_PRESENT:
		return "PARTIALLY_PRESENT";
	default:
		return "INVALID";
	}
}

/* A block (payload or sector bitmap) that occupies file space. */
struct used_block {
	uint64_t start;
	uint64_t length;
	uint64_t index;
};

static int cmp_used(const void *a, const void *b)
{
	const struct used_block *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Check one entry's state; returns the bytes it occupies in *len (0: none). */
static int check_entry(struct vhdx_image *img, uint64_t i, uint64_t *len)
{
	uint64_t e = img->bat[i];
	unsigned int state = e & VHDX_BAT_STATE_MASK;
	bool diff = img->fp_flags & VHDX_FP_HAS_PARENT;
	uint64_t pb;

	*len = 0;
	if (e & VHDX_BAT_RESERVED_MASK) {
		vhdx_err(img,
			 "BAT: entry %llu (0x%016llx) has reserved bits set",
			 (unsigned long long)i, (unsigned long long)e);
		return -EINVAL;
	}
	if (vhdx_bat_is_bitmap_slot(&img->g, i)) {
		if (state == VHDX_SB_BLOCK_NOT_PRESENT)
			return 0;
		if (state != VHDX_SB_BLOCK_PRESENT || !diff) {
			vhdx_err(img,
				 "BAT: sector bitmap entry %llu has state %u, "
				 "invalid in a %s image",
				 (unsigned long long)i, state,
				 diff ? "differencing" : "non-differencing");
			return -EINVAL;
		}
		*len = VHDX_SECTOR_BITMAP_BLOCK_SIZE;
		return 0;
	}
	pb = i - i / (img->g.chunk_ratio + 1);
	if (pb >= img->g.payload_blocks)
		return 0; /* slot past the end of the disk: unused */
	if (state == 4 || (state == VHDX_BLOCK_PARTIALLY_PRESENT && !diff)) {
		vhdx_err(img,
			 "BAT: payload entry %llu has state %u (%s), invalid "
			 "in a %s image",
			 (unsigned long long)i, state,
			 state == 4 ? "reserved" : "PARTIALLY_PRESENT",
			 diff ? "differencing" : "non-differencing");
		return -EINVAL;
	}
	img->state_count[state]++;
	if (state == VHDX_BLOCK_FULLY_PRESENT ||
	    state == VHDX_BLOCK_PARTIALLY_PRESENT) {
		uint64_t first = pb * img->g.block_size;
		uint64_t in_disk = img->g.virtual_size - first;

		*len =
		    in_disk < img->g.block_size ? in_disk : img->g.block_size;
	}
	return 0;
}

/* Validate the location of every block that occupies file space. */
static int check_locations(struct vhdx_image *img, struct used_block *u,
			   size_t n)
{
	if (!n)
		return 0;
	qsort(u, n, sizeof(*u), cmp_used);
	for (size_t k = 0; k < n; k++) {
		uint64_t s = u[k].start, l = u[k].length;

		if (s < VHDX_HEADER_SECTION_SIZE) {
			vhdx_err(img,
				 "BAT: entry %llu points to 0x%llx, inside the "
				 "header section",
				 (unsigned long long)u[k].index,
				 (unsigned long long)s);
			return -EINVAL;
		}
		if (s > VHDX_MAX_OFF - l || s + l > img->eff_size) {
			vhdx_err(img,
				 "BAT: entry %llu points to 0x%llx (0x%llx "
				 "bytes), outside the file (%llu bytes): "
				 "truncated image?",
				 (unsigned long long)u[k].index,
				 (unsigned long long)s, (unsigned long long)l,
				 (unsigned long long)img->eff_size);
			return -EINVAL;
		}
		if (k + 1 < n && s + l > u[k + 1].start) {
			vhdx_err(img,
				 "BAT: entries %llu and %llu overlap in the "
				 "file (offsets 0x%llx and 0x%llx)",
				 (unsigned long long)u[k].index,
				 (unsigned long long)u[k + 1].index,
				 (unsigned long long)s,
				 (unsigned long long)u[k + 1].start);
			return -EINVAL;
		}
		for (size_t x = 0; x < img->n_extents; x++) {
			const struct vhdx_extent *e = &img->extents[x];

			if (s < e->start + e->length && e->start < s + l) {
				vhdx_err(img,
					 "BAT: entry %llu points to 0x%llx, "
					 "inside the %s",
					 (unsigned long long)u[k].index,
					 (unsigned long long)s, e->what);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* A PARTIALLY_PRESENT block needs its chunk's sector bitmap (fmt §8.4). */
static int check_partial(struct vhdx_image *img, uint64_t used)
{
	for (uint64_t i = 0; i < used; i++) {
		uint64_t sb, pb;

		if ((img->bat[i] & VHDX_BAT_STATE_MASK) !=
			VHDX_BLOCK_PARTIALLY_PRESENT ||
		    vhdx_bat_is_bitmap_slot(&img->g, i))
			continue;
		pb = i - i / (img->g.chunk_ratio + 1);
		sb = vhdx_bat_bitmap_index(&img->g, pb);
		if (sb >= used || (img->bat[sb] & VHDX_BAT_STATE_MASK) !=
				      VHDX_SB_BLOCK_PRESENT) {
			vhdx_err(img,
				 "BAT: block %llu is PARTIALLY_PRESENT but its "
				 "chunk has no sector bitmap (entry %llu)",
				 (unsigned long long)pb,
				 (unsigned long long)sb);
			return -EINVAL;
		}
	}
	return 0;
}

static int validate_bat(struct vhdx_image *img, uint64_t used)
{
	struct used_block *u = NULL;
	size_t n = 0;
	int ret = 0;

	for (uint64_t i = 0; i < used; i++) {
		uint64_t len;

		ret = check_entry(img, i, &len);
		if (ret < 0)
			goto out;
		if (!len)
			continue;
		if (!u) {
			u = malloc(used * sizeof(*u));
			if (!u) {
				ret = -ENOMEM;
				goto out;
			}
		}
		u[n++] = (struct used_block){
		    .start = img->bat[i] & VHDX_BAT_OFFSET_MASK,
		    .length = len,
		    .index = i,
		};
	}
	ret = check_partial(img, used);
	if (ret == 0)
		ret = check_locations(img, u, n);
out:
	free(u);
	return ret;
}

int vhdx_read_bat(struct vhdx_image *img)
{
	bool diff = img->fp_flags & VHDX_FP_HAS_PARENT;
	uint64_t need = vhdx_bat_min_entries(&img->g, diff);
	uint64_t used;
	int ret;

	img->bat_entries = img->bat_length / VHDX_BAT_ENTRY_SIZE;
	if (img->bat_entries < need) {
		vhdx_err(img,
			 "BAT: region holds %llu entries, the geometry needs "
			 "%llu (%llu blocks of %u bytes)",
			 (unsigned long long)img->bat_entries,
			 (unsigned long long)need,
			 (unsigned long long)img->g.payload_blocks,
			 img->g.block_size);
		return -EINVAL;
	}
	/*
	 * Entries past the last block's chunk are unused: load only what the
	 * geometry needs, so memory follows the disk, not the region length.
	 */
	used = vhdx_bat_alloc_entries(&img->g);
	if (used > img->bat_entries)
		used = img->bat_entries;
	img->bat_entries = used;
	img->bat = malloc(used * VHDX_BAT_ENTRY_SIZE);
	if (!img->bat)
		return -ENOMEM;
	ret = vhdx_file_read(img, img->bat, used * VHDX_BAT_ENTRY_SIZE,
			     img->bat_offset);
	if (ret < 0) {
		vhdx_err(img, "BAT: read failed: %s", strerror(-ret));
		return ret;
	}
	for (uint64_t i = 0; i < used; i++)
		img->bat[i] = le64_get((const uint8_t *)&img->bat[i]);
	return validate_bat(img, used);
}
