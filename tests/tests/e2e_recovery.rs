//! End to end: crashes. An agent killed with SIGKILL and restarted finds its
//! VMs still running (they outlive it) and reports them right, without
//! restarting or duplicating them. A control plane killed with SIGKILL and
//! restarted recovers the API and every instance's state from etcd.

use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

#[test]
fn agent_kill9_and_restart_keeps_instances_running() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 3, None);
    let ready = c.wait_state(&t, &ids, "ready");
    let zone_a = cluster::zone('a');
    let victim = ready
        .iter()
        .find(|i| field(i, "availability_zone") == zone_a)
        .unwrap()
        .clone();
    let vid = field(&victim, "instance_id");
    let ip = field(&victim, "private_ip_address");
    let a = c.agent_in_zone(&zone_a).unwrap();

    c.kill_agent(a);
    // The guest keeps serving while its agent is down.
    assert_eq!(c.wait_http(&zone_a, &ip), format!("NUBIS-HELLO {vid}\n"));
    c.start_agent(a).unwrap();
    c.wait_nodes_ready(3, Duration::from_secs(60)).unwrap();

    // Reported right: still running, nothing restarted, nothing duplicated.
    let now = c.wait_state(&t, &ids, "ready");
    assert!(
        now.iter().all(|i| field(i, "state") == "running"),
        "{now:?}"
    );
    assert_eq!(c.list_instances(&t, &[]).len(), 3);
    let console = c.console(&t, &vid);
    assert_eq!(
        console.matches(&format!("NUBIS-GUEST-READY {vid}")).count(),
        1,
        "the VM was restarted:\n{console}"
    );
    assert_eq!(c.wait_http(&zone_a, &ip), format!("NUBIS-HELLO {vid}\n"));
    // The restarted agent still manages it: stop works.
    let out = c.tenant_cli(&["instances", "stop", &vid, "--wait", "--timeout", "120s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn control_plane_kill9_and_restart_recovers() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 3, None);
    let before = c.wait_state(&t, &ids, "ready");

    c.kill_control_plane();
    let out = c.tenant_cli(&["instances", "list"]);
    assert_eq!(out.code, 4, "API should be unreachable: {}", out.stderr);
    c.start_control_plane().unwrap();

    // The API answers again with the same instances, states and addresses.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let out = c.tenant_cli(&["instances", "list", "-o", "json"]);
        if out.code == 0 {
            break;
        }
        assert!(Instant::now() < end, "API did not recover: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    c.wait_nodes_ready(3, Duration::from_secs(60)).unwrap();
    let after = c.wait_state(&t, &ids, "ready");
    for b in &before {
        let a = after
            .iter()
            .find(|a| a["instance_id"] == b["instance_id"])
            .unwrap();
        for f in [
            "state",
            "availability_zone",
            "private_ip_address",
            "launch_time",
        ] {
            assert_eq!(a[f], b[f], "{f} changed across the restart");
        }
    }
    assert_eq!(
        c.list_instances(&t, &[]).len(),
        3,
        "lost or duplicated instances"
    );

    // And it keeps working: a new launch succeeds and boots.
    let more = c.run_hello(&t, 1, None);
    c.wait_state(&t, &more, "ready");
    assert_eq!(c.list_instances(&t, &[]).len(), 4);
}
