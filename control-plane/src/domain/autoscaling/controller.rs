//! The Auto Scaling controller: one level-triggered pass over every group
//! ([`Domain::reconcile_groups`], run by the leader-only `autoscaling` task
//! every `reconciler.interval_seconds` and early when a group changes).
//!
//! A pass over one group, from etcd state only:
//!
//! 1. A launch decided earlier ([`PendingLaunch`]) is carried out first:
//!    each RunInstances call has the ClientToken `asg-<uid>-<activity>-<call>`,
//!    so a controller killed half-way (or a deposed leader racing a new one)
//!    repeats the same calls and gets the same reservations back: never
//!    doubled instances. Each call is at most one placement transaction
//!    ([`crate::domain::launch::BATCH`]): all of its instances or none.
//! 2. A deleting group (ForceDelete) terminates its instances, then its record.
//! 3. Scheduled actions that are due change the group's sizes
//!    ([`super::scheduled`], process `ScheduledActions`).
//! 4. Health: instances stopped or stopping (their host was lost, or the
//!    guest shut down) once the group's grace period after their launch is
//!    over (process `HealthCheck`), and instances set `Unhealthy` by
//!    SetInstanceHealth, are terminated (process `ReplaceUnhealthy`); the
//!    rest is the in-service set.
//! 5. Target tracking policies may change the desired capacity
//!    ([`super::policies`], process `AlarmNotification`).
//! 6. Capacity: fewer in service than desired -> a launch, spread evenly
//!    over the group's zones that have a live node (process `Launch`); more
//!    -> terminations chosen by the default termination policy (process
//!    `Terminate`, protected instances never chosen); as many but zones
//!    more than one apart -> one launch in the emptiest available zone
//!    (process `AZRebalance`), the next pass then terminates from the fullest
//!    (only when that zone holds an unprotected instance: [`rebalance_zone`]).
//!
//! Every action is a scaling activity with its cause and status.
//!
//! Default termination policy (what is implemented of EC2's): the zone with
//! the most in-service instances (among zones holding an unprotected one),
//! then the instance of the oldest launch template version, then the one
//! closest to its next billing hour, then the lowest instance id (EC2:
//! random).

use std::collections::BTreeMap;

use crate::domain::autoscaling::templates::{TemplateRef, VersionSel};
use crate::domain::autoscaling::{
    activity_id, Activity, ActivityStatus, AutoScalingGroup, PendingLaunch, GROUP_TAG,
};
use crate::domain::instances::RunInstancesInput;
use crate::domain::lifecycle::State;
use crate::domain::model::{now_ms, Instance};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId};
use crate::store::{Tx, Versioned};

/// The tag with the launch template id of an instance (as EC2 writes it).
pub const TEMPLATE_ID_TAG: &str = "aws:ec2launchtemplate:id";
/// The tag with the launch template version of an instance.
pub const TEMPLATE_VERSION_TAG: &str = "aws:ec2launchtemplate:version";

/// What one controller pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ControllerReport {
    /// Groups looked at.
    pub groups: usize,
    /// Instances launched.
    pub launched: usize,
    /// Instances terminated.
    pub terminated: usize,
    /// Groups deleted (ForceDelete finished).
    pub deleted: usize,
    /// Groups whose pass failed (logged).
    pub failed: usize,
}

impl ControllerReport {
    /// One line for `nubis admin tasks`.
    pub fn summary(&self) -> String {
        format!(
            "{} groups: launched {}, terminated {}, deleted {} groups, {} failed",
            self.groups, self.launched, self.terminated, self.deleted, self.failed
        )
    }
}

/// An ISO-8601 UTC time (activity causes).
pub fn iso(ms: i64) -> String {
    crate::ec2::xml::timestamp(
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

fn caller_for(account: &AccountId) -> Caller {
    if *account == AccountId::operator() {
        Caller::Operator
    } else {
        Caller::Tenant(account.clone())
    }
}

/// The ClientToken of call `call` of activity `activity` of a group.
pub fn launch_token(g: &AutoScalingGroup, activity: u64, call: usize) -> String {
    format!("asg-{}-{activity}-{call}", g.uid)
}

/// Splits `n` new instances over `zones` so that, with the `current`
/// in-service counts, the zones end as even as possible (ties: the order
/// of `zones`). Returns (zone, count) with count > 0.
pub fn spread(zones: &[String], current: &BTreeMap<String, usize>, n: usize) -> Vec<(String, u32)> {
    if zones.is_empty() {
        return Vec::new();
    }
    let mut counts: Vec<usize> = zones
        .iter()
        .map(|z| current.get(z).copied().unwrap_or(0))
        .collect();
    let mut add = vec![0u32; zones.len()];
    for _ in 0..n {
        let (i, _) = counts
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (**c, *i))
            .unwrap_or((0, &0));
        counts[i] += 1;
        add[i] += 1;
    }
    zones
        .iter()
        .zip(add)
        .filter(|(_, c)| *c > 0)
        .map(|(z, c)| (z.clone(), c))
        .collect()
}

fn template_version_of(i: &Instance) -> u64 {
    i.tags
        .get(TEMPLATE_VERSION_TAG)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Chooses `n` instances of `in_service` to terminate by the default
/// termination policy (see the module docs), never a protected one.
pub fn pick_victims(
    g: &AutoScalingGroup,
    in_service: &[Instance],
    n: usize,
    now: i64,
) -> Vec<InstanceId> {
    let mut left: Vec<&Instance> = in_service.iter().collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &left {
            *per_zone.entry(i.availability_zone.as_str()).or_default() += 1;
        }
        let candidates: Vec<&&Instance> = left
            .iter()
            .filter(|i| !g.protected.contains(&i.id))
            .collect();
        let Some(zone) = candidates
            .iter()
            .map(|i| i.availability_zone.as_str())
            .max_by_key(|z| (per_zone.get(z).copied().unwrap_or(0), std::cmp::Reverse(*z)))
        else {
            break;
        };
        let hour = 3_600_000i64;
        let Some(victim) = candidates
            .iter()
            .filter(|i| i.availability_zone == zone)
            .min_by_key(|i| {
                (
                    template_version_of(i),
                    hour - (now - i.launch_time_ms).rem_euclid(hour),
                    i.id.clone(),
                )
            })
            .map(|i| i.id.clone())
        else {
            break;
        };
        left.retain(|i| i.id != victim);
        out.push(victim);
    }
    out
}

/// The zone of `available` to launch one instance in to even out the
/// group's zones (process `AZRebalance`), if any: the emptiest available zone,
/// when a zone the next pass could terminate from (one holding an
/// unprotected instance, as [`pick_victims`] chooses) has at least two more.
/// Zones whose surplus is all protected are left alone: rebalancing them
/// would launch, then terminate the instance it just launched, forever.
pub fn rebalance_zone(
    g: &AutoScalingGroup,
    available: &[String],
    in_service: &[Instance],
) -> Option<String> {
    let count = |z: &str| {
        in_service
            .iter()
            .filter(|i| i.availability_zone == z)
            .count()
    };
    let max = in_service
        .iter()
        .filter(|i| !g.protected.contains(&i.id))
        .map(|i| count(&i.availability_zone))
        .max()?;
    let low = available.iter().min_by_key(|z| count(z))?;
    (max > count(low) + 1).then(|| low.clone())
}

impl Domain {
    /// One controller pass over every group (see the module docs).
    pub async fn reconcile_groups(&self) -> Result<ControllerReport> {
        let mut report = ControllerReport::default();
        let mut pages = self.store.asgs().all();
        while let Some(page) = pages.next().await? {
            for (_, cur) in page {
                report.groups += 1;
                let name = cur.value.name.clone();
                if let Err(e) = self.reconcile_group(cur, &mut report).await {
                    if matches!(e, Error::Fenced) {
                        return Err(e);
                    }
                    report.failed += 1;
                    tracing::warn!(group = %name, error = %e, "auto scaling pass failed");
                }
            }
        }
        Ok(report)
    }

    async fn reconcile_group(
        &self,
        cur: Versioned<AutoScalingGroup>,
        report: &mut ControllerReport,
    ) -> Result<()> {
        if let Some(p) = cur.value.pending.clone() {
            return self.carry_out(cur, &p, report).await;
        }
        let g = cur.value.clone();
        let caller = caller_for(&g.account);
        let now = now_ms();
        let all = self.group_instances(&g).await?;
        if g.deleting {
            let live: Vec<String> = all
                .iter()
                .filter(|i| !matches!(i.state, State::Terminated | State::ShuttingDown))
                .map(|i| i.id.to_string())
                .collect();
            if !live.is_empty() {
                self.terminate_instances(&caller, &live).await?;
                report.terminated += live.len();
                return Ok(());
            }
            if all.iter().all(|i| i.state == State::Terminated) {
                let mut tx = Tx::new();
                self.store.asgs().stage_delete(&mut tx, &cur);
                // Its quota goes back in the same (compared) transaction;
                // a lost compare is retried by the next pass.
                self.stage_quota(
                    &mut tx,
                    &cur.value.account,
                    crate::domain::quotas::Resource::AutoScalingGroups,
                    -1,
                )
                .await?;
                if self.store.commit(tx).await?.is_some() {
                    report.deleted += 1;
                }
            }
            return Ok(());
        }

        // Scheduled actions change the sizes first (the next pass, run
        // early by the group's change, acts on them).
        if self.apply_scheduled_actions(&cur, now).await? {
            return Ok(());
        }

        // Health.
        let grace_ms = i64::from(g.grace_seconds) * 1000;
        let health_checks = !g.suspended.contains("HealthCheck");
        let mut in_service = Vec::new();
        let mut unhealthy = Vec::new();
        for i in all {
            match i.state {
                State::Pending | State::Running if g.unhealthy.contains(&i.id) => unhealthy.push(i),
                State::Pending | State::Running => in_service.push(i),
                State::Stopping | State::Stopped
                    if health_checks && now - i.launch_time_ms >= grace_ms =>
                {
                    unhealthy.push(i)
                }
                State::Stopping | State::Stopped => in_service.push(i),
                State::ShuttingDown | State::Terminated => {}
            }
        }
        if !unhealthy.is_empty() && !g.suspended.contains("ReplaceUnhealthy") {
            let ids: Vec<String> = unhealthy.iter().map(|i| i.id.to_string()).collect();
            self.terminate_instances(&caller, &ids).await?;
            report.terminated += ids.len();
            let causes: Vec<(String, String)> = unhealthy
                .iter()
                .map(|i| {
                    (
                        format!("Terminating EC2 instance: {}", i.id),
                        format!(
                            "At {} an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped.",
                            iso(now)
                        ),
                    )
                })
                .collect();
            let ids: Vec<InstanceId> = unhealthy.iter().map(|i| i.id.clone()).collect();
            self.record_activities(&g.account, &g.name, causes, Some(&ids))
                .await?;
            return Ok(());
        }

        // Target tracking may change the desired capacity (acted on by the
        // next pass).
        if self
            .evaluate_target_tracking(&cur, &in_service, now)
            .await?
        {
            return Ok(());
        }

        let n = in_service.len();
        let desired = g.desired as usize;
        let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
        for i in &in_service {
            *per_zone.entry(i.availability_zone.clone()).or_default() += 1;
        }
        if n < desired && !g.suspended.contains("Launch") {
            let zones = self.available_zones(&g.zones).await?;
            let plan = spread(&zones, &per_zone, desired - n);
            let cause = format!(
                "At {} a user request or the group's health check changed the in-service capacity from {n} to {desired}, below the desired capacity: launching {} instances.",
                iso(now),
                desired - n
            );
            return self.start_launch(cur, plan, cause, report).await;
        }
        if n > desired && !g.suspended.contains("Terminate") {
            let victims = pick_victims(&g, &in_service, n - desired, now);
            if victims.is_empty() {
                return Ok(());
            }
            let ids: Vec<String> = victims.iter().map(|i| i.to_string()).collect();
            self.terminate_instances(&caller, &ids).await?;
            report.terminated += ids.len();
            let causes = ids
                .iter()
                .map(|id| {
                    (
                        format!("Terminating EC2 instance: {id}"),
                        format!(
                            "At {} the desired capacity is {desired} and {n} instances are in service: an instance was taken out of service to reach the desired capacity.",
                            iso(now)
                        ),
                    )
                })
                .collect();
            self.record_activities(&g.account, &g.name, causes, None)
                .await?;
            return Ok(());
        }
        if n == desired && n > 0 && !g.suspended.contains("AZRebalance") {
            let zones = self.available_zones(&g.zones).await?;
            if let Some(low) = rebalance_zone(&g, &zones, &in_service) {
                let cause = format!(
                    "At {} an instance was launched to aid in balancing the group's zones.",
                    iso(now)
                );
                return self.start_launch(cur, vec![(low, 1)], cause, report).await;
            }
        }
        Ok(())
    }

    /// The zones of `zones` with a live, schedulable node (all of them when
    /// none has one, so the failure is recorded).
    async fn available_zones(&self, zones: &[String]) -> Result<Vec<String>> {
        let all = self.describe_zones(&[], &[]).await?;
        let up: Vec<String> = zones
            .iter()
            .filter(|z| all.iter().any(|v| &v.name == *z && v.state == "available"))
            .cloned()
            .collect();
        Ok(if up.is_empty() { zones.to_vec() } else { up })
    }

    /// The group with the launch `plan` pending (calls of at most one
    /// placement transaction each, the template version resolved now) and
    /// its activity, to be written together.
    async fn pending_launch_of(
        &self,
        mut g: AutoScalingGroup,
        plan: Vec<(String, u32)>,
    ) -> Result<((AutoScalingGroup, Activity), PendingLaunch)> {
        let sel = crate::domain::autoscaling::templates::parse_version(Some(&g.template.version))?;
        let t = self
            .launch_template_of(&g.account, &TemplateRef::Id(g.template.id.to_string()))
            .await?
            .value;
        let version = sel.number_in(&t);
        let mut calls = Vec::new();
        for (zone, n) in plan {
            let mut left = n;
            while left > 0 {
                let c = left.min(crate::domain::launch::BATCH);
                calls.push((zone.clone(), c));
                left -= c;
            }
        }
        let total: u32 = calls.iter().map(|(_, c)| c).sum();
        let seq = g.next_activity;
        g.next_activity += 1;
        let p = PendingLaunch {
            activity: seq,
            template_version: version,
            calls,
        };
        g.pending = Some(p.clone());
        let a = Activity {
            account: g.account.clone(),
            group: g.name.clone(),
            seq,
            id: activity_id(),
            description: format!("Launching {total} new EC2 instances"),
            cause: String::new(),
            status: ActivityStatus::InProgress,
            message: String::new(),
            start_ms: now_ms(),
            end_ms: None,
        };
        Ok(((g, a), p))
    }

    /// Records the launch `plan` in the group (with its activity) and
    /// carries it out.
    async fn start_launch(
        &self,
        cur: Versioned<AutoScalingGroup>,
        plan: Vec<(String, u32)>,
        cause: String,
        report: &mut ControllerReport,
    ) -> Result<()> {
        if plan.is_empty() {
            return Ok(());
        }
        let g = cur.value.clone();
        let ((g, mut a), p) = self.pending_launch_of(g, plan).await?;
        a.cause = cause;
        let mut tx = Tx::new();
        self.store.asgs().stage_replace(&mut tx, &cur, &g)?;
        self.store.asgs().stage_put_activity(&mut tx, &a)?;
        let Some(rev) = self.store.commit(tx).await? else {
            return Ok(()); // changed meanwhile: the next pass decides again
        };
        let cur = Versioned {
            value: g,
            mod_revision: rev,
            newer: cur.newer,
        };
        self.carry_out(cur, &p, report).await
    }

    /// Fault injection for tests: sets the desired capacity of group `name`
    /// to `desired` and decides the launch in one write, as a controller
    /// pass would, then carries out only its first `calls` RunInstances
    /// calls and stops as if the controller died (the launch stays pending).
    #[doc(hidden)]
    pub async fn autoscaling_crash_mid_launch(
        &self,
        caller: &Caller,
        name: &str,
        desired: u32,
        calls: usize,
    ) -> Result<usize> {
        let cur = self.auto_scaling_group(caller, name).await?;
        let mut g = cur.value.clone();
        let in_service = self
            .group_instances(&g)
            .await?
            .into_iter()
            .filter(|i| matches!(i.state, State::Pending | State::Running))
            .count();
        g.desired = desired;
        let plan = spread(
            &g.zones,
            &BTreeMap::new(),
            (desired as usize).saturating_sub(in_service),
        );
        let (g, p) = self.pending_launch_of(g, plan).await?;
        let mut tx = Tx::new();
        self.store.asgs().stage_replace(&mut tx, &cur, &g.0)?;
        self.store.asgs().stage_put_activity(&mut tx, &g.1)?;
        let Some(rev) = self.store.commit(tx).await? else {
            return Err(Error::Contention(name.to_string()));
        };
        let cur = Versioned {
            value: g.0,
            mod_revision: rev,
            newer: cur.newer,
        };
        let mut report = ControllerReport::default();
        self.carry_out_limited(cur, &p, &mut report, Some(calls))
            .await?;
        Ok(report.launched)
    }

    /// Carries out a pending launch (idempotent) and clears it.
    async fn carry_out(
        &self,
        cur: Versioned<AutoScalingGroup>,
        p: &PendingLaunch,
        report: &mut ControllerReport,
    ) -> Result<()> {
        self.carry_out_limited(cur, p, report, None).await
    }

    async fn carry_out_limited(
        &self,
        cur: Versioned<AutoScalingGroup>,
        p: &PendingLaunch,
        report: &mut ControllerReport,
        limit: Option<usize>,
    ) -> Result<()> {
        let g = &cur.value;
        let caller = caller_for(&g.account);
        let what = TemplateRef::Id(g.template.id.to_string());
        let data = self
            .launch_template_version(&g.account, &what, VersionSel::Number(p.template_version))
            .await;
        let mut launched: Vec<InstanceId> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        match data {
            Err(e) => failures.push(e.to_string()),
            Ok(v) => {
                let mut system = vec![
                    (GROUP_TAG.to_string(), g.name.clone()),
                    (TEMPLATE_ID_TAG.to_string(), g.template.id.to_string()),
                    (TEMPLATE_VERSION_TAG.to_string(), v.number.to_string()),
                ];
                system.sort();
                for (k, (zone, count)) in p.calls.iter().enumerate() {
                    if limit.is_some_and(|l| k >= l) {
                        report.launched += launched.len();
                        return Ok(());
                    }
                    let explicit = RunInstancesInput {
                        min_count: *count,
                        max_count: *count,
                        availability_zone: Some(zone.clone()),
                        tags: g
                            .tags
                            .iter()
                            .filter(|t| t.propagate_at_launch)
                            .map(|t| (t.key.clone(), t.value.clone()))
                            .collect(),
                        client_token: Some(launch_token(g, p.activity, k)),
                        ..Default::default()
                    };
                    let input = crate::domain::autoscaling::templates::resolve_launch(
                        Some(&v.data),
                        explicit,
                    );
                    match self
                        .run_instances_with_system_tags(&caller, input, &system)
                        .await
                    {
                        Ok(r) => launched.extend(r.instances.into_iter().map(|i| i.id)),
                        Err(Error::Fenced) => return Err(Error::Fenced),
                        Err(e) => failures.push(format!("{zone}: {e}")),
                    }
                }
            }
        }
        report.launched += launched.len();
        // Clear the pending launch (only this one) and close its activity.
        let mut cur = cur;
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let mut g = cur.value.clone();
            if g.pending.as_ref().map(|x| x.activity) != Some(p.activity) {
                break;
            }
            g.pending = None;
            if g.protect_new {
                g.protected.extend(launched.iter().cloned());
            }
            let mut tx = Tx::new();
            self.store.asgs().stage_replace(&mut tx, &cur, &g)?;
            if let Some(a) = self
                .store
                .asgs()
                .activity(&g.account, &g.name, p.activity)
                .await?
            {
                let mut a = a.value;
                a.end_ms = Some(now_ms());
                if failures.is_empty() {
                    a.status = ActivityStatus::Successful;
                    a.description = format!(
                        "Launching {} new EC2 instances: {}",
                        launched.len(),
                        launched
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                } else {
                    a.status = ActivityStatus::Failed;
                    a.message = failures.join("; ");
                }
                self.store.asgs().stage_put_activity(&mut tx, &a)?;
            }
            if self.store.commit(tx).await?.is_some() {
                break;
            }
            crate::store::backoff(attempt).await;
            match self.store.asgs().get(&g.account, &g.name).await? {
                Some(c) => cur = c,
                None => break,
            }
        }
        Ok(())
    }

    /// Records finished activities (description, cause) for a group and,
    /// when `forget` is given, drops those instances from its health set.
    async fn record_activities(
        &self,
        account: &AccountId,
        name: &str,
        items: Vec<(String, String)>,
        forget: Option<&[InstanceId]>,
    ) -> Result<()> {
        let n = items.len() as u64;
        let caller = caller_for(account);
        let g = self
            .modify_group(&caller, name, |g| {
                g.next_activity += n;
                if let Some(ids) = forget {
                    for id in ids {
                        g.unhealthy.remove(id);
                        g.protected.remove(id);
                    }
                }
                Ok(())
            })
            .await?;
        let first = g.next_activity - n;
        let now = now_ms();
        let mut tx = Tx::new();
        for (k, (description, cause)) in items.into_iter().enumerate() {
            let a = Activity {
                account: account.clone(),
                group: name.to_string(),
                seq: first + k as u64,
                id: activity_id(),
                description,
                cause,
                status: ActivityStatus::Successful,
                message: String::new(),
                start_ms: now,
                end_ms: Some(now),
            };
            self.store.asgs().stage_put_activity(&mut tx, &a)?;
        }
        self.store.commit(tx).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::autoscaling::GroupTemplate;
    use crate::ids::LaunchTemplateId;

    fn group() -> AutoScalingGroup {
        AutoScalingGroup {
            name: "g".into(),
            account: AccountId::operator(),
            template: GroupTemplate {
                id: LaunchTemplateId::generate(),
                name: "t".into(),
                version: "$Default".into(),
            },
            min_size: 0,
            max_size: 10,
            desired: 3,
            zones: vec!["a".into(), "b".into(), "c".into()],
            grace_seconds: 0,
            tags: vec![],
            protect_new: false,
            protected: Default::default(),
            unhealthy: Default::default(),
            suspended: Default::default(),
            deleting: false,
            next_activity: 1,
            pending: None,
            created_ms: 0,
            uid: "u".into(),
            default_cooldown: 300,
            policies: vec![],
            scheduled: vec![],
            cooldown_until_ms: 0,
            last_tracking_ms: 0,
        }
    }

    fn inst(zone: &str, launch: i64, version: u64) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "id": InstanceId::generate().to_string(),
            "account": AccountId::operator().to_string(),
            "reservation_id": crate::ids::ReservationId::generate().to_string(),
            "launch_index": 0,
            "image_id": "ami-00000000000000001",
            "image_location": "hello",
            "image_sha256": "",
            "instance_type": "t3.nano",
            "vcpus": 1,
            "memory_mib": 512,
            "state": "running",
            "state_reason": null,
            "state_transition_reason": "",
            "availability_zone": zone,
            "node_id": null,
            "network": null,
            "launch_time_ms": launch,
            "key_name": null,
            "tags": {},
            "client_token": "",
            "desired": "running",
            "generation": 1,
            "force": false,
            "observed": null,
            "terminated_ms": null
        }))
        .expect("instance json");
        i.tags
            .insert(TEMPLATE_VERSION_TAG.into(), version.to_string());
        i
    }

    #[test]
    fn spread_fills_the_emptiest_zones_first() {
        let zones: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let mut cur = BTreeMap::new();
        assert_eq!(
            spread(&zones, &cur, 3),
            vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        cur.insert("a".to_string(), 2);
        cur.insert("b".to_string(), 2);
        // c catches up first, then all three take turns: 3/3/2.
        assert_eq!(
            spread(&zones, &cur, 4),
            vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]
        );
        assert!(spread(&[], &cur, 4).is_empty());
    }

    #[test]
    fn termination_policy_takes_the_fullest_zone_then_oldest_version() {
        let mut g = group();
        let a1 = inst("a", 0, 2);
        let a2 = inst("a", 0, 1);
        let b1 = inst("b", 0, 1);
        let set = vec![a1.clone(), a2.clone(), b1.clone()];
        // Zone a has most; within it the older version (1).
        assert_eq!(pick_victims(&g, &set, 1, 1000), vec![a2.id.clone()]);
        // Two: then zones tie (a:1, b:1), either is fine but never protected.
        g.protected.insert(b1.id.clone());
        let v = pick_victims(&g, &set, 2, 1000);
        assert_eq!(v.len(), 2);
        assert!(!v.contains(&b1.id));
        // All protected: nothing chosen.
        g.protected.insert(a1.id.clone());
        g.protected.insert(a2.id.clone());
        assert!(pick_victims(&g, &set, 1, 1000).is_empty());
    }

    #[test]
    fn rebalance_launches_only_where_the_surplus_can_be_terminated() {
        let mut g = group();
        g.desired = 2;
        let zones: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let (a1, a2) = (inst("a", 0, 1), inst("a", 0, 1));
        let set = vec![a1.clone(), a2.clone()];
        // a:2, b:0 -> one launch in b (then a's surplus is terminated).
        assert_eq!(rebalance_zone(&g, &zones, &set), Some("b".into()));
        // Only c has a live node: launch there.
        assert_eq!(rebalance_zone(&g, &zones[2..], &set), Some("c".into()));
        // a:1, b:1, c:0 is as even as two instances get.
        let even = vec![a1.clone(), inst("b", 0, 1)];
        assert_eq!(rebalance_zone(&g, &zones, &even), None);
        // a's instances all protected from scale-in: the next pass could
        // only terminate the instance a rebalance launched, so none is.
        g.protected.insert(a1.id.clone());
        assert_eq!(rebalance_zone(&g, &zones, &set), Some("b".into()));
        g.protected.insert(a2.id.clone());
        assert_eq!(rebalance_zone(&g, &zones, &set), None);
        assert_eq!(rebalance_zone(&g, &zones, &[]), None);
    }

    #[test]
    fn termination_policy_prefers_closest_to_the_billing_hour() {
        let g = group();
        let now = 10 * 3_600_000;
        let early = inst("a", now - 3_500_000, 1); // 100 s before its next hour
        let late = inst("a", now - 100_000, 1);
        let v = pick_victims(&g, &[late.clone(), early.clone()], 1, now);
        assert_eq!(v, vec![early.id]);
    }
}
