#!/usr/bin/env python3
"""write-killload.py: the workload of tests/kill.bats, and its checker.

  write-killload.py run --seed S --log LOG [--max-write N] TARGET

Writes seeded random data at random sector-aligned offsets of TARGET (the
disk file vhdxfuse exposes), with an fsync every few writes, until a write or
an fsync fails (the daemon was killed) or --seconds pass.  Every step is
appended to LOG (on a local file system, which outlives the daemon) before
and after it happens:

  W i off len    write number i is about to be issued
  D i            write i returned (it is complete)
  S k            fsync number k is about to be issued
  F k n          fsync k returned 0; writes 0..n-1 were complete before it
  E text         the first failure (expected: the daemon is gone)

The data of write i is random.Random("SEED:i").randbytes(len), so the
checker can regenerate it.

  write-killload.py check --seed S --log LOG --base BASE --actual ACTUAL
                          [--sector 512]

BASE is the disk before the workload (a raw file), ACTUAL the disk after
the kill, as another implementation reads it (qemu-img convert after
qemu-img check -r all).  Every write before the last completed fsync must
read back exactly.  Every sector touched by a later write (incl. the one in
flight) must hold either its content at that fsync or the data of one of
those later writes that covers it: the durability contract of vhdx_write(),
per logical sector.  The checker patches BASE in place with those sectors as
they are in ACTUAL; a byte-for-byte comparison of BASE and ACTUAL afterwards
(qemu-img compare, by the caller) then proves that nothing else changed, and
leaves BASE ready as the base of the next round.  Prints one line of counts
and every violation; exits 1 on a violation.
"""

import argparse
import os
import random
import sys
import time


def data_for(seed, i, ln):
    return random.Random("%d:%d" % (seed, i)).randbytes(ln)


def logline(fd, text):
    os.write(fd, (text + "\n").encode())


def run(a):
    rng = random.Random(a.seed)
    fd = os.open(a.target, os.O_RDWR)
    size = os.fstat(fd).st_size
    sec = a.sector
    lfd = os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # A few hot windows get most writes (rewrites of allocated blocks);
    # the rest land anywhere (first writes to blocks: allocations).
    hot = [rng.randrange(size // sec) * sec for _ in range(4)]
    deadline = time.monotonic() + a.seconds
    i = k = 0
    until_sync = rng.randint(1, 12)
    try:
        while time.monotonic() < deadline:
            if until_sync == 0:
                logline(lfd, "S %d" % k)
                os.fsync(fd)
                logline(lfd, "F %d %d" % (k, i))
                os.fdatasync(lfd)
                k += 1
                until_sync = rng.randint(1, 12)
                continue
            until_sync -= 1
            r = rng.random()
            if r < 0.5:
                off = rng.randrange(size // sec) * sec
            else:
                off = rng.choice(hot) + rng.randrange(-64, 64) * sec * 8
            nsec = rng.choice([1, 7, 8, rng.randint(1, 64),
                               rng.randint(1, a.max_write // sec)])
            off = max(0, min(off, size - sec))
            ln = min(nsec * sec, size - off)
            logline(lfd, "W %d %d %d" % (i, off, ln))
            buf = data_for(a.seed, i, ln)
            done = 0
            while done < ln:
                n = os.pwrite(fd, buf[done:], off + done)
                if n <= 0:
                    raise OSError(0, "short write")
                done += n
            logline(lfd, "D %d" % i)
            i += 1
    except OSError as e:
        logline(lfd, "E %s" % e)
    try:
        os.close(fd)
    except OSError:
        pass
    os.fdatasync(lfd)
    os.close(lfd)
    return 0


def parse_log(path):
    writes = []  # (i, off, len, done)
    last_f = None  # number of writes complete before the last fsync
    fsyncs = 0
    err = None
    with open(path) as f:
        lines = f.read().split("\n")
    # a line cut short by a killed writer can only be the last one
    if lines and lines[-1]:
        print("kill-check: ignoring the incomplete last log line %r" %
              lines[-1])
    for line in lines[:-1]:
        if True:
            p = line.split()
            if not p:
                continue
            if p[0] == "W":
                i, off, ln = int(p[1]), int(p[2]), int(p[3])
                assert i == len(writes), "log out of order at %r" % line
                writes.append([i, off, ln, False])
            elif p[0] == "D":
                writes[int(p[1])][3] = True
            elif p[0] == "F":
                last_f = int(p[2])
                fsyncs += 1
            elif p[0] == "E":
                err = line[2:].strip()
    return writes, (last_f or 0), fsyncs, err


def check(a):
    sec = a.sector
    writes, nsynced, fsyncs, err = parse_log(a.log)
    bfd = os.open(a.base, os.O_RDWR)
    afd = os.open(a.actual, os.O_RDONLY)
    size = os.fstat(bfd).st_size
    if os.fstat(afd).st_size != size:
        print("kill-check: %s has %d bytes, %s %d" %
              (a.actual, os.fstat(afd).st_size, a.base, size))
        return 1
    # 1. BASE becomes the disk at the last completed fsync
    for i, off, ln, _done in writes[:nsynced]:
        os.pwrite(bfd, data_for(a.seed, i, ln), off)
    # 2. sectors of later writes: the allowed contents of each
    allowed = {}
    for i, off, ln, _done in writes[nsynced:]:
        d = data_for(a.seed, i, ln)
        for s in range(off // sec, (off + ln) // sec):
            lst = allowed.get(s)
            if lst is None:
                lst = allowed[s] = [os.pread(bfd, sec, s * sec)]
            lst.append(d[s * sec - off:(s + 1) * sec - off])
    old = new = older_write = 0
    bad = []
    for s in sorted(allowed):
        got = os.pread(afd, sec, s * sec)
        lst = allowed[s]
        if got == lst[0]:
            old += 1
        elif got == lst[-1]:
            new += 1
        elif got in lst:
            older_write += 1
        else:
            bad.append(s)
            continue
        os.pwrite(bfd, got, s * sec)
    os.fsync(bfd)
    inflight = sum(1 for w in writes if not w[3])
    print("kill-check: writes=%d fsyncs=%d synced-writes=%d "
          "unsynced-writes=%d (in flight %d) unsynced-sectors: old=%d "
          "new=%d older-write=%d bad=%d; writer stopped by: %s" %
          (len(writes), fsyncs, nsynced, len(writes) - nsynced, inflight,
           old, new, older_write, len(bad), err))
    for s in bad[:20]:
        print("kill-check: VIOLATION: sector %d (byte %d) holds neither its "
              "content at the last fsync nor a later write's data" %
              (s, s * sec))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("target")
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--sector", type=int, default=512)
    r.add_argument("--max-write", type=int, default=2 << 20)
    r.add_argument("--seconds", type=float, default=30)
    c = sub.add_parser("check")
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--log", required=True)
    c.add_argument("--base", required=True)
    c.add_argument("--actual", required=True)
    c.add_argument("--sector", type=int, default=512)
    a = ap.parse_args()
    return run(a) if a.cmd == "run" else check(a)


if __name__ == "__main__":
    sys.exit(main())
