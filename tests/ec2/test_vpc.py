"""VPCs, subnets and security groups through unmodified aws-cli and boto3
(issue 12's model and API): the default VPC, a VPC + subnet + group flow with
an instance launched into them, the EC2 error codes of misuse (each refusal
writing nothing) and tenant isolation.

What these tests do not cover, because Nubis does not enforce it yet: traffic
between instances (no overlay), security-group rules on the wire, elastic
IPs, internet gateways and route tables (docs/networking.md).
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
    # A /16 in 10.64.0.0/10 per test, so reruns on one cluster do not collide.
    return f"10.{64 + uuid.uuid4().int % 64}.0.0/16"


def test_default_vpc_with_a_subnet_per_zone_and_a_default_group(aws, zones):
    vpcs = aws.json("describe-vpcs", "--filters", "Name=is-default,Values=true")["Vpcs"]
    assert len(vpcs) == 1, vpcs
    vpc = vpcs[0]
    assert vpc["CidrBlock"] == "172.31.0.0/16"
    assert vpc["IsDefault"] is True
    subnets = aws.json(
        "describe-subnets", "--filters", f"Name=vpc-id,Values={vpc['VpcId']}"
    )["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == sorted(zones)
    assert all(s["DefaultForAz"] for s in subnets), subnets
    groups = aws.json(
        "describe-security-groups",
        "--filters",
        f"Name=vpc-id,Values={vpc['VpcId']}",
        "Name=group-name,Values=default",
    )["SecurityGroups"]
    assert len(groups) == 1, groups
    # Members reach each other; all egress allowed (as EC2's default group).
    ingress = groups[0]["IpPermissions"]
    assert any(
        p["IpProtocol"] == "-1"
        and any(g["GroupId"] == groups[0]["GroupId"] for g in p.get("UserIdGroupPairs", []))
        for p in ingress
    ), ingress
    egress = groups[0]["IpPermissionsEgress"]
    assert any(
        p["IpProtocol"] == "-1" and {"CidrIp": "0.0.0.0/0"} in p.get("IpRanges", [])
        for p in egress
    ), egress


def test_vpc_subnet_group_and_an_instance_in_them(ec2, aws, hello_ami, zones, tag, cleanup):
    cidr = unique_cidr()
    vpc_id = aws.json("create-vpc", "--cidr-block", cidr)["Vpc"]["VpcId"]
    base = cidr.split(".0.0/")[0]
    subnet = aws.json(
        "create-subnet",
        "--vpc-id",
        vpc_id,
        "--cidr-block",
        f"{base}.1.0/24",
        "--availability-zone",
        zones[0],
    )["Subnet"]
    # EC2 reserves 5 addresses of every subnet.
    assert subnet["AvailableIpAddressCount"] == 251, subnet
    web = ec2.create_security_group(GroupName=f"web-{tag}", Description="web", VpcId=vpc_id)
    client = ec2.create_security_group(GroupName=f"cli-{tag}", Description="clients", VpcId=vpc_id)
    # TCP 80 from the client group (a group as source) and 22 from a CIDR.
    ec2.authorize_security_group_ingress(
        GroupId=web["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "UserIdGroupPairs": [{"GroupId": client["GroupId"]}],
            },
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        ],
    )
    g = ec2.describe_security_groups(GroupIds=[web["GroupId"]])["SecurityGroups"][0]
    ports = sorted(p["FromPort"] for p in g["IpPermissions"])
    assert ports == [22, 80], g
    assert code(
        ec2.authorize_security_group_ingress,
        GroupId=web["GroupId"],
        IpProtocol="tcp",
        FromPort=22,
        ToPort=22,
        CidrIp="10.0.0.0/8",
    ) == "InvalidPermission.Duplicate"

    chosen = f"{base}.1.10"
    launch = dict(
        ImageId=hello_ami,
        InstanceType="t3.nano",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet["SubnetId"],
        SecurityGroupIds=[web["GroupId"]],
    )
    # The private address is the subnet's: chosen here (else the lowest free).
    r = ec2.run_instances(
        **launch,
        PrivateIpAddress=chosen,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
    )
    iid = r["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["PrivateIpAddress"] == chosen, inst

    def available():
        return ec2.describe_subnets(SubnetIds=[subnet["SubnetId"]])["Subnets"][0]["AvailableIpAddressCount"]

    assert available() == 250
    assert code(ec2.run_instances, **launch, PrivateIpAddress=chosen) == "InvalidIPAddress.InUse"
    assert code(ec2.run_instances, **launch, PrivateIpAddress=f"{base}.1.1") == "InvalidParameterValue"
    assert code(ec2.run_instances, **launch, PrivateIpAddress=f"{base}.2.9") == "InvalidParameterValue"
    assert available() == 250
    assert inst["VpcId"] == vpc_id
    assert inst["SubnetId"] == subnet["SubnetId"]
    assert inst["Placement"]["AvailabilityZone"] == zones[0]
    assert [x["GroupId"] for x in inst["SecurityGroups"]] == [web["GroupId"]]
    found = ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    assert [i["InstanceId"] for res in found["Reservations"] for i in res["Instances"]] == [iid]

    # In use: the group and the subnet cannot go; the VPC neither.
    assert code(ec2.delete_security_group, GroupId=web["GroupId"]) == "DependencyViolation"
    assert code(ec2.delete_vpc, VpcId=vpc_id) == "DependencyViolation"

    ec2.terminate_instances(InstanceIds=[iid])
    wait_until(
        "terminated",
        lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
            "State"
        ]["Name"]
        == "terminated",
        timeout=120,
    )
    assert available() == 251, "the address is released with the instance"
    ec2.revoke_security_group_ingress(
        GroupId=web["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "UserIdGroupPairs": [{"GroupId": client["GroupId"]}],
            }
        ],
    )
    for gid in (web["GroupId"], client["GroupId"]):
        ec2.delete_security_group(GroupId=gid)
    aws.run("delete-subnet", "--subnet-id", subnet["SubnetId"])
    aws.run("delete-vpc", "--vpc-id", vpc_id)
    assert code(ec2.describe_vpcs, VpcIds=[vpc_id]) == "InvalidVpcID.NotFound"


def test_misuse_gets_ec2_codes_and_writes_nothing(ec2_once, zones, tag):
    ec2 = ec2_once
    before = len(ec2.describe_vpcs()["Vpcs"])
    assert code(ec2.create_vpc, CidrBlock="10.0.0.0/8") == "InvalidVpc.Range"
    assert code(ec2.create_vpc, CidrBlock="10.0.0.0/29") == "InvalidVpc.Range"
    assert len(ec2.describe_vpcs()["Vpcs"]) == before

    cidr = unique_cidr()
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    base = cidr.split(".0.0/")[0]
    try:
        sub = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.0.0/24", AvailabilityZone=zones[0])
        for bad, want in [
            ("11.0.0.0/24", "InvalidSubnet.Range"),
            (f"{base}.0.0/25", "InvalidSubnet.Conflict"),
            (f"{base}.3.0/29", "InvalidSubnet.Range"),
        ]:
            assert code(ec2.create_subnet, VpcId=vpc_id, CidrBlock=bad, AvailabilityZone=zones[0]) == want, bad
        assert len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]) == 1
        assert code(ec2.delete_vpc, VpcId=vpc_id) == "DependencyViolation"

        g = ec2.create_security_group(GroupName=f"g-{tag}", Description="d", VpcId=vpc_id)
        assert code(
            ec2.create_security_group, GroupName=f"g-{tag}", Description="d", VpcId=vpc_id
        ) == "InvalidGroup.Duplicate"
        assert code(
            ec2.authorize_security_group_ingress,
            GroupId=g["GroupId"],
            IpProtocol="tcp",
            FromPort=90,
            ToPort=80,
            CidrIp="10.0.0.0/8",
        ) == "InvalidParameterValue"
        assert code(
            ec2.authorize_security_group_ingress,
            GroupId=g["GroupId"],
            IpProtocol="tcp",
            FromPort=80,
            ToPort=80,
            CidrIp="10.0.0.0/33",
        ) == "InvalidParameterValue"
        assert code(
            ec2.revoke_security_group_ingress,
            GroupId=g["GroupId"],
            IpProtocol="tcp",
            FromPort=80,
            ToPort=80,
            CidrIp="10.0.0.0/8",
        ) == "InvalidPermission.NotFound"
        assert ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"][0]["IpPermissions"] == []
        ec2.delete_security_group(GroupId=g["GroupId"])
        ec2.delete_subnet(SubnetId=sub["Subnet"]["SubnetId"])
    finally:
        ec2.delete_vpc(VpcId=vpc_id)
    assert code(ec2.describe_vpcs, VpcIds=["vpc-0123456789abcdef0"]) == "InvalidVpcID.NotFound"
    assert code(ec2.delete_subnet, SubnetId="subnet-0123456789abcdef0") == "InvalidSubnetID.NotFound"


def test_tenants_see_and_use_only_their_own_networks(ec2, ec2_other, zones, tag):
    cidr = unique_cidr()
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    try:
        g = ec2.create_security_group(GroupName=f"mine-{tag}", Description="d", VpcId=vpc_id)
        assert vpc_id not in [v["VpcId"] for v in ec2_other.describe_vpcs()["Vpcs"]]
        assert code(ec2_other.describe_vpcs, VpcIds=[vpc_id]) == "InvalidVpcID.NotFound"
        base = cidr.split(".0.0/")[0]
        assert code(
            ec2_other.create_subnet, VpcId=vpc_id, CidrBlock=f"{base}.9.0/24", AvailabilityZone=zones[0]
        ) == "InvalidVpcID.NotFound"
        assert code(ec2_other.delete_security_group, GroupId=g["GroupId"]) == "InvalidGroup.NotFound"
        # The other tenant may use the same CIDR in its own VPC.
        theirs = ec2_other.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        ec2_other.delete_vpc(VpcId=theirs)
        ec2.delete_security_group(GroupId=g["GroupId"])
    finally:
        ec2.delete_vpc(VpcId=vpc_id)
