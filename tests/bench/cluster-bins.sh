# Sourced (not run) by the benchmarks that run an ignored whole-cluster test
# (vpc.sh, vpc-throughput.sh): picks the binaries the cluster runs and builds
# the hello image. Before sourcing: `root` (the workspace, also the current
# directory). Afterwards: `bins` (their directory) and `profile` (a label).
#   NUBIS_BIN_DIR=<dir>              prebuilt binaries, nothing is built
#   NUBIS_BENCH_PROFILE=release|debug  otherwise built first (default release)
#   NUBIS_BENCH_BUILD_IMAGE=0        use the hello image already in
#                                    $NUBIS_IMAGE_DIR (e.g. one built from another
#                                    tree) instead of building it from this tree
profile=${NUBIS_BENCH_PROFILE:-release}
# A benchmark whose prerequisite (KVM, etcd, an image, a binary) is missing
# fails instead of printing SKIPPED and measuring nothing.
export NUBIS_REQUIRE_KVM=1
if [[ -n ${NUBIS_BIN_DIR:-} ]]; then
    # Absolute: the test runs in its package's directory.
    bins=$(cd "$NUBIS_BIN_DIR" && pwd)
    profile="prebuilt ($bins)"
else
    if [[ $profile == release ]]; then
        cargo build --release -q -p nubis-control-plane -p nubis-agent -p nubis-vmm -p nubis-cli >&2
    else
        cargo build -q -p nubis-control-plane -p nubis-agent -p nubis-vmm -p nubis-cli >&2
    fi
    bins=${CARGO_TARGET_DIR:-$root/target}/$profile
fi
if [[ ${NUBIS_BENCH_BUILD_IMAGE:-1} != 0 ]]; then
    deploy/images/build.sh hello >/dev/null
fi
