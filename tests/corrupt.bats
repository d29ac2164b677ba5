#!/usr/bin/env bats
# Damaged images: one test per check of shared/vhdx-format.md section 16 and
# of the open sequence (sections 3-6, 12.3-12.5).  Each test edits one field
# of a good image made by qemu-img (tests/lib/vhdxedit.py, which recomputes
# the CRC-32C of checksummed structures so the edit reaches the intended
# check) and asserts the exact outcome:
#   refused:  exit status 32, no crash, stderr names the structure, nothing
#             mounted, the image byte-for-byte unchanged;
#   accepted: (where the format says to fall back or tolerate) the disk reads
#             exactly as qemu-img converts the undamaged image.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"

setup() {
	common_setup
	require_fuse
	require_cmd qemu-img qemu-io python3
	mkdir -p "$T/mnt"
	mk_base
}

teardown() {
	common_teardown
}

# mk_base: $T/img.vhdx, dynamic, 40 MiB, 1 MiB blocks, data in blocks 0, 1,
# 5 and 39 (the last); $T/good.raw is qemu's conversion of it.
mk_base() {
	mk_random_sources
	mk_vhdx "$T/img.vhdx" $((40 * MiB)) block_size=1M
	qio "$T/img.vhdx" "write -s $T/rand1 0 $((MiB + 4096))" \
		"write -s $T/rand2 $((5 * MiB + 1000)) 70000" \
		"write -P 0x5a $((40 * MiB - 8192)) 8192"
	qemu_raw "$T/img.vhdx" "$T/good.raw"
	IMG=$T/img.vhdx
}

# expect_refused IMAGE REGEX: vhdxfuse must refuse IMAGE (exit 32) with a
# message matching REGEX (case-insensitive), mount nothing, not crash and
# not write to the image.
expect_refused() {
	local img=$1 re=$2 before
	before=$(sha256 "$img")
	vf_start "$img" "$T/mnt" -o ro
	echo "exit status $status; output:"
	echo "$output"
	# (explicit returns: this is also called in a loop under ||)
	[ "$status" -lt 128 ] || { echo "killed by a signal" && return 1; }
	[ "$status" -eq 32 ] || { echo "expected exit status 32" && return 1; }
	grep -qiE -- "$re" <<<"$output" ||
		{ echo "message does not match /$re/" && return 1; }
	assert_not_mounted "$T/mnt" || return 1
	[ -z "$(ls -A "$T/mnt")" ] || { echo "mount point not empty" && return 1; }
	[ "$(sha256 "$img")" = "$before" ] ||
		{ echo "the image was modified" && return 1; }
}

# expect_opens IMAGE [ORACLE_RAW]: vhdxfuse must open IMAGE and show exactly
# ORACLE_RAW (default: qemu's view of the undamaged image), without writing
# to the image.
expect_opens() {
	local img=$1 oracle=${2:-$T/good.raw} before f
	before=$(sha256 "$img")
	vf_mount "$img" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	assert_equal "$(stat -c %s "$f")" "$(stat -c %s "$oracle")"
	assert_equal "$(sha256 "$f")" "$(sha256 "$oracle")"
	vf_umount "$T/mnt"
	assert_equal "$(sha256 "$img")" "$before"
}

# ------------------------------------------------------ file identifier

@test "file identifier: bad signature" {
	vx "$IMG" set fileid.signature ascii:vhdxfilf
	expect_refused "$IMG" 'file identifier'
}

@test "empty file" {
	: >"$IMG"
	expect_refused "$IMG" 'file identifier'
}

@test "file cut inside the header section (no header)" {
	truncate -s $((40 * 1024)) "$IMG"
	expect_refused "$IMG" 'header'
}

# ------------------------------------------------------ headers (4.2)

@test "header 1 bad checksum: opens through header 2" {
	vx "$IMG" badcrc header1
	expect_opens "$IMG"
}

@test "header 2 bad checksum: opens through header 1" {
	vx "$IMG" badcrc header2
	expect_opens "$IMG"
}

@test "header 1 bad signature (checksum fixed): opens through header 2" {
	vx "$IMG" set header1.signature ascii:HEAD
	expect_opens "$IMG"
}

@test "both headers bad checksum" {
	vx "$IMG" badcrc header1
	vx "$IMG" badcrc header2
	expect_refused "$IMG" 'header'
}

@test "equal sequence numbers, headers differ: refused" {
	local s
	s=$(vx "$IMG" get header1.seq)
	vx "$IMG" set header2.seq "$s"
	vx "$IMG" set header2.filewriteguid "$(python3 -c 'import uuid; print(uuid.uuid4())')"
	expect_refused "$IMG" 'header'
}

@test "equal sequence numbers, identical headers (Disk2vhd): opens" {
	vx "$IMG" copy-header 1 2
	[ "$(vx "$IMG" get header1.seq)" = "$(vx "$IMG" get header2.seq)" ]
	expect_opens "$IMG"
}

@test "header version 2 in both headers" {
	vx "$IMG" set headers.version 2
	expect_refused "$IMG" 'header'
}

@test "log offset not 1 MiB aligned" {
	vx "$IMG" set headers.logoffset $((MiB + 4096))
	expect_refused "$IMG" 'log'
}

@test "log length not a multiple of 1 MiB" {
	vx "$IMG" set headers.loglength $((MiB + 4096))
	expect_refused "$IMG" 'log'
}

@test "log overlapping the BAT region" {
	vx "$IMG" set headers.logoffset "$(vx "$IMG" get regions.bat.offset)"
	expect_refused "$IMG" 'log|overlap'
}

@test "log inside the header section (offset 0)" {
	vx "$IMG" set headers.logoffset 0
	expect_refused "$IMG" 'log'
}

# ------------------------------------------------------ region table (5)

@test "region table 1 bad checksum: opens through copy 2" {
	vx "$IMG" badcrc region1
	expect_opens "$IMG"
}

@test "region table 2 bad checksum: opens through copy 1" {
	vx "$IMG" badcrc region2
	expect_opens "$IMG"
}

@test "both region tables bad checksum" {
	vx "$IMG" badcrc region1
	vx "$IMG" badcrc region2
	expect_refused "$IMG" 'region table'
}

@test "both region tables bad signature" {
	vx "$IMG" set regions.signature ascii:REGI
	expect_refused "$IMG" 'region table'
}

@test "region table entry count 2048 (> 2047)" {
	vx "$IMG" set regions.count 2048
	expect_refused "$IMG" 'region table'
}

@test "unknown region with Required=1: refused, message names its GUID" {
	local g=6d9f8a3c-1b2e-4f5a-9c8d-7e6f5a4b3c2d
	vx "$IMG" region-add "$g" $((5 * MiB)) $MiB 1
	expect_refused "$IMG" "$g"
}

@test "unknown region with Required=0: opens" {
	vx "$IMG" region-add 6d9f8a3c-1b2e-4f5a-9c8d-7e6f5a4b3c2d \
		$((5 * MiB)) $MiB 0
	expect_opens "$IMG"
}

@test "BAT region missing" {
	vx "$IMG" region-del bat
	expect_refused "$IMG" 'BAT'
}

@test "metadata region missing" {
	vx "$IMG" region-del metadata
	expect_refused "$IMG" 'metadata'
}

@test "BAT region overlapping the header section (offset 0)" {
	vx "$IMG" set regions.bat.offset 0
	expect_refused "$IMG" 'BAT|region'
}

@test "BAT region overlapping the log" {
	vx "$IMG" set regions.bat.offset "$(vx "$IMG" get header1.logoffset)"
	expect_refused "$IMG" 'BAT|region|log'
}

@test "metadata region overlapping the BAT region" {
	vx "$IMG" set regions.metadata.offset "$(vx "$IMG" get regions.bat.offset)"
	expect_refused "$IMG" 'BAT|metadata|region'
}

@test "BAT region not 1 MiB aligned" {
	vx "$IMG" set regions.bat.offset $(($(vx "$IMG" get regions.bat.offset) + 4096))
	expect_refused "$IMG" 'BAT|region'
}

@test "region overlapping a payload block" {
	local off
	off=$(($(vx "$IMG" bat-get 0) & ~0xFFFFF))
	vx "$IMG" region-add 6d9f8a3c-1b2e-4f5a-9c8d-7e6f5a4b3c2d "$off" $MiB 0
	expect_refused "$IMG" 'BAT|region|overlap'
}

# ------------------------------------------------------ metadata (6)

@test "metadata table bad signature" {
	vx "$IMG" set meta.signature ascii:metadatX
	expect_refused "$IMG" 'metadata'
}

@test "metadata table entry count 2048 (> 2047)" {
	vx "$IMG" set meta.count 2048
	expect_refused "$IMG" 'metadata'
}

@test "each required metadata item missing" {
	local item re cp fails=0
	for item in fileparams:'file parameters' vsize:'virtual disk size' \
		diskid:'virtual disk id' lss:'logical sector size' \
		pss:'physical sector size'; do
		re=${item#*:}
		item=${item%%:*}
		cp="$T/no-$item.vhdx"
		cp "$IMG" "$cp"
		vx "$cp" meta-del "$item"
		echo "--- without $item"
		expect_refused "$cp" "metadata.*$re|$re.*missing" || fails=$((fails + 1))
	done
	[ "$fails" -eq 0 ]
}

@test "unknown metadata item with IsRequired: refused, message names its GUID" {
	local g=0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9
	vx "$IMG" meta-add "$g" $((0x20000)) 8 4 0102030405060708
	expect_refused "$IMG" "$g"
}

@test "unknown metadata item without IsRequired: opens" {
	vx "$IMG" meta-add 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9 $((0x20000)) 8 0 \
		0102030405060708
	expect_opens "$IMG"
}

@test "metadata item inside the metadata table (offset < 64 KiB)" {
	vx "$IMG" set meta.vsize.offset 256
	expect_refused "$IMG" 'metadata'
}

@test "metadata item past the end of the metadata region" {
	vx "$IMG" set meta.vsize.offset $((MiB - 4))
	expect_refused "$IMG" 'metadata'
}

@test "metadata item too short (virtual disk size 4 bytes)" {
	vx "$IMG" set meta.vsize.length 4
	expect_refused "$IMG" 'metadata|virtual disk size'
}

@test "HasParent set without a parent locator" {
	vx "$IMG" set meta.fileflags 2
	expect_refused "$IMG" 'parent'
}

@test "block size not a power of two (3 MiB)" {
	vx "$IMG" set meta.blocksize $((3 * MiB))
	expect_refused "$IMG" 'block size'
}

@test "block size 0" {
	vx "$IMG" set meta.blocksize 0
	expect_refused "$IMG" 'block size'
}

@test "block size 512 KiB (below 1 MiB)" {
	vx "$IMG" set meta.blocksize $((512 * 1024))
	expect_refused "$IMG" 'block size'
}

@test "block size 512 MiB (above 256 MiB)" {
	vx "$IMG" set meta.blocksize $((512 * MiB))
	expect_refused "$IMG" 'block size'
}

@test "logical sector size 1024" {
	vx "$IMG" set meta.lss 1024
	expect_refused "$IMG" 'logical sector size'
}

@test "physical sector size 1024" {
	vx "$IMG" set meta.pss 1024
	expect_refused "$IMG" 'physical sector size'
}

@test "virtual disk size 0" {
	vx "$IMG" set meta.vsize 0
	expect_refused "$IMG" 'virtual disk size'
}

@test "virtual disk size not a multiple of the logical sector size" {
	vx "$IMG" set meta.vsize $((40 * MiB - 100))
	expect_refused "$IMG" 'virtual disk size'
}

@test "virtual disk size above 64 TiB" {
	vx "$IMG" set meta.vsize $(((1 << 46) + 4096))
	expect_refused "$IMG" 'virtual disk size'
}

@test "virtual disk size at 64 TiB is accepted by the size check (BAT too small)" {
	# 64 TiB is the largest legal size; with 1 MiB blocks it needs a
	# 513 MiB BAT, so the image must be refused for its BAT, not its size.
	vx "$IMG" set meta.vsize $((1 << 46))
	expect_refused "$IMG" 'BAT'
	refute_output --regexp '[Vv]irtual [Dd]isk [Ss]ize'
}

@test "BAT region too small for the geometry" {
	# 200 GiB with 1 MiB blocks needs 204800 entries; the BAT region holds
	# 1 MiB / 8 = 131072.
	vx "$IMG" set meta.vsize $((200 * 1024 * MiB))
	expect_refused "$IMG" 'BAT'
}

# ------------------------------------------------------ BAT (8)

@test "BAT entry with reserved bits set" {
	vx "$IMG" bat-set 1 $(($(vx "$IMG" bat-get 1) | 0x100))
	expect_refused "$IMG" 'BAT'
}

@test "BAT entry with invalid state 4" {
	vx "$IMG" bat-set 2 4
	expect_refused "$IMG" 'BAT'
}

@test "BAT entry pointing beyond the end of the file" {
	local eof
	eof=$(stat -c %s "$IMG")
	vx "$IMG" bat-set 2 $(((eof + 100 * MiB) & ~0xFFFFF | 6))
	expect_refused "$IMG" 'BAT'
}

@test "two BAT entries pointing at the same offset" {
	vx "$IMG" bat-set 2 "$(vx "$IMG" bat-get 0)"
	expect_refused "$IMG" 'BAT'
}

@test "BAT entry pointing into the header section" {
	vx "$IMG" bat-set 2 6
	expect_refused "$IMG" 'BAT.*header'
}

@test "BAT entry pointing into the log" {
	vx "$IMG" bat-set 2 $(($(vx "$IMG" get header1.logoffset) | 6))
	expect_refused "$IMG" 'BAT'
}

@test "BAT entry pointing into the BAT region" {
	vx "$IMG" bat-set 2 $(($(vx "$IMG" get regions.bat.offset) | 6))
	expect_refused "$IMG" 'BAT'
}

@test "BAT entry pointing into the metadata region" {
	vx "$IMG" bat-set 2 $(($(vx "$IMG" get regions.metadata.offset) | 6))
	expect_refused "$IMG" 'BAT'
}

@test "PARTIALLY_PRESENT payload block in a non-differencing image" {
	vx "$IMG" bat-set 0 $(($(vx "$IMG" bat-get 0) | 7))
	expect_refused "$IMG" 'BAT'
}

@test "sector bitmap entry present in a dynamic image" {
	# 5 GiB with 32 MiB blocks: chunk ratio 128, so BAT index 128 is the
	# sector-bitmap slot of chunk 0.  Point it at a fresh MiB inside the file.
	local img="$T/big.vhdx" eof
	mk_vhdx "$img" $((5 * GiB)) block_size=32M
	qio "$img" "write -P 0x33 $((4 * GiB + 4096)) 4096"
	[ "$(vx "$img" get meta.blocksize)" -eq $((32 * MiB)) ]
	eof=$(stat -c %s "$img")
	eof=$(((eof + MiB - 1) & ~0xFFFFF))
	truncate -s $((eof + MiB)) "$img"
	vx "$img" bat-set 128 $((eof | 6))
	expect_refused "$img" 'BAT|bitmap'
}

@test "file cut in the middle of the BAT" {
	# move the BAT region to the end of the file so that only the BAT is cut
	local eof
	eof=$(stat -c %s "$IMG")
	eof=$(((eof + MiB - 1) & ~0xFFFFF))
	vx "$IMG" region-move bat "$eof"
	qemu-img check -q -f vhdx "$IMG" # the moved layout is valid
	truncate -s $((eof + MiB / 2)) "$IMG"
	expect_refused "$IMG" 'BAT|truncat|end of file'
}

@test "file cut before the last payload block" {
	local last=0 i e
	while read -r i e; do
		if [ $((e & ~0xFFFFF)) -gt "$last" ]; then
			last=$((e & ~0xFFFFF))
		fi
	done < <(vx "$IMG" bat-find-present)
	[ "$last" -gt 0 ]
	truncate -s "$last" "$IMG"
	expect_refused "$IMG" 'BAT'
}

# ------------------------------------------------------ log (12.3-12.5)

@test "log GUID set, log area empty: opens as an empty log, with a warning" {
	vx "$IMG" set headers.logguid 2b9c6e0a-7d1f-4c3b-a5e4-9f8d7c6b5a49
	expect_opens "$IMG"
	cat "$T/vhdxfuse.log"
	grep -qi "log.*\(no valid entry\|empty\)" "$T/vhdxfuse.log"
}

# make_log_image IMAGE [vhdxedit log-entry options]: put a fresh block of
# random data after the end of the file and a log entry that maps payload
# block 2 to it (a BAT sector update), as a crash right after writing the
# log entry would leave it.  Leaves the new block's data in $T/newblock.
make_log_image() {
	local img=$1 eof bat
	shift
	eof=$(stat -c %s "$img")
	eof=$(((eof + MiB - 1) & ~0xFFFFF))
	head -c $MiB /dev/urandom >"$T/newblock"
	dd if="$T/newblock" of="$img" bs=1M seek=$((eof / MiB)) conv=notrunc \
		status=none
	bat=$(vx "$img" get regions.bat.offset)
	vx "$img" log-entry --target "$bat" --data-off 16 \
		--hexdata "$(le64 $((eof | 6)))" "$@"
}

@test "dirty log with one valid entry: replayed in memory, image unchanged" {
	make_log_image "$IMG"
	# oracle: qemu's own replay, on a copy
	cp "$IMG" "$T/replayed.vhdx"
	qemu-img check -q -r all "$T/replayed.vhdx" || true
	qemu_raw "$T/replayed.vhdx" "$T/replayed.raw"
	cmp -i $((2 * MiB)):0 -n $MiB "$T/replayed.raw" "$T/newblock"
	expect_opens "$IMG" "$T/replayed.raw"
}

@test "log entry with a bad checksum: no valid entry, opens as an empty log" {
	make_log_image "$IMG" --bad-crc
	# qemu opens it read-only because it finds no valid entry either
	qemu_raw "$IMG" "$T/qemu.raw"
	cmp "$T/qemu.raw" "$T/good.raw"
	expect_opens "$IMG"
	cat "$T/vhdxfuse.log"
	grep -qi "log.*\(no valid entry\|empty\)" "$T/vhdxfuse.log"
}

@test "dirty log whose entry claims a larger file (file truncated)" {
	local eof
	eof=$(stat -c %s "$IMG")
	make_log_image "$IMG" --flushed $(((eof + 16 * MiB) & ~0xFFFFF))
	# qemu refuses to replay it too
	cp "$IMG" "$T/copy.vhdx"
	run qemu-img check -r all "$T/copy.vhdx"
	[ "$status" -ne 0 ]
	expect_refused "$IMG" 'log'
}

@test "log entry whose Tail is not the start of an entry: refused" {
	# A valid entry, but its Tail names log offset 64 KiB where no entry of
	# its sequence starts: no complete sequence (section 12.4), so the log
	# cannot be replayed and the metadata on disk may be stale.
	make_log_image "$IMG" --tail $((64 * 1024))
	expect_refused "$IMG" 'log'
}

