//! Reservations larger than one transaction: a RunInstances call of more
//! than [`BATCH`] instances is written as a small saga whose progress is
//! one stored record, [`PendingReservation`] (`pending-reservations/<r-…>`).
//!
//! ```text
//!            create (token record + user data, same txn)
//!   (none) ───────────────────────────────────────────────▶ Placing
//!   Placing ── batch of ≤ BATCH instances committed ──────▶ Placing
//!   Placing ── no more room (or max reached), ≥ min ──────▶ (done: record deleted,
//!                                                             token record lists the ids)
//!   Placing ── no more room, < min ───────────────────────▶ RollingBack
//!   RollingBack ── batch of instances removed ────────────▶ RollingBack
//!   RollingBack ── none left ─────────────────────────────▶ (failed: record, token
//!                                                             record and user data deleted)
//! ```
//!
//! Every step is one transaction that compares the record's
//! `mod_revision` and writes the record's next version, so steps are
//! linearised: whoever drives the saga (the original call, a retry with the
//! same ClientToken, or the reconciler for a call that died —
//! [`Domain::resume_pending_reservations`]) continues from the stored
//! state, and two drivers at once cannot place more than MaxCount or place
//! after a rollback started. Each batch still compares every chosen node's
//! allocation, as a single-transaction launch does. A crash at any point
//! therefore ends, once driven again, exactly as an uninterrupted call:
//! between MinCount and MaxCount instances and a completed token record, or
//! nothing at all (min_count is all-or-nothing).
//!
//! While a reservation is placing, its committed instances are visible to
//! DescribeInstances as `pending` and their agents may already start them;
//! a rollback terminates nothing the caller was ever told about (the call
//! had not returned) and deletes the records and assignments outright.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::events::InstanceEvent;
use crate::domain::instances::{b64, RunInstancesInput};
use crate::domain::launch::{Launch, BATCH};
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, ClientTokenRecord, Instance, NodeAlloc};
use crate::domain::placement::backoff;
use crate::domain::views::Reservation;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId, InstanceId, ReservationId};
use crate::store::{Tx, Versioned};

const MAX_STEPS: u32 = 1000;

/// Where a large reservation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PendingState {
    /// Batches are being placed.
    Placing,
    /// MinCount could not be met: placed batches are being removed.
    RollingBack,
}

/// The progress record of a reservation written in several transactions
/// (`pending-reservations/<r-…>`): the request, to continue it, and the
/// instances committed so far, in launch order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReservation {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// Owner.
    pub account: AccountId,
    /// State.
    pub state: PendingState,
    /// Request: image.
    pub image_id: ImageId,
    /// Request: instance type.
    pub instance_type: String,
    /// Request: zone.
    pub availability_zone: Option<String>,
    /// Request: tags of every instance.
    pub tags: BTreeMap<String, String>,
    /// Request: key pair name.
    pub key_name: Option<String>,
    /// Request: ClientToken.
    pub client_token: Option<String>,
    /// Request: MinCount.
    pub min_count: u32,
    /// Request: MaxCount.
    pub max_count: u32,
    /// Hash of the request (as in the token record).
    pub request_hash: String,
    /// Started.
    pub created_ms: i64,
    /// Instances committed so far.
    pub instance_ids: Vec<InstanceId>,
    /// Why a rollback started.
    #[serde(default)]
    pub shortfall: String,
    /// The launch options of the call (absent = EC2's defaults). Added
    /// without a schema bump: the saga does not rewrite through
    /// `Tx::replace` yet (docs/etcd-schema.md), so an older replica driving
    /// the saga during an upgrade launches the rest with default options.
    #[serde(default)]
    pub options: crate::domain::model::LaunchOptions,
    /// Request: metadata options (validated).
    #[serde(default)]
    pub metadata_options: crate::domain::model::MetadataOptions,
}

impl crate::store::Record for PendingReservation {
    const KIND: &'static str = "pending-reservation";
    const SCHEMA: u32 = 1;
}

/// The next step of a saga (pure, from the record and whether placing has
/// run out of room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Place up to this many more instances.
    Place(u32),
    /// Enough placed: finish.
    Complete,
    /// MinCount cannot be met: start the rollback.
    StartRollback,
    /// Remove up to this many of the placed instances.
    Remove(u32),
    /// Everything removed: delete the records.
    Fail,
}

/// Decides the next step.
pub fn next_step(rec: &PendingReservation, out_of_room: bool) -> Step {
    let placed = rec.instance_ids.len() as u32;
    match rec.state {
        PendingState::Placing if placed < rec.max_count && !out_of_room => {
            Step::Place((rec.max_count - placed).min(BATCH))
        }
        PendingState::Placing if placed >= rec.min_count => Step::Complete,
        PendingState::Placing => Step::StartRollback,
        PendingState::RollingBack if placed > 0 => Step::Remove(placed.min(BATCH)),
        PendingState::RollingBack => Step::Fail,
    }
}

impl Domain {
    /// Writes a reservation of more than [`BATCH`] instances (see the
    /// module docs). `stop_after` simulates a crash after that many batches
    /// (tests).
    pub(super) async fn launch_in_batches(
        &self,
        l: &Launch,
        input: &RunInstancesInput,
        hash: &str,
        stop_after: Option<usize>,
    ) -> Result<Reservation> {
        // A call that cannot fit MinCount in its quotas is refused before
        // anything is written; each batch re-checks (and charges) them.
        self.quota_state(&l.account).await?.instances_room(
            l.itype.vcpus,
            input.min_count,
            input.max_count,
        )?;
        let rec = PendingReservation {
            reservation_id: l.reservation_id.clone(),
            account: l.account.clone(),
            state: PendingState::Placing,
            image_id: l.image.id.clone(),
            instance_type: l.itype.name.to_string(),
            availability_zone: l.zone.clone(),
            tags: l.tags.clone(),
            key_name: l.key_name.clone(),
            client_token: l.token.clone(),
            min_count: input.min_count,
            max_count: input.max_count,
            request_hash: hash.to_string(),
            created_ms: l.now,
            instance_ids: Vec::new(),
            shortfall: String::new(),
            options: l.options.clone(),
            metadata_options: l.metadata_options,
        };
        let mut tx = Tx::new();
        self.store
            .pending_reservations()
            .stage_create(&mut tx, &rec)?;
        if !input.user_data.is_empty() {
            self.store
                .user_data()
                .stage_put(&mut tx, &l.reservation_id, input.user_data.clone());
        }
        if let Some(t) = &l.token {
            // No instances yet: the reservation is still pending.
            self.store.client_tokens().stage_create(
                &mut tx,
                &l.account,
                t,
                &ClientTokenRecord {
                    reservation_id: l.reservation_id.clone(),
                    instance_ids: Vec::new(),
                    request_hash: hash.to_string(),
                    created_ms: l.now,
                },
            )?;
        }
        let Some(rev) = self.store.commit(tx).await? else {
            // Only the token can exist: an earlier call with it.
            return Err(Error::Contention("client token".into()));
        };
        let rec = Versioned::new(rec, rev);
        self.drive(rec, Some(l.clone()), stop_after).await
    }

    /// A retry found the token record of a reservation that is still
    /// pending: drive it to its end.
    pub(super) async fn resume_by_token(
        &self,
        account: &AccountId,
        token: &str,
        rec: ClientTokenRecord,
    ) -> Result<Reservation> {
        let mut rec = rec;
        for _ in 0..8 {
            match self
                .store
                .pending_reservations()
                .get(&rec.reservation_id)
                .await?
            {
                Some(p) => return self.drive(p, None, None).await,
                None => match self.token_record(account, token).await? {
                    Some(r) if !r.instance_ids.is_empty() => {
                        return self.reservation_of(account, r).await
                    }
                    Some(r) => rec = r,
                    None => {
                        return Err(Error::InsufficientCapacity {
                            zone: "any".into(),
                            message: "the reservation with this client token was rolled back"
                                .into(),
                        })
                    }
                },
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Contention("pending reservation".into()))
    }

    /// Reconciler: drives every pending reservation started more than
    /// `older_than` ago (its caller died or gave up) to its end, as a retry
    /// with its token would. Returns how many it finished.
    pub async fn resume_pending_reservations(&self, older_than: Duration) -> Result<usize> {
        let recs = self.store.pending_reservations().all().collect().await?;
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let mut n = 0;
        for (_, rec) in recs {
            if rec.value.created_ms > cutoff {
                continue;
            }
            let id = rec.value.reservation_id.clone();
            match self.drive(rec, None, None).await {
                Ok(_) | Err(Error::InsufficientCapacity { .. }) => n += 1,
                Err(e) => {
                    tracing::warn!(reservation = %id, error = %e, "resuming a reservation failed")
                }
            }
        }
        Ok(n)
    }

    /// What the saga needs to place more instances of `rec`; `None` when it
    /// cannot place any more (the image is gone).
    async fn launch_of(&self, rec: &PendingReservation) -> Result<Option<Launch>> {
        let Some(itype) = self.types.get(&rec.instance_type) else {
            return Ok(None);
        };
        let image = match self.visible_image(&rec.account, &rec.image_id).await {
            Ok(i) => i,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A key pair deleted since the call started: the rest launch without
        // its key (as instances whose key pair is deleted later keep running).
        // Any other failure (etcd unreachable, a corrupt record) must not
        // silently launch them without it: the saga is driven again later.
        let ssh = match &rec.key_name {
            Some(k) => match self.keypair_by_name(&rec.account, k).await {
                Ok(kp) => kp.public_key,
                Err(Error::NotFound { .. }) => String::new(),
                Err(e) => return Err(e),
            },
            None => String::new(),
        };
        let ud = self.user_data_of(&rec.reservation_id).await?;
        Ok(Some(Launch {
            account: rec.account.clone(),
            reservation_id: rec.reservation_id.clone(),
            image,
            itype,
            zone: rec.availability_zone.clone(),
            tags: rec.tags.clone(),
            key_name: rec.key_name.clone(),
            token: rec.client_token.clone(),
            ssh,
            user_data_b64: b64(&ud),
            options: rec.options.clone(),
            now: now_ms(),
            metadata_options: rec.metadata_options,
        }))
    }

    /// Runs the saga from the stored state to its end.
    async fn drive(
        &self,
        mut rec: Versioned<PendingReservation>,
        launch: Option<Launch>,
        stop_after: Option<usize>,
    ) -> Result<Reservation> {
        let pending = self.store.pending_reservations();
        let pkey = pending.key(&rec.value.reservation_id);
        let mut launch = launch;
        let mut loaded = launch.is_some();
        let mut out_of_room = false;
        let mut refreshed = false;
        let mut batches = 0usize;
        // Why this driver stopped placing, when it was a quota.
        let mut quota_refusal: Option<Error> = None;
        for attempt in 0..MAX_STEPS {
            let mut next = rec.value.clone();
            let mut tx = Tx::new();
            tx.expect_rev(&pkey, rec.mod_revision);
            let mut batch = None;
            let step = next_step(&rec.value, out_of_room);
            match step {
                Step::Place(n) => {
                    if !loaded {
                        launch = self.launch_of(&rec.value).await?;
                        loaded = true;
                    }
                    let Some(l) = &launch else {
                        out_of_room = true;
                        rec.value.shortfall = "the image or instance type is gone".into();
                        continue;
                    };
                    let first = rec.value.instance_ids.len() as u32;
                    let quota = self.quota_state(&l.account).await?;
                    let n = match quota.instances_room(l.itype.vcpus, 1, n) {
                        Ok(n) => n,
                        Err(e) => {
                            out_of_room = true;
                            rec.value.shortfall = e.to_string();
                            quota_refusal = Some(e);
                            continue;
                        }
                    };
                    let pool = self
                        .address_pool(&l.account, l.options.vpc.as_deref(), n)
                        .await?;
                    match self.place_batch(l, first, 1, n, &mut tx, pool) {
                        Ok(b) => {
                            quota.stage_instances(
                                &mut tx,
                                &self.usage_key(&l.account),
                                b.instances.len(),
                                l.itype.vcpus,
                            )?;
                            next.instance_ids
                                .extend(b.instances.iter().map(|i| i.id.clone()));
                            batch = Some(b);
                        }
                        Err(Error::InsufficientCapacity { .. }) if !refreshed => {
                            self.nodes.refresh().await?;
                            refreshed = true;
                            continue;
                        }
                        Err(Error::InsufficientCapacity { message, .. }) => {
                            out_of_room = true;
                            rec.value.shortfall = message;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::Complete => {
                    tx.delete(&pkey);
                    if let Some(t) = &rec.value.client_token {
                        // Written whether or not it is still there (the
                        // record's compare already serialises the saga).
                        self.store.client_tokens().stage_put(
                            &mut tx,
                            &rec.value.account,
                            t,
                            &ClientTokenRecord {
                                reservation_id: rec.value.reservation_id.clone(),
                                instance_ids: rec.value.instance_ids.clone(),
                                request_hash: rec.value.request_hash.clone(),
                                created_ms: rec.value.created_ms,
                            },
                        )?;
                    }
                }
                Step::StartRollback => {
                    next.state = PendingState::RollingBack;
                    next.shortfall = format!(
                        "room for {} of the {} instances asked for at least ({})",
                        rec.value.instance_ids.len(),
                        rec.value.min_count,
                        rec.value.shortfall
                    );
                }
                Step::Remove(n) => {
                    let keep = rec.value.instance_ids.len() - n as usize;
                    let gone = next.instance_ids.split_off(keep);
                    self.remove_instances(&rec.value.account, &gone, &mut tx)
                        .await?;
                }
                Step::Fail => {
                    tx.delete(&pkey);
                    self.store
                        .user_data()
                        .stage_delete(&mut tx, &rec.value.reservation_id);
                    if let Some(t) = &rec.value.client_token {
                        self.store
                            .client_tokens()
                            .stage_delete(&mut tx, &rec.value.account, t);
                    }
                }
            }
            if !matches!(step, Step::Complete | Step::Fail) {
                tx.put(&pkey, &next)?;
            }
            match self.store.commit(tx).await? {
                Some(rev) => {
                    if let Some(b) = batch {
                        self.committed(b, rev);
                        refreshed = false;
                        batches += 1;
                        if stop_after == Some(batches) {
                            return Err(Error::Internal("simulated crash".into()));
                        }
                    }
                    match step {
                        Step::Complete => {
                            tracing::info!(
                                reservation = %rec.value.reservation_id,
                                count = rec.value.instance_ids.len(),
                                "instances launched in batches"
                            );
                            return self
                                .instances_of(
                                    &rec.value.account,
                                    &rec.value.reservation_id,
                                    &rec.value.instance_ids,
                                )
                                .await;
                        }
                        Step::Fail => {
                            if let Some(e) = quota_refusal {
                                return Err(e);
                            }
                            return Err(Error::InsufficientCapacity {
                                zone: rec
                                    .value
                                    .availability_zone
                                    .clone()
                                    .unwrap_or_else(|| "any".into()),
                                message: rec.value.shortfall.clone(),
                            });
                        }
                        _ => {
                            rec = Versioned {
                                value: next,
                                mod_revision: rev,
                                newer: rec.newer.clone(),
                            };
                        }
                    }
                }
                None => {
                    let failed_nodes = batch.as_ref().map(|b| b.node_ids());
                    drop(batch);
                    match self.store.get::<PendingReservation>(&pkey).await? {
                        Some(cur) if cur.mod_revision != rec.mod_revision => {
                            // Another driver moved it on: continue from there.
                            let shortfall = std::mem::take(&mut rec.value.shortfall);
                            rec = cur;
                            if rec.value.shortfall.is_empty() {
                                rec.value.shortfall = shortfall;
                            }
                        }
                        Some(_) => {
                            if let Some(ids) = failed_nodes {
                                self.nodes.refresh_some(&ids).await?;
                            }
                            backoff(attempt).await;
                        }
                        None => return self.finished_elsewhere(&rec.value).await,
                    }
                }
            }
        }
        Err(Error::Contention("pending reservation".into()))
    }

    /// Another driver ended the saga: its outcome, from the token record
    /// (or, without a token, from the instances that remain).
    async fn finished_elsewhere(&self, rec: &PendingReservation) -> Result<Reservation> {
        let failed = || Error::InsufficientCapacity {
            zone: rec
                .availability_zone
                .clone()
                .unwrap_or_else(|| "any".into()),
            message: "the reservation was rolled back".into(),
        };
        match &rec.client_token {
            Some(t) => match self.token_record(&rec.account, t).await? {
                Some(r) if !r.instance_ids.is_empty() => self.reservation_of(&rec.account, r).await,
                _ => Err(failed()),
            },
            None => {
                let r = self
                    .instances_of(&rec.account, &rec.reservation_id, &rec.instance_ids)
                    .await?;
                if r.instances.is_empty() {
                    Err(failed())
                } else {
                    Ok(r)
                }
            }
        }
    }

    pub(super) async fn instances_of(
        &self,
        account: &AccountId,
        reservation_id: &ReservationId,
        ids: &[InstanceId],
    ) -> Result<Reservation> {
        let instances: Vec<Instance> = self
            .store
            .instances()
            .get_many(account, ids)
            .await?
            .into_iter()
            .flatten()
            .map(|v| v.value)
            .collect();
        Ok(Reservation {
            reservation_id: reservation_id.clone(),
            owner: account.clone(),
            instances,
        })
    }

    /// Adds to `tx` the removal of these instances (record and assignment
    /// deleted, what each still holds given back to its node), each
    /// compared on its `mod_revision`, each node's allocation on its own.
    async fn remove_instances(
        &self,
        account: &AccountId,
        ids: &[InstanceId],
        tx: &mut Tx,
    ) -> Result<()> {
        let now = now_ms();
        let instances = self.store.instances();
        let insts = instances.get_many(account, ids).await?;
        let mut nodes: Vec<crate::ids::NodeId> = Vec::new();
        for i in insts.iter().flatten() {
            if let Some(n) = &i.value.node_id {
                if !nodes.contains(n) {
                    nodes.push(n.clone());
                }
            }
        }
        let got = self.store.nodes().allocs(&nodes).await?;
        let mut released = (0i64, 0i64);
        let mut allocs: HashMap<String, (NodeAlloc, i64)> = HashMap::new();
        for (n, a) in nodes.iter().zip(got) {
            if let Some(a) = a {
                allocs.insert(n.to_string(), (a.value, a.mod_revision));
            }
        }
        for (id, inst) in ids.iter().zip(insts) {
            // Already gone (terminated and collected): nothing to give back.
            let Some(inst) = inst else { continue };
            tx.delete_if_unchanged(&instances.key(account, id), &inst);
            let i = inst.value;
            let (n, v) = crate::domain::quotas::instance_delta(i.state, State::Terminated, i.vcpus);
            released = (released.0 + n, released.1 + v);
            self.store
                .events()
                .stage(tx, &InstanceEvent::rolled_back(&i, now))?;
            // A VPC address goes back whatever its node's allocation holds.
            if let Some(net) = i.network.as_ref().filter(|n| !n.is_node_block()) {
                if self.stage_interface_leave(&i, tx).await? {
                    self.store.ipam().stage_release(tx, &self.network, net);
                }
            }
            if let Some(n) = &i.node_id {
                self.store.assignments().stage_delete(tx, n, &i.id);
                if let Some((a, _)) = allocs.get_mut(n.as_str()) {
                    if i.state.is_placed() {
                        a.used.vcpus = a.used.vcpus.saturating_sub(i.vcpus);
                        a.used.memory_mib = a.used.memory_mib.saturating_sub(i.memory_mib);
                    }
                    if let Some(net) = i.network.as_ref().filter(|n| n.is_node_block()) {
                        a.hosts.retain(|h| *h != net.host);
                        self.store.ipam().stage_release(tx, &self.network, net);
                    }
                    a.instances = a.instances.saturating_sub(1);
                }
            }
        }
        for n in &nodes {
            if let Some((a, rev)) = allocs.get(n.as_str()) {
                self.store.nodes().stage_alloc_at(tx, n, *rev, a)?;
            }
        }
        // What the removed instances counted against the quotas goes
        // back in the same transaction (each removal compares the record).
        if released.0 != 0 {
            self.quota_state(account).await?.stage(
                tx,
                &self.usage_key(account),
                &[
                    (
                        crate::domain::quotas::Resource::RunningInstances,
                        released.0,
                    ),
                    (crate::domain::quotas::Resource::Vcpus, released.1),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: PendingState, placed: usize, min: u32, max: u32) -> PendingReservation {
        PendingReservation {
            reservation_id: ReservationId::generate(),
            account: AccountId::operator(),
            state,
            image_id: ImageId::parse("ami-0123456789abcdef0").unwrap_or_else(|_| unreachable!()),
            instance_type: "t3.nano".into(),
            availability_zone: None,
            tags: BTreeMap::new(),
            key_name: None,
            client_token: None,
            min_count: min,
            max_count: max,
            request_hash: String::new(),
            created_ms: 0,
            instance_ids: (0..placed).map(|_| InstanceId::generate()).collect(),
            shortfall: String::new(),
            options: Default::default(),
            metadata_options: Default::default(),
        }
    }

    #[test]
    fn steps() {
        use PendingState::*;
        assert_eq!(
            next_step(&rec(Placing, 0, 50, 100), false),
            Step::Place(BATCH)
        );
        assert_eq!(
            next_step(&rec(Placing, 80, 50, 100), false),
            Step::Place(20)
        );
        assert_eq!(
            next_step(&rec(Placing, 100, 50, 100), false),
            Step::Complete
        );
        assert_eq!(next_step(&rec(Placing, 60, 50, 100), true), Step::Complete);
        assert_eq!(next_step(&rec(Placing, 50, 50, 100), true), Step::Complete);
        assert_eq!(
            next_step(&rec(Placing, 49, 50, 100), true),
            Step::StartRollback
        );
        assert_eq!(
            next_step(&rec(Placing, 0, 50, 100), true),
            Step::StartRollback
        );
        assert_eq!(
            next_step(&rec(RollingBack, 49, 50, 100), false),
            Step::Remove(BATCH)
        );
        assert_eq!(
            next_step(&rec(RollingBack, 9, 50, 100), true),
            Step::Remove(9)
        );
        assert_eq!(next_step(&rec(RollingBack, 0, 50, 100), false), Step::Fail);
    }

    #[test]
    fn record_round_trips() {
        let r = rec(PendingState::RollingBack, 3, 50, 100);
        let s = serde_json::to_string(&r).unwrap_or_default();
        assert!(s.contains("\"rolling-back\""), "{s}");
        let back: PendingReservation = serde_json::from_str(&s).unwrap_or_else(|_| unreachable!());
        assert_eq!(back, r);
    }
}
