//! The routing side of the VPC data plane in the agent's network namespace:
//! VXLAN devices, policy-routing rules, the VPC tables' routes, permanent
//! neighbours and FDB entries and per-device sysctls.
//!
//! [`Kernel::of_plan`] is what a [`Plan`] needs, [`observe`] reads what the
//! kernel holds of the agent's objects (VXLAN devices `nbx*`, rules at
//! [`RULE_PRIO`], routes in the VPC tables, permanent neighbours and FDB
//! entries on those devices), and [`commands`] turns the difference into
//! `ip -batch` / `bridge -batch` input: only what is missing is added and
//! only what is extra is removed, so a repeat changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::model::{mac_string, table_of, Plan, TABLE_BASE};
use crate::error::{Error, Result};

/// Priority of the VPC rules (`iif <tap|nbx> lookup <table>`): before the
/// `local` table's rule, which the agent moves to [`LOCAL_PRIO`], so that
/// guest and tunnel traffic is routed only by its VPC's table and never
/// meets the host's own addresses.
pub const RULE_PRIO: u32 = 50;
/// Where the `local` table's rule goes (from 0).
pub const LOCAL_PRIO: u32 = 100;
/// Where the VPC tables route subnet gateways: a unicast route through
/// another device than the TAP makes proxy ARP answer for them; packets to a
/// gateway itself are dropped by the forward filter (`nft`), which lets
/// routed traffic out only to the VPC's own devices.
pub const GATEWAY_SINK: &str = "lo";
/// VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN device as the agent wants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vxlan {
    /// VNI.
    pub vni: u32,
    /// Device MAC.
    pub mac: [u8; 6],
    /// Local VTEP address.
    pub local: Ipv4Addr,
}

/// A route of a VPC table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `<ip>/32 dev <dev>`: a local instance through its TAP, a gateway
    /// through [`GATEWAY_SINK`], a remote instance through the VXLAN device
    /// (`tunnel`; its permanent neighbour entry gives the remote VTEP's MAC,
    /// so no `via`/`onlink` is needed).
    Host {
        /// Table.
        table: u32,
        /// Destination.
        dst: Ipv4Addr,
        /// Device.
        dev: String,
        /// Through a VXLAN device.
        tunnel: bool,
    },
    /// `blackhole default`: nothing else leaves the VPC's table for the
    /// host's others.
    Blackhole {
        /// Table.
        table: u32,
    },
}

/// The agent's routing objects (wanted or found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kernel {
    /// VXLAN devices by name.
    pub vxlans: BTreeMap<String, Vxlan>,
    /// Rules `iif <dev> lookup <table>` at [`RULE_PRIO`].
    pub rules: BTreeSet<(String, u32)>,
    /// Routes of the VPC tables.
    pub routes: BTreeSet<Route>,
    /// Permanent neighbours (device, address, MAC).
    pub neighs: BTreeSet<(String, Ipv4Addr, [u8; 6])>,
    /// FDB entries (VXLAN device, MAC, remote VTEP).
    pub fdb: BTreeSet<(String, [u8; 6], Ipv4Addr)>,
    /// The `local` rule is at [`LOCAL_PRIO`] (and not at 0).
    pub local_moved: bool,
}

impl Kernel {
    /// What `plan` needs.
    pub fn of_plan(plan: &Plan) -> Kernel {
        let mut k = Kernel::default();
        if plan.vpcs.is_empty() {
            return k;
        }
        k.local_moved = true;
        for vp in plan.vpcs.values() {
            let table = table_of(vp.vni);
            k.routes.insert(Route::Blackhole { table });
            for g in &vp.gateways {
                k.routes.insert(Route::Host {
                    table,
                    dst: *g,
                    dev: GATEWAY_SINK.into(),
                    tunnel: false,
                });
            }
            for (tap, p) in &vp.ports {
                k.rules.insert((tap.clone(), table));
                k.routes.insert(Route::Host {
                    table,
                    dst: p.port.ip,
                    dev: tap.clone(),
                    tunnel: false,
                });
                k.neighs.insert((tap.clone(), p.port.ip, p.port.mac));
            }
            if let (Some((nbx, mac)), Some(local)) = (&vp.vxlan, plan.underlay) {
                k.vxlans.insert(
                    nbx.clone(),
                    Vxlan {
                        vni: vp.vni,
                        mac: *mac,
                        local,
                    },
                );
                k.rules.insert((nbx.clone(), table));
                for (ip, r) in &vp.remotes {
                    k.routes.insert(Route::Host {
                        table,
                        dst: *ip,
                        dev: nbx.clone(),
                        tunnel: true,
                    });
                    k.neighs.insert((nbx.clone(), *ip, r.vtep_mac));
                    k.fdb.insert((nbx.clone(), r.vtep_mac, r.underlay));
                }
            }
        }
        k
    }

    /// Forgets everything on devices for which `exists` says no (they went
    /// with their device, e.g. a deleted TAP).
    pub fn prune(&mut self, exists: impl Fn(&str) -> bool) {
        let devs: BTreeSet<String> = self
            .routes
            .iter()
            .filter_map(|r| match r {
                Route::Host { dev, .. } => Some(dev.clone()),
                Route::Blackhole { .. } => None,
            })
            .chain(self.neighs.iter().map(|n| n.0.clone()))
            .chain(self.vxlans.keys().cloned())
            .collect();
        let gone: BTreeSet<String> = devs.into_iter().filter(|d| !exists(d)).collect();
        if gone.is_empty() {
            return;
        }
        self.vxlans.retain(|n, _| !gone.contains(n));
        self.routes.retain(|r| match r {
            Route::Host { dev, .. } => !gone.contains(dev),
            Route::Blackhole { .. } => true,
        });
        self.neighs.retain(|n| !gone.contains(&n.0));
        self.fdb.retain(|f| !gone.contains(&f.0));
    }

    /// Devices of the wanted state that must exist before routes use them.
    pub fn devices(&self) -> BTreeSet<String> {
        let mut d: BTreeSet<String> = self.rules.iter().map(|r| r.0.clone()).collect();
        d.extend(self.vxlans.keys().cloned());
        d
    }
}

/// The commands that take the kernel from `have` to `want`: `ip -batch`
/// lines to run first (removals, devices), `bridge -batch` lines, then `ip`
/// lines that need the devices (neighbours, routes, rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    /// `ip` lines: removals and devices.
    pub ip_first: Vec<String>,
    /// `bridge` lines: FDB entries.
    pub bridge: Vec<String>,
    /// `ip` lines: neighbours, routes, rules.
    pub ip_then: Vec<String>,
}

impl Commands {
    /// True when nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.ip_first.is_empty() && self.bridge.is_empty() && self.ip_then.is_empty()
    }
}

fn route_spec(r: &Route) -> String {
    match r {
        Route::Host {
            table, dst, dev, ..
        } => format!("{dst}/32 dev {dev} table {table}"),
        Route::Blackhole { table } => format!("blackhole default table {table}"),
    }
}

/// The difference of `have` and `want` as commands (see [`Commands`]).
/// `underlay_dev` is the VXLAN devices' lower device.
pub fn commands(have: &Kernel, want: &Kernel, underlay_dev: Option<&str>) -> Commands {
    let mut c = Commands::default();
    // Removals first: rules, routes, neighbours, FDB entries, devices.
    for (iif, table) in have.rules.difference(&want.rules) {
        c.ip_first.push(format!(
            "rule del pref {RULE_PRIO} iif {iif} lookup {table}"
        ));
    }
    // A VXLAN device that is wrong (VNI, MAC, local address) is made again.
    let remade: BTreeSet<&String> = want
        .vxlans
        .iter()
        .filter(|(n, v)| have.vxlans.get(*n).is_some_and(|h| h != *v))
        .map(|(n, _)| n)
        .collect();
    let goes = |dev: &String| {
        remade.contains(dev) || (dev.starts_with("nbx") && !want.vxlans.contains_key(dev))
    };
    for r in have.routes.difference(&want.routes) {
        if let Route::Host { dev, .. } = r {
            if goes(dev) {
                continue;
            }
        }
        c.ip_first.push(format!("route del {}", route_spec(r)));
    }
    for (dev, ip, _) in have.neighs.difference(&want.neighs) {
        if !goes(dev) && !want.neighs.iter().any(|n| &n.0 == dev && n.1 == *ip) {
            c.ip_first.push(format!("neigh del {ip} dev {dev}"));
        }
    }
    for (dev, mac, dst) in have.fdb.difference(&want.fdb) {
        if !goes(dev) {
            c.bridge.push(format!(
                "fdb del {} dev {dev} dst {dst} self",
                mac_string(mac)
            ));
        }
    }
    for n in have.vxlans.keys() {
        if remade.contains(n) || !want.vxlans.contains_key(n) {
            c.ip_first.push(format!("link del dev {n}"));
        }
    }
    // Devices.
    for (n, v) in &want.vxlans {
        if have.vxlans.get(n) == Some(v) {
            continue;
        }
        let dev = underlay_dev
            .map(|d| format!(" dev {d}"))
            .unwrap_or_default();
        c.ip_first.push(format!(
            "link add {n} address {} type vxlan id {} local {} dstport {VXLAN_PORT} nolearning{dev}",
            mac_string(&v.mac),
            v.vni,
            v.local
        ));
        c.ip_first.push(format!("link set dev {n} up"));
    }
    let fresh = |dev: &String| remade.contains(dev) || !have.vxlans.contains_key(dev);
    // FDB, neighbours, routes, rules (everything on a remade device again).
    for f @ (dev, mac, dst) in &want.fdb {
        if !have.fdb.contains(f) || fresh(dev) {
            c.bridge.push(format!(
                "fdb replace {} dev {dev} dst {dst} self permanent",
                mac_string(mac)
            ));
        }
    }
    for n @ (dev, ip, mac) in &want.neighs {
        let vx = dev.starts_with("nbx") && fresh(dev);
        if !have.neighs.contains(n) || vx {
            c.ip_then.push(format!(
                "neigh replace {ip} lladdr {} dev {dev} nud permanent",
                mac_string(mac)
            ));
        }
    }
    for r in &want.routes {
        let vx = matches!(r, Route::Host { dev, tunnel: true, .. } if fresh(dev));
        if !have.routes.contains(r) || vx {
            c.ip_then.push(format!("route replace {}", route_spec(r)));
        }
    }
    for (iif, table) in want.rules.difference(&have.rules) {
        c.ip_then.push(format!(
            "rule add pref {RULE_PRIO} iif {iif} lookup {table}"
        ));
    }
    if want.local_moved && !have.local_moved {
        c.ip_then
            .push(format!("rule add pref {LOCAL_PRIO} lookup local"));
        c.ip_then.push("rule del pref 0 lookup local".into());
    }
    c
}

fn json(text: &str, what: &str) -> Result<Vec<Value>> {
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

/// What `ip -j` / `bridge -j` listings say of the agent's objects: `links`
/// from `ip -j -d link show`, `rules` from `ip -j rule show`, `routes` from
/// `ip -j route show table all`, `neighs` from `ip -j neigh show`, `fdb`
/// from `bridge -j fdb show`.
pub fn parse(links: &str, rules: &str, routes: &str, neighs: &str, fdb: &str) -> Result<Kernel> {
    let mut k = Kernel::default();
    for l in json(links, "ip -j -d link show")? {
        let Some(name) = str_of(&l, "ifname") else {
            continue;
        };
        if !name.starts_with("nbx") {
            continue;
        }
        let info = l.get("linkinfo").and_then(|i| i.get("info_data"));
        let vni = info
            .and_then(|i| i.get("id"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let local = info
            .and_then(|i| str_of(i, "local"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mac = str_of(&l, "address")
            .and_then(crate::host::firewall::render::parse_mac)
            .unwrap_or_default();
        k.vxlans.insert(name.to_string(), Vxlan { vni, mac, local });
    }
    let mut local_at_0 = false;
    let mut local_moved = false;
    for r in json(rules, "ip -j rule show")? {
        let prio = r.get("priority").and_then(Value::as_u64);
        let table = str_of(&r, "table");
        let from_all = str_of(&r, "src").is_none_or(|s| s == "all");
        if table == Some("local") && r.get("iif").is_none() && from_all {
            match prio {
                Some(0) => local_at_0 = true,
                Some(p) if p == u64::from(LOCAL_PRIO) => local_moved = true,
                _ => {}
            }
        }
        if prio != Some(u64::from(RULE_PRIO)) {
            continue;
        }
        let (Some(iif), Some(t)) = (str_of(&r, "iif"), table.and_then(|t| t.parse::<u32>().ok()))
        else {
            continue;
        };
        k.rules.insert((iif.to_string(), t));
    }
    k.local_moved = local_moved && !local_at_0;
    for r in json(routes, "ip -j route show table all")? {
        let Some(table) = r
            .get("table")
            .and_then(|t| {
                t.as_str()
                    .and_then(|s| s.parse::<u32>().ok())
                    .or(t.as_u64().map(|n| n as u32))
            })
            .filter(|t| (TABLE_BASE..TABLE_BASE + (1 << 24)).contains(t))
        else {
            continue;
        };
        let dst = str_of(&r, "dst").unwrap_or("");
        if str_of(&r, "type") == Some("blackhole") && dst == "default" {
            k.routes.insert(Route::Blackhole { table });
            continue;
        }
        let (Ok(dst), Some(dev)) = (
            dst.trim_end_matches("/32").parse::<Ipv4Addr>(),
            str_of(&r, "dev"),
        ) else {
            // Not one of ours: removed by flushing nothing; listed so the
            // caller may see it (left alone).
            continue;
        };
        k.routes.insert(Route::Host {
            table,
            dst,
            dev: dev.to_string(),
            tunnel: dev.starts_with("nbx"),
        });
    }
    for n in json(neighs, "ip -j neigh show")? {
        let permanent = n
            .get("state")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"));
        let (Some(dev), Some(ip), Some(mac)) = (
            str_of(&n, "dev"),
            str_of(&n, "dst").and_then(|d| d.parse::<Ipv4Addr>().ok()),
            str_of(&n, "lladdr").and_then(crate::host::firewall::render::parse_mac),
        ) else {
            continue;
        };
        if permanent {
            k.neighs.insert((dev.to_string(), ip, mac));
        }
    }
    for f in json(fdb, "bridge -j fdb show")? {
        let (Some(dev), Some(mac), Some(dst)) = (
            str_of(&f, "ifname").filter(|d| d.starts_with("nbx")),
            str_of(&f, "mac").and_then(crate::host::firewall::render::parse_mac),
            str_of(&f, "dst").and_then(|d| d.parse::<Ipv4Addr>().ok()),
        ) else {
            continue;
        };
        k.fdb.insert((dev.to_string(), mac, dst));
    }
    Ok(k)
}

/// Keeps of `found` only what concerns the agent: neighbours on VXLAN
/// devices and on `taps` (the routed ports wanted or previously applied).
pub fn restrict(mut found: Kernel, taps: &BTreeSet<String>) -> Kernel {
    found
        .neighs
        .retain(|(dev, _, _)| dev.starts_with("nbx") || taps.contains(dev));
    found
}

/// The host-wide reverse-path filter setting (the effective value of a
/// device is the larger of this and its own).
pub const RP_FILTER_ALL: &str = "/proc/sys/net/ipv4/conf/all/rp_filter";

/// The sysctls of a routed TAP: proxy ARP (answered at once), forwarding,
/// no reverse-path filter (the VPC tables are not the main table), no IPv6.
pub fn tap_sysctls(tap: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("/proc/sys/net/ipv4/conf/{tap}/proxy_arp"), "1"),
        (format!("/proc/sys/net/ipv4/neigh/{tap}/proxy_delay"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{tap}/forwarding"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{tap}/rp_filter"), "0"),
        (format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1"),
    ]
}

/// The sysctls of a VXLAN device: forwarding, no reverse-path filter, no IPv6.
pub fn vxlan_sysctls(dev: &str) -> Vec<(String, &'static str)> {
    vec![
        (format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"), "0"),
        (format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1"),
    ]
}

#[cfg(test)]
#[path = "links_tests.rs"]
mod tests;
