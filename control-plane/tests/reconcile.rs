//! Reconcilers against a real etcd: node loss via lease expiry, garbage
//! collection of terminated instances, and leadership moving between replicas.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use nubis_control_plane::ids::ReservationId;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_stops_instances_and_releases_capacity() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let mut agent = SimAgent::start(&ep, enrol(), SimOptions::new("doomed", ZONES[0], 2, 512))
        .await
        .unwrap();
    let res = c
        .run_instances(run_req(&image, 2))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let id = res.instances[0].instance_id.clone();
    wait_state(&c, &id, "running").await;

    agent.kill(); // no more heartbeats: the 8 s lease expires
    let stopped = wait_state(&c, &id, "stopped").await;
    let reason = stopped.state_reason.unwrap();
    assert_eq!(reason.code, "Server.InternalError");
    assert!(reason.message.contains("node lost"), "{}", reason.message);
    wait_state(&c, &res.instances[1].instance_id, "stopped").await;
    let mut a = admin_client(&ep).await;
    let n = &a
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes[0];
    assert_eq!(n.state, "lost");
    assert_eq!(n.allocated.as_ref().unwrap().memory_mib, 0);
    assert_eq!(
        n.instance_count, 2,
        "stopped instances keep their node (their disk is there)"
    );
    // No migration: Start fails while the node is lost.
    let e = c
        .start_instances(pb::StartInstancesRequest {
            instance_ids: vec![id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InsufficientInstanceCapacity", "{e:?}");

    // The host comes back (same host id = same node); the instance starts again there.
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("doomed", ZONES[0], 2, 512))
        .await
        .unwrap();
    c.start_instances(pb::StartInstancesRequest {
        instance_ids: vec![id.clone()],
    })
    .await
    .unwrap();
    wait_state(&c, &id, "running").await;
    let n = &a
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(n.len(), 1, "re-registration keeps the node id");
    assert_eq!(n[0].state, "ready");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_instances_are_collected_and_leadership_moves() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.reconciler.gc_terminated_after_seconds = 1;
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let ep = endpoint(&b);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[1], 2, 512))
        .await
        .unwrap();
    let res = c
        .run_instances(run_req(&image, 1))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    let id = res.instances[0].instance_id.clone();
    wait_state(&c, &id, "running").await;
    // Whichever replica leads, stopping it must hand the loops over.
    a.shutdown().await;
    c.terminate_instances(pb::TerminateInstancesRequest {
        instance_ids: vec![id.clone()],
    })
    .await
    .unwrap();
    wait_state(&c, &id, "terminated").await;
    eventually(Duration::from_secs(60), "garbage collection", || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let e = c
                .describe_instances(pb::DescribeInstancesRequest {
                    instance_ids: vec![id],
                    ..Default::default()
                })
                .await
                .err()?;
            (ec2_code(&e) == "InvalidInstanceID.NotFound").then_some(())
        }
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_outlive_their_instances_and_a_day_then_go() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 2, 512))
        .await
        .unwrap();
    let mut req = run_req(&image, 1);
    req.client_token = "tok-gc-1".into();
    let first = c.run_instances(req.clone()).await.unwrap().into_inner();
    let res = first.reservation.unwrap();
    let d = &cp.domain;
    let day = nubis_control_plane::domain::nodes::CLIENT_TOKEN_TTL.as_millis() as i64;
    let later = nubis_control_plane::domain::model::now_ms() + 2 * day;

    // Its instance still exists: the token stays, however old.
    let live: HashSet<ReservationId> = [ReservationId::parse(&res.reservation_id).unwrap()].into();
    assert_eq!(d.collect_client_tokens(&live, later).await.unwrap(), 0);
    // Younger than a day: stays even with no instance left.
    assert_eq!(
        d.collect_client_tokens(
            &HashSet::new(),
            nubis_control_plane::domain::model::now_ms()
        )
        .await
        .unwrap(),
        0
    );
    let again = c.run_instances(req.clone()).await.unwrap().into_inner();
    assert_eq!(
        again.reservation.unwrap().reservation_id,
        res.reservation_id,
        "the token still answers with the same reservation"
    );
    // Older than a day and no instance left: collected, and the token is
    // free for a new request.
    assert_eq!(
        d.collect_client_tokens(&HashSet::new(), later)
            .await
            .unwrap(),
        1
    );
    let (left, _) = d
        .store()
        .list::<nubis_control_plane::domain::model::ClientTokenRecord>(
            &d.store().keys().all_client_tokens(),
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    // A record without instance ids belongs to a large reservation still
    // being written in batches: kept whatever its age.
    let key = d.store().keys().all_client_tokens() + "acct/pending";
    let mut tx = nubis_control_plane::store::Tx::new();
    tx.put(
        &key,
        &nubis_control_plane::domain::model::ClientTokenRecord {
            reservation_id: ReservationId::generate(),
            instance_ids: vec![],
            request_hash: "h".into(),
            created_ms: 0,
        },
    )
    .unwrap();
    d.store().commit(tx).await.unwrap().unwrap();
    assert_eq!(
        d.collect_client_tokens(&HashSet::new(), later)
            .await
            .unwrap(),
        0
    );
    assert!(d.store().get_raw(&key).await.unwrap().is_some());
    let fresh = c.run_instances(req).await.unwrap().into_inner();
    assert_ne!(
        fresh.reservation.unwrap().reservation_id,
        res.reservation_id
    );
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pending_reservation_does_not_stop_the_pass() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = &cp.domain;
    let key = d.store().keys().pending_reservations() + "r-0000000000000000a";
    let mut tx = nubis_control_plane::store::Tx::new();
    tx.put_raw(&key, b"{not json".to_vec());
    d.store().commit(tx).await.unwrap().unwrap();
    // The saga phase fails to read it, but the pass (node loss, garbage
    // collection) still completes.
    assert!(d.resume_pending_reservations(Duration::ZERO).await.is_err());
    let report = nubis_control_plane::reconciler::pass(d, true)
        .await
        .expect("the pass goes on past an unreadable pending reservation");
    assert_eq!(report.collected, 0);
    cp.shutdown().await;
}
