#!/bin/sh
# The call graph between the files of the format library has no cycle but
# open <-> parent (issue 15).  Anyone can run it on a build:
#   python3 tests/lib/layers.py libvhdx.a
# It lists the files bottom-up by layer and names the symbols of any cycle.
set -eu
exec python3 "${TOP_SRCDIR:-$(dirname "$0")/..}/tests/lib/layers.py" \
	"${TOP_BUILDDIR:-.}/libvhdx.a" "${NM:-nm}"
