//! The VMM jail: what the agent does so that a `nubis-vmm` process runs with
//! no more privilege than one microVM needs (docs/vmm.md, "The jail").
//!
//! Owned here:
//! - the uid/gid of each VMM, one per instance from `[jail] uid_base ..
//!   uid_base + uid_count`. The instance directory's owner is the allocation
//!   record: it survives agent restarts (re-adopted VMMs keep their uid) and a
//!   repeated launch reuses it;
//! - handing the VMM what it cannot open itself: `/dev/kvm` (mode 0600 root)
//!   and the TAP, attached here with `TUNSETIFF` (CAP_NET_ADMIN stays with
//!   the agent), both as inherited fds (`--kvm-fd`, `--net ..,fd=N`);
//! - ownership of the instance's own files (directory, root disk, console)
//!   so the unprivileged VMM can use them and nothing else of the host;
//! - the steps in the cloned child before exec ([`Jail::enter`]; the child
//!   is already pid 1 of its own pid namespace, [`super::pidns`]): new IPC,
//!   UTS and network namespaces (the VMM's network namespace is empty but for
//!   a `lo` that stays down: its TAP is an fd attached in the agent's
//!   namespace, its API a pathname Unix socket, so it needs no network of its
//!   own and can reach nothing), with `[jail] pivot_root` a new mount
//!   namespace pivoted into a root holding only the VMM's own files
//!   ([`super::jail_root`]), rlimits, the capability bounding set emptied, supplementary
//!   groups dropped, gid and uid switched (which clears every capability), and
//!   `no_new_privs`. The VMM then installs its own seccomp filters.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::jail_root::RootPlan;
use crate::config::JailConfig;
use crate::error::{Error, Result};

/// Serialises uid allocation between parallel launches.
static ALLOCATION: Mutex<()> = Mutex::new(());

/// Everything the cloned child needs to enter the jail, prepared in the
/// parent (the child only makes raw syscalls).
#[derive(Debug)]
pub struct Jail {
    /// The VMM's uid (= gid).
    pub uid: u32,
    kvm: OwnedFd,
    tap: Option<OwnedFd>,
    /// The secondary interfaces' TAPs, in `--net` order.
    extra_taps: Vec<OwnedFd>,
    nofile: u64,
    fsize: u64,
    root: Option<RootPlan>,
}

impl Jail {
    /// The inherited `/dev/kvm` fd number (for `--kvm-fd`).
    pub fn kvm_fd(&self) -> RawFd {
        self.kvm.as_raw_fd()
    }

    /// The inherited TAP fd number (for `--net ..,fd=N`).
    pub fn tap_fd(&self) -> Option<RawFd> {
        self.tap.as_ref().map(|t| t.as_raw_fd())
    }

    /// The inherited fd of the `n`-th secondary interface's TAP.
    pub fn extra_tap_fd(&self, n: usize) -> Option<RawFd> {
        self.extra_taps.get(n).map(|t| t.as_raw_fd())
    }

    /// Runs in the cloned child before exec ([`super::pidns::spawn`]):
    /// async-signal-safe raw syscalls only. Any failure aborts the spawn (the VMM never runs unjailed).
    pub fn enter(&self) -> std::io::Result<()> {
        use super::jail_root::check;
        // SAFETY: plain syscalls on integers and stack values; no allocation.
        unsafe {
            // The fds the VMM inherits (std opened them close-on-exec).
            check(libc::fcntl(self.kvm.as_raw_fd(), libc::F_SETFD, 0))?;
            for tap in self.tap.iter().chain(&self.extra_taps) {
                check(libc::fcntl(tap.as_raw_fd(), libc::F_SETFD, 0))?;
            }
            // The TAP fd stays attached to its device in the agent's network
            // namespace; pathname Unix sockets (the API) ignore namespaces.
            let mount_ns = if self.root.is_some() {
                libc::CLONE_NEWNS
            } else {
                0
            };
            check(libc::unshare(
                libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET | mount_ns,
            ))?;
            if let Some(root) = &self.root {
                root.enter()?;
            }
            let limit = |res, n: u64| {
                let r = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                check(libc::setrlimit(res, &r))
            };
            limit(libc::RLIMIT_NOFILE, self.nofile)?;
            limit(libc::RLIMIT_FSIZE, self.fsize)?;
            limit(libc::RLIMIT_CORE, 0)?;
            // Per uid, and the uid is this VMM's alone: its threads only.
            limit(libc::RLIMIT_NPROC, 512)?;
            // Empty the bounding set (needs CAP_SETPCAP, so before setuid);
            // EINVAL past the kernel's last capability ends the loop.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    if *libc::__errno_location() == libc::EINVAL {
                        break;
                    }
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Raw syscalls, not libc's wrappers: those broadcast the change
            // to every thread libc believes the process has, and in a child
            // made by a raw clone3 that list is still the agent's.
            let id = libc::c_long::from(self.uid);
            let none = std::ptr::null::<libc::gid_t>();
            check(libc::syscall(libc::SYS_setgroups, 0, none) as libc::c_int)?;
            check(libc::syscall(libc::SYS_setresgid, id, id, id) as libc::c_int)?;
            // From root to a non-zero uid without SECBIT_KEEP_CAPS: the
            // permitted, effective and ambient sets are cleared.
            check(libc::syscall(libc::SYS_setresuid, id, id, id) as libc::c_int)?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    }
}

/// Makes `dir` traversable (not listable) by the VMM users.
/// Checks at agent start that a jailed VMM (an unprivileged uid with no
/// group in common with anything) can reach `dirs`: every directory from
/// `/` down to each of them must grant search (`x`) to others. The agent
/// makes its own state and instance directories traversable, but does not
/// change the modes of their parents; a parent such as a `0700` state
/// root would make every launch fail with "Permission denied", so it is
/// refused here with the directory to fix. Directories that do not exist
/// yet are skipped.
pub fn check_reachable(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        let full = match std::fs::canonicalize(dir) {
            Ok(full) => full,
            // Not there yet (an image directory filled later): nothing to check.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("resolving {}", dir.display()), e)),
        };
        for ancestor in full.ancestors() {
            let mode = std::fs::metadata(ancestor)
                .map_err(|e| Error::io(format!("stat {}", ancestor.display()), e))?
                .permissions()
                .mode();
            if mode & 0o001 == 0 {
                return Err(Error::ConfigInvalid(format!(
                    "[jail] the VMMs run as unprivileged uids and cannot reach {}: {} has mode {:04o}, \
                     without search permission for others (`chmod o+x {}`), or disable the jail \
                     ([jail] enabled = false, not for production)",
                    dir.display(),
                    ancestor.display(),
                    mode & 0o7777,
                    ancestor.display()
                )));
            }
        }
    }
    Ok(())
}

/// Makes `file` private to the owner of `dir` (its VMM's uid under the
/// jail): chown to that uid and gid, mode 0600. Used for files the agent
/// rewrites for a running VMM (the metadata file on reload), whose new
/// copy is created by the agent as root.
pub fn give_to_owner_of(file: &Path, dir: &Path) -> Result<()> {
    let owner = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?
        .uid();
    chown(file, owner)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", file.display()), e))
}

fn ensure_traversable(dir: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode((mode | 0o111) & 0o7777),
        )
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}

fn chown(path: &Path, uid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e))
}

/// Picks the uid of the instance whose directory is `dir` (reusing the one
/// it already has), among the instance directories under `instances`.
pub fn allocate_uid(cfg: &JailConfig, instances: &Path, dir: &Path) -> Result<u32> {
    let range = cfg.uid_base..cfg.uid_base.saturating_add(cfg.uid_count);
    let own = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?
        .uid();
    if range.contains(&own) {
        return Ok(own);
    }
    let mut used = std::collections::HashSet::new();
    let entries = std::fs::read_dir(instances)
        .map_err(|e| Error::io(format!("listing {}", instances.display()), e))?;
    for entry in entries.flatten() {
        if let Ok(m) = entry.metadata() {
            if m.is_dir() && range.contains(&m.uid()) {
                used.insert(m.uid());
            }
        }
    }
    range.clone().find(|u| !used.contains(u)).ok_or_else(|| {
        Error::ConfigInvalid(format!(
            "[jail] all {} uids from {} are in use",
            cfg.uid_count, cfg.uid_base
        ))
    })
}

/// The instance's files the jailed VMM uses.
#[derive(Debug)]
pub struct JailFiles<'a> {
    /// The agent's state directory (made traversable).
    pub state_dir: &'a Path,
    /// The directory of all instance directories (made traversable).
    pub instances: &'a Path,
    /// The instance directory (owned by the VMM's uid: API socket, console,
    /// exit record are created in it).
    pub dir: &'a Path,
    /// Root disk (owned by the VMM's uid).
    pub disk: &'a Path,
    /// Console log, when it already exists.
    pub console: &'a Path,
    /// The metadata file the VMM serves, when the instance has one (owned by
    /// the VMM's uid, mode 0600: it holds the user data).
    pub metadata: Option<&'a Path>,
    /// TAP to attach, if any.
    pub tap: Option<&'a str>,
    /// The secondary interfaces' TAPs.
    pub extra_taps: Vec<&'a str>,
    /// Console cap (the file-size limit allows it and the disk).
    pub console_max_bytes: u64,
    /// The `nubis-vmm` binary, kernel and initrd: with `[jail] pivot_root`
    /// the only host files the VMM sees besides its instance directory.
    pub binary: &'a Path,
    /// Guest kernel.
    pub kernel: &'a Path,
    /// Guest initrd.
    pub initrd: Option<&'a Path>,
}

/// The directory each jailed VMM's root tmpfs is mounted on, in its own
/// mount namespace (empty on the host).
pub fn root_mountpoint(state_dir: &Path) -> PathBuf {
    state_dir.join("vmm-root")
}

/// The root plan of one VMM: its binary and libraries, kernel and initrd
/// read-only, its instance directory (which must hold every file it writes).
fn root_plan(files: &JailFiles<'_>) -> Result<RootPlan> {
    let inside = |p: &Path| p.parent() == Some(files.dir);
    let mut written = vec![files.disk, files.console];
    written.extend(files.metadata);
    if let Some(outside) = written.into_iter().find(|p| !inside(p)) {
        return Err(Error::ConfigInvalid(format!(
            "[jail] pivot_root: {} is not in the instance directory {}",
            outside.display(),
            files.dir.display()
        )));
    }
    let mountpoint = root_mountpoint(files.state_dir);
    std::fs::create_dir_all(&mountpoint)
        .map_err(|e| Error::io(format!("creating {}", mountpoint.display()), e))?;
    let exec = super::jail_root::runtime_files(files.binary)?;
    let mut ro = vec![files.kernel.to_path_buf()];
    ro.extend(files.initrd.map(Path::to_path_buf));
    super::jail_root::plan(&mountpoint, &exec, &ro, files.dir)
}

/// Prepares the jail of one VMM: uid, ownership of its files, the `/dev/kvm`
/// and TAP fds. Idempotent (a repeated launch reuses the same uid).
pub fn prepare(cfg: &JailConfig, files: &JailFiles<'_>) -> Result<Jail> {
    ensure_traversable(files.state_dir)?;
    ensure_traversable(files.instances)?;
    let uid = {
        let _guard = ALLOCATION.lock().unwrap_or_else(|p| p.into_inner());
        let uid = allocate_uid(cfg, files.instances, files.dir)?;
        chown(files.dir, uid)?;
        uid
    };
    let disk_len = std::fs::metadata(files.disk)
        .map_err(|e| Error::io(format!("stat {}", files.disk.display()), e))?
        .len();
    chown(files.disk, uid)?;
    if files.console.exists() {
        chown(files.console, uid)?;
    }
    if let Some(md) = files.metadata {
        give_to_owner_of(md, files.dir)?;
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| Error::io("opening /dev/kvm", e))?;
    let tap = files.tap.map(open_tap).transpose()?;
    let extra_taps = files
        .extra_taps
        .iter()
        .map(|t| open_tap(t))
        .collect::<Result<Vec<_>>>()?;
    let root = if cfg.pivot_root {
        Some(root_plan(files)?)
    } else {
        None
    };
    Ok(Jail {
        root,
        uid,
        kvm: kvm.into(),
        tap,
        extra_taps,
        nofile: cfg.max_open_files,
        fsize: disk_len
            .max(files.console_max_bytes)
            .saturating_add(1 << 20),
    })
}

/// Opens `/dev/net/tun` and attaches it to the existing TAP `name`
/// (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, as the VMM expects).
fn open_tap(name: &str) -> Result<OwnedFd> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::ConfigInvalid(format!("TAP name {name:?}")));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("opening /dev/net/tun", e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) a 40-byte `struct ifreq`;
    // `req` is a live, exclusively borrowed value of that layout.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(Error::io(
            format!("TUNSETIFF {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_goes_back_to_the_vmm_uid_and_stays_private() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("i-1");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(900_123), Some(900_123)).unwrap();
        let file = dir.join("metadata.json");
        std::fs::write(&file, b"{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        give_to_owner_of(&file, &dir).unwrap();
        let m = std::fs::metadata(&file).unwrap();
        assert_eq!((m.uid(), m.gid()), (900_123, 900_123));
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_directory_behind_a_0700_parent_is_unreachable() {
        let t = tempfile::tempdir().unwrap();
        let outer = t.path().join("outer");
        let inner = outer.join("state");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_reachable(&[&inner]).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} has mode 0700", outer.display())),
            "{err}"
        );
        std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&[&inner]).unwrap();
        check_reachable(&[&t.path().join("missing")]).unwrap();
    }

    #[test]
    fn uids_are_distinct_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let cfg = JailConfig {
            enabled: true,
            uid_base: 950_000,
            uid_count: 2,
            max_open_files: 64,
            pivot_root: true,
        };
        let a = root.path().join("a");
        let b = root.path().join("b");
        let c = root.path().join("c");
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
        }
        let ua = allocate_uid(&cfg, root.path(), &a).unwrap();
        chown(&a, ua).unwrap();
        assert_eq!(ua, 950_000);
        assert_eq!(allocate_uid(&cfg, root.path(), &a).unwrap(), ua, "reused");
        let ub = allocate_uid(&cfg, root.path(), &b).unwrap();
        assert_eq!(ub, 950_001);
        chown(&b, ub).unwrap();
        assert!(
            allocate_uid(&cfg, root.path(), &c).is_err(),
            "range exhausted"
        );
        // A removed instance frees its uid.
        std::fs::remove_dir(&a).unwrap();
        assert_eq!(allocate_uid(&cfg, root.path(), &c).unwrap(), 950_000);
    }
}
