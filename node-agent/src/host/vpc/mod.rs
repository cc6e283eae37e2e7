//! The VPC data plane of this host (docs/networking.md): routed instance
//! ports, one VXLAN device and routing table per VPC, and the VPC security
//! groups in nftables, made to match (latest [`NetView`]) x (this host's
//! routed ports) level-triggered.
//!
//! [`VpcNet::sync`] reads the routed ports from the state directory (each
//! VPC instance's `net.json`), plans the host's state ([`model::plan`]),
//! makes the kernel's routing objects match ([`links`]) and replaces the
//! `nubis_vpc` nftables tables ([`nft`]) when they changed. The last view
//! and the conntrack zones are kept in `<state_dir>/vpc.json`, so a
//! restarted agent rebuilds exactly what it had before its first new view
//! (re-adopted instances keep their connectivity; nothing is torn down).
//!
//! What was applied is cached: a sync whose plan is unchanged does nothing,
//! one that changed applies only the difference, and every
//! [`REAPPLY_EVERY`] (or with `force`) the kernel is listed again and
//! everything re-applied, which repairs what someone else removed. All
//! updates are serialised by one lock.

pub mod edge;
pub mod links;
pub mod model;
pub mod nft;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::tap::ioctl::index_of;
use crate::layout::Layout;
use links::Kernel;
pub use model::{LocalPort, NetView, Plan};

/// Re-list and re-apply everything at least this often (repairs tampering).
pub const REAPPLY_EVERY: Duration = Duration::from_secs(30);
/// How long one `ip`/`bridge`/`nft` run may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the data plane did last (for status and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VpcStatus {
    /// Revision of the view in use.
    pub view_revision: Option<i64>,
    /// VPCs present on the host.
    pub vpcs: usize,
    /// Routed ports.
    pub ports: usize,
    /// Local instances served through their public address (`edge`).
    pub public_addresses: usize,
    /// When something was last applied (Unix ms).
    pub applied_unix_ms: Option<u64>,
    /// How long the last apply took (ms).
    pub last_apply_ms: Option<u64>,
    /// Why the last attempt failed (cleared by the next success).
    pub last_error: Option<String>,
    /// Syncs run since the agent started (calls that another sync covered
    /// are not counted: [`VpcNet::sync`]).
    pub syncs: u64,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    /// Routing objects were changed.
    pub kernel: bool,
    /// The nftables tables were replaced.
    pub nft: bool,
    /// Time from start to done.
    pub took: Duration,
}

impl Synced {
    /// True when anything was applied.
    pub fn changed(&self) -> bool {
        self.kernel || self.nft
    }
}

/// Persisted across restarts (`<state_dir>/vpc.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    view: Option<NetView>,
    zones: BTreeMap<u32, u16>,
    /// The underlay device whose forwarding the agent switched on for
    /// public addresses (`edge`; switched off again when none is left).
    #[serde(default)]
    edge_forwarding: Option<String>,
}

#[derive(Debug, Default)]
struct Applied {
    /// Routing objects as last applied (or found).
    kernel: Option<Kernel>,
    /// The nft batch last applied.
    nft: Option<serde_json::Value>,
    /// Devices whose sysctls are set (name, ifindex).
    configured: BTreeSet<(String, u32)>,
    /// Taps routed by the last apply.
    taps: BTreeSet<String>,
    /// Public-address routing objects as last applied (or found).
    edge_kernel: Option<edge::EdgeKernel>,
    /// The `ip nubis_edge` batch last applied.
    edge_nft: Option<serde_json::Value>,
    at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    saved: Saved,
    applied: Applied,
    /// Revision of the last view received by this process (the kept one
    /// may come from another control plane's history: any received view
    /// replaces it).
    received: Option<i64>,
    /// The highest [`VpcNet::sync`] ticket a successful sync covered (it
    /// read the layout and the view after that ticket was taken), and what
    /// that sync did.
    covered: u64,
    last: Synced,
}

/// The host's VPC data plane (one per agent).
#[derive(Debug)]
pub struct VpcNet {
    underlay: Option<Ipv4Addr>,
    underlay_dev: Mutex<Option<String>>,
    /// Next hop towards the edge for public addresses (`edge`).
    edge_gateway: Option<Ipv4Addr>,
    /// Public instances without an edge gateway were logged.
    edge_warned: std::sync::atomic::AtomicBool,
    state_file: Option<PathBuf>,
    inner: tokio::sync::Mutex<Inner>,
    status: Mutex<VpcStatus>,
    /// Tickets taken by [`VpcNet::sync`] callers (see there).
    requested: std::sync::atomic::AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs `program args`, feeding `stdin`; returns stdout.
async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let missing = format!("running {program} (packages iproute2 and nftables)");
    crate::host::command::run(program, args, stdin, CMD_TIMEOUT, &missing).await
}

/// Runs batch `lines` with `program -force -batch -` (every line is tried;
/// an error is reported after all ran).
async fn batch(program: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut input = lines.join("\n");
    input.push('\n');
    tracing::debug!(program, commands = %input, "vpc: applying");
    match run(program, &["-force", "-batch", "-"], Some(input.as_bytes())).await {
        Ok(_) => Ok(()),
        // The failed lines' numbers refer to the input: keep it.
        Err(Error::Command {
            command,
            status,
            stderr,
        }) => Err(Error::Command {
            command: format!("{command} <<< {input:?}"),
            status,
            stderr,
        }),
        Err(e) => Err(e),
    }
}

/// Lists the agent's routing objects in the kernel.
async fn observe(taps: &BTreeSet<String>) -> Result<Kernel> {
    let (links, rules, routes, neighs, fdb) = tokio::try_join!(
        run("ip", &["-j", "-d", "link", "show"], None),
        run("ip", &["-j", "-4", "rule", "show"], None),
        run("ip", &["-j", "-4", "route", "show", "table", "all"], None),
        run(
            "ip",
            &["-j", "-4", "neigh", "show", "nud", "permanent"],
            None
        ),
        run("bridge", &["-j", "fdb", "show"], None),
    )?;
    Ok(links::restrict(
        links::parse(&links, &rules, &routes, &neighs, &fdb)?,
        taps,
    ))
}

/// The interface that has `addr`, from `ip -j -4 addr show` output.
pub fn device_with(json: &str, addr: Ipv4Addr) -> Result<Option<String>> {
    let links: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|source| Error::Json {
            context: "ip -j -4 addr show".into(),
            source,
        })?;
    let want = addr.to_string();
    Ok(links
        .iter()
        .find(|l| {
            l.get("addr_info")
                .and_then(|a| a.as_array())
                .is_some_and(|a| {
                    a.iter()
                        .any(|i| i.get("local").and_then(|x| x.as_str()) == Some(want.as_str()))
                })
        })
        .and_then(|l| l.get("ifname").and_then(|n| n.as_str()))
        .map(str::to_string))
}

/// The MTU of the interface that has `addr` (same listing).
fn mtu_of_device_with(json: &str, addr: Ipv4Addr) -> Option<u64> {
    let links: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    let dev = device_with(json, addr).ok()??;
    links
        .iter()
        .find(|l| l.get("ifname").and_then(|n| n.as_str()) == Some(dev.as_str()))
        .and_then(|l| l.get("mtu"))
        .and_then(|m| m.as_u64())
}

/// The routed ports recorded in the state directory whose TAP exists.
pub fn ports_from_layout(layout: &Layout) -> Result<Vec<LocalPort>> {
    let mut out = Vec::new();
    for id in layout.list()? {
        let net = match layout.existing_net(&id) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "vpc: unreadable net.json");
                continue;
            }
        };
        let Some(v) = &net.vpc else {
            continue;
        };
        match LocalPort::new(id.as_str(), &net.tap, &net.mac, net.ip, net.gateway, v.vni) {
            Some(p) => out.push(p),
            None => tracing::warn!(instance = %id, "vpc: unusable network record"),
        }
        // Its secondary interfaces: one routed port each.
        for x in &net.extra {
            match LocalPort::new(id.as_str(), &x.tap, &x.mac, x.ip, x.gateway, x.vpc.vni) {
                Some(p) => out.push(p.at(x.device_index)),
                None => tracing::warn!(
                    instance = %id,
                    device_index = x.device_index,
                    "vpc: unusable network record of a secondary interface"
                ),
            }
        }
    }
    Ok(out)
}

impl VpcNet {
    /// The data plane with this host's VTEP address and its device;
    /// `state_file` keeps the view and zones across restarts (`None`: not
    /// kept, for tests).
    pub fn new(
        underlay: Option<Ipv4Addr>,
        underlay_dev: Option<String>,
        state_file: Option<PathBuf>,
    ) -> VpcNet {
        let saved = state_file
            .as_deref()
            .and_then(|p| match crate::layout::read_json::<Saved>(p) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "vpc: ignoring an unreadable vpc.json");
                    None
                }
            })
            .unwrap_or_default();
        let status = VpcStatus {
            view_revision: saved.view.as_ref().map(|v| v.revision),
            ..VpcStatus::default()
        };
        VpcNet {
            underlay,
            underlay_dev: Mutex::new(underlay_dev),
            edge_gateway: None,
            edge_warned: std::sync::atomic::AtomicBool::new(false),
            state_file,
            inner: tokio::sync::Mutex::new(Inner {
                saved,
                applied: Applied::default(),
                received: None,
                covered: 0,
                last: Synced::default(),
            }),
            status: Mutex::new(status),
            requested: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same with `gateway` as the next hop towards the edge for the
    /// local instances' public addresses (`None`: no public traffic).
    pub fn with_edge_gateway(mut self, gateway: Option<Ipv4Addr>) -> VpcNet {
        self.edge_gateway = gateway;
        self
    }

    /// This host's VTEP address.
    pub fn underlay(&self) -> Option<Ipv4Addr> {
        self.underlay
    }

    fn underlay_dev(&self) -> Option<String> {
        self.underlay_dev
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks at start-up that the underlay address is an address of an
    /// interface in this network namespace (and of `underlay_device` when
    /// configured); finds the device when not configured. Without an
    /// underlay address, warns that remote VPC endpoints are unreachable.
    pub async fn check_underlay(&self) -> Result<()> {
        let Some(addr) = self.underlay else {
            tracing::warn!(
                "no [network] underlay_address: VPC instances on this host reach only each other, \
                 not instances on other hosts"
            );
            return Ok(());
        };
        let out = run("ip", &["-j", "-4", "addr", "show"], None).await?;
        if let Some(mtu) = mtu_of_device_with(&out, addr).filter(|m| *m < 1550) {
            tracing::warn!(
                mtu,
                "the underlay interface's MTU is below 1550: guests' 1500-byte packets do not fit \
                 into VXLAN (50 bytes more) and cross hosts only in smaller pieces"
            );
        }
        let dev = device_with(&out, addr)?.ok_or_else(|| {
            Error::ConfigInvalid(format!(
                "network.underlay_address {addr} is not an address of any interface in the agent's \
                 network namespace"
            ))
        })?;
        if let Some(g) = self.edge_gateway {
            edge::check_gateway(&out, addr, g)?;
        }
        let mut configured = self.underlay_dev.lock().unwrap_or_else(|p| p.into_inner());
        match configured.as_deref() {
            Some(d) if d != dev => Err(Error::ConfigInvalid(format!(
                "network.underlay_address {addr} is on {dev}, not on network.underlay_device {d}"
            ))),
            Some(_) => Ok(()),
            None => {
                *configured = Some(dev);
                Ok(())
            }
        }
    }

    /// What happened last.
    pub fn status(&self) -> VpcStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut VpcStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Takes `view` as the latest unless this process received a newer one
    /// already; returns whether it changed anything (the view is then kept
    /// in the state file).
    pub async fn set_view(&self, view: NetView) -> Result<bool> {
        let mut inner = self.inner.lock().await;
        if inner.received.is_some_and(|r| r > view.revision) {
            return Ok(false);
        }
        inner.received = Some(view.revision);
        if inner.saved.view.as_ref() == Some(&view) {
            return Ok(false);
        }
        inner.saved.view = Some(view);
        self.save(&inner.saved)?;
        self.set_status(|s| s.view_revision = inner.saved.view.as_ref().map(|v| v.revision));
        Ok(true)
    }

    fn save(&self, saved: &Saved) -> Result<()> {
        match &self.state_file {
            Some(p) => crate::layout::off_runtime(|| crate::layout::write_json(p, saved)),
            None => Ok(()),
        }
    }

    /// Makes the host match the routed ports recorded in `layout` and the
    /// latest view (see the module doc).
    ///
    /// Calls coalesce: each takes a ticket before it waits for the lock, and
    /// a sync that read the layout and the view after a caller's ticket was
    /// taken did that caller's work, so the caller returns at once with what
    /// that sync did (a burst of launches on one host ran one full sync per
    /// launch, one after another). `force` always syncs.
    pub async fn sync(&self, layout: &Layout, force: bool) -> Result<Synced> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.requested.fetch_add(1, SeqCst) + 1;
        let start = Instant::now();
        let mut inner = self.inner.lock().await;
        if !force && inner.covered >= ticket {
            return Ok(inner.last);
        }
        // Every ticket taken so far is covered by what is read from here on.
        let covers = self.requested.load(SeqCst);
        let l = layout.clone();
        let ports = tokio::task::spawn_blocking(move || ports_from_layout(&l))
            .await
            .map_err(|e| Error::io("reading network records", std::io::Error::other(e)))??;
        let result = self.apply(&mut inner, ports, force, start).await;
        if let Ok(s) = &result {
            inner.covered = covers;
            inner.last = *s;
        }
        result
    }

    /// Makes the host match `ports` (those whose device exists) and the
    /// latest view.
    pub async fn sync_ports(&self, ports: Vec<LocalPort>, force: bool) -> Result<Synced> {
        let start = Instant::now();
        let mut inner = self.inner.lock().await;
        self.apply(&mut inner, ports, force, start).await
    }

    async fn apply(
        &self,
        inner: &mut Inner,
        ports: Vec<LocalPort>,
        force: bool,
        start: Instant,
    ) -> Result<Synced> {
        self.set_status(|st| st.syncs += 1);
        let result = self.sync_locked(inner, ports, force).await;
        let took = start.elapsed();
        match &result {
            Ok(s) if s.changed() => {
                self.set_status(|st| {
                    st.applied_unix_ms = Some(now_ms());
                    st.last_apply_ms = Some(took.as_millis() as u64);
                    st.last_error = None;
                });
            }
            Ok(_) => self.set_status(|st| st.last_error = None),
            Err(e) => {
                inner.applied = Applied::default();
                let msg = crate::launch::chain(e);
                self.set_status(|st| st.last_error = Some(msg));
            }
        }
        result.map(|s| Synced { took, ..s })
    }

    async fn sync_locked(
        &self,
        inner: &mut Inner,
        ports: Vec<LocalPort>,
        force: bool,
    ) -> Result<Synced> {
        let ports: Vec<LocalPort> = ports
            .into_iter()
            .filter(|p| matches!(index_of(&p.tap), Ok(Some(_))))
            .collect();
        let vnis: BTreeSet<u32> = ports.iter().map(|p| p.vni).collect();
        if model::assign_zones(&mut inner.saved.zones, &vnis) {
            self.save(&inner.saved)?;
        }
        let mut plan = model::plan(
            &ports,
            inner.saved.view.as_ref(),
            self.underlay,
            self.underlay_dev().as_deref(),
            &inner.saved.zones,
        );
        plan.edge = edge::plan(&plan, inner.saved.view.as_ref(), self.edge_gateway);
        self.warn_edge(&plan.edge);
        self.set_status(|s| {
            s.vpcs = plan.vpcs.len();
            s.ports = ports.len();
            s.public_addresses = plan.edge.publics.len();
        });
        let stale = force
            || inner
                .applied
                .at
                .is_none_or(|t| t.elapsed() >= REAPPLY_EVERY);
        let taps: BTreeSet<String> = ports.iter().map(|p| p.tap.clone()).collect();
        // Routing objects and nftables are independent (the filters name
        // devices, they do not need them): both at once.
        let ruleset = nft::render(&plan);
        let nft_due = stale || inner.applied.nft.as_ref() != Some(&ruleset);
        let nft_apply = async {
            if !nft_due {
                return Ok(false);
            }
            let json = serde_json::to_vec(&ruleset).map_err(|source| Error::Json {
                context: "the VPC nftables batch".into(),
                source,
            })?;
            match run("nft", &["-j", "-f", "-"], Some(&json)).await {
                Ok(_) => Ok::<bool, Error>(true),
                // Without nft there are no tables to remove (a host without
                // VPC instances need not have it).
                Err(Error::Io { source, .. })
                    if plan.vpcs.is_empty() && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    Ok(true)
                }
                Err(e) => Err(e),
            }
        };
        let (kernel, nft_done) =
            tokio::join!(self.apply_kernel(inner, &plan, &taps, stale), nft_apply);
        let mut out = Synced {
            kernel: kernel?,
            nft: nft_done?,
            took: Duration::ZERO,
        };
        if out.nft {
            inner.applied.nft = Some(ruleset);
        }
        // Public addresses, once the VPC tables and filters are in place.
        let (edge_kernel, edge_nft) = self.apply_edge(inner, &plan, stale).await?;
        out.kernel |= edge_kernel;
        out.nft |= edge_nft;
        if stale {
            inner.applied.at = Some(Instant::now());
        }
        Ok(out)
    }

    /// Makes the routing objects match `plan`: the difference from what
    /// was applied last (or, when `stale`, from what the kernel holds).
    /// Returns whether anything was changed.
    async fn apply_kernel(
        &self,
        inner: &mut Inner,
        plan: &Plan,
        taps: &BTreeSet<String>,
        stale: bool,
    ) -> Result<bool> {
        let want = Kernel::of_plan(plan);
        let mut all_taps = taps.clone();
        all_taps.extend(inner.applied.taps.iter().cloned());
        let mut have = match (&inner.applied.kernel, stale) {
            (Some(k), false) => Some(k.clone()),
            _ => None,
        };
        let mut changed = false;
        for attempt in 0..2 {
            let mut h = match have.take() {
                Some(h) => h,
                None => observe(&all_taps).await?,
            };
            h.prune(|d| matches!(index_of(d), Ok(Some(_))));
            let cmds = links::commands(&h, &want, plan.underlay_dev.as_deref());
            if cmds.is_empty() {
                break;
            }
            changed = true;
            let applied = async {
                batch("ip", &cmds.ip_first).await?;
                self.configure_devices(inner, plan, stale).await?;
                batch("bridge", &cmds.bridge).await?;
                batch("ip", &cmds.ip_then).await
            }
            .await;
            match applied {
                Ok(()) => break,
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %crate::launch::chain(&e), "vpc: apply failed, listing the kernel again");
                }
                Err(e) => return Err(e),
            }
        }
        self.configure_devices(inner, plan, stale).await?;
        inner.applied.kernel = Some(want);
        inner.applied.taps = taps.clone();
        Ok(changed)
    }

    /// Sets the sysctls of routed TAPs and VXLAN devices not yet configured
    /// (all of them when `all`).
    async fn configure_devices(&self, inner: &mut Inner, plan: &Plan, all: bool) -> Result<()> {
        let mut todo = Vec::new();
        if all {
            inner.applied.configured.clear();
            // The kernel filters by max(all, device): the VPC tables are not
            // consulted by reverse-path lookups, so `all` must be 0 too.
            if !plan.vpcs.is_empty() {
                let path = links::RP_FILTER_ALL;
                let now = crate::layout::off_runtime(|| std::fs::read_to_string(path))
                    .unwrap_or_default();
                if now.trim() != "0" && !now.is_empty() {
                    tracing::warn!(
                        was = now.trim(),
                        "setting net.ipv4.conf.all.rp_filter = 0 in the agent's network namespace \
                         (VPC ports are routed by tables reverse-path checks do not see; \
                         docs/networking.md)"
                    );
                    todo.push((path.to_string(), "0"));
                }
            }
        }
        for vp in plan.vpcs.values() {
            let devs = vp
                .ports
                .keys()
                .map(|t| (t.clone(), links::tap_sysctls(t)))
                .chain(
                    vp.vxlan
                        .iter()
                        .map(|(n, _)| (n.clone(), links::vxlan_sysctls(n))),
                );
            for (dev, sysctls) in devs {
                let Ok(Some(index)) = index_of(&dev) else {
                    continue;
                };
                if inner.applied.configured.insert((dev.clone(), index)) {
                    todo.extend(sysctls);
                }
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || {
            for (path, value) in todo {
                match std::fs::write(&path, value) {
                    Ok(()) => {}
                    // IPv6 switched off host-wide: nothing to switch off.
                    Err(e)
                        if path.contains("/ipv6/") && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("writing {path}"), e)),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::io("sysctl task", std::io::Error::other(e)))?
    }

    /// Removes everything of the data plane (tables, devices, rules,
    /// routes); the `local` rule stays where it is.
    pub async fn remove_all(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.saved.zones.clear();
        let taps = inner.applied.taps.clone();
        let mut have = observe(&taps).await?;
        have.prune(|d| matches!(index_of(d), Ok(Some(_))));
        let want = Kernel {
            local_moved: have.local_moved,
            ..Kernel::default()
        };
        let cmds = links::commands(&have, &want, None);
        batch("ip", &cmds.ip_first).await?;
        batch("bridge", &cmds.bridge).await?;
        batch("ip", &cmds.ip_then).await?;
        let json =
            serde_json::to_vec(&nft::render(&Plan::default())).map_err(|source| Error::Json {
                context: "the VPC nftables removal".into(),
                source,
            })?;
        run("nft", &["-j", "-f", "-"], Some(&json)).await?;
        self.apply_edge(&mut inner, &Plan::default(), true).await?;
        inner.applied = Applied::default();
        Ok(())
    }

    /// Logs public instances this host does not serve (once without an
    /// edge gateway; address conflicts every time they change).
    fn warn_edge(&self, e: &edge::EdgePlan) {
        use std::sync::atomic::Ordering;
        if e.unserved > 0 && !self.edge_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                instances = e.unserved,
                "instances with public addresses on this host, but no [network] edge_gateway \
                 (or no underlay device): they have no public traffic"
            );
        }
    }

    /// Makes the public-address objects (`edge`) match `plan.edge`: routing
    /// objects and the `ip nubis_edge` table, each when changed (or, when
    /// `stale`, re-listed and re-applied). Returns (routing changed, table
    /// replaced).
    async fn apply_edge(
        &self,
        inner: &mut Inner,
        plan: &Plan,
        stale: bool,
    ) -> Result<(bool, bool)> {
        let e = &plan.edge;
        let owned = self.edge_forwarding(inner, e.dev.as_deref(), stale)?;
        let ruleset = edge::render(plan, owned);
        let mut nft_done = false;
        if stale || inner.applied.edge_nft.as_ref() != Some(&ruleset) {
            if !e.conflicts.is_empty() {
                tracing::warn!(addresses = ?e.conflicts, "public addresses claimed by more than one local instance: left out");
            }
            let json = serde_json::to_vec(&ruleset).map_err(|source| Error::Json {
                context: "the edge nftables batch".into(),
                source,
            })?;
            match run("nft", &["-j", "-f", "-"], Some(&json)).await {
                Ok(_) => {}
                // Without nft there is no table to remove.
                Err(Error::Io { source, .. })
                    if e.publics.is_empty() && source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            inner.applied.edge_nft = Some(ruleset);
            nft_done = true;
        }
        let want = edge::EdgeKernel::of_plan(e);
        let dev = e.dev.clone().or_else(|| self.underlay_dev());
        let have = match (&inner.applied.edge_kernel, stale) {
            (Some(k), false) => k.clone(),
            _ => {
                let (routes, proxies, rules) = tokio::try_join!(
                    run("ip", &["-j", "-4", "route", "show", "table", "main"], None),
                    run("ip", &["-j", "-4", "neigh", "show", "proxy"], None),
                    run("ip", &["-j", "-4", "rule", "show"], None),
                )?;
                edge::parse(&routes, &proxies, &rules, dev.as_deref())?
            }
        };
        let cmds = edge::commands(&have, &want);
        if let Some(d) = e.dev.as_deref().filter(|_| stale || !cmds.is_empty()) {
            let todo = edge::underlay_sysctls(d);
            tokio::task::spawn_blocking(move || {
                todo.into_iter().try_for_each(|(path, value)| {
                    std::fs::write(&path, value)
                        .map_err(|e| Error::io(format!("writing {path}"), e))
                })
            })
            .await
            .map_err(|e| Error::io("sysctl task", std::io::Error::other(e)))??;
        }
        batch("ip", &cmds).await?;
        inner.applied.edge_kernel = Some(want);
        Ok((!cmds.is_empty(), nft_done))
    }

    /// Makes the underlay device `dev` forward (public instances are
    /// served; `None`: none is). Returns whether the agent switched it on
    /// (kept in the state file): then it forwards only the public traffic
    /// (`edge::render`) and is switched off again when none is left; a
    /// device that forwarded before is left as it is. Checks the kernel's
    /// value only when `stale` or when something changes.
    fn edge_forwarding(&self, inner: &mut Inner, dev: Option<&str>, stale: bool) -> Result<bool> {
        let path = |d: &str| format!("/proc/sys/net/ipv4/conf/{d}/forwarding");
        let write = |d: &str, v: &str| {
            let p = path(d);
            match crate::layout::off_runtime(|| std::fs::write(&p, v)) {
                Ok(()) => Ok(()),
                // The device is gone: nothing to switch off.
                Err(e) if v == "0" && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("writing {p}"), e)),
            }
        };
        let owned = inner.saved.edge_forwarding.clone();
        if let (Some(d), Some(o)) = (dev, owned.as_deref()) {
            if d == o {
                if stale {
                    write(d, "1")?;
                }
                return Ok(true);
            }
        }
        if let Some(o) = &owned {
            write(o, "0")?;
            inner.saved.edge_forwarding = None;
        }
        let mut ours = false;
        if let Some(d) = dev {
            let p = path(d);
            let now = crate::layout::off_runtime(|| std::fs::read_to_string(&p))
                .map_err(|e| Error::io(format!("reading {p}"), e))?;
            if now.trim() == "0" {
                write(d, "1")?;
                inner.saved.edge_forwarding = Some(d.to_string());
                ours = true;
            }
        }
        if inner.saved.edge_forwarding != owned {
            self.save(&inner.saved)?;
        }
        Ok(ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(revision: i64) -> NetView {
        NetView {
            revision,
            vpcs: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn views_are_kept_and_older_ones_of_this_process_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vpc.json");
        let net = VpcNet::new(None, None, Some(file.clone()));
        assert!(net.set_view(view(5)).await.unwrap());
        assert!(!net.set_view(view(5)).await.unwrap(), "unchanged");
        assert!(!net.set_view(view(4)).await.unwrap(), "older");
        assert_eq!(net.status().view_revision, Some(5));
        // A restarted agent starts from the kept view, and takes whatever
        // the control plane sends first (even an older revision: another
        // control plane's history).
        let again = VpcNet::new(None, None, Some(file));
        assert_eq!(again.status().view_revision, Some(5));
        assert!(again.set_view(view(1)).await.unwrap());
        assert_eq!(again.status().view_revision, Some(1));
    }

    #[test]
    fn the_underlay_device_is_found_by_its_address() {
        let json = r#"[{"ifname":"lo","mtu":65536,"addr_info":[{"local":"127.0.0.1"}]},
            {"ifname":"eth1","mtu":1500,"addr_info":[{"local":"10.254.0.1","prefixlen":24}]}]"#;
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            device_with(json, a("10.254.0.1")).unwrap().as_deref(),
            Some("eth1")
        );
        assert_eq!(device_with(json, a("10.254.0.2")).unwrap(), None);
        assert!(device_with("{", a("10.254.0.1")).is_err());
        assert_eq!(mtu_of_device_with(json, a("10.254.0.1")), Some(1500));
        assert_eq!(mtu_of_device_with(json, a("10.254.0.2")), None);
    }
}
