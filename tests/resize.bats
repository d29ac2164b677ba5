#!/usr/bin/env bats
# vhdxtool resize and the online grow of a mounted disk.
#
# Oracles: qemu-img (check, info, compare, dd), libvhdi's vhdimount,
# tests/lib/vhdxedit.py (an independent decoder of the structures) and a raw
# reference disk changed alongside with truncate(1); never our own output.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	IMG=$T/disk.vhdx
	RAW=$T/disk.raw
	LIBDIR_EDIT=$BATS_TEST_DIRNAME/lib/vhdxedit.py
}

teardown() {
	common_teardown
}

# rs_make TYPE BS LSS SIZE: $RAW with data at the boundaries (vt_mk_raw)
# and 4 KiB at BS + 64 KiB, converted into $IMG.  A fixed image is made
# sparse afterwards (its blocks stay allocated in the BAT), to stay cheap.
rs_make() {
	local type=$1 bs=$2 lss=$3 size=$4
	vt_mk_raw "$RAW" "$size" "$bs" || return 1
	vt_dd_rand "$RAW" $((bs + 65536)) 4096 || return 1
	"$VHDXTOOL" convert -q -t "$type" --block-size "$bs" \
		--logical-sector "$lss" "$RAW" "$IMG" || return 1
	[ "$type" = fixed ] && fallocate -d "$IMG"
	return 0
}

# rs_vhdi_compare BS: vhdimount shows $RAW: whole up to 16 MiB, else the
# data ranges (start, both sides of the first blocks, the end) and random
# ones (cmp_ranges).
rs_vhdi_compare() {
	local bs=$1 size got
	size=$(stat -c %s "$RAW")
	mkdir -p "$T/vhdi"
	vhdi_mount "$IMG" "$T/vhdi" || return 1
	got=$(stat -c %s "$T/vhdi/vhdi1")
	if [ "$got" -ne "$size" ]; then
		echo "vhdimount shows $got bytes, expected $size" >&2
	elif [ "$size" -le $((16 * MiB)) ]; then
		cmp "$T/vhdi/vhdi1" "$RAW" && got=ok
	else
		cmp_ranges "$T/vhdi/vhdi1" "$RAW" "$bs" 30 && got=ok
	fi
	vhdi_umount "$T/vhdi"
	[ "$got" = ok ]
}

# rs_verify BS LSS [full]: $IMG shows exactly $RAW and vhdxtool check finds
# it clean.  The reader is qemu-img (512-byte sectors) or vhdimount (4096,
# which qemu-img cannot open); with "full", both where they can.
rs_verify() {
	local bs=$1 lss=$2 out
	if [ "$lss" -eq 512 ]; then
		vt_qemu_compare "$IMG" "$RAW" "$bs" || return 1
	fi
	if [ "$lss" -ne 512 ] || [ "${3:-}" = full ]; then
		rs_vhdi_compare "$bs" || return 1
	fi
	out=$("$VHDXTOOL" check "$IMG" 2>&1) ||
		{ echo "vhdxtool check: $out" >&2; return 1; }
}

# rs_resize SIZE [options]: resize $IMG, and $RAW the same way.
rs_resize() {
	local size=$1
	shift
	"$VHDXTOOL" resize -q -s "$size" "$@" "$IMG" || return 1
	truncate -s "$size" "$RAW"
}

# rs_matrix TYPE BS LSS: grow over a new block, a refused shrink over data,
# a forced one, a grow back over the stale tail of the cut block, a shrink
# of zeros.
rs_matrix() {
	local type=$1 bs=$2 lss=$3 before
	local old=$((bs + 131072)) small=$((bs / 2 + 12288))
	rs_make "$type" "$bs" "$lss" "$old"
	# grow: past a new block, ending inside the next
	rs_resize $((old + bs + 7 * 4096)) --sparse
	rs_verify "$bs" "$lss"
	# shrink over data: refused, nothing changes
	before=$(sha256 "$IMG")
	run "$VHDXTOOL" resize -s "$small" "$IMG"
	assert_failure 2
	assert_output --partial "holds data"
	[ "$(sha256 "$IMG")" = "$before" ]
	# forced
	rs_resize "$small" --force
	rs_verify "$bs" "$lss"
	# grow back: the old data past the cut (BS - 6000, BS + 64 KiB) is
	# still in the file but reads as zeros
	rs_resize "$old" --sparse
	rs_verify "$bs" "$lss" full
	# the part cut off now reads as zeros: no --force needed
	rs_resize "$small"
	rs_verify "$bs" "$lss"
}

@test "resize matrix: dynamic, 1 MiB blocks, 512-byte sectors" {
	rs_matrix dynamic $MiB 512
}
@test "resize matrix: dynamic, 1 MiB blocks, 4096-byte sectors" {
	rs_matrix dynamic $MiB 4096
}
@test "resize matrix: dynamic, 32 MiB blocks, 512-byte sectors" {
	rs_matrix dynamic $((32 * MiB)) 512
}
@test "resize matrix: dynamic, 32 MiB blocks, 4096-byte sectors" {
	rs_matrix dynamic $((32 * MiB)) 4096
}
@test "resize matrix: dynamic, 256 MiB blocks, 512-byte sectors" {
	rs_matrix dynamic $((256 * MiB)) 512
}
@test "resize matrix: dynamic, 256 MiB blocks, 4096-byte sectors" {
	rs_matrix dynamic $((256 * MiB)) 4096
}
@test "resize matrix: fixed, 1 MiB blocks, 512-byte sectors" {
	rs_matrix fixed $MiB 512
}
@test "resize matrix: fixed, 1 MiB blocks, 4096-byte sectors" {
	rs_matrix fixed $MiB 4096
}
@test "resize matrix: fixed, 32 MiB blocks, 512-byte sectors" {
	rs_matrix fixed $((32 * MiB)) 512
}
@test "resize matrix: fixed, 32 MiB blocks, 4096-byte sectors" {
	rs_matrix fixed $((32 * MiB)) 4096
}
@test "resize matrix: fixed, 256 MiB blocks, 512-byte sectors" {
	rs_matrix fixed $((256 * MiB)) 512
}
@test "resize matrix: fixed, 256 MiB blocks, 4096-byte sectors" {
	rs_matrix fixed $((256 * MiB)) 4096
}

# rs_sample_compare OFFSETS...: qemu-img dd reads 1 MiB at each offset (MiB
# multiples) of $IMG; it must equal the same range of $RAW.  (qemu-img 7.2's
# dd counts count= from the start of the input, skipped blocks included.)
rs_sample_compare() {
	local o
	for o in "$@"; do
		rm -f "$T/got"
		qemu-img dd -f vhdx -O raw if="$IMG" of="$T/got" bs=1M \
			skip=$((o / MiB)) count=$((o / MiB + 1)) || return 1
		dd if="$RAW" of="$T/want" bs=1M skip=$((o / MiB)) count=1 \
			status=none || return 1
		cmp "$T/got" "$T/want" ||
			{ echo "differs at offset $o" >&2; return 1; }
	done
}

# rs_qemu_info_ok SIZE: qemu-img check is clean and info gives SIZE.
rs_qemu_info_ok() {
	local out
	out=$(qemu-img check -f vhdx "$IMG" 2>&1) ||
		{ echo "qemu-img check: $out" >&2; return 1; }
	out=$(qemu-img info --output=json -f vhdx "$IMG") || return 1
	[ "$(jq '."virtual-size"' <<<"$out")" -eq "$1" ] ||
		{ echo "qemu-img info: $out" >&2; return 1; }
	out=$("$VHDXTOOL" check "$IMG" 2>&1) ||
		{ echo "vhdxtool check: $out" >&2; return 1; }
}

@test "grow past the BAT region: the BAT moves, then grows in place; a chunk boundary is crossed" {
	local off1 len1 off2 len2
	rs_make dynamic $MiB 512 $((8 * MiB))
	off1=$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.offset)
	len1=$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.length)
	# 1 MiB of BAT holds 31 chunks of 4097 entries: 130 GiB needs 2 MiB
	rs_resize $((130 * GiB + 3584))
	off2=$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.offset)
	len2=$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.length)
	[ "$len1" -eq "$MiB" ] && [ "$len2" -eq $((2 * MiB)) ]
	[ "$off2" -ne "$off1" ]
	rs_qemu_info_ok $((130 * GiB + 3584))
	rs_sample_compare 0 $((7 * MiB)) $((8 * MiB)) $((4 * GiB - MiB)) \
		$((4 * GiB)) $((130 * GiB - MiB))
	rs_vhdi_compare "$MiB"
	# the BAT is now last in the file: it grows where it is
	rs_resize $((260 * GiB))
	[ "$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.offset)" -eq "$off2" ]
	[ "$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.length)" -eq $((3 * MiB)) ]
	rs_qemu_info_ok $((260 * GiB))
	rs_sample_compare 0 $((7 * MiB)) $((130 * GiB)) $((260 * GiB - MiB))
	# and back down to the data
	rs_resize $((8 * MiB))
	rs_verify $MiB 512
}

@test "fixed image: grow across the 4 GiB chunk boundary and past the BAT region, blocks reserved or sparse" {
	rs_make fixed $MiB 512 $((8 * MiB))
	# without --sparse the new blocks are reserved on the host
	rs_resize $((72 * MiB))
	[ $(($(stat -c %b "$IMG") * 512)) -ge $((64 * MiB)) ]
	rs_verify $MiB 512
	rs_resize $((4 * GiB - MiB - 1536)) --sparse
	rs_qemu_info_ok $((4 * GiB - MiB - 1536))
	rs_resize $((4 * GiB + 3 * MiB + 2560)) --sparse
	rs_qemu_info_ok $((4 * GiB + 3 * MiB + 2560))
	rs_sample_compare 0 $((7 * MiB)) $((4 * GiB - 2 * MiB)) \
		$((4 * GiB - MiB)) $((4 * GiB)) $((4 * GiB + 2 * MiB))
	# every block of a fixed image is present, reading its place in the file
	[ "$(python3 "$LIBDIR_EDIT" "$IMG" bat-find-present | wc -l)" -eq 4100 ]
	rs_resize $((130 * GiB)) --sparse
	[ "$(python3 "$LIBDIR_EDIT" "$IMG" get regions.bat.length)" -eq $((2 * MiB)) ]
	rs_qemu_info_ok $((130 * GiB))
	rs_sample_compare 0 $((4 * GiB)) $((100 * GiB)) $((130 * GiB - MiB))
}

@test "shrink: refused over a partition (MBR, GPT) unless --force" {
	require_cmd sfdisk
	truncate -s 64M "$RAW"
	echo 'start=2048, size=100000, type=83' | sfdisk -q "$RAW"
	"$VHDXTOOL" convert -q --block-size 1M "$RAW" "$IMG"
	local before
	before=$(sha256 "$IMG")
	run "$VHDXTOOL" resize -s 40M "$IMG"
	assert_failure 2
	assert_output --partial "partition ends at byte $(((2048 + 100000) * 512))"
	[ "$(sha256 "$IMG")" = "$before" ]
	# past the partition's end: fine
	rs_resize 50M
	rs_verify $MiB 512
	rm -f "$IMG" "$RAW"
	truncate -s 64M "$RAW"
	printf 'label: gpt\nstart=2048, size=65536\n' | sfdisk -q "$RAW"
	"$VHDXTOOL" convert -q --block-size 1M "$RAW" "$IMG"
	run "$VHDXTOOL" resize -s 32M "$IMG"
	assert_failure 2
	assert_output --partial "partition ends at byte $(((2048 + 65536) * 512))"
	# past the partition the backup GPT still holds data
	run "$VHDXTOOL" resize -s 40M "$IMG"
	assert_failure 2
	assert_output --partial "holds data"
	rs_resize 32M --allow-data-loss
	rs_verify $MiB 512
}

@test "resize: bad sizes and usage are refused without changing the image" {
	"$VHDXTOOL" create -q -s 64M "$IMG"
	local before
	before=$(sha256 "$IMG")
	run "$VHDXTOOL" resize "$IMG"
	assert_failure 1
	assert_output --partial "no size given"
	run "$VHDXTOOL" resize -s 1000 "$IMG"
	assert_failure 1
	assert_output --partial "multiple of the logical sector size"
	run "$VHDXTOOL" resize -s 65T "$IMG"
	assert_failure 1
	run "$VHDXTOOL" resize -s 12Q "$IMG"
	assert_failure 1
	assert_output --partial "invalid size"
	run "$VHDXTOOL" resize -s -64M "$IMG"
	assert_failure 1
	[ "$(sha256 "$IMG")" = "$before" ]
	run "$VHDXTOOL" resize --help
	assert_success
	assert_output --partial "usage: vhdxtool resize"
	# relative sizes
	run "$VHDXTOOL" resize -s +1G "$IMG"
	assert_success
	[ "$(qemu-img info --output=json "$IMG" | jq '."virtual-size"')" -eq $((GiB + 64 * MiB)) ]
	run "$VHDXTOOL" resize -s -1G "$IMG"
	assert_success
	[ "$(qemu-img info --output=json "$IMG" | jq '."virtual-size"')" -eq $((64 * MiB)) ]
}

@test "resize: a mounted image is refused (locked), with the way to grow it online" {
	require_fuse
	"$VHDXTOOL" create -q -s 64M "$IMG"
	mkdir "$T/mnt"
	vf_mount "$IMG" "$T/mnt"
	run "$VHDXTOOL" resize -s 128M "$IMG"
	assert_failure 4
	assert_output --partial "in use (locked by PID $(vf_pid "$T/mnt") (vhdxfuse), mounted at $T/mnt)"
	assert_output --partial "truncate -s SIZE its file under the mount point"
	# and the advice works
	truncate -s 128M "$T/mnt/disk.raw"
	[ "$(stat -c %s "$T/mnt/disk.raw")" -eq $((128 * MiB)) ]
	vf_umount "$T/mnt"
	[ "$(qemu-img info --output=json "$IMG" | jq '."virtual-size"')" -eq $((128 * MiB)) ]
	# a lock held by another program gets no such advice
	hold_lock ex "$IMG"
	run "$VHDXTOOL" resize -s 256M "$IMG"
	assert_failure 4
	assert_output --partial "in use (locked by PID $HOLDER_PID (python3))"
	refute_output --partial "truncate"
	kill "$HOLDER_PID"
}

@test "differencing image: grow and shrink; new space reads as zeros, not as the parent" {
	require_fuse
	local P=$T/parent.vhdx PRAW=$T/parent.raw
	rs_make dynamic $((2 * MiB)) 512 $((16 * MiB))
	mv "$IMG" "$P"
	mv "$RAW" "$PRAW"
	"$VHDXTOOL" create -q -t differencing --parent "$P" "$IMG"
	cp "$PRAW" "$RAW"
	# write into the child over the parent's data, through the daemon
	mkdir "$T/mnt"
	vf_mount "$IMG" "$T/mnt"
	vt_dd_rand "$T/mnt/disk.raw" $((3 * MiB)) 8192
	dd if="$T/mnt/disk.raw" of="$T/c" bs=8192 skip=$((3 * MiB / 8192)) \
		count=1 status=none
	vf_umount "$T/mnt"
	dd if="$T/c" of="$RAW" bs=8192 seek=$((3 * MiB / 8192)) conv=notrunc \
		status=none
	# grow: past the parent's end reads as zeros
	rs_resize $((20 * MiB + 4096))
	# shrink cuts data: refused, then forced
	run "$VHDXTOOL" resize -s $((5 * MiB + 512)) "$IMG"
	assert_failure 2
	rs_resize $((5 * MiB + 512)) --force
	# grow back: the parent's data past 5 MiB + 512 stays hidden
	rs_resize $((12 * MiB))
	"$VHDXTOOL" check -q "$IMG"
	vf_mount "$IMG" "$T/mnt" -o ro
	[ "$(stat -c %s "$T/mnt/disk.raw")" -eq $((12 * MiB)) ]
	cmp "$T/mnt/disk.raw" "$RAW"
	vf_umount "$T/mnt"
	# the parent never changed
	vt_verify "$P" "$PRAW" $((2 * MiB)) 512
}

# online_resize_works: whether the kernel lets us grow a mounted ext4 here
# (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE), tried on a plain file.
online_resize_works() {
	local f=$T/probe.raw d=$T/probe ok=1
	truncate -s 64M "$f"
	mkfs.ext4 -q -F "$f" || return 1
	mkdir -p "$d"
	loop_attach "$f"
	mount "$LOOPDEV" "$d" || return 1
	track_fsmount "$d"
	truncate -s 128M "$f"
	losetup -c "$LOOPDEV"
	resize2fs "$LOOPDEV" >/dev/null 2>&1 && ok=0
	umount "$d"
	losetup -d "$LOOPDEV"
	return $ok
}

@test "online grow: truncate the mounted disk, losetup -c, resize2fs; shrinking it is refused" {
	require_fuse
	require_root
	require_cmd mkfs.ext4 resize2fs e2fsck losetup
	local online=1 before
	online_resize_works && online=0
	"$VHDXTOOL" create -q -s 64M "$IMG"
	mkdir "$T/mnt" "$T/fs"
	vf_mount "$IMG" "$T/mnt"
	mkfs.ext4 -q "$T/mnt/disk.raw"
	loop_attach "$T/mnt/disk.raw"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
	head -c 20M /dev/urandom >"$T/fs/a"
	sha256sum "$T/fs/a" | cut -d' ' -f1 >"$T/a.sum"
	# writes keep going while the disk grows
	(dd if=/dev/urandom of="$T/fs/b" bs=1M count=24 conv=fsync status=none) &
	local writer=$!
	truncate -s 256M "$T/mnt/disk.raw"
	wait "$writer"
	[ "$(stat -c %s "$T/mnt/disk.raw")" -eq $((256 * MiB)) ]
	losetup -c "$LOOPDEV"
	[ "$(blockdev --getsize64 "$LOOPDEV")" -eq $((256 * MiB)) ]
	if [ "$online" -eq 0 ]; then
		resize2fs "$LOOPDEV"
	else
		echo "# online resize2fs needs CAP_SYS_RESOURCE, missing here:" \
			"resizing the unmounted ext4 (the VHDX stays mounted)" >&3
		umount "$T/fs"
		e2fsck -fy "$LOOPDEV"
		resize2fs "$LOOPDEV"
		mount "$LOOPDEV" "$T/fs"
	fi
	[ "$(df -B1M --output=size "$T/fs" | tail -1)" -gt 200 ]
	# the new space is usable
	head -c 150M /dev/zero >"$T/fs/c"
	sha256sum "$T/fs/b" | cut -d' ' -f1 >"$T/b.sum"
	sync
	# shrinking the mounted disk: EINVAL, logged, nothing changes
	run truncate -s 128M "$T/mnt/disk.raw"
	assert_failure
	assert_output --partial "Invalid argument"
	grep -q "refusing to shrink the mounted disk" "$T/vhdxfuse.log"
	[ "$(stat -c %s "$T/mnt/disk.raw")" -eq $((256 * MiB)) ]
	umount "$T/fs"
	e2fsck -fn "$LOOPDEV"
	losetup -d "$LOOPDEV"
	vf_umount "$T/mnt"
	rs_qemu_info_ok $((256 * MiB))
	# the files, read through an independent reader (qemu-img)
	qemu-img convert -f vhdx -O raw "$IMG" "$T/out.raw"
	e2fsck -fn "$T/out.raw"
	mkdir "$T/fs2"
	loop_attach "$T/out.raw" -r
	mount -o ro "$LOOPDEV" "$T/fs2"
	track_fsmount "$T/fs2"
	[ "$(sha256 "$T/fs2/a")" = "$(cat "$T/a.sum")" ]
	[ "$(sha256 "$T/fs2/b")" = "$(cat "$T/b.sum")" ]
	umount "$T/fs2"
}
