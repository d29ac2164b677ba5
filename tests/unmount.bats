#!/usr/bin/env bats
# An unmount that finishes: once the documented unmount command (umount(8)
# through the installed umount.vhdxfuse helper, or vhdxfuse -u) returns,
# the image is flushed, its log clear, closed and unlocked, so that the very
# next command (a remount, vhdxtool check, qemu-img check, a copy) finds it
# finished.  Also: lock errors that name the holder, the bounded wait for a
# holder that is shutting down, vhdxtool info/check -U on an image in use,
# and a real `make install` whose helpers mount(8) finds.

bats_require_minimum_version 1.5.0

load lib/common
load lib/sbin

setup() {
	common_setup
	STALE=()
	require_root
	require_fuse
	require_cmd qemu-img findmnt mount umount flock python3
	# the image on tmpfs when there is one: the cycles test the order of
	# events, not the host disk's fdatasync, which would make them slow
	S=$T
	[ -d /dev/shm ] && S=$(mktemp -d /dev/shm/vhdxfuse-test.XXXXXX)
	IMG=$S/disk.vhdx
	MNT=$T/mnt
	mkdir "$MNT"
	vf_track "$MNT"
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 16M
	qemu-img convert -f vhdx -O raw "$IMG" "$T/ref.raw"
	VHDXTOOL=$TOP_BUILDDIR/vhdxtool
}

teardown() {
	local p
	# the daemons mount(8) and vhdxfuse started, by their runtime record
	p=$(record_pid "$MNT" 2>/dev/null) && vf_track "$MNT" "$p"
	common_teardown
	sbin_teardown
	rm -f "${STALE[@]}"
	[ "$S" = "$T" ] || rm -rf "$S"
}

# write_both N: 64 KiB of random data at a place that depends on N, into the
# mounted disk and into $T/ref.raw (the expected content).
write_both() {
	local off=$((($1 * 7919 % 255) * 65536))
	head -c 65536 /dev/urandom >"$T/chunk"
	dd if="$T/chunk" of="$MNT/disk.raw" bs=64k seek=$((off / 65536)) \
		conv=notrunc status=none
	dd if="$T/chunk" of="$T/ref.raw" bs=64k seek=$((off / 65536)) \
		conv=notrunc status=none
}

# One failure of a cycle, kept for the summary.
fail_note() {
	FAILS=$((FAILS + 1))
	[ "$FAILS" -le 5 ] && printf 'cycle %s: %s\n' "$1" "$2" >>"$T/fails"
	return 0
}

# cycles N MOUNT_CMD...: N times mount (MOUNT_CMD), write, umount(8),
# check that the daemon has exited, then at once one of: remount (and compare what was written), vhdxtool
# check, qemu-img check, or (in the first 8 cycles of 8 in 4) sha256 of the
# image and again a second later.  Counts "in use" errors and differences.
cycles() {
	local n=$1 i v out a b pid
	shift
	FAILS=0
	: >"$T/fails"
	for ((i = 0; i < n; i++)); do
		"$@" || { fail_note "$i" "mount failed"; break; }
		write_both "$i"
		pid=$(record_pid "$MNT") || fail_note "$i" "no daemon record"
		umount "$MNT" || { fail_note "$i" "umount failed"; break; }
		# the most direct oracle: the daemon has exited already
		[ -z "$pid" ] || wait_pid_gone "$pid" 0 ||
			fail_note "$i" "daemon $pid still running after umount"
		v=$((i % 4))
		[ "$v" -eq 3 ] && [ "$i" -ge 32 ] && v=0
		case $v in
		0)
			out=$("$@" 2>&1) || fail_note "$i" "remount: $out"
			cmp -s "$MNT/disk.raw" "$T/ref.raw" ||
				fail_note "$i" "remount shows other data"
			umount "$MNT" || fail_note "$i" "second umount failed"
			;;
		1)
			out=$("$VHDXTOOL" check "$IMG" 2>&1) ||
				fail_note "$i" "vhdxtool check: $out"
			;;
		2)
			out=$(qemu-img check "$IMG" 2>&1) ||
				fail_note "$i" "qemu-img check: $out"
			;;
		3)
			a=$(sha256 "$IMG")
			sleep 1
			b=$(sha256 "$IMG")
			[ "$a" = "$b" ] || fail_note "$i" "the image changed"
			;;
		esac
		[ "$FAILS" -le 20 ] || break
	done
	cat "$T/fails"
	echo "$i cycles, $FAILS failures"
	[ "$FAILS" -eq 0 ] && [ "$i" -eq "$n" ]
	# and all that was written is there, as QEMU reads it
	qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
}

direct_mount() {
	"$VHDXFUSE" "$IMG" "$MNT"
}

fstab_mount() {
	mount --fstab "$T/fstab" "$MNT" 3>&-
}

@test "200 cycles: vhdxfuse IMAGE MNT, write, umount MNT, then at once remount / check / qemu-img check / sha256" {
	install_sbin_helpers
	run cycles 200 direct_mount
	echo "$output"
	assert_success
	assert_output --partial "200 cycles, 0 failures"
}

@test "200 cycles through an fstab entry of type vhdxfuse: mount MNT, write, umount MNT, then at once the same" {
	install_sbin_helpers
	printf '%s %s vhdxfuse defaults 0 0\n' "$IMG" "$MNT" >"$T/fstab"
	run cycles 200 fstab_mount
	echo "$output"
	assert_success
	assert_output --partial "200 cycles, 0 failures"
}

@test "umount(8) returns only after the daemon has exited; and the daemon's record is gone" {
	install_sbin_helpers
	local pid
	direct_mount
	pid=$(record_pid "$MNT")
	[ -n "$pid" ]
	# the daemon registered its mount for umount(8)'s helper
	grep -F "TARGET=$MNT " /run/mount/utab | grep -q "helper=vhdxfuse"
	write_both 1
	umount "$MNT"
	# gone at once, not after a while, and so is its record
	wait_pid_gone "$pid" 0
	[ ! -e "/run/vhdxfuse/$pid" ]
	run qemu-img check "$IMG"
	assert_success
}

@test "records left by killed daemons: one whose PID now names another process is not taken for the daemon; the next daemon removes them" {
	install_sbin_helpers
	local pid other dead real
	# a process that is not a daemon, holding a PID a dead daemon had
	sleep 300 &
	other=$!
	track_pid "$other"
	# and a PID that no process has any more
	true &
	dead=$!
	wait "$dead"
	direct_mount
	pid=$(record_pid "$MNT")
	[ -n "$pid" ]
	# hide the daemon's own record, so that only the stale ones name MNT
	# (umount then finds the daemon by its lock), and leave two stale ones:
	# one as written now (start time of another process) and one as written
	# by earlier versions (no start time)
	real=/run/vhdxfuse/$pid
	mv "$real" "$T/record"
	printf 'pid=%s\ndev=1\nino=1\nstate=mounted\nstart=1\nmountpoint=%s' \
		"$other" "$MNT" >"/run/vhdxfuse/$other"
	printf 'pid=%s\ndev=1\nino=1\nstate=mounted\nmountpoint=%s' \
		"$dead" "$MNT" >"/run/vhdxfuse/$dead"
	STALE=("/run/vhdxfuse/$other" "/run/vhdxfuse/$dead")
	write_both 1
	# umount waits for the daemon, not for the sleep (which would time out)
	run umount "$MNT"
	assert_success
	refute_output --partial "still closing"
	wait_pid_gone "$pid" 0
	kill -0 "$other"
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
	# the next daemon to start sweeps both stale records away
	[ -e "/run/vhdxfuse/$other" ] && [ -e "/run/vhdxfuse/$dead" ]
	direct_mount
	[ ! -e "/run/vhdxfuse/$other" ]
	[ ! -e "/run/vhdxfuse/$dead" ]
	pid=$(record_pid "$MNT")
	[ -e "/run/vhdxfuse/$pid" ]
	umount "$MNT"
	wait_pid_gone "$pid" 0
	kill "$other"
}

@test "vhdxfuse -u MNT (for fusermount3 users) unmounts and waits; -u on a non-vhdxfuse path fails" {
	local pid i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		direct_mount
		pid=$(record_pid "$MNT")
		write_both "$i"
		run "$VHDXFUSE" -u "$MNT"
		assert_success
		wait_pid_gone "$pid" 0
		run "$VHDXTOOL" check "$IMG"
		assert_success
	done
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
	run "$VHDXFUSE" -u "$MNT"
	assert_failure 32
	assert_output --partial "not mounted"
	run "$VHDXFUSE" -u
	assert_failure 1
}

@test "vhdxtool info -U on an image mounted read-write: shows its structures, changes nothing; without -U the error names the holder" {
	local pid before
	direct_mount
	pid=$(record_pid "$MNT")
	write_both 3
	before=$(sha256 "$IMG")
	run --separate-stderr "$VHDXTOOL" info "$IMG"
	assert_failure
	[[ $stderr == *"$IMG is in use (locked by PID $pid (vhdxfuse), mounted at $MNT)"* ]]
	run --separate-stderr "$VHDXTOOL" info -U "$IMG"
	assert_success
	[[ $stderr == *"in use (locked by PID $pid"*"may be stale"* ]]
	assert_output --partial "format:"
	assert_output --partial "BAT"
	run --separate-stderr "$VHDXTOOL" info --force-share --json "$IMG"
	assert_success
	echo "$output" | python3 -c 'import json,sys; json.load(sys.stdin)'
	run --separate-stderr "$VHDXTOOL" check -U "$IMG"
	[[ $stderr == *"may be stale"* ]]
	run --separate-stderr "$VHDXTOOL" check -U --repair "$IMG"
	assert_failure 1
	[ "$(sha256 "$IMG")" = "$before" ]
	# QEMU agrees that the image is locked (and that -U is the way)
	run qemu-img info "$IMG"
	assert_failure
	"$VHDXFUSE" -u "$MNT"
	run "$VHDXTOOL" check "$IMG"
	assert_success
}

@test "a lock held by a process that is not a daemon is named by PID, and refused at once" {
	local holder t0
	hold_lock ex "$IMG"
	holder=$HOLDER_PID
	t0=$SECONDS
	run --separate-stderr "$VHDXTOOL" info "$IMG"
	assert_failure
	[[ $stderr == *"in use (locked by PID $holder (python3))"* ]]
	run --separate-stderr "$VHDXFUSE" -f "$IMG" "$MNT"
	assert_failure 32
	[[ $stderr == *"in use (locked by PID $holder (python3))"* ]]
	# no wait: the holder is not shutting down
	[ $((SECONDS - t0)) -lt 3 ]
	kill "$holder"
}

@test "a lock whose daemon is unmounted but still closing is waited for (bounded, lock_wait=)" {
	local pid t0
	direct_mount
	pid=$(record_pid "$MNT")
	# stop the daemon, then detach its mount (a lazy unmount does not
	# wait for it): it cannot close yet
	kill -STOP "$pid"
	umount -i -l "$MNT"
	(sleep 1.5 && kill -CONT "$pid") &
	t0=$(date +%s%N)
	run --separate-stderr "$VHDXTOOL" check "$IMG"
	assert_success
	# it waited for the daemon's exit, not the full 5 s
	[ $((($(date +%s%N) - t0) / 1000000)) -ge 1000 ]
	wait_pid_gone "$pid" 0

	# the wait is bounded: with 0 s the error comes at once and says why
	direct_mount
	pid=$(record_pid "$MNT")
	kill -STOP "$pid"
	umount -i -l "$MNT"
	VHDXFUSE_LOCK_WAIT=0 run --separate-stderr "$VHDXTOOL" info "$IMG"
	assert_failure
	[[ $stderr == *"locked by PID $pid (vhdxfuse), unmounted from $MNT but still closing it"* ]]
	run --separate-stderr "$VHDXFUSE" -f -o lock_wait=0.2 "$IMG" "$MNT"
	assert_failure 32
	[[ $stderr == *"still closing"* ]]
	kill -CONT "$pid"
	run --separate-stderr "$VHDXFUSE" -f -o lock_wait=bad "$IMG" "$MNT"
	assert_failure 1
}

@test "make install (into a temporary prefix, helpers where mount(8) looks): fstab type vhdxfuse mounts and unmounts; make uninstall" {
	local prefix helperdir=/sbin f pid
	sbin_lock
	for f in mount.vhdxfuse umount.vhdxfuse umount.fuse.vhdxfuse; do
		[ ! -e "$helperdir/$f" ] ||
			skip "$helperdir/$f is installed already; not replacing it"
	done
	grep -q "^mounthelperdir = $helperdir\$" "$TOP_BUILDDIR/Makefile" ||
		skip "configured with another --with-mount-helper-dir"
	prefix=$T/prefix
	run make -C "$TOP_BUILDDIR" install "prefix=$prefix"
	assert_success
	VF_SBIN_INSTALLED+=("$helperdir/mount.vhdxfuse" \
		"$helperdir/umount.vhdxfuse" "$helperdir/umount.fuse.vhdxfuse")
	# the installed helpers run the installed daemon
	grep -qF "$prefix/bin" "$helperdir/mount.vhdxfuse"
	grep -qF "$prefix/bin/vhdxfuse" "$helperdir/umount.vhdxfuse"
	cmp "$prefix/bin/vhdxfuse" "$TOP_BUILDDIR/vhdxfuse"
	printf '%s %s vhdxfuse defaults 0 0\n' "$IMG" "$MNT" >"$T/fstab"
	# a PATH without the build tree or the prefix: mount(8) finds it all
	PATH=/usr/sbin:/usr/bin:/sbin:/bin run mount --fstab "$T/fstab" "$MNT" 3>&-
	assert_success
	run findmnt -rn -o SOURCE,FSTYPE -M "$MNT"
	assert_output "$IMG fuse.vhdxfuse"
	pid=$(record_pid "$MNT")
	[ "$(readlink "/proc/$pid/exe")" = "$prefix/bin/vhdxfuse" ]
	write_both 5
	PATH=/usr/sbin:/usr/bin:/sbin:/bin run umount "$MNT"
	assert_success
	wait_pid_gone "$pid" 0
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/ref.raw"
	assert_success
	run make -C "$TOP_BUILDDIR" uninstall "prefix=$prefix"
	assert_success
	for f in mount.vhdxfuse umount.vhdxfuse umount.fuse.vhdxfuse; do
		[ ! -e "$helperdir/$f" ] && [ ! -L "$helperdir/$f" ]
	done
	[ -z "$(find "$prefix" -type f)" ]
}
