#!/usr/bin/env bash
# Checks that every system file the build reads comes from a Debian package the
# install lists (deploy/packages/build.txt) account for, so that a fresh Debian 12
# machine with only rustup builds Nubis after `deploy/install-deps.sh build`.
#
#   deploy/check-build-inputs.sh [--verbose]
#   deploy/check-build-inputs.sh --analyze [--verbose] TRACE...   only step 3, on saved traces
#
# 1. Every package that an image's build-deps file names must be accounted for.
# 2. Under strace (successful openat/execve of every process), from scratch in a
#    temporary folder: `cargo check --workspace --all-targets` in an empty target
#    directory (compiles, links and runs every build script and proc macro:
#    etcd-client's protoc, ring's C and assembly, the proto crate, the VMM's link
#    probe) and the hello guest image (its own cargo workspace, linker script, readelf).
#    The linux image's kernel build (~8 minutes) is not traced; its build-deps are
#    checked by step 1.
# 3. deploy/packages/check-inputs.py maps each file to its package and fails on a
#    package that neither the lists' dependency closure nor the Debian base system
#    (Essential, Priority required/important) accounts for, or on a file under /usr
#    that no package owns.
# Environment: NUBIS_PACKAGES_DIR replaces deploy/packages (for the check's own test);
# NUBIS_CHECK_KEEP=DIR keeps the traces in DIR.
# Exit status: 0 ok; 1 an input is not accounted for; 2 usage; 3 strace missing.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lists=${NUBIS_PACKAGES_DIR:-$root/deploy/packages}
verbose=()
analyze=0
while [[ ${1:-} == --* ]]; do
    case "$1" in
        --verbose) verbose=(--verbose) ;;
        --analyze) analyze=1 ;;
        *) echo "check-build-inputs.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nubis-inputs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

NUBIS_PACKAGES_DIR=$lists "$root/deploy/install-deps.sh" --list build >"$tmp/lists"

# Step 1: the images' own dependency files.
requires=()
for deps in "$root"/deploy/images/*/build-deps; do
    [[ -e $deps ]] || continue
    while read -r _ pkg _; do
        [[ -n ${pkg:-} && $pkg != - ]] && requires+=(--require "$pkg")
    done < <(grep -v '^[[:space:]]*#' "$deps")
done

analyze_traces() {
    local git_dir=()
    git_dir=(--skip "$(git -C "$root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$root")")
    python3 "$root/deploy/packages/check-inputs.py" --lists "$tmp/lists" "${requires[@]}" \
        --incidental "$lists/incidental.txt" "${git_dir[@]}" --skip "$root" --skip "$HOME" --skip "${CARGO_HOME:-$HOME/.cargo}" \
        --skip "${RUSTUP_HOME:-$HOME/.rustup}" --skip "$tmp" "${verbose[@]}" "$@"
}

if ((analyze)); then
    (($#)) || { echo "check-build-inputs.sh: --analyze needs trace files" >&2; exit 2; }
    analyze_traces "$@"
    exit
fi

command -v strace >/dev/null || { echo "check-build-inputs.sh: strace missing (deploy/install-deps.sh test)" >&2; exit 3; }
trace() { # name command...
    local name=$1; shift
    echo "check-build-inputs: tracing $*"
    strace -f -z -qq --seccomp-bpf -e trace=openat,execve -e signal=none -o "$tmp/$name.trace" "$@"
}

# Step 2. Nothing may come from the caller's environment: a PROTOC or
# PROTOC_INCLUDE pointing elsewhere would hide what the lists miss.
# Nor tools from elsewhere on PATH (a pyenv python, ...): rustup's cargo and the
# Debian default PATH, as on a fresh machine.
unset PROTOC PROTOC_INCLUDE RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
cargo_bin=$(dirname "$(command -v cargo)")
export PATH="$cargo_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
t0=$SECONDS
(cd "$root" && CARGO_TARGET_DIR="$tmp/target" trace workspace \
    cargo check --workspace --all-targets --locked --quiet)
t1=$SECONDS
NUBIS_IMAGE_DIR="$tmp/images" NUBIS_HELLO_TARGET_DIR="$tmp/hello-target" \
    trace hello "$root/deploy/images/build.sh" hello >/dev/null
t2=$SECONDS
echo "check-build-inputs: traced the workspace in $((t1 - t0))s, the hello image in $((t2 - t1))s"
if [[ -n ${NUBIS_CHECK_KEEP:-} ]]; then
    mkdir -p "$NUBIS_CHECK_KEEP"
    cp "$tmp"/*.trace "$NUBIS_CHECK_KEEP"/
fi

# Step 3.
analyze_traces "$tmp"/*.trace
