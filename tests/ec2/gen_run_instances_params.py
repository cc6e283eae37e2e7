#!/usr/bin/env python3
"""Lists every RunInstances parameter of EC2 API version 2016-11-15, as the
Query protocol flattens it, from botocore's service model (the botocore that
tests/ec2/requirements.txt pins), one `Name<TAB>sample-value` a line.

The output is control-plane/src/ec2/testdata/run_instances_params.txt, which
the gateway's parser tests read (no parameter EC2 defines may be answered
UnknownParameter). Regenerate after changing the pinned clients:

    target/ec2-venv/bin/python tests/ec2/gen_run_instances_params.py \
        > control-plane/src/ec2/testdata/run_instances_params.txt

`--check FILE` exits 1 when FILE differs from what the installed model gives
(test_sdk_model.py runs it).
"""

import gzip
import json
import os
import sys

import botocore

API_VERSION = "2016-11-15"
OPERATION = "RunInstances"


def load_model():
    base = os.path.join(os.path.dirname(botocore.__file__), "data", "ec2", API_VERSION)
    for name, opener in (("service-2.json.gz", gzip.open), ("service-2.json", open)):
        path = os.path.join(base, name)
        if os.path.exists(path):
            with opener(path, "rt") as f:
                return json.load(f)
    raise SystemExit(f"no EC2 {API_VERSION} model under {base}")


def query_name(member_name, member):
    # The ec2 protocol: queryName, else locationName capitalised, else the
    # member name capitalised (botocore/serialize.py, EC2Serializer).
    if "queryName" in member:
        return member["queryName"]
    name = member.get("locationName", member_name)
    return name[0].upper() + name[1:]


def sample(shape):
    kind = shape["type"]
    if kind == "boolean":
        return "false"
    if kind in ("integer", "long"):
        return "1"
    if kind == "timestamp":
        return "2030-01-01T00:00:00Z"
    if "enum" in shape:
        return shape["enum"][0]
    return "x"


def flatten(shapes, shape_name, prefix, out):
    shape = shapes[shape_name]
    kind = shape["type"]
    if kind == "structure":
        for member_name, member in shape["members"].items():
            name = query_name(member_name, member)
            flatten(shapes, member["shape"], f"{prefix}.{name}" if prefix else name, out)
    elif kind == "list":
        # EC2 lists are always flattened as Name.N.
        flatten(shapes, shape["member"]["shape"], f"{prefix}.1", out)
    elif kind == "map":
        raise SystemExit(f"{prefix}: maps are not used by {OPERATION}")
    else:
        out.append((prefix, sample(shape)))


def generate():
    model = load_model()
    shapes = model["shapes"]
    out = []
    flatten(shapes, model["operations"][OPERATION]["input"]["shape"], "", out)
    lines = [f"# {OPERATION} parameters of EC2 {API_VERSION}, botocore {botocore.__version__}"]
    lines += [f"{name}\t{value}" for name, value in sorted(out)]
    return "\n".join(lines) + "\n"


def main():
    text = generate()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2]) as f:
            if f.read() != text:
                sys.stderr.write(f"{sys.argv[2]} is out of date; regenerate it (see the docstring)\n")
                return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
