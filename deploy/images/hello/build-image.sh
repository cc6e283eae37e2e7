#!/usr/bin/env bash
# Builds the `hello` test guest image into OUTDIR (images contract, see
# deploy/images/hello/README.md):
#   OUTDIR/kernel            the PVH ELF (boots on QEMU microvm, Firecracker, nubis-vmm)
#   OUTDIR/manifest.in.json  name, kernel, initrd, default cmdline, VMM requirements
# deploy/images/build.sh calls this and adds hashes (manifest.json).
# The guest is its own cargo workspace with its own target dir, so this never
# contends with (or is affected by) the main workspace's build settings.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

# Our .cargo/config.toml holds the freestanding flags; flags from the caller's
# environment would replace them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET
export CARGO_TARGET_DIR="${NUBIS_HELLO_TARGET_DIR:-$repo/target/hello-guest}"

cd "$here/guest"
cargo build --release --locked --bin hello
elf="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/hello"

# Refuse an ELF without the PVH entry note (Xen note type 18, PHYS32_ENTRY).
if ! readelf -nW "$elf" | grep -Eq '^[[:space:]]*Xen[[:space:]]+0x[0-9a-f]+[[:space:]].*\(0x00000012\)'; then
    echo "hello: $elf has no PVH entry note" >&2
    exit 1
fi

install -m 0644 "$elf" "$out/kernel.tmp"
mv -f "$out/kernel.tmp" "$out/kernel"
cat > "$out/manifest.in.json.tmp" <<'JSON'
{
  "name": "hello",
  "kernel": "kernel",
  "initrd": null,
  "cmdline": "nubis.id=unknown",
  "requires": {
    "vmm": ["elf-pvh", "serial", "i8042", "virtio-mmio"],
    "min_memory_mib": 32
  }
}
JSON
mv -f "$out/manifest.in.json.tmp" "$out/manifest.in.json"
echo "hello: image in $out"
