#!/usr/bin/env bats
# SIGKILL the daemon at random moments of a write workload, many times over.
#
# Each round: tests/lib/write-killload.py writes seeded random data through
# the mount with an fsync every few writes, logging (to a local file) what it
# issued, what completed and which fsyncs returned.  After a random delay the
# daemon gets SIGKILL; the kernel fails the writer's pending request, the dead
# mount is detached (fusermount3 -u -z) and the writer exits.  Then, with the
# image as the kill left it:
#
#  * qemu-img check without -r either finds no errors or refuses the image
#    only because its log needs replaying; vhdxtool check reports nothing
#    but that dirty log;
#  * qemu-img check -r all on a copy replays the log (QEMU's replay, not
#    ours) and finds no errors; qemu-img convert of that copy is the disk
#    after the crash;
#  * every write before the last completed fsync reads back exactly in it,
#    every sector written after it holds its old content or the data of a
#    later write, and nothing else changed (write-killload.py check, then
#    qemu-img compare of the updated reference);
#  * vhdxfuse remounts the image read-write (replaying the log into the file)
#    and serves the same bytes as QEMU's replay; the next round starts there.
#
# KILL_ROUNDS and KILL_SEED (environment) override the number of rounds per
# test and the seed; the seed is printed so that a failure can be replayed.

bats_require_minimum_version 1.5.0

load lib/common

setup() {
	common_setup
	require_root
	require_fuse
	require_cmd qemu-img python3 cmp
	MNT=$T/mnt
	mkdir "$MNT"
	IMG=$T/disk.vhdx
	VHDXTOOL=$TOP_BUILDDIR/vhdxtool
	LOAD=$TOP_SRCDIR/tests/lib/write-killload.py
}

teardown() {
	common_teardown
}

# vhdxtool check IMG: clean, or nothing but a dirty log (a replay pending,
# or a LogGuid set before the first entry was written) and leaked space.
vhdxtool_check_killed() {
	run "$VHDXTOOL" check -q "$1"
	[ "$status" -eq 0 ] && return 0
	if [ "$status" -ne 2 ] ||
		[ "$(grep -c ': problem: ' <<<"$output")" -ne 1 ] ||
		! grep -Eq ': problem: (the log is dirty|LogGuid .* is set but the log holds no valid entry)' <<<"$output"; then
		echo "vhdxtool check, status $status, after the kill:" >&2
		echo "$output" >&2
		return 1
	fi
}

# kill_rounds ROUNDS: the rounds described above on $IMG, mounted on $MNT.
# $T/base.raw must hold the disk as it is before the first round.
kill_rounds() {
	local rounds=$1 r seed delay wpid raw act="$T/act.raw" dirty=0 hung=0
	local seed0=${KILL_SEED:-$((RANDOM * 32768 + RANDOM))}
	note "kill rounds: $rounds, seed $seed0 ($(basename "$IMG"))"
	vf_mount "$IMG" "$MNT"
	raw=$(vf_raw_path "$MNT")
	for r in $(seq 1 "$rounds"); do
		seed=$((seed0 + r))
		rm -f "$T/load.log"
		python3 "$LOAD" run --seed "$seed" --log "$T/load.log" \
			--seconds 30 "$raw" >"$T/load.out" 2>&1 3>&- &
		wpid=$!
		track_pid "$wpid"
		# the delay counts from the writer's first step
		until [ -s "$T/load.log" ] || ! kill -0 "$wpid" 2>/dev/null; do
			sleep 0.01
		done
		# 0.10 s to 1.30 s into the workload
		delay=$(printf '0.%02d' $((10 + RANDOM % 90)))
		[ $((RANDOM % 4)) -eq 0 ] && delay=1.$((RANDOM % 30 + 10))
		sleep "$delay"
		vf_kill "$MNT"
		if ! wait_pid_gone "$wpid" 10; then
			hung=$((hung + 1))
			kill -KILL "$wpid" 2>/dev/null || true
		fi
		wait "$wpid" || true

		# the image as the kill left it
		cp "$IMG" "$T/copy.vhdx"
		# (a time limit: qemu-img 7.2 used to loop forever on some
		# crash states of our log, see journal.c commit_entry)
		run timeout 120 qemu-img check "$IMG"
		if [ "$status" -ne 0 ]; then
			[[ $output == *"contains a log that needs to be replayed"* ]] || {
				echo "round $r (seed $seed): qemu-img check: $output" >&2
				return 1
			}
			dirty=$((dirty + 1))
		fi
		vhdxtool_check_killed "$IMG"

		# QEMU's replay is the oracle
		run timeout 120 qemu-img check -r all "$T/copy.vhdx"
		[ "$status" -eq 0 ] || {
			echo "round $r (seed $seed): qemu-img check -r all: $output" >&2
			return 1
		}
		rm -f "$act"
		qemu-img convert -f vhdx -O raw "$T/copy.vhdx" "$act"
		run python3 "$LOAD" check --seed "$seed" --log "$T/load.log" \
			--base "$T/base.raw" --actual "$act"
		note "round $r: delay ${delay}s; ${output##*kill-check: }"
		[ "$status" -eq 0 ] || {
			echo "round $r (seed $seed, delay $delay):" >&2
			echo "$output" >&2
			return 1
		}
		run qemu-img compare -f raw -F raw "$T/base.raw" "$act"
		[ "$status" -eq 0 ] || {
			echo "round $r (seed $seed): bytes no write touched changed: $output" >&2
			return 1
		}

		# our replay, into the file, gives the same disk
		vf_mount "$IMG" "$MNT"
		cmp "$raw" "$act"
	done
	vf_umount "$MNT"
	run qemu-img check "$IMG"
	assert_success
	assert_output --partial "No errors were found"
	run "$VHDXTOOL" check -q "$IMG"
	assert_success
	run qemu-img compare -f vhdx -F raw "$IMG" "$T/base.raw"
	assert_success
	note "kills: $rounds; dirty log left by $dirty; writers that had to be killed: $hung"
	[ "$hung" -eq 0 ]
}

@test "SIGKILL during writes: dynamic image, 1 MiB blocks (qemu-img), 12 kills" {
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 1G
	qemu-img convert -f vhdx -O raw "$IMG" "$T/base.raw"
	kill_rounds "${KILL_ROUNDS:-12}"
}

@test "SIGKILL during writes: vhdxtool-made dynamic image, 2 MiB blocks, odd size, 6 kills" {
	"$VHDXTOOL" create -q -s $((600 * 1048576 + 7 * 512)) --block-size 2M "$IMG"
	qemu-img convert -f vhdx -O raw "$IMG" "$T/base.raw"
	kill_rounds "${KILL_ROUNDS:-6}"
}

@test "SIGKILL during writes: fixed image with ZERO blocks (qemu-img), 6 kills" {
	qemu-img create -q -f vhdx -o subformat=fixed,block_size=1M,block_state_zero=on \
		"$IMG" 200M
	qemu-img convert -f vhdx -O raw "$IMG" "$T/base.raw"
	kill_rounds "${KILL_ROUNDS:-6}"
}

# The checker itself must catch a lost fsynced write, a sector holding
# data that no write put there, and a change outside the written ranges.
@test "the kill checker fails on a lost fsynced write or foreign data" {
	local seed=77 d
	truncate -s 1M "$T/zero.raw"
	# write 0 (4 KiB at 8 KiB) completes and is fsynced; write 1 (512 bytes
	# at 64 KiB) is in flight when the daemon dies
	printf 'W 0 8192 4096\nD 0\nS 0\nF 0 1\nW 1 65536 512\n' >"$T/load.log"
	d() { python3 -c 'import random, sys
sys.stdout.buffer.write(random.Random(sys.argv[1]).randbytes(int(sys.argv[2])))' "$1" "$2"; }
	# the disk as it should be: write 0 there, write 1 either way
	cp "$T/zero.raw" "$T/good.raw"
	d "$seed:0" 4096 | dd of="$T/good.raw" bs=4096 seek=2 conv=notrunc status=none
	cp "$T/zero.raw" "$T/base.raw"
	run python3 "$LOAD" check --seed $seed --log "$T/load.log" \
		--base "$T/base.raw" --actual "$T/good.raw"
	assert_success
	assert_output --partial "old=1 new=0"
	cmp "$T/base.raw" "$T/good.raw"
	d "$seed:1" 512 | dd of="$T/good.raw" bs=512 seek=128 conv=notrunc status=none
	cp "$T/zero.raw" "$T/base.raw"
	run python3 "$LOAD" check --seed $seed --log "$T/load.log" \
		--base "$T/base.raw" --actual "$T/good.raw"
	assert_success
	assert_output --partial "old=0 new=1"
	# the fsynced write lost: its bytes differ, which the comparison of
	# the patched base with the disk (what kill_rounds runs next) sees
	cp "$T/zero.raw" "$T/base.raw"
	run python3 "$LOAD" check --seed $seed --log "$T/load.log" \
		--base "$T/base.raw" --actual "$T/zero.raw"
	assert_success
	run qemu-img compare -f raw -F raw "$T/base.raw" "$T/zero.raw"
	assert_failure
	# foreign data in the sector of the unsynced write
	cp "$T/good.raw" "$T/bad.raw"
	printf 'garbage' | dd of="$T/bad.raw" bs=1 seek=65600 conv=notrunc status=none
	cp "$T/zero.raw" "$T/base.raw"
	run python3 "$LOAD" check --seed $seed --log "$T/load.log" \
		--base "$T/base.raw" --actual "$T/bad.raw"
	assert_failure
	assert_output --partial "VIOLATION: sector 128"
}
