//! Security groups: CreateSecurityGroup (name unique in its VPC through a
//! name guard created in the same transaction), DescribeSecurityGroups,
//! DeleteSecurityGroup (`CannotDelete` for a VPC's default group,
//! `DependencyViolation` while another group's rule names it or an instance
//! not terminated is in it), Authorize/Revoke
//! Ingress/Egress (compare-and-swap of the group record; nothing is written
//! unless every permission of the call is valid, new (authorize) or present
//! (revoke)) and DescribeSecurityGroupRules.

use super::rules::{self, Direction, PermissionInput, MAX_RULES_PER_DIRECTION};
use super::{
    dependency, group_not_found, GroupNameGuard, RuleSource, SecurityGroup, SgRule, MAX_ATTEMPTS,
};
use crate::domain::filters::{self, Filter};
use crate::domain::model::now_ms;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, SecurityGroupId, SecurityGroupRuleId, VpcId};
use crate::store::{Tx, Versioned};

/// Filter names DescribeSecurityGroups supports.
pub const GROUP_FILTERS: &[&str] = &[
    "group-id",
    "group-name",
    "vpc-id",
    "description",
    "owner-id",
    "ip-permission.cidr",
    "ip-permission.group-id",
    "ip-permission.protocol",
    "egress.ip-permission.cidr",
    "egress.ip-permission.group-id",
    "tag:",
    "tag-key",
    "tag-value",
];

/// Filter names DescribeSecurityGroupRules supports.
pub const RULE_FILTERS: &[&str] = &["group-id", "security-group-rule-id"];

/// Longest group name and description.
pub const MAX_NAME: usize = 255;

/// Characters EC2 allows in VPC group names and descriptions.
pub fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c)
}

/// How a request names a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    /// `GroupId`.
    Id(String),
    /// `GroupName` (a group of the default VPC, as EC2).
    Name(String),
}

/// A rule as DescribeSecurityGroupRules shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleView {
    /// Its group.
    pub group_id: SecurityGroupId,
    /// Its group's owner.
    pub account: AccountId,
    /// Outbound.
    pub is_egress: bool,
    /// The rule.
    pub rule: SgRule,
}

fn check_text(what: &str, s: &str) -> Result<()> {
    if s.chars().count() > MAX_NAME || !s.chars().all(allowed_char) {
        return Err(Error::invalid(format!(
            "Invalid {what}: at most {MAX_NAME} characters of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$*"
        )));
    }
    Ok(())
}

impl Domain {
    /// CreateSecurityGroup (in `vpc_id`, or the default VPC).
    pub async fn create_security_group(
        &self,
        caller: &Caller,
        name: &str,
        description: &str,
        vpc_id: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<SecurityGroup> {
        let account = caller.account()?;
        if name.is_empty() {
            return Err(Error::missing("GroupName"));
        }
        if description.is_empty() {
            return Err(Error::missing("GroupDescription"));
        }
        check_text("group name", name)?;
        check_text("group description", description)?;
        if name.starts_with("sg-") {
            return Err(Error::invalid("Group names may not be in the format sg-*"));
        }
        if name == "default" {
            return Err(Error::invalid_code(
                "InvalidGroup.Reserved",
                "The security group 'default' is reserved",
            ));
        }
        let tags = validation::tags(tags)?;
        let vpc_id = match vpc_id {
            Some(v) => VpcId::parse(v)?,
            None => self
                .default_vpc(&account)
                .await?
                .map(|v| v.id)
                .ok_or_else(|| {
                    Error::invalid_code(
                        "VPCIdNotSpecified",
                        "No default VPC for this user: give a VpcId",
                    )
                })?,
        };
        self.ensure_default_vpc(&account).await?;
        let keys = self.store.keys();
        let guard_key = keys.security_group_name(&account, &vpc_id, name);
        for attempt in 0..MAX_ATTEMPTS {
            let vpc = self.own_vpc(&account, &vpc_id).await?;
            if self.store.get_raw(&guard_key).await?.is_some() {
                return Err(duplicate(name, &vpc_id));
            }
            let group = SecurityGroup {
                id: SecurityGroupId::generate(),
                account: account.clone(),
                vpc_id: vpc_id.clone(),
                name: name.to_string(),
                description: description.to_string(),
                ingress: Vec::new(),
                egress: vec![rules::all_to_anywhere()],
                tags: tags.clone(),
                created_ms: now_ms(),
            };
            let mut tx = Tx::new();
            tx.create(&keys.security_group(&account, &group.id), &group)?;
            tx.create(
                &guard_key,
                &GroupNameGuard {
                    group_id: group.id.clone(),
                },
            )?;
            tx.replace(&keys.vpc(&account, &vpc_id), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(group);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(guard_key))
    }

    /// The group a request names, of the caller's account.
    pub async fn resolve_group(
        &self,
        account: &AccountId,
        group: &GroupRef,
    ) -> Result<Versioned<SecurityGroup>> {
        match group {
            GroupRef::Id(id) => {
                let gid = SecurityGroupId::parse(id)?;
                self.store
                    .vpcs()
                    .group(account, &gid)
                    .await?
                    .ok_or_else(|| group_not_found(id))
            }
            GroupRef::Name(name) => {
                let vpc = self
                    .default_vpc(account)
                    .await?
                    .ok_or_else(|| group_not_found(name))?;
                let guard: Option<Versioned<GroupNameGuard>> = self
                    .store
                    .get(
                        &self
                            .store
                            .keys()
                            .security_group_name(account, &vpc.id, name),
                    )
                    .await?;
                let gid = guard.ok_or_else(|| group_not_found(name))?.value.group_id;
                self.store
                    .vpcs()
                    .group(account, &gid)
                    .await?
                    .ok_or_else(|| group_not_found(name))
            }
        }
    }

    /// DescribeSecurityGroups (`names`: groups of the default VPC).
    pub async fn describe_security_groups(
        &self,
        caller: &Caller,
        ids: &[String],
        names: &[String],
        filters: &[Filter],
    ) -> Result<Vec<SecurityGroup>> {
        let account = caller.account()?;
        filters::check(filters, GROUP_FILTERS)?;
        let ids: Vec<SecurityGroupId> = ids
            .iter()
            .map(|i| SecurityGroupId::parse(i))
            .collect::<Result<_>>()?;
        self.ensure_default_vpc(&account).await?;
        let all: Vec<SecurityGroup> = self
            .store
            .vpcs()
            .groups_of(&account)
            .await?
            .into_iter()
            .map(|g| g.value)
            .collect();
        if let Some(missing) = ids.iter().find(|i| !all.iter().any(|g| &g.id == *i)) {
            return Err(group_not_found(missing.as_str()));
        }
        let mut by_name = Vec::new();
        for n in names {
            let g = self
                .resolve_group(&account, &GroupRef::Name(n.clone()))
                .await?;
            by_name.push(g.value.id);
        }
        Ok(all
            .into_iter()
            .filter(|g| ids.is_empty() || ids.contains(&g.id))
            .filter(|g| by_name.is_empty() || by_name.contains(&g.id))
            .filter(|g| filters.iter().all(|f| group_matches(g, f)))
            .collect())
    }

    /// DeleteSecurityGroup. `CannotDelete` for a default group;
    /// `DependencyViolation` while a rule of another group names it or an
    /// instance not terminated is in it.
    pub async fn delete_security_group(&self, caller: &Caller, group: &GroupRef) -> Result<()> {
        let account = caller.account()?;
        let keys = self.store.keys();
        for attempt in 0..MAX_ATTEMPTS {
            let g = self.resolve_group(&account, group).await?;
            if g.value.is_default() {
                return Err(Error::invalid_code(
                    "CannotDelete",
                    format!(
                        "the specified group: \"{}\" name: \"default\" cannot be deleted by a user",
                        g.value.id
                    ),
                ));
            }
            let others = self.store.vpcs().groups_of(&account).await?;
            let peer = RuleSource::Group(g.value.id.clone());
            if let Some(o) = others.iter().find(|o| {
                o.value.id != g.value.id
                    && o.value
                        .ingress
                        .iter()
                        .chain(&o.value.egress)
                        .any(|r| r.peer == peer)
            }) {
                return Err(dependency(format!(
                    "resource {} has a dependent object: a rule of {}",
                    g.value.id, o.value.id
                )));
            }
            let gid = g.value.id.clone();
            if let Some(i) = self
                .instance_using(&account, |_, v| v.security_group_ids.contains(&gid))
                .await?
            {
                return Err(dependency(format!(
                    "resource {gid} has a dependent object: instance {i}"
                )));
            }
            if let Some(e) = self
                .interface_using(&account, |e| super::enis::uses_group(e, &gid))
                .await?
            {
                return Err(dependency(format!(
                    "resource {gid} has a dependent object: network interface {e}"
                )));
            }
            let vpc = self.own_vpc(&account, &g.value.vpc_id).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&keys.security_group(&account, &g.value.id), &g);
            tx.delete(&keys.security_group_name(&account, &g.value.vpc_id, &g.value.name));
            tx.replace(&keys.vpc(&account, &vpc.value.id), &vpc, &vpc.value)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("security group".into()))
    }

    /// AuthorizeSecurityGroupIngress / Egress: returns the rules added.
    pub async fn authorize_security_group(
        &self,
        caller: &Caller,
        group: &GroupRef,
        direction: Direction,
        perms: &[PermissionInput],
    ) -> Result<(SecurityGroupId, Vec<SgRule>)> {
        let account = caller.account()?;
        let new = rules::expand(perms)?;
        let g = self.resolve_group(&account, group).await?;
        // Group peers: groups of the same account and VPC.
        for r in &new {
            if let RuleSource::Group(peer) = &r.peer {
                let found = if peer == &g.value.id {
                    Some(g.value.vpc_id.clone())
                } else {
                    self.store
                        .vpcs()
                        .group(&account, peer)
                        .await?
                        .map(|p| p.value.vpc_id)
                };
                if found.as_ref() != Some(&g.value.vpc_id) {
                    return Err(group_not_found(peer.as_str()));
                }
            }
        }
        let key = self.store.keys().security_group(&account, &g.value.id);
        let updated = self
            .store
            .repo::<SecurityGroup>()
            .update(&key, |cur| {
                let mut next = cur.clone();
                let list = match direction {
                    Direction::Ingress => &mut next.ingress,
                    Direction::Egress => &mut next.egress,
                };
                if let Some(r) = new.iter().find(|r| list.iter().any(|x| x.same_as(r))) {
                    return Err(Error::invalid_code(
                        "InvalidPermission.Duplicate",
                        format!(
                            "the specified rule \"peer: {}, {}, {}..{}\" already exists",
                            peer_str(&r.peer),
                            r.protocol,
                            port_str(r.from_port),
                            port_str(r.to_port)
                        ),
                    ));
                }
                if list.len() + new.len() > MAX_RULES_PER_DIRECTION {
                    return Err(Error::invalid_code(
                        "RulesPerSecurityGroupLimitExceeded",
                        format!(
                            "The maximum number of rules per security group ({MAX_RULES_PER_DIRECTION} per direction) has been reached."
                        ),
                    ));
                }
                list.extend(new.iter().cloned());
                Ok(Some(next))
            })
            .await?;
        match updated {
            Some(_) => Ok((g.value.id, new)),
            None => Err(group_not_found(g.value.id.as_str())),
        }
    }

    /// RevokeSecurityGroupIngress / Egress by permissions or by rule ids.
    pub async fn revoke_security_group(
        &self,
        caller: &Caller,
        group: &GroupRef,
        direction: Direction,
        perms: &[PermissionInput],
        rule_ids: &[String],
    ) -> Result<()> {
        let account = caller.account()?;
        let gone = if perms.is_empty() {
            Vec::new()
        } else {
            rules::expand(perms)?
        };
        let ids: Vec<SecurityGroupRuleId> = rule_ids
            .iter()
            .map(|i| SecurityGroupRuleId::parse(i))
            .collect::<Result<_>>()?;
        if gone.is_empty() && ids.is_empty() {
            return Err(Error::missing("IpPermissions"));
        }
        let g = self.resolve_group(&account, group).await?;
        let key = self.store.keys().security_group(&account, &g.value.id);
        let updated = self
            .store
            .repo::<SecurityGroup>()
            .update(&key, |cur| {
                let mut next = cur.clone();
                let list = match direction {
                    Direction::Ingress => &mut next.ingress,
                    Direction::Egress => &mut next.egress,
                };
                if gone.iter().any(|r| !list.iter().any(|x| x.same_as(r))) {
                    return Err(Error::not_found(
                        "InvalidPermission.NotFound",
                        "The specified rule does not exist in this security group.",
                    ));
                }
                if let Some(id) = ids.iter().find(|id| !list.iter().any(|x| &x.id == *id)) {
                    return Err(Error::not_found(
                        "InvalidSecurityGroupRuleId.NotFound",
                        format!("The security group rule ID '{id}' does not exist"),
                    ));
                }
                list.retain(|x| !gone.iter().any(|r| r.same_as(x)) && !ids.contains(&x.id));
                Ok(Some(next))
            })
            .await?;
        updated
            .map(|_| ())
            .ok_or_else(|| group_not_found(g.value.id.as_str()))
    }

    /// DescribeSecurityGroupRules.
    pub async fn describe_security_group_rules(
        &self,
        caller: &Caller,
        rule_ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<RuleView>> {
        let account = caller.account()?;
        filters::check(filters, RULE_FILTERS)?;
        let ids: Vec<SecurityGroupRuleId> = rule_ids
            .iter()
            .map(|i| SecurityGroupRuleId::parse(i))
            .collect::<Result<_>>()?;
        self.ensure_default_vpc(&account).await?;
        let mut out = Vec::new();
        for g in self.store.vpcs().groups_of(&account).await? {
            let g = g.value;
            let sides = [(false, &g.ingress), (true, &g.egress)];
            for (is_egress, list) in sides {
                for r in list {
                    out.push(RuleView {
                        group_id: g.id.clone(),
                        account: g.account.clone(),
                        is_egress,
                        rule: r.clone(),
                    });
                }
            }
        }
        if let Some(missing) = ids.iter().find(|i| !out.iter().any(|v| &v.rule.id == *i)) {
            return Err(Error::not_found(
                "InvalidSecurityGroupRuleId.NotFound",
                format!("The security group rule ID '{missing}' does not exist"),
            ));
        }
        Ok(out
            .into_iter()
            .filter(|v| ids.is_empty() || ids.contains(&v.rule.id))
            .filter(|v| {
                filters.iter().all(|f| match f.name.as_str() {
                    "group-id" => filters::any_matches(&f.values, &[v.group_id.as_str()]),
                    "security-group-rule-id" => {
                        filters::any_matches(&f.values, &[v.rule.id.as_str()])
                    }
                    _ => false,
                })
            })
            .collect())
    }
}

fn duplicate(name: &str, vpc: &VpcId) -> Error {
    Error::AlreadyExists {
        code: "InvalidGroup.Duplicate".into(),
        message: format!("The security group '{name}' already exists for VPC '{vpc}'"),
    }
}

fn peer_str(p: &RuleSource) -> &str {
    match p {
        RuleSource::Cidr(c) => c,
        RuleSource::Group(g) => g.as_str(),
    }
}

fn port_str(p: Option<i32>) -> String {
    p.map_or_else(|| "all".to_string(), |p| p.to_string())
}

fn group_matches(g: &SecurityGroup, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &g.tags) {
        return m;
    }
    let v = &f.values;
    let peers = |list: &[SgRule], cidr: bool| -> Vec<String> {
        list.iter()
            .filter_map(|r| match (&r.peer, cidr) {
                (RuleSource::Cidr(c), true) => Some(c.clone()),
                (RuleSource::Group(id), false) => Some(id.to_string()),
                _ => None,
            })
            .collect()
    };
    let any = |cands: Vec<String>| cands.iter().any(|c| filters::any_matches(v, &[c]));
    match f.name.as_str() {
        "group-id" => filters::any_matches(v, &[g.id.as_str()]),
        "group-name" => filters::any_matches(v, &[&g.name]),
        "vpc-id" => filters::any_matches(v, &[g.vpc_id.as_str()]),
        "description" => filters::any_matches(v, &[&g.description]),
        "owner-id" => filters::any_matches(v, &[g.account.as_str()]),
        "ip-permission.cidr" => any(peers(&g.ingress, true)),
        "ip-permission.group-id" => any(peers(&g.ingress, false)),
        "ip-permission.protocol" => any(g.ingress.iter().map(|r| r.protocol.clone()).collect()),
        "egress.ip-permission.cidr" => any(peers(&g.egress, true)),
        "egress.ip-permission.group-id" => any(peers(&g.egress, false)),
        _ => false,
    }
}

/// The protocol and port range shared by the rules of one `IpPermission`.
pub type PermissionKey = (String, Option<i32>, Option<i32>);

/// Rules grouped as EC2's `IpPermissions`: one entry per (protocol, ports)
/// with its CIDR and group peers, in first-seen order.
pub fn permissions(list: &[SgRule]) -> Vec<(PermissionKey, Vec<&SgRule>)> {
    let mut out: Vec<(PermissionKey, Vec<&SgRule>)> = Vec::new();
    for r in list {
        let k = (r.protocol.clone(), r.from_port, r.to_port);
        match out.iter_mut().find(|(key, _)| key == &k) {
            Some((_, rules)) => rules.push(r),
            None => out.push((k, vec![r])),
        }
    }
    out
}
