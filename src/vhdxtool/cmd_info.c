/*
 * cmd_info.c - `vhdxtool info [--json] IMAGE`: everything vhdx_describe
 * knows about an image, as text for people or as JSON with stable keys for
 * scripts (the keys are listed in vhdxtool(1)).  Opens read-only: a dirty
 * log is replayed in memory only.
 */
#include "config.h"

#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

struct vt_info {
	const char *path;
	const struct vhdx_description *d;
	uint64_t file_allocated; /* st_blocks * 512 */
};

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

static uint64_t vt_allocated(const struct vhdx_description *d)
{
	return d->payload_bytes + d->bitmap_bytes;
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
	vt_text_size("blocks allocated:", vt_allocated(vi->d));
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

static void vt_print_text(const struct vt_info *vi)
{
	vt_text_summary(vi);
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
	vt_json_u64(j, "allocated_bytes", vt_allocated(d));
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

static void vt_print_json(const struct vt_info *vi)
{
	struct vt_json j;

	vt_json_begin(&j, stdout);
	vt_json_object(&j, NULL);
	vt_json_summary(&j, vi);
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
	       "Options:\n"
	       "      --json     print JSON (keys listed in vhdxtool(1))\n"
	       "  -v, --verbose  also print the library's informational "
	       "messages\n"
	       "  -h, --help     print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

static const struct option vt_info_longopts[] = {
    {"json", no_argument, NULL, VT_OPT_JSON},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_info_parse(int argc, char **argv, bool *json, const char **p)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "vh", vt_info_longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case VT_OPT_JSON:
			*json = true;
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
	if (argc - optind != 1)
		return vt_usage_err("info", optind == argc
						? "no IMAGE given"
						: "too many arguments");
	*p = argv[optind];
	return 0;
}

int vt_cmd_info(int argc, char **argv)
{
	struct vhdx_description *d;
	struct vt_image img;
	struct vt_info vi = {0};
	struct stat st;
	bool json = false;
	int ret;

	ret = vt_info_parse(argc, argv, &json, &vi.path);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	ret = vt_image_open(&img, vi.path, false, NULL, NULL);
	if (ret)
		return ret;
	ret = vhdx_describe(img.img, &d);
	if (ret < 0) {
		vt_err("%s: %s", vi.path, strerror(-ret));
		vt_image_close(&img);
		return VT_EXIT_FAILURE;
	}
	if (fstat(img.fd, &st) == 0)
		vi.file_allocated = (uint64_t)st.st_blocks * 512;
	vi.d = d;
	if (json)
		vt_print_json(&vi);
	else
		vt_print_text(&vi);
	vhdx_describe_free(d);
	ret = vt_image_close(&img);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		vt_err("writing the output failed");
		ret = VT_EXIT_FAILURE;
	}
	return ret;
}
