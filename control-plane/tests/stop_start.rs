//! Stop/start against a real etcd and simulated agents: a stopped instance
//! keeps its node, address and assignment (desired `stopped`, so the agent
//! keeps its disk) and gives back its vCPU/memory; Start re-claims them on
//! the same node or fails with `InsufficientInstanceCapacity` (no
//! migration); Terminate of a stopped instance leaves the node.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_control_plane::sim::{SimAgent, SimOptions, SimPhase};
use nubis_proto::compute::v1 as pb;
use support::*;

async fn node(a: &mut Admin, host: &str) -> pb::NodeInfo {
    a.list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .find(|n| n.host_id == host)
        .unwrap()
}

async fn launch(c: &mut Compute, image: &str) -> String {
    let mut req = run_req(image, 1);
    req.availability_zone = ZONES[0].into();
    let id = c
        .run_instances(req)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap()
        .instances[0]
        .instance_id
        .clone();
    wait_state(c, &id, "running").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_keeps_the_node_and_start_reclaims_it_there() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let mut a = admin_client(&ep).await;
    // Room for exactly one t3.nano (64 MiB).
    let small = SimAgent::start(&ep, enrol(), SimOptions::new("small", ZONES[0], 4, 64))
        .await
        .unwrap();
    let first = launch(&mut c, &image).await;
    let ip = state_of(&mut c, &first).await.private_ip_address;
    assert!(!ip.is_empty());

    // Stop: vCPU/memory go back; the address and assignment stay (the agent
    // was told `stopped`, not to forget the instance).
    c.stop_instances(pb::StopInstancesRequest {
        instance_ids: vec![first.clone()],
        force: false,
    })
    .await
    .unwrap();
    let stopped = wait_state(&c, &first, "stopped").await;
    assert_eq!(
        stopped.private_ip_address, ip,
        "a stopped instance keeps its address"
    );
    assert_eq!(small.phase(&first).map(|p| p.0), Some(SimPhase::Stopped));
    let n = node(&mut a, "small").await;
    assert_eq!(n.allocated.as_ref().unwrap().memory_mib, 0);
    assert_eq!(n.allocated.as_ref().unwrap().vcpus, 0);
    assert_eq!(
        n.instance_count, 1,
        "the stopped instance still lives there"
    );

    // Another instance takes the freed memory; a roomy node joins the zone.
    let second = launch(&mut c, &image).await;
    assert_eq!(small.phase(&second).map(|p| p.0), Some(SimPhase::Running));
    let _big = SimAgent::start(&ep, enrol(), SimOptions::new("big", ZONES[0], 8, 4096))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "big node ready", || {
        let mut a = a.clone();
        async move { (node(&mut a, "big").await.state == "ready").then_some(()) }
    })
    .await;

    // Start: its node is full; no migration to the roomy one.
    let e = c
        .start_instances(pb::StartInstancesRequest {
            instance_ids: vec![first.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InsufficientInstanceCapacity", "{e:?}");
    assert!(e.message().contains(ZONES[0]), "{}", e.message());
    assert_eq!(
        state_of(&mut c, &first).await.state.unwrap().name,
        "stopped"
    );
    assert_eq!(node(&mut a, "big").await.instance_count, 0);

    // Room again on its node: Start re-claims it there, same address.
    c.terminate_instances(pb::TerminateInstancesRequest {
        instance_ids: vec![second.clone()],
    })
    .await
    .unwrap();
    wait_state(&c, &second, "terminated").await;
    let ch = c
        .start_instances(pb::StartInstancesRequest {
            instance_ids: vec![first.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ch.starting_instances[0]
            .current_state
            .as_ref()
            .unwrap()
            .name,
        "pending"
    );
    let running = wait_state(&c, &first, "running").await;
    assert_eq!(running.private_ip_address, ip);
    assert_eq!(small.phase(&first).map(|p| p.0), Some(SimPhase::Running));
    let n = node(&mut a, "small").await;
    assert_eq!(n.allocated.as_ref().unwrap().memory_mib, 64);
    assert_eq!(n.instance_count, 1);

    // Terminate from stopped: the node forgets it (assignment deleted).
    c.stop_instances(pb::StopInstancesRequest {
        instance_ids: vec![first.clone()],
        force: true,
    })
    .await
    .unwrap();
    wait_state(&c, &first, "stopped").await;
    c.terminate_instances(pb::TerminateInstancesRequest {
        instance_ids: vec![first.clone()],
    })
    .await
    .unwrap();
    let gone = wait_state(&c, &first, "terminated").await;
    assert_eq!(gone.private_ip_address, "");
    eventually(Duration::from_secs(30), "assignment removed", || {
        let p = small.phase(&first);
        async move { p.is_none().then_some(()) }
    })
    .await;
    let n = node(&mut a, "small").await;
    assert_eq!(n.allocated.as_ref().unwrap().memory_mib, 0);
    assert_eq!(n.instance_count, 0);
    cp.shutdown().await;
}
