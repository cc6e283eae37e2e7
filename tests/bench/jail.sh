#!/usr/bin/env bash
# Jail benchmark (not a test): boots the `hello` guest N times with the VMM
# jail off (nubis-vmm as root, --no-seccomp, opening /dev/kvm itself) and on
# (the steps node-agent/src/host/jail.rs takes: /dev/kvm passed as an fd,
# own uid/gid, IPC/UTS namespaces, rlimits, empty capability bounding set,
# no_new_privs, then nubis-vmm's per-thread seccomp filters), interleaved in
# one run, and prints start -> NUBIS-GUEST-READY and start -> exit after the
# guest's reset (min / median / max) and the added median.
#
# The agent-side preparation (chown of the instance's files, opening /dev/kvm
# and attaching the TAP) is a handful of syscalls in the agent and is not
# part of this figure; the agent launch path is measured by tests/bench/launch.sh.
#
# Usage: tests/bench/jail.sh [N]        (default N=30; must run as root)
# Env:   NUBIS_VMM (default target/release/nubis-vmm, built if missing),
#        NUBIS_IMAGE_DIR (default target/images), MEM_MIB (default 64),
#        JAIL_UID (default 990000).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
runs="${1:-30}"
images="${NUBIS_IMAGE_DIR:-$root/target/images}"
kernel="$images/hello/kernel"
vmm="${NUBIS_VMM:-$root/target/release/nubis-vmm}"
mem="${MEM_MIB:-64}"
uid="${JAIL_UID:-990000}"

[ "$(id -u)" = 0 ] || { echo "run as root (the jail switches uid)" >&2; exit 1; }
[ -f "$kernel" ] || { echo "missing $kernel (run deploy/images/build.sh hello)" >&2; exit 1; }
if [ ! -x "$vmm" ]; then
    (cd "$root" && cargo build --release -p nubis-vmm >&2)
fi

exec python3 - "$runs" "$kernel" "$vmm" "$mem" "$uid" << 'PY'
import ctypes, os, resource, select, statistics, subprocess, sys, time

runs, kernel, vmm, mem, uid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUTS, CLONE_NEWIPC = 0x04000000, 0x08000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
CMDLINE = "nubis.id=bench nubis.reset=1"

def jail():
    # The same steps, in the same order, as Jail::enter in the agent.
    if libc.unshare(CLONE_NEWIPC | CLONE_NEWUTS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    for res, n in ((resource.RLIMIT_NOFILE, 1024), (resource.RLIMIT_FSIZE, 64 << 20),
                   (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 512)):
        resource.setrlimit(res, (n, n))
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "no_new_privs")

def one_boot(jailed):
    t0 = time.monotonic()
    if jailed:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        argv = [vmm, "--kernel", kernel, "--memory-mib", str(mem), "--cmdline", CMDLINE,
                "--kvm-fd", str(kvm)]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, pass_fds=(kvm,), preexec_fn=jail)
        os.close(kvm)
    else:
        argv = [vmm, "--kernel", kernel, "--memory-mib", str(mem), "--cmdline", CMDLINE,
                "--no-seccomp"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
    fd = p.stdout.fileno()
    buf, ready = b"", None
    deadline = t0 + 120
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            p.kill(); p.wait()
            raise RuntimeError(f"timeout; output so far {buf[-200:]!r}")
        chunk = os.read(fd, 65536)
        now = time.monotonic()
        if not chunk:
            break
        buf += chunk
        if ready is None and b"NUBIS-GUEST-READY" in buf:
            ready = now - t0
    rc = p.wait()
    end = time.monotonic() - t0
    if ready is None or rc != 0:
        raise RuntimeError(f"jailed={jailed}: status {rc}, output {buf[-300:]!r}")
    return ready, end

rows = {False: [], True: []}
for i in range(runs):
    for jailed in (False, True):  # interleaved: machine noise hits both alike
        rows[jailed].append(one_boot(jailed))

print(f"hello guest, {mem} MiB, 1 vCPU, {runs} boots each (ms: min / median / max)")
print(f"{'':12} {'ready line':>26} {'exit after reset':>26}")
med = {}
for jailed, name in ((False, "jail off"), (True, "jail on")):
    cols = []
    for k in range(2):
        xs = [r[k] * 1000 for r in rows[jailed]]
        med[(jailed, k)] = statistics.median(xs)
        cols.append(f"{min(xs):7.1f} /{statistics.median(xs):7.1f} /{max(xs):7.1f}")
    print(f"{name:12} " + " ".join(f"{c:>26}" for c in cols))
print(f"{'added p50':12} " + " ".join(
    f"{med[(True, k)] - med[(False, k)]:>26.2f}" for k in range(2)))
PY
