//! Node liveness against a real etcd with simulated agents (issue 18): a
//! control-plane outage longer than the node lease, a replica crash and a
//! leader change stop nobody; one node of three lost is stopped with the
//! reason within lease TTL + grace and gets its instances back `running`
//! (no relaunch) when it returns with its VMs; a whole zone vanishing at
//! once is a disruption that stops nobody until an operator confirms.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use nubis_control_plane::domain::lifecycle::Desired;
use nubis_control_plane::domain::model::Assignment;
use nubis_control_plane::ids::{InstanceId, NodeId};
use nubis_control_plane::server::Replica;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

/// Lease TTL 8 s + heartbeat 1 s (support::config).
const GRACE: Duration = Duration::from_secs(9);

async fn agents(ep: &str, hosts: &[(&str, &str)]) -> Vec<SimAgent> {
    let mut v = Vec::new();
    for (host, zone) in hosts {
        v.push(
            SimAgent::start(ep, enrol(), SimOptions::new(host, zone, 4, 1024))
                .await
                .unwrap(),
        );
    }
    v
}

async fn launch(c: &mut Compute, image: &str, n: u32) -> Vec<String> {
    let res = c
        .run_instances(run_req(image, n))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let ids: Vec<String> = res.instances.into_iter().map(|i| i.instance_id).collect();
    for id in &ids {
        wait_state(c, id, "running").await;
    }
    ids
}

fn state(i: &pb::Instance) -> &str {
    i.state.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

/// Every instance in `ids` stays `running` for `d`.
async fn stays_running(c: &mut Compute, ids: &[String], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for i in describe_all(c).await {
            if ids.contains(&i.instance_id) {
                assert_eq!(state(&i), "running", "left running: {i:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The instances a simulated agent runs.
fn ids_on(s: &SimAgent) -> Vec<String> {
    s.running().into_iter().map(|(id, _)| id).collect()
}

async fn node_loss_result(r: &Replica) -> String {
    let v = admin_client(&endpoint(r))
        .await
        .list_tasks(pb::ListTasksRequest {})
        .await
        .unwrap()
        .into_inner();
    v.tasks
        .into_iter()
        .find(|t| t.name == "node-loss")
        .map(|t| format!("{} {}", t.last_result, t.last_error))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_outage_longer_than_the_lease_stops_nobody() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let first = start(cfg.clone()).await;
    let ep = endpoint(&first);
    let image = hello_image(&ep).await;
    let creds = tenant(&ep, "t").await;
    let mut c = compute(&ep, creds.clone()).await;
    let hosts = [("h0", ZONES[0]), ("h1", ZONES[1]), ("h2", ZONES[2])];
    let mut sims = agents(&ep, &hosts).await;
    let ids = launch(&mut c, &image, 6).await;
    let running: Vec<Vec<(String, u64)>> = sims.iter().map(|s| s.running()).collect();
    assert_eq!(running.iter().map(Vec::len).sum::<usize>(), 6);

    // The control plane crashes; nobody renews the node leases (8 s) for 12 s.
    first.abort();
    for s in &mut sims {
        s.kill();
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let second = start(cfg).await;
    let ep = endpoint(&second);
    let mut c = compute(&ep, creds).await;
    // The agents come back a moment later, their VMs still running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut back = Vec::new();
    for (((host, zone), run), sim) in hosts.iter().zip(running).zip(&sims) {
        let mut o = SimOptions::new(host, zone, 4, 1024);
        o.resume = run;
        back.push(SimAgent::start(&ep, sim.credential(), o).await.unwrap());
    }
    stays_running(&mut c, &ids, GRACE + Duration::from_secs(5)).await;
    for id in &ids {
        let s = back.iter().find(|s| s.phase(id).is_some()).unwrap();
        assert_eq!(s.launches(id), 0, "{id} was launched again");
    }
    let r = node_loss_result(&second).await;
    assert!(r.contains("0 of 3 nodes look lost"), "{r}");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_stops_nobody() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let a = start(config(&etcd)).await;
    let b = start(config(&etcd)).await;
    // Agents talk to the standby, so the leader's crash leaves them connected.
    let leader_is_a = eventually(Duration::from_secs(30), "a leader", || async {
        let v = admin_client(&endpoint(&a))
            .await
            .list_tasks(pb::ListTasksRequest {})
            .await
            .unwrap()
            .into_inner();
        (!v.leader.is_empty()).then_some(v.is_leader)
    })
    .await;
    let (leader, standby) = if leader_is_a { (a, b) } else { (b, a) };
    let ep = endpoint(&standby);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let _sims = agents(&ep, &[("h0", ZONES[0]), ("h1", ZONES[1]), ("h2", ZONES[2])]).await;
    let ids = launch(&mut c, &image, 3).await;

    leader.abort(); // crash: its election key lapses after 3 s
    eventually(Duration::from_secs(30), "the standby to lead", || async {
        let v = admin_client(&endpoint(&standby))
            .await
            .list_tasks(pb::ListTasksRequest {})
            .await
            .unwrap()
            .into_inner();
        v.is_leader.then_some(())
    })
    .await;
    stays_running(&mut c, &ids, GRACE + Duration::from_secs(4)).await;
    standby.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lost_node_of_three_is_stopped_and_recovers_when_it_returns() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let hosts = [("h0", ZONES[0]), ("h1", ZONES[1]), ("h2", ZONES[2])];
    let mut sims = agents(&ep, &hosts).await;
    let ids = launch(&mut c, &image, 3).await;
    let lost_ids = ids_on(&sims[0]);
    assert!(!lost_ids.is_empty(), "spread placed one on each node");
    let resume = sims[0].running();

    sims[0].kill();
    let killed = Instant::now();
    for id in &lost_ids {
        let i = wait_state(&c, id, "stopped").await;
        let reason = i.state_reason.unwrap();
        assert_eq!(reason.code, "Server.InternalError");
        assert!(reason.message.contains("node lost"), "{}", reason.message);
    }
    // Lease TTL 8 s, then at most one run (1 s) after it; the leader's grace
    // (9 s) started with the test. Slack for a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_secs(8 + 9 + 10),
        "noticed after {:?}",
        killed.elapsed()
    );
    for i in describe_all(&mut c).await {
        if !lost_ids.contains(&i.instance_id) {
            assert_eq!(state(&i), "running", "only the lost node's: {i:?}");
        }
    }
    // Its desired state still says running: nobody told the agent to stop.
    let d = &cp.domain;
    let node = NodeId::parse(&sims[0].node_id).unwrap();
    for id in &lost_ids {
        let a = d
            .store()
            .get::<Assignment>(
                &d.store()
                    .keys()
                    .assignment(&node, &InstanceId::parse(id).unwrap()),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.value.desired, Desired::Running);
    }

    // The host comes back with its VMs still running: running again, not
    // relaunched, and its capacity is on the books again.
    let mut o = SimOptions::new(hosts[0].0, hosts[0].1, 4, 1024);
    o.resume = resume;
    let back = SimAgent::start(&ep, sims[0].credential(), o).await.unwrap();
    for id in &lost_ids {
        let i = wait_state(&c, id, "running").await;
        assert!(i.state_reason.is_none(), "{i:?}");
        assert_eq!(back.launches(id), 0, "relaunched");
    }
    let n = admin_client(&ep)
        .await
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .find(|n| n.node_id == back.node_id)
        .unwrap();
    assert_eq!(n.state, "ready");
    assert_eq!(
        n.allocated.unwrap().memory_mib,
        64 * lost_ids.len() as u32,
        "capacity re-claimed"
    );
    assert_eq!(ids.len(), 3);
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_returning_without_its_vms_keeps_them_stopped() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let hosts = [("h0", ZONES[0]), ("h1", ZONES[1]), ("h2", ZONES[2])];
    let mut sims = agents(&ep, &hosts).await;
    launch(&mut c, &image, 3).await;
    let lost_ids = ids_on(&sims[0]);
    assert!(!lost_ids.is_empty());
    sims[0].kill();
    for id in &lost_ids {
        wait_state(&c, id, "stopped").await;
    }
    // Back without VMs (rebooted host): told to keep them stopped.
    let back = SimAgent::start(
        &ep,
        sims[0].credential(),
        SimOptions::new(hosts[0].0, hosts[0].1, 4, 1024),
    )
    .await
    .unwrap();
    let node = NodeId::parse(&back.node_id).unwrap();
    let d = &cp.domain;
    for id in &lost_ids {
        let key = d
            .store()
            .keys()
            .assignment(&node, &InstanceId::parse(id).unwrap());
        let a = d.store().get::<Assignment>(&key).await.unwrap().unwrap();
        assert_eq!(a.value.desired, Desired::Stopped);
        assert_eq!(back.launches(id), 0);
        assert_eq!(state(&state_of(&mut c, id).await), "stopped");
    }
    // Start works again on the returned node.
    c.start_instances(pb::StartInstancesRequest {
        instance_ids: lost_ids.clone(),
    })
    .await
    .unwrap();
    for id in &lost_ids {
        wait_state(&c, id, "running").await;
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_zone_vanishing_stops_nobody_until_an_operator_confirms() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let mut sims = agents(
        &ep,
        &[
            ("a0", ZONES[0]),
            ("a1", ZONES[0]),
            ("b0", ZONES[1]),
            ("b1", ZONES[1]),
            ("c0", ZONES[2]),
            ("c1", ZONES[2]),
        ],
    )
    .await;
    let ids = launch(&mut c, &image, 6).await;
    let gone_ids = ids_on(&sims[0]);
    assert!(!gone_ids.is_empty(), "spread placed one on each node");

    // Both nodes of zone A vanish at once: 2 of 6 is not more than a third,
    // but it is a whole zone of two nodes: a disruption.
    sims[0].kill();
    sims[1].kill();
    stays_running(
        &mut c,
        &ids,
        Duration::from_secs(8) + GRACE + Duration::from_secs(4),
    )
    .await;
    let r = node_loss_result(&cp).await;
    assert!(r.contains("DISRUPTION"), "{r}");
    assert!(r.contains(ZONES[0]), "{r}");

    // An alive node cannot be confirmed lost.
    let mut admin = admin_client(&ep).await;
    let e = admin
        .confirm_node_lost(pb::ConfirmNodeLostRequest {
            node_id: sims[2].node_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "IncorrectNodeState", "{e:?}");
    // The operator confirms one: only its instances stop.
    let gone = sims[0].node_id.clone();
    let resp = admin
        .confirm_node_lost(pb::ConfirmNodeLostRequest {
            node_id: gone.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.node.unwrap().state, "lost");
    for id in &gone_ids {
        let i = wait_state(&c, id, "stopped").await;
        assert!(i.state_reason.unwrap().message.contains("node lost"));
    }
    let others: Vec<String> = ids
        .iter()
        .filter(|i| !gone_ids.contains(i))
        .cloned()
        .collect();
    stays_running(&mut c, &others, Duration::from_secs(3)).await;
    cp.shutdown().await;
}

/// Nodes come back one by one after a disruption: the last one still
/// looking lost when the rest make the disruption rule pass gets one grace
/// from that moment (it may be a moment behind the others), and is judged
/// lost only if it stays away longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_straggler_after_a_disruption_gets_one_grace_before_it_is_judged() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let hosts = [
        ("a0", ZONES[0]),
        ("a1", ZONES[0]),
        ("b0", ZONES[1]),
        ("b1", ZONES[1]),
        ("c0", ZONES[2]),
        ("c1", ZONES[2]),
    ];
    let mut sims = agents(&ep, &hosts).await;
    let ids = launch(&mut c, &image, 6).await;
    let straggler_ids = ids_on(&sims[0]);
    assert!(!straggler_ids.is_empty(), "spread placed one on each node");
    let resume = sims[1].running();

    // Zone A vanishes: a disruption, nobody is stopped.
    sims[0].kill();
    sims[1].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = node_loss_result(&cp).await;
        if r.contains("DISRUPTION") {
            break;
        }
        assert!(Instant::now() < deadline, "no disruption declared: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // a1 comes back; a0 is the straggler. One node of six looks lost now,
    // which alone would be judged at once.
    let mut o = SimOptions::new(hosts[1].0, hosts[1].1, 4, 1024);
    o.resume = resume;
    let _back = SimAgent::start(&ep, sims[1].credential(), o).await.unwrap();
    let cleared = Instant::now();
    stays_running(
        &mut c,
        &straggler_ids,
        GRACE.saturating_sub(Duration::from_secs(2)),
    )
    .await;
    // It stays away: judged lost after the grace.
    for id in &straggler_ids {
        let i = wait_state(&c, id, "stopped").await;
        assert!(i.state_reason.unwrap().message.contains("node lost"));
    }
    assert!(
        cleared.elapsed() < GRACE + Duration::from_secs(15),
        "judged {:?} after the disruption cleared",
        cleared.elapsed()
    );
    let others: Vec<String> = ids
        .iter()
        .filter(|i| !straggler_ids.contains(i))
        .cloned()
        .collect();
    stays_running(&mut c, &others, Duration::from_secs(2)).await;
    cp.shutdown().await;
}
