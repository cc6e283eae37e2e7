//! Helpers of the Auto Scaling test binaries (`autoscaling`,
//! `autoscaling_policies`): a replica with simulated agents in three zones,
//! a launch template, group inputs and waits on a group's instances.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nubis_control_plane::domain::autoscaling::templates::{LaunchTemplateData, TemplateRef};
use nubis_control_plane::domain::autoscaling::{CreateGroupInput, GroupInstance};
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::server::Replica;
use nubis_control_plane::sim::{SimAgent, SimOptions};

use crate::support::*;

pub async fn cluster(etcd: &Etcd) -> (Replica, Vec<SimAgent>) {
    let r = start(config(etcd)).await;
    let ep = endpoint(&r);
    let mut sims = Vec::new();
    for (i, z) in ZONES.iter().enumerate() {
        sims.push(
            SimAgent::start(
                &ep,
                enrol(),
                SimOptions::new(&format!("host-{i}"), z, 64, 32768),
            )
            .await
            .unwrap(),
        );
    }
    (r, sims)
}

pub async fn template(d: &Domain, c: &Caller, image: &str) {
    d.create_launch_template(
        c,
        "web",
        "",
        LaunchTemplateData {
            image_id: Some(image.into()),
            instance_type: Some("t3.nano".into()),
            tags: vec![("tier".into(), "web".into())],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

pub fn group_input(name: &str, min: u32, max: u32, desired: u32) -> CreateGroupInput {
    CreateGroupInput {
        name: name.into(),
        template: Some(TemplateRef::Name("web".into())),
        version: Some("$Latest".into()),
        min_size: min,
        max_size: max,
        desired: Some(desired),
        zones: ZONES.iter().map(|z| z.to_string()).collect(),
        ..Default::default()
    }
}

/// The group's in-service (healthy pending/running) instances.
pub async fn in_service(d: &Domain, c: &Caller, name: &str) -> Vec<GroupInstance> {
    d.describe_auto_scaling_instances(c, &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|gi| gi.group == name && gi.healthy)
        .collect()
}

pub fn per_zone(list: &[GroupInstance]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for gi in list {
        *m.entry(gi.instance.availability_zone.clone()).or_default() += 1;
    }
    m
}

/// Waits until `n` instances of the group are running with `zones` per zone
/// (None: any spread), and no other instance of it is pending/running.
pub async fn wait_running(
    d: &Domain,
    c: &Caller,
    name: &str,
    n: usize,
    each: Option<usize>,
    within: Duration,
) -> Vec<GroupInstance> {
    let end = Instant::now() + within;
    loop {
        let list = in_service(d, c, name).await;
        let running = list
            .iter()
            .filter(|gi| gi.instance.state == State::Running)
            .count();
        let spread_ok = match each {
            None => true,
            Some(k) => {
                let m = per_zone(&list);
                ZONES.iter().all(|z| m.get(*z).copied().unwrap_or(0) == k)
            }
        };
        if running == n && list.len() == n && spread_ok {
            return list;
        }
        assert!(
            Instant::now() < end,
            "group {name}: wanted {n} running ({each:?} per zone), have {} in service ({running} running): {:?}",
            list.len(),
            per_zone(&list)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn code(e: &nubis_control_plane::error::Error) -> String {
    e.code().to_string()
}
