"""boto3 resource API, key pairs, tags, region-level reads."""

import base64

import pytest
from botocore.exceptions import ClientError


def test_resource_create_wait_filter(ec2_resource, hello_ami, tag, cleanup, region):
    created = ec2_resource.create_instances(
        ImageId=hello_ami, InstanceType="t3.nano", MinCount=2, MaxCount=2,
        UserData="#!/bin/sh\necho boto3\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": tag}]}],
    )
    cleanup.extend(i.id for i in created)
    for inst in created:
        inst.wait_until_running(WaiterConfig={"Delay": 2, "MaxAttempts": 300})
        inst.reload()
        assert inst.state["Name"] == "running"
        assert inst.instance_type == "t3.nano"
        assert inst.placement["AvailabilityZone"] in {region + z for z in "abc"}
        assert {"Key": "Name", "Value": tag} in inst.tags
    found = ec2_resource.instances.filter(
        Filters=[{"Name": "tag:Name", "Values": [tag]},
                 {"Name": "instance-state-name", "Values": ["running"]}]
    )
    assert sorted(i.id for i in found) == sorted(i.id for i in created)
    # Stop one through the resource and wait.
    created[0].stop()
    created[0].wait_until_stopped(WaiterConfig={"Delay": 2, "MaxAttempts": 300})
    stopped = ec2_resource.instances.filter(
        Filters=[{"Name": "tag:Name", "Values": [tag]},
                 {"Name": "instance-state-name", "Values": ["stopped"]}]
    )
    assert [i.id for i in stopped] == [created[0].id]
    for inst in created:
        inst.terminate()
    for inst in created:
        inst.wait_until_terminated(WaiterConfig={"Delay": 2, "MaxAttempts": 300})
    cleanup.clear()


def test_instance_status(ec2, hello_ami, cleanup):
    out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
    iid = out["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig={"Delay": 2, "MaxAttempts": 300})
    st = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]
    assert st[0]["InstanceId"] == iid
    assert st[0]["InstanceState"]["Name"] == "running"
    assert st[0]["SystemStatus"]["Status"] in ("ok", "initializing")
    out = ec2.reboot_instances(InstanceIds=[iid])
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_key_pairs(ec2, ec2_once, tag):
    name = f"key-{tag}"
    created = ec2.create_key_pair(KeyName=name, KeyType="ed25519")
    assert created["KeyName"] == name
    assert "PRIVATE KEY" in created["KeyMaterial"]
    assert created["KeyPairId"].startswith("key-")
    with pytest.raises(ClientError) as e:
        ec2_once.create_key_pair(KeyName=name)
    assert e.value.response["Error"]["Code"] == "InvalidKeyPair.Duplicate"
    listed = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
    assert listed[0]["KeyFingerprint"] == created["KeyFingerprint"]

    imported_name = f"imp-{tag}"
    # A well-formed ed25519 public key (32 zero bytes of key).
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(32)
    line = b"ssh-ed25519 " + base64.b64encode(blob) + b" test@nubis"
    imp = ec2.import_key_pair(KeyName=imported_name, PublicKeyMaterial=line)
    assert imp["KeyName"] == imported_name
    names = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    assert {name, imported_name} <= names
    with pytest.raises(ClientError) as e:
        ec2_once.import_key_pair(KeyName=f"bad-{tag}", PublicKeyMaterial=b"not a key")
    assert e.value.response["Error"]["Code"] == "InvalidKey.Format"

    ec2.delete_key_pair(KeyName=name)
    ec2.delete_key_pair(KeyName=imported_name)
    with pytest.raises(ClientError) as e:
        ec2_once.describe_key_pairs(KeyNames=[name])
    assert e.value.response["Error"]["Code"] == "InvalidKeyPair.NotFound"


def test_run_with_key_name(ec2, hello_ami, tag, cleanup):
    name = f"runkey-{tag}"
    ec2.create_key_pair(KeyName=name)
    try:
        out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1,
                                MaxCount=1, KeyName=name)
        cleanup.append(out["Instances"][0]["InstanceId"])
        assert out["Instances"][0]["KeyName"] == name
    finally:
        ec2.delete_key_pair(KeyName=name)


def test_tags(ec2, hello_ami, tag, cleanup):
    out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
    iid = out["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "team", "Value": tag}, {"Key": "tier", "Value": "web"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert {(t["Key"], t["Value"], t["ResourceType"]) for t in tags} == {
        ("team", tag, "instance"), ("tier", "web", "instance")}
    by_key = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["team"]},
                                        {"Name": "value", "Values": [tag]}])["Tags"]
    assert [t["ResourceId"] for t in by_key] == [iid]
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "tier"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
    assert [t["Key"] for t in tags] == ["team"]
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["Tags"] == [{"Key": "team", "Value": tag}]


def test_region_reads(ec2, region):
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == [f"{region}a", f"{region}b", f"{region}c"]
    assert all(z["State"] == "available" and z["RegionName"] == region for z in zones)
    regions = ec2.describe_regions()["Regions"]
    assert [r["RegionName"] for r in regions] == [region]
    types = ec2.describe_instance_types(InstanceTypes=["t3.nano", "t3.micro"])["InstanceTypes"]
    assert {t["InstanceType"]: t["MemoryInfo"]["SizeInMiB"] for t in types} == {
        "t3.nano": 64, "t3.micro": 128}
    assert types[0]["VCpuInfo"]["DefaultVCpus"] >= 1
    images = ec2.describe_images(Owners=["self"])["Images"]
    assert all(i["OwnerId"] != "000000000000" for i in images)


def test_register_and_deregister_image(ec2, tag):
    image_id = ec2.register_image(Name=f"img-{tag}", ImageLocation="hello",
                                  Description="registered by the EC2 tests")["ImageId"]
    try:
        got = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        assert got["Name"] == f"img-{tag}"
        assert got["State"] == "available"
        assert got["Public"] is False
    finally:
        ec2.deregister_image(ImageId=image_id)
    with pytest.raises(ClientError) as e:
        ec2.describe_images(ImageIds=[image_id])
    assert e.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"
