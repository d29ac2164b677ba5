#!/usr/bin/env python3
"""vhdxedit.py - poke at the on-disk structures of a VHDX image, for tests.

The bats tests make corrupt images by editing good ones made by qemu-img.
This tool decodes the structures independently of the C library (from
shared/vhdx-format.md) so that a test can change one field and, where the
structure is checksummed, recompute its CRC-32C so that the edit reaches the
check it means to exercise instead of tripping the checksum.

Usage: vhdxedit.py IMAGE COMMAND [ARGS...]

  get FIELD                print a field (integers in decimal)
  set FIELD VALUE [--keep-crc]
                           write a field; the CRC of the structure holding it
                           is recomputed unless --keep-crc
  off FIELD                print the file offset of a field
  badcrc STRUCT            flip a bit of STRUCT's stored checksum
                           (STRUCT: header1 header2 region1 region2)
  fixcrc STRUCT            recompute STRUCT's checksum
  copy-header SRC DST      copy the 4 KiB of header SRC over header DST
  region-add GUID OFFSET LENGTH REQUIRED
                           append a region table entry (both copies)
  region-del NAME|GUID     delete a region table entry (both copies)
  region-move NAME NEWOFF  copy a region's bytes to NEWOFF (file extended
                           as needed) and point both tables at it
  meta-add GUID OFFSET LENGTH FLAGS [HEXDATA]
                           append a metadata table entry (OFFSET relative to
                           the metadata region), optionally writing the item
  meta-del NAME|GUID       delete a metadata table entry
  bat-get INDEX            print a BAT entry (hex)
  bat-set INDEX VALUE      write a BAT entry
  bat-find-present         print "INDEX VALUE" of every state-6/7 entry
  geometry                 print the derived geometry as KEY=VALUE lines
  log-entry --target OFF --hexdata BYTES --data-off N [--seq N]
            [--guid G] [--bad-crc] [--flushed N] [--last N] [--tail N]
                           write a one-descriptor log entry at log offset 0
                           whose data sector is the current 4 KiB sector at
                           OFF with BYTES written at offset N inside it, and
                           set LogGuid in both headers (CRCs fixed)
  crc32c HEX               print the CRC-32C of bytes (self test)

FIELD names:
  fileid.signature
  header1.F / header2.F / headers.F (both)   F: signature checksum seq
      filewriteguid datawriteguid logguid logversion version loglength
      logoffset
  region1.F / region2.F / regions.F (both)   F: signature checksum count
  regions.NAME.F (both copies)   NAME: bat metadata or a GUID;
      F: guid offset length required
  meta.signature meta.count
  meta.NAME.F   NAME: fileparams vsize diskid lss pss parentlocator or a GUID;
      F: guid offset length flags
  meta.blocksize meta.fileflags meta.vsize meta.lss meta.pss  (item values)
  bat.N

VALUE: an integer (0x.. accepted), a GUID (text form) for GUID fields, or
"ascii:TEXT" / "hex:BYTES" for signatures.
"""

import os
import struct
import sys
import uuid

MiB = 1 << 20

# ------------------------------------------------------------------ CRC-32C


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_TABLE = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    t = _TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ------------------------------------------------------------------ layout

GUIDS = {
    "bat": "2DC27766-F623-4200-9D64-115E9BFD4A08",
    "metadata": "8B7CA206-4790-4B9A-B8FE-575F050F886E",
}
META_GUIDS = {
    "fileparams": "CAA16737-FA36-4D43-B3B6-33F0AA44E76B",
    "vsize": "2FA54224-CD1B-4876-B211-5DBED83BF4B8",
    "diskid": "BECA12AB-B2E6-4523-93EF-C309E000C746",
    "lss": "8141BF1D-A96F-4709-BA47-F233A8FAAB5F",
    "pss": "CDA348C7-445D-4471-9CC9-E9885251C556",
    "parentlocator": "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C",
}

HEADER_OFF = {1: 0x10000, 2: 0x20000}
REGION_OFF = {1: 0x30000, 2: 0x40000}
HEADER_LEN = 4096
REGION_LEN = 65536

# name: (offset, kind) ; kind: u16 u32 u64 guid sig4 sig8
HEADER_FIELDS = {
    "signature": (0, "sig4"),
    "checksum": (4, "u32"),
    "seq": (8, "u64"),
    "filewriteguid": (16, "guid"),
    "datawriteguid": (32, "guid"),
    "logguid": (48, "guid"),
    "logversion": (64, "u16"),
    "version": (66, "u16"),
    "loglength": (68, "u32"),
    "logoffset": (72, "u64"),
}
REGION_HDR_FIELDS = {
    "signature": (0, "sig4"),
    "checksum": (4, "u32"),
    "count": (8, "u32"),
}
REGION_ENTRY_FIELDS = {
    "guid": (0, "guid"),
    "offset": (16, "u64"),
    "length": (24, "u32"),
    "required": (28, "u32"),
}
META_ENTRY_FIELDS = {
    "guid": (0, "guid"),
    "offset": (16, "u32"),
    "length": (20, "u32"),
    "flags": (24, "u32"),
}
# item value fields: (item, offset inside item, kind)
META_VALUES = {
    "blocksize": ("fileparams", 0, "u32"),
    "fileflags": ("fileparams", 4, "u32"),
    "vsize": ("vsize", 0, "u64"),
    "lss": ("lss", 0, "u32"),
    "pss": ("pss", 0, "u32"),
}
SIZES = {"u16": 2, "u32": 4, "u64": 8, "guid": 16, "sig4": 4, "sig8": 8}
FMT = {"u16": "<H", "u32": "<I", "u64": "<Q"}


class Img:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "r+b")

    def read(self, off, n):
        self.f.seek(off)
        b = self.f.read(n)
        if len(b) < n:
            b += bytes(n - len(b))
        return b

    def write(self, off, data):
        self.f.seek(off)
        self.f.write(data)

    def size(self):
        return os.fstat(self.f.fileno()).st_size

    def close(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()

    # ---- raw typed access
    def get(self, off, kind):
        b = self.read(off, SIZES[kind])
        if kind in FMT:
            return struct.unpack(FMT[kind], b)[0]
        if kind == "guid":
            return str(uuid.UUID(bytes_le=b)).upper()
        return b

    def put(self, off, kind, value):
        if kind in FMT:
            b = struct.pack(FMT[kind], parse_int(value))
        elif kind == "guid":
            b = uuid.UUID(value).bytes_le
        else:
            b = parse_bytes(value)
            if len(b) != SIZES[kind]:
                raise SystemExit("signature must be %d bytes" % SIZES[kind])
        self.write(off, b)

    # ---- headers
    def header_seq(self, n):
        return self.get(HEADER_OFF[n] + 8, "u64")

    def header_valid(self, n):
        b = self.read(HEADER_OFF[n], HEADER_LEN)
        if b[:4] != b"head":
            return False
        stored = struct.unpack("<I", b[4:8])[0]
        return crc32c(b[:4] + bytes(4) + b[8:]) == stored

    def current_header(self):
        v = [n for n in (1, 2) if self.header_valid(n)]
        if not v:
            raise SystemExit("no valid header")
        return max(v, key=lambda n: self.header_seq(n))

    def fixcrc(self, which):
        if which.startswith("header"):
            off, ln = HEADER_OFF[int(which[-1])], HEADER_LEN
        elif which.startswith("region"):
            off, ln = REGION_OFF[int(which[-1])], REGION_LEN
        else:
            raise SystemExit("no checksum in " + which)
        b = self.read(off, ln)
        c = crc32c(b[:4] + bytes(4) + b[8:])
        self.write(off + 4, struct.pack("<I", c))

    # ---- region table (copy 1 is authoritative for lookups)
    def region_table(self, copy=1):
        base = REGION_OFF[copy]
        count = self.get(base + 8, "u32")
        ents = []
        for i in range(min(count, 2047)):
            eo = base + 16 + 32 * i
            ents.append((eo, self.get(eo, "guid")))
        return ents

    def region_entry(self, copy, name):
        g = GUIDS.get(name, name).upper()
        for eo, guid in self.region_table(copy):
            if guid == g:
                return eo
        raise SystemExit("region %s not found in table %d" % (name, copy))

    def region_off(self, name):
        eo = self.region_entry(1, name)
        return self.get(eo + 16, "u64"), self.get(eo + 24, "u32")

    # ---- metadata
    def meta_base(self):
        return self.region_off("metadata")[0]

    def meta_entry(self, name):
        base = self.meta_base()
        g = META_GUIDS.get(name, name).upper()
        count = self.get(base + 10, "u16")
        for i in range(min(count, 2047)):
            eo = base + 32 + 32 * i
            if self.get(eo, "guid") == g:
                return eo
        raise SystemExit("metadata item %s not found" % name)

    def meta_item_off(self, name):
        eo = self.meta_entry(name)
        return self.meta_base() + self.get(eo + 16, "u32")

    # ---- geometry and BAT
    def geometry(self):
        bs = self.get(self.meta_item_off("fileparams"), "u32")
        vs = self.get(self.meta_item_off("vsize"), "u64")
        lss = self.get(self.meta_item_off("lss"), "u32")
        cr = (1 << 23) * lss // bs
        n = (vs + bs - 1) // bs
        sb = (n + cr - 1) // cr
        bat_off, bat_len = self.region_off("bat")
        return {
            "block_size": bs,
            "virtual_size": vs,
            "logical_sector_size": lss,
            "chunk_ratio": cr,
            "payload_blocks": n,
            "bitmap_blocks": sb,
            "bat_offset": bat_off,
            "bat_length": bat_len,
            "metadata_offset": self.meta_base(),
            "log_offset": self.get(HEADER_OFF[self.current_header()] + 72,
                                   "u64"),
            "log_length": self.get(HEADER_OFF[self.current_header()] + 68,
                                   "u32"),
            "file_size": self.size(),
        }

    def bat_off(self, i):
        return self.region_off("bat")[0] + 8 * int(i)

    # ---- field names -> (offset, kind, [structures whose CRC to fix])
    def resolve(self, field):
        parts = field.split(".")
        head = parts[0]
        if head == "fileid" and parts[1:] == ["signature"]:
            return [(0, "sig8", None)]
        if head in ("header1", "header2", "headers"):
            ns = [1, 2] if head == "headers" else [int(head[-1])]
            off, kind = HEADER_FIELDS[parts[1]]
            return [(HEADER_OFF[n] + off, kind, "header%d" % n) for n in ns]
        if head in ("region1", "region2", "regions"):
            ns = [1, 2] if head == "regions" else [int(head[-1])]
            if len(parts) == 2:
                off, kind = REGION_HDR_FIELDS[parts[1]]
                return [(REGION_OFF[n] + off, kind, "region%d" % n)
                        for n in ns]
            name = ".".join(parts[1:-1])
            off, kind = REGION_ENTRY_FIELDS[parts[-1]]
            return [(self.region_entry(n, name) + off, kind, "region%d" % n)
                    for n in ns]
        if head == "meta":
            base = self.meta_base()
            if parts[1] == "signature":
                return [(base, "sig8", None)]
            if parts[1] == "count":
                return [(base + 10, "u16", None)]
            if len(parts) == 2:
                item, off, kind = META_VALUES[parts[1]]
                return [(self.meta_item_off(item) + off, kind, None)]
            name = ".".join(parts[1:-1])
            off, kind = META_ENTRY_FIELDS[parts[-1]]
            return [(self.meta_entry(name) + off, kind, None)]
        if head == "bat":
            return [(self.bat_off(parts[1]), "u64", None)]
        raise SystemExit("unknown field " + field)


def parse_int(v):
    if isinstance(v, int):
        return v
    return int(v, 0)


def parse_bytes(v):
    if v.startswith("ascii:"):
        return v[6:].encode()
    if v.startswith("hex:"):
        return bytes.fromhex(v[4:])
    raise SystemExit("bytes must be ascii:... or hex:...")


def fmt(v):
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


# ------------------------------------------------------------------ log


def write_log_entry(img, target, data_off, data, seq=1, guid=None,
                    bad_crc=False, flushed=None, last=None, tail=0):
    """One entry with one data descriptor, at log offset 0."""
    if target % 4096:
        raise SystemExit("target must be 4 KiB aligned")
    g = img.geometry()
    log_off = g["log_offset"]
    sector = bytearray(img.read(target, 4096))
    sector[data_off:data_off + len(data)] = data
    guid = uuid.UUID(guid) if guid else uuid.uuid4()
    fsize = (img.size() + MiB - 1) // MiB * MiB
    flushed = fsize if flushed is None else flushed
    last = fsize if last is None else last
    hdr = struct.pack("<4sIIIQII16sQQ", b"loge", 0, 8192, tail, seq, 1, 0,
                      guid.bytes_le, flushed, last)
    desc = struct.pack("<4sI8sQQ", b"desc", *struct.unpack(
        "<I", bytes(sector[4092:4096])), bytes(sector[0:8]), target, seq)
    desc_sector = hdr + desc
    desc_sector += bytes(4096 - len(desc_sector))
    data_sector = (b"data" + struct.pack("<I", seq >> 32) +
                   bytes(sector[8:4092]) + struct.pack("<I", seq & 0xFFFFFFFF))
    entry = bytearray(desc_sector + data_sector)
    c = crc32c(bytes(entry))
    if bad_crc:
        c ^= 0x1
    entry[4:8] = struct.pack("<I", c)
    img.write(log_off, bytes(entry))
    for n in (1, 2):
        img.put(HEADER_OFF[n] + 48, "guid", str(guid))
        img.fixcrc("header%d" % n)


# ------------------------------------------------------------------ main


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "crc32c":
        print("0x%08X" % crc32c(bytes.fromhex(argv[2])))
        return 0
    img = Img(argv[1])
    cmd, args = argv[2], argv[3:]
    if cmd == "get":
        for off, kind, _ in img.resolve(args[0])[:1]:
            print(fmt(img.get(off, kind)))
    elif cmd == "off":
        print(img.resolve(args[0])[0][0])
    elif cmd == "set":
        keep = "--keep-crc" in args
        for off, kind, crc in img.resolve(args[0]):
            img.put(off, kind, args[1])
            if crc and not keep:
                img.fixcrc(crc)
    elif cmd == "fixcrc":
        img.fixcrc(args[0])
    elif cmd == "badcrc":
        s = args[0]
        base = (HEADER_OFF if s.startswith("header") else REGION_OFF)[
            int(s[-1])]
        v = img.get(base + 4, "u32")
        img.put(base + 4, "u32", v ^ 0x80)
    elif cmd == "copy-header":
        src, dst = int(args[0]), int(args[1])
        img.write(HEADER_OFF[dst], img.read(HEADER_OFF[src], HEADER_LEN))
    elif cmd == "region-add":
        g, off, ln, req = args
        for n in (1, 2):
            base = REGION_OFF[n]
            count = img.get(base + 8, "u32")
            eo = base + 16 + 32 * count
            img.put(eo, "guid", g)
            img.put(eo + 16, "u64", off)
            img.put(eo + 24, "u32", ln)
            img.put(eo + 28, "u32", req)
            img.put(base + 8, "u32", count + 1)
            img.fixcrc("region%d" % n)
    elif cmd == "region-del":
        for n in (1, 2):
            base = REGION_OFF[n]
            count = img.get(base + 8, "u32")
            eo = img.region_entry(n, args[0])
            end = base + 16 + 32 * count
            rest = img.read(eo + 32, end - eo - 32)
            img.write(eo, rest + bytes(32))
            img.put(base + 8, "u32", count - 1)
            img.fixcrc("region%d" % n)
    elif cmd == "region-move":
        name, newoff = args[0], parse_int(args[1])
        off, ln = img.region_off(name)
        img.write(newoff, img.read(off, ln))
        for n in (1, 2):
            img.put(img.region_entry(n, name) + 16, "u64", newoff)
            img.fixcrc("region%d" % n)
    elif cmd == "meta-add":
        g, off, ln, flags = args[:4]
        base = img.meta_base()
        count = img.get(base + 10, "u16")
        eo = base + 32 + 32 * count
        img.put(eo, "guid", g)
        img.put(eo + 16, "u32", off)
        img.put(eo + 20, "u32", ln)
        img.put(eo + 24, "u32", flags)
        img.put(eo + 28, "u32", 0)
        img.put(base + 10, "u16", count + 1)
        if len(args) > 4:
            img.write(base + parse_int(off), bytes.fromhex(args[4]))
    elif cmd == "meta-del":
        base = img.meta_base()
        count = img.get(base + 10, "u16")
        eo = img.meta_entry(args[0])
        end = base + 32 + 32 * count
        rest = img.read(eo + 32, end - eo - 32)
        img.write(eo, rest + bytes(32))
        img.put(base + 10, "u16", count - 1)
    elif cmd == "bat-get":
        print("0x%016x" % img.get(img.bat_off(args[0]), "u64"))
    elif cmd == "bat-set":
        img.put(img.bat_off(args[0]), "u64", args[1])
    elif cmd == "bat-find-present":
        g = img.geometry()
        cr = g["chunk_ratio"]
        total = g["payload_blocks"] + (g["payload_blocks"] - 1) // cr
        bat = img.read(g["bat_offset"], 8 * total)
        for i in range(total):
            e = struct.unpack_from("<Q", bat, 8 * i)[0]
            if e & 7 in (6, 7):
                print(i, "0x%x" % e)
    elif cmd == "geometry":
        for k, v in img.geometry().items():
            print("%s=%d" % (k, v))
    elif cmd == "log-entry":
        opts = {"--seq": "1", "--guid": None, "--flushed": None,
                "--last": None, "--data-off": "0", "--tail": "0"}
        bad = False
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--bad-crc":
                bad = True
                i += 1
                continue
            opts[a] = args[i + 1]
            i += 2
        write_log_entry(
            img, parse_int(opts["--target"]), parse_int(opts["--data-off"]),
            bytes.fromhex(opts["--hexdata"]), seq=parse_int(opts["--seq"]),
            guid=opts["--guid"], bad_crc=bad,
            tail=parse_int(opts["--tail"]),
            flushed=None if opts["--flushed"] is None else parse_int(
                opts["--flushed"]),
            last=None if opts["--last"] is None else parse_int(
                opts["--last"]))
    else:
        print("unknown command " + cmd, file=sys.stderr)
        return 2
    img.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
