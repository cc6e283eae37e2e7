//! The host firewall (`nubis_agent::host::firewall`) in the kernel, with real
//! packets: a "host" network namespace with the instance bridge and three
//! "guest" namespaces joined to it by veth pairs whose host ends are named
//! like TAPs. Everything lives in namespaces this test creates and removes
//! (also on failure); traffic goes only between them.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fetch, have_prereqs, in_netns, must, ping, run, serve, NetNs};
use nubis_agent::config::NetworkConfig;
use nubis_agent::host::firewall::render::Port;
use nubis_agent::host::firewall::{read_counters, Counters, Firewall};

const GW: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);

fn tap(i: u8) -> String {
    format!("nbt{i:011}")
}
fn mac(i: u8) -> String {
    format!("02:4e:42:00:00:{i:02x}")
}
fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, 0, 10 + i)
}

fn apply(rt: &tokio::runtime::Runtime, fw: &Firewall, ports: &[u8]) {
    let ports = ports
        .iter()
        .map(|&i| (tap(i), Port::new(&tap(i), &mac(i), ip(i)).expect("port")))
        .collect();
    rt.block_on(fw.apply(fw.rules(ports), true))
        .expect("apply the ruleset");
}

fn counters(rt: &tokio::runtime::Runtime) -> Counters {
    rt.block_on(read_counters()).expect("counters")
}

fn spoofed(rt: &tokio::runtime::Runtime, i: u8) -> u64 {
    counters(rt).spoofed.get(&tap(i)).copied().unwrap_or(0)
}

#[test]
fn spoofed_frames_are_dropped_and_guests_cannot_reach_the_host() {
    if !have_prereqs(false) {
        return;
    }
    common::sweep_stale();
    let host = NetNs::new();
    let guests: Vec<NetNs> = (0..3).map(|_| NetNs::new()).collect();
    let g = |i: u8| guests[usize::from(i - 1)].name.clone();
    host.ip(&["link", "add", "nbbr0", "type", "bridge"]);
    assert!(
        host.ip(&["addr", "add", &format!("{GW}/24"), "dev", "nbbr0"])
            .0
    );
    assert!(host.ip(&["link", "set", "nbbr0", "up"]).0);
    for i in 1..=3u8 {
        host.veth_to(&tap(i), &g(i));
        assert!(
            host.ip(&["link", "set", &tap(i), "master", "nbbr0", "up"])
                .0
        );
        let gi = &guests[usize::from(i - 1)];
        assert!(gi.ip(&["link", "set", "eth0", "address", &mac(i)]).0);
        assert!(
            gi.ip(&["addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"])
                .0
        );
        assert!(gi.ip(&["link", "set", "eth0", "up"]).0);
    }
    // The test thread acts as the host (nft and the counters run here).
    host.enter_current_thread();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fw = Firewall::new(&NetworkConfig {
        bridge: "nbbr0".into(),
        tap_prefix: "nbt".into(),
        ..NetworkConfig::default()
    });

    // A host service on the gateway address, and HTTP-like servers in guest 2.
    let host_svc = SocketAddr::from((GW, 8081));
    serve(&host.name, host_svc, "host-secret", Duration::from_secs(60));
    let g2_svc = SocketAddr::from((ip(2), 8080));
    serve(&g(2), g2_svc, "guest-2", Duration::from_secs(60));
    // Without the firewall a guest reaches the host service (so the check
    // below can fail).
    assert_eq!(fetch(&g(1), host_svc).as_deref(), Some("host-secret"));

    apply(&rt, &fw, &[1, 2]);
    let t0 = Instant::now();
    assert!(
        ping(&g(1), ip(2)),
        "legitimate guest-to-guest traffic passes"
    );
    assert!(ping(&g(1), GW), "guests may ping the gateway");
    assert_eq!(
        fetch(&host.name, g2_svc).as_deref(),
        Some("guest-2"),
        "host -> guest TCP works"
    );
    let before = counters(&rt);
    assert_eq!(
        fetch(&g(1), host_svc),
        None,
        "guest -> host service blocked"
    );
    assert!(counters(&rt).host_blocked > before.host_blocked);
    // Guest 3's port has no rules yet: its frames are dropped.
    assert!(!ping(&g(3), ip(2)));
    assert!(counters(&rt).unknown_tap > 0);
    eprintln!("first checks took {:?}", t0.elapsed());

    // Forged IPv4 source: a datagram from an address guest 1 does not own
    // never reaches guest 2; one from its own address does.
    let (udp_tx, udp_rx) = std::sync::mpsc::channel::<String>();
    let g2 = g(2);
    let receiver = in_netns(&g2, move || {
        let s = UdpSocket::bind((ip(2), 9999)).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        udp_tx.send(String::new()).ok();
        let end = Instant::now() + Duration::from_secs(4);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                got.push(format!(
                    "{}:{}",
                    from.ip(),
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
        }
        got
    });
    udp_rx.recv_timeout(Duration::from_secs(5)).expect("udp up");
    assert!(
        guests[0]
            .ip(&["addr", "add", "10.214.0.99/32", "dev", "eth0", "nodad"])
            .0
    );
    let spoof_before = spoofed(&rt, 1);
    in_netns(&g(1), || {
        for (src, msg) in [(ip(1), "own"), (Ipv4Addr::new(10, 214, 0, 99), "forged")] {
            let s = UdpSocket::bind((src, 0)).expect("bind source");
            for _ in 0..3 {
                s.send_to(msg.as_bytes(), (ip(2), 9999)).expect("send");
            }
        }
    })
    .join()
    .expect("sender");
    let got = receiver.join().expect("receiver");
    assert!(got.contains(&format!("{}:own", ip(1))), "{got:?}");
    assert!(!got.iter().any(|m| m.ends_with("forged")), "{got:?}");
    assert!(spoofed(&rt, 1) >= spoof_before + 3);
    assert!(
        guests[0]
            .ip(&["addr", "del", "10.214.0.99/32", "dev", "eth0"])
            .0
    );

    // Forged source MAC: nothing gets through.
    let spoof_before = spoofed(&rt, 1);
    assert!(
        guests[0]
            .ip(&["link", "set", "eth0", "address", "02:66:66:66:66:66"])
            .0
    );
    assert!(!ping(&g(1), ip(2)));
    assert!(spoofed(&rt, 1) > spoof_before);
    assert!(guests[0].ip(&["link", "set", "eth0", "address", &mac(1)]).0);

    // ARP for a neighbour's address: guest 1 claims guest 2's address and
    // answers the host's ARP requests for it. The host must keep guest 2's
    // MAC and reach guest 2.
    assert!(
        guests[0]
            .ip(&[
                "addr",
                "add",
                &format!("{}/32", ip(2)),
                "dev",
                "eth0",
                "nodad"
            ])
            .0
    );
    let spoof_before = spoofed(&rt, 1);
    for _ in 0..3 {
        host.ip(&["neigh", "flush", "dev", "nbbr0"]);
        assert!(ping(&host.name, ip(2)));
        let (_, neigh) = host.ip(&["neigh", "show", &ip(2).to_string(), "dev", "nbbr0"]);
        assert!(neigh.contains(&mac(2)), "host neighbour entry: {neigh}");
    }
    assert!(
        spoofed(&rt, 1) > spoof_before,
        "guest 1's ARP replies dropped"
    );
    assert_eq!(fetch(&host.name, g2_svc).as_deref(), Some("guest-2"));
    assert!(
        guests[0]
            .ip(&["addr", "del", &format!("{}/32", ip(2)), "dev", "eth0"])
            .0
    );

    // Adding a port keeps the other counters and lets guest 3 in.
    let kept = spoofed(&rt, 1);
    assert!(kept > 0);
    apply(&rt, &fw, &[1, 2, 3]);
    assert_eq!(spoofed(&rt, 1), kept, "counters survive an update");
    assert!(ping(&g(3), ip(2)));

    // Removing port 1: its chain and counter go, and its frames are dropped
    // again (a TAP without rules).
    apply(&rt, &fw, &[2, 3]);
    let listing = must(&["nft", "list", "table", "bridge", "nubis"]);
    assert!(!listing.contains(&format!("tap_{}", tap(1))), "{listing}");
    assert!(!listing.contains(&format!("spoof_{}", tap(1))), "{listing}");
    assert!(listing.contains(&format!("tap_{}", tap(2))), "{listing}");
    assert!(!ping(&g(1), ip(2)));
    assert!(ping(&g(3), ip(2)));

    // What one update costs (each launch and tear-down makes one): median
    // of 10 forced applies, with the 3 ports here and with 100.
    for n in [3u8, 100] {
        let mut took: Vec<Duration> = (0..10)
            .map(|_| {
                let ports = (1..=n)
                    .map(|i| (tap(i), Port::new(&tap(i), &mac(i), ip(i)).expect("port")))
                    .collect();
                let t = Instant::now();
                rt.block_on(fw.apply(fw.rules(ports), true)).expect("apply");
                t.elapsed()
            })
            .collect();
        took.sort();
        eprintln!("firewall apply: {n} ports, median {:?} of 10", took[5]);
    }
    apply(&rt, &fw, &[2, 3]);

    // Switching off removes both tables.
    rt.block_on(fw.remove()).expect("remove");
    assert!(!run(&["nft", "list", "table", "bridge", "nubis"]).0);
    assert!(!run(&["nft", "list", "table", "inet", "nubis"]).0);
    assert!(ping(&g(1), ip(2)));
}

/// Runs the real agent (standalone) in the test's namespace with `path` as
/// its `PATH`; returns the child.
fn spawn_agent(env: &common::Env, path: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(env.state.path().join("agent.log")).expect("log");
    Command::new("ip")
        .args(["netns", "exec", &env.netns.name, "/usr/bin/env"])
        .arg(format!("PATH={}", path.display()))
        .arg(env!("CARGO_BIN_EXE_nubis-agent"))
        .arg("--config")
        .arg(env.config_path())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn agent")
}

/// Waits up to `secs` for the child to exit; its status, or `None`.
fn wait_exit(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn status_json(env: &common::Env, secs: u64) -> serde_json::Value {
    let path = env.state.path().join("status.json");
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return v;
        }
        assert!(
            Instant::now() < end,
            "no status.json; agent log: {}",
            std::fs::read_to_string(env.state.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_applies_the_firewall_at_start_and_refuses_to_run_without_nft() {
    if !have_prereqs(false) {
        return;
    }
    let env = common::Env::new();
    // No images: the agent's start-up scan (which hashes every image) stays short.
    let no_images = tempfile::tempdir().expect("tempdir");
    let toml = std::fs::read_to_string(env.config_path()).expect("config");
    let toml = toml.replace(
        &format!("image_dir = \"{}\"", common::image_dir().display()),
        &format!("image_dir = \"{}\"", no_images.path().display()),
    );
    assert!(toml.contains(&no_images.path().display().to_string()));
    std::fs::write(env.config_path(), toml).expect("config");
    // A PATH with `ip` (the bridge) but no `nft`.
    let bin = tempfile::tempdir().expect("tempdir");
    let ip_path = must(&["sh", "-c", "command -v ip"]);
    std::os::unix::fs::symlink(ip_path.trim(), bin.path().join("ip")).expect("symlink ip");
    let mut agent = common::KillOnDrop(Vec::new());
    let mut child = spawn_agent(&env, bin.path());
    agent.0.push(child.id() as i32);
    let st = wait_exit(&mut child, 20).expect("the agent must not run without nft");
    assert!(!st.success());
    let log = std::fs::read_to_string(env.state.path().join("agent.log")).unwrap_or_default();
    assert!(
        log.contains("nftables") && log.contains("firewall = false"),
        "the refusal says why: {log}"
    );

    // With the real PATH the rules are in place once the agent runs.
    let sys_path = std::path::PathBuf::from(std::env::var("PATH").unwrap_or_default());
    let mut child = spawn_agent(&env, &sys_path);
    agent.0.push(child.id() as i32);
    let v = status_json(&env, 20);
    assert_eq!(v["firewall"]["enabled"], true, "{v}");
    assert!(v["firewall"]["applied_unix_ms"].as_u64().is_some(), "{v}");
    assert!(
        run(&[
            "ip",
            "netns",
            "exec",
            &env.netns.name,
            "nft",
            "list",
            "table",
            "bridge",
            "nubis"
        ])
        .0
    );
    // The counters are in the agent's Prometheus exposition.
    let sock = env.state.path().join("metrics.sock");
    let end = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let got = std::os::unix::net::UnixStream::connect(&sock)
            .and_then(|mut s| {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })
            .unwrap_or_default();
        if got.contains("nubis_agent_firewall_dropped_packets{") {
            break got;
        }
        assert!(
            Instant::now() < end,
            "no firewall series in /metrics: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("counter=\"host_blocked\""), "{body}");
    let _ = child.kill();
    let _ = child.wait();

    // `firewall = false`: runs without nft, and says so.
    let toml = std::fs::read_to_string(env.config_path()).expect("config");
    let toml = toml.replace(
        "tap_prefix = \"nbt\"",
        "tap_prefix = \"nbt\"\nfirewall = false",
    );
    std::fs::write(env.config_path(), toml).expect("config");
    std::fs::remove_file(env.state.path().join("status.json")).expect("old status");
    let mut child = spawn_agent(&env, bin.path());
    agent.0.push(child.id() as i32);
    let v = status_json(&env, 20);
    assert_eq!(v["firewall"]["enabled"], false, "{v}");
    assert!(wait_exit(&mut child, 1).is_none(), "keeps running");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(env.state.path().join("agent.log")).unwrap_or_default();
    assert!(log.contains("host firewall disabled"), "{log}");
}
