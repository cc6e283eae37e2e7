//! RunInstances calls larger than one etcd transaction, against a real etcd
//! with simulated agents: a call of 100 succeeds in batches; MinCount out of
//! reach leaves nothing behind; a replica dying between batches is finished
//! by a retry with the same ClientToken or by the reconciler's resume, and a
//! resume that cannot reach MinCount rolls everything back; two replicas
//! racing large calls for tight capacity stay all-or-nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nubis_control_plane::domain::events::{EventKind, EventQuery};
use nubis_control_plane::domain::instances::{DescribeInput, RunInstancesInput};
use nubis_control_plane::domain::launch::BATCH;
use nubis_control_plane::domain::model::Instance;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;

async fn setup(d: &Domain) -> (Caller, String) {
    (setup_account(d).await, register_image(d).await)
}

fn input(image: &str, min: u32, max: u32, token: Option<&str>) -> RunInstancesInput {
    RunInstancesInput {
        image_id: image.into(),
        instance_type: "t3.nano".into(),
        min_count: min,
        max_count: max,
        client_token: token.map(str::to_string),
        user_data: b"#!/bin/sh\necho large\n".to_vec(),
        ..Default::default()
    }
}

/// Two hosts per zone of `vcpus` vCPUs each (overcommit 1: one t3.nano per vCPU).
async fn agents(ep: &str, vcpus: u32) -> Vec<SimAgent> {
    let mut v = Vec::new();
    for z in ZONES {
        for i in 0..2 {
            let mut o = SimOptions::new(&format!("{z}-host{i}"), z, vcpus, 8192);
            o.run_instances = false;
            v.push(SimAgent::start(ep, enrol(), o).await.unwrap());
        }
    }
    v
}

async fn all_instances(d: &Domain, c: &Caller) -> Vec<Instance> {
    let (res, next) = d
        .describe_instances(
            c,
            DescribeInput {
                max_results: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(next.is_none());
    res.into_iter().flat_map(|r| r.instances).collect()
}

async fn count(d: &Domain, prefix: String) -> i64 {
    d.store().count(&prefix).await.unwrap()
}

/// Every node's allocation equals what its instances hold; nothing
/// overbooked; addresses unique. Returns the number of instances.
async fn consistent(d: &Domain, c: &Caller) -> usize {
    let instances = all_instances(d, c).await;
    let mut per_node: HashMap<String, (u32, usize, usize)> = HashMap::new();
    let mut ips = HashSet::new();
    for i in &instances {
        let e = per_node
            .entry(i.node_id.as_ref().unwrap().to_string())
            .or_default();
        e.0 += i.vcpus;
        e.1 += 1;
        if i.network.as_ref().unwrap().is_node_block() {
            e.2 += 1;
        }
        // The account has its default VPC: every instance, also those a
        // resumed saga placed, has an address of its zone's default subnet.
        assert!(
            i.network.as_ref().unwrap().vpc.is_some()
                && i.vpc.as_ref().unwrap().subnet_id.is_some(),
            "{} has no VPC address",
            i.id
        );
        assert!(
            ips.insert(i.network.as_ref().unwrap().ip.clone()),
            "duplicate address"
        );
    }
    for n in d.list_nodes(&Caller::Operator, None).await.unwrap() {
        let (vcpus, k, block) = per_node
            .get(n.node.id.as_str())
            .copied()
            .unwrap_or_default();
        assert!(vcpus <= n.node.capacity.vcpus, "node overbooked");
        assert_eq!(n.alloc.used.vcpus, vcpus, "allocation matches instances");
        assert_eq!(
            n.alloc.hosts.len(),
            block,
            "node-block addresses match instances"
        );
        assert_eq!(n.alloc.instances as usize, k);
    }
    let keys = d.store().keys();
    assert_eq!(
        count(d, keys.pending_reservations()).await,
        0,
        "no pending reservation left"
    );
    instances.len()
}

fn config_oc1(etcd: &Etcd) -> nubis_control_plane::config::Config {
    let mut cfg = config(etcd);
    cfg.scheduler.cpu_overcommit = 1.0;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_of_100_is_written_in_batches_and_replays() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_oc1(&etcd)).await;
    let d = cp.domain.clone();
    let (caller, image) = setup(&d).await;
    let _agents = agents(&endpoint(&cp), 32).await; // 192 slots

    let r = d
        .run_instances(&caller, input(&image, 100, 100, Some("big-1")))
        .await
        .unwrap();
    const { assert!(100 > BATCH) };
    assert_eq!(r.instances.len(), 100);
    let idx: HashSet<u32> = r.instances.iter().map(|i| i.launch_index).collect();
    assert_eq!(idx, (0..100).collect::<HashSet<_>>());
    assert!(r
        .instances
        .iter()
        .all(|i| i.reservation_id == r.reservation_id));
    let zones: HashSet<_> = r.instances.iter().map(|i| &i.availability_zone).collect();
    assert_eq!(zones.len(), 3, "spread over the zones");
    assert_eq!(consistent(&d, &caller).await, 100);

    // The same token again: the same reservation, nothing new.
    let again = d
        .run_instances(&caller, input(&image, 100, 100, Some("big-1")))
        .await
        .unwrap();
    assert_eq!(again.reservation_id, r.reservation_id);
    let ids = |r: &nubis_control_plane::domain::views::Reservation| {
        r.instances
            .iter()
            .map(|i| i.id.clone())
            .collect::<HashSet<_>>()
    };
    assert_eq!(ids(&again), ids(&r));
    // Without a token, MaxCount above what is left: what fits (92).
    let rest = d
        .run_instances(&caller, input(&image, 50, 150, None))
        .await
        .unwrap();
    assert_eq!(rest.instances.len(), 92);
    assert_eq!(consistent(&d, &caller).await, 192);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_count_out_of_reach_leaves_nothing_behind() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_oc1(&etcd)).await;
    let d = cp.domain.clone();
    let (caller, image) = setup(&d).await;
    let _agents = agents(&endpoint(&cp), 16).await; // 96 slots

    let e = d
        .run_instances(&caller, input(&image, 100, 150, Some("too-many")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InsufficientInstanceCapacity", "{e}");
    assert_eq!(consistent(&d, &caller).await, 0, "nothing left behind");
    let keys = d.store().keys();
    // Each instance the saga wrote and removed has its two events, and no
    // address claim is left.
    let page = d
        .list_events(
            &caller,
            &EventQuery {
                max_results: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.next_token.is_none());
    let mut per: HashMap<String, Vec<(u64, EventKind)>> = HashMap::new();
    for e in page.events {
        per.entry(e.event.instance_id.to_string())
            .or_default()
            .push((e.event.seq, e.event.kind));
    }
    assert!(per.len() >= BATCH as usize, "batches were placed first");
    for kinds in per.values_mut() {
        kinds.sort_by_key(|k| k.0);
        assert_eq!(
            kinds,
            &[(0, EventKind::Created), (1, EventKind::RolledBack)]
        );
    }
    assert_eq!(
        count(
            &d,
            keys.all_instances().replace("/instances/", "/ipam/addrs/")
        )
        .await,
        0
    );
    let account = caller.account().unwrap();
    assert!(d
        .store()
        .get_raw(&keys.client_token(&account, "too-many"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        count(
            &d,
            keys.all_instances().replace("/instances/", "/user-data/")
        )
        .await,
        0
    );
    // The same token later, with room: a fresh attempt (nothing was kept).
    let e = d
        .run_instances(&caller, input(&image, 100, 150, Some("too-many")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InsufficientInstanceCapacity");
    // A reachable MinCount: every slot.
    let r = d
        .run_instances(&caller, input(&image, 50, 150, Some("fits")))
        .await
        .unwrap();
    assert_eq!(r.instances.len(), 96);
    assert_eq!(consistent(&d, &caller).await, 96);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_batches_is_finished_by_a_retry_or_the_reconciler() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config_oc1(&etcd);
    let cp = start(cfg.clone()).await;
    let d = cp.domain.clone();
    let (caller, image) = setup(&d).await;
    let _agents = agents(&endpoint(&cp), 32).await; // 192 slots
    let keys = d.store().keys().clone();

    // Dies after the first batch: BATCH instances and a pending record.
    let i = input(&image, 100, 100, Some("crash-1"));
    let e = d
        .run_instances_interrupted(&caller, i.clone(), 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    let partial = all_instances(&d, &caller).await;
    assert_eq!(partial.len(), BATCH as usize);
    assert_eq!(count(&d, keys.pending_reservations()).await, 1);

    // A retry with the same token on another replica finishes it.
    let other = start(cfg.clone()).await;
    let r = other
        .domain
        .run_instances(&caller, i.clone())
        .await
        .unwrap();
    assert_eq!(r.instances.len(), 100);
    assert_eq!(r.reservation_id, partial[0].reservation_id);
    let again = d.run_instances(&caller, i).await.unwrap();
    assert_eq!(again.reservation_id, r.reservation_id);
    assert_eq!(again.instances.len(), 100);
    assert_eq!(consistent(&d, &caller).await, 100);

    // Without a token, the reconciler's resume finishes it.
    d.run_instances_interrupted(&caller, input(&image, 50, 80, None), 1)
        .await
        .unwrap_err();
    assert_eq!(all_instances(&d, &caller).await.len(), 100 + BATCH as usize);
    assert_eq!(
        other
            .domain
            .resume_pending_reservations(Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(consistent(&d, &caller).await, 180);

    // 12 slots left: a call of at least 60 dies after placing 12; the
    // resume cannot reach 60 and rolls the 12 back.
    d.run_instances_interrupted(&caller, input(&image, 60, 60, Some("crash-2")), 1)
        .await
        .unwrap_err();
    assert_eq!(all_instances(&d, &caller).await.len(), 192);
    assert_eq!(
        other
            .domain
            .resume_pending_reservations(Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(consistent(&d, &caller).await, 180);
    let account = caller.account().unwrap();
    assert!(d
        .store()
        .get_raw(&keys.client_token(&account, "crash-2"))
        .await
        .unwrap()
        .is_none());
    other.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_large_calls_stay_all_or_nothing() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config_oc1(&etcd);
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let (caller, image) = setup(&a.domain).await;
    let _agents = agents(&endpoint(&a), 16).await; // 96 slots
    let mut tasks = Vec::new();
    for w in 0..4 {
        let d: Arc<Domain> = if w % 2 == 0 {
            a.domain.clone()
        } else {
            b.domain.clone()
        };
        let caller = caller.clone();
        let i = input(&image, 45, 45, Some(&format!("race-{w}")));
        tasks.push(tokio::spawn(
            async move { d.run_instances(&caller, i).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.instances.len(), 45);
                ok += 1;
            }
            Err(e) => assert_eq!(e.code(), "InsufficientInstanceCapacity", "{e}"),
        }
    }
    assert!(ok <= 2, "at most two calls of 45 fit in 96 slots");
    assert_eq!(consistent(&a.domain, &caller).await, 45 * ok);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_never_drops_the_key_pair_on_a_read_failure() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config_oc1(&etcd)).await;
    let d = cp.domain.clone();
    let (caller, image) = setup(&d).await;
    let _agents = agents(&endpoint(&cp), 32).await; // 192 slots
    let keys = d.store().keys().clone();
    let account = caller.account().unwrap();
    let (kp, _) = d.create_keypair(&caller, "k", "", &[]).await.unwrap();

    let mut i = input(&image, 100, 100, None);
    i.key_name = Some("k".into());
    d.run_instances_interrupted(&caller, i, 1)
        .await
        .unwrap_err();
    assert_eq!(all_instances(&d, &caller).await.len(), BATCH as usize);

    // The key pair cannot be read (a corrupt record stands in for etcd
    // failing): the resume must not launch the rest without the key.
    let kkey = keys.keypair(&account, "k");
    let (good, _) = d.store().get_raw(&kkey).await.unwrap().unwrap();
    let put = |v: Vec<u8>| {
        let mut tx = nubis_control_plane::store::Tx::new();
        tx.put_raw(&kkey, v);
        tx
    };
    d.store().commit(put(b"{".to_vec())).await.unwrap().unwrap();
    assert_eq!(
        d.resume_pending_reservations(Duration::ZERO).await.unwrap(),
        0
    );
    assert_eq!(all_instances(&d, &caller).await.len(), BATCH as usize);
    assert_eq!(count(&d, keys.pending_reservations()).await, 1);

    // Readable again: the next resume finishes, every instance with its key.
    d.store().commit(put(good)).await.unwrap().unwrap();
    assert_eq!(
        d.resume_pending_reservations(Duration::ZERO).await.unwrap(),
        1
    );
    let instances = all_instances(&d, &caller).await;
    assert_eq!(instances.len(), 100);
    for inst in &instances {
        let a = d
            .store()
            .get::<nubis_control_plane::domain::model::Assignment>(
                &keys.assignment(inst.node_id.as_ref().unwrap(), &inst.id),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.value.ssh_public_key, kp.public_key, "{}", inst.id);
    }
    assert_eq!(consistent(&d, &caller).await, 100);
    cp.shutdown().await;
}
