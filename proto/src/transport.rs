//! Dialing the control plane over TCP or a Unix domain socket.
//!
//! Agents run inside network namespaces and reach the control plane over a
//! Unix socket (namespaces do not isolate the filesystem); the CLI usually
//! uses TCP on loopback. Endpoints are written `unix:/path/to/socket`,
//! `http://127.0.0.1:50051`, or `https://cp.example:50051` (TLS: the server is
//! verified against [`ClientTls::ca_pem`] or, without one, the system's
//! roots; with [`ClientTls::identity`] the client presents a certificate, as
//! agents do for mutual TLS).

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// TLS settings of a client for `https://` endpoints (PEM contents).
#[derive(Clone, Default)]
pub struct ClientTls {
    /// CA certificate(s) that signed the server's certificate; `None`: the
    /// system's trust roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry; `None`: the endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("ClientTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    fn config(&self) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new();
        c = match &self.ca_pem {
            Some(pem) => c.ca_certificate(Certificate::from_pem(pem)),
            None => c.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            c = c.domain_name(name.clone());
        }
        c
    }
}

/// Like [`connect`], with TLS settings for an `https://` endpoint (ignored
/// for `unix:` and `http://`, which callers should refuse to combine with TLS
/// settings when validating their configuration).
pub async fn connect_tls(
    endpoint: &str,
    tls: &ClientTls,
) -> Result<Channel, tonic::transport::Error> {
    if endpoint.starts_with("https://") {
        tcp_endpoint(endpoint)?
            .tls_config(tls.config())?
            .connect()
            .await
    } else {
        connect(endpoint).await
    }
}

/// Builds a channel for `endpoint` (`unix:PATH` or `http://host:port`) and
/// connects it.
pub async fn connect(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let path = path.to_string();
        // The URI is unused by the connector but must be valid.
        unix_endpoint()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
    } else {
        tcp_endpoint(endpoint)?.connect().await
    }
}

/// Like [`connect`] but connects on first use (and reconnects after failures).
pub fn connect_lazy(endpoint: &str) -> Result<Channel, tonic::transport::Error> {
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let path = path.to_string();
        Ok(
            unix_endpoint().connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            })),
        )
    } else {
        Ok(tcp_endpoint(endpoint)?.connect_lazy())
    }
}

fn unix_endpoint() -> Endpoint {
    Endpoint::from_static("http://nubis.local")
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
}

fn tcp_endpoint(endpoint: &str) -> Result<Endpoint, tonic::transport::Error> {
    let e = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if endpoint.starts_with("https://") {
        // Without explicit settings, verify the server against the system's roots.
        e.tls_config(ClientTls::default().config())
    } else {
        Ok(e)
    }
}
