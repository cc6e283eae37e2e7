//! Scaling policies, scheduled actions and suspended processes of Auto
//! Scaling groups against a real etcd, a real replica (its `autoscaling`
//! controller task) and simulated agents (issue 14): target tracking on an
//! injected CPU metric, simple and step policies executed with cooldowns,
//! scheduled actions applied once (also with racing controllers), the
//! `Launch` and `HealthCheck` processes; bad input and other tenants.

#![allow(clippy::unwrap_used)]

mod autoscaling_support;
mod support;

use std::time::{Duration, Instant};

use autoscaling_support::*;
use nubis_control_plane::domain::autoscaling::policies::{
    ExecutePolicyInput, PutPolicyInput, StepAdjustment,
};
use nubis_control_plane::domain::autoscaling::scheduled::PutScheduledInput;
use nubis_control_plane::domain::autoscaling::tracking::MetricSource;
use nubis_control_plane::domain::autoscaling::AutoScalingGroup;
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::ids::{AccountId, InstanceId};
use support::*;

/// A metric source the test sets: a total load (in instance-percent)
/// shared by the instances asked about, as a real fleet behind a load
/// balancer would (each at most 100 %). It records what it was asked.
#[derive(Debug, Default)]
struct FakeCpu {
    fail: std::sync::atomic::AtomicBool,
    load: std::sync::Mutex<Option<f64>>,
    asked: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl FakeCpu {
    fn set_load(&self, v: f64) {
        *self.load.lock().unwrap() = Some(v);
    }
}

impl MetricSource for FakeCpu {
    fn average_cpu<'a>(
        &'a self,
        _: &'a Domain,
        account: &'a AccountId,
        ids: &'a [InstanceId],
        _: Duration,
    ) -> futures::future::BoxFuture<'a, nubis_control_plane::error::Result<Option<f64>>> {
        Box::pin(async move {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(nubis_control_plane::error::Error::Internal(
                    "metric store down".into(),
                ));
            }
            self.asked.lock().unwrap().push((
                account.to_string(),
                ids.iter().map(|i| i.to_string()).collect(),
            ));
            let load = *self.load.lock().unwrap();
            Ok(load.map(|l| (l / ids.len().max(1) as f64).min(100.0)))
        })
    }
}

async fn group_of(d: &Domain, c: &Caller, name: &str) -> AutoScalingGroup {
    d.auto_scaling_group(c, name).await.unwrap().value
}

/// Waits until the group's desired capacity is `n`.
async fn wait_desired(d: &Domain, c: &Caller, name: &str, n: u32, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let g = group_of(d, c, name).await;
        if g.desired == n {
            return;
        }
        assert!(
            Instant::now() < end,
            "group {name}: desired {} never became {n}",
            g.desired
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tracking(group: &str, target: f64, disable_scale_in: bool) -> PutPolicyInput {
    PutPolicyInput {
        group: group.into(),
        name: "cpu".into(),
        policy_type: Some("TargetTrackingScaling".into()),
        target_metric: Some("ASGAverageCPUUtilization".into()),
        target_value: Some(target),
        disable_scale_in: Some(disable_scale_in),
        warmup: Some(0),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_tracking_follows_the_cpu_metric() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let (r, _sims) = cluster(&etcd).await;
    let d = r.domain.clone();
    let cpu = std::sync::Arc::new(FakeCpu::default());
    d.set_autoscaling_metric_source(cpu.clone());
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("web", 1, 6, 1))
        .await
        .unwrap();
    let arn = d
        .put_scaling_policy(&c, tracking("web", 40.0, false))
        .await
        .unwrap();
    // A metric that cannot be read does not stop the group's launches.
    cpu.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_running(&d, &c, "web", 1, None, Duration::from_secs(20)).await;
    d.set_desired_capacity(&c, "web", 2).await.unwrap();
    wait_running(&d, &c, "web", 2, None, Duration::from_secs(20)).await;
    cpu.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // No data yet: nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(group_of(&d, &c, "web").await.desired, 2);

    assert!(
        arn.contains(":scalingPolicy:")
            && arn.ends_with(":autoScalingGroupName/web:policyName/cpu"),
        "{arn}"
    );
    // 2 instances at 80 % against 40 %: 4 (then 40 % each: stable).
    cpu.set_load(160.0);
    wait_desired(&d, &c, "web", 4, Duration::from_secs(20)).await;
    let list = wait_running(&d, &c, "web", 4, None, Duration::from_secs(20)).await;
    // The metric was asked for this group's instances only, as its owner.
    let asked = cpu.asked.lock().unwrap().clone();
    let ids: Vec<String> = list.iter().map(|gi| gi.instance.id.to_string()).collect();
    for (account, set) in &asked {
        assert_eq!(account, &c.account().unwrap().to_string());
        assert!(
            set.iter().all(|i| ids.contains(i)),
            "{set:?} not in {ids:?}"
        );
    }
    let acts = d
        .describe_scaling_activities(&c, Some("web"), 100)
        .await
        .unwrap();
    assert!(
        acts.iter().any(
            |a| a.description == "Changing the desired capacity from 2 to 4"
                && a.cause.contains("target tracking policy cpu")
                && a.cause.contains("80.0")
        ),
        "{acts:?}"
    );

    // At the target now (4 at 40 %): it stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(group_of(&d, &c, "web").await.desired, 4);

    // Scale-in disabled: 10 % keeps 4.
    d.put_scaling_policy(&c, tracking("web", 40.0, true))
        .await
        .unwrap();
    cpu.set_load(40.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(group_of(&d, &c, "web").await.desired, 4);
    // AlarmNotification suspended: no scaling either way.
    d.set_processes_suspended(&c, "web", &["AlarmNotification".into()], true)
        .await
        .unwrap();
    d.put_scaling_policy(&c, tracking("web", 40.0, false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(group_of(&d, &c, "web").await.desired, 4);
    // Resumed: 4 at 10 % against 40 %: 1 (MinSize 1).
    d.set_processes_suspended(&c, "web", &["AlarmNotification".into()], false)
        .await
        .unwrap();
    wait_desired(&d, &c, "web", 1, Duration::from_secs(20)).await;
    wait_running(&d, &c, "web", 1, None, Duration::from_secs(20)).await;
    // Far above the target: bounded by MaxSize.
    cpu.set_load(400.0);
    d.put_scaling_policy(&c, tracking("web", 10.0, false))
        .await
        .unwrap();
    wait_desired(&d, &c, "web", 6, Duration::from_secs(20)).await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_step_policies_execute_with_cooldowns() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r = start(config(&etcd)).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("g", 0, 10, 0))
        .await
        .unwrap();
    // No agents: the test watches the desired capacity only.
    d.set_processes_suspended(&c, "g", &["Launch".into()], true)
        .await
        .unwrap();
    let simple = |name: &str, t: &str, adj: i32, cooldown: Option<u32>| PutPolicyInput {
        group: "g".into(),
        name: name.into(),
        adjustment_type: Some(t.into()),
        scaling_adjustment: Some(adj),
        cooldown,
        ..Default::default()
    };
    let exec = |name: &str, honor: bool| ExecutePolicyInput {
        group: Some("g".into()),
        policy: name.into(),
        honor_cooldown: honor,
        ..Default::default()
    };
    d.put_scaling_policy(&c, simple("up", "ChangeInCapacity", 2, Some(600)))
        .await
        .unwrap();
    d.put_scaling_policy(&c, simple("half", "PercentChangeInCapacity", 50, None))
        .await
        .unwrap();
    let exact_arn = d
        .put_scaling_policy(&c, simple("three", "ExactCapacity", 3, None))
        .await
        .unwrap();
    d.execute_policy(&c, exec("up", true)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 2);
    // Within up's 600 s cooldown: refused when honoured, done when not.
    let e = d.execute_policy(&c, exec("up", true)).await.unwrap_err();
    assert_eq!(code(&e), "ScalingActivityInProgress", "{e}");
    let e = d
        .set_desired_capacity_honoring(&c, "g", 3, true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ScalingActivityInProgress", "{e}");
    d.execute_policy(&c, exec("up", false)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 4);
    d.execute_policy(&c, exec("half", false)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 6);
    // By ARN, without the group name.
    d.execute_policy(
        &c,
        ExecutePolicyInput {
            policy: exact_arn.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 3);
    // Bounded by MaxSize.
    d.put_scaling_policy(&c, simple("lots", "ChangeInCapacity", 100, None))
        .await
        .unwrap();
    d.execute_policy(&c, exec("lots", false)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 10);
    d.execute_policy(&c, exec("three", false)).await.unwrap();

    // Step scaling on the breach of a metric.
    let step = |lower: Option<f64>, upper: Option<f64>, adjustment: i32| StepAdjustment {
        lower,
        upper,
        adjustment,
    };
    d.put_scaling_policy(
        &c,
        PutPolicyInput {
            group: "g".into(),
            name: "steps".into(),
            policy_type: Some("StepScaling".into()),
            adjustment_type: Some("ChangeInCapacity".into()),
            steps: vec![
                step(None, Some(0.0), -1),
                step(Some(0.0), Some(10.0), 1),
                step(Some(10.0), None, 3),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let breach = |m: f64| ExecutePolicyInput {
        group: Some("g".into()),
        policy: "steps".into(),
        metric_value: Some(m),
        breach_threshold: Some(70.0),
        ..Default::default()
    };
    d.execute_policy(&c, breach(75.0)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 4);
    d.execute_policy(&c, breach(90.0)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 7);
    d.execute_policy(&c, breach(60.0)).await.unwrap();
    assert_eq!(group_of(&d, &c, "g").await.desired, 6);
    let e = d
        .execute_policy(&c, exec("steps", false))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "step without metric: {e}");
    d.put_scaling_policy(&c, tracking("g", 50.0, false))
        .await
        .unwrap();
    let e = d.execute_policy(&c, exec("cpu", false)).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "target tracking executed: {e}");
    let e = d.execute_policy(&c, exec("nope", false)).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "unknown policy: {e}");

    // Every execution is an activity naming its policy.
    let acts = d
        .describe_scaling_activities(&c, Some("g"), 100)
        .await
        .unwrap();
    for p in ["up", "half", "three", "lots", "steps"] {
        assert!(
            acts.iter()
                .any(|a| a.cause.contains(&format!("executed policy {p} "))),
            "{p}: {acts:?}"
        );
    }

    // Describe (all, by type, by name), delete by ARN.
    let all = d.describe_policies(&c, Some("g"), &[], &[]).await.unwrap();
    assert_eq!(all.len(), 6);
    let steps = d
        .describe_policies(&c, None, &[], &["StepScaling".into()])
        .await
        .unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].1.steps.len(), 3);
    d.delete_policy(&c, None, &exact_arn).await.unwrap();
    assert!(d
        .describe_policies(&c, Some("g"), &["three".into()], &[])
        .await
        .unwrap()
        .is_empty());
    let e = d.delete_policy(&c, Some("g"), "three").await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "deleted twice: {e}");
    let e = d
        .describe_policies(&c, Some("g"), &[], &["Magic".into()])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "bad type filter: {e}");
    let e = d
        .put_scaling_policy(
            &c,
            PutPolicyInput {
                group: "nope".into(),
                ..simple("x", "ChangeInCapacity", 1, None)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "unknown group: {e}");

    // Another tenant: sees no policy, cannot execute, delete or add one.
    let (other, _, _) = d.create_account(&Caller::Operator, "other").await.unwrap();
    let other = Caller::Tenant(other.id);
    assert!(d
        .describe_policies(&other, None, &[], &[])
        .await
        .unwrap()
        .is_empty());
    let up_arn = all
        .iter()
        .find(|(_, p)| p.name == "up")
        .map(|(g, p)| d.policy_arn(g, p))
        .unwrap();
    let e = d
        .execute_policy(
            &other,
            ExecutePolicyInput {
                policy: up_arn.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d.delete_policy(&other, None, &up_arn).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d
        .execute_policy(&other, exec("up", false))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d
        .put_scaling_policy(&other, simple("evil", "ExactCapacity", 9, None))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let g = group_of(&d, &c, "g").await;
    assert_eq!(g.desired, 6);
    assert_eq!(g.policies.len(), 5);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_actions_apply_once_when_due() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r = start(config(&etcd)).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("g", 0, 5, 0))
        .await
        .unwrap();
    d.set_processes_suspended(&c, "g", &["Launch".into()], true)
        .await
        .unwrap();
    let now = nubis_control_plane::domain::model::now_ms();
    let at = |name: &str, ms: i64| PutScheduledInput {
        group: "g".into(),
        name: name.into(),
        start_ms: Some(ms),
        min_size: Some(1),
        max_size: Some(8),
        desired: Some(3),
        ..Default::default()
    };
    d.put_scheduled_action(&c, at("once", now + 2_000))
        .await
        .unwrap();
    d.put_scheduled_action(
        &c,
        PutScheduledInput {
            group: "g".into(),
            name: "nightly".into(),
            recurrence: Some("0 2 * * *".into()),
            desired: Some(0),
            min_size: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let listed = d
        .describe_scheduled_actions(&c, Some("g"), &[], None, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].1.name, "once");
    assert_eq!(listed[1].1.next_ms % 86_400_000, 2 * 3_600_000, "02:00 UTC");

    // Several controllers race for the due action (the replica's task and
    // three passes of the test): applied exactly once.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs(5);
                while Instant::now() < end {
                    let _ = d.reconcile_groups().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for h in racers {
        h.await.unwrap();
    }
    let g = group_of(&d, &c, "g").await;
    assert_eq!((g.min_size, g.max_size, g.desired), (1, 8, 3));
    assert_eq!(g.scheduled.len(), 1, "the one-time action is done");
    let acts = d
        .describe_scaling_activities(&c, Some("g"), 100)
        .await
        .unwrap();
    let applied = acts
        .iter()
        .filter(|a| a.description.starts_with("Scheduled action once"))
        .count();
    assert_eq!(applied, 1, "{acts:?}");

    // Suspended ScheduledActions: the due action passes without effect.
    d.set_processes_suspended(&c, "g", &["ScheduledActions".into()], true)
        .await
        .unwrap();
    let now = nubis_control_plane::domain::model::now_ms();
    d.put_scheduled_action(
        &c,
        PutScheduledInput {
            desired: Some(5),
            ..at("skip", now + 1_000)
        },
    )
    .await
    .unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    while group_of(&d, &c, "g").await.scheduled.len() > 1 {
        assert!(Instant::now() < end, "suspended action never passed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(group_of(&d, &c, "g").await.desired, 3);

    // Bad input.
    let now = nubis_control_plane::domain::model::now_ms();
    for (what, i) in [
        ("past", at("p", now - 60_000)),
        (
            "min > max",
            PutScheduledInput {
                min_size: Some(9),
                ..at("p", now + 60_000)
            },
        ),
        (
            "no time",
            PutScheduledInput {
                start_ms: None,
                ..at("p", 0)
            },
        ),
        (
            "bad cron",
            PutScheduledInput {
                recurrence: Some("61 * * * *".into()),
                ..at("p", now + 60_000)
            },
        ),
        (
            "unknown group",
            PutScheduledInput {
                group: "nope".into(),
                ..at("p", now + 60_000)
            },
        ),
    ] {
        let e = d.put_scheduled_action(&c, i).await.unwrap_err();
        assert_eq!(code(&e), "ValidationError", "{what}: {e}");
    }
    let e = d
        .delete_scheduled_action(&c, "g", "nope")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");

    // Another tenant sees and deletes nothing.
    let (other, _, _) = d.create_account(&Caller::Operator, "other").await.unwrap();
    let other = Caller::Tenant(other.id);
    assert!(d
        .describe_scheduled_actions(&other, None, &[], None, None)
        .await
        .unwrap()
        .is_empty());
    let e = d
        .delete_scheduled_action(&other, "g", "nightly")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d
        .put_scheduled_action(&other, at("evil", now + 60_000))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    d.delete_scheduled_action(&c, "g", "nightly").await.unwrap();
    assert!(group_of(&d, &c, "g").await.scheduled.is_empty());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_processes_are_honoured() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let (r, _sims) = cluster(&etcd).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("g", 0, 6, 3))
        .await
        .unwrap();
    let list = wait_running(&d, &c, "g", 3, Some(1), Duration::from_secs(20)).await;

    // Launch suspended: a higher desired capacity launches nothing.
    d.set_processes_suspended(&c, "g", &["Launch".into()], true)
        .await
        .unwrap();
    d.set_desired_capacity(&c, "g", 6).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(in_service(&d, &c, "g").await.len(), 3);
    let g = group_of(&d, &c, "g").await;
    assert!(g.suspended.contains("Launch"), "{:?}", g.suspended);
    d.set_processes_suspended(&c, "g", &["Launch".into()], false)
        .await
        .unwrap();
    wait_running(&d, &c, "g", 6, Some(2), Duration::from_secs(20)).await;

    // HealthCheck suspended: a stopped instance is not judged unhealthy.
    d.set_processes_suspended(&c, "g", &["HealthCheck".into()], true)
        .await
        .unwrap();
    let victim = list[0].instance.id.to_string();
    d.stop_instances(&c, std::slice::from_ref(&victim), false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = d.instance(&c, &victim).await.unwrap().value;
    assert_eq!(v.state, State::Stopped);
    // Resumed: it is replaced.
    d.set_processes_suspended(&c, "g", &["HealthCheck".into()], false)
        .await
        .unwrap();
    wait_running(&d, &c, "g", 6, Some(2), Duration::from_secs(20)).await;
    let v = d.instance(&c, &victim).await.unwrap().value;
    assert!(
        matches!(v.state, State::Terminated | State::ShuttingDown),
        "{:?}",
        v.state
    );
    // Unknown process names are refused.
    let e = d
        .set_processes_suspended(&c, "g", &["Nap".into()], true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    r.shutdown().await;
}
