#!/usr/bin/env python3
"""write-apply.py [options] TARGET REFERENCE

Apply the same seeded, deterministic set of writes to TARGET (the disk file
that vhdxfuse exposes) and to REFERENCE (a raw file of the same size that
another implementation produced), with os.pwrite, then fsync both.  After
unmounting, the image must equal REFERENCE according to qemu-img compare (or
vhdimount): the oracle is never this script or vhdxfuse.

The writes mix (see plan()): random unaligned offsets and lengths from one
byte to several MiB; writes straddling payload-block boundaries and the
chunk boundary (--chunk, the virtual bytes that one sector-bitmap entry
covers); writes into and up to the end of the last, partial block; rewrites
of ranges written before; writes of all-zero data.  Nothing is written past
the end of the disk.

--threads K splits the disk into stripes of --stripe bytes owned by thread
(stripe number mod K), cuts every planned write at stripe boundaries, and
lets K threads write their own pieces concurrently (each thread in plan
order, with an fsync every --sync-every pieces).  The stripes are small and
unaligned, so threads share payload blocks and BAT sectors.  Since pieces of
different threads never overlap, applying every piece to REFERENCE in plan
order gives the same bytes.

--readback re-reads every written range from TARGET before returning and
compares it with REFERENCE (read-your-writes through the mount).

Prints one summary line with the seed; exits 1 (with the failing operation
and errno) if any write, fsync or read-back fails.
"""

import argparse
import os
import random
import sys
import threading

MiB = 1 << 20


def plan(rng, size, bs, chunk, count):
    """A list of (offset, length, kind) inside [0, size)."""
    out = []
    nblocks = (size + bs - 1) // bs
    last_start = (nblocks - 1) * bs

    def add(off, ln, kind):
        off = max(0, min(off, size - 1))
        ln = max(1, min(ln, size - off))
        out.append((off, ln, kind))

    def rand_len():
        r = rng.random()
        if r < 0.35:
            return rng.randint(1, 4096)
        if r < 0.75:
            return rng.randint(4097, 256 * 1024)
        return rng.randint(256 * 1024, 4 * MiB + 777)

    # Fixed cases first, so that even a small count covers them.
    if nblocks > 1:
        add(bs - 1, 2, "block-edge")
        add(bs - 4096, 8192 + 513, "block-edge")
    add(0, 1, "first-byte")
    add(size - 1, 1, "last-byte")
    add(last_start, size - last_start, "last-block-whole")
    add(size - 4096 - 333, 4096 + 333, "to-end")
    if chunk and size > chunk:
        add(chunk - 3000, 7000, "chunk-edge")
    while len(out) < count:
        r = rng.random()
        if r < 0.35:
            add(rng.randrange(size), rand_len(), "random")
        elif r < 0.55 and nblocks > 1:
            k = rng.randint(1, nblocks - 1)
            before = rng.randint(1, min(bs, 300000))
            add(k * bs - before, before + rng.randint(1, 300000),
                "block-edge")
        elif r < 0.62 and nblocks > 2 and bs <= 2 * MiB:
            # spans three or more blocks
            k = rng.randint(1, nblocks - 2)
            add(k * bs - rng.randint(1, 4096), bs + rng.randint(2, bs),
                "multi-block")
        elif r < 0.68 and chunk and size > chunk:
            j = rng.randint(1, (size - 1) // chunk)
            add(j * chunk - rng.randint(1, 200000), rng.randint(2, 400000),
                "chunk-edge")
        elif r < 0.78:
            off = last_start + rng.randrange(size - last_start)
            add(off, rng.choice([size - off, rng.randint(1, 70000)]),
                "last-block")
        elif out:
            # rewrite part of an earlier range, shifted a little
            o, ln, _ = rng.choice(out)
            add(o + rng.randint(-5000, 5000), rng.randint(1, ln + 9000),
                "rewrite")
    return out[:count]


def data_for(seed, i, ln, zero):
    if zero:
        return bytes(ln)
    return random.Random("%d:%d" % (seed, i)).randbytes(ln)


def pwrite_all(fd, buf, off, what):
    done = 0
    while done < len(buf):
        n = os.pwrite(fd, buf[done:], off + done)
        if n <= 0:
            raise OSError(0, "short write (%d) at %d on %s" %
                          (n, off + done, what))
        done += n


def pieces_of(writes, stripe, threads):
    """Cut every write at stripe boundaries: (thread, off, len, i, delta)."""
    out = []
    for i, (off, ln, _kind) in enumerate(writes):
        pos = off
        while pos < off + ln:
            end = min(off + ln, (pos // stripe + 1) * stripe)
            out.append(((pos // stripe) % threads, pos, end - pos, i,
                        pos - off))
            pos = end
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("reference")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--block-size", type=int, default=32 * MiB)
    ap.add_argument("--chunk", type=int, default=0,
                    help="virtual bytes per chunk (0: none)")
    ap.add_argument("--zero-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stripe", type=int, default=196613)
    ap.add_argument("--sync-every", type=int, default=64)
    ap.add_argument("--readback", action="store_true")
    a = ap.parse_args()

    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    tfd = os.open(a.target, os.O_RDWR)
    rfd = os.open(a.reference, os.O_RDWR)
    size = os.fstat(tfd).st_size
    if os.fstat(rfd).st_size != size:
        print("write-apply: %s is %d bytes, %s %d" %
              (a.target, size, a.reference, os.fstat(rfd).st_size))
        return 2
    writes = plan(rng, size, a.block_size, a.chunk, a.count)
    zero = [rng.random() < a.zero_fraction for _ in writes]
    total = sum(ln for _, ln, _ in writes)
    print("write-apply: seed=%d writes=%d bytes=%d threads=%d size=%d" %
          (seed, len(writes), total, a.threads, size), flush=True)

    cache = {}

    def data(i):
        # threads ask for pieces of the same write: keep the last few
        d = cache.get(i)
        if d is None:
            off, ln, _ = writes[i]
            d = data_for(seed, i, ln, zero[i])
            if len(cache) > 64:
                cache.clear()
            cache[i] = d
        return d

    errors = []
    if a.threads <= 1:
        try:
            for i, (off, ln, kind) in enumerate(writes):
                d = data(i)
                pwrite_all(tfd, d, off, a.target)
                pwrite_all(rfd, d, off, a.reference)
        except OSError as e:
            errors.append("write %d (%s) off=%d len=%d: %s" %
                          (i, kind, off, ln, e))
    else:
        pieces = pieces_of(writes, a.stripe, a.threads)
        # precompute the data so that threads spend their time in pwrite
        datas = [data_for(seed, i, ln, zero[i])
                 for i, (_o, ln, _k) in enumerate(writes)]

        def worker(t):
            n = 0
            try:
                for th, off, ln, i, delta in pieces:
                    if th != t:
                        continue
                    pwrite_all(tfd, datas[i][delta:delta + ln], off,
                               a.target)
                    n += 1
                    if n % a.sync_every == 0:
                        os.fsync(tfd)
            except OSError as e:
                errors.append("thread %d piece off=%d len=%d: %s" %
                              (t, off, ln, e))

        ts = [threading.Thread(target=worker, args=(t,))
              for t in range(a.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for th, off, ln, i, delta in pieces:
            pwrite_all(rfd, datas[i][delta:delta + ln], off, a.reference)
        print("write-apply: %d pieces over %d threads" %
              (len(pieces), a.threads))
    try:
        os.fsync(tfd)
    except OSError as e:
        errors.append("fsync of %s: %s" % (a.target, e))
    os.fsync(rfd)
    if not errors and a.readback:
        bad = 0
        for off, ln, kind in writes:
            x = os.pread(tfd, ln, off)
            y = os.pread(rfd, ln, off)
            if x != y:
                bad += 1
                first = next((k for k in range(min(len(x), len(y)))
                              if x[k] != y[k]), min(len(x), len(y)))
                errors.append("read-back mismatch off=%d len=%d (%s): "
                              "first difference at byte %d" %
                              (off, ln, kind, off + first))
                if bad > 10:
                    break
    try:
        os.close(tfd)
    except OSError as e:
        errors.append("close of %s: %s" % (a.target, e))
    os.close(rfd)
    for e in errors:
        print("write-apply: FAILED: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
