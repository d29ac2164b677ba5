/*
 * guid.c - GUIDs in the mixed-endian Windows layout used on disk (fmt §0.1):
 * the first three groups little-endian, the last eight bytes in text order.
 */
#include <errno.h>
#include <stdio.h>
#include <uuid/uuid.h>

#include "internal.h"

void vhdx_guid_to_str(const uint8_t g[16], char out[VHDX_GUID_STR_LEN])
{
	snprintf(out, VHDX_GUID_STR_LEN,
		 "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 le32_get(g), le16_get(g + 4), le16_get(g + 6), g[8], g[9],
		 g[10], g[11], g[12], g[13], g[14], g[15]);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int vhdx_guid_from_str(const char *s, uint8_t g[16])
{
	uint8_t text[16]; /* bytes in text order */
	size_t len = strlen(s);
	int n = 0;

	if (len == 38 && s[0] == '{' && s[37] == '}') {
		s++;
		len -= 2;
	}
	if (len != 36)
		return -EINVAL;
	for (size_t i = 0; i < 36;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		text[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	/* text order -> on-disk order: reverse the first three groups */
	for (int i = 0; i < 4; i++)
		g[i] = text[3 - i];
	g[4] = text[5];
	g[5] = text[4];
	g[6] = text[7];
	g[7] = text[6];
	memcpy(g + 8, text + 8, 8);
	return 0;
}

bool vhdx_guid_is_zero(const uint8_t g[16])
{
	for (int i = 0; i < 16; i++)
		if (g[i])
			return false;
	return true;
}

void vhdx_guid_generate(uint8_t g[16])
{
	uuid_t u;
	char s[VHDX_GUID_STR_LEN];

	/* libuuid gives RFC 4122 text order; go through the text form */
	uuid_generate_random(u);
	uuid_unparse_lower(u, s);
	vhdx_guid_from_str(s, g);
}
