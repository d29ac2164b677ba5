#!/usr/bin/env python3
"""nbd-killload.py - flushed writes over NBD (libnbd) that survive SIGKILL.

The disk is cut into SLOT-byte slots.  Each write fills one whole slot with
16-byte records (magic, slot number, generation); generations only grow.
After every few writes the client flushes and, once the flush is
acknowledged, appends "slot generation" of each of those writes to the
journal (a plain file of the test).  The server may be killed at any time:
the client then stops and the journal holds every write the server promised
to keep.

  nbd-killload.py write SOCKET JOURNAL SIZE SEED
      write (until the connection breaks) through nbd+unix SOCKET
  nbd-killload.py verify-nbd SOCKET JOURNAL SIZE
  nbd-killload.py verify-file RAW JOURNAL SIZE
      check that each slot of the journal holds its last acknowledged
      generation or a later one (a write sent after the last flush may or
      may not have landed, a sector at a time), and that slots never
      written hold zeros or records of their own slot

Exit status: 0 ok, 1 a flushed write is missing or damaged, 2 usage.
"""

import random
import struct
import sys

MAGIC = 0x6E62646B696C6C21  # "nbdkill!"
SLOT = 65536
REC = struct.Struct("<QII")  # magic, slot, generation


def slot_data(slot, gen):
    return REC.pack(MAGIC, slot, gen) * (SLOT // REC.size)


def read_journal(path):
    acked = {}
    try:
        with open(path) as f:
            for line in f:
                s, g = line.split()
                acked[int(s)] = max(acked.get(int(s), 0), int(g))
    except FileNotFoundError:
        pass
    return acked


def writer(sock, journal, size, seed):
    import nbd

    rng = random.Random(seed)
    nslots = size // SLOT
    acked = read_journal(journal)
    gen = max(acked.values(), default=0) + 1
    h = nbd.NBD()
    with open(journal, "a") as j:
        try:
            h.connect_unix(sock)
            while True:
                batch = []
                for _ in range(rng.randint(1, 8)):
                    slot = rng.randrange(nslots)
                    h.pwrite(slot_data(slot, gen), slot * SLOT)
                    batch.append((slot, gen))
                    gen += 1
                h.flush()
                for slot, g in batch:
                    j.write("%d %d\n" % (slot, g))
                j.flush()
        except nbd.Error:
            return 0  # the server is gone: what was flushed is recorded


def check_slot(slot, buf, want):
    """None if buf is acceptable for slot, else a description."""
    if want == 0 and buf.count(0) == len(buf):
        return None
    for i in range(0, len(buf), REC.size):
        rec = buf[i : i + REC.size]
        if want == 0 and rec.count(0) == len(rec):
            continue
        magic, s, g = REC.unpack(rec)
        if magic != MAGIC or s != slot:
            return "damaged record at +%d" % i
        if g < want:
            return "generation %d at +%d, %d was acknowledged" % (g, i, want)
    return None


def verify(read, journal, size):
    acked = read_journal(journal)
    bad = 0
    for slot in range(size // SLOT):
        err = check_slot(slot, read(slot * SLOT), acked.get(slot, 0))
        if err:
            print("slot %d: %s" % (slot, err))
            bad += 1
    print("%d acknowledged writes in %d slots, %d bad slots"
          % (sum(1 for _ in open(journal)) if acked else 0, len(acked), bad))
    return 1 if bad else 0


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    mode, target, journal, size = argv[1], argv[2], argv[3], int(argv[4])
    if mode == "write" and len(argv) == 6:
        return writer(target, journal, size, int(argv[5]))
    if mode == "verify-nbd":
        import nbd

        h = nbd.NBD()
        h.connect_unix(target)
        return verify(lambda off: h.pread(SLOT, off), journal, size)
    if mode == "verify-file":
        with open(target, "rb") as f:
            return verify(lambda off: (f.seek(off), f.read(SLOT))[1],
                          journal, size)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
