//! Auto-assigned public addresses after launch against a real etcd, as EC2
//! moves them: released at stop and a new one at start (an Elastic IP
//! stays through both), released when an Elastic IP is associated, a new
//! one after DisassociateAddress or when AssociateAddress moves the Elastic
//! IP away (only for a pending/running instance whose subnet maps public
//! addresses); the node's NetworkView follows each change; refusals write
//! nothing; two replicas stopping and starting instances over a small pool
//! never hand one address to two instances.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::Caller;
use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::ids::AccountId;
use nubis_control_plane::server::Replica;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::node::v1 as npb;
use support::*;
use vpc_common::{text, Ec2};

const WAIT: Duration = Duration::from_secs(10);

fn caller(e: &Ec2) -> Caller {
    Caller::Tenant(AccountId::parse(&e.account).unwrap())
}

/// Every public address claim: address -> (allocation id, instance id).
async fn claims(cp: &Replica) -> BTreeMap<String, (String, String)> {
    let d = &cp.domain;
    d.store()
        .public_net()
        .claims()
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.value.ip,
                (
                    c.value
                        .allocation_id
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    c.value
                        .instance_id
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// Every instance public address record of `e`'s account: instance -> ip.
async fn records(cp: &Replica, e: &Ec2) -> BTreeMap<String, String> {
    cp.domain
        .store()
        .public_net()
        .instance_ips_of(&AccountId::parse(&e.account).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.value.instance_id.to_string(), p.value.public_ip))
        .collect()
}

async fn launch(e: &Ec2, image: &str, extra: &[(&str, &str)]) -> String {
    let mut p = vec![
        ("ImageId", image),
        ("InstanceType", "t3.nano"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("Placement.AvailabilityZone", ZONES[0]),
    ];
    p.extend_from_slice(extra);
    text(&e.ok("RunInstances", &p).await, "instanceId")
}

/// The public address DescribeInstances shows for `id` ("" for none).
async fn shown_ip(e: &Ec2, id: &str) -> String {
    text(
        &e.ok("DescribeInstances", &[("InstanceId.1", id)]).await,
        "ipAddress",
    )
}

/// Waits until DescribeInstances shows a public address for `id`.
async fn wait_ip(e: &Ec2, id: &str) -> String {
    eventually(WAIT, "a public address", || async {
        let ip = shown_ip(e, id).await;
        (!ip.is_empty()).then_some(ip)
    })
    .await
}

async fn stop(e: &Ec2, d: &nubis_control_plane::domain::Domain, id: &str) {
    e.ok("StopInstances", &[("InstanceId.1", id)]).await;
    wait_domain_state(d, &caller(e), id, State::Stopped).await;
}

async fn start_again(e: &Ec2, d: &nubis_control_plane::domain::Domain, id: &str) {
    e.ok("StartInstances", &[("InstanceId.1", id)]).await;
    wait_domain_state(d, &caller(e), id, State::Running).await;
}

/// The public address of `id` in the node's latest view that satisfies
/// `want` (waits for it).
async fn view_ip(n: &SimAgent, id: &str, want: impl Fn(&str) -> bool) -> String {
    let ip_in = |v: &npb::NetworkView| {
        v.vpcs
            .iter()
            .flat_map(|x| &x.endpoints)
            .find(|e| e.instance_id == id)
            .map(|e| e.public_ip.clone())
    };
    let since = Instant::now() - Duration::from_secs(30);
    let (_, v) = n
        .wait_view(since, WAIT, |v| ip_in(v).is_some_and(|ip| want(&ip)))
        .await
        .unwrap_or_else(|| panic!("no view with the wanted address of {id}"));
    ip_in(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_addresses_follow_stop_start_and_elastic_ips() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/24".into());
    let cp = start(cfg).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let node = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h", ZONES[0], 16, 8192).with_underlay("192.0.2.1"),
    )
    .await
    .unwrap();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;

    // Launched into a default subnet (maps public addresses).
    let i1 = launch(&a, &image, &[]).await;
    let auto1 = wait_ip(&a, &i1).await;
    wait_domain_state(&d, &caller(&a), &i1, State::Running).await;
    assert_eq!(view_ip(&node, &i1, |ip| ip == auto1).await, auto1);
    let held = claims(&cp).await;
    assert_eq!(held.get(&auto1), Some(&(String::new(), i1.clone())));

    // Stop: the address goes back to the pool, the view loses it.
    stop(&a, &d, &i1).await;
    assert_eq!(shown_ip(&a, &i1).await, "", "a stopped instance has none");
    assert!(!claims(&cp).await.contains_key(&auto1), "released");
    assert!(records(&cp, &a).await.is_empty());
    view_ip(&node, &i1, str::is_empty).await;
    // Stopping again changes nothing; B cannot start it.
    a.ok("StopInstances", &[("InstanceId.1", &i1)]).await;
    b.fails(
        "StartInstances",
        &[("InstanceId.1", &i1)],
        "InvalidInstanceID.NotFound",
    )
    .await;
    assert!(claims(&cp).await.is_empty());

    // Start: a new address from the pool, in the view too.
    start_again(&a, &d, &i1).await;
    let auto2 = shown_ip(&a, &i1).await;
    assert!(auto2.starts_with("198.51.100."), "{auto2}");
    assert_eq!(
        claims(&cp).await,
        BTreeMap::from([(auto2.clone(), (String::new(), i1.clone()))])
    );
    assert_eq!(view_ip(&node, &i1, |ip| ip == auto2).await, auto2);

    // An Elastic IP replaces the auto-assigned address (released) ...
    let e = a.ok("AllocateAddress", &[]).await;
    let (alloc, eip) = (text(&e, "allocationId"), text(&e, "publicIp"));
    let assoc = text(
        &a.ok(
            "AssociateAddress",
            &[("AllocationId", &alloc), ("InstanceId", &i1)],
        )
        .await,
        "associationId",
    );
    assert_eq!(shown_ip(&a, &i1).await, eip);
    assert_eq!(
        claims(&cp).await,
        BTreeMap::from([(eip.clone(), (alloc.clone(), String::new()))]),
        "the auto address went back"
    );
    assert_eq!(view_ip(&node, &i1, |ip| ip == eip).await, eip);
    // ... and stays through stop and start.
    stop(&a, &d, &i1).await;
    assert_eq!(shown_ip(&a, &i1).await, eip);
    let desc = a
        .ok("DescribeAddresses", &[("AllocationId.1", &alloc)])
        .await;
    assert_eq!(text(&desc, "associationId"), assoc, "{desc}");
    start_again(&a, &d, &i1).await;
    assert_eq!(shown_ip(&a, &i1).await, eip);
    assert_eq!(
        claims(&cp).await.len(),
        1,
        "no auto address next to the EIP"
    );

    // Refusals write nothing.
    let before = (claims(&cp).await, records(&cp, &a).await);
    b.fails(
        "DisassociateAddress",
        &[("AssociationId", &assoc)],
        "InvalidAssociationID.NotFound",
    )
    .await;
    a.fails(
        "DisassociateAddress",
        &[("AssociationId", "eipassoc-0123456789abcdef0")],
        "InvalidAssociationID.NotFound",
    )
    .await;
    a.fails(
        "DisassociateAddress",
        &[("PublicIp", "203.0.113.9")],
        "InvalidAddress.NotFound",
    )
    .await;
    assert_eq!((claims(&cp).await, records(&cp, &a).await), before);

    // Disassociated from a running instance: a new auto-assigned address.
    a.ok("DisassociateAddress", &[("AssociationId", &assoc)])
        .await;
    let auto3 = shown_ip(&a, &i1).await;
    assert!(auto3.starts_with("198.51.100.") && auto3 != eip, "{auto3}");
    assert_eq!(
        claims(&cp).await.get(&auto3),
        Some(&(String::new(), i1.clone()))
    );
    assert_eq!(view_ip(&node, &i1, |ip| ip == auto3).await, auto3);
    a.fails(
        "DisassociateAddress",
        &[("AssociationId", &assoc)],
        "InvalidAssociationID.NotFound",
    )
    .await;

    // Disassociated from a stopped instance: none until it starts.
    a.ok(
        "AssociateAddress",
        &[("AllocationId", &alloc), ("InstanceId", &i1)],
    )
    .await;
    stop(&a, &d, &i1).await;
    a.ok("DisassociateAddress", &[("PublicIp", &eip)]).await;
    assert_eq!(shown_ip(&a, &i1).await, "");
    assert_eq!(claims(&cp).await.len(), 1, "only the EIP");
    start_again(&a, &d, &i1).await;
    let auto4 = shown_ip(&a, &i1).await;
    assert!(auto4.starts_with("198.51.100."), "{auto4}");

    // Moving the EIP away (AllowReassociation) gives the instance it left
    // a new auto-assigned address.
    let i2 = launch(&a, &image, &[]).await;
    wait_ip(&a, &i2).await;
    a.ok(
        "AssociateAddress",
        &[("AllocationId", &alloc), ("InstanceId", &i1)],
    )
    .await;
    a.ok(
        "AssociateAddress",
        &[
            ("AllocationId", &alloc),
            ("InstanceId", &i2),
            ("AllowReassociation", "true"),
        ],
    )
    .await;
    assert_eq!(shown_ip(&a, &i2).await, eip);
    let auto5 = shown_ip(&a, &i1).await;
    assert!(auto5.starts_with("198.51.100.") && auto5 != eip, "{auto5}");
    let held = claims(&cp).await;
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held.get(&auto5), Some(&(String::new(), i1.clone())));

    // A subnet that does not map public addresses: the EIP leaves nothing.
    a.ok(
        "ModifySubnetAttribute",
        &[
            (
                "SubnetId",
                &text(
                    &a.ok("DescribeInstances", &[("InstanceId.1", &i2)]).await,
                    "subnetId",
                ),
            ),
            ("MapPublicIpOnLaunch.Value", "false"),
        ],
    )
    .await;
    a.ok("DisassociateAddress", &[("PublicIp", &eip)]).await;
    assert_eq!(shown_ip(&a, &i2).await, "");
    // ... and stop/start of i1 (same subnet) leaves it without one too.
    stop(&a, &d, &i1).await;
    start_again(&a, &d, &i1).await;
    assert_eq!(shown_ip(&a, &i1).await, "");
    assert_eq!(
        claims(&cp).await,
        BTreeMap::from([(eip.clone(), (alloc.clone(), String::new()))])
    );
    view_ip(&node, &i1, str::is_empty).await;

    // Terminate: nothing left behind.
    a.ok(
        "TerminateInstances",
        &[("InstanceId.1", &i1), ("InstanceId.2", &i2)],
    )
    .await;
    wait_domain_state(&d, &caller(&a), &i1, State::Terminated).await;
    wait_domain_state(&d, &caller(&a), &i2, State::Terminated).await;
    assert!(records(&cp, &a).await.is_empty());
    a.ok("ReleaseAddress", &[("AllocationId", &alloc)]).await;
    assert!(claims(&cp).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stopping_and_starting_never_share_an_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    // Six addresses for five instances: picks collide often.
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/29".into());
    let cp1 = start(cfg.clone()).await;
    let cp2 = start(cfg).await;
    let ep = endpoint(&cp1);
    let image = hello_image(&ep).await;
    let _node = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let a1 = Ec2::new(&cp1.domain, "a").await;
    let a2 = Ec2 {
        backend: DomainBackend::new(cp2.domain.clone()),
        account: a1.account.clone(),
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(launch(&a1, &image, &[]).await);
    }
    for id in &ids {
        wait_ip(&a1, id).await;
        wait_domain_state(&cp1.domain, &caller(&a1), id, State::Running).await;
    }
    for round in 0..3 {
        // Every instance stopped and started, alternately through each
        // replica, all at once.
        let flips = ids.iter().enumerate().map(|(n, id)| {
            let (e, d) = if (n + round) % 2 == 0 {
                (&a1, &cp1.domain)
            } else {
                (&a2, &cp2.domain)
            };
            async move {
                stop(e, d, id).await;
                start_again(e, d, id).await;
            }
        });
        futures::future::join_all(flips).await;
        let recs = records(&cp1, &a1).await;
        let held = claims(&cp1).await;
        assert_eq!(recs.len(), ids.len(), "round {round}: {recs:?}");
        let distinct: BTreeSet<&String> = recs.values().collect();
        assert_eq!(distinct.len(), ids.len(), "round {round}: shared: {recs:?}");
        for (inst, ip) in &recs {
            assert_eq!(
                held.get(ip),
                Some(&(String::new(), inst.clone())),
                "round {round}"
            );
        }
        assert_eq!(held.len(), ids.len(), "round {round}: leaked: {held:?}");
    }
}
