//! Auto Scaling against a real etcd, a real replica (its `autoscaling`
//! controller task) and simulated agents in three zones (issue 14): a group
//! reaches its desired capacity spread over its zones, scales out evenly,
//! replaces an instance terminated by hand, honours scale-in protection,
//! is deleted with every instance by ForceDelete; a lost host's instances
//! are replaced in the other zones and the zones rebalance when it
//! returns; a controller interrupted half-way through a launch never
//! doubles instances; bad input and other tenants are refused.

#![allow(clippy::unwrap_used)]

mod autoscaling_support;
mod support;

use std::time::{Duration, Instant};

use autoscaling_support::*;
use nubis_control_plane::domain::autoscaling::templates::TemplateRef;
use nubis_control_plane::domain::autoscaling::{AutoScalingGroup, GROUP_TAG};
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::Caller;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_its_capacity_spread_over_its_zones() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let (r, _sims) = cluster(&etcd).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("g1", 2, 10, 3))
        .await
        .unwrap();

    // 3 running, one per zone, tagged with the group and the template's tags.
    let list = wait_running(&d, &c, "g1", 3, Some(1), Duration::from_secs(20)).await;
    for gi in &list {
        assert_eq!(
            gi.instance.tags.get(GROUP_TAG).map(String::as_str),
            Some("g1")
        );
        assert_eq!(
            gi.instance.tags.get("tier").map(String::as_str),
            Some("web")
        );
    }

    // Scale out to 6: two per zone.
    d.set_desired_capacity(&c, "g1", 6).await.unwrap();
    let list = wait_running(&d, &c, "g1", 6, Some(2), Duration::from_secs(20)).await;

    // An instance terminated by hand is replaced, in its zone.
    let victim = list[0].instance.id.to_string();
    d.terminate_instances(&c, std::slice::from_ref(&victim))
        .await
        .unwrap();
    let list = wait_running(&d, &c, "g1", 6, Some(2), Duration::from_secs(20)).await;
    assert!(list.iter().all(|gi| gi.instance.id.as_str() != victim));

    // Protected instances survive a scale-in.
    let keep: Vec<String> = list
        .iter()
        .filter(|gi| gi.instance.availability_zone == ZONES[0])
        .map(|gi| gi.instance.id.to_string())
        .collect();
    assert_eq!(keep.len(), 2);
    d.set_instance_protection(&c, "g1", &keep, true)
        .await
        .unwrap();
    d.set_desired_capacity(&c, "g1", 2).await.unwrap();
    let left = wait_running(&d, &c, "g1", 2, None, Duration::from_secs(20)).await;
    let mut ids: Vec<String> = left.iter().map(|gi| gi.instance.id.to_string()).collect();
    ids.sort();
    let mut want = keep.clone();
    want.sort();
    assert_eq!(ids, want, "scale-in took a protected instance");

    // Every action is an activity.
    let acts = d
        .describe_scaling_activities(&c, Some("g1"), 100)
        .await
        .unwrap();
    assert!(acts.iter().any(|a| a.description.starts_with("Launching")));
    assert!(acts
        .iter()
        .any(|a| a.description.starts_with("Terminating")));
    assert!(
        acts.iter().all(|a| a.status.as_str() != "Failed"),
        "{acts:?}"
    );

    // ForceDelete terminates every instance, then the group is gone.
    d.delete_auto_scaling_group(&c, "g1", true).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let groups = d.describe_auto_scaling_groups(&c, &[]).await.unwrap();
        if groups.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "group not deleted: {groups:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = d.describe_instances(&c, Default::default()).await.unwrap();
    for res in all.0 {
        for i in res.instances {
            assert!(
                matches!(i.state, State::Terminated | State::ShuttingDown),
                "{} is {:?}",
                i.id,
                i.state
            );
        }
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_other_tenants_are_refused() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r = start(config(&etcd)).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;

    let e = d
        .create_auto_scaling_group(&c, group_input("g", 5, 2, 2))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "MinSize > MaxSize: {e}");
    let e = d
        .create_auto_scaling_group(&c, group_input("g", 1, 3, 4))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "desired > max: {e}");
    let mut i = group_input("g", 1, 3, 1);
    i.template = Some(TemplateRef::Name("nope".into()));
    let e = d.create_auto_scaling_group(&c, i).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "unknown template: {e}");
    let mut i = group_input("g", 1, 3, 1);
    i.version = Some("7".into());
    let e = d.create_auto_scaling_group(&c, i).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "unknown version: {e}");
    let mut i = group_input("g", 1, 3, 1);
    i.zones = vec!["us-east-1a".into()];
    let e = d.create_auto_scaling_group(&c, i).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "zone not in region: {e}");
    let mut i = group_input("g", 1, 3, 1);
    i.zones.clear();
    let e = d.create_auto_scaling_group(&c, i).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "no zone: {e}");

    d.create_auto_scaling_group(&c, group_input("g", 0, 3, 0))
        .await
        .unwrap();
    let e = d
        .create_auto_scaling_group(&c, group_input("g", 0, 3, 0))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AlreadyExists", "duplicate: {e}");
    let e = d.set_desired_capacity(&c, "g", 4).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "desired above max: {e}");

    // Another tenant sees nothing and changes nothing; its own template
    // namespace is separate.
    let (other, _, _) = d.create_account(&Caller::Operator, "other").await.unwrap();
    let other = Caller::Tenant(other.id);
    assert!(d
        .describe_auto_scaling_groups(&other, &[])
        .await
        .unwrap()
        .is_empty());
    let e = d.set_desired_capacity(&other, "g", 1).await.unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d
        .delete_auto_scaling_group(&other, "g", true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "{e}");
    let e = d
        .create_auto_scaling_group(&other, group_input("g", 0, 3, 0))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError", "other tenant's template: {e}");
    assert!(d
        .describe_launch_templates(&other, &[])
        .await
        .unwrap()
        .is_empty());
    let g: Vec<AutoScalingGroup> = d.describe_auto_scaling_groups(&c, &[]).await.unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].desired, 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_interrupted_mid_launch_never_doubles_instances() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let (r, _sims) = cluster(&etcd).await;
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("big", 0, 40, 0))
        .await
        .unwrap();
    // Scale-out of 20 (7 + 7 + 6 in three RunInstances calls) decided and
    // stopped after its first call; the replica's controller task picks the
    // pending launch up (possibly while the interrupted pass still runs).
    let launched = d
        .autoscaling_crash_mid_launch(&c, "big", 20, 1)
        .await
        .unwrap();
    assert!(launched <= 7, "{launched}");
    wait_running(&d, &c, "big", 20, None, Duration::from_secs(30)).await;
    // And it stays exactly 20.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = d.describe_auto_scaling_instances(&c, &[]).await.unwrap();
    assert_eq!(all.len(), 20, "{all:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_is_replaced_and_the_zones_rebalance_when_it_returns() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let (r, mut sims) = cluster(&etcd).await;
    let ep = endpoint(&r);
    let d = r.domain.clone();
    let image = register_image(&d).await;
    let c = setup_account(&d).await;
    template(&d, &c, &image).await;
    d.create_auto_scaling_group(&c, group_input("g", 3, 9, 6))
        .await
        .unwrap();
    wait_running(&d, &c, "g", 6, Some(2), Duration::from_secs(20)).await;

    // Host of zone a dies: its lease (8 s) expires, the node-loss rules
    // stop its instances, the group replaces them in b and c.
    let resume = sims[0].running();
    let credential = sims[0].credential();
    sims[0].kill();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(60);
    let detected = loop {
        let lost = in_service(&d, &c, "g").await.len() < 6
            || d.describe_auto_scaling_instances(&c, &[])
                .await
                .unwrap()
                .iter()
                .any(|gi| gi.instance.state == State::Stopped);
        if lost {
            break Instant::now();
        }
        assert!(Instant::now() < end, "node loss never detected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let list = wait_running(&d, &c, "g", 6, None, Duration::from_secs(30)).await;
    let restored = detected.elapsed();
    let m = per_zone(&list);
    assert_eq!(m.get(ZONES[0]), None, "{m:?}");
    assert_eq!(m.get(ZONES[1]).copied().unwrap_or(0), 3, "{m:?}");
    eprintln!(
        "host loss: detected after {:?}, capacity restored {:?} after detection",
        detected - t0,
        restored
    );
    assert!(restored < Duration::from_secs(30), "{restored:?}");

    // The host comes back (with its VMs): the zones rebalance to 2/2/2.
    let mut o = SimOptions::new("host-0", ZONES[0], 64, 32768);
    o.resume = resume;
    // A returning host re-registers with its own node credential (the
    // shared enrolment token may only register new host ids).
    sims[0] = SimAgent::start(&ep, credential, o).await.unwrap();
    wait_running(&d, &c, "g", 6, Some(2), Duration::from_secs(60)).await;
    r.shutdown().await;
}
