//! The public addressing half of the Networking gRPC service
//! (`nubis.vpc.v1`: Elastic IPs, internet gateways, route tables) over a
//! real etcd: the same domain as the EC2 actions, so the same objects and
//! EC2 error codes; tenants see and change only their own; refusals write
//! nothing. The Compute service's CreateTags/DeleteTags/DescribeTags reach
//! Elastic IPs and gateways.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_gateways_and_route_tables_over_grpc() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/30".into());
    cfg.vpc.elastic_ips_per_account = 1;
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let mut a = net(&ep, tenant(&ep, "a").await).await;
    let mut b = net(&ep, tenant(&ep, "b").await).await;

    // Elastic IPs: the limit (1) and the pool (2 addresses).
    let eip = a
        .allocate_address(pb::AllocateAddressRequest {
            tags: vec![pb::Tag {
                key: "Name".into(),
                value: "web".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .address
        .unwrap();
    assert!(eip.allocation_id.starts_with("eipalloc-"));
    assert!(eip.public_ip.starts_with("198.51.100."), "{eip:?}");
    assert!(eip.association_id.is_empty());
    let e = a
        .allocate_address(pb::AllocateAddressRequest::default())
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "AddressLimitExceeded");
    b.allocate_address(pb::AllocateAddressRequest::default())
        .await
        .unwrap();
    let mut c = net(&ep, tenant(&ep, "c").await).await;
    let e = c
        .allocate_address(pb::AllocateAddressRequest::default())
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InsufficientAddressCapacity");
    let listed = a
        .describe_addresses(pb::DescribeAddressesRequest {
            public_ips: vec![eip.public_ip.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .addresses;
    assert_eq!(listed, vec![eip.clone()]);
    let e = b
        .describe_addresses(pb::DescribeAddressesRequest {
            allocation_ids: vec![eip.allocation_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidAllocationID.NotFound");
    let e = b
        .release_address(pb::ReleaseAddressRequest {
            allocation_id: eip.allocation_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidAllocationID.NotFound");
    let e = a
        .associate_address(pb::AssociateAddressRequest {
            allocation_id: eip.allocation_id.clone(),
            instance_id: "i-0123456789abcdef0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidInstanceID.NotFound");
    let e = a
        .disassociate_address(pb::DisassociateAddressRequest::default())
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "MissingParameter");

    // Internet gateways and route tables: a public subnet.
    let vpc = a
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "10.8.0.0/16".into(),
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
            cidr_block: "10.8.1.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subnet
        .unwrap();
    let igw = a
        .create_internet_gateway(pb::CreateInternetGatewayRequest::default())
        .await
        .unwrap()
        .into_inner()
        .internet_gateway
        .unwrap();
    assert!(igw.vpc_id.is_empty());
    let attach = pb::AttachInternetGatewayRequest {
        internet_gateway_id: igw.internet_gateway_id.clone(),
        vpc_id: vpc.vpc_id.clone(),
    };
    let e = b.attach_internet_gateway(attach.clone()).await.unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidInternetGatewayID.NotFound");
    a.attach_internet_gateway(attach.clone()).await.unwrap();
    let e = a.attach_internet_gateway(attach).await.unwrap_err();
    assert_eq!(ec2_code(&e), "Resource.AlreadyAssociated");
    let table = a
        .create_route_table(pb::CreateRouteTableRequest {
            vpc_id: vpc.vpc_id.clone(),
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .route_table
        .unwrap();
    assert!(!table.main);
    assert_eq!(table.routes.len(), 1, "the local route: {table:?}");
    assert_eq!(table.routes[0].gateway_id, "local");
    let route = pb::CreateRouteRequest {
        route_table_id: table.route_table_id.clone(),
        destination_cidr_block: "0.0.0.0/0".into(),
        gateway_id: igw.internet_gateway_id.clone(),
    };
    a.create_route(route.clone()).await.unwrap();
    let e = a.create_route(route.clone()).await.unwrap_err();
    assert_eq!(ec2_code(&e), "RouteAlreadyExists");
    let e = b.create_route(route).await.unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidRouteTableID.NotFound");
    let assoc = a
        .associate_route_table(pb::AssociateRouteTableRequest {
            route_table_id: table.route_table_id.clone(),
            subnet_id: subnet.subnet_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .association_id;
    let tables = a
        .describe_route_tables(pb::DescribeRouteTablesRequest {
            filters: vec![pb::Filter {
                name: "vpc-id".into(),
                values: vec![vpc.vpc_id.clone()],
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .route_tables;
    assert_eq!(tables.len(), 2, "main and the new one: {tables:?}");
    let t = tables
        .iter()
        .find(|t| t.route_table_id == table.route_table_id)
        .unwrap();
    assert_eq!(t.routes[1].state, "active");
    assert_eq!(t.associations[0].association_id, assoc);
    assert_eq!(t.associations[0].subnet_id, subnet.subnet_id);
    assert!(tables.iter().any(|t| t.main));
    let e = a
        .delete_route_table(pb::DeleteRouteTableRequest {
            route_table_id: table.route_table_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "DependencyViolation");
    let e = a
        .delete_vpc(pb::DeleteVpcRequest {
            vpc_id: vpc.vpc_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "DependencyViolation");
    let gws = b
        .describe_internet_gateways(pb::DescribeInternetGatewaysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .internet_gateways;
    assert!(gws
        .iter()
        .all(|g| g.internet_gateway_id != igw.internet_gateway_id));

    // Clean-up in dependency order.
    a.disassociate_route_table(pb::DisassociateRouteTableRequest {
        association_id: assoc,
    })
    .await
    .unwrap();
    a.delete_route(pb::DeleteRouteRequest {
        route_table_id: table.route_table_id.clone(),
        destination_cidr_block: "0.0.0.0/0".into(),
    })
    .await
    .unwrap();
    a.delete_route_table(pb::DeleteRouteTableRequest {
        route_table_id: table.route_table_id,
    })
    .await
    .unwrap();
    a.detach_internet_gateway(pb::DetachInternetGatewayRequest {
        internet_gateway_id: igw.internet_gateway_id.clone(),
        vpc_id: vpc.vpc_id.clone(),
    })
    .await
    .unwrap();
    a.delete_internet_gateway(pb::DeleteInternetGatewayRequest {
        internet_gateway_id: igw.internet_gateway_id,
    })
    .await
    .unwrap();
    a.delete_subnet(pb::DeleteSubnetRequest {
        subnet_id: subnet.subnet_id,
    })
    .await
    .unwrap();
    a.delete_vpc(pb::DeleteVpcRequest { vpc_id: vpc.vpc_id })
        .await
        .unwrap();
    a.release_address(pb::ReleaseAddressRequest {
        public_ip: eip.public_ip,
        ..Default::default()
    })
    .await
    .unwrap();
    // The address is back in the pool.
    c.allocate_address(pb::AllocateAddressRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_tags_reach_elastic_ips_and_gateways() {
    use nubis_proto::compute::v1 as cpb;
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.vpc.public_pool = Some("198.51.100.0/30".into());
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let (ca, cb) = (tenant(&ep, "a").await, tenant(&ep, "b").await);
    let mut a = net(&ep, ca.clone()).await;
    let mut ta = compute(&ep, ca).await;
    let mut tb = compute(&ep, cb).await;
    let eip = a
        .allocate_address(pb::AllocateAddressRequest::default())
        .await
        .unwrap()
        .into_inner()
        .address
        .unwrap();
    let igw = a
        .create_internet_gateway(pb::CreateInternetGatewayRequest { tags: vec![] })
        .await
        .unwrap()
        .into_inner()
        .internet_gateway
        .unwrap();
    let ids = vec![eip.allocation_id.clone(), igw.internet_gateway_id.clone()];
    let tag = vec![cpb::Tag {
        key: "env".into(),
        value: "prod".into(),
    }];
    // Another tenant's ids are not found, and nothing is written.
    for (id, code) in [
        (&eip.allocation_id, "InvalidAllocationID.NotFound"),
        (
            &igw.internet_gateway_id,
            "InvalidInternetGatewayID.NotFound",
        ),
    ] {
        let e = tb
            .create_tags(cpb::CreateTagsRequest {
                resource_ids: vec![id.clone()],
                tags: tag.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(ec2_code(&e), code);
    }
    let described = |t: cpb::DescribeTagsResponse| {
        let mut v: Vec<(String, String)> = t
            .tags
            .into_iter()
            .map(|t| (t.resource_type, t.resource_id))
            .collect();
        v.sort();
        v
    };
    let all = ta
        .describe_tags(cpb::DescribeTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(described(all).is_empty());
    ta.create_tags(cpb::CreateTagsRequest {
        resource_ids: ids.clone(),
        tags: tag.clone(),
    })
    .await
    .unwrap();
    let listed = a
        .describe_addresses(pb::DescribeAddressesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .addresses;
    assert_eq!(
        listed[0].tags,
        vec![pb::Tag {
            key: "env".into(),
            value: "prod".into()
        }]
    );
    let mine = ta
        .describe_tags(cpb::DescribeTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described(mine),
        vec![
            ("elastic-ip".to_string(), eip.allocation_id.clone()),
            (
                "internet-gateway".to_string(),
                igw.internet_gateway_id.clone()
            ),
        ]
    );
    let theirs = tb
        .describe_tags(cpb::DescribeTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(described(theirs).is_empty());
    ta.delete_tags(cpb::DeleteTagsRequest {
        resource_ids: ids,
        tags: vec![],
    })
    .await
    .unwrap();
    let left = ta
        .describe_tags(cpb::DescribeTagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(described(left).is_empty());
}
