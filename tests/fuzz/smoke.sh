#!/bin/sh
# Run the libFuzzer targets, side by side, for FUZZ_SECONDS on seeds made
# from images of our own (qemu-img) and, when present, the shared corpus.
# Prints the total executions; exits non-zero if a target found anything
# (the input is left in tests/fuzz/findings/ to become a regression test).
set -eu
secs=${FUZZ_SECONDS:-60}
top=${TOP_SRCDIR:-.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/seed_open" "$work/seed_ops" tests/fuzz/findings

i=0
for spec in "dynamic 1M 512" "fixed 2M 512" "dynamic 32M 4096"; do
	set -- $spec
	i=$((i + 1))
	img=$work/img$i.vhdx
	if command -v qemu-img >/dev/null && [ "$3" = 512 ]; then
		qemu-img create -q -f vhdx -o subformat=$1,block_size=$2 \
			"$img" 40M
		qemu-io -f vhdx -c "write -P 0x5a 1M 3M" "$img" >/dev/null
		python3 "$top/tests/fuzz/mkseed.py" "$img" "$work/seed_open/q$i"
	fi
done
if [ -d "${SHARED_DIR:-}/corpus" ]; then
	for x in "$SHARED_DIR"/corpus/*.xz; do
		b=$(basename "$x" .xz)
		xz -dc "$x" | dd of="$work/$b" bs=1M conv=sparse \
			iflag=fullblock status=none
		python3 "$top/tests/fuzz/mkseed.py" "$work/$b" \
			"$work/seed_open/$b"
		rm -f "$work/$b"
	done
fi
printf '\002' >"$work/seed_ops/empty"

# the targets run at the same time, each on its own core if there are two
for t in open ops; do
	(
		st=0
		tests/fuzz/fuzz_$t -max_total_time="$secs" -rss_limit_mb=4096 \
			-max_len=400000 \
			-artifact_prefix=tests/fuzz/findings/$t- \
			"$work/seed_$t" >"$work/$t.log" 2>&1 || st=$?
		echo "$st" >"$work/$t.status"
	) &
done
wait

total=0
status=0
for t in open ops; do
	log=$work/$t.log
	if [ "$(cat "$work/$t.status")" != 0 ]; then
		echo "fuzz_$t: FOUND A PROBLEM"
		grep -E 'ERROR|SUMMARY|runtime error|deadly' "$log" | head -5
		status=1
	fi
	n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" |
		grep -o '[0-9]*$' || true)
	[ -n "$n" ] || n=$(grep -E '^#[0-9]+' "$log" | tail -1 |
		sed 's/^#\([0-9]*\).*/\1/')
	echo "fuzz_$t: ${n:-0} executions in ${secs}s"
	total=$((total + ${n:-0}))
done
echo "fuzz total: $total executions"
exit $status
