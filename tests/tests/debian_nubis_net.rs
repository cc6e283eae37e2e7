//! The Debian image's `nubis-net` (deploy/images/debian/rootfs/usr/lib/nubis/
//! nubis-net), the script that configures a guest's interfaces from the
//! kernel command line, run in a network namespace whose links are
//! named as a guest's (`eth0`..`eth2`): the first interface from `ip=`/`gw=`,
//! secondary ones from `nubis.net<N>=` with a routing table of their own
//! for traffic from their address (also when two interfaces share a
//! subnet), bad arguments ignored with a message; running it again changes
//! nothing. The image under QEMU is tests/tests/debian_image_qemu.rs.

use std::path::PathBuf;
use std::process::Command;

use nubis_tests::frame_bridge::NetNs;

fn script() -> PathBuf {
    nubis_tests::workspace_root().join("deploy/images/debian/rootfs/usr/lib/nubis/nubis-net")
}

/// Runs the script in `ns` with `cmdline`; (success, stdout + stderr).
fn run(ns: &NetNs, cmdline: &str, dir: &std::path::Path) -> (bool, String) {
    let file = dir.join("cmdline");
    std::fs::write(&file, cmdline).expect("write cmdline");
    let out = ns
        .command("sh")
        .arg(script())
        .env("NUBIS_NET_CMDLINE", &file)
        .output()
        .expect("run nubis-net");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `ip ARGS` in `ns`, its stdout.
fn show(ns: &NetNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.name()])
        .args(args)
        .output()
        .expect("ip");
    assert!(out.status.success(), "ip {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Addresses, routes of every table and rules: what the script changes.
fn state(ns: &NetNs) -> String {
    [
        show(ns, &["-4", "-o", "address", "show"]),
        show(ns, &["-4", "route", "show", "table", "all"]),
        show(ns, &["-4", "rule", "show"]),
    ]
    .join("\n")
}

#[test]
fn nubis_net_configures_the_primary_and_secondary_interfaces_idempotently() {
    // SAFETY: geteuid has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    if !nubis_tests::prerequisite(root, "root (network namespaces)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = NetNs::create("nbt-debnet").expect("network namespace");
    // Each link's peer in a namespace of its own, up: the links have carrier.
    let peers = NetNs::create("nbt-debpeer").expect("network namespace");
    for (l, p) in [("eth0", "p0"), ("eth1", "p1"), ("eth2", "p2")] {
        ns.ip(&[
            "link",
            "add",
            l,
            "type",
            "veth",
            "peer",
            "name",
            p,
            "netns",
            peers.name(),
        ])
        .expect("veth pair");
        peers.ip(&["link", "set", p, "up"]).expect("peer up");
    }

    // Without ip=: nothing to do.
    let (ok, out) = run(&ns, "console=ttyS0 nubis.net1=10.0.2.20/24", dir.path());
    assert!(ok && out.contains("nothing to do"), "{out}");
    assert!(
        !show(&ns, &["-4", "address", "show"]).contains("10.0."),
        "{out}"
    );

    let cmdline = "console=ttyS0 ip=10.0.1.10/24 gw=10.0.1.1 \
                   nubis.net1=10.0.2.20/24,10.0.2.1 nubis.net2=10.0.1.30/24 \
                   nubis.net3=10.0.3.5/24 nubis.net0=1.2.3.4/8 nubis.net2x=bad";
    let (ok, out) = run(&ns, cmdline, dir.path());
    assert!(ok, "{out}");
    let first = state(&ns);
    let addr = |dev: &str| show(&ns, &["-4", "-o", "address", "show", "dev", dev]);
    assert!(addr("eth0").contains("inet 10.0.1.10/24"), "{first}");
    assert!(addr("eth1").contains("inet 10.0.2.20/24"), "{first}");
    assert!(addr("eth2").contains("inet 10.0.1.30/24"), "{first}");
    // The primary's default route in the main table.
    let main = show(&ns, &["-4", "route", "show"]);
    assert!(main.contains("default via 10.0.1.1 dev eth0"), "{main}");
    assert!(
        !main.contains("10.0.2.1"),
        "a secondary gateway in main: {main}"
    );
    // A secondary's table: its subnet and its gateway, for its address.
    let t101 = show(&ns, &["-4", "route", "show", "table", "101"]);
    assert!(t101.contains("default via 10.0.2.1 dev eth1"), "{t101}");
    assert!(t101.contains("10.0.2.0/24 dev eth1"), "{t101}");
    let rules = show(&ns, &["-4", "rule", "show"]);
    assert!(rules.contains("101:\tfrom 10.0.2.20 lookup 101"), "{rules}");
    // One in the primary's subnet: its own subnet route, no gateway.
    let t102 = show(&ns, &["-4", "route", "show", "table", "102"]);
    assert!(t102.contains("10.0.1.0/24 dev eth2"), "{t102}");
    assert!(!t102.contains("default"), "{t102}");
    assert!(rules.contains("102:\tfrom 10.0.1.30 lookup 102"), "{rules}");
    // Whichever interface is asked, traffic from an address leaves by its own.
    let via = show(
        &ns,
        &["-4", "route", "get", "10.0.1.99", "from", "10.0.1.30"],
    );
    assert!(via.contains("dev eth2"), "{via}");
    let via = show(
        &ns,
        &["-4", "route", "get", "192.0.2.9", "from", "10.0.2.20"],
    );
    assert!(via.contains("via 10.0.2.1 dev eth1"), "{via}");
    // No interface for device index 3; index 0 and junk ignored.
    assert!(out.contains("no interface for nubis.net3"), "{out}");
    assert!(out.contains("ignoring nubis.net0"), "{out}");
    assert!(
        !first.contains("1.2.3.4") && !first.contains("10.0.3.5"),
        "{first}"
    );

    // Again: the same state.
    let (ok, out) = run(&ns, cmdline, dir.path());
    assert!(ok, "{out}");
    assert_eq!(state(&ns), first, "a second run changed the configuration");
}
