//! The network view of one node (what `WatchNetwork` sends,
//! proto/nubis/node/v1/node.proto `NetworkView`): every VPC with an
//! instance assigned to the node that is not terminated, with all of the
//! VPC's endpoints (on any node), its subnets, and the security groups of
//! the node's instances plus every group their rules name as a peer.
//!
//! Computed from the replica's watch-fed [`NetState`] (see
//! [`super::netcache`]), in time proportional to the view's size.

use std::collections::{BTreeMap, BTreeSet};

use super::netcache::{CachedEndpoint, NetState};
use super::{RuleSource, SecurityGroup, SgRule, VpcSubnet};
use crate::ids::{NodeId, SecurityGroupId, VpcId};

/// A node's whole view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkView {
    /// The etcd revision it reflects (the newest the cache applied).
    pub revision: i64,
    /// By VPC id.
    pub vpcs: Vec<VpcView>,
}

/// One VPC of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcView {
    /// Id.
    pub vpc_id: VpcId,
    /// VNI.
    pub vni: u32,
    /// Block.
    pub cidr: String,
    /// Every subnet of the VPC.
    pub subnets: Vec<SubnetView>,
    /// Every endpoint of the VPC, by instance id.
    pub endpoints: Vec<EndpointView>,
    /// Groups of this node's instances (with rules) and their rules' peer
    /// groups (peer-only groups without rules), by id.
    pub security_groups: Vec<GroupView>,
}

/// A subnet of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetView {
    /// Id.
    pub subnet_id: String,
    /// Block.
    pub cidr: String,
    /// Base + 1.
    pub gateway: String,
    /// Its route table sends 0.0.0.0/0 to an internet gateway.
    pub internet_route: bool,
}

/// An endpoint (an instance with a VPC address, placed, not terminated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// Instance.
    pub instance_id: String,
    /// Private address.
    pub ip: String,
    /// MAC.
    pub mac: String,
    /// Subnet.
    pub subnet_id: String,
    /// Underlay address of its node (empty: that node has none).
    pub node_underlay_ip: String,
    /// Its node.
    pub node_id: String,
    /// Its current groups.
    pub security_group_ids: Vec<String>,
    /// Public address (empty: none).
    pub public_ip: String,
    /// Which interface of the instance (0: the primary one).
    pub device_index: u32,
    /// The interface's id (empty: the primary interface derived from the
    /// instance).
    pub interface_id: String,
}

/// A security group of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Id.
    pub group_id: String,
    /// Inbound rules, one peer each.
    pub ingress: Vec<RuleView>,
    /// Outbound rules, one peer each.
    pub egress: Vec<RuleView>,
}

/// One rule with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleView {
    /// `tcp`, `udp`, `icmp`, `-1` or a protocol number.
    pub protocol: String,
    /// tcp/udp: first port; icmp: type (-1 any); otherwise -1.
    pub from_port: i32,
    /// tcp/udp: last port; icmp: code (-1 any); otherwise -1.
    pub to_port: i32,
    /// A peer block (or empty).
    pub cidr: String,
    /// A peer group (or empty).
    pub peer_group_id: String,
}

/// The public address of an endpoint (empty when it has none).
pub fn endpoint_public_ip(state: &NetState, ep: &CachedEndpoint) -> String {
    state
        .public_ip_of(&ep.instance_id)
        .unwrap_or_default()
        .to_string()
}

/// Whether a subnet routes 0.0.0.0/0 to its VPC's attached internet
/// gateway.
pub fn subnet_internet_route(state: &NetState, subnet: &VpcSubnet) -> bool {
    state.internet_routed(subnet)
}

/// A stored rule, flattened for the view.
pub fn rule_view(r: &SgRule) -> RuleView {
    let (cidr, peer_group_id) = match &r.peer {
        RuleSource::Cidr(c) => (c.clone(), String::new()),
        RuleSource::Group(g) => (String::new(), g.to_string()),
    };
    let ported = matches!(r.protocol.as_str(), "tcp" | "udp" | "icmp");
    let port = |p: Option<i32>| if ported { p.unwrap_or(-1) } else { -1 };
    RuleView {
        protocol: r.protocol.clone(),
        from_port: port(r.from_port),
        to_port: port(r.to_port),
        cidr,
        peer_group_id,
    }
}

fn group_view(g: &SecurityGroup, with_rules: bool) -> GroupView {
    let rules = |rs: &[SgRule]| {
        if with_rules {
            rs.iter().map(rule_view).collect()
        } else {
            Vec::new()
        }
    };
    GroupView {
        group_id: g.id.to_string(),
        ingress: rules(&g.ingress),
        egress: rules(&g.egress),
    }
}

fn endpoint_view(state: &NetState, ep: &CachedEndpoint) -> EndpointView {
    EndpointView {
        instance_id: ep.instance_id.to_string(),
        ip: ep.ip.clone(),
        mac: ep.mac.clone(),
        subnet_id: ep.subnet_id.to_string(),
        node_underlay_ip: state.underlay_of(&ep.node_id).to_string(),
        node_id: ep.node_id.to_string(),
        security_group_ids: ep
            .security_group_ids
            .iter()
            .map(|g| g.to_string())
            .collect(),
        public_ip: endpoint_public_ip(state, ep),
        device_index: 0,
        interface_id: ep.interface_id.clone(),
    }
}

/// An endpoint's views: one per secondary interface (same instance and
/// node; no public address), then its primary interface's — last, so that
/// an older agent, which keys endpoints by instance and keeps the last one
/// of an instance, keeps the primary.
fn endpoint_views(state: &NetState, ep: &CachedEndpoint) -> Vec<EndpointView> {
    let primary = endpoint_view(state, ep);
    let mut out = Vec::with_capacity(1 + ep.secondaries.len());
    for s in &ep.secondaries {
        out.push(EndpointView {
            ip: s.ip.clone(),
            mac: s.mac.clone(),
            subnet_id: s.subnet_id.to_string(),
            security_group_ids: s.security_group_ids.iter().map(|g| g.to_string()).collect(),
            public_ip: String::new(),
            device_index: s.device_index,
            interface_id: s.interface_id.to_string(),
            ..primary.clone()
        });
    }
    out.push(primary);
    out
}

/// The view of `node` (see the module docs).
pub fn view_of(state: &NetState, node: &NodeId) -> NetworkView {
    // This node's endpoints, by VPC.
    let mut local: BTreeMap<&VpcId, Vec<&CachedEndpoint>> = BTreeMap::new();
    for ep in state.endpoints_on(node) {
        local.entry(&ep.vpc_id).or_default().push(ep);
    }
    let mut vpcs = Vec::with_capacity(local.len());
    for (vpc_id, mine) in local {
        let Some(vpc) = state.vpc(vpc_id) else {
            continue; // not seen yet (or deleted): next view
        };
        if vpc.vni == 0 {
            continue;
        }
        let subnets = state
            .subnets_of(vpc_id)
            .map(|s| SubnetView {
                subnet_id: s.id.to_string(),
                cidr: s.cidr.clone(),
                gateway: super::Cidr::parse(&s.cidr)
                    .map(|c| super::private_addresses::gateway_of(&c).to_string())
                    .unwrap_or_default(),
                internet_route: subnet_internet_route(state, s),
            })
            .collect();
        let endpoints = state
            .endpoints_in(vpc_id)
            .flat_map(|ep| endpoint_views(state, ep))
            .collect();
        let own: BTreeSet<&SecurityGroupId> = mine
            .iter()
            .flat_map(|ep| {
                ep.security_group_ids
                    .iter()
                    .chain(ep.secondaries.iter().flat_map(|s| &s.security_group_ids))
            })
            .collect();
        let mut peers: BTreeSet<&SecurityGroupId> = BTreeSet::new();
        for g in own.iter().filter_map(|g| state.group(g)) {
            for r in g.ingress.iter().chain(g.egress.iter()) {
                if let RuleSource::Group(p) = &r.peer {
                    if !own.contains(p) {
                        peers.insert(p);
                    }
                }
            }
        }
        let mut security_groups: Vec<GroupView> = own
            .iter()
            .filter_map(|g| state.group(g))
            .map(|g| group_view(g, true))
            .chain(
                peers
                    .iter()
                    .filter_map(|g| state.group(g))
                    .map(|g| group_view(g, false)),
            )
            .collect();
        security_groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        vpcs.push(VpcView {
            vpc_id: vpc_id.clone(),
            vni: vpc.vni,
            cidr: vpc.cidr.clone(),
            subnets,
            endpoints,
            security_groups,
        });
    }
    NetworkView {
        revision: state.revision(),
        vpcs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SecurityGroupRuleId;

    fn rule(protocol: &str, from: Option<i32>, to: Option<i32>, peer: RuleSource) -> SgRule {
        SgRule {
            id: SecurityGroupRuleId::generate(),
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            peer,
            description: String::new(),
        }
    }

    #[test]
    fn rules_flatten_as_the_proto_documents() {
        let g = SecurityGroupId::generate();
        let r = rule_view(&rule(
            "tcp",
            Some(80),
            Some(81),
            RuleSource::Cidr("10.0.0.0/8".into()),
        ));
        assert_eq!(
            (r.protocol.as_str(), r.from_port, r.to_port, r.cidr.as_str()),
            ("tcp", 80, 81, "10.0.0.0/8")
        );
        assert!(r.peer_group_id.is_empty());
        let r = rule_view(&rule("-1", None, None, RuleSource::Group(g.clone())));
        assert_eq!((r.from_port, r.to_port), (-1, -1));
        assert_eq!(r.peer_group_id, g.to_string());
        assert!(r.cidr.is_empty());
        let r = rule_view(&rule(
            "icmp",
            Some(8),
            Some(-1),
            RuleSource::Cidr("0.0.0.0/0".into()),
        ));
        assert_eq!((r.from_port, r.to_port), (8, -1));
        let r = rule_view(&rule(
            "47",
            Some(1),
            Some(2),
            RuleSource::Cidr("0.0.0.0/0".into()),
        ));
        assert_eq!(
            (r.protocol.as_str(), r.from_port, r.to_port),
            ("47", -1, -1)
        );
    }
}
