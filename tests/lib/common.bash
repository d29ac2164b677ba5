# Shared helpers for the bats integration tests.
#
# Every test gets its own scratch directory ($T).  Mounts, loop devices and
# daemons started through these helpers are recorded and undone in
# common_teardown, whether the test passed or not.  Daemons are tracked by
# their mount point (vf_track): `vf_pid MOUNTPOINT` is the PID of the daemon
# serving it, and the helpers that unmount take the mount point.
#
# Environment (set by `make check`, or defaulted for a direct bats run):
#   VHDXFUSE    the daemon binary
#   TOP_SRCDIR  source tree
#   SHARED_DIR  ../shared (corpus), may not exist

: "${TOP_SRCDIR:=$(cd "$BATS_TEST_DIRNAME/.." && pwd)}"
: "${TOP_BUILDDIR:=$TOP_SRCDIR}"
: "${VHDXFUSE:=$TOP_BUILDDIR/vhdxfuse}"
: "${SHARED_DIR:=$TOP_SRCDIR/../shared}"

bats_load_library bats-support
bats_load_library bats-assert

# Skip (with a reason) unless FUSE can be used here.
require_fuse() {
	[ -c /dev/fuse ] || skip "/dev/fuse is missing"
	command -v fusermount3 >/dev/null || skip "fusermount3 not installed"
}

require_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, mount)"
}

require_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || skip "$c not installed"
	done
}

common_setup() {
	T=$(mktemp -d "${BATS_TMPDIR:-/tmp}/vhdxfuse-test.XXXXXX")
	VF_LOOPS=()
	VF_FSMOUNTS=()
}

# Undo everything, in reverse order of dependency: file systems on loop
# devices, loop devices, FUSE mounts, daemons.
common_teardown() {
	local m l
	for m in "${VF_FSMOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null; then
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		fi
	done
	for l in "${VF_LOOPS[@]}"; do
		losetup -d "$l" 2>/dev/null
	done
	vf_end_all
	[ -n "${T:-}" ] && rm -rf "$T"
	return 0
}

# The tracked mount points and processes: $T/.tracked, a line each
# "PID<tab>START<tab>MOUNTPOINT" (START: the process's start time, so that
# teardown never ends another process that got the PID later).  A file, not
# a variable, so that what a subshell starts is tracked too.

# vf_track MOUNTPOINT [PID]: unmount MOUNTPOINT in teardown should it still
# be mounted, and end PID, the daemon that serves it; `vf_pid MOUNTPOINT`
# returns PID.  Tracking a mount point again (a new mount there) replaces
# the PID that vf_pid returns; teardown still ends every PID.
vf_track() {
	local mnt=$1 pid=${2:-} start=
	[ -z "$pid" ] || start=$(pid_start "$pid")
	printf '%s\t%s\t%s\n' "$pid" "$start" "$mnt" >>"$T/.tracked"
}

# track_pid PID: a process that serves no mount point (a lock holder, a
# load), ended in teardown.
track_pid() {
	printf '%s\t%s\t\n' "$1" "$(pid_start "$1")" >>"$T/.tracked"
}

# pid_start PID: the start time of process PID (empty once it is gone).
pid_start() {
	sed -n 's/^.*) //p' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# vf_pid MOUNTPOINT: the PID of the daemon last tracked at MOUNTPOINT;
# fails if there is none.
vf_pid() {
	[ -f "$T/.tracked" ] || return 1
	M=$1 awk -F'\t' '$3 == ENVIRON["M"] && $1 != "" { p = $1 }
		END { if (p == "") exit 1; print p }' "$T/.tracked"
}

# vf_end_all: unmount every tracked mount point that is still mounted, then
# give every tracked process 5 s to exit, and SIGKILL it.
vf_end_all() {
	local m line pid start
	[ -f "$T/.tracked" ] || return 0
	local -a mounts procs
	mapfile -t mounts < <(awk -F'\t' '$3 != "" && !seen[$3]++ { print $3 }' \
		"$T/.tracked")
	mapfile -t procs < <(awk -F'\t' '$1 != "" && !seen[$1 FS $2]++ {
		print $1, ($2 == "" ? "-" : $2) }' "$T/.tracked")
	for m in "${mounts[@]}"; do
		if findmnt -rn "$m" >/dev/null 2>&1; then
			fusermount3 -u "$m" 2>/dev/null ||
				fusermount3 -uz "$m" 2>/dev/null
		fi
	done
	for line in "${procs[@]}"; do
		read -r pid start <<<"$line"
		# gone, or another process that got its PID since
		[ "$(pid_start "$pid")" = "$start" ] || continue
		wait_pid_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null
	done
	rm -f "$T/.tracked"
	return 0
}

# wait_pid_gone PID SECONDS: 0 once PID has exited, 1 on timeout.  A zombie
# counts as exited: a daemon that detached is reaped by init, not by us.
wait_pid_gone() {
	local pid=$1 deadline=$((SECONDS + $2)) st
	while st=$(ps -o stat= -p "$pid" 2>/dev/null); do
		[[ $st == Z* ]] && return 0
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.05
	done
	return 0
}

# PIDs of the vhdxfuse processes that have MOUNTPOINT as an argument.
daemon_pids() {
	local mnt=$1 p
	for p in $(pgrep -x vhdxfuse); do
		tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null |
			grep -qxF -- "$mnt" && echo "$p"
	done
	return 0
}

# note TEXT...: show TEXT in bats' output, each line as a "# " comment.
note() {
	sed 's/^/# /' <<<"$*" >&3
}

# le64 NUMBER: NUMBER as 8 little-endian bytes, in hex.
le64() {
	python3 -c 'import struct,sys; print(struct.pack("<Q", int(sys.argv[1], 0)).hex())' "$1"
}

# sleep_ms MILLISECONDS
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# vf_mount IMAGE MOUNTPOINT [daemon options...]
# Starts the daemon in the foreground (-f) in the background, waits up to 10 s
# for the mount, and fails with the daemon's log if it died.  The daemon's
# stderr goes to $T/vhdxfuse.log.  Tracks the daemon at MOUNTPOINT (vf_pid).
vf_mount() {
	local img=$1 mnt=$2 pid
	shift 2
	"$VHDXFUSE" -f "$@" "$img" "$mnt" 2>>"$T/vhdxfuse.log" &
	pid=$!
	vf_track "$mnt" "$pid"
	local deadline=$((SECONDS + 10))
	while ! findmnt -rn -M "$mnt" -t fuse.vhdxfuse >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "vhdxfuse exited before mounting; its log:" >&2
			cat "$T/vhdxfuse.log" >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "vhdxfuse did not mount within 10 s; its log:" >&2
			cat "$T/vhdxfuse.log" >&2
			return 1
		fi
		sleep 0.05
	done
	# The mount shows before the daemon has answered the kernel's INIT;
	# a stat waits for that answer, so that -d's INIT lines are logged.
	stat "$mnt" >/dev/null
}

# vf_umount MOUNTPOINT: unmount and wait for the daemon tracked at
# MOUNTPOINT (if any) to exit.
vf_umount() {
	local mnt=$1 pid
	pid=$(vf_pid "$mnt") || pid=
	fusermount3 -u "$mnt" || return 1
	[ -z "$pid" ] || wait_pid_gone "$pid" 10
}

# vf_kill MOUNTPOINT: SIGKILL the daemon serving MOUNTPOINT, reap it, and
# detach the dead mount.
vf_kill() {
	local mnt=$1 pid
	pid=$(vf_pid "$mnt") || return 1
	kill -KILL "$pid"
	{ wait "$pid"; } 2>/dev/null || true
	fusermount3 -u -z "$mnt"
}

# The exposed file of a directory mount point.
vf_raw_path() {
	local mnt=$1 f
	for f in "$mnt"/*; do
		echo "$f"
		return 0
	done
	return 1
}

# loop_attach FILE [losetup options...]: sets LOOPDEV and records it for
# teardown (call it directly, not in $(...), or the record is lost).
loop_attach() {
	local file=$1
	shift
	LOOPDEV=$(losetup -f --show "$@" "$file") || return 1
	VF_LOOPS+=("$LOOPDEV")
}

# Record a file-system mount point for teardown.
track_fsmount() {
	VF_FSMOUNTS+=("$1")
}

sha256() {
	sha256sum "$1" | cut -d' ' -f1
}

# ---------------------------------------------------------------------------
# Helpers added for qemu-images.bats, ext4.bats, corrupt.bats, corpus.bats.

# fast_sha256 FILE: like sha256, but through OpenSSL (or Python's hashlib)
# when available: several times faster than coreutils for multi-GiB files.
fast_sha256() {
	if command -v openssl >/dev/null; then
		openssl dgst -sha256 -r "$1" | cut -d' ' -f1
	else
		python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$1"
	fi
}

# vf_start IMAGE MOUNTPOINT [daemon options...]
# Start the daemon the way a user does (no -f: it validates the image, then
# daemonizes).  Sets $status and $output (stdout+stderr) like bats' run, and
# records MOUNTPOINT for teardown in case it did mount.  A hung start is cut
# off after 30 s (status 124).  Use it for images that must be refused.
vf_start() {
	local img=$1 mnt=$2
	shift 2
	vf_track "$mnt"
	status=0
	timeout 30 "$VHDXFUSE" "$@" "$img" "$mnt" >"$T/vf_start.out" 2>&1 ||
		status=$?
	output=$(cat "$T/vf_start.out")
}

# assert_not_mounted MOUNTPOINT: fail, showing the mount, if anything is
# mounted at MOUNTPOINT.  ($output and $status of the last run are kept.)
assert_not_mounted() {
	if findmnt -rn -M "$1" >/dev/null 2>&1; then
		echo "$1 is mounted:" >&2
		findmnt -M "$1" >&2
		return 1
	fi
}

# vhdi_mount IMAGE DIR: mount IMAGE with libvhdi's vhdimount (the other
# oracle) in the foreground in the background, tracked for teardown like
# vf_mount; the disk is DIR/vhdi1.
vhdi_mount() {
	local img=$1 mnt=$2 pid
	vhdimount -v "$img" "$mnt" >"$T/vhdimount.log" 2>&1 &
	pid=$!
	vf_track "$mnt" "$pid"
	local deadline=$((SECONDS + 10))
	while ! findmnt -rn -M "$mnt" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "vhdimount exited before mounting:" >&2
			cat "$T/vhdimount.log" >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "vhdimount did not mount within 10 s" >&2
			return 1
		fi
		sleep 0.05
	done
}

# vhdi_umount DIR
vhdi_umount() {
	vf_umount "$1"
}

# cmp_ranges FILE ORACLE [BLOCK_SIZE [COUNT]]: compare random and boundary
# byte ranges of FILE and ORACLE (tests/lib/cmpranges.py).
cmp_ranges() {
	python3 "$TOP_SRCDIR/tests/lib/cmpranges.py" "$1" "$2" \
		--block-size "${3:-1048576}" --count "${4:-50}"
}

# loop_partition LOOPDEV N: wait for partition N of a loop device attached
# with -P and set PARTDEV.  Some kernels do not scan at attach time; then
# partx adds the partitions.  (They go away when the device is detached.)
loop_partition() {
	local dev=$1 n=$2 i
	PARTDEV=${dev}p$n
	for i in $(seq 20); do
		[ -b "$PARTDEV" ] && return 0
		sleep 0.1
	done
	partx -a "$dev" >/dev/null 2>&1
	for i in $(seq 50); do
		[ -b "$PARTDEV" ] && return 0
		sleep 0.1
	done
	echo "partition $n of $dev did not appear" >&2
	return 1
}

# vf_alive MOUNTPOINT: fail, with the daemon's exit status and log, if the
# daemon tracked at MOUNTPOINT is gone (crashed or killed), or if MOUNTPOINT
# is no longer mounted, although the test did not unmount it.
vf_alive() {
	local st=0 pid
	pid=$(vf_pid "$1") || {
		echo "no daemon tracked at $1" >&2
		return 1
	}
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null || st=$?
		echo "vhdxfuse (pid $pid) is gone, exit status $st; log:" >&2
		cat "$T/vhdxfuse.log" >&2
		return 1
	fi
	if ! findmnt -rn -M "$1" >/dev/null 2>&1; then
		echo "$1 was unmounted behind our back (daemon still runs)" >&2
		return 1
	fi
}

# hold_lock ex|sh FILE: another process (python3, not a daemon) takes a
# POSIX lock on FILE, exclusive or shared, and keeps it for 60 s; returns
# once it has it.  Sets HOLDER_PID (tracked for teardown).
hold_lock() {
	local mode=$1 file=$2 deadline=$((SECONDS + 10))
	rm -f "$T/locked"
	python3 - "$mode" "$file" "$T/locked" 3>&- <<'EOF' &
import fcntl, sys, time
mode, path, flag = sys.argv[1:]
with open(path, "r+b" if mode == "ex" else "rb") as f:
    fcntl.lockf(f, fcntl.LOCK_EX if mode == "ex" else fcntl.LOCK_SH)
    open(flag, "w").close()
    time.sleep(60)
EOF
	HOLDER_PID=$!
	track_pid "$HOLDER_PID"
	until [ -e "$T/locked" ]; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}
