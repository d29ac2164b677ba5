#!/bin/bash
# bench/holes.sh - does the time of a copy of the mounted disk follow the
# data or the disk size?  (issue 14: holes that tools see)
#
#   sudo bench/holes.sh OLD_BUILD_DIR [ROUNDS] [BLOCK_SIZE]
#
# Makes a 64 GiB dynamic image holding 1 GiB of data scattered in 256
# pieces of 4 MiB (BLOCK_SIZE blocks, default 1M; the image is made once,
# with this tree's vhdxtool and vhdxfuse), then, ROUNDS times (default 3),
# for the vhdxfuse of OLD_BUILD_DIR (e.g. a build of commit 5dfef88, before
# SEEK_DATA/SEEK_HOLE) and for this tree's, each mounting the image
# read-only: drops the page cache and times `cp --sparse=always` of the
# mounted file, drops it again and times `qemu-img convert -f raw -O
# qcow2` of it.  Prints every run and a table of medians and ranges
# (markdown) for bench/RESULTS.md.  WORKDIR (default /var/tmp/holes-bench)
# needs ~3 GiB.  Leaves no mount behind, also when interrupted.
set -euo pipefail

OLD=${1:?usage: $0 OLD_BUILD_DIR [ROUNDS] [BLOCK_SIZE]}
ROUNDS=${2:-3}
BS=${3:-1M}
TOP=$(cd "$(dirname "$0")/.." && pwd)
NEW=$TOP
WORK=${WORKDIR:-/var/tmp/holes-bench}
MNT=$WORK/disk.raw # a regular-file mount point: the disk itself
PID=

[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (drop_caches)" >&2; exit 1; }
for b in "$OLD/vhdxfuse" "$NEW/vhdxfuse" "$NEW/vhdxtool"; do
	[ -x "$b" ] || { echo "$0: $b not built" >&2; exit 1; }
done

cleanup() {
	if [ -n "$PID" ]; then
		fusermount3 -u "$MNT" 2>/dev/null || true
		while kill -0 "$PID" 2>/dev/null; do sleep 0.1; done
		PID=
	fi
	rm -f "$WORK/copy.raw" "$WORK/copy.qcow2"
}
trap cleanup EXIT INT TERM

mount_ro() { # BUILD_DIR
	"$1/vhdxfuse" -f -o ro "$WORK/disk.vhdx" "$MNT" 2>>"$WORK/daemon.log" &
	PID=$!
	while ! findmnt -rn -M "$MNT" >/dev/null; do
		kill -0 "$PID" || { cat "$WORK/daemon.log"; exit 1; }
		sleep 0.05
	done
	stat "$MNT" >/dev/null
}

umount_ro() {
	fusermount3 -u "$MNT"
	while kill -0 "$PID" 2>/dev/null; do sleep 0.05; done
	PID=
}

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# seconds taken by a command
timed() {
	local t0=$EPOCHREALTIME
	"$@"
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'
}

mkdir -p "$WORK"
touch "$MNT"
if [ ! -f "$WORK/disk.vhdx" ] || [ "$(cat "$WORK/disk.bs" 2>/dev/null)" != "$BS" ]; then
	echo "making the image: 64 GiB, $BS blocks, 1 GiB in 256 pieces"
	rm -f "$WORK/disk.vhdx"
	"$NEW/vhdxtool" create -q -s 64G --block-size "$BS" "$WORK/disk.vhdx"
	head -c $((4 << 20)) /dev/urandom >"$WORK/piece"
	"$NEW/vhdxfuse" -f "$WORK/disk.vhdx" "$MNT" 2>>"$WORK/daemon.log" &
	PID=$!
	while ! findmnt -rn -M "$MNT" >/dev/null; do sleep 0.05; done
	# 256 places spread over the disk, a fixed pseudo-random order
	python3 -c '
import random
r = random.Random(14)
slots = r.sample(range(64 * 1024 // 4), 256)
print("\n".join(str(s * 4) for s in sorted(slots)))' >"$WORK/places"
	while read -r mib; do
		dd if="$WORK/piece" of="$MNT" bs=4M seek=$((mib << 20)) \
			oflag=seek_bytes conv=notrunc status=none
	done <"$WORK/places"
	umount_ro
	echo "$BS" >"$WORK/disk.bs"
fi
echo "image: $(du -h --apparent-size "$WORK/disk.vhdx" | cut -f1) apparent," \
	"$(du -h "$WORK/disk.vhdx" | cut -f1) on disk"

results=$WORK/runs.tsv
: >"$results"
for round in $(seq "$ROUNDS"); do
	for build in old new; do
		dir=$OLD
		[ $build = new ] && dir=$NEW
		mount_ro "$dir"
		drop
		t=$(timed cp --sparse=always "$MNT" "$WORK/copy.raw")
		du_k=$(du -k "$WORK/copy.raw" | cut -f1)
		rm -f "$WORK/copy.raw"
		printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$build" cp "$t" \
			"$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
		drop
		t=$(timed qemu-img convert -f raw -O qcow2 "$MNT" \
			"$WORK/copy.qcow2")
		q_k=$(du -k "$WORK/copy.qcow2" | cut -f1)
		rm -f "$WORK/copy.qcow2"
		printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$build" qemu-img "$t" \
			"$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$results"
		echo "# $build: cp copy ${du_k} KiB, qcow2 ${q_k} KiB"
		umount_ro
	done
done

python3 - "$results" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    rnd, build, tool, t, load = line.split("\t")
    runs.setdefault((tool, build), []).append(float(t))
print("\n| copy of the mounted 64 GiB disk (1 GiB data) | before (s) | after (s) | speed-up |")
print("|---|---|---|---|")
for tool, name in (("cp", "`cp --sparse=always`"),
                   ("qemu-img", "`qemu-img convert -f raw -O qcow2`")):
    b, a = runs[(tool, "old")], runs[(tool, "new")]
    mb, ma = statistics.median(b), statistics.median(a)
    print("| %s | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) | %.0fx |" % (
        name, mb, min(b), max(b), ma, min(a), max(a), mb / ma))
EOF
