"""aws-cli end to end: run-instances with tags and user data, waiters,
describe with filters and pagination, console output, stop/start, terminate."""

from conftest import wait_until


def test_instance_lifecycle_with_aws_cli(aws, hello_ami, zones, tag, cleanup, tmp_path):
    user_data = tmp_path / "user-data.sh"
    user_data.write_text("#!/bin/sh\necho hello from user data\n")
    zone = zones[1]
    out = aws.json(
        "run-instances",
        "--image-id", hello_ami,
        "--instance-type", "t3.nano",
        "--count", "2",
        "--placement", f"AvailabilityZone={zone}",
        "--user-data", f"file://{user_data}",
        "--tag-specifications",
        f"ResourceType=instance,Tags=[{{Key=Name,Value={tag}}},{{Key=suite,Value=ec2}}]",
    )
    ids = [i["InstanceId"] for i in out["Instances"]]
    cleanup.extend(ids)
    assert len(ids) == 2
    assert out["ReservationId"].startswith("r-")
    for i in out["Instances"]:
        assert i["State"]["Name"] == "pending"
        assert i["Placement"]["AvailabilityZone"] == zone
        assert {"Key": "Name", "Value": tag} in i["Tags"]

    aws.run("wait", "instance-running", "--instance-ids", *ids)

    # Filters: tag, state, zone, type, image.
    got = aws.json(
        "describe-instances",
        "--filters",
        f"Name=tag:Name,Values={tag}",
        "Name=instance-state-name,Values=running",
        f"Name=availability-zone,Values={zone}",
        "Name=instance-type,Values=t3.nano",
        f"Name=image-id,Values={hello_ami}",
    )
    found = sorted(i["InstanceId"] for r in got["Reservations"] for i in r["Instances"])
    assert found == sorted(ids)
    inst = got["Reservations"][0]["Instances"][0]
    assert inst["State"] == {"Code": 16, "Name": "running"}
    assert inst["PrivateIpAddress"]
    # A filter nothing matches gives an empty set, not an error.
    none = aws.json("describe-instances", "--filters", f"Name=tag:Name,Values={tag}-none")
    assert none["Reservations"] == []
    # tag-key
    got = aws.json("describe-instances", "--filters", "Name=tag-key,Values=suite",
                   f"Name=tag:Name,Values={tag}")
    assert len([i for r in got["Reservations"] for i in r["Instances"]]) == 2

    # Console output (base64 on the wire; aws-cli decodes it).
    def ready():
        c = aws.json("get-console-output", "--instance-id", ids[0])
        return f"NUBIS-GUEST-READY {ids[0]}" in c.get("Output", "")

    wait_until("the guest's ready line", ready, timeout=300, delay=2)

    # Stop, wait, start, wait.
    out = aws.json("stop-instances", "--instance-ids", ids[0])
    change = out["StoppingInstances"][0]
    assert change["InstanceId"] == ids[0]
    assert change["PreviousState"]["Name"] == "running"
    aws.run("wait", "instance-stopped", "--instance-ids", ids[0])
    out = aws.json("start-instances", "--instance-ids", ids[0])
    assert out["StartingInstances"][0]["PreviousState"]["Name"] == "stopped"
    aws.run("wait", "instance-running", "--instance-ids", ids[0])

    # Terminate, wait.
    out = aws.json("terminate-instances", "--instance-ids", *ids)
    assert sorted(c["InstanceId"] for c in out["TerminatingInstances"]) == sorted(ids)
    aws.run("wait", "instance-terminated", "--instance-ids", *ids)
    cleanup.clear()


def test_pagination(ec2, aws, hello_ami, tag, cleanup):
    out = ec2.run_instances(
        ImageId=hello_ami, InstanceType="t3.nano", MinCount=6, MaxCount=6,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "page", "Value": tag}]}],
    )
    ids = sorted(i["InstanceId"] for i in out["Instances"])
    cleanup.extend(ids)
    flt = [{"Name": "tag:page", "Values": [tag]}]
    first = ec2.describe_instances(Filters=flt, MaxResults=5)
    assert "NextToken" in first
    second = ec2.describe_instances(Filters=flt, MaxResults=5, NextToken=first["NextToken"])
    assert "NextToken" not in second
    pages = [i["InstanceId"] for p in (first, second) for r in p["Reservations"] for i in r["Instances"]]
    assert sorted(pages) == ids
    # boto3's paginator and aws-cli's --page-size follow NextToken themselves.
    seen = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=flt, PaginationConfig={"PageSize": 5}
    ):
        seen += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
    assert sorted(seen) == ids
    cli = aws.json("describe-instances", "--filters", f"Name=tag:page,Values={tag}",
                   "--page-size", "5")
    assert sorted(i["InstanceId"] for r in cli["Reservations"] for i in r["Instances"]) == ids
