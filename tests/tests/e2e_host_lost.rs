//! End to end: a host lost for good (its agent and VMMs killed, its network
//! namespace gone). One node of three is no disruption, so after the node
//! lease expires (and within lease TTL + the leader's grace) its instances
//! leave `running` with a reason; the other zones are unaffected.

use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

#[test]
fn lost_host_fails_its_instances_only() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(2);
    spec.lease_ttl_seconds = 3;
    spec.heartbeat_interval_seconds = 1;
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 3, None);
    c.wait_state(&t, &ids, "ready");

    let lost_zone_name = cluster::zone('c');
    let lost_zone = lost_zone_name.as_str();
    let a = c.agent_in_zone(lost_zone).unwrap();
    c.kill_agent(a);
    let ns = c.netns(a).to_string();
    cluster::sys::netns_delete(&ns); // its VMMs die with the namespace
    let killed_at = Instant::now();

    // Coarse guard: the lease is 3 s; allow far more on a loaded machine.
    let end = killed_at + Duration::from_secs(90);
    let failed = loop {
        let all = c.describe_instances(&t, &ids);
        let lost = all
            .iter()
            .find(|i| field(i, "availability_zone") == lost_zone)
            .unwrap()
            .clone();
        if field(&lost, "state") != "running" && field(&lost, "state") != "pending" {
            break lost;
        }
        assert!(
            Instant::now() < end,
            "instance on the lost host still {lost}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        !field(&failed, "state_reason_code").is_empty(),
        "no reason given: {failed}"
    );
    // Lease TTL 3 s + grace (3 s + 1 s heartbeat), plus slack for a loaded
    // machine.
    assert!(
        killed_at.elapsed() < Duration::from_secs(3 + 4 + 15),
        "noticed after {:?}",
        killed_at.elapsed()
    );
    eprintln!(
        "lost host noticed after {:?}: {} {} ({})",
        killed_at.elapsed(),
        field(&failed, "state"),
        field(&failed, "state_reason_code"),
        field(&failed, "state_reason_message")
    );
    let nodes = c.nodes().unwrap();
    let lost_node = nodes
        .iter()
        .find(|n| n["availability_zone"] == lost_zone)
        .unwrap();
    assert_eq!(lost_node["state"], "lost", "{lost_node}");

    // The others are untouched and still serve.
    for inst in c.describe_instances(&t, &ids) {
        let zone = field(&inst, "availability_zone");
        if zone == lost_zone {
            continue;
        }
        assert_eq!(field(&inst, "state"), "running", "{inst}");
        let id = field(&inst, "instance_id");
        assert_eq!(
            c.wait_http(&zone, &field(&inst, "private_ip_address")),
            format!("NUBIS-HELLO {id}\n")
        );
    }
    // New launches avoid the lost zone's host.
    let out = c.try_run_hello(&t, 1, Some(lost_zone), &[]);
    assert_ne!(out.code, 0, "a launch into a zone without hosts succeeded");
}
