#!/usr/bin/env bash
# Runs Nubis' whole test suite on a Debian machine (as root): installs what the
# tests need (deploy/packages/*.txt), checks that the build reads nothing the
# install lists do not name, checks formatting, licences and sources, builds the
# guest images, lints, builds and smoke-runs the fuzz targets, then runs every
# Rust test (unit, VMM KVM tiers, control plane on real etcd, agent, end-to-end)
# with cargo-nextest and the EC2 gateway's aws-cli/boto3 tests.
#
# Environment: NUBIS_REQUIRE_KVM=1 makes a missing prerequisite (KVM, etcd, an
# image) a failure instead of a skip (CI sets it). NUBIS_TEST_STAGES limits the
# stages run (comma-separated: deps,inputs,fmt,deny,images,build,clippy,fuzz,guest,test,ec2).
# NUBIS_DENY_ADVISORIES=1 adds RustSec advisories to the deny stage (needs github.com).
# NUBIS_QS_REGION names the region of the test clusters and the EC2 tests' quickstart.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
stages=${NUBIS_TEST_STAGES:-deps,inputs,fmt,deny,images,build,clippy,fuzz,guest,test,ec2}
summary=()
failed=0

want() { [[ ",$stages," == *",$1,"* ]]; }

stage() { # name, command...
    local name=$1; shift
    if ! want "$name"; then
        summary+=("$(printf '%-8s %-8s' "$name" skipped)")
        return 0
    fi
    echo "==> [$name] $*"
    local t0=$SECONDS rc=0
    "$@" || rc=$?
    local dt=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then
        summary+=("$(printf '%-8s %-8s %5ss' "$name" ok "$dt")")
    else
        summary+=("$(printf '%-8s %-8s %5ss  (exit %s)' "$name" FAILED "$dt" "$rc")")
        failed=1
        print_summary
        exit "$rc"
    fi
}

print_summary() {
    echo
    echo "==> summary"
    printf '    %s\n' "${summary[@]}"
}

install_deps() {
    "$root/deploy/install-deps.sh" test
}

run_deny() {
    # Advisories need the RustSec database from github.com, which CI machines
    # cannot reach; licences, bans and sources need only Cargo.lock.
    local checks=(licenses bans sources)
    [[ ${NUBIS_DENY_ADVISORIES:-0} == 1 ]] && checks+=(advisories)
    cargo deny --log-level error check "${checks[@]}"
}

run_tests() {
    # Binaries the end-to-end tests run as real processes.
    cargo build --workspace --bins
    cargo nextest run --workspace --profile ci --no-fail-fast
}

run_guest() {
    # The hello guest is its own freestanding workspace: its host-side unit
    # tests (command line, HTTP, MP table parsing), then the image itself under
    # QEMU microvm and under nubis-vmm (console lines, disk, ping, HTTP, reset).
    (cd deploy/images/hello/guest && CARGO_TARGET_DIR="$root/target/hello-guest" cargo test --lib)
    deploy/images/hello/test-qemu.sh
    NUBIS_HELLO_VMM="${CARGO_TARGET_DIR:-$root/target}/debug/nubis-vmm" deploy/images/hello/test-qemu.sh
    # The probe and stream modes: guests originating traffic to each other.
    deploy/images/hello/test-probe.sh
    NUBIS_HELLO_VMM="${CARGO_TARGET_DIR:-$root/target}/debug/nubis-vmm" deploy/images/hello/test-probe.sh
}

run_ec2() {
    if [[ -x tests/ec2/run.sh ]]; then
        tests/ec2/run.sh
    else
        echo "tests/ec2/run.sh not present: no EC2 client tests in this tree"
    fi
}

stage deps install_deps
stage inputs deploy/test-check-build-inputs.sh
stage fmt cargo fmt --all -- --check
stage deny run_deny
stage images deploy/images/build.sh
stage build cargo build --workspace --all-targets
stage clippy cargo clippy --workspace --all-targets -- -D warnings
stage fuzz deploy/build-fuzz.sh
stage guest run_guest
stage test run_tests
stage ec2 run_ec2
print_summary
exit "$failed"
