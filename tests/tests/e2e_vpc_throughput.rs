//! Benchmark (tests/bench/vpc-throughput.sh; ignored, not part of the test
//! suite): guest-to-guest TCP throughput and latency of hello guests through
//! the VPC overlay across two hosts against the same pair of guests on the
//! agent's legacy bridge and on a plain Linux bridge with directly started
//! VMMs, rotating, in one run (issue 12: overlay >= 0.7x of the bridge).
//!
//! - Overlay: a whole local cluster (two hosts joined by the fabric); a
//!   server instance in zone 0 and, each round, a client instance in zone 1
//!   of the same VPC and default group. Their traffic crosses routed TAP
//!   ports, VXLAN between the hosts and the VPC's nftables groups.
//! - Bridge: the same kernel under the same `nubis-vmm` binary, started
//!   directly in a network namespace of this test with both TAPs on one
//!   Linux bridge (as deploy/images/hello/test-probe.sh does), each VMM in a
//!   cgroup with the instance type's CPU quota (1 CPU) as the agent gives
//!   its VMMs, where cgroup v2 has the cpu controller.
//! - Legacy (unless `NUBIS_BENCH_LEGACY=0`): the agent's pre-VPC path, a
//!   second account whose default VPC was deleted, so its server and client
//!   (both on the zone-a host) sit on the agent's legacy bridge: jailed
//!   VMMs like the overlay's, no overlay.
//!
//! Each round's client has the user data `nubis-bulk <server> bytes=<N>`
//! (one `GET /bulk` fetch, its `NUBIS-BULK` line gives bytes and ms) and
//! `nubis-probe <server> icmp,http:80 every=100`; latency is taken from the
//! probe lines printed after the bulk fetch ended (so the transfer does not
//! queue them). Prints one `BENCH` line per round and path and a summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nubis_imds::{ImdsConfig, InstanceMetadata, MetadataOptions};
use nubis_tests::cluster::console::{self, Bulk};
use nubis_tests::cluster::ops::{field, ids_of};
use nubis_tests::cluster::sys::{self, Proc};
use nubis_tests::cluster::{self, Binaries, Cluster, ClusterSpec, Creds};

/// Probe rounds taken per client after its bulk fetch.
const PROBES: usize = 20;
/// Longest a round may take (boot, fetch, probes).
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn user_data(server: &str, bytes: u64) -> String {
    format!("nubis-bulk {server} bytes={bytes}\nnubis-probe {server} icmp,http:80 every=100\n")
}

/// What one client measured.
#[derive(Debug)]
struct Sample {
    bulk: Bulk,
    icmp_ms: Vec<f64>,
    http_ms: Vec<f64>,
}

/// The sample in `text` once the bulk fetch ended and [`PROBES`] ok rounds
/// of both checks followed it.
fn sample(text: &str, server: &str) -> Option<Sample> {
    let bulk = console::bulk(text, server)?;
    let after = &text[text.find("NUBIS-BULK ")?..];
    let ok_ms = |check: &str| -> Vec<f64> {
        console::probes(after, server, check)
            .into_iter()
            .filter(|p| p.result == "ok")
            .filter_map(|p| p.ms)
            .collect()
    };
    let (icmp_ms, http_ms) = (ok_ms("icmp"), ok_ms("http:80"));
    (bulk.result != "ok" || (icmp_ms.len() >= PROBES && http_ms.len() >= PROBES)).then_some(
        Sample {
            bulk,
            icmp_ms,
            http_ms,
        },
    )
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until the console file `path` gives a sample.
fn wait_sample(what: &str, path: impl Fn() -> Option<PathBuf>, server: &str) -> Sample {
    let end = Instant::now() + ROUND_TIMEOUT;
    loop {
        let text = path().map(|p| read(&p)).unwrap_or_default();
        if let Some(s) = sample(&text, server) {
            assert_eq!(s.bulk.result, "ok", "{what}: bulk fetch failed: {text}");
            return s;
        }
        assert!(
            Instant::now() < end,
            "{what}: no bulk result and {PROBES} probes within {ROUND_TIMEOUT:?}; console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plain-bridge side: a namespace with one bridge, VMMs on TAPs.
struct BridgeLab {
    ns: String,
    dir: tempfile::TempDir,
    vmm: PathBuf,
    kernel: PathBuf,
    cgroup: Option<PathBuf>,
    server: Option<Proc>,
}

impl BridgeLab {
    fn new(vmm: &Path) -> Self {
        let tag = sys::random_hex(6);
        let ns = format!("{}{}-vb{tag}", sys::PREFIX, std::process::id());
        sys::netns_add(&ns).expect("netns");
        let ip = |args: &[&str]| {
            let mut full = vec!["-n", ns.as_str()];
            full.extend_from_slice(args);
            sys::run(std::process::Command::new("ip").args(&full)).expect("ip");
        };
        ip(&["link", "add", "br0", "type", "bridge"]);
        ip(&["addr", "add", "10.0.0.1/24", "dev", "br0"]);
        ip(&["link", "set", "br0", "up"]);
        // The instance type's quota (t3.nano: 1 vCPU = 1 CPU), as the agent
        // sets for its VMMs; without cgroup v2 limits the VMMs run uncapped.
        let cgroup = sys::cgroup2_mount().and_then(|m| {
            let dir = m.join(format!("{}{}-vb{tag}", sys::PREFIX, std::process::id()));
            std::fs::create_dir(&dir).ok()?;
            if std::fs::write(dir.join("cpu.max"), "100000 100000").is_err() {
                sys::cgroup_remove(&dir);
                return None;
            }
            Some(dir)
        });
        let mut lab = BridgeLab {
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
            vmm: vmm.to_path_buf(),
            kernel: nubis_tests::image_dir().join("hello/kernel"),
            cgroup,
            server: None,
        };
        lab.server = Some(lab.boot("server", 2, "nubis.imds=0", None));
        lab
    }

    fn console(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Boots a hello guest at 10.0.0.`host` on a new TAP of the bridge.
    fn boot(&self, name: &str, host: u8, extra: &str, user_data: Option<&str>) -> Proc {
        let tap = format!("tap{host}");
        for args in [
            vec!["tuntap", "add", "dev", tap.as_str(), "mode", "tap"],
            vec!["link", "set", tap.as_str(), "master", "br0", "up"],
        ] {
            let mut full = vec!["-n", self.ns.as_str()];
            full.extend_from_slice(&args);
            sys::run(std::process::Command::new("ip").args(&full)).expect("tap");
        }
        let mac = format!("02:00:0a:00:00:{host:02x}");
        let mut cmd = sys::in_netns(&self.ns, &self.vmm);
        cmd.args(["--kernel".as_ref(), self.kernel.as_os_str()])
            .args([
                "--cmdline",
                &format!("nubis.id=i-{name} ip=10.0.0.{host}/24 gw=10.0.0.1 {extra}"),
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--net",
                &format!("tap={tap},mac={mac}"),
            ])
            .arg("--serial")
            .arg(self.console(name));
        if let Some(ud) = user_data {
            let md = ImdsConfig {
                metadata: InstanceMetadata {
                    instance_id: format!("i-{name}"),
                    account_id: "123456789012".into(),
                    ami_id: "ami-0123456789abcdef0".into(),
                    instance_type: "t3.nano".into(),
                    hostname: format!("ip-10-0-0-{host}.bench.internal"),
                    local_ipv4: format!("10.0.0.{host}"),
                    public_ipv4: None,
                    mac: mac.clone(),
                    availability_zone: "bench-1a".into(),
                    region: "bench-1".into(),
                    security_groups: Vec::new(),
                    launch_time: "2026-12-07T00:00:00Z".into(),
                    user_data: Some(ud.as_bytes().to_vec()),
                    public_keys: Vec::new(),
                    architecture: "x86_64".into(),
                    tags: Vec::new(),
                    extra_interfaces: Vec::new(),
                },
                options: MetadataOptions::default(),
            };
            let file = self.dir.path().join(format!("{name}.md.json"));
            std::fs::write(&file, serde_json::to_vec(&md).expect("json")).expect("metadata");
            cmd.arg("--metadata-file").arg(file);
        }
        let log = self.dir.path().join(format!("{name}.vmm.log"));
        let proc = Proc::spawn(name, cmd, &log).expect("spawn nubis-vmm");
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::write(cg.join("cgroup.procs"), proc.pid().to_string());
        }
        proc
    }

    /// One round: a client at 10.0.0.3 fetches and probes the server.
    fn round(&self, n: usize, bytes: u64) -> Sample {
        let name = format!("client{n}");
        let _ = std::fs::remove_file(self.console(&name));
        let mut client = self.boot(&name, 3, "", Some(&user_data("10.0.0.2", bytes)));
        let path = self.console(&name);
        let s = wait_sample("bridge", || Some(path.clone()), "10.0.0.2");
        client.kill();
        let _ = sys::run(
            std::process::Command::new("ip").args(["-n", &self.ns, "link", "del", "tap3"]),
        );
        s
    }
}

impl Drop for BridgeLab {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
        sys::netns_delete(&self.ns);
        if let Some(cg) = &self.cgroup {
            sys::cgroup_remove(cg);
        }
    }
}

/// Launches one hello instance in `zone` (default VPC and group); its id
/// and private address once running.
fn launch(c: &Cluster, t: &Creds, zone: &str, user_data: Option<&str>) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ud = dir.path().join("user-data");
    let mut args = Vec::new();
    let ud_arg = ud.display().to_string();
    if let Some(text) = user_data {
        std::fs::write(&ud, text).expect("user data");
        args.extend(["--user-data", ud_arg.as_str()]);
    }
    let out = c.try_run_hello(t, 1, Some(zone), &args);
    assert_eq!(out.code, 0, "run: {}", out.stderr);
    let ids = ids_of(&out.json());
    let v = c.wait_state(t, &ids, "running");
    (ids[0].clone(), field(&v[0], "private_ip_address"))
}

/// A second account without any VPC (its default VPC created, then its
/// subnets, gateway and the VPC deleted): its instances take the agent's
/// legacy bridge.
fn account_without_vpc(c: &Cluster) -> Creds {
    let (creds, _) = c.create_account("bench-legacy").expect("account");
    let json = |args: &[&str]| {
        let out = c.cli(&creds, args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.json()
    };
    let ok = |args: &[&str]| {
        let out = c.cli(&creds, args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    };
    let vpcs = json(&["vpcs", "list", "-o", "json"]);
    for v in vpcs["vpcs"].as_array().into_iter().flatten() {
        let vpc = field(v, "vpc_id");
        let subnets = json(&["subnets", "list", "-o", "json"]);
        for s in subnets["subnets"].as_array().into_iter().flatten() {
            if field(s, "vpc_id") == vpc {
                ok(&["subnets", "delete", &field(s, "subnet_id")]);
            }
        }
        let gws = json(&["internet-gateways", "list", "-o", "json"]);
        for g in gws["internet_gateways"].as_array().into_iter().flatten() {
            if field(g, "vpc_id") == vpc {
                let id = field(g, "internet_gateway_id");
                ok(&["internet-gateways", "detach", &id, &vpc]);
                ok(&["internet-gateways", "delete", &id]);
            }
        }
        ok(&["vpcs", "delete", &vpc]);
    }
    creds
}

fn zone(c: &Cluster, i: usize) -> String {
    c.describe()["hosts"][i]["zone"]
        .as_str()
        .expect("zone")
        .to_string()
}

#[test]
#[ignore = "benchmark: tests/bench/vpc-throughput.sh"]
fn bench_guest_throughput_overlay_vs_bridge() {
    if !cluster::prerequisites_met() {
        return;
    }
    let rounds: usize = env_or("NUBIS_BENCH_ROUNDS", 5);
    let bytes: u64 = env_or("NUBIS_BENCH_BYTES", 2_000_000);
    let mut spec = ClusterSpec::three_zones(6);
    spec.agents.truncate(2);
    let c = Cluster::start(spec).expect("cluster");
    let t = c.tenant.clone().expect("tenant");
    let bins = Binaries::locate().expect("binaries");
    let lab = BridgeLab::new(&bins.vmm);

    let (server, s_ip) = launch(&c, &t, &zone(&c, 0), None);
    let (z1, z0) = (zone(&c, 1), zone(&c, 0));
    c.wait_console(&t, &server, "NUBIS-GUEST-READY", 1);
    let legacy = (env_or("NUBIS_BENCH_LEGACY", 1) == 1).then(|| {
        let l = account_without_vpc(&c);
        let (id, ip) = launch(&c, &l, &z0, None);
        let v = c.describe_instances(&l, std::slice::from_ref(&id));
        assert_eq!(field(&v[0], "vpc_id"), "", "legacy server in a VPC: {v:?}");
        c.wait_console(&l, &id, "NUBIS-GUEST-READY", 1);
        println!("BENCH legacy: {ip} <- client, both in {z0} on the agent's legacy bridge");
        (l, ip)
    });
    println!(
        "BENCH start load={} bytes={bytes} rounds={rounds} vmm={} overlay: {s_ip} in {z0} <- client in {z1}; bridge: 10.0.0.2 <- 10.0.0.3{}",
        load(),
        bins.vmm.display(),
        if lab.cgroup.is_some() { " (cpu.max 1 CPU)" } else { " (uncapped: no cgroup v2 limits)" }
    );
    let report = |path: &str, n: usize, s: &Sample| {
        println!(
            "BENCH round={n} path={path} load={} mbit_s={:.2} bytes={} ms={:.1} icmp_p50_ms={:.3} http_p50_ms={:.3}",
            load(),
            s.bulk.mbit_per_s(),
            s.bulk.bytes,
            s.bulk.ms,
            median(&s.icmp_ms),
            median(&s.http_ms)
        );
    };
    let (mut overlay, mut bridge, mut legacy_s) = (Vec::new(), Vec::new(), Vec::new());
    // A client instance in `zone` of `creds`' account fetching from `dst`.
    let through_agent = |path: &str, creds: &Creds, zone: &str, dst: &str| {
        let (id, _) = launch(&c, creds, zone, Some(&user_data(dst, bytes)));
        let s = wait_sample(path, || c.instance_file(&id, "console.log"), dst);
        let out = c.cli(creds, &["instances", "terminate", &id]);
        assert_eq!(out.code, 0, "terminate: {}", out.stderr);
        c.wait_state(creds, std::slice::from_ref(&id), "terminated");
        s
    };
    for n in 1..=rounds {
        // Rotate which path goes first.
        let mut order = vec!["overlay", "bridge"];
        if legacy.is_some() {
            order.push("legacy");
        }
        let first = (n - 1) % order.len();
        order.rotate_left(first);
        for path in order {
            let s = match (path, &legacy) {
                ("bridge", _) => lab.round(n, bytes),
                ("legacy", Some((l, l_ip))) => through_agent(path, l, &z0, l_ip),
                _ => through_agent(path, &t, &z1, &s_ip),
            };
            report(path, n, &s);
            match path {
                "bridge" => bridge.push(s),
                "legacy" => legacy_s.push(s),
                _ => overlay.push(s),
            }
        }
    }
    let summary = |v: &[Sample]| {
        let mbit: Vec<f64> = v.iter().map(|s| s.bulk.mbit_per_s()).collect();
        let icmp: Vec<f64> = v.iter().flat_map(|s| s.icmp_ms.clone()).collect();
        let http: Vec<f64> = v.iter().flat_map(|s| s.http_ms.clone()).collect();
        (median(&mbit), median(&icmp), median(&http))
    };
    let (o, b) = (summary(&overlay), summary(&bridge));
    println!(
        "BENCH summary load={} overlay: mbit_s_p50={:.2} icmp_p50_ms={:.3} http_p50_ms={:.3}; bridge: mbit_s_p50={:.2} icmp_p50_ms={:.3} http_p50_ms={:.3}; overlay/bridge throughput={:.2} icmp_latency={:.2} http_latency={:.2}",
        load(),
        o.0,
        o.1,
        o.2,
        b.0,
        b.1,
        b.2,
        o.0 / b.0,
        o.1 / b.1,
        o.2 / b.2
    );
    if !legacy_s.is_empty() {
        let l = summary(&legacy_s);
        println!(
            "BENCH summary legacy (agent's bridge): mbit_s_p50={:.2} icmp_p50_ms={:.3} http_p50_ms={:.3}; overlay/legacy throughput={:.2} icmp_latency={:.2}; legacy/bridge throughput={:.2}",
            l.0,
            l.1,
            l.2,
            o.0 / l.0,
            o.1 / l.1,
            l.0 / b.0
        );
    }
}
