/*
 * test_crash.c - crash consistency of the write path (fmt §10.3, §12).
 *
 * A round creates an image in memory, opens it read-write on a recording
 * backend (rec_io) and runs a random workload of unaligned, block-crossing,
 * allocating and overwriting writes with vhdx_flush at random points, then
 * maybe a clean vhdx_close.  About one step in eight is a vhdx_zero instead
 * (with or without VHDX_ZERO_UNMAP): of whole blocks (written, allocated
 * since the last flush, or never written), across block boundaries, or of
 * parts of blocks, often followed by a write into the zeroed range, which
 * allocates the block anew.  The record holds every pwrite, flush, truncate
 * and zero (punch hole or zero range) the library issued, in order.  Rounds
 * take turns at giving rec_io no zero callback (the library writes zeros in
 * place and leaves the space of unmapped blocks), one that does both modes,
 * or one that only punches holes (zero ranges are then written).
 *
 * Crash model.  Let F be the index of an io flush in the record (or -1, the
 * freshly created image).  Everything recorded before F is on disk.  The
 * ops after F and before the next io flush (the "window") are in flight: a
 * crash state applies any subset of them, in any order between truncates
 * (which stay ordered), and a pwrite that covers more than one 4 KiB-aligned
 * sector of the file may be torn: only some of its sectors land.  A pwrite
 * past the end of file extends it, as it would on a real file system.  A
 * zero is like a pwrite of zeros that does not extend the file (KEEP_SIZE:
 * it is clipped at the end of file as the crash state has it when it is
 * applied); it may be torn and reordered with the pwrites the same way.
 *
 * Expected contents.  Every write's data is a slice of a fixed random
 * pattern chosen by (virtual offset + a per-write shift), so the writer of
 * any byte is recognisable.  vhdx_flush j is durable in the crash state if
 * the last io flush it issued is at or before F; let D be the writes issued
 * before the newest such vhdx_flush, and P the writes that had started by
 * the last op applied.  Then each byte of the virtual disk must read as
 * written by the last of writes [0, D) covering it (zero if none), or as
 * written by any of the writes [D, P) covering it.  Several pending writes
 * to one byte are allowed: each adds its value to the set.  A vhdx_zero is
 * modelled as a write whose data is all zeros, a writer of its own, so the
 * same rules apply to it: once durable its bytes read as zeros unless a
 * later durable write covers them; pending, they may read as zeros.
 *
 * Each crash state is opened read-only (the log is replayed in memory) and
 * the whole disk is read and checked; every tenth state is also opened
 * read-write (the log is replayed into the file), checked, given a new
 * write (or a vhdx_zero) and flush, closed, and reopened read-only (the
 * log must be empty and everything, the new write included, must read
 * back).  A few states also go through qemu-img (replay, check and convert
 * to raw), if present.
 *
 * Two further tests inject one EIO or ENOSPC into every pwrite, flush,
 * truncate and zero of a short workload (writes, some vhdx_zero calls and
 * flushes) in turn, and into every pwrite and flush of a read-write open
 * that replays a log (whose last entry holds a block made ZERO).
 *
 * Two more sets of rounds: reuse_states, whose workloads discard whole
 * blocks and allocate again with flushes in between, so that new blocks
 * land in places freed by discards (fmt §19.2); and compact_states, whose
 * crash states are cut while vhdx_compact moves blocks down and cuts the
 * file (fmt §19.3); compaction changes nothing a reader sees, so every
 * such state must read as the flushed workload.  --unsafe-reuse makes the
 * library free places before the freeing BAT change is durable (a switch
 * for this test only) and runs reuse_states, which must then fail.
 *
 *   test_crash [--states N] [--reuse-states N] [--compact-states N]
 *	      [--seed N] [--jobs N] [--qemu N] [--only crash|reuse|compact]
 *	      [--unsafe-reuse] [--round R [--state S [--save FILE]]]
 *	      [--verbose]
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "vhdx_inspect.h"
#include "mem_io.h"
#include "rec_io.h"
#include "unit.h"
#include "vhdx.h"

#define CHUNK		(1u << 20) /* verification granularity of the disk */
#define SECTOR		4096u	   /* unit of atomicity of the file */
#define PAT_SIZE	(4 * MiB)  /* longest write: less than this */
#define MAX_FAIL_PRINTS 5	   /* failures described in full per round */

/* ---- options ---- */

static struct {
	uint64_t seed;
	unsigned long states;
	unsigned int jobs;
	long round; /* -1: every round */
	long state; /* -1: every state */
	const char *save;
	unsigned int qemu; /* crash states also given to qemu-img */
	bool verbose;
	unsigned long reuse_states, compact_states;
	bool unsafe_reuse; /* break fmt §19.2 on purpose (reuse_states) */
	const char *only;  /* run only this test */
} opt = {.states = 1000,
	 .round = -1,
	 .state = -1,
	 .qemu = 6,
	 .reuse_states = 1000,
	 .compact_states = 1000};

/* States of every test run so far (the summary line). */
static unsigned long all_states, all_failed;

/* ---- random numbers (splitmix64) ---- */

struct rng {
	uint64_t s;
};

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rng_next(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	return mix64(r->s);
}

static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

static bool rng_pct(struct rng *r, unsigned int pct)
{
	return rng_below(r, 100) < pct;
}

static struct rng rng_for(uint64_t a, uint64_t b)
{
	struct rng r = {mix64(a ^ mix64(b + 0x51ed270b27cull))};

	return r;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "test_crash: out of memory\n");
		abort();
	}
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p) {
		fprintf(stderr, "test_crash: out of memory\n");
		abort();
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fprintf(stderr, "test_crash: out of memory\n");
		abort();
	}
	return p;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the data pattern ---- */

static uint8_t *pat; /* PAT_SIZE random bytes, then a copy of them */

static void pat_init(void)
{
	struct rng r = {0x76686478};

	pat = xmalloc(2 * PAT_SIZE);
	for (size_t i = 0; i < PAT_SIZE; i += 8) {
		uint64_t v = rng_next(&r);

		memcpy(pat + i, &v, 8);
	}
	memcpy(pat + PAT_SIZE, pat, PAT_SIZE);
}

/* Data of a write with this shift, from virtual offset v on. */
static const uint8_t *pat_at(uint64_t v, uint32_t shift)
{
	return pat + (v + shift) % PAT_SIZE;
}

/* ---- output (several rounds run at once) ---- */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void VHDX_PRINTF(1, 2) out(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_lock);
	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

/* Library messages of one open, kept to show them when a check fails. */
struct msgs {
	char text[3072];
	size_t len;
};

static void msg_cb(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	struct msgs *m = opaque;
	size_t room = sizeof(m->text) - m->len;
	int n;

	if (level > VHDX_MSG_INFO || room < 2)
		return;
	n = snprintf(m->text + m->len, room, "#     %s: %s\n",
		     level <= VHDX_MSG_ERR	 ? "error"
		     : level == VHDX_MSG_WARNING ? "warning"
						 : "info",
		     msg);
	if (n > 0)
		m->len += (size_t)n < room ? (size_t)n : room - 1;
}

/* ---- image configurations ---- */

struct config {
	const char *name;
	enum vhdx_type type;
	uint32_t block_size;
	uint32_t lss;
	uint32_t vmin_mib, vmax_mib; /* virtual size range */
	uint32_t log_size;
	unsigned int steps; /* workload writes; 0: until every block is used */
	unsigned int flush_pct; /* chance of a flush after a write */
	unsigned int zero_pct;	/* steps that are a vhdx_zero (0: ZERO_PCT) */
	bool compact;		/* then flush, and vhdx_compact */
};

/*
 * With a 1 MiB log an entry of one BAT sector takes 8 KiB, so the ring is
 * full after 128 commits: the configurations with steps = 0 allocate more
 * blocks than that, one or two per flush, and so rotate the LogGuid.
 */
static const struct config configs[] = {
    {"dynamic-1M-512", VHDX_TYPE_DYNAMIC, MiB, 512, 160, 192, MiB, 0, 40, 0,
     false},
    {"fixed-2M-4096", VHDX_TYPE_FIXED, 2 * MiB, 4096, 48, 96, MiB, 120, 40, 0,
     false},
    {"dynamic-2M-4096", VHDX_TYPE_DYNAMIC, 2 * MiB, 4096, 64, 120, MiB, 200, 40,
     0, false},
    {"fixed-1M-512", VHDX_TYPE_FIXED, MiB, 512, 48, 96, MiB, 120, 40, 0, false},
    {"dynamic-1M-4096", VHDX_TYPE_DYNAMIC, MiB, 4096, 160, 192, MiB, 0, 40, 0,
     false},
    {"fixed-1M-4096", VHDX_TYPE_FIXED, MiB, 4096, 48, 96, MiB, 120, 40, 0,
     false},
    {"dynamic-2M-512", VHDX_TYPE_DYNAMIC, 2 * MiB, 512, 64, 120, 2 * MiB, 200,
     40, 0, false},
    {"fixed-2M-512", VHDX_TYPE_FIXED, 2 * MiB, 512, 48, 96, MiB, 120, 40, 0,
     false},
    /* 512 entries per BAT sector: commits touch several sectors */
    {"dynamic-1M-512-wide", VHDX_TYPE_DYNAMIC, MiB, 512, 520, 600, MiB, 160, 15,
     0, false},
};

#define N_CONFIGS (sizeof(configs) / sizeof(configs[0]))

/*
 * Reuse of freed places (fmt §19.2): many discards of whole blocks, each
 * often followed by a write that allocates, with flushes in between, so
 * that blocks land in places freed by earlier discards.
 */
static const struct config reuse_configs[] = {
    {"reuse-1M-512", VHDX_TYPE_DYNAMIC, MiB, 512, 40, 64, MiB, 260, 30, 35,
     false},
    {"reuse-2M-4096", VHDX_TYPE_DYNAMIC, 2 * MiB, 4096, 48, 80, MiB, 220, 30,
     35, false},
};

/*
 * Compaction (fmt §19.3): a workload with discards leaves free places, a
 * flush makes it all durable, then vhdx_compact moves blocks down and cuts
 * the file; the crash states are taken during the compaction.
 */
static const struct config compact_configs[] = {
    {"compact-1M-512", VHDX_TYPE_DYNAMIC, MiB, 512, 40, 64, MiB, 200, 30, 30,
     true},
    {"compact-2M-4096", VHDX_TYPE_DYNAMIC, 2 * MiB, 4096, 48, 80, MiB, 160, 30,
     30, true},
    {"compact-1M-4096", VHDX_TYPE_DYNAMIC, MiB, 4096, 40, 64, MiB, 200, 30, 30,
     true},
};

/* ---- the model: what was written, and when it became durable ---- */

struct wr {
	uint64_t off, len; /* virtual disk range */
	uint32_t shift;	   /* data: pat_at(off, shift) */
	bool zero;	   /* a vhdx_zero: the data is all zeros, not pat */
	bool failed;	   /* the call failed: its bytes may or may not show */
	size_t rec_start;  /* recorded io ops before the call */
};

struct fl {
	size_t n_writes; /* writes issued before this vhdx_flush */
	long last_flush; /* newest io flush in the record when it returned */
};

struct idlist {
	size_t *v;
	size_t n, cap;
};

struct model {
	uint64_t vsize;
	struct wr *w;
	size_t nw, capw;
	struct fl *f;
	size_t nf, capf;
	struct idlist *chunk; /* per CHUNK of the disk: writes touching it */
	size_t n_chunks;
};

static void model_init(struct model *m, uint64_t vsize)
{
	memset(m, 0, sizeof(*m));
	m->vsize = vsize;
	m->n_chunks = (vsize + CHUNK - 1) / CHUNK;
	m->chunk = xcalloc(m->n_chunks, sizeof(*m->chunk));
}

static void model_free(struct model *m)
{
	for (size_t c = 0; c < m->n_chunks; c++)
		free(m->chunk[c].v);
	free(m->chunk);
	free(m->w);
	free(m->f);
}

static void idlist_add(struct idlist *l, size_t id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 8;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = id;
}

static size_t model_write(struct model *m, uint64_t off, uint64_t len,
			  uint32_t shift, size_t rec_start, bool failed)
{
	size_t id = m->nw;

	if (m->nw == m->capw) {
		m->capw = m->capw ? 2 * m->capw : 256;
		m->w = xrealloc(m->w, m->capw * sizeof(*m->w));
	}
	m->w[m->nw++] = (struct wr){.off = off,
				    .len = len,
				    .shift = shift,
				    .failed = failed,
				    .rec_start = rec_start};
	for (uint64_t c = off / CHUNK; len && c <= (off + len - 1) / CHUNK; c++)
		idlist_add(&m->chunk[c], id);
	return id;
}

static size_t model_zero(struct model *m, uint64_t off, uint64_t len,
			 size_t rec_start, bool failed)
{
	size_t id = model_write(m, off, len, 0, rec_start, failed);

	m->w[id].zero = true;
	return id;
}

/* The data of write w at [v, v + n) of the disk. */
static void wr_copy(const struct wr *w, uint8_t *dst, uint64_t v, uint64_t n)
{
	if (w->zero)
		memset(dst, 0, n);
	else
		memcpy(dst, pat_at(v, w->shift), n);
}

static uint8_t wr_byte(const struct wr *w, uint64_t v)
{
	return w->zero ? 0 : *pat_at(v, w->shift);
}

static void model_flush(struct model *m, long last_flush)
{
	if (m->nf == m->capf) {
		m->capf = m->capf ? 2 * m->capf : 64;
		m->f = xrealloc(m->f, m->capf * sizeof(*m->f));
	}
	m->f[m->nf++] =
	    (struct fl){.n_writes = m->nw, .last_flush = last_flush};
}

/* Writes that had started when the record held crash_end + 1 ops. */
static size_t model_started(const struct model *m, long crash_end)
{
	size_t lo = 0, hi = m->nw;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((long)m->w[mid].rec_start <= crash_end)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---- checking a disk against the model ---- */

struct expect {
	const struct model *m;
	size_t durable;		/* writes [0, durable) must show (not failed) */
	size_t pending;		/* writes [durable, pending) may show */
	const struct wr *extra; /* a later write that must show, or NULL */
};

/* A way to read the virtual disk: an open image, or a raw file. */
struct reader {
	long (*read)(void *ctx, void *buf, size_t len, uint64_t off);
	void *ctx;
	struct vhdx_image *img; /* for diagnostics, may be NULL */
};

static long read_vhdx(void *ctx, void *buf, size_t len, uint64_t off)
{
	return vhdx_read(ctx, buf, len, off);
}

static bool clip(const struct wr *w, uint64_t off, uint64_t n, uint64_t *a,
		 uint64_t *b)
{
	*a = w->off > off ? w->off : off;
	*b = min64(w->off + w->len, off + n);
	return *a < *b;
}

static const uint8_t zero_chunk[CHUNK];

/* No durable write of data touches chunk c: it must read as zeros. */
static bool chunk_durably_zero(const struct expect *e, size_t c, uint64_t off,
			       size_t n)
{
	const struct idlist *l = &e->m->chunk[c];
	uint64_t a, b;

	if (e->extra && !e->extra->zero && clip(e->extra, off, n, &a, &b))
		return false;
	for (size_t k = 0; k < l->n && l->v[k] < e->durable; k++)
		if (!e->m->w[l->v[k]].failed && !e->m->w[l->v[k]].zero)
			return false;
	return true;
}

/* The contents chunk c must have if only durable writes landed. */
static void expect_chunk(const struct expect *e, size_t c, uint64_t off,
			 size_t n, uint8_t *ebuf)
{
	const struct idlist *l = &e->m->chunk[c];
	uint64_t a, b;

	memset(ebuf, 0, n);
	for (size_t k = 0; k < l->n && l->v[k] < e->durable; k++) {
		const struct wr *w = &e->m->w[l->v[k]];

		if (!w->failed && clip(w, off, n, &a, &b))
			wr_copy(w, ebuf + (a - off), a, b - a);
	}
	if (e->extra && clip(e->extra, off, n, &a, &b))
		wr_copy(e->extra, ebuf + (a - off), a, b - a);
}

/* Writes of chunk c whose data may, but need not, show. */
static size_t pending_in_chunk(const struct expect *e, size_t c,
			       const struct wr **out, size_t max)
{
	const struct idlist *l = &e->m->chunk[c];
	size_t n = 0;

	for (size_t k = 0; k < l->n && n < max; k++) {
		const struct wr *w = &e->m->w[l->v[k]];

		if (w->failed ||
		    (l->v[k] >= e->durable && l->v[k] < e->pending))
			out[n++] = w;
	}
	return n;
}

static bool byte_allowed(const struct wr *const *cand, size_t n, uint64_t v,
			 uint8_t got)
{
	for (size_t k = 0; k < n; k++)
		if (v >= cand[k]->off && v - cand[k]->off < cand[k]->len &&
		    wr_byte(cand[k], v) == got)
			return true;
	return false;
}

static void describe_byte(const struct expect *e, const struct reader *rd,
			  uint64_t v, uint8_t got, uint8_t want, size_t n_cand,
			  char *why, size_t whylen)
{
	int n = snprintf(why, whylen,
			 "byte 0x%" PRIx64 " of the disk reads 0x%02x, durable "
			 "value 0x%02x, %zu pending writes there",
			 v, got, want, n_cand);
	struct vhdx_image *img = rd->img;

	if (img && n > 0 && (size_t)n < whylen) {
		uint64_t idx =
		    vhdx_bat_payload_index(&img->g, v / img->g.block_size);
		uint64_t entry = 0;

		vhdx_bat_get(img, idx, &entry);
		snprintf(why + n, whylen - (size_t)n,
			 "; BAT entry %" PRIu64 " = 0x%" PRIx64, idx, entry);
	}
}

#define MAX_CAND 4096

/* Compare one chunk that differs from its durable contents. */
static int verify_pending(const struct expect *e, const struct reader *rd,
			  size_t c, uint64_t off, size_t n, const uint8_t *rbuf,
			  const uint8_t *ebuf, char *why, size_t whylen)
{
	static __thread const struct wr *cand[MAX_CAND];
	size_t n_cand = pending_in_chunk(e, c, cand, MAX_CAND);
	uint64_t a = 0, b = 0;
	bool extra = e->extra && clip(e->extra, off, n, &a, &b);

	for (size_t i = 0; i < n; i++) {
		uint64_t v = off + i;

		if (rbuf[i] == ebuf[i])
			continue;
		if ((!extra || v < a || v >= b) &&
		    byte_allowed(cand, n_cand, v, rbuf[i]))
			continue;
		describe_byte(e, rd, v, rbuf[i], ebuf[i], n_cand, why, whylen);
		return -1;
	}
	return 0;
}

/*
 * Read the whole disk and check it.  *digest (may be NULL) hashes the
 * chunks that hold pending data, the only ones whose contents may vary.
 */
static int verify_disk(const struct expect *e, const struct reader *rd,
		       uint8_t *rbuf, uint8_t *ebuf, uint64_t *digest,
		       char *why, size_t whylen)
{
	uint64_t h = 0x6a09e667f3bcc908ull;

	for (size_t c = 0; c < e->m->n_chunks; c++) {
		uint64_t off = (uint64_t)c * CHUNK;
		size_t n = (size_t)min64(CHUNK, e->m->vsize - off);
		long got = rd->read(rd->ctx, rbuf, n, off);

		if (got != (long)n) {
			snprintf(why, whylen,
				 "reading %zu bytes at 0x%" PRIx64
				 " returned %ld",
				 n, off, got);
			return -1;
		}
		if (chunk_durably_zero(e, c, off, n) &&
		    !memcmp(rbuf, zero_chunk, n))
			continue;
		expect_chunk(e, c, off, n, ebuf);
		if (!memcmp(rbuf, ebuf, n))
			continue;
		if (verify_pending(e, rd, c, off, n, rbuf, ebuf, why, whylen))
			return -1;
		h = mix64(h ^ c);
		for (size_t i = 0; i + 8 <= n; i += 8) {
			uint64_t v;

			memcpy(&v, rbuf + i, 8);
			h = (h ^ v) * 0x100000001b3ull;
		}
	}
	if (digest)
		*digest = h;
	return 0;
}

/* ---- the workload ---- */

struct wl {
	struct vhdx_image *img;
	struct rec_io *rec;
	struct model *m;
	struct rng *rng;
	uint32_t block_size;
	uint64_t n_blocks;
	uint8_t *used; /* per payload block: written to */
	uint64_t n_used;
	uint64_t *fresh; /* blocks first written since the last flush */
	size_t n_fresh;
	uint64_t z_off, z_len; /* the range of the last vhdx_zero */
	bool z_follow;	       /* the next write goes into it */
	/* statistics of the vhdx_zero calls */
	unsigned long zeros, zeros_unmap, zeros_whole;
	unsigned long made_zero; /* blocks a vhdx_zero turned ZERO */
	char *why;
	size_t whylen;
};

static void wl_free(struct wl *w)
{
	free(w->used);
	free(w->fresh);
}

static uint64_t len_small(struct rng *r)
{
	return 1 + rng_below(r, 9000);
}

static uint64_t len_medium(struct rng *r)
{
	return 1 + rng_below(r, 128 * KiB);
}

static uint64_t unused_block(struct wl *w)
{
	uint64_t b = rng_below(w->rng, w->n_blocks);

	while (w->used[b])
		b = (b + 1) % w->n_blocks;
	return b;
}

/* Choose the range of the next write (clipped to the disk by the caller). */
static void pick_write(struct wl *w, uint64_t *offp, uint64_t *lenp)
{
	struct rng *r = w->rng;
	uint64_t vs = w->m->vsize, bs = w->block_size, off, len;
	unsigned int kind = (unsigned int)rng_below(r, 100);

	if (kind < 40 && w->n_used < w->n_blocks) {
		/* into a block never written: allocates it */
		uint64_t b = unused_block(w);

		off = b * bs + rng_below(r, min64(bs, vs - b * bs));
		len = rng_pct(r, 70) ? len_small(r) : len_medium(r);
	} else if (kind < 65 && w->m->nw) {
		/* over or next to an earlier write */
		const struct wr *p = &w->m->w[rng_below(r, w->m->nw)];

		off = p->off + rng_below(r, p->len + 8192);
		off = off > 4096 ? off - 4096 : 0;
		len = rng_pct(r, 70) ? len_small(r) : len_medium(r);
	} else if (kind < 80 && w->n_blocks > 1) {
		/* across a block boundary */
		uint64_t b = 1 + rng_below(r, w->n_blocks - 1);

		off = b * bs - 1 - rng_below(r, 64 * KiB);
		len = b * bs - off + 1 + rng_below(r, 64 * KiB);
	} else if (kind < 90) {
		off = rng_below(r, vs);
		len = len_medium(r);
	} else if (kind < 95) {
		/* large: several blocks at once */
		off = rng_below(r, vs);
		len = 256 * KiB + rng_below(r, 3 * MiB - 256 * KiB);
	} else {
		/* near the end of the disk, maybe across it */
		off = vs - 1 - rng_below(r, min64(vs, 3 * bs));
		len = len_medium(r);
	}
	*offp = off < vs ? off : vs - 1;
	*lenp = len;
}

static void mark_used(struct wl *w, uint64_t off, uint64_t len)
{
	for (uint64_t b = off / w->block_size;
	     len && b <= (off + len - 1) / w->block_size; b++) {
		if (!w->used[b]) {
			w->used[b] = 1;
			w->n_used++;
			if (!w->fresh)
				w->fresh =
				    xmalloc(w->n_blocks * sizeof(*w->fresh));
			w->fresh[w->n_fresh++] = b;
		}
	}
}

static uint64_t used_block(struct wl *w)
{
	uint64_t b = rng_below(w->rng, w->n_blocks);

	while (!w->used[b])
		b = (b + 1) % w->n_blocks;
	return b;
}

/*
 * Choose the range and flags of the next vhdx_zero: whole blocks (which
 * become ZERO in dynamic images), ranges across block boundaries, parts of
 * blocks.  Offsets are inside the disk; ranges may cross its end.
 */
static void pick_zero(struct wl *w, uint64_t *offp, uint64_t *lenp,
		      unsigned int *flags)
{
	struct rng *r = w->rng;
	uint64_t vs = w->m->vsize, bs = w->block_size, off, len, b;
	unsigned int kind = (unsigned int)rng_below(r, 100);

	*flags = rng_pct(r, 50) ? VHDX_ZERO_UNMAP : 0;
	if (kind < 40) {
		/* whole blocks: written ones, maybe several */
		if (kind < 15 && w->n_fresh)
			b = w->fresh[rng_below(r, w->n_fresh)];
		else if (kind < 25 && w->m->nw)
			b = w->m->w[w->m->nw - 1].off / bs; /* the newest */
		else
			b = w->n_used ? used_block(w)
				      : rng_below(r, w->n_blocks);
		off = b * bs;
		len = (rng_pct(r, 80) ? 1 : 2 + rng_below(r, 2)) * bs;
	} else if (kind < 50) {
		/* a whole block never written */
		b = w->n_used < w->n_blocks ? unused_block(w)
					    : rng_below(r, w->n_blocks);
		off = b * bs;
		len = bs;
	} else if (kind < 70 && w->n_blocks > 1) {
		/* across block boundaries, sometimes over a whole block */
		b = 1 + rng_below(r, w->n_blocks - 1);
		off = b * bs - 1 - rng_below(r, bs / 2);
		len = b * bs - off + 1 + rng_below(r, bs / 2) +
		      (rng_pct(r, 40) ? bs : 0);
	} else if (kind < 90 && w->m->nw) {
		/* part of a block, over or next to an earlier write */
		const struct wr *p = &w->m->w[rng_below(r, w->m->nw)];

		off = p->off + rng_below(r, p->len + 8192);
		off = off > 4096 ? off - 4096 : 0;
		len = rng_pct(r, 70) ? len_small(r) : len_medium(r);
	} else if (kind < 95) {
		off = rng_below(r, vs);
		len = len_medium(r);
	} else {
		/* to the end of the disk: a whole (maybe short) last block */
		b = (vs - 1) / bs;
		off = rng_pct(r, 50) ? b * bs : vs - 1 - rng_below(r, vs % bs);
		len = vs - off + rng_below(r, 4096);
	}
	*offp = off < vs ? off : vs - 1;
	*lenp = len;
}

/* Does [off, off + len) hold a whole payload block of the disk? */
static bool has_whole_block(const struct wl *w, uint64_t off, uint64_t len)
{
	uint64_t bs = w->block_size, first = (off + bs - 1) / bs * bs;

	return first < w->m->vsize &&
	       off + len >= min64(first + bs, w->m->vsize);
}

/* The next write: usually pick_write, sometimes into the last zeroed range. */
static void pick_next_write(struct wl *w, uint64_t *offp, uint64_t *lenp)
{
	struct rng *r = w->rng;

	if (!w->z_follow) {
		pick_write(w, offp, lenp);
		return;
	}
	w->z_follow = false;
	*offp = w->z_off + rng_below(r, w->z_len);
	*lenp = rng_pct(r, 70) ? len_small(r) : len_medium(r);
}

static int do_write(struct wl *w)
{
	uint64_t off, len, exp;
	uint32_t shift = (uint32_t)rng_next(w->rng);
	size_t rs = rec_io_count(w->rec);
	long ret;

	pick_next_write(w, &off, &len);
	exp = min64(len, w->m->vsize - off);
	ret = vhdx_write(w->img, pat_at(off, shift), len, off);
	if (ret != (long)exp) {
		snprintf(w->why, w->whylen,
			 "vhdx_write(0x%" PRIx64 ", %" PRIu64
			 ") returned %ld, expected %" PRIu64,
			 off, len, ret, exp);
		return -1;
	}
	model_write(w->m, off, exp, shift, rs, false);
	mark_used(w, off, exp);
	return 0;
}

static void note_zero(struct wl *w, uint64_t off, uint64_t len,
		      unsigned int flags)
{
	w->zeros++;
	w->zeros_unmap += !!(flags & VHDX_ZERO_UNMAP);
	w->zeros_whole += has_whole_block(w, off, len);
	w->z_off = off;
	w->z_len = len;
	/* often write into it again: the block is allocated anew */
	w->z_follow = rng_pct(w->rng, 40);
}

static int do_zero_range(struct wl *w, uint64_t off, uint64_t len,
			 unsigned int flags)
{
	uint64_t exp = min64(len, w->m->vsize - off);
	uint64_t pb = off / w->block_size, pe = (off + exp - 1) / w->block_size;
	size_t rs = rec_io_count(w->rec);
	bool was_zero[8];
	int ret;

	for (uint64_t b = pb; b <= pe && b - pb < 8; b++)
		was_zero[b - pb] =
		    vhdx_block_state(w->img, b) == VHDX_BLOCK_ZERO;
	ret = vhdx_zero(w->img, off, len, flags);
	for (uint64_t b = pb; ret == 0 && b <= pe && b - pb < 8; b++)
		w->made_zero += !was_zero[b - pb] &&
				vhdx_block_state(w->img, b) == VHDX_BLOCK_ZERO;
	if (ret) {
		snprintf(w->why, w->whylen,
			 "vhdx_zero(0x%" PRIx64 ", %" PRIu64
			 ", %#x) returned %d (%s)",
			 off, len, flags, ret, strerror(-ret));
		return -1;
	}
	model_zero(w->m, off, exp, rs, false);
	note_zero(w, off, exp, flags);
	return 0;
}

static int do_zero(struct wl *w)
{
	uint64_t off, len;
	unsigned int flags;

	pick_zero(w, &off, &len, &flags);
	return do_zero_range(w, off, len, flags);
}

static int do_flush(struct wl *w)
{
	int ret = vhdx_flush(w->img);

	if (ret) {
		snprintf(w->why, w->whylen, "vhdx_flush returned %d (%s)", ret,
			 strerror(-ret));
		return -1;
	}
	model_flush(w->m, rec_io_last_flush(w->rec));
	w->n_fresh = 0;
	return 0;
}

#define ZERO_PCT 12 /* steps that are a vhdx_zero, not a write */

/*
 * steps = 0: write until every block is allocated, flushing after each
 * write that allocated, so that there are about as many commits as blocks.
 */
static int run_workload(struct wl *w, unsigned int steps,
			unsigned int flush_pct, unsigned int zero_pct)
{
	for (unsigned int s = 0;
	     steps ? s < steps : (w->n_used < w->n_blocks && s < 3000); s++) {
		uint64_t used = w->n_used;

		if (!w->z_follow &&
		    rng_pct(w->rng, zero_pct ? zero_pct : ZERO_PCT)) {
			if (do_zero(w) < 0)
				return -1;
		} else if (do_write(w) < 0) {
			return -1;
		}
		if ((rng_pct(w->rng, flush_pct) ||
		     (!steps && w->n_used > used)) &&
		    do_flush(w) < 0)
			return -1;
		if (rng_pct(w->rng, 3) && do_flush(w) < 0)
			return -1;
	}
	return 0;
}

/* ---- helpers on images ---- */

static struct mem_io *mem_copy(struct mem_io *src)
{
	const size_t step = MEM_IO_CHUNK;
	struct mem_io *dst = mem_io_new();
	uint64_t size = mem_io_get_size(src);
	uint8_t *buf = xmalloc(step);

	if (!dst)
		abort();
	for (uint64_t off = 0; off < size; off += step) {
		size_t n = (size_t)min64(step, size - off);
		size_t i = 0;

		mem_io_get(src, off, buf, n);
		while (i < n && !buf[i])
			i++;
		if (i < n)
			mem_io_put(dst, off, buf, n);
	}
	mem_io_set_size(dst, size);
	free(buf);
	return dst;
}

static int create_image(struct mem_io *m, const struct config *cfg,
			uint64_t vsize)
{
	struct vhdx_io io;
	struct vhdx_create_opts co = {
	    .type = cfg->type,
	    .virtual_size = vsize,
	    .block_size = cfg->block_size,
	    .logical_sector = cfg->lss,
	    .physical_sector = 4096,
	    .log_size = cfg->log_size,
	};

	mem_io_ops(&io, m);
	return vhdx_create(&io, &co);
}

static uint64_t pick_vsize(const struct config *cfg, struct rng *r)
{
	uint64_t lo = (uint64_t)cfg->vmin_mib * MiB;
	uint64_t span = (uint64_t)(cfg->vmax_mib - cfg->vmin_mib) * MiB;

	/* any multiple of the sector size: the last block may be partial */
	return lo + rng_below(r, span / cfg->lss + 1) * cfg->lss;
}

/*
 * Open io, check the whole disk, and close (or hand the image over in
 * *keep).  Returns 0, or -1 with the reason in why.
 */
static int open_check(const struct vhdx_io *io, unsigned int flags,
		      const struct expect *e, uint8_t *rbuf, uint8_t *ebuf,
		      uint64_t *digest, struct vhdx_image **keep, char *why,
		      size_t whylen, struct msgs *msgs)
{
	struct vhdx_open_opts o = {
	    .flags = flags, .msg = msg_cb, .msg_opaque = msgs};
	const char *what =
	    flags & VHDX_OPEN_RDONLY ? "read-only" : "read-write";
	struct vhdx_image *img;
	struct reader rd;
	int ret, n;

	ret = vhdx_open(&img, io, &o);
	if (ret) {
		snprintf(why, whylen, "%s open failed: %d (%s)", what, ret,
			 strerror(-ret));
		return -1;
	}
	rd = (struct reader){.read = read_vhdx, .ctx = img, .img = img};
	if (vhdx_virtual_size(img) != e->m->vsize) {
		snprintf(why, whylen, "%s open: virtual size %" PRIu64, what,
			 vhdx_virtual_size(img));
		vhdx_close(img);
		return -1;
	}
	n = snprintf(why, whylen, "%s open: ", what);
	if (verify_disk(e, &rd, rbuf, ebuf, digest, why + n, whylen - n) < 0) {
		vhdx_close(img);
		return -1;
	}
	why[0] = '\0';
	if (keep)
		*keep = img;
	else if ((ret = vhdx_close(img)) != 0) {
		snprintf(why, whylen, "%s close returned %d", what, ret);
		return -1;
	}
	return 0;
}

/* ---- rounds ---- */

struct round {
	unsigned long no;
	uint64_t seed;
	const struct config *cfg;
	uint64_t vsize;
	bool closed;
	unsigned int zero_mode; /* index into zero_modes[] */
	struct mem_io *live;	/* the file as the workload left it */
	struct mem_io *durable; /* the file up to the current frontier */
	struct rec_io *rec;
	struct model m;
	long *flushes; /* record indices of the io flushes */
	size_t n_flushes;
	size_t applied;	  /* ops applied to durable */
	size_t durable_w; /* D for the current frontier */
	size_t next_fl;	  /* first vhdx_flush not yet durable */
	uint8_t *rbuf, *ebuf;
	/* results */
	unsigned long states, failed, rw_checked, qemu_checked, printed;
	unsigned long log_entries, multi_entries, rotations;
	unsigned long zeros, zeros_unmap, zeros_whole; /* vhdx_zero calls */
	unsigned long made_zero;	 /* blocks they turned ZERO */
	unsigned long zero_ops, punches; /* recorded zero ops, of them holes */
	uint64_t zero_blocks;		 /* ZERO entries in the final BAT */
	size_t compact_start;		 /* record index where it began */
	uint64_t moved, cut;		 /* by vhdx_compact: blocks, bytes */
	uint64_t reused, free_left;	 /* freemap: allocations, free bytes */
	char why[512];
};

/* What the zero callback of rec_io does, by round. */
static const struct {
	const char *name;
	bool callback;
	unsigned int modes;
} zero_modes[] = {
    {"no zero callback", false, 0},
    {"punch and zero range", true, REC_ZERO_RANGE | REC_PUNCH_HOLE},
    {"punch only", true, REC_PUNCH_HOLE},
};

#define N_ZERO_MODES (sizeof(zero_modes) / sizeof(zero_modes[0]))

/* One crash state: where it is cut and what of the window it holds. */
struct state {
	unsigned long no;
	long frontier;		   /* index of an io flush, -1: the base */
	size_t win_start, win_end; /* ops in flight */
	const char *mode;
	size_t n_applied, n_torn;
	bool shuffled;
	long crash_end; /* newest op applied (frontier if none) */
};

static void round_stats(struct round *rd)
{
	uint64_t log_off = VHDX_HEADER_SECTION_SIZE;
	unsigned long headers = 0;

	rd->flushes = xmalloc((rec_io_count(rd->rec) + 1) * sizeof(long));
	for (size_t i = 0; i < rec_io_count(rd->rec); i++) {
		const struct rec_op *op = rec_io_op(rd->rec, i);

		if (op->kind == REC_FLUSH)
			rd->flushes[rd->n_flushes++] = (long)i;
		if (op->kind == REC_ZERO) {
			rd->zero_ops++;
			rd->punches += op->unmap;
		}
		if (op->kind != REC_PWRITE)
			continue;
		if (op->off == VHDX_HEADER1_OFFSET ||
		    op->off == VHDX_HEADER2_OFFSET)
			headers++;
		else if (op->off >= log_off &&
			 op->off < log_off + rd->cfg->log_size) {
			rd->log_entries++;
			rd->multi_entries += op->len > 2 * VHDX_LOG_SECTOR_SIZE;
		}
	}
	/* updates: session start, each rotation, and the close */
	headers /= 2;
	rd->rotations =
	    headers > 1u + rd->closed ? headers - 1 - rd->closed : 0;
}

static int round_setup(struct round *rd)
{
	struct rng r = rng_for(rd->seed, 1);
	struct vhdx_image *img;
	struct vhdx_io io;
	struct wl w;
	int ret;

	rd->vsize = pick_vsize(rd->cfg, &r);
	model_init(&rd->m, rd->vsize);
	rd->live = mem_io_new();
	if (!rd->live)
		abort();
	ret = create_image(rd->live, rd->cfg, rd->vsize);
	if (ret) {
		snprintf(rd->why, sizeof(rd->why), "vhdx_create: %d", ret);
		return -1;
	}
	rd->durable = mem_copy(rd->live);
	rd->rec = rec_io_new(rd->live);
	rec_io_ops(&io, rd->rec);
	rec_io_zero_modes(rd->rec, zero_modes[rd->zero_mode].modes);
	if (!zero_modes[rd->zero_mode].callback)
		io.zero = NULL;
	ret = vhdx_open(&img, &io, NULL);
	if (ret) {
		snprintf(rd->why, sizeof(rd->why), "vhdx_open: %d", ret);
		return -1;
	}
	w = (struct wl){.img = img,
			.rec = rd->rec,
			.m = &rd->m,
			.rng = &r,
			.block_size = rd->cfg->block_size,
			.n_blocks = (rd->vsize + rd->cfg->block_size - 1) /
				    rd->cfg->block_size,
			.why = rd->why,
			.whylen = sizeof(rd->why)};
	w.used = xcalloc(w.n_blocks, 1);
	ret = run_workload(&w, rd->cfg->steps, rd->cfg->flush_pct,
			   rd->cfg->zero_pct);
	if (ret == 0 && rd->cfg->compact) {
		struct vhdx_compact_opts co = {
		    .flags = rng_pct(&r, 50) ? VHDX_COMPACT_ZEROS : 0};
		struct vhdx_compact_result cr = {0};

		/* discard about half the blocks: free places to move into */
		for (uint64_t b = 0; ret == 0 && b < w.n_blocks; b++)
			if (rng_pct(&r, 50))
				ret = do_zero_range(&w, b * w.block_size,
						    w.block_size,
						    VHDX_ZERO_UNMAP);
		if (ret == 0)
			ret = do_flush(&w);
		rd->compact_start = rec_io_count(rd->rec);
		if (ret == 0 && (ret = vhdx_compact(img, &co, &cr)) != 0)
			snprintf(rd->why, sizeof(rd->why),
				 "vhdx_compact returned %d (%s)", ret,
				 strerror(-ret));
		rd->moved = cr.blocks_moved;
		rd->cut = cr.size_before - cr.size_after;
	}
	vhdx_freemap_stats(img, &rd->free_left, &rd->reused);
	rd->zeros = w.zeros;
	rd->zeros_unmap = w.zeros_unmap;
	rd->zeros_whole = w.zeros_whole;
	rd->made_zero = w.made_zero;
	wl_free(&w);
	rd->closed = ret == 0 && rng_pct(&r, 50);
	if (!rd->closed)
		rec_io_freeze(rd->rec); /* power cut: close writes nothing */
	if (vhdx_close(img) && rd->closed) {
		snprintf(rd->why, sizeof(rd->why), "vhdx_close failed");
		return -1;
	}
	if (rd->closed)
		model_flush(&rd->m, rec_io_last_flush(rd->rec));
	round_stats(rd);
	return ret;
}

/* The file left by the workload must open and hold what was flushed. */
static int round_check_live(struct round *rd)
{
	struct expect e = {.m = &rd->m,
			   .durable =
			       rd->m.nf ? rd->m.f[rd->m.nf - 1].n_writes : 0,
			   .pending = rd->m.nw};
	struct msgs msgs = {.len = 0};
	struct vhdx_image *img = NULL;
	struct vhdx_info info;
	struct vhdx_io io;
	char why[400];

	mem_io_ops(&io, rd->live);
	if (open_check(&io, VHDX_OPEN_RDONLY, &e, rd->rbuf, rd->ebuf, NULL,
		       &img, why, sizeof(why), &msgs) < 0) {
		snprintf(rd->why, sizeof(rd->why), "final image: %s", why);
		return -1;
	}
	vhdx_get_info(img, &info);
	vhdx_close(img);
	rd->zero_blocks = info.state_count[VHDX_BLOCK_ZERO];
	if (rd->closed && info.log_replayed) {
		snprintf(rd->why, sizeof(rd->why),
			 "final image: the log is not empty after vhdx_close");
		return -1;
	}
	return 0;
}

/* A zero op on a mem_io: [off, off + len) reads as zeros, the size stays. */
static void mem_zero(struct mem_io *m, uint64_t off, uint64_t len)
{
	uint64_t end = min64(off + len, mem_io_get_size(m));

	for (; off < end; off += min64(CHUNK, end - off))
		mem_io_put(m, off, zero_chunk, (size_t)min64(CHUNK, end - off));
}

/*
 * Apply [a, b) of a pwrite or a zero op to a crash state.  A zero op never
 * extends the file: it is clipped at the end of file as the state has it.
 */
static void apply_span(struct cow_io *cow, const struct rec_op *op, uint64_t a,
		       uint64_t b)
{
	if (op->kind == REC_PWRITE) {
		cow_io_put(cow, a, op->data + (a - op->off), b - a);
		return;
	}
	b = min64(b, cow_io_get_size(cow));
	for (; a < b; a += min64(CHUNK, b - a))
		cow_io_put(cow, a, zero_chunk, (size_t)min64(CHUNK, b - a));
}

/* Apply ops up to and including index upto to the durable image. */
static void advance_durable(struct round *rd, long upto)
{
	for (; (long)rd->applied <= upto; rd->applied++) {
		const struct rec_op *op = rec_io_op(rd->rec, rd->applied);

		if (op->kind == REC_PWRITE)
			mem_io_put(rd->durable, op->off, op->data, op->len);
		else if (op->kind == REC_TRUNCATE)
			mem_io_set_size(rd->durable, op->off);
		else if (op->kind == REC_ZERO)
			mem_zero(rd->durable, op->off, op->len);
	}
	while (rd->next_fl < rd->m.nf &&
	       rd->m.f[rd->next_fl].last_flush <= upto)
		rd->durable_w = rd->m.f[rd->next_fl++].n_writes;
}

/* Apply a pwrite or zero with only some of its 4 KiB file sectors. */
static void apply_torn(struct cow_io *cow, const struct rec_op *op,
		       struct rng *r)
{
	uint64_t first = op->off / SECTOR,
		 last = (op->off + op->len - 1) / SECTOR;
	uint64_t n = last - first + 1, cut = 1 + rng_below(r, n - 1);
	unsigned int style = (unsigned int)rng_below(r, 3);

	for (uint64_t k = 0; k < n; k++) {
		uint64_t a = k ? (first + k) * SECTOR : op->off;
		uint64_t b = min64((first + k + 1) * SECTOR, op->off + op->len);
		bool keep = style == 0	 ? k < cut
			    : style == 1 ? k >= cut
					 : rng_pct(r, 50);

		if (keep)
			apply_span(cow, op, a, b);
	}
}

static bool tearable(const struct rec_op *op)
{
	return (op->kind == REC_PWRITE || op->kind == REC_ZERO) &&
	       op->off / SECTOR != (op->off + op->len - 1) / SECTOR;
}

/* Shuffle runs of pwrites and zeros; truncates keep their place. */
static void shuffle_runs(struct round *rd, size_t *sel, size_t n, struct rng *r)
{
	size_t s = 0;

	while (s < n) {
		size_t e = s;

		while (e < n &&
		       rec_io_op(rd->rec, sel[e])->kind != REC_TRUNCATE)
			e++;
		for (size_t i = e; i > s + 1; i--) {
			size_t j = s + rng_below(r, i - s), t = sel[i - 1];

			sel[i - 1] = sel[j];
			sel[j] = t;
		}
		s = e + 1;
	}
}

/* Choose the ops of the window that land; fills sel, tear. */
static size_t choose_ops(struct round *rd, struct state *st, size_t *sel,
			 uint8_t *tear, struct rng *r)
{
	size_t n = st->win_end - st->win_start, k = 0;
	unsigned int mode = (unsigned int)rng_below(r, 100);

	if (mode < 10) {
		st->mode = "none";
	} else if (mode < 20) {
		st->mode = "all";
		for (size_t i = 0; i < n; i++)
			sel[k++] = st->win_start + i;
	} else if (mode < 50) {
		size_t c = (size_t)rng_below(r, n + 1);

		st->mode = "prefix";
		for (size_t i = 0; i < c; i++)
			sel[k++] = st->win_start + i;
		if (c < n && rng_pct(r, 60)) {
			tear[k] =
			    tearable(rec_io_op(rd->rec, st->win_start + c));
			sel[k++] = st->win_start + c;
		}
	} else {
		unsigned int p = 25 * (1 + (unsigned int)rng_below(r, 3));

		st->mode = "subset";
		for (size_t i = 0; i < n; i++) {
			size_t o = st->win_start + i;

			if (!rng_pct(r, p))
				continue;
			tear[k] =
			    tearable(rec_io_op(rd->rec, o)) && rng_pct(r, 30);
			sel[k++] = o;
		}
		if (rng_pct(r, 50)) {
			st->shuffled = true;
			shuffle_runs(rd, sel, k, r);
		}
	}
	return k;
}

/* Build the file of crash state st on top of the durable image. */
static void build_crash(struct round *rd, struct state *st, struct cow_io *cow,
			struct rng *r)
{
	size_t n = st->win_end - st->win_start;
	size_t *sel = xmalloc((n + 1) * sizeof(*sel));
	uint8_t *tear = xcalloc(n + 1, 1);
	size_t k = choose_ops(rd, st, sel, tear, r);

	st->crash_end = st->frontier;
	for (size_t i = 0; i < k; i++) {
		const struct rec_op *op = rec_io_op(rd->rec, sel[i]);

		if ((long)sel[i] > st->crash_end)
			st->crash_end = (long)sel[i];
		if (op->kind == REC_TRUNCATE)
			cow_io_set_size(cow, op->off);
		else if (tear[i])
			apply_torn(cow, op, r);
		else
			apply_span(cow, op, op->off, op->off + op->len);
	}
	st->n_applied = k;
	for (size_t i = 0; i < k; i++)
		st->n_torn += tear[i];
	free(sel);
	free(tear);
}

/* ---- qemu-img as a second opinion ---- */

static bool have_qemu;
static unsigned long qemu_used; /* under out_lock */

static bool qemu_slot(void)
{
	bool ok;

	pthread_mutex_lock(&out_lock);
	ok = have_qemu && qemu_used < opt.qemu;
	if (ok)
		qemu_used++;
	pthread_mutex_unlock(&out_lock);
	return ok;
}

struct raw_file {
	FILE *f;
};

static long read_raw(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct raw_file *rf = ctx;

	if (fseeko(rf->f, (off_t)off, SEEK_SET) != 0)
		return -EIO;
	return (long)fread(buf, 1, len, rf->f);
}

static int run_cmd(const char *cmd)
{
	int st = system(cmd);

	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A new empty file in $TMPDIR (or /tmp) named after stem: its fd, or -1. */
static int tmp_file(char *path, size_t len, const char *stem)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(path, len, "%s/%s.XXXXXX",
		 tmp && *tmp && !strchr(tmp, '\'') ? tmp : "/tmp", stem);
	return mkstemp(path);
}

/*
 * qemu-img check of img (with -r all: replaying its log), silenced and
 * limited to QEMU_LIMIT seconds: its exit status, 124 if it ran out of time.
 * (qemu-img 7.2 looped forever on some crash states, see journal.c.)
 */
#define QEMU_LIMIT 120

static int qemu_img_check(const char *img, bool repair)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
		 "timeout %d qemu-img check -q %s-f vhdx '%s' >/dev/null 2>&1",
		 QEMU_LIMIT, repair ? "-r all " : "", img);
	return run_cmd(cmd);
}

/*
 * Let qemu-img replay the log of the crash state (check -r all opens it
 * read-write), check it, convert it to raw, and check the raw disk.  QEMU
 * refuses images whose logical sector is not 512 bytes (ENOTSUP).
 */
static int qemu_check(struct round *rd, struct cow_io *cow,
		      const struct expect *e, char *why, size_t whylen)
{
	char img[256], cmd[1024], raw[300];
	struct raw_file rf = {NULL};
	struct reader rdr = {.read = read_raw, .ctx = &rf};
	int fd, st, ret = -1, n;

	fd = tmp_file(img, sizeof(img), "test_crash");
	if (fd < 0) {
		snprintf(why, whylen, "mkstemp: %s", strerror(errno));
		return -1;
	}
	close(fd);
	snprintf(raw, sizeof(raw), "%s.raw", img);
	if (cow_io_save(cow, img) < 0) {
		snprintf(why, whylen, "saving the image failed");
		goto out;
	}
	st = qemu_img_check(img, true);
	if (st != 0) {
		snprintf(why, whylen, "qemu-img check -r all exited with %d",
			 st);
		goto out;
	}
	snprintf(cmd, sizeof(cmd),
		 "qemu-img convert -f vhdx -O raw '%s' '%s' >/dev/null 2>&1",
		 img, raw);
	st = run_cmd(cmd);
	if (st != 0) {
		snprintf(why, whylen, "qemu-img convert exited with %d", st);
		goto out;
	}
	rf.f = fopen(raw, "rb");
	if (!rf.f) {
		snprintf(why, whylen, "%s: %s", raw, strerror(errno));
		goto out;
	}
	n = snprintf(why, whylen, "qemu-img's view: ");
	ret =
	    verify_disk(e, &rdr, rd->rbuf, rd->ebuf, NULL, why + n, whylen - n);
	fclose(rf.f);
out:
	if (ret == 0 || opt.state < 0) {
		unlink(img);
		unlink(raw);
	} else {
		out("qemu-img input kept in %s", img);
	}
	return ret;
}

/* ---- checking one crash state ---- */

/* Recover read-write, check, write and flush once more, close, reopen. */
static int rw_check(struct round *rd, struct cow_io *cow,
		    const struct expect *e, uint64_t ro_digest, struct rng *r,
		    char *why, size_t whylen, struct msgs *msgs)
{
	struct expect e2 = *e;
	struct vhdx_image *img;
	struct vhdx_info info;
	struct vhdx_io io;
	uint64_t digest = 0;
	struct wr extra;
	long ret;

	cow_io_ops(&io, cow);
	if (open_check(&io, 0, e, rd->rbuf, rd->ebuf, &digest, &img, why,
		       whylen, msgs) < 0)
		return -1;
	if (digest != ro_digest) {
		snprintf(why, whylen,
			 "the read-write open (replay into the "
			 "file) shows other data than the "
			 "read-only open (replay in memory)");
		vhdx_close(img);
		return -1;
	}
	extra = (struct wr){.off = rng_below(r, rd->vsize)};
	if (rng_pct(r, 25)) {
		/* a vhdx_zero: often from a block boundary over whole ones */
		uint64_t bs = rd->cfg->block_size;

		if (rng_pct(r, 60))
			extra.off -= extra.off % bs;
		extra.len =
		    min64(1 + rng_below(r, 3 * bs), rd->vsize - extra.off);
		extra.zero = true;
		ret = vhdx_zero(img, extra.off, extra.len,
				rng_pct(r, 50) ? VHDX_ZERO_UNMAP : 0);
		if (ret == 0)
			ret = (long)extra.len;
	} else {
		extra.len =
		    min64(1 + rng_below(r, 256 * KiB), rd->vsize - extra.off);
		extra.shift = (uint32_t)rng_next(r);
		ret = vhdx_write(img, pat_at(extra.off, extra.shift), extra.len,
				 extra.off);
	}
	if (ret != (long)extra.len || vhdx_flush(img) != 0) {
		snprintf(why, whylen, "%s or flush after recovery failed",
			 extra.zero ? "zero" : "write");
		vhdx_close(img);
		return -1;
	}
	ret = vhdx_close(img);
	if (ret) {
		snprintf(why, whylen, "close after recovery returned %ld", ret);
		return -1;
	}
	e2.extra = &extra;
	if (open_check(&io, VHDX_OPEN_RDONLY, &e2, rd->rbuf, rd->ebuf, NULL,
		       &img, why, whylen, msgs) < 0)
		return -1;
	vhdx_get_info(img, &info);
	vhdx_close(img);
	if (info.log_replayed) {
		snprintf(why, whylen,
			 "the log is not empty after recovery, "
			 "a write and a clean close");
		return -1;
	}
	return 0;
}

static int check_state(struct round *rd, struct state *st, char *why,
		       size_t whylen, struct msgs *msgs)
{
	struct rng r = rng_for(rd->seed, 0x5157a7e0ull + st->no);
	struct cow_io *cow = cow_io_new(rd->durable);
	struct expect e = {.m = &rd->m, .durable = rd->durable_w};
	uint64_t digest = 0;
	struct vhdx_io io;
	int ret;

	if (!cow)
		abort();
	build_crash(rd, st, cow, &r);
	e.pending = model_started(&rd->m, st->crash_end);
	if (opt.save && opt.state >= 0) {
		ret = cow_io_save(cow, opt.save);
		out("crash state saved to %s (%d)", opt.save, ret);
	}
	cow_io_ops(&io, cow);
	ret = open_check(&io, VHDX_OPEN_RDONLY, &e, rd->rbuf, rd->ebuf, &digest,
			 NULL, why, whylen, msgs);
	if (ret == 0 && cow_io_modifications(cow)) {
		snprintf(why, whylen, "a read-only open modified the file");
		ret = -1;
	}
	if (ret == 0 && rd->cfg->lss == 512 && st->no % 7 == 3 && qemu_slot()) {
		ret = qemu_check(rd, cow, &e, why, whylen);
		rd->qemu_checked++;
	}
	if (ret == 0 && (st->no % 10 == 0 || opt.state >= 0)) {
		ret = rw_check(rd, cow, &e, digest, &r, why, whylen, msgs);
		rd->rw_checked++;
	}
	cow_io_free(cow);
	return ret;
}

static void report_state(struct round *rd, const struct state *st,
			 const char *why, const struct msgs *msgs)
{
	out("FAIL: round %lu (%s, %" PRIu64 " bytes) state %lu: %s", rd->no,
	    rd->cfg->name, rd->vsize, st->no, why);
	out("  cut after io flush at op %ld of %zu; in flight: ops %zu..%zu; "
	    "%s: %zu applied, %zu torn%s; durable writes %zu of %zu",
	    st->frontier, rec_io_count(rd->rec), st->win_start,
	    st->win_end ? st->win_end - 1 : 0, st->mode, st->n_applied,
	    st->n_torn, st->shuffled ? ", reordered" : "", rd->durable_w,
	    rd->m.nw);
	if (msgs->len) {
		pthread_mutex_lock(&out_lock);
		fputs("#   library messages:\n", stdout);
		fputs(msgs->text, stdout);
		pthread_mutex_unlock(&out_lock);
	}
	out("  reproduce: test_crash --seed %" PRIu64 " --states %lu --round "
	    "%lu --state %lu [--save FILE]",
	    opt.seed, opt.states, rd->no, st->no);
}

static bool is_header_write(const struct rec_op *op)
{
	return op->kind == REC_PWRITE && (op->off == VHDX_HEADER1_OFFSET ||
					  op->off == VHDX_HEADER2_OFFSET);
}

/* Frontier k is next to a header update (session, rotation, close). */
static bool frontier_special(struct round *rd, size_t k)
{
	long f = k ? rd->flushes[k - 1] : -1;
	size_t end =
	    k < rd->n_flushes ? (size_t)rd->flushes[k] : rec_io_count(rd->rec);

	if (f > 0 && is_header_write(rec_io_op(rd->rec, (size_t)f - 1)))
		return true;
	for (size_t i = (size_t)(f + 1); i < end; i++)
		if (is_header_write(rec_io_op(rd->rec, i)))
			return true;
	return false;
}

/*
 * How many states each frontier gets: as evenly as possible, the
 * frontiers around header updates first, the others in random order.
 */
static void plan_counts(struct round *rd, unsigned long n_states, uint32_t *cnt,
			size_t n_fr, struct rng *r)
{
	size_t *idx = xmalloc(n_fr * sizeof(*idx)), n_special = 0, k0 = 0;

	/* compaction rounds: only the states cut during vhdx_compact */
	while (rd->cfg->compact && k0 + 1 < n_fr &&
	       (size_t)rd->flushes[k0] <= rd->compact_start)
		k0++;
	memset(cnt, 0, n_fr * sizeof(*cnt));
	cnt += k0;
	n_fr -= k0;
	for (size_t i = 0; i < n_fr; i++)
		idx[i] = i;
	for (size_t i = n_fr; i > 1; i--) {
		size_t j = rng_below(r, i), t = idx[i - 1];

		idx[i - 1] = idx[j];
		idx[j] = t;
	}
	for (size_t i = 0; i < n_fr; i++) {
		if (frontier_special(rd, idx[i] + k0)) {
			size_t t = idx[n_special];

			idx[n_special++] = idx[i];
			idx[i] = t;
		}
	}
	for (size_t i = 0; i < n_fr; i++)
		cnt[idx[i]] =
		    (uint32_t)(n_states / n_fr + (i < n_states % n_fr ? 1 : 0));
	free(idx);
}

static void run_states(struct round *rd, unsigned long n_states)
{
	struct rng r = rng_for(rd->seed, 2);
	size_t n_fr = rd->n_flushes + 1, n_ops = rec_io_count(rd->rec);
	uint32_t *cnt = xcalloc(n_fr, sizeof(*cnt));
	unsigned long no = 0;
	char why[1024];

	plan_counts(rd, n_states, cnt, n_fr, &r);
	for (size_t k = 0; k < n_fr; k++) {
		long f = k ? rd->flushes[k - 1] : -1;

		if (!cnt[k])
			continue;
		advance_durable(rd, f);
		for (uint32_t i = 0; i < cnt[k]; i++, no++) {
			struct state st = {
			    .no = no,
			    .frontier = f,
			    .win_start = (size_t)(f + 1),
			    .win_end = k < rd->n_flushes
					   ? (size_t)rd->flushes[k]
					   : n_ops,
			};
			struct msgs msgs = {.len = 0};

			if (opt.state >= 0 && (long)no != opt.state)
				continue;
			rd->states++;
			if (check_state(rd, &st, why, sizeof(why), &msgs) == 0)
				continue;
			rd->failed++;
			if (rd->printed++ < MAX_FAIL_PRINTS || opt.verbose)
				report_state(rd, &st, why, &msgs);
		}
	}
	free(cnt);
}

static void round_free(struct round *rd)
{
	mem_io_free(rd->live);
	mem_io_free(rd->durable);
	rec_io_free(rd->rec);
	model_free(&rd->m);
	free(rd->flushes);
	free(rd->rbuf);
	free(rd->ebuf);
}

/* ---- running the rounds on several threads ---- */

struct totals {
	pthread_mutex_t lock;
	unsigned long next_round, n_rounds, per_round;
	unsigned long states, failed, rw_checked, qemu_checked;
	unsigned long rounds_failed;
	unsigned long rotating_rounds, rotating_without;
	unsigned long log_entries, rotations;
	unsigned long zeros, zeros_whole, made_zero, zero_ops, punches;
	uint64_t zero_blocks;
	/* rounds that placed blocks in freed places, and their states */
	unsigned long reuse_rounds, reuse_states;
	uint64_t reused;
	/* compaction rounds: states cut during vhdx_compact, blocks moved */
	unsigned long compact_states;
	uint64_t moved, cut;
};

/* The configurations the rounds take turns at. */
static const struct config *cur_cfgs = configs;
static size_t cur_n_cfgs = N_CONFIGS;

static struct totals tot = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void run_round(unsigned long no)
{
	struct round rd = {.no = no};
	double t0 = now();
	bool ok;

	rd.seed = mix64(opt.seed ^ mix64(no + 1));
	rd.cfg = &cur_cfgs[no % cur_n_cfgs];
	rd.zero_mode = (unsigned int)((no + no / cur_n_cfgs) % N_ZERO_MODES);
	rd.rbuf = xmalloc(CHUNK);
	rd.ebuf = xmalloc(CHUNK);
	ok = round_setup(&rd) == 0 && round_check_live(&rd) == 0;
	if (!ok)
		out("FAIL: round %lu (%s, %" PRIu64 " bytes): %s; reproduce: "
		    "test_crash --seed %" PRIu64 " --round %lu",
		    no, rd.cfg->name, rd.vsize, rd.why, opt.seed, no);
	else
		run_states(&rd, tot.per_round);
	if (ok || opt.verbose)
		out("round %lu: %s, %" PRIu64 " MiB%s: %zu writes (%lu of "
		    "them vhdx_zero: %lu unmap, %lu with whole blocks, %lu "
		    "blocks made ZERO; %s: %lu zero ops, %lu holes; %" PRIu64
		    " ZERO blocks at the end), %zu flushes, %zu io ops (%zu io "
		    "flushes), %lu log entries (%lu of several BAT sectors), "
		    "%lu log rotations, %s; %" PRIu64 " blocks placed in "
		    "freed places; compact: %" PRIu64 " moved, %" PRIu64
		    " bytes cut; %lu states, %lu failed (%.1f s)",
		    no, rd.cfg->name, (uint64_t)(rd.vsize / MiB),
		    rd.vsize % MiB ? "+" : "", rd.m.nw, rd.zeros,
		    rd.zeros_unmap, rd.zeros_whole, rd.made_zero,
		    zero_modes[rd.zero_mode].name, rd.zero_ops, rd.punches,
		    rd.zero_blocks, rd.m.nf, rd.rec ? rec_io_count(rd.rec) : 0,
		    rd.n_flushes, rd.log_entries, rd.multi_entries,
		    rd.rotations, rd.closed ? "closed" : "crashed", rd.reused,
		    rd.moved, rd.cut, rd.states, rd.failed, now() - t0);
	pthread_mutex_lock(&tot.lock);
	tot.states += rd.states;
	tot.failed += rd.failed;
	tot.rw_checked += rd.rw_checked;
	tot.qemu_checked += rd.qemu_checked;
	tot.rounds_failed += !ok;
	tot.log_entries += rd.log_entries;
	tot.rotations += rd.rotations;
	tot.zeros += rd.zeros;
	tot.zeros_whole += rd.zeros_whole;
	tot.made_zero += rd.made_zero;
	tot.zero_ops += rd.zero_ops;
	tot.punches += rd.punches;
	tot.zero_blocks += rd.zero_blocks;
	tot.reused += rd.reused;
	if (rd.reused) {
		tot.reuse_rounds++;
		tot.reuse_states += rd.states;
	}
	if (rd.cfg->compact)
		tot.compact_states += rd.states;
	tot.moved += rd.moved;
	tot.cut += rd.cut;
	if (ok && rd.cfg->steps == 0 && rd.cfg->type == VHDX_TYPE_DYNAMIC) {
		tot.rotating_rounds++;
		tot.rotating_without += rd.rotations == 0;
	}
	pthread_mutex_unlock(&tot.lock);
	round_free(&rd);
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		unsigned long no;

		pthread_mutex_lock(&tot.lock);
		no = tot.next_round++;
		pthread_mutex_unlock(&tot.lock);
		if (no >= tot.n_rounds)
			return NULL;
		if (opt.round >= 0 && (long)no != opt.round)
			continue;
		run_round(no);
	}
}

/* Reset the totals and run the rounds of cfgs for about n_states states. */
static void run_rounds(const struct config *cfgs, size_t n_cfgs,
		       unsigned long n_states)
{
	pthread_t th[64];
	unsigned int jobs = opt.jobs;
	double t0 = now();

	pthread_mutex_lock(&tot.lock);
	memset((char *)&tot + sizeof(tot.lock), 0,
	       sizeof(tot) - sizeof(tot.lock));
	pthread_mutex_unlock(&tot.lock);
	pthread_mutex_lock(&out_lock);
	qemu_used = 0; /* each set of rounds gets its qemu-img checks */
	pthread_mutex_unlock(&out_lock);
	cur_cfgs = cfgs;
	cur_n_cfgs = n_cfgs;
	tot.n_rounds = n_states / 600;
	if (tot.n_rounds < n_cfgs)
		tot.n_rounds = n_cfgs;
	tot.per_round = (n_states + tot.n_rounds - 1) / tot.n_rounds;
	if (opt.round >= 0) {
		if ((unsigned long)opt.round >= tot.n_rounds)
			tot.n_rounds = (unsigned long)opt.round + 1;
		jobs = 1;
	}
	out("%lu rounds of %lu crash states on %u threads", tot.n_rounds,
	    tot.per_round, jobs);
	for (unsigned int i = 0; i < jobs; i++)
		if (pthread_create(&th[i], NULL, worker, NULL) != 0)
			abort();
	for (unsigned int i = 0; i < jobs; i++)
		pthread_join(th[i], NULL);
	out("%lu states checked (%lu also recovered read-write, %lu also by "
	    "qemu-img%s), %lu failed; %lu log entries, %lu log rotations; "
	    "%.1f s",
	    tot.states, tot.rw_checked, tot.qemu_checked,
	    have_qemu  ? ""
	    : opt.qemu ? ": qemu-img not found, skipped"
		       : ": disabled",
	    tot.failed, tot.log_entries, tot.rotations, now() - t0);
	out("%lu vhdx_zero calls (%lu with whole blocks, %lu blocks made "
	    "ZERO), %lu zero ops recorded (%lu holes punched), %" PRIu64
	    " ZERO blocks in the final images",
	    tot.zeros, tot.zeros_whole, tot.made_zero, tot.zero_ops,
	    tot.punches, tot.zero_blocks);
	out("%" PRIu64 " blocks placed in freed places (%lu rounds, %lu "
	    "states); %lu states during compaction, %" PRIu64
	    " blocks moved, %" PRIu64 " bytes cut",
	    tot.reused, tot.reuse_rounds, tot.reuse_states, tot.compact_states,
	    tot.moved, tot.cut);
	pthread_mutex_lock(&out_lock);
	all_states += tot.states;
	all_failed += tot.failed;
	pthread_mutex_unlock(&out_lock);
}

TEST(crash_states)
{
	run_rounds(configs, N_CONFIGS, opt.states);
	CHECK_EQ_U64(tot.failed, 0);
	CHECK_EQ_U64(tot.rounds_failed, 0);
	/*
	 * The harness itself: the log must have been made to rotate, blocks
	 * must have become ZERO, and the zero callback must have been used.
	 */
	if (opt.round < 0) {
		CHECK_EQ_U64(tot.rotating_without, 0);
		CHECK(tot.made_zero > 0 && tot.zero_blocks > 0);
		CHECK(tot.punches > 0);
		CHECK(tot.zero_ops > tot.punches);
	}
	if (opt.state < 0)
		CHECK(tot.states >= (opt.round >= 0 ? 1 : opt.states));
}

/*
 * Discard and allocation into freed places (fmt §19.2).  With
 * --unsafe-reuse the library frees places at once, before the BAT change
 * that freed them is durable: this test must then fail.
 */
TEST(reuse_states)
{
	vhdx_freemap_unsafe_reuse = opt.unsafe_reuse;
	run_rounds(reuse_configs,
		   sizeof(reuse_configs) / sizeof(*reuse_configs),
		   opt.reuse_states);
	vhdx_freemap_unsafe_reuse = false;
	if (opt.unsafe_reuse)
		out("--unsafe-reuse: %lu of %lu states failed (expected: "
		    "some)",
		    tot.failed, tot.states);
	CHECK_EQ_U64(tot.failed, 0);
	CHECK_EQ_U64(tot.rounds_failed, 0);
	if (opt.round < 0) {
		/* every round must have placed blocks in freed places */
		CHECK_EQ_U64(tot.reuse_rounds, tot.n_rounds);
		CHECK(tot.reuse_states >= opt.reuse_states);
	}
}

/* Crash states cut while vhdx_compact moves blocks and cuts the file. */
TEST(compact_states)
{
	run_rounds(compact_configs,
		   sizeof(compact_configs) / sizeof(*compact_configs),
		   opt.compact_states);
	CHECK_EQ_U64(tot.failed, 0);
	CHECK_EQ_U64(tot.rounds_failed, 0);
	if (opt.round < 0) {
		CHECK(tot.moved > 0 && tot.cut > 0);
		CHECK(tot.compact_states >= opt.compact_states);
	}
}

/* ---- fault injection during the workload ---- */

enum api { API_WRITE, API_ZERO, API_FLUSH, API_CLOSE };

struct fault_run {
	const struct config *cfg;
	uint64_t seed;
	enum rec_kind kind;
	unsigned long n;
	int err;
	unsigned int zero_mode; /* index into zero_modes[] */
	/* state */
	struct mem_io *file;
	struct rec_io *rec;
	struct vhdx_image *img;
	struct model m;
	struct rng r;
	struct wl w;
	uint64_t data_start; /* payload area: everything below is metadata */
	size_t durable;	     /* writes before the last successful flush */
	bool fired, meta, closed_ok;
	char why[512];
};

static bool fault_is_meta(const struct fault_run *fr, const struct rec_fault *f,
			  enum api api, size_t rs)
{
	switch (f->kind) {
	case REC_PWRITE:
		return f->off < fr->data_start;
	case REC_FLUSH:
		/* the first flush of vhdx_flush/close is the data flush */
		return !(api >= API_FLUSH && f->rec_pos == rs);
	default:
		/* truncate: space for a new block; zero: of a payload block */
		return false;
	}
}

static void fault_check_ret(struct fault_run *fr, const struct rec_fault *f,
			    enum api api, long ret, uint64_t len)
{
	if (api == API_WRITE) {
		if (!CHECK(ret == -f->err || (ret > 0 && (uint64_t)ret < len)))
			unit_note("write returned %ld, injected %d", ret,
				  -f->err);
	} else if (api == API_ZERO) {
		/* giving back the space of a whole block is best effort */
		if (!CHECK(ret == -f->err || (ret == 0 && f->kind == REC_ZERO &&
					      f->len == fr->cfg->block_size)))
			unit_note("zero returned %ld, injected %d", ret,
				  -f->err);
	} else {
		CHECK_EQ_INT(ret, -f->err);
	}
}

/* After the fault: the image must have gone read-only, or still work. */
static void fault_aftermath(struct fault_run *fr)
{
	uint8_t b[512] = {0};

	if (fr->meta) {
		CHECK(vhdx_is_read_only(fr->img));
		CHECK_EQ_INT(vhdx_write(fr->img, b, sizeof(b), 0), -EROFS);
		CHECK(vhdx_flush(fr->img) < 0);
		return;
	}
	if (vhdx_is_read_only(fr->img))
		return;
	/* a one-off data error: the image goes on working */
	if (CHECK(do_write(&fr->w) == 0) && CHECK(do_flush(&fr->w) == 0))
		fr->durable = fr->m.nw;
}

/* Perform one API call; returns true when the injected fault fired. */
static bool fault_call(struct fault_run *fr, enum api api)
{
	size_t rs = rec_io_count(fr->rec);
	uint64_t off = 0, len = 0;
	unsigned int flags = 0;
	uint32_t shift = 0;
	struct rec_fault f;
	long ret;

	if (api == API_WRITE) {
		shift = (uint32_t)rng_next(&fr->r);
		pick_next_write(&fr->w, &off, &len);
		len = min64(len, fr->m.vsize - off);
		ret = vhdx_write(fr->img, pat_at(off, shift), len, off);
	} else if (api == API_ZERO) {
		pick_zero(&fr->w, &off, &len, &flags);
		len = min64(len, fr->m.vsize - off);
		ret = vhdx_zero(fr->img, off, len, flags);
	} else if (api == API_FLUSH) {
		ret = vhdx_flush(fr->img);
	} else {
		ret = vhdx_close(fr->img);
		fr->img = NULL;
	}
	if (!rec_io_fault_fired(fr->rec, &f)) {
		CHECK_EQ_INT(ret, api == API_WRITE ? (long)len : 0);
		if (api == API_WRITE) {
			model_write(&fr->m, off, len, shift, rs, false);
			mark_used(&fr->w, off, len);
		} else if (api == API_ZERO) {
			model_zero(&fr->m, off, len, rs, false);
			note_zero(&fr->w, off, len, flags);
		} else {
			fr->durable = fr->m.nw;
			fr->w.n_fresh = 0;
		}
		return false;
	}
	fr->fired = true;
	fr->meta = fault_is_meta(fr, &f, api, rs);
	fault_check_ret(fr, &f, api, ret, len);
	if (api == API_WRITE)
		model_write(&fr->m, off, len, shift, rs, true);
	else if (api == API_ZERO)
		model_zero(&fr->m, off, len, rs, ret != 0);
	if (fr->img)
		fault_aftermath(fr);
	return true;
}

static unsigned int fault_notes; /* failures described so far */

static const char *const rec_kind_name[REC_KINDS] = {"pwrite", "flush",
						     "truncate", "zero"};

/* Check the file as the failed session left it. */
static void fault_check_file(struct fault_run *fr)
{
	struct expect e = {
	    .m = &fr->m, .durable = fr->durable, .pending = fr->m.nw};
	uint8_t *rbuf = xmalloc(CHUNK), *ebuf = xmalloc(CHUNK);
	struct cow_io *cow = cow_io_new(fr->file);
	struct msgs msgs = {.len = 0};
	struct vhdx_io io;
	bool ok;

	cow_io_ops(&io, cow);
	ok = open_check(&io, VHDX_OPEN_RDONLY, &e, rbuf, ebuf, NULL, NULL,
			fr->why, sizeof(fr->why), &msgs) == 0 &&
	     open_check(&io, 0, &e, rbuf, ebuf, NULL, NULL, fr->why,
			sizeof(fr->why), &msgs) == 0 &&
	     open_check(&io, VHDX_OPEN_RDONLY, &e, rbuf, ebuf, NULL, NULL,
			fr->why, sizeof(fr->why), &msgs) == 0;
	if (!CHECK(ok) && fault_notes++ < 10) {
		unit_note("fault %s #%lu (%s) in %s, seed %" PRIu64 ": %s",
			  rec_kind_name[fr->kind], fr->n, strerror(fr->err),
			  fr->cfg->name, fr->seed, fr->why);
		if (msgs.len)
			fputs(msgs.text, stdout);
	}
	cow_io_free(cow);
	free(rbuf);
	free(ebuf);
}

/*
 * Run the short workload with fault n of kind armed (n = 0: none).
 * counts (may be NULL) receives the calls of each kind made.
 */
static void fault_case(struct fault_run *fr, unsigned long *counts)
{
	uint64_t nb = 0;
	struct vhdx_io io;
	bool stop = false;

	fr->r = rng_for(fr->seed, 3);
	model_init(&fr->m, pick_vsize(fr->cfg, &fr->r));
	fr->file = mem_io_new();
	if (!fr->file || create_image(fr->file, fr->cfg, fr->m.vsize) != 0)
		abort();
	nb = (fr->m.vsize + fr->cfg->block_size - 1) / fr->cfg->block_size;
	fr->data_start = mem_io_get_size(fr->file);
	if (fr->cfg->type == VHDX_TYPE_FIXED)
		fr->data_start -= nb * fr->cfg->block_size;
	fr->rec = rec_io_new(fr->file);
	rec_io_ops(&io, fr->rec);
	rec_io_zero_modes(fr->rec, zero_modes[fr->zero_mode].modes);
	if (!zero_modes[fr->zero_mode].callback)
		io.zero = NULL;
	if (vhdx_open(&fr->img, &io, NULL) != 0)
		abort();
	fr->w = (struct wl){.img = fr->img,
			    .rec = fr->rec,
			    .m = &fr->m,
			    .rng = &fr->r,
			    .block_size = fr->cfg->block_size,
			    .n_blocks = nb,
			    .used = xcalloc(nb, 1),
			    .why = fr->why,
			    .whylen = sizeof(fr->why)};
	if (fr->n)
		rec_io_fail(fr->rec, fr->kind, fr->n, fr->err);
	for (unsigned int s = 0; s < fr->cfg->steps && !stop; s++) {
		bool zero = !fr->w.z_follow && rng_pct(&fr->r, ZERO_PCT);

		stop = fault_call(fr, zero ? API_ZERO : API_WRITE);
		if (!stop && rng_pct(&fr->r, fr->cfg->flush_pct))
			stop = fault_call(fr, API_FLUSH);
	}
	if (fr->img) {
		if (fr->fired) {
			int ret = vhdx_close(fr->img);

			if (fr->meta)
				CHECK(ret < 0);
			else if (!ret)
				fr->durable = fr->m.nw;
		} else {
			fault_call(fr, API_CLOSE);
		}
	}
	if (counts)
		for (int k = 0; k < REC_KINDS; k++)
			counts[k] = rec_io_calls(fr->rec, (enum rec_kind)k);
	if (fr->n && CHECK(fr->fired))
		fault_check_file(fr);
	wl_free(&fr->w);
	rec_io_free(fr->rec);
	mem_io_free(fr->file);
	model_free(&fr->m);
}

static const struct config fault_configs[] = {
    {"dynamic-1M-512", VHDX_TYPE_DYNAMIC, MiB, 512, 20, 24, MiB, 40, 35, 0,
     false},
    {"fixed-1M-4096", VHDX_TYPE_FIXED, MiB, 4096, 12, 16, MiB, 30, 35, 0,
     false},
    {"dynamic-2M-4096", VHDX_TYPE_DYNAMIC, 2 * MiB, 4096, 20, 24, MiB, 30, 35,
     0, false},
};

/* zero_modes[] of each: the fixed image zeroes ranges, never punches */
static const unsigned int fault_zero_modes[] = {2, 1, 0};

TEST(fault_injection)
{
	unsigned long cases = 0, meta = 0, zeros = 0;
	double t0 = now();

	for (size_t c = 0; c < sizeof(fault_configs) / sizeof(*fault_configs);
	     c++) {
		uint64_t seed = mix64(opt.seed + 0xfa17 + c);
		unsigned int zm = fault_zero_modes[c];
		struct fault_run dry = {
		    .cfg = &fault_configs[c], .seed = seed, .zero_mode = zm};
		unsigned long counts[REC_KINDS];

		fault_case(&dry, counts);
		zeros += counts[REC_ZERO];
		for (int k = 0; k < REC_KINDS; k++) {
			for (unsigned long n = 1; n <= counts[k]; n++) {
				struct fault_run fr = {.cfg = &fault_configs[c],
						       .seed = seed,
						       .kind = (enum rec_kind)k,
						       .n = n,
						       .err =
							   n % 2 ? EIO : ENOSPC,
						       .zero_mode = zm};
				int before = unit.cur_failed;

				fault_case(&fr, NULL);
				cases++;
				meta += fr.meta;
				if (!before && unit.cur_failed)
					unit_note("first failure: %s, %s #%lu",
						  fault_configs[c].name,
						  rec_kind_name[k], n);
			}
		}
	}
	unit_note("%lu faults injected (%lu into metadata writes, %lu into "
		  "zero ops), %.1f s",
		  cases, meta, zeros, now() - t0);
}

/* ---- fault injection during log replay (read-write open) ---- */

/* A file with a log to replay: written, flushed, and cut off. */
static struct mem_io *dirty_image(struct model *m, size_t *durable)
{
	const struct config *cfg = &fault_configs[0];
	struct mem_io *file = mem_io_new();
	struct rng r = rng_for(opt.seed, 4);
	struct vhdx_image *img;
	struct rec_io *rec;
	struct vhdx_io io;
	char why[256];
	struct wl w;

	model_init(m, pick_vsize(cfg, &r));
	if (!file || create_image(file, cfg, m->vsize) != 0)
		abort();
	rec = rec_io_new(file);
	rec_io_ops(&io, rec);
	if (vhdx_open(&img, &io, NULL) != 0)
		abort();
	w = (struct wl){.img = img,
			.rec = rec,
			.m = m,
			.rng = &r,
			.block_size = cfg->block_size,
			.n_blocks = (m->vsize + MiB - 1) / MiB,
			.why = why,
			.whylen = sizeof(why)};
	w.used = xcalloc(w.n_blocks, 1);
	for (int i = 0; i < 12; i++)
		CHECK(do_write(&w) == 0);
	/* the replay also makes a block ZERO whose space became a hole */
	CHECK(do_zero_range(&w, m->w[0].off / MiB * MiB, MiB,
			    VHDX_ZERO_UNMAP) == 0);
	CHECK(do_flush(&w) == 0);
	*durable = m->nw;
	CHECK(do_write(&w) == 0);
	rec_io_freeze(rec);
	vhdx_close(img);
	wl_free(&w);
	rec_io_free(rec);
	return file;
}

TEST(replay_faults)
{
	struct expect e = {.pending = 0};
	uint8_t *rbuf = xmalloc(CHUNK), *ebuf = xmalloc(CHUNK);
	struct mem_io_counts cnt;
	struct msgs msgs = {.len = 0};
	unsigned long cases = 0;
	struct vhdx_image *img;
	struct vhdx_info info;
	struct mem_io *base, *m;
	struct vhdx_io io;
	struct model model;
	char why[512];

	base = dirty_image(&model, &e.durable);
	e.m = &model;
	e.pending = model.nw;
	/* dry run: what a replaying open writes */
	m = mem_copy(base);
	mem_io_ops(&io, m);
	mem_io_reset_counts(m);
	if (!CHECK_EQ_INT(vhdx_open(&img, &io, NULL), 0)) {
		mem_io_free(m);
		goto out;
	}
	mem_io_get_counts(m, &cnt);
	vhdx_get_info(img, &info);
	CHECK(info.log_replayed);
	vhdx_close(img);
	mem_io_free(m);
	for (int k = 0; k < 2; k++) {
		unsigned long calls = k ? cnt.flush : cnt.pwrite;

		for (unsigned long n = 1; n <= calls; n++) {
			int err = n % 2 ? EIO : ENOSPC;

			m = mem_copy(base);
			mem_io_ops(&io, m);
			if (k)
				mem_io_fail_flush(m, n, err);
			else
				mem_io_fail_pwrite(m, n, err);
			img = NULL;
			CHECK_EQ_INT(vhdx_open(&img, &io, NULL), -err);
			vhdx_close(img);
			mem_io_fail_flush(m, 0, 0);
			mem_io_fail_pwrite(m, 0, 0);
			if (!CHECK(open_check(&io, VHDX_OPEN_RDONLY, &e, rbuf,
					      ebuf, NULL, NULL, why,
					      sizeof(why), &msgs) == 0 &&
				   open_check(&io, 0, &e, rbuf, ebuf, NULL,
					      NULL, why, sizeof(why),
					      &msgs) == 0 &&
				   open_check(&io, VHDX_OPEN_RDONLY, &e, rbuf,
					      ebuf, NULL, NULL, why,
					      sizeof(why), &msgs) == 0) &&
			    fault_notes++ < 10)
				unit_note("replay %s #%lu failing: %s",
					  k ? "flush" : "pwrite", n, why);
			mem_io_free(m);
			cases++;
		}
	}
	unit_note("%lu faults injected into log replay (%lu pwrites, %lu "
		  "flushes per replay)",
		  cases, cnt.pwrite, cnt.flush);
out:
	mem_io_free(base);
	model_free(&model);
	free(rbuf);
	free(ebuf);
}

/* ---- main ---- */

static int parse_ul(const char *s, unsigned long *v)
{
	char *end;

	errno = 0;
	*v = strtoul(s, &end, 0);
	return errno || !*s || *end ? -1 : 0;
}

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		unsigned long v = 0;
		bool has_val = i + 1 < argc;

		if (!strcmp(a, "--verbose")) {
			opt.verbose = true;
			continue;
		}
		if (!strcmp(a, "--unsafe-reuse")) {
			opt.unsafe_reuse = true;
			opt.only = "reuse";
			continue;
		}
		if (!has_val)
			return -1;
		if (!strcmp(a, "--save")) {
			opt.save = argv[++i];
			continue;
		}
		if (!strcmp(a, "--only")) {
			opt.only = argv[++i];
			continue;
		}
		if (parse_ul(argv[++i], &v) < 0)
			return -1;
		if (!strcmp(a, "--states"))
			opt.states = v;
		else if (!strcmp(a, "--reuse-states"))
			opt.reuse_states = v;
		else if (!strcmp(a, "--compact-states"))
			opt.compact_states = v;
		else if (!strcmp(a, "--seed"))
			opt.seed = v;
		else if (!strcmp(a, "--jobs"))
			opt.jobs = (unsigned int)(v < 1 ? 1 : v > 64 ? 64 : v);
		else if (!strcmp(a, "--qemu"))
			opt.qemu = (unsigned int)v;
		else if (!strcmp(a, "--round"))
			opt.round = (long)v;
		else if (!strcmp(a, "--state"))
			opt.state = (long)v;
		else
			return -1;
	}
	return 0;
}

/* ---- the log's last sectors ---- */

/*
 * One session commits entry after entry (the first of 3 sectors, the rest
 * of 2, as in a crash that stops the daemon at any point): no entry may
 * end in the last two sectors of the log, where qemu-img's search for the
 * active sequence loops forever (journal.c, commit_entry).  Checked on
 * the log itself after every commit, and by qemu-img on the states where
 * the ring is nearly full, with a time limit.
 */
TEST(log_tail_room)
{
	struct vhdx_create_opts co = {.type = VHDX_TYPE_DYNAMIC,
				      .virtual_size = 1ull << 30,
				      .block_size = 1u << 20,
				      .logical_sector = 512};
	struct vhdx_open_opts oo = {.path = "log_tail_room.vhdx"};
	struct vhdx_image *img = NULL;
	struct vhdx_io io;
	char path[300];
	uint8_t buf[4096], hdr[64];
	uint64_t end_max = 0, L = 0;
	unsigned int rotations = 0, qemu_runs = 0;
	int fd;

	fd = tmp_file(path, sizeof(path), "test_crash_log");
	if (!CHECK(fd >= 0))
		return;
	vhdx_io_fd_init(&io, &fd);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0) ||
	    !CHECK_EQ_INT(vhdx_open(&img, &io, &oo), 0))
		goto out;
	memset(buf, 0x77, sizeof(buf));
	for (unsigned int c = 0; c < 300; c++) {
		uint64_t prev_pos = img->log_pos, end, guid_pos;

		/* commit 0 changes BAT sectors 0 and 1, the others sector 0 */
		if (c == 0 && !CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf),
						       600ull << 20),
					    sizeof(buf)))
			break;
		if (!CHECK_EQ_INT(
			vhdx_write(img, buf, sizeof(buf), (uint64_t)c << 20),
			sizeof(buf)) ||
		    !CHECK_EQ_INT(vhdx_flush(img), 0))
			break;
		L = img->log_length;
		end = img->log_pos;
		if (end < prev_pos)
			rotations++;
		/* the newest entry as stored: ends where the next will start */
		guid_pos = end - (c == 0 ? 3 : 2) * VHDX_LOG_SECTOR_SIZE;
		if (!CHECK_EQ_INT(pread(fd, hdr, sizeof(hdr),
					(off_t)(img->log_offset + guid_pos)),
				  sizeof(hdr)) ||
		    !CHECK_EQ_MEM(hdr, "loge", 4) ||
		    !CHECK_EQ_MEM(hdr + VHDX_LE_LOG_GUID, img->log_guid, 16))
			break;
		if (end > end_max)
			end_max = end;
		/* the states qemu-img looped on: the ring all but full */
		if (have_qemu && end + 6 * VHDX_LOG_SECTOR_SIZE >= L) {
			int st = qemu_img_check(path, false);

			qemu_runs++;
			if (!CHECK(st != 124))
				unit_note("commit %u: qemu-img check ran for "
					  "%d s on the open image (log up to "
					  "0x%llx)",
					  c, QEMU_LIMIT,
					  (unsigned long long)end);
		}
		if (!CHECK(end + 2 * VHDX_LOG_SECTOR_SIZE <= L)) {
			unit_note("commit %u: an entry ends at log offset "
				  "0x%llx of 0x%llx",
				  c, (unsigned long long)end,
				  (unsigned long long)L);
			break;
		}
	}
	unit_note("log 0x%llx bytes: entries ended at most at 0x%llx; %u "
		  "rotations; qemu-img ran %u times",
		  (unsigned long long)L, (unsigned long long)end_max, rotations,
		  qemu_runs);
	CHECK(rotations >= 1);
	if (!have_qemu)
		unit_note("qemu-img not used (not installed, or --qemu 0)");
out:
	vhdx_close(img);
	close(fd);
	unlink(path);
}

int main(int argc, char **argv)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	opt.seed = mix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
	opt.jobs = cpus < 1 ? 1 : cpus > 8 ? 8 : (unsigned int)cpus;
	if (parse_args(argc, argv) < 0) {
		fprintf(stderr,
			"usage: test_crash [--states N] [--reuse-states N] "
			"[--compact-states N] [--seed N] [--jobs N] "
			"[--qemu N] [--only crash|reuse|compact] "
			"[--unsafe-reuse] [--round R [--state S [--save "
			"FILE]]] [--verbose]\n");
		return 2;
	}
	pat_init();
	have_qemu = opt.qemu && run_cmd("qemu-img --version >/dev/null "
					"2>&1") == 0;
	unit_note("seed %" PRIu64 " (replay with --seed %" PRIu64 ")", opt.seed,
		  opt.seed);
	if (!opt.only || !strcmp(opt.only, "crash"))
		RUN_TEST(crash_states);
	if (!opt.only || !strcmp(opt.only, "reuse"))
		RUN_TEST(reuse_states);
	if (!opt.only || !strcmp(opt.only, "compact"))
		RUN_TEST(compact_states);
	if (opt.round < 0 && !opt.only) {
		RUN_TEST(fault_injection);
		RUN_TEST(replay_faults);
		RUN_TEST(log_tail_room);
	}
	printf("crash states: %lu checked, %lu failed\n", all_states,
	       all_failed);
	free(pat);
	int rc = unit_done();

	printf("%u passed, %u failed\n", unit.passed, unit.failed);
	return rc;
}
