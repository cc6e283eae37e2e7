//! Placement: which nodes get the instances of one request.
//!
//! Pure and synchronous over the node cache's views ([`NodeView`], read in
//! place), so it is tested without etcd. The caller (domain::launch) turns
//! the result into one etcd transaction that compares every chosen node's
//! allocation `mod_revision` and liveness key: a concurrent placement by
//! another replica makes the transaction fail, and the caller re-reads those
//! nodes and re-runs this. Nodes that other in-flight placements of the same
//! replica hold are passed as `skip` (domain::nodecache).
//!
//! 1. Filters: node alive (lease present), not cordoned or draining, in the
//!    requested zone, has the image (and manifest sha256 when the image pins
//!    one), has room for the instance after overcommit, has a free address.
//! 2. Weighers: `spread` (default) prefers the zone with fewest instances of
//!    this request, then the least-used zone, then the least-used host;
//!    `binpack` prefers the most-used host that still fits. Under spread the
//!    host is drawn at random among those within [`SPREAD_JITTER`] of the
//!    least used (binpack: a tiny jitter) so replicas rarely collide.
//! 3. Fewer than `min_count` placeable: `InsufficientInstanceCapacity`
//!    naming the zone and what was missing.

use crate::config::Policy;
use crate::domain::model::{Node, NodeAlloc, Resources};
use crate::error::{Error, Result};

/// Under `spread`, a host is picked uniformly at random among those whose
/// utilization is within this much of the least used, so concurrent
/// placements (several clients, several replicas) rarely pick the same host
/// and conflict; picking strictly the least used makes everyone chase the
/// last few hosts of each fill level (measured: ~40 % of RunInstances calls
/// retried; docs/benchmarks.md).
pub const SPREAD_JITTER: f64 = 0.20;
/// The same for `binpack`, kept small so it still fills hosts in turn.
pub const BINPACK_JITTER: f64 = 0.005;

/// Overcommit ratios.
#[derive(Debug, Clone, Copy)]
pub struct Overcommit {
    /// vCPU ratio.
    pub cpu: f64,
    /// Memory ratio.
    pub memory: f64,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The record.
    pub node: Node,
    /// Its allocation.
    pub alloc: NodeAlloc,
    /// mod_revision of the allocation key (0 = absent).
    pub alloc_rev: i64,
    /// Lease alive.
    pub alive: bool,
}

/// What to place.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// vCPUs per instance.
    pub vcpus: u32,
    /// MiB per instance.
    pub memory_mib: u32,
    /// Image name nodes must have.
    pub image_location: &'a str,
    /// Manifest sha256 nodes must have (empty = any).
    pub image_sha256: &'a str,
    /// Zone constraint.
    pub zone: Option<&'a str>,
    /// Fewest instances acceptable.
    pub min_count: u32,
    /// Most instances wanted.
    pub max_count: u32,
}

/// Placeable resources of a node after overcommit.
pub fn allocatable(node: &Node, oc: Overcommit) -> Resources {
    Resources {
        vcpus: (f64::from(node.capacity.vcpus) * oc.cpu).floor() as u32,
        memory_mib: (f64::from(node.capacity.memory_mib) * oc.memory).floor() as u32,
    }
}

fn utilization(used: Resources, total: Resources) -> f64 {
    let c = if total.vcpus == 0 {
        1.0
    } else {
        f64::from(used.vcpus) / f64::from(total.vcpus)
    };
    let m = if total.memory_mib == 0 {
        1.0
    } else {
        f64::from(used.memory_mib) / f64::from(total.memory_mib)
    };
    c.max(m)
}

/// Chooses nodes: returns, per placed instance, the index into `nodes`
/// (between `min_count` and `max_count` entries). Nodes whose index is in
/// `skip` (sorted) are not considered.
///
/// Cost: one pass over the nodes to filter, then one pass over the
/// candidates per instance; zones are small integers, so no hashing or
/// allocation per candidate.
pub fn place(
    policy: Policy,
    oc: Overcommit,
    max_hosts: u32,
    nodes: &[NodeView],
    skip: &[usize],
    req: &Request<'_>,
) -> Result<Vec<usize>> {
    let insufficient = |message: String| Error::InsufficientCapacity {
        zone: req.zone.unwrap_or("any").to_string(),
        message,
    };

    // Filters.
    let mut reasons = FilterCounts::default();
    let mut zones: Vec<&str> = Vec::new();
    let mut cands: Vec<Cand> = Vec::new();
    let mut skip = skip.iter().peekable();
    for (i, v) in nodes.iter().enumerate() {
        while skip.next_if(|&&s| s < i).is_some() {}
        if skip.next_if_eq(&&i).is_some() {
            continue;
        }
        let az = v.node.availability_zone.as_str();
        if req.zone.is_some_and(|z| z != az) {
            continue;
        }
        reasons.in_zone += 1;
        if !v.alive {
            reasons.not_ready += 1;
            continue;
        }
        if v.node.cordoned || v.node.draining {
            reasons.cordoned += 1;
            continue;
        }
        let has_image = v.node.images.iter().any(|im| {
            im.name == req.image_location
                && (req.image_sha256.is_empty() || im.manifest_sha256 == req.image_sha256)
        });
        if !has_image {
            reasons.no_image += 1;
            continue;
        }
        let zone = match zones.iter().position(|z| *z == az) {
            Some(z) => z,
            None => {
                zones.push(az);
                zones.len() - 1
            }
        };
        let total = allocatable(&v.node, oc);
        cands.push(Cand {
            idx: i,
            zone,
            total,
            used: v.alloc.used,
            free_hosts: max_hosts.saturating_sub(v.alloc.hosts.len() as u32),
            placed: 0,
        });
    }

    // Zone totals (for spread): used, total, instances of this request.
    let mut zone_used = vec![(Resources::default(), Resources::default()); zones.len()];
    let mut zone_placed = vec![0u32; zones.len()];
    for c in &cands {
        let e = &mut zone_used[c.zone];
        e.0.vcpus += c.used.vcpus;
        e.0.memory_mib += c.used.memory_mib;
        e.1.vcpus += c.total.vcpus;
        e.1.memory_mib += c.total.memory_mib;
    }

    let mut out = Vec::new();
    let mut scored: Vec<(usize, Key)> = Vec::with_capacity(cands.len());
    let mut near: Vec<usize> = Vec::new();
    for _ in 0..req.max_count {
        // Score every candidate that fits; under spread, pick uniformly among
        // those in the best (zone, request-host, zone-usage) group whose
        // utilization is within SPREAD_JITTER of the group's least used.
        let zone_pct: Vec<u64> = zone_used
            .iter()
            .map(|(u, t)| (utilization(*u, *t) * 100.0) as u64)
            .collect();
        scored.clear();
        let mut best: Option<(usize, Key)> = None;
        for (ci, c) in cands.iter().enumerate() {
            let after = Resources {
                vcpus: c.used.vcpus + req.vcpus,
                memory_mib: c.used.memory_mib + req.memory_mib,
            };
            if after.vcpus > c.total.vcpus
                || after.memory_mib > c.total.memory_mib
                || c.free_hosts == 0
            {
                continue;
            }
            let node_util = utilization(after, c.total);
            let key = match policy {
                Policy::Spread => (zone_placed[c.zone], c.placed, zone_pct[c.zone], node_util),
                Policy::Binpack => (
                    0,
                    0,
                    0,
                    (1.0 - node_util) + rand::random::<f64>() * BINPACK_JITTER,
                ),
            };
            if best.as_ref().is_none_or(|(_, b)| key_lt(&key, b)) {
                best = Some((ci, key));
            }
            if policy == Policy::Spread {
                scored.push((ci, key));
            }
        }
        if policy == Policy::Spread {
            if let Some((_, b)) = best {
                near.clear();
                near.extend(
                    scored
                        .iter()
                        .filter(|(_, k)| {
                            (k.0, k.1, k.2) == (b.0, b.1, b.2) && k.3 <= b.3 + SPREAD_JITTER
                        })
                        .map(|(ci, _)| *ci),
                );
                if !near.is_empty() {
                    let pick = near[rand::random::<u64>() as usize % near.len()];
                    best = Some((pick, b));
                }
            }
        }
        let Some((ci, _)) = best else { break };
        let c = &mut cands[ci];
        c.used.vcpus += req.vcpus;
        c.used.memory_mib += req.memory_mib;
        c.free_hosts -= 1;
        c.placed += 1;
        zone_placed[c.zone] += 1;
        zone_used[c.zone].0.vcpus += req.vcpus;
        zone_used[c.zone].0.memory_mib += req.memory_mib;
        out.push(c.idx);
    }

    if (out.len() as u32) < req.min_count {
        let msg = if reasons.in_zone == 0 {
            "no nodes in this zone".to_string()
        } else if cands.is_empty() {
            format!(
                "no eligible node ({} not ready, {} cordoned or draining, {} without image '{}')",
                reasons.not_ready, reasons.cordoned, reasons.no_image, req.image_location
            )
        } else {
            format!(
                "room for {} of {} instances of {} vCPU / {} MiB",
                out.len(),
                req.min_count,
                req.vcpus,
                req.memory_mib
            )
        };
        return Err(insufficient(msg));
    }
    Ok(out)
}

/// Spread: (zone's instances of this request, host's instances of this
/// request, zone usage %, host utilization after); binpack: only the last.
type Key = (u32, u32, u64, f64);

fn key_lt(a: &Key, b: &Key) -> bool {
    (a.0, a.1, a.2) < (b.0, b.1, b.2) || ((a.0, a.1, a.2) == (b.0, b.1, b.2) && a.3 < b.3)
}

#[derive(Debug, Default)]
struct FilterCounts {
    in_zone: u32,
    not_ready: u32,
    cordoned: u32,
    no_image: u32,
}

#[derive(Debug)]
struct Cand {
    idx: usize,
    zone: usize,
    total: Resources,
    used: Resources,
    free_hosts: u32,
    placed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::domain::model::NodeImage;
    use crate::ids::NodeId;

    const OC: Overcommit = Overcommit {
        cpu: 1.0,
        memory: 1.0,
    };

    fn node(zone: &str, vcpus: u32, mem: u32) -> NodeView {
        NodeView {
            node: Node {
                underlay_ip: String::new(),
                id: NodeId::generate(),
                host_id: "h".into(),
                availability_zone: zone.into(),
                capacity: Resources {
                    vcpus,
                    memory_mib: mem,
                },
                images: vec![NodeImage {
                    name: "hello".into(),
                    manifest_sha256: "abc".into(),
                }],
                agent_version: "t".into(),
                cordoned: false,
                draining: false,
                registered_ms: 0,
                lease_id: 1,
                credential_key_id: "k".into(),
                ip_block: 0,
                metrics_endpoint: String::new(),
                pending_approval: false,
            },
            alloc: NodeAlloc::default(),
            alloc_rev: 0,
            alive: true,
        }
    }

    fn req(count: u32) -> Request<'static> {
        Request {
            vcpus: 1,
            memory_mib: 64,
            image_location: "hello",
            image_sha256: "",
            zone: None,
            min_count: count,
            max_count: count,
        }
    }

    fn zones_of(nodes: &[NodeView], idx: &[usize]) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for &i in idx {
            *m.entry(nodes[i].node.availability_zone.clone())
                .or_default() += 1;
        }
        m
    }

    #[test]
    fn spread_balances_zones_and_hosts() {
        let nodes: Vec<_> = ["a", "a", "b", "b", "c", "c"]
            .iter()
            .map(|z| node(z, 8, 1024))
            .collect();
        let idx = place(Policy::Spread, OC, 100, &nodes, &[], &req(6)).unwrap();
        let z = zones_of(&nodes, &idx);
        assert_eq!(z.len(), 3);
        assert!(z.values().all(|&n| n == 2), "{z:?}");
        let mut hosts = idx.clone();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 6, "one instance per host");
    }

    #[test]
    fn binpack_fills_one_host() {
        let mut nodes: Vec<_> = (0..4).map(|_| node("a", 8, 1024)).collect();
        nodes[2].alloc.used = Resources {
            vcpus: 2,
            memory_mib: 128,
        };
        let idx = place(Policy::Binpack, OC, 100, &nodes, &[], &req(4)).unwrap();
        assert!(idx.iter().all(|&i| i == 2), "{idx:?}");
    }

    #[test]
    fn zone_constraint_and_capacity() {
        let nodes = vec![node("a", 2, 128), node("b", 8, 1024)];
        let mut r = req(2);
        r.zone = Some("a");
        let idx = place(Policy::Spread, OC, 100, &nodes, &[], &r).unwrap();
        assert_eq!(idx, vec![0, 0]);
        r.min_count = 3;
        r.max_count = 3;
        let e = place(Policy::Spread, OC, 100, &nodes, &[], &r).unwrap_err();
        assert_eq!(e.code(), "InsufficientInstanceCapacity");
        assert!(e.to_string().contains("zone a"), "{e}");
        r.zone = Some("zz");
        assert!(place(Policy::Spread, OC, 100, &nodes, &[], &r).is_err());
    }

    #[test]
    fn min_max_count() {
        let nodes = vec![node("a", 3, 1024)];
        let mut r = req(1);
        r.max_count = 10;
        assert_eq!(
            place(Policy::Spread, OC, 100, &nodes, &[], &r)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn overcommit_and_addresses() {
        let nodes = vec![node("a", 2, 1024)];
        let oc = Overcommit {
            cpu: 2.0,
            memory: 1.0,
        };
        assert_eq!(
            place(Policy::Spread, oc, 100, &nodes, &[], &req(4))
                .unwrap()
                .len(),
            4
        );
        assert!(place(Policy::Spread, oc, 100, &nodes, &[], &req(5)).is_err());
        // Address block exhaustion limits too.
        assert!(place(Policy::Spread, oc, 3, &nodes, &[], &req(4)).is_err());
    }

    #[test]
    fn cordoned_dead_and_imageless_nodes_are_filtered() {
        let mut nodes = vec![
            node("a", 8, 1024),
            node("a", 8, 1024),
            node("a", 8, 1024),
            node("a", 8, 1024),
        ];
        nodes[0].node.cordoned = true;
        nodes[1].alive = false;
        nodes[2].node.images.clear();
        nodes[3].node.draining = true;
        let e = place(Policy::Spread, OC, 100, &nodes, &[], &req(1)).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("1 not ready") && m.contains("2 cordoned") && m.contains("1 without image"),
            "{m}"
        );
        nodes[0].node.cordoned = false;
        assert_eq!(
            place(Policy::Spread, OC, 100, &nodes, &[], &req(1)).unwrap(),
            vec![0]
        );
    }

    #[test]
    fn skipped_nodes_are_not_used() {
        let nodes: Vec<_> = (0..6).map(|_| node("a", 8, 1024)).collect();
        let idx = place(Policy::Spread, OC, 100, &nodes, &[0, 2, 3, 5], &req(4)).unwrap();
        assert!(idx.iter().all(|&i| i == 1 || i == 4), "{idx:?}");
        let all = [0, 1, 2, 3, 4, 5];
        let e = place(Policy::Spread, OC, 100, &nodes, &all, &req(1)).unwrap_err();
        assert_eq!(e.code(), "InsufficientInstanceCapacity");
    }

    #[test]
    fn pinned_manifest() {
        let nodes = vec![node("a", 8, 1024)];
        let mut r = req(1);
        r.image_sha256 = "abc";
        assert!(place(Policy::Spread, OC, 100, &nodes, &[], &r).is_ok());
        r.image_sha256 = "def";
        assert!(place(Policy::Spread, OC, 100, &nodes, &[], &r).is_err());
    }
}
