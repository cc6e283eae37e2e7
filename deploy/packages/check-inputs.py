#!/usr/bin/env python3
"""Maps the files a traced build read to Debian packages and checks that each
package is accounted for by the install lists (deploy/packages/*.txt).

    check-inputs.py --lists FILE [--incidental FILE] [--require PKG]... [--skip DIR]...
                    [--verbose] TRACE...

TRACE: output of `strace -f -z -e trace=openat,execve -o TRACE ...` (only
successful calls). LISTS: the packages the install lists name, one a line (as
`deploy/install-deps.sh --list build` prints them).

A package is accounted for when it is
  * in the closure of the named packages over the Depends/Pre-Depends of the
    installed packages (what `apt-get install --no-install-recommends` of the
    lists pulls in; Recommends and Suggests never count), or
  * part of the Debian 12 base system: Essential, or Priority required or
    important -- what `debootstrap bookworm` installs on every machine -- and
    the closure of those.
A file under /usr, /opt, /bin, /lib, /sbin that no package owns fails the check
as well (something installed by hand, e.g. into /usr/local). Unowned files
under /etc and /var are configuration or state that maintainer scripts wrote
(/etc/ld.so.cache, /etc/ssl/certs/...); they are counted, not failed.
Files the incidental list (deploy/packages/incidental.txt) names, and the
shared libraries a process maps after opening one of them (a plugin), are read only
because they exist on this machine; they are counted, not checked.
Files in the build's own trees (the repository, $HOME with rustup and cargo,
temporary and virtual file systems) are not Debian build inputs and skipped.

Exit status: 0 all accounted for; 1 some package or file is not; 2 usage.
"""

import argparse
import fnmatch
import glob
import os
import re
import sys

DPKG = "/var/lib/dpkg"
BASE_PRIORITIES = {"required", "important"}
SKIP_PREFIXES = ("/proc/", "/sys/", "/dev/", "/tmp/", "/run/", "/var/tmp/")
STRICT_PREFIXES = ("/usr/", "/opt/", "/bin/", "/lib", "/sbin/")
CALL = re.compile(r'^(\d+)\s+(openat|execve)\((?:AT_FDCWD, )?"((?:[^"\\]|\\.)*)"')
SHARED_LIB = re.compile(r"\.so(\.[0-9]+)*$")


def parse_status():
    """Installed packages: name -> {priority, essential, depends, provides}."""
    pkgs = {}
    with open(os.path.join(DPKG, "status"), encoding="utf-8", errors="replace") as f:
        stanza = {}
        key = None
        for line in f.read().splitlines() + [""]:
            if not line:
                if stanza.get("Status", "").endswith(" installed") and "Package" in stanza:
                    pkgs[stanza["Package"]] = {
                        "priority": stanza.get("Priority", ""),
                        "essential": stanza.get("Essential", "") == "yes",
                        "depends": clauses(stanza.get("Pre-Depends", ""))
                        + clauses(stanza.get("Depends", "")),
                        "provides": [alt[0] for alt in clauses(stanza.get("Provides", ""))],
                    }
                stanza, key = {}, None
            elif line[0] in " \t":
                if key:
                    stanza[key] += " " + line.strip()
            else:
                key, _, value = line.partition(":")
                stanza[key] = value.strip()
    return pkgs


def clauses(field):
    """'a (>= 1) | b:any, c' -> [['a', 'b'], ['c']]"""
    out = []
    for clause in field.split(","):
        alts = []
        for alt in clause.split("|"):
            name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
            if name:
                alts.append(name)
        if alts:
            out.append(alts)
    return out


def closure(roots, pkgs):
    """Installed packages reachable from roots over Depends/Pre-Depends; every
    installed alternative and every installed provider of a virtual package."""
    providers = {}
    for name, p in pkgs.items():
        for v in p["provides"]:
            providers.setdefault(v, set()).add(name)
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        for real in ({name} if name in pkgs else set()) | providers.get(name, set()):
            if real in seen:
                continue
            seen.add(real)
            for alts in pkgs[real]["depends"]:
                todo.extend(alts)
    return seen


def owners():
    """File path -> set of owning packages, from dpkg's file lists."""
    own = {}
    for lst in glob.glob(os.path.join(DPKG, "info", "*.list")):
        pkg = os.path.basename(lst)[: -len(".list")].split(":")[0]
        with open(lst, encoding="utf-8", errors="replace") as f:
            for line in f:
                own.setdefault(line.rstrip("\n"), set()).add(pkg)
    return own


def candidates(path):
    """The names dpkg may have recorded for a file: as opened, normalised,
    resolved, and each across the /usr merge (/lib <-> /usr/lib, ...)."""
    names = [path, os.path.normpath(path), os.path.realpath(path)]
    out = []
    for n in names:
        out.append(n)
        for short in ("/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/"):
            if n.startswith("/usr" + short):
                out.append(n[len("/usr"):])
            elif n.startswith(short):
                out.append("/usr" + n)
    pyc = re.match(r"^(.*)/__pycache__/([^/.]+)\..*\.pyc$", os.path.realpath(path))
    if pyc:  # byte code Python wrote next to a packaged module
        out.append(f"{pyc.group(1)}/{pyc.group(2)}.py")
    return out


def incidental_patterns(path):
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        return [l.split()[0] for l in f if l.strip() and not l.lstrip().startswith("#")]


def traced_files(traces, incidental):
    """(files read, files read only incidentally), absolute paths."""
    files, extra = set(), set()
    for t in traces:
        tainted = set()  # (trace, pid) that opened an incidental file
        with open(t, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = CALL.match(line)
                if not m or not m.group(3).startswith("/"):
                    continue
                pid, call, path = m.groups()
                if call == "execve":
                    tainted.discard(pid)
                names = {path, os.path.normpath(path), os.path.realpath(path)}
                if any(fnmatch.fnmatch(n, p) for n in names for p in incidental):
                    if SHARED_LIB.search(path):  # a plugin: what it maps next is its own
                        tainted.add(pid)
                    extra.add(path)
                elif pid in tainted and SHARED_LIB.search(path):
                    extra.add(path)
                else:
                    files.add(path)
    return files, extra - files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", required=True)
    ap.add_argument("--incidental", help="patterns of files read only because they exist")
    ap.add_argument("--require", action="append", default=[])
    ap.add_argument("--skip", action="append", default=[], help="another tree to skip")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("traces", nargs="+")
    args = ap.parse_args()

    with open(args.lists, encoding="utf-8") as f:
        named = [l.split("#")[0].strip() for l in f]
    named = [n for n in named if n]
    pkgs = parse_status()
    not_installed = [n for n in named if n not in pkgs]
    listed = closure(named, pkgs)
    base_roots = [n for n, p in pkgs.items() if p["essential"] or p["priority"] in BASE_PRIORITIES]
    base = closure(base_roots, pkgs)
    own = owners()

    skips = SKIP_PREFIXES + tuple(os.path.join(os.path.realpath(s), "") for s in args.skip)
    used = {}  # package -> files
    unowned_strict, unowned_config = [], []
    files, incidental = traced_files(args.traces, incidental_patterns(args.incidental))
    for path in sorted(files):
        real = os.path.realpath(path)
        if path.startswith(skips) or real.startswith(skips) or not os.path.isfile(real):
            continue
        found = set()
        for c in candidates(path):
            found |= own.get(c, set())
        if found:
            for p in found:
                used.setdefault(p, []).append(path)
        elif real.startswith(STRICT_PREFIXES):
            unowned_strict.append(path)
        else:
            unowned_config.append(path)

    failed = False
    if not_installed:
        failed = True
        print(f"check-inputs: listed but not installed: {' '.join(not_installed)}")
    for req in args.require:
        if req not in listed and req not in base:
            failed = True
            print(f"check-inputs: {req} is required (build-deps) but neither listed nor base")
    missing = sorted(p for p in used if p not in listed and p not in base)
    for p in missing:
        failed = True
        files = used[p]
        more = f" (+{len(files) - 3} more)" if len(files) > 3 else ""
        print(f"check-inputs: the build read files of {p}, which no install list names: "
              f"{', '.join(files[:3])}{more}")
    for path in unowned_strict:
        failed = True
        print(f"check-inputs: the build read {path}, which no Debian package owns")

    print(f"check-inputs: {sum(len(v) for v in used.values())} system files from "
          f"{len(used)} packages ({len([p for p in used if p in listed])} via the lists, "
          f"{len([p for p in used if p not in listed and p in base])} base only); "
          f"{len(unowned_config)} unowned files under /etc, /var ignored; "
          f"{len(incidental)} incidental files not counted; "
          f"lists name {len(named)} packages, closure {len(listed)}, base {len(base)}")
    if args.verbose:
        for p in sorted(used):
            origin = "list" if p in listed else "base" if p in base else "MISSING"
            print(f"    {origin:7} {p} ({len(used[p])} files)")
        for path in unowned_config:
            print(f"    unowned {path}")
        for path in sorted(incidental):
            print(f"    incidental {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
