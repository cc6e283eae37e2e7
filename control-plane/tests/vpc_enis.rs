//! Elastic network interfaces through the EC2 gateway's parser and backend
//! against a real etcd: Create/Describe/Delete/Modify, tags, every
//! refusal's EC2 code with nothing written (etcd compared before and
//! after), tenant isolation, the address claimed on create and released
//! exactly once, DeleteSubnet/DeleteSecurityGroup dependencies, launching
//! with an interface (RunInstances NetworkInterface.N) and what terminate
//! does to it, DescribeInstances `networkInterfaceSet`, Attach/Detach
//! refusals (the race of two replicas and the network view are in
//! vpc_enis_grpc.rs; secondary interfaces in vpc_eni_secondary.rs).

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;
use vpc_common::enis::{caller, claims, interfaces_of, launch, network, run, with_eni};
use vpc_common::{text, texts, Ec2};

/// (key, mod_revision) of every record under the prefixes an interface
/// action may write.
async fn snapshot(d: &nubis_control_plane::domain::Domain) -> Vec<(String, i64)> {
    let keys = d.store().keys();
    let all_vpcs = keys.all_vpcs();
    let root = all_vpcs.trim_end_matches("vpcs/");
    let mut out = Vec::new();
    for p in [
        "network-interfaces/",
        "ipam/addrs/",
        "security-groups/",
        "vpc-subnets/",
        "vpcs/",
    ] {
        let (kvs, _) = d.store().list_raw(&format!("{root}{p}")).await.unwrap();
        out.extend(kvs.into_iter().map(|(k, _, r)| (k, r)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_are_created_described_modified_and_deleted() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let cp = start(cfg.clone()).await;
    let d = cp.domain.clone();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let (vpc, subnet, web) = network(&a, ZONES[0]).await;
    let (_, b_subnet, b_sg) = network(&b, ZONES[0]).await;
    let default_sg = text(
        &a.ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", "default"),
            ],
        )
        .await,
        "groupId",
    );

    // Create: the lowest free address, a MAC from it, the groups given.
    let r = a
        .ok(
            "CreateNetworkInterface",
            &[
                ("SubnetId", &subnet),
                ("SecurityGroupId.1", &web),
                ("Description", "first"),
                ("TagSpecification.1.ResourceType", "network-interface"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "one"),
            ],
        )
        .await;
    let eni1 = text(&r, "networkInterfaceId");
    assert!(eni1.starts_with("eni-") && eni1.len() == 21, "{r}");
    assert_eq!(text(&r, "privateIpAddress"), "10.0.1.4");
    assert_eq!(text(&r, "macAddress"), "02:4e:0a:00:01:04");
    assert_eq!(text(&r, "status"), "available");
    assert_eq!(text(&r, "vpcId"), vpc);
    assert_eq!(text(&r, "subnetId"), subnet);
    assert_eq!(text(&r, "availabilityZone"), ZONES[0]);
    assert_eq!(text(&r, "description"), "first");
    assert_eq!(texts(&r, "groupId"), std::slice::from_ref(&web));
    assert_eq!(texts(&r, "groupName"), ["web"]);
    assert!(r.contains("<key>Name</key><value>one</value>"), "{r}");
    assert!(!r.contains("<attachment>"), "{r}");
    // Without groups: the VPC's default group; a requested address.
    let r2 = a
        .ok(
            "CreateNetworkInterface",
            &[("SubnetId", &subnet), ("PrivateIpAddress", "10.0.1.20")],
        )
        .await;
    let eni2 = text(&r2, "networkInterfaceId");
    assert_eq!(text(&r2, "privateIpAddress"), "10.0.1.20");
    assert_eq!(texts(&r2, "groupId"), std::slice::from_ref(&default_sg));
    assert_eq!(claims(&d, &subnet).await, ["10.0.1.20", "10.0.1.4"]);
    let avail = a.ok("DescribeSubnets", &[("SubnetId.1", &subnet)]).await;
    assert_eq!(text(&avail, "availableIpAddressCount"), "249");

    // Every refusal writes nothing.
    let six: Vec<(&str, String)> = std::iter::once(("SubnetId", subnet.clone()))
        .chain((1..=6).map(|n| {
            (
                [
                    "SecurityGroupId.1",
                    "SecurityGroupId.2",
                    "SecurityGroupId.3",
                    "SecurityGroupId.4",
                    "SecurityGroupId.5",
                    "SecurityGroupId.6",
                ][n - 1],
                format!("sg-{n:017x}"),
            )
        }))
        .collect();
    let six: Vec<(&str, &str)> = six.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let before = snapshot(&d).await;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("CreateNetworkInterface", vec![], "MissingParameter"),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", "subnet-0123456789abcdef0")],
            "InvalidSubnetID.NotFound",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", "subnet-xyz")],
            "InvalidSubnetID.Malformed",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &b_subnet)],
            "InvalidSubnetID.NotFound",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &subnet), ("PrivateIpAddress", "10.0.1.20")],
            "InvalidIPAddress.InUse",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &subnet), ("PrivateIpAddress", "10.0.2.9")],
            "InvalidParameterValue",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &subnet), ("PrivateIpAddress", "10.0.1.1")],
            "InvalidParameterValue",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &subnet), ("PrivateIpAddress", "nope")],
            "InvalidParameterValue",
        ),
        (
            "CreateNetworkInterface",
            vec![
                ("SubnetId", &subnet),
                ("SecurityGroupId.1", "sg-0123456789abcdef0"),
            ],
            "InvalidGroup.NotFound",
        ),
        (
            "CreateNetworkInterface",
            vec![("SubnetId", &subnet), ("SecurityGroupId.1", &b_sg)],
            "InvalidGroup.NotFound",
        ),
        (
            "CreateNetworkInterface",
            six.clone(),
            "SecurityGroupsPerInterfaceLimitExceeded",
        ),
        (
            "CreateNetworkInterface",
            vec![
                ("SubnetId", &subnet),
                ("SecondaryPrivateIpAddressCount", "2"),
            ],
            "Unsupported",
        ),
        (
            "DescribeNetworkInterfaces",
            vec![("NetworkInterfaceId.1", "eni-0123456789abcdef0")],
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "DescribeNetworkInterfaces",
            vec![("NetworkInterfaceId.1", "eni-zz")],
            "InvalidNetworkInterfaceID.Malformed",
        ),
        (
            "DescribeNetworkInterfaces",
            vec![("Filter.1.Name", "no-such"), ("Filter.1.Value.1", "x")],
            "InvalidParameterValue",
        ),
        (
            "DeleteNetworkInterface",
            vec![("NetworkInterfaceId", "eni-0123456789abcdef0")],
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            "DeleteNetworkInterface",
            vec![("NetworkInterfaceId", "i-0123456789abcdef0")],
            "InvalidNetworkInterfaceID.Malformed",
        ),
        (
            "ModifyNetworkInterfaceAttribute",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("SecurityGroupId.1", "sg-0123456789abcdef0"),
            ],
            "InvalidGroup.NotFound",
        ),
        (
            "ModifyNetworkInterfaceAttribute",
            vec![("NetworkInterfaceId", &eni1)],
            "MissingParameter",
        ),
        (
            "ModifyNetworkInterfaceAttribute",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("SecurityGroupId.1", &web),
                ("Description.Value", "x"),
            ],
            "InvalidParameterCombination",
        ),
        (
            "ModifyNetworkInterfaceAttribute",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("SourceDestCheck.Value", "false"),
            ],
            "Unsupported",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("InstanceId", "i-0123456789abcdef0"),
                ("DeviceIndex", "1"),
            ],
            "InvalidInstanceID.NotFound",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("InstanceId", "i-0123456789abcdef0"),
            ],
            "MissingParameter",
        ),
        (
            "DetachNetworkInterface",
            vec![("AttachmentId", "eni-attach-0123456789abcdef0")],
            "InvalidAttachmentID.NotFound",
        ),
        (
            "DetachNetworkInterface",
            vec![("AttachmentId", "eni-0123456789abcdef0")],
            "InvalidAttachmentID.Malformed",
        ),
        (
            "DeleteSecurityGroup",
            vec![("GroupId", &web)],
            "DependencyViolation",
        ),
        (
            "DeleteSubnet",
            vec![("SubnetId", &subnet)],
            "DependencyViolation",
        ),
    ];
    for (action, params, code) in &cases {
        a.fails(action, params, code).await;
    }
    assert_eq!(snapshot(&d).await, before, "a refused call wrote");

    // Tenant isolation: B neither sees nor touches A's interfaces.
    for (action, params) in [
        (
            "DescribeNetworkInterfaces",
            vec![("NetworkInterfaceId.1", eni1.as_str())],
        ),
        (
            "DeleteNetworkInterface",
            vec![("NetworkInterfaceId", &eni1)],
        ),
        (
            "ModifyNetworkInterfaceAttribute",
            vec![("NetworkInterfaceId", &eni1), ("Description.Value", "x")],
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &eni1),
                ("InstanceId", "i-0123456789abcdef0"),
                ("DeviceIndex", "1"),
            ],
        ),
    ] {
        b.fails(action, &params, "InvalidNetworkInterfaceID.NotFound")
            .await;
    }
    b.fails(
        "CreateTags",
        &[
            ("ResourceId.1", &eni1),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    assert!(texts(
        &b.ok("DescribeNetworkInterfaces", &[]).await,
        "networkInterfaceId"
    )
    .is_empty());
    assert_eq!(snapshot(&d).await, before, "another tenant's call wrote");

    // Describe: by id and by every filter.
    let all = a.ok("DescribeNetworkInterfaces", &[]).await;
    let mut both = vec![eni1.clone(), eni2.clone()];
    both.sort();
    assert_eq!(texts(&all, "networkInterfaceId"), both);
    for (name, value, want) in [
        ("vpc-id", vpc.as_str(), both.clone()),
        ("subnet-id", subnet.as_str(), both.clone()),
        ("network-interface-id", eni2.as_str(), vec![eni2.clone()]),
        ("status", "available", both.clone()),
        ("status", "in-use", vec![]),
        ("private-ip-address", "10.0.1.4", vec![eni1.clone()]),
        ("tag:Name", "one", vec![eni1.clone()]),
        ("group-id", web.as_str(), vec![eni1.clone()]),
        ("attachment.instance-id", "i-0123456789abcdef0", vec![]),
    ] {
        let got = a
            .ok(
                "DescribeNetworkInterfaces",
                &[("Filter.1.Name", name), ("Filter.1.Value.1", value)],
            )
            .await;
        assert_eq!(texts(&got, "networkInterfaceId"), want, "{name}={value}");
    }

    // Tags through CreateTags/DescribeTags/DeleteTags.
    a.ok(
        "CreateTags",
        &[
            ("ResourceId.1", &eni2),
            ("Tag.1.Key", "role"),
            ("Tag.1.Value", "db"),
        ],
    )
    .await;
    let t = a
        .ok(
            "DescribeTags",
            &[
                ("Filter.1.Name", "resource-id"),
                ("Filter.1.Value.1", &eni2),
            ],
        )
        .await;
    assert_eq!(text(&t, "resourceType"), "network-interface");
    assert_eq!(text(&t, "value"), "db");
    a.ok(
        "DeleteTags",
        &[("ResourceId.1", &eni2), ("Tag.1.Key", "role")],
    )
    .await;
    let t = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni2)],
        )
        .await;
    assert!(!t.contains("<key>role</key>"), "{t}");

    // Modify: description, then groups.
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &eni1),
            ("Description.Value", "renamed"),
        ],
    )
    .await;
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &eni1),
            ("SecurityGroupId.1", &default_sg),
        ],
    )
    .await;
    let m = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni1)],
        )
        .await;
    assert_eq!(text(&m, "description"), "renamed");
    assert_eq!(texts(&m, "groupId"), std::slice::from_ref(&default_sg));
    // "web" is no longer used: it can go.
    a.ok("DeleteSecurityGroup", &[("GroupId", &web)]).await;

    // Delete: the address goes back, exactly once, whichever replica
    // deletes (two replicas race for eni1).
    let two = start(cfg).await;
    let a2 = Ec2 {
        backend: DomainBackend::new(two.domain.clone()),
        account: a.account.clone(),
    };
    let del = [("NetworkInterfaceId", eni1.as_str())];
    let (r1, r2) = tokio::join!(
        a.call("DeleteNetworkInterface", &del),
        a2.call("DeleteNetworkInterface", &del),
    );
    let oks = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{r1:?} {r2:?}");
    for r in [&r1, &r2] {
        if let Err(e) = r {
            assert_eq!(e.code.as_str(), "InvalidNetworkInterfaceID.NotFound");
        }
    }
    assert_eq!(claims(&d, &subnet).await, ["10.0.1.20"]);
    // The freed address is handed out again.
    let r3 = a
        .ok("CreateNetworkInterface", &[("SubnetId", &subnet)])
        .await;
    assert_eq!(text(&r3, "privateIpAddress"), "10.0.1.4");
    for e in [eni2, text(&r3, "networkInterfaceId")] {
        a.ok("DeleteNetworkInterface", &[("NetworkInterfaceId", &e)])
            .await;
    }
    assert!(claims(&d, &subnet).await.is_empty());
    a.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launching_with_an_interface_attaches_it_and_terminate_detaches_or_deletes_it() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _h0 = SimAgent::start(&ep, enrol(), SimOptions::new("h0", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let _h1 = SimAgent::start(&ep, enrol(), SimOptions::new("h1", ZONES[1], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let (vpc, subnet, web) = network(&a, ZONES[0]).await;
    let eni = text(
        &a.ok(
            "CreateNetworkInterface",
            &[
                ("SubnetId", &subnet),
                ("SecurityGroupId.1", &web),
                ("PrivateIpAddress", "10.0.1.50"),
            ],
        )
        .await,
        "networkInterfaceId",
    );

    // Misuse first: nothing is written (B's default VPC, made on first
    // use, exists before).
    b.ok("DescribeVpcs", &[]).await;
    let before = snapshot(&d).await;
    let mut top_subnet = with_eni(&eni, false);
    top_subnet.push(("SubnetId", subnet.clone()));
    let mut two_params = run(&image, &with_eni(&eni, false));
    for (k, v) in two_params.iter_mut() {
        if *k == "MaxCount" {
            *v = "2".into();
        }
    }
    let mut spec_and_id = with_eni(&eni, false);
    spec_and_id.push(("NetworkInterface.1.SubnetId", subnet.clone()));
    for (params, code) in [
        (run(&image, &top_subnet), "InvalidParameterCombination"),
        (two_params, "InvalidParameterCombination"),
        (run(&image, &spec_and_id), "InvalidParameterCombination"),
        // No primary interface (device index 0).
        (
            run(
                &image,
                &[
                    ("NetworkInterface.1.DeviceIndex", "1".into()),
                    ("NetworkInterface.1.SubnetId", subnet.clone()),
                ],
            ),
            "InvalidParameterValue",
        ),
        (
            run(
                &image,
                &[
                    ("NetworkInterface.1.DeviceIndex", "0".into()),
                    ("NetworkInterface.1.NetworkInterfaceId", eni.clone()),
                    ("Placement.AvailabilityZone", ZONES[1].into()),
                ],
            ),
            "InvalidParameterCombination",
        ),
        (
            run(&image, &with_eni("eni-0123456789abcdef0", false)),
            "InvalidNetworkInterfaceID.NotFound",
        ),
    ] {
        assert_eq!(
            launch(&a, &params).await,
            Err(code.to_string()),
            "{params:?}"
        );
    }
    // Another tenant cannot launch with A's interface.
    assert_eq!(
        launch(&b, &run(&image, &with_eni(&eni, false))).await,
        Err("InvalidNetworkInterfaceID.NotFound".into())
    );
    assert_eq!(snapshot(&d).await, before, "a refused launch wrote");

    // Launch with it: the instance's address, MAC and groups are the
    // interface's; the interface is in use, attached at device index 0.
    let i1 = launch(&a, &run(&image, &with_eni(&eni, false)))
        .await
        .unwrap();
    let di = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await);
    assert_eq!(text(&di, "privateIpAddress"), "10.0.1.50");
    assert_eq!(text(&di, "subnetId"), subnet);
    assert_eq!(text(&di, "networkInterfaceId"), eni);
    assert_eq!(text(&di, "macAddress"), "02:4e:0a:00:01:32");
    assert_eq!(text(&di, "deviceIndex"), "0");
    assert_eq!(text(&di, "deleteOnTermination"), "false");
    let hex = &i1["i-".len()..];
    assert_eq!(text(&di, "attachmentId"), format!("eni-attach-{hex}"));
    assert!(texts(&di, "groupId").contains(&web), "{di}");
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni)],
        )
        .await;
    assert_eq!(text(&de, "status"), "in-use");
    assert_eq!(text(&de, "instanceId"), i1);
    assert_eq!(text(&de, "deviceIndex"), "0");
    let byinst = a
        .ok(
            "DescribeNetworkInterfaces",
            &[
                ("Filter.1.Name", "attachment.instance-id"),
                ("Filter.1.Value.1", &i1),
            ],
        )
        .await;
    assert_eq!(
        texts(&byinst, "networkInterfaceId"),
        std::slice::from_ref(&eni)
    );
    // The address is claimed once (by the interface).
    assert_eq!(claims(&d, &subnet).await, ["10.0.1.50"]);

    // An ordinary instance: its derived primary interface.
    let i2 = launch(&a, &run(&image, &[("SubnetId", subnet.clone())]))
        .await
        .unwrap();
    let hex2 = &i2["i-".len()..];
    let derived = format!("eni-{hex2}");
    let dd = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &derived)],
        )
        .await;
    assert_eq!(text(&dd, "status"), "in-use");
    assert_eq!(text(&dd, "instanceId"), i2);
    assert_eq!(text(&dd, "attachmentId"), format!("eni-attach-{hex2}"));
    assert_eq!(text(&dd, "deleteOnTermination"), "true");
    assert_eq!(text(&dd, "vpcId"), vpc);
    let di2 = a.ok("DescribeInstances", &[("InstanceId.1", &i2)]).await;
    assert_eq!(text(&di2, "networkInterfaceId"), derived);
    assert_eq!(
        text(&dd, "privateIpAddress"),
        text(&di2, "privateIpAddress")
    );

    // Refusals on attached and primary interfaces: nothing written.
    let before = snapshot(&d).await;
    let other_zone = text(
        &a.ok(
            "CreateSubnet",
            &[
                ("VpcId", &vpc),
                ("CidrBlock", "10.0.2.0/24"),
                ("AvailabilityZone", ZONES[1]),
            ],
        )
        .await,
        "subnetId",
    );
    let eni_z1 = text(
        &a.ok("CreateNetworkInterface", &[("SubnetId", &other_zone)])
            .await,
        "networkInterfaceId",
    );
    let spare = text(
        &a.ok("CreateNetworkInterface", &[("SubnetId", &subnet)])
            .await,
        "networkInterfaceId",
    );
    let before_refusals = snapshot(&d).await;
    assert_ne!(before, before_refusals);
    for (action, params, code) in [
        (
            "DeleteNetworkInterface",
            vec![("NetworkInterfaceId", eni.as_str())],
            "InvalidNetworkInterface.InUse",
        ),
        (
            "DeleteNetworkInterface",
            vec![("NetworkInterfaceId", &derived)],
            "InvalidNetworkInterface.InUse",
        ),
        (
            "DetachNetworkInterface",
            vec![("AttachmentId", &format!("eni-attach-{hex}"))],
            "OperationNotPermitted",
        ),
        (
            "DetachNetworkInterface",
            vec![("AttachmentId", &format!("eni-attach-{hex2}"))],
            "OperationNotPermitted",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &eni),
                ("InstanceId", &i2),
                ("DeviceIndex", "1"),
            ],
            "InvalidNetworkInterface.InUse",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &eni_z1),
                ("InstanceId", &i2),
                ("DeviceIndex", "1"),
            ],
            "InvalidParameterCombination",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &spare),
                ("InstanceId", &i2),
                ("DeviceIndex", "0"),
            ],
            "InvalidParameterValue",
        ),
        (
            "AttachNetworkInterface",
            vec![
                ("NetworkInterfaceId", &spare),
                ("InstanceId", &i2),
                ("DeviceIndex", "1"),
            ],
            "IncorrectInstanceState",
        ),
    ] {
        a.fails(action, &params, code).await;
    }
    // The refusal of a secondary attachment to a running instance says why
    // (no hot-plug; vpc_eni_secondary.rs attaches to stopped instances).
    let e = a
        .call(
            "AttachNetworkInterface",
            &[
                ("NetworkInterfaceId", &spare),
                ("InstanceId", &i2),
                ("DeviceIndex", "1"),
            ],
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("while the instance is stopped"), "{e}");
    assert_eq!(
        launch(&a, &run(&image, &with_eni(&eni, false))).await,
        Err("InvalidNetworkInterface.InUse".into())
    );
    assert_eq!(snapshot(&d).await, before_refusals, "a refused call wrote");

    // Groups of an attached interface are the instance's.
    let default_sg = text(
        &a.ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", "default"),
            ],
        )
        .await,
        "groupId",
    );
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecurityGroupId.1", &default_sg),
        ],
    )
    .await;
    let di = a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await;
    assert!(texts(&di, "groupId").contains(&default_sg), "{di}");
    assert!(!texts(&di, "groupId").contains(&web), "{di}");
    // ModifyInstanceAttribute's groups are the interface's too.
    a.ok(
        "ModifyInstanceAttribute",
        &[("InstanceId", &i1), ("GroupId.1", &web)],
    )
    .await;
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni)],
        )
        .await;
    assert_eq!(texts(&de, "groupId"), std::slice::from_ref(&web), "{de}");
    // And of a derived interface too.
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &derived),
            ("SecurityGroupId.1", &web),
        ],
    )
    .await;
    let di2 = a.ok("DescribeInstances", &[("InstanceId.1", &i2)]).await;
    assert!(texts(&di2, "groupId").contains(&web), "{di2}");

    // Terminate without deleteOnTermination: detached, address kept.
    let ca = caller(&a);
    a.ok("TerminateInstances", &[("InstanceId.1", &i1)]).await;
    wait_domain_state(&d, &ca, &i1, State::Terminated).await;
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &eni)],
        )
        .await;
    assert_eq!(text(&de, "status"), "available", "{de}");
    assert!(!de.contains("<attachment>"), "{de}");
    assert!(claims(&d, &subnet).await.contains(&"10.0.1.50".to_string()));

    // Launched again with deleteOnTermination: terminate deletes it and
    // releases its address (once).
    let i3 = launch(&a, &run(&image, &with_eni(&eni, true)))
        .await
        .unwrap();
    let di3 = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i3)]).await);
    assert_eq!(text(&di3, "privateIpAddress"), "10.0.1.50");
    assert_eq!(text(&di3, "deleteOnTermination"), "true");
    a.ok("TerminateInstances", &[("InstanceId.1", &i3)]).await;
    wait_domain_state(&d, &ca, &i3, State::Terminated).await;
    a.fails(
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1", &eni)],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    assert!(!claims(&d, &subnet).await.contains(&"10.0.1.50".to_string()));
    // The derived interface of a terminated instance is gone too.
    a.ok("TerminateInstances", &[("InstanceId.1", &i2)]).await;
    wait_domain_state(&d, &ca, &i2, State::Terminated).await;
    a.fails(
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1", &derived)],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    a.fails(
        "AttachNetworkInterface",
        &[
            ("NetworkInterfaceId", &spare),
            ("InstanceId", &i2),
            ("DeviceIndex", "1"),
        ],
        "IncorrectInstanceState",
    )
    .await;

    // A new interface specified at launch: subnet, groups and address of
    // the specification.
    let i4 = launch(
        &a,
        &run(
            &image,
            &[
                ("NetworkInterface.1.DeviceIndex", "0".into()),
                ("NetworkInterface.1.SubnetId", subnet.clone()),
                ("NetworkInterface.1.SecurityGroupId.1", web.clone()),
                ("NetworkInterface.1.PrivateIpAddress", "10.0.1.77".into()),
                ("NetworkInterface.1.DeleteOnTermination", "true".into()),
            ],
        ),
    )
    .await
    .unwrap();
    let di4 = a.ok("DescribeInstances", &[("InstanceId.1", &i4)]).await;
    assert_eq!(text(&di4, "privateIpAddress"), "10.0.1.77");
    assert_eq!(text(&di4, "subnetId"), subnet);
    assert!(texts(&di4, "groupId").contains(&web), "{di4}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_ips_follow_the_interface_an_instance_was_launched_with() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/24".into());
    let cp = start(cfg).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _h = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&d, "a").await;
    // The default VPC's subnet of the zone: routed to its gateway.
    let subnet = text(
        &a.ok(
            "DescribeSubnets",
            &[
                ("Filter.1.Name", "availability-zone"),
                ("Filter.1.Value.1", ZONES[0]),
            ],
        )
        .await,
        "subnetId",
    );
    let eni = text(
        &a.ok("CreateNetworkInterface", &[("SubnetId", &subnet)])
            .await,
        "networkInterfaceId",
    );
    let alloc = text(&a.ok("AllocateAddress", &[]).await, "allocationId");
    // Not attached: refused, nothing written.
    a.fails(
        "AssociateAddress",
        &[("AllocationId", &alloc), ("NetworkInterfaceId", &eni)],
        "InvalidParameterValue",
    )
    .await;
    let i = launch(&a, &run(&image, &with_eni(&eni, false)))
        .await
        .unwrap();
    a.ok(
        "AssociateAddress",
        &[("AllocationId", &alloc), ("NetworkInterfaceId", &eni)],
    )
    .await;
    let addr = a
        .ok(
            "DescribeAddresses",
            &[
                ("Filter.1.Name", "network-interface-id"),
                ("Filter.1.Value.1", &eni),
            ],
        )
        .await;
    assert_eq!(texts(&addr, "allocationId"), std::slice::from_ref(&alloc));
    assert_eq!(text(&addr, "instanceId"), i);
    assert_eq!(text(&addr, "networkInterfaceId"), eni);
}
