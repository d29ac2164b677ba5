#!/usr/bin/env python3
"""seekmap.py - the data extents of a file as lseek(2) SEEK_DATA/SEEK_HOLE
report them, for tests.

Usage:
  seekmap.py FILE             print "START LENGTH" per data extent
  seekmap.py FILE --at OFF    print what SEEK_DATA and SEEK_HOLE answer at
                              OFF ("ENXIO" for that error)
  seekmap.py qemu-map JSON    print the data extents of a `qemu-img map
                              --output=json` answer, adjacent ones merged
"""
import errno
import json
import os
import sys


def seek(fd, off, whence):
    try:
        return str(os.lseek(fd, off, whence))
    except OSError as e:
        if e.errno == errno.ENXIO:
            return "ENXIO"
        raise


def data_extents(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos, out = 0, []
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            if h <= d:
                sys.exit("SEEK_HOLE at %d answered %d" % (d, h))
            out.append((d, h - d))
            pos = h
        return out
    finally:
        os.close(fd)


def qemu_extents(path):
    with open(path) as f:
        m = json.load(f)
    out = []
    for e in m:
        if not e.get("data"):
            continue
        if out and out[-1][0] + out[-1][1] == e["start"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"])
        else:
            out.append((e["start"], e["length"]))
    return out


def main(argv):
    if len(argv) == 3 and argv[1] == "qemu-map":
        ext = qemu_extents(argv[2])
    elif len(argv) == 4 and argv[2] == "--at":
        fd = os.open(argv[1], os.O_RDONLY)
        off = int(argv[3], 0)
        print(seek(fd, off, os.SEEK_DATA), seek(fd, off, os.SEEK_HOLE))
        os.close(fd)
        return 0
    elif len(argv) == 2:
        ext = data_extents(argv[1])
    else:
        sys.exit(__doc__)
    for s, n in ext:
        print(s, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
