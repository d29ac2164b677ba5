#!/bin/sh
# Quick start: install the dependencies, build vhdxfuse, and mount IMAGE (a
# demo image holding an ext4 file system when none is given) on MOUNTPOINT.
#
#   contrib/quickstart.sh [IMAGE [MOUNTPOINT]]       (as root, Debian 12)
#
# Unmount afterwards with:  ./vhdxfuse -u MOUNTPOINT (returns once the image
# is closed; "umount" does the same once "make install" put its helper in /sbin)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

image=${1:-}
mnt=${2:-/mnt/vhdxfuse}

echo "== installing dependencies (apt-get)"
sh contrib/deps.sh
echo "== building"
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
[ -f Makefile ] || ./configure >/dev/null
make -j"$(nproc)" >/dev/null

if [ -z "$image" ]; then
	demo=/var/tmp/vhdxfuse-demo
	image=$demo/demo.vhdx
	echo "== no image given: making the demo image $image"
	rm -rf "$demo"
	mkdir -p "$demo/files"
	echo "Hello from inside a VHDX image, served by vhdxfuse." \
		>"$demo/files/hello.txt"
	cp README.md "$demo/files/"
	truncate -s 64M "$demo/fs.raw"
	mkfs.ext4 -q -F -L vhdxdemo -d "$demo/files" "$demo/fs.raw"
	./vhdxtool convert "$demo/fs.raw" "$image" 2>/dev/null ||
		qemu-img convert -f raw -O vhdx "$demo/fs.raw" "$image"
	rm -rf "$demo/fs.raw" "$demo/files"
fi

mkdir -p "$mnt"
echo "== mounting $image on $mnt"
./vhdxfuse "$image" "$mnt"
findmnt "$mnt"
ls -l "$mnt"
raw=$(ls "$mnt"/* | head -n 1)
cat <<MSG

The virtual disk of $image is now the file $raw.
Use it like any disk image, for example:
    mount -o loop $raw /mnt/fs                 (a file system)
    losetup -P --show -f $raw                   (a partitioned disk)
When done: umount /mnt/fs (or losetup -d), then  ./vhdxfuse -u $mnt
MSG
