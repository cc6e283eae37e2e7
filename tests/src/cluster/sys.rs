//! Host plumbing for the cluster harness: child processes that die with their
//! guard, free loopback ports, network namespaces, cgroup v2 clean-up, and the
//! sweep of leftovers from harness processes that were killed (SIGKILL skips
//! `Drop`).
//!
//! Every name the harness creates starts with [`PREFIX`] followed by the
//! creating process' pid (`nbt-<pid>-<rand>`), so a later run can tell which
//! leftovers belong to a dead process and remove only those.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prefix of every namespace and cgroup the harness creates.
pub const PREFIX: &str = "nbt-";

pub use nubis_testsupport::free_port;

/// A running child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    /// Short name for messages.
    pub name: String,
    /// The child.
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("spawn {name}: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (reaps it if it exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        signal(self.pid() as i32, libc::SIGTERM);
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// The last `n` lines of its log (for failure messages).
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Backtrace frames (`  12: symbol`, `at file:line`) would push the
    // error itself out of the window: leave them out.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let frame = t
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            !(frame || t.starts_with("at "))
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends a signal, ignoring errors (the process may be gone).
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a positive pid only sends a signal; no memory is touched.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs a command to completion; Err carries its stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates a network namespace with its loopback up.
pub fn netns_add(name: &str) -> Result<(), String> {
    run(Command::new("ip").args(["netns", "add", name]))?;
    run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
    Ok(())
}

/// Pids of every process in a network namespace.
pub fn netns_pids(name: &str) -> Vec<i32> {
    run(Command::new("ip").args(["netns", "pids", name]))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in the namespace (agents and their VMMs) and deletes
/// it; its TAPs and bridges go with it.
pub fn netns_delete(name: &str) {
    for _ in 0..50 {
        let pids = netns_pids(name);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            signal(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = run(Command::new("ip").args(["netns", "delete", name]));
}

/// A command that runs `program` inside network namespace `ns` (only the
/// network namespace changes: mounts, cgroups and files stay the host's).
pub fn in_netns(ns: &str, program: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

/// The cgroup v2 mount point, if any (from /proc/self/mountinfo).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Whether the cgroup v2 hierarchy offers the cpu and memory controllers.
pub fn cgroup2_has_limits() -> bool {
    cgroup2_mount()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .is_some_and(|c| {
            let c: Vec<&str> = c.split_whitespace().collect();
            c.contains(&"cpu") && c.contains(&"memory")
        })
}

/// Kills every process in a cgroup v2 subtree and removes its directories.
pub fn cgroup_remove(dir: &Path) {
    // Killed processes leave their cgroup only once they have exited, which
    // on a loaded machine (a VMM tearing down its guest memory) can take a
    // while; rmdir fails with EBUSY until then, so keep trying for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cgroup_remove_once(dir);
        if !dir.exists() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One pass, children first: SIGKILL every process, try rmdir.
fn cgroup_remove_once(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_remove_once(&e.path());
            }
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for p in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
        signal(p, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir(dir);
}

/// The pid encoded in a harness name (`nbt-<pid>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes namespaces and cgroups left behind by harness processes that no
/// longer exist (e.g. a test binary killed by a timeout).
pub fn sweep_leftovers() {
    let dead = |name: &str| owner_pid(name).is_some_and(|p| !pid_alive(p));
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                netns_delete(&name);
            }
        }
    }
    if let Some(mount) = cgroup2_mount() {
        if let Ok(entries) = std::fs::read_dir(&mount) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if dead(&name) {
                    cgroup_remove(&e.path());
                }
            }
        }
    }
}

/// A short random hex string (not cryptographic; for unique names).
pub fn random_hex(len: usize) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    for b in buf {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_harness_names_only() {
        assert_eq!(owner_pid("nbt-1234-ab12-a0"), Some(1234));
        assert_eq!(owner_pid("nbq-a"), None);
        assert_eq!(owner_pid("nbt-x-1"), None);
    }

    #[test]
    fn random_hex_is_random_hex() {
        let a = random_hex(8);
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(8));
    }
}
