#!/usr/bin/env bats
# Real images from other producers (Hyper-V, Disk2vhd, old qemu), listed in
# $SHARED_DIR/corpus/MANIFEST.tsv with the SHA-256 of their virtual disk as
# qemu-img converts it (raw_sha256_qemu; for the two dirty-log images that
# is the content after qemu's own log replay -- vhdxfuse replays in memory).
# One test per image: decompress, check the container hash, mount read-only,
# hash the exposed disk, unmount, check the image was not modified.

load lib/common
load lib/corpus

setup() {
	common_setup
	require_corpus
	require_fuse
	require_cmd xz python3
	mkdir -p "$T/mnt"
}

teardown() {
	common_teardown
}

# corpus_check FILE: the exposed disk hashes like qemu's conversion.
corpus_check() {
	local file=$1 want size f before t0
	unpack "$file"
	want=$(manifest_field "$file" raw_sha256_qemu)
	size=$(manifest_field "$file" virtual_size)
	[[ $want =~ ^[0-9a-f]{64}$ ]]
	before=$(fast_sha256 "$IMG")

	vf_mount "$IMG" "$T/mnt" -o ro
	f=$(vf_raw_path "$T/mnt")
	assert_equal "$(basename "$f")" "$(basename "$IMG" .vhdx).raw"
	assert_equal "$(stat -c %s "$f")" "$size"
	t0=$SECONDS
	assert_equal "$(fast_sha256 "$f")" "$want"
	echo "# hashed $size bytes through the mount in $((SECONDS - t0)) s" >&3
	vf_alive "$T/mnt"
	vf_umount "$T/mnt"

	assert_equal "$(fast_sha256 "$IMG")" "$before"
}

@test "corpus: every image in MANIFEST.tsv has a test in this file" {
	local listed tested
	listed=$(tail -n +2 "$CORPUS/MANIFEST.tsv" | cut -f1 | sort)
	tested=$(grep -o '^@test "corpus: [^ ]*\.xz"' "$BATS_TEST_FILENAME" |
		sed 's/^@test "corpus: //; s/"$//' | sort)
	assert_equal "$tested" "$listed"
	[ "$(ls "$CORPUS"/*.xz | wc -l)" -eq "$(wc -l <<<"$listed")" ]
}

@test "corpus: dissect-fixed.vhdx.xz" {
	corpus_check dissect-fixed.vhdx.xz
}

@test "corpus: dissect-dynamic.vhdx.xz" {
	corpus_check dissect-dynamic.vhdx.xz
}

@test "corpus: dissect-differencing.avhdx.xz" {
	# A Hyper-V checkpoint whose parent was never published: it must be
	# refused cleanly, the file untouched (differencing.bats checks the
	# message in detail).
	local before
	unpack dissect-differencing.avhdx.xz
	before=$(fast_sha256 "$IMG")
	vf_start "$IMG" "$T/mnt" -o ro
	echo "exit status $status; output: $output"
	[ "$status" -eq 32 ]
	grep -qiE 'parent|differencing' <<<"$output"
	assert_not_mounted "$T/mnt"
	assert_equal "$(fast_sha256 "$IMG")" "$before"
}

@test "corpus: qemu-iotest-dirtylog-10G-4M.vhdx.xz" {
	# dirty log: must show the replayed content, not the stale one
	[ "$(manifest_field qemu-iotest-dirtylog-10G-4M.vhdx.xz raw_sha256_qemu)" != \
		"$(manifest_field qemu-iotest-dirtylog-10G-4M.vhdx.xz raw_sha256_no_log_replay)" ]
	corpus_check qemu-iotest-dirtylog-10G-4M.vhdx.xz
}

@test "corpus: qemu-iotest-dynamic-1G.vhdx.xz" {
	corpus_check qemu-iotest-dynamic-1G.vhdx.xz
}

@test "corpus: qemu-test-disk2vhd.vhdx.xz" {
	# both headers carry the same sequence number
	corpus_check qemu-test-disk2vhd.vhdx.xz
}

@test "corpus: coreos-hyperv-config2_base.vhdx.xz" {
	corpus_check coreos-hyperv-config2_base.vhdx.xz
}

@test "corpus: discutils-vhdx-log-replay.vhdx.xz" {
	[ "$(manifest_field discutils-vhdx-log-replay.vhdx.xz raw_sha256_qemu)" != \
		"$(manifest_field discutils-vhdx-log-replay.vhdx.xz raw_sha256_no_log_replay)" ]
	corpus_check discutils-vhdx-log-replay.vhdx.xz
}

@test "corpus: discutils-btrfs.vhdx.xz" {
	corpus_check discutils-btrfs.vhdx.xz
}

@test "corpus: discutils-swap.vhdx.xz" {
	corpus_check discutils-swap.vhdx.xz
}

@test "corpus: discutils-xfs.vhdx.xz" {
	corpus_check discutils-xfs.vhdx.xz
}

@test "corpus: discutils-xfs5.vhdx.xz" {
	corpus_check discutils-xfs5.vhdx.xz
}

@test "corpus: discutils-lvm2.vhdx.xz" {
	corpus_check discutils-lvm2.vhdx.xz
}

@test "corpus: velociraptor-test.vhdx.xz" {
	corpus_check velociraptor-test.vhdx.xz
}
