/*
 * test_crc32c.c - CRC-32C (Castagnoli) as used by VHDX (fmt §0.2): the
 * RFC 3720 B.4 vectors, incremental updates, the skip-field variant, and
 * the stored checksums of a real qemu-img image when qemu-img is present.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "unit.h"

/* Bit-at-a-time reference, written from the parameters in fmt §0.2. */
static uint32_t ref_crc32c(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t crc = 0xFFFFFFFFu;
	size_t i;
	int k;

	for (i = 0; i < len; i++) {
		crc ^= p[i];
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return crc ^ 0xFFFFFFFFu;
}

/* Deterministic filler so failures are reproducible. */
static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	size_t i;

	for (i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

TEST(rfc3720_vectors)
{
	uint8_t buf[32];
	int i;

	CHECK_EQ_U64(vhdx_crc32c("123456789", 9), 0xE3069283u);
	CHECK_EQ_U64(vhdx_crc32c("", 0), 0);
	CHECK_EQ_U64(vhdx_crc32c(NULL, 0), 0);

	memset(buf, 0, sizeof(buf));
	CHECK_EQ_U64(vhdx_crc32c(buf, sizeof(buf)), 0x8A9136AAu);
	memset(buf, 0xFF, sizeof(buf));
	CHECK_EQ_U64(vhdx_crc32c(buf, sizeof(buf)), 0x62A8AB43u);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	CHECK_EQ_U64(vhdx_crc32c(buf, sizeof(buf)), 0x46DD794Eu);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	CHECK_EQ_U64(vhdx_crc32c(buf, sizeof(buf)), 0x113FDB5Cu);
}

TEST(reference_agrees)
{
	/* the reference itself must pass the vectors before it is trusted */
	static const size_t lens[] = {1,   2,	 3,    7,    8,	   9,	 15,
				      16,  17,	 63,   64,   65,   255,	 256,
				      257, 1000, 4095, 4096, 4097, 65536};
	uint8_t *buf = malloc(65536 + 8);
	size_t i, shift;

	CHECK_EQ_U64(ref_crc32c("123456789", 9), 0xE3069283u);
	if (!CHECK(buf != NULL))
		return;
	fill(buf, 65536 + 8, 1);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		/* vary alignment too: word-at-a-time code paths */
		for (shift = 0; shift < 8; shift += 3)
			CHECK_EQ_U64(vhdx_crc32c(buf + shift, lens[i]),
				     ref_crc32c(buf + shift, lens[i]));
	}
	free(buf);
}

TEST(update_is_uninverted)
{
	/* update() works on the raw register: init/final inversion outside */
	CHECK_EQ_U64(vhdx_crc32c_update(0xFFFFFFFFu, "123456789", 9) ^
			 0xFFFFFFFFu,
		     0xE3069283u);
	CHECK_EQ_U64(vhdx_crc32c_update(0x12345678u, "", 0), 0x12345678u);
}

TEST(incremental_split)
{
	uint8_t buf[5000];
	uint32_t whole, crc;
	size_t a, b;

	fill(buf, sizeof(buf), 7);
	whole = vhdx_crc32c(buf, sizeof(buf));
	CHECK_EQ_U64(whole, ref_crc32c(buf, sizeof(buf)));
	for (a = 0; a <= sizeof(buf); a += 333) {
		crc = vhdx_crc32c_update(0xFFFFFFFFu, buf, a);
		crc = vhdx_crc32c_update(crc, buf + a, sizeof(buf) - a);
		CHECK_EQ_U64(crc ^ 0xFFFFFFFFu, whole);
	}
	/* three pieces, odd sizes */
	for (a = 1; a < 40; a += 5) {
		for (b = a; b < a + 40; b += 7) {
			crc = vhdx_crc32c_update(0xFFFFFFFFu, buf, a);
			crc = vhdx_crc32c_update(crc, buf + a, b - a);
			crc = vhdx_crc32c_update(crc, buf + b, sizeof(buf) - b);
			CHECK_EQ_U64(crc ^ 0xFFFFFFFFu, whole);
		}
	}
	/* byte by byte */
	crc = 0xFFFFFFFFu;
	for (a = 0; a < sizeof(buf); a++)
		crc = vhdx_crc32c_update(crc, buf + a, 1);
	CHECK_EQ_U64(crc ^ 0xFFFFFFFFu, whole);
}

TEST(skip_field)
{
	static const size_t offs[] = {0, 4, 5, 8, 100, 4092};
	uint8_t buf[4096], copy[4096];
	size_t i;

	fill(buf, sizeof(buf), 99);
	for (i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		uint8_t before[4096];

		memcpy(before, buf, sizeof(buf));
		memcpy(copy, buf, sizeof(buf));
		memset(copy + offs[i], 0, 4);
		CHECK_EQ_U64(vhdx_crc32c_skip(buf, sizeof(buf), offs[i]),
			     ref_crc32c(copy, sizeof(copy)));
		/* the input is not modified */
		CHECK_EQ_MEM(buf, before, sizeof(buf));
	}
	/* the field's old value does not matter */
	memcpy(copy, buf, sizeof(buf));
	memset(copy + 4, 0xA5, 4);
	CHECK_EQ_U64(vhdx_crc32c_skip(buf, sizeof(buf), 4),
		     vhdx_crc32c_skip(copy, sizeof(copy), 4));
	/* a large structure (region table size) */
	{
		uint8_t *big = malloc(65536), *bz = malloc(65536);

		if (CHECK(big && bz)) {
			fill(big, 65536, 3);
			memcpy(bz, big, 65536);
			memset(bz + 4, 0, 4);
			CHECK_EQ_U64(vhdx_crc32c_skip(big, 65536, 4),
				     ref_crc32c(bz, 65536));
		}
		free(big);
		free(bz);
	}
}

/*
 * fmt §4.1 quotes a qemu-img header CRC but not the whole header, so check
 * the stored checksums of a freshly created qemu-img image instead.
 */
static int run_qemu_img(const char *path, const char *subformat)
{
	char opt[64];
	pid_t pid;
	int status;

	snprintf(opt, sizeof(opt), "subformat=%s,block_size=32M", subformat);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("qemu-img", "qemu-img", "create", "-q", "-f", "vhdx",
		       "-o", opt, path, "64M", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	if (!WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int read_at(const char *path, void *buf, size_t len, long off)
{
	FILE *f = fopen(path, "rb");
	int ok;

	if (!f)
		return -1;
	ok = fseek(f, off, SEEK_SET) == 0 && fread(buf, 1, len, f) == len;
	fclose(f);
	return ok ? 0 : -1;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

TEST(qemu_img_checksums)
{
	static const long hdr_off[] = {0x10000, 0x20000};
	static const long rt_off[] = {0x30000, 0x40000};
	char path[] = "/tmp/vhdx-crc-XXXXXX";
	uint8_t *buf;
	int fd, rc, i;

	fd = mkstemp(path);
	if (!CHECK(fd >= 0))
		return;
	close(fd);
	rc = run_qemu_img(path, "dynamic");
	if (rc == 127) {
		unlink(path);
		unit_skip("qemu-img not found");
		return;
	}
	if (!CHECK_EQ_INT(rc, 0)) {
		unlink(path);
		return;
	}
	buf = malloc(65536);
	if (!CHECK(buf != NULL))
		goto out;
	for (i = 0; i < 2; i++) {
		if (!CHECK_EQ_INT(read_at(path, buf, 4096, hdr_off[i]), 0))
			continue;
		CHECK(memcmp(buf, "head", 4) == 0);
		CHECK_EQ_U64(vhdx_crc32c_skip(buf, 4096, 4), get_le32(buf + 4));
		/* the CRC covers all 4096 bytes, not just the 80 defined */
		buf[4000] ^= 1;
		CHECK(vhdx_crc32c_skip(buf, 4096, 4) != get_le32(buf + 4));
	}
	for (i = 0; i < 2; i++) {
		if (!CHECK_EQ_INT(read_at(path, buf, 65536, rt_off[i]), 0))
			continue;
		CHECK(memcmp(buf, "regi", 4) == 0);
		CHECK_EQ_U64(vhdx_crc32c_skip(buf, 65536, 4),
			     get_le32(buf + 4));
	}
	free(buf);
out:
	unlink(path);
}

int main(void)
{
	RUN_TEST(rfc3720_vectors);
	RUN_TEST(reference_agrees);
	RUN_TEST(update_is_uninverted);
	RUN_TEST(incremental_split);
	RUN_TEST(skip_field);
	RUN_TEST(qemu_img_checksums);
	return unit_done();
}
