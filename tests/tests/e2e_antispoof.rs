//! End to end: per-TAP anti-spoofing on a host, with real hello guests
//! booted through the whole stack. A victim instance and a spoofing one
//! (`nubis.spoof=<gateway>`: frames with a forged source MAC, a forged
//! source IP and ARP claiming the gateway's address to every neighbour) run
//! on the same host. The agent's nftables rules drop the forged frames and
//! count them per TAP, and the host's HTTP to the victim keeps working.
//! The same scene without the firewall shows the attack is real: the
//! ARP-poisoned victim sends its answers to the spoofer.

use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::{field, hello_variant_images, ids_of};
use nubis_tests::cluster::{self, Cluster, ClusterSpec, Creds};
use serde_json::Value;

/// The victim's gateway: instances are in their account's default VPC, and
/// the first agent's zone (the first of the region) has the default subnet
/// 172.31.0.0/20, whose router is its base + 1 (docs/networking.md).
const GATEWAY: &str = "172.31.0.1";

/// Packet counts of the `spoof_<tap>` counters in the host's `bridge nubis`
/// table.
fn spoof_counters(c: &Cluster) -> Vec<(String, u64)> {
    let out = c.exec_in_host(0, "nft", &["-j", "list", "table", "bridge", "nubis"]);
    assert!(
        out.status.success(),
        "nft list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| {
            let c = o.get("counter")?;
            let tap = c["name"].as_str()?.strip_prefix("spoof_")?;
            Some((tap.to_string(), c["packets"].as_u64()?))
        })
        .collect()
}

/// What both tests set up: a one-host cluster, a victim answering HTTP and
/// a spoofer on the same host that has sent three rounds of forged frames.
struct Scene {
    c: Cluster,
    _images: tempfile::TempDir,
    t: Creds,
    zone: String,
    victim: String,
    victim_ip: String,
    spoofer: String,
}

fn scene(firewall: bool) -> Option<Scene> {
    if !cluster::prerequisites_met() {
        return None;
    }
    let images = tempfile::tempdir().expect("tempdir");
    hello_variant_images(
        images.path(),
        "hello-spoof",
        &format!("nubis.spoof={GATEWAY}"),
    );
    // As in e2e_metrics: this test process runs only this test (nextest),
    // so nothing else sees these variables.
    std::env::set_var("NUBIS_IMAGE_DIR", images.path());
    std::env::set_var(
        "NUBIS_TEST_AGENT_FIREWALL",
        if firewall { "1" } else { "0" },
    );
    let mut spec = ClusterSpec::three_zones(2);
    spec.agents.truncate(1);
    let zone = spec.agents[0].zone.clone();
    let c = Cluster::start(spec).expect("cluster");
    let t = c.tenant.clone().expect("tenant");

    let victim = c.run_hello(&t, 1, Some(&zone)).remove(0);
    let v = &c.wait_state(&t, std::slice::from_ref(&victim), "ready")[0];
    let victim_ip = field(v, "private_ip_address");
    assert!(
        c.wait_http(&zone, &victim_ip).contains(&victim),
        "the victim answers with its id"
    );

    let manifest = images.path().join("hello-spoof/manifest.json");
    let image = c
        .register_public_image("hello-spoof", &manifest)
        .expect("register hello-spoof");
    let out = c.cli(
        &t,
        &[
            "instances",
            "run",
            "--image",
            &image,
            "--type",
            "t3.nano",
            "--zone",
            &zone,
            "-o",
            "json",
        ],
    );
    let mut ids = ids_of(&out.json());
    assert_eq!(ids.len(), 1, "{}", out.stderr);
    let spoofer = ids.remove(0);
    let s = &c.wait_state(&t, std::slice::from_ref(&spoofer), "ready")[0];
    assert_eq!(
        field(s, "availability_zone"),
        zone,
        "both instances share the host"
    );
    let console = c.wait_console(&t, &spoofer, "NUBIS-SPOOF sent", 3);
    assert!(
        console.contains(&format!("claim={GATEWAY}")),
        "hello image without the spoof mode? rebuild it: {console}"
    );
    Some(Scene {
        c,
        _images: images,
        t,
        zone,
        victim,
        victim_ip,
        spoofer,
    })
}

#[test]
fn a_spoofing_guest_cannot_take_over_its_neighbours_traffic() {
    let Some(Scene {
        c,
        _images,
        t,
        zone,
        victim,
        victim_ip,
        spoofer,
    }) = scene(true)
    else {
        return;
    };
    // The spoofer's TAP (from its network record on the host) counts drops.
    let net_json = c
        .instance_file(&spoofer, "net.json")
        .expect("spoofer's net.json");
    let net: Value =
        serde_json::from_slice(&std::fs::read(net_json).expect("read net.json")).expect("json");
    let spoofer_tap = net["tap"].as_str().expect("tap").to_string();
    let dropped = |c: &Cluster| {
        spoof_counters(c)
            .into_iter()
            .find(|(tap, _)| *tap == spoofer_tap)
            .map(|(_, n)| n)
    };
    let first = dropped(&c).expect("a counter for the spoofer's TAP");
    assert!(first >= 3, "forged frames dropped: {first}");

    // While the spoofer keeps claiming the gateway, the victim keeps
    // answering the host (it would answer the spoofer's MAC if poisoned:
    // see the next test).
    let end = Instant::now() + Duration::from_secs(4);
    let mut answers = 0;
    while Instant::now() < end {
        let body = c
            .http_get(&zone, &victim_ip)
            .unwrap_or_else(|e| panic!("victim stopped answering: {e}"));
        assert!(body.contains(&victim), "{body}");
        answers += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(answers >= 4);
    let later = dropped(&c).expect("counter");
    assert!(
        later > first,
        "rounds keep being dropped: {first} -> {later}"
    );

    // Terminating the spoofer removes its rules and counter.
    let out = c.cli(&t, &["instances", "terminate", &spoofer]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.wait_state(&t, std::slice::from_ref(&spoofer), "terminated");
    let end = Instant::now() + Duration::from_secs(30);
    while dropped(&c).is_some() {
        assert!(Instant::now() < end, "the spoofer's counter stays");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(c.http_get(&zone, &victim_ip).is_ok());
}

/// The same scene on an agent with `[network] firewall = false`: the
/// spoofer's ARP poisons the victim, whose answers to the host then go to
/// the spoofer, so the host's HTTP to the victim fails. (This is what the
/// test above would see if the rules did not work.)
#[test]
fn without_the_firewall_the_spoofer_poisons_its_neighbour() {
    let Some(Scene {
        c,
        _images,
        zone,
        victim_ip,
        ..
    }) = scene(false)
    else {
        return;
    };
    assert!(
        !c.exec_in_host(0, "nft", &["list", "table", "bridge", "nubis"])
            .status
            .success(),
        "no rules with firewall = false"
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if c.http_get(&zone, &victim_ip).is_err() {
            break;
        }
        assert!(
            Instant::now() < end,
            "the victim kept answering although nothing stopped the spoofer"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
