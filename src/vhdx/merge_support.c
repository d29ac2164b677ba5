/*
 * merge_support.c - what vhdxtool's merge and info need beyond the rest of
 * the library: the state of one payload block, and a read-only open that
 * leaves the parent of a differencing image alone, so that the structures
 * of a child whose parent is missing or stale can still be shown.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

int vhdx_block_state(struct vhdx_image *img, uint64_t pb)
{
	uint64_t idx, e;
	int ret = 0;

	if (pb >= img->g.payload_blocks)
		return -EINVAL;
	idx = vhdx_bat_payload_index(&img->g, pb);
	if (idx >= img->bat_entries)
		return VHDX_BLOCK_NOT_PRESENT;
	pthread_rwlock_rdlock(&img->lock);
	ret = vhdx_bat_get(img, idx, &e);
	pthread_rwlock_unlock(&img->lock);
	return ret < 0 ? ret : (int)(e & VHDX_BAT_STATE_MASK);
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
