#!/usr/bin/env bash
# Installs the Debian packages and cargo tools Nubis needs, skipping what is
# already there.
#
#   install-deps.sh [build|test|run]     install (default role: test)
#   install-deps.sh --list [ROLE]        print the role's Debian packages, one a line
#
# Roles (the package lists in deploy/packages/ are the single source):
#   build: packages/build.txt                 compilers and tools to build binaries and guest images
#   test:  packages/build.txt + test.txt      + etcd, QEMU, iproute2, python venv, strace; cargo-nextest, cargo-deny
#   run:   packages/build.txt + run.txt       + etcd, iproute2 (the local cloud)
# NUBIS_PACKAGES_DIR overrides the lists' folder (deploy/check-build-inputs.sh's own test uses it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lists=${NUBIS_PACKAGES_DIR:-$here/packages}

list_only=0
if [[ ${1:-} == --list ]]; then
    list_only=1
    shift
fi
role=${1:-test}
case "$role" in
    build) files=(build.txt) ;;
    test) files=(build.txt test.txt) ;;
    run) files=(build.txt run.txt) ;;
    *) echo "install-deps.sh: unknown role '$role' (build|test|run)" >&2; exit 2 ;;
esac

# Packages of the role, in list order, without comments, blank lines or duplicates.
pkgs=()
for f in "${files[@]}"; do
    [[ -r $lists/$f ]] || { echo "install-deps.sh: $lists/$f missing" >&2; exit 2; }
    while read -r p _; do
        [[ -z $p || $p == \#* ]] && continue
        [[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
    done <"$lists/$f"
done

if ((list_only)); then
    printf '%s\n' "${pkgs[@]}"
    exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps.sh: missing packages (run as root to install): ${missing[*]}" >&2
        exit 3
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Recommends are never installed: whatever the build needs is named in the lists.
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "all Debian packages present (${#pkgs[@]})"
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 3
fi
if [[ $role == test ]]; then
    # --locked: each tool is built with its own Cargo.lock.
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "installing cargo-nextest"
        cargo install --locked cargo-nextest
    fi
    if ! cargo deny --version >/dev/null 2>&1; then
        echo "installing cargo-deny"
        cargo install --locked cargo-deny
    fi
fi
