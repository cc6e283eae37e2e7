//! Public addresses on the host: EC2's internet gateway as 1:1 NAT between
//! the underlay (towards the edge, `[network] edge_gateway`) and the local
//! instances whose view endpoint has a public address and whose subnet
//! routes to an internet gateway (docs/networking.md, "Public addresses on
//! the host").
//!
//! For each such instance this module owns:
//! * ARP for the public address on the underlay device: a main-table route
//!   `<public>/32 dev lo proto 78` (through another device than the
//!   underlay, so the kernel's `arp_process` answers the proxy neighbour;
//!   lo because kernels without dummy devices exist) and a proxy neighbour
//!   `<public> dev <underlay>`; the underlay device forwards
//!   (`conf/<dev>/forwarding`; when the agent switched it on, it forwards
//!   nothing else and is switched off with the last public instance) and
//!   answers at once (`proxy_delay` 0);
//! * `ip rule fwmark <table> lookup <table>` (at [`RULE_PRIO`]) for the
//!   VPC's table, whose blackhole default becomes `default via <edge
//!   gateway> dev <underlay>` (`links::Route::Default`);
//! * the `ip nubis_edge` nftables table ([`render`]): packets from the
//!   underlay to a public address get the VPC's conntrack zone and the
//!   VPC's table as mark (raw prerouting), are DNATed to the private
//!   address; the instance's packets to the underlay are SNATed to its
//!   public address; forwarding between routed TAPs and the underlay passes
//!   only NATed traffic of public instances. The security groups of `inet
//!   nubis_vpc` still apply (ingress rules see the edge's address).
//!
//! [`plan`] and [`render`] are pure; [`EdgeKernel`] is the routing side as
//! data with its diff ([`commands`]) and its listing parser ([`parse`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::links::RULE_PRIO;
use super::model::{table_of, NetView, Plan, TABLE_BASE};
use crate::error::{Error, Result};

/// The nftables table (family `ip`).
pub const TABLE: &str = "nubis_edge";
/// Route protocol tagging the agent's main-table routes of public
/// addresses (so they are told from anyone else's).
pub const ROUTE_PROTO: u32 = 78;
/// The device those routes leave through (not the underlay device).
pub const SINK: &str = "lo";

/// A local instance reached through its public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// Its VPC's VNI.
    pub vni: u32,
    /// Its VPC's conntrack zone.
    pub zone: u16,
    /// Its routed port.
    pub tap: String,
    /// Its private address.
    pub private: Ipv4Addr,
}

/// The public side of the host's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgePlan {
    /// The next hop towards the edge (set when `publics` is not empty).
    pub gateway: Option<Ipv4Addr>,
    /// The underlay device (set when `publics` is not empty).
    pub dev: Option<String>,
    /// Public instances by public address.
    pub publics: BTreeMap<Ipv4Addr, Public>,
    /// Public instances left out: no edge gateway or no underlay device.
    pub unserved: usize,
    /// Public addresses claimed by more than one local instance (left out).
    pub conflicts: BTreeSet<Ipv4Addr>,
}

impl EdgePlan {
    /// The default route of the VPC `vni`'s table when it has a public
    /// instance here: (edge gateway, underlay device).
    pub fn default_route(&self, vni: u32) -> Option<(Ipv4Addr, &str)> {
        if !self.publics.values().any(|p| p.vni == vni) {
            return None;
        }
        Some((self.gateway?, self.dev.as_deref()?))
    }

    /// The routed ports of public instances.
    pub fn taps(&self) -> BTreeSet<&str> {
        self.publics.values().map(|p| p.tap.as_str()).collect()
    }
}

/// The public instances of `plan` given `view`: local, listed ports (same
/// address in the view) whose endpoint has a public address and whose
/// subnet (the view's subnet holding the address) has `internet_route`.
/// Without `gateway` or an underlay device none is served (`unserved`).
pub fn plan(plan: &Plan, view: Option<&NetView>, gateway: Option<Ipv4Addr>) -> EdgePlan {
    let mut found: BTreeMap<Ipv4Addr, Vec<Public>> = BTreeMap::new();
    for vp in plan.vpcs.values() {
        let Some(v) = view.and_then(|v| v.vpcs.get(&vp.vni)) else {
            continue;
        };
        for (tap, p) in &vp.ports {
            if p.groups.is_none() {
                continue;
            }
            let Some(public) = v
                .endpoints
                .get(&p.port.key())
                .filter(|e| e.ip == p.port.ip)
                .and_then(|e| e.public_ip)
            else {
                continue;
            };
            let routed = v
                .subnets
                .iter()
                .any(|s| s.internet_route && s.cidr.contains(p.port.ip));
            if routed {
                found.entry(public).or_default().push(Public {
                    vni: vp.vni,
                    zone: vp.zone,
                    tap: tap.clone(),
                    private: p.port.ip,
                });
            }
        }
    }
    let mut out = EdgePlan::default();
    for (ip, mut ps) in found {
        if ps.len() > 1 {
            out.conflicts.insert(ip);
        } else if let Some(p) = ps.pop() {
            out.publics.insert(ip, p);
        }
    }
    match (gateway, plan.underlay_dev.as_deref()) {
        (Some(g), Some(d)) if !out.publics.is_empty() => {
            out.gateway = Some(g);
            out.dev = Some(d.to_string());
        }
        _ => {
            out.unserved = out.publics.len();
            out.publics.clear();
        }
    }
    out
}

fn m(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn daddr() -> Value {
    json!({"payload": {"protocol": "ip", "field": "daddr"}})
}

fn set<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
    json!({"set": items.into_iter().map(Into::into).collect::<Vec<Value>>()})
}

fn base_chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {"family": "ip", "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept"}}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "ip", "table": TABLE, "chain": chain, "expr": expr}}})
}

/// The batch that makes `ip nubis_edge` hold exactly what `plan.edge`
/// needs (removed when it has no public instance). `plan`'s routed ports
/// are all kept from the underlay unless NATed. `own_forwarding`: the
/// agent switched forwarding on for the underlay device, which then
/// forwards nothing but public traffic (else only the agent's devices and
/// marks are kept from it).
pub fn render(plan: &Plan, own_forwarding: bool) -> Value {
    let table = json!({"family": "ip", "name": TABLE});
    let mut out = vec![
        json!({"add": {"table": table.clone()}}),
        json!({"delete": {"table": table.clone()}}),
    ];
    let e = &plan.edge;
    let Some(ul) = e.dev.as_deref().filter(|_| !e.publics.is_empty()) else {
        return json!({ "nftables": out });
    };
    out.push(json!({"add": {"table": table}}));
    let iif_ul = || m(meta("iifname"), "==", json!(ul));
    let oif_ul = || m(meta("oifname"), "==", json!(ul));
    let pairs = |f: &dyn Fn(&Public) -> Value| {
        set(e
            .publics
            .iter()
            .map(|(ip, p)| json!([ip.to_string(), f(p)])))
    };

    // Raw prerouting (before conntrack): the VPC's zone and table.
    out.push(base_chain("pre", "filter", "prerouting", -300));
    out.push(rule(
        "pre",
        vec![
            iif_ul(),
            json!({"mangle": {"key": {"ct": {"key": "zone"}},
                "value": {"map": {"key": daddr(), "data": pairs(&|p| json!(p.zone))}}}}),
        ],
    ));
    out.push(rule(
        "pre",
        vec![
            iif_ul(),
            json!({"mangle": {"key": meta("mark"),
                "value": {"map": {"key": daddr(), "data": pairs(&|p| json!(table_of(p.vni)))}}}}),
        ],
    ));

    // 1:1 NAT.
    out.push(base_chain("dnat", "nat", "prerouting", -100));
    out.push(rule(
        "dnat",
        vec![
            iif_ul(),
            json!({"dnat": {"addr": {"map": {"key": daddr(),
                "data": pairs(&|p| json!(p.private.to_string()))}}}}),
        ],
    ));
    out.push(base_chain("snat", "nat", "postrouting", 100));
    for (ip, p) in &e.publics {
        out.push(rule(
            "snat",
            vec![
                m(meta("iifname"), "==", json!(p.tap)),
                oif_ul(),
                json!({"snat": {"addr": ip.to_string()}}),
            ],
        ));
    }

    // Forwarding between routed ports and the underlay: NATed only.
    let all_taps: BTreeSet<&str> = plan
        .vpcs
        .values()
        .flat_map(|vp| vp.ports.keys().map(String::as_str))
        .collect();
    let public_taps = e.taps();
    let private_taps: Vec<&str> = all_taps.difference(&public_taps).copied().collect();
    let marks: BTreeSet<u32> = e.publics.values().map(|p| table_of(p.vni)).collect();
    let drop = || json!({"drop": null});
    out.push(base_chain("fwd", "filter", "forward", 0));
    out.push(rule(
        "fwd",
        vec![
            iif_ul(),
            m(meta("oifname"), "==", set(public_taps.iter().copied())),
            m(
                json!({"ct": {"key": "status"}}),
                "in",
                json!(["snat", "dnat"]),
            ),
            json!({"accept": null}),
        ],
    ));
    if own_forwarding {
        out.push(rule("fwd", vec![iif_ul(), drop()]));
    } else {
        out.push(rule(
            "fwd",
            vec![
                iif_ul(),
                m(meta("oifname"), "==", set(all_taps.iter().copied())),
                drop(),
            ],
        ));
        out.push(rule(
            "fwd",
            vec![
                iif_ul(),
                m(meta("mark"), "==", set(marks.iter().copied())),
                drop(),
            ],
        ));
    }
    if !private_taps.is_empty() {
        out.push(rule(
            "fwd",
            vec![
                m(meta("iifname"), "==", set(private_taps.iter().copied())),
                oif_ul(),
                drop(),
            ],
        ));
    }
    // After SNAT: nothing leaves a routed port for the underlay with
    // another source than a public address.
    out.push(base_chain("post", "filter", "postrouting", 300));
    out.push(rule(
        "post",
        vec![
            m(meta("iifname"), "==", set(all_taps.iter().copied())),
            oif_ul(),
            m(
                json!({"payload": {"protocol": "ip", "field": "saddr"}}),
                "!=",
                set(e.publics.keys().map(|ip| ip.to_string())),
            ),
            drop(),
        ],
    ));
    json!({ "nftables": out })
}

/// The routing objects of public addresses (wanted or found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeKernel {
    /// Main-table routes `<public>/32 dev lo proto 78`.
    pub routes: BTreeSet<Ipv4Addr>,
    /// Proxy neighbours (device, public address).
    pub proxies: BTreeSet<(String, Ipv4Addr)>,
    /// Rules `fwmark <table> lookup <table>` at [`RULE_PRIO`].
    pub marks: BTreeSet<u32>,
}

impl EdgeKernel {
    /// What `edge` needs.
    pub fn of_plan(edge: &EdgePlan) -> EdgeKernel {
        let mut k = EdgeKernel::default();
        let Some(dev) = &edge.dev else {
            return k;
        };
        for (ip, p) in &edge.publics {
            k.routes.insert(*ip);
            k.proxies.insert((dev.clone(), *ip));
            k.marks.insert(table_of(p.vni));
        }
        k
    }
}

/// The `ip -batch` lines that take the kernel from `have` to `want`
/// (removals first).
pub fn commands(have: &EdgeKernel, want: &EdgeKernel) -> Vec<String> {
    let mut c = Vec::new();
    for t in have.marks.difference(&want.marks) {
        c.push(format!(
            "rule del pref {RULE_PRIO} fwmark {t:#x} lookup {t}"
        ));
    }
    for (dev, ip) in have.proxies.difference(&want.proxies) {
        c.push(format!("neigh del proxy {ip} dev {dev}"));
    }
    for ip in have.routes.difference(&want.routes) {
        c.push(format!(
            "route del {ip}/32 dev {SINK} proto {ROUTE_PROTO} table main"
        ));
    }
    for ip in want.routes.difference(&have.routes) {
        c.push(format!(
            "route replace {ip}/32 dev {SINK} proto {ROUTE_PROTO} table main"
        ));
    }
    for (dev, ip) in want.proxies.difference(&have.proxies) {
        c.push(format!("neigh replace proxy {ip} dev {dev}"));
    }
    for t in want.marks.difference(&have.marks) {
        c.push(format!(
            "rule add pref {RULE_PRIO} fwmark {t:#x} lookup {t}"
        ));
    }
    c
}

fn json_list(text: &str, what: &str) -> Result<Vec<Value>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|source| Error::Json {
        context: what.into(),
        source,
    })
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// What the listings say of the agent's public-address objects: `routes`
/// from `ip -j -4 route show table main`, `proxies` from `ip -j -4 neigh
/// show proxy` (those on `underlay_dev` are the agent's), `rules` from `ip
/// -j -4 rule show`.
pub fn parse(
    routes: &str,
    proxies: &str,
    rules: &str,
    underlay_dev: Option<&str>,
) -> Result<EdgeKernel> {
    let mut k = EdgeKernel::default();
    let proto = ROUTE_PROTO.to_string();
    for r in json_list(routes, "ip -j -4 route show table main")? {
        if str_of(&r, "protocol") != Some(proto.as_str()) || str_of(&r, "dev") != Some(SINK) {
            continue;
        }
        if let Some(ip) = str_of(&r, "dst").and_then(|d| d.parse::<Ipv4Addr>().ok()) {
            k.routes.insert(ip);
        }
    }
    for n in json_list(proxies, "ip -j -4 neigh show proxy")? {
        let (Some(dev), Some(ip)) = (
            str_of(&n, "dev").filter(|d| Some(*d) == underlay_dev),
            str_of(&n, "dst").and_then(|d| d.parse::<Ipv4Addr>().ok()),
        ) else {
            continue;
        };
        k.proxies.insert((dev.to_string(), ip));
    }
    for r in json_list(rules, "ip -j -4 rule show")? {
        if r.get("priority").and_then(Value::as_u64) != Some(u64::from(RULE_PRIO)) {
            continue;
        }
        let mark = str_of(&r, "fwmark").and_then(|f| {
            let (v, mask) = f.split_once('/').unwrap_or((f, "0xffffffff"));
            let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            (hex(mask)? == u32::MAX).then_some(hex(v)?)
        });
        let table = str_of(&r, "table").and_then(|t| t.parse::<u32>().ok());
        if let (Some(mark), Some(table)) = (mark, table) {
            if mark == table && (TABLE_BASE..TABLE_BASE + (1 << 24)).contains(&table) {
                k.marks.insert(table);
            }
        }
    }
    Ok(k)
}

/// Checks that `gateway` is on the subnet of the interface address
/// `underlay` (an on-link next hop), from `ip -j -4 addr show` output.
pub fn check_gateway(addr_json: &str, underlay: Ipv4Addr, gateway: Ipv4Addr) -> Result<()> {
    let want = underlay.to_string();
    let len = json_list(addr_json, "ip -j -4 addr show")?
        .iter()
        .flat_map(|l| {
            l.get("addr_info")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|a| str_of(a, "local") == Some(want.as_str()))
        .and_then(|a| a.get("prefixlen").and_then(Value::as_u64))
        .unwrap_or(32)
        .min(32) as u8;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = super::model::Cidr {
        addr: Ipv4Addr::from(u32::from(underlay) & mask),
        len,
    };
    if net.contains(gateway) && gateway != underlay {
        Ok(())
    } else {
        Err(Error::ConfigInvalid(format!(
            "network.edge_gateway {gateway} is not a next hop on the underlay subnet {net}"
        )))
    }
}

/// The sysctls of the underlay device while public instances are served,
/// besides forwarding (the kernel answers proxy neighbours and forwards
/// only for a forwarding input device; `VpcNet` switches it): proxy
/// answers without delay.
pub fn underlay_sysctls(dev: &str) -> Vec<(String, &'static str)> {
    vec![(format!("/proc/sys/net/ipv4/neigh/{dev}/proxy_delay"), "0")]
}

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
