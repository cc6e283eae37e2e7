#!/usr/bin/env bash
# Builds the Nubis "debian" cloud image into OUTDIR (called by deploy/images/build.sh):
#   kernel        the linux image's ELF vmlinux (PVH entry), built first if needed
#   rootfs.ext4   Debian 12 (bookworm) root file system: systemd, cloud-init,
#                 openssh-server, sudo; configured for the Nubis metadata service
#   packages.txt  every installed package with its version
#   manifest.in.json
#
# The root file system is debootstrap's minbase variant plus the packages listed in
# `packages`, from http://deb.debian.org/debian only (override: NUBIS_DEBIAN_MIRROR).
# The downloaded packages are cached as a debootstrap tarball in
# ${NUBIS_DEBIAN_CACHE_DIR:-target/debian-cache}, keyed by the package list, so a
# rebuild does not download again. Needs root (debootstrap runs maintainer scripts
# in a chroot); the ext4 image itself is made by mkfs.ext4 -d from the tree.
set -euo pipefail
shopt -s inherit_errexit

if [ $# -ne 1 ]; then
    echo "usage: build-image.sh OUTDIR" >&2
    exit 2
fi
out=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=${NUBIS_REPO_ROOT:-$(cd "$here/../../.." && pwd)}
cache=${NUBIS_DEBIAN_CACHE_DIR:-$repo_root/target/debian-cache}
mirror=${NUBIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
log() { echo "debian: $*"; }
fail() {
    echo "debian: error: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "debootstrap needs root (run deploy/images/build.sh debian as root)"

# --- 1. packages: one debootstrap tarball per package list ------------------------------
include=$(grep -v -e '^#' -e '^$' "$here/packages" | paste -sd, -)
key=$(printf '%s %s\n' "$suite" "$include" | sha256sum | cut -c1-16)
tarball="$cache/$suite-$key.tgz"
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
    log "downloading $suite minbase + $include from $mirror (cached in $tarball)"
    work=$(mktemp -d "$cache/download.XXXXXX")
    if ! debootstrap --variant=minbase --include="$include" --make-tarball="$work/debs.tgz" \
        "$suite" "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log" >&2
        rm -rf "$work"
        fail "debootstrap --make-tarball failed"
    fi
    mv "$work/debs.tgz" "$tarball"
    rm -rf "$work"
fi

# --- 2. root file system ------------------------------------------------------------------
root=$(mktemp -d "$cache/rootfs.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys in the chroot; never delete through a mount.
    local m
    for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" || true
    done
    rm -rf "$root"
}
trap cleanup EXIT
log "installing $suite into $root"
if ! debootstrap --variant=minbase --include="$include" --unpack-tarball="$tarball" \
    "$suite" "$root" "$mirror" > "$cache/debootstrap.log" 2>&1; then
    cp "$root/debootstrap/debootstrap.log" "$cache/debootstrap-chroot.log" 2> /dev/null || true
    tail -n 30 "$cache/debootstrap-chroot.log" >&2 || true
    fail "debootstrap failed (logs: $cache/debootstrap.log, $cache/debootstrap-chroot.log)"
fi

# Nubis configuration (files of rootfs/ in this folder, owned by root).
cp -r --no-preserve=ownership "$here/rootfs/." "$root/"
chroot "$root" systemctl enable nubis-net.service > /dev/null 2>&1
# Timers that download or scrub behind the tenant's back, and a first-boot delay.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service systemd-networkd-wait-online.service > /dev/null 2>&1
printf '# The root file system is given on the kernel command line (root=/dev/vda rw).\n' > "$root/etc/fstab"
printf 'debian\n' > "$root/etc/hostname"
# Unique per instance: generated on first boot.
: > "$root/etc/machine-id"
rm -f "$root"/var/lib/dbus/machine-id "$root"/etc/ssh/ssh_host_*
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' | LC_ALL=C sort > "$out/packages.txt"
# Small: no documentation, manuals, foreign locales, package lists or caches.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/debootstrap
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
cat > "$root/etc/dpkg/dpkg.cfg.d/nubis-nodoc" << 'CFG'
# Nubis debian image: keep it small (as built) when the tenant installs packages.
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
CFG

# --- 3. ext4 image -----------------------------------------------------------------------
used_mib=$(du -sm "$root" | cut -f1)
size_mib=$(((used_mib * 13 / 10 + 512 + 63) / 64 * 64))
log "root file system: $used_mib MiB used, image $size_mib MiB"
# Fixed UUID and hash seed: the same tree gives the same file system layout.
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -L nubis-root -U 6e756269-732d-4465-6269-616e2d726f6f \
    -E hash_seed=6e756269-732d-4465-6269-616e2d686173 -I 256 -d "$root" "$out/rootfs.ext4" "${size_mib}M"

# --- 4. kernel: the linux image's (built when needed) ---------------------------------
"$repo_root/deploy/images/build.sh" linux
linux_dir=${NUBIS_IMAGE_DIR:-$repo_root/target/images}
case "$linux_dir" in /*) ;; *) linux_dir="$repo_root/$linux_dir" ;; esac
linux_dir="$linux_dir/linux"
[ -f "$linux_dir/kernel" ] || fail "no kernel in $linux_dir after building the linux image"

cp "$linux_dir/kernel" "$out/kernel"

# --- 5. manifest ---------------------------------------------------------------------------
python3 - "$out/manifest.in.json" "$mirror" "$suite" "$(sha256sum < "$tarball" | cut -c1-64)" << 'PY'
import json, sys

path, mirror, suite, debs = sys.argv[1:5]
manifest = {
    "name": "debian",
    "kernel": "kernel",
    "initrd": None,
    "disk": "rootfs.ext4",
    # The node agent adds "ip=ADDRESS/PREFIX gw=GATEWAY" (read by nubis-net.service).
    "cmdline": "console=ttyS0 reboot=k panic=-1 i8042.noaux net.ifnames=0"
    " root=/dev/vda rw ci.datasource=Ec2",
    "requires": {
        "vmm": ["elf-pvh", "serial", "i8042", "virtio-mmio", "mptable"],
        "min_memory_mib": 512,
    },
    "debian": {"suite": suite, "mirror": mirror, "packages_tarball_sha256": debs},
    "login_user": "admin",
}
with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
PY
log "image ready in $out"
