//! The jailed VMM's view of the file system (docs/vmm.md, "The jail"): a new
//! mount namespace whose root is a small read-only tmpfs holding nothing but
//! bind mounts, each at its host path, of
//! - the `nubis-vmm` binary, its ELF interpreter and the shared libraries it
//!   loads (read-only; found once per binary with `ldd`), and the
//!   instance's kernel and initrd (read-only, no exec);
//! - the instance directory (read-write, no exec, no devices, no setuid): its
//!   disk, console, metadata file, API socket and exit record.
//!
//! The paths are the host's, so the VMM's command line, its API socket and
//! its exit record are where the agent (and a restarted agent re-adopting
//! the VMM by its command line) looks for them; only the rest of the host's
//! file system (other instances, `/etc`, `/proc`, `/dev`, the agent's state)
//! is gone. The plan is computed in the agent ([`plan`]); the cloned child
//! only makes raw syscalls on prepared C strings ([`RootPlan::enter`]).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// One bind mount of the plan.
#[derive(Debug)]
struct Bind {
    source: CString,
    target: CString,
    /// Remount flags after binding (read-only, nosuid, nodev, noexec).
    flags: libc::c_ulong,
}

/// Everything the cloned child needs to build the root and pivot into it.
#[derive(Debug)]
pub struct RootPlan {
    mountpoint: CString,
    dirs: Vec<CString>,
    files: Vec<CString>,
    binds: Vec<Bind>,
}

/// Runtime files of each VMM binary (`ldd` runs once per binary).
static RUNTIME: Mutex<Option<HashMap<PathBuf, Vec<PathBuf>>>> = Mutex::new(None);

/// The binary, its ELF interpreter and the shared libraries it loads, as
/// `ldd` resolves them (host paths; the loader looks for them there).
pub fn runtime_files(binary: &Path) -> Result<Vec<PathBuf>> {
    let mut cache = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(files) = cache.as_ref().and_then(|m| m.get(binary)) {
        return Ok(files.clone());
    }
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| Error::io(format!("running ldd {}", binary.display()), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![binary.to_path_buf()];
    if out.status.success() {
        files.extend(parse_ldd(&text));
    } else if !text.contains("not a dynamic executable")
        && !String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
    {
        return Err(Error::ConfigInvalid(format!(
            "[jail] ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    cache
        .get_or_insert_with(HashMap::new)
        .insert(binary.to_path_buf(), files.clone());
    Ok(files)
}

/// The absolute paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6
/// (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has none.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::ConfigInvalid(format!("path {} holds a NUL byte", p.display())))
}

/// `path` (absolute, normalised) under `mountpoint`.
fn under(mountpoint: &Path, path: &Path) -> Result<PathBuf> {
    let mut out = mountpoint.to_path_buf();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(Error::ConfigInvalid(format!(
                    "[jail] {} is not an absolute, normalised path",
                    path.display()
                )))
            }
        }
    }
    if !path.is_absolute() {
        return Err(Error::ConfigInvalid(format!(
            "[jail] {} is not absolute",
            path.display()
        )));
    }
    Ok(out)
}

/// Plans a root at `mountpoint` (an existing empty directory of the agent's;
/// each VMM mounts its own tmpfs over it in its own namespace) with
/// `ro_files` (read-only; `exec` ones may be executed) and `rw_dir`.
pub fn plan(
    mountpoint: &Path,
    exec_files: &[PathBuf],
    ro_files: &[PathBuf],
    rw_dir: &Path,
) -> Result<RootPlan> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add_parents = |target: &Path, include_self: bool| {
        let mut chain: Vec<PathBuf> = target
            .ancestors()
            .skip(usize::from(!include_self))
            .take_while(|a| *a != mountpoint)
            .map(Path::to_path_buf)
            .collect();
        chain.reverse();
        for d in chain {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    };
    let ro = (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong;
    let mut binds = Vec::new();
    let mut files = Vec::new();
    let mut seen = Vec::new();
    for (list, flags) in [
        (exec_files, ro),
        (ro_files, ro | libc::MS_NOEXEC as libc::c_ulong),
    ] {
        for f in list {
            if seen.contains(f) {
                continue;
            }
            seen.push(f.clone());
            let target = under(mountpoint, f)?;
            add_parents(&target, false);
            files.push(cstring(&target)?);
            binds.push(Bind {
                source: cstring(f)?,
                target: cstring(&target)?,
                flags,
            });
        }
    }
    let target = under(mountpoint, rw_dir)?;
    add_parents(&target, true);
    binds.push(Bind {
        source: cstring(rw_dir)?,
        target: cstring(&target)?,
        flags: (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
    });
    Ok(RootPlan {
        mountpoint: cstring(mountpoint)?,
        dirs: dirs.iter().map(|d| cstring(d)).collect::<Result<_>>()?,
        files,
        binds,
    })
}

/// A raw syscall's result: `Err(errno)` when negative (async-signal-safe).
pub(super) fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl RootPlan {
    /// Runs in the cloned child, as root, after `unshare(CLONE_NEWNS)`:
    /// builds the root and pivots into it. Raw syscalls on prepared strings
    /// only (no allocation).
    pub fn enter(&self) -> std::io::Result<()> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: raw syscalls on NUL-terminated strings owned by `self`
        // (alive for the whole call) and on static literals.
        unsafe {
            // Nothing of what follows may propagate back to the host.
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"nubis-vmm-root".as_ptr(),
                self.mountpoint.as_ptr(),
                c"tmpfs".as_ptr(),
                (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
                c"size=64k,nr_inodes=256,mode=755".as_ptr().cast(),
            ))?;
            for d in &self.dirs {
                if libc::mkdir(d.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
                    return Err(std::io::Error::last_os_error());
                }
                // Whatever the inherited umask.
                check(libc::chmod(d.as_ptr(), 0o755))?;
            }
            for f in &self.files {
                let fd = libc::open(
                    f.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o444,
                );
                check(fd)?;
                libc::close(fd);
            }
            for b in &self.binds {
                check(libc::mount(
                    b.source.as_ptr(),
                    b.target.as_ptr(),
                    null,
                    libc::MS_BIND as libc::c_ulong,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    null,
                    b.target.as_ptr(),
                    null,
                    libc::MS_REMOUNT as libc::c_ulong | libc::MS_BIND as libc::c_ulong | b.flags,
                    std::ptr::null(),
                ))?;
            }
            // pivot_root(".", "."): the old root ends up on top of the new
            // one and is then detached.
            check(libc::chdir(self.mountpoint.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                (libc::MS_REMOUNT
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC) as libc::c_ulong,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_loader_and_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fa6)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa6)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007fa6)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_plan_holds_the_files_at_their_host_paths() {
        let p = plan(
            Path::new("/s/vmm-root"),
            &["/usr/bin/vmm".into(), "/lib64/ld.so".into()],
            &["/img/hello/kernel".into(), "/usr/bin/vmm".into()],
            Path::new("/s/instances/i-1"),
        )
        .unwrap();
        let s = |v: &[CString]| {
            v.iter()
                .map(|c| c.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            s(&p.dirs),
            [
                "/s/vmm-root/usr",
                "/s/vmm-root/usr/bin",
                "/s/vmm-root/lib64",
                "/s/vmm-root/img",
                "/s/vmm-root/img/hello",
                "/s/vmm-root/s",
                "/s/vmm-root/s/instances",
                "/s/vmm-root/s/instances/i-1",
            ]
        );
        assert_eq!(
            s(&p.files),
            [
                "/s/vmm-root/usr/bin/vmm",
                "/s/vmm-root/lib64/ld.so",
                "/s/vmm-root/img/hello/kernel"
            ]
        );
        let binds: Vec<(&str, &str, bool, bool)> = p
            .binds
            .iter()
            .map(|b| {
                (
                    b.source.to_str().unwrap(),
                    b.target.to_str().unwrap(),
                    b.flags & libc::MS_RDONLY as libc::c_ulong != 0,
                    b.flags & libc::MS_NOEXEC as libc::c_ulong != 0,
                )
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("/usr/bin/vmm", "/s/vmm-root/usr/bin/vmm", true, false),
                ("/lib64/ld.so", "/s/vmm-root/lib64/ld.so", true, false),
                (
                    "/img/hello/kernel",
                    "/s/vmm-root/img/hello/kernel",
                    true,
                    true
                ),
                (
                    "/s/instances/i-1",
                    "/s/vmm-root/s/instances/i-1",
                    false,
                    true
                ),
            ]
        );
        assert!(plan(
            Path::new("/m"),
            &["relative/vmm".into()],
            &[],
            Path::new("/d")
        )
        .is_err());
        assert!(plan(Path::new("/m"), &["/a/../b".into()], &[], Path::new("/d")).is_err());
    }
}
