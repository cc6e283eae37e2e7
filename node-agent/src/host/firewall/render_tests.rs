//! Unit tests of the rendered nftables batch (its JSON, as `nft -j -f -`
//! reads it). The kernel's behaviour is tested in
//! `node-agent/tests/firewall.rs`.

use super::*;
use serde_json::{json, Value};

fn port(i: u8) -> Port {
    Port::new(
        &format!("nbt0000000000{i}"),
        &format!("02:4e:42:00:00:{i:02x}"),
        Ipv4Addr::new(10, 200, 0, 10 + i),
    )
    .unwrap()
}

fn rules(n: u8) -> HostRules {
    HostRules {
        bridge: "nbbr0".into(),
        tap_prefix: "nbt".into(),
        ports: (1..=n).map(|i| (port(i).tap.clone(), port(i))).collect(),
    }
}

fn cmds(batch: &Nftables<'_>) -> Vec<Value> {
    let v = serde_json::to_value(batch).unwrap();
    v["nftables"].as_array().unwrap().clone()
}

/// `(family, chain, expr)` of every added rule.
fn added_rules(batch: &Nftables<'_>) -> Vec<(String, String, Value)> {
    cmds(batch)
        .into_iter()
        .filter_map(|c| {
            let r = c.get("add")?.get("rule")?.clone();
            Some((
                r["family"].as_str()?.to_string(),
                r["chain"].as_str()?.to_string(),
                r["expr"].clone(),
            ))
        })
        .collect()
}

fn names(batch: &Nftables<'_>, verb: &str, kind: &str) -> Vec<String> {
    cmds(batch)
        .into_iter()
        .filter_map(|c| Some(c.get(verb)?.get(kind)?["name"].as_str()?.to_string()))
        .collect()
}

#[test]
fn every_port_gets_its_chain_counter_and_identity_rules() {
    let r = rules(3);
    let batch = render(&r, &Existing::default());
    let c = cmds(&batch);
    // The tables are flushed in the same batch (one transaction).
    assert_eq!(
        c[0],
        json!({"add": {"table": {"family": "bridge", "name": "nubis"}}})
    );
    assert_eq!(
        c[1],
        json!({"flush": {"table": {"family": "bridge", "name": "nubis"}}})
    );
    assert_eq!(
        c[3],
        json!({"flush": {"table": {"family": "inet", "name": "nubis"}}})
    );
    let chains = names(&batch, "add", "chain");
    for p in r.ports.values() {
        assert!(chains.contains(&tap_chain(&p.tap)), "{chains:?}");
    }
    assert!(chains.contains(&"prerouting".to_string()));
    assert!(chains.contains(&"input".to_string()));
    let counters = names(&batch, "add", "counter");
    assert_eq!(counters.len(), 3 + 2, "{counters:?}");
    assert!(counters.contains(&UNKNOWN_TAP.to_string()));
    assert!(counters.contains(&HOST_BLOCKED.to_string()));
    assert!(names(&batch, "delete", "chain").is_empty());

    let rs = added_rules(&batch);
    // One verdict-map rule dispatching each TAP to its chain.
    let vmap: Vec<_> = rs
        .iter()
        .filter(|(_, ch, e)| ch == "prerouting" && e[0].get("vmap").is_some())
        .collect();
    assert_eq!(vmap.len(), 1);
    let entries = vmap[0].2[0]["vmap"]["data"]["set"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries[0],
        json!(["nbt00000000001", {"jump": {"target": "tap_nbt00000000001"}}])
    );
    // TAPs without rules are dropped and counted.
    assert!(rs.iter().any(|(f, ch, e)| f == "bridge"
        && ch == "prerouting"
        && e[0]["match"]["right"] == "nbt*"
        && e[1] == json!({"counter": "unknown_tap"})
        && e[2] == json!({"drop": null})));

    // Port 2's chain checks its own MAC and address, counting into its counter.
    let p2: Vec<&Value> = rs
        .iter()
        .filter(|(_, ch, _)| ch == "tap_nbt00000000002")
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(p2.len(), 7);
    let check = |proto: &str, field: &str, want: &str| {
        p2.iter().any(|e| {
            e[0]["match"]["op"] == "!="
                && e[0]["match"]["left"]["payload"] == json!({"protocol": proto, "field": field})
                && e[0]["match"]["right"] == want
                && e[1] == json!({"counter": "spoof_nbt00000000002"})
                && e[2] == json!({"drop": null})
        })
    };
    assert!(check("ether", "saddr", "02:4e:42:00:00:02"));
    assert!(check("arp", "saddr ether", "02:4e:42:00:00:02"));
    assert!(check("arp", "saddr ip", "10.200.0.12"));
    assert!(check("ip", "saddr", "10.200.0.12"));
    assert!(!check("ip", "saddr", "10.200.0.11"));
    // Anything not ARP or IPv4 ends in a counted drop.
    assert_eq!(
        *p2[6],
        json!([{"counter": "spoof_nbt00000000002"}, {"drop": null}])
    );

    // Host protection: only established/related and echo requests from the bridge.
    let input: Vec<&Value> = rs
        .iter()
        .filter(|(f, ch, _)| f == "inet" && ch == "input")
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(input.len(), 3);
    for e in &input {
        assert_eq!(
            e[0]["match"],
            json!({"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "nbbr0"})
        );
    }
    assert_eq!(
        input[0][1]["match"]["right"],
        json!(["established", "related"])
    );
    assert_eq!(input[1][1]["match"]["right"], "echo-request");
    assert_eq!(input[2][1], json!({"counter": "host_blocked"}));
    assert_eq!(input[2][2], json!({"drop": null}));
}

#[test]
fn a_removed_port_loses_chain_and_counter_and_others_keep_theirs() {
    let before = rules(3);
    let mut after = before.clone();
    after.ports.remove("nbt00000000002");
    let batch = render(&after, &before.existing());
    assert_eq!(names(&batch, "delete", "chain"), vec!["tap_nbt00000000002"]);
    assert_eq!(
        names(&batch, "delete", "counter"),
        vec!["spoof_nbt00000000002"]
    );
    // Existing counters are not re-added (their counts stay).
    assert!(names(&batch, "add", "counter").is_empty());
    let rs = added_rules(&batch);
    assert!(!rs.iter().any(|(_, ch, _)| ch == "tap_nbt00000000002"));
    assert_eq!(
        rs.iter()
            .filter(|(_, ch, _)| ch.starts_with("tap_"))
            .count(),
        2 * 7
    );
    // Applying the same rules again deletes and adds nothing but rules.
    let again = render(&after, &after.existing());
    assert!(names(&again, "delete", "chain").is_empty());
    assert!(names(&again, "delete", "counter").is_empty());
    assert!(names(&again, "add", "counter").is_empty());
}

#[test]
fn no_ports_means_no_map_but_unknown_taps_still_dropped() {
    let r = rules(0);
    let batch = render(&r, &rules(2).existing());
    let rs = added_rules(&batch);
    assert!(!rs.iter().any(|(_, _, e)| e[0].get("vmap").is_some()));
    assert!(rs
        .iter()
        .any(|(_, ch, e)| ch == "prerouting" && e[1] == json!({"counter": "unknown_tap"})));
    assert_eq!(names(&batch, "delete", "chain").len(), 2);
    assert_eq!(names(&batch, "delete", "counter").len(), 2);
}

#[test]
fn removal_adds_then_deletes_both_tables() {
    let c = cmds(&render_removal());
    assert_eq!(c.len(), 4);
    assert_eq!(
        c[1],
        json!({"delete": {"table": {"family": "bridge", "name": "nubis"}}})
    );
    assert_eq!(
        c[3],
        json!({"delete": {"table": {"family": "inet", "name": "nubis"}}})
    );
}

#[test]
fn ports_are_validated() {
    let ip = Ipv4Addr::new(10, 0, 0, 5);
    assert!(Port::new("nbtabc", "02:4E:42:0a:0b:0c", ip).is_ok());
    assert_eq!(
        Port::new("nbtabc", "02:4E:42:0a:0b:0c", ip).unwrap().mac,
        [2, 0x4e, 0x42, 10, 11, 12]
    );
    for bad_tap in ["", "nbt0123456789abc", "nbt x", "nbt\"", "a;b"] {
        assert!(
            Port::new(bad_tap, "02:00:00:00:00:01", ip).is_err(),
            "{bad_tap:?}"
        );
    }
    for bad_mac in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "02-00-00-00-00-01",
        "0g:00:00:00:00:01",
        "2:00:00:00:00:01",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
    ] {
        assert!(Port::new("nbtabc", bad_mac, ip).is_err(), "{bad_mac:?}");
    }
    for bad_ip in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1]] {
        assert!(Port::new("nbtabc", "02:00:00:00:00:01", Ipv4Addr::from(bad_ip)).is_err());
    }
}

#[test]
fn listings_give_chains_and_counter_values() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "bridge", "name": "nubis", "handle": 1}},
        {"counter": {"family": "bridge", "name": "spoof_a", "table": "nubis", "handle": 1, "packets": 5, "bytes": 7}},
        {"counter": {"family": "bridge", "name": "unknown_tap", "table": "nubis", "handle": 2, "packets": 0, "bytes": 0}},
        {"chain": {"family": "bridge", "table": "nubis", "name": "prerouting", "handle": 3, "type": "filter", "hook": "prerouting", "prio": -200, "policy": "accept"}},
        {"chain": {"family": "bridge", "table": "nubis", "name": "tap_a", "handle": 4}},
        {"rule": {"family": "bridge", "table": "nubis", "chain": "tap_a", "handle": 8, "expr": []}}]}"#;
    let (chains, counters) = parse_listing(json).unwrap();
    assert_eq!(
        chains.into_iter().collect::<Vec<_>>(),
        vec!["prerouting", "tap_a"]
    );
    assert_eq!(counters.get("spoof_a"), Some(&5));
    assert_eq!(counters.get("unknown_tap"), Some(&0));
    assert!(parse_listing("{}").is_err());
    assert!(parse_listing("not json").is_err());
}
