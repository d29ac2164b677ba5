#!/usr/bin/env bats
# What a mount does when the image file fails under it.
#
# * Another program truncates the image file under a read-only and a
#   read-write mount (the lock is advisory): reads of the lost range fail
#   with EIO, reads of the rest return the data, the disk file keeps its
#   size, and the daemon logs the cause once.  The image is made by
#   qemu-img from random data; where each block lies in the file is found
#   by searching the file for the block's bytes (no VHDX decoding of ours).
# * A failed flush (fdatasync failing with EIO, injected into the daemon
#   with tests/lib/failsync.c): the mount turns read-only (statfs
#   ST_RDONLY, access(W_OK) fails, writes get EROFS) and the log says why
#   once.

load lib/common

MiB=$((1024 * 1024))

setup() {
	common_setup
	require_fuse
	require_cmd qemu-img python3
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# An 8 MiB disk of random data in 1 MiB blocks: $T/disk.raw, $T/img.vhdx.
make_image() {
	head -c $((8 * MiB)) /dev/urandom >"$T/disk.raw"
	qemu-img convert -f raw -O vhdx \
		-o subformat=dynamic,block_size=1M "$T/disk.raw" "$T/img.vhdx"
}

# File offset of each block's data, one a line, found by content.
block_offsets() {
	python3 - "$T/disk.raw" "$T/img.vhdx" <<'EOF'
import sys
raw = open(sys.argv[1], 'rb').read()
img = open(sys.argv[2], 'rb').read()
M = 1 << 20
for b in range(len(raw) // M):
    off = img.find(raw[b * M:b * M + 4096])
    assert off >= 0 and img[off:off + M] == raw[b * M:(b + 1) * M], b
    print(off)
EOF
}

# check_reads DISKFILE CUT: every 64 KiB piece of the disk reads as the
# raw file if its data lies below CUT in the image file, else fails EIO.
check_reads() {
	python3 - "$1" "$T/disk.raw" "$2" "$T/offsets" <<'EOF'
import errno, os, sys
disk, raw, cut = sys.argv[1], open(sys.argv[2], 'rb').read(), int(sys.argv[3])
offs = [int(l) for l in open(sys.argv[4])]
M, P = 1 << 20, 64 << 10
fd = os.open(disk, os.O_RDONLY)
good = lost = 0
# the lost pieces first, then the rest: readahead of the good ones must
# not hide anything
order = sorted(range(len(raw) // P),
               key=lambda p: offs[p * P // M] + p * P % M + P <= cut)
for p in order:
    v = p * P
    f = offs[v // M] + v % M
    try:
        got = os.pread(fd, P, v)
        err = None
    except OSError as e:
        err = e.errno
    if f + P <= cut:
        assert err is None and got == raw[v:v + P], ('good piece', v, err)
        good += 1
    elif f >= cut:
        assert err == errno.EIO, ('lost piece', v, err,
                                  None if err else len(got))
        lost += 1
print(good, lost)
EOF
}

truncate_under_mount() {
	local mode=$1 disk size0 cut out
	make_image
	block_offsets >"$T/offsets"
	# cut the image in the middle of the block stored 5th in the file
	cut=$(sort -n "$T/offsets" | sed -n 5p)
	cut=$((cut + MiB / 2))
	if [ "$mode" = ro ]; then
		vf_mount "$T/img.vhdx" "$T/mnt" -o ro
	else
		vf_mount "$T/img.vhdx" "$T/mnt"
	fi
	disk=$(vf_raw_path "$T/mnt")
	size0=$(stat -c %s "$disk")
	truncate -s "$cut" "$T/img.vhdx"
	run check_reads "$disk" "$cut"
	assert_success
	note "$mode mount: 64 KiB pieces read good, failed with EIO: $output"
	read -r good lost <<<"$output"
	[ "$good" -gt 0 ] && [ "$lost" -gt 0 ]
	# again: still EIO, still one message
	run check_reads "$disk" "$cut"
	assert_success
	[ "$(stat -c %s "$disk")" = "$size0" ]
	[ "$size0" = $((8 * MiB)) ]
	run dd if="$disk" of=/dev/null bs=1M status=none
	assert_failure
	assert_output --partial "Input/output error"
	[ "$(stat -c %s "$disk")" = "$size0" ]
	out=$(grep -c "another program truncated it" "$T/vhdxfuse.log")
	[ "$out" = 1 ] || { cat "$T/vhdxfuse.log" >&2; false; }
	vf_umount "$T/mnt" || true
}

@test "image truncated under a read-only mount: EIO, size kept, logged once" {
	truncate_under_mount ro
}

@test "image truncated under a read-write mount: EIO, size kept, logged once" {
	truncate_under_mount rw
}

@test "a failed flush turns the mount read-only: statfs, access, EROFS" {
	# the mount point's read-only flag (statfs, root's access) needs root
	require_root
	require_cmd cc
	cc -shared -fPIC -o "$T/failsync.so" \
		"$TOP_SRCDIR/tests/lib/failsync.c" -ldl
	qemu-img create -q -f vhdx -o subformat=dynamic,block_size=1M \
		"$T/img.vhdx" 16M
	head -c $((2 * MiB)) /dev/urandom >"$T/data"
	LD_PRELOAD="$T/failsync.so" FAILSYNC_TRIGGER="$T/fail" \
		vf_mount "$T/img.vhdx" "$T/mnt"
	disk=$(vf_raw_path "$T/mnt")
	dd if="$T/data" of="$disk" bs=1M conv=notrunc,fsync status=none
	run python3 -c 'import os, sys
print(os.statvfs(sys.argv[1]).f_flag & os.ST_RDONLY, os.access(sys.argv[2], os.W_OK))' \
		"$T/mnt" "$disk"
	assert_output "0 True"
	# the disk fails the next flush
	touch "$T/fail"
	run dd if="$T/data" of="$disk" bs=1M seek=4 conv=notrunc,fsync \
		status=none
	assert_failure
	note "write + fsync: $output"
	# now read-only, as statfs and access say
	run python3 -c 'import os, sys
print(os.statvfs(sys.argv[1]).f_flag & os.ST_RDONLY, os.access(sys.argv[2], os.W_OK))' \
		"$T/mnt" "$disk"
	assert_output "1 False"
	run findmnt -rn -o OPTIONS "$T/mnt"
	assert_output --regexp '^ro,'
	# writes: EROFS
	run dd if="$T/data" of="$disk" bs=4k count=1 conv=notrunc status=none
	assert_failure
	assert_output --partial "Read-only file system"
	run python3 -c 'import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    print(errno.errorcode[e.errno])' "$disk"
	assert_output EROFS
	# what was flushed before reads back
	cmp -n $((2 * MiB)) "$T/data" "$disk"
	# the log says why, once
	[ "$(grep -c 'flush failed' "$T/vhdxfuse.log")" = 1 ]
	[ "$(grep -c 'turned read-only' "$T/vhdxfuse.log")" = 1 ]
	note "$(grep -E 'flush failed|turned read-only' "$T/vhdxfuse.log")"
	vf_umount "$T/mnt" || true
	rm -f "$T/fail"
	# what was flushed before the failure survives: qemu-img replays the
	# log the daemon left and reads it
	run qemu-img check -r all "$T/img.vhdx"
	note "qemu-img check -r all: $output"
	qemu-img convert -f vhdx -O raw "$T/img.vhdx" "$T/out.raw"
	cmp -n $((2 * MiB)) "$T/data" "$T/out.raw"
}
