//! Scheduled actions of Auto Scaling groups: the records (kept in the group
//! record with the time each is next due), PutScheduledUpdateGroupAction /
//! DescribeScheduledActions / DeleteScheduledAction, and their application
//! by the controller ([`Domain::apply_scheduled_actions`]).
//!
//! Applying is one compare-and-swap of the group that writes the new
//! sizes, moves each applied action to its next occurrence (or removes a
//! one-time action, or a recurring one past its EndTime) and records the
//! activities: a controller that dies before the commit applies nothing, one
//! that dies after it finds the action no longer due. An action missed
//! while no controller ran is applied once, with its latest occurrence.
//! While `ScheduledActions` is suspended, due actions are moved on without
//! being applied.

use serde::{Deserialize, Serialize};

use crate::domain::autoscaling::controller::iso;
use crate::domain::autoscaling::cron::Cron;
use crate::domain::autoscaling::policy_api::finished_activity;
use crate::domain::autoscaling::{
    activity_id, validation_error, ActivityStatus, AutoScalingGroup, MAX_GROUP_SIZE,
};
use crate::domain::model::now_ms;
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::store::{Tx, Versioned};

/// Most scheduled actions of one group (EC2's quota).
pub const MAX_SCHEDULED: usize = 125;

/// A scheduled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledAction {
    /// ScheduledActionName (unique within the group).
    pub name: String,
    /// A random id fixed at creation (in the ARN).
    pub uid: String,
    /// StartTime (ms).
    #[serde(default)]
    pub start_ms: Option<i64>,
    /// EndTime (ms).
    #[serde(default)]
    pub end_ms: Option<i64>,
    /// Recurrence (cron, UTC).
    #[serde(default)]
    pub recurrence: Option<String>,
    /// MinSize.
    #[serde(default)]
    pub min_size: Option<u32>,
    /// MaxSize.
    #[serde(default)]
    pub max_size: Option<u32>,
    /// DesiredCapacity.
    #[serde(default)]
    pub desired: Option<u32>,
    /// When it is next due (ms).
    pub next_ms: i64,
}

/// PutScheduledUpdateGroupAction's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutScheduledInput {
    /// AutoScalingGroupName.
    pub group: String,
    /// ScheduledActionName.
    pub name: String,
    /// StartTime (ms).
    pub start_ms: Option<i64>,
    /// EndTime (ms).
    pub end_ms: Option<i64>,
    /// Recurrence.
    pub recurrence: Option<String>,
    /// MinSize.
    pub min_size: Option<u32>,
    /// MaxSize.
    pub max_size: Option<u32>,
    /// DesiredCapacity.
    pub desired: Option<u32>,
    /// TimeZone (only UTC).
    pub time_zone: Option<String>,
}

fn check_action_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == ':') {
        return Err(validation_error(
            "ScheduledActionName must be 1 to 255 printable characters without ':'",
        ));
    }
    Ok(())
}

/// Builds an action from its input at time `now` (every rule of the API).
fn build_action(input: &PutScheduledInput, uid: String, now: i64) -> Result<ScheduledAction> {
    check_action_name(&input.name)?;
    if let Some(tz) = &input.time_zone {
        if !["UTC", "Etc/UTC", "GMT", "Etc/GMT"].contains(&tz.as_str()) {
            return Err(validation_error(format!(
                "TimeZone {tz} is not supported; recurrences are in UTC"
            )));
        }
    }
    if input.min_size.is_none() && input.max_size.is_none() && input.desired.is_none() {
        return Err(validation_error(
            "At least one of MinSize, MaxSize or DesiredCapacity must be specified",
        ));
    }
    for v in [input.min_size, input.max_size, input.desired]
        .into_iter()
        .flatten()
    {
        if v > MAX_GROUP_SIZE {
            return Err(validation_error(format!(
                "Sizes of a scheduled action must be at most {MAX_GROUP_SIZE}"
            )));
        }
    }
    if let (Some(min), Some(max)) = (input.min_size, input.max_size) {
        if min > max {
            return Err(validation_error(format!(
                "MinSize ({min}) must be less than or equal to MaxSize ({max})"
            )));
        }
    }
    if let Some(d) = input.desired {
        if input.min_size.is_some_and(|m| d < m) || input.max_size.is_some_and(|m| d > m) {
            return Err(validation_error(format!(
                "DesiredCapacity ({d}) must be between the action's MinSize and MaxSize"
            )));
        }
    }
    if let Some(s) = input.start_ms {
        if s < now {
            return Err(validation_error(format!(
                "Given start time {} is in the past",
                iso(s)
            )));
        }
    }
    if let Some(e) = input.end_ms {
        if e <= now || input.start_ms.is_some_and(|s| e <= s) {
            return Err(validation_error(
                "EndTime must be in the future and after StartTime",
            ));
        }
        if input.recurrence.is_none() {
            return Err(validation_error("EndTime is only valid with a Recurrence"));
        }
    }
    let next_ms = match &input.recurrence {
        Some(r) => {
            let c = Cron::parse(r)?;
            // The first occurrence at or after StartTime (or after now).
            let after = input.start_ms.map_or(now, |s| s - 1);
            let n = c
                .next_after(after)
                .ok_or_else(|| validation_error(format!("Recurrence '{r}' never occurs")))?;
            if input.end_ms.is_some_and(|e| n > e) {
                return Err(validation_error(
                    "The recurrence has no occurrence before EndTime",
                ));
            }
            n
        }
        None => input
            .start_ms
            .ok_or_else(|| validation_error("Either StartTime or Recurrence is required"))?,
    };
    Ok(ScheduledAction {
        name: input.name.clone(),
        uid,
        start_ms: input.start_ms,
        end_ms: input.end_ms,
        recurrence: input.recurrence.clone(),
        min_size: input.min_size,
        max_size: input.max_size,
        desired: input.desired,
        next_ms,
    })
}

/// The action after it was due at `now`: its next occurrence, or `None`
/// when it is done (one-time, past EndTime, or never again).
fn advance(a: &ScheduledAction, now: i64) -> Option<ScheduledAction> {
    let r = a.recurrence.as_deref()?;
    let next = Cron::parse(r).ok()?.next_after(now)?;
    if a.end_ms.is_some_and(|e| next > e) {
        return None;
    }
    let mut a = a.clone();
    a.next_ms = next;
    Some(a)
}

impl Domain {
    /// The ARN of scheduled action `a` of group `g`.
    pub fn scheduled_action_arn(&self, g: &AutoScalingGroup, a: &ScheduledAction) -> String {
        format!(
            "arn:aws:autoscaling:{}:{}:scheduledUpdateGroupAction:{}:autoScalingGroupName/{}:scheduledActionName/{}",
            self.cfg.region, g.account, a.uid, g.name, a.name
        )
    }

    /// PutScheduledUpdateGroupAction: creates or replaces the group's
    /// action of that name.
    pub async fn put_scheduled_action(
        &self,
        caller: &Caller,
        input: PutScheduledInput,
    ) -> Result<()> {
        let now = now_ms();
        build_action(&input, String::new(), now)?;
        self.modify_group(caller, &input.group, |g| {
            let uid = g
                .scheduled
                .iter()
                .find(|a| a.name == input.name)
                .map(|a| a.uid.clone())
                .unwrap_or_else(activity_id);
            let a = build_action(&input, uid, now)?;
            match g.scheduled.iter_mut().find(|x| x.name == a.name) {
                Some(x) => *x = a,
                None => {
                    if g.scheduled.len() >= MAX_SCHEDULED {
                        return Err(Error::invalid_code(
                            "LimitExceeded",
                            format!(
                                "The group {} already has {MAX_SCHEDULED} scheduled actions",
                                g.name
                            ),
                        ));
                    }
                    g.scheduled.push(a);
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// DescribeScheduledActions: the caller's actions (of one group or
    /// all), filtered by name and by next occurrence in `[from, to)`.
    pub async fn describe_scheduled_actions(
        &self,
        caller: &Caller,
        group: Option<&str>,
        names: &[String],
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<(AutoScalingGroup, ScheduledAction)>> {
        let groups: Vec<AutoScalingGroup> = match group {
            Some(n) => vec![self.auto_scaling_group(caller, n).await?.value],
            None => self.describe_auto_scaling_groups(caller, &[]).await?,
        };
        let mut out = Vec::new();
        for g in groups {
            for a in &g.scheduled {
                if !names.is_empty() && !names.contains(&a.name) {
                    continue;
                }
                if from_ms.is_some_and(|f| a.next_ms < f) || to_ms.is_some_and(|t| a.next_ms >= t) {
                    continue;
                }
                out.push((g.clone(), a.clone()));
            }
        }
        out.sort_by_key(|(g, a)| (a.next_ms, g.name.clone(), a.name.clone()));
        Ok(out)
    }

    /// DeleteScheduledAction.
    pub async fn delete_scheduled_action(
        &self,
        caller: &Caller,
        group: &str,
        name: &str,
    ) -> Result<()> {
        self.modify_group(caller, group, |g| {
            let before = g.scheduled.len();
            g.scheduled.retain(|a| a.name != name);
            if g.scheduled.len() == before {
                return Err(validation_error(format!(
                    "Scheduled action {name} not found in group {}",
                    g.name
                )));
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Controller: applies the group's due actions (see the module docs) in
    /// one compare-and-swap of `cur`. Returns true when the group changed.
    pub(crate) async fn apply_scheduled_actions(
        &self,
        cur: &Versioned<AutoScalingGroup>,
        now: i64,
    ) -> Result<bool> {
        let g = &cur.value;
        let mut due: Vec<ScheduledAction> = g
            .scheduled
            .iter()
            .filter(|a| a.next_ms <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        due.sort_by_key(|a| (a.next_ms, a.name.clone()));
        let suspended = g.suspended.contains("ScheduledActions");
        let mut next = g.clone();
        let mut activities = Vec::new();
        for a in &due {
            next.scheduled.retain(|x| x.name != a.name);
            if let Some(moved) = advance(a, now) {
                next.scheduled.push(moved);
            }
            if suspended {
                continue;
            }
            let min = a.min_size.unwrap_or(next.min_size);
            let max = a.max_size.unwrap_or(next.max_size);
            let old = (next.min_size, next.max_size, next.desired);
            let at = iso(a.next_ms);
            if min > max {
                activities.push(finished_activity(
                    &mut next,
                    format!("Scheduled action {} not applied", a.name),
                    format!(
                        "At {at} scheduled action {} would have set MinSize {min} above MaxSize {max}.",
                        a.name
                    ),
                    ActivityStatus::Failed,
                ));
                continue;
            }
            let desired = a.desired.unwrap_or(next.desired).clamp(min, max);
            next.min_size = min;
            next.max_size = max;
            next.desired = desired;
            activities.push(finished_activity(
                &mut next,
                format!(
                    "Scheduled action {}: min {} -> {min}, max {} -> {max}, desired {} -> {desired}",
                    a.name, old.0, old.1, old.2
                ),
                format!(
                    "At {at} scheduled action {} changed the group's sizes (MinSize {min}, MaxSize {max}, desired capacity {desired}).",
                    a.name
                ),
                ActivityStatus::Successful,
            ));
        }
        let mut tx = Tx::new();
        self.store.asgs().stage_replace(&mut tx, cur, &next)?;
        for a in &activities {
            self.store.asgs().stage_put_activity(&mut tx, a)?;
        }
        Ok(self.store.commit(tx).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn input() -> PutScheduledInput {
        PutScheduledInput {
            group: "g".into(),
            name: "nightly".into(),
            recurrence: Some("0 2 * * *".into()),
            desired: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn actions_are_validated() {
        let now = 1_000 * MIN;
        assert!(build_action(&input(), "u".into(), now).is_ok());
        let once = PutScheduledInput {
            recurrence: None,
            start_ms: Some(now + MIN),
            ..input()
        };
        assert_eq!(
            build_action(&once, "u".into(), now).expect("once").next_ms,
            now + MIN
        );
        let bad: Vec<(&str, PutScheduledInput)> = vec![
            (
                "no sizes",
                PutScheduledInput {
                    desired: None,
                    ..input()
                },
            ),
            (
                "min > max",
                PutScheduledInput {
                    min_size: Some(3),
                    max_size: Some(2),
                    ..input()
                },
            ),
            (
                "desired > max",
                PutScheduledInput {
                    max_size: Some(2),
                    desired: Some(3),
                    ..input()
                },
            ),
            (
                "past",
                PutScheduledInput {
                    start_ms: Some(now - MIN),
                    ..input()
                },
            ),
            (
                "no time",
                PutScheduledInput {
                    recurrence: None,
                    ..input()
                },
            ),
            (
                "cron",
                PutScheduledInput {
                    recurrence: Some("0 25 * * *".into()),
                    ..input()
                },
            ),
            (
                "tz",
                PutScheduledInput {
                    time_zone: Some("Europe/Paris".into()),
                    ..input()
                },
            ),
            (
                "end before start",
                PutScheduledInput {
                    start_ms: Some(now + 10 * MIN),
                    end_ms: Some(now + 5 * MIN),
                    ..input()
                },
            ),
            (
                "end without recurrence",
                PutScheduledInput {
                    recurrence: None,
                    start_ms: Some(now + MIN),
                    end_ms: Some(now + 5 * MIN),
                    ..input()
                },
            ),
            (
                "name",
                PutScheduledInput {
                    name: "a:b".into(),
                    ..input()
                },
            ),
            (
                "huge",
                PutScheduledInput {
                    desired: Some(MAX_GROUP_SIZE + 1),
                    ..input()
                },
            ),
        ];
        for (what, i) in bad {
            let e = build_action(&i, "u".into(), now).expect_err(what);
            assert_eq!(e.code(), "ValidationError", "{what}: {e}");
        }
    }

    #[test]
    fn recurring_actions_advance_and_end() {
        let now = 0;
        let a = build_action(
            &PutScheduledInput {
                recurrence: Some("*/10 * * * *".into()),
                end_ms: Some(25 * MIN),
                ..input()
            },
            "u".into(),
            now,
        )
        .expect("build");
        assert_eq!(a.next_ms, 10 * MIN);
        // Missed for a while: the next occurrence after now, once.
        let b = advance(&a, 12 * MIN).expect("next");
        assert_eq!(b.next_ms, 20 * MIN);
        assert_eq!(advance(&b, 20 * MIN), None, "past EndTime");
        let once = build_action(
            &PutScheduledInput {
                recurrence: None,
                start_ms: Some(MIN),
                ..input()
            },
            "u".into(),
            now,
        )
        .expect("build");
        assert_eq!(advance(&once, MIN), None);
    }
}
