//! Internet gateways and route tables through the EC2 gateway's parser and
//! backend against a real etcd: the default VPC's gateway and main table,
//! a public and a private subnet, every refusal's EC2 code with nothing
//! written, DeleteVpc's dependencies, the data plane hook
//! (`subnet_internet_routes`) and tenant isolation.

#![allow(clippy::unwrap_used)]

mod support;
mod vpc_common;

use nubis_control_plane::ids::{AccountId, SubnetId, VpcId};
use support::*;
use vpc_common::{text, texts, Ec2};

fn account(e: &Ec2) -> AccountId {
    AccountId::parse(&e.account).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_vpc_has_an_attached_gateway_and_a_routed_main_table() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let a = Ec2::new(&cp.domain, "a").await;
    let g = a.ok("DescribeInternetGateways", &[]).await;
    let igw = text(&g, "internetGatewayId");
    let vpc = text(&a.ok("DescribeVpcs", &[]).await, "vpcId");
    assert_eq!(texts(&g, "internetGatewayId").len(), 1, "{g}");
    assert!(
        g.contains(&format!(
            "<attachmentSet><item><vpcId>{vpc}</vpcId><state>available</state>"
        )),
        "{g}"
    );
    let t = a.ok("DescribeRouteTables", &[]).await;
    assert_eq!(texts(&t, "routeTableId").len(), 2, "one table, twice: {t}");
    assert_eq!(
        texts(&t, "destinationCidrBlock"),
        ["172.31.0.0/16", "0.0.0.0/0"]
    );
    assert_eq!(texts(&t, "gatewayId"), ["local", igw.as_str()]);
    assert_eq!(texts(&t, "state"), ["active", "active", "associated"]);
    assert_eq!(text(&t, "main"), "true");
    // Every default subnet reaches the internet.
    let routes = cp
        .domain
        .subnet_internet_routes(&account(&a), &VpcId::parse(&vpc).unwrap())
        .await
        .unwrap();
    assert_eq!(routes.len(), 3);
    assert!(routes.values().all(|r| *r), "{routes:?}");

    // Deleting the default VPC: subnets, then the gateway (detach, delete).
    for s in texts(&a.ok("DescribeSubnets", &[]).await, "subnetId") {
        a.ok("DeleteSubnet", &[("SubnetId", &s)]).await;
    }
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    a.fails(
        "DeleteInternetGateway",
        &[("InternetGatewayId", &igw)],
        "DependencyViolation",
    )
    .await;
    a.ok(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    let t = a.ok("DescribeRouteTables", &[]).await;
    assert_eq!(texts(&t, "state"), ["active", "blackhole", "associated"]);
    a.ok("DeleteInternetGateway", &[("InternetGatewayId", &igw)])
        .await;
    a.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
    let t = a.ok("DescribeRouteTables", &[]).await;
    assert!(
        texts(&t, "routeTableId").is_empty(),
        "the main table went with the VPC: {t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_private_subnets_with_every_refusal_writing_nothing() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let a = Ec2::new(&d, "a").await;
    let b = Ec2::new(&d, "b").await;
    let vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let other_vpc = text(
        &a.ok("CreateVpc", &[("CidrBlock", "10.1.0.0/16")]).await,
        "vpcId",
    );
    let subnet = |cidr: &'static str, v: String| {
        let a = &a;
        async move {
            text(
                &a.ok("CreateSubnet", &[("VpcId", &v), ("CidrBlock", cidr)])
                    .await,
                "subnetId",
            )
        }
    };
    let public = subnet("10.0.0.0/24", vpc.clone()).await;
    let private = subnet("10.0.1.0/24", vpc.clone()).await;
    let elsewhere = subnet("10.1.0.0/24", other_vpc.clone()).await;

    // The new VPC's main table: the local route only.
    let main = a
        .ok(
            "DescribeRouteTables",
            &[
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &vpc),
                ("Filter.2.Name", "association.main"),
                ("Filter.2.Value.1", "true"),
            ],
        )
        .await;
    let main_id = text(&main, "routeTableId");
    assert_eq!(texts(&main, "destinationCidrBlock"), ["10.0.0.0/16"]);
    assert_eq!(texts(&main, "gatewayId"), ["local"]);

    let c = a
        .ok(
            "CreateInternetGateway",
            &[
                ("TagSpecification.1.ResourceType", "internet-gateway"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "gw"),
            ],
        )
        .await;
    let igw = text(&c, "internetGatewayId");
    assert!(c.contains("<attachmentSet/>"), "{c}");
    let igw2 = text(
        &a.ok("CreateInternetGateway", &[]).await,
        "internetGatewayId",
    );
    let table = text(
        &a.ok("CreateRouteTable", &[("VpcId", &vpc)]).await,
        "routeTableId",
    );
    // Routing to a gateway not attached to the VPC.
    a.fails(
        "CreateRoute",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "0.0.0.0/0"),
            ("GatewayId", &igw),
        ],
        "InvalidParameterValue",
    )
    .await;
    a.ok(
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    for (params, code) in [
        (
            vec![("InternetGatewayId", igw.as_str()), ("VpcId", vpc.as_str())],
            "Resource.AlreadyAssociated",
        ),
        (
            vec![
                ("InternetGatewayId", igw.as_str()),
                ("VpcId", other_vpc.as_str()),
            ],
            "Resource.AlreadyAssociated",
        ),
        (
            vec![
                ("InternetGatewayId", igw2.as_str()),
                ("VpcId", vpc.as_str()),
            ],
            "Resource.AlreadyAssociated",
        ),
        (
            vec![
                ("InternetGatewayId", "igw-0123456789abcdef0"),
                ("VpcId", vpc.as_str()),
            ],
            "InvalidInternetGatewayID.NotFound",
        ),
        (
            vec![("InternetGatewayId", "igw-x"), ("VpcId", vpc.as_str())],
            "InvalidInternetGatewayID.Malformed",
        ),
        (
            vec![
                ("InternetGatewayId", igw2.as_str()),
                ("VpcId", "vpc-0123456789abcdef0"),
            ],
            "InvalidVpcID.NotFound",
        ),
    ] {
        a.fails("AttachInternetGateway", &params, code).await;
    }
    a.fails(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw2), ("VpcId", &vpc)],
        "Gateway.NotAttached",
    )
    .await;
    a.fails(
        "DeleteInternetGateway",
        &[("InternetGatewayId", &igw)],
        "DependencyViolation",
    )
    .await;
    let attached = a
        .ok(
            "DescribeInternetGateways",
            &[
                ("Filter.1.Name", "attachment.vpc-id"),
                ("Filter.1.Value.1", &vpc),
            ],
        )
        .await;
    assert_eq!(
        texts(&attached, "internetGatewayId"),
        std::slice::from_ref(&igw)
    );
    let tagged = a
        .ok(
            "DescribeInternetGateways",
            &[("Filter.1.Name", "tag:Name"), ("Filter.1.Value.1", "gw")],
        )
        .await;
    assert_eq!(
        texts(&tagged, "internetGatewayId"),
        std::slice::from_ref(&igw)
    );

    // Routes.
    let route = |dest: &'static str, gw: String| {
        vec![
            ("RouteTableId", table.clone()),
            ("DestinationCidrBlock", dest.to_string()),
            ("GatewayId", gw),
        ]
    };
    let p = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    a.ok("CreateRoute", &as_refs(&route("0.0.0.0/0", igw.clone())))
        .await;
    for (params, code) in [
        (route("0.0.0.0/0", igw.clone()), "RouteAlreadyExists"),
        (route("10.0.5.0/24", igw.clone()), "InvalidParameterValue"),
        (route("10.0.0.0/16", igw.clone()), "InvalidParameterValue"),
        (route("0.0.0.1/0", igw.clone()), "InvalidParameterValue"),
        (route("192.0.2.0/24", igw2.clone()), "InvalidParameterValue"),
        (
            route("192.0.2.0/24", "igw-0123456789abcdef0".into()),
            "InvalidInternetGatewayID.NotFound",
        ),
        (
            p(&[
                ("RouteTableId", "rtb-0123456789abcdef0".into()),
                ("DestinationCidrBlock", "0.0.0.0/0".into()),
                ("GatewayId", igw.clone()),
            ]),
            "InvalidRouteTableID.NotFound",
        ),
        (
            p(&[
                ("RouteTableId", table.clone()),
                ("DestinationCidrBlock", "0.0.0.0/0".into()),
                ("NatGatewayId", "nat-0123456789abcdef0".into()),
            ]),
            "Unsupported",
        ),
    ] {
        a.fails("CreateRoute", &as_refs(&params), code).await;
    }
    let t = a
        .ok("DescribeRouteTables", &[("RouteTableId.1", &table)])
        .await;
    assert_eq!(
        texts(&t, "destinationCidrBlock"),
        ["10.0.0.0/16", "0.0.0.0/0"],
        "refused routes wrote nothing: {t}"
    );
    assert_eq!(texts(&t, "origin"), ["CreateRouteTable", "CreateRoute"]);

    // Associations: the public subnet uses the new table, the private one
    // the main table (no internet route).
    let assoc = text(
        &a.ok(
            "AssociateRouteTable",
            &[("RouteTableId", &table), ("SubnetId", &public)],
        )
        .await,
        "associationId",
    );
    assert!(assoc.starts_with("rtbassoc-"), "{assoc}");
    for (params, code) in [
        (
            vec![
                ("RouteTableId", main_id.as_str()),
                ("SubnetId", public.as_str()),
            ],
            "Resource.AlreadyAssociated",
        ),
        (
            vec![
                ("RouteTableId", table.as_str()),
                ("SubnetId", elsewhere.as_str()),
            ],
            "InvalidParameterValue",
        ),
        (
            vec![
                ("RouteTableId", table.as_str()),
                ("SubnetId", "subnet-0123456789abcdef0"),
            ],
            "InvalidSubnetID.NotFound",
        ),
    ] {
        a.fails("AssociateRouteTable", &params, code).await;
    }
    let routes = d
        .subnet_internet_routes(&account(&a), &VpcId::parse(&vpc).unwrap())
        .await
        .unwrap();
    assert_eq!(routes.get(&SubnetId::parse(&public).unwrap()), Some(&true));
    assert_eq!(
        routes.get(&SubnetId::parse(&private).unwrap()),
        Some(&false)
    );
    assert_eq!(routes.len(), 2, "only this VPC's subnets: {routes:?}");
    let by_subnet = a
        .ok(
            "DescribeRouteTables",
            &[
                ("Filter.1.Name", "association.subnet-id"),
                ("Filter.1.Value.1", &public),
            ],
        )
        .await;
    assert_eq!(texts(&by_subnet, "routeTableId")[0], table);

    // Dependencies.
    a.fails(
        "DeleteRouteTable",
        &[("RouteTableId", &table)],
        "DependencyViolation",
    )
    .await;
    a.fails(
        "DeleteRouteTable",
        &[("RouteTableId", &main_id)],
        "DependencyViolation",
    )
    .await;
    let main_assoc = texts(&main, "routeTableAssociationId").remove(0);
    a.fails(
        "DisassociateRouteTable",
        &[("AssociationId", &main_assoc)],
        "InvalidParameterValue",
    )
    .await;
    a.fails(
        "DisassociateRouteTable",
        &[("AssociationId", "rtbassoc-0123456789abcdef0")],
        "InvalidAssociationID.NotFound",
    )
    .await;
    for s in [&public, &private] {
        a.ok("DeleteSubnet", &[("SubnetId", s)]).await;
    }
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;

    // Tenant B: sees none of it, cannot attach, route to or use A's.
    let bv = text(
        &b.ok("CreateVpc", &[("CidrBlock", "10.0.0.0/16")]).await,
        "vpcId",
    );
    let bt = text(
        &b.ok("CreateRouteTable", &[("VpcId", &bv)]).await,
        "routeTableId",
    );
    let b_igws = b.ok("DescribeInternetGateways", &[]).await;
    assert!(
        !b_igws.contains(&igw) && !b_igws.contains(&igw2),
        "{b_igws}"
    );
    assert!(!b.ok("DescribeRouteTables", &[]).await.contains(&table));
    b.fails(
        "DescribeInternetGateways",
        &[("InternetGatewayId.1", &igw)],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    b.fails(
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw2), ("VpcId", &bv)],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    b.fails(
        "CreateRoute",
        &[
            ("RouteTableId", &bt),
            ("DestinationCidrBlock", "0.0.0.0/0"),
            ("GatewayId", &igw),
        ],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    b.fails(
        "CreateRoute",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "192.0.2.0/24"),
            ("GatewayId", &igw),
        ],
        "InvalidRouteTableID.NotFound",
    )
    .await;
    b.fails(
        "DeleteRouteTable",
        &[("RouteTableId", &table)],
        "InvalidRouteTableID.NotFound",
    )
    .await;
    b.fails(
        "DeleteInternetGateway",
        &[("InternetGatewayId", &igw2)],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    b.fails(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    let t = a
        .ok("DescribeRouteTables", &[("RouteTableId.1", &table)])
        .await;
    assert_eq!(texts(&t, "destinationCidrBlock").len(), 2, "{t}");

    // Clean-up in dependency order: the subnet's association went with
    // it; routes, the table, the gateway, the VPC.
    a.ok(
        "DeleteRoute",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "0.0.0.0/0"),
        ],
    )
    .await;
    a.fails(
        "DeleteRoute",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "0.0.0.0/0"),
        ],
        "InvalidRoute.NotFound",
    )
    .await;
    a.fails(
        "DeleteRoute",
        &[
            ("RouteTableId", &table),
            ("DestinationCidrBlock", "10.0.0.0/16"),
        ],
        "InvalidParameterValue",
    )
    .await;
    a.ok("DeleteRouteTable", &[("RouteTableId", &table)]).await;
    a.fails("DeleteVpc", &[("VpcId", &vpc)], "DependencyViolation")
        .await;
    a.ok(
        "DetachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &vpc)],
    )
    .await;
    a.ok("DeleteVpc", &[("VpcId", &vpc)]).await;
    a.ok("DeleteInternetGateway", &[("InternetGatewayId", &igw)])
        .await;
    a.fails(
        "DeleteInternetGateway",
        &[("InternetGatewayId", &igw)],
        "InvalidInternetGatewayID.NotFound",
    )
    .await;
    let left = a
        .ok(
            "DescribeRouteTables",
            &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)],
        )
        .await;
    assert!(texts(&left, "routeTableId").is_empty(), "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disassociated_subnet_falls_back_to_the_main_table() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let a = Ec2::new(&d, "a").await;
    // The default VPC's main table routes to its gateway; a private table
    // associated with one default subnet takes its route away.
    let vpc = text(&a.ok("DescribeVpcs", &[]).await, "vpcId");
    let subnet = texts(&a.ok("DescribeSubnets", &[]).await, "subnetId").remove(0);
    let private = text(
        &a.ok("CreateRouteTable", &[("VpcId", &vpc)]).await,
        "routeTableId",
    );
    let assoc = text(
        &a.ok(
            "AssociateRouteTable",
            &[("RouteTableId", &private), ("SubnetId", &subnet)],
        )
        .await,
        "associationId",
    );
    let (acc, vid, sid) = (
        account(&a),
        VpcId::parse(&vpc).unwrap(),
        SubnetId::parse(&subnet).unwrap(),
    );
    let routes = d.subnet_internet_routes(&acc, &vid).await.unwrap();
    assert_eq!(routes.get(&sid), Some(&false));
    assert_eq!(routes.values().filter(|r| **r).count(), 2);
    a.ok("DisassociateRouteTable", &[("AssociationId", &assoc)])
        .await;
    let routes = d.subnet_internet_routes(&acc, &vid).await.unwrap();
    assert_eq!(routes.get(&sid), Some(&true));
    a.fails(
        "DisassociateRouteTable",
        &[("AssociationId", &assoc)],
        "InvalidAssociationID.NotFound",
    )
    .await;
    a.ok("DeleteRouteTable", &[("RouteTableId", &private)])
        .await;
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
