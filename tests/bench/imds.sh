#!/usr/bin/env bash
# Instance metadata service latency benchmark (not a test): boots the `hello`
# guest under nubis-vmm with --metadata-file and `nubis.imds_bench=N`; the
# guest times N (token PUT + GET /latest/meta-data/instance-id) pairs, each
# request on its own TCP connection, with its TSC, and prints
# `NUBIS-IMDS-BENCH n=.. failed=.. p50_us=.. p99_us=.. max_us=..`.
#
# Usage: tests/bench/imds.sh [N]        (default N=1000)
# Env:   NUBIS_VMM (default target/debug/nubis-vmm, built if missing),
#        NUBIS_IMAGE_DIR (default target/images). Needs root (netns + TAP).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-1000}"
images="${NUBIS_IMAGE_DIR:-$root/target/images}"
kernel="$images/hello/kernel"
vmm="${NUBIS_VMM:-$root/target/debug/nubis-vmm}"
[ -f "$kernel" ] || { echo "missing $kernel (run deploy/images/build.sh hello)" >&2; exit 1; }
[ -x "$vmm" ] || (cd "$root" && cargo build -p nubis-vmm >&2)

work=$(mktemp -d /tmp/nbimds.XXXXXX)
ns="nbimdsb$$"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" tuntap add dev nbt0 mode tap
ip -n "$ns" link set nbt0 up
cat >"$work/metadata.json" <<JSON
{"metadata": {"instance_id": "i-0bench", "account_id": "123456789012",
  "ami_id": "ami-0123456789abcdef0", "instance_type": "t3.nano",
  "hostname": "ip-10-0-0-2.bench.compute.internal", "local_ipv4": "10.0.0.2",
  "mac": "02:00:0a:00:00:02", "availability_zone": "bench-1a", "region": "bench-1",
  "launch_time": "2026-12-06T00:00:00Z"},
 "options": {"http_tokens": "required"}}
JSON
ip netns exec "$ns" "$vmm" --kernel "$kernel" --memory-mib 64 \
    --cmdline "nubis.id=i-0bench ip=10.0.0.2/24 nubis.imds_bench=$n" \
    --net tap=nbt0,mac=02:00:0a:00:00:02 --metadata-file "$work/metadata.json" \
    --serial "$work/console.log" >/dev/null 2>"$work/stderr" &
pid=$!
for _ in $(seq 1 600); do
    if grep -q '^NUBIS-IMDS-BENCH' "$work/console.log" 2>/dev/null; then
        grep '^NUBIS-IMDS-BENCH' "$work/console.log"
        exit 0
    fi
    sleep 0.5
done
echo "no NUBIS-IMDS-BENCH line; console:" >&2
cat "$work/console.log" >&2 || true
exit 1
