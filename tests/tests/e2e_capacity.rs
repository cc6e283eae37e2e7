//! End to end: a launch larger than the free capacity fails with
//! InsufficientInstanceCapacity and creates nothing (all or nothing), both
//! across zones and within one zone; nothing is left allocated.

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

#[test]
fn over_capacity_launch_fails_and_creates_nothing() {
    if !cluster::prerequisites_met() {
        return;
    }
    // 2 x t3.nano per host, 6 in the region.
    let c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();

    let out = c.try_run_hello(&t, 7, None, &[]);
    assert_eq!(
        out.code, 8,
        "7 > 6 should fail: {}\n{}",
        out.stderr, out.stdout
    );
    assert!(
        out.stderr.contains("InsufficientInstanceCapacity"),
        "{}",
        out.stderr
    );
    assert!(
        c.list_instances(&t, &[]).is_empty(),
        "a failed launch left instances"
    );

    let out = c.try_run_hello(&t, 3, Some(&cluster::zone('a')), &[]);
    assert_eq!(out.code, 8, "3 > 2 in one zone should fail: {}", out.stderr);
    assert!(
        c.list_instances(&t, &[]).is_empty(),
        "a failed launch left instances"
    );

    // Nothing stays allocated: the whole region still fits six.
    for n in c.nodes().unwrap() {
        assert_eq!(n["allocated"]["memory_mib"], 0, "leaked allocation: {n}");
    }
    let ids = c.run_hello(&t, 6, None);
    let ready = c.wait_state(&t, &ids, "running");
    assert_eq!(ready.len(), 6);
    for z in cluster::zones() {
        let n = ready
            .iter()
            .filter(|i| field(i, "availability_zone") == z)
            .count();
        assert_eq!(n, 2, "zone {z}: {ready:?}");
    }
    // And now one more does not fit anywhere.
    let out = c.try_run_hello(&t, 1, None, &[]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert_eq!(c.list_instances(&t, &[]).len(), 6);
}
