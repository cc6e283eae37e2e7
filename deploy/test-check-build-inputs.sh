#!/usr/bin/env bash
# Runs deploy/check-build-inputs.sh and proves that it can fail: on the same
# traces, install lists with one needed package taken out must fail the check,
# naming that package.
#
#   deploy/test-check-build-inputs.sh [TRACE_DIR]
#
# Without TRACE_DIR the build is traced first (the check itself, must pass);
# with it, the traces a previous run kept (NUBIS_CHECK_KEEP) are analysed.
# Cases (each on a copy of deploy/packages), "removed -> must be reported":
#   libprotobuf-dev -> libprotobuf-dev     protoc reads google/protobuf/*.proto (the issue's failure)
#   build-essential -> libgcc-12-dev       the C toolchain rustc links with (crt files, gcc's headers)
#   protobuf-compiler -> protobuf-compiler etcd-client's build runs protoc
# and a hand-written trace that runs /usr/bin/strace (named only in test.txt).
# Exit status: 0 the check passes with the real lists and fails for each case.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nubis-inputs-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [[ $# -ge 1 ]]; then
    traces=$1
    "$root/deploy/check-build-inputs.sh" --analyze "$traces"/*.trace
else
    traces=$work/traces
    NUBIS_CHECK_KEEP=$traces "$root/deploy/check-build-inputs.sh"
fi
echo "check-build-inputs: passes with the real lists"

failures=0
for case in libprotobuf-dev:libprotobuf-dev build-essential:libgcc-12-dev \
    protobuf-compiler:protobuf-compiler; do
    pkg=${case%%:*} reported=${case#*:}
    lists=$work/lists-without-$pkg
    cp -r "$root/deploy/packages" "$lists"
    grep -qx "$pkg" "$lists/build.txt" || { echo "FAIL: $pkg is not in build.txt" >&2; exit 1; }
    sed -i "/^$pkg\$/d" "$lists/build.txt"
    rc=0
    NUBIS_PACKAGES_DIR=$lists "$root/deploy/check-build-inputs.sh" --analyze "$traces"/*.trace \
        >"$work/out" 2>&1 || rc=$?
    if [[ $rc -eq 1 ]] && grep -q "files of $reported, which no install list names" "$work/out"; then
        echo "check-build-inputs: fails without $pkg, as it must ($reported among $(grep -c 'no install list names' "$work/out") package(s) reported)"
    else
        echo "FAIL: without $pkg the check exited $rc and said:" >&2
        cat "$work/out" >&2
        failures=$((failures + 1))
    fi
done
# A tool the build lists do not name (strace is only in test.txt), run by a
# process: a hand-written trace line must fail the check, naming strace.
echo '4242 execve("/usr/bin/strace", ["strace"], 0x7ffd /* 1 var */) = 0' >"$work/synthetic.trace"
rc=0
"$root/deploy/check-build-inputs.sh" --analyze "$work/synthetic.trace" >"$work/out" 2>&1 || rc=$?
if [[ $rc -eq 1 ]] && grep -q "files of strace, which no install list names" "$work/out"; then
    echo "check-build-inputs: fails on a tool only the test list names, as it must"
else
    echo "FAIL: a trace running /usr/bin/strace exited $rc and said:" >&2
    cat "$work/out" >&2
    failures=$((failures + 1))
fi
exit $((failures > 0))
