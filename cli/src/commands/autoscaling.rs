//! `nubis autoscaling ...`: groups, their instances and activities, launch
//! templates, scaling policies and scheduled actions over the AutoScaling
//! gRPC service, as tables or `-o json`; `--wait` polls the group until its
//! desired capacity is in service, with one progress line per change on
//! stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use nubis_proto::autoscaling::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{
    AutoscalingCmd, CreateGroupArgs, GroupWaitArgs, PolicyKind, PutPolicyArgs, UpdateGroupArgs,
};
use crate::client::Client;
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// A group, as listed.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Launch template name.
    pub launch_template: String,
    /// Template version.
    pub launch_template_version: String,
    /// MinSize.
    pub min_size: u32,
    /// MaxSize.
    pub max_size: u32,
    /// Desired capacity.
    pub desired_capacity: u32,
    /// Instances InService (running, healthy).
    pub in_service: usize,
    /// Zones.
    pub availability_zones: Vec<String>,
    /// Suspended processes.
    pub suspended_processes: Vec<String>,
    /// Empty, or `Delete in progress`.
    pub status: String,
    /// Creation time.
    pub created: String,
    /// Instances.
    pub instances: Vec<InstanceView>,
}

impl Tabular for GroupView {
    fn headers() -> &'static [&'static str] {
        &[
            "NAME",
            "MIN",
            "MAX",
            "DESIRED",
            "IN-SERVICE",
            "ZONES",
            "TEMPLATE",
            "STATUS",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.min_size.to_string(),
            self.max_size.to_string(),
            self.desired_capacity.to_string(),
            self.in_service.to_string(),
            self.availability_zones.join(","),
            format!("{}:{}", self.launch_template, self.launch_template_version),
            self.status.clone(),
        ]
    }
}

/// An instance of a group.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Instance id.
    pub instance_id: String,
    /// Group.
    pub group: String,
    /// Zone.
    pub availability_zone: String,
    /// Pending | InService | Terminating.
    pub lifecycle_state: String,
    /// HEALTHY | UNHEALTHY.
    pub health_status: String,
    /// Protected from scale-in.
    pub protected: bool,
    /// The instance's state.
    pub state: String,
    /// Type.
    pub instance_type: String,
    /// Private address.
    pub private_ip_address: String,
}

impl Tabular for InstanceView {
    fn headers() -> &'static [&'static str] {
        &[
            "INSTANCE",
            "GROUP",
            "ZONE",
            "LIFECYCLE",
            "HEALTH",
            "PROTECTED",
            "STATE",
            "IP",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.instance_id.clone(),
            self.group.clone(),
            self.availability_zone.clone(),
            self.lifecycle_state.clone(),
            self.health_status.clone(),
            self.protected.to_string(),
            self.state.clone(),
            self.private_ip_address.clone(),
        ]
    }
}

/// A scaling activity.
#[derive(Debug, Serialize)]
pub struct ActivityView {
    /// Id.
    pub activity_id: String,
    /// Group.
    pub group: String,
    /// InProgress | Successful | Failed.
    pub status: String,
    /// What.
    pub description: String,
    /// Why.
    pub cause: String,
    /// Details of a failure.
    pub status_message: String,
    /// Start.
    pub start: String,
    /// End.
    pub end: String,
}

impl Tabular for ActivityView {
    fn headers() -> &'static [&'static str] {
        &["START", "GROUP", "STATUS", "DESCRIPTION"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.start.clone(),
            self.group.clone(),
            self.status.clone(),
            self.description.clone(),
        ]
    }
}

/// A launch template.
#[derive(Debug, Serialize)]
pub struct TemplateView {
    /// Id.
    pub launch_template_id: String,
    /// Name.
    pub name: String,
    /// Default version.
    pub default_version: u64,
    /// Latest version.
    pub latest_version: u64,
    /// Creation time.
    pub created: String,
}

impl Tabular for TemplateView {
    fn headers() -> &'static [&'static str] {
        &["ID", "NAME", "DEFAULT", "LATEST", "CREATED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.launch_template_id.clone(),
            self.name.clone(),
            self.default_version.to_string(),
            self.latest_version.to_string(),
            self.created.clone(),
        ]
    }
}

/// A scaling policy.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    /// Group.
    pub group: String,
    /// Name.
    pub name: String,
    /// Type.
    pub policy_type: String,
    /// Adjustment type.
    pub adjustment_type: String,
    /// Simple adjustment.
    pub scaling_adjustment: Option<i32>,
    /// Target tracking: target value.
    pub target_value: Option<f64>,
    /// ARN.
    pub arn: String,
    /// Enabled.
    pub enabled: bool,
}

impl Tabular for PolicyView {
    fn headers() -> &'static [&'static str] {
        &["GROUP", "NAME", "TYPE", "ADJUSTMENT", "TARGET", "ENABLED"]
    }
    fn row(&self) -> Vec<String> {
        let adj = match self.scaling_adjustment {
            Some(a) => format!("{} {a}", self.adjustment_type),
            None => self.adjustment_type.clone(),
        };
        vec![
            self.group.clone(),
            self.name.clone(),
            self.policy_type.clone(),
            adj,
            self.target_value.map(|t| t.to_string()).unwrap_or_default(),
            self.enabled.to_string(),
        ]
    }
}

/// A scheduled action.
#[derive(Debug, Serialize)]
pub struct ScheduledView {
    /// Group.
    pub group: String,
    /// Name.
    pub name: String,
    /// Next occurrence.
    pub next: String,
    /// Cron recurrence.
    pub recurrence: String,
    /// MinSize.
    pub min_size: Option<u32>,
    /// MaxSize.
    pub max_size: Option<u32>,
    /// Desired capacity.
    pub desired_capacity: Option<u32>,
    /// ARN.
    pub arn: String,
}

impl Tabular for ScheduledView {
    fn headers() -> &'static [&'static str] {
        &[
            "GROUP",
            "NAME",
            "NEXT",
            "RECURRENCE",
            "MIN",
            "MAX",
            "DESIRED",
        ]
    }
    fn row(&self) -> Vec<String> {
        let n = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        vec![
            self.group.clone(),
            self.name.clone(),
            self.next.clone(),
            self.recurrence.clone(),
            n(self.min_size),
            n(self.max_size),
            n(self.desired_capacity),
        ]
    }
}

fn instance_view(i: pb::GroupInstance) -> InstanceView {
    InstanceView {
        instance_id: i.instance_id,
        group: i.auto_scaling_group_name,
        availability_zone: i.availability_zone,
        lifecycle_state: i.lifecycle_state,
        health_status: i.health_status,
        protected: i.protected_from_scale_in,
        state: i.state,
        instance_type: i.instance_type,
        private_ip_address: i.private_ip_address,
    }
}

/// Instances counted as in service: InService and healthy.
fn in_service(g: &pb::AutoScalingGroup) -> usize {
    g.instances
        .iter()
        .filter(|i| i.lifecycle_state == "InService" && i.health_status == "HEALTHY")
        .count()
}

fn group_view(g: pb::AutoScalingGroup) -> GroupView {
    GroupView {
        in_service: in_service(&g),
        name: g.auto_scaling_group_name,
        arn: g.auto_scaling_group_arn,
        launch_template: g.launch_template_name,
        launch_template_version: g.launch_template_version,
        min_size: g.min_size,
        max_size: g.max_size,
        desired_capacity: g.desired_capacity,
        availability_zones: g.availability_zones,
        suspended_processes: g.suspended_processes,
        status: g.status,
        created: rfc3339_ms(g.created_ms),
        instances: g.instances.into_iter().map(instance_view).collect(),
    }
}

fn activity_view(a: pb::Activity) -> ActivityView {
    ActivityView {
        activity_id: a.activity_id,
        group: a.auto_scaling_group_name,
        status: a.status_code,
        description: a.description,
        cause: a.cause,
        status_message: a.status_message,
        start: rfc3339_ms(a.start_ms),
        end: rfc3339_ms(a.end_ms),
    }
}

fn template_view(t: pb::LaunchTemplate) -> TemplateView {
    TemplateView {
        launch_template_id: t.launch_template_id,
        name: t.launch_template_name,
        default_version: t.default_version,
        latest_version: t.latest_version,
        created: rfc3339_ms(t.created_ms),
    }
}

/// One group by name (NotFound when absent).
async fn group(client: &mut Client, name: &str) -> Result<Option<pb::AutoScalingGroup>, CliError> {
    let r = client
        .autoscaling
        .describe_auto_scaling_groups(pb::DescribeAutoScalingGroupsRequest {
            auto_scaling_group_names: vec![name.to_string()],
        })
        .await?
        .into_inner();
    Ok(r.groups
        .into_iter()
        .find(|g| g.auto_scaling_group_name == name))
}

/// Where a group stands: (desired, in service, other live instances).
fn progress(g: &pb::AutoScalingGroup) -> (u32, usize, usize) {
    let ok = in_service(g);
    let live = g
        .instances
        .iter()
        .filter(|i| i.lifecycle_state != "Terminated")
        .count();
    (g.desired_capacity, ok, live.saturating_sub(ok))
}

/// Polls until the group has exactly its desired capacity in service and no
/// other live instance (or, with `gone`, until the group no longer exists).
async fn wait_group(
    client: &mut Client,
    name: &str,
    gone: bool,
    timeout: Duration,
    poll: Duration,
) -> Result<Option<pb::AutoScalingGroup>, CliError> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let g = group(client, name).await?;
        let (done, now) = match &g {
            None if gone => (true, "deleted".to_string()),
            None => return Err(CliError::NotFound(format!("group {name}"))),
            Some(g) => {
                let (desired, ok, other) = progress(g);
                (
                    !gone && ok == desired as usize && other == 0,
                    format!("{ok}/{desired} in service, {other} pending or terminating"),
                )
            }
        };
        if last.as_deref() != Some(now.as_str()) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "[{:>6.1}s] {name}: {now}",
                started.elapsed().as_secs_f64()
            );
            last = Some(now);
        }
        if done {
            return Ok(g);
        }
        if started.elapsed() >= timeout {
            return Err(CliError::Wait(format!(
                "group {name} did not settle within {timeout:?}: {}",
                last.unwrap_or_default()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Prints the group (after waiting when asked).
async fn show_group(
    ctx: &Ctx,
    client: &mut Client,
    name: &str,
    wait: &GroupWaitArgs,
) -> Result<(), CliError> {
    let g = if wait.wait {
        wait_group(client, name, false, wait.timeout, wait.poll_interval).await?
    } else {
        group(client, name).await?
    };
    let g = g.ok_or_else(|| CliError::NotFound(format!("group {name}")))?;
    emit(&render_record(ctx.format, &group_view(g))?)
}

fn template_spec(t: Option<String>, version: String) -> Option<pb::TemplateSpec> {
    t.map(|launch_template| pb::TemplateSpec {
        launch_template,
        version,
    })
}

async fn create(ctx: &Ctx, client: &mut Client, a: CreateGroupArgs) -> Result<(), CliError> {
    client
        .autoscaling
        .create_auto_scaling_group(pb::CreateAutoScalingGroupRequest {
            auto_scaling_group_name: a.name.clone(),
            launch_template: template_spec(Some(a.launch_template), a.template_version),
            min_size: a.min,
            max_size: a.max,
            desired_capacity: a.desired,
            availability_zones: a.zones,
            health_check_grace_period: a.grace_period,
            tags: a
                .tags
                .into_iter()
                .map(|t| pb::Tag {
                    key: t.key,
                    value: t.value,
                    propagate_at_launch: true,
                })
                .collect(),
            new_instances_protected_from_scale_in: a.protect_new,
            default_cooldown: a.default_cooldown,
        })
        .await?;
    show_group(ctx, client, &a.name, &a.wait).await
}

async fn update(ctx: &Ctx, client: &mut Client, a: UpdateGroupArgs) -> Result<(), CliError> {
    client
        .autoscaling
        .update_auto_scaling_group(pb::UpdateAutoScalingGroupRequest {
            auto_scaling_group_name: a.name.clone(),
            min_size: a.min,
            max_size: a.max,
            desired_capacity: a.desired,
            availability_zones: a.zones,
            health_check_grace_period: a.grace_period,
            launch_template: template_spec(a.launch_template, a.template_version),
            new_instances_protected_from_scale_in: a.protect_new,
            default_cooldown: a.default_cooldown,
        })
        .await?;
    show_group(ctx, client, &a.name, &a.wait).await
}

async fn put_policy(client: &mut Client, a: PutPolicyArgs) -> Result<String, CliError> {
    let (policy_type, metric) = match a.kind {
        PolicyKind::Simple => ("SimpleScaling", ""),
        PolicyKind::Step => ("StepScaling", ""),
        PolicyKind::TargetTracking => ("TargetTrackingScaling", "ASGAverageCPUUtilization"),
    };
    let r = client
        .autoscaling
        .put_scaling_policy(pb::PutScalingPolicyRequest {
            auto_scaling_group_name: a.name,
            policy_name: a.policy,
            policy_type: policy_type.into(),
            adjustment_type: a.adjustment_type.unwrap_or_default(),
            scaling_adjustment: a.adjustment,
            min_adjustment_magnitude: a.min_adjustment_magnitude,
            cooldown: a.cooldown,
            step_adjustments: a
                .steps
                .into_iter()
                .map(|(lo, hi, adj)| pb::StepAdjustment {
                    metric_interval_lower_bound: lo,
                    metric_interval_upper_bound: hi,
                    scaling_adjustment: adj,
                })
                .collect(),
            metric_aggregation_type: String::new(),
            estimated_instance_warmup: a.warmup,
            predefined_metric_type: metric.into(),
            target_value: a.target_cpu,
            disable_scale_in: a.disable_scale_in,
            enabled: None,
        })
        .await?
        .into_inner();
    Ok(r.policy_arn)
}

/// Runs `nubis autoscaling ...`.
pub async fn run(ctx: &Ctx, cmd: AutoscalingCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    let c = &mut client;
    let f = ctx.format;
    match cmd {
        AutoscalingCmd::CreateLaunchTemplate {
            name,
            image,
            instance_type,
            key_name,
            user_data,
            tags,
            description,
        } => {
            let user_data = match user_data {
                Some(p) => super::read_file(&p)?,
                None => Vec::new(),
            };
            let t = c
                .autoscaling
                .create_launch_template(pb::CreateLaunchTemplateRequest {
                    launch_template_name: name,
                    description,
                    image_id: image,
                    instance_type,
                    key_name: key_name.unwrap_or_default(),
                    user_data,
                    tags: tags
                        .into_iter()
                        .map(|t| pb::Tag {
                            key: t.key,
                            value: t.value,
                            propagate_at_launch: false,
                        })
                        .collect(),
                })
                .await?
                .into_inner()
                .launch_template
                .unwrap_or_default();
            emit(&render_record(f, &template_view(t))?)
        }
        AutoscalingCmd::LaunchTemplates { templates } => {
            let r = c
                .autoscaling
                .describe_launch_templates(pb::DescribeLaunchTemplatesRequest {
                    launch_templates: templates,
                })
                .await?
                .into_inner();
            let v: Vec<TemplateView> = r.launch_templates.into_iter().map(template_view).collect();
            emit(&render_list(f, "launch_templates", &v)?)
        }
        AutoscalingCmd::DeleteLaunchTemplate { template } => {
            let t = c
                .autoscaling
                .delete_launch_template(pb::DeleteLaunchTemplateRequest {
                    launch_template: template,
                })
                .await?
                .into_inner()
                .launch_template
                .unwrap_or_default();
            emit(&render_record(f, &template_view(t))?)
        }
        AutoscalingCmd::Create(a) => create(ctx, c, *a).await,
        AutoscalingCmd::Update(a) => update(ctx, c, *a).await,
        AutoscalingCmd::List { names } => {
            let r = c
                .autoscaling
                .describe_auto_scaling_groups(pb::DescribeAutoScalingGroupsRequest {
                    auto_scaling_group_names: names,
                })
                .await?
                .into_inner();
            let v: Vec<GroupView> = r.groups.into_iter().map(group_view).collect();
            emit(&render_list(f, "groups", &v)?)
        }
        AutoscalingCmd::Describe { name } => {
            let g = group(c, &name)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("group {name}")))?;
            let v = group_view(g);
            match f {
                Format::Json => emit(&render_record(f, &v)?),
                Format::Table => {
                    let mut text = render_list(f, "groups", std::slice::from_ref(&v))?;
                    text.push('\n');
                    text.push_str(&render_list(f, "instances", &v.instances)?);
                    emit(&text)
                }
            }
        }
        AutoscalingCmd::Delete {
            name,
            force,
            wait,
            timeout,
        } => {
            c.autoscaling
                .delete_auto_scaling_group(pb::DeleteAutoScalingGroupRequest {
                    auto_scaling_group_name: name.clone(),
                    force_delete: force,
                })
                .await?;
            if wait {
                wait_group(c, &name, true, timeout, Duration::from_millis(200)).await?;
            }
            Ok(())
        }
        AutoscalingCmd::SetDesiredCapacity {
            name,
            capacity,
            honor_cooldown,
            wait,
        } => {
            c.autoscaling
                .set_desired_capacity(pb::SetDesiredCapacityRequest {
                    auto_scaling_group_name: name.clone(),
                    desired_capacity: capacity,
                    honor_cooldown,
                })
                .await?;
            show_group(ctx, c, &name, &wait).await
        }
        AutoscalingCmd::Instances { ids } => {
            let r = c
                .autoscaling
                .describe_auto_scaling_instances(pb::DescribeAutoScalingInstancesRequest {
                    instance_ids: ids,
                })
                .await?
                .into_inner();
            let v: Vec<InstanceView> = r.instances.into_iter().map(instance_view).collect();
            emit(&render_list(f, "instances", &v)?)
        }
        AutoscalingCmd::TerminateInstance { id, decrement } => {
            let a = c
                .autoscaling
                .terminate_instance_in_auto_scaling_group(
                    pb::TerminateInstanceInAutoScalingGroupRequest {
                        instance_id: id,
                        should_decrement_desired_capacity: decrement,
                    },
                )
                .await?
                .into_inner()
                .activity
                .unwrap_or_default();
            emit(&render_record(f, &activity_view(a))?)
        }
        AutoscalingCmd::SetProtection { name, ids, off } => {
            c.autoscaling
                .set_instance_protection(pb::SetInstanceProtectionRequest {
                    auto_scaling_group_name: name,
                    instance_ids: ids,
                    protected_from_scale_in: !off,
                })
                .await?;
            Ok(())
        }
        AutoscalingCmd::Activities { name, max } => {
            let r = c
                .autoscaling
                .describe_scaling_activities(pb::DescribeScalingActivitiesRequest {
                    auto_scaling_group_name: name.unwrap_or_default(),
                    max_records: max,
                })
                .await?
                .into_inner();
            let v: Vec<ActivityView> = r.activities.into_iter().map(activity_view).collect();
            emit(&render_list(f, "activities", &v)?)
        }
        AutoscalingCmd::PutPolicy(a) => {
            let arn = put_policy(c, *a).await?;
            emit(&render_record(
                f,
                &serde_json::json!({ "policy_arn": arn }),
            )?)
        }
        AutoscalingCmd::Policies { name } => {
            let r = c
                .autoscaling
                .describe_policies(pb::DescribePoliciesRequest {
                    auto_scaling_group_name: name.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let v: Vec<PolicyView> = r
                .policies
                .into_iter()
                .map(|p| PolicyView {
                    group: p.auto_scaling_group_name,
                    name: p.policy_name,
                    policy_type: p.policy_type,
                    adjustment_type: p.adjustment_type,
                    scaling_adjustment: p.scaling_adjustment,
                    target_value: p.target_value,
                    arn: p.policy_arn,
                    enabled: p.enabled,
                })
                .collect();
            emit(&render_list(f, "policies", &v)?)
        }
        AutoscalingCmd::DeletePolicy { name, policy } => {
            c.autoscaling
                .delete_policy(pb::DeletePolicyRequest {
                    auto_scaling_group_name: name,
                    policy_name: policy,
                })
                .await?;
            Ok(())
        }
        AutoscalingCmd::ExecutePolicy {
            name,
            policy,
            honor_cooldown,
            metric_value,
            breach_threshold,
        } => {
            c.autoscaling
                .execute_policy(pb::ExecutePolicyRequest {
                    auto_scaling_group_name: name,
                    policy_name: policy,
                    honor_cooldown,
                    metric_value,
                    breach_threshold,
                })
                .await?;
            Ok(())
        }
        AutoscalingCmd::PutScheduledAction {
            name,
            action,
            start,
            end,
            recurrence,
            min,
            max,
            desired,
        } => {
            c.autoscaling
                .put_scheduled_update_group_action(pb::PutScheduledUpdateGroupActionRequest {
                    auto_scaling_group_name: name,
                    scheduled_action_name: action,
                    start_ms: start,
                    end_ms: end,
                    recurrence: recurrence.unwrap_or_default(),
                    min_size: min,
                    max_size: max,
                    desired_capacity: desired,
                    time_zone: String::new(),
                })
                .await?;
            Ok(())
        }
        AutoscalingCmd::ScheduledActions { name } => {
            let r = c
                .autoscaling
                .describe_scheduled_actions(pb::DescribeScheduledActionsRequest {
                    auto_scaling_group_name: name.unwrap_or_default(),
                    scheduled_action_names: Vec::new(),
                })
                .await?
                .into_inner();
            let v: Vec<ScheduledView> = r
                .actions
                .into_iter()
                .map(|a| ScheduledView {
                    group: a.auto_scaling_group_name,
                    name: a.scheduled_action_name,
                    next: rfc3339_ms(a.next_ms),
                    recurrence: a.recurrence,
                    min_size: a.min_size,
                    max_size: a.max_size,
                    desired_capacity: a.desired_capacity,
                    arn: a.scheduled_action_arn,
                })
                .collect();
            emit(&render_list(f, "scheduled_actions", &v)?)
        }
        AutoscalingCmd::DeleteScheduledAction { name, action } => {
            c.autoscaling
                .delete_scheduled_action(pb::DeleteScheduledActionRequest {
                    auto_scaling_group_name: name,
                    scheduled_action_name: action,
                })
                .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, life: &str, health: &str) -> pb::GroupInstance {
        pb::GroupInstance {
            instance_id: id.into(),
            lifecycle_state: life.into(),
            health_status: health.into(),
            ..Default::default()
        }
    }

    #[test]
    fn progress_counts_only_healthy_in_service_instances() {
        let g = pb::AutoScalingGroup {
            auto_scaling_group_name: "web".into(),
            desired_capacity: 3,
            instances: vec![
                inst("i-1", "InService", "HEALTHY"),
                inst("i-2", "Pending", "HEALTHY"),
                inst("i-3", "InService", "UNHEALTHY"),
                inst("i-4", "Terminated", "UNHEALTHY"),
            ],
            ..Default::default()
        };
        assert_eq!(progress(&g), (3, 1, 2));
        let v = group_view(g);
        assert_eq!(v.in_service, 1);
        let t = crate::output::render_table(GroupView::headers(), &[v.row()]);
        assert!(
            t.lines().nth(1).unwrap_or_default().starts_with("web"),
            "{t}"
        );
    }
}
