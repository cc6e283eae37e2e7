"""The gateway's parser tests follow the SDK: the RunInstances parameter list
they read (control-plane/src/ec2/testdata/run_instances_params.txt) must be
exactly what the pinned botocore's EC2 2016-11-15 model gives."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_run_instances_parameter_list_matches_the_botocore_model():
    fixture = os.path.join(ROOT, "control-plane/src/ec2/testdata/run_instances_params.txt")
    script = os.path.join(ROOT, "tests/ec2/gen_run_instances_params.py")
    done = subprocess.run(
        [sys.executable, script, "--check", fixture], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_run_instances_parameter_list_is_complete():
    # A few parameters the issue names, so that a broken generator (an empty
    # or truncated list) cannot pass the check above by being regenerated.
    with open(os.path.join(ROOT, "control-plane/src/ec2/testdata/run_instances_params.txt")) as f:
        names = {line.split("\t")[0] for line in f if not line.startswith("#")}
    for name in (
        "Monitoring.Enabled",
        "EbsOptimized",
        "DisableApiStop",
        "DisableApiTermination",
        "HibernationOptions.Configured",
        "InstanceInitiatedShutdownBehavior",
        "Placement.Tenancy",
        "BlockDeviceMapping.1.Ebs.VolumeSize",
        "PrivateIpAddress",
        "NetworkInterface.1.SubnetId",
    ):
        assert name in names, name
    assert len(names) > 100
