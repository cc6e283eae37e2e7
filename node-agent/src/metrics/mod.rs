//! Per-instance metrics on the agent: the sampler ([`sampler`]) measures
//! each running VMM every 10 s, the rollup store ([`store`]) keeps the
//! samples as CloudWatch keeps them, and the server ([`server`]) answers the
//! control plane's signed `nubis.node.v1.AgentMetrics` queries and serves
//! Prometheus `/metrics` on the same listener. See docs/metrics.md.
//!
//! [`Metrics`] is the shared state: the open rollup files (one directory per
//! instance under `<state_dir>/metrics/`, kept after the instance is gone so
//! its history stays queryable) and the Prometheus registry.

pub mod sampler;
pub mod server;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use nubis_vmm_api::GuestCounters;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Result;
use crate::types::InstanceId;
use store::{InstanceSeries, Metric, Sample, Stat};

type Labels = Vec<(String, String)>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;

/// Prometheus series of the agent.
#[derive(Debug)]
struct Exposition {
    registry: Registry,
    cpu: FGauge,
    io: Vec<(&'static str, FGauge)>,
    status: FGauge,
    sampled: Gauge,
    tick: Histogram,
    firewall: FGauge,
}

impl Exposition {
    fn new() -> Exposition {
        let mut registry = Registry::default();
        let cpu = FGauge::default();
        registry.register(
            "nubis_agent_instance_cpu_utilization_percent",
            "CPU time of the instance's vCPU threads over the last sample, percent of its vCPUs",
            cpu.clone(),
        );
        let io_names = [
            (
                "network_in_bytes",
                "Bytes delivered to the guest (VMM counter, restarts with the VMM)",
            ),
            (
                "network_out_bytes",
                "Bytes the guest sent (VMM counter, restarts with the VMM)",
            ),
            (
                "network_in_packets",
                "Frames delivered to the guest (VMM counter)",
            ),
            ("network_out_packets", "Frames the guest sent (VMM counter)"),
            (
                "disk_read_bytes",
                "Bytes the guest read from its disks (VMM counter)",
            ),
            (
                "disk_write_bytes",
                "Bytes the guest wrote to its disks (VMM counter)",
            ),
            ("disk_read_ops", "Disk read requests (VMM counter)"),
            ("disk_write_ops", "Disk write requests (VMM counter)"),
        ];
        let io = io_names
            .into_iter()
            .map(|(n, help)| {
                let f = FGauge::default();
                registry.register(format!("nubis_agent_instance_{n}"), help, f.clone());
                (n, f)
            })
            .collect();
        let status = FGauge::default();
        registry.register(
            "nubis_agent_instance_status_check_failed",
            "1 when the instance's VMM did not answer its API at the last sample",
            status.clone(),
        );
        let sampled = Gauge::default();
        registry.register(
            "nubis_agent_sampled_instances",
            "Instances measured at the last sample",
            sampled.clone(),
        );
        let tick = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register(
            "nubis_agent_sampling_duration_seconds",
            "Wall time of one sampling pass over all instances",
            tick.clone(),
        );
        let firewall = FGauge::default();
        registry.register(
            "nubis_agent_firewall_dropped_packets",
            "Frames/packets the host firewall dropped (docs/security.md): by TAP for spoofed frames \
             (counter=\"spoof\"), from TAPs without rules (counter=\"unknown_tap\"), guest packets to \
             the host (counter=\"host_blocked\"); read from nftables every 10 s",
            firewall.clone(),
        );
        Exposition {
            registry,
            cpu,
            io,
            status,
            sampled,
            tick,
            firewall,
        }
    }
}

/// The agent's metrics state (shared by the sampler and the server).
#[derive(Debug)]
pub struct Metrics {
    root: PathBuf,
    series: Mutex<HashMap<InstanceId, InstanceSeries>>,
    expo: Exposition,
}

fn labels(id: &InstanceId) -> Labels {
    vec![("instance_id".to_string(), id.as_str().to_string())]
}

impl Metrics {
    /// Metrics kept under `root` (created).
    pub fn open(root: PathBuf) -> Result<Metrics> {
        std::fs::create_dir_all(&root)
            .map_err(|e| crate::Error::io(root.display().to_string(), e))?;
        Ok(Metrics {
            root,
            series: Mutex::default(),
            expo: Exposition::new(),
        })
    }

    fn series(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, InstanceSeries>> {
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the host firewall's counters (series of gone TAPs vanish).
    pub fn set_firewall(&self, c: &crate::host::firewall::Counters) {
        let f = &self.expo.firewall;
        f.clear();
        let series = |counter: &str, tap: &str| -> Labels {
            vec![
                ("counter".to_string(), counter.to_string()),
                ("tap".to_string(), tap.to_string()),
            ]
        };
        for (tap, n) in &c.spoofed {
            f.get_or_create(&series("spoof", tap)).set(*n as f64);
        }
        f.get_or_create(&series("unknown_tap", ""))
            .set(c.unknown_tap as f64);
        f.get_or_create(&series("host_blocked", ""))
            .set(c.host_blocked as f64);
    }

    /// Records one sample of `id` (and its raw VMM counters for Prometheus).
    pub fn record(&self, id: &InstanceId, sample: &Sample, counters: Option<GuestCounters>) {
        let l = labels(id);
        if let Some(cpu) = sample.values[Metric::CpuUtilization as usize] {
            self.expo.cpu.get_or_create(&l).set(cpu);
        }
        if let Some(s) = sample.values[Metric::StatusCheckFailed as usize] {
            self.expo.status.get_or_create(&l).set(s);
        }
        if let Some(c) = counters {
            let raw = [
                c.net_in_bytes,
                c.net_out_bytes,
                c.net_in_packets,
                c.net_out_packets,
                c.disk_read_bytes,
                c.disk_write_bytes,
                c.disk_read_ops,
                c.disk_write_ops,
            ];
            for ((_, f), v) in self.expo.io.iter().zip(raw) {
                f.get_or_create(&l).set(v as f64);
            }
        }
        let mut series = self.series();
        if !series.contains_key(id) {
            match InstanceSeries::open(&self.root.join(id.as_str())) {
                Ok(s) => {
                    series.insert(id.clone(), s);
                }
                Err(e) => {
                    tracing::warn!(instance = id.as_str(), error = %e, "metrics: cannot open rollups");
                    return;
                }
            }
        }
        if let Some(s) = series.get_mut(id) {
            if let Err(e) = s.record(sample) {
                tracing::warn!(instance = id.as_str(), error = %e, "metrics: cannot record");
            }
        }
    }

    /// The instance's VMM no longer runs: drop its Prometheus series and
    /// close its files (the rollups stay on disk).
    pub fn forget(&self, id: &InstanceId) {
        let l = labels(id);
        self.expo.cpu.remove(&l);
        self.expo.status.remove(&l);
        for (_, f) in &self.expo.io {
            f.remove(&l);
        }
        self.series().remove(id);
    }

    fn observe_tick(&self, took: Duration, sampled: usize) {
        self.expo.tick.observe(took.as_secs_f64());
        self.expo.sampled.set(sampled as i64);
    }

    /// Statistics of `metric` of `id` (see [`InstanceSeries::query`]); no
    /// data for an instance never sampled here.
    pub fn query(
        &self,
        id: &InstanceId,
        metric: Metric,
        from_s: u64,
        to_s: u64,
        period_s: u64,
        now_s: u64,
    ) -> Result<Vec<(u64, Stat)>> {
        if let Some(s) = self.series().get(id) {
            return s.query(metric, from_s, to_s, period_s, now_s);
        }
        // Not sampled now (stopped or terminated): read its files without
        // keeping them open.
        let dir = self.root.join(id.as_str());
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        InstanceSeries::open(&dir)?.query(metric, from_s, to_s, period_s, now_s)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.expo.registry).is_err() {
            out.clear();
        }
        out
    }
}
