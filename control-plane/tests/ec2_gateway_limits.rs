//! The EC2 gateway survives hostile clients (issue 16), with real sockets
//! against a real replica: slow and idle sockets are closed after their
//! timeouts and do not keep a signed client from being answered; oversized
//! and unauthenticated bodies are refused before they are read; connections
//! beyond the per-client limit are refused while other clients get through;
//! with TLS (`[http] tls_cert_file`), signed calls work over HTTPS, plain
//! HTTP and stalled handshakes get nowhere, and bad certificate files fail
//! the start.
//!
//! Loopback accepts any 127.x.y.z source address, so "other clients" are
//! sockets bound to 127.0.0.2.. before connecting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use rcgen::ExtendedKeyUsagePurpose;
use support::ca::Ca;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use nubis_control_plane::ec2::sigv4;
use nubis_proto::auth::Credentials;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DESCRIBE: &str = "Action=DescribeRegions&Version=2016-11-15";
const REGION: &str = "test-1";

struct Gateway {
    _etcd: Etcd,
    replica: nubis_control_plane::server::Replica,
    addr: SocketAddr,
    alice: Credentials,
}

/// The test configuration with the gateway on a free port, short timeouts
/// and `extra` `[http]` keys.
fn gw_config(etcd: &Etcd, extra: &str) -> nubis_control_plane::config::Config {
    let mut cfg = config(etcd);
    // The short timeouts, unless `extra` sets them itself.
    let defaults = [
        "listen = \"127.0.0.1:0\"",
        "header_timeout_seconds = 2",
        "body_timeout_seconds = 2",
        "idle_timeout_seconds = 3",
    ]
    .into_iter()
    .filter(|d| d.split(' ').next().is_some_and(|k| !extra.contains(k)))
    .collect::<Vec<_>>()
    .join("\n");
    cfg.http = toml::from_str(&format!("{defaults}\n{extra}")).unwrap();
    cfg
}

/// A replica with the gateway on a free port and short timeouts.
async fn gateway(extra: &str) -> Option<Gateway> {
    let etcd = start_etcd()?;
    let replica = start(gw_config(&etcd, extra)).await;
    let addr = replica.http_addr.expect("gateway listening");
    let alice = tenant(&endpoint(&replica), "alice").await;
    Some(Gateway {
        _etcd: etcd,
        replica,
        addr,
        alice,
    })
}

/// A socket from `127.0.0.<last>` to `to`.
async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        .unwrap();
    s.connect(to).await.unwrap()
}

/// A SigV4-signed EC2 request for `body`, as bytes on the wire.
fn signed(creds: &Credentials, addr: SocketAddr, body: &str) -> Vec<u8> {
    let t = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let host = addr.to_string();
    let ct = "application/x-www-form-urlencoded; charset=utf-8";
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(ct));
    headers.insert("host", HeaderValue::from_str(&host).unwrap());
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
    let signed_headers = ["content-type", "host", "x-amz-date"];
    let auth = sigv4::Authorization {
        access_key_id: creds.access_key_id.clone(),
        date: amz_date[..8].into(),
        region: REGION.into(),
        service: "ec2".into(),
        signed_headers: signed_headers.iter().map(|s| s.to_string()).collect(),
        signature: vec![],
    };
    let sig = sigv4::sign(
        &auth,
        &creds.secret,
        &sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        },
    )
    .unwrap();
    format!(
        "POST / HTTP/1.1\r\nhost: {host}\r\ncontent-type: {ct}\r\nx-amz-date: {amz_date}\r\n\
         authorization: AWS4-HMAC-SHA256 Credential={}/{}/{REGION}/ec2/aws4_request, \
         SignedHeaders={}, Signature={sig}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        creds.access_key_id,
        &amz_date[..8],
        signed_headers.join(";"),
        body.len()
    )
    .into_bytes()
}

/// Reads an answer until the server closes; returns (status, text).
async fn answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (u16, String) {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A signed DescribeRegions from 127.0.0.1; returns (status, time taken).
async fn normal_call(gw: &Gateway) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = connect_from(1, gw.addr).await;
    s.write_all(&signed(&gw.alice, gw.addr, DESCRIBE))
        .await
        .unwrap();
    let (status, text) = answer(&mut s).await;
    assert!(
        status != 200 || text.contains("<DescribeRegionsResponse"),
        "{text}"
    );
    (status, t.elapsed())
}

/// Waits until the server closes `s` (EOF or error) while `drip` sends one
/// byte of a request head every 250 ms (when true) or nothing (idle).
async fn held_until_closed(mut s: TcpStream, drip: bool) -> Duration {
    let t = Instant::now();
    let head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n";
    let mut i = 0;
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {} // a 408 before the close is fine
            },
            _ = tokio::time::sleep(Duration::from_millis(250)), if drip => {
                let b = head[i % head.len()];
                i += 1;
                if s.write_all(&[b]).await.is_err() {
                    return t.elapsed();
                }
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            return t.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sockets_do_not_starve_a_signed_client_and_are_closed_after_their_timeouts() {
    let Some(gw) = gateway("max_connections_per_ip = 20\n").await else {
        return;
    };
    let (status, _) = normal_call(&gw).await;
    assert_eq!(status, 200, "the gateway answers signed requests");

    // 50 sockets dripping a request head byte by byte (header timeout 2 s)
    // and 50 idle ones (idle timeout 3 s), from ten other addresses.
    let mut held = Vec::new();
    for n in 0..100u8 {
        let s = connect_from(2 + n % 10, gw.addr).await;
        held.push(tokio::spawn(held_until_closed(s, n < 50)));
    }
    // While they are open, the signed client is answered promptly.
    for _ in 0..5 {
        let (status, took) = normal_call(&gw).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "took {took:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut closed = Vec::new();
    for h in held {
        closed.push(h.await.unwrap());
    }
    let (drip, idle) = closed.split_at(50);
    for (what, times, min, max) in [("dripping", drip, 1.5, 5.0), ("idle", idle, 2.5, 6.0)] {
        for t in times {
            let s = t.as_secs_f64();
            assert!(
                (min..max).contains(&s),
                "a {what} socket was closed after {s:.2} s, not within {min}..{max} s"
            );
        }
    }
    let (status, _) = normal_call(&gw).await;
    assert_eq!(status, 200);
    gw.replica.shutdown().await;
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_and_unauthenticated_bodies_are_refused_before_they_are_read() {
    let Some(gw) = gateway("").await else { return };
    let (status, _) = normal_call(&gw).await;
    assert_eq!(status, 200);
    let four_mib = 4 * 1024 * 1024;
    // The clients' bodies, allocated before the baseline: the process's
    // RSS is the server's and the clients' together, and a client's freed
    // buffer need not go back to the kernel.
    let big: std::sync::Arc<[u8]> = vec![b'a'; four_mib].into();
    let mib: std::sync::Arc<[u8]> = vec![b'x'; 1024 * 1024].into();
    let before = rss_kib();

    // 5 × 4 MiB declared: 413 before a byte of the body is sent.
    let mut tasks = Vec::new();
    for n in 0..5u8 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(2 + n, addr).await;
            let head = format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 content-length: {four_mib}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            // Nothing of the body was sent, and the answer is complete.
            let (status, text) = answer(&mut s).await;
            assert_eq!(status, 413, "{text}");
            assert!(
                text.contains("<Code>RequestEntityTooLarge</Code>"),
                "{text}"
            );
        }));
    }
    // 5 × 4 MiB chunked, unsigned: refused after the first chunk.
    for n in 0..5u8 {
        let addr = gw.addr;
        let big = big.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(8 + n, addr).await;
            let head =
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 transfer-encoding: chunked\r\n\r\n";
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = &big[..64 * 1024];
            // The server may answer and close before it has read all of
            // the chunk: then a write fails (EPIPE), the answer is there.
            let _ = s
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await;
            let _ = s.write_all(chunk).await;
            let _ = s.write_all(b"\r\n").await;
            // At most 64 KiB of the 4 MiB sent; the answer is already there.
            let (status, text) = answer(&mut s).await;
            assert_eq!(status, 401, "{text}");
            assert!(
                text.contains("<Code>MissingAuthenticationToken</Code>"),
                "{text}"
            );
        }));
    }
    // 5 × a body under the limit, signed by an unknown key: refused on the
    // headers alone (the body is never sent).
    for n in 0..5u8 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(14 + n, addr).await;
            let head = format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 x-amz-date: 20261206T000000Z\r\nauthorization: AWS4-HMAC-SHA256 \
                 Credential=NKIAUNKNOWN000000000/20261206/{REGION}/ec2/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={}\r\ncontent-length: 200000\r\n\r\n",
                "0".repeat(64)
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let (status, text) = answer(&mut s).await;
            assert_eq!(status, 401, "{text}");
            assert!(text.contains("<Code>AuthFailure</Code>"), "{text}");
        }));
    }
    // A client that sends a whole oversized body before reading (as
    // urllib and most clients do) still gets its 413: the server answered
    // first and throws the rest away instead of resetting the connection.
    {
        let addr = gw.addr;
        let mib = mib.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = connect_from(26, addr).await;
            let len = mib.len();
            let head = format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 content-length: {len}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&mib).await.unwrap();
            let (status, text) = answer(&mut s).await;
            assert_eq!(status, 413, "{text}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 5 clients pushing 4 MiB each without waiting: the server answers
    // and closes; it does not read (or keep) the bodies.
    let mut pushers = Vec::new();
    for n in 0..5u8 {
        let addr = gw.addr;
        let big = big.clone();
        pushers.push(tokio::spawn(async move {
            let mut s = connect_from(20 + n, addr).await;
            let head = format!(
                "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
                 transfer-encoding: chunked\r\n\r\n{four_mib:x}\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let wrote = tokio::time::timeout(Duration::from_secs(10), s.write_all(&big)).await;
            // Either the write failed (the server closed) or the kernel's
            // buffers took it; the server answered without the body.
            let _ = wrote;
            let (status, _) = answer(&mut s).await;
            status
        }));
    }
    for p in pushers {
        let status = p.await.unwrap();
        assert!(status == 401 || status == 0, "status {status}");
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB over 21 refused requests (20 of 4 MiB)");
    assert!(
        grown < 4 * 1024,
        "the process grew by {grown} KiB (a body is 4096): bodies were buffered"
    );
    let (status, _) = normal_call(&gw).await;
    assert_eq!(status, 200);
    gw.replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_client_limit_are_refused_while_another_client_gets_through() {
    let Some(gw) = gateway("max_connections_per_ip = 20\n").await else {
        return;
    };
    // 20 connections from 127.0.0.2, held open.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(2, gw.addr).await);
    }
    // Make sure the server has accepted all of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The 21st is answered 503 RequestLimitExceeded and closed.
    for _ in 0..3 {
        let mut s = connect_from(2, gw.addr).await;
        let (status, text) = answer(&mut s).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("<Code>RequestLimitExceeded</Code>"), "{text}");
    }
    // Another client is served.
    let (status, _) = normal_call(&gw).await;
    assert_eq!(status, 200);
    // One of the 20 closes: 127.0.0.2 may connect again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect_from(2, gw.addr).await;
    s.write_all(&signed(&gw.alice, gw.addr, DESCRIBE))
        .await
        .unwrap();
    let (status, text) = answer(&mut s).await;
    assert_eq!(status, 200, "{text}");
    drop(held);
    gw.replica.shutdown().await;
}

/// Sends `bytes` from 127.0.0.1 and returns the answer.
async fn send(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = connect_from(1, addr).await;
    s.write_all(bytes).await.unwrap();
    answer(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replay_cache_a_signed_mutating_request_is_good_once_on_every_replica() {
    let Some(gw) = gateway("replay_cache = true\n").await else {
        return;
    };
    let other = start(gw_config(&gw._etcd, "replay_cache = true\n")).await;
    let other_addr = other.http_addr.unwrap();
    let create = "Action=CreateKeyPair&Version=2016-11-15&KeyName=once&KeyType=ed25519";
    // The Host header is signed: one request, sent to each replica as is.
    let req = signed(&gw.alice, gw.addr, create);
    let (status, text) = send(gw.addr, &req).await;
    assert_eq!(status, 200, "{text}");
    for addr in [gw.addr, other_addr] {
        let (status, text) = send(addr, &req).await;
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("<Code>AuthFailure</Code>"), "{text}");
        assert!(text.contains("already used"), "{text}");
    }
    // Reads are not cached: the same signed DescribeRegions works twice.
    let read = signed(&gw.alice, gw.addr, DESCRIBE);
    for _ in 0..2 {
        assert_eq!(send(gw.addr, &read).await.0, 200);
    }
    other.shutdown().await;
    gw.replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_replay_cache_a_signed_request_can_be_sent_again() {
    // The default: botocore re-sends identical requests within a second.
    let Some(gw) = gateway("").await else { return };
    let tag = "Action=CreateKeyPair&Version=2016-11-15&KeyName=twice&KeyType=ed25519";
    let req = signed(&gw.alice, gw.addr, tag);
    assert_eq!(send(gw.addr, &req).await.0, 200);
    let (status, text) = send(gw.addr, &req).await;
    // Executed again: the key pair exists now.
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("InvalidKeyPair.Duplicate"), "{text}");
    gw.replica.shutdown().await;
}

/// A gateway serving HTTPS with a certificate for `localhost`/127.0.0.1
/// from `ca`, its files in `dir`.
async fn tls_gateway(ca: &Ca, dir: &std::path::Path) -> Option<Gateway> {
    let (cert, key) = ca.issue(
        "ec2 gateway",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert_file, key_file) = (dir.join("gw.pem"), dir.join("gw.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    gateway(&format!(
        "idle_timeout_seconds = 8\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    ))
    .await
}

/// A TLS client trusting only `ca`.
fn tls_client(ca: &Ca) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A signed DescribeRegions over HTTPS from 127.0.0.1; (status, time taken).
async fn https_call(gw: &Gateway, tls: &tokio_rustls::TlsConnector) -> (u16, Duration) {
    let t = Instant::now();
    let tcp = connect_from(1, gw.addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tls.connect(name, tcp).await.expect("TLS handshake");
    s.write_all(&signed(&gw.alice, gw.addr, DESCRIBE))
        .await
        .unwrap();
    let (status, text) = answer(&mut s).await;
    assert!(
        status != 200 || text.contains("<DescribeRegionsResponse"),
        "{text}"
    );
    (status, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_signed_calls_work_and_plain_http_and_stalled_handshakes_get_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("nubis test EC2 CA");
    // Header timeout 2 s (gw_config), idle timeout 8 s.
    let Some(gw) = tls_gateway(&ca, dir.path()).await else {
        return;
    };
    let tls = tls_client(&ca);
    let (status, _) = https_call(&gw, &tls).await;
    assert_eq!(status, 200, "a signed DescribeRegions over HTTPS");

    // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
    let (status, text) = send(gw.addr, &signed(&gw.alice, gw.addr, DESCRIBE)).await;
    assert_eq!(status, 0, "plain HTTP must not be answered: {text:?}");
    assert!(!text.contains("DescribeRegionsResponse"), "{text}");

    // A client that does not trust the gateway's CA refuses it.
    let stranger = tls_client(&Ca::new("somebody else's CA"));
    let tcp = connect_from(1, gw.addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(stranger.connect(name, tcp).await.is_err());

    // 20 sockets that never start the handshake, and 20 that send the
    // first bytes of a ClientHello (a TLS record header) and stall, from
    // other addresses: a good client is answered promptly meanwhile, and
    // each stalled socket is closed after the header timeout (2 s), long
    // before the idle timeout (8 s) would.
    let mut held = Vec::new();
    for n in 0..40u8 {
        let mut s = connect_from(2 + n % 10, gw.addr).await;
        if n >= 20 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
        }
        held.push(tokio::spawn(held_until_closed(s, false)));
    }
    for _ in 0..5 {
        let (status, took) = https_call(&gw, &tls).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "took {took:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in held {
        let s = h.await.unwrap().as_secs_f64();
        assert!(
            (1.5..5.0).contains(&s),
            "a stalled handshake was closed after {s:.2} s, not within the 2 s header timeout"
        );
    }
    let (status, _) = https_call(&gw, &tls).await;
    assert_eq!(status, 200);
    gw.replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unreadable_or_mismatched_tls_files_fail_the_start() {
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("nubis test EC2 CA");
    let (cert, key) = ca.issue(
        "ec2 gateway",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (_, other_key) = ca.issue("other", &["other"], ExtendedKeyUsagePurpose::ServerAuth);
    let w = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert_file, key_file) = (w("gw.pem", &cert), w("gw.key", &key));
    let other_key_file = w("other.key", &other_key);
    let garbage = w("garbage.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem").display().to_string();
    let a_directory = dir.path().display().to_string();
    let start_with = |cert: &str, key: &str| {
        let extra = format!("tls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"\n");
        nubis_control_plane::server::Replica::start(gw_config(&etcd, &extra))
    };
    for (cert, key, words) in [
        (
            &missing,
            &key_file,
            vec!["http.tls_cert_file", &missing, "No such file"],
        ),
        (
            &cert_file,
            &a_directory,
            vec!["http.tls_key_file", &a_directory],
        ),
        (
            &garbage,
            &key_file,
            vec!["http.tls_cert_file", &garbage, "CERTIFICATE"],
        ),
        (
            &cert_file,
            &garbage,
            vec!["http.tls_key_file", &garbage, "private key"],
        ),
        (
            &cert_file,
            &other_key_file,
            vec![
                "http.tls_key_file",
                &other_key_file,
                "is not the key of",
                &cert_file,
            ],
        ),
    ] {
        let e = start_with(cert, key).await.unwrap_err().to_string();
        for w in words {
            assert!(e.contains(w), "{e:?} should name {w:?}");
        }
    }
    // One without the other is a configuration error.
    let e = nubis_control_plane::server::Replica::start(gw_config(
        &etcd,
        &format!("tls_cert_file = \"{cert_file}\"\n"),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tls_cert_file and tls_key_file go together"),
        "{e}"
    );
    // The good pair starts.
    start_with(&cert_file, &key_file)
        .await
        .unwrap()
        .shutdown()
        .await;
}

/// `aws ec2 describe-regions` against `endpoint`, with `extra` arguments.
async fn aws_cli(creds: &Credentials, endpoint: &str, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new("aws")
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            REGION,
            "--output",
            "json",
        ])
        .args(extra)
        .args(["ec2", "describe-regions"])
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_calls_the_https_gateway_with_its_ca_bundle() {
    let has_aws = std::process::Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nubis_testsupport::prerequisite(has_aws, "aws-cli on PATH") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("nubis test EC2 CA");
    let Some(gw) = tls_gateway(&ca, dir.path()).await else {
        return;
    };
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, ca.cert.pem()).unwrap();
    let https = format!("https://localhost:{}", gw.addr.port());
    let out = aws_cli(
        &gw.alice,
        &https,
        &["--ca-bundle", &bundle.to_string_lossy()],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let regions: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(regions["Regions"][0]["RegionName"], REGION, "{stdout}");
    // Without the CA bundle the gateway's certificate is not trusted.
    let out = aws_cli(&gw.alice, &https, &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SSL") || stderr.contains("certificate"),
        "{stderr}"
    );
    gw.replica.shutdown().await;
}
