//! VPCs and subnets through the EC2 gateway's parser and backend against a
//! real etcd: the default VPC (created once, even by racing first calls),
//! CIDR rules, dependencies, limits, and that every refused call writes
//! nothing. Security groups, tenant isolation and RunInstances are in
//! `vpc_groups.rs`.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use nubis_control_plane::domain::ipam::AddressClaim;
use nubis_control_plane::domain::model::now_ms;
use nubis_control_plane::ids::{InstanceId, SubnetId};
use nubis_control_plane::store::Tx;
use support::*;
use vpc_common::{text, texts, Ec2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_vpc_is_created_once_with_subnets_and_default_group() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let a = Ec2::new(&cp.domain, "a").await;
    // Racing first calls create one default VPC.
    let (x, y, z) = tokio::join!(
        a.call("DescribeVpcs", &[]),
        a.call("DescribeSubnets", &[]),
        a.call("DescribeSecurityGroups", &[])
    );
    let (x, _, _) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert_eq!(texts(&x, "vpcId").len(), 1, "{x}");
    assert_eq!(text(&x, "cidrBlock"), "172.31.0.0/16");
    assert_eq!(text(&x, "isDefault"), "true");
    let vpc = text(&x, "vpcId");
    let s = a.ok("DescribeSubnets", &[]).await;
    let mut cidrs = texts(&s, "cidrBlock");
    cidrs.sort();
    assert_eq!(
        cidrs,
        ["172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"],
        "{s}"
    );
    assert_eq!(texts(&s, "defaultForAz"), ["true", "true", "true"]);
    assert!(texts(&s, "availableIpAddressCount")
        .iter()
        .all(|c| c == "4091"));
    let zones = texts(&s, "availabilityZone");
    for z in ZONES {
        assert!(zones.iter().any(|x| x == z), "no default subnet in {z}");
    }
    let g = a.ok("DescribeSecurityGroups", &[]).await;
    assert_eq!(texts(&g, "groupName"), ["default"]);
    let gid = text(&g, "groupId");
    assert_eq!(text(&g, "vpcId"), vpc);
    // Ingress: all from itself; egress: all to anywhere.
    assert!(
        g.contains(&format!(
        "<ipPermissions><item><ipProtocol>-1</ipProtocol><groups><item><groupId>{gid}</groupId>"
    )),
        "{g}"
    );
    assert!(g.contains("<ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp>"), "{g}");
    // Filters.
    let f = a
        .ok(
            "DescribeVpcs",
            &[
                ("Filter.1.Name", "is-default"),
                ("Filter.1.Value.1", "false"),
            ],
        )
        .await;
    assert!(texts(&f, "vpcId").is_empty());
    let f = a
        .ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "availability-zone"),
                ("Filter.1.Value.1", ZONES[1]),
            ],
        )
        .await;
    assert_eq!(texts(&f, "subnetId").len(), 1);
    assert_eq!(text(&f, "cidrBlock"), "172.31.16.0/20");
    a.fails(
        "DescribeVpcs",
        &[("Filter.1.Name", "no-such"), ("Filter.1.Value.1", "x")],
        "InvalidParameterValue",
    )
    .await;
    // Deleting the default VPC needs its subnets gone first; it is then
    // not re-created.
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    for id in texts(&s, "subnetId") {
        a.ok("DeleteSubnet", &[("SubnetId", &id)]).await;
    }
    // Its internet gateway too (vpc_routes.rs tests that in detail).
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    let igw = text(
        &a.ok("DescribeInternetGateways", &[]).await,
        "internetGatewayId",
    );
    a.ok(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    a.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
    let x = a.ok("DescribeVpcs", &[]).await;
    assert!(texts(&x, "vpcId").is_empty(), "{x}");
    assert!(texts(&a.ok("DescribeSecurityGroups", &[]).await, "groupId").is_empty());
    // Without a default VPC a group needs a VpcId.
    a.fails(
        "CreateSecurityGroup",
        &[("GroupName", "g"), ("GroupDescription", "d")],
        "VPCIdNotSpecified",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpcs_and_subnets_follow_ec2_rules_and_refusals_write_nothing() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let a = Ec2::new(&d, "a").await;
    for (cidr, code) in [
        ("10.0.0.0/8", "InvalidVpc.Range"),
        ("10.0.0.0/15", "InvalidVpc.Range"),
        ("10.0.0.0/29", "InvalidVpc.Range"),
        ("10.0.0.1/16", "InvalidParameterValue"),
        ("10.0.0.0", "InvalidParameterValue"),
        ("nonsense/16", "InvalidParameterValue"),
    ] {
        a.fails("CreateVpc", &[("CidrBlock", cidr)], code).await;
    }
    a.fails("CreateVpc", &[], "MissingParameter").await;
    a.fails(
        "CreateVpc",
        &[
            ("CidrBlock", "10.0.0.0/16"),
            ("AmazonProvidedIpv6CidrBlock", "true"),
        ],
        "Unsupported",
    )
    .await;
    let vpcs = a.ok("DescribeVpcs", &[]).await;
    assert_eq!(
        texts(&vpcs, "vpcId").len(),
        1,
        "only the default VPC: {vpcs}"
    );

    let v = a
        .ok(
            "CreateVpc",
            &[
                ("CidrBlock", "10.0.0.0/16"),
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "main"),
            ],
        )
        .await;
    let vpc = text(&v, "vpcId");
    assert_eq!(text(&v, "isDefault"), "false");
    let tagged = a
        .ok(
            "DescribeVpcs",
            &[("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "main")],
        )
        .await;
    assert_eq!(texts(&tagged, "vpcId"), vec![vpc.clone()]);

    let s = a
        .ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
                ("AvailabilityZone", ZONES[1]),
            ],
        )
        .await;
    let subnet = text(&s, "subnetId");
    assert_eq!(text(&s, "availableIpAddressCount"), "251", "{s}");
    assert_eq!(text(&s, "availabilityZoneId"), "test-1-az2");
    assert_eq!(text(&s, "defaultForAz"), "false");
    let by_id = a
        .ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.2.0/28"),
                ("AvailabilityZoneId", "test-1-az3"),
            ],
        )
        .await;
    assert_eq!(text(&by_id, "availabilityZone"), ZONES[2]);
    assert_eq!(text(&by_id, "availableIpAddressCount"), "11");
    let small = text(&by_id, "subnetId");

    let bad: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("CidrBlock", "10.0.1.128/25")],
            "InvalidSubnet.Conflict",
        ),
        (vec![("CidrBlock", "10.0.0.0/16")], "InvalidSubnet.Conflict"),
        (vec![("CidrBlock", "10.1.0.0/24")], "InvalidSubnet.Range"),
        (vec![("CidrBlock", "10.0.3.0/29")], "InvalidSubnet.Range"),
        (vec![("CidrBlock", "10.0.3.1/24")], "InvalidParameterValue"),
        (
            vec![
                ("CidrBlock", "10.0.3.0/24"),
                ("AvailabilityZone", "elsewhere-1a"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("CidrBlock", "10.0.3.0/24"),
                ("AvailabilityZoneId", "test-1-az9"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("CidrBlock", "10.0.3.0/24"),
                ("AvailabilityZone", ZONES[0]),
                ("AvailabilityZoneId", "test-1-az1"),
            ],
            "InvalidParameterCombination",
        ),
    ];
    for (extra, code) in bad {
        let mut p = vec![("VpcId", vpc.as_str())];
        p.extend(extra);
        a.fails("CreateSubnet", &p, code).await;
    }
    a.fails(
        "CreateSubnet",
        &[
            ("VpcId", "vpc-0123456789abcdef0"),
            ("CidrBlock", "10.0.3.0/24"),
        ],
        "InvalidVpcID.NotFound",
    )
    .await;
    a.fails(
        "CreateSubnet",
        &[("VpcId", "vpc-zz"), ("CidrBlock", "10.0.3.0/24")],
        "InvalidVpcID.Malformed",
    )
    .await;
    let mine = a
        .ok(
            "DescribeSubnets",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    let mut ids = texts(&mine, "subnetId");
    ids.sort();
    let mut want = vec![subnet.clone(), small.clone()];
    want.sort();
    assert_eq!(ids, want, "refused creates wrote nothing");

    // MapPublicIpOnLaunch.
    a.ok(
        "ModifySubnetAttribute",
        &[("SubnetId", &subnet), ("MapPublicIpOnLaunch.Value", "true")],
    )
    .await;
    let m = a.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(text(&m, "mapPublicIpOnLaunch"), "true");
    a.fails(
        "ModifySubnetAttribute",
        &[("SubnetId", &subnet)],
        "Unsupported",
    )
    .await;

    // Dependencies: subnets, then a group, block DeleteVpc.
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    a.ok("DeleteSubnet", &[("SubnetId", &small)]).await;
    // An address claimed in a subnet blocks its deletion.
    let sid = SubnetId::parse(&subnet).unwrap();
    let claim_key = d.store().keys().address_claim(&sid, "10.0.1.4");
    let mut tx = Tx::new();
    tx.put(
        &claim_key,
        &AddressClaim {
            subnet_id: sid.clone(),
            ip: "10.0.1.4".into(),
            instance_id: Some(InstanceId::generate()),
            network_interface_id: None,
            account: nubis_control_plane::ids::AccountId::parse(&a.account).unwrap(),
            claimed_ms: now_ms(),
        },
    )
    .unwrap();
    d.store().commit(tx).await.unwrap().unwrap();
    let m = a.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(text(&m, "availableIpAddressCount"), "250");
    a.fails(
        "DeleteSubnet",
        &[("SubnetId", &subnet)],
        "DependencyViolation",
    )
    .await;
    let mut tx = Tx::new();
    tx.delete(&claim_key);
    d.store().commit(tx).await.unwrap().unwrap();
    a.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    a.fails(
        "DeleteSubnet",
        &[("SubnetId", &subnet)],
        "InvalidSubnetID.NotFound",
    )
    .await;

    let g = a
        .ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "web"),
                ("VpcId", &vpc),
            ],
        )
        .await;
    let web = text(&g, "groupId");
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    a.ok("DeleteSecurityGroup", &[("GroupId", &web)]).await;
    a.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "InvalidVpcID.NotFound")
        .await;
    let groups = a
        .ok(
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert!(
        texts(&groups, "groupId").is_empty(),
        "its default group went with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpc_limit_is_configurable_and_racing_subnets_do_not_overlap() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.vpcs_per_account = 3;
    let cp = start(cfg).await;
    let a = Ec2::new(&cp.domain, "a").await;
    // The default VPC counts: two more fit.
    let v = a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await;
    a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await;
    a.fails(
        "CreateVpc",
        &[("CidrBlock", "10.2.0.0/16")],
        "VpcLimitExceeded",
    )
    .await;
    assert_eq!(texts(&a.ok("DescribeVpcs", &[]).await, "vpcId").len(), 3);

    let vpc = text(&v, "vpcId");
    // Eight racing creates of blocks that all hold 10.0.0.0: exactly one wins.
    let cidrs = [
        "10.0.0.0/24",
        "10.0.0.0/25",
        "10.0.0.0/26",
        "10.0.0.0/27",
        "10.0.0.0/28",
        "10.0.0.0/23",
        "10.0.0.0/22",
        "10.0.0.0/21",
    ];
    let params: Vec<[(&str, &str); 2]> = cidrs
        .iter()
        .map(|c| [("VpcId", vpc.as_str()), ("CidrBlock", *c)])
        .collect();
    let calls = params.iter().map(|p| a.call("CreateSubnet", p));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code.as_str(), "InvalidSubnet.Conflict", "{r}");
    }
    let s = a
        .ok(
            "DescribeSubnets",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert_eq!(texts(&s, "subnetId").len(), 1);
}
