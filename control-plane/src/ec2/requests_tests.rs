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
fn captured_requests_parse_or_name_the_unsupported_parameter() {
    use crate::ec2::sigv4::tests::{capture, CAPTURES};
    for text in CAPTURES {
        let c = capture(text);
        match Request::parse(parse_form(&c.body).unwrap()) {
            Ok(r) => assert!(["CreateKeyPair", "GetConsoleOutput"].contains(&r.action())),
            // The captured RunInstances carry security groups and EBS block
            // device mappings, which Nubis does not have.
            Err(e) => {
                assert_eq!(e.code, ErrorCode::UnknownParameter);
                assert!(
                    e.message.contains("SecurityGroup") || e.message.contains("BlockDeviceMapping"),
                    "{e}"
                );
            }
        }
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
        code(&format!("Action=CreateVpc&{V}")),
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
    let junk = base64::engine::general_purpose::STANDARD.encode("ssh-ed25519 AAAAB3NzaC1yc2E=");
    let junk: String = form_urlencoded::byte_serialize(junk.as_bytes()).collect();
    assert_eq!(
        code(&format!(
            "Action=ImportKeyPair&{V}&KeyName=k1&PublicKeyMaterial={junk}"
        )),
        ErrorCode::InvalidKeyFormat
    );
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
