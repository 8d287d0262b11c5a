#!/usr/bin/env bash
# NFS benchmarks: rekindle's NFS export against NFS-Ganesha serving the same bytes
# and a local read, through fio's libnfs engine and QEMU's nfs:// driver.
# Run with `make bench-nfs` (installs the benchmark packages first).
set -euo pipefail
echo "bench/nfs.sh: not yet implemented" >&2
exit 1
