#!/usr/bin/env bats
# The vhdxfuse command line: options, usage errors, exit statuses, the two
# kinds of mount point, ownership and modes, read-write (the default) and
# read-only mounts, locking, the fixed size of the disk file, daemon mode,
# and the exposed content against qemu-img as the oracle.

bats_require_minimum_version 1.5.0

load lib/common

setup() {
	common_setup
	require_cmd qemu-img qemu-io python3
	IMG=$T/disk.vhdx
	MNT=$T/mnt
	mkdir "$MNT"
	# unmounted in teardown should a test mount it by mistake
	vf_track "$MNT"
}

teardown() {
	common_teardown
}

# Run the daemon for a test that expects it to fail.  Should it mount and
# detach instead, it must not hold bats' fd 3 (teardown unmounts it).
run_vf() {
	run --separate-stderr "$VHDXFUSE" "$@" 3>&-
}

run_vf_timeout() {
	run --separate-stderr timeout 10 "$VHDXFUSE" "$@" 3>&-
}

# make_image PATH SIZE [qemu-io command...]: a VHDX image made by QEMU.
make_image() {
	local img=$1 size=$2 c
	shift 2
	qemu-img create -q -f vhdx "$img" "$size"
	for c in "$@"; do
		qemu-io -f vhdx -c "$c" "$img" >/dev/null
	done
}

# The test image: data at the start, in the middle, and at the very end of
# a disk whose size is not a multiple of the block size.
make_test_image() {
	make_image "$IMG" 10000000 'write -P 0xab 0 1M' \
		'write -P 0x11 3000k 2M' 'write -P 0xcd 9999872 512'
}

# The raw disk according to QEMU (run before mounting: QEMU's own image
# locking would otherwise see our lock).
reference() {
	qemu-img convert -f vhdx -O raw "$1" "$2"
}

virtual_size() {
	qemu-img info -U --output=json "$1" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])'
}

# Succeeds if an exclusive fcntl (lockf) lock on FILE can be taken now.
can_write_lock() {
	python3 - "$1" <<'EOF'
import fcntl, sys
with open(sys.argv[1], "r+b") as f:
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)
EOF
}

# The exposed file of MNT equals the reference.
assert_same_content() {
	run cmp "$1" "$2"
	assert_success
}

# ------------------------------------------------------------ help, version

@test "--help prints our options, then libfuse's, to stdout and exits 0" {
	run_vf --help
	assert_success
	[ -z "$stderr" ]
	local o
	for o in "-o ro" "-o rw" "-o parent=" "-o uid=" "-o gid=" "-o umask=" \
		"-o filename=" "-o allow_other" "--version" "IMAGE MOUNTPOINT"; do
		assert_output --partial -- "$o"
	done
	# from fuse_cmdline_help() and fuse_lowlevel_help()
	assert_output --partial "clone_fd"
	assert_output --partial "auto_unmount"
	local ours fuses
	ours=$(grep -n -- "-o filename=" <<<"$output" | head -1 | cut -d: -f1)
	fuses=$(grep -n -- "clone_fd" <<<"$output" | head -1 | cut -d: -f1)
	[ "$ours" -lt "$fuses" ]
}

@test "-h is --help" {
	run_vf -h
	assert_success
	assert_output --partial "-o filename="
	assert_output --partial "clone_fd"
}

@test "--version names our version and the FUSE library's" {
	require_cmd pkg-config
	local ours fuse
	ours=$(sed -n 's/^AC_INIT(\[vhdxfuse\], *\[\([^]]*\)\].*/\1/p' \
		"$TOP_SRCDIR/configure.ac")
	fuse=$(pkg-config --modversion fuse3)
	[ -n "$ours" ] && [ -n "$fuse" ]
	run_vf --version
	assert_success
	assert_line --regexp "^vhdxfuse .*$ours\$"
	assert_line --regexp "FUSE library.* $fuse\$"
	run_vf -V
	assert_success
	assert_line --regexp "^vhdxfuse .*$ours\$"
}

# ------------------------------------------------------------ usage errors

@test "no arguments: usage on stderr, exit 1" {
	run --separate-stderr "$VHDXFUSE"
	assert_failure 1
	[ -z "$output" ]
	[[ $stderr == *usage:* ]]
}

@test "only IMAGE: exit 1, says MOUNTPOINT is missing" {
	make_test_image
	run_vf -o ro "$IMG"
	assert_failure 1
	[[ $stderr == *MOUNTPOINT* ]]
	[[ $stderr == *usage:* ]]
}

@test "a third positional argument: exit 1, names it" {
	make_test_image
	run_vf -o ro "$IMG" "$MNT" extra-arg
	assert_failure 1
	[[ $stderr == *extra-arg* ]]
	assert_not_mounted "$MNT"
}

@test "unknown options: exit 1, names the option, mounts nothing" {
	make_test_image
	run_vf -o ro,no_such_option "$IMG" "$MNT"
	assert_failure 1
	[[ $stderr == *no_such_option* ]]
	run_vf -o ro --no-such-flag "$IMG" "$MNT"
	assert_failure 1
	[[ $stderr == *--no-such-flag* ]]
	assert_not_mounted "$MNT"
}

@test "invalid option values: exit 1 with a message" {
	make_test_image
	local o
	for o in uid=abc uid=-1 uid= gid=12x umask=8 umask=1000 \
		filename=a/b filename=. filename=.. filename=; do
		run_vf -o "ro,$o" "$IMG" "$MNT"
		assert_failure 1
		[[ $stderr == *"$o"* ]] || {
			echo "no mention of $o in: $stderr"
			return 1
		}
	done
	assert_not_mounted "$MNT"
}

@test "without ro the mount is read-write: rw, defaults, nofail, ro,rw all write through" {
	require_fuse
	# 1 MiB blocks, data in the first two, an odd size (9.5 MiB + 512)
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 9962000
	qemu-io -f vhdx -c 'write -P 0xab 0 1536k' "$IMG" >/dev/null
	reference "$IMG" "$T/ref.raw"
	local o w n=0 size
	size=$(virtual_size "$IMG")
	[ "$size" -eq 9962496 ]
	for o in "" "-o rw" "-o ro,rw" "-o defaults" "-o nofail"; do
		n=$((n + 1))
		# shellcheck disable=SC2086
		vf_mount "$IMG" "$MNT" $o
		run findmnt -rn -o OPTIONS -M "$MNT"
		assert_output --regexp '^rw(,|$)'
		# dd: into a present block, across a block boundary, into an
		# absent block, and the last sector
		head -c 5000 /dev/urandom >"$T/w1"
		for w in "$((n * 777)) 5000" "$((2 * 1048576 - 1234)) 5000" \
			"$((5 * 1048576 + n * 512)) 5000" "$((size - 512)) 512"; do
			set -- $w
			dd if="$T/w1" of="$MNT/disk.raw" bs=1 seek="$1" count="$2" \
				conv=notrunc status=none
			dd if="$T/w1" of="$T/ref.raw" bs=1 seek="$1" count="$2" \
				conv=notrunc status=none
		done
		# python: pwrite + fsync, unaligned
		python3 -c '
import os, random, sys
rng = random.Random(int(sys.argv[3]))
fds = [os.open(p, os.O_WRONLY) for p in sys.argv[1:3]]
size = os.path.getsize(sys.argv[2])
for _ in range(20):
    off = rng.randrange(size - 70000)
    buf = rng.randbytes(rng.randint(1, 70000))
    for fd in fds:
        assert os.pwrite(fd, buf, off) == len(buf)
for fd in fds:
    os.fsync(fd)
    os.close(fd)' "$MNT/disk.raw" "$T/ref.raw" "$n"
		[ "$(stat -c %s "$MNT/disk.raw")" = "$size" ]
		assert_same_content "$MNT/disk.raw" "$T/ref.raw"
		vf_umount "$MNT"
		run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
		assert_success
		run qemu-img check "$IMG"
		assert_success
	done
	[ ! -s "$T/vhdxfuse.log" ] || {
		cat "$T/vhdxfuse.log"
		return 1
	}
}

@test "read-write mount: mode 0644, directory 0755, umask applies; st_blocks grows" {
	require_fuse
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 16M
	qemu-io -f vhdx -c 'write -P 0xab 0 1M' "$IMG" >/dev/null
	vf_mount "$IMG" "$MNT"
	run stat -c "%u %g %a" "$MNT/disk.raw"
	assert_output "$(id -u) $(id -g) 644"
	run stat -c "%a" "$MNT"
	assert_output "755"
	local before after
	before=$(stat -c %b "$MNT/disk.raw")
	[ "$before" -eq 2048 ]
	# into the absent block at 6 MiB
	dd if=/dev/urandom of="$MNT/disk.raw" bs=4096 count=1 seek=1536 \
		conv=notrunc,fsync status=none
	after=$(stat -c %b "$MNT/disk.raw")
	[ "$after" -eq 4096 ] || {
		echo "st_blocks $before -> $after" >&2
		return 1
	}
	vf_umount "$MNT"
	vf_mount "$IMG" "$MNT" -o umask=027
	run stat -c "%a" "$MNT/disk.raw" "$MNT"
	assert_output "$(printf '%o\n%o' $((0644 & ~027)) $((0755 & ~027)))"
	vf_umount "$MNT"
}

@test "an image on a read-only file system: rw refused (exit 32, 'mount with -o ro'), ro works" {
	require_fuse
	require_root
	make_test_image
	reference "$IMG" "$T/ref.raw"
	mkdir "$T/rofs"
	mount -t tmpfs -o size=32M tmpfs "$T/rofs"
	track_fsmount "$T/rofs"
	cp "$IMG" "$T/rofs/disk.vhdx"
	mount -o remount,ro "$T/rofs"
	local before
	before=$(sha256 "$T/rofs/disk.vhdx")
	run_vf "$T/rofs/disk.vhdx" "$MNT"
	assert_failure 32
	[[ $stderr == *"$T/rofs/disk.vhdx: cannot open for writing: Read-only file system; mount with -o ro to read it"* ]] || {
		echo "stderr: $stderr"
		return 1
	}
	assert_not_mounted "$MNT"
	run_vf -o rw "$T/rofs/disk.vhdx" "$MNT"
	assert_failure 32
	[[ $stderr == *"cannot open for writing"*"mount with -o ro"* ]]
	assert_not_mounted "$MNT"
	vf_mount "$T/rofs/disk.vhdx" "$MNT" -o ro
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	[ "$(sha256 "$T/rofs/disk.vhdx")" = "$before" ]
}

@test "an image the user may not write: rw refused (exit 32, 'mount with -o ro'), ro works" {
	require_fuse
	require_root
	require_cmd setpriv
	make_test_image
	reference "$IMG" "$T/ref.raw"
	chmod 755 "$T"
	chmod 644 "$IMG" "$T/ref.raw"
	chown 65534:65534 "$MNT"
	local before nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	before=$(sha256 "$IMG")
	run --separate-stderr "${nobody[@]}" "$VHDXFUSE" "$IMG" "$MNT" 3>&-
	assert_failure 32
	[[ $stderr == *"$IMG: cannot open for writing: Permission denied; mount with -o ro to read it"* ]] || {
		echo "stderr: $stderr"
		return 1
	}
	assert_not_mounted "$MNT"
	[ "$(sha256 "$IMG")" = "$before" ]
	# the same user mounts it read-only, where /dev/fuse is open to everyone
	# and fusermount3 is setuid (a stock Debian); elsewhere root does
	if "${nobody[@]}" test -r /dev/fuse -a -w /dev/fuse &&
		[ -u "$(command -v fusermount3)" ]; then
		"${nobody[@]}" "$VHDXFUSE" -f -o ro "$IMG" "$MNT" \
			2>>"$T/vhdxfuse.log" 3>&- &
		vf_track "$MNT" $!
		local deadline=$((SECONDS + 10))
		until findmnt -rn -M "$MNT" >/dev/null 2>&1; do
			if ! kill -0 "$(vf_pid "$MNT")" 2>/dev/null ||
				[ "$SECONDS" -ge "$deadline" ]; then
				cat "$T/vhdxfuse.log"
				return 1
			fi
			sleep 0.05
		done
		run "${nobody[@]}" cmp "$MNT/disk.raw" "$T/ref.raw"
		assert_success
		"${nobody[@]}" fusermount3 -u "$MNT"
		wait_pid_gone "$(vf_pid "$MNT")" 10
	else
		vf_mount "$IMG" "$MNT" -o ro
		assert_same_content "$MNT/disk.raw" "$T/ref.raw"
		vf_umount "$MNT"
	fi
	[ "$(sha256 "$IMG")" = "$before" ]
}

@test "truncation: other sizes fail with EINVAL; O_TRUNC and the same size change nothing" {
	require_fuse
	make_test_image
	[ "$(virtual_size "$IMG")" = 10000384 ]
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT"
	local size
	for size in 1M 20000000 0; do
		run truncate -s "$size" "$MNT/disk.raw"
		assert_failure
		assert_output --partial "Invalid argument"
	done
	run python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.ftruncate(fd, 4096)
except OSError as e:
    sys.exit(0 if e.errno == errno.EINVAL else 2)
sys.exit(1)' "$MNT/disk.raw"
	assert_success
	truncate -s 10000384 "$MNT/disk.raw"
	# O_TRUNC: ignored, as for a block device
	: >"$MNT/disk.raw"
	[ "$(stat -c %s "$MNT/disk.raw")" = 10000384 ]
	python3 -c '
import os, sys
os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC))' "$MNT/disk.raw"
	[ "$(stat -c %s "$MNT/disk.raw")" = 10000384 ]
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	# QEMU and a new daemon (no page cache) agree
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
	vf_mount "$IMG" "$MNT" -o ro
	[ "$(stat -c %s "$MNT/disk.raw")" = 10000384 ]
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
}

@test "without the writeback cache, writes at or past the end fail with ENOSPC; one crossing the end is cut short" {
	require_fuse
	make_test_image
	[ "$(virtual_size "$IMG")" = 10000384 ]
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o no_writeback_cache
	# qemu-img rounds 10000000 up to 10000384 bytes = 19532 sectors
	run dd if=/dev/zero of="$MNT/disk.raw" bs=512 seek=19532 count=1 \
		conv=notrunc status=none
	assert_failure
	assert_output --partial "No space left on device"
	run dd if=/dev/zero of="$MNT/disk.raw" bs=1 seek=10000384 count=1 \
		conv=notrunc status=none
	assert_failure
	assert_output --partial "No space left on device"
	run python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for off in (10000384, 10000385, 1 << 40):
    try:
        os.pwrite(fd, b"x", off)
        sys.exit("pwrite at %d succeeded" % off)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("pwrite at %d: %s" % (off, e))
# crossing the end: the bytes up to the end are written
n = os.pwrite(fd, b"\x5a" * 1000, 10000384 - 300)
if n != 300:
    sys.exit("crossing write returned %d, not 300" % n)
os.fsync(fd)' "$MNT/disk.raw"
	assert_success
	head -c 300 /dev/zero | tr '\0' '\132' |
		dd of="$T/ref.raw" bs=1 seek=$((10000384 - 300)) conv=notrunc status=none
	[ "$(stat -c %s "$MNT/disk.raw")" = 10000384 ]
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	[ "$(stat -c %s "$T/ref.raw")" = 10000384 ]
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
}

@test "with the writeback cache (the default), a write past the end fails at fsync with ENOSPC, keeps what fits, and the size stays" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	# a regular-file mount point: its size comes from the daemon at init
	touch "$T/disk"
	vf_mount "$IMG" "$T/disk"
	[ "$(stat -c %s "$T/disk")" = 10000384 ]
	run python3 -c '
import errno, os, sys, time
size = 10000384
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"\x5a" * 1000, size - 300)   # 300 bytes fit
try:
    os.fsync(fd)
    sys.exit("fsync after a write past the end succeeded")
except OSError as e:
    if e.errno != errno.ENOSPC:
        sys.exit("fsync: %s" % e)
# the daemon sets the size back once the write-back failed
for _ in range(100):
    if os.fstat(fd).st_size == size:
        break
    time.sleep(0.05)
else:
    sys.exit("size stayed %d" % os.fstat(fd).st_size)
os.pwrite(fd, b"\x11" * 4096, 8192)
os.fsync(fd)                                  # the error was reported once
os.close(fd)
print("ok")' "$T/disk"
	assert_success
	assert_output "ok"
	[ "$(stat -c %s "$T/disk")" = 10000384 ]
	head -c 300 /dev/zero | tr '\0' '\132' |
		dd of="$T/ref.raw" bs=1 seek=$((10000384 - 300)) conv=notrunc status=none
	head -c 4096 /dev/zero | tr '\0' '\021' |
		dd of="$T/ref.raw" bs=4096 seek=2 conv=notrunc status=none
	assert_same_content "$T/disk" "$T/ref.raw"
	vf_umount "$T/disk"
	grep -q "past the end of the disk" "$T/vhdxfuse.log"
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
}

@test "with the writeback cache, dd without conv=notrunc (O_TRUNC) keeps the size and the rest of the disk" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	touch "$T/disk"
	vf_mount "$IMG" "$T/disk"
	head -c 100000 /dev/urandom >"$T/head.bin"
	dd if="$T/head.bin" of="$T/disk" bs=4096 status=none
	[ "$(stat -c %s "$T/disk")" = 10000384 ]
	dd if="$T/head.bin" of="$T/ref.raw" bs=4096 conv=notrunc status=none
	assert_same_content "$T/disk" "$T/ref.raw"
	vf_umount "$T/disk"
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
}

# ------------------------------------------------------------ bad images

@test "nonexistent image: exit 32, names it" {
	run_vf -o ro "$T/missing.vhdx" "$MNT"
	assert_failure 32
	[[ $stderr == *"$T/missing.vhdx"*"No such file or directory"* ]]
	assert_not_mounted "$MNT"
}

@test "image is a directory: exit 32" {
	mkdir "$T/dir.vhdx"
	run_vf -o ro "$T/dir.vhdx" "$MNT"
	assert_failure 32
	[[ $stderr == *"$T/dir.vhdx"*"directory"* ]]
	assert_not_mounted "$MNT"
}

@test "image is a FIFO: exit 32 at once, without blocking on it" {
	mkfifo "$T/fifo.vhdx"
	run_vf_timeout -o ro "$T/fifo.vhdx" "$MNT"
	assert_failure 32
	[[ $stderr == *"$T/fifo.vhdx"*"not a regular file"* ]]
	assert_not_mounted "$MNT"
}

@test "image is a character device: exit 32" {
	run_vf_timeout -o ro /dev/null "$MNT"
	assert_failure 32
	[[ $stderr == *"/dev/null"*"not a regular file"* ]]
}

@test "not a VHDX image: the library's message as 'vhdxfuse: IMAGE: ...', exit 32, file untouched" {
	local f before
	head -c 1048576 /dev/urandom >"$T/random.vhdx"
	: >"$T/empty.vhdx"
	qemu-img create -q -f qcow2 "$T/qcow2.vhdx" 1M
	for f in random empty qcow2; do
		before=$(sha256 "$T/$f.vhdx")
		run_vf -o ro "$T/$f.vhdx" "$MNT"
		assert_failure 32
		[ -z "$output" ]
		[[ $stderr == "vhdxfuse: $T/$f.vhdx: "?* ]]
		[ "$(sha256 "$T/$f.vhdx")" = "$before" ]
		assert_not_mounted "$MNT"
	done
}

@test "nonexistent mount point: exit 32, names it, image untouched" {
	make_test_image
	local before
	before=$(sha256 "$IMG")
	run_vf -o ro "$IMG" "$T/nowhere"
	assert_failure 32
	[[ $stderr == *"$T/nowhere"*"No such file or directory"* ]]
	[ "$(sha256 "$IMG")" = "$before" ]
}

@test "mount point that is neither a directory nor a regular file: exit 32" {
	make_test_image
	mkfifo "$T/fifo"
	run_vf_timeout -o ro "$IMG" "$T/fifo"
	assert_failure 32
	[[ $stderr == *"$T/fifo"* ]]
}

# ------------------------------------------------------------ mounting

@test "directory mount point: one file, IMAGE's name with .raw, qemu-img's bytes" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o ro
	run ls -A "$MNT"
	assert_output "disk.raw"
	[ -d "$MNT" ]
	[ -f "$MNT/disk.raw" ]
	[ "$(stat -c %s "$MNT/disk.raw")" = "$(virtual_size "$IMG")" ]
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	run ls "$MNT/other"
	assert_failure
	vf_umount "$MNT"
}

@test "default file name: .vhdx and .avhdx in any case become .raw, else .raw is appended" {
	require_fuse
	local name want
	for name in "Server.VHDX:Server.raw" "diff.avhdx:diff.raw" \
		"plain:plain.raw" "a.vhdx.bak:a.vhdx.bak.raw"; do
		want=${name#*:}
		name=${name%%:*}
		make_image "$T/$name" 1M
		vf_mount "$T/$name" "$MNT" -o ro
		run ls -A "$MNT"
		assert_output "$want"
		vf_umount "$MNT"
	done
}

@test "-o filename=NAME names the file" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o ro,filename=my-disk.img
	run ls -A "$MNT"
	assert_output "my-disk.img"
	assert_same_content "$MNT/my-disk.img" "$T/ref.raw"
	vf_umount "$MNT"
}

@test "regular file mount point: it becomes the disk" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	touch "$T/disk.img"
	vf_mount "$IMG" "$T/disk.img" -o ro
	[ -f "$T/disk.img" ]
	[ "$(stat -c %s "$T/disk.img")" = "$(virtual_size "$IMG")" ]
	assert_same_content "$T/disk.img" "$T/ref.raw"
	vf_umount "$T/disk.img"
	[ "$(stat -c %s "$T/disk.img")" = 0 ]
}

@test "filename= with a regular file mount point is ignored with a warning" {
	require_fuse
	make_test_image
	touch "$T/disk.img"
	vf_mount "$IMG" "$T/disk.img" -o ro,filename=x.raw
	[ "$(stat -c %s "$T/disk.img")" = "$(virtual_size "$IMG")" ]
	grep -q "filename=" "$T/vhdxfuse.log"
	vf_umount "$T/disk.img"
}

@test "-r is -o ro; -o rw,ro ends read-only" {
	require_fuse
	make_test_image
	vf_mount "$IMG" "$MNT" -r
	[ -f "$MNT/disk.raw" ]
	vf_umount "$MNT"
	vf_mount "$IMG" "$MNT" -o rw,ro
	run findmnt -rn -o OPTIONS -M "$MNT"
	assert_output --regexp '(^|,)ro(,|$)'
	vf_umount "$MNT"
}

@test "fstab words are accepted and ignored" {
	require_fuse
	make_test_image
	vf_mount "$IMG" "$MNT" -o defaults,ro,auto,noauto,user,users,nouser \
		-o _netdev,nofail,x-systemd.automount,x-foo=bar,comment=hello
	[ -f "$MNT/disk.raw" ]
	vf_umount "$MNT"
}

@test "default owner is the caller; mode 0444, directory 0555; times are the image's mtime" {
	require_fuse
	make_test_image
	touch -d "2001-02-03 04:05:06" "$IMG"
	vf_mount "$IMG" "$MNT" -o ro
	run stat -c "%u %g %a" "$MNT/disk.raw"
	assert_output "$(id -u) $(id -g) 444"
	run stat -c "%u %g %a" "$MNT"
	assert_output "$(id -u) $(id -g) 555"
	[ "$(stat -c %Y "$MNT/disk.raw")" = "$(stat -c %Y "$IMG")" ]
	vf_umount "$MNT"
}

@test "uid=, gid= and umask= set owner and modes" {
	require_fuse
	make_test_image
	local fmode dmode
	fmode=$(printf '%o' $((0444 & ~027)))
	dmode=$(printf '%o' $((0555 & ~027)))
	vf_mount "$IMG" "$MNT" -o ro,uid=1234,gid=4321,umask=027
	run stat -c "%u %g %a" "$MNT/disk.raw"
	assert_output "1234 4321 $fmode"
	run stat -c "%u %g %a" "$MNT"
	assert_output "1234 4321 $dmode"
	vf_umount "$MNT"
	touch "$T/disk.img"
	vf_mount "$IMG" "$T/disk.img" -o ro,uid=7,gid=8,umask=0222
	run stat -c "%u %g %a" "$T/disk.img"
	assert_output "7 8 $(printf '%o' $((0444 & ~0222)))"
	vf_umount "$T/disk.img"
}

@test "the kernel enforces the modes: umask=004 keeps other users out" {
	require_fuse
	require_root
	require_cmd setpriv
	make_test_image
	chmod 755 "$T"
	local nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	vf_mount "$IMG" "$MNT" -o ro,allow_other
	run "${nobody[@]}" head -c 1 "$MNT/disk.raw"
	assert_success
	vf_umount "$MNT"
	vf_mount "$IMG" "$MNT" -o ro,allow_other,umask=004
	run "${nobody[@]}" head -c 1 "$MNT/disk.raw"
	assert_failure
	assert_output --partial "Permission denied"
	vf_umount "$MNT"
}

@test "findmnt: SOURCE is IMAGE's absolute path, FSTYPE fuse.vhdxfuse" {
	require_fuse
	make_test_image
	cd "$T"
	vf_mount disk.vhdx "$MNT" -o ro
	run findmnt -rn -o SOURCE,FSTYPE -M "$MNT"
	assert_output "$(realpath "$IMG") fuse.vhdxfuse"
	vf_umount "$MNT"
	vf_mount "$IMG" "$MNT" -o ro,fsname=myimage
	run findmnt -rn -o SOURCE -M "$MNT"
	assert_output "myimage"
	vf_umount "$MNT"
}

@test "read-write mount: the directory keeps its one file; creating, removing, renaming and linking fail with EPERM (not ENOSYS), the disk still takes writes" {
	require_fuse
	make_test_image
	vf_mount "$IMG" "$MNT"
	run python3 -c '
import errno, os, sys
d = sys.argv[1]
f = os.path.join(d, "disk.raw")
tries = [
    ("create", lambda: os.open(os.path.join(d, "new"), os.O_CREAT | os.O_WRONLY, 0o644)),
    ("mknod", lambda: os.mkfifo(os.path.join(d, "fifo"))),
    ("mkdir", lambda: os.mkdir(os.path.join(d, "dir"))),
    ("symlink", lambda: os.symlink("disk.raw", os.path.join(d, "sym"))),
    ("link", lambda: os.link(f, os.path.join(d, "hard"))),
    ("unlink", lambda: os.unlink(f)),
    ("rename", lambda: os.rename(f, os.path.join(d, "other.raw"))),
]
bad = 0
for name, call in tries:
    try:
        call()
        print(name, "succeeded"); bad += 1
    except OSError as e:
        if e.errno != errno.EPERM:
            print(name, errno.errorcode[e.errno]); bad += 1
print(sorted(os.listdir(d)))
sys.exit(bad)' "$MNT"
	assert_success
	assert_output "['disk.raw']"
	# an existing file opened with O_CREAT (a shell redirect, cp) still works
	head -c 4096 /dev/urandom >"$T/chunk"
	cp "$T/chunk" "$MNT/disk.raw"
	cmp -n 4096 "$T/chunk" "$MNT/disk.raw"
	vf_umount "$MNT"
}

@test "the mount is read-only: writes, truncation and new files fail" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o ro
	run findmnt -rn -o OPTIONS -M "$MNT"
	assert_output --regexp '(^|,)ro(,|$)'
	run bash -c "echo x >>'$MNT/disk.raw'"
	assert_failure
	run python3 -c '
import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    sys.exit(0 if e.errno in (errno.EROFS, errno.EACCES) else 2)
sys.exit(1)' "$MNT/disk.raw"
	assert_success
	run truncate -s 0 "$MNT/disk.raw"
	assert_failure
	run dd if=/dev/zero of="$MNT/disk.raw" bs=512 count=1 conv=notrunc
	assert_failure
	run touch "$MNT/new-file"
	assert_failure
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
}

@test "reads at and past the end return what exists, then nothing" {
	require_fuse
	make_test_image
	local size
	size=$(virtual_size "$IMG")
	vf_mount "$IMG" "$MNT" -o ro
	run python3 -c '
import os, sys
size = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_RDONLY)
print(len(os.pread(fd, 4096, size - 100)), len(os.pread(fd, 10, size)),
      len(os.pread(fd, 10, size + 12345)), os.pread(fd, 2, size - 2).hex())
' "$MNT/disk.raw" "$size"
	assert_success
	assert_output "100 0 0 cdcd"
	vf_umount "$MNT"
}

@test "a sparse 1 TB disk: size and a read at the far end" {
	require_fuse
	make_image "$IMG" 1000000000000 'write -P 0x5e 999999995904 4096'
	vf_mount "$IMG" "$MNT" -o ro
	[ "$(stat -c %s "$MNT/disk.raw")" = 1000000000000 ]
	# 0x5e is octal 136
	cmp <(tail -c 4096 "$MNT/disk.raw") <(head -c 4096 /dev/zero | tr '\0' '\136')
	run bash -c "head -c 1048576 '$MNT/disk.raw' | tr -d '\\0' | wc -c"
	assert_output 0
	vf_umount "$MNT"
}

@test "parallel readers all see qemu-img's bytes (multi-threaded)" {
	require_fuse
	# random data with holes, so that reads cross present and absent blocks
	truncate -s 64M "$T/src.raw"
	local off
	for off in 0 5 17 18 40 63; do
		head -c 1M /dev/urandom | dd of="$T/src.raw" bs=1M seek="$off" \
			conv=notrunc status=none
	done
	qemu-img convert -f raw -O vhdx "$T/src.raw" "$IMG"
	qemu-io -f vhdx -c 'write -P 0x42 20M 13M' "$IMG" >/dev/null
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o ro
	local i pids=()
	for i in 0 1 2 3 4 5 6 7; do
		cmp <(dd if="$MNT/disk.raw" bs=1M skip=$((i * 8)) count=8 \
			iflag=direct status=none) \
			<(dd if="$T/ref.raw" bs=1M skip=$((i * 8)) count=8 \
				status=none) &
		pids+=($!)
	done
	for i in "${pids[@]}"; do
		wait "$i"
	done
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
}

@test "-s (single thread) and -d (debug) serve the same bytes" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	vf_mount "$IMG" "$MNT" -o ro -s
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	vf_mount "$IMG" "$MNT" -o ro -d
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	grep -q "READ" "$T/vhdxfuse.log"
}

@test "statfs works on the mount" {
	require_fuse
	make_test_image
	vf_mount "$IMG" "$MNT" -o ro
	run df -P "$MNT"
	assert_success
	assert_output --partial "$MNT"
	vf_umount "$MNT"
}

@test "the image file is byte-for-byte unchanged by a mount, reads and unmount" {
	require_fuse
	make_test_image
	local before mtime
	before=$(sha256 "$IMG")
	mtime=$(stat -c %y "$IMG")
	vf_mount "$IMG" "$MNT" -o ro
	cat "$MNT/disk.raw" >/dev/null
	vf_umount "$MNT"
	[ "$(sha256 "$IMG")" = "$before" ]
	[ "$(stat -c %y "$IMG")" = "$mtime" ]
}

# ------------------------------------------------------------ locking

@test "shared lock: a second read-only mount works, a write lock is refused until unmount" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	can_write_lock "$IMG"
	vf_mount "$IMG" "$MNT" -o ro
	run can_write_lock "$IMG"
	assert_failure
	touch "$T/second.raw"
	vf_mount "$IMG" "$T/second.raw" -o ro
	assert_same_content "$T/second.raw" "$T/ref.raw"
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$T/second.raw"
	run can_write_lock "$IMG"
	assert_failure
	vf_umount "$MNT"
	can_write_lock "$IMG"
}

@test "an image write-locked by another process: exit 32, 'in use'" {
	require_fuse
	make_test_image
	local holder
	hold_lock ex "$IMG"
	holder=$HOLDER_PID
	run_vf -o ro "$IMG" "$MNT"
	kill "$holder"
	assert_failure 32
	[[ $stderr == *"$IMG is in use (locked by PID "* ]]
	assert_not_mounted "$MNT"
}

@test "exclusive lock: a read-write mount excludes every other mount until unmounted" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	touch "$T/second.raw"
	vf_mount "$IMG" "$MNT"
	local o
	run can_write_lock "$IMG"
	assert_failure
	for o in "" "-o rw" "-o ro" "-r"; do
		# shellcheck disable=SC2086
		run_vf $o "$IMG" "$T/second.raw"
		assert_failure 32
		[[ $stderr == *"$IMG is in use (locked by PID "* ]] || {
			echo "with '$o': $stderr"
			return 1
		}
		assert_not_mounted "$T/second.raw"
	done
	# QEMU's own locking sees it: qemu-img needs -U while it is mounted
	run qemu-img info "$IMG"
	assert_failure
	run qemu-img info -U "$IMG"
	assert_success
	vf_alive "$MNT"
	vf_umount "$MNT"
	can_write_lock "$IMG"
	# after the unmount both kinds work again
	vf_mount "$IMG" "$T/second.raw" -o ro
	assert_same_content "$T/second.raw" "$T/ref.raw"
	vf_umount "$T/second.raw"
	vf_mount "$IMG" "$T/second.raw"
	assert_same_content "$T/second.raw" "$T/ref.raw"
	vf_umount "$T/second.raw"
}

@test "a read-only mount excludes a read-write one (exit 32, 'in use'), not another read-only one" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	local before
	before=$(sha256 "$IMG")
	touch "$T/second.raw"
	vf_mount "$IMG" "$MNT" -o ro
	local o
	for o in "" "-o rw" "-o ro,rw"; do
		# shellcheck disable=SC2086
		run_vf $o "$IMG" "$T/second.raw"
		assert_failure 32
		[[ $stderr == *"$IMG is in use (locked by PID "* ]] || {
			echo "with '$o': $stderr"
			return 1
		}
		assert_not_mounted "$T/second.raw"
	done
	vf_alive "$MNT"
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	vf_umount "$MNT"
	[ "$(sha256 "$IMG")" = "$before" ]
	vf_mount "$IMG" "$T/second.raw"
	assert_same_content "$T/second.raw" "$T/ref.raw"
	vf_umount "$T/second.raw"
}

@test "an image read-locked by another process: a read-write mount is refused, exit 32" {
	require_fuse
	make_test_image
	local holder
	hold_lock sh "$IMG"
	holder=$HOLDER_PID
	run_vf "$IMG" "$MNT"
	local st=$status err=$stderr
	# a read-only mount shares the lock
	vf_mount "$IMG" "$MNT" -o ro
	vf_umount "$MNT"
	kill "$holder"
	[ "$st" -eq 32 ]
	[[ $err == *"$IMG is in use (locked by PID "* ]]
	assert_not_mounted "$MNT"
}

# ------------------------------------------------------------ daemon mode

@test "without -f: detaches once mounted, logs nothing to the terminal, exits on unmount" {
	require_fuse
	make_test_image
	reference "$IMG" "$T/ref.raw"
	run_vf -o ro "$IMG" "$MNT" 3>&-
	assert_success
	[ -z "$output" ] && [ -z "$stderr" ]
	run findmnt -rn -o SOURCE,FSTYPE -M "$MNT"
	assert_output "$IMG fuse.vhdxfuse"
	local pids
	pids=($(daemon_pids "$MNT"))
	[ "${#pids[@]}" -eq 1 ]
	vf_track "$MNT" "${pids[0]}"
	# a daemon: its own session, not a child of this shell
	[ "$(ps -o sid= -p "${pids[0]}" | tr -d ' ')" = "${pids[0]}" ]
	assert_same_content "$MNT/disk.raw" "$T/ref.raw"
	fusermount3 -u "$MNT"
	wait_pid_gone "${pids[0]}" 10
	assert_not_mounted "$MNT"
	can_write_lock "$IMG"
}

@test "with -f: silent on success, exits 0 after fusermount3 -u" {
	require_fuse
	make_test_image
	vf_mount "$IMG" "$MNT" -o ro
	cat "$MNT/disk.raw" >/dev/null
	fusermount3 -u "$MNT"
	wait "$(vf_pid "$MNT")"
	[ ! -s "$T/vhdxfuse.log" ] || {
		cat "$T/vhdxfuse.log"
		return 1
	}
}

@test "SIGTERM, SIGHUP: unmount and exit 0" {
	require_fuse
	make_test_image
	local sig
	for sig in TERM HUP; do
		vf_mount "$IMG" "$MNT" -o ro
		kill -"$sig" "$(vf_pid "$MNT")"
		wait "$(vf_pid "$MNT")"
		assert_not_mounted "$MNT"
	done
}

@test "relative paths, detached: SIGTERM still unmounts (the daemon is in /)" {
	require_fuse
	make_test_image
	cd "$T"
	run_vf -o ro disk.vhdx mnt
	assert_success
	run findmnt -rn -o SOURCE,TARGET -M "$MNT"
	assert_output "$(realpath "$IMG") $(realpath "$MNT")"
	local pids
	pids=($(daemon_pids mnt))
	[ "${#pids[@]}" -eq 1 ]
	vf_track "$MNT" "${pids[0]}"
	[ "$(readlink "/proc/${pids[0]}/cwd")" = / ]
	kill -TERM "${pids[0]}"
	wait_pid_gone "${pids[0]}" 10
	assert_not_mounted "$MNT"
}

@test "a 64 TiB image (16 MiB BAT) mounts read-only with its BAT read on demand, and read-write" {
	require_fuse
	local size=$((64 << 40))
	"$TOP_BUILDDIR/vhdxtool" create -q --block-size 32M -s 64T "$T/huge.vhdx"
	touch "$T/disk"
	vf_mount "$T/huge.vhdx" "$T/disk" -o ro
	[ "$(stat -c %s "$T/disk")" = "$size" ]
	cmp <(dd if="$T/disk" bs=1M count=1 status=none) <(head -c 1M /dev/zero)
	cmp <(dd if="$T/disk" bs=1M skip=$(((size >> 20) - 1)) status=none) \
		<(head -c 1M /dev/zero)
	# the daemon did not keep the whole 16 MiB BAT
	local hwm
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$(vf_pid "$T/disk")/status")
	echo "# vhdxfuse VmHWM with the BAT read on demand: $hwm kB" >&3
	[ "$hwm" -lt 12000 ]
	vf_umount "$T/disk"
	vf_mount "$T/huge.vhdx" "$T/disk"
	head -c 4096 /dev/urandom >"$T/last"
	dd if="$T/last" of="$T/disk" bs=4096 seek=$(((size >> 12) - 1)) \
		conv=notrunc,fsync status=none
	vf_umount "$T/disk"
	vf_mount "$T/huge.vhdx" "$T/disk" -o ro
	cmp <(dd if="$T/disk" bs=4096 skip=$(((size >> 12) - 1)) status=none) "$T/last"
	vf_umount "$T/disk"
	run qemu-img check "$T/huge.vhdx"
	assert_success
}
