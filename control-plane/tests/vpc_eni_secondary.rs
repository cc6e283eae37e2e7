//! Secondary network interfaces (device index 1 or more) through the EC2
//! gateway's parser and backend against a real etcd: attached and detached
//! only while the instance is stopped; every refusal's EC2 code with
//! nothing written (interfaces, claims and instance records compared before
//! and after); tenant isolation; DescribeInstances and
//! DescribeNetworkInterfaces; the node's network view (one endpoint per
//! interface, with the interface's own groups) and assignment
//! (`extra_networks`) after the start; Attachment.DeleteOnTermination and
//! terminate (detached, or deleted with its address); two replicas racing.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use std::time::{Duration, Instant};

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::Domain;
use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::node::v1 as npb;
use support::*;
use vpc_common::enis::{
    assigned_spec, caller, claims, eni, interfaces_of, launch, network, run, snapshot, subnet,
};
use vpc_common::{text, texts, Ec2};

async fn stop(e: &Ec2, d: &Domain, id: &str) {
    e.ok("StopInstances", &[("InstanceId.1", id)]).await;
    wait_domain_state(d, &caller(e), id, State::Stopped).await;
}

async fn start_again(e: &Ec2, d: &Domain, id: &str) {
    e.ok("StartInstances", &[("InstanceId.1", id)]).await;
    wait_domain_state(d, &caller(e), id, State::Running).await;
}

fn attach<'a>(eni: &'a str, inst: &'a str, index: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("NetworkInterfaceId", eni),
        ("InstanceId", inst),
        ("DeviceIndex", index),
    ]
}

/// The endpoints of instance `id` in `v`, by device index.
fn endpoints_of(v: &npb::NetworkView, id: &str) -> Vec<npb::Endpoint> {
    let mut out: Vec<npb::Endpoint> = v
        .vpcs
        .iter()
        .flat_map(|x| &x.endpoints)
        .filter(|e| e.instance_id == id)
        .cloned()
        .collect();
    out.sort_by_key(|e| e.device_index);
    out
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_interfaces_attach_while_stopped_and_reach_the_node() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let n = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h0", ZONES[0], 16, 8192).with_underlay("192.0.2.1"),
    )
    .await
    .unwrap();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let (vpc, s1, web) = network(&a, ZONES[0]).await;
    let s2 = subnet(&a, &vpc, "10.0.2.0/24", ZONES[0]).await;
    let s_z1 = subnet(&a, &vpc, "10.0.3.0/24", ZONES[1]).await;
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
    let e2 = eni(
        &a,
        &s2,
        &[
            ("SecurityGroupId.1", &db),
            ("PrivateIpAddress", "10.0.2.20"),
        ],
    )
    .await;
    let e3 = eni(&a, &s1, &[]).await;
    let e_z1 = eni(&a, &s_z1, &[]).await;
    // Another VPC of A, same zone.
    let other_vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.9.0.0/16")]).await,
        "vpcId",
    );
    let s_other = subnet(&a, &other_vpc, "10.9.1.0/24", ZONES[0]).await;
    let e_other = eni(&a, &s_other, &[]).await;
    let (_, b_subnet, _) = network(&b, ZONES[0]).await;
    let e_b = eni(&b, &b_subnet, &[]).await;

    let i1 = launch(&a, &run(&image, &[("SubnetId", s1.clone())]))
        .await
        .unwrap();
    wait_domain_state(&d, &caller(&a), &i1, State::Running).await;

    // Running: no hot-plug. Nothing is written.
    let before = snapshot(&d).await;
    let e = a
        .call("AttachNetworkInterface", &attach(&e2, &i1, "1"))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "IncorrectInstanceState", "{e}");
    assert!(e.message.contains("hot-plug"), "{e}");
    assert_eq!(snapshot(&d).await, before, "a refused attach wrote");

    stop(&a, &d, &i1).await;
    let before = snapshot(&d).await;
    for (params, code) in [
        (attach(&e2, &i1, "0"), "InvalidParameterValue"),
        (attach(&e2, &i1, "4"), "AttachmentLimitExceeded"),
        (attach(&e2, &i1, "32"), "InvalidParameterValue"),
        (attach(&e2, &i1, "x"), "InvalidParameterValue"),
        (attach(&e_z1, &i1, "1"), "InvalidParameterCombination"),
        (attach(&e_other, &i1, "1"), "InvalidParameterValue"),
        (
            attach("eni-0123456789abcdef0", &i1, "1"),
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            attach(&e2, "i-0123456789abcdef0", "1"),
            "InvalidInstanceID.NotFound",
        ),
        (
            attach(&format!("eni-{}", &i1["i-".len()..]), &i1, "1"),
            "InvalidNetworkInterface.InUse",
        ),
    ] {
        a.fails("AttachNetworkInterface", &params, code).await;
    }
    // Tenant isolation: B sees neither A's interface nor A's instance.
    b.fails(
        "AttachNetworkInterface",
        &attach(&e2, &i1, "1"),
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    b.fails(
        "AttachNetworkInterface",
        &attach(&e_b, &i1, "1"),
        "InvalidInstanceID.NotFound",
    )
    .await;
    assert_eq!(snapshot(&d).await, before, "a refused attach wrote");

    // Attach e2 at device index 1.
    let att = text(
        &a.ok("AttachNetworkInterface", &attach(&e2, &i1, "1")).await,
        "attachmentId",
    );
    assert_eq!(att, format!("eni-attach-{}", &e2["eni-".len()..]));
    // The index is taken; e2 is in use; B cannot detach A's attachment.
    let before = snapshot(&d).await;
    a.fails(
        "AttachNetworkInterface",
        &attach(&e3, &i1, "1"),
        "InvalidParameterValue",
    )
    .await;
    a.fails(
        "AttachNetworkInterface",
        &attach(&e2, &i1, "2"),
        "InvalidNetworkInterface.InUse",
    )
    .await;
    a.fails(
        "DeleteNetworkInterface",
        &[("NetworkInterfaceId", &e2)],
        "InvalidNetworkInterface.InUse",
    )
    .await;
    b.fails(
        "DetachNetworkInterface",
        &[("AttachmentId", &att)],
        "InvalidAttachmentID.NotFound",
    )
    .await;
    b.fails(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &e2),
            ("Attachment.AttachmentId", &att),
            ("Attachment.DeleteOnTermination", "true"),
        ],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    a.fails(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &e2),
            ("Attachment.AttachmentId", "eni-attach-0123456789abcdef0"),
            ("Attachment.DeleteOnTermination", "true"),
        ],
        "InvalidAttachmentID.NotFound",
    )
    .await;
    // Elastic IPs are the primary interface's.
    let e = a
        .call(
            "AssociateAddress",
            &[
                ("AllocationId", "eipalloc-0123456789abcdef0"),
                ("NetworkInterfaceId", &e2),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code.as_str(), "InvalidParameterValue", "{e}");
    assert!(e.message.contains("secondary"), "{e}");
    assert_eq!(snapshot(&d).await, before, "a refused call wrote");

    // Described on both sides.
    let di = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await);
    assert_eq!(texts(&di, "deviceIndex"), ["0", "1"], "{di}");
    assert_eq!(
        texts(&di, "networkInterfaceId")[1],
        e2,
        "the secondary interface: {di}"
    );
    assert!(texts(&di, "privateIpAddress").contains(&"10.0.2.20".to_string()));
    assert!(texts(&di, "groupId").contains(&db), "{di}");
    // The Compute API's view: the same interfaces, by device index.
    let inst = d.instance(&caller(&a), &i1).await.unwrap().value;
    let pi = nubis_control_plane::api::compute::instance_out(&inst, false, "nubis-local-1")
        .network_interfaces;
    assert_eq!(
        pi.iter().map(|n| n.device_index).collect::<Vec<_>>(),
        [0, 1],
        "{pi:?}"
    );
    assert_eq!(
        pi[0].network_interface_id,
        texts(&di, "networkInterfaceId")[0]
    );
    assert_eq!(pi[1].network_interface_id, e2);
    assert_eq!(pi[1].attachment_id, att);
    assert_eq!(pi[1].private_ip_address, "10.0.2.20");
    assert_eq!(pi[1].security_group_ids, std::slice::from_ref(&db));
    assert!(!pi[1].delete_on_termination);
    assert!(pi[0].delete_on_termination);
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &e2)],
        )
        .await;
    assert_eq!(text(&de, "status"), "in-use");
    assert_eq!(text(&de, "instanceId"), i1);
    assert_eq!(text(&de, "deviceIndex"), "1");
    assert_eq!(text(&de, "attachmentId"), att);
    assert_eq!(text(&de, "deleteOnTermination"), "false");
    let by_inst = a
        .ok(
            "DescribeNetworkInterfaces",
            &[
                ("Filter.1.Name", "attachment.instance-id"),
                ("Filter.1.Value.1", &i1),
            ],
        )
        .await;
    assert_eq!(texts(&by_inst, "networkInterfaceId").len(), 2, "{by_inst}");

    // Detach while stopped, and attach again (a second one at index 2).
    a.ok("DetachNetworkInterface", &[("AttachmentId", &att)])
        .await;
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &e2)],
        )
        .await;
    assert_eq!(text(&de, "status"), "available");
    let di = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await);
    assert_eq!(texts(&di, "deviceIndex"), ["0"], "{di}");
    a.fails(
        "DetachNetworkInterface",
        &[("AttachmentId", &att)],
        "InvalidAttachmentID.NotFound",
    )
    .await;
    a.ok("AttachNetworkInterface", &attach(&e2, &i1, "1")).await;
    let att3 = text(
        &a.ok("AttachNetworkInterface", &attach(&e3, &i1, "2")).await,
        "attachmentId",
    );
    // e3 goes with the instance.
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &e3),
            ("Attachment.AttachmentId", &att3),
            ("Attachment.DeleteOnTermination", "true"),
        ],
    )
    .await;
    let e3_ip = text(
        &a.ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &e3)],
        )
        .await,
        "privateIpAddress",
    );

    // Start: the node's view has one endpoint per interface, each with
    // its own groups, and the assignment carries the secondary ones.
    let t0 = Instant::now() - Duration::from_secs(1);
    start_again(&a, &d, &i1).await;
    let (_, v) = n
        .wait_view(t0, WAIT, |v| endpoints_of(v, &i1).len() == 3)
        .await
        .expect("a view with the three interfaces");
    // The primary last: an older agent (the last endpoint of an instance
    // wins) keeps it.
    let order: Vec<u32> = v
        .vpcs
        .iter()
        .flat_map(|x| &x.endpoints)
        .filter(|e| e.instance_id == i1)
        .map(|e| e.device_index)
        .collect();
    assert_eq!(order.last(), Some(&0), "{order:?}");
    let eps = endpoints_of(&v, &i1);
    assert_eq!(
        eps.iter().map(|e| e.device_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(eps[1].ip, "10.0.2.20");
    assert_eq!(eps[1].mac, "02:4e:0a:00:02:14");
    assert_eq!(eps[1].subnet_id, s2);
    assert_eq!(eps[1].interface_id, e2);
    assert_eq!(eps[1].security_group_ids, std::slice::from_ref(&db));
    let own: Vec<String> = d
        .instance(&caller(&a), &i1)
        .await
        .unwrap()
        .value
        .vpc
        .unwrap()
        .security_group_ids
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        eps[0].security_group_ids, own,
        "the primary keeps the instance's"
    );
    assert_ne!(own, std::slice::from_ref(&db));
    assert_eq!(eps[2].ip, e3_ip);
    assert!(eps[1].public_ip.is_empty());
    let vv = v.vpcs.iter().find(|x| x.vpc_id == vpc).unwrap();
    assert!(
        vv.security_groups.iter().any(|g| g.group_id == db),
        "the secondary interface's group and rules are in the view"
    );
    let inst = d.instance(&caller(&a), &i1).await.unwrap().value;
    let spec = assigned_spec(&d, &inst).await;
    let primary = spec.network.unwrap();
    let extra = spec.extra_networks;
    assert_eq!(extra.len(), 2);
    assert_eq!(
        (
            extra[0].ip.as_str(),
            extra[0].prefix_len,
            extra[0].gateway.as_str(),
            extra[0].device_index,
            extra[0].vni,
        ),
        ("10.0.2.20", 24, "10.0.2.1", 1, primary.vni)
    );
    assert_eq!(extra[0].security_group_ids, std::slice::from_ref(&db));
    assert_eq!(extra[1].device_index, 2);

    // Running again: detach refused, nothing written.
    let before = snapshot(&d).await;
    a.fails(
        "DetachNetworkInterface",
        &[("AttachmentId", &att)],
        "IncorrectInstanceState",
    )
    .await;
    assert_eq!(snapshot(&d).await, before, "a refused detach wrote");

    // The secondary interface's groups change: its endpoint follows, the
    // primary keeps its own.
    let t1 = Instant::now();
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[("NetworkInterfaceId", &e2), ("SecurityGroupId.1", &web)],
    )
    .await;
    let (_, v) = n
        .wait_view(t1, WAIT, |v| {
            endpoints_of(v, &i1)
                .get(1)
                .is_some_and(|e| e.security_group_ids == [web.clone()])
        })
        .await
        .expect("the view with the secondary interface's new groups");
    assert_eq!(
        endpoints_of(&v, &i1)[0].security_group_ids,
        own,
        "the primary's groups are unchanged"
    );

    // Terminate: e2 (deleteOnTermination false) is detached, keeping its
    // address; e3 is deleted with its address.
    a.ok("TerminateInstances", &[("InstanceId.1", &i1)]).await;
    wait_domain_state(&d, &caller(&a), &i1, State::Terminated).await;
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &e2)],
        )
        .await;
    assert_eq!(text(&de, "status"), "available");
    assert!(claims(&d, &s2).await.contains(&"10.0.2.20".to_string()));
    a.fails(
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1", &e3)],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    assert!(
        !claims(&d, &s1).await.contains(&e3_ip),
        "e3's address freed"
    );
    // And e2 can be deleted now.
    a.ok("DeleteNetworkInterface", &[("NetworkInterfaceId", &e2)])
        .await;
    assert!(claims(&d, &s2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_to_attach_commit_one() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let one = start(cfg.clone()).await;
    let two = start(cfg).await;
    let ep = endpoint(&one);
    let image = hello_image(&ep).await;
    let _h = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let d = one.domain.clone();
    let a = Ec2::new(&d, "a").await;
    let a2 = Ec2 {
        backend: DomainBackend::new(two.domain.clone()),
        account: a.account.clone(),
    };
    let (_, s1, _) = network(&a, ZONES[0]).await;
    let i1 = launch(&a, &run(&image, &[("SubnetId", s1.clone())]))
        .await
        .unwrap();
    let i2 = launch(&a, &run(&image, &[("SubnetId", s1.clone())]))
        .await
        .unwrap();
    for i in [&i1, &i2] {
        wait_domain_state(&d, &caller(&a), i, State::Running).await;
        stop(&a, &d, i).await;
    }
    for round in 0..3 {
        let index = "1";
        // Two interfaces at one device index of one instance.
        let (x, y) = (eni(&a, &s1, &[]).await, eni(&a, &s1, &[]).await);
        let (p1, p2) = (attach(&x, &i1, index), attach(&y, &i1, index));
        let (r1, r2) = tokio::join!(
            a.call("AttachNetworkInterface", &p1),
            a2.call("AttachNetworkInterface", &p2),
        );
        let won = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {r1:?} {r2:?}");
        for r in [&r1, &r2] {
            if let Err(e) = r {
                assert_eq!(e.code.as_str(), "InvalidParameterValue", "{e}");
            }
        }
        let loser = if r1.is_ok() { &y } else { &x };
        let de = a
            .ok(
                "DescribeNetworkInterfaces",
                &[("NetworkInterfaceId.1", loser)],
            )
            .await;
        assert_eq!(text(&de, "status"), "available", "the loser wrote nothing");
        let winner = if r1.is_ok() { &x } else { &y };
        let att = format!("eni-attach-{}", &winner["eni-".len()..]);
        a.ok("DetachNetworkInterface", &[("AttachmentId", &att)])
            .await;
        // One interface to two instances.
        let z = eni(&a, &s1, &[]).await;
        let (p1, p2) = (attach(&z, &i1, "3"), attach(&z, &i2, "3"));
        let (r1, r2) = tokio::join!(
            a.call("AttachNetworkInterface", &p1),
            a2.call("AttachNetworkInterface", &p2),
        );
        let won: Vec<&str> = [(&r1, &i1), (&r2, &i2)]
            .iter()
            .filter(|(r, _)| r.is_ok())
            .map(|(_, i)| i.as_str())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {r1:?} {r2:?}");
        for r in [&r1, &r2] {
            if let Err(e) = r {
                assert_eq!(e.code.as_str(), "InvalidNetworkInterface.InUse", "{e}");
            }
        }
        let (c1, c2) = (
            secondaries_named(&d, &a, &i1, &z).await,
            secondaries_named(&d, &a, &i2, &z).await,
        );
        assert_eq!(c1 + c2, 1, "exactly one instance records it");
        assert_eq!(c1 == 1, won[0] == i1);
        // Free index 3 for the next round.
        let att = format!("eni-attach-{}", &z["eni-".len()..]);
        a.ok("DetachNetworkInterface", &[("AttachmentId", &att)])
            .await;
    }
}

/// How many of `inst`'s secondary interfaces are `eni`.
async fn secondaries_named(d: &Domain, a: &Ec2, inst: &str, eni: &str) -> usize {
    d.instance(&caller(a), inst)
        .await
        .unwrap()
        .value
        .vpc
        .unwrap()
        .secondary_interfaces
        .iter()
        .filter(|s| s.interface_id.as_str() == eni)
        .count()
}

/// RunInstances parameters: a primary interface in `subnet` and `eni` at
/// device index 1.
fn with_secondary(subnet: &str, eni: &str, delete: bool) -> Vec<(&'static str, String)> {
    vec![
        ("NetworkInterface.1.DeviceIndex", "0".into()),
        ("NetworkInterface.1.SubnetId", subnet.into()),
        ("NetworkInterface.2.DeviceIndex", "1".into()),
        ("NetworkInterface.2.NetworkInterfaceId", eni.into()),
        ("NetworkInterface.2.DeleteOnTermination", delete.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_instances_attaches_secondary_interfaces_at_launch() {
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
    let _h1 = SimAgent::start(&ep, enrol(), SimOptions::new("h1", ZONES[1], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&d, "a").await;
    let a2 = Ec2 {
        backend: DomainBackend::new(two.domain.clone()),
        account: a.account.clone(),
    };
    let b = Ec2::new(&d, "b").await;
    let (vpc, s1, _) = network(&a, ZONES[0]).await;
    let s2 = subnet(&a, &vpc, "10.0.2.0/24", ZONES[0]).await;
    let s_z1 = subnet(&a, &vpc, "10.0.3.0/24", ZONES[1]).await;
    let e2 = eni(&a, &s2, &[("PrivateIpAddress", "10.0.2.30")]).await;
    let e_z1 = eni(&a, &s_z1, &[]).await;
    let other_vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.9.0.0/16")]).await,
        "vpcId",
    );
    let s_other = subnet(&a, &other_vpc, "10.9.1.0/24", ZONES[0]).await;
    let e_other = eni(&a, &s_other, &[]).await;
    b.ok("DescribeVpcs", &[]).await;

    // Refusals: nothing written.
    let before = snapshot(&d).await;
    let mut dup = with_secondary(&s1, &e2, false);
    dup.extend([
        ("NetworkInterface.3.DeviceIndex", "1".to_string()),
        ("NetworkInterface.3.NetworkInterfaceId", e_z1.clone()),
    ]);
    let mut two_count = with_secondary(&s1, &e2, false);
    two_count.push(("MaxCount", "2".into()));
    let mut far = with_secondary(&s1, &e2, false);
    far[2].1 = "4".into();
    let mut zone1 = with_secondary(&s1, &e2, false);
    zone1.push(("Placement.AvailabilityZone", ZONES[1].into()));
    let mut mixed = with_secondary(&s1, &e2, false);
    mixed.push(("NetworkInterface.2.PrivateIpAddress", "10.0.2.31".into()));
    for (params, code) in [
        (dup, "InvalidParameterValue"),
        (far, "AttachmentLimitExceeded"),
        (
            with_secondary(&s1, &e_z1, false),
            "InvalidParameterCombination",
        ),
        // (the primary's subnet is in the other zone)
        (zone1, "InvalidParameterValue"),
        (mixed, "InvalidParameterCombination"),
        (
            with_secondary(&s1, &e_other, false),
            "InvalidParameterValue",
        ),
        (
            with_secondary(&s1, "eni-0123456789abcdef0", false),
            "InvalidNetworkInterfaceID.NotFound",
        ),
    ] {
        let mut p = run(&image, &params);
        // MaxCount given twice: the last wins.
        if let Some(i) = params.iter().position(|(k, _)| *k == "MaxCount") {
            p.retain(|(k, _)| *k != "MaxCount");
            p.push(params[i].clone());
        }
        assert_eq!(launch(&a, &p).await, Err(code.to_string()), "{params:?}");
    }
    assert_eq!(snapshot(&d).await, before, "a refused launch wrote");
    // Another tenant cannot launch with A's interface.
    let (_, b_subnet, _) = network(&b, ZONES[0]).await;
    let before_b = snapshot(&d).await;
    assert_eq!(
        launch(&b, &run(&image, &with_secondary(&b_subnet, &e2, false))).await,
        Err("InvalidNetworkInterfaceID.NotFound".into())
    );
    assert_eq!(snapshot(&d).await, before_b, "a refused launch wrote");
    assert_ne!(before, before_b);

    // Two replicas launch with one secondary interface: one wins.
    let p = run(&image, &with_secondary(&s1, &e2, true));
    let (r1, r2) = tokio::join!(launch(&a, &p), launch(&a2, &p));
    let won: Vec<&String> = [&r1, &r2].iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{r1:?} {r2:?}");
    for r in [&r1, &r2] {
        if let Err(code) = r {
            assert_eq!(code, "InvalidNetworkInterface.InUse");
        }
    }
    let i1 = won[0].clone();
    let insts = texts(&a.ok("DescribeInstances", &[]).await, "instanceId");
    assert_eq!(
        insts,
        std::slice::from_ref(&i1),
        "the loser launched nothing"
    );
    let di = interfaces_of(&a.ok("DescribeInstances", &[("InstanceId.1", &i1)]).await);
    assert_eq!(texts(&di, "deviceIndex"), ["0", "1"], "{di}");
    assert_eq!(texts(&di, "networkInterfaceId")[1], e2);
    let de = a
        .ok(
            "DescribeNetworkInterfaces",
            &[("NetworkInterfaceId.1", &e2)],
        )
        .await;
    assert_eq!(text(&de, "instanceId"), i1);
    assert_eq!(text(&de, "deviceIndex"), "1");
    assert_eq!(text(&de, "deleteOnTermination"), "true");
    let inst = wait_domain_state(&d, &caller(&a), &i1, State::Running).await;
    assert_eq!(inst.availability_zone, ZONES[0]);
    let spec = assigned_spec(&d, &inst).await;
    assert_eq!(spec.extra_networks.len(), 1);
    assert_eq!(spec.extra_networks[0].ip, "10.0.2.30");

    // Terminate deletes it (DeleteOnTermination) with its address.
    a.ok("TerminateInstances", &[("InstanceId.1", &i1)]).await;
    wait_domain_state(&d, &caller(&a), &i1, State::Terminated).await;
    a.fails(
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1", &e2)],
        "InvalidNetworkInterfaceID.NotFound",
    )
    .await;
    assert!(claims(&d, &s2).await.is_empty());
}
