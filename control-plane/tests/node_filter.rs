//! The `node-id` DescribeInstances filter is the operator's: on main a
//! tenant could use it (with wildcards) to learn which host its instances
//! share with another tenant's (issue 16: 15 of 17 hex digits in 111 calls).

#![allow(clippy::unwrap_used)]

mod support;

use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

fn by_node(pattern: &str) -> pb::DescribeInstancesRequest {
    pb::DescribeInstancesRequest {
        filters: vec![pb::Filter {
            name: "node-id".into(),
            values: vec![pattern.into()],
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_filters_instances_by_node() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 2, 512))
        .await
        .unwrap();
    let mut t = compute(&ep, tenant(&ep, "t").await).await;
    t.run_instances(run_req(&image, 1)).await.unwrap();

    let e = t.describe_instances(by_node("*")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(ec2_code(&e), "InvalidParameterValue");
    let e = t
        .describe_instances(by_node(&agent.node_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The operator still can (its own account's instances here: none).
    let mut op = compute(&ep, admin()).await;
    op.describe_instances(by_node(&agent.node_id))
        .await
        .expect("the operator may filter by node");
    cp.shutdown().await;
}
