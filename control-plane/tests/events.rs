//! The event outbox against a real etcd with simulated agents: each
//! lifecycle change writes exactly one event, chained by sequence; racing
//! writers write one event per change that committed; events outlive the
//! instance record; reads page through a time range, per account only;
//! retention deletes only old events.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nubis_control_plane::domain::events::{EventKind, EventQuery, InstanceEvent, StoredEvent};
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::model::now_ms;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_control_plane::store::Tx;
use nubis_control_plane::tasks::Task;
use support::*;

async fn account(d: &Domain, name: &str) -> Caller {
    let (a, _, _) = d.create_account(&Caller::Operator, name).await.unwrap();
    Caller::Tenant(a.id)
}

/// Every event of the caller's account (all pages).
async fn all_events(d: &Domain, c: &Caller, account: Option<&str>) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = d
            .list_events(
                c,
                &EventQuery {
                    account: account.map(str::to_string),
                    max_results: Some(7),
                    next_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out.extend(page.events);
        match page.next_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

/// Checks each instance's events form one chain (seq 0.., each old state =
/// the previous new state, created first) and returns them per instance.
fn chains(events: &[StoredEvent]) -> HashMap<String, Vec<InstanceEvent>> {
    let mut per: HashMap<String, Vec<InstanceEvent>> = HashMap::new();
    for e in events {
        per.entry(e.event.instance_id.to_string())
            .or_default()
            .push(e.event.clone());
    }
    for (id, evs) in per.iter_mut() {
        evs.sort_by_key(|e| e.seq);
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(e.seq, n as u64, "{id}: sequence without gap or double");
            if n == 0 {
                assert_eq!(e.kind, EventKind::Created);
                assert_eq!(e.old_state, None);
                assert_eq!(e.new_state, State::Pending);
            } else {
                assert_eq!(e.old_state, Some(evs_prev_state(evs, n)), "{id}: chained");
                assert_ne!(e.old_state, Some(e.new_state));
            }
            assert_eq!(e.instance_type, "t3.nano");
            assert!(e.node_id.is_some(), "{id}: event names the node");
        }
    }
    per
}

fn evs_prev_state(evs: &[InstanceEvent], n: usize) -> State {
    evs[n - 1].new_state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_writes_one_event_and_events_outlive_the_instance() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let caller = setup_account(&d).await;
    let image = register_image(&d).await;
    let _agent = SimAgent::start(
        &endpoint(&cp),
        enrol(),
        SimOptions::new("h1", ZONES[0], 8, 8192),
    )
    .await
    .unwrap();

    let before = now_ms();
    let r = d
        .run_instances(&caller, nano_input(&image, 2))
        .await
        .unwrap();
    let ids: Vec<String> = r.instances.iter().map(|i| i.id.to_string()).collect();
    for id in &ids {
        wait_domain_state(&d, &caller, id, State::Running).await;
    }
    d.stop_instances(&caller, &ids[..1], false).await.unwrap();
    wait_domain_state(&d, &caller, &ids[0], State::Stopped).await;
    d.start_instances(&caller, &ids[..1]).await.unwrap();
    wait_domain_state(&d, &caller, &ids[0], State::Running).await;
    d.terminate_instances(&caller, &ids).await.unwrap();
    for id in &ids {
        wait_domain_state(&d, &caller, id, State::Terminated).await;
    }

    let events = all_events(&d, &caller, None).await;
    let per = chains(&events);
    assert_eq!(per.len(), 2);
    for id in &ids {
        let evs = &per[id];
        let inst = d.instance(&caller, id).await.unwrap().value;
        assert_eq!(
            inst.event_seq,
            evs.len() as u64 - 1,
            "the record names its last event"
        );
        let last = evs.last().unwrap();
        assert_eq!(last.kind, EventKind::Terminated);
        assert_eq!(last.new_state, State::Terminated);
        assert!(evs.iter().all(|e| e.time_ms >= before));
        assert_eq!(last.availability_zone, ZONES[0]);
    }
    // The stopped-and-started one went through stopped and pending twice.
    let states: Vec<State> = per[&ids[0]].iter().map(|e| e.new_state).collect();
    assert_eq!(states.iter().filter(|s| **s == State::Stopped).count(), 1);
    assert_eq!(states.iter().filter(|s| **s == State::Pending).count(), 2);
    assert_eq!(states.iter().filter(|s| **s == State::Running).count(), 2);

    // Garbage collection removes the instance records, not their events.
    let (collected, _) = d.collect_terminated(Duration::ZERO).await.unwrap();
    assert_eq!(collected, 2);
    assert!(d.instance(&caller, &ids[0]).await.is_err());
    assert_eq!(all_events(&d, &caller, None).await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_changes_write_one_event_per_committed_change() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let caller = setup_account(&d).await;
    let image = register_image(&d).await;
    // Registered only: instances stay pending, nothing else writes them.
    let mut o = SimOptions::new("h1", ZONES[0], 8, 8192);
    o.run_instances = false;
    let _agent = SimAgent::start(&endpoint(&cp), enrol(), o).await.unwrap();
    let r = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap();
    let id = r.instances[0].id.to_string();

    // Eight concurrent stops and terminates of one instance, on two
    // replicas' worth of tasks: each loser re-reads and retries.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (d, c, id) = (d.clone(), caller.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let ids = [id];
            if n % 2 == 0 {
                let _ = d.stop_instances(&c, &ids, true).await;
            } else {
                let _ = d.terminate_instances(&c, &ids).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let inst = d.instance(&caller, &id).await.unwrap().value;
    let events = all_events(&d, &caller, None).await;
    let per = chains(&events);
    let evs = &per[&id];
    assert_eq!(
        evs.len() as u64,
        inst.event_seq + 1,
        "one event per committed change, no more"
    );
    assert_eq!(evs.last().unwrap().new_state, inst.state);
    assert!(evs.len() >= 2, "at least one change committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_page_through_a_time_range_of_one_account() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let alice = setup_account(&d).await;
    let bob = account(&d, "bob").await;
    let image = register_image(&d).await;
    let mut o = SimOptions::new("h1", ZONES[0], 32, 32768);
    o.run_instances = false;
    let _agent = SimAgent::start(&endpoint(&cp), enrol(), o).await.unwrap();

    let t0 = now_ms();
    d.run_instances(&alice, nano_input(&image, 9))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t1 = now_ms();
    d.run_instances(&bob, nano_input(&image, 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    d.run_instances(&alice, nano_input(&image, 3))
        .await
        .unwrap();

    // Pages of 5 over everything: 5, 5, 2, in key (time) order.
    let q = |from, to, token| EventQuery {
        from_ms: from,
        to_ms: to,
        max_results: Some(5),
        next_token: token,
        ..Default::default()
    };
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let p = d.list_events(&alice, &q(0, None, token)).await.unwrap();
        sizes.push(p.events.len());
        all.extend(p.events);
        match p.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(sizes, [5, 5, 2]);
    assert!(all
        .windows(2)
        .all(|w| w[0].event.time_ms <= w[1].event.time_ms));
    assert!(all
        .iter()
        .all(|e| e.event.account.to_string() == alice.account().unwrap().to_string()));
    // Revisions: every event its own commit order position.
    let mut revs: Vec<i64> = all.iter().map(|e| e.revision).collect();
    revs.dedup();
    assert_eq!(revs.len(), 2, "two launches = two transactions");

    // Only the first launch's events lie in [t0, t1).
    let first = d.list_events(&alice, &q(t0, Some(t1), None)).await.unwrap();
    assert_eq!(first.events.len(), 5);
    let first = d
        .list_events(
            &alice,
            &EventQuery {
                from_ms: t0,
                to_ms: Some(t1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.events.len(), 9);
    assert!(first.next_token.is_none());
    let later = d
        .list_events(&alice, &q(t1, None, None))
        .await
        .unwrap()
        .events;
    assert_eq!(later.len(), 3);

    // Bad input.
    let err = d
        .list_events(&alice, &q(t1, Some(t0), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InvalidParameterValue", "reversed range");
    for bad in ["zz", "00", &hex::encode("x/y/z")] {
        let err = d
            .list_events(&alice, &q(0, None, Some(bad.to_string())))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "InvalidNextToken", "{bad}");
    }
    let mut big = q(0, None, None);
    big.max_results = Some(5000);
    assert!(d.list_events(&alice, &big).await.is_err());

    // Tenants see only their own account; the operator any.
    let bobs = all_events(&d, &bob, None).await;
    assert_eq!(bobs.len(), 2);
    let alice_id = alice.account().unwrap().to_string();
    let err = d
        .list_events(
            &bob,
            &EventQuery {
                account: Some(alice_id.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "UnauthorizedOperation");
    assert_eq!(
        all_events(&d, &Caller::Operator, Some(&alice_id))
            .await
            .len(),
        12
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_expired_events() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let alice = setup_account(&d).await;
    let bob = account(&d, "bob").await;
    let image = register_image(&d).await;
    let mut o = SimOptions::new("h1", ZONES[0], 8, 8192);
    o.run_instances = false;
    let _agent = SimAgent::start(&endpoint(&cp), enrol(), o).await.unwrap();
    let a = d
        .run_instances(&alice, nano_input(&image, 1))
        .await
        .unwrap();
    let b = d.run_instances(&bob, nano_input(&image, 1)).await.unwrap();

    // Back-dated copies: one just past the 400-day default, one just inside.
    let day = 86_400_000i64;
    let now = now_ms();
    let keys = d.store().keys().clone();
    for (r, ages) in [(&a, [401, 399]), (&b, [500, 1])] {
        let mut ev = d
            .list_events(
                &Caller::Operator,
                &EventQuery {
                    account: Some(r.owner.to_string()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .events[0]
            .event
            .clone();
        for (n, age) in ages.into_iter().enumerate() {
            ev.time_ms = now - age * day;
            ev.seq = 100 + n as u64;
            let mut tx = Tx::new();
            nubis_control_plane::domain::events::stage(&keys, &mut tx, &ev).unwrap();
            assert!(d.store().commit(tx).await.unwrap().is_some());
        }
    }
    assert_eq!(all_events(&d, &alice, None).await.len(), 3);
    assert_eq!(d.collect_expired_events(now).await.unwrap(), 2);
    let left: Vec<i64> = all_events(&d, &alice, None)
        .await
        .iter()
        .map(|e| (now - e.event.time_ms) / day)
        .collect();
    assert_eq!(left, [399, 0]);
    assert_eq!(all_events(&d, &bob, None).await.len(), 2);
    // Nothing left to collect.
    assert_eq!(d.collect_expired_events(now).await.unwrap(), 0);

    // The `event-gc` background task runs the same retention.
    let mut ev = all_events(&d, &bob, None).await[0].event.clone();
    ev.time_ms = now - 450 * day;
    ev.seq = 200;
    let mut tx = Tx::new();
    nubis_control_plane::domain::events::stage(&keys, &mut tx, &ev).unwrap();
    assert!(d.store().commit(tx).await.unwrap().is_some());
    assert_eq!(all_events(&d, &bob, None).await.len(), 3);
    let summary = nubis_control_plane::tasks::builtin::EventGc(d.clone())
        .run(&nubis_control_plane::tasks::RunContext { term: None })
        .await
        .unwrap();
    assert_eq!(summary, "deleted 1 expired events");
    assert_eq!(all_events(&d, &bob, None).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_describe_instance_events_is_per_account() {
    use nubis_proto::compute::v1 as pb;
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let mut o = SimOptions::new("h1", ZONES[0], 8, 8192);
    o.run_instances = false;
    let _agent = SimAgent::start(&ep, enrol(), o).await.unwrap();
    let image = hello_image(&ep).await;
    let mut alice = compute(&ep, tenant(&ep, "alice").await).await;
    let mut bob = compute(&ep, tenant(&ep, "bob").await).await;
    let r = alice
        .run_instances(run_req(&image, 2))
        .await
        .unwrap()
        .into_inner();
    let owner = r.reservation.unwrap().owner_id;
    let req = |account: &str, max: u32, token: &str| pb::DescribeInstanceEventsRequest {
        account_id: account.into(),
        max_results: max,
        next_token: token.into(),
        ..Default::default()
    };
    let p1 = alice
        .describe_instance_events(req("", 1, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.events.len(), 1);
    assert!(!p1.next_token.is_empty());
    let e = &p1.events[0];
    assert_eq!((e.kind.as_str(), e.old_state.as_str()), ("created", ""));
    assert_eq!(e.new_state, "pending");
    assert_eq!(e.account_id, owner);
    assert_eq!(e.availability_zone, ZONES[0]);
    assert!(e.revision > 0 && e.time_ms > 0 && !e.node_id.is_empty());
    let p2 = alice
        .describe_instance_events(req("", 1, &p1.next_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.events.len(), 1);
    assert!(p2.next_token.is_empty());
    assert_ne!(p2.events[0].instance_id, e.instance_id);

    // Bob sees nothing of Alice's, and may not ask for her account.
    let none = bob
        .describe_instance_events(req("", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(none.events.is_empty());
    let err = bob
        .describe_instance_events(req(&owner, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&err), "UnauthorizedOperation");
    let err = alice
        .describe_instance_events(req("", 0, "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&err), "InvalidNextToken");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The operator reads any account.
    let mut op = compute(&ep, admin()).await;
    let all = op
        .describe_instance_events(req(&owner, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.events.len(), 2);
}
