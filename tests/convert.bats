#!/usr/bin/env bats
# vhdxtool convert: what it takes as input (recognised by content; other
# containers refused), what it writes (from -O or OUT's name), VHDX to VHDX
# copies, and no file left behind whatever kills it.  Also: unknown
# commands, after `help` too, are usage errors.
#
# Oracles: images made by qemu-img in every format it writes, qemu-img
# info / compare / check, and the input bytes themselves.

load lib/common
source "$BATS_TEST_DIRNAME/lib/mkimages.sh"
source "$BATS_TEST_DIRNAME/lib/vhdxtool-lib.bash"

FILL=$TOP_SRCDIR/tests/lib/merge-fill.py

setup() {
	common_setup
	[ -x "$VHDXTOOL" ] || skip "$VHDXTOOL not built"
	require_cmd qemu-img python3
	mkdir "$T/d"
}

teardown() {
	common_teardown
}

# The files in DIR, one per line, sorted.
listing() {
	(cd "$1" && ls -A | sort)
}

# qemu-img's idea of FILE's format.
qfmt() {
	qemu-img info --output=json "$1" | python3 -c \
		'import json,sys; print(json.load(sys.stdin)["format"])'
}

@test "unknown commands are usage errors, after help too" {
	run "$VHDXTOOL" help frobnicate
	assert_failure 1
	assert_output --partial "unknown command 'frobnicate'"
	run "$VHDXTOOL" help convert extra
	assert_failure 1
	run "$VHDXTOOL" frobnicate
	assert_failure 1
	# every command in the list has help through `help`
	local c
	for c in $("$VHDXTOOL" --help | sed -n 's/^  \([a-z]\+\)  .*/\1/p'); do
		run "$VHDXTOOL" help "$c"
		assert_success
		assert_output --partial "usage: vhdxtool $c"
	done
	run "$VHDXTOOL" help
	assert_success
	assert_output --partial "Commands:"
}

@test "convert: containers made by qemu-img are refused (exit 2) with a hint, nothing written" {
	local f fmt opts name expect before
	truncate -s 64M "$T/disk.raw"
	python3 "$FILL" 3 $((8 << 20)) $((64 << 20)) "$T/disk.raw"
	# format, qemu-img -o options, file name, what the message names
	while IFS='|' read -r fmt opts name expect; do
		qemu-img convert -q -f raw -O "$fmt" ${opts:+-o "$opts"} \
			"$T/disk.raw" "$T/d/$name"
		# a valid image of that format (qemu-img cannot tell a fixed VHD
		# from raw by content; asked for vpc, it reads the footer)
		qemu-img info -f "$fmt" "$T/d/$name" >/dev/null
		before=$(listing "$T/d")
		for out in out.vhdx out.raw; do
			run "$VHDXTOOL" convert "$T/d/$name" "$T/d/$out"
			assert_failure 2
			assert_output --partial "is a $expect image"
			assert_output --partial "qemu-img convert -f $fmt"
			assert_output --partial "--input-format raw"
			assert_equal "$(listing "$T/d")" "$before"
		done
		rm -f "$T/d/"*
	done <<'EOF'
vpc|subformat=fixed|fixed.vhd|VHD (fixed)
vpc|subformat=dynamic|dyn.vhd|VHD (dynamic or differencing)
qcow2||q.qcow2|qcow
vmdk||sparse.vmdk|VMDK (sparse)
vmdk|subformat=monolithicFlat|desc.vmdk|VMDK (descriptor file)
vmdk|subformat=streamOptimized|stream.vmdk|VMDK (sparse)
vdi||d.vdi|VDI
qed||d.qed|QED
EOF
	# forced: the container's bytes, copied as a raw disk
	qemu-img convert -q -f raw -O qcow2 "$T/disk.raw" "$T/d/q.qcow2"
	run "$VHDXTOOL" convert --input-format raw "$T/d/q.qcow2" "$T/d/q.raw"
	assert_success
	cmp "$T/d/q.qcow2" "$T/d/q.raw"
	# --input-format vhdx insists
	run "$VHDXTOOL" convert --input-format vhdx "$T/disk.raw" "$T/d/x.raw"
	assert_failure 2
	assert_output --partial "not a VHDX image"
	[ ! -e "$T/d/x.raw" ]
}

@test "convert: OUT's format from -O or its name; contradictions refused" {
	truncate -s 32M "$T/in.raw"
	python3 "$FILL" 4 $((4 << 20)) $((32 << 20)) "$T/in.raw"
	cd "$T/d"
	# by name
	"$VHDXTOOL" convert "$T/in.raw" a.vhdx
	assert_equal "$(qfmt a.vhdx)" vhdx
	"$VHDXTOOL" convert "$T/in.raw" b.AVHDX
	assert_equal "$(qfmt b.AVHDX)" vhdx
	"$VHDXTOOL" convert "$T/in.raw" c.img
	cmp "$T/in.raw" c.img
	"$VHDXTOOL" convert "$T/in.raw" noext
	cmp "$T/in.raw" noext
	# VHDX in, the name decides (not "the other format")
	"$VHDXTOOL" convert a.vhdx e.vhdx
	assert_equal "$(qfmt e.vhdx)" vhdx
	qemu-img compare -q -f vhdx -F raw e.vhdx "$T/in.raw"
	"$VHDXTOOL" convert a.vhdx f.raw
	cmp "$T/in.raw" f.raw
	# -O where the name says nothing
	"$VHDXTOOL" convert -O vhdx "$T/in.raw" g
	assert_equal "$(qfmt g)" vhdx
	"$VHDXTOOL" convert -O raw a.vhdx h
	cmp "$T/in.raw" h
	# -O agreeing with the name
	"$VHDXTOOL" convert -O vhdx "$T/in.raw" i.vhdx
	assert_equal "$(qfmt i.vhdx)" vhdx
	"$VHDXTOOL" convert -O raw a.vhdx j.raw
	cmp "$T/in.raw" j.raw
	# contradictions, both ways, and formats vhdxtool does not write
	local before
	before=$(listing .)
	run "$VHDXTOOL" convert -O raw "$T/in.raw" k.vhdx
	assert_failure 1
	assert_output --partial "-O raw contradicts the name k.vhdx"
	run "$VHDXTOOL" convert -O raw a.vhdx k.avhdx
	assert_failure 1
	run "$VHDXTOOL" convert -O vhdx "$T/in.raw" k.raw
	assert_failure 1
	assert_output --partial "-O vhdx contradicts the name k.raw"
	run "$VHDXTOOL" convert -O vhdx a.vhdx k.img
	assert_failure 1
	for n in k.qcow2 k.vhd k.vmdk k.vdi; do
		run "$VHDXTOOL" convert "$T/in.raw" "$n"
		assert_failure 1
		assert_output --partial "writes raw and VHDX images only"
		run "$VHDXTOOL" convert -O raw "$T/in.raw" "$n"
		assert_failure 1
	done
	assert_equal "$(listing .)" "$before"
}

@test "convert a.vhdx b.vhdx: a fresh, compact copy with the same content and geometry" {
	require_cmd qemu-io
	local img="$T/a.vhdx" size=$((256 * MiB))
	qemu-img create -q -f vhdx -o block_size=8M,log_size=1M "$img" $size
	# data, then blocks that were written and then zeroed (allocated,
	# holding zeros), and a discarded range
	qemu-io -f vhdx -c "write -P 0x5a 0 40M" -c "write -P 0x11 100M 3M" \
		-c "write -P 0x77 200M 24M" -c "write -z 200M 16M" \
		-c "write -P 0 8M 16M" "$img" >/dev/null
	qemu-img check -q -f vhdx "$img"
	run "$VHDXTOOL" convert "$img" "$T/b.vhdx"
	assert_success
	qemu-img check -q -f vhdx "$T/b.vhdx"
	qemu-img compare -q -f vhdx -F vhdx "$img" "$T/b.vhdx"
	assert_equal "$(qemu_vsize "$T/b.vhdx")" $size
	assert_equal "$(vx "$T/b.vhdx" get meta.blocksize)" $((8 * MiB))
	assert_equal "$(vx "$T/b.vhdx" get meta.lss)" "$(vx "$img" get meta.lss)"
	assert_equal "$(vx "$T/b.vhdx" get meta.pss)" "$(vx "$img" get meta.pss)"
	echo "# sizes: $(stat -c %s "$img") -> $(stat -c %s "$T/b.vhdx")" >&3
	[ "$(stat -c %s "$T/b.vhdx")" -le "$(stat -c %s "$img")" ]
	# the blocks of zeros are not copied: strictly smaller here
	[ "$(stat -c %s "$T/b.vhdx")" -lt "$(stat -c %s "$img")" ]
	# and again from our own copy: the same
	run "$VHDXTOOL" convert "$T/b.vhdx" "$T/c.vhdx"
	assert_success
	qemu-img compare -q -f vhdx -F vhdx "$img" "$T/c.vhdx"
	[ "$(stat -c %s "$T/c.vhdx")" -le "$(stat -c %s "$T/b.vhdx")" ]
}

@test "convert: 20 SIGKILLs at random moments leave no file but the input (and an old OUT)" {
	local kills=${CONVERT_KILLS:-20} round=0 late=0 t0 t1 dur pid out old
	truncate -s 256M "$T/d/in.raw"
	python3 "$FILL" 5 $((100 << 20)) $((256 << 20)) "$T/d/in.raw"
	t0=$(date +%s%N)
	"$VHDXTOOL" convert -q "$T/d/in.raw" "$T/d/first.vhdx"
	t1=$(date +%s%N)
	dur=$(((t1 - t0) / 1000000))
	rm "$T/d/first.vhdx"
	echo "old" >"$T/old"
	while [ "$round" -lt "$kills" ]; do
		# odd rounds: raw output; every third: replace an existing OUT
		out=$T/d/out.vhdx
		[ $((round % 2)) -eq 1 ] && out=$T/d/out.raw
		old=
		if [ $((round % 3)) -eq 0 ]; then
			cp "$T/old" "$out"
			old=-f
		fi
		"$VHDXTOOL" convert -q $old "$T/d/in.raw" "$out" &
		pid=$!
		sleep_ms $((RANDOM % (dur + 1)))
		kill -KILL "$pid" 2>/dev/null || true
		if wait "$pid"; then
			rm -f "$out" # finished first: not counted
			continue
		fi
		round=$((round + 1))
		# nothing but the input and OUT, if OUT existed before or the
		# kill came after OUT got its name (the last system calls)
		if [ -n "$old" ] || [ -e "$out" ]; then
			assert_equal "$(listing "$T/d")" \
				"$(printf 'in.raw\n%s' "$(basename "$out")")"
		else
			assert_equal "$(listing "$T/d")" "in.raw"
		fi
		# OUT is the old file or the complete new one
		if [ -e "$out" ] && ! cmp -s "$T/old" "$out"; then
			late=$((late + 1))
			if [ "${out##*.}" = raw ]; then
				cmp "$T/d/in.raw" "$out"
			else
				qemu-img compare -q -f vhdx -F raw "$out" \
					"$T/d/in.raw"
			fi
		fi
		rm -f "$out"
	done
	echo "# $round kills ($late after OUT was complete)," \
		"a conversion takes $dur ms" >&3
	[ "$late" -le $((kills / 4)) ]
	# a later run finds nothing in its way and leaves only its output
	run "$VHDXTOOL" convert -q "$T/d/in.raw" "$T/d/out.vhdx"
	assert_success
	assert_equal "$(listing "$T/d")" "$(printf 'in.raw\nout.vhdx')"
	qemu-img compare -q -f vhdx -F raw "$T/d/out.vhdx" "$T/d/in.raw"
}
