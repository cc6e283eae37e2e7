//! End to end: anti-spoofing on a host's routed VPC ports, with real hello
//! guests booted through the whole stack. A victim, a spoofing instance
//! (`nubis.spoof=<victim's address>`: frames with a forged source MAC, a
//! forged source IP, gratuitous ARP and ARP requests claiming the victim's
//! address to every neighbour) and a third instance probing the victim
//! over HTTP run on one host in one VPC. The agent's `arp`/`inet
//! nubis_vpc` tables drop the forged frames (node-agent/src/host/vpc/nft.rs;
//! each kind of drop is shown with fake guests in
//! node-agent/tests/vpc_dataplane.rs), so the prober keeps reaching the
//! victim, and only the victim, for the whole attack.

use std::time::{Duration, Instant};

use nubis_tests::cluster::console::probes;
use nubis_tests::cluster::ops::{field, hello_variant_images, ids_of};
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

/// The first address of the first zone's default subnet (172.31.0.0/20:
/// .0-.3 are reserved): the first instance launched there gets it.
const VICTIM_IP: &str = "172.31.0.4";

/// The HTTP probe results (`result`, `peer`) towards `dst` in a console.
fn http_probes(console: &str, dst: &str) -> Vec<(String, Option<String>)> {
    probes(console, dst, "http:80")
        .into_iter()
        .map(|p| (p.result, p.peer))
        .collect()
}

#[test]
fn a_spoofing_guest_cannot_take_over_its_neighbours_address() {
    if !cluster::prerequisites_met() {
        return;
    }
    let images = tempfile::tempdir().expect("tempdir");
    hello_variant_images(
        images.path(),
        "hello-spoof",
        &format!("nubis.spoof={VICTIM_IP}"),
    );
    // As in e2e_metrics: this test process runs only this test (nextest),
    // so nothing else sees this variable.
    std::env::set_var("NUBIS_IMAGE_DIR", images.path());
    let mut spec = ClusterSpec::three_zones(3);
    spec.agents.truncate(1);
    let zone = spec.agents[0].zone.clone();
    let c = Cluster::start(spec).expect("cluster");
    let t = c.tenant.clone().expect("tenant");

    let victim = c.run_hello(&t, 1, Some(&zone)).remove(0);
    let v = &c.wait_state(&t, std::slice::from_ref(&victim), "ready")[0];
    assert_eq!(field(v, "private_ip_address"), VICTIM_IP);

    // The prober (same host, same VPC) asks the victim every 500 ms.
    let dir = tempfile::tempdir().expect("tempdir");
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, format!("nubis-probe {VICTIM_IP} http:80\n")).expect("user data");
    let ud = ud.display().to_string();
    let out = c.try_run_hello(&t, 1, Some(&zone), &["--user-data", &ud]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prober = ids_of(&out.json()).remove(0);
    let ok_from_victim = |text: &str| {
        http_probes(text, VICTIM_IP)
            .iter()
            .filter(|(r, p)| r == "ok" && p.as_deref() == Some(victim.as_str()))
            .count()
    };
    let end = Instant::now() + Duration::from_secs(120);
    while ok_from_victim(&c.console(&t, &prober)) == 0 {
        assert!(Instant::now() < end, "the prober never reached the victim");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The spoofer claims the victim's address for 3 rounds and more.
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
    let console = c.wait_console(&t, &spoofer, "NUBIS-SPOOF sent", 3);
    assert!(
        console.contains(&format!("claim={VICTIM_IP}")),
        "hello image without the spoof mode? rebuild it: {console}"
    );
    let before = http_probes(&c.console(&t, &prober), VICTIM_IP).len();
    c.wait_console(&t, &spoofer, "NUBIS-SPOOF sent", 6);

    // Every probe during the attack reached the victim itself.
    let text = c.console(&t, &prober);
    let during = &http_probes(&text, VICTIM_IP)[before..];
    assert!(
        during.len() >= 4,
        "too few probes during the attack: {during:?}"
    );
    for (result, peer) in during {
        assert_ne!(
            peer.as_deref(),
            Some(spoofer.as_str()),
            "the spoofer answered for the victim"
        );
        assert!(
            result != "ok" || peer.as_deref() == Some(victim.as_str()),
            "{result} {peer:?}"
        );
    }
    let ok = during.iter().filter(|(r, _)| r == "ok").count();
    assert!(
        ok * 10 >= during.len() * 9,
        "the victim stopped answering during the attack: {during:?}"
    );
}
