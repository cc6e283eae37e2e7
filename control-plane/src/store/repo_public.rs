//! Repository of the public addressing aggregates of the VPC model: Elastic
//! IPs and their per-account index, the claims of the region's public
//! addresses, instances' current public addresses, internet gateways,
//! route tables and subnets' route table associations. Keys:
//! `elastic-ip-accounts/`, `elastic-ips/`, `public-ips/`,
//! `instance-public-ips/`, `internet-gateways/`, `route-tables/`,
//! `route-table-subnets/` (docs/etcd-schema.md). Multi-record changes are
//! staged by [`crate::domain::vpc`] into one [`super::Tx`].

use super::{Record, Store, Versioned};
use crate::domain::vpc::addresses::{ElasticIp, ElasticIpAccount, InstancePublicIp, PublicIpClaim};
use crate::domain::vpc::gateways::InternetGateway;
use crate::domain::vpc::routes::{RouteTable, SubnetRouteTable};
use crate::error::Result;
use crate::ids::{AccountId, AllocationId, InstanceId, InternetGatewayId, RouteTableId, SubnetId};

impl Store {
    /// Elastic IPs, public addresses, internet gateways and route tables.
    pub fn public_net(&self) -> PublicNet<'_> {
        PublicNet(self)
    }
}

/// Public addressing records of accounts.
#[derive(Debug, Clone, Copy)]
pub struct PublicNet<'a>(&'a Store);

impl PublicNet<'_> {
    async fn all<R: Record>(&self, prefix: String) -> Result<Vec<Versioned<R>>> {
        let all = self.0.repo().pages(prefix).collect().await?;
        Ok(all.into_iter().map(|(_, v)| v).collect())
    }

    /// An account's Elastic IP index.
    pub async fn eip_account(
        &self,
        account: &AccountId,
    ) -> Result<Option<Versioned<ElasticIpAccount>>> {
        self.0.get(&self.0.keys().elastic_ip_account(account)).await
    }
    /// An Elastic IP.
    pub async fn eip(
        &self,
        account: &AccountId,
        id: &AllocationId,
    ) -> Result<Option<Versioned<ElasticIp>>> {
        self.0.get(&self.0.keys().elastic_ip(account, id)).await
    }
    /// Every Elastic IP of an account.
    pub async fn eips_of(&self, account: &AccountId) -> Result<Vec<Versioned<ElasticIp>>> {
        self.all(self.0.keys().account_elastic_ips(account)).await
    }
    /// Every public address claim of the region.
    pub async fn claims(&self) -> Result<Vec<Versioned<PublicIpClaim>>> {
        self.all(self.0.keys().public_ips()).await
    }
    /// An instance's public address.
    pub async fn instance_ip(
        &self,
        account: &AccountId,
        id: &InstanceId,
    ) -> Result<Option<Versioned<InstancePublicIp>>> {
        self.0
            .get(&self.0.keys().instance_public_ip(account, id))
            .await
    }
    /// Every instance public address of an account.
    pub async fn instance_ips_of(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<InstancePublicIp>>> {
        self.all(self.0.keys().account_instance_public_ips(account))
            .await
    }
    /// An internet gateway.
    pub async fn igw(
        &self,
        account: &AccountId,
        id: &InternetGatewayId,
    ) -> Result<Option<Versioned<InternetGateway>>> {
        self.0
            .get(&self.0.keys().internet_gateway(account, id))
            .await
    }
    /// Every internet gateway of an account.
    pub async fn igws_of(&self, account: &AccountId) -> Result<Vec<Versioned<InternetGateway>>> {
        self.all(self.0.keys().account_internet_gateways(account))
            .await
    }
    /// A route table.
    pub async fn table(
        &self,
        account: &AccountId,
        id: &RouteTableId,
    ) -> Result<Option<Versioned<RouteTable>>> {
        self.0.get(&self.0.keys().route_table(account, id)).await
    }
    /// Every route table of an account.
    pub async fn tables_of(&self, account: &AccountId) -> Result<Vec<Versioned<RouteTable>>> {
        self.all(self.0.keys().account_route_tables(account)).await
    }
    /// A subnet's explicit route table association.
    pub async fn subnet_table(
        &self,
        account: &AccountId,
        subnet: &SubnetId,
    ) -> Result<Option<Versioned<SubnetRouteTable>>> {
        self.0
            .get(&self.0.keys().route_table_subnet(account, subnet))
            .await
    }
    /// Every explicit route table association of an account.
    pub async fn subnet_tables_of(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Versioned<SubnetRouteTable>>> {
        self.all(self.0.keys().account_route_table_subnets(account))
            .await
    }
}
