//! End to end over gRPC with a real etcd and simulated agents: launch,
//! describe, stop/start/reboot/terminate, console output, auth.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_control_plane::sim::{SimAgent, SimOptions, SimPhase};
use nubis_proto::compute::v1 as pb;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_lifecycle_through_a_simulated_agent() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let creds = tenant(&ep, "alice").await;
    let agent = SimAgent::start(&ep, enrol(), SimOptions::new("host-a", ZONES[0], 4, 1024))
        .await
        .unwrap();
    let mut c = compute(&ep, creds).await;

    let mut req = run_req(&image, 2);
    req.tags = vec![pb::Tag {
        key: "Name".into(),
        value: "web".into(),
    }];
    req.user_data = b"#!/bin/sh\necho hi\n".to_vec();
    let res = c
        .run_instances(req)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(res.instances.len(), 2);
    let id = res.instances[0].instance_id.clone();
    assert!(id.starts_with("i-") && id.len() == 19);
    assert_eq!(res.instances[0].state.as_ref().unwrap().code, 0);
    // The default VPC's default subnet of the zone (docs/networking.md).
    assert!(res.instances[0].private_ip_address.starts_with("172.31."));
    assert_eq!(res.instances[0].node_id, "", "tenants do not see node ids");
    assert_ne!(
        res.instances[0].private_ip_address,
        res.instances[1].private_ip_address
    );

    eprintln!("launched");
    let running = wait_state(&c, &id, "running").await;
    eprintln!("running");
    assert_eq!(running.state.as_ref().unwrap().code, 16);
    assert_eq!(running.availability_zone, ZONES[0]);
    assert_eq!(agent.phase(&id), Some((SimPhase::Running, 0)));

    // Filters.
    let f = |name: &str, v: &str| pb::Filter {
        name: name.into(),
        values: vec![v.into()],
    };
    let r = c
        .describe_instances(pb::DescribeInstancesRequest {
            filters: vec![f("tag:Name", "we*"), f("instance-type", "t3.nano")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.reservations
            .iter()
            .map(|r| r.instances.len())
            .sum::<usize>(),
        2
    );
    let r = c
        .describe_instances(pb::DescribeInstancesRequest {
            filters: vec![f("instance-state-name", "stopped")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.reservations.is_empty());

    eprintln!("filters ok");
    // Console output comes from the agent.
    let out = c
        .get_console_output(pb::GetConsoleOutputRequest {
            instance_id: id.clone(),
            latest: true,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8(out.output).unwrap();
    assert!(text.contains(&format!("NUBIS-GUEST-READY {id}")), "{text}");

    eprintln!("console ok");
    // Reboot keeps it running; the agent rebooted once.
    c.reboot_instances(pb::RebootInstancesRequest {
        instance_ids: vec![id.clone()],
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(90), "reboot", || {
        let p = agent.phase(&id);
        async move { (p == Some((SimPhase::Running, 1))).then_some(()) }
    })
    .await;

    eprintln!("reboot ok");
    // Stop -> stopping -> stopped (vCPU/memory released; node and address kept).
    let ch = c
        .stop_instances(pb::StopInstancesRequest {
            instance_ids: vec![id.clone()],
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ch.stopping_instances[0]
            .previous_state
            .as_ref()
            .unwrap()
            .name,
        "running"
    );
    assert_eq!(
        ch.stopping_instances[0]
            .current_state
            .as_ref()
            .unwrap()
            .name,
        "stopping"
    );
    let stopped = wait_state(&c, &id, "stopped").await;
    assert_eq!(
        stopped.state_reason.unwrap().code,
        "Client.UserInitiatedShutdown"
    );
    assert_eq!(
        stopped.private_ip_address, running.private_ip_address,
        "a stopped instance keeps its node and address"
    );

    // Start again -> pending -> running.
    let ch = c
        .start_instances(pb::StartInstancesRequest {
            instance_ids: vec![id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ch.starting_instances[0]
            .current_state
            .as_ref()
            .unwrap()
            .name,
        "pending"
    );
    wait_state(&c, &id, "running").await;

    // Terminate both; illegal transitions are rejected afterwards.
    let ids: Vec<String> = res
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    c.terminate_instances(pb::TerminateInstancesRequest {
        instance_ids: ids.clone(),
    })
    .await
    .unwrap();
    for i in &ids {
        wait_state(&c, i, "terminated").await;
    }
    let e = c
        .start_instances(pb::StartInstancesRequest {
            instance_ids: vec![id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "IncorrectInstanceState");

    // Capacity is back to zero on the node.
    let mut a = admin_client(&ep).await;
    let nodes = a
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].allocated.as_ref().unwrap().memory_mib, 0);
    assert_eq!(nodes[0].instance_count, 0);
    assert_eq!(nodes[0].state, "ready");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_must_be_signed_by_known_keys() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    // Unsigned.
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let mut raw = pb::compute_client::ComputeClient::new(ch);
    let e = raw
        .describe_regions(pb::DescribeRegionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // Wrong secret.
    let mut bad = compute(
        &ep,
        nubis_proto::auth::Credentials::new(ADMIN_KEY, "wrong-secret-xxxxxxxx"),
    )
    .await;
    let e = bad
        .describe_regions(pb::DescribeRegionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(ec2_code(&e), "AuthFailure");
    // Unknown key.
    let mut unk = compute(
        &ep,
        nubis_proto::auth::Credentials::new("NKIANOPE", "whatever"),
    )
    .await;
    assert_eq!(
        unk.describe_regions(pb::DescribeRegionsRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    // Tenants cannot use the Admin API; enrolment tokens cannot use Compute.
    let creds = tenant(&ep, "bob").await;
    let ch = nubis_proto::transport::connect(&ep).await.unwrap();
    let mut a =
        pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(ch, creds.clone()));
    assert_eq!(
        a.list_nodes(pb::ListNodesRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let mut e = compute(&ep, enrol()).await;
    assert_eq!(
        e.describe_instances(pb::DescribeInstancesRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    // A tenant sees regions.
    let mut c = compute(&ep, creds).await;
    let r = c
        .describe_regions(pb::DescribeRegionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.regions[0].region_name, "test-1");
    cp.shutdown().await;
}
