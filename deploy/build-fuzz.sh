#!/usr/bin/env bash
# Builds the fuzz targets (vmm/fuzz, control-plane/fuzz) with the stable
# toolchain and runs each over random inputs, so that CI notices when a target
# no longer compiles or panics at once.
#
#   deploy/build-fuzz.sh [RUNS]        (default RUNS: 20000 inputs per target)
#
# The fuzz crates are their own cargo workspaces (excluded from the root one).
# They are built here as plain binaries: without nightly's coverage
# instrumentation (cargo-fuzz) libFuzzer cannot steer its inputs, so the runs
# are random inputs of up to 4 KiB with a fixed seed -- a smoke test of each
# harness, not fuzzing. Real fuzzing: `cargo +nightly fuzz run` (vmm/fuzz/README.md).
# Each crate gets a copy of the root Cargo.lock (its own is not kept in git), so
# it builds the versions the workspace tests, into the workspace's target directory.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-20000}
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/nubis-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

for crate in vmm/fuzz control-plane/fuzz; do
    dir=$root/$crate
    cp "$root/Cargo.lock" "$dir/Cargo.lock"
    echo "build-fuzz: building $crate"
    CARGO_TARGET_DIR=$target cargo build --manifest-path "$dir/Cargo.toml" --bins
    while read -r bin; do
        echo "build-fuzz: $crate/$bin, $runs random inputs"
        # A crashing input is written to the current directory: keep it in $work.
        if ! (cd "$work" && "$target/debug/$bin" -runs="$runs" -seed=1 -max_len=4096 -len_control=0 \
            -rss_limit_mb=1024 >"$work/$bin.log" 2>&1); then
            tail -n 40 "$work/$bin.log" >&2
            echo "build-fuzz: $crate/$bin failed; inputs kept in $work" >&2
            trap - EXIT
            exit 1
        fi
        grep -E '^Done' "$work/$bin.log"
    done < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$dir/Cargo.toml" | tail -n +2)
done
