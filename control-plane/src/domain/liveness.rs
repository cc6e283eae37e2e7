//! Node liveness rules: telling "host gone" from "we could not hear it".
//!
//! A node whose lease expired *looks* lost. Its instances are stopped
//! ("node lost") only when all of these hold:
//! - **grace**: the current leader has led for at least one lease TTL plus
//!   one heartbeat interval (`nodes.lease_ttl_seconds +
//!   nodes.heartbeat_interval_seconds`), so after a control-plane restart,
//!   an outage or a leader change every live agent has had time to reconnect
//!   and renew before anyone is judged; the grace also starts again when
//!   the leader's own node-loss runs failed for longer than two periods plus
//!   a heartbeat interval (an etcd stall silences every heartbeat as much as
//!   a leader change does; tasks/builtin.rs `NodeLoss::hearing_for`);
//!   and a node still looking lost when a disruption clears gets one grace
//!   from that moment ([`Hearing::since_disruption`]): the nodes come back
//!   one by one after an outage, and the last of them must not be judged
//!   the moment the others make the disruption rule pass;
//! - **no disruption**: at most `nodes.disruption_fraction` (default 1/3) of
//!   the counted nodes look lost, and no zone with at least
//!   `nodes.disruption_min_zone_nodes` (default 2) counted nodes has lost
//!   all of them. Otherwise the handler declares a disruption (logged at
//!   error level, shown by `nubis admin tasks`) and stops nobody until the
//!   nodes recover or an operator confirms a node lost
//!   ([`Domain::confirm_node_lost`], which also skips the grace).
//!
//! Counted nodes: alive ones, ones seen alive during this leader's term, and
//! lost-looking ones still holding capacity (loss not yet handled); a host
//! dead long ago whose loss was handled no longer weighs in.
//!
//! Node loss never changes an instance's desired state: the instance becomes
//! `stopped` with the reason while its assignment keeps saying `running`, so
//! no agent is told to stop a VM because a lease expired. When the node
//! registers again, instances it reports running come back `running` on the
//! same VMM (capacity re-claimed); the others get desired `stopped`
//! ([`Domain::settle_returned_node`]).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::Event;
use crate::domain::model::now_ms;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::store::Tx;

/// An operator's confirmation that a node is really gone
/// (`lost-confirmations/<node>`): valid for the node's lease at the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostConfirmation {
    /// The node.
    pub node_id: NodeId,
    /// The node's lease when confirmed (a re-registration voids it).
    pub lease_id: i64,
    /// When.
    pub confirmed_ms: i64,
}

/// The thresholds of the disruption rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// More than this fraction of counted nodes lost = disruption.
    pub fraction: f64,
    /// A zone with at least this many counted nodes, all lost = disruption.
    pub min_zone_nodes: usize,
}

/// One node as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Node.
    pub id: NodeId,
    /// Zone.
    pub zone: String,
    /// Lease alive.
    pub alive: bool,
    /// Counted in the population (see the module doc).
    pub counted: bool,
    /// Confirmed lost by an operator.
    pub confirmed: bool,
}

/// The rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing looks lost.
    Healthy,
    /// These nodes are lost: stop their instances.
    Lost(Vec<NodeId>),
    /// Too many at once: stop only operator-confirmed nodes.
    Disruption {
        /// Counted nodes that look lost.
        lost: usize,
        /// Counted nodes.
        total: usize,
        /// Zones whose every counted node looks lost.
        zones: Vec<String>,
        /// Confirmed nodes to handle anyway.
        confirmed: Vec<NodeId>,
    },
}

/// Applies the disruption rule.
pub fn judge(samples: &[Sample], rules: Rules) -> Judgement {
    let counted: Vec<&Sample> = samples.iter().filter(|s| s.counted).collect();
    let lost: Vec<&Sample> = counted.iter().copied().filter(|s| !s.alive).collect();
    if lost.is_empty() {
        return Judgement::Healthy;
    }
    let mut zones: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &counted {
        let z = zones.entry(&s.zone).or_default();
        z.0 += 1;
        if !s.alive {
            z.1 += 1;
        }
    }
    let dead_zones: Vec<String> = zones
        .iter()
        .filter(|(_, (n, l))| *n >= rules.min_zone_nodes.max(1) && l == n)
        .map(|(z, _)| z.to_string())
        .collect();
    let too_many = lost.len() as f64 > rules.fraction * counted.len() as f64;
    if too_many || !dead_zones.is_empty() {
        return Judgement::Disruption {
            lost: lost.len(),
            total: counted.len(),
            zones: dead_zones,
            confirmed: lost
                .iter()
                .filter(|s| s.confirmed)
                .map(|s| s.id.clone())
                .collect(),
        };
    }
    Judgement::Lost(lost.iter().map(|s| s.id.clone()).collect())
}

/// How long the leader has been able to hear the agents, as the grace rule
/// needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hearing {
    /// Since the term began or etcd came back (the grace of the module doc).
    pub led_for: Duration,
    /// Since the last run that judged a disruption, during this term.
    pub since_disruption: Option<Duration>,
}

impl Hearing {
    /// How long single lost nodes have been judged fairly: since the term
    /// began, and since the last disruption cleared.
    fn for_single_losses(&self) -> Duration {
        self.since_disruption
            .map_or(self.led_for, |d| d.min(self.led_for))
    }
}

/// What one node-loss run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LossReport {
    /// Still within the grace after the leader's start (time left).
    pub grace_left: Option<Duration>,
    /// Counted nodes looking lost.
    pub looking_lost: usize,
    /// Counted nodes.
    pub counted: usize,
    /// A disruption is declared: zones wholly lost, if any.
    pub disruption: Option<Vec<String>>,
    /// Instances stopped.
    pub stopped: usize,
    /// The rule judged a disruption (also during the grace).
    pub disrupted: bool,
}

impl LossReport {
    /// One line for the task status.
    pub fn summary(&self) -> String {
        let base = format!("{} of {} nodes look lost", self.looking_lost, self.counted);
        if let Some(left) = self.grace_left {
            return format!("grace ({} s left): {base}", left.as_secs());
        }
        match &self.disruption {
            Some(zones) if zones.is_empty() => format!(
                "DISRUPTION: {base}; stopping nobody (confirm with `nubis admin nodes confirm-lost`); stopped {}",
                self.stopped
            ),
            Some(zones) => format!(
                "DISRUPTION: {base} (every node of {}); stopping nobody (confirm with `nubis admin nodes confirm-lost`); stopped {}",
                zones.join(", "),
                self.stopped
            ),
            None => format!("{base}; stopped {} instances", self.stopped),
        }
    }
}

impl Domain {
    /// The configured disruption thresholds.
    pub fn liveness_rules(&self) -> Rules {
        Rules {
            fraction: self.cfg.nodes.disruption_fraction,
            min_zone_nodes: self.cfg.nodes.disruption_min_zone_nodes as usize,
        }
    }

    /// How long a new leader waits before judging nodes: one lease TTL plus
    /// one heartbeat interval.
    pub fn liveness_grace(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.cfg.nodes.lease_ttl_seconds + self.cfg.nodes.heartbeat_interval_seconds,
        ))
    }

    /// One node-loss run of the leader that has heard agents for `hearing`.
    /// `seen` holds the nodes seen alive during this term (updated here).
    pub async fn handle_node_loss(
        &self,
        hearing: Hearing,
        seen: &mut HashSet<NodeId>,
    ) -> Result<LossReport> {
        let led_for = hearing.led_for;
        // A node the watch-fed cache shows lost is checked against etcd
        // itself before anyone is judged (the cache may lag a re-register).
        if self.nodes.views().iter().any(|v| !v.alive) {
            self.nodes.refresh().await?;
        }
        let views = self.nodes.views();
        let confirmations = self.lost_confirmations().await?;
        let mut samples = Vec::with_capacity(views.len());
        for v in &views {
            if v.alive {
                seen.insert(v.node.id.clone());
            }
            let holds = v.alloc.used.vcpus > 0 || v.alloc.used.memory_mib > 0;
            let confirmed = confirmations
                .iter()
                .any(|c| c.node_id == v.node.id && c.lease_id == v.node.lease_id);
            samples.push(Sample {
                id: v.node.id.clone(),
                zone: v.node.availability_zone.clone(),
                alive: v.alive,
                counted: v.alive || holds || seen.contains(&v.node.id),
                confirmed,
            });
        }
        let mut report = LossReport {
            looking_lost: samples.iter().filter(|s| s.counted && !s.alive).count(),
            counted: samples.iter().filter(|s| s.counted).count(),
            ..Default::default()
        };
        let grace = self.liveness_grace();
        let doomed = match judge(&samples, self.liveness_rules()) {
            Judgement::Healthy => Vec::new(),
            Judgement::Lost(ids) if hearing.for_single_losses() >= grace => ids,
            Judgement::Lost(_) => {
                report.grace_left = Some(grace - hearing.for_single_losses());
                samples
                    .iter()
                    .filter(|s| s.confirmed && !s.alive)
                    .map(|s| s.id.clone())
                    .collect()
            }
            Judgement::Disruption {
                lost,
                total,
                zones,
                confirmed,
            } => {
                report.disrupted = true;
                if led_for < grace {
                    report.grace_left = Some(grace - led_for);
                } else {
                    report.disruption = Some(zones.clone());
                    tracing::error!(
                        lost,
                        total,
                        zones = ?zones,
                        fraction = self.cfg.nodes.disruption_fraction,
                        "DISRUPTION: too many nodes look lost at once (control-plane or network \
                         trouble, not host failure?); stopping no instance until they return or \
                         an operator confirms a node lost"
                    );
                }
                confirmed
            }
        };
        for id in doomed {
            report.stopped += self.stop_instances_of_lost_node(&id).await?;
            let _ = self.clear_confirmation(&id).await;
        }
        Ok(report)
    }

    /// Stops the instances of a lost node (each change guarded by its
    /// liveness key still being absent). Returns how many changed.
    async fn stop_instances_of_lost_node(&self, node: &NodeId) -> Result<usize> {
        let assignments = self.store.assignments().list_of_node(node).await?;
        let mut n = 0;
        for (_, a) in assignments {
            let key = self
                .store
                .instances()
                .key(&a.value.account, &a.value.instance_id);
            match self.apply_node_lost(&key, node).await {
                Ok(c) if c.previous != c.current => n += 1,
                Ok(_) => {}
                Err(e @ Error::Fenced) => return Err(e),
                Err(e) => {
                    tracing::warn!(instance = %a.value.instance_id, error = %e, "node-loss handling failed")
                }
            }
        }
        if n > 0 {
            tracing::warn!(node = %node, instances = n, "node lost: its instances are stopped");
        }
        Ok(n)
    }

    async fn lost_confirmations(&self) -> Result<Vec<LostConfirmation>> {
        let list = self.store.nodes().lost_confirmations().await?;
        Ok(list.into_iter().map(|(_, v)| v.value).collect())
    }

    async fn clear_confirmation(&self, node: &NodeId) -> Result<()> {
        self.store.nodes().clear_lost_confirmation(node).await
    }

    /// ConfirmNodeLost (operator): the node is really gone; the node-loss
    /// task stops its instances at its next run even during a disruption
    /// or the grace. Fails while the node's lease is alive.
    pub async fn confirm_node_lost(&self, caller: &Caller, node_id: &str) -> Result<()> {
        caller.require_operator()?;
        let id = NodeId::parse(node_id)?;
        let nodes = self.store.nodes();
        let node = nodes.get(&id).await?.ok_or_else(|| {
            Error::not_found(
                "InvalidNodeID.NotFound",
                format!("the node '{id}' does not exist"),
            )
        })?;
        let rec = LostConfirmation {
            node_id: id.clone(),
            lease_id: node.value.lease_id,
            confirmed_ms: now_ms(),
        };
        let mut tx = Tx::new();
        tx.expect_rev(&nodes.key(&id), node.mod_revision);
        nodes.expect_lost(&mut tx, &id);
        nodes.stage_lost_confirmation(&mut tx, &rec)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::incorrect_state(
                "IncorrectNodeState",
                format!("node {id} is alive (or re-registered meanwhile); nothing to confirm"),
            ));
        }
        tracing::warn!(node = %id, "operator confirmed the node lost");
        Ok(())
    }

    /// A node registered again: its instances stopped by node loss
    /// (state `stopped`, desired still `running`) that it does not report
    /// as running get desired `stopped`, so the agent keeps them stopped.
    /// (Those it reports running came back through their reports.)
    pub(crate) async fn settle_returned_node(
        &self,
        node: &NodeId,
        running: &HashSet<String>,
    ) -> Result<()> {
        let assignments = self.store.assignments().list_of_node(node).await?;
        for (_, a) in assignments {
            if running.contains(a.value.instance_id.as_str()) {
                continue;
            }
            let key = self
                .store
                .instances()
                .key(&a.value.account, &a.value.instance_id);
            if let Err(e) = self
                .apply_event(&key, &Event::HostReturnedWithout, true, None)
                .await
            {
                tracing::warn!(instance = %a.value.instance_id, error = %e, "settling a returned node's instance");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, zone: &str, alive: bool) -> Sample {
        Sample {
            id: NodeId::parse(id).unwrap_or_else(|_| NodeId::generate()),
            zone: zone.into(),
            alive,
            counted: true,
            confirmed: false,
        }
    }

    const RULES: Rules = Rules {
        fraction: 1.0 / 3.0,
        min_zone_nodes: 2,
    };

    #[test]
    fn one_node_of_three_is_lost() {
        let nodes = [s("a", "z1", false), s("b", "z2", true), s("c", "z3", true)];
        assert_eq!(
            judge(&nodes, RULES),
            Judgement::Lost(vec![nodes[0].id.clone()])
        );
    }

    #[test]
    fn more_than_a_third_is_a_disruption() {
        let nodes = [s("a", "z1", false), s("b", "z2", false), s("c", "z3", true)];
        assert!(matches!(
            judge(&nodes, RULES),
            Judgement::Disruption {
                lost: 2,
                total: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_whole_zone_is_a_disruption_when_it_has_two_nodes() {
        let mut nodes = vec![
            s("a", "z1", false),
            s("b", "z1", false),
            s("c", "z2", true),
            s("d", "z2", true),
            s("e", "z3", true),
            s("f", "z3", true),
        ];
        match judge(&nodes, RULES) {
            Judgement::Disruption { zones, .. } => assert_eq!(zones, vec!["z1".to_string()]),
            j => panic!("{j:?}"),
        }
        // Half the zone: an ordinary loss.
        nodes[1].alive = true;
        assert_eq!(
            judge(&nodes, RULES),
            Judgement::Lost(vec![nodes[0].id.clone()])
        );
    }

    #[test]
    fn uncounted_nodes_do_not_weigh_and_confirmed_ones_are_listed() {
        let mut nodes = vec![
            s("a", "z1", false),
            s("b", "z2", false),
            s("c", "z3", true),
            s("d", "z3", true),
        ];
        // b is not counted: 1 of 3 lost.
        nodes[1].counted = false;
        assert_eq!(
            judge(&nodes, RULES),
            Judgement::Lost(vec![nodes[0].id.clone()])
        );
        // Counted, 2 of 4 lost: a disruption, but the confirmed one is listed.
        nodes[1].counted = true;
        nodes[1].confirmed = true;
        match judge(&nodes, RULES) {
            Judgement::Disruption { confirmed, .. } => {
                assert_eq!(confirmed, vec![nodes[1].id.clone()])
            }
            j => panic!("{j:?}"),
        }
        assert_eq!(judge(&[s("c", "z3", true)], RULES), Judgement::Healthy);
    }
}
