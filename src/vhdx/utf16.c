/*
 * utf16.c - the one place where text crosses between the image's UTF-16LE
 * (file identifier creator, parent locator keys and values) and the UTF-8
 * the rest of the program uses.
 */
#include <stdlib.h>

#include "internal.h"

/*
 * Decode the code point at s[*i] (len bytes in all, even).  Returns it, or
 * -1 for an unpaired surrogate; advances *i past what was used.
 */
static long utf16_next(const uint8_t *s, size_t len, size_t *i)
{
	uint32_t c = le16_get(s + *i);

	*i += 2;
	if (c < 0xD800 || c > 0xDFFF)
		return c;
	if (c <= 0xDBFF && *i + 1 < len) {
		uint32_t lo = le16_get(s + *i);

		if (lo >= 0xDC00 && lo <= 0xDFFF) {
			*i += 2;
			return 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
		}
	}
	return -1;
}

/* UTF-8 encoding of c into out; returns its length (1-4). */
static size_t utf8_put(uint32_t c, char *out)
{
	if (c < 0x80) {
		out[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		out[0] = (char)(0xC0 | c >> 6);
		out[1] = (char)(0x80 | (c & 0x3F));
		return 2;
	}
	if (c < 0x10000) {
		out[0] = (char)(0xE0 | c >> 12);
		out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		out[2] = (char)(0x80 | (c & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | c >> 18);
	out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
	out[3] = (char)(0x80 | (c & 0x3F));
	return 4;
}

long vhdx_utf16_decode(const uint8_t *s, size_t len, unsigned int flags,
		       char *out, size_t outlen)
{
	size_t i = 0, o = 0;

	if (outlen == 0)
		return -1;
	if ((flags & VHDX_U16_STRICT) && len % 2)
		goto bad;
	while (i + 1 < len) {
		char enc[4];
		long c = utf16_next(s, len, &i);
		size_t n;

		if (c == 0 && (flags & VHDX_U16_STOP_NUL))
			break;
		if (c <= 0 && (flags & VHDX_U16_STRICT))
			goto bad;
		if (c <= 0 ||
		    ((flags & VHDX_U16_PRINTABLE) && (c < 0x20 || c == 0x7F)))
			c = '?';
		n = utf8_put((uint32_t)c, enc);
		if (o + n >= outlen) {
			if (flags & VHDX_U16_STRICT)
				goto bad;
			break; /* truncated at a whole code point */
		}
		memcpy(out + o, enc, n);
		o += n;
	}
	out[o] = '\0';
	return (long)o;
bad:
	out[0] = '\0';
	return -1;
}

char *vhdx_utf16_to_utf8(const uint8_t *s, size_t len, unsigned int flags)
{
	/* a unit gives at most 3 bytes; a pair (2 units) 4 */
	size_t outlen = len / 2 * 3 + 1;
	char *out = malloc(outlen);

	if (out && vhdx_utf16_decode(s, len, flags, out, outlen) < 0) {
		free(out);
		return NULL;
	}
	return out;
}

size_t vhdx_utf8_to_utf16(const char *s, uint8_t *out, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0;

	while (*p) {
		static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
		uint32_t c;
		int more;

		if (*p < 0x80) {
			c = *p;
			more = 0;
		} else if ((*p & 0xE0) == 0xC0) {
			c = *p & 0x1F;
			more = 1;
		} else if ((*p & 0xF0) == 0xE0) {
			c = *p & 0x0F;
			more = 2;
		} else if ((*p & 0xF8) == 0xF0) {
			c = *p & 0x07;
			more = 3;
		} else {
			return 0;
		}
		p++;
		for (int k = more; k; k--, p++) {
			if ((*p & 0xC0) != 0x80)
				return 0;
			c = c << 6 | (*p & 0x3F);
		}
		/* overlong forms, surrogates and values past U+10FFFF */
		if (c < min[more] || (c >= 0xD800 && c <= 0xDFFF) ||
		    c > 0x10FFFF)
			return 0;
		if (c >= 0x10000) {
			if (o + 4 > max)
				return 0;
			c -= 0x10000;
			le16_put(out + o, (uint16_t)(0xD800 | c >> 10));
			le16_put(out + o + 2, (uint16_t)(0xDC00 | (c & 0x3FF)));
			o += 4;
		} else {
			if (o + 2 > max)
				return 0;
			le16_put(out + o, (uint16_t)c);
			o += 2;
		}
	}
	return o;
}
