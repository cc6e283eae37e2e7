#!/usr/bin/env bash
# Guest-to-guest throughput and latency benchmark, VPC overlay vs. plain
# bridge (not a test; results go to docs/benchmarks.md, section "VPC").
# Runs the ignored test `bench_guest_throughput_overlay_vs_bridge` of
# tests/tests/e2e_vpc_throughput.rs, which in one run alternates, ROUNDS
# times:
#   - overlay: a hello client instance in zone 1 of a local cluster (etcd, a
#     control plane, two agents in their own network namespaces joined by
#     the fabric) fetching from a hello server instance in zone 0 of the same
#     VPC: routed TAP ports, VXLAN between the hosts, the VPC's groups;
#   - legacy (unless NUBIS_BENCH_LEGACY=0): a server and a client of a
#     second account without a VPC, both on the zone-a host's legacy bridge
#     (the agent's pre-VPC path: jailed VMMs, no overlay);
#   - bridge: the same guests under the same nubis-vmm, started directly on
#     one Linux bridge in a namespace (capped at 1 CPU as the agent caps a
#     t3.nano, where cgroup v2 has the cpu controller).
# Each client fetches `GET /bulk?bytes=BYTES` once (`nubis-bulk`, the
# guest's NUBIS-BULK line: Mbit/s) and then probes the server every 100 ms
# (`icmp`, `http:80`; p50 of the guest-measured ms). Prints `BENCH` lines
# (per round and path with the load average, then the medians and the
# overlay/bridge ratios).
#
#   tests/bench/vpc-throughput.sh [ROUNDS] [BYTES]     # defaults 5, 2000000
#
# Binaries: NUBIS_BENCH_PROFILE=release (default) or debug, built first; or
# NUBIS_BIN_DIR=<dir> to run prebuilt ones without building. Run as root
# with /dev/kvm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-5}
bytes=${2:-2000000}
[[ $(id -u) -eq 0 ]] || { echo "vpc-throughput.sh: run as root" >&2; exit 2; }
# shellcheck source=tests/bench/cluster-bins.sh
source "$root/tests/bench/cluster-bins.sh"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $profile binaries at $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg), rounds=$rounds bytes=$bytes"
log=$(mktemp /tmp/nbt-vpc-tput.XXXXXX)
trap 'rm -f "$log"' EXIT
rc=0
NUBIS_BIN_DIR=$bins NUBIS_BENCH_ROUNDS=$rounds NUBIS_BENCH_BYTES=$bytes \
    cargo test -q -p nubis-tests --test e2e_vpc_throughput -- --ignored --exact \
    bench_guest_throughput_overlay_vs_bridge --nocapture >"$log" 2>&1 || rc=$?
grep -E '^BENCH' "$log" || true
if ((rc)); then
    tail -n 60 "$log" >&2
    exit "$rc"
fi
