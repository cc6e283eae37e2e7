#!/usr/bin/env bash
# Installs the Debian packages and cargo tools Nubis needs, skipping what is
# already there. Usage: install-deps.sh [build|test|run]  (default: test)
#   build: compilers and tools to build binaries and guest images
#   test:  build + etcd, QEMU (image checks, benchmarks), iproute2, python venv
#   run:   build + etcd + iproute2 (the local cloud)
set -euo pipefail

role=${1:-test}
build_pkgs=(build-essential protobuf-compiler linux-source-6.1 busybox-static flex bison bc
    libelf-dev libssl-dev cpio xz-utils python3 curl)
case "$role" in
    build) pkgs=("${build_pkgs[@]}") ;;
    test) pkgs=("${build_pkgs[@]}" etcd-server etcd-client qemu-system-x86 iproute2 iputils-ping python3-venv) ;;
    run) pkgs=("${build_pkgs[@]}" etcd-server etcd-client iproute2 iputils-ping) ;;
    *) echo "install-deps.sh: unknown role '$role' (build|test|run)" >&2; exit 2 ;;
esac

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
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "all Debian packages present (${#pkgs[@]})"
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 3
fi
if [[ $role == test ]] && ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
