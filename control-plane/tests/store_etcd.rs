//! The store against a real etcd: compare-and-swap conflicts and a watch
//! that resumes from a compacted revision (re-list instead of losing events).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_control_plane::error::Error;
use nubis_control_plane::store::watch::{watch_prefix_from, WatchItem};
use nubis_control_plane::store::{Fence, Record, Store, Tx};
use serde::{Deserialize, Serialize};
use support::*;

/// A bare number as a record (not versioned: not a JSON object).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct N(u32);

impl Record for N {
    const KIND: &'static str = "n";
    const SCHEMA: u32 = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_conflicts() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let store = Store::connect(std::slice::from_ref(&etcd.endpoint), "/t")
        .await
        .unwrap();
    // Create-if-absent: only the first wins.
    let mut a = Tx::new();
    a.expect_absent("/t/k").put("/t/k", &N(1)).unwrap();
    let mut b = Tx::new();
    b.expect_absent("/t/k").put("/t/k", &N(2)).unwrap();
    let rev = store.commit(a).await.unwrap().expect("first create wins");
    assert!(
        store.commit(b).await.unwrap().is_none(),
        "second create loses"
    );
    let v = store.get::<N>("/t/k").await.unwrap().unwrap();
    assert_eq!((v.value, v.mod_revision), (N(1), rev));
    // Two writers read the same revision: one update wins, the other sees a conflict.
    let mut w1 = Tx::new();
    w1.expect_rev("/t/k", v.mod_revision)
        .put("/t/k", &N(10))
        .unwrap();
    let mut w2 = Tx::new();
    w2.expect_rev("/t/k", v.mod_revision)
        .put("/t/k", &N(20))
        .unwrap();
    let (r1, r2) = tokio::join!(store.commit(w1), store.commit(w2));
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(
        r1.is_some() ^ r2.is_some(),
        "exactly one concurrent CAS succeeds"
    );
    let now = store.get::<N>("/t/k").await.unwrap().unwrap().value;
    assert_eq!(now, N(if r1.is_some() { 10 } else { 20 }));
    // A failed transaction writes nothing at all.
    let mut w3 = Tx::new();
    w3.expect_rev("/t/k", 1).put("/t/other", &N(1)).unwrap();
    assert!(store.commit(w3).await.unwrap().is_none());
    assert!(store.get_raw("/t/other").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_relists() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let store = Store::connect(std::slice::from_ref(&etcd.endpoint), "/t")
        .await
        .unwrap();
    let mut first = 0;
    for i in 0..10u32 {
        let mut tx = Tx::new();
        tx.put(&format!("/t/w/{i}"), &N(i)).unwrap();
        let r = store.commit(tx).await.unwrap().unwrap();
        if i == 0 {
            first = r;
        }
    }
    let mut tx = Tx::new();
    tx.delete("/t/w/3");
    let last = store.commit(tx).await.unwrap().unwrap();
    store
        .client()
        .kv_client()
        .compact(last, None)
        .await
        .unwrap();

    // Resuming from before the compaction: etcd cancels, we get a snapshot.
    let mut rx = watch_prefix_from(store.clone(), "/t/w/".into(), Some(first));
    let item = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    match item {
        WatchItem::Snapshot { kvs, revision } => {
            assert_eq!(kvs.len(), 9, "every live key, without the deleted one");
            assert!(revision >= last);
        }
        other => panic!("expected a snapshot after compaction, got {other:?}"),
    }
    // And then live events follow.
    let mut tx = Tx::new();
    tx.put("/t/w/new", &N(1)).unwrap();
    store.commit(tx).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(item, WatchItem::Put { ref key, .. } if key == "/t/w/new"),
        "{item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_commits_fail_once_the_leader_key_is_gone() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let store = Store::connect(std::slice::from_ref(&etcd.endpoint), "/f")
        .await
        .unwrap();
    let put = |v: u32| {
        let mut tx = Tx::new();
        tx.put("/f/data", &N(v)).unwrap();
        tx
    };
    // Elected: the leader key exists with the create revision we hold.
    let created = store.commit(put_leader()).await.unwrap().unwrap();
    let fence = Fence::new("/f/election/x", created);
    assert!(fence
        .clone()
        .scope(store.commit(put(1)))
        .await
        .unwrap()
        .is_some());
    // Updating the key's value keeps its create revision: still leader.
    store.commit(put_leader()).await.unwrap().unwrap();
    assert!(fence
        .clone()
        .scope(store.commit(put(2)))
        .await
        .unwrap()
        .is_some());
    // Still leader, but the caller's own compare fails: a lost race
    // (`None`, worth retrying), not a fenced write.
    let mut stale = put(9);
    stale.expect_absent("/f/data");
    assert!(fence
        .clone()
        .scope(store.commit(stale))
        .await
        .unwrap()
        .is_none());
    // Deposed (key deleted, e.g. lease expired): fenced writes fail with
    // `Fenced` (no retry can succeed) and write nothing; unfenced writes are
    // unaffected.
    let mut del = Tx::new();
    del.delete("/f/election/x");
    store.commit(del).await.unwrap().unwrap();
    let e = fence.clone().scope(store.commit(put(3))).await.unwrap_err();
    assert!(matches!(e, Error::Fenced), "{e}");
    assert_eq!(
        store.get::<N>("/f/data").await.unwrap().unwrap().value,
        N(2)
    );
    // A new leader's key (new create revision) does not revive the old fence.
    store.commit(put_leader()).await.unwrap().unwrap();
    let e = fence.clone().scope(store.commit(put(4))).await.unwrap_err();
    assert!(matches!(e, Error::Fenced), "{e}");
    assert!(store.commit(put(5)).await.unwrap().is_some());
}

fn put_leader() -> Tx {
    let mut tx = Tx::new();
    tx.put_raw("/f/election/x", b"replica-a".to_vec());
    tx
}
