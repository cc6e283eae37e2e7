//! Host-wide context shared by all instance tasks: configuration, the state
//! directory, the cgroup tree, the address-allocation lock, the bridge
//! status and the channel on which tasks announce state changes.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use crate::config::{Addressing, Config};
use crate::error::Result;
use crate::host::cgroup::Cgroups;
use crate::host::image::DigestCache;
use crate::host::tap;
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
    /// Digests of image files for periodic scans.
    pub digests: DigestCache,
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
        Ok(Arc::new(HostContext {
            config,
            addressing,
            layout,
            cgroups,
            net_lock: Mutex::new(()),
            changed,
            digests: DigestCache::default(),
        }))
    }

    /// Makes sure the instance bridge exists, up, with the configured
    /// address when there is one (idempotent). Instances add their spec's
    /// gateway when they launch.
    pub async fn ensure_bridge(&self) -> Result<()> {
        let _g = self.net_lock.lock().await;
        let bridge = &self.config.network.bridge;
        match self.addressing {
            Some(a) => tap::ensure_bridge(bridge, a.gateway, a.prefix).await,
            None => tap::ensure_bridge_link(bridge).await,
        }
    }
}
