//! The grammar of `nubis autoscaling ...` (groups, launch templates,
//! policies, scheduled actions).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{image_id, instance_id, parse_duration, parse_poll, tag_arg, TagArg};

/// `--wait` for commands that change a group's capacity.
#[derive(Debug, Args, Clone)]
pub struct GroupWaitArgs {
    /// Wait until the group has exactly its desired capacity in service
    /// (running) and nothing else, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (with --wait).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// How often to poll the control plane while waiting.
    #[arg(long, value_name = "INTERVAL", default_value = "100ms", value_parser = parse_poll)]
    pub poll_interval: std::time::Duration,
}

/// A scaling policy's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// Add, set or change by a percentage (ExecutePolicy runs it).
    Simple,
    /// Steps by how far a metric is from a threshold.
    Step,
    /// Keep the group's average CPU utilization at a target.
    TargetTracking,
}

/// `nubis autoscaling ...`.
#[derive(Debug, Subcommand)]
pub enum AutoscalingCmd {
    /// Create a launch template (version 1) for groups to launch from.
    CreateLaunchTemplate {
        /// Template name.
        name: String,
        /// Image id.
        #[arg(long, value_parser = image_id)]
        image: String,
        /// Instance type.
        #[arg(long = "type", value_name = "TYPE")]
        instance_type: String,
        /// Key pair name.
        #[arg(long)]
        key_name: Option<String>,
        /// File whose contents become the instances' user data.
        #[arg(long, value_name = "FILE")]
        user_data: Option<PathBuf>,
        /// Instance tag (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List launch templates (all, or by name or id).
    LaunchTemplates {
        /// Names or ids.
        templates: Vec<String>,
    },
    /// Delete a launch template (by name or id).
    DeleteLaunchTemplate {
        /// Name or id.
        template: String,
    },
    /// Create a group: it launches its desired capacity spread over its zones.
    Create(Box<CreateGroupArgs>),
    /// Change a group's sizes, zones or template.
    Update(Box<UpdateGroupArgs>),
    /// List groups (all, or by name) with their capacity.
    #[command(visible_alias = "ls")]
    List {
        /// Group names.
        names: Vec<String>,
    },
    /// Show one group with its instances.
    Describe {
        /// Group name.
        name: String,
    },
    /// Delete a group (with --force, terminating its instances).
    Delete {
        /// Group name.
        name: String,
        /// Terminate the group's instances too.
        #[arg(long)]
        force: bool,
        /// Wait until the group and its instances are gone.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Set a group's desired capacity.
    SetDesiredCapacity {
        /// Group name.
        name: String,
        /// The capacity (within MinSize..=MaxSize).
        capacity: u32,
        /// Refuse while a simple policy's cooldown runs.
        #[arg(long)]
        honor_cooldown: bool,
        /// Wait options.
        #[command(flatten)]
        wait: GroupWaitArgs,
    },
    /// List the instances of groups (all, or by instance id).
    Instances {
        /// Instance ids.
        #[arg(value_parser = instance_id)]
        ids: Vec<String>,
    },
    /// Terminate one instance of a group (it is replaced unless --decrement).
    TerminateInstance {
        /// Instance id.
        #[arg(value_parser = instance_id)]
        id: String,
        /// Lower the desired capacity by one instead of replacing it.
        #[arg(long)]
        decrement: bool,
    },
    /// Protect instances from scale-in (or lift it with --off).
    SetProtection {
        /// Group name.
        name: String,
        /// Instance ids.
        #[arg(required = true, value_parser = instance_id)]
        ids: Vec<String>,
        /// Remove the protection.
        #[arg(long)]
        off: bool,
    },
    /// What groups did and why (newest first).
    Activities {
        /// Group name (all groups without it).
        name: Option<String>,
        /// At most this many (1..=100).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
        max: u32,
    },
    /// Create or replace a scaling policy.
    PutPolicy(Box<PutPolicyArgs>),
    /// List scaling policies.
    Policies {
        /// Group name (all groups without it).
        name: Option<String>,
    },
    /// Delete a scaling policy.
    DeletePolicy {
        /// Group name.
        name: String,
        /// Policy name.
        policy: String,
    },
    /// Run a simple or step policy now.
    ExecutePolicy {
        /// Group name.
        name: String,
        /// Policy name.
        policy: String,
        /// Refuse while the policy's cooldown runs.
        #[arg(long)]
        honor_cooldown: bool,
        /// Step policies: the metric's value.
        #[arg(long, allow_hyphen_values = true)]
        metric_value: Option<f64>,
        /// Step policies: the breach threshold.
        #[arg(long, allow_hyphen_values = true)]
        breach_threshold: Option<f64>,
    },
    /// Create or replace a scheduled action.
    PutScheduledAction {
        /// Group name.
        name: String,
        /// Action name.
        action: String,
        /// First (or only) time, same forms as `nubis events list --from`.
        #[arg(long, allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        start: Option<i64>,
        /// No occurrence after this time.
        #[arg(long, allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        end: Option<i64>,
        /// Cron recurrence (5 fields, UTC), e.g. "0 9 * * 1-5".
        #[arg(long)]
        recurrence: Option<String>,
        /// New MinSize.
        #[arg(long)]
        min: Option<u32>,
        /// New MaxSize.
        #[arg(long)]
        max: Option<u32>,
        /// New desired capacity.
        #[arg(long)]
        desired: Option<u32>,
    },
    /// List scheduled actions.
    ScheduledActions {
        /// Group name (all groups without it).
        name: Option<String>,
    },
    /// Delete a scheduled action.
    DeleteScheduledAction {
        /// Group name.
        name: String,
        /// Action name.
        action: String,
    },
}

/// `nubis autoscaling create`.
#[derive(Debug, Args)]
pub struct CreateGroupArgs {
    /// Group name.
    pub name: String,
    /// Launch template name or id.
    #[arg(long)]
    pub launch_template: String,
    /// Template version: $Default (default), $Latest or a number.
    #[arg(long, default_value = "")]
    pub template_version: String,
    /// MinSize.
    #[arg(long)]
    pub min: u32,
    /// MaxSize.
    #[arg(long)]
    pub max: u32,
    /// Desired capacity (default: MinSize).
    #[arg(long)]
    pub desired: Option<u32>,
    /// Availability zone (repeatable; at least one).
    #[arg(long = "zone", value_name = "ZONE", required = true)]
    pub zones: Vec<String>,
    /// Seconds after launch before health replacement applies.
    #[arg(long)]
    pub grace_period: Option<u32>,
    /// Group tag, copied onto its instances (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
    pub tags: Vec<TagArg>,
    /// New instances are protected from scale-in.
    #[arg(long)]
    pub protect_new: bool,
    /// DefaultCooldown (seconds).
    #[arg(long)]
    pub default_cooldown: Option<u32>,
    /// Wait options.
    #[command(flatten)]
    pub wait: GroupWaitArgs,
}

/// `nubis autoscaling update`.
#[derive(Debug, Args)]
pub struct UpdateGroupArgs {
    /// Group name.
    pub name: String,
    /// MinSize.
    #[arg(long)]
    pub min: Option<u32>,
    /// MaxSize.
    #[arg(long)]
    pub max: Option<u32>,
    /// Desired capacity.
    #[arg(long)]
    pub desired: Option<u32>,
    /// Availability zones (repeatable; replaces the list).
    #[arg(long = "zone", value_name = "ZONE")]
    pub zones: Vec<String>,
    /// Launch template name or id.
    #[arg(long)]
    pub launch_template: Option<String>,
    /// Template version (with --launch-template).
    #[arg(long, default_value = "")]
    pub template_version: String,
    /// Seconds after launch before health replacement applies.
    #[arg(long)]
    pub grace_period: Option<u32>,
    /// New instances are protected from scale-in (true/false).
    #[arg(long)]
    pub protect_new: Option<bool>,
    /// DefaultCooldown (seconds).
    #[arg(long)]
    pub default_cooldown: Option<u32>,
    /// Wait options.
    #[command(flatten)]
    pub wait: GroupWaitArgs,
}

/// `nubis autoscaling put-policy`.
#[derive(Debug, Args)]
pub struct PutPolicyArgs {
    /// Group name.
    pub name: String,
    /// Policy name.
    pub policy: String,
    /// Policy type.
    #[arg(long = "type", value_enum, default_value_t = PolicyKind::Simple)]
    pub kind: PolicyKind,
    /// ChangeInCapacity | ExactCapacity | PercentChangeInCapacity.
    #[arg(long)]
    pub adjustment_type: Option<String>,
    /// Simple policies: the adjustment.
    #[arg(long, allow_hyphen_values = true)]
    pub adjustment: Option<i32>,
    /// PercentChangeInCapacity: smallest change.
    #[arg(long)]
    pub min_adjustment_magnitude: Option<i32>,
    /// Simple policies: cooldown (seconds).
    #[arg(long)]
    pub cooldown: Option<u32>,
    /// Step policies: LOWER:UPPER:ADJUSTMENT (a bound may be empty), repeatable.
    #[arg(long = "step", value_name = "LOWER:UPPER:ADJ", value_parser = step_arg, allow_hyphen_values = true)]
    pub steps: Vec<(Option<f64>, Option<f64>, i32)>,
    /// Step and target tracking policies: warm-up (seconds).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Target tracking: the average CPU utilization to keep (percent).
    #[arg(long)]
    pub target_cpu: Option<f64>,
    /// Target tracking: never scale in.
    #[arg(long)]
    pub disable_scale_in: bool,
}

/// Parses `LOWER:UPPER:ADJUSTMENT`.
fn step_arg(s: &str) -> Result<(Option<f64>, Option<f64>, i32), String> {
    let bad = || format!("{s:?} is not LOWER:UPPER:ADJUSTMENT (e.g. 0:10:1 or 10::2)");
    let parts: Vec<&str> = s.split(':').collect();
    let [lo, hi, adj] = parts.as_slice() else {
        return Err(bad());
    };
    let bound = |b: &str| -> Result<Option<f64>, String> {
        if b.is_empty() {
            Ok(None)
        } else {
            b.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(bad)
        }
    };
    Ok((bound(lo)?, bound(hi)?, adj.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_with_open_bounds_and_refuse_garbage() {
        assert_eq!(step_arg("0:10:1"), Ok((Some(0.0), Some(10.0), 1)));
        assert_eq!(step_arg("10::-2"), Ok((Some(10.0), None, -2)));
        assert_eq!(step_arg(":0:-1"), Ok((None, Some(0.0), -1)));
        assert!(step_arg("1:2").is_err());
        assert!(step_arg("a:1:1").is_err());
        assert!(step_arg("1:2:x").is_err());
    }
}
