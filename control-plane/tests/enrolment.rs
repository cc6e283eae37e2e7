//! Node identity against a real etcd: per-host one-time enrolment tokens
//! (`EnrolNode`), who may `Register` which host id (checked before any
//! write), the bound on advertised capacity, and the approval hold. Each
//! case here was possible on main before (issue 16): any enrolment-token
//! holder could re-register another host's id and take its credential, or
//! advertise any capacity.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_proto::auth::{enrolment_signing, host_token_digest, Credentials};
use nubis_proto::compute::v1 as cpb;
use nubis_proto::node::v1 as npb;
use support::*;

fn req(host: &str, vcpus: u32) -> npb::RegisterRequest {
    npb::RegisterRequest {
        host_id: host.into(),
        availability_zone: ZONES[0].into(),
        capacity: Some(npb::Resources {
            vcpus,
            memory_mib: 4096,
        }),
        ..Default::default()
    }
}

/// Registers `r` signed with `creds` (sending `secret` as the enrolment secret).
async fn register(
    ep: &str,
    creds: Credentials,
    secret: &str,
    mut r: npb::RegisterRequest,
) -> Result<npb::RegisterResponse, tonic::Status> {
    let ch = nubis_proto::transport::connect(ep).await.unwrap();
    r.enrolment_secret = secret.into();
    npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, creds))
        .register(r)
        .await
        .map(|r| r.into_inner())
}

/// Registers with a per-host token the way the agent does.
async fn register_with_token(
    ep: &str,
    token: &cpb::EnrolNodeResponse,
    r: npb::RegisterRequest,
) -> Result<npb::RegisterResponse, tonic::Status> {
    let (creds, secret) = enrolment_signing(&token.token_id, &token.secret);
    register(ep, creds, &secret, r).await
}

fn node_creds(r: &npb::RegisterResponse) -> Credentials {
    let c = r.credential.clone().unwrap();
    Credentials::new(c.access_key_id, c.secret)
}

async fn issue_token(ep: &str, host: &str, zone: &str, ttl: u32) -> cpb::EnrolNodeResponse {
    admin_client(ep)
        .await
        .enrol_node(cpb::EnrolNodeRequest {
            host_id: host.into(),
            availability_zone: zone.into(),
            ttl_seconds: ttl,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn nodes(ep: &str) -> Vec<cpb::NodeInfo> {
    admin_client(ep)
        .await
        .list_nodes(cpb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes
}

async fn heartbeat(ep: &str, creds: Credentials, node_id: &str) -> Result<(), tonic::Status> {
    let ch = nubis_proto::transport::connect(ep).await.unwrap();
    npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, creds))
        .heartbeat(npb::HeartbeatRequest {
            node_id: node_id.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_tokens_enrol_their_host_once() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r = start(config(&etcd)).await;
    let ep = endpoint(&r);
    let t = issue_token(&ep, "host-a", ZONES[0], 0).await;
    assert!(t.token_id.starts_with("NKET"), "{}", t.token_id);

    // Another host id, another zone: refused, nothing written.
    let e = register_with_token(&ep, &t, req("host-b", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    let mut other_zone = req("host-a", 4);
    other_zone.availability_zone = ZONES[1].into();
    let e = register_with_token(&ep, &t, other_zone).await.unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    // Holding only what etcd stores (the digest) is not enough.
    let digest_only = Credentials::new(&t.token_id, host_token_digest(&t.secret));
    let e = register(&ep, digest_only, "guess", req("host-a", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    assert!(
        nodes(&ep).await.is_empty(),
        "a refused Register wrote a node"
    );

    // The right host: registered, the token consumed.
    let a = register_with_token(&ep, &t, req("host-a", 4))
        .await
        .unwrap();
    let e = register_with_token(&ep, &t, req("host-a", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "AuthFailure", "a token enrolled twice: {e:?}");
    assert_eq!(nodes(&ep).await.len(), 1);

    // No token at all.
    let e = register(
        &ep,
        Credentials::new("NKETNOSUCHTOKEN0000", "x"),
        "x",
        req("host-c", 4),
    )
    .await
    .unwrap_err();
    assert_eq!(ec2_code(&e), "AuthFailure", "{e:?}");

    // The node re-registers itself with its own credential, which stays.
    let again = register(&ep, node_creds(&a), "", req("host-a", 4))
        .await
        .unwrap();
    assert_eq!(again.node_id, a.node_id);
    assert_eq!(node_creds(&again), node_creds(&a));

    // Another node (enrolled with the shared bootstrap token) cannot take
    // host-a over, with its own credential or with the shared token.
    let b = register(&ep, enrol(), "", req("host-b", 4)).await.unwrap();
    let e = register(&ep, node_creds(&b), "", req("host-a", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    let e = register(&ep, enrol(), "", req("host-a", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    heartbeat(&ep, node_creds(&a), &a.node_id)
        .await
        .expect("host-a keeps its credential");

    // An operator token for host-a replaces a lost credential.
    let t2 = issue_token(&ep, "host-a", "", 0).await;
    let re = register_with_token(&ep, &t2, req("host-a", 4))
        .await
        .unwrap();
    assert_eq!(re.node_id, a.node_id);
    assert_ne!(node_creds(&re), node_creds(&a));
    let e = heartbeat(&ep, node_creds(&a), &a.node_id)
        .await
        .unwrap_err();
    assert_eq!(
        ec2_code(&e),
        "AuthFailure",
        "the old credential still works: {e:?}"
    );

    // Expired tokens are unknown keys.
    let short = issue_token(&ep, "host-d", "", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = register_with_token(&ep, &short, req("host-d", 4))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "AuthFailure", "{e:?}");

    // Only the operator creates tokens; bad host ids are refused.
    let tenant_creds = tenant(&ep, "t1").await;
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let e = cpb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(ch, tenant_creds))
        .enrol_node(cpb::EnrolNodeRequest {
            host_id: "host-e".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation", "{e:?}");
    let e = admin_client(&ep)
        .await
        .enrol_node(cpb::EnrolNodeRequest {
            host_id: "bad host".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_used_concurrently_enrols_once() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r = start(config(&etcd)).await;
    let ep = endpoint(&r);
    let t = issue_token(&ep, "host-race", "", 0).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (ep, t) = (ep.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            register_with_token(&ep, &t, req("host-race", 4)).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "one token enrolled {ok} times");
    assert_eq!(nodes(&ep).await.len(), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_bounded_and_new_nodes_wait_for_approval() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.nodes.max_vcpus = 64;
    cfg.nodes.require_approval = true;
    let r = start(cfg).await;
    let ep = endpoint(&r);

    let e = register(&ep, enrol(), "", req("huge", 100_000))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        nodes(&ep).await.is_empty(),
        "a refused Register wrote a node"
    );

    let n = register(&ep, enrol(), "", req("held", 8)).await.unwrap();
    let listed = nodes(&ep).await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].pending_approval && listed[0].cordoned,
        "{:?}",
        listed[0]
    );
    // Uncordon does not bypass the approval.
    let mut admin = admin_client(&ep).await;
    let e = admin
        .uncordon_node(cpb::UncordonNodeRequest {
            node_id: n.node_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    // Heartbeats cannot raise the capacity past the bound either.
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let e = npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, node_creds(&n)))
        .heartbeat(npb::HeartbeatRequest {
            node_id: n.node_id.clone(),
            capacity: Some(npb::Resources {
                vcpus: 65,
                memory_mib: 4096,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    let approved = admin
        .approve_node(cpb::ApproveNodeRequest {
            node_id: n.node_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert!(!approved.pending_approval && !approved.cordoned);
    assert_eq!(approved.capacity.unwrap().vcpus, 8);
    let e = admin
        .approve_node(cpb::ApproveNodeRequest {
            node_id: n.node_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    r.shutdown().await;
}
