#!/usr/bin/env bash
# Client TLS and auth for the control plane's etcd (docs/operations.md,
# "etcd: TLS, auth, compaction"). Used by deploy/install.sh and by the test
# control-plane/tests/etcd_security.rs, so what an install does is tested.
#
#   deploy/etcd-secure.sh pki DIR [SAN...]
#       A CA and, signed by it: etcd's server certificate (SANs 127.0.0.1,
#       localhost and each SAN given: IP:x or DNS:x), a client certificate
#       for etcd's root user (CN root) and one for the control planes
#       (CN nubis). Keys are mode 0600. Files that exist are kept (re-running
#       is safe).
#   deploy/etcd-secure.sh auth ENDPOINT DIR PASSWORD_FILE [PREFIX]
#       On a running etcd started with DIR's server certificate and
#       --client-cert-auth: users root and nubis, a role nubis that may read
#       and write PREFIX (default /nubis/) and nothing else, then auth on.
#       Authenticates with DIR's root certificate; idempotent. The nubis
#       password is read from PASSWORD_FILE (created, 24 random bytes in hex,
#       when missing), never put on a command line.
set -euo pipefail

die() { echo "etcd-secure.sh: $*" >&2; exit 1; }

leaf() { # dir name cn extensions
    local d=$1 n=$2
    [[ -s $d/$n.pem && -s $d/$n.key ]] && return 0
    (umask 077; openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/$n.key" -out "$d/$n.csr" -subj "/CN=$3" 2>/dev/null)
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 825 -out "$d/$n.pem" -extfile <(printf '%b' "$4") 2>/dev/null
    rm -f "$d/$n.csr"
}

pki() {
    local d=${1:?pki DIR}; shift
    command -v openssl >/dev/null || die "openssl missing (Debian package openssl)"
    install -d -m 0700 "$d"
    if [[ ! -s $d/ca.pem ]]; then
        (umask 077; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/ca.key" -out "$d/ca.pem" -days 3650 -subj "/CN=Nubis etcd CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null)
    fi
    local san="IP:127.0.0.1,DNS:localhost"
    for s in "$@"; do
        [[ $s =~ ^(IP|DNS):[A-Za-z0-9.:-]+$ ]] || die "bad SAN $s (want IP:addr or DNS:name)"
        san+=",$s"
    done
    leaf "$d" server etcd "subjectAltName=$san\nextendedKeyUsage=serverAuth,clientAuth\n"
    leaf "$d" root root "extendedKeyUsage=clientAuth\n"
    leaf "$d" nubis nubis "extendedKeyUsage=clientAuth\n"
    chmod 0600 "$d"/*.key
    echo "etcd PKI in $d: ca.pem, server.{pem,key}, root.{pem,key}, nubis.{pem,key}"
}

auth() {
    local ep=${1:?auth ENDPOINT DIR PASSWORD_FILE [PREFIX]} d=${2:?} pwfile=${3:?} prefix=${4:-/nubis/}
    [[ $prefix == /* ]] || die "prefix must start with /: $prefix"
    command -v etcdctl >/dev/null || die "etcdctl missing (Debian package etcd-client)"
    ctl() { ETCDCTL_API=3 etcdctl --endpoints "$ep" --cacert "$d/ca.pem" \
        --cert "$d/root.pem" --key "$d/root.key" --command-timeout 10s "$@"; }
    if [[ ! -s $pwfile ]]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pwfile"; echo >>"$pwfile")
    fi
    local pw; pw=$(head -n1 "$pwfile")
    [[ -n $pw ]] || die "$pwfile holds no password"
    # root authenticates by its certificate's CN; it needs no usable password.
    ctl user get root >/dev/null 2>&1 || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' \
        | ctl user add root --interactive=false >/dev/null
    ctl user grant-role root root >/dev/null
    ctl role get nubis >/dev/null 2>&1 || ctl role add nubis >/dev/null
    ctl role grant-permission nubis --prefix=true readwrite "$prefix" >/dev/null
    ctl user get nubis >/dev/null 2>&1 || printf '%s\n' "$pw" | ctl user add nubis --interactive=false >/dev/null
    ctl user grant-role nubis nubis >/dev/null
    ctl auth enable >/dev/null
    echo "etcd auth on at $ep: user nubis may read and write $prefix"
}

cmd=${1:-}; shift || true
case $cmd in
    pki) pki "$@" ;;
    auth) auth "$@" ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; [[ $cmd == -h || $cmd == --help ]] || exit 2 ;;
esac
