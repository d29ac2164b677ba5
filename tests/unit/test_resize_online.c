/*
 * test_resize_online.c - vhdx_resize growing an image while other threads
 * read and write it (the online grow of vhdxfuse).
 *
 * Four writer threads write 4 KiB slots they own (slot % 4 == thread) at
 * random places below the size they see, each slot tagged with its offset
 * and a sequence number, and read back slots they wrote earlier; a reader
 * thread reads across the current end.  Meanwhile the main thread grows the
 * disk 40 times, the last time past the BAT region (the BAT moves and its
 * array is replaced).  Every read must show the last write of its slot or
 * zeros for a slot never written; after close and reopen every slot must.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem_io.h"
#include "vhdx.h"

#define MiB	(1024ull * 1024)
#define GiB	(1024 * MiB)
#define SLOT	4096u
#define WRITERS 4
#define MAX_REC 4096

struct slotrec {
	uint64_t off;
	uint64_t seq;
};

struct writer {
	int id;
	struct vhdx_image *img;
	struct slotrec rec[MAX_REC];
	size_t n;
	uint64_t rng;
	int failed;
};

static int stop; /* atomic */

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint8_t *b, uint64_t off, uint64_t seq)
{
	for (unsigned int i = 0; i < SLOT; i += 16) {
		memcpy(b + i, &off, 8);
		memcpy(b + i + 8, &seq, 8);
	}
}

/* The newest record of slot off in w, or NULL. */
static struct slotrec *find(struct writer *w, uint64_t off)
{
	for (size_t k = w->n; k-- > 0;)
		if (w->rec[k].off == off)
			return &w->rec[k];
	return NULL;
}

static int check_slot(struct vhdx_image *img, const struct slotrec *r)
{
	uint8_t got[SLOT], want[SLOT];

	if (vhdx_read(img, got, SLOT, r->off) != SLOT)
		return -1;
	fill(want, r->off, r->seq);
	return memcmp(got, want, SLOT) ? -1 : 0;
}

static void *writer_main(void *p)
{
	struct writer *w = p;
	uint8_t buf[SLOT];
	uint64_t seq = 0;

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED) && w->n < MAX_REC) {
		uint64_t slots = vhdx_virtual_size(w->img) / SLOT;
		uint64_t s = rnd(&w->rng) % slots;

		s = s - s % WRITERS + (uint64_t)w->id;
		if (s >= slots)
			continue;
		fill(buf, s * SLOT, ++seq);
		if (vhdx_write(w->img, buf, SLOT, s * SLOT) != SLOT) {
			fprintf(stderr,
				"writer %d: write at %" PRIu64 " failed\n",
				w->id, s * SLOT);
			w->failed = 1;
			break;
		}
		w->rec[w->n++] = (struct slotrec){s * SLOT, seq};
		/* an earlier slot still reads as last written */
		{
			struct slotrec *r =
			    find(w, w->rec[rnd(&w->rng) % w->n].off);

			if (check_slot(w->img, r)) {
				fprintf(stderr,
					"writer %d: slot %" PRIu64 " reads "
					"wrong\n",
					w->id, r->off);
				w->failed = 1;
				break;
			}
		}
	}
	return NULL;
}

static int reader_failed;

static void *reader_main(void *p)
{
	struct vhdx_image *img = p;
	uint8_t *buf = malloc(2 * MiB);

	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED) && buf) {
		uint64_t vs = vhdx_virtual_size(img);
		long n = vhdx_read(img, buf, 2 * MiB, vs - MiB);

		/* the size may have grown in between: never an error */
		if (n < (long)MiB) {
			fprintf(stderr, "reader: %ld bytes at the end\n", n);
			reader_failed = 1;
			break;
		}
	}
	free(buf);
	return NULL;
}

int main(void)
{
	struct mem_io *m = mem_io_new();
	struct vhdx_io io;
	struct vhdx_create_opts co = {.type = VHDX_TYPE_DYNAMIC,
				      .virtual_size = 4 * MiB,
				      .block_size = MiB,
				      .logical_sector = 512};
	struct vhdx_open_opts oo = {0};
	static struct writer w[WRITERS];
	pthread_t th[WRITERS], rt;
	struct vhdx_image *img;
	uint64_t size = 4 * MiB, rs = 7;
	int failed = 0;

	mem_io_ops(&io, m);
	if (vhdx_create(&io, &co) || vhdx_open(&img, &io, &oo)) {
		printf("Bail out! cannot create the image\n");
		return 99;
	}
	for (int t = 0; t < WRITERS; t++) {
		w[t] = (struct writer){.id = t, .img = img, .rng = 11 + t};
		pthread_create(&th[t], NULL, writer_main, &w[t]);
	}
	pthread_create(&rt, NULL, reader_main, img);
	for (int k = 0; k < 40 && !failed; k++) {
		size += (1 + rnd(&rs) % 64) * MiB + 512 * (rnd(&rs) % 64);
		if (k == 39)
			size = 130 * GiB; /* past the 1 MiB BAT region */
		if (vhdx_resize(img, size, 0)) {
			fprintf(stderr, "grow %d to %" PRIu64 " failed\n", k,
				size);
			failed = 1;
		}
		if (vhdx_virtual_size(img) != size)
			failed = 1;
		/* let the writers use the new size before the next grow */
		nanosleep(&(struct timespec){.tv_nsec = 3000000}, NULL);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(rt, NULL);
	for (int t = 0; t < WRITERS; t++) {
		pthread_join(th[t], NULL);
		failed |= w[t].failed;
	}
	failed |= reader_failed;
	if (vhdx_close(img) || vhdx_open(&img, &io, &oo)) {
		printf("not ok 1 - close and reopen after the grows\n1..1\n");
		return 1;
	}
	if (vhdx_virtual_size(img) != size)
		failed = 1;
	for (int t = 0; t < WRITERS; t++)
		for (size_t k = 0; k < w[t].n; k++)
			if (find(&w[t], w[t].rec[k].off) == &w[t].rec[k] &&
			    check_slot(img, &w[t].rec[k])) {
				fprintf(stderr,
					"after reopen: slot %" PRIu64
					" reads wrong\n",
					w[t].rec[k].off);
				failed = 1;
			}
	vhdx_close(img);
	mem_io_free(m);
	printf("%s 1 - 40 grows to %" PRIu64 " bytes under %zu+%zu+%zu+%zu "
	       "writes\n1..1\n",
	       failed ? "not ok" : "ok", size, w[0].n, w[1].n, w[2].n, w[3].n);
	return failed;
}
