#!/usr/bin/env bats
# fstab and mount(8): entries of type fuse.vhdxfuse (through the stock
# mount.fuse3) and vhdxfuse (through contrib/mount.vhdxfuse.in), read-only (ro)
# and read-write (the default: defaults, rw), mounted with
# `mount --fstab FILE MOUNTPOINT`, unmounted with umount(8), and no daemon
# left behind.
#
# mount(8) runs its helpers with a fixed PATH, not the caller's, so the
# daemon of the build tree is made visible as /usr/local/bin/vhdxfuse (for
# the stock mount.fuse3), and the helpers mount.vhdxfuse and umount.vhdxfuse
# in /sbin (the only place mount(8) looks, see lib/sbin.bash), for the
# duration of a test, and only if nothing else is installed there.  With
# the umount helper, umount(8) returns only once the daemon has exited.

bats_require_minimum_version 1.5.0

load lib/common
load lib/sbin

# What mount(8) finds when its helpers run "vhdxfuse".
VF_STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

setup() {
	common_setup
	VF_INSTALLED=()
	require_root
	require_fuse
	require_cmd qemu-img qemu-io findmnt mount umount python3
	IMG=$T/disk.vhdx
	MNT=$T/mnt
	mkdir "$MNT"
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 16M
	qemu-io -f vhdx -c 'write -P 0xab 0 1M' -c 'write -P 0x5c 15M 1M' \
		"$IMG" >/dev/null
	qemu-img convert -f vhdx -O raw "$IMG" "$T/ref.raw"
	install_daemon
	install_sbin_helpers
}

teardown() {
	common_teardown
	local f
	for f in "${VF_INSTALLED[@]}"; do
		rm -f "$f"
	done
	sbin_teardown
}

# Make the build tree's daemon the one mount(8)'s helpers run.
install_daemon() {
	local found
	found=$(PATH=$VF_STD_PATH command -v vhdxfuse || true)
	if [ -n "$found" ]; then
		[ "$(readlink -f "$found")" = "$(readlink -f "$VHDXFUSE")" ] ||
			skip "$found is installed and would be tested instead of $VHDXFUSE"
		return 0
	fi
	ln -s "$(readlink -f "$VHDXFUSE")" /usr/local/bin/vhdxfuse
	VF_INSTALLED+=(/usr/local/bin/vhdxfuse)
}

# fstab_mount SPEC MOUNTPOINT TYPE OPTIONS: mount through a temporary fstab.
fstab_mount() {
	printf '%s %s %s %s 0 0\n' "$1" "$2" "$3" "$4" >"$T/fstab"
	vf_track "$2"
	run --separate-stderr mount --fstab "$T/fstab" "$2" 3>&-
}

# assert_vhdxfuse_mount MOUNTPOINT [ro|rw]: check the mount at MOUNTPOINT
# (read-only unless rw is given) and track its daemon there (vf_pid).
assert_vhdxfuse_mount() {
	local mnt=$1 mode=${2:-ro} pids
	run findmnt -rn -o SOURCE,FSTYPE -M "$mnt"
	assert_output "$IMG fuse.vhdxfuse"
	run findmnt -rn -o OPTIONS -M "$mnt"
	assert_output --regexp "^$mode(,|\$)"
	pids=($(daemon_pids "$mnt"))
	[ "${#pids[@]}" -eq 1 ]
	vf_track "$mnt" "${pids[0]}"
}

# umount(8) MOUNTPOINT; when it returns, the daemon has exited already.
umount_and_check() {
	local mnt=$1 pid
	pid=$(vf_pid "$mnt")
	run umount "$mnt"
	assert_success
	assert_not_mounted "$mnt"
	wait_pid_gone "$pid" 0
}

@test "fstab type fuse.vhdxfuse with ro,nofail,x-systemd.automount" {
	fstab_mount "$IMG" "$MNT" fuse.vhdxfuse ro,nofail,x-systemd.automount
	assert_success
	assert_vhdxfuse_mount "$MNT"
	run ls -A "$MNT"
	assert_output "disk.raw"
	cmp "$MNT/disk.raw" "$T/ref.raw"
	umount_and_check "$MNT"
}

@test "fstab type vhdxfuse (mount.vhdxfuse helper) with ro,nofail,x-systemd.automount" {
	fstab_mount "$IMG" "$MNT" vhdxfuse ro,nofail,x-systemd.automount
	assert_success
	assert_vhdxfuse_mount "$MNT"
	cmp "$MNT/disk.raw" "$T/ref.raw"
	umount_and_check "$MNT"
}

@test "fstab options reach the daemon: uid, umask, filename; file mount point" {
	local mode
	mode=$(printf '%o' $((0444 & ~027)))
	fstab_mount "$IMG" "$MNT" vhdxfuse ro,uid=1234,gid=99,umask=027,filename=x.img,_netdev
	assert_success
	assert_vhdxfuse_mount "$MNT"
	run ls -A "$MNT"
	assert_output "x.img"
	run stat -c "%u %g %a" "$MNT/x.img"
	assert_output "1234 99 $mode"
	umount_and_check "$MNT"

	touch "$T/disk.img"
	fstab_mount "$IMG" "$T/disk.img" fuse.vhdxfuse ro,nofail
	assert_success
	assert_vhdxfuse_mount "$T/disk.img"
	cmp "$T/disk.img" "$T/ref.raw"
	umount_and_check "$T/disk.img"
}

# write_both FILE: the same seeded writes (unaligned, across the 1 MiB
# blocks, into absent blocks, the last byte) into FILE and $T/ref.raw.
write_both() {
	python3 - "$1" "$T/ref.raw" "$RANDOM" <<'EOF'
import os, random, sys
rng = random.Random(int(sys.argv[3]))
fds = [os.open(p, os.O_WRONLY) for p in sys.argv[1:3]]
size = os.path.getsize(sys.argv[2])
ops = [(size - 1, 1)] + [(rng.randrange(size - 300000),
                          rng.randint(1, 300000)) for _ in range(30)]
for off, ln in ops:
    buf = rng.randbytes(ln)
    for fd in fds:
        assert os.pwrite(fd, buf, off) == ln
for fd in fds:
    os.fsync(fd)
    os.close(fd)
EOF
}

@test "fstab entries with defaults (no ro) mount read-write; writes reach the image" {
	local type
	for type in fuse.vhdxfuse vhdxfuse; do
		fstab_mount "$IMG" "$MNT" "$type" defaults
		assert_success
		[ -z "$stderr" ]
		assert_vhdxfuse_mount "$MNT" rw
		write_both "$MNT/disk.raw"
		cmp "$MNT/disk.raw" "$T/ref.raw"
		umount_and_check "$MNT"
		# the daemon has closed the image: QEMU may open it, and agrees
		run qemu-img check "$IMG"
		assert_success
		run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
		assert_success
	done
}

@test "fstab entries with rw and with ro,nofail side by side for two images" {
	cp "$IMG" "$T/other.vhdx"
	cp "$T/ref.raw" "$T/other.raw"
	mkdir "$T/mnt2"
	printf '%s %s %s %s 0 0\n' "$IMG" "$MNT" vhdxfuse rw,nofail \
		"$T/other.vhdx" "$T/mnt2" fuse.vhdxfuse ro,nofail >"$T/fstab"
	vf_track "$MNT"
	vf_track "$T/mnt2"
	run mount --fstab "$T/fstab" "$MNT" 3>&-
	assert_success
	run mount --fstab "$T/fstab" "$T/mnt2" 3>&-
	assert_success
	assert_vhdxfuse_mount "$MNT" rw
	run findmnt -rn -o SOURCE,FSTYPE,OPTIONS -M "$T/mnt2"
	assert_output --regexp "^$T/other.vhdx fuse.vhdxfuse ro(,|\$)"
	local rod
	rod=$(daemon_pids "$T/mnt2")
	[ -n "$rod" ]
	vf_track "$T/mnt2" "$rod"
	run dd if=/dev/zero of="$T/mnt2/other.raw" bs=512 count=1 conv=notrunc
	assert_failure
	write_both "$MNT/disk.raw"
	cmp "$T/mnt2/other.raw" "$T/other.raw"
	umount_and_check "$T/mnt2"
	umount_and_check "$MNT"
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
	run qemu-img compare -f vhdx -F raw "$T/other.vhdx" "$T/other.raw"
	assert_success
}

@test "mount -t vhdxfuse and -t fuse.vhdxfuse on the command line, with -o ro and without" {
	local type
	for type in vhdxfuse fuse.vhdxfuse; do
		vf_track "$MNT"
		run mount -t "$type" -o ro "$IMG" "$MNT" 3>&-
		assert_success
		assert_vhdxfuse_mount "$MNT"
		cmp "$MNT/disk.raw" "$T/ref.raw"
		umount_and_check "$MNT"
		# without -o: read-write
		run mount -t "$type" "$IMG" "$MNT" 3>&-
		assert_success
		assert_vhdxfuse_mount "$MNT" rw
		write_both "$MNT/disk.raw"
		umount_and_check "$MNT"
		run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
		assert_success
	done
}

@test "a bad image through mount(8): fails, nothing mounted, image untouched" {
	head -c 65536 /dev/urandom >"$T/bad.vhdx"
	local before
	before=$(sha256 "$T/bad.vhdx")
	vf_track "$MNT"
	run --separate-stderr mount -t vhdxfuse -o ro "$T/bad.vhdx" "$MNT" 3>&-
	assert_failure
	[[ $stderr == *"vhdxfuse: $T/bad.vhdx: "* ]]
	assert_not_mounted "$MNT"
	[ "$(sha256 "$T/bad.vhdx")" = "$before" ]
}

@test "mount -f (fake) through the helper mounts nothing" {
	vf_track "$MNT"
	run mount -f -t vhdxfuse -o ro "$IMG" "$MNT" 3>&-
	assert_success
	assert_not_mounted "$MNT"
	[ -z "$(daemon_pids "$MNT")" ]
}
