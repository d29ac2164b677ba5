#!/usr/bin/env bats
# Dense where it matters: an image on NTFS is never flagged sparse by
# anything we do (Windows refuses to attach a sparse VHDX, and Linux cannot
# clear the flag).  ntfs-3g flags a file sparse (attribute 0x200, read with
# `getfattr -n system.ntfs_attrib_be`) as soon as it gets a hole: extended
# with ftruncate, written past its end, a hole punched.
#
# Each case runs twice, on an NTFS file system made with mkntfs in a file
# and mounted with ntfs-3g through a loop device, and in a directory of the
# host file system; the NTFS image must never get the sparse attribute, and
# its disk (read by qemu-img, not by us), `vhdxtool check` and
# `qemu-img check` must come out as on the host file system.
#
# Adding a case: write a function case_NAME DIR that works on images in
# DIR and calls `dense_point FILE` after each step that may change the
# file, and a @test that calls `both_ways case_NAME`.

load lib/common

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"
MiB=$((1024 * 1024))
NTFS_SPARSE=0x200

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_fuse
	require_root
	require_cmd mkntfs ntfs-3g getfattr qemu-img fallocate losetup jq
	mkdir -p "$T/mnt" "$T/ntfs" "$T/host"
	# the data every case writes, the same on both sides
	head -c $((16 * MiB)) /dev/urandom >"$T/data"
}

# vhdxfuse mounts first: they hold images on the NTFS mount.
teardown() {
	vf_end_all
	common_teardown
}

# mount_ntfs [DRIVER]: a fresh 1 GiB NTFS on a loop device at $T/ntfs,
# mounted with ntfs-3g (default) or the kernel's ntfs3.
mount_ntfs() {
	local driver=${1:-ntfs-3g}
	truncate -s 1G "$T/ntfs.img"
	mkntfs -F -f -q "$T/ntfs.img" >/dev/null 2>&1
	loop_attach "$T/ntfs.img"
	if [ "$driver" = ntfs-3g ]; then
		ntfs-3g "$LOOPDEV" "$T/ntfs"
	else
		mount -t ntfs3 "$LOOPDEV" "$T/ntfs"
	fi
	track_fsmount "$T/ntfs"
	ON_NTFS=$T/ntfs
}

# NTFS attributes of FILE, as a number.
ntfs_attrib() {
	local v
	v=$(getfattr --absolute-names -e hex -n system.ntfs_attrib_be "$1" |
		sed -n 's/^system.ntfs_attrib_be=//p')
	echo $((v))
}

# dense_point FILE: on NTFS, FILE must not be flagged sparse.
dense_point() {
	local a
	[[ $1 == "$ON_NTFS"/* ]] || return 0
	a=$(ntfs_attrib "$1")
	if ((a & NTFS_SPARSE)); then
		echo "$1 is flagged sparse (attributes $(printf 0x%x "$a")) after:" \
			"${FUNCNAME[1]} line ${BASH_LINENO[0]}" >&2
		return 1
	fi
	CHECKED=$((CHECKED + 1))
}

# put MNTFILE OFFSET LENGTH: bytes of $T/data (from its start) in place.
put() {
	dd if="$T/data" of="$1" bs=$3 count=1 seek="$2" oflag=seek_bytes \
		conv=notrunc,fsync status=none
}

# summary IMAGE: what must be the same on both sides (no paths).  The
# disk is read by qemu-img, except for a differencing image (qemu cannot
# read those: then through a read-only mount, and no qemu-img check).
summary() {
	local img=$1 rc diff
	diff=$("$VHDXTOOL" info --json "$img" | jq -r '.type')
	if [ "$diff" = differencing ]; then
		vf_mount "$img" "$T/mnt" -o ro
		echo "disk $(sha256 "$(vf_raw_path "$T/mnt")")"
		vf_umount "$T/mnt"
	else
		qemu-img convert -f vhdx -O raw "$img" "$T/disk.raw"
		echo "disk $(sha256 "$T/disk.raw")"
		rm -f "$T/disk.raw"
	fi
	echo "size $(stat -c %s "$img")"
	rc=0
	"$VHDXTOOL" check "$img" >"$T/check.out" || rc=$?
	echo "check rc=$rc"
	sed "s|^$img: ||" "$T/check.out"
	[ "$diff" = differencing ] && return 0
	rc=0
	qemu-img check -f vhdx "$img" >/dev/null 2>&1 || rc=$?
	echo "qemu-img check rc=$rc"
}

# A dynamic image: create, writes that allocate blocks (and grow the file),
# a whole block and part of one discarded through the mount.
case_dynamic() {
	local d=$1 img=$1/dyn.vhdx raw=$T/mnt/dyn.raw
	"$VHDXTOOL" create -q -s 256M --block-size 4M "$img"
	dense_point "$img"
	vf_mount "$img" "$T/mnt"
	put "$raw" 0 65536
	dense_point "$img"
	put "$raw" $((100 * MiB + 512)) $((5 * MiB))
	put "$raw" $((200 * MiB)) $((4 * MiB))
	put "$raw" $((256 * MiB - 4096)) 4096
	dense_point "$img"
	fallocate -p -o $((200 * MiB)) -l $((4 * MiB)) "$raw"
	fallocate -p -o $((101 * MiB)) -l $((64 * 1024)) "$raw"
	fallocate -z -o $((102 * MiB)) -l $((64 * 1024)) "$raw" 2>/dev/null ||
		true # older kernels: FUSE refuses ZERO_RANGE itself
	dense_point "$img"
	vf_umount "$T/mnt"
	dense_point "$img"
	summary "$img"
}

# A fixed image: every block allocated at create, zeroed in place.
case_fixed() {
	local d=$1 img=$1/fix.vhdx raw=$T/mnt/fix.raw
	"$VHDXTOOL" create -q -t fixed -s 64M --block-size 2M "$img"
	dense_point "$img"
	vf_mount "$img" "$T/mnt"
	put "$raw" $((3 * MiB)) $((3 * MiB))
	fallocate -p -o $((4 * MiB)) -l $((2 * MiB)) "$raw"
	dense_point "$img"
	vf_umount "$T/mnt"
	dense_point "$img"
	summary "$img"
}

# The same through the daemon's -o sparse (no reservation of new blocks:
# the file grows by the block) and a differencing child.
case_sparse_opt_child() {
	local d=$1 img=$1/base.vhdx
	"$VHDXTOOL" create -q -s 64M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt" -o sparse
	put "$T/mnt/base.raw" $((10 * MiB + 4096)) 8192
	dense_point "$img"
	vf_umount "$T/mnt"
	dense_point "$img"
	"$VHDXTOOL" create -q -t differencing --parent "$img" "$d/child.vhdx"
	dense_point "$d/child.vhdx"
	vf_mount "$d/child.vhdx" "$T/mnt"
	put "$T/mnt/child.raw" $((20 * MiB)) $((2 * MiB))
	fallocate -p -o $((10 * MiB)) -l $((1 * MiB)) "$T/mnt/child.raw"
	vf_umount "$T/mnt"
	dense_point "$d/child.vhdx"
	summary "$img"
	summary "$d/child.vhdx"
}

# convert of a raw file with holes and data into the directory.
case_convert() {
	local d=$1
	truncate -s 96M "$T/in.raw"
	dd if="$T/data" of="$T/in.raw" bs=1M count=3 seek=50 conv=notrunc \
		status=none
	"$VHDXTOOL" convert -q "$T/in.raw" "$d/conv.vhdx"
	dense_point "$d/conv.vhdx"
	"$VHDXTOOL" convert -q -t fixed --block-size 8M "$T/in.raw" \
		"$d/convf.vhdx"
	dense_point "$d/convf.vhdx"
	summary "$d/conv.vhdx"
	summary "$d/convf.vhdx"
}

# compact: blocks written across a 128 MiB disk, the first ones discarded
# through the mount (their places become free), then compacted offline.
case_compact() {
	local d=$1 img=$1/cmp.vhdx raw=$T/mnt/cmp.raw i before
	"$VHDXTOOL" create -q -s 128M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	for i in 0 10 20 30 40 50 60 70 80 90 100 110 120; do
		put "$raw" $((i * MiB)) $((1 * MiB))
	done
	fallocate -p -o 0 -l $((64 * MiB)) "$raw"
	vf_umount "$T/mnt"
	dense_point "$img"
	before=$(stat -c %s "$img")
	"$VHDXTOOL" compact -q "$img"
	dense_point "$img"
	# the six discarded blocks' places are gone from the file
	[ "$(stat -c %s "$img")" -le $((before - 6 * MiB)) ]
	summary "$img"
}

# resize: a dynamic image grown offline and online (truncate of the mounted
# disk) and shrunk; a fixed image grown (new blocks allocated).
case_resize() {
	local d=$1 img=$1/rs.vhdx fix=$1/rsf.vhdx
	"$VHDXTOOL" create -q -s 64M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	put "$T/mnt/rs.raw" $((60 * MiB)) $((4 * MiB))
	vf_umount "$T/mnt"
	"$VHDXTOOL" resize -q -s 512M "$img"
	dense_point "$img"
	vf_mount "$img" "$T/mnt"
	truncate -s 768M "$T/mnt/rs.raw"
	put "$T/mnt/rs.raw" $((700 * MiB)) $((2 * MiB))
	vf_umount "$T/mnt"
	dense_point "$img"
	"$VHDXTOOL" resize -q --force -s 720M "$img"
	dense_point "$img"
	summary "$img"
	"$VHDXTOOL" create -q -t fixed -s 64M --block-size 2M "$fix"
	"$VHDXTOOL" resize -q -s 96M "$fix"
	dense_point "$fix"
	[ "$("$VHDXTOOL" info --json "$fix" | jq .virtual_size)" -eq $((96 * MiB)) ]
	summary "$fix"
}

# both_ways CASE [DRIVER]: CASE on NTFS and on the host file system, with
# the same results; at least one point was checked on NTFS.
both_ways() {
	local c=$1
	mount_ntfs "${2:-ntfs-3g}"
	CHECKED=0
	"$c" "$T/ntfs" >"$T/on-ntfs"
	"$c" "$T/host" >"$T/on-host"
	echo "on NTFS: $CHECKED points without the sparse flag"
	cat "$T/on-ntfs"
	diff "$T/on-host" "$T/on-ntfs"
	[ "$CHECKED" -ge 2 ]
	grep -q "check rc=0" "$T/on-ntfs"
	grep -q "qemu-img check rc=0" "$T/on-ntfs"
}

@test "ntfs-3g: dynamic image, writes that allocate, discard" {
	both_ways case_dynamic
}

@test "ntfs-3g: fixed image, zeroed range" {
	both_ways case_fixed
}

@test "ntfs-3g: -o sparse mount and a differencing child stay dense" {
	both_ways case_sparse_opt_child
}

@test "ntfs-3g: convert writes dense files" {
	both_ways case_convert
}

@test "ntfs-3g: compact after discard stays dense" {
	both_ways case_compact
}

@test "ntfs-3g: resize offline and online stays dense" {
	both_ways case_resize
}

@test "the kernel's ntfs3: dynamic image, writes that allocate, discard" {
	grep -qw ntfs3 /proc/filesystems ||
		skip "this kernel has no ntfs3 driver (not in /proc/filesystems)"
	both_ways case_dynamic ntfs3
}

@test "an image flagged sparse on NTFS: check and info say so and how to clear it" {
	mount_ntfs
	"$VHDXTOOL" create -q -s 64M --sparse "$T/s.vhdx"
	truncate -s 64M "$T/s.vhdx" # a tail of holes
	cp --sparse=always "$T/s.vhdx" "$T/ntfs/s.vhdx"
	# the oracle: ntfs-3g flagged the copy
	(($(ntfs_attrib "$T/ntfs/s.vhdx") & NTFS_SPARSE))
	run "$VHDXTOOL" check "$T/ntfs/s.vhdx"
	assert_success
	assert_output --partial "flagged sparse on NTFS"
	assert_output --partial "fsutil sparse setflag FILE 0"
	run "$VHDXTOOL" info "$T/ntfs/s.vhdx"
	assert_output --partial "flagged sparse on NTFS"
	run jq -r .ntfs_sparse < <("$VHDXTOOL" info --json "$T/ntfs/s.vhdx")
	assert_output true
	# a dense image there, and any image elsewhere, say nothing
	"$VHDXTOOL" create -q -s 64M "$T/ntfs/d.vhdx"
	run "$VHDXTOOL" check "$T/ntfs/d.vhdx"
	refute_output --partial "sparse"
	run jq -r .ntfs_sparse < <("$VHDXTOOL" info --json "$T/ntfs/d.vhdx")
	assert_output false
	run jq -r .ntfs_sparse < <("$VHDXTOOL" info --json "$T/s.vhdx")
	assert_output null
}

@test "create and convert allocate their files by default; --sparse opts out" {
	local f
	"$VHDXTOOL" create -q -s 1G "$T/d.vhdx"
	"$VHDXTOOL" create -q -s 1G --sparse "$T/s.vhdx"
	"$VHDXTOOL" create -q -t fixed -s 64M "$T/f.vhdx"
	# allocated: the whole file; sparse: less (the log is a hole)
	for f in d f; do
		[ $(($(stat -c %b "$T/$f.vhdx") * 512)) -ge \
			"$(stat -c %s "$T/$f.vhdx")" ]
	done
	[ $(($(stat -c %b "$T/s.vhdx") * 512)) -lt \
		"$(stat -c %s "$T/s.vhdx")" ]
	truncate -s 64M "$T/in.raw"
	echo data | dd of="$T/in.raw" bs=1M seek=40 conv=notrunc status=none
	"$VHDXTOOL" convert -q "$T/in.raw" "$T/c.vhdx"
	"$VHDXTOOL" convert -q --sparse "$T/in.raw" "$T/cs.vhdx"
	[ $(($(stat -c %b "$T/c.vhdx") * 512)) -ge "$(stat -c %s "$T/c.vhdx")" ]
	[ $(($(stat -c %b "$T/cs.vhdx") * 512)) -lt \
		"$(stat -c %s "$T/cs.vhdx")" ]
	qemu-img compare -f raw -F vhdx "$T/in.raw" "$T/c.vhdx"
	qemu-img compare -f raw -F vhdx "$T/in.raw" "$T/cs.vhdx"
}
