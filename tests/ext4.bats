#!/usr/bin/env bats
# A real file system through vhdxfuse: build ext4 on a raw file (whole disk,
# or in an MBR partition at 1 MiB), fill it with files of random content,
# record their SHA-256, convert the raw file to VHDX with qemu-img, mount the
# VHDX with vhdxfuse, mount the exposed raw file read-only through a loop
# device and check every file.  The exposed disk must also be byte-identical
# to the raw file it was converted from.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"

setup() {
	common_setup
	require_root
	require_fuse
	require_cmd qemu-img mkfs.ext4 losetup python3 sha256sum
	mkdir -p "$T/fs" "$T/mnt" "$T/ro"
}

teardown() {
	common_teardown
}

# populate DEVICE_OR_FILE: mkfs.ext4, mount, create files, write
# $T/manifest (sha256sum format, paths relative to the fs root), unmount.
populate() {
	local dev=$1 seed=$RANDOM
	mkfs.ext4 -q -F "$dev"
	mount "$dev" "$T/fs"
	track_fsmount "$T/fs"
	python3 "$TOP_SRCDIR/tests/lib/mkfiles.py" "$T/fs/data" 300 "$seed"
	(cd "$T/fs" && find . -type f -print0 | sort -z |
		xargs -0 sha256sum) >"$T/manifest"
	[ "$(wc -l <"$T/manifest")" -eq 300 ]
	umount "$T/fs"
}

# verify_tree DIR: every file of the manifest is there with its content,
# and there is no other file.
verify_tree() {
	(cd "$1" && sha256sum --quiet -c "$T/manifest")
	[ "$(cd "$1" && find . -type f | wc -l)" -eq 300 ]
}

# make_mbr RAW: one Linux partition from 1 MiB to the end of the disk.
# Uses sfdisk when installed, else writes the MBR with python3.
make_mbr() {
	local raw=$1
	if command -v sfdisk >/dev/null; then
		echo 'start=2048, type=83' | sfdisk -q "$raw"
	else
		python3 - "$raw" <<'EOF'
import os, struct, sys
path = sys.argv[1]
sectors = os.path.getsize(path) // 512
start = 2048
entry = struct.pack("<B3sB3sII", 0, b"\x00\x21\x00", 0x83, b"\xfe\xff\xff",
                    start, sectors - start)
with open(path, "r+b") as f:
    f.seek(446)
    f.write(entry + bytes(48) + b"\x55\xaa")
EOF
	fi
	partx --show "$raw" | grep -q '^ *1 *2048 '
}

# whole_disk_case QEMU_OPTIONS: ext4 on the whole disk.
whole_disk_case() {
	local opts=$1 raw="$T/disk.raw" img="$T/disk.vhdx" f
	truncate -s $((200 * MiB)) "$raw"
	populate "$raw"
	qemu-img convert -f raw -O vhdx ${opts:+-o "$opts"} "$raw" "$img"

	vf_mount "$img" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	assert_equal "$(stat -c %s "$f")" "$(stat -c %s "$raw")"
	assert_equal "$(fast_sha256 "$f")" "$(fast_sha256 "$raw")"

	mount -o loop,ro "$f" "$T/ro"
	track_fsmount "$T/ro"
	verify_tree "$T/ro"
	umount "$T/ro"
	vf_umount "$T/mnt"
}

@test "ext4 on the whole disk, dynamic VHDX: mount -o loop,ro" {
	whole_disk_case ""
}

@test "ext4 on the whole disk, fixed VHDX with 1 MiB blocks" {
	whole_disk_case "subformat=fixed,block_state_zero=off,block_size=1M"
}

@test "ext4 in an MBR partition at 1 MiB: losetup -r -P" {
	local raw="$T/disk.raw" img="$T/part.vhdx" f
	truncate -s $((256 * MiB)) "$raw"
	make_mbr "$raw"
	loop_attach "$raw" -P
	loop_partition "$LOOPDEV" 1
	populate "$PARTDEV"
	losetup -d "$LOOPDEV"
	qemu-img convert -f raw -O vhdx -o block_size=2M "$raw" "$img"

	vf_mount "$img" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	assert_equal "$(fast_sha256 "$f")" "$(fast_sha256 "$raw")"

	loop_attach "$f" -r -P
	[ "$(cat "/sys/block/${LOOPDEV#/dev/}/ro")" -eq 1 ]
	loop_partition "$LOOPDEV" 1
	mount -o ro "$PARTDEV" "$T/ro"
	track_fsmount "$T/ro"
	verify_tree "$T/ro"
	umount "$T/ro"
	losetup -d "$LOOPDEV"
	vf_umount "$T/mnt"
}
