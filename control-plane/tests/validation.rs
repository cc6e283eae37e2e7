//! Bad input is rejected with a clear EC2 error and nothing is written.

#![allow(clippy::unwrap_used)]

mod support;

use nubis_control_plane::domain::filters::Filter;
use nubis_control_plane::domain::instances::{DescribeInput, RunInstancesInput};
use nubis_control_plane::domain::Caller;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_nothing_written() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let d = cp.domain.clone();
    let (acc, _, _) = d.create_account(&Caller::Operator, "v").await.unwrap();
    let caller = Caller::Tenant(acc.id);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 8, 4096))
        .await
        .unwrap();
    let good = RunInstancesInput {
        image_id: image.clone(),
        instance_type: "t3.nano".into(),
        min_count: 1,
        max_count: 1,
        ..Default::default()
    };
    let cases: Vec<(&str, RunInstancesInput, &str)> = vec![
        (
            "unknown type",
            RunInstancesInput {
                instance_type: "x9.huge".into(),
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "missing type",
            RunInstancesInput {
                instance_type: "".into(),
                ..good.clone()
            },
            "MissingParameter",
        ),
        (
            "malformed image",
            RunInstancesInput {
                image_id: "ami-xyz".into(),
                ..good.clone()
            },
            "InvalidAMIID.Malformed",
        ),
        (
            "unknown image",
            RunInstancesInput {
                image_id: "ami-0123456789abcdef0".into(),
                ..good.clone()
            },
            "InvalidAMIID.NotFound",
        ),
        (
            "unknown zone",
            RunInstancesInput {
                availability_zone: Some("mars-1a".into()),
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "count 0",
            RunInstancesInput {
                min_count: 0,
                max_count: 0,
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "min > max",
            RunInstancesInput {
                min_count: 3,
                max_count: 2,
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "huge count",
            RunInstancesInput {
                min_count: 1,
                max_count: 100_000,
                ..good.clone()
            },
            "InstanceLimitExceeded",
        ),
        (
            "user data > 16 KiB",
            RunInstancesInput {
                user_data: vec![b'x'; 16 * 1024 + 1],
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "bad token",
            RunInstancesInput {
                client_token: Some("has space".into()),
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "aws: tag",
            RunInstancesInput {
                tags: vec![("aws:x".into(), "1".into())],
                ..good.clone()
            },
            "InvalidParameterValue",
        ),
        (
            "unknown key pair",
            RunInstancesInput {
                key_name: Some("nope".into()),
                ..good.clone()
            },
            "InvalidKeyPair.NotFound",
        ),
    ];
    for (what, input, code) in cases {
        let e = d.run_instances(&caller, input).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e}");
        assert!(!e.client_message().is_empty());
    }
    let desc = |filters: Vec<Filter>, ids: Vec<String>| DescribeInput {
        instance_ids: ids,
        filters,
        ..Default::default()
    };
    let e = d
        .describe_instances(
            &caller,
            desc(
                vec![Filter {
                    name: "bogus".into(),
                    values: vec!["x".into()],
                }],
                vec![],
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    assert!(e.to_string().contains("bogus"));
    let e = d
        .describe_instances(&caller, desc(vec![], vec!["i-123".into()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidInstanceID.Malformed");
    let e = d
        .terminate_instances(&caller, &["i-0123456789abcdef0".into()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidInstanceID.NotFound");

    // Nothing was written: no instances, no client tokens, no allocations.
    let store = d.store();
    assert_eq!(store.count(&store.keys().all_instances()).await.unwrap(), 0);
    assert_eq!(store.count("/nubis/v1/client-tokens/").await.unwrap(), 0);
    let nodes = d.list_nodes(&Caller::Operator, None).await.unwrap();
    assert_eq!(nodes[0].alloc.instances, 0);

    // And a good request still works afterwards.
    d.run_instances(&caller, good).await.unwrap();
    cp.shutdown().await;
}
