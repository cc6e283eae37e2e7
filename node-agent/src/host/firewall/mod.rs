//! The host firewall: per-TAP anti-spoofing and host protection, enforced
//! with nftables in two tables of the agent's own (`bridge nubis`, `inet
//! nubis`; nothing else on the host is touched). The rules are derived from
//! the instances recorded in the state directory (each one's `net.json`:
//! TAP, MAC, address), rendered by [`render`] and applied atomically with
//! `nft -j -f -` (one transaction per update).
//!
//! Reconciliation is level-triggered: [`Firewall::sync`] renders what the
//! state directory says now and applies it when it differs from what was
//! last applied, when the last attempt failed, or (`force`) to repair a table
//! someone else changed. It runs at agent start (before anything else, so a
//! re-adopted VMM keeps its rules), in each launch after the TAP exists and
//! before the VMM starts, after each tear-down and on every reconcile pass.
//! Updates are serialised by one lock; errors are returned, logged by the
//! caller and kept in [`FirewallStatus`].

pub mod render;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::NetworkConfig;
use crate::error::{Error, Result};
use crate::layout::Layout;
use render::{Existing, HostRules, Port};

/// How long one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// A ruleset unchanged for this long is applied again (repairs tampering).
pub const REAPPLY_EVERY: Duration = Duration::from_secs(30);

/// What the firewall did last (shown in the standalone `status.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirewallStatus {
    /// False when `[network] firewall = false`.
    pub enabled: bool,
    /// TAPs with rules in the last applied ruleset.
    pub ports: usize,
    /// When a ruleset was last applied (Unix ms).
    pub applied_unix_ms: Option<u64>,
    /// Why the last attempt failed (cleared by the next success).
    pub last_error: Option<String>,
}

/// Packet counts of the firewall's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames dropped as spoofed, by TAP.
    pub spoofed: BTreeMap<String, u64>,
    /// Frames from TAPs without rules.
    pub unknown_tap: u64,
    /// Packets from guests to the host that were dropped.
    pub host_blocked: u64,
}

#[derive(Debug, Default)]
struct Applied {
    rules: Option<HostRules>,
    /// What the tables hold, when known (after a success).
    existing: Option<Existing>,
    at: Option<Instant>,
}

/// The agent's firewall (one per agent, in the host context).
#[derive(Debug)]
pub struct Firewall {
    enabled: bool,
    bridge: String,
    tap_prefix: String,
    applied: tokio::sync::Mutex<Applied>,
    status: Mutex<FirewallStatus>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `nft` with `args`, feeding `stdin`; returns stdout.
async fn nft(args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    crate::host::command::run(
        "nft",
        args,
        stdin,
        NFT_TIMEOUT,
        "running nft (install the nftables package, or set [network] firewall = false)",
    )
    .await
}

/// `nft -j list table <family> nubis`, `None` when the table does not exist.
async fn list_table(family: &str) -> Result<Option<String>> {
    match nft(&["-j", "list", "table", family, render::TABLE], None).await {
        Ok(s) => Ok(Some(s)),
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The ports of every instance recorded in the state directory. A record
/// that does not validate is logged and left out: its TAP then matches the
/// drop rule for TAPs without rules.
pub fn ports_from_layout(layout: &Layout) -> Result<BTreeMap<String, Port>> {
    let mut ports = BTreeMap::new();
    for id in layout.list()? {
        let net = match layout.existing_net(&id) {
            // Routed VPC ports are guarded by the VPC data plane (host::vpc).
            Ok(Some(n)) if n.vpc.is_some() => continue,
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "firewall: unreadable net.json");
                continue;
            }
        };
        match Port::new(&net.tap, &net.mac, net.ip) {
            Ok(p) => {
                ports.insert(p.tap.clone(), p);
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "firewall: unusable network record")
            }
        }
    }
    Ok(ports)
}

impl Firewall {
    /// A firewall for the configured bridge and TAP prefix.
    pub fn new(cfg: &NetworkConfig) -> Firewall {
        Firewall {
            enabled: cfg.firewall,
            bridge: cfg.bridge.clone(),
            tap_prefix: cfg.tap_prefix.clone(),
            applied: tokio::sync::Mutex::default(),
            status: Mutex::new(FirewallStatus {
                enabled: cfg.firewall,
                ..FirewallStatus::default()
            }),
        }
    }

    /// False when the configuration switched the firewall off.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What happened last.
    pub fn status(&self) -> FirewallStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut FirewallStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The rules for `ports` on this host.
    pub fn rules(&self, ports: BTreeMap<String, Port>) -> HostRules {
        HostRules {
            bridge: self.bridge.clone(),
            tap_prefix: self.tap_prefix.clone(),
            ports,
        }
    }

    /// Makes the tables match the instances recorded in `layout` (see the
    /// module doc). Returns whether a batch was applied. A no-op when the
    /// firewall is disabled. The records are read under the update lock, so
    /// callers queued behind an update that already covered their instance
    /// (a burst of launches) apply nothing.
    pub async fn sync(&self, layout: &Layout, force: bool) -> Result<bool> {
        if !self.enabled {
            return Ok(false);
        }
        let mut applied = self.applied.lock().await;
        let l = layout.clone();
        let ports = tokio::task::spawn_blocking(move || ports_from_layout(&l))
            .await
            .map_err(|e| Error::io("reading network records", std::io::Error::other(e)))??;
        self.apply_guarded(&mut applied, self.rules(ports), force)
            .await
    }

    /// Applies `rules` unless they are what was applied last (and `force`
    /// is false, and the last apply is younger than [`REAPPLY_EVERY`]).
    pub async fn apply(&self, rules: HostRules, force: bool) -> Result<bool> {
        let mut applied = self.applied.lock().await;
        self.apply_guarded(&mut applied, rules, force).await
    }

    async fn apply_guarded(
        &self,
        applied: &mut Applied,
        rules: HostRules,
        force: bool,
    ) -> Result<bool> {
        let fresh = applied.at.is_some_and(|t| t.elapsed() < REAPPLY_EVERY);
        if !force && fresh && applied.rules.as_ref() == Some(&rules) {
            return Ok(false);
        }
        let result = self.apply_locked(applied, &rules).await;
        match &result {
            Ok(()) => {
                applied.rules = Some(rules.clone());
                applied.existing = Some(rules.existing());
                applied.at = Some(Instant::now());
                self.set_status(|s| {
                    s.ports = rules.ports.len();
                    s.applied_unix_ms = Some(now_ms());
                    s.last_error = None;
                });
            }
            Err(e) => {
                // Unknown state: list the tables again next time.
                applied.existing = None;
                applied.at = None;
                let msg = crate::launch::chain(e);
                self.set_status(|s| s.last_error = Some(msg));
            }
        }
        result.map(|()| true)
    }

    async fn apply_locked(&self, applied: &mut Applied, rules: &HostRules) -> Result<()> {
        // A periodic re-apply lists the tables again: someone may have
        // deleted a chain or counter, which the batch must not assume.
        let existing = match (&applied.existing, applied.at) {
            (Some(e), Some(t)) if t.elapsed() < REAPPLY_EVERY => e.clone(),
            _ => current().await?,
        };
        let batch = render::render(rules, &existing);
        let json = serde_json::to_vec(&batch).map_err(|source| Error::Json {
            context: "the rendered nftables batch".into(),
            source,
        })?;
        nft(&["-j", "-f", "-"], Some(&json)).await?;
        Ok(())
    }

    /// Removes the agent's tables (used by tests and when switching off).
    pub async fn remove(&self) -> Result<()> {
        let json = serde_json::to_vec(&render::render_removal()).map_err(|source| Error::Json {
            context: "the nftables removal batch".into(),
            source,
        })?;
        nft(&["-j", "-f", "-"], Some(&json)).await?;
        let mut applied = self.applied.lock().await;
        *applied = Applied::default();
        Ok(())
    }

    /// The counters' packet counts, read from the kernel.
    pub async fn counters(&self) -> Result<Counters> {
        read_counters().await
    }
}

/// What the agent's tables hold now.
async fn current() -> Result<Existing> {
    let mut e = Existing::default();
    if let Some(json) = list_table("bridge").await? {
        let (chains, counters) = render::parse_listing(&json)?;
        e.bridge_chains = chains;
        e.bridge_counters = counters.into_keys().collect();
    }
    if let Some(json) = list_table("inet").await? {
        let (_, counters) = render::parse_listing(&json)?;
        e.inet_counters = counters.into_keys().collect();
    }
    Ok(e)
}

/// Reads the counters of the agent's tables (zero when a table is missing).
pub async fn read_counters() -> Result<Counters> {
    let mut c = Counters::default();
    if let Some(json) = list_table("bridge").await? {
        let (_, counters) = render::parse_listing(&json)?;
        for (name, packets) in counters {
            if name == render::UNKNOWN_TAP {
                c.unknown_tap = packets;
            } else if let Some(tap) = name.strip_prefix("spoof_") {
                c.spoofed.insert(tap.to_string(), packets);
            }
        }
    }
    if let Some(json) = list_table("inet").await? {
        let (_, counters) = render::parse_listing(&json)?;
        c.host_blocked = counters.get(render::HOST_BLOCKED).copied().unwrap_or(0);
    }
    Ok(c)
}

/// True when `nft` can be run (`nft --version`).
pub async fn nft_available() -> bool {
    nft(&["--version"], None).await.is_ok()
}
