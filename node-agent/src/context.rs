//! Host-wide context shared by all instance tasks: configuration, the state
//! directory, the cgroup tree, the address-allocation lock, the bridge
//! status (which subnets are set up), the image digest cache, the launch
//! slots, the directory watcher, the firewall, the VPC data plane and the channel on which tasks announce
//! state changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::config::{Addressing, Config};
use crate::error::Result;
use crate::host::cgroup::Cgroups;
use crate::host::dirwatch::DirWatcher;
use crate::host::firewall::Firewall;
use crate::host::image::DigestCache;
use crate::host::tap;
use crate::host::vpc::VpcNet;
use crate::layout::Layout;
use crate::types::InstanceId;

/// Shared by every instance task.
#[derive(Debug)]
pub struct HostContext {
    /// Configuration.
    pub config: Config,
    /// Default addressing plan (from `network.bridge_address`), if any.
    pub addressing: Option<Addressing>,
    /// State directory.
    pub layout: Layout,
    /// cgroup tree.
    pub cgroups: Cgroups,
    /// Serialises address allocation and bridge set-up.
    pub net_lock: Mutex<()>,
    /// Instance tasks send their id here whenever their report changes.
    pub changed: mpsc::UnboundedSender<InstanceId>,
    /// Digests of image files (launches and periodic scans).
    pub digests: Arc<DigestCache>,
    /// Bounds how many instances prepare at once.
    pub launch_slots: Semaphore,
    /// Change notification for instance directories.
    pub watcher: DirWatcher,
    /// The nftables rules of the instances' TAPs and of the host.
    pub firewall: Firewall,
    /// The VPC data plane (routed ports, VXLAN, security groups).
    pub vpc: VpcNet,
    /// Subnets (gateway/prefix) already set up on the bridge by this agent.
    bridged: std::sync::Mutex<BTreeSet<(Ipv4Addr, u8)>>,
    /// Addresses chosen whose `net.json` is being written (changed only
    /// under `net_lock`).
    reserved: std::sync::Mutex<BTreeSet<Ipv4Addr>>,
}

impl HostContext {
    /// Builds the context (creates the state dir and cgroup parent).
    pub fn new(
        config: Config,
        changed: mpsc::UnboundedSender<InstanceId>,
    ) -> Result<Arc<HostContext>> {
        let addressing = config.network.addressing()?;
        let layout = Layout::open(&config.state_dir)?;
        let cgroups = Cgroups::init(&config.cgroup);
        let config_slots = config.instances.max_parallel_launches;
        let firewall = Firewall::new(&config.network);
        let vpc = VpcNet::new(
            config.network.underlay()?,
            config.network.underlay_device.clone(),
            Some(layout.root().join("vpc.json")),
        );
        Ok(Arc::new(HostContext {
            config,
            addressing,
            layout,
            cgroups,
            net_lock: Mutex::new(()),
            changed,
            digests: Arc::default(),
            launch_slots: Semaphore::new(config_slots),
            watcher: DirWatcher::default(),
            firewall,
            vpc,
            bridged: std::sync::Mutex::default(),
            reserved: std::sync::Mutex::default(),
        }))
    }

    fn bridged(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Ipv4Addr, u8)>> {
        self.bridged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the bridge exists, is up and carries `gateway/prefix`;
    /// done once per subnet and agent run (the caller holds `net_lock`).
    pub async fn ensure_bridge_for(&self, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
        if self.bridged().contains(&(gateway, prefix)) {
            return Ok(());
        }
        tap::ensure_bridge(&self.config.network.bridge, gateway, prefix).await?;
        self.bridged().insert((gateway, prefix));
        Ok(())
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, BTreeSet<Ipv4Addr>> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Addresses chosen but not yet recorded (the caller holds `net_lock`).
    pub fn reserved_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.reserved().clone()
    }

    /// Reserves an address until its `net.json` is written (under `net_lock`).
    pub fn reserve_ip(&self, ip: Ipv4Addr) {
        self.reserved().insert(ip);
    }

    /// Ends a reservation: recorded or given up (under `net_lock`).
    pub fn release_ip(&self, ip: Ipv4Addr) {
        self.reserved().remove(&ip);
    }

    /// Forgets which subnets were set up (after a TAP could not be attached,
    /// e.g. because someone removed the bridge): the next launch checks again.
    pub fn forget_bridge(&self) {
        self.bridged().clear();
    }

    /// Makes sure the instance bridge exists, up, with the configured
    /// address when there is one (idempotent). Instances add their spec's
    /// gateway when they launch.
    pub async fn ensure_bridge(&self) -> Result<()> {
        let _g = self.net_lock.lock().await;
        let bridge = &self.config.network.bridge;
        match self.addressing {
            Some(a) => {
                tap::ensure_bridge(bridge, a.gateway, a.prefix).await?;
                self.bridged().insert((a.gateway, a.prefix));
                Ok(())
            }
            None => tap::ensure_bridge_link(bridge).await,
        }
    }
}
