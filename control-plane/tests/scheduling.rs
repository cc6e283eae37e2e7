//! Placement against a real etcd with simulated agents: spread across zones,
//! zone constraint, cordon, binpack; two replicas racing for tight capacity;
//! idempotent RunInstances across a restarted and a killed replica.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nubis_control_plane::config::Policy;
use nubis_control_plane::domain::instances::DescribeInput;
use nubis_control_plane::domain::model::Instance;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;

async fn all_instances(d: &Domain, c: &Caller) -> Vec<Instance> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let (res, next) = d
            .describe_instances(
                c,
                DescribeInput {
                    max_results: 1000,
                    next_token: token,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out.extend(res.into_iter().flat_map(|r| r.instances));
        match next {
            Some(n) => token = Some(n),
            None => return out,
        }
    }
}

async fn agents(ep: &str, zones: &[&str], per_zone: usize, vcpus: u32, mem: u32) -> Vec<SimAgent> {
    let mut v = Vec::new();
    for z in zones {
        for i in 0..per_zone {
            let mut o = SimOptions::new(&format!("{z}-host{i}"), z, vcpus, mem);
            o.run_instances = false;
            v.push(SimAgent::start(ep, enrol(), o).await.unwrap());
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_zone_constraint_cordon_and_capacity() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let d = cp.domain.clone();
    let caller = setup_account(&d).await;
    let image = register_image(&d).await;
    let _agents = agents(&ep, &ZONES, 2, 2, 256).await;

    // 6 instances over 3 zones x 2 hosts: one per host.
    let r = d
        .run_instances(&caller, nano_input(&image, 6))
        .await
        .unwrap();
    let zones: HashMap<String, usize> = r.instances.iter().fold(HashMap::new(), |mut m, i| {
        *m.entry(i.availability_zone.clone()).or_default() += 1;
        m
    });
    assert_eq!(zones.len(), 3, "{zones:?}");
    assert!(zones.values().all(|&n| n == 2));
    let hosts: HashSet<_> = r.instances.iter().map(|i| i.node_id.clone()).collect();
    assert_eq!(hosts.len(), 6);

    // Zone constraint.
    let mut i = nano_input(&image, 2);
    i.availability_zone = Some(ZONES[1].into());
    let r = d.run_instances(&caller, i).await.unwrap();
    assert!(r.instances.iter().all(|i| i.availability_zone == ZONES[1]));

    // Cordon both hosts of zone c: nothing fits there any more.
    let nodes = d
        .list_nodes(&Caller::Operator, Some(ZONES[2]))
        .await
        .unwrap();
    for n in &nodes {
        d.cordon_node(&Caller::Operator, n.node.id.as_str())
            .await
            .unwrap();
    }
    let mut i = nano_input(&image, 1);
    i.availability_zone = Some(ZONES[2].into());
    let e = d.run_instances(&caller, i.clone()).await.unwrap_err();
    assert_eq!(e.code(), "InsufficientInstanceCapacity");
    assert!(e.to_string().contains(ZONES[2]), "{e}");
    d.uncordon_node(&Caller::Operator, nodes[0].node.id.as_str())
        .await
        .unwrap();
    let r = d.run_instances(&caller, i).await.unwrap();
    assert_eq!(r.instances[0].node_id.as_ref(), Some(&nodes[0].node.id));

    // Capacity: 2 vCPU x overcommit 4 = 8 per host, 256 MiB = 4 nano per host.
    // Zone a has 2 hosts with 2 used: 6 more fit, 7 do not (all-or-nothing with min=max).
    let mut i = nano_input(&image, 7);
    i.availability_zone = Some(ZONES[0].into());
    let before = all_instances(&d, &caller).await.len();
    assert_eq!(
        d.run_instances(&caller, i).await.unwrap_err().code(),
        "InsufficientInstanceCapacity"
    );
    assert_eq!(
        all_instances(&d, &caller).await.len(),
        before,
        "nothing written"
    );
    let mut i = nano_input(&image, 1);
    i.max_count = 7;
    i.availability_zone = Some(ZONES[0].into());
    assert_eq!(
        d.run_instances(&caller, i).await.unwrap().instances.len(),
        6
    );
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binpack_fills_hosts_in_turn() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.scheduler.policy = Policy::Binpack;
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let d = cp.domain.clone();
    let caller = setup_account(&d).await;
    let image = register_image(&d).await;
    let _agents = agents(&ep, &ZONES[..1], 3, 4, 512).await;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        let r = d
            .run_instances(&caller, nano_input(&image, 1))
            .await
            .unwrap();
        *per_node
            .entry(r.instances[0].node_id.clone().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        1,
        "binpack keeps using one host while it fits: {per_node:?}"
    );
    let r = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap();
    assert!(
        !per_node.contains_key(r.instances[0].node_id.as_ref().unwrap().as_str()),
        "full host skipped"
    );
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_overbook_tight_capacity() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.scheduler.cpu_overcommit = 1.0;
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let ep = endpoint(&a);
    let caller = setup_account(&a.domain).await;
    let image = register_image(&a.domain).await;
    // 10 hosts x 1024 MiB = 160 nano instances of capacity (vCPU 16 each).
    let _agents = agents(&ep, &ZONES, 4, 16, 1024).await;
    let _ = _agents.len();
    let total_capacity = 12 * 16; // 3 zones x 4 hosts x 16
    let wanted = 200;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let d: Arc<Domain> = if w % 2 == 0 {
            a.domain.clone()
        } else {
            b.domain.clone()
        };
        let caller = caller.clone();
        let image = image.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut full) = (0, 0);
            for _ in 0..(wanted / 8) {
                match d.run_instances(&caller, nano_input(&image, 1)).await {
                    Ok(_) => ok += 1,
                    Err(e) if e.code() == "InsufficientInstanceCapacity" => full += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (ok, full)
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        full += f;
    }
    assert_eq!(ok + full, wanted);
    assert_eq!(ok, total_capacity, "every slot used exactly once");
    // No node overbooked; allocations match the instances; addresses unique.
    let instances = all_instances(&a.domain, &caller).await;
    assert_eq!(instances.len(), total_capacity);
    let mut per_node: HashMap<String, u32> = HashMap::new();
    let mut ips = HashSet::new();
    for i in &instances {
        *per_node
            .entry(i.node_id.as_ref().unwrap().to_string())
            .or_default() += i.memory_mib;
        assert!(
            ips.insert(i.network.as_ref().unwrap().ip.clone()),
            "duplicate address"
        );
    }
    for n in a.domain.list_nodes(&Caller::Operator, None).await.unwrap() {
        let used = per_node.get(n.node.id.as_str()).copied().unwrap_or(0);
        assert!(used <= n.node.capacity.memory_mib, "node overbooked");
        assert_eq!(
            n.alloc.used.memory_mib, used,
            "allocation record matches instances"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_survives_restart_and_killed_replicas() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let a = start(cfg.clone()).await;
    let ep = endpoint(&a);
    let caller = setup_account(&a.domain).await;
    let image = register_image(&a.domain).await;
    let _agents = agents(&ep, &ZONES, 1, 8, 4096).await;

    // Same token on a restarted control plane: same reservation.
    let mut i = nano_input(&image, 2);
    i.client_token = Some("tok-restart".into());
    let first = a.domain.run_instances(&caller, i.clone()).await.unwrap();
    a.shutdown().await;
    let b = start(cfg.clone()).await;
    let again = b.domain.run_instances(&caller, i.clone()).await.unwrap();
    assert_eq!(first.reservation_id, again.reservation_id);
    let ids = |r: &nubis_control_plane::domain::views::Reservation| {
        r.instances.iter().map(|i| i.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
    // Other parameters with the same token: rejected.
    let mut other = i.clone();
    other.instance_type = "t3.micro".into();
    assert_eq!(
        b.domain
            .run_instances(&caller, other)
            .await
            .unwrap_err()
            .code(),
        "IdempotentParameterMismatch"
    );

    // Replicas killed at random points of RunInstances; a retry with the
    // same token on a surviving replica yields exactly one reservation.
    for round in 0..8u64 {
        let victim = start(cfg.clone()).await;
        let token = format!("tok-kill-{round}");
        let mut i = nano_input(&image, 2);
        i.client_token = Some(token.clone());
        let d = victim.domain.clone();
        let caller2 = caller.clone();
        let i2 = i.clone();
        let task = tokio::spawn(async move { d.run_instances(&caller2, i2).await });
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        task.abort();
        victim.abort();
        let r = b.domain.run_instances(&caller, i.clone()).await.unwrap();
        let r2 = b.domain.run_instances(&caller, i).await.unwrap();
        assert_eq!(r.reservation_id, r2.reservation_id);
        let with_token: Vec<_> = all_instances(&b.domain, &caller)
            .await
            .into_iter()
            .filter(|x| x.client_token == token)
            .collect();
        assert_eq!(
            with_token.len(),
            2,
            "round {round}: exactly one reservation of 2"
        );
        assert!(with_token
            .iter()
            .all(|x| x.reservation_id == r.reservation_id));
    }
    b.shutdown().await;
}
