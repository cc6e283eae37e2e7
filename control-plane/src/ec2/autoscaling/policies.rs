//! The Auto Scaling API's scaling policy and scheduled action actions:
//! PutScalingPolicy, DescribePolicies, DeletePolicy, ExecutePolicy,
//! PutScheduledUpdateGroupAction, DescribeScheduledActions,
//! DeleteScheduledAction. Owns their forms and XML; the rules are the
//! domain's ([`crate::domain::autoscaling::policies`],
//! [`crate::domain::autoscaling::scheduled`]).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{time_ms, validation, Doc, MAX_LIST};
use crate::domain::autoscaling::policies::{
    ExecutePolicyInput, PutPolicyInput, ScalingPolicy, StepAdjustment,
};
use crate::domain::autoscaling::scheduled::{PutScheduledInput, ScheduledAction};
use crate::domain::autoscaling::AutoScalingGroup;
use crate::domain::{Caller, Domain};
use crate::ec2::error::Ec2Error;
use crate::ec2::query::Reader;

fn int(r: &mut Reader, key: &str) -> Result<Option<i32>, Ec2Error> {
    match r.opt(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i32>()
            .map(Some)
            .map_err(|_| validation(format!("{key} must be an integer, not '{v}'"))),
    }
}

fn float(r: &mut Reader, key: &str) -> Result<Option<f64>, Ec2Error> {
    match r.opt(key) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(validation(format!("{key} must be a number, not '{v}'"))),
        },
    }
}

fn seconds(r: &mut Reader, key: &str) -> Result<Option<u32>, Ec2Error> {
    r.int(key, 0, 86_400).map_err(|e| validation(e.message))
}

fn timestamp(r: &mut Reader, key: &str) -> Result<Option<i64>, Ec2Error> {
    match r.opt(key) {
        None => Ok(None),
        Some(v) => OffsetDateTime::parse(v.trim(), &Rfc3339)
            .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .map_err(|_| {
                validation(format!(
                    "{key} must be an ISO 8601 time such as 2026-12-24T09:00:00Z, not '{v}'"
                ))
            }),
    }
}

fn steps(r: &mut Reader) -> Result<Vec<StepAdjustment>, Ec2Error> {
    let idx = r.indices("StepAdjustments.member")?;
    if idx.len() > 20 {
        return Err(validation("At most 20 StepAdjustments may be given"));
    }
    let mut out = Vec::new();
    for n in idx {
        let p = format!("StepAdjustments.member.{n}");
        out.push(StepAdjustment {
            lower: float(r, &format!("{p}.MetricIntervalLowerBound"))?,
            upper: float(r, &format!("{p}.MetricIntervalUpperBound"))?,
            adjustment: int(r, &format!("{p}.ScalingAdjustment"))?
                .ok_or_else(|| validation(format!("{p}.ScalingAdjustment is required")))?,
        });
    }
    Ok(out)
}

fn size(r: &mut Reader, key: &str) -> Result<Option<u32>, Ec2Error> {
    super::size(r, key)
}

/// Performs `action` if it is one of this module's; `None` otherwise.
pub(super) async fn dispatch(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    action: &str,
    r: &mut Reader,
) -> Result<Option<String>, Ec2Error> {
    Ok(Some(match action {
        "PutScalingPolicy" => {
            const TT: &str = "TargetTrackingConfiguration";
            let customized = !r
                .take_prefix(&format!("{TT}.CustomizedMetricSpecification."))
                .is_empty();
            r.opt(&format!("{TT}.PredefinedMetricSpecification.ResourceLabel"));
            let magnitude = match int(r, "MinAdjustmentMagnitude")? {
                Some(m) => Some(m),
                None => int(r, "MinAdjustmentStep")?,
            };
            let input = PutPolicyInput {
                group: r.required("AutoScalingGroupName")?,
                name: r.required("PolicyName")?,
                policy_type: r.opt("PolicyType"),
                adjustment_type: r.opt("AdjustmentType"),
                scaling_adjustment: int(r, "ScalingAdjustment")?,
                min_adjustment_magnitude: magnitude,
                cooldown: seconds(r, "Cooldown")?,
                steps: steps(r)?,
                metric_aggregation: r.opt("MetricAggregationType"),
                warmup: seconds(r, "EstimatedInstanceWarmup")?,
                target_metric: r.opt(&format!(
                    "{TT}.PredefinedMetricSpecification.PredefinedMetricType"
                )),
                target_value: float(r, &format!("{TT}.TargetValue"))?,
                disable_scale_in: r.bool(&format!("{TT}.DisableScaleIn"))?,
                customized_metric: customized,
                enabled: r.bool("Enabled")?,
            };
            let arn = d.put_scaling_policy(caller, input).await?;
            let mut doc = Doc::new("PutScalingPolicy", true);
            doc.leaf("PolicyARN", arn);
            doc.members("Alarms", Vec::<()>::new(), |_, _| {});
            doc.finish(rid)
        }
        "DescribePolicies" => {
            let group = r.opt("AutoScalingGroupName");
            let names = r.list("PolicyNames.member", MAX_LIST)?;
            let types = r.list("PolicyTypes.member", 10)?;
            let max = r.int("MaxRecords", 1, 100)?.unwrap_or(100) as usize;
            r.opt("NextToken");
            let mut list = d
                .describe_policies(caller, group.as_deref(), &names, &types)
                .await?;
            list.truncate(max);
            let mut doc = Doc::new("DescribePolicies", true);
            doc.members("ScalingPolicies", list, |w, (g, p)| {
                policy_xml(w, d, &g, &p)
            });
            doc.finish(rid)
        }
        "DeletePolicy" => {
            let group = r.opt("AutoScalingGroupName");
            let name = r.required("PolicyName")?;
            d.delete_policy(caller, group.as_deref(), &name).await?;
            Doc::new("DeletePolicy", false).finish(rid)
        }
        "ExecutePolicy" => {
            let input = ExecutePolicyInput {
                group: r.opt("AutoScalingGroupName"),
                policy: r.required("PolicyName")?,
                honor_cooldown: r.bool("HonorCooldown")?.unwrap_or(false),
                metric_value: float(r, "MetricValue")?,
                breach_threshold: float(r, "BreachThreshold")?,
            };
            d.execute_policy(caller, input).await?;
            Doc::new("ExecutePolicy", false).finish(rid)
        }
        "PutScheduledUpdateGroupAction" => {
            let start = match timestamp(r, "StartTime")? {
                Some(s) => Some(s),
                None => timestamp(r, "Time")?,
            };
            let input = PutScheduledInput {
                group: r.required("AutoScalingGroupName")?,
                name: r.required("ScheduledActionName")?,
                start_ms: start,
                end_ms: timestamp(r, "EndTime")?,
                recurrence: r.opt("Recurrence"),
                min_size: size(r, "MinSize")?,
                max_size: size(r, "MaxSize")?,
                desired: size(r, "DesiredCapacity")?,
                time_zone: r.opt("TimeZone"),
            };
            d.put_scheduled_action(caller, input).await?;
            Doc::new("PutScheduledUpdateGroupAction", false).finish(rid)
        }
        "DescribeScheduledActions" => {
            let group = r.opt("AutoScalingGroupName");
            let names = r.list("ScheduledActionNames.member", MAX_LIST)?;
            let from = timestamp(r, "StartTime")?;
            let to = timestamp(r, "EndTime")?;
            let max = r.int("MaxRecords", 1, 100)?.unwrap_or(100) as usize;
            r.opt("NextToken");
            let mut list = d
                .describe_scheduled_actions(caller, group.as_deref(), &names, from, to)
                .await?;
            list.truncate(max);
            let mut doc = Doc::new("DescribeScheduledActions", true);
            doc.members("ScheduledUpdateGroupActions", list, |w, (g, a)| {
                scheduled_xml(w, d, &g, &a)
            });
            doc.finish(rid)
        }
        "DeleteScheduledAction" => {
            let group = r.required("AutoScalingGroupName")?;
            let name = r.required("ScheduledActionName")?;
            d.delete_scheduled_action(caller, &group, &name).await?;
            Doc::new("DeleteScheduledAction", false).finish(rid)
        }
        _ => return Ok(None),
    }))
}

fn policy_xml(w: &mut Doc, d: &Domain, g: &AutoScalingGroup, p: &ScalingPolicy) {
    w.leaf("AutoScalingGroupName", &g.name);
    w.leaf("PolicyName", &p.name);
    w.leaf("PolicyARN", d.policy_arn(g, p));
    w.leaf("PolicyType", p.kind.as_str());
    if let Some(t) = p.adjustment_type {
        w.leaf("AdjustmentType", t.as_str());
    }
    if let Some(a) = p.scaling_adjustment {
        w.leaf("ScalingAdjustment", a);
    }
    if let Some(m) = p.min_adjustment_magnitude {
        w.leaf("MinAdjustmentMagnitude", m);
    }
    if let Some(c) = p.cooldown {
        w.leaf("Cooldown", c);
    }
    if !p.steps.is_empty() {
        w.members("StepAdjustments", &p.steps, |w, s| {
            if let Some(l) = s.lower {
                w.leaf("MetricIntervalLowerBound", l);
            }
            if let Some(u) = s.upper {
                w.leaf("MetricIntervalUpperBound", u);
            }
            w.leaf("ScalingAdjustment", s.adjustment);
        });
    }
    if let Some(a) = &p.metric_aggregation {
        w.leaf("MetricAggregationType", a);
    }
    if let Some(s) = p.warmup {
        w.leaf("EstimatedInstanceWarmup", s);
    }
    w.members("Alarms", Vec::<()>::new(), |_, _| {});
    if let Some(t) = &p.target {
        w.elem("TargetTrackingConfiguration", |w| {
            w.elem("PredefinedMetricSpecification", |w| {
                w.leaf("PredefinedMetricType", &t.metric)
            });
            w.leaf("TargetValue", t.target);
            w.leaf("DisableScaleIn", t.disable_scale_in);
        });
    }
    w.leaf("Enabled", p.enabled);
}

fn scheduled_xml(w: &mut Doc, d: &Domain, g: &AutoScalingGroup, a: &ScheduledAction) {
    w.leaf("AutoScalingGroupName", &g.name);
    w.leaf("ScheduledActionName", &a.name);
    w.leaf("ScheduledActionARN", d.scheduled_action_arn(g, a));
    w.leaf("Time", time_ms(a.next_ms));
    w.leaf("StartTime", time_ms(a.next_ms));
    if let Some(e) = a.end_ms {
        w.leaf("EndTime", time_ms(e));
    }
    if let Some(r) = &a.recurrence {
        w.leaf("Recurrence", r);
    }
    if let Some(v) = a.min_size {
        w.leaf("MinSize", v);
    }
    if let Some(v) = a.max_size {
        w.leaf("MaxSize", v);
    }
    if let Some(v) = a.desired {
        w.leaf("DesiredCapacity", v);
    }
    w.leaf("TimeZone", "Etc/UTC");
}
