//! End to end: metering survives `kill -9` of the control plane (issue 15).
//! Hello instances run, are stopped (the control plane is killed with
//! SIGKILL right after the stop request, while the stops are being carried
//! out, and restarted), started again (killed and restarted again while
//! they run) and terminated. Then each instance's events form one complete
//! chain (no lost, no doubled event), it has exactly two billed runs, and
//! `nubis billing usage` bills exactly the seconds the ledger rules give
//! for those events (running only, whole seconds, 60 s minimum per start),
//! at the configured price; the month's invoice equals their exact sum.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nubis_tests::cluster::{self, Cluster, ClusterSpec};
use serde_json::Value;

fn wait_api(c: &Cluster) {
    let end = Instant::now() + Duration::from_secs(60);
    while c.tenant_cli(&["instances", "list"]).code != 0 {
        assert!(Instant::now() < end, "the API did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill_and_restart(c: &mut Cluster) {
    c.kill_control_plane();
    c.start_control_plane().unwrap();
    wait_api(c);
}

fn ok(c: &Cluster, args: &[&str]) -> Value {
    let out = c.tenant_cli(args);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.json()
}

/// Billed seconds per instance by the ledger's rules, from the events as
/// the API returns them; checks each chain is whole (seq 0..n, each old
/// state the previous new state) and returns the runs per instance too.
fn expected(events: &[Value]) -> BTreeMap<String, (usize, i64)> {
    let mut per: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in events {
        per.entry(e["instance_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    let mut out = BTreeMap::new();
    for (id, mut evs) in per {
        evs.sort_by_key(|e| e["seq"].as_u64().unwrap());
        let mut runs = 0;
        let mut secs = 0;
        let mut open: Option<i64> = None;
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(e["seq"].as_u64(), Some(n as u64), "{id}: gap or double");
            if n > 0 {
                assert_eq!(e["old_state"], evs[n - 1]["new_state"], "{id}: chain");
            }
            let t = e["time_ms"].as_i64().unwrap().div_euclid(1000);
            match (open, e["new_state"] == "running") {
                (None, true) => open = Some(t),
                (Some(s), false) => {
                    runs += 1;
                    secs += (t.max(s) - s).max(60);
                    open = None;
                }
                _ => {}
            }
        }
        assert_eq!(open, None, "{id}: still running");
        out.insert(id, (runs, secs));
    }
    out
}

#[test]
fn kill_9_of_the_control_plane_loses_and_doubles_no_usage() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 3, None);
    c.wait_state(&t, &ids, "running");
    std::thread::sleep(Duration::from_secs(2));

    // Stop, and kill -9 while the stops are carried out.
    let mut args = vec!["instances", "stop"];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(c.tenant_cli(&args).code, 0);
    kill_and_restart(&mut c);
    c.wait_state(&t, &ids, "stopped");

    let mut args = vec!["instances", "start"];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(c.tenant_cli(&args).code, 0);
    c.wait_state(&t, &ids, "running");
    kill_and_restart(&mut c);
    std::thread::sleep(Duration::from_secs(2));
    let mut args = vec!["instances", "terminate"];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(c.tenant_cli(&args).code, 0);
    c.wait_state(&t, &ids, "terminated");

    let events = ok(&c, &["events", "list", "--from", "-1h", "-o", "json"]);
    let events = events["events"].as_array().unwrap().clone();
    let want = expected(&events);
    assert_eq!(want.len(), ids.len());
    for id in &ids {
        assert_eq!(
            want[id].0, 2,
            "{id}: one run per start, none lost or doubled"
        );
    }

    let usage = ok(&c, &["billing", "usage", "--from", "-1h", "-o", "json"]);
    let lines = usage["lines"].as_array().unwrap();
    assert_eq!(lines.len(), ids.len(), "{usage}");
    let mut total = 0;
    for l in lines {
        let id = l["instance_id"].as_str().unwrap();
        assert_eq!(l["seconds"].as_i64(), Some(want[id].1), "{id}: {usage}");
        assert_eq!(l["unit_price"], "0.005200000");
        total += want[id].1;
    }
    assert_eq!(usage["total_seconds"].as_i64(), Some(total));
    // 0.0052/h = 5,200,000 nano-units per hour: the exact total, rounded once.
    let nanos = (total as u128 * 5_200_000 + 1800) / 3600;
    let total_text = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
    assert_eq!(usage["total"], total_text.as_str(), "{usage}");

    // The operator's view of all accounts has the same usage.
    let all = c.admin_cli(&[
        "billing",
        "usage",
        "--from",
        "-1h",
        "--all-accounts",
        "-o",
        "json",
    ]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(all.json()["total_seconds"].as_i64(), Some(total));
}
