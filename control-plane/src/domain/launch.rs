//! RunInstances: validation, idempotency on ClientToken, and placement.
//!
//! A call of at most [`BATCH`] instances is one etcd transaction: every
//! instance with its assignment, every chosen node's allocation (compared
//! on its `mod_revision`, node alive), the user data and the ClientToken
//! record (compared absent). Besides that transaction a call reads only the
//! image (and the key pair, when one is named): nodes come from the
//! watch-fed node cache, the token is not read first (its absence is part
//! of the compare; only a failed or refused call reads it, to replay an
//! earlier success), nothing is re-read after the commit. Larger calls are split into transactions of at most
//! [`BATCH`] instances by [`reservations`](super::reservations).
//!
//! Placements of one replica are decided one at a time on the node cache,
//! each avoiding the nodes other in-flight calls of the replica have chosen
//! ([`NodeCache::place`](super::nodecache::NodeCache::place)), so the
//! compare-and-swaps of concurrent calls of one replica do not collide; a
//! conflict with another replica re-reads just the chosen nodes and places
//! again.

use sha2::{Digest, Sha256};

use crate::domain::catalogue::InstanceType;
use crate::domain::events::InstanceEvent;
use crate::domain::instances::{b64, RunInstancesInput};
use crate::domain::lifecycle::{Desired, State};
use crate::domain::model::{
    now_ms, ClientTokenRecord, Image, Instance, LaunchOptions, NodeAlloc, StateReason,
};
use crate::domain::nodecache::Claimed;
use crate::domain::placement::backoff;
use crate::domain::views::Reservation;
use crate::domain::vpc::private_addresses::AddressPool;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId, InstanceId, NodeId, ReservationId};
use crate::scheduler;
use crate::store::Tx;

/// Most instances written by one transaction: each takes an instance, an
/// assignment, an event and an address-claim put (the last two with a
/// compare-absent), its node's allocation put and two compares, so 24
/// (at most 4 x 24 + 24 + 3 = 123 writes) stay within etcd's default limit
/// of 128 operations per transaction (`--max-txn-ops`, counted as
/// max(compares, writes)) with room for the reservation's own records.
pub const BATCH: u32 = 24;

const MAX_ATTEMPTS: u32 = 64;

/// Largest root volume (GiB), EC2's limit for gp2/gp3.
pub const MAX_ROOT_VOLUME_GIB: u32 = 16_384;

/// What every instance of one reservation shares.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub(super) account: AccountId,
    pub(super) reservation_id: ReservationId,
    pub(super) image: Image,
    pub(super) itype: InstanceType,
    pub(super) zone: Option<String>,
    pub(super) tags: std::collections::BTreeMap<String, String>,
    pub(super) key_name: Option<String>,
    pub(super) token: Option<String>,
    pub(super) ssh: String,
    pub(super) user_data_b64: String,
    pub(super) options: LaunchOptions,
    pub(super) now: i64,
    pub(super) metadata_options: super::model::MetadataOptions,
}

/// Instances placed on claimed nodes, written into a transaction.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) instances: Vec<Instance>,
    allocs: Vec<(NodeId, NodeAlloc)>,
    /// Held until the transaction is decided.
    _claimed: Claimed,
    /// The VPC addresses of this attempt, held until the transaction is
    /// decided ([`crate::domain::vpc::addresses`]).
    _addresses: Option<AddressPool>,
}

impl Batch {
    /// The chosen nodes (to refresh after a failed compare).
    pub(super) fn node_ids(&self) -> Vec<NodeId> {
        self.allocs.iter().map(|(id, _)| id.clone()).collect()
    }
}

pub(super) fn request_hash(input: &RunInstancesInput) -> String {
    let mut h = Sha256::new();
    let parts: [&[u8]; 6] = [
        input.image_id.as_bytes(),
        input.instance_type.as_bytes(),
        &input.min_count.to_be_bytes(),
        &input.max_count.to_be_bytes(),
        input.availability_zone.as_deref().unwrap_or("").as_bytes(),
        input.key_name.as_deref().unwrap_or("").as_bytes(),
    ];
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    for (k, v) in &input.tags {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.update(Sha256::digest(&input.user_data));
    // Launch options enter the hash only when set, so that the hashes of
    // tokens recorded before they existed stay valid.
    if input.options != LaunchOptions::default() {
        let json = serde_json::to_vec(&input.options).unwrap_or_default();
        h.update((json.len() as u64).to_be_bytes());
        h.update(json);
    }
    hex::encode(h.finalize())
}

/// A root volume (`BlockDeviceMapping` `Ebs.VolumeSize`) smaller than the
/// image's disk is refused as EC2 refuses one smaller than the AMI's
/// snapshot; an image of unknown size accepts any.
pub(super) fn check_root_volume(image: &Image, gib: Option<u32>) -> Result<()> {
    match gib {
        Some(g) if g < image.root_volume_gib => Err(Error::invalid_code(
            "InvalidBlockDeviceMapping",
            format!(
                "Volume of size {g}GB is smaller than snapshot '{}', expect size >= {}GB",
                super::images::snapshot_id(&image.id),
                image.root_volume_gib
            ),
        )),
        _ => Ok(()),
    }
}

impl Domain {
    /// Launches instances (see the module docs).
    pub async fn run_instances(
        &self,
        caller: &Caller,
        input: RunInstancesInput,
    ) -> Result<Reservation> {
        self.run_instances_inner(caller, input, None, &[]).await
    }

    /// Fault injection for tests: RunInstances of more than [`BATCH`]
    /// instances that stops, as if the replica died, after committing
    /// `batches` batches (and returns an error).
    #[doc(hidden)]
    pub async fn run_instances_interrupted(
        &self,
        caller: &Caller,
        input: RunInstancesInput,
        batches: usize,
    ) -> Result<Reservation> {
        self.run_instances_inner(caller, input, Some(batches), &[])
            .await
    }

    /// RunInstances on behalf of a service (Auto Scaling): `system_tags`
    /// (such as `aws:autoscaling:groupName`, which callers may not set) are
    /// added to every instance after the tags were validated.
    pub(crate) async fn run_instances_with_system_tags(
        &self,
        caller: &Caller,
        input: RunInstancesInput,
        system_tags: &[(String, String)],
    ) -> Result<Reservation> {
        self.run_instances_inner(caller, input, None, system_tags)
            .await
    }

    async fn run_instances_inner(
        &self,
        caller: &Caller,
        input: RunInstancesInput,
        stop_after: Option<usize>,
        system_tags: &[(String, String)],
    ) -> Result<Reservation> {
        let account = caller.account()?;
        validation::counts(input.min_count, input.max_count)?;
        if input.instance_type.is_empty() {
            return Err(Error::missing("InstanceType"));
        }
        let itype = self.types.get(&input.instance_type).ok_or_else(|| {
            Error::invalid(format!(
                "the instance type '{}' does not exist",
                input.instance_type
            ))
        })?;
        if input.image_id.is_empty() {
            return Err(Error::missing("ImageId"));
        }
        let image_id = ImageId::parse(&input.image_id)?;
        if let Some(z) = &input.availability_zone {
            self.check_zone(z)?;
        }
        validation::user_data(&input.user_data)?;
        if let Some(g) = input.options.root_volume_gib {
            if !(1..=MAX_ROOT_VOLUME_GIB).contains(&g) {
                return Err(Error::invalid(format!(
                    "the root volume size must be 1 to {MAX_ROOT_VOLUME_GIB} GiB (got {g})"
                )));
            }
        }
        let mut tags = validation::tags(&input.tags)?;
        tags.extend(system_tags.iter().cloned());
        let token = input.client_token.clone().filter(|t| !t.is_empty());
        if let Some(t) = &token {
            validation::client_token(t)?;
        }
        if let Some(k) = &input.key_name {
            validation::key_name(k)?;
        }
        let metadata_options = super::metadata::apply_options(
            super::model::MetadataOptions::default(),
            &input.metadata_options,
        )?;
        // Subnet and security groups: checked after every other input, as
        // the first call may create the account's default VPC.
        let mut input = input;
        self.resolve_launch_vpc(&account, &mut input).await?;
        let hash = request_hash(&input);
        let launched = async {
            let image = self.visible_image(&account, &image_id).await?;
            if image.min_memory_mib > itype.memory_mib {
                return Err(Error::invalid(format!(
                    "image {} needs at least {} MiB; {} has {} MiB",
                    image.id, image.min_memory_mib, itype.name, itype.memory_mib
                )));
            }
            check_root_volume(&image, input.options.root_volume_gib)?;
            let ssh = match &input.key_name {
                Some(k) => self.keypair_by_name(&account, k).await?.public_key,
                None => String::new(),
            };
            let l = Launch {
                account: account.clone(),
                reservation_id: ReservationId::generate(),
                image,
                itype,
                zone: input.availability_zone.clone(),
                tags,
                key_name: input.key_name.clone(),
                token: token.clone(),
                ssh,
                user_data_b64: b64(&input.user_data),
                options: input.options.clone(),
                now: now_ms(),
                metadata_options,
            };
            if input.max_count <= BATCH {
                self.launch_one_txn(&l, &input, &hash).await
            } else {
                self.launch_in_batches(&l, &input, &hash, stop_after).await
            }
        }
        .await;
        match launched {
            Ok(r) => {
                // Public addresses of subnets that map them on launch.
                self.assign_launch_public_ips(&r);
                Ok(r)
            }
            Err(e) if stop_after.is_some() => Err(e),
            // A call that cannot launch (now) may be the retry of one that
            // did: the token decides.
            Err(e) => match &token {
                Some(t) => match self.token_record(&account, t).await? {
                    Some(rec) => self.replay(&account, t, rec, &hash).await,
                    None => Err(e),
                },
                None => Err(e),
            },
        }
    }

    pub(super) async fn token_record(
        &self,
        account: &AccountId,
        token: &str,
    ) -> Result<Option<ClientTokenRecord>> {
        Ok(self
            .store
            .client_tokens()
            .get(account, token)
            .await?
            .map(|v| v.value))
    }

    /// All instances in one transaction (at most [`BATCH`]).
    async fn launch_one_txn(
        &self,
        l: &Launch,
        input: &RunInstancesInput,
        hash: &str,
    ) -> Result<Reservation> {
        let mut refreshed = false;
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = Tx::new();
            // Quotas first (refused: nothing placed or written); the usage
            // record is compared by this transaction, so racing calls of
            // the account re-read it (domain::quotas).
            let quota = self.quota_state(&l.account).await?;
            let max = quota.instances_room(l.itype.vcpus, input.min_count, input.max_count)?;
            let pool = self
                .address_pool(&l.account, l.options.vpc.as_deref(), max)
                .await?;
            let batch = match self.place_batch(l, 0, input.min_count, max, &mut tx, pool) {
                Ok(b) => b,
                Err(e @ Error::InsufficientCapacity { .. }) => {
                    if refreshed {
                        return Err(e);
                    }
                    self.nodes.refresh().await?;
                    refreshed = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            quota.stage_instances(
                &mut tx,
                &self.usage_key(&l.account),
                batch.instances.len(),
                l.itype.vcpus,
            )?;
            if !input.user_data.is_empty() {
                self.store.user_data().stage_put(
                    &mut tx,
                    &l.reservation_id,
                    input.user_data.clone(),
                );
            }
            if let Some(t) = &l.token {
                self.store.client_tokens().stage_create(
                    &mut tx,
                    &l.account,
                    t,
                    &ClientTokenRecord {
                        reservation_id: l.reservation_id.clone(),
                        instance_ids: batch.instances.iter().map(|i| i.id.clone()).collect(),
                        request_hash: hash.to_string(),
                        created_ms: l.now,
                    },
                )?;
            }
            match self.store.commit(tx).await? {
                Some(rev) => {
                    let instances = self.committed(batch, rev);
                    tracing::info!(
                        reservation = %l.reservation_id,
                        count = instances.len(),
                        attempt,
                        "instances launched"
                    );
                    return Ok(Reservation {
                        reservation_id: l.reservation_id.clone(),
                        owner: l.account.clone(),
                        instances,
                    });
                }
                None => {
                    if let Some(t) = &l.token {
                        if let Some(rec) = self.token_record(&l.account, t).await? {
                            return self.replay(&l.account, t, rec, hash).await;
                        }
                    }
                    self.nodes.refresh_some(&batch.node_ids()).await?;
                    drop(batch);
                    backoff(attempt).await;
                }
            }
        }
        Err(Error::Contention("node allocations".into()))
    }

    /// Notes a committed batch's allocations in the node cache (before its
    /// claim is released) and returns its instances.
    pub(super) fn committed(&self, batch: Batch, rev: i64) -> Vec<Instance> {
        let Batch {
            instances,
            allocs,
            _claimed,
            _addresses,
        } = batch;
        for (id, alloc) in allocs {
            self.nodes.note_alloc(&id, alloc, rev);
        }
        drop(_claimed);
        drop(_addresses);
        crate::metrics::global()
            .placements
            .inc_by(instances.len() as u64);
        instances
    }

    /// Places between `min` and `max` instances (launch indexes from
    /// `first_index`) on the node cache and adds them to `tx`: instance and
    /// assignment puts, each chosen node's allocation compared on its
    /// `mod_revision` (and the node's liveness key present) and rewritten.
    /// Instances in a VPC take their address from `pool` (claimed in this
    /// transaction); a launch into one subnet places at most as many
    /// instances as the pool has addresses there.
    pub(super) fn place_batch(
        &self,
        l: &Launch,
        first_index: u32,
        min: u32,
        max: u32,
        tx: &mut Tx,
        mut pool: Option<AddressPool>,
    ) -> Result<Batch> {
        let mut max = max;
        if let (Some(p), Some(subnet)) = (
            &pool,
            l.options.vpc.as_ref().and_then(|v| v.subnet_id.as_ref()),
        ) {
            let free = u32::try_from(p.free_in(subnet)).unwrap_or(u32::MAX);
            if free < min {
                return Err(crate::domain::vpc::private_addresses::subnet_full(subnet));
            }
            max = max.min(free);
        }
        let req = scheduler::Request {
            vcpus: l.itype.vcpus,
            memory_mib: l.itype.memory_mib,
            image_location: &l.image.image_location,
            image_sha256: &l.image.manifest_sha256,
            zone: l.zone.as_deref(),
            min_count: min,
            max_count: max,
        };
        let policy = self.cfg.scheduler.policy;
        let oc = self.overcommit();
        let max_hosts = self.network.usable_hosts();
        let claimed = self
            .nodes
            .place(|views, skip| scheduler::place(policy, oc, max_hosts, views, skip, &req))?;
        let mut allocs: Vec<NodeAlloc> = claimed.nodes.iter().map(|v| v.alloc.clone()).collect();
        let mut instances = Vec::with_capacity(claimed.placed.len());
        for (n, &at) in claimed.placed.iter().enumerate() {
            let v = &claimed.nodes[at];
            let alloc = &mut allocs[at];
            let mut vpc = l
                .options
                .vpc
                .as_ref()
                .map(|x| x.placed_in(&v.node.availability_zone));
            if let (Some(x), Some(p)) = (vpc.as_mut(), pool.as_ref()) {
                // A launch resumed from its stored record has no default
                // subnets of its own: the pool read them.
                x.subnet_id = p.subnet_for(x.subnet_id.as_ref(), &v.node.availability_zone);
                x.secondary_interfaces = p.secondary_copies();
            }
            let subnet = vpc.as_ref().and_then(|x| x.subnet_id.clone());
            let network = match (pool.as_mut(), subnet) {
                (Some(p), Some(subnet)) => p.take(&subnet)?,
                _ => {
                    let host = self
                        .network
                        .free_host(&alloc.hosts)
                        .ok_or_else(|| Error::Internal("no free address after placement".into()))?;
                    alloc.hosts.push(host);
                    self.network.block_assignment(v.node.ip_block, host)
                }
            };
            alloc.used.vcpus += l.itype.vcpus;
            alloc.used.memory_mib += l.itype.memory_mib;
            alloc.instances += 1;
            let inst = Instance {
                id: InstanceId::generate(),
                account: l.account.clone(),
                reservation_id: l.reservation_id.clone(),
                launch_index: first_index + n as u32,
                image_id: l.image.id.clone(),
                image_location: l.image.image_location.clone(),
                image_sha256: l.image.manifest_sha256.clone(),
                instance_type: l.itype.name.to_string(),
                vcpus: l.itype.vcpus,
                memory_mib: l.itype.memory_mib,
                state: State::Pending,
                state_reason: Some(StateReason::new("pending", "pending")),
                state_transition_reason: String::new(),
                availability_zone: v.node.availability_zone.clone(),
                node_id: Some(v.node.id.clone()),
                network: Some(network.clone()),
                launch_time_ms: l.now,
                key_name: l.key_name.clone(),
                tags: l.tags.clone(),
                client_token: l.token.clone().unwrap_or_default(),
                desired: Desired::Running,
                generation: 1,
                force: false,
                observed: None,
                terminated_ms: None,
                event_seq: 0,
                options: crate::domain::model::LaunchOptions {
                    vpc: None,
                    ..l.options.clone()
                },
                metadata_options: l.metadata_options,
                vpc,
            };
            let a = self.assignment_of(&inst, &network, l.user_data_b64.clone(), l.ssh.clone());
            self.store.instances().stage_put(tx, &inst)?;
            self.store.assignments().stage_put(tx, &v.node.id, &a)?;
            self.store
                .events()
                .stage(tx, &InstanceEvent::created(&inst, l.now))?;
            match pool.as_ref() {
                Some(p) => p.stage_hold(&self.store, tx, &inst, &network)?,
                None => self.store.ipam().stage_claim(tx, &inst, &network)?,
            }
            instances.push(inst);
        }
        let mut out = Vec::with_capacity(allocs.len());
        for (v, alloc) in claimed.nodes.iter().zip(allocs) {
            let id = &v.node.id;
            let nodes = self.store.nodes();
            nodes.expect_alive(tx, id);
            nodes.stage_alloc_at(tx, id, v.alloc_rev, &alloc)?;
            out.push((id.clone(), alloc));
        }
        Ok(Batch {
            instances,
            allocs: out,
            _claimed: claimed,
            _addresses: pool,
        })
    }

    /// The outcome of the earlier call with this token.
    pub(super) async fn replay(
        &self,
        account: &AccountId,
        token: &str,
        rec: ClientTokenRecord,
        hash: &str,
    ) -> Result<Reservation> {
        if rec.request_hash != hash {
            return Err(Error::invalid_code(
                "IdempotentParameterMismatch",
                "the client token was already used with different parameters",
            ));
        }
        if rec.instance_ids.is_empty() {
            // A reservation written in batches that has not ended.
            return self.resume_by_token(account, token, rec).await;
        }
        self.reservation_of(account, rec).await
    }

    /// The reservation a completed token record names.
    pub(super) async fn reservation_of(
        &self,
        account: &AccountId,
        rec: ClientTokenRecord,
    ) -> Result<Reservation> {
        self.instances_of(account, &rec.reservation_id, &rec.instance_ids)
            .await
    }
}
