/*
 * open.c - the open sequence (fmt §15), close, and the summary for front
 * ends.  Each step validates what it reads and reports through the sink.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

const char *vhdx_version(void)
{
	return PACKAGE_VERSION;
}

static int open_steps(struct vhdx_image *img, const struct vhdx_open_opts *opts)
{
	int ret;

	ret = img->io.size(img->io.opaque, &img->file_size);
	if (ret < 0) {
		vhdx_err(img, "cannot get the file size: %s", strerror(-ret));
		return ret;
	}
	img->eff_size = img->file_size;
	if ((ret = vhdx_read_file_id(img)) < 0)
		return ret;
	ret =
	    vhdx_extent_add(img, 0, VHDX_HEADER_SECTION_SIZE, "header section");
	if (ret < 0)
		return ret;
	if ((ret = vhdx_read_headers(img)) < 0)
		return ret;
	if (!img->read_only && img->seq > UINT64_MAX - 1024) {
		vhdx_err(img,
			 "header: sequence number %llu is too close to "
			 "its maximum to open the image for writing",
			 (unsigned long long)img->seq);
		return -EUCLEAN;
	}
	if ((ret = vhdx_log_load(img)) < 0)
		return ret;
	if (!img->read_only && (ret = vhdx_log_replay_to_file(img)) < 0)
		return ret;
	if ((ret = vhdx_read_regions(img)) < 0 ||
	    (ret = vhdx_read_metadata(img)) < 0 ||
	    (ret = vhdx_read_bat(img)) < 0)
		return ret;
	if ((img->fp_flags & VHDX_FP_HAS_PARENT) &&
	    !(img->flags & VHDX_OPEN_NO_PARENT) &&
	    (ret = vhdx_open_parent(img, opts)) < 0)
		return ret;
	return img->read_only ? 0 : vhdx_write_init(img);
}

static void image_free(struct vhdx_image *img)
{
	vhdx_parent_free(img);
	vhdx_log_free(img);
	vhdx_bat_free(img);
	free(img->extents);
	free(img->parent_locator);
	free(img->dirty);
	vhdx_freemap_destroy(img);
	pthread_rwlock_destroy(&img->lock);
	pthread_mutex_destroy(&img->meta_lock);
	pthread_mutex_destroy(&img->bitmap_lock);
	pthread_mutex_destroy(&img->bat_seg_lock);
	free(img);
}

int vhdx_open_chain(struct vhdx_image **out, const struct vhdx_io *io,
		    const struct vhdx_open_opts *opts, int depth,
		    const uint64_t (*ids)[2], int n_ids)
{
	struct vhdx_image *img = calloc(1, sizeof(*img));
	int ret;

	*out = NULL;
	if (!img)
		return -ENOMEM;
	img->io = *io;
	img->files = *vhdx_fd_file_ops();
	img->bat_eager_max = VHDX_BAT_EAGER_MAX_DEFAULT;
	if (opts) {
		img->flags = opts->flags;
		img->msg = opts->msg;
		img->msg_opaque = opts->msg_opaque;
		if (opts->files)
			img->files = *opts->files;
		if (opts->bat_eager_max)
			img->bat_eager_max = opts->bat_eager_max;
	}
	img->depth = depth;
	for (int i = 0; i < n_ids && i < VHDX_MAX_CHAIN; i++) {
		img->chain_ids[i][0] = ids[i][0];
		img->chain_ids[i][1] = ids[i][1];
		img->n_chain_ids++;
	}
	pthread_rwlock_init(&img->lock, NULL);
	pthread_mutex_init(&img->meta_lock, NULL);
	pthread_mutex_init(&img->bitmap_lock, NULL);
	pthread_mutex_init(&img->bat_seg_lock, NULL);
	img->read_only = img->flags & VHDX_OPEN_RDONLY;
	if ((img->flags & (VHDX_OPEN_MERGE_RESUME | VHDX_OPEN_ANY_LINKAGE)) &&
	    !img->read_only) {
		vhdx_err(img, "accepting a parent that does not match is "
			      "read-only only");
		image_free(img);
		return -EINVAL;
	}
	if ((img->flags & VHDX_OPEN_NO_PARENT) && !img->read_only) {
		vhdx_err(img, "opening without the parent is read-only only");
		image_free(img);
		return -EINVAL;
	}
	ret = open_steps(img, opts);
	if (ret < 0) {
		image_free(img);
		return ret;
	}
	*out = img;
	return 0;
}

int vhdx_open(struct vhdx_image **out, const struct vhdx_io *io,
	      const struct vhdx_open_opts *opts)
{
	uint64_t self[1][2];
	struct stat st;

	/* the image itself is the first link of the chain: no cycles back */
	if (opts && opts->path && stat(opts->path, &st) == 0) {
		self[0][0] = (uint64_t)st.st_dev;
		self[0][1] = (uint64_t)st.st_ino;
		return vhdx_open_chain(out, io, opts, 0,
				       (const uint64_t(*)[2])self, 1);
	}
	return vhdx_open_chain(out, io, opts, 0, NULL, 0);
}

struct vhdx_image *vhdx_parent(const struct vhdx_image *img)
{
	return img->parent;
}

const char *vhdx_parent_path(const struct vhdx_image *img)
{
	return img->parent_path ? img->parent_path : "";
}

int vhdx_close(struct vhdx_image *img)
{
	int ret = 0;

	if (!img)
		return 0;
	if (!(img->flags & VHDX_OPEN_RDONLY))
		ret = vhdx_write_close(img);
	image_free(img);
	return ret;
}

/* A lazy BAT has been counted once every segment is ready. */
static bool state_counts_complete(const struct vhdx_image *img)
{
	uint64_t ready;

	if (!img->bat_lazy)
		return true;
	/* acquire: the counts were added before each segment was published */
	ready = __atomic_load_n(&img->bat_segs_ready, __ATOMIC_ACQUIRE);
	return ready == img->bat_n_segs;
}

void vhdx_get_info(const struct vhdx_image *img, struct vhdx_info *info)
{
	/* the fields that writers change, under lock (see internal.h) */
	pthread_rwlock_t *lock = (pthread_rwlock_t *)&img->lock;

	memset(info, 0, sizeof(*info));
	pthread_rwlock_rdlock(lock);
	info->virtual_size = img->g.virtual_size;
	info->file_size = vhdx_known_size(img);
	info->block_size = img->g.block_size;
	info->logical_sector = img->g.logical_sector;
	info->physical_sector = img->physical_sector;
	info->leave_blocks_allocated =
	    !!(img->fp_flags & VHDX_FP_LEAVE_BLOCKS_ALLOCATED);
	info->has_parent = !!(img->fp_flags & VHDX_FP_HAS_PARENT);
	info->log_replayed = img->log_replayed;
	info->current_header = img->cur + 1;
	info->header_seq = img->seq;
	info->bat_entries = img->bat_entries;
	info->payload_blocks = img->g.payload_blocks;
	info->chunk_ratio = img->g.chunk_ratio;
	info->state_count_known = state_counts_complete(img);
	if (info->state_count_known)
		memcpy(info->state_count, img->state_count,
		       sizeof(info->state_count));
	memcpy(info->creator, img->creator, sizeof(info->creator));
	memcpy(info->data_write_guid, img->data_write_guid, 16);
	memcpy(info->disk_id, img->disk_id, 16);
	pthread_rwlock_unlock(lock);
	for (const struct vhdx_image *p = img->parent; p; p = p->parent)
		info->chain_depth++;
}

void vhdx_allocation(const struct vhdx_image *img, struct vhdx_allocation *a)
{
	pthread_rwlock_t *lock = (pthread_rwlock_t *)&img->lock;
	const struct vhdx_geom *g = &img->g;
	uint64_t present, last, idx;

	memset(a, 0, sizeof(*a));
	pthread_rwlock_rdlock(lock);
	if (!state_counts_complete(img)) {
		/* estimated: the file holds at most the disk */
		a->disk_bytes = vhdx_known_size(img) < g->virtual_size
				    ? vhdx_known_size(img)
				    : g->virtual_size;
		goto out;
	}
	a->known = 1;
	present = img->state_count[VHDX_BLOCK_FULLY_PRESENT] +
		  img->state_count[VHDX_BLOCK_PARTIALLY_PRESENT];
	a->payload_bytes = present * g->block_size;
	a->disk_bytes = a->payload_bytes;
	last = g->payload_blocks ? g->payload_blocks - 1 : 0;
	idx = vhdx_bat_payload_index(g, last);
	if (present && idx < img->bat_entries) {
		unsigned int st = img->bat[idx] & VHDX_BAT_STATE_MASK;

		/* the last block reaches past the end of the disk */
		if (st == VHDX_BLOCK_FULLY_PRESENT ||
		    st == VHDX_BLOCK_PARTIALLY_PRESENT)
			a->disk_bytes -=
			    g->payload_blocks * g->block_size - g->virtual_size;
	}
	for (uint64_t c = 0; c < g->bitmap_blocks; c++) {
		idx = vhdx_bat_bitmap_index(g, c * g->chunk_ratio);
		if (idx < img->bat_entries &&
		    (img->bat[idx] & VHDX_BAT_STATE_MASK) ==
			VHDX_SB_BLOCK_PRESENT)
			a->bitmap_bytes += VHDX_SECTOR_BITMAP_BLOCK_SIZE;
	}
out:
	pthread_rwlock_unlock(lock);
}

int vhdx_open_detached(struct vhdx_image **out, const struct vhdx_io *io,
		       const struct vhdx_open_opts *opts)
{
	struct vhdx_open_opts o = {.flags =
				       VHDX_OPEN_RDONLY | VHDX_OPEN_NO_PARENT};

	if (opts) {
		o.flags |= opts->flags & VHDX_OPEN_FULL_BAT;
		o.msg = opts->msg;
		o.msg_opaque = opts->msg_opaque;
		o.bat_eager_max = opts->bat_eager_max;
	}
	return vhdx_open(out, io, &o);
}
