//! End to end: Auto Scaling drills with real agents and hello guests, driven
//! through `nubis autoscaling` (issue 14).
//!
//! - Host loss: a group of 3 over three zones; one host is lost (its agent
//!   and VMMs killed, its lease left to expire). Within 30 s of the node
//!   being declared lost the group has 3 instances running again, in the
//!   other zones; when the host returns, the zones rebalance to one each.
//! - Controller kill -9: a scale-out 0 -> 20 with the (only) control plane
//!   killed with SIGKILL as soon as the first instances exist, then
//!   restarted. The group ends with exactly 20 running instances and no
//!   instance of it was ever launched twice (ClientTokens).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec, Creds};
use serde_json::Value;

/// `nubis autoscaling ARGS -o json` (panics on failure).
fn asg(c: &Cluster, t: &Creds, args: &[&str]) -> Value {
    let mut all = vec!["autoscaling"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    c.cli(t, &all).json()
}

/// The group, or None once it is gone.
fn group(c: &Cluster, t: &Creds, name: &str) -> Option<Value> {
    let v = asg(c, t, &["list", name]);
    v["groups"].as_array()?.first().cloned()
}

/// The group's instances that are InService, healthy and running.
fn running(g: &Value) -> Vec<Value> {
    g["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| {
                    i["lifecycle_state"] == "InService"
                        && i["health_status"] == "HEALTHY"
                        && i["state"] == "running"
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Instances of the group not terminated (in any other state).
fn live(g: &Value) -> usize {
    g["instances"]
        .as_array()
        .map(|a| a.iter().filter(|i| i["state"] != "terminated").count())
        .unwrap_or(0)
}

fn per_zone(list: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in list {
        *m.entry(field(i, "availability_zone")).or_default() += 1;
    }
    m
}

/// Polls the group until `ok` holds for it; panics after `timeout`.
fn wait_group(
    c: &Cluster,
    t: &Creds,
    name: &str,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + timeout;
    loop {
        let g = group(c, t, name).unwrap_or(Value::Null);
        if ok(&g) {
            return g;
        }
        assert!(
            Instant::now() < end,
            "group {name}: not {what} after {timeout:?}: {} running {:?}, {} live\nactivities: {}",
            running(&g).len(),
            per_zone(&running(&g)),
            live(&g),
            asg(c, t, &["activities", name])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Exactly `n` running, nothing else live, `each` per zone of `zones`.
fn settled(g: &Value, n: usize, zones: &[String], each: Option<usize>) -> bool {
    let r = running(g);
    let m = per_zone(&r);
    r.len() == n
        && live(g) == n
        && m.keys().all(|z| zones.contains(z))
        && each.is_none_or(|k| zones.iter().all(|z| m.get(z).copied().unwrap_or(0) == k))
}

fn template(c: &Cluster, t: &Creds) {
    let image = c.hello_image.clone().unwrap_or_default();
    let v = asg(
        c,
        t,
        &[
            "create-launch-template",
            "web",
            "--image",
            &image,
            "--type",
            cluster::ops::SMALL_TYPE,
        ],
    );
    assert!(field(&v, "launch_template_id").starts_with("lt-"), "{v}");
}

fn kill9(pid: u64, what: &str) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid this test's cluster started.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    eprintln!("kill -9 {what} (pid {pid}): {r}");
}

#[test]
fn a_lost_host_is_replaced_in_the_other_zones_and_rebalanced_on_return() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(3);
    spec.lease_ttl_seconds = 3;
    spec.heartbeat_interval_seconds = 1;
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let zones = cluster::zones();
    template(&c, &t);
    let mut args = vec![
        "create",
        "drill",
        "--launch-template",
        "web",
        "--min",
        "0",
        "--max",
        "6",
        "--desired",
        "3",
        "--grace-period",
        "0",
        "--wait",
        "--timeout",
        "140s",
    ];
    for z in &zones {
        args.extend(["--zone", z.as_str()]);
    }
    let g = asg(&c, &t, &args);
    assert_eq!(g["desired_capacity"], 3, "{g}");
    let g = wait_group(
        &c,
        &t,
        "drill",
        Duration::from_secs(60),
        "1 per zone",
        |g| settled(g, 3, &zones, Some(1)),
    );

    // Lose the host of zone c: agent and VMMs killed, the lease expires.
    let lost_zone = cluster::zone('c');
    let a = c.agent_in_zone(&lost_zone).unwrap();
    let victims: Vec<String> = running(&g)
        .iter()
        .filter(|i| field(i, "availability_zone") == lost_zone)
        .map(|i| field(i, "instance_id"))
        .collect();
    assert_eq!(victims.len(), 1, "{g}");
    c.kill_agent(a);
    for id in &victims {
        if let Some(pid) = c.vmm_pid(id) {
            kill9(pid, &format!("VMM of {id}"));
        }
    }
    let killed = Instant::now();
    let lost_at = loop {
        let nodes = c.nodes().unwrap();
        if nodes
            .iter()
            .any(|n| n["availability_zone"] == lost_zone.as_str() && n["state"] == "lost")
        {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "node never declared lost: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("node declared lost {:?} after the kill", lost_at - killed);
    let others: Vec<String> = zones.iter().filter(|z| **z != lost_zone).cloned().collect();
    let g = wait_group(
        &c,
        &t,
        "drill",
        Duration::from_secs(90),
        "3 running in the other zones",
        |g| settled(g, 3, &others, None),
    );
    let restored = lost_at.elapsed();
    eprintln!(
        "AUTOSCALING host loss: capacity restored {restored:?} after the node was declared lost ({:?} after the kill); spread {:?}",
        killed.elapsed(),
        per_zone(&running(&g))
    );
    assert!(
        restored <= Duration::from_secs(30),
        "capacity restored only {restored:?} after the node was declared lost"
    );
    for id in &victims {
        assert!(
            running(&g).iter().all(|i| field(i, "instance_id") != *id),
            "{id} still counted: {g}"
        );
    }

    // The host returns: the zones rebalance to one each.
    c.start_agent(a).unwrap();
    c.wait_nodes_ready(3, Duration::from_secs(60)).unwrap();
    let back = Instant::now();
    let g = wait_group(
        &c,
        &t,
        "drill",
        Duration::from_secs(120),
        "rebalanced",
        |g| settled(g, 3, &zones, Some(1)),
    );
    eprintln!(
        "AUTOSCALING rebalance: even again {:?} after the host was ready: {:?}",
        back.elapsed(),
        per_zone(&running(&g))
    );
    let acts = asg(&c, &t, &["activities", "drill"]);
    let text = acts.to_string();
    assert!(text.contains("balancing"), "no rebalance activity: {acts}");

    c.cli(
        &t,
        &[
            "autoscaling",
            "delete",
            "drill",
            "--force",
            "--wait",
            "--timeout",
            "140s",
        ],
    );
    assert!(group(&c, &t, "drill").is_none());
}

#[test]
fn a_controller_killed_mid_scale_out_of_20_ends_with_exactly_20() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut c = Cluster::start(ClusterSpec::three_zones(8)).unwrap();
    let t = c.tenant.clone().unwrap();
    let zones = cluster::zones();
    template(&c, &t);
    let mut args = vec![
        "create",
        "big",
        "--launch-template",
        "web",
        "--min",
        "0",
        "--max",
        "20",
        "--desired",
        "0",
    ];
    for z in &zones {
        args.extend(["--zone", z.as_str()]);
    }
    asg(&c, &t, &args);

    asg(&c, &t, &["set-desired-capacity", "big", "20"]);
    // Kill -9 the control plane as soon as the scale-out has begun.
    let end = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let n = group(&c, &t, "big").map(|g| live(&g)).unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < end, "the scale-out never started");
    };
    let pid = c.control_plane_pid();
    c.kill_control_plane();
    eprintln!("kill -9 control plane (pid {pid:?}) with {seen} of 20 instances created");
    std::thread::sleep(Duration::from_secs(1));
    c.start_control_plane().unwrap();

    let started = Instant::now();
    let g = wait_group(&c, &t, "big", Duration::from_secs(240), "20 running", |g| {
        settled(g, 20, &zones, None)
    });
    eprintln!(
        "AUTOSCALING kill -9 drill: 20 running {:?} after the restart ({seen} existed at the kill); spread {:?}",
        started.elapsed(),
        per_zone(&running(&g))
    );
    // Still 20 a while later (a late duplicate would show up, then be
    // scaled in), and no instance of the group was ever launched beyond 20.
    std::thread::sleep(Duration::from_secs(5));
    let g = group(&c, &t, "big").unwrap();
    assert!(settled(&g, 20, &zones, None), "{g}");
    let all: Vec<Value> = c
        .list_instances(&t, &[])
        .into_iter()
        .filter(|i| i["tags"]["aws:autoscaling:groupName"] == "big")
        .collect();
    assert_eq!(
        all.len(),
        20,
        "instances ever launched for the group (doubles?): {:?}",
        all.iter()
            .map(|i| (field(i, "instance_id"), field(i, "state")))
            .collect::<Vec<_>>()
    );
    assert!(all.iter().all(|i| field(i, "state") == "running"));
    let acts = asg(&c, &t, &["activities", "big"]);
    let terminated = acts["activities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| field(x, "description").starts_with("Terminating"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(terminated, 0, "the group had to terminate doubles: {acts}");
}

/// The benchmark of `tests/bench/autoscaling.sh` (ignored: not a test).
/// Prints `BENCH scale_out_s=…` and `BENCH host_loss_*` lines: the time
/// from SetDesiredCapacity +N (`NUBIS_BENCH_SCALE`, default 50) to N
/// running hello instances (the CLI's `--wait`), and from the node being
/// declared lost to the group back at N running in the other zones.
#[test]
#[ignore = "benchmark: run by tests/bench/autoscaling.sh"]
fn bench_scale_out_and_host_loss() {
    if !cluster::prerequisites_met() {
        return;
    }
    let n: usize = std::env::var("NUBIS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    // Room for the whole group in two zones after the host loss.
    let mut spec = ClusterSpec::three_zones(u32::try_from(n / 2 + 2).unwrap_or(27));
    spec.lease_ttl_seconds = 3;
    spec.heartbeat_interval_seconds = 1;
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let zones = cluster::zones();
    template(&c, &t);
    let max = n.to_string();
    let mut args = vec![
        "create",
        "bench",
        "--launch-template",
        "web",
        "--min",
        "0",
        "--max",
        &max,
        "--desired",
        "0",
        "--grace-period",
        "0",
    ];
    for z in &zones {
        args.extend(["--zone", z.as_str()]);
    }
    asg(&c, &t, &args);

    let t0 = Instant::now();
    let out = c.cli(
        &t,
        &[
            "autoscaling",
            "set-desired-capacity",
            "bench",
            &max,
            "--wait",
            "--poll-interval",
            "50ms",
            "--timeout",
            "140s",
            "-o",
            "json",
        ],
    );
    let scale_out = t0.elapsed();
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, out.stdout);
    let g = wait_group(
        &c,
        &t,
        "bench",
        Duration::from_secs(60),
        "all running",
        |g| settled(g, n, &zones, None),
    );
    println!(
        "BENCH scale_out_s={:.2} instances={n} spread={:?}",
        scale_out.as_secs_f64(),
        per_zone(&running(&g))
    );

    let lost_zone = cluster::zone('c');
    let a = c.agent_in_zone(&lost_zone).unwrap();
    let victims: Vec<String> = running(&g)
        .iter()
        .filter(|i| field(i, "availability_zone") == lost_zone)
        .map(|i| field(i, "instance_id"))
        .collect();
    c.kill_agent(a);
    for id in &victims {
        if let Some(pid) = c.vmm_pid(id) {
            kill9(pid, &format!("VMM of {id}"));
        }
    }
    let killed = Instant::now();
    let lost_at = loop {
        let nodes = c.nodes().unwrap();
        if nodes
            .iter()
            .any(|x| x["availability_zone"] == lost_zone.as_str() && x["state"] == "lost")
        {
            break Instant::now();
        }
        assert!(killed.elapsed() < Duration::from_secs(90), "never lost");
        std::thread::sleep(Duration::from_millis(100));
    };
    let others: Vec<String> = zones.iter().filter(|z| **z != lost_zone).cloned().collect();
    wait_group(&c, &t, "bench", Duration::from_secs(240), "restored", |g| {
        settled(g, n, &others, None)
    });
    println!(
        "BENCH host_loss_detect_s={:.2} host_loss_restore_s={:.2} replaced={}",
        (lost_at - killed).as_secs_f64(),
        lost_at.elapsed().as_secs_f64(),
        victims.len()
    );
    c.cli(
        &t,
        &[
            "autoscaling",
            "delete",
            "bench",
            "--force",
            "--wait",
            "--timeout",
            "140s",
        ],
    );
}
