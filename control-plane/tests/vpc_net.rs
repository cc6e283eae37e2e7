//! The control plane's side of the VPC data plane against a real etcd,
//! with simulated agents over gRPC: instance addresses claimed in their
//! VPC subnet (PrivateIpAddress, exhaustion, release, racing replicas),
//! VNIs, the NetworkSpec of assignments, node underlay addresses, and the
//! `WatchNetwork` views nodes receive.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::vpc::Vpc;
use nubis_control_plane::domain::Caller;
use nubis_control_plane::ids::{AccountId, NodeId, SubnetId, VpcId};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::node::v1 as npb;
use support::*;
use vpc_common::{text, texts, Ec2};

fn caller(e: &Ec2) -> Caller {
    Caller::Tenant(AccountId::parse(&e.account).unwrap())
}

fn run(image: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&str, String)> = vec![
        ("ImageId", image.to_string()),
        ("InstanceType", "t3.nano".into()),
        ("MinCount", "1".into()),
        ("MaxCount", "1".into()),
    ];
    for (k, v) in extra {
        if let Some(x) = p.iter_mut().find(|(pk, _)| pk == k) {
            x.1 = v.clone();
        } else {
            p.push((k, v.clone()));
        }
    }
    p
}

async fn launch(e: &Ec2, p: &[(&'static str, String)]) -> Result<String, String> {
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    e.call("RunInstances", &p)
        .await
        .map_err(|x| x.code.as_str().to_string())
}

async fn subnet_in(e: &Ec2, vpc: &str, cidr: &str, zone: &str) -> String {
    text(
        &e.ok(
            "CreateSubnet",
            &[
                ("VpcId", vpc),
                ("CidrBlock", cidr),
                ("AvailabilityZone", zone),
            ],
        )
        .await,
        "subnetId",
    )
}

async fn available(e: &Ec2, subnet: &str) -> String {
    text(
        &e.ok("DescribeSubnets", &[("SubnetId.1", subnet)]).await,
        "availableIpAddressCount",
    )
}

async fn instance_ids(e: &Ec2) -> BTreeSet<String> {
    texts(&e.ok("DescribeInstances", &[]).await, "instanceId")
        .into_iter()
        .collect()
}

async fn claims(d: &nubis_control_plane::domain::Domain, subnet: &str) -> Vec<String> {
    d.address_claims(&SubnetId::parse(subnet).unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_come_from_the_subnet_and_private_ip_address_is_checked() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 64, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&cp.domain, "a").await;
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    // A /28: 16 addresses, 5 reserved, 11 for instances.
    let subnet = subnet_in(&a, &vpc, "10.0.0.0/28", ZONES[0]).await;
    assert_eq!(available(&a, &subnet).await, "11");

    let r = launch(&a, &run(&image, &[("SubnetId", subnet.clone())]))
        .await
        .unwrap();
    let first = text(&r, "instanceId");
    assert_eq!(text(&r, "privateIpAddress"), "10.0.0.4", "{r}");
    assert_eq!(available(&a, &subnet).await, "10");
    let chosen = run(
        &image,
        &[
            ("SubnetId", subnet.clone()),
            ("PrivateIpAddress", "10.0.0.9".into()),
        ],
    );
    let r = launch(&a, &chosen).await.unwrap();
    let nine = text(&r, "instanceId");
    assert_eq!(text(&r, "privateIpAddress"), "10.0.0.9", "{r}");
    assert_eq!(available(&a, &subnet).await, "9");

    let at = |ip: &str| {
        run(
            &image,
            &[
                ("SubnetId", subnet.clone()),
                ("PrivateIpAddress", ip.to_string()),
            ],
        )
    };
    // Each refusal has its EC2 code and writes nothing.
    let before = (instance_ids(&a).await, claims(&cp.domain, &subnet).await);
    let refused: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (chosen.clone(), "InvalidIPAddress.InUse"),
        (at("10.0.1.5"), "InvalidParameterValue"),
        (at("10.0.0.1"), "InvalidParameterValue"),
        (at("10.0.0.15"), "InvalidParameterValue"),
        (at("10.0.0.x"), "InvalidParameterValue"),
        (
            run(
                &image,
                &[
                    ("SubnetId", subnet.clone()),
                    ("PrivateIpAddress", "10.0.0.10".into()),
                    ("MaxCount", "2".into()),
                ],
            ),
            "InvalidParameterCombination",
        ),
        // Without a subnet, the address must be in a default subnet.
        (
            run(&image, &[("PrivateIpAddress", "10.0.0.10".into())]),
            "InvalidParameterValue",
        ),
        // More than the subnet has left.
        (
            run(
                &image,
                &[
                    ("SubnetId", subnet.clone()),
                    ("MinCount", "10".into()),
                    ("MaxCount", "10".into()),
                ],
            ),
            "InsufficientFreeAddressesInSubnet",
        ),
    ];
    for (p, code) in refused {
        assert_eq!(launch(&a, &p).await.unwrap_err(), code, "{p:?}");
    }
    assert_eq!(
        (instance_ids(&a).await, claims(&cp.domain, &subnet).await),
        before,
        "refused launches wrote nothing"
    );
    assert_eq!(available(&a, &subnet).await, "9");

    // MinCount 1, MaxCount 20: as many as there are addresses (9).
    let r = launch(
        &a,
        &run(
            &image,
            &[("SubnetId", subnet.clone()), ("MaxCount", "20".into())],
        ),
    )
    .await
    .unwrap();
    let mut ips = texts(&r, "privateIpAddress");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 9, "{r}");
    assert_eq!(available(&a, &subnet).await, "0");
    let mut all = claims(&cp.domain, &subnet).await;
    all.sort_by_key(|ip| ip.parse::<std::net::Ipv4Addr>().unwrap());
    let want: Vec<String> = (4..=14).map(|h| format!("10.0.0.{h}")).collect();
    assert_eq!(all, want, "every usable address, no reserved one");
    assert_eq!(
        launch(&a, &run(&image, &[("SubnetId", subnet.clone())]))
            .await
            .unwrap_err(),
        "InsufficientFreeAddressesInSubnet"
    );

    // The gRPC Compute API shows the subnet address too.
    let grpc_ip = {
        let d = cp.domain.instance(&caller(&a), &first).await.unwrap().value;
        d.network.unwrap().ip
    };
    assert_eq!(grpc_ip, "10.0.0.4");

    // The assignment's NetworkSpec: the VPC, its VNI, the subnet.
    let inst = cp.domain.instance(&caller(&a), &first).await.unwrap().value;
    let node = inst.node_id.clone().unwrap();
    let asg = cp
        .domain
        .store()
        .assignments()
        .get(&node, &inst.id)
        .await
        .unwrap()
        .unwrap()
        .value;
    let spec = nubis_control_plane::api::node::assignment_out(&asg)
        .spec
        .unwrap()
        .network
        .unwrap();
    let vni = vpc_record(&cp.domain, &a, &vpc).await.vni;
    assert!(vni > 0);
    assert_eq!(
        (
            spec.ip.as_str(),
            spec.prefix_len,
            spec.gateway.as_str(),
            spec.vni,
            spec.vpc_id.as_str(),
            spec.subnet_id.as_str(),
            spec.subnet_cidr.as_str(),
        ),
        (
            "10.0.0.4",
            28,
            "10.0.0.1",
            vni,
            vpc.as_str(),
            subnet.as_str(),
            "10.0.0.0/28"
        )
    );
    assert_eq!(spec.mac, "02:4e:0a:00:00:04");
    let dflt = text(
        &a.ok(
            "DescribeSecurityGroups",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await,
        "groupId",
    );
    assert_eq!(spec.security_group_ids, vec![dflt]);

    // Terminated: its address is released once and can be chosen again.
    a.ok("TerminateInstances", &[("InstanceId.1", &nine)]).await;
    wait_domain_state(&cp.domain, &caller(&a), &nine, State::Terminated).await;
    assert_eq!(available(&a, &subnet).await, "1");
    // Terminating again releases nothing more.
    a.ok("TerminateInstances", &[("InstanceId.1", &nine)]).await;
    assert_eq!(available(&a, &subnet).await, "1");
    let r = launch(&a, &chosen).await.unwrap();
    assert_eq!(text(&r, "privateIpAddress"), "10.0.0.9");
    assert_eq!(available(&a, &subnet).await, "0");
}

async fn vpc_record(d: &nubis_control_plane::domain::Domain, e: &Ec2, vpc: &str) -> Vpc {
    d.store()
        .vpcs()
        .vpc(
            &AccountId::parse(&e.account).unwrap(),
            &VpcId::parse(vpc).unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_launches_on_two_replicas_never_share_an_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp1 = start(config(&etcd)).await;
    let cp2 = start(config(&etcd)).await;
    let ep = endpoint(&cp1);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 64, 8192))
        .await
        .unwrap();
    let a1 = Ec2::new(&cp1.domain, "a").await;
    let a2 = Ec2 {
        backend: nubis_control_plane::ec2::DomainBackend::new(cp2.domain.clone()),
        account: a1.account.clone(),
    };
    let vpc = text(
        &a1.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let subnet = subnet_in(&a1, &vpc, "10.0.0.0/24", ZONES[0]).await;
    let p = run(
        &image,
        &[
            ("SubnetId", subnet.clone()),
            ("MinCount", "2".into()),
            ("MaxCount", "2".into()),
        ],
    );
    // The node cache of replica 2 learns the node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let e = if i % 2 == 0 { &a1 } else { &a2 };
        calls.push(launch(e, &p));
    }
    let results = futures::future::join_all(calls).await;
    let mut ips = Vec::new();
    for r in results {
        for id in texts(&r.unwrap(), "instanceId") {
            let i = cp1.domain.instance(&caller(&a1), &id).await.unwrap().value;
            ips.push(i.network.unwrap().ip);
        }
    }
    assert_eq!(ips.len(), 32);
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 32, "an address was handed out twice: {ips:?}");
    assert_eq!(claims(&cp1.domain, &subnet).await.len(), 32);
    assert_eq!(available(&a1, &subnet).await, "219");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnis_are_allocated_once_per_vpc_and_released_with_it() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 4096))
        .await
        .unwrap();
    let d = &cp.domain;
    let a = Ec2::new(d, "a").await;
    let b = Ec2::new(d, "b").await;
    let va = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let vb = text(
        &b.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let mut vnis = BTreeSet::new();
    for (e, v) in [(&a, &va), (&b, &vb)] {
        let rec = vpc_record(d, e, v).await;
        assert!((1..(1 << 24)).contains(&rec.vni));
        let guard = d.store().keys().vpc_vni(rec.vni);
        assert!(d.store().get_raw(&guard).await.unwrap().is_some());
        vnis.insert(rec.vni);
    }
    // The default VPCs have theirs too.
    for e in [&a, &b] {
        let dv = text(
            &e.ok(
                "DescribeVpcs",
                &[
                    ("Filter.1.Name", "is-default"),
                    ("Filter.1.Value.1", "true"),
                ],
            )
            .await,
            "vpcId",
        );
        vnis.insert(vpc_record(d, e, &dv).await.vni);
    }
    assert_eq!(vnis.len(), 4, "VNIs are unique: {vnis:?}");

    // A VPC stored before VNIs (schema 1, no vni): one is allocated, once,
    // the first time an instance needs it.
    let account = AccountId::parse(&a.account).unwrap();
    let old = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.1.0.0/16")]).await,
        "vpcId",
    );
    let key = d.store().keys().vpc(&account, &VpcId::parse(&old).unwrap());
    let rec = vpc_record(d, &a, &old).await;
    let mut json: serde_json::Value =
        serde_json::from_slice(&d.store().get_raw(&key).await.unwrap().unwrap().0).unwrap();
    json.as_object_mut().unwrap().remove("vni");
    json["schema"] = 1.into();
    let mut tx = nubis_control_plane::store::Tx::new();
    tx.put_raw(&key, serde_json::to_vec(&json).unwrap());
    tx.delete(&d.store().keys().vpc_vni(rec.vni));
    d.store().commit(tx).await.unwrap().unwrap();
    assert_eq!(vpc_record(d, &a, &old).await.vni, 0);
    let subnet = subnet_in(&a, &old, "10.1.0.0/24", ZONES[0]).await;
    let old_id = VpcId::parse(&old).unwrap();
    let (x, y) = tokio::join!(d.vpc_vni(&account, &old_id), d.vpc_vni(&account, &old_id));
    let vni = x.unwrap();
    assert_eq!(vni, y.unwrap(), "racing allocations agree");
    assert_ne!(vni, 0);
    let r = launch(&a, &run(&image, &[("SubnetId", subnet.clone())]))
        .await
        .unwrap();
    let id = text(&r, "instanceId");
    let inst = d.instance(&caller(&a), &id).await.unwrap().value;
    assert_eq!(inst.network.unwrap().vpc.unwrap().vni, vni);
    assert_eq!(vpc_record(d, &a, &old).await.vni, vni);

    // DeleteVpc releases the VNI's guard.
    a.ok("TerminateInstances", &[("InstanceId.1", &id)]).await;
    wait_domain_state(d, &caller(&a), &id, State::Terminated).await;
    a.ok("DeleteSubnet", &[("SubnetId", &subnet)]).await;
    a.ok("DeleteVpc", &[("VpcId", &old)]).await;
    let guard = d.store().keys().vpc_vni(vni);
    assert!(d.store().get_raw(&guard).await.unwrap().is_none());
}

async fn node_client(
    ep: &str,
    creds: nubis_proto::auth::Credentials,
) -> npb::node_client::NodeClient<nubis_proto::auth::SignedChannel> {
    let ch = nubis_proto::transport::connect(ep).await.unwrap();
    npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, creds))
}

fn register_req(host: &str, underlay: &str) -> npb::RegisterRequest {
    npb::RegisterRequest {
        host_id: host.into(),
        availability_zone: ZONES[0].into(),
        capacity: Some(npb::Resources {
            vcpus: 4,
            memory_mib: 1024,
        }),
        agent_version: "t".into(),
        underlay_ip: underlay.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underlay_addresses_are_validated_and_updated_on_reregistration() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let (signer, secret) = nubis_proto::auth::enrolment_signing(ENROL_ID, ENROL_SECRET);
    let mut c = node_client(&ep, signer.clone()).await;
    for bad in [
        "127.0.0.1",
        "224.0.0.5",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "10.0.0",
        "x",
    ] {
        let mut r = register_req("bad-host", bad);
        r.enrolment_secret = secret.clone();
        let e = c.register(r).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
    }
    let prefix = cp.domain.store().keys().nodes();
    let nodes = cp.domain.store().count(&prefix).await.unwrap();
    assert_eq!(nodes, 0, "refused registrations wrote nothing");
    let mut r = register_req("h1", "192.0.2.10");
    r.enrolment_secret = secret.clone();
    let reg = c.register(r).await.unwrap().into_inner();
    let id = NodeId::parse(&reg.node_id).unwrap();
    let rec = cp.domain.store().nodes().get(&id).await.unwrap().unwrap();
    assert_eq!(rec.value.underlay_ip, "192.0.2.10");
    // Re-registration (the node's own credential) updates it.
    let cred = reg.credential.unwrap();
    let mut own = node_client(
        &ep,
        nubis_proto::auth::Credentials::new(cred.access_key_id, cred.secret),
    )
    .await;
    own.register(register_req("h1", "192.0.2.11"))
        .await
        .unwrap();
    let rec = cp.domain.store().nodes().get(&id).await.unwrap().unwrap();
    assert_eq!(rec.value.underlay_ip, "192.0.2.11");
    own.register(register_req("h1", "")).await.unwrap();
    let rec = cp.domain.store().nodes().get(&id).await.unwrap().unwrap();
    assert_eq!(rec.value.underlay_ip, "", "empty: no VPC overlay");
}

fn vpc_of<'a>(v: &'a npb::NetworkView, vpc: &str) -> Option<&'a npb::VpcView> {
    v.vpcs.iter().find(|x| x.vpc_id == vpc)
}

fn endpoint_ids(v: &npb::VpcView) -> Vec<&str> {
    v.endpoints.iter().map(|e| e.instance_id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_views_follow_instances_groups_and_rules() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let n1 = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h1", ZONES[0], 16, 4096).with_underlay("192.0.2.1"),
    )
    .await
    .unwrap();
    let n2 = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h2", ZONES[1], 16, 4096).with_underlay("192.0.2.2"),
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(10);
    let t0 = Instant::now() - Duration::from_secs(1);
    // No instance yet: an empty view.
    let v = n1.wait_view(t0, wait, |_| true).await.unwrap().1;
    assert!(v.vpcs.is_empty(), "{v:?}");

    let a = Ec2::new(&cp.domain, "a").await;
    let b = Ec2::new(&cp.domain, "b").await;
    let va = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let vb = text(
        &b.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let sa0 = subnet_in(&a, &va, "10.0.0.0/24", ZONES[0]).await;
    let sa1 = subnet_in(&a, &va, "10.0.1.0/24", ZONES[1]).await;
    let sb0 = subnet_in(&b, &vb, "10.0.0.0/24", ZONES[0]).await;
    let a1 = text(
        &launch(&a, &run(&image, &[("SubnetId", sa0.clone())]))
            .await
            .unwrap(),
        "instanceId",
    );
    let a2 = text(
        &launch(&a, &run(&image, &[("SubnetId", sa1.clone())]))
            .await
            .unwrap(),
        "instanceId",
    );
    let b1 = text(
        &launch(&b, &run(&image, &[("SubnetId", sb0.clone())]))
            .await
            .unwrap(),
        "instanceId",
    );

    // Node 1 hosts A1 and B1: both VPCs, with different VNIs, the same
    // CIDR and the same first address.
    let (_, v1) = n1
        .wait_view(t0, wait, |v| {
            vpc_of(v, &va).is_some_and(|x| x.endpoints.len() == 2)
                && vpc_of(v, &vb).is_some_and(|x| x.endpoints.len() == 1)
        })
        .await
        .expect("node 1's view with both VPCs");
    let (xa, xb) = (vpc_of(&v1, &va).unwrap(), vpc_of(&v1, &vb).unwrap());
    assert_eq!(v1.vpcs.len(), 2);
    assert_ne!(xa.vni, xb.vni);
    assert!(xa.vni > 0 && xb.vni > 0);
    assert_eq!(
        (xa.cidr.as_str(), xb.cidr.as_str()),
        ("10.0.0.0/16", "10.0.0.0/16")
    );
    assert_eq!(endpoint_ids(xb), [b1.as_str()]);
    assert_eq!(xb.endpoints[0].ip, "10.0.0.4");
    // A's endpoints on both nodes, each with its node's underlay.
    let e1 = xa.endpoints.iter().find(|e| e.instance_id == a1).unwrap();
    let e2 = xa.endpoints.iter().find(|e| e.instance_id == a2).unwrap();
    assert_eq!(
        (
            e1.ip.as_str(),
            e1.node_underlay_ip.as_str(),
            e1.node_id.as_str()
        ),
        ("10.0.0.4", "192.0.2.1", n1.node_id.as_str())
    );
    assert_eq!(
        (
            e2.ip.as_str(),
            e2.node_underlay_ip.as_str(),
            e2.node_id.as_str()
        ),
        ("10.0.1.4", "192.0.2.2", n2.node_id.as_str())
    );
    assert_eq!(
        (e1.subnet_id.as_str(), e2.subnet_id.as_str()),
        (sa0.as_str(), sa1.as_str())
    );
    assert_eq!(e1.mac, "02:4e:0a:00:00:04");
    assert!(e1.public_ip.is_empty());
    let mut subnets: Vec<(&str, &str, &str)> = xa
        .subnets
        .iter()
        .map(|s| (s.subnet_id.as_str(), s.cidr.as_str(), s.gateway.as_str()))
        .collect();
    subnets.sort();
    let mut want = vec![
        (sa0.as_str(), "10.0.0.0/24", "10.0.0.1"),
        (sa1.as_str(), "10.0.1.0/24", "10.0.1.1"),
    ];
    want.sort();
    assert_eq!(subnets, want);
    // The default group: all from its own members.
    let dflt = e1.security_group_ids[0].clone();
    assert_eq!(e2.security_group_ids, vec![dflt.clone()]);
    assert_eq!(xa.security_groups.len(), 1);
    let g = &xa.security_groups[0];
    assert_eq!(g.group_id, dflt);
    assert_eq!(g.ingress.len(), 1);
    assert_eq!(
        (
            g.ingress[0].protocol.as_str(),
            g.ingress[0].from_port,
            g.ingress[0].to_port,
            g.ingress[0].peer_group_id.as_str()
        ),
        ("-1", -1, -1, dflt.as_str())
    );
    assert_eq!(g.egress[0].cidr, "0.0.0.0/0");

    // Node 2 hosts only A2: A's view, not B's.
    let (_, v2) = n2
        .wait_view(t0, wait, |v| {
            vpc_of(v, &va).is_some_and(|x| x.endpoints.len() == 2)
        })
        .await
        .expect("node 2's view");
    assert_eq!(v2.vpcs.len(), 1, "{v2:?}");
    assert!(vpc_of(&v2, &vb).is_none());
    assert_eq!(vpc_of(&v2, &va).unwrap().vni, xa.vni);

    // Views only grow in revision, and an unchanged view is not sent again.
    let revs: Vec<i64> = n1
        .views
        .lock()
        .unwrap()
        .iter()
        .map(|(_, v)| v.revision)
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let sent = n1.views.lock().unwrap().len();
    a.ok(
        "CreateTags",
        &[
            ("ResourceId.1", &a1),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        n1.views.lock().unwrap().len(),
        sent,
        "identical view re-sent"
    );

    // A rule added to A's default group reaches node 1 (and node 2) within
    // a second: measured for a few rules.
    let mut took = Vec::new();
    for i in 0..5 {
        let port = (8000 + i).to_string();
        let since = Instant::now();
        a.ok(
            "AuthorizeSecurityGroupIngress",
            &[
                ("GroupId", &dflt),
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", &port),
                ("IpPermissions.1.ToPort", &port),
                ("IpPermissions.1.IpRanges.1.CidrIp", "10.9.0.0/16"),
            ],
        )
        .await;
        let returned = Instant::now();
        let has_rule = |v: &npb::NetworkView| {
            vpc_of(v, &va).is_some_and(|x| {
                x.security_groups.iter().any(|g| {
                    g.ingress.iter().any(|r| {
                        r.protocol == "tcp"
                            && r.from_port.to_string() == port
                            && r.to_port.to_string() == port
                            && r.cidr == "10.9.0.0/16"
                    })
                })
            })
        };
        let (at, _) = n1
            .wait_view(since, Duration::from_secs(5), has_rule)
            .await
            .expect("the rule reaches node 1");
        n2.wait_view(since, Duration::from_secs(5), has_rule)
            .await
            .expect("the rule reaches node 2");
        took.push(at.saturating_duration_since(returned));
    }
    took.sort();
    let p50 = took[took.len() / 2];
    eprintln!("AuthorizeSecurityGroupIngress -> view at node: p50 {p50:?}, all {took:?}");
    assert!(p50 < Duration::from_secs(1), "{took:?}");

    // Group membership: A2 moves to group `web`, which A's default group
    // names as a peer.
    let web = text(
        &a.ok(
            "CreateSecurityGroup",
            &[
                ("GroupName", "web"),
                ("GroupDescription", "web"),
                ("VpcId", &va),
            ],
        )
        .await,
        "groupId",
    );
    let since = Instant::now();
    a.ok(
        "ModifyInstanceAttribute",
        &[("InstanceId", &a2), ("GroupId.1", &web)],
    )
    .await;
    a.ok(
        "AuthorizeSecurityGroupIngress",
        &[
            ("GroupId", &dflt),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "80"),
            ("IpPermissions.1.ToPort", "80"),
            ("IpPermissions.1.Groups.1.GroupId", &web),
        ],
    )
    .await;
    let (_, v1) = n1
        .wait_view(since, wait, |v| {
            vpc_of(v, &va).is_some_and(|x| {
                x.endpoints
                    .iter()
                    .any(|e| e.instance_id == a2 && e.security_group_ids == vec![web.clone()])
                    && x.security_groups.iter().any(|g| g.group_id == web)
            })
        })
        .await
        .expect("node 1 sees A2 in web, and web as a peer");
    let xa = vpc_of(&v1, &va).unwrap();
    let w = xa
        .security_groups
        .iter()
        .find(|g| g.group_id == web)
        .unwrap();
    assert!(
        w.ingress.is_empty() && w.egress.is_empty(),
        "a peer-only group comes without rules"
    );
    let (_, v2) = n2
        .wait_view(since, wait, |v| {
            vpc_of(v, &va).is_some_and(|x| {
                x.security_groups
                    .iter()
                    .any(|g| g.group_id == web && !g.egress.is_empty())
            })
        })
        .await
        .expect("node 2 has web's rules (its instance is in it)");
    let xa2 = vpc_of(&v2, &va).unwrap();
    assert!(
        xa2.security_groups.iter().all(|g| g.group_id != dflt),
        "node 2's instance left the default group, and no rule of web names it"
    );

    // Terminate A2: node 1 sees A's endpoint set shrink, node 2 has no VPC.
    let since = Instant::now();
    a.ok("TerminateInstances", &[("InstanceId.1", &a2)]).await;
    n1.wait_view(since, wait, |v| {
        vpc_of(v, &va).is_some_and(|x| endpoint_ids(x) == [a1.as_str()])
    })
    .await
    .expect("node 1 sees A2 gone");
    n2.wait_view(since, wait, |v| v.vpcs.is_empty())
        .await
        .expect("node 2 has no VPC left");

    // Another node's credential cannot watch node 1's view.
    let mut other = node_client(&ep, n2.credential()).await;
    let e = other
        .watch_network(npb::WatchNetworkRequest {
            node_id: n1.node_id.clone(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ),
        "{e}"
    );
    // A tenant credential neither.
    let creds = tenant(&ep, "t").await;
    let mut t = node_client(&ep, creds).await;
    assert!(t
        .watch_network(npb::WatchNetworkRequest {
            node_id: n1.node_id.clone(),
        })
        .await
        .is_err());
}

/// Public addressing reaches the nodes: an instance of the default VPC
/// (whose main table routes 0.0.0.0/0 to its attached gateway) shows its
/// auto-assigned address, then its Elastic IP, in its endpoint and its subnet as internet-routed; a
/// disassociation takes the address out of the next view; a VPC without a
/// gateway has no internet-routed subnet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_views_carry_public_addresses_and_internet_routes() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/24".into());
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let n1 = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h1", ZONES[0], 16, 4096).with_underlay("192.0.2.1"),
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(10);
    let a = Ec2::new(&cp.domain, "a").await;
    let i1 = text(
        &launch(
            &a,
            &run(&image, &[("Placement.AvailabilityZone", ZONES[0].into())]),
        )
        .await
        .unwrap(),
        "instanceId",
    );
    let dvpc = text(&a.ok("DescribeVpcs", &[]).await, "vpcId");
    let since = Instant::now() - Duration::from_secs(1);
    // Default subnets map public addresses on launch (as EC2's): the
    // auto-assigned one arrives in a later view.
    let v = n1
        .wait_view(since, wait, |v| {
            vpc_of(v, &dvpc).is_some_and(|x| {
                // The cache follows each prefix on its own watch: the
                // gateway and route records may arrive a view later.
                x.subnets.iter().all(|s| s.internet_route)
                    && x.endpoints
                        .iter()
                        .any(|e| e.instance_id == i1 && e.public_ip.starts_with("198.51.100."))
            })
        })
        .await
        .expect("the default VPC in node 1's view, with the auto-assigned address")
        .1;
    let x = vpc_of(&v, &dvpc).unwrap();
    assert!(
        x.subnets.iter().all(|s| s.internet_route),
        "the default VPC's subnets route to its gateway: {x:?}"
    );

    let alloc = text(
        &a.ok("AllocateAddress", &[("Domain", "vpc")]).await,
        "allocationId",
    );
    let public = text(
        &a.ok("DescribeAddresses", &[("AllocationId.1", &alloc)])
            .await,
        "publicIp",
    );
    let since = Instant::now();
    let assoc = text(
        &a.ok(
            "AssociateAddress",
            &[("AllocationId", &alloc), ("InstanceId", &i1)],
        )
        .await,
        "associationId",
    );
    let (at, _) = n1
        .wait_view(since, wait, |v| {
            vpc_of(v, &dvpc).is_some_and(|x| {
                x.endpoints
                    .iter()
                    .any(|e| e.instance_id == i1 && e.public_ip == public)
            })
        })
        .await
        .expect("the Elastic IP in the endpoint");
    eprintln!("associate -> view with the address: {:?}", at - since);

    let since = Instant::now();
    a.ok("DisassociateAddress", &[("AssociationId", &assoc)])
        .await;
    // The default subnet maps public addresses: a new auto-assigned one
    // replaces the Elastic IP (as EC2) in the next view.
    n1.wait_view(since, wait, |v| {
        vpc_of(v, &dvpc).is_some_and(|x| {
            x.endpoints.iter().any(|e| {
                e.instance_id == i1
                    && e.public_ip != public
                    && e.public_ip.starts_with("198.51.100.")
            })
        })
    })
    .await
    .expect("the Elastic IP replaced in the next view");
    // Stopped: the auto-assigned address leaves the view.
    let since = Instant::now();
    a.ok("StopInstances", &[("InstanceId.1", &i1)]).await;
    n1.wait_view(since, wait, |v| {
        vpc_of(v, &dvpc).is_some_and(|x| {
            x.endpoints
                .iter()
                .any(|e| e.instance_id == i1 && e.public_ip.is_empty())
        })
    })
    .await
    .expect("the address gone from the view at stop");

    // A VPC of its own, without a gateway: not internet-routed.
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.5.0.0/16")]).await,
        "vpcId",
    );
    let s = subnet_in(&a, &vpc, "10.5.0.0/24", ZONES[0]).await;
    launch(&a, &run(&image, &[("SubnetId", s)])).await.unwrap();
    let v = n1
        .wait_view(Instant::now() - Duration::from_secs(1), wait, |v| {
            vpc_of(v, &vpc).is_some()
        })
        .await
        .expect("the new VPC in node 1's view")
        .1;
    assert!(vpc_of(&v, &vpc)
        .unwrap()
        .subnets
        .iter()
        .all(|s| !s.internet_route));
    cp.shutdown().await;
}
