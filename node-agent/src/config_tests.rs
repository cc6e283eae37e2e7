use super::*;

fn parse(s: &str) -> Result<Config> {
    let c: Config = toml::from_str(s).map_err(|source| Error::ConfigParse {
        path: "t".into(),
        source,
    })?;
    c.validate()?;
    Ok(c)
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(
        "availability_zone = \"nb-1a\"\ncontrol_plane = \"unix:///run/n.sock\"\n\
         [enrolment]\nkey_id = \"k\"\nsecret = \"s\"\n",
    )
    .unwrap();
    assert_eq!(c.enrolment_credential().unwrap(), ("k".into(), "s".into()));
    assert_eq!(c.network.bridge, "nbbr0");
    assert_eq!(c.timeouts.graceful_stop_secs, 30);
    // No default subnet unless configured: specs bring their own.
    assert_eq!(c.network.addressing().unwrap(), None);
    let mut n = c.network.clone();
    n.bridge_address = Some("10.200.0.1/24".into());
    let a = n.addressing().unwrap().unwrap();
    assert_eq!(a.gateway, Ipv4Addr::new(10, 200, 0, 1));
    assert_eq!(a.prefix, 24);
    assert!(c.cgroup.enforce_limits);
}

#[test]
fn underlay_settings_are_validated() {
    let head = "availability_zone = \"nb-1a\"\ncontrol_plane = \"unix:///run/n.sock\"\n\
                [enrolment]\nkey_id = \"k\"\nsecret = \"s\"\n[network]\n";
    let c = parse(&format!("{head}underlay_address = \"10.254.0.1\"\n")).unwrap();
    assert_eq!(
        c.network.underlay().unwrap(),
        Some(Ipv4Addr::new(10, 254, 0, 1))
    );
    assert_eq!(c.network.underlay_device, None);
    let c = parse(&format!(
        "{head}underlay_address = \"10.254.0.1\"\nunderlay_device = \"eth1\"\n"
    ))
    .unwrap();
    assert_eq!(c.network.underlay_device.as_deref(), Some("eth1"));
    assert_eq!(c.network.edge_gateway().unwrap(), None);
    let c = parse(&format!(
        "{head}underlay_address = \"10.254.0.1\"\nedge_gateway = \"10.254.0.254\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.network.edge_gateway().unwrap(),
        Some(Ipv4Addr::new(10, 254, 0, 254))
    );
    assert_eq!(parse(head).unwrap().network.underlay().unwrap(), None);
    for (bad, why) in [
        (
            "underlay_address = \"10.254.0.1/16\"",
            "not an IPv4 address",
        ),
        ("underlay_address = \"host\"", "not an IPv4 address"),
        ("underlay_address = \"0.0.0.0\"", "unicast"),
        ("underlay_address = \"127.0.0.1\"", "unicast"),
        ("underlay_address = \"239.1.1.1\"", "unicast"),
        (
            "underlay_address = \"10.0.0.1\"\nunderlay_device = \"a/b\"",
            "not a valid interface name",
        ),
        (
            "underlay_device = \"eth1\"",
            "needs network.underlay_address",
        ),
        (
            "edge_gateway = \"10.254.0.254\"",
            "edge_gateway needs network.underlay_address",
        ),
        (
            "underlay_address = \"10.254.0.1\"\nedge_gateway = \"edge\"",
            "not an IPv4 address",
        ),
        (
            "underlay_address = \"10.254.0.1\"\nedge_gateway = \"224.0.0.1\"",
            "unicast",
        ),
        (
            "underlay_address = \"10.254.0.1\"\nedge_gateway = \"10.254.0.1\"",
            "this host's underlay address",
        ),
    ] {
        let e = parse(&format!("{head}{bad}\n")).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn tls_settings_are_validated_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "CA PEM").unwrap();
    let head = |ep: &str| {
        format!(
            "availability_zone = \"nb-1a\"\ncontrol_plane = \"{ep}\"\n\
             [enrolment]\nkey_id = \"k\"\nsecret = \"s\"\n"
        )
    };
    // CA only: read, no identity.
    let c = parse(&format!(
        "{}[tls]\nca_file = \"{}\"\n",
        head("https://cp.example:50051"),
        ca.display()
    ))
    .unwrap();
    let t = c.client_tls().unwrap().unwrap();
    assert_eq!(t.ca_pem.as_deref(), Some(&b"CA PEM"[..]));
    assert!(t.identity.is_none());
    // No [tls]: none.
    assert!(parse(&head("https://cp.example:50051"))
        .unwrap()
        .client_tls()
        .unwrap()
        .is_none());
    // [tls] with a plaintext or Unix endpoint is a mistake.
    for ep in ["http://127.0.0.1:50051", "unix:///run/n.sock"] {
        let e = parse(&format!("{}[tls]\n", head(ep))).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
    }
    // A certificate without its key (or the reverse) is refused.
    let e = parse(&format!(
        "{}[tls]\ncert_file = \"/x.pem\"\n",
        head("https://cp.example:50051")
    ))
    .unwrap_err();
    assert!(e.to_string().contains("key_file"), "{e}");
    // An unreadable file is named when the agent starts.
    let c = parse(&format!(
        "{}[tls]\ncert_file = \"/nonexistent/agent.pem\"\nkey_file = \"/nonexistent/agent.key\"\n",
        head("https://cp.example:50051")
    ))
    .unwrap();
    let e = c.client_tls().unwrap_err();
    assert!(e.to_string().contains("/nonexistent/agent.pem"), "{e}");
}

#[test]
fn several_control_plane_endpoints_are_read_in_order() {
    let base = "availability_zone = \"nb-1a\"\n\
                [enrolment]\nkey_id = \"k\"\nsecret = \"s\"\n";
    let c = parse(&format!(
        "control_plane = \"unix:///run/cp1.sock\"\n\
         control_planes = [\"http://127.0.0.1:7002\", \"unix:///run/cp1.sock\", \"unix:///run/cp3.sock\"]\n{base}"
    ))
    .unwrap();
    assert_eq!(
        c.control_plane_endpoints(),
        [
            "unix:///run/cp1.sock",
            "http://127.0.0.1:7002",
            "unix:///run/cp3.sock"
        ],
        "control_plane first, then control_planes without repeats"
    );
    let one = parse(&format!("control_plane = \"unix:///run/cp1.sock\"\n{base}")).unwrap();
    assert_eq!(one.control_plane_endpoints(), ["unix:///run/cp1.sock"]);
    let bad = parse(&format!(
        "control_plane = \"unix:///run/cp1.sock\"\ncontrol_planes = [\"tcp://x:1\"]\n{base}"
    ));
    assert!(bad.is_err(), "every listed endpoint is validated");
    let mixed_tls = parse(&format!(
        "control_plane = \"https://cp1:50051\"\ncontrol_planes = [\"http://cp2:50051\"]\n\
         {base}[tls]\nca_file = \"/x.pem\"\n"
    ));
    assert!(mixed_tls.is_err(), "[tls] needs every endpoint https://");
}

#[test]
fn limits_are_per_vcpu_and_default_to_none() {
    let base = "availability_zone = \"nb-1a\"\nstandalone = true\n";
    let c = parse(base).unwrap();
    assert_eq!(c.limits, LimitsConfig::default());
    let c = parse(&format!(
        "{base}[limits]\nio_write_bps = 1000\nnet_rx_pps = 500\ndisk_ops = 7\n"
    ))
    .unwrap();
    let two = c.limits.for_vcpus(2);
    assert_eq!(
        (
            two.io_write_bps,
            two.net_rx_pps,
            two.disk_ops,
            two.io_read_bps
        ),
        (2000, 1000, 14, 0)
    );
    let huge = LimitsConfig {
        net_tx_bps: u64::MAX / 2,
        ..LimitsConfig::default()
    };
    assert_eq!(huge.for_vcpus(4).net_tx_bps, u64::MAX, "saturates");
    assert!(
        parse(&format!("{base}[limits]\nio_bps = 1\n")).is_err(),
        "unknown key"
    );
    assert!(parse(&format!("{base}[limits]\nnet_rx_bps = -1\n")).is_err());
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../deploy/agent.example.toml");
    let c: Config = toml::from_str(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c.enrolment.unwrap().key_id, "nbenrol");
}

#[test]
fn invalid_values_are_rejected() {
    let base = "availability_zone = \"nb-1a\"\nstandalone = true\n";
    assert!(parse(base).is_ok());
    assert!(
        parse("availability_zone = \"nb-1a\"\n").is_err(),
        "no endpoint"
    );
    assert!(parse(&format!("{base}control_plane = \"tcp://x\"\n")).is_err());
    assert!(
        parse(&format!("{base}control_planes = [\"unix:///a.sock\"]\n")).is_err(),
        "control_planes without control_plane"
    );
    assert!(parse(&format!("{base}bogus = 1\n")).is_err(), "unknown key");
    assert!(parse("availability_zone = \"a b\"\nstandalone = true\n").is_err());
    for net in [
        "[network]\nbridge = \"this-name-is-too-long\"\n",
        "[network]\ntap_prefix = \"toolong\"\n",
        "[network]\nbridge_address = \"10.0.0.1\"\n",
        "[network]\nbridge_address = \"10.200.0.1/24\"\n\
         instance_range = \"10.200.0.50-10.200.0.10\"\n",
        "[network]\nbridge_address = \"10.200.0.1/24\"\n\
         instance_range = \"10.201.0.10-10.201.0.20\"\n",
        "[network]\nbridge_address = \"10.200.0.1/24\"\n\
         instance_range = \"10.200.0.1-10.200.0.20\"\n",
    ] {
        assert!(parse(&format!("{base}{net}")).is_err(), "{net}");
    }
    // The firewall is on unless switched off explicitly, and takes a boolean.
    assert!(parse(base).unwrap().network.firewall);
    let off = parse(&format!("{base}[network]\nfirewall = false\n")).unwrap();
    assert!(!off.network.firewall);
    assert!(parse(&format!("{base}[network]\nfirewall = \"no\"\n")).is_err());
    assert!(parse(&format!("{base}[cgroup]\nparent = \"../x\"\n")).is_err());
    assert!(parse(&format!("{base}[capacity]\nvcpus = 0\n")).is_err());
    assert!(parse(&format!("{base}state_dir = \"rel\"\n")).is_err());
}
