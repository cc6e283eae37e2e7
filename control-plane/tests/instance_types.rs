//! The instance-type catalogue in etcd: seeded once per cluster (a second
//! replica with another seed set does not reseed, nor does a restart after
//! the operator deleted a seeded type), managed by the operator only over
//! the Admin API, followed by other replicas through their watch, used by
//! launches and offerings, and deletion refused while instances use a type.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use nubis_control_plane::domain::catalogue::{InstanceType, SeedProfile, TypeLimits};
use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::offerings::LocationType;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::compute::v1 as pb;
use support::*;

fn size(d: &Domain, name: &str) -> Option<(u32, u32)> {
    d.instance_type(name).ok().map(|t| (t.vcpus, t.memory_mib))
}

fn put(name: &str, vcpus: u32, memory_mib: u32) -> pb::PutInstanceTypeRequest {
    pb::PutInstanceTypeRequest {
        instance_type: name.into(),
        vcpus,
        memory_mib,
        limits: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_once_managed_by_the_operator_and_followed_by_replicas() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    // The test config seeds the compact set.
    let cp1 = start(config(&etcd)).await;
    let d1 = cp1.domain.clone();
    assert_eq!(size(&d1, "t3.nano"), Some((1, 64)));
    assert_eq!(size(&d1, "r5.4xlarge"), Some((16, 131072)));
    let all = d1.list_instance_types(&Caller::Operator).await.unwrap();
    assert_eq!(all.len(), 33);
    assert_eq!(all[0].name, "c5.large");

    // A second replica configured with EC2's sizes finds the cluster seeded.
    let mut cfg2 = config(&etcd);
    cfg2.instance_types.seed = SeedProfile::Ec2;
    let cp2 = start(cfg2).await;
    let d2 = cp2.domain.clone();
    assert_eq!(size(&d2, "t3.nano"), Some((1, 64)), "reseeded");

    // Operator only.
    let tenant = setup_account(&d1).await;
    let x = InstanceType {
        name: "x1.tiny".into(),
        vcpus: 1,
        memory_mib: 32,
        limits: None,
    };
    for e in [
        d1.put_instance_type(&tenant, x.clone()).await.unwrap_err(),
        d1.delete_instance_type(&tenant, "t3.nano")
            .await
            .unwrap_err(),
        d1.list_instance_types(&tenant).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), "UnauthorizedOperation", "{e}");
    }
    let ep = endpoint(&cp1);
    let mut tenant_admin = pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(
        nubis_proto::transport::connect(&ep).await.unwrap(),
        tenant_creds(&ep).await,
    ));
    let s = tenant_admin
        .put_instance_type(put("x1.tiny", 1, 32))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

    // Bad definitions, over gRPC.
    let mut admin = admin_client(&ep).await;
    for bad in [
        put("X1.tiny", 1, 32),
        put("x1", 1, 32),
        put("x1.tiny/../t3", 1, 32),
        put("x1.tiny", 0, 32),
        put("x1.tiny", 1, 8),
        put("x1.tiny", 100_000, 32),
    ] {
        let s = admin.put_instance_type(bad.clone()).await.unwrap_err();
        assert_eq!(ec2_code(&s), "InvalidParameterValue", "{bad:?}: {s:?}");
    }
    let s = admin
        .delete_instance_type(pb::DeleteInstanceTypeRequest {
            instance_type: "x9.none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&s), "InvalidInstanceType", "{s:?}");

    // A new type reaches the other replica through its watch.
    let out = admin
        .put_instance_type(put("x1.tiny", 1, 32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.instance_type.unwrap().memory_mib, 32);
    eventually(Duration::from_secs(10), "x1.tiny on replica 2", || async {
        size(&d2, "x1.tiny").map(|_| ())
    })
    .await;
    let listed = admin
        .list_instance_types(pb::ListInstanceTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .instance_types;
    assert_eq!(listed.len(), 34);
    assert!(listed
        .iter()
        .any(|t| t.instance_type == "x1.tiny" && t.vcpus == 1));

    // Offerings: only where a host could ever fit the type.
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h-a", ZONES[0], 2, 256))
        .await
        .unwrap();
    admin
        .put_instance_type(put("x1.huge", 4, 128))
        .await
        .unwrap();
    let offered = |d: &Domain, name: &str| {
        d.instance_type_offerings(LocationType::AvailabilityZone, &[])
            .unwrap()
            .into_iter()
            .filter(|o| o.instance_type == name)
            .map(|o| o.location)
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(10),
        "x1.huge and a node on replica 1",
        || async {
            (size(&d1, "x1.huge").is_some() && !offered(&d1, "x1.tiny").is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(offered(&d1, "x1.tiny"), [ZONES[0]]);
    assert!(offered(&d1, "x1.huge").is_empty());

    // Launches use it; deletion is refused while an instance of it lives.
    let image = register_image(&d1).await;
    let mut input = nano_input(&image, 1);
    input.instance_type = "x1.tiny".into();
    let r = d1.run_instances(&tenant, input.clone()).await.unwrap();
    let id = r.instances[0].id.to_string();
    assert_eq!((r.instances[0].vcpus, r.instances[0].memory_mib), (1, 32));
    let e = d1
        .delete_instance_type(&Caller::Operator, "x1.tiny")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidInstanceType.InUse", "{e}");
    assert!(e.to_string().contains(&id), "{e}");
    d1.terminate_instances(&tenant, std::slice::from_ref(&id))
        .await
        .unwrap();
    wait_domain_state(&d1, &tenant, &id, State::Terminated).await;
    d1.delete_instance_type(&Caller::Operator, "x1.tiny")
        .await
        .unwrap();
    let e = d1.run_instances(&tenant, input).await.unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue", "{e}");
    // The instance keeps the size it was launched with.
    let i = d1.instance(&tenant, &id).await.unwrap().value;
    assert_eq!(
        (i.instance_type.as_str(), i.vcpus, i.memory_mib),
        ("x1.tiny", 1, 32)
    );
    eventually(
        Duration::from_secs(10),
        "x1.tiny gone on replica 2",
        || async { size(&d2, "x1.tiny").is_none().then_some(()) },
    )
    .await;

    // A deleted seeded type stays deleted when a replica starts again.
    d1.delete_instance_type(&Caller::Operator, "t2.nano")
        .await
        .unwrap();
    cp2.shutdown().await;
    let cp3 = start(config(&etcd)).await;
    assert_eq!(size(&cp3.domain, "t2.nano"), None);
    assert_eq!(size(&cp3.domain, "t2.micro"), Some((1, 1024)));
    cp3.shutdown().await;
    cp1.shutdown().await;
}

async fn tenant_creds(ep: &str) -> nubis_proto::auth::Credentials {
    tenant(ep, "types-tenant").await
}

/// A type's device rate limits: put and listed over the Admin API, copied
/// into the assignment of an instance launched with it, and sent to its
/// agent in the launch spec; a type without limits sends none (the agent's
/// `[limits]` then apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_types_limits_reach_the_assignment_and_the_launch_spec() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let ep = endpoint(&cp);
    let mut admin = admin_client(&ep).await;
    let limits = pb::InstanceTypeLimits {
        disk_bps: 10 << 20,
        disk_iops: 500,
        net_tx_bps: 1 << 20,
        net_tx_pps: 1_000,
        net_rx_bps: 2 << 20,
        net_rx_pps: 2_000,
    };
    let mut req = put("x2.lim", 1, 32);
    req.limits = Some(limits);
    let out = admin.put_instance_type(req).await.unwrap().into_inner();
    assert_eq!(out.instance_type.unwrap().limits, Some(limits));
    admin
        .put_instance_type(put("x2.free", 1, 32))
        .await
        .unwrap();
    let listed = admin
        .list_instance_types(pb::ListInstanceTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .instance_types;
    let find = |n: &str| listed.iter().find(|t| t.instance_type == n).unwrap();
    assert_eq!(find("x2.lim").limits, Some(limits));
    assert_eq!(find("x2.free").limits, None);
    // The seeded (compact) types carry their seeded limits.
    assert_eq!(find("t3.micro").limits.unwrap().disk_iops, 1_000);

    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h-l", ZONES[0], 4, 512))
        .await
        .unwrap();
    let tenant = setup_account(&d).await;
    let image = register_image(&d).await;
    let mut sent = Vec::new();
    for ty in ["x2.lim", "x2.free"] {
        let mut input = nano_input(&image, 1);
        input.instance_type = ty.into();
        let r = d.run_instances(&tenant, input).await.unwrap();
        let id = r.instances[0].id.to_string();
        wait_domain_state(&d, &tenant, &id, State::Running).await;
        let inst = d.instance(&tenant, &id).await.unwrap().value;
        let a = d
            .store()
            .assignments()
            .get(inst.node_id.as_ref().unwrap(), &inst.id)
            .await
            .unwrap()
            .unwrap()
            .value;
        let spec = nubis_control_plane::api::node::assignment_out(&a)
            .spec
            .unwrap();
        sent.push((a.limits, spec.limits));
    }
    let want = TypeLimits {
        disk_bps: 10 << 20,
        disk_iops: 500,
        net_tx_bps: 1 << 20,
        net_tx_pps: 1_000,
        net_rx_bps: 2 << 20,
        net_rx_pps: 2_000,
    };
    let wire = nubis_proto::node::v1::DeviceLimits {
        disk_bps: 10 << 20,
        disk_iops: 500,
        net_tx_bps: 1 << 20,
        net_tx_pps: 1_000,
        net_rx_bps: 2 << 20,
        net_rx_pps: 2_000,
    };
    assert_eq!(sent, [(Some(want), Some(wire)), (None, None)]);
    cp.shutdown().await;
}
