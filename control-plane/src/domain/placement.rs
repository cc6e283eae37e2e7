//! One instance's read-modify-write together with its assignment and its
//! node's allocation, in one compare-and-swap transaction (retried on
//! conflict), so capacity is never double-booked or leaked.
//!
//! What a [`lifecycle`](crate::domain::lifecycle) transition asks for:
//! - `place`: Start of a stopped instance re-claims vCPU/memory on the node
//!   that holds its root disk (CAS on that node's allocation, guarded by its
//!   liveness key); no room, node lost, cordoned or draining ->
//!   `InsufficientInstanceCapacity` naming the zone. Instances stopped before
//!   node affinity existed (no node recorded) are placed by the scheduler in
//!   their zone;
//! - `release`: vCPU/memory go back to the node; the address, the node
//!   affinity and the assignment (desired `stopped`) stay, so the agent keeps
//!   the directory, disk and TAP;
//! - `unassign` (terminated): the address is freed and the assignment
//!   deleted, so the agent removes everything.

use std::time::Duration;

use crate::domain::model::{Assignment, Instance, NetworkAssignment, NodeAlloc};
use crate::domain::network::mac_for;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{NodeId, ReservationId};
use crate::scheduler::{self, NodeView};
use crate::store::Tx;

const MAX_ATTEMPTS: u32 = 64;

/// One placement decision for a single instance.
pub(super) struct Placed {
    pub(super) node: NodeId,
    pub(super) network: NetworkAssignment,
}

/// What an update wants beyond writing the instance.
pub(super) struct Plan {
    pub(super) inst: Instance,
    pub(super) place: bool,
    pub(super) release: bool,
    pub(super) unassign: bool,
    pub(super) assignment_changed: bool,
}

/// Randomised, growing pause after a lost compare-and-swap.
pub(super) async fn backoff(attempt: u32) {
    let max = 2u64.saturating_pow(attempt.min(6)).min(50);
    let ms = rand::random::<u64>() % (max + 1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn no_room(inst: &Instance, why: String) -> Error {
    Error::InsufficientCapacity {
        zone: inst.availability_zone.clone(),
        message: why,
    }
}

impl Domain {
    /// The stored user data of a reservation (empty when it has none).
    pub(super) async fn user_data_of(&self, reservation: &ReservationId) -> Result<Vec<u8>> {
        Ok(self
            .store
            .get_raw(&self.store.keys().user_data(reservation))
            .await?
            .map(|(v, _)| v)
            .unwrap_or_default())
    }

    /// Read-modify-write of one instance with its assignment and allocation.
    pub(super) async fn update_instance<F>(
        &self,
        key: &str,
        absent_guard: Option<&str>,
        plan: F,
    ) -> Result<(Instance, Instance)>
    where
        F: Fn(&Instance) -> Result<Option<Plan>>,
    {
        for attempt in 0..MAX_ATTEMPTS {
            let cur = self.store.get::<Instance>(key).await?.ok_or_else(|| {
                Error::not_found("InvalidInstanceID.NotFound", "the instance does not exist")
            })?;
            let Some(mut p) = plan(&cur.value)? else {
                return Ok((cur.value.clone(), cur.value));
            };
            let mut tx = Tx::new();
            tx.expect_rev(key, cur.mod_revision);
            if let Some(g) = absent_guard {
                tx.expect_absent(g);
                if self.store.get_raw(g).await?.is_some() {
                    return Ok((cur.value.clone(), cur.value));
                }
            }
            let mut note: Option<(NodeId, NodeAlloc)> = None;
            let mut assignment_written = false;
            if p.place {
                let (node, alloc) = match (p.inst.node_id.clone(), p.inst.network.clone()) {
                    (Some(node), Some(net)) => {
                        let alloc = self.reclaim(&p.inst, &node, &net, &mut tx).await?;
                        (node, alloc)
                    }
                    _ => self.place_new(&mut p.inst, &mut tx).await?,
                };
                self.write_assignment(&p.inst, &node, &mut tx).await?;
                assignment_written = true;
                note = Some((node, alloc));
            } else if p.release || p.unassign {
                if let Some(node) = p.inst.node_id.clone() {
                    let ak = self.store.keys().node_alloc(&node);
                    if let Some(cur_alloc) = self.store.get::<NodeAlloc>(&ak).await? {
                        let mut alloc = cur_alloc.value;
                        // Only what the previous state still held goes back.
                        if p.release && cur.value.state.is_placed() {
                            alloc.used.vcpus = alloc.used.vcpus.saturating_sub(p.inst.vcpus);
                            alloc.used.memory_mib =
                                alloc.used.memory_mib.saturating_sub(p.inst.memory_mib);
                        }
                        if p.unassign {
                            if let Some(net) = &p.inst.network {
                                alloc.hosts.retain(|x| *x != net.host);
                            }
                            alloc.instances = alloc.instances.saturating_sub(1);
                        }
                        tx.expect_rev(&ak, cur_alloc.mod_revision);
                        tx.put(&ak, &alloc)?;
                        note = Some((node.clone(), alloc));
                    }
                    if p.unassign {
                        tx.delete(&self.store.keys().assignment(&node, &p.inst.id));
                        assignment_written = true;
                    }
                }
                if p.unassign {
                    p.inst.node_id = None;
                    p.inst.network = None;
                }
            }
            if p.assignment_changed && !assignment_written {
                if let Some(node) = &p.inst.node_id {
                    let ak = self.store.keys().assignment(node, &p.inst.id);
                    if let Some(a) = self.store.get::<Assignment>(&ak).await? {
                        let mut na = a.value;
                        na.desired = p.inst.desired;
                        na.generation = p.inst.generation;
                        na.force = p.inst.force;
                        tx.expect_rev(&ak, a.mod_revision);
                        tx.put(&ak, &na)?;
                    }
                }
            }
            tx.put(key, &p.inst)?;
            match self.store.commit(tx).await? {
                Some(rev) => {
                    if let Some((node, alloc)) = note {
                        self.nodes.note_alloc(&node, alloc, rev);
                    }
                    return Ok((cur.value, p.inst));
                }
                None => {
                    if let Some(n) = &p.inst.node_id {
                        self.nodes.refresh_some(std::slice::from_ref(n)).await?;
                    }
                    backoff(attempt).await;
                }
            }
        }
        Err(Error::Contention(key.to_string()))
    }

    /// Start on the node that holds the instance's disk: adds its vCPU/memory
    /// to that node's allocation (CAS on the allocation, node alive).
    async fn reclaim(
        &self,
        inst: &Instance,
        node: &NodeId,
        net: &NetworkAssignment,
        tx: &mut Tx,
    ) -> Result<NodeAlloc> {
        let keys = self.store.keys();
        let alive = self.store.get_raw(&keys.node_alive(node)).await?.is_some();
        let record = self
            .store
            .get::<crate::domain::model::Node>(&keys.node(node))
            .await?;
        let record = match record {
            Some(r) if alive => r.value,
            _ => {
                return Err(no_room(
                    inst,
                    format!(
                        "node {node}, which holds the instance's root disk, is not available \
                         (lost or not registered); the instance cannot start elsewhere"
                    ),
                ))
            }
        };
        // A node-lost instance whose VM turned out running (state already
        // `running`): its vCPU/memory go back on the books whatever the
        // room; the VM never left the host.
        let recovering = inst.state == crate::domain::lifecycle::State::Running;
        if (record.cordoned || record.draining) && !recovering {
            return Err(no_room(
                inst,
                format!("node {node}, which holds the instance's root disk, is cordoned"),
            ));
        }
        let ak = keys.node_alloc(node);
        let cur = self.store.get::<NodeAlloc>(&ak).await?;
        let (mut alloc, rev) = cur.map(|v| (v.value, v.mod_revision)).unwrap_or_default();
        let total = scheduler::allocatable(&record, self.overcommit());
        if !recovering
            && (alloc.used.vcpus + inst.vcpus > total.vcpus
                || alloc.used.memory_mib + inst.memory_mib > total.memory_mib)
        {
            return Err(no_room(
                inst,
                format!(
                    "node {node}, which holds the instance's root disk, has no room for \
                     {} vCPU / {} MiB ({} of {} vCPU and {} of {} MiB in use)",
                    inst.vcpus,
                    inst.memory_mib,
                    alloc.used.vcpus,
                    total.vcpus,
                    alloc.used.memory_mib,
                    total.memory_mib
                ),
            ));
        }
        alloc.used.vcpus += inst.vcpus;
        alloc.used.memory_mib += inst.memory_mib;
        if !alloc.hosts.contains(&net.host) {
            alloc.hosts.push(net.host);
        }
        tx.expect_rev(&ak, rev);
        tx.expect_present(&keys.node_alive(node));
        tx.put(&ak, &alloc)?;
        Ok(alloc)
    }

    /// Start of an instance without a node (stopped before node affinity
    /// existed): the scheduler places it in its zone.
    async fn place_new(&self, inst: &mut Instance, tx: &mut Tx) -> Result<(NodeId, NodeAlloc)> {
        let Some((placed, view)) = self.place_one(inst).await? else {
            return Err(no_room(
                inst,
                format!(
                    "no node has room for {} vCPU / {} MiB with image '{}'",
                    inst.vcpus, inst.memory_mib, inst.image_location
                ),
            ));
        };
        let mut alloc = view.alloc.clone();
        alloc.hosts.push(placed.network.host);
        alloc.used.vcpus += inst.vcpus;
        alloc.used.memory_mib += inst.memory_mib;
        alloc.instances += 1;
        inst.node_id = Some(placed.node.clone());
        inst.network = Some(placed.network.clone());
        let ak = self.store.keys().node_alloc(&placed.node);
        tx.expect_rev(&ak, view.alloc_rev);
        tx.expect_present(&self.store.keys().node_alive(&placed.node));
        tx.put(&ak, &alloc)?;
        Ok((placed.node, alloc))
    }

    /// Writes the instance's assignment on `node`: the stored one with the
    /// new desired state and generation, or a fresh one when there is none.
    async fn write_assignment(&self, inst: &Instance, node: &NodeId, tx: &mut Tx) -> Result<()> {
        let ak = self.store.keys().assignment(node, &inst.id);
        if let Some(a) = self.store.get::<Assignment>(&ak).await? {
            let mut na = a.value;
            na.desired = inst.desired;
            na.generation = inst.generation;
            na.force = inst.force;
            tx.expect_rev(&ak, a.mod_revision);
            tx.put(&ak, &na)?;
            return Ok(());
        }
        let Some(network) = &inst.network else {
            return Err(Error::Internal(format!(
                "instance {} has a node but no address",
                inst.id
            )));
        };
        let ud = self.user_data_of(&inst.reservation_id).await?;
        let ssh = match &inst.key_name {
            Some(k) => self
                .keypair_by_name(&inst.account, k)
                .await
                .map(|k| k.public_key)
                .unwrap_or_default(),
            None => String::new(),
        };
        let a = self.assignment_of(inst, network, super::instances::b64(&ud), ssh);
        tx.expect_absent(&ak);
        tx.put(&ak, &a)?;
        Ok(())
    }

    pub(super) async fn place_one(&self, inst: &Instance) -> Result<Option<(Placed, NodeView)>> {
        for refresh in [false, true] {
            if refresh {
                self.nodes.refresh().await?;
            }
            let views = self.nodes.views();
            let req = scheduler::Request {
                vcpus: inst.vcpus,
                memory_mib: inst.memory_mib,
                image_location: &inst.image_location,
                image_sha256: &inst.image_sha256,
                zone: Some(&inst.availability_zone),
                min_count: 1,
                max_count: 1,
            };
            let policy = self.cfg.scheduler.policy;
            if let Ok(idx) = scheduler::place(
                policy,
                self.overcommit(),
                self.network.max_host() - 1,
                &views,
                &[],
                &req,
            ) {
                let Some(&i) = idx.first() else { continue };
                let v = views[i].clone();
                let host = self
                    .network
                    .free_host(&v.alloc.hosts)
                    .ok_or_else(|| Error::Internal("no free address after placement".into()))?;
                let ip = self.network.address(v.node.ip_block, host);
                let placed = Placed {
                    node: v.node.id.clone(),
                    network: NetworkAssignment {
                        host,
                        ip: ip.to_string(),
                        prefix_len: self.network.node_prefix_len(),
                        gateway: self.network.gateway(v.node.ip_block).to_string(),
                        mac: mac_for(ip),
                    },
                };
                return Ok(Some((placed, v)));
            }
        }
        Ok(None)
    }
}
