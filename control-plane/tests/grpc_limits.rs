//! The gRPC TCP listener survives hostile clients (issue 16), with real
//! sockets against a real replica: idle sockets from one address take at
//! most their per-address share and are closed after the handshake
//! timeout, while a signed client from another address is served; sockets
//! over the total limit are closed at once and a freed slot is usable
//! again; an oversized message is refused with RESOURCE_EXHAUSTED or
//! OUT_OF_RANGE and the replica keeps serving; a request without usable
//! signing headers is refused before its body is read. The local Unix
//! socket has the same total cap and handshake deadline, per listener.
//!
//! Loopback accepts any 127.x.y.z source address, so "other clients" are
//! sockets bound to 127.0.0.2.. before connecting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nubis_proto::compute::v1 as pb;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A replica whose gRPC listener has `limits` (`[grpc]` keys; the handshake
/// timeout is 2 s unless they set it).
async fn replica(etcd: &Etcd, limits: &str) -> nubis_control_plane::server::Replica {
    let mut cfg = config(etcd);
    let timeout = if limits.contains("handshake_timeout_seconds") {
        ""
    } else {
        "handshake_timeout_seconds = 2\n"
    };
    let grpc: toml::Table =
        toml::from_str(&format!("listen = \"127.0.0.1:0\"\n{timeout}{limits}")).unwrap();
    cfg.grpc = grpc.try_into().unwrap();
    start(cfg).await
}

/// A TCP socket from `127.0.0.<last>` to `to`.
async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        .unwrap();
    s.connect(to).await.unwrap()
}

/// A signed Compute client whose connection comes from `127.0.0.<last>`.
async fn compute_from(
    last: u8,
    to: SocketAddr,
    creds: nubis_proto::auth::Credentials,
) -> Result<Compute, tonic::transport::Error> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{to}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect_from(last, to).await))
        }))
        .await?;
    Ok(pb::compute_client::ComputeClient::new(
        nubis_proto::auth::Signed::new(ch, creds),
    ))
}

/// How long until the server closes `s` (EOF or error), at most 30 s.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(mut s: S, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return since.elapsed(),
            Ok(Ok(_)) => {} // the server's HTTP/2 settings, if any
        }
    }
}

/// The closing times of idle sockets ([`closed_after`] tasks): how many
/// closed at once (< 1 s), how many by a 2 s handshake timeout (1.5-5 s),
/// and all of them in seconds.
async fn closing_times(idle: Vec<tokio::task::JoinHandle<Duration>>) -> (usize, usize, Vec<f64>) {
    let mut times = Vec::new();
    for h in idle {
        times.push(h.await.unwrap().as_secs_f64());
    }
    let at_once = times.iter().filter(|t| **t < 1.0).count();
    let timed_out = times.iter().filter(|t| (1.5..5.0).contains(*t)).count();
    (at_once, timed_out, times)
}

/// A signed DescribeAvailabilityZones on a fresh connection from 127.0.0.1.
async fn signed_call(addr: SocketAddr, creds: &nubis_proto::auth::Credentials) -> Duration {
    let t = Instant::now();
    let mut c = compute_from(1, addr, creds.clone()).await.unwrap();
    let zones = c
        .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zones.availability_zones.len(), 3);
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_do_not_starve_a_signed_client() {
    let Some(etcd) = start_etcd() else { return };
    let r = replica(&etcd, "max_connections_per_ip = 20\n").await;
    let addr = r.grpc_addr.unwrap();
    let alice = tenant(&endpoint(&r), "alice").await;

    // 100 sockets from 127.0.0.2 that never send anything, and 5 more
    // from 127.0.0.3 that send half of the HTTP/2 preface and stall.
    let t0 = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..100 {
        let s = connect_from(2, addr).await;
        idle.push(tokio::spawn(closed_after(s, t0)));
    }
    let mut partial = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from(3, addr).await;
        s.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12])
            .await
            .unwrap();
        partial.push(tokio::spawn(closed_after(s, Instant::now())));
    }
    // A signed client from 127.0.0.1 is served promptly meanwhile.
    for _ in 0..5 {
        let took = signed_call(addr, &alice).await;
        assert!(took < Duration::from_secs(1), "took {took:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 80 were over the per-address limit: closed at once. 20 were admitted
    // and closed by the 2 s handshake timeout.
    let (at_once, timed_out, times) = closing_times(idle).await;
    assert_eq!(
        (at_once, timed_out),
        (80, 20),
        "closing times of the idle sockets: {times:?}"
    );
    for h in partial {
        let t = h.await.unwrap().as_secs_f64();
        assert!(
            (1.5..5.0).contains(&t),
            "a half preface was closed after {t:.2} s"
        );
    }
    // Their slots are free again: 127.0.0.2 is served.
    let mut c = compute_from(2, addr, alice.clone()).await.unwrap();
    c.describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap();
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_limit_are_closed_at_once_and_a_freed_slot_is_reused() {
    let Some(etcd) = start_etcd() else { return };
    let r = replica(
        &etcd,
        "max_connections = 10\nmax_connections_per_ip = 6\nhandshake_timeout_seconds = 30\n",
    )
    .await;
    let addr = r.grpc_addr.unwrap();
    let alice = tenant(&endpoint(&r), "alice").await;
    // A served client (127.0.0.1) keeps its connection open: one slot.
    let mut served = compute_from(1, addr, alice.clone()).await.unwrap();
    served
        .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap();
    // Nine idle sockets from three addresses fill the other nine slots.
    let mut held = Vec::new();
    for n in 0..9u8 {
        held.push(connect_from(2 + n % 3, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 11th connection, from a fourth address, is closed at once.
    for _ in 0..3 {
        let t = Instant::now();
        let took = closed_after(connect_from(5, addr).await, t).await;
        assert!(took < Duration::from_secs(1), "closed after {took:?}");
    }
    let over = async {
        match compute_from(5, addr, alice.clone()).await {
            Err(_) => true,
            Ok(mut c) => c
                .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
                .await
                .is_err(),
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(10), over).await;
    assert_eq!(
        refused,
        Ok(true),
        "a client over the total limit must not be served"
    );
    // The open connection keeps working.
    served
        .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap();
    // One idle socket closes: the fourth address gets its slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = compute_from(5, addr, alice.clone()).await.unwrap();
    c.describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap();
    drop(held);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_the_replica_keeps_serving() {
    let Some(etcd) = start_etcd() else { return };
    let r = replica(&etcd, "").await;
    let ep = endpoint(&r);
    let alice = tenant(&ep, "alice").await;
    let mut c = compute(&ep, alice.clone()).await;
    // Compute: 9 MiB, over the 8 MiB bound, refused before decoding.
    let e = c
        .import_key_pair(pb::ImportKeyPairRequest {
            key_name: "big".into(),
            public_key_material: vec![b'a'; 9 * 1024 * 1024],
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Admin: 5 MiB, over its 4 MiB bound: tonic's decoder refuses it.
    let mut a = admin_client(&ep).await;
    let e = a
        .create_account(pb::CreateAccountRequest {
            name: "x".repeat(5 * 1024 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    // Nothing was written and the replica answers.
    let keys = c
        .describe_key_pairs(pb::DescribeKeyPairsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(keys.key_pairs.is_empty(), "{keys:?}");
    let zones = c
        .describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(zones.availability_zones.len(), 3);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_a_socket_that_never_handshakes_is_closed_after_the_timeout() {
    use rcgen::ExtendedKeyUsagePurpose;
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = support::ca::Ca::new("nubis test server CA");
    let (cert, key) = ca.issue(
        "control-plane",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert_file, key_file) = (dir.path().join("cp.pem"), dir.path().join("cp.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let mut cfg = config(&etcd);
    cfg.grpc.handshake_timeout_seconds = 2;
    cfg.grpc.tls = Some(nubis_control_plane::config::GrpcTlsConfig {
        cert_file,
        key_file,
        client_ca_file: None,
    });
    let r = start(cfg).await;
    let addr = r.grpc_addr.unwrap();
    // Ten sockets that never start the handshake, ten that send a TLS
    // record header and stall.
    let mut held = Vec::new();
    for n in 0..20u8 {
        let mut s = connect_from(2 + n % 5, addr).await;
        if n >= 10 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        }
        held.push(tokio::spawn(closed_after(s, Instant::now())));
    }
    // A TLS client is served meanwhile.
    let tls = nubis_proto::transport::ClientTls {
        ca_pem: Some(ca.cert.pem().into_bytes()),
        ..Default::default()
    };
    let https = format!("https://localhost:{}", addr.port());
    for _ in 0..3 {
        let t = Instant::now();
        let ch = nubis_proto::transport::connect_tls(&https, &tls)
            .await
            .unwrap();
        let mut c =
            pb::compute_client::ComputeClient::new(nubis_proto::auth::Signed::new(ch, admin()));
        c.describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }
    for h in held {
        let t = h.await.unwrap().as_secs_f64();
        assert!(
            (1.5..5.0).contains(&t),
            "a stalled TLS handshake was closed after {t:.2} s (timeout 2 s)"
        );
    }
    r.shutdown().await;
}

/// A DescribeKeyPairs whose body never ends (one message, then nothing),
/// with `headers` as its signing headers (none: unsigned); the status it
/// gets within 5 s, or None.
async fn endless_body(
    ch: tonic::transport::Channel,
    headers: Option<nubis_proto::auth::SignedHeaders>,
) -> Option<tonic::Status> {
    use futures::StreamExt as _;
    let mut grpc = tonic::client::Grpc::new(ch);
    let body = futures::stream::iter([pb::DescribeKeyPairsRequest::default()])
        .chain(futures::stream::pending());
    let mut req = tonic::Request::new(body);
    if let Some(h) = headers {
        h.apply(req.metadata_mut()).unwrap();
    }
    let call = async {
        grpc.ready().await.unwrap();
        let path =
            http::uri::PathAndQuery::from_static("/nubis.compute.v1.Compute/DescribeKeyPairs");
        let codec = tonic_prost::ProstCodec::<
            pb::DescribeKeyPairsRequest,
            pb::DescribeKeyPairsResponse,
        >::default();
        grpc.client_streaming(req, path, codec).await
    };
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Err(st)) => Some(st),
        Ok(Ok(r)) => panic!("answered: {r:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_usable_signing_headers_are_refused_before_their_body_is_read() {
    use nubis_proto::auth::{format_date, SignedHeaders};
    let Some(etcd) = start_etcd() else { return };
    let r = replica(&etcd, "").await;
    let ep = endpoint(&r);
    let alice = tenant(&ep, "alice").await;
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let now = std::time::SystemTime::now();
    let headers = |key: &str, date: std::time::SystemTime| SignedHeaders {
        access_key_id: key.into(),
        date: format_date(date),
        nonce: "0123456789abcdef0123456789abcdef".into(),
        signature: "00".repeat(32),
    };
    // Each is answered at once although its body never ends.
    let cases = [
        ("unsigned", None, "missing header"),
        (
            "unknown key",
            Some(headers("NKIAUNKNOWN000000000", now)),
            "",
        ),
        (
            "dated 10 minutes ahead",
            Some(headers(
                &alice.access_key_id,
                now + Duration::from_secs(600),
            )),
            "5 minutes",
        ),
    ];
    for (what, h, words) in cases {
        let t = Instant::now();
        let st = endless_body(ch.clone(), h)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer while the body was open"));
        assert_eq!(st.code(), tonic::Code::Unauthenticated, "{what}: {st:?}");
        assert_eq!(ec2_code(&st), "AuthFailure", "{what}: {st:?}");
        assert!(st.message().contains(words), "{what}: {st:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            t.elapsed()
        );
    }
    // A known key and a good date get as far as reading the body (which
    // never ends here): no answer, as the signature covers the body.
    let known = headers(&alice.access_key_id, now);
    assert!(endless_body(ch.clone(), Some(known)).await.is_none());
    r.shutdown().await;
}

/// A signed Compute client over the Unix socket `sock`.
async fn compute_over_unix(
    sock: std::path::PathBuf,
    creds: nubis_proto::auth::Credentials,
) -> Result<Compute, tonic::transport::Error> {
    let ch = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(sock).await?,
                ))
            }
        }))
        .await?;
    Ok(pb::compute_client::ComputeClient::new(
        nubis_proto::auth::Signed::new(ch, creds),
    ))
}

/// The Unix-socket listener has the TCP listener's total cap and handshake
/// deadline, counted apart from it: idle local sockets over the cap are
/// closed at once, those admitted after the handshake timeout, a TCP client
/// is served meanwhile, and the freed slots serve a signed Unix client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_has_the_same_cap_and_handshake_deadline() {
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cp.sock");
    let r = replica(
        &etcd,
        &format!(
            "max_connections = 5\nunix_socket = \"{}\"\n",
            sock.display()
        ),
    )
    .await;
    let addr = r.grpc_addr.unwrap();
    let alice = tenant(&endpoint(&r), "alice").await;
    let t0 = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        let s = tokio::net::UnixStream::connect(&sock).await.unwrap();
        idle.push(tokio::spawn(closed_after(s, t0)));
    }
    // The TCP listener counts its own connections: served at once.
    let took = signed_call(addr, &alice).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let (at_once, timed_out, times) = closing_times(idle).await;
    assert_eq!(
        (at_once, timed_out),
        (3, 5),
        "closing times of the idle Unix sockets: {times:?}"
    );
    let mut c = compute_over_unix(sock.clone(), alice.clone())
        .await
        .unwrap();
    c.describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .unwrap();
    r.shutdown().await;
}
