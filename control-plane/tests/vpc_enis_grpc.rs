//! Network interfaces over the Networking gRPC service (`nubis.vpc.v1`)
//! against a real etcd (the same domain as the EC2 actions, so the same
//! objects and EC2 error codes; tenants see and change only their own;
//! refusals write nothing), two replicas racing to launch with one
//! interface, and the `WatchNetwork` view of an instance launched with an
//! interface.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nubis_control_plane::ec2::DomainBackend;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use vpc_common::enis::{launch, network, run, with_eni};
use vpc_common::{text, texts, Ec2};

use nubis_proto::auth::{Credentials, Signed, SignedChannel};
use nubis_proto::vpc::v1 as pb;
use nubis_proto::vpc::v1::networking_client::NetworkingClient;
use support::*;

type Net = NetworkingClient<SignedChannel>;

async fn net(ep: &str, creds: Credentials) -> Net {
    let ch = nubis_proto::transport::connect(ep).await.unwrap();
    NetworkingClient::new(Signed::new(ch, creds))
}

async fn list(c: &mut Net, ids: &[&str]) -> Result<Vec<pb::NetworkInterface>, tonic::Status> {
    Ok(
        c.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            network_interface_ids: ids.iter().map(|s| s.to_string()).collect(),
            filters: Vec::new(),
        })
        .await?
        .into_inner()
        .network_interfaces,
    )
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    ec2_code(&r.unwrap_err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_interfaces_over_grpc() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let mut a = net(&ep, tenant(&ep, "a").await).await;
    let mut b = net(&ep, tenant(&ep, "b").await).await;
    let vpc = a
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "10.1.0.0/16".into(),
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .vpc
        .unwrap();
    let subnet = a
        .create_subnet(pb::CreateSubnetRequest {
            vpc_id: vpc.vpc_id.clone(),
            cidr_block: "10.1.2.0/24".into(),
            availability_zone: ZONES[0].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subnet
        .unwrap();

    let e = a
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            subnet_id: subnet.subnet_id.clone(),
            private_ip_address: "10.1.2.10".into(),
            description: "db".into(),
            tags: vec![pb::Tag {
                key: "Name".into(),
                value: "db".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .network_interface
        .unwrap();
    assert!(e.network_interface_id.starts_with("eni-"));
    assert_eq!(
        (
            e.private_ip_address.as_str(),
            e.mac_address.as_str(),
            e.status.as_str(),
            e.description.as_str()
        ),
        ("10.1.2.10", "02:4e:0a:01:02:0a", "available", "db")
    );
    assert_eq!(
        e.security_group_ids,
        std::slice::from_ref(&vpc.default_security_group_id)
    );
    assert!(e.attachment.is_none());
    assert_eq!(
        list(&mut a, &[&e.network_interface_id]).await.unwrap(),
        std::slice::from_ref(&e)
    );

    // Refusals with EC2 codes; nothing is written.
    let before = list(&mut a, &[]).await.unwrap();
    assert_eq!(
        code(
            a.create_network_interface(pb::CreateNetworkInterfaceRequest {
                subnet_id: subnet.subnet_id.clone(),
                private_ip_address: "10.1.2.10".into(),
                ..Default::default()
            })
            .await
        ),
        "InvalidIPAddress.InUse"
    );
    assert_eq!(
        code(
            a.create_network_interface(pb::CreateNetworkInterfaceRequest::default())
                .await
        ),
        "MissingParameter"
    );
    assert_eq!(
        code(
            a.attach_network_interface(pb::AttachNetworkInterfaceRequest {
                network_interface_id: e.network_interface_id.clone(),
                instance_id: "i-0123456789abcdef0".into(),
                device_index: 1,
            })
            .await
        ),
        "InvalidInstanceID.NotFound"
    );
    assert_eq!(
        code(
            a.detach_network_interface(pb::DetachNetworkInterfaceRequest {
                attachment_id: "eni-attach-0123456789abcdef0".into(),
            })
            .await
        ),
        "InvalidAttachmentID.NotFound"
    );
    assert_eq!(
        code(
            a.modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
                network_interface_id: e.network_interface_id.clone(),
                security_group_ids: vec!["sg-0123456789abcdef0".into()],
                description: None,
            })
            .await
        ),
        "InvalidGroup.NotFound"
    );
    // Tenant isolation.
    assert_eq!(
        ec2_code(&list(&mut b, &[&e.network_interface_id]).await.unwrap_err()),
        "InvalidNetworkInterfaceID.NotFound"
    );
    assert_eq!(
        code(
            b.delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                network_interface_id: e.network_interface_id.clone(),
            })
            .await
        ),
        "InvalidNetworkInterfaceID.NotFound"
    );
    assert!(list(&mut b, &[]).await.unwrap().is_empty());
    assert_eq!(list(&mut a, &[]).await.unwrap(), before);

    a.modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
        network_interface_id: e.network_interface_id.clone(),
        security_group_ids: vec![],
        description: Some("primary db".into()),
    })
    .await
    .unwrap();
    assert_eq!(
        list(&mut a, &[&e.network_interface_id]).await.unwrap()[0].description,
        "primary db"
    );
    a.delete_network_interface(pb::DeleteNetworkInterfaceRequest {
        network_interface_id: e.network_interface_id.clone(),
    })
    .await
    .unwrap();
    assert!(list(&mut a, &[]).await.unwrap().is_empty());
    // The address is free again.
    a.create_network_interface(pb::CreateNetworkInterfaceRequest {
        subnet_id: subnet.subnet_id.clone(),
        private_ip_address: "10.1.2.10".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_to_attach_one_interface_exactly_one_wins() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cfg = config(&etcd);
    let one = start(cfg.clone()).await;
    let two = start(cfg).await;
    let ep = endpoint(&one);
    let image = hello_image(&ep).await;
    let _h = SimAgent::start(&ep, enrol(), SimOptions::new("h", ZONES[0], 16, 8192))
        .await
        .unwrap();
    let a = Ec2::new(&one.domain, "a").await;
    let a2 = Ec2 {
        backend: DomainBackend::new(two.domain.clone()),
        account: a.account.clone(),
    };
    let (_, subnet, _) = network(&a, ZONES[0]).await;
    for round in 0..3 {
        let eni = text(
            &a.ok("CreateNetworkInterface", &[("SubnetId", &subnet)])
                .await,
            "networkInterfaceId",
        );
        let p = run(&image, &with_eni(&eni, false));
        let (r1, r2) = tokio::join!(launch(&a, &p), launch(&a2, &p));
        let won: Vec<&String> = [&r1, &r2].iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {r1:?} {r2:?}");
        for r in [&r1, &r2] {
            if let Err(code) = r {
                assert_eq!(code, "InvalidNetworkInterface.InUse");
            }
        }
        let de = a
            .ok(
                "DescribeNetworkInterfaces",
                &[("NetworkInterfaceId.1", &eni)],
            )
            .await;
        assert_eq!(text(&de, "instanceId"), *won[0]);
        let launched: BTreeSet<String> = texts(&a.ok("DescribeInstances", &[]).await, "instanceId")
            .into_iter()
            .collect();
        assert_eq!(launched.len(), round + 1, "the loser launched nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_view_carries_the_interface_address_and_groups() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let n = SimAgent::start(
        &ep,
        enrol(),
        SimOptions::new("h", ZONES[0], 16, 4096).with_underlay("192.0.2.1"),
    )
    .await
    .unwrap();
    let a = Ec2::new(&cp.domain, "a").await;
    let (vpc, subnet, web) = network(&a, ZONES[0]).await;
    let eni = text(
        &a.ok(
            "CreateNetworkInterface",
            &[
                ("SubnetId", &subnet),
                ("SecurityGroupId.1", &web),
                ("PrivateIpAddress", "10.0.1.99"),
            ],
        )
        .await,
        "networkInterfaceId",
    );
    let t0 = Instant::now() - Duration::from_secs(1);
    let i = launch(&a, &run(&image, &with_eni(&eni, false)))
        .await
        .unwrap();
    let wait = Duration::from_secs(10);
    let endpoint_of = |v: &nubis_proto::node::v1::NetworkView| {
        v.vpcs
            .iter()
            .find(|x| x.vpc_id == vpc)
            .and_then(|x| x.endpoints.iter().find(|e| e.instance_id == i).cloned())
    };
    let (_, v) = n
        .wait_view(t0, wait, |v| endpoint_of(v).is_some())
        .await
        .expect("a view with the instance");
    let e = endpoint_of(&v).unwrap();
    assert_eq!(
        (e.ip.as_str(), e.mac.as_str(), e.subnet_id.as_str()),
        ("10.0.1.99", "02:4e:0a:00:01:63", subnet.as_str())
    );
    assert_eq!(e.security_group_ids, std::slice::from_ref(&web));
    // The interface's groups change: the view follows.
    let default_sg = text(
        &a.ok(
            "DescribeSecurityGroups",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", "default"),
            ],
        )
        .await,
        "groupId",
    );
    let t1 = Instant::now();
    a.ok(
        "ModifyNetworkInterfaceAttribute",
        &[
            ("NetworkInterfaceId", &eni),
            ("SecurityGroupId.1", &default_sg),
            ("SecurityGroupId.2", &web),
        ],
    )
    .await;
    let mut both = vec![default_sg.clone(), web.clone()];
    both.sort();
    n.wait_view(t1, wait, |v| {
        endpoint_of(v).is_some_and(|e| {
            let mut g = e.security_group_ids.clone();
            g.sort();
            g == both
        })
    })
    .await
    .expect("the view with the interface's new groups");
}
