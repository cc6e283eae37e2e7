use super::*;
use nubis_proto::node::v1 as pb;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn port(id: &str, tap: &str, addr: &str, vni: u32) -> LocalPort {
    LocalPort::new(id, tap, "02:4e:42:00:00:01", ip(addr), ip("10.0.1.1"), vni).unwrap()
}

fn pb_view() -> pb::NetworkView {
    let ep = |id: &str, addr: &str, node: &str, groups: &[&str]| pb::Endpoint {
        instance_id: id.into(),
        ip: addr.into(),
        mac: "02:4e:42:00:00:02".into(),
        subnet_id: "subnet-1".into(),
        node_underlay_ip: node.into(),
        node_id: "n".into(),
        security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
        public_ip: String::new(),
        ..Default::default()
    };
    let rule = |p: &str, f: i32, t: i32, c: &str, g: &str| pb::SecurityRule {
        protocol: p.into(),
        from_port: f,
        to_port: t,
        cidr: c.into(),
        peer_group_id: g.into(),
    };
    pb::NetworkView {
        revision: 9,
        vpcs: vec![
            pb::VpcView {
                vpc_id: "vpc-1".into(),
                vni: 0x101,
                cidr: "10.0.0.0/16".into(),
                subnets: vec![
                    pb::SubnetView {
                        subnet_id: "subnet-1".into(),
                        cidr: "10.0.1.0/24".into(),
                        gateway: "10.0.1.1".into(),
                        internet_route: false,
                    },
                    pb::SubnetView {
                        subnet_id: "subnet-bad".into(),
                        cidr: "10.0.2.5/24".into(),
                        gateway: "10.0.2.1".into(),
                        internet_route: false,
                    },
                ],
                endpoints: vec![
                    ep("i-local", "10.0.1.10", "10.254.0.1", &["sg-a"]),
                    ep("i-remote", "10.0.1.20", "10.254.0.2", &["sg-b"]),
                    ep("i-other", "10.0.1.30", "10.254.0.3", &["sg-c"]),
                    ep("i-nowhere", "10.0.1.40", "", &["sg-b"]),
                    ep("i-bad", "10.0.1", "10.254.0.2", &[]),
                ],
                security_groups: vec![
                    pb::SecurityGroupView {
                        group_id: "sg-a".into(),
                        ingress: vec![
                            rule("tcp", 22, 22, "", "sg-b"),
                            rule("tcp", 90, 80, "0.0.0.0/0", ""),
                            rule("tcp", 22, 22, "10.0.0.0/16", "sg-b"),
                        ],
                        egress: vec![rule("-1", -1, -1, "0.0.0.0/0", "")],
                    },
                    pb::SecurityGroupView {
                        group_id: "sg-c".into(),
                        ingress: vec![],
                        egress: vec![],
                    },
                ],
            },
            pb::VpcView {
                vpc_id: "vpc-bad".into(),
                vni: 1 << 24,
                ..Default::default()
            },
        ],
    }
}

#[test]
fn views_are_validated_and_bad_entries_left_out() {
    let v = NetView::from_proto(&pb_view());
    assert_eq!(v.revision, 9);
    assert_eq!(v.vpcs.len(), 1, "the VPC with a 25-bit VNI is left out");
    let vpc = &v.vpcs[&0x101];
    assert_eq!(vpc.subnets.len(), 1, "host bits set: left out");
    assert!(!vpc.endpoints.contains_key("i-bad"));
    assert_eq!(vpc.endpoints["i-nowhere"].underlay, None);
    // Bad rules (inverted range, two peers) are left out: less is allowed.
    let a = &vpc.groups["sg-a"];
    assert_eq!(a.ingress.len(), 1);
    assert_eq!(a.ingress[0].peer, Peer::Group("sg-b".into()));
    assert_eq!(a.egress[0].proto, Proto::All);
}

#[test]
fn rules_and_blocks_are_validated() {
    assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().len, 8);
    assert!(Cidr::parse("10.0.0.1/8").is_none());
    assert!(Cidr::parse("10.0.0.0/33").is_none());
    assert!(Cidr::parse("10.0.0.0").is_none());
    assert_eq!(Proto::parse("TCP"), Some(Proto::Tcp));
    assert_eq!(Proto::parse("6"), Some(Proto::Tcp));
    assert_eq!(Proto::parse("all"), Some(Proto::All));
    assert_eq!(Proto::parse("47"), Some(Proto::Other(47)));
    assert_eq!(Proto::parse("300"), None);
    assert!(SgRule::new("tcp", 80, 70000, "0.0.0.0/0", "").is_none());
    assert!(SgRule::new("tcp", 80, 80, "", "").is_none());
    assert!(SgRule::new("tcp", 80, 80, "", "sg bad").is_none());
    assert!(SgRule::new("icmp", -1, 3, "0.0.0.0/0", "").is_none());
    let icmp = SgRule::new("icmp", 8, -1, "0.0.0.0/0", "").unwrap();
    assert_eq!((icmp.from, icmp.to), (8, -1));
    let all = SgRule::new("-1", 5, 6, "0.0.0.0/0", "").unwrap();
    assert_eq!((all.from, all.to), (-1, -1));
}

#[test]
fn names_macs_and_tables_are_derived_stably() {
    assert_eq!(vxlan_name(0xabcdef), "nbxabcdef");
    assert!(vxlan_name(MAX_VNI).len() <= 15);
    assert_eq!(table_of(1), 0x0100_0001);
    let m = vtep_mac(ip("10.254.0.1"), 5);
    assert_eq!(m, vtep_mac(ip("10.254.0.1"), 5));
    assert_ne!(m, vtep_mac(ip("10.254.0.2"), 5));
    assert_ne!(m, vtep_mac(ip("10.254.0.1"), 6));
    assert_eq!(m[0], 0x06, "locally administered unicast");
}

#[test]
fn zones_are_kept_unique_and_forgotten() {
    let mut z = BTreeMap::new();
    assert!(assign_zones(&mut z, &[0x101, 0x10101].into()));
    assert_eq!(z[&0x101], 0x101);
    assert_eq!(z[&0x10101], 0x102, "low 16 bits taken: the next free one");
    assert!(!assign_zones(&mut z, &[0x101, 0x10101].into()));
    assert!(assign_zones(&mut z, &[0x10101].into()));
    assert_eq!(z.len(), 1);
    assert_eq!(z[&0x10101], 0x102, "kept while present");
    let mut z = BTreeMap::new();
    assign_zones(&mut z, &[0x10000].into());
    assert_eq!(z[&0x10000], 1, "zone 0 is never used");
}

#[test]
fn plan_joins_local_ports_and_the_view() {
    let v = NetView::from_proto(&pb_view());
    let zones = [(0x101, 7u16), (0x202, 8u16)].into();
    let ports = [
        port("i-local", "nbt1", "10.0.1.10", 0x101),
        port("i-unlisted", "nbt2", "10.0.1.11", 0x101),
        port("i-vpc2", "nbt3", "10.0.1.10", 0x202),
    ];
    let p = plan(
        &ports,
        Some(&v),
        Some(ip("10.254.0.1")),
        Some("eth1"),
        &zones,
    );
    assert_eq!(p.vpcs.len(), 2);
    let v1 = &p.vpcs[&0x101];
    assert_eq!(v1.zone, 7);
    assert_eq!(v1.vxlan.as_ref().unwrap().0, "nbx101");
    assert_eq!(v1.ports["nbt1"].groups, Some(["sg-a".to_string()].into()));
    assert_eq!(v1.ports["nbt2"].groups, None, "not in the view: dropped");
    // Remote endpoints with a known underlay; own and unknown ones not.
    assert_eq!(
        v1.remotes.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.0.1.20"), ip("10.0.1.30")]
    );
    assert_eq!(v1.remotes[&ip("10.0.1.20")].underlay, ip("10.254.0.2"));
    // The port's group and the peer group its rule names, with members.
    assert_eq!(
        v1.members["sg-b"],
        [ip("10.0.1.20"), ip("10.0.1.40")].into()
    );
    assert_eq!(v1.members["sg-a"], [ip("10.0.1.10")].into());
    assert!(!v1.members.contains_key("sg-c"));
    assert!(v1.gateways.contains(&ip("10.0.1.1")));
    // VPC 2 is not in the view: its port exists, nothing else.
    let v2 = &p.vpcs[&0x202];
    assert!(v2.remotes.is_empty());
    assert_eq!(v2.ports["nbt3"].groups, None);
    // Without an underlay: no VXLAN device and no remotes.
    let p = plan(&ports, Some(&v), None, None, &zones);
    assert!(p.vpcs[&0x101].vxlan.is_none());
    assert!(p.vpcs[&0x101].remotes.is_empty());
    // Without ports: nothing, whatever the view says.
    assert!(plan(&[], Some(&v), None, None, &zones).vpcs.is_empty());
}

#[test]
fn local_ports_are_validated() {
    let ok = |tap: &str, mac: &str, vni: u32| {
        LocalPort::new("i-1", tap, mac, ip("10.0.1.5"), ip("10.0.1.1"), vni).is_some()
    };
    assert!(ok("nbt1", "02:4e:42:00:00:01", 1));
    assert!(!ok("nbt1", "02:4e:42:00:00:01", 0));
    assert!(!ok("nbt1", "02:4e:42:00:00:01", MAX_VNI + 1));
    assert!(!ok("nbt1", "01:00:5e:00:00:01", 1), "multicast MAC");
    assert!(!ok("nbt 1", "02:4e:42:00:00:01", 1));
    assert!(!ok("nbt1", "zz", 1));
}

#[test]
fn every_interface_of_an_instance_is_its_own_endpoint_and_port() {
    let ep = |id: &str, index: u32, addr: &str, node: &str, group: &str| pb::Endpoint {
        instance_id: id.into(),
        ip: addr.into(),
        mac: "02:4e:42:00:00:02".into(),
        node_underlay_ip: node.into(),
        security_group_ids: vec![group.into()],
        device_index: index,
        ..Default::default()
    };
    let v = NetView::from_proto(&pb::NetworkView {
        revision: 1,
        vpcs: vec![pb::VpcView {
            vpc_id: "vpc-1".into(),
            vni: 0x101,
            endpoints: vec![
                ep("i-a", 0, "10.0.1.10", "10.254.0.1", "sg-web"),
                ep("i-a", 1, "10.0.2.10", "10.254.0.1", "sg-db"),
                ep("i-b", 0, "10.0.2.20", "10.254.0.2", "sg-client"),
                ep("i-b", 2, "10.0.3.20", "10.254.0.2", "sg-db"),
            ],
            ..Default::default()
        }],
    });
    let vv = &v.vpcs[&0x101];
    assert_eq!(
        vv.endpoints.keys().cloned().collect::<Vec<_>>(),
        ["i-a", "i-a#1", "i-b", "i-b#2"]
    );
    // Host 1 has i-a's two ports: each listed with its own groups.
    let ports = [
        port("i-a", "nbt0", "10.0.1.10", 0x101),
        port("i-a", "nbt1", "10.0.2.10", 0x101).at(1),
    ];
    let zones = BTreeMap::from([(0x101, 1)]);
    let p = plan(&ports, Some(&v), Some(ip("10.254.0.1")), None, &zones);
    let vp = &p.vpcs[&0x101];
    assert_eq!(
        vp.ports["nbt0"].groups,
        Some(BTreeSet::from(["sg-web".to_string()]))
    );
    assert_eq!(
        vp.ports["nbt1"].groups,
        Some(BTreeSet::from(["sg-db".to_string()]))
    );
    // Both of i-b's interfaces are remote; none of i-a's.
    assert_eq!(
        vp.remotes.keys().copied().collect::<Vec<_>>(),
        [ip("10.0.2.20"), ip("10.0.3.20")]
    );
    // Group membership is per interface: sg-db holds i-a's second address
    // and i-b's third, not their primaries.
    assert_eq!(
        vp.members["sg-db"],
        BTreeSet::from([ip("10.0.2.10"), ip("10.0.3.20")])
    );
    // A port whose interface the view does not list (yet) is dropped.
    let late = [port("i-a", "nbt2", "10.0.4.10", 0x101).at(3)];
    let p = plan(&late, Some(&v), None, None, &zones);
    assert_eq!(p.vpcs[&0x101].ports["nbt2"].groups, None);
}
