//! End to end: placement across availability zones. Three hello instances
//! without a zone land one per zone; with a zone they all land there. Every one
//! reaches `running` and its ready line, its console shows it, and its HTTP
//! answer (fetched inside its host's network namespace) names its id.

use std::collections::BTreeSet;

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

fn check_booted(c: &Cluster, inst: &serde_json::Value) {
    let t = c.tenant.clone().expect("tenant");
    let id = field(inst, "instance_id");
    assert_eq!(field(inst, "state"), "running", "{inst}");
    let console = c.console(&t, &id);
    assert!(
        console.contains(&format!("NUBIS-GUEST-READY {id}")),
        "console of {id} lacks its ready line:\n{console}"
    );
    let ip = field(inst, "private_ip_address");
    assert!(!ip.is_empty(), "{id} has no private address: {inst}");
    let body = c.wait_http(&field(inst, "availability_zone"), &ip);
    assert_eq!(body, format!("NUBIS-HELLO {id}\n"));
}

#[test]
fn three_instances_spread_over_zones_then_pinned_to_one() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(ClusterSpec::three_zones(4)).unwrap();
    let t = c.tenant.clone().unwrap();

    let ids = c.run_hello(&t, 3, None);
    let ready = c.wait_state(&t, &ids, "ready");
    assert_eq!(ready.len(), 3);
    let zones: BTreeSet<String> = ready
        .iter()
        .map(|i| field(i, "availability_zone"))
        .collect();
    let all: BTreeSet<String> = cluster::zones().into_iter().collect();
    assert_eq!(zones, all, "not one per zone: {ready:?}");
    for inst in &ready {
        check_booted(&c, inst);
    }

    let zone_b = cluster::zone('b');
    let pinned = c.run_hello(&t, 3, Some(&zone_b));
    let ready = c.wait_state(&t, &pinned, "ready");
    assert_eq!(ready.len(), 3);
    for inst in &ready {
        assert_eq!(field(inst, "availability_zone"), zone_b, "{inst}");
        check_booted(&c, inst);
    }
    // Distinct addresses within the zone's host.
    let ips: BTreeSet<String> = ready
        .iter()
        .map(|i| field(i, "private_ip_address"))
        .collect();
    assert_eq!(ips.len(), 3);
    // The tenant sees exactly the six it launched.
    assert_eq!(c.list_instances(&t, &[]).len(), 6);
}
