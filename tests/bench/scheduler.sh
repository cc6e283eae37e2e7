#!/usr/bin/env bash
# Scheduler benchmark (not a test): 1,000 simulated nodes in 3 zones, 10,000
# instances launched through the gRPC Compute API in RunInstances batches,
# placements/s beside the raw etcd compare+put txn/s measured the same way in
# the same run, then DescribeInstances p50/p99 at 10,000 instances.
# Starts its own etcd on free loopback ports in a temp dir and removes it.
#
# Usage: tests/bench/scheduler.sh [--nodes N] [--instances N] [--batch N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/../.."
ETCD=${NUBIS_ETCD:-/usr/bin/etcd}
[ -x "$ETCD" ] || { echo "etcd not found at $ETCD" >&2; exit 1; }

cargo build --release -p nubis-control-plane --example scheduler_bench >&2

dir=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(port); pport=$(port)
"$ETCD" --name bench --data-dir "$dir/data" \
  --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "bench=http://127.0.0.1:$pport" --log-level error >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; wait $etcd_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "# $(date -u +%FT%TZ) $(nproc) cores, etcd $("$ETCD" --version | head -1)"
RUST_LOG=${RUST_LOG:-error} target/release/examples/scheduler_bench --etcd "http://127.0.0.1:$cport" "$@"
