/*
 * rec_io.h - two struct vhdx_io backends for the crash-consistency test.
 *
 * rec_io records: it passes every call through to a mem_io (the "live"
 * file) and keeps, in order, every pwrite (offset, length and a copy of the
 * data), flush, truncate and zero (punch hole or zero range) that
 * succeeded.  From that record the test rebuilds the file as it could be on
 * disk after a power cut.  It can also make the nth pwrite, flush, truncate
 * or zero fail (fault injection), and be frozen: from then on every
 * modification is silently dropped, which lets a test free an image "at the
 * moment of the crash" with vhdx_close.
 *
 * cow_io is a copy-on-write view of a mem_io: reads see the base file,
 * writes and truncates go to a private overlay of 4 KiB pages, so many crash
 * states can share one base image and be opened read-write without
 * disturbing each other or the base.
 *
 * Neither backend has an allocate callback (it is NULL).  rec_io has a zero
 * callback (fallocate PUNCH_HOLE / ZERO_RANGE with KEEP_SIZE): the range,
 * clipped at the end of file, reads as zeros and the size stays; the modes
 * it supports are chosen with rec_io_zero_modes, the others return
 * -EOPNOTSUPP (like tmpfs, which has no ZERO_RANGE).  cow_io has none.
 */
#ifndef REC_IO_H
#define REC_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem_io.h"
#include "vhdx.h"

/* ---- recording backend ---- */

enum rec_kind {
	REC_PWRITE = 0,
	REC_FLUSH = 1,
	REC_TRUNCATE = 2,
	REC_ZERO = 3,
};

#define REC_KINDS 4

/* Modes of the zero callback (rec_io_zero_modes). */
#define REC_ZERO_RANGE 0x1u /* unmap == 0 */
#define REC_PUNCH_HOLE 0x2u /* unmap != 0 */

struct rec_op {
	enum rec_kind kind;
	uint64_t off;  /* pwrite, zero: file offset; truncate: the new size */
	size_t len;    /* pwrite, zero: byte count (zero: maybe past EOF) */
	uint8_t *data; /* pwrite: copy of the bytes written */
	bool unmap;    /* zero: a punched hole, not a zeroed range */
};

/* What the injected fault hit (valid once rec_io_fault_fired is true). */
struct rec_fault {
	enum rec_kind kind;
	uint64_t off;	/* pwrite or zero offset, or truncate size */
	size_t len;	/* pwrite or zero length */
	size_t rec_pos; /* number of recorded ops before the failed call */
	int err;	/* positive errno returned (negated) by the call */
};

struct rec_io;

/* A recorder in front of file (which it does not own); NULL on ENOMEM. */
struct rec_io *rec_io_new(struct mem_io *file);
void rec_io_free(struct rec_io *r);
void rec_io_ops(struct vhdx_io *io, struct rec_io *r);
/* Which zero modes succeed (REC_ZERO_RANGE | REC_PUNCH_HOLE, the default). */
void rec_io_zero_modes(struct rec_io *r, unsigned int modes);

/* Recorded operations, oldest first. */
size_t rec_io_count(struct rec_io *r);
const struct rec_op *rec_io_op(struct rec_io *r, size_t i);
/* Index of the newest recorded flush, or -1. */
long rec_io_last_flush(struct rec_io *r);

/* Drop (do not apply, do not record) every later modification. */
void rec_io_freeze(struct rec_io *r);

/*
 * Make the nth following call (1 = the next one) of that kind fail with
 * -err; it changes nothing and is not recorded.  n = 0 cancels.
 */
void rec_io_fail(struct rec_io *r, enum rec_kind kind, unsigned long n,
		 int err);
/* True once the armed fault has fired; *f (may be NULL) describes it. */
bool rec_io_fault_fired(struct rec_io *r, struct rec_fault *f);
/* Calls of each kind seen so far (failed ones included). */
unsigned long rec_io_calls(struct rec_io *r, enum rec_kind kind);

/* ---- copy-on-write backend ---- */

struct cow_io;

/* A view of base, initially equal to it; NULL on ENOMEM. */
struct cow_io *cow_io_new(struct mem_io *base);
void cow_io_free(struct cow_io *c);
void cow_io_ops(struct vhdx_io *io, struct cow_io *c);

/* Direct access, not counted (building crash states). */
void cow_io_put(struct cow_io *c, uint64_t off, const void *buf, size_t len);
void cow_io_set_size(struct cow_io *c, uint64_t size);
uint64_t cow_io_get_size(struct cow_io *c);
/* Read [off, off+len), zeros past the end of file. */
void cow_io_get(struct cow_io *c, uint64_t off, void *buf, size_t len);

/* pwrite + flush + truncate calls made through the ops table. */
unsigned long cow_io_modifications(struct cow_io *c);

/* Write the whole file to path (sparse where zero): 0 or -errno. */
int cow_io_save(struct cow_io *c, const char *path);

#endif /* REC_IO_H */
