#!/usr/bin/env bash
# VMM boot benchmark (not a test): boots the `hello` guest N times with
# nubis-vmm and with QEMU's microvm machine, side by side, and prints
# start -> first serial byte, start -> NUBIS-GUEST-READY, start -> process exit
# after the guest's i8042 reset (min/median/max), the VMM's RSS minus the guest
# memory it has touched, and the nubis/QEMU ratios.
#
# Usage: tests/bench/vmm-boot.sh [N]        (default N=20)
# Env:   NUBIS_VMM (default target/release/nubis-vmm, built if missing),
#        NUBIS_IMAGE_DIR (default target/images), MEM_MIB (default 64).
#
# Notes: QEMU microvm has no i8042, so the hello guest falls back to a triple
# fault 200 ms after its reset attempt (-no-reboot turns that into an exit);
# compare the exit column with that in mind. On PVM hosts (nested KVM) QEMU
# needs `-cpu host,-arch-capabilities`.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
runs="${1:-20}"
images="${NUBIS_IMAGE_DIR:-$root/target/images}"
kernel="$images/hello/kernel"
vmm="${NUBIS_VMM:-$root/target/release/nubis-vmm}"
mem="${MEM_MIB:-64}"

[ -f "$kernel" ] || { echo "missing $kernel (run deploy/images/build.sh hello)" >&2; exit 1; }
if [ ! -x "$vmm" ]; then
    (cd "$root" && cargo build --release -p nubis-vmm >&2)
fi
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not found" >&2; exit 1; }
cpu="host"
[ -d /sys/module/kvm_pvm ] && cpu="host,-arch-capabilities"

exec python3 - "$runs" "$kernel" "$vmm" "$mem" "$cpu" << 'PY'
import os, select, signal, statistics, subprocess, sys, time

runs, kernel, vmm, mem, cpu = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
CMDLINE = "nubis.id=bench"

def nubis(cmdline):
    return [vmm, "--kernel", kernel, "--memory-mib", str(mem), "--cmdline", cmdline]

def qemu(cmdline):
    return ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", cpu, "-m", str(mem),
            "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "stdio", "-kernel", kernel, "-append", cmdline]

def one_boot(argv):
    """Returns (first_byte_s, ready_s, exit_s) for one boot that resets itself."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf, first, ready = b"", None, None
    deadline = t0 + 120
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            p.kill(); p.wait()
            raise RuntimeError(f"timeout: {argv[0]} output so far {buf[-200:]!r}")
        chunk = os.read(fd, 65536)
        now = time.monotonic()
        if not chunk:
            break
        if first is None:
            first = now - t0
        buf += chunk
        if ready is None and b"NUBIS-GUEST-READY" in buf:
            ready = now - t0
    p.wait()
    end = time.monotonic() - t0
    if ready is None:
        raise RuntimeError(f"{argv[0]}: no ready line; output {buf[-300:]!r}")
    return first, ready, end

def overhead_kib(argv):
    """VMM RSS minus the RSS of the guest-memory mapping, at the ready line."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    buf = b""
    t0 = time.monotonic()
    while b"NUBIS-GUEST-READY" not in buf and time.monotonic() - t0 < 120:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            buf += os.read(p.stdout.fileno(), 65536)
    time.sleep(0.3)
    total, guest, private = 0, 0, 0
    size = None
    with open(f"/proc/{p.pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "Size:":
                size = int(parts[1])
            elif parts[0] == "Rss:":
                rss = int(parts[1])
                total += rss
                if size == mem * 1024:
                    guest += rss
            elif parts[0] in ("Private_Clean:", "Private_Dirty:") and size != mem * 1024:
                private += int(parts[1])
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    return total - guest, guest, private

def stats(xs):
    return min(xs), statistics.median(xs), max(xs)

results = {}
for name, make in (("nubis-vmm", nubis), ("qemu-microvm", qemu)):
    results[name] = []
for i in range(runs):
    # Interleave the two VMMs so machine noise hits both alike.
    for name, make in (("nubis-vmm", nubis), ("qemu-microvm", qemu)):
        results[name].append(one_boot(make(CMDLINE + " nubis.reset=1")))

print(f"hello guest, {mem} MiB, 1 vCPU, {runs} boots each (times in ms: min / median / max)")
print(f"{'':14} {'first serial byte':>24} {'ready line':>24} {'exit after reset':>24}")
med = {}
for name, rows in results.items():
    cols = []
    for k in range(3):
        mn, md, mx = stats([r[k] * 1000 for r in rows])
        med[(name, k)] = md
        cols.append(f"{mn:7.1f} /{md:7.1f} /{mx:7.1f}")
    print(f"{name:14} " + " ".join(f"{c:>24}" for c in cols))
print(f"{'ratio (median)':14} " + " ".join(
    f"{med[('nubis-vmm', k)] / med[('qemu-microvm', k)]:>24.2f}" for k in range(3)))

print()
print("RSS at the ready line (KiB): VMM overhead = total RSS - RSS of the guest-memory mapping;")
print("private = pages of those mapped by no other process at that moment (libc is shared; the\n"
      "VMM binary text becomes shared once several VMMs run)")
ov = {}
for name, make in (("nubis-vmm", nubis), ("qemu-microvm", qemu)):
    samples = [overhead_kib(make(CMDLINE)) for _ in range(3)]
    over = statistics.median(s[0] for s in samples)
    guest = statistics.median(s[1] for s in samples)
    private = statistics.median(s[2] for s in samples)
    ov[name] = over
    print(f"{name:14} overhead {over:8.0f} KiB ({over / 1024:.2f} MiB), of it private "
          f"{private:6.0f} KiB; guest memory touched {guest:8.0f} KiB")
print(f"{'ratio':14} overhead {ov['nubis-vmm'] / ov['qemu-microvm']:.2f}")
PY
