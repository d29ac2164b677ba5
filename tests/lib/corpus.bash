# Helpers for the tests that use the corpus of real images
# ($SHARED_DIR/corpus, listed in its MANIFEST.tsv).  Load after lib/common.

CORPUS=$SHARED_DIR/corpus

# Skip (with a reason) unless the corpus is there.
require_corpus() {
	[ -f "$CORPUS/MANIFEST.tsv" ] ||
		skip "no corpus at $CORPUS (set SHARED_DIR)"
}

# manifest_field FILE COLUMN_NAME: FILE's value in the manifest's column.
manifest_field() {
	awk -F'\t' -v f="$1" -v c="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$1 == f { print $(col[c]); found = 1 }
		END { exit !found }' "$CORPUS/MANIFEST.tsv"
}

# unpack FILE: decompress $CORPUS/FILE (sparse) to a private copy in $T,
# set IMG, and check it against the manifest's container hash.
unpack() {
	local file=$1
	require_corpus
	require_cmd xz
	IMG=$T/${file%.xz}
	xz -dc "$CORPUS/$file" |
		dd of="$IMG" bs=1M conv=sparse iflag=fullblock status=none
	assert_equal "$(fast_sha256 "$IMG")" \
		"$(manifest_field "$file" container_sha256)"
}
