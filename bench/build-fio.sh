#!/usr/bin/env bash
# Builds fio with its `nfs` (libnfs) ioengine from Debian's fio source package and
# caches the binary as bench/build/fio-nfs. Debian's fio binary has no NFS engine.
#
#   bench/build-fio.sh [--force]
#
# Steps: add a deb-src entry if apt has none (a copy of the system's deb entries in
# /etc/apt/sources.list.d/rekindle-bench-deb-src.sources, needs root), `apt-get
# update`, `apt-get source fio` into bench/build/fio-src, apply
# bench/fio-nfs-engine.patch, `./configure --enable-libnfs`, `make fio`.
# Needs dpkg-dev, build-essential, pkg-config, zlib1g-dev, libnfs-dev
# (`make deps-bench`). Cached: rebuilds only when the patch or this script changes.
#
# The patch fixes three rough edges of fio 3.33's nfs engine (see the patch header):
# getevents ignored `min` (jobs at iodepth > 1 stopped waiting for their last
# requests: short jobs, "Failed NFS operation(code:-14)", hangs in teardown), every
# file was opened read-write (reads failed on read-only exports), and sync requests
# were refused (now a COMMIT, so end_fsync=1 / fsync=N work; sync=1 opens O_SYNC so
# WRITEs are sent FILE_SYNC instead of UNSTABLE).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/build
out=$build/fio-nfs
patch=$here/fio-nfs-engine.patch
force=0
[ "${1:-}" = --force ] && force=1

die() { echo "build-fio: $*" >&2; exit 1; }

stamp=$(cat "$patch" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
if [ "$force" = 0 ] && [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "build-fio: $out is current"
	exit 0
fi

for c in apt-get dpkg-source gcc make pkg-config patch; do
	command -v "$c" >/dev/null 2>&1 || die "'$c' is missing: run 'make deps-bench' (scripts/install-deps --bench)"
done
pkg-config --exists libnfs || die "libnfs-dev is missing: run 'make deps-bench'"
pkg-config --exists zlib || die "zlib1g-dev is missing: run 'make deps-bench'"

mkdir -p "$build"
src=$build/fio-src
rm -rf "$src"
mkdir -p "$src"

# apt-get source needs a deb-src entry. Add one, mirroring the deb entries, if
# there is none.
have_debsrc() {
	grep -rqsE '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' \
		/etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! have_debsrc; then
	[ "$(id -u)" = 0 ] || die "apt has no deb-src entry and adding one needs root (or add one by hand: Types: deb-src)"
	f=/etc/apt/sources.list.d/rekindle-bench-deb-src.sources
	tmp=$(mktemp)
	shopt -s nullglob
	for s in /etc/apt/sources.list.d/*.sources; do
		[ "$s" = "$f" ] && continue
		sed -n '/^Types:/!{p;d}; /[[:space:]]deb\([[:space:]]\|$\)/{s/^Types:.*/Types: deb-src/;p}' "$s" >>"$tmp"
		echo >>"$tmp"
	done
	shopt -u nullglob
	# one-line format (sources.list): deb [opts] URI suite comps -> Types/URIs/... stanzas
	for s in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$s" ] || continue
		awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			uri=$i; suite=$(i+1); comps=""; for (j=i+2; j<=NF; j++) comps=comps (comps?" ":"") $j
			printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n", uri, suite, comps }' "$s" >>"$tmp"
	done
	grep -q '^Types: deb-src' "$tmp" || { rm -f "$tmp"; die "found no deb entries to mirror as deb-src"; }
	install -m 644 "$tmp" "$f"
	rm -f "$tmp"
	echo "build-fio: added $f"
	apt-get -o DPkg::Lock::Timeout=600 update -qq
fi

echo "build-fio: apt-get source fio"
if ! (cd "$src" && apt-get source -qq fio >"$build/fio-source.log" 2>&1); then
	# the index may predate the deb-src entry
	if [ "$(id -u)" = 0 ]; then
		apt-get -o DPkg::Lock::Timeout=600 update -qq
		(cd "$src" && apt-get source -qq fio >"$build/fio-source.log" 2>&1) ||
			die "apt-get source fio failed: see $build/fio-source.log"
	else
		die "apt-get source fio failed (try 'apt-get update' as root): see $build/fio-source.log"
	fi
fi
dir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -n1)
[ -n "$dir" ] && [ -f "$dir/engines/nfs.c" ] || die "no fio source tree with engines/nfs.c under $src"

echo "build-fio: patching $(basename "$dir")/engines/nfs.c with $(basename "$patch")"
patch -d "$dir" -p1 --forward --quiet <"$patch" || die "the engine patch did not apply (fio version $(basename "$dir"))"

echo "build-fio: configure --enable-libnfs && make fio"
(cd "$dir" && ./configure --enable-libnfs --disable-native >"$build/fio-configure.log" 2>&1) ||
	die "configure failed: see $build/fio-configure.log"
grep -q '^CONFIG_LIBNFS=y' "$dir/config-host.mak" || die "configure did not enable libnfs: see $build/fio-configure.log"
(cd "$dir" && make -j"$(nproc)" fio >"$build/fio-make.log" 2>&1) || die "make failed: see $build/fio-make.log"
"$dir/fio" --enghelp=nfs 2>/dev/null | grep -q nfs_url || die "the built fio has no nfs engine"
install -m 755 "$dir/fio" "$out"
echo "$stamp" >"$out.stamp"
echo "build-fio: built $out ($("$out" --version))"
