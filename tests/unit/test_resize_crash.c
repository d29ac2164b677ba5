/*
 * test_resize_crash.c - crash consistency of vhdx_resize (fmt §19.4).
 *
 * For each scenario an image is made in memory, a pattern is written into
 * it and flushed, and it is closed.  Then one session is recorded through
 * rec_io: open read-write, vhdx_resize, close.  Every prefix of that record
 * is a crash point: what precedes its last flush is on disk, of what
 * follows it (the window) none, all, a prefix or a random subset landed,
 * in any order between truncates, some writes torn at 4 KiB sectors.
 * Each crash state must open read-write (replaying the log), show the old
 * or the new size, the pattern below the smaller of the two, zeros in the
 * space the grow added, pass vhdx_check without problems, and open again
 * after a clean close with the same size.  The last crash point (the
 * whole record) must show the new size.
 *
 * Scenarios: dynamic and fixed, 1 MiB and 32 MiB blocks, 512 and 4096
 * sectors, grows that stay in the BAT region, grow it in place or move it,
 * cross a chunk boundary, and shrinks (forced over data, and over zeros);
 * two sessions also write before the resize without flushing: those bytes
 * may read old or new in a crash state, new once the record is complete.
 *
 *   test_resize_crash [--states-per-point N] [--seed N] [-v]
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem_io.h"
#include "rec_io.h"
#include "vhdx.h"
#include "vhdx_inspect.h"

#define MiB    (1024ull * 1024)
#define GiB    (1024 * MiB)
#define SECTOR 4096u

static unsigned int per_point = 3;
static uint64_t seed = 0x5eed2e51e;
static int verbose;

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		perror("malloc");
		exit(99);
	}
	return p;
}

/* The library's messages: shown with -v only (crash states are noisy). */
static void quiet(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	if (verbose)
		fprintf(stderr, "  lib: %s\n", msg);
}

struct scenario {
	const char *name;
	enum vhdx_type type;
	uint32_t block_size;
	uint32_t lss;
	uint64_t old_size;
	uint64_t new_size;
	uint64_t data_len; /* pattern written from 0 (flushed before) */
	unsigned int flags;
	unsigned int variants; /* states per crash point, 0: per_point */
	/* written in the recorded session before the resize, not flushed */
	uint64_t pend_off, pend_len;
};

static const struct scenario scenarios[] = {
    {"dynamic 1M/512 grow in the region, partial last block", VHDX_TYPE_DYNAMIC,
     MiB, 512, 5 * MiB + 1536, 9 * MiB + 512, 5 * MiB + 1536, 0, 0, 0, 0},
    {"dynamic 1M/512 grow across the 4 GiB chunk boundary", VHDX_TYPE_DYNAMIC,
     MiB, 512, 4 * GiB - 3 * MiB - 512, 4 * GiB + 2 * MiB, 2 * MiB, 0, 0, 0, 0},
    {"dynamic 1M/512 grow that moves the BAT", VHDX_TYPE_DYNAMIC, MiB, 512,
     8 * MiB, 130 * GiB, 3 * MiB, 0, 0, 0, 0},
    {"dynamic 1M/512 grow with unflushed writes before it (a new block)",
     VHDX_TYPE_DYNAMIC, MiB, 512, 5 * MiB + 1536, 9 * MiB + 512, 2 * MiB, 0, 0,
     3 * MiB + 4096, 65536},
    {"fixed 1M/512 shrink with unflushed writes before it", VHDX_TYPE_FIXED,
     MiB, 512, 9 * MiB, 4 * MiB, 4 * MiB, 0, 0, MiB - 512, 8192},
    {"dynamic 32M/4096 grow", VHDX_TYPE_DYNAMIC, 32 * MiB, 4096,
     40 * MiB + 4096, 100 * MiB, 3 * MiB, 0, 0, 0, 0},
    {"fixed 1M/512 grow, new blocks allocated", VHDX_TYPE_FIXED, MiB, 512,
     6 * MiB + 3584, 11 * MiB, 6 * MiB + 3584, VHDX_RESIZE_SPARSE, 0, 0, 0},
    {"fixed 1M/512 grow changing 140 BAT sectors: the BAT moves",
     VHDX_TYPE_FIXED, MiB, 512, 8 * MiB, 70 * GiB, 4 * MiB, VHDX_RESIZE_SPARSE,
     1, 0, 0},
    {"fixed 1M/4096 grow", VHDX_TYPE_FIXED, MiB, 4096, 3 * MiB + 8192, 7 * MiB,
     3 * MiB + 8192, VHDX_RESIZE_SPARSE, 0, 0, 0},
    {"dynamic 1M/512 shrink over data, forced", VHDX_TYPE_DYNAMIC, MiB, 512,
     9 * MiB, 3 * MiB + 512, 9 * MiB, VHDX_RESIZE_ALLOW_DATA_LOSS, 0, 0, 0},
    {"fixed 1M/512 shrink over zeros", VHDX_TYPE_FIXED, MiB, 512, 9 * MiB,
     4 * MiB, 4 * MiB, 0, 0, 0, 0},
};

#define N_SCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static uint8_t pat_byte(uint64_t v)
{
	uint64_t z = v / 8 * 0x9e3779b97f4a7c15ull;

	return (uint8_t)((z >> 29) ^ (z >> ((v % 8) * 8)) ^ 0x5a) | 1;
}

static void fill_pat(uint8_t *buf, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pat_byte(off + i);
}

/* Make the base image: created, pattern written and flushed, closed. */
static struct mem_io *make_base(const struct scenario *s)
{
	struct mem_io *m = mem_io_new();
	struct vhdx_create_opts co = {
	    .type = s->type,
	    .virtual_size = s->old_size,
	    .block_size = s->block_size,
	    .logical_sector = s->lss,
	    .physical_sector = 4096,
	};
	struct vhdx_open_opts oo = {.flags = VHDX_OPEN_SPARSE, .msg = quiet};
	struct vhdx_image *img;
	struct vhdx_io io;
	uint8_t *buf = xmalloc(MiB);

	if (!m)
		exit(99);
	mem_io_ops(&io, m);
	if (vhdx_create(&io, &co) || vhdx_open(&img, &io, &oo)) {
		fprintf(stderr, "%s: cannot create the base image\n", s->name);
		exit(99);
	}
	for (uint64_t o = 0; o < s->data_len; o += MiB) {
		size_t n = s->data_len - o < MiB ? s->data_len - o : MiB;

		fill_pat(buf, o, n);
		if (vhdx_write(img, buf, n, o) != (long)n)
			exit(99);
	}
	if (vhdx_close(img))
		exit(99);
	free(buf);
	return m;
}

/* Dirty the bytes of the last block past the old end in the file. */
static void stale_tail(struct mem_io *m, const struct scenario *s)
{
	struct vhdx_open_opts oo = {.flags = VHDX_OPEN_RDONLY, .msg = quiet};
	struct vhdx_image *img;
	struct vhdx_io io;
	struct vhdx_mapping mp;
	uint64_t last = s->old_size - 1;
	uint8_t junk[SECTOR];

	mem_io_ops(&io, m);
	if (vhdx_open(&img, &io, &oo))
		exit(99);
	if (vhdx_map(img, last, 1, &mp) == 0 && mp.kind == VHDX_MAP_FILE) {
		uint64_t room = s->block_size - s->old_size % s->block_size;

		memset(junk, 0xee, sizeof(junk));
		if (s->old_size % s->block_size && room >= 1)
			mem_io_put(m, mp.file_offset + 1, junk,
				   room - 1 < sizeof(junk) ? room - 1
							   : sizeof(junk));
	}
	vhdx_close(img);
}

/* The pending writes of the current scenario; new only: state complete. */
static uint64_t pend_off, pend_len;
static bool pend_must_be_new;

static uint8_t pend_byte(uint64_t v)
{
	return pat_byte(v) ^ 0xff;
}

/* Where the checks read: the pattern and around every size boundary. */
static int check_range(struct vhdx_image *img, uint64_t off, uint64_t len,
		       uint64_t data_len, uint64_t zero_from, char *why)
{
	uint8_t *buf = xmalloc(len);
	uint64_t vs = vhdx_virtual_size(img);
	long n;

	if (off >= vs) {
		free(buf);
		return 0;
	}
	if (len > vs - off)
		len = vs - off;
	n = vhdx_read(img, buf, len, off);
	if (n != (long)len) {
		sprintf(why, "read at %" PRIu64 " returned %ld", off, n);
		free(buf);
		return -1;
	}
	for (uint64_t i = 0; i < len; i++) {
		uint64_t v = off + i;
		uint8_t want = v < data_len && v < zero_from ? pat_byte(v) : 0;

		if (v >= pend_off && v - pend_off < pend_len) {
			/* before the resize, unflushed: old or new */
			if (buf[i] == pend_byte(v) ||
			    (!pend_must_be_new && buf[i] == want))
				continue;
			sprintf(why,
				"byte %" PRIu64 " (written before the resize) "
				"is 0x%02x",
				v, buf[i]);
			free(buf);
			return -1;
		}
		if (v >= data_len && v < zero_from)
			continue; /* never written: anything the format allows */
		if (buf[i] != want) {
			sprintf(why,
				"byte %" PRIu64 " is 0x%02x, expected 0x%02x",
				v, buf[i], want);
			free(buf);
			return -1;
		}
	}
	free(buf);
	return 0;
}

/*
 * Check an open crash state.  Data below the smaller size keeps the pattern
 * (up to data_len); bytes at or past old_size read as zeros when the size
 * is the new, larger one; the rest of the pattern is cut (shrink).
 */
static int check_state(struct vhdx_image *img, const struct scenario *s,
		       char *why)
{
	uint64_t vs = vhdx_virtual_size(img);
	uint64_t zero_from = s->old_size;
	uint64_t data = s->data_len;
	const uint64_t spots[] = {
	    0,
	    s->old_size > MiB ? s->old_size - MiB : 0,
	    s->new_size > MiB ? s->new_size - MiB : 0,
	    s->old_size & ~(MiB - 1),
	    (s->new_size < s->old_size ? s->new_size : s->old_size) &
		~(MiB - 1),
	    4 * GiB - MiB,
	    4 * GiB};
	struct vhdx_check_report rep;

	if (vs != s->old_size && vs != s->new_size) {
		sprintf(why, "virtual size %" PRIu64, vs);
		return -1;
	}
	if (s->new_size < s->old_size && vs == s->new_size)
		zero_from = vs; /* nothing past the end to look at */
	/* the whole pattern when small, else the spots */
	if (data <= 16 * MiB && check_range(img, 0, data, data, zero_from, why))
		return -1;
	for (size_t k = 0; k < sizeof(spots) / sizeof(spots[0]); k++)
		if (check_range(img, spots[k], 2 * MiB, data, zero_from, why))
			return -1;
	if (vhdx_check(img, &rep, NULL, NULL) < 0 || rep.problems) {
		sprintf(why, "vhdx_check: %u problems", rep.problems);
		return -1;
	}
	return 0;
}

struct record {
	struct rec_io *rec;
	size_t n;
};

/* Apply op i of the record to cow, torn at 4 KiB sectors when asked. */
static void apply(struct cow_io *cow, const struct rec_op *op, bool tear)
{
	static const uint8_t zero[SECTOR];

	if (op->kind == REC_TRUNCATE) {
		cow_io_set_size(cow, op->off);
		return;
	}
	if (op->kind == REC_FLUSH)
		return;
	for (uint64_t a = op->off; a < op->off + op->len;) {
		uint64_t b = (a / SECTOR + 1) * SECTOR;

		if (b > op->off + op->len)
			b = op->off + op->len;
		if (!tear || below(2)) {
			if (op->kind == REC_PWRITE) {
				cow_io_put(cow, a, op->data + (a - op->off),
					   b - a);
			} else {
				uint64_t end = cow_io_get_size(cow);

				for (uint64_t z = a; z < b && z < end;
				     z += SECTOR)
					cow_io_put(cow, z, zero,
						   (b < end ? b : end) - z <
							   SECTOR
						       ? (b < end ? b : end) - z
						       : SECTOR);
			}
		}
		a = b;
	}
}

/* Build crash state: ops [0, point) recorded, variant v of the window. */
static void build(struct cow_io *cow, struct rec_io *rec, size_t point,
		  unsigned int v)
{
	long last_flush = -1;
	unsigned int mode = v == 0   ? 0
			    : v == 1 ? 1
				     : 2 + (unsigned int)below(2);
	size_t start;

	for (size_t i = 0; i < point; i++)
		if (rec_io_op(rec, i)->kind == REC_FLUSH)
			last_flush = (long)i;
	start = (size_t)(last_flush + 1);
	for (size_t i = 0; i < start; i++)
		apply(cow, rec_io_op(rec, i), false);
	/* the window: 0 none, 1 all, 2 a prefix (last torn), 3 a subset */
	if (mode == 1) {
		for (size_t i = start; i < point; i++)
			apply(cow, rec_io_op(rec, i), false);
	} else if (mode == 2) {
		size_t c = start + below(point - start + 1);

		for (size_t i = start; i < c; i++)
			apply(cow, rec_io_op(rec, i), false);
		if (c < point)
			apply(cow, rec_io_op(rec, c), true);
	} else if (mode == 3) {
		/* truncates stay in order; the others land or not */
		for (size_t i = start; i < point; i++) {
			const struct rec_op *op = rec_io_op(rec, i);

			if (op->kind == REC_TRUNCATE || below(2))
				apply(cow, op, below(4) == 0);
		}
	}
}

static int run_scenario(const struct scenario *s, size_t no,
			unsigned long *states, unsigned long *failed)
{
	struct mem_io *base = make_base(s);
	struct mem_io *live;
	struct rec_io *rec;
	struct vhdx_io io;
	struct vhdx_open_opts oo = {.flags = VHDX_OPEN_SPARSE, .msg = quiet};
	struct vhdx_image *img;
	uint64_t new_seen = 0;
	unsigned long scen_failed = 0;
	char why[256];
	size_t n;
	int ret;

	stale_tail(base, s);
	/* the live file the recording session writes: a copy of base */
	live = mem_io_new();
	{
		uint64_t size = mem_io_get_size(base);
		uint8_t *buf = xmalloc(64 * 1024);

		mem_io_set_size(live, size);
		for (uint64_t o = 0; o < size; o += 64 * 1024) {
			size_t k = size - o < 64 * 1024 ? size - o : 64 * 1024;

			mem_io_get(base, o, buf, k);
			if (memchr(buf, 0, k) != buf ||
			    memcmp(buf, buf + 1, k - 1))
				mem_io_put(live, o, buf, k);
		}
		free(buf);
	}
	rec = rec_io_new(live);
	rec_io_ops(&io, rec);
	pend_off = s->pend_off;
	pend_len = s->pend_len;
	ret = vhdx_open(&img, &io, &oo);
	if (ret == 0 && s->pend_len) {
		uint8_t *p = xmalloc(s->pend_len);

		for (uint64_t i = 0; i < s->pend_len; i++)
			p[i] = pend_byte(s->pend_off + i);
		if (vhdx_write(img, p, s->pend_len, s->pend_off) !=
		    (long)s->pend_len)
			ret = -EIO;
		free(p);
	}
	if (ret == 0)
		ret = vhdx_resize(img, s->new_size, s->flags);
	if (ret == 0)
		ret = vhdx_close(img);
	if (ret) {
		printf("not ok %zu - %s: the resize itself failed: %d\n", no,
		       s->name, ret);
		(*failed)++;
		return -1;
	}
	n = rec_io_count(rec);
	for (size_t point = 0; point <= n; point++) {
		/* of a long run of truncates (new fixed blocks), a sample */
		if (point && point < n &&
		    rec_io_op(rec, point - 1)->kind == REC_TRUNCATE &&
		    rec_io_op(rec, point)->kind == REC_TRUNCATE && point % 4096)
			continue;
		for (unsigned int v = 0;
		     v < (s->variants ? s->variants : per_point); v++) {
			struct cow_io *cow = cow_io_new(base);
			struct vhdx_io cio;
			struct vhdx_image *ci;
			uint64_t size1;

			build(cow, rec, point, v);
			pend_must_be_new = point == n;
			cow_io_ops(&cio, cow);
			(*states)++;
			why[0] = 0;
			if (vhdx_open(&ci, &cio, &oo)) {
				sprintf(why, "read-write open failed");
			} else {
				size1 = vhdx_virtual_size(ci);
				if (check_state(ci, s, why) == 0 &&
				    vhdx_close(ci) != 0)
					sprintf(why, "close failed");
				else if (why[0])
					vhdx_close(ci);
				if (!why[0] && point == n &&
				    size1 != s->new_size)
					sprintf(why,
						"complete record, old size");
				if (!why[0] && size1 == s->new_size)
					new_seen++;
				/* a second open sees the same, cleanly */
				if (!why[0] && vhdx_open(&ci, &cio, &oo) == 0) {
					if (vhdx_virtual_size(ci) != size1)
						sprintf(
						    why,
						    "size changed on reopen");
					else
						check_state(ci, s, why);
					vhdx_close(ci);
				} else if (!why[0]) {
					sprintf(why, "second open failed");
				}
			}
			if (why[0]) {
				(*failed)++;
				scen_failed++;
				printf("# %s: crash after op %zu of %zu "
				       "(variant %u): %s\n",
				       s->name, point, n, v, why);
			}
			cow_io_free(cow);
		}
	}
	printf("%s %zu - %s: %zu recorded ops, %" PRIu64
	       " states with the new size\n",
	       scen_failed ? "not ok" : "ok", no, s->name, n, new_seen);
	rec_io_free(rec);
	mem_io_free(live);
	mem_io_free(base);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long states = 0, failed = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--states-per-point") && i + 1 < argc)
			per_point = (unsigned int)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-v"))
			verbose = 1;
		else {
			fprintf(stderr,
				"usage: test_resize_crash [--states-per-point "
				"N] [--seed N] [-v]\n");
			return 99;
		}
	}
	rng_state = seed;
	printf("# seed 0x%" PRIx64 ", %u states per crash point\n", seed,
	       per_point);
	for (size_t k = 0; k < N_SCEN; k++)
		run_scenario(&scenarios[k], k + 1, &states, &failed);
	printf("1..%zu\n# %lu crash states, %lu failed\n", N_SCEN, states,
	       failed);
	return failed ? 1 : 0;
}
