//! The agent's state directory and what it persists:
//!
//! ```text
//! <state_dir>/host-id                   generated once (UUID v4)
//! <state_dir>/instances/<id>/spec.json  instance spec + desired generation
//!                            net.json   IP, MAC, TAP (the address allocation)
//!                            state.json last lifecycle state and reason
//!                            vmm.json   pid + start time of the running VMM
//!                            disk.raw   root disk
//!                            console.log, console.log.1, vmm.stdout, vmm.stderr, api.sock
//! ```
//!
//! Every JSON file is written to a temporary name, synced and renamed, so a
//! crash leaves the old or the new version, never a torn one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Addressing;
use crate::error::{Error, Result};
use crate::runtime::{State, StateReason};
use crate::types::{InstanceId, InstanceSpec};

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        context: path.display().to_string(),
        source,
    })?;
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// Runs blocking file work (e.g. a synced [`write_json`]) from async code
/// without stalling the other tasks of a multi-threaded runtime: the worker
/// hands its other tasks to another thread while `f` runs
/// (`block_in_place`). On other runtimes, or outside one, `f` just runs.
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Reads JSON from `path`; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Json {
                context: path.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The network identity of an instance (`net.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAlloc {
    /// Instance address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway (the bridge address).
    pub gateway: Ipv4Addr,
    /// MAC address.
    pub mac: String,
    /// TAP device name.
    pub tap: String,
    /// The instance's VPC: its TAP is a routed port of the VPC data plane
    /// (`host::vpc`), not on the bridge. `None`: the legacy bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<crate::types::VpcAttachment>,
    /// The secondary interfaces' routed ports (VPC instances only), by
    /// device index; rewritten at every start from the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraPort>,
}

/// A secondary interface's routed port (in `net.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraPort {
    /// Device index (1..).
    pub device_index: u32,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its subnet's prefix length.
    pub prefix: u8,
    /// Its subnet's router.
    pub gateway: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// Its TAP ([`crate::host::tap::tap_name_at`]).
    pub tap: String,
    /// Its VPC, subnet and groups at launch.
    pub vpc: crate::types::VpcAttachment,
}

/// Persisted lifecycle (`state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Last state.
    pub state: State,
    /// Its reason.
    pub reason: Option<StateReason>,
    /// Last applied assignment generation.
    pub generation: u64,
    /// Exit code of the last VMM, when observed.
    pub vmm_exit_code: Option<i32>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates the directory tree when missing.
    pub fn open(root: &Path) -> Result<Layout> {
        let l = Layout {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(l.instances_dir())
            .map_err(|e| Error::io(format!("creating {}", l.instances_dir().display()), e))?;
        Ok(l)
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parent of the instance directories.
    pub fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// One instance's directory.
    pub fn instance(&self, id: &InstanceId) -> InstanceDir {
        InstanceDir {
            path: self.instances_dir().join(id.as_str()),
        }
    }

    /// The persistent host id, generated on first use.
    pub fn host_id(&self) -> Result<String> {
        let p = self.root.join("host-id");
        match std::fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", p.display()), e)),
        }
        let id = uuid::Uuid::new_v4().to_string();
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("{id}\n"))
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        Ok(id)
    }

    /// Where the node credential the control plane issued at the first
    /// registration is kept (mode 0600): the agent re-registers with it
    /// after a restart, since a per-host enrolment token enrols only once.
    pub fn node_credential(&self) -> PathBuf {
        self.root.join("node-credential.json")
    }

    /// Names of all instance directories (valid ids only; others are logged).
    pub fn list(&self) -> Result<Vec<InstanceId>> {
        let d = self.instances_dir();
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            match InstanceId::new(name.clone()) {
                Ok(id) if e.path().is_dir() => out.push(id),
                _ => tracing::warn!(entry = name, "ignoring unexpected entry in instances dir"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Allocates (or returns the existing) address of `id`. The caller holds
    /// the allocation lock, so two instances never get the same address.
    pub fn allocate_net(
        &self,
        id: &InstanceId,
        plan: &Addressing,
        mac: String,
        tap: String,
        requested: Option<Ipv4Addr>,
    ) -> Result<NetAlloc> {
        if let Some(n) = self.existing_net(id)? {
            return Ok(n);
        }
        let n = self.choose_net(id, plan, mac, tap, requested, &BTreeSet::new())?;
        write_json(&self.instance(id).net(), &n)?;
        Ok(n)
    }

    /// The recorded address allocation of `id` (`net.json`), if any.
    pub fn existing_net(&self, id: &InstanceId) -> Result<Option<NetAlloc>> {
        read_json::<NetAlloc>(&self.instance(id).net())
    }

    /// Picks an address for `id` without recording it: `requested`, or the
    /// lowest free one of the plan's range. Taken are the addresses of every
    /// other instance's `net.json` and `reserved` (allocations being written).
    /// The caller holds the allocation lock and records the result (or keeps
    /// it reserved until it is recorded).
    pub fn choose_net(
        &self,
        id: &InstanceId,
        plan: &Addressing,
        mac: String,
        tap: String,
        requested: Option<Ipv4Addr>,
        reserved: &BTreeSet<Ipv4Addr>,
    ) -> Result<NetAlloc> {
        let mut used = reserved.clone();
        for other in self.list()? {
            if &other == id {
                continue;
            }
            // VPC addresses live in their VPC's table, not the bridge's range.
            if let Ok(Some(n)) = read_json::<NetAlloc>(&self.instance(&other).net()) {
                if n.vpc.is_none() {
                    used.insert(n.ip);
                }
            }
        }
        let ip = match requested {
            Some(ip) => {
                if used.contains(&ip) {
                    return Err(Error::ConfigInvalid(format!(
                        "address {ip} is already in use"
                    )));
                }
                ip
            }
            None => (u32::from(plan.first)..=u32::from(plan.last))
                .map(Ipv4Addr::from)
                .find(|a| !used.contains(a))
                .ok_or(Error::AddressesExhausted)?,
        };
        Ok(NetAlloc {
            ip,
            prefix: plan.prefix,
            gateway: plan.gateway,
            mac,
            tap,
            vpc: None,
            extra: Vec::new(),
        })
    }
}

/// Paths inside one instance directory.
#[derive(Debug, Clone)]
pub struct InstanceDir {
    path: PathBuf,
}

impl InstanceDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Creates it.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .map_err(|e| Error::io(format!("creating {}", self.path.display()), e))
    }
    /// Removes it and everything in it; a missing one is fine.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.path.display()), e)),
        }
    }
    /// `spec.json`.
    pub fn spec(&self) -> PathBuf {
        self.path.join("spec.json")
    }
    /// `net.json`.
    pub fn net(&self) -> PathBuf {
        self.path.join("net.json")
    }
    /// `metadata.json`: what the VMM's metadata service serves.
    pub fn metadata(&self) -> PathBuf {
        self.path.join("metadata.json")
    }
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// `vmm.json`.
    pub fn vmm(&self) -> PathBuf {
        self.path.join("vmm.json")
    }
    /// `disk.raw`.
    pub fn disk(&self) -> PathBuf {
        self.path.join("disk.raw")
    }
    /// `console.log`.
    pub fn console(&self) -> PathBuf {
        self.path.join("console.log")
    }
    /// `api.sock`.
    pub fn api_socket(&self) -> PathBuf {
        self.path.join("api.sock")
    }
    /// `vmm.stdout`.
    pub fn stdout(&self) -> PathBuf {
        self.path.join("vmm.stdout")
    }
    /// `vmm.stderr`.
    pub fn stderr(&self) -> PathBuf {
        self.path.join("vmm.stderr")
    }
    /// Reads `spec.json`.
    pub fn read_spec(&self) -> Result<Option<InstanceSpec>> {
        read_json(&self.spec())
    }
}

/// The newest `max` bytes of a file (empty when it does not exist).
pub fn tail(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let io = |e| Error::io(format!("reading {}", path.display()), e);
    let len = f.metadata().map_err(io)?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))
        .map_err(io)?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out).map_err(io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_is_generated_once() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::open(t.path()).unwrap();
        let a = l.host_id().unwrap();
        assert_eq!(a, Layout::open(t.path()).unwrap().host_id().unwrap());
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn addresses_are_unique_persistent_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let l = Layout::open(t.path()).unwrap();
        let plan = Addressing {
            gateway: Ipv4Addr::new(10, 9, 0, 1),
            prefix: 24,
            first: Ipv4Addr::new(10, 9, 0, 10),
            last: Ipv4Addr::new(10, 9, 0, 11),
        };
        let ids: Vec<InstanceId> = (0..3)
            .map(|i| InstanceId::new(format!("i-{i}")).unwrap())
            .collect();
        let mut got = Vec::new();
        for id in &ids[..2] {
            l.instance(id).create().unwrap();
            got.push(
                l.allocate_net(id, &plan, "m".into(), "t".into(), None)
                    .unwrap(),
            );
        }
        assert_ne!(got[0].ip, got[1].ip);
        // Repeating returns the persisted allocation.
        let again = l
            .allocate_net(&ids[0], &plan, "m".into(), "t".into(), None)
            .unwrap();
        assert_eq!(again, got[0]);
        l.instance(&ids[2]).create().unwrap();
        let e = l.allocate_net(&ids[2], &plan, "m".into(), "t".into(), None);
        assert!(matches!(e, Err(Error::AddressesExhausted)));
        // A reserved (being written) address is taken too.
        let reserved: BTreeSet<Ipv4Addr> = [got[0].ip].into();
        l.instance(&ids[0]).remove().unwrap();
        let e = l.choose_net(&ids[2], &plan, "m".into(), "t".into(), None, &reserved);
        assert!(matches!(e, Err(Error::AddressesExhausted)));
        l.instance(&ids[0]).create().unwrap();
        l.allocate_net(&ids[0], &plan, "m".into(), "t".into(), Some(got[0].ip))
            .unwrap();
        // Freed when the instance directory goes.
        l.instance(&ids[0]).remove().unwrap();
        let n = l
            .allocate_net(&ids[2], &plan, "m".into(), "t".into(), None)
            .unwrap();
        assert_eq!(n.ip, got[0].ip);
    }

    #[test]
    fn tail_returns_newest_bytes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.log");
        assert!(tail(&p, 10).unwrap().is_empty());
        std::fs::write(&p, b"0123456789abcdef").unwrap();
        assert_eq!(tail(&p, 4).unwrap(), b"cdef");
        assert_eq!(tail(&p, 100).unwrap().len(), 16);
    }
}
