#!/usr/bin/env bats
# Bad input of every kind a user can hand the daemon: images truncated at
# each structure boundary, files that are not VHDX, files it may not read or
# write, bad mount points, and sizes that would make a careless reader
# allocate what the file cannot justify.  Every case asserts the exact exit
# status, a message naming the problem, no crash, nothing mounted, and the
# image file byte-for-byte unchanged -- in read-only and read-write mode.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"

setup() {
	common_setup
	require_fuse
	require_cmd qemu-img qemu-io python3
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# refused MODE IMAGE STATUS REGEX: start the daemon (MODE ro or rw) on
# IMAGE; it must exit with STATUS and a message matching REGEX, mount
# nothing and leave IMAGE unchanged (when IMAGE is a regular file).
refused() {
	local mode=$1 img=$2 want=$3 re=$4 before=
	[ -f "$img" ] && before=$(sha256 "$img")
	if [ "$mode" = ro ]; then
		vf_start "$img" "$T/mnt" -o ro
	else
		vf_start "$img" "$T/mnt"
	fi
	echo "[$mode] $img: exit $status: $output"
	[ "$status" -lt 124 ] || { echo "killed or hung" && return 1; }
	[ "$status" -eq "$want" ] || { echo "expected exit $want" && return 1; }
	grep -qiE -- "$re" <<<"$output" ||
		{ echo "message does not match /$re/" && return 1; }
	assert_not_mounted "$T/mnt" || return 1
	if [ -n "$before" ]; then
		[ "$(sha256 "$img")" = "$before" ] ||
			{ echo "the image was modified" && return 1; }
	fi
}

# both IMAGE STATUS REGEX: refused read-only and read-write alike.
both() {
	refused ro "$@" && refused rw "$@"
}

# A dynamic image with data, its structures at known places.
mk_data_image() {
	mk_random_sources
	mk_vhdx "$T/img.vhdx" $((40 * MiB)) block_size=1M
	qio "$T/img.vhdx" "write -s $T/rand1 0 $((3 * MiB))" \
		"write -P 0x5a $((40 * MiB - 8192)) 8192"
}

@test "an image truncated at each structure boundary is refused" {
	mk_data_image
	local log bat meta size cut n=0
	log=$(vx "$T/img.vhdx" get header1.logoffset)
	bat=$(vx "$T/img.vhdx" get regions.bat.offset)
	meta=$(vx "$T/img.vhdx" get regions.metadata.offset)
	size=$(stat -c %s "$T/img.vhdx")
	# offsets where a structure starts, ends or is cut in the middle
	for cut in 0 1 4096 65536 $((65536 + 2048)) 131072 196608 \
		$((196608 + 100)) 262144 327680 $((MiB - 1)) $MiB \
		$((log + 4096)) $((bat - 1)) $bat $((bat + 4096)) \
		$((meta - 1)) $meta $((meta + 32768)) $((meta + MiB - 1)) \
		$((size - MiB)) $((size - 4096)) $((size - 1)); do
		cp "$T/img.vhdx" "$T/cut.vhdx"
		truncate -s "$cut" "$T/cut.vhdx"
		both "$T/cut.vhdx" 32 \
			'file identifier|too small|header|region|metadata|BAT|log|truncated|past the end|outside the file'
		n=$((n + 1))
	done
	echo "truncation points: $n"
	[ "$n" -ge 20 ]
}

@test "files of other formats are refused: VHD, qcow2, raw, empty" {
	mk_vhdx "$T/ok.vhdx" $((8 * MiB))
	qemu-img create -q -f vpc "$T/disk.vhd" 8M
	qemu-img create -q -f qcow2 "$T/disk.qcow2" 8M
	head -c $((2 * MiB)) /dev/urandom >"$T/random.img"
	truncate -s $((4 * MiB)) "$T/zeros.img"
	: >"$T/empty.img"
	local f
	for f in disk.vhd disk.qcow2 random.img zeros.img empty.img; do
		both "$T/$f" 32 'not a VHDX|file identifier|too small'
	done
}

@test "a directory, a FIFO, /dev/zero and a missing file are refused" {
	mkdir "$T/dir.vhdx"
	mkfifo "$T/fifo.vhdx"
	both "$T/dir.vhdx" 32 'directory'
	both "$T/fifo.vhdx" 32 'not a regular file'
	both /dev/zero 32 'not a regular file'
	both "$T/missing.vhdx" 32 'No such file'
}

@test "an image the user cannot read, or write for rw, is refused" {
	require_root
	require_cmd setpriv
	mk_vhdx "$T/img.vhdx" $((8 * MiB))
	chmod 711 "$T"
	chmod 600 "$T/img.vhdx"
	local before out st
	before=$(sha256 "$T/img.vhdx")
	# as nobody: no read permission at all
	st=0
	out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
		"$VHDXFUSE" -o ro "$T/img.vhdx" "$T/mnt" 2>&1) || st=$?
	echo "$st: $out"
	[ "$st" -eq 32 ]
	grep -qi 'permission denied' <<<"$out"
	# readable but not writable: read-write is refused, naming the fix
	chmod 644 "$T/img.vhdx"
	st=0
	out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
		"$VHDXFUSE" "$T/img.vhdx" "$T/mnt" 2>&1) || st=$?
	echo "$st: $out"
	[ "$st" -eq 32 ]
	grep -q 'cannot open for writing' <<<"$out"
	grep -q -- '-o ro' <<<"$out"
	assert_not_mounted "$T/mnt"
	[ "$(sha256 "$T/img.vhdx")" = "$before" ]
}

@test "bad mount points: missing, a FIFO, one already in use" {
	mk_vhdx "$T/img.vhdx" $((8 * MiB))
	local before
	before=$(sha256 "$T/img.vhdx")
	vf_start "$T/img.vhdx" "$T/nowhere" -o ro
	[ "$status" -eq 32 ]
	grep -q 'No such file' <<<"$output"
	mkfifo "$T/fifo"
	vf_start "$T/img.vhdx" "$T/fifo" -o ro
	[ "$status" -eq 32 ]
	grep -q 'not a directory or a regular file' <<<"$output"
	# in use: another image is mounted there
	mk_vhdx "$T/other.vhdx" $((8 * MiB))
	vf_mount "$T/other.vhdx" "$T/mnt" -o ro
	local first
	first=$(vf_pid "$T/mnt")
	vf_start "$T/img.vhdx" "$T/mnt" -o ro
	echo "$status: $output"
	[ "$status" -eq 32 ]
	grep -q 'already a mount point' <<<"$output"
	# the first mount is still the one serving
	[ "$(findmnt -rn -M "$T/mnt" -o SOURCE)" = "$T/other.vhdx" ]
	kill -0 "$first"
	vf_umount "$T/mnt"
	[ "$(sha256 "$T/img.vhdx")" = "$before" ]
}

# The BAT of a 64 TiB disk with 1 MiB blocks is 513 MiB.  Declared in a
# 10 MiB file it must be refused before anything of that size is allocated;
# the address space is capped far below it to prove no attempt is made.
@test "huge declared sizes in a small file allocate nothing" {
	mk_vhdx "$T/huge.vhdx" 64T block_size=1M
	truncate -s $((10 * MiB)) "$T/huge.vhdx"
	local before st out
	before=$(sha256 "$T/huge.vhdx")
	for mode in "-o ro" ""; do
		st=0
		# shellcheck disable=SC2086
		out=$( (ulimit -v $((160 * 1024)) &&
			exec "$VHDXFUSE" -f $mode "$T/huge.vhdx" "$T/mnt") 2>&1) ||
			st=$?
		echo "[$mode] $st: $out"
		[ "$st" -eq 32 ]
		grep -qE 'BAT region.*past the end of the file' <<<"$out"
	done
	[ "$(sha256 "$T/huge.vhdx")" = "$before" ]
	# a log declared far larger than the file
	mk_vhdx "$T/log.vhdx" $((8 * MiB))
	vx "$T/log.vhdx" set headers.loglength $((4095 * MiB))
	vx "$T/log.vhdx" set headers.logguid 11111111-2222-4333-8444-555555555555
	both "$T/log.vhdx" 32 'log.*(past the end|larger|overlaps)'
	# a virtual size over 64 TiB
	mk_vhdx "$T/vs.vhdx" $((8 * MiB))
	vx "$T/vs.vhdx" set meta.vsize $(((64 << 40) + 512))
	both "$T/vs.vhdx" 32 'virtual disk size'
}

# A parent locator (or -o parent=) may only lead to regular VHDX files:
# never to devices, FIFOs or files under /proc, /sys or /dev.
@test "parent lookup only accepts regular VHDX files" {
	local tool=${VHDXTOOL:-$TOP_BUILDDIR/vhdxtool}
	"$tool" create -s 16M "$T/base.vhdx"
	"$tool" create -t differencing --parent "$T/base.vhdx" "$T/child.vhdx"
	mkfifo "$T/fifo.vhdx"
	local p before
	before=$(sha256 "$T/child.vhdx")
	for p in /dev/zero "$T/fifo.vhdx" /proc/self/mem /sys/kernel/notes \
		"$T"; do
		vf_start "$T/child.vhdx" "$T/mnt" -o ro,parent="$p"
		echo "parent=$p: $status: $output"
		[ "$status" -eq 32 ]
		grep -q "no usable parent found" <<<"$output"
		grep -q "tried $p" <<<"$output"
		assert_not_mounted "$T/mnt"
	done
	[ "$(sha256 "$T/child.vhdx")" = "$before" ]
	# the real parent is accepted
	vf_mount "$T/child.vhdx" "$T/mnt" -o ro,parent="$T/base.vhdx"
	vf_umount "$T/mnt"
}
