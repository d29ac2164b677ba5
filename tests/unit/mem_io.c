/*
 * mem_io.c - sparse in-memory image file with call counters and fault
 * injection (see mem_io.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem_io.h"

struct mem_chunk {
	uint64_t idx; /* file offset / MEM_IO_CHUNK */
	uint8_t *data;
};

struct mem_io {
	pthread_mutex_t lock;
	uint64_t size;
	struct mem_chunk *chunks; /* sorted by idx */
	size_t n_chunks;
	size_t cap_chunks;
	struct mem_io_counts counts;
	unsigned long fail_pread, fail_pwrite, fail_flush; /* countdowns */
	uint64_t watch_off, watch_len;
	int fail_pread_err, fail_pwrite_err, fail_flush_err;
};

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p) {
		fprintf(stderr, "mem_io: out of memory\n");
		abort();
	}
	return p;
}

struct mem_io *mem_io_new(void)
{
	struct mem_io *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	return m;
}

void mem_io_free(struct mem_io *m)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->n_chunks; i++)
		free(m->chunks[i].data);
	free(m->chunks);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Index of the first chunk with idx >= want. */
static size_t chunk_search(const struct mem_io *m, uint64_t want)
{
	size_t lo = 0, hi = m->n_chunks;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->chunks[mid].idx < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint8_t *chunk_find(const struct mem_io *m, uint64_t idx)
{
	size_t i = chunk_search(m, idx);

	if (i < m->n_chunks && m->chunks[i].idx == idx)
		return m->chunks[i].data;
	return NULL;
}

static uint8_t *chunk_get(struct mem_io *m, uint64_t idx)
{
	size_t i = chunk_search(m, idx);

	if (i < m->n_chunks && m->chunks[i].idx == idx)
		return m->chunks[i].data;
	if (m->n_chunks == m->cap_chunks) {
		size_t cap = m->cap_chunks ? 2 * m->cap_chunks : 16;
		struct mem_chunk *c = realloc(m->chunks, cap * sizeof(*c));

		if (!c) {
			fprintf(stderr, "mem_io: out of memory\n");
			abort();
		}
		m->chunks = c;
		m->cap_chunks = cap;
	}
	memmove(&m->chunks[i + 1], &m->chunks[i],
		(m->n_chunks - i) * sizeof(m->chunks[0]));
	m->chunks[i].idx = idx;
	m->chunks[i].data = xcalloc(1, MEM_IO_CHUNK);
	m->n_chunks++;
	return m->chunks[i].data;
}

static void put_locked(struct mem_io *m, uint64_t off, const void *buf,
		       size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		uint64_t idx = off / MEM_IO_CHUNK;
		size_t in = (size_t)(off % MEM_IO_CHUNK);
		size_t n = MEM_IO_CHUNK - in;

		if (n > len)
			n = len;
		memcpy(chunk_get(m, idx) + in, p, n);
		p += n;
		off += n;
		len -= n;
	}
	if (off > m->size)
		m->size = off;
}

/* Copy bytes [off, off+len) treating everything unwritten as zero. */
static void get_locked(struct mem_io *m, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		uint64_t idx = off / MEM_IO_CHUNK;
		size_t in = (size_t)(off % MEM_IO_CHUNK);
		size_t n = MEM_IO_CHUNK - in;
		const uint8_t *c;

		if (n > len)
			n = len;
		c = chunk_find(m, idx);
		if (c)
			memcpy(p, c + in, n);
		else
			memset(p, 0, n);
		p += n;
		off += n;
		len -= n;
	}
}

static void set_size_locked(struct mem_io *m, uint64_t size)
{
	if (size < m->size) {
		uint64_t first = (size + MEM_IO_CHUNK - 1) / MEM_IO_CHUNK;
		size_t i = chunk_search(m, first), j;
		uint8_t *c;

		for (j = i; j < m->n_chunks; j++)
			free(m->chunks[j].data);
		m->n_chunks = i;
		/* bytes past the new end must read as zero if regrown */
		c = chunk_find(m, size / MEM_IO_CHUNK);
		if (c && size % MEM_IO_CHUNK)
			memset(c + size % MEM_IO_CHUNK, 0,
			       MEM_IO_CHUNK - size % MEM_IO_CHUNK);
	}
	m->size = size;
}

void mem_io_put(struct mem_io *m, uint64_t off, const void *buf, size_t len)
{
	pthread_mutex_lock(&m->lock);
	put_locked(m, off, buf, len);
	pthread_mutex_unlock(&m->lock);
}

size_t mem_io_get(struct mem_io *m, uint64_t off, void *buf, size_t len)
{
	size_t inside = 0;

	pthread_mutex_lock(&m->lock);
	get_locked(m, off, buf, len);
	if (off < m->size)
		inside = m->size - off < len ? (size_t)(m->size - off) : len;
	if (inside < len)
		memset((uint8_t *)buf + inside, 0, len - inside);
	pthread_mutex_unlock(&m->lock);
	return inside;
}

void mem_io_set_size(struct mem_io *m, uint64_t size)
{
	pthread_mutex_lock(&m->lock);
	set_size_locked(m, size);
	pthread_mutex_unlock(&m->lock);
}

uint64_t mem_io_get_size(struct mem_io *m)
{
	uint64_t s;

	pthread_mutex_lock(&m->lock);
	s = m->size;
	pthread_mutex_unlock(&m->lock);
	return s;
}

uint32_t mem_io_get_le32(struct mem_io *m, uint64_t off)
{
	uint8_t b[4];

	mem_io_get(m, off, b, sizeof(b));
	return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
	       ((uint32_t)b[3] << 24);
}

uint64_t mem_io_get_le64(struct mem_io *m, uint64_t off)
{
	return (uint64_t)mem_io_get_le32(m, off) |
	       ((uint64_t)mem_io_get_le32(m, off + 4) << 32);
}

void mem_io_put_le16(struct mem_io *m, uint64_t off, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};

	mem_io_put(m, off, b, sizeof(b));
}

void mem_io_put_le32(struct mem_io *m, uint64_t off, uint32_t v)
{
	uint8_t b[4];
	int i;

	for (i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	mem_io_put(m, off, b, sizeof(b));
}

void mem_io_put_le64(struct mem_io *m, uint64_t off, uint64_t v)
{
	uint8_t b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	mem_io_put(m, off, b, sizeof(b));
}

/* Count down an armed fault; true when this call must fail. */
static int fault_hit(unsigned long *countdown)
{
	if (*countdown == 0)
		return 0;
	return --*countdown == 0;
}

/* Account a pread of n bytes at off against the watched range. */
static void watch_count(struct mem_io *m, uint64_t off, size_t n)
{
	uint64_t lo = off, hi = off + n;
	uint64_t wend = m->watch_off + m->watch_len;

	if (lo < m->watch_off)
		lo = m->watch_off;
	if (hi > wend)
		hi = wend;
	if (lo >= hi)
		return;
	if (!m->counts.watch_reads || lo < m->counts.watch_lo)
		m->counts.watch_lo = lo;
	if (!m->counts.watch_reads || hi > m->counts.watch_hi)
		m->counts.watch_hi = hi;
	m->counts.watch_reads++;
	m->counts.watch_bytes += hi - lo;
}

static long op_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct mem_io *m = opaque;
	size_t n = 0;

	pthread_mutex_lock(&m->lock);
	m->counts.pread++;
	if (fault_hit(&m->fail_pread)) {
		pthread_mutex_unlock(&m->lock);
		return -m->fail_pread_err;
	}
	if (off < m->size) {
		n = m->size - off < len ? (size_t)(m->size - off) : len;
		get_locked(m, off, buf, n);
	}
	m->counts.bytes_read += n;
	watch_count(m, off, n);
	pthread_mutex_unlock(&m->lock);
	return (long)n;
}

static int op_pwrite(void *opaque, const void *buf, size_t len, uint64_t off)
{
	struct mem_io *m = opaque;

	pthread_mutex_lock(&m->lock);
	m->counts.pwrite++;
	if (fault_hit(&m->fail_pwrite)) {
		pthread_mutex_unlock(&m->lock);
		return -m->fail_pwrite_err;
	}
	if (off > UINT64_MAX - len) {
		pthread_mutex_unlock(&m->lock);
		return -EFBIG;
	}
	put_locked(m, off, buf, len);
	m->counts.bytes_written += len;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int op_flush(void *opaque)
{
	struct mem_io *m = opaque;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	m->counts.flush++;
	if (fault_hit(&m->fail_flush))
		ret = -m->fail_flush_err;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int op_truncate(void *opaque, uint64_t size)
{
	struct mem_io *m = opaque;

	pthread_mutex_lock(&m->lock);
	m->counts.truncate++;
	set_size_locked(m, size);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int op_size(void *opaque, uint64_t *size)
{
	struct mem_io *m = opaque;

	pthread_mutex_lock(&m->lock);
	m->counts.size++;
	*size = m->size;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void mem_io_ops(struct vhdx_io *io, struct mem_io *m)
{
	memset(io, 0, sizeof(*io));
	io->opaque = m;
	io->pread = op_pread;
	io->pwrite = op_pwrite;
	io->flush = op_flush;
	io->truncate = op_truncate;
	io->size = op_size;
}

void mem_io_watch(struct mem_io *m, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&m->lock);
	m->watch_off = off;
	m->watch_len = len;
	pthread_mutex_unlock(&m->lock);
}

void mem_io_get_counts(struct mem_io *m, struct mem_io_counts *c)
{
	pthread_mutex_lock(&m->lock);
	*c = m->counts;
	pthread_mutex_unlock(&m->lock);
}

void mem_io_reset_counts(struct mem_io *m)
{
	pthread_mutex_lock(&m->lock);
	memset(&m->counts, 0, sizeof(m->counts));
	pthread_mutex_unlock(&m->lock);
}

unsigned long mem_io_modifications(struct mem_io *m)
{
	unsigned long n;

	pthread_mutex_lock(&m->lock);
	n = m->counts.pwrite + m->counts.flush + m->counts.truncate;
	pthread_mutex_unlock(&m->lock);
	return n;
}

static void arm(struct mem_io *m, unsigned long *countdown, int *errp,
		unsigned long n, int err)
{
	pthread_mutex_lock(&m->lock);
	*countdown = n;
	*errp = err;
	pthread_mutex_unlock(&m->lock);
}

void mem_io_fail_pread(struct mem_io *m, unsigned long n, int err)
{
	arm(m, &m->fail_pread, &m->fail_pread_err, n, err);
}

void mem_io_fail_pwrite(struct mem_io *m, unsigned long n, int err)
{
	arm(m, &m->fail_pwrite, &m->fail_pwrite_err, n, err);
}

void mem_io_fail_flush(struct mem_io *m, unsigned long n, int err)
{
	arm(m, &m->fail_flush, &m->fail_flush_err, n, err);
}

uint64_t mem_io_allocated(struct mem_io *m)
{
	uint64_t n;

	pthread_mutex_lock(&m->lock);
	n = (uint64_t)m->n_chunks * MEM_IO_CHUNK;
	pthread_mutex_unlock(&m->lock);
	return n;
}

static uint64_t fnv1a(uint64_t h, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int all_zero(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (p[i])
			return 0;
	}
	return 1;
}

uint64_t mem_io_digest(struct mem_io *m)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	pthread_mutex_lock(&m->lock);
	h = fnv1a(h, &m->size, sizeof(m->size));
	for (i = 0; i < m->n_chunks; i++) {
		/* a chunk of zeros is the same file as no chunk */
		if (all_zero(m->chunks[i].data, MEM_IO_CHUNK))
			continue;
		h = fnv1a(h, &m->chunks[i].idx, sizeof(m->chunks[i].idx));
		h = fnv1a(h, m->chunks[i].data, MEM_IO_CHUNK);
	}
	pthread_mutex_unlock(&m->lock);
	return h;
}
