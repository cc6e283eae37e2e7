#!/usr/bin/env bash
# Prints the host-dependent build decisions of the linux image, one per line.
# build.sh hashes this output (a changed decision rebuilds the image) and
# build-image.sh applies the patches listed here.
#
# NUBIS_LINUX_PVM_PATCH=1 applies the PVM patches (patches/pvm-*.patch), =0 does not;
# unset (or "auto"): applied when this host's KVM is PVM (/sys/module/kvm_pvm exists),
# so that kernels built on PVM development/CI hosts boot under their KVM.
set -euo pipefail

case "${NUBIS_LINUX_PVM_PATCH:-auto}" in
    1) pvm=1 ;;
    0) pvm=0 ;;
    auto) if [ -d /sys/module/kvm_pvm ]; then pvm=1; else pvm=0; fi ;;
    *)
        echo "inputs.sh: NUBIS_LINUX_PVM_PATCH must be 0, 1 or auto, got '${NUBIS_LINUX_PVM_PATCH}'" >&2
        exit 2
        ;;
esac

# In application order.
if [ "$pvm" = 1 ]; then
    echo "patch pvm-skip-int3-selftest.patch"
    echo "patch pvm-kthread-exit-no-fwait.patch"
fi
