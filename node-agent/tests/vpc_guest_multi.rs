//! A real `hello` guest with two network interfaces (KVM, the jailed
//! `nubis-vmm`): its primary in subnet 10.0.1.0/24 (group sg-web) and a
//! secondary one (Node API `extra_networks`) in 10.0.2.0/24 (group sg-db),
//! each its own routed TAP with its own anti-spoofing and groups. A fake
//! guest of subnet 2 on the same host (a namespace with a veth named like a
//! TAP, recorded as an instance's `net.json`) reaches the secondary
//! address's HTTP service only while sg-db allows it, and the primary one
//! throughout (sg-web allows it). The guest's secondary interface answers
//! ping. Terminating the instance removes both ports.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::{have_prereqs, Env, NetNs};
use nubis_agent::context::HostContext;
use nubis_agent::host::vpc::NetView;
use nubis_agent::instance::InstanceHandle;
use nubis_agent::layout::{write_json, NetAlloc};
use nubis_agent::runtime::{Admission, Request, State};
use nubis_agent::types::{ExtraNetwork, ImageName, InstanceId, InstanceSpec, VpcAttachment};
use nubis_proto::node::v1 as pb;

const VNI: u32 = 0x3b;
const ID: &str = "i-vpcm0001";
const PRIMARY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const SECOND_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
const SECOND_MAC: &str = "02:4e:0a:00:02:0a";
const FAKE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 20);
const FAKE_MAC: &str = "02:4e:42:00:06:14";
const FAKE_TAP: &str = "nbtfake0002";

fn attachment(subnet: &str, cidr: &str, group: &str) -> VpcAttachment {
    VpcAttachment {
        vni: VNI,
        vpc_id: "vpc-m".into(),
        subnet_id: subnet.into(),
        subnet_cidr: cidr.into(),
        security_group_ids: vec![group.into()],
    }
}

fn spec() -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(ID).unwrap(),
        image: ImageName::new("hello").unwrap(),
        vcpus: 1,
        memory_mib: 64,
        cmdline_extra: String::new(),
        ip: Some(PRIMARY_IP),
        mac: Some("02:4e:0a:00:01:0a".into()),
        prefix_len: Some(24),
        gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
        image_manifest_sha256: None,
        metadata: None,
        root_volume_gib: None,
        limits: None,
        vpc: Some(attachment("subnet-1", "10.0.1.0/24", "sg-web")),
        extra_networks: vec![ExtraNetwork {
            device_index: 1,
            interface_id: "eni-0000000000000000a".into(),
            ip: SECOND_IP,
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 1),
            mac: SECOND_MAC.into(),
            vpc: attachment("subnet-2", "10.0.2.0/24", "sg-db"),
        }],
    }
}

/// The view: the guest's two interfaces (sg-web, sg-db) and the fake
/// guest (sg-client); sg-web always allows TCP 80 and ICMP from sg-client,
/// sg-db only when `allow`.
fn view(revision: i64, allow: bool) -> NetView {
    let ep = |ip: Ipv4Addr, mac: &str, subnet: &str, g: &str, id: &str, index: u32| pb::Endpoint {
        instance_id: id.into(),
        ip: ip.to_string(),
        mac: mac.into(),
        subnet_id: subnet.into(),
        node_underlay_ip: String::new(),
        node_id: "node-1".into(),
        security_group_ids: vec![g.into()],
        public_ip: String::new(),
        device_index: index,
        interface_id: String::new(),
    };
    let rule = |proto: &str, from: i32, to: i32, peer: &str, cidr: &str| pb::SecurityRule {
        protocol: proto.into(),
        from_port: from,
        to_port: to,
        cidr: cidr.into(),
        peer_group_id: peer.into(),
    };
    let client_in = || {
        vec![
            rule("tcp", 80, 80, "sg-client", ""),
            rule("icmp", -1, -1, "sg-client", ""),
        ]
    };
    let all_out = || vec![rule("-1", -1, -1, "", "0.0.0.0/0")];
    let subnet = |id: &str, cidr: &str, gw: &str| pb::SubnetView {
        subnet_id: id.into(),
        cidr: cidr.into(),
        gateway: gw.into(),
        internet_route: false,
    };
    NetView::from_proto(&pb::NetworkView {
        revision,
        vpcs: vec![pb::VpcView {
            vpc_id: "vpc-m".into(),
            vni: VNI,
            cidr: "10.0.0.0/16".into(),
            subnets: vec![
                subnet("subnet-1", "10.0.1.0/24", "10.0.1.1"),
                subnet("subnet-2", "10.0.2.0/24", "10.0.2.1"),
            ],
            endpoints: vec![
                ep(PRIMARY_IP, "02:4e:0a:00:01:0a", "subnet-1", "sg-web", ID, 0),
                ep(SECOND_IP, SECOND_MAC, "subnet-2", "sg-db", ID, 1),
                ep(FAKE_IP, FAKE_MAC, "subnet-2", "sg-client", "i-fake0002", 0),
            ],
            security_groups: vec![
                pb::SecurityGroupView {
                    group_id: "sg-web".into(),
                    ingress: client_in(),
                    egress: all_out(),
                },
                pb::SecurityGroupView {
                    group_id: "sg-db".into(),
                    ingress: if allow { client_in() } else { vec![] },
                    egress: all_out(),
                },
                pb::SecurityGroupView {
                    group_id: "sg-client".into(),
                    ingress: vec![],
                    egress: all_out(),
                },
            ],
        }],
    })
}

#[test]
fn a_guest_with_two_interfaces_has_two_ports_with_their_own_groups() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let fake = NetNs::new();
    env.netns.veth_to(FAKE_TAP, &fake.name);
    assert!(env.netns.ip(&["link", "set", FAKE_TAP, "up"]).0);
    for args in [
        vec!["link", "set", "eth0", "address", FAKE_MAC],
        vec!["addr", "add", "10.0.2.20/24", "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", "10.0.2.1"],
    ] {
        assert!(fake.ip(&args).0, "{args:?}");
    }
    let fake_dir = env.state.path().join("instances/i-fake0002");
    std::fs::create_dir_all(&fake_dir).unwrap();
    write_json(
        &fake_dir.join("net.json"),
        &NetAlloc {
            ip: FAKE_IP,
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 1),
            mac: FAKE_MAC.into(),
            tap: FAKE_TAP.into(),
            vpc: Some(attachment("subnet-2", "10.0.2.0/24", "sg-client")),
            extra: Vec::new(),
        },
    )
    .unwrap();

    let rt = env.runtime();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        let ctx: Arc<HostContext> = HostContext::new(env.config.clone(), tx).unwrap();
        ctx.vpc.set_view(view(1, true)).await.unwrap();
        let h = InstanceHandle::spawn_new(ctx.clone(), spec());
        assert_eq!(
            h.request(Request::Start, 1, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        let r = h
            .wait_for(Duration::from_secs(120), |r| {
                r.ready || r.state == State::Failed
            })
            .await
            .unwrap();
        assert_eq!(r.state, State::Running, "{r:?}");
        let dir = env.state.path().join(format!("instances/{ID}"));
        let net: NetAlloc = nubis_agent::layout::read_json(&dir.join("net.json"))
            .unwrap()
            .unwrap();
        assert_eq!(net.extra.len(), 1);
        let second_tap = net.extra[0].tap.clone();
        assert_ne!(second_tap, net.tap);
        assert!(second_tap.len() <= 15);
        // The guest was told its second address, and brought it up.
        let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
        assert!(
            console.contains("NUBIS-NET1 ip=10.0.2.10/24 mac=02:4e:0a:00:02:0a"),
            "{console}"
        );
        // Two routed ports, each with its rule and its own filter chains.
        let table = 0x0100_0000 + VNI;
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        for tap in [&net.tap, &second_tap] {
            assert!(
                rules.contains(&format!("iif {tap} lookup {table}")),
                "{tap}: {rules}"
            );
        }
        let (_, route) = env
            .netns
            .ip(&["route", "show", "table", &table.to_string()]);
        assert!(
            route.contains(&format!("10.0.2.10 dev {second_tap}")),
            "{route}"
        );
        let nft = common::must(&[
            "ip",
            "netns",
            "exec",
            &env.netns.name,
            "nft",
            "list",
            "table",
            "inet",
            "nubis_vpc",
        ]);
        assert!(nft.contains(&second_tap), "{nft}");
        assert!(
            nft.contains(SECOND_MAC),
            "anti-spoofing on the second port: {nft}"
        );

        // Both addresses serve HTTP; the second answers ping.
        for ip in [SECOND_IP, PRIMARY_IP] {
            let body = common::http_get_from(&fake.name, ip, Duration::from_secs(60));
            assert!(
                body.as_deref().is_some_and(|b| b.contains("HTTP/1")),
                "{ip}: {body:?}"
            );
        }
        assert!(
            (0..10).any(|_| common::ping(&fake.name, SECOND_IP)),
            "ping of the secondary address"
        );

        // A restarted agent's data plane (a new context over the same state
        // directory) finds both ports and changes nothing.
        let ports = nubis_agent::host::vpc::ports_from_layout(&ctx.layout).unwrap();
        let mine: Vec<(u32, &str)> = ports
            .iter()
            .filter(|p| p.instance_id == ID)
            .map(|p| (p.device_index, p.tap.as_str()))
            .collect();
        assert_eq!(mine, [(0, net.tap.as_str()), (1, second_tap.as_str())]);
        let (_, rules_before) = env.netns.ip(&["rule", "show"]);
        let (tx2, rx2) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx2);
        let restarted: Arc<HostContext> = HostContext::new(env.config.clone(), tx2).unwrap();
        restarted.vpc.sync(&restarted.layout, true).await.unwrap();
        let (_, rules_after) = env.netns.ip(&["rule", "show"]);
        assert_eq!(rules_before, rules_after, "a restart changed the rules");
        assert!(
            common::http_get_from(&fake.name, SECOND_IP, Duration::from_secs(10)).is_some(),
            "the secondary address after a restart"
        );
        drop(restarted);

        // sg-db revoked: the secondary address is closed, the primary
        // (sg-web) still open.
        ctx.vpc.set_view(view(2, false)).await.unwrap();
        ctx.vpc.sync(&ctx.layout, false).await.unwrap();
        assert_eq!(
            common::http_get_from(&fake.name, SECOND_IP, Duration::from_millis(10)),
            None
        );
        assert!(common::http_get_from(&fake.name, PRIMARY_IP, Duration::from_secs(10)).is_some());

        // Stopped, the secondary interface detached (the next start's spec
        // has none), started again: its TAP and rule are gone, the primary
        // answers.
        assert_eq!(
            h.request(Request::Stop, 2, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        h.wait_for(Duration::from_secs(60), |r| r.state == State::Stopped)
            .await
            .unwrap();
        let mut one = spec();
        one.extra_networks.clear();
        assert!(h.send_start(&one, 3));
        let r = h
            .wait_for(Duration::from_secs(120), |r| {
                r.generation == 3 && (r.ready || r.state == State::Failed)
            })
            .await
            .unwrap();
        assert_eq!(r.state, State::Running, "{r:?}");
        let again: NetAlloc = nubis_agent::layout::read_json(&dir.join("net.json"))
            .unwrap()
            .unwrap();
        assert!(again.extra.is_empty());
        assert_eq!(again.tap, net.tap);
        let (ok, _) = env.netns.ip(&["link", "show", "dev", &second_tap]);
        assert!(!ok, "the detached interface's TAP is gone");
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        assert!(!rules.contains(&second_tap), "{rules}");
        assert!(common::http_get_from(&fake.name, PRIMARY_IP, Duration::from_secs(60)).is_some());
        let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
        assert!(!console.contains("NUBIS-NET1"), "{console}");

        // Terminate: both ports go, the fake guest's stays.
        assert_eq!(
            h.request(Request::Terminate, 4, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        h.wait_for(Duration::from_secs(60), |r| r.state == State::Gone)
            .await
            .unwrap();
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        assert!(!rules.contains(&net.tap), "{rules}");
        assert!(!rules.contains(&second_tap), "{rules}");
        assert!(rules.contains(FAKE_TAP), "{rules}");
        let (ok, _) = env.netns.ip(&["link", "show", "dev", &second_tap]);
        assert!(!ok, "the second TAP is gone");
    });
}
