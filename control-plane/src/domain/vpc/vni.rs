//! VXLAN network identifiers of VPCs: each VPC's overlay has a VNI in
//! 1..2^24-1, unique in the region while the VPC exists.
//!
//! Uniqueness is a guard record per VNI (`vpc-vnis/<vni>` -> the VPC),
//! created compare-absent in the transaction that creates the VPC (a taken
//! VNI fails the transaction, which is retried with another random one)
//! and deleted with the VPC, so a VNI is never handed out twice while its
//! VPC exists. VPCs created before VNIs existed (record schema 1) get one
//! the first time one is needed ([`Domain::vpc_vni`]): the VPC record is
//! compared and rewritten together with the guard's creation, so racing
//! callers agree on one VNI.

use serde::{Deserialize, Serialize};

use super::{vpc_not_found, Vpc, MAX_ATTEMPTS};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, VpcId};
use crate::store::{Keys, Record, Tx};

/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The guard of one VNI (`vpc-vnis/<vni>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VniGuard {
    /// The VPC holding it.
    pub vpc_id: VpcId,
    /// Its account.
    pub account: AccountId,
}

impl Record for VniGuard {
    const KIND: &'static str = "vpc-vni";
    const SCHEMA: u32 = 1;
}

/// A random VNI in 1..=[`MAX_VNI`] (random, so racing creations rarely
/// pick the same one; a taken one fails the creating transaction).
pub fn random_vni() -> u32 {
    loop {
        let v = rand::random::<u32>() & MAX_VNI;
        if v != 0 {
            return v;
        }
    }
}

/// Stages the guard of `vpc.vni` (compare-absent). No-op for VNI 0.
pub(crate) fn stage_guard(keys: &Keys, tx: &mut Tx, vpc: &Vpc) -> Result<()> {
    if vpc.vni == 0 {
        return Ok(());
    }
    tx.create(
        &keys.vpc_vni(vpc.vni),
        &VniGuard {
            vpc_id: vpc.id.clone(),
            account: vpc.account.clone(),
        },
    )?;
    Ok(())
}

/// Stages the release of `vpc`'s VNI (with the VPC's deletion).
pub(crate) fn stage_release(keys: &Keys, tx: &mut Tx, vpc: &Vpc) {
    if vpc.vni != 0 {
        tx.delete(&keys.vpc_vni(vpc.vni));
    }
}

impl Domain {
    /// The VNI of a VPC of `account`, allocated now (compare-and-swap of
    /// the VPC record with the guard's creation) for a VPC created before
    /// VNIs existed.
    pub async fn vpc_vni(&self, account: &AccountId, id: &VpcId) -> Result<u32> {
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let cur = self
                .store
                .vpcs()
                .vpc(account, id)
                .await?
                .ok_or_else(|| vpc_not_found(id.as_str()))?;
            if cur.value.vni != 0 {
                return Ok(cur.value.vni);
            }
            let mut next = cur.value.clone();
            next.vni = random_vni();
            let mut tx = Tx::new();
            tx.replace(&keys.vpc(account, id), &cur, &next)?;
            stage_guard(keys, &mut tx, &next)?;
            if self.store.commit(tx).await?.is_some() {
                tracing::info!(vpc = %id, vni = next.vni, "VNI allocated to an existing VPC");
                return Ok(next.vni);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.vpc(account, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_vnis_are_in_range() {
        for _ in 0..10_000 {
            let v = random_vni();
            assert!((1..=MAX_VNI).contains(&v));
        }
    }
}
