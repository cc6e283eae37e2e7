//! Auto-assigned public addresses after launch, as EC2 moves them: an
//! instance whose subnet maps public addresses (`MapPublicIpOnLaunch`)
//! loses its auto-assigned address when it stops (the claim goes back to
//! the pool) and gets a new one when it starts; an Elastic IP that leaves a
//! running or pending instance (DisassociateAddress, or AssociateAddress
//! moving it elsewhere) is replaced by a new auto-assigned address. An
//! associated Elastic IP stays through stop and start.
//!
//! Every step is staged into the transaction that makes the change (the
//! instance's state change, the Elastic IP's association), comparing the
//! instance's public address record (and the instance when its state
//! decides): the release happens exactly once, and a new address's claim is
//! created compare-absent, so no two instances (whichever replica assigns)
//! ever hold one address. Whether an instance gets an address at start is
//! decided by its subnet's `MapPublicIpOnLaunch` at that moment; an
//! exhausted pool is logged and the instance runs without one (it can be
//! given an Elastic IP).

use super::addresses::{used_public_ips, InstancePublicIp, PublicIpClaim};
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance};
use crate::domain::Domain;
use crate::error::Result;
use crate::ids::{AccountId, InstanceId};
use crate::store::{Tx, Versioned};

/// Whether an instance in `state` keeps an auto-assigned public address.
pub(crate) fn holds_auto_ip(state: State) -> bool {
    matches!(state, State::Pending | State::Running)
}

impl Domain {
    /// A new auto-assigned address for `inst` when its subnet maps public
    /// addresses on launch and the pool has one: the record to write, its
    /// claim staged into `tx` (compare-absent). `None`: no address.
    async fn stage_new_auto_ip(
        &self,
        inst: &Instance,
        tx: &mut Tx,
    ) -> Result<Option<InstancePublicIp>> {
        let Some(pool) = self.public_pool()? else {
            return Ok(None);
        };
        let Some(vpc_id) = inst.vpc.as_ref().and_then(|v| v.vpc_id.clone()) else {
            return Ok(None);
        };
        let subnet_id = match inst.vpc.as_ref().and_then(|v| v.subnet_id.clone()) {
            Some(s) => s,
            None => match self
                .default_subnet_of_zone(&inst.account, &vpc_id, &inst.availability_zone)
                .await?
            {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        let maps = self
            .store
            .vpcs()
            .subnet(&inst.account, &subnet_id)
            .await?
            .is_some_and(|s| s.value.map_public_ip_on_launch);
        if !maps {
            return Ok(None);
        }
        let used = used_public_ips(&self.store).await?;
        let Some(ip) = pool.pick_free(&used) else {
            tracing::warn!(instance = %inst.id, "the public pool is exhausted: no public address");
            return Ok(None);
        };
        let now = now_ms();
        tx.create(
            &self.store.keys().public_ip(ip),
            &PublicIpClaim {
                ip: ip.to_string(),
                account: inst.account.clone(),
                allocation_id: None,
                instance_id: Some(inst.id.clone()),
                claimed_ms: now,
            },
        )?;
        Ok(Some(InstancePublicIp {
            instance_id: inst.id.clone(),
            account: inst.account.clone(),
            vpc_id,
            subnet_id: Some(subnet_id),
            public_ip: ip.to_string(),
            allocation_id: None,
            association_id: None,
            assigned_ms: now,
        }))
    }

    /// Stop (into `stopping`/`stopped`): adds to the instance's state
    /// change the release of its auto-assigned address. An Elastic IP
    /// stays. The record is compared either way, so a racing assignment
    /// makes the transaction retry and see it.
    pub(crate) async fn stage_auto_ip_stop(&self, inst: &Instance, tx: &mut Tx) -> Result<()> {
        let cur = self
            .store
            .public_net()
            .instance_ip(&inst.account, &inst.id)
            .await?;
        match &cur {
            Some(eip) if eip.value.allocation_id.is_some() => {
                let k = self
                    .store
                    .keys()
                    .instance_public_ip(&inst.account, &inst.id);
                tx.expect_rev(&k, eip.mod_revision);
                Ok(())
            }
            _ => self.stage_record_release(inst, cur.as_ref(), tx).await,
        }
    }

    /// Start (a stopped instance placed again): adds to the instance's
    /// state change a new auto-assigned address when it has no public
    /// address and its subnet maps them (an Elastic IP kept through the
    /// stop stays).
    pub(crate) async fn stage_auto_ip_start(&self, inst: &Instance, tx: &mut Tx) -> Result<()> {
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
                tx.expect_rev(&k, cur.mod_revision);
            }
            None => match self.stage_new_auto_ip(inst, tx).await? {
                Some(rec) => {
                    tx.create(&k, &rec)?;
                }
                None => {
                    tx.expect_absent(&k);
                }
            },
        }
        Ok(())
    }

    /// An Elastic IP leaves instance `iid` whose public address record is
    /// `cur` (that Elastic IP's): a pending or running instance whose
    /// subnet maps public addresses gets a new auto-assigned address in
    /// its place, any other loses the record. The instance is compared, so
    /// a racing stop or start sees the outcome.
    pub(crate) async fn stage_eip_leaves(
        &self,
        account: &AccountId,
        iid: &InstanceId,
        cur: &Versioned<InstancePublicIp>,
        tx: &mut Tx,
    ) -> Result<()> {
        let keys = self.store.keys();
        let k = keys.instance_public_ip(account, iid);
        let inst = self.store.instances().get(account, iid).await?;
        let replacement = match &inst {
            Some(i) => {
                tx.expect_rev(&keys.instance(account, iid), i.mod_revision);
                if holds_auto_ip(i.value.state) {
                    self.stage_new_auto_ip(&i.value, tx).await?
                } else {
                    None
                }
            }
            None => {
                tx.expect_absent(&keys.instance(account, iid));
                None
            }
        };
        match replacement {
            Some(rec) => {
                tx.replace(&k, cur, &rec)?;
            }
            None => {
                tx.delete_if_unchanged(&k, cur);
            }
        }
        Ok(())
    }
}
