//! What end-to-end tests do to a cluster, as a user would with the `nubis`
//! CLI (JSON output), plus the host-side observations a test needs (HTTP from
//! inside a host's namespace, an instance's disk file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{CliOutput, Cluster, Creds};

/// A t3.nano: 1 vCPU, 64 MiB.
pub const SMALL_TYPE: &str = "t3.nano";

/// Generous bound for a hello instance to boot on a loaded machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Fills `dir` (an image directory for a test cluster) with a copy of the
/// hello image and `variant`: the same kernel and manifest with
/// `extra_cmdline` appended to its command line (test modes such as
/// `nubis.burn=1`).
pub fn hello_variant_images(dir: &Path, variant: &str, extra_cmdline: &str) {
    let src = crate::image_dir().join("hello");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).expect("hello manifest"))
            .expect("manifest JSON");
    for (name, extra) in [
        ("hello", String::new()),
        (variant, format!(" {extra_cmdline}")),
    ] {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).expect("image dir");
        std::fs::copy(src.join("kernel"), out.join("kernel")).expect("copy kernel");
        let mut m = manifest.clone();
        m["name"] = json!(name);
        m["cmdline"] = json!(format!("{}{extra}", m["cmdline"].as_str().unwrap_or("")));
        std::fs::write(out.join("manifest.json"), m.to_string()).expect("write manifest");
    }
}

impl Cluster {
    /// `nubis instances run` of `count` hello instances (optionally in a zone);
    /// returns the CLI output (the caller checks success or the error).
    pub fn try_run_hello(
        &self,
        creds: &Creds,
        count: u32,
        zone: Option<&str>,
        extra: &[&str],
    ) -> CliOutput {
        let count = count.to_string();
        let image = self.hello_image.clone().unwrap_or_else(|| "hello".into());
        let mut args = vec![
            "instances",
            "run",
            "--image",
            &image,
            "--type",
            SMALL_TYPE,
            "--count",
            &count,
            "-o",
            "json",
        ];
        if let Some(z) = zone {
            args.extend(["--zone", z]);
        }
        args.extend_from_slice(extra);
        self.cli(creds, &args)
    }

    /// Runs hello instances and returns their ids (panics on failure).
    pub fn run_hello(&self, creds: &Creds, count: u32, zone: Option<&str>) -> Vec<String> {
        let v = self.try_run_hello(creds, count, zone, &[]).json();
        let ids = ids_of(&v);
        assert_eq!(ids.len(), count as usize, "RunInstances returned {v}");
        ids
    }

    /// `nubis instances wait --state STATE`; returns the instances (panics on
    /// failure, with the control-plane log).
    pub fn wait_state(&self, creds: &Creds, ids: &[String], state: &str) -> Vec<Value> {
        let timeout = format!("{}s", BOOT_TIMEOUT.as_secs());
        let mut args = vec!["instances", "wait", "--state", state, "--timeout", &timeout];
        args.extend(ids.iter().map(String::as_str));
        args.extend(["-o", "json"]);
        let out = self.cli(creds, &args);
        assert_eq!(
            out.code,
            0,
            "waiting for {ids:?} to be {state} failed: {}\n--- control-plane log:\n{}",
            out.stderr,
            self.control_plane_log()
        );
        instances_of(&out.json())
    }

    /// `nubis instances describe` (panics on failure).
    pub fn describe_instances(&self, creds: &Creds, ids: &[String]) -> Vec<Value> {
        let mut args = vec!["instances", "describe", "-o", "json"];
        args.extend(ids.iter().map(String::as_str));
        instances_of(&self.cli(creds, &args).json())
    }

    /// `nubis instances list` (panics on failure).
    pub fn list_instances(&self, creds: &Creds, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["instances", "list", "-o", "json"];
        args.extend_from_slice(extra);
        instances_of(&self.cli(creds, &args).json())
    }

    /// The console output of an instance (fresh from its host).
    pub fn console(&self, creds: &Creds, id: &str) -> String {
        let out = self.cli(
            creds,
            &["instances", "console", "--latest", id, "-o", "json"],
        );
        out.json()["output"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the console contains `needle` `times` times; returns it.
    pub fn wait_console(&self, creds: &Creds, id: &str, needle: &str, times: usize) -> String {
        let end = Instant::now() + BOOT_TIMEOUT;
        loop {
            let out = self.cli(
                creds,
                &["instances", "console", "--latest", id, "-o", "json"],
            );
            let text = if out.code == 0 {
                out.json()["output"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            } else {
                String::new()
            };
            if text.matches(needle).count() >= times {
                return text;
            }
            assert!(
                Instant::now() < end,
                "console of {id} never showed {needle:?} x{times}; last: {text}\n{}",
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `GET http://<public address>/` from the edge namespace (the local
    /// cloud's internet; a host cannot reach VPC addresses) for the
    /// harness tenant's instance in `zone` whose private address is `ip`
    /// (its default subnet maps a public address, and the harness opened
    /// TCP 80 on its default group); the body, or the error.
    pub fn http_get(&self, zone: &str, ip: &str) -> Result<String, String> {
        let t = self.tenant.as_ref().ok_or("the cluster has no tenant")?;
        let filter = format!("private-ip-address={ip}");
        let found = self.list_instances(t, &["--filter", &filter]);
        let public = found
            .iter()
            .filter(|i| field(i, "availability_zone") == zone && field(i, "state") != "terminated")
            .map(|i| field(i, "public_ip_address"))
            .find(|p| !p.is_empty())
            .ok_or_else(|| format!("no instance at {ip} in {zone} with a public address (yet)"))?;
        let url = format!("http://{public}/");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.edge_netns(),
                "curl",
                "-sS",
                "--max-time",
                "5",
                &url,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Retries [`Cluster::http_get`] until it answers (a guest's network may
    /// come up a moment after its ready line).
    pub fn wait_http(&self, zone: &str, ip: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match self.http_get(zone, ip) {
                Ok(body) => return body,
                Err(e) => assert!(Instant::now() < end, "http://{ip}/ in {zone}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A file of the instance's directory on whichever host holds it (the
    /// agent's layout: `disk.raw`, `console.log`, `console.log.1` = the
    /// previous boot's console, `vmm.json`).
    pub fn instance_file(&self, id: &str, name: &str) -> Option<PathBuf> {
        instance_file_in(&self.dir, self.agent_count(), id, name)
    }

    /// Launches one hello instance in `zone` with `user_data` (none when
    /// empty) and `extra` CLI arguments; waits until it is running; returns
    /// (id, private address). Panics on failure.
    pub fn launch_hello(
        &self,
        creds: &Creds,
        zone: &str,
        user_data: &str,
        extra: &[&str],
    ) -> (String, String) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut args = extra.to_vec();
        let ud = self.dir.join(format!(
            "user-data-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let ud = ud.display().to_string();
        if !user_data.is_empty() {
            std::fs::write(&ud, user_data).expect("user data");
            args.extend(["--user-data", &ud]);
        }
        let out = self.try_run_hello(creds, 1, Some(zone), &args);
        assert_eq!(out.code, 0, "run: {}", out.stderr);
        let ids = ids_of(&out.json());
        let v = self.wait_state(creds, &ids, "running");
        let ip = field(&v[0], "private_ip_address");
        assert!(!ip.is_empty(), "no address: {v:?}");
        (ids[0].clone(), ip)
    }

    /// The console log file of `id` on its host (read directly: polling it
    /// costs no API call).
    pub fn console_file(&self, id: &str) -> String {
        self.instance_file(id, "console.log")
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Polls the console of `id` until `pred` holds; returns it and how long
    /// it took. Panics after `timeout`, with the tail of the console file.
    pub fn wait_console_until(
        &self,
        creds: &Creds,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let text = self.console(creds, id);
            if pred(&text) {
                return (text, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "{id}: {what} not seen in {timeout:?}; console file tail:\n{}",
                self.console_file(id)
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The instance's root disk file on whichever host holds it.
    pub fn instance_disk(&self, id: &str) -> Option<PathBuf> {
        self.instance_file(id, "disk.raw")
    }

    /// The pid of the instance's VMM process, as its agent recorded it.
    pub fn vmm_pid(&self, id: &str) -> Option<u64> {
        vmm_pid_in(&self.dir, self.agent_count(), id)
    }
}

/// [`Cluster::instance_file`] of a cluster in `dir` with `agents` agents
/// (for threads that do not hold the cluster).
pub fn instance_file_in(dir: &Path, agents: usize, id: &str, name: &str) -> Option<PathBuf> {
    (0..agents)
        .map(|i| {
            dir.join("agents")
                .join(format!("a{i}"))
                .join("state/instances")
                .join(id)
                .join(name)
        })
        .find(|p| p.is_file())
}

/// [`Cluster::vmm_pid`] of a cluster in `dir` with `agents` agents.
pub fn vmm_pid_in(dir: &Path, agents: usize, id: &str) -> Option<u64> {
    let text = std::fs::read_to_string(instance_file_in(dir, agents, id, "vmm.json")?).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["pid"].as_u64()
}

/// Instance records of a `{"instances": [...]}` answer.
pub fn instances_of(v: &Value) -> Vec<Value> {
    v["instances"].as_array().cloned().unwrap_or_default()
}

/// Instance ids of a `{"instances": [...]}` answer.
pub fn ids_of(v: &Value) -> Vec<String> {
    instances_of(v)
        .iter()
        .filter_map(|i| i["instance_id"].as_str().map(str::to_string))
        .collect()
}

/// A string field of a record.
pub fn field(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap_or_default().to_string()
}
