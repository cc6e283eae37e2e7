//! The host's nftables ruleset as data: what the agent wants enforced
//! ([`HostRules`]: the bridge, the TAP prefix and one [`Port`] per instance
//! TAP) rendered into one nft JSON batch ([`render`]) that replaces the
//! contents of the agent's own two tables in a single transaction. Pure: no
//! I/O, so every rule is unit-tested here.
//!
//! * `bridge nubis` (anti-spoofing): the `prerouting` base chain sends each
//!   known TAP's frames to its own chain `tap_<tap>` (a verdict map on the
//!   input interface); frames from any other interface with the TAP prefix
//!   (a TAP whose rules are not in place yet) are dropped and counted in
//!   `unknown_tap`. A TAP's chain lets through only frames whose Ethernet
//!   source is the instance's MAC, ARP whose sender MAC and IPv4 address are
//!   the instance's, and IPv4 whose source is the instance's address;
//!   everything else (other MACs, forged addresses, IPv6, VLAN tags, other
//!   EtherTypes) is dropped and counted in the TAP's counter `spoof_<tap>`.
//! * `inet nubis` (host protection): on the `input` hook, IP that arrives on
//!   the instance bridge (i.e. from guests) and is addressed to the host
//!   itself passes only as part of a connection the host opened (conntrack
//!   `established`/`related`) or as an ICMP echo request; the rest is dropped
//!   and counted in `host_blocked`. Forwarded and bridged traffic is not
//!   touched.
//!
//! Counters survive updates: the batch flushes the tables (rules only),
//! deletes the chains and counters of TAPs that are gone and adds only the
//! counters that do not exist yet, so a TAP's drop count is kept across
//! every change of other instances.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, SetItem};
use nftables::schema::{
    Chain, Counter, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Table,
};
use nftables::stmt::{self, Match, Operator, Statement, VerdictMap};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::{Error, Result};

/// Name of the agent's tables (one per family).
pub const TABLE: &str = "nubis";
/// The bridge-family base chain.
pub const PREROUTING: &str = "prerouting";
/// The inet-family base chain.
pub const INPUT: &str = "input";
/// Counter of frames from TAPs without rules.
pub const UNKNOWN_TAP: &str = "unknown_tap";
/// Counter of guest packets to the host that were dropped.
pub const HOST_BLOCKED: &str = "host_blocked";
/// Priority of the bridge prerouting chain (before anything else sees a frame).
const BRIDGE_PRIORITY: i32 = -200;

/// The chain of one TAP.
pub fn tap_chain(tap: &str) -> String {
    format!("tap_{tap}")
}

/// The spoofed-frame counter of one TAP.
pub fn spoof_counter(tap: &str) -> String {
    format!("spoof_{tap}")
}

/// One instance's port on the bridge: the identity its frames must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// TAP device name.
    pub tap: String,
    /// The instance's MAC address.
    pub mac: [u8; 6],
    /// The instance's IPv4 address.
    pub ip: Ipv4Addr,
}

/// True for a name usable as an interface and (prefixed) as an nft chain or
/// counter name: 1-15 of `[A-Za-z0-9_-]`.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case) into bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mac_string(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

impl Port {
    /// Validates a port from an instance's recorded network allocation
    /// (`net.json`, written by this agent, but read back from disk).
    pub fn new(tap: &str, mac: &str, ip: Ipv4Addr) -> Result<Port> {
        if !valid_ifname(tap) {
            return Err(Error::ConfigInvalid(format!("invalid TAP name {tap:?}")));
        }
        let mac_bytes =
            parse_mac(mac).ok_or_else(|| Error::ConfigInvalid(format!("invalid MAC {mac:?}")))?;
        if mac_bytes[0] & 1 == 1 || mac_bytes == [0; 6] {
            return Err(Error::ConfigInvalid(format!(
                "MAC {mac} is not a unicast address"
            )));
        }
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(Error::ConfigInvalid(format!(
                "{ip} is not an instance address"
            )));
        }
        Ok(Port {
            tap: tap.to_string(),
            mac: mac_bytes,
            ip,
        })
    }
}

/// Everything the host's ruleset is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRules {
    /// The instance bridge (guest traffic to the host arrives on it).
    pub bridge: String,
    /// The TAP name prefix (TAPs without rules are dropped).
    pub tap_prefix: String,
    /// Ports by TAP name.
    pub ports: BTreeMap<String, Port>,
}

/// The chains and counters that exist in the agent's tables (from `nft
/// list`, or what the last successful batch created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Chains of `bridge nubis`.
    pub bridge_chains: BTreeSet<String>,
    /// Counters of `bridge nubis`.
    pub bridge_counters: BTreeSet<String>,
    /// Counters of `inet nubis`.
    pub inet_counters: BTreeSet<String>,
}

impl HostRules {
    /// What the tables hold once this ruleset is applied.
    pub fn existing(&self) -> Existing {
        let mut bridge_chains: BTreeSet<String> = self.ports.keys().map(|t| tap_chain(t)).collect();
        bridge_chains.insert(PREROUTING.to_string());
        let mut bridge_counters: BTreeSet<String> =
            self.ports.keys().map(|t| spoof_counter(t)).collect();
        bridge_counters.insert(UNKNOWN_TAP.to_string());
        Existing {
            bridge_chains,
            bridge_counters,
            inet_counters: [HOST_BLOCKED.to_string()].into(),
        }
    }
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn field(protocol: &'static str, f: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(f),
        },
    )))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn count(name: &str) -> Statement<'static> {
    Statement::Counter(stmt::Counter::Named(Cow::Owned(name.to_string())))
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn table(family: NfFamily) -> Table<'static> {
    Table {
        family,
        name: Cow::Borrowed(TABLE),
        handle: None,
    }
}

fn chain(family: NfFamily, name: String) -> Chain<'static> {
    Chain {
        family,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name),
        ..Chain::default()
    }
}

fn base_chain(family: NfFamily, name: &'static str, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..chain(family, name.to_string())
    }
}

fn counter(family: NfFamily, name: String) -> Counter<'static> {
    Counter {
        family,
        table: Cow::Borrowed(TABLE),
        name: Cow::Owned(name),
        handle: None,
        packets: None,
        bytes: None,
    }
}

fn rule(family: NfFamily, chain: &str, expr: Vec<Statement<'static>>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Owned(chain.to_string()),
        expr: Cow::Owned(expr),
        ..Rule::default()
    })))
}

fn add(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(o))
}

fn delete(o: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Delete(o))
}

/// The rules of one TAP's chain (see the module doc).
fn port_rules(p: &Port) -> Vec<Vec<Statement<'static>>> {
    let mac = mac_string(&p.mac);
    let ip = p.ip.to_string();
    let c = spoof_counter(&p.tap);
    vec![
        // Another Ethernet source: a forged MAC (also poisons bridge FDBs).
        vec![
            matches(field("ether", "saddr"), Operator::NEQ, s(&mac)),
            count(&c),
            drop_(),
        ],
        // ARP must speak for this instance only (no gratuitous ARP for a
        // neighbour's address, no forged sender MAC).
        vec![
            matches(field("arp", "saddr ether"), Operator::NEQ, s(&mac)),
            count(&c),
            drop_(),
        ],
        vec![
            matches(field("arp", "saddr ip"), Operator::NEQ, s(&ip)),
            count(&c),
            drop_(),
        ],
        vec![
            matches(field("ether", "type"), Operator::EQ, s("arp")),
            accept(),
        ],
        // IPv4 from the instance's own address only (Nubis serves no DHCP:
        // guests take their address from the kernel command line).
        vec![
            matches(field("ip", "saddr"), Operator::NEQ, s(&ip)),
            count(&c),
            drop_(),
        ],
        vec![
            matches(field("ether", "type"), Operator::EQ, s("ip")),
            accept(),
        ],
        // IPv6, VLAN-tagged and every other EtherType. (IMDS over IPv6 is
        // answered inside the VMM: those frames never reach the TAP.)
        vec![count(&c), drop_()],
    ]
}

/// Renders the batch that makes the agent's tables hold exactly `rules`,
/// given what they hold now (`existing`). Applied with `nft -j -f -`, it is
/// one transaction: the tables are never seen half-updated.
pub fn render(rules: &HostRules, existing: &Existing) -> Nftables<'static> {
    let want = rules.existing();
    let bridge = NfFamily::Bridge;
    let inet = NfFamily::INet;
    let mut out: Vec<NfObject<'static>> = vec![
        add(NfListObject::Table(table(bridge))),
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Table(table(bridge)))),
        add(NfListObject::Table(table(inet))),
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Table(table(inet)))),
    ];
    // Gone TAPs: their chains (empty after the flush) and counters.
    for c in existing.bridge_chains.difference(&want.bridge_chains) {
        out.push(delete(NfListObject::Chain(chain(bridge, c.clone()))));
    }
    for c in existing.bridge_counters.difference(&want.bridge_counters) {
        out.push(delete(NfListObject::Counter(counter(bridge, c.clone()))));
    }
    for c in existing.inet_counters.difference(&want.inet_counters) {
        out.push(delete(NfListObject::Counter(counter(inet, c.clone()))));
    }
    // New counters only: an existing one keeps its values.
    for c in want.bridge_counters.difference(&existing.bridge_counters) {
        out.push(add(NfListObject::Counter(counter(bridge, c.clone()))));
    }
    for c in want.inet_counters.difference(&existing.inet_counters) {
        out.push(add(NfListObject::Counter(counter(inet, c.clone()))));
    }

    // bridge nubis: anti-spoofing.
    out.push(add(NfListObject::Chain(base_chain(
        bridge,
        PREROUTING,
        NfHook::Prerouting,
        BRIDGE_PRIORITY,
    ))));
    for p in rules.ports.values() {
        out.push(add(NfListObject::Chain(chain(bridge, tap_chain(&p.tap)))));
    }
    if !rules.ports.is_empty() {
        let map: Vec<SetItem<'static>> = rules
            .ports
            .values()
            .map(|p| {
                SetItem::Mapping(
                    s(&p.tap),
                    Expression::Verdict(nftables::expr::Verdict::Jump(stmt::JumpTarget {
                        target: Cow::Owned(tap_chain(&p.tap)),
                    })),
                )
            })
            .collect();
        out.push(rule(
            bridge,
            PREROUTING,
            vec![Statement::VerdictMap(VerdictMap {
                key: meta(MetaKey::Iifname),
                data: Expression::Named(NamedExpression::Set(map)),
            })],
        ));
    }
    out.push(rule(
        bridge,
        PREROUTING,
        vec![
            matches(
                meta(MetaKey::Iifname),
                Operator::EQ,
                s(format!("{}*", rules.tap_prefix)),
            ),
            count(UNKNOWN_TAP),
            drop_(),
        ],
    ));
    for p in rules.ports.values() {
        let c = tap_chain(&p.tap);
        for r in port_rules(p) {
            out.push(rule(bridge, &c, r));
        }
    }

    // inet nubis: guests may not reach the host.
    out.push(add(NfListObject::Chain(base_chain(
        inet,
        INPUT,
        NfHook::Input,
        0,
    ))));
    let from_guests = || matches(meta(MetaKey::Iifname), Operator::EQ, s(&rules.bridge));
    out.push(rule(
        inet,
        INPUT,
        vec![
            from_guests(),
            matches(
                Expression::Named(NamedExpression::CT(nftables::expr::CT {
                    key: Cow::Borrowed("state"),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                Expression::List(vec![s("established"), s("related")]),
            ),
            accept(),
        ],
    ));
    out.push(rule(
        inet,
        INPUT,
        vec![
            from_guests(),
            matches(field("icmp", "type"), Operator::EQ, s("echo-request")),
            accept(),
        ],
    ));
    out.push(rule(
        inet,
        INPUT,
        vec![from_guests(), count(HOST_BLOCKED), drop_()],
    ));
    Nftables {
        objects: Cow::Owned(out),
    }
}

/// The batch that removes the agent's tables (firewall switched off). Each
/// table is added first so that deleting it cannot fail.
pub fn render_removal() -> Nftables<'static> {
    let mut out = Vec::new();
    for f in [NfFamily::Bridge, NfFamily::INet] {
        out.push(add(NfListObject::Table(table(f))));
        out.push(delete(NfListObject::Table(table(f))));
    }
    Nftables {
        objects: Cow::Owned(out),
    }
}

/// Reads the chains and counters (with their packet counts) of one of the
/// agent's tables from `nft -j list table <family> nubis` output.
pub fn parse_listing(json: &str) -> Result<(BTreeSet<String>, BTreeMap<String, u64>)> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|source| Error::Json {
        context: "nft -j list table".into(),
        source,
    })?;
    let mut chains = BTreeSet::new();
    let mut counters = BTreeMap::new();
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| Error::Protocol("nft listing without an \"nftables\" array".into()))?;
    for item in items {
        if let Some(name) = item
            .get("chain")
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
        {
            chains.insert(name.to_string());
        }
        if let Some(c) = item.get("counter") {
            if let Some(name) = c.get("name").and_then(|n| n.as_str()) {
                let packets = c.get("packets").and_then(|p| p.as_u64()).unwrap_or(0);
                counters.insert(name.to_string(), packets);
            }
        }
    }
    Ok((chains, counters))
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
