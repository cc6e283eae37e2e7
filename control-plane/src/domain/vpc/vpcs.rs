//! VPCs: CreateVpc (a /16../28 IPv4 block; EC2's per-account limit, the
//! default VPC included), DescribeVpcs (ids and filters), DeleteVpc
//! (`DependencyViolation` while subnets, security groups other than its
//! default group, an attached internet gateway or route tables other than
//! its main table exist; the default group and the main table go with it).

use std::collections::BTreeMap;

use super::gateways::InternetGateway;
use super::{
    dependency, routes, rules, vpc_not_found, Cidr, GroupNameGuard, SecurityGroup, Vpc, VpcAccount,
    MAX_ATTEMPTS,
};
use crate::domain::filters::{self, Filter};
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, RouteTableId, SecurityGroupId, VpcId};
use crate::store::{Keys, Tx, Versioned};

/// Filter names DescribeVpcs supports.
pub const VPC_FILTERS: &[&str] = &[
    "vpc-id",
    "cidr",
    "cidr-block-association.cidr-block",
    "is-default",
    "state",
    "owner-id",
    "tag:",
    "tag-key",
    "tag-value",
];

/// The smallest and largest VPC and subnet prefix lengths EC2 allows.
pub const PREFIX_RANGE: std::ops::RangeInclusive<u8> = 16..=28;

/// A new VPC and its default security group (members may talk to each
/// other; all egress allowed).
pub(crate) fn new_vpc(
    account: &AccountId,
    block: Cidr,
    is_default: bool,
    tags: BTreeMap<String, String>,
) -> (Vpc, SecurityGroup) {
    let id = VpcId::generate();
    let sg_id = SecurityGroupId::generate();
    let now = now_ms();
    let group = SecurityGroup {
        id: sg_id.clone(),
        account: account.clone(),
        vpc_id: id.clone(),
        name: "default".into(),
        description: "default VPC security group".into(),
        ingress: vec![rules::all_from_group(&sg_id)],
        egress: vec![rules::all_to_anywhere()],
        tags: BTreeMap::new(),
        created_ms: now,
    };
    let vpc = Vpc {
        id,
        account: account.clone(),
        cidr: block.to_string(),
        is_default,
        default_security_group_id: sg_id,
        tags,
        created_ms: now,
        vni: super::vni::random_vni(),
    };
    (vpc, group)
}

/// Stages the creation of a VPC with its default group (and the group's
/// name guard), its VNI's guard (a VNI taken meanwhile fails the
/// transaction; the caller retries with a new VPC) and its main route
/// table; with `igw` (the default VPC), that gateway attached and the main
/// table's route 0.0.0.0/0 to it.
pub(crate) fn stage_new_vpc(
    keys: &Keys,
    tx: &mut Tx,
    vpc: &Vpc,
    group: &SecurityGroup,
    igw: Option<&InternetGateway>,
) -> Result<()> {
    tx.create(&keys.vpc(&vpc.account, &vpc.id), vpc)?;
    super::vni::stage_guard(keys, tx, vpc)?;
    if let Some(g) = igw {
        tx.create(&keys.internet_gateway(&g.account, &g.id), g)?;
    }
    routes::stage_main_table(
        keys,
        tx,
        &routes::main_table(&vpc.account, &vpc.id, igw.map(|g| &g.id)),
    )?;
    tx.create(&keys.security_group(&group.account, &group.id), group)?;
    tx.create(
        &keys.security_group_name(&group.account, &vpc.id, &group.name),
        &GroupNameGuard {
            group_id: group.id.clone(),
        },
    )?;
    Ok(())
}

/// Stages the write of an account's VPC index over `cur` (created when
/// absent).
pub(crate) fn stage_index(
    keys: &Keys,
    tx: &mut Tx,
    account: &AccountId,
    cur: Option<&Versioned<VpcAccount>>,
    next: &VpcAccount,
) -> Result<()> {
    let k = keys.vpc_account(account);
    match cur {
        Some(cur) => tx.replace(&k, cur, next)?,
        None => tx.create(&k, next)?,
    };
    Ok(())
}

/// Parses ids given by a client.
pub(crate) fn parse_vpc_ids(ids: &[String]) -> Result<Vec<VpcId>> {
    ids.iter().map(|i| VpcId::parse(i)).collect()
}

impl Domain {
    /// CreateVpc.
    pub async fn create_vpc(
        &self,
        caller: &Caller,
        cidr: &str,
        tags: &[(String, String)],
    ) -> Result<Vpc> {
        let account = caller.account()?;
        let block = Cidr::parse(cidr)?;
        if !PREFIX_RANGE.contains(&block.prefix_len()) {
            return Err(Error::invalid_code(
                "InvalidVpc.Range",
                format!("The CIDR '{cidr}' is invalid: a VPC block is /16 to /28."),
            ));
        }
        let tags = validation::tags(tags)?;
        self.ensure_default_vpc(&account).await?;
        let limit = self.cfg.vpc.vpcs_per_account as usize;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let idx = self.store.vpcs().account(&account).await?;
            let mut next = idx.as_ref().map(|v| v.value.clone()).unwrap_or_default();
            if next.vpcs.len() >= limit {
                return Err(Error::invalid_code(
                    "VpcLimitExceeded",
                    format!("The maximum number of VPCs has been reached ({limit})."),
                ));
            }
            let (vpc, group) = new_vpc(&account, block, false, tags.clone());
            next.vpcs.push(vpc.id.clone());
            let mut tx = Tx::new();
            stage_index(keys, &mut tx, &account, idx.as_ref(), &next)?;
            stage_new_vpc(keys, &mut tx, &vpc, &group, None)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(vpc);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.vpc_account(&account)))
    }

    /// A VPC of the caller's account (`InvalidVpcID.NotFound` otherwise).
    pub(crate) async fn own_vpc(&self, account: &AccountId, id: &VpcId) -> Result<Versioned<Vpc>> {
        self.store
            .vpcs()
            .vpc(account, id)
            .await?
            .ok_or_else(|| vpc_not_found(id.as_str()))
    }

    /// DescribeVpcs.
    pub async fn describe_vpcs(
        &self,
        caller: &Caller,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Vpc>> {
        let account = caller.account()?;
        filters::check(filters, VPC_FILTERS)?;
        let ids = parse_vpc_ids(ids)?;
        self.ensure_default_vpc(&account).await?;
        let all: Vec<Vpc> = self
            .store
            .vpcs()
            .vpcs_of(&account)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|v| &v.id == *i)) {
            return Err(vpc_not_found(missing.as_str()));
        }
        Ok(all
            .into_iter()
            .filter(|v| ids.is_empty() || ids.contains(&v.id))
            .filter(|v| filters.iter().all(|f| vpc_matches(v, f)))
            .collect())
    }

    /// DeleteVpc.
    pub async fn delete_vpc(&self, caller: &Caller, id: &str) -> Result<()> {
        let account = caller.account()?;
        let id = VpcId::parse(id)?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let vpc = self.own_vpc(&account, &id).await?;
            let subnets = self.store.vpcs().subnets_of(&account).await?;
            if let Some(s) = subnets.iter().find(|s| s.value.vpc_id == id) {
                return Err(dependency(format!(
                    "The vpc '{id}' has dependencies and cannot be deleted: subnet {}",
                    s.value.id
                )));
            }
            let groups = self.store.vpcs().groups_of(&account).await?;
            if let Some(g) = groups
                .iter()
                .find(|g| g.value.vpc_id == id && !g.value.is_default())
            {
                return Err(dependency(format!(
                    "The vpc '{id}' has dependencies and cannot be deleted: security group {}",
                    g.value.id
                )));
            }
            if let Some(g) = self.igw_of_vpc(&account, &id).await? {
                return Err(dependency(format!(
                    "The vpc '{id}' has dependencies and cannot be deleted: internet gateway {} is attached",
                    g.value.id
                )));
            }
            let tables = self.store.public_net().tables_of(&account).await?;
            if let Some(t) = tables
                .iter()
                .find(|t| t.value.vpc_id == id && !t.value.main)
            {
                return Err(dependency(format!(
                    "The vpc '{id}' has dependencies and cannot be deleted: route table {}",
                    t.value.id
                )));
            }
            let idx = self.store.vpcs().account(&account).await?;
            let mut next = idx.as_ref().map(|v| v.value.clone()).unwrap_or_default();
            next.vpcs.retain(|v| v != &id);
            if next.default_vpc.as_ref() == Some(&id) {
                next.default_vpc = None;
            }
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&keys.vpc(&account, &id), &vpc);
            super::vni::stage_release(keys, &mut tx, &vpc.value);
            for g in groups.iter().filter(|g| g.value.vpc_id == id) {
                tx.delete_if_unchanged(&keys.security_group(&account, &g.value.id), g);
                tx.delete(&keys.security_group_name(&account, &id, &g.value.name));
            }
            // The main table goes with the VPC (it may be absent for a VPC
            // older than route tables).
            tx.delete(&keys.route_table(&account, &RouteTableId::main_of(&id)));
            stage_index(keys, &mut tx, &account, idx.as_ref(), &next)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(keys.vpc(&account, &id)))
    }
}

fn vpc_matches(v: &Vpc, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &v.tags) {
        return m;
    }
    match f.name.as_str() {
        "vpc-id" => filters::any_matches(&f.values, &[v.id.as_str()]),
        "cidr" | "cidr-block-association.cidr-block" => filters::any_matches(&f.values, &[&v.cidr]),
        "is-default" => filters::any_matches(&f.values, &[bool_str(v.is_default)]),
        "state" => filters::any_matches(&f.values, &["available"]),
        "owner-id" => filters::any_matches(&f.values, &[v.account.as_str()]),
        _ => false,
    }
}

/// `true` / `false` as filters compare them.
pub(crate) fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}
