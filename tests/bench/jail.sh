#!/usr/bin/env bash
# Jail benchmark (not a test): boots the `hello` guest N times with the VMM
# jail off (nubis-vmm as root, --no-seccomp, opening /dev/kvm itself) and on
# (the steps node-agent/src/host/jail.rs takes: /dev/kvm passed as an fd,
# own uid/gid, IPC/UTS/network/mount namespaces, pivot_root into a tmpfs
# holding bind mounts of the binary, its libraries, the kernel and an
# instance directory (host/jail_root.rs), rlimits, empty capability bounding
# set, no_new_privs, then nubis-vmm's per-thread seccomp filters),
# interleaved in one run, and prints start -> NUBIS-GUEST-READY and start -> exit after the
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
import ctypes, os, resource, select, statistics, subprocess, sys, tempfile, time

runs, kernel, vmm, mem, uid = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS = 0x04000000, 0x08000000, 0x40000000, 0x00020000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_pivot_root, MNT_DETACH = 155, 2
CMDLINE = "nubis.id=bench nubis.reset=1"
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

# What the agent's root plan binds: binary + interpreter + libraries
# (read-only), kernel (read-only, noexec), an instance directory (rw).
work = tempfile.mkdtemp(prefix="nbjail-")
os.chmod(work, 0o755)
mountpoint = os.path.join(work, "vmm-root")
instance = os.path.join(work, "instance")
os.mkdir(mountpoint)
os.mkdir(instance)
os.chown(instance, uid, uid)
ldd = subprocess.run(["ldd", vmm], capture_output=True, text=True, check=True).stdout
exec_files = [vmm] + [l.split("=>")[-1].split(" (")[0].strip() for l in ldd.splitlines()
                      if l.split("=>")[-1].split(" (")[0].strip().startswith("/")]
RO, NOEXEC = MS_RDONLY | MS_NOSUID | MS_NODEV, MS_NOEXEC

def ok(rc, what):
    if rc != 0:
        raise OSError(ctypes.get_errno(), what)

def pivot():
    ok(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "private /")
    ok(libc.mount(b"nubis-vmm-root", mountpoint.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  b"size=64k,nr_inodes=256,mode=755"), "tmpfs")
    binds = [(f, RO) for f in exec_files] + [(kernel, RO | NOEXEC)]
    for src, flags in binds:
        tgt = mountpoint + src
        os.makedirs(os.path.dirname(tgt), mode=0o755, exist_ok=True)
        os.close(os.open(tgt, os.O_CREAT | os.O_WRONLY, 0o444))
        ok(libc.mount(src.encode(), tgt.encode(), None, MS_BIND, None), "bind " + src)
        ok(libc.mount(None, tgt.encode(), None, MS_REMOUNT | MS_BIND | flags, None), "remount " + src)
    tgt = mountpoint + instance
    os.makedirs(tgt, mode=0o755, exist_ok=True)
    ok(libc.mount(instance.encode(), tgt.encode(), None, MS_BIND, None), "bind instance")
    ok(libc.mount(None, tgt.encode(), None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
       "remount instance")
    os.chdir(mountpoint)
    ok(libc.syscall(SYS_pivot_root, b".", b"."), "pivot_root")
    ok(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    ok(libc.mount(None, b"/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
       "read-only root")

def jail():
    # The same steps, in the same order, as Jail::enter in the agent.
    if libc.unshare(CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    pivot()
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
try:
    for i in range(runs):
        for jailed in (False, True):  # interleaved: machine noise hits both alike
            rows[jailed].append(one_boot(jailed))
finally:
    os.rmdir(instance)
    os.rmdir(mountpoint)
    os.rmdir(work)

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
