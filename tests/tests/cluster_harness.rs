//! The cluster harness itself: a cluster torn down by a panic leaves nothing
//! behind (processes, VMMs, namespaces, cgroups, state), and
//! `nubis-testcluster up --json` serves a usable cluster until SIGTERM, then
//! removes it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nubis_tests::cluster::{self, sys, AgentSpec, Cluster, ClusterSpec};

fn one_host() -> ClusterSpec {
    ClusterSpec {
        agents: vec![AgentSpec {
            zone: cluster::zone('a'),
            vcpus: 1,
            memory_mib: 128,
        }],
        ..ClusterSpec::three_zones(1)
    }
}

fn gone(pid: u32) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while sys::pid_alive(pid) {
        // A zombie of ours is reaped by its parent; wait for that.
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn panic_tears_everything_down() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(one_host()).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 1, None);
    c.wait_state(&t, &ids, "running");
    let vmm = c.vmm_pid(&ids[0]).expect("VMM pid") as u32;
    let cp = c.control_plane_pid().unwrap();
    let netns = c.netns(0).to_string();
    let dir = c.dir.clone();
    let cgroup = sys::cgroup2_mount().map(|m| m.join(&c.id));
    assert!(Path::new("/run/netns").join(&netns).exists());
    assert!(sys::pid_alive(vmm) && sys::pid_alive(cp));

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _c = c;
        panic!("simulated test failure");
    }));
    assert!(result.is_err());

    assert!(gone(vmm), "VMM {vmm} survived teardown");
    assert!(gone(cp), "control plane {cp} survived teardown");
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} left"
    );
    assert!(!dir.exists(), "{} left", dir.display());
    if let Some(cg) = cgroup {
        assert!(!cg.exists(), "{} left", cg.display());
    }
}

#[test]
fn testcluster_binary_serves_until_sigterm() {
    if !cluster::prerequisites_met() {
        return;
    }
    let bin = cluster::bin_dir().join("nubis-testcluster");
    assert!(bin.is_file(), "{} missing", bin.display());
    let mut child = Command::new(&bin)
        .args(["up", "--json", "--per-host", "1", "--no-ec2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed on every path out of this test.
    struct Guard(Option<std::process::Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                sys::signal(c.id() as i32, libc::SIGTERM);
                let _ = c.wait();
            }
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut guard = Guard(Some(child));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let hosts = v["hosts"].as_array().unwrap().clone();
    assert_eq!(hosts.len(), 3);

    let out = Command::new(cluster::bin_dir().join("nubis"))
        .args(["zones", "list", "-o", "json"])
        .env("NUBIS_CONFIG", "/nonexistent/nubis.toml")
        .env("NUBIS_ENDPOINT", v["grpc_endpoint"].as_str().unwrap())
        .env(
            "NUBIS_ACCESS_KEY_ID",
            v["tenant"]["access_key_id"].as_str().unwrap(),
        )
        .env(
            "NUBIS_SECRET_ACCESS_KEY",
            v["tenant"]["secret_access_key"].as_str().unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zones: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(zones["availability_zones"].as_array().unwrap().len(), 3);

    let mut child = guard.0.take().unwrap();
    sys::signal(child.id() as i32, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "nubis-testcluster exited {status}");
    for h in hosts {
        let ns = h["netns"].as_str().unwrap();
        assert!(!Path::new("/run/netns").join(ns).exists(), "{ns} left");
    }
    assert!(!Path::new(v["state_dir"].as_str().unwrap()).exists());
}
