//! End to end, issue 18's chaos test: a highly available cluster (three etcd
//! members, three control-plane replicas, three agents knowing every replica)
//! takes a stream of RunInstances calls, one instance each, every call with
//! its own ClientToken and retried with the same token until it succeeds.
//! During the stream the leading control-plane replica, then an agent, then
//! the etcd raft leader are killed with SIGKILL (and restarted after a moment,
//! as a supervisor would). Afterwards:
//!
//! - every token has exactly one instance (a late retry of each token returns
//!   the same instance, and the account holds nothing else);
//! - every instance is `running`;
//! - no VMM was restarted: each instance was seen with one VMM pid only, and
//!   that process is alive;
//! - no instance was ever seen in any state but `pending` and `running`
//!   (`instances list` is polled every ~250 ms from before the first kill
//!   until a settle period of several node-lease TTLs after the last restart).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::{self, field, instances_of, SMALL_TYPE};
use nubis_tests::cluster::{self, sys, CliRunner, Cluster, ClusterSpec, Creds};

/// RunInstances calls in the stream (the issue asks for 20 or more).
const CALLS: usize = 21;
/// Node lease TTL of the test cluster: short, so a liveness rule that wrongly
/// declares nodes lost would act well inside the test, yet longer than the
/// etcd fault lasts for the replica renewing a node's lease: killing the etcd
/// raft leader for 3 s left keepalives failing for 5-6 s on a replica whose
/// client was on that member (election plus the client's failover), so at 5 s
/// the lease of a live, heartbeating node expired and the node was rightly
/// judged lost by the rules (one node of three, no disruption) in about one
/// run in three. The default TTL is 15 s (docs/operations.md).
const LEASE_TTL: u32 = 8;
/// How long the instances are watched after the last restart.
const SETTLE: Duration = Duration::from_secs(25);

/// What the poller saw of one instance.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Distinct states, in the order first seen.
    states: Vec<String>,
    /// Distinct VMM pids recorded by its agent.
    pids: BTreeSet<u64>,
}

/// Polls `instances list` and the agents' VMM records until `stop`.
fn observe(
    cli: CliRunner,
    tenant: Creds,
    dir: PathBuf,
    agents: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let out = cli.run(&tenant, &["instances", "list", "-o", "json"]);
        // During the kills a list may fail; the next poll will see the state.
        if out.code == 0 {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
                let mut seen = seen.lock().expect("observer lock");
                for inst in instances_of(&v) {
                    let id = field(&inst, "instance_id");
                    let state = field(&inst, "state");
                    let s = seen.entry(id.clone()).or_default();
                    if !s.states.contains(&state) {
                        s.states.push(state.clone());
                    }
                    if state == "running" {
                        if let Some(pid) = ops::vmm_pid_in(&dir, agents, &id) {
                            s.pids.insert(pid);
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One `instances run` of one hello instance with `token`.
fn run_one(cli: &CliRunner, tenant: &Creds, image: &str, token: &str) -> Result<String, String> {
    let out = cli.run(
        tenant,
        &[
            "instances",
            "run",
            "--image",
            image,
            "--type",
            SMALL_TYPE,
            "--count",
            "1",
            "--client-token",
            token,
            "-o",
            "json",
        ],
    );
    if out.code != 0 {
        return Err(format!("exit {}: {}", out.code, out.stderr.trim()));
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
    let ids = ops::ids_of(&v);
    match ids.as_slice() {
        [id] => Ok(id.clone()),
        _ => Err(format!("expected one instance, got {v}")),
    }
}

/// The stream: every token retried until it succeeds; returns token -> id
/// and the number of failed attempts.
fn launch_stream(
    cli: CliRunner,
    tenant: Creds,
    image: String,
    tokens: Vec<String>,
    done: Arc<AtomicUsize>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut ids = BTreeMap::new();
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for token in tokens {
        loop {
            match run_one(&cli, &tenant, &image, &token) {
                Ok(id) => {
                    ids.insert(token.clone(), id);
                    break;
                }
                Err(e) => {
                    failures.push(format!("{token}: {e}"));
                    assert!(
                        Instant::now() < deadline,
                        "RunInstances kept failing: {failures:#?}"
                    );
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
    }
    (ids, failures)
}

/// Waits until `n` calls of the stream succeeded (or the stream ended).
fn wait_for<T>(done: &AtomicUsize, n: usize, stream: &std::thread::JoinHandle<T>) {
    let end = Instant::now() + Duration::from_secs(120);
    while done.load(Ordering::SeqCst) < n && !stream.is_finished() {
        assert!(Instant::now() < end, "the launch stream stalled");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(pid: Option<u32>, what: &str) {
    let pid = pid.unwrap_or_else(|| panic!("{what} is not running"));
    sys::signal(pid as i32, libc::SIGKILL);
    eprintln!("chaos: kill -9 {what} (pid {pid})");
}

#[test]
fn leader_agent_and_etcd_kills_during_a_launch_stream_stop_nothing() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(8).ha();
    spec.lease_ttl_seconds = LEASE_TTL;
    spec.heartbeat_interval_seconds = 1;
    let mut c = Cluster::start(spec).unwrap();
    let t = c.tenant.clone().unwrap();
    let image = c.hello_image.clone().unwrap();
    let run_id = sys::random_hex(6);
    let tokens: Vec<String> = (0..CALLS).map(|i| format!("chaos-{run_id}-{i}")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let observer = {
        let (cli, t, dir, n) = (c.cli_runner(), t.clone(), c.dir.clone(), c.agent_count());
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || observe(cli, t, dir, n, stop, seen))
    };
    let launcher = {
        let (cli, t, image, tokens) = (c.cli_runner(), t.clone(), image.clone(), tokens.clone());
        let done = done.clone();
        std::thread::spawn(move || launch_stream(cli, t, image, tokens, done))
    };

    // 1. The leading control-plane replica.
    wait_for(&done, 4, &launcher);
    let leader = c.wait_leader(Duration::from_secs(30)).unwrap();
    kill9(
        c.replica_pid(leader),
        &format!("control-plane replica {leader} (leader)"),
    );
    std::thread::sleep(Duration::from_secs(2));
    c.start_replica(leader).unwrap();
    let new_leader = c.wait_leader(Duration::from_secs(30)).unwrap();
    eprintln!("chaos: replica {leader} restarted; leader now replica {new_leader}");

    // 2. An agent (its VMMs keep running, as on a real host).
    wait_for(&done, 9, &launcher);
    let mark = c.agent_log_len(1);
    kill9(c.agent_pid(1), "agent 1");
    std::thread::sleep(Duration::from_secs(1));
    c.start_agent(1).unwrap();
    // One fault at a time: the agent is back (registered again, well inside
    // its lease) before etcd loses its leader. Both at once can keep a
    // restarting agent from registering for longer than the lease TTL,
    // which is a host loss by the liveness rules, not what this test asks.
    c.wait_agent_log_since(1, mark, "registered", Duration::from_secs(30))
        .unwrap();
    eprintln!("chaos: agent 1 restarted and registered");

    // 3. The etcd raft leader.
    wait_for(&done, 14, &launcher);
    let member = c.etcd_leader_member().unwrap_or(0);
    kill9(c.etcd_member_pid(member), &format!("etcd member {member}"));
    std::thread::sleep(Duration::from_secs(3));
    c.start_etcd_member(member).unwrap();
    eprintln!("chaos: etcd member {member} restarted");

    let (ids_by_token, failures) = launcher
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    eprintln!(
        "chaos: {} calls, {} failed attempts retried with their token: {failures:#?}",
        ids_by_token.len(),
        failures.len()
    );
    let ids: Vec<String> = ids_by_token.values().cloned().collect();
    c.wait_nodes_ready(3, Duration::from_secs(60)).unwrap();
    c.wait_state(&t, &ids, "running");
    // Several lease TTLs: a liveness rule that would stop instances acts here.
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::SeqCst);
    observer
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let seen = seen.lock().unwrap().clone();

    // Every token has exactly one instance.
    assert_eq!(ids_by_token.len(), CALLS);
    let distinct: BTreeSet<&String> = ids_by_token.values().collect();
    assert_eq!(distinct.len(), CALLS, "two tokens share an instance");
    for (token, id) in &ids_by_token {
        let again = run_one(&c.cli_runner(), &t, &image, token).unwrap();
        assert_eq!(&again, id, "a retry of {token} returned another instance");
    }
    let all = c.list_instances(&t, &[]);
    let listed: BTreeSet<String> = all.iter().map(|i| field(i, "instance_id")).collect();
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(listed, expected, "the account holds other instances");

    // Every instance running, with the one VMM it ever had, still alive.
    for inst in &all {
        let id = field(inst, "instance_id");
        assert_eq!(field(inst, "state"), "running", "{inst}");
        let s = seen.get(&id).cloned().unwrap_or_default();
        let now = c
            .vmm_pid(&id)
            .unwrap_or_else(|| panic!("{id} has no VMM record"));
        assert!(
            s.pids.len() <= 1,
            "{id}: VMM restarted, pids seen {:?}",
            s.pids
        );
        assert!(
            s.pids.is_empty() || s.pids.contains(&now),
            "{id}: VMM pid changed from {:?} to {now}",
            s.pids
        );
        assert!(sys::pid_alive(now as u32), "{id}: VMM {now} is gone");
    }

    // No instance ever left pending/running.
    let bad: BTreeMap<&String, &Vec<String>> = seen
        .iter()
        .filter(|(_, s)| s.states.iter().any(|st| st != "pending" && st != "running"))
        .map(|(id, s)| (id, &s.states))
        .collect();
    assert!(
        bad.is_empty(),
        "instances passed through other states: {bad:#?}\n--- control-plane {new_leader} log:\n{}",
        c.replica_log(new_leader)
    );
    for id in &ids {
        assert!(seen.contains_key(id), "{id} was never observed");
    }
}

/// The HA harness itself: three etcd members and three replicas come up, one
/// replica leads (one agent), and after a `kill -9` of the leader and of the etcd raft
/// leader another replica leads and the API still answers.
#[test]
fn ha_cluster_elects_a_new_leader_after_kills() {
    if !cluster::prerequisites_met() {
        return;
    }
    let mut spec = ClusterSpec::three_zones(1).ha();
    spec.agents.truncate(1);
    let mut c = Cluster::start(spec).unwrap();
    assert_eq!(c.etcd_member_count(), 3);
    assert_eq!(c.replica_count(), 3);
    let leader = c.wait_leader(Duration::from_secs(30)).unwrap();
    let member = c.etcd_leader_member().expect("an etcd raft leader");
    c.kill_replica(leader);
    c.kill_etcd_member(member);
    let next = c.wait_leader(Duration::from_secs(30)).unwrap();
    assert_ne!(next, leader, "a killed replica cannot lead");
    let out = c.tenant_cli(&["instances", "list", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.start_etcd_member(member).unwrap();
    c.start_replica(leader).unwrap();
}
