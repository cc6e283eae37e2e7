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
//!
//! This is the one place an existing instance's state changes, so it is
//! where the [`events`] outbox is written: a changed state adds its event
//! (sequence `event_seq + 1`) to the same transaction, and where the
//! account's [`quotas`] usage follows the instance in and out of the
//! placed states.

use crate::domain::events::InstanceEvent;
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance, NetworkAssignment, NodeAlloc};
use crate::domain::{quotas, Domain};
use crate::error::{Error, Result};
use crate::ids::{NodeId, ReservationId};
use crate::scheduler::{self, NodeView};
use crate::store::{Tx, Versioned};

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

pub(super) use crate::store::backoff;

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
            .user_data()
            .get(reservation)
            .await?
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
            if let Some(g) = absent_guard {
                tx.expect_absent(g);
                if self.store.get_raw(g).await?.is_some() {
                    return Ok((cur.value.clone(), cur.value));
                }
            }
            let mut note: Option<(NodeId, NodeAlloc)> = None;
            let mut assignment_written = false;
            // Placed before IPAM: its address gets its claim now (not when
            // it is leaving: its release below deletes nothing then).
            if !p.unassign {
                self.adopt_address(&mut p.inst, &mut tx).await?;
                // An auto-assigned public address goes at stop and a new
                // one comes at start (EC2), in this transaction.
                let down = |s: State| matches!(s, State::Stopping | State::Stopped);
                if p.place && cur.value.state == State::Stopped {
                    self.stage_auto_ip_start(&p.inst, &mut tx).await?;
                } else if down(p.inst.state) && !down(cur.value.state) {
                    self.stage_auto_ip_stop(&p.inst, &mut tx).await?;
                }
            } else {
                // Terminated: its public address (Elastic IP association
                // or auto-assigned) goes in this transaction.
                self.stage_public_ip_release(&p.inst, &mut tx).await?;
            }
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
                    let nodes = self.store.nodes();
                    if let Some(cur_alloc) = nodes.alloc(&node).await? {
                        let mut alloc = cur_alloc.value.clone();
                        // Only what the previous state still held goes back.
                        if p.release && cur.value.state.is_placed() {
                            alloc.used.vcpus = alloc.used.vcpus.saturating_sub(p.inst.vcpus);
                            alloc.used.memory_mib =
                                alloc.used.memory_mib.saturating_sub(p.inst.memory_mib);
                        }
                        if p.unassign {
                            if let Some(net) = p.inst.network.as_ref().filter(|n| n.is_node_block())
                            {
                                alloc.hosts.retain(|x| *x != net.host);
                                self.store.ipam().stage_release(&mut tx, &self.network, net);
                            }
                            alloc.instances = alloc.instances.saturating_sub(1);
                        }
                        nodes.stage_alloc(&mut tx, &node, &cur_alloc, &alloc)?;
                        note = Some((node.clone(), alloc));
                    }
                    if p.unassign {
                        self.store
                            .assignments()
                            .stage_delete(&mut tx, &node, &p.inst.id);
                        assignment_written = true;
                    }
                }
                if p.unassign {
                    // A VPC address is released with the instance leaving,
                    // whatever its node's allocation holds (the instance's
                    // compare makes this happen once).
                    // An interface of its own is deleted or detached with
                    // it (a detached one keeps its address).
                    if let Some(net) = p.inst.network.as_ref().filter(|n| !n.is_node_block()) {
                        if self.stage_interface_leave(&p.inst, &mut tx).await? {
                            self.store.ipam().stage_release(&mut tx, &self.network, net);
                        }
                    }
                    p.inst.node_id = None;
                    p.inst.network = None;
                }
            }
            if p.assignment_changed && !assignment_written {
                if let Some(node) = &p.inst.node_id {
                    let assignments = self.store.assignments();
                    if let Some(a) = assignments.get(node, &p.inst.id).await? {
                        let mut na = a.value.clone();
                        na.desired = p.inst.desired;
                        na.generation = p.inst.generation;
                        na.force = p.inst.force;
                        na.metadata = Some(self.assignment_metadata(&p.inst));
                        assignments.stage_replace(&mut tx, node, &a, &na)?;
                    }
                }
            }
            // The outbox: a state change writes its event in this same txn.
            let node = p.inst.node_id.clone().or_else(|| cur.value.node_id.clone());
            if let Some(ev) = InstanceEvent::transition(&cur.value, &mut p.inst, node, now_ms()) {
                self.store.events().stage(&mut tx, &ev)?;
            }
            // Quotas: an instance counts while placed; its usage changes in
            // this transaction, which compares the instance record, so a
            // transition applied twice (or retried) charges or releases once.
            let (n, v) = quotas::instance_delta(cur.value.state, p.inst.state, p.inst.vcpus);
            if n != 0 {
                let quota = self.quota_state(&p.inst.account).await?;
                // A Start is held to the limits; a node-lost instance found
                // running comes back whatever they are.
                if n > 0 && p.inst.state == State::Pending {
                    quota.check(quotas::Resource::RunningInstances, 1)?;
                    quota.check(quotas::Resource::Vcpus, u64::from(p.inst.vcpus))?;
                }
                quota.stage(
                    &mut tx,
                    &self.usage_key(&p.inst.account),
                    &[
                        (quotas::Resource::RunningInstances, n),
                        (quotas::Resource::Vcpus, v),
                    ],
                )?;
            }
            tx.replace(key, &cur, &p.inst)?;
            match self.store.commit(tx).await? {
                Some(rev) => {
                    if let Some((node, alloc)) = note {
                        self.nodes.note_alloc(&node, alloc, rev);
                    }
                    // Launch duration: the first `running` (the created
                    // event is 0, its first change to running is 1).
                    if cur.value.state == State::Pending
                        && p.inst.state == State::Running
                        && cur.value.event_seq == 0
                    {
                        let took = (now_ms() - p.inst.launch_time_ms).max(0);
                        crate::metrics::global()
                            .launch_to_running
                            .observe(took as f64 / 1000.0);
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
        let nodes = self.store.nodes();
        let alive = nodes.is_alive(node).await?;
        let record = nodes.get(node).await?;
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
        let cur = nodes
            .alloc(node)
            .await?
            .unwrap_or_else(|| Versioned::new(NodeAlloc::default(), 0));
        let mut alloc = cur.value.clone();
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
        if net.is_node_block() && !alloc.hosts.contains(&net.host) {
            alloc.hosts.push(net.host);
        }
        nodes.stage_alloc(tx, node, &cur, &alloc)?;
        nodes.expect_alive(tx, node);
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
        self.store.ipam().stage_claim(tx, inst, &placed.network)?;
        let nodes = self.store.nodes();
        nodes.expect_alive(tx, &placed.node);
        nodes.stage_alloc_at(tx, &placed.node, view.alloc_rev, &alloc)?;
        Ok((placed.node, alloc))
    }

    /// Writes the instance's assignment on `node`: the stored one with the
    /// new desired state and generation, or a fresh one when there is none.
    async fn write_assignment(&self, inst: &Instance, node: &NodeId, tx: &mut Tx) -> Result<()> {
        let assignments = self.store.assignments();
        if let Some(a) = assignments.get(node, &inst.id).await? {
            let mut na = a.value.clone();
            na.desired = inst.desired;
            na.generation = inst.generation;
            na.force = inst.force;
            na.metadata = Some(self.assignment_metadata(inst));
            na.secondary_interfaces =
                crate::domain::vpc::eni_secondary::secondaries_of(inst).to_vec();
            assignments.stage_replace(tx, node, &a, &na)?;
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
        assignments.stage_create(tx, node, &a)?;
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
                self.network.usable_hosts(),
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
                let placed = Placed {
                    node: v.node.id.clone(),
                    network: self.network.block_assignment(v.node.ip_block, host),
                };
                return Ok(Some((placed, v)));
            }
        }
        Ok(None)
    }
}
