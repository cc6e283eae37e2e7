//! The cluster's etcd members and control-plane replicas: one of each by
//! default, three of each in high-availability mode ([`super::ClusterSpec::ha`]).
//! Owns their configuration, start, `kill -9`, restart, and which replica
//! currently leads the singleton tasks.
//!
//! etcd members form one real cluster on loopback (`--initial-cluster` of
//! every member, distinct client and peer ports, a data directory each); a
//! restarted member rejoins from its data directory. Every replica gets the
//! whole etcd member list; every agent and the CLI get every replica.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::sys::{self, Proc};
use super::{etcd_healthy, port_of, port_open, wait_until, Cluster, CP_EXITED, START_TIMEOUT};

/// One etcd member.
#[derive(Debug)]
pub(super) struct EtcdMember {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// One control-plane replica.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) grpc_endpoint: String,
    pub(super) ec2_endpoint: String,
    pub(super) unix_socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Cluster {
    /// Starts `n` etcd members as one cluster and waits until each reports
    /// itself healthy (the cluster has a leader).
    pub(super) fn start_etcd(&mut self, n: usize) -> Result<(), String> {
        let mut last = String::new();
        for _attempt in 0..3 {
            self.etcd.clear();
            for i in 0..n {
                let client = sys::free_port().map_err(|e| e.to_string())?;
                let peer = sys::free_port().map_err(|e| e.to_string())?;
                let name = if n == 1 {
                    "nbt".to_string()
                } else {
                    format!("nbt{i}")
                };
                let data_dir = if n == 1 {
                    self.dir.join("etcd")
                } else {
                    self.dir.join(format!("etcd-{i}"))
                };
                let _ = std::fs::remove_dir_all(&data_dir);
                self.etcd.push(EtcdMember {
                    log: self.log(&if n == 1 {
                        "etcd".to_string()
                    } else {
                        format!("etcd-{i}")
                    }),
                    name,
                    client_url: format!("http://127.0.0.1:{client}"),
                    peer_url: format!("http://127.0.0.1:{peer}"),
                    data_dir,
                    proc: None,
                });
            }
            let mut spawned = Ok(());
            for i in 0..n {
                spawned = spawned.and(self.spawn_etcd_member(i));
            }
            let ok = spawned.and_then(|()| self.wait_etcd_healthy(Duration::from_secs(30)));
            match ok {
                Ok(()) => {
                    self.etcd_endpoint = self.etcd[0].client_url.clone();
                    return Ok(());
                }
                Err(e) => {
                    last = e;
                    for m in &mut self.etcd {
                        if let Some(mut p) = m.proc.take() {
                            last = format!("{last}\n--- {}:\n{}", m.name, p.log_tail(20));
                            p.kill();
                        }
                    }
                }
            }
        }
        Err(format!("etcd did not start: {last}"))
    }

    fn spawn_etcd_member(&mut self, i: usize) -> Result<(), String> {
        let initial: Vec<String> = self
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let m = &mut self.etcd[i];
        let mut cmd = Command::new(&self.bins.etcd);
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &self.id])
            .args(["--log-level", "warn"]);
        let p = Proc::spawn(&format!("etcd-{i}"), cmd, &m.log).map_err(|e| e.to_string())?;
        m.proc = Some(p);
        Ok(())
    }

    /// Waits until every running member answers `/health` with a leader.
    fn wait_etcd_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        wait_until(timeout, "etcd members healthy", || {
            let mut all = true;
            for m in &mut self.etcd {
                let Some(p) = m.proc.as_mut() else { continue };
                if !p.alive() {
                    return Err(format!("etcd member {} exited", m.name));
                }
                all &= etcd_healthy(port_of(&m.client_url));
            }
            Ok(all.then_some(()))
        })
    }

    /// Client URLs of every etcd member.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Number of etcd members.
    pub fn etcd_member_count(&self) -> usize {
        self.etcd.len()
    }

    /// Pid of etcd member `i`, if running.
    pub fn etcd_member_pid(&self, i: usize) -> Option<u32> {
        self.etcd.get(i)?.proc.as_ref().map(Proc::pid)
    }

    /// The etcd member that is the raft leader now (`etcdctl endpoint
    /// status`), if the members agree on one.
    pub fn etcd_leader_member(&self) -> Option<usize> {
        let out = sys::run(
            self.etcdctl()
                .args(["--endpoints", &self.etcd_endpoints().join(",")])
                .args(["endpoint", "status", "-w", "json"]),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.iter().find_map(|e| {
            let st = &e["Status"];
            let me = st["header"]["member_id"].as_u64()?;
            (me == st["leader"].as_u64()?).then_some(())?;
            let ep = e["Endpoint"].as_str()?;
            self.etcd.iter().position(|m| m.client_url == ep)
        })
    }

    fn etcdctl(&self) -> Command {
        let mut cmd = Command::new(self.bins.etcd.with_file_name("etcdctl"));
        cmd.env("ETCDCTL_API", "3");
        cmd
    }

    /// SIGKILLs etcd member `i`.
    pub fn kill_etcd_member(&mut self, i: usize) {
        if let Some(mut p) = self.etcd.get_mut(i).and_then(|m| m.proc.take()) {
            p.kill();
        }
    }

    /// Restarts etcd member `i` from its data directory and waits until the
    /// cluster is healthy again.
    pub fn start_etcd_member(&mut self, i: usize) -> Result<(), String> {
        if i >= self.etcd.len() {
            return Err(format!("no etcd member {i}"));
        }
        if self.etcd[i].proc.as_mut().is_some_and(Proc::alive) {
            return Ok(());
        }
        self.spawn_etcd_member(i)?;
        self.wait_etcd_healthy(Duration::from_secs(30))
    }

    /// Chooses fresh ports for replica `i` and writes its config.
    pub(super) fn write_cp_config(&mut self, i: usize) -> Result<(), String> {
        let grpc = sys::free_port().map_err(|e| e.to_string())?;
        let grpc_endpoint = format!("http://127.0.0.1:{grpc}");
        let (http, ec2_endpoint) = if self.spec.ec2_gateway {
            let p = sys::free_port().map_err(|e| e.to_string())?;
            (
                format!("[http]\nlisten = \"127.0.0.1:{p}\"\n"),
                format!("http://127.0.0.1:{p}"),
            )
        } else {
            (String::new(), String::new())
        };
        let (sock, config, log) = if i == 0 {
            (
                self.dir.join("cp.sock"),
                self.dir.join("control-plane.toml"),
                self.log("control-plane"),
            )
        } else {
            (
                self.dir.join(format!("cp{i}.sock")),
                self.dir.join(format!("control-plane-{i}.toml")),
                self.log(&format!("control-plane-{i}")),
            )
        };
        let mut zones: Vec<String> = self.spec.agents.iter().map(|a| a.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let zones: Vec<String> = zones.iter().map(|z| format!("{z:?}")).collect();
        let etcd: Vec<String> = self
            .etcd_endpoints()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        // Access-key secrets sealed at rest, as the quickstart and install.sh
        // set it up (one key for every replica).
        let secrets_key = self.dir.join("secrets.key");
        if !secrets_key.exists() {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&secrets_key)
                .map_err(|e| e.to_string())?;
            let mut key = [0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?,
                &mut key,
            )
            .map_err(|e| e.to_string())?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            std::io::Write::write_all(&mut f, hex.as_bytes()).map_err(|e| e.to_string())?;
        }
        let text = format!(
            "region = {region:?}\n\
             zones = [{zones}]\n\n\
             [etcd]\nendpoints = [{etcd}]\nprefix = {prefix:?}\n\n\
             [grpc]\nlisten = \"127.0.0.1:{grpc}\"\nunix_socket = {sock:?}\n\n\
             {http}\n\
             [network]\ncidr = \"10.200.0.0/16\"\nnode_prefix_len = 24\n\n\
             [nodes]\nlease_ttl_seconds = {ttl}\nheartbeat_interval_seconds = {hb}\n\n\
             [reconciler]\ninterval_seconds = 1\nelection_ttl_seconds = 3\n\n\
             [instance_types]\nseed = \"compact\"\n\n\
             [vpc]\npublic_pool = {pool:?}\n\n\
             [billing.prices]\n\"t3.nano\" = \"0.0052\"\n\n\
             [auth]\nadmin_access_key_id = {ak:?}\nadmin_secret_access_key = {sk:?}\n\
             enrolment_tokens = [{{ id = {eid:?}, secret = {esec:?} }}]\n\
             secrets_key_file = {skf:?}\n",
            skf = secrets_key.display().to_string(),
            pool = super::fabric::PUBLIC_POOL,
            region = self.spec.region,
            zones = zones.join(", "),
            etcd = etcd.join(", "),
            prefix = self.etcd_prefix,
            sock = sock.display().to_string(),
            ttl = self.spec.lease_ttl_seconds,
            hb = self.spec.heartbeat_interval_seconds,
            ak = self.admin.access_key_id,
            sk = self.admin.secret,
            eid = super::ENROL_ID,
            esec = self.enrol_secret(),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let r = Replica {
            grpc_endpoint,
            ec2_endpoint,
            unix_socket: sock,
            config,
            log,
            proc: None,
        };
        match self.replicas.get_mut(i) {
            Some(slot) => {
                if let Some(mut p) = slot.proc.take() {
                    p.kill();
                }
                *slot = r;
            }
            None => self.replicas.push(r),
        }
        if i == 0 {
            self.grpc_endpoint = self.replicas[0].grpc_endpoint.clone();
            self.ec2_endpoint = self.replicas[0].ec2_endpoint.clone();
            self.unix_socket = self.replicas[0].unix_socket.clone();
        }
        Ok(())
    }

    /// Writes replica `i`'s config and starts it; a start whose process
    /// exits (another test took a port picked free) is retried with fresh
    /// ports.
    pub(super) fn add_replica(&mut self, i: usize) -> Result<(), String> {
        for attempt in 0..3 {
            self.write_cp_config(i)?;
            match self.start_replica(i) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 2 && e.contains(CP_EXITED) => {
                    eprintln!("control plane {i} did not start (attempt {attempt}), retrying with fresh ports:\n{e}");
                }
                Err(e) => return Err(e),
            }
        }
        Err(format!("control plane {i} did not start"))
    }

    /// Starts replica `i` (again, after [`Cluster::kill_replica`]) and waits
    /// until it listens on TCP and its Unix socket.
    pub fn start_replica(&mut self, i: usize) -> Result<(), String> {
        let bin = self.bins.control_plane.clone();
        let r = self
            .replicas
            .get_mut(i)
            .ok_or_else(|| format!("no control-plane replica {i}"))?;
        if r.proc.as_mut().is_some_and(Proc::alive) {
            return Ok(());
        }
        let _ = std::fs::remove_file(&r.unix_socket);
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&r.config);
        cmd.env(
            "RUST_LOG",
            std::env::var("NUBIS_TEST_LOG").unwrap_or("info".into()),
        );
        let mut p =
            Proc::spawn(&format!("control-plane-{i}"), cmd, &r.log).map_err(|e| e.to_string())?;
        let port = port_of(&r.grpc_endpoint);
        let sock = r.unix_socket.clone();
        // Some(true): listening; Some(false): the process exited (no point
        // waiting for the timeout).
        let res = wait_until(START_TIMEOUT, "the control plane to listen", || {
            if !p.alive() {
                return Ok(Some(false));
            }
            Ok((port_open(port) && sock.exists()).then_some(true))
        });
        let res = match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(CP_EXITED.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            return Err(format!("{e}\n--- control-plane log:\n{}", p.log_tail(30)));
        }
        r.proc = Some(p);
        Ok(())
    }

    /// SIGKILLs replica `i`.
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(mut p) = self.replicas.get_mut(i).and_then(|r| r.proc.take()) {
            p.kill();
        }
    }

    /// Pid of replica `i`, if running.
    pub fn replica_pid(&self, i: usize) -> Option<u32> {
        self.replicas.get(i)?.proc.as_ref().map(Proc::pid)
    }

    /// Number of control-plane replicas.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// gRPC endpoints of every replica, in order.
    pub fn grpc_endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| r.grpc_endpoint.clone())
            .collect()
    }

    /// Node API endpoints agents are given: every replica's Unix socket.
    pub(super) fn agent_endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| format!("unix://{}", r.unix_socket.display()))
            .collect()
    }

    /// The replica that currently leads the singleton tasks: the holder of
    /// the election key (`…/election/…`) with the lowest create revision (its value is
    /// `<pid>-<random>`), matched to a replica by pid. Read with `etcdctl`;
    /// `Ok(None)` while nobody (or no running replica) leads.
    pub fn leader_replica(&self) -> Result<Option<usize>, String> {
        // Keys and values alternate, one line each (values are single-line
        // JSON or election identities); the election lives under a versioned
        // sub-prefix, so look for `/election/` in the key.
        let mut cmd = self.etcdctl();
        cmd.args(["--endpoints", &self.etcd_endpoints().join(",")])
            .args(["get", "--prefix", &format!("{}/", self.etcd_prefix)])
            .args(["--sort-by=CREATE", "--order=ASCEND"]);
        let out = sys::run(&mut cmd)?;
        let lines: Vec<&str> = out.lines().collect();
        let Some(first) = lines
            .chunks(2)
            .find(|kv| kv.len() == 2 && kv[0].contains("/election/"))
            .map(|kv| kv[1])
        else {
            return Ok(None);
        };
        let pid: Option<u32> = first.split('-').next().and_then(|p| p.trim().parse().ok());
        let Some(pid) = pid else {
            return Err(format!("unexpected election value {first:?}"));
        };
        match (0..self.replicas.len()).find(|&i| self.replica_pid(i) == Some(pid)) {
            Some(i) => Ok(Some(i)),
            None => Err(format!("the leader {first:?} is no running replica")),
        }
    }

    /// Waits until some running replica leads; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize, String> {
        wait_until(timeout, "a control-plane leader", || self.leader_replica())
    }

    /// The last lines of replica `i`'s log.
    pub fn replica_log(&self, i: usize) -> String {
        self.replicas
            .get(i)
            .map(|r| sys::tail(&r.log, 40))
            .unwrap_or_default()
    }

    /// Kills every replica and etcd member (teardown).
    pub(super) fn kill_replicas_and_etcd(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill_replica(i);
        }
        for i in 0..self.etcd.len() {
            self.kill_etcd_member(i);
        }
    }
}
