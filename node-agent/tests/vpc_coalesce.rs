//! `VpcNet::sync` calls made at once coalesce: a burst of launches on one
//! host used to run one full sync (every port, the whole nftables batch) per
//! launch, one after another. Here twelve routed ports are recorded in a
//! state directory (as the agent's launch path leaves them: a real TAP and a
//! `net.json` with the VPC), twelve syncs are started together, and far fewer
//! full syncs run while every port ends routed; a sync asked for afterwards
//! still runs. Everything lives in a namespace `nbag-*` this test creates and
//! removes (also on failure).

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::{in_netns, run, NetNs};
use nubis_agent::host::vpc::VpcNet;
use nubis_agent::layout::{Layout, NetAlloc};
use nubis_agent::types::{InstanceId, VpcAttachment};

const PORTS: u8 = 12;
const VNI: u32 = 0x303;

#[test]
fn concurrent_syncs_coalesce_and_route_every_port() {
    let checks = [
        (
            rustix::process::geteuid().is_root(),
            "root (network namespaces)",
        ),
        (run(&["ip", "-V"]).0, "iproute2 `ip`"),
        (
            run(&["nft", "--version"]).0,
            "nft (Debian package nftables)",
        ),
    ];
    for (ok, what) in checks {
        if !common::prerequisite(ok, what) {
            return;
        }
    }
    common::sweep_stale();
    let state = tempfile::tempdir().expect("state dir");
    let layout = Layout::open(state.path()).expect("layout");

    let host = NetNs::new();
    assert!(
        host.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul0p"])
            .0
    );
    assert!(host.ip(&["link", "set", "ul0p", "up"]).0);
    assert!(host.ip(&["addr", "add", "10.254.0.1/24", "dev", "ul0"]).0);
    assert!(host.ip(&["link", "set", "ul0", "up"]).0);
    let mut addrs = Vec::new();
    for i in 0..PORTS {
        let tap = format!("nbtco{i:02}");
        assert!(host.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]).0);
        assert!(host.ip(&["link", "set", &tap, "up"]).0);
        let id = InstanceId::new(format!("i-{:017x}", 0xc0a1_0000u64 + u64::from(i)))
            .expect("instance id");
        let ip = Ipv4Addr::new(10, 0, 1, 10 + i);
        let net = NetAlloc {
            ip,
            prefix: 24,
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            mac: format!("02:4e:42:00:03:{i:02x}"),
            tap,
            vpc: Some(VpcAttachment {
                vni: VNI,
                vpc_id: "vpc-0000000000000c0a1".into(),
                subnet_id: "subnet-0000000000000c0a1".into(),
                subnet_cidr: "10.0.1.0/24".into(),
                security_group_ids: vec![],
            }),
            extra: Vec::new(),
        };
        let dir = layout.instance(&id);
        dir.create().expect("instance dir");
        std::fs::write(dir.net(), serde_json::to_vec(&net).expect("json")).expect("net.json");
        addrs.push(ip);
    }

    let vpc = Arc::new(VpcNet::new(Some(Ipv4Addr::new(10, 254, 0, 1)), None, None));
    let (v, l) = (vpc.clone(), layout.clone());
    let results = in_netns(&host.name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..PORTS {
                let (v, l) = (v.clone(), l.clone());
                set.spawn(async move { v.sync(&l, false).await.map_err(|e| e.to_string()) });
            }
            set.join_all().await
        })
    })
    .join()
    .expect("host thread");
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let st = vpc.status();
    assert_eq!(st.ports, usize::from(PORTS), "{st:?}");
    assert!(
        st.syncs >= 1 && st.syncs < u64::from(PORTS) / 2,
        "{} concurrent syncs ran {} full syncs: {st:?}",
        PORTS,
        st.syncs
    );
    let table = (0x0100_0000 + VNI).to_string();
    let (ok, routes) = host.ip(&["route", "show", "table", &table]);
    assert!(ok, "{routes}");
    for ip in &addrs {
        assert!(
            routes.lines().any(|l| l.starts_with(&format!("{ip} "))),
            "no route to {ip} in table {table}:\n{routes}"
        );
    }

    // A sync asked for after the burst is not covered by it: it runs.
    let before = st.syncs;
    let (v, l) = (vpc.clone(), layout.clone());
    in_netns(&host.name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(v.sync(&l, false)).expect("sync");
    })
    .join()
    .expect("host thread");
    assert_eq!(vpc.status().syncs, before + 1);
}
