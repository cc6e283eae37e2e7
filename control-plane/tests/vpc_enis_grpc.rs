//! Network interfaces over the Networking gRPC service (`nubis.vpc.v1`)
//! against a real etcd: the same domain as the EC2 actions, so the same
//! objects and EC2 error codes; tenants see and change only their own;
//! refusals write nothing.

#![allow(clippy::unwrap_used)]

mod support;

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
        [vpc.default_security_group_id.clone()]
    );
    assert!(e.attachment.is_none());
    assert_eq!(
        list(&mut a, &[&e.network_interface_id]).await.unwrap(),
        [e.clone()]
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
