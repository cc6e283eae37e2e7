//! Per-account quotas: running instances, their vCPUs, images, key
//! pairs, launch templates and Auto Scaling groups. Owns the usage record (`quota-usage/<account>`), the operator's
//! per-account overrides (`quotas/<account>`) and the Admin operations on
//! them; the defaults are `[quotas]` of the configuration.
//!
//! Usage is counted, not listed: every creation adds to the account's usage
//! record **in its own transaction**, comparing the record's
//! `mod_revision`, after checking the sum against the limit read in the
//! same call. Two calls racing at the boundary cannot both commit (one
//! compare fails and that call re-reads), so an account never exceeds a
//! limit, and a refused call writes nothing.
//!
//! Instances count while placed (pending, running, stopping,
//! shutting-down: [`State::is_placed`]): the usage changes in the
//! transaction that moves an instance in or out of those states
//! ([`Domain::update_instance`](super::placement)), which compares the
//! instance's own `mod_revision`, so a repeated terminate, a retried
//! transition or a crash between steps never releases twice. The limits
//! are read on every call (two keys in one round trip), so a change made
//! on any replica holds on every replica at once. The operator account is
//! not limited (its usage is still counted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::QuotasConfig;
use crate::domain::lifecycle::State;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::AccountId;
use crate::store::record::decode_record;
use crate::store::{Record, Tx, Versioned};

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// Instances that are pending, running, stopping or shutting down.
    RunningInstances,
    /// vCPUs of those instances.
    Vcpus,
    /// Registered images.
    Images,
    /// Key pairs.
    KeyPairs,
    /// Launch templates.
    LaunchTemplates,
    /// Auto Scaling groups.
    AutoScalingGroups,
}

impl Resource {
    /// Every resource, in display order.
    pub const ALL: [Resource; 6] = [
        Resource::RunningInstances,
        Resource::Vcpus,
        Resource::Images,
        Resource::KeyPairs,
        Resource::LaunchTemplates,
        Resource::AutoScalingGroups,
    ];

    /// The name used by the Admin API, the CLI and `[quotas]`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::RunningInstances => "running-instances",
            Resource::Vcpus => "vcpus",
            Resource::Images => "images",
            Resource::KeyPairs => "key-pairs",
            Resource::LaunchTemplates => "launch-templates",
            Resource::AutoScalingGroups => "auto-scaling-groups",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown quota '{s}' (known: {})",
                    Self::ALL.map(Resource::name).join(", ")
                ))
            })
    }

    /// The EC2 error code of a refusal.
    pub fn code(self) -> &'static str {
        match self {
            Resource::RunningInstances => "InstanceLimitExceeded",
            Resource::Vcpus => "VcpuLimitExceeded",
            Resource::Images | Resource::KeyPairs | Resource::LaunchTemplates => {
                "ResourceLimitExceeded"
            }
            // The Auto Scaling API's code.
            Resource::AutoScalingGroups => "LimitExceeded",
        }
    }

    fn default_limit(self, cfg: &QuotasConfig) -> u64 {
        match self {
            Resource::RunningInstances => cfg.running_instances,
            Resource::Vcpus => cfg.vcpus,
            Resource::Images => cfg.images,
            Resource::KeyPairs => cfg.key_pairs,
            Resource::LaunchTemplates => cfg.launch_templates,
            Resource::AutoScalingGroups => cfg.auto_scaling_groups,
        }
    }
}

/// An account's usage (`quota-usage/<account>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Placed instances.
    #[serde(default)]
    pub running_instances: u64,
    /// Their vCPUs.
    #[serde(default)]
    pub vcpus: u64,
    /// Registered images.
    #[serde(default)]
    pub images: u64,
    /// Key pairs.
    #[serde(default)]
    pub key_pairs: u64,
    /// Launch templates.
    #[serde(default)]
    pub launch_templates: u64,
    /// Auto Scaling groups.
    #[serde(default)]
    pub auto_scaling_groups: u64,
}

impl Usage {
    /// The amount used of `r`.
    pub fn of(&self, r: Resource) -> u64 {
        match r {
            Resource::RunningInstances => self.running_instances,
            Resource::Vcpus => self.vcpus,
            Resource::Images => self.images,
            Resource::KeyPairs => self.key_pairs,
            Resource::LaunchTemplates => self.launch_templates,
            Resource::AutoScalingGroups => self.auto_scaling_groups,
        }
    }

    fn slot(&mut self, r: Resource) -> &mut u64 {
        match r {
            Resource::RunningInstances => &mut self.running_instances,
            Resource::Vcpus => &mut self.vcpus,
            Resource::Images => &mut self.images,
            Resource::KeyPairs => &mut self.key_pairs,
            Resource::LaunchTemplates => &mut self.launch_templates,
            Resource::AutoScalingGroups => &mut self.auto_scaling_groups,
        }
    }

    /// Adds `delta` (negative: releases, never below 0).
    pub fn add(&mut self, r: Resource, delta: i64) {
        let s = self.slot(r);
        *s = if delta >= 0 {
            s.saturating_add(delta.unsigned_abs())
        } else {
            s.saturating_sub(delta.unsigned_abs())
        };
    }
}

/// The operator's limits for one account (`quotas/<account>`): resource
/// name -> limit; a resource not named has the configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaOverrides {
    /// Limits by [`Resource::name`].
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

impl Record for Usage {
    const KIND: &'static str = "quota-usage";
    const SCHEMA: u32 = 1;
}
impl Record for QuotaOverrides {
    const KIND: &'static str = "quota-overrides";
    const SCHEMA: u32 = 1;
}

/// One quota of one account, as the Admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaView {
    /// The resource.
    pub resource: Resource,
    /// The limit in force (`None`: not limited, the operator account).
    pub limit: Option<u64>,
    /// The configured default.
    pub default: u64,
    /// True when the operator set this account's limit.
    pub overridden: bool,
    /// Current usage.
    pub usage: u64,
}

/// An account's usage as read (with its revision, 0 = no record yet) and
/// its limits in force.
#[derive(Debug, Clone)]
pub struct QuotaState {
    account: AccountId,
    usage: Versioned<Usage>,
    overrides: QuotaOverrides,
    defaults: QuotasConfig,
}

impl QuotaState {
    /// The limit of `r` (`None` for the operator account: not limited).
    pub fn limit(&self, r: Resource) -> Option<u64> {
        if self.account == AccountId::operator() {
            return None;
        }
        Some(
            self.overrides
                .limits
                .get(r.name())
                .copied()
                .unwrap_or_else(|| r.default_limit(&self.defaults)),
        )
    }

    /// Current usage.
    pub fn usage(&self) -> &Usage {
        &self.usage.value
    }

    /// How many more units of `r` fit (`u64::MAX` when not limited).
    pub fn room(&self, r: Resource) -> u64 {
        match self.limit(r) {
            None => u64::MAX,
            Some(l) => l.saturating_sub(self.usage.value.of(r)),
        }
    }

    /// The refusal of `want` more units of `r`.
    pub fn refusal(&self, r: Resource, want: u64) -> Error {
        let limit = self.limit(r).unwrap_or(u64::MAX);
        let used = self.usage.value.of(r);
        let what = match r {
            Resource::RunningInstances => "running instances",
            Resource::Vcpus => "vCPUs of running instances",
            Resource::Images => "images",
            Resource::KeyPairs => "key pairs",
            Resource::LaunchTemplates => "launch templates",
            Resource::AutoScalingGroups => "Auto Scaling groups",
        };
        Error::invalid_code(
            r.code(),
            format!(
                "You have requested {want} more {what}; your quota of {limit} allows for {} \
                 more ({used} in use). Ask the operator to raise the '{}' quota.",
                limit.saturating_sub(used),
                r.name()
            ),
        )
    }

    /// Checks that `want` more units of `r` fit.
    pub fn check(&self, r: Resource, want: u64) -> Result<()> {
        if want > self.room(r) {
            return Err(self.refusal(r, want));
        }
        Ok(())
    }

    /// How many of `max` instances of `vcpus` vCPUs each fit the
    /// running-instance and vCPU quotas: refused (with the code of the
    /// binding quota) when fewer than `min` do.
    pub fn instances_room(&self, vcpus: u32, min: u32, max: u32) -> Result<u32> {
        let by_count = self.room(Resource::RunningInstances);
        let by_vcpus = match u64::from(vcpus) {
            0 => u64::MAX,
            v => self.room(Resource::Vcpus) / v,
        };
        let fit = by_count.min(by_vcpus).min(u64::from(max));
        if fit < u64::from(min) {
            if by_count < u64::from(min) {
                return Err(self.refusal(Resource::RunningInstances, u64::from(min)));
            }
            return Err(self.refusal(Resource::Vcpus, u64::from(min) * u64::from(vcpus)));
        }
        Ok(u32::try_from(fit).unwrap_or(max))
    }

    /// Adds to `tx` the charge of `n` new placed instances of `vcpus` each.
    pub fn stage_instances(&self, tx: &mut Tx, key: &str, n: usize, vcpus: u32) -> Result<()> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.stage(
            tx,
            key,
            &[
                (Resource::RunningInstances, n),
                (Resource::Vcpus, n.saturating_mul(i64::from(vcpus))),
            ],
        )
    }

    /// Adds to `tx` the usage with `changes` applied, compared on the
    /// revision it was read at (0: created).
    pub fn stage(&self, tx: &mut Tx, key: &str, changes: &[(Resource, i64)]) -> Result<()> {
        let mut next = self.usage.value.clone();
        for &(r, d) in changes {
            next.add(r, d);
        }
        if self.usage.mod_revision == 0 {
            tx.create(key, &next)?;
        } else {
            tx.replace(key, &self.usage, &next)?;
        }
        Ok(())
    }
}

/// The usage change of an instance moving from `before` to `after`:
/// `(instances, vcpus)`, both 0 when its placed-ness does not change.
pub fn instance_delta(before: State, after: State, vcpus: u32) -> (i64, i64) {
    match (before.is_placed(), after.is_placed()) {
        (false, true) => (1, i64::from(vcpus)),
        (true, false) => (-1, -i64::from(vcpus)),
        _ => (0, 0),
    }
}

impl Domain {
    /// The key of an account's usage record.
    pub(crate) fn usage_key(&self, account: &AccountId) -> String {
        self.store.keys().quota_usage(account)
    }

    /// Reads an account's usage and limits (one round trip).
    pub(crate) async fn quota_state(&self, account: &AccountId) -> Result<QuotaState> {
        let keys = [
            self.usage_key(account),
            self.store.keys().quota_overrides(account),
        ];
        let mut got = self.store.get_many_raw(&keys).await?.into_iter();
        let usage = match got.next().flatten() {
            Some((v, rev)) => {
                let (value, newer) = decode_record::<Usage>(keys[0].as_bytes(), &v)?;
                Versioned {
                    value,
                    mod_revision: rev,
                    newer,
                }
            }
            None => Versioned::new(Usage::default(), 0),
        };
        let overrides = match got.next().flatten() {
            Some((v, _)) => crate::store::decode::<QuotaOverrides>(keys[1].as_bytes(), &v)?,
            None => QuotaOverrides::default(),
        };
        Ok(QuotaState {
            account: account.clone(),
            usage,
            overrides,
            defaults: self.cfg.quotas.clone(),
        })
    }

    /// Adds to `tx` a change of `delta` units of `r` to the account's usage,
    /// compared on the usage record; with `delta > 0` refused first when it
    /// does not fit.
    pub(crate) async fn stage_quota(
        &self,
        tx: &mut Tx,
        account: &AccountId,
        r: Resource,
        delta: i64,
    ) -> Result<()> {
        let quota = self.quota_state(account).await?;
        if delta > 0 {
            quota.check(r, delta.unsigned_abs())?;
        }
        quota.stage(tx, &self.usage_key(account), &[(r, delta)])
    }

    /// One account's quotas (operator).
    pub async fn get_quotas(&self, caller: &Caller, account: &str) -> Result<Vec<QuotaView>> {
        caller.require_operator()?;
        let account = self.existing_account(account).await?;
        let st = self.quota_state(&account).await?;
        Ok(Resource::ALL
            .into_iter()
            .map(|r| QuotaView {
                resource: r,
                limit: st.limit(r),
                default: r.default_limit(&self.cfg.quotas),
                overridden: st.overrides.limits.contains_key(r.name()),
                usage: st.usage().of(r),
            })
            .collect())
    }

    /// Every account's quotas (operator), page by page of accounts.
    pub async fn list_quotas(&self, caller: &Caller) -> Result<Vec<(AccountId, Vec<QuotaView>)>> {
        caller.require_operator()?;
        let mut out = Vec::new();
        let mut pages = self.store.accounts().all();
        while let Some(page) = pages.next().await? {
            for (_, a) in page {
                let views = self.get_quotas(caller, a.value.id.as_str()).await?;
                out.push((a.value.id, views));
            }
        }
        Ok(out)
    }

    /// Sets (or, with `None`, resets to the default) one quota of an
    /// account (operator). A limit below the current usage is allowed: it
    /// refuses new creations until usage falls below it.
    pub async fn set_quota(
        &self,
        caller: &Caller,
        account: &str,
        resource: &str,
        limit: Option<u64>,
    ) -> Result<Vec<QuotaView>> {
        caller.require_operator()?;
        let account = self.existing_account(account).await?;
        let r = Resource::parse(resource)?;
        let key = self.store.keys().quota_overrides(&account);
        let repo = self.store.repo::<QuotaOverrides>();
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let cur = repo.get(&key).await?;
            let mut next = cur.as_ref().map(|c| c.value.clone()).unwrap_or_default();
            match limit {
                Some(l) => {
                    next.limits.insert(r.name().to_string(), l);
                }
                None => {
                    next.limits.remove(r.name());
                }
            }
            let mut tx = Tx::new();
            match &cur {
                Some(c) => tx.replace(&key, c, &next)?,
                None => tx.create(&key, &next)?,
            };
            if self.store.commit(tx).await?.is_some() {
                tracing::info!(%account, quota = r.name(), ?limit, "quota set");
                return self.get_quotas(caller, account.as_str()).await;
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(key))
    }

    async fn existing_account(&self, account: &str) -> Result<AccountId> {
        let id = AccountId::parse(account)?;
        if id != AccountId::operator() && self.store.accounts().get(&id).await?.is_none() {
            return Err(Error::not_found(
                "InvalidAccount.NotFound",
                format!("the account '{account}' does not exist"),
            ));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_follow_placedness() {
        assert_eq!(instance_delta(State::Stopped, State::Pending, 2), (1, 2));
        assert_eq!(
            instance_delta(State::Running, State::ShuttingDown, 2),
            (0, 0)
        );
        assert_eq!(
            instance_delta(State::ShuttingDown, State::Terminated, 2),
            (-1, -2)
        );
        assert_eq!(
            instance_delta(State::Terminated, State::Terminated, 2),
            (0, 0)
        );
        assert_eq!(instance_delta(State::Stopping, State::Stopped, 4), (-1, -4));
    }

    #[test]
    fn usage_never_goes_below_zero() {
        let mut u = Usage::default();
        u.add(Resource::Vcpus, -3);
        assert_eq!(u.vcpus, 0);
        u.add(Resource::Vcpus, 5);
        u.add(Resource::Vcpus, -2);
        assert_eq!(u.vcpus, 3);
    }

    #[test]
    fn names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::parse(r.name()).unwrap(), r);
        }
        assert!(Resource::parse("elastic-ips").is_err());
    }
}
