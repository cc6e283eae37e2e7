//! Dialing the control plane over TCP or a Unix domain socket.
//!
//! Agents run inside network namespaces and reach the control plane over a
//! Unix socket (namespaces do not isolate the filesystem); the CLI usually
//! uses TCP on loopback. Endpoints are written `unix:/path/to/socket` or
//! `http://127.0.0.1:50051`.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

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
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}
