#!/usr/bin/env bash
# Auto Scaling benchmark (not a test; results go to docs/benchmarks.md,
# section "Auto Scaling"). On a whole local cluster (etcd, a control plane,
# three agents in their own network namespaces, real hello guests), the
# ignored test `bench_scale_out_and_host_loss` of tests/tests/e2e_autoscaling.rs
# measures:
#   1. scale-out: `nubis autoscaling set-desired-capacity bench N --wait`
#      from 0 to N (default 50) until N instances are InService and running
#      (the CLI polls every 50 ms); goal 50 in <= 3 s;
#   2. host loss: one host's agent and VMMs killed (lease 3 s, heartbeat 1 s);
#      time to the node being declared lost, then from there to N running
#      again in the other two zones; goal <= 30 s after detection.
#
#   tests/bench/autoscaling.sh [N]
#
# Binaries: NUBIS_BENCH_PROFILE=release (default) builds and uses release
# binaries of the control plane, agent, VMM and CLI; =debug uses the debug
# build. Run as root (namespaces, TAPs) with /dev/kvm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
n=${1:-50}
profile=${NUBIS_BENCH_PROFILE:-release}
[[ $(id -u) -eq 0 ]] || { echo "autoscaling.sh: run as root" >&2; exit 2; }
if [[ $profile == release ]]; then
    cargo build --release -q -p nubis-control-plane -p nubis-agent -p nubis-vmm -p nubis-cli >&2
else
    cargo build -q -p nubis-control-plane -p nubis-agent -p nubis-vmm -p nubis-cli >&2
fi
deploy/images/build.sh hello >/dev/null
bins=${CARGO_TARGET_DIR:-$root/target}/$profile
echo "# $(date -u +%FT%TZ) $(nproc) cores, $profile binaries, load $(cut -d' ' -f1-3 /proc/loadavg), N=$n"
log=$(mktemp /tmp/nbt-asg-bench.XXXXXX)
trap 'rm -f "$log"' EXIT
rc=0
NUBIS_REQUIRE_KVM=1 NUBIS_BIN_DIR=$bins NUBIS_BENCH_SCALE=$n \
    cargo test -q -p nubis-tests --test e2e_autoscaling -- --ignored --exact \
    bench_scale_out_and_host_loss --nocapture >"$log" 2>&1 || rc=$?
grep -E '^BENCH' "$log" || true
if ((rc)); then
    tail -n 40 "$log" >&2
fi
exit "$rc"
