//! Security groups, tenant isolation and RunInstances in the VPC model,
//! through the EC2 gateway's parser and backend against a real etcd.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use nubis_control_plane::domain::Caller;
use support::*;
use vpc_common::{text, texts, Ec2};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_group_rules_duplicates_dependencies_and_refusals() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let a = Ec2::new(&cp.domain, "a").await;
    let v = a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await;
    let vpc = text(&v, "vpcId");
    let web = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "web tier"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    a.fails(
        "CreateSecurityGroup",
        &[
            ("GroupName", "web"),
            ("GroupDescription", "again"),
            ("VpcId", &vpc),
        ],
        "InvalidGroup.Duplicate",
    )
    .await;
    a.fails(
        "CreateSecurityGroup",
        &[
            ("GroupName", "default"),
            ("GroupDescription", "x"),
            ("VpcId", &vpc),
        ],
        "InvalidGroup.Reserved",
    )
    .await;
    a.fails(
        "CreateSecurityGroup",
        &[
            ("GroupName", "sg-abc"),
            ("GroupDescription", "x"),
            ("VpcId", &vpc),
        ],
        "InvalidParameterValue",
    )
    .await;
    a.fails(
        "CreateSecurityGroup",
        &[
            ("GroupName", "bad\u{e9}"),
            ("GroupDescription", "x"),
            ("VpcId", &vpc),
        ],
        "InvalidParameterValue",
    )
    .await;
    a.fails(
        "CreateSecurityGroup",
        &[("GroupName", "x")],
        "MissingParameter",
    )
    .await;
    // The same name in the default VPC is another group.
    let dflt_web = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "default vpc web"),
            ],
        )
        .await,
        "groupId",
    );
    assert_ne!(dflt_web, web);
    let db = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "db"),
                ("GroupDescription", "db"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );

    let http = [
        ("GroupId", web.as_str()),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "80"),
        ("IpPermissions.1.ToPort", "80"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
        ("IpPermissions.1.IpRanges.1.Description", "office"),
        ("IpPermissions.1.Groups.1.GroupId", db.as_str()),
    ];
    let added = a.ok("AuthorizeSecurityGroupIngress", &http).await;
    assert_eq!(texts(&added, "securityGroupRuleId").len(), 2, "{added}");
    let before = a.ok("DescribeSecurityGroups", &[("GroupId.1", &web)]).await;
    a.fails(
        "AuthorizeSecurityGroupIngress",
        &http,
        "InvalidPermission.Duplicate",
    )
    .await;
    let refused: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "80"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "90"),
                ("IpPermissions.1.ToPort", "80"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "udp"),
                ("IpPermissions.1.FromPort", "0"),
                ("IpPermissions.1.ToPort", "70000"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "icmp"),
                ("IpPermissions.1.FromPort", "-1"),
                ("IpPermissions.1.ToPort", "4"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "gre"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.0/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "1.0.0.1/8"),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.Groups.1.GroupId", "sg-0123456789abcdef0"),
            ],
            "InvalidGroup.NotFound",
        ),
        (
            // A group of another VPC cannot be a peer.
            vec![
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.Groups.1.GroupId", dflt_web.as_str()),
            ],
            "InvalidGroup.NotFound",
        ),
        (
            // One valid and one duplicate permission: nothing is added.
            vec![
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "443"),
                ("IpPermissions.1.ToPort", "443"),
                ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
                ("IpPermissions.2.IpProtocol", "tcp"),
                ("IpPermissions.2.FromPort", "80"),
                ("IpPermissions.2.ToPort", "80"),
                ("IpPermissions.2.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ],
            "InvalidPermission.Duplicate",
        ),
        (
            vec![
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", "1"),
                ("IpPermissions.1.ToPort", "2"),
            ],
            "InvalidParameterValue",
        ),
        (vec![], "MissingParameter"),
    ];
    for (extra, code) in refused {
        let mut p = vec![("GroupId", web.as_str())];
        p.extend(extra);
        a.fails("AuthorizeSecurityGroupIngress", &p, code).await;
    }
    a.fails(
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", "sg-0123456789abcdef0"),
            ("IpProtocol", "-1"),
            ("CidrIp", "0.0.0.0/0"),
        ],
        "InvalidGroup.NotFound",
    )
    .await;
    let after = a.ok("DescribeSecurityGroups", &[("GroupId.1", &web)]).await;
    assert_eq!(before, after, "refused calls changed the group");
    assert!(after.contains("<ipPermissions><item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort>"), "{after}");
    assert!(after.contains(&format!("<groupId>{db}</groupId>")));
    assert!(after.contains("<cidrIp>10.0.0.0/8</cidrIp><description>office</description>"));

    // Filters and rule listing.
    let f = a
        .ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "ip-permission.group-id"),
                ("Filter.1.Value.1", &db),
            ],
        )
        .await;
    assert_eq!(texts(&f, "groupName"), ["web"]);
    let rules = a
        .ok(
            "DescribeSecurityGroupRules",
            &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", &web)],
        )
        .await;
    // Two ingress rules and the default egress rule.
    assert_eq!(texts(&rules, "securityGroupRuleId").len(), 3, "{rules}");

    // The legacy flat form and egress.
    a.ok(
        "AuthorizeSecurityGroupEgress",
        &[
            ("GroupId", &web),
            ("IpProtocol", "udp"),
            ("FromPort", "53"),
            ("ToPort", "53"),
            ("CidrIp", "10.0.0.2/32"),
        ],
    )
    .await;
    a.fails(
        "AuthorizeSecurityGroupEgress",
        &[
            ("GroupId", &web),
            ("IpProtocol", "udp"),
            ("FromPort", "53"),
            ("ToPort", "53"),
            ("CidrIp", "10.0.0.2/32"),
        ],
        "InvalidPermission.Duplicate",
    )
    .await;

    // Deletion rules.
    let dflt = texts(
        &a.ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "group-name"),
                ("Filter.1.Value.1", "default"),
                ("Filter.2.Name", "vpc-id"),
                ("Filter.2.Value.1", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    // Its own id, then the self-reference of its ingress rule.
    assert_eq!(dflt.len(), 2);
    assert_eq!(dflt[0], dflt[1]);
    a.fails(
        "DeleteSecurityGroup",
        &[("GroupId", &dflt[0])],
        "CannotDelete",
    )
    .await;
    a.fails(
        "DeleteSecurityGroup",
        &[("GroupId", &db)],
        "DependencyViolation",
    )
    .await;
    a.fails(
        "RevokeSecurityGroupIngress",
        &[
            ("GroupId", &web),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "81"),
            ("IpPermissions.1.ToPort", "81"),
            ("IpPermissions.1.Groups.1.GroupId", &db),
        ],
        "InvalidPermission.NotFound",
    )
    .await;
    a.ok(
        "RevokeSecurityGroupIngress",
        &[
            ("GroupId", &web),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "80"),
            ("IpPermissions.1.ToPort", "80"),
            ("IpPermissions.1.Groups.1.GroupId", &db),
        ],
    )
    .await;
    a.ok("DeleteSecurityGroup", &[("GroupId", &db)]).await;
    // Revoke by rule id; the group name of the default VPC.
    let rid = texts(
        &a.ok(
            "DescribeSecurityGroupRules",
            &[("Filter.1.Name", "group-id"), ("Filter.1.Value.1", &web)],
        )
        .await,
        "securityGroupRuleId",
    );
    assert_eq!(rid.len(), 3);
    a.fails(
        "RevokeSecurityGroupIngress",
        &[
            ("GroupId", &web),
            ("SecurityGroupRuleId.1", "sgr-0123456789abcdef0"),
        ],
        "InvalidSecurityGroupRuleId.NotFound",
    )
    .await;
    a.ok(
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupName", "web"),
            ("IpProtocol", "tcp"),
            ("FromPort", "22"),
            ("ToPort", "22"),
            ("CidrIp", "192.168.0.0/16"),
        ],
    )
    .await;
    let dw = a
        .ok("DescribeSecurityGroups", &[("GroupName.1", "web")])
        .await;
    assert_eq!(texts(&dw, "groupId"), vec![dflt_web.clone()]);
    assert!(dw.contains("<cidrIp>192.168.0.0/16</cidrIp>"));
    a.ok("DeleteSecurityGroup", &[("GroupName", "web")]).await;
    a.fails(
        "DeleteSecurityGroup",
        &[("GroupId", &dflt_web)],
        "InvalidGroup.NotFound",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_or_use_each_others_networks() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let a = Ec2::new(&cp.domain, "a").await;
    let b = Ec2::new(&cp.domain, "b").await;
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let subnet = text(
        &a.ok(
            "CreateSubnet",
            &[("VpcId", &vpc), ("CidrBlock", "10.0.0.0/24")],
        )
        .await,
        "subnetId",
    );
    let sg = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "a"),
                ("GroupDescription", "a"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    // B has its own default VPC and sees none of A's objects.
    let bv = b.ok("DescribeVpcs", &[]).await;
    assert_eq!(texts(&bv, "vpcId").len(), 1);
    assert!(!bv.contains(&vpc));
    assert!(!b.ok("DescribeSubnets", &[]).await.contains(&subnet));
    assert!(!b.ok("DescribeSecurityGroups", &[]).await.contains(&sg));
    b.fails(
        "DescribeVpcs",
        &[("VpcId.1", &vpc)],
        "InvalidVpcID.NotFound",
    )
    .await;
    b.fails(
        "DescribeSubnets",
        &[("SubnetId.1", &subnet)],
        "InvalidSubnetID.NotFound",
    )
    .await;
    b.fails(
        "DescribeSecurityGroups",
        &[("GroupId.1", &sg)],
        "InvalidGroup.NotFound",
    )
    .await;
    b.fails(
        "CreateSubnet",
        &[("VpcId", &vpc), ("CidrBlock", "10.0.1.0/24")],
        "InvalidVpcID.NotFound",
    )
    .await;
    b.fails(
        "CreateSecurityGroup",
        &[
            ("GroupName", "x"),
            ("GroupDescription", "x"),
            ("VpcId", &vpc),
        ],
        "InvalidVpcID.NotFound",
    )
    .await;
    b.fails("DeleteVpc", &[("VpcId", &vpc)], "InvalidVpcID.NotFound")
        .await;
    b.fails(
        "DeleteSubnet",
        &[("SubnetId", &subnet)],
        "InvalidSubnetID.NotFound",
    )
    .await;
    b.fails(
        "ModifySubnetAttribute",
        &[("SubnetId", &subnet), ("MapPublicIpOnLaunch.Value", "true")],
        "InvalidSubnetID.NotFound",
    )
    .await;
    b.fails(
        "DeleteSecurityGroup",
        &[("GroupId", &sg)],
        "InvalidGroup.NotFound",
    )
    .await;
    b.fails(
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", &sg),
            ("IpProtocol", "-1"),
            ("CidrIp", "0.0.0.0/0"),
        ],
        "InvalidGroup.NotFound",
    )
    .await;
    // A's group as a peer of B's own group.
    let bsg = text(
        &b.ok(
            "CreateSecurityGroup",
            &[("GroupName", "b"), ("GroupDescription", "b")],
        )
        .await,
        "groupId",
    );
    b.fails(
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", &bsg),
            ("IpPermissions.1.IpProtocol", "-1"),
            ("IpPermissions.1.Groups.1.GroupId", &sg),
        ],
        "InvalidGroup.NotFound",
    )
    .await;
    // The same CIDR in another tenant's VPC is fine (no overlap across VPCs).
    let bvpc = text(
        &b.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    b.ok(
        "CreateSubnet",
        &[("VpcId", &bvpc), ("CidrBlock", "10.0.0.0/24")],
    )
    .await;
    // A's objects are untouched.
    let s = a.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(text(&s, "mapPublicIpOnLaunch"), "false");
    let g = a.ok("DescribeSecurityGroups", &[("GroupId.1", &sg)]).await;
    assert_eq!(texts(&g, "ipPermissions"), [""; 0]);
    assert!(g.contains("<ipPermissions/>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_instances_places_instances_in_subnets_and_groups() {
    use nubis_control_plane::domain::lifecycle::State;
    use nubis_control_plane::sim::{SimAgent, SimOptions};
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 8, 4096))
        .await
        .unwrap();
    let a = Ec2::new(&cp.domain, "a").await;
    let b = Ec2::new(&cp.domain, "b").await;
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let subnet = text(
        &a.ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.0.0/24"),
                ("AvailabilityZone", ZONES[0]),
            ],
        )
        .await,
        "subnetId",
    );
    let other_zone = text(
        &a.ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.1.0/24"),
                ("AvailabilityZone", ZONES[1]),
            ],
        )
        .await,
        "subnetId",
    );
    let web = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "web"),
                ("VpcId", &vpc),
            ],
        )
        .await,
        "groupId",
    );
    let dflt_web = text(
        &a.ok(
            "CreateSecurityGroup",
            &[("GroupName", "web"), ("GroupDescription", "web")],
        )
        .await,
        "groupId",
    );
    let b_subnet = texts(&b.ok("DescribeSubnets", &[]).await, "subnetId").remove(0);
    let run = |extra: &[(&'static str, String)]| {
        let mut p: Vec<(&str, String)> = vec![
            ("ImageId", image.clone()),
            ("InstanceType", "t3.nano".into()),
            ("MinCount", "1".into()),
            ("MaxCount", "1".into()),
        ];
        p.extend(extra.iter().cloned());
        p
    };
    let refused: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            run(&[("SubnetId", b_subnet.clone())]),
            "InvalidSubnetID.NotFound",
        ),
        (
            run(&[
                ("SubnetId", subnet.clone()),
                ("SecurityGroupId.1", dflt_web.clone()),
            ]),
            "InvalidParameter",
        ),
        (
            run(&[
                ("SubnetId", subnet.clone()),
                ("SecurityGroupId.1", "sg-0123456789abcdef0".into()),
            ]),
            "InvalidGroup.NotFound",
        ),
        (
            run(&[
                ("SubnetId", subnet.clone()),
                ("SecurityGroup.1", "web".into()),
            ]),
            "InvalidParameterCombination",
        ),
        (
            run(&[
                ("SubnetId", other_zone.clone()),
                ("Placement.AvailabilityZone", ZONES[0].into()),
            ]),
            "InvalidParameterValue",
        ),
        (
            run(&[("SecurityGroup.1", "nope".into())]),
            "InvalidGroup.NotFound",
        ),
        (
            run(&[("SubnetId", "subnet-zz".into())]),
            "InvalidSubnetID.Malformed",
        ),
    ];
    for (p, code) in refused {
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        a.fails("RunInstances", &p, code).await;
    }
    let none = a.ok("DescribeInstances", &[]).await;
    assert!(
        texts(&none, "instanceId").is_empty(),
        "refused launches wrote nothing: {none}"
    );

    let p = run(&[
        ("SubnetId", subnet.clone()),
        ("SecurityGroupId.1", web.clone()),
    ]);
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = a.ok("RunInstances", &p).await;
    let id = text(&r, "instanceId");
    assert_eq!(text(&r, "subnetId"), subnet, "{r}");
    assert_eq!(text(&r, "vpcId"), vpc);
    assert!(
        r.contains(&format!(
            "<groupSet><item><groupId>{web}</groupId></item></groupSet>"
        )),
        "{r}"
    );
    assert!(
        r.contains("<networkInterfaceSet><item><networkInterfaceId>eni-"),
        "{r}"
    );
    assert_eq!(text(&r, "availabilityZone"), ZONES[0]);

    // In the default VPC without a subnet: its zone's default subnet and
    // the default group.
    let p = run(&[("Placement.AvailabilityZone", ZONES[0].into())]);
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r2 = a.ok("RunInstances", &p).await;
    let id2 = text(&r2, "instanceId");
    let dv = a
        .ok(
            "DescribeVpcs",
            &[
                ("Filter.1.Name", "is-default"),
                ("Filter.1.Value.1", "true"),
            ],
        )
        .await;
    let default_vpc = text(&dv, "vpcId");
    assert_eq!(text(&r2, "vpcId"), default_vpc);
    let ds = a
        .ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "availability-zone"),
                ("Filter.1.Value.1", ZONES[0]),
                ("Filter.2.Name", "default-for-az"),
                ("Filter.2.Value.1", "true"),
            ],
        )
        .await;
    let default_subnet = text(&ds, "subnetId");
    assert_eq!(text(&r2, "subnetId"), default_subnet, "{r2}");
    a.fails(
        "DeleteSubnet",
        &[("SubnetId", &default_subnet)],
        "DependencyViolation",
    )
    .await;

    // Filters.
    for (name, value, want) in [
        ("vpc-id", vpc.as_str(), id.as_str()),
        ("subnet-id", subnet.as_str(), id.as_str()),
        ("instance.group-id", web.as_str(), id.as_str()),
        ("vpc-id", default_vpc.as_str(), id2.as_str()),
        ("subnet-id", default_subnet.as_str(), id2.as_str()),
    ] {
        let d = a
            .ok(
                "DescribeInstances",
                &[("Filter.1.Name", name), ("Filter.1.Value.1", value)],
            )
            .await;
        assert_eq!(
            texts(&d, "instanceId"),
            vec![want.to_string()],
            "{name}={value}"
        );
    }
    // B sees none of it.
    assert!(texts(&b.ok("DescribeInstances", &[]).await, "instanceId").is_empty());

    // Dependencies while the instance lives.
    a.fails(
        "DeleteSubnet",
        &[("SubnetId", &subnet)],
        "DependencyViolation",
    )
    .await;
    a.fails(
        "DeleteSecurityGroup",
        &[("GroupId", &web)],
        "DependencyViolation",
    )
    .await;
    a.ok("TerminateInstances", &[("InstanceId.1", &id)]).await;
    let caller = Caller::Tenant(nubis_control_plane::ids::AccountId::parse(&a.account).unwrap());
    wait_domain_state(&cp.domain, &caller, &id, State::Terminated).await;
    a.ok("DeleteSecurityGroup", &[("GroupId", &web)]).await;
    a.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
}
