#!/usr/bin/env bash
# NFS read and write throughput: rekindle serving a restore point (and a session for
# writes) against NFS-Ganesha (VFS FSAL) serving the same disk as a plain file, both
# read by the same client, fio's `nfs` (libnfs) engine; plus a local page-cache read
# of the raw file with fio's psync engine as the ceiling.
#
#   bench/nfs.sh            (make bench-nfs runs it after `make deps-bench`)
#
# Environment:
#   BENCH_RUNS      runs per test and server; medians are reported   (5)
#   BENCH_DISK      disk size (genvm SIZE)                            (1G)
#   BENCH_RAND_IO   bytes per warm random-read run                    (128M)
#   BENCH_COLD_RAND bytes per cold random-read run                    (32M)
#   BENCH_WRITE     bytes per write run                               (512M)
#   BENCH_SYNC_IO   bytes per FILE_SYNC 4 KiB random-write run        (16M)
#   BENCH_WORK      scratch folder (deleted and recreated)            (bench/build/work)
#   BENCH_DOC       markdown file to update, or empty for none        (docs/benchmarks.md)
#   BENCH_TIMEOUT   seconds before one fio run is killed and retried  (60)
#   BENCH_FILES     small files per metadata run (CREATE+WRITE+COMMIT) (2000)
#   BENCH_ONLY      extended regex: run only the tests whose name matches, among all
#                   tests, the extra ones included (default: issue 11's rows)
#   BENCH_EXTRA     1: also run the rows outside issue 11's set (sequential reads, UNSTABLE
#                   writes without a COMMIT, rekindle --unsafe-writes)
#   BENCH_CHUNK     repository chunk size (rekindle init --chunk-size) (256K)
#   BENCH_BIN       a rekindle binary to measure instead of building one (A/B runs)
#   BENCH_BIN_B     a second rekindle binary, "rekindle-b", measured in the same run on
#                   every test but --unsafe-writes (its own copy of the repository; an
#                   extra A/B table)
#   BENCH_COLD_KEEP_META 1: cold runs put only the files' data out of the page cache
#                   (bench/evict on the repositories and Ganesha's disk) instead of
#                   drop_caches: inodes and folders stay cached, as one file holding many
#                   chunks would keep them; what cold reads cost without the per-chunk
#                   files' metadata
#   BENCH_B_IMPORT  1: rekindle-b's repository is written by rekindle-b itself (init and
#                   backup import of the same disk) instead of a copy of rekindle's, for a
#                   change in how chunks are stored; both repositories' stored sizes go
#                   into results/import.txt
#   BENCH_PROFILE   1: CPU-profile rekindle (REKINDLE_CPUPROFILE) into results/rekindle.TEST.*.pprof
#                   (and its block and mutex profiles: .block.pprof, .mutex.pprof); rekindle is
#                   restarted before every write and small-files test, so each has its own
#   BENCH_STRACE    1: count each server's fsync, fdatasync, pwrite64 and sync_file_range
#                   calls during every fio run (strace -f -c) into results/json/*.strace
#   BENCH_STRACE_ALL 1: with BENCH_STRACE, count every system call instead (syscalls per
#                   request: divide by the run's request count)
#
# Everything runs as root inside private network, mount and PID namespaces: rpcbind,
# Ganesha (NFS 2049, MOUNT 20048) and rekindle (NFS+MOUNT 20490, API 7480) bind
# nothing outside, /run and /var/lib/nfs are private tmpfs (rpcbind's socket and
# Ganesha's state never touch the host's), and every process dies with the run.
# Results: bench/build/results/ (fio JSON of every run, values.tsv, table.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

: "${BENCH_RUNS:=5}" "${BENCH_DISK:=1G}" "${BENCH_RAND_IO:=128M}" "${BENCH_COLD_RAND:=32M}"
: "${BENCH_WRITE:=512M}" "${BENCH_WORK:=$root/bench/build/work}" "${BENCH_TIMEOUT:=60}" "${BENCH_SYNC_IO:=16M}"
: "${BENCH_DOC=docs/benchmarks.md}" "${BENCH_FILES:=2000}" "${BENCH_ONLY:=}" "${BENCH_PROFILE:=}" "${BENCH_STRACE:=}" "${BENCH_BIN:=}" "${BENCH_CHUNK:=256K}" "${BENCH_BIN_B:=}" "${BENCH_EXTRA:=}" "${BENCH_B_IMPORT:=}" "${BENCH_COLD_KEEP_META:=}"
export BENCH_COLD_KEEP_META BENCH_B_IMPORT BENCH_EXTRA BENCH_BIN_B BENCH_CHUNK BENCH_FILES BENCH_ONLY BENCH_PROFILE BENCH_STRACE BENCH_SYNC_IO BENCH_RUNS BENCH_DISK BENCH_RAND_IO BENCH_COLD_RAND BENCH_WRITE BENCH_WORK BENCH_TIMEOUT BENCH_DOC
: "${BENCH_STRACE_ALL:=}"
export BENCH_STRACE_ALL

FIO=$root/bench/build/fio-nfs
NFSFILES=$root/bench/build/nfsfiles
EVICT=$root/bench/build/evict
RK=$root/bin/rekindle
RKB=$root/bin/rekindle-b
RES=$root/bench/build/results
VM=bench01
DISKFILE=$VM-flat.vmdk
RK_PORT=20490
RK_API=127.0.0.1:7480
RKB_PORT=20492
RKB_API=127.0.0.1:7482
# the server's own token file: the locator a serve leaves for this user is
# keyed by port alone, and another bench-nfs run on this machine (in its own
# namespaces, same port) rewrites it
RK_TOKEN_FILE=$BENCH_WORK/repo/state/api-token
RKB_TOKEN_FILE=$BENCH_WORK/repo-b/state/api-token
G_PORT=2049
STRACE_SET=fsync,fdatasync,pwrite64,sync_file_range
[ "$BENCH_STRACE_ALL" = 1 ] && STRACE_SET=all
G_MNT=20048

# issue 11's benchmark, the default set: UNSTABLE 1 MiB writes with a COMMIT at the
# end (qd 1, 8), FILE_SYNC 1 MiB and 4 KiB random writes (qd 1, 8), the small files,
# warm and cold 4 KiB random reads (qd 1, 32)
ISSUE_ROWS='^(write-qd[18]-commit|write-sync-qd[18]|randwrite-sync-qd[18]|files-create-write-commit|randread-qd(1|32)|cold-randread-qd(1|32))$'

# selected NAME: is the test in this run?
selected() {
	if [ -n "$BENCH_ONLY" ]; then [[ $1 =~ $BENCH_ONLY ]]; return; fi
	[ "$BENCH_EXTRA" = 1 ] || [[ $1 =~ $ISSUE_ROWS ]]
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "bench-nfs: $*" >&2; exit 1; }

bytes() { # 1G, 512M, 64K, 4096 -> bytes
	local v=$1 n u
	n=${v%[KMGTkmgt]}
	u=${v#"$n"}
	case "$u" in
	'') echo "$n" ;; [Kk]) echo $((n << 10)) ;; [Mm]) echo $((n << 20)) ;;
	[Gg]) echo $((n << 30)) ;; [Tt]) echo $((n << 40)) ;;
	esac
}

# ---------------------------------------------------------------- outer phase

outer() {
	[ "$(id -u)" = 0 ] || die "run as root: it starts rpcbind and NFS-Ganesha in private namespaces and drops the page cache"
	local missing=()
	for c in ganesha.nfsd rpcbind rpcinfo nfs-ls jq unshare ip timeout go awk sha256sum; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[ "$BENCH_STRACE" = 1 ] && ! command -v strace >/dev/null 2>&1 && missing+=(strace)
	[ ${#missing[@]} -eq 0 ] || die "missing commands: ${missing[*]} — run 'make deps-bench' (scripts/install-deps --bench)"
	find /usr/lib -name libfsalvfs.so 2>/dev/null | grep -q . ||
		die "NFS-Ganesha's VFS FSAL (libfsalvfs.so) is missing — run 'make deps-bench' (package nfs-ganesha-vfs)"
	unshare -n -m -p --fork true 2>/dev/null ||
		die "cannot create network/mount/PID namespaces (unshare -n -m -p): needs root with CAP_SYS_ADMIN (docker: --privileged)"

	local t0=$SECONDS
	"$here/build-fio.sh"
	log "go build bin/rekindle, bench/build/nfsfiles, bench/build/evict"
	mkdir -p "$(dirname "$RK")"
	if [ -n "$BENCH_BIN" ]; then cp "$BENCH_BIN" "$RK"; else go build -o "$RK" ./cmd/rekindle; fi
	if [ -n "$BENCH_BIN_B" ]; then cp "$BENCH_BIN_B" "$RKB"; fi
	go build -tags libnfs -o "$NFSFILES" ./bench/nfsfiles
	go build -o "$EVICT" ./bench/evict

	rm -rf "$BENCH_WORK" "$RES"
	mkdir -p "$BENCH_WORK" "$RES/json"
	local W=$BENCH_WORK
	log "genvm: $VM, $BENCH_DISK mixed flat disk (seed 1)"
	go run ./testdata/genvm -dir "$W/vms" -name $VM -seed 1 -disk "$BENCH_DISK:mixed:flat" -max-data "$BENCH_DISK" >/dev/null
	"$RK" init --repo "$W/repo" --chunk-size "$BENCH_CHUNK" >/dev/null
	cp "$W/repo/config.json" "$RES/repo-config.json"
	log "rekindle backup import"
	"$RK" backup import --repo "$W/repo" "$W/vms/$VM" 2>/dev/null | grep "^vm $VM:" >"$RES/import.txt" || true
	local point point_b=''
	point=$("$RK" list points --repo "$W/repo" --json | jq -r --arg vm $VM '[.[] | select(.vm == $vm)][0].id')
	[ -n "$point" ] && [ "$point" != null ] || die "no restore point after import"
	"$RK" list points --repo "$W/repo" --json >"$RES/points.json"
	log "rekindle export (the plain file Ganesha serves)"
	"$RK" export --repo "$W/repo" --point "$point" --to "$W/export" -q
	cmp "$W/export/$DISKFILE" "$W/vms/$VM/$DISKFILE" || die "exported disk differs from the source disk"
	mkdir -p "$W/ganesha/export" "$W/local"
	# plain files as a thin-provisioned datastore holds them: zeros are holes
	cp --sparse=always "$W/export/$DISKFILE" "$W/ganesha/export/$DISKFILE"
	# the file Ganesha's write tests overwrite, made a copy of the disk again before each run
	cp --sparse=always "$W/export/$DISKFILE" "$W/ganesha/export/w-flat.vmdk"
	rm -rf "$W/export"
	# rekindle-b serves its own copy: one repository takes one serve
	if [ -n "$BENCH_BIN_B" ] && [ "$BENCH_B_IMPORT" = 1 ]; then
		log "rekindle-b backup import (its own repository)"
		"$RKB" init --repo "$W/repo-b" --chunk-size "$BENCH_CHUNK" >/dev/null
		"$RKB" backup import --repo "$W/repo-b" "$W/vms/$VM" 2>/dev/null | grep "^vm $VM:" | sed 's/^/rekindle-b: /' >>"$RES/import.txt" || true
		point_b=$("$RKB" list points --repo "$W/repo-b" --json | jq -r --arg vm $VM '[.[] | select(.vm == $vm)][0].id')
		echo "stored bytes (du -sb chunks/): rekindle $(du -sb "$W/repo/chunks" | cut -f1), rekindle-b $(du -sb "$W/repo-b/chunks" | cut -f1)" >>"$RES/import.txt"
	elif [ -n "$BENCH_BIN_B" ]; then cp -a "$W/repo" "$W/repo-b"; fi
	{
		echo "disk_bytes=$(stat -c %s "$W/vms/$VM/$DISKFILE")"
		echo "disk_alloc=$(($(stat -c %b "$W/vms/$VM/$DISKFILE") * $(stat -c %B "$W/vms/$VM/$DISKFILE")))"
		echo "point=$point"
		# what was built, when it was built (report runs later)
		local c
		c=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
		git -C "$root" diff --quiet HEAD -- . ':!bench' ':!docs' 2>/dev/null || c="$c+changes"
		[ -n "$BENCH_BIN" ] && c="$BENCH_BIN"
		echo "rk_commit='$c'"
	} >"$RES/data.env"
	echo "start_utc='$(date -u '+%Y-%m-%d %H:%M')' start_load='$(cut -d' ' -f1-3 /proc/loadavg)'" >>"$RES/data.env"

	log "setup took $((SECONDS - t0)) s; measuring in private namespaces"
	export BENCH_POINT=$point BENCH_POINT_B=${point_b:-$point}
	# --kill-child: when unshare dies, the namespace's init dies and the kernel kills
	# everything in it (servers, fio). unshare ignores INT and TERM while it waits for
	# its child, so a signal to this script kills it with KILL.
	unshare -n -m -p --fork --kill-child --mount-proc bash "$here/nfs.sh" --inner &
	local upid=$!
	trap 'kill -KILL $upid 2>/dev/null; wait $upid 2>/dev/null; exit 130' INT TERM
	wait $upid || die "measurement failed (exit $?); logs in $RES"
	trap - INT TERM
	echo "end_utc='$(date -u '+%H:%M')' end_load='$(cut -d' ' -f1-3 /proc/loadavg)'" >>"$RES/data.env"
	report
	log "total $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- inner phase

RK_PID='' RKB_PID='' G_PID='' RPCB_PID='' RK_FLAGS='' PROF_TAG=start

stop_pid() { # pid name
	local pid=$1 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	log "$2 did not stop on SIGTERM; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	stop_pid "$RK_PID" rekindle
	stop_pid "$RKB_PID" rekindle-b
	stop_pid "$G_PID" ganesha
	stop_pid "$RPCB_PID" rpcbind
}

wait_nfs() { # url name log
	local i
	for i in $(seq 150); do
		nfs-ls "$1" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "$2 does not answer at $1 (log: $3)"
}

rk_url() { echo "nfs://127.0.0.1$1?version=3&nfsport=$RK_PORT&mountport=$RK_PORT"; }
rkb_url() { echo "nfs://127.0.0.1$1?version=3&nfsport=$RKB_PORT&mountport=$RKB_PORT"; }
g_url() { echo "nfs://127.0.0.1$1?version=3&nfsport=$G_PORT&mountport=$G_MNT"; }

start_rekindle() { # extra serve flags
	RK_FLAGS="$*"
	local prof='' block='' mutex=''
	if [ "$BENCH_PROFILE" = 1 ]; then
		prof=$RES/rekindle.$PROF_TAG.$(date +%s%N)
		block=$prof.block.pprof mutex=$prof.mutex.pprof prof=$prof.pprof
	fi
	REKINDLE_CPUPROFILE=$prof REKINDLE_BLOCKPROFILE=$block REKINDLE_MUTEXPROFILE=$mutex "$RK" serve --repo "$BENCH_WORK/repo" --nfs 127.0.0.1:$RK_PORT --portmap off \
		--api $RK_API --metrics off "$@" >>"$RES/rekindle.log" 2>&1 &
	RK_PID=$!
	wait_nfs "$(rk_url /points)" rekindle "$RES/rekindle.log"
}

start_rekindle_b() { # BENCH_BIN_B on the repository's copy
	local prof=''
	[ "$BENCH_PROFILE" = 1 ] && prof=$RES/rekindle-b.$PROF_TAG.$(date +%s%N).pprof
	REKINDLE_CPUPROFILE=$prof "$RKB" serve --repo "$BENCH_WORK/repo-b" --nfs 127.0.0.1:$RKB_PORT --portmap off \
		--api $RKB_API --metrics off >>"$RES/rekindle-b.log" 2>&1 &
	RKB_PID=$!
	wait_nfs "$(rkb_url /points)" rekindle-b "$RES/rekindle-b.log"
}

publish() { # rekindle|rekindle-b -> the id of a new session of the VM
	if [ "$1" = rekindle-b ]; then
		"$RK" publish --server $RKB_API --token-file "$RKB_TOKEN_FILE" --vm $VM --json | jq -r .id
	else
		"$RK" publish --server $RK_API --token-file "$RK_TOKEN_FILE" --vm $VM --json | jq -r .id
	fi
}

discard() { # rekindle|rekindle-b SESSION
	local api=$RK_API tok=$RK_TOKEN_FILE
	[ "$1" = rekindle-b ] && api=$RKB_API tok=$RKB_TOKEN_FILE
	"$RK" sessions discard --server "$api" --token-file "$tok" "$2" >/dev/null 2>&1 || log "could not discard session $2 of $1"
}

restart_rekindle() {
	stop_pid "$RK_PID" rekindle
	RK_PID=''
	# shellcheck disable=SC2086
	start_rekindle $RK_FLAGS
}

start_ganesha() {
	local gw=$BENCH_WORK/ganesha plugins
	plugins=$(dirname "$(find /usr/lib -name libfsalvfs.so | head -n1)")
	cat >"$gw/ganesha.conf" <<EOF
# written by bench/nfs.sh
NFS_CORE_PARAM {
	NFS_Port = $G_PORT;
	MNT_Port = $G_MNT;
	Protocols = 3;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
	Plugins_Dir = "$plugins";
}
NFSV4 { Graceless = true; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
	Export_Id = 1;
	Path = "$gw/export";
	Pseudo = /bench;
	Access_Type = RW;
	Squash = No_Root_Squash;
	Protocols = 3;
	Transports = TCP;
	SecType = sys;
	FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
EOF
	rpcbind -f >>"$RES/rpcbind.log" 2>&1 &
	RPCB_PID=$!
	local i
	for i in $(seq 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
	rpcinfo -p 127.0.0.1 >/dev/null 2>&1 || die "rpcbind does not answer (log: $RES/rpcbind.log)"
	# no system D-Bus here: Ganesha logs CRIT lines about it and carries on
	ganesha.nfsd -F -f "$gw/ganesha.conf" -L "$RES/ganesha.log" -p "$gw/ganesha.pid" >>"$RES/ganesha.log" 2>&1 &
	G_PID=$!
	wait_nfs "$(g_url "$gw/export")" ganesha "$RES/ganesha.log"
}

cpu_ticks() { # pid -> utime+stime in clock ticks (the whole process, all threads)
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

storage_read() { # pid -> bytes the process had read from storage (/proc/PID/io read_bytes: data and metadata, all threads)
	[ -n "$1" ] && [ -r "/proc/$1/io" ] || { echo 0; return; }
	awk '$1 == "read_bytes:" { print $2 }' "/proc/$1/io"
}

drop_caches() {
	sync
	[ "$CAN_DROP" = 1 ] && echo 3 >/proc/sys/vm/drop_caches
	return 0
}

# reload_code PID...: read the files each process maps (its executable and
# libraries) back into the page cache after a cold run's drop_caches, so that
# the run measures the server's reads of the disk, not the faults of its own
# code (rekindle, restarted before every cold run, has not yet mapped the
# parts of its 50 MiB binary it did not run; Ganesha, running all along, keeps
# its code mapped, and drop_caches leaves mapped pages)
reload_code() {
	local pid
	for pid in "$@"; do
		[ -n "$pid" ] && [ -r "/proc/$pid/maps" ] || continue
		awk '$6 ~ /^\// { print $6 }' "/proc/$pid/maps" | sort -u | while IFS= read -r f; do
			cat "$f" >/dev/null 2>&1 || true
		done
	done
}

# evict_targets: every write run's targets out of the page cache (bench/evict):
# Ganesha's and local's copy of the disk, rekindle's repositories (the backup
# a session reads through; its own files are new in each run)
evict_targets() {
	local t=() p
	for p in "$BENCH_WORK/ganesha/export/w-flat.vmdk" "$BENCH_WORK/local/w-flat.vmdk" "$BENCH_WORK/repo" "$BENCH_WORK/repo-b"; do
		[ -e "$p" ] && t+=("$p")
	done
	"$EVICT" "${t[@]}" >/dev/null
}

# run_test TEST SERVER REP DIR UNIT EXPECT_BYTES SETUP -- FIO_ARGS...
#   SERVER: rekindle, ganesha, local. DIR: read or write. UNIT: MiB/s or IOPS.
#   SETUP: warm, cold (drop caches; restart rekindle) or write (fresh target, sync,
#   the targets evicted from the page cache).
# Appends "TEST SERVER REP VALUE CPU_US_PER_REQ" to values.tsv. A run that fails,
# times out or moves fewer bytes than asked is retried (3 attempts).
run_test() {
	local test=$1 server=$2 rep=$3 dir=$4 unit=$5 expect=$6 setup=$7
	shift 8
	local attempt out url file sid='' pid c0 c1 s0 s1 ok rc st
	for attempt in 1 2 3; do
		out=$RES/json/$test.$server.$rep.$attempt.json
		sid=''
		case "$setup" in
		cold)
			[ "$server" = rekindle ] && restart_rekindle
			if [ "$server" = rekindle-b ]; then
				stop_pid "$RKB_PID" rekindle-b
				start_rekindle_b
			fi
			if [ "$BENCH_COLD_KEEP_META" = 1 ]; then
				sync
				local keep=("$BENCH_WORK/repo" "$BENCH_WORK/ganesha/export/$DISKFILE")
				[ -d "$BENCH_WORK/repo-b" ] && keep+=("$BENCH_WORK/repo-b")
				"$EVICT" "${keep[@]}" >/dev/null
			else
				drop_caches
				reload_code "$RK_PID" "$RKB_PID" "$G_PID"
			fi ;;
		write) ;;
		esac
		case "$server:$dir" in
		rekindle:read) url=$(rk_url "/points/$VM/$BENCH_POINT") file=$DISKFILE ;;
		rekindle-b:read) url=$(rkb_url "/points/$VM/$BENCH_POINT_B") file=$DISKFILE ;;
		rekindle:write)
			sid=$(publish rekindle)
			url=$(rk_url "/rekindle/$sid/$VM") file=$DISKFILE ;;
		rekindle-b:write)
			sid=$(publish rekindle-b)
			url=$(rkb_url "/rekindle/$sid/$VM") file=$DISKFILE ;;
		ganesha:read) url=$(g_url "$BENCH_WORK/ganesha/export") file=$DISKFILE ;;
		ganesha:write)
			# the same disk, as a VM's write lands on its disk in a session: a fresh
			# sparse copy of it, written into the same inode (a new inode under the
			# same name would leave Ganesha's cached handle stale, NFS3ERR_STALE)
			cp --sparse=always "$BENCH_WORK/ganesha/export/$DISKFILE" "$BENCH_WORK/ganesha/export/w-flat.vmdk"
			url=$(g_url "$BENCH_WORK/ganesha/export") file=w-flat.vmdk ;;
		local:read) url='' file=$BENCH_WORK/ganesha/export/$DISKFILE ;;
		local:write)
			rm -f "$BENCH_WORK/local/w-flat.vmdk"
			cp --sparse=always "$BENCH_WORK/ganesha/export/$DISKFILE" "$BENCH_WORK/local/w-flat.vmdk"
			url='' file=$BENCH_WORK/local/w-flat.vmdk ;;
		esac
		# every write run starts as a restored VM's disk does: its target just
		# made (Ganesha's and local's a copy of the disk, its blocks allocated
		# where the disk has data; rekindle's a new session), on stable storage
		# and out of the page cache, so no server overwrites pages it holds.
		# Only the targets: a drop_caches would also empty the cache of the
		# servers' own code and of every program beside the benchmark.
		if [ "$dir" = write ]; then
			sync
			evict_targets
		fi
		case $server in rekindle) pid=$RK_PID ;; rekindle-b) pid=$RKB_PID ;; ganesha) pid=$G_PID ;; *) pid='' ;; esac
		c0=$(cpu_ticks "$pid") s0=$(storage_read "$pid")
		rc=0
		st=''
		if [ "$BENCH_STRACE" = 1 ] && [ -n "$pid" ]; then
			strace -f -c -e trace="$STRACE_SET" -o "$out.strace" -p "$pid" 2>/dev/null &
			st=$!
			sleep 0.5 # attached to every thread before the client starts
		fi
		if [ -n "$url" ]; then
			timeout -k 5 "$BENCH_TIMEOUT" unshare --pid --fork --kill-child \
				"$FIO" --name="$test" --ioengine=nfs --nfs_url="$url" --filename="$file" \
				--size="$BENCH_DISK" "$@" --output-format=json --output="$out" \
				>"$out.log" 2>&1 || rc=$?
		else
			timeout -k 5 "$BENCH_TIMEOUT" "$FIO" --name="$test" --ioengine=psync --filename="$file" \
				--size="$BENCH_DISK" --invalidate=0 --fallocate=none "$@" \
				--output-format=json --output="$out" >"$out.log" 2>&1 || rc=$?
		fi
		c1=$(cpu_ticks "$pid") s1=$(storage_read "$pid")
		if [ -n "$st" ]; then kill -INT "$st" 2>/dev/null || true; wait "$st" 2>/dev/null || true; fi
		if [ -n "$sid" ]; then
			# the block size the session's overlay was made with (overlay meta)
			grep -ao '"blockSize": *[0-9]*' "$BENCH_WORK/repo${server#rekindle}/state/sessions/$sid/meta" 2>/dev/null |
				sed "s/^\"blockSize\": */$server /" >>"$RES/blocksize.txt" || true
			discard "$server" "$sid"
		fi
		ok=$(jq -r --arg d "$dir" --argjson e "$expect" \
			'if (.jobs[0].error == 0 and .jobs[0][$d].io_bytes == $e) then "ok" else "short" end' \
			"$out" 2>/dev/null || echo bad)
		if [ "$rc" = 0 ] && [ "$ok" = ok ]; then
			jq -r --arg d "$dir" --arg u "$unit" --arg t "$test" --arg s "$server" --arg r "$rep" \
				--argjson cpu "$(( (c1 - c0) * 1000000 / $(getconf CLK_TCK) ))" --argjson sr "$((s1 - s0))" \
				'.jobs[0][$d] as $x | [$t, $s, $r,
				  (if $u == "IOPS" then $x.iops else $x.bw_bytes / 1048576 end),
				  (if $x.total_ios > 0 then $cpu / $x.total_ios else 0 end),
				  (if $x.total_ios > 0 then $sr / $x.total_ios else 0 end)] | @tsv' \
				"$out" >>"$RES/values.tsv"
			return 0
		fi
		log "$test $server run $rep attempt $attempt: fio exit $rc, result $ok (see $out.log); retrying"
		grep -m3 -i 'fail\|error' "$out.log" >&2 || true
		[ "$server" = rekindle ] && ! kill -0 "$RK_PID" 2>/dev/null && die "rekindle died (log: $RES/rekindle.log)"
		[ "$server" = rekindle-b ] && ! kill -0 "$RKB_PID" 2>/dev/null && die "rekindle-b died (log: $RES/rekindle-b.log)"
		[ "$server" = ganesha ] && ! kill -0 "$G_PID" 2>/dev/null && die "ganesha died (log: $RES/ganesha.log)"
	done
	log "$test $server run $rep: no good result in 3 attempts; left out"
}

# run_files TEST SERVER REP: BENCH_FILES small files (CREATE, WRITE 4 KiB UNSTABLE,
# COMMIT each) into a fresh session's VM folder on rekindle, a fresh folder on
# Ganesha, through libnfs (bench/nfsfiles). Each file's path is one folder below
# the mount on both (rekindle: the session mounted, as a hypervisor mounts it;
# the folder of sessions mounted instead cost rekindle one more LOOKUP per
# CREATE, libnfs resolving the path again for every file). Appends "TEST SERVER
# REP FILES/S CPU_US_PER_FILE" to values.tsv and the CREATE figures to files.tsv.
run_files() {
	local test=$1 server=$2 rep=$3 attempt out url dir sid pid c0 c1 rc st
	for attempt in 1 2 3; do
		out=$RES/json/$test.$server.$rep.$attempt.json
		sid=''
		case $server in
		rekindle)
			sid=$(publish rekindle)
			url=$(rk_url "/rekindle/$sid") dir=$VM pid=$RK_PID ;;
		rekindle-b)
			sid=$(publish rekindle-b)
			url=$(rkb_url "/rekindle/$sid") dir=$VM pid=$RKB_PID ;;
		ganesha)
			dir=files-$rep-$attempt
			rm -rf "$BENCH_WORK/ganesha/export/$dir"
			mkdir "$BENCH_WORK/ganesha/export/$dir"
			url=$(g_url "$BENCH_WORK/ganesha/export") pid=$G_PID ;;
		esac
		sync
		c0=$(cpu_ticks "$pid")
		rc=0
		st=''
		if [ "$BENCH_STRACE" = 1 ] && [ -n "$pid" ]; then
			strace -f -c -e trace="$STRACE_SET" -o "$out.strace" -p "$pid" 2>/dev/null &
			st=$!
			sleep 0.5 # attached to every thread before the client starts
		fi
		timeout -k 5 $((BENCH_TIMEOUT * 4)) "$NFSFILES" -url "$url" -dir "$dir" -n "$BENCH_FILES" -edge $((BENCH_FILES >= 1000 ? 100 : 10)) >"$out" 2>"$out.log" || rc=$?
		c1=$(cpu_ticks "$pid")
		if [ -n "$st" ]; then kill -INT "$st" 2>/dev/null || true; wait "$st" 2>/dev/null || true; fi
		[ -n "$sid" ] && discard "$server" "$sid"
		if [ "$rc" = 0 ] && [ "$(jq -r .files "$out" 2>/dev/null)" = "$BENCH_FILES" ]; then
			jq -r --arg t "$test" --arg s "$server" --arg r "$rep" \
				--argjson cpu "$(( (c1 - c0) * 1000000 / $(getconf CLK_TCK) ))" \
				'[$t, $s, $r, .files_per_second, $cpu / .files] | @tsv' "$out" >>"$RES/values.tsv"
			jq -r --arg s "$server" --arg r "$rep" \
				'[$s, $r, .create_first_us, .create_last_us, .create_median_us, .write_median_us, .commit_median_us, .edge] | @tsv' \
				"$out" >>"$RES/files.tsv"
			return 0
		fi
		log "$test $server run $rep attempt $attempt: nfsfiles exit $rc (see $out.log); retrying"
		head -3 "$out.log" >&2 || true
	done
	log "$test $server run $rep: no good result in 3 attempts; left out"
}

# each TEST: name|dir|unit|setup|servers|expect|fio args
tests_warm() {
	local D R
	D=$(bytes "$BENCH_DISK") R=$(bytes "$BENCH_RAND_IO")
	cat <<EOF
seqread-qd1|read|MiB/s|warm|rekindle ganesha local|$D|--rw=read --bs=1M --iodepth=1
seqread-qd8|read|MiB/s|warm|rekindle ganesha|$D|--rw=read --bs=1M --iodepth=8
randread-qd1|read|IOPS|warm|rekindle ganesha local|$R|--rw=randread --bs=4k --iodepth=1 --io_size=$BENCH_RAND_IO
randread-qd32|read|IOPS|warm|rekindle ganesha|$R|--rw=randread --bs=4k --iodepth=32 --io_size=$BENCH_RAND_IO
EOF
}
tests_cold() {
	local D C
	D=$(bytes "$BENCH_DISK") C=$(bytes "$BENCH_COLD_RAND")
	cat <<EOF
cold-seqread-qd8|read|MiB/s|cold|rekindle ganesha local|$D|--rw=read --bs=1M --iodepth=8
cold-randread-qd1|read|IOPS|cold|rekindle ganesha local|$C|--rw=randread --bs=4k --iodepth=1 --io_size=$BENCH_COLD_RAND
cold-randread-qd32|read|IOPS|cold|rekindle ganesha|$C|--rw=randread --bs=4k --iodepth=32 --io_size=$BENCH_COLD_RAND
EOF
}
# UNSTABLE writes (fio's default) with a COMMIT at the end (end_fsync), and
# FILE_SYNC writes (sync=1: the patched engine opens O_SYNC, so libnfs sends
# FILE_SYNC; local psync opens O_SYNC too): matched durability on every server.
tests_write() {
	local W S
	W=$(bytes "$BENCH_WRITE") S=$(bytes "$BENCH_SYNC_IO")
	cat <<EOF
write-qd1|write|MiB/s|write|rekindle ganesha local|$W|--rw=write --bs=1M --iodepth=1 --io_size=$BENCH_WRITE
write-qd8|write|MiB/s|write|rekindle ganesha|$W|--rw=write --bs=1M --iodepth=8 --io_size=$BENCH_WRITE
write-qd1-commit|write|MiB/s|write|rekindle ganesha local|$W|--rw=write --bs=1M --iodepth=1 --io_size=$BENCH_WRITE --end_fsync=1
write-qd8-commit|write|MiB/s|write|rekindle ganesha local|$W|--rw=write --bs=1M --iodepth=8 --io_size=$BENCH_WRITE --end_fsync=1
write-sync-qd1|write|MiB/s|write|rekindle ganesha local|$W|--rw=write --bs=1M --iodepth=1 --io_size=$BENCH_WRITE --sync=1
write-sync-qd8|write|MiB/s|write|rekindle ganesha|$W|--rw=write --bs=1M --iodepth=8 --io_size=$BENCH_WRITE --sync=1
randwrite-sync-qd1|write|IOPS|write|rekindle ganesha local|$S|--rw=randwrite --bs=4k --iodepth=1 --io_size=$BENCH_SYNC_IO --sync=1
randwrite-sync-qd8|write|IOPS|write|rekindle ganesha|$S|--rw=randwrite --bs=4k --iodepth=8 --io_size=$BENCH_SYNC_IO --sync=1
EOF
}
tests_files() {
	echo "files-create-write-commit|write|files/s|files|rekindle ganesha|0|"
}
tests_unsafe() {
	local W
	W=$(bytes "$BENCH_WRITE")
	cat <<EOF
write-qd8-unsafe|write|MiB/s|write|rekindle ganesha|$W|--rw=write --bs=1M --iodepth=8 --io_size=$BENCH_WRITE
EOF
}

run_set() { # "$(tests_*)": every test, every rep, servers in alternating order
	local lines=$1 rep line name dir unit setup servers expect args s order
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		IFS='|' read -r name dir unit setup servers expect args <<<"$line"
		selected "$name" || continue
		# rekindle-b runs without --unsafe-writes
		if [ -n "$BENCH_BIN_B" ] && [ "$name" != write-qd8-unsafe ]; then servers=${servers/rekindle/rekindle rekindle-b}; fi
		printf '%s\t%s\t%s\n' "$name" "$unit" "$servers" >>"$RES/tests.tsv"
		PROF_TAG=$name
		# a profile per test: a restart ends the last one (warm tests keep
		# the warmed server, cold ones restart it anyway)
		if [ "$BENCH_PROFILE" = 1 ] && [ "$setup" != warm ] && [ "$setup" != cold ]; then
			restart_rekindle
			if [ -n "$BENCH_BIN_B" ]; then stop_pid "$RKB_PID" rekindle-b; start_rekindle_b; fi
		fi
		log "$name ($BENCH_RUNS runs each: $servers)"
		for rep in $(seq "$BENCH_RUNS"); do
			order=$servers
			[ $((rep % 2)) = 0 ] && order=$(echo "$servers" | awk '{ for (i = NF; i > 0; i--) printf "%s%s", $i, (i > 1 ? " " : "") }')
			for s in $order; do
				if [ "$setup" = files ]; then
					run_files "$name" "$s" "$rep"
					continue
				fi
				# shellcheck disable=SC2086
				run_test "$name" "$s" "$rep" "$dir" "$unit" "$expect" "$setup" -- $args
			done
		done
	done <<<"$lines"
}

inner() {
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	ip link set lo up
	# private /run (rpcbind's socket and lock, Ganesha's run dir) and /var/lib/nfs
	# (Ganesha's NFSv4 recovery dirs): nothing is left on the host
	mount -n -t tmpfs -o mode=755 tmpfs /run
	mkdir -p /run/rpcbind /run/ganesha
	mount -n -t tmpfs -o mode=755 tmpfs /var/lib/nfs
	CAN_DROP=0
	sync
	if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi
	echo "can_drop_caches=$CAN_DROP" >>"$RES/data.env"
	: >"$RES/values.tsv"
	: >"$RES/tests.tsv"
	: >"$RES/files.tsv"

	start_rekindle
	if [ -n "$BENCH_BIN_B" ]; then start_rekindle_b; fi
	start_ganesha
	log "servers up: rekindle pid $RK_PID (NFS 127.0.0.1:$RK_PORT), ganesha pid $G_PID (NFS 127.0.0.1:$G_PORT)"

	local t want_warm=0 want_unsafe=0
	for t in $(tests_warm | cut -d'|' -f1); do selected "$t" && want_warm=1; done
	for t in $(tests_unsafe | cut -d'|' -f1); do selected "$t" && want_unsafe=1; done
	if [ "$want_warm" = 1 ]; then
	log "warm-up: one full read through each server and locally"
	run_test warmup rekindle 0 read MiB/s "$(bytes "$BENCH_DISK")" warm -- --rw=read --bs=1M --iodepth=8
	if [ -n "$BENCH_BIN_B" ]; then run_test warmup rekindle-b 0 read MiB/s "$(bytes "$BENCH_DISK")" warm -- --rw=read --bs=1M --iodepth=8; fi
	run_test warmup ganesha 0 read MiB/s "$(bytes "$BENCH_DISK")" warm -- --rw=read --bs=1M --iodepth=8
	cat "$BENCH_WORK/ganesha/export/$DISKFILE" >/dev/null
	: >"$RES/values.tsv"
	fi

	run_set "$(tests_warm)"
	if [ "$CAN_DROP" = 1 ]; then
		run_set "$(tests_cold)"
	else
		log "cannot write /proc/sys/vm/drop_caches: skipping the cold-read tests"
	fi
	run_set "$(tests_write)"
	run_set "$(tests_files)"
	if [ "$want_unsafe" = 1 ]; then
		log "restarting rekindle with --unsafe-writes"
		stop_pid "$RK_PID" rekindle
		RK_PID=''
		start_rekindle --unsafe-writes
		run_set "$(tests_unsafe)"
	fi
}

# ---------------------------------------------------------------- report

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

med() { # test server column(4 value, 5 cpu, 6 storage bytes read per request)
	awk -F'\t' -v t="$1" -v s="$2" -v c="$3" '$1 == t && $2 == s { print $c }' "$RES/values.tsv" | median
}
spread() { # test server -> "min–max" of the values
	awk -F'\t' -v t="$1" -v s="$2" '$1 == t && $2 == s { v = $4 + 0; if (n++ == 0 || v < lo) lo = v; if (n == 1 || v > hi) hi = v }
		END { if (n > 1) printf " (%.0f–%.0f)", lo, hi }' "$RES/values.tsv"
}
perrun() { # test [A B] -> median of the per-run ratios A run i / B run i (rekindle / ganesha), and their min–max
	awk -F'\t' -v t="$1" -v a="${2:-rekindle}" -v b="${3:-ganesha}" '$1 == t && $2 == a { r[$3] = $4 } $1 == t && $2 == b { g[$3] = $4 }
		END { for (i in r) if ((i in g) && g[i] > 0) print r[i] / g[i] }' "$RES/values.tsv" |
		sort -g | awk '{ a[NR] = $1 } END {
			if (NR == 0) { print "–"; exit }
			m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			if (NR > 1) printf "%.2f (%.2f–%.2f)", m, a[1], a[NR]; else printf "%.2f", m }'
}
nruns() { awk -F'\t' -v t="$1" -v s="$2" '$1 == t && $2 == s' "$RES/values.tsv" | wc -l; }

fmt() { # value unit
	[ -n "$1" ] || { echo "n/a"; return; }
	if [ "$2" = IOPS ]; then awk -v v="$1" 'BEGIN { printf "%.0f", v }'; else awk -v v="$1" 'BEGIN { printf "%.0f", v }'; fi
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }' || echo "–"; }
kib() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.1f", v / 1024 }' || echo "–"; }
cpufmt() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.0f", v }' || echo "–"; }

label() {
	case $1 in
	seqread-qd1) echo "seq read 1 MiB, qd 1 (warm)" ;;
	seqread-qd8) echo "seq read 1 MiB, qd 8 (warm)" ;;
	randread-qd1) echo "rand read 4 KiB, qd 1 (warm)" ;;
	randread-qd32) echo "rand read 4 KiB, qd 32 (warm)" ;;
	cold-seqread-qd8) echo "seq read 1 MiB, qd 8 (cold)" ;;
	cold-randread-qd1) echo "rand read 4 KiB, qd 1 (cold)" ;;
	cold-randread-qd32) echo "rand read 4 KiB, qd 32 (cold)" ;;
	write-qd1) echo "seq write 1 MiB, qd 1" ;;
	write-qd8) echo "seq write 1 MiB, qd 8" ;;
	write-qd1-commit) echo "seq write 1 MiB, qd 1, COMMIT at end" ;;
	write-qd8-commit) echo "seq write 1 MiB, qd 8, COMMIT at end" ;;
	write-sync-qd1) echo "seq write 1 MiB, qd 1, FILE_SYNC" ;;
	write-sync-qd8) echo "seq write 1 MiB, qd 8, FILE_SYNC" ;;
	randwrite-sync-qd1) echo "rand write 4 KiB, qd 1, FILE_SYNC" ;;
	randwrite-sync-qd8) echo "rand write 4 KiB, qd 8, FILE_SYNC" ;;
	write-qd8-unsafe) echo "seq write 1 MiB, qd 8, rekindle --unsafe-writes" ;;
	files-create-write-commit) echo "$BENCH_FILES small files: CREATE + WRITE 4 KiB + COMMIT each (libnfs)" ;;
	*) echo "$1" ;;
	esac
}

report() {
	[ -s "$RES/values.tsv" ] || die "no results (see $RES)"
	# shellcheck disable=SC1091
	. "$RES/data.env"
	local cpu date kernel mem ganesha libnfs commit
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	date=$(date -u +%Y-%m-%d)
	kernel=$(uname -r)
	mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
	ganesha=$(dpkg-query -W -f='${Version}' nfs-ganesha 2>/dev/null || echo '?')
	libnfs=$(dpkg-query -W -f='${Version}' libnfs13 2>/dev/null || echo '?')
	commit=${rk_commit:-?}
	local stored new logical
	logical=$(jq -r '.[0].logical_bytes' "$RES/points.json")
	new=$(jq -r '.[0].new_bytes' "$RES/points.json")
	stored=$(jq -r '.[0].stored_bytes' "$RES/points.json")
	chunk=$(jq -r '.chunk_size' "$RES/repo-config.json" 2>/dev/null || echo 0)
	mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }

	{
		echo "Run ${start_utc:-$date}${end_utc:+–$end_utc} UTC on $(nproc) cores ($cpu), $mem RAM, Linux $kernel; load average (1, 5, 15 min) ${start_load:-?} at the start, ${end_load:-?} at the end (the machine is shared: other jobs ran beside this one unless the load says otherwise); rekindle $commit, nfs-ganesha $ganesha (VFS FSAL), fio 3.33 (Debian source, nfs engine patched: bench/fio-nfs-engine.patch) on libnfs $libnfs, all over 127.0.0.1."
		echo
		echo "Disk: one $(mib "$disk_bytes") flat VMDK extent from \`genvm -disk $BENCH_DISK:mixed:flat -max-data $BENCH_DISK -seed 1\`: $(mib "$disk_alloc") allocated (random runs, a third of them repeating a 1 MiB pattern, holes between); in the repository $(mib "$new") of new chunks, $(mib "$stored") stored (zstd, $((chunk / 1024)) KiB chunks). rekindle reads the restore point \`/points/$VM/<point>/$DISKFILE\`; its writes overwrite that disk in a fresh session per run (copy-on-write over the restore point: a write into a block the session has not written yet first fills the rest of the block from the backup; the sessions' block size: $(sort -u "$RES/blocksize.txt" 2>/dev/null | awk '{ printf "%s%s %d KiB", (NR > 1 ? ", " : ""), $1, $2 / 1024 }')). Ganesha reads a sparse copy of \`rekindle export\`'s output (checked equal to the source) and its writes overwrite a fresh sparse copy of the same disk per run; local writes a copy too. Medians of $BENCH_RUNS runs (min–max in brackets); MiB/s for sequential, IOPS for random tests, files/s for the small files. Per-run ratio: the median of rekindle run i / Ganesha run i (the two measured back to back, servers in alternating order), which cancels the shared machine's drift better than the ratio of the medians."
		echo
		echo '```'
		echo "make bench-nfs        # = bench/nfs.sh; BENCH_RUNS=$BENCH_RUNS BENCH_DISK=$BENCH_DISK BENCH_RAND_IO=$BENCH_RAND_IO BENCH_COLD_RAND=$BENCH_COLD_RAND BENCH_WRITE=$BENCH_WRITE BENCH_SYNC_IO=$BENCH_SYNC_IO BENCH_FILES=$BENCH_FILES BENCH_CHUNK=$BENCH_CHUNK${BENCH_ONLY:+ BENCH_ONLY='$BENCH_ONLY'}"
		echo '```'
		echo
		echo "| test | unit | rekindle | Ganesha | local | rekindle / Ganesha (medians) | per-run ratio, median (min–max) | rekindle / local | server CPU µs per request: rekindle / Ganesha | storage KiB read per request: rekindle / Ganesha |"
		echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
		local t unit servers r g l rc gc note
		while IFS=$'\t' read -r t unit servers; do
			r=$(med "$t" rekindle 4) g=$(med "$t" ganesha 4) l=''
			rc=$(med "$t" rekindle 5) gc=$(med "$t" ganesha 5)
			case " $servers " in *" local "*) l=$(med "$t" local 4) ;; esac
			# qd > 1 rows: the local psync figure (qd 1) of the same kind is the ceiling
			if [ -z "$l" ]; then
				case $t in
				seqread-qd8) l=$(med seqread-qd1 local 4) ;;
				randread-qd32) l=$(med randread-qd1 local 4) ;;
				cold-randread-qd32) l=$(med cold-randread-qd1 local 4) ;;
				write-qd8 | write-qd8-unsafe) l=$(med write-qd1 local 4) ;;
				esac
			fi
			note=''
			for s in $servers; do
				[ "$(nruns "$t" "$s")" = "$BENCH_RUNS" ] || note="$note $s:$(nruns "$t" "$s")/$BENCH_RUNS runs"
			done
			echo "| $(label "$t")${note:+ (${note# })} | $unit | $(fmt "$r" "$unit")$(spread "$t" rekindle) | $(fmt "$g" "$unit")$(spread "$t" ganesha) | $(fmt "$l" "$unit") | $(ratio "$r" "$g") | $(perrun "$t") | $(ratio "$r" "$l") | $(cpufmt "$rc") / $(cpufmt "$gc") | $(kib "$(med "$t" rekindle 6)") / $(kib "$(med "$t" ganesha 6)") |"
		done <"$RES/tests.tsv"
		echo
		echo "local = fio psync on the raw file (qd 1; also the ceiling of the qd 8 / qd 32 rows). Warm: after one full read through each server, so the page cache (and rekindle's chunk cache) hold the disk. Cold: rekindle restarted (empty chunk cache), then the page cache dropped (\`echo 3 > /proc/sys/vm/drop_caches\`) and the servers' own executables and libraries read back before every run; Ganesha keeps running (it has no data cache of its own). Server CPU: the server process's utime+stime (all threads, \`/proc/PID/stat\`) over the run divided by fio's request count (per file for the small files); storage read: its \`/proc/PID/io\` read_bytes over the run, per request."
		echo
		echo "Write runs start from the same state on every server, the one a restored VM's disk is in when the VM starts writing: the target just made (Ganesha and local: a fresh sparse copy of the disk, blocks allocated where the disk has data, holes between; rekindle: a fresh session over the restore point, its data file new and sparse, nothing allocated), then \`sync\` and the targets' pages evicted from the page cache (\`bench/evict\`: fdatasync and posix_fadvise DONTNEED of Ganesha's and local's copy and of rekindle's repositories, nothing else), so no server overwrites pages the page cache holds (before 2026-12-04 Ganesha's copy was made just before the run and stayed cached) and rekindle's fills read the backup from storage."
		echo
		echo "Durability, the same on both servers (the protocol's own): \`sync\` before every write run. \"COMMIT at end\": fio's UNSTABLE WRITEs (answered UNSTABLE by both, left in the page cache), then one COMMIT (\`end_fsync=1\`) that returns once everything written is on stable storage (rekindle: the session's data file fdatasynced, with a record of the blocks redirected appended to it; Ganesha: fsync). \"FILE_SYNC\": \`sync=1\`, the patched engine opens O_SYNC so libnfs sends every WRITE FILE_SYNC; each is on stable storage before its reply (rekindle: one fdatasync of the session's data file, which holds the WRITE's data and, where it redirected new blocks, a record of them with their CRCs; Ganesha: fsync per WRITE; local: O_SYNC pwrite). Small files (\`bench/nfsfiles\`, one libnfs connection): per file CREATE (rekindle makes it durable before the reply, as RFC 1813 asks: an fdatasync of the session's metadata log; Ganesha's VFS FSAL does not sync it), WRITE 4 KiB UNSTABLE, COMMIT. \`--unsafe-writes\` (an extra row, \`BENCH_EXTRA=1\`) syncs nothing."
		[ "${can_drop_caches:-0}" = 1 ] || echo "Cold tests skipped: /proc/sys/vm/drop_caches was not writable."
		if grep -q $'\trekindle-b\t' "$RES/values.tsv"; then
			echo
			echo "A/B in the same run: rekindle = ${BENCH_BIN:-a build of this checkout}, rekindle-b = $BENCH_BIN_B (its own copy of the repository, restarted like rekindle before cold runs)."
			echo
			echo "| test | unit | rekindle | rekindle-b | b / rekindle (medians) | b / rekindle, per run: median (min–max) | rekindle / Ganesha | rekindle-b / Ganesha | server CPU µs per request: rekindle / rekindle-b / Ganesha | storage KiB read per request: rekindle / rekindle-b / Ganesha |"
			echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
			local b bc
			while IFS=$'\t' read -r t unit servers; do
				b=$(med "$t" rekindle-b 4)
				[ -n "$b" ] || continue
				r=$(med "$t" rekindle 4) g=$(med "$t" ganesha 4)
				rc=$(med "$t" rekindle 5) bc=$(med "$t" rekindle-b 5) gc=$(med "$t" ganesha 5)
				echo "| $(label "$t") | $unit | $(fmt "$r" "$unit")$(spread "$t" rekindle) | $(fmt "$b" "$unit")$(spread "$t" rekindle-b) | $(ratio "$b" "$r") | $(perrun "$t" rekindle-b rekindle) | $(ratio "$r" "$g") | $(ratio "$b" "$g") | $(cpufmt "$rc") / $(cpufmt "$bc") / $(cpufmt "$gc") | $(kib "$(med "$t" rekindle 6)") / $(kib "$(med "$t" rekindle-b 6)") / $(kib "$(med "$t" ganesha 6)") |"
			done <"$RES/tests.tsv"
		fi
		if [ -s "$RES/files.tsv" ]; then
			echo
			echo "Small files (bench/nfsfiles, libnfs, one connection): medians over the runs of each operation's median latency, µs; CREATE first/last = median over the first and the last $(awk -F'\t' 'NR == 1 { print $8 }' "$RES/files.tsv") files of a run."
			echo
			echo "| server | CREATE, first files | CREATE, last files | last / first | CREATE | WRITE 4 KiB | COMMIT |"
			echo "|---|--:|--:|--:|--:|--:|--:|"
			local s
			for s in rekindle rekindle-b ganesha; do
				fcol() { awk -F'\t' -v s="$s" -v c="$1" '$1 == s { print $c }' "$RES/files.tsv" | median; }
				[ -n "$(fcol 3)" ] || continue
				echo "| $s | $(cpufmt "$(fcol 3)") | $(cpufmt "$(fcol 4)") | $(ratio "$(fcol 4)" "$(fcol 3)") | $(cpufmt "$(fcol 5)") | $(cpufmt "$(fcol 6)") | $(cpufmt "$(fcol 7)") |"
			done
		fi
	} >"$RES/table.md"

	echo
	cat "$RES/table.md"
	echo
	echo "raw figures: $RES/values.tsv (test, server, run, value, server CPU µs/request, server storage bytes read/request); fio JSON: $RES/json/"

	if [ -n "$BENCH_DOC" ]; then update_doc "$root/$BENCH_DOC"; fi
}

# Replace the generated part of the section in docs/benchmarks.md (between the
# bench-nfs markers), keeping everything else in the file, notes included.
update_doc() {
	local doc=$1 heading='## NFS read and write throughput (make bench-nfs)'
	local begin='<!-- bench-nfs:begin (generated by bench/nfs.sh; edit outside the markers) -->'
	local end='<!-- bench-nfs:end -->'
	mkdir -p "$(dirname "$doc")"
	[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
	if ! grep -qF "$heading" "$doc"; then
		printf '\n%s\n\n%s\n%s\n' "$heading" "$begin" "$end" >>"$doc"
	elif ! grep -qF "$end" "$doc"; then
		# heading present without markers: put them right under it
		awk -v h="$heading" -v b="$begin" -v e="$end" '{ print } $0 == h { print ""; print b; print e }' "$doc" >"$doc.tmp"
		mv "$doc.tmp" "$doc"
	fi
	awk -v b="$begin" -v e="$end" -v f="$RES/table.md" '
		$0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
		$0 == e { skip = 0 }
		!skip { print }' "$doc" >"$doc.tmp"
	mv "$doc.tmp" "$doc"
	log "updated $doc"
}

case "${1:-}" in
--inner) inner ;;
--report) report ;;
'') outer ;;
*) echo "usage: bench/nfs.sh" >&2; exit 2 ;;
esac
