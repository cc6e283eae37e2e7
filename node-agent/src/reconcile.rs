//! The agent: recovers instances at start-up, holds the desired state from
//! the control plane (or the standalone file) and reconciles it into
//! instance requests, level-triggered: every pass re-reads desired and
//! observed state and sends only what is still needed (kube-rs' shape).
//!
//! Generations make requests idempotent: a `Running` assignment starts an
//! instance only when its generation is newer than the one the instance last
//! applied, so an instance the guest shut down stays stopped until the
//! control plane asks again. `Stopped` and `Terminated` are always enforced.
//! Instances the authoritative snapshot does not list are orphans and are
//! terminated; TAPs and cgroups that belong to no instance are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use crate::config::Config;
use crate::context::HostContext;
use crate::error::Result;
use crate::host::{image, tap};
use crate::instance::{InstanceHandle, Report};
use crate::layout::tail;
use crate::runtime::{Request, State};
use crate::types::{Desired, InstanceId, InstanceSpec};

/// One instance as the control plane wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredInstance {
    /// What to run.
    pub spec: InstanceSpec,
    /// Target lifecycle.
    pub desired: Desired,
    /// Increases with every change of intent.
    #[serde(default)]
    pub generation: u64,
    /// Skip the graceful part of stop/terminate.
    #[serde(default)]
    pub force: bool,
}

/// Host capacity offered to instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// Detects capacity (`nproc`, MemTotal) with the config's overrides.
pub fn detect_capacity(cfg: &Config) -> Capacity {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Capacity {
        vcpus: cfg.capacity.vcpus.unwrap_or(nproc),
        memory_mib: cfg.capacity.memory_mib.unwrap_or(mem_kib / 1024),
    }
}

#[derive(Debug, Default)]
struct DesiredSet {
    /// False until the first authoritative snapshot: orphans are not
    /// touched before the agent knows what it should run.
    have_snapshot: bool,
    items: BTreeMap<InstanceId, DesiredInstance>,
    /// Assigned here, but the control plane could not read (or the agent
    /// could not accept) the assignment: kept exactly as they are — never
    /// orphans, no desired-state change — until a readable upsert or a
    /// removal arrives.
    keep: BTreeSet<InstanceId>,
}

/// The node agent.
#[derive(Debug)]
pub struct Agent {
    ctx: Arc<HostContext>,
    host_id: String,
    instances: Mutex<BTreeMap<InstanceId, InstanceHandle>>,
    desired: Mutex<DesiredSet>,
    wake: Notify,
    /// When host resources were last swept for orphans (`None`: due now).
    last_sweep: Mutex<Option<std::time::Instant>>,
    /// The metadata each running VMM (by its start time) was last brought
    /// up to date with (see [`crate::launch::sync_metadata`]).
    metadata_synced: Arc<Mutex<MetadataSynced>>,
}

type MetadataSynced = BTreeMap<InstanceId, (Option<u64>, nubis_imds::ImdsConfig)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Opens the state dir, sets up the bridge and cgroup parent, and
    /// recovers (re-adopts) every instance found there. Returns the agent
    /// and the stream of instance ids whose report changed.
    pub async fn start(
        config: Config,
    ) -> Result<(Arc<Agent>, mpsc::UnboundedReceiver<InstanceId>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = HostContext::new(config, tx)?;
        let host_id = ctx.layout.host_id()?;
        if ctx.config.jail.enabled {
            // The state directory itself is made traversable at each launch.
            let state_parent = ctx
                .config
                .state_dir
                .parent()
                .unwrap_or(std::path::Path::new("/"));
            crate::host::jail::check_reachable(&[state_parent, &ctx.config.image_dir])?;
        }
        if let Err(e) = ctx.ensure_bridge().await {
            // Instances will fail with NetworkSetupFailed and a clear reason.
            tracing::error!(error = %e, "cannot set up the instance bridge");
        }
        let mut map = BTreeMap::new();
        for id in ctx.layout.list()? {
            match InstanceHandle::recover(ctx.clone(), &id) {
                Ok(Some(h)) => {
                    tracing::info!(instance = %id, state = %h.report().state, "recovered instance");
                    map.insert(id, h);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(instance = %id, error = %e, "cannot recover instance"),
            }
        }
        // Re-adopted VMMs keep (or get back) their rules before anything
        // else happens; a firewall that cannot be applied stops the agent.
        if ctx.firewall.enabled() {
            ctx.firewall.sync(&ctx.layout, true).await.inspect_err(|e| {
                tracing::error!(error = %crate::launch::chain(e), "cannot apply the host firewall (set [network] firewall = false to run without it)");
            })?;
            tracing::info!(ports = ctx.firewall.status().ports, "host firewall applied");
        } else {
            tracing::warn!(
                "host firewall disabled ([network] firewall = false): guest frames are not checked"
            );
        }
        // The VPC data plane from the state directory and the last view kept
        // there: re-adopted instances keep their routes and filters (nothing
        // is torn down). A wrong underlay address stops the agent.
        ctx.vpc.check_underlay().await.inspect_err(|e| {
            tracing::error!(error = %crate::launch::chain(e), "bad [network] underlay_address");
        })?;
        match ctx.vpc.sync(&ctx.layout, true).await {
            Ok(s) => {
                let st = ctx.vpc.status();
                tracing::info!(vpcs = st.vpcs, ports = st.ports, view = ?st.view_revision, took_ms = s.took.as_millis() as u64, "VPC data plane applied");
            }
            Err(e) => {
                tracing::error!(error = %crate::launch::chain(&e), "cannot apply the VPC data plane (retried)")
            }
        }
        let agent = Arc::new(Agent {
            ctx,
            host_id,
            instances: Mutex::new(map),
            desired: Mutex::new(DesiredSet::default()),
            wake: Notify::new(),
            last_sweep: Mutex::new(None),
            metadata_synced: Arc::new(Mutex::new(BTreeMap::new())),
        });
        Ok((agent, rx))
    }

    /// The persistent host id.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<HostContext> {
        &self.ctx
    }

    /// Replaces the whole desired state (authoritative snapshot).
    pub fn set_snapshot(&self, items: Vec<DesiredInstance>) {
        self.set_snapshot_keeping(items, BTreeSet::new());
    }

    /// Replaces the whole desired state (authoritative snapshot), with the
    /// instances assigned here whose assignment is unreadable: those are kept
    /// as they are (see [`Agent::keep_as_is`]).
    pub fn set_snapshot_keeping(&self, items: Vec<DesiredInstance>, keep: BTreeSet<InstanceId>) {
        let mut d = lock(&self.desired);
        d.have_snapshot = true;
        d.items = items.into_iter().map(|i| (i.spec.id.clone(), i)).collect();
        d.keep = keep;
        drop(d);
        // A new snapshot makes an orphan sweep due.
        *lock(&self.last_sweep) = None;
        self.wake.notify_one();
    }

    /// Adds or changes one instance's desired state.
    pub fn upsert(&self, item: DesiredInstance) {
        let mut d = lock(&self.desired);
        d.keep.remove(&item.spec.id);
        d.items.insert(item.spec.id.clone(), item);
        drop(d);
        self.wake.notify_one();
    }

    /// The instance is assigned here but its assignment cannot be read:
    /// leave it exactly as it is (running or not), neither reconciled towards
    /// a stale desired state nor terminated as an orphan.
    pub fn keep_as_is(&self, id: InstanceId) {
        let mut d = lock(&self.desired);
        d.items.remove(&id);
        d.keep.insert(id);
    }

    /// The instance is no longer assigned here: destroy what is left.
    pub fn remove(&self, id: &InstanceId) {
        let mut d = lock(&self.desired);
        d.items.remove(id);
        d.keep.remove(id);
        drop(d);
        self.wake.notify_one();
    }

    /// Wakes the reconcile loop (e.g. after a report change).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Latest report of every instance the agent knows.
    pub fn reports(&self) -> Vec<Report> {
        lock(&self.instances).values().map(|h| h.report()).collect()
    }

    /// Latest report of one instance.
    pub fn report(&self, id: &InstanceId) -> Option<Report> {
        lock(&self.instances).get(id).map(|h| h.report())
    }

    /// A report receiver of one instance.
    pub fn subscribe(&self, id: &InstanceId) -> Option<tokio::sync::watch::Receiver<Report>> {
        lock(&self.instances).get(id).map(|h| h.subscribe())
    }

    /// Sends a request to an instance and waits for its admission.
    pub async fn request(
        &self,
        id: &InstanceId,
        req: Request,
        generation: u64,
        force: bool,
    ) -> Result<Option<std::result::Result<crate::runtime::Admission, crate::runtime::Denied>>>
    {
        let tx = {
            let m = lock(&self.instances);
            match m.get(id) {
                Some(h) => h.clone(),
                None => return Ok(None),
            }
        };
        Ok(Some(tx.request(req, generation, force).await?))
    }

    /// The newest `max` bytes of an instance's console log (the current boot).
    pub fn console(&self, id: &InstanceId, max: u64) -> Result<Vec<u8>> {
        tail(&self.ctx.layout.instance(id).console(), max)
    }

    /// Capacity offered to instances.
    pub fn capacity(&self) -> Capacity {
        detect_capacity(&self.ctx.config)
    }

    /// Resources used by instances that have a VMM.
    pub fn usage(&self) -> (Capacity, u32) {
        let mut used = Capacity {
            vcpus: 0,
            memory_mib: 0,
        };
        let mut running = 0;
        for r in self.reports() {
            if r.state.has_vmm() {
                used.vcpus += r.vcpus;
                used.memory_mib += r.memory_mib;
            }
            if r.state == State::Running {
                running += 1;
            }
        }
        (used, running)
    }

    /// Images present and verified (hashing off the async threads; unchanged
    /// files are not re-hashed).
    pub async fn images(&self) -> Vec<image::Image> {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || image::scan(&ctx.config.image_dir, &ctx.digests))
            .await
            .unwrap_or_default()
    }

    /// Runs reconcile passes forever: on every change and every 2 s.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.reconcile_once().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// One level-triggered pass.
    pub async fn reconcile_once(&self) {
        let (have_snapshot, desired, keep) = {
            let d = lock(&self.desired);
            (d.have_snapshot, d.items.clone(), d.keep.clone())
        };
        let mut orphans_cleanable = false;
        {
            let mut inst = lock(&self.instances);
            for (id, d) in &desired {
                self.reconcile_one(&mut inst, id, d);
            }
            if have_snapshot {
                let extra: Vec<InstanceId> = inst
                    .keys()
                    .filter(|id| !desired.contains_key(*id) && !keep.contains(*id))
                    .cloned()
                    .collect();
                for id in extra {
                    let Some(h) = inst.get(&id) else { continue };
                    let r = h.report();
                    if r.state == State::Gone {
                        inst.remove(&id);
                        let _ = self.ctx.changed.send(id.clone());
                    } else if r.state != State::Terminating {
                        tracing::info!(instance = %id, "not assigned here any more: terminating");
                        h.send(Request::Terminate, r.generation, false);
                    }
                }
                let mut last = lock(&self.last_sweep);
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
                if due {
                    *last = Some(std::time::Instant::now());
                    orphans_cleanable = true;
                }
            }
        }
        if orphans_cleanable {
            self.remove_orphan_resources().await;
        }
        // Level-triggered: rules follow the recorded instances, re-applied
        // when they changed, after a failure and every 30 s.
        if let Err(e) = self.ctx.firewall.sync(&self.ctx.layout, false).await {
            tracing::error!(error = %crate::launch::chain(&e), "cannot apply the host firewall");
        }
        if let Err(e) = self.ctx.vpc.sync(&self.ctx.layout, false).await {
            tracing::error!(error = %crate::launch::chain(&e), "cannot apply the VPC data plane");
        }
    }

    fn reconcile_one(
        &self,
        inst: &mut BTreeMap<InstanceId, InstanceHandle>,
        id: &InstanceId,
        d: &DesiredInstance,
    ) {
        let gen = d.generation;
        let Some(h) = inst.get(id) else {
            match d.desired {
                Desired::Terminated => {
                    inst.insert(id.clone(), InstanceHandle::gone(id.clone(), gen));
                }
                Desired::Stopped => {
                    tracing::debug!(instance = %id, "assigned stopped but unknown here; nothing to do");
                }
                Desired::Running | Desired::Rebooting => {
                    if let Err(e) = d.spec.validate() {
                        tracing::error!(instance = %id, error = %e, "invalid instance spec");
                        return;
                    }
                    let h = InstanceHandle::spawn_new(self.ctx.clone(), d.spec.clone());
                    h.send(Request::Start, gen, false);
                    inst.insert(id.clone(), h);
                }
            }
            return;
        };
        let r = h.report();
        let newer = gen > r.generation;
        match d.desired {
            Desired::Terminated => {
                if !matches!(r.state, State::Gone | State::Terminating) || newer {
                    h.send(Request::Terminate, gen, d.force);
                }
            }
            Desired::Stopped => {
                if matches!(r.state, State::Running | State::Starting) || newer {
                    h.send(Request::Stop, gen, d.force);
                }
            }
            Desired::Running => {
                if newer || r.state == State::Absent {
                    h.send_start(&d.spec, gen);
                } else if r.state == State::Running {
                    self.sync_metadata(id, &d.spec, r.started_unix_ms);
                }
            }
            Desired::Rebooting => {
                if newer {
                    let req = match r.state {
                        State::Running => Request::Reboot,
                        _ => Request::Start,
                    };
                    h.send(req, gen, d.force);
                } else if r.state == State::Absent {
                    h.send(Request::Start, gen, false);
                }
            }
        }
    }

    /// Brings a running VMM's metadata service up to date with `spec` when
    /// it changed (ModifyInstanceMetadataOptions) or the VMM is new to this
    /// agent (restart, re-adoption); in the background, retried on failure.
    fn sync_metadata(&self, id: &InstanceId, spec: &InstanceSpec, started: Option<u64>) {
        let Some(want) = spec.metadata.clone() else {
            return;
        };
        let synced = self.metadata_synced.clone();
        {
            let mut m = lock(&synced);
            if m.get(id) == Some(&(started, want.clone())) {
                return;
            }
            m.insert(id.clone(), (started, want));
        }
        let (id, spec) = (id.clone(), spec.clone());
        let dir = self.ctx.layout.instance(&id);
        tokio::spawn(async move {
            match crate::launch::sync_metadata(&spec, &dir).await {
                Ok(true) => tracing::info!(instance = %id, "instance metadata updated"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "cannot update instance metadata");
                    lock(&synced).remove(&id);
                }
            }
        });
    }

    /// Removes TAPs and cgroups that belong to no known instance.
    async fn remove_orphan_resources(&self) {
        let known: BTreeSet<String> = lock(&self.instances)
            .keys()
            .map(|id| id.to_string())
            .collect();
        let prefix = &self.ctx.config.network.tap_prefix;
        // Each known instance's primary TAP and the secondary ones its
        // net.json records.
        let known_taps: BTreeSet<String> = known
            .iter()
            .filter_map(|id| InstanceId::new(id.clone()).ok())
            .flat_map(|id| {
                let extra = self
                    .ctx
                    .layout
                    .existing_net(&id)
                    .ok()
                    .flatten()
                    .map(|n| n.extra)
                    .unwrap_or_default();
                std::iter::once(tap::tap_name(prefix, &id)).chain(extra.into_iter().map(|x| x.tap))
            })
            .collect();
        match tap::list_with_prefix(prefix).await {
            Ok(taps) => {
                for t in taps {
                    if !known_taps.contains(&t) && t != self.ctx.config.network.bridge {
                        tracing::info!(tap = t, "removing orphaned TAP");
                        if let Err(e) = tap::delete_tap(&t).await {
                            tracing::warn!(tap = t, error = %e, "cannot remove orphaned TAP");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list TAPs"),
        }
        for g in self.ctx.cgroups.list() {
            if !known.contains(&g) {
                tracing::info!(cgroup = g, "removing orphaned cgroup");
                if let Err(e) = self.ctx.cgroups.remove_named(&g).await {
                    tracing::warn!(cgroup = g, error = %e, "cannot remove orphaned cgroup");
                }
            }
        }
    }
}
