"""Elastic IPs, internet gateways and route tables through unmodified
aws-cli and boto3 (issue 12's public addressing model): the default VPC's
gateway and routed main table, an instance's auto-assigned public address
and an Elastic IP associated with it, the auto-assigned address changing at
stop/start (an Elastic IP staying), tags on Elastic IPs, internet gateways
and route tables, a public and a private subnet, the EC2 error codes of
misuse (each refusal writing nothing) and tenant isolation.

The quickstart's control plane hands out public addresses from
`[vpc] public_pool = "198.51.100.0/24"` (deploy/quickstart.sh). What these
tests do not cover: traffic to the addresses (the data plane's NAT).
"""

import ipaddress
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import wait_until

POOL = ipaddress.ip_network("198.51.100.0/24")


def code(fn, **kwargs):
    with pytest.raises(ClientError) as e:
        fn(**kwargs)
    return e.value.response["Error"]["Code"]


def in_pool(ip):
    return ipaddress.ip_address(ip) in POOL


def unique_cidr():
    # A /16 in 10.128.0.0/10 per test, so reruns on one cluster do not collide.
    return f"10.{128 + uuid.uuid4().int % 64}.0.0/16"


def instance(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def test_eip_default_vpc_gateway_and_main_route_table(aws):
    vpc = aws.json("describe-vpcs", "--filters", "Name=is-default,Values=true")["Vpcs"][0]
    igws = aws.json(
        "describe-internet-gateways", "--filters", f"Name=attachment.vpc-id,Values={vpc['VpcId']}"
    )["InternetGateways"]
    assert len(igws) == 1, igws
    assert igws[0]["Attachments"] == [{"State": "available", "VpcId": vpc["VpcId"]}]
    tables = aws.json(
        "describe-route-tables",
        "--filters",
        f"Name=vpc-id,Values={vpc['VpcId']}",
        "Name=association.main,Values=true",
    )["RouteTables"]
    assert len(tables) == 1, tables
    routes = {r["DestinationCidrBlock"]: r for r in tables[0]["Routes"]}
    assert routes["172.31.0.0/16"]["GatewayId"] == "local"
    assert routes["0.0.0.0/0"]["GatewayId"] == igws[0]["InternetGatewayId"]
    assert routes["0.0.0.0/0"]["State"] == "active"
    assert tables[0]["Associations"][0]["Main"] is True


def test_eip_follows_an_instance_until_released(ec2, aws, hello_ami, tag, cleanup):
    r = ec2.run_instances(
        ImageId=hello_ami,
        InstanceType="t3.nano",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
    )
    iid = r["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    # The default subnets map a public address on launch (assigned while
    # the instance is pending, as in EC2).
    inst = wait_until(
        "a public address",
        lambda: (lambda i: i if "PublicIpAddress" in i else None)(instance(ec2, iid)),
        timeout=30,
    )
    auto = inst["PublicIpAddress"]
    assert in_pool(auto), inst
    assert inst["NetworkInterfaces"][0]["Association"]["PublicIp"] == auto
    assert inst["NetworkInterfaces"][0]["Association"]["IpOwnerId"] == "amazon"

    eip = aws.json(
        "allocate-address",
        "--domain",
        "vpc",
        "--tag-specifications",
        f"ResourceType=elastic-ip,Tags=[{{Key=t,Value={tag}}}]",
    )
    alloc, ip = eip["AllocationId"], eip["PublicIp"]
    try:
        assert in_pool(ip) and ip != auto, eip
        assert eip["Domain"] == "vpc"
        assoc = aws.json("associate-address", "--allocation-id", alloc, "--instance-id", iid)[
            "AssociationId"
        ]
        assert assoc.startswith("eipassoc-")
        inst = instance(ec2, iid)
        assert inst["PublicIpAddress"] == ip, inst
        ni = inst["NetworkInterfaces"][0]
        assert ni["Association"]["PublicIp"] == ip
        got = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
        assert got["InstanceId"] == iid
        assert got["AssociationId"] == assoc
        assert got["NetworkInterfaceId"] == ni["NetworkInterfaceId"]
        assert got["PrivateIpAddress"] == inst["PrivateIpAddress"]
        assert got["Tags"] == [{"Key": "t", "Value": tag}]
        by_filter = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [iid]}])
        assert [a["AllocationId"] for a in by_filter["Addresses"]] == [alloc]
        assert code(ec2.release_address, AllocationId=alloc) == "InvalidIPAddress.InUse"

        aws.run("disassociate-address", "--association-id", assoc)
        # Its subnet maps public addresses: a new auto-assigned one (EC2).
        inst = instance(ec2, iid)
        assert in_pool(inst["PublicIpAddress"]) and inst["PublicIpAddress"] != ip, inst
        assert inst["NetworkInterfaces"][0]["Association"]["IpOwnerId"] == "amazon"
        assert "AssociationId" not in ec2.describe_addresses(PublicIps=[ip])["Addresses"][0]

        # Associated again, then the instance terminates: the association goes.
        ec2.associate_address(AllocationId=alloc, InstanceId=iid)
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(
            "terminated",
            lambda: instance(ec2, iid)["State"]["Name"] == "terminated",
            timeout=120,
        )
        assert "InstanceId" not in ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    finally:
        ec2.release_address(AllocationId=alloc)
    assert code(ec2.describe_addresses, AllocationIds=[alloc]) == "InvalidAllocationID.NotFound"


def test_eip_public_and_private_subnets(ec2, hello_ami, zones, tag, cleanup):
    cidr = unique_cidr()
    base = cidr.split(".0.0/")[0]
    vpc_id = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.0.0/24", AvailabilityZone=zones[0])[
        "Subnet"
    ]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{base}.1.0/24", AvailabilityZone=zones[0])[
        "Subnet"
    ]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
    iid = None
    try:
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
        assert (
            code(ec2.attach_internet_gateway, InternetGatewayId=igw, VpcId=vpc_id)
            == "Resource.AlreadyAssociated"
        )
        rtb = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]
        assert [r["GatewayId"] for r in rtb["Routes"]] == ["local"]
        rtb_id = rtb["RouteTableId"]
        ec2.create_route(RouteTableId=rtb_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        assert (
            code(ec2.create_route, RouteTableId=rtb_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
            == "RouteAlreadyExists"
        )
        assoc = ec2.associate_route_table(RouteTableId=rtb_id, SubnetId=public)["AssociationId"]
        assert (
            code(ec2.associate_route_table, RouteTableId=rtb_id, SubnetId=public)
            == "Resource.AlreadyAssociated"
        )
        t = ec2.describe_route_tables(RouteTableIds=[rtb_id])["RouteTables"][0]
        assert [(r["DestinationCidrBlock"], r["State"]) for r in t["Routes"]] == [
            (cidr, "active"),
            ("0.0.0.0/0", "active"),
        ]
        assert [(a["SubnetId"], a["Main"]) for a in t["Associations"]] == [(public, False)]

        # An instance in the private subnet (main table: no route out).
        iid = ec2.run_instances(
            ImageId=hello_ami, InstanceType="t3.nano", MinCount=1, MaxCount=1, SubnetId=private
        )["Instances"][0]["InstanceId"]
        cleanup.append(iid)
        assert "PublicIpAddress" not in instance(ec2, iid)
        assert code(ec2.associate_address, AllocationId=alloc, InstanceId=iid) == "Gateway.NotAttached"
        assert "AssociationId" not in ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
        # Dependencies.
        assert code(ec2.delete_route_table, RouteTableId=rtb_id) == "DependencyViolation"
        assert code(ec2.delete_internet_gateway, InternetGatewayId=igw) == "DependencyViolation"
        ec2.terminate_instances(InstanceIds=[iid])
        wait_until(
            "terminated",
            lambda: instance(ec2, iid)["State"]["Name"] == "terminated",
            timeout=120,
        )
        ec2.disassociate_route_table(AssociationId=assoc)
        ec2.delete_route(RouteTableId=rtb_id, DestinationCidrBlock="0.0.0.0/0")
        ec2.delete_route_table(RouteTableId=rtb_id)
        ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    finally:
        ec2.release_address(AllocationId=alloc)
        ec2.delete_internet_gateway(InternetGatewayId=igw)
        for s in (public, private):
            ec2.delete_subnet(SubnetId=s)
        ec2.delete_vpc(VpcId=vpc_id)


def test_eip_misuse_and_tenant_isolation(ec2_once, ec2_other):
    ec2 = ec2_once
    before = ec2.describe_addresses()["Addresses"]
    assert code(ec2.allocate_address, Domain="standard") == "InvalidParameterValue"
    assert code(ec2.release_address, AllocationId="eipalloc-0123456789abcdef0") == (
        "InvalidAllocationID.NotFound"
    )
    assert code(ec2.describe_addresses, PublicIps=["203.0.113.1"]) == "InvalidAddress.NotFound"
    assert code(ec2.disassociate_address, AssociationId="eipassoc-0123456789abcdef0") == (
        "InvalidAssociationID.NotFound"
    )
    assert code(
        ec2.associate_address, AllocationId="eipalloc-0123456789abcdef0", InstanceId="i-0123456789abcdef0"
    ) == "InvalidAllocationID.NotFound"
    assert code(ec2.describe_internet_gateways, InternetGatewayIds=["igw-0123456789abcdef0"]) == (
        "InvalidInternetGatewayID.NotFound"
    )
    assert code(ec2.delete_route_table, RouteTableId="rtb-0123456789abcdef0") == (
        "InvalidRouteTableID.NotFound"
    )
    assert ec2.describe_addresses()["Addresses"] == before

    mine = ec2.allocate_address(Domain="vpc")
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    try:
        assert mine["AllocationId"] not in [
            a["AllocationId"] for a in ec2_other.describe_addresses()["Addresses"]
        ]
        assert code(ec2_other.release_address, AllocationId=mine["AllocationId"]) == (
            "InvalidAllocationID.NotFound"
        )
        assert code(ec2_other.describe_addresses, PublicIps=[mine["PublicIp"]]) == (
            "InvalidAddress.NotFound"
        )
        other_vpc = ec2_other.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])[
            "Vpcs"
        ][0]["VpcId"]
        assert code(ec2_other.attach_internet_gateway, InternetGatewayId=igw, VpcId=other_vpc) == (
            "InvalidInternetGatewayID.NotFound"
        )
        other_main = ec2_other.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [other_vpc]}]
        )["RouteTables"][0]["RouteTableId"]
        assert code(
            ec2_other.create_route,
            RouteTableId=other_main,
            DestinationCidrBlock="192.0.2.0/24",
            GatewayId=igw,
        ) == "InvalidInternetGatewayID.NotFound"
    finally:
        ec2.release_address(AllocationId=mine["AllocationId"])
        ec2.delete_internet_gateway(InternetGatewayId=igw)


def wait_state(ec2, iid, state):
    return wait_until(
        state,
        lambda: (lambda i: i if i["State"]["Name"] == state else None)(instance(ec2, iid)),
        timeout=180,
    )


def test_eip_stop_start_changes_the_auto_address(ec2, aws, hello_ami, tag, cleanup):
    iid = ec2.run_instances(
        ImageId=hello_ami,
        InstanceType="t3.nano",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "t", "Value": tag}]}],
    )["Instances"][0]["InstanceId"]
    cleanup.append(iid)
    wait_state(ec2, iid, "running")
    first = wait_until("a public address", lambda: instance(ec2, iid).get("PublicIpAddress"), timeout=30)
    assert in_pool(first)

    # Stopped: EC2 releases the auto-assigned address ...
    aws.run("stop-instances", "--instance-ids", iid)
    stopped = wait_state(ec2, iid, "stopped")
    assert "PublicIpAddress" not in stopped, stopped
    # ... and assigns a new one at start.
    aws.run("start-instances", "--instance-ids", iid)
    running = wait_state(ec2, iid, "running")
    assert in_pool(running["PublicIpAddress"]), running
    assert running["NetworkInterfaces"][0]["Association"]["IpOwnerId"] == "amazon"

    # An Elastic IP replaces it and stays through stop and start.
    alloc = ec2.allocate_address(Domain="vpc")
    try:
        assoc = ec2.associate_address(AllocationId=alloc["AllocationId"], InstanceId=iid)[
            "AssociationId"
        ]
        assert instance(ec2, iid)["PublicIpAddress"] == alloc["PublicIp"]
        ec2.stop_instances(InstanceIds=[iid])
        assert wait_state(ec2, iid, "stopped")["PublicIpAddress"] == alloc["PublicIp"]
        ec2.start_instances(InstanceIds=[iid])
        assert wait_state(ec2, iid, "running")["PublicIpAddress"] == alloc["PublicIp"]
        got = ec2.describe_addresses(AllocationIds=[alloc["AllocationId"]])["Addresses"][0]
        assert got["AssociationId"] == assoc and got["InstanceId"] == iid
        ec2.disassociate_address(AssociationId=assoc)
        after = instance(ec2, iid)["PublicIpAddress"]
        assert in_pool(after) and after != alloc["PublicIp"]
    finally:
        ec2.terminate_instances(InstanceIds=[iid])
        wait_state(ec2, iid, "terminated")
        ec2.release_address(AllocationId=alloc["AllocationId"])


def test_eip_tags_on_addresses_gateways_and_route_tables(ec2, ec2_other, aws, tag):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    alloc = aws.json(
        "allocate-address",
        "--tag-specifications",
        f"ResourceType=elastic-ip,Tags=[{{Key=t,Value={tag}}}]",
    )["AllocationId"]
    igw = ec2.create_internet_gateway(
        TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": [{"Key": "t", "Value": tag}]}]
    )["InternetGateway"]
    rtb = ec2.create_route_table(
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "route-table", "Tags": [{"Key": "t", "Value": tag}]}],
    )["RouteTable"]
    igw_id, rtb_id = igw["InternetGatewayId"], rtb["RouteTableId"]
    try:
        assert igw["Tags"] == [{"Key": "t", "Value": tag}]
        assert rtb["Tags"] == [{"Key": "t", "Value": tag}]
        ids = [alloc, igw_id, rtb_id]
        aws.run("create-tags", "--resources", *ids, "--tags", "Key=env,Value=prod")
        by_tag = [{"Name": "tag:t", "Values": [tag]}]
        assert [a["AllocationId"] for a in ec2.describe_addresses(Filters=by_tag)["Addresses"]] == [
            alloc
        ]
        assert [
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways(Filters=by_tag)["InternetGateways"]
        ] == [igw_id]
        assert [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=by_tag)["RouteTables"]] == [
            rtb_id
        ]
        keyed = ec2.describe_route_tables(
            Filters=[{"Name": "tag-key", "Values": ["env"]}, {"Name": "vpc-id", "Values": [vpc]}]
        )["RouteTables"]
        assert [t["RouteTableId"] for t in keyed] == [rtb_id]
        tags = aws.json(
            "describe-tags", "--filters", f"Name=resource-id,Values={alloc},{igw_id},{rtb_id}"
        )["Tags"]
        assert sorted((t["ResourceType"], t["Key"]) for t in tags) == [
            ("elastic-ip", "env"),
            ("elastic-ip", "t"),
            ("internet-gateway", "env"),
            ("internet-gateway", "t"),
            ("route-table", "env"),
            ("route-table", "t"),
        ]

        # Misuse writes nothing; another tenant's ids are not found.
        many = [{"Key": f"k{i}", "Value": "v"} for i in range(50)]
        for rid, missing in [
            (alloc, "InvalidAllocationID.NotFound"),
            (igw_id, "InvalidInternetGatewayID.NotFound"),
            (rtb_id, "InvalidRouteTableID.NotFound"),
        ]:
            assert code(ec2.create_tags, Resources=[rid], Tags=many) == "TagLimitExceeded"
            assert code(ec2_other.create_tags, Resources=[rid], Tags=[{"Key": "x", "Value": "y"}]) == (
                missing
            )
            assert code(ec2_other.delete_tags, Resources=[rid]) == missing
        assert not ec2_other.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]
        assert len(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]) == 6

        ec2.delete_tags(Resources=ids, Tags=[{"Key": "env"}])
        left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]
        assert sorted(t["Key"] for t in left) == ["t", "t", "t"]
    finally:
        ec2.delete_route_table(RouteTableId=rtb_id)
        ec2.delete_internet_gateway(InternetGatewayId=igw_id)
        ec2.release_address(AllocationId=alloc)
