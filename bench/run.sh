#!/bin/sh
# bench/run.sh - measure vhdxfuse against qemu-storage-daemon's FUSE export.
#
# Usage (as root, from anywhere):
#   bench/run.sh [--quick] [--modes pinned,unpinned] [--targets ...]
#                [--workloads ...] [--workdir DIR] [...]
# Every option is passed to bench/lib/vbench.py (--help lists them).
# Installs what is missing (fio, qemu-storage-daemon, qemu-img, e2fsprogs),
# builds vhdxfuse when the tree has no binary, then runs the benchmark.
# Results: WORKDIR/results.json and WORKDIR/report.md (default WORKDIR
# /var/tmp/vhdxfuse-bench, which needs ~7 GiB free).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: run as root (mounts, loop devices, drop_caches)" >&2
	exit 1
fi

need=""
command -v fio >/dev/null 2>&1 || need="$need fio"
[ -x /usr/bin/qemu-storage-daemon ] || need="$need qemu-system-common"
command -v qemu-img >/dev/null 2>&1 || need="$need qemu-utils"
command -v mkfs.ext4 >/dev/null 2>&1 || need="$need e2fsprogs"
command -v losetup >/dev/null 2>&1 || need="$need mount"
command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"
command -v python3 >/dev/null 2>&1 || need="$need python3"
if [ -n "$need" ]; then
	echo "run.sh: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq $need >/dev/null
fi

if [ ! -x "$top/vhdxfuse" ] || [ ! -x "$top/vhdxtool" ]; then
	echo "run.sh: building vhdxfuse" >&2
	(
		cd "$top"
		[ -f Makefile ] || { [ -x configure ] || ./autogen.sh; ./configure; }
		make -j"$(nproc)"
	)
fi

exec python3 "$here/lib/vbench.py" --vhdxfuse "$top/vhdxfuse" "$@"
