//! Target tracking: where the controller reads the CPU metric
//! ([`MetricSource`]; in production the agents' samples through
//! [`Domain::average_cpu`], tests inject their own) and how it turns the
//! metric into a desired capacity ([`Domain::evaluate_target_tracking`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use crate::domain::autoscaling::policies::{
    tracking_capacity, PolicyType, ScalingPolicy, TargetTracking, CPU_METRIC, SCALE_IN_WINDOW,
    SCALE_OUT_WINDOW,
};
use crate::domain::autoscaling::policy_api::finished_activity;
use crate::domain::autoscaling::{ActivityStatus, AutoScalingGroup};
use crate::domain::lifecycle::State;
use crate::domain::model::Instance;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ids::{AccountId, InstanceId};
use crate::store::{Tx, Versioned};

/// Where target tracking reads the average CPU utilisation of instances.
pub trait MetricSource: Send + Sync + std::fmt::Debug {
    /// Average CPUUtilization (percent) of `ids` (instances of `account`)
    /// over the last `window`; `None` when there is no data.
    fn average_cpu<'a>(
        &'a self,
        domain: &'a Domain,
        account: &'a AccountId,
        ids: &'a [InstanceId],
        window: Duration,
    ) -> BoxFuture<'a, Result<Option<f64>>>;
}

/// The production source: the agents' samples ([`Domain::average_cpu`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct AgentCpu;

impl MetricSource for AgentCpu {
    fn average_cpu<'a>(
        &'a self,
        domain: &'a Domain,
        account: &'a AccountId,
        ids: &'a [InstanceId],
        window: Duration,
    ) -> BoxFuture<'a, Result<Option<f64>>> {
        Box::pin(async move {
            let to = SystemTime::now();
            let from = to.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
            domain.average_cpu(account, ids, from, to).await
        })
    }
}

impl Domain {
    /// Installs the metric source target tracking reads (tests; the first
    /// call wins; without one the agents' samples are read).
    pub fn set_autoscaling_metric_source(&self, source: Arc<dyn MetricSource>) {
        let _ = self.asg_metrics.set(source);
    }

    fn metric_source(&self) -> &dyn MetricSource {
        match self.asg_metrics.get() {
            Some(s) => s.as_ref(),
            None => &AgentCpu,
        }
    }

    /// The metric, or `None` when it cannot be read: a metric that fails
    /// (an unreachable node record, etcd trouble) skips target tracking for
    /// this pass but must not stop the group's health and capacity work.
    /// Only a fenced write ends the pass.
    async fn read_cpu(
        &self,
        src: &dyn MetricSource,
        g: &AutoScalingGroup,
        ids: &[InstanceId],
        window: Duration,
    ) -> Result<Option<f64>> {
        match src.average_cpu(self, &g.account, ids, window).await {
            Ok(v) => Ok(v.filter(|v| v.is_finite())),
            Err(Error::Fenced) => Err(Error::Fenced),
            Err(e) => {
                tracing::warn!(group = %g.name, error = %e, "target tracking: metric not read");
                Ok(None)
            }
        }
    }

    /// Target tracking (controller): with the group's enabled target
    /// tracking policies and its in-service instances, the desired
    /// capacity they call for, written with its activity (one compare-and-
    /// swap of `cur`). Returns true when the group was changed.
    ///
    /// Scale-out: the metric over [`SCALE_OUT_WINDOW`] of the running
    /// instances past their warm-up, [`tracking_capacity`] above the
    /// desired capacity (the largest of the policies; instances warming up
    /// count in the desired capacity, so a scale-out is not repeated while
    /// they start). Scale-in (more
    /// conservative): the metric over [`SCALE_IN_WINDOW`], every policy
    /// allows scale-in and calls for less, no instance is warming up, and
    /// the group's last scaling by target tracking is a warm-up ago.
    pub(crate) async fn evaluate_target_tracking(
        &self,
        cur: &Versioned<AutoScalingGroup>,
        in_service: &[Instance],
        now: i64,
    ) -> Result<bool> {
        let g = &cur.value;
        let policies: Vec<&ScalingPolicy> = g
            .policies
            .iter()
            .filter(|p| p.enabled && p.kind == PolicyType::TargetTrackingScaling)
            .collect();
        if policies.is_empty() || g.suspended.contains("AlarmNotification") {
            return Ok(false);
        }
        let warmup_ms = i64::from(
            policies
                .iter()
                .filter_map(|p| p.warmup)
                .max()
                .unwrap_or(g.default_cooldown),
        ) * 1000;
        let running: Vec<&Instance> = in_service
            .iter()
            .filter(|i| i.state == State::Running)
            .collect();
        let warmed: Vec<InstanceId> = running
            .iter()
            .filter(|i| now - i.launch_time_ms >= warmup_ms)
            .map(|i| i.id.clone())
            .collect();
        let warming = in_service.len() - warmed.len();
        if warmed.is_empty() {
            return Ok(false);
        }
        let src = self.metric_source();
        let Some(out_metric) = self.read_cpu(src, g, &warmed, SCALE_OUT_WINDOW).await? else {
            return Ok(false);
        };
        let targets: Vec<&TargetTracking> =
            policies.iter().filter_map(|p| p.target.as_ref()).collect();
        let (best, want_out) = targets
            .iter()
            .map(|t| (t, tracking_capacity(warmed.len(), out_metric, t.target)))
            .max_by_key(|(_, c)| *c)
            .map(|(t, c)| (*t, c))
            .ok_or_else(|| {
                Error::Internal("target tracking policy without configuration".into())
            })?;
        let desired = u64::from(g.desired);
        let max = u64::from(g.max_size);
        let (new, metric, target) = if want_out > desired && desired < max {
            (want_out.min(max), out_metric, best.target)
        } else {
            if warming > 0
                || targets.iter().any(|t| t.disable_scale_in)
                || now - g.last_tracking_ms < warmup_ms
                || desired <= u64::from(g.min_size)
            {
                return Ok(false);
            }
            let Some(in_metric) = self.read_cpu(src, g, &warmed, SCALE_IN_WINDOW).await? else {
                return Ok(false);
            };
            let (t, want_in) = targets
                .iter()
                .map(|t| (t, tracking_capacity(warmed.len(), in_metric, t.target)))
                .max_by_key(|(_, c)| *c)
                .map(|(t, c)| (*t, c))
                .ok_or_else(|| {
                    Error::Internal("target tracking policy without configuration".into())
                })?;
            if want_in >= desired {
                return Ok(false);
            }
            (want_in.max(u64::from(g.min_size)), in_metric, t.target)
        };
        let new = u32::try_from(new).unwrap_or(g.max_size);
        let policy = policies
            .iter()
            .find(|p| p.target.as_ref().is_some_and(|t| t.target == target))
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let old = g.desired;
        let mut next = g.clone();
        next.desired = new;
        next.last_tracking_ms = now;
        let a = finished_activity(
            &mut next,
            format!("Changing the desired capacity from {old} to {new}"),
            format!(
                "At {} target tracking policy {policy} ({CPU_METRIC} {metric:.1} against a target of {target:.1} over {} instances) changed the desired capacity from {old} to {new}.",
                crate::domain::autoscaling::controller::iso(now),
                warmed.len()
            ),
            ActivityStatus::Successful,
        );
        let mut tx = Tx::new();
        self.store.asgs().stage_replace(&mut tx, cur, &next)?;
        self.store.asgs().stage_put_activity(&mut tx, &a)?;
        Ok(self.store.commit(tx).await?.is_some())
    }
}
