/*
 * test_utf16.c - the text conversions of utf16.c: UTF-8 to UTF-16LE for
 * what create writes, UTF-16LE to UTF-8 strictly (parent locator) and for
 * display (creator, info).  Expected bytes are written out by hand from
 * the Unicode encoding rules, not produced by the library.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

/* "Zoë 日本 😀" in UTF-8 and in UTF-16LE */
static const char u8[] = "Zo\xc3\xab \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";
static const uint8_t u16[] = {'Z', 0, 'o',  0,	  0xEB, 0x00,
			      ' ', 0, 0xE5, 0x65, 0x2C, 0x67,
			      ' ', 0, 0x3D, 0xD8, 0x00, 0xDE};

TEST(encode)
{
	uint8_t out[64];

	CHECK_EQ_U64(vhdx_utf8_to_utf16(u8, out, sizeof(out)), sizeof(u16));
	CHECK_EQ_MEM(out, u16, sizeof(u16));
	/* too long for the room given: nothing partial */
	CHECK_EQ_U64(vhdx_utf8_to_utf16(u8, out, sizeof(u16) - 1), 0);
	CHECK_EQ_U64(vhdx_utf8_to_utf16("", out, sizeof(out)), 0);
}

TEST(encode_rejects_invalid)
{
	static const char *const bad[] = {
	    "\xc3",		/* truncated */
	    "\xc0\xaf",		/* overlong '/' */
	    "\xe0\x80\xaf",	/* overlong */
	    "\xed\xa0\x80",	/* a surrogate encoded in UTF-8 */
	    "\xf4\x90\x80\x80", /* past U+10FFFF */
	    "a\xff",		/* not UTF-8 at all */
	};
	uint8_t out[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ_U64(vhdx_utf8_to_utf16(bad[i], out, sizeof(out)), 0);
}

TEST(decode_strict)
{
	static const uint8_t lone[] = {'a', 0, 0x3D, 0xD8, 'b', 0};
	static const uint8_t nul[] = {'a', 0, 0, 0, 'b', 0};
	char *s = vhdx_utf16_to_utf8(u16, sizeof(u16), VHDX_U16_STRICT);

	CHECK(s && !strcmp(s, u8));
	free(s);
	CHECK(!vhdx_utf16_to_utf8(lone, sizeof(lone), VHDX_U16_STRICT));
	CHECK(!vhdx_utf16_to_utf8(nul, sizeof(nul), VHDX_U16_STRICT));
	CHECK(!vhdx_utf16_to_utf8(u16, sizeof(u16) - 1, VHDX_U16_STRICT));
}

TEST(decode_lenient)
{
	static const uint8_t lone[] = {'a', 0, 0x3D, 0xD8, 'b',
				       0,   0, 0,    'c',  0};
	static const uint8_t ctl[] = {'a', 0, 0x07, 0, 'b', 0, 0, 0, 'c', 0};
	char out[16];
	char *s = vhdx_utf16_to_utf8(lone, sizeof(lone), 0);

	CHECK(s && !strcmp(s, "a?b?c"));
	free(s);
	CHECK_EQ_INT(vhdx_utf16_decode(ctl, sizeof(ctl),
				       VHDX_U16_STOP_NUL | VHDX_U16_PRINTABLE,
				       out, sizeof(out)),
		     3);
	CHECK_EQ_STR(out, "a?b");
}

TEST(decode_cuts_at_whole_characters)
{
	char out[8];

	/* "Zoë " is 5 bytes, 日 would need 3 more than the 7 that fit */
	CHECK_EQ_INT(vhdx_utf16_decode(u16, sizeof(u16), 0, out, sizeof(out)),
		     5);
	CHECK_EQ_STR(out, "Zo\xc3\xab ");
	CHECK_EQ_INT(vhdx_utf16_decode(u16, sizeof(u16), VHDX_U16_STRICT, out,
				       sizeof(out)),
		     -1);
}

TEST(round_trip_every_plane)
{
	static const uint32_t cps[] = {0x1,    0x7F,	0x80,	 0x7FF,
				       0x800,  0xD7FF,	0xE000,	 0xFFFD,
				       0xFFFF, 0x10000, 0x10FFFF};
	for (size_t i = 0; i < sizeof(cps) / sizeof(cps[0]); i++) {
		char in[8] = {0};
		uint8_t mid[8];
		uint32_t c = cps[i];
		size_t n;
		char *back;

		if (c < 0x80) {
			in[0] = (char)c;
		} else if (c < 0x800) {
			in[0] = (char)(0xC0 | c >> 6);
			in[1] = (char)(0x80 | (c & 0x3F));
		} else if (c < 0x10000) {
			in[0] = (char)(0xE0 | c >> 12);
			in[1] = (char)(0x80 | (c >> 6 & 0x3F));
			in[2] = (char)(0x80 | (c & 0x3F));
		} else {
			in[0] = (char)(0xF0 | c >> 18);
			in[1] = (char)(0x80 | (c >> 12 & 0x3F));
			in[2] = (char)(0x80 | (c >> 6 & 0x3F));
			in[3] = (char)(0x80 | (c & 0x3F));
		}
		n = vhdx_utf8_to_utf16(in, mid, sizeof(mid));
		CHECK_EQ_U64(n, c >= 0x10000 ? 4 : 2);
		back = vhdx_utf16_to_utf8(mid, n, VHDX_U16_STRICT);
		CHECK(back && !strcmp(back, in));
		free(back);
	}
}

int main(void)
{
	RUN_TEST(encode);
	RUN_TEST(encode_rejects_invalid);
	RUN_TEST(decode_strict);
	RUN_TEST(decode_lenient);
	RUN_TEST(decode_cuts_at_whole_characters);
	RUN_TEST(round_trip_every_plane);
	return unit_done();
}
