#!/bin/sh
# Replay every stored fuzz regression input through its target.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
bin=${TOP_BUILDDIR:-.}/tests/fuzz
status=0
"$bin/replay_open" "$dir/regress-open" || status=1
"$bin/replay_ops" "$dir/regress-ops" || status=1
exit $status
