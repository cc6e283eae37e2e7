//! End to end: a control-plane outage never stops a running instance
//! (issue 18). A `kill -9` of the only replica followed by an immediate
//! restart, and an outage longer than the node lease TTL (every node lease
//! expires while nobody renews it), both leave every instance `running`
//! with the same VMM process: the agents keep their VMs and re-register,
//! and the new leader's node-loss task waits a grace period and then sees
//! the nodes alive again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec, Creds};

fn pids(c: &Cluster, ids: &[String]) -> BTreeMap<String, u64> {
    ids.iter()
        .map(|id| {
            (
                id.clone(),
                c.vmm_pid(id).expect("vmm.json of a running instance"),
            )
        })
        .collect()
}

/// Every instance stays `running` with its VMM pid for `watch`.
fn assert_untouched(
    c: &Cluster,
    t: &Creds,
    ids: &[String],
    before: &BTreeMap<String, u64>,
    watch: Duration,
) {
    let end = Instant::now() + watch;
    while Instant::now() < end {
        for inst in c.describe_instances(t, ids) {
            assert_eq!(
                field(&inst, "state"),
                "running",
                "an instance left running: {inst}\n--- control-plane log:\n{}",
                c.control_plane_log()
            );
        }
        assert_eq!(&pids(c, ids), before, "a VMM was restarted");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_api(c: &Cluster) {
    let end = Instant::now() + Duration::from_secs(60);
    while c.tenant_cli(&["instances", "list"]).code != 0 {
        assert!(Instant::now() < end, "the API did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn control_plane_restart_and_long_outage_leave_instances_running() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(2);
    spec.lease_ttl_seconds = 4;
    spec.heartbeat_interval_seconds = 1;
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 6, None);
    c.wait_state(&t, &ids, "ready");
    let before = pids(&c, &ids);

    // kill -9 and start again at once.
    c.kill_control_plane();
    c.start_control_plane().unwrap();
    wait_api(&c);
    // Long enough for the new leader's grace (lease TTL + heartbeat) and
    // several node-loss passes.
    assert_untouched(&c, &t, &ids, &before, Duration::from_secs(15));

    // An outage three times the lease TTL: every node lease expires.
    c.kill_control_plane();
    std::thread::sleep(Duration::from_secs(12));
    c.start_control_plane().unwrap();
    wait_api(&c);
    assert_untouched(&c, &t, &ids, &before, Duration::from_secs(20));
    c.wait_nodes_ready(3, Duration::from_secs(60)).unwrap();
}
