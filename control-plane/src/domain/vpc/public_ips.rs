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
//! claimed right after RunInstances committed the instances, in its own
//! transaction that compares the instance record (a racing terminate wins
//! or loses as a whole). A replica that dies between the two leaves the
//! instance without a public address (it can be given an Elastic IP); an
//! exhausted pool is logged, and the instance runs without one. Stopping
//! keeps the address (EC2 releases it; not done here).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::addresses::{ElasticIp, InstancePublicIp, PublicIpClaim};
use super::MAX_ATTEMPTS;
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance};
use crate::domain::views::Reservation;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, AddressAssociationId, AllocationId, InstanceId, VpcId};
use crate::store::Tx;

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
        let k = self
            .store
            .keys()
            .instance_public_ip(&inst.account, &inst.id);
        match self
            .store
            .public_net()
            .instance_ip(&inst.account, &inst.id)
            .await?
        {
            Some(cur) => {
                self.stage_drop_public_ip(&inst.account, &cur.value, tx)
                    .await?;
                tx.delete_if_unchanged(&k, &cur);
            }
            None => {
                tx.expect_absent(&k);
            }
        }
        Ok(())
    }

    /// Gives each new instance of `r` whose subnet maps public addresses on
    /// launch an address of the pool (see the module docs). Never fails the
    /// launch: problems are logged.
    pub(crate) async fn assign_launch_public_ips(&self, r: &Reservation) {
        if !matches!(self.public_pool(), Ok(Some(_))) {
            return;
        }
        for i in &r.instances {
            if let Err(e) = self.assign_public_ip(i).await {
                tracing::warn!(instance = %i.id, error = %e, "no public address for the instance");
            }
        }
    }

    async fn assign_public_ip(&self, launched: &Instance) -> Result<()> {
        let account = &launched.account;
        let Some(v) = launched.vpc.as_ref() else {
            return Ok(());
        };
        let Some(vpc_id) = v.vpc_id.clone() else {
            return Ok(());
        };
        let subnet = match v.subnet_id.clone() {
            Some(s) => Some(s),
            None => {
                self.default_subnet_of_zone(account, &vpc_id, &launched.availability_zone)
                    .await?
            }
        };
        let Some(subnet) = subnet else {
            return Ok(());
        };
        let maps = self
            .store
            .vpcs()
            .subnet(account, &subnet)
            .await?
            .is_some_and(|s| s.value.map_public_ip_on_launch);
        if !maps {
            return Ok(());
        }
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let Some(inst) = self.store.instances().get(account, &launched.id).await? else {
                return Ok(());
            };
            if matches!(inst.value.state, State::Terminated | State::ShuttingDown) {
                return Ok(());
            }
            let ip_key = keys.instance_public_ip(account, &launched.id);
            if self.store.get_raw(&ip_key).await?.is_some() {
                return Ok(());
            }
            let ip = self.free_public_ip().await?;
            let now = now_ms();
            let mut tx = Tx::new();
            tx.create(
                &keys.public_ip(ip),
                &PublicIpClaim {
                    ip: ip.to_string(),
                    account: account.clone(),
                    allocation_id: None,
                    instance_id: Some(launched.id.clone()),
                    claimed_ms: now,
                },
            )?;
            tx.create(
                &ip_key,
                &InstancePublicIp {
                    instance_id: launched.id.clone(),
                    account: account.clone(),
                    vpc_id: vpc_id.clone(),
                    subnet_id: Some(subnet.clone()),
                    public_ip: ip.to_string(),
                    allocation_id: None,
                    association_id: None,
                    assigned_ms: now,
                },
            )?;
            tx.expect_rev(&keys.instance(account, &launched.id), inst.mod_revision);
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(launched.id.to_string()))
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
