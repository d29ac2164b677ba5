#!/usr/bin/env python3
"""diff-writes.py - apply the same seeded writes to several files.

Used by tests/differencing.bats: the files are the disk a vhdxfuse mount
exposes and a raw reference, so that after the writes both must read the
same.  The writes are drawn from --seed and mix what a differencing image
must get right: unaligned writes (not sector aligned, crossing sector and
block boundaries), whole payload blocks, and zero-writes (explicit zeros,
also over data the parent holds, which the child must then show as zeros).

Usage: diff-writes.py --seed N --block-size B [--count C] FILE...
"""

import argparse
import os
import random
import sys


def plan(seed, size, bs, count):
    """The list of (offset, data) writes, in order."""
    rnd = random.Random(seed)
    blocks = size // bs
    out = []

    def data(n):
        return rnd.randbytes(n)

    # fixed edge cases first: the first and the last sector, unaligned
    out.append((0, data(700)))
    out.append((size - 333, data(333)))
    for i in range(count):
        kind = i % 6
        if kind == 0:  # unaligned, small
            n = rnd.randint(1, 5000)
            off = rnd.randrange(0, size - n)
        elif kind == 1:  # unaligned, across a block boundary
            b = rnd.randrange(1, blocks)
            n = rnd.randint(2, 3 * 4096 + 17)
            off = b * bs - rnd.randint(1, n - 1)
        elif kind == 2:  # a whole payload block
            off = rnd.randrange(0, blocks) * bs
            n = bs
        elif kind == 3:  # zeros, unaligned, maybe over parent data
            n = rnd.randint(1, 70000)
            off = rnd.randrange(0, size - n)
            out.append((off, bytes(n)))
            continue
        elif kind == 4:  # a whole block of zeros
            off = rnd.randrange(0, blocks) * bs
            out.append((off, bytes(bs)))
            continue
        else:  # larger, unaligned, several sectors and maybe blocks
            n = rnd.randint(4096, 300000)
            off = rnd.randrange(0, size - n)
        out.append((off, data(n)))
    return out


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--block-size", type=int, required=True)
    ap.add_argument("--count", type=int, default=36)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    sizes = {os.path.getsize(f) for f in a.files}
    if len(sizes) != 1:
        sys.exit("diff-writes.py: the files differ in size: %s" % sizes)
    size = sizes.pop()
    writes = plan(a.seed, size, a.block_size, a.count)
    for f in a.files:
        fd = os.open(f, os.O_WRONLY)
        try:
            for off, buf in writes:
                done = 0
                while done < len(buf):
                    done += os.pwrite(fd, buf[done:], off + done)
            os.fsync(fd)
        finally:
            os.close(fd)
    zero = sum(1 for _, b in writes if not any(b))
    print("%d writes (%d of zeros), %d bytes" %
          (len(writes), zero, sum(len(b) for _, b in writes)))


if __name__ == "__main__":
    main(sys.argv[1:])
