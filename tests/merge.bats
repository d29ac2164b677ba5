#!/usr/bin/env bats
# vhdxtool merge interrupted by SIGKILL at random moments, then finished the
# documented way (the same command again), and merges that an older
# vhdxtool left behind (--resume).
#
# The pair: a 512 MiB parent made by qemu-img from a raw disk with 64 MiB of
# scattered data, and a differencing child (vhdxtool create) that gets
# 300 MiB of its own scattered data through a read-write vhdxfuse mount;
# the same writes go into a copy of the raw disk, the reference.  Oracles:
# that reference (qemu-img compare of the merged parent with it, and its
# sha256 against a read-only mount of the child), qemu-img check; never our
# own reading of the result alone.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"
source "$BATS_TEST_DIRNAME/lib/diff-lib.bash"

FILL=$TOP_SRCDIR/tests/lib/merge-fill.py
SIZE=$((512 * 1024 * 1024))

# Scratch space for the file: a tmpfs of its own when root (these tests
# copy and rewrite hundreds of MiB per round), else the usual place.
# (Not /dev/shm: parents under /dev are refused by design.)
scratch_setup() {
	P=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vhdxfuse-merge.XXXXXX")
	if [ "$(id -u)" -eq 0 ] &&
		mount -t tmpfs -o size=3G,mode=0700 tmpfs "$P"; then
		echo yes >"$P/.tmpfs"
	fi
	export P
}

scratch_teardown() {
	[ -n "${P:-}" ] || return 0
	[ -e "$P/.tmpfs" ] && umount "$P"
	rm -rf "$P"
}

# Build the pair once for the file: $P/p.orig, $P/c.orig (and the sibling
# $P/s.orig), made as p0.vhdx, c0.vhdx and s0.vhdx; $P/want.
setup_file() {
	scratch_setup
	[ -c /dev/fuse ] || return 0
	local pid raw=$P/ref.raw
	truncate -s $SIZE "$raw"
	python3 "$FILL" 1 $((64 << 20)) $SIZE "$raw"
	qemu-img convert -f raw -O vhdx -o subformat=dynamic "$raw" \
		"$P/p0.vhdx"
	"$TOP_BUILDDIR/vhdxtool" create -t differencing --parent "$P/p0.vhdx" \
		"$P/c0.vhdx"
	# a sibling: another child of the same parent, nothing of its own
	"$TOP_BUILDDIR/vhdxtool" create -t differencing --parent "$P/p0.vhdx" \
		"$P/s0.vhdx"
	touch "$P/disk"
	"$VHDXFUSE" -f -o sparse "$P/c0.vhdx" "$P/disk" 2>"$P/fuse.log" &
	pid=$!
	for _ in $(seq 200); do
		findmnt -rn -M "$P/disk" >/dev/null && break
		sleep 0.05
	done
	python3 "$FILL" 2 $((300 << 20)) $SIZE "$P/disk" "$raw" ||
		{ fusermount3 -u "$P/disk"; return 1; }
	cmp "$P/disk" "$raw" || { fusermount3 -u "$P/disk"; return 1; }
	fusermount3 -u "$P/disk"
	wait "$pid"
	sha256sum "$raw" | cut -d' ' -f1 >"$P/want"
	# the children's absolute_win32_path names $P/p0.vhdx: keep the
	# originals under other names, so the tests' copies in $T only ever
	# find the copy of the parent next to them
	mv "$P/p0.vhdx" "$P/p.orig"
	mv "$P/c0.vhdx" "$P/c.orig"
	mv "$P/s0.vhdx" "$P/s.orig"
}

teardown_file() {
	scratch_teardown
}

setup() {
	common_setup
	# the images of the test go next to the pair (tmpfs when root)
	rmdir "$T" && T=$P/t$BATS_TEST_NUMBER && mkdir "$T"
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_fuse
	require_cmd qemu-img python3
	[ -s "$P/want" ] || fail "the pair was not built (see setup_file)"
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# Fresh copies of the pair and the sibling in $T, under the same names:
# the children find the copy of the parent through their relative_path.
# A merge writes only the parent: later rounds restore only that.
restore() {
	local f
	for f in p c s; do
		[ "$f" != p ] && [ -e "$T/${f}0.vhdx" ] && continue
		cp --reflink=auto --sparse=always "$P/$f.orig" "$T/${f}0.vhdx" ||
			return 1
	done
}

# The merged parent shows the reference (qemu-img compare reads both), and
# both checks are clean.
expect_merged() {
	qemu-img check -q -f vhdx "$T/p0.vhdx" || return 1
	"$VHDXTOOL" check -q "$T/p0.vhdx" || return 1
	if ! qemu-img compare -q -f vhdx -F raw "$T/p0.vhdx" "$P/ref.raw"; then
		echo "the merged parent differs from the child's view" >&2
		return 1
	fi
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

@test "merge: an uninterrupted merge; the child's view before it" {
	restore
	# the child shows the reference before the merge (read-only mount)
	assert_equal "$(dl_exposed_sha_p "$T/c0.vhdx")" "$(cat "$P/want")"
	local t0 t1
	t0=$(now_ms)
	run "$VHDXTOOL" merge "$T/c0.vhdx"
	t1=$(now_ms)
	assert_success
	assert_output --partial "now stale"
	echo "# one merge of 300 MiB: $((t1 - t0)) ms" >&3
	expect_merged
	# a rerun finds nothing to do and changes nothing
	local before
	before=$(sha256 "$T/p0.vhdx")
	run "$VHDXTOOL" merge "$T/c0.vhdx"
	assert_success
	assert_output --partial "0 bytes written"
	assert_equal "$(sha256 "$T/p0.vhdx")" "$before"
}

# SHA-256 of the disk a read-only mount of IMAGE exposes.
dl_exposed_sha_p() {
	local sum
	vf_mount "$1" "$T/mnt" -o ro || return 1
	sum=$(fast_sha256 "$(vf_raw_path "$T/mnt")")
	vf_umount "$T/mnt" || return 1
	echo "$sum"
}

# The DataWriteGuid of IMAGE's current header (the higher sequence number;
# a SIGKILL cannot tear a header write), as hex bytes.  Read with od, not
# Python: this runs every round.
dwg() {
	local s1 s2 off=$((0x10000))
	s1=$(od -An -t u8 -j $((0x10000 + 8)) -N 8 "$1" | tr -d ' ')
	s2=$(od -An -t u8 -j $((0x20000 + 8)) -N 8 "$1" | tr -d ' ')
	[ "$s2" -gt "$s1" ] && off=$((0x20000))
	od -An -t x1 -j $((off + 32)) -N 16 "$1" | tr -d ' \n'
}

@test "merge: 20 SIGKILLs at random moments, each finished by running merge again" {
	local kills=${MERGE_KILLS:-20} round=0 mid=0 again=0 t0 t1 dur
	local g0 delay pid out
	# how long one merge takes here, to spread the kills over it
	restore
	t0=$(now_ms)
	"$VHDXTOOL" merge -q "$T/c0.vhdx"
	t1=$(now_ms)
	dur=$((t1 - t0))
	g0=$(dwg "$P/p.orig")
	while [ "$round" -lt "$kills" ]; do
		restore
		# anywhere from the start to 95% of a merge's time
		delay=$((RANDOM % (dur * 95 / 100 + 1)))
		"$VHDXTOOL" merge -q "$T/c0.vhdx" &
		pid=$!
		sleep_ms "$delay"
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" && continue # finished before the kill: not counted
		round=$((round + 1))
		if [ "$(dwg "$T/p0.vhdx")" != "$g0" ]; then
			mid=$((mid + 1))
			# the child is refused, saying how to finish; the
			# sibling is stale (it does not say "interrupted")
			vf_start "$T/c0.vhdx" "$T/mnt" -o ro
			[ "$status" -ne 0 ]
			assert_output --partial "was interrupted or has finished; run it again"
			vf_start "$T/s0.vhdx" "$T/mnt" -o ro
			[ "$status" -ne 0 ]
			assert_output --partial "linkage mismatch"
			refute_output --partial "interrupted"
			assert_not_mounted "$T/mnt"
		fi
		# every third round, kill the rerun as well
		if [ $((round % 3)) -eq 0 ]; then
			"$VHDXTOOL" merge -q "$T/c0.vhdx" &
			pid=$!
			sleep_ms $((RANDOM % (dur / 2 + 1)))
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" || again=$((again + 1))
		fi
		# the documented way to finish: the same command again
		run "$VHDXTOOL" merge -q "$T/c0.vhdx"
		assert_success
		expect_merged
		# and the sibling stays stale
		vf_start "$T/s0.vhdx" "$T/mnt" -o ro
		[ "$status" -ne 0 ]
		assert_not_mounted "$T/mnt"
	done
	echo "# $round kills of merge ($mid after its first write," \
		"$again more of a rerun), merge takes ${dur} ms" >&3
	# most kills must have hit a merge in progress
	[ "$mid" -ge $((kills / 2)) ]
	# the sibling cannot be forced into the merged parent either, and
	# the parent is left alone
	local before
	before=$(sha256 "$T/p0.vhdx")
	run "$VHDXTOOL" merge --resume "$T/s0.vhdx"
	assert_failure 4
	assert_output --partial "merged, with another differencing image"
	assert_equal "$(sha256 "$T/p0.vhdx")" "$before"
	# the last parent, read through a read-only mount: the child's view
	assert_equal "$(dl_exposed_sha_p "$T/p0.vhdx")" "$(cat "$P/want")"
}

@test "merge --resume finishes a merge an older vhdxtool left behind" {
	local g0 pid dur=600
	g0=$(dwg "$P/p.orig")
	# a merge killed after its first write...
	for _ in $(seq 30); do
		restore
		"$VHDXTOOL" merge -q "$T/c0.vhdx" &
		pid=$!
		sleep "0.$((RANDOM % 5 + 2))"
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" && continue
		[ "$(dwg "$T/p0.vhdx")" != "$g0" ] && break
	done
	[ "$(dwg "$T/p0.vhdx")" != "$g0" ]
	# ...as an older vhdxtool left it: a random DataWriteGuid
	vx "$T/p0.vhdx" set headers.datawriteguid "$(cat /proc/sys/kernel/random/uuid)"
	run "$VHDXTOOL" merge "$T/c0.vhdx"
	assert_failure 4
	assert_output --partial "linkage mismatch"
	assert_output --partial "--resume finishes it"
	run "$VHDXTOOL" merge --resume "$T/c0.vhdx"
	assert_success
	assert_output --partial "merging anyway (--resume)"
	expect_merged
	# from now on a plain rerun recognises the parent
	run "$VHDXTOOL" merge "$T/c0.vhdx"
	assert_success
	assert_output --partial "0 bytes written"
}

@test "merge --resume over a parent whose data was all written: tags it for plain reruns" {
	restore
	run "$VHDXTOOL" merge -q "$T/c0.vhdx"
	assert_success
	# every byte is in the parent; an older vhdxtool then died before it
	# could say so: a random DataWriteGuid
	vx "$T/p0.vhdx" set headers.datawriteguid "$(cat /proc/sys/kernel/random/uuid)"
	run "$VHDXTOOL" merge --resume "$T/c0.vhdx"
	assert_success
	assert_output --partial "0 bytes written"
	expect_merged
	run "$VHDXTOOL" merge "$T/c0.vhdx"
	assert_success
	assert_output --partial "0 bytes written"
}
