/*
 * linkage.c - what ties a differencing image to its parent: the linkage
 * as the open accepted it (vhdx_parent_linkage, vhdx_parent_match), and
 * the DataWriteGuid that makes an interrupted merge resumable.
 *
 * Resuming a merge.  A merge first gives the parent a new DataWriteGuid
 * (one header update, fmt §4.4), then copies the child's data into it.
 * That GUID is not random but derived from the child's parent_linkage (the
 * parent's DataWriteGuid before the merge) and the child's own
 * DataWriteGuid: a rerun after an interruption recomputes it and, finding
 * it in the parent, knows the parent is partly merged with exactly this
 * child, and accepts it (VHDX_OPEN_MERGE_RESUME).  The child's view over
 * the partly merged parent is the same as over the original, since a merge
 * writes only where the child has data of its own.  Every other child of
 * the parent sees a changed DataWriteGuid from the first header update on,
 * before any data is written, as after any change of the parent.  The
 * derived value is unique in practice like a random GUID (it hashes two
 * random GUIDs into 106 bits), marked as a version 4 GUID, and its last two
 * bytes are a tag: a parent so marked is (being) merged with some child,
 * and merge --resume refuses to force another child into it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* splitmix64's output function: a bijective 64-bit mix. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

void vhdx_merge_guid(const uint8_t linkage[16], const uint8_t dwg[16],
		     uint8_t out[16])
{
	/* two lanes with their own seeds, each absorbing all 32 bytes */
	uint64_t lane[2] = {0x76687864206d6572ull, 0x6765207061726e74ull};
	uint64_t w[4] = {le64_get(linkage), le64_get(linkage + 8),
			 le64_get(dwg), le64_get(dwg + 8)};

	for (int l = 0; l < 2; l++) {
		for (int i = 0; i < 4; i++)
			lane[l] = mix64(lane[l] ^ w[i]) +
				  0x9e3779b97f4a7c15ull * (uint64_t)(l + 1);
		lane[l] = mix64(lane[l]);
	}
	le64_put(out, lane[0]);
	le64_put(out + 8, lane[1]);
	/* version 4 (high nibble of Data3, stored little-endian), variant */
	out[7] = (uint8_t)((out[7] & 0x0f) | 0x40);
	out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
	/* a tag: "a merge set this", to tell which parent a merge changed */
	out[14] = VHDX_MERGE_TAG0;
	out[15] = VHDX_MERGE_TAG1;
}

bool vhdx_is_merge_guid(const uint8_t g[16])
{
	return g[14] == VHDX_MERGE_TAG0 && g[15] == VHDX_MERGE_TAG1;
}

int vhdx_parent_match(const struct vhdx_image *child)
{
	return child->parent ? child->parent_match : -EINVAL;
}

int vhdx_merge_parent_guid(const struct vhdx_image *child, uint8_t guid[16])
{
	if (!(child->fp_flags & VHDX_FP_HAS_PARENT) ||
	    vhdx_guid_is_zero(child->linkage))
		return -EINVAL;
	vhdx_merge_guid(child->linkage, child->data_write_guid, guid);
	return 0;
}

void vhdx_parent_linkage(const struct vhdx_image *img, struct vhdx_linkage *l)
{
	memset(l, 0, sizeof(*l));
	l->has_parent = !!(img->fp_flags & VHDX_FP_HAS_PARENT);
	if (!l->has_parent)
		return;
	l->linkage_valid = !vhdx_guid_is_zero(img->linkage);
	memcpy(l->linkage, img->linkage, 16);
	if (!img->parent)
		return;
	l->parent_open = 1;
	l->match = img->parent_match;
	memcpy(l->parent_dwg, img->parent->data_write_guid, 16);
}
