/*
 * locator.c - the key/value table of the parent locator item (fmt §6.3.6),
 * decoded one way for the open (parent.c) and for the description
 * (inspect.c).
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"
#include "vhdx_inspect.h"

/* A key or value: past the header, non-empty, even length, in the item. */
static bool span_ok(uint32_t off, uint16_t len, uint32_t item_len)
{
	return off >= VHDX_PL_HEADER_SIZE && len > 0 && len % 2 == 0 &&
	       (uint64_t)off + len <= item_len;
}

void vhdx_locator_free(struct vhdx_kv *kv, size_t n)
{
	for (size_t i = 0; kv && i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

int vhdx_locator_decode(const struct vhdx_image *img, const uint8_t *pl,
			uint32_t len, struct vhdx_kv **out, size_t *n_out)
{
	struct vhdx_kv *kv;
	uint16_t n;
	int ret = 0;

	*out = NULL;
	*n_out = 0;
	if (len < VHDX_PL_HEADER_SIZE) {
		vhdx_err(img,
			 "parent locator: %u bytes, shorter than its "
			 "header",
			 len);
		return -EUCLEAN;
	}
	n = le16_get(pl + VHDX_PL_KEY_VALUE_COUNT);
	if (VHDX_PL_HEADER_SIZE + (uint64_t)n * VHDX_PL_ENTRY_SIZE > len) {
		vhdx_err(img,
			 "parent locator: %u entries do not fit in %u bytes", n,
			 len);
		return -EUCLEAN;
	}
	kv = calloc(n ? n : 1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	for (uint16_t i = 0; i < n && ret == 0; i++) {
		const uint8_t *e =
		    pl + VHDX_PL_HEADER_SIZE + (size_t)i * VHDX_PL_ENTRY_SIZE;
		uint32_t ko = le32_get(e), vo = le32_get(e + 4);
		uint16_t kl = le16_get(e + 8), vl = le16_get(e + 10);

		if (!span_ok(ko, kl, len) || !span_ok(vo, vl, len)) {
			vhdx_err(img,
				 "parent locator: entry %u is out of bounds",
				 i);
			ret = -EUCLEAN;
			break;
		}
		kv[i].key = vhdx_utf16_to_utf8(pl + ko, kl, VHDX_U16_STRICT);
		kv[i].value = vhdx_utf16_to_utf8(pl + vo, vl, VHDX_U16_STRICT);
		if (!kv[i].key || !kv[i].value) {
			vhdx_err(img,
				 "parent locator: entry %u is not valid UTF-16",
				 i);
			ret = -EUCLEAN;
		}
	}
	if (ret < 0) {
		vhdx_locator_free(kv, n);
		return ret;
	}
	*out = kv;
	*n_out = n;
	return 0;
}
