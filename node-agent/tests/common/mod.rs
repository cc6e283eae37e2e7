//! Test support for nubis-agent's integration tests: the prerequisite policy
//! (nubis-testsupport), a private network namespace per test, agent
//! configs pointing at the real `nubis-vmm` and `hello` image, and guards
//! that remove every namespace, cgroup and process a test made, also when it
//! fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use std::time::Instant;

use nubis_agent::config::Config;

use nubis_testsupport::workspace_root;
pub use nubis_testsupport::{image_dir, prerequisite};

/// The `nubis-vmm` binary: `$NUBIS_VMM_BIN`, else next to this test's own
/// build output (`<target>/<profile>/nubis-vmm`), else `<root>/target/debug`.
pub fn vmm_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NUBIS_VMM_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in <target>/<profile>/deps/.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|d| d.join("nubis-vmm")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => workspace_root().join("target/debug/nubis-vmm"),
    }
}

/// Checks root, `ip`, `nft`, the VMM binary, /dev/kvm and (optionally) the hello image.
pub fn have_prereqs(need_hello: bool) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !prerequisite(root, "root (network namespaces, TAPs, cgroups)") {
        return false;
    }
    if !prerequisite(
        Command::new("ip").arg("-V").output().is_ok(),
        "iproute2 `ip`",
    ) {
        return false;
    }
    // The agent applies its nftables firewall at start (docs/security.md).
    if !prerequisite(
        Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "nft (Debian package nftables)",
    ) {
        return false;
    }
    if !prerequisite(
        vmm_binary().is_file(),
        "nubis-vmm binary (cargo build -p nubis-vmm)",
    ) {
        return false;
    }
    if need_hello {
        if !prerequisite(Path::new("/dev/kvm").exists(), "/dev/kvm") {
            return false;
        }
        if !prerequisite(
            image_dir().join("hello/manifest.json").is_file(),
            "hello image (deploy/images/build.sh hello)",
        ) {
            return false;
        }
    }
    true
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A network namespace `nbag-<random>`, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = format!("nbag-{}", rand_suffix());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        let st = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .expect("ip link set lo up");
        assert!(st.success());
        NetNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Moves the calling thread into the namespace (threads it creates
    /// afterwards, e.g. a tokio runtime's, inherit it).
    pub fn enter_current_thread(&self) {
        let f = std::fs::File::open(self.path()).expect("open netns");
        use std::os::fd::AsFd;
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
    }

    /// Runs `ip` inside the namespace and returns stdout.
    pub fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("ip");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Adds a veth pair: `host_end` here, `eth0` in `guest` (a fake guest
    /// whose TAP is `host_end`).
    pub fn veth_to(&self, host_end: &str, guest: &str) {
        must(&[
            "ip", "link", "add", host_end, "netns", &self.name, "type", "veth", "peer", "name",
            "eth0", "netns", guest,
        ]);
    }

    pub fn link_exists(&self, name: &str) -> bool {
        self.ip(&["link", "show", "dev", name]).0
    }

    /// Links whose names start with `prefix`.
    pub fn links_with_prefix(&self, prefix: &str) -> Vec<String> {
        let (_, out) = self.ip(&["-o", "link", "show"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The cgroup2 mount, if any.
pub fn cgroup2_mount() -> Option<PathBuf> {
    nubis_agent::host::cgroup::find_cgroup2_mount()
}

/// True when cgroup v2 has cpu and memory controllers here.
pub fn cgroup2_has_limits() -> bool {
    cgroup2_mount()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .is_some_and(|c| {
            let v: Vec<&str> = c.split_whitespace().collect();
            v.contains(&"cpu") && v.contains(&"memory")
        })
}

/// Removes a test's cgroup parent (killing anything left in it) on drop.
#[derive(Debug)]
pub struct CgroupGuard {
    pub parent: String,
}

impl CgroupGuard {
    pub fn dir(&self) -> Option<PathBuf> {
        cgroup2_mount().map(|m| m.join(&self.parent))
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Some(dir) = self.dir() else { return };
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if !e.path().is_dir() {
                    continue;
                }
                if let Ok(p) = std::fs::read_to_string(e.path().join("cgroup.procs")) {
                    for pid in p.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        if let Some(p) = rustix::process::Pid::from_raw(pid) {
                            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                        }
                    }
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(e.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// A test environment: namespace, state dir, cgroup parent and config.
#[derive(Debug)]
pub struct Env {
    // Field order is drop order: processes (via the cgroup) go first.
    pub cgroup: CgroupGuard,
    pub netns: NetNs,
    pub state: tempfile::TempDir,
    pub config: Config,
}

/// Removes namespaces and cgroups of earlier test runs that were killed
/// before their guards ran (e.g. by a test-runner timeout). Only `nbag-*`
/// names older than 30 minutes are touched; no agent test runs that long.
pub fn sweep_stale() {
    let old = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(30 * 60))
    };
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("nbag-") && old(&e.path()) {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    }
    if let Some(mount) = cgroup2_mount() {
        if let Ok(rd) = std::fs::read_dir(&mount) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("nbag-test-") && old(&e.path()) {
                    drop(CgroupGuard { parent: name });
                }
            }
        }
    }
}

impl Env {
    pub fn new() -> Env {
        Env::with(None, "")
    }

    /// An environment whose agent uses the cgroup2 tree at `cgroup_mount`
    /// (a fake one in tests; default: the host's) and has `extra` appended
    /// to its configuration (whole TOML tables, e.g. `[limits]`).
    pub fn with(cgroup_mount: Option<&Path>, extra: &str) -> Env {
        sweep_stale();
        let netns = NetNs::new();
        let cgroup = CgroupGuard {
            parent: format!("nbag-test-{}", rand_suffix()),
        };
        let state = tempfile::Builder::new()
            .prefix("nbag-")
            .tempdir()
            .expect("tempdir");
        let toml = format!(
            r#"
availability_zone = "nb-test-1a"
standalone = true
state_dir = "{state}"
image_dir = "{images}"
vmm_binary = "{vmm}"

[network]
bridge = "nbbr0"
bridge_address = "10.213.0.1/24"
instance_range = "10.213.0.10-10.213.0.200"
tap_prefix = "nbt"

[cgroup]
parent = "{parent}"
enforce_limits = {enforce}
{mount}

[timeouts]
graceful_stop_secs = 2
hard_stop_secs = 10
start_secs = 60

{extra}
"#,
            state = state.path().display(),
            images = image_dir().display(),
            vmm = vmm_binary().display(),
            parent = cgroup.parent,
            enforce = cgroup_mount.is_some() || cgroup2_has_limits(),
            mount = cgroup_mount
                .map(|m| format!("mount = \"{}\"", m.display()))
                .unwrap_or_default(),
        );
        let path = state.path().join("agent.toml");
        std::fs::write(&path, &toml).expect("write config");
        let config = Config::load(&path).expect("config");
        Env {
            netns,
            cgroup,
            state,
            config,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.state.path().join("agent.toml")
    }

    /// A multi-threaded runtime whose threads live in the test's namespace.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        self.netns.enter_current_thread();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }
}

/// Kills a process on drop (for processes a test starts directly).
#[derive(Debug)]
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            if let Some(p) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// True when a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    nubis_agent::host::vmm_process::proc_stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

// Network-namespace helpers (commands, threads in a namespace, TCP, ping).

pub fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn must(args: &[&str]) -> String {
    let (ok, out) = run(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

/// Runs `f` on a thread inside the namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        f()
    })
}

/// A TCP server in `ns` answering `body` to every connection until `for_`
/// has passed.
pub fn serve(ns: &str, addr: SocketAddr, body: &'static str, for_: Duration) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("ready");
        let end = Instant::now() + for_;
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(body.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server up");
}

/// Connects from `ns` to `addr`; what the server said, or `None`.
pub fn fetch(ns: &str, addr: SocketAddr) -> Option<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .join()
    .expect("client thread")
}

/// `GET /` on `ip`:80 from `ns` (HTTP/1.0), retried until `within` has
/// passed; the whole answer, or `None`.
pub fn http_get_from(ns: &str, ip: Ipv4Addr, within: Duration) -> Option<String> {
    let ns = ns.to_string();
    in_netns(&ns, move || {
        let end = Instant::now() + within;
        loop {
            let got = (|| {
                let to = SocketAddr::from((ip, 80));
                let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                (!out.is_empty()).then_some(out)
            })();
            if got.is_some() || Instant::now() >= end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .join()
    .expect("client thread")
}

pub fn ping(ns: &str, to: Ipv4Addr) -> bool {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        &to.to_string(),
    ])
    .0
}

// The real agent binary (standalone mode) in a test's namespace.

/// The agent process; SIGKILLed and reaped on drop.
pub struct AgentProc(pub Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_agent(env: &Env) -> AgentProc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.state.path().join("agent.log"))
        .expect("agent log");
    let child = Command::new("nsenter")
        .arg(format!("--net={}", env.netns.path().display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nubis-agent"))
        .arg("--config")
        .arg(env.config_path())
        .env("NUBIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("agent log"))
        .stderr(log)
        .spawn()
        .expect("start nubis-agent");
    AgentProc(child)
}

pub fn read_status(state: &Path) -> Option<serde_json::Value> {
    let b = std::fs::read(state.join("status.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Waits until status.json (written after `after_ms`) satisfies `pred`.
pub fn wait_status(
    env: &Env,
    after_ms: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(v) = read_status(env.state.path()) {
            if v["written_unix_ms"].as_u64().unwrap_or(0) >= after_ms && pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(env.state.path().join("agent.log")).unwrap_or_default();
                panic!("timed out waiting for {what}; status: {v:#}\nagent log:\n{log}");
            }
        } else if Instant::now() > deadline {
            panic!("timed out waiting for {what}: no status.json");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
