//! The default VPC of an account, as EC2 has one per region: 172.31.0.0/16,
//! a default /20 subnet in each zone (172.31.0.0/20, 172.31.16.0/20, … in
//! zone order, at most 16 zones), its default security group, an attached
//! internet gateway and a main route table sending 0.0.0.0/0 to it. Created
//! lazily on the account's first VPC call, in one transaction that creates
//! the account's VPC index (compare-absent) or compares it: two racing
//! first calls create one default VPC. Deleting it is allowed and it is not
//! re-created (the index remembers it was).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::vpcs::{new_vpc, stage_index, stage_new_vpc};
use super::{Cidr, Vpc, VpcSubnet, MAX_ATTEMPTS};
use crate::domain::model::now_ms;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, SubnetId};
use crate::store::Tx;

/// The default VPC's block.
pub const DEFAULT_VPC_CIDR: &str = "172.31.0.0/16";
/// The prefix length of a default subnet.
pub const DEFAULT_SUBNET_PREFIX: u8 = 20;

/// The default subnets of `vpc`, one per zone (at most 16).
pub fn default_subnets(vpc: &Vpc, zones: &[String]) -> Vec<VpcSubnet> {
    let base = u32::from(Ipv4Addr::new(172, 31, 0, 0));
    zones
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, zone)| {
            // i < 16: each /20 is 4096 addresses.
            let n = u32::try_from(i).unwrap_or(0);
            VpcSubnet {
                id: SubnetId::generate_vpc(),
                account: vpc.account.clone(),
                vpc_id: vpc.id.clone(),
                cidr: Cidr::new(Ipv4Addr::from(base + (n << 12)), DEFAULT_SUBNET_PREFIX)
                    .to_string(),
                availability_zone: zone.clone(),
                default_for_az: true,
                map_public_ip_on_launch: true,
                tags: BTreeMap::new(),
                created_ms: now_ms(),
            }
        })
        .collect()
}

impl Domain {
    /// Creates the account's default VPC unless it exists or existed.
    pub async fn ensure_default_vpc(&self, account: &AccountId) -> Result<()> {
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let idx = self.store.vpcs().account(account).await?;
            if idx.as_ref().is_some_and(|v| v.value.default_created) {
                return Ok(());
            }
            let block = Cidr::parse(DEFAULT_VPC_CIDR)?;
            let (vpc, group) = new_vpc(account, block, true, BTreeMap::new());
            let igw = super::gateways::new_igw(account, Some(vpc.id.clone()), BTreeMap::new());
            let mut next = idx.as_ref().map(|v| v.value.clone()).unwrap_or_default();
            next.vpcs.push(vpc.id.clone());
            next.default_vpc = Some(vpc.id.clone());
            next.default_created = true;
            let mut tx = Tx::new();
            stage_index(keys, &mut tx, account, idx.as_ref(), &next)?;
            stage_new_vpc(keys, &mut tx, &vpc, &group, Some(&igw))?;
            for s in default_subnets(&vpc, &self.cfg.zones) {
                tx.create(&keys.vpc_subnet(account, &s.id), &s)?;
            }
            if self.store.commit(tx).await?.is_some() {
                tracing::info!(%account, vpc = %vpc.id, "default VPC created");
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.vpc_account(account)))
    }

    /// The account's default VPC, if it has one (created first if it never had).
    pub async fn default_vpc(&self, account: &AccountId) -> Result<Option<Vpc>> {
        self.ensure_default_vpc(account).await?;
        let Some(idx) = self.store.vpcs().account(account).await? else {
            return Ok(None);
        };
        let Some(id) = idx.value.default_vpc else {
            return Ok(None);
        };
        Ok(self.store.vpcs().vpc(account, &id).await?.map(|v| v.value))
    }
}
