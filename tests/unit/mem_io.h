/*
 * mem_io.h - an in-memory struct vhdx_io backend for the unit tests.
 *
 * The "file" is sparse: it is stored as 64 KiB chunks allocated on first
 * write, so an image with a 4 GiB chunk or 256 MiB blocks costs only the
 * memory of the bytes actually written.  Unwritten bytes below the size
 * read as zeros; pread returns a short count at end of file.
 *
 * Every call through the vhdx_io table is counted, so a test can assert that
 * a read-only open wrote nothing, and a single pread, pwrite or flush can be
 * made to fail with a chosen errno (fault injection).  The mem_io_get/put
 * helpers bypass both the counters and the faults: they are for building and
 * corrupting images.
 */
#ifndef MEM_IO_H
#define MEM_IO_H

#include <stddef.h>
#include <stdint.h>

#include "vhdx.h"

#define MEM_IO_CHUNK (64u * 1024u)

struct mem_io;

struct mem_io_counts {
	unsigned long pread;
	unsigned long pwrite;
	unsigned long flush;
	unsigned long truncate;
	unsigned long size;
	uint64_t bytes_read;
	uint64_t bytes_written;
	/* preads that touched the range set by mem_io_watch */
	unsigned long watch_reads;
	uint64_t watch_bytes;	     /* bytes read inside the range */
	uint64_t watch_lo, watch_hi; /* span of those bytes (hi exclusive) */
};

/* An empty file; NULL if out of memory. */
struct mem_io *mem_io_new(void);
void mem_io_free(struct mem_io *m);

/* Fill an ops table whose callbacks act on m. */
void mem_io_ops(struct vhdx_io *io, struct mem_io *m);

/* Direct access, not counted, never failing (except out of memory: abort). */
void mem_io_put(struct mem_io *m, uint64_t off, const void *buf, size_t len);
/* Reads zeros past the end of file; returns the bytes that were inside. */
size_t mem_io_get(struct mem_io *m, uint64_t off, void *buf, size_t len);
void mem_io_set_size(struct mem_io *m, uint64_t size);
uint64_t mem_io_get_size(struct mem_io *m);

/* Little-endian field helpers on file offsets. */
uint32_t mem_io_get_le32(struct mem_io *m, uint64_t off);
uint64_t mem_io_get_le64(struct mem_io *m, uint64_t off);
void mem_io_put_le16(struct mem_io *m, uint64_t off, uint16_t v);
void mem_io_put_le32(struct mem_io *m, uint64_t off, uint32_t v);
void mem_io_put_le64(struct mem_io *m, uint64_t off, uint64_t v);

/*
 * Count, in the watch_* counters, what preads read of [off, off + len) (one
 * range per mem_io; len 0 stops watching).  E.g. the BAT region.
 */
void mem_io_watch(struct mem_io *m, uint64_t off, uint64_t len);

/* Counters of calls made through the ops table. */
void mem_io_get_counts(struct mem_io *m, struct mem_io_counts *c);
void mem_io_reset_counts(struct mem_io *m);
/* pwrite + flush + truncate calls since the last reset. */
unsigned long mem_io_modifications(struct mem_io *m);

/*
 * Make the nth following call (1 = the next one) of that kind fail with
 * -err.  n = 0 cancels.  The failing pwrite/truncate changes nothing.
 */
void mem_io_fail_pread(struct mem_io *m, unsigned long n, int err);
void mem_io_fail_pwrite(struct mem_io *m, unsigned long n, int err);
void mem_io_fail_flush(struct mem_io *m, unsigned long n, int err);

/* Bytes of memory holding file data (allocated chunks). */
uint64_t mem_io_allocated(struct mem_io *m);

/* A digest of size and contents: equal digests mean "unchanged". */
uint64_t mem_io_digest(struct mem_io *m);

#endif /* MEM_IO_H */
