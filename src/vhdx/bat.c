/*
 * bat.c - geometry (fmt §7) and the Block Allocation Table (fmt §8): loading
 * it, and validating every entry's state and location before any I/O.
 *
 * The BAT is read whole at open (eager) unless the open is read-only, the
 * caller did not ask for VHDX_OPEN_FULL_BAT and the entries in use take
 * more than bat_eager_max bytes (4 MiB by default: a 16 TiB disk of 32 MiB
 * blocks, 512 GiB of 1 MiB blocks).  Then (lazy) the array is reserved as
 * untouched anonymous memory and read VHDX_BAT_SEG_ENTRIES entries at a
 * time, through the log overlay, when vhdx_bat_get first needs one of them.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

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
		return -EUCLEAN;
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

/*
 * Check one entry's state; returns the bytes it occupies in *len (0: none)
 * and counts a payload entry in count[state].
 */
static int check_entry(struct vhdx_image *img, uint64_t i, uint64_t *len,
		       uint64_t count[8])
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
		return -EUCLEAN;
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
			return -EUCLEAN;
		}
		*len = VHDX_SECTOR_BITMAP_BLOCK_SIZE;
		return 0;
	}
	pb = vhdx_bat_entry_block(&img->g, i);
	if (pb >= img->g.payload_blocks)
		return 0; /* slot past the end of the disk: unused */
	if (state == 4 || (state == VHDX_BLOCK_PARTIALLY_PRESENT && !diff)) {
		vhdx_err(img,
			 "BAT: payload entry %llu has state %u (%s), invalid "
			 "in a %s image",
			 (unsigned long long)i, state,
			 state == 4 ? "reserved" : "PARTIALLY_PRESENT",
			 diff ? "differencing" : "non-differencing");
		return -EUCLEAN;
	}
	count[state]++;
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
			return -EUCLEAN;
		}
		if (s > VHDX_MAX_OFF - l || s + l > img->eff_size) {
			vhdx_err(img,
				 "BAT: entry %llu points to 0x%llx (0x%llx "
				 "bytes), outside the file (%llu bytes): "
				 "truncated image?",
				 (unsigned long long)u[k].index,
				 (unsigned long long)s, (unsigned long long)l,
				 (unsigned long long)img->eff_size);
			return -EUCLEAN;
		}
		if (k + 1 < n && s + l > u[k + 1].start) {
			vhdx_err(img,
				 "BAT: entries %llu and %llu overlap in the "
				 "file (offsets 0x%llx and 0x%llx)",
				 (unsigned long long)u[k].index,
				 (unsigned long long)u[k + 1].index,
				 (unsigned long long)s,
				 (unsigned long long)u[k + 1].start);
			return -EUCLEAN;
		}
		for (size_t x = 0; x < img->n_extents; x++) {
			const struct vhdx_extent *e = &img->extents[x];

			if (s < e->start + e->length && e->start < s + l) {
				vhdx_err(img,
					 "BAT: entry %llu points to 0x%llx, "
					 "inside the %s",
					 (unsigned long long)u[k].index,
					 (unsigned long long)s, e->what);
				return -EUCLEAN;
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
		pb = vhdx_bat_entry_block(&img->g, i);
		sb = vhdx_bat_bitmap_index(&img->g, pb);
		if (sb >= used || (img->bat[sb] & VHDX_BAT_STATE_MASK) !=
				      VHDX_SB_BLOCK_PRESENT) {
			vhdx_err(img,
				 "BAT: block %llu is PARTIALLY_PRESENT but its "
				 "chunk has no sector bitmap (entry %llu)",
				 (unsigned long long)pb,
				 (unsigned long long)sb);
			return -EUCLEAN;
		}
	}
	return 0;
}

/* check_entry over [first, end); the blocks that take file space go to *u. */
static int check_entries(struct vhdx_image *img, uint64_t first, uint64_t end,
			 uint64_t count[8], struct used_block **u, size_t *n)
{
	*u = NULL;
	*n = 0;
	for (uint64_t i = first; i < end; i++) {
		uint64_t len;
		int ret = check_entry(img, i, &len, count);

		if (ret < 0)
			return ret;
		if (!len)
			continue;
		if (!*u) {
			*u = malloc((end - first) * sizeof(**u));
			if (!*u)
				return -ENOMEM;
		}
		(*u)[(*n)++] = (struct used_block){
		    .start = img->bat[i] & VHDX_BAT_OFFSET_MASK,
		    .length = len,
		    .index = i,
		};
	}
	return 0;
}

static int validate_bat(struct vhdx_image *img, uint64_t used)
{
	struct used_block *u;
	size_t n;
	int ret;

	ret = check_entries(img, 0, used, img->state_count, &u, &n);
	if (ret == 0)
		ret = check_partial(img, used);
	if (ret == 0)
		ret = check_locations(img, u, n);
	free(u);
	return ret;
}

static void decode_entries(uint64_t *e, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		e[i] = le64_get((const uint8_t *)&e[i]);
}

/* Lazy mode: reserve the array, read nothing yet. */
static int reserve_lazy(struct vhdx_image *img, uint64_t used)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t len = (used * VHDX_BAT_ENTRY_SIZE + page - 1) / page * page;
	void *p;

	if (len > SIZE_MAX)
		return -ENOMEM;
	img->bat_n_segs =
	    (used + VHDX_BAT_SEG_ENTRIES - 1) / VHDX_BAT_SEG_ENTRIES;
	img->bat_seg = calloc(img->bat_n_segs, 1);
	if (!img->bat_seg)
		return -ENOMEM;
	/* untouched pages cost no memory; only segments read get some */
	p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		vhdx_err(img, "BAT: cannot reserve %llu bytes of memory: %s",
			 (unsigned long long)len, strerror(errno));
		return -ENOMEM;
	}
	img->bat = p;
	img->bat_map_len = (size_t)len;
	img->bat_lazy = true;
	vhdx_debug(img,
		   "BAT: %llu entries (%llu KiB), read on demand in segments "
		   "of %u entries",
		   (unsigned long long)used,
		   (unsigned long long)(used * VHDX_BAT_ENTRY_SIZE / 1024),
		   VHDX_BAT_SEG_ENTRIES);
	return 0;
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
		return -EUCLEAN;
	}
	/*
	 * Entries past the last block's chunk are unused: load only what the
	 * geometry needs, so memory follows the disk, not the region length.
	 */
	used = vhdx_bat_alloc_entries(&img->g);
	if (used > img->bat_entries)
		used = img->bat_entries;
	img->bat_entries = used;
	/* the writer needs every entry, validated against all the others */
	if ((img->flags & VHDX_OPEN_RDONLY) &&
	    !(img->flags & VHDX_OPEN_FULL_BAT) &&
	    used > img->bat_eager_max / VHDX_BAT_ENTRY_SIZE)
		return reserve_lazy(img, used);
	img->bat = malloc(used * VHDX_BAT_ENTRY_SIZE);
	if (!img->bat)
		return -ENOMEM;
	ret = vhdx_file_read(img, img->bat, used * VHDX_BAT_ENTRY_SIZE,
			     img->bat_offset);
	if (ret < 0) {
		vhdx_err(img, "BAT: read failed: %s", strerror(-ret));
		return ret;
	}
	decode_entries(img->bat, used);
	return validate_bat(img, used);
}

/*
 * Read and validate segment seg of a lazy BAT; bat_seg_lock held.  The
 * entries get the checks of an eager open (state valid for the image type,
 * reserved bits, location clear of the header section, log and regions and
 * inside the file) and blocks of the segment must not overlap each other.
 * Two checks need other segments and are not made here:
 *  - overlap with a block of another segment is not looked for at all.  A
 *    lazy BAT exists only in read-only opens, where entries sharing file
 *    space make the disk read wrong data but cannot corrupt anything; an
 *    image that is ever written is opened eagerly, with the full check.
 *  - a PARTIALLY_PRESENT block's sector bitmap entry is checked when the
 *    block is read (vhdx_read_partial), through vhdx_bat_get.
 * Returns 0, -EUCLEAN (an entry is invalid, reported) or another -errno.
 */
static int load_segment(struct vhdx_image *img, uint64_t seg, uint64_t count[8])
{
	uint64_t first = seg * VHDX_BAT_SEG_ENTRIES;
	uint64_t end = first + VHDX_BAT_SEG_ENTRIES;
	uint64_t off = img->bat_offset + first * VHDX_BAT_ENTRY_SIZE;
	struct used_block *u;
	size_t n;
	int ret;

	if (end > img->bat_entries)
		end = img->bat_entries;
	ret = vhdx_file_read(img, img->bat + first,
			     (end - first) * VHDX_BAT_ENTRY_SIZE, off);
	if (ret < 0) {
		vhdx_err(img,
			 "BAT: reading entries %llu to %llu (file offset "
			 "0x%llx) failed: %s",
			 (unsigned long long)first,
			 (unsigned long long)(end - 1), (unsigned long long)off,
			 strerror(-ret));
		return ret;
	}
	decode_entries(img->bat + first, end - first);
	ret = check_entries(img, first, end, count, &u, &n);
	if (ret == 0)
		ret = check_locations(img, u, n);
	free(u);
	return ret;
}

static void report_bad_segment(struct vhdx_image *img, uint64_t seg)
{
	uint64_t first = seg * VHDX_BAT_SEG_ENTRIES;
	uint64_t last = first + VHDX_BAT_SEG_ENTRIES - 1;

	if (last >= img->bat_entries)
		last = img->bat_entries - 1;
	vhdx_warn(img,
		  "BAT: entries %llu to %llu are unusable: reads of the "
		  "blocks they map fail with EIO",
		  (unsigned long long)first, (unsigned long long)last);
}

int vhdx_bat_load(struct vhdx_image *img, uint64_t seg)
{
	uint64_t count[8] = {0};
	int ret = 0;

	if (!img->bat_lazy)
		return 0;
	if (seg >= img->bat_n_segs)
		return -EIO;
	pthread_mutex_lock(&img->bat_seg_lock);
	/* every store happens under the lock: a relaxed load is enough */
	switch (__atomic_load_n(&img->bat_seg[seg], __ATOMIC_RELAXED)) {
	case VHDX_SEG_READY:
		break;
	case VHDX_SEG_BAD:
		ret = -EIO;
		break;
	default:
		ret = load_segment(img, seg, count);
		if (ret == 0) {
			for (int k = 0; k < 8; k++)
				img->state_count[k] += count[k];
			/* release: the entries before the flag */
			__atomic_store_n(&img->bat_seg[seg], VHDX_SEG_READY,
					 __ATOMIC_RELEASE);
			__atomic_add_fetch(&img->bat_segs_ready, 1,
					   __ATOMIC_RELEASE);
		} else if (ret == -EUCLEAN) {
			__atomic_store_n(&img->bat_seg[seg], VHDX_SEG_BAD,
					 __ATOMIC_RELAXED);
			report_bad_segment(img, seg);
			ret = -EIO;
		}
	}
	pthread_mutex_unlock(&img->bat_seg_lock);
	return ret;
}

int vhdx_bat_load_all(struct vhdx_image *img)
{
	uint64_t e;

	if (!img->bat_lazy)
		return 0;
	for (uint64_t i = 0; i < img->bat_entries; i += VHDX_BAT_SEG_ENTRIES) {
		int ret = vhdx_bat_get(img, i, &e);

		if (ret < 0)
			return ret;
	}
	return 0;
}

void vhdx_bat_free(struct vhdx_image *img)
{
	if (img->bat_map_len)
		munmap(img->bat, img->bat_map_len);
	else
		free(img->bat);
	free(img->bat_seg);
	img->bat = NULL;
	img->bat_seg = NULL;
	img->bat_map_len = 0;
}

/* ---- the sector bitmap cache (differencing images, fmt §8.4) ---- */

/* In img->bitmaps: the chunk's bitmap entry is invalid (reported). */
static uint8_t no_bitmap;

/*
 * The sector bitmap of the chunk of PARTIALLY_PRESENT block pb, loaded on
 * first use.  Its BAT entry must say SB_BLOCK_PRESENT (fmt §8.4): an eager
 * open checked that already, a lazy BAT (bat.c) only now.
 */
const uint8_t *vhdx_chunk_bitmap(struct vhdx_image *img, uint64_t pb, int *err)
{
	uint64_t c = pb / img->g.chunk_ratio;
	uint64_t idx = vhdx_bat_bitmap_index(&img->g, pb);
	uint8_t *bm = NULL;
	uint64_t e = 0;

	pthread_mutex_lock(&img->bitmap_lock);
	if (!img->bitmaps)
		img->bitmaps = calloc(img->g.bitmap_blocks, sizeof(uint8_t *));
	if (!img->bitmaps) {
		*err = -ENOMEM;
		goto out;
	}
	bm = img->bitmaps[c];
	if (bm == &no_bitmap) {
		bm = NULL;
		*err = -EIO;
		goto out;
	}
	if (bm)
		goto out;
	if (idx < img->bat_entries && (*err = vhdx_bat_get(img, idx, &e)) < 0)
		goto out;
	if ((e & VHDX_BAT_STATE_MASK) != VHDX_SB_BLOCK_PRESENT) {
		vhdx_err(img,
			 "BAT: block %llu is PARTIALLY_PRESENT but its chunk "
			 "has no sector bitmap (entry %llu)",
			 (unsigned long long)pb, (unsigned long long)idx);
		img->bitmaps[c] = &no_bitmap;
		*err = -EIO;
		goto out;
	}
	bm = malloc(VHDX_SECTOR_BITMAP_BLOCK_SIZE);
	if (!bm) {
		*err = -ENOMEM;
		goto out;
	}
	*err = vhdx_file_read(img, bm, VHDX_SECTOR_BITMAP_BLOCK_SIZE,
			      e & VHDX_BAT_OFFSET_MASK);
	if (*err < 0) {
		free(bm);
		bm = NULL;
		goto out;
	}
	img->bitmaps[c] = bm;
out:
	pthread_mutex_unlock(&img->bitmap_lock);
	return bm;
}

int vhdx_bitmaps_resize_locked(struct vhdx_image *img, uint64_t n)
{
	uint64_t old = img->g.bitmap_blocks;
	uint8_t **b;

	if (!img->bitmaps || n == old)
		return 0;
	b = calloc(n ? n : 1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (uint64_t c = 0; c < old; c++) {
		if (c < n)
			b[c] = img->bitmaps[c];
		else if (img->bitmaps[c] != &no_bitmap)
			free(img->bitmaps[c]);
	}
	free(img->bitmaps);
	img->bitmaps = b;
	return 0;
}

void vhdx_bitmaps_free(struct vhdx_image *img)
{
	if (!img->bitmaps)
		return;
	for (uint64_t c = 0; c < img->g.bitmap_blocks; c++)
		if (img->bitmaps[c] != &no_bitmap)
			free(img->bitmaps[c]);
	free(img->bitmaps);
	img->bitmaps = NULL;
}
