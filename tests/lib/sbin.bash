# Helpers for tests that need mount(8)'s and umount(8)'s helpers in /sbin,
# the only place util-linux looks for mount.TYPE and umount.TYPE.
#
# install_sbin_helpers puts contrib/mount.vhdxfuse.in and
# contrib/umount.vhdxfuse.in there (and umount.fuse.vhdxfuse), made to run
# the build tree's vhdxfuse, unless a copy that differs is installed (the
# test is then skipped: it would test that one).  Files in /sbin are shared
# by every test file, so a lock serializes the tests that install them;
# sbin_teardown removes what was installed and drops the lock.

VF_SBIN_LOCK=/run/lock/vhdxfuse-tests-sbin.lock
VF_SBIN_INSTALLED=()

sbin_lock() {
	exec 8>>"$VF_SBIN_LOCK"
	flock -w 600 8 || skip "another test holds $VF_SBIN_LOCK for 10 min"
}

# install_sbin_file SRC DST: install SRC as DST unless an equal copy is there.
install_sbin_file() {
	local src=$1 dst=$2
	if [ -e "$dst" ] || [ -L "$dst" ]; then
		cmp -s "$dst" "$src" ||
			skip "$dst is installed and differs from this build's"
		return 0
	fi
	install -m 755 "$src" "$dst"
	VF_SBIN_INSTALLED+=("$dst")
}

install_sbin_helpers() {
	local bindir name
	bindir=$(dirname "$(readlink -f "$VHDXFUSE")")
	sbin_lock
	for name in mount.vhdxfuse umount.vhdxfuse; do
		sed "s|@bindir@|$bindir|g" "$TOP_SRCDIR/contrib/$name.in" \
			>"$T/$name"
		install_sbin_file "$T/$name" "/sbin/$name"
	done
	if [ ! -e /sbin/umount.fuse.vhdxfuse ]; then
		ln -s umount.vhdxfuse /sbin/umount.fuse.vhdxfuse
		VF_SBIN_INSTALLED+=(/sbin/umount.fuse.vhdxfuse)
	else
		install_sbin_file "$T/umount.vhdxfuse" /sbin/umount.fuse.vhdxfuse
	fi
}

sbin_teardown() {
	local f
	for f in "${VF_SBIN_INSTALLED[@]}"; do
		rm -f "$f"
	done
	VF_SBIN_INSTALLED=()
	exec 8>&-
}

# The PID of the vhdxfuse daemon serving MOUNTPOINT (absolute), from the
# runtime record the daemon keeps in /run/vhdxfuse.
record_pid() {
	local r
	for r in /run/vhdxfuse/*; do
		[ -f "$r" ] || continue
		if grep -qxF "mountpoint=$1" "$r"; then
			sed -n 's/^pid=//p' "$r"
			return 0
		fi
	done
	return 1
}
