#!/usr/bin/env bash
# Builds Nubis guest images.
#
#   deploy/images/build.sh [--force | --check] [NAME...]
#
#   --force   rebuild even when the inputs are unchanged
#   --check   build nothing; report whether each image is up to date (exit 1 if not)
#
# Every folder deploy/images/<name>/ holding a build-image.sh is an image. With no
# NAME, all images are built. Each image lands in
# ${NUBIS_IMAGE_DIR:-target/images}/<name>/ (a relative NUBIS_IMAGE_DIR is taken
# relative to the repository root, whatever the current directory).
#
# Contract with an image folder (see docs in deploy/images/linux/README.md):
#   build-image.sh OUTDIR   required; writes the image files into OUTDIR plus
#                           manifest.in.json:
#                           {"name","kernel","initrd"|null,"cmdline","requires":{"vmm":[..],"min_memory_mib":N}}
#   build-deps              optional; lines "<command or /absolute/path> <debian-package|->".
#                           Each is checked before the build (installed with apt-get when
#                           root, otherwise exit 3) and its version is a build input.
#   inputs.sh               optional; its stdout (host-dependent decisions) is a build input.
# Every Cargo.toml in the folder adds `rustc -V` / `cargo -V` (run beside it) to the inputs.
#
# Inputs hash = sha256 over: build.sh itself, the sorted list and contents of every file in
# the image folder (target/ dirs and *.md documentation excluded), tool versions, inputs.sh
# output. When
# <out>/.input-hash matches and <out>/manifest.json exists, the image is not rebuilt.
# Otherwise the image is built in a temporary folder next to <out>, manifest.json is written
# (manifest.in.json + "files" {sha256,size} + "inputs_sha256"), and the temporary folder
# replaces <out> atomically (renameat2 RENAME_EXCHANGE).
#
# Exit status: 0 ok; 1 an image failed to build (--check: is not up to date);
#              2 usage / unknown image;
#              3 a build dependency is missing and cannot be installed.
set -euo pipefail
shopt -s inherit_errexit

prog=build.sh
images_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$images_dir/$(basename "${BASH_SOURCE[0]}")"
repo_root=$(cd "$images_dir/../.." && pwd)

out_root=${NUBIS_IMAGE_DIR:-target/images}
case "$out_root" in
    /*) ;;
    *) out_root="$repo_root/$out_root" ;;
esac

usage() {
    sed -n '2,/^set -euo/p' "$self" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() { # die STATUS MESSAGE
    echo "$prog: $2" >&2
    exit "$1"
}

force=0
check=0
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        -f | --force) force=1 ;;
        --check) check=1 ;;
        --) shift; names+=("$@"); break ;;
        -*) die 2 "unknown option '$1' (try --help)" ;;
        *) names+=("$1") ;;
    esac
    shift
done

# Known images: folders with a build-image.sh. Folders without one are reported.
known=()
pending=()
for d in "$images_dir"/*/; do
    n=$(basename "$d")
    if [ -f "$d/build-image.sh" ]; then
        known+=("$n")
    else
        pending+=("$n")
    fi
done

is_known() {
    local k
    for k in "${known[@]}"; do
        [ "$k" = "$1" ] && return 0
    done
    return 1
}

if [ ${#names[@]} -eq 0 ]; then
    for p in "${pending[@]}"; do
        echo "$p: no build-image.sh yet, skipped"
    done
    names=("${known[@]}")
else
    for n in "${names[@]}"; do
        if ! is_known "$n"; then
            hint=""
            [ -d "$images_dir/$n" ] && hint=" (deploy/images/$n has no build-image.sh yet)"
            die 2 "unknown image '$n' (known: ${known[*]})$hint"
        fi
    done
fi

for tool in python3 sha256sum flock find sort; do
    command -v "$tool" > /dev/null || die 3 "missing build dependency '$tool'"
done

# ensure_dep IMAGE WHAT PACKAGE: WHAT is a command name or an absolute path.
have_dep() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" > /dev/null ;;
    esac
}
ensure_dep() {
    local image=$1 what=$2 pkg=$3
    have_dep "$what" && return 0
    if [ "$pkg" != "-" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "$image: installing missing build dependency '$what' (Debian package $pkg)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" > /dev/null ||
            { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" > /dev/null; } ||
            die 3 "$image: missing build dependency '$what'; 'apt-get install $pkg' failed"
        have_dep "$what" && return 0
    fi
    if [ "$pkg" = "-" ]; then
        die 3 "$image: missing build dependency '$what'"
    fi
    die 3 "$image: missing build dependency '$what' (install Debian package '$pkg')"
}

# dep_version WHAT PACKAGE: one line identifying the installed version.
dep_version() {
    local what=$1 pkg=$2 v=""
    if [ "$pkg" != "-" ]; then
        v=$(dpkg-query -W -f='${Version}' "$pkg" 2> /dev/null || true)
    fi
    if [ -z "$v" ]; then
        case "$what" in
            /*) v=$(sha256sum < "$what" | cut -c1-64) ;;
            *) v=$("$what" --version 2>&1 | head -n 1 || true) ;;
        esac
    fi
    printf 'dep %s %s %s\n' "$what" "$pkg" "$v"
}

# input_hash IMAGE: prints the sha256 of all build inputs of IMAGE.
input_hash() {
    local image=$1 dir="$images_dir/$1"
    {
        printf 'nubis-image-inputs v1 %s\n' "$image"
        printf 'build.sh %s\n' "$(sha256sum < "$self" | cut -c1-64)"
        (cd "$dir" && find . -name target -prune -o \( -type f -o -type l \) ! -name '*.md' -print0 |
            LC_ALL=C sort -z |
            while IFS= read -r -d '' f; do
                if [ -L "$f" ]; then
                    printf 'link %s %s\n' "$f" "$(readlink "$f")"
                else
                    printf 'file %s %s\n' "$f" "$(sha256sum < "$f" | cut -c1-64)"
                fi
            done)
        if [ -f "$dir/build-deps" ]; then
            while read -r what pkg _; do
                case "$what" in '' | '#'*) continue ;; esac
                dep_version "$what" "${pkg:--}"
            done < "$dir/build-deps"
        fi
        # Rust crates in the folder: the toolchain they resolve to (rust-toolchain files
        # included) is an input.
        (cd "$dir" && find . -name target -prune -o -name Cargo.toml -print | LC_ALL=C sort) |
            while IFS= read -r manifest; do
                (cd "$dir/$(dirname "$manifest")" &&
                    printf 'rust %s %s %s\n' "$manifest" "$(rustc -V 2>&1 || true)" "$(cargo -V 2>&1 || true)")
            done
        if [ -x "$dir/inputs.sh" ]; then
            printf 'inputs.sh\n'
            "$dir/inputs.sh"
        fi
    } | sha256sum | cut -c1-64
}

# finish_manifest DIR IMAGE HASH: manifest.in.json -> manifest.json with file digests.
finish_manifest() {
    python3 - "$1" "$2" "$3" << 'EOF'
import hashlib, json, os, sys

out, image, inputs = sys.argv[1], sys.argv[2], sys.argv[3]
src = os.path.join(out, "manifest.in.json")

def fail(msg):
    print(f"build.sh: {image}: {msg}", file=sys.stderr)
    sys.exit(1)

try:
    with open(src) as f:
        m = json.load(f)
except FileNotFoundError:
    fail("build-image.sh wrote no manifest.in.json")
except json.JSONDecodeError as e:
    fail(f"manifest.in.json is not valid JSON: {e}")
if not isinstance(m, dict):
    fail("manifest.in.json must hold a JSON object")
if m.get("name") != image:
    fail(f"manifest.in.json: \"name\" must be {image!r}, found {m.get('name')!r}")
for key in ("kernel", "cmdline"):
    if not isinstance(m.get(key), str) or (key == "kernel" and not m[key]):
        fail(f"manifest.in.json: \"{key}\" must be a string")
if "initrd" not in m or not (m["initrd"] is None or isinstance(m["initrd"], str)):
    fail("manifest.in.json: \"initrd\" must be a file name or null")
req = m.get("requires")
if (not isinstance(req, dict) or not isinstance(req.get("vmm"), list)
        or not all(isinstance(v, str) for v in req["vmm"])
        or not isinstance(req.get("min_memory_mib"), int) or req["min_memory_mib"] <= 0):
    fail("manifest.in.json: \"requires\" must be {\"vmm\": [str...], \"min_memory_mib\": N>0}")
os.unlink(src)

files = {}
for root, dirs, names in os.walk(out):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for n in sorted(names):
        if n.startswith(".") or (root == out and n == "manifest.json"):
            continue
        p = os.path.join(root, n)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        files[os.path.relpath(p, out)] = {"sha256": h.hexdigest(), "size": os.path.getsize(p)}
for key in ("kernel", "initrd"):
    if m.get(key) is not None and m[key] not in files:
        fail(f"manifest.in.json names {key} {m[key]!r}, but build-image.sh did not produce it")
m["files"] = files
m["inputs_sha256"] = inputs
tmp = os.path.join(out, "manifest.json.tmp")
with open(tmp, "w") as f:
    json.dump(m, f, indent=2, sort_keys=True)
    f.write("\n")
os.rename(tmp, os.path.join(out, "manifest.json"))
for name, info in files.items():
    print(f"  {name:<12} {info['size']:>10} bytes  sha256 {info['sha256'][:16]}")
EOF
}

# swap_in NEW DEST: makes NEW appear at DEST atomically; the old DEST ends up at NEW.
swap_in() {
    python3 - "$1" "$2" << 'EOF'
import ctypes, os, sys

new, dest = sys.argv[1], sys.argv[2]
if not os.path.lexists(dest):
    os.rename(new, dest)
    sys.exit(0)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
rc = -1
if hasattr(libc, "renameat2"):
    rc = libc.renameat2(AT_FDCWD, new.encode(), AT_FDCWD, dest.encode(), RENAME_EXCHANGE)
if rc != 0:
    # No renameat2 (old libc or file system): two renames, a short window without DEST.
    old = new + ".old"
    os.rename(dest, old)
    os.rename(new, dest)
    os.rename(old, new)
EOF
}

build_one() {
    local image=$1 dir="$images_dir/$1" out="$out_root/$1"
    if [ "$check" = 1 ]; then
        local hash built=none
        hash=$(input_hash "$image")
        [ -f "$out/manifest.json" ] && [ -f "$out/.input-hash" ] && built=$(cut -c1-12 "$out/.input-hash")
        if [ "$built" = "${hash:0:12}" ]; then
            echo "$image: up to date (inputs ${hash:0:12})"
            return 0
        fi
        echo "$image: needs a rebuild (inputs ${hash:0:12}, built: $built)"
        return 1
    fi
    if [ -f "$dir/build-deps" ]; then
        while read -r what pkg _; do
            case "$what" in '' | '#'*) continue ;; esac
            ensure_dep "$image" "$what" "${pkg:--}"
        done < "$dir/build-deps"
    fi

    mkdir -p "$out_root"
    # One build per image at a time (CI and a developer may both run build.sh).
    local lock_fd
    exec {lock_fd}> "$out_root/.$image.lock"
    if ! flock -n "$lock_fd"; then
        echo "$image: another build.sh is building it, waiting"
        flock "$lock_fd"
    fi

    local hash short
    hash=$(input_hash "$image")
    short=${hash:0:12}
    if [ "$force" = 0 ] && [ -f "$out/manifest.json" ] && [ -f "$out/.input-hash" ] &&
        [ "$(cat "$out/.input-hash")" = "$hash" ]; then
        echo "$image: up to date (inputs $short), nothing to do"
        return 0
    fi

    echo "$image: building (inputs $short) -> $out"
    local tmp start rc=0
    tmp=$(mktemp -d "$out_root/.$image.new.XXXXXX")
    start=$(date +%s)
    NUBIS_REPO_ROOT="$repo_root" NUBIS_IMAGE_NAME="$image" "$dir/build-image.sh" "$tmp" || rc=$?
    if [ "$rc" != 0 ]; then
        rm -rf "$tmp"
        echo "$prog: $image: build-image.sh failed (exit $rc)" >&2
        return 1
    fi
    if ! finish_manifest "$tmp" "$image" "$hash"; then
        rm -rf "$tmp"
        return 1
    fi
    printf '%s\n' "$hash" > "$tmp/.input-hash"
    chmod 755 "$tmp"
    swap_in "$tmp" "$out"
    rm -rf "$tmp"
    echo "$image: built in $(($(date +%s) - start)) s (inputs $short) -> $out"
}

failed=()
for n in "${names[@]}"; do
    # A subshell per image: errexit stays in force inside it, a failed image does not stop
    # the others, and its lock is released when it ends.
    set +e
    (
        set -e
        build_one "$n"
    )
    rc=$?
    set -e
    case "$rc" in
        0) ;;
        1) failed+=("$n") ;;
        *) exit "$rc" ;;
    esac
done
if [ ${#failed[@]} -gt 0 ]; then
    [ "$check" = 1 ] && die 1 "not up to date: ${failed[*]}"
    die 1 "failed: ${failed[*]}"
fi
