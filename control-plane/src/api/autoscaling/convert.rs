//! Domain -> proto conversions of the AutoScaling service's answers.

use nubis_proto::autoscaling::v1 as pb;

use crate::domain::autoscaling::policies::ScalingPolicy;
use crate::domain::autoscaling::scheduled::ScheduledAction;
use crate::domain::autoscaling::templates::LaunchTemplate;
use crate::domain::autoscaling::{Activity, AutoScalingGroup, GroupInstance};
use crate::domain::Domain;

pub(super) fn template_out(t: &LaunchTemplate) -> pb::LaunchTemplate {
    pb::LaunchTemplate {
        launch_template_id: t.id.to_string(),
        launch_template_name: t.name.clone(),
        default_version: t.default_version,
        latest_version: t.latest_version,
        created_ms: t.created_ms,
    }
}

pub(super) fn instance_out(gi: &GroupInstance) -> pb::GroupInstance {
    let i = &gi.instance;
    pb::GroupInstance {
        instance_id: i.id.to_string(),
        auto_scaling_group_name: gi.group.clone(),
        instance_type: i.instance_type.clone(),
        availability_zone: i.availability_zone.clone(),
        lifecycle_state: gi.lifecycle.to_string(),
        health_status: if gi.healthy { "HEALTHY" } else { "UNHEALTHY" }.to_string(),
        protected_from_scale_in: gi.protected,
        state: i.state.name().to_string(),
        private_ip_address: i.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default(),
    }
}

pub(super) fn group_out(
    d: &Domain,
    g: &AutoScalingGroup,
    instances: Vec<GroupInstance>,
) -> pb::AutoScalingGroup {
    pb::AutoScalingGroup {
        auto_scaling_group_name: g.name.clone(),
        auto_scaling_group_arn: d.group_arn(g),
        launch_template_id: g.template.id.to_string(),
        launch_template_name: g.template.name.clone(),
        launch_template_version: g.template.version.clone(),
        min_size: g.min_size,
        max_size: g.max_size,
        desired_capacity: g.desired,
        default_cooldown: g.default_cooldown,
        availability_zones: g.zones.clone(),
        health_check_grace_period: g.grace_seconds,
        instances: instances.iter().map(instance_out).collect(),
        created_ms: g.created_ms,
        suspended_processes: g.suspended.iter().cloned().collect(),
        tags: g
            .tags
            .iter()
            .map(|t| pb::Tag {
                key: t.key.clone(),
                value: t.value.clone(),
                propagate_at_launch: t.propagate_at_launch,
            })
            .collect(),
        new_instances_protected_from_scale_in: g.protect_new,
        status: if g.deleting {
            "Delete in progress".to_string()
        } else {
            String::new()
        },
    }
}

pub(super) fn activity_out(a: &Activity) -> pb::Activity {
    pb::Activity {
        activity_id: a.id.clone(),
        auto_scaling_group_name: a.group.clone(),
        description: a.description.clone(),
        cause: a.cause.clone(),
        status_code: a.status.as_str().to_string(),
        status_message: a.message.clone(),
        start_ms: a.start_ms,
        end_ms: a.end_ms.unwrap_or(0),
    }
}

pub(super) fn policy_out(d: &Domain, g: &AutoScalingGroup, p: &ScalingPolicy) -> pb::ScalingPolicy {
    pb::ScalingPolicy {
        auto_scaling_group_name: g.name.clone(),
        policy_name: p.name.clone(),
        policy_arn: d.policy_arn(g, p),
        policy_type: p.kind.as_str().to_string(),
        adjustment_type: p
            .adjustment_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        scaling_adjustment: p.scaling_adjustment,
        min_adjustment_magnitude: p.min_adjustment_magnitude,
        cooldown: p.cooldown,
        step_adjustments: p
            .steps
            .iter()
            .map(|s| pb::StepAdjustment {
                metric_interval_lower_bound: s.lower,
                metric_interval_upper_bound: s.upper,
                scaling_adjustment: s.adjustment,
            })
            .collect(),
        metric_aggregation_type: p.metric_aggregation.clone().unwrap_or_default(),
        estimated_instance_warmup: p.warmup,
        predefined_metric_type: p
            .target
            .as_ref()
            .map(|t| t.metric.clone())
            .unwrap_or_default(),
        target_value: p.target.as_ref().map(|t| t.target),
        disable_scale_in: p.target.as_ref().is_some_and(|t| t.disable_scale_in),
        enabled: p.enabled,
    }
}

pub(super) fn scheduled_out(
    d: &Domain,
    g: &AutoScalingGroup,
    a: &ScheduledAction,
) -> pb::ScheduledAction {
    pb::ScheduledAction {
        auto_scaling_group_name: g.name.clone(),
        scheduled_action_name: a.name.clone(),
        scheduled_action_arn: d.scheduled_action_arn(g, a),
        start_ms: a.start_ms.unwrap_or(0),
        end_ms: a.end_ms.unwrap_or(0),
        recurrence: a.recurrence.clone().unwrap_or_default(),
        min_size: a.min_size,
        max_size: a.max_size,
        desired_capacity: a.desired,
        next_ms: a.next_ms,
    }
}
