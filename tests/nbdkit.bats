#!/usr/bin/env bats
# nbdkit-vhdx-plugin, driven by NBD clients nobody here wrote (nbdinfo,
# nbdcopy, qemu-io and qemu-img over nbd+unix, python3-libnbd), always over
# Unix sockets.
#
# Oracles: qemu-img (convert, compare, check), raw references that get the
# same writes, the FUSE mount of the same image, tests/lib/vhdxedit.py's
# own decoding of the BAT, the corpus MANIFEST's hashes.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"
source "$BATS_TEST_DIRNAME/lib/diff-lib.bash"
source "$BATS_TEST_DIRNAME/lib/corpus.bash"

setup() {
	common_setup
	[ -n "${NBDKIT_VHDX_PLUGIN:-}" ] ||
		skip "the plugin was not built (configure found no nbdkit-plugin-dev, or --without-nbdkit)"
	PLUGIN=$NBDKIT_VHDX_PLUGIN
	[ -f "$PLUGIN" ] || skip "$PLUGIN missing: run make first"
	require_cmd nbdkit nbdinfo nbdcopy qemu-img qemu-io jq
	# python3-libnbd belongs to the system's python3
	NBD_PY=python3
	python3 -c 'import nbd' 2>/dev/null || NBD_PY=/usr/bin/python3
	"$NBD_PY" -c 'import nbd' || skip "python3-libnbd is not installed"
	NBDKIT_PIDS=()
	mkdir -p "$T/mnt"
}

teardown() {
	local p
	for p in "${NBDKIT_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
		wait_pid_gone "$p" 10 || kill -KILL "$p" 2>/dev/null
	done
	common_teardown
}

# nbd_run [nbdkit options...] IMAGE [plugin params...] -- COMMAND
# One server for one command (nbdkit -U - --run): sets status and output.
nbd_run() {
	local args=() a
	while [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	shift
	run nbdkit -U - "${args[@]}" --run "$1"
}

# nbd_serve SOCKET IMAGE [nbdkit options]: a server in the background on
# SOCKET (its pid in NBD_PID, stopped in teardown), ready when this returns.
nbd_serve() {
	local sock=$1 img=$2 i
	shift 2
	rm -f "$sock" "$sock.pid"
	nbdkit -f --unix "$sock" -P "$sock.pid" "$@" "$PLUGIN" file="$img" \
		2>>"$T/nbdkit.log" &
	NBD_PID=$!
	NBDKIT_PIDS+=("$NBD_PID")
	for i in $(seq 200); do
		[ -s "$sock.pid" ] && return 0
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.05
	done
	echo "nbdkit did not start; its log:" >&2
	cat "$T/nbdkit.log" >&2
	return 1
}

# nbd_stop: SIGTERM the last server, wait for it (it closes the image).
nbd_stop() {
	kill -TERM "$NBD_PID"
	wait_pid_gone "$NBD_PID" 20
}

nbd_uri() {
	echo "nbd+unix:///?socket=$1"
}

# nbd_sha IMAGE [nbdkit options]: sha256 of the disk nbdcopy reads out of
# the plugin (into a sparse file: nbdcopy skips what the map calls holes).
nbd_sha() {
	local img=$1
	shift
	rm -f "$T/copy.raw"
	nbdkit -U - "$@" "$PLUGIN" file="$img" \
		--run "nbdcopy \"\$uri\" '$T/copy.raw'" >&2 || return 1
	fast_sha256 "$T/copy.raw"
}

# mount_sha IMAGE: sha256 of the disk the FUSE mount exposes (read-only).
mount_sha() {
	vf_mount "$1" "$T/mnt" -o ro || return 1
	fast_sha256 "$(vf_raw_path "$T/mnt")"
	vf_umount "$T/mnt"
}

# bat_data_ranges IMAGE...: "start end" of the disk bytes backed by present
# payload blocks (states 6 and 7), from vhdxedit.py's decoding of the BAT
# of each image of a chain, merged.
bat_data_ranges() {
	local img blocks=()
	for img in "$@"; do
		eval "$(vx "$img" geometry | grep -E '^(block_size|chunk_ratio|virtual_size)=')"
		while read -r idx _; do
			# BAT index -> payload block: a bitmap entry after every CR
			blocks+=("$(((idx - idx / (chunk_ratio + 1)) * block_size)):$block_size")
		done < <(vx "$img" bat-find-present)
	done
	printf '%s\n' "${blocks[@]}" | python3 -c '
import sys
vsize = int(sys.argv[1])
r = sorted((int(a), min(int(a) + int(b), vsize)) for a, b in
           (l.split(":") for l in sys.stdin if l.strip()))
out = []
for s, e in r:
    if out and s <= out[-1][1]:
        out[-1][1] = max(out[-1][1], e)
    else:
        out.append([s, e])
for s, e in out:
    print(s, e)' "$virtual_size"
}

# map_data_ranges JSON: "start end" of the extents nbdinfo --map --json
# calls data (type 0), merged.
map_data_ranges() {
	jq -r '.[] | select(.type == 0) | "\(.offset) \(.offset + .length)"' \
		<<<"$1" | python3 -c '
import sys
out = []
for l in sys.stdin:
    s, e = map(int, l.split())
    if out and s == out[-1][1]:
        out[-1][1] = e
    else:
        out.append([s, e])
for s, e in out:
    print(s, e)'
}

# ------------------------------------------------------------- size, map

@test "nbdinfo: the size, and a map whose data is the BAT's present blocks" {
	local img=$T/a.vhdx j
	mk_vhdx "$img" $((100 * MiB + 4096)) block_size=1M
	fill_patterns "$img" $((100 * MiB + 4096)) "$MiB"
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --size "$uri"'
	assert_success
	assert_output "$(qemu_vsize "$img")"
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --map --json "$uri"'
	assert_success
	j=$output
	# the map covers the disk, and its data is exactly the present blocks
	[ "$(jq '[.[].length] | add' <<<"$j")" -eq $((100 * MiB + 4096)) ]
	[ "$(jq '[.[] | select(.type != 0 and .type != 3)] | length' <<<"$j")" -eq 0 ]
	[ -n "$(bat_data_ranges "$img")" ]
	assert_equal "$(map_data_ranges "$j")" "$(bat_data_ranges "$img")"
	# the same through nbdinfo's own summary: holes read as zeros
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdcopy "$uri" - | sha256sum'
	qemu_raw "$img" "$T/ref.raw"
	assert_output --partial "$(sha256 "$T/ref.raw")"
}

@test "nbdinfo --map: a fixed image is all data; zeroed blocks are holes" {
	local img=$T/f.vhdx j
	"$VHDXTOOL" create -t fixed -s 16M --block-size 1M "$img"
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --map --json "$uri"'
	assert_success
	assert_equal "$(map_data_ranges "$output")" "0 $((16 * MiB))"
	assert_equal "$(bat_data_ranges "$img")" "0 $((16 * MiB))"
	# qemu-img's fixed images are ZERO blocks (block_state_zero): holes
	mk_vhdx "$img" $((16 * MiB)) subformat=fixed,block_size=1M
	qio "$img" "write -P 1 5M 1M"
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --map --json "$uri"'
	assert_success
	assert_equal "$(map_data_ranges "$output")" "$(bat_data_ranges "$img")"
}

@test "nbdinfo --map of a Hyper-V image with ZERO and UNMAPPED blocks (corpus)" {
	local img j
	unpack discutils-lvm2.vhdx.xz
	img=$IMG
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --map --json "$uri"'
	assert_success
	j=$output
	[ "$(jq '[.[].length] | add' <<<"$j")" -eq $((10 * GiB)) ]
	assert_equal "$(map_data_ranges "$j")" "$(bat_data_ranges "$img")"
	# 18 present blocks of 32 MiB, the rest (ZERO, UNMAPPED, NOT_PRESENT)
	# holes that read as zeros
	[ "$(jq '[.[] | select(.type == 0) | .length] | add' <<<"$j")" -eq \
		$((18 * 32 * MiB)) ]
}

# ------------------------------------------------------ reading: nbdcopy

@test "nbdcopy = FUSE mount = qemu: dynamic and fixed images" {
	local img sha
	for img in d:block_size=1M f:subformat=fixed,block_size=2M; do
		mk_vhdx "$T/${img%%:*}.vhdx" $((40 * MiB)) "${img#*:}"
		fill_patterns "$T/${img%%:*}.vhdx" $((40 * MiB)) "$MiB"
		img=$T/${img%%:*}.vhdx
		sha=$(nbd_sha "$img" -r)
		assert_equal "$sha" "$(mount_sha "$img")"
		qemu_raw "$img" "$T/ref.raw"
		assert_equal "$sha" "$(fast_sha256 "$T/ref.raw")"
	done
}

@test "differencing chains, 512 and 4096-byte sectors: nbdcopy = FUSE mount = reference; the map" {
	local lss j
	for lss in 512 4096; do
		rm -rf "$T/c" "$T"/ref*
		dl_build_chain "$lss"
		assert_equal "$(nbd_sha "$T/c/l2.vhdx" -r)" \
			"$(mount_sha "$T/c/l2.vhdx")"
		assert_equal "$(nbd_sha "$T/c/l2.vhdx" -r)" "$(sha256 "$T/ref2")"
		assert_equal "$(nbd_sha "$T/c/l1.vhdx" -r)" "$(sha256 "$T/ref1")"
		# the map: the union of the blocks of the three levels
		nbd_run -r "$PLUGIN" file="$T/c/l2.vhdx" -- \
			'nbdinfo --map --json "$uri"'
		assert_success
		j=$output
		assert_equal "$(map_data_ranges "$j")" \
			"$(bat_data_ranges "$T/c/l0.vhdx" "$T/c/l1.vhdx" \
				"$T/c/l2.vhdx")"
		# the parents' blocks count: the child's own are not all of it
		[ "$(bat_data_ranges "$T/c/l2.vhdx")" != \
			"$(map_data_ranges "$j")" ]
	done
}

@test "nbdcopy = FUSE mount: a dynamic image with 4096-byte sectors" {
	local img=$T/s4k.vhdx f
	"$VHDXTOOL" create -s 24M --block-size 1M --logical-sector 4096 "$img"
	vf_mount "$img" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	vt_dd_rand "$f" 0 4096
	vt_dd_rand "$f" $((MiB - 4096)) 8192
	vt_dd_rand "$f" $((7 * MiB + 12288)) $((3 * MiB))
	vt_dd_rand "$f" $((24 * MiB - 4096)) 4096
	vf_umount "$T/mnt"
	assert_equal "$(nbd_sha "$img" -r)" "$(mount_sha "$img")"
	assert_equal "$(nbd_sha "$img")" "$(mount_sha "$img")"
}

# dirty_corpus FILE: -r serves the image of a dirty log as qemu's replay
# shows it (MANIFEST: raw_sha256_qemu, what the mount shows in
# corpus.bats), and the image file is not written.
dirty_corpus() {
	local img want before
	unpack "$1"
	img=$IMG
	want=$(manifest_field "$1" raw_sha256_qemu)
	[[ $want =~ ^[0-9a-f]{64}$ ]]
	before=$(fast_sha256 "$img")
	# qemu itself refuses to read it without writing it
	run qemu-img convert -f vhdx -O raw "$img" "$T/q.raw"
	assert_failure
	assert_equal "$(nbd_sha "$img" -r)" "$want"
	assert_equal "$(fast_sha256 "$img")" "$before"
}

@test "corpus, -r: qemu-iotest-dirtylog-10G-4M.vhdx.xz, the log replayed in memory" {
	dirty_corpus qemu-iotest-dirtylog-10G-4M.vhdx.xz
}

@test "corpus, -r: discutils-vhdx-log-replay.vhdx.xz, the log replayed in memory" {
	dirty_corpus discutils-vhdx-log-replay.vhdx.xz
}

# ------------------------------------------------------ read-only, locks

@test "-r: writes are refused, the file is unchanged, the lock is shared" {
	local img=$T/a.vhdx before
	mk_vhdx "$img" $((8 * MiB)) block_size=1M
	qio "$img" "write -P 9 0 1M"
	before=$(sha256 "$img")
	nbd_serve "$T/s1" "$img" -r
	# a second -r server and a read-only mount share the lock
	nbd_run -r "$PLUGIN" file="$img" -- 'nbdinfo --size "$uri"'
	assert_success
	assert_output $((8 * MiB))
	vf_mount "$img" "$T/mnt" -o ro
	vf_umount "$T/mnt"
	run nbdinfo --json "$(nbd_uri "$T/s1")"
	assert_success
	[ "$(jq .exports[0].is_read_only <<<"$output")" = true ]
	run qemu-io -f raw -c "write -P 1 0 4096" "$(nbd_uri "$T/s1")"
	assert_output --partial "ermission denied"
	run "$NBD_PY" -c 'import nbd, sys
h = nbd.NBD(); h.connect_unix(sys.argv[1])
try:
    h.pwrite(b"x" * 512, 0)
except nbd.Error as e:
    print("refused:", e.errno)' "$T/s1"
	assert_output --regexp "refused: (EPERM|EROFS)"
	# a writer cannot have it meanwhile
	run nbdkit -U - "$PLUGIN" file="$img" --run 'nbdinfo --size "$uri"'
	assert_failure
	assert_output --partial "is in use"
	nbd_stop
	assert_equal "$(sha256 "$img")" "$before"
}

@test "read-write: the exclusive lock is held until nbdkit exits" {
	local img=$T/a.vhdx
	mk_vhdx "$img" $((8 * MiB)) block_size=1M
	nbd_serve "$T/s1" "$img"
	run nbdinfo --size "$(nbd_uri "$T/s1")"
	assert_success
	# after the client left, still locked: no mount, no second server
	vf_start "$img" "$T/mnt" -o ro
	[ "$status" -eq 32 ]
	assert_output --partial "in use"
	run nbdkit -r -U - "$PLUGIN" file="$img" --run 'true'
	assert_failure
	assert_output --partial "is in use"
	nbd_stop
	vf_mount "$img" "$T/mnt" -o ro
	vf_umount "$T/mnt"
}

@test "bad input: no file=, a damaged image, a missing parent; nothing written" {
	local img=$T/a.vhdx before
	run nbdkit -U - "$PLUGIN" --run true
	assert_failure
	assert_output --partial "file=IMAGE"
	run nbdkit -U - "$PLUGIN" file="$T/nope.vhdx" --run true
	assert_failure
	assert_output --partial "nope.vhdx"
	mk_vhdx "$img" $((8 * MiB))
	vx "$img" badcrc header1
	vx "$img" badcrc header2
	before=$(sha256 "$img")
	run nbdkit -U - "$PLUGIN" file="$img" --run 'echo served'
	assert_failure
	refute_output --partial served
	assert_output --partial "header"
	assert_equal "$(sha256 "$img")" "$before"
	# a child whose parent is gone
	"$VHDXTOOL" create -s 8M "$T/p.vhdx"
	"$VHDXTOOL" create -t differencing --parent "$T/p.vhdx" "$T/c.vhdx"
	mv "$T/p.vhdx" "$T/q.vhdx"
	run nbdkit -r -U - "$PLUGIN" file="$T/c.vhdx" --run 'echo served'
	assert_failure
	refute_output --partial served
	assert_output --partial "parent"
	# parent= names it
	run nbdkit -r -U - "$PLUGIN" file="$T/c.vhdx" parent="$T/q.vhdx" \
		--run 'nbdinfo --size "$uri"'
	assert_success
	assert_output $((8 * MiB))
}

# ------------------------------------------------------------- writing

@test "random writes through qemu-io and nbdcopy: qemu-img compare and check" {
	local img=$T/w.vhdx ref=$T/ref.raw uri cmds=() i off len
	local size=$((48 * MiB))
	mk_vhdx "$img" "$size" block_size=1M
	truncate -s "$size" "$ref"
	mk_random_sources
	RANDOM=4242
	for i in $(seq 60); do
		off=$(((RANDOM * 32768 + RANDOM) % (size - 300000)))
		len=$((1 + (RANDOM * 7) % 300000))
		case $((i % 6)) in
		0) cmds+=("write -z $off $len") ;;
		1) cmds+=("write -P $((i % 250 + 1)) $off $len") ;;
		*) cmds+=("write -s $T/rand$((i % 4 + 1)) $off $len") ;;
		esac
	done
	cmds+=("flush")
	nbd_serve "$T/s" "$img"
	uri=$(nbd_uri "$T/s")
	local args=()
	for i in "${cmds[@]}"; do args+=(-c "$i"); done
	run qemu-io -f raw "${args[@]}" "$uri"
	assert_success
	refute_output --partial "error"
	run qemu-io -f raw "${args[@]}" "$ref"
	assert_success
	# nbdcopy (several connections at once: multi-conn) over part of it
	head -c $((5 * MiB)) /dev/urandom >"$T/chunk"
	nbdcopy "$T/chunk" "$uri"
	dd if="$T/chunk" of="$ref" conv=notrunc status=none
	run qemu-img compare -f raw -F raw "$uri" "$ref"
	assert_success
	nbd_stop
	run qemu-img compare -f vhdx -F raw "$img" "$ref"
	assert_success
	run qemu-img check -f vhdx "$img"
	assert_success
	run "$VHDXTOOL" check "$img"
	assert_success
}

# blocks_of FILE: bytes the host file system holds for FILE
blocks_of() {
	echo $(($(stat -c %b "$1") * 512))
}

@test "trim and zero give space back as through the mount" {
	local a=$T/a.vhdx b=$T/b.vhdx f uri full ba bb
	# two identical images, 16 blocks of data each (made the same way:
	# cp would leave out zeros the other one holds on the host)
	for f in "$a" "$b"; do
		mk_vhdx "$f" $((32 * MiB)) block_size=1M
		qio "$f" "write -P 7 0 16M"
	done
	assert_equal "$(blocks_of "$a")" "$(blocks_of "$b")"
	full=$(blocks_of "$a")
	[ "$full" -ge $((16 * MiB)) ]
	# a: through NBD: trim 4 blocks, zero (may trim) 4, zero (no hole) 2
	nbd_serve "$T/s" "$a"
	"$NBD_PY" -c 'import nbd, sys
M = 1 << 20
h = nbd.NBD(); h.connect_unix(sys.argv[1])
assert h.can_trim() and h.can_zero()
h.trim(4 * M, 0)
h.zero(4 * M, 4 * M)
h.zero(2 * M, 8 * M, nbd.CMD_FLAG_NO_HOLE)
h.trim(1000, 10 * M + 100)
h.flush()' "$T/s"
	nbd_stop
	# b: the same through the mount (punch hole, zero range)
	vf_mount "$b" "$T/mnt"
	f=$(vf_raw_path "$T/mnt")
	fallocate -p -o 0 -l $((4 * MiB)) "$f"
	fallocate -p -o $((4 * MiB)) -l $((4 * MiB)) "$f"
	fallocate -z -o $((8 * MiB)) -l $((2 * MiB)) "$f"
	fallocate -p -o $((10 * MiB + 100)) -l 1000 "$f"
	vf_umount "$T/mnt"
	ba=$(blocks_of "$a")
	bb=$(blocks_of "$b")
	echo "# host bytes: full $full, after NBD $ba, after the mount $bb" >&3
	# 8 blocks given back, less what the log took (up to its 1 MiB)
	[ "$ba" -le $((full - 7 * MiB)) ]
	assert_equal "$ba" "$bb"
	run qemu-img compare -f vhdx -F vhdx "$a" "$b"
	assert_success
	qemu_raw "$a" "$T/a.raw"
	truncate -s $((32 * MiB)) "$T/ref.raw"
	qemu-io -f raw -c "write -P 7 0 16M" -c "write -z 0 10M" \
		-c "write -z $((10 * MiB + 100)) 1000" "$T/ref.raw" >/dev/null
	cmp "$T/a.raw" "$T/ref.raw"
	run qemu-img check -f vhdx "$a"
	assert_success
}

# ----------------------------------------------------------------- kill

@test "SIGKILL during flushed writes, 12 times: every flushed write survives" {
	local img=$T/k.vhdx j=$T/journal size=$((32 * MiB)) round wpid
	"$VHDXTOOL" create -s "$size" --block-size 1M "$img"
	for round in $(seq 12); do
		nbd_serve "$T/s" "$img"
		"$NBD_PY" "$TOP_SRCDIR/tests/lib/nbd-killload.py" write \
			"$T/s" "$j" "$size" "$round" &
		wpid=$!
		sleep "0.$((RANDOM % 8 + 2))"
		kill -KILL "$NBD_PID"
		wait "$wpid"
		wait_pid_gone "$NBD_PID" 10
		# read-only (the log replayed in memory): nothing flushed is lost
		run nbdkit -r -U - "$PLUGIN" file="$img" --run \
			"'$NBD_PY' '$TOP_SRCDIR/tests/lib/nbd-killload.py' verify-nbd \"\$unixsocket\" '$j' $size"
		assert_success
	done
	echo "# $(wc -l <"$j") acknowledged writes over 12 kills" >&3
	[ "$(wc -l <"$j")" -ge 50 ]
	# open read-write once more (replays the log into the file), close
	nbd_run "$PLUGIN" file="$img" -- 'nbdinfo --size "$uri"'
	assert_success
	run qemu-img check -f vhdx "$img"
	assert_success
	run "$VHDXTOOL" check "$img"
	assert_success
	qemu_raw "$img" "$T/k.raw"
	run python3 "$TOP_SRCDIR/tests/lib/nbd-killload.py" verify-file \
		"$T/k.raw" "$j" "$size"
	assert_success
}
