#!/usr/bin/env bats
# Free space in the image file (fmt §19): places freed by discard are
# reused by new blocks, the free end of the file is given back, and
# `vhdxtool compact` shrinks an image in place.
#
# Oracles, never our own output: the host's idea of the file (stat and du:
# size and allocated bytes), e2fsck and sha256 of the
# files inside the guest file system, qemu-img check / compare / info,
# libvhdi's vhdimount, and tests/lib/vhdxedit.py (a decoder of the format
# that does not use the C library) for the BAT and the disk id.

load lib/common

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"
KiB=1024
MiB=$((1024 * 1024))
VHDXEDIT="python3 $TOP_SRCDIR/tests/lib/vhdxedit.py"

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	mkdir -p "$T/mnt" "$T/fs"
}

teardown() {
	common_teardown
}

# sp_fsync FILE: fsync(2) FILE (through the mount: vhdx_flush).
sp_fsync() {
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.fsync(fd)
os.close(fd)' "$1"
}

size_of() {
	stat -c %s "$1"
}

# sp_mount_ext4 IMAGE [daemon options]: mount the image, a loop device
# over its disk and the ext4 in it (at $T/fs).  Sets F (the disk file).
sp_mount_ext4() {
	local img=$1
	shift
	vf_mount "$img" "$T/mnt" "$@"
	F=$(vf_raw_path "$T/mnt")
	loop_attach "$F"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
}

sp_umount_ext4() {
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"
}

# sp_trim: give the ext4's free blocks back and make it durable.
sp_trim() {
	sync -f "$T/fs"
	fstrim "$T/fs"
	sync -f "$T/fs"
	sp_fsync "$F"
}

# sp_verify_sums LIST: every "sha256  path" line of LIST still matches.
sp_verify_sums() {
	(cd "$T/fs" && sha256sum --quiet -c "$1")
}

# ------------------------------------------------------------- reuse

# The write/delete/fstrim cycle of issue 14: 8 times, 300 MB written into a
# 1 GiB ext4 and deleted again.  Before, each cycle appended its blocks to
# the file; now the freed places are reused, so the file stops growing
# after the first cycle, and the free end of the file is cut.
@test "reuse: 8 cycles of 300 MB written, deleted and trimmed in a 1 GiB ext4" {
	local img=$T/r.vhdx peak=0 s c i after_trim size0
	require_root
	require_fuse
	require_cmd losetup mkfs.ext4 e2fsck fstrim qemu-img
	"$VHDXTOOL" create -q -s 1G "$img"
	vf_mount "$img" "$T/mnt"
	F=$(vf_raw_path "$T/mnt")
	loop_attach "$F"
	mkfs.ext4 -q -F "$LOOPDEV"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
	head -c $((5 * MiB + 777)) /dev/urandom >"$T/fs/keep"
	# 100 MB of random data, written with a different head every time
	head -c $((100 * 1000 * 1000)) /dev/urandom >"$T/src"
	(cd "$T/fs" && sha256sum keep) >"$T/keep.sum"
	sp_trim
	size0=$(size_of "$img")
	for c in 1 2 3 4 5 6 7 8; do
		mkdir "$T/fs/c$c"
		for i in 1 2 3; do
			{ echo "cycle $c file $i" && cat "$T/src"; } \
				>"$T/fs/c$c/f$i"
		done
		(cd "$T/fs" && sha256sum c$c/*) >"$T/c$c.sum"
		sync -f "$T/fs"
		sp_fsync "$F"
		s=$(size_of "$img")
		[ "$c" -eq 1 ] && peak=$s
		sp_verify_sums "$T/c$c.sum"
		rm -r "$T/fs/c$c"
		sp_trim
		after_trim=$(size_of "$img")
		note "cycle $c: file $s bytes with the data, $after_trim after rm and fstrim"
	done
	note "file: $size0 before, $peak at the first peak, $s at the last peak"
	# the file stops growing: within 1.25 x the first peak
	[ $((s * 100)) -le $((peak * 125)) ]
	# the free end of the file was cut after each trim
	[ "$after_trim" -lt $((s - 200 * MiB)) ]
	sp_verify_sums "$T/keep.sum"
	sp_umount_ext4

	# clean for qemu-img, e2fsck and us; free space reported as free
	run qemu-img check "$img"
	assert_success
	run "$VHDXTOOL" check "$img"
	assert_success
	assert_output --regexp "no problems found \(0 warnings\); free space: [0-9]+ bytes"
	refute_output --partial leaked
	vf_mount "$img" "$T/mnt" -o ro
	F=$(vf_raw_path "$T/mnt")
	run e2fsck -fn "$F"
	assert_success
	loop_attach "$F" -r
	mount -o ro "$LOOPDEV" "$T/fs"
	sp_verify_sums "$T/keep.sum"
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_umount "$T/mnt"
}

# ------------------------------------------------------------- compact

# sp_disk_id IMAGE: the VirtualDiskId item, as hex (read with vhdxedit.py).
sp_disk_id() {
	local meta item
	meta=$($VHDXEDIT "$1" get regions.metadata.offset)
	item=$($VHDXEDIT "$1" get meta.diskid.offset)
	od -An -tx1 -j $((meta + item)) -N 16 "$1" | tr -d ' \n'
}

# sp_data_guid IMAGE: the DataWriteGuid of the current header.
sp_data_guid() {
	local s1 s2
	s1=$($VHDXEDIT "$1" get header1.seq)
	s2=$($VHDXEDIT "$1" get header2.seq)
	if [ "$s1" -gt "$s2" ]; then
		$VHDXEDIT "$1" get header1.datawriteguid
	else
		$VHDXEDIT "$1" get header2.datawriteguid
	fi | tr A-F a-f
}

# sp_min_size IMAGE: bytes the image needs: its present blocks (vhdxedit's
# decoder of the BAT) and its metadata: the 1 MiB header section, the log,
# the BAT and the metadata region.
sp_min_size() {
	local img=$1 n bs
	n=$($VHDXEDIT "$img" bat-find-present | wc -l)
	bs=$($VHDXEDIT "$img" get meta.blocksize)
	echo $((n * bs + MiB + $($VHDXEDIT "$img" get header1.loglength) +
		$($VHDXEDIT "$img" get regions.bat.length) +
		$($VHDXEDIT "$img" get regions.metadata.length)))
}

# sp_dense FILE: no hole before the end: the host file system has
# allocated at least the apparent size (du).  (SEEK_HOLE is no oracle here:
# ext4 reports allocated but unwritten extents as holes.)
sp_dense() {
	local f=$1 alloc size
	alloc=$(du -B1 "$f" | cut -f1)
	size=$(du -B1 --apparent-size "$f" | cut -f1)
	[ "$alloc" -ge "$size" ] ||
		{ echo "$f: $alloc bytes allocated of $size" && return 1; }
}

# sp_frag IMAGE: a 256 MiB image with 1 MiB blocks whose file is mostly
# free places: 200 MiB of random data written through a mount, then 80 % of
# its blocks discarded (all but every fifth), the last ones kept.
sp_frag() {
	local img=$1 b
	require_fuse
	require_cmd fallocate
	"$VHDXTOOL" create -q -s 256M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	F=$(vf_raw_path "$T/mnt")
	head -c $((200 * MiB)) /dev/urandom |
		dd of="$F" bs=1M conv=notrunc,fsync status=none
	for ((b = 0; b < 200; b++)); do
		[ $((b % 5)) -eq 4 ] && continue
		fallocate --punch-hole -o $((b * MiB)) -l $MiB "$F"
	done
	sp_fsync "$F"
	vf_umount "$T/mnt"
}

@test "compact: a fragmented image shrinks to its blocks, dense, same disk" {
	local img=$T/f.vhdx before min after id dwg
	require_cmd qemu-img vhdimount jq
	sp_frag "$img"
	qemu-img convert -f vhdx -O raw "$img" "$T/before.raw"
	cp --sparse=always "$img" "$T/before.vhdx"
	id=$(sp_disk_id "$img")
	dwg=$(sp_data_guid "$img")
	before=$(size_of "$img")
	run "$VHDXTOOL" compact --json "$img"
	assert_success
	note "$output"
	[ "$(jq -r .size_before <<<"$output")" -eq "$before" ]
	after=$(size_of "$img")
	[ "$(jq -r .size_after <<<"$output")" -eq "$after" ]
	[ "$(jq -r .blocks_moved <<<"$output")" -gt 0 ]
	min=$(sp_min_size "$img")
	note "file: $before -> $after bytes; blocks + metadata: $min"
	# within one block (1 MiB) of what the image needs
	[ "$after" -le $((min + MiB)) ]
	[ "$after" -ge "$min" ]
	sp_dense "$img"
	# same disk, same data, same DataWriteGuid (children stay linked)
	assert_equal "$(sp_disk_id "$img")" "$id"
	assert_equal "$(sp_data_guid "$img")" "$dwg"
	run qemu-img check "$img"
	assert_success
	assert_output --partial "No errors were found"
	qemu-img compare -f vhdx -F vhdx "$T/before.vhdx" "$img"
	vhdi_mount "$img" "$T/mnt"
	cmp "$T/mnt/vhdi1" "$T/before.raw"
	vhdi_umount "$T/mnt"
	run "$VHDXTOOL" check "$img"
	assert_success
	# a second compact has nothing left to do
	run "$VHDXTOOL" compact "$img"
	assert_success
	assert_output --partial "0 blocks moved"
	assert_equal "$(size_of "$img")" "$after"
}

# The case of issue 14: a 1 GiB ext4 (default 32 MiB blocks), 80 % of its
# data deleted and trimmed, then compacted: the file holds its blocks and
# metadata and no more, has no holes, and every reader sees the same disk.
@test "compact: ext4 with 80 % of its data deleted and trimmed" {
	local img=$T/e.vhdx before after min id dwg i
	require_root
	require_fuse
	require_cmd losetup mkfs.ext4 e2fsck fstrim qemu-img vhdimount jq
	"$VHDXTOOL" create -q -s 1G "$img"
	vf_mount "$img" "$T/mnt"
	F=$(vf_raw_path "$T/mnt")
	loop_attach "$F"
	mkfs.ext4 -q -F "$LOOPDEV"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
	head -c $((30 * 1000 * 1000)) /dev/urandom >"$T/src"
	for i in 0 1 2 3 4 5 6 7 8 9; do
		{ echo "file $i" && cat "$T/src"; } >"$T/fs/f$i"
	done
	sync -f "$T/fs"
	# delete 80 %: keep the 5th and the last file
	for i in 0 1 2 3 5 6 7 8; do
		rm "$T/fs/f$i"
	done
	(cd "$T/fs" && sha256sum f4 f9) >"$T/keep.sum"
	sp_trim
	sp_umount_ext4
	cp --sparse=always "$img" "$T/before.vhdx"
	qemu-img convert -f vhdx -O raw "$img" "$T/before.raw"
	id=$(sp_disk_id "$img")
	dwg=$(sp_data_guid "$img")
	before=$(size_of "$img")
	run "$VHDXTOOL" compact --json "$img"
	assert_success
	note "$output"
	after=$(size_of "$img")
	min=$(sp_min_size "$img")
	note "file: $before -> $after bytes; blocks + metadata: $min"
	[ "$after" -le $((min + 32 * MiB)) ]
	[ "$after" -lt "$before" ]
	sp_dense "$img"
	assert_equal "$(sp_disk_id "$img")" "$id"
	assert_equal "$(sp_data_guid "$img")" "$dwg"
	run qemu-img check "$img"
	assert_success
	assert_output --partial "No errors were found"
	qemu-img compare -f vhdx -F vhdx "$T/before.vhdx" "$img"
	vhdi_mount "$img" "$T/mnt"
	cmp "$T/mnt/vhdi1" "$T/before.raw"
	vhdi_umount "$T/mnt"
	run "$VHDXTOOL" check "$img"
	assert_success
	# the file system: clean, the files that stayed intact
	vf_mount "$img" "$T/mnt" -o ro
	F=$(vf_raw_path "$T/mnt")
	run e2fsck -fn "$F"
	assert_success
	loop_attach "$F" -r
	mount -o ro "$LOOPDEV" "$T/fs"
	sp_verify_sums "$T/keep.sum"
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_umount "$T/mnt"
}

@test "compact: refuses a mounted image and bad usage, changes nothing" {
	local img=$T/m.vhdx sum
	require_fuse
	"$VHDXTOOL" create -q -s 64M --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	sum=$(sha256 "$img")
	run "$VHDXTOOL" compact "$img"
	assert_failure
	assert_output --partial "in use"
	vf_umount "$T/mnt"
	assert_equal "$(sha256 "$img")" "$sum"
	run "$VHDXTOOL" compact
	assert_failure 1
	run "$VHDXTOOL" compact "$img" "$img"
	assert_failure 1
	run "$VHDXTOOL" compact --bogus "$img"
	assert_failure 1
	run "$VHDXTOOL" compact "$T/none.vhdx"
	assert_failure
	assert_equal "$(sha256 "$img")" "$sum"
	run "$VHDXTOOL" compact --help
	assert_success
	assert_output --partial "Optimize-VHD"
	# a fixed image keeps every block, even with --zeros
	"$VHDXTOOL" create -q -t fixed -s 16M --block-size 1M "$T/x.vhdx"
	run "$VHDXTOOL" compact --zeros "$T/x.vhdx"
	assert_success
	[ "$($VHDXEDIT "$T/x.vhdx" bat-find-present | wc -l)" -eq 16 ]
	# SIGINT: stops cleanly, the image stays consistent
	run timeout -s INT 0.05 "$VHDXTOOL" compact "$img"
	run "$VHDXTOOL" check "$img"
	assert_success
}

# A differencing child: its blocks move, its parent is only read, and
# --zeros turns a block of written zeros into ZERO (which hides the parent),
# never NOT_PRESENT (which would show the parent's data again).
@test "compact --zeros: a differencing child; the parent is untouched" {
	local p=$T/p.vhdx c=$T/c.vhdx psum pdwg before after
	require_fuse
	require_cmd vhdimount vhdiinfo fallocate jq
	head -c $((48 * MiB)) /dev/urandom >"$T/p.raw"
	"$VHDXTOOL" convert -q --block-size 1M "$T/p.raw" "$p"
	"$VHDXTOOL" create -q --parent "$p" --block-size 1M "$c"
	vf_mount "$c" "$T/mnt"
	F=$(vf_raw_path "$T/mnt")
	# 32 MiB of the child's own data, then zeros written over 4 blocks
	# of it, then 20 of its blocks discarded (ZERO: zeros, not the parent)
	head -c $((32 * MiB)) /dev/urandom |
		dd of="$F" bs=1M seek=8 conv=notrunc,fsync status=none
	dd if=/dev/zero of="$F" bs=1M seek=36 count=4 conv=notrunc,fsync \
		status=none
	fallocate --punch-hole -o $((8 * MiB)) -l $((20 * MiB)) "$F"
	sp_fsync "$F"
	vf_umount "$T/mnt"
	psum=$(sha256 "$p")
	pdwg=$(sp_data_guid "$p")
	# the disk before, through the mount (read-only)
	vf_mount "$c" "$T/mnt" -o ro
	cp "$(vf_raw_path "$T/mnt")" "$T/before.raw"
	vf_umount "$T/mnt"
	# the written zeros and the discarded blocks hide the parent's data
	cmp -n $((4 * MiB)) -i $((36 * MiB)) "$T/before.raw" /dev/zero
	cmp -n $((20 * MiB)) -i $((8 * MiB)) "$T/before.raw" /dev/zero
	# libvhdi's view (vhdi2: the child) of the blocks with data of the
	# child, which compact moves (libvhdi 20210425 shows the parent
	# through ZERO blocks of a child, unlike MS-VHDX: not compared there)
	vhdi_mount "$c" "$T/mnt"
	cmp -n $((8 * MiB)) -i $((28 * MiB)) "$T/mnt/vhdi2" "$T/before.raw"
	dd if="$T/mnt/vhdi2" of="$T/vhdi-before.raw" bs=1M skip=28 count=8 \
		status=none
	vhdi_umount "$T/mnt"
	before=$(size_of "$c")
	run "$VHDXTOOL" compact --zeros --json "$c"
	assert_success
	note "$output"
	[ "$(jq -r .blocks_zeroed <<<"$output")" -ge 4 ]
	after=$(size_of "$c")
	note "child: $before -> $after bytes"
	[ "$after" -lt "$before" ]
	sp_dense "$c"
	# the parent was not written; the child is still its child
	assert_equal "$(sha256 "$p")" "$psum"
	run vhdiinfo "$c"
	assert_success
	assert_output --regexp "Parent identifier[[:space:]]*: $pdwg"
	run "$VHDXTOOL" check "$c"
	assert_success
	# and reads the same, through libvhdi and through our mount
	vhdi_mount "$c" "$T/mnt"
	cmp -n $((8 * MiB)) -i $((28 * MiB)):0 "$T/mnt/vhdi2" \
		"$T/vhdi-before.raw"
	cmp -n $((8 * MiB)) "$T/mnt/vhdi1" "$T/p.raw"
	vhdi_umount "$T/mnt"
	"$VHDXTOOL" convert -q "$c" "$T/after.raw"
	cmp "$T/after.raw" "$T/before.raw"
	vf_mount "$c" "$T/mnt" -o ro
	cmp "$(vf_raw_path "$T/mnt")" "$T/before.raw"
	vf_umount "$T/mnt"
	assert_equal "$(sha256 "$p")" "$psum"
}

# 20 times: compact a copy of a fragmented image, SIGKILL it at a random
# moment (somewhere in the time a whole compact takes), and open what is left: the same data (through our open, which
# replays the log, and now and then qemu-img's), and a second compact
# finishes the job.
@test "compact: 20 SIGKILLs at random moments, each image reads the same" {
	local img=$T/f.vhdx k=$T/k.vhdx t0 t1 span i d pid st killed=0
	require_cmd qemu-img
	sp_frag "$img"
	"$VHDXTOOL" convert -q "$img" "$T/ref.raw"
	# how long a whole compact takes, in ms
	cp --sparse=always "$img" "$k"
	t0=$(date +%s%N)
	"$VHDXTOOL" compact -q "$k"
	t1=$(date +%s%N)
	span=$(((t1 - t0) / 1000000 + 1))
	note "a whole compact: $span ms"
	# until 20 kills hit a running compact (a few may come too late)
	for ((i = 0; killed < 20 && i < 60; i++)); do
		cp --sparse=always "$img" "$k"
		d=$((RANDOM % span))
		"$VHDXTOOL" compact -q "$k" &
		pid=$!
		sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
		kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
		st=0
		wait "$pid" || st=$?
		rm -f "$T/k.raw"
		"$VHDXTOOL" convert -q "$k" "$T/k.raw"
		cmp "$T/k.raw" "$T/ref.raw"
		if [ $((i % 5)) -eq 0 ]; then
			cp --sparse=always "$k" "$T/q.vhdx"
			qemu-img check -q -r all "$T/q.vhdx" || {
				cp "$k" "/tmp/space-qemu-fail-$i.vhdx"
				echo "qemu-img check -r all failed (kill at $d ms)"
				return 1
			}
			qemu-img compare -f vhdx -F raw "$T/q.vhdx" "$T/ref.raw"
		fi
		run "$VHDXTOOL" compact -q "$k"
		assert_success
		rm -f "$T/k.raw"
		"$VHDXTOOL" convert -q "$k" "$T/k.raw"
		cmp "$T/k.raw" "$T/ref.raw"
	done
	note "$killed of $i compacts were killed while running"
	[ "$killed" -ge 20 ]
}
