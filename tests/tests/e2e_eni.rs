//! End to end: a secondary network interface (an ENI at device index 1)
//! carried through the whole stack to a real hello guest, on two hosts of
//! one zone joined by the cluster's fabric.
//!
//! Instance A has its primary interface in the zone's default subnet
//! (group `web`) and, attached while it is stopped, an interface in a
//! second subnet (group `db`, all traffic from `client`). Instance B, in the second subnet on the
//! other host (group `client`), reaches A's secondary address with ping and
//! HTTP while `db` allows it, and A's primary address over HTTP (`web`
//! allows it); once `db`'s rules are revoked, the secondary address is
//! closed and the primary keeps answering. The guest itself originates and
//! reports the traffic (`nubis-probe` user data).

use std::time::Duration;

use nubis_tests::cluster::console::probes;
use nubis_tests::cluster::ops::field;
use nubis_tests::cluster::{self, Cluster, ClusterSpec, Creds};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(120);

/// Two hosts in one zone.
fn two_hosts_one_zone() -> Option<Cluster> {
    if !cluster::prerequisites_met() {
        return None;
    }
    let mut spec = ClusterSpec::three_zones(6);
    spec.agents.truncate(2);
    let z0 = spec.agents[0].zone.clone();
    spec.agents[1].zone = z0;
    Some(Cluster::start(spec).expect("cluster"))
}

fn json(c: &Cluster, t: &Creds, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = c.cli(t, &a);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    out.json()
}

/// The items of a list answer (`{"<kind>": [...]}`).
fn items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(m) => m
            .values()
            .find_map(|x| x.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn ok(c: &Cluster, t: &Creds, args: &[&str]) {
    let out = c.cli(t, args);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
}

/// The agent directory (`agents/aN`) holding `id`: its host.
fn host_of(c: &Cluster, id: &str) -> String {
    c.instance_file(id, "net.json")
        .and_then(|p| p.ancestors().nth(4).map(|a| a.display().to_string()))
        .unwrap_or_default()
}

fn group(c: &Cluster, t: &Creds, name: &str) -> String {
    let v = json(
        c,
        t,
        &["security-groups", "create", name, "--description", name],
    );
    field(&v, "group_id")
}

/// `verb` (authorize|revoke) `proto` (with `port`) into `to` from members
/// of `from`.
fn rule(c: &Cluster, t: &Creds, verb: &str, to: &str, proto: &str, port: Option<&str>, from: &str) {
    let mut args = vec!["security-groups", verb, to, "--protocol", proto];
    if let Some(p) = port {
        args.extend(["--port", p]);
    }
    args.extend(["--source-group", from]);
    ok(c, t, &args);
}

fn last_seq(console: &str, dst: &str, check: &str) -> u64 {
    probes(console, dst, check).last().map_or(0, |p| p.seq)
}

#[test]
fn a_secondary_interface_is_reached_through_its_own_group() {
    let Some(c) = two_hosts_one_zone() else {
        return;
    };
    let t = c.tenant.clone().expect("tenant");
    let z0 = c.describe()["hosts"][0]["zone"]
        .as_str()
        .expect("zone")
        .to_string();

    // The default VPC, a second subnet in the zone, three groups.
    let vpcs = json(&c, &t, &["vpcs", "list"]);
    let vpc = items(&vpcs)
        .iter()
        .find(|v| v["is_default"] == true)
        .map(|v| field(v, "vpc_id"))
        .expect("a default VPC");
    let s2 = field(
        &json(
            &c,
            &t,
            &["subnets", "create", &vpc, "172.31.128.0/24", "--zone", &z0],
        ),
        "subnet_id",
    );
    let (web, db, client) = (
        group(&c, &t, "web"),
        group(&c, &t, "db"),
        group(&c, &t, "client"),
    );
    rule(&c, &t, "authorize", &web, "tcp", Some("80"), &client);
    rule(&c, &t, "authorize", &db, "all", None, &client);
    let eni = json(
        &c,
        &t,
        &["network-interfaces", "create", &s2, "--group", &db],
    );
    let (eni_id, eni_ip) = (
        field(&eni, "network_interface_id"),
        field(&eni, "private_ip_address"),
    );
    assert!(eni_ip.starts_with("172.31.128."), "{eni}");

    // A: launched, stopped, the interface attached at device index 1,
    // started again.
    let (a, a_ip) = c.launch_hello(&t, &z0, "", &["--security-group", &web]);
    let running = c.cli(
        &t,
        &[
            "network-interfaces",
            "attach",
            &eni_id,
            "--instance",
            &a,
            "--device-index",
            "1",
        ],
    );
    assert_ne!(running.code, 0, "attached to a running instance");
    assert!(
        running.stderr.contains("IncorrectInstanceState"),
        "{}",
        running.stderr
    );
    ok(&c, &t, &["instances", "stop", &a]);
    c.wait_state(&t, std::slice::from_ref(&a), "stopped");
    let att = json(
        &c,
        &t,
        &[
            "network-interfaces",
            "attach",
            &eni_id,
            "--instance",
            &a,
            "--device-index",
            "1",
        ],
    );
    assert!(
        field(&att, "attachment_id").starts_with("eni-attach-"),
        "{att}"
    );
    ok(&c, &t, &["instances", "start", &a]);
    c.wait_state(&t, std::slice::from_ref(&a), "running");
    c.wait_console_until(&t, &a, "the second interface up", BOOT, |text| {
        text.contains(&format!("NUBIS-NET1 ip={eni_ip}/24"))
    });

    // B: in the second subnet, on the other host. Both hosts this empty,
    // the scheduler would pick either (spread draws among the hosts within
    // SPREAD_JITTER of the least used): A's host is cordoned meanwhile.
    let nodes = c.nodes().expect("nodes");
    let a_node = nodes
        .iter()
        .find(|n| n["instance_count"].as_u64() == Some(1))
        .map(|n| field(n, "node_id"))
        .unwrap_or_else(|| panic!("no node holds A alone: {nodes:?}"));
    let out = c.admin_cli(&["admin", "nodes", "cordon", &a_node]);
    assert_eq!(out.code, 0, "cordon: {}", out.stderr);
    let (b, b_ip) = c.launch_hello(
        &t,
        &z0,
        &format!("nubis-probe {eni_ip} icmp,http:80\nnubis-probe {a_ip} http:80\n"),
        &["--subnet", &s2, "--security-group", &client],
    );
    let out = c.admin_cli(&["admin", "nodes", "uncordon", &a_node]);
    assert_eq!(out.code, 0, "uncordon: {}", out.stderr);
    assert!(b_ip.starts_with("172.31.128."), "{b_ip}");
    let (na, nb) = (host_of(&c, &a), host_of(&c, &b));
    assert!(
        !na.is_empty() && na != nb,
        "A and B share a host: {na} {nb}"
    );
    let reached = |text: &str, dst: &str, check: &str| {
        probes(text, dst, check)
            .iter()
            .any(|p| p.result == "ok" && (check == "icmp" || p.peer.as_deref() == Some(a.as_str())))
    };
    c.wait_console_until(
        &t,
        &b,
        "ping + HTTP to A's secondary, HTTP to A's primary",
        BOOT,
        |text| {
            reached(text, &eni_ip, "icmp")
                && reached(text, &eni_ip, "http:80")
                && reached(text, &a_ip, "http:80")
        },
    );

    // db revoked: the secondary address is closed; the primary stays open.
    rule(&c, &t, "revoke", &db, "all", None, &client);
    let base = last_seq(&c.console(&t, &b), &eni_ip, "http:80");
    let (text, _) = c.wait_console_until(&t, &b, "4 rounds after the revoke", BOOT, |text| {
        last_seq(text, &eni_ip, "http:80") >= base + 4
            && last_seq(text, &a_ip, "http:80") >= base + 4
    });
    for check in ["icmp", "http:80"] {
        let after: Vec<_> = probes(&text, &eni_ip, check)
            .into_iter()
            .filter(|p| p.seq > base + 1)
            .collect();
        assert!(
            !after.is_empty() && after.iter().all(|p| p.result != "ok"),
            "{check} to the secondary address passed after the revoke: {after:?}"
        );
    }
    let primary: Vec<_> = probes(&text, &a_ip, "http:80")
        .into_iter()
        .filter(|p| p.seq > base + 1)
        .collect();
    assert!(
        !primary.is_empty() && primary.iter().all(|p| p.result == "ok"),
        "the primary address stopped answering: {primary:?}"
    );

    // Listed with its attachment; terminate detaches it (not
    // deleteOnTermination), keeping its address.
    let listed = json(&c, &t, &["network-interfaces", "list"]);
    let mine = items(&listed)
        .into_iter()
        .find(|e| field(e, "network_interface_id") == eni_id)
        .expect("the interface listed");
    assert_eq!(field(&mine, "instance_id"), a, "{mine}");
    assert_eq!(mine["device_index"], 1, "{mine}");
    ok(&c, &t, &["instances", "terminate", &a]);
    c.wait_state(&t, std::slice::from_ref(&a), "terminated");
    let listed = json(&c, &t, &["network-interfaces", "list"]);
    let mine = items(&listed)
        .into_iter()
        .find(|e| field(e, "network_interface_id") == eni_id)
        .expect("the interface kept");
    assert_eq!(field(&mine, "status"), "available", "{mine}");
    assert_eq!(field(&mine, "private_ip_address"), eni_ip);
}
