//! TLS on the gRPC TCP listener and mutual TLS for agents, against a real
//! etcd: tenants need only the server's CA; Node API calls over TCP need a
//! client certificate the node CA signed (and still their signature); a
//! certificate from another CA, or plaintext, gets nowhere; the Unix socket
//! stays certificate-free. Certificates are made per test with rcgen.

#![allow(clippy::unwrap_used)]

mod support;

use nubis_control_plane::config::GrpcTlsConfig;
use nubis_proto::compute::v1 as cpb;
use nubis_proto::node::v1 as npb;
use nubis_proto::transport::{connect, connect_tls, ClientTls};
use rcgen::ExtendedKeyUsagePurpose;
use support::ca::Ca;
use support::*;

fn register_req() -> npb::RegisterRequest {
    npb::RegisterRequest {
        host_id: "tls-host-1".into(),
        availability_zone: ZONES[0].into(),
        capacity: Some(npb::Resources {
            vcpus: 4,
            memory_mib: 4096,
        }),
        ..Default::default()
    }
}

async fn register_over(
    ch: tonic::transport::Channel,
) -> Result<npb::RegisterResponse, tonic::Status> {
    let mut n = npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, enrol()));
    n.register(register_req()).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_for_agents_server_tls_for_tenants() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("nubis test server CA");
    let node_ca = Ca::new("nubis test node CA");
    let rogue_ca = Ca::new("somebody else's CA");
    let (srv_cert, srv_key) = server_ca.issue(
        "control-plane",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mut cfg = config(&etcd);
    cfg.grpc.unix_socket = Some(dir.path().join("cp.sock"));
    cfg.grpc.tls = Some(GrpcTlsConfig {
        cert_file: w("server.pem", &srv_cert),
        key_file: w("server.key", &srv_key),
        client_ca_file: Some(w("node-ca.pem", &node_ca.cert.pem())),
    });
    let replica = start(cfg).await;
    let addr = replica.grpc_addr.unwrap();
    let https = format!("https://localhost:{}", addr.port());
    let ca_only = ClientTls {
        ca_pem: Some(server_ca.cert.pem().into_bytes()),
        ..Default::default()
    };

    // A tenant (here the operator) needs only the server's CA.
    let ch = connect_tls(&https, &ca_only).await.unwrap();
    let mut c = cpb::compute_client::ComputeClient::new(nubis_proto::auth::Signed::new(
        ch.clone(),
        admin(),
    ));
    let zones = c
        .describe_availability_zones(cpb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zones.availability_zones.len(), 3);

    // The Node API over TCP without a client certificate: refused, and
    // the message says what is missing.
    let e = register_over(ch).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{e:?}");

    // With a certificate from the node CA: registered.
    let (node_cert, node_key) = node_ca.issue(
        "tls-host-1",
        &["tls-host-1"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let agent = ClientTls {
        ca_pem: Some(server_ca.cert.pem().into_bytes()),
        identity: Some((node_cert.into_bytes(), node_key.into_bytes())),
        server_name: None,
    };
    let ch = connect_tls(&https, &agent).await.unwrap();
    let r = register_over(ch.clone()).await.unwrap();
    assert!(r.node_id.starts_with("node-"), "{r:?}");

    // The certificate is bound to its host: another host's certificate (same
    // node CA) can neither register as tls-host-1 nor act for its node, even
    // with tls-host-1's node credential.
    let (other_cert, other_key) = node_ca.issue(
        "tls-host-2",
        &["tls-host-2"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other = ClientTls {
        ca_pem: Some(server_ca.cert.pem().into_bytes()),
        identity: Some((other_cert.into_bytes(), other_key.into_bytes())),
        server_name: None,
    };
    let other_ch = connect_tls(&https, &other).await.unwrap();
    let e = register_over(other_ch.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("tls-host-1"), "{e:?}");
    let cred = r.credential.clone().unwrap();
    let node_creds = nubis_proto::auth::Credentials::new(cred.access_key_id, cred.secret);
    let heartbeat = |ch: tonic::transport::Channel| {
        let creds = node_creds.clone();
        let node_id = r.node_id.clone();
        async move {
            npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(ch, creds))
                .heartbeat(npb::HeartbeatRequest {
                    node_id,
                    capacity: register_req().capacity,
                    ..Default::default()
                })
                .await
        }
    };
    let e = heartbeat(other_ch).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert_eq!(ec2_code(&e), "AuthFailure");
    // Its own certificate still works.
    heartbeat(ch).await.unwrap();

    // A certificate from another CA fails the handshake: no call gets through.
    let (rogue_cert, rogue_key) = rogue_ca.issue(
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue = ClientTls {
        ca_pem: Some(server_ca.cert.pem().into_bytes()),
        identity: Some((rogue_cert.into_bytes(), rogue_key.into_bytes())),
        server_name: None,
    };
    let refused = match connect_tls(&https, &rogue).await {
        Err(_) => true,
        Ok(ch) => register_over(ch).await.is_err(),
    };
    assert!(
        refused,
        "a certificate from another CA must not be accepted"
    );

    // A client that does not trust the server's CA refuses the server.
    let stranger = ClientTls {
        ca_pem: Some(rogue_ca.cert.pem().into_bytes()),
        ..Default::default()
    };
    let distrusted = match connect_tls(&https, &stranger).await {
        Err(_) => true,
        Ok(ch) => register_over(ch).await.is_err(),
    };
    assert!(distrusted, "the client must verify the server certificate");

    // Plaintext to the TLS port gets no answer.
    let plain = format!("http://127.0.0.1:{}", addr.port());
    let plain_ok = match connect(&plain).await {
        Err(_) => false,
        Ok(ch) => register_over(ch).await.is_ok(),
    };
    assert!(!plain_ok, "plaintext must not reach a TLS listener");

    // The Unix socket needs no certificate (file permissions protect it).
    let unix = format!("unix:{}", dir.path().join("cp.sock").display());
    let ch = connect(&unix).await.unwrap();
    // The host re-registers with its own node credential (the shared token
    // may not re-register a registered host id).
    let cred = r.credential.clone().unwrap();
    let again = npb::node_client::NodeClient::new(nubis_proto::auth::Signed::new(
        ch,
        nubis_proto::auth::Credentials::new(cred.access_key_id, cred.secret),
    ))
    .register(register_req())
    .await
    .unwrap()
    .into_inner();
    assert_eq!(again.node_id, r.node_id, "same host id, same node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_configuration_is_refused_with_its_path() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&etcd);
    cfg.grpc.tls = Some(GrpcTlsConfig {
        cert_file: dir.path().join("missing.pem"),
        key_file: dir.path().join("missing.key"),
        client_ca_file: None,
    });
    let e = match nubis_control_plane::server::Replica::start(cfg.clone()).await {
        Err(e) => e,
        Ok(_) => panic!("a missing certificate file must fail the start"),
    };
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // TLS without a TCP listener is a configuration error.
    cfg.grpc.listen = None;
    cfg.grpc.unix_socket = Some(dir.path().join("s.sock"));
    assert!(cfg.validate().is_err());
}
