//! Background tasks against a real etcd: node loss via lease expiry, garbage
//! collection of terminated instances, leadership moving between replicas,
//! and their status through the Admin `ListTasks` call.

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
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let mut c = compute(&ep, tenant(&ep, "t").await).await;
    let mut agent = SimAgent::start(&ep, enrol(), SimOptions::new("doomed", ZONES[0], 2, 512))
        .await
        .unwrap();
    // Two bystanders without the image (nothing is placed there): one node
    // of three is lost, not a disruption (domain::liveness).
    let mut bystanders = Vec::new();
    for (host, zone) in [("b1", ZONES[1]), ("b2", ZONES[2])] {
        let mut o = SimOptions::new(host, zone, 2, 512);
        o.images.clear();
        bystanders.push(SimAgent::start(&ep, enrol(), o).await.unwrap());
    }
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
    let nodes = a
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let n = nodes.iter().find(|n| n.node_id == agent.node_id).unwrap();
    assert_eq!(n.state, "lost");
    // The reconciler's change went through the outbox: its event names the
    // lost node and the reason.
    let events = c
        .describe_instance_events(pb::DescribeInstanceEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let last = events.iter().rfind(|e| e.instance_id == id).unwrap();
    assert_eq!(last.new_state, "stopped");
    assert_eq!(last.reason_code, "Server.InternalError");
    assert_eq!(last.node_id, n.node_id);
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
    let _agent = SimAgent::start(
        &ep,
        agent.credential(),
        SimOptions::new("doomed", ZONES[0], 2, 512),
    )
    .await
    .unwrap();
    c.start_instances(pb::StartInstancesRequest {
        instance_ids: vec![id.clone()],
    })
    .await
    .unwrap();
    wait_state(&c, &id, "running").await;
    let n = a
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(n.len(), 3, "re-registration keeps the node id");
    assert!(n.iter().all(|n| n.state == "ready"), "{n:?}");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_instances_are_collected_and_leadership_moves() {
    let Some(etcd) = start_etcd() else {
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
    let Some(etcd) = start_etcd() else {
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
async fn list_tasks_shows_each_task_and_a_failing_task_does_not_stop_the_others() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let a = start(config(&etcd)).await;
    let b = start(config(&etcd)).await;
    let d = &a.domain;
    let key = d.store().keys().pending_reservations() + "r-0000000000000000a";
    let mut tx = nubis_control_plane::store::Tx::new();
    tx.put_raw(&key, b"{not json".to_vec());
    d.store().commit(tx).await.unwrap().unwrap();
    assert!(d.resume_pending_reservations(Duration::ZERO).await.is_err());

    // Whichever replica leads shows the failing task's error while node
    // loss and garbage collection keep running.
    let mut seen_leader = String::new();
    let mut views = Vec::new();
    for r in [&a, &b] {
        let admin = admin_client(&endpoint(r)).await;
        let v = eventually(Duration::from_secs(30), "a leader", || {
            let mut admin = admin.clone();
            async move {
                let v = admin
                    .list_tasks(pb::ListTasksRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                (!v.leader.is_empty()).then_some(v)
            }
        })
        .await;
        if seen_leader.is_empty() {
            seen_leader = v.leader.clone();
        }
        assert_eq!(v.leader, seen_leader, "both replicas name one leader");
        let names: Vec<&str> = v.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node-loss",
                "pending-reservations",
                "instance-gc",
                "client-token-gc",
                "event-gc",
                "billing-export",
                "autoscaling"
            ]
        );
        assert!(v.tasks.iter().all(|t| t.mode == "leader-only"));
        views.push(v);
    }
    assert_eq!(
        views.iter().filter(|v| v.is_leader).count(),
        1,
        "exactly one replica leads"
    );
    let leader = if views[0].is_leader { &a } else { &b };
    let admin = admin_client(&endpoint(leader)).await;
    let v = eventually(Duration::from_secs(30), "task runs", || {
        let mut admin = admin.clone();
        async move {
            let v = admin
                .list_tasks(pb::ListTasksRequest {})
                .await
                .unwrap()
                .into_inner();
            let t = |n: &str| v.tasks.iter().find(|t| t.name == n).cloned().unwrap();
            (t("pending-reservations").failures >= 2
                && t("node-loss").runs >= 2
                && t("instance-gc").runs >= 1)
                .then_some(v)
        }
    })
    .await;
    let t = |n: &str| v.tasks.iter().find(|t| t.name == n).cloned().unwrap();
    assert!(
        !t("pending-reservations").last_error.is_empty(),
        "{:?}",
        t("pending-reservations")
    );
    for name in ["node-loss", "instance-gc", "client-token-gc", "event-gc"] {
        let s = t(name);
        assert!(s.active, "{s:?}");
        assert_eq!(s.last_error, "", "{s:?}");
        assert_eq!(s.failures, 0, "{s:?}");
        assert!(s.last_end_unix_ms >= s.last_start_unix_ms, "{s:?}");
        assert!(s.next_due_unix_ms > 0, "{s:?}");
    }
    assert!(t("node-loss")
        .last_result
        .contains("0 of 0 nodes look lost"));
    assert!(t("node-loss").activation_prefix.ends_with("/n/alive/"));
    // The standby runs nothing.
    let other = if views[0].is_leader { &b } else { &a };
    let v = admin_client(&endpoint(other))
        .await
        .list_tasks(pb::ListTasksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!v.is_leader);
    assert!(v.tasks.iter().all(|t| !t.active && t.runs == 0), "{v:?}");
    // Tenants may not call it.
    let mut tenant_admin = pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(
        nubis_proto::transport::connect(&endpoint(&a))
            .await
            .unwrap(),
        tenant(&endpoint(&a), "t2").await,
    ));
    assert!(tenant_admin
        .list_tasks(pb::ListTasksRequest {})
        .await
        .is_err());
    a.shutdown().await;
    b.shutdown().await;
}
