/*
 * test_stress.c - the library used from several threads at once.
 *
 * stress: writers, a discarder, a reader, a flusher and a thread calling
 * vhdx_get_info (what the daemon does on every getattr) share one image on
 * a real file (the fd backend, in a temporary directory).  Each writer owns
 * its own blocks and checks what it reads back; the reader checks the
 * blocks nobody writes; at the end the image is closed, reopened and
 * compared with the writers' model; stress_differencing does the same on
 * a differencing image in memory, whose writes copy the parent's data up.
 * `make check-tsan` runs this file
 * built with ThreadSanitizer, which must report nothing.
 *
 * slow_flush: with an io table whose flush sleeps 500 ms, an overwrite of
 * an allocated block during a flush must finish in under 50 ms.
 *
 * broken: after a failed flush the image is read-only (writes -EROFS),
 * and says why once.
 *
 * truncated: an image file that another program shortened under an open
 * image: reads of block data that was in the file at open fail with -EIO,
 * reported once, on read-only and read-write opens.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include <unistd.h>

#include "mem_io.h"
#include "msgsink.h"
#include "unit.h"
#include "vhdx.h"

#define MiB	 (1024ull * 1024ull)
#define KiB	 1024ull
#define BS	 (1 * MiB)
#define NBLK	 16
#define VSIZE	 (NBLK * BS)
#define NWRITERS 2
#define ROUNDS	 400 /* writes per writer (and discard rounds) */

static struct msgsink sink = MSGSINK_INIT(VHDX_MSG_WARNING);

/* Pattern byte of virtual offset v for a seed: never zero. */
static uint8_t pat(uint32_t seed, uint64_t v)
{
	uint64_t x = ((v + 1) * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)seed << 32);

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (uint8_t)(x % 255 + 1);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool create_io(const struct vhdx_io *io, uint64_t vsize)
{
	struct vhdx_create_opts co = {
	    .type = VHDX_TYPE_DYNAMIC,
	    .virtual_size = vsize,
	    .block_size = BS,
	    .logical_sector = 512,
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	};

	msgsink_reset(&sink);
	if (!CHECK_EQ_INT(vhdx_create(io, &co), 0)) {
		msgsink_dump(&sink);
		return false;
	}
	return true;
}

static bool open_io(const struct vhdx_io *io, unsigned int flags,
		    struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = flags, .msg = msgsink_cb, .msg_opaque = &sink};

	msgsink_reset(&sink);
	*img = NULL;
	if (!CHECK_EQ_INT(vhdx_open(img, io, &o), 0)) {
		msgsink_dump(&sink);
		*img = NULL;
		return false;
	}
	return true;
}

/* ---- stress ---- */

/*
 * Block b belongs to writer b % 4 for b % 4 < NWRITERS, to the discarder
 * for b % 4 == 2; blocks with b % 4 == 3 are never written.
 */
#define DISCARDER 2
#define UNTOUCHED 3

struct stress {
	struct vhdx_image *img;
	uint8_t *model; /* what the disk must read; each owner its blocks */
	int done;	/* atomic: the writers have finished */
	unsigned long flushes, infos, reads;
	int errors; /* atomic */
};

static void fail(struct stress *s, const char *what, long ret)
{
	if (__atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED) < 10)
		unit_note("%s: %ld", what, ret);
}

/* A random range inside one of the owner's blocks. */
static void pick(uint64_t *seed, int owner, uint64_t *off, size_t *len)
{
	uint64_t b = (rnd(seed) % (NBLK / 4)) * 4 + (uint64_t)owner;
	uint64_t in = (rnd(seed) % (BS / (4 * KiB))) * 4 * KiB;
	uint64_t n = (rnd(seed) % 16 + 1) * 4 * KiB;

	if (n > BS - in)
		n = BS - in;
	*off = b * BS + in;
	*len = (size_t)n;
}

static bool range_is(const struct stress *s, const uint8_t *buf, uint64_t off,
		     size_t len)
{
	return memcmp(buf, s->model + off, len) == 0;
}

static void *writer(void *arg)
{
	struct stress *s = ((void **)arg)[0];
	int w = (int)(intptr_t)((void **)arg)[1];
	uint64_t seed = 0x1234567ull + (uint64_t)w * 7919;
	uint8_t *buf = malloc(64 * KiB);

	for (int r = 0; r < ROUNDS && buf; r++) {
		uint64_t off;
		size_t len;
		long ret;

		pick(&seed, w, &off, &len);
		for (size_t i = 0; i < len; i++)
			buf[i] = pat((uint32_t)r, off + i);
		ret = vhdx_write(s->img, buf, len, off);
		if (ret != (long)len) {
			fail(s, "write", ret);
			break;
		}
		memcpy(s->model + off, buf, len);
		pick(&seed, w, &off, &len);
		ret = vhdx_read(s->img, buf, len, off);
		if (ret != (long)len || !range_is(s, buf, off, len))
			fail(s, "writer read-back", ret);
	}
	free(buf);
	return NULL;
}

/* Writes and discards (whole blocks and parts) in its own blocks. */
static void *discarder(void *arg)
{
	struct stress *s = arg;
	uint64_t seed = 0xfeedbeefull;
	uint8_t *buf = malloc(64 * KiB);

	for (int r = 0; r < ROUNDS && buf; r++) {
		uint64_t off;
		size_t len;
		long ret;

		pick(&seed, DISCARDER, &off, &len);
		switch (rnd(&seed) % 3) {
		case 0:
			for (size_t i = 0; i < len; i++)
				buf[i] = pat((uint32_t)r + 1000, off + i);
			ret = vhdx_write(s->img, buf, len, off);
			if (ret != (long)len)
				fail(s, "discarder write", ret);
			memcpy(s->model + off, buf, len);
			break;
		case 1: /* part of a block */
			ret = vhdx_zero(s->img, off, len, VHDX_ZERO_UNMAP);
			if (ret)
				fail(s, "zero part", ret);
			memset(s->model + off, 0, len);
			break;
		default: /* a whole block */
			off -= off % BS;
			len = BS;
			ret = vhdx_zero(s->img, off, BS,
					rnd(&seed) % 2 ? VHDX_ZERO_UNMAP : 0);
			if (ret)
				fail(s, "zero block", ret);
			memset(s->model + off, 0, BS);
			break;
		}
		if (len > 64 * KiB) {
			off += rnd(&seed) % (BS / (64 * KiB)) * 64 * KiB;
			len = 64 * KiB;
		}
		ret = vhdx_read(s->img, buf, len, off);
		if (ret != (long)len || !range_is(s, buf, off, len))
			fail(s, "discarder read-back", ret);
	}
	free(buf);
	return NULL;
}

/* Reads anywhere; the untouched blocks must read as the model says. */
static void *reader(void *arg)
{
	struct stress *s = arg;
	uint64_t seed = 0xabcdefull;
	uint8_t *buf = malloc(256 * KiB);

	while (buf && !__atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
		uint64_t off = rnd(&seed) % (VSIZE / 512) * 512;
		size_t len = (size_t)(rnd(&seed) % (256 * KiB / 512) + 1) * 512;
		long ret;

		if (len > VSIZE - off)
			len = (size_t)(VSIZE - off);
		ret = vhdx_read(s->img, buf, len, off);
		if (ret != (long)len) {
			fail(s, "read", ret);
			continue;
		}
		for (uint64_t o = off; o < off + len; o++) {
			if ((o / BS) % 4 == UNTOUCHED &&
			    buf[o - off] != s->model[o]) {
				fail(s, "untouched block changed", (long)o);
				break;
			}
		}
		s->reads++;
	}
	free(buf);
	return NULL;
}

static void *flusher(void *arg)
{
	struct stress *s = arg;

	while (!__atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
		int ret = vhdx_flush(s->img);

		if (ret)
			fail(s, "flush", ret);
		s->flushes++;
		usleep(2000);
	}
	return NULL;
}

/* What the daemon's getattr does, with checks of what must always hold. */
static void *infoer(void *arg)
{
	struct stress *s = arg;
	uint64_t last_seq = 0;

	while (!__atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
		struct vhdx_info info;
		uint64_t sum = 0;

		vhdx_get_info(s->img, &info);
		for (int k = 0; k < 8; k++)
			sum += info.state_count[k];
		if (!info.state_count_known || sum != info.payload_blocks)
			fail(s, "state counts", (long)sum);
		/*
		 * The file may shrink (a free tail is given back after a
		 * commit), never below its structures; headers only advance.
		 */
		if (info.header_seq < last_seq)
			fail(s, "header sequence went backwards",
			     (long)info.header_seq);
		if (info.file_size < 4 * 1048576ull)
			fail(s, "file size below the structures",
			     (long)info.file_size);
		last_seq = info.header_seq;
		s->infos++;
	}
	return NULL;
}

struct tmp {
	char dir[4096];
	char img[4200];
};

static bool tmp_make(struct tmp *t)
{
	const char *base = getenv("TMPDIR");

	memset(t, 0, sizeof(*t));
	if (!base || !*base)
		base = "/tmp";
	snprintf(t->dir, sizeof(t->dir), "%s/vhdx-stress.XXXXXX", base);
	if (!CHECK(mkdtemp(t->dir) != NULL)) {
		t->dir[0] = '\0';
		return false;
	}
	snprintf(t->img, sizeof(t->img), "%s/disk.vhdx", t->dir);
	return true;
}

static void tmp_remove(struct tmp *t)
{
	if (!t->dir[0])
		return;
	unlink(t->img);
	CHECK_EQ_INT(rmdir(t->dir), 0);
}

/*
 * Run every thread on s->img (open read-write, s->model what it reads),
 * close it and compare what reopen(RDONLY) shows with the model.
 */
static void run_stress(struct stress *s, const char *what,
		       bool (*reopen)(struct vhdx_image **img))
{
	pthread_t th[NWRITERS + 4];
	void *args[NWRITERS][2];
	uint8_t *back = malloc(VSIZE);
	double t0 = now_ms();
	int n = 0;

	for (int w = 0; w < NWRITERS; w++) {
		args[w][0] = s;
		args[w][1] = (void *)(intptr_t)w;
		CHECK_EQ_INT(pthread_create(&th[n++], NULL, writer, args[w]),
			     0);
	}
	CHECK_EQ_INT(pthread_create(&th[n++], NULL, discarder, s), 0);
	CHECK_EQ_INT(pthread_create(&th[n++], NULL, reader, s), 0);
	CHECK_EQ_INT(pthread_create(&th[n++], NULL, flusher, s), 0);
	CHECK_EQ_INT(pthread_create(&th[n++], NULL, infoer, s), 0);
	for (int k = 0; k < NWRITERS + 1; k++)
		pthread_join(th[k], NULL);
	__atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
	for (int k = NWRITERS + 1; k < n; k++)
		pthread_join(th[k], NULL);
	unit_note("%s: %d writers x %d writes, %d discard rounds, %lu reads, "
		  "%lu flushes, %lu get_info in %.0f ms",
		  what, NWRITERS, ROUNDS, ROUNDS, s->reads, s->flushes,
		  s->infos, now_ms() - t0);
	CHECK_EQ_INT(s->errors, 0);
	CHECK_EQ_INT(sink.n_err, 0);
	CHECK_EQ_INT(vhdx_close(s->img), 0);
	s->img = NULL;
	/* what survived the close: exactly the model */
	if (CHECK(back) && reopen(&s->img)) {
		CHECK_EQ_INT(vhdx_read(s->img, back, VSIZE, 0), VSIZE);
		CHECK_EQ_MEM(back, s->model, VSIZE);
		vhdx_close(s->img);
		s->img = NULL;
	}
	free(back);
}

static int stress_fd = -1;
static struct vhdx_io stress_io;

static bool reopen_fd(struct vhdx_image **img)
{
	return open_io(&stress_io, VHDX_OPEN_RDONLY, img);
}

/* A dynamic image on a real file. */
TEST(stress)
{
	struct stress s = {0};
	struct tmp t;

	if (!tmp_make(&t))
		return;
	s.model = calloc(1, VSIZE);
	stress_fd = open(t.img, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (!CHECK(s.model) || !CHECK(stress_fd >= 0))
		goto out;
	vhdx_io_fd_init(&stress_io, &stress_fd);
	if (create_io(&stress_io, VSIZE) && open_io(&stress_io, 0, &s.img))
		run_stress(&s, "dynamic", reopen_fd);
out:
	if (s.img)
		vhdx_close(s.img);
	if (stress_fd >= 0)
		close(stress_fd);
	stress_fd = -1;
	free(s.model);
	tmp_remove(&t);
}

/* ---- the same on a differencing image (copy-up from the parent) ---- */

#define PARENT_PATH "/stress/parent.vhdx"

static struct mem_io *parent_file, *child_file;

static int fo_open(void *opaque, const char *path, struct vhdx_io *io,
		   uint64_t id[2])
{
	(void)opaque;
	if (!parent_file || strcmp(path, PARENT_PATH) != 0)
		return -ENOENT;
	mem_io_ops(io, parent_file);
	id[0] = 0x57;
	id[1] = 0x7e55;
	return 0;
}

static void fo_close(void *opaque, struct vhdx_io *io)
{
	(void)opaque;
	(void)io;
}

static const struct vhdx_file_ops file_ops = {fo_open, fo_close, NULL};

static bool open_child(unsigned int flags, struct vhdx_image **img)
{
	struct vhdx_open_opts o = {
	    .flags = flags,
	    .msg = msgsink_cb,
	    .msg_opaque = &sink,
	    .path = "/stress/child.vhdx",
	    .parent_path = PARENT_PATH,
	    .files = &file_ops,
	};
	struct vhdx_io io;

	mem_io_ops(&io, child_file);
	msgsink_reset(&sink);
	*img = NULL;
	if (!CHECK_EQ_INT(vhdx_open(img, &io, &o), 0)) {
		msgsink_dump(&sink);
		*img = NULL;
		return false;
	}
	return true;
}

static bool reopen_child(struct vhdx_image **img)
{
	return open_child(VHDX_OPEN_RDONLY, img);
}

/* The parent: every other block written with a pattern. */
static bool make_parent(uint8_t *model, struct vhdx_create_opts *co)
{
	struct vhdx_io io;
	struct vhdx_image *img;
	struct vhdx_info info;
	bool ok = true;

	mem_io_ops(&io, parent_file);
	if (!create_io(&io, VSIZE) || !open_io(&io, 0, &img))
		return false;
	for (uint64_t b = 0; b < NBLK; b += 2) {
		for (uint64_t i = b * BS; i < (b + 1) * BS; i++)
			model[i] = pat(99, i);
		ok = ok && CHECK_EQ_INT(
			       vhdx_write(img, model + b * BS, BS, b * BS), BS);
	}
	ok = CHECK_EQ_INT(vhdx_close(img), 0) && ok;
	if (!ok || !open_io(&io, VHDX_OPEN_RDONLY, &img))
		return false;
	vhdx_get_info(img, &info);
	vhdx_close(img);
	memset(co, 0, sizeof(*co));
	co->type = VHDX_TYPE_DIFFERENCING;
	co->virtual_size = VSIZE;
	co->block_size = BS;
	co->logical_sector = 512;
	co->msg = msgsink_cb;
	co->msg_opaque = &sink;
	memcpy(co->parent_linkage, info.data_write_guid, 16);
	memcpy(co->disk_id, info.disk_id, 16);
	co->parent_relative = "parent.vhdx";
	return true;
}

TEST(stress_differencing)
{
	struct stress s = {0};
	struct vhdx_create_opts co;
	struct vhdx_io io;

	parent_file = mem_io_new();
	child_file = mem_io_new();
	s.model = calloc(1, VSIZE);
	if (!CHECK(parent_file && child_file && s.model) ||
	    !make_parent(s.model, &co))
		goto out;
	mem_io_ops(&io, child_file);
	if (!CHECK_EQ_INT(vhdx_create(&io, &co), 0)) {
		msgsink_dump(&sink);
		goto out;
	}
	if (open_child(0, &s.img))
		run_stress(&s, "differencing", reopen_child);
out:
	if (s.img)
		vhdx_close(s.img);
	free(s.model);
	mem_io_free(child_file);
	mem_io_free(parent_file);
	child_file = parent_file = NULL;
}

/* ---- a flush that takes 500 ms ---- */

struct slow_io {
	struct vhdx_io inner;
	int slow;     /* atomic: flushes sleep */
	int in_flush; /* atomic: a slow flush is sleeping */
};

static long sl_pread(void *o, void *buf, size_t len, uint64_t off)
{
	struct slow_io *s = o;

	return s->inner.pread(s->inner.opaque, buf, len, off);
}

static int sl_pwrite(void *o, const void *buf, size_t len, uint64_t off)
{
	struct slow_io *s = o;

	return s->inner.pwrite(s->inner.opaque, buf, len, off);
}

static int sl_flush(void *o)
{
	struct slow_io *s = o;

	if (__atomic_load_n(&s->slow, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&s->in_flush, 1, __ATOMIC_RELEASE);
		usleep(500 * 1000);
		__atomic_store_n(&s->in_flush, 0, __ATOMIC_RELEASE);
	}
	return s->inner.flush(s->inner.opaque);
}

static int sl_truncate(void *o, uint64_t size)
{
	struct slow_io *s = o;

	return s->inner.truncate(s->inner.opaque, size);
}

static int sl_size(void *o, uint64_t *size)
{
	struct slow_io *s = o;

	return s->inner.size(s->inner.opaque, size);
}

static void *flush_thread(void *arg)
{
	return (void *)(intptr_t)vhdx_flush(arg);
}

/* Wait until a slow flush sleeps (at most 2 s). */
static bool wait_in_flush(struct slow_io *s)
{
	for (int i = 0; i < 2000; i++) {
		if (__atomic_load_n(&s->in_flush, __ATOMIC_ACQUIRE))
			return true;
		usleep(1000);
	}
	return false;
}

TEST(slow_flush)
{
	struct mem_io *m = mem_io_new();
	struct slow_io s = {0};
	struct vhdx_io io = {
	    .opaque = &s,
	    .pread = sl_pread,
	    .pwrite = sl_pwrite,
	    .flush = sl_flush,
	    .truncate = sl_truncate,
	    .size = sl_size,
	};
	struct vhdx_image *img = NULL;
	static uint8_t buf[64 * 1024];
	pthread_t th;
	void *res;
	double t0, dt, dz, dn;

	if (!CHECK(m))
		return;
	mem_io_ops(&s.inner, m);
	memset(buf, 0x5A, sizeof(buf));
	if (!create_io(&s.inner, 8 * BS) || !open_io(&io, 0, &img))
		goto out;
	/* block 0 allocated and journaled; block 1 allocated, not yet */
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 0), sizeof(buf));
	CHECK_EQ_INT(vhdx_flush(img), 0);
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), BS), sizeof(buf));

	__atomic_store_n(&s.slow, 1, __ATOMIC_RELEASE);
	CHECK_EQ_INT(pthread_create(&th, NULL, flush_thread, img), 0);
	if (!CHECK(wait_in_flush(&s))) {
		pthread_join(th, NULL);
		goto out;
	}
	t0 = now_ms();
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 4096), sizeof(buf));
	dt = now_ms() - t0;
	t0 = now_ms();
	CHECK_EQ_INT(vhdx_zero(img, BS + 8192, 4096, 0), 0);
	dz = now_ms() - t0;
	/* the flush must still be running: otherwise this proved nothing */
	CHECK(__atomic_load_n(&s.in_flush, __ATOMIC_ACQUIRE));
	unit_note("during a 500 ms fdatasync: overwrite of an allocated "
		  "block took %.2f ms, zeroing part of one %.2f ms",
		  dt, dz);
	CHECK(dt < 50.0);
	CHECK(dz < 50.0);
	/* a new block may wait for the flush (for the allocation) */
	t0 = now_ms();
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 3 * BS), sizeof(buf));
	dn = now_ms() - t0;
	unit_note("a write allocating a new block took %.2f ms", dn);
	pthread_join(th, &res);
	CHECK_EQ_INT((intptr_t)res, 0);
	__atomic_store_n(&s.slow, 0, __ATOMIC_RELEASE);
	CHECK_EQ_INT(vhdx_close(img), 0);
	img = NULL;
	/* everything reads back */
	if (open_io(&s.inner, VHDX_OPEN_RDONLY, &img)) {
		static uint8_t back[64 * 1024], want[64 * 1024];

		memset(want, 0x5A, sizeof(want));
		CHECK_EQ_INT(vhdx_read(img, back, sizeof(back), 4096),
			     sizeof(back));
		CHECK_EQ_MEM(back, want, sizeof(back));
		CHECK_EQ_INT(vhdx_read(img, back, sizeof(back), 3 * BS),
			     sizeof(back));
		CHECK_EQ_MEM(back, want, sizeof(back));
		memset(want + 8192, 0, 4096);
		CHECK_EQ_INT(vhdx_read(img, back, sizeof(back), BS),
			     sizeof(back));
		CHECK_EQ_MEM(back, want, sizeof(back));
	}
out:
	if (img)
		vhdx_close(img);
	mem_io_free(m);
}

/* ---- read-only after a failed flush ---- */

TEST(broken)
{
	struct mem_io *m = mem_io_new();
	struct vhdx_io io;
	struct vhdx_image *img = NULL;
	static uint8_t buf[4096];

	if (!CHECK(m))
		return;
	mem_io_ops(&io, m);
	memset(buf, 0x33, sizeof(buf));
	if (!create_io(&io, 4 * BS) || !open_io(&io, 0, &img))
		goto out;
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 0), sizeof(buf));
	CHECK_EQ_INT(vhdx_is_read_only(img), 0);
	mem_io_fail_flush(m, 1, EIO);
	CHECK_EQ_INT(vhdx_flush(img), -EIO);
	CHECK_EQ_INT(vhdx_is_read_only(img), 1);
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 0), -EROFS);
	CHECK_EQ_INT(vhdx_write(img, buf, sizeof(buf), 2 * BS), -EROFS);
	CHECK_EQ_INT(vhdx_zero(img, 0, 4096, 0), -EROFS);
	CHECK(vhdx_flush(img) < 0);
	/* said once, with the reason */
	CHECK_EQ_INT(sink.n_err, 1);
	CHECK(msgsink_has(&sink, 'E', "flush failed"));
	CHECK(msgsink_has(&sink, 'E', "read-only"));
	if (unit.cur_failed)
		msgsink_dump(&sink);
	CHECK(vhdx_close(img) < 0);
	img = NULL;
out:
	if (img)
		vhdx_close(img);
	mem_io_free(m);
}

/* ---- the image file truncated under an open image ---- */

/* One image of 8 blocks, blocks 0-3 written; *fo2: block 2's data. */
static bool make_four(struct mem_io *m, uint64_t *fo2)
{
	struct vhdx_io io;
	struct vhdx_image *img;
	struct vhdx_mapping mp;
	uint8_t *buf = malloc(4 * BS);
	bool ok;

	mem_io_ops(&io, m);
	if (!CHECK(buf) || !create_io(&io, 8 * BS) || !open_io(&io, 0, &img)) {
		free(buf);
		return false;
	}
	for (uint64_t i = 0; i < 4 * BS; i++)
		buf[i] = pat(7, i);
	ok = CHECK_EQ_INT(vhdx_write(img, buf, 4 * BS, 0), 4 * BS) &&
	     CHECK_EQ_INT(vhdx_map(img, 2 * BS, BS, &mp), 0) &&
	     CHECK_EQ_INT(mp.kind, VHDX_MAP_FILE);
	*fo2 = mp.file_offset;
	ok = CHECK_EQ_INT(vhdx_close(img), 0) && ok;
	free(buf);
	return ok;
}

static void truncated(unsigned int flags)
{
	struct mem_io *m = mem_io_new();
	struct vhdx_io io;
	struct vhdx_image *img = NULL;
	uint8_t *buf = malloc(BS);
	uint64_t fo2 = 0, cut;

	if (!CHECK(m && buf) || !make_four(m, &fo2))
		goto out;
	mem_io_ops(&io, m);
	if (!open_io(&io, flags, &img))
		goto out;
	/* another program cuts the file in the middle of block 2 */
	cut = fo2 + BS / 2;
	mem_io_set_size(m, cut);
	/* what is still in the file reads as before */
	CHECK_EQ_INT(vhdx_read(img, buf, BS, 0), BS);
	CHECK(buf[0] == pat(7, 0) && buf[BS - 1] == pat(7, BS - 1));
	CHECK_EQ_INT(vhdx_read(img, buf, BS / 2, 2 * BS), BS / 2);
	CHECK(buf[BS / 2 - 1] == pat(7, 2 * BS + BS / 2 - 1));
	/* never-written blocks still read as zeros */
	CHECK_EQ_INT(vhdx_read(img, buf, 4096, 6 * BS), 4096);
	CHECK(buf[0] == 0 && buf[4095] == 0);
	CHECK_EQ_INT(sink.n_err, 0);
	/* the lost part: EIO, never zeros or a short read */
	CHECK_EQ_INT(vhdx_read(img, buf, 4096, 2 * BS + BS / 2), -EIO);
	CHECK_EQ_INT(vhdx_read(img, buf, BS, 2 * BS), -EIO);
	CHECK_EQ_INT(vhdx_read(img, buf, 4096, 3 * BS + 4096), -EIO);
	CHECK_EQ_INT(vhdx_read(img, buf, 4096, 3 * BS), -EIO);
	/* reported once, whatever the number of reads */
	CHECK_EQ_INT(sink.n_err, 1);
	CHECK(msgsink_has(&sink, 'E', "truncated"));
	if (unit.cur_failed)
		msgsink_dump(&sink);
	/* reading changed nothing */
	CHECK_EQ_U64(mem_io_get_size(m), cut);
	vhdx_close(img);
	img = NULL;
out:
	if (img)
		vhdx_close(img);
	free(buf);
	mem_io_free(m);
}

TEST(truncated_ro)
{
	truncated(VHDX_OPEN_RDONLY);
}

TEST(truncated_rw)
{
	truncated(0);
}

int main(void)
{
	RUN_TEST(stress);
	RUN_TEST(stress_differencing);
	RUN_TEST(slow_flush);
	RUN_TEST(broken);
	RUN_TEST(truncated_ro);
	RUN_TEST(truncated_rw);
	return unit_done();
}
