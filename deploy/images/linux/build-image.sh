#!/usr/bin/env bash
# Builds the Nubis "linux" guest image into OUTDIR (called by deploy/images/build.sh):
#   kernel   ELF vmlinux with a PVH entry note (QEMU microvm, Firecracker, nubis-vmm)
#   bzImage  the same kernel in the Linux boot-protocol format
#   initrd   busybox initramfs (newc cpio, uncompressed) whose /init reports devices and resets
#   initrd-min  the same format with only min-init.S as /init (prints a line, resets)
#   config   the kernel's full .config
#   manifest.in.json
#
# The kernel is Debian's linux-source-6.1 configured with `make tinyconfig` plus
# microvm.config. Sources and objects are cached in ${NUBIS_LINUX_BUILD_DIR:-target/linux-build}
# and reused across runs (kbuild only recompiles what changed).
set -euo pipefail
shopt -s inherit_errexit

if [ $# -ne 1 ]; then
    echo "usage: build-image.sh OUTDIR" >&2
    exit 2
fi
out=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=${NUBIS_REPO_ROOT:-$(cd "$here/../../.." && pwd)}
cache=${NUBIS_LINUX_BUILD_DIR:-$repo_root/target/linux-build}
tarball=/usr/src/linux-source-6.1.tar.xz
src_name=linux-source-6.1
src="$cache/$src_name"
obj="$cache/build"
jobs=$(nproc)
log() { echo "linux: $*"; }
fail() {
    echo "linux: error: $*" >&2
    exit 1
}

mkdir -p "$cache" "$obj"

# --- 1. sources: extract once per linux-source package version ------------------
pkg_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2> /dev/null || echo unknown)
src_stamp="linux-source-6.1 $pkg_version $(stat -c '%s %Y' "$tarball")"
if [ ! -f "$cache/source.stamp" ] || [ "$(cat "$cache/source.stamp")" != "$src_stamp" ] || [ ! -d "$src" ]; then
    log "extracting $tarball ($pkg_version) into $cache"
    rm -rf "$src" "$cache/source.stamp" "$cache/patches.applied" "$cache/.extract"
    mkdir -p "$cache/.extract"
    tar -C "$cache/.extract" -xf "$tarball"
    mv "$cache/.extract/$src_name" "$src"
    rmdir "$cache/.extract"
    mkdir -p "$cache/patches.applied"
    printf '%s\n' "$src_stamp" > "$cache/source.stamp"
fi

# --- 2. patches: make the tree carry exactly the patches inputs.sh selects ----------
# Applied patches are copied into $cache/patches.applied/ so they can be reversed
# exactly, even after the patch file in the repository changed.
mapfile -t wanted < <("$here/inputs.sh" | sed -n 's/^patch //p')
mkdir -p "$cache/patches.applied"
want_list=""
for p in "${wanted[@]}"; do
    want_list+="$p $(sha256sum < "$here/patches/$p" | cut -c1-64)"$'\n'
done
have_list=$(cat "$cache/patches.applied/series" 2> /dev/null || true)
if [ "$have_list" != "${want_list%$'\n'}" ]; then
    if [ -n "$have_list" ]; then
        # Reverse in the opposite order of application.
        while read -r p _; do
            log "reverting patch $p"
            patch -d "$src" -p1 -R -s --no-backup-if-mismatch < "$cache/patches.applied/$p" ||
                fail "cannot revert $p; remove $cache to start from fresh sources"
            rm -f "$cache/patches.applied/$p"
        done < <(tac "$cache/patches.applied/series")
        : > "$cache/patches.applied/series"
    fi
    for p in "${wanted[@]}"; do
        log "applying patch $p"
        patch -d "$src" -p1 -s --no-backup-if-mismatch --dry-run < "$here/patches/$p" > /dev/null ||
            fail "patch $p does not apply to $src_name $pkg_version"
        patch -d "$src" -p1 -s --no-backup-if-mismatch < "$here/patches/$p"
        cp "$here/patches/$p" "$cache/patches.applied/$p"
        printf '%s %s\n' "$p" "$(sha256sum < "$here/patches/$p" | cut -c1-64)" >> "$cache/patches.applied/series"
    done
fi

# --- 3. configuration: tinyconfig + microvm.config, generated aside -----------------
# Generated in its own object dir and copied over the build's .config only when it
# differs, so an unchanged configuration does not trigger recompilation.
cfg="$cache/config-gen"
mkdir -p "$cfg"
make -s -C "$src" O="$cfg" tinyconfig > "$cfg/kconfig.log" 2>&1 || fail "make tinyconfig failed (see $cfg/kconfig.log)"
(cd "$src" && scripts/kconfig/merge_config.sh -m -O "$cfg" "$cfg/.config" "$here/microvm.config") >> "$cfg/kconfig.log" 2>&1 ||
    fail "merge_config.sh failed (see $cfg/kconfig.log)"
make -s -C "$src" O="$cfg" olddefconfig >> "$cfg/kconfig.log" 2>&1 || fail "make olddefconfig failed (see $cfg/kconfig.log)"

# Every option of the fragment must have survived Kconfig's dependency resolution.
missing=()
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF -- "$line" "$cfg/.config" || missing+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$cfg/.config" || echo unset))")
            ;;
        "# CONFIG_"*" is not set")
            opt=${line#\# }
            opt=${opt%% *}
            grep -q "^$opt=" "$cfg/.config" && missing+=("$line (got: $(grep "^$opt=" "$cfg/.config"))")
            ;;
    esac
done < "$here/microvm.config"
if [ ${#missing[@]} -gt 0 ]; then
    printf 'linux: error: microvm.config option not in the final .config: %s\n' "${missing[@]}" >&2
    exit 1
fi
if ! cmp -s "$cfg/.config" "$obj/.config"; then
    log "kernel configuration changed"
    cp "$cfg/.config" "$obj/.config"
fi

# --- 4. kernel ----------------------------------------------------------------------
log "compiling vmlinux and bzImage with $jobs jobs (log: $cache/make.log)"
start=$(date +%s)
if ! nice -n 10 make -C "$src" O="$obj" -j"$jobs" KBUILD_BUILD_USER=nubis KBUILD_BUILD_HOST=nubis \
    vmlinux bzImage > "$cache/make.log" 2>&1; then
    tail -n 40 "$cache/make.log" >&2
    fail "kernel build failed (full log: $cache/make.log)"
fi
log "kernel compiled in $(($(date +%s) - start)) s"
cmp -s "$obj/.config" "$cfg/.config" || fail "kbuild changed the configuration; microvm.config is inconsistent"

vmlinux="$obj/vmlinux"
# The PVH entry point is an ELF note: owner "Xen", type 0x12 (XEN_ELFNOTE_PHYS32_ENTRY).
readelf -n "$vmlinux" | grep -E '^\s+Xen\s+0x[0-9a-f]+\s+.*0x00000012' > /dev/null ||
    fail "vmlinux has no PVH entry note (Xen note type 0x12)"
cp "$vmlinux" "$out/kernel"
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage"
cp "$obj/.config" "$out/config"
kernel_release=$(cat "$obj/include/config/kernel.release")

# --- 5. initramfs ---------------------------------------------------------------------
busybox=/bin/busybox
if readelf -l "$busybox" | grep -q 'INTERP'; then
    fail "$busybox is dynamically linked; install busybox-static"
fi
gen_cpio="$obj/usr/gen_init_cpio"
[ -x "$gen_cpio" ] || make -s -C "$src" O="$obj" usr/gen_init_cpio > /dev/null
list="$cache/initramfs.list"
{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    echo "dir /proc 0755 0 0"
    echo "dir /sys 0755 0 0"
    echo "dir /tmp 01777 0 0"
    echo "dir /bin 0755 0 0"
    echo "file /bin/busybox $busybox 0755 0 0"
    "$busybox" --list | LC_ALL=C sort | while read -r applet; do
        [ "$applet" = busybox ] || echo "slink /bin/$applet busybox 0777 0 0"
    done
    echo "file /init $here/init 0755 0 0"
} > "$list"
# -t 0: fixed mtimes, so the same inputs give the same bytes. Not compressed: the
# kernel unpacks the initramfs at CPL0, and on PVM hosts (CPL0 interpreted) inflating
# 1 MB of gzip takes minutes, copying 2 MB of cpio a few seconds (see README.md).
"$gen_cpio" -t 0 "$list" > "$out/initrd"

# initrd-min: /init is min-init.S (two system calls: print a line, reset), nothing
# else. For VMM tests on PVM hosts, where unpacking the busybox archive at
# interpreted ring 0 takes minutes and user space cannot run anyway (README.md).
min_init="$cache/min-init"
gcc -nostdlib -static -Wl,--build-id=none -o "$min_init" "$here/min-init.S" ||
    fail "cannot assemble min-init.S"
strip "$min_init"
{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "file /init $min_init 0755 0 0"
} > "$cache/initramfs-min.list"
"$gen_cpio" -t 0 "$cache/initramfs-min.list" > "$out/initrd-min"

# --- 6. manifest ----------------------------------------------------------------------
patches_json=$(printf '%s\n' "${wanted[@]}" | python3 -c 'import json,sys; print(json.dumps([l for l in sys.stdin.read().split() if l]))')
python3 - "$out/manifest.in.json" "$kernel_release" "$pkg_version" "$patches_json" << 'EOF'
import json, sys

path, release, pkg_version, patches = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
manifest = {
    "name": "linux",
    "kernel": "kernel",
    "bzimage": "bzImage",
    "initrd": "initrd",
    "initrd_format": "newc-cpio",
    # Same format, /init = min-init.S only: prints init_min_ok and resets.
    "initrd_min": "initrd-min",
    "cmdline": "console=ttyS0 reboot=k panic=-1 i8042.noaux",
    # Added by VMMs on PVM hosts (see "Under PVM KVM" in deploy/images/linux/README.md).
    "pvm_cmdline_extra": "noxsave nofsgsbase clearcpuid=cx16,popcnt,smap"
    " lapic=notscdeadline no-kvmclock pty.legacy_count=0",
    "requires": {
        "vmm": ["elf-pvh", "bzimage", "initrd", "serial", "i8042", "virtio-mmio", "mptable"],
        "min_memory_mib": 128,
    },
    "linux": {
        "release": release,
        "source_package": f"linux-source-6.1 {pkg_version}",
        "config_fragment": "deploy/images/linux/microvm.config",
    },
    "patches": patches,
    "console": {
        "init_ok": "NUBIS-LINUX-INIT-OK",
        "reset": "NUBIS-LINUX-RESET",
        "init_min_ok": "NUBIS-LINUX-MIN-INIT",
    },
}
with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
EOF
log "image ready: kernel $kernel_release, patches: ${wanted[*]:-none}"
