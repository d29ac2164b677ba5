#!/usr/bin/env python3
"""batextents.py - the data extents of a VHDX virtual disk computed from the
BATs alone (decoded by vhdxedit.py, independently of the C library), for
tests of SEEK_DATA/SEEK_HOLE and `vhdxtool map`.

Usage:
  batextents.py IMAGE [PARENT [GRANDPARENT...]]
      print "START LENGTH" per data extent of the disk (adjacent data
      merged): a block is data if the first image of the chain (IMAGE, then
      its parents) whose entry is not NOT_PRESENT has it FULLY_PRESENT;
      ZERO, UNMAPPED and UNDEFINED entries, and NOT_PRESENT at the bottom,
      read as zeros.
  batextents.py --map IMAGE [PARENT...]
      print "START LENGTH DEPTH OFFSET" per data extent, merged only where
      the depth is the same and the file offsets follow on (vhdxtool map
      also splits where the BAT state changes: compare with the states
      merged away).

PARTIALLY_PRESENT blocks are resolved sector by sector through their sector
bitmaps: a sector whose bit is 1 is data of that image, one whose bit is 0
reads what the parent shows.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdxedit  # noqa: E402


SECTORS_PER_CHUNK = 1 << 23


class Layer:
    def __init__(self, path):
        self.img = vhdxedit.Img(path)
        self.g = self.img.geometry()
        self.cr = self.g["chunk_ratio"]
        n = self.g["payload_blocks"]
        total = n + (n - 1) // self.cr
        raw = self.img.read(self.g["bat_offset"], 8 * total)
        self.bat = struct.unpack_from("<%dQ" % total, raw)
        self.bitmaps = {}

    def entry(self, pb):
        return self.bat[pb + pb // self.cr]

    def bit(self, sector):
        """The sector bitmap bit of a virtual sector (fmt §9)."""
        chunk = sector // SECTORS_PER_CHUNK
        if chunk not in self.bitmaps:
            i = chunk * (self.cr + 1) + self.cr
            e = self.img.read(self.g["bat_offset"] + 8 * i, 8)
            e = struct.unpack("<Q", e)[0]
            if e & 7 != 6:
                sys.exit("chunk %d: no sector bitmap" % chunk)
            self.bitmaps[chunk] = self.img.read(e & ~0xFFFFF, 1 << 20)
        b = sector % SECTORS_PER_CHUNK
        return self.bitmaps[chunk][b // 8] >> (b % 8) & 1


def piece(layers, depth, start, length):
    """The data pieces of [start, start + length), inside one block of
    every layer from depth down, as (start, length, depth, offset)."""
    if depth == len(layers):
        return  # NOT_PRESENT all the way down: zeros
    g = layers[depth].g
    if start >= g["virtual_size"]:
        return  # a smaller parent: zeros
    length = min(length, g["virtual_size"] - start)
    bs = g["block_size"]
    e = layers[depth].entry(start // bs)
    state, base = e & 7, (e & ~0xFFFFF) + start % bs
    if state == 6:
        yield start, length, depth, base
    elif state == 0:
        yield from piece(layers, depth + 1, start, length)
    elif state == 7:
        lss = g["logical_sector_size"]
        for s in range(start, start + length, lss):
            n = min(lss, start + length - s)
            if layers[depth].bit(s // lss):
                yield s, n, depth, base + (s - start)
            else:
                yield from piece(layers, depth + 1, s, n)
    # ZERO, UNMAPPED, UNDEFINED: zeros


def blocks(layers):
    """(start, length, depth, offset) of every data piece, in order."""
    vs = layers[0].g["virtual_size"]
    # the smallest block size of the chain: pieces never straddle blocks
    step = min(layer.g["block_size"] for layer in layers)
    for start in range(0, vs, step):
        yield from piece(layers, 0, start, min(step, vs - start))


def main(argv):
    as_map = len(argv) > 1 and argv[1] == "--map"
    paths = argv[2:] if as_map else argv[1:]
    if not paths:
        sys.exit(__doc__)
    layers = [Layer(p) for p in paths]
    out = []
    for s, n, d, o in blocks(layers):
        if out:
            ps, pn, pd, po = out[-1]
            if ps + pn == s and (not as_map or (pd == d and po + pn == o)):
                out[-1] = (ps, pn + n, pd, po)
                continue
        out.append((s, n, d, o))
    for s, n, d, o in out:
        if as_map:
            print(s, n, d, o)
        else:
            print(s, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
