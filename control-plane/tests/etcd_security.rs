//! The control plane against an etcd that requires TLS client certificates
//! and has auth enabled, set up by `deploy/etcd-secure.sh` as
//! `deploy/install.sh control-plane` does: with the CA, a client certificate
//! and its etcd user it serves; without the certificate, with a wrong
//! password, or under a prefix its role does not cover, it refuses to start
//! instead of serving half-working.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};
use nubis_control_plane::config::EtcdTlsConfig;
use nubis_control_plane::server::Replica;
use nubis_proto::compute::v1 as pb;
use nubis_testsupport::EtcdTlsFiles;
use support::*;

/// Runs `deploy/etcd-secure.sh` with `args`; panics with its output on failure.
fn etcd_secure(args: &[&str]) {
    let script = nubis_testsupport::workspace_root().join("deploy/etcd-secure.sh");
    let out = std::process::Command::new(&script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_uses_etcd_with_client_tls_and_auth() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki_s = pki.to_str().unwrap();
    // The certificates and users install.sh makes, made by the same script.
    etcd_secure(&["pki", pki_s]);
    let Some(etcd) = nubis_testsupport::Etcd::start_tls(&EtcdTlsFiles {
        ca: pki.join("ca.pem"),
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
    }) else {
        return;
    };
    assert!(etcd.endpoint.starts_with("https://"));
    let password_file = dir.path().join("etcd-password");
    let pw_s = password_file.to_str().unwrap();
    etcd_secure(&["auth", &etcd.endpoint, pki_s, pw_s]);
    // Idempotent: a second run (install.sh re-run) changes nothing and works.
    etcd_secure(&["auth", &etcd.endpoint, pki_s, pw_s]);
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(
        password.trim().len() >= 32,
        "generated password {password:?}"
    );

    let wrong_password = dir.path().join("wrong-password");
    std::fs::write(&wrong_password, "not-the-password\n").unwrap();
    let tls = |with_cert: bool| EtcdTlsConfig {
        ca_file: pki.join("ca.pem"),
        cert_file: with_cert.then(|| pki.join("nubis.pem")),
        key_file: with_cert.then(|| pki.join("nubis.key")),
        server_name: None,
    };
    let cfg = |with_cert: bool, password: &PathBuf, prefix: &str| {
        let mut c = config(&etcd);
        c.etcd.tls = Some(tls(with_cert));
        c.etcd.username = Some("nubis".into());
        c.etcd.password_file = Some(password.clone());
        c.etcd.prefix = prefix.into();
        c
    };

    // The right certificate, user and password: the replica serves, and
    // writes (an image, an account) reach etcd.
    let cp = start(cfg(true, &password_file, "/nubis")).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let creds = tenant(&ep, "alice").await;
    let mut c = compute(&ep, creds).await;
    let images = c
        .describe_images(pb::DescribeImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        images.images.iter().any(|i| i.image_id == image),
        "{images:?}"
    );
    drop(c);
    drop(cp);

    // Refusals: each one an error at start, not a replica that half-works.
    for (what, cfg) in [
        (
            "no client certificate",
            cfg(false, &password_file, "/nubis"),
        ),
        ("wrong password", cfg(true, &wrong_password, "/nubis")),
        (
            "a prefix the nubis role does not cover",
            cfg(true, &password_file, "/other"),
        ),
    ] {
        let r = tokio::time::timeout(std::time::Duration::from_secs(60), Replica::start(cfg))
            .await
            .unwrap_or_else(|_| panic!("{what}: start hung"));
        assert!(r.is_err(), "{what}: the replica started");
    }

    // A client without a certificate gets nothing from this etcd, even
    // with the password; nor does a plaintext one.
    let no_cert = ConnectOptions::new()
        .with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(
            std::fs::read(pki.join("ca.pem")).unwrap(),
        )))
        .with_user("nubis", password.trim());
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut c = Client::connect([etcd.endpoint.as_str()], Some(no_cert)).await?;
        c.get("/nubis/", None).await
    })
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "read without a client certificate");
    let plain = etcd.endpoint.replace("https://", "http://");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut c = Client::connect([plain.as_str()], None).await?;
        c.get("/nubis/", None).await
    })
    .await;
    assert!(!matches!(r, Ok(Ok(_))), "plaintext read succeeded");
}

#[test]
fn etcd_security_configuration_is_validated() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut c = config(&etcd);
    c.etcd.tls = Some(EtcdTlsConfig {
        ca_file: "/nonexistent/ca.pem".into(),
        cert_file: None,
        key_file: None,
        server_name: None,
    });
    // http:// endpoints with [etcd.tls]
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("https://"), "{e}");
    // a user without a password file
    let mut c = config(&etcd);
    c.etcd.username = Some("nubis".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("password_file"), "{e}");
    // an unreadable file is named
    let mut c = config(&etcd);
    c.etcd.username = Some("nubis".into());
    c.etcd.password_file = Some("/nonexistent/etcd-password".into());
    let e = nubis_control_plane::store::EtcdSecurity::load(&c.etcd)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/etcd-password"), "{e}");
}
