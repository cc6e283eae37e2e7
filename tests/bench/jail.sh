#!/usr/bin/env bash
# Jail benchmark (not a test): boots the `hello` guest N times with the VMM
# jail off and N times on, in pairs, and prints the added launch latency.
# The work is node-agent/examples/jail_bench.rs, which calls the agent's own
# code: "on" is what the agent does for a jailed VMM -- jail::prepare (uid,
# chown of the instance's files, /dev/kvm opened for the VMM, the root plan),
# then pidns::spawn: clone3(CLONE_NEWPID | CLONE_PIDFD) so that the VMM is pid
# 1 of its own pid namespace, and in the child Jail::enter (IPC/UTS/network/
# mount namespaces, pivot_root into a tmpfs of bind mounts, rlimits, empty
# capability bounding set, own uid/gid, no_new_privs), exec, then nubis-vmm's
# per-thread seccomp filters. "Off" is a plain clone + exec in the agent's
# namespaces, as root, with --no-seccomp, the VMM opening /dev/kvm itself.
# Each pair runs one right after the other (which goes first alternates), so
# that machine noise hits both alike. Prints start -> NUBIS-GUEST-READY (the
# guest's console on the VMM's stdout, a pipe) and start -> exit after the
# guest's reset, min / median / max per kind, and -- the figure to quote --
# the median of the N paired differences (on - off) with its quartiles and a
# bootstrap 95% confidence interval.
#
# Usage: tests/bench/jail.sh [N]        (default N=200 pairs; must run as root)
# Env:   NUBIS_VMM (default target/release/nubis-vmm, built if missing),
#        NUBIS_IMAGE_DIR (default target/images). The bench driver itself is
#        built in the dev profile (it only prepares and clones; the VMM is
#        the release build).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
pairs="${1:-200}"
images="${NUBIS_IMAGE_DIR:-$root/target/images}"
kernel="$images/hello/kernel"
vmm="${NUBIS_VMM:-$root/target/release/nubis-vmm}"

[ "$(id -u)" = 0 ] || { echo "run as root (the jail switches uid)" >&2; exit 1; }
[ -f "$kernel" ] || { echo "missing $kernel (run deploy/images/build.sh hello)" >&2; exit 1; }
if [ ! -x "$vmm" ]; then
    (cd "$root" && cargo build --release -p nubis-vmm >&2)
fi
(cd "$root" && cargo build -p nubis-agent --example jail_bench >&2)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/debug/examples/jail_bench" "$vmm" "$kernel" "$pairs"
