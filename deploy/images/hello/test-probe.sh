#!/usr/bin/env bash
# Boots hello guests on one bridge and checks the probe and stream test
# modes (deploy/images/hello/README.md, "User data: probe and stream
# modes"): guest B gets `nubis-probe` / `nubis-stream` lines as user data and
# originates traffic to guest A (ICMP, HTTP, a refused port, GET /stream,
# cut and restored by an nftables rule), to an address behind its gateway (a
# listener in the namespace), and to an address nobody answers; guests C, D
# and E stream from a listener that closes, one that resets, and a closed port.
#
#   deploy/images/hello/test-probe.sh [KERNEL]
#
# KERNEL defaults to ${NUBIS_IMAGE_DIR:-target/images}/hello/kernel.
# NUBIS_HELLO_ACCEL=tcg runs under TCG instead of KVM.
# NUBIS_HELLO_VMM=/path/to/nubis-vmm runs the guests under nubis-vmm (its own
# metadata service, --metadata-file) instead of QEMU (a metadata responder
# in the namespace). SHOW_LOGS=1 prints the console logs also on success.
# Everything runs inside a network namespace this script creates (nbp<pid>)
# and removes on exit, also on failure. Guest F fetches GET /bulk from A
# (nubis-bulk); D and E also try it against a server without a length and a
# closed port.
# Missing KVM/QEMU/tools: prints SKIPPED and exits 0, unless
# NUBIS_REQUIRE_KVM=1, then fails.
set -uo pipefail

ns="nbp$$"
br="nbpbr$$"
work_prefix=nubis-hello-probe
# shellcheck source=deploy/images/hello/test-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
require nft ping python3

# wait_line FILE ERE TIMEOUT-S: waits until a console line matches the regex.
wait_line() { wait_until "$3" grep -Eq -- "$2" "$1"; }
# last_bytes FILE: bytes= of the last NUBIS-STREAM line.
last_bytes() { grep '^NUBIS-STREAM ' "$1" | tail -n1 | sed -n 's/.* bytes=\([0-9]*\) .*/\1/p'; }
# lines FILE: how many lines FILE has.
lines() { wc -l <"$1"; }

# boot NAME TAP MAC CMDLINE [USER-DATA-FILE]: starts a VM on TAP; console in $work/NAME.log.
boot() {
    local name=$1 tap=$2 mac=$3 cmdline=$4 user_data=${5:-}
    ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
    ip netns exec "$ns" ip link set "$tap" master "$br" up
    if [[ -n "$vmm" ]]; then
        local args=(--kernel "$kernel" --cmdline "$cmdline" --vcpus 1 --memory-mib 64
            --serial "$work/$name.log" --net "tap=$tap,mac=$mac")
        if [[ -n "$user_data" ]]; then
            python3 - "$name" "$user_data" >"$work/$name.md.json" <<'PY'
import base64, json, sys
ud = open(sys.argv[2], "rb").read()
print(json.dumps({"metadata": {
    "instance_id": "i-" + sys.argv[1], "account_id": "123456789012",
    "ami_id": "ami-0123456789abcdef0", "instance_type": "t3.nano",
    "hostname": "ip-10-0-0-3.nubis-1.compute.internal", "local_ipv4": "10.0.0.3",
    "mac": "02:00:0a:00:00:03", "availability_zone": "nubis-1a", "region": "nubis-1",
    "launch_time": "2026-12-07T00:00:00Z", "user_data": base64.b64encode(ud).decode()},
    "options": {}}))
PY
            args+=(--metadata-file "$work/$name.md.json")
        fi
        ip netns exec "$ns" "$vmm" "${args[@]}" >"$work/$name.vmm.log" 2>&1 &
    else
        [[ -n "$user_data" ]] && cp "$user_data" "$work/imds-user-data"
        ip netns exec "$ns" ip neigh flush dev "$br"
        ip netns exec "$ns" qemu-system-x86_64 -M microvm,acpi=off -accel "$accel" -cpu "$cpu" \
            -m 64 -nodefaults -no-user-config -nographic -no-reboot \
            -serial "file:$work/$name.log" -kernel "$kernel" -append "$cmdline" \
            -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
            -device "virtio-net-device,netdev=n0,mac=$mac" >"$work/$name.qemu.log" 2>&1 &
    fi
    pids+=("$!")
}

ip netns exec "$ns" ip link add "$br" type bridge
ip netns exec "$ns" ip addr add 10.0.0.1/24 dev "$br"
ip netns exec "$ns" ip link set "$br" up
# Behind the gateway (10.0.0.1): an address of the namespace itself.
ip netns exec "$ns" ip addr add 192.168.77.1/32 dev lo

# Listeners in the namespace: an HTTP server that is not a hello guest
# (8080), a stream that sends three lines and closes (8081) or resets (8082),
# and (QEMU) the metadata service with the user data of the guest booting next.
if [[ -z "$vmm" ]]; then
    ip netns exec "$ns" ip addr add 169.254.169.254/16 dev "$br"
fi
ip netns exec "$ns" python3 - "$work" >"$work/listeners.log" 2>&1 <<'PY' &
import http.server, socket, socketserver, sys, threading, time
work = sys.argv[1]

class Imds(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True
    def do_PUT(self):
        self.reply(200, b"probe-test-token")
    def do_GET(self):
        if self.path == "/latest/meta-data/instance-id":
            self.reply(200, b"i-from-imds")
        elif self.path == "/latest/user-data":
            try:
                self.reply(200, open(work + "/imds-user-data", "rb").read())
            except FileNotFoundError:
                self.reply(404, b"")
        else:
            self.reply(404, b"")

class Plain(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        body = b"<html>not a hello guest</html>\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address):
        pass  # tcp: checks reset the connection once established

http.server.BaseHTTPRequestHandler.log_message = lambda *a: None

def short_stream(port, reset):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("192.168.77.1", port))
    s.listen(4)
    while True:
        c, _ = s.accept()
        c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for i in range(3):
            c.sendall(b"line %d\n" % i)
            time.sleep(0.2)
        if reset:  # linger 0: close sends a reset
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.close()

servers = [Server(("192.168.77.1", 8080), Plain)]
try:
    servers.append(Server(("169.254.169.254", 80), Imds))
except OSError:
    pass  # nubis-vmm serves the metadata itself
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
threading.Thread(target=short_stream, args=(8081, False), daemon=True).start()
threading.Thread(target=short_stream, args=(8082, True), daemon=True).start()
print("listening", flush=True)
while True:
    time.sleep(60)
PY
pids+=("$!")
wait_line "$work/listeners.log" '^listening' 10 || bad "listeners did not start: $(cat "$work/listeners.log")"

# ---- guest A: a plain hello server ----
boot a nbpa$$ 02:00:0a:00:00:02 "nubis.id=i-a ip=10.0.0.2/24 gw=10.0.0.1 nubis.imds=0"
check "A ready" wait_line "$work/a.log" '^NUBIS-GUEST-READY i-a$' 30

# ---- guest B: probes and a stream, configured by user data ----
cat >"$work/b.ud" <<EOF
#!/bin/sh
echo not for the guest
nubis-probe 10.0.0.2 icmp,http:80,tcp:81 every=200
nubis-probe 192.168.77.1 tcp:8080,http:8080
nubis-probe 10.0.0.99 icmp,tcp:80 every=100
nubis-probe 300.1.1.1 icmp
nubis-probe 10.0.0.2 icmp every=5
nubis-stream 10.0.0.2
EOF
boot b nbpb$$ 02:00:0a:00:00:03 "nubis.id=i-b ip=10.0.0.3/24 gw=10.0.0.1" "$work/b.ud"
blog="$work/b.log"
check "B ready" wait_line "$blog" '^NUBIS-GUEST-READY i-b$' 30
check "B read its user data" wait_line "$blog" '^NUBIS-IMDS user-data-bytes=' 10
check "bad address reported" \
    wait_line "$blog" '^NUBIS-ERROR bad nubis-probe 300\.1\.1\.1 icmp \(expected ' 5
check "bad every= reported" \
    wait_line "$blog" '^NUBIS-ERROR bad nubis-probe 10\.0\.0\.2 icmp every=5 \(expected every=<ms> with ms 100-60000\)$' 5
num='[0-9]+\.[0-9]{3}'
check "icmp to A ok" wait_line "$blog" "^NUBIS-PROBE seq=[0-9]+ dst=10\.0\.0\.2 check=icmp result=ok ms=$num\$" 10
check "http:80 to A ok with A's id" \
    wait_line "$blog" "^NUBIS-PROBE seq=[0-9]+ dst=10\.0\.0\.2 check=http:80 result=ok ms=$num peer=i-a\$" 10
check "tcp:81 to A refused" \
    wait_line "$blog" "^NUBIS-PROBE seq=[0-9]+ dst=10\.0\.0\.2 check=tcp:81 result=refused ms=$num\$" 10
check "tcp:8080 behind the gateway ok" \
    wait_line "$blog" "^NUBIS-PROBE seq=[0-9]+ dst=192\.168\.77\.1 check=tcp:8080 result=ok ms=$num\$" 10
check "http:8080 from a non-hello server is bad-response" \
    wait_line "$blog" "^NUBIS-PROBE seq=[0-9]+ dst=192\.168\.77\.1 check=http:8080 result=bad-response ms=$num\$" 10
check "icmp to nobody times out" \
    wait_line "$blog" '^NUBIS-PROBE seq=[0-9]+ dst=10\.0\.0\.99 check=icmp result=timeout$' 10
check "tcp:80 to nobody times out" \
    wait_line "$blog" '^NUBIS-PROBE seq=[0-9]+ dst=10\.0\.0\.99 check=tcp:80 result=timeout$' 10
check "stream to A connecting" wait_line "$blog" '^NUBIS-STREAM dst=10\.0\.0\.2 bytes=0 state=connecting$' 10
check "stream to A flowing" wait_line "$blog" '^NUBIS-STREAM dst=10\.0\.0\.2 bytes=[1-9][0-9]* state=flowing$' 10

# Rounds keep going while a target times out: several rounds of A's checks
# in the time of the timeouts.
sleep 3
rounds_ok() {
    local a99 a2
    a99=$(grep -c 'dst=10\.0\.0\.99 check=icmp result=timeout' "$blog")
    a2=$(grep -c 'dst=10\.0\.0\.2 check=icmp result=ok' "$blog")
    echo "  (10.0.0.99 icmp timeouts: $a99, 10.0.0.2 icmp ok: $a2)"
    ((a99 >= 2 && a2 >= 2 * a99))
}
check "probes of a dead target do not hold up the others" rounds_ok
seq_ok() { # the icmp lines of 10.0.0.2 count rounds 1, 2, 3, ... without gaps
    grep -o 'seq=[0-9]* dst=10\.0\.0\.2 check=icmp' "$blog" | cut -d' ' -f1 | cut -d= -f2 |
        awk 'NR != $1 { exit 1 }'
}
check "seq counts rounds" seq_ok
check "A still serves its own HTTP while probed" bash -c \
    "ip netns exec $ns python3 -c 'import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(\"http://10.0.0.2/\", timeout=5).read() == b\"NUBIS-HELLO i-a\\n\" else 1)'"
check "B answers ping while probing" ip netns exec "$ns" ping -c 2 -i 0.2 -W 5 -q 10.0.0.3
check "B serves HTTP while probing" bash -c \
    "ip netns exec $ns python3 -c 'import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(\"http://10.0.0.3/\", timeout=5).read() == b\"NUBIS-HELLO i-b\\n\" else 1)'"
flowing_once_a_second() { # while flowing, a line a second with growing bytes
    local n1 n2 b1 b2
    n1=$(grep -c '^NUBIS-STREAM .*state=flowing' "$blog")
    b1=$(last_bytes "$blog")
    sleep 2.5
    n2=$(grep -c '^NUBIS-STREAM .*state=flowing' "$blog")
    b2=$(last_bytes "$blog")
    echo "  (flowing lines $n1 -> $n2, bytes $b1 -> $b2)"
    ((n2 - n1 >= 2 && n2 - n1 <= 4 && b2 > b1))
}
check "stream flowing: a line a second, bytes grow" flowing_once_a_second

# Drop B's packets to A's port 80 on the bridge, as a revoked security group
# rule does (original direction only; A's packets still reach B): the
# established stream stalls; remove the rule: the same connection flows again.
mark=$(lines "$blog")
drop_b_to_a80() {
    ip netns exec "$ns" nft -f - <<EOF
table bridge nbprobe {
    chain forward_filter {
        type filter hook forward priority 0;
        ether saddr 02:00:0a:00:00:03 ip daddr 10.0.0.2 tcp dport 80 drop
    }
}
EOF
}
check "drop rule for B -> A:80 installed" drop_b_to_a80
stalled() { tail -n +"$((mark + 1))" "$blog" | grep -Eq '^NUBIS-STREAM dst=10\.0\.0\.2 bytes=[0-9]+ state=stalled$'; }
check "stream stalls when B's packets to A:80 are dropped" wait_until 5 stalled
mark=$(lines "$blog")
sleep 2.5
since_mark() { tail -n +"$((mark + 1))" "$blog" | grep -q -- "$1"; }
check "http:80 to A times out meanwhile" since_mark 'dst=10\.0\.0\.2 check=http:80 result=timeout$'
check "icmp to A still ok meanwhile" since_mark 'dst=10\.0\.0\.2 check=icmp result=ok'
check "stream stays stalled (no flowing, no reset)" bash -c \
    "! tail -n +$((mark + 1)) '$blog' | grep -Eq '^NUBIS-STREAM .*state=(flowing|reset)'"
mark=$(lines "$blog")
check "drop rule removed" ip netns exec "$ns" nft delete table bridge nbprobe
resumed() { tail -n +"$((mark + 1))" "$blog" | grep -Eq '^NUBIS-STREAM dst=10\.0\.0\.2 bytes=[0-9]+ state=flowing$'; }
check "the same stream flows again when A is back" wait_until 10 resumed
never_reconnected() { # no connecting line after the first flowing one
    grep '^NUBIS-STREAM ' "$blog" | sed -n '/state=flowing/,$p' | grep -q 'state=connecting' && return 1
    return 0
}
check "the stream never reconnected" never_reconnected
check "no error lines on A" bash -c "! grep -q '^NUBIS-ERROR' '$work/a.log'"

# ---- guest C: a stream whose server closes ----
printf 'nubis-stream 192.168.77.1:8081\nnubis-probe 10.0.0.2 http:80 every=60000\n' >"$work/c.ud"
boot c nbpc$$ 02:00:0a:00:00:04 "nubis.id=i-c ip=10.0.0.4/24 gw=10.0.0.1" "$work/c.ud"
clog="$work/c.log"
check "C ready" wait_line "$clog" '^NUBIS-GUEST-READY i-c$' 30
check "C stream flowing" wait_line "$clog" '^NUBIS-STREAM dst=192\.168\.77\.1 bytes=[1-9][0-9]* state=(flowing|closed)$' 10
check "C stream closed by the server" \
    wait_line "$clog" '^NUBIS-STREAM dst=192\.168\.77\.1 bytes=59 state=closed$' 10
sleep 2
check "closed is final: one closed line, nothing after" \
    test "$(grep '^NUBIS-STREAM' "$clog" | tail -n1 | grep -c 'state=closed')" -eq 1 -a \
    "$(grep -c 'state=closed' "$clog")" -eq 1
check "every=60000: one round in the first seconds" \
    test "$(grep -c 'dst=10\.0\.0\.2 check=http:80' "$clog")" -eq 1
check "no error lines on C" bash -c "! grep -q '^NUBIS-ERROR' '$clog'"

# ---- guests D and E: a stream the server resets, a stream refused ----
printf 'nubis-stream 192.168.77.1:8082\nnubis-bulk 192.168.77.1:8081 bytes=100\n' >"$work/d.ud"
boot d nbpd$$ 02:00:0a:00:00:05 "nubis.id=i-d ip=10.0.0.5/24 gw=10.0.0.1" "$work/d.ud"
check "D ready" wait_line "$work/d.log" '^NUBIS-GUEST-READY i-d$' 30
check "D stream reset by the server" \
    wait_line "$work/d.log" '^NUBIS-STREAM dst=192\.168\.77\.1 bytes=[0-9]+ state=reset$' 10
printf 'nubis-stream 10.0.0.2:81\nnubis-bulk 10.0.0.2:81 bytes=10\n' >"$work/e.ud"
boot e nbpe$$ 02:00:0a:00:00:06 "nubis.id=i-e ip=10.0.0.6/24 gw=10.0.0.1" "$work/e.ud"
check "E ready" wait_line "$work/e.log" '^NUBIS-GUEST-READY i-e$' 30
check "E stream to a closed port refused" \
    wait_line "$work/e.log" '^NUBIS-STREAM dst=10\.0\.0\.2 bytes=0 state=refused$' 10
check "D bulk from a server without Content-Length is bad-response" \
    wait_line "$work/d.log" "^NUBIS-BULK dst=192\.168\.77\.1 bytes=[0-9]+ ms=$num result=bad-response\$" 10
check "E bulk from a closed port refused" \
    wait_line "$work/e.log" "^NUBIS-BULK dst=10\.0\.0\.2 bytes=0 ms=$num result=refused\$" 10

# ---- guest F: a bulk fetch from A ----
printf 'nubis-bulk 10.0.0.2 bytes=0\nnubis-bulk 10.0.0.2 bytes=4000000\n' >"$work/f.ud"
boot f nbpf$$ 02:00:0a:00:00:07 "nubis.id=i-f ip=10.0.0.7/24 gw=10.0.0.1" "$work/f.ud"
flog="$work/f.log"
check "F ready" wait_line "$flog" '^NUBIS-GUEST-READY i-f$' 30
check "bad bytes= reported" \
    wait_line "$flog" '^NUBIS-ERROR bad nubis-bulk 10\.0\.0\.2 bytes=0 \(expected bytes=<n> with n 1-1073741824\)$' 10
check "F fetched exactly 4000000 bytes from A" \
    wait_line "$flog" "^NUBIS-BULK dst=10\.0\.0\.2 bytes=4000000 ms=$num result=ok\$" 60
grep '^NUBIS-BULK' "$flog" | sed 's/^/  /'
check "one NUBIS-BULK line: fetched once" test "$(grep -c '^NUBIS-BULK' "$flog")" -eq 1
bulk_from_ns() { # GET /bulk from the namespace: the length asked for, the pattern
    ip netns exec "$ns" python3 - <<'PY'
import sys, urllib.request
r = urllib.request.urlopen("http://10.0.0.2/bulk?bytes=1000003", timeout=20)
body = r.read()
line = b"NUBIS-BULK-DATA 0123456789abcdefghijklmnopqrstuvwxyz0123456789.\n"
ok = r.status == 200 and r.headers["Content-Length"] == "1000003" and \
    body == (line * (1000003 // 64 + 1))[:1000003]
print("  (%d bytes)" % len(body))
sys.exit(0 if ok else 1)
PY
}
check "GET /bulk?bytes=1000003 from the namespace: exact length and pattern" bulk_from_ns
bulk_400() {
    ip netns exec "$ns" python3 -c '
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://10.0.0.2/bulk?bytes=0", timeout=5)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code == 400 else 1)
sys.exit(1)'
}
check "GET /bulk?bytes=0 is 400" bulk_400
check "A still answers GET / after the bulk" bash -c \
    "ip netns exec $ns python3 -c 'import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(\"http://10.0.0.2/\", timeout=5).read() == b\"NUBIS-HELLO i-a\\n\" else 1)'"
check "no error lines on A after the bulk" bash -c "! grep -q '^NUBIS-ERROR' '$work/a.log'"

finish
