//! Signed gRPC requests cannot be replayed (issue 16): the signature covers
//! the body digest, nonces live in etcd (so a replay fails on another
//! replica and after a restart), dates are good for 5 minutes either way,
//! and each account has a rate limit. Real etcd, real replicas, real
//! sockets; requests are built by hand so that their headers can be reused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use nubis_proto::auth::{grpc_body_digest, sign, Credentials, SignedHeaders};
use nubis_proto::compute::v1 as pb;
use support::*;

const CREATE_KEY_PAIR: &str = "/nubis.compute.v1.Compute/CreateKeyPair";

fn key_pair(name: &str) -> pb::CreateKeyPairRequest {
    pb::CreateKeyPairRequest {
        key_name: name.into(),
        key_type: "ed25519".into(),
        tags: vec![],
    }
}

/// Sends `msg` to `endpoint` with exactly these signing headers (what an
/// attacker who captured them would do).
async fn send_with(
    endpoint: &str,
    headers: &SignedHeaders,
    msg: pb::CreateKeyPairRequest,
) -> Result<pb::CreateKeyPairResponse, tonic::Status> {
    let ch = nubis_proto::transport::connect(endpoint).await.unwrap();
    let h = headers.clone();
    let mut c = pb::compute_client::ComputeClient::with_interceptor(
        ch,
        move |mut req: tonic::Request<()>| {
            h.apply(req.metadata_mut()).unwrap();
            Ok(req)
        },
    );
    c.create_key_pair(msg).await.map(|r| r.into_inner())
}

fn signed_for(
    creds: &Credentials,
    msg: &pb::CreateKeyPairRequest,
    at: SystemTime,
) -> SignedHeaders {
    sign(creds, CREATE_KEY_PAIR, &grpc_body_digest(msg), at)
}

async fn key_names(endpoint: &str, creds: &Credentials) -> Vec<String> {
    let mut c = compute(endpoint, creds.clone()).await;
    let r = c
        .describe_key_pairs(pb::DescribeKeyPairsRequest::default())
        .await
        .unwrap()
        .into_inner();
    r.key_pairs.into_iter().map(|k| k.key_name).collect()
}

fn assert_unauthenticated(r: Result<pb::CreateKeyPairResponse, tonic::Status>, why: &str) {
    let st = r.expect_err("the request must be refused");
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    assert_eq!(ec2_code(&st), "AuthFailure");
    assert!(st.message().contains(why), "{why:?} not in {st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_is_good_once_for_its_body_on_every_replica_and_after_restarts() {
    let Some(etcd) = start_etcd() else { return };
    let a = start(config(&etcd)).await;
    let b = start(config(&etcd)).await;
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let alice = tenant(&ea, "alice").await;

    // The signature covers the body: headers signed for one key pair do not
    // create another, even unused.
    let now = SystemTime::now();
    let h = signed_for(&alice, &key_pair("mine"), now);
    assert_unauthenticated(
        send_with(&ea, &h, key_pair("evil")).await,
        "signature does not match",
    );
    // The genuine request goes through once.
    let r = send_with(&ea, &h, key_pair("mine"))
        .await
        .expect("genuine request");
    assert_eq!(r.key_pair.unwrap().key_name, "mine");
    // Replayed with another body: refused.
    assert_unauthenticated(
        send_with(&ea, &h, key_pair("evil")).await,
        "signature does not match",
    );
    // Replayed as is, on the same replica and on the other one: refused.
    assert_unauthenticated(
        send_with(&ea, &h, key_pair("mine")).await,
        "nonce already used",
    );
    assert_unauthenticated(
        send_with(&eb, &h, key_pair("mine")).await,
        "nonce already used",
    );
    // A second genuine request signed now is accepted by replica b.
    let h2 = signed_for(&alice, &key_pair("second"), SystemTime::now());
    send_with(&eb, &h2, key_pair("second"))
        .await
        .expect("fresh request on b");

    // After both replicas restart, the nonces are still known.
    a.shutdown().await;
    b.shutdown().await;
    let c = start(config(&etcd)).await;
    let ec = endpoint(&c);
    assert_unauthenticated(
        send_with(&ec, &h, key_pair("mine")).await,
        "nonce already used",
    );
    assert_unauthenticated(
        send_with(&ec, &h2, key_pair("second")).await,
        "nonce already used",
    );
    let mut names = key_names(&ec, &alice).await;
    names.sort();
    assert_eq!(names, ["mine", "second"], "nothing else was written");

    // Dates: 5 minutes either way, not 6.
    for (ahead, ok) in [(true, false), (false, false)] {
        let six = Duration::from_secs(6 * 60);
        let at = if ahead { now + six } else { now - six };
        let msg = key_pair("late");
        let r = send_with(&ec, &signed_for(&alice, &msg, at), msg).await;
        assert!(!ok);
        assert_unauthenticated(r, "5 minutes");
    }
    let msg = key_pair("soon");
    let at = SystemTime::now() + Duration::from_secs(4 * 60);
    send_with(&ec, &signed_for(&alice, &msg, at), msg)
        .await
        .expect("4 minutes ahead is within the skew");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_grpc_rate_is_throttled_while_another_is_served() {
    let Some(etcd) = start_etcd() else { return };
    let mut cfg = config(&etcd);
    cfg.grpc.rate_limit_per_second = 0.2;
    cfg.grpc.rate_limit_burst = 5.0;
    let r = start(cfg).await;
    let ep = endpoint(&r);
    let alice = tenant(&ep, "alice").await;
    let bob = tenant(&ep, "bob").await;

    let mut a = compute(&ep, alice).await;
    let mut refused = None;
    for i in 0..10 {
        match a
            .describe_key_pairs(pb::DescribeKeyPairsRequest::default())
            .await
        {
            Ok(_) => assert!(i < 5, "call {i} beyond the burst was served"),
            Err(st) => {
                refused = Some((i, st));
                break;
            }
        }
    }
    let (i, st) = refused.expect("alice is throttled");
    assert_eq!(i, 5, "the burst of 5 is served first");
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    assert_eq!(ec2_code(&st), "RequestLimitExceeded");

    // Bob has his own bucket.
    let mut b = compute(&ep, bob).await;
    for _ in 0..3 {
        b.describe_key_pairs(pb::DescribeKeyPairsRequest::default())
            .await
            .expect("bob is served");
    }
    // Alice is still refused (0.2/s refills one call in 5 s).
    let st = a
        .describe_key_pairs(pb::DescribeKeyPairsRequest::default())
        .await
        .expect_err("alice still throttled");
    assert_eq!(st.code(), tonic::Code::ResourceExhausted);
    r.shutdown().await;
}
