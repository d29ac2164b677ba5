#!/usr/bin/env python3
"""cmpranges.py FILE ORACLE [--count N] [--seed S] [--block-size B]

Read the same byte ranges from FILE (what vhdxfuse exposes) and ORACLE (the
raw conversion made by another implementation) and compare them.  The ranges
are: COUNT random ones (random offsets, lengths from 1 byte to a few MiB,
mostly unaligned), ranges straddling the first few and the last block
boundaries and the 4 GiB chunk boundary, and ranges running past the end of
the disk (short reads must agree too).  Prints every mismatch and exits 1 if
there is one; the seed is printed so a failure can be replayed.
"""

import argparse
import os
import random
import sys


def ranges(size, count, rng, bs):
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            ln = rng.randint(1, 4096)
        elif kind < 0.8:
            ln = rng.randint(4097, 1 << 20)
        else:
            ln = rng.randint(1 << 20, 4 << 20)
        off = rng.randrange(0, max(size, 1))
        out.append((off, ln))
    edges = [bs * k for k in range(1, 4)]
    edges += [size - size % bs, size - bs, 1 << 32]
    for e in edges:
        if 0 < e < size:
            out.append((max(0, e - 7), 19))
            out.append((max(0, e - 4096), 8192))
            out.append((max(0, e - 513), 3 * 4096 + 1))
    out.append((0, 1))
    out.append((size - 1, 1))
    out.append((max(0, size - 100), 300))   # crosses the end
    out.append((size, 4096))                # at the end: empty
    out.append((size + 12345, 10))          # past the end: empty
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("oracle")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--block-size", type=int, default=1 << 20)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    fa = os.open(a.file, os.O_RDONLY)
    fb = os.open(a.oracle, os.O_RDONLY)
    size = os.fstat(fb).st_size
    bad = 0
    rs = ranges(size, a.count, rng, a.block_size)
    for off, ln in rs:
        x = os.pread(fa, ln, off)
        y = os.pread(fb, ln, off)
        if x != y:
            bad += 1
            first = next((i for i in range(min(len(x), len(y)))
                          if x[i] != y[i]), min(len(x), len(y)))
            print("MISMATCH off=%d len=%d: got %d bytes, oracle %d; first "
                  "difference at +%d (byte %d)" %
                  (off, ln, len(x), len(y), first, off + first))
    print("cmpranges: seed=%d ranges=%d mismatches=%d" % (seed, len(rs), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
