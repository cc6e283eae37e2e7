//! cgroup v2 groups for VMM processes: `<cgroup2 mount>/<parent>/<instance>`
//! with `cpu.max` and `memory.max` from the instance's size. Checks that
//! cgroup2 is mounted and the cpu and memory controllers can be delegated;
//! when they cannot, creating a group fails with a clear reason (unless the
//! operator chose `enforce_limits = false`).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::config::CgroupConfig;
use crate::error::{Error, Result};
use crate::types::InstanceId;

/// The period used in `cpu.max`.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Tasks allowed in an instance's group beyond one per vCPU.
const PIDS_HEADROOM: u64 = 16;

/// Finds the cgroup2 mount point in `/proc/self/mountinfo`.
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo_cgroup2(&text)
}

fn parse_mountinfo_cgroup2(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mountpoint = pre.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mountpoint))
    })
}

/// The agent's cgroup tree.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: Option<PathBuf>,
    /// `Ok` when cpu and memory limits can be set; otherwise why not.
    limits: std::result::Result<(), String>,
    enforce: bool,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .map_err(|e| Error::io(format!("writing {value:?} to {}", path.display()), e))
}

impl Cgroups {
    /// Sets up `<mount>/<parent>` and enables the controllers down to it.
    /// Never fails: problems are recorded and reported per instance.
    pub fn init(cfg: &CgroupConfig) -> Cgroups {
        let enforce = cfg.enforce_limits;
        let Some(mount) = cfg.mount.clone().or_else(find_cgroup2_mount) else {
            return Cgroups {
                root: None,
                limits: Err("no cgroup2 filesystem is mounted".into()),
                enforce,
            };
        };
        let root = mount.join(&cfg.parent);
        if let Err(e) = std::fs::create_dir_all(&root) {
            return Cgroups {
                root: None,
                limits: Err(format!("cannot create {}: {e}", root.display())),
                enforce,
            };
        }
        let limits = Self::enable_controllers(&mount, &cfg.parent);
        if let Err(why) = &limits {
            tracing::warn!(%why, enforce, "cgroup v2 cpu/memory limits unavailable");
        }
        Cgroups {
            root: Some(root),
            limits,
            enforce,
        }
    }

    fn enable_controllers(mount: &Path, parent: &str) -> std::result::Result<(), String> {
        let avail = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read cgroup.controllers: {e}"))?;
        for c in ["cpu", "memory"] {
            if !avail.split_whitespace().any(|x| x == c) {
                return Err(format!(
                    "controller {c:?} is not available in cgroup v2 at {} (available: {:?}; \
                     it is probably bound to a cgroup v1 hierarchy)",
                    mount.display(),
                    avail.trim()
                ));
            }
        }
        // Enable in every ancestor's subtree_control, from the mount down to
        // the parent (the instance groups are the parent's children).
        let mut dir = mount.to_path_buf();
        let mut chain = vec![dir.clone()];
        for comp in parent.split('/') {
            dir = dir.join(comp);
            chain.push(dir.clone());
        }
        for d in chain {
            let f = d.join("cgroup.subtree_control");
            // pids is best effort: hosts whose pids controller is bound to
            // cgroup v1 still limit tasks through the jail's RLIMIT_NPROC.
            if avail.split_whitespace().any(|x| x == "pids") {
                let _ = std::fs::write(&f, "+pids");
            }
            std::fs::write(&f, "+cpu +memory")
                .map_err(|e| format!("cannot enable cpu,memory in {}: {e}", f.display()))?;
        }
        Ok(())
    }

    /// The group directory of an instance.
    pub fn path(&self, id: &InstanceId) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join(id.as_str()))
    }

    /// Creates (idempotently) an instance's group with its limits.
    pub fn create(&self, id: &InstanceId, vcpus: u32, memory_bytes: u64) -> Result<PathBuf> {
        let Some(dir) = self.path(id) else {
            return Err(Error::CgroupUnavailable(
                self.limits.clone().err().unwrap_or_default(),
            ));
        };
        if let Err(why) = &self.limits {
            if self.enforce {
                return Err(Error::CgroupUnavailable(why.clone()));
            }
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
        if self.limits.is_ok() {
            let quota = u64::from(vcpus) * CPU_PERIOD_US;
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            write(&dir.join("memory.max"), &memory_bytes.to_string())?;
        }
        // Tasks: the VMM's vCPU threads plus its main and API threads (and
        // headroom); present only where the pids controller is on cgroup v2.
        let pids = dir.join("pids.max");
        if pids.exists() {
            write(&pids, &(u64::from(vcpus) + PIDS_HEADROOM).to_string())?;
        }
        Ok(dir)
    }

    /// Opens `cgroup.procs` of the group for writing (the spawn path writes
    /// "0" to it in the child before exec).
    pub fn open_procs(&self, id: &InstanceId) -> Result<Option<std::fs::File>> {
        let Some(dir) = self.path(id) else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let p = dir.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .open(&p)
            .map(Some)
            .map_err(|e| Error::io(format!("opening {}", p.display()), e))
    }

    /// Pids in the instance's group.
    pub fn pids(&self, id: &InstanceId) -> Vec<i32> {
        let Some(dir) = self.path(id) else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes an instance's group; kills leftover processes first. A missing
    /// group is fine.
    pub async fn remove(&self, id: &InstanceId) -> Result<()> {
        let Some(dir) = self.path(id) else {
            return Ok(());
        };
        self.remove_dir(&dir).await
    }

    async fn remove_dir(&self, dir: &Path) -> Result<()> {
        for attempt in 0..50 {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if attempt < 49 => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cgroup busy; retrying");
                    let kill = dir.join("cgroup.kill");
                    if kill.exists() {
                        let _ = std::fs::write(&kill, "1");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    /// Names of the instance groups that exist.
    pub fn list(&self) -> Vec<String> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        std::fs::read_dir(root)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a group by name (orphan clean-up).
    pub async fn remove_named(&self, name: &str) -> Result<()> {
        match &self.root {
            Some(r) if !name.contains('/') => self.remove_dir(&r.join(name)).await,
            _ => Ok(()),
        }
    }

    /// Whether cpu/memory limits are enforced.
    pub fn limits_enforced(&self) -> bool {
        self.limits.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_mountinfo() {
        let text = "\
30 24 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            parse_mountinfo_cgroup2(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_mountinfo_cgroup2("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn limits_follow_the_instance_size() {
        // A fake cgroup2 tree (plain files): checks what the agent writes.
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let cfg = CgroupConfig {
            mount: Some(t.path().to_path_buf()),
            parent: "nubis/agent".into(),
            enforce_limits: true,
        };
        let cg = Cgroups::init(&cfg);
        assert!(cg.limits_enforced());
        for d in ["", "nubis", "nubis/agent"] {
            let sc = std::fs::read_to_string(t.path().join(d).join("cgroup.subtree_control"));
            assert_eq!(sc.unwrap(), "+cpu +memory", "{d}");
        }
        let id = InstanceId::new("i-1").unwrap();
        let dir = cg.create(&id, 2, 192 << 20).unwrap();
        assert_eq!(dir, t.path().join("nubis/agent/i-1"));
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            "201326592"
        );
        // Idempotent.
        assert_eq!(cg.create(&id, 2, 192 << 20).unwrap(), dir);
        assert_eq!(cg.list(), vec!["i-1".to_string()]);
    }

    #[test]
    fn missing_controllers_fail_instances_when_enforced() {
        let t = tempfile::tempdir().unwrap();
        // A fake "mount" whose controllers lack cpu/memory.
        std::fs::write(t.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let cfg = CgroupConfig {
            mount: Some(t.path().to_path_buf()),
            parent: "nubis".into(),
            enforce_limits: true,
        };
        let cg = Cgroups::init(&cfg);
        assert!(!cg.limits_enforced());
        let id = InstanceId::new("i-1").unwrap();
        let e = cg.create(&id, 1, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("\"cpu\" is not available"), "{e}");
        let lax = Cgroups::init(&CgroupConfig {
            enforce_limits: false,
            ..cfg
        });
        assert!(lax.create(&id, 1, 1 << 20).unwrap().is_dir());
    }
}
