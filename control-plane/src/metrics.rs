//! The replica's Prometheus metrics (OpenMetrics text on `GET /metrics`,
//! listener `[metrics] listen`), with prometheus-client. This module owns
//! the metric families and their names; the choke points record into them:
//! the gRPC edge ([`crate::api::Edge::call`]), the EC2 gateway
//! ([`crate::ec2::handle`]), etcd transactions ([`crate::store::Store::commit`]),
//! placements (RunInstances) and state changes (launch duration, observed
//! when an instance first reaches `running`). Instances by state are counted
//! from etcd when scraped.
//!
//! The metrics are process-wide (one registry per process: tests that run
//! several replicas in one process share it).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::domain::lifecycle::State;

/// Label set: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the control plane.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// gRPC calls by service, method and status code.
    pub grpc_requests: Family<Labels, Counter>,
    /// gRPC call latency by service and method (seconds).
    pub grpc_latency: HistogramFamily,
    /// EC2 Query requests by action and error code (`ok` on success).
    pub ec2_requests: Family<Labels, Counter>,
    /// EC2 Query latency by action (seconds).
    pub ec2_latency: HistogramFamily,
    /// etcd transactions by outcome (committed, compare-failed, error).
    pub etcd_txns: Family<Labels, Counter>,
    /// etcd transaction latency (seconds).
    pub etcd_txn_latency: Histogram,
    /// Instances placed on a node by RunInstances.
    pub placements: Counter,
    /// Instances by state (refreshed at each scrape).
    pub instances: Family<Labels, Gauge>,
    /// From launch to the first `running` (seconds).
    pub launch_to_running: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("nubis_cp");
        let m = Self {
            grpc_requests: Family::default(),
            grpc_latency: HistogramFamily::new_with_constructor(latency_histogram),
            ec2_requests: Family::default(),
            ec2_latency: HistogramFamily::new_with_constructor(latency_histogram),
            etcd_txns: Family::default(),
            etcd_txn_latency: latency_histogram(),
            placements: Counter::default(),
            instances: Family::default(),
            // 50 ms .. ~200 s.
            launch_to_running: Histogram::new(exponential_buckets(0.05, 2.0, 13)),
            registry: Registry::default(),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls by service, method and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency by service and method",
            m.grpc_latency.clone(),
        );
        registry.register(
            "ec2_requests",
            "EC2 Query requests by action and error code (ok = success)",
            m.ec2_requests.clone(),
        );
        registry.register(
            "ec2_request_duration_seconds",
            "EC2 Query request latency by action",
            m.ec2_latency.clone(),
        );
        registry.register(
            "etcd_txns",
            "etcd transactions by outcome",
            m.etcd_txns.clone(),
        );
        registry.register(
            "etcd_txn_duration_seconds",
            "etcd transaction latency",
            m.etcd_txn_latency.clone(),
        );
        registry.register(
            "placements",
            "instances placed on nodes by RunInstances",
            m.placements.clone(),
        );
        registry.register(
            "instances",
            "instances by state (all accounts, counted at scrape)",
            m.instances.clone(),
        );
        registry.register(
            "launch_to_running_seconds",
            "time from RunInstances to the instance's first running state",
            m.launch_to_running.clone(),
        );
        Self { registry, ..m }
    }

    /// Records one gRPC call.
    pub fn grpc(&self, service: &str, method: &str, code: tonic::Code, took: Duration) {
        let svc = service.rsplit('.').next().unwrap_or(service).to_string();
        self.grpc_requests
            .get_or_create(&vec![
                ("service", svc.clone()),
                ("method", method.to_string()),
                ("code", format!("{code:?}")),
            ])
            .inc();
        self.grpc_latency
            .get_or_create(&vec![("service", svc), ("method", method.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Records one EC2 Query request (`action` empty when it did not parse).
    pub fn ec2(&self, action: &str, code: &str, took: Duration) {
        let action = if action.is_empty() { "unknown" } else { action };
        self.ec2_requests
            .get_or_create(&vec![
                ("action", action.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.ec2_latency
            .get_or_create(&vec![("action", action.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Records one etcd transaction.
    pub fn etcd_txn(&self, outcome: &'static str, took: Duration) {
        self.etcd_txns
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
        self.etcd_txn_latency.observe(took.as_secs_f64());
    }

    /// Sets the instances-by-state gauges.
    pub fn set_instances(&self, counts: &[(State, i64)]) {
        for (s, n) in counts {
            self.instances
                .get_or_create(&vec![("state", s.name().to_string())])
                .set(*n);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// The `/metrics` HTTP service over a domain.
pub fn router(domain: std::sync::Arc<crate::domain::Domain>) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let d = domain.clone();
            async move {
                match d.scrape_metrics().await {
                    Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics scrape failed");
                        (StatusCode::SERVICE_UNAVAILABLE, "etcd unavailable\n").into_response()
                    }
                }
            }
        }),
    )
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl crate::domain::Domain {
    /// Counts every instance by state (one paged read of all instances) into
    /// the `instances` gauges and returns the metrics text.
    pub async fn scrape_metrics(&self) -> crate::error::Result<String> {
        let mut counts: Vec<(State, i64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
        let mut pages = self.store.instances().all();
        while let Some(page) = pages.next().await? {
            for (_, v) in page {
                if let Some(c) = counts.iter_mut().find(|c| c.0 == v.value.state) {
                    c.1 += 1;
                }
            }
        }
        let m = global();
        m.set_instances(&counts);
        Ok(m.encode())
    }
}
