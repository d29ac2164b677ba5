/*
 * cmd_info.c - `vhdxtool info [--json] IMAGE`: everything vhdx_describe
 * knows about an image, as text for people or as JSON with stable keys for
 * scripts (the keys are listed in vhdxtool(1)).  Opens read-only: a dirty
 * log is replayed in memory only.
 *
 * For a differencing image the chain of parents is resolved as a mount
 * would resolve it and shown level by level.  If the parent cannot be used
 * (missing, stale), the image itself is still shown, opened without its
 * parent, with the reasons in place of the missing levels.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

/* One image of the chain; level 0 is IMAGE itself. */
struct vt_level {
	const char *path;
	struct vhdx_description *d;
	const char *linkage; /* its locator's parent_linkage, or NULL */
	char linkage_text[VHDX_GUID_TEXT_LEN]; /* linkage without braces */
	bool linkage_ok; /* level > 0: the open linked it to the level above */
};

struct vt_info {
	const char *path;
	const struct vhdx_description *d;
	uint64_t file_allocated; /* st_blocks * 512 */
	uint64_t allocated;	 /* its payload and sector bitmap blocks */
	int ntfs_sparse;	 /* vhdx_fd_ntfs_sparse of the file */
	struct vt_level *chain;
	int n_chain;
	char *chain_error; /* why the parent cannot be used, or NULL */
};

/* The library's messages while opening: errors kept, the rest shown. */
struct vt_info_sink {
	const char *path;
	char **msgs;
	size_t n;
};

static void vt_info_msg(void *opaque, enum vhdx_msg_level level,
			const char *msg)
{
	struct vt_info_sink *s = opaque;
	char **m;

	if (level > VHDX_MSG_ERR) {
		vt_vhdx_msg((void *)s->path, level, msg);
		return;
	}
	m = realloc(s->msgs, (s->n + 1) * sizeof(*m));
	if (!m)
		return;
	s->msgs = m;
	s->msgs[s->n] = strdup(msg);
	if (s->msgs[s->n])
		s->n++;
}

static void vt_info_sink_free(struct vt_info_sink *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->msgs[i]);
	free(s->msgs);
}

/* The kept errors on stderr, as vt_vhdx_msg shows them. */
static void vt_info_sink_flush(const struct vt_info_sink *s)
{
	for (size_t i = 0; i < s->n; i++)
		vt_vhdx_msg((void *)s->path, VHDX_MSG_ERR, s->msgs[i]);
}

/* The kept errors as one text, lines joined. */
static char *vt_info_sink_text(const struct vt_info_sink *s)
{
	size_t len = 1, pos = 0;
	char *t;

	for (size_t i = 0; i < s->n; i++)
		len += strlen(s->msgs[i]) + 1;
	t = malloc(len);
	if (!t)
		return NULL;
	for (size_t i = 0; i < s->n; i++) {
		size_t l = strlen(s->msgs[i]);

		memcpy(t + pos, s->msgs[i], l);
		pos += l;
		if (i + 1 < s->n)
			t[pos++] = '\n';
	}
	t[pos] = '\0';
	return t;
}

/* Payload states with a name worth a JSON key, in state order. */
static const struct {
	unsigned int state;
	const char *key;
} vt_states[] = {
    {VHDX_BLOCK_NOT_PRESENT, "not_present"},
    {VHDX_BLOCK_UNDEFINED, "undefined"},
    {VHDX_BLOCK_ZERO, "zero"},
    {VHDX_BLOCK_UNMAPPED, "unmapped"},
    {VHDX_BLOCK_UNMAPPED_V095, "unmapped_v095"},
    {VHDX_BLOCK_FULLY_PRESENT, "fully_present"},
    {VHDX_BLOCK_PARTIALLY_PRESENT, "partially_present"},
};

#define VT_N_STATES (sizeof(vt_states) / sizeof(vt_states[0]))

static const char *vt_type_name(const struct vhdx_info *i)
{
	if (i->has_parent)
		return "differencing";
	return i->leave_blocks_allocated ? "fixed" : "dynamic";
}

/* File bytes of the image's own payload and sector bitmap blocks. */
static uint64_t vt_allocated(struct vhdx_image *img)
{
	struct vhdx_allocation a;

	vhdx_allocation(img, &a);
	return a.payload_bytes + a.bitmap_bytes;
}

/* ---- the chain ---- */

static const char *vt_locator_value(const struct vhdx_description *d,
				    const char *key)
{
	for (size_t k = 0; d->has_locator && k < d->n_locator; k++)
		if (!strcmp(d->locator[k].key, key))
			return d->locator[k].value;
	return NULL;
}

static const char *vt_dwg(const struct vhdx_description *d)
{
	int cur = d->info.current_header;

	return d->header[cur == 2 ? 1 : 0].data_write_guid;
}

/* A locator GUID in the form of the rest of the output, if it is one. */
static void vt_guid_text(const char *locator, char out[VHDX_GUID_TEXT_LEN])
{
	size_t n;

	out[0] = '\0';
	if (!locator)
		return;
	if (*locator == '{')
		locator++;
	n = strlen(locator);
	if (n && locator[n - 1] == '}')
		n--;
	if (n != VHDX_GUID_TEXT_LEN - 1)
		return;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)locator[i]);
	out[n] = '\0';
}

/*
 * The linkage as the library parsed it when it opened the parent; for an
 * image opened alone (its parent unusable), the locator's text.
 */
static void vt_level_set(struct vt_level *l, const char *path,
			 struct vhdx_image *img, struct vhdx_description *d)
{
	struct vhdx_linkage lk;

	l->path = path;
	l->d = d;
	l->linkage = vt_locator_value(d, "parent_linkage");
	vhdx_parent_linkage(img, &lk);
	if (lk.linkage_valid)
		vhdx_guid_to_str(lk.linkage, l->linkage_text);
	else
		vt_guid_text(l->linkage, l->linkage_text);
}

/* Describe every parent of img; level 0 (d) is described already. */
static int vt_chain_build(struct vt_info *vi, struct vhdx_image *img,
			  struct vhdx_description *d)
{
	struct vt_level *l;
	int n = 1, ret;

	for (struct vhdx_image *p = vhdx_parent(img); p; p = vhdx_parent(p))
		n++;
	vi->chain = calloc((size_t)n, sizeof(*vi->chain));
	if (!vi->chain)
		return -ENOMEM;
	vt_level_set(&vi->chain[0], vi->path, img, d);
	vi->n_chain = 1;
	for (struct vhdx_image *p = img; vhdx_parent(p); p = vhdx_parent(p)) {
		struct vhdx_description *pd;

		ret = vhdx_describe(vhdx_parent(p), &pd);
		if (ret < 0)
			return ret;
		struct vhdx_linkage lk;

		l = &vi->chain[vi->n_chain];
		vt_level_set(l, vhdx_parent_path(p), vhdx_parent(p), pd);
		vhdx_parent_linkage(p, &lk);
		l->linkage_ok =
		    lk.parent_open && (lk.match == VHDX_PARENT_LINKED ||
				       lk.match == VHDX_PARENT_MERGING);
		vi->n_chain++;
	}
	return 0;
}

static void vt_chain_free(struct vt_info *vi)
{
	for (int i = 1; i < vi->n_chain; i++)
		vhdx_describe_free(vi->chain[i].d);
	free(vi->chain);
	free(vi->chain_error);
}

/* ---- text ---- */

static void vt_text_size(const char *label, uint64_t v)
{
	char h[32];

	vt_human_size(v, h, sizeof(h));
	if (v < 1024)
		printf("%-22s%s\n", label, h);
	else
		printf("%-22s%llu bytes (%s)\n", label, (unsigned long long)v,
		       h);
}

static void vt_text_summary(const struct vt_info *vi)
{
	const struct vhdx_info *i = &vi->d->info;

	printf("%-22s%s\n", "image:", vi->path);
	printf("%-22sVHDX, %s\n", "format:", vt_type_name(i));
	printf("%-22s%s\n", "creator:", (const char *)i->creator);
	vt_text_size("virtual size:", i->virtual_size);
	vt_text_size("block size:", i->block_size);
	printf("%-22s%u\n", "logical sector size:", i->logical_sector);
	printf("%-22s%u\n", "physical sector size:", i->physical_sector);
	printf("%-22s{%s}\n", "virtual disk id:", vi->d->disk_id);
	vt_text_size("file size:", i->file_size);
	vt_text_size("file allocated:", vi->file_allocated);
	if (vi->ntfs_sparse == 1)
		vt_ntfs_sparse_advice(vi->path);
	vt_text_size("blocks allocated:", vi->allocated);
}

static void vt_text_headers(const struct vhdx_description *d)
{
	printf("\nheaders (current: header %d):\n", d->info.current_header);
	for (int k = 0; k < 2; k++) {
		const struct vhdx_header_desc *h = &d->header[k];

		printf("  header %d at 0x%llx: %s%s, sequence %llu, checksum "
		       "0x%08x\n",
		       k + 1, (unsigned long long)h->offset,
		       h->valid ? "valid" : "INVALID",
		       h->current ? ", current" : "",
		       (unsigned long long)h->seq, h->checksum);
		printf("    file write guid  {%s}\n", h->file_write_guid);
		printf("    data write guid  {%s}\n", h->data_write_guid);
		printf("    log guid         {%s}\n", h->log_guid);
		printf("    log at 0x%llx, %u bytes; version %u, log version "
		       "%u\n",
		       (unsigned long long)h->log_offset, h->log_length,
		       h->version, h->log_version);
	}
}

static void vt_text_regions(const struct vhdx_description *d)
{
	printf("\nregion table: copy %d in use (copy 1 %s, copy 2 %s, %s)\n",
	       d->region_copy, d->region_valid[0] ? "valid" : "INVALID",
	       d->region_valid[1] ? "valid" : "INVALID",
	       d->regions_identical ? "identical" : "DIFFERENT");
	for (size_t k = 0; k < d->n_regions; k++) {
		const struct vhdx_region_desc *r = &d->regions[k];

		printf("  %-10s {%s} at 0x%llx, %u bytes%s\n",
		       r->name ? r->name : "unknown", r->guid,
		       (unsigned long long)r->offset, r->length,
		       (r->required & 1) ? ", required" : "");
	}
}

static void vt_text_metadata(const struct vhdx_description *d)
{
	printf("\nmetadata (region at 0x%llx, %u bytes):\n",
	       (unsigned long long)d->metadata_offset, d->metadata_length);
	for (size_t k = 0; k < d->n_meta; k++) {
		const struct vhdx_meta_desc *m = &d->meta[k];

		printf("  %-21s {%s} at +0x%x, %u bytes, flags 0x%x%s%s%s\n",
		       m->name ? m->name : "unknown", m->guid, m->offset,
		       m->length, m->flags, (m->flags & 1) ? " user" : "",
		       (m->flags & 2) ? " virtual-disk" : "",
		       (m->flags & 4) ? " required" : "");
	}
	if (!d->has_locator) {
		printf("parent locator: none\n");
		return;
	}
	printf("parent locator: type {%s}%s\n", d->locator_type,
	       d->locator_ok ? "" : " (MALFORMED)");
	for (size_t k = 0; k < d->n_locator; k++)
		printf("  %s = %s\n", d->locator[k].key, d->locator[k].value);
}

static void vt_text_log(const struct vhdx_description *d)
{
	const struct vhdx_log_desc *l = &d->log;

	printf("\nlog at 0x%llx, %u bytes: ", (unsigned long long)l->offset,
	       l->length);
	if (!l->dirty) {
		printf("clean%s\n",
		       l->replayed ? " (replayed when opened)" : "");
		return;
	}
	printf("dirty, LogGuid {%s}\n", l->guid);
	printf("  %zu valid entr%s with this GUID; ", l->n_entries,
	       l->n_entries == 1 ? "y" : "ies");
	if (l->has_active)
		printf("active sequence %llu..%llu (%zu entr%s), %llu "
		       "sector%s to replay\n",
		       (unsigned long long)l->active_first_seq,
		       (unsigned long long)l->active_last_seq,
		       l->active_entries, l->active_entries == 1 ? "y" : "ies",
		       (unsigned long long)l->sectors_to_replay,
		       l->sectors_to_replay == 1 ? "" : "s");
	else
		printf("no complete sequence\n");
	for (size_t k = 0; k < l->n_entries; k++) {
		const struct vhdx_log_entry_desc *e = &l->entries[k];

		printf("  entry at +0x%x: sequence %llu, %u bytes, tail "
		       "+0x%x, %u descriptor%s%s\n",
		       e->offset, (unsigned long long)e->seq, e->length,
		       e->tail, e->descriptors, e->descriptors == 1 ? "" : "s",
		       e->active ? ", active" : "");
	}
}

static void vt_text_bat(const struct vhdx_description *d)
{
	const struct vhdx_info *i = &d->info;

	printf("\nBAT at 0x%llx, %u bytes: %llu entries, %llu payload "
	       "blocks, chunk ratio %llu\n",
	       (unsigned long long)d->bat_offset, d->bat_length,
	       (unsigned long long)i->bat_entries,
	       (unsigned long long)i->payload_blocks,
	       (unsigned long long)i->chunk_ratio);
	printf("  payload blocks:");
	for (size_t k = 0; k < VT_N_STATES; k++)
		if (i->state_count[vt_states[k].state])
			printf(" %s %llu",
			       vhdx_block_state_name(vt_states[k].state),
			       (unsigned long long)
				   i->state_count[vt_states[k].state]);
	printf("\n  sector bitmap blocks: %llu present, %llu not present\n",
	       (unsigned long long)d->bitmap_present,
	       (unsigned long long)d->bitmap_not_present);
}

static void vt_text_chain(const struct vt_info *vi)
{
	if (!vi->d->info.has_parent) {
		printf("%-22s%s\n",
		       "parent chain:", "none (not a differencing image)");
		return;
	}
	printf("\nparent chain (%d image%s%s):\n", vi->n_chain,
	       vi->n_chain == 1 ? "" : "s",
	       vi->chain_error ? ", INCOMPLETE" : "");
	for (int i = 0; i < vi->n_chain; i++) {
		const struct vt_level *l = &vi->chain[i];

		printf("  %d: %s%s\n", i, l->path,
		       i == 0	       ? ""
		       : l->linkage_ok ? ": linkage ok"
				       : ": linkage MISMATCH");
		printf("     %s, data write guid {%s}\n",
		       vt_type_name(&l->d->info), vt_dwg(l->d));
		if (l->d->info.has_parent && l->linkage_text[0])
			printf("     parent_linkage {%s}\n", l->linkage_text);
		else if (l->d->info.has_parent)
			printf("     parent_linkage %s\n",
			       l->linkage ? l->linkage : "(none)");
	}
	if (vi->chain_error) {
		printf("  %d: parent NOT USABLE:\n    ", vi->n_chain);
		for (const char *c = vi->chain_error; *c; c++) {
			putchar(*c);
			if (*c == '\n')
				fputs("    ", stdout);
		}
		putchar('\n');
	}
}

static void vt_print_text(const struct vt_info *vi)
{
	vt_text_summary(vi);
	vt_text_chain(vi);
	vt_text_headers(vi->d);
	vt_text_regions(vi->d);
	vt_text_metadata(vi->d);
	vt_text_log(vi->d);
	vt_text_bat(vi->d);
}

/* ---- JSON ---- */

static void vt_json_summary(struct vt_json *j, const struct vt_info *vi)
{
	const struct vhdx_description *d = vi->d;
	const struct vhdx_info *i = &d->info;

	vt_json_str(j, "filename", vi->path);
	vt_json_str(j, "format", "vhdx");
	vt_json_str(j, "type", vt_type_name(i));
	vt_json_str(j, "creator", (const char *)i->creator);
	vt_json_u64(j, "virtual_size", i->virtual_size);
	vt_json_u64(j, "block_size", i->block_size);
	vt_json_u64(j, "logical_sector_size", i->logical_sector);
	vt_json_u64(j, "physical_sector_size", i->physical_sector);
	vt_json_str(j, "virtual_disk_id", d->disk_id);
	vt_json_u64(j, "file_parameters_flags", d->file_parameter_flags);
	vt_json_u64(j, "file_size", i->file_size);
	vt_json_u64(j, "file_allocated_bytes", vi->file_allocated);
	if (vi->ntfs_sparse >= 0)
		vt_json_bool(j, "ntfs_sparse", vi->ntfs_sparse);
	else
		vt_json_null(j, "ntfs_sparse"); /* not on NTFS */
	vt_json_u64(j, "allocated_bytes", vi->allocated);
	vt_json_u64(j, "current_header", (uint64_t)i->current_header);
}

static void vt_json_headers(struct vt_json *j, const struct vhdx_description *d)
{
	vt_json_array(j, "headers");
	for (int k = 0; k < 2; k++) {
		const struct vhdx_header_desc *h = &d->header[k];

		vt_json_object(j, NULL);
		vt_json_u64(j, "slot", (uint64_t)k + 1);
		vt_json_u64(j, "offset", h->offset);
		vt_json_bool(j, "valid", h->valid);
		vt_json_bool(j, "current", h->current);
		vt_json_u64(j, "checksum", h->checksum);
		vt_json_u64(j, "sequence", h->seq);
		vt_json_str(j, "file_write_guid", h->file_write_guid);
		vt_json_str(j, "data_write_guid", h->data_write_guid);
		vt_json_str(j, "log_guid", h->log_guid);
		vt_json_u64(j, "version", h->version);
		vt_json_u64(j, "log_version", h->log_version);
		vt_json_u64(j, "log_offset", h->log_offset);
		vt_json_u64(j, "log_length", h->log_length);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
}

static void vt_json_regions(struct vt_json *j, const struct vhdx_description *d)
{
	vt_json_object(j, "region_table");
	vt_json_u64(j, "copy_in_use", (uint64_t)d->region_copy);
	vt_json_bool(j, "copy1_valid", d->region_valid[0]);
	vt_json_bool(j, "copy2_valid", d->region_valid[1]);
	vt_json_bool(j, "copies_identical", d->regions_identical);
	vt_json_array(j, "entries");
	for (size_t k = 0; k < d->n_regions; k++) {
		const struct vhdx_region_desc *r = &d->regions[k];

		vt_json_object(j, NULL);
		vt_json_str(j, "guid", r->guid);
		vt_json_str(j, "name", r->name);
		vt_json_u64(j, "offset", r->offset);
		vt_json_u64(j, "length", r->length);
		vt_json_bool(j, "required", r->required & 1);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
	vt_json_close_object(j);
}

static void vt_json_locator(struct vt_json *j, const struct vhdx_description *d)
{
	if (!d->has_locator) {
		vt_json_null(j, "parent_locator");
		return;
	}
	vt_json_object(j, "parent_locator");
	vt_json_str(j, "type", d->locator_type);
	vt_json_bool(j, "well_formed", d->locator_ok);
	vt_json_array(j, "entries");
	for (size_t k = 0; k < d->n_locator; k++) {
		vt_json_object(j, NULL);
		vt_json_str(j, "key", d->locator[k].key);
		vt_json_str(j, "value", d->locator[k].value);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
	vt_json_close_object(j);
}

static void vt_json_metadata(struct vt_json *j,
			     const struct vhdx_description *d)
{
	vt_json_object(j, "metadata");
	vt_json_u64(j, "offset", d->metadata_offset);
	vt_json_u64(j, "length", d->metadata_length);
	vt_json_array(j, "items");
	for (size_t k = 0; k < d->n_meta; k++) {
		const struct vhdx_meta_desc *m = &d->meta[k];

		vt_json_object(j, NULL);
		vt_json_str(j, "guid", m->guid);
		vt_json_str(j, "name", m->name);
		vt_json_u64(j, "offset", m->offset);
		vt_json_u64(j, "length", m->length);
		vt_json_u64(j, "flags", m->flags);
		vt_json_bool(j, "is_user", m->flags & 1);
		vt_json_bool(j, "is_virtual_disk", m->flags & 2);
		vt_json_bool(j, "is_required", m->flags & 4);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
	vt_json_close_object(j);
	vt_json_locator(j, d);
}

static void vt_json_log(struct vt_json *j, const struct vhdx_description *d)
{
	const struct vhdx_log_desc *l = &d->log;

	vt_json_object(j, "log");
	vt_json_u64(j, "offset", l->offset);
	vt_json_u64(j, "length", l->length);
	vt_json_str(j, "guid", l->guid);
	vt_json_bool(j, "dirty", l->dirty);
	vt_json_bool(j, "replayed", l->replayed);
	vt_json_u64(j, "sectors_to_replay", l->sectors_to_replay);
	vt_json_array(j, "entries");
	for (size_t k = 0; k < l->n_entries; k++) {
		const struct vhdx_log_entry_desc *e = &l->entries[k];

		vt_json_object(j, NULL);
		vt_json_u64(j, "offset", e->offset);
		vt_json_u64(j, "length", e->length);
		vt_json_u64(j, "tail", e->tail);
		vt_json_u64(j, "sequence", e->seq);
		vt_json_u64(j, "descriptors", e->descriptors);
		vt_json_bool(j, "active", e->active);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
	if (l->has_active) {
		vt_json_object(j, "active_sequence");
		vt_json_u64(j, "first", l->active_first_seq);
		vt_json_u64(j, "last", l->active_last_seq);
		vt_json_u64(j, "entries", l->active_entries);
		vt_json_close_object(j);
	} else {
		vt_json_null(j, "active_sequence");
	}
	vt_json_close_object(j);
}

static void vt_json_bat(struct vt_json *j, const struct vhdx_description *d)
{
	const struct vhdx_info *i = &d->info;

	vt_json_object(j, "bat");
	vt_json_u64(j, "offset", d->bat_offset);
	vt_json_u64(j, "length", d->bat_length);
	vt_json_u64(j, "entries", i->bat_entries);
	vt_json_u64(j, "payload_blocks", i->payload_blocks);
	vt_json_u64(j, "chunk_ratio", i->chunk_ratio);
	vt_json_object(j, "payload_states");
	for (size_t k = 0; k < VT_N_STATES; k++)
		vt_json_u64(j, vt_states[k].key,
			    i->state_count[vt_states[k].state]);
	vt_json_close_object(j);
	vt_json_object(j, "sector_bitmap_blocks");
	vt_json_u64(j, "present", d->bitmap_present);
	vt_json_u64(j, "not_present", d->bitmap_not_present);
	vt_json_close_object(j);
	vt_json_close_object(j);
}

static void vt_json_chain(struct vt_json *j, const struct vt_info *vi)
{
	vt_json_array(j, "chain");
	for (int i = 0; i < vi->n_chain; i++) {
		const struct vt_level *l = &vi->chain[i];

		vt_json_object(j, NULL);
		vt_json_u64(j, "depth", (uint64_t)i);
		vt_json_str(j, "path", l->path);
		vt_json_str(j, "type", vt_type_name(&l->d->info));
		vt_json_str(j, "data_write_guid", vt_dwg(l->d));
		vt_json_str(j, "virtual_disk_id", l->d->disk_id);
		vt_json_u64(j, "virtual_size", l->d->info.virtual_size);
		vt_json_u64(j, "logical_sector_size",
			    l->d->info.logical_sector);
		vt_json_str(j, "parent_linkage",
			    l->linkage_text[0] ? l->linkage_text : l->linkage);
		if (i == 0)
			vt_json_null(j, "linkage_ok");
		else
			vt_json_bool(j, "linkage_ok", l->linkage_ok);
		vt_json_close_object(j);
	}
	vt_json_close_array(j);
	vt_json_bool(j, "chain_complete", !vi->chain_error);
	vt_json_str(j, "chain_error", vi->chain_error);
}

static void vt_print_json(const struct vt_info *vi)
{
	struct vt_json j;

	vt_json_begin(&j, stdout);
	vt_json_object(&j, NULL);
	vt_json_summary(&j, vi);
	vt_json_chain(&j, vi);
	vt_json_headers(&j, vi->d);
	vt_json_regions(&j, vi->d);
	vt_json_metadata(&j, vi->d);
	vt_json_log(&j, vi->d);
	vt_json_bat(&j, vi->d);
	vt_json_close_object(&j);
	vt_json_end(&j);
}

/* ---- the command ---- */

static void vt_info_help(void)
{
	printf("usage: " VT_PROG " info [options] IMAGE\n"
	       "\n"
	       "Show the headers, region table, metadata items, parent "
	       "locator, log and\n"
	       "BAT of a VHDX image.  The image is opened read-only; a dirty "
	       "log is\n"
	       "replayed in memory only.\n"
	       "\n"
	       "For a differencing image, the chain of parents is shown "
	       "as it resolves;\n"
	       "if the parent cannot be used, the image is shown alone with "
	       "the reasons.\n"
	       "\n"
	       "Options:\n"
	       "      --json           print JSON (keys listed in "
	       "vhdxtool(1))\n"
	       "      --parent PARENT  the parent of a differencing image, "
	       "instead of\n"
	       "                       the file its parent locator names\n"
	       "  -U, --force-share    take no lock: inspect an image in use "
	       "(mounted\n"
	       "                       read-write, say); never writes, and "
	       "warns that\n"
	       "                       what it shows may be stale\n"
	       "  -v, --verbose        also print the library's "
	       "informational messages\n"
	       "  -h, --help           print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_info_longopts[] = {
    {"json", no_argument, NULL, VT_OPT_JSON},
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"force-share", no_argument, NULL, 'U'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct vt_info_cmd {
	const char *path;
	const char *parent;
	bool json;
};

static int vt_info_parse(int argc, char **argv, struct vt_info_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "Uvh", vt_info_longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'U':
			vt_force_share = true;
			break;
		case VT_OPT_JSON:
			c->json = true;
			break;
		case VT_OPT_PARENT:
			c->parent = optarg;
			break;
		case 'v':
			vt_verbose = 1;
			break;
		case 'h':
			vt_info_help();
			return -1;
		default:
			return vt_bad_option("info", argv);
		}
	}
	if (vt_one_operand("info", "IMAGE", argc, argv, &c->path))
		return VT_EXIT_USAGE;
	return 0;
}

/*
 * Open IMAGE with its chain; if that fails for a differencing image, open
 * it alone and keep why in vi->chain_error.  0 or an exit code.
 */
static int vt_info_open(struct vt_image *img, struct vt_info *vi,
			const struct vt_info_cmd *c)
{
	struct vt_info_sink sink = {c->path, NULL, 0};
	struct vt_info_sink quiet = {c->path, NULL, 0};
	int ret, ret2;

	ret = vt_image_open_chain(img, c->path, c->parent, false, vt_info_msg,
				  &sink);
	if (ret == 0 || img->file_failed)
		goto out;
	ret2 = vt_image_open_detached(img, c->path, vt_info_msg, &quiet);
	if (ret2 == 0 && vhdx_parent(img->img) == NULL) {
		struct vhdx_info info;

		vhdx_get_info(img->img, &info);
		if (info.has_parent) {
			vi->chain_error = vt_info_sink_text(&sink);
			vt_warn("%s: its parent cannot be used; showing the "
				"image alone",
				c->path);
			ret = 0;
			goto out;
		}
	}
	if (ret2 == 0)
		vt_image_close(img);
	vt_info_sink_flush(&sink);
out:
	vt_info_sink_free(&sink);
	vt_info_sink_free(&quiet);
	return ret;
}

int vt_cmd_info(int argc, char **argv)
{
	struct vhdx_description *d;
	struct vt_info_cmd c = {0};
	struct vt_image img;
	struct vt_info vi = {0};
	struct stat st;
	int ret;

	ret = vt_info_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	vi.path = c.path;
	ret = vt_info_open(&img, &vi, &c);
	if (ret)
		return ret;
	ret = vhdx_describe(img.img, &d);
	if (ret == 0) {
		ret = vt_chain_build(&vi, img.img, d);
		if (ret < 0)
			vhdx_describe_free(d);
	}
	if (ret < 0) {
		vt_err("%s: %s", vi.path, strerror(-ret));
		vt_chain_free(&vi);
		vt_image_close(&img);
		return VT_EXIT_FAILURE;
	}
	if (fstat(img.fd, &st) == 0)
		vi.file_allocated = (uint64_t)st.st_blocks * 512;
	vi.ntfs_sparse = vhdx_fd_ntfs_sparse(img.fd);
	vi.allocated = vt_allocated(img.img);
	vi.d = d;
	if (c.json)
		vt_print_json(&vi);
	else
		vt_print_text(&vi);
	vt_chain_free(&vi);
	vhdx_describe_free(d);
	ret = vt_image_close(&img);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		vt_err("writing the output failed");
		ret = VT_EXIT_FAILURE;
	}
	return ret;
}
