#!/usr/bin/env bats
# Discard through vhdxfuse: fallocate(2) FALLOC_FL_PUNCH_HOLE and
# FALLOC_FL_ZERO_RANGE on the exposed disk (vhdx_zero, fmt §8.3, §10.5),
# from fallocate(1), from fstrim and mkfs on ext4 over a loop device, and
# from blkdiscard.
#
# Oracles, never our own output: a raw reference file on the host file
# system that gets the same fallocate(1) calls (the host kernel's idea of
# punch-hole and zero-range), qemu-img compare and check, libvhdi's
# vhdimount, e2fsck, and a small decoder of the BAT written here with
# tests/lib/vhdxedit.py (it reads the image files without the C library).
# What is expected of block states and of the host file's allocated space
# is worked out from the ranges each test punches.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/corpus.bash"

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"
KiB=1024

# Does this kernel pass FALLOC_FL_ZERO_RANGE on to FUSE daemons?  Kernels
# whose FUSE lacks it answer EOPNOTSUPP themselves: DS_ZERO_RANGE=no.
setup_file() {
	local d out
	export DS_ZERO_RANGE=unknown
	[ -x "$VHDXTOOL" ] && [ -c /dev/fuse ] && command -v fallocate \
		>/dev/null || return 0
	d=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vhdxfuse-test.XXXXXX") || return 0
	if "$VHDXTOOL" create -q -s 8M "$d/p.vhdx" && touch "$d/p.raw" &&
		"$VHDXFUSE" "$d/p.vhdx" "$d/p.raw"; then
		if out=$(fallocate --zero-range --keep-size -o 0 -l 4096 \
			"$d/p.raw" 2>&1); then
			DS_ZERO_RANGE=yes
		elif [[ $out == *"not supported"* ]]; then
			DS_ZERO_RANGE=no
		fi
		fusermount3 -u "$d/p.raw"
	fi
	rm -rf "$d"
}

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_fuse
	require_cmd fallocate python3 jq
	# every test but the fstrim one also zeroes ranges
	if [ "$DS_ZERO_RANGE" = no ] &&
		[[ $BATS_TEST_DESCRIPTION != *fstrim* ]]; then
		skip "this kernel's FUSE refuses FALLOC_FL_ZERO_RANGE itself"
	fi
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# ------------------------------------------------------------------ helpers

# ds_rand FILE OFFSET LENGTH: LENGTH bytes from /dev/urandom at OFFSET.
ds_rand() {
	dd if=/dev/urandom of="$1" bs=64K seek="$2" count="$3" \
		oflag=seek_bytes iflag=count_bytes,fullblock conv=notrunc \
		status=none
}

# ds_copy SRC DST [dd options...]: SRC over the start of DST, in place.
ds_copy() {
	local src=$1 dst=$2
	shift 2
	dd if="$src" of="$dst" bs=1M conv=notrunc status=none "$@"
}

# ds_apply OPS FILE...: run every line of the file OPS ("p OFF LEN":
# --punch-hole, "z OFF LEN": --zero-range, "zk OFF LEN": --zero-range
# --keep-size) as fallocate(1) on each FILE.
ds_apply() {
	local ops=$1 op off len f
	shift
	for f in "$@"; do
		while read -r op off len; do
			case $op in
			p) fallocate --punch-hole -o "$off" -l "$len" "$f" ;;
			z) fallocate --zero-range -o "$off" -l "$len" "$f" ;;
			zk) fallocate --zero-range --keep-size -o "$off" \
				-l "$len" "$f" ;;
			*) false ;;
			esac || {
				echo "fallocate $op $off $len $f failed" >&2
				return 1
			}
		done <"$ops"
	done
}

# ds_alloc FILE: bytes the host file system allocated for FILE.
ds_alloc() {
	echo $(($(stat -c %b "$1") * 512))
}

# ds_fsync FILE: fsync(2) FILE (through the mount: vhdx_flush).
ds_fsync() {
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.fsync(fd)
os.close(fd)' "$1"
}

# ds_bat IMAGE [IMAGE...] [--read OUT [--blocks N,N,...]]: decode the BAT
# of IMAGE (child first, then its parents) with vhdxedit.py, not the C
# library.  Prints the payload block states of the first IMAGE as one line
# ("6 2 0 ...").  With --read OUT, also writes the virtual disk the chain
# shows to OUT (FULLY_PRESENT: the file; PARTIALLY_PRESENT: the file where
# the sector bitmap bit is 1, else the parent; NOT_PRESENT: the parent, or
# zeros without one; ZERO, UNDEFINED, UNMAPPED: zeros); with --blocks only
# those payload blocks, into a sparse OUT of the disk's size.  Fails on a
# dirty log, on a ZERO entry with a file offset (fmt §8.1: reserved, write
# 0), and on blocks or bitmaps that overlap.
ds_bat() {
	python3 - "$TOP_SRCDIR/tests/lib" "$@" <<'EOF'
import struct, sys
sys.path.insert(0, sys.argv[1])
import vhdxedit

MiB = 1 << 20
args = sys.argv[2:]
opts = {}
for k in ("--read", "--blocks"):
    if k in args:
        i = args.index(k)
        opts[k] = args[i + 1]
        del args[i:i + 2]

class Layer:
    def __init__(self, path):
        self.img = vhdxedit.Img(path)
        h = self.img.current_header()
        off, kind, _ = self.img.resolve("header%d.logguid" % h)[0]
        if self.img.get(off, kind) != "00000000-0000-0000-0000-000000000000":
            sys.exit("%s: the log is not empty" % path)
        g = self.img.geometry()
        self.bs, self.vs = g["block_size"], g["virtual_size"]
        self.lss, self.cr = g["logical_sector_size"], g["chunk_ratio"]
        cr, n, nsb = self.cr, g["payload_blocks"], g["bitmap_blocks"]
        raw = self.img.read(g["bat_offset"], 8 * nsb * (cr + 1))
        ent = lambda i: struct.unpack_from("<Q", raw, 8 * i)[0]
        self.ents = [ent(pb + pb // cr) for pb in range(n)]
        self.sbs = [ent(c * (cr + 1) + cr) for c in range(nsb)]
        used = []
        for pb, e in enumerate(self.ents):
            st, fo = e & 7, e & ~0xFFFFF
            if st == 2 and fo:
                sys.exit("%s: ZERO block %d has offset %d" % (path, pb, fo))
            if st in (6, 7):
                used.append((fo, self.bs, "block %d" % pb))
            if st == 7 and self.sbs[pb // cr] & 7 != 6:
                sys.exit("%s: block %d without bitmap" % (path, pb))
        for c, e in enumerate(self.sbs):
            if e & 7 == 6:
                used.append((e & ~0xFFFFF, MiB, "bitmap %d" % c))
        used.sort()
        for a, b in zip(used, used[1:]):
            if a[0] < MiB or a[0] + a[1] > b[0]:
                sys.exit("%s: %s at %d overlaps %s at %d"
                         % (path, a[2], a[0], b[2], b[0]))

    def present(self, pb):
        """The sector bitmap bits of PARTIALLY_PRESENT block pb."""
        spb = self.bs // self.lss
        sb = self.sbs[pb // self.cr] & ~0xFFFFF
        b = self.img.read(sb + (pb % self.cr) * spb // 8, spb // 8)
        return [(b[k // 8] >> (k % 8)) & 1 for k in range(spb)]

layers = [Layer(p) for p in args]

def read(k, off, n):
    """n bytes at off of the disk layer k shows (inside one block of k)."""
    if k == len(layers) or off >= layers[k].vs:
        return bytes(n)
    L = layers[k]
    e = L.ents[off // L.bs]
    st, fo = e & 7, e & ~0xFFFFF
    if st == 6:
        return L.img.read(fo + off % L.bs, n)
    if st == 7:
        bits, buf = L.present(off // L.bs), b""
        while len(buf) < n:
            o = off + len(buf)
            m = min(n - len(buf), L.lss - o % L.lss)
            if bits[(o % L.bs) // L.lss]:
                buf += L.img.read(fo + o % L.bs, m)
            else:
                buf += read_below(k, o, m)
        return buf
    if st == 0:
        return read_below(k, off, n)
    return bytes(n)

def read_below(k, off, n):
    if k + 1 == len(layers):
        return bytes(n)
    P, buf = layers[k + 1], b""
    while len(buf) < n:
        o = off + len(buf)
        m = min(n - len(buf), P.bs - o % P.bs)
        buf += read(k + 1, o, m)
    return buf

top = layers[0]
print(" ".join(str(e & 7) for e in top.ents))
if "--read" in opts:
    blocks = range(len(top.ents))
    if "--blocks" in opts:
        blocks = [int(x) for x in opts["--blocks"].split(",")]
    with open(opts["--read"], "wb") as f:
        f.truncate(top.vs)
        for pb in blocks:
            o = pb * top.bs
            f.seek(o)
            f.write(read(0, o, min(top.bs, top.vs - o)))
EOF
}

# ds_mount_apply IMAGE REF: mount IMAGE on $T/mnt, copy REF over its disk,
# apply $T/ops to REF and to the disk, fsync, and compare them through the
# same mount (and the kernel's page cache).  Sets f (the disk file), a0 and
# s0 (the image's allocated bytes and size before the ops) and a1 (after).
ds_mount_apply() {
	local img=$1 ref=$2
	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	ds_copy "$ref" "$f" conv=notrunc,fsync
	a0=$(ds_alloc "$img")
	s0=$(stat -c %s "$img")
	ds_apply "$T/ops" "$ref" "$f"
	ds_fsync "$f"
	cmp "$f" "$ref"
	a1=$(ds_alloc "$img")
}

# ds_states IMAGE: "zero=N fully_present=N not_present=N" from vhdxtool info
# --json (compared with counts worked out from the ranges punched).
ds_states() {
	"$VHDXTOOL" info --json "$1" | jq -r '.bat.payload_states |
		"zero=\(.zero) fully_present=\(.fully_present) not_present=\(.not_present)"'
}

# ds_used_end IMAGE: the end of the last structure of IMAGE (present
# blocks, regions, log), read with vhdxedit.py.
ds_used_end() {
	python3 - "$TOP_SRCDIR/tests/lib" "$1" <<'EOF'
import subprocess, sys
ed = [sys.executable, sys.argv[1] + "/vhdxedit.py", sys.argv[2]]
def get(*a):
    return subprocess.run(ed + list(a), capture_output=True, text=True,
                          check=True).stdout
bs = int(get("get", "meta.blocksize"))
ends = [int(get("get", "header1.logoffset")) +
        int(get("get", "header1.loglength"))]
for r in ("bat", "metadata"):
    ends.append(int(get("get", "regions.%s.offset" % r)) +
                int(get("get", "regions.%s.length" % r)))
for line in get("bat-find-present").splitlines():
    v = int(line.split()[1], 0)
    ends.append((v & ~0xFFFFF) + bs)
print(max(ends))
EOF
}

# ds_clean IMAGE: qemu-img check and vhdxtool check find nothing.
ds_clean() {
	run qemu-img check "$1"
	if [ "$status" -ne 0 ] || [[ $output != *"No errors were found"* ]]; then
		echo "qemu-img check $1: status $status: $output" >&2
		return 1
	fi
	run "$VHDXTOOL" check "$1"
	if [ "$status" -ne 0 ]; then
		echo "vhdxtool check $1: status $status: $output" >&2
		return 1
	fi
}

# ds_qemu_same IMAGE REF: QEMU reads IMAGE as the raw file REF.
ds_qemu_same() {
	run qemu-img compare -f vhdx -F raw "$1" "$2"
	if [ "$status" -ne 0 ]; then
		echo "qemu-img compare $1 $2: status $status: $output" >&2
		return 1
	fi
}

# ds_fresh_same IMAGE REF: a new read-only mount shows REF (SHA-256).
ds_fresh_same() {
	local f
	vf_mount "$1" "$T/mnt" -o ro || return 1
	f=$(vf_raw_path "$T/mnt")
	if [ "$(sha256 "$f")" != "$(sha256 "$2")" ]; then
		echo "a new mount of $1 does not show $2" >&2
		cmp "$f" "$2" >&2
		vf_umount "$T/mnt"
		return 1
	fi
	vf_umount "$T/mnt"
}

# ds_vhdi_same IMAGE REF: libvhdi's vhdimount shows REF, when installed.
ds_vhdi_same() {
	if ! command -v vhdimount >/dev/null; then
		note "vhdimount (libvhdi-utils) not installed: not compared"
		return 0
	fi
	mkdir -p "$T/vhdi"
	vhdi_mount "$1" "$T/vhdi" || return 1
	if ! cmp "$T/vhdi/vhdi1" "$2"; then
		echo "vhdimount shows $1 unlike $2" >&2
		vhdi_umount "$T/vhdi"
		return 1
	fi
	vhdi_umount "$T/vhdi"
}

# ------------------------------------------------ fallocate(1) on the disk

# The disk of the fallocate cases: 2 MiB blocks, 25.5 MiB, so block 12 is
# a partial last block (24 MiB to 25.5 MiB).
FA_BS=$((2 * MiB))
FA_SIZE=$((25 * MiB + 512 * KiB))

# fa_ops FILE: the ranges, one per line (see ds_apply).
fa_ops() {
	cat >"$1" <<EOF
p 0 4096
p $((2 * MiB)) $((2 * MiB))
z $((4 * MiB)) $((2 * MiB))
p $((6 * MiB)) $((4 * MiB))
p $((10 * MiB + 4096)) $((64 * KiB))
z $((11 * MiB + 1000)) 5000
p $((12 * MiB + 1000)) 5000
p $((15 * MiB + 12345)) $((2 * MiB))
z $((17 * MiB + 4321)) $((3 * MiB + 1234))
p $((21 * MiB + 555)) $((3 * MiB - 555))
zk $((24 * MiB + 3333)) $((2 * MiB))
EOF
}
# What they leave, block by block: 0 partly punched (6); 1 punched (2);
# 2 zero-range over data stays allocated (6); 3 punched (2); 4 never
# written (as created: INIT); 5..8 partly zeroed (6); 9 zero-range whole
# (6); 10 partly (6); 11 punched (2); 12 partly, to the end (6).
fa_states() {
	echo "6 2 6 2 $1 6 6 6 6 6 6 2 6"
}

# fallocate_case IMAGE INIT: IMAGE (FA_SIZE, FA_BS blocks, every block in
# state INIT) gets random data everywhere but block 4, then the ranges of
# fa_ops, and so does a raw reference file.
fallocate_case() {
	local img=$1 init=$2 f ref=$T/ref.raw a0 a1 s0 nonzero
	fa_ops "$T/ops"
	truncate -s "$FA_SIZE" "$ref"
	ds_rand "$ref" 0 $((8 * MiB))
	ds_rand "$ref" $((10 * MiB)) $((FA_SIZE - 10 * MiB))

	ds_mount_apply "$img" "$ref"
	assert_equal "$(stat -c %s "$f")" "$FA_SIZE"
	# blocks 1, 3 and 11 held data: their 6 MiB are host holes now
	[ $((a0 - a1)) -ge $((6 * MiB)) ] || {
		echo "allocated $a0 -> $a1: less than 6 MiB given back" >&2
		return 1
	}
	# holes; the file is shorter only where its end became free (fmt
	# §19.2: it then ends with its last structure)
	[ "$(stat -c %s "$img")" -eq "$s0" ] ||
		[ "$(stat -c %s "$img")" -eq "$(ds_used_end "$img")" ]
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"

	# the reference got its zeros (about 17.5 MiB of them, block 4
	# included), else the comparisons prove little
	nonzero=$(tr -d '\000' <"$ref" | wc -c)
	[ "$nonzero" -lt $((FA_SIZE - 17 * MiB)) ]
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"
	ds_fresh_same "$img" "$ref"
	ds_vhdi_same "$img" "$ref"
	run ds_bat "$img" --read "$T/decoded.raw"
	assert_success
	assert_output "$(fa_states "$init")"
	cmp "$T/decoded.raw" "$ref"
}

@test "fallocate punch-hole and zero-range: vhdxtool create image" {
	require_cmd qemu-img
	"$VHDXTOOL" create -q -s "$FA_SIZE" --block-size 2M "$T/d.vhdx"
	fallocate_case "$T/d.vhdx" 0
	assert_equal "$(ds_states "$T/d.vhdx")" \
		"zero=3 fully_present=9 not_present=1"
}

@test "fallocate punch-hole and zero-range: qemu-img image" {
	require_cmd qemu-img
	mk_vhdx "$T/q.vhdx" "$FA_SIZE" block_size=2M
	# qemu-img starts every block as ZERO (fmt §8.3)
	run ds_bat "$T/q.vhdx"
	assert_output "$(printf '2 %.0s' {1..12})2"
	fallocate_case "$T/q.vhdx" 2
	assert_equal "$(ds_states "$T/q.vhdx")" \
		"zero=4 fully_present=9 not_present=0"
}

@test "fallocate punch-hole and zero-range: qemu-img image, block_state_zero=off" {
	require_cmd qemu-img
	mk_vhdx "$T/q.vhdx" "$FA_SIZE" block_size=2M,block_state_zero=off
	run ds_bat "$T/q.vhdx"
	assert_output "$(printf '0 %.0s' {1..12})0"
	fallocate_case "$T/q.vhdx" 0
	assert_equal "$(ds_states "$T/q.vhdx")" \
		"zero=3 fully_present=9 not_present=1"
}

# ------------------------------------------------------ space given back

@test "punch-hole gives whole blocks back to the host; zero-range keeps them" {
	local img=$T/s.vhdx disk=$T/disk ref=$T/ref.raw a0 a1 a2 s0 b1
	local size=$((33 * MiB))
	require_cmd qemu-img
	"$VHDXTOOL" create -q -s "$size" --block-size 2M "$img"
	truncate -s "$size" "$ref"
	ds_rand "$ref" 0 "$size"
	touch "$disk"
	vf_mount "$img" "$disk"
	ds_copy "$ref" "$disk" conv=notrunc,fsync
	a0=$(ds_alloc "$img")
	s0=$(stat -c %s "$img")
	# all 17 blocks (the last one 1 MiB) are backed by the file
	assert_equal "$(($(stat -c %b "$disk") * 512))" "$size"

	# blocks 2..9 and the partial last block 16: 17 MiB of data
	fallocate --punch-hole -o $((4 * MiB)) -l $((16 * MiB)) "$disk"
	fallocate --punch-hole -o $((32 * MiB)) -l $((1 * MiB)) "$disk"
	fallocate --punch-hole -o $((4 * MiB)) -l $((16 * MiB)) "$ref"
	fallocate --punch-hole -o $((32 * MiB)) -l $((1 * MiB)) "$ref"
	ds_fsync "$disk"
	a1=$(ds_alloc "$img")
	note "image allocated: $a0 -> $a1 bytes after punching 17 MiB"
	# the punched blocks' space is gone from the host file: 18 MiB, as
	# the last block's 1 MiB of disk had its whole 2 MiB reserved; the
	# journal of the BAT change may take a few pages of the log
	[ $((a0 - a1)) -le $((18 * MiB)) ]
	[ $((a0 - a1)) -ge $((17 * MiB)) ]
	# holes; the file is shorter only where its end became free (fmt
	# §19.2: the punched last blocks' places are cut off at the flush)
	[ "$(stat -c %s "$img")" -eq "$s0" ] ||
		[ "$(stat -c %s "$img")" -eq "$(ds_used_end "$img")" ]
	# the disk file counts what is backed: 16 MiB
	b1=$(($(stat -c %b "$disk") * 512))
	assert_equal "$b1" $((16 * MiB))
	cmp "$disk" "$ref"

	# zero-range over blocks 10 and 11 (fully present): zeros, but the
	# blocks stay allocated, in the image and in the host file
	fallocate --zero-range -o $((20 * MiB)) -l $((4 * MiB)) "$disk"
	fallocate --zero-range -o $((20 * MiB)) -l $((4 * MiB)) "$ref"
	ds_fsync "$disk"
	a2=$(ds_alloc "$img")
	note "image allocated: $a1 -> $a2 bytes after zero-range of 4 MiB"
	[ $((a1 - a2)) -lt $((1 * MiB)) ]
	assert_equal "$(($(stat -c %b "$disk") * 512))" "$b1"
	cmp "$disk" "$ref"
	vf_alive "$disk"
	vf_umount "$disk"

	[ "$(stat -c %s "$img")" -eq "$s0" ] ||
		[ "$(stat -c %s "$img")" -eq "$(ds_used_end "$img")" ]
	assert_equal "$(ds_states "$img")" \
		"zero=9 fully_present=8 not_present=0"
	run ds_bat "$img" --read "$T/decoded.raw"
	assert_success
	assert_output "6 6 2 2 2 2 2 2 2 2 6 6 6 6 6 6 2"
	cmp "$T/decoded.raw" "$ref"
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"

	# a new write into a punched block: the rest of the block reads zeros
	vf_mount "$img" "$disk"
	ds_rand "$ref" $((6 * MiB + 512 * KiB)) 4096
	dd if="$ref" of="$disk" bs=4096 skip=$(((6 * MiB + 512 * KiB) / 4096)) \
		seek=$(((6 * MiB + 512 * KiB) / 4096)) count=1 conv=notrunc,fsync \
		status=none
	cmp "$disk" "$ref"
	# fallocate --dig-holes reads the disk and punches its runs of
	# zeros: the zeroed blocks 10 and 11 go back to the host too
	a1=$(ds_alloc "$img")
	fallocate --dig-holes "$disk"
	ds_fsync "$disk"
	a2=$(ds_alloc "$img")
	note "image allocated: $a1 -> $a2 bytes after --dig-holes"
	[ $((a1 - a2)) -ge $((4 * MiB)) ]
	cmp "$disk" "$ref"
	vf_umount "$disk"
	run ds_bat "$img"
	assert_output "6 6 2 6 2 2 2 2 2 2 2 2 6 6 6 6 2"
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"
	ds_fresh_same "$img" "$ref"
}

# ---------------------------------------------------------- differencing

@test "differencing: punch and zero in the child; the parent shows through the rest" {
	local p=$T/c/p.vhdx c=$T/c/c.vhdx ref=$T/ref.raw f psum
	mkdir -p "$T/c"
	"$VHDXTOOL" create -q -s 16M --block-size 1M "$p"
	truncate -s 16M "$ref"
	ds_rand "$ref" 0 $((16 * MiB))
	vf_mount "$p" "$T/mnt"
	ds_copy "$ref" "$(vf_raw_path "$T/mnt")" conv=notrunc,fsync
	vf_umount "$T/mnt"
	psum=$(sha256 "$p")
	# the child has 2 MiB blocks over the parent's 1 MiB ones
	"$VHDXTOOL" create -q --parent "$p" --block-size 2M "$c"

	vf_mount "$c" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	# data of the child's own: all of block 3, part of block 5
	ds_rand "$T/own" 0 $((2 * MiB + 8 * KiB))
	for x in "$f" "$ref"; do
		dd if="$T/own" of="$x" bs=1M seek=6 count=2 conv=notrunc \
			status=none
		dd if="$T/own" of="$x" bs=4K skip=512 seek=$((10 * 256 + 25)) \
			count=2 conv=notrunc,fsync status=none
	done
	cat >"$T/ops" <<OPS
p $((2 * MiB)) $((2 * MiB))
p $((6 * MiB)) $((2 * MiB))
p $((4 * MiB + 1000)) 70000
z $((10 * MiB + 50 * KiB)) $((100 * KiB))
z $((12 * MiB)) $((2 * MiB))
OPS
	ds_apply "$T/ops" "$ref" "$f"
	cmp "$f" "$ref"
	# a write into the punched block 1: the rest of it stays zeros, it
	# does not show the parent again
	ds_rand "$T/own" 0 4096
	for x in "$f" "$ref"; do
		dd if="$T/own" of="$x" bs=4K seek=$(((2 * MiB + 512 * KiB) / 4096)) \
			count=1 conv=notrunc status=none
	done
	ds_fsync "$f"
	cmp "$f" "$ref"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"

	# the parent was only read
	assert_equal "$(sha256 "$p")" "$psum"
	# block 1 written after its punch (6), 2 partly zeroed (6), 3 punched
	# (2), 5 partly zeroed (6), 6 zero-range over the parent (2), 0, 4, 7
	# untouched (0)
	run ds_bat "$c" "$p" --read "$T/decoded.raw"
	assert_success
	assert_output "0 6 6 2 0 6 2 0"
	cmp "$T/decoded.raw" "$ref"
	assert_equal "$(ds_states "$c")" "zero=2 fully_present=3 not_present=3"
	run "$VHDXTOOL" check "$c"
	assert_success
	ds_fresh_same "$c" "$ref"
	assert_equal "$(sha256 "$p")" "$psum"
	note "not read by qemu-img (no VHDX differencing support in QEMU) nor" \
		"by vhdimount (libvhdi takes the sector bitmap of a chunk whose" \
		"bitmap entry is NOT_PRESENT from file offset 0)"
}

# A Hyper-V checkpoint from the corpus has PARTIALLY_PRESENT blocks (sector
# bitmaps written by Windows).  Its parent was never published: a stand-in
# with the right name, size and DataWriteGuid gets random data in the
# blocks used here.  The decoder above shows what the chain holds before;
# punches and zero ranges then go to the child and to that reference.
HV_CKPT=dissect-differencing.avhdx
HV_PARENT='Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx'
HV_LINKAGE=ff34003b-11ed-4cf8-a166-b2be05e20b80

@test "Hyper-V checkpoint: punch and zero in PARTIALLY_PRESENT blocks" {
	require_corpus
	local c=$T/hv/$HV_CKPT p=$T/hv/$HV_PARENT ref=$T/ref.raw f psum b
	local bs=$((2 * MiB)) list
	# PARTIALLY_PRESENT in the checkpoint: 0 256 923 1027 1028 1041 1042
	# 1043 (8 to 2856 sectors present); 1 and 1029 are NOT_PRESENT
	local blocks=(0 1 256 923 1027 1028 1029 1041 1042 1043)
	list=$(IFS=,; echo "${blocks[*]}")
	mkdir -p "$T/hv"
	unpack "$HV_CKPT.xz"
	mv "$IMG" "$c"
	"$VHDXTOOL" create -q -s 8G --block-size 2M "$p"
	touch "$T/disk"
	vf_mount "$p" "$T/disk"
	for b in "${blocks[@]}"; do
		ds_rand "$T/disk" $((b * bs)) "$bs"
	done
	vf_umount "$T/disk"
	python3 "$TOP_SRCDIR/tests/lib/vhdxedit.py" "$p" \
		set headers.datawriteguid "$HV_LINKAGE"
	psum=$(sha256 "$p")
	run ds_bat "$c" "$p" --read "$ref" --blocks "$list"
	assert_success
	# what the decoder says, for the blocks used here
	assert_equal "$(for b in "${blocks[@]}"; do
		echo "${output:$((2 * b)):1}"; done | tr '\n' ' ')" \
		"7 0 7 7 7 7 0 7 7 7 "

	cat >"$T/ops" <<OPS
p 0 $bs
p $((1 * bs + 4096)) 8192
p $((256 * bs + 1000)) 70000
z $((923 * bs)) $bs
p $((1027 * bs + MiB + 333)) $((MiB + 5000))
z $((1041 * bs + 12345)) 100000
p $((1042 * bs)) $bs
OPS
	vf_mount "$c" "$T/disk"
	# the mount reads the blocks as the decoder does
	for b in "${blocks[@]}"; do
		cmp -i $((b * bs)):$((b * bs)) -n "$bs" "$T/disk" "$ref"
	done
	ds_apply "$T/ops" "$T/disk" "$ref"
	for b in "${blocks[@]}"; do
		cmp -i $((b * bs)):$((b * bs)) -n "$bs" "$T/disk" "$ref"
	done
	ds_fsync "$T/disk"
	vf_alive "$T/disk"
	vf_umount "$T/disk"

	assert_equal "$(sha256 "$p")" "$psum"
	run "$VHDXTOOL" check "$c"
	assert_success
	# whole blocks became ZERO, partial ranges made the block present;
	# 1029 and 1043 were not touched
	run ds_bat "$c" "$p" --read "$T/decoded.raw" --blocks "$list"
	assert_success
	assert_equal "$(for b in "${blocks[@]}"; do
		echo "${output:$((2 * b)):1}"; done | tr '\n' ' ')" \
		"2 6 6 2 6 6 0 6 2 7 "
	for b in "${blocks[@]}"; do
		cmp -i $((b * bs)):$((b * bs)) -n "$bs" "$T/decoded.raw" "$ref"
	done
	vf_mount "$c" "$T/disk" -o ro
	for b in "${blocks[@]}"; do
		cmp -i $((b * bs)):$((b * bs)) -n "$bs" "$T/disk" "$ref"
	done
	vf_umount "$T/disk"
}

# ----------------------------------------------------------------- fixed

# A fixed image keeps its space (LeaveBlockAllocated, fmt §10.5): punches
# read as zeros, every block stays FULLY_PRESENT, and the host file keeps
# its allocation.
@test "fixed image: punch-hole reads zeros, blocks stay present and allocated" {
	local img=$T/f.vhdx ref=$T/ref.raw f a0 a1 s0 n
	require_cmd qemu-img
	"$VHDXTOOL" create -q -t fixed -s 16M --block-size 1M "$img"
	truncate -s 16M "$ref"
	ds_rand "$ref" 0 $((16 * MiB))
	cat >"$T/ops" <<OPS
p $((2 * MiB)) $((3 * MiB))
p $((7 * MiB + 1000)) 5000
z $((9 * MiB)) $((1 * MiB))
p $((11 * MiB + 4096)) $((1 * MiB))
p $((15 * MiB)) $((1 * MiB))
OPS
	ds_mount_apply "$img" "$ref"
	note "fixed image allocated: $a0 -> $a1 bytes"
	[ "$a1" -ge "$a0" ]
	assert_equal "$(($(stat -c %b "$f") * 512))" $((16 * MiB))
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"

	assert_equal "$(stat -c %s "$img")" "$s0"
	[ "$(ds_alloc "$img")" -ge "$a0" ]
	run ds_bat "$img" --read "$T/decoded.raw"
	assert_success
	assert_output "$(printf '6 %.0s' {1..15})6"
	cmp "$T/decoded.raw" "$ref"
	assert_equal "$(ds_states "$img")" "zero=0 fully_present=16 not_present=0"
	n=$("$VHDXTOOL" info --json "$img" | jq .file_parameters_flags)
	[ $((n & 1)) -eq 1 ] # LeaveBlockAllocated
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"
	ds_fresh_same "$img" "$ref"
	ds_vhdi_same "$img" "$ref"
}

# ------------------------------------------------- loop devices and ext4

# ext4 on a loop device over the exposed file: mkfs.ext4 discards the whole
# device, fstrim gives back the blocks of a deleted file, e2fsck finds the
# file system intact afterwards.
@test "ext4 over a loop device: fstrim after rm gives the space back" {
	local img=$T/e.vhdx f a1 a2 keep
	require_root
	require_cmd losetup mkfs.ext4 e2fsck fstrim qemu-img
	mkdir -p "$T/fs"
	"$VHDXTOOL" create -q -s 256M --block-size 2M "$img"
	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	loop_attach "$f"
	mkfs.ext4 -q -F "$LOOPDEV"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
	# one file that stays, one of 64 MiB that goes
	ds_rand "$T/fs/keep" 0 $((3 * MiB + 12345))
	keep=$(sha256 "$T/fs/keep")
	dd if=/dev/urandom of="$T/fs/big" bs=1M count=64 conv=fsync status=none
	sync -f "$T/fs"
	ds_fsync "$f"
	a1=$(ds_alloc "$img")
	rm "$T/fs/big"
	sync -f "$T/fs"
	run fstrim -v "$T/fs"
	assert_success
	note "$output"
	# fstrim reports bytes trimmed: at least the deleted file's
	[ "$(grep -o '([0-9]* bytes)' <<<"$output" | tr -dc 0-9)" -ge \
		$((64 * MiB)) ]
	sync -f "$T/fs"
	ds_fsync "$f"
	a2=$(ds_alloc "$img")
	note "image allocated: $a1 -> $a2 bytes (rm of 64 MiB, fstrim)"
	[ $((a1 - a2)) -ge $((56 * MiB)) ]
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"

	ds_clean "$img"
	# a new mount: e2fsck finds nothing, the file that stayed is intact
	vf_mount "$img" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	run e2fsck -fn "$f"
	assert_success
	loop_attach "$f" -r
	mount -o ro "$LOOPDEV" "$T/fs"
	assert_equal "$(sha256 "$T/fs/keep")" "$keep"
	[ ! -e "$T/fs/big" ]
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_umount "$T/mnt"
	# and QEMU reads the same file system
	qemu-img convert -f vhdx -O raw "$img" "$T/conv.raw"
	run e2fsck -fn "$T/conv.raw"
	assert_success
}

# blkdiscard on the loop device (BLKDISCARD: punch-hole; -z, BLKZEROOUT:
# zero-range or punch-hole, as the loop driver chooses) over written data.
@test "blkdiscard and blkdiscard -z through a loop device over the disk" {
	local img=$T/b.vhdx ref=$T/ref.raw f a0 a1
	require_root
	require_cmd losetup blkdiscard qemu-img
	"$VHDXTOOL" create -q -s 40M --block-size 2M "$img"
	truncate -s 40M "$ref"
	ds_rand "$ref" $((4 * MiB)) $((30 * MiB))
	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	loop_attach "$f"
	dd if="$ref" of="$LOOPDEV" bs=1M oflag=direct status=none
	# the loop device writes into the page cache of the disk file (the
	# writeback cache): have all of it reach the image before measuring
	ds_fsync "$f"
	a0=$(ds_alloc "$img")
	# 8 whole blocks (6..22 MiB); then, with -z, parts of blocks 12 and
	# 13, not aligned to blocks (only to sectors)
	blkdiscard -o $((6 * MiB)) -l $((16 * MiB)) "$LOOPDEV"
	fallocate --punch-hole -o $((6 * MiB)) -l $((16 * MiB)) "$ref"
	blkdiscard -z -o $((25 * MiB + 4096)) -l $((1 * MiB + 512 * KiB)) \
		"$LOOPDEV"
	fallocate --zero-range -o $((25 * MiB + 4096)) \
		-l $((1 * MiB + 512 * KiB)) "$ref"
	blockdev --flushbufs "$LOOPDEV"
	cmp "$LOOPDEV" "$ref"
	ds_fsync "$f"
	a1=$(ds_alloc "$img")
	note "image allocated: $a0 -> $a1 bytes (blkdiscard of 16 MiB)"
	[ $((a0 - a1)) -ge $((16 * MiB)) ]
	losetup -d "$LOOPDEV"
	cmp "$f" "$ref"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"
	run ds_bat "$img"
	assert_success
	assert_output "0 0 6 2 2 2 2 2 2 2 2 6 6 6 6 6 6 0 0 0"
}

# ---------------------------------------------------- refused, unchanged

@test "read-only mount: punch-hole and zero-range fail, nothing changes" {
	local img=$T/r.vhdx f isum dsum
	"$VHDXTOOL" create -q -s 8M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	ds_rand "$(vf_raw_path "$T/mnt")" 0 $((8 * MiB))
	vf_umount "$T/mnt"
	isum=$(sha256 "$img")
	vf_mount "$img" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	dsum=$(sha256 "$f")
	# fallocate(1) opens for writing: the read-only mount refuses that
	run fallocate --punch-hole -o 0 -l 1M "$f"
	assert_failure
	assert_output --partial "Read-only file system"
	run fallocate --zero-range --keep-size -o 1M -l 1M "$f"
	assert_failure
	assert_output --partial "Read-only file system"
	# with a descriptor open for reading, fallocate(2) itself fails
	run python3 -c 'import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
for mode in (0x3, 0x10 | 0x1):  # PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE|KEEP_SIZE
    r = libc.fallocate(fd, mode, ctypes.c_int64(0), ctypes.c_int64(1 << 20))
    print(mode, r, errno.errorcode.get(ctypes.get_errno()))' "$f"
	assert_success
	assert_line "3 -1 EBADF"
	assert_line "17 -1 EBADF"
	assert_equal "$(sha256 "$f")" "$dsum"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"
	assert_equal "$(sha256 "$img")" "$isum"
	vf_mount "$img" "$T/mnt" -o ro
	assert_equal "$(sha256 "$(vf_raw_path "$T/mnt")")" "$dsum"
	vf_umount "$T/mnt"
}

@test "preallocation and growing zero-range are refused; the image stays as it was" {
	local img=$T/n.vhdx ref=$T/ref.raw f isum dsum size=$((8 * MiB))
	"$VHDXTOOL" create -q -s "$size" --block-size 1M "$img"
	truncate -s "$size" "$ref"
	ds_rand "$ref" 0 "$size"
	vf_mount "$img" "$T/mnt"
	ds_copy "$ref" "$(vf_raw_path "$T/mnt")" conv=notrunc,fsync
	vf_umount "$T/mnt"
	isum=$(sha256 "$img")

	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	dsum=$(sha256 "$f")
	# mode 0 and KEEP_SIZE: preallocation, blocks come from writes
	run fallocate -l 1M "$f"
	assert_failure
	assert_output --partial "Operation not supported"
	run fallocate -n -o 2M -l 1M "$f"
	assert_failure
	assert_output --partial "keep size mode is unsupported" # EOPNOTSUPP
	run fallocate -o 4M -l 8M "$f"
	assert_failure
	assert_output --partial "Operation not supported"
	# zero-range that would grow the disk; inside the disk it would
	# zero 1 MiB, but nothing is done
	run fallocate --zero-range -o $((size - MiB)) -l $((2 * MiB)) "$f"
	assert_failure
	assert_output --partial "No space left on device"
	run fallocate --zero-range -o "$size" -l 4096 "$f"
	assert_failure
	assert_output --partial "No space left on device"
	assert_equal "$(stat -c %s "$f")" "$size"
	assert_equal "$(sha256 "$f")" "$dsum"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"
	# nothing was written, not even a header
	assert_equal "$(sha256 "$img")" "$isum"

	# a refused mode does not turn fallocate off for the mount: the
	# kernel stops asking only after ENOSYS
	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	run fallocate -l 1M "$f"
	assert_failure
	# past the end with --keep-size: zeros up to the end only
	cat >"$T/ops" <<OPS
p $((1 * MiB)) $((1 * MiB))
zk $((size - 4096)) $((1 * MiB))
OPS
	ds_apply "$T/ops" "$f" "$ref"
	assert_equal "$(stat -c %s "$f")" "$size"
	cmp "$f" "$ref"
	vf_umount "$T/mnt"
	ds_fresh_same "$img" "$ref"
	if command -v qemu-img >/dev/null; then
		ds_qemu_same "$img" "$ref"
		ds_clean "$img"
	fi
}

# ------------------------------------------- the kernel's page cache

# wb_case WBC [daemon options...]: data written and not yet fsynced, then
# punched or zeroed, reads as zeros at once, and after fsync and a new
# mount.  WBC: 1 if the kernel's writeback cache must be on (checked in
# the INIT reply that -d logs: FUSE_WRITEBACK_CACHE is bit 16), else 0.
wb_case() {
	local want=$1 img=$T/w.vhdx disk=$T/disk ref=$T/ref.raw flags round
	shift
	require_cmd qemu-img
	"$VHDXTOOL" create -q -s 16M --block-size 1M "$img"
	truncate -s 16M "$ref"
	cat >"$T/ops" <<OPS
p $((1 * MiB)) $((2 * MiB))
p $((5 * MiB + 1000)) 3000
z $((8 * MiB)) $((1 * MiB))
z $((10 * MiB + 4096)) $((8 * KiB))
p $((12 * MiB + 100)) $((1 * MiB))
OPS
	touch "$disk"
	vf_mount "$img" "$disk" -d "$@"
	flags=$(grep -A1 '^   INIT: ' "$T/vhdxfuse.log" |
		sed -n 's/^   flags=0x\([0-9a-f]*\)$/\1/p' | head -1)
	[ -n "$flags" ]
	assert_equal "$((0x$flags >> 16 & 1))" "$want"
	for round in 1 2 3; do
		ds_rand "$ref" 0 $((16 * MiB))
		ds_copy "$ref" "$disk"
		ds_apply "$T/ops" "$disk" "$ref"
		cmp "$disk" "$ref"
	done
	# page by page: three pages written, then at once a range in them
	# punched or zeroed, unaligned and aligned
	ds_rand "$ref" 0 $((16 * MiB))
	ds_copy "$ref" "$disk"
	for round in 0 1 2 3 4 5 6 7; do
		ds_rand "$T/pg" 0 12288
		for x in "$disk" "$ref"; do
			dd if="$T/pg" of="$x" bs=4K seek=$((round * 256 + 7)) \
				conv=notrunc status=none
		done
		case $round in
		0 | 4) echo "p $((round * MiB + 7 * 4096)) 12288" ;;
		1 | 5) echo "z $((round * MiB + 7 * 4096)) 12288" ;;
		2 | 6) echo "p $((round * MiB + 7 * 4096 + 1000)) 9000" ;;
		*) echo "z $((round * MiB + 7 * 4096 + 1000)) 9000" ;;
		esac >"$T/op1"
		ds_apply "$T/op1" "$disk" "$ref"
		cmp "$disk" "$ref"
	done
	ds_fsync "$disk"
	cmp "$disk" "$ref"
	vf_alive "$disk"
	vf_umount "$disk"
	ds_fresh_same "$img" "$ref"
	ds_qemu_same "$img" "$ref"
	ds_clean "$img"
}

@test "writeback cache: unsynced data punched or zeroed reads as zeros" {
	wb_case 1
}

@test "-o no_writeback_cache: unsynced data punched or zeroed reads as zeros" {
	wb_case 0 -o no_writeback_cache
}
