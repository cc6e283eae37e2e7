//! The metrics listener: `nubis.node.v1.AgentMetrics` (gRPC, signed with
//! this agent's current node credential) and Prometheus `GET /metrics`
//! (unauthenticated text exposition, like any exporter; bind it to an
//! address only the monitoring network reaches) on one TCP port.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use nubis_proto::auth::{BodyDigest, BodyDigestLayer, Credentials, SignedHeaders};
use nubis_proto::node::v1 as pb;
use pb::agent_metrics_server::{AgentMetrics, AgentMetricsServer};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::config::{MetricsConfig, MetricsListen};
use crate::error::{Error, Result};
use crate::metrics::store::Metric;
use crate::metrics::Metrics;
use crate::types::InstanceId;

/// Most instances one query may name.
pub const MAX_INSTANCES_PER_QUERY: usize = 1000;
/// Most buckets one series may return.
pub const MAX_POINTS: u64 = 100_800;

const QUERY_PATH: &str = "/nubis.node.v1.AgentMetrics/QueryMetrics";

/// The running listener.
#[derive(Debug)]
pub struct Served {
    /// What to tell the control plane (`host:port`).
    pub endpoint: String,
    credential: Arc<RwLock<Option<Credentials>>>,
}

impl Served {
    /// Accept queries signed with `creds` from now on (after a Register).
    pub fn set_credential(&self, creds: Credentials) {
        *self.credential.write().unwrap_or_else(|p| p.into_inner()) = Some(creds);
    }
}

#[derive(Debug, Clone)]
struct Service {
    metrics: Arc<Metrics>,
    credential: Arc<RwLock<Option<Credentials>>>,
}

impl Service {
    fn authenticate<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        let creds = self
            .credential
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("agent not registered yet"))?;
        let h = SignedHeaders::from_metadata(req.metadata())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        if h.access_key_id != creds.access_key_id {
            return Err(Status::unauthenticated("unknown access key"));
        }
        let body = req
            .extensions()
            .get::<BodyDigest>()
            .ok_or_else(|| Status::unauthenticated("request body digest unavailable"))?;
        h.verify(&creds.secret, QUERY_PATH, body, SystemTime::now())
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }
}

/// Validates a query; returns (ids, metric, from, to, period).
fn validate(
    q: &pb::QueryMetricsRequest,
) -> std::result::Result<(Vec<InstanceId>, Metric, u64, u64, u64), Status> {
    let metric = Metric::from_name(&q.metric)
        .ok_or_else(|| Status::invalid_argument(format!("unknown metric {:?}", q.metric)))?;
    if q.instance_ids.len() > MAX_INSTANCES_PER_QUERY {
        return Err(Status::invalid_argument("too many instance ids"));
    }
    let ids = q
        .instance_ids
        .iter()
        .map(|s| InstanceId::new(s.clone()).map_err(|e| Status::invalid_argument(e.to_string())))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let period = u64::from(q.period_s);
    if period == 0 || period % 60 != 0 {
        return Err(Status::invalid_argument(
            "period must be a positive multiple of 60",
        ));
    }
    let (Ok(from), Ok(to)) = (u64::try_from(q.from_unix_s), u64::try_from(q.to_unix_s)) else {
        return Err(Status::invalid_argument("negative time"));
    };
    if to <= from {
        return Err(Status::invalid_argument("the range ends before it starts"));
    }
    if (to - from).div_ceil(period) > MAX_POINTS {
        return Err(Status::invalid_argument("too many buckets"));
    }
    Ok((ids, metric, from, to, period))
}

#[tonic::async_trait]
impl AgentMetrics for Service {
    async fn query_metrics(
        &self,
        req: Request<pb::QueryMetricsRequest>,
    ) -> std::result::Result<Response<pb::QueryMetricsResponse>, Status> {
        self.authenticate(&req)?;
        let (ids, metric, from, to, period) = validate(req.get_ref())?;
        let metrics = self.metrics.clone();
        let series = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            ids.into_iter()
                .map(|id| {
                    let points = metrics
                        .query(&id, metric, from, to, period, now)?
                        .into_iter()
                        .map(|(t, s)| pb::MetricPoint {
                            start_unix_s: t as i64,
                            sample_count: s.count,
                            sum: s.sum,
                            minimum: s.min,
                            maximum: s.max,
                        })
                        .collect();
                    Ok(pb::InstanceSeries {
                        instance_id: id.as_str().to_string(),
                        points,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(crate::launch::chain(&e)))?;
        Ok(Response::new(pb::QueryMetricsResponse { series }))
    }
}

/// Binds `listen` and serves until the process ends.
pub async fn start(
    listen: &MetricsListen,
    advertise: Option<String>,
    metrics: Arc<Metrics>,
) -> Result<Arc<Served>> {
    let credential = Arc::new(RwLock::new(None));
    let svc = Service {
        metrics: metrics.clone(),
        credential: credential.clone(),
    };
    let expo = metrics.clone();
    let router = tonic::service::Routes::new(AgentMetricsServer::new(svc))
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = expo.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
    // The signature covers the request body: digest it before the routes.
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(BodyDigestLayer::default())
        .add_routes(tonic::service::Routes::from(router));
    let bound = match listen {
        MetricsListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::io(format!("binding metrics listener {addr}"), e))?;
            let bound = l
                .local_addr()
                .map_err(|e| Error::io("metrics listener address", e))?;
            tokio::spawn(async move {
                if let Err(e) = server.serve_with_incoming(TcpListenerStream::new(l)).await {
                    tracing::error!(error = %e, "metrics listener ended");
                }
            });
            bound.to_string()
        }
        MetricsListen::Unix(path) => {
            // A socket left by an earlier run of this agent.
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)
                .map_err(|e| Error::io(format!("binding metrics socket {}", path.display()), e))?;
            tokio::spawn(async move {
                if let Err(e) = server.serve_with_incoming(UnixListenerStream::new(l)).await {
                    tracing::error!(error = %e, "metrics listener ended");
                }
            });
            format!("unix:{}", path.display())
        }
    };
    let endpoint = advertise.unwrap_or_else(|| bound.clone());
    tracing::info!(%bound, endpoint, "metrics listener up");
    Ok(Arc::new(Served {
        endpoint,
        credential,
    }))
}

/// Opens the rollups, starts the sampler, the firewall counters' reader
/// (with `firewall`) and the listener (when enabled).
pub async fn start_all(
    cfg: &MetricsConfig,
    layout: crate::layout::Layout,
    firewall: bool,
) -> Result<Option<Arc<Served>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let listen = cfg.listen_at(layout.root())?;
    let metrics = Arc::new(Metrics::open(layout.root().join("metrics"))?);
    tokio::spawn(crate::metrics::sampler::Sampler::new(layout, metrics.clone()).run());
    if firewall {
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::metrics::sampler::PERIOD);
            loop {
                every.tick().await;
                match crate::host::firewall::read_counters().await {
                    Ok(c) => m.set_firewall(&c),
                    Err(e) => tracing::debug!(error = %e, "firewall counters unavailable"),
                }
            }
        });
    }
    Ok(Some(start(&listen, cfg.advertise.clone(), metrics).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(metric: &str, from: i64, to: i64, period: u32) -> pb::QueryMetricsRequest {
        pb::QueryMetricsRequest {
            instance_ids: vec!["i-0123".into()],
            metric: metric.into(),
            from_unix_s: from,
            to_unix_s: to,
            period_s: period,
        }
    }

    #[test]
    fn bad_queries_are_refused() {
        assert!(validate(&q("CPUUtilization", 0, 60, 60)).is_ok());
        for bad in [
            q("CpuUtilization", 0, 60, 60),
            q("CPUUtilization", 60, 0, 60),
            q("CPUUtilization", 0, 60, 30),
            q("CPUUtilization", 0, 60, 0),
            q("CPUUtilization", -60, 60, 60),
            q("CPUUtilization", 0, 100_000_000, 60),
        ] {
            assert_eq!(
                validate(&bad).expect_err("refused").code(),
                tonic::Code::InvalidArgument
            );
        }
        let mut traversal = q("CPUUtilization", 0, 60, 60);
        traversal.instance_ids = vec!["../../etc".into()];
        assert!(validate(&traversal).is_err());
    }
}
