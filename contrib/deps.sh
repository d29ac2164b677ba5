#!/bin/sh
# Install what vhdxfuse needs to build, run and be tested on Debian 12.
# Usage: contrib/deps.sh [--runtime]   (as root)
set -e
pkgs="fuse3 libfuse3-3 libuuid1"
build="build-essential autoconf automake pkg-config libfuse3-dev uuid-dev
nbdkit-plugin-dev"
test="qemu-utils bats bats-support bats-assert libvhdi-utils e2fsprogs
util-linux fdisk xz-utils jq python3 groff-base man-db clang-format
clang libclang-rt-14-dev valgrind fio openssl ntfs-3g attr nbdkit libnbd-bin
python3-libnbd"
if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: run as root (apt-get install)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "${1:-}" = --runtime ]; then
	# shellcheck disable=SC2086
	apt-get install -y -qq $pkgs $build qemu-utils >/dev/null
else
	# shellcheck disable=SC2086
	apt-get install -y -qq $pkgs $build $test >/dev/null
fi
