//! A real `hello` guest on a routed VPC port, launched by an instance task
//! like any other (KVM, the jailed `nubis-vmm`): its TAP is on no bridge,
//! and a fake guest of the same VPC on the same host (a namespace with a
//! veth named like a TAP, recorded in the state directory as an instance's
//! `net.json` would be) reaches its HTTP service through the routed port —
//! only while the view's security group allows it. Terminating the instance
//! removes its rule and route.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::{alive, have_prereqs, in_netns, must, start_agent, wait_status, Env, NetNs};
use nubis_agent::context::HostContext;
use nubis_agent::host::vpc::NetView;
use nubis_agent::host::vpc::{LocalPort, VpcNet};
use nubis_agent::instance::InstanceHandle;
use nubis_agent::layout::{write_json, NetAlloc};
use nubis_agent::runtime::{Admission, Request, State};
use nubis_agent::types::{ImageName, InstanceId, InstanceSpec, VpcAttachment};
use nubis_proto::node::v1 as pb;

const VNI: u32 = 0x3a;
const HELLO_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const FAKE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const FAKE_MAC: &str = "02:4e:42:00:05:14";
const FAKE_TAP: &str = "nbtfake0001";

fn attachment() -> VpcAttachment {
    VpcAttachment {
        vni: VNI,
        vpc_id: "vpc-g".into(),
        subnet_id: "subnet-g".into(),
        subnet_cidr: "10.0.1.0/24".into(),
        security_group_ids: vec!["sg-web".into()],
    }
}

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).unwrap(),
        image: ImageName::new("hello").unwrap(),
        vcpus: 1,
        memory_mib: 64,
        cmdline_extra: String::new(),
        ip: Some(HELLO_IP),
        mac: Some("02:4e:42:00:05:0a".into()),
        prefix_len: Some(24),
        gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
        image_manifest_sha256: None,
        metadata: None,
        root_volume_gib: None,
        limits: None,
        vpc: Some(attachment()),
        extra_networks: Vec::new(),
    }
}

/// The view: hello in `sg-web` (TCP 80 from `sg-client` when `allow`), the
/// fake guest in `sg-client`.
fn view(revision: i64, hello: &str, allow: bool) -> NetView {
    view_on(revision, hello, allow, "", "")
}

/// [`view`] with the hosts' underlay addresses of hello and the fake guest.
fn view_on(revision: i64, hello: &str, allow: bool, hello_ul: &str, fake_ul: &str) -> NetView {
    let ep = |id: &str, ip: Ipv4Addr, mac: &str, g: &str| pb::Endpoint {
        instance_id: id.into(),
        ip: ip.to_string(),
        mac: mac.into(),
        subnet_id: "subnet-g".into(),
        node_underlay_ip: if id == hello { hello_ul } else { fake_ul }.into(),
        node_id: "node-1".into(),
        security_group_ids: vec![g.into()],
        public_ip: String::new(),
        ..Default::default()
    };
    let all_out = || {
        vec![pb::SecurityRule {
            protocol: "-1".into(),
            from_port: -1,
            to_port: -1,
            cidr: "0.0.0.0/0".into(),
            peer_group_id: String::new(),
        }]
    };
    let web_in = if allow {
        vec![pb::SecurityRule {
            protocol: "tcp".into(),
            from_port: 80,
            to_port: 80,
            cidr: String::new(),
            peer_group_id: "sg-client".into(),
        }]
    } else {
        vec![]
    };
    NetView::from_proto(&pb::NetworkView {
        revision,
        vpcs: vec![pb::VpcView {
            vpc_id: "vpc-g".into(),
            vni: VNI,
            cidr: "10.0.0.0/16".into(),
            subnets: vec![pb::SubnetView {
                subnet_id: "subnet-g".into(),
                cidr: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                internet_route: false,
            }],
            endpoints: vec![
                ep(hello, HELLO_IP, "02:4e:42:00:05:0a", "sg-web"),
                ep("i-fake0001", FAKE_IP, FAKE_MAC, "sg-client"),
            ],
            security_groups: vec![
                pb::SecurityGroupView {
                    group_id: "sg-web".into(),
                    ingress: web_in,
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

/// `GET /` on hello from the fake guest, retried until `within` has passed.
fn http_from(ns: &str, within: Duration) -> Option<String> {
    common::http_get_from(ns, HELLO_IP, within)
}

#[test]
fn a_hello_guest_on_a_routed_port_follows_its_security_groups() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    // The fake guest: its host end in the agent's namespace, recorded like
    // an instance of the VPC so that the data plane routes it.
    let fake = NetNs::new();
    env.netns.veth_to(FAKE_TAP, &fake.name);
    assert!(env.netns.ip(&["link", "set", FAKE_TAP, "up"]).0);
    for args in [
        vec!["link", "set", "eth0", "address", FAKE_MAC],
        vec!["addr", "add", "10.0.1.20/24", "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", "10.0.1.1"],
    ] {
        assert!(fake.ip(&args).0, "{args:?}");
    }
    let fake_dir = env.state.path().join("instances/i-fake0001");
    std::fs::create_dir_all(&fake_dir).unwrap();
    write_json(
        &fake_dir.join("net.json"),
        &NetAlloc {
            ip: FAKE_IP,
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            mac: FAKE_MAC.into(),
            tap: FAKE_TAP.into(),
            vpc: Some(attachment()),
            extra: Vec::new(),
        },
    )
    .unwrap();

    let rt = env.runtime();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx);
        let ctx: Arc<HostContext> = HostContext::new(env.config.clone(), tx).unwrap();
        let s = spec("i-vpcg0001");
        ctx.vpc
            .set_view(view(1, s.id.as_str(), true))
            .await
            .unwrap();
        let h = InstanceHandle::spawn_new(ctx.clone(), s.clone());
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
        let net: NetAlloc =
            nubis_agent::layout::read_json(&env.state.path().join("instances/i-vpcg0001/net.json"))
                .unwrap()
                .unwrap();
        assert_eq!(net.vpc, Some(attachment()));
        // A routed port: on no bridge, with proxy ARP and its rule.
        let (_, link) = env.netns.ip(&["-d", "link", "show", "dev", &net.tap]);
        assert!(!link.contains("master"), "{link}");
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        assert!(
            rules.contains(&format!("iif {} lookup {}", net.tap, 0x0100_0000 + VNI)),
            "{rules}"
        );

        let body = http_from(&fake.name, Duration::from_secs(60));
        assert!(
            body.as_deref().is_some_and(|b| b.contains("HTTP/1")),
            "{body:?}"
        );

        // Revoked: no more HTTP.
        ctx.vpc
            .set_view(view(2, s.id.as_str(), false))
            .await
            .unwrap();
        ctx.vpc.sync(&ctx.layout, false).await.unwrap();
        assert_eq!(http_from(&fake.name, Duration::from_millis(10)), None);

        // Terminate: the port's rule and route go, the fake guest's stay.
        assert_eq!(
            h.request(Request::Terminate, 2, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        h.wait_for(Duration::from_secs(60), |r| r.state == State::Gone)
            .await
            .unwrap();
        let (_, rules) = env.netns.ip(&["rule", "show"]);
        assert!(!rules.contains(&net.tap), "{rules}");
        assert!(rules.contains(FAKE_TAP), "{rules}");
    });
}

/// The real agent binary with a hello guest on a routed port, its host's
/// underlay on a fabric shared with a second fake host (its data plane
/// driven here) carrying a fake guest of the VPC: HTTP crosses the VXLAN
/// overlay; the agent is killed (-9) and restarted: the guest keeps being
/// reachable while no agent runs and after the restart (nothing torn down,
/// the view from `vpc.json`), the VMM is re-adopted.
#[test]
fn routed_guest_stays_reachable_across_an_agent_restart() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let state = env.state.path().to_path_buf();
    // Fabric, host A (the agent's namespace) and host B.
    let fabric = NetNs::new();
    assert!(fabric.ip(&["link", "add", "nbfab", "type", "bridge"]).0);
    assert!(fabric.ip(&["link", "set", "nbfab", "mtu", "9000", "up"]).0);
    let host_b = NetNs::new();
    for (host, port, ul) in [
        (&env.netns, "nbfab1", "10.254.0.1/24"),
        (&host_b, "nbfab2", "10.254.0.2/24"),
    ] {
        must(&[
            "ip",
            "link",
            "add",
            "ul0",
            "netns",
            &host.name,
            "mtu",
            "9000",
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &fabric.name,
            "mtu",
            "9000",
        ]);
        assert!(fabric.ip(&["link", "set", port, "master", "nbfab", "up"]).0);
        assert!(host.ip(&["addr", "add", ul, "dev", "ul0"]).0);
        assert!(host.ip(&["link", "set", "ul0", "up"]).0);
    }
    let fake = NetNs::new();
    host_b.veth_to(FAKE_TAP, &fake.name);
    assert!(host_b.ip(&["link", "set", FAKE_TAP, "up"]).0);
    for args in [
        vec!["link", "set", "eth0", "address", FAKE_MAC],
        vec!["addr", "add", "10.0.1.20/24", "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", "10.0.1.1"],
    ] {
        assert!(fake.ip(&args).0, "{args:?}");
    }
    // The agent's underlay, and the view it had before (its state file).
    let toml = std::fs::read_to_string(env.config_path()).unwrap();
    let toml = toml.replacen(
        "[network]\n",
        "[network]\nunderlay_address = \"10.254.0.1\"\n",
        1,
    );
    std::fs::write(env.config_path(), toml).unwrap();
    let id = "i-vpcr0001";
    let v = view_on(1, id, true, "10.254.0.1", "10.254.0.2");
    std::fs::write(
        state.join("vpc.json"),
        serde_json::json!({"view": v, "zones": {}}).to_string(),
    )
    .unwrap();
    let mut spec = serde_json::to_value(spec(id)).unwrap();
    spec["cmdline_extra"] = "".into();
    std::fs::write(
        state.join("desired.json"),
        serde_json::json!({"instances": [{"spec": spec, "desired": "running", "generation": 1}]})
            .to_string(),
    )
    .unwrap();
    // Host B: the fake guest's routed port.
    let b = Arc::new(VpcNet::new(Some(Ipv4Addr::new(10, 254, 0, 2)), None, None));
    let fake_port = LocalPort::new(
        "i-fake0001",
        FAKE_TAP,
        FAKE_MAC,
        FAKE_IP,
        Ipv4Addr::new(10, 0, 1, 1),
        VNI,
    )
    .unwrap();
    let (bb, vv) = (b.clone(), v.clone());
    in_netns(&host_b.name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            bb.set_view(vv).await.unwrap();
            bb.sync_ports(vec![fake_port], false).await.unwrap();
        });
    })
    .join()
    .unwrap();

    let t0 = nubis_agent::instance::now_ms();
    let agent = start_agent(&env);
    let ready = |v: &serde_json::Value| {
        v["instances"][0]["state"] == "running" && v["instances"][0]["ready"] == true
    };
    let st = wait_status(&env, t0, "hello running + ready", ready);
    let pid = st["instances"][0]["pid"].as_i64().unwrap() as i32;
    assert_eq!(st["vpc"]["view_revision"], 1, "{st:#}");
    let body = http_from(&fake.name, Duration::from_secs(60));
    assert!(
        body.as_deref().is_some_and(|b| b.contains("HTTP/1")),
        "{body:?}"
    );
    let (_, rules) = env.netns.ip(&["rule", "show"]);

    // kill -9: the kernel state stays, so does the guest's reachability.
    let agent_pid = agent.0.id() as i32;
    drop(agent);
    assert!(!alive(agent_pid));
    assert!(alive(pid));
    let body = http_from(&fake.name, Duration::from_secs(5));
    assert!(body.is_some(), "unreachable while no agent runs");

    let t1 = nubis_agent::instance::now_ms();
    let _agent = start_agent(&env);
    let st = wait_status(&env, t1, "hello re-adopted", ready);
    assert_eq!(
        st["instances"][0]["pid"].as_i64(),
        Some(i64::from(pid)),
        "VMM restarted"
    );
    assert_eq!(st["vpc"]["view_revision"], 1, "{st:#}");
    let body = http_from(&fake.name, Duration::from_secs(5));
    assert!(body.is_some(), "unreachable after the restart");
    let (_, after) = env.netns.ip(&["rule", "show"]);
    let mut r0: Vec<&str> = rules.lines().collect();
    let mut r1: Vec<&str> = after.lines().collect();
    r0.sort_unstable();
    r1.sort_unstable();
    assert_eq!(r0, r1, "rules changed across the restart");
}
