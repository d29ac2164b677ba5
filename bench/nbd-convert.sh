#!/bin/bash
# bench/nbd-convert.sh - qemu-img convert from NBD: nbdkit-vhdx-plugin
# against qemu-nbd serving the same VHDX image.
#
# Usage: bench/nbd-convert.sh [ROUNDS [WORKDIR [SERVERS]]]
#   defaults: 5, /var/tmp/vhdxfuse-bench-nbd, "nbdkit qemu-nbd"
#
# The image: 64 GiB virtual disk (vhdxtool create, 32 MiB blocks) holding
# 1 GiB of random data in 256 pieces of 4 MiB scattered over the disk
# (seeded, made once and reused).  Each round, in alternating order, each
# server serves it read-only on a Unix socket and
#   qemu-img convert -f raw -O raw nbd+unix:///?socket=S /dev/shm/out.raw
# copies the disk out (the output is sparse: qemu-img skips what the server
# reports as holes and does not write zeros).  The copies are compared
# with qemu-img compare.  Prints every round and the median, minimum and
# maximum per server, and the ratio of the medians.  SERVERS may name only
# one of them.
#
# Page cache: not dropped (the machine is shared); the image (~1 GiB) is
# read once before the first round, so both servers read it from memory.
# Needs: nbdkit, qemu-nbd, qemu-img, qemu-io (qemu-utils), a built tree.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-5}
work=${2:-/var/tmp/vhdxfuse-bench-nbd}
servers=${3:-nbdkit qemu-nbd}
plugin=$top/nbdkit-vhdx-plugin.so
vhdxtool=$top/vhdxtool
out=/dev/shm/vhdxfuse-bench-nbd-out.raw
img=$work/64g-1g.vhdx
pids=()

for c in nbdkit qemu-nbd qemu-img qemu-io; do
	command -v "$c" >/dev/null || { echo "$c is not installed" >&2; exit 1; }
done
[ -f "$plugin" ] && [ -x "$vhdxtool" ] ||
	{ echo "build the tree first (make): $plugin, $vhdxtool" >&2; exit 1; }

cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -f "$out" "$out.ref" "$work"/*.sock "$work"/*.pid
}
trap cleanup EXIT

make_image() {
	local cmds=() i off
	mkdir -p "$work"
	[ -f "$img" ] && return 0
	echo "making $img (64 GiB disk, 1 GiB of data)..."
	for i in 1 2 3 4; do
		head -c $((4 << 20)) /dev/urandom >"$work/rand$i"
	done
	"$vhdxtool" create -s 64G "$img.tmp" >/dev/null
	RANDOM=13
	for i in $(seq 256); do
		# a 4 MiB-aligned piece somewhere in the 16384 of the disk
		off=$(((RANDOM * 32768 + RANDOM) % 16384 * (4 << 20)))
		cmds+=(-c "write -s $work/rand$((i % 4 + 1)) $off 4M")
	done
	qemu-io -f vhdx "${cmds[@]}" "$img.tmp" >/dev/null
	mv "$img.tmp" "$img"
}

now() { date +%s.%N; }

# serve NAME SOCKET: start a read-only server for img on SOCKET
serve() {
	local name=$1 sock=$2 i
	rm -f "$sock" "$sock.pid"
	case $name in
	nbdkit) nbdkit -f -r --unix "$sock" -P "$sock.pid" "$plugin" \
		file="$img" & ;;
	qemu-nbd) qemu-nbd -r -f vhdx -k "$sock" --pid-file="$sock.pid" \
		"$img" & ;;
	esac
	pids+=($!)
	for i in $(seq 200); do
		[ -S "$sock" ] && [ -s "$sock.pid" ] && return 0
		sleep 0.05
	done
	echo "$name did not start" >&2
	exit 1
}

stop() {
	local p=${pids[-1]}
	kill -TERM "$p"
	wait "$p" 2>/dev/null || true
	unset 'pids[-1]'
}

# one NAME: secs = the seconds qemu-img convert took through NAME
one() {
	local name=$1 sock=$work/$1.sock t0 t1
	serve "$name" "$sock"
	rm -f "$out"
	t0=$(now)
	qemu-img convert -f raw -O raw "nbd+unix:///?socket=$sock" "$out"
	t1=$(now)
	stop
	secs=$(echo "$t0 $t1" | awk '{ printf "%.2f\n", $2 - $1 }')
}

stats() { # median min max of the arguments
	printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
		END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		      printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}

declare -A med=()
make_image
cat "$img" >/dev/null
echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)," \
	"$(nbdkit --version), $(qemu-nbd --version | head -1)," \
	"git $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')"
declare -A times=()
order=($servers)
for r in $(seq "$rounds"); do
	line="round $r:"
	for name in "${order[@]}"; do
		one "$name"
		times[$name]+=" $secs"
		line+=" $name $secs s,"
		[ -f "$out.ref" ] || cp --sparse=always "$out" "$out.ref"
		# both servers gave the same disk
		qemu-img compare -q -f raw -F raw "$out" "$out.ref" ||
			{ echo "$name: the copy differs" >&2; exit 1; }
	done
	echo "$line load $(cut -d' ' -f1 /proc/loadavg)"
	# alternate which server goes first
	order=("${order[@]:1}" "${order[0]}")
done
for name in $servers; do
	# shellcheck disable=SC2086
	read -r m lo hi < <(stats ${times[$name]})
	med[$name]=$m
	printf '%-10s median %s s (min %s, max %s)\n' "$name" "$m" "$lo" "$hi"
done
if [ -n "${med[nbdkit]:-}" ] && [ -n "${med[qemu-nbd]:-}" ]; then
	awk -v a="${med[qemu-nbd]}" -v b="${med[nbdkit]}" \
		'BEGIN { printf "qemu-nbd / nbdkit-vhdx-plugin: %.1fx\n", a / b }'
fi
