# Helpers for tests/differencing.bats, sourced after lib/common and
# lib/mkimages.sh.
#
# The oracles are raw reference files that get the same seeded writes as
# the disks vhdxfuse exposes (tests/lib/diff-writes.py), libvhdi's
# vhdimount, vhdiinfo and tests/lib/vhdxedit.py; never our own output.

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"
DIFF_WRITES=$TOP_SRCDIR/tests/lib/diff-writes.py

# dl_write IMAGE REF SEED BLOCK_SIZE: mount IMAGE read-write, apply the
# seeded writes to the exposed disk and to the raw file REF, check that the
# disk reads back as REF through the same mount, unmount.
dl_write() {
	local img=$1 ref=$2 seed=$3 bs=$4 f
	mkdir -p "$T/mnt"
	vf_mount "$img" "$T/mnt" || return 1
	f=$(vf_raw_path "$T/mnt")
	if ! python3 "$DIFF_WRITES" --seed "$seed" --block-size "$bs" \
		"$f" "$ref" >&2; then
		vf_umount "$T/mnt"
		return 1
	fi
	if ! cmp "$f" "$ref"; then
		vf_umount "$T/mnt"
		return 1
	fi
	vf_alive "$T/mnt" || return 1
	vf_umount "$T/mnt"
}

# dl_expect IMAGE REF [daemon options]: a read-only mount of IMAGE shows
# exactly the raw file REF.
dl_expect() {
	local img=$1 ref=$2 f
	shift 2
	mkdir -p "$T/mnt"
	vf_mount "$img" "$T/mnt" -o ro "$@" || return 1
	f=$(vf_raw_path "$T/mnt")
	if ! cmp "$f" "$ref"; then
		vf_umount "$T/mnt"
		return 1
	fi
	vf_umount "$T/mnt"
}

# dl_exposed_sha IMAGE: SHA-256 of the disk a read-only mount exposes.
dl_exposed_sha() {
	local f sum
	mkdir -p "$T/mnt"
	vf_mount "$1" "$T/mnt" -o ro || return 1
	f=$(vf_raw_path "$T/mnt")
	sum=$(sha256 "$f")
	vf_umount "$T/mnt" || return 1
	echo "$sum"
}

# dl_vhdi IMAGE REF...: libvhdi's vhdimount shows the chain of IMAGE as
# DIR/vhdi1 (the base) ... DIR/vhdiN (IMAGE itself); there must be one file
# per REF, and each must equal its REF (base first).  vhdimount finds a
# parent only by the file name of absolute_win32_path next to the child,
# so the whole chain must be in one directory.
dl_vhdi() {
	local img=$1 i n got
	shift
	n=$#
	mkdir -p "$T/vhdi"
	vhdi_mount "$img" "$T/vhdi" || return 1
	got=$(find "$T/vhdi" -mindepth 1 -maxdepth 1 -name 'vhdi*' | wc -l)
	if [ "$got" -ne "$n" ]; then
		echo "vhdimount shows $got disks for $img, expected $n" >&2
		ls -l "$T/vhdi" >&2
		vhdi_umount "$T/vhdi"
		return 1
	fi
	for ((i = 1; i <= n; i++)); do
		if ! cmp "$T/vhdi/vhdi$i" "${!i}"; then
			echo "vhdimount: vhdi$i of $img differs from ${!i}" >&2
			vhdi_umount "$T/vhdi"
			return 1
		fi
	done
	vhdi_umount "$T/vhdi"
}

# dl_sums FILE...: the SHA-256 of each file, one line.
dl_sums() {
	local f
	for f in "$@"; do
		sha256 "$f"
	done | tr '\n' ' '
}

# dl_build_chain LSS: a chain of three made with vhdxtool in $T/c: l0.vhdx
# (64 MiB, 1 MiB blocks, logical sector LSS), l1.vhdx and l2.vhdx (the
# default 2 MiB blocks), each written through a read-write vhdxfuse mount
# with its own seed before the next level is made from it, and raw
# references $T/ref0..2 built by applying the same writes in order.  At
# each level: before any write the new child shows its parent's content,
# the writes read back through the mount and after a remount, and no file
# below it changed.
dl_build_chain() {
	local lss=$1 lvl below=() sums
	mkdir -p "$T/c"
	"$VHDXTOOL" create -s 64M --block-size 1M --logical-sector "$lss" \
		"$T/c/l0.vhdx" || return 1
	truncate -s 64M "$T/ref0"
	dl_write "$T/c/l0.vhdx" "$T/ref0" 100 "$MiB" || return 1
	dl_expect "$T/c/l0.vhdx" "$T/ref0" || return 1
	for lvl in 1 2; do
		below+=("$T/c/l$((lvl - 1)).vhdx")
		"$VHDXTOOL" create -t differencing \
			--parent "$T/c/l$((lvl - 1)).vhdx" \
			"$T/c/l$lvl.vhdx" || return 1
		cp --sparse=always "$T/ref$((lvl - 1))" "$T/ref$lvl"
		sums=$(dl_sums "${below[@]}")
		dl_expect "$T/c/l$lvl.vhdx" "$T/ref$lvl" || return 1
		dl_write "$T/c/l$lvl.vhdx" "$T/ref$lvl" $((100 + lvl)) \
			$((2 * MiB)) || return 1
		dl_expect "$T/c/l$lvl.vhdx" "$T/ref$lvl" || return 1
		if [ "$(dl_sums "${below[@]}")" != "$sums" ]; then
			echo "writing l$lvl.vhdx changed a file below it" >&2
			return 1
		fi
	done
	# the writes did change something at every level
	! cmp -s "$T/ref0" "$T/ref1" && ! cmp -s "$T/ref1" "$T/ref2"
}

# dl_locator IMAGE KEY: a parent locator value, read by vhdxedit.py's own
# decoding of the metadata region (not by vhdxtool).
dl_locator() {
	python3 - "$TOP_SRCDIR/tests/lib" "$1" "$2" <<'EOF'
import struct, sys
sys.path.insert(0, sys.argv[1])
import vhdxedit
img = vhdxedit.Img(sys.argv[2])
off = img.meta_item_off("parentlocator")
hdr = img.read(off, 20)
count = struct.unpack_from("<H", hdr, 18)[0]
for i in range(count):
    e = img.read(off + 20 + 12 * i, 12)
    ko, vo, kl, vl = struct.unpack("<IIHH", e)
    key = img.read(off + ko, kl).decode("utf-16-le")
    if key == sys.argv[3]:
        print(img.read(off + vo, vl).decode("utf-16-le"))
        sys.exit(0)
sys.exit("no key " + sys.argv[3])
EOF
}

# dl_dwg IMAGE: the DataWriteGuid of the current header, by vhdxedit.py.
dl_dwg() {
	python3 - "$TOP_SRCDIR/tests/lib" "$1" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import vhdxedit
img = vhdxedit.Img(sys.argv[2])
off, kind, _ = img.resolve("header%d.datawriteguid" % img.current_header())[0]
print(img.get(off, kind).lower())
EOF
}
