#!/usr/bin/env bash
# VPC data-plane benchmark (not a test; results go to docs/benchmarks.md,
# section "VPC"). On a whole local cluster (etcd, a control plane, three
# agents in their own network namespaces joined by the fabric, real hello
# guests), the ignored test `bench_rule_propagation` of tests/tests/e2e_vpc.rs
# measures, over ROUNDS authorize/revoke pairs of one security-group rule
# (TCP 80 from a group) with one member client per host probing the server
# every 100 ms:
#   - authorize returning -> every client's HTTP passes (goal p50 <= 1 s);
#   - revoke returning -> every client's HTTP fails.
#
#   tests/bench/vpc.sh [ROUNDS]
#
# Binaries: NUBIS_BENCH_PROFILE=release (default) or debug, built first; or
# NUBIS_BIN_DIR=<dir> to run prebuilt ones without building. Run as root
# with /dev/kvm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-10}
[[ $(id -u) -eq 0 ]] || { echo "vpc.sh: run as root" >&2; exit 2; }
# shellcheck source=tests/bench/cluster-bins.sh
source "$root/tests/bench/cluster-bins.sh"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $profile binaries, load $(cut -d' ' -f1-3 /proc/loadavg), rounds=$rounds"
log=$(mktemp /tmp/nbt-vpc-bench.XXXXXX)
trap 'rm -f "$log"' EXIT
rc=0
NUBIS_BIN_DIR=$bins NUBIS_BENCH_ROUNDS=$rounds \
    cargo test -q -p nubis-tests --test e2e_vpc -- --ignored --exact \
    bench_rule_propagation --nocapture >"$log" 2>&1 || rc=$?
grep -E '^BENCH' "$log" || true
if ((rc)); then
    tail -n 60 "$log" >&2
    exit "$rc"
fi
