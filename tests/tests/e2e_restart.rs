//! End to end: restarting instances. Reboot boots the guest again in a new
//! VMM while the instance stays `running`; stop/start keeps the root disk (a
//! byte changed on the host while stopped is seen by the restarted guest).
//!
//! A stopped instance keeps its node, address and assignment (desired
//! `stopped`), so the agent keeps its directory and disk; Start re-claims the
//! same node. During a reboot the agent reports the restart as `booting`.

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

/// The hash from the last `NUBIS-DISK sector0-sha256=<hex>` console line.
fn last_sector0_hash(console: &str) -> String {
    console
        .lines()
        .filter_map(|l| l.split("NUBIS-DISK sector0-sha256=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn reboot_boots_again_and_stays_running() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 1, Some(&cluster::zone('b')));
    let id = ids[0].clone();
    c.wait_state(&t, &ids, "ready");
    let ready_line = format!("NUBIS-GUEST-READY {id}");

    // The guest is reset (Ctrl-Alt-Del) and boots again in a new VMM process;
    // the agent keeps the previous boot's console as console.log.1. As in EC2,
    // the instance stays `running` throughout.
    let pid_before = c.vmm_pid(&id).expect("vmm.json of a running instance");
    let out = c.tenant_cli(&["instances", "reboot", &id]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let end = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    while c.vmm_pid(&id) == Some(pid_before) || c.vmm_pid(&id).is_none() {
        seen.insert(field(&c.describe_instances(&t, &ids)[0], "state"));
        assert!(Instant::now() < end, "reboot did not restart the VMM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = c.wait_state(&t, &ids, "ready");
    seen.insert(field(&ready[0], "state"));
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["running".to_string()],
        "states seen during the reboot"
    );
    let previous = std::fs::read_to_string(c.instance_file(&id, "console.log.1").unwrap()).unwrap();
    assert!(
        previous.contains("NUBIS-RESET"),
        "previous boot not reset:\n{previous}"
    );
    c.wait_console(&t, &id, &ready_line, 1);
}

#[test]
fn stop_start_keeps_disk() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(ClusterSpec::three_zones(2)).unwrap();
    let t = c.tenant.clone().unwrap();
    let ids = c.run_hello(&t, 1, Some(&cluster::zone('a')));
    let id = ids[0].clone();
    c.wait_state(&t, &ids, "ready");
    let ready_line = format!("NUBIS-GUEST-READY {id}");
    let console = c.wait_console(&t, &id, &ready_line, 1);
    let h1 = last_sector0_hash(&console);
    assert_eq!(h1.len(), 64, "no NUBIS-DISK line:\n{console}");

    // Stop.
    let out = c.tenant_cli(&[
        "instances",
        "stop",
        &id,
        "--wait",
        "--timeout",
        "120s",
        "-o",
        "json",
    ]);
    let v = out.json();
    assert_eq!(field(&v["instances"][0], "state"), "stopped", "{v}");

    // While stopped, change sector 0 of its disk on the host (past the header).
    let disk = c
        .instance_disk(&id)
        .expect("stopped instance keeps its disk file");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    f.seek(SeekFrom::Start(400)).unwrap();
    f.write_all(b"NUBIS-E2E-MARK").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let sector0 = &std::fs::read(&disk).unwrap()[..512];
    let h2 = hex(&Sha256::digest(sector0));
    assert_ne!(h1, h2);

    // Start: the same disk comes back, so the new boot reports the new hash.
    let out = c.tenant_cli(&["instances", "start", &id, "--wait", "--timeout", "120s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.wait_state(&t, &ids, "ready");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let console = c.console(&t, &id);
        if console.contains(&ready_line) && last_sector0_hash(&console) == h2 {
            break;
        }
        assert!(Instant::now() < end, "console after start:\n{console}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let inst = &c.describe_instances(&t, &ids)[0];
    assert_eq!(
        c.wait_http(
            &field(inst, "availability_zone"),
            &field(inst, "private_ip_address")
        ),
        format!("NUBIS-HELLO {id}\n")
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
