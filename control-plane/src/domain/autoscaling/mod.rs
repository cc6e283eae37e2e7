//! Auto Scaling: launch templates ([`templates`]), Auto Scaling groups (this
//! module: the group record, its validation and the API operations on it)
//! and the controller that keeps each group's desired capacity running
//! ([`controller`]).
//!
//! A group is one record (`asgs/<account>/<hex name>`) holding its sizes,
//! zones, launch template reference, per-instance flags (protection, health
//! set by the API) and the launch the controller is in the middle of
//! ([`PendingLaunch`]); its scaling activities are separate records
//! (`asg-activities/…`). Instances belong to a group by their
//! `aws:autoscaling:groupName` tag, written at launch.

pub mod controller;
pub mod cron;
pub mod policies;
pub mod policy_api;
pub mod scheduled;
pub mod templates;
pub mod tracking;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::model::{now_ms, Instance};
use crate::domain::quotas::Resource;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId, LaunchTemplateId};
use crate::store::{Tx, Versioned};
use templates::{parse_version, TemplateRef};

/// The tag naming an instance's group.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

/// Largest MaxSize accepted.
pub const MAX_GROUP_SIZE: u32 = 1000;

/// A group's launch template reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTemplate {
    /// Template id.
    pub id: LaunchTemplateId,
    /// Template name.
    pub name: String,
    /// `$Default`, `$Latest` or a number.
    pub version: String,
}

/// A group tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Copied onto instances launched by the group.
    pub propagate_at_launch: bool,
}

/// A launch the controller decided and is carrying out: written before the
/// first RunInstances call so a controller that dies half-way repeats the
/// same calls with the same ClientTokens (no doubled instances).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLaunch {
    /// The activity recording it.
    pub activity: u64,
    /// The template version resolved when it was decided.
    pub template_version: u64,
    /// (zone, count) per RunInstances call (each at most one transaction).
    pub calls: Vec<(String, u32)>,
}

/// An Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoScalingGroup {
    /// Name (unique within the account).
    pub name: String,
    /// Owner.
    pub account: AccountId,
    /// Launch template.
    pub template: GroupTemplate,
    /// MinSize.
    pub min_size: u32,
    /// MaxSize.
    pub max_size: u32,
    /// DesiredCapacity.
    pub desired: u32,
    /// Zones the group spreads over.
    pub zones: Vec<String>,
    /// HealthCheckGracePeriod (seconds).
    pub grace_seconds: u32,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<GroupTag>,
    /// NewInstancesProtectedFromScaleIn.
    #[serde(default)]
    pub protect_new: bool,
    /// Instances protected from scale-in.
    #[serde(default)]
    pub protected: BTreeSet<InstanceId>,
    /// Instances set unhealthy through SetInstanceHealth.
    #[serde(default)]
    pub unhealthy: BTreeSet<InstanceId>,
    /// Suspended processes (Launch, Terminate, HealthCheck, ReplaceUnhealthy, AZRebalance, …).
    #[serde(default)]
    pub suspended: BTreeSet<String>,
    /// DeleteAutoScalingGroup with ForceDelete was called: the controller
    /// terminates every instance, then deletes the record.
    #[serde(default)]
    pub deleting: bool,
    /// Sequence number of the next activity.
    pub next_activity: u64,
    /// The launch in progress.
    #[serde(default)]
    pub pending: Option<PendingLaunch>,
    /// Creation time (ms).
    pub created_ms: i64,
    /// A random id fixed at creation (ClientTokens derive from it, so a
    /// group deleted and created again with its name never replays the old
    /// group's launches).
    pub uid: String,
    /// DefaultCooldown (seconds; schema 2).
    #[serde(default = "default_cooldown")]
    pub default_cooldown: u32,
    /// Scaling policies (schema 2).
    #[serde(default)]
    pub policies: Vec<policies::ScalingPolicy>,
    /// Scheduled actions (schema 2).
    #[serde(default)]
    pub scheduled: Vec<scheduled::ScheduledAction>,
    /// End of the cooldown a simple scaling policy started (ms; schema 2).
    #[serde(default)]
    pub cooldown_until_ms: i64,
    /// Last change of the desired capacity by target tracking (ms; schema 2).
    #[serde(default)]
    pub last_tracking_ms: i64,
}

fn default_cooldown() -> u32 {
    policies::DEFAULT_COOLDOWN
}

/// Status of a scaling activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    /// Being carried out.
    InProgress,
    /// Done.
    Successful,
    /// Failed (see the message).
    Failed,
}

impl ActivityStatus {
    /// The Auto Scaling API's StatusCode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
        }
    }
}

/// A scaling activity: what the group did and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Owner.
    pub account: AccountId,
    /// Group name.
    pub group: String,
    /// Sequence within the group.
    pub seq: u64,
    /// ActivityId (UUID form).
    pub id: String,
    /// Description.
    pub description: String,
    /// Cause.
    pub cause: String,
    /// Status.
    pub status: ActivityStatus,
    /// StatusMessage.
    #[serde(default)]
    pub message: String,
    /// Start (ms).
    pub start_ms: i64,
    /// End (ms).
    #[serde(default)]
    pub end_ms: Option<i64>,
}

macro_rules! records {
    ($($ty:ty => $kind:literal, $schema:literal;)*) => {
        $(impl crate::store::Record for $ty {
            const KIND: &'static str = $kind;
            const SCHEMA: u32 = $schema;
        })*
    };
}

records! {
    templates::LaunchTemplate => "launch-template", 1;
    templates::LaunchTemplateVersion => "launch-template-version", 1;
    AutoScalingGroup => "asg", 2;
    Activity => "asg-activity", 1;
}

/// A fresh activity id (UUID v4 form).
pub fn activity_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// CreateAutoScalingGroup's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateGroupInput {
    /// Name.
    pub name: String,
    /// Template by id or name.
    pub template: Option<TemplateRef>,
    /// Version selector.
    pub version: Option<String>,
    /// MinSize.
    pub min_size: u32,
    /// MaxSize.
    pub max_size: u32,
    /// DesiredCapacity (default MinSize).
    pub desired: Option<u32>,
    /// AvailabilityZones.
    pub zones: Vec<String>,
    /// VPCZoneIdentifier (comma-separated subnet ids or zone names).
    pub vpc_zone_identifier: Option<String>,
    /// HealthCheckGracePeriod (default 300 s... Nubis: 0 when absent).
    pub grace_seconds: Option<u32>,
    /// Tags.
    pub tags: Vec<GroupTag>,
    /// NewInstancesProtectedFromScaleIn.
    pub protect_new: bool,
    /// DefaultCooldown (seconds; default 300).
    pub default_cooldown: Option<u32>,
}

/// UpdateAutoScalingGroup's input (absent = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateGroupInput {
    /// Name.
    pub name: String,
    /// MinSize.
    pub min_size: Option<u32>,
    /// MaxSize.
    pub max_size: Option<u32>,
    /// DesiredCapacity.
    pub desired: Option<u32>,
    /// Zones.
    pub zones: Option<Vec<String>>,
    /// Grace period.
    pub grace_seconds: Option<u32>,
    /// Template and version.
    pub template: Option<(TemplateRef, Option<String>)>,
    /// NewInstancesProtectedFromScaleIn.
    pub protect_new: Option<bool>,
    /// DefaultCooldown (seconds).
    pub default_cooldown: Option<u32>,
}

/// An instance as DescribeAutoScalingInstances shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInstance {
    /// Group.
    pub group: String,
    /// The instance.
    pub instance: Instance,
    /// Healthy / Unhealthy.
    pub healthy: bool,
    /// Protected from scale-in.
    pub protected: bool,
    /// Pending / InService / Terminating / Terminated.
    pub lifecycle: &'static str,
}

pub(crate) fn validation_error(message: impl Into<String>) -> Error {
    Error::invalid_code("ValidationError", message)
}

fn group_not_found(name: &str) -> Error {
    validation_error(format!("AutoScalingGroup name not found - {name}"))
}

fn check_sizes(min: u32, max: u32, desired: u32) -> Result<()> {
    if min > max {
        return Err(validation_error(format!(
            "MinSize ({min}) must be less than or equal to MaxSize ({max})"
        )));
    }
    if max > MAX_GROUP_SIZE {
        return Err(validation_error(format!(
            "MaxSize ({max}) exceeds the limit of {MAX_GROUP_SIZE}"
        )));
    }
    if desired < min || desired > max {
        return Err(validation_error(format!(
            "Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}"
        )));
    }
    Ok(())
}

fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(validation_error(
            "AutoScalingGroupName must be 1 to 255 printable characters",
        ));
    }
    Ok(())
}

impl Domain {
    /// The zones of a group request: AvailabilityZones and/or the zones of
    /// VPCZoneIdentifier (zone names are accepted there, as Nubis has one
    /// subnet per node, not per zone), each a zone of this region.
    fn group_zones(&self, zones: &[String], vpc: Option<&str>) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let from_vpc: Vec<String> = vpc
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for z in zones.iter().chain(from_vpc.iter()) {
            if !self.cfg.zones.contains(z) {
                return Err(validation_error(format!(
                    "The availability zone {z} is not legal in this region ({})",
                    self.cfg.zones.join(", ")
                )));
            }
            if !out.contains(z) {
                out.push(z.clone());
            }
        }
        if out.is_empty() {
            return Err(validation_error(
                "At least one Availability Zone or VPC Subnet is required.",
            ));
        }
        Ok(out)
    }

    /// CreateAutoScalingGroup.
    pub async fn create_auto_scaling_group(
        &self,
        caller: &Caller,
        input: CreateGroupInput,
    ) -> Result<AutoScalingGroup> {
        let account = caller.account()?;
        check_group_name(&input.name)?;
        let desired = input.desired.unwrap_or(input.min_size);
        check_sizes(input.min_size, input.max_size, desired)?;
        let zones = self.group_zones(&input.zones, input.vpc_zone_identifier.as_deref())?;
        let what = input
            .template
            .clone()
            .ok_or_else(|| validation_error("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, InstanceId or MixedInstancesPolicy parameter."))?;
        let sel = parse_version(input.version.as_deref()).map_err(as_validation)?;
        let t = self
            .launch_template_of(&account, &what)
            .await
            .map_err(as_validation)?
            .value;
        // The version must exist now (and it is resolved again at each launch).
        self.launch_template_version(&account, &what, sel)
            .await
            .map_err(as_validation)?;
        let pairs: Vec<(String, String)> = input
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        validation::tags(&pairs).map_err(as_validation)?;
        let g = AutoScalingGroup {
            name: input.name.clone(),
            account: account.clone(),
            template: GroupTemplate {
                id: t.id.clone(),
                name: t.name.clone(),
                version: sel.to_wire(),
            },
            min_size: input.min_size,
            max_size: input.max_size,
            desired,
            zones,
            grace_seconds: input.grace_seconds.unwrap_or(0),
            tags: input.tags,
            protect_new: input.protect_new,
            protected: BTreeSet::new(),
            unhealthy: BTreeSet::new(),
            suspended: BTreeSet::new(),
            deleting: false,
            next_activity: 1,
            pending: None,
            created_ms: now_ms(),
            uid: hex::encode(rand::random::<[u8; 8]>()),
            default_cooldown: input.default_cooldown.unwrap_or(policies::DEFAULT_COOLDOWN),
            policies: Vec::new(),
            scheduled: Vec::new(),
            cooldown_until_ms: 0,
            last_tracking_ms: 0,
        };
        let duplicate = || Error::AlreadyExists {
            code: "AlreadyExists".into(),
            message: format!("AutoScalingGroup by this name already exists - {}", g.name),
        };
        // A taken name is a duplicate whatever the quota.
        if self.store.asgs().get(&account, &g.name).await?.is_some() {
            return Err(duplicate());
        }
        // With its quota charge, compared on the usage record: a lost
        // compare is either the name taken or a racing charge (re-read).
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let mut tx = Tx::new();
            self.store.asgs().stage_create(&mut tx, &g)?;
            self.stage_quota(&mut tx, &account, Resource::AutoScalingGroups, 1)
                .await?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(g);
            }
            if self.store.asgs().get(&account, &g.name).await?.is_some() {
                return Err(duplicate());
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("Auto Scaling group quota".into()))
    }

    /// The caller's group `name`.
    pub async fn auto_scaling_group(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Versioned<AutoScalingGroup>> {
        let account = caller.account()?;
        self.store
            .asgs()
            .get(&account, name)
            .await?
            .ok_or_else(|| group_not_found(name))
    }

    /// Applies `f` to the caller's group `name` (compare-and-swap, retried).
    pub(crate) async fn modify_group<F>(
        &self,
        caller: &Caller,
        name: &str,
        mut f: F,
    ) -> Result<AutoScalingGroup>
    where
        F: FnMut(&mut AutoScalingGroup) -> Result<()>,
    {
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let cur = self.auto_scaling_group(caller, name).await?;
            if cur.value.deleting {
                return Err(Error::invalid_code(
                    "ResourceInUse",
                    format!("AutoScalingGroup {name} is being deleted"),
                ));
            }
            let mut g = cur.value.clone();
            f(&mut g)?;
            let mut tx = Tx::new();
            self.store.asgs().stage_replace(&mut tx, &cur, &g)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(g);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(format!("group {name}")))
    }

    /// UpdateAutoScalingGroup.
    pub async fn update_auto_scaling_group(
        &self,
        caller: &Caller,
        input: UpdateGroupInput,
    ) -> Result<AutoScalingGroup> {
        let account = caller.account()?;
        let zones = match &input.zones {
            Some(z) => Some(self.group_zones(z, None)?),
            None => None,
        };
        let template = match &input.template {
            Some((what, v)) => {
                let sel = parse_version(v.as_deref()).map_err(as_validation)?;
                let t = self
                    .launch_template_of(&account, what)
                    .await
                    .map_err(as_validation)?
                    .value;
                self.launch_template_version(&account, what, sel)
                    .await
                    .map_err(as_validation)?;
                Some(GroupTemplate {
                    id: t.id,
                    name: t.name,
                    version: sel.to_wire(),
                })
            }
            None => None,
        };
        self.modify_group(caller, &input.name, |g| {
            let min = input.min_size.unwrap_or(g.min_size);
            let max = input.max_size.unwrap_or(g.max_size);
            // As EC2: a new min/max drags the desired capacity along.
            let desired = input.desired.unwrap_or(g.desired.clamp(min, max.max(min)));
            check_sizes(min, max, desired)?;
            g.min_size = min;
            g.max_size = max;
            g.desired = desired;
            if let Some(z) = &zones {
                g.zones = z.clone();
            }
            if let Some(s) = input.grace_seconds {
                g.grace_seconds = s;
            }
            if let Some(t) = &template {
                g.template = t.clone();
            }
            if let Some(p) = input.protect_new {
                g.protect_new = p;
            }
            if let Some(c) = input.default_cooldown {
                g.default_cooldown = c;
            }
            Ok(())
        })
        .await
    }

    /// SetDesiredCapacity.
    pub async fn set_desired_capacity(
        &self,
        caller: &Caller,
        name: &str,
        desired: u32,
    ) -> Result<AutoScalingGroup> {
        self.modify_group(caller, name, |g| {
            if desired < g.min_size || desired > g.max_size {
                return Err(validation_error(format!(
                    "New SetDesiredCapacity value {desired} is {} min value {} / max value {}.",
                    if desired < g.min_size {
                        "below"
                    } else {
                        "above"
                    },
                    g.min_size,
                    g.max_size
                )));
            }
            g.desired = desired;
            Ok(())
        })
        .await
    }

    /// DescribeAutoScalingGroups: the named groups (all when `names` is
    /// empty; unknown names are left out, as EC2 does).
    pub async fn describe_auto_scaling_groups(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<Vec<AutoScalingGroup>> {
        let account = caller.account()?;
        let all = self.store.asgs().of(&account).collect().await?;
        Ok(all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|g| names.is_empty() || names.contains(&g.name))
            .collect())
    }

    /// The instances of a group (every state but collected ones).
    pub async fn group_instances(&self, g: &AutoScalingGroup) -> Result<Vec<Instance>> {
        let all = self.store.instances().of(&g.account).collect().await?;
        Ok(all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|i| i.tags.get(GROUP_TAG) == Some(&g.name))
            .collect())
    }

    /// DescribeAutoScalingGroups with each group's instances that are not
    /// terminated.
    pub async fn describe_groups_with_instances(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<Vec<(AutoScalingGroup, Vec<GroupInstance>)>> {
        let mut out = Vec::new();
        for g in self.describe_auto_scaling_groups(caller, names).await? {
            let insts = self
                .group_instances(&g)
                .await?
                .into_iter()
                .filter(|i| i.state != crate::domain::lifecycle::State::Terminated)
                .map(|i| view(&g, i))
                .collect();
            out.push((g, insts));
        }
        Ok(out)
    }

    /// DescribeAutoScalingInstances: the caller's group instances (the
    /// named ones, or all) that are not terminated.
    pub async fn describe_auto_scaling_instances(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<Vec<GroupInstance>> {
        let account = caller.account()?;
        let groups: BTreeMap<String, AutoScalingGroup> = self
            .store
            .asgs()
            .of(&account)
            .collect()
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.name.clone(), v.value))
            .collect();
        let all = self.store.instances().of(&account).collect().await?;
        let mut out = Vec::new();
        for (_, v) in all {
            let i = v.value;
            let Some(g) = i.tags.get(GROUP_TAG).and_then(|n| groups.get(n)) else {
                continue;
            };
            if !ids.is_empty() && !ids.iter().any(|s| s == i.id.as_str()) {
                continue;
            }
            if i.state == crate::domain::lifecycle::State::Terminated {
                continue;
            }
            out.push(view(g, i));
        }
        Ok(out)
    }

    /// SetInstanceProtection.
    pub async fn set_instance_protection(
        &self,
        caller: &Caller,
        name: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<()> {
        let parsed = self.group_members(caller, name, ids).await?;
        self.modify_group(caller, name, |g| {
            for id in &parsed {
                if protected {
                    g.protected.insert(id.clone());
                } else {
                    g.protected.remove(id);
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// SetInstanceHealth (Unhealthy: the controller replaces it).
    pub async fn set_instance_health(
        &self,
        caller: &Caller,
        id: &str,
        healthy: bool,
    ) -> Result<()> {
        let inst = self.instance(caller, id).await?.value;
        let name = inst
            .tags
            .get(GROUP_TAG)
            .cloned()
            .ok_or_else(|| validation_error(format!("Instance Id not found - {id}")))?;
        self.modify_group(caller, &name, |g| {
            if healthy {
                g.unhealthy.remove(&inst.id);
            } else {
                g.unhealthy.insert(inst.id.clone());
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// TerminateInstanceInAutoScalingGroup: terminates the instance and,
    /// with `decrement`, lowers the desired capacity by one (never below
    /// MinSize). Returns the activity.
    pub async fn terminate_instance_in_group(
        &self,
        caller: &Caller,
        id: &str,
        decrement: bool,
    ) -> Result<Activity> {
        let inst = self.instance(caller, id).await?.value;
        let name = inst
            .tags
            .get(GROUP_TAG)
            .cloned()
            .ok_or_else(|| validation_error(format!("Instance Id not found - {id}")))?;
        let mut seq = 0;
        let g = self
            .modify_group(caller, &name, |g| {
                if decrement {
                    if g.desired <= g.min_size {
                        return Err(validation_error(format!(
                            "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                            g.min_size
                        )));
                    }
                    g.desired -= 1;
                }
                seq = g.next_activity;
                g.next_activity += 1;
                Ok(())
            })
            .await?;
        self.terminate_instances(caller, &[id.to_string()]).await?;
        let cause = if decrement {
            "shrinking the capacity from"
        } else {
            "without a change of capacity"
        };
        let a = Activity {
            account: g.account.clone(),
            group: g.name.clone(),
            seq,
            id: activity_id(),
            description: format!("Terminating EC2 instance: {id}"),
            cause: format!(
                "At {} instance {id} was taken out of service in response to a user request, {cause}.",
                crate::domain::autoscaling::controller::iso(now_ms())
            ),
            status: ActivityStatus::Successful,
            message: String::new(),
            start_ms: now_ms(),
            end_ms: Some(now_ms()),
        };
        let mut tx = Tx::new();
        self.store.asgs().stage_put_activity(&mut tx, &a)?;
        self.store.commit(tx).await?;
        Ok(a)
    }

    /// SuspendProcesses / ResumeProcesses (empty = every process).
    pub async fn set_processes_suspended(
        &self,
        caller: &Caller,
        name: &str,
        processes: &[String],
        suspend: bool,
    ) -> Result<()> {
        const ALL: [&str; 8] = [
            "Launch",
            "Terminate",
            "HealthCheck",
            "ReplaceUnhealthy",
            "AZRebalance",
            "AlarmNotification",
            "ScheduledActions",
            "AddToLoadBalancer",
        ];
        for p in processes {
            if !ALL.contains(&p.as_str()) {
                return Err(validation_error(format!("Unknown process name: {p}")));
            }
        }
        let list: Vec<String> = if processes.is_empty() {
            ALL.iter().map(|s| s.to_string()).collect()
        } else {
            processes.to_vec()
        };
        self.modify_group(caller, name, |g| {
            for p in &list {
                if suspend {
                    g.suspended.insert(p.clone());
                } else {
                    g.suspended.remove(p);
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// DescribeScalingActivities: newest first, at most `max`.
    pub async fn describe_scaling_activities(
        &self,
        caller: &Caller,
        name: Option<&str>,
        max: usize,
    ) -> Result<Vec<Activity>> {
        let account = caller.account()?;
        let names: Vec<String> = match name {
            Some(n) => {
                self.auto_scaling_group(caller, n).await?;
                vec![n.to_string()]
            }
            None => self
                .describe_auto_scaling_groups(caller, &[])
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect(),
        };
        let mut out = Vec::new();
        for n in names {
            let acts = self.store.asgs().activities(&account, &n).collect().await?;
            out.extend(acts.into_iter().map(|(_, v)| v.value));
        }
        out.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then(b.seq.cmp(&a.seq)));
        out.truncate(max);
        Ok(out)
    }

    /// DeleteAutoScalingGroup: without `force`, only a group without
    /// instances (`ResourceInUse` otherwise); with `force`, the group is
    /// marked deleting and the controller terminates its instances and
    /// then deletes it.
    pub async fn delete_auto_scaling_group(
        &self,
        caller: &Caller,
        name: &str,
        force: bool,
    ) -> Result<()> {
        let cur = self.auto_scaling_group(caller, name).await?;
        let live = self
            .group_instances(&cur.value)
            .await?
            .into_iter()
            .filter(|i| i.state != crate::domain::lifecycle::State::Terminated)
            .count();
        if !force {
            if live > 0 || cur.value.pending.is_some() {
                return Err(Error::invalid_code(
                    "ResourceInUse",
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.",
                ));
            }
            let mut tx = Tx::new();
            self.store.asgs().stage_delete(&mut tx, &cur);
            self.stage_quota(&mut tx, &cur.value.account, Resource::AutoScalingGroups, -1)
                .await?;
            if self.store.commit(tx).await?.is_none() {
                return Err(Error::invalid_code(
                    "ScalingActivityInProgress",
                    "the group changed while it was being deleted; retry",
                ));
            }
            return Ok(());
        }
        if cur.value.deleting {
            return Ok(());
        }
        let mut g = cur.value.clone();
        g.deleting = true;
        g.desired = 0;
        g.min_size = 0;
        let mut tx = Tx::new();
        self.store.asgs().stage_replace(&mut tx, &cur, &g)?;
        if self.store.commit(tx).await?.is_none() {
            return Err(Error::invalid_code(
                "ScalingActivityInProgress",
                "the group changed while it was being deleted; retry",
            ));
        }
        Ok(())
    }

    /// The ids in `ids`, each an instance of group `name` (ValidationError otherwise).
    async fn group_members(
        &self,
        caller: &Caller,
        name: &str,
        ids: &[String],
    ) -> Result<Vec<InstanceId>> {
        let g = self.auto_scaling_group(caller, name).await?.value;
        let members = self.group_instances(&g).await?;
        let mut out = Vec::new();
        for s in ids {
            let id = InstanceId::parse(s).map_err(as_validation)?;
            if !members.iter().any(|i| i.id == id) {
                return Err(validation_error(format!(
                    "The instance {s} is not part of Auto Scaling group {name}."
                )));
            }
            out.push(id);
        }
        Ok(out)
    }
}

/// The group view of an instance.
pub(crate) fn view(g: &AutoScalingGroup, i: Instance) -> GroupInstance {
    use crate::domain::lifecycle::State;
    let healthy =
        !g.unhealthy.contains(&i.id) && matches!(i.state, State::Pending | State::Running);
    let lifecycle = match i.state {
        State::Pending => "Pending",
        State::Running => "InService",
        State::Terminated => "Terminated",
        _ => "Terminating",
    };
    GroupInstance {
        group: g.name.clone(),
        protected: g.protected.contains(&i.id),
        healthy,
        lifecycle,
        instance: i,
    }
}

/// Any error of a lookup as the Auto Scaling API's `ValidationError`.
pub(crate) fn as_validation(e: Error) -> Error {
    match e {
        Error::InvalidInput { message, .. } | Error::NotFound { message, .. } => {
            validation_error(message)
        }
        other => other,
    }
}
