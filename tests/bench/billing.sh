#!/usr/bin/env bash
# Metering benchmark (not a test): the pure usage ledger for N instances
# (default 10,000) with a 30-day month of lifecycle events (a daily stop and
# start each, ~1.2 M events): events -> intervals -> the month rated per
# instance, and one hour's FOCUS CSV. Target: ledger <= 1 s.
#
# Usage: tests/bench/billing.sh [N]   (NUBIS_BENCH_PROFILE=dev for a debug build)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${NUBIS_BENCH_PROFILE:-release}
cargo build --profile "$profile" -p nubis-control-plane --example billing_bench >&2
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
echo "# $(date -u +%FT%TZ) $(nproc) cores, profile $profile"
"target/$dir/examples/billing_bench" "${1:-10000}"
