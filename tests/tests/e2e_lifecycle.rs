//! End to end: instance lifecycle. Terminate frees capacity for a launch that
//! needed it.

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

#[test]
fn terminate_frees_capacity() {
    if !cluster::prerequisites_met() {
        return;
    }
    // Room for exactly one t3.nano per host.
    let c = Cluster::start(ClusterSpec::three_zones(1)).unwrap();
    let t = c.tenant.clone().unwrap();
    let zone_c = cluster::zone('c');
    let zone = Some(zone_c.as_str());
    let first = c.run_hello(&t, 1, zone);
    c.wait_state(&t, &first, "running");

    let out = c.try_run_hello(&t, 1, zone, &[]);
    assert_eq!(out.code, 8, "second launch should not fit: {}", out.stderr);
    assert!(
        out.stderr.contains("InsufficientInstanceCapacity"),
        "{}",
        out.stderr
    );

    let out = c.tenant_cli(&["instances", "terminate", &first[0], "--wait", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let states: Vec<String> = c
        .describe_instances(&t, &first)
        .iter()
        .map(|i| field(i, "state"))
        .collect();
    assert!(states.iter().all(|s| s == "terminated"), "{states:?}");

    let second = c.run_hello(&t, 1, zone);
    let ready = c.wait_state(&t, &second, "ready");
    assert_eq!(field(&ready[0], "availability_zone"), zone_c);
}
