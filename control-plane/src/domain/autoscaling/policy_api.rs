//! The scaling policy operations of the Auto Scaling API: PutScalingPolicy,
//! DescribePolicies, DeletePolicy and ExecutePolicy (simple and step
//! policies; Nubis has no CloudWatch alarms, so they run when executed),
//! and the group change recorded with its activity in one transaction
//! that they, target tracking and scheduled actions share.

use crate::domain::autoscaling::policies::{
    adjusted_capacity, build_policy, step_for, AdjustmentType, ExecutePolicyInput, PolicyType,
    PutPolicyInput, ScalingPolicy, MAX_POLICIES,
};
use crate::domain::autoscaling::{
    activity_id, validation_error, Activity, ActivityStatus, AutoScalingGroup,
};
use crate::domain::model::now_ms;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::store::{Tx, Versioned};

fn policy_not_found(name: &str) -> Error {
    validation_error(format!("No scaling policy found for {name}"))
}

impl Domain {
    /// The ARN of group `g`.
    pub fn group_arn(&self, g: &AutoScalingGroup) -> String {
        format!(
            "arn:aws:autoscaling:{}:{}:autoScalingGroup:{}:autoScalingGroupName/{}",
            self.cfg.region, g.account, g.uid, g.name
        )
    }

    /// The ARN of policy `p` of group `g`.
    pub fn policy_arn(&self, g: &AutoScalingGroup, p: &ScalingPolicy) -> String {
        format!(
            "arn:aws:autoscaling:{}:{}:scalingPolicy:{}:autoScalingGroupName/{}:policyName/{}",
            self.cfg.region, g.account, p.uid, g.name, p.name
        )
    }

    /// PutScalingPolicy: creates or replaces the group's policy of that
    /// name; returns its ARN.
    pub async fn put_scaling_policy(
        &self,
        caller: &Caller,
        input: PutPolicyInput,
    ) -> Result<String> {
        // Validate before touching the group (the uid is kept on replace).
        build_policy(&input, String::new())?;
        let mut arn = String::new();
        let g = self
            .modify_group(caller, &input.group, |g| {
                let uid = g
                    .policies
                    .iter()
                    .find(|p| p.name == input.name)
                    .map(|p| p.uid.clone())
                    .unwrap_or_else(activity_id);
                let p = build_policy(&input, uid)?;
                match g.policies.iter_mut().find(|x| x.name == p.name) {
                    Some(x) => *x = p,
                    None => {
                        if g.policies.len() >= MAX_POLICIES {
                            return Err(Error::invalid_code(
                                "LimitExceeded",
                                format!(
                                    "The group {} already has {MAX_POLICIES} scaling policies",
                                    g.name
                                ),
                            ));
                        }
                        g.policies.push(p);
                    }
                }
                Ok(())
            })
            .await?;
        if let Some(p) = g.policies.iter().find(|p| p.name == input.name) {
            arn = self.policy_arn(&g, p);
        }
        Ok(arn)
    }

    /// The caller's groups to search for a policy: the named one, or all.
    async fn policy_groups(
        &self,
        caller: &Caller,
        group: Option<&str>,
    ) -> Result<Vec<Versioned<AutoScalingGroup>>> {
        match group {
            Some(n) => Ok(vec![self.auto_scaling_group(caller, n).await?]),
            None => {
                let account = caller.account()?;
                Ok(self
                    .store
                    .asgs()
                    .of(&account)
                    .collect()
                    .await?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect())
            }
        }
    }

    /// DescribePolicies: (group, policy) pairs of the caller, filtered by
    /// group, names (or ARNs) and types.
    pub async fn describe_policies(
        &self,
        caller: &Caller,
        group: Option<&str>,
        names: &[String],
        types: &[String],
    ) -> Result<Vec<(AutoScalingGroup, ScalingPolicy)>> {
        for t in types {
            PolicyType::parse(t)?;
        }
        let mut out = Vec::new();
        for g in self.policy_groups(caller, group).await? {
            let g = g.value;
            for p in &g.policies {
                let arn = self.policy_arn(&g, p);
                if !names.is_empty() && !names.iter().any(|n| *n == p.name || *n == arn) {
                    continue;
                }
                if !types.is_empty() && !types.iter().any(|t| t == p.kind.as_str()) {
                    continue;
                }
                out.push((g.clone(), p.clone()));
            }
        }
        Ok(out)
    }

    /// The group holding the caller's policy `policy` (a name within
    /// `group`, or an ARN).
    async fn policy_group(
        &self,
        caller: &Caller,
        group: Option<&str>,
        policy: &str,
    ) -> Result<(String, String)> {
        if policy.is_empty() {
            return Err(validation_error("PolicyName is required"));
        }
        if !policy.starts_with("arn:") {
            let Some(group) = group else {
                return Err(validation_error(
                    "AutoScalingGroupName is required when PolicyName is not an ARN",
                ));
            };
            let g = self.auto_scaling_group(caller, group).await?.value;
            if !g.policies.iter().any(|p| p.name == policy) {
                return Err(policy_not_found(policy));
            }
            return Ok((g.name, policy.to_string()));
        }
        for g in self.policy_groups(caller, group).await? {
            let g = g.value;
            if let Some(p) = g.policies.iter().find(|p| self.policy_arn(&g, p) == policy) {
                return Ok((g.name.clone(), p.name.clone()));
            }
        }
        Err(policy_not_found(policy))
    }

    /// DeletePolicy.
    pub async fn delete_policy(
        &self,
        caller: &Caller,
        group: Option<&str>,
        policy: &str,
    ) -> Result<()> {
        let (group, name) = self.policy_group(caller, group, policy).await?;
        self.modify_group(caller, &group, |g| {
            let before = g.policies.len();
            g.policies.retain(|p| p.name != name);
            if g.policies.len() == before {
                return Err(policy_not_found(&name));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// ExecutePolicy: runs a simple or step policy now (a target tracking
    /// policy cannot be executed). A simple policy's cooldown starts; with
    /// HonorCooldown, a call within the cooldown fails with
    /// `ScalingActivityInProgress`.
    pub async fn execute_policy(&self, caller: &Caller, input: ExecutePolicyInput) -> Result<()> {
        let (group, name) = self
            .policy_group(caller, input.group.as_deref(), &input.policy)
            .await?;
        for v in [input.metric_value, input.breach_threshold]
            .into_iter()
            .flatten()
        {
            if !v.is_finite() {
                return Err(validation_error(
                    "MetricValue and BreachThreshold must be finite numbers",
                ));
            }
        }
        let now = now_ms();
        self.modify_group_recording(caller, &group, |g| {
            let p = g
                .policies
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .ok_or_else(|| policy_not_found(&name))?;
            if !p.enabled {
                return Err(validation_error(format!("The policy {name} is disabled")));
            }
            let old = g.desired;
            let (new, how) = match p.kind {
                PolicyType::TargetTrackingScaling => {
                    return Err(validation_error(
                        "ExecutePolicy is only supported for SimpleScaling and StepScaling policies",
                    ))
                }
                PolicyType::SimpleScaling => {
                    if input.metric_value.is_some() || input.breach_threshold.is_some() {
                        return Err(validation_error(
                            "MetricValue and BreachThreshold are only valid for StepScaling policies",
                        ));
                    }
                    if input.honor_cooldown && now < g.cooldown_until_ms {
                        return Err(Error::invalid_code(
                            "ScalingActivityInProgress",
                            format!(
                                "The group {} is in its cooldown until {}",
                                g.name,
                                crate::domain::autoscaling::controller::iso(g.cooldown_until_ms)
                            ),
                        ));
                    }
                    let t = p.adjustment_type.unwrap_or(AdjustmentType::ChangeInCapacity);
                    let a = p.scaling_adjustment.unwrap_or(0);
                    let cooldown = p.cooldown.unwrap_or(g.default_cooldown);
                    g.cooldown_until_ms = now + i64::from(cooldown) * 1000;
                    (
                        adjusted_capacity(old, t, a, p.min_adjustment_magnitude),
                        format!("{} {a}", t.as_str()),
                    )
                }
                PolicyType::StepScaling => {
                    if input.honor_cooldown {
                        return Err(validation_error(
                            "HonorCooldown is only valid for SimpleScaling policies",
                        ));
                    }
                    let (Some(m), Some(b)) = (input.metric_value, input.breach_threshold) else {
                        return Err(validation_error(
                            "MetricValue and BreachThreshold are required to execute a StepScaling policy",
                        ));
                    };
                    let step = step_for(&p.steps, m - b).ok_or_else(|| {
                        validation_error(format!(
                            "No step adjustment of policy {name} covers metric value {m} with breach threshold {b}"
                        ))
                    })?;
                    let t = p.adjustment_type.unwrap_or(AdjustmentType::ChangeInCapacity);
                    (
                        adjusted_capacity(old, t, step.adjustment, p.min_adjustment_magnitude),
                        format!("{} {} (metric {m}, breach threshold {b})", t.as_str(), step.adjustment),
                    )
                }
            };
            let new = new.clamp(i64::from(g.min_size), i64::from(g.max_size)) as u32;
            if new == old {
                return Ok(None);
            }
            g.desired = new;
            let at = crate::domain::autoscaling::controller::iso(now);
            Ok(Some((
                format!("Changing the desired capacity from {old} to {new}"),
                format!(
                    "At {at} a user request executed policy {name} ({how}) changing the desired capacity from {old} to {new}."
                ),
            )))
        })
        .await?;
        Ok(())
    }

    /// SetDesiredCapacity with `HonorCooldown`: refused with
    /// `ScalingActivityInProgress` while a simple policy's cooldown runs
    /// (without it, as [`Domain::set_desired_capacity`]).
    pub async fn set_desired_capacity_honoring(
        &self,
        caller: &Caller,
        name: &str,
        desired: u32,
        honor_cooldown: bool,
    ) -> Result<AutoScalingGroup> {
        if honor_cooldown {
            let g = self.auto_scaling_group(caller, name).await?.value;
            if now_ms() < g.cooldown_until_ms {
                return Err(Error::invalid_code(
                    "ScalingActivityInProgress",
                    format!(
                        "The group {name} is in its cooldown until {}",
                        crate::domain::autoscaling::controller::iso(g.cooldown_until_ms)
                    ),
                ));
            }
        }
        self.set_desired_capacity(caller, name, desired).await
    }

    /// Applies `f` to the caller's group `name` (compare-and-swap, retried);
    /// when `f` returns a (description, cause), the change is recorded as a
    /// finished activity in the same transaction.
    pub(crate) async fn modify_group_recording<F>(
        &self,
        caller: &Caller,
        name: &str,
        mut f: F,
    ) -> Result<AutoScalingGroup>
    where
        F: FnMut(&mut AutoScalingGroup) -> Result<Option<(String, String)>>,
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
            let what = f(&mut g)?;
            let mut tx = Tx::new();
            if let Some((description, cause)) = what {
                let a = finished_activity(&mut g, description, cause, ActivityStatus::Successful);
                self.store.asgs().stage_put_activity(&mut tx, &a)?;
            }
            self.store.asgs().stage_replace(&mut tx, &cur, &g)?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(g);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(format!("group {name}")))
    }
}

/// A finished activity of `g` (its sequence number taken from `g`).
pub(crate) fn finished_activity(
    g: &mut AutoScalingGroup,
    description: String,
    cause: String,
    status: ActivityStatus,
) -> Activity {
    let seq = g.next_activity;
    g.next_activity += 1;
    let now = now_ms();
    Activity {
        account: g.account.clone(),
        group: g.name.clone(),
        seq,
        id: activity_id(),
        description,
        cause,
        status,
        message: String::new(),
        start_ms: now,
        end_ms: Some(now),
    }
}
