use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("nubis").chain(args.iter().copied()))
}

#[test]
fn grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn run_parses_everything() {
    let cli = parse(&[
        "instances",
        "run",
        "--image",
        "hello",
        "--type",
        "t3.nano",
        "-n",
        "3",
        "--az",
        "nubis-local-1a",
        "--tag",
        "Name=web",
        "--tag",
        "env=",
        "--wait",
        "--timeout",
        "90s",
        "-o",
        "json",
    ])
    .unwrap();
    assert_eq!(cli.global.output, Format::Json);
    let Command::Instances(InstancesCmd::Run(r)) = cli.command else {
        panic!("not run")
    };
    assert_eq!(r.count, 3);
    assert_eq!(r.zone.as_deref(), Some("nubis-local-1a"));
    assert_eq!(
        r.tags[1],
        TagArg {
            key: "env".into(),
            value: String::new()
        }
    );
    assert!(r.wait.wait);
    assert_eq!(r.wait.timeout, std::time::Duration::from_secs(90));
}

#[test]
fn invalid_arguments_are_rejected() {
    let bad: &[&[&str]] = &[
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--count",
            "0",
        ],
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--count",
            "1001",
        ],
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--tag",
            "novalue",
        ],
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--tag",
            "aws:x=1",
        ],
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--zone",
            "Bad Zone",
        ],
        &[
            "instances",
            "run",
            "--image",
            "hello",
            "--type",
            "t",
            "--timeout",
            "0",
        ],
        &["instances", "run", "--type", "t"],
        &["instances", "describe"],
        &["instances", "describe", "vm-1"],
        &["instances", "stop", "i-xyz"],
        &["instances", "wait", "i-1", "--state", "sleeping"],
        &["instances", "list", "--state", "exploded"],
        &["images", "deregister", "hello"],
        &["tags", "add", "i-1"],
        &["zones", "list", "--output", "yaml"],
        &["completions", "cmd"],
    ];
    for args in bad {
        let err = parse(args).expect_err(&format!("{args:?} should be rejected"));
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

#[test]
fn quota_commands_parse() {
    assert!(parse(&["admin", "quotas", "set", "123456789012", "vcpus", "64"]).is_ok());
    assert!(parse(&["admin", "quotas", "set", "123456789012", "vcpus", "--reset"]).is_ok());
    // A limit or --reset, not both, not neither.
    assert!(parse(&["admin", "quotas", "set", "123456789012", "vcpus"]).is_err());
    assert!(parse(&[
        "admin",
        "quotas",
        "set",
        "123456789012",
        "vcpus",
        "3",
        "--reset"
    ])
    .is_err());
    assert!(parse(&["admin", "quotas", "set", "123456789012", "vcpus", "-1"]).is_err());
    assert!(parse(&["admin", "quotas", "get", "123456789012"]).is_ok());
    assert!(parse(&["admin", "quotas", "ls"]).is_ok());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
    assert_eq!(parse_duration("7").unwrap().as_secs(), 7);
    assert!(parse_duration("-1").is_err());
    assert!(parse_duration("1h").is_err());
    assert_eq!(parse_poll("20ms").unwrap().as_millis(), 20);
    assert_eq!(parse_poll("1s").unwrap().as_millis(), 1000);
    assert_eq!(parse_poll("50").unwrap().as_millis(), 50);
    assert!(parse_poll("1ms").is_err());
    assert!(parse_poll("11s").is_err());
}

#[test]
fn global_flags_work_after_subcommands() {
    let cli = parse(&[
        "zones",
        "list",
        "--profile",
        "ops",
        "--endpoint",
        "http://h:1",
    ])
    .unwrap();
    let f = cli.global.flags();
    assert_eq!(f.profile.as_deref(), Some("ops"));
    assert_eq!(f.endpoint.as_deref(), Some("http://h:1"));
}

#[test]
fn network_interface_commands_parse() {
    use crate::commands::vpc_enis::NetworkInterfacesCmd;
    let cli = parse(&[
        "network-interfaces",
        "create",
        "subnet-0123456789abcdef0",
        "--private-ip",
        "10.0.1.9",
        "--group",
        "sg-0123456789abcdef0",
        "--group",
        "sg-0123456789abcdef1",
        "--description",
        "db",
        "--tag",
        "Name=db",
        "-o",
        "json",
    ])
    .unwrap();
    let Command::NetworkInterfaces(NetworkInterfacesCmd::Create {
        subnet_id,
        private_ip,
        groups,
        ..
    }) = cli.command
    else {
        panic!("not create")
    };
    assert_eq!(subnet_id, "subnet-0123456789abcdef0");
    assert_eq!(private_ip.as_deref(), Some("10.0.1.9"));
    assert_eq!(groups.len(), 2);
    let cli = parse(&[
        "network-interface",
        "attach",
        "eni-0123456789abcdef0",
        "--instance",
        "i-0123456789abcdef0",
        "--device-index",
        "1",
    ])
    .unwrap();
    assert!(matches!(
        cli.command,
        Command::NetworkInterfaces(NetworkInterfacesCmd::Attach {
            device_index: 1,
            ..
        })
    ));
    for args in [
        &["network-interfaces", "list", "--filter", "status=available"][..],
        &["network-interfaces", "ls"],
        &["network-interfaces", "delete", "eni-0123456789abcdef0"],
        &[
            "network-interfaces",
            "detach",
            "eni-attach-0123456789abcdef0",
        ],
    ] {
        assert!(
            matches!(parse(args).unwrap().command, Command::NetworkInterfaces(_)),
            "{args:?}"
        );
    }
    assert!(parse(&["network-interfaces", "create"]).is_err());
}
