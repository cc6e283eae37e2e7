# Shared by test-qemu.sh and test-probe.sh (sourced, not run): the
# prerequisite checks, the scratch folder and process clean-up, and the
# ok/FAIL bookkeeping.
#
# Before sourcing, set `ns` (the network namespace the script creates) and
# `work_prefix`; afterwards `kernel`, `accel`, `cpu`, `vmm`, `work`, `pids`
# are set, and everything in `pids` is killed and `ns` deleted on exit.
# Environment: NUBIS_IMAGE_DIR, NUBIS_HELLO_ACCEL, NUBIS_HELLO_VMM,
# NUBIS_REQUIRE_KVM (see the scripts).

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
kernel=${1:-${NUBIS_IMAGE_DIR:-$repo/target/images}/hello/kernel}
accel=${NUBIS_HELLO_ACCEL:-kvm}
vmm=${NUBIS_HELLO_VMM:-}

skip() {
    if [[ "${NUBIS_REQUIRE_KVM:-0}" == 1 ]]; then
        echo "FAIL: prerequisite missing: $1 (NUBIS_REQUIRE_KVM=1)" >&2
        exit 1
    fi
    echo "SKIPPED: $1"
    exit 0
}

# require TOOL...: the image, the VMM or QEMU, KVM, root and these tools.
require() {
    [[ -f "$kernel" ]] || skip "no hello kernel at $kernel (run deploy/images/hello/build-image.sh)"
    if [[ -n "$vmm" ]]; then
        [[ -x "$vmm" ]] || skip "NUBIS_HELLO_VMM=$vmm is not executable"
        [[ -w /dev/kvm ]] || skip "/dev/kvm not usable"
    else
        command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
    fi
    if [[ "$accel" == kvm ]]; then
        [[ -w /dev/kvm ]] || skip "/dev/kvm not usable"
        cpu="host,-arch-capabilities"
    else
        cpu="max"
    fi
    local tool
    for tool in ip "$@"; do
        command -v "$tool" >/dev/null || skip "$tool not installed"
    done
    [[ $(id -u) == 0 ]] || skip "needs root for the network namespace"
    work=$(mktemp -d "/tmp/$work_prefix.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    ip netns add "$ns" || skip "cannot create a network namespace"
    ip netns exec "$ns" ip link set lo up
}

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}

passed=0
failed=0
ok() {
    echo "ok: $*"
    passed=$((passed + 1))
}
bad() {
    echo "FAIL: $*"
    failed=$((failed + 1))
}
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
# wait_until TIMEOUT-S COMMAND...: runs the command until it succeeds.
wait_until() {
    local deadline=$(($(date +%s) + $1))
    shift
    while (($(date +%s) < deadline)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

# finish: prints every log of $work on failure (or with SHOW_LOGS=1), the
# summary, and exits non-zero on failure.
finish() {
    if ((failed > 0)) || [[ "${SHOW_LOGS:-0}" == 1 ]]; then
        local f
        for f in "$work"/*.log; do
            echo "---- $f"
            cat "$f"
        done
    fi
    echo "$passed passed, $failed failed"
    ((failed == 0))
}
