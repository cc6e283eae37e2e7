"""The Auto Scaling flow of issue 14 through the unmodified aws-cli: a launch
template and a group (min 2, desired 3, three zones) become 3 running
instances, one per zone; set-desired-capacity 6 gives two per zone; an
instance terminated by hand is replaced; SetInstanceProtection is honoured
on scale-in; delete-auto-scaling-group --force-delete removes every
instance. Bad input (MinSize > MaxSize, an unknown template or version, a
zone outside the region, a duplicate name) is a ValidationError or
AlreadyExists and creates nothing."""

import json
import subprocess
import time
from collections import Counter

import pytest


class AwsAs:
    """aws-cli `autoscaling` (and `ec2` for the template) against the gateway."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def run(self, service, *args):
        cmd = ["aws", "--endpoint-url", self.endpoint, "--output", "json", service, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    def ok(self, service, *args):
        p = self.run(service, *args)
        assert p.returncode == 0, f"aws {service} {' '.join(args)}: {p.stderr}"
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def fails(self, code, *args):
        p = self.run("autoscaling", *args)
        assert p.returncode != 0, f"aws autoscaling {' '.join(args)} succeeded"
        assert code in p.stderr, p.stderr

    def group(self, name):
        groups = self.ok("autoscaling", "describe-auto-scaling-groups",
                         "--auto-scaling-group-names", name)["AutoScalingGroups"]
        return groups[0] if groups else None


@pytest.fixture
def asc(endpoint):
    return AwsAs(endpoint)


def in_service(g):
    return [i for i in g["Instances"]
            if i["LifecycleState"] == "InService" and i["HealthStatus"] == "HEALTHY"]


def running_ids(ec2, ids):
    if not ids:
        return set()
    r = ec2.describe_instances(InstanceIds=ids)
    return {i["InstanceId"] for res in r["Reservations"] for i in res["Instances"]
            if i["State"]["Name"] == "running"}


def wait_for(asc, ec2, name, n, each=None, zones=(), timeout=240):
    """Waits for exactly n in-service instances, all running, `each` per zone."""
    end = time.time() + timeout
    while True:
        g = asc.group(name)
        live = in_service(g)
        ids = [i["InstanceId"] for i in live]
        per_zone = Counter(i["AvailabilityZone"] for i in live)
        if (len(live) == n and len(g["Instances"]) == n
                and running_ids(ec2, ids) == set(ids)
                and (each is None or all(per_zone[z] == each for z in zones))):
            return g
        assert time.time() < end, f"{name}: wanted {n} ({each} per zone), have {g['Instances']}"
        time.sleep(1)


def test_group_flow_with_aws_cli(asc, ec2, hello_ami, zones, tag):
    seen = set()
    asc.ok("ec2", "create-launch-template", "--launch-template-name", tag,
           "--launch-template-data",
           json.dumps({"ImageId": hello_ami, "InstanceType": "t3.nano"}))
    try:
        asc.ok("autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", tag,
               "--launch-template", f"LaunchTemplateName={tag},Version=$Latest",
               "--min-size", "2", "--max-size", "6", "--desired-capacity", "3",
               "--availability-zones", *zones)
        seen = {i["InstanceId"] for i in wait_for(asc, ec2, tag, 3, each=1, zones=zones)["Instances"]}

        asc.ok("autoscaling", "set-desired-capacity", "--auto-scaling-group-name", tag,
               "--desired-capacity", "6")
        g = wait_for(asc, ec2, tag, 6, each=2, zones=zones)
        seen |= {i["InstanceId"] for i in g["Instances"]}

        # Terminated by hand (EC2 API): replaced.
        victim = g["Instances"][0]["InstanceId"]
        asc.ok("ec2", "terminate-instances", "--instance-ids", victim)
        g = wait_for(asc, ec2, tag, 6, each=2, zones=zones)
        assert victim not in {i["InstanceId"] for i in g["Instances"]}
        seen |= {i["InstanceId"] for i in g["Instances"]}

        # Protected instances survive a scale-in to 2.
        keep = sorted(i["InstanceId"] for i in g["Instances"]
                      if i["AvailabilityZone"] == zones[0])
        asc.ok("autoscaling", "set-instance-protection", "--auto-scaling-group-name", tag,
               "--instance-ids", *keep, "--protected-from-scale-in")
        asc.ok("autoscaling", "set-desired-capacity", "--auto-scaling-group-name", tag,
               "--desired-capacity", "2")
        g = wait_for(asc, ec2, tag, 2)
        assert sorted(i["InstanceId"] for i in g["Instances"]) == keep
        assert all(i["ProtectedFromScaleIn"] for i in g["Instances"])

        acts = asc.ok("autoscaling", "describe-scaling-activities",
                      "--auto-scaling-group-name", tag)["Activities"]
        assert any(victim in a["Description"] for a in acts), acts
        assert all(a["StatusCode"] in ("Successful", "InProgress") for a in acts), acts
    finally:
        asc.run("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name", tag,
                "--force-delete")
    # ForceDelete: every instance terminated, then the group is gone.
    end = time.time() + 180
    while asc.group(tag) is not None:
        assert time.time() < end, asc.group(tag)
        time.sleep(1)
    left = ec2.describe_instances(InstanceIds=sorted(seen))
    states = {i["State"]["Name"] for r in left["Reservations"] for i in r["Instances"]}
    assert states <= {"terminated", "shutting-down"}, states
    asc.ok("ec2", "delete-launch-template", "--launch-template-name", tag)


def test_bad_group_input_with_aws_cli(asc, hello_ami, zones, tag):
    asc.ok("ec2", "create-launch-template", "--launch-template-name", tag,
           "--launch-template-data",
           json.dumps({"ImageId": hello_ami, "InstanceType": "t3.nano"}))
    base = ["create-auto-scaling-group", "--auto-scaling-group-name", tag]
    lt = ["--launch-template", f"LaunchTemplateName={tag}"]
    az = ["--availability-zones", zones[0]]
    try:
        asc.fails("ValidationError", *base, *lt, *az, "--min-size", "5", "--max-size", "2")
        asc.fails("ValidationError", *base, "--launch-template",
                  "LaunchTemplateName=nbt-no-such-template", *az,
                  "--min-size", "0", "--max-size", "1")
        asc.fails("ValidationError", *base, "--launch-template",
                  f"LaunchTemplateName={tag},Version=9", *az, "--min-size", "0", "--max-size", "1")
        asc.fails("ValidationError", *base, *lt, "--availability-zones", "us-east-1a",
                  "--min-size", "0", "--max-size", "1")
        assert asc.group(tag) is None, "a refused group was created"
        asc.ok("autoscaling", *base, *lt, *az, "--min-size", "0", "--max-size", "1")
        asc.fails("AlreadyExists", *base, *lt, *az, "--min-size", "0", "--max-size", "1")
        asc.ok("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name", tag)
        assert asc.group(tag) is None
    finally:
        asc.run("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name", tag,
                "--force-delete")
        asc.run("ec2", "delete-launch-template", "--launch-template-name", tag)
