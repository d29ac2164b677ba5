# Helpers for tests/vhdxtool.bats, sourced after lib/common and
# lib/mkimages.sh.
#
# The oracles are independent of our code: qemu-img (check, info, compare,
# convert), libvhdi's vhdimount, tests/lib/vhdxedit.py (a separate decoder
# of the on-disk structures) and the original data.

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"

# vt_qemu_ok LOGICAL_SECTOR: whether qemu-img can open such an image; if
# not, print the reason as a TAP comment.
vt_qemu_ok() {
	[ "$1" -eq 512 ] && return 0
	echo "# skipping qemu-img for 4096-byte logical sectors:" \
		"qemu $(qemu-img --version | head -1 | cut -d' ' -f3)" \
		"cannot open them" >&3
	return 1
}

# vt_dd_rand FILE OFFSET LENGTH: write LENGTH random bytes at OFFSET.
vt_dd_rand() {
	head -c "$3" /dev/urandom |
		dd of="$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc \
			status=none iflag=fullblock
}

# vt_mk_raw RAW SIZE BLOCK_SIZE: a sparse raw disk of SIZE bytes with data
# where conversions go wrong: the first sector, both sides of the first
# block boundaries, an unaligned span inside block 3, the 4 GiB chunk
# boundary (512-byte sectors), the last block and the last sector.  Block 2
# holds explicit zeros (written, not a hole).  Writes that do not fit are
# left out.
vt_mk_raw() {
	local raw=$1 size=$2 bs=$3
	rm -f "$raw"
	truncate -s "$size" "$raw" || return 1
	fits() { [ $(($1 + $2)) -le "$size" ]; }
	vt_dd_rand "$raw" 0 512 || return 1
	fits $((bs - 6000)) 12000 && { vt_dd_rand "$raw" $((bs - 6000)) 12000 || return 1; }
	fits $((2 * bs)) 65536 &&
		{ head -c 65536 /dev/zero | dd of="$raw" bs=64K \
			seek=$((2 * bs)) oflag=seek_bytes conv=notrunc \
			status=none || return 1; }
	fits $((3 * bs + 123)) 70000 &&
		{ vt_dd_rand "$raw" $((3 * bs + 123)) 70000 || return 1; }
	fits $((4 * GiB - 4096)) 8192 &&
		{ vt_dd_rand "$raw" $((4 * GiB - 4096)) 8192 || return 1; }
	local last=$(((size - 1) / bs * bs))
	vt_dd_rand "$raw" $last $((size - last < 4096 ? size - last : 4096)) ||
		return 1
	vt_dd_rand "$raw" $((size - 512)) 512
}

# vt_nonzero_blocks RAW BLOCK_SIZE: how many blocks of RAW hold a byte that
# is not zero (computed here, not by the tool).
vt_nonzero_blocks() {
	python3 - "$1" "$2" <<'EOF'
import os, sys
path, bs = sys.argv[1], int(sys.argv[2])
n = 0
with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    off = 0
    while off < size:
        try:
            data = os.lseek(f.fileno(), off, os.SEEK_DATA)
        except OSError:
            break
        blk = data // bs
        f.seek(blk * bs)
        if f.read(bs).strip(b"\0"):
            n += 1
        off = (blk + 1) * bs
print(n)
EOF
}

# vt_present_blocks IMAGE: payload BAT entries in state 6 or 7, counted by
# vhdxedit.py.
vt_present_blocks() {
	vx "$1" bat-find-present | wc -l
}

# vt_headers_valid IMAGE: "True True" when both headers are valid, by
# vhdxedit.py's own decoding.
vt_headers_valid() {
	python3 - "$TOP_SRCDIR/tests/lib" "$1" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import vhdxedit
img = vhdxedit.Img(sys.argv[2])
print(img.header_valid(1), img.header_valid(2))
EOF
}

# vt_vhdi_compare IMAGE RAW BLOCK_SIZE: libvhdi's vhdimount must show
# exactly RAW (whole file up to 512 MiB, else random and boundary ranges).
vt_vhdi_compare() {
	local img=$1 raw=$2 bs=$3 size
	size=$(stat -c %s "$raw")
	mkdir -p "$T/vhdi"
	vhdi_mount "$img" "$T/vhdi" || return 1
	local got
	got=$(stat -c %s "$T/vhdi/vhdi1")
	if [ "$got" -ne "$size" ]; then
		echo "vhdimount shows $got bytes, expected $size" >&2
		vhdi_umount "$T/vhdi"
		return 1
	fi
	if [ "$size" -le $((512 * MiB)) ]; then
		cmp "$T/vhdi/vhdi1" "$raw" || { vhdi_umount "$T/vhdi"; return 1; }
	else
		cmp_ranges "$T/vhdi/vhdi1" "$raw" "$bs" 40 ||
			{ vhdi_umount "$T/vhdi"; return 1; }
	fi
	vhdi_umount "$T/vhdi"
}

# vt_qemu_compare IMAGE RAW BLOCK_SIZE: qemu-img check passes, qemu-img info
# reports the size of RAW and BLOCK_SIZE, and qemu-img compare finds the
# disk identical to RAW.
vt_qemu_compare() {
	local img=$1 raw=$2 bs=$3 out
	out=$(qemu-img check -f vhdx "$img" 2>&1) ||
		{ echo "qemu-img check: $out" >&2; return 1; }
	out=$(qemu-img info --output=json -f vhdx "$img") || return 1
	[ "$(jq '."virtual-size"' <<<"$out")" -eq "$(stat -c %s "$raw")" ] ||
		{ echo "qemu-img info: wrong size: $out" >&2; return 1; }
	[ "$(jq '."cluster-size"' <<<"$out")" -eq "$bs" ] ||
		{ echo "qemu-img info: wrong block size: $out" >&2; return 1; }
	qemu-img compare -q -f vhdx -F raw "$img" "$raw" ||
		{ echo "qemu-img compare: $img differs from $raw" >&2; return 1; }
}

# vt_verify IMAGE RAW BLOCK_SIZE LOGICAL_SECTOR: both oracles agree that
# the VHDX IMAGE holds exactly RAW (qemu-img where it can open it).
vt_verify() {
	local img=$1 raw=$2 bs=$3 lss=$4
	if vt_qemu_ok "$lss"; then
		vt_qemu_compare "$img" "$raw" "$bs" || return 1
	fi
	vt_vhdi_compare "$img" "$raw" "$bs"
}

# vt_no_temp DIR: no temporary output file was left in DIR.
vt_no_temp() {
	local left
	left=$(find "$1" -maxdepth 1 -name '*.tmp-*')
	[ -z "$left" ] || { echo "left behind: $left" >&2; return 1; }
}

# vt_expect_check IMAGE STATUS REGEX: `vhdxtool check IMAGE` exits with
# STATUS, prints a line matching REGEX and does not change the file.
vt_expect_check() {
	local img=$1 want=$2 re=$3 before
	before=$(sha256 "$img")
	run "$VHDXTOOL" check "$img"
	echo "exit status $status; output:"
	echo "$output"
	[ "$status" -eq "$want" ] ||
		{ echo "expected exit status $want" && return 1; }
	grep -qiE -- "$re" <<<"$output" ||
		{ echo "output does not match /$re/" && return 1; }
	[ "$(sha256 "$img")" = "$before" ] ||
		{ echo "check changed the image" && return 1; }
}
