#!/usr/bin/env python3
"""vbench.py - the vhdxfuse benchmark driver (see bench/README.md).

Runs fio (and an ext4 end-to-end workload) against:

  vhdxfuse    vhdxfuse IMG MNTFILE              (the daemon under test)
  qsd         qemu-storage-daemon FUSE export of the same VHDX, aio=threads
  qsd-uring   the same with aio=io_uring
  qsd-raw     qemu-storage-daemon FUSE export of a raw image (reference)
  raw         the raw image file itself on the host file system (reference)

Every run gets a fresh image (a copy of a template made once), the page
cache is dropped before it, and the targets are interleaved: round 1 runs
every target on workload W, then round 2 does again (the starting target
rotates each round), so slow drifts in the machine's load hit every target
alike.  Medians over the rounds go into a Markdown report and a JSON file.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

MiB = 1024 * 1024
GiB = 1024 * MiB

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_DIR = os.path.dirname(BENCH_DIR)

QSD = "/usr/bin/qemu-storage-daemon"

ALL_TARGETS = ["vhdxfuse", "qsd", "qsd-uring", "qsd-raw", "raw"]
QSD_TARGETS = ["qsd", "qsd-uring"]

# ---------------------------------------------------------------- helpers

LIVE = {"procs": [], "loops": [], "mounts": [], "work": []}  # cleanup


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == path:
                return True
    return False


def wait_mounted(path, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if is_mounted(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited ({proc.returncode}) before "
                               f"mounting {path}")
        time.sleep(0.01)
    raise RuntimeError(f"{path} not mounted after {timeout}s")


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def copy_file(src, dst):
    """Copy keeping holes (cp finds them with SEEK_HOLE)."""
    run(["cp", src, dst])


# ---------------------------------------------------------------- targets


class Target:
    """One way of exposing a disk as a file; start() returns its path."""

    name = "?"
    fmt = "vhdx"  # which template the target needs: vhdx or raw
    has_daemon = True

    def __init__(self, cfg):
        self.cfg = cfg
        self.proc = None
        self.mnt = os.path.join(cfg.workdir, "mnt.disk")

    def start(self, image):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def hwm(self):
        return vm_hwm_kib(self.proc.pid) if self.proc else None

    def _spawn(self, cmd):
        if not os.path.exists(self.mnt):
            open(self.mnt, "w").close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.cfg.daemon_log,
                                     stderr=subprocess.STDOUT)
        LIVE["procs"].append(self)
        wait_mounted(self.mnt, self.proc)
        return self.mnt

    def _reap(self, timeout=120):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: pid {self.proc.pid} did not exit, SIGKILL")
            self.proc.kill()
            rc = self.proc.wait()
        if is_mounted(self.mnt):
            run(["umount", "-l", self.mnt], check=False)
        LIVE["procs"].remove(self)
        self.proc = None
        return rc


class VhdxFuse(Target):
    name = "vhdxfuse"

    binary = None  # None: cfg.vhdxfuse
    extra_args = []  # the workload's own options (Workload.vf_args)

    def start(self, image):
        if self.cfg.vf_dir:
            # a directory mount point: the disk is a file in it
            self.mnt = os.path.join(self.cfg.workdir, "mnt.dir")
            os.makedirs(self.mnt, exist_ok=True)
        self._spawn([self.binary or self.cfg.vhdxfuse, "-f", image,
                     self.mnt, "-o", "filename=disk"] +
                    self.cfg.vhdxfuse_args + self.extra_args)
        return os.path.join(self.mnt, "disk") if self.cfg.vf_dir else self.mnt

    def stop(self):
        # unmounting makes the daemon close the image (flush + clean log)
        run(["fusermount3", "-u", self.mnt], check=False)
        rc = self._reap()
        if rc != 0:
            raise RuntimeError(f"vhdxfuse exited with status {rc}")


class Qsd(Target):
    name = "qsd"
    aio = None  # aio=threads, qemu's default
    direct = False  # cache.direct=on (O_DIRECT on the image file)

    def file_opts(self, image):
        o = f"driver=file,node-name=file,filename={image}"
        if self.aio:
            o += f",aio={self.aio}"
        if self.cfg.qsd_direct or self.direct:
            o += ",cache.direct=on"
        return o

    def start(self, image):
        cmd = [QSD, "--blockdev", self.file_opts(image)]
        node = "file"
        if self.fmt == "vhdx":
            cmd += ["--blockdev", "driver=vhdx,node-name=fmt,file=file"]
            node = "fmt"
        cmd += ["--export", f"type=fuse,id=exp,node-name={node},"
                f"mountpoint={self.mnt},writable=on"]
        return self._spawn(cmd)

    def stop(self):
        # SIGTERM: qsd flushes its nodes, unmounts and exits
        self.proc.send_signal(signal.SIGTERM)
        rc = self._reap()
        if rc not in (0, -signal.SIGTERM):
            raise RuntimeError(f"qemu-storage-daemon exited with {rc}")


class QsdUring(Qsd):
    name = "qsd-uring"
    aio = "io_uring"


class QsdUringDirect(Qsd):
    """Not measured by default: tried when choosing qsd's settings."""
    name = "qsd-uring-direct"
    aio = "io_uring"
    direct = True


class QsdNative(Qsd):
    """Not measured by default: aio=native needs cache.direct=on."""
    name = "qsd-native"
    aio = "native"
    direct = True


class QsdRaw(Qsd):
    name = "qsd-raw"
    fmt = "raw"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.aio = cfg.qsd_raw_aio


class RawFile(Target):
    name = "raw"
    fmt = "raw"
    has_daemon = False

    def start(self, image):
        return image

    def stop(self):
        pass

    def hwm(self):
        return None


TARGET_CLASSES = {c.name: c for c in (VhdxFuse, Qsd, QsdUring, QsdRaw,
                                      RawFile, QsdUringDirect, QsdNative)}

# ---------------------------------------------------------------- templates


def make_templates(cfg):
    """Random-content raw and VHDX images, and empty ones, made once."""
    w = cfg.workdir
    size = cfg.image_size
    t = {
        "full.raw": os.path.join(w, f"tpl-full-{size}.raw"),
        "full.vhdx": os.path.join(w, f"tpl-full-{size}.vhdx"),
        "empty.raw": os.path.join(w, f"tpl-empty-{size}.raw"),
        "empty.vhdx": os.path.join(w, f"tpl-empty-{size}.vhdx"),
    }
    bs = f"block_size={cfg.block_size}"
    if not os.path.exists(t["full.raw"]):
        log(f"making {t['full.raw']} ({size >> 20} MiB of random data)")
        tmp = t["full.raw"] + ".tmp"
        run(["dd", "if=/dev/urandom", f"of={tmp}", "bs=1M",
             f"count={size >> 20}", "status=none"])
        os.rename(tmp, t["full.raw"])
    if not os.path.exists(t["full.vhdx"]):
        tmp = t["full.vhdx"] + ".tmp"
        run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
             f"subformat=dynamic,{bs}", t["full.raw"], tmp])
        os.rename(tmp, t["full.vhdx"])
    if not os.path.exists(t["empty.vhdx"]):
        tmp = t["empty.vhdx"] + ".tmp"
        run(["qemu-img", "create", "-q", "-f", "vhdx", "-o",
             f"subformat=dynamic,{bs}", tmp, str(size)])
        os.rename(tmp, t["empty.vhdx"])
    if not os.path.exists(t["empty.raw"]):
        with open(t["empty.raw"], "w") as f:
            f.truncate(size)
    # Empty disks for allocating random writes.  With 32 MiB blocks the
    # 2 GiB image has only 64 blocks, so nearly every random write into it
    # lands in a block allocated already (row randwrite-empty).  The same
    # 2 GiB disk with 1 MiB blocks (2,048 of them) is allocated by most
    # writes of a qemu-storage-daemon run (~900 IOPS per new block), as in
    # the baseline (~890 IOPS into an empty VHDX, ~11,000 for the
    # export of a raw image): row randwrite-alloc.
    t["empty1m.vhdx"] = os.path.join(w, f"tpl-empty-{size}-1M.vhdx")
    t["empty1m.raw"] = t["empty.raw"]
    if not os.path.exists(t["empty1m.vhdx"]):
        tmp = t["empty1m.vhdx"] + ".tmp"
        run(["qemu-img", "create", "-q", "-f", "vhdx", "-o",
             "subformat=dynamic,block_size=1M", tmp, str(size)])
        os.rename(tmp, t["empty1m.vhdx"])
    # And 1 TiB of 32 MiB blocks (32,768), where every target ends up with
    # ~100,000 scattered new 4 KiB pages in a sparse host file: made both
    # by vhdxtool and by qemu-img (rows randwrite-alloc-1t*).  Here the
    # host ext4's block allocator then needs ~20 s for the final fsync,
    # for the raw file as much as for the images (RESULTS.md).
    big = cfg.alloc_image_size
    t["sparse.raw"] = os.path.join(w, f"tpl-sparse-{big}.raw")
    t["sparse-q.raw"] = t["sparse.raw"]
    t["sparse.vhdx"] = os.path.join(w, f"tpl-sparse-{big}-vhdxtool.vhdx")
    t["sparse-q.vhdx"] = os.path.join(w, f"tpl-sparse-{big}-qemu.vhdx")
    if not os.path.exists(t["sparse-q.vhdx"]):
        tmp = t["sparse-q.vhdx"] + ".tmp"
        run(["qemu-img", "create", "-q", "-f", "vhdx", "-o",
             f"subformat=dynamic,{bs}", tmp, str(big)])
        os.rename(tmp, t["sparse-q.vhdx"])
    if not os.path.exists(t["sparse.vhdx"]):
        tmp = t["sparse.vhdx"] + ".tmp"
        run([cfg.vhdxtool, "create", "-q", "--block-size",
             cfg.block_size, "-s", str(big), tmp])
        os.rename(tmp, t["sparse.vhdx"])
    if not os.path.exists(t["sparse.raw"]):
        with open(t["sparse.raw"], "w") as f:
            f.truncate(big)
    return t


def make_tarball(cfg):
    """An uncompressed tar of ~cfg.tree_bytes of system files (made once)."""
    path = os.path.join(cfg.workdir, f"tree-{cfg.tree_bytes >> 20}M.tar")
    if os.path.exists(path):
        return path
    log(f"making {path} from /usr files")
    tmp = path + ".tmp"
    total = 0
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for root in ("/usr/share", "/usr/include", "/usr/lib"):
            for d, dirs, files in os.walk(root):
                dirs.sort()
                for fn in sorted(files):
                    p = os.path.join(d, fn)
                    try:
                        if not os.path.isfile(p) or os.path.islink(p):
                            continue
                        sz = os.path.getsize(p)
                        tar.add(p, recursive=False)
                    except OSError:
                        continue
                    total += sz
                    if total >= cfg.tree_bytes:
                        break
                if total >= cfg.tree_bytes:
                    break
            if total >= cfg.tree_bytes:
                break
    os.rename(tmp, path)
    return path


# ---------------------------------------------------------------- workloads


class Workload:
    """name, template kind ('full' or 'empty'), unit, and how to run."""

    def __init__(self, name, template, unit, higher_better, desc):
        self.name = name
        self.template = template
        self.unit = unit
        self.higher_better = higher_better
        self.desc = desc
        # "fresh": a new copy of the template for every run (allocating
        # writes); "work": one working copy per bench, reused (overwrites
        # change no allocation, so the copy stays as allocated as the
        # template); "template": the template itself (reads)
        self.copy = "fresh"
        # extra vhdxfuse options for this workload only
        self.vf_args = []


def fio(cfg, filename, name, extra):
    cmd = ["fio", f"--name={name}", f"--filename={filename}",
           "--ioengine=psync", "--direct=0", "--invalidate=0",
           "--fallocate=none", "--group_reporting", "--output-format=json"]
    cmd += extra
    out = run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"fio failed ({out.returncode}): "
                           f"{out.stderr.strip()[-2000:]}\n"
                           f"{out.stdout.strip()[-2000:]}")
    # fio may print warnings before the JSON object
    text = out.stdout[out.stdout.index("{"):]
    return json.loads(text)["jobs"][0]


def fio_metric(job, rw, unit):
    d = job[rw]
    if unit == "MB/s":
        return d["bw_bytes"] / 1e6
    return d["iops"]


def make_workloads(cfg):
    q = cfg
    W = []

    def add(name, template, unit, desc, body, copy="fresh", higher=True,
            extra=False, vf_args=()):
        w = Workload(name, template, unit, higher, desc)
        w.body = body
        w.copy = copy
        w.extra = extra  # only run when named in --workloads
        w.vf_args = list(vf_args)
        W.append(w)

    add("seqread", "full", "MB/s",
        f"sequential read, 1 MiB requests, {q.seq_bytes >> 20} MiB of an "
        "allocated image, page cache dropped",
        lambda f: fio_metric(fio(q, f, "seqread", [
            "--rw=read", "--bs=1M", f"--size={q.seq_bytes}"]), "read",
            "MB/s"), copy="template")
    add("seqwrite-alloc", "empty", "MB/s",
        f"sequential write, 1 MiB requests, {q.seq_bytes >> 20} MiB into an "
        "empty dynamic image (every block allocated), end fsync",
        lambda f: fio_metric(fio(q, f, "seqwrite", [
            "--rw=write", "--bs=1M", f"--size={q.seq_bytes}",
            "--end_fsync=1"]), "write", "MB/s"))
    add("seqoverwrite", "full", "MB/s",
        f"sequential overwrite, 1 MiB requests, {q.seq_bytes >> 20} MiB of "
        "an allocated image, end fsync",
        lambda f: fio_metric(fio(q, f, "seqover", [
            "--rw=write", "--bs=1M", f"--size={q.seq_bytes}",
            "--end_fsync=1"]), "write", "MB/s"), copy="work")
    rr = ["--rw=randread", "--bs=4k", f"--size={q.image_size}",
          f"--runtime={q.rand_secs}", "--time_based"]
    add("randread-qd1", "full", "IOPS",
        f"4 KiB random read over the whole {q.image_size >> 30} GiB image, "
        f"1 job (QD1), {q.rand_secs} s, page cache dropped",
        lambda f: fio_metric(fio(q, f, "rr1", rr), "read", "IOPS"),
        copy="template")
    add("randread-4j", "full", "IOPS",
        "4 KiB random read, 4 jobs (psync, QD1 each), "
        f"{q.rand_secs} s, page cache dropped",
        lambda f: fio_metric(fio(q, f, "rr4", rr + ["--numjobs=4"]),
                             "read", "IOPS"), copy="template")

    def hot(f):
        # warm the range through the target, then measure
        fio(q, f, "warm", ["--rw=read", "--bs=1M", f"--size={q.hot_bytes}"])
        return fio_metric(fio(q, f, "hot", [
            "--rw=randread", "--bs=4k", f"--size={q.hot_bytes}",
            f"--runtime={q.hot_secs}", "--time_based"]), "read", "IOPS")

    add("randread-hot", "full", "IOPS",
        f"4 KiB random read, 1 job, of a {q.hot_bytes >> 20} MiB range read "
        f"once just before (cached), {q.hot_secs} s", hot, copy="template")
    # At most rand_secs or rand_write_ios writes: the cap keeps the fast
    # targets from fragmenting the host file into a million extents, whose
    # removal (with the discard mount option) costs seconds per run.
    rw = ["--rw=randwrite", "--bs=4k", f"--size={q.image_size}",
          f"--runtime={q.rand_secs}", f"--io_size={q.rand_write_ios * 4096}",
          "--end_fsync=1"]
    big = q.alloc_image_size
    rwa = ["--rw=randwrite", "--bs=4k", f"--size={big}", "--norandommap",
           f"--runtime={q.rand_secs}",
           f"--io_size={q.rand_write_ios * 4096}", "--end_fsync=1"]
    add("randwrite-alloc", "empty1m", "IOPS",
        f"4 KiB random write, 1 job, into an empty {q.image_size >> 30} GiB "
        "dynamic image with 1 MiB blocks (2,048: a qsd run allocates with "
        f"most writes), {q.rand_secs} s or {q.rand_write_ios} writes + end "
        "fsync (counted)",
        lambda f: fio_metric(fio(q, f, "rw1m", rw), "write", "IOPS"))
    add("randwrite-alloc-1t", "sparse", "IOPS",
        "4 KiB random write, 1 job, into an empty dynamic image of "
        f"{big >> 40} TiB ({big // (32 * MiB)} blocks of 32 MiB: most writes "
        f"allocate a block), {q.rand_secs} s or {q.rand_write_ios} writes "
        "+ end fsync (counted); vhdxfuse with -o sparse, as the others "
        "leave the host file sparse (reserving 32 MiB per write would "
        "need ~400 GB)",
        lambda f: fio_metric(fio(q, f, "rwa", rwa), "write", "IOPS"),
        extra=True, vf_args=["-o", "sparse"])
    add("randwrite-alloc-1t-qemu", "sparse-q", "IOPS",
        "the same, into an empty image made by qemu-img instead of vhdxtool",
        lambda f: fio_metric(fio(q, f, "rwaq", rwa), "write", "IOPS"),
        extra=True, vf_args=["-o", "sparse"])
    add("randwrite-empty", "empty", "IOPS",
        f"4 KiB random write, 1 job, into an empty {q.image_size >> 30} GiB "
        "dynamic image (its blocks are allocated by the first writes, the "
        f"rest overwrite them), {q.rand_secs} s or {q.rand_write_ios} writes "
        "+ end fsync (counted)",
        lambda f: fio_metric(fio(q, f, "rwe", rw), "write", "IOPS"))
    add("randwrite-over", "full", "IOPS",
        "4 KiB random write, 1 job, into allocated blocks, "
        f"{q.rand_secs} s or {q.rand_write_ios} writes + end fsync (counted)",
        lambda f: fio_metric(fio(q, f, "rwa", rw), "write", "IOPS"),
        copy="work")
    add("ext4", "empty", "s",
        "end to end: losetup, mkfs.ext4, mount, untar "
        f"{q.tree_bytes >> 20} MB of files, sync, umount, losetup -d "
        "(wall time)", lambda f: ext4_workload(q, f), higher=False)
    return W


def ext4_workload(cfg, filename):
    fsdir = os.path.join(cfg.workdir, "mnt.ext4")
    os.makedirs(fsdir, exist_ok=True)
    t0 = time.monotonic()
    loop = run(["losetup", "--show", "-f", filename], capture_output=True,
               text=True).stdout.strip()
    LIVE["loops"].append(loop)
    try:
        run(["mkfs.ext4", "-q", "-F", "-E",
             "nodiscard,lazy_itable_init=0,lazy_journal_init=0", loop])
        run(["mount", "-t", "ext4", loop, fsdir])
        LIVE["mounts"].append(fsdir)
        try:
            run(["tar", "-xf", cfg.tarball, "-C", fsdir])
            run(["sync", "-f", fsdir])
        finally:
            run(["umount", fsdir])
            LIVE["mounts"].remove(fsdir)
    finally:
        run(["losetup", "-d", loop])
        LIVE["loops"].remove(loop)
    return time.monotonic() - t0


# ---------------------------------------------------------------- driver


def one_run(cfg, tpl, target, wl):
    kind = f"{wl.template}.{target.fmt}"
    src = tpl[kind]
    ph = [time.monotonic()]
    if wl.copy == "fresh":
        image = os.path.join(cfg.workdir, f"run.{target.fmt}")
        if os.path.exists(image):
            os.unlink(image)
        copy_file(src, image)
    elif wl.copy == "work":
        image = os.path.join(cfg.workdir, f"work-{kind}")
        if not os.path.exists(image):
            copy_file(src, image + ".tmp")
            os.rename(image + ".tmp", image)
            LIVE["work"].append(image)
    else:
        image = src
    ph.append(time.monotonic())
    drop_caches()
    ph.append(time.monotonic())
    target.extra_args = wl.vf_args
    path = target.start(image)
    ph.append(time.monotonic())
    try:
        value = wl.body(path)
        hwm = target.hwm()
    finally:
        ph.append(time.monotonic())
        target.stop()
        ph.append(time.monotonic())
    if wl.copy == "fresh":
        os.unlink(image)
    ph.append(time.monotonic())
    if cfg.verbose:
        names = ["copy", "drop", "start", "run", "stop", "rm"]
        log("  phases: " + " ".join(f"{n} {b - a:.2f}" for n, a, b in
                                     zip(names, ph, ph[1:])))
    return value, hwm


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cmd_out(cmd):
    try:
        r = run(cmd, capture_output=True, text=True, check=False)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def machine_info(cfg):
    """What the report names: the machine, the versions, the binary."""
    import hashlib
    with open(cfg.vhdxfuse, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    src = os.path.dirname(cfg.vhdxfuse)
    return {
        "kernel": os.uname().release,
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": f"{int(mem) >> 20} GiB",
        "fs": cmd_out(["findmnt", "-no", "FSTYPE,SOURCE,OPTIONS", "-T",
                       cfg.workdir]),
        "fio": cmd_out(["fio", "--version"]),
        "qemu-storage-daemon": cmd_out([QSD, "--version"]),
        "libfuse": cmd_out(["dpkg-query", "-W", "-f",
                            "${Version}", "libfuse3-3"]),
        "vhdxfuse": f"{cfg.vhdxfuse} sha256:{sha} "
                    f"mtime {time.ctime(os.path.getmtime(cfg.vhdxfuse))}",
        "vhdxfuse tree": cfg.label or cmd_out(
            ["git", "-C", src, "describe", "--always", "--dirty"]),
    }


def bench(cfg):
    tpl = make_templates(cfg)
    cfg.tarball = make_tarball(cfg)
    workloads = [w for w in make_workloads(cfg)
                 if w.name in cfg.workloads or
                 (not cfg.workloads and not w.extra)]
    targets = [TARGET_CLASSES[n](cfg) for n in cfg.targets
               if n in TARGET_CLASSES]
    for label, path in cfg.variants:
        t = VhdxFuse(cfg)
        t.name, t.binary = label, path
        targets.append(t)
    results = {"config": {k: v for k, v in vars(cfg).items()
                          if isinstance(v, (int, str, list, float, bool))},
               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "load_start": loadavg(), "modes": {},
               "machine": machine_info(cfg)}
    ncpu = os.cpu_count()
    # let the write-back and discards of whatever ran before settle
    os.sync()
    time.sleep(3)
    for mode in cfg.modes:
        cpus = {0} if mode == "pinned" else set(range(ncpu))
        os.sched_setaffinity(0, cpus)
        log(f"=== {mode} (cpus {sorted(cpus)}), load {loadavg()}")
        mres = results["modes"].setdefault(mode, {"load": [], "runs": {}})
        mres["load"].append(loadavg())
        # The first run after a pause or a change of mode comes out slow
        # (seen as 0.2-0.4x on whichever target went first): one run of
        # the first workload on the first target, not recorded.
        if workloads and targets:
            one_run(cfg, tpl, targets[0], workloads[0])
        for wl in workloads:
            for r in range(cfg.rounds):
                k = r % len(targets)
                order = targets[k:] + targets[:k]
                for t in order:
                    v, hwm = one_run(cfg, tpl, t, wl)
                    rec = mres["runs"].setdefault(wl.name, {}).setdefault(
                        t.name, {"values": [], "hwm_kib": []})
                    rec["values"].append(v)
                    rec["hwm_kib"].append(hwm)
                    rec.setdefault("load1", []).append(
                        float(loadavg().split()[0]))
                    hs = f", VmHWM {hwm / 1024:.1f} MiB" if hwm else ""
                    log(f"{mode} {wl.name} r{r + 1} {t.name}: "
                        f"{v:.1f} {wl.unit}{hs}")
        mres["load"].append(loadavg())
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["load_end"] = loadavg()
    results["workloads"] = {w.name: {"unit": w.unit, "desc": w.desc,
                                     "higher_better": w.higher_better}
                            for w in workloads}
    return results


# ---------------------------------------------------------------- report

# workload -> (required ratio vs best qsd, comparison); ext4 is a time
TARGET_RATIO = {
    "seqread": 1.5, "seqwrite-alloc": 1.2, "seqoverwrite": 1.2,
    "randread-qd1": 1.2, "randread-4j": 1.5, "randread-hot": 5.0,
    "randwrite-alloc": 8.0, "randwrite-over": 1.2, "ext4": 0.8,
    "randwrite-empty": None, "randwrite-alloc-1t-qemu": None,
    "randwrite-alloc-1t": None,
}


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_v(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f}"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def report(results, bat_bytes):
    wls = results["workloads"]
    out = []
    cfg = results["config"]
    out.append(f"Run {results['started']} .. {results['finished']}; "
               f"rounds {cfg['rounds']}; image {cfg['image_size'] >> 20} "
               f"MiB, block size {cfg['block_size']}; load average at "
               f"start {results['load_start']}, end {results['load_end']}.")
    out.append("")
    for k, v in results.get("machine", {}).items():
        out.append(f"- {k}: {v}")
    out.append("")
    rss_limit = 32 * MiB + bat_bytes
    for mode, m in results["modes"].items():
        targets = [t for t in cfg["targets"]]
        out.append(f"### {mode}"
                   + (" (taskset -c 0: fio, daemons, tools)"
                      if mode == "pinned" else " (both cores)"))
        out.append("")
        out.append("load average (1/5/15 min) at start and end of this "
                   f"pass: {' -> '.join(m['load'])}")
        out.append("")
        hdr = "| workload | unit | " + " | ".join(targets) + \
              " | vhdxfuse / best qsd | target | met |"
        out.append(hdr)
        out.append("|" + "---|" * (len(targets) + 5))
        for wn, w in wls.items():
            runs = m["runs"].get(wn, {})
            meds = {t: med(runs.get(t, {}).get("values", [])) for t in
                    targets}
            row = f"| {wn} | {w['unit']} | " + " | ".join(
                fmt_v(meds[t], w["unit"]) for t in targets)
            vf = meds.get("vhdxfuse")
            qs = [meds[t] for t in QSD_TARGETS if meds.get(t) is not None]
            ratio = met = "-"
            need = TARGET_RATIO.get(wn)
            if vf is not None and qs and need is None:
                best = max(qs) if w["higher_better"] else min(qs)
                ratio = f"{vf / best:.2f}x" + \
                    ("" if w["higher_better"] else " time")
                tgt = "(none)"
            elif vf is not None and qs:
                if w["higher_better"]:
                    best = max(qs)
                    r = vf / best
                    ok = r >= need
                    ratio = f"{r:.2f}x"
                    tgt = f">= {need}x"
                else:
                    best = min(qs)
                    r = vf / best
                    ok = r <= need
                    ratio = f"{r:.2f}x time"
                    tgt = f"<= {need}x time"
                if wn == "seqread" and meds.get("raw"):
                    rr = vf / meds["raw"]
                    ok = ok and rr >= 0.5
                    ratio += f"; {rr:.2f}x raw"
                    tgt += "; >= 0.5x raw"
                met = "yes" if ok else "**no**"
            else:
                tgt = "-"
            out.append(row + f" | {ratio} | {tgt} | {met} |")
        out.append("")
        # spread: min..max per target, for the honest reader
        out.append("<details><summary>all rounds (min .. max)</summary>")
        out.append("")
        out.append("| workload | " + " | ".join(targets) + " |")
        out.append("|" + "---|" * (len(targets) + 1))
        for wn, w in wls.items():
            runs = m["runs"].get(wn, {})
            cells = []
            for t in targets:
                vs = runs.get(t, {}).get("values", [])
                cells.append(" / ".join(fmt_v(v, w["unit"]) for v in vs)
                             if vs else "-")
            out.append(f"| {wn} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("</details>")
        out.append("")
        out.append("Peak RSS (VmHWM, MiB; max over rounds):")
        out.append("")
        dts = [t for t in targets if t != "raw"]
        out.append("| workload | " + " | ".join(dts) + " |")
        out.append("|" + "---|" * (len(dts) + 1))
        peak = 0
        for wn in wls:
            runs = m["runs"].get(wn, {})
            cells = []
            for t in dts:
                hs = [h for h in runs.get(t, {}).get("hwm_kib", []) if h]
                if hs and t == "vhdxfuse":
                    peak = max(peak, max(hs) * 1024)
                cells.append(f"{max(hs) / 1024:.1f}" if hs else "-")
            out.append(f"| {wn} | " + " | ".join(cells) + " |")
        out.append("")
        if peak:
            out.append(f"vhdxfuse peak RSS {peak / MiB:.1f} MiB; target < "
                       f"32 MiB + BAT ({bat_bytes / MiB:.2f} MiB) = "
                       f"{rss_limit / MiB:.2f} MiB: "
                       f"{'met' if peak < rss_limit else '**not met**'}")
            out.append("")
    return "\n".join(out)


def bat_size(cfg, tpl):
    """The BAT region's length in the empty template (for the RSS target)."""
    try:
        out = run([cfg.vhdxtool, "info", "--json", tpl],
                  capture_output=True, text=True, check=False).stdout
        info = json.loads(out)
        for r in info.get("region_table", {}).get("entries", []):
            if r.get("name") == "bat":
                return int(r["length"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 1 * MiB


# ---------------------------------------------------------------- main


def cleanup():
    for t in list(LIVE["procs"]):
        try:
            t.stop()
        except Exception as e:  # noqa: BLE001 - best effort on the way out
            log(f"cleanup: {t.name}: {e}")
    for m in list(LIVE["mounts"]):
        run(["umount", "-l", m], check=False)
    for lo in list(LIVE["loops"]):
        run(["losetup", "-d", lo], check=False)
    for w in LIVE["work"]:
        if os.path.exists(w):
            os.unlink(w)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="1 round, smaller sizes, shorter runs")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--modes", default="pinned,unpinned",
                    help="pinned,unpinned (default both)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--workloads", default="",
                    help="comma-separated list (default: all but the "
                    "randwrite-alloc-1t rows, which run only when named)")
    ap.add_argument("--workdir", default="/var/tmp/vhdxfuse-bench")
    ap.add_argument("--out", help="JSON results file "
                    "(default WORKDIR/results.json)")
    ap.add_argument("--report", help="Markdown report file "
                    "(default WORKDIR/report.md)")
    ap.add_argument("--vhdxfuse", default=os.path.join(TOP_DIR, "vhdxfuse"))
    ap.add_argument("--vhdxfuse-args", default="",
                    help="extra arguments for vhdxfuse (e.g. '-o clone_fd')")
    ap.add_argument("--variant", action="append", default=[],
                    metavar="LABEL=PATH",
                    help="also measure another vhdxfuse binary, as a "
                    "column named LABEL (for experiments)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="log how long each step of every run takes")
    ap.add_argument("--label", default="",
                    help="what the vhdxfuse binary was built from, for the "
                    "report (default: git describe of its directory)")
    ap.add_argument("--vf-dir", action="store_true",
                    help="mount vhdxfuse on a directory (the disk is a "
                    "file in it) instead of on a regular file")
    ap.add_argument("--qsd-raw-aio", default="io_uring",
                    help="aio= of the qsd-raw reference (default io_uring)")
    ap.add_argument("--qsd-direct", action="store_true",
                    help="cache.direct=on for every qsd target")
    ap.add_argument("--image-size", default="2G")
    ap.add_argument("--seq-size", help="bytes per sequential run")
    ap.add_argument("--rand-secs", type=int)
    ap.add_argument("--tree-size", help="bytes of files for ext4")
    ap.add_argument("--report-only", metavar="JSON",
                    help="only rebuild the report from a results file")
    a = ap.parse_args()

    cfg = argparse.Namespace()
    cfg.workdir = os.path.abspath(a.workdir)
    os.makedirs(cfg.workdir, exist_ok=True)
    cfg.vhdxfuse = os.path.abspath(a.vhdxfuse)
    cfg.vhdxtool = os.path.join(os.path.dirname(cfg.vhdxfuse), "vhdxtool")
    if not os.access(cfg.vhdxtool, os.X_OK):
        cfg.vhdxtool = os.path.join(TOP_DIR, "vhdxtool")
    cfg.vhdxfuse_args = a.vhdxfuse_args.split()
    cfg.qsd_raw_aio = a.qsd_raw_aio if a.qsd_raw_aio != "threads" else None
    cfg.qsd_direct = a.qsd_direct
    cfg.vf_dir = a.vf_dir
    cfg.label = a.label
    cfg.verbose = a.verbose
    cfg.quick = a.quick
    cfg.rounds = a.rounds or (1 if a.quick else 3)
    cfg.modes = [m for m in a.modes.split(",") if m]
    cfg.targets = [t for t in a.targets.split(",") if t]
    for t in cfg.targets:
        if t not in TARGET_CLASSES:
            ap.error(f"unknown target {t}")
    cfg.workloads = [w for w in a.workloads.split(",") if w]
    cfg.variants = []
    for v in a.variant:
        label, _, path = v.partition("=")
        if not label or not path or label in TARGET_CLASSES:
            ap.error(f"bad --variant {v}")
        cfg.variants.append((label, os.path.abspath(path)))
        cfg.targets.append(label)
    cfg.image_size = parse_size(a.image_size)
    cfg.block_size = "32M"
    cfg.seq_bytes = parse_size(a.seq_size) if a.seq_size else (
        256 * MiB if a.quick else 1 * GiB)
    cfg.rand_secs = a.rand_secs or (1 if a.quick else 3)
    cfg.rand_write_ios = 25000 if a.quick else 100000
    cfg.alloc_image_size = 1 << 40
    cfg.hot_bytes = 256 * MiB
    cfg.hot_secs = 1 if a.quick else 3
    cfg.tree_bytes = parse_size(a.tree_size) if a.tree_size else (
        64 * MiB if a.quick else 300 * MiB)
    out_json = a.out or os.path.join(cfg.workdir, "results.json")
    out_md = a.report or os.path.join(cfg.workdir, "report.md")
    if a.report_only:
        with open(a.report_only) as f:
            results = json.load(f)
    else:
        cfg.daemon_log = open(os.path.join(cfg.workdir, "daemons.log"), "a")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, f: sys.exit(128 + s))
        try:
            results = bench(cfg)
        finally:
            cleanup()
        with open(out_json, "w") as f:
            json.dump(results, f, indent=1)
        log(f"results: {out_json}")
    tpl = os.path.join(cfg.workdir,
                       f"tpl-empty-{results['config']['image_size']}.vhdx")
    md = report(results, bat_size(cfg, tpl))
    with open(out_md, "w") as f:
        f.write(md + "\n")
    print(md)
    log(f"report: {out_md}")


if __name__ == "__main__":
    main()
