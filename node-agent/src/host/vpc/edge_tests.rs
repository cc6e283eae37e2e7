use std::collections::BTreeMap;

use nubis_proto::node::v1 as pb;

use super::*;
use crate::host::vpc::links::{self, Kernel, Route};
use crate::host::vpc::model::{self, LocalPort};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const GW: &str = "10.254.0.254";

/// A VPC `vni` whose subnet 10.0.1.0/24 routes to the internet (when
/// `internet`) and 10.0.2.0/24 does not; `eps` = (instance, address, public).
fn vpc(vni: u32, internet: bool, eps: &[(&str, &str, &str)]) -> pb::VpcView {
    pb::VpcView {
        vpc_id: format!("vpc-{vni:x}"),
        vni,
        cidr: "10.0.0.0/16".into(),
        subnets: [("10.0.1", internet), ("10.0.2", false)]
            .iter()
            .map(|(p, i)| pb::SubnetView {
                subnet_id: format!("subnet-{p}"),
                cidr: format!("{p}.0/24"),
                gateway: format!("{p}.1"),
                internet_route: *i,
            })
            .collect(),
        endpoints: eps
            .iter()
            .map(|(id, addr, public)| pb::Endpoint {
                instance_id: id.to_string(),
                ip: addr.to_string(),
                mac: "02:4e:42:00:00:01".into(),
                subnet_id: String::new(),
                node_underlay_ip: "10.254.0.1".into(),
                node_id: "a".into(),
                security_group_ids: vec!["sg-1".into()],
                public_ip: public.to_string(),
                ..Default::default()
            })
            .collect(),
        security_groups: vec![],
    }
}

fn port(id: &str, tap: &str, addr: &str, vni: u32) -> LocalPort {
    let a = ip(addr);
    let gw = Ipv4Addr::new(a.octets()[0], a.octets()[1], a.octets()[2], 1);
    LocalPort::new(id, tap, "02:4e:42:00:00:01", a, gw, vni).unwrap()
}

/// The host plan (with its edge part) of `ports` under `vpcs`.
fn host_plan(vpcs: Vec<pb::VpcView>, ports: &[LocalPort], gateway: Option<&str>) -> Plan {
    let view = NetView::from_proto(&pb::NetworkView { revision: 1, vpcs });
    let vnis = ports.iter().map(|p| p.vni).collect();
    let mut zones = BTreeMap::new();
    model::assign_zones(&mut zones, &vnis);
    let mut p = model::plan(
        ports,
        Some(&view),
        Some(ip("10.254.0.1")),
        Some("ul0"),
        &zones,
    );
    p.edge = plan(&p, Some(&view), gateway.map(ip));
    p
}

#[test]
fn the_view_parses_public_addresses_and_internet_routes() {
    let v = NetView::from_proto(&pb::NetworkView {
        revision: 1,
        vpcs: vec![vpc(
            0x101,
            true,
            &[
                ("i-a", "10.0.1.10", "198.51.100.5"),
                ("i-b", "10.0.1.11", ""),
                ("i-c", "10.0.1.12", "not-an-ip"),
                ("i-d", "10.0.1.13", "127.0.0.1"),
                ("i-e", "10.0.1.14", "224.0.0.9"),
                ("i-f", "10.0.1.15", "0.0.0.0"),
            ],
        )],
    });
    let v = &v.vpcs[&0x101];
    let public = |id: &str| v.endpoints[id].public_ip;
    assert_eq!(public("i-a"), Some(ip("198.51.100.5")));
    // No address, or a bad one: the endpoint stays (private traffic), with
    // no public address.
    for id in ["i-b", "i-c", "i-d", "i-e", "i-f"] {
        assert_eq!(public(id), None, "{id}");
    }
    assert!(v.subnets[0].internet_route);
    assert!(!v.subnets[1].internet_route);
}

#[test]
fn only_listed_public_instances_of_internet_routed_subnets_are_served() {
    let p = host_plan(
        vec![
            vpc(
                0x101,
                true,
                &[
                    ("i-pub", "10.0.1.10", "198.51.100.5"),
                    ("i-priv", "10.0.1.11", ""),
                    // A public address in a subnet without internet route.
                    ("i-noigw", "10.0.2.12", "198.51.100.6"),
                    // Listed with another address than the local port's.
                    ("i-moved", "10.0.1.99", "198.51.100.7"),
                    // Not local.
                    ("i-remote", "10.0.1.20", "198.51.100.8"),
                ],
            ),
            // The same private address in a VPC without internet route.
            vpc(0x202, false, &[("i-other", "10.0.1.10", "198.51.100.9")]),
        ],
        &[
            port("i-pub", "nbt1", "10.0.1.10", 0x101),
            port("i-priv", "nbt2", "10.0.1.11", 0x101),
            port("i-noigw", "nbt3", "10.0.2.12", 0x101),
            port("i-moved", "nbt4", "10.0.1.13", 0x101),
            port("i-other", "nbt5", "10.0.1.10", 0x202),
            port("i-unlisted", "nbt6", "10.0.1.14", 0x101),
        ],
        Some(GW),
    );
    let e = &p.edge;
    assert_eq!(e.publics.len(), 1, "{e:?}");
    let p1 = &e.publics[&ip("198.51.100.5")];
    assert_eq!(
        (p1.vni, p1.tap.as_str(), p1.private),
        (0x101, "nbt1", ip("10.0.1.10"))
    );
    assert_eq!(p1.zone, p.vpcs[&0x101].zone);
    assert_eq!(e.gateway, Some(ip(GW)));
    assert_eq!(e.dev.as_deref(), Some("ul0"));
    assert_eq!(e.default_route(0x101), Some((ip(GW), "ul0")));
    assert_eq!(e.default_route(0x202), None);
    assert_eq!(e.unserved, 0);
}

#[test]
fn without_edge_gateway_nothing_is_served_and_it_is_counted() {
    let vpcs = vec![vpc(0x101, true, &[("i-pub", "10.0.1.10", "198.51.100.5")])];
    let ports = [port("i-pub", "nbt1", "10.0.1.10", 0x101)];
    let p = host_plan(vpcs, &ports, None);
    assert!(p.edge.publics.is_empty());
    assert_eq!(p.edge.unserved, 1);
    assert_eq!(p.edge.default_route(0x101), None);
    // Nothing rendered but the table's removal; the VPC table keeps its
    // blackhole default; the port may not leave for the underlay.
    assert_eq!(render(&p, true)["nftables"].as_array().unwrap().len(), 2);
    let k = Kernel::of_plan(&p);
    assert!(k.routes.contains(&Route::Blackhole {
        table: table_of(0x101)
    }));
    assert_eq!(EdgeKernel::of_plan(&p.edge), EdgeKernel::default());
    let fwd = super::super::nft::render(&p).to_string();
    assert!(!fwd.contains("\"ul0\""), "{fwd}");
}

#[test]
fn a_public_address_claimed_twice_is_left_out() {
    let p = host_plan(
        vec![
            vpc(0x101, true, &[("i-a", "10.0.1.10", "198.51.100.5")]),
            vpc(0x202, true, &[("i-b", "10.0.1.10", "198.51.100.5")]),
        ],
        &[
            port("i-a", "nbt1", "10.0.1.10", 0x101),
            port("i-b", "nbt2", "10.0.1.10", 0x202),
        ],
        Some(GW),
    );
    assert!(p.edge.publics.is_empty());
    assert_eq!(p.edge.conflicts, [ip("198.51.100.5")].into());
}

fn two_vpcs() -> Plan {
    host_plan(
        vec![
            vpc(
                0x101,
                true,
                &[
                    ("i-a", "10.0.1.10", "198.51.100.5"),
                    ("i-p", "10.0.1.11", ""),
                ],
            ),
            vpc(0x202, true, &[("i-b", "10.0.1.10", "198.51.100.6")]),
        ],
        &[
            port("i-a", "nbt1", "10.0.1.10", 0x101),
            port("i-p", "nbt2", "10.0.1.11", 0x101),
            port("i-b", "nbt3", "10.0.1.10", 0x202),
        ],
        Some(GW),
    )
}

fn rules_of(batch: &Value, chain: &str) -> Vec<String> {
    batch["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add").and_then(|a| a.get("rule")))
        .filter(|r| r["chain"] == chain)
        .map(|r| r["expr"].to_string())
        .collect()
}

#[test]
fn the_edge_table_maps_public_addresses_to_zones_marks_and_private_addresses() {
    let p = two_vpcs();
    let (z1, z2) = (p.vpcs[&0x101].zone, p.vpcs[&0x202].zone);
    assert_ne!(z1, z2);
    let b = render(&p, false);
    let ops = b["nftables"].as_array().unwrap();
    // Replaced whole: add, delete, add.
    assert_eq!(ops[0]["add"]["table"]["name"], TABLE);
    assert!(ops[1]["delete"]["table"].is_object());
    assert_eq!(ops[2]["add"]["table"]["family"], "ip");
    let pre = rules_of(&b, "pre");
    assert_eq!(pre.len(), 2);
    assert!(pre[0].contains(r#""right":"ul0""#), "{}", pre[0]);
    assert!(
        pre[0].contains(&format!(r#"["198.51.100.5",{z1}],["198.51.100.6",{z2}]"#)),
        "{}",
        pre[0]
    );
    assert!(
        pre[1].contains(&format!(
            r#"["198.51.100.5",{}],["198.51.100.6",{}]"#,
            table_of(0x101),
            table_of(0x202)
        )),
        "{}",
        pre[1]
    );
    let dnat = rules_of(&b, "dnat");
    assert!(
        dnat[0].contains(r#"["198.51.100.5","10.0.1.10"],["198.51.100.6","10.0.1.10"]"#),
        "{dnat:?}"
    );
    let snat = rules_of(&b, "snat");
    assert_eq!(snat.len(), 2);
    assert!(
        snat[0].contains(r#""right":"nbt1""#)
            && snat[0].contains(r#"{"snat":{"addr":"198.51.100.5"}}"#)
    );
    assert!(
        snat[1].contains(r#""right":"nbt3""#)
            && snat[1].contains(r#"{"snat":{"addr":"198.51.100.6"}}"#)
    );
    let fwd = rules_of(&b, "fwd");
    assert_eq!(fwd.len(), 4, "{fwd:#?}");
    assert!(
        fwd[0].contains(r#"{"set":["nbt1","nbt3"]}"#)
            && fwd[0].contains(r#"["snat","dnat"]"#)
            && fwd[0].contains("accept")
    );
    assert!(fwd[1].contains(r#"{"set":["nbt1","nbt2","nbt3"]}"#) && fwd[1].contains("drop"));
    assert!(fwd[2].contains(r#""mark""#) && fwd[2].contains("drop"));
    // The port without a public address never reaches the underlay.
    assert!(
        fwd[3].contains(r#"{"set":["nbt2"]}"#)
            && fwd[3].contains(r#""oifname"}},"op":"==","right":"ul0""#)
    );
    let post = rules_of(&b, "post");
    assert!(
        post[0].contains(r#"{"set":["198.51.100.5","198.51.100.6"]}"#) && post[0].contains("!=")
    );
}

#[test]
fn an_underlay_the_agent_made_forward_forwards_only_public_traffic() {
    let b = render(&two_vpcs(), true);
    let fwd = rules_of(&b, "fwd");
    assert_eq!(fwd.len(), 3, "{fwd:#?}");
    assert!(fwd[0].contains(r#"["snat","dnat"]"#) && fwd[0].contains("accept"));
    assert_eq!(
        fwd[1],
        r#"[{"match":{"left":{"meta":{"key":"iifname"}},"op":"==","right":"ul0"}},{"drop":null}]"#
    );
    assert!(fwd[2].contains(r#"{"set":["nbt2"]}"#) && fwd[2].contains("drop"));
}

#[test]
fn the_vpc_filters_let_public_ports_reach_the_underlay() {
    let p = two_vpcs();
    let b = super::super::nft::render(&p);
    let fwd: Vec<String> = b["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add").and_then(|a| a.get("rule")))
        .filter(|r| r["family"] == "inet" && r["chain"] == "fwd")
        .map(|r| r["expr"].to_string())
        .collect();
    // Private ports: only VPC devices; public ports: those and ul0.
    assert!(fwd[0].contains(r#"{"set":["nbt2"]}"#), "{}", fwd[0]);
    assert!(!fwd[0].contains("ul0"), "{}", fwd[0]);
    assert!(fwd[1].contains(r#"{"set":["nbt1","nbt3"]}"#), "{}", fwd[1]);
    assert!(fwd[1].contains(r#""ul0""#), "{}", fwd[1]);
}

#[test]
fn vpc_tables_with_public_instances_default_to_the_edge() {
    let p = two_vpcs();
    let k = Kernel::of_plan(&p);
    for vni in [0x101, 0x202] {
        assert!(k.routes.contains(&Route::Default {
            table: table_of(vni),
            via: ip(GW),
            dev: "ul0".into()
        }));
        assert!(!k.routes.contains(&Route::Blackhole {
            table: table_of(vni)
        }));
    }
    // Blackhole <-> edge by `route replace` only (never no default).
    let mut before = k.clone();
    before.routes = before
        .routes
        .into_iter()
        .map(|r| match r {
            Route::Default { table, .. } => Route::Blackhole { table },
            r => r,
        })
        .collect();
    for (have, want) in [(&before, &k), (&k, &before)] {
        let c = links::commands(have, want, Some("ul0"));
        let all = [c.ip_first.clone(), c.ip_then.clone()].concat();
        assert!(all.iter().all(|l| !l.starts_with("route del")), "{all:#?}");
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(all.iter().all(|l| l.starts_with("route replace")));
    }
    let c = links::commands(&before, &k, Some("ul0"));
    assert!(c.ip_then.contains(&format!(
        "route replace default via {GW} dev ul0 table {}",
        table_of(0x101)
    )));
    // And the listing gives it back.
    let routes = format!(
        r#"[{{"dst":"default","gateway":"{GW}","dev":"ul0","table":"{}","flags":[]}}]"#,
        table_of(0x101)
    );
    let found = links::parse("[]", "[]", &routes, "[]", "[]").unwrap();
    assert_eq!(
        found.routes,
        [Route::Default {
            table: table_of(0x101),
            via: ip(GW),
            dev: "ul0".into()
        }]
        .into()
    );
}

#[test]
fn routing_objects_are_added_and_removed_by_difference() {
    let p = two_vpcs();
    let want = EdgeKernel::of_plan(&p.edge);
    assert_eq!(want.routes, [ip("198.51.100.5"), ip("198.51.100.6")].into());
    assert_eq!(want.marks, [table_of(0x101), table_of(0x202)].into());
    let add = commands(&EdgeKernel::default(), &want);
    assert_eq!(
        add,
        vec![
            "route replace 198.51.100.5/32 dev lo proto 78 table main",
            "route replace 198.51.100.6/32 dev lo proto 78 table main",
            "neigh replace proxy 198.51.100.5 dev ul0",
            "neigh replace proxy 198.51.100.6 dev ul0",
            "rule add pref 50 fwmark 0x1000101 lookup 16777473",
            "rule add pref 50 fwmark 0x1000202 lookup 16777730",
        ]
    );
    assert!(commands(&want, &want).is_empty());
    let del = commands(&want, &EdgeKernel::default());
    assert_eq!(del.len(), 6);
    assert!(del[0].starts_with("rule del pref 50 fwmark 0x1000101"));
    assert!(del.iter().all(|l| l.contains(" del ")));

    // The listings, as `ip -j` prints them: only the agent's objects.
    let routes = r#"[{"dst":"10.254.0.0/24","dev":"ul0","scope":"link"},
        {"dst":"198.51.100.5","dev":"lo","protocol":"78","scope":"link"},
        {"dst":"198.51.100.6","dev":"lo","protocol":"78","scope":"link"},
        {"dst":"203.0.113.1","dev":"lo","scope":"link"}]"#;
    let proxies = r#"[{"dst":"198.51.100.5","dev":"ul0","proxy":null},
        {"dst":"198.51.100.6","dev":"ul0","proxy":null},
        {"dst":"192.0.2.1","dev":"eth9","proxy":null}]"#;
    let rules = r#"[{"priority":0,"src":"all","table":"local"},
        {"priority":50,"src":"all","fwmark":"0x1000101","table":"16777473"},
        {"priority":50,"src":"all","fwmark":"0x1000202","table":"16777730"},
        {"priority":50,"src":"all","fwmark":"0x7/0xff","table":"16777473"},
        {"priority":50,"src":"all","iif":"nbt1","table":"16777473"},
        {"priority":32766,"src":"all","table":"main"}]"#;
    let found = parse(routes, proxies, rules, Some("ul0")).unwrap();
    assert_eq!(found, want);
    assert!(parse("{", "[]", "[]", None).is_err());
}

#[test]
fn the_edge_gateway_must_be_on_the_underlay_subnet() {
    let json = r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8}]},
        {"ifname":"ul0","addr_info":[{"local":"10.254.0.1","prefixlen":24}]}]"#;
    let ul = ip("10.254.0.1");
    assert!(check_gateway(json, ul, ip(GW)).is_ok());
    for bad in ["10.254.1.1", "192.0.2.1", "10.254.0.1"] {
        let e = check_gateway(json, ul, ip(bad)).unwrap_err().to_string();
        assert!(
            e.contains("not a next hop on the underlay subnet 10.254.0.0/24"),
            "{e}"
        );
    }
    assert!(check_gateway("{", ul, ip(GW)).is_err());
}

#[test]
fn a_view_kept_before_public_addresses_existed_still_loads() {
    // vpc.json of an agent from before: no public_ip, no internet_route.
    let old = r#"{"revision":3,"vpcs":{"257":{"vpc_id":"vpc-1","vni":257,
        "subnets":[{"id":"subnet-1","cidr":{"addr":"10.0.1.0","len":24},"gateway":"10.0.1.1"}],
        "endpoints":{"i-a":{"instance_id":"i-a","ip":"10.0.1.10","mac":[2,78,66,0,0,1],
            "underlay":"10.254.0.1","groups":["sg-1"]}},
        "groups":{}}}}"#;
    let v: NetView = serde_json::from_str(old).unwrap();
    let vpc = &v.vpcs[&257];
    assert_eq!(vpc.endpoints["i-a"].public_ip, None);
    assert!(!vpc.subnets[0].internet_route);
}
