#!/usr/bin/env bash
# Prints the host-dependent build inputs of the debian image, one per line.
# build.sh hashes this output: the image is rebuilt when the linux image (whose
# kernel it boots) would be. The package list is a file of this folder (hashed by
# build.sh); the exact package versions are recorded in the image's packages.txt.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=${NUBIS_REPO_ROOT:-$(cd "$here/../../.." && pwd)}
# (--check exits 1 when the linux image needs a rebuild: the hash is printed either way.)
check=$("$repo_root/deploy/images/build.sh" --check linux 2> /dev/null || true)
printf '%s\n' "$check" | sed -n 's/.*(inputs \([0-9a-f]*\).*/kernel-inputs \1/p'
