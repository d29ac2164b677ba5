# Build VHDX test images with qemu-img / qemu-io (the independent oracle).
#
# Sourced by the bats files after lib/common (it uses $T, the test's scratch
# directory).  Every function returns non-zero on failure so a test that
# calls it fails at the right line.

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))

# mk_vhdx IMAGE SIZE [qemu-img -o options, comma separated]
# e.g. mk_vhdx "$T/a.vhdx" $((100 * MiB)) subformat=fixed,block_size=32M
mk_vhdx() {
	local img=$1 size=$2 opts=${3:-}
	if [ -n "$opts" ]; then
		qemu-img create -q -f vhdx -o "$opts" "$img" "$size"
	else
		qemu-img create -q -f vhdx "$img" "$size"
	fi
}

# qio IMAGE CMD [CMD...]: run qemu-io commands on a VHDX image in one
# session; fails if qemu-io reports an error.
qio() {
	local img=$1 out args=()
	shift
	local c
	for c in "$@"; do
		args+=(-c "$c")
	done
	out=$(qemu-io -f vhdx "${args[@]}" "$img" 2>&1) || {
		echo "qemu-io failed: $out" >&2
		return 1
	}
	if grep -qiE 'error|failed|not supported' <<<"$out"; then
		echo "qemu-io reported: $out" >&2
		return 1
	fi
}

# mk_random_sources: four files of random bytes ($T/rand1..4, 4 MiB each)
# for `write -s`.  Distinct files keep writes at different places distinct.
mk_random_sources() {
	local i
	for i in 1 2 3 4; do
		[ -e "$T/rand$i" ] ||
			head -c $((4 * MiB)) /dev/urandom >"$T/rand$i" || return 1
	done
}

# pattern_writes SIZE BLOCK_SIZE: print qemu-io commands that put distinct
# data at the places where a reader's address translation can go wrong:
# first and last sector, unaligned spans, spans straddling block boundaries,
# a multi-block span, the last (possibly partial) block, a zeroed hole, and,
# for disks larger than one 4 GiB chunk (512-byte sectors), both sides of the
# chunk boundary where the first sector-bitmap BAT slot sits.
# Writes that would not fit in SIZE are left out.
pattern_writes() {
	local size=$1 bs=$2
	local -a w=()
	fits() { [ $(($1 + $2)) -le "$size" ]; }

	w+=("write -s $T/rand1 0 512")
	fits 529 3001 && w+=("write -P 0x11 529 3001")
	fits $((bs - 6000)) 12000 && w+=("write -s $T/rand2 $((bs - 6000)) 12000")
	fits $((2 * bs - 512)) 1024 &&
		w+=("write -P 0x22 $((2 * bs - 512)) 1024")
	fits $((3 * bs + bs / 2 + 123)) 70000 &&
		w+=("write -s $T/rand3 $((3 * bs + bs / 2 + 123)) 70000")
	# several whole blocks at once (small block sizes only)
	if [ "$bs" -le $((2 * MiB)) ] && fits $((5 * bs - 300 * 1024)) \
		$((2 * bs + 600 * 1024)); then
		w+=("write -s $T/rand4 $((5 * bs - 300 * 1024)) $((2 * bs + 600 * 1024))")
	fi
	# a zeroed range inside data written above (block 0)
	fits 1024 1024 && w+=("write -z 1024 1024")
	# chunk boundary at 4 GiB
	if [ "$size" -gt $((4 * GiB)) ]; then
		fits $((4 * GiB - 4096)) 8192 &&
			w+=("write -s $T/rand2 $((4 * GiB - 4096)) 8192")
		w+=("write -P 0x44 $((4 * GiB - bs + 77)) 1000")
		fits $((4 * GiB + bs + 4096)) 4096 &&
			w+=("write -P 0x55 $((4 * GiB + bs + 4096)) 4096")
		fits $((4 * GiB - bs / 2)) $((bs + 1000)) &&
			w+=("write -s $T/rand3 $((4 * GiB - bs / 2)) $((bs + 1000))")
	fi
	# the last block: all of it when it is partial, else its second half
	local tail=$((size % bs))
	if [ "$tail" -ne 0 ]; then
		w+=("write -s $T/rand4 $((size - tail)) $tail")
	else
		w+=("write -s $T/rand4 $((size - bs / 2)) $((bs / 2 - 512))")
	fi
	w+=("write -P 0x77 $((size - 512)) 512")
	printf '%s\n' "${w[@]}"
}

# fill_patterns IMAGE SIZE BLOCK_SIZE: apply pattern_writes with qemu-io.
fill_patterns() {
	local img=$1 size=$2 bs=$3 cmds=()
	mk_random_sources || return 1
	mapfile -t cmds < <(pattern_writes "$size" "$bs")
	qio "$img" "${cmds[@]}"
}

# qemu_raw IMAGE RAW: the oracle's view of the virtual disk.
qemu_raw() {
	qemu-img convert -f vhdx -O raw "$1" "$2"
}

# qemu_vsize IMAGE: the virtual size qemu-img reports, in bytes.
qemu_vsize() {
	qemu-img info --output=json -f vhdx "$1" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# vx IMAGE COMMAND ARGS...: tests/lib/vhdxedit.py (structure editor).
vx() {
	python3 "$TOP_SRCDIR/tests/lib/vhdxedit.py" "$@"
}
