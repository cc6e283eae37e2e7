//! Repository of the VPC aggregates: the per-account VPC index, VPCs, VPC
//! subnets, security groups and their name guards, elastic network
//! interfaces. Keys: `vpc-accounts/`, `vpcs/`, `vpc-subnets/`,
//! `security-groups/`, `security-group-names/`, `network-interfaces/`
//! (see docs/etcd-schema.md). Multi-record changes are staged by
//! [`crate::domain::vpc`] into one [`super::Tx`] with these keys.

use super::{Store, Versioned};
use crate::domain::vpc::enis::NetworkInterface;
use crate::domain::vpc::{SecurityGroup, Vpc, VpcAccount, VpcSubnet};
use crate::error::Result;
use crate::ids::{AccountId, NetworkInterfaceId, SecurityGroupId, SubnetId, VpcId};

impl Store {
    /// VPCs, subnets and security groups.
    pub fn vpcs(&self) -> Vpcs<'_> {
        Vpcs(self)
    }
}

/// VPCs, VPC subnets and security groups of accounts.
#[derive(Debug, Clone, Copy)]
pub struct Vpcs<'a>(&'a Store);

impl Vpcs<'_> {
    /// An account's VPC index.
    pub async fn account(&self, account: &AccountId) -> Result<Option<Versioned<VpcAccount>>> {
        self.0.get(&self.0.keys().vpc_account(account)).await
    }
    /// A VPC.
    pub async fn vpc(&self, account: &AccountId, id: &VpcId) -> Result<Option<Versioned<Vpc>>> {
        self.0.get(&self.0.keys().vpc(account, id)).await
    }
    /// Every VPC of an account.
    pub async fn vpcs_of(&self, account: &AccountId) -> Result<Vec<Versioned<Vpc>>> {
        let all = self
            .0
            .repo()
            .pages(self.0.keys().account_vpcs(account))
            .collect()
            .await?;
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }
    /// A VPC subnet.
    pub async fn subnet(
        &self,
        account: &AccountId,
        id: &SubnetId,
    ) -> Result<Option<Versioned<VpcSubnet>>> {
        self.0.get(&self.0.keys().vpc_subnet(account, id)).await
    }
    /// Every VPC subnet of an account.
    pub async fn subnets_of(&self, account: &AccountId) -> Result<Vec<Versioned<VpcSubnet>>> {
        let all = self
            .0
            .repo()
            .pages(self.0.keys().account_vpc_subnets(account))
            .collect()
            .await?;
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }
    /// A security group.
    pub async fn group(
        &self,
        account: &AccountId,
        id: &SecurityGroupId,
    ) -> Result<Option<Versioned<SecurityGroup>>> {
        self.0.get(&self.0.keys().security_group(account, id)).await
    }
    /// Every security group of an account.
    pub async fn groups_of(&self, account: &AccountId) -> Result<Vec<Versioned<SecurityGroup>>> {
        let all = self
            .0
            .repo()
            .pages(self.0.keys().account_security_groups(account))
            .collect()
            .await?;
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }
    /// An elastic network interface.
    pub async fn interface(
        &self,
        account: &AccountId,
        id: &NetworkInterfaceId,
    ) -> Result<Option<Versioned<NetworkInterface>>> {
        self.0
            .get(&self.0.keys().network_interface(account, id))
            .await
    }
    /// Every elastic network interface of an account.
    pub async fn interfaces_of(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<NetworkInterface>>> {
        let all = self
            .0
            .repo()
            .pages(self.0.keys().account_network_interfaces(account))
            .collect()
            .await?;
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }
    /// How many addresses of a subnet are claimed (IPAM claims).
    pub async fn claimed_addresses(&self, id: &SubnetId) -> Result<i64> {
        self.0.count(&self.0.keys().address_claims(id)).await
    }
}
