#!/bin/bash
# bench/ext4-phases.sh - time the phases of the bench's ext4 workload
# (losetup + mkfs, untar, sync, umount + losetup -d) on vhdxfuse or on the
# raw file, to see where a slow ext4 row spends its time.
#
# Usage (as root, after bench/run.sh has made its templates):
#   bench/ext4-phases.sh vhdxfuse|raw [RUNS]
# Environment: VHDXFUSE (default: the tree's vhdxfuse), WORKDIR (default
# /var/tmp/vhdxfuse-bench), IMAGE_SIZE (default 2147483648), plus any
# vhdxfuse options in VF_ARGS.  Prints one line of seconds per run.
set -eu

kind=${1:?usage: ext4-phases.sh vhdxfuse|raw [RUNS]}
runs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
vf=${VHDXFUSE:-$(dirname "$here")/vhdxfuse}
w=${WORKDIR:-/var/tmp/vhdxfuse-bench}
size=${IMAGE_SIZE:-2147483648}
tars=("$w"/tree-*.tar)
tar=${tars[0]}
mnt=$w/mnt.phases
fs=$w/mnt.phases.ext4
img=""
loop=""

cleanup() {
	mountpoint -q "$fs" 2>/dev/null && umount "$fs"
	[ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
	if [ "$kind" = vhdxfuse ] && findmnt -rn "$mnt" >/dev/null 2>&1; then
		umount "$mnt"
	fi
	[ -n "$img" ] && rm -f "$img"
	rm -f "$mnt"
	rmdir "$fs" 2>/dev/null || true
}
trap cleanup EXIT

case $kind in
vhdxfuse) tpl=$w/tpl-empty-$size.vhdx ;;
raw) tpl=$w/tpl-empty-$size.raw ;;
*) echo "ext4-phases.sh: vhdxfuse or raw, not $kind" >&2; exit 1 ;;
esac
[ -f "$tpl" ] || { echo "ext4-phases.sh: no $tpl (run bench/run.sh first)" >&2; exit 1; }
mkdir -p "$fs"
now() { date +%s.%N; }

for _ in $(seq "$runs"); do
	img=$w/phases.${tpl##*.}
	cp "$tpl" "$img"
	if [ "$kind" = vhdxfuse ]; then
		touch "$mnt"
		sync
		echo 3 >/proc/sys/vm/drop_caches
		# shellcheck disable=SC2086
		"$vf" ${VF_ARGS:-} "$img" "$mnt"
		dev=$mnt
	else
		sync
		echo 3 >/proc/sys/vm/drop_caches
		dev=$img
	fi
	t0=$(now)
	loop=$(losetup --show -f "$dev")
	mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$loop"
	t1=$(now)
	mount -t ext4 "$loop" "$fs"
	tar -xf "$tar" -C "$fs"
	t2=$(now)
	sync -f "$fs"
	t3=$(now)
	umount "$fs"
	losetup -d "$loop"
	loop=""
	t4=$(now)
	[ "$kind" = vhdxfuse ] && umount "$mnt"
	rm -f "$img" "$mnt"
	img=""
	awk -v k="$kind" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" \
		'BEGIN { printf "%s mkfs %.3f tar %.3f sync %.3f umount %.3f total %.3f\n", k, b - a, c - b, d - c, e - d, e - a }'
done
