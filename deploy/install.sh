#!/usr/bin/env bash
# Installs Nubis on a bare-metal Debian 12 host in one role:
#
#   deploy/install.sh control-plane [--etcd-endpoints URLS] [--grpc-listen ADDR] [--ec2-listen ADDR]
#   deploy/install.sh agent --zone ZONE --control-plane URL --enrolment-token ID:SECRET
#                           [--vcpus N] [--memory-mib N]
#   deploy/install.sh --help
#
# From a built tree (cargo build --release; deploy/images/build.sh): copies the
# binaries to /usr/local/bin, images to /var/lib/nubis/images (agent), writes
# the role's config under /etc/nubis (kept if it exists, so re-running is
# safe), installs and starts the systemd units. Options:
#   --no-start     install and enable, do not start
#   --dry-run      print what would be done
# The control-plane role prints the generated operator key and an agent
# enrolment token once; both live in /etc/nubis/control-plane.toml (mode 0640).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
role=${1:-}
[[ $role == -h || $role == --help || -z $role ]] && { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
shift
etcd_endpoints=http://127.0.0.1:2379
grpc_listen=0.0.0.0:50051
ec2_listen=0.0.0.0:8080
zone="" cp="" token="" vcpus="" memory="" start=1 dry=0
while (($#)); do
    case $1 in
        --etcd-endpoints) etcd_endpoints=$2; shift 2 ;;
        --grpc-listen) grpc_listen=$2; shift 2 ;;
        --ec2-listen) ec2_listen=$2; shift 2 ;;
        --zone) zone=$2; shift 2 ;;
        --control-plane) cp=$2; shift 2 ;;
        --enrolment-token) token=$2; shift 2 ;;
        --vcpus) vcpus=$2; shift 2 ;;
        --memory-mib) memory=$2; shift 2 ;;
        --no-start) start=0; shift ;;
        --dry-run) dry=1; shift ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

run() { if ((dry)); then echo "+ $*"; else "$@"; fi; }
die() { echo "install.sh: $*" >&2; exit 1; }
((dry)) || [[ $(id -u) -eq 0 ]] || die "run as root"
rel="$root/target/release"
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

install_bin() {
    for b in "$@"; do
        [[ -x $rel/$b ]] || ((dry)) || die "$rel/$b missing: run cargo build --release first"
        run install -m 0755 "$rel/$b" /usr/local/bin/
    done
}

write_config() { # path mode content
    if [[ -e $1 ]]; then
        echo "keeping existing $1"
    elif ((dry)); then
        echo "+ write $1"; printf '%s\n' "$3" | sed 's/^/    /'
    else
        install -d -m 0755 "$(dirname "$1")"
        (umask 077; printf '%s\n' "$3" >"$1"); chmod "$2" "$1"
    fi
}

units() {
    for u in "$@"; do run install -m 0644 "$root/deploy/systemd/$u" /etc/systemd/system/; done
    run systemctl daemon-reload
    for u in "$@"; do
        run systemctl enable "$u"
        ((start)) && run systemctl restart "$u"
    done
    return 0
}

case $role in
    control-plane)
        ((dry)) || "$root/deploy/install-deps.sh" run >/dev/null || die "dependencies missing"
        install_bin nubis-control-plane nubis
        id nubis >/dev/null 2>&1 || run useradd --system --no-create-home --shell /usr/sbin/nologin nubis
        # A local single-member etcd gets client TLS, auth and compaction
        # (deploy/etcd-secure.sh; docs/operations.md "etcd: TLS, auth,
        # compaction"); a remote cluster's security is the operator's
        # ([etcd.tls], username, password_file in control-plane.toml).
        local_etcd=0 pki=/etc/nubis/etcd-pki etcd_security=""
        if [[ $etcd_endpoints == http://127.0.0.1:2379 ]]; then
            local_etcd=1 etcd_endpoints=https://127.0.0.1:2379
            etcd_security="username = \"nubis\"
password_file = \"/etc/nubis/etcd-password\"

[etcd.tls]
ca_file = \"$pki/ca.pem\"
cert_file = \"$pki/nubis.pem\"
key_file = \"$pki/nubis.key\""
            if ((dry)); then
                echo "+ $root/deploy/etcd-secure.sh pki $pki"
            else
                id etcd >/dev/null 2>&1 || die "user etcd missing: is etcd-server installed?"
                "$root/deploy/etcd-secure.sh" pki "$pki"
                chmod 0755 "$pki"
                chown etcd: "$pki/server.key"
                chown nubis: "$pki/nubis.key"
            fi
        fi
        admin_key="NBADMIN$(hex 6 | tr a-f A-F)" admin_secret=$(hex 24)
        enrol_id="enrol-$(hex 4)" enrol_secret=$(hex 24)
        write_config /etc/nubis/control-plane.toml 0640 "# Nubis control plane (docs/operations.md)
region = \"nubis-1\"
zones = [\"nubis-1a\", \"nubis-1b\", \"nubis-1c\"]

[etcd]
endpoints = [$(sed 's/[^,]*/"&"/g; s/,/, /g' <<<"$etcd_endpoints")]
$etcd_security

[grpc]
listen = \"$grpc_listen\"
unix_socket = \"/run/nubis/control-plane.sock\"

[http]
listen = \"$ec2_listen\"

[auth]
admin_access_key_id = \"$admin_key\"
admin_secret_access_key = \"$admin_secret\"
enrolment_tokens = [{ id = \"$enrol_id\", secret = \"$enrol_secret\" }]
# Access-key secrets are sealed in etcd with this key (docs/etcd-schema.md).
secrets_key_file = \"/etc/nubis/secrets.key\""
        ((dry)) || chgrp nubis /etc/nubis/control-plane.toml
        if [[ ! -s /etc/nubis/secrets.key ]]; then
            if ((dry)); then
                echo "+ write /etc/nubis/secrets.key (32 random bytes, hex, mode 0600, owner nubis)"
            else
                (umask 077; hex 32 >/etc/nubis/secrets.key; echo >>/etc/nubis/secrets.key)
                chown nubis: /etc/nubis/secrets.key
            fi
        fi
        if ((local_etcd)); then
            write_config /etc/nubis/etcd.env 0644 "ETCD_NAME=$(hostname -s)
ETCD_DATA_DIR=/var/lib/etcd/nubis
ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379
ETCD_CERT_FILE=$pki/server.pem
ETCD_KEY_FILE=$pki/server.key
ETCD_TRUSTED_CA_FILE=$pki/ca.pem
ETCD_CLIENT_CERT_AUTH=true
ETCD_AUTO_COMPACTION_MODE=periodic
ETCD_AUTO_COMPACTION_RETENTION=1h
ETCD_QUOTA_BACKEND_BYTES=4294967296"
            units etcd.service
            if ((start)); then
                # Users, the nubis role and auth, once etcd answers.
                ok=0
                for _ in $(seq 60); do
                    if ((dry)) || ETCDCTL_API=3 etcdctl --endpoints "$etcd_endpoints" --cacert "$pki/ca.pem" \
                        --cert "$pki/root.pem" --key "$pki/root.key" endpoint health >/dev/null 2>&1; then
                        ok=1; break
                    fi
                    sleep 1
                done
                ((ok)) || die "etcd did not come up on $etcd_endpoints (journalctl -u etcd)"
                run "$root/deploy/etcd-secure.sh" auth "$etcd_endpoints" "$pki" /etc/nubis/etcd-password
                ((dry)) || chown nubis: /etc/nubis/etcd-password
            else
                echo "etcd not started: after starting it, run $root/deploy/etcd-secure.sh auth $etcd_endpoints $pki /etc/nubis/etcd-password"
            fi
        fi
        units nubis-control-plane.service
        if [[ -e /etc/nubis/control-plane.toml ]] && ! ((dry)); then
            echo "operator key:     $(sed -n 's/^admin_access_key_id = "\(.*\)"/\1/p' /etc/nubis/control-plane.toml)"
            echo "operator secret:  (in /etc/nubis/control-plane.toml)"
            echo "enrolment token:  $(sed -n 's/.*id = "\([^"]*\)", secret = "\([^"]*\)".*/\1:\2/p' /etc/nubis/control-plane.toml)"
        fi
        ;;
    agent)
        [[ -n $zone && -n $cp && -n $token ]] || die "agent needs --zone, --control-plane and --enrolment-token"
        install_bin nubis-agent nubis-vmm
        run install -d -m 0755 /var/lib/nubis/images /var/lib/nubis-agent
        if [[ -d $root/target/images ]]; then
            run cp -a "$root/target/images/." /var/lib/nubis/images/
        fi
        cap=""
        [[ -n $vcpus ]] && cap+="vcpus = $vcpus"$'\n'
        [[ -n $memory ]] && cap+="memory_mib = $memory"$'\n'
        write_config /etc/nubis/agent.toml 0600 "# Nubis node agent (docs/operations.md, docs/agent.md)
control_plane = \"$cp\"
availability_zone = \"$zone\"
state_dir = \"/var/lib/nubis-agent\"
image_dir = \"/var/lib/nubis/images\"
vmm_binary = \"/usr/local/bin/nubis-vmm\"

[enrolment]
key_id = \"${token%%:*}\"
secret = \"${token#*:}\"

[capacity]
$cap"
        [[ -f $root/deploy/systemd/nubis-agent.service ]] || ((dry)) || die "deploy/systemd/nubis-agent.service missing"
        units nubis-agent.service
        ;;
    *) die "unknown role '$role' (control-plane|agent)" ;;
esac
echo "done: $role"
