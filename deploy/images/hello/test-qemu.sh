#!/usr/bin/env bash
# Boots the hello guest image under QEMU microvm (KVM by default) and checks
# its whole contract (deploy/images/hello/README.md): console lines, the disk
# hash and write, ICMP echo, HTTP (several sequential connections), reset by
# HTTP and by nubis.reset=1, and garbage command-line values.
#
#   deploy/images/hello/test-qemu.sh [KERNEL]
#
# KERNEL defaults to ${NUBIS_IMAGE_DIR:-target/images}/hello/kernel.
# NUBIS_HELLO_ACCEL=tcg runs under TCG instead of KVM.
# NUBIS_HELLO_VMM=/path/to/nubis-vmm runs the same checks under nubis-vmm
# instead of QEMU (a conformance check of the VMM against this guest).
# Network traffic stays inside a network namespace this script creates
# (nbh<pid>) and removes on exit, also on failure.
# Missing KVM/QEMU/tools: prints SKIPPED and exits 0, unless
# NUBIS_REQUIRE_KVM=1, then fails.
set -uo pipefail

ns="nbh$$"
tap="nbht$$"
work_prefix=nubis-hello-test
# shellcheck source=deploy/images/hello/test-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
require curl ping python3

has_line() { grep -qxF -- "$2" "$1"; }
now_ms() { date +%s%3N; }

# Starts the VM in the namespace; sets qemu_pid; console goes to $work/NAME.log.
# boot NAME CMDLINE [smp=N] [disk=PATH] [net] [i8042]
boot() {
    local name=$1 cmdline=$2 opt smp=1 disk="" net=0 i8042=0
    shift 2
    for opt in "$@"; do
        case "$opt" in
            smp=*) smp=${opt#smp=} ;;
            disk=*) disk=${opt#disk=} ;;
            net) net=1 ;;
            i8042) i8042=1 ;;
        esac
    done
    local args=()
    if [[ -n "$vmm" ]]; then
        # nubis-vmm always has an i8042.
        args=(--kernel "$kernel" --cmdline "$cmdline" --vcpus "$smp" --memory-mib 64
            --serial "$work/$name.log" --api-socket "$work/$name.api")
        [[ -n "$disk" ]] && args+=(--disk "$disk")
        ((net)) && args+=(--net "tap=$tap")
        ip netns exec "$ns" "$vmm" "${args[@]}" >"$work/$name.vmm.log" 2>&1 &
    else
        args=(-M microvm,acpi=off -accel "$accel" -cpu "$cpu" -smp "$smp"
            -m 64 -nodefaults -no-user-config -nographic -no-reboot
            -serial "file:$work/$name.log" -monitor "unix:$work/$name.mon,server,nowait"
            -kernel "$kernel" -append "$cmdline")
        [[ -n "$disk" ]] && args+=(-device virtio-blk-device,drive=d0
            -drive "id=d0,file=$disk,format=raw,if=none")
        ((net)) && args+=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
            -device virtio-net-device,netdev=n0)
        ((i8042)) && args+=(-device i8042)
        ip netns exec "$ns" qemu-system-x86_64 "${args[@]}" >"$work/$name.qemu.log" 2>&1 &
    fi
    qemu_pid=$!
    pids+=("$qemu_pid")
}

# ctrl_alt_del NAME: QEMU monitor `sendkey`, or the nubis-vmm API.
ctrl_alt_del() {
    if [[ -n "$vmm" ]]; then
        python3 - "$work/$1.api" '{"op":"ctrl_alt_del"}' <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
sys.exit(0 if b'"ok":true' in s.recv(4096) else 1)
PY
    else
        python3 - "$work/$1.mon" "sendkey ctrl-alt-delete" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
time.sleep(0.2)
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.3)
PY
    fi
}

# wait_for FILE LINE-PREFIX TIMEOUT-S: waits until a console line starts with the prefix.
wait_for() {
    local deadline=$(($(date +%s) + $3))
    while (($(date +%s) < deadline)); do
        grep -q -- "^$2" "$1" 2>/dev/null && return 0
        sleep 0.02
    done
    return 1
}

# wait_exit PID TIMEOUT-S: waits for a process to end.
wait_exit() {
    local deadline=$(($(date +%s) + $2))
    while (($(date +%s) < deadline)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}

ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
ip netns exec "$ns" ip addr add 10.0.0.1/24 dev "$tap"
ip netns exec "$ns" ip link set "$tap" up

# ---- 1: disk + network + 2 CPUs ----
id="i-hello-$$"
disk="$work/disk.img"
python3 - "$disk" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    f.write(os.urandom(512))
    f.truncate(4 << 20)
PY
want_sha=$(head -c 512 "$disk" | sha256sum | cut -d' ' -f1)
log="$work/main.log"
t0=$(now_ms)
boot main "nubis.id=$id ip=10.0.0.2/24 gw=10.0.0.1 nubis.disk_write=1" smp=2 i8042 "disk=$disk" net
main_pid=$qemu_pid
if wait_for "$log" "NUBIS-GUEST-READY" 30; then
    ok "ready line after $(($(now_ms) - t0)) ms (VMM start included)"
else
    bad "no ready line in 30 s"
    cat "$log" "$work"/main.*.log
fi
check "ready line carries the id" has_line "$log" "NUBIS-GUEST-READY $id"
check "disk line: sector 0 hash and capacity" \
    has_line "$log" "NUBIS-DISK sector0-sha256=$want_sha capacity-sectors=8192"
check "disk write line" has_line "$log" "NUBIS-DISK-WRITTEN sector=1"
check "net line" grep -q "^NUBIS-NET ip=10.0.0.2/24" "$log"
check "2 CPUs from the MP table" has_line "$log" "NUBIS-CPUS 2"
check "no error lines" bash -c "! grep -q '^NUBIS-ERROR' '$log'"
sector1_ok() {
    python3 - "$disk" "$id" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()[512:1024]
want = ("NUBIS-DISK-WRITE %s\n" % sys.argv[2]).encode().ljust(512, b"\0")
sys.exit(0 if data == want else 1)
PY
}
check "sector 1 holds the write pattern" sector1_ok

check "ping" ip netns exec "$ns" ping -c 3 -i 0.2 -W 5 -q 10.0.0.2
t0=$(now_ms)
body=$(ip netns exec "$ns" curl -sS -m 10 http://10.0.0.2/)
took=$(($(now_ms) - t0))
if [[ "$body" == "NUBIS-HELLO $id" ]]; then ok "GET / in $took ms"; else bad "GET / answered '$body'"; fi
good=0
for _ in $(seq 20); do
    [[ $(ip netns exec "$ns" curl -sS -m 10 http://10.0.0.2/) == "NUBIS-HELLO $id" ]] && good=$((good + 1))
done
check "20 sequential connections ($good good)" test "$good" -eq 20
concurrent() {
    local i out=()
    for i in 1 2 3 4; do
        ip netns exec "$ns" curl -sS -m 10 -o "$work/par.$i" http://10.0.0.2/ &
        out+=($!)
    done
    wait "${out[@]}" || return 1
    for i in 1 2 3 4; do
        [[ $(cat "$work/par.$i") == "NUBIS-HELLO $id" ]] || return 1
    done
}
check "4 concurrent connections" concurrent
code=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' -m 10 http://10.0.0.2/nope)
check "GET /nope is 404" test "$code" = 404
code=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' -m 10 -X POST http://10.0.0.2/)
check "POST / is 405" test "$code" = 405
check "garbage request does not stop the server" bash -c \
    "printf 'NOT HTTP\r\n\r\n' | ip netns exec $ns timeout 10 python3 -c '
import socket,sys
s=socket.create_connection((\"10.0.0.2\",80),5); s.sendall(sys.stdin.buffer.read()); print(s.recv(100))' | grep -q '400 Bad Request' &&
     test \"\$(ip netns exec $ns curl -sS -m 10 http://10.0.0.2/)\" = 'NUBIS-HELLO $id'"
code=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' -m 10 http://10.0.0.2/reset)
check "GET /reset is 200" test "$code" = 200
check "VM ends after GET /reset" wait_exit "$main_pid" 20
check "reset line" has_line "$log" "NUBIS-RESET"

# ---- 2: Ctrl-Alt-Del on the i8042 while serving HTTP ----
log="$work/cad.log"
boot cad "nubis.id=i-cad ip=10.0.0.2/24" i8042 net
cad_pid=$qemu_pid
if wait_for "$log" "NUBIS-GUEST-READY" 30; then
    check "serving before Ctrl-Alt-Del" test "$(ip netns exec "$ns" curl -sS -m 10 http://10.0.0.2/)" = "NUBIS-HELLO i-cad"
    check "Ctrl-Alt-Del sent" ctrl_alt_del cad
    check "Ctrl-Alt-Del ends the VM" wait_exit "$cad_pid" 20
    check "Ctrl-Alt-Del line" has_line "$log" "NUBIS-CTRL-ALT-DEL"
    check "reset line after Ctrl-Alt-Del" has_line "$log" "NUBIS-RESET"
else
    bad "no ready line in 30 s (Ctrl-Alt-Del case)"
fi

# ---- 3: nubis.reset=1, garbage values, no devices; under QEMU without an
#      i8042, so the reset is the triple fault ----
log="$work/reset.log"
boot reset "nubis.id=i-r ip=300.1.1.1/24 gw=zzz nubis.disk_write=maybe nubis.reset=1 virtio_mmio.device=junk"
check "nubis.reset=1 ends the VM" wait_exit "$qemu_pid" 30
check "ready before reset" has_line "$log" "NUBIS-GUEST-READY i-r"
check "reset line" has_line "$log" "NUBIS-RESET"
check "bad ip reported" grep -q "^NUBIS-ERROR bad ip=300.1.1.1/24 " "$log"
check "bad gw reported" grep -q "^NUBIS-ERROR bad gw=zzz " "$log"
check "bad disk_write reported" grep -q "^NUBIS-ERROR bad nubis.disk_write=maybe " "$log"
check "bad device reported" grep -q "^NUBIS-ERROR bad virtio_mmio.device=junk " "$log"
check "one CPU" has_line "$log" "NUBIS-CPUS 1"
order_ok() {
    local ready reset
    ready=$(grep -n "^NUBIS-GUEST-READY" "$log" | cut -d: -f1)
    reset=$(grep -n "^NUBIS-RESET" "$log" | cut -d: -f1)
    [[ -n "$ready" && -n "$reset" && "$ready" -lt "$reset" ]]
}
check "reset comes after the ready line" order_ok

# ---- 4: bad id falls back to unknown ----
log="$work/badid.log"
boot badid "nubis.id=\$(rm) nubis.reset=1"
check "bad id VM ends" wait_exit "$qemu_pid" 30
check "bad id reported" grep -q '^NUBIS-ERROR bad nubis.id=$(rm) ' "$log"
check "bad id falls back to unknown" has_line "$log" "NUBIS-GUEST-READY unknown"

finish
