use super::*;
use crate::host::vpc::nft::tests::sample_plan;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn a_plan_needs_rules_routes_neighbours_fdb_and_a_device() {
    let k = Kernel::of_plan(&sample_plan());
    let t = table_of(0x101);
    assert!(k.local_moved);
    assert!(k.rules.contains(&("nbt10".to_string(), t)));
    assert!(k.rules.contains(&("nbt11".to_string(), t)));
    assert!(k.rules.contains(&("nbx101".to_string(), t)));
    assert!(k.routes.contains(&Route::Blackhole { table: t }));
    assert!(k.routes.contains(&Route::Host {
        table: t,
        dst: ip("10.0.1.10"),
        dev: "nbt10".into(),
        tunnel: false
    }));
    assert!(k.routes.contains(&Route::Host {
        table: t,
        dst: ip("10.0.1.20"),
        dev: "nbx101".into(),
        tunnel: true
    }));
    let vtep = crate::host::vpc::model::vtep_mac(ip("10.254.0.2"), 0x101);
    assert!(k.neighs.contains(&("nbx101".into(), ip("10.0.1.20"), vtep)));
    assert!(k.fdb.contains(&("nbx101".into(), vtep, ip("10.254.0.2"))));
    assert_eq!(k.vxlans["nbx101"].local, ip("10.254.0.1"));
    assert_eq!(Kernel::of_plan(&Plan::default()), Kernel::default());
}

#[test]
fn commands_add_what_is_missing_and_nothing_twice() {
    let want = Kernel::of_plan(&sample_plan());
    let c = commands(&Kernel::default(), &want, Some("eth1"));
    assert!(c
        .ip_first
        .iter()
        .any(|l| l.starts_with("link add nbx101 address 06:")
            && l.ends_with("type vxlan id 257 local 10.254.0.1 dstport 4789 nolearning dev eth1")));
    assert!(c.ip_first.contains(&"link set dev nbx101 up".to_string()));
    assert!(c
        .bridge
        .iter()
        .any(|l| l.ends_with("dev nbx101 dst 10.254.0.2 self permanent")));
    assert!(c.ip_then.contains(&format!(
        "rule add pref 50 iif nbt10 lookup {}",
        table_of(0x101)
    )));
    assert!(c
        .ip_then
        .contains(&"rule add pref 100 lookup local".to_string()));
    assert_eq!(c.ip_then.last().unwrap(), "rule del pref 0 lookup local");
    // Applied: nothing more to do.
    assert!(commands(&want, &want, Some("eth1")).is_empty());
}

#[test]
fn commands_remove_what_is_extra() {
    let want = Kernel::of_plan(&sample_plan());
    let t = table_of(0x101);
    // One port gone: its rule and route go; the device stays.
    let mut fewer = want.clone();
    fewer.rules.remove(&("nbt11".to_string(), t));
    fewer
        .routes
        .retain(|r| !matches!(r, Route::Host { dev, .. } if dev == "nbt11"));
    fewer.neighs.retain(|n| n.0 != "nbt11");
    let c = commands(&want, &fewer, None);
    assert_eq!(
        c.ip_first,
        vec![
            format!("rule del pref 50 iif nbt11 lookup {t}"),
            format!("route del 10.0.1.11/32 dev nbt11 table {t}"),
            "neigh del 10.0.1.11 dev nbt11".to_string(),
        ]
    );
    assert!(c.ip_then.is_empty() && c.bridge.is_empty());
    // Everything gone: the device is deleted (its routes, neighbours and FDB
    // entries with it), the rest one by one; the local rule stays moved.
    let none = Kernel {
        local_moved: true,
        ..Kernel::default()
    };
    let c = commands(&want, &none, None);
    assert!(c.ip_first.contains(&"link del dev nbx101".to_string()));
    assert!(!c.ip_first.iter().any(|l| l.contains("dev nbx101 table")));
    assert!(c.bridge.is_empty());
    assert!(c
        .ip_first
        .contains(&format!("route del blackhole default table {t}")));
    assert!(c.ip_then.is_empty());
}

#[test]
fn a_wrong_device_is_made_again_with_its_entries() {
    let want = Kernel::of_plan(&sample_plan());
    let mut have = want.clone();
    have.vxlans.get_mut("nbx101").unwrap().local = ip("10.254.0.9");
    let c = commands(&have, &want, None);
    assert!(c.ip_first.contains(&"link del dev nbx101".to_string()));
    assert!(c.ip_first.iter().any(|l| l.starts_with("link add nbx101")));
    assert_eq!(c.bridge.len(), 1);
    assert!(c
        .ip_then
        .iter()
        .any(|l| l.starts_with("neigh replace 10.0.1.20")));
    assert!(c
        .ip_then
        .iter()
        .any(|l| l.starts_with("route replace 10.0.1.20/32 dev nbx101")));
}

#[test]
fn pruning_forgets_entries_of_vanished_devices() {
    let mut k = Kernel::of_plan(&sample_plan());
    k.prune(|d| d != "nbt11");
    assert!(!k.neighs.iter().any(|n| n.0 == "nbt11"));
    assert!(!k
        .routes
        .iter()
        .any(|r| matches!(r, Route::Host { dev, .. } if dev == "nbt11")));
    // Rules name devices but outlive them: they stay to be deleted.
    assert!(k.rules.iter().any(|r| r.0 == "nbt11"));
}

#[test]
fn listings_are_parsed_into_the_agents_objects() {
    let links = r#"[{"ifname":"lo","address":"00:00:00:00:00:00"},
        {"ifname":"nbx101","address":"06:01:02:03:04:05","linkinfo":{"info_kind":"vxlan",
         "info_data":{"id":257,"local":"10.254.0.1","port":4789}}}]"#;
    let rules = r#"[{"priority":50,"src":"all","iif":"nbt10","table":"16777473"},
        {"priority":100,"src":"all","table":"local"},
        {"priority":32766,"src":"all","table":"main"}]"#;
    let routes = r#"[{"type":"blackhole","dst":"default","table":"16777473","flags":[]},
        {"dst":"10.0.1.20","dev":"nbx101","table":"16777473","scope":"link","flags":[]},
        {"dst":"10.0.1.10","dev":"nbt10","table":"16777473","scope":"link","flags":[]},
        {"dst":"10.9.0.0/16","dev":"eth0","flags":[]}]"#;
    let neighs = r#"[{"dst":"10.0.1.20","dev":"nbx101","lladdr":"06:aa:bb:cc:dd:ee","state":["PERMANENT"]},
        {"dst":"10.0.1.10","dev":"nbt10","lladdr":"02:4e:42:00:00:0a","state":["PERMANENT"]},
        {"dst":"192.168.1.1","dev":"eth0","lladdr":"02:00:00:00:00:01","state":["PERMANENT"]}]"#;
    let fdb = r#"[{"mac":"06:aa:bb:cc:dd:ee","ifname":"nbx101","dst":"10.254.0.2","flags":["self"],"state":"permanent"},
        {"mac":"33:33:00:00:00:01","ifname":"eth0","flags":["self"],"state":"permanent"}]"#;
    let k = parse(links, rules, routes, neighs, fdb).unwrap();
    assert_eq!(k.vxlans["nbx101"].vni, 257);
    assert_eq!(k.vxlans["nbx101"].local, ip("10.254.0.1"));
    assert_eq!(k.rules.len(), 1);
    assert!(k.local_moved);
    assert_eq!(k.routes.len(), 3, "only the VPC tables' routes");
    assert!(k.routes.contains(&Route::Host {
        table: 16777473,
        dst: ip("10.0.1.20"),
        dev: "nbx101".into(),
        tunnel: true
    }));
    assert_eq!(k.fdb.len(), 1);
    let k = restrict(k, &["nbt10".to_string()].into());
    assert_eq!(k.neighs.len(), 2, "not the host's own neighbours");
    // The local rule still at 0: not moved.
    let rules0 = r#"[{"priority":0,"src":"all","table":"local"},{"priority":100,"src":"all","table":"local"}]"#;
    assert!(!parse("[]", rules0, "[]", "[]", "[]").unwrap().local_moved);
    assert!(parse("nope", "[]", "[]", "[]", "[]").is_err());
}
