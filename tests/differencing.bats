#!/usr/bin/env bats
# Differencing images: chains made with vhdxtool create -t differencing,
# read and written through vhdxfuse, merged with vhdxtool merge, and the
# ways a parent is found or refused (fmt §11).
#
# Oracles: raw references that get the same seeded writes as the mounted
# disks (tests/lib/diff-writes.py), libvhdi's vhdimount and vhdiinfo, and
# tests/lib/vhdxedit.py's own decoding of the structures.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"
source "$BATS_TEST_DIRNAME/lib/diff-lib.bash"

source "$BATS_TEST_DIRNAME/lib/corpus.bash"
CKPT_PARENT='Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx'

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_fuse
	require_cmd python3
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# ------------------------------------------------------------------ create

@test "create -t differencing: locator paths and linkage, parent's geometry" {
	require_cmd jq vhdiinfo
	mkdir -p "$T/base" "$T/kids"
	"$VHDXTOOL" create -s 48M --logical-sector 4096 --physical-sector 4096 \
		"$T/base/p.vhdx"
	run "$VHDXTOOL" create -t differencing --parent "$T/base/p.vhdx" \
		"$T/kids/c.vhdx"
	assert_success
	vt_no_temp "$T/kids"
	local real j
	real=$(realpath "$T/base/p.vhdx")
	# the locator, decoded by vhdxedit.py
	assert_equal "$(dl_locator "$T/kids/c.vhdx" relative_path)" \
		'..\base\p.vhdx'
	assert_equal "$(dl_locator "$T/kids/c.vhdx" absolute_win32_path)" \
		"${real//\//\\}"
	assert_equal "$(dl_locator "$T/kids/c.vhdx" parent_linkage)" \
		"{$(dl_dwg "$T/base/p.vhdx")}"
	# libvhdi reads it as a differencing image of the parent
	run vhdiinfo "$T/kids/c.vhdx"
	assert_success
	assert_output --regexp 'Disk type[[:space:]]*: Differential'
	assert_output --regexp "Parent identifier[[:space:]]*: $(dl_dwg "$T/base/p.vhdx")"
	assert_output --partial "Parent filename		: ${real//\//\\}"
	# geometry: the parent's size and sectors, 2 MiB blocks, its disk id
	j=$("$VHDXTOOL" info --json "$T/kids/c.vhdx")
	[ "$(jq -r .type <<<"$j")" = differencing ]
	[ "$(jq .virtual_size <<<"$j")" -eq $((48 * MiB)) ]
	[ "$(jq .logical_sector_size <<<"$j")" -eq 4096 ]
	[ "$(jq .physical_sector_size <<<"$j")" -eq 4096 ]
	[ "$(jq .block_size <<<"$j")" -eq $((2 * MiB)) ]
	[ "$(jq -r .virtual_disk_id <<<"$j")" = \
		"$("$VHDXTOOL" info --json "$T/base/p.vhdx" | jq -r .virtual_disk_id)" ]
	# a parent in the same directory is named by its file name alone
	run "$VHDXTOOL" create --parent "$T/kids/c.vhdx" --block-size 1M \
		"$T/kids/g.vhdx"
	assert_success
	assert_equal "$(dl_locator "$T/kids/g.vhdx" relative_path)" 'c.vhdx'
	[ "$("$VHDXTOOL" info --json "$T/kids/g.vhdx" | jq .block_size)" -eq $MiB ]
	# the parents were only read
	run "$VHDXTOOL" check "$T/kids/g.vhdx"
	assert_success
}

@test "create -t differencing: usage errors, missing or damaged parents" {
	"$VHDXTOOL" create -s 32M "$T/p.vhdx"
	local before
	before=$(sha256 "$T/p.vhdx")
	run "$VHDXTOOL" create -t differencing "$T/c.vhdx"
	assert_failure 1
	assert_output --partial "needs its parent (--parent PARENT)"
	run "$VHDXTOOL" create -t fixed --parent "$T/p.vhdx" "$T/c.vhdx"
	assert_failure 1
	assert_output --partial "--parent goes with -t differencing only"
	run "$VHDXTOOL" create --parent "$T/p.vhdx" -s 64M "$T/c.vhdx"
	assert_failure 1
	assert_output --partial "parent's size"
	run "$VHDXTOOL" create --parent "$T/p.vhdx" -s 32M \
		--logical-sector 4096 "$T/c.vhdx"
	assert_failure 1
	assert_output --partial "parent's sector sizes"
	run "$VHDXTOOL" create --parent "$T/nothere.vhdx" "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "nothere.vhdx"
	head -c 2M /dev/zero >"$T/raw.img"
	run "$VHDXTOOL" create --parent "$T/raw.img" "$T/c.vhdx"
	assert_failure 2
	assert_output --partial "not a VHDX image"
	# -f must not replace the parent by its own child
	run "$VHDXTOOL" create -f --parent "$T/p.vhdx" "$T/p.vhdx"
	assert_failure 1
	assert_output --partial "is the parent of the new image's chain"
	# convert writes no differencing images
	run "$VHDXTOOL" convert -t differencing "$T/raw.img" "$T/c.vhdx"
	assert_failure 1
	run "$VHDXTOOL" convert --parent "$T/p.vhdx" "$T/raw.img" "$T/c.vhdx"
	assert_failure 1
	[ ! -e "$T/c.vhdx" ]
	vt_no_temp "$T"
	assert_equal "$(sha256 "$T/p.vhdx")" "$before"
}

@test "create: a parent mounted read-write is refused, read-only is fine" {
	"$VHDXTOOL" create -s 32M "$T/p.vhdx"
	vf_mount "$T/p.vhdx" "$T/mnt"
	run "$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "in use"
	[ ! -e "$T/c.vhdx" ]
	vf_umount "$T/mnt"
	vf_mount "$T/p.vhdx" "$T/mnt" -o ro
	run "$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	assert_success
	vf_umount "$T/mnt"
	vt_no_temp "$T"
}

# ----------------------------------------------------- chains through FUSE

# A chain of three written at every level: vhdxfuse and vhdimount show
# each level as its reference, convert flattens it, check passes.
chain_of_three() {
	local lss=$1 t0=$SECONDS
	require_cmd vhdimount
	dl_build_chain "$lss"
	echo "# built and wrote the chain in $((SECONDS - t0)) s" >&3
	dl_expect "$T/c/l0.vhdx" "$T/ref0"
	dl_expect "$T/c/l1.vhdx" "$T/ref1"
	dl_expect "$T/c/l2.vhdx" "$T/ref2"
	dl_vhdi "$T/c/l0.vhdx" "$T/ref0"
	dl_vhdi "$T/c/l1.vhdx" "$T/ref0" "$T/ref1"
	dl_vhdi "$T/c/l2.vhdx" "$T/ref0" "$T/ref1" "$T/ref2"
	# vhdxtool reads the chain too: convert flattens it to raw
	run "$VHDXTOOL" convert -q "$T/c/l2.vhdx" "$T/flat.raw"
	assert_success
	cmp "$T/flat.raw" "$T/ref2"
	run "$VHDXTOOL" check "$T/c/l2.vhdx"
	assert_success
	# a child records only BAT changes: no sector bitmap was written
	[ "$("$VHDXTOOL" info --json "$T/c/l2.vhdx" |
		jq .bat.payload_states.partially_present)" -eq 0 ]
}

@test "a chain of three, 512-byte sectors: every level reads as written" {
	require_cmd jq
	chain_of_three 512
}

@test "a chain of three, 4096-byte sectors: every level reads as written" {
	require_cmd jq
	chain_of_three 4096
}

# merge the top of the chain into its parent, then that into the base
merge_chain() {
	local lss=$1 want s0 s2
	require_cmd vhdimount
	dl_build_chain "$lss"
	want=$(dl_exposed_sha "$T/c/l2.vhdx")
	assert_equal "$want" "$(sha256 "$T/ref2")"
	s0=$(sha256 "$T/c/l0.vhdx")
	s2=$(sha256 "$T/c/l2.vhdx")
	run "$VHDXTOOL" merge "$T/c/l2.vhdx"
	assert_success
	assert_output --partial "merged into $T/c/l1.vhdx"
	assert_output --partial "now stale"
	# the parent shows what the child showed
	assert_equal "$(dl_exposed_sha "$T/c/l1.vhdx")" "$want"
	dl_vhdi "$T/c/l1.vhdx" "$T/ref0" "$T/ref2"
	run "$VHDXTOOL" check "$T/c/l1.vhdx"
	assert_success
	# the base and the child were not written; the child is stale now
	assert_equal "$(sha256 "$T/c/l0.vhdx")" "$s0"
	assert_equal "$(sha256 "$T/c/l2.vhdx")" "$s2"
	vf_start "$T/c/l2.vhdx" "$T/mnt" -o ro
	[ "$status" -eq 32 ]
	assert_output --partial "linkage mismatch"
	assert_not_mounted "$T/mnt"
	# once more, down to the base
	run "$VHDXTOOL" merge -q "$T/c/l1.vhdx"
	assert_success
	assert_output ""
	assert_equal "$(dl_exposed_sha "$T/c/l0.vhdx")" "$want"
	dl_vhdi "$T/c/l0.vhdx" "$T/ref2"
	run "$VHDXTOOL" check "$T/c/l0.vhdx"
	assert_success
}

@test "merge, 512-byte sectors: the parent then shows what the child showed" {
	merge_chain 512
}

@test "merge, 4096-byte sectors: the parent then shows what the child showed" {
	merge_chain 4096
}

@test "merge: refusals; a child with nothing of its own leaves the parent alone" {
	"$VHDXTOOL" create -s 32M "$T/p.vhdx"
	"$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	local sp sc
	sp=$(sha256 "$T/p.vhdx")
	sc=$(sha256 "$T/c.vhdx")
	run "$VHDXTOOL" merge "$T/p.vhdx"
	assert_failure 1
	assert_output --partial "not a differencing image"
	run "$VHDXTOOL" merge
	assert_failure 1
	run "$VHDXTOOL" merge "$T/nothere.vhdx"
	assert_failure 4
	# a mounted child (its parent is locked shared) or parent
	vf_mount "$T/c.vhdx" "$T/mnt" -o ro
	run "$VHDXTOOL" merge "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "in use"
	vf_umount "$T/mnt"
	vf_mount "$T/c.vhdx" "$T/mnt"
	run "$VHDXTOOL" merge "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "in use"
	vf_umount "$T/mnt"
	vf_mount "$T/p.vhdx" "$T/mnt" -o ro
	run "$VHDXTOOL" merge "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "in use"
	vf_umount "$T/mnt"
	assert_equal "$(sha256 "$T/p.vhdx")" "$sp"
	# nothing to merge: the parent is not written, the child stays valid
	run "$VHDXTOOL" merge "$T/c.vhdx"
	assert_success
	assert_output --partial "the parent did not change"
	assert_equal "$(sha256 "$T/p.vhdx")" "$sp"
	assert_equal "$(sha256 "$T/c.vhdx")" "$sc"
	run "$VHDXTOOL" check "$T/c.vhdx"
	assert_success
	# --parent names the parent explicitly (still checked)
	mv "$T/p.vhdx" "$T/moved.vhdx"
	run "$VHDXTOOL" merge "$T/c.vhdx"
	assert_failure 4
	run "$VHDXTOOL" merge --parent "$T/moved.vhdx" "$T/c.vhdx"
	assert_success
	run "$VHDXTOOL" merge --help
	assert_success
	assert_output --partial "usage: vhdxtool merge"
	assert_output --partial "Exit status:"
	run "$VHDXTOOL" --help
	assert_line --regexp '^  merge +fold a differencing image'
}

# ------------------------------------------------------ finding the parent

@test "a child whose parent was written after it was made is refused" {
	"$VHDXTOOL" create -s 32M "$T/p.vhdx"
	"$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	# reading the parent, even mounted read-write, does not stale it
	vf_mount "$T/p.vhdx" "$T/mnt"
	cat "$(vf_raw_path "$T/mnt")" >/dev/null
	vf_umount "$T/mnt"
	dl_exposed_sha "$T/c.vhdx" >/dev/null
	# writing it does
	vf_mount "$T/p.vhdx" "$T/mnt"
	printf 'changed' | dd of="$(vf_raw_path "$T/mnt")" bs=1 seek=5000 \
		conv=notrunc status=none
	vf_umount "$T/mnt"
	local sp sc
	sp=$(sha256 "$T/p.vhdx")
	sc=$(sha256 "$T/c.vhdx")
	vf_start "$T/c.vhdx" "$T/mnt"
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "tried $T/p.vhdx: linkage mismatch"
	assert_output --partial "the parent was changed after the child was made"
	assert_not_mounted "$T/mnt"
	vf_start "$T/c.vhdx" "$T/mnt" -o ro
	[ "$status" -eq 32 ]
	assert_output --partial "linkage mismatch"
	assert_not_mounted "$T/mnt"
	run "$VHDXTOOL" check "$T/c.vhdx"
	assert_failure 4
	assert_output --partial "linkage mismatch"
	assert_equal "$(sha256 "$T/p.vhdx")" "$sp"
	assert_equal "$(sha256 "$T/c.vhdx")" "$sc"
}

@test "the parent is found: relative path, case-insensitively, by name, -o parent=" {
	mkdir -p "$T/d/base" "$T/d/kids"
	dd if=/dev/urandom of="$T/ref" bs=1M count=16 status=none
	"$VHDXTOOL" convert "$T/ref" "$T/d/base/Parent.vhdx"
	"$VHDXTOOL" create --parent "$T/d/base/Parent.vhdx" "$T/d/kids/c.vhdx"
	dl_expect "$T/d/kids/c.vhdx" "$T/ref"
	# both directories moved together: the relative path still leads there
	mv "$T/d" "$T/e"
	dl_expect "$T/e/kids/c.vhdx" "$T/ref"
	# Windows paths are case-insensitive: each component matched so
	mv "$T/e/base" "$T/e/BASE"
	mv "$T/e/BASE/Parent.vhdx" "$T/e/BASE/PARENT.VHDX"
	dl_expect "$T/e/kids/c.vhdx" "$T/ref"
	# last resort: the parent's file name next to the child
	mv "$T/e/BASE/PARENT.VHDX" "$T/e/kids/parent.vhdx"
	dl_expect "$T/e/kids/c.vhdx" "$T/ref"
	# not found: every path tried is named
	mv "$T/e/kids/parent.vhdx" "$T/elsewhere.vhdx"
	vf_start "$T/e/kids/c.vhdx" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "no usable parent found"
	assert_output --partial "tried $T/e/kids/../"
	assert_output --partial "tried $T/e/kids/Parent.vhdx: No such file"
	assert_not_mounted "$T/mnt"
	# -o parent= overrides the search, still checked against the linkage
	dl_expect "$T/e/kids/c.vhdx" "$T/ref" -o parent="$T/elsewhere.vhdx"
	"$VHDXTOOL" create -s 16M "$T/other.vhdx"
	vf_start "$T/e/kids/c.vhdx" "$T/mnt" -o ro,parent="$T/other.vhdx"
	[ "$status" -eq 32 ]
	assert_output --partial "tried $T/other.vhdx: linkage mismatch"
	assert_not_mounted "$T/mnt"
}

# --------------------------------------------- the Windows checkpoint

@test "corpus checkpoint (parent not published): refused, paths tried named" {
	require_cmd jq
	local img before
	unpack dissect-differencing.avhdx.xz
	img=$IMG
	before=$(sha256 "$img")
	# the name the parent locator gives, as vhdxtool info reads it
	"$VHDXTOOL" info --json "$img" >"$T/info.json" || true
	assert_equal "$(jq -r '.parent_locator.entries[] |
		select(.key == "relative_path") | .value' "$T/info.json")" \
		".\\$CKPT_PARENT"
	jq -e '.chain_complete == false and (.chain | length) == 1' \
		"$T/info.json"
	vf_start "$img" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "no usable parent found"
	assert_output --partial "tried $T/$CKPT_PARENT"
	assert_not_mounted "$T/mnt"
	vf_start "$img" "$T/mnt"
	[ "$status" -eq 32 ]
	assert_not_mounted "$T/mnt"
	assert_equal "$(sha256 "$img")" "$before"
}

@test "corpus checkpoint with a fake parent of the wrong linkage: refused" {
	local img before fake
	unpack dissect-differencing.avhdx.xz
	img=$IMG
	before=$(sha256 "$img")
	# right name, right size, right sectors; another DataWriteGuid
	"$VHDXTOOL" create -s 8G "$T/$CKPT_PARENT"
	fake=$(sha256 "$T/$CKPT_PARENT")
	vf_start "$img" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "tried $T/$CKPT_PARENT: linkage mismatch"
	assert_output --partial "ff34003b-11ed-4cf8-a166-b2be05e20b80"
	assert_not_mounted "$T/mnt"
	vf_start "$img" "$T/mnt" -o parent="$T/$CKPT_PARENT"
	[ "$status" -eq 32 ]
	assert_output --partial "linkage mismatch"
	assert_not_mounted "$T/mnt"
	assert_equal "$(sha256 "$img")" "$before"
	assert_equal "$(sha256 "$T/$CKPT_PARENT")" "$fake"
}

# ------------------------------------------------- depth, cycles, sectors

@test "a chain of 17 images works; one deeper than the limit is refused" {
	require_cmd jq
	local i n=16 t0=$SECONDS
	"$VHDXTOOL" create -s 8M "$T/l0.vhdx"
	truncate -s 8M "$T/ref"
	for ((i = 1; i <= n; i++)); do
		"$VHDXTOOL" create --parent "$T/l$((i - 1)).vhdx" "$T/l$i.vhdx"
		# each level overwrites part of the one below, unaligned
		vf_mount "$T/l$i.vhdx" "$T/mnt"
		python3 - "$(vf_raw_path "$T/mnt")" "$T/ref" "$i" <<'EOF'
import os, sys
data = bytes([int(sys.argv[3])]) * 5000
for f in sys.argv[1:3]:
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, data, int(sys.argv[3]) * 3001)
    os.pwrite(fd, data, 8 * 1024 * 1024 - 5000 - int(sys.argv[3]) * 777)
    os.fsync(fd)
    os.close(fd)
EOF
		vf_umount "$T/mnt"
	done
	echo "# made and wrote $n levels in $((SECONDS - t0)) s" >&3
	dl_expect "$T/l$n.vhdx" "$T/ref"
	[ "$("$VHDXTOOL" info --json "$T/l$n.vhdx" | jq '.chain | length')" \
		-eq $((n + 1)) ]
	# the library takes at most 32 parents: create refuses a child that
	# could not be opened, and leaves nothing behind
	for ((i = n + 1; i <= 32; i++)); do
		"$VHDXTOOL" create --parent "$T/l$((i - 1)).vhdx" "$T/l$i.vhdx"
	done
	run "$VHDXTOOL" create --parent "$T/l32.vhdx" "$T/l33.vhdx"
	assert_failure
	assert_output --partial "does not find its parent; not created"
	[ ! -e "$T/l33.vhdx" ]
	vt_no_temp "$T"
	# forge one anyway: made from a stand-in with l32's name and
	# DataWriteGuid in another directory, then put next to the real l32
	mkdir -p "$T/x"
	"$VHDXTOOL" create -s 8M "$T/x/l32.vhdx"
	vx "$T/x/l32.vhdx" set headers.datawriteguid "$(dl_dwg "$T/l32.vhdx")"
	"$VHDXTOOL" create --parent "$T/x/l32.vhdx" "$T/x/l33.vhdx"
	mv "$T/x/l33.vhdx" "$T/l33.vhdx"
	# without the stand-in its absolute path leads nowhere either
	rm -r "$T/x"
	vf_start "$T/l33.vhdx" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "no usable parent found"
	assert_not_mounted "$T/mnt"
}

@test "cycles are refused: a locator that leads back to the image itself" {
	mkdir -p "$T/a" "$T/b"
	"$VHDXTOOL" create -s 16M "$T/a/x.vhdx"
	"$VHDXTOOL" create --parent "$T/a/x.vhdx" "$T/b/x.vhdx"
	# the parent gone, the name lookup finds the child itself; make its
	# DataWriteGuid what its own locator expects
	vx "$T/b/x.vhdx" set headers.datawriteguid \
		"$(dl_locator "$T/b/x.vhdx" parent_linkage | tr -d '{}')"
	rm -r "$T/a"
	local before
	before=$(sha256 "$T/b/x.vhdx")
	vf_start "$T/b/x.vhdx" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "a cycle"
	assert_not_mounted "$T/mnt"
	vf_start "$T/b/x.vhdx" "$T/mnt"
	[ "$status" -eq 32 ]
	assert_not_mounted "$T/mnt"
	assert_equal "$(sha256 "$T/b/x.vhdx")" "$before"
}

@test "cycles are refused: -o parent= naming the image itself" {
	"$VHDXTOOL" create -s 16M "$T/p.vhdx"
	"$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	# plainly: its own DataWriteGuid is not its parent_linkage
	vf_start "$T/c.vhdx" "$T/mnt" -o ro,parent="$T/c.vhdx"
	[ "$status" -eq 32 ]
	assert_not_mounted "$T/mnt"
	# even when made to match, the image cannot be its own parent
	vx "$T/c.vhdx" set headers.datawriteguid \
		"$(dl_locator "$T/c.vhdx" parent_linkage | tr -d '{}')"
	vf_start "$T/c.vhdx" "$T/mnt" -o ro,parent="$T/c.vhdx"
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "cycle"
	assert_not_mounted "$T/mnt"
	vf_start "$T/c.vhdx" "$T/mnt" -o parent="$T/c.vhdx"
	[ "$status" -eq 32 ]
	assert_not_mounted "$T/mnt"
}

@test "logical sector sizes must match along the chain" {
	"$VHDXTOOL" create -s 16M "$T/p.vhdx"
	"$VHDXTOOL" create --parent "$T/p.vhdx" "$T/c.vhdx"
	# a 4096-byte-sector image with the linkage the child expects
	"$VHDXTOOL" create -s 16M --logical-sector 4096 "$T/q.vhdx"
	vx "$T/q.vhdx" set headers.datawriteguid "$(dl_dwg "$T/p.vhdx")"
	vf_start "$T/c.vhdx" "$T/mnt" -o ro,parent="$T/q.vhdx"
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	assert_output --partial "logical sector size 4096 differs from the child's 512"
	assert_not_mounted "$T/mnt"
	# and the other way round
	"$VHDXTOOL" create --parent "$T/q.vhdx" "$T/c4.vhdx"
	vf_start "$T/c4.vhdx" "$T/mnt" -o ro,parent="$T/p.vhdx"
	[ "$status" -eq 32 ]
	assert_output --partial "logical sector size 512 differs from the child's 4096"
	assert_not_mounted "$T/mnt"
}

# -------------------------------------------------------------------- info

@test "info shows the resolved chain, text and JSON; a stale child alone" {
	require_cmd jq
	mkdir -p "$T/base"
	"$VHDXTOOL" create -s 16M "$T/base/p.vhdx"
	"$VHDXTOOL" create --parent "$T/base/p.vhdx" "$T/c1.vhdx"
	"$VHDXTOOL" create --parent "$T/c1.vhdx" "$T/c2.vhdx"
	local j
	j=$("$VHDXTOOL" info --json "$T/c2.vhdx")
	jq -e '.chain_complete == true and .chain_error == null' <<<"$j"
	[ "$(jq '.chain | length' <<<"$j")" -eq 3 ]
	[ "$(jq -r '.chain[0].path' <<<"$j")" = "$T/c2.vhdx" ]
	[ "$(jq -r '.chain[1].path' <<<"$j")" = "$T/c1.vhdx" ]
	[ "$(realpath "$(jq -r '.chain[2].path' <<<"$j")")" = \
		"$(realpath "$T/base/p.vhdx")" ]
	[ "$(jq -r '.chain[1].data_write_guid' <<<"$j")" = "$(dl_dwg "$T/c1.vhdx")" ]
	[ "$(jq -r '.chain[2].data_write_guid' <<<"$j")" = \
		"$(dl_dwg "$T/base/p.vhdx")" ]
	[ "$(jq -r '.chain[0].parent_linkage' <<<"$j")" = "$(dl_dwg "$T/c1.vhdx")" ]
	jq -e '.chain[0].linkage_ok == null and .chain[1].linkage_ok and
		.chain[2].linkage_ok and .chain[2].parent_linkage == null and
		.chain[2].type == "dynamic"' <<<"$j"
	run "$VHDXTOOL" info "$T/c2.vhdx"
	assert_success
	assert_output --partial "parent chain (3 images):"
	assert_line "  1: $T/c1.vhdx: linkage ok"
	# a plain image
	j=$("$VHDXTOOL" info --json "$T/base/p.vhdx")
	jq -e '(.chain | length) == 1 and .chain_complete' <<<"$j"
	# the middle changed: c2 is shown alone, with why
	mkdir -p "$T/mnt"
	vf_mount "$T/c1.vhdx" "$T/mnt"
	printf x | dd of="$(vf_raw_path "$T/mnt")" conv=notrunc status=none
	vf_umount "$T/mnt"
	run "$VHDXTOOL" info --json "$T/c2.vhdx"
	assert_success
	j=$(grep -v '^vhdxtool: warning' <<<"$output")
	jq -e '.chain_complete == false and (.chain | length) == 1' <<<"$j"
	jq -e '.chain_error | contains("linkage mismatch")' <<<"$j"
	run "$VHDXTOOL" info "$T/c2.vhdx"
	assert_success
	assert_output --partial "INCOMPLETE"
	assert_output --partial "parent NOT USABLE"
	# --parent names the parent explicitly
	run "$VHDXTOOL" info --json --parent "$T/base/p.vhdx" "$T/c1.vhdx"
	assert_success
	jq -e '.chain_complete and (.chain | length) == 2' <<<"$output"
}

@test "bash completion knows merge, -t differencing and --parent" {
	run bash -c 'shopt -s extglob
		source "$1"
		COMP_WORDS=(vhdxtool me); COMP_CWORD=1; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool create -t di); COMP_CWORD=3; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool merge --p); COMP_CWORD=2; _vhdxtool
		echo "${COMPREPLY[*]}"
		COMP_WORDS=(vhdxtool convert -t d); COMP_CWORD=3; _vhdxtool
		echo "${COMPREPLY[*]}"' _ "$TOP_SRCDIR/contrib/vhdxtool.bash-completion"
	assert_success
	assert_line -n 0 "merge"
	assert_line -n 1 "differencing"
	assert_line -n 2 "--parent"
	assert_line -n 3 "dynamic"
}
