//! `nubis-vmm` processes: spawning one detached (pid 1 of its own pid
//! namespace, own session and process group, stdio to files, placed in its
//! cgroup and jailed before exec: [`super::pidns`]) so it outlives the
//! agent; re-adopting one after an agent restart (the pid must still be that
//! VMM: its command line holds the instance's API socket path and its start
//! time equals the recorded one); watching it exit through a pidfd; and the
//! client for its JSON-lines API socket.
//!
//! Every VMM is started with `--exit-status-file` pointing at
//! [`EXIT_STATUS_FILE`] next to its API socket (in the instance directory)
//! and a fresh `--exit-status-nonce`, kept in `vmm.json` ([`VmmRecord`]).
//! A re-adopted VMM is not the agent's child, so its status cannot be reaped;
//! when its pidfd reports the exit, that record (if written by this very
//! launch: same nonce, or for a VMM recorded before nonces, same pid)
//! supplies the status instead, and the exit is mapped exactly as a child's
//! would be. Without a record (SIGKILL, a VMM started without the flag) the
//! exit stays [`VmmExit::Unobserved`]. A VMM is its namespace's init, which
//! a signal sent with `kill` cannot end by its default action: its handler
//! records the signal and exits with `128 + signal`; the agent maps that
//! back to the signal from the record, for its own children too.

use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nubis_vmm_api::{Action, ApiError, ExitRecord, Response};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::UnixStream;

use super::jail::Jail;
use crate::config::LimitsConfig;
use crate::error::{Error, Result};

/// Name of the VMM's exit-status record, in the directory of its API socket.
pub const EXIT_STATUS_FILE: &str = "vmm-exit.json";

/// Where the VMM with this API socket writes its exit-status record.
pub fn exit_status_path(api_socket: &Path) -> PathBuf {
    api_socket.with_file_name(EXIT_STATUS_FILE)
}

/// Reads the exit record at `path` if it is the one of the VMM `vmm` (a
/// record left by an earlier VMM of the instance does not count): same
/// nonce, or for a VMM recorded without one (started before nonces, in the
/// agent's pid namespace), same pid.
pub fn read_exit_record(path: &Path, vmm: &VmmRecord) -> Option<ExitRecord> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice::<ExitRecord>(&text) {
        Ok(r) if vmm.nonce.is_some() && r.nonce == vmm.nonce => Some(r),
        Ok(r) if vmm.nonce.is_none() && i32::try_from(r.pid) == Ok(vmm.pid) => Some(r),
        Ok(r) => {
            tracing::debug!(path = %path.display(), pid = vmm.pid, nonce = ?vmm.nonce,
                recorded_pid = r.pid, recorded_nonce = ?r.nonce, "exit record of another VMM");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable VMM exit record");
            None
        }
    }
}

/// A fresh exit-status nonce (128 random bits, hex).
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The exit a record stands for, as the agent would have seen it as the
/// VMM's parent (had the signal been able to kill it).
pub fn exit_of(record: &ExitRecord) -> VmmExit {
    match record.signal {
        Some(sig) => VmmExit::Signal(sig),
        None => VmmExit::Code(record.exit_code),
    }
}

/// Everything needed to start one VMM.
#[derive(Debug, Clone)]
pub struct VmmLaunch {
    /// `nubis-vmm` binary.
    pub binary: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u64,
    /// Root disk.
    pub disk: PathBuf,
    /// TAP name and MAC.
    pub net: Option<(String, String)>,
    /// The secondary interfaces' TAP names and MACs (one `--net` each,
    /// after the primary's), in device-index order.
    pub extra_nets: Vec<(String, String)>,
    /// Console log.
    pub serial: PathBuf,
    /// Console log cap.
    pub serial_max_bytes: u64,
    /// API socket.
    pub api_socket: PathBuf,
    /// VMM stdout file.
    pub stdout: PathBuf,
    /// VMM stderr file.
    pub stderr: PathBuf,
    /// Instance metadata file (`--metadata-file`).
    pub metadata: Option<PathBuf>,
    /// The instance's limits (already scaled to its vCPUs); the device rate
    /// limiters (`disk_*`, `net_*`) become `bw=`/`ops=`/`rx_bw=`/`rx_ops=`
    /// options of `--disk` and `--net`.
    pub limits: LimitsConfig,
}

/// `,key=N` for each non-zero limit.
fn limit_opts(pairs: &[(&str, u64)]) -> String {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!(",{k}={n}"))
        .collect()
}

impl VmmLaunch {
    /// The VMM's arguments (the brief's command-line contract).
    pub fn args(&self) -> Vec<String> {
        self.args_in(None, None)
    }

    /// The arguments of a VMM started in `jail` (it is handed `/dev/kvm`
    /// and the attached TAP as inherited fds) with the exit-status `nonce`.
    pub fn args_in(&self, jail: Option<&Jail>, nonce: Option<&str>) -> Vec<String> {
        let mut a = vec!["--kernel".to_string(), self.kernel.display().to_string()];
        if let Some(i) = &self.initrd {
            a.extend(["--initrd".into(), i.display().to_string()]);
        }
        a.extend([
            "--cmdline".into(),
            self.cmdline.clone(),
            "--vcpus".into(),
            self.vcpus.to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--disk".into(),
            format!(
                "{},id=root{}",
                self.disk.display(),
                limit_opts(&[("bw", self.limits.disk_bps), ("ops", self.limits.disk_ops)])
            ),
        ]);
        let l = &self.limits;
        // Each interface has the instance's network limits.
        let limits = limit_opts(&[
            ("bw", l.net_tx_bps),
            ("ops", l.net_tx_pps),
            ("rx_bw", l.net_rx_bps),
            ("rx_ops", l.net_rx_pps),
        ]);
        let fd_opt = |fd: Option<i32>| fd.map(|fd| format!(",fd={fd}")).unwrap_or_default();
        if let Some((tap, mac)) = &self.net {
            let fd = fd_opt(jail.and_then(|j| j.tap_fd()));
            a.extend(["--net".into(), format!("tap={tap},mac={mac}{fd}{limits}")]);
            for (n, (tap, mac)) in self.extra_nets.iter().enumerate() {
                let fd = fd_opt(jail.and_then(|j| j.extra_tap_fd(n)));
                a.extend(["--net".into(), format!("tap={tap},mac={mac}{fd}{limits}")]);
            }
        }
        if let Some(j) = jail {
            a.extend(["--kvm-fd".into(), j.kvm_fd().to_string()]);
        }
        a.extend([
            "--serial".into(),
            self.serial.display().to_string(),
            "--serial-max-bytes".into(),
            self.serial_max_bytes.to_string(),
            "--api-socket".into(),
            self.api_socket.display().to_string(),
            "--exit-status-file".into(),
            exit_status_path(&self.api_socket).display().to_string(),
        ]);
        if let Some(n) = nonce {
            a.extend(["--exit-status-nonce".into(), n.to_string()]);
        }
        if let Some(m) = &self.metadata {
            a.extend(["--metadata-file".into(), m.display().to_string()]);
        }
        a
    }
}

/// What the agent records about a running VMM (`vmm.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmRecord {
    /// Process id.
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` at launch (clock ticks since boot).
    pub start_time: u64,
    /// The API socket the process was started with.
    pub api_socket: PathBuf,
    /// Its `--exit-status-nonce` (absent in records written before VMMs
    /// got pid namespaces: their exit records are matched by pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// How a VMM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Exited while adopted (not our child) and left no exit record:
    /// status unknown.
    Unobserved,
}

/// Reads the state character and start time (fields 3 and 22) of a process.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

fn cmdline_has(pid: i32, arg: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = arg.as_os_str().as_encoded_bytes();
    raw.split(|b| *b == 0).any(|a| a == want)
}

/// The `--exit-status-nonce` on the command line of process `pid`, if any
/// (for a VMM found without its `vmm.json`).
pub fn cmdline_nonce(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = raw.split(|b| *b == 0);
    args.find(|a| *a == b"--exit-status-nonce")?;
    let n = std::str::from_utf8(args.next()?).ok()?;
    nubis_vmm_api::valid_nonce(n).then(|| n.to_string())
}

fn pid_of(pid: i32) -> Result<rustix::process::Pid> {
    rustix::process::Pid::from_raw(pid).ok_or(Error::NotOurVmm {
        pid,
        why: "not a valid pid".into(),
    })
}

enum Watch {
    /// The agent's own child (started by [`VmmProcess::spawn`]): reaped
    /// through the pidfd (`waitid(P_PIDFD)`).
    Child(AsyncFd<OwnedFd>),
    /// Re-adopted: its status comes from its exit record.
    Adopted(AsyncFd<OwnedFd>),
    Exited(VmmExit),
}

/// Registers a duplicate of `pidfd` with the runtime (readable once the
/// process has exited).
fn watch_fd(pidfd: &OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    let dup = pidfd
        .try_clone()
        .map_err(|e| Error::io("duplicating pidfd", e))?;
    // SAFETY: `dup` is an OwnedFd moved into the AsyncFd, which owns it:
    // the descriptor stays open and unchanged for the AsyncFd's lifetime.
    unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
        .map_err(|e| Error::io("registering pidfd", e.into_parts().1))
}

/// Reaps the exited child behind `pidfd` and returns how it ended.
fn reap(pidfd: &OwnedFd) -> VmmExit {
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
        ) {
            Ok(Some(st)) => {
                return match (st.exit_status(), st.terminating_signal()) {
                    (Some(c), _) => VmmExit::Code(c),
                    (None, Some(s)) => VmmExit::Signal(s),
                    (None, None) => VmmExit::Unobserved,
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            other => {
                tracing::warn!(result = ?other, "reaping the VMM failed");
                return VmmExit::Unobserved;
            }
        }
    }
}

/// A live (or just-exited) VMM process the agent watches.
pub struct VmmProcess {
    record: VmmRecord,
    pidfd: OwnedFd,
    watch: Watch,
}

impl std::fmt::Debug for VmmProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmProcess")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

impl VmmProcess {
    /// Spawns the VMM detached: pid 1 of a new pid namespace, new session,
    /// stdio to files, (when given) moved into its cgroup by writing "0" to
    /// `cgroup_procs`, and (when given) entering `jail`, all before exec.
    pub fn spawn(
        launch: &VmmLaunch,
        cgroup_procs: Option<std::fs::File>,
        jail: Option<Jail>,
    ) -> Result<VmmProcess> {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| Error::io(format!("opening {}", p.display()), e))
        };
        let mut out = open(&launch.stdout)?;
        let err = open(&launch.stderr)?;
        let null =
            std::fs::File::open("/dev/null").map_err(|e| Error::io("opening /dev/null", e))?;
        // A record left by the instance's previous VMM must not be taken
        // for this one's (it is also told apart by nonce).
        let status = exit_status_path(&launch.api_socket);
        if let Err(e) = std::fs::remove_file(&status) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(Error::io(format!("removing {}", status.display()), e));
            }
        }
        let _ = writeln!(out, "--- nubis-agent: starting {}", launch.binary.display());
        let spawning = |e| Error::io(format!("spawning {}", launch.binary.display()), e);
        let nonce = new_nonce();
        let program = super::pidns::Program::new(
            &launch.binary,
            &launch.args_in(jail.as_ref(), Some(&nonce)),
        )
        .map_err(spawning)?;
        let stdio = super::pidns::Stdio {
            stdin: null.into(),
            stdout: out.into(),
            stderr: err.into(),
        };
        let pre_exec = || -> std::io::Result<()> {
            if let Some(procs) = &cgroup_procs {
                rustix::io::write(procs, b"0").map_err(std::io::Error::from)?;
            }
            if let Some(jail) = &jail {
                jail.enter()?;
            }
            Ok(())
        };
        let child = super::pidns::spawn(&program, &stdio, true, &pre_exec).map_err(spawning)?;
        let pid = child.pid;
        let (_, start_time) = proc_stat(pid).ok_or_else(|| {
            Error::io(
                format!("reading /proc/{pid}/stat"),
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        let watch = watch_fd(&child.pidfd)?;
        Ok(VmmProcess {
            record: VmmRecord {
                pid,
                start_time,
                api_socket: launch.api_socket.clone(),
                nonce: Some(nonce),
            },
            pidfd: child.pidfd,
            watch: Watch::Child(watch),
        })
    }

    /// Re-adopts a VMM recorded at launch, after verifying the pid is still
    /// that process.
    pub fn adopt(record: &VmmRecord) -> Result<VmmProcess> {
        let pid = record.pid;
        let not = |why: String| Error::NotOurVmm { pid, why };
        // Open the pidfd first: it pins the process identity, so checks made
        // afterwards cannot be fooled by pid reuse.
        let pidfd = rustix::process::pidfd_open(pid_of(pid)?, rustix::process::PidfdFlags::empty())
            .map_err(|e| not(format!("pidfd_open: {e}")))?;
        let (state, start) = proc_stat(pid).ok_or_else(|| not("no such process".into()))?;
        if state == 'Z' || state == 'X' {
            return Err(not("process has exited".into()));
        }
        if start != record.start_time {
            return Err(not(format!(
                "start time {start} differs from recorded {}",
                record.start_time
            )));
        }
        if !cmdline_has(pid, &record.api_socket) {
            return Err(not(format!(
                "command line does not hold {}",
                record.api_socket.display()
            )));
        }
        if let Some(nonce) = &record.nonce {
            if cmdline_nonce(pid).as_ref() != Some(nonce) {
                return Err(not(format!("command line does not hold nonce {nonce}")));
            }
        }
        let watch = watch_fd(&pidfd)?;
        Ok(VmmProcess {
            record: record.clone(),
            pidfd,
            watch: Watch::Adopted(watch),
        })
    }

    /// The launch record.
    pub fn record(&self) -> &VmmRecord {
        &self.record
    }

    /// True when this VMM is the agent's own child (exit status observable).
    pub fn is_child(&self) -> bool {
        matches!(self.watch, Watch::Child(_))
    }

    /// Waits for the process to exit. Cancel-safe; returns the same value
    /// again after exit.
    pub async fn wait(&mut self) -> VmmExit {
        let exit = match &mut self.watch {
            Watch::Exited(e) => return *e,
            Watch::Child(fd) => {
                // A pidfd becomes readable when the process has exited.
                match fd.readable().await {
                    Ok(mut g) => g.retain_ready(),
                    Err(e) => tracing::warn!(error = %e, "polling pidfd failed"),
                }
                match reap(&self.pidfd) {
                    // As its namespace's init, the VMM cannot die of a
                    // signal sent to it: its handler exits 128 + signal
                    // and records which one.
                    VmmExit::Code(c) if c > 128 => {
                        let path = exit_status_path(&self.record.api_socket);
                        match read_exit_record(&path, &self.record) {
                            Some(r) if r.signal.is_some_and(|s| c == 128 + s) => exit_of(&r),
                            _ => VmmExit::Code(c),
                        }
                    }
                    other => other,
                }
            }
            Watch::Adopted(fd) => {
                // A pidfd becomes readable when the process has exited.
                match fd.readable().await {
                    Ok(mut g) => g.retain_ready(),
                    Err(e) => tracing::warn!(error = %e, "polling pidfd failed"),
                }
                // The VMM wrote its record before it died: the status a
                // parent would have reaped.
                let path = exit_status_path(&self.record.api_socket);
                match read_exit_record(&path, &self.record) {
                    Some(r) => {
                        tracing::info!(pid = self.record.pid, exit_code = r.exit_code, reason = %r.reason,
                            "re-adopted VMM exited; status from its exit record");
                        exit_of(&r)
                    }
                    None => VmmExit::Unobserved,
                }
            }
        };
        self.watch = Watch::Exited(exit);
        exit
    }

    /// Sends SIGKILL through the pidfd (never hits a reused pid).
    pub fn kill(&self) {
        if let Err(e) =
            rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL)
        {
            tracing::debug!(pid = self.record.pid, error = %e, "SIGKILL failed (already gone?)");
        }
    }
}

/// Result of the VMM's `describe` (its configuration is not read).
pub type Describe = nubis_vmm_api::Describe<serde::de::IgnoredAny>;

/// Client for the VMM's newline-delimited JSON API socket.
#[derive(Debug, Clone)]
pub struct VmmApi {
    socket: PathBuf,
    timeout: Duration,
}

impl VmmApi {
    /// A client for `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        VmmApi {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sends one request and returns the `result` object.
    pub async fn call(&self, action: Action) -> Result<serde_json::Value> {
        let op = action.as_str();
        let fut = async {
            let sock_err = |source| Error::VmmSocket {
                path: self.socket.clone(),
                source,
            };
            let mut s = UnixStream::connect(&self.socket).await.map_err(sock_err)?;
            let mut req =
                serde_json::to_vec(&nubis_vmm_api::Request { op: action }).map_err(|source| {
                    Error::Json {
                        context: format!("VMM API request {op}"),
                        source,
                    }
                })?;
            req.push(b'\n');
            s.write_all(&req).await.map_err(sock_err)?;
            let mut line = String::new();
            let mut r = BufReader::new(s);
            r.read_line(&mut line).await.map_err(sock_err)?;
            if line.is_empty() {
                return Err(sock_err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let resp: Response = serde_json::from_str(&line).map_err(|source| Error::Json {
                context: format!("VMM API response to {op}"),
                source,
            })?;
            if resp.ok {
                Ok(resp.result.unwrap_or(serde_json::Value::Null))
            } else {
                let e = resp.error.unwrap_or(ApiError {
                    kind: "unknown".into(),
                    message: String::new(),
                });
                Err(Error::VmmApi {
                    op: op.into(),
                    kind: e.kind,
                    message: e.message,
                })
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::VmmTimeout { op: op.into() })?
    }

    /// `describe`.
    pub async fn describe(&self) -> Result<Describe> {
        let v = self.call(Action::Describe).await?;
        serde_json::from_value(v).map_err(|source| Error::Json {
            context: "VMM describe result".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn proc_stat_reads_own_start_time() {
        let me = std::process::id() as i32;
        let (state, start) = proc_stat(me).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert_eq!(proc_stat(me).unwrap().1, start);
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn args_follow_the_contract() {
        let l = VmmLaunch {
            binary: "/bin/nubis-vmm".into(),
            kernel: "/img/kernel".into(),
            initrd: None,
            cmdline: "nubis.id=i-1".into(),
            vcpus: 2,
            memory_mib: 64,
            disk: "/d/disk.raw".into(),
            net: Some(("nbt0".into(), "02:4e:42:00:00:01".into())),
            extra_nets: Vec::new(),
            serial: "/d/console.log".into(),
            serial_max_bytes: 1 << 20,
            api_socket: "/d/api.sock".into(),
            stdout: "/d/o".into(),
            stderr: "/d/e".into(),
            metadata: None,
            limits: LimitsConfig::default(),
        };
        let a = l.args().join(" ");
        assert_eq!(
            a,
            "--kernel /img/kernel --cmdline nubis.id=i-1 --vcpus 2 --memory-mib 64 \
             --disk /d/disk.raw,id=root --net tap=nbt0,mac=02:4e:42:00:00:01 \
             --serial /d/console.log --serial-max-bytes 1048576 --api-socket /d/api.sock \
             --exit-status-file /d/vmm-exit.json"
        );
        // Device rate limits: only those set.
        let limited = VmmLaunch {
            limits: LimitsConfig {
                disk_ops: 500,
                net_tx_bps: 1 << 20,
                net_rx_bps: 2 << 20,
                net_rx_pps: 1000,
                io_read_bps: 7,
                ..LimitsConfig::default()
            },
            ..l
        };
        let a = limited.args().join(" ");
        assert!(a.contains("--disk /d/disk.raw,id=root,ops=500 "), "{a}");
        assert!(
            a.contains(
                "--net tap=nbt0,mac=02:4e:42:00:00:01,bw=1048576,rx_bw=2097152,rx_ops=1000 "
            ),
            "{a}"
        );
        // Secondary interfaces: one `--net` each after the primary's, with
        // the same limits.
        let multi = VmmLaunch {
            extra_nets: vec![
                ("nbt1".into(), "02:4e:0a:00:02:0a".into()),
                ("nbt2".into(), "02:4e:0a:00:03:0a".into()),
            ],
            ..limited
        };
        let a = multi.args().join(" ");
        assert!(
            a.contains(
                "--net tap=nbt0,mac=02:4e:42:00:00:01,bw=1048576,rx_bw=2097152,rx_ops=1000 \
                 --net tap=nbt1,mac=02:4e:0a:00:02:0a,bw=1048576,rx_bw=2097152,rx_ops=1000 \
                 --net tap=nbt2,mac=02:4e:0a:00:03:0a,bw=1048576,rx_bw=2097152,rx_ops=1000 "
            ),
            "{a}"
        );
    }

    #[tokio::test]
    async fn adopt_verifies_cmdline_and_start_time() {
        let sock = PathBuf::from("/tmp/nbag-test-no-such.sock");
        // `cat - <sock>` blocks on its (piped) stdin and carries the socket
        // path on its command line, like a VMM does.
        let mut child = tokio::process::Command::new("cat")
            .arg("-")
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        // Until the child has exec'ed, its cmdline is still ours.
        for _ in 0..500 {
            if cmdline_has(pid, &sock) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, start) = proc_stat(pid).unwrap();
        let good = VmmRecord {
            pid,
            start_time: start,
            api_socket: sock.clone(),
            nonce: None,
        };
        let mut adopted = VmmProcess::adopt(&good).unwrap();
        assert!(!adopted.is_child());
        let wrong_time = VmmRecord {
            start_time: start + 1,
            ..good.clone()
        };
        let wrong_sock = VmmRecord {
            api_socket: "/tmp/other.sock".into(),
            ..good.clone()
        };
        let wrong_nonce = VmmRecord {
            nonce: Some("0123".into()),
            ..good.clone()
        };
        assert!(VmmProcess::adopt(&wrong_time).is_err());
        assert!(VmmProcess::adopt(&wrong_sock).is_err());
        assert!(VmmProcess::adopt(&wrong_nonce).is_err());
        adopted.kill();
        let exit = tokio::time::timeout(Duration::from_secs(30), adopted.wait()).await;
        // No exit record next to the socket: the status is unknown.
        assert_eq!(exit.unwrap(), VmmExit::Unobserved);
        let _ = child.wait().await;
        // Once exited (and reaped), the pid can no longer be adopted.
        assert!(VmmProcess::adopt(&good).is_err());
    }

    fn vmm(pid: i32, nonce: Option<&str>) -> VmmRecord {
        VmmRecord {
            pid,
            start_time: 1,
            api_socket: "/d/api.sock".into(),
            nonce: nonce.map(Into::into),
        }
    }

    #[test]
    fn exit_record_without_nonce_is_taken_only_from_the_same_pid() {
        // A VMM recorded before nonces (an upgrade re-adopts it).
        let dir = tempfile::tempdir().unwrap();
        let path = exit_status_path(&dir.path().join("api.sock"));
        assert_eq!(path, dir.path().join(EXIT_STATUS_FILE));
        assert_eq!(read_exit_record(&path, &vmm(7, None)), None);
        std::fs::write(
            &path,
            r#"{"exit_code":0,"reason":"guest reset","unix_ms":1,"pid":7}"#,
        )
        .unwrap();
        assert_eq!(
            exit_of(&read_exit_record(&path, &vmm(7, None)).unwrap()),
            VmmExit::Code(0)
        );
        assert_eq!(read_exit_record(&path, &vmm(8, None)), None);
        std::fs::write(
            &path,
            r#"{"exit_code":134,"reason":"killed by signal 6","unix_ms":1,"pid":7,"signal":6}"#,
        )
        .unwrap();
        assert_eq!(
            exit_of(&read_exit_record(&path, &vmm(7, None)).unwrap()),
            VmmExit::Signal(6)
        );
        std::fs::write(&path, "{\"exit_code\":").unwrap();
        assert_eq!(read_exit_record(&path, &vmm(7, None)), None);
    }

    #[test]
    fn exit_record_with_nonce_is_taken_only_from_the_same_launch() {
        let dir = tempfile::tempdir().unwrap();
        let path = exit_status_path(&dir.path().join("api.sock"));
        // Every VMM in its own pid namespace writes pid 1: the nonce decides.
        std::fs::write(
            &path,
            r#"{"exit_code":159,"reason":"killed by signal 31","unix_ms":1,"pid":1,"signal":31,"nonce":"aa11"}"#,
        )
        .unwrap();
        let r = read_exit_record(&path, &vmm(4242, Some("aa11"))).unwrap();
        assert_eq!(exit_of(&r), VmmExit::Signal(31));
        assert_eq!(read_exit_record(&path, &vmm(4242, Some("bb22"))), None);
        assert_eq!(read_exit_record(&path, &vmm(1, Some("bb22"))), None);
        // A record without a nonce is an older VMM's.
        std::fs::write(&path, r#"{"exit_code":0,"pid":1}"#).unwrap();
        assert_eq!(read_exit_record(&path, &vmm(1, Some("aa11"))), None);
        let a = new_nonce();
        assert!(nubis_vmm_api::valid_nonce(&a) && a.len() == 32, "{a}");
        assert_ne!(a, new_nonce());
    }

    #[test]
    fn a_record_without_nonce_still_parses() {
        let old: VmmRecord =
            serde_json::from_str(r#"{"pid":5,"start_time":9,"api_socket":"/d/api.sock"}"#).unwrap();
        assert_eq!(
            old,
            VmmRecord {
                start_time: 9,
                ..vmm(5, None)
            }
        );
        let new = serde_json::to_string(&vmm(5, Some("ab"))).unwrap();
        assert!(new.contains(r#""nonce":"ab""#), "{new}");
    }
}
