#!/bin/bash
# Measures, for N hello instances started through the standalone agent, the time
# from writing desired.json to every guest's ready line, and VMM start -> ready.
# Needs root, target/debug/{nubis-agent,nubis-vmm} and target/images/hello.
# Uses a private netns nbag-measure-PID and cgroup, removed on exit.
# Usage: node-agent/scripts/measure-launch.sh [N]
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-1}
NS=nbag-measure-$$
D=$(mktemp -d /tmp/nbag-measure.XXXX)
ip netns add $NS
cleanup() {
    set +e
    kill -9 $APID 2>/dev/null
    CG=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)/nbag-measure-$$
    for g in "$CG"/*/; do
        [ -d "$g" ] || continue
        for p in $(cat "$g/cgroup.procs"); do kill -9 "$p"; done
        for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$g" 2>/dev/null && break; sleep 0.2; done
    done
    rmdir "$CG" 2>/dev/null
    ip netns del $NS
    rm -rf "$D"
}
trap cleanup EXIT
cat > $D/agent.toml <<EOT
availability_zone = "nb-m-1a"
standalone = true
state_dir = "$D"
image_dir = "$ROOT/target/images"
vmm_binary = "$ROOT/target/debug/nubis-vmm"
[network]
bridge_address = "10.214.0.1/24"
instance_range = "10.214.0.10-10.214.0.200"
[cgroup]
parent = "nbag-measure-$$"
enforce_limits = false
EOT
nsenter --net=/run/netns/$NS -- $ROOT/target/debug/nubis-agent --config $D/agent.toml 2>$D/agent.log &
APID=$!
sleep 1
python3 - "$D" "$N" <<'EOP'
import json, os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
inst = [{"spec": {"id": f"i-m{i:05d}", "image": "hello", "vcpus": 1, "memory_mib": 64}, "desired": "running", "generation": 1} for i in range(n)]
t0 = time.time() * 1000
open(d + "/desired.json.tmp", "w").write(json.dumps({"instances": inst}))
os.rename(d + "/desired.json.tmp", d + "/desired.json")
while True:
    try:
        s = json.load(open(d + "/status.json"))
    except Exception:
        s = {"instances": []}
    ready = [i for i in s["instances"] if i.get("ready")]
    if len(ready) == n:
        break
    if time.time() * 1000 - t0 > 120000:
        print("timeout", s); sys.exit(1)
    time.sleep(0.01)
last_ready = max(i["ready_unix_ms"] for i in ready)
vmm_to_ready = sorted(i["ready_unix_ms"] - i["started_unix_ms"] for i in ready)
print(f"{n} instances: desired.json -> all ready {last_ready - t0:.0f} ms; VMM start -> ready per instance median {vmm_to_ready[len(vmm_to_ready)//2]} ms, max {vmm_to_ready[-1]} ms")
EOP
