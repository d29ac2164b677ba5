/*
 * rec_io.c - the recording and the copy-on-write backends of the
 * crash-consistency test (see rec_io.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rec_io.h"

#define PAGE 4096u

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "rec_io: out of memory\n");
		abort();
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "rec_io: out of memory\n");
		abort();
	}
	return p;
}

/* ================================================================ rec_io */

struct rec_io {
	pthread_mutex_t lock;
	struct mem_io *file;
	struct vhdx_io inner;
	struct rec_op *ops;
	size_t n_ops, cap_ops;
	long last_flush;
	bool frozen;
	unsigned int zero_modes;
	unsigned long calls[REC_KINDS];
	unsigned long fail_n[REC_KINDS];
	int fail_err[REC_KINDS];
	bool fired;
	struct rec_fault fault;
};

struct rec_io *rec_io_new(struct mem_io *file)
{
	struct rec_io *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	r->file = file;
	mem_io_ops(&r->inner, file);
	r->last_flush = -1;
	r->zero_modes = REC_ZERO_RANGE | REC_PUNCH_HOLE;
	return r;
}

void rec_io_free(struct rec_io *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_ops; i++)
		free(r->ops[i].data);
	free(r->ops);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static void record(struct rec_io *r, enum rec_kind kind, uint64_t off,
		   size_t len, uint8_t *data)
{
	if (r->n_ops == r->cap_ops) {
		r->cap_ops = r->cap_ops ? 2 * r->cap_ops : 256;
		r->ops = xrealloc(r->ops, r->cap_ops * sizeof(*r->ops));
	}
	if (kind == REC_FLUSH)
		r->last_flush = (long)r->n_ops;
	r->ops[r->n_ops++] =
	    (struct rec_op){.kind = kind, .off = off, .len = len, .data = data};
}

/*
 * Count a modifying call; returns nonzero (the negative errno to return) if
 * the armed fault fires on it, 1 if the call must be dropped (frozen).
 */
static int gate(struct rec_io *r, enum rec_kind kind, uint64_t off, size_t len)
{
	r->calls[kind]++;
	if (r->frozen)
		return 1;
	if (r->fail_n[kind] && --r->fail_n[kind] == 0) {
		r->fired = true;
		r->fault = (struct rec_fault){.kind = kind,
					      .off = off,
					      .len = len,
					      .rec_pos = r->n_ops,
					      .err = r->fail_err[kind]};
		return -r->fail_err[kind];
	}
	return 0;
}

static long rec_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct rec_io *r = opaque;

	return r->inner.pread(r->inner.opaque, buf, len, off);
}

static int rec_pwrite(void *opaque, const void *buf, size_t len, uint64_t off)
{
	struct rec_io *r = opaque;
	uint8_t *copy;
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = gate(r, REC_PWRITE, off, len);
	if (ret) {
		pthread_mutex_unlock(&r->lock);
		return ret < 0 ? ret : 0;
	}
	ret = r->inner.pwrite(r->inner.opaque, buf, len, off);
	if (ret == 0) {
		copy = xmalloc(len);
		memcpy(copy, buf, len);
		record(r, REC_PWRITE, off, len, copy);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_flush(void *opaque)
{
	struct rec_io *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = gate(r, REC_FLUSH, 0, 0);
	if (ret) {
		pthread_mutex_unlock(&r->lock);
		return ret < 0 ? ret : 0;
	}
	ret = r->inner.flush(r->inner.opaque);
	if (ret == 0)
		record(r, REC_FLUSH, 0, 0, NULL);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_truncate(void *opaque, uint64_t size)
{
	struct rec_io *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = gate(r, REC_TRUNCATE, size, 0);
	if (ret) {
		pthread_mutex_unlock(&r->lock);
		return ret < 0 ? ret : 0;
	}
	ret = r->inner.truncate(r->inner.opaque, size);
	if (ret == 0)
		record(r, REC_TRUNCATE, size, 0, NULL);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static const uint8_t zeros[64 * 1024];

/* fallocate(KEEP_SIZE | PUNCH_HOLE or ZERO_RANGE): nothing past the EOF. */
static int rec_zero(void *opaque, uint64_t off, uint64_t len, int unmap)
{
	struct rec_io *r = opaque;
	uint64_t size;
	int ret;

	if (!(r->zero_modes & (unmap ? REC_PUNCH_HOLE : REC_ZERO_RANGE)))
		return -EOPNOTSUPP;
	if (off > UINT64_MAX - len || len > SIZE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	ret = gate(r, REC_ZERO, off, (size_t)len);
	if (ret) {
		pthread_mutex_unlock(&r->lock);
		return ret < 0 ? ret : 0;
	}
	size = mem_io_get_size(r->file);
	for (uint64_t o = off; o < off + len && o < size;) {
		uint64_t end = off + len < size ? off + len : size;
		size_t n =
		    end - o < sizeof(zeros) ? (size_t)(end - o) : sizeof(zeros);

		mem_io_put(r->file, o, zeros, n);
		o += n;
	}
	record(r, REC_ZERO, off, (size_t)len, NULL);
	r->ops[r->n_ops - 1].unmap = unmap != 0;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

static int rec_size(void *opaque, uint64_t *size)
{
	struct rec_io *r = opaque;

	return r->inner.size(r->inner.opaque, size);
}

void rec_io_ops(struct vhdx_io *io, struct rec_io *r)
{
	memset(io, 0, sizeof(*io));
	io->opaque = r;
	io->pread = rec_pread;
	io->pwrite = rec_pwrite;
	io->flush = rec_flush;
	io->truncate = rec_truncate;
	io->size = rec_size;
	io->allocate = NULL;
	io->zero = rec_zero;
}

void rec_io_zero_modes(struct rec_io *r, unsigned int modes)
{
	pthread_mutex_lock(&r->lock);
	r->zero_modes = modes;
	pthread_mutex_unlock(&r->lock);
}

size_t rec_io_count(struct rec_io *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->n_ops;
	pthread_mutex_unlock(&r->lock);
	return n;
}

const struct rec_op *rec_io_op(struct rec_io *r, size_t i)
{
	return &r->ops[i];
}

long rec_io_last_flush(struct rec_io *r)
{
	long n;

	pthread_mutex_lock(&r->lock);
	n = r->last_flush;
	pthread_mutex_unlock(&r->lock);
	return n;
}

void rec_io_freeze(struct rec_io *r)
{
	pthread_mutex_lock(&r->lock);
	r->frozen = true;
	pthread_mutex_unlock(&r->lock);
}

void rec_io_fail(struct rec_io *r, enum rec_kind kind, unsigned long n, int err)
{
	pthread_mutex_lock(&r->lock);
	r->fail_n[kind] = n;
	r->fail_err[kind] = err;
	pthread_mutex_unlock(&r->lock);
}

bool rec_io_fault_fired(struct rec_io *r, struct rec_fault *f)
{
	bool fired;

	pthread_mutex_lock(&r->lock);
	fired = r->fired;
	if (fired && f)
		*f = r->fault;
	pthread_mutex_unlock(&r->lock);
	return fired;
}

unsigned long rec_io_calls(struct rec_io *r, enum rec_kind kind)
{
	unsigned long n;

	pthread_mutex_lock(&r->lock);
	n = r->calls[kind];
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* ================================================================ cow_io */

struct cow_page {
	uint64_t idx; /* file offset / PAGE */
	uint8_t *data;
};

struct cow_io {
	pthread_mutex_t lock;
	struct mem_io *base;
	uint64_t base_limit; /* base bytes at or past this read as zero */
	uint64_t size;
	struct cow_page *pages; /* sorted by idx */
	size_t n_pages, cap_pages;
	unsigned long mods;
};

struct cow_io *cow_io_new(struct mem_io *base)
{
	struct cow_io *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	c->base = base;
	c->size = mem_io_get_size(base);
	c->base_limit = c->size;
	return c;
}

void cow_io_free(struct cow_io *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_pages; i++)
		free(c->pages[i].data);
	free(c->pages);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Index of the first overlay page with idx >= want. */
static size_t page_search(const struct cow_io *c, uint64_t want)
{
	size_t lo = 0, hi = c->n_pages;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->pages[mid].idx < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Base bytes as this view sees them (zero past base_limit). */
static void base_get(struct cow_io *c, uint64_t off, uint8_t *buf, size_t len)
{
	size_t in = 0;

	if (off < c->base_limit)
		in = c->base_limit - off < len ? (size_t)(c->base_limit - off)
					       : len;
	if (in)
		mem_io_get(c->base, off, buf, in);
	memset(buf + in, 0, len - in);
}

static void get_locked(struct cow_io *c, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i = page_search(c, off / PAGE);

	while (len) {
		uint64_t next =
		    i < c->n_pages ? c->pages[i].idx * PAGE : UINT64_MAX;
		size_t n;

		if (next > off) {
			/* a gap: straight from the base */
			n = next - off < len ? (size_t)(next - off) : len;
			base_get(c, off, buf, n);
		} else {
			size_t in = (size_t)(off - next);

			n = PAGE - in < len ? PAGE - in : len;
			memcpy(buf, c->pages[i].data + in, n);
			i++;
		}
		buf += n;
		off += n;
		len -= n;
	}
}

static uint8_t *page_get(struct cow_io *c, uint64_t idx)
{
	size_t i = page_search(c, idx);
	uint8_t *d;

	if (i < c->n_pages && c->pages[i].idx == idx)
		return c->pages[i].data;
	if (c->n_pages == c->cap_pages) {
		c->cap_pages = c->cap_pages ? 2 * c->cap_pages : 64;
		c->pages = xrealloc(c->pages, c->cap_pages * sizeof(*c->pages));
	}
	d = xmalloc(PAGE);
	base_get(c, idx * PAGE, d, PAGE);
	memmove(&c->pages[i + 1], &c->pages[i],
		(c->n_pages - i) * sizeof(c->pages[0]));
	c->pages[i] = (struct cow_page){.idx = idx, .data = d};
	c->n_pages++;
	return d;
}

static void put_locked(struct cow_io *c, uint64_t off, const uint8_t *buf,
		       size_t len)
{
	if (off + len > c->size)
		c->size = off + len;
	while (len) {
		size_t in = (size_t)(off % PAGE);
		size_t n = PAGE - in < len ? PAGE - in : len;

		memcpy(page_get(c, off / PAGE) + in, buf, n);
		buf += n;
		off += n;
		len -= n;
	}
}

static void set_size_locked(struct cow_io *c, uint64_t size)
{
	if (size < c->size) {
		size_t i = page_search(c, (size + PAGE - 1) / PAGE);

		for (size_t j = i; j < c->n_pages; j++)
			free(c->pages[j].data);
		c->n_pages = i;
		/* bytes past the new end must read as zero if regrown */
		if (size % PAGE && i > 0 && c->pages[i - 1].idx == size / PAGE)
			memset(c->pages[i - 1].data + size % PAGE, 0,
			       PAGE - size % PAGE);
		if (size < c->base_limit)
			c->base_limit = size;
	}
	c->size = size;
}

void cow_io_put(struct cow_io *c, uint64_t off, const void *buf, size_t len)
{
	pthread_mutex_lock(&c->lock);
	put_locked(c, off, buf, len);
	pthread_mutex_unlock(&c->lock);
}

void cow_io_set_size(struct cow_io *c, uint64_t size)
{
	pthread_mutex_lock(&c->lock);
	set_size_locked(c, size);
	pthread_mutex_unlock(&c->lock);
}

uint64_t cow_io_get_size(struct cow_io *c)
{
	uint64_t s;

	pthread_mutex_lock(&c->lock);
	s = c->size;
	pthread_mutex_unlock(&c->lock);
	return s;
}

void cow_io_get(struct cow_io *c, uint64_t off, void *buf, size_t len)
{
	size_t in = 0;

	pthread_mutex_lock(&c->lock);
	if (off < c->size)
		in = c->size - off < len ? (size_t)(c->size - off) : len;
	get_locked(c, off, buf, in);
	memset((uint8_t *)buf + in, 0, len - in);
	pthread_mutex_unlock(&c->lock);
}

unsigned long cow_io_modifications(struct cow_io *c)
{
	unsigned long n;

	pthread_mutex_lock(&c->lock);
	n = c->mods;
	pthread_mutex_unlock(&c->lock);
	return n;
}

static long cow_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct cow_io *c = opaque;
	size_t n = 0;

	pthread_mutex_lock(&c->lock);
	if (off < c->size) {
		n = c->size - off < len ? (size_t)(c->size - off) : len;
		get_locked(c, off, buf, n);
	}
	pthread_mutex_unlock(&c->lock);
	return (long)n;
}

static int cow_pwrite(void *opaque, const void *buf, size_t len, uint64_t off)
{
	struct cow_io *c = opaque;

	if (off > UINT64_MAX - len)
		return -EFBIG;
	pthread_mutex_lock(&c->lock);
	c->mods++;
	put_locked(c, off, buf, len);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static int cow_flush(void *opaque)
{
	struct cow_io *c = opaque;

	pthread_mutex_lock(&c->lock);
	c->mods++;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static int cow_truncate(void *opaque, uint64_t size)
{
	struct cow_io *c = opaque;

	pthread_mutex_lock(&c->lock);
	c->mods++;
	set_size_locked(c, size);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static int cow_size(void *opaque, uint64_t *size)
{
	*size = cow_io_get_size(opaque);
	return 0;
}

void cow_io_ops(struct vhdx_io *io, struct cow_io *c)
{
	memset(io, 0, sizeof(*io));
	io->opaque = c;
	io->pread = cow_pread;
	io->pwrite = cow_pwrite;
	io->flush = cow_flush;
	io->truncate = cow_truncate;
	io->size = cow_size;
	io->allocate = NULL;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

int cow_io_save(struct cow_io *c, const char *path)
{
	const size_t step = 64 * 1024;
	uint64_t size = cow_io_get_size(c);
	uint8_t *buf = xmalloc(step);
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	for (uint64_t off = 0; off < size && ret == 0; off += step) {
		size_t n = size - off < step ? (size_t)(size - off) : step;

		cow_io_get(c, off, buf, n);
		if (!all_zero(buf, n) &&
		    pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
			ret = -errno;
	}
	if (ret == 0 && ftruncate(fd, (off_t)size) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	free(buf);
	return ret;
}
