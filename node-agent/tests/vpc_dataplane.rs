//! The VPC data plane (`nubis_agent::host::vpc`) in the kernel, with real
//! packets and no KVM guest and no control plane: two fake hosts (network
//! namespaces with their own agent-side state) joined by a fabric namespace
//! (a bridge, the underlay 10.254.0.0/24 at MTU 9000), and fake guests
//! (namespaces with a veth whose host end is named like a TAP). Each host's
//! data plane is driven directly with `NetworkView`s built here. Everything
//! lives in namespaces `nbag-*` this test creates and removes (also on
//! failure).

mod common;
mod vpc_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fetch, in_netns, must, ping, run, serve, NetNs};
use nubis_agent::host::vpc::{model, LocalPort, NetView, Synced, VpcNet};
use nubis_proto::node::v1 as pb;
use vpc_support::{arp_answered, echo, median, tcp_ok, throughput, udp_arrives};

const VPC1: u32 = 0x101;
const VPC2: u32 = 0x202;
const UL_A: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
const UL_B: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
/// Another address of host A (not the underlay).
const OTHER_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);

/// A fake guest.
struct Guest {
    ns: NetNs,
    id: String,
    tap: String,
    mac: String,
    ip: Ipv4Addr,
    gw: Ipv4Addr,
    vni: u32,
    subnet: &'static str,
    on_a: bool,
    groups: Vec<&'static str>,
}

impl Guest {
    fn port(&self) -> LocalPort {
        LocalPort::new(&self.id, &self.tap, &self.mac, self.ip, self.gw, self.vni).expect("port")
    }
    fn name(&self) -> String {
        self.ns.name.clone()
    }
}

/// Makes guest `i` on `host` (its TAP end in the host namespace).
#[allow(clippy::too_many_arguments)]
fn guest(
    host: &NetNs,
    on_a: bool,
    i: u8,
    vni: u32,
    subnet: &'static str,
    ip: Ipv4Addr,
    groups: Vec<&'static str>,
) -> Guest {
    let ns = NetNs::new();
    let tap = format!("nbtvpc{i:02}");
    let mac = format!("02:4e:42:00:01:{i:02x}");
    let o = ip.octets();
    let gw = Ipv4Addr::new(o[0], o[1], o[2], 1);
    host.veth_to(&tap, &ns.name);
    assert!(host.ip(&["link", "set", &tap, "up"]).0);
    assert!(ns.ip(&["link", "set", "eth0", "address", &mac]).0);
    assert!(
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .0
    );
    assert!(ns.ip(&["link", "set", "eth0", "up"]).0);
    assert!(
        ns.ip(&["route", "add", "default", "via", &gw.to_string()])
            .0
    );
    Guest {
        ns,
        id: format!("i-{i:017x}"),
        tap,
        mac,
        ip,
        gw,
        vni,
        subnet,
        on_a,
        groups,
    }
}

fn rule(proto: &str, from: i32, to: i32, cidr: &str, group: &str) -> pb::SecurityRule {
    pb::SecurityRule {
        protocol: proto.into(),
        from_port: from,
        to_port: to,
        cidr: cidr.into(),
        peer_group_id: group.into(),
    }
}

/// The view of every guest in `guests`, with `groups` (id, ingress, egress)
/// in every VPC.
fn view(
    revision: i64,
    guests: &[&Guest],
    groups: &[(&str, Vec<pb::SecurityRule>, Vec<pb::SecurityRule>)],
) -> NetView {
    let mut vpcs = Vec::new();
    for vni in [VPC1, VPC2] {
        let members: Vec<&&Guest> = guests.iter().filter(|g| g.vni == vni).collect();
        if members.is_empty() {
            continue;
        }
        vpcs.push(pb::VpcView {
            vpc_id: format!("vpc-{vni:x}"),
            vni,
            cidr: "10.0.0.0/16".into(),
            subnets: ["10.0.1", "10.0.2"]
                .iter()
                .map(|p| pb::SubnetView {
                    subnet_id: format!("subnet-{p}"),
                    cidr: format!("{p}.0/24"),
                    gateway: format!("{p}.1"),
                    internet_route: false,
                })
                .collect(),
            endpoints: members
                .iter()
                .map(|g| pb::Endpoint {
                    instance_id: g.id.clone(),
                    ip: g.ip.to_string(),
                    mac: g.mac.clone(),
                    subnet_id: format!("subnet-{}", g.subnet),
                    node_underlay_ip: if g.on_a { UL_A } else { UL_B }.to_string(),
                    node_id: if g.on_a { "node-a" } else { "node-b" }.into(),
                    security_group_ids: g.groups.iter().map(|s| s.to_string()).collect(),
                    public_ip: String::new(),
                    ..Default::default()
                })
                .collect(),
            security_groups: groups
                .iter()
                .map(|(id, i, e)| pb::SecurityGroupView {
                    group_id: id.to_string(),
                    ingress: i.clone(),
                    egress: e.clone(),
                })
                .collect(),
        });
    }
    NetView::from_proto(&pb::NetworkView { revision, vpcs })
}

/// One fake host: its namespace and data plane.
struct Host {
    ns: NetNs,
    vpc: Arc<VpcNet>,
}

impl Host {
    /// Runs `f` with a runtime on a thread inside the host's namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&tokio::runtime::Runtime, &VpcNet) -> T + Send + 'static,
    ) -> T {
        let vpc = self.vpc.clone();
        in_netns(&self.ns.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            f(&rt, &vpc)
        })
        .join()
        .expect("host thread")
    }

    /// Applies `view` (when given) and `ports`; returns what the sync did.
    fn apply(&self, view: Option<NetView>, ports: Vec<LocalPort>, force: bool) -> Synced {
        self.run(move |rt, vpc| {
            rt.block_on(async {
                if let Some(v) = view {
                    vpc.set_view(v).await.expect("set view");
                }
                vpc.sync_ports(ports, force).await.expect("sync")
            })
        })
    }

    fn sh(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Everything the data plane owns, as text (for before/after checks).
    fn snapshot(&self) -> String {
        let mut s = self.sh(&["ip", "rule", "show"]);
        s += &self.sh(&["ip", "route", "show", "table", "all"]);
        s += &self.sh(&["ip", "neigh", "show", "nud", "permanent"]);
        s += &self.sh(&["bridge", "fdb", "show"]);
        s += &self.sh(&["ip", "-d", "link", "show", "type", "vxlan"]);
        let (ok, nft) = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns.name,
            "nft",
            "list",
            "table",
            "inet",
            "nubis_vpc",
        ]);
        if ok {
            s += &nft;
        }
        // Same objects, whatever order the kernel lists them in.
        let mut lines: Vec<&str> = s.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    }

    /// Asserts the snapshot is `before`, showing only the differing lines.
    fn assert_unchanged(&self, before: &str, what: &str) {
        let now = self.snapshot();
        if now != before {
            let (b, n): (Vec<&str>, Vec<&str>) = (before.lines().collect(), now.lines().collect());
            let gone: Vec<&&str> = b.iter().filter(|l| !n.contains(l)).collect();
            let new: Vec<&&str> = n.iter().filter(|l| !b.contains(l)).collect();
            panic!(
                "{what}: {} changed; gone {gone:#?}, new {new:#?}",
                self.ns.name
            );
        }
    }
}

fn ports(gs: &[&Guest], on_a: bool) -> Vec<LocalPort> {
    gs.iter()
        .filter(|g| g.on_a == on_a)
        .map(|g| g.port())
        .collect()
}

#[test]
fn vpc_data_plane_between_two_fake_hosts() {
    // No VMM and no KVM: root, iproute2 and nftables only.
    let checks = [
        (
            rustix::process::geteuid().is_root(),
            "root (network namespaces)",
        ),
        (run(&["ip", "-V"]).0, "iproute2 `ip`"),
        (
            run(&["bridge", "-V"]).0,
            "iproute2 `bridge` (VXLAN FDB entries)",
        ),
        (
            run(&["nft", "--version"]).0,
            "nft (Debian package nftables)",
        ),
        (run(&["ping", "-V"]).0, "ping (Debian package iputils-ping)"),
    ];
    for (ok, what) in checks {
        if !common::prerequisite(ok, what) {
            return;
        }
    }
    common::sweep_stale();
    let state = tempfile::tempdir().expect("state dir");

    // Fabric and hosts.
    let fabric = NetNs::new();
    assert!(fabric.ip(&["link", "add", "nbfab", "type", "bridge"]).0);
    assert!(fabric.ip(&["link", "set", "nbfab", "mtu", "9000", "up"]).0);
    let mk_host = |ul: Ipv4Addr, n: u8| {
        let ns = NetNs::new();
        let port = format!("nbfab{n}");
        must(&[
            "ip",
            "link",
            "add",
            "ul0",
            "netns",
            &ns.name,
            "mtu",
            "9000",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &fabric.name,
            "mtu",
            "9000",
        ]);
        assert!(
            fabric
                .ip(&["link", "set", &port, "master", "nbfab", "up"])
                .0
        );
        assert!(ns.ip(&["addr", "add", &format!("{ul}/24"), "dev", "ul0"]).0);
        assert!(ns.ip(&["link", "set", "ul0", "up"]).0);
        let vpc = VpcNet::new(
            Some(ul),
            None,
            Some(state.path().join(format!("vpc-{n}.json"))),
        );
        Host {
            ns,
            vpc: Arc::new(vpc),
        }
    };
    let a = mk_host(UL_A, 1);
    let b = mk_host(UL_B, 2);
    assert!(a.ns.ip(&["link", "add", "nbother", "type", "bridge"]).0);
    assert!(
        a.ns.ip(&["addr", "add", &format!("{OTHER_A}/24"), "dev", "nbother"])
            .0
    );
    assert!(a.ns.ip(&["link", "set", "nbother", "up"]).0);
    // The underlay device is found by its address.
    a.run(|rt, v| rt.block_on(v.check_underlay()).expect("underlay on A"));
    b.run(|rt, v| rt.block_on(v.check_underlay()).expect("underlay on B"));

    let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
    // VPC 1: g1 (A, subnet 10.0.1), g2 (B, 10.0.1), g3 (B, 10.0.2).
    // VPC 2, the same addresses: g4 (A, 10.0.1.10), g5 (B, 10.0.1.20).
    let g1 = guest(
        &a.ns,
        true,
        1,
        VPC1,
        "10.0.1",
        ip("10.0.1.10"),
        vec!["sg-open"],
    );
    let g2 = guest(
        &b.ns,
        false,
        2,
        VPC1,
        "10.0.1",
        ip("10.0.1.20"),
        vec!["sg-open"],
    );
    let g3 = guest(
        &b.ns,
        false,
        3,
        VPC1,
        "10.0.2",
        ip("10.0.2.30"),
        vec!["sg-open"],
    );
    let g4 = guest(
        &a.ns,
        true,
        4,
        VPC2,
        "10.0.1",
        ip("10.0.1.10"),
        vec!["sg-open"],
    );
    let g5 = guest(
        &b.ns,
        false,
        5,
        VPC2,
        "10.0.1",
        ip("10.0.1.20"),
        vec!["sg-open"],
    );
    let all = [&g1, &g2, &g3, &g4, &g5];
    let open = || {
        vec![(
            "sg-open",
            vec![rule("-1", -1, -1, "10.0.0.0/16", "")],
            vec![rule("-1", -1, -1, "0.0.0.0/0", "")],
        )]
    };

    // Strict reverse-path filtering host-wide would drop routed VPC traffic:
    // the data plane switches it off in its namespace.
    a.sh(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter"]);

    // Before any view: the ports exist, but their traffic is dropped.
    a.apply(None, ports(&all, true), false);
    b.apply(None, ports(&all, false), false);
    assert!(!ping(&g1.name(), g2.ip), "no view yet: dropped");

    // The view: all open inside each VPC.
    let v1 = view(1, &all, &open());
    let s = a.apply(Some(v1.clone()), ports(&all, true), false);
    eprintln!("view applied on A in {:?}", s.took);
    let s = b.apply(Some(v1.clone()), ports(&all, false), false);
    eprintln!("view applied on B in {:?}", s.took);
    assert!(s.took < Duration::from_secs(1), "{s:?}");

    for (from, to) in [
        (&g1, &g2),
        (&g2, &g1),
        (&g1, &g3),
        (&g3, &g1),
        (&g4, &g5),
        (&g5, &g4),
    ] {
        assert!(ping(&from.name(), to.ip), "{} -> {}", from.id, to.ip);
    }
    // TCP, both ways, across hosts and subnets; the same addresses in the
    // two VPCs reach their own VPC's instance only.
    let life = Duration::from_secs(120);
    serve(&g2.name(), SocketAddr::from((g2.ip, 8080)), "vpc1-g2", life);
    serve(&g5.name(), SocketAddr::from((g5.ip, 8080)), "vpc2-g5", life);
    serve(&g1.name(), SocketAddr::from((g1.ip, 8080)), "vpc1-g1", life);
    serve(&g3.name(), SocketAddr::from((g3.ip, 8080)), "vpc1-g3", life);
    let at = |g: &Guest, port: u16| SocketAddr::from((g.ip, port));
    assert_eq!(fetch(&g1.name(), at(&g2, 8080)).as_deref(), Some("vpc1-g2"));
    assert_eq!(fetch(&g2.name(), at(&g1, 8080)).as_deref(), Some("vpc1-g1"));
    assert_eq!(fetch(&g1.name(), at(&g3, 8080)).as_deref(), Some("vpc1-g3"));
    assert_eq!(fetch(&g3.name(), at(&g1, 8080)).as_deref(), Some("vpc1-g1"));
    assert_eq!(fetch(&g4.name(), at(&g5, 8080)).as_deref(), Some("vpc2-g5"));
    // Throughput of one TCP stream: overlay (g1 on A -> g2 on B) and, for
    // comparison, two guests on a plain bridge (the legacy path's shape).
    let overlay = throughput(&g1.name(), &g2.name(), at(&g2, 5001));
    let bridge_host = NetNs::new();
    assert!(
        bridge_host
            .ip(&["link", "add", "nbbrleg", "type", "bridge"])
            .0
    );
    assert!(bridge_host.ip(&["link", "set", "nbbrleg", "up"]).0);
    let legacy: Vec<NetNs> = (1..=2u8)
        .map(|i| {
            let ns = NetNs::new();
            let tap = format!("nbtleg{i}");
            bridge_host.veth_to(&tap, &ns.name);
            assert!(
                bridge_host
                    .ip(&["link", "set", &tap, "master", "nbbrleg", "up"])
                    .0
            );
            assert!(
                ns.ip(&["addr", "add", &format!("10.99.0.{i}/24"), "dev", "eth0"])
                    .0
            );
            assert!(ns.ip(&["link", "set", "eth0", "up"]).0);
            ns
        })
        .collect();
    let bridged = throughput(
        &legacy[0].name,
        &legacy[1].name,
        SocketAddr::from(([10, 99, 0, 2], 5001)),
    );
    eprintln!(
        "TCP throughput, one stream, 1 s: overlay {:.2} Gbit/s, bridge {:.2} Gbit/s",
        overlay * 8.0 / 1e9,
        bridged * 8.0 / 1e9
    );
    assert!(overlay > 1e6, "the overlay carries bulk traffic");
    drop(legacy);
    drop(bridge_host);

    // VPC 2 has no 10.0.2.30: nothing crosses over.
    assert!(!ping(&g4.name(), g3.ip), "VPC 2 must not reach VPC 1");
    assert_eq!(fetch(&g4.name(), at(&g3, 8080)), None);

    // Guests never reach host addresses (underlay, others, gateway).
    for h in [&a, &b] {
        serve(
            &h.ns.name,
            SocketAddr::from(([0, 0, 0, 0], 7070)),
            "host",
            life,
        );
    }
    assert_eq!(
        fetch(&a.ns.name, SocketAddr::from((UL_A, 7070))).as_deref(),
        Some("host")
    );
    for (g, to) in [
        (&g1, UL_A),
        (&g1, OTHER_A),
        (&g1, g1.gw),
        (&g1, UL_B),
        (&g2, UL_A),
        (&g2, UL_B),
    ] {
        assert_eq!(
            fetch(&g.name(), SocketAddr::from((to, 7070))),
            None,
            "{} -> {to}",
            g.id
        );
        assert!(!ping(&g.name(), to), "{} pings {to}", g.id);
    }

    // VXLAN from a host that is no tunnel endpoint of the view (on the
    // underlay, with a VXLAN device of VPC 1 aimed at A) is dropped; the
    // same from B's guest arrives.
    let rogue = NetNs::new();
    must(&[
        "ip",
        "link",
        "add",
        "ul0",
        "netns",
        &rogue.name,
        "mtu",
        "9000",
        "type",
        "veth",
        "peer",
        "name",
        "nbfab9",
        "netns",
        &fabric.name,
        "mtu",
        "9000",
    ]);
    assert!(
        fabric
            .ip(&["link", "set", "nbfab9", "master", "nbfab", "up"])
            .0
    );
    let a_vtep = model::mac_string(&model::vtep_mac(UL_A, VPC1));
    for args in [
        vec!["addr", "add", "10.254.0.9/24", "dev", "ul0"],
        vec!["link", "set", "ul0", "up"],
        vec![
            "link",
            "add",
            "nbxr",
            "type",
            "vxlan",
            "id",
            "257",
            "local",
            "10.254.0.9",
            "dstport",
            "4789",
            "nolearning",
            "dev",
            "ul0",
        ],
        vec!["link", "set", "nbxr", "up"],
        vec!["addr", "add", "10.0.1.77/24", "dev", "nbxr"],
        vec![
            "neigh",
            "replace",
            "10.0.1.10",
            "lladdr",
            &a_vtep,
            "dev",
            "nbxr",
            "nud",
            "permanent",
        ],
    ] {
        assert!(rogue.ip(&args).0, "{args:?}");
    }
    must(&[
        "ip",
        "netns",
        "exec",
        &rogue.name,
        "bridge",
        "fdb",
        "append",
        &a_vtep,
        "dev",
        "nbxr",
        "dst",
        "10.254.0.1",
    ]);
    let g1_udp = SocketAddr::from((g1.ip, 9999));
    assert!(
        udp_arrives(&g2.name(), &g1.name(), g1_udp),
        "legitimate VXLAN"
    );
    assert!(
        !udp_arrives(&rogue.name, &g1.name(), g1_udp),
        "VXLAN from a rogue host"
    );
    drop(rogue);

    // ARP speaks only for the instance: the gateway is answered (proxy ARP)
    // when g1 asks as itself, not when it claims a neighbour's address.
    let g1_mac = nubis_agent::host::firewall::render::parse_mac(&g1.mac).expect("mac");
    assert!(arp_answered(&g1.name(), g1_mac, g1.ip, g1.gw), "own ARP");
    assert!(
        !arp_answered(&g1.name(), g1_mac, g2.ip, g1.gw),
        "ARP for g2's address"
    );

    // Spoofing: a forged source address, then a forged MAC.
    assert!(
        g1.ns
            .ip(&["addr", "add", "10.0.1.99/32", "dev", "eth0", "nodad"])
            .0
    );
    let forged = run(&[
        "ip",
        "netns",
        "exec",
        &g1.name(),
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        "10.0.1.99",
        &g2.ip.to_string(),
    ]);
    assert!(!forged.0, "forged source address passed");
    assert!(g1.ns.ip(&["addr", "del", "10.0.1.99/32", "dev", "eth0"]).0);
    assert!(ping(&g1.name(), g2.ip));
    assert!(
        g1.ns
            .ip(&["link", "set", "eth0", "address", "02:4e:42:00:01:99"])
            .0
    );
    assert!(!ping(&g1.name(), g2.ip), "forged MAC passed");
    assert!(g1.ns.ip(&["link", "set", "eth0", "address", &g1.mac]).0);
    assert!(ping(&g1.name(), g2.ip));

    // Idempotence: a repeat, forced or not, changes nothing.
    let before = (a.snapshot(), b.snapshot());
    let s = a.apply(None, ports(&all, true), false);
    assert!(!s.changed(), "{s:?}");
    let s = a.apply(None, ports(&all, true), true);
    assert!(!s.kernel, "forced repeat changed routing: {s:?}");
    let s = b.apply(None, ports(&all, false), true);
    assert!(!s.kernel, "forced repeat changed routing: {s:?}");
    a.assert_unchanged(&before.0, "repeat");
    b.assert_unchanged(&before.1, "repeat");

    // Repair: a route, a rule, a neighbour and the nft table deleted.
    let t1 = (0x0100_0000 + VPC1).to_string();
    a.sh(&["ip", "route", "del", "10.0.1.20/32", "table", &t1]);
    a.sh(&["ip", "rule", "del", "pref", "50", "iif", &g1.tap]);
    b.sh(&["nft", "delete", "table", "inet", "nubis_vpc"]);
    assert!(!ping(&g1.name(), g2.ip), "tampering broke nothing?");
    let s = a.apply(None, ports(&all, true), true);
    assert!(s.kernel, "{s:?}");
    b.apply(None, ports(&all, false), true);
    assert!(ping(&g1.name(), g2.ip), "repaired");
    a.assert_unchanged(&before.0, "repair");
    b.assert_unchanged(&before.1, "repair");

    // A restarted agent (a new data plane from the same state file) keeps
    // everything as it is before any new view.
    let a = Host {
        ns: a.ns,
        vpc: Arc::new(VpcNet::new(
            Some(UL_A),
            None,
            Some(state.path().join("vpc-1.json")),
        )),
    };
    let s = a.apply(None, ports(&all, true), false);
    assert!(!s.kernel, "restart changed routing: {s:?}");
    assert!(ping(&g1.name(), g2.ip), "connectivity across the restart");

    // Security groups: g2 serves TCP 80 to members of sg-client only.
    let mut g1 = g1;
    let mut g2 = g2;
    let mut g3 = g3;
    g1.groups = vec!["sg-client"];
    g2.groups = vec!["sg-web"];
    g3.groups = vec!["sg-other"];
    let all = [&g1, &g2, &g3, &g4, &g5];
    let egress_all = || vec![rule("-1", -1, -1, "0.0.0.0/0", "")];
    let web = |allow: bool| {
        let mut g = open();
        let ingress = if allow {
            vec![rule("tcp", 80, 80, "", "sg-client")]
        } else {
            vec![]
        };
        g.push(("sg-web", ingress, egress_all()));
        g.push(("sg-client", vec![], egress_all()));
        g.push(("sg-other", vec![], egress_all()));
        g
    };
    let v2 = view(2, &all, &web(true));
    a.apply(Some(v2.clone()), ports(&all, true), false);
    b.apply(Some(v2), ports(&all, false), false);
    echo(&g2.name(), at(&g2, 80), life);
    echo(&g2.name(), at(&g2, 81), life);
    assert!(tcp_ok(&g1.name(), at(&g2, 80)), "member -> TCP 80");
    assert!(!tcp_ok(&g1.name(), at(&g2, 81)), "member -> TCP 81");
    assert!(!ping(&g1.name(), g2.ip), "member -> ICMP");
    assert!(!tcp_ok(&g3.name(), at(&g2, 80)), "non-member -> TCP 80");
    // g2's egress allows all, but g1's groups admit nothing inbound.
    assert_eq!(fetch(&g2.name(), at(&g1, 8080)), None);

    // Revoke: an established connection stops within about a second.
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let to = at(&g2, 80);
    let client = in_netns(&g1.name(), move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(100))).ok();
        let mut buf = [0u8; 8];
        let end = Instant::now() + Duration::from_secs(10);
        tx.send(Instant::now()).ok();
        while Instant::now() < end {
            if s.write_all(b"x").is_err() || !matches!(s.read(&mut buf), Ok(1)) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    rx.recv_timeout(Duration::from_secs(3)).expect("connected");
    std::thread::sleep(Duration::from_millis(300));
    let v3 = view(3, &all, &web(false));
    let revoked_at = Instant::now();
    let s = b.apply(Some(v3.clone()), ports(&all, false), false);
    eprintln!("revoking view applied on B in {:?}", s.took);
    assert!(s.nft && !s.kernel, "{s:?}");
    a.apply(Some(v3), ports(&all, true), false);
    let stopped = client.join().expect("client").expect("the flow went on");
    let cut = stopped.saturating_duration_since(revoked_at);
    eprintln!("established flow stopped {cut:?} after the revoke");
    assert!(cut < Duration::from_millis(1500), "{cut:?}");
    assert!(!tcp_ok(&g1.name(), at(&g2, 80)));

    // The network step of a launch on host A: TAP + routed port set-up
    // (sync of one more port) versus TAP on the bridge + firewall update.
    let base = ports(&all, true);
    let (routed, bridged) = a.run(move |rt, vpc| {
        rt.block_on(async {
            use nubis_agent::host::firewall::{render::Port, Firewall};
            use nubis_agent::host::tap;
            let mut routed = Vec::new();
            let mut ps = base.clone();
            for i in 1..=5u8 {
                let t0 = Instant::now();
                let name = format!("nbtlat{i}");
                tap::ensure_routed_tap(&name).await.expect("routed tap");
                ps.push(
                    LocalPort::new(
                        &format!("i-lat{i}"),
                        &name,
                        "02:4e:42:00:02:01",
                        Ipv4Addr::new(10, 0, 1, 100 + i),
                        Ipv4Addr::new(10, 0, 1, 1),
                        VPC1,
                    )
                    .expect("port"),
                );
                vpc.sync_ports(ps.clone(), false).await.expect("sync");
                routed.push(t0.elapsed());
            }
            let fw = Firewall::new(&nubis_agent::config::NetworkConfig {
                bridge: "nbbrlat".into(),
                tap_prefix: "nbtb".into(),
                ..Default::default()
            });
            tap::ensure_bridge_link("nbbrlat").await.expect("bridge");
            let mut fw_ports = std::collections::BTreeMap::new();
            let mut bridged = Vec::new();
            for i in 1..=5u8 {
                let t0 = Instant::now();
                let name = format!("nbtblat{i}");
                tap::ensure_tap(&name, "nbbrlat")
                    .await
                    .expect("bridged tap");
                fw_ports.insert(
                    name.clone(),
                    Port::new(&name, "02:4e:42:00:03:01", Ipv4Addr::new(10, 98, 0, 10 + i))
                        .expect("port"),
                );
                fw.apply(fw.rules(fw_ports.clone()), false)
                    .await
                    .expect("firewall");
                bridged.push(t0.elapsed());
            }
            fw.remove().await.expect("firewall removal");
            for i in 1..=5u8 {
                tap::delete_tap(&format!("nbtlat{i}")).await.expect("del");
                tap::delete_tap(&format!("nbtblat{i}")).await.expect("del");
            }
            tap::delete_tap("nbbrlat").await.expect("del bridge");
            vpc.sync_ports(base, false).await.expect("sync");
            (median(routed), median(bridged))
        })
    });
    eprintln!("launch network step (median of 5): routed VPC port {routed:?}, bridge port + firewall {bridged:?}");

    // Removal: g1 goes (its TAP first, as a terminate does), then all of A.
    a.sh(&["ip", "link", "del", &g1.tap]);
    let rest = [&g2, &g3, &g4, &g5];
    a.apply(None, ports(&rest, true), false);
    let rules = a.sh(&["ip", "rule", "show"]);
    assert!(!rules.contains(&g1.tap), "{rules}");
    assert!(a.ns.link_exists("nbx202"));
    a.sh(&["ip", "link", "del", &g4.tap]);
    a.apply(None, vec![], false);
    let snap = a.snapshot();
    for gone in ["nbx101", "nbx202", "lookup 1677", "nubis_vpc", "10.0.1.20"] {
        assert!(!snap.contains(gone), "{gone} left on A:\n{snap}");
    }
    // B keeps its own ports (its view still lists A's instances until the
    // control plane says otherwise).
    let routes = b.sh(&["ip", "route", "show", "table", &t1]);
    assert!(
        routes.contains(&format!("10.0.1.20 dev {}", g2.tap)),
        "{routes}"
    );
    b.run(|rt, v| rt.block_on(v.remove_all()).expect("remove B"));
    let snap = b.snapshot();
    for gone in ["nbx101", "lookup 1677", "nubis_vpc"] {
        assert!(!snap.contains(gone), "{gone} left on B:\n{snap}");
    }
}
