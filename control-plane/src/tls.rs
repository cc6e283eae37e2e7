//! Server TLS configurations read from PEM files: the EC2 gateway's
//! (`[http] tls_cert_file` / `tls_key_file`, served by
//! [`crate::ec2::listener`]) and the gRPC TCP listener's (`[grpc.tls]`,
//! optionally verifying agents' client certificates; served by
//! [`crate::grpc_listener`]). Both are rustls with the ring provider (the
//! one tonic's `tls-ring` brings), handshaken with tokio-rustls.
//!
//! Everything is read and checked when the replica starts, so a missing or
//! unreadable file, a file without a certificate or key, or a key that does
//! not belong to the certificate fails the start with the setting's name and
//! path instead of failing every handshake later.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The ring crypto provider (the one tonic's `tls-ring` uses), passed
/// explicitly so no process-wide default has to be installed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(setting: &str, path: &Path, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "configuration: {setting} {}: {what}",
        path.display()
    ))
}

/// The certificate chain in `path` (PEM, leaf first).
fn read_chain(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| bad(setting, path, e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(setting, path, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad(setting, path, "no CERTIFICATE block in the file"));
    }
    Ok(chain)
}

/// The private key in `path` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(setting: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).map_err(|e| bad(setting, path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        bad(
            setting,
            path,
            format!("no usable PEM private key in the file: {e}"),
        )
    })
}

/// Where a certificate and its key come from: the settings' names (for
/// error messages, e.g. `http.tls_cert_file`) and their files.
#[derive(Debug, Clone, Copy)]
pub struct PemFiles<'a> {
    /// The certificate chain's setting.
    pub cert_setting: &'a str,
    /// Certificate chain (PEM, leaf first).
    pub cert_file: &'a Path,
    /// The key's setting.
    pub key_setting: &'a str,
    /// The leaf certificate's private key (PEM).
    pub key_file: &'a Path,
}

impl PemFiles<'_> {
    /// The chain and its key, checked to belong together.
    fn certified(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = read_chain(self.cert_setting, self.cert_file)?;
        let key = read_key(self.key_setting, self.key_file)?;
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
            .map_err(|e| self.mismatch(e))?;
        Ok((chain, key))
    }

    fn mismatch(&self, e: rustls::Error) -> Error {
        Error::invalid(format!(
            "configuration: {} {} is not the key of {} {}: {e}",
            self.key_setting,
            self.key_file.display(),
            self.cert_setting,
            self.cert_file.display()
        ))
    }
}

/// A rustls server configuration serving `files`' certificate, offering
/// `alpn` (e.g. `http/1.1`).
pub fn server_config(files: PemFiles<'_>, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = files.certified()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| files.mismatch(e))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The gRPC listener's configuration: `files`' certificate, ALPN `h2`, and
/// with `client_ca` (setting name, file) client certificates signed by that
/// CA are verified when offered (optional at the handshake: tenants have
/// none; the Node API insists on one, [`crate::api::peer`]).
pub fn grpc_server_config(
    files: PemFiles<'_>,
    client_ca: Option<(&str, &Path)>,
) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = files.certified()?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS protocol versions: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((setting, path)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_chain(setting, path)? {
                roots
                    .add(cert)
                    .map_err(|e| bad(setting, path, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(setting, path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| files.mismatch(e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}
