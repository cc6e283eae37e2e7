//! The VPC security groups and routed-port anti-spoofing as one nftables
//! JSON batch ([`render`]) for two tables of the agent's own, `inet
//! nubis_vpc` and `arp nubis_vpc`, replaced whole in one transaction
//! (`add table; delete table; add table ...`): packets see the old or the
//! new ruleset, never a mix. Pure: no I/O, unit-tested in `nft_tests.rs`.
//!
//! `inet nubis_vpc`:
//! * `pre` (prerouting, priority raw -300): sets the conntrack zone of each
//!   routed TAP's and VXLAN device's packets to its VPC's zone (VPCs with
//!   overlapping addresses never share connection state), then sends each
//!   routed TAP's packets to `sp_<tap>`: only IPv4 from the instance's MAC
//!   and address passes (IPv6 and other EtherTypes are dropped).
//! * `fwd` (forward, 0): routed TAPs forward only to routed TAPs and VXLAN
//!   devices, VXLAN devices only to routed TAPs (so packets to a gateway,
//!   routed to `lo`, go nowhere). A routed TAP's packets go through `eg_<tap>` (its
//!   groups' egress rules), packets to it through `in_<tap>` (its groups'
//!   ingress rules). Both return for reply-direction and related packets
//!   (stateful), return for original-direction packets a rule allows and
//!   drop the rest: original-direction packets are checked every time, so a
//!   revoked rule stops an established flow at once. A port the view does
//!   not list (yet) has all its traffic dropped.
//! * `in` (input, 0): nothing from a routed TAP or a VXLAN device reaches
//!   the host itself, and VXLAN packets (UDP 4789 to the underlay address)
//!   are accepted only from the underlay addresses of the view's remote
//!   instances' hosts.
//!
//! Group peers match per-(VPC, group) sets `g<vni hex>_<group>` of the
//! members' addresses.
//!
//! `arp nubis_vpc` (`in`, input): ARP from a routed TAP must carry the
//! instance's MAC and address as sender; ARP from unlisted ports is dropped.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::model::{mac_string, Peer, Plan, PortPlan, Proto, SgRule, VpcPlan};

/// The tables' name (in families `inet` and `arp`).
pub const TABLE: &str = "nubis_vpc";

/// The anti-spoofing chain of a routed port.
pub fn spoof_chain(tap: &str) -> String {
    format!("sp_{tap}")
}
/// The egress chain of a routed port.
pub fn egress_chain(tap: &str) -> String {
    format!("eg_{tap}")
}
/// The ingress chain of a routed port.
pub fn ingress_chain(tap: &str) -> String {
    format!("in_{tap}")
}
/// The ARP chain of a routed port.
pub fn arp_chain(tap: &str) -> String {
    format!("arp_{tap}")
}
/// The member set of `group` in the VPC `vni`.
pub fn group_set(vni: u32, group: &str) -> String {
    format!("g{vni:x}_{group}")
}

fn table(family: &str) -> Value {
    json!({"family": family, "name": TABLE})
}

fn chain(family: &str, name: &str) -> Value {
    json!({"add": {"chain": {"family": family, "table": TABLE, "name": name}}})
}

fn base_chain(family: &str, name: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {"family": family, "table": TABLE, "name": name,
        "type": "filter", "hook": hook, "prio": prio, "policy": "accept"}}})
}

fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn m(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn ct(key: &str) -> Value {
    json!({"ct": {"key": key}})
}

fn set(items: Vec<Value>) -> Value {
    json!({"set": items})
}

fn jump(target: String) -> Value {
    json!({"jump": {"target": target}})
}

/// `<key> vmap { name: verdict, ... }` (nothing when empty).
fn vmap(key: &str, entries: Vec<(String, Value)>) -> Option<Value> {
    (!entries.is_empty()).then(|| {
        let items = entries
            .into_iter()
            .map(|(k, v)| json!([k, v]))
            .collect::<Vec<_>>();
        json!({"vmap": {"key": meta(key), "data": set(items)}})
    })
}

/// The match statements of one rule (`dir`: `saddr` for ingress, `daddr`
/// for egress).
pub fn rule_matches(vni: u32, r: &SgRule, dir: &str) -> Vec<Value> {
    let mut out = Vec::new();
    match &r.peer {
        Peer::Cidr(c) if c.len == 0 => {}
        Peer::Cidr(c) if c.len == 32 => {
            out.push(m(payload("ip", dir), "==", json!(c.addr.to_string())))
        }
        Peer::Cidr(c) => out.push(m(
            payload("ip", dir),
            "==",
            json!({"prefix": {"addr": c.addr.to_string(), "len": c.len}}),
        )),
        Peer::Group(g) => out.push(m(
            payload("ip", dir),
            "==",
            json!(format!("@{}", group_set(vni, g))),
        )),
    }
    if let Some(n) = r.proto.number() {
        out.push(m(meta("l4proto"), "==", json!(n)));
    }
    match r.proto {
        Proto::Tcp | Proto::Udp if r.from >= 0 => {
            let right = if r.from == r.to {
                json!(r.from)
            } else {
                json!({"range": [r.from, r.to]})
            };
            out.push(m(payload("th", "dport"), "==", right));
        }
        Proto::Icmp => {
            if r.from >= 0 {
                out.push(m(payload("icmp", "type"), "==", json!(r.from)));
            }
            if r.to >= 0 {
                out.push(m(payload("icmp", "code"), "==", json!(r.to)));
            }
        }
        _ => {}
    }
    out
}

/// The rules of a port's egress (`ingress == false`) or ingress chain.
fn port_chain(vp: &VpcPlan, p: &PortPlan, ingress: bool) -> Vec<Vec<Value>> {
    let ret = || json!({"return": null});
    let mut out = vec![
        vec![m(ct("direction"), "==", json!("reply")), ret()],
        vec![m(ct("state"), "==", json!("related")), ret()],
    ];
    let dir = if ingress { "saddr" } else { "daddr" };
    let mut seen = std::collections::BTreeSet::new();
    for g in p.groups.iter().flatten() {
        let Some(group) = vp.groups.get(g) else {
            continue;
        };
        let rules = if ingress {
            &group.ingress
        } else {
            &group.egress
        };
        for r in rules {
            // Two groups may allow the same: once is enough.
            if seen.insert(r.clone()) {
                let mut stmts = rule_matches(vp.vni, r, dir);
                stmts.push(ret());
                out.push(stmts);
            }
        }
    }
    out.push(vec![json!({"drop": null})]);
    out
}

/// The batch that makes the agent's VPC tables hold exactly `plan` (or
/// removes them when the plan has no VPC).
pub fn render(plan: &Plan) -> Value {
    let mut out = Vec::new();
    for f in ["inet", "arp"] {
        out.push(json!({"add": {"table": table(f)}}));
        out.push(json!({"delete": {"table": table(f)}}));
    }
    if plan.vpcs.is_empty() {
        return json!({ "nftables": out });
    }
    let (inet, arp) = ("inet", "arp");
    out.push(json!({"add": {"table": table(inet)}}));
    out.push(json!({"add": {"table": table(arp)}}));

    let ports: BTreeMap<&str, (&VpcPlan, &PortPlan)> = plan
        .vpcs
        .values()
        .flat_map(|vp| vp.ports.iter().map(move |(t, p)| (t.as_str(), (vp, p))))
        .collect();

    // Member sets.
    for vp in plan.vpcs.values() {
        for (g, ips) in &vp.members {
            let mut s = json!({"family": inet, "table": TABLE,
                "name": group_set(vp.vni, g), "type": "ipv4_addr"});
            if !ips.is_empty() {
                s["elem"] = json!(ips.iter().map(|i| i.to_string()).collect::<Vec<_>>());
            }
            out.push(json!({"add": {"set": s}}));
        }
    }

    // pre: zones, anti-spoofing.
    out.push(base_chain(inet, "pre", "prerouting", -300));
    let mut zones: Vec<Value> = Vec::new();
    for vp in plan.vpcs.values() {
        for t in vp.ports.keys() {
            zones.push(json!([t, vp.zone]));
        }
        if let Some((nbx, _)) = &vp.vxlan {
            zones.push(json!([nbx, vp.zone]));
        }
    }
    out.push(rule(
        inet,
        "pre",
        vec![json!({"mangle": {"key": ct("zone"),
            "value": {"map": {"key": meta("iifname"), "data": set(zones)}}}})],
    ));
    let spoof = ports
        .keys()
        .map(|t| (t.to_string(), jump(spoof_chain(t))))
        .collect();
    out.extend(vmap("iifname", spoof).map(|v| rule(inet, "pre", vec![v])));
    for (t, (_, p)) in &ports {
        let c = spoof_chain(t);
        out.push(chain(inet, &c));
        let drop = || json!({"drop": null});
        let ip = p.port.ip.to_string();
        let mac = mac_string(&p.port.mac);
        out.push(rule(
            inet,
            &c,
            vec![m(payload("ether", "saddr"), "!=", json!(mac)), drop()],
        ));
        out.push(rule(
            inet,
            &c,
            vec![m(meta("nfproto"), "!=", json!("ipv4")), drop()],
        ));
        out.push(rule(
            inet,
            &c,
            vec![m(payload("ip", "saddr"), "!=", json!(ip)), drop()],
        ));
    }

    // fwd: routed traffic stays in the VPC's devices, then security groups.
    out.push(base_chain(inet, "fwd", "forward", 0));
    let taps: Vec<Value> = ports.keys().map(|t| json!(t)).collect();
    let nbxs: Vec<Value> = plan
        .vpcs
        .values()
        .filter_map(|vp| vp.vxlan.as_ref().map(|(n, _)| json!(n)))
        .collect();
    let mut vpc_devs = taps.clone();
    vpc_devs.extend(nbxs.iter().cloned());
    out.push(rule(
        inet,
        "fwd",
        vec![
            m(meta("iifname"), "==", set(taps.clone())),
            m(meta("oifname"), "!=", set(vpc_devs)),
            json!({"drop": null}),
        ],
    ));
    if !nbxs.is_empty() {
        out.push(rule(
            inet,
            "fwd",
            vec![
                m(meta("iifname"), "==", set(nbxs)),
                m(meta("oifname"), "!=", set(taps)),
                json!({"drop": null}),
            ],
        ));
    }
    let verdicts = |name: fn(&str) -> String| {
        ports
            .iter()
            .map(|(t, (_, p))| {
                let v = if p.groups.is_some() {
                    jump(name(t))
                } else {
                    json!({"drop": null})
                };
                (t.to_string(), v)
            })
            .collect::<Vec<_>>()
    };
    out.extend(vmap("iifname", verdicts(egress_chain)).map(|v| rule(inet, "fwd", vec![v])));
    out.extend(vmap("oifname", verdicts(ingress_chain)).map(|v| rule(inet, "fwd", vec![v])));
    for (t, (vp, p)) in &ports {
        if p.groups.is_none() {
            continue;
        }
        for (c, ingress) in [(egress_chain(t), false), (ingress_chain(t), true)] {
            out.push(chain(inet, &c));
            for stmts in port_chain(vp, p, ingress) {
                out.push(rule(inet, &c, stmts));
            }
        }
    }

    // in: guests and tunnels never reach the host.
    out.push(base_chain(inet, "in", "input", 0));
    let mut devs: Vec<Value> = ports.keys().map(|t| json!(t)).collect();
    devs.extend(
        plan.vpcs
            .values()
            .filter_map(|vp| vp.vxlan.as_ref().map(|(n, _)| json!(n))),
    );
    out.push(rule(
        inet,
        "in",
        vec![m(meta("iifname"), "==", set(devs)), json!({"drop": null})],
    ));
    // VXLAN carries no authentication: only the tunnel endpoints of the
    // VPCs' remote instances may send to this one.
    if let Some(local) = plan.underlay {
        let vteps: std::collections::BTreeSet<String> = plan
            .vpcs
            .values()
            .flat_map(|vp| vp.remotes.values().map(|r| r.underlay.to_string()))
            .collect();
        let mut stmts = vec![
            m(payload("ip", "daddr"), "==", json!(local.to_string())),
            m(meta("l4proto"), "==", json!(17)),
            m(
                payload("udp", "dport"),
                "==",
                json!(super::links::VXLAN_PORT),
            ),
        ];
        if !vteps.is_empty() {
            let vteps = vteps.into_iter().map(|v| json!(v)).collect();
            stmts.push(m(payload("ip", "saddr"), "!=", set(vteps)));
        }
        stmts.push(json!({"drop": null}));
        out.push(rule(inet, "in", stmts));
    }

    // arp: the instance speaks for itself only.
    out.push(base_chain(arp, "in", "input", 0));
    let arp_verdicts = ports
        .iter()
        .map(|(t, (_, p))| {
            let v = if p.groups.is_some() {
                jump(arp_chain(t))
            } else {
                json!({"drop": null})
            };
            (t.to_string(), v)
        })
        .collect();
    out.extend(vmap("iifname", arp_verdicts).map(|v| rule(arp, "in", vec![v])));
    for (t, (_, p)) in &ports {
        if p.groups.is_none() {
            continue;
        }
        let c = arp_chain(t);
        out.push(chain(arp, &c));
        let drop = || json!({"drop": null});
        out.push(rule(
            arp,
            &c,
            vec![
                m(
                    payload("arp", "saddr ether"),
                    "!=",
                    json!(mac_string(&p.port.mac)),
                ),
                drop(),
            ],
        ));
        out.push(rule(
            arp,
            &c,
            vec![
                m(
                    payload("arp", "saddr ip"),
                    "!=",
                    json!(p.port.ip.to_string()),
                ),
                drop(),
            ],
        ));
    }
    // Chains before the rules that jump to them (one transaction, in order).
    let (chains, rest): (Vec<Value>, Vec<Value>) = out
        .into_iter()
        .partition(|o| o.get("add").is_some_and(|a| a.get("chain").is_some()));
    let (tables_sets, rules): (Vec<Value>, Vec<Value>) = rest
        .into_iter()
        .partition(|o| o.get("add").is_none_or(|a| a.get("rule").is_none()));
    let mut out = tables_sets;
    out.extend(chains);
    out.extend(rules);
    json!({ "nftables": out })
}

#[cfg(test)]
#[path = "nft_tests.rs"]
pub(crate) mod tests;
