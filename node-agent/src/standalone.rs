//! Standalone mode (operator/debug feature, used by the agent's own tests):
//! desired state comes from `<state_dir>/desired.json` instead of the control
//! plane, and observed state goes to `<state_dir>/status.json`.
//!
//! `desired.json`: `{"instances": [{"spec": {...InstanceSpec...},
//! "desired": "running"|"stopped"|"terminated"|"rebooting",
//! "generation": N, "force": false}]}`. The file is authoritative like a
//! control-plane snapshot: instances it does not list are terminated. It is
//! re-read when its modification time changes; an invalid file is logged and
//! the previous desired state kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::instance::Report;
use crate::layout::write_json;
use crate::reconcile::{Agent, Capacity, DesiredInstance};
use crate::types::InstanceId;

/// `desired.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredFile {
    /// Every instance this host should have.
    pub instances: Vec<DesiredInstance>,
}

/// `status.json`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusFile {
    /// Host id.
    pub host_id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Offered capacity.
    pub capacity: Capacity,
    /// Images present (verified).
    pub images: Vec<String>,
    /// Every instance.
    pub instances: Vec<Report>,
    /// The host firewall's last update (docs/security.md).
    pub firewall: crate::host::firewall::FirewallStatus,
    /// The VPC data plane's last update (docs/networking.md).
    pub vpc: crate::host::vpc::VpcStatus,
    /// When written.
    pub written_unix_ms: u64,
}

/// Path of `desired.json`.
pub fn desired_path(state_dir: &Path) -> PathBuf {
    state_dir.join("desired.json")
}

/// Path of `status.json`.
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Parses and validates a desired-state file.
pub fn parse_desired(bytes: &[u8]) -> Result<DesiredFile> {
    let f: DesiredFile = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        context: "desired.json".into(),
        source,
    })?;
    for i in &f.instances {
        i.spec.validate()?;
    }
    Ok(f)
}

fn write_status(agent: &Agent, images: &[String]) {
    let cfg = &agent.context().config;
    let mut instances = agent.reports();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    let st = StatusFile {
        host_id: agent.host_id().to_string(),
        availability_zone: cfg.availability_zone.clone(),
        capacity: agent.capacity(),
        images: images.to_vec(),
        instances,
        firewall: agent.context().firewall.status(),
        vpc: agent.context().vpc.status(),
        written_unix_ms: crate::instance::now_ms(),
    };
    if let Err(e) = write_json(&status_path(&cfg.state_dir), &st) {
        tracing::warn!(error = %e, "cannot write status.json");
    }
}

/// Runs standalone mode until the process ends.
pub async fn run(agent: Arc<Agent>, mut changed: mpsc::UnboundedReceiver<InstanceId>) {
    let state_dir = agent.context().config.state_dir.clone();
    let images: Vec<String> = agent
        .images()
        .await
        .iter()
        .map(|i| i.name.to_string())
        .collect();
    tracing::info!(?images, "standalone mode: reading desired.json");
    tokio::spawn(agent.clone().run());
    // Sampling and Prometheus /metrics (queries need a control plane's
    // credential: none here).
    let _metrics = match crate::metrics::server::start_all(
        &agent.context().config.metrics,
        agent.context().layout.clone(),
        agent.context().firewall.enabled(),
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %crate::launch::chain(&e), "metrics disabled");
            None
        }
    };
    let path = desired_path(&state_dir);
    let mut seen: Option<SystemTime> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut refresh = tokio::time::interval(Duration::from_secs(5));
    write_status(&agent, &images);
    loop {
        tokio::select! {
            _ = refresh.tick() => write_status(&agent, &images),
            _ = tick.tick() => {
                let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if mtime.is_some() && mtime != seen {
                    seen = mtime;
                    match std::fs::read(&path).map_err(|e| Error::io("reading desired.json", e))
                        .and_then(|b| parse_desired(&b))
                    {
                        Ok(f) => {
                            tracing::info!(instances = f.instances.len(), "desired state loaded");
                            agent.set_snapshot(f.instances);
                        }
                        Err(e) => tracing::error!(error = %e, "ignoring invalid desired.json"),
                    }
                }
            }
            id = changed.recv() => {
                if id.is_none() {
                    return;
                }
                // Coalesce bursts of changes into one write.
                while changed.try_recv().is_ok() {}
                agent.poke();
                write_status(&agent, &images);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_file_is_validated() {
        let ok = br#"{"instances":[{"spec":{"id":"i-1","image":"hello","vcpus":1,"memory_mib":64},
            "desired":"running","generation":1}]}"#;
        assert_eq!(parse_desired(ok).unwrap().instances.len(), 1);
        for bad in [
            &br#"{"instances":[{"spec":{"id":"../x","image":"hello","vcpus":1,"memory_mib":64},"desired":"running"}]}"#[..],
            br#"{"instances":[{"spec":{"id":"i-1","image":"hello","vcpus":0,"memory_mib":64},"desired":"running"}]}"#,
            br#"{"instances":[{"spec":{"id":"i-1","image":"hello","vcpus":1,"memory_mib":64},"desired":"flying"}]}"#,
            br#"{"instanzes":[]}"#,
            b"not json",
        ] {
            assert!(parse_desired(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
