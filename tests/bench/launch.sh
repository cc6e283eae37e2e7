#!/usr/bin/env bash
# Launch-latency benchmark (not part of the test suite; results go to
# docs/benchmarks.md, section "Launch latency").
#
#   tests/bench/launch.sh [--single N] [--burst N] [--no-legacy] [--no-build] [--keep]
#
# Measures, on a local cluster of release binaries (nubis-testcluster: etcd, a
# control plane, three agents in their own network namespaces):
#   1. reference: the hello guest's own boot time — `nubis-vmm` started directly
#      (same kernel, 64 MiB, an 8 MiB disk) until `NUBIS-GUEST-READY` appears on
#      its serial log (polled every 1 ms); N runs, p50;
#   2. single: `nubis instances run --count 1 --wait --poll-interval 10ms`
#      (RunInstances until DescribeInstanceStatus says the guest is ready), N
#      launches one after another (each terminated afterwards); p50/p90, and
#      p50 minus the reference p50 = what Nubis adds; unless --no-legacy,
#      alternating with N launches of a second account whose default VPC was
#      deleted, so its instances take the agent's legacy bridge path (no
#      VPC: the data plane before issue 12): the VPC launch's p50 minus the
#      legacy launch's p50 = what the VPC data plane adds, side by side;
#   3. burst: one `nubis instances run --count N --wait` call (the CLI's
#      default --poll-interval, 50 ms; default N = 50); instances/s. A refused call (e.g. the control
#      plane's per-call cap) is reported as such, not as a time.
# Then a per-phase breakdown (p50 over the launches) from the agents'
# `launch timeline` and `ready reported` log lines and the CLI's start/end:
#   before agent = CLI start, connect, RunInstances (placement), assignment
#   stream to the agent; agent phases (queued, dir, image, disk, net, tap,
#   cgroup, spawn, running, first_byte, ready); report = ready seen -> the
#   control plane accepted ReportInstance; CLI notices = -> the CLI exited.
# Run as root; prints a self-explanatory Markdown report on stdout (progress
# on stderr). --keep keeps the cluster directory (logs) and prints its path.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
single=20 burst=50 build=1 keep=0 legacy=1
while (($#)); do
    case $1 in
        --single) single=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --no-legacy) legacy=0; shift ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--single N] [--burst N] [--no-legacy] [--no-build] [--keep]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "launch.sh: run as root" >&2; exit 2; }

rel="$root/target/release"
if ((build)); then
    # The measured path runs release binaries; the harness that starts them
    # (nubis-testcluster) is not measured and may be a debug build.
    (cd "$root" && cargo build --release -q -p nubis-control-plane -p nubis-agent -p nubis-vmm \
        -p nubis-cli && cargo build -q -p nubis-tests --bin nubis-testcluster)
    "$root/deploy/images/build.sh" hello >/dev/null
fi
image_dir=${NUBIS_IMAGE_DIR:-$root/target/images}
kernel="$image_dir/hello/kernel"
work=$(mktemp -d /tmp/nbt-bench.XXXXXX)
# The agents' jailed VMMs run as unprivileged uids and need search
# permission on the path to their instance directories under it.
chmod o+x "$work"
cluster_pid=""
cleanup() {
    if [[ -n $cluster_pid ]]; then
        kill -TERM "$cluster_pid" 2>/dev/null || true
        wait "$cluster_pid" 2>/dev/null || true
    fi
    if ((keep)); then
        echo "launch.sh: kept $work (cluster state and logs under it)" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

# ------------------------------------------------------------ 1. reference
echo "reference: direct nubis-vmm boot of hello to its ready line ($single runs)" >&2
python3 - "$rel/nubis-vmm" "$kernel" "$work" "$single" >"$work/ref.txt" <<'EOF'
import os, subprocess, sys, time
vmm, kernel, work, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
disk, serial = f"{work}/ref-disk.raw", f"{work}/ref-serial.log"
for i in range(n):
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    open(serial, "w").close()
    t0 = time.monotonic()
    p = subprocess.Popen([vmm, "--kernel", kernel, "--cmdline", f"nubis.id=i-bench{i}",
                          "--memory-mib", "64", "--disk", disk, "--serial", serial],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        with open(serial, "rb") as f:
            if b"NUBIS-GUEST-READY" in f.read():
                break
        if p.poll() is not None:
            sys.exit(f"nubis-vmm exited early ({p.returncode}): {open(serial).read()}")
        time.sleep(0.001)
    t1 = time.monotonic()
    p.terminate()
    p.wait()
    print(f"{(t1 - t0) * 1000:.1f}")
EOF

# ------------------------------------------------------------ cluster
per_host=$(((burst + 2) / 3 + 1))
NUBIS_KEEP_CLUSTER=$keep NUBIS_BIN_DIR="$rel" NUBIS_CLUSTER_DIR="$work" \
    "$root/target/debug/nubis-testcluster" up --json \
    --per-host "$per_host" --no-ec2 >"$work/cluster.json" 2>"$work/cluster.err" &
cluster_pid=$!
until [[ -s $work/cluster.json ]]; do
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.err" >&2; exit 1; }
    sleep 0.2
done
eval "$(python3 - "$work/cluster.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"export NUBIS_ENDPOINT={c['grpc_endpoint']}")
print(f"export NUBIS_ACCESS_KEY_ID={c['tenant']['access_key_id']}")
print(f"export NUBIS_SECRET_ACCESS_KEY={c['tenant']['secret_access_key']}")
print(f"image={c['hello_image_id']}")
print(f"admin_key={c['admin']['access_key_id']}")
print(f"admin_secret={c['admin']['secret_access_key']}")
print(f"logs={c['logs']}")
EOF
)"
export NUBIS_CONFIG="$work/none.toml"

# ------------------------------------------------------------ 2. single, 3. burst
echo "single: $single launches, RunInstances -> ready; then burst: $burst in one call" >&2
NUBIS_ADMIN_KEY=$admin_key NUBIS_ADMIN_SECRET=$admin_secret \
python3 - "$rel/nubis" "$image" "$single" "$burst" "$work" "$legacy" <<'EOF'
import json, os, subprocess, sys, time
nubis, image, single, burst, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
legacy = sys.argv[6] == "1"
def cli(*args, timeout, env=None):
    return subprocess.run([nubis, *args], capture_output=True, text=True, timeout=timeout, env=env)
def as_account(key, secret):
    return dict(os.environ, NUBIS_ACCESS_KEY_ID=key, NUBIS_SECRET_ACCESS_KEY=secret)
def ok(out, what):
    if out.returncode != 0:
        sys.exit(f"{what} failed: {out.stderr.strip()}")
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else None
res = {}
lenv = None
if legacy:
    # A second account without a VPC: its default VPC created and deleted
    # (subnets, gateway), so RunInstances without a subnet takes the
    # legacy bridge (docs/networking.md).
    admin = as_account(os.environ["NUBIS_ADMIN_KEY"], os.environ["NUBIS_ADMIN_SECRET"])
    acct = ok(cli("admin", "accounts", "create", "bench-legacy", "-o", "json", timeout=60, env=admin),
              "create account")
    lenv = as_account(acct["access_key_id"], acct["secret_access_key"])
    for v in ok(cli("vpcs", "list", "-o", "json", timeout=60, env=lenv), "vpcs list")["vpcs"]:
        for sn in ok(cli("subnets", "list", "-o", "json", timeout=60, env=lenv), "subnets list")["subnets"]:
            if sn["vpc_id"] == v["vpc_id"]:
                ok(cli("subnets", "delete", sn["subnet_id"], timeout=60, env=lenv), "subnet delete")
        gws = ok(cli("internet-gateways", "list", "-o", "json", timeout=60, env=lenv), "gateways list")
        for g in gws["internet_gateways"]:
            if g["vpc_id"] == v["vpc_id"]:
                ok(cli("internet-gateways", "detach", g["internet_gateway_id"], v["vpc_id"],
                       timeout=60, env=lenv), "gateway detach")
                ok(cli("internet-gateways", "delete", g["internet_gateway_id"], timeout=60, env=lenv),
                   "gateway delete")
        ok(cli("vpcs", "delete", v["vpc_id"], timeout=60, env=lenv), "vpc delete")
    res["legacy"] = []
runs = []
kinds = [("vpc", None, runs)] + ([("legacy", lenv, res.get("legacy"))] if legacy else [])
for i in range(single):
    # Alternate which kind goes first.
    for kind, env, dest in (kinds if i % 2 == 0 else kinds[::-1]):
        t0 = time.time()
        out = cli("instances", "run", "--image", image, "--type", "t3.nano", "--wait",
                  "--poll-interval", "10ms", "--timeout", "120s", "-o", "json", timeout=180, env=env)
        t1 = time.time()
        if out.returncode != 0:
            sys.exit(f"single {kind} launch {i} failed: {out.stderr.strip()}")
        inst = json.loads(out.stdout)["instances"][0]
        dest.append({"id": inst["instance_id"], "t0_ms": t0 * 1000, "t1_ms": t1 * 1000,
                     "vpc": inst.get("vpc_id", "")})
        cli("instances", "terminate", inst["instance_id"], "--wait", "--timeout", "60s", timeout=90,
            env=env)
res["single"] = runs
t0 = time.time()
out = cli("instances", "run", "--image", image, "--type", "t3.nano", "--count", str(burst), "--wait",
          "--poll-interval", "50ms", "--timeout", "300s", "-o", "json", timeout=400)
t1 = time.time()
if out.returncode == 0:
    ids = [x["instance_id"] for x in json.loads(out.stdout)["instances"]]
    res["burst"] = {"ids": ids, "t0_ms": t0 * 1000, "t1_ms": t1 * 1000}
else:
    err = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    res["burst_error"] = (err or out.stderr.strip().splitlines()[-1:] or ["?"])[0]
    res["burst_exit"] = out.returncode
json.dump(res, open(f"{work}/runs.json", "w"))
EOF
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ report
python3 - "$work" "$single" "$burst" "$load_before" "$load_after" "$started" "$commit" "$logs" <<'EOF'
import glob, json, re, sys
work, single, burst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load_before, load_after, started, commit, logs = sys.argv[4:9]

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int((len(xs) - 1) * p / 100 + 0.5))] if xs else float("nan")

ref = [float(l) for l in open(f"{work}/ref.txt") if l.strip()]
runs = json.load(open(f"{work}/runs.json"))

# Agent log lines: `launch timeline` and `ready reported`, by instance.
timeline, reported = {}, {}
for path in glob.glob(f"{logs}/agent-*.log"):
    for line in open(path, errors="replace"):
        m = re.search(r"instance=(i-[0-9a-f]+)", line)
        if not m:
            continue
        iid = m.group(1)
        if "launch timeline" in line:
            a = re.search(r"assigned_unix_ms=(\d+)", line)
            ph = re.search(r'phases="([^"]*)"', line)
            if a and ph:
                phases = [(k, float(v)) for k, v in (kv.split("=") for kv in ph.group(1).split())]
                timeline[iid] = {"assigned": int(a.group(1)), "phases": phases}
        elif "ready reported" in line:
            r = re.search(r"reported_unix_ms=(\d+)", line)
            rd = re.search(r"ready_unix_ms=(\d+)", line)
            if r and rd:
                reported[iid] = (int(rd.group(1)), int(r.group(1)))

ORDER = ["before agent", "queued", "dir", "image", "disk", "net", "tap", "cgroup", "spawn",
         "running", "first_byte", "ready", "report", "CLI notices"]
LABEL = {
    "before agent": "CLI start + connect + RunInstances (placement) + assignment to the agent",
    "queued": "agent: waiting for a launch slot",
    "dir": "agent: instance dir + spec.json (synced)",
    "image": "agent: image manifest + checksums (cached by file identity)",
    "disk": "agent: root disk (blank, sparse)",
    "net": "agent: bridge check + address allocation (net.json synced)",
    "tap": "agent: TAP create + attach + up (ioctls)",
    "cgroup": "agent: cgroup + limits",
    "spawn": "agent: VMM fork/exec (+ vmm.json)",
    "running": "VMM reports vCPUs running (API socket)",
    "first_byte": "guest's first console byte",
    "ready": "guest boot to its ready line, seen by the agent",
    "report": "agent -> control plane ReportInstance(ready) accepted",
    "CLI notices": "CLI's next DescribeInstanceStatus poll sees it, exits",
}

def breakdown(items):
    """items: list of (id, t0_ms, t1_ms or None); returns {phase: [ms...]}."""
    out = {k: [] for k in ORDER}
    for iid, t0, t1 in items:
        tl = timeline.get(iid)
        if not tl:
            continue
        out["before agent"].append(tl["assigned"] - t0)
        for k, v in tl["phases"]:
            out.setdefault(k, []).append(v)
        if iid in reported:
            ready, rep = reported[iid]
            out["report"].append(rep - ready)
            if t1 is not None:
                out["CLI notices"].append(t1 - rep)
    return out

def rows(b, n):
    lines = []
    for k in ORDER:
        xs = b.get(k, [])
        if not xs:
            continue
        lines.append(f"| {k} | {LABEL[k]} | {pct(xs, 50):.1f} | {max(xs):.1f} | {len(xs)}/{n} |")
    return lines

ref_p50 = pct(ref, 50)
s = [r["t1_ms"] - r["t0_ms"] for r in runs["single"]]
s_p50, s_p90 = pct(s, 50), pct(s, 90)
print(f"## Launch latency run {started} (commit {commit})\n")
print(f"Load average (1/5/15 min) before: {load_before}; after: {load_after}.\n")
print("| measurement | value |\n|---|---|")
print(f"| hello guest's own boot (direct nubis-vmm, to ready line), p50 of {len(ref)} | {ref_p50:.0f} ms |")
print(f"| RunInstances -> ready through the CLI, single instance, p50 of {len(s)} | {s_p50:.0f} ms (p90 {s_p90:.0f} ms) |")
print(f"| what Nubis adds beyond the guest's boot (p50 - reference p50) | {s_p50 - ref_p50:.0f} ms (goal < 150 ms) |")
if runs.get("legacy"):
    l = [r["t1_ms"] - r["t0_ms"] for r in runs["legacy"]]
    l_p50, l_p90 = pct(l, 50), pct(l, 90)
    vpcs = sorted({r["vpc"] or "none" for r in runs["legacy"]})
    print(f"| same, legacy bridge (an account without a VPC; instances' vpc: {', '.join(vpcs)}), p50 of {len(l)}, alternating | {l_p50:.0f} ms (p90 {l_p90:.0f} ms) |")
    print(f"| what the VPC data plane adds (VPC p50 - legacy p50) | {s_p50 - l_p50:.0f} ms (goal <= 20 ms) |")
if "burst" in runs:
    b = runs["burst"]
    ms = b["t1_ms"] - b["t0_ms"]
    rate = len(b["ids"]) * 1000 / ms
    print(f"| burst of {len(b['ids'])} in one RunInstances, until all ready | {ms:.0f} ms = {rate:.1f} instances/s (goal >= 20/s) |")
elif runs.get("burst_exit") == 9:
    print(f"| burst of {burst} in one RunInstances | FAILED while waiting (CLI exit 9): {runs['burst_error']} |")
else:
    print(f"| burst of {burst} in one RunInstances | REFUSED (CLI exit {runs.get('burst_exit')}; "
          f"e.g. the control plane's per-call cap): {runs['burst_error']} |")

print(f"\nSingle launch, per phase (ms; p50 and max over {len(s)} launches; the agent "
      "phases are consecutive, so they add up to the agent's share):\n")
print("| phase | what | p50 | max | seen |\n|---|---|---|---|---|")
for l in rows(breakdown([(r["id"], r["t0_ms"], r["t1_ms"]) for r in runs["single"]]), len(s)):
    print(l)
if runs.get("legacy"):
    print(f"\nSingle launch on the legacy bridge, per phase (ms; p50 and max over {len(runs['legacy'])}):\n")
    print("| phase | what | p50 | max | seen |\n|---|---|---|---|---|")
    for l in rows(breakdown([(r["id"], r["t0_ms"], r["t1_ms"]) for r in runs["legacy"]]),
                  len(runs["legacy"])):
        print(l)
if "burst" in runs:
    b = runs["burst"]
    items = [(i, b["t0_ms"], None) for i in b["ids"]]
    print(f"\nBurst of {len(b['ids'])}, per phase over its instances (ms; 'before agent' spreads "
          "as assignments reach the three agents):\n")
    print("| phase | what | p50 | max | seen |\n|---|---|---|---|---|")
    for l in rows(breakdown(items), len(b["ids"])):
        print(l)
    rep = [reported[i][1] - b["t0_ms"] for i in b["ids"] if i in reported]
    asg = [timeline[i]["assigned"] - b["t0_ms"] for i in b["ids"] if i in timeline]
    if rep and asg:
        print(f"\nBurst timing from the CLI's start: first assignment at {min(asg):.0f} ms, last at "
              f"{max(asg):.0f} ms; first ready reported at {min(rep):.0f} ms, last at {max(rep):.0f} ms; "
              f"CLI exited at {b['t1_ms'] - b['t0_ms']:.0f} ms.")
EOF
