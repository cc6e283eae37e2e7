//! Scaling policies of Auto Scaling groups: the policy record (kept in the
//! group record, so a policy's effect and the group's new capacity commit
//! together), the validation of PutScalingPolicy's input, and the capacity
//! arithmetic of simple, step and target tracking policies. The API
//! operations are in [`super::policy_api`], target tracking's evaluation
//! by the controller in [`super::tracking`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::autoscaling::validation_error;
use crate::error::Result;

/// Most scaling policies of one group (EC2's quota).
pub const MAX_POLICIES: usize = 50;

/// The one predefined metric Nubis tracks.
pub const CPU_METRIC: &str = "ASGAverageCPUUtilization";

/// EC2's default cooldown and warm-up (seconds) when neither the policy
/// nor the group names one.
pub const DEFAULT_COOLDOWN: u32 = 300;

/// Window of the metric a scale-out is decided on.
pub const SCALE_OUT_WINDOW: Duration = Duration::from_secs(60);
/// Window of the metric a scale-in is decided on (longer: scale-in is the
/// conservative direction).
pub const SCALE_IN_WINDOW: Duration = Duration::from_secs(300);

/// A policy's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    /// SimpleScaling.
    SimpleScaling,
    /// StepScaling.
    StepScaling,
    /// TargetTrackingScaling.
    TargetTrackingScaling,
}

impl PolicyType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimpleScaling => "SimpleScaling",
            Self::StepScaling => "StepScaling",
            Self::TargetTrackingScaling => "TargetTrackingScaling",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "SimpleScaling" => Ok(Self::SimpleScaling),
            "StepScaling" => Ok(Self::StepScaling),
            "TargetTrackingScaling" => Ok(Self::TargetTrackingScaling),
            "PredictiveScaling" => Err(validation_error(
                "PolicyType PredictiveScaling is not supported",
            )),
            other => Err(validation_error(format!(
                "PolicyType must be SimpleScaling, StepScaling or TargetTrackingScaling, not {other}"
            ))),
        }
    }
}

/// How a simple or step policy's adjustment is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustmentType {
    /// Add the adjustment to the capacity.
    ChangeInCapacity,
    /// Set the capacity to the adjustment.
    ExactCapacity,
    /// Change the capacity by the adjustment in percent.
    PercentChangeInCapacity,
}

impl AdjustmentType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChangeInCapacity => "ChangeInCapacity",
            Self::ExactCapacity => "ExactCapacity",
            Self::PercentChangeInCapacity => "PercentChangeInCapacity",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ChangeInCapacity" => Ok(Self::ChangeInCapacity),
            "ExactCapacity" => Ok(Self::ExactCapacity),
            "PercentChangeInCapacity" => Ok(Self::PercentChangeInCapacity),
            other => Err(validation_error(format!(
                "AdjustmentType must be ChangeInCapacity, ExactCapacity or PercentChangeInCapacity, not {other}"
            ))),
        }
    }
}

/// One step of a step scaling policy: bounds relative to the breach
/// threshold (absent = infinity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepAdjustment {
    /// MetricIntervalLowerBound.
    pub lower: Option<f64>,
    /// MetricIntervalUpperBound.
    pub upper: Option<f64>,
    /// ScalingAdjustment.
    pub adjustment: i32,
}

/// A target tracking configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTracking {
    /// PredefinedMetricType (only [`CPU_METRIC`]).
    pub metric: String,
    /// TargetValue.
    pub target: f64,
    /// DisableScaleIn.
    #[serde(default)]
    pub disable_scale_in: bool,
}

/// A scaling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// PolicyName (unique within the group).
    pub name: String,
    /// A random id fixed at creation (in the ARN).
    pub uid: String,
    /// PolicyType.
    pub kind: PolicyType,
    /// AdjustmentType (simple, step).
    #[serde(default)]
    pub adjustment_type: Option<AdjustmentType>,
    /// ScalingAdjustment (simple).
    #[serde(default)]
    pub scaling_adjustment: Option<i32>,
    /// MinAdjustmentMagnitude (PercentChangeInCapacity).
    #[serde(default)]
    pub min_adjustment_magnitude: Option<u32>,
    /// Cooldown (simple; absent: the group's DefaultCooldown).
    #[serde(default)]
    pub cooldown: Option<u32>,
    /// StepAdjustments (step), ascending.
    #[serde(default)]
    pub steps: Vec<StepAdjustment>,
    /// MetricAggregationType (step).
    #[serde(default)]
    pub metric_aggregation: Option<String>,
    /// EstimatedInstanceWarmup (step, target tracking).
    #[serde(default)]
    pub warmup: Option<u32>,
    /// TargetTrackingConfiguration.
    #[serde(default)]
    pub target: Option<TargetTracking>,
    /// Enabled.
    pub enabled: bool,
}

/// PutScalingPolicy's input (absent = not given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutPolicyInput {
    /// AutoScalingGroupName.
    pub group: String,
    /// PolicyName.
    pub name: String,
    /// PolicyType (default SimpleScaling).
    pub policy_type: Option<String>,
    /// AdjustmentType.
    pub adjustment_type: Option<String>,
    /// ScalingAdjustment.
    pub scaling_adjustment: Option<i32>,
    /// MinAdjustmentMagnitude.
    pub min_adjustment_magnitude: Option<i32>,
    /// Cooldown.
    pub cooldown: Option<u32>,
    /// StepAdjustments.
    pub steps: Vec<StepAdjustment>,
    /// MetricAggregationType.
    pub metric_aggregation: Option<String>,
    /// EstimatedInstanceWarmup.
    pub warmup: Option<u32>,
    /// TargetTrackingConfiguration.PredefinedMetricSpecification.PredefinedMetricType.
    pub target_metric: Option<String>,
    /// TargetTrackingConfiguration.TargetValue.
    pub target_value: Option<f64>,
    /// TargetTrackingConfiguration.DisableScaleIn.
    pub disable_scale_in: Option<bool>,
    /// TargetTrackingConfiguration had a CustomizedMetricSpecification.
    pub customized_metric: bool,
    /// Enabled (default true).
    pub enabled: Option<bool>,
}

/// ExecutePolicy's input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutePolicyInput {
    /// AutoScalingGroupName (may be absent when the policy is named by ARN).
    pub group: Option<String>,
    /// PolicyName or ARN.
    pub policy: String,
    /// HonorCooldown (simple scaling).
    pub honor_cooldown: bool,
    /// MetricValue (step scaling).
    pub metric_value: Option<f64>,
    /// BreachThreshold (step scaling).
    pub breach_threshold: Option<f64>,
}

/// Capacity after a simple or step adjustment of `current` (EC2's
/// rounding for percentages: magnitudes above 1 round toward zero, between
/// 0 and 1 away from it; then at least MinAdjustmentMagnitude), not yet
/// bounded by MinSize/MaxSize.
pub fn adjusted_capacity(
    current: u32,
    kind: AdjustmentType,
    adjustment: i32,
    min_magnitude: Option<u32>,
) -> i64 {
    let cur = i64::from(current);
    match kind {
        AdjustmentType::ChangeInCapacity => cur + i64::from(adjustment),
        AdjustmentType::ExactCapacity => i64::from(adjustment),
        AdjustmentType::PercentChangeInCapacity => {
            let raw = cur as f64 * f64::from(adjustment) / 100.0;
            let mut change = if raw > 0.0 && raw < 1.0 {
                1
            } else if raw < 0.0 && raw > -1.0 {
                -1
            } else {
                raw.trunc() as i64
            };
            if let Some(m) = min_magnitude {
                let m = i64::from(m);
                if change != 0 && change.abs() < m {
                    change = change.signum() * m;
                }
            }
            cur + change
        }
    }
}

/// The step whose interval holds `diff` (metric value minus breach
/// threshold): above the threshold lower bounds are inclusive, below it
/// upper bounds are (as EC2).
pub fn step_for(steps: &[StepAdjustment], diff: f64) -> Option<&StepAdjustment> {
    steps.iter().find(|s| {
        let lo = s.lower.unwrap_or(f64::NEG_INFINITY);
        let hi = s.upper.unwrap_or(f64::INFINITY);
        if diff >= 0.0 {
            lo <= diff && diff < hi
        } else {
            lo < diff && diff <= hi
        }
    })
}

/// Target tracking's capacity: the load measured on the warmed-up
/// instances (their count times the metric) over the target, rounded up so
/// the metric ends at or below the target. Instances still warming up are
/// part of that capacity, not added to it.
pub fn tracking_capacity(warmed: usize, metric: f64, target: f64) -> u64 {
    let want = (warmed as f64 * metric / target).ceil();
    if want.is_finite() && want > 0.0 {
        want.min(1e9) as u64
    } else {
        0
    }
}

fn check_policy_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == ':') {
        return Err(validation_error(
            "PolicyName must be 1 to 255 printable characters without ':'",
        ));
    }
    Ok(())
}

fn check_steps(steps: &[StepAdjustment], kind: AdjustmentType) -> Result<()> {
    if steps.is_empty() {
        return Err(validation_error(
            "StepAdjustments are required for a StepScaling policy",
        ));
    }
    if steps.len() > 20 {
        return Err(validation_error("At most 20 StepAdjustments may be given"));
    }
    let mut sorted: Vec<StepAdjustment> = steps.to_vec();
    sorted.sort_by(|a, b| {
        a.lower
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&b.lower.unwrap_or(f64::NEG_INFINITY))
    });
    for (i, s) in sorted.iter().enumerate() {
        for b in [s.lower, s.upper].into_iter().flatten() {
            if !b.is_finite() {
                return Err(validation_error("Step bounds must be finite numbers"));
            }
        }
        if let (Some(l), Some(u)) = (s.lower, s.upper) {
            if l >= u {
                return Err(validation_error(format!(
                    "A step's MetricIntervalLowerBound ({l}) must be less than its MetricIntervalUpperBound ({u})"
                )));
            }
        }
        if s.lower.is_none() && i != 0 {
            return Err(validation_error(
                "Only one StepAdjustment may have no MetricIntervalLowerBound",
            ));
        }
        if s.upper.is_none() && i + 1 != sorted.len() {
            return Err(validation_error(
                "Only one StepAdjustment may have no MetricIntervalUpperBound, and it must be the highest",
            ));
        }
        if let Some(next) = sorted.get(i + 1) {
            if s.upper != next.lower {
                return Err(validation_error(
                    "The ranges of StepAdjustments must not overlap or leave a gap",
                ));
            }
        }
        if kind == AdjustmentType::ExactCapacity && s.adjustment < 0 {
            return Err(validation_error(
                "ScalingAdjustment cannot be negative with AdjustmentType ExactCapacity",
            ));
        }
    }
    Ok(())
}

/// Builds a policy from its input (every rule of the API's validation).
pub(crate) fn build_policy(input: &PutPolicyInput, uid: String) -> Result<ScalingPolicy> {
    check_policy_name(&input.name)?;
    let kind = PolicyType::parse(input.policy_type.as_deref().unwrap_or("SimpleScaling"))?;
    let not_for = |what: &str, given: bool| -> Result<()> {
        if given {
            Err(validation_error(format!(
                "{what} is not supported for policy type {}",
                kind.as_str()
            )))
        } else {
            Ok(())
        }
    };
    let adjustment_type = input
        .adjustment_type
        .as_deref()
        .map(AdjustmentType::parse)
        .transpose()?;
    let min_adjustment_magnitude = match input.min_adjustment_magnitude {
        None => None,
        Some(m) if m >= 1 => {
            if adjustment_type != Some(AdjustmentType::PercentChangeInCapacity) {
                return Err(validation_error(
                    "MinAdjustmentMagnitude is only valid with AdjustmentType PercentChangeInCapacity",
                ));
            }
            Some(m as u32)
        }
        Some(m) => {
            return Err(validation_error(format!(
                "MinAdjustmentMagnitude must be at least 1, not {m}"
            )))
        }
    };
    let mut p = ScalingPolicy {
        name: input.name.clone(),
        uid,
        kind,
        adjustment_type,
        scaling_adjustment: None,
        min_adjustment_magnitude,
        cooldown: None,
        steps: Vec::new(),
        metric_aggregation: None,
        warmup: None,
        target: None,
        enabled: input.enabled.unwrap_or(true),
    };
    let has_tt = input.target_metric.is_some()
        || input.target_value.is_some()
        || input.disable_scale_in.is_some()
        || input.customized_metric;
    match kind {
        PolicyType::SimpleScaling => {
            not_for("StepAdjustments", !input.steps.is_empty())?;
            not_for("MetricAggregationType", input.metric_aggregation.is_some())?;
            not_for("EstimatedInstanceWarmup", input.warmup.is_some())?;
            not_for("TargetTrackingConfiguration", has_tt)?;
            let t = adjustment_type.ok_or_else(|| {
                validation_error("AdjustmentType is required for a SimpleScaling policy")
            })?;
            let a = input.scaling_adjustment.ok_or_else(|| {
                validation_error("ScalingAdjustment is required for a SimpleScaling policy")
            })?;
            if t == AdjustmentType::ExactCapacity && a < 0 {
                return Err(validation_error(
                    "ScalingAdjustment cannot be negative with AdjustmentType ExactCapacity",
                ));
            }
            p.scaling_adjustment = Some(a);
            p.cooldown = input.cooldown;
        }
        PolicyType::StepScaling => {
            not_for("ScalingAdjustment", input.scaling_adjustment.is_some())?;
            not_for("Cooldown", input.cooldown.is_some())?;
            not_for("TargetTrackingConfiguration", has_tt)?;
            let t = adjustment_type.ok_or_else(|| {
                validation_error("AdjustmentType is required for a StepScaling policy")
            })?;
            check_steps(&input.steps, t)?;
            let agg = input.metric_aggregation.as_deref().unwrap_or("Average");
            if !["Average", "Minimum", "Maximum"].contains(&agg) {
                return Err(validation_error(format!(
                    "MetricAggregationType must be Average, Minimum or Maximum, not {agg}"
                )));
            }
            let mut steps = input.steps.clone();
            steps.sort_by(|a, b| {
                a.lower
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&b.lower.unwrap_or(f64::NEG_INFINITY))
            });
            p.steps = steps;
            p.metric_aggregation = Some(agg.to_string());
            p.warmup = input.warmup;
        }
        PolicyType::TargetTrackingScaling => {
            not_for("AdjustmentType", input.adjustment_type.is_some())?;
            not_for("ScalingAdjustment", input.scaling_adjustment.is_some())?;
            not_for("Cooldown", input.cooldown.is_some())?;
            not_for("StepAdjustments", !input.steps.is_empty())?;
            not_for("MetricAggregationType", input.metric_aggregation.is_some())?;
            if input.customized_metric {
                return Err(validation_error(
                    "CustomizedMetricSpecification is not supported; use PredefinedMetricType ASGAverageCPUUtilization",
                ));
            }
            let metric = input.target_metric.clone().ok_or_else(|| {
                validation_error(
                    "TargetTrackingConfiguration.PredefinedMetricSpecification.PredefinedMetricType is required",
                )
            })?;
            if metric != CPU_METRIC {
                return Err(validation_error(format!(
                    "PredefinedMetricType {metric} is not supported; Nubis tracks {CPU_METRIC}"
                )));
            }
            let target = input.target_value.ok_or_else(|| {
                validation_error("TargetTrackingConfiguration.TargetValue is required")
            })?;
            if !target.is_finite() || target <= 0.0 || target > 100.0 {
                return Err(validation_error(format!(
                    "TargetValue for {CPU_METRIC} must be above 0 and at most 100, not {target}"
                )));
            }
            p.target = Some(TargetTracking {
                metric,
                target,
                disable_scale_in: input.disable_scale_in.unwrap_or(false),
            });
            p.warmup = input.warmup;
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lower: Option<f64>, upper: Option<f64>, adjustment: i32) -> StepAdjustment {
        StepAdjustment {
            lower,
            upper,
            adjustment,
        }
    }

    #[test]
    fn adjustments_follow_ec2_rounding() {
        use AdjustmentType::*;
        assert_eq!(adjusted_capacity(4, ChangeInCapacity, 2, None), 6);
        assert_eq!(adjusted_capacity(4, ChangeInCapacity, -5, None), -1);
        assert_eq!(adjusted_capacity(4, ExactCapacity, 9, None), 9);
        // 10 % of 4 = 0.4 -> 1; -10 % -> -1; 50 % of 5 = 2.5 -> 2; -50 % of 5 -> -2.
        assert_eq!(adjusted_capacity(4, PercentChangeInCapacity, 10, None), 5);
        assert_eq!(adjusted_capacity(4, PercentChangeInCapacity, -10, None), 3);
        assert_eq!(adjusted_capacity(5, PercentChangeInCapacity, 50, None), 7);
        assert_eq!(adjusted_capacity(5, PercentChangeInCapacity, -50, None), 3);
        // MinAdjustmentMagnitude lifts a small change.
        assert_eq!(
            adjusted_capacity(4, PercentChangeInCapacity, 10, Some(3)),
            7
        );
        assert_eq!(
            adjusted_capacity(4, PercentChangeInCapacity, -10, Some(2)),
            2
        );
    }

    #[test]
    fn steps_are_chosen_by_the_breach() {
        let steps = vec![
            step(None, Some(0.0), -1),
            step(Some(0.0), Some(10.0), 1),
            step(Some(10.0), None, 3),
        ];
        assert_eq!(step_for(&steps, 0.0).map(|s| s.adjustment), Some(1));
        assert_eq!(step_for(&steps, 9.9).map(|s| s.adjustment), Some(1));
        assert_eq!(step_for(&steps, 10.0).map(|s| s.adjustment), Some(3));
        assert_eq!(step_for(&steps, -0.5).map(|s| s.adjustment), Some(-1));
        assert_eq!(step_for(&steps[1..], -0.5), None);
        assert!(check_steps(&steps, AdjustmentType::ChangeInCapacity).is_ok());
        // A gap, an overlap, two open lower bounds, lower >= upper.
        for bad in [
            vec![step(Some(0.0), Some(5.0), 1), step(Some(6.0), None, 2)],
            vec![step(Some(0.0), Some(5.0), 1), step(Some(4.0), None, 2)],
            vec![step(None, Some(0.0), 1), step(None, Some(5.0), 2)],
            vec![step(Some(5.0), Some(5.0), 1)],
            vec![step(Some(f64::NAN), None, 1)],
            vec![],
        ] {
            assert!(
                check_steps(&bad, AdjustmentType::ChangeInCapacity).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_steps(&[step(Some(0.0), None, -1)], AdjustmentType::ExactCapacity).is_err());
    }

    #[test]
    fn tracking_capacity_rounds_up() {
        assert_eq!(tracking_capacity(2, 80.0, 40.0), 4);
        assert_eq!(tracking_capacity(3, 41.0, 40.0), 4);
        assert_eq!(tracking_capacity(4, 10.0, 40.0), 1);
        assert_eq!(tracking_capacity(4, 0.0, 40.0), 0);
        assert_eq!(tracking_capacity(2, 40.0, 40.0), 2);
    }

    #[test]
    fn policy_input_is_validated() {
        let simple = PutPolicyInput {
            group: "g".into(),
            name: "p".into(),
            adjustment_type: Some("ChangeInCapacity".into()),
            scaling_adjustment: Some(2),
            ..Default::default()
        };
        assert!(build_policy(&simple, "u".into()).is_ok());
        let tt = PutPolicyInput {
            group: "g".into(),
            name: "cpu".into(),
            policy_type: Some("TargetTrackingScaling".into()),
            target_metric: Some(CPU_METRIC.into()),
            target_value: Some(50.0),
            ..Default::default()
        };
        assert!(build_policy(&tt, "u".into()).is_ok());
        let bad: Vec<(&str, PutPolicyInput)> = vec![
            (
                "no adjustment",
                PutPolicyInput {
                    scaling_adjustment: None,
                    ..simple.clone()
                },
            ),
            (
                "bad type",
                PutPolicyInput {
                    policy_type: Some("Magic".into()),
                    ..simple.clone()
                },
            ),
            (
                "bad adj type",
                PutPolicyInput {
                    adjustment_type: Some("More".into()),
                    ..simple.clone()
                },
            ),
            (
                "colon",
                PutPolicyInput {
                    name: "a:b".into(),
                    ..simple.clone()
                },
            ),
            (
                "empty",
                PutPolicyInput {
                    name: String::new(),
                    ..simple.clone()
                },
            ),
            (
                "magnitude",
                PutPolicyInput {
                    min_adjustment_magnitude: Some(2),
                    ..simple.clone()
                },
            ),
            (
                "exact negative",
                PutPolicyInput {
                    adjustment_type: Some("ExactCapacity".into()),
                    scaling_adjustment: Some(-1),
                    ..simple.clone()
                },
            ),
            (
                "steps on simple",
                PutPolicyInput {
                    steps: vec![step(Some(0.0), None, 1)],
                    ..simple.clone()
                },
            ),
            (
                "tt metric",
                PutPolicyInput {
                    target_metric: Some("ASGAverageNetworkIn".into()),
                    ..tt.clone()
                },
            ),
            (
                "tt no target",
                PutPolicyInput {
                    target_value: None,
                    ..tt.clone()
                },
            ),
            (
                "tt zero",
                PutPolicyInput {
                    target_value: Some(0.0),
                    ..tt.clone()
                },
            ),
            (
                "tt nan",
                PutPolicyInput {
                    target_value: Some(f64::NAN),
                    ..tt.clone()
                },
            ),
            (
                "tt cooldown",
                PutPolicyInput {
                    cooldown: Some(60),
                    ..tt.clone()
                },
            ),
            (
                "tt custom",
                PutPolicyInput {
                    customized_metric: true,
                    ..tt.clone()
                },
            ),
            (
                "step without steps",
                PutPolicyInput {
                    policy_type: Some("StepScaling".into()),
                    scaling_adjustment: None,
                    ..simple.clone()
                },
            ),
        ];
        for (what, i) in bad {
            let e = build_policy(&i, "u".into()).expect_err(what);
            assert_eq!(e.code(), "ValidationError", "{what}: {e}");
        }
    }
}
