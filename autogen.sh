#!/bin/sh
# Regenerate the build system from configure.ac and Makefile.am.
set -e
cd "$(dirname "$0")"
mkdir -p build-aux m4
autoreconf -fi
# The TAP driver of make check is not installed by --add-missing.
cp -f "$(automake --print-libdir)/tap-driver.sh" build-aux/tap-driver.sh
