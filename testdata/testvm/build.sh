#!/usr/bin/env bash
# Builds the tiny bootable test VM used by rekindle's QEMU tests.
#
#   testdata/testvm/build.sh [--force] [--out DIR]
#
# Output (default DIR = testdata/cache/testvm, git-ignored):
#   DIR/disk.img      64 MiB raw disk: MBR + one bootable FAT16 partition (syslinux)
#                     holding vmlinuz, initrd.gz and syslinux.cfg; a reserved tail.
#   DIR/vmlinuz       the kernel (also inside the image)
#   DIR/initrd.gz     the initramfs (also inside the image)
#   DIR/layout.env    the sector layout below, as shell variables
#   DIR/stamp         cache key; a second run with the same key does nothing
#   DIR/debs/         downloaded .deb files (kernel), kept to rebuild offline
#
# Everything comes from Debian packages at build time: the kernel from
# `apt-get download linux-image-<version>-amd64` (+ dpkg -x), the initramfs from
# busybox-static plus the virtio_blk and virtio_console modules and their
# dependencies, qemu-ga and the libraries it links from this machine's
# qemu-guest-agent package, the boot loader from syslinux. Nothing here is
# committed.
#
# Disk layout (512-byte sectors, 131072 sectors in all):
#   0                  MBR (syslinux mbr.bin + one partition entry)
#   2048   .. 100351   partition 1, FAT16 "RKBOOT", bootable (48 MiB)
#   114688             CONFIG sector: one text line read by init at boot, e.g.
#                      "rk.mode=write rk.seconds=10"; all zero = use the kernel
#                      command line (default mode "boot")
#   114689             MARKER sector: "REKINDLE-MARK <counter> <uptime>" (rk.mode=marker)
#   116736 .. 131071   WRITE area (7 MiB): rk.mode=write writes counter n as the text
#                      "REKINDLE-CNT <n>" to sector 116736 + (n mod 14336)
#
# Modes (rk.mode=..., from the config sector, else the kernel command line):
#   boot    print REKINDLE-BOOT-OK and power off (default)
#   marker  read the marker sector, increment its counter, write
#           "REKINDLE-MARK <counter> <uptime>", print the same line, power off
#   write   rk.seconds=N: write counter blocks to consecutive sectors of the write
#           area for N seconds (each write fsync'ed), print "REKINDLE-WROTE <n>" each
#           second, then "REKINDLE-DONE <n>" (n = blocks written) and power off
#   idle    print REKINDLE-IDLE and wait forever (stop it through QMP)
#   agent   start the QEMU guest agent (qemu-ga, from the qemu-guest-agent package
#           installed here, with its shared libraries) on the virtio-serial port
#           named org.qemu.guest_agent.0, print "REKINDLE-AGENT <port>", then idle
# Every boot prints "REKINDLE-BOOT-OK" first and "REKINDLE-MODE <mode>" after it.
# A failure prints "REKINDLE-FAIL <reason>" and powers off.
#
# Boot it (no KVM here, always TCG):
#   qemu-system-x86_64 -machine pc -accel tcg -m 256 -display none -no-reboot \
#     -serial stdio -drive file=DIR/disk.img,format=raw,if=virtio
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/testdata/cache/testvm"
force=0
while [ $# -gt 0 ]; do
	case "$1" in
	--force) force=1 ;;
	--out) out=$2; shift ;;
	--out=*) out=${1#--out=} ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

# Sector layout: keep in sync with testdata/testvm/testvm.go.
DISK_SECTORS=131072
PART_START=2048
PART_SECTORS=98304
CONFIG_SECTOR=114688
MARKER_SECTOR=114689
WRITE_START=116736
WRITE_SECTORS=14336

mkdir -p "$out"
out=$(cd "$out" && pwd)

# One builder at a time (tests in several packages may ask at once).
exec 9>"$out/.lock"
flock 9

log() { echo "testvm: $*" >&2; }

need() {
	local missing=()
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
	if [ ${#missing[@]} -gt 0 ]; then
		log "missing commands: ${missing[*]} (run scripts/install-deps)"
		exit 1
	fi
}

script_hash=$(sha256sum "$0" | cut -c1-16)-$(dpkg-query -W -f='${Version}' qemu-guest-agent 2>/dev/null || echo none)

# Kernel package: pinned by RK_TESTVM_KERNEL, else whatever is cached, else what
# linux-image-amd64 depends on now.
kpkg=${RK_TESTVM_KERNEL:-}
if [ -z "$kpkg" ] && [ -f "$out/stamp" ] && [ "$force" = 0 ]; then
	kpkg=$(sed -n 's/^kernel=//p' "$out/stamp")
fi
if [ -n "$kpkg" ] && [ "$force" = 0 ] && [ -f "$out/disk.img" ] &&
	[ "$(cat "$out/stamp" 2>/dev/null)" = "$(printf 'script=%s\nkernel=%s' "$script_hash" "$kpkg")" ]; then
	log "up to date: $out/disk.img ($kpkg)"
	exit 0
fi

need apt-get apt-cache dpkg cpio gzip busybox syslinux mcopy mkfs.fat flock sha256sum ldd
qga_bin=$(command -v qemu-ga || true)
[ -n "$qga_bin" ] || [ -x /usr/sbin/qemu-ga ] && qga_bin=${qga_bin:-/usr/sbin/qemu-ga}
[ -x "$qga_bin" ] || { log "qemu-ga not found (install qemu-guest-agent: scripts/install-deps)"; exit 1; }
busybox_bin=/bin/busybox
[ -x "$busybox_bin" ] || busybox_bin=$(command -v busybox)
if ldd "$busybox_bin" >/dev/null 2>&1; then
	log "$busybox_bin is dynamically linked; install busybox-static"
	exit 1
fi
mbr_bin=""
for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/SYSLINUX/mbr.bin /usr/share/syslinux/mbr.bin; do
	[ -f "$f" ] && mbr_bin=$f && break
done
[ -n "$mbr_bin" ] || { log "syslinux mbr.bin not found (install syslinux-common)"; exit 1; }

apt_update_if_root() {
	if [ "$(id -u)" = 0 ]; then
		log "refreshing apt lists"
		apt-get update -qq >&2
	else
		return 1
	fi
}

if [ -z "$kpkg" ]; then
	if ! kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1) || [ -z "$kpkg" ]; then
		apt_update_if_root || true
		kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
	fi
	[ -n "$kpkg" ] || { log "cannot find the kernel package (apt-cache depends linux-image-amd64)"; exit 1; }
fi
kver=${kpkg#linux-image-}
log "kernel package $kpkg"

mkdir -p "$out/debs"
deb=$(ls "$out/debs/${kpkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	log "downloading $kpkg"
	if ! (cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2); then
		apt_update_if_root && (cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >&2) ||
			{ log "apt-get download $kpkg failed"; exit 1; }
	fi
	deb=$(ls "$out/debs/${kpkg}"_*.deb | head -n1)
	# keep only this kernel
	for f in "$out"/debs/*.deb; do [ "$f" = "$deb" ] || rm -f "$f"; done
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "extracting $(basename "$deb")"
mkdir -p "$work/pkg"
# only the kernel image and the modules we need
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/pkg" --wildcards \
	"./boot/vmlinuz-*" "./lib/modules/*/kernel/drivers/virtio/*" \
	"./lib/modules/*/kernel/drivers/block/virtio_blk.ko*" \
	"./lib/modules/*/kernel/drivers/char/virtio_console.ko*" 2>/dev/null ||
	dpkg -x "$deb" "$work/pkg"
cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinuz"
moddir="$work/pkg/lib/modules/$kver"
[ -d "$moddir" ] || moddir=$(ls -d "$work"/pkg/lib/modules/* | head -n1)

# ---- initramfs ----
ird="$work/initrd"
mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,lib/modules,tmp,mnt}
cp "$busybox_bin" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
# qemu-ga and every library it links, at the paths the dynamic loader looks in.
cp "$qga_bin" "$ird/bin/qemu-ga"
for lib in $(ldd "$qga_bin" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'); do
	mkdir -p "$ird$(dirname "$lib")"
	cp -L "$lib" "$ird$lib"
done
qga_version=$(dpkg-query -W -f='${Version}' qemu-guest-agent 2>/dev/null || echo unknown)
log "qemu-ga $qga_version with $(ldd "$qga_bin" | grep -c '=> /') libraries"

find_mod() { find "$moddir/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" | head -n1; }
mod_deps() { # read depends= from .modinfo of a (possibly compressed) module
	local f=$1
	case "$f" in
	*.xz) xz -dc "$f" ;; *.zst) zstd -dc "$f" ;; *.gz) gzip -dc "$f" ;; *) cat "$f" ;;
	esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}
order=()
declare -A seen=()
add_mod() { # depth-first: dependencies first
	local m=$1 f d
	[ -n "${seen[$m]:-}" ] && return 0
	seen[$m]=1
	f=$(find_mod "$m")
	if [ -z "$f" ]; then
		# maybe built in: then there is nothing to load
		if grep -qs "/$m.ko" "$moddir/modules.builtin"; then return 0; fi
		log "module $m not found in $kpkg"
		exit 1
	fi
	for d in $(mod_deps "$f"); do add_mod "$d"; done
	case "$f" in
	*.xz) xz -dc "$f" >"$ird/lib/modules/$m.ko" ;;
	*.zst) zstd -dc "$f" >"$ird/lib/modules/$m.ko" ;;
	*.gz) gzip -dc "$f" >"$ird/lib/modules/$m.ko" ;;
	*) cp "$f" "$ird/lib/modules/$m.ko" ;;
	esac
	order+=("$m")
}
for m in virtio_pci virtio_blk virtio_console; do add_mod "$m"; done
printf '%s\n' "${order[@]}" >"$ird/lib/modules/order"
log "modules: ${order[*]}"

cat >"$ird/init" <<EOF
#!/bin/busybox sh
# rekindle test VM init (generated by testdata/testvm/build.sh)
CONFIG_SECTOR=$CONFIG_SECTOR
MARKER_SECTOR=$MARKER_SECTOR
WRITE_START=$WRITE_START
WRITE_SECTORS=$WRITE_SECTORS
EOF
cat >>"$ird/init" <<'EOF'
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

off() { sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 10; }
fail() { echo "REKINDLE-FAIL $*"; off; }
up() { read -r u _ </proc/uptime; echo "$u"; }

for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "insmod $m failed"
done

echo "REKINDLE-BOOT-OK $(up)"

i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && fail "no /dev/vda"
	sleep 0.1
done

MODE=boot
SECONDS_ARG=10
parse() {
	for w in $*; do
		case "$w" in
		rk.mode=*) MODE=${w#rk.mode=} ;;
		rk.seconds=*) SECONDS_ARG=${w#rk.seconds=} ;;
		esac
	done
}
parse "$(cat /proc/cmdline)"
cfg=$(dd if=/dev/vda bs=512 skip=$CONFIG_SECTOR count=1 2>/dev/null | tr -d '\000' | head -n1)
case "$cfg" in rk.*) parse "$cfg" ;; esac
echo "REKINDLE-MODE $MODE"

case "$MODE" in
boot)
	off
	;;
marker)
	prev=$(dd if=/dev/vda bs=512 skip=$MARKER_SECTOR count=1 2>/dev/null | tr -d '\000' | head -n1)
	n=0
	case "$prev" in "REKINDLE-MARK "*) set -- $prev; n=$2 ;; esac
	n=$((n + 1))
	line="REKINDLE-MARK $n $(up)"
	echo "$line" | dd of=/dev/vda bs=512 seek=$MARKER_SECTOR count=1 conv=notrunc,sync,fsync 2>/dev/null ||
		fail "marker write"
	echo "$line"
	off
	;;
write)
	read -r u _ </proc/uptime
	start=${u%.*}
	last=$start
	n=0
	while :; do
		read -r u _ </proc/uptime
		now=${u%.*}
		[ $((now - start)) -ge "$SECONDS_ARG" ] && break
		echo "REKINDLE-CNT $n" | dd of=/dev/vda bs=512 seek=$((WRITE_START + n % WRITE_SECTORS)) count=1 \
			conv=notrunc,sync,fsync 2>/dev/null || fail "write $n"
		n=$((n + 1))
		if [ "$now" != "$last" ]; then
			last=$now
			echo "REKINDLE-WROTE $n"
		fi
	done
	sync
	echo "REKINDLE-DONE $n"
	off
	;;
idle)
	echo "REKINDLE-IDLE"
	while :; do sleep 3600; done
	;;
agent)
	mkdir -p /var/run /tmp/qga
	port=""
	i=0
	while [ -z "$port" ]; do
		for p in /sys/class/virtio-ports/*; do
			[ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
		done
		i=$((i + 1))
		[ -z "$port" ] && [ $i -gt 100 ] && fail "no virtio-serial port org.qemu.guest_agent.0"
		[ -z "$port" ] && sleep 0.1
	done
	/bin/qemu-ga -m virtio-serial -p "$port" -f /tmp/qga/pid -t /tmp/qga &
	echo "REKINDLE-AGENT $port"
	echo "REKINDLE-IDLE"
	while :; do sleep 3600; done
	;;
*)
	fail "unknown mode $MODE"
	;;
esac
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n) >"$work/initrd.gz"

# ---- boot partition ----
cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT rekindle
PROMPT 0
TIMEOUT 0
LABEL rekindle
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet loglevel=3 panic=1 rk.mode=boot
EOF
cat >"$work/hello.txt" <<'EOF'
hello from the rekindle test VM
EOF

part="$work/part.img"
truncate -s $((PART_SECTORS * 512)) "$part"
mkfs.fat -F 16 -n RKBOOT -h $PART_START -i 52454b44 "$part" >/dev/null
syslinux --install "$part"
mcopy -i "$part" "$work/vmlinuz" ::vmlinuz
mcopy -i "$part" "$work/initrd.gz" ::initrd.gz
mcopy -i "$part" "$work/syslinux.cfg" ::syslinux.cfg
mmd -i "$part" ::rekindle
mcopy -i "$part" "$work/hello.txt" ::rekindle/hello.txt

# ---- whole disk ----
img="$work/disk.img"
truncate -s $((DISK_SECTORS * 512)) "$img"
dd if="$mbr_bin" of="$img" bs=440 count=1 conv=notrunc status=none
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 24) & 255)))"; }
{
	# status 0x80 (bootable), CHS start (LBA-only marker), type 0x0e FAT16 LBA, CHS end
	printf '\x80\xfe\xff\xff\x0e\xfe\xff\xff'
	le32 $PART_START
	le32 $PART_SECTORS
} | dd of="$img" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$img" bs=1 seek=510 conv=notrunc status=none
# disk signature (deterministic)
printf 'RKDV' | dd of="$img" bs=1 seek=440 conv=notrunc status=none
dd if="$part" of="$img" bs=1M seek=$((PART_START * 512)) oflag=seek_bytes conv=notrunc,sparse status=none

cat >"$work/layout.env" <<EOF
# rekindle test VM disk layout (sectors of 512 bytes)
KERNEL_PACKAGE=$kpkg
DISK_SECTORS=$DISK_SECTORS
PART_START=$PART_START
PART_SECTORS=$PART_SECTORS
CONFIG_SECTOR=$CONFIG_SECTOR
MARKER_SECTOR=$MARKER_SECTOR
WRITE_START=$WRITE_START
WRITE_SECTORS=$WRITE_SECTORS
EOF

mv "$work/vmlinuz" "$work/initrd.gz" "$work/layout.env" "$out/"
mv "$img" "$out/disk.img"
printf 'script=%s\nkernel=%s' "$script_hash" "$kpkg" >"$out/stamp"
log "built $out/disk.img ($(du -h "$out/disk.img" | cut -f1) allocated)"
