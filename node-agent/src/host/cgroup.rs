//! cgroup v2 groups for VMM processes: `<cgroup2 mount>/<parent>/<instance>`
//! with `cpu.max` and `memory.max` from the instance's size, `pids.max`, and
//! `io.max` on the block device that holds the instance's disk. Checks that
//! cgroup2 is mounted and the cpu and memory controllers can be delegated;
//! when they cannot, creating a group fails with a clear reason (unless the
//! operator chose `enforce_limits = false`). The pids and io controllers are
//! best effort: where they are not on cgroup v2, or (io) the disk's device
//! cannot be determined, their limits are skipped with a warning.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::config::CgroupConfig;
use crate::error::{Error, Result};
use crate::types::InstanceId;

/// The period used in `cpu.max`.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Tasks allowed in an instance's group beyond one per vCPU.
const PIDS_HEADROOM: u64 = 16;
/// Where sysfs lists block devices by `major:minor`.
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

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
    /// `Ok` when `io.max` can be set (the io controller is enabled down to
    /// the parent); otherwise why not.
    io: std::result::Result<(), String>,
    enforce: bool,
    /// `/sys/dev/block` (another tree in tests).
    sys_dev_block: PathBuf,
}

/// An instance's `io.max` limits on its disk's device; 0 = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoMax {
    /// Bytes read per second.
    pub rbps: u64,
    /// Bytes written per second.
    pub wbps: u64,
    /// Read operations per second.
    pub riops: u64,
    /// Write operations per second.
    pub wiops: u64,
}

impl IoMax {
    /// True when nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == IoMax::default()
    }

    /// The `io.max` line for device `major:minor` (`max` for 0).
    pub fn line(&self, (major, minor): (u32, u32)) -> String {
        let v = |n: u64| {
            if n == 0 {
                "max".to_string()
            } else {
                n.to_string()
            }
        };
        format!(
            "{major}:{minor} rbps={} wbps={} riops={} wiops={}",
            v(self.rbps),
            v(self.wbps),
            v(self.riops),
            v(self.wiops)
        )
    }
}

/// What [`Cgroups::set_io_max`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOutcome {
    /// No io limits are configured: nothing written.
    Unlimited,
    /// This line was written to the group's `io.max`.
    Set(String),
    /// Limits are configured but cannot be applied, for this reason (the
    /// launch goes on; the caller logs it).
    Skipped(String),
}

/// The whole-disk block device (major, minor) that holds `file`, as `io.max`
/// wants it (the kernel refuses partitions), looked up under
/// `sys_dev_block` (`/sys/dev/block`). Fails, saying why, for files on a
/// file system without a block device of its own (overlayfs, tmpfs, NFS,
/// btrfs, whose st_dev is an anonymous 0:N device) and for devices sysfs
/// does not list.
pub fn whole_disk_of(file: &Path, sys_dev_block: &Path) -> std::result::Result<(u32, u32), String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(file)
        .map_err(|e| format!("stat {}: {e}", file.display()))?
        .dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    whole_disk((major, minor), sys_dev_block)
        .map_err(|why| format!("{} is on device {major}:{minor}{why}", file.display()))
}

/// The whole disk of device `major:minor` (itself unless it is a partition);
/// the error completes "FILE is on device M:N".
fn whole_disk(
    (major, minor): (u32, u32),
    sys_dev_block: &Path,
) -> std::result::Result<(u32, u32), String> {
    if major == 0 {
        return Err(
            ", a file system without a block device of its own (overlayfs, tmpfs, btrfs, NFS...)"
                .into(),
        );
    }
    let node = sys_dev_block.join(format!("{major}:{minor}"));
    let real = std::fs::canonicalize(&node)
        .map_err(|e| format!(", which {} does not list: {e}", sys_dev_block.display()))?;
    if !real.join("partition").exists() {
        return Ok((major, minor));
    }
    // A partition's sysfs directory lives in its disk's.
    let disk = real.parent().map(|d| d.join("dev")).unwrap_or_default();
    let text = std::fs::read_to_string(&disk).map_err(|e| {
        format!(
            ", a partition whose disk is unknown ({}: {e})",
            disk.display()
        )
    })?;
    let parsed = text
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    parsed.ok_or_else(|| format!(": unreadable {:?} in {}", text.trim(), disk.display()))
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
                io: Err("no cgroup2 filesystem is mounted".into()),
                enforce,
                sys_dev_block: PathBuf::from(SYS_DEV_BLOCK),
            };
        };
        let root = mount.join(&cfg.parent);
        if let Err(e) = std::fs::create_dir_all(&root) {
            let why = format!("cannot create {}: {e}", root.display());
            return Cgroups {
                root: None,
                limits: Err(why.clone()),
                io: Err(why),
                enforce,
                sys_dev_block: PathBuf::from(SYS_DEV_BLOCK),
            };
        }
        // io first: a fake tree in tests keeps the last write.
        let io = Self::enable_io(&mount, &cfg.parent);
        if let Err(why) = &io {
            tracing::warn!(%why, "cgroup v2 io limits ([limits] io_*) unavailable; disks are not limited by io.max");
        }
        let limits = Self::enable_controllers(&mount, &cfg.parent);
        if let Err(why) = &limits {
            tracing::warn!(%why, enforce, "cgroup v2 cpu/memory limits unavailable");
        }
        Cgroups {
            root: Some(root),
            limits,
            io,
            enforce,
            sys_dev_block: PathBuf::from(SYS_DEV_BLOCK),
        }
    }

    /// The cgroup directories from the mount down to `parent`.
    fn chain(mount: &Path, parent: &str) -> Vec<PathBuf> {
        let mut dir = mount.to_path_buf();
        let mut chain = vec![dir.clone()];
        for comp in parent.split('/') {
            dir = dir.join(comp);
            chain.push(dir.clone());
        }
        chain
    }

    /// Enables the io controller from the mount down to `parent`.
    fn enable_io(mount: &Path, parent: &str) -> std::result::Result<(), String> {
        let avail = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|e| format!("cannot read cgroup.controllers: {e}"))?;
        if !avail.split_whitespace().any(|x| x == "io") {
            return Err(format!(
                "controller \"io\" is not available in cgroup v2 at {} (available: {:?}; \
                 it is probably bound to cgroup v1 as blkio)",
                mount.display(),
                avail.trim()
            ));
        }
        for d in Self::chain(mount, parent) {
            let f = d.join("cgroup.subtree_control");
            std::fs::write(&f, "+io")
                .map_err(|e| format!("cannot enable io in {}: {e}", f.display()))?;
        }
        Ok(())
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
        for d in Self::chain(mount, parent) {
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

    /// Sets the instance group's `io.max` on the block device holding `disk`
    /// (the group must exist: [`Cgroups::create`]). Where the io controller
    /// is not on cgroup v2 or the device cannot be determined, nothing is
    /// written and the outcome says why; a write the kernel refuses fails.
    pub fn set_io_max(&self, id: &InstanceId, disk: &Path, io: &IoMax) -> Result<IoOutcome> {
        if io.is_unlimited() {
            return Ok(IoOutcome::Unlimited);
        }
        if let Err(why) = &self.io {
            return Ok(IoOutcome::Skipped(why.clone()));
        }
        let Some(dir) = self.path(id) else {
            return Ok(IoOutcome::Skipped("no cgroup".into()));
        };
        let dev = match whole_disk_of(disk, &self.sys_dev_block) {
            Ok(dev) => dev,
            Err(why) => return Ok(IoOutcome::Skipped(why)),
        };
        let line = io.line(dev);
        write(&dir.join("io.max"), &line)?;
        Ok(IoOutcome::Set(line))
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

    fn fake_tree(controllers: &str) -> (tempfile::TempDir, Cgroups) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), controllers).unwrap();
        let cg = Cgroups::init(&CgroupConfig {
            mount: Some(t.path().to_path_buf()),
            parent: "nubis".into(),
            enforce_limits: true,
        });
        (t, cg)
    }

    const IO: IoMax = IoMax {
        rbps: 10 << 20,
        wbps: 5 << 20,
        riops: 0,
        wiops: 200,
    };

    #[test]
    fn io_max_goes_on_the_whole_disk_holding_the_instance_file() {
        let (t, cg) = fake_tree("cpu io memory pids\n");
        let id = InstanceId::new("i-io").unwrap();
        let dir = cg.create(&id, 1, 1 << 20).unwrap();
        // A real file on this host's file system (the development VMs'
        // root is /dev/vda, 254:0).
        let disk = t.path().join("disk.raw");
        std::fs::write(&disk, b"x").unwrap();
        match cg.set_io_max(&id, &disk, &IO).unwrap() {
            IoOutcome::Set(line) => {
                assert_eq!(std::fs::read_to_string(dir.join("io.max")).unwrap(), line);
                let (dev, rest) = line.split_once(' ').unwrap();
                assert_eq!(rest, "rbps=10485760 wbps=5242880 riops=max wiops=200");
                // A whole disk sysfs knows, holding the file's own device.
                let sys = Path::new(SYS_DEV_BLOCK).join(dev);
                let real = std::fs::canonicalize(&sys).unwrap();
                assert!(!real.join("partition").exists(), "{dev} is a partition");
                use std::os::unix::fs::MetadataExt;
                let st = std::fs::metadata(&disk).unwrap().dev();
                let own = format!("{}:{}", rustix::fs::major(st), rustix::fs::minor(st));
                let own_real = std::fs::canonicalize(Path::new(SYS_DEV_BLOCK).join(&own)).unwrap();
                assert!(own_real.starts_with(&real), "{own} is not on {dev}");
            }
            // Temporary directories on tmpfs or overlayfs have no device:
            // the limit is skipped, saying why.
            IoOutcome::Skipped(why) => {
                assert!(why.contains("without a block device"), "{why}");
                assert!(!dir.join("io.max").exists());
            }
            other => panic!("{other:?}"),
        }
        // No limits configured: nothing is written.
        let id2 = InstanceId::new("i-io2").unwrap();
        let dir2 = cg.create(&id2, 1, 1 << 20).unwrap();
        assert_eq!(
            cg.set_io_max(&id2, &disk, &IoMax::default()).unwrap(),
            IoOutcome::Unlimited
        );
        assert!(!dir2.join("io.max").exists());
    }

    #[test]
    fn io_limits_are_skipped_without_the_io_controller_or_a_device() {
        // The development VMs' case: io is bound to cgroup v1 (blkio).
        let (t, cg) = fake_tree("cpu memory pids\n");
        let id = InstanceId::new("i-io").unwrap();
        let dir = cg.create(&id, 1, 1 << 20).unwrap();
        let disk = t.path().join("disk.raw");
        std::fs::write(&disk, b"x").unwrap();
        match cg.set_io_max(&id, &disk, &IO).unwrap() {
            IoOutcome::Skipped(why) => assert!(why.contains("\"io\" is not available"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.join("io.max").exists());
        // A file system without a block device (procfs here, like tmpfs or
        // overlayfs).
        let why =
            whole_disk_of(Path::new("/proc/self/status"), Path::new(SYS_DEV_BLOCK)).unwrap_err();
        assert!(why.contains("without a block device"), "{why}");
    }

    #[test]
    fn a_partition_maps_to_its_disk() {
        // A fake /sys: /sys/dev/block/8:1 -> devices/block/sda/sda1.
        let t = tempfile::tempdir().unwrap();
        let sda = t.path().join("devices/block/sda");
        std::fs::create_dir_all(sda.join("sda1")).unwrap();
        std::fs::write(sda.join("dev"), "8:0\n").unwrap();
        std::fs::write(sda.join("sda1/dev"), "8:1\n").unwrap();
        std::fs::write(sda.join("sda1/partition"), "1\n").unwrap();
        let by_dev = t.path().join("dev/block");
        std::fs::create_dir_all(&by_dev).unwrap();
        std::os::unix::fs::symlink("../../devices/block/sda/sda1", by_dev.join("8:1")).unwrap();
        std::os::unix::fs::symlink("../../devices/block/sda", by_dev.join("8:0")).unwrap();
        assert_eq!(whole_disk((8, 1), &by_dev).unwrap(), (8, 0));
        // A whole disk maps to itself.
        assert_eq!(whole_disk((8, 0), &by_dev).unwrap(), (8, 0));
        // Unknown to sysfs; anonymous devices.
        assert!(whole_disk((8, 2), &by_dev)
            .unwrap_err()
            .contains("does not list"));
        assert!(whole_disk((0, 51), &by_dev)
            .unwrap_err()
            .contains("without a block device"));
        std::fs::write(sda.join("dev"), "garbage").unwrap();
        assert!(whole_disk((8, 1), &by_dev)
            .unwrap_err()
            .contains("unreadable"));
    }
}
