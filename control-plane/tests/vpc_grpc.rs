//! The Networking gRPC service (`nubis.vpc.v1`) over a real etcd: the same
//! domain as the EC2 actions, so the same objects, rules and EC2 error codes;
//! tenants see and change only their own objects; refusals write nothing.

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

fn perm(protocol: &str, port: i32, cidrs: &[&str], groups: &[&str]) -> pb::Permission {
    let peers = |v: &[&str]| {
        v.iter()
            .map(|x| pb::Peer {
                value: x.to_string(),
                description: String::new(),
            })
            .collect()
    };
    pb::Permission {
        protocol: protocol.into(),
        from_port: Some(port),
        to_port: Some(port),
        cidrs: peers(cidrs),
        group_ids: peers(groups),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networking_api_creates_describes_and_refuses_like_ec2() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let mut a = net(&ep, tenant(&ep, "a").await).await;
    let mut b = net(&ep, tenant(&ep, "b").await).await;

    // The default VPC is there on first use, with a subnet per zone.
    let vpcs = a
        .describe_vpcs(pb::DescribeVpcsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vpcs;
    assert_eq!(vpcs.len(), 1);
    assert!(vpcs[0].is_default && vpcs[0].cidr_block == "172.31.0.0/16");

    let vpc = a
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "10.8.0.0/16".into(),
            tags: vec![pb::Tag {
                key: "Name".into(),
                value: "prod".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .vpc
        .unwrap();
    let subnet = a
        .create_subnet(pb::CreateSubnetRequest {
            vpc_id: vpc.vpc_id.clone(),
            cidr_block: "10.8.1.0/24".into(),
            availability_zone: ZONES[1].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subnet
        .unwrap();
    assert_eq!(subnet.available_ip_address_count, 251);
    assert_eq!(subnet.availability_zone, ZONES[1]);
    let web = a
        .create_security_group(pb::CreateSecurityGroupRequest {
            group_name: "web".into(),
            description: "web".into(),
            vpc_id: vpc.vpc_id.clone(),
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .security_group
        .unwrap();
    let lb = a
        .create_security_group(pb::CreateSecurityGroupRequest {
            group_name: "lb".into(),
            description: "lb".into(),
            vpc_id: vpc.vpc_id.clone(),
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .security_group
        .unwrap();
    // A new group allows all egress and no ingress, as EC2.
    assert!(web.ingress.is_empty());
    assert_eq!(web.egress.len(), 1);
    let added = a
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            group_id: web.group_id.clone(),
            direction: pb::Direction::Ingress as i32,
            permissions: vec![perm("tcp", 80, &["10.0.0.0/8"], &[&lb.group_id])],
        })
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(added.len(), 2, "one rule per peer");
    let shown = a
        .describe_security_groups(pb::DescribeSecurityGroupsRequest {
            group_ids: vec![web.group_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .security_groups;
    let peers: Vec<_> = shown[0].ingress.iter().map(|r| r.peer.clone()).collect();
    assert!(peers.contains(&Some(pb::rule::Peer::GroupId(lb.group_id.clone()))));
    assert!(peers.contains(&Some(pb::rule::Peer::Cidr("10.0.0.0/8".into()))));

    // Refusals, each with EC2's code, and nothing written.
    let code = |r: Result<tonic::Response<pb::CreateVpcResponse>, tonic::Status>| {
        ec2_code(&r.unwrap_err())
    };
    assert_eq!(
        code(
            a.create_vpc(pb::CreateVpcRequest {
                cidr_block: "10.0.0.0/8".into(),
                tags: vec![]
            })
            .await
        ),
        "InvalidVpc.Range"
    );
    let e = a
        .create_subnet(pb::CreateSubnetRequest {
            vpc_id: vpc.vpc_id.clone(),
            cidr_block: "10.8.1.128/25".into(),
            availability_zone: ZONES[0].into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidSubnet.Conflict");
    let e = a
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            group_id: web.group_id.clone(),
            direction: pb::Direction::Ingress as i32,
            permissions: vec![perm("tcp", 80, &["10.0.0.0/8"], &[])],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidPermission.Duplicate");
    let e = a
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            group_id: web.group_id.clone(),
            direction: pb::Direction::Unspecified as i32,
            permissions: vec![perm("tcp", 81, &["10.0.0.0/8"], &[])],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidParameterValue");
    let e = a
        .delete_security_group(pb::DeleteSecurityGroupRequest {
            group_id: lb.group_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "DependencyViolation", "web's rule names lb");
    let e = a
        .delete_vpc(pb::DeleteVpcRequest {
            vpc_id: vpc.vpc_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "DependencyViolation");
    let vpcs = a
        .describe_vpcs(pb::DescribeVpcsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vpcs;
    assert_eq!(vpcs.len(), 2, "a refusal wrote a VPC");
    let web_now = a
        .describe_security_groups(pb::DescribeSecurityGroupsRequest {
            group_ids: vec![web.group_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .security_groups;
    assert_eq!(web_now[0].ingress.len(), 2, "a refusal changed the rules");

    // Tenant B sees none of it and can change none of it; B's own VPC may
    // use the same block.
    let theirs = b
        .describe_vpcs(pb::DescribeVpcsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .vpcs;
    assert!(theirs.iter().all(|v| v.vpc_id != vpc.vpc_id));
    let e = b
        .describe_vpcs(pb::DescribeVpcsRequest {
            vpc_ids: vec![vpc.vpc_id.clone()],
            filters: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidVpcID.NotFound");
    let e = b
        .delete_subnet(pb::DeleteSubnetRequest {
            subnet_id: subnet.subnet_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidSubnetID.NotFound");
    let e = b
        .revoke_security_group(pb::RevokeSecurityGroupRequest {
            group_id: web.group_id.clone(),
            direction: pb::Direction::Ingress as i32,
            permissions: vec![perm("tcp", 80, &["10.0.0.0/8"], &[])],
            rule_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidGroup.NotFound");
    b.create_vpc(pb::CreateVpcRequest {
        cidr_block: "10.8.0.0/16".into(),
        tags: vec![],
    })
    .await
    .unwrap();

    // Clean-up in dependency order works.
    a.revoke_security_group(pb::RevokeSecurityGroupRequest {
        group_id: web.group_id.clone(),
        direction: pb::Direction::Ingress as i32,
        permissions: vec![perm("tcp", 80, &["10.0.0.0/8"], &[&lb.group_id])],
        rule_ids: vec![],
    })
    .await
    .unwrap();
    for g in [&web.group_id, &lb.group_id] {
        a.delete_security_group(pb::DeleteSecurityGroupRequest {
            group_id: g.clone(),
        })
        .await
        .unwrap();
    }
    a.delete_subnet(pb::DeleteSubnetRequest {
        subnet_id: subnet.subnet_id,
    })
    .await
    .unwrap();
    a.delete_vpc(pb::DeleteVpcRequest { vpc_id: vpc.vpc_id })
        .await
        .unwrap();
}

/// The Compute API launches into a subnet and groups the caller names, and
/// shows them on the instance; another tenant's subnet or group, or a group
/// of another VPC, is refused with EC2's code and launches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_run_instances_takes_a_subnet_and_groups() {
    use nubis_control_plane::sim::{SimAgent, SimOptions};
    use nubis_proto::compute::v1 as cpb;
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("h1", ZONES[1], 4, 1024))
        .await
        .unwrap();
    let image = hello_image(&ep).await;
    let (ca, cb) = (tenant(&ep, "a").await, tenant(&ep, "b").await);
    let mut a = net(&ep, ca.clone()).await;
    let (mut ra, mut rb) = (compute(&ep, ca).await, compute(&ep, cb).await);

    let vpc = a
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "10.9.0.0/16".into(),
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
            cidr_block: "10.9.1.0/24".into(),
            availability_zone: ZONES[1].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subnet
        .unwrap();
    let group = a
        .create_security_group(pb::CreateSecurityGroupRequest {
            group_name: "web".into(),
            description: "web".into(),
            vpc_id: vpc.vpc_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .security_group
        .unwrap()
        .group_id;
    // A group of the default VPC (another VPC than the subnet's).
    let default_group = a
        .describe_security_groups(pb::DescribeSecurityGroupsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .security_groups
        .into_iter()
        .find(|g| g.vpc_id != vpc.vpc_id)
        .unwrap()
        .group_id;

    let req = |subnet: &str, groups: &[&str]| cpb::RunInstancesRequest {
        subnet_id: subnet.into(),
        security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
        ..run_req(&image, 1)
    };
    let i = ra
        .run_instances(req(&subnet.subnet_id, &[&group]))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap()
        .instances
        .remove(0);
    assert_eq!(i.vpc_id, vpc.vpc_id);
    assert_eq!(i.subnet_id, subnet.subnet_id);
    assert_eq!(i.security_group_ids, vec![group.clone()]);
    assert_eq!(i.availability_zone, ZONES[1], "the subnet's zone");

    // Another tenant can use neither A's subnet nor A's group.
    let e = rb
        .run_instances(req(&subnet.subnet_id, &[]))
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidSubnetID.NotFound", "{e:?}");
    let e = rb.run_instances(req("", &[&group])).await.unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidGroup.NotFound", "{e:?}");
    // A group of another VPC than the subnet's.
    let e = ra
        .run_instances(req(&subnet.subnet_id, &[&default_group]))
        .await
        .unwrap_err();
    assert!(
        ec2_code(&e).starts_with("InvalidParameter") || ec2_code(&e).starts_with("InvalidGroup"),
        "{e:?}"
    );
    // Malformed ids.
    let e = ra.run_instances(req("subnet-zz", &[])).await.unwrap_err();
    assert!(ec2_code(&e).starts_with("Invalid"), "{e:?}");
    // Nothing was launched by the refusals.
    assert_eq!(describe_all(&mut ra).await.len(), 1);
    assert!(describe_all(&mut rb).await.is_empty());
    cp.shutdown().await;
}
