//! Internet gateways: CreateInternetGateway, AttachInternetGateway (one per
//! VPC, one VPC per gateway: `Resource.AlreadyAssociated`),
//! DetachInternetGateway (`Gateway.NotAttached` when not attached to that
//! VPC; `DependencyViolation` while an instance of the VPC has a public
//! address), DeleteInternetGateway (`DependencyViolation` while attached),
//! DescribeInternetGateways.
//!
//! Consistency: attach and detach rewrite the gateway and the VPC record in
//! one transaction, so two gateways racing to attach to one VPC cannot both
//! win and DeleteVpc (delete-if-unchanged) never leaves a gateway attached
//! to a deleted VPC. AssociateAddress compares the gateway record, so a
//! detach cannot slip between its check and its write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{dependency, MAX_ATTEMPTS};
use crate::domain::filters::{self, Filter};
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InternetGatewayId, VpcId};
use crate::store::{Record, Tx, Versioned};

/// An internet gateway (`internet-gateways/<account>/<igw>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InternetGateway {
    /// Id.
    pub id: InternetGatewayId,
    /// Owner.
    pub account: AccountId,
    /// The VPC it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_ms: i64,
}

impl Record for InternetGateway {
    const KIND: &'static str = "internet-gateway";
    const SCHEMA: u32 = 1;
}

/// Filter names DescribeInternetGateways supports.
pub const IGW_FILTERS: &[&str] = &[
    "internet-gateway-id",
    "attachment.vpc-id",
    "attachment.state",
    "owner-id",
    "tag:",
    "tag-key",
    "tag-value",
];

/// `InvalidInternetGatewayID.NotFound`.
pub(crate) fn igw_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidInternetGatewayID.NotFound",
        format!("The internetGateway ID '{id}' does not exist"),
    )
}

/// `Gateway.NotAttached`.
pub(crate) fn not_attached(message: impl Into<String>) -> Error {
    Error::incorrect_state("Gateway.NotAttached", message)
}

/// A new gateway of `account`, attached to `vpc` when given.
pub(crate) fn new_igw(
    account: &AccountId,
    vpc: Option<VpcId>,
    tags: BTreeMap<String, String>,
) -> InternetGateway {
    InternetGateway {
        id: InternetGatewayId::generate(),
        account: account.clone(),
        vpc_id: vpc,
        tags,
        created_ms: now_ms(),
    }
}

impl Domain {
    /// An internet gateway of the caller's account.
    pub(crate) async fn own_igw(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Versioned<InternetGateway>> {
        let gid = InternetGatewayId::parse(id)?;
        self.store
            .public_net()
            .igw(account, &gid)
            .await?
            .ok_or_else(|| igw_not_found(id))
    }

    /// The gateway attached to `vpc`, if any.
    pub(crate) async fn igw_of_vpc(
        &self,
        account: &AccountId,
        vpc: &VpcId,
    ) -> Result<Option<Versioned<InternetGateway>>> {
        Ok(self
            .store
            .public_net()
            .igws_of(account)
            .await?
            .into_iter()
            .find(|g| g.value.vpc_id.as_ref() == Some(vpc)))
    }

    /// CreateInternetGateway. At most `[vpc] vpcs_per_account` gateways per
    /// account (EC2's quotas of both are 5).
    pub async fn create_internet_gateway(
        &self,
        caller: &Caller,
        tags: &[(String, String)],
    ) -> Result<InternetGateway> {
        let account = caller.account()?;
        let tags = validation::tags(tags)?;
        let limit = self.cfg.vpc.vpcs_per_account as usize;
        if self.store.public_net().igws_of(&account).await?.len() >= limit {
            return Err(Error::invalid_code(
                "InternetGatewayLimitExceeded",
                format!("The maximum number of internet gateways has been reached ({limit})."),
            ));
        }
        let igw = new_igw(&account, None, tags);
        let mut tx = Tx::new();
        tx.create(&self.store.keys().internet_gateway(&account, &igw.id), &igw)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::Contention(igw.id.to_string()));
        }
        Ok(igw)
    }

    /// DescribeInternetGateways.
    pub async fn describe_internet_gateways(
        &self,
        caller: &Caller,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<InternetGateway>> {
        let account = caller.account()?;
        filters::check(filters, IGW_FILTERS)?;
        let ids: Vec<InternetGatewayId> = ids
            .iter()
            .map(|i| InternetGatewayId::parse(i))
            .collect::<Result<_>>()?;
        self.ensure_default_vpc(&account).await?;
        let all: Vec<InternetGateway> = self
            .store
            .public_net()
            .igws_of(&account)
            .await?
            .into_iter()
            .map(|g| g.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|g| &g.id == *i)) {
            return Err(igw_not_found(missing.as_str()));
        }
        Ok(all
            .into_iter()
            .filter(|g| ids.is_empty() || ids.contains(&g.id))
            .filter(|g| filters.iter().all(|f| igw_matches(g, f)))
            .collect())
    }

    /// AttachInternetGateway.
    pub async fn attach_internet_gateway(
        &self,
        caller: &Caller,
        igw_id: &str,
        vpc_id: &str,
    ) -> Result<()> {
        self.set_attachment(caller, igw_id, vpc_id, true).await
    }

    /// DetachInternetGateway.
    pub async fn detach_internet_gateway(
        &self,
        caller: &Caller,
        igw_id: &str,
        vpc_id: &str,
    ) -> Result<()> {
        self.set_attachment(caller, igw_id, vpc_id, false).await
    }

    /// Why `igw` cannot be attached to (`attach`) or detached from `vid`.
    async fn attachment_refusal(
        &self,
        account: &AccountId,
        igw: &InternetGateway,
        vid: &VpcId,
        attach: bool,
    ) -> Result<Option<Error>> {
        let id = &igw.id;
        if attach {
            if let Some(v) = &igw.vpc_id {
                return Ok(Some(Error::invalid_code(
                    "Resource.AlreadyAssociated",
                    format!("resource {id} is already attached to network {v}"),
                )));
            }
            if let Some(other) = self.igw_of_vpc(account, vid).await? {
                return Ok(Some(Error::invalid_code(
                    "Resource.AlreadyAssociated",
                    format!(
                        "network {vid} already has an internet gateway attached ({})",
                        other.value.id
                    ),
                )));
            }
            return Ok(None);
        }
        if igw.vpc_id.as_ref() != Some(vid) {
            return Ok(Some(not_attached(format!(
                "resource {id} is not attached to network {vid}"
            ))));
        }
        let mapped = self
            .store
            .public_net()
            .instance_ips_of(account)
            .await?
            .into_iter()
            .find(|p| &p.value.vpc_id == vid);
        Ok(mapped.map(|p| {
            dependency(format!(
                "Network {vid} has some mapped public address(es) ({} of {}). Please unmap those public address(es) before detaching the gateway.",
                p.value.public_ip, p.value.instance_id
            ))
        }))
    }

    /// Attach or detach: the gateway and the VPC record rewritten in one
    /// transaction (see the module docs).
    async fn set_attachment(
        &self,
        caller: &Caller,
        igw_id: &str,
        vpc_id: &str,
        attach: bool,
    ) -> Result<()> {
        let account = caller.account()?;
        let vid = VpcId::parse(vpc_id)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let igw = self.own_igw(&account, igw_id).await?;
            let vpc = self.own_vpc(&account, &vid).await?;
            if let Some(e) = self
                .attachment_refusal(&account, &igw.value, &vid, attach)
                .await?
            {
                return Err(e);
            }
            let next = InternetGateway {
                vpc_id: attach.then(|| vid.clone()),
                ..igw.value.clone()
            };
            let mut tx = Tx::new();
            tx.replace(&keys.internet_gateway(&account, &next.id), &igw, &next)?;
            tx.replace(&keys.vpc(&account, &vid), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(igw_id.to_string()))
    }

    /// DeleteInternetGateway. Routes to it stay, as `blackhole` (as in EC2).
    pub async fn delete_internet_gateway(&self, caller: &Caller, igw_id: &str) -> Result<()> {
        let account = caller.account()?;
        let igw = self.own_igw(&account, igw_id).await?;
        if let Some(v) = &igw.value.vpc_id {
            return Err(dependency(format!(
                "The internetGateway '{igw_id}' has dependencies and cannot be deleted: attached to {v}"
            )));
        }
        let mut tx = Tx::new();
        tx.delete_if_unchanged(
            &self.store.keys().internet_gateway(&account, &igw.value.id),
            &igw,
        );
        if self.store.commit(tx).await?.is_none() {
            // Attached (or deleted) meanwhile: answer as the new state says.
            let now = self.own_igw(&account, igw_id).await?;
            if now.value.vpc_id.is_some() {
                return Err(dependency(format!(
                    "The internetGateway '{igw_id}' has dependencies and cannot be deleted"
                )));
            }
            return Err(Error::Contention(igw_id.to_string()));
        }
        Ok(())
    }
}

fn igw_matches(g: &InternetGateway, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &g.tags) {
        return m;
    }
    let v = &f.values;
    match f.name.as_str() {
        "internet-gateway-id" => filters::any_matches(v, &[g.id.as_str()]),
        "attachment.vpc-id" => g
            .vpc_id
            .as_ref()
            .is_some_and(|x| filters::any_matches(v, &[x.as_str()])),
        "attachment.state" => {
            g.vpc_id.is_some() && filters::any_matches(v, &["available", "attached"])
        }
        "owner-id" => filters::any_matches(v, &[g.account.as_str()]),
        _ => false,
    }
}
