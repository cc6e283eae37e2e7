#!/usr/bin/env bash
# Agent sampling-overhead benchmark (not part of the test suite; results go
# to docs/benchmarks.md, section "Metrics sampling").
#
#   tests/bench/metrics-sampling.sh [--instances N] [--window SECS] [--debug] [--no-build] [--keep]
#
# --debug measures debug binaries (an upper bound: unoptimised code), default release.
#
# On a local cluster of release binaries (nubis-testcluster: etcd, a control
# plane, three agents in their own network namespaces) runs N hello
# instances (default 100, idle after boot), lets them settle, then over a
# window (default 120 s) measures:
#   - the CPU time (utime+stime, /proc/<pid>/stat) of the three agents
#     together, as a percentage of one core: an upper bound of the sampling
#     overhead (it includes the agents' heartbeats and everything else they
#     do while nothing changes);
#   - each agent's own account of its sampling passes, from its Prometheus
#     /metrics: passes, instances per pass, wall time per pass
#     (nubis_agent_sampling_duration_seconds sum/count over the window).
# Run as root; prints a Markdown report on stdout (progress on stderr).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
instances=100 window=120 build=1 keep=0 profile=release
while (($#)); do
    case $1 in
        --instances) instances=$2; shift 2 ;;
        --window) window=$2; shift 2 ;;
        --debug) profile=debug; shift ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--instances N] [--window SECS] [--debug] [--no-build] [--keep]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "metrics-sampling.sh: run as root" >&2; exit 2; }

rel="$root/target/$profile"
release=()
[[ $profile == release ]] && release=(--release)
if ((build)); then
    (cd "$root" && cargo build "${release[@]}" -q -p nubis-control-plane -p nubis-agent -p nubis-vmm \
        -p nubis-cli && cargo build -q -p nubis-tests --bin nubis-testcluster)
    "$root/deploy/images/build.sh" hello >/dev/null
fi
work=$(mktemp -d /tmp/nbt-msbench.XXXXXX)
cluster_pid=""
cleanup() {
    if [[ -n $cluster_pid ]]; then
        kill -TERM "$cluster_pid" 2>/dev/null || true
        wait "$cluster_pid" 2>/dev/null || true
    fi
    if ((keep)); then
        echo "metrics-sampling.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

per_host=$(((instances + 2) / 3 + 2))
NUBIS_KEEP_CLUSTER=$keep NUBIS_BIN_DIR="$rel" NUBIS_CLUSTER_DIR="$work" \
    "$root/target/debug/nubis-testcluster" up --json \
    --per-host "$per_host" --no-ec2 >"$work/cluster.json" 2>"$work/cluster.err" &
cluster_pid=$!
until [[ -s $work/cluster.json ]]; do
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.err" >&2; exit 1; }
    sleep 0.2
done
eval "$(python3 - "$work/cluster.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"export NUBIS_ENDPOINT={c['grpc_endpoint']}")
print(f"export NUBIS_ACCESS_KEY_ID={c['tenant']['access_key_id']}")
print(f"export NUBIS_SECRET_ACCESS_KEY={c['tenant']['secret_access_key']}")
print(f"image={c['hello_image_id']}")
PY
)"
export NUBIS_CONFIG="$work/none.toml"

echo "launching $instances hello instances" >&2
left=$instances
while ((left > 0)); do
    n=$((left > 50 ? 50 : left))
    "$rel/nubis" instances run --image "$image" --type t3.nano --count "$n" --wait \
        --timeout 600s -o json >/dev/null
    left=$((left - n))
done
echo "settling 30 s" >&2
sleep 30

python3 - "$work" "$window" "$instances" "$profile" <<'PY'
import glob, os, socket, sys, time
work, window, instances = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
socks = sorted(glob.glob(f"{work}/**/metrics.sock", recursive=True))
pids = []
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if cmd and cmd[0].endswith(b"nubis-agent") and any(work.encode() in a for a in cmd):
        pids.append(int(p))
if len(pids) != 3 or len(socks) != 3:
    sys.exit(f"expected 3 agents and 3 metrics sockets, found {pids} {socks}")
def ticks(pid):
    s = open(f"/proc/{pid}/stat").read()
    f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12])
def scrape(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    out = {}
    for line in data.decode().split("\r\n\r\n", 1)[1].splitlines():
        if line.startswith(("nubis_agent_sampling_duration_seconds_sum", "nubis_agent_sampling_duration_seconds_count", "nubis_agent_sampled_instances")):
            k, v = line.rsplit(" ", 1)
            out[k.split("{")[0]] = float(v)
    return out
t0, c0, m0 = time.monotonic(), sum(ticks(p) for p in pids), [scrape(s) for s in socks]
time.sleep(window)
t1, c1, m1 = time.monotonic(), sum(ticks(p) for p in pids), [scrape(s) for s in socks]
cpu = (c1 - c0) / hz
el = t1 - t0
passes = sum(b["nubis_agent_sampling_duration_seconds_count"] - a["nubis_agent_sampling_duration_seconds_count"] for a, b in zip(m0, m1))
wall = sum(b["nubis_agent_sampling_duration_seconds_sum"] - a["nubis_agent_sampling_duration_seconds_sum"] for a, b in zip(m0, m1))
sampled = sum(b["nubis_agent_sampled_instances"] for b in m1)
load = open("/proc/loadavg").read().split()[:3]
print(f"| binaries | {sys.argv[4]} |")
print(f"| instances running (sampled at the end) | {instances} ({sampled:.0f}) |")
print(f"| window | {el:.1f} s |")
print(f"| CPU time of the 3 agents | {cpu:.2f} s = **{100 * cpu / el:.2f} % of one core** |")
print(f"| sampling passes (all agents) | {passes:.0f} |")
print(f"| wall time per pass (mean) | {1000 * wall / max(passes, 1):.1f} ms |")
print(f"| load average at the end | {' '.join(load)} |")
PY
