//! A whole Nubis cluster on one machine, for end-to-end tests and for other
//! test suites (`nubis-testcluster up --json`): etcd on free loopback ports,
//! `nubis-control-plane` (TCP on loopback plus a Unix socket), and N
//! `nubis-agent`s, each in its own network namespace acting as a separate host
//! (the agent reaches the control plane over the Unix socket; its bridge and
//! TAPs live inside its namespace). One etcd member and one control plane by
//! default; three of each in high-availability mode ([`ClusterSpec::ha`],
//! [`replicas`]), with agents and the CLI given every replica.
//!
//! Names are unique per cluster (`nbt-<pid>-<rand>`, see [`sys`]); state lives
//! in a temporary directory. Everything is torn down on `Drop`, also when a
//! test panics: processes killed (agents, their VMMs, control plane, etcd),
//! namespaces (with their TAPs and bridges) deleted, cgroups removed, the state
//! directory deleted (kept when `NUBIS_KEEP_CLUSTER=1`, for debugging). A
//! harness process killed outright is cleaned up by the next one
//! ([`sys::sweep_leftovers`]).
//!
//! Tests talk to the cluster like a user: through the `nubis` CLI
//! ([`Cluster::cli`]) with JSON output.

pub mod console;
pub mod fabric;
pub mod ops;
pub mod region;
pub mod replicas;
pub mod sys;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use nubis_testsupport::etcd_healthy;
pub use region::{region, zone, zones};
use sys::Proc;

/// Binaries the cluster runs, from the same target directory as the test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `nubis`.
    pub cli: PathBuf,
    /// `nubis-control-plane`.
    pub control_plane: PathBuf,
    /// `nubis-agent`.
    pub agent: PathBuf,
    /// `nubis-vmm`.
    pub vmm: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
}

/// The directory holding the workspace's binaries: `$NUBIS_BIN_DIR`, else the
/// profile directory of the running test executable (`target/debug`), else
/// `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NUBIS_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test> or target/debug/<bin>
        for dir in exe.ancestors().skip(1).take(2) {
            if dir.join("nubis-control-plane").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    crate::workspace_root().join("target/debug")
}

impl Binaries {
    /// Locates every binary; Err lists what is missing.
    pub fn locate() -> Result<Self, String> {
        let dir = bin_dir();
        let b = Binaries {
            cli: dir.join("nubis"),
            control_plane: dir.join("nubis-control-plane"),
            agent: dir.join("nubis-agent"),
            vmm: dir.join("nubis-vmm"),
            etcd: std::env::var_os("NUBIS_ETCD")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
        };
        let missing: Vec<String> = [&b.cli, &b.control_plane, &b.agent, &b.vmm, &b.etcd]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(b)
        } else {
            Err(format!(
                "missing binaries: {} (run `cargo build --workspace --bins`; install etcd-server)",
                missing.join(", ")
            ))
        }
    }
}

/// Everything a cluster needs from the machine; returns what is missing.
pub fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if let Err(e) = Binaries::locate() {
        missing.push(e);
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        missing.push("/dev/kvm (read-write)".into());
    }
    if !crate::image_dir().join("hello/manifest.json").is_file() {
        missing.push(format!(
            "hello image at {} (run deploy/images/build.sh hello)",
            crate::image_dir().join("hello").display()
        ));
    }
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces)".into());
    }
    // nft: agents apply their nftables firewall at start (docs/security.md).
    for tool in ["ip", "nsenter", "nft"] {
        if sys::run(Command::new(tool).arg("-V")).is_err()
            && sys::run(Command::new(tool).arg("--version")).is_err()
        {
            missing.push(format!("`{tool}` command"));
        }
    }
    missing
}

/// Applies the prerequisite policy ([`crate::prerequisite`]) to a cluster
/// test: true when the test can run.
pub fn prerequisites_met() -> bool {
    let missing = missing_prerequisites();
    crate::prerequisite(missing.is_empty(), &missing.join("; "))
}

/// One agent (host) of the cluster.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Availability zone label.
    pub zone: String,
    /// vCPUs offered (capacity override).
    pub vcpus: u32,
    /// Memory offered in MiB (capacity override).
    pub memory_mib: u64,
}

/// What to bring up.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Region name.
    pub region: String,
    /// Agents, one network namespace each.
    pub agents: Vec<AgentSpec>,
    /// Node lease TTL (short in tests: a lost host is noticed quickly).
    pub lease_ttl_seconds: u32,
    /// Agent heartbeat interval.
    pub heartbeat_interval_seconds: u32,
    /// Create a tenant account (see [`Cluster::tenant`]).
    pub create_tenant: bool,
    /// Register the `hello` image (public, by the operator).
    pub register_hello: bool,
    /// Start the EC2 Query gateway.
    pub ec2_gateway: bool,
    /// etcd members (1, or 3 for high availability).
    pub etcd_members: usize,
    /// Control-plane replicas.
    pub control_planes: usize,
}

impl ClusterSpec {
    /// Three agents, one per zone, each with room for `per_host` t3.nano
    /// (64 MiB) instances.
    pub fn three_zones(per_host: u32) -> Self {
        Self {
            region: region(),
            agents: zones()
                .into_iter()
                .map(|zone| AgentSpec {
                    zone,
                    // Memory is the binding limit: vCPUs are overcommitted.
                    vcpus: per_host.max(1),
                    memory_mib: 64 * u64::from(per_host),
                })
                .collect(),
            lease_ttl_seconds: 10,
            heartbeat_interval_seconds: 2,
            create_tenant: true,
            register_hello: true,
            ec2_gateway: true,
            etcd_members: 1,
            control_planes: 1,
        }
    }

    /// High-availability mode: three etcd members and three control-plane
    /// replicas.
    pub fn ha(mut self) -> Self {
        self.etcd_members = 3;
        self.control_planes = 3;
        self
    }
}

/// An access key and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Access key id.
    pub access_key_id: String,
    /// Secret.
    pub secret: String,
}

#[derive(Debug)]
struct AgentSlot {
    spec: AgentSpec,
    netns: String,
    /// Its address on the fabric (fabric.rs).
    underlay: std::net::Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// A running cluster; torn down on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Unique id, also the prefix of its namespaces and cgroups.
    pub id: String,
    /// State directory (configs, data, logs under `logs/`).
    pub dir: PathBuf,
    /// Region.
    pub region: String,
    /// gRPC endpoint (Compute, Admin) of the first replica.
    pub grpc_endpoint: String,
    /// EC2 Query gateway URL of the first replica (empty when disabled).
    pub ec2_endpoint: String,
    /// The first replica's Unix socket.
    pub unix_socket: PathBuf,
    /// The first etcd member's client URL.
    pub etcd_endpoint: String,
    /// etcd key prefix of this cluster.
    pub etcd_prefix: String,
    /// The operator credential.
    pub admin: Creds,
    /// A tenant account's credential (when requested).
    pub tenant: Option<Creds>,
    /// The tenant's account id.
    pub tenant_account_id: Option<String>,
    /// Image id of `hello` (when registered).
    pub hello_image: Option<String>,
    /// Binaries used.
    pub bins: Binaries,
    spec: ClusterSpec,
    etcd: Vec<replicas::EtcdMember>,
    replicas: Vec<replicas::Replica>,
    agents: Vec<AgentSlot>,
    /// The underlay and the edge (made before the first agent).
    fabric: Option<fabric::Fabric>,
    torn_down: bool,
}

/// Result of a CLI run.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Parses stdout as JSON, panicking with the whole output when the command
    /// failed or printed something else.
    pub fn json(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "nubis failed: {}\n{}",
            self.stderr, self.stdout
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("nubis printed no JSON ({e}): {}", self.stdout))
    }
}

/// Runs `nubis` against a cluster; `Send` and `Clone`, detached from the
/// [`Cluster`] (see [`Cluster::cli_runner`]).
#[derive(Debug, Clone)]
pub struct CliRunner {
    cli: PathBuf,
    home: PathBuf,
    endpoints: String,
    region: String,
}

/// A CLI run that takes longer than this is killed (exit code -1).
const CLI_TIMEOUT: Duration = Duration::from_secs(150);

impl CliRunner {
    /// Runs `nubis` with `creds` (no profile file).
    pub fn run(&self, creds: &Creds, args: &[&str]) -> CliOutput {
        let mut child = Command::new(&self.cli)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("NUBIS_ENDPOINT", &self.endpoints)
            .env("NUBIS_REGION", &self.region)
            .env("NUBIS_ACCESS_KEY_ID", &creds.access_key_id)
            .env("NUBIS_SECRET_ACCESS_KEY", &creds.secret)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.cli.display()));
        // Read both pipes on threads so a chatty child cannot block on a full
        // pipe while we wait for it.
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let read = |p: Option<&mut dyn std::io::Read>| {
            let mut s = String::new();
            if let Some(p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        };
        let (stdout, stderr, code) = std::thread::scope(|sc| {
            let o = sc.spawn(|| read(out.as_mut().map(|p| p as &mut dyn std::io::Read)));
            let e = sc.spawn(|| read(err.as_mut().map(|p| p as &mut dyn std::io::Read)));
            let end = Instant::now() + CLI_TIMEOUT;
            let code = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break st.code().unwrap_or(-1),
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break -1;
                    }
                }
            };
            (
                o.join().unwrap_or_default(),
                e.join().unwrap_or_default(),
                code,
            )
        });
        CliOutput {
            code,
            stdout,
            stderr,
        }
    }
}

const ENROL_ID: &str = "nbt-enrol";
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How a control-plane start that ended with the process exiting is reported.
const CP_EXITED: &str = "the control plane exited during start-up";

fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let end = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= end {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(0)
}

impl Cluster {
    /// Brings a cluster up and waits until every agent is registered and
    /// ready (and the tenant/image exist when requested).
    pub fn start(spec: ClusterSpec) -> Result<Self, String> {
        sys::sweep_leftovers();
        let bins = Binaries::locate()?;
        let id = format!(
            "{}{}-{}",
            sys::PREFIX,
            std::process::id(),
            sys::random_hex(6)
        );
        let base = std::env::var_os("NUBIS_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(&id);
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let admin = Creds {
            access_key_id: format!("NBTADMIN{}", sys::random_hex(8).to_uppercase()),
            secret: sys::random_hex(32),
        };
        let mut c = Cluster {
            etcd_prefix: format!("/{id}"),
            unix_socket: dir.join("cp.sock"),
            id,
            dir,
            region: spec.region.clone(),
            grpc_endpoint: String::new(),
            ec2_endpoint: String::new(),
            etcd_endpoint: String::new(),
            admin,
            tenant: None,
            tenant_account_id: None,
            hello_image: None,
            bins,
            spec: spec.clone(),
            etcd: Vec::new(),
            replicas: Vec::new(),
            agents: Vec::new(),
            fabric: None,
            torn_down: false,
        };
        // From here on, Drop cleans up whatever was started.
        c.fabric = Some(fabric::Fabric::create(&c.id)?);
        c.start_etcd(spec.etcd_members.max(1))?;
        for i in 0..spec.control_planes.max(1) {
            c.add_replica(i)?;
        }
        // One at a time: the control plane hands out address blocks in
        // registration order, and agent i's bridge is configured for block i.
        for (i, a) in spec.agents.iter().enumerate() {
            c.add_agent(i, a.clone())?;
            c.wait_nodes_ready(i + 1, START_TIMEOUT)?;
        }
        if spec.register_hello {
            c.register_hello()?;
        }
        if spec.create_tenant {
            let (creds, account) = c.create_account("tenant-1")?;
            c.open_http(&creds)?;
            c.tenant = Some(creds);
            c.tenant_account_id = Some(account);
        }
        Ok(c)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn enrol_secret(&self) -> String {
        // Derived from the admin secret: unique per cluster, stable across restarts.
        format!("enrol-{}", self.admin.secret)
    }

    /// Starts the (first) control plane again, after
    /// [`Cluster::kill_control_plane`], and waits until it answers.
    pub fn start_control_plane(&mut self) -> Result<(), String> {
        self.start_replica(0)
    }

    /// SIGKILLs the (first) control plane.
    pub fn kill_control_plane(&mut self) {
        self.kill_replica(0);
    }

    /// Pid of the (first) control plane, if running.
    pub fn control_plane_pid(&self) -> Option<u32> {
        self.replica_pid(0)
    }

    fn add_agent(&mut self, index: usize, spec: AgentSpec) -> Result<(), String> {
        let name = format!("a{index}");
        let netns = format!("{}-{name}", self.id);
        sys::netns_add(&netns)?;
        let underlay = match &self.fabric {
            Some(f) => f.attach(&netns, index)?,
            None => return Err("the cluster has no fabric".into()),
        };
        let state = self.dir.join("agents").join(&name);
        std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        let enforce = sys::cgroup2_has_limits();
        let endpoints: Vec<String> = self
            .agent_endpoints()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        let text = format!(
            "control_plane = {first}\n\
             control_planes = [{rest}]\n\
             availability_zone = {zone:?}\n\
             state_dir = {state:?}\n\
             image_dir = {images:?}\n\
             vmm_binary = {vmm:?}\n\n\
             [enrolment]\nkey_id = \"{eid}\"\nsecret = \"{esec}\"\n\n\
             [network]\nfirewall = {firewall}\nbridge_address = \"10.200.{index}.1/24\"\n\
             instance_range = \"10.200.{index}.2-10.200.{index}.254\"\n\
             underlay_address = \"{underlay}\"\nedge_gateway = \"{edge}\"\n\n\
             [capacity]\nvcpus = {vcpus}\nmemory_mib = {mem}\n\n\
             [cgroup]\nparent = \"{id}/{name}\"\nenforce_limits = {enforce}\n\n\
             [instances]\nvmm_memory_overhead_mib = 16\n\n\
             [timeouts]\ngraceful_stop_secs = 3\nhard_stop_secs = 2\nheartbeat_secs = {hb}\n\
             reconnect_max_secs = 1\n",
            first = endpoints[0],
            rest = endpoints[1..].join(", "),
            eid = ENROL_ID,
            esec = self.enrol_secret(),
            zone = spec.zone,
            state = state.join("state").display().to_string(),
            images = crate::image_dir().display().to_string(),
            vmm = self.bins.vmm.display().to_string(),
            vcpus = spec.vcpus,
            mem = spec.memory_mib,
            id = self.id,
            hb = self.spec.heartbeat_interval_seconds,
            underlay = underlay,
            edge = fabric::EDGE_ADDRESS,
            // Off only for a test that shows what the firewall prevents
            // (tests/tests/e2e_antispoof.rs).
            firewall = std::env::var("NUBIS_TEST_AGENT_FIREWALL").map_or(true, |v| v != "0"),
        );
        let config = state.join("agent.toml");
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let log = self.log(&format!("agent-{name}"));
        self.agents.push(AgentSlot {
            spec,
            netns,
            underlay,
            config,
            log,
            proc: None,
        });
        self.start_agent(index)
    }

    /// Starts agent `i` (again, after [`Cluster::kill_agent`]).
    pub fn start_agent(&mut self, i: usize) -> Result<(), String> {
        let slot = self
            .agents
            .get_mut(i)
            .ok_or_else(|| format!("no agent {i}"))?;
        if slot.proc.as_mut().is_some_and(Proc::alive) {
            return Ok(());
        }
        let mut cmd = sys::in_netns(&slot.netns, &self.bins.agent);
        cmd.arg("--config").arg(&slot.config);
        cmd.env(
            "RUST_LOG",
            std::env::var("NUBIS_TEST_LOG").unwrap_or("info".into()),
        );
        let p = Proc::spawn(&format!("agent-{i}"), cmd, &slot.log).map_err(|e| e.to_string())?;
        slot.proc = Some(p);
        Ok(())
    }

    /// SIGKILLs agent `i` (its VMMs keep running, as on a real host).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(slot) = self.agents.get_mut(i) {
            if let Some(mut p) = slot.proc.take() {
                p.kill();
            }
        }
    }

    /// Number of agents.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The network namespace of agent `i`.
    pub fn netns(&self, i: usize) -> &str {
        self.agents.get(i).map(|a| a.netns.as_str()).unwrap_or("")
    }

    /// The index of the (first) agent in `zone`.
    pub fn agent_in_zone(&self, zone: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.spec.zone == zone)
    }

    /// The agent's log so far (for assertions and failure messages).
    pub fn agent_log(&self, i: usize) -> String {
        self.agents
            .get(i)
            .map(|a| sys::tail(&a.log, 40))
            .unwrap_or_default()
    }

    /// The length of agent `i`'s log so far (a mark for
    /// [`Cluster::wait_agent_log_since`]; the log is appended across restarts).
    pub fn agent_log_len(&self, i: usize) -> u64 {
        self.agents
            .get(i)
            .and_then(|a| std::fs::metadata(&a.log).ok())
            .map_or(0, |m| m.len())
    }

    /// Waits until agent `i`'s log has a line containing `needle` written
    /// after `mark` (from [`Cluster::agent_log_len`]).
    pub fn wait_agent_log_since(
        &self,
        i: usize,
        mark: u64,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let log = self
            .agents
            .get(i)
            .map(|a| a.log.clone())
            .ok_or_else(|| format!("no agent {i}"))?;
        let end = Instant::now() + timeout;
        loop {
            let text = std::fs::read(&log).unwrap_or_default();
            let new = text.get(mark as usize..).unwrap_or_default();
            if String::from_utf8_lossy(new).contains(needle) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "agent {i} logged no {needle:?} within {timeout:?}:\n{}",
                    self.agent_log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The (first) control plane's log tail.
    pub fn control_plane_log(&self) -> String {
        self.replica_log(0)
    }

    /// Lets TCP 80 from anywhere into the account's default security group
    /// (as the quickstart does), so tests reach its instances' public
    /// addresses from the edge ([`Cluster::http_get`]).
    pub fn open_http(&self, creds: &Creds) -> Result<(), String> {
        let groups = self
            .cli(
                creds,
                &[
                    "security-groups",
                    "list",
                    "--filter",
                    "group-name=default",
                    "-o",
                    "json",
                ],
            )
            .json();
        let sg = groups["security_groups"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|g| g["group_id"].as_str())
            .ok_or_else(|| format!("no default security group: {groups}"))?
            .to_string();
        let out = self.cli(
            creds,
            &[
                "security-groups",
                "authorize",
                &sg,
                "--protocol",
                "tcp",
                "--port",
                "80",
                "--cidr",
                "0.0.0.0/0",
            ],
        );
        if out.code == 0 {
            Ok(())
        } else {
            Err(format!("authorize tcp 80 on {sg}: {}", out.stderr))
        }
    }

    /// Agent `i`'s underlay address (its VXLAN tunnel endpoint).
    pub fn underlay(&self, i: usize) -> Option<std::net::Ipv4Addr> {
        self.agents.get(i).map(|a| a.underlay)
    }

    /// The edge namespace (stands in for the internet; fabric.rs).
    pub fn edge_netns(&self) -> &str {
        self.fabric.as_ref().map_or("", |f| f.edge_netns.as_str())
    }

    /// Runs a program inside agent `i`'s network namespace (e.g. curl to an
    /// instance address).
    pub fn exec_in_host(&self, i: usize, program: &str, args: &[&str]) -> Output {
        let mut cmd = sys::in_netns(self.netns(i), Path::new(program));
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("run {program} in {}: {e}", self.netns(i)))
    }

    /// Runs `nubis` with `creds` against this cluster (no profile file; the
    /// endpoint lists every replica).
    pub fn cli(&self, creds: &Creds, args: &[&str]) -> CliOutput {
        self.cli_runner().run(creds, args)
    }

    /// A handle that runs the CLI against this cluster from another thread
    /// while the test kills and restarts members.
    pub fn cli_runner(&self) -> CliRunner {
        CliRunner {
            cli: self.bins.cli.clone(),
            home: self.dir.clone(),
            endpoints: self.grpc_endpoints().join(","),
            region: self.region.clone(),
        }
    }

    /// Pid of agent `i`, if running.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents.get(i)?.proc.as_ref().map(Proc::pid)
    }

    /// Runs `nubis` as the operator.
    pub fn admin_cli(&self, args: &[&str]) -> CliOutput {
        self.cli(&self.admin.clone(), args)
    }

    /// Runs `nubis` as the tenant (panics if no tenant was created).
    pub fn tenant_cli(&self, args: &[&str]) -> CliOutput {
        let t = self
            .tenant
            .clone()
            .expect("cluster started without a tenant");
        self.cli(&t, args)
    }

    /// Nodes as the operator sees them (`admin nodes list`).
    pub fn nodes(&self) -> Result<Vec<Value>, String> {
        let out = self.admin_cli(&["admin", "nodes", "list", "-o", "json"]);
        if out.code != 0 {
            return Err(out.stderr);
        }
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v["nodes"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until `n` nodes are registered and ready.
    pub fn wait_nodes_ready(&mut self, n: usize, timeout: Duration) -> Result<(), String> {
        let res = wait_until(timeout, &format!("{n} ready nodes"), || {
            for (i, a) in self.agents.iter_mut().enumerate() {
                if let Some(p) = a.proc.as_mut() {
                    if !p.alive() {
                        return Err(format!("agent {i} exited:\n{}", p.log_tail(30)));
                    }
                }
            }
            let nodes = self.nodes()?;
            let ready = nodes.iter().filter(|n| n["state"] == "ready").count();
            Ok((ready >= n).then_some(()))
        });
        res.map_err(|e| format!("{e}\n--- control-plane log:\n{}", self.control_plane_log()))
    }

    fn register_hello(&mut self) -> Result<(), String> {
        let manifest = crate::image_dir().join("hello/manifest.json");
        self.hello_image = Some(self.register_public_image("hello", &manifest)?);
        Ok(())
    }

    /// `nubis admin images register --public` of the image whose manifest is
    /// `manifest`; returns its image id.
    pub fn register_public_image(&self, name: &str, manifest: &Path) -> Result<String, String> {
        let manifest = manifest.display().to_string();
        let out = self.admin_cli(&[
            "images",
            "register",
            "--name",
            name,
            "--public",
            "--manifest",
            &manifest,
            "-o",
            "json",
        ]);
        if out.code != 0 {
            return Err(format!("register {name}: {}", out.stderr));
        }
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        v["image_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("register {name}: no image_id in {}", out.stdout))
    }

    /// Creates an account; returns its credential and account id.
    pub fn create_account(&self, name: &str) -> Result<(Creds, String), String> {
        let out = self.admin_cli(&["admin", "accounts", "create", name, "-o", "json"]);
        if out.code != 0 {
            return Err(format!("create account {name}: {}", out.stderr));
        }
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok((
            Creds {
                access_key_id: s("access_key_id"),
                secret: s("secret_access_key"),
            },
            s("account_id"),
        ))
    }

    /// Endpoints and credentials as JSON (what `nubis-testcluster up --json`
    /// prints).
    pub fn describe(&self) -> Value {
        let creds = |c: &Creds| serde_json::json!({"access_key_id": c.access_key_id, "secret_access_key": c.secret});
        serde_json::json!({
            "id": self.id,
            "state_dir": self.dir,
            "region": self.region,
            "zones": self.agents.iter().map(|a| a.spec.zone.clone()).collect::<Vec<_>>(),
            "grpc_endpoint": self.grpc_endpoint,
            "grpc_endpoints": self.grpc_endpoints(),
            "etcd_endpoints": self.etcd_endpoints(),
            "ec2_endpoint": self.ec2_endpoint,
            "unix_socket": self.unix_socket,
            "etcd_endpoint": self.etcd_endpoint,
            "etcd_prefix": self.etcd_prefix,
            "admin": creds(&self.admin),
            "tenant": self.tenant.as_ref().map(creds),
            "tenant_account_id": self.tenant_account_id,
            "hello_image_id": self.hello_image,
            "hosts": self.agents.iter().map(|a| serde_json::json!({
                "netns": a.netns, "zone": a.spec.zone, "underlay": a.underlay.to_string(),
                "vcpus": a.spec.vcpus, "memory_mib": a.spec.memory_mib,
            })).collect::<Vec<_>>(),
            "cli": self.bins.cli,
            "logs": self.dir.join("logs"),
        })
    }

    /// Stops everything and removes what was created. Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for a in &mut self.agents {
            if let Some(mut p) = a.proc.take() {
                p.kill();
            }
        }
        for a in &self.agents {
            sys::netns_delete(&a.netns);
        }
        if let Some(f) = &self.fabric {
            f.delete();
        }
        self.kill_replicas_and_etcd();
        if let Some(mount) = sys::cgroup2_mount() {
            sys::cgroup_remove(&mount.join(&self.id));
        }
        if std::env::var("NUBIS_KEEP_CLUSTER").is_ok_and(|v| v == "1") {
            eprintln!("NUBIS_KEEP_CLUSTER=1: state kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.replicas.len() {
                eprintln!(
                    "--- cluster {} torn down after a panic; control-plane {i} log tail:\n{}",
                    self.id,
                    self.replica_log(i)
                );
            }
            for i in 0..self.agents.len() {
                eprintln!("--- agent {i} log tail:\n{}", self.agent_log(i));
            }
        }
        self.teardown();
    }
}
