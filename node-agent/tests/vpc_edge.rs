//! Public addresses on the host (`nubis_agent::host::vpc::edge`) in the
//! kernel, with real packets and no KVM guest and no control plane: two
//! fake hosts and an "edge" namespace (the internet: 10.254.0.254, the
//! public pool 198.51.100.0/24 on-link) on one fabric bridge, fake guests
//! as namespaces behind veths named like TAPs. Each host's data plane is
//! driven directly with `NetworkView`s built here. Everything lives in
//! namespaces `nbag-*` this test creates and removes (also on failure).

mod common;
#[allow(dead_code)]
mod vpc_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fetch, in_netns, must, run, NetNs};
use nubis_agent::host::vpc::{LocalPort, NetView, Synced, VpcNet};
use nubis_proto::node::v1 as pb;
use vpc_support::udp_arrives;

const VPC1: u32 = 0x301;
const VPC2: u32 = 0x302;
const UL_A: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
const UL_B: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
const EDGE: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 254);

/// A fake guest.
struct Guest {
    ns: NetNs,
    id: String,
    tap: String,
    mac: String,
    ip: Ipv4Addr,
    vni: u32,
    on_a: bool,
    public: Option<Ipv4Addr>,
}

impl Guest {
    fn port(&self) -> LocalPort {
        let o = self.ip.octets();
        let gw = Ipv4Addr::new(o[0], o[1], o[2], 1);
        LocalPort::new(&self.id, &self.tap, &self.mac, self.ip, gw, self.vni).expect("port")
    }
    fn name(&self) -> String {
        self.ns.name.clone()
    }
}

fn guest(host: &NetNs, on_a: bool, i: u8, vni: u32, ip: Ipv4Addr, public: Option<&str>) -> Guest {
    let ns = NetNs::new();
    let tap = format!("nbtedg{i:02}");
    let mac = format!("02:4e:42:00:05:{i:02x}");
    let o = ip.octets();
    let gw = Ipv4Addr::new(o[0], o[1], o[2], 1);
    host.veth_to(&tap, &ns.name);
    assert!(host.ip(&["link", "set", &tap, "up"]).0);
    for args in [
        vec!["link", "set", "eth0", "address", &mac],
        vec!["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", &gw.to_string()],
    ] {
        assert!(ns.ip(&args).0, "{args:?}");
    }
    Guest {
        ns,
        id: format!("i-{i:017x}"),
        tap,
        mac,
        ip,
        vni,
        on_a,
        public: public.map(|p| p.parse().expect("public ip")),
    }
}

fn rule(proto: &str, from: i32, to: i32, cidr: &str) -> pb::SecurityRule {
    pb::SecurityRule {
        protocol: proto.into(),
        from_port: from,
        to_port: to,
        cidr: cidr.into(),
        peer_group_id: String::new(),
    }
}

/// The view of `guests`: subnet 10.0.1.0/24 of each VPC routes to an
/// internet gateway; group sg-web admits TCP 80 from anywhere and all from
/// the VPC, and lets everything out.
fn view(revision: i64, guests: &[&Guest]) -> NetView {
    let mut vpcs = Vec::new();
    for vni in [VPC1, VPC2] {
        let members: Vec<&&Guest> = guests.iter().filter(|g| g.vni == vni).collect();
        vpcs.push(pb::VpcView {
            vpc_id: format!("vpc-{vni:x}"),
            vni,
            cidr: "10.0.0.0/16".into(),
            subnets: vec![pb::SubnetView {
                subnet_id: "subnet-1".into(),
                cidr: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                internet_route: true,
            }],
            endpoints: members
                .iter()
                .map(|g| pb::Endpoint {
                    instance_id: g.id.clone(),
                    ip: g.ip.to_string(),
                    mac: g.mac.clone(),
                    subnet_id: "subnet-1".into(),
                    node_underlay_ip: if g.on_a { UL_A } else { UL_B }.to_string(),
                    node_id: if g.on_a { "node-a" } else { "node-b" }.into(),
                    security_group_ids: vec!["sg-web".into()],
                    public_ip: g.public.map(|p| p.to_string()).unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            security_groups: vec![pb::SecurityGroupView {
                group_id: "sg-web".into(),
                ingress: vec![
                    rule("tcp", 80, 80, "0.0.0.0/0"),
                    rule("-1", -1, -1, "10.0.0.0/16"),
                ],
                egress: vec![rule("-1", -1, -1, "0.0.0.0/0")],
            }],
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
    fn apply(&self, view: Option<NetView>, ports: Vec<LocalPort>, force: bool) -> Synced {
        let vpc = self.vpc.clone();
        in_netns(&self.ns.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Some(v) = view {
                    vpc.set_view(v).await.expect("set view");
                }
                vpc.sync_ports(ports, force).await.expect("sync")
            })
        })
        .join()
        .expect("host thread")
    }

    /// The agent's start-up check (finds the underlay device).
    fn check_underlay(&self) {
        let v = self.vpc.clone();
        in_netns(&self.ns.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(v.check_underlay()).expect("underlay")
        })
        .join()
        .expect("underlay check");
    }

    fn sh(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// The public-address objects (sorted lines).
    fn snapshot(&self) -> String {
        let mut s = self.sh(&["ip", "rule", "show"]);
        s += &self.sh(&["ip", "route", "show", "table", "all"]);
        s += &self.sh(&["ip", "neigh", "show", "proxy"]);
        let (ok, nft) = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns.name,
            "nft",
            "list",
            "table",
            "ip",
            "nubis_edge",
        ]);
        if ok {
            s += &nft;
        }
        let mut lines: Vec<&str> = s.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    }
}

fn ports(gs: &[&Guest], on_a: bool) -> Vec<LocalPort> {
    gs.iter()
        .filter(|g| g.on_a == on_a)
        .map(|g| g.port())
        .collect()
}

/// An HTTP server in `ns` on `addr` answering `<name> from <peer address>`
/// to every connection until `for_` has passed.
fn who(ns: &str, addr: SocketAddr, name: &'static str, for_: Duration) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("ready");
        let end = Instant::now() + for_;
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let body = format!("{name} from {}", peer.ip());
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = s.read(&mut [0u8; 512]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server up");
}

/// `curl http://<to>:<port>/` from `ns`: the body, or `None`.
fn curl(ns: &str, to: Ipv4Addr, port: u16) -> Option<String> {
    let url = format!("http://{to}:{port}/");
    let (ok, out) = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "curl",
        "-s",
        "-S",
        "--max-time",
        "2",
        &url,
    ]);
    ok.then_some(out)
}

/// What a guest gets from the edge's server (whose answer names the
/// source address it saw).
fn to_edge(g: &Guest) -> Option<String> {
    fetch(&g.name(), SocketAddr::from((EDGE, 8080)))
        .map(|s| s.split("\r\n\r\n").nth(1).map(str::to_string).unwrap_or(s))
}

#[test]
fn public_addresses_through_the_edge() {
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
        (run(&["curl", "--version"]).0, "curl (Debian package curl)"),
    ];
    for (ok, what) in checks {
        if !common::prerequisite(ok, what) {
            return;
        }
    }
    common::sweep_stale();
    let state = tempfile::tempdir().expect("state dir");

    // Fabric, two hosts and the edge.
    let fabric = NetNs::new();
    assert!(fabric.ip(&["link", "add", "nbfab", "type", "bridge"]).0);
    assert!(fabric.ip(&["link", "set", "nbfab", "up"]).0);
    let plug = |ns: &NetNs, addr: Ipv4Addr, n: u8| {
        let port = format!("nbfab{n}");
        must(&[
            "ip",
            "link",
            "add",
            "ul0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &fabric.name,
        ]);
        assert!(
            fabric
                .ip(&["link", "set", &port, "master", "nbfab", "up"])
                .0
        );
        assert!(
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "ul0"])
                .0
        );
        assert!(ns.ip(&["link", "set", "ul0", "up"]).0);
    };
    let edge = NetNs::new();
    plug(&edge, EDGE, 9);
    // The public pool is on-link at the edge; the VPCs' private block is
    // routed to host A, which must never forward it.
    assert!(
        edge.ip(&["route", "add", "198.51.100.0/24", "dev", "ul0"])
            .0
    );
    for block in ["10.0.0.0/16", "10.200.0.0/16"] {
        assert!(
            edge.ip(&["route", "add", block, "via", &UL_A.to_string()])
                .0
        );
    }
    let mk_host = |ul: Ipv4Addr, n: u8| {
        let ns = NetNs::new();
        plug(&ns, ul, n);
        let file = state.path().join(format!("vpc-{n}.json"));
        let vpc = VpcNet::new(Some(ul), None, Some(file)).with_edge_gateway(Some(EDGE));
        let h = Host {
            ns,
            vpc: Arc::new(vpc),
        };
        h.check_underlay();
        h
    };
    let a = mk_host(UL_A, 1);
    let b = mk_host(UL_B, 2);
    // A legacy bridge on A with a guest (10.200.0.10), which the underlay
    // must not reach through A once A forwards for public addresses.
    let legacy = NetNs::new();
    for args in [
        vec!["link", "add", "nbleg", "type", "bridge"],
        vec!["addr", "add", "10.200.0.1/24", "dev", "nbleg"],
        vec!["link", "set", "nbleg", "up"],
    ] {
        assert!(a.ns.ip(&args).0, "{args:?}");
    }
    a.ns.veth_to("nblegt1", &legacy.name);
    assert!(
        a.ns.ip(&["link", "set", "nblegt1", "master", "nbleg", "up"])
            .0
    );
    for args in [
        vec!["addr", "add", "10.200.0.10/24", "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", "10.200.0.1"],
    ] {
        assert!(legacy.ip(&args).0, "{args:?}");
    }
    let forwarding = |h: &Host| {
        h.sh(&["cat", "/proc/sys/net/ipv4/conf/ul0/forwarding"])
            .trim()
            .to_string()
    };
    assert_eq!(forwarding(&a), "0");

    let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
    // VPC 1 on A: g1 public, g2 private. VPC 2, the same addresses: g3 on A
    // and g4 on B, both public.
    let g1 = guest(&a.ns, true, 1, VPC1, ip("10.0.1.10"), Some("198.51.100.10"));
    let g2 = guest(&a.ns, true, 2, VPC1, ip("10.0.1.11"), None);
    let g3 = guest(&a.ns, true, 3, VPC2, ip("10.0.1.10"), Some("198.51.100.20"));
    let g4 = guest(
        &b.ns,
        false,
        4,
        VPC2,
        ip("10.0.1.11"),
        Some("198.51.100.30"),
    );
    let all = [&g1, &g2, &g3, &g4];
    let life = Duration::from_secs(120);
    for (g, name) in [(&g1, "g1"), (&g2, "g2"), (&g3, "g3"), (&g4, "g4")] {
        who(&g.name(), SocketAddr::from((g.ip, 80)), name, life);
        who(&g.name(), SocketAddr::from((g.ip, 81)), name, life);
    }
    who(&edge.name, SocketAddr::from((EDGE, 8080)), "edge", life);

    let t0 = Instant::now();
    let s = a.apply(Some(view(1, &all)), ports(&all, true), false);
    eprintln!("view with public addresses applied on A in {:?}", s.took);
    b.apply(Some(view(1, &all)), ports(&all, false), false);
    eprintln!("both hosts applied in {:?}", t0.elapsed());
    assert_eq!(a.vpc.status().public_addresses, 2);
    assert_eq!(b.vpc.status().public_addresses, 1);

    // The edge reaches each public instance through its address (ARP
    // answered by the right host), and the instance sees the edge's
    // address; the two VPCs' 10.0.1.10 are told apart.
    let from_edge = format!("from {EDGE}");
    for (p, name) in [
        ("198.51.100.10", "g1"),
        ("198.51.100.20", "g3"),
        ("198.51.100.30", "g4"),
    ] {
        let t = Instant::now();
        let got = curl(&edge.name, ip(p), 80);
        eprintln!("edge -> {p}: {got:?} in {:?}", t.elapsed());
        assert_eq!(got, Some(format!("{name} {from_edge}")), "edge -> {p}");
    }
    // Ingress rules apply: TCP 81 is not open to the world.
    assert_eq!(curl(&edge.name, ip("198.51.100.10"), 81), None);
    // The instances reach the edge from their public addresses.
    assert_eq!(to_edge(&g1).as_deref(), Some("edge from 198.51.100.10"));
    assert_eq!(to_edge(&g3).as_deref(), Some("edge from 198.51.100.20"));
    assert_eq!(to_edge(&g4).as_deref(), Some("edge from 198.51.100.30"));
    // No public address: no way out, no way in; private addresses are never
    // reachable from the underlay.
    assert_eq!(to_edge(&g2), None, "a private instance reached the edge");
    for to in [g1.ip, g2.ip] {
        assert_eq!(curl(&edge.name, to, 80), None, "edge -> private {to}");
    }
    // A forwards from the underlay now (it did not before), but only the
    // public traffic: the legacy guest stays out of reach.
    assert_eq!(forwarding(&a), "1");
    // (One way is enough to harm: UDP, as the legacy bridge itself does
    // not forward replies.)
    let to_legacy = SocketAddr::from(([10, 200, 0, 10], 9999));
    assert!(
        !udp_arrives(&edge.name, &legacy.name, to_legacy),
        "edge -> legacy guest"
    );
    // Inside the VPC nothing changed.
    assert_eq!(
        fetch(&g2.name(), SocketAddr::from((g1.ip, 81))).map(|s| s.ends_with("g1 from 10.0.1.11")),
        Some(true)
    );

    // Idempotence: a repeat, forced or not, changes nothing.
    let before = a.snapshot();
    assert!(before.contains("nubis_edge"), "{before}");
    let s = a.apply(None, ports(&all, true), false);
    assert!(!s.changed(), "{s:?}");
    let s = a.apply(None, ports(&all, true), true);
    assert!(!s.kernel, "forced repeat changed routing: {s:?}");
    assert_eq!(a.snapshot(), before);

    // Repair: the proxy neighbour, the mark rule and the table deleted.
    a.sh(&["ip", "neigh", "del", "proxy", "198.51.100.10", "dev", "ul0"]);
    a.sh(&["ip", "rule", "del", "pref", "50", "fwmark", "0x1000301"]);
    a.sh(&["nft", "delete", "table", "ip", "nubis_edge"]);
    edge.ip(&["neigh", "flush", "dev", "ul0"]);
    assert_eq!(curl(&edge.name, ip("198.51.100.10"), 80), None, "tampered");
    let s = a.apply(None, ports(&all, true), true);
    assert!(s.kernel && s.nft, "{s:?}");
    assert_eq!(a.snapshot(), before);
    // The edge remembers its failed resolution for a moment: forget it.
    edge.ip(&["neigh", "flush", "dev", "ul0"]);
    assert_eq!(
        curl(&edge.name, ip("198.51.100.10"), 80),
        Some(format!("g1 {from_edge}")),
        "repaired"
    );

    // A restarted agent keeps everything before any new view.
    let a = Host {
        ns: a.ns,
        vpc: Arc::new(
            VpcNet::new(Some(UL_A), None, Some(state.path().join("vpc-1.json")))
                .with_edge_gateway(Some(EDGE)),
        ),
    };
    a.check_underlay();
    let s = a.apply(None, ports(&all, true), false);
    assert!(!s.kernel, "restart changed routing: {s:?}");
    assert_eq!(a.snapshot(), before);
    assert_eq!(to_edge(&g1).as_deref(), Some("edge from 198.51.100.10"));

    // Disassociate: g1's address goes (a new view without it). The edge no
    // longer reaches it, it no longer reaches the edge; g3 keeps both.
    let mut g1 = g1;
    g1.public = None;
    let all = [&g1, &g2, &g3, &g4];
    let t = Instant::now();
    let s = a.apply(Some(view(2, &all)), ports(&all, true), false);
    eprintln!(
        "disassociation applied on A in {:?} ({:?} with the call)",
        s.took,
        t.elapsed()
    );
    assert!(s.kernel && s.nft, "{s:?}");
    assert_eq!(a.vpc.status().public_addresses, 1);
    assert_eq!(curl(&edge.name, ip("198.51.100.10"), 80), None);
    assert_eq!(to_edge(&g1), None, "g1 reached the edge without an address");
    assert_eq!(
        curl(&edge.name, ip("198.51.100.20"), 80),
        Some(format!("g3 {from_edge}"))
    );
    assert_eq!(to_edge(&g3).as_deref(), Some("edge from 198.51.100.20"));
    let routes = a.sh(&[
        "ip",
        "route",
        "show",
        "table",
        &(0x0100_0000 + VPC1).to_string(),
    ]);
    assert!(routes.contains("blackhole default"), "{routes}");
    let proxies = a.sh(&["ip", "neigh", "show", "proxy"]);
    assert!(!proxies.contains("198.51.100.10"), "{proxies}");

    // The last public instance of A goes (its TAP first, as a terminate
    // does): nothing of the edge is left on A.
    a.sh(&["ip", "link", "del", &g3.tap]);
    a.apply(None, ports(&[&g1, &g2], true), false);
    let snap = a.snapshot();
    for gone in [
        "nubis_edge",
        "198.51.100",
        "fwmark",
        "proto 78",
        "via 10.254.0.254",
    ] {
        assert!(!snap.contains(gone), "{gone} left on A:\n{snap}");
    }
    assert_eq!(
        forwarding(&a),
        "0",
        "A's underlay forwarding switched back off"
    );
    // B untouched until told; then removed whole.
    assert_eq!(
        curl(&edge.name, ip("198.51.100.30"), 80),
        Some(format!("g4 {from_edge}"))
    );
    let vpc = b.vpc.clone();
    in_netns(&b.ns.name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(vpc.remove_all()).expect("remove B")
    })
    .join()
    .expect("remove");
    let snap = b.snapshot();
    for gone in [
        "nubis_edge",
        "198.51.100",
        "fwmark",
        "proto 78",
        "via 10.254.0.254",
    ] {
        assert!(!snap.contains(gone), "{gone} left on B:\n{snap}");
    }
}
