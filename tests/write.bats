#!/usr/bin/env bats
# Writing through a read-write mount.
#
# tests/lib/write-apply.py applies the same seeded writes (unaligned, across
# payload-block and chunk boundaries, into the last partial block, rewrites,
# all-zero data; optionally from several threads at once) to the exposed
# file and to a raw reference file.  After unmounting, the oracles are other
# implementations: qemu-img compare IMAGE REFERENCE must find them
# identical, and qemu-img check and vhdxtool check must find no error;
# for 4096-byte logical sectors, which qemu cannot open, libvhdi's vhdimount
# reads the image.  The images are made by qemu-img, by vhdxtool create, and
# by Hyper-V, Disk2vhd and others (copies of ../shared/corpus).
#
# Also: ext4 on the exposed file (e2fsck and every file's checksum after a
# new mount), replay of the corpus's dirty logs into the file, ENOSPC at
# the end of the disk and on the host file system, and the durability
# claims of vhdxfuse(1) (fsync and close, then SIGKILL; SIGTERM, SIGINT and
# SIGHUP).
#
# WRITE_SEED (environment) fixes the seed of the writes; every run prints
# the seeds it used.

bats_require_minimum_version 1.5.0

load lib/common
load lib/corpus

MiB=1048576
# virtual bytes per chunk with 512-byte logical sectors: 2^23 sectors
CHUNK=$((1 << 32))

setup() {
	common_setup
	require_fuse
	require_cmd qemu-img python3
	MNT=$T/mnt
	mkdir "$MNT"
	VHDXTOOL=$TOP_BUILDDIR/vhdxtool
	WA=$TOP_SRCDIR/tests/lib/write-apply.py
}

teardown() {
	common_teardown
}

seed() {
	echo "${WRITE_SEED:-$((RANDOM * 32768 + RANDOM))}"
}

# oracle IMAGE RAW: QEMU and vhdxtool find no error in IMAGE, and QEMU
# reads the same disk as RAW.
oracle() {
	local img=$1 raw=$2
	run qemu-img check "$img"
	if [ "$status" -ne 0 ] || [[ $output != *"No errors were found"* ]]; then
		echo "qemu-img check $img: status $status: $output" >&2
		return 1
	fi
	run "$VHDXTOOL" check -q "$img"
	[ "$status" -eq 0 ] || {
		echo "vhdxtool check $img: status $status: $output" >&2
		return 1
	}
	run qemu-img compare -f vhdx -F raw "$img" "$raw"
	[ "$status" -eq 0 ] || {
		echo "qemu-img compare $img $raw: status $status: $output" >&2
		return 1
	}
}

# write_case IMAGE BLOCK_SIZE [write-apply options...]: QEMU converts IMAGE
# to the reference, the writes go to both, then the oracle.
write_case() {
	local img=$1 bs=$2 raw
	shift 2
	rm -f "$T/ref.raw"
	qemu-img convert -f vhdx -O raw "$img" "$T/ref.raw"
	vf_mount "$img" "$MNT"
	raw=$(vf_raw_path "$MNT")
	run python3 "$WA" --seed "$(seed)" --block-size "$bs" --chunk "$CHUNK" \
		--readback "$@" "$raw" "$T/ref.raw"
	note "$(basename "$img"): ${lines[0]#write-apply: }"
	[ "$status" -eq 0 ] || {
		echo "$output" >&2
		return 1
	}
	vf_umount "$MNT"
	oracle "$img" "$T/ref.raw"
	rm -f "$T/ref.raw"
}

# ------------------------------------------------------------ qemu-img images

@test "qemu-img dynamic images, blocks of 1, 2, 32 and 256 MiB: seeded writes" {
	local bs size
	for bs in 1 2 32 256; do
		# 3.6 blocks and a few sectors: the last block is partial
		size=$((bs * MiB * 36 / 10 / 512 * 512 + 1536))
		[ "$bs" -eq 1 ] && size=$((37 * MiB + 1536))
		# (2.3 blocks of 256 MiB: still a partial last one)
		[ "$bs" -eq 256 ] && size=$((600 * MiB + 1536))
		qemu-img create -q -f vhdx -o block_size=${bs}M "$T/d$bs.vhdx" "$size"
		write_case "$T/d$bs.vhdx" $((bs * MiB)) --count 120
		rm -f "$T/d$bs.vhdx"
	done
}

@test "qemu-img fixed images, block_state_zero=on (ZERO entries) and off" {
	local bs size zero
	for zero in on off; do
		for bs in 1 2 32 256; do
			size=$((bs * MiB * 36 / 10 / 512 * 512 + 512))
			[ "$bs" -eq 1 ] && size=$((21 * MiB + 512))
			[ "$bs" -eq 256 ] && size=$((300 * MiB + 512))
			qemu-img create -q -f vhdx \
				-o subformat=fixed,block_size=${bs}M,block_state_zero=$zero \
				"$T/f$bs.vhdx" "$size"
			write_case "$T/f$bs.vhdx" $((bs * MiB)) --count 80
			rm -f "$T/f$bs.vhdx"
		done
	done
}

@test "a 4 GiB + 3 MiB dynamic image: writes across the chunk boundary" {
	# 1 MiB blocks: 4096 payload entries per chunk, then a sector bitmap
	# entry; the disk has a second, short chunk
	qemu-img create -q -f vhdx -o block_size=1M "$T/chunk.vhdx" \
		$((4096 * MiB + 3 * MiB))
	write_case "$T/chunk.vhdx" "$MiB" --count 60
}

# ------------------------------------------------------------ vhdxtool images

@test "vhdxtool create images (512-byte logical sectors): dynamic and fixed" {
	local spec type bs ps size
	for spec in "dynamic 1M 4096 $((40 * MiB + 512))" \
		"dynamic 32M 512 $((100 * MiB + 7680))" \
		"dynamic 256M 4096 $((600 * MiB))" \
		"fixed 2M 4096 $((31 * MiB + 1024))" \
		"fixed 32M 512 $((70 * MiB))"; do
		# shellcheck disable=SC2086
		set -- $spec
		type=$1 bs=$2 ps=$3 size=$4
		"$VHDXTOOL" create -q -t "$type" --block-size "$bs" \
			--physical-sector "$ps" -s "$size" "$T/t.vhdx"
		write_case "$T/t.vhdx" $((${bs%M} * MiB)) --count 80
		rm -f "$T/t.vhdx"
	done
}

# vhdi_compare IMAGE RAW: libvhdi reads the same disk as RAW.
vhdi_compare() {
	mkdir -p "$T/vhdi"
	vhdi_mount "$1" "$T/vhdi"
	run cmp "$T/vhdi/vhdi1" "$2"
	vhdi_umount "$T/vhdi"
	[ "$status" -eq 0 ] || {
		echo "vhdimount disagrees: $output" >&2
		return 1
	}
}

@test "vhdxtool create images with 4096-byte logical sectors (vhdimount is the oracle)" {
	require_cmd vhdimount
	local spec type bs size raw
	for spec in "dynamic 1M $((40 * MiB + 4096 * 3))" \
		"dynamic 32M $((70 * MiB))" \
		"fixed 2M $((9 * MiB + 4096))"; do
		# shellcheck disable=SC2086
		set -- $spec
		type=$1 bs=$2 size=$3
		"$VHDXTOOL" create -q -t "$type" --block-size "$bs" \
			--logical-sector 4096 -s "$size" "$T/s.vhdx"
		# a new image is all zeros (according to libvhdi too)
		rm -f "$T/ref.raw"
		truncate -s "$size" "$T/ref.raw"
		vhdi_compare "$T/s.vhdx" "$T/ref.raw"
		vf_mount "$T/s.vhdx" "$MNT"
		raw=$(vf_raw_path "$MNT")
		run python3 "$WA" --seed "$(seed)" --block-size $((${bs%M} * MiB)) \
			--count 80 --readback "$raw" "$T/ref.raw"
		note "4K $type $bs: ${lines[0]#write-apply: }"
		[ "$status" -eq 0 ] || {
			echo "$output" >&2
			return 1
		}
		vf_umount "$MNT"
		run "$VHDXTOOL" check -q "$T/s.vhdx"
		assert_success
		vhdi_compare "$T/s.vhdx" "$T/ref.raw"
		# and a new daemon, read-only
		vf_mount "$T/s.vhdx" "$MNT" -o ro
		cmp "$(vf_raw_path "$MNT")" "$T/ref.raw"
		vf_umount "$MNT"
		rm -f "$T/s.vhdx"
	done
}

# ------------------------------------------------------------ concurrency

@test "four threads write interleaved stripes at once (blocks and BAT sectors shared)" {
	qemu-img create -q -f vhdx -o block_size=1M "$T/m1.vhdx" $((200 * MiB + 512))
	write_case "$T/m1.vhdx" "$MiB" --count 150 --threads 4 --stripe 12289 \
		--sync-every 40
	qemu-img create -q -f vhdx -o block_size=1M "$T/m2.vhdx" $((64 * MiB))
	write_case "$T/m2.vhdx" "$MiB" --count 100 --threads 4 --stripe 100003 \
		--sync-every 8
	qemu-img create -q -f vhdx -o subformat=fixed,block_size=2M "$T/m3.vhdx" \
		$((64 * MiB))
	write_case "$T/m3.vhdx" $((2 * MiB)) --count 100 --threads 4 \
		--stripe 4097 --sync-every 100
}

@test "fio: 4 jobs of random writes with fsyncs; fio verifies QEMU's conversion" {
	require_cmd fio
	qemu-img create -q -f vhdx -o block_size=1M "$T/fio.vhdx" $((64 * MiB))
	local seed args
	seed=$(seed)
	# 4 regions of 15.3 MiB: neighbours share a 1 MiB block
	args=(--name=w --size=15667k --offset_increment=15667k --numjobs=4
		--rw=randwrite --bsrange=512-96k --ioengine=psync
		--randrepeat=0 --randseed="$seed" --verify=crc32c
		--verify_fatal=1 --group_reporting)
	cd "$T" # fio keeps verify state files in the working directory
	vf_mount "$T/fio.vhdx" "$MNT"
	run fio "${args[@]}" --filename="$MNT/fio.raw" --fsync=16 --do_verify=0
	[ "$status" -eq 0 ] || {
		echo "$output" >&2
		return 1
	}
	vf_umount "$MNT"
	run qemu-img check "$T/fio.vhdx"
	assert_success
	run "$VHDXTOOL" check -q "$T/fio.vhdx"
	assert_success
	qemu-img convert -f vhdx -O raw "$T/fio.vhdx" "$T/fio.raw"
	run fio "${args[@]}" --filename="$T/fio.raw" --verify_only
	note "fio seed $seed"
	[ "$status" -eq 0 ] || {
		echo "$output" >&2
		return 1
	}
	# a damaged byte would have been seen
	printf 'x' | dd of="$T/fio.raw" bs=1 seek=$((20 * MiB + 100)) \
		conv=notrunc status=none
	run fio "${args[@]}" --filename="$T/fio.raw" --verify_only
	assert_failure
}

# ------------------------------------------------------------ corpus copies

# corpus_write FILE COUNT: seeded writes into a copy of a corpus image.
corpus_write() {
	local file=$1 bs
	unpack "$file"
	bs=$(manifest_field "$file" block_size)
	[[ $bs =~ ^[0-9]+$ ]]
	write_case "$IMG" "$bs" --count "$2"
}

@test "corpus copy: dissect-dynamic (Hyper-V, 32 MiB blocks)" {
	corpus_write dissect-dynamic.vhdx.xz 80
}

@test "corpus copy: dissect-fixed (Hyper-V fixed, 2 MiB blocks)" {
	corpus_write dissect-fixed.vhdx.xz 80
}

@test "corpus copy: velociraptor-test (Hyper-V, 5 MiB disk in one block)" {
	corpus_write velociraptor-test.vhdx.xz 60
}

@test "corpus copy: qemu-test-disk2vhd (Disk2vhd, 512-byte physical sectors)" {
	corpus_write qemu-test-disk2vhd.vhdx.xz 100
}

@test "corpus copy: coreos-hyperv-config2_base (ZERO and NOT_PRESENT blocks)" {
	corpus_write coreos-hyperv-config2_base.vhdx.xz 100
}

@test "corpus copy: qemu-iotest-dynamic-1G (old qemu-img, ZERO blocks)" {
	corpus_write qemu-iotest-dynamic-1G.vhdx.xz 100
}

@test "corpus copy: discutils-lvm2 (UNMAPPED blocks, 10 GiB, two chunks and more)" {
	corpus_write discutils-lvm2.vhdx.xz 100
}

# replay_case FILE: a read-write mount replays the dirty log into the file.
replay_case() {
	local file=$1 want
	unpack "$file"
	want=$(manifest_field "$file" raw_sha256_qemu)
	[[ $want =~ ^[0-9a-f]{64}$ ]]
	# the copy is dirty: QEMU will not open it read-only
	run qemu-img info "$IMG"
	assert_failure
	assert_output --partial "log that needs to be replayed"
	vf_mount "$IMG" "$MNT"
	vf_umount "$MNT"
	grep -i "replay" "$T/vhdxfuse.log" | sed "s/^/# /" >&3 || true
	# now it is clean: QEMU opens it read-only, finds no error, and reads
	# the disk its own replay gives
	run qemu-img info "$IMG"
	assert_success
	run qemu-img check "$IMG"
	assert_success
	assert_output --partial "No errors were found"
	run "$VHDXTOOL" check -q "$IMG"
	assert_success
	qemu-img convert -f vhdx -O raw "$IMG" "$T/replayed.raw"
	assert_equal "$(fast_sha256 "$T/replayed.raw")" "$want"
	# and a read-only mount, which replays nothing now, serves that disk
	# (random and boundary ranges: the whole disk is hashed above)
	vf_mount "$IMG" "$MNT" -o ro
	cmp_ranges "$(vf_raw_path "$MNT")" "$T/replayed.raw" \
		"$(manifest_field "$file" block_size)" 200
	vf_umount "$MNT"
}

@test "dirty log replayed into the file by a read-write mount: qemu-iotest-dirtylog-10G-4M" {
	replay_case qemu-iotest-dirtylog-10G-4M.vhdx.xz
}

@test "dirty log replayed into the file by a read-write mount: discutils-vhdx-log-replay (Windows)" {
	replay_case discutils-vhdx-log-replay.vhdx.xz
}

# ------------------------------------------------------------ ext4

@test "ext4 on the exposed file: a tree of ~250 MB copied in, e2fsck clean, every file intact after a new mount" {
	require_root
	require_cmd mkfs.ext4 e2fsck losetup sha256sum
	local img=$T/fs.vhdx raw n seed
	seed=$(seed)
	qemu-img create -q -f vhdx -o block_size=1M "$img" 1G
	# the tree, on the local file system, and its checksums
	note "$(python3 "$TOP_SRCDIR/tests/lib/mkfiles.py" "$T/src" 1000 "$seed")"
	(cd "$T/src" && find . -type f -print0 | sort -z |
		xargs -0 sha256sum) >"$T/manifest"
	n=$(wc -l <"$T/manifest")

	vf_mount "$img" "$MNT"
	raw=$(vf_raw_path "$MNT")
	loop_attach "$raw"
	mkfs.ext4 -q "$LOOPDEV"
	mkdir "$T/fs"
	mount "$LOOPDEV" "$T/fs"
	track_fsmount "$T/fs"
	cp -a "$T/src" "$T/fs/tree"
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_umount "$MNT"

	run qemu-img check "$img"
	assert_success
	run "$VHDXTOOL" check -q "$img"
	assert_success
	qemu-img convert -f vhdx -O raw "$img" "$T/fs.raw"
	run e2fsck -fn "$T/fs.raw"
	[ "$status" -eq 0 ] || {
		echo "$output" >&2
		return 1
	}

	# a new daemon, read-only, and a read-only loop device
	vf_mount "$img" "$MNT" -o ro
	raw=$(vf_raw_path "$MNT")
	assert_equal "$(fast_sha256 "$raw")" "$(fast_sha256 "$T/fs.raw")"
	loop_attach "$raw" -r
	mount -o ro,noload "$LOOPDEV" "$T/fs"
	(cd "$T/fs/tree" && sha256sum --quiet -c "$T/manifest")
	[ "$(cd "$T/fs/tree" && find . -type f | wc -l)" -eq "$n" ]
	umount "$T/fs"
	losetup -d "$LOOPDEV"
	vf_umount "$MNT"
}

# ------------------------------------------------------------ errors

@test "4096-byte sectors, no writeback cache: writes at or past the end fail with ENOSPC; one crossing it is cut short" {
	local size=$((5 * MiB + 4096))
	"$VHDXTOOL" create -q --logical-sector 4096 --block-size 1M -s "$size" "$T/e.vhdx"
	vf_mount "$T/e.vhdx" "$MNT" -o no_writeback_cache
	run python3 -c '
import errno, os, sys
size = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY)
for off in (size, size + 1, size + 4096, 1 << 50):
    try:
        os.pwrite(fd, b"x" * 10, off)
        sys.exit("pwrite at %d succeeded" % off)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit("pwrite at %d: %s" % (off, e))
n = os.pwrite(fd, b"\x77" * 5000, size - 1000)
if n != 1000:
    sys.exit("crossing write returned %d, not 1000" % n)
os.fsync(fd)
print("ok")' "$MNT/e.raw" "$size"
	assert_success
	assert_output "ok"
	vf_umount "$MNT"
	vf_mount "$T/e.vhdx" "$MNT" -o ro
	cmp <(tail -c 1000 "$MNT/e.raw") <(head -c 1000 /dev/zero | tr '\0' '\167')
	cmp <(head -c $((size - 1000)) "$MNT/e.raw") <(head -c $((size - 1000)) /dev/zero)
	vf_umount "$MNT"
}

# check_synced FILE...: every block listed in $T/synced holds what the
# ENOSPC writer wrote there (seed $seed) in each FILE.
check_synced() {
	run python3 - "$T/synced" "$seed" "$@" <<'EOF'
import os, random, sys
log, seed = sys.argv[1], int(sys.argv[2])
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[3:]]
blocks = [int(x) for x in open(log)]
for b in blocks:
    want = b"".join(random.Random("%d:%d:%d" % (seed, b, k)).randbytes(256 << 10)
                    for k in range(4))
    for fd, p in zip(fds, sys.argv[3:]):
        if os.pread(fd, 1 << 20, b << 20) != want:
            sys.exit("block %d (fsynced) differs in %s" % (b, p))
print("%d fsynced blocks intact" % len(blocks))
EOF
	note "$output"
	assert_success
}

@test "host file system full: the writer gets ENOSPC or EIO, the image stays valid, fsynced data survives" {
	require_root
	local img=$T/small/d.vhdx seed
	seed=$(seed)
	mkdir "$T/small"
	mount -t tmpfs -o size=20M tmpfs "$T/small"
	track_fsmount "$T/small"
	qemu-img create -q -f vhdx -o block_size=1M "$img" 200M
	vf_mount "$img" "$MNT"
	# 256 KiB writes in a shuffled order of 1 MiB blocks, an fsync after
	# each block, the fsynced blocks listed in $T/synced (not on the tmpfs)
	run python3 - "$MNT/d.raw" "$T/synced" "$seed" <<'EOF'
import errno, os, random, sys
path, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
fd = os.open(path, os.O_WRONLY)
blocks = list(range(os.fstat(fd).st_size >> 20))
rng.shuffle(blocks)
lf = open(log, "w")
for b in blocks:
    try:
        for k in range(4):
            os.pwrite(fd, random.Random("%d:%d:%d" % (seed, b, k))
                      .randbytes(256 << 10), (b << 20) + (k << 18))
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EIO):
            sys.exit("unexpected error %s" % e)
        print("stopped by %s after %d fsynced blocks" %
              (errno.errorcode[e.errno], len(open(log).readlines())))
        sys.exit(0)
    lf.write("%d\n" % b)
    lf.flush()
sys.exit("wrote 200 MiB onto a 20 MiB file system without an error")
EOF
	note "seed $seed: $output"
	assert_success
	assert_output --regexp "stopped by (ENOSPC|EIO)"
	# the daemon may report the failure when it closes the image
	local pid
	pid=$(vf_pid "$MNT")
	fusermount3 -u "$MNT"
	wait_pid_gone "$pid" 10
	{ wait "$pid"; } 2>/dev/null || note "daemon exit status $?"
	sed 's/^/# /' "$T/vhdxfuse.log" >&3
	[ -s "$T/synced" ]
	# the image as the unmount left it: QEMU must open and check it
	local qst=0 qout
	qout=$(qemu-img check "$img" 2>&1) || qst=$?
	run "$VHDXTOOL" check -q "$img"
	note "vhdxtool check: status $status: $output"
	# QEMU's replay of a copy, should the log be dirty, is the oracle for
	# the fsynced data; a read-only mount (replaying in memory) serves it
	cp "$img" "$T/copy.vhdx"
	run qemu-img check -r all "$T/copy.vhdx"
	assert_success
	qemu-img convert -f vhdx -O raw "$T/copy.vhdx" "$T/after.raw"
	local before
	before=$(sha256 "$img")
	vf_mount "$img" "$MNT" -o ro
	check_synced "$T/after.raw" "$MNT/d.raw"
	vf_umount "$MNT"
	[ "$(sha256 "$img")" = "$before" ]
	# with space again, a read-write mount and unmount leave a clean image
	mount -o remount,size=64M "$T/small"
	vf_mount "$img" "$MNT"
	vf_umount "$MNT"
	oracle "$img" "$T/after.raw"
	[ "$qst" -eq 0 ] || {
		echo "qemu-img check of the image as unmounted after ENOSPC:" >&2
		echo "$qout" >&2
		return 1
	}
}

# ------------------------------------------------------------ durability

@test "after fsync returns, SIGKILL: the data is there on the next mount and for QEMU" {
	local seed
	seed=$(seed)
	qemu-img create -q -f vhdx -o block_size=1M "$T/k.vhdx" 64M
	qemu-img convert -f vhdx -O raw "$T/k.vhdx" "$T/ref.raw"
	vf_mount "$T/k.vhdx" "$MNT"
	# fsynced writes (fsync and fdatasync), and a final unsynced write
	# into a block of its own that the check ignores
	python3 - "$MNT/k.raw" "$T/ref.raw" "$seed" <<'EOF'
import os, random, sys
rng = random.Random(int(sys.argv[3]))
fd = os.open(sys.argv[1], os.O_WRONLY)
rfd = os.open(sys.argv[2], os.O_WRONLY)
for i in range(40):
    off = rng.randrange(60 << 20)
    buf = rng.randbytes(rng.randint(1, 300000))
    os.pwrite(fd, buf, min(off, (60 << 20) - len(buf)))
    os.pwrite(rfd, buf, min(off, (60 << 20) - len(buf)))
    if i % 10 == 9:
        (os.fsync if i % 20 == 9 else os.fdatasync)(fd)
os.pwrite(fd, b"\xee" * 4096, 62 << 20)
EOF
	vf_kill "$MNT"
	cp "$T/k.vhdx" "$T/copy.vhdx"
	run qemu-img check -r all "$T/copy.vhdx"
	assert_success
	qemu-img convert -f vhdx -O raw "$T/copy.vhdx" "$T/qemu.raw"
	cmp -n $((60 * MiB)) "$T/qemu.raw" "$T/ref.raw"
	vf_mount "$T/k.vhdx" "$MNT"
	cmp -n $((60 * MiB)) "$MNT/k.raw" "$T/ref.raw"
	cmp "$MNT/k.raw" "$T/qemu.raw"
	vf_umount "$MNT"
	run qemu-img check "$T/k.vhdx"
	assert_success
}

@test "after close (FUSE flush), SIGKILL: the data is there on the next mount and for QEMU" {
	qemu-img create -q -f vhdx -o block_size=1M "$T/c.vhdx" 64M
	qemu-img convert -f vhdx -O raw "$T/c.vhdx" "$T/ref.raw"
	vf_mount "$T/c.vhdx" "$MNT"
	head -c 3000000 /dev/urandom >"$T/data"
	local off
	for off in 0 1048000 7777777 40000000; do
		dd if="$T/data" of="$MNT/c.raw" bs=1M seek="$off" oflag=seek_bytes \
			conv=notrunc status=none
		dd if="$T/data" of="$T/ref.raw" bs=1M seek="$off" oflag=seek_bytes \
			conv=notrunc status=none
	done
	# the mount stays alive until the kill
	vf_alive "$MNT"
	vf_kill "$MNT"
	cp "$T/c.vhdx" "$T/copy.vhdx"
	run qemu-img check -r all "$T/copy.vhdx"
	assert_success
	run qemu-img compare -f vhdx -F raw "$T/copy.vhdx" "$T/ref.raw"
	assert_success
	vf_mount "$T/c.vhdx" "$MNT"
	cmp "$MNT/c.raw" "$T/ref.raw"
	vf_umount "$MNT"
	oracle "$T/c.vhdx" "$T/ref.raw"
}

@test "SIGTERM, SIGINT and SIGHUP unmount and close the image: the log is clean, QEMU opens it read-only" {
	local sig
	qemu-img create -q -f vhdx -o block_size=1M "$T/s.vhdx" 32M
	qemu-img convert -f vhdx -O raw "$T/s.vhdx" "$T/ref.raw"
	# A shell starts background jobs with SIGINT ignored, and libfuse then
	# leaves it ignored: start the daemon with SIGINT at its default.
	env --default-signal=INT true || skip "env --default-signal is missing"
	printf '#!/bin/sh\nexec env --default-signal=INT "%s" "$@"\n' \
		"$VHDXFUSE" >"$T/vhdxfuse-sigint"
	chmod +x "$T/vhdxfuse-sigint"
	for sig in TERM INT HUP; do
		VHDXFUSE=$T/vhdxfuse-sigint vf_mount "$T/s.vhdx" "$MNT"
		# keep a descriptor open, so that only the close makes it durable
		python3 - "$MNT/s.raw" "$T/ref.raw" "$sig" <<'EOF' &
import os, random, sys, time
rng = random.Random(sys.argv[3])
fd = os.open(sys.argv[1], os.O_WRONLY)
rfd = os.open(sys.argv[2], os.O_WRONLY)
for _ in range(30):
    off, buf = rng.randrange(31 << 20), rng.randbytes(rng.randint(1, 70000))
    os.pwrite(fd, buf, off)
    os.pwrite(rfd, buf, off)
os.close(rfd)
open(sys.argv[2] + ".done", "w").close()
time.sleep(30)
EOF
		local holder=$!
		track_pid "$holder"
		until [ -e "$T/ref.raw.done" ]; do
			kill -0 "$holder"
			sleep 0.05
		done
		rm "$T/ref.raw.done"
		local pid st=0
		pid=$(vf_pid "$MNT")
		kill "-$sig" "$pid"
		wait_pid_gone "$pid" 10
		wait "$pid" || st=$?
		[ "$st" -eq 0 ] || {
			echo "SIG$sig: daemon exit status $st" >&2
			cat "$T/vhdxfuse.log" >&2
			return 1
		}
		kill "$holder"
		{ wait "$holder"; } 2>/dev/null || true
		assert_not_mounted "$MNT"
		# a dirty log would make QEMU refuse a read-only open
		run qemu-img info "$T/s.vhdx"
		assert_success
		oracle "$T/s.vhdx" "$T/ref.raw"
	done
}

# allocated_bytes of IMG according to vhdxtool info --json
allocated_bytes() {
	"$VHDXTOOL" info --json "$1" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["allocated_bytes"])'
}

@test "zeros written into blocks that read as zeros allocate nothing; into data or a parent's blocks they count" {
	"$VHDXTOOL" create -q --block-size 1M -s 16M "$T/z.vhdx"
	head -c 16M /dev/zero >"$T/ref.raw"
	vf_mount "$T/z.vhdx" "$MNT"
	# 4 MiB of zeros over blocks 0-3, one byte of data in block 8
	dd if=/dev/zero of="$MNT/z.raw" bs=1M count=4 conv=notrunc,fsync status=none
	printf x | dd of="$MNT/z.raw" bs=1 seek=$((8 * MiB + 5)) conv=notrunc,fsync status=none
	printf x | dd of="$T/ref.raw" bs=1 seek=$((8 * MiB + 5)) conv=notrunc status=none
	# zeros over that data: block 8 is present, so they are written
	dd if=/dev/zero of="$MNT/z.raw" bs=512 count=1 seek=$((8 * 2048)) \
		conv=notrunc,fsync status=none
	dd if=/dev/zero of="$T/ref.raw" bs=512 count=1 seek=$((8 * 2048)) \
		conv=notrunc status=none
	cmp "$MNT/z.raw" "$T/ref.raw"
	vf_umount "$MNT"
	[ "$(allocated_bytes "$T/z.vhdx")" = $((1 * MiB)) ]
	oracle "$T/z.vhdx" "$T/ref.raw"

	# a differencing child: zeros over the parent's data must hide it
	qemu-img create -q -f vhdx -o block_size=1M "$T/base.vhdx" 16M
	qemu-io -f vhdx -c "write -P 0x5a 0 16M" "$T/base.vhdx" >/dev/null
	"$VHDXTOOL" create -q -t differencing --parent "$T/base.vhdx" "$T/child.vhdx"
	vf_mount "$T/child.vhdx" "$MNT"
	dd if=/dev/zero of="$MNT/child.raw" bs=1M count=2 seek=3 conv=notrunc,fsync status=none
	vf_umount "$MNT"
	[ "$(allocated_bytes "$T/child.vhdx")" = $((2 * MiB)) ]
	head -c 16M /dev/zero | tr '\0' '\132' >"$T/cref.raw"
	dd if=/dev/zero of="$T/cref.raw" bs=1M count=2 seek=3 conv=notrunc status=none
	# qemu-img cannot open differencing VHDX: our read-only mount, checked
	# by vhdxtool
	run "$VHDXTOOL" check -q "$T/child.vhdx"
	assert_success
	vf_mount "$T/child.vhdx" "$MNT" -o ro
	cmp "$MNT/child.raw" "$T/cref.raw"
	vf_umount "$MNT"
}

# used_bytes FILE: what FILE takes on its file system
used_bytes() {
	echo $(($(stat -c '%b * %B' "$1")))
}

# reserve_case [daemon options...]: a 4 KiB write into a new 8 MiB block;
# sets GREW to how many bytes the image file grew by on the host
reserve_case() {
	local u0 u1
	rm -f "$T/r.vhdx"
	"$VHDXTOOL" create -q --block-size 8M -s 64M "$T/r.vhdx"
	truncate -s 64M "$T/ref.raw"
	vf_mount "$T/r.vhdx" "$MNT" "$@"
	# the first write of the session also gives the log its space
	head -c 4096 /dev/urandom >"$T/d1"
	dd if="$T/d1" of="$MNT/r.raw" bs=4K conv=notrunc,fsync status=none
	dd if="$T/d1" of="$T/ref.raw" bs=4K conv=notrunc status=none
	u0=$(used_bytes "$T/r.vhdx")
	head -c 4096 /dev/urandom >"$T/d2"
	dd if="$T/d2" of="$MNT/r.raw" bs=4K seek=$((20 * 256 + 3)) \
		conv=notrunc,fsync status=none
	dd if="$T/d2" of="$T/ref.raw" bs=4K seek=$((20 * 256 + 3)) \
		conv=notrunc status=none
	u1=$(used_bytes "$T/r.vhdx")
	cmp "$MNT/r.raw" "$T/ref.raw"
	vf_umount "$MNT"
	oracle "$T/r.vhdx" "$T/ref.raw"
	GREW=$((u1 - u0))
}

@test "a new block takes its whole extent on the host; with -o sparse only what is written" {
	require_cmd qemu-img
	if ! fallocate -l 1M "$T/probe" 2>/dev/null; then
		skip "the file system of $T has no fallocate"
	fi
	reserve_case
	echo "# default: a 4 KiB write into a new 8 MiB block took $GREW bytes on the host" >&3
	[ "$GREW" -ge $((8 * MiB)) ]
	reserve_case -o sparse
	echo "# -o sparse: $GREW bytes" >&3
	[ "$GREW" -le $((1 * MiB)) ]
}
