/*
 * check.c - the consistency check behind `vhdxtool check`, and the repairs
 * that are safe to make.
 *
 * vhdx_open stops at the first thing that makes an image unusable and
 * tolerates what it can work around (one damaged header or region table
 * copy, a dirty log, which it replays).  The check runs on an image that
 * opened and reports everything: the tolerated damage, metadata items that
 * overlap, every BAT entry against every other structure, sector bitmap
 * consistency and file space no structure uses.
 *
 * Repairs only ever restore a redundant copy from the good one (headers,
 * region tables) or drop unused space at the end of the file; the log is
 * replayed by the read-write open itself.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "vhdx_inspect.h"

/* At most this many messages about individual overlapping ranges. */
#define CHECK_MAX_RANGE_MSGS 20

struct check {
	struct vhdx_image *img;
	struct vhdx_check_report *r;
	struct vhdx_description *d;
	unsigned int range_msgs;
};

static void VHDX_PRINTF(3, 0) report(struct check *c, enum vhdx_msg_level level,
				     const char *fmt, va_list ap)
{
	char buf[400];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	vhdx_msgf(c->img, level, "%s", buf);
}

/* Something the format forbids; repairable: vhdx_repair fixes it. */
static void VHDX_PRINTF(3, 4)
    problem(struct check *c, bool repairable, const char *fmt, ...)
{
	va_list ap;

	c->r->problems++;
	if (repairable)
		c->r->repairable++;
	va_start(ap, fmt);
	report(c, VHDX_MSG_ERR, fmt, ap);
	va_end(ap);
}

static void VHDX_PRINTF(2, 3) warning(struct check *c, const char *fmt, ...)
{
	va_list ap;

	c->r->warnings++;
	va_start(ap, fmt);
	report(c, VHDX_MSG_WARNING, fmt, ap);
	va_end(ap);
}

/* ---- headers, region tables, log ---- */

static void check_headers(struct check *c)
{
	const struct vhdx_header_desc *h = c->d->header;

	for (int i = 0; i < 2; i++)
		if (!h[i].valid)
			problem(c, true,
				"header %d (offset 0x%llx) is damaged (bad "
				"signature or checksum); the image depends on "
				"header %d alone",
				i + 1, (unsigned long long)h[i].offset, 2 - i);
	if (h[0].valid && h[1].valid && h[0].seq == h[1].seq)
		warning(c,
			"both headers have sequence number %llu (Disk2vhd "
			"writes them so); the format asks for different "
			"numbers",
			(unsigned long long)h[0].seq);
}

static void check_region_tables(struct check *c)
{
	const struct vhdx_description *d = c->d;

	for (int i = 0; i < 2; i++)
		if (!d->region_valid[i])
			problem(c, true,
				"region table %d (offset 0x%x) is damaged (bad "
				"signature, checksum or entry count); the "
				"image depends on region table %d alone",
				i + 1,
				i ? VHDX_REGION2_OFFSET : VHDX_REGION1_OFFSET,
				2 - i);
	if (d->region_valid[0] && d->region_valid[1] && !d->regions_identical)
		problem(c, true,
			"the two region table copies differ; the image uses "
			"region table 1");
	for (size_t i = 0; i < d->n_regions; i++) {
		const struct vhdx_region_desc *r = &d->regions[i];

		if (r->required & ~1u)
			warning(c,
				"region {%s}: reserved bits of the Required "
				"field are set (0x%x)",
				r->guid, r->required);
		if (r->name && !(r->required & 1))
			vhdx_info(c->img,
				  "the %s region is not marked required "
				  "(qemu-img writes it so)",
				  r->name);
	}
}

static void check_log(struct check *c)
{
	const struct vhdx_log_desc *l = &c->d->log;

	if (l->dirty && c->img->log_replayed)
		problem(c, true,
			"the log is dirty (LogGuid {%s}): %llu sector%s not "
			"yet written to %s place; the image was not closed "
			"cleanly; --repair replays the log",
			l->guid, (unsigned long long)l->sectors_to_replay,
			l->sectors_to_replay == 1 ? " is" : "s are",
			l->sectors_to_replay == 1 ? "its" : "their");
	else if (l->dirty)
		problem(c, true,
			"LogGuid {%s} is set but the log holds no valid "
			"entry; --repair clears it",
			l->guid);
	if (l->length && l->offset + l->length > c->img->file_size)
		warning(c,
			"the log (0x%llx, %u bytes) extends past the end of "
			"the file (%llu bytes)",
			(unsigned long long)l->offset, l->length,
			(unsigned long long)c->img->file_size);
}

/* ---- metadata ---- */

static int cmp_meta(const void *a, const void *b)
{
	const struct vhdx_meta_desc *x =
	    *(const struct vhdx_meta_desc *const *)a;
	const struct vhdx_meta_desc *y =
	    *(const struct vhdx_meta_desc *const *)b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_meta_overlap(struct check *c)
{
	const struct vhdx_description *d = c->d;
	const struct vhdx_meta_desc **v = calloc(d->n_meta + 1, sizeof(*v));
	size_t n = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_meta; i++)
		if (d->meta[i].length)
			v[n++] = &d->meta[i];
	qsort(v, n, sizeof(*v), cmp_meta);
	for (size_t i = 1; i < n; i++) {
		const struct vhdx_meta_desc *p = v[i - 1], *m = v[i];

		if ((uint64_t)p->offset + p->length > m->offset)
			problem(c, false,
				"metadata items {%s} (0x%x, %u bytes) and "
				"{%s} (0x%x, %u bytes) overlap",
				p->guid, p->offset, p->length, m->guid,
				m->offset, m->length);
	}
	free(v);
	return 0;
}

static int check_metadata(struct check *c)
{
	const struct vhdx_description *d = c->d;
	static const uint8_t zero[16];

	for (size_t i = 0; i < d->n_meta; i++)
		if (d->meta[i].flags & ~7u)
			warning(c,
				"metadata item {%s}: reserved flag bits are "
				"set (0x%x)",
				d->meta[i].guid, d->meta[i].flags);
	if (!memcmp(c->img->disk_id, zero, 16))
		warning(c, "the virtual disk id (page 83 id) is all zeros");
	if (d->info.has_parent && d->has_locator && !d->locator_ok)
		problem(c, false,
			"the parent locator's key/value table is malformed");
	if (d->has_locator && !d->info.has_parent)
		vhdx_info(c->img, "a parent locator is present but the image "
				  "is not a differencing image");
	return check_meta_overlap(c);
}

/* ---- BAT and file space ---- */

/* A range of the file some structure occupies. */
struct used {
	uint64_t start;
	uint64_t length;  /* as laid out: a whole block */
	uint64_t in_file; /* what must lie inside the file */
	const char *what;
	uint64_t index; /* BAT index for blocks */
	bool block;
};

struct used_list {
	struct used *v;
	size_t n, cap;
};

static int used_add(struct used_list *u, const struct used *x)
{
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 64;
		struct used *v = realloc(u->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		u->v = v;
		u->cap = cap;
	}
	u->v[u->n++] = *x;
	return 0;
}

/* What BAT entry i occupies in the file; false if nothing. */
static bool bat_used(const struct vhdx_image *img, uint64_t i, struct used *x)
{
	const struct vhdx_geom *g = &img->g;
	uint64_t e = img->bat[i], pb, in_disk;
	unsigned int state = e & VHDX_BAT_STATE_MASK;

	*x = (struct used){
	    .start = e & VHDX_BAT_OFFSET_MASK, .index = i, .block = true};
	if (vhdx_bat_is_bitmap_slot(g, i)) {
		x->length = x->in_file = VHDX_SECTOR_BITMAP_BLOCK_SIZE;
		x->what = "sector bitmap block";
		return state == VHDX_SB_BLOCK_PRESENT;
	}
	pb = vhdx_bat_entry_block(g, i);
	if (pb >= g->payload_blocks || (state != VHDX_BLOCK_FULLY_PRESENT &&
					state != VHDX_BLOCK_PARTIALLY_PRESENT))
		return false;
	in_disk = g->virtual_size - pb * g->block_size;
	x->length = g->block_size;
	x->in_file = in_disk < g->block_size ? in_disk : g->block_size;
	x->what = "payload block";
	return true;
}

/* Tallies of legal but odd BAT entries, reported once each. */
struct bat_odd {
	uint64_t stray_offset, first_stray; /* offset in an offset-less state */
	uint64_t past_end, first_past_end;  /* non-zero slot past the disk */
	uint64_t not_full, first_not_full;  /* fixed image, block not present */
};

static void odd_count(uint64_t *count, uint64_t *first, uint64_t i)
{
	if (!(*count)++)
		*first = i;
}

static void bat_entry_odd(const struct vhdx_image *img, uint64_t i,
			  struct bat_odd *o)
{
	const struct vhdx_geom *g = &img->g;
	uint64_t e = img->bat[i];
	unsigned int state = e & VHDX_BAT_STATE_MASK;
	bool has_off = e & VHDX_BAT_OFFSET_MASK;
	uint64_t pb;

	if (vhdx_bat_is_bitmap_slot(g, i)) {
		if (state == VHDX_SB_BLOCK_NOT_PRESENT && has_off)
			odd_count(&o->stray_offset, &o->first_stray, i);
		return;
	}
	pb = vhdx_bat_entry_block(g, i);
	if (pb >= g->payload_blocks) {
		if (e)
			odd_count(&o->past_end, &o->first_past_end, i);
		return;
	}
	if ((state == VHDX_BLOCK_NOT_PRESENT || state == VHDX_BLOCK_ZERO) &&
	    has_off)
		odd_count(&o->stray_offset, &o->first_stray, i);
	if ((img->fp_flags & VHDX_FP_LEAVE_BLOCKS_ALLOCATED) &&
	    !(img->fp_flags & VHDX_FP_HAS_PARENT) &&
	    state != VHDX_BLOCK_FULLY_PRESENT)
		odd_count(&o->not_full, &o->first_not_full, i);
}

static void report_odd(struct check *c, const struct bat_odd *o)
{
	if (o->stray_offset)
		warning(c,
			"%llu BAT entr%s without a block carr%s a non-zero "
			"offset (first: entry %llu = 0x%016llx); the format "
			"asks for 0",
			(unsigned long long)o->stray_offset,
			o->stray_offset == 1 ? "y" : "ies",
			o->stray_offset == 1 ? "ies" : "y",
			(unsigned long long)o->first_stray,
			(unsigned long long)c->img->bat[o->first_stray]);
	if (o->past_end)
		warning(c,
			"%llu BAT entr%s past the last block %s not zero "
			"(first: entry %llu)",
			(unsigned long long)o->past_end,
			o->past_end == 1 ? "y" : "ies",
			o->past_end == 1 ? "is" : "are",
			(unsigned long long)o->first_past_end);
	if (o->not_full)
		warning(c,
			"fixed image (LeaveBlockAllocated) with %llu payload "
			"block%s not FULLY_PRESENT (first: entry %llu)",
			(unsigned long long)o->not_full,
			o->not_full == 1 ? "" : "s",
			(unsigned long long)o->first_not_full);
}

/* Differencing images: a PARTIALLY_PRESENT block needs its chunk's bitmap. */
static void check_bitmaps(struct check *c, uint64_t n)
{
	const struct vhdx_geom *g = &c->img->g;
	uint64_t chunk_entries = g->chunk_ratio + 1;

	for (uint64_t sb = g->chunk_ratio; sb < n; sb += chunk_entries) {
		uint64_t first = sb - g->chunk_ratio, partial = 0;

		if ((c->img->bat[sb] & VHDX_BAT_STATE_MASK) ==
		    VHDX_SB_BLOCK_PRESENT)
			continue;
		for (uint64_t i = first; i < sb; i++)
			if ((c->img->bat[i] & VHDX_BAT_STATE_MASK) ==
			    VHDX_BLOCK_PARTIALLY_PRESENT)
				partial++;
		if (partial)
			problem(c, false,
				"chunk %llu has %llu PARTIALLY_PRESENT "
				"block%s but no sector bitmap block (BAT "
				"entry %llu)",
				(unsigned long long)(sb / chunk_entries),
				(unsigned long long)partial,
				partial == 1 ? "" : "s",
				(unsigned long long)sb);
	}
}

/* Entries the check looks at: those a writer allocates, if present. */
static uint64_t bat_span(const struct vhdx_image *img)
{
	uint64_t n = vhdx_bat_alloc_entries(&img->g);

	return n < img->bat_entries ? n : img->bat_entries;
}

/* Collect every used range: header section, log, regions and blocks. */
static int collect_used(struct vhdx_image *img, struct used_list *u,
			struct bat_odd *odd, vhdx_progress_fn progress,
			void *popaque)
{
	uint64_t n = bat_span(img);
	struct used x;
	int ret = 0;

	for (size_t i = 0; i < img->n_extents && ret == 0; i++)
		ret = used_add(u, &(struct used){
				      .start = img->extents[i].start,
				      .length = img->extents[i].length,
				      .in_file = img->extents[i].length,
				      .what = img->extents[i].what,
				  });
	for (uint64_t i = 0; i < n && ret == 0; i++) {
		if (progress && i % 65536 == 0)
			progress(popaque, i, n);
		if (bat_used(img, i, &x))
			ret = used_add(u, &x);
		if (odd)
			bat_entry_odd(img, i, odd);
	}
	if (progress && ret == 0)
		progress(popaque, n, n);
	return ret;
}

static int cmp_used(const void *a, const void *b)
{
	const struct used *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static void describe_range(const struct used *x, char *buf, size_t len)
{
	if (x->block)
		snprintf(buf, len, "%s of BAT entry %llu at 0x%llx", x->what,
			 (unsigned long long)x->index,
			 (unsigned long long)x->start);
	else
		snprintf(buf, len, "%s at 0x%llx", x->what,
			 (unsigned long long)x->start);
}

static void report_overlap(struct check *c, const struct used *a,
			   const struct used *b)
{
	char sa[96], sb[96];

	if (c->range_msgs++ >= CHECK_MAX_RANGE_MSGS) {
		c->r->problems++;
		return;
	}
	if (a->block && b->block && a->start == b->start) {
		problem(
		    c, false, "BAT entries %llu and %llu both point to 0x%llx",
		    (unsigned long long)a->index, (unsigned long long)b->index,
		    (unsigned long long)a->start);
		return;
	}
	describe_range(a, sa, sizeof(sa));
	describe_range(b, sb, sizeof(sb));
	problem(c, false, "%s (0x%llx bytes) overlaps the %s", sb,
		(unsigned long long)b->length, sa);
}

static void check_inside_file(struct check *c, const struct used *x)
{
	char s[96];

	if (x->start >= VHDX_ALIGN && x->start <= VHDX_MAX_OFF - x->in_file &&
	    x->start + x->in_file <= c->img->eff_size)
		return;
	if (c->range_msgs++ >= CHECK_MAX_RANGE_MSGS) {
		c->r->problems++;
		return;
	}
	describe_range(x, s, sizeof(s));
	problem(c, false,
		"%s (0x%llx bytes) lies outside the file (%llu bytes)", s,
		(unsigned long long)x->in_file,
		(unsigned long long)c->img->eff_size);
}

/*
 * Walk the ranges in file order: overlaps, ranges outside the file, gaps.
 * Returns the end of the last structure.
 */
static uint64_t cross_check(struct check *c, struct used_list *u)
{
	const struct used *reach_by = NULL;
	uint64_t reach = 0;

	qsort(u->v, u->n, sizeof(*u->v), cmp_used);
	for (size_t k = 0; k < u->n; k++) {
		const struct used *x = &u->v[k];
		uint64_t end = x->start + x->length;

		if (x->block)
			check_inside_file(c, x);
		if (reach_by && x->start < reach)
			report_overlap(c, reach_by, x);
		if (x->start > reach && reach < c->img->file_size) {
			uint64_t gap_end = x->start < c->img->file_size
					       ? x->start
					       : c->img->file_size;

			c->r->unused_bytes += gap_end - reach;
			c->r->unused_ranges++;
		}
		if (end > reach || !reach_by) {
			reach = end;
			reach_by = x;
		}
	}
	if (c->range_msgs > CHECK_MAX_RANGE_MSGS)
		vhdx_err(c->img,
			 "... and %u more overlapping or misplaced "
			 "ranges",
			 c->range_msgs - CHECK_MAX_RANGE_MSGS);
	return reach;
}

/*
 * Space no structure uses is free: new blocks go there first (freemap.c)
 * and `vhdxtool compact` gives it back.  Not damage, so only information.
 */
static void report_space(struct check *c, uint64_t reach)
{
	uint64_t size = c->img->file_size;

	c->r->free_bytes = c->r->unused_bytes;
	c->r->free_places = c->r->unused_ranges;
	if (size > reach) {
		c->r->leaked_bytes = size - reach;
		c->r->free_bytes += size - reach;
		c->r->free_places++;
		vhdx_info(c->img,
			  "%llu bytes at the end of the file (0x%llx to "
			  "0x%llx) are free; --repair or compact truncates "
			  "them",
			  (unsigned long long)(size - reach),
			  (unsigned long long)reach, (unsigned long long)size);
	}
	if (c->r->unused_ranges)
		vhdx_info(c->img,
			  "%llu bytes in %llu gap%s between structures are "
			  "free",
			  (unsigned long long)c->r->unused_bytes,
			  (unsigned long long)c->r->unused_ranges,
			  c->r->unused_ranges == 1 ? "" : "s");
}

static int check_space(struct check *c, vhdx_progress_fn progress,
		       void *popaque)
{
	struct used_list u = {0};
	struct bat_odd odd = {0};
	uint64_t reach;
	int ret;

	pthread_rwlock_rdlock(&c->img->lock);
	ret = collect_used(c->img, &u, &odd, progress, popaque);
	if (ret == 0) {
		report_odd(c, &odd);
		if (c->img->fp_flags & VHDX_FP_HAS_PARENT)
			check_bitmaps(c, bat_span(c->img));
		reach = cross_check(c, &u);
		report_space(c, reach);
	}
	pthread_rwlock_unlock(&c->img->lock);
	free(u.v);
	return ret;
}

int vhdx_check(struct vhdx_image *img, struct vhdx_check_report *r,
	       vhdx_progress_fn progress, void *progress_opaque)
{
	struct check c = {.img = img, .r = r};
	int ret;

	memset(r, 0, sizeof(*r));
	/* this also reads a lazy BAT whole: from here img->bat is complete */
	ret = vhdx_describe(img, &c.d);
	if (ret < 0)
		return ret;
	check_headers(&c);
	check_region_tables(&c);
	check_log(&c);
	ret = check_metadata(&c);
	if (ret == 0)
		ret = check_space(&c, progress, progress_opaque);
	vhdx_describe_free(c.d);
	return ret;
}

/* ---- repair ---- */

static int repair_headers(struct vhdx_image *img, struct vhdx_check_report *r)
{
	int bad = !img->hdr_valid[0] ? 1 : !img->hdr_valid[1] ? 2 : 0;
	int ret;

	if (!bad)
		return 0;
	pthread_mutex_lock(&img->meta_lock);
	ret = vhdx_header_update(img, NULL, false);
	pthread_mutex_unlock(&img->meta_lock);
	if (ret < 0)
		return ret;
	vhdx_msgf(img, VHDX_MSG_NOTICE,
		  "repaired: rewrote both headers from header %d (sequence "
		  "number now %llu)",
		  3 - bad, (unsigned long long)img->seq);
	r->repaired++;
	return 0;
}

static int repair_region_tables(struct vhdx_image *img,
				struct vhdx_check_report *r)
{
	static const uint64_t offs[2] = {VHDX_REGION1_OFFSET,
					 VHDX_REGION2_OFFSET};
	uint8_t *buf = malloc(2 * VHDX_REGION_TABLE_SIZE);
	int good = img->region_copy - 1, bad = 1 - good;
	bool valid[2];
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vhdx_region_tables_read(img, buf, valid);
	if (ret < 0 || !valid[good] ||
	    (valid[bad] && !memcmp(buf, buf + VHDX_REGION_TABLE_SIZE,
				   VHDX_REGION_TABLE_SIZE)))
		goto out;
	/* the copy in use stays intact throughout: a torn write is harmless */
	ret = img->io.pwrite(img->io.opaque,
			     buf + (size_t)good * VHDX_REGION_TABLE_SIZE,
			     VHDX_REGION_TABLE_SIZE, offs[bad]);
	if (ret == 0)
		ret = img->io.flush(img->io.opaque);
	if (ret < 0)
		goto out;
	vhdx_msgf(img, VHDX_MSG_NOTICE,
		  "repaired: rewrote region table %d (offset 0x%llx) from "
		  "region table %d",
		  bad + 1, (unsigned long long)offs[bad], good + 1);
	r->repaired++;
out:
	free(buf);
	return ret;
}

static int repair_leak(struct vhdx_image *img, struct vhdx_check_report *r)
{
	struct used_list u = {0};
	uint64_t reach = 0, size;
	int ret;

	ret = img->io.size(img->io.opaque, &size);
	if (ret < 0)
		return ret;
	pthread_rwlock_rdlock(&img->lock);
	ret = collect_used(img, &u, NULL, NULL, NULL);
	pthread_rwlock_unlock(&img->lock);
	for (size_t k = 0; k < u.n; k++)
		if (u.v[k].start + u.v[k].length > reach)
			reach = u.v[k].start + u.v[k].length;
	free(u.v);
	if (ret < 0 || size <= reach)
		return ret;
	pthread_mutex_lock(&img->meta_lock);
	ret = img->io.truncate(img->io.opaque, reach);
	if (ret == 0)
		ret = img->io.flush(img->io.opaque);
	if (ret == 0) {
		img->file_size = img->eff_size = reach;
		img->alloc_end = (reach + VHDX_ALIGN - 1) & ~(VHDX_ALIGN - 1);
		img->flushed_size = reach & ~(VHDX_ALIGN - 1);
	}
	pthread_mutex_unlock(&img->meta_lock);
	if (ret < 0)
		return ret;
	vhdx_msgf(img, VHDX_MSG_NOTICE,
		  "repaired: truncated %llu bytes of leaked space (file size "
		  "now %llu)",
		  (unsigned long long)(size - reach),
		  (unsigned long long)reach);
	r->repaired++;
	return 0;
}

int vhdx_repair(struct vhdx_image *img, struct vhdx_check_report *r)
{
	int ret;

	if (img->read_only)
		return -EROFS;
	ret = repair_headers(img, r);
	if (ret == 0)
		ret = repair_region_tables(img, r);
	if (ret == 0)
		ret = repair_leak(img, r);
	if (ret < 0)
		vhdx_err(img, "repair failed: %s", strerror(-ret));
	return ret;
}
