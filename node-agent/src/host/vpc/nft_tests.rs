use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::*;
use crate::host::vpc::model::{self, Group, LocalPort, NetView, SgRule};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn port(i: u8, vni: u32) -> LocalPort {
    LocalPort::new(
        &format!("i-{i}"),
        &format!("nbt{i}"),
        &format!("02:4e:42:00:00:{i:02x}"),
        ip(&format!("10.0.1.{i}")),
        ip("10.0.1.1"),
        vni,
    )
    .unwrap()
}

/// A plan: ports 10 (listed, groups web) and 11 (not listed) in VPC 0x101.
pub(crate) fn sample_plan() -> Plan {
    let mut groups = BTreeMap::new();
    groups.insert(
        "sg-web".to_string(),
        Group {
            ingress: vec![
                SgRule::new("tcp", 80, 80, "", "sg-client").unwrap(),
                SgRule::new("tcp", 8000, 8080, "10.0.0.0/16", "").unwrap(),
                SgRule::new("icmp", 8, -1, "0.0.0.0/0", "").unwrap(),
            ],
            egress: vec![SgRule::new("-1", -1, -1, "0.0.0.0/0", "").unwrap()],
        },
    );
    let ep = |i: u8, g: &str, underlay: &str| model::Endpoint {
        instance_id: format!("i-{i}"),
        device_index: 0,
        ip: ip(&format!("10.0.1.{i}")),
        mac: [2, 0x4e, 0x42, 0, 0, i],
        underlay: Some(ip(underlay)),
        groups: [g.to_string()].into(),
        public_ip: None,
    };
    let mut endpoints = BTreeMap::new();
    for e in [
        ep(10, "sg-web", "10.254.0.1"),
        ep(20, "sg-client", "10.254.0.2"),
    ] {
        endpoints.insert(e.instance_id.clone(), e);
    }
    let view = NetView {
        revision: 7,
        vpcs: [(
            0x101,
            model::VpcView {
                vpc_id: "vpc-1".into(),
                vni: 0x101,
                subnets: vec![],
                endpoints,
                groups,
            },
        )]
        .into(),
    };
    let zones = [(0x101, 0x101u16)].into();
    model::plan(
        &[port(10, 0x101), port(11, 0x101)],
        Some(&view),
        Some(ip("10.254.0.1")),
        None,
        &zones,
    )
}

fn rules_of<'a>(batch: &'a Value, family: &str, chain: &str) -> Vec<&'a Value> {
    batch["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add").and_then(|a| a.get("rule")))
        .filter(|r| r["family"] == family && r["chain"] == chain)
        .map(|r| &r["expr"])
        .collect()
}

#[test]
fn batch_replaces_both_tables_in_one_transaction() {
    let b = render(&sample_plan());
    if let Ok(p) = std::env::var("NUBIS_DUMP_VPC_NFT") {
        std::fs::write(p, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    }
    let objs = b["nftables"].as_array().unwrap();
    // add + delete (so the delete cannot fail), then add again.
    assert_eq!(objs[0]["add"]["table"]["family"], "inet");
    assert_eq!(objs[1]["delete"]["table"]["name"], TABLE);
    assert_eq!(objs[2]["add"]["table"]["family"], "arp");
    assert_eq!(objs[3]["delete"]["table"]["family"], "arp");
    assert!(objs[4..]
        .iter()
        .any(|o| o["add"]["table"]["family"] == "inet"));
    // Without VPCs: only the removal.
    let empty = render(&Plan::default());
    assert_eq!(empty["nftables"].as_array().unwrap().len(), 4);
}

#[test]
fn zones_and_anti_spoofing() {
    let b = render(&sample_plan());
    let pre = rules_of(&b, "inet", "pre");
    let zone = pre[0][0]["mangle"].clone();
    assert_eq!(zone["key"]["ct"]["key"], "zone");
    let data = zone["value"]["map"]["data"]["set"].as_array().unwrap();
    assert!(data.contains(&json!(["nbt10", 0x101])));
    assert!(data.contains(&json!(["nbt11", 0x101])));
    assert!(data.contains(&json!(["nbx101", 0x101])));
    let sp = rules_of(&b, "inet", "sp_nbt10");
    assert_eq!(sp.len(), 3);
    assert_eq!(sp[0][0]["match"]["right"], "02:4e:42:00:00:0a");
    assert_eq!(sp[0][0]["match"]["op"], "!=");
    assert_eq!(sp[1][0]["match"]["right"], "ipv4");
    assert_eq!(sp[2][0]["match"]["right"], "10.0.1.10");
    let arp = rules_of(&b, "arp", "arp_nbt10");
    assert_eq!(
        arp[0][0]["match"]["left"]["payload"]["field"],
        "saddr ether"
    );
    assert_eq!(arp[1][0]["match"]["right"], "10.0.1.10");
    // Nothing of a routed port or tunnel reaches the host.
    let input = rules_of(&b, "inet", "in");
    let devs = input[0][0]["match"]["right"]["set"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    // VXLAN only from the remote instances' hosts.
    assert_eq!(input[1][0]["match"]["right"], "10.254.0.1");
    assert_eq!(input[1][2]["match"]["right"], 4789);
    assert_eq!(input[1][3]["match"]["op"], "!=");
    assert_eq!(
        input[1][3]["match"]["right"],
        json!({"set": ["10.254.0.2"]})
    );
    assert_eq!(input[1][4], json!({"drop": null}));
}

#[test]
fn unlisted_ports_are_dropped_and_listed_ones_filtered() {
    let b = render(&sample_plan());
    let fwd = rules_of(&b, "inet", "fwd");
    let vmap = |i: usize| fwd[i][0]["vmap"]["data"]["set"].as_array().unwrap().clone();
    // Rules 0 and 1 keep traffic on the VPC's devices; then egress, ingress.
    let eg = vmap(2);
    assert!(eg.contains(&json!(["nbt10", {"jump": {"target": "eg_nbt10"}}])));
    assert!(eg.contains(&json!(["nbt11", {"drop": null}])));
    let ing = vmap(3);
    assert!(ing.contains(&json!(["nbt10", {"jump": {"target": "in_nbt10"}}])));
    assert!(ing.contains(&json!(["nbt11", {"drop": null}])));
    assert!(rules_of(&b, "inet", "in_nbt11").is_empty());
    let arp = rules_of(&b, "arp", "in");
    assert!(arp[0][0]["vmap"]["data"]["set"]
        .as_array()
        .unwrap()
        .contains(&json!(["nbt11", {"drop": null}])));
}

#[test]
fn group_rules_render_stateful_chains_and_member_sets() {
    let b = render(&sample_plan());
    let ing = rules_of(&b, "inet", "in_nbt10");
    // reply, related, 3 rules, drop.
    assert_eq!(ing.len(), 6);
    assert_eq!(ing[0][0]["match"]["right"], "reply");
    assert_eq!(ing[1][0]["match"]["right"], "related");
    assert_eq!(ing[2][0]["match"]["right"], "@g101_sg-client");
    assert_eq!(ing[2][1]["match"]["right"], 6);
    assert_eq!(ing[2][2]["match"]["right"], 80);
    assert_eq!(ing[2][3], json!({"return": null}));
    assert_eq!(
        ing[3][0]["match"]["right"],
        json!({"prefix": {"addr": "10.0.0.0", "len": 16}})
    );
    assert_eq!(ing[3][2]["match"]["right"], json!({"range": [8000, 8080]}));
    // ICMP echo-request from anywhere: no address match.
    assert_eq!(ing[4][0]["match"]["right"], 1);
    assert_eq!(ing[4][1]["match"]["left"]["payload"]["field"], "type");
    assert_eq!(ing[4][1]["match"]["right"], 8);
    assert_eq!(ing[4].as_array().unwrap().len(), 3);
    assert_eq!(*ing[5], json!([{"drop": null}]));
    let eg = rules_of(&b, "inet", "eg_nbt10");
    // All protocols anywhere: a bare return.
    assert_eq!(*eg[2], json!([{"return": null}]));
    // Member sets: the peer group's and the port's own.
    let sets: BTreeMap<String, Value> = b["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"].get("set"))
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    assert_eq!(sets["g101_sg-client"]["elem"], json!(["10.0.1.20"]));
    assert_eq!(sets["g101_sg-web"]["elem"], json!(["10.0.1.10"]));
    let names: BTreeSet<&String> = sets.keys().collect();
    assert_eq!(names.len(), 2);
}

#[test]
fn rule_matches_cover_protocols_and_peers() {
    let r = |p: &str, f: i32, t: i32, c: &str, g: &str| SgRule::new(p, f, t, c, g).unwrap();
    assert_eq!(
        rule_matches(1, &r("-1", -1, -1, "0.0.0.0/0", ""), "saddr"),
        Vec::<Value>::new()
    );
    let udp = rule_matches(1, &r("udp", 53, 53, "10.0.0.5/32", ""), "daddr");
    assert_eq!(udp[0]["match"]["right"], "10.0.0.5");
    assert_eq!(udp[0]["match"]["left"]["payload"]["field"], "daddr");
    assert_eq!(udp[1]["match"]["right"], 17);
    assert_eq!(udp[2]["match"]["right"], 53);
    let gre = rule_matches(1, &r("47", -1, -1, "0.0.0.0/0", ""), "saddr");
    assert_eq!(
        gre,
        vec![json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 47}})]
    );
    let icmp = rule_matches(1, &r("icmp", 3, 4, "0.0.0.0/0", ""), "saddr");
    assert_eq!(icmp.len(), 3);
    assert_eq!(icmp[2]["match"]["left"]["payload"]["field"], "code");
    let any_tcp = rule_matches(1, &r("tcp", -1, -1, "0.0.0.0/0", ""), "saddr");
    assert_eq!(any_tcp.len(), 1);
}
