"""Issue 17's images, root volumes and security-group changes through boto3
and aws-cli: the root BlockDeviceMapping's VolumeSize (refused below the
image's size, shown as an EBS mapping), DescribeImages owners, ExecutableBy
and filters, ModifyImageAttribute / DescribeImageAttribute, CopyImage with
ClientToken, launch permissions enforced in RunInstances with tenant
isolation, and ModifyInstanceAttribute groupSet. Every error code is
produced on purpose."""

import uuid

import pytest

from conftest import wait_until
from test_errors import code_of

ROOT = "/dev/xvda"


def _account(client):
    return client.describe_security_groups()["SecurityGroups"][0]["OwnerId"]


@pytest.fixture
def images(ec2):
    """Image ids to deregister at the end of the test (as account A)."""
    ids = []
    yield ids
    for i in ids:
        try:
            ec2.deregister_image(ImageId=i)
        except Exception as e:  # noqa: BLE001 - best effort clean-up
            print(f"cleanup: deregister {i}: {e}")


def _register(ec2, images, size=None, **kw):
    if size:
        kw["BlockDeviceMappings"] = [{"DeviceName": ROOT, "Ebs": {"VolumeSize": size}}]
        kw["RootDeviceName"] = ROOT
    iid = ec2.register_image(Name=f"img-{uuid.uuid4().hex[:10]}", ImageLocation="hello",
                             **kw)["ImageId"]
    images.append(iid)
    return iid


def test_root_volume_size(ec2, ec2_once, aws, images, cleanup, tag):
    ami = _register(ec2, images, size=2)
    img = ec2.describe_images(ImageIds=[ami])["Images"][0]
    assert img["RootDeviceType"] == "ebs" and img["RootDeviceName"] == ROOT
    ebs = img["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["VolumeSize"] == 2 and ebs["SnapshotId"] == "snap-" + ami[4:]

    def run(size, client=ec2):
        return client.run_instances(
            ImageId=ami, InstanceType="t3.nano", MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": ROOT, "Ebs": {"VolumeSize": size,
                                                              "DeleteOnTermination": True}}],
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "t", "Value": tag}]}])

    mine = [{"Name": "tag:t", "Values": [tag]}]
    assert code_of(run, size=1, client=ec2_once) == ("InvalidBlockDeviceMapping", 400)
    assert ec2.describe_instances(Filters=mine)["Reservations"] == []
    assert code_of(run, size=16385, client=ec2_once)[0] == "InvalidParameterValue"

    iid = run(3)["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["RootDeviceType"] == "ebs"
    [bdm] = inst["BlockDeviceMappings"]
    assert bdm["DeviceName"] == ROOT
    assert bdm["Ebs"]["VolumeId"] == "vol-" + iid[2:]
    assert bdm["Ebs"]["DeleteOnTermination"] is True and bdm["Ebs"]["Status"] == "attached"
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="blockDeviceMapping")
    assert attr["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] == "vol-" + iid[2:]

    # aws-cli: the same refusal.
    p = aws.run("run-instances", "--image-id", ami, "--instance-type", "t3.nano",
                "--block-device-mappings", f"DeviceName={ROOT},Ebs={{VolumeSize=1}}",
                check=False)
    assert p.returncode != 0 and "InvalidBlockDeviceMapping" in p.stderr, p.stderr


def test_images_shared_copied_and_isolated(ec2, ec2_once, ec2_other, aws, region, images,
                                           hello_ami, cleanup):
    a_id, b_id = _account(ec2), _account(ec2_other)
    ami = _register(ec2, images, Description="private",
                    TagSpecifications=[{"ResourceType": "image",
                                        "Tags": [{"Key": "team", "Value": "a"}]}])
    run = dict(ImageId=ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)

    # B: not visible, not launchable, not copyable, not modifiable.
    nf = ("InvalidAMIID.NotFound", 400)
    assert code_of(ec2_other.describe_images, ImageIds=[ami]) == nf
    assert code_of(ec2_other.run_instances, **run) == nf
    assert code_of(ec2_other.copy_image, SourceRegion=region, SourceImageId=ami,
                   Name="stolen") == nf
    assert code_of(ec2_other.modify_image_attribute, ImageId=ami,
                   LaunchPermission={"Add": [{"UserId": b_id}]}) == nf
    assert code_of(ec2_other.describe_image_attribute, ImageId=ami,
                   Attribute="launchPermission") == nf

    # Errors produced on purpose.
    lp = ec2_once.modify_image_attribute
    assert code_of(lp, ImageId=ami, LaunchPermission={"Add": [{"UserId": "abc"}]})[0] == \
        "InvalidUserID.Malformed"
    assert code_of(lp, ImageId=ami, LaunchPermission={"Add": [{"Group": "all"}]}) == (
        "UnauthorizedOperation", 403)
    assert code_of(lp, ImageId=ami, Attribute="kernel", Value="x")[0] == "InvalidParameterValue"
    assert code_of(ec2_once.copy_image, SourceRegion="elsewhere-1", SourceImageId=ami,
                   Name="copy")[0] == "InvalidParameterValue"
    name = ec2.describe_images(ImageIds=[ami])["Images"][0]["Name"]
    assert code_of(ec2_once.copy_image, SourceRegion=region, SourceImageId=ami,
                   Name=name)[0] == "InvalidAMIName.Duplicate"
    assert code_of(ec2_once.describe_images, Owners=["nobody"])[0] == "InvalidParameterValue"
    assert code_of(ec2_once.describe_image_attribute, ImageId=ami,
                   Attribute="nope")[0] == "InvalidParameterValue"
    assert ec2.describe_image_attribute(ImageId=ami,
                                        Attribute="launchPermission")["LaunchPermissions"] == []

    # Shared with B.
    ec2.modify_image_attribute(ImageId=ami, LaunchPermission={"Add": [{"UserId": b_id}]})
    got = ec2.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    assert got["LaunchPermissions"] == [{"UserId": b_id}]
    ec2.modify_image_attribute(ImageId=ami, Description={"Value": "shared"})
    assert ec2.describe_image_attribute(ImageId=ami,
                                        Attribute="description")["Description"]["Value"] == "shared"
    seen = ec2_other.describe_images(ImageIds=[ami])["Images"][0]
    assert seen["OwnerId"] == a_id and seen.get("Tags", []) == []
    assert [i["ImageId"] for i in ec2_other.describe_images(ExecutableUsers=["self"])["Images"]] \
        == [ami]
    assert ami not in [i["ImageId"] for i in ec2_other.describe_images(Owners=["self"])["Images"]]
    iid = ec2_other.run_instances(**run)["Instances"][0]["InstanceId"]
    try:
        assert code_of(ec2_other.modify_image_attribute, ImageId=ami,
                       Description={"Value": "b"}) == ("UnauthorizedOperation", 403)
        copy = ec2_other.copy_image(SourceRegion=region, SourceImageId=ami, Name="b-copy",
                                    ClientToken="tok-1")["ImageId"]
        try:
            assert ec2_other.copy_image(SourceRegion=region, SourceImageId=ami, Name="b-copy",
                                        ClientToken="tok-1")["ImageId"] == copy
            assert code_of(ec2_other.copy_image, SourceRegion=region, SourceImageId=ami,
                           Name="b-other", ClientToken="tok-1")[0] == \
                "IdempotentParameterMismatch"
            owned = ec2_other.describe_images(Owners=["self"])["Images"]
            assert [(i["ImageId"], i["Public"]) for i in owned] == [(copy, False)]

            # Unshared: gone for B again; B's copy stays B's alone.
            ec2.modify_image_attribute(ImageId=ami,
                                       LaunchPermission={"Remove": [{"UserId": b_id}]})
            assert code_of(ec2_other.describe_images, ImageIds=[ami]) == nf
            assert code_of(ec2_other.run_instances, **run) == nf
            assert code_of(ec2_once.run_instances, ImageId=copy, InstanceType="t3.nano",
                           MinCount=1, MaxCount=1) == nf
        finally:
            ec2_other.deregister_image(ImageId=copy)
    finally:
        ec2_other.terminate_instances(InstanceIds=[iid])

    # aws-cli: owners, filters, the launch-permission shorthand.
    out = aws.json("describe-images", "--owners", "amazon", "--query", "Images[].Name")
    assert "hello" in out
    out = aws.json("describe-images", "--filters", "Name=owner-alias,Values=amazon",
                   "Name=root-device-type,Values=ebs", "--query", "Images[].ImageId")
    assert hello_ami in out and ami not in out
    out = aws.json("describe-images", "--owners", "self", "--filters",
                   "Name=tag:team,Values=a", "Name=description,Values=sha*",
                   "--query", "Images[].ImageId")
    assert out == [ami]
    aws.run("modify-image-attribute", "--image-id", ami, "--launch-permission",
            f"Add=[{{UserId={b_id}}}]")
    out = aws.json("describe-image-attribute", "--image-id", ami, "--attribute",
                   "launchPermission")
    assert out["LaunchPermissions"] == [{"UserId": b_id}]


def test_modify_group_set(ec2, ec2_once, ec2_other, hello_ami, cleanup, tag):
    out = ec2.run_instances(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
    inst = out["Instances"][0]
    iid, vpc = inst["InstanceId"], inst["VpcId"]
    cleanup.append(iid)
    made = []
    other_vpc = ec2.create_vpc(CidrBlock="10.78.0.0/16")["Vpc"]["VpcId"]
    try:
        web = ec2.create_security_group(GroupName=f"web-{tag}", Description="t",
                                        VpcId=vpc)["GroupId"]
        made.append(web)
        far = ec2.create_security_group(GroupName=f"far-{tag}", Description="t",
                                        VpcId=other_vpc)["GroupId"]
        made.append(far)
        b_group = ec2_other.describe_security_groups()["SecurityGroups"][0]["GroupId"]

        m = ec2_once.modify_instance_attribute
        assert code_of(m, InstanceId=iid, Groups=[b_group]) == ("InvalidGroup.NotFound", 400)
        assert code_of(m, InstanceId=iid, Groups=[far])[0] == "InvalidParameterValue"
        assert code_of(m, InstanceId=iid, Groups=["sg-0123456789abcdef0"])[0] == \
            "InvalidGroup.NotFound"
        assert code_of(ec2_other.modify_instance_attribute, InstanceId=iid,
                       Groups=[b_group])[0] == "InvalidInstanceID.NotFound"
        before = ec2.describe_instance_attribute(InstanceId=iid, Attribute="groupSet")["Groups"]
        assert [g["GroupId"] for g in before] == [g["GroupId"] for g in inst["SecurityGroups"]]

        ec2.modify_instance_attribute(InstanceId=iid, Groups=[web])
        got = ec2.describe_instance_attribute(InstanceId=iid, Attribute="groupSet")["Groups"]
        assert [g["GroupId"] for g in got] == [web]
        desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert [g["GroupId"] for g in desc["SecurityGroups"]] == [web]
        assert code_of(ec2_once.delete_security_group, GroupId=web)[0] == "DependencyViolation"
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until("terminated", lambda: ec2.describe_instances(InstanceIds=[iid])
                   ["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated",
                   timeout=120)
        for g in made:
            ec2.delete_security_group(GroupId=g)
        ec2.delete_vpc(VpcId=other_vpc)
