#!/usr/bin/env bats
# vhdxtool: create, convert, info, check and repair.
#
# Oracles: qemu-img (check, info, compare, convert, and its own log replay),
# libvhdi's vhdimount, tests/lib/vhdxedit.py (an independent decoder of the
# on-disk structures) and the original data; never our own output.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"
source "$BATS_TEST_DIRNAME/lib/corpus.bash"

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
}

teardown() {
	common_teardown
}

# ------------------------------------------------------------ command line

@test "--help of the tool and of each command, exit codes documented" {
	local c
	run "$VHDXTOOL" --help
	assert_success
	assert_output --partial "Exit status:"
	for c in create convert info check; do
		assert_line --regexp "^  $c +[a-z]"
	done
	for c in create convert info check; do
		run "$VHDXTOOL" "$c" --help
		assert_success
		assert_output --partial "usage: vhdxtool $c"
		assert_output --partial "  3  check --repair: problems remain"
		run "$VHDXTOOL" help "$c"
		assert_success
		assert_output --partial "usage: vhdxtool $c"
	done
	run "$VHDXTOOL" --version
	assert_success
	assert_output --regexp '^vhdxtool [0-9]+\.[0-9]+'
}

@test "usage errors exit 1 with a message" {
	run "$VHDXTOOL"
	assert_failure 1
	run "$VHDXTOOL" frobnicate
	assert_failure 1
	assert_output --partial "unknown command 'frobnicate'"
	run "$VHDXTOOL" create "$T/a.vhdx"
	assert_failure 1
	assert_output --partial "size (-s SIZE) is required"
	run "$VHDXTOOL" create -s 1G --bogus "$T/a.vhdx"
	assert_failure 1
	assert_output --partial "invalid option or missing argument: --bogus"
	run "$VHDXTOOL" convert "$T/a"
	assert_failure 1
	run "$VHDXTOOL" info
	assert_failure 1
	run "$VHDXTOOL" check a b
	assert_failure 1
	[ ! -e "$T/a.vhdx" ]
	vt_no_temp "$T"
}

@test "the man page is clean groff; the completion file is valid bash" {
	require_cmd groff
	run groff -man -ww -z "$TOP_BUILDDIR/man/vhdxtool.1"
	assert_success
	assert_output ""
	bash -n "$TOP_SRCDIR/contrib/vhdxtool.bash-completion"
}

@test "bash completion completes commands, options and their values" {
	run bash -c 'shopt -s extglob
		source "$1"
		COMP_WORDS=(vhdxtool ch); COMP_CWORD=1; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool create --logical); COMP_CWORD=2; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool create -t ""); COMP_CWORD=3; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool check --r); COMP_CWORD=2; _vhdxtool
		echo "${COMPREPLY[*]}"' _ "$TOP_SRCDIR/contrib/vhdxtool.bash-completion"
	assert_success
	assert_line -n 0 "check"
	assert_line -n 1 "--logical-sector"
	assert_line -n 2 "dynamic fixed differencing"
	assert_line -n 3 "--repair"
}

# ------------------------------------------------------------------ create

@test "create refuses invalid combinations with a message, leaves nothing" {
	local img="$T/bad.vhdx"
	run "$VHDXTOOL" create -s 1G --logical-sector 4096 \
		--physical-sector 512 "$img"
	assert_failure 1
	assert_output --partial "physical sector size must not be smaller"
	run "$VHDXTOOL" create -s 1G --block-size 3M "$img"
	assert_failure 1
	assert_output --partial "power of two"
	run "$VHDXTOOL" create -s 1G --block-size 512K "$img"
	assert_failure 1
	run "$VHDXTOOL" create -s 1G --block-size 512M "$img"
	assert_failure 1
	run "$VHDXTOOL" create -s $((64 * 1024 * GiB + 512)) "$img"
	assert_failure 1
	assert_output --partial "64 TiB"
	run "$VHDXTOOL" create -s 1000 "$img"
	assert_failure 1
	assert_output --partial "multiple of the logical sector size"
	run "$VHDXTOOL" create -s 4098K --logical-sector 4096 "$img"
	assert_failure 1
	run "$VHDXTOOL" create -s 1G --logical-sector 1024 "$img"
	assert_failure 1
	run "$VHDXTOOL" create -s 1G --log-size 1500K "$img"
	assert_failure 1
	run "$VHDXTOOL" create -s 1X "$img"
	assert_failure 1
	assert_output --partial "invalid size '1X'"
	run "$VHDXTOOL" create -t sparse -s 1G "$img"
	assert_failure 1
	run "$VHDXTOOL" create -t differencing -s 1G "$img"
	assert_failure 1
	assert_output --partial "needs its parent (--parent PARENT)"
	[ ! -e "$img" ]
	vt_no_temp "$T"
}

@test "create: size suffixes K, M, G, T" {
	run "$VHDXTOOL" create -s 64T "$T/t.vhdx"
	assert_success
	[ "$(qemu_vsize "$T/t.vhdx")" -eq $((64 * 1024 * GiB)) ]
	run "$VHDXTOOL" create -s 3G "$T/g.vhdx"
	assert_success
	[ "$(qemu_vsize "$T/g.vhdx")" -eq $((3 * GiB)) ]
	run "$VHDXTOOL" create -s 5M "$T/m.vhdx"
	assert_success
	[ "$(qemu_vsize "$T/m.vhdx")" -eq $((5 * MiB)) ]
	run "$VHDXTOOL" create -s 4100k "$T/k.vhdx"
	assert_success
	[ "$(qemu_vsize "$T/k.vhdx")" -eq $((4100 * 1024)) ]
	run "$VHDXTOOL" create -s 2GiB "$T/gib.vhdx"
	assert_success
	[ "$(qemu_vsize "$T/gib.vhdx")" -eq $((2 * GiB)) ]
}

@test "create: an existing file is kept unless -f" {
	local img="$T/a.vhdx" before
	echo "precious" >"$img"
	before=$(sha256 "$img")
	run "$VHDXTOOL" create -s 1G "$img"
	assert_failure 1
	assert_output --partial "already exists"
	[ "$(sha256 "$img")" = "$before" ]
	run "$VHDXTOOL" create -f -s 1G "$img"
	assert_success
	qemu-img check -q -f vhdx "$img"
	[ "$(qemu_vsize "$img")" -eq "$GiB" ]
	vt_no_temp "$T"
}

@test "create lays the image out as Hyper-V does (read by vhdxedit.py)" {
	local img="$T/a.vhdx" n i e
	run "$VHDXTOOL" create -s $((5 * GiB)) --block-size 1M "$img"
	assert_success
	# creator string names vhdxfuse and its version
	python3 -c 'import sys; b = open(sys.argv[1], "rb").read(520)
s = b[8:].decode("utf-16-le").split("\0")[0]
print(s)' "$img" >"$T/creator"
	grep -qE '^vhdxfuse [0-9]+\.[0-9]+' "$T/creator"
	# both regions and every metadata item marked required
	[ "$(vx "$img" get regions.bat.required)" -eq 1 ]
	[ "$(vx "$img" get regions.metadata.required)" -eq 1 ]
	for i in fileparams vsize diskid lss pss; do
		[ $(($(vx "$img" get "meta.$i.flags") & 4)) -eq 4 ]
	done
	[ $(($(vx "$img" get meta.vsize.flags) & 2)) -eq 2 ]
	# every BAT entry 0 (NOT_PRESENT, offset 0), across the 4 GiB chunk
	n=$((5 * 1024 + 1))
	for i in 0 1 4095 4096 4097 $((n - 1)); do
		e=$(vx "$img" bat-get "$i")
		[ "$((e))" -eq 0 ] || { echo "entry $i = $e"; false; }
	done
	[ "$(vt_present_blocks "$img")" -eq 0 ]
	qemu-img check -q -f vhdx "$img"
}

@test "create: the page 83 id is random" {
	local a b
	"$VHDXTOOL" create -s 1G "$T/a.vhdx"
	"$VHDXTOOL" create -s 1G "$T/b.vhdx"
	id() {
		python3 -c 'import sys, uuid
sys.path.insert(0, sys.argv[2]); import vhdxedit
img = vhdxedit.Img(sys.argv[1])
print(uuid.UUID(bytes_le=img.read(img.meta_item_off("diskid"), 16)))' \
			"$1" "$TOP_SRCDIR/tests/lib"
	}
	a=$(id "$T/a.vhdx")
	b=$(id "$T/b.vhdx")
	echo "$a $b"
	[ "$a" != "$b" ]
	[ "$a" != 00000000-0000-0000-0000-000000000000 ]
	# and info reports that id
	[ "$("$VHDXTOOL" info --json "$T/a.vhdx" | jq -r .virtual_disk_id)" = "$a" ]
}

@test "create -t fixed: space allocated, every block FULLY_PRESENT" {
	local img="$T/f.vhdx" bs=$((2 * MiB)) size=$((61 * MiB)) n i e off
	run "$VHDXTOOL" create -t fixed -s $size --block-size $bs "$img"
	assert_success
	# fallocate'd: the file occupies at least the disk size
	[ $(($(stat -c %b "$img") * 512)) -ge $size ]
	[ "$(vx "$img" get meta.fileflags)" -eq 1 ]
	n=$(((size + bs - 1) / bs))
	[ "$(vt_present_blocks "$img")" -eq "$n" ]
	off=
	for i in $(seq 0 $((n - 1))); do
		e=$(vx "$img" bat-get "$i")
		[ $((e & 7)) -eq 6 ] || { echo "entry $i = $e"; false; }
		[ -z "$off" ] || [ $((e & ~0xFFFFF)) -eq $((off + bs)) ]
		off=$((e & ~0xFFFFF))
	done
	[ $((off + size - (n - 1) * bs)) -le "$(stat -c %s "$img")" ]
	qemu-img check -q -f vhdx "$img"
}

# create_matrix TYPE BLOCK_SIZE: for each sector size pair and size (for
# dynamic images also one past the 4 GiB chunk boundary), the image is
# accepted by qemu-img check (where qemu supports the variant), qemu-img
# info reports its size and block size, and vhdimount reads it as zeros;
# then it takes writes (qemu-io into the created image, and vhdxtool
# convert into one created the same way) and still passes both, reading as
# the data written.
create_matrix() {
	local type=$1 bs=$2 sectors size lss pss img raw sizes
	require_fuse
	require_cmd qemu-img qemu-io vhdimount jq
	mk_random_sources
	for sectors in 512/512 512/4096 4096/4096; do
		lss=${sectors%/*} pss=${sectors#*/}
		# a few MiB; and more than one block, the last one partial
		sizes="$((3 * MiB + 4096)) $((bs + 44 * MiB + 4096))"
		# past the first 4 GiB chunk (512-byte sectors; 32 GiB for 4096;
		# the physical sector size does not change the chunk)
		[ "$type" = dynamic ] && [ "$sectors" = 512/512 ] &&
			sizes="$sizes $((5 * GiB))"
		for size in $sizes; do
			echo "# $type bs=$bs sectors=$sectors size=$size" >&3
			img="$T/c.vhdx" raw="$T/c.raw"
			rm -f "$img" "$raw" "$T/w.vhdx"
			"$VHDXTOOL" create -t "$type" -s "$size" \
				--block-size "$bs" --logical-sector "$lss" \
				--physical-sector "$pss" "$img"
			truncate -s "$size" "$raw"
			vt_verify "$img" "$raw" "$bs" "$lss"
			# writes through the library: convert into a new image
			vt_mk_raw "$raw" "$size" "$bs"
			"$VHDXTOOL" convert -q -t "$type" --block-size "$bs" \
				--logical-sector "$lss" --physical-sector "$pss" \
				"$raw" "$T/w.vhdx"
			vt_verify "$T/w.vhdx" "$raw" "$bs" "$lss"
			"$VHDXTOOL" check -q "$T/w.vhdx"
			# writes by qemu into the image we created
			if [ "$lss" -eq 512 ]; then
				fill_patterns "$img" "$size" "$bs"
				qemu_raw "$img" "$raw"
				vt_verify "$img" "$raw" "$bs" "$lss"
				"$VHDXTOOL" check -q "$img"
			fi
		done
	done
}

@test "create matrix: dynamic, 1 MiB blocks" {
	create_matrix dynamic $MiB
}

@test "create matrix: dynamic, 2 MiB blocks" {
	create_matrix dynamic $((2 * MiB))
}

@test "create matrix: dynamic, 32 MiB blocks" {
	create_matrix dynamic $((32 * MiB))
}

@test "create matrix: dynamic, 256 MiB blocks" {
	create_matrix dynamic $((256 * MiB))
}

@test "create matrix: fixed, 1 MiB blocks" {
	create_matrix fixed $MiB
}

@test "create matrix: fixed, 2 MiB blocks" {
	create_matrix fixed $((2 * MiB))
}

@test "create matrix: fixed, 32 MiB blocks" {
	create_matrix fixed $((32 * MiB))
}

@test "create matrix: fixed, 256 MiB blocks" {
	create_matrix fixed $((256 * MiB))
}

# ----------------------------------------------------------------- convert

@test "convert: raw -> vhdx -> raw is byte-identical on an ext4 image" {
	require_cmd mkfs.ext4 qemu-img
	local raw="$T/fs.raw"
	mkdir "$T/files"
	python3 "$TOP_SRCDIR/tests/lib/mkfiles.py" "$T/files" 200 7
	truncate -s $((256 * MiB)) "$raw"
	mkfs.ext4 -q -F -d "$T/files" "$raw"
	run "$VHDXTOOL" convert "$raw" "$T/fs.vhdx"
	assert_success
	assert_output ""
	qemu-img check -q -f vhdx "$T/fs.vhdx"
	qemu-img compare -q -f vhdx -F raw "$T/fs.vhdx" "$raw"
	# smaller than the (sparse) raw
	[ "$(stat -c %s "$T/fs.vhdx")" -lt "$(stat -c %s "$raw")" ]
	run "$VHDXTOOL" convert "$T/fs.vhdx" "$T/back.raw"
	assert_success
	cmp "$raw" "$T/back.raw"
	# the raw output is sparse: no more space than the original uses
	[ "$(stat -c %b "$T/back.raw")" -le $(($(stat -c %b "$raw") + 2048)) ]
	vt_no_temp "$T"
}

@test "convert: random data round trip, zero blocks stay unallocated" {
	require_cmd qemu-img
	local raw="$T/r.raw" bs=$MiB n
	truncate -s $((40 * MiB)) "$raw"
	vt_dd_rand "$raw" 0 $((3 * MiB + 100))
	vt_dd_rand "$raw" $((10 * MiB - 1)) 2
	vt_dd_rand "$raw" $((40 * MiB - 4096)) 4096
	# written zeros (not a hole) in blocks 20-24
	head -c $((5 * MiB)) /dev/zero |
		dd of="$raw" bs=1M seek=20 conv=notrunc status=none
	n=$(vt_nonzero_blocks "$raw" $bs)
	[ "$n" -eq 7 ]
	run "$VHDXTOOL" convert --block-size 1M "$raw" "$T/r.vhdx"
	assert_success
	[ "$(vt_present_blocks "$T/r.vhdx")" -eq "$n" ]
	qemu-img check -q -f vhdx "$T/r.vhdx"
	qemu-img compare -q -f vhdx -F raw "$T/r.vhdx" "$raw"
	[ "$(stat -c %s "$T/r.vhdx")" -lt "$(stat -c %s "$raw")" ]
	run "$VHDXTOOL" convert "$T/r.vhdx" "$T/back.raw"
	assert_success
	cmp "$raw" "$T/back.raw"
	# the zero blocks are holes in the raw output
	[ "$(stat -c %b "$T/back.raw")" -lt $((10 * 2048)) ]
}

@test "convert: fixed output, 4096-byte sectors, round trip" {
	require_fuse
	require_cmd vhdimount
	local raw="$T/r.raw"
	vt_mk_raw "$raw" $((100 * MiB)) $((8 * MiB))
	run "$VHDXTOOL" convert -t fixed --block-size 8M --logical-sector 4096 \
		"$raw" "$T/r.vhdx"
	assert_success
	[ "$(vx "$T/r.vhdx" get meta.fileflags)" -eq 1 ]
	[ "$(vx "$T/r.vhdx" get meta.lss)" -eq 4096 ]
	vt_verify "$T/r.vhdx" "$raw" $((8 * MiB)) 4096
	run "$VHDXTOOL" convert "$T/r.vhdx" "$T/back.raw"
	assert_success
	cmp "$raw" "$T/back.raw"
}

@test "convert: vhdx -> raw matches qemu-img's conversion of qemu's image" {
	require_cmd qemu-img qemu-io
	local img="$T/q.vhdx" size=$((5 * GiB + 3 * MiB)) bs=$((2 * MiB))
	mk_vhdx "$img" $size block_size=2M
	fill_patterns "$img" $size $bs
	qemu_raw "$img" "$T/qemu.raw"
	run "$VHDXTOOL" convert "$img" "$T/ours.raw"
	assert_success
	cmp "$T/qemu.raw" "$T/ours.raw"
	[ "$(stat -c %b "$T/ours.raw")" -lt $((64 * 2048)) ]
}

@test "convert: vhdx -> vhdx keeps the geometry unless told" {
	require_cmd qemu-img qemu-io
	local img="$T/q.vhdx" size=$((300 * MiB))
	mk_vhdx "$img" $size block_size=2M
	fill_patterns "$img" $size $((2 * MiB))
	qemu_raw "$img" "$T/qemu.raw"
	run "$VHDXTOOL" convert -O vhdx "$img" "$T/same.vhdx"
	assert_success
	[ "$(vx "$T/same.vhdx" get meta.blocksize)" -eq $((2 * MiB)) ]
	qemu-img compare -q -f vhdx -F raw "$T/same.vhdx" "$T/qemu.raw"
	run "$VHDXTOOL" convert -O vhdx --block-size 64M "$img" "$T/big.vhdx"
	assert_success
	[ "$(vx "$T/big.vhdx" get meta.blocksize)" -eq $((64 * MiB)) ]
	qemu-img check -q -f vhdx "$T/big.vhdx"
	qemu-img compare -q -f vhdx -F raw "$T/big.vhdx" "$T/qemu.raw"
}

@test "convert: a raw size that is not a sector multiple is padded" {
	require_cmd qemu-img
	head -c 5000 /dev/urandom >"$T/odd.raw"
	run "$VHDXTOOL" convert "$T/odd.raw" "$T/odd.vhdx"
	assert_success
	assert_output --partial "padded with zeros to 5120 bytes"
	[ "$(qemu_vsize "$T/odd.vhdx")" -eq 5120 ]
	qemu_raw "$T/odd.vhdx" "$T/back.raw"
	cmp -n 5000 "$T/odd.raw" "$T/back.raw"
	[ "$(tail -c 120 "$T/back.raw" | tr -d '\0' | wc -c)" -eq 0 ]
}

@test "convert: refuses an existing OUT without -f; -f replaces it" {
	local before
	head -c $MiB /dev/urandom >"$T/in.raw"
	echo "precious" >"$T/out.vhdx"
	before=$(sha256 "$T/out.vhdx")
	run "$VHDXTOOL" convert "$T/in.raw" "$T/out.vhdx"
	assert_failure 1
	assert_output --partial "already exists"
	[ "$(sha256 "$T/out.vhdx")" = "$before" ]
	run "$VHDXTOOL" convert -f "$T/in.raw" "$T/out.vhdx"
	assert_success
	qemu-img compare -q -f vhdx -F raw "$T/out.vhdx" "$T/in.raw"
	vt_no_temp "$T"
}

@test "convert: VHDX-only options are refused for raw output" {
	head -c $MiB /dev/urandom >"$T/in.raw"
	"$VHDXTOOL" convert "$T/in.raw" "$T/in.vhdx"
	run "$VHDXTOOL" convert --block-size 1M "$T/in.vhdx" "$T/out.raw"
	assert_failure 1
	[ ! -e "$T/out.raw" ]
	vt_no_temp "$T"
}

@test "convert: a damaged input exits 2 and writes nothing" {
	mk_vhdx "$T/bad.vhdx" $((64 * MiB))
	vx "$T/bad.vhdx" set headers.version 2
	run "$VHDXTOOL" convert "$T/bad.vhdx" "$T/out.raw"
	assert_failure 2
	assert_output --partial "version"
	[ ! -e "$T/out.raw" ]
	run "$VHDXTOOL" convert "$T/missing.raw" "$T/out.vhdx"
	assert_failure 4
	[ ! -e "$T/out.vhdx" ]
	vt_no_temp "$T"
}

@test "convert: running out of space leaves no OUT and no temporary file" {
	require_root
	mkdir "$T/small"
	mount -t tmpfs -o size=4M tmpfs "$T/small"
	track_fsmount "$T/small"
	head -c $((16 * MiB)) /dev/urandom >"$T/in.raw"
	run "$VHDXTOOL" convert "$T/in.raw" "$T/small/out.vhdx"
	assert_failure 4
	assert_output --partial "No space left"
	[ -z "$(ls -A "$T/small")" ]
	run "$VHDXTOOL" convert -O raw "$T/in.raw" "$T/small/out.raw"
	assert_failure 4
	[ -z "$(ls -A "$T/small")" ]
}

@test "progress: shown on a terminal, not with -q, not into a pipe" {
	require_cmd script
	truncate -s $((64 * MiB)) "$T/in.raw"
	vt_dd_rand "$T/in.raw" 0 $MiB
	run "$VHDXTOOL" convert "$T/in.raw" "$T/a.vhdx"
	assert_success
	assert_output ""
	script -qec "'$VHDXTOOL' convert '$T/in.raw' '$T/b.vhdx'" \
		/dev/null >"$T/tty.out"
	grep -q "converting:" "$T/tty.out"
	script -qec "'$VHDXTOOL' convert -q '$T/in.raw' '$T/c.vhdx'" \
		/dev/null >"$T/tty-q.out"
	! grep -q "converting" "$T/tty-q.out"
	script -qec "'$VHDXTOOL' check '$T/b.vhdx'" /dev/null >"$T/tty-c.out"
	grep -q "checking:" "$T/tty-c.out"
}

# -------------------------------------------------------------------- info

@test "info --json: geometry agrees with qemu-img info, keys are stable" {
	require_cmd jq qemu-img qemu-io
	local img="$T/q.vhdx" j q
	mk_vhdx "$img" $((100 * MiB + 4096)) block_size=8M
	qio "$img" "write -P 0x11 0 1M" "write -P 0x22 50M 1M"
	j=$("$VHDXTOOL" info --json "$img")
	q=$(qemu-img info --output=json -f vhdx "$img")
	[ "$(jq .virtual_size <<<"$j")" -eq "$(jq '."virtual-size"' <<<"$q")" ]
	[ "$(jq .block_size <<<"$j")" -eq "$(jq '."cluster-size"' <<<"$q")" ]
	[ "$(jq -r .type <<<"$j")" = dynamic ]
	[ "$(jq -r .format <<<"$j")" = vhdx ]
	jq -e '.creator | startswith("QEMU")' <<<"$j"
	[ "$(jq .file_size <<<"$j")" -eq "$(stat -c %s "$img")" ]
	[ "$(jq .bat.payload_states.fully_present <<<"$j")" -eq \
		"$(vt_present_blocks "$img")" ]
	[ "$(jq .allocated_bytes <<<"$j")" -eq $((2 * 8 * MiB)) ]
	[ "$(jq .headers[0].sequence <<<"$j")" -eq \
		"$(vx "$img" get header1.seq)" ]
	[ "$(jq .headers[1].sequence <<<"$j")" -eq \
		"$(vx "$img" get header2.seq)" ]
	[ "$(jq -r .headers[0].data_write_guid <<<"$j")" = \
		"$(vx "$img" get header1.datawriteguid | tr A-Z a-z)" ]
	[ "$(jq .region_table.entries[0].offset <<<"$j")" -eq \
		"$(vx "$img" get regions.bat.offset)" ]
	[ "$(jq '.metadata.items | length' <<<"$j")" -eq \
		"$(vx "$img" get meta.count)" ]
	jq -e '.log.dirty == false and .log.active_sequence == null' <<<"$j"
	jq -e '.parent_locator == null' <<<"$j"
	jq -e 'has("filename") and has("logical_sector_size")
		and has("physical_sector_size") and has("virtual_disk_id")
		and has("file_allocated_bytes") and has("current_header")
		and (.bat | has("chunk_ratio") and has("sector_bitmap_blocks"))
		and (.region_table | has("copies_identical"))' <<<"$j"
	# the text form carries the same facts
	run "$VHDXTOOL" info "$img"
	assert_success
	assert_output --partial "virtual size:         $((100 * MiB + 4096)) bytes"
	assert_output --partial "FULLY_PRESENT 2"
}

@test "info --json on the corpus dirty-log images: log state as MANIFEST says" {
	require_cmd jq
	local f img j
	for f in qemu-iotest-dirtylog-10G-4M discutils-vhdx-log-replay; do
		unpack "$f.vhdx.xz"
		img=$IMG
		j=$("$VHDXTOOL" info --json "$img")
		jq -e '.log.dirty and .log.replayed' <<<"$j"
		# MANIFEST: "dirty (LogGuid G; active sequence [S1, S2...])"
		manifest_field "$f.vhdx.xz" log_state >"$T/state"
		cat "$T/state"
		grep -qi "$(jq -r .log.guid <<<"$j")" "$T/state"
		grep -q "\[$(jq .log.active_sequence.first <<<"$j" |
			cut -c1-15)" "$T/state"
	done
}

# ------------------------------------------------------------------- check

# mk_check_base: $T/img.vhdx made by qemu-img (40 MiB, 1 MiB blocks, data
# in blocks 0, 1, 5 and 39); $T/good.raw is qemu's view of it.
mk_check_base() {
	require_cmd qemu-img qemu-io python3
	mk_random_sources
	mk_vhdx "$T/img.vhdx" $((40 * MiB)) block_size=1M
	qio "$T/img.vhdx" "write -s $T/rand1 0 $((MiB + 4096))" \
		"write -s $T/rand2 $((5 * MiB + 1000)) 70000" \
		"write -P 0x5a $((40 * MiB - 8192)) 8192"
	qemu_raw "$T/img.vhdx" "$T/good.raw"
	IMG=$T/img.vhdx
}

# repair_ok IMAGE REGEX: check --repair exits 0, says what it changed
# (matching REGEX); afterwards qemu-img check agrees and the disk reads as
# $T/good.raw.
repair_ok() {
	run "$VHDXTOOL" check --repair "$1"
	echo "$output"
	assert_success
	assert_output --regexp "$2"
	assert_output --partial "the image is clean"
	qemu-img check -q -f vhdx "$1"
	qemu_raw "$1" "$T/after.raw"
	cmp "$T/after.raw" "$T/good.raw"
}

@test "check: clean images exit 0 without writing" {
	local before
	mk_check_base
	vt_expect_check "$IMG" 0 "no problems found"
	"$VHDXTOOL" create -s 10G "$T/new.vhdx"
	vt_expect_check "$T/new.vhdx" 0 "no problems found"
	# --repair with nothing to repair writes nothing either
	before=$(sha256 "$IMG")
	run "$VHDXTOOL" check --repair "$IMG"
	assert_success
	[ "$(sha256 "$IMG")" = "$before" ]
}

@test "check: header 1 damaged: reported, repair rewrites it" {
	mk_check_base
	vx "$IMG" badcrc header1
	vt_expect_check "$IMG" 2 "problem: header 1 .*damaged"
	assert_output --partial "run with --repair"
	repair_ok "$IMG" "repaired: rewrote both headers"
	[ "$(vt_headers_valid "$IMG")" = "True True" ]
}

@test "check: header 2 damaged: reported, repair rewrites it" {
	mk_check_base
	vx "$IMG" badcrc header2
	vt_expect_check "$IMG" 2 "problem: header 2 .*damaged"
	repair_ok "$IMG" "repaired: rewrote both headers"
	[ "$(vt_headers_valid "$IMG")" = "True True" ]
}

@test "check: region table 1 damaged: reported, repair restores it" {
	mk_check_base
	dd if="$IMG" of="$T/rt2" bs=64K skip=4 count=1 status=none
	vx "$IMG" badcrc region1
	vt_expect_check "$IMG" 2 "problem: region table 1 .*damaged"
	repair_ok "$IMG" "repaired: rewrote region table 1"
	dd if="$IMG" of="$T/rt1" bs=64K skip=3 count=1 status=none
	cmp "$T/rt1" "$T/rt2"
}

@test "check: region table 2 damaged: reported, repair restores it" {
	mk_check_base
	dd if="$IMG" of="$T/rt1" bs=64K skip=3 count=1 status=none
	vx "$IMG" badcrc region2
	vt_expect_check "$IMG" 2 "problem: region table 2 .*damaged"
	repair_ok "$IMG" "repaired: rewrote region table 2"
	dd if="$IMG" of="$T/rt2" bs=64K skip=4 count=1 status=none
	cmp "$T/rt1" "$T/rt2"
}

@test "check: region table copies differ: reported, repair copies table 1" {
	mk_check_base
	dd if="$IMG" of="$T/rt1" bs=64K skip=3 count=1 status=none
	# table 2 keeps only its first entry (valid checksum, other content)
	vx "$IMG" set region2.count 1
	vt_expect_check "$IMG" 2 "problem: the two region table copies differ"
	repair_ok "$IMG" "repaired: rewrote region table 2"
	dd if="$IMG" of="$T/rt2" bs=64K skip=4 count=1 status=none
	cmp "$T/rt1" "$T/rt2"
}

@test "check: dirty log: reported, repair replays it as qemu does" {
	local eof bat
	mk_check_base
	eof=$(stat -c %s "$IMG")
	eof=$(((eof + MiB - 1) & ~0xFFFFF))
	head -c $MiB /dev/urandom >"$T/newblock"
	dd if="$T/newblock" of="$IMG" bs=1M seek=$((eof / MiB)) \
		conv=notrunc status=none
	bat=$(vx "$IMG" get regions.bat.offset)
	# log entry: BAT entry 2 -> the new block
	vx "$IMG" log-entry --target "$bat" --data-off 16 \
		--hexdata "$(le64 $((eof | 6)))"
	cp "$IMG" "$T/qemu.vhdx"
	qemu-img check -q -r all "$T/qemu.vhdx" || true
	qemu_raw "$T/qemu.vhdx" "$T/good.raw"
	cmp -i $((2 * MiB)):0 -n $MiB "$T/good.raw" "$T/newblock"
	vt_expect_check "$IMG" 2 "problem: the log is dirty"
	repair_ok "$IMG" "repaired: replayed the log"
	[ "$(vx "$IMG" get header1.logguid)" = \
		00000000-0000-0000-0000-000000000000 ]
	[ "$(vx "$IMG" get header2.logguid)" = \
		00000000-0000-0000-0000-000000000000 ]
}

@test "check: LogGuid set over an empty log: reported, repair clears it" {
	mk_check_base
	vx "$IMG" set headers.logguid 2b9c6e0a-7d1f-4c3b-a5e4-9f8d7c6b5a49
	vt_expect_check "$IMG" 2 "problem: LogGuid .* no valid entry"
	repair_ok "$IMG" "repaired"
	[ "$(vx "$IMG" get header1.logguid)" = \
		00000000-0000-0000-0000-000000000000 ]
}

@test "check: free space at the end: counted as free; repair truncates it" {
	local size
	mk_check_base
	size=$(stat -c %s "$IMG")
	truncate -s $((size + 3 * MiB)) "$IMG"
	vt_expect_check "$IMG" 0 "no problems found \(0 warnings\); free space: [0-9]+ bytes in [0-9]+ place"
	run "$VHDXTOOL" check -v "$IMG"
	assert_output --regexp "$((3 * MiB)) bytes at the end of the file .* are free"
	refute_output --partial "leaked"
	run "$VHDXTOOL" check --repair "$IMG"
	assert_success
	assert_output --partial "repaired: truncated $((3 * MiB)) bytes"
	[ "$(stat -c %s "$IMG")" -eq "$size" ]
	qemu-img check -q -f vhdx "$IMG"
	qemu_raw "$IMG" "$T/after.raw"
	cmp "$T/after.raw" "$T/good.raw"
}

@test "check: a BAT entry with an offset but no block: a warning" {
	mk_check_base
	vx "$IMG" bat-set 10 $((64 * MiB))
	vt_expect_check "$IMG" 0 "warning: 1 BAT entry without a block"
}

# check_unrepairable IMAGE STATUS_CHECK REGEX: check reports it (exit 2),
# --repair cannot fix it (exit 3); neither writes.
check_unrepairable() {
	local before
	vt_expect_check "$1" 2 "$2"
	before=$(sha256 "$1")
	run "$VHDXTOOL" check --repair "$1"
	echo "$output"
	assert_failure 3
	[ "$(sha256 "$1")" = "$before" ]
}

@test "check: overlapping metadata items: reported, not repairable" {
	local off
	mk_check_base
	off=$(vx "$IMG" get meta.fileparams.offset)
	vx "$IMG" meta-add 4a1e7c33-2b6d-4f0e-8d9c-1a2b3c4d5e6f \
		$((off + 4)) 16 0
	check_unrepairable "$IMG" "problem: metadata items .* overlap"
}

@test "check: two BAT entries pointing at the same block" {
	mk_check_base
	vx "$IMG" bat-set 3 "$(vx "$IMG" bat-get 0)"
	check_unrepairable "$IMG" "problem: .*(overlap|both point)"
}

@test "check: BAT entry beyond the end of the file" {
	mk_check_base
	vx "$IMG" bat-set 3 $(((1024 * MiB) | 6))
	check_unrepairable "$IMG" "problem: BAT.*(outside the file|end of the file)"
}

@test "check: BAT entry pointing into the metadata region" {
	mk_check_base
	vx "$IMG" bat-set 3 $(($(vx "$IMG" get regions.metadata.offset) | 6))
	check_unrepairable "$IMG" "problem: BAT.*metadata"
}

@test "check: damage that open refuses is reported with exit 2" {
	mk_check_base
	cp "$IMG" "$T/base.vhdx"
	vx "$IMG" set fileid.signature ascii:vhdxfilX
	check_unrepairable "$IMG" "problem: .*not a VHDX image"
	cp "$T/base.vhdx" "$IMG"
	vx "$IMG" badcrc header1
	vx "$IMG" badcrc header2
	check_unrepairable "$IMG" "problem: header"
	cp "$T/base.vhdx" "$IMG"
	vx "$IMG" region-add 6f3c2a15-8d4e-4b7a-9c01-5e2f3a4b5c6d \
		$((64 * MiB)) $MiB 1
	check_unrepairable "$IMG" "problem: .*6f3c2a15.*required"
	cp "$T/base.vhdx" "$IMG"
	vx "$IMG" set meta.vsize $((40 * MiB + 100))
	check_unrepairable "$IMG" "problem: metadata.*multiple"
	cp "$T/base.vhdx" "$IMG"
	vx "$IMG" set meta.blocksize $((3 * MiB))
	check_unrepairable "$IMG" "problem: metadata.*power of two"
	cp "$T/base.vhdx" "$IMG"
	truncate -s $(($(stat -c %s "$IMG") - MiB)) "$IMG"
	check_unrepairable "$IMG" "problem: .*(truncated|end of the file)"
}

@test "check: a missing file or a directory is an operational failure" {
	run "$VHDXTOOL" check "$T/nothing.vhdx"
	assert_failure 4
	run "$VHDXTOOL" check "$T"
	assert_failure 4
}

@test "check: the clean corpus images pass" {
	local f n=0
	require_corpus
	for f in "$CORPUS"/*.vhdx.xz; do
		f=$(basename "$f")
		case $f in *dirtylog* | *log-replay*) continue ;; esac
		unpack "$f"
		vt_expect_check "$IMG" 0 "no problems found"
		rm -f "$IMG"
		n=$((n + 1))
	done
	[ "$n" -ge 5 ]
}

@test "check --repair replays the corpus dirty logs as qemu does" {
	require_cmd qemu-img
	local f img want
	for f in qemu-iotest-dirtylog-10G-4M discutils-vhdx-log-replay; do
		unpack "$f.vhdx.xz"
		img=$IMG
		# qemu refuses to read it before a replay
		run qemu-img check -f vhdx "$img"
		assert_failure
		vt_expect_check "$img" 2 "problem: the log is dirty"
		run "$VHDXTOOL" check --repair "$img"
		echo "$output"
		assert_success
		assert_output --partial "repaired: replayed the log"
		qemu-img check -q -f vhdx "$img"
		want=$(manifest_field "$f.vhdx.xz" raw_sha256_qemu)
		qemu_raw "$img" "$T/replayed.raw"
		[ "$(fast_sha256 "$T/replayed.raw")" = "$want" ]
		rm -f "$T/replayed.raw"
		# and it is clean for us too, without further changes
		vt_expect_check "$img" 0 "no problems found"
	done
}

@test "check --repair refuses an image that is mounted" {
	require_fuse
	[ -x "$VHDXFUSE" ] || skip "vhdxfuse not built"
	local before
	mk_check_base
	vx "$IMG" set headers.logguid 2b9c6e0a-7d1f-4c3b-a5e4-9f8d7c6b5a49
	mkdir "$T/mnt"
	vf_mount "$IMG" "$T/mnt" -o ro
	before=$(sha256 "$IMG")
	run "$VHDXTOOL" check --repair "$IMG"
	echo "$output"
	assert_failure 4
	assert_output --partial "in use"
	vf_umount "$T/mnt"
	[ "$(sha256 "$IMG")" = "$before" ]
}
