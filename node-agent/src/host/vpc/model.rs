//! The VPC data plane as data: the control plane's view ([`NetView`],
//! validated from the Node API's `NetworkView`), this host's routed ports
//! ([`LocalPort`], from the instances' `net.json`) and what the host must
//! hold for both ([`Plan`]). Pure: no I/O, so every decision is unit-tested.
//!
//! A VPC is present on the host exactly while one of its instances has a
//! routed port here (the view only adds what those ports may reach and who
//! may reach them): a terminated instance's routes, rules and device go at
//! once, without waiting for the next view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::firewall::render::{parse_mac, valid_ifname};

/// Largest VXLAN network identifier.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Routing table of a VPC: this plus its VNI.
pub const TABLE_BASE: u32 = 0x0100_0000;

/// The routing table of the VPC with `vni`.
pub fn table_of(vni: u32) -> u32 {
    TABLE_BASE + vni
}

/// The VXLAN device of the VPC with `vni`: `nbx<vni in hex>`.
pub fn vxlan_name(vni: u32) -> String {
    format!("nbx{vni:x}")
}

/// The MAC of a VXLAN tunnel endpoint, derived from its underlay address and
/// the VNI so that every host computes every other host's without asking:
/// locally administered, unicast (`06:` + 5 bytes of SHA-256).
pub fn vtep_mac(underlay: Ipv4Addr, vni: u32) -> [u8; 6] {
    let mut h = Sha256::new();
    h.update(b"nubis-vtep");
    h.update(underlay.octets());
    h.update(vni.to_be_bytes());
    let d = h.finalize();
    [0x06, d[0], d[1], d[2], d[3], d[4]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// An IPv4 block `a.b.c.d/n` (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; host bits must be clear.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        (u32::from(addr) & !mask == 0).then_some(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The IP protocol a security-group rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Proto {
    /// Every protocol (`-1`).
    All,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// Another IP protocol by number.
    Other(u8),
}

impl Proto {
    /// Parses the Node API's protocol: a name, `-1`/`all`, or a number.
    pub fn parse(s: &str) -> Option<Proto> {
        Some(match s.to_ascii_lowercase().as_str() {
            "-1" | "all" => Proto::All,
            "tcp" | "6" => Proto::Tcp,
            "udp" | "17" => Proto::Udp,
            "icmp" | "1" => Proto::Icmp,
            n => Proto::Other(n.parse().ok()?),
        })
    }

    /// The protocol number (`None` for all).
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::All => None,
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Icmp => Some(1),
            Proto::Other(n) => Some(n),
        }
    }
}

/// Who a rule allows: an address block or the members of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    /// An IPv4 block.
    Cidr(Cidr),
    /// The members of a security group of the same VPC.
    Group(String),
}

/// One permission of a security group, validated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SgRule {
    /// Protocol.
    pub proto: Proto,
    /// TCP/UDP: first port of the range; ICMP: the type; -1: any.
    pub from: i32,
    /// TCP/UDP: last port (inclusive); ICMP: the code; -1: any.
    pub to: i32,
    /// The peer.
    pub peer: Peer,
}

impl SgRule {
    /// Validates one rule of the view; `None` (the rule is left out, which
    /// allows less) when it is malformed.
    pub fn new(proto: &str, from: i32, to: i32, cidr: &str, group: &str) -> Option<SgRule> {
        let proto = Proto::parse(proto)?;
        let peer = match (cidr.is_empty(), group.is_empty()) {
            (false, true) => Peer::Cidr(Cidr::parse(cidr)?),
            (true, false) if valid_name(group) => Peer::Group(group.to_string()),
            _ => return None,
        };
        let (from, to) = match proto {
            Proto::Tcp | Proto::Udp => {
                if from < 0 || to < 0 {
                    (-1, -1)
                } else if from <= to && to <= 65535 {
                    (from, to)
                } else {
                    return None;
                }
            }
            Proto::Icmp => {
                if from > 255 || to > 255 || (from < 0 && to >= 0) {
                    return None;
                }
                (from.max(-1), to.max(-1))
            }
            Proto::All | Proto::Other(_) => (-1, -1),
        };
        Some(SgRule {
            proto,
            from,
            to,
            peer,
        })
    }
}

/// True for ids usable in nft object names: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A security group with its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Group {
    /// Inbound permissions.
    pub ingress: Vec<SgRule>,
    /// Outbound permissions.
    pub egress: Vec<SgRule>,
}

/// The key of an instance's interface in [`VpcView::endpoints`]: the
/// instance id for its primary interface (device index 0), else
/// `<id>#<device index>`.
pub fn endpoint_key(instance_id: &str, device_index: u32) -> String {
    match device_index {
        0 => instance_id.to_string(),
        n => format!("{instance_id}#{n}"),
    }
}

/// One network interface of an instance of a VPC, on any host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Instance id.
    pub instance_id: String,
    /// Which of its interfaces (0: the primary one).
    #[serde(default)]
    pub device_index: u32,
    /// Private address.
    pub ip: Ipv4Addr,
    /// MAC.
    pub mac: [u8; 6],
    /// Underlay address of its host (`None`: unknown, unreachable).
    pub underlay: Option<Ipv4Addr>,
    /// Its current security groups.
    pub groups: BTreeSet<String>,
    /// Its public address (elastic or auto-assigned), when it has one
    /// ([`valid_public`]).
    #[serde(default)]
    pub public_ip: Option<Ipv4Addr>,
}

/// A subnet of a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Subnet id.
    pub id: String,
    /// Its block.
    pub cidr: Cidr,
    /// Its router (answered by proxy ARP).
    pub gateway: Ipv4Addr,
    /// Its route table sends 0.0.0.0/0 to an internet gateway: its
    /// instances with a public address reach the edge (`super::edge`).
    #[serde(default)]
    pub internet_route: bool,
}

impl Cidr {
    /// True when `ip` is in the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        };
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

/// True for an address usable as a public address: unicast, not
/// unspecified, loopback, link-local, multicast or broadcast.
pub fn valid_public(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.octets()[0] == 0)
}

/// One VPC of the view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcView {
    /// VPC id.
    pub vpc_id: String,
    /// Its VXLAN network identifier.
    pub vni: u32,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Instances' interfaces by [`endpoint_key`].
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Security groups by id.
    pub groups: BTreeMap<String, Group>,
}

/// The control plane's view of the VPCs this host takes part in, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetView {
    /// The etcd revision it reflects.
    pub revision: i64,
    /// VPCs by VNI.
    pub vpcs: BTreeMap<u32, VpcView>,
}

impl NetView {
    /// Validates a `NetworkView` from the control plane. Malformed entries
    /// are left out and logged (a left-out endpoint is unreachable, a
    /// left-out rule allows nothing); a VPC with a bad VNI is left out.
    pub fn from_proto(v: &nubis_proto::node::v1::NetworkView) -> NetView {
        let mut vpcs = BTreeMap::new();
        for p in &v.vpcs {
            if p.vni == 0 || p.vni > MAX_VNI {
                tracing::warn!(
                    vpc = p.vpc_id,
                    vni = p.vni,
                    "network view: VPC with a bad VNI left out"
                );
                continue;
            }
            let subnets = p
                .subnets
                .iter()
                .filter_map(|s| {
                    let subnet = (|| {
                        Some(Subnet {
                            id: s.subnet_id.clone(),
                            cidr: Cidr::parse(&s.cidr)?,
                            gateway: s.gateway.parse().ok()?,
                            internet_route: s.internet_route,
                        })
                    })();
                    if subnet.is_none() {
                        tracing::warn!(subnet = s.subnet_id, "network view: bad subnet left out");
                    }
                    subnet
                })
                .collect();
            let mut endpoints = BTreeMap::new();
            for e in &p.endpoints {
                let ep = (|| {
                    Some(Endpoint {
                        instance_id: e.instance_id.clone(),
                        device_index: e.device_index,
                        ip: e.ip.parse().ok()?,
                        mac: parse_mac(&e.mac)?,
                        underlay: e.node_underlay_ip.parse().ok(),
                        groups: e
                            .security_group_ids
                            .iter()
                            .filter(|g| valid_name(g))
                            .cloned()
                            .collect(),
                        public_ip: public_ip(e),
                    })
                })();
                match ep {
                    Some(ep) => {
                        endpoints.insert(endpoint_key(&ep.instance_id, ep.device_index), ep);
                    }
                    None => tracing::warn!(
                        instance = e.instance_id,
                        "network view: bad endpoint left out"
                    ),
                }
            }
            let mut groups = BTreeMap::new();
            for g in &p.security_groups {
                if !valid_name(&g.group_id) {
                    tracing::warn!(group = g.group_id, "network view: bad group id left out");
                    continue;
                }
                let conv = |rules: &[nubis_proto::node::v1::SecurityRule]| {
                    rules
                        .iter()
                        .filter_map(|r| {
                            let rule = SgRule::new(
                                &r.protocol,
                                r.from_port,
                                r.to_port,
                                &r.cidr,
                                &r.peer_group_id,
                            );
                            if rule.is_none() {
                                tracing::warn!(
                                    group = g.group_id,
                                    ?r,
                                    "network view: bad rule left out"
                                );
                            }
                            rule
                        })
                        .collect()
                };
                groups.insert(
                    g.group_id.clone(),
                    Group {
                        ingress: conv(&g.ingress),
                        egress: conv(&g.egress),
                    },
                );
            }
            vpcs.insert(
                p.vni,
                VpcView {
                    vpc_id: p.vpc_id.clone(),
                    vni: p.vni,
                    subnets,
                    endpoints,
                    groups,
                },
            );
        }
        NetView {
            revision: v.revision,
            vpcs,
        }
    }
}

/// The validated public address of `e` (`None` when it has none; a bad one
/// is left out and logged: the instance then has no public traffic).
fn public_ip(e: &nubis_proto::node::v1::Endpoint) -> Option<Ipv4Addr> {
    if e.public_ip.is_empty() {
        return None;
    }
    let ip = e
        .public_ip
        .trim()
        .parse()
        .ok()
        .filter(|ip| valid_public(*ip));
    if ip.is_none() {
        tracing::warn!(
            instance = e.instance_id,
            public_ip = e.public_ip,
            "network view: bad public address left out"
        );
    }
    ip
}

/// A routed port of this host: one network interface of an instance of a
/// VPC with its TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPort {
    /// Instance id.
    pub instance_id: String,
    /// Which of its interfaces (0: the primary one).
    pub device_index: u32,
    /// TAP (or, in tests, a veth end named like one).
    pub tap: String,
    /// The instance's MAC.
    pub mac: [u8; 6],
    /// The instance's address.
    pub ip: Ipv4Addr,
    /// Its subnet's gateway.
    pub gateway: Ipv4Addr,
    /// Its VPC's VNI.
    pub vni: u32,
}

impl LocalPort {
    /// Validates a port from a recorded allocation.
    pub fn new(
        instance_id: &str,
        tap: &str,
        mac: &str,
        ip: Ipv4Addr,
        gateway: Ipv4Addr,
        vni: u32,
    ) -> Option<LocalPort> {
        let mac_bytes = parse_mac(mac)?;
        (valid_ifname(tap) && vni != 0 && vni <= MAX_VNI && mac_bytes[0] & 1 == 0).then(|| {
            LocalPort {
                instance_id: instance_id.to_string(),
                device_index: 0,
                tap: tap.to_string(),
                mac: mac_bytes,
                ip,
                gateway,
                vni,
            }
        })
    }

    /// The same port as the instance's interface at `device_index`.
    pub fn at(self, device_index: u32) -> LocalPort {
        LocalPort {
            device_index,
            ..self
        }
    }

    /// Its key in [`VpcView::endpoints`].
    pub fn key(&self) -> String {
        endpoint_key(&self.instance_id, self.device_index)
    }
}

/// A local port as the host enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The port.
    pub port: LocalPort,
    /// Its security groups when the view lists it; `None`: not listed yet
    /// (all its traffic is dropped).
    pub groups: Option<BTreeSet<String>>,
}

/// An instance of the VPC on another host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    /// Its host's underlay address.
    pub underlay: Ipv4Addr,
    /// Its host's VTEP MAC for this VNI.
    pub vtep_mac: [u8; 6],
}

/// One VPC as this host enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcPlan {
    /// VNI.
    pub vni: u32,
    /// Conntrack zone (unique on this host).
    pub zone: u16,
    /// The VXLAN device and its MAC (`None`: no underlay address).
    pub vxlan: Option<(String, [u8; 6])>,
    /// Gateways answered by proxy ARP.
    pub gateways: BTreeSet<Ipv4Addr>,
    /// Local ports by TAP.
    pub ports: BTreeMap<String, PortPlan>,
    /// Remote instances by address.
    pub remotes: BTreeMap<Ipv4Addr, Remote>,
    /// Member addresses of every group some local port's rule names (and of
    /// the local ports' groups).
    pub members: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// The groups' rules (from the view).
    pub groups: BTreeMap<String, Group>,
}

/// Everything the host must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// This host's VTEP address.
    pub underlay: Option<Ipv4Addr>,
    /// The device carrying it (VXLAN `dev`).
    pub underlay_dev: Option<String>,
    /// VPCs by VNI.
    pub vpcs: BTreeMap<u32, VpcPlan>,
    /// Public addresses of local instances (`super::edge::plan`; empty
    /// from [`plan`]).
    pub edge: super::edge::EdgePlan,
}

/// Chooses a conntrack zone for every VNI in `vnis`: an existing one is
/// kept, a new one is the VNI's low 16 bits when free, else the next free
/// one. Zones of VNIs not in `vnis` are forgotten. Returns whether `zones`
/// changed.
pub fn assign_zones(zones: &mut BTreeMap<u32, u16>, vnis: &BTreeSet<u32>) -> bool {
    let before = zones.clone();
    zones.retain(|v, _| vnis.contains(v));
    for &vni in vnis {
        if zones.contains_key(&vni) {
            continue;
        }
        let used: BTreeSet<u16> = zones.values().copied().collect();
        let start = (vni & 0xffff) as u16;
        let zone = (0..=u16::MAX)
            .map(|i| start.wrapping_add(i))
            .find(|z| *z != 0 && !used.contains(z))
            .unwrap_or(1);
        zones.insert(vni, zone);
    }
    *zones != before
}

/// What the host must hold for `ports` given `view` (see the module doc).
/// `zones` must have a zone for each port's VNI ([`assign_zones`]).
pub fn plan(
    ports: &[LocalPort],
    view: Option<&NetView>,
    underlay: Option<Ipv4Addr>,
    underlay_dev: Option<&str>,
    zones: &BTreeMap<u32, u16>,
) -> Plan {
    let mut vpcs: BTreeMap<u32, VpcPlan> = BTreeMap::new();
    for p in ports {
        let v = view.and_then(|v| v.vpcs.get(&p.vni));
        let listed = v
            .and_then(|v| v.endpoints.get(&p.key()))
            .filter(|e| e.ip == p.ip);
        let vp = vpcs.entry(p.vni).or_insert_with(|| VpcPlan {
            vni: p.vni,
            zone: zones.get(&p.vni).copied().unwrap_or(1),
            vxlan: underlay.map(|u| (vxlan_name(p.vni), vtep_mac(u, p.vni))),
            gateways: BTreeSet::new(),
            ports: BTreeMap::new(),
            remotes: BTreeMap::new(),
            members: BTreeMap::new(),
            groups: BTreeMap::new(),
        });
        vp.gateways.insert(p.gateway);
        vp.ports.insert(
            p.tap.clone(),
            PortPlan {
                port: p.clone(),
                groups: listed.map(|e| e.groups.clone()),
            },
        );
    }
    let local_keys: BTreeSet<String> = ports.iter().map(LocalPort::key).collect();
    for vp in vpcs.values_mut() {
        let Some(v) = view.and_then(|v| v.vpcs.get(&vp.vni)) else {
            continue;
        };
        vp.gateways.extend(v.subnets.iter().map(|s| s.gateway));
        let local_ips: BTreeSet<Ipv4Addr> = vp.ports.values().map(|p| p.port.ip).collect();
        if let Some(own) = underlay {
            for (key, e) in &v.endpoints {
                let remote = e.underlay.filter(|u| *u != own && !u.is_unspecified());
                if let (Some(u), false, false) =
                    (remote, local_keys.contains(key), local_ips.contains(&e.ip))
                {
                    vp.remotes.insert(
                        e.ip,
                        Remote {
                            underlay: u,
                            vtep_mac: vtep_mac(u, vp.vni),
                        },
                    );
                }
            }
        }
        // The groups of listed local ports, and every group their rules
        // name as a peer.
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for p in vp.ports.values() {
            for g in p.groups.iter().flatten() {
                wanted.insert(g.clone());
            }
        }
        for g in wanted.clone() {
            if let Some(rules) = v.groups.get(&g) {
                for r in rules.ingress.iter().chain(&rules.egress) {
                    if let Peer::Group(peer) = &r.peer {
                        wanted.insert(peer.clone());
                    }
                }
                vp.groups.insert(g, rules.clone());
            }
        }
        for g in wanted {
            let ips = v
                .endpoints
                .values()
                .filter(|e| e.groups.contains(&g))
                .map(|e| e.ip)
                .collect();
            vp.members.insert(g, ips);
        }
    }
    Plan {
        underlay,
        underlay_dev: underlay_dev.map(str::to_string),
        vpcs,
        edge: Default::default(),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
