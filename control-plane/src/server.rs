//! Wiring of one control-plane replica: etcd store, domain, gRPC listeners
//! (TCP and/or Unix socket, all three services on each), the EC2 gateway's
//! HTTP listener ([`crate::ec2::listener`]), and the background tasks (with their leader campaign). Used by `main.rs` and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::precheck::HeaderCheckLayer;
use crate::config::{Config, GrpcConfig, GrpcTlsConfig};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::grpc_listener::{self, Incoming};
use crate::store::Store;

/// HTTP/2 pings on idle gRPC TCP connections, and how long an answer may take.
const GRPC_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
const GRPC_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long shutdown waits for open gRPC streams.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// A running replica. Dropping it does not stop it; call [`Replica::shutdown`].
#[derive(Debug)]
pub struct Replica {
    /// The domain (tests call it directly).
    pub domain: Arc<Domain>,
    /// Bound gRPC TCP address.
    pub grpc_addr: Option<SocketAddr>,
    /// Bound gRPC Unix socket.
    pub unix_socket: Option<PathBuf>,
    /// Bound HTTP address of the EC2 gateway.
    pub http_addr: Option<SocketAddr>,
    /// Bound `/metrics` address (`[metrics] listen`), if any.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    /// Connects to etcd, binds every listener and starts serving.
    pub async fn start(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        // Certificate problems fail the start before anything else happens.
        let http_tls = match cfg.http.tls_files() {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                files,
                &[b"http/1.1"],
            )?)),
            None => None,
        };
        let grpc_tls = cfg.grpc.tls.as_ref().map(server_tls).transpose()?;
        let cfg = Arc::new(cfg);
        let security = crate::store::EtcdSecurity::load(&cfg.etcd)?;
        let store = Store::connect_secure(&cfg.etcd.endpoints, &cfg.etcd.prefix, &security).await?;
        let domain = Domain::new(store, cfg.clone()).await?;
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let io = |what: &str, e: std::io::Error| Error::Internal(format!("{what}: {e}"));

        let mut grpc_addr = None;
        if let Some(addr) = cfg.grpc.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| io(&format!("binding gRPC {addr}"), e))?;
            grpc_addr = Some(listener.local_addr().map_err(|e| io("local addr", e))?);
            let routes = crate::api::routes(domain.clone());
            let limits = cfg.grpc.limits();
            let stop = rx.clone();
            tasks.push(match grpc_tls {
                None => {
                    let incoming = Incoming::new(listener, limits, grpc_listener::plain());
                    tokio::spawn(serve_grpc(
                        incoming,
                        domain.clone(),
                        routes,
                        cfg.grpc.clone(),
                        stop,
                    ))
                }
                Some(tls) => {
                    let tls = grpc_listener::tls(tokio_rustls::TlsAcceptor::from(tls));
                    let incoming = Incoming::new(listener, limits, tls);
                    tokio::spawn(serve_grpc(
                        incoming,
                        domain.clone(),
                        routes,
                        cfg.grpc.clone(),
                        stop,
                    ))
                }
            });
        }
        let mut unix_socket = None;
        if let Some(path) = &cfg.grpc.unix_socket {
            if path.exists() {
                std::fs::remove_file(path).map_err(|e| io("removing stale socket", e))?;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("creating socket directory", e))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .map_err(|e| io(&format!("binding {}", path.display()), e))?;
            unix_socket = Some(path.clone());
            // The same total cap and handshake deadline as the TCP listener;
            // its peers have no address (one key), so no per-address limit.
            let limits = cfg.grpc.limits();
            let limits = grpc_listener::GrpcLimits {
                max_connections_per_ip: limits.max_connections,
                ..limits
            };
            let incoming = Incoming::new(listener, limits, grpc_listener::plain());
            let routes = crate::api::routes(domain.clone());
            tasks.push(tokio::spawn(serve_grpc(
                incoming,
                domain.clone(),
                routes,
                cfg.grpc.clone(),
                rx.clone(),
            )));
        }
        let mut http_addr = None;
        if let Some(addr) = cfg.http.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| io(&format!("binding EC2 gateway {addr}"), e))?;
            http_addr = Some(listener.local_addr().map_err(|e| io("local addr", e))?);
            let app = crate::ec2::router_with_config(domain.clone(), cfg.http.gateway());
            let limits = crate::ec2::listener::Limits::from(&cfg.http);
            let stop = rx.clone();
            tasks.push(tokio::spawn(crate::ec2::listener::serve(
                listener, app, limits, http_tls, stop,
            )));
        }
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| io(&format!("binding metrics {addr}"), e))?;
            metrics_addr = Some(listener.local_addr().map_err(|e| io("local addr", e))?);
            let app = crate::metrics::router(domain.clone());
            let mut stop = rx.clone();
            tasks.push(tokio::spawn(async move {
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "metrics server failed");
                }
            }));
        }

        let identity = format!(
            "{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        );
        let (handle, joins) = crate::tasks::start(&domain, identity, &rx);
        domain.attach_tasks(handle);
        tasks.extend(joins);
        Ok(Self {
            domain,
            grpc_addr,
            unix_socket,
            http_addr,
            metrics_addr,
            shutdown,
            tasks,
        })
    }

    /// Stops listeners and loops (resigning leadership) and waits for them.
    /// Open streams (agents' assignment watches) get [`SHUTDOWN_GRACE`] to
    /// finish; then the tasks are aborted.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
        if let Some(p) = &self.unix_socket {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Stops abruptly (simulates a crash): tasks are aborted.
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves `routes` on `incoming`'s connections (the TCP listener's
/// [`Incoming`], or the Unix socket's) until `stop`: signing headers checked
/// before the body is read, then the body digested.
async fn serve_grpc<S, IO, IE>(
    incoming: S,
    domain: Arc<Domain>,
    routes: tonic::service::Routes,
    cfg: GrpcConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: futures::Stream<Item = std::result::Result<IO, IE>> + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let r = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        // Dead peers (a host gone without a FIN) give their slot back.
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .layer(HeaderCheckLayer::new(domain))
        .layer(nubis_proto::auth::BodyDigestLayer::new(
            crate::api::MAX_BODY,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

/// `[grpc.tls]`: the certificate, its key and the optional client CA, read
/// and checked here, so a missing, unreadable or mismatched file fails the
/// start with its setting and path.
fn server_tls(tls: &GrpcTlsConfig) -> Result<Arc<rustls::ServerConfig>> {
    crate::tls::grpc_server_config(
        crate::tls::PemFiles {
            cert_setting: "grpc.tls.cert_file",
            cert_file: &tls.cert_file,
            key_setting: "grpc.tls.key_file",
            key_file: &tls.key_file,
        },
        tls.client_ca_file
            .as_deref()
            .map(|p| ("grpc.tls.client_ca_file", p)),
    )
}
