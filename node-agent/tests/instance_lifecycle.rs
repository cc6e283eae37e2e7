//! Instance tasks driving the real `nubis-vmm` with the `hello` guest, inside
//! a private network namespace: launch, running + readiness, console, stop
//! and start over the same disk, terminate leaving nothing behind, a
//! guest-initiated reset, a spec whose subnet is not the configured one, the
//! jail (uid, capabilities, seccomp, network and mount namespaces), and the
//! `[limits]` (cgroup io.max, device rate limiters) with the metadata
//! service.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{alive, have_prereqs, Env};
use nubis_agent::context::HostContext;
use nubis_agent::host::disk::read_sector;
use nubis_agent::instance::{InstanceHandle, Report};
use nubis_agent::runtime::{Admission, Denied, ReasonCode, Request, State};
use nubis_agent::types::{DeviceLimits, ImageName, InstanceId, InstanceSpec};

const BOOT: Duration = Duration::from_secs(120);

fn spec(id: &str, extra: &str) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).unwrap(),
        image: ImageName::new("hello").unwrap(),
        vcpus: 1,
        memory_mib: 64,
        cmdline_extra: extra.into(),
        ip: None,
        mac: None,
        prefix_len: None,
        gateway: None,
        image_manifest_sha256: None,
        metadata: None,
        root_volume_gib: None,
        limits: None,
        vpc: None,
        extra_networks: Vec::new(),
    }
}

fn ctx(env: &Env) -> Arc<HostContext> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    // Keep the receiver alive for the test's duration by leaking it: the
    // sender must not fail (it is only a notification channel).
    std::mem::forget(_rx);
    HostContext::new(env.config.clone(), tx).unwrap()
}

async fn wait(h: &InstanceHandle, what: &str, f: impl Fn(&Report) -> bool) -> Report {
    match h.wait_for(BOOT, f).await {
        Ok(r) => r,
        Err(r) => {
            let dir = std::path::PathBuf::from(format!("{}", h.id()));
            panic!(
                "timed out waiting for {what}; last report {r:?} ({})",
                dir.display()
            )
        }
    }
}

fn console_text(h: &InstanceHandle, env: &Env) -> String {
    let p = env
        .config
        .state_dir
        .join("instances")
        .join(h.id().as_str())
        .join("console.log");
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// `GET path` from inside the namespace (retrying while the link comes up).
async fn http_get(ip: std::net::Ipv4Addr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + BOOT;
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((ip, 80)).await?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(out)) if !out.is_empty() => return out,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no HTTP answer from {ip}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Asserts what /proc says about each thread of the jailed VMM `pid`.
fn assert_jailed(pid: i32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut threads = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        let uids = field("Uid");
        assert!(uids.iter().all(|u| *u != "0"), "root uid: {uids:?}");
        assert!(field("Gid").iter().all(|g| *g != "0"), "root gid");
        for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            assert_eq!(field(caps), ["0000000000000000"], "{caps}");
        }
        assert_eq!(field("NoNewPrivs"), ["1"]);
        assert_eq!(field("Seccomp"), ["2"], "thread {:?}", field("Name"));
        threads += 1;
    }
    // Main (event loop), API and one vCPU thread.
    assert!(threads >= 3, "{threads} threads");
    // Pid 1 of a pid namespace of its own: two pids, the inner one 1, and
    // not the agent's namespace.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or_else(|| panic!("no NSpid in {status}"))
        .split_whitespace()
        .collect();
    assert_eq!(nspid, [pid.to_string().as_str(), "1"], "NSpid");
    let ns = |p: String| std::fs::read_link(p).unwrap();
    assert_ne!(
        ns(format!("/proc/{pid}/ns/pid")),
        ns("/proc/self/ns/pid".into()),
        "the VMM shares the agent's pid namespace"
    );
}

/// The jailed VMM `pid` has a network namespace of its own (not the agent's
/// `netns`) holding nothing but a `lo` that is down, so none of its sockets
/// can reach anything: a TCP connection from its namespace to the guest's
/// address, which answers from the agent's namespace, is unreachable.
fn assert_no_network(pid: i32, netns: &common::NetNs, guest: std::net::Ipv4Addr) {
    use std::os::unix::fs::MetadataExt;
    let vmm_ns = format!("/proc/{pid}/ns/net");
    let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    assert_ne!(
        ino(std::path::Path::new(&vmm_ns)),
        ino(&netns.path()),
        "the VMM shares the agent's network namespace"
    );
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={vmm_ns}"))
        .args(["ip", "-o", "link", "show"])
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "{out:?}");
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = links.lines().collect();
    assert_eq!(lines.len(), 1, "{links}");
    assert!(
        lines[0].contains(" lo: ") && lines[0].contains("state DOWN"),
        "{links}"
    );
    let connect = std::thread::spawn(move || {
        let ns = std::fs::File::open(&vmm_ns).unwrap();
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        std::net::TcpStream::connect_timeout(&(guest, 80).into(), Duration::from_secs(2))
    })
    .join()
    .unwrap();
    let err = connect.expect_err("connected from the VMM's namespace");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENETUNREACH),
        "{err}: the VMM's namespace has a route"
    );
}

#[test]
fn launch_ready_console_stop_start_terminate() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let s = spec("i-life0001", "nubis.disk_write=1");
        let h = InstanceHandle::spawn_new(ctx.clone(), s.clone());
        assert_eq!(h.report().state, State::Absent);
        // Requests that make no sense now are denied with a typed reason.
        assert!(matches!(
            h.request(Request::Reboot, 1, false).await.unwrap(),
            Err(Denied::InvalidState(State::Absent, _))
        ));
        assert_eq!(
            h.request(Request::Start, 1, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        let r = wait(&h, "running", |r| {
            r.state == State::Running || r.state == State::Failed
        })
        .await;
        assert_eq!(r.state, State::Running, "{r:?}");
        let pid = r.pid.expect("pid");
        assert!(alive(pid));
        let r = wait(&h, "ready", |r| r.ready || r.state != State::Running).await;
        assert!(
            r.ready,
            "guest never printed its ready line: {r:?}\n{}",
            console_text(&h, &env)
        );

        // Host resources exist: dir, TAP on the bridge in our namespace, cgroup with the pid.
        let dir = env.config.state_dir.join("instances/i-life0001");
        assert!(dir.join("disk.raw").is_file());
        let tap = nubis_agent::host::tap::tap_name("nbt", &s.id);
        assert!(env.netns.link_exists(&tap), "TAP {tap} missing");
        assert!(env.netns.link_exists("nbbr0"), "bridge missing");
        let (_, master) = env.netns.ip(&["-o", "link", "show", "dev", &tap]);
        assert!(master.contains("master nbbr0"), "{master}");
        let cg = env.cgroup.dir().unwrap().join("i-life0001");
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l.trim() == pid.to_string()),
            "{procs}"
        );
        // The VMM is in its own session (detached from the agent).
        let sid = rustix::process::getsid(rustix::process::Pid::from_raw(pid)).unwrap();
        assert_eq!(sid.as_raw_nonzero().get(), pid);
        // The VMM is jailed: every thread runs as an unprivileged uid with no
        // capabilities, no_new_privs and a seccomp filter.
        assert_jailed(pid);

        // The guest is reachable on its allocated address through the TAP
        // and bridge (inside the test's namespace only).
        let net: nubis_agent::layout::NetAlloc =
            nubis_agent::layout::read_json(&dir.join("net.json"))
                .unwrap()
                .unwrap();
        let body = http_get(net.ip, "/").await;
        assert!(body.contains("200"), "{body}");
        assert!(body.contains("NUBIS-HELLO i-life0001"), "{body}");
        // ... but not from the VMM's own network namespace.
        assert_no_network(pid, &env.netns, net.ip);
        // Nor does it see the host's file system.
        assert_own_root(pid, &env, "i-life0001");

        // Console: guest lines, newest 64 KiB.
        let console = nubis_agent::layout::tail(&dir.join("console.log"), 64 * 1024).unwrap();
        let console = String::from_utf8_lossy(&console);
        assert!(
            console.contains("NUBIS-GUEST-READY i-life0001"),
            "{console}"
        );
        assert!(console.contains("NUBIS-DISK-WRITTEN sector=1"), "{console}");
        // The blank disk's sector 0 header names the instance.
        let s0 = read_sector(&dir.join("disk.raw"), 0).unwrap();
        assert!(s0.starts_with(b"NUBIS-DISK v1 instance=i-life0001\n"));

        // Stop: the hello guest ignores Ctrl-Alt-Del, so the hard stop follows.
        assert_eq!(
            h.request(Request::Stop, 2, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        assert_eq!(
            h.request(Request::Stop, 2, false).await.unwrap(),
            Ok(Admission::AlreadyDone)
        );
        let r = wait(&h, "stopped", |r| r.state == State::Stopped).await;
        assert_eq!(r.reason.unwrap().code, ReasonCode::UserInitiatedShutdown);
        assert_eq!(r.vmm_exit_code, Some(0));
        assert!(!alive(pid), "VMM {pid} still alive after stop");
        // Data written before the stop is on the kept disk.
        let s1 = read_sector(&dir.join("disk.raw"), 1).unwrap();
        assert!(
            s1.starts_with(b"NUBIS-DISK-WRITE i-life0001\n"),
            "{:?}",
            &s1[..40]
        );

        // Start: a fresh VMM over the same disk sees the same sector 0.
        let sha_before = console
            .lines()
            .find(|l| l.starts_with("NUBIS-DISK sector0-sha256="))
            .map(str::to_string)
            .expect("disk line");
        assert_eq!(
            h.request(Request::Start, 3, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        let r = wait(&h, "ready again", |r| r.ready || r.state == State::Failed).await;
        assert!(r.ready, "{r:?}");
        let pid2 = r.pid.unwrap();
        assert_ne!(pid, pid2);
        let console2 = console_text(&h, &env);
        assert!(console2.contains(&sha_before), "{console2}");
        let s1 = read_sector(&dir.join("disk.raw"), 1).unwrap();
        assert!(s1.starts_with(b"NUBIS-DISK-WRITE i-life0001\n"));

        // Reboot: stop + start, a new VMM over the same disk.
        assert_eq!(
            h.request(Request::Reboot, 4, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        let r = wait(&h, "ready after reboot", |r| {
            r.ready && r.pid.is_some_and(|p| p != pid2) || r.state == State::Failed
        })
        .await;
        assert_eq!(r.state, State::Running, "{r:?}");
        assert!(!alive(pid2));
        let pid2 = r.pid.unwrap();

        // Terminate leaves nothing behind.
        assert_eq!(
            h.request(Request::Terminate, 5, false).await.unwrap(),
            Ok(Admission::Proceed)
        );
        let r = wait(&h, "gone", |r| r.state == State::Gone).await;
        assert_eq!(r.generation, 5);
        assert!(!alive(pid2));
        assert!(!dir.exists(), "instance dir left behind");
        assert!(!env.netns.link_exists(&tap), "TAP left behind");
        assert!(!cg.exists(), "cgroup left behind");
        assert!(matches!(
            h.request(Request::Start, 6, false).await.unwrap(),
            Err(Denied::Terminal(State::Gone, _))
        ));
    });
}

#[test]
fn guest_reset_is_instance_initiated_shutdown() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let h = InstanceHandle::spawn_new(ctx.clone(), spec("i-reset001", "nubis.reset=1"));
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "stopped by the guest", |r| {
            matches!(r.state, State::Stopped | State::Failed)
        })
        .await;
        assert_eq!(r.state, State::Stopped, "{r:?}");
        let reason = r.reason.unwrap();
        assert_eq!(reason.code, ReasonCode::InstanceInitiatedShutdown);
        assert_eq!(reason.code.code(), "Client.InstanceInitiatedShutdown");
        assert_eq!(r.vmm_exit_code, Some(0));
        assert!(console_text(&h, &env).contains("NUBIS-RESET"));
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        wait(&h, "gone", |r| r.state == State::Gone).await;
    });
}

/// A VMM killed by SIGSYS (what its seccomp filter does on a forbidden
/// syscall; here the signal is sent from outside, the filter itself is tested
/// in nubis-vmm's seccomp unit tests) fails the instance with a reason that
/// says so.
#[test]
fn vmm_killed_by_sigsys_is_reported_as_a_seccomp_violation() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let h = InstanceHandle::spawn_new(ctx.clone(), spec("i-sigsys01", ""));
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "ready", |r| r.ready || r.state == State::Failed).await;
        assert!(r.ready, "{r:?}");
        let pid = r.pid.expect("pid");
        assert_jailed(pid);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::SYS,
        )
        .unwrap();
        let r = wait(&h, "failed", |r| r.state == State::Failed).await;
        let reason = r.reason.unwrap();
        assert_eq!(reason.code, ReasonCode::VmmCrashed, "{reason:?}");
        assert!(
            reason.message.contains("SIGSYS") && reason.message.contains("seccomp"),
            "{reason:?}"
        );
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        wait(&h, "gone", |r| r.state == State::Gone).await;
    });
}

/// A jail step that fails in the child before exec (here `setrlimit` of an
/// RLIMIT_NOFILE above the kernel's `fs.nr_open`: EPERM) fails the launch
/// with the step's errno, and leaves no process (the failed child is
/// reaped) and, once terminated, no cgroup.
#[test]
fn a_failing_jail_step_reports_its_errno_and_leaves_nothing() {
    if !have_prereqs(true) {
        return;
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let env = Env::with(None, &format!("[jail]\nmax_open_files = {}\n", nr_open + 1));
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let id = InstanceId::new("i-jailfail1").unwrap();
        let h = InstanceHandle::spawn_new(ctx.clone(), spec(id.as_str(), ""));
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "failed", |r| r.state == State::Failed).await;
        let reason = r.reason.unwrap();
        assert_eq!(reason.code, ReasonCode::VmmSpawnFailed, "{reason:?}");
        assert!(
            reason.message.contains("spawning") && reason.message.contains("os error 1)"),
            "{reason:?}"
        );
        assert_eq!(r.pid, None, "{reason:?}");
        assert_eq!(ctx.cgroups.pids(&id), Vec::<i32>::new());
        // No process anywhere holds the instance's API socket.
        let sock = env
            .config
            .state_dir
            .join("instances")
            .join(id.as_str())
            .join("api.sock");
        let want = sock.as_os_str().as_encoded_bytes().to_vec();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            assert!(
                !cmd.split(|b| *b == 0).any(|a| a == want.as_slice()),
                "process {:?} runs the failed VMM",
                e.file_name()
            );
        }
        let cgroup = ctx.cgroups.path(&id);
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        wait(&h, "gone", |r| r.state == State::Gone).await;
        if let Some(dir) = cgroup {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    });
}

/// The control plane's subnet wins: a spec whose gateway is not the
/// configured bridge address (10.213.0.1/24 in the test config) gets its
/// gateway added to the bridge, and the guest answers HTTP on its address.
#[test]
fn spec_gateway_differing_from_the_configured_bridge_address() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        // As at agent start: the bridge with the configured address.
        ctx.ensure_bridge().await.unwrap();
        let mut s = spec("i-subnet01", "");
        s.ip = Some("10.77.5.20".parse().unwrap());
        s.gateway = Some("10.77.0.1".parse().unwrap());
        s.prefix_len = Some(16);
        let h = InstanceHandle::spawn_new(ctx.clone(), s);
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "ready", |r| r.ready || r.state == State::Failed).await;
        assert!(r.ready, "{r:?}\n{}", console_text(&h, &env));
        let (_, addrs) = env.netns.ip(&["-4", "-o", "addr", "show", "dev", "nbbr0"]);
        assert!(addrs.contains("10.77.0.1/16"), "{addrs}");
        assert!(
            addrs.contains("10.213.0.1/24"),
            "configured address kept: {addrs}"
        );
        assert!(
            console_text(&h, &env).contains("NUBIS-NET ip=10.77.5.20/16"),
            "{}",
            console_text(&h, &env)
        );
        let body = http_get("10.77.5.20".parse().unwrap(), "/").await;
        assert!(body.contains("200"), "{body}");
        assert!(body.contains("NUBIS-HELLO i-subnet01"), "{body}");
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        wait(&h, "gone", |r| r.state == State::Gone).await;
    });
}

/// The jailed VMM `pid` of instance `id` has a mount namespace of its own
/// whose root (a tmpfs) holds only its binary and libraries, its kernel and
/// its instance directory, at their host paths: no `/etc`, `/proc`, `/dev`,
/// no other instance, no other file of the image.
fn assert_own_root(pid: i32, env: &Env, id: &str) {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_ne!(
        ino(&format!("/proc/{pid}/ns/mnt")),
        ino("/proc/self/ns/mnt"),
        "the VMM shares the agent's mount namespace"
    );
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let inside = |p: &std::path::Path| root.join(p.strip_prefix("/").unwrap());
    for gone in ["etc", "proc", "dev", "sys", "root", "home", "var"] {
        assert!(!root.join(gone).exists(), "/{gone} is visible to the VMM");
    }
    let list = |p: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(inside(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Of the state directory, only its own instance directory.
    assert_eq!(list(&env.config.state_dir.join("instances")), [id]);
    assert_eq!(list(&env.config.state_dir), ["instances"]);
    // Of the image, only the kernel (the manifest is not there).
    assert_eq!(list(&env.config.image_dir.join("hello")), ["kernel"]);
    // The instance directory is the host's own: a file the host makes
    // there is seen by the VMM.
    let dir = env.config.state_dir.join("instances").join(id);
    std::fs::write(dir.join("probe"), b"host").unwrap();
    assert_eq!(std::fs::read(inside(&dir.join("probe"))).unwrap(), b"host");
    std::fs::remove_file(dir.join("probe")).unwrap();
    assert!(inside(&env.config.vmm_binary).is_file());
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(root_line.contains(" - tmpfs "), "{root_line}");
    assert!(
        root_line
            .split_whitespace()
            .nth(5)
            .unwrap()
            .starts_with("ro,"),
        "{root_line}"
    );
}

/// `major:minor` of the whole disk holding `path`, found with util-linux
/// (findmnt, lsblk) rather than the agent's own sysfs walk; `None` for a
/// file system without a block device (tmpfs, overlayfs).
fn whole_disk_by_lsblk(path: &std::path::Path) -> Option<String> {
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd).args(args).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let source = run("findmnt", &["-n", "-o", "SOURCE", "-T", path.to_str()?]);
    if !source.starts_with("/dev/") {
        return None;
    }
    let parent = run("lsblk", &["-n", "-d", "-o", "PKNAME", &source]);
    let disk = if parent.is_empty() {
        source
    } else {
        format!("/dev/{parent}")
    };
    Some(run("lsblk", &["-n", "-d", "-o", "MAJ:MIN", &disk]))
}

/// The agent's `[limits]` in the limits tests (per vCPU).
const AGENT_LIMITS: &str = "[limits]\nio_read_bps = 10485760\nio_write_bps = 5242880\n\
                            io_write_iops = 100\ndisk_ops = 1000\nnet_tx_pps = 2000\n\
                            net_rx_bps = 3000000\n";

/// An agent environment with `limits` for instance `id`, on the host's
/// cgroup v2 tree where it has the io controller (then `true`), else on a
/// fake tree (plain files, the test creating the group's `cgroup.procs` as
/// the kernel would) in the returned directory.
fn io_env(limits: &str, id: &str) -> (Env, tempfile::TempDir, bool) {
    let real_io = common::cgroup2_mount()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|x| x == "io"));
    let fake = tempfile::tempdir().unwrap();
    std::fs::write(
        fake.path().join("cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    let env = Env::with((!real_io).then_some(fake.path()), limits);
    if !real_io {
        let group = fake.path().join(&env.cgroup.parent).join(id);
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("cgroup.procs"), "").unwrap();
    }
    (env, fake, real_io)
}

/// Checks the instance group's `io.max` holds `want` on the whole disk of
/// its root disk (nothing where there is no device to limit); returns the
/// group's directory.
fn assert_io_max(
    env: &Env,
    fake: &tempfile::TempDir,
    real_io: bool,
    id: &str,
    want: &str,
) -> std::path::PathBuf {
    let mount = if real_io {
        common::cgroup2_mount().unwrap()
    } else {
        fake.path().to_path_buf()
    };
    let group = mount.join(&env.cgroup.parent).join(id);
    let disk = env
        .config
        .state_dir
        .join("instances")
        .join(id)
        .join("disk.raw");
    let io_max = std::fs::read_to_string(group.join("io.max")).unwrap_or_default();
    match whole_disk_by_lsblk(&disk) {
        Some(dev) => assert_eq!(
            io_max.trim(),
            format!("{dev} {want}"),
            "{}",
            group.display()
        ),
        // No device to limit: nothing written, the launch goes on.
        None => assert_eq!(io_max, ""),
    }
    group
}

/// The VMM's configuration as its API's `describe` reports it.
async fn vmm_config(env: &Env, id: &str) -> serde_json::Value {
    let d = nubis_agent::host::vmm_process::VmmApi::new(
        env.config
            .state_dir
            .join("instances")
            .join(id)
            .join("api.sock"),
    )
    .call(nubis_vmm_api::Action::Describe)
    .await
    .unwrap();
    d["config"].clone()
}

/// `[limits] io_*` (per vCPU) become the instance group's `io.max` line on
/// the whole disk holding its root disk file, and `disk_*`/`net_*` the
/// VMM's device rate limiters (its `describe` shows them). The guest also
/// reads its instance id from the metadata service, which the jailed VMM
/// answers itself (it has no network of its own). The host's cgroup v2 tree is
/// used where it has the io controller; this project's development VMs bind
/// io to cgroup v1 (blkio), so there the agent gets a fake tree (plain
/// files, the test creating the group's `cgroup.procs` as the kernel would)
/// while the disk and its device are real.
#[test]
fn limits_are_the_cgroup_io_max_of_the_disk_device_and_the_vmm_rate_limiters() {
    if !have_prereqs(true) {
        return;
    }
    let id = "i-iomax001";
    let (env, fake, real_io) = io_env(AGENT_LIMITS, id);
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let mut s = spec(id, "");
        s.vcpus = 2;
        // The metadata service (answered inside the jailed VMM, which has
        // no network of its own) serves the guest at boot.
        let md: nubis_imds::InstanceMetadata = serde_json::from_value(serde_json::json!({
            "instance_id": id, "account_id": "123456789012", "ami_id": "ami-1",
            "instance_type": "t3.nano", "hostname": "", "local_ipv4": "", "mac": "",
            "availability_zone": "nb-test-1a", "region": "nb-test-1",
            "launch_time": "2026-12-06T05:00:00Z"
        }))
        .unwrap();
        s.metadata = Some(nubis_imds::ImdsConfig {
            metadata: md,
            options: Default::default(),
        });
        let h = InstanceHandle::spawn_new(ctx.clone(), s);
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "ready", |r| r.ready || r.state == State::Failed).await;
        assert!(r.ready, "{r:?}");
        let _guard = common::KillOnDrop(vec![r.pid.unwrap()]);
        // Twice the per-vCPU values (2 vCPUs); riops unlimited.
        let group = assert_io_max(
            &env,
            &fake,
            real_io,
            id,
            "rbps=20971520 wbps=10485760 riops=max wiops=200",
        );
        let line = format!("NUBIS-IMDS instance-id={id}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !console_text(&h, &env).contains(&line) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                console_text(&h, &env)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The device rate limiters, twice the per-vCPU values.
        let c = vmm_config(&env, id).await;
        let c = &c;
        assert_eq!(c["disks"][0]["rate_limit"]["ops"]["rate"], 2000, "{c}");
        assert_eq!(c["nets"][0]["rate_limit"]["ops"]["rate"], 4000, "{c}");
        assert_eq!(
            c["nets"][0]["rx_rate_limit"]["bandwidth"]["rate"], 6_000_000,
            "{c}"
        );
        assert_eq!(c["nets"][0]["rx_rate_limit"]["ops"]["rate"], 0, "{c}");
        if !real_io {
            // The VMM was placed in that very group (it wrote "0" there).
            let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
            assert_eq!(procs, "0");
        }
        h.request(Request::Stop, 2, false).await.unwrap().unwrap();
        // (The exit status is not checked: stopping this 2-vCPU hello
        // sometimes ends without one -- seen in 2 of 5 runs without
        // pivot_root and 1 of 3 with it: the guest reset as the 2 s graceful
        // stop ran out and the VMM left no exit record. Not this test's
        // subject.)
        wait(&h, "stopped", |r| r.state == State::Stopped).await;
    });
}

/// An instance type's limits in the launch spec (whole-instance values)
/// replace the agent's `[limits]` (per vCPU) entirely: the VMM's device rate
/// limiters and the group's `io.max` show the type's numbers, unscaled, and
/// nothing of `[limits]`.
#[test]
fn type_limits_in_the_spec_replace_the_agents_limits() {
    if !have_prereqs(true) {
        return;
    }
    let id = "i-typelim01";
    let (env, fake, real_io) = io_env(AGENT_LIMITS, id);
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(&env);
        let mut s = spec(id, "");
        s.vcpus = 2;
        s.limits = Some(DeviceLimits {
            disk_bps: 8 << 20,
            disk_iops: 700,
            net_tx_bps: 1 << 20,
            net_tx_pps: 900,
            net_rx_bps: 2 << 20,
            net_rx_pps: 0,
        });
        let h = InstanceHandle::spawn_new(ctx.clone(), s);
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = wait(&h, "ready", |r| r.ready || r.state == State::Failed).await;
        assert!(r.ready, "{r:?}");
        let _guard = common::KillOnDrop(vec![r.pid.unwrap()]);
        assert_io_max(
            &env,
            &fake,
            real_io,
            id,
            "rbps=8388608 wbps=8388608 riops=700 wiops=700",
        );
        let c = vmm_config(&env, id).await;
        let rate = |dev: &str, lim: &str, bucket: &str| c[dev][0][lim][bucket]["rate"].clone();
        assert_eq!(rate("disks", "rate_limit", "bandwidth"), 8 << 20, "{c}");
        assert_eq!(rate("disks", "rate_limit", "ops"), 700, "{c}");
        assert_eq!(rate("nets", "rate_limit", "bandwidth"), 1 << 20, "{c}");
        assert_eq!(rate("nets", "rate_limit", "ops"), 900, "{c}");
        assert_eq!(rate("nets", "rx_rate_limit", "bandwidth"), 2 << 20, "{c}");
        // 0 = unlimited, although [limits] has a value for it.
        assert_eq!(rate("nets", "rx_rate_limit", "ops"), 0, "{c}");
        // Stopped, not terminated: a fake cgroup tree's group (plain files)
        // cannot be removed as the kernel's can.
        h.request(Request::Stop, 2, true).await.unwrap().unwrap();
        wait(&h, "stopped", |r| r.state == State::Stopped).await;
    });
}
