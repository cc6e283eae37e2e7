"""Elastic network interfaces through unmodified boto3 and aws-cli (issue
12): create, describe (with filters), tag, modify and delete an interface;
launch an instance with it as its primary interface (RunInstances
NetworkInterfaces) and see it in DescribeInstances; terminate detaches it
(address kept); every instance's derived primary interface; the EC2 error
codes of misuse (each refusal writing nothing) and tenant isolation.

Secondary interfaces (device index >= 1): launched with one
(RunInstances NetworkInterfaces), attach and detach only while the instance
is stopped (IncorrectInstanceState while it runs: no hot-plug), both shown
by DescribeInstances and DescribeNetworkInterfaces, detached at terminate.
"""

import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import wait_until


def code(fn, **kwargs):
    with pytest.raises(ClientError) as e:
        fn(**kwargs)
    return e.value.response["Error"]["Code"]


def unique_cidr():
    # A /16 in 10.192.0.0/10 per test, so reruns on one cluster do not collide.
    return f"10.{192 + uuid.uuid4().int % 64}.0.0/16"


def instance(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def eni(ec2, eni_id):
    return ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]


def test_enis_lifecycle_launch_and_terminate(ec2, aws, hello_ami, zones, tag, cleanup):
    cidr = unique_cidr()
    base = cidr.split(".0.0/")[0]
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.1.0/24", AvailabilityZone=zones[0])[
        "Subnet"
    ]["SubnetId"]
    sg = ec2.create_security_group(GroupName="eni-web", Description="web", VpcId=vpc_id)["GroupId"]
    eni_id = None
    try:
        created = ec2.create_network_interface(
            SubnetId=subnet,
            Groups=[sg],
            PrivateIpAddress=f"{base}.1.40",
            Description="app",
            TagSpecifications=[
                {"ResourceType": "network-interface", "Tags": [{"Key": "t", "Value": tag}]}
            ],
        )["NetworkInterface"]
        eni_id = created["NetworkInterfaceId"]
        assert eni_id.startswith("eni-")
        assert created["Status"] == "available"
        assert created["PrivateIpAddress"] == f"{base}.1.40"
        assert created["VpcId"] == vpc_id and created["SubnetId"] == subnet
        assert created["AvailabilityZone"] == zones[0]
        assert [g["GroupId"] for g in created["Groups"]] == [sg]
        assert created["Groups"][0]["GroupName"] == "eni-web"
        assert created["MacAddress"].startswith("02:")
        assert {"Key": "t", "Value": tag} in created["TagSet"]
        # aws-cli sees the same, filtered by tag.
        listed = aws.json(
            "describe-network-interfaces", "--filters", f"Name=tag:t,Values={tag}"
        )["NetworkInterfaces"]
        assert [e["NetworkInterfaceId"] for e in listed] == [eni_id]

        # Misuse: EC2 codes, nothing written.
        assert code(
            ec2.create_network_interface, SubnetId=subnet, PrivateIpAddress=f"{base}.1.40"
        ) == "InvalidIPAddress.InUse"
        assert code(
            ec2.create_network_interface, SubnetId="subnet-0123456789abcdef0"
        ) == "InvalidSubnetID.NotFound"
        assert code(
            ec2.create_network_interface, SubnetId=subnet, Groups=["sg-0123456789abcdef0"]
        ) == "InvalidGroup.NotFound"
        assert code(
            ec2.describe_network_interfaces, NetworkInterfaceIds=["eni-0123456789abcdef0"]
        ) == "InvalidNetworkInterfaceID.NotFound"
        assert code(ec2.delete_security_group, GroupId=sg) == "DependencyViolation"
        assert code(ec2.delete_subnet, SubnetId=subnet) == "DependencyViolation"
        mine = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        assert len(mine["NetworkInterfaces"]) == 1

        ec2.modify_network_interface_attribute(
            NetworkInterfaceId=eni_id, Description={"Value": "app server"}
        )
        assert eni(ec2, eni_id)["Description"] == "app server"

        # Launch with it: the instance's primary interface.
        r = ec2.run_instances(
            ImageId=hello_ami,
            InstanceType="t3.nano",
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=[{"DeviceIndex": 0, "NetworkInterfaceId": eni_id}],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
        )
        iid = r["Instances"][0]["InstanceId"]
        cleanup.append(iid)
        inst = instance(ec2, iid)
        assert inst["PrivateIpAddress"] == f"{base}.1.40"
        nics = inst["NetworkInterfaces"]
        assert [n["NetworkInterfaceId"] for n in nics] == [eni_id]
        assert nics[0]["Attachment"]["DeviceIndex"] == 0
        assert nics[0]["Attachment"]["DeleteOnTermination"] is False
        assert nics[0]["MacAddress"] == created["MacAddress"]
        attached = eni(ec2, eni_id)
        assert attached["Status"] == "in-use"
        assert attached["Attachment"]["InstanceId"] == iid
        by_instance = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [iid]}]
        )["NetworkInterfaces"]
        assert [e["NetworkInterfaceId"] for e in by_instance] == [eni_id]

        assert code(ec2.delete_network_interface, NetworkInterfaceId=eni_id) == (
            "InvalidNetworkInterface.InUse"
        )
        assert code(
            ec2.detach_network_interface, AttachmentId=attached["Attachment"]["AttachmentId"]
        ) == "OperationNotPermitted"
        spare = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"][
            "NetworkInterfaceId"
        ]
        try:
            # A running instance: no hot-plug.
            assert code(
                ec2.attach_network_interface, NetworkInterfaceId=spare, InstanceId=iid, DeviceIndex=1
            ) == "IncorrectInstanceState"
        finally:
            ec2.delete_network_interface(NetworkInterfaceId=spare)

        # Terminate: detached (not deleteOnTermination), address kept.
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(
            "the interface back to available",
            lambda: eni(ec2, eni_id)["Status"] == "available",
            timeout=120,
        )
        assert eni(ec2, eni_id)["PrivateIpAddress"] == f"{base}.1.40"
    finally:
        if eni_id:
            wait_until(
                "the interface deleted",
                lambda: _try_delete(ec2, eni_id),
                timeout=120,
            )
        ec2.delete_security_group(GroupId=sg)
        ec2.delete_subnet(SubnetId=subnet)
        ec2.delete_vpc(VpcId=vpc_id)


def _try_delete(ec2, eni_id):
    try:
        ec2.delete_network_interface(NetworkInterfaceId=eni_id)
        return True
    except ClientError as e:
        return e.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"


def test_enis_primary_interface_of_every_instance(ec2, hello_ami, tag, cleanup):
    r = ec2.run_instances(
        ImageId=hello_ami,
        InstanceType="t3.nano",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
    )
    iid = r["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    inst = instance(ec2, iid)
    nic = inst["NetworkInterfaces"][0]
    described = eni(ec2, nic["NetworkInterfaceId"])
    assert described["Attachment"]["InstanceId"] == iid
    assert described["Attachment"]["DeviceIndex"] == 0
    assert described["PrivateIpAddress"] == inst["PrivateIpAddress"]
    assert described["MacAddress"] == nic["MacAddress"]
    assert code(ec2.delete_network_interface, NetworkInterfaceId=nic["NetworkInterfaceId"]) == (
        "InvalidNetworkInterface.InUse"
    )


def test_enis_tenant_isolation(ec2_once, ec2_other):
    ec2 = ec2_once
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])[
        "Subnets"
    ][0]["SubnetId"]
    eni_id = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    try:
        assert code(ec2_other.describe_network_interfaces, NetworkInterfaceIds=[eni_id]) == (
            "InvalidNetworkInterfaceID.NotFound"
        )
        assert code(ec2_other.delete_network_interface, NetworkInterfaceId=eni_id) == (
            "InvalidNetworkInterfaceID.NotFound"
        )
        assert eni_id not in [
            e["NetworkInterfaceId"]
            for e in ec2_other.describe_network_interfaces()["NetworkInterfaces"]
        ]
        assert eni(ec2, eni_id)["Status"] == "available"
    finally:
        ec2.delete_network_interface(NetworkInterfaceId=eni_id)


def test_enis_secondary_interfaces(ec2, aws, hello_ami, zones, tag, cleanup):
    vpc_id, _, s1, s2 = _vpc_with_two_subnets(ec2, zones[0])
    sg = ec2.create_security_group(GroupName="eni-db", Description="db", VpcId=vpc_id)["GroupId"]
    second = ec2.create_network_interface(SubnetId=s2, Groups=[sg])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    third = ec2.create_network_interface(SubnetId=s1)["NetworkInterface"]["NetworkInterfaceId"]
    iid = None
    try:
        # Launched with two interfaces: a new primary in s1 and `second`.
        r = ec2.run_instances(
            ImageId=hello_ami,
            InstanceType="t3.nano",
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=[
                {"DeviceIndex": 0, "SubnetId": s1},
                {"DeviceIndex": 1, "NetworkInterfaceId": second},
            ],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
        )
        iid = r["Instances"][0]["InstanceId"]
        cleanup.append(iid)
        nics = sorted(
            instance(ec2, iid)["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"]
        )
        assert [n["Attachment"]["DeviceIndex"] for n in nics] == [0, 1]
        assert nics[1]["NetworkInterfaceId"] == second
        assert nics[1]["SubnetId"] == s2
        assert [g["GroupId"] for g in nics[1]["Groups"]] == [sg]
        assert eni(ec2, second)["Attachment"]["InstanceId"] == iid
        assert eni(ec2, second)["Attachment"]["DeviceIndex"] == 1

        # Running: no hot-plug.
        assert code(
            ec2.attach_network_interface, NetworkInterfaceId=third, InstanceId=iid, DeviceIndex=2
        ) == "IncorrectInstanceState"
        ec2.stop_instances(InstanceIds=[iid])
        wait_until(
            "stopped",
            lambda: instance(ec2, iid)["State"]["Name"] == "stopped",
            timeout=120,
        )
        assert code(
            ec2.attach_network_interface, NetworkInterfaceId=third, InstanceId=iid, DeviceIndex=1
        ) == "InvalidParameterValue"
        assert code(
            ec2.attach_network_interface, NetworkInterfaceId=third, InstanceId=iid, DeviceIndex=4
        ) == "AttachmentLimitExceeded"
        # aws-cli attaches the third at device index 2 while it is stopped.
        att = aws.json(
            "attach-network-interface",
            "--network-interface-id",
            third,
            "--instance-id",
            iid,
            "--device-index",
            "2",
        )["AttachmentId"]
        assert att.startswith("eni-attach-")
        nics = instance(ec2, iid)["NetworkInterfaces"]
        assert sorted(n["Attachment"]["DeviceIndex"] for n in nics) == [0, 1, 2]
        by_instance = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [iid]}]
        )["NetworkInterfaces"]
        assert {second, third} <= {e["NetworkInterfaceId"] for e in by_instance}
        ec2.detach_network_interface(AttachmentId=att)
        assert eni(ec2, third)["Status"] == "available"
        ec2.start_instances(InstanceIds=[iid])
        wait_until(
            "running again",
            lambda: instance(ec2, iid)["State"]["Name"] == "running",
            timeout=120,
        )

        # Terminate: `second` (DeleteOnTermination false) is detached.
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(
            "the secondary interface back to available",
            lambda: eni(ec2, second)["Status"] == "available",
            timeout=120,
        )
    finally:
        if iid:
            ec2.terminate_instances(InstanceIds=[iid])
            wait_until(
                "terminated",
                lambda: instance(ec2, iid)["State"]["Name"] == "terminated",
                timeout=120,
            )
        for e in (second, third):
            wait_until("the interface deleted", lambda e=e: _try_delete(ec2, e), timeout=120)
        ec2.delete_security_group(GroupId=sg)
        _delete_vpc(ec2, vpc_id, (s1, s2))


def test_enis_created_at_launch(ec2, hello_ami, zones, tag, cleanup):
    vpc_id, base, s1, s2 = _vpc_with_two_subnets(ec2, zones[0])
    sg = ec2.create_security_group(GroupName="eni-new", Description="new", VpcId=vpc_id)["GroupId"]
    iid = None
    try:
        launch = dict(ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1)
        # An address outside the new interface's subnet: refused.
        assert code(
            ec2.run_instances,
            NetworkInterfaces=[
                {"DeviceIndex": 0, "SubnetId": s1},
                {"DeviceIndex": 1, "SubnetId": s2, "PrivateIpAddress": f"{base}.1.20"},
            ],
            **launch,
        ) == "InvalidParameterValue"
        # A new primary in s1 and a new secondary in s2 with its group and address.
        r = ec2.run_instances(
            NetworkInterfaces=[
                {"DeviceIndex": 0, "SubnetId": s1},
                {"DeviceIndex": 1, "SubnetId": s2, "Groups": [sg], "PrivateIpAddress": f"{base}.2.20"},
            ],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
            **launch,
        )
        iid = r["Instances"][0]["InstanceId"]
        cleanup.append(iid)
        nics = sorted(
            instance(ec2, iid)["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"]
        )
        assert [n["Attachment"]["DeviceIndex"] for n in nics] == [0, 1]
        new = nics[1]["NetworkInterfaceId"]
        assert nics[1]["PrivateIpAddress"] == f"{base}.2.20"
        assert [g["GroupId"] for g in nics[1]["Groups"]] == [sg]
        e = eni(ec2, new)
        assert e["Status"] == "in-use" and e["SubnetId"] == s2
        assert e["Attachment"]["InstanceId"] == iid
        assert e["Attachment"]["DeleteOnTermination"] is True
        # Terminate deletes it.
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until("the new interface deleted", lambda: _gone(ec2, new), timeout=120)
    finally:
        if iid:
            ec2.terminate_instances(InstanceIds=[iid])
            wait_until(
                "terminated",
                lambda: instance(ec2, iid)["State"]["Name"] == "terminated",
                timeout=120,
            )
        ec2.delete_security_group(GroupId=sg)
        _delete_vpc(ec2, vpc_id, (s1, s2))


def _vpc_with_two_subnets(ec2, zone):
    """A new VPC with subnets <base>.1.0/24 and <base>.2.0/24 in `zone`:
    (vpc id, base, subnet 1, subnet 2)."""
    cidr = unique_cidr()
    base = cidr.split(".0.0/")[0]
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    s1, s2 = (
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.{n}.0/24", AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
        for n in (1, 2)
    )
    return vpc_id, base, s1, s2


def _delete_vpc(ec2, vpc_id, subnets):
    for s in subnets:
        wait_until("the subnet deleted", lambda s=s: _try_delete_subnet(ec2, s), timeout=120)
    ec2.delete_vpc(VpcId=vpc_id)


def _gone(ec2, eni_id):
    try:
        ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return False
    except ClientError as e:
        return e.response["Error"]["Code"] == "InvalidNetworkInterfaceID.NotFound"


def _try_delete_subnet(ec2, subnet):
    try:
        ec2.delete_subnet(SubnetId=subnet)
        return True
    except ClientError as e:
        return e.response["Error"]["Code"] == "InvalidSubnetID.NotFound"
