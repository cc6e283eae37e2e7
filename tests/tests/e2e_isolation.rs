//! End to end: tenant isolation. A second account sees none of the first
//! one's instances and can neither describe, stop nor terminate them. Also
//! exercises `run --wait` and its progress output as a user sees it.

use nubis_tests::cluster::ops::{field, ids_of};
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

#[test]
fn second_account_cannot_see_or_touch_first_ones_instances() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let a = c.tenant.clone().unwrap();
    let image = c.hello_image.clone().unwrap();
    let out = c.cli(
        &a,
        &[
            "instances",
            "run",
            "--image",
            &image,
            "--type",
            "t3.nano",
            "--count",
            "2",
            "--tag",
            "owner=a",
            "--wait",
            "--timeout",
            "120s",
            "-o",
            "json",
        ],
    );
    let v = out.json();
    let ids = ids_of(&v);
    assert_eq!(ids.len(), 2);
    for i in v["instances"].as_array().unwrap() {
        assert_eq!(field(i, "state"), "running", "{i}");
        assert_eq!(i["tags"]["owner"], "a");
    }
    // Progress went to stderr, a line per state change, ending in "ready".
    assert!(out.stderr.contains("-> ready"), "{}", out.stderr);
    assert!(out.stderr.contains("2 instance(s) ready"), "{}", out.stderr);

    let (b, _) = c.create_account("tenant-2").unwrap();
    assert!(
        c.cli(&b, &["instances", "list", "-o", "json"]).json()["instances"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = c.cli(&b, &["instances", "describe", &ids[0]]);
    assert_eq!(
        out.code, 6,
        "describe of another account's instance: {}",
        out.stderr
    );
    for verb in ["stop", "terminate", "reboot"] {
        let out = c.cli(&b, &["instances", verb, &ids[0]]);
        assert!(
            out.code == 6 || out.code == 5,
            "{verb} by another account exited {}: {}",
            out.code,
            out.stderr
        );
    }
    let out = c.cli(&b, &["instances", "console", &ids[0]]);
    assert!(out.code == 6 || out.code == 5, "{}", out.stderr);
    // A's instances are untouched.
    for i in c.describe_instances(&a, &ids) {
        assert_eq!(field(&i, "state"), "running", "{i}");
    }
    assert_eq!(c.list_instances(&a, &[]).len(), 2);
}
