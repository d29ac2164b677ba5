#!/usr/bin/env bats
# Holes that tools see: lseek(2) SEEK_DATA/SEEK_HOLE on the mounted disk
# and `vhdxtool map`, both answered by the library's block query.
#
# Oracles, never our own output: the BATs (and sector bitmaps) of the image
# files decoded by tests/lib/batextents.py on top of tests/lib/vhdxedit.py,
# which do not use the C library; sha256 of the whole disk read through the
# mount; qemu-img (convert of the mounted raw file, compare, map of the
# result).  qemu's own VHDX driver has no block status (`qemu-img map` of a
# .vhdx calls the whole disk data), so it cannot check the BAT side itself.
# The lseek calls are made by tests/lib/seekmap.py.

load lib/common

: "${VHDXTOOL:=$TOP_BUILDDIR/vhdxtool}"
source "$BATS_TEST_DIRNAME/lib/corpus.bash"
CKPT_PARENT='Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx'
MiB=$((1024 * 1024))

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_fuse
	require_cmd python3 jq qemu-img fallocate
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

seekmap() { python3 "$TOP_SRCDIR/tests/lib/seekmap.py" "$@"; }
batextents() { python3 "$TOP_SRCDIR/tests/lib/batextents.py" "$@"; }

# The data extents of `vhdxtool map --json` as "START LENGTH DEPTH OFFSET",
# neighbours merged where the depth is the same and the offsets follow on
# (as batextents.py --map merges them; map also splits at state changes).
map_data() {
	"$VHDXTOOL" map --json "$@" | jq -r '.[] | select(.data) |
		"\(.start) \(.length) \(.depth) \(.offset)"' |
		awk 'n && $1 == s + l && $3 == d && $4 == o + l { l += $2; next }
		     n { print s, l, d, o }
		     { s = $1; l = $2; d = $3; o = $4; n = 1 }
		     END { if (n) print s, l, d, o }'
}

# check_seek FILE IMAGE [PARENTS...]: SEEK_DATA/SEEK_HOLE on FILE (the
# mounted disk) against the BATs.
check_seek() {
	local file=$1
	shift
	batextents "$@" >"$T/bat.seek"
	seekmap "$file" >"$T/lseek"
	diff "$T/bat.seek" "$T/lseek"
	# the extents are not trivial: some data
	[ -s "$T/bat.seek" ]
}

# check_map IMAGE [PARENTS...]: vhdxtool map of IMAGE against the BATs
# (not while IMAGE is mounted read-write: it is locked then).
check_map() {
	batextents --map "$@" >"$T/bat.map"
	map_data "$1" >"$T/map"
	diff "$T/bat.map" "$T/map"
	[ -s "$T/bat.map" ]
}

# check_against_bat FILE IMAGE [PARENTS...]: both.
check_against_bat() {
	check_seek "$@" && check_map "${@:2}"
}

# write_at FILE OFFSET LENGTH: random bytes, in place.
write_at() {
	head -c "$3" /dev/urandom |
		dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc \
			status=none
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

@test "dynamic images: SEEK_DATA/SEEK_HOLE and map follow the BAT" {
	local bs lss img raw size
	for bs_lss in 1M/512 32M/4096 4M/512; do
		bs=${bs_lss%/*} lss=${bs_lss#*/}
		img=$T/d-$bs-$lss.vhdx raw=$T/mnt/d-$bs-$lss.raw
		size=$((200 * MiB + 64 * 1024)) # a last block cut short
		"$VHDXTOOL" create -q -s $size --block-size "$bs" \
			--logical-sector "$lss" "$img"
		vf_mount "$img" "$T/mnt"
		# an empty disk is one hole
		run seekmap "$raw" --at 0
		assert_output "ENXIO 0"
		write_at "$raw" 0 4096
		write_at "$raw" $((7 * MiB + 12345)) 100000
		write_at "$raw" $((64 * MiB)) $((3 * MiB))
		write_at "$raw" $((100 * MiB)) 4096
		write_at "$raw" $((size - 512)) 512
		# a whole block that had data punched again: ZERO, a hole
		fallocate -p -o $((100 * MiB)) -l $((32 * MiB)) "$raw"
		# writers closed: the rw mount answers already
		check_seek "$raw" "$img"
		vf_umount "$T/mnt"
		vf_mount "$img" "$T/mnt" -o ro
		check_against_bat "$raw" "$img"
		run seekmap "$raw" --at $((size - 1))
		assert_output "$((size - 1)) $size"
		run seekmap "$raw" --at $size
		assert_output "ENXIO ENXIO"
		vf_umount "$T/mnt"
		"$VHDXTOOL" check -q "$img"
	done
}

@test "fixed images: the whole disk is data, also after a punched hole" {
	local img=$T/f.vhdx raw=$T/mnt/f.raw size=$((48 * MiB))
	"$VHDXTOOL" create -q -t fixed -s $size --block-size 4M "$img"
	vf_mount "$img" "$T/mnt"
	write_at "$raw" $((5 * MiB)) 4096
	fallocate -p -o $((8 * MiB)) -l $((8 * MiB)) "$raw"
	check_seek "$raw" "$img"
	run seekmap "$raw"
	assert_output "0 $size"
	run seekmap "$raw" --at $((20 * MiB))
	assert_output "$((20 * MiB)) $size"
	vf_umount "$T/mnt"
	check_map "$img"
	run "$VHDXTOOL" map --json "$img"
	assert_success
	# every extent is data in this file, FULLY_PRESENT
	run jq -r '[.[] | select(.data and .state == "FULLY_PRESENT" and
		.depth == 0)] | map(.length) | add' <<<"$output"
	assert_output "$size"
}

@test "differencing chain: holes through the parents, hidden by ZERO blocks" {
	local size=$((96 * MiB))
	"$VHDXTOOL" create -q -s $size --block-size 2M "$T/base.vhdx"
	vf_mount "$T/base.vhdx" "$T/mnt"
	write_at "$T/mnt/base.raw" 0 $((6 * MiB))
	write_at "$T/mnt/base.raw" $((40 * MiB)) $((4 * MiB))
	write_at "$T/mnt/base.raw" $((90 * MiB)) 4096
	vf_umount "$T/mnt"
	"$VHDXTOOL" create -q -t differencing --parent "$T/base.vhdx" \
		"$T/mid.vhdx"
	vf_mount "$T/mid.vhdx" "$T/mnt"
	write_at "$T/mnt/mid.raw" $((20 * MiB)) 4096
	write_at "$T/mnt/mid.raw" $((41 * MiB)) 4096
	# hides the parent's block: a hole though the parent has data
	fallocate -p -o $((2 * MiB)) -l $((2 * MiB)) "$T/mnt/mid.raw"
	vf_umount "$T/mnt"
	"$VHDXTOOL" create -q -t differencing --parent "$T/mid.vhdx" \
		"$T/top.vhdx"
	vf_mount "$T/top.vhdx" "$T/mnt"
	write_at "$T/mnt/top.raw" $((60 * MiB)) $((3 * MiB))
	fallocate -p -o $((40 * MiB)) -l $((2 * MiB)) "$T/mnt/top.raw"
	check_seek "$T/mnt/top.raw" "$T/top.vhdx" "$T/mid.vhdx" \
		"$T/base.vhdx"
	vf_umount "$T/mnt"
	vf_mount "$T/top.vhdx" "$T/mnt" -o ro
	check_against_bat "$T/mnt/top.raw" "$T/top.vhdx" "$T/mid.vhdx" \
		"$T/base.vhdx"
	# every level shows up in the map
	run jq -r '[.[] | select(.data) | .depth] | unique | join(" ")' \
		< <("$VHDXTOOL" map --json "$T/top.vhdx")
	assert_output "0 1 2"
	# a sparse copy is the same disk
	cp --sparse=always "$T/mnt/top.raw" "$T/copy.raw"
	assert_equal "$(sha "$T/copy.raw")" "$(sha "$T/mnt/top.raw")"
}

@test "Hyper-V checkpoint: sector bitmaps of PARTIALLY_PRESENT blocks" {
	local img parent="$T/$CKPT_PARENT"
	unpack dissect-differencing.avhdx.xz
	img=$IMG
	# a parent of our own with data under and beside the child's sectors,
	# then given the DataWriteGuid the checkpoint is linked to
	"$VHDXTOOL" create -q -s 8G --block-size 2M "$parent"
	vf_mount "$parent" "$T/mnt"
	write_at "$T/mnt/$(basename "$parent" .avhdx).raw" 0 $((2 * MiB))
	write_at "$T/mnt/$(basename "$parent" .avhdx).raw" $((0x73600000)) \
		$((4 * MiB))
	vf_umount "$T/mnt"
	python3 "$TOP_SRCDIR/tests/lib/vhdxedit.py" "$parent" set \
		headers.datawriteguid ff34003b-11ed-4cf8-a166-b2be05e20b80
	vf_mount "$img" "$T/mnt" -o ro
	check_against_bat "$T/mnt/dissect-differencing.raw" "$img" "$parent"
	# sector granularity: some extent is not a multiple of 64 KiB
	run awk '$2 % 65536 { n++ } END { print n + 0 }' "$T/bat.seek"
	[ "$output" -gt 0 ]
	# both the checkpoint and the parent hold data the map names
	run jq -r '[.[] | select(.data) | .state] | unique | join(" ")' \
		< <("$VHDXTOOL" map --json "$img")
	assert_output "FULLY_PRESENT PARTIALLY_PRESENT"
}

@test "cp --sparse=always and qemu-img convert read only the data" {
	local img=$T/s.vhdx raw=$T/mnt/s.raw size=$((1024 * MiB)) b
	"$VHDXTOOL" create -q -s $size --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	for b in 3 200 201 700 1023; do
		write_at "$raw" $((b * MiB + 4096)) $((256 * 1024))
	done
	vf_umount "$T/mnt"
	vf_mount "$img" "$T/mnt" -o ro
	cp --sparse=always "$raw" "$T/copy.raw"
	assert_equal "$(sha "$T/copy.raw")" "$(sha "$raw")"
	# the copy holds the five blocks, not the disk (ext4, tmpfs: 4 KiB)
	run du -k "$T/copy.raw"
	echo "copy takes ${output%%[[:space:]]*} KiB"
	[ "${output%%[[:space:]]*}" -le $((5 * 1024 + 64)) ]
	# qemu asks SEEK_DATA/SEEK_HOLE of the raw file: its qcow2 copy
	# allocates what the BAT holds
	qemu-img convert -f raw -O qcow2 "$raw" "$T/copy.qcow2"
	qemu-img compare -f raw -F qcow2 "$raw" "$T/copy.qcow2"
	qemu-img map --output=json -f raw "$raw" >"$T/qraw.json"
	seekmap qemu-map "$T/qraw.json" >"$T/qraw"
	batextents "$img" >"$T/bat.seek"
	diff "$T/bat.seek" "$T/qraw"
	# (qemu-img also leaves out zero clusters inside the data)
	qemu-img map --output=json "$T/copy.qcow2" >"$T/qcow.json"
	run jq '[.[] | select(.data) | .length] | add' "$T/qcow.json"
	[ "$output" -ge $((5 * 256 * 1024)) ] && [ "$output" -le $((5 * MiB)) ]
}

@test "writeback cache: while the disk is open for writing all of it is data" {
	local img=$T/w.vhdx raw=$T/mnt/w.raw size=$((64 * MiB))
	"$VHDXTOOL" create -q -s $size --block-size 1M "$img"
	vf_mount "$img" "$T/mnt"
	exec 4<>"$raw"
	printf 'data' >&4
	# the write may sit in the kernel's cache: no hole is claimed
	run seekmap "$raw" --at $((10 * MiB))
	assert_output "$((10 * MiB)) $size"
	exec 4>&-
	run seekmap "$raw"
	assert_output "0 $MiB"
	vf_umount "$T/mnt"
	# without the writeback cache every write has arrived: holes show
	vf_mount "$img" "$T/mnt" -o no_writeback_cache
	exec 4<>"$raw"
	run seekmap "$raw" --at $((10 * MiB))
	assert_output "ENXIO $((10 * MiB))"
	exec 4>&-
	vf_umount "$T/mnt"
}

@test "vhdxtool map: usage, help, refusals, completion" {
	run "$VHDXTOOL" map
	[ "$status" -eq 1 ]
	assert_output --partial "no IMAGE given"
	run "$VHDXTOOL" map --bogus x
	[ "$status" -eq 1 ]
	run "$VHDXTOOL" map --help
	assert_success
	assert_output --partial "usage: vhdxtool map"
	run "$VHDXTOOL" map "$T/nonexistent.vhdx"
	[ "$status" -eq 4 ]
	head -c $MiB /dev/zero >"$T/notvhdx"
	run "$VHDXTOOL" map "$T/notvhdx"
	[ "$status" -eq 2 ]
	"$VHDXTOOL" create -q -s 8M "$T/e.vhdx"
	run "$VHDXTOOL" map "$T/e.vhdx"
	assert_success
	assert_line -n 1 --regexp '^0x0 +0x800000 +zero +0 +NOT_PRESENT +-$'
	run bash -c 'shopt -s extglob
		source "$1"
		COMP_WORDS=(vhdxtool ma); COMP_CWORD=1; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool map --j); COMP_CWORD=2; _vhdxtool
		echo "${COMPREPLY[*]}"' _ "$TOP_SRCDIR/contrib/vhdxtool.bash-completion"
	assert_line -n 0 "map"
	assert_line -n 1 "--json"
}
