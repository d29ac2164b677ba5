#!/usr/bin/env python3
"""mkfiles.py DIR COUNT SEED: fill DIR with COUNT files of random content
and varied sizes (empty, a few bytes, unaligned sizes, up to several MiB) in
nested subdirectories.  Deterministic for a given SEED (for reproducing a
failure); the content itself comes from a seeded generator."""

import os
import random
import sys


def main():
    top, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    dirs = [top]
    for i in range(24):
        parent = rng.choice(dirs)
        d = os.path.join(parent, "dir%02d" % i)
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
    total = 0
    for i in range(count):
        r = rng.random()
        if r < 0.05:
            size = 0
        elif r < 0.45:
            size = rng.randint(1, 8192)
        elif r < 0.85:
            size = rng.randint(8193, 256 * 1024)
        elif r < 0.97:
            size = rng.randint(256 * 1024, 1 << 20)
        else:
            size = rng.randint(1 << 20, 6 << 20)
        path = os.path.join(rng.choice(dirs), "f%04d.bin" % i)
        with open(path, "wb") as f:
            f.write(rng.randbytes(size))
        total += size
    print("mkfiles: %d files, %d bytes, seed %d" % (count, total, seed))


if __name__ == "__main__":
    main()
