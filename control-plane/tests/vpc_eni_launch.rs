//! RunInstances creating secondary network interfaces (`NetworkInterface.N`
//! with `DeviceIndex` >= 1 and `SubnetId`) through the EC2 gateway's parser
//! and backend against a real etcd: addresses (the lowest free one, a chosen
//! one), groups (given, or the VPC's default group), the node's assignment,
//! DeleteOnTermination at terminate, every refusal writing nothing, another
//! tenant's subnet, two replicas asking for one address. Existing
//! interfaces at launch and attach/detach: `vpc_eni_secondary.rs`.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;
use vpc_common::enis::{
    assigned_spec, caller, claims, eni, interfaces_of, launch, network, run, snapshot, subnet,
};
use vpc_common::{text, texts, Ec2};

/// RunInstances parameters: a primary interface in `subnet` and a new one
/// at device index 1 with `extra` (`NetworkInterface.2.*`).
fn with_new_secondary(subnet: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("NetworkInterface.1.DeviceIndex", "0".to_string()),
        ("NetworkInterface.1.SubnetId", subnet.to_string()),
        ("NetworkInterface.2.DeviceIndex", "1".to_string()),
    ];
    p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_instances_creates_secondary_interfaces_at_launch() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let cp = start(cfg.clone()).await;
    let two = start(cfg).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _h0 = SimAgent::start(&ep, enrol(), SimOptions::new("h0", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let (vpc, s1, web) = network(&a, ZONES[0]).await;
    let s2 = subnet(&a, &vpc, "10.0.2.0/24", ZONES[0]).await;
    let s_z1 = subnet(&a, &vpc, "10.0.3.0/24", ZONES[1]).await;
    let taken = eni(&a, &s2, &[("PrivateIpAddress", "10.0.2.30")]).await;
    let other_vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.9.0.0/16")]).await,
        "vpcId",
    );
    let s_other = subnet(&a, &other_vpc, "10.9.1.0/24", ZONES[0]).await;
    let g_other = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "other"),
                ("GroupDescription", "other"),
                ("VpcId", &other_vpc),
            ],
        )
        .await,
        "groupId",
    );
    let (_, b_subnet, _) = network(&b, ZONES[0]).await;

    // Refusals: nothing written (A's records nor B's).
    let before = snapshot(&d).await;
    let subnet_key = "NetworkInterface.2.SubnetId";
    for (params, code) in [
        (
            with_new_secondary(&s1, &[(subnet_key, &s_other)]),
            "InvalidParameterValue",
        ),
        (
            with_new_secondary(&s1, &[(subnet_key, &s_z1)]),
            "InvalidParameterCombination",
        ),
        (
            with_new_secondary(&s1, &[(subnet_key, "subnet-0123456789abcdef0")]),
            "InvalidSubnetID.NotFound",
        ),
        (
            with_new_secondary(
                &s1,
                &[
                    (subnet_key, &s2),
                    ("NetworkInterface.2.PrivateIpAddress", "10.0.2.30"),
                ],
            ),
            "InvalidIPAddress.InUse",
        ),
        (
            with_new_secondary(
                &s1,
                &[
                    (subnet_key, &s2),
                    ("NetworkInterface.2.PrivateIpAddress", "10.0.1.9"),
                ],
            ),
            "InvalidParameterValue",
        ),
        (
            with_new_secondary(
                &s1,
                &[
                    (subnet_key, &s2),
                    ("NetworkInterface.2.SecurityGroupId.1", &g_other),
                ],
            ),
            "InvalidParameter",
        ),
        (
            with_new_secondary(
                &s1,
                &[
                    (subnet_key, &s2),
                    ("NetworkInterface.2.AssociatePublicIpAddress", "true"),
                ],
            ),
            "InvalidParameterCombination",
        ),
        (
            with_new_secondary(&s1, &[("NetworkInterface.2.PrivateIpAddress", "10.0.2.9")]),
            "InvalidParameterValue",
        ),
        (
            with_new_secondary(
                &s1,
                &[
                    (subnet_key, &s2),
                    ("NetworkInterface.2.DeleteOnTermination", "maybe"),
                ],
            ),
            "InvalidParameterValue",
        ),
    ] {
        assert_eq!(
            launch(&a, &run(&image, &params)).await,
            Err(code.to_string()),
            "{params:?}"
        );
    }
    // B cannot create an interface in A's subnet.
    assert_eq!(
        launch(
            &b,
            &run(&image, &with_new_secondary(&b_subnet, &[(subnet_key, &s2)]))
        )
        .await,
        Err("InvalidSubnetID.NotFound".to_string())
    );
    assert_eq!(snapshot(&d).await, before, "a refused launch wrote");

    // Two new interfaces: index 1 in s2 with group `web` and the lowest free
    // address, index 2 in s2 with a chosen address, the default group, kept
    // at terminate.
    let mut p = with_new_secondary(
        &s1,
        &[
            (subnet_key, &s2),
            ("NetworkInterface.2.SecurityGroupId.1", &web),
        ],
    );
    p.extend([
        ("NetworkInterface.3.DeviceIndex", "2".to_string()),
        ("NetworkInterface.3.SubnetId", s2.clone()),
        (
            "NetworkInterface.3.PrivateIpAddress",
            "10.0.2.40".to_string(),
        ),
        (
            "NetworkInterface.3.DeleteOnTermination",
            "false".to_string(),
        ),
    ]);
    let i1 = launch(&a, &run(&image, &p)).await.unwrap();
    let di = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await);
    assert_eq!(texts(&di, "deviceIndex"), ["0", "1", "2"], "{di}");
    let ids = texts(&di, "networkInterfaceId");
    let (n1, n2) = (ids[1].clone(), ids[2].clone());
    assert!(n1.starts_with("eni-") && n1 != n2 && n1 != taken, "{di}");
    let ips = texts(&di, "privateIpAddress");
    assert!(ips.contains(&"10.0.2.4".to_string()), "{di}");
    assert!(ips.contains(&"10.0.2.40".to_string()), "{di}");
    let mut got = claims(&d, &s2).await;
    got.sort();
    assert_eq!(got, ["10.0.2.30", "10.0.2.4", "10.0.2.40"]);
    let default_group = text(
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
    for (id, group, delete) in [(&n1, &web, "true"), (&n2, &default_group, "false")] {
        let de = a
            .ok("DescribeNetworkInterfaces", &[("NetworkInterfaceId.1", id)])
            .await;
        assert_eq!(text(&de, "status"), "in-use", "{de}");
        assert_eq!(text(&de, "instanceId"), i1, "{de}");
        assert_eq!(text(&de, "subnetId"), s2, "{de}");
        assert_eq!(texts(&de, "groupId"), std::slice::from_ref(group), "{de}");
        assert_eq!(text(&de, "deleteOnTermination"), delete, "{de}");
    }
    // The node gets both.
    let inst = wait_domain_state(&d, &caller(&a), &i1, State::Running).await;
    let spec = assigned_spec(&d, &inst).await;
    let extra: Vec<&str> = spec.extra_networks.iter().map(|n| n.ip.as_str()).collect();
    assert_eq!(extra, ["10.0.2.4", "10.0.2.40"]);

    // Terminate: the first deleted with its address, the second detached.
    a.ok("TerminateInstances", &[("InstanceId.1", &i1)]).await;
    wait_domain_state(&d, &caller(&a), &i1, State::Terminated).await;
    a.fails(
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1", &n1)],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &n2)],
        )
        .await;
    assert_eq!(text(&de, "status"), "available", "{de}");
    let mut got = claims(&d, &s2).await;
    got.sort();
    assert_eq!(got, ["10.0.2.30", "10.0.2.40"]);

    // Two replicas launch with a new interface at one address: one wins.
    let a2 = Ec2 {
        backend: DomainBackend::new(two.domain.clone()),
        account: a.account.clone(),
    };
    let p = run(
        &image,
        &with_new_secondary(
            &s1,
            &[
                (subnet_key, &s2),
                ("NetworkInterface.2.PrivateIpAddress", "10.0.2.50"),
            ],
        ),
    );
    let (r1, r2) = tokio::join!(launch(&a, &p), launch(&a2, &p));
    let won: Vec<&String> = [&r1, &r2].iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{r1:?} {r2:?}");
    for r in [&r1, &r2] {
        if let Err(code) = r {
            assert_eq!(code, "InvalidIPAddress.InUse");
        }
    }
    let mut got = claims(&d, &s2).await;
    got.sort();
    assert_eq!(got, ["10.0.2.30", "10.0.2.40", "10.0.2.50"]);
}
