//! End to end: an instance whose assignment record in etcd does not decode
//! (corrupt, or written by something this control plane cannot read) keeps
//! running. The control plane logs the key and tells the agent to keep the
//! instance as it is — both for a changed record (live event) and in the
//! snapshot a restarted agent gets — instead of leaving it out, which made
//! the agent terminate it as an orphan. A readable record puts it back under
//! normal control.

use std::process::Command;
use std::time::{Duration, Instant};

use nubis_tests::cluster::{self, Cluster, ClusterSpec};

fn etcdctl(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&c.etcd_endpoint)
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VMM process is alive and is still the same one for `dur`.
fn stays_running(c: &Cluster, id: &str, pid: u64, dur: Duration) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        assert_eq!(c.vmm_pid(id), Some(pid), "the VMM of {id} changed or went");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the VMM of {id} (pid {pid}) is gone; agent log:\n{}",
            c.agent_log(0)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_log(what: &str, needle: &str, log: impl Fn() -> String) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let l = log();
        if l.contains(needle) {
            return;
        }
        assert!(Instant::now() < end, "{what} log lacks {needle:?}:\n{l}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn corrupt_assignment_keeps_the_vm_running() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(2);
    spec.agents.truncate(1);
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 1, None);
    let id = ids[0].clone();
    c.wait_state(&t, &ids, "ready");
    let pid = c.vmm_pid(&id).expect("vmm.json of a running instance");

    let keys = etcdctl(&c, &["get", "--prefix", "--keys-only", &c.etcd_prefix]);
    let key = keys
        .lines()
        .find(|k| k.contains("/desired/") && k.ends_with(&format!("/a/{id}")))
        .unwrap_or_else(|| panic!("no assignment key for {id} in:\n{keys}"))
        .to_string();
    let good = etcdctl(&c, &["get", "--print-value-only", &key]);
    let good = good.trim_end().to_string();

    // A changed record that does not decode: a live event.
    etcdctl(&c, &["put", &key, "{\"instance_id\": 42, truncated"]);
    wait_log("control plane", &key, || c.control_plane_log());
    wait_log("agent", "keeping the instance as it is", || c.agent_log(0));
    stays_running(&c, &id, pid, Duration::from_secs(6));

    // A restarted agent: the snapshot lists the instance as undecodable.
    c.kill_agent(0);
    c.start_agent(0).unwrap();
    wait_log("agent", "kept=1", || c.agent_log(0));
    stays_running(&c, &id, pid, Duration::from_secs(8));

    // A readable record again: back under control, still the same VM.
    etcdctl(&c, &["put", &key, &good]);
    c.wait_state(&t, &ids, "ready");
    stays_running(&c, &id, pid, Duration::from_secs(3));
    let out = c.tenant_cli(&["instances", "terminate", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.wait_state(&t, &ids, "terminated");
}
