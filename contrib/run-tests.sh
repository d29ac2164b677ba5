#!/bin/sh
# Install the dependencies, build with -Werror, run the whole test suite
# (C unit tests and bats integration tests), make distcheck, and check
# formatting.  This is what CI runs (.ci/run).  Run as root from anywhere.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
sh contrib/deps.sh

step "build (-Werror)"
./autogen.sh >/dev/null 2>&1
./configure --enable-werror >/dev/null
make -j"$(nproc)" >/dev/null

step "formatting (clang-format)"
clang-format --dry-run -Werror src/*/*.c src/*/*.h tests/unit/*.c \
	tests/unit/*.h

step "man page lint"
for m in man/*.1; do
	out=$(groff -man -ww -z "$m" 2>&1)
	[ -z "$out" ] || { echo "$m: $out"; exit 1; }
done

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

step "unit tests under ASan+UBSan"
san=$(mktemp -d)
git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$san"
(
	cd "$san"
	./autogen.sh >/dev/null 2>&1
	./configure --enable-werror --disable-integration-tests \
		CFLAGS="-O1 -g -fsanitize=address,undefined \
-fno-sanitize-recover=all -fno-omit-frame-pointer" >/dev/null
	make -j"$(nproc)" check >/dev/null ||
		{ cat test-suite.log; exit 1; }
	grep -h -E '^# (PASS|FAIL|ERROR):' test-suite.log
)
rm -rf "$san"

step "concurrency tests under ThreadSanitizer (make check-tsan)"
# test_stress built with clang -fsanitize=thread: any report fails it
make check-tsan

step "unit tests under valgrind memcheck"
for t in tests/unit/test_crc32c tests/unit/test_guid tests/unit/test_geometry \
	tests/unit/test_open tests/unit/test_discard; do
	valgrind -q --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite,indirect "$t" >/dev/null ||
		{ echo "valgrind: $t failed"; exit 1; }
	echo "valgrind clean: $t"
done

step "fuzz smoke run (libFuzzer, ${FUZZ_SECONDS:-60} s per target)"
make fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

step "make distcheck"
make distcheck >/dev/null

step "summary"
grep -h -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' test-suite.log ||
	true
pass=$(sed -n 's/^# PASS: *//p' test-suite.log)
fail=$(sed -n 's/^# FAIL: *//p' test-suite.log)
skip=$(sed -n 's/^# SKIP: *//p' test-suite.log)
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
