//! Instance metadata options over gRPC: RunInstances `MetadataOptions`,
//! ModifyInstanceMetadataOptions, DescribeInstances; bad input, tenant
//! isolation, and the options reaching the node's assignment.

#![allow(clippy::unwrap_used)]

mod support;

use nubis_control_plane::domain::Caller;
use nubis_control_plane::ids::AccountId;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

fn opts(
    f: impl FnOnce(&mut pb::InstanceMetadataOptionsRequest),
) -> Option<pb::InstanceMetadataOptionsRequest> {
    let mut o = pb::InstanceMetadataOptionsRequest::default();
    f(&mut o);
    Some(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_options_are_validated_isolated_and_reach_the_node() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 8, 4096))
        .await
        .unwrap();
    let mut a = compute(&ep, tenant(&ep, "a").await).await;
    let mut b = compute(&ep, tenant(&ep, "b").await).await;

    // Defaults are EC2's.
    let plain = a
        .run_instances(run_req(&image, 1))
        .await
        .unwrap()
        .into_inner();
    let o = plain.reservation.unwrap().instances[0]
        .metadata_options
        .clone()
        .unwrap();
    assert_eq!(
        (
            o.http_tokens.as_str(),
            o.http_put_response_hop_limit,
            o.http_endpoint.as_str()
        ),
        ("optional", 1, "enabled")
    );
    assert_eq!(
        (
            o.http_protocol_ipv6.as_str(),
            o.instance_metadata_tags.as_str()
        ),
        ("disabled", "disabled")
    );

    // Bad values are refused before anything is written.
    for bad in [
        opts(|o| o.http_put_response_hop_limit = 65),
        opts(|o| o.http_tokens = "maybe".into()),
        opts(|o| o.http_endpoint = "on".into()),
        opts(|o| o.http_protocol_ipv6 = "yes".into()),
        opts(|o| o.instance_metadata_tags = "Enabled".into()),
    ] {
        let mut req = run_req(&image, 1);
        req.metadata_options = bad.clone();
        let e = a.run_instances(req).await.unwrap_err();
        assert_eq!(ec2_code(&e), "InvalidParameterValue", "{bad:?}: {e}");
    }
    assert_eq!(
        describe_all(&mut a).await.len(),
        1,
        "nothing launched by bad requests"
    );

    let mut req = run_req(&image, 1);
    req.metadata_options = opts(|o| {
        o.http_tokens = "required".into();
        o.http_put_response_hop_limit = 3;
    });
    let inst = a
        .run_instances(req)
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap()
        .instances[0]
        .clone();
    let o = inst.metadata_options.clone().unwrap();
    assert_eq!(
        (o.http_tokens.as_str(), o.http_put_response_hop_limit),
        ("required", 3)
    );
    let id = inst.instance_id.clone();

    // Another account cannot see or change it; bad input is refused.
    let modify = |id: &str, o| pb::ModifyInstanceMetadataOptionsRequest {
        instance_id: id.into(),
        options: o,
    };
    let e = b
        .modify_instance_metadata_options(modify(
            &id,
            opts(|o| o.http_endpoint = "disabled".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidInstanceID.NotFound", "{e}");
    let e = a
        .modify_instance_metadata_options(modify(
            "i-xyz",
            opts(|o| o.http_tokens = "optional".into()),
        ))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidInstanceID.Malformed", "{e}");
    let e = a
        .modify_instance_metadata_options(modify(&id, None))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "MissingParameter", "{e}");
    let e = a
        .modify_instance_metadata_options(modify(&id, opts(|o| o.http_put_response_hop_limit = 65)))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidParameterValue", "{e}");

    // The owner disables the endpoint: shown by Describe, sent to the node.
    let r = a
        .modify_instance_metadata_options(modify(
            &id,
            opts(|o| o.http_endpoint = "disabled".into()),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.instance_id, id);
    let o = r.instance_metadata_options.unwrap();
    assert_eq!(
        (
            o.http_endpoint.as_str(),
            o.http_tokens.as_str(),
            o.http_put_response_hop_limit
        ),
        ("disabled", "required", 3)
    );
    let shown = state_of(&mut a, &id).await.metadata_options.unwrap();
    assert_eq!(shown.http_endpoint, "disabled");
    assert_eq!(shown.http_tokens, "required");

    let d = cp.domain.clone();
    let owner = AccountId::parse(&inst.owner_id).unwrap();
    let stored = d.instance(&Caller::Tenant(owner), &id).await.unwrap().value;
    let node = stored.node_id.clone().unwrap();
    let assignment = d
        .store()
        .assignments()
        .get(&node, &stored.id)
        .await
        .unwrap()
        .unwrap()
        .value;
    let md = assignment.metadata.unwrap();
    assert!(!md.options.endpoint_enabled);
    assert!(md.options.http_tokens_required);
    assert_eq!(md.options.hop_limit, 3);
    assert_eq!(md.image_id, image);
    assert_eq!(md.availability_zone, ZONES[0]);
}
