use super::*;
use crate::ec2::query::parse_form;

fn parse(body: &str) -> Result<Request, Ec2Error> {
    Request::parse(parse_form(body.as_bytes())?)
}

fn code(body: &str) -> ErrorCode {
    parse(body).unwrap_err().code
}

const V: &str = "Version=2016-11-15";

#[test]
fn captured_aws_cli_run_instances_parses() {
    // From testdata/cli_006 minus SecurityGroup.1 (not supported: see docs/ec2-api.md).
    let body = "Action=RunInstances&Version=2016-11-15&ImageId=ami-04681a1dbd79675a5&\
        InstanceType=t2.micro&KeyName=mykey&UserData=aGVsbG8td29ybGQ%3D&\
        TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&\
        TagSpecification.1.Tag.1.Value=web1&TagSpecification.1.Tag.2.Key=env&\
        TagSpecification.1.Tag.2.Value=dev&MinCount=2&MaxCount=2&\
        ClientToken=295464f0-2b67-47bd-bc72-5eb585ff9f02&Placement.AvailabilityZone=nb-az1";
    let Request::RunInstances(r) = parse(body).unwrap() else {
        panic!("wrong action")
    };
    assert_eq!(r.image_id, "ami-04681a1dbd79675a5");
    assert_eq!(r.instance_type.as_deref(), Some("t2.micro"));
    assert_eq!((r.min_count, r.max_count), (2, 2));
    assert_eq!(r.user_data.as_deref(), Some(&b"hello-world"[..]));
    assert_eq!(r.key_name.as_deref(), Some("mykey"));
    assert_eq!(r.availability_zone.as_deref(), Some("nb-az1"));
    assert_eq!(r.tags.len(), 2);
    assert_eq!(r.tags[1].value, "dev");
    assert_eq!(
        r.client_token.as_deref(),
        Some("295464f0-2b67-47bd-bc72-5eb585ff9f02")
    );
    assert!(!r.dry_run);
}

#[test]
fn captured_requests_parse_or_answer_what_ec2_answers() {
    use crate::ec2::sigv4::tests::{capture, CAPTURES};
    for text in CAPTURES {
        let c = capture(text);
        match Request::parse(parse_form(&c.body).unwrap()) {
            Ok(r) => assert!(
                ["CreateKeyPair", "GetConsoleOutput", "RunInstances"].contains(&r.action()),
                "{}",
                r.action()
            ),
            // The captured RunInstances carry security groups and EBS block
            // device mappings of non-root devices, which Nubis does not have.
            Err(e) => assert!(
                [
                    ErrorCode::InvalidGroupNotFound,
                    ErrorCode::InvalidBlockDeviceMapping
                ]
                .contains(&e.code),
                "{e}"
            ),
        }
    }
}

/// `Name<TAB>sample` lines generated from botocore's EC2 model by
/// tests/ec2/gen_run_instances_params.py (checked by tests/ec2/test_sdk_model.py).
const RUN_INSTANCES_PARAMS: &str = include_str!("testdata/run_instances_params.txt");

fn model_params() -> Vec<(&'static str, &'static str)> {
    let out: Vec<_> = RUN_INSTANCES_PARAMS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split_once('\t').expect("name<TAB>value"))
        .collect();
    assert!(out.len() > 100, "the parameter list is truncated");
    out
}

fn run_body(extra: &[(&str, &str)]) -> String {
    let mut form: BTreeMap<String, String> = [
        ("Action", "RunInstances"),
        ("Version", "2016-11-15"),
        ("ImageId", "ami-12345678"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        form.insert((*k).to_owned(), (*v).to_owned());
    }
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn every_run_instances_parameter_of_the_sdk_model_is_known() {
    let params = model_params();
    // Each parameter alone: accepted, or refused with another code.
    for (name, value) in &params {
        let body = run_body(&[(name, value)]);
        if let Err(e) = parse(&body) {
            assert_ne!(e.code, ErrorCode::UnknownParameter, "{name}={value}: {e}");
        }
    }
    // All of them at once.
    if let Err(e) = parse(&run_body(&params)) {
        assert_ne!(e.code, ErrorCode::UnknownParameter, "{e}");
    }
    // A parameter EC2 does not define still is unknown.
    assert_eq!(
        code(&run_body(&[("Monitoring.Enable", "true")])),
        ErrorCode::UnknownParameter
    );
}

fn run_options(extra: &[(&str, &str)]) -> crate::domain::model::LaunchOptions {
    match parse(&run_body(extra)) {
        Ok(Request::RunInstances(r)) => r.options,
        other => panic!("{extra:?}: {other:?}"),
    }
}

#[test]
fn run_instances_honoured_options() {
    use crate::domain::model::{LaunchOptions, ShutdownBehavior};
    assert_eq!(run_options(&[]), LaunchOptions::default());
    let o = run_options(&[
        ("DisableApiTermination", "true"),
        ("DisableApiStop", "true"),
        ("InstanceInitiatedShutdownBehavior", "terminate"),
        ("Monitoring.Enabled", "true"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "20"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.2.DeviceName", "/dev/sdb"),
        ("BlockDeviceMapping.2.NoDevice", ""),
        ("Placement.Tenancy", "default"),
        ("EbsOptimized", "false"),
        ("HibernationOptions.Configured", "false"),
        ("CreditSpecification.CpuCredits", "unlimited"),
        (
            "CapacityReservationSpecification.CapacityReservationPreference",
            "open",
        ),
        ("MaintenanceOptions.AutoRecovery", "default"),
        ("AdditionalInfo", "note"),
    ]);
    assert!(o.disable_api_termination && o.disable_api_stop && o.monitoring);
    assert_eq!(o.shutdown_behavior, ShutdownBehavior::Terminate);
    assert_eq!(o.root_volume_gib, Some(20));
    assert_eq!(
        run_options(&[("InstanceInitiatedShutdownBehavior", "stop")]).shutdown_behavior,
        ShutdownBehavior::Stop
    );
    // PrivateIpAddress is handed to the domain (checked against the subnet
    // there), with or without a subnet.
    let o = run_options(&[("PrivateIpAddress", "172.31.0.9")]);
    let vpc = o.vpc.expect("vpc placement requested");
    assert_eq!(vpc.private_ip_address.as_deref(), Some("172.31.0.9"));
    assert!(vpc.subnet_id.is_none());
    let o = run_options(&[
        ("SubnetId", "subnet-0123456789abcdef0"),
        ("PrivateIpAddress", "10.0.0.9"),
    ]);
    let vpc = o.vpc.expect("vpc placement requested");
    assert_eq!(vpc.private_ip_address.as_deref(), Some("10.0.0.9"));
    assert!(vpc.subnet_id.is_some());
}

#[test]
fn run_instances_unavailable_features_answer_ec2_codes() {
    let cases: &[(&[(&str, &str)], ErrorCode)] = &[
        (&[("EbsOptimized", "true")], ErrorCode::Unsupported),
        (
            &[("HibernationOptions.Configured", "true")],
            ErrorCode::UnsupportedHibernationConfiguration,
        ),
        (
            &[("Placement.Tenancy", "dedicated")],
            ErrorCode::Unsupported,
        ),
        (
            &[("Placement.Tenancy", "shared")],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[("Placement.GroupName", "pg")],
            ErrorCode::InvalidPlacementGroupUnknown,
        ),
        (
            &[("InstanceInitiatedShutdownBehavior", "hibernate")],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[("DisableApiStop", "yes")],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[
                ("BlockDeviceMapping.1.DeviceName", "/dev/sdb"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "10"),
            ],
            ErrorCode::InvalidBlockDeviceMapping,
        ),
        (
            &[("BlockDeviceMapping.1.Ebs.VolumeSize", "10")],
            ErrorCode::MissingParameter,
        ),
        (
            &[
                ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "0"),
            ],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[
                ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
                ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "false"),
            ],
            ErrorCode::Unsupported,
        ),
        (
            &[
                ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
                ("BlockDeviceMapping.1.Ebs.Encrypted", "true"),
            ],
            ErrorCode::Unsupported,
        ),
        (
            &[
                ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
                ("BlockDeviceMapping.1.Ebs.VolumeType", "io2"),
            ],
            ErrorCode::Unsupported,
        ),
        (
            &[("SubnetId", "subnet-xyz")],
            ErrorCode::Other(
                "InvalidSubnetID.Malformed".into(),
                http::StatusCode::BAD_REQUEST,
            ),
        ),
        (
            &[("SecurityGroupId.1", "sg-xyz")],
            ErrorCode::Other(
                "InvalidGroupId.Malformed".into(),
                http::StatusCode::BAD_REQUEST,
            ),
        ),
        (&[("Ipv6AddressCount", "1")], ErrorCode::Unsupported),
        (
            &[("NetworkInterface.1.DeviceIndex", "1")],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[
                ("NetworkInterface.1.DeviceIndex", "0"),
                (
                    "NetworkInterface.1.NetworkInterfaceId",
                    "eni-0123456789abcdef0",
                ),
                ("SubnetId", "subnet-0123456789abcdef0"),
            ],
            ErrorCode::InvalidParameterCombination,
        ),
        (
            &[(
                "NetworkInterface.1.NetworkInterfaceId",
                "eni-0123456789abcdef0",
            )],
            ErrorCode::MissingParameter,
        ),
        (&[("KernelId", "aki-12345678")], ErrorCode::Unsupported),
        (
            &[("InstanceMarketOptions.MarketType", "spot")],
            ErrorCode::Unsupported,
        ),
        (
            &[("CpuOptions.CoreCount", "2")],
            ErrorCode::InvalidParameterCombination,
        ),
        (
            &[(
                "CapacityReservationSpecification.CapacityReservationPreference",
                "capacity-reservations-only",
            )],
            ErrorCode::Unsupported,
        ),
        (
            &[("IamInstanceProfile.Name", "role")],
            ErrorCode::InvalidParameterValue,
        ),
        (
            &[("EnclaveOptions.Enabled", "true")],
            ErrorCode::Unsupported,
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(&code(&run_body(extra)), want, "{extra:?}");
    }
}

#[test]
fn describe_instances_with_filters_and_pages() {
    let body = format!(
        "Action=DescribeInstances&{V}&Filter.1.Name=tag:Name&Filter.1.Value.1=a&\
         Filter.2.Name=instance-state-name&Filter.2.Value.1=running&MaxResults=5&NextToken=tok"
    );
    let Request::DescribeInstances(d) = parse(&body).unwrap() else {
        panic!()
    };
    assert_eq!(d.filters.len(), 2);
    assert_eq!(d.page.max_results, Some(5));
    assert_eq!(d.page.next_token.as_deref(), Some("tok"));
    assert_eq!(
        code(&format!("Action=DescribeInstances&{V}&MaxResults=4")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!(
            "Action=DescribeRegions&{V}&Filter.1.Name=nope&Filter.1.Value.1=x"
        )),
        ErrorCode::InvalidParameterValue
    );
}

#[test]
fn ids_are_checked_for_form() {
    assert_eq!(
        code(&format!(
            "Action=TerminateInstances&{V}&InstanceId.1=i-nope"
        )),
        ErrorCode::InvalidInstanceIdMalformed
    );
    assert_eq!(
        code(&format!("Action=StopInstances&{V}")),
        ErrorCode::MissingParameter
    );
    assert_eq!(
        code(&format!(
            "Action=RunInstances&{V}&ImageId=ami-x&MinCount=1&MaxCount=1"
        )),
        ErrorCode::InvalidAmiIdMalformed
    );
    assert_eq!(
        code(&format!(
            "Action=GetConsoleOutput&{V}&InstanceId=i-0123456789ABCDEF0"
        )),
        ErrorCode::InvalidInstanceIdMalformed
    );
    let Request::StopInstances(s) =
        parse(&format!("Action=StopInstances&{V}&InstanceId.1=i-0123456789abcdef0&InstanceId.2=i-0123456789abcdef0&Force=true")).unwrap()
    else {
        panic!()
    };
    assert_eq!(s.instance_ids, ["i-0123456789abcdef0"]);
    assert!(s.force);
}

#[test]
fn run_instances_validation() {
    let base = format!("Action=RunInstances&{V}&ImageId=ami-12345678");
    assert_eq!(
        code(&format!("{base}&MaxCount=1")),
        ErrorCode::MissingParameter
    );
    assert_eq!(
        code(&format!("{base}&MinCount=3&MaxCount=2")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("{base}&MinCount=1&MaxCount=100001")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("{base}&MinCount=1&MaxCount=1&UserData=!!!")),
        ErrorCode::InvalidParameterValue
    );
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_USER_DATA + 1]);
    assert_eq!(
        code(&format!("{base}&MinCount=1&MaxCount=1&UserData={big}")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!(
            "{base}&MinCount=1&MaxCount=1&InstanceType=T2%20MICRO"
        )),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("{base}&MinCount=1&MaxCount=1&DryRun=yes")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("{base}&MinCount=1&MaxCount=1&Hibernate=true")),
        ErrorCode::UnknownParameter
    );
    let Request::RunInstances(r) =
        parse(&format!("{base}&MinCount=1&MaxCount=1&DryRun=true")).unwrap()
    else {
        panic!()
    };
    assert!(r.dry_run);
}

#[test]
fn action_and_version_are_required() {
    assert_eq!(code(V), ErrorCode::MissingAction);
    assert_eq!(code("Action=DescribeRegions"), ErrorCode::MissingParameter);
    assert_eq!(
        code("Action=DescribeRegions&Version=2014-01-01"),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("Action=CreateTransitGateway&{V}")),
        ErrorCode::InvalidAction
    );
    assert!(matches!(
        parse(&format!("Action=DescribeRegions&{V}")).unwrap(),
        Request::DescribeRegions(_)
    ));
}

#[test]
fn key_pairs_and_tags() {
    let pubkey =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJnR4qX4qX4qX4qX4qX4qX4qX4qX4qX4qX4qX4qX4qX4 me@host";
    let b64 = base64::engine::general_purpose::STANDARD.encode(pubkey);
    let enc: String = form_urlencoded::byte_serialize(b64.as_bytes()).collect();
    let Request::ImportKeyPair(k) = parse(&format!(
        "Action=ImportKeyPair&{V}&KeyName=k1&PublicKeyMaterial={enc}"
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(k.public_key, pubkey);
    // The gateway only decodes the base64 (the domain parses the key):
    // material that is not base64, or not text, is refused here.
    let not_text = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, 0x00]);
    let not_text: String = form_urlencoded::byte_serialize(not_text.as_bytes()).collect();
    for junk in ["%21%21%21", not_text.as_str()] {
        assert_eq!(
            code(&format!(
                "Action=ImportKeyPair&{V}&KeyName=k1&PublicKeyMaterial={junk}"
            )),
            ErrorCode::InvalidKeyFormat,
            "{junk}"
        );
    }
    let Request::CreateKeyPair(c) = parse(&format!(
        "Action=CreateKeyPair&{V}&KeyName=k&KeyType=ed25519"
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(c.key_type, Some(KeyType::Ed25519));
    assert_eq!(
        code(&format!("Action=CreateKeyPair&{V}&KeyName=k&KeyFormat=ppk")),
        ErrorCode::InvalidParameterValue
    );
    assert_eq!(
        code(&format!("Action=DeleteKeyPair&{V}")),
        ErrorCode::MissingParameter
    );
    assert_eq!(
        code(&format!(
            "Action=CreateTags&{V}&ResourceId.1=i-0123456789abcdef0"
        )),
        ErrorCode::MissingParameter
    );
    assert_eq!(
        code(&format!(
            "Action=CreateTags&{V}&ResourceId.1=vpc-1&Tag.1.Key=a"
        )),
        ErrorCode::InvalidParameterValue
    );
    let Request::DeleteTags(d) = parse(&format!(
        "Action=DeleteTags&{V}&ResourceId.1=i-0123456789abcdef0&Tag.1.Key=a&Tag.2.Key=b&Tag.2.Value=x"
    ))
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        d.tags,
        [
            ("a".to_owned(), None),
            ("b".to_owned(), Some("x".to_owned()))
        ]
    );
}

/// Random inputs never panic; every rejection is an EC2 client error.
#[test]
fn random_inputs_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let words = [
        "Action",
        "=",
        "&",
        "RunInstances",
        "DescribeInstances",
        "Version",
        "2016-11-15",
        ".",
        "1",
        "0",
        "Filter",
        "Name",
        "Value",
        "Tag",
        "Key",
        "TagSpecification",
        "InstanceId",
        "%",
        "%FF",
        "%2",
        "+",
        "i-0123456789abcdef0",
        "ami-12345678",
        "MinCount",
        "MaxCount",
        "UserData",
        "DryRun",
        "true",
        "ResourceType",
        "instance",
        "\u{0}",
        "é",
        "99999999999",
    ];
    for _ in 0..20_000 {
        let n = rng.random_range(0..40);
        let mut s = String::new();
        for _ in 0..n {
            if rng.random_bool(0.1) {
                s.push(char::from(rng.random_range(0u8..128)));
            } else {
                s.push_str(words[rng.random_range(0..words.len())]);
            }
        }
        if let Err(e) = parse_form(s.as_bytes()).and_then(Request::parse) {
            assert!(e.status().is_client_error(), "{s:?} -> {e}");
        }
    }
}

#[test]
fn metadata_options_parse_for_run_and_modify() {
    let body = format!(
        "Action=RunInstances&{V}&ImageId=ami-04681a1dbd79675a5&MinCount=1&MaxCount=1&\
         MetadataOptions.HttpTokens=required&MetadataOptions.HttpPutResponseHopLimit=2&\
         MetadataOptions.HttpEndpoint=enabled"
    );
    let Request::RunInstances(r) = parse(&body).unwrap() else {
        panic!("wrong action")
    };
    assert_eq!(r.metadata_options.http_tokens.as_deref(), Some("required"));
    assert_eq!(r.metadata_options.http_put_response_hop_limit, Some(2));
    assert_eq!(r.metadata_options.http_endpoint.as_deref(), Some("enabled"));
    let body = format!(
        "Action=ModifyInstanceMetadataOptions&{V}&InstanceId=i-0123456789abcdef0&\
         HttpEndpoint=disabled&InstanceMetadataTags=enabled"
    );
    let Request::ModifyInstanceMetadataOptions(m) = parse(&body).unwrap() else {
        panic!("wrong action")
    };
    assert_eq!(m.instance_id, "i-0123456789abcdef0");
    assert_eq!(m.options.http_endpoint.as_deref(), Some("disabled"));
    assert_eq!(m.options.instance_metadata_tags.as_deref(), Some("enabled"));
    // A hop limit that is not a number, a missing or malformed instance id.
    let bad = format!(
        "Action=ModifyInstanceMetadataOptions&{V}&InstanceId=i-0123456789abcdef0&\
         HttpPutResponseHopLimit=x"
    );
    assert_eq!(code(&bad), ErrorCode::InvalidParameterValue);
    let bad = format!("Action=ModifyInstanceMetadataOptions&{V}&HttpTokens=required");
    assert_eq!(code(&bad), ErrorCode::MissingParameter);
}
