//! The AutoScaling service: thin handlers over [`crate::domain::autoscaling`],
//! the same domain operations the Query API's `autoscaling` service calls
//! ([`crate::ec2::autoscaling`]). Only proto <-> domain conversions live
//! here (in [`convert`] for the answers).

mod convert;

use std::sync::Arc;

use nubis_proto::autoscaling::v1 as pb;
use nubis_proto::autoscaling::v1::auto_scaling_server::AutoScaling;
use tonic::{Request, Response, Status};

use super::Edge;
use crate::domain::autoscaling::policies::{ExecutePolicyInput, PutPolicyInput, StepAdjustment};
use crate::domain::autoscaling::scheduled::PutScheduledInput;
use crate::domain::autoscaling::templates::{LaunchTemplateData, TemplateRef};
use crate::domain::autoscaling::{CreateGroupInput, GroupTag, UpdateGroupInput};
use crate::domain::Domain;
use convert::{activity_out, group_out, instance_out, policy_out, scheduled_out, template_out};

/// gRPC implementation of `nubis.autoscaling.v1.AutoScaling`.
#[derive(Debug, Clone)]
pub struct AutoScalingApi {
    edge: Edge,
}

impl AutoScalingApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.autoscaling.v1.AutoScaling"),
        }
    }

    fn domain(&self) -> &Domain {
        self.edge.domain()
    }
}

/// A template named by id (`lt-…`) or name.
fn template_ref(s: &str) -> TemplateRef {
    if s.starts_with("lt-") {
        TemplateRef::Id(s.to_string())
    } else {
        TemplateRef::Name(s.to_string())
    }
}

/// A group's template: absent when the spec names none.
fn template_spec(t: Option<pb::TemplateSpec>) -> Option<(TemplateRef, Option<String>)> {
    let t = t?;
    if t.launch_template.is_empty() {
        return None;
    }
    let version = (!t.version.is_empty()).then_some(t.version);
    Some((template_ref(&t.launch_template), version))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn names(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|s| !s.is_empty()).collect()
}

#[tonic::async_trait]
impl AutoScaling for AutoScalingApi {
    async fn create_launch_template(
        &self,
        req: Request<pb::CreateLaunchTemplateRequest>,
    ) -> Result<Response<pb::CreateLaunchTemplateResponse>, Status> {
        self.edge
            .call(req, "CreateLaunchTemplate", |caller, r| async move {
                let data = LaunchTemplateData {
                    image_id: opt(r.image_id),
                    instance_type: opt(r.instance_type),
                    key_name: opt(r.key_name),
                    user_data: (!r.user_data.is_empty()).then_some(r.user_data),
                    security_group_ids: Vec::new(),
                    tags: r.tags.into_iter().map(|t| (t.key, t.value)).collect(),
                };
                let (t, _) = self
                    .domain()
                    .create_launch_template(&caller, &r.launch_template_name, &r.description, data)
                    .await?;
                Ok(pb::CreateLaunchTemplateResponse {
                    launch_template: Some(template_out(&t)),
                })
            })
            .await
    }

    async fn describe_launch_templates(
        &self,
        req: Request<pb::DescribeLaunchTemplatesRequest>,
    ) -> Result<Response<pb::DescribeLaunchTemplatesResponse>, Status> {
        self.edge
            .call(req, "DescribeLaunchTemplates", |caller, r| async move {
                let refs: Vec<TemplateRef> = names(r.launch_templates)
                    .iter()
                    .map(|s| template_ref(s))
                    .collect();
                let list = self
                    .domain()
                    .describe_launch_templates(&caller, &refs)
                    .await?;
                Ok(pb::DescribeLaunchTemplatesResponse {
                    launch_templates: list.iter().map(template_out).collect(),
                })
            })
            .await
    }

    async fn delete_launch_template(
        &self,
        req: Request<pb::DeleteLaunchTemplateRequest>,
    ) -> Result<Response<pb::DeleteLaunchTemplateResponse>, Status> {
        self.edge
            .call(req, "DeleteLaunchTemplate", |caller, r| async move {
                let t = self
                    .domain()
                    .delete_launch_template(&caller, &template_ref(&r.launch_template))
                    .await?;
                Ok(pb::DeleteLaunchTemplateResponse {
                    launch_template: Some(template_out(&t)),
                })
            })
            .await
    }

    async fn create_auto_scaling_group(
        &self,
        req: Request<pb::CreateAutoScalingGroupRequest>,
    ) -> Result<Response<pb::CreateAutoScalingGroupResponse>, Status> {
        self.edge
            .call(req, "CreateAutoScalingGroup", |caller, r| async move {
                let (template, version) = match template_spec(r.launch_template) {
                    Some((t, v)) => (Some(t), v),
                    None => (None, None),
                };
                let input = CreateGroupInput {
                    name: r.auto_scaling_group_name,
                    template,
                    version,
                    min_size: r.min_size,
                    max_size: r.max_size,
                    desired: r.desired_capacity,
                    zones: r.availability_zones,
                    vpc_zone_identifier: None,
                    grace_seconds: r.health_check_grace_period,
                    tags: r
                        .tags
                        .into_iter()
                        .map(|t| GroupTag {
                            key: t.key,
                            value: t.value,
                            propagate_at_launch: t.propagate_at_launch,
                        })
                        .collect(),
                    protect_new: r.new_instances_protected_from_scale_in,
                    default_cooldown: r.default_cooldown,
                };
                let d = self.domain();
                let g = d.create_auto_scaling_group(&caller, input).await?;
                Ok(pb::CreateAutoScalingGroupResponse {
                    group: Some(group_out(d, &g, Vec::new())),
                })
            })
            .await
    }

    async fn update_auto_scaling_group(
        &self,
        req: Request<pb::UpdateAutoScalingGroupRequest>,
    ) -> Result<Response<pb::UpdateAutoScalingGroupResponse>, Status> {
        self.edge
            .call(req, "UpdateAutoScalingGroup", |caller, r| async move {
                let input = UpdateGroupInput {
                    name: r.auto_scaling_group_name,
                    min_size: r.min_size,
                    max_size: r.max_size,
                    desired: r.desired_capacity,
                    zones: (!r.availability_zones.is_empty()).then_some(r.availability_zones),
                    grace_seconds: r.health_check_grace_period,
                    template: template_spec(r.launch_template),
                    protect_new: r.new_instances_protected_from_scale_in,
                    default_cooldown: r.default_cooldown,
                };
                let d = self.domain();
                let g = d.update_auto_scaling_group(&caller, input).await?;
                Ok(pb::UpdateAutoScalingGroupResponse {
                    group: Some(group_out(d, &g, Vec::new())),
                })
            })
            .await
    }

    async fn describe_auto_scaling_groups(
        &self,
        req: Request<pb::DescribeAutoScalingGroupsRequest>,
    ) -> Result<Response<pb::DescribeAutoScalingGroupsResponse>, Status> {
        self.edge
            .call(req, "DescribeAutoScalingGroups", |caller, r| async move {
                let d = self.domain();
                let wanted = names(r.auto_scaling_group_names);
                let groups = d
                    .describe_groups_with_instances(&caller, &wanted)
                    .await?
                    .into_iter()
                    .map(|(g, insts)| group_out(d, &g, insts))
                    .collect();
                Ok(pb::DescribeAutoScalingGroupsResponse { groups })
            })
            .await
    }

    async fn delete_auto_scaling_group(
        &self,
        req: Request<pb::DeleteAutoScalingGroupRequest>,
    ) -> Result<Response<pb::DeleteAutoScalingGroupResponse>, Status> {
        self.edge
            .call(req, "DeleteAutoScalingGroup", |caller, r| async move {
                self.domain()
                    .delete_auto_scaling_group(&caller, &r.auto_scaling_group_name, r.force_delete)
                    .await?;
                Ok(pb::DeleteAutoScalingGroupResponse {})
            })
            .await
    }

    async fn set_desired_capacity(
        &self,
        req: Request<pb::SetDesiredCapacityRequest>,
    ) -> Result<Response<pb::SetDesiredCapacityResponse>, Status> {
        self.edge
            .call(req, "SetDesiredCapacity", |caller, r| async move {
                self.domain()
                    .set_desired_capacity_honoring(
                        &caller,
                        &r.auto_scaling_group_name,
                        r.desired_capacity,
                        r.honor_cooldown,
                    )
                    .await?;
                Ok(pb::SetDesiredCapacityResponse {})
            })
            .await
    }

    async fn describe_auto_scaling_instances(
        &self,
        req: Request<pb::DescribeAutoScalingInstancesRequest>,
    ) -> Result<Response<pb::DescribeAutoScalingInstancesResponse>, Status> {
        self.edge
            .call(
                req,
                "DescribeAutoScalingInstances",
                |caller, r| async move {
                    let list = self
                        .domain()
                        .describe_auto_scaling_instances(&caller, &names(r.instance_ids))
                        .await?;
                    Ok(pb::DescribeAutoScalingInstancesResponse {
                        instances: list.iter().map(instance_out).collect(),
                    })
                },
            )
            .await
    }

    async fn terminate_instance_in_auto_scaling_group(
        &self,
        req: Request<pb::TerminateInstanceInAutoScalingGroupRequest>,
    ) -> Result<Response<pb::TerminateInstanceInAutoScalingGroupResponse>, Status> {
        self.edge
            .call(
                req,
                "TerminateInstanceInAutoScalingGroup",
                |caller, r| async move {
                    let a = self
                        .domain()
                        .terminate_instance_in_group(
                            &caller,
                            &r.instance_id,
                            r.should_decrement_desired_capacity,
                        )
                        .await?;
                    Ok(pb::TerminateInstanceInAutoScalingGroupResponse {
                        activity: Some(activity_out(&a)),
                    })
                },
            )
            .await
    }

    async fn set_instance_protection(
        &self,
        req: Request<pb::SetInstanceProtectionRequest>,
    ) -> Result<Response<pb::SetInstanceProtectionResponse>, Status> {
        self.edge
            .call(req, "SetInstanceProtection", |caller, r| async move {
                let ids = names(r.instance_ids);
                if ids.is_empty() {
                    return Err(crate::domain::autoscaling::validation_error(
                        "InstanceIds must name at least one instance",
                    ));
                }
                self.domain()
                    .set_instance_protection(
                        &caller,
                        &r.auto_scaling_group_name,
                        &ids,
                        r.protected_from_scale_in,
                    )
                    .await?;
                Ok(pb::SetInstanceProtectionResponse {})
            })
            .await
    }

    async fn describe_scaling_activities(
        &self,
        req: Request<pb::DescribeScalingActivitiesRequest>,
    ) -> Result<Response<pb::DescribeScalingActivitiesResponse>, Status> {
        self.edge
            .call(req, "DescribeScalingActivities", |caller, r| async move {
                let max = match r.max_records {
                    0 => 100,
                    n => n.min(100) as usize,
                };
                let group = opt(r.auto_scaling_group_name);
                let list = self
                    .domain()
                    .describe_scaling_activities(&caller, group.as_deref(), max)
                    .await?;
                Ok(pb::DescribeScalingActivitiesResponse {
                    activities: list.iter().map(activity_out).collect(),
                })
            })
            .await
    }

    async fn put_scaling_policy(
        &self,
        req: Request<pb::PutScalingPolicyRequest>,
    ) -> Result<Response<pb::PutScalingPolicyResponse>, Status> {
        self.edge
            .call(req, "PutScalingPolicy", |caller, r| async move {
                let input = PutPolicyInput {
                    group: r.auto_scaling_group_name,
                    name: r.policy_name,
                    policy_type: opt(r.policy_type),
                    adjustment_type: opt(r.adjustment_type),
                    scaling_adjustment: r.scaling_adjustment,
                    min_adjustment_magnitude: r.min_adjustment_magnitude,
                    cooldown: r.cooldown,
                    steps: r
                        .step_adjustments
                        .into_iter()
                        .map(|s| StepAdjustment {
                            lower: s.metric_interval_lower_bound,
                            upper: s.metric_interval_upper_bound,
                            adjustment: s.scaling_adjustment,
                        })
                        .collect(),
                    metric_aggregation: opt(r.metric_aggregation_type),
                    warmup: r.estimated_instance_warmup,
                    target_metric: opt(r.predefined_metric_type),
                    target_value: r.target_value,
                    disable_scale_in: r.disable_scale_in.then_some(true),
                    customized_metric: false,
                    enabled: r.enabled,
                };
                let arn = self.domain().put_scaling_policy(&caller, input).await?;
                Ok(pb::PutScalingPolicyResponse { policy_arn: arn })
            })
            .await
    }

    async fn describe_policies(
        &self,
        req: Request<pb::DescribePoliciesRequest>,
    ) -> Result<Response<pb::DescribePoliciesResponse>, Status> {
        self.edge
            .call(req, "DescribePolicies", |caller, r| async move {
                let d = self.domain();
                let group = opt(r.auto_scaling_group_name);
                let list = d
                    .describe_policies(
                        &caller,
                        group.as_deref(),
                        &names(r.policy_names),
                        &names(r.policy_types),
                    )
                    .await?;
                Ok(pb::DescribePoliciesResponse {
                    policies: list.iter().map(|(g, p)| policy_out(d, g, p)).collect(),
                })
            })
            .await
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        self.edge
            .call(req, "DeletePolicy", |caller, r| async move {
                let group = opt(r.auto_scaling_group_name);
                self.domain()
                    .delete_policy(&caller, group.as_deref(), &r.policy_name)
                    .await?;
                Ok(pb::DeletePolicyResponse {})
            })
            .await
    }

    async fn execute_policy(
        &self,
        req: Request<pb::ExecutePolicyRequest>,
    ) -> Result<Response<pb::ExecutePolicyResponse>, Status> {
        self.edge
            .call(req, "ExecutePolicy", |caller, r| async move {
                let input = ExecutePolicyInput {
                    group: opt(r.auto_scaling_group_name),
                    policy: r.policy_name,
                    honor_cooldown: r.honor_cooldown,
                    metric_value: r.metric_value,
                    breach_threshold: r.breach_threshold,
                };
                self.domain().execute_policy(&caller, input).await?;
                Ok(pb::ExecutePolicyResponse {})
            })
            .await
    }

    async fn put_scheduled_update_group_action(
        &self,
        req: Request<pb::PutScheduledUpdateGroupActionRequest>,
    ) -> Result<Response<pb::PutScheduledUpdateGroupActionResponse>, Status> {
        self.edge
            .call(
                req,
                "PutScheduledUpdateGroupAction",
                |caller, r| async move {
                    let input = PutScheduledInput {
                        group: r.auto_scaling_group_name,
                        name: r.scheduled_action_name,
                        start_ms: r.start_ms,
                        end_ms: r.end_ms,
                        recurrence: opt(r.recurrence),
                        min_size: r.min_size,
                        max_size: r.max_size,
                        desired: r.desired_capacity,
                        time_zone: opt(r.time_zone),
                    };
                    self.domain().put_scheduled_action(&caller, input).await?;
                    Ok(pb::PutScheduledUpdateGroupActionResponse {})
                },
            )
            .await
    }

    async fn describe_scheduled_actions(
        &self,
        req: Request<pb::DescribeScheduledActionsRequest>,
    ) -> Result<Response<pb::DescribeScheduledActionsResponse>, Status> {
        self.edge
            .call(req, "DescribeScheduledActions", |caller, r| async move {
                let d = self.domain();
                let group = opt(r.auto_scaling_group_name);
                let list = d
                    .describe_scheduled_actions(
                        &caller,
                        group.as_deref(),
                        &names(r.scheduled_action_names),
                        None,
                        None,
                    )
                    .await?;
                Ok(pb::DescribeScheduledActionsResponse {
                    actions: list.iter().map(|(g, a)| scheduled_out(d, g, a)).collect(),
                })
            })
            .await
    }

    async fn delete_scheduled_action(
        &self,
        req: Request<pb::DeleteScheduledActionRequest>,
    ) -> Result<Response<pb::DeleteScheduledActionResponse>, Status> {
        self.edge
            .call(req, "DeleteScheduledAction", |caller, r| async move {
                self.domain()
                    .delete_scheduled_action(
                        &caller,
                        &r.auto_scaling_group_name,
                        &r.scheduled_action_name,
                    )
                    .await?;
                Ok(pb::DeleteScheduledActionResponse {})
            })
            .await
    }
}
