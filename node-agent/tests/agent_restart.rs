//! The real `nubis-agent` binary (standalone mode) inside a private network
//! namespace: five hello VMs (plus a sixth whose VMM is SIGKILLed and a
//! seventh whose guest resets while the agent is down), `kill -9` of the
//! agent, restart: all five are re-adopted (same pids, nothing restarted,
//! nothing lost), the sixth and seventh are reported stopped with their true
//! reasons (unobserved; the guest's own shutdown, from the VMM's exit record)
//! and not restarted, only truly orphaned TAPs, cgroups and
//! directories are removed, and an adopted VMM's exit is still noticed: with
//! its true reason when the VMM left its exit-status record (guest reset), as
//! unobserved when it could not (SIGKILL).
//! One VMM whose `vmm.json` is lost (an agent killed between spawn and
//! record) is found by its socket, re-adopted and recorded again.
//! Finally an empty desired state terminates everything and leaves nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{alive, have_prereqs, start_agent, wait_status, Env};
use serde_json::Value;

const N: usize = 5;
const WAIT: Duration = Duration::from_secs(180);

fn write_desired(state: &Path, ids: &[String]) {
    let instances: Vec<Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "spec": {"id": id, "image": "hello", "vcpus": 1, "memory_mib": 64},
                "desired": "running",
                "generation": 1
            })
        })
        .collect();
    let tmp = state.join("desired.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({ "instances": instances }).to_string(),
    )
    .unwrap();
    std::fs::rename(&tmp, state.join("desired.json")).unwrap();
}

/// id -> pid of every running + ready instance.
fn running_ready(v: &Value) -> BTreeMap<String, i64> {
    v["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["state"] == "running" && i["ready"] == true)
                .filter_map(|i| Some((i["id"].as_str()?.to_string(), i["pid"].as_i64()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    nubis_agent::instance::now_ms()
}

/// Pids of nubis-vmm processes whose command line mentions `dir`.
fn vmms_under(dir: &Path) -> Vec<i32> {
    let want = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("nubis-vmm") && cmd.contains(&want) && alive(pid) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Sends Ctrl-Alt-Del through an instance VMM's own API socket (the hello
/// guest answers it with an i8042 reset).
fn ctrl_alt_del(state: &Path, id: &str) {
    let sock = state.join("instances").join(id).join("api.sock");
    let mut api = UnixStream::connect(&sock).unwrap();
    api.write_all(b"{\"op\":\"ctrl_alt_del\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&api).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
}

#[test]
fn kill_9_agent_then_restart_readopts_all_vms() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let state = env.state.path().to_path_buf();
    let mut ids: Vec<String> = (0..N).map(|i| format!("i-adopt{i:04}")).collect();
    let doomed = "i-dies000001".to_string();
    let resets = "i-resets0001".to_string();
    ids.push(doomed.clone());
    ids.push(resets.clone());
    write_desired(&state, &ids);

    let t0 = now_ms();
    let agent = start_agent(&env);
    let v = wait_status(&env, t0, "all running + ready", |v| {
        running_ready(v).len() == N + 2
    });
    let mut before = running_ready(&v);
    let doomed_pid = before.remove(&doomed).unwrap() as i32;
    let resets_pid = before.remove(&resets).unwrap() as i32;
    let agent_pid = agent.0.id() as i32;
    for pid in before.values() {
        assert!(alive(*pid as i32));
    }
    assert_eq!(vmms_under(&state).len(), N + 2);

    // kill -9 the agent: the VMMs (own sessions) keep running.
    drop(agent);
    assert!(!alive(agent_pid));
    for pid in before.values() {
        assert!(alive(*pid as i32), "VMM {pid} died with the agent");
    }
    // One VMM dies while no agent watches.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(doomed_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Another one's guest resets meanwhile: its VMM exits 0 and leaves its
    // exit record for the next agent.
    ctrl_alt_del(&state, &resets);
    let deadline = Instant::now() + WAIT;
    while alive(resets_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(resets_pid), "the guest did not reset");

    // Leftovers of nothing: a TAP, a cgroup and an instance dir no
    // instance owns (a launch that crashed before writing its spec).
    let (ok, _) = env
        .netns
        .ip(&["tuntap", "add", "dev", "nbtorphan00", "mode", "tap"]);
    assert!(ok);
    let cg_orphan = env.cgroup.dir().unwrap().join("i-orphan0001");
    std::fs::create_dir(&cg_orphan).unwrap();
    let dir_orphan = state.join("instances/i-stray0001");
    std::fs::create_dir(&dir_orphan).unwrap();

    // The firewall rules outlive the agent (kernel state) and cover every
    // recorded instance; removed while it is down, the restarted agent puts
    // them back at start.
    let chains = |env: &Env| {
        let out = Command::new("ip")
            .args(["netns", "exec", &env.netns.name])
            .args(["nft", "list", "table", "bridge", "nubis"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tap_chain = |id: &str| {
        let id = nubis_agent::types::InstanceId::new(id).unwrap();
        format!("chain tap_{}", nubis_agent::host::tap::tap_name("nbt", &id))
    };
    let listing = chains(&env);
    for id in &ids {
        assert!(listing.contains(&tap_chain(id)), "{id}: {listing}");
    }
    assert!(Command::new("ip")
        .args(["netns", "exec", &env.netns.name])
        .args(["nft", "delete", "table", "bridge", "nubis"])
        .status()
        .unwrap()
        .success());

    // One VMM lost its record (an agent killed between spawn and record):
    // found by its API socket, re-adopted and recorded again.
    let unrecorded = ids[N - 1].clone();
    std::fs::remove_file(state.join("instances").join(&unrecorded).join("vmm.json")).unwrap();

    let t1 = now_ms();
    let _agent = start_agent(&env);
    let v = wait_status(&env, t1, "5 re-adopted", |v| running_ready(v).len() == N);
    let listing = chains(&env);
    for id in &ids {
        assert!(
            listing.contains(&tap_chain(id)),
            "{id} after restart: {listing}"
        );
    }
    let after = running_ready(&v);
    assert_eq!(before, after, "instances restarted or lost across kill -9");
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("instances").join(&unrecorded).join("vmm.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        rec["pid"].as_i64(),
        before.get(&unrecorded).copied(),
        "{rec}"
    );
    assert!(rec["nonce"].is_string(), "{rec}");
    let d = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == doomed.as_str())
        .unwrap()
        .clone();
    assert_eq!(d["state"], "stopped", "{d:#}");
    assert_eq!(d["reason"]["code"], "Server.VmmExitedUnobserved", "{d:#}");
    assert!(d["pid"].is_null(), "{d:#}");
    let r = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == resets.as_str())
        .unwrap()
        .clone();
    assert_eq!(r["state"], "stopped", "{r:#}");
    assert_eq!(
        r["reason"]["code"], "Client.InstanceInitiatedShutdown",
        "{r:#}"
    );
    assert_eq!(vmms_under(&state).len(), N, "a VMM was started twice");
    let log = std::fs::read_to_string(state.join("agent.log")).unwrap();
    assert_eq!(log.matches("re-adopted running VMM").count(), N, "{log}");

    // Only true orphans are removed.
    let deadline = Instant::now() + WAIT;
    while (env.netns.link_exists("nbtorphan00") || cg_orphan.exists() || dir_orphan.exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!env.netns.link_exists("nbtorphan00"), "orphan TAP kept");
    assert!(!cg_orphan.exists(), "orphan cgroup kept");
    assert!(!dir_orphan.exists(), "orphan dir kept");
    assert_eq!(env.netns.links_with_prefix("nbt").len(), N + 2);
    for id in &ids {
        assert!(state.join("instances").join(id).join("disk.raw").is_file());
    }

    // The exit of a re-adopted VMM (not the agent's child) is noticed
    // through its pidfd.
    let (victim, vpid) = after.iter().next().map(|(i, p)| (i.clone(), *p)).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(vpid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let t3 = now_ms();
    wait_status(&env, t3, "adopted VMM exit noticed", |v| {
        v["instances"].as_array().is_some_and(|a| {
            a.iter().any(|i| {
                i["id"] == victim.as_str()
                    && i["state"] == "stopped"
                    && i["reason"]["code"] == "Server.VmmExitedUnobserved"
            })
        })
    });
    assert_eq!(
        vmms_under(&state).len(),
        N - 1,
        "a stopped instance was restarted"
    );

    // A re-adopted VMM whose guest resets (Ctrl-Alt-Del over the VMM's own
    // API socket; the hello guest answers it with an i8042 reset) exits 0
    // and writes its exit record: reported like a child's guest reset.
    let (resetter, rpid) = after
        .iter()
        .find(|(i, _)| **i != victim)
        .map(|(i, p)| (i.clone(), *p))
        .unwrap();
    ctrl_alt_del(&state, &resetter);
    let t4 = now_ms();
    let v = wait_status(&env, t4, "adopted VMM's guest reset reported", |v| {
        v["instances"].as_array().is_some_and(|a| {
            a.iter()
                .any(|i| i["id"] == resetter.as_str() && i["state"] == "stopped")
        })
    });
    let r = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == resetter.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        r["reason"]["code"], "Client.InstanceInitiatedShutdown",
        "{r:#}"
    );
    assert!(!alive(rpid as i32));
    assert_eq!(
        vmms_under(&state).len(),
        N - 2,
        "a stopped instance was restarted"
    );

    // An empty desired state terminates everything, leaving nothing.
    let t2 = now_ms();
    write_desired(&state, &[]);
    wait_status(&env, t2, "all terminated", |v| {
        v["instances"].as_array().is_some_and(|a| a.is_empty())
    });
    for pid in after.values() {
        assert!(!alive(*pid as i32), "VMM {pid} survived terminate");
    }
    assert!(vmms_under(&state).is_empty());
    assert!(env.netns.links_with_prefix("nbt").is_empty());
    let dirs: Vec<_> = std::fs::read_dir(state.join("instances"))
        .unwrap()
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
    let groups: Vec<_> = std::fs::read_dir(env.cgroup.dir().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(groups.is_empty(), "{groups:?}");
}
