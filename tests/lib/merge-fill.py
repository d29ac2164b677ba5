#!/usr/bin/env python3
"""Write the same scattered data into several files (a disk and its raw
reference): TOTAL bytes in pieces of 512 bytes to 3 MiB at sector-aligned
random offsets below SIZE.  The bytes come from a random pool at random
places, so a piece written to the wrong place or left out shows in a
checksum.

usage: merge-fill.py SEED TOTAL SIZE FILE...
"""
import os
import random
import sys


def main():
    seed, total, size = (int(v, 0) for v in sys.argv[1:4])
    files = sys.argv[4:]
    r = random.Random(seed)
    pool = r.randbytes(16 << 20)
    fds = [os.open(f, os.O_WRONLY) for f in files]
    done = 0
    while done < total:
        n = r.choice([512, 4096, 65536, 1 << 20, 3 << 20])
        n += r.randrange(0, 8) * 512
        off = r.randrange(0, (size - n) // 512) * 512
        start = r.randrange(0, len(pool) - n)
        piece = pool[start:start + n]
        for fd in fds:
            os.pwrite(fd, piece, off)
        done += n
    for fd in fds:
        os.fsync(fd)
        os.close(fd)


if __name__ == "__main__":
    main()
