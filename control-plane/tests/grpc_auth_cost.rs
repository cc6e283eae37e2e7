//! What authenticating a signed gRPC call costs (issue 16: each accepted
//! nonce is written to etcd). Measurements, not checks, so ignored by
//! default; docs/security.md ("Requests") has the figures and the command:
//!
//! `cargo nextest run -p nubis-control-plane --test grpc_auth_cost --run-ignored only --no-capture`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use nubis_proto::compute::v1 as pb;
use support::*;

const CALLS: usize = 300;

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 9 / 10])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --run-ignored only --no-capture"]
async fn signed_call_latency() {
    let Some(etcd) = start_etcd() else { return };
    let r = start(config(&etcd)).await;
    let ep = endpoint(&r);
    let alice = tenant(&ep, "alice").await;
    let mut c = compute(&ep, alice).await;
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 20 {
        let t = Instant::now();
        c.describe_key_pairs(pb::DescribeKeyPairsRequest::default())
            .await
            .unwrap();
        if i >= 20 {
            took.push(t.elapsed());
        }
        // Stay under the default gRPC rate limit (50/s per account).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (p50, p90) = percentiles(took);
    println!("signed DescribeKeyPairs over {CALLS} calls: p50 {p50:?}, p90 {p90:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --run-ignored only --no-capture"]
async fn nonce_write_latency() {
    let Some(etcd) = start_etcd() else { return };
    let r = start(config(&etcd)).await;
    let leases = nubis_control_plane::domain::nonces::NonceLeases::default();
    let store = r.domain.store();
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 20 {
        let nonce = format!("{i:032x}");
        let t = Instant::now();
        assert!(leases.record(store, "NKIABENCH", &nonce).await.unwrap());
        if i >= 20 {
            took.push(t.elapsed());
        }
    }
    let (p50, p90) = percentiles(took);
    println!("etcd nonce write over {CALLS} writes: p50 {p50:?}, p90 {p90:?}");
    r.shutdown().await;
}
