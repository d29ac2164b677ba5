#!/usr/bin/env bats
# Text in the image: the creator string of the file identifier and the
# parent locator's paths are UTF-16LE on disk, UTF-8 on the command line.
#
# Oracles: the raw bytes decoded by Python's own UTF-16 codec, libvhdi
# (vhdiinfo's parent filename, vhdimount following the parent), qemu-img.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
}

teardown() {
	common_teardown
}

# The creator field (512 bytes of UTF-16LE at offset 8), up to its first
# NUL, decoded independently of the library.
creator_on_disk() {
	python3 - "$1" <<'PY'
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(8)
    raw = f.read(512)
units = [raw[i:i + 2] for i in range(0, 512, 2)]
end = units.index(b"\0\0") if b"\0\0" in units else 256
print(b"".join(units[:end]).decode("utf-16-le"))
PY
}

@test "a non-ASCII creator string is written as UTF-16 and read back" {
	local creator='Zoë 日本 😀 créé'
	run "$VHDXTOOL" create -s 64M --creator "$creator" "$T/a.vhdx"
	assert_success
	run creator_on_disk "$T/a.vhdx"
	assert_success
	assert_output "$creator"
	run "$VHDXTOOL" info "$T/a.vhdx"
	assert_success
	assert_line --regexp "^creator: +$creator\$"
	run "$VHDXTOOL" info --json "$T/a.vhdx"
	assert_success
	[ "$(jq -r .creator <<<"$output")" = "$creator" ]
	# the other readers still take the image (vhdiinfo does not print the
	# creator; Python's codec above is the independent reading of it)
	qemu-img check -q -f vhdx "$T/a.vhdx"
	run vhdiinfo "$T/a.vhdx"
	assert_success
	assert_line --regexp "Format[[:space:]]+: VHDX"
	require_fuse
	mkdir "$T/vhdi"
	vhdi_mount "$T/a.vhdx" "$T/vhdi"
	[ "$(stat -c %s "$T/vhdi/vhdi1")" -eq $((64 * MiB)) ]
	vhdi_umount "$T/vhdi"
}

@test "the default creator names this program and its version" {
	"$VHDXTOOL" create -s 64M "$T/a.vhdx"
	run creator_on_disk "$T/a.vhdx"
	assert_success
	assert_output --regexp '^vhdxfuse [0-9]+\.[0-9]+'
}

@test "a creator that is not UTF-8 or too long is refused, nothing left" {
	run "$VHDXTOOL" create -s 64M --creator $'bad \xff byte' "$T/a.vhdx"
	assert_failure 1
	assert_output --partial "creator string"
	[ ! -e "$T/a.vhdx" ]
	run "$VHDXTOOL" create -s 64M --creator "$(printf 'é%.0s' $(seq 256))" \
		"$T/a.vhdx"
	assert_failure 1
	[ ! -e "$T/a.vhdx" ]
	# 255 units fit (the field keeps a terminating NUL)
	run "$VHDXTOOL" create -s 64M --creator "$(printf 'é%.0s' $(seq 255))" \
		"$T/a.vhdx"
	assert_success
	run creator_on_disk "$T/a.vhdx"
	assert_output "$(printf 'é%.0s' $(seq 255))"
}

@test "a parent under a non-ASCII path is recorded, found and read" {
	local dir="$T/Données" raw="$T/parent.raw"
	mkdir "$dir"
	vt_mk_raw "$raw" $((64 * MiB)) $((2 * MiB))
	"$VHDXTOOL" convert -q "$raw" "$dir/père été.vhdx"
	(cd "$dir" && "$VHDXTOOL" create -q -t differencing \
		--parent "père été.vhdx" "enfant ü.avhdx")
	# libvhdi reads the locator's absolute path (Windows form)
	run vhdiinfo "$dir/enfant ü.avhdx"
	assert_success
	assert_line --regexp "Parent filename.*Données.père été\.vhdx\$"
	# our info shows the decoded locator and finds the parent
	run "$VHDXTOOL" info "$dir/enfant ü.avhdx"
	assert_success
	assert_line --partial "relative_path = père été.vhdx"
	assert_line --regexp "1: .*père été\.vhdx: linkage ok"
	# both readers show the parent's data through the child
	require_fuse
	mkdir "$T/m" "$T/vhdi"
	vf_mount "$dir/enfant ü.avhdx" "$T/m" -o ro
	cmp "$(vf_raw_path "$T/m")" "$raw"
	vf_umount "$T/m"
	vhdi_mount "$dir/enfant ü.avhdx" "$T/vhdi"
	cmp "$T/vhdi/vhdi1" "$raw"
	vhdi_umount "$T/vhdi"
}
