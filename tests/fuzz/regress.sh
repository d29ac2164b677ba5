#!/bin/sh
# Replay every stored fuzz regression input through its target, as one TAP
# stream: the replays print a line per input, this adds the plan.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
bin=${TOP_BUILDDIR:-.}/tests/fuzz
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
"$bin/replay_open" "$dir/regress-open" >>"$out" || status=1
"$bin/replay_ops" "$dir/regress-ops" >>"$out" || status=1
cat "$out"
echo "1..$(grep -c -E '^(not )?ok ' "$out")"
exit $status
