#!/usr/bin/env python3
"""Turn a .vhdx file into a fuzz_open seed (the sparse format described in
fuzz_common.h).  Kept: the non-zero 4 KiB pages of the header section, the
log, the BAT and the metadata region (located through the current header and
region table 1), and a handful of other non-zero pages, so a seed holds the
image's structures and only a little of its data."""
import struct
import sys

PAGE = 4096
MAX_PAGES = 64 * 1024
MiB = 1 << 20


def structure_ranges(data):
    ranges = [(0, MiB)]
    h1 = struct.unpack_from("<Q", data, 0x10000 + 8)[0]
    h2 = struct.unpack_from("<Q", data, 0x20000 + 8)[0]
    h = 0x10000 if h1 >= h2 else 0x20000
    log_len, log_off = struct.unpack_from("<IQ", data, h + 68)
    ranges.append((log_off, log_len))
    count = struct.unpack_from("<I", data, 0x30000 + 8)[0]
    for i in range(min(count, 16)):
        off, length = struct.unpack_from("<QI", data, 0x30000 + 16 + 32 * i + 16)
        ranges.append((off, length))
    return ranges


def main(src, dst, budget=16):
    with open(src, "rb") as f:
        data = f.read()
    pages = min((len(data) + PAGE - 1) // PAGE, MAX_PAGES - 1)
    try:
        ranges = structure_ranges(data)
    except struct.error:
        ranges = [(0, MiB)]
    keep = set()
    for off, length in ranges:
        keep.update(range(off // PAGE, min((off + length) // PAGE, pages)))
    out = [struct.pack("<I", pages)]
    extra = 0
    for i in range(pages):
        page = data[i * PAGE:(i + 1) * PAGE]
        if not page.strip(b"\0"):
            continue
        if i not in keep:
            if extra >= budget:
                continue
            extra += 1
        out.append(struct.pack("<I", i) + page.ljust(PAGE, b"\0"))
    with open(dst, "wb") as f:
        f.write(b"".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
