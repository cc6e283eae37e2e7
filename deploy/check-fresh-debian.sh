#!/usr/bin/env bash
# By hand, as root: builds Nubis' build-script crates in a brand-new Debian 12
# chroot (debootstrap, default variant: Priority required + important) that gets nothing
# but this host's rustup toolchain and cargo registry cache (read-only binds),
# to see what a fresh machine needs.
#
#   deploy/check-fresh-debian.sh [MIRROR]     (default http://deb.debian.org/debian)
#
# 1. With only protobuf-compiler installed the old way (--no-install-recommends,
#    no libprotobuf-dev), `cargo build -p etcd-client` must FAIL: the failure of
#    issue 11.
# 2. After `deploy/install-deps.sh build` (deploy/packages/build.txt), the same
#    build and `cargo check --workspace --all-targets` must succeed.
# Needs about 2 GB of disk in $TMPDIR and network access to the mirror; takes
# 10-20 minutes. Everything it creates (the chroot, its mounts) is removed at exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mirror=${1:-http://deb.debian.org/debian}
[[ $(id -u) -eq 0 ]] || { echo "check-fresh-debian.sh: run as root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "check-fresh-debian.sh: apt-get install debootstrap" >&2; exit 3; }
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

work=$(mktemp -d "${TMPDIR:-/tmp}/nubis-fresh.XXXXXX")
chroot_dir=$work/root
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
    # Never follow a mount that is still there into the host's files.
    if ! grep -q " $work/" /proc/mounts; then
        rm -rf --one-file-system "$work"
    else
        echo "check-fresh-debian.sh: mounts left under $work; not deleting it" >&2
    fi
}
trap cleanup EXIT

bind() { # source target [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    if [[ ${3:-} == ro ]]; then mount -o remount,bind,ro "$2"; fi
}

echo "==> debootstrap bookworm ($mirror)"
t0=$SECONDS
debootstrap bookworm "$chroot_dir" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
echo "    $((SECONDS - t0))s"
mount -t proc proc "$chroot_dir/proc"; mounts+=("$chroot_dir/proc")
bind /dev "$chroot_dir/dev"
bind "$rustup_home" "$chroot_dir/opt/rustup" ro
bind "$cargo_home/registry" "$chroot_dir/opt/cargo/registry" ro
bind "$root" "$chroot_dir/src" ro
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"

in_chroot() { # command...: as root in the chroot, with rustup's toolchain
    chroot "$chroot_dir" /usr/bin/env -i HOME=/root TERM=dumb \
        PATH=/opt/rustup/toolchains/"$(basename "$(readlink -f "$rustup_home/toolchains/$(sed -n 's/^channel = "\(.*\)"/\1/p' "$root/rust-toolchain.toml")-x86_64-unknown-linux-gnu")")"/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        CARGO_HOME=/root/cargo CARGO_TARGET_DIR=/root/target "$@"
}
# cargo's registry cache, read from the host; its own CARGO_HOME is writable.
in_chroot /bin/sh -c 'mkdir -p /root/cargo && ln -s /opt/cargo/registry /root/cargo/registry'

echo "==> 1. protobuf-compiler alone (--no-install-recommends): cargo build -p etcd-client must fail"
in_chroot /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler gcc libc6-dev' >"$work/apt1.log" 2>&1 ||
    { tail -n 20 "$work/apt1.log" >&2; exit 1; }
if in_chroot /bin/sh -c 'cd /src && cargo build --offline --locked -p etcd-client' >"$work/build1.log" 2>&1; then
    echo "FAIL: etcd-client built without libprotobuf-dev" >&2
    exit 1
fi
if grep -q 'google/protobuf/descriptor.proto: File not found' "$work/build1.log"; then
    echo "    failed as expected: protoc: google/protobuf/descriptor.proto: File not found"
else
    echo "    failed, but not for the expected reason:" >&2
    tail -n 20 "$work/build1.log" >&2
    exit 1
fi

echo "==> 2. deploy/install-deps.sh build, then the build"
t0=$SECONDS
in_chroot /src/deploy/install-deps.sh build >"$work/apt2.log" 2>&1 || { tail -n 20 "$work/apt2.log" >&2; exit 1; }
echo "    packages installed in $((SECONDS - t0))s"
t0=$SECONDS
in_chroot /bin/sh -c 'cd /src && cargo build --offline --locked -p etcd-client && cargo check --offline --locked --workspace --all-targets' \
    >"$work/build2.log" 2>&1 || { tail -n 30 "$work/build2.log" >&2; exit 1; }
echo "    etcd-client built and the workspace checked in $((SECONDS - t0))s"
echo "check-fresh-debian: ok"
