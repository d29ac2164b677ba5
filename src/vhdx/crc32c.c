/*
 * crc32c.c - CRC-32C (Castagnoli), the checksum of VHDX headers, region
 * tables and log entries (fmt §0.2).  Reflected polynomial 0x82F63B78,
 * table driven, table built once on first use.
 */
#include <pthread.h>

#include "internal.h"

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t vhdx_crc32c_update(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_table_init);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return crc;
}

uint32_t vhdx_crc32c(const void *buf, size_t len)
{
	return ~vhdx_crc32c_update(0xFFFFFFFFu, buf, len);
}

uint32_t vhdx_crc32c_skip(const uint8_t *buf, size_t len, size_t csum_off)
{
	static const uint8_t zero[4];
	uint32_t crc = 0xFFFFFFFFu;

	crc = vhdx_crc32c_update(crc, buf, csum_off);
	crc = vhdx_crc32c_update(crc, zero, 4);
	crc = vhdx_crc32c_update(crc, buf + csum_off + 4, len - csum_off - 4);
	return ~crc;
}
