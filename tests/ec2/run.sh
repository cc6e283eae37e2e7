#!/usr/bin/env bash
# The EC2 gateway's client tests: real aws-cli and boto3 (installed from PyPI
# into a virtualenv) against a local Nubis cluster with real agents, brought up
# by deploy/quickstart.sh (etcd, control plane, three nubis-agents in their own
# network namespaces, an account, the guest images) and torn down afterwards,
# also on failure. Exit status: pytest's, except that "no tests ran" fails.
#
# Environment:
#   NUBIS_EC2_VENV         virtualenv to use/create (default target/ec2-venv)
#   NUBIS_EC2_PYTEST_ARGS  extra pytest arguments (e.g. "-k errors")
#   NUBIS_EC2_PROFILE      cargo profile of the binaries: debug (default) or release
#   NUBIS_EC2_TLS          1 (default): the gateway over HTTPS with the quickstart's
#                          local CA (AWS_CA_BUNDLE); 0: plain HTTP
# Needs root (namespaces, TAPs) and /dev/kvm, like the quickstart.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
venv=${NUBIS_EC2_VENV:-$root/target/ec2-venv}
work=$(mktemp -d /tmp/nbec2.XXXXXX)
# The jailed VMMs (unprivileged uids) must reach the state and image dirs in it.
chmod 711 "$work"

# An isolated quickstart: own state dir, namespace prefix, CLI profiles.
export NUBIS_QS_STATE=$work/qs
export NUBIS_QS_PREFIX=nbe$(($$ % 100000))
export NUBIS_QS_PROFILE=ec2test
export NUBIS_QS_ENV_FILE=$work/quickstart.env
# Over HTTPS, as EC2 is spoken: the quickstart makes a local CA and exports
# AWS_CA_BUNDLE, which aws-cli and boto3 read (NUBIS_EC2_TLS=0: plain HTTP).
export NUBIS_QS_TLS=${NUBIS_EC2_TLS:-1}
# The binaries and the hello image are built here (a no-op in CI, whose build
# and images stages ran before); the quickstart then only starts things.
profile=${NUBIS_EC2_PROFILE:-debug}
export NUBIS_QS_SKIP_BUILD=1 NUBIS_QS_BIN=${CARGO_TARGET_DIR:-$root/target}/$profile
export XDG_CONFIG_HOME=$work/config
# Keep the developer's own AWS configuration out of the tests.
export AWS_CONFIG_FILE=$work/aws-config AWS_SHARED_CREDENTIALS_FILE=$work/aws-credentials
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
: >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"

cleanup() {
    local rc=$?
    echo "==> tearing the cluster down"
    if ! deploy/quickstart.sh down >"$work/down.log" 2>&1; then
        echo "quickstart down failed:" >&2
        tail -n 30 "$work/down.log" >&2 || true
        rc=1
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> python clients in $venv"
if [[ ! -x $venv/bin/pytest || ! -x $venv/bin/aws ]] \
    || ! cmp -s tests/ec2/requirements.txt "$venv/.nubis-requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/ec2/requirements.txt
    cp tests/ec2/requirements.txt "$venv/.nubis-requirements.txt"
fi
export PATH="$venv/bin:$PATH"
aws --version

echo "==> binaries ($profile) and the hello image"
release=()
[[ $profile == release ]] && release=(--release)
# The whole workspace's binaries, so features unify as in the build and test
# stages and nothing is compiled a second time (a per-package build recompiled
# half the graph and filled CI's disk).
cargo build "${release[@]}" --workspace --bins
deploy/images/build.sh hello
# The quickstart registers every image of its image directory: hello, and
# hello-burn (same kernel, nubis.burn=1: a CPU load for test_cloudwatch.py).
images=$work/images
mkdir -p "$images"
cp -r "${NUBIS_IMAGE_DIR:-$root/target/images}/hello" "$images/hello"
cp -r "$images/hello" "$images/hello-burn"
python3 - "$images/hello-burn/manifest.json" <<'PY'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
m["name"] = "hello-burn"
m["cmdline"] = (m.get("cmdline") or "") + " nubis.burn=1"
json.dump(m, open(p, "w"), indent=2, sort_keys=True)
PY
export NUBIS_IMAGE_DIR=$images

echo "==> cluster (deploy/quickstart.sh up; log $work/up.log)"
if ! deploy/quickstart.sh up >"$work/up.log" 2>&1; then
    echo "quickstart up failed:" >&2
    tail -n 60 "$work/up.log" >&2
    for f in "$NUBIS_QS_STATE"/logs/*.log; do
        [[ -f $f ]] || continue
        echo "--- $f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
fi
# shellcheck disable=SC1091
source "$NUBIS_QS_ENV_FILE"
[[ -n ${NUBIS_EC2_ENDPOINT:-} ]] || { echo "quickstart.env has no NUBIS_EC2_ENDPOINT" >&2; exit 1; }
if [[ $NUBIS_QS_TLS == 1 ]]; then
    [[ $NUBIS_EC2_ENDPOINT == https://* && -s ${AWS_CA_BUNDLE:-} ]] \
        || { echo "quickstart --tls gave no https endpoint and CA bundle" >&2; exit 1; }
    echo "==> EC2 gateway over HTTPS at $NUBIS_EC2_ENDPOINT (CA $AWS_CA_BUNDLE)"
fi
export NUBIS_EC2_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION

echo "==> a second account (tenant isolation)"
other=$("$NUBIS_QS_BIN/nubis" --profile "$NUBIS_QS_PROFILE-admin" admin accounts create "ec2-other-$$" -o json)
NUBIS_EC2_OTHER_KEY=$(sed -n 's/.*"access_key_id": *"\([^"]*\)".*/\1/p' <<<"$other")
NUBIS_EC2_OTHER_SECRET=$(sed -n 's/.*"secret_access_key": *"\([^"]*\)".*/\1/p' <<<"$other")
[[ -n $NUBIS_EC2_OTHER_KEY && -n $NUBIS_EC2_OTHER_SECRET ]] || { echo "no keys in: $other" >&2; exit 1; }
export NUBIS_EC2_OTHER_KEY NUBIS_EC2_OTHER_SECRET
# The operator's CLI (test_quotas.py sets an account's quota with it).
export NUBIS_EC2_ADMIN_CLI="$NUBIS_QS_BIN/nubis --profile $NUBIS_QS_PROFILE-admin"

echo "==> pytest tests/ec2 against $NUBIS_EC2_ENDPOINT"
rc=0
# shellcheck disable=SC2086
(cd tests/ec2 && pytest -v -p no:cacheprovider ${NUBIS_EC2_PYTEST_ARGS:-} .) || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: failing" >&2
    rc=1
fi
if [[ $rc -ne 0 ]]; then
    for f in "$NUBIS_QS_STATE"/logs/control-plane.log; do
        [[ -f $f ]] && { echo "--- tail of $f" >&2; tail -n 40 "$f" >&2; }
    done
fi
exit "$rc"
