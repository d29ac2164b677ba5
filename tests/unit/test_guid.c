/*
 * test_guid.c - GUID text <-> on-disk bytes (mixed-endian, fmt §0.1),
 * parsing rules, zero test and random generation.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "unit.h"

static const uint8_t bat_bytes[16] = {0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6,
				      0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E,
				      0x9B, 0xFD, 0x4A, 0x08};
static const char bat_text[] = "2DC27766-F623-4200-9D64-115E9BFD4A08";

/* The well-known GUIDs of format.h against their text from fmt §5.2/§6.2. */
static const struct {
	const char *text;
	uint8_t bytes[16];
} known[] = {
    {"2DC27766-F623-4200-9D64-115E9BFD4A08", VHDX_GUID_BAT_REGION},
    {"8B7CA206-4790-4B9A-B8FE-575F050F886E", VHDX_GUID_METADATA_REGION},
    {"CAA16737-FA36-4D43-B3B6-33F0AA44E76B", VHDX_GUID_FILE_PARAMETERS},
    {"2FA54224-CD1B-4876-B211-5DBED83BF4B8", VHDX_GUID_VIRTUAL_DISK_SIZE},
    {"BECA12AB-B2E6-4523-93EF-C309E000C746", VHDX_GUID_VIRTUAL_DISK_ID},
    {"8141BF1D-A96F-4709-BA47-F233A8FAAB5F", VHDX_GUID_LOGICAL_SECTOR_SIZE},
    {"CDA348C7-445D-4471-9CC9-E9885251C556", VHDX_GUID_PHYSICAL_SECTOR_SIZE},
    {"A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", VHDX_GUID_PARENT_LOCATOR},
    {"B04AEFB7-D19E-4A81-B789-25B8E9445913", VHDX_GUID_PARENT_LOCATOR_TYPE},
};

/* Text form by hand from the layout rule, independent of the library. */
static void ref_to_str(const uint8_t g[16], char out[37])
{
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9],
		 g[10], g[11], g[12], g[13], g[14], g[15]);
}

TEST(bat_guid_decode)
{
	uint8_t g[16];

	memset(g, 0xEE, sizeof(g));
	CHECK_EQ_INT(vhdx_guid_from_str(bat_text, g), 0);
	CHECK_EQ_MEM(g, bat_bytes, 16);
}

TEST(bat_guid_encode)
{
	char s[VHDX_GUID_STR_LEN];

	memset(s, 'X', sizeof(s));
	vhdx_guid_to_str(bat_bytes, s);
	CHECK_EQ_U64(strlen(s), 36);
	CHECK(strcasecmp(s, bat_text) == 0);
	/* the format is "%08x-%04x-..." (fmt §0.1): one case, no braces */
	CHECK(s[0] != '{');
	{
		int upper = 0, lower = 0;
		size_t i;

		for (i = 0; i < 36; i++) {
			upper |= isupper((unsigned char)s[i]) != 0;
			lower |= islower((unsigned char)s[i]) != 0;
		}
		CHECK(!(upper && lower));
	}
}

TEST(known_guids)
{
	size_t i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		uint8_t g[16];
		char s[VHDX_GUID_STR_LEN], r[37];

		CHECK_EQ_INT(vhdx_guid_from_str(known[i].text, g), 0);
		CHECK_EQ_MEM(g, known[i].bytes, 16);
		vhdx_guid_to_str(known[i].bytes, s);
		CHECK(strcasecmp(s, known[i].text) == 0);
		ref_to_str(known[i].bytes, r);
		CHECK(strcasecmp(r, known[i].text) == 0);
	}
}

TEST(braces_and_case)
{
	static const char *const forms[] = {
	    "{2DC27766-F623-4200-9D64-115E9BFD4A08}",
	    "2dc27766-f623-4200-9d64-115e9bfd4a08",
	    "{2dc27766-f623-4200-9d64-115e9bfd4a08}",
	    "2Dc27766-f623-4200-9D64-115e9BFD4a08",
	};
	size_t i;

	for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		uint8_t g[16];

		memset(g, 0, sizeof(g));
		CHECK_EQ_INT(vhdx_guid_from_str(forms[i], g), 0);
		CHECK_EQ_MEM(g, bat_bytes, 16);
	}
}

TEST(round_trip)
{
	uint8_t g[16], back[16];
	char s[VHDX_GUID_STR_LEN], r[37];
	unsigned int seed = 12345;
	int n, i;

	for (n = 0; n < 200; n++) {
		for (i = 0; i < 16; i++) {
			seed = seed * 1103515245u + 12345u;
			g[i] = (uint8_t)(seed >> 16);
		}
		vhdx_guid_to_str(g, s);
		ref_to_str(g, r);
		CHECK(strcasecmp(s, r) == 0);
		memset(back, 0, sizeof(back));
		CHECK_EQ_INT(vhdx_guid_from_str(s, back), 0);
		CHECK_EQ_MEM(back, g, 16);
	}
	/* all-zero and all-ones extremes */
	memset(g, 0, sizeof(g));
	vhdx_guid_to_str(g, s);
	CHECK_EQ_STR(s, "00000000-0000-0000-0000-000000000000");
	memset(g, 0xFF, sizeof(g));
	vhdx_guid_to_str(g, s);
	CHECK(strcasecmp(s, "ffffffff-ffff-ffff-ffff-ffffffffffff") == 0);
	CHECK_EQ_INT(vhdx_guid_from_str(s, back), 0);
	CHECK_EQ_MEM(back, g, 16);
}

TEST(invalid_rejected)
{
	static const char *const bad[] = {
	    "",
	    "{}",
	    "2DC27766-F623-4200-9D64-115E9BFD4A0",    /* short */
	    "2DC27766-F623-4200-9D64-115E9BFD4A088",  /* long */
	    "2DC27766-F623-4200-9D64-115E9BFD4A08 ",  /* trailing */
	    " 2DC27766-F623-4200-9D64-115E9BFD4A08",  /* leading */
	    "2DC27766F6234200-9D64-115E9BFD4A08XXXX", /* no dash */
	    "2DC27766F62342009D64115E9BFD4A08",	      /* no dashes */
	    "2DC27766-F6234-200-9D64-115E9BFD4A08",   /* moved dash */
	    "2DC2776-6F623-4200-9D64-115E9BFD4A08",   /* moved dash */
	    "2DC27766_F623_4200_9D64_115E9BFD4A08",   /* wrong sep */
	    "2DC27766-F623-4200-9D64-115E9BFD4AG8",   /* bad hex */
	    "ZDC27766-F623-4200-9D64-115E9BFD4A08",   /* bad hex */
	    "2DC27766-F623-4200-9D6 -115E9BFD4A08",   /* space */
	    "+DC27766-F623-4200-9D64-115E9BFD4A08",   /* sign */
	    "0x2DC277-F623-4200-9D64-115E9BFD4A08",   /* prefix */
	    "{2DC27766-F623-4200-9D64-115E9BFD4A08",  /* open brace */
	    "2DC27766-F623-4200-9D64-115E9BFD4A08}",  /* close brace */
	    "{{2DC27766-F623-4200-9D64-115E9BFD4A08}}",
	    "(2DC27766-F623-4200-9D64-115E9BFD4A08)",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t g[16];
		int rc = vhdx_guid_from_str(bad[i], g);

		if (!CHECK_EQ_INT(rc, -EINVAL))
			unit_note("accepted: \"%s\"", bad[i]);
	}
	/* an embedded NUL ends the string early: too short */
	{
		char s[40];
		uint8_t g[16];

		memcpy(s, bat_text, sizeof(bat_text));
		s[20] = '\0';
		CHECK_EQ_INT(vhdx_guid_from_str(s, g), -EINVAL);
	}
}

TEST(is_zero)
{
	uint8_t g[16];
	int i;

	memset(g, 0, sizeof(g));
	CHECK(vhdx_guid_is_zero(g));
	for (i = 0; i < 16; i++) {
		memset(g, 0, sizeof(g));
		g[i] = 1;
		CHECK(!vhdx_guid_is_zero(g));
		g[i] = 0x80;
		CHECK(!vhdx_guid_is_zero(g));
	}
	CHECK(!vhdx_guid_is_zero(bat_bytes));
}

TEST(generate)
{
	enum { COUNT = 64 };
	uint8_t g[COUNT][16];
	int i, j, dups = 0;

	for (i = 0; i < COUNT; i++) {
		char s[VHDX_GUID_STR_LEN];

		vhdx_guid_generate(g[i]);
		CHECK(!vhdx_guid_is_zero(g[i]));
		/* version 4: high nibble of the third field (u16 LE, byte 7) */
		CHECK_EQ_U64(g[i][7] >> 4, 4);
		/* RFC 4122 variant: byte 8 = 10xxxxxx */
		CHECK_EQ_U64(g[i][8] & 0xC0, 0x80);
		vhdx_guid_to_str(g[i], s);
		CHECK_EQ_INT(s[14], '4');
		CHECK(strchr("89abAB", s[19]) != NULL);
	}
	for (i = 0; i < COUNT; i++) {
		for (j = i + 1; j < COUNT; j++)
			dups += memcmp(g[i], g[j], 16) == 0;
	}
	CHECK_EQ_INT(dups, 0);
}

int main(void)
{
	RUN_TEST(bat_guid_decode);
	RUN_TEST(bat_guid_encode);
	RUN_TEST(known_guids);
	RUN_TEST(braces_and_case);
	RUN_TEST(round_trip);
	RUN_TEST(invalid_rejected);
	RUN_TEST(is_zero);
	RUN_TEST(generate);
	return unit_done();
}
