#!/usr/bin/env bash
# A working local Nubis cloud in one command (run as root on Debian 12):
#
#   deploy/quickstart.sh [up]     install what is missing, build, start, launch 3 hello instances
#   deploy/quickstart.sh up --ha  the same, highly available: 3 etcd members, 3 control planes
#   deploy/quickstart.sh up --tls the EC2 gateway over HTTPS, with a local CA made for it
#   deploy/quickstart.sh down     stop everything and remove what `up` created
#   deploy/quickstart.sh status   show what is running
#
# Layout (one machine acting as three hosts; only loopback and addresses inside
# namespaces this script creates are used):
#   etcd                  root namespace, 127.0.0.1:<free port>, data in $STATE/etcd
#   nubis-control-plane   root namespace, gRPC 127.0.0.1:<port> + Unix socket $STATE/cp.sock,
#                         EC2 Query gateway 127.0.0.1:<port>
#   3 x nubis-agent       one per zone <region>a/b/c (nubis-local-1a/-1b/-1c by default),
#                         each in its own network namespace ${PREFIX}-a/-b/-c with its own bridge and TAPs;
#                         reaches the control plane over the Unix socket
#   fabric                network namespace ${PREFIX}-fab: one bridge (MTU 9000) joining the hosts'
#                         underlay interfaces ul0 (10.254.0.10/11/12, the VXLAN tunnel endpoints)
#   edge                  network namespace ${PREFIX}-edge on the fabric (10.254.0.1): stands in for
#                         the internet; elastic IPs are reached from there (198.51.100.0/24 on-link;
#                         the agents' edge_gateway). Nothing leaves the machine.
# High availability (`up --ha` or NUBIS_QS_HA=1; remembered until `down`):
#   3 etcd members        one raft cluster nbq0..nbq2 on 127.0.0.1, data in $STATE/etcd-<i>
#   3 control planes      control-plane-<i>: own gRPC/EC2 ports, Unix socket $STATE/cp<i>.sock
#   agents, CLI           know every replica (agent `control_planes`, comma-separated endpoint)
# HTTPS (`up --tls` or NUBIS_QS_TLS=1; remembered until `down`): a local CA and a
# certificate for 127.0.0.1/localhost signed by it (openssl, ECDSA P-256) in
# $STATE/tls; the gateway serves them (`[http] tls_cert_file`/`tls_key_file`) and
# quickstart.env exports AWS_CA_BUNDLE=$STATE/tls/ca.pem for aws-cli and boto3.
#
# Environment:
#   NUBIS_QS_REGION   region name; zones are <region>a, <region>b, <region>c
#                     (default nubis-local-1; e.g. us-east-1, eu-central-1: lower-case
#                     letters, digits and single hyphens, a letter first, a digit last,
#                     at most 32 characters). Fixed for the life of $STATE: change it
#                     after `down`.
#   NUBIS_QS_STATE    state directory            (default /var/lib/nubis-quickstart)
#   NUBIS_QS_PREFIX   namespace/cgroup prefix    (default nbq)
#   NUBIS_QS_IMAGES   images to build            (default: all of deploy/images)
#   NUBIS_QS_PROFILE  name of the CLI profile    (default quickstart)
#   NUBIS_QS_ENV_FILE endpoints/credentials file (default ~/.config/nubis/quickstart.env)
#   NUBIS_QS_HA=1     high-availability layout (as `up --ha`)
#   NUBIS_QS_TLS=1    the EC2 gateway over HTTPS (as `up --tls`)
#   NUBIS_QS_SKIP_BUILD=1  use the binaries already built
#   NUBIS_QS_BIN      directory of the binaries  (default target/release; with SKIP_BUILD,
#                     e.g. target/debug)
# Logs: $STATE/logs/{etcd,control-plane,agent-a,agent-b,agent-c}.log
#       (HA: etcd-0..2, control-plane-0..2)
# Running `up` twice is safe: running components are kept, nothing is duplicated.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${NUBIS_QS_STATE:-/var/lib/nubis-quickstart}
PREFIX=${NUBIS_QS_PREFIX:-nbq}
PROFILE=${NUBIS_QS_PROFILE:-quickstart}
ADMIN_PROFILE="$PROFILE-admin"
REGION=${NUBIS_QS_REGION:-nubis-local-1}
ZONES=(a b c) # zone letters: host "$PREFIX-<letter>" serves zone "$REGION<letter>"
PER_HOST_VCPUS=2
PER_HOST_MEMORY_MIB=512
BIN=${NUBIS_QS_BIN:-${CARGO_TARGET_DIR:-$root/target}/release}
CFG_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/nubis"
QS_ENV=${NUBIS_QS_ENV_FILE:-$CFG_DIR/quickstart.env}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, TAP devices, cgroups)"; }

# The region as operators name theirs (us-east-1); zones get one more letter.
check_region() {
    [[ ${#REGION} -le 32 && $REGION =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ && $REGION =~ [0-9]$ ]] ||
        die "NUBIS_QS_REGION='$REGION' is not a region name: lower-case letters, digits and single hyphens, a letter first, a digit last, at most 32 characters (e.g. us-east-1)"
    if [[ -f $STATE/region ]] && [[ $(cat "$STATE/region") != "$REGION" ]]; then
        die "this local cloud was created in region $(cat "$STATE/region"), not $REGION: run 'deploy/quickstart.sh down' first"
    fi
}

# ---------------------------------------------------------------- helpers

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

pick_port() { # start
    local p=$1
    while ! port_free "$p"; do p=$((p + 1)); done
    echo "$p"
}

# Starts a detached daemon: name pidfile command...
start_daemon() {
    local name=$1 pidfile=$2; shift 2
    if pid_alive "$pidfile"; then
        echo "    $name already running (pid $(cat "$pidfile"))"
        return 0
    fi
    setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "    $name started (pid $!), log $STATE/logs/$name.log"
}

stop_pidfile() { # pidfile
    local f=$1
    [[ -f $f ]] || return 0
    local pid; pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

wait_for() { # seconds description command...
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what (logs: $STATE/logs)"
        sleep 0.3
    done
}

nubis() { "$BIN/nubis" "$@"; }
nubis_admin() { "$BIN/nubis" --profile "$ADMIN_PROFILE" "$@"; }
nubis_tenant() { "$BIN/nubis" --profile "$PROFILE" "$@"; }

cgroup2_mount() { awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo; }

# ---------------------------------------------------------------- high availability
# `up --ha` / NUBIS_QS_HA=1: three etcd members forming one cluster and three
# control-plane replicas, all on 127.0.0.1 with ports of their own. The mode
# is remembered in $STATE/ha until `down`, so a later plain `up` keeps it.

HA_REPLICAS=(0 1 2)

ha_mode() { [[ ${NUBIS_QS_HA:-0} == 1 || -f $STATE/ha ]]; }

tls_mode() { [[ ${NUBIS_QS_TLS:-0} == 1 || -f $STATE/tls/ca.pem ]]; }

# The EC2 gateway's URL scheme.
ec2_scheme() { if tls_mode; then echo https; else echo http; fi; }

# `up --tls`: a local CA (kept until `down`) and the gateway's certificate,
# signed by it, for the addresses clients use (127.0.0.1, localhost). Both
# are made once; a certificate that no longer verifies against the CA (or
# is within a day of expiring) is made again.
local_ca() {
    local d=$STATE/tls
    mkdir -p "$d"; chmod 700 "$d"
    if [[ ! -s $d/ca.pem || ! -s $d/ca.key ]]; then
        say "making a local CA for the EC2 gateway's HTTPS ($d/ca.pem)"
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/ca.key" -out "$d/ca.pem" -days 825 -subj "/CN=Nubis quickstart local CA" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null \
            || die "openssl could not make the local CA"
        rm -f "$d/gateway.pem"
    fi
    if [[ ! -s $d/gateway.pem ]] || ! openssl verify -CAfile "$d/ca.pem" "$d/gateway.pem" >/dev/null 2>&1 \
        || ! openssl x509 -in "$d/gateway.pem" -noout -checkend 86400 >/dev/null; then
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/gateway.key" -out "$d/gateway.csr" -subj "/CN=localhost" 2>/dev/null \
            || die "openssl could not make the gateway's key"
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$d/gateway.ext"
        openssl x509 -req -in "$d/gateway.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
            -out "$d/gateway.pem" -days 397 -extfile "$d/gateway.ext" 2>/dev/null \
            || die "openssl could not sign the gateway's certificate"
        rm -f "$d/gateway.csr"
    fi
    chmod 600 "$d"/*.key
}

# The `[http]` TLS settings of a control plane's config (nothing without TLS).
http_tls_toml() {
    tls_mode || return 0
    printf 'tls_cert_file = "%s"\ntls_key_file = "%s"\n' "$STATE/tls/gateway.pem" "$STATE/tls/gateway.key"
}

# Picks (once) and loads the HA ports: ETCD_PORT_<i>, ETCD_PEER_PORT_<i>,
# GRPC_PORT_<i>, EC2_PORT_<i>. Sets ENDPOINT to every replica's gRPC endpoint
# (comma-separated: the CLI tries them in turn) and EC2_ENDPOINT to replica 0's.
ha_ports() {
    touch "$STATE/ha"
    if [[ ! -f $STATE/ha-ports.env ]]; then
        local i e=23890 g=50251
        for i in "${HA_REPLICAS[@]}"; do
            e=$(pick_port "$e"); echo "ETCD_PORT_$i=$e"; e=$(pick_port $((e + 1)))
            echo "ETCD_PEER_PORT_$i=$e"; e=$((e + 1))
            g=$(pick_port "$g"); echo "GRPC_PORT_$i=$g"; g=$(pick_port $((g + 1)))
            echo "EC2_PORT_$i=$g"; g=$((g + 1))
        done >"$STATE/ha-ports.env"
    fi
    # shellcheck disable=SC1091
    source "$STATE/ha-ports.env"
    local i eps=()
    for i in "${HA_REPLICAS[@]}"; do
        local v="GRPC_PORT_$i"
        eps+=("http://127.0.0.1:${!v}")
    done
    ENDPOINT=$(IFS=,; echo "${eps[*]}")
    EC2_ENDPOINT="$(ec2_scheme)://127.0.0.1:$EC2_PORT_0"
}

# The control planes' `[etcd] endpoints` list (TOML).
etcd_endpoints_toml() {
    if ! ha_mode; then
        echo "\"http://127.0.0.1:$ETCD_PORT\""
        return
    fi
    local i out=()
    for i in "${HA_REPLICAS[@]}"; do
        local v="ETCD_PORT_$i"
        out+=("\"http://127.0.0.1:${!v}\"")
    done
    (IFS=,; echo "${out[*]}") | sed 's/,/, /g'
}

# The agents' control-plane endpoints (TOML): one socket, or every replica's.
agent_endpoints_toml() {
    if ! ha_mode; then
        echo "control_plane = \"unix://$STATE/cp.sock\""
        return
    fi
    echo "control_plane = \"unix://$STATE/cp0.sock\""
    echo "control_planes = [\"unix://$STATE/cp1.sock\", \"unix://$STATE/cp2.sock\"]"
}

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$1/health" | grep -q '"health":"true"'; }

start_etcd_ha() {
    local i members=() initial
    for i in "${HA_REPLICAS[@]}"; do
        local v="ETCD_PEER_PORT_$i"
        members+=("nbq$i=http://127.0.0.1:${!v}")
    done
    initial=$(IFS=,; echo "${members[*]}")
    for i in "${HA_REPLICAS[@]}"; do
        local c="ETCD_PORT_$i" p="ETCD_PEER_PORT_$i"
        say "etcd member nbq$i on 127.0.0.1:${!c} (peer ${!p})"
        mkdir -p "$STATE/etcd-$i"
        start_daemon "etcd-$i" "$STATE/run/etcd-$i.pid" /usr/bin/etcd --name "nbq$i" \
            --data-dir "$STATE/etcd-$i" \
            --listen-client-urls "http://127.0.0.1:${!c}" \
            --advertise-client-urls "http://127.0.0.1:${!c}" \
            --listen-peer-urls "http://127.0.0.1:${!p}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${!p}" \
            --initial-cluster "$initial" --initial-cluster-token "$PREFIX-etcd" --log-level warn \
            "${ETCD_COMPACTION[@]}"
    done
    # Members wait for each other: a healthy member means the cluster has a leader.
    for i in "${HA_REPLICAS[@]}"; do
        local c="ETCD_PORT_$i"
        wait_for 60 "etcd member nbq$i" etcd_healthy "${!c}"
    done
}

start_control_planes_ha() {
    local i
    for i in "${HA_REPLICAS[@]}"; do
        local g="GRPC_PORT_$i" h="EC2_PORT_$i"
        CP_NAME="control-plane-$i" CP_SOCK="$STATE/cp$i.sock" GRPC_PORT=${!g} EC2_PORT=${!h} \
            start_control_plane
    done
}

# ---------------------------------------------------------------- up

install_packages() {
    say "Debian packages (deploy/packages/build.txt + run.txt)"
    "$root/deploy/install-deps.sh" run
    command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain with rustup first"
    [[ -r /dev/kvm && -w /dev/kvm ]] || die "/dev/kvm is not usable (enable virtualisation / load kvm)"
}

build() {
    if [[ ${NUBIS_QS_SKIP_BUILD:-0} == 1 ]]; then
        say "skipping build (NUBIS_QS_SKIP_BUILD=1)"
    else
        say "building release binaries"
        (cd "$root" && cargo build --release -p nubis-control-plane -p nubis-agent -p nubis-vmm -p nubis-cli)
        say "building guest images"
        # shellcheck disable=SC2086
        "$root/deploy/images/build.sh" ${NUBIS_QS_IMAGES:-}
    fi
    for b in nubis nubis-control-plane nubis-agent nubis-vmm; do
        [[ -x $BIN/$b ]] || die "$BIN/$b missing (build failed?)"
    done
    IMAGE_DIR=${NUBIS_IMAGE_DIR:-$root/target/images}
    [[ -f $IMAGE_DIR/hello/manifest.json ]] || die "hello image missing in $IMAGE_DIR"
}

secrets() {
    # The jailed VMMs (unprivileged uids) must traverse $STATE to reach their
    # instance directories: search permission only; what is inside stays private.
    mkdir -p "$STATE"/{logs,run,etcd} && chmod 711 "$STATE" && chmod 700 "$STATE"/{logs,run,etcd}
    [[ -f $STATE/region ]] || echo "$REGION" >"$STATE/region"
    if [[ ! -f $STATE/secrets.env ]]; then
        umask 077
        cat >"$STATE/secrets.env" <<EOF
ADMIN_KEY=NBQADMIN$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
ADMIN_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
ENROL_ID=nbq-enrol
ENROL_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF
    fi
    # shellcheck disable=SC1091
    source "$STATE/secrets.env"
    # The key sealing access-key secrets in etcd (docs/etcd-schema.md "Secrets").
    [[ -s $STATE/secrets.key ]] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/secrets.key")
    if [[ ! -f $STATE/ports.env ]]; then
        local etcd_c etcd_p grpc http
        etcd_c=$(pick_port 23790); etcd_p=$(pick_port $((etcd_c + 1)))
        grpc=$(pick_port 50151); http=$(pick_port $((grpc + 1)))
        printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nGRPC_PORT=%s\nEC2_PORT=%s\n' \
            "$etcd_c" "$etcd_p" "$grpc" "$http" >"$STATE/ports.env"
    fi
    # shellcheck disable=SC1091
    source "$STATE/ports.env"
    ENDPOINT="http://127.0.0.1:$GRPC_PORT"
    EC2_ENDPOINT="$(ec2_scheme)://127.0.0.1:$EC2_PORT"
}

# History older than an hour is compacted (the local cloud's data grew to
# 123 MB in a day without it); docs/operations.md "etcd: TLS, auth, compaction".
ETCD_COMPACTION=(--auto-compaction-mode periodic --auto-compaction-retention 1h)

start_etcd() {
    say "etcd on 127.0.0.1:$ETCD_PORT"
    start_daemon etcd "$STATE/run/etcd.pid" /usr/bin/etcd --name nbq --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "nbq=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn \
        "${ETCD_COMPACTION[@]}"
    wait_for 30 etcd bash -c "exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT"
}

# One control plane; HA mode calls it once per replica with CP_NAME, CP_SOCK,
# GRPC_PORT and EC2_PORT set (see start_control_planes_ha).
start_control_plane() {
    local name=${CP_NAME:-control-plane} sock=${CP_SOCK:-$STATE/cp.sock}
    say "$name: gRPC http://127.0.0.1:$GRPC_PORT, EC2 $(ec2_scheme)://127.0.0.1:$EC2_PORT, socket $sock"
    cat >"$STATE/$name.toml" <<EOF
# Written by deploy/quickstart.sh
region = "$REGION"
zones = [$(printf '"%s", ' "${ZONES[@]/#/$REGION}" | sed 's/, $//')]

[etcd]
endpoints = [$(etcd_endpoints_toml)]
prefix = "/nubis"

[grpc]
listen = "127.0.0.1:$GRPC_PORT"
unix_socket = "$sock"

[http]
listen = "127.0.0.1:$EC2_PORT"
$(http_tls_toml)

[network]
cidr = "10.200.0.0/16"
node_prefix_len = 24

[vpc]
public_pool = "198.51.100.0/24"

[instance_types]
# The hosts here are small (see PER_HOST_*): the compact sizes of the
# catalogue's seed (docs/compute-api.md#instance-types).
seed = "compact"

[auth]
admin_access_key_id = "$ADMIN_KEY"
admin_secret_access_key = "$ADMIN_SECRET"
enrolment_tokens = [{ id = "$ENROL_ID", secret = "$ENROL_SECRET" }]
secrets_key_file = "$STATE/secrets.key"
EOF
    chmod 600 "$STATE/$name.toml"
    pid_alive "$STATE/run/$name.pid" || rm -f "$sock"
    start_daemon "$name" "$STATE/run/$name.pid" \
        env RUST_LOG="${RUST_LOG:-info}" "$BIN/nubis-control-plane" --config "$STATE/$name.toml"
    wait_for 60 "$name" bash -c "[[ -S '$sock' ]] && exec 3<>/dev/tcp/127.0.0.1/$GRPC_PORT"
}

write_profiles() {
    nubis configure --profile "$ADMIN_PROFILE" --endpoint "$ENDPOINT" --region "$REGION" \
        --access-key-id "$ADMIN_KEY" --secret-access-key "$ADMIN_SECRET" 2>/dev/null
}

# The underlay: a bridge in $PREFIX-fab, and a veth from it into namespace $1
# whose end ul0 gets address $2 (idempotent).
plug_fabric() {
    local ns=$1 addr=$2 port=$3 fab="$PREFIX-fab"
    [[ -e /run/netns/$fab ]] || { ip netns add "$fab"; ip -n "$fab" link set lo up; }
    ip -n "$fab" link show fab0 >/dev/null 2>&1 || ip -n "$fab" link add fab0 mtu 9000 type bridge
    ip -n "$fab" link set fab0 up
    [[ -e /run/netns/$ns ]] || { ip netns add "$ns"; ip -n "$ns" link set lo up; }
    if ! ip -n "$ns" link show ul0 >/dev/null 2>&1; then
        ip -n "$fab" link del "$port" 2>/dev/null || true
        ip -n "$fab" link add "$port" mtu 9000 type veth peer name ul0 netns "$ns"
    fi
    ip -n "$fab" link set "$port" master fab0 up
    ip -n "$ns" addr replace "$addr/24" dev ul0
    ip -n "$ns" link set ul0 mtu 9000 up
}

start_agents() {
    local enforce=false mount
    mount=$(cgroup2_mount)
    if [[ -n $mount ]] && grep -qw memory "$mount/cgroup.controllers" 2>/dev/null \
        && grep -qw cpu "$mount/cgroup.controllers" 2>/dev/null; then
        enforce=true
    fi
    ready_nodes() { # at least N
        [[ $(nubis_admin admin nodes list 2>/dev/null | awk 'NR > 1 && $4 == "ready"' | wc -l) -ge $1 ]]
    }
    # One at a time: the control plane hands out address blocks in registration
    # order (10.200.<n>.0/24), and host n's bridge is configured for block n.
    plug_fabric "$PREFIX-edge" 10.254.0.1 edge
    # The public pool (control plane [vpc] public_pool) is on-link at the
    # edge: the host of an instance with a public address answers ARP for it.
    ip -n "$PREFIX-edge" route replace 198.51.100.0/24 dev ul0
    local n=0
    for z in "${ZONES[@]}"; do
        local ns="$PREFIX-$z" dir="$STATE/agents/$z"
        # Search permission for the jailed VMMs (see secrets()).
        mkdir -p "$dir" && chmod 711 "$STATE/agents" "$dir"
        [[ -e /run/netns/$ns ]] || { ip netns add "$ns"; ip -n "$ns" link set lo up; }
        plug_fabric "$ns" "10.254.0.$((10 + n))" "h$n"
        cat >"$dir/agent.toml" <<EOF
# Written by deploy/quickstart.sh: host "$ns" in zone $REGION$z.
$(agent_endpoints_toml)
availability_zone = "$REGION$z"
state_dir = "$dir/state"
image_dir = "$IMAGE_DIR"
vmm_binary = "$BIN/nubis-vmm"

[enrolment]
key_id = "$ENROL_ID"
secret = "$ENROL_SECRET"

[network]
bridge_address = "10.200.$n.1/24"
instance_range = "10.200.$n.2-10.200.$n.254"
underlay_address = "10.254.0.$((10 + n))"
edge_gateway = "10.254.0.1"

[capacity]
vcpus = $PER_HOST_VCPUS
memory_mib = $PER_HOST_MEMORY_MIB

[cgroup]
parent = "$PREFIX/$z"
enforce_limits = $enforce
EOF
        chmod 600 "$dir/agent.toml"
        say "agent for $REGION$z in network namespace $ns"
        start_daemon "agent-$z" "$STATE/run/agent-$z.pid" \
            env RUST_LOG="${RUST_LOG:-info}" nsenter --net="/run/netns/$ns" -- \
            "$BIN/nubis-agent" --config "$dir/agent.toml"
        n=$((n + 1))
        wait_for 90 "$n ready nodes" ready_nodes "$n"
    done
    nubis_admin admin nodes list
}

tenant() {
    if [[ ! -f $STATE/tenant.env ]]; then
        say "creating account quickstart"
        local out
        out=$(nubis_admin admin accounts create quickstart -o json)
        local ak sk
        ak=$(sed -n 's/.*"access_key_id": *"\([^"]*\)".*/\1/p' <<<"$out")
        sk=$(sed -n 's/.*"secret_access_key": *"\([^"]*\)".*/\1/p' <<<"$out")
        [[ -n $ak && -n $sk ]] || die "could not read the new account's keys: $out"
        (umask 077; printf 'TENANT_KEY=%s\nTENANT_SECRET=%s\n' "$ak" "$sk" >"$STATE/tenant.env")
    fi
    # shellcheck disable=SC1091
    source "$STATE/tenant.env"
    nubis configure --profile "$PROFILE" --endpoint "$ENDPOINT" --region "$REGION" \
        --access-key-id "$TENANT_KEY" --secret-access-key "$TENANT_SECRET" 2>/dev/null
    mkdir -p "$CFG_DIR"
    (umask 077; cat >"$QS_ENV" <<EOF
# Nubis quickstart endpoints (source this file). Written by deploy/quickstart.sh.
export NUBIS_PROFILE=$PROFILE
export NUBIS_ENDPOINT=$ENDPOINT
export NUBIS_EC2_ENDPOINT=$EC2_ENDPOINT
export AWS_ENDPOINT_URL=$EC2_ENDPOINT
export AWS_ENDPOINT_URL_EC2=$EC2_ENDPOINT
export AWS_ACCESS_KEY_ID=$TENANT_KEY
export AWS_SECRET_ACCESS_KEY=$TENANT_SECRET
export AWS_DEFAULT_REGION=$REGION
EOF
    if tls_mode; then
        echo "export AWS_CA_BUNDLE=$STATE/tls/ca.pem"
    else
        echo "unset AWS_CA_BUNDLE"
    fi >>"$QS_ENV"
    )
}

register_images() {
    local have
    have=$(nubis_admin images list 2>/dev/null | awk 'NR > 1 { print $2 }')
    for m in "$IMAGE_DIR"/*/manifest.json; do
        local name; name=$(basename "$(dirname "$m")")
        if grep -qx "$name" <<<"$have"; then
            echo "    image $name already registered"
        else
            nubis_admin images register --name "$name" --public --manifest "$m" >/dev/null
            echo "    registered image $name"
        fi
    done
    nubis_tenant images list
}

launch() {
    local running
    running=$(nubis_tenant instances list --tag quickstart=hello --state pending --state running \
        | awk 'NR > 1' | wc -l)
    if ((running >= 3)); then
        say "$running quickstart instances already running"
    else
        say "launching 3 hello instances across the zones"
        nubis_tenant instances run --image hello --type t3.nano --count $((3 - running)) \
            --tag quickstart=hello --tag Name=hello --wait --timeout 5m >/dev/null
    fi
    echo
    nubis_tenant instances list --tag quickstart=hello --state running
    local line id
    line=$(nubis_tenant instances list --tag quickstart=hello --state running | awk 'NR == 2')
    id=$(awk '{ print $1 }' <<<"$line")
    echo
    say "console of $id (nubis instances console $id)"
    nubis_tenant instances console "$id" | grep -a '^NUBIS-' | head -n 8 || true
    echo
    # The instances are in the account's default VPC, its default group
    # admitting only its own members: let HTTP in from anywhere (a duplicate
    # rule on a second run is refused and ignored), and give the first
    # instance an Elastic IP (kept across runs: tag quickstart=hello).
    local sg eip alloc
    sg=$(nubis_tenant security-groups list --filter group-name=default -o json \
        | sed -n 's/.*"group_id": *"\([^"]*\)".*/\1/p' | head -n 1)
    [[ -n $sg ]] || die "the account has no default security group"
    nubis_tenant security-groups authorize "$sg" --protocol tcp --port 80 --cidr 0.0.0.0/0 \
        >/dev/null 2>&1 || true
    eip=$(nubis_tenant addresses list --filter tag:quickstart=hello -o json)
    alloc=$(sed -n 's/.*"allocation_id": *"\([^"]*\)".*/\1/p' <<<"$eip" | head -n 1)
    if [[ -z $alloc ]]; then
        eip=$(nubis_tenant addresses allocate --tag quickstart=hello -o json)
        alloc=$(sed -n 's/.*"allocation_id": *"\([^"]*\)".*/\1/p' <<<"$eip" | head -n 1)
    fi
    [[ -n $alloc ]] || die "could not allocate an Elastic IP: $eip"
    nubis_tenant addresses associate "$alloc" --instance "$id" --allow-reassociation >/dev/null
    local public
    public=$(sed -n 's/.*"public_ip": *"\([^"]*\)".*/\1/p' <<<"$eip" | head -n 1)
    say "HTTP from the edge (the local cloud's internet) to $id's Elastic IP: curl http://$public/"
    local tries=0
    until ip netns exec "$PREFIX-edge" curl -sS --max-time 3 "http://$public/"; do
        tries=$((tries + 1))
        ((tries < 10)) || { echo "    (no answer yet; try again in a moment)"; break; }
        sleep 1
    done
    echo
    say "ready. Try:"
    cat <<EOF
    source $QS_ENV
    $BIN/nubis instances list
    $BIN/nubis addresses list
    ip netns exec $PREFIX-edge curl http://$public/    # from the "internet"
    $BIN/nubis --profile $ADMIN_PROFILE admin nodes list
    aws ec2 describe-instances        # EC2 gateway at $EC2_ENDPOINT
    deploy/quickstart.sh down         # remove everything
  logs: $STATE/logs
EOF
}

up() {
    need_root
    check_region
    install_packages
    build
    secrets
    if tls_mode; then local_ca; fi
    if ha_mode; then
        ha_ports
        start_etcd_ha
        start_control_planes_ha
    else
        start_etcd
        start_control_plane
    fi
    write_profiles
    start_agents
    tenant
    register_images
    launch
}

# ---------------------------------------------------------------- down

down() {
    need_root
    say "stopping agents, their microVMs and namespaces"
    # Also hosts of an older layout (namespaces ${PREFIX}-1a/-1b/-1c).
    local hosts=("${ZONES[@]}") ns_name
    while read -r ns_name _; do
        [[ $ns_name == "$PREFIX"-* && " ${hosts[*]} " != *" ${ns_name#"$PREFIX"-} "* ]] && hosts+=("${ns_name#"$PREFIX"-}")
    done < <(ip netns list 2>/dev/null)
    for z in "${hosts[@]}"; do
        stop_pidfile "$STATE/run/agent-$z.pid"
        local ns="$PREFIX-$z"
        if [[ -e /run/netns/$ns ]]; then
            for _ in $(seq 20); do
                local pids; pids=$(ip netns pids "$ns" 2>/dev/null || true)
                [[ -z $pids ]] && break
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null || true
                sleep 0.1
            done
            ip netns delete "$ns" 2>/dev/null || true
        fi
    done
    say "stopping the control plane and etcd"
    local f
    for f in "$STATE"/run/control-plane*.pid "$STATE"/run/etcd*.pid; do
        stop_pidfile "$f"
    done
    local mount; mount=$(cgroup2_mount)
    if [[ -n $mount && -d $mount/$PREFIX ]]; then
        # The VMMs run in network namespaces of their own (the jail), so the
        # host namespaces' pid lists above miss them: kill them by cgroup.
        for _ in $(seq 50); do
            echo 1 >"$mount/$PREFIX/cgroup.kill" 2>/dev/null \
                || find "$mount/$PREFIX" -name cgroup.procs -exec cat {} + 2>/dev/null \
                    | xargs -r kill -KILL 2>/dev/null || true
            find "$mount/$PREFIX" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [[ -d $mount/$PREFIX ]] || break
            sleep 0.1
        done
    fi
    if [[ -x $BIN/nubis ]]; then
        "$BIN/nubis" configure delete --profile "$PROFILE" 2>/dev/null || true
        "$BIN/nubis" configure delete --profile "$ADMIN_PROFILE" 2>/dev/null || true
    fi
    rm -f "$QS_ENV"
    rm -rf "$STATE"
    say "removed everything quickstart created"
}

status() {
    for f in "$STATE"/run/*.pid; do
        [[ -f $f ]] || continue
        local n; n=$(basename "$f" .pid)
        if pid_alive "$f"; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: stopped"; fi
    done
    ip netns list 2>/dev/null | grep "^$PREFIX-" || true
}

cmd=up
for arg in "$@"; do
    case "$arg" in
        --ha) NUBIS_QS_HA=1 ;;
        --tls) NUBIS_QS_TLS=1 ;;
        *) cmd=$arg ;;
    esac
done
case "$cmd" in
    up) up ;;
    down) down ;;
    status) status ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (up [--ha] [--tls]|down|status)" ;;
esac
