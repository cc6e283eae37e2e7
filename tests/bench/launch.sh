#!/usr/bin/env bash
# Launch-latency benchmark (not part of the test suite; results go to
# docs/benchmarks.md, section "Launch latency").
#
#   tests/bench/launch.sh [--single N] [--burst N] [--no-build]
#
# Measures, on a local cluster of release binaries (nubis-testcluster: etcd, a
# control plane, three agents in their own network namespaces):
#   1. reference: the hello guest's own boot time — `nubis-vmm` started directly
#      (same kernel, 64 MiB, a disk) until `NUBIS-GUEST-READY` appears on its
#      serial console; N runs, p50;
#   2. single: `nubis instances run --count 1 --wait` (RunInstances until the
#      instance is running and its ready line was seen, polling every 10 ms),
#      N launches one after another (each terminated afterwards); p50/p90 and
#      p50 minus the reference p50 = what Nubis adds;
#   3. burst: one `nubis instances run --count N --wait` call; instances/s.
# Run as root on an otherwise idle machine; prints a Markdown summary.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
single=20 burst=50 build=1
while (($#)); do
    case $1 in
        --single) single=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "usage: $0 [--single N] [--burst N] [--no-build]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "launch.sh: run as root" >&2; exit 2; }

rel="$root/target/release"
if ((build)); then
    # The measured path runs release binaries; the harness that starts them
    # (nubis-testcluster) is not measured and may be a debug build.
    (cd "$root" && cargo build --release -q -p nubis-control-plane -p nubis-agent -p nubis-vmm \
        -p nubis-cli && cargo build -q -p nubis-tests --bin nubis-testcluster)
    "$root/deploy/images/build.sh" hello >/dev/null
fi
image_dir=${NUBIS_IMAGE_DIR:-$root/target/images}
kernel="$image_dir/hello/kernel"
work=$(mktemp -d /tmp/nbt-bench.XXXXXX)
cluster_pid=""
cleanup() {
    if [[ -n $cluster_pid ]]; then
        kill -TERM "$cluster_pid" 2>/dev/null || true
        wait "$cluster_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# percentile P (0-100) of the numbers on stdin
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int((NR - 1) * p / 100 + 0.5) + 1; print a[i] }'; }

# ------------------------------------------------------------ 1. reference
echo "reference: direct nubis-vmm boot of hello to its ready line ($single runs)" >&2
: >"$work/ref.txt"
for i in $(seq "$single"); do
    disk="$work/ref-disk.raw"; serial="$work/ref-serial.log"
    truncate -s 8M "$disk"; : >"$serial"
    t0=$(now_ms)
    "$rel/nubis-vmm" --kernel "$kernel" --cmdline "nubis.id=i-bench$i" --memory-mib 64 \
        --disk "$disk" --serial "$serial" >/dev/null 2>&1 &
    vmm=$!
    until grep -q "NUBIS-GUEST-READY" "$serial" 2>/dev/null; do
        kill -0 "$vmm" 2>/dev/null || { echo "nubis-vmm exited early" >&2; cat "$serial" >&2; exit 1; }
        sleep 0.002
    done
    t1=$(now_ms)
    kill -TERM "$vmm" 2>/dev/null; wait "$vmm" 2>/dev/null || true
    echo $((t1 - t0)) >>"$work/ref.txt"
done
ref_p50=$(pct 50 <"$work/ref.txt")

# ------------------------------------------------------------ cluster
per_host=$(((burst + 2) / 3 + 1))
NUBIS_BIN_DIR="$rel" NUBIS_CLUSTER_DIR="$work" "$root/target/debug/nubis-testcluster" up --json \
    --per-host "$per_host" --no-ec2 >"$work/cluster.json" 2>"$work/cluster.err" &
cluster_pid=$!
until [[ -s $work/cluster.json ]]; do
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.err" >&2; exit 1; }
    sleep 0.2
done
eval "$(python3 - "$work/cluster.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"export NUBIS_ENDPOINT={c['grpc_endpoint']}")
print(f"export NUBIS_ACCESS_KEY_ID={c['tenant']['access_key_id']}")
print(f"export NUBIS_SECRET_ACCESS_KEY={c['tenant']['secret_access_key']}")
print(f"image={c['hello_image_id']}")
EOF
)"
export NUBIS_CONFIG="$work/none.toml"
nubis() { "$rel/nubis" "$@"; }

# ------------------------------------------------------------ 2. single
echo "single: $single launches, RunInstances -> ready" >&2
: >"$work/single.txt"
for i in $(seq "$single"); do
    t0=$(now_ms)
    out=$(nubis instances run --image "$image" --type t3.nano --wait --poll-interval 10ms \
        --timeout 120s -o json 2>/dev/null)
    t1=$(now_ms)
    echo $((t1 - t0)) >>"$work/single.txt"
    id=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' <<<"$out" | head -n1)
    nubis instances terminate "$id" --wait --timeout 60s >/dev/null 2>&1
done
s_p50=$(pct 50 <"$work/single.txt")
s_p90=$(pct 90 <"$work/single.txt")

# ------------------------------------------------------------ 3. burst
echo "burst: $burst instances in one call" >&2
t0=$(now_ms)
if nubis instances run --image "$image" --type t3.nano --count "$burst" --wait --poll-interval 20ms \
    --timeout 300s -o json >"$work/burst.json" 2>"$work/burst.err"; then
    t1=$(now_ms)
    b_ms=$((t1 - t0))
    rate=$(awk -v n="$burst" -v ms="$b_ms" 'BEGIN { printf "%.1f", n * 1000 / ms }')
    burst_row="${b_ms} ms = ${rate} instances/s"
else
    burst_row="failed: $(grep -m1 '^error:' "$work/burst.err" || tail -n1 "$work/burst.err")"
fi

cat <<EOF
| measurement | value |
|---|---|
| hello guest own boot (direct nubis-vmm, to ready line), p50 of $single | ${ref_p50} ms |
| RunInstances -> ready, single instance, p50 of $single | ${s_p50} ms (p90 ${s_p90} ms) |
| Nubis overhead beyond the guest's boot (p50 - reference p50) | $((s_p50 - ref_p50)) ms |
| burst of $burst in one RunInstances, until all ready | ${burst_row} |
EOF
