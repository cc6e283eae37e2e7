//! Instances' public addresses: the auto-assigned address of an instance
//! launched into a subnet with `MapPublicIpOnLaunch` (from the same pool as
//! Elastic IPs), their release when the instance terminates (in the
//! terminate transaction itself: an Elastic IP is disassociated, an
//! auto-assigned address goes back to the pool), what DescribeInstances
//! shows (`ipAddress`, the interface's `association`), and the data plane's
//! view ([`Domain::instance_public_ips`]).
//!
//! An instance has at most one public address
//! (`instance-public-ips/<account>/<instance>`). The auto-assigned one is
//! claimed in the background once RunInstances committed the instances
//! (RunInstances does not wait: measured, waiting added 12 to 35 ms to a
//! one-instance launch and 350 to 600 ms to a 40-instance one on the
//! development VM), up to 30 instances per transaction, each claim created
//! compare-absent. An instance whose terminate transaction ran before its
//! claim is found afterwards and its address released again. A replica
//! that dies before the claim leaves the instance without a public address
//! (it can be given an Elastic IP); an exhausted pool is logged and the
//! instance runs without one. Stop and start, and an Elastic IP leaving an
//! instance, move the auto-assigned address: [`super::auto_ips`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::addresses::{ElasticIp, InstancePublicIp, PublicIpClaim};
use super::MAX_ATTEMPTS;
use crate::domain::model::{now_ms, Instance};
use crate::domain::views::Reservation;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, AddressAssociationId, AllocationId, InstanceId, SubnetId, VpcId};
use crate::store::{Tx, Versioned};

/// An instance's public address as DescribeInstances shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicAddressView {
    /// The address.
    pub public_ip: String,
    /// The Elastic IP (`None`: auto-assigned; its owner is then "amazon").
    pub allocation_id: Option<AllocationId>,
    /// The Elastic IP's association.
    pub association_id: Option<AddressAssociationId>,
}

impl Domain {
    /// Adds to `tx` the removal of what `cur` holds besides its own record
    /// (the caller rewrites or deletes that): an auto-assigned address's
    /// claim, or the Elastic IP's association.
    pub(crate) async fn stage_drop_public_ip(
        &self,
        account: &AccountId,
        cur: &InstancePublicIp,
        tx: &mut Tx,
    ) -> Result<()> {
        let keys = self.store.keys();
        match (&cur.allocation_id, &cur.association_id) {
            (Some(alloc), assoc) => {
                if let Some(e) = self.store.public_net().eip(account, alloc).await? {
                    let ours = e
                        .value
                        .association
                        .as_ref()
                        .is_some_and(|a| Some(&a.id) == assoc.as_ref());
                    if ours {
                        let next = ElasticIp {
                            association: None,
                            ..e.value.clone()
                        };
                        tx.replace(&keys.elastic_ip(account, alloc), &e, &next)?;
                    }
                }
            }
            (None, _) => {
                if let Ok(ip) = cur.public_ip.parse::<Ipv4Addr>() {
                    tx.delete(&keys.public_ip(ip));
                }
            }
        }
        Ok(())
    }

    /// Adds to a terminating instance's transaction the release of its
    /// public address (idempotent: nothing when it has none, and then the
    /// transaction requires it still has none, so a racing associate is
    /// either seen or fails on the instance record).
    pub(crate) async fn stage_public_ip_release(&self, inst: &Instance, tx: &mut Tx) -> Result<()> {
        let cur = self
            .store
            .public_net()
            .instance_ip(&inst.account, &inst.id)
            .await?;
        self.stage_record_release(inst, cur.as_ref(), tx).await
    }

    /// [`Self::stage_public_ip_release`] of the record `cur` read by the
    /// caller (`None`: the instance has none, required still absent).
    pub(crate) async fn stage_record_release(
        &self,
        inst: &Instance,
        cur: Option<&Versioned<InstancePublicIp>>,
        tx: &mut Tx,
    ) -> Result<()> {
        let k = self
            .store
            .keys()
            .instance_public_ip(&inst.account, &inst.id);
        match cur {
            Some(cur) => {
                self.stage_drop_public_ip(&inst.account, &cur.value, tx)
                    .await?;
                tx.delete_if_unchanged(&k, cur);
            }
            None => {
                tx.expect_absent(&k);
            }
        }
        Ok(())
    }

    /// Gives each new instance of `r` whose subnet maps public addresses on
    /// launch an address of the pool, in the background (RunInstances does
    /// not wait; EC2 too assigns it while the instance is pending). Never
    /// fails the launch: problems are logged.
    pub(crate) fn assign_launch_public_ips(&self, r: &Reservation) {
        let Ok(Some(pool)) = self.public_pool() else {
            return;
        };
        let launched: Vec<Launched> = r
            .instances
            .iter()
            .filter_map(|i| {
                let v = i.vpc.as_ref()?;
                Some(Launched {
                    account: i.account.clone(),
                    id: i.id.clone(),
                    vpc_id: v.vpc_id.clone()?,
                    subnet_id: v.subnet_id.clone(),
                    zone: i.availability_zone.clone(),
                    associate: v.associate_public_ip,
                })
            })
            .collect();
        if launched.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = assign_public_ips(&store, pool, launched).await {
                tracing::warn!(error = %e, "no public addresses for launched instances");
            }
        });
    }

    /// Fills in, for display, each instance's public address.
    pub(crate) async fn with_public_ips(
        &self,
        mut reservations: Vec<Reservation>,
    ) -> Result<Vec<Reservation>> {
        let mut by_account: HashMap<AccountId, BTreeMap<InstanceId, InstancePublicIp>> =
            HashMap::new();
        for r in &mut reservations {
            for i in &mut r.instances {
                let Some(v) = i.vpc.as_mut() else { continue };
                if !by_account.contains_key(&i.account) {
                    let all = self
                        .store
                        .public_net()
                        .instance_ips_of(&i.account)
                        .await?
                        .into_iter()
                        .map(|p| (p.value.instance_id.clone(), p.value))
                        .collect();
                    by_account.insert(i.account.clone(), all);
                }
                v.public_ip = by_account
                    .get(&i.account)
                    .and_then(|m| m.get(&i.id))
                    .map(|p| PublicAddressView {
                        public_ip: p.public_ip.clone(),
                        allocation_id: p.allocation_id.clone(),
                        association_id: p.association_id.clone(),
                    });
            }
        }
        Ok(reservations)
    }

    /// **Data plane hook.** The public address of each instance of `vpc`
    /// (of `account`) that has one — an associated Elastic IP or an
    /// auto-assigned address — for `Endpoint.public_ip` of the node API's
    /// NetworkView. One prefix read (`instance-public-ips/<account>/`);
    /// terminated instances have none (released in their terminate
    /// transaction). Whether the address reaches the internet also depends
    /// on the subnet's route ([`Domain::subnet_internet_routes`]).
    pub async fn instance_public_ips(
        &self,
        account: &AccountId,
        vpc: &VpcId,
    ) -> Result<BTreeMap<InstanceId, Ipv4Addr>> {
        Ok(self
            .store
            .public_net()
            .instance_ips_of(account)
            .await?
            .into_iter()
            .filter(|p| &p.value.vpc_id == vpc)
            .filter_map(|p| {
                let ip = p.value.public_ip.parse().ok()?;
                Some((p.value.instance_id, ip))
            })
            .collect())
    }
}

/// What the background assignment needs of a launched instance.
#[derive(Debug, Clone)]
struct Launched {
    account: AccountId,
    id: InstanceId,
    vpc_id: VpcId,
    subnet_id: Option<SubnetId>,
    zone: String,
    /// `AssociatePublicIpAddress` of its interface (overrides the subnet).
    associate: Option<bool>,
}

/// Instances per assignment transaction (two compares and two puts each;
/// etcd allows 128 operations per transaction).
const ASSIGN_CHUNK: usize = 30;

/// Claims an address for each launched instance whose subnet maps public
/// addresses and that has none yet, [`ASSIGN_CHUNK`] instances per
/// transaction (each claim created compare-absent). Afterwards, an instance
/// found already terminated (its terminate transaction ran before the
/// claim) gets its address released again.
async fn assign_public_ips(
    store: &crate::store::Store,
    pool: super::addresses::PublicPool,
    launched: Vec<Launched>,
) -> Result<()> {
    let keys = store.keys();
    let mut accounts: Vec<AccountId> = launched.iter().map(|l| l.account.clone()).collect();
    accounts.sort();
    accounts.dedup();
    let mut subnets = Vec::new();
    for a in &accounts {
        subnets.extend(
            store
                .vpcs()
                .subnets_of(a)
                .await?
                .into_iter()
                .map(|s| s.value),
        );
    }
    // The subnet of each instance (recorded, or its zone's default one) and
    // whether it maps public addresses.
    let wanted: Vec<(Launched, SubnetId)> = launched
        .into_iter()
        .filter_map(|l| {
            let s = subnets.iter().find(|s| match &l.subnet_id {
                Some(id) => &s.id == id,
                None => s.vpc_id == l.vpc_id && s.default_for_az && s.availability_zone == l.zone,
            })?;
            l.associate
                .unwrap_or(s.map_public_ip_on_launch)
                .then(|| (l.clone(), s.id.clone()))
        })
        .collect();
    for chunk in wanted.chunks(ASSIGN_CHUNK) {
        let mut done = false;
        for attempt in 0..MAX_ATTEMPTS {
            let ip_keys: Vec<String> = chunk
                .iter()
                .map(|(l, _)| keys.instance_public_ip(&l.account, &l.id))
                .collect();
            let have = store.get_many_raw(&ip_keys).await?;
            let mut used = super::addresses::used_public_ips(store).await?;
            let mut tx = Tx::new();
            let now = now_ms();
            for ((l, subnet), (k, cur)) in chunk.iter().zip(ip_keys.iter().zip(&have)) {
                if cur.is_some() {
                    continue;
                }
                let Some(ip) = pool.pick_free(&used) else {
                    tracing::warn!(instance = %l.id, "the public pool is exhausted: no public address");
                    continue;
                };
                used.insert(ip);
                tx.create(
                    &keys.public_ip(ip),
                    &PublicIpClaim {
                        ip: ip.to_string(),
                        account: l.account.clone(),
                        allocation_id: None,
                        instance_id: Some(l.id.clone()),
                        claimed_ms: now,
                    },
                )?;
                tx.create(
                    k,
                    &InstancePublicIp {
                        instance_id: l.id.clone(),
                        account: l.account.clone(),
                        vpc_id: l.vpc_id.clone(),
                        subnet_id: Some(subnet.clone()),
                        public_ip: ip.to_string(),
                        allocation_id: None,
                        association_id: None,
                        assigned_ms: now,
                    },
                )?;
            }
            if tx.is_empty() || store.commit(tx).await?.is_some() {
                done = true;
                break;
            }
            crate::store::backoff(attempt).await;
        }
        if !done {
            return Err(Error::Contention("public address assignment".into()));
        }
        release_if_terminated(store, chunk).await?;
    }
    Ok(())
}

/// Releases the auto-assigned address of each instance of `chunk` that
/// no longer holds one (terminated or gone, stopping or stopped: its state
/// change ran before the claim), comparing the instance so a racing start
/// (which keeps the address it finds) wins or loses as a whole.
async fn release_if_terminated(
    store: &crate::store::Store,
    chunk: &[(Launched, SubnetId)],
) -> Result<()> {
    let keys = store.keys();
    for (l, _) in chunk {
        let inst = store.instances().get(&l.account, &l.id).await?;
        if inst
            .as_ref()
            .is_some_and(|i| super::auto_ips::holds_auto_ip(i.value.state))
        {
            continue;
        }
        let Some(cur) = store.public_net().instance_ip(&l.account, &l.id).await? else {
            continue;
        };
        if cur.value.allocation_id.is_some() {
            continue;
        }
        let mut tx = Tx::new();
        let ik = keys.instance(&l.account, &l.id);
        match &inst {
            Some(i) => tx.expect_rev(&ik, i.mod_revision),
            None => tx.expect_absent(&ik),
        };
        tx.delete_if_unchanged(&keys.instance_public_ip(&l.account, &l.id), &cur);
        if let Ok(ip) = cur.value.public_ip.parse::<Ipv4Addr>() {
            tx.delete(&keys.public_ip(ip));
        }
        store.commit(tx).await?;
    }
    Ok(())
}
