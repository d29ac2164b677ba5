/*
 * unit.h - a tiny assertion framework for the C unit tests.
 *
 * A test program defines its tests with TEST(name), runs them from main()
 * with RUN_TEST(name) and returns unit_done().  A failing CHECK prints
 * "file:line: failed: expression" (and both values for the CHECK_EQ forms)
 * and marks the running test as failed; the test goes on, so one run shows
 * every broken check.  The output is TAP, which make check reads with
 * automake's TAP driver, counting every test line:
 *
 *	ok 1 - crc_vectors
 *	not ok 2 - crc_split
 *	ok 3 - crc_qemu # SKIP qemu-img not found
 *	1..3
 *	# 1 passed, 1 failed, 1 skipped (57 checks)
 *
 * Exit status: 0 nothing failed (skips are told by the "# SKIP" lines), 1
 * something failed.
 */
#ifndef UNIT_H
#define UNIT_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct unit_state {
	unsigned int tests;
	unsigned int passed;
	unsigned int failed;
	unsigned int skipped;
	unsigned long checks;
	int cur_failed;
	const char *skip_reason;
};

static struct unit_state unit;

static inline int unit_check(int ok, const char *file, int line,
			     const char *expr)
{
	unit.checks++;
	if (ok)
		return 1;
	unit.cur_failed = 1;
	printf("# %s:%d: failed: %s\n", file, line, expr);
	fflush(stdout);
	return 0;
}

static inline int unit_check_u64(uint64_t a, uint64_t b, const char *file,
				 int line, const char *ea, const char *eb)
{
	unit.checks++;
	if (a == b)
		return 1;
	unit.cur_failed = 1;
	printf("# %s:%d: failed: %s == %s\n#   left:  %" PRIu64 " (0x%" PRIx64
	       ")\n#   right: %" PRIu64 " (0x%" PRIx64 ")\n",
	       file, line, ea, eb, a, a, b, b);
	fflush(stdout);
	return 0;
}

static inline int unit_check_i64(int64_t a, int64_t b, const char *file,
				 int line, const char *ea, const char *eb)
{
	unit.checks++;
	if (a == b)
		return 1;
	unit.cur_failed = 1;
	printf("# %s:%d: failed: %s == %s\n#   left:  %" PRId64
	       "\n#   right: %" PRId64 "\n",
	       file, line, ea, eb, a, b);
	fflush(stdout);
	return 0;
}

static inline int unit_check_str(const char *a, const char *b, const char *file,
				 int line, const char *ea, const char *eb)
{
	unit.checks++;
	if (a && b && strcmp(a, b) == 0)
		return 1;
	unit.cur_failed = 1;
	printf("# %s:%d: failed: %s == %s\n#   left:  \"%s\"\n#   right: "
	       "\"%s\"\n",
	       file, line, ea, eb, a ? a : "(null)", b ? b : "(null)");
	fflush(stdout);
	return 0;
}

static inline int unit_check_mem(const void *a, const void *b, size_t len,
				 const char *file, int line, const char *ea,
				 const char *eb)
{
	const uint8_t *pa = a, *pb = b;
	size_t i;

	unit.checks++;
	for (i = 0; i < len; i++) {
		if (pa[i] != pb[i])
			break;
	}
	if (i == len)
		return 1;
	unit.cur_failed = 1;
	printf("# %s:%d: failed: %s == %s (%zu bytes)\n#   first difference "
	       "at byte %zu: 0x%02x != 0x%02x\n",
	       file, line, ea, eb, len, i, pa[i], pb[i]);
	fflush(stdout);
	return 0;
}

/* Each CHECK evaluates to 1 if it held, so a test can bail out early. */
#define CHECK(cond) unit_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_EQ_U64(a, b) \
	unit_check_u64((uint64_t)(a), (uint64_t)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_EQ_INT(a, b) \
	unit_check_i64((int64_t)(a), (int64_t)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_EQ_STR(a, b) unit_check_str((a), (b), __FILE__, __LINE__, #a, #b)
#define CHECK_EQ_MEM(a, b, len) \
	unit_check_mem((a), (b), (len), __FILE__, __LINE__, #a, #b)

/* Informational line in the output (a TAP comment). */
static inline void unit_note(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Mark the running test as skipped (call, then return from the test). */
static inline void unit_skip(const char *reason)
{
	unit.skip_reason = reason;
}

#define TEST(name) static void name(void)

static inline void unit_run(const char *name, void (*fn)(void))
{
	unit.tests++;
	unit.cur_failed = 0;
	unit.skip_reason = NULL;
	fn();
	if (unit.cur_failed) {
		unit.failed++;
		printf("not ok %u - %s\n", unit.tests, name);
	} else if (unit.skip_reason) {
		unit.skipped++;
		printf("ok %u - %s # SKIP %s\n", unit.tests, name,
		       unit.skip_reason);
	} else {
		unit.passed++;
		printf("ok %u - %s\n", unit.tests, name);
	}
	fflush(stdout);
}

#define RUN_TEST(name) unit_run(#name, name)

/* Print the summary; the return value is the exit status for main(). */
static inline int unit_done(void)
{
	printf("1..%u\n", unit.tests);
	printf("# %u passed, %u failed, %u skipped (%lu checks)\n", unit.passed,
	       unit.failed, unit.skipped, unit.checks);
	fflush(stdout);
	return unit.failed ? 1 : 0;
}

#endif /* UNIT_H */
