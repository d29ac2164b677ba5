#!/bin/sh
# Install the dependencies, build with -Werror, run the whole test suite
# (C unit tests and bats integration tests), make distcheck, and check
# formatting.  This is what CI runs (.ci/run).  Run as root from anywhere.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# each step says when it starts and how long the whole run has taken
start=$(date +%s)
step() {
	printf '\n=== %s  [%s, +%ds]\n' "$*" "$(date -u +%H:%M:%S)" \
		$(($(date +%s) - start))
}

step "dependencies"
sh contrib/deps.sh

step "build (-Werror)"
./autogen.sh >/dev/null 2>&1
./configure --enable-werror >/dev/null
make -j"$(nproc)" >/dev/null

step "formatting (make check-format)"
make check-format

step "man page lint (make check-man)"
make check-man

step "make check"
status=0
make -j"$(nproc)" check || status=$?
for f in tests/unit/*.log tests/*.log; do
	[ -f "$f" ] || continue
	case "$f" in *test-suite.log) continue ;; esac
	grep -E '^(not ok|ok .*# skip|FAIL|SKIP)' "$f" 2>/dev/null |
		sed "s|^|$f: |" || true
done
[ "$status" -eq 0 ] || { cat test-suite.log 2>/dev/null; exit "$status"; }

step "leftovers"
# Everything the tests make lives in their scratch directories.
left=$(findmnt -rn -o TARGET | grep 'vhdxfuse-test\.' || true)
loops=$(losetup -a | grep 'vhdxfuse-test\.' || true)
daemons=$(pgrep -a -f 'vhdxfuse.*vhdxfuse-test\.' || true)
if [ -n "$left$loops$daemons" ]; then
	echo "left behind: mounts [$left] loops [$loops] daemons [$daemons]"
	exit 1
fi

step "unit tests and fuzz replays under ASan+UBSan (make check-sanitizers)"
make -j"$(nproc)" check-sanitizers

step "concurrency tests under ThreadSanitizer (make check-tsan)"
make -j"$(nproc)" check-tsan

step "unit tests under valgrind memcheck (make check-valgrind)"
make -j"$(nproc)" check-valgrind

step "fuzz smoke run (libFuzzer, ${FUZZ_SECONDS:-60} s per target)"
make -j"$(nproc)" fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

step "make distcheck (the quick tests from the tarball)"
make -j"$(nproc)" distcheck 'TESTS=$(QUICK_TESTS)' >/dev/null

step "summary"
grep -h -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' test-suite.log ||
	true
pass=$(sed -n 's/^# PASS: *//p' test-suite.log)
fail=$(sed -n 's/^# FAIL: *//p' test-suite.log)
skip=$(sed -n 's/^# SKIP: *//p' test-suite.log)
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
