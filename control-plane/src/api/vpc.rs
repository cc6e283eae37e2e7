//! The Networking service: thin handlers over [`crate::domain::vpc`] (the
//! same functions the EC2 Query actions call). The public addressing
//! methods' bodies are in [`super::vpc_public`], the network interface
//! ones in [`super::vpc_enis`].

use std::collections::BTreeMap;
use std::sync::Arc;

use nubis_proto::vpc::v1 as pb;
use nubis_proto::vpc::v1::networking_server::Networking;
use tonic::{Request, Response, Status};

use super::Edge;
use crate::domain::filters::Filter;
use crate::domain::vpc::groups::GroupRef;
use crate::domain::vpc::rules::{Direction, PeerInput, PermissionInput};
use crate::domain::vpc::subnets::{CreateSubnetInput, SubnetView};
use crate::domain::vpc::{RuleSource, SecurityGroup, SgRule, Vpc};
use crate::domain::Domain;
use crate::error::Error;

/// gRPC implementation of `nubis.vpc.v1.Networking`.
#[derive(Debug, Clone)]
pub struct NetworkingApi {
    pub(super) edge: Edge,
}

impl NetworkingApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.vpc.v1.Networking"),
        }
    }

    pub(super) fn domain(&self) -> &Domain {
        self.edge.domain()
    }
}

pub(super) fn filters_in(f: Vec<pb::Filter>) -> Vec<Filter> {
    f.into_iter()
        .map(|f| Filter {
            name: f.name,
            values: f.values,
        })
        .collect()
}

pub(super) fn tags_in(t: Vec<pb::Tag>) -> Vec<(String, String)> {
    t.into_iter().map(|t| (t.key, t.value)).collect()
}

pub(super) fn tags_out(t: &BTreeMap<String, String>) -> Vec<pb::Tag> {
    t.iter()
        .map(|(k, v)| pb::Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn vpc_out(v: &Vpc) -> pb::Vpc {
    pb::Vpc {
        vpc_id: v.id.to_string(),
        cidr_block: v.cidr.clone(),
        is_default: v.is_default,
        default_security_group_id: v.default_security_group_id.to_string(),
        tags: tags_out(&v.tags),
        created_unix_ms: v.created_ms,
    }
}

fn subnet_out(v: &SubnetView) -> pb::Subnet {
    let s = &v.subnet;
    pb::Subnet {
        subnet_id: s.id.to_string(),
        vpc_id: s.vpc_id.to_string(),
        cidr_block: s.cidr.clone(),
        availability_zone: s.availability_zone.clone(),
        availability_zone_id: v.zone_id.clone(),
        default_for_az: s.default_for_az,
        map_public_ip_on_launch: s.map_public_ip_on_launch,
        available_ip_address_count: v.available_ips,
        tags: tags_out(&s.tags),
    }
}

fn rule_out(r: &SgRule) -> pb::Rule {
    pb::Rule {
        rule_id: r.id.to_string(),
        protocol: r.protocol.clone(),
        from_port: r.from_port,
        to_port: r.to_port,
        peer: Some(match &r.peer {
            RuleSource::Cidr(c) => pb::rule::Peer::Cidr(c.clone()),
            RuleSource::Group(g) => pb::rule::Peer::GroupId(g.to_string()),
        }),
        description: r.description.clone(),
    }
}

fn group_out(g: &SecurityGroup) -> pb::SecurityGroup {
    pb::SecurityGroup {
        group_id: g.id.to_string(),
        group_name: g.name.clone(),
        description: g.description.clone(),
        vpc_id: g.vpc_id.to_string(),
        ingress: g.ingress.iter().map(rule_out).collect(),
        egress: g.egress.iter().map(rule_out).collect(),
        tags: tags_out(&g.tags),
    }
}

fn direction_in(d: i32) -> Result<Direction, Error> {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Ingress) => Ok(Direction::Ingress),
        Ok(pb::Direction::Egress) => Ok(Direction::Egress),
        _ => Err(Error::invalid("direction must be INGRESS or EGRESS")),
    }
}

fn peers_in(p: Vec<pb::Peer>) -> Vec<PeerInput> {
    p.into_iter()
        .map(|p| PeerInput {
            value: p.value,
            description: p.description,
        })
        .collect()
}

fn permissions_in(p: Vec<pb::Permission>) -> Vec<PermissionInput> {
    p.into_iter()
        .map(|p| PermissionInput {
            protocol: p.protocol,
            from_port: p.from_port,
            to_port: p.to_port,
            cidrs: peers_in(p.cidrs),
            groups: peers_in(p.group_ids),
        })
        .collect()
}

pub(super) fn non_empty(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl Networking for NetworkingApi {
    async fn create_vpc(
        &self,
        req: Request<pb::CreateVpcRequest>,
    ) -> Result<Response<pb::CreateVpcResponse>, Status> {
        self.edge
            .call(req, "CreateVpc", |caller, r| async move {
                let v = self
                    .domain()
                    .create_vpc(&caller, &r.cidr_block, &tags_in(r.tags))
                    .await?;
                Ok(pb::CreateVpcResponse {
                    vpc: Some(vpc_out(&v)),
                })
            })
            .await
    }

    async fn describe_vpcs(
        &self,
        req: Request<pb::DescribeVpcsRequest>,
    ) -> Result<Response<pb::DescribeVpcsResponse>, Status> {
        self.edge
            .call(req, "DescribeVpcs", |caller, r| async move {
                let v = self
                    .domain()
                    .describe_vpcs(&caller, &r.vpc_ids, &filters_in(r.filters))
                    .await?;
                Ok(pb::DescribeVpcsResponse {
                    vpcs: v.iter().map(vpc_out).collect(),
                })
            })
            .await
    }

    async fn delete_vpc(
        &self,
        req: Request<pb::DeleteVpcRequest>,
    ) -> Result<Response<pb::DeleteVpcResponse>, Status> {
        self.edge
            .call(req, "DeleteVpc", |caller, r| async move {
                self.domain().delete_vpc(&caller, &r.vpc_id).await?;
                Ok(pb::DeleteVpcResponse {})
            })
            .await
    }

    async fn create_subnet(
        &self,
        req: Request<pb::CreateSubnetRequest>,
    ) -> Result<Response<pb::CreateSubnetResponse>, Status> {
        self.edge
            .call(req, "CreateSubnet", |caller, r| async move {
                let d = self.domain();
                let s = d
                    .create_subnet(
                        &caller,
                        CreateSubnetInput {
                            vpc_id: r.vpc_id,
                            cidr: r.cidr_block,
                            availability_zone: non_empty(r.availability_zone),
                            availability_zone_id: non_empty(r.availability_zone_id),
                            tags: tags_in(r.tags),
                        },
                    )
                    .await?;
                // Answer as DescribeSubnets shows it (zone id, free addresses).
                let view = d
                    .describe_subnets(&caller, &[s.id.to_string()], &[])
                    .await?;
                Ok(pb::CreateSubnetResponse {
                    subnet: view.first().map(subnet_out),
                })
            })
            .await
    }

    async fn describe_subnets(
        &self,
        req: Request<pb::DescribeSubnetsRequest>,
    ) -> Result<Response<pb::DescribeSubnetsResponse>, Status> {
        self.edge
            .call(req, "DescribeSubnets", |caller, r| async move {
                let v = self
                    .domain()
                    .describe_subnets(&caller, &r.subnet_ids, &filters_in(r.filters))
                    .await?;
                Ok(pb::DescribeSubnetsResponse {
                    subnets: v.iter().map(subnet_out).collect(),
                })
            })
            .await
    }

    async fn delete_subnet(
        &self,
        req: Request<pb::DeleteSubnetRequest>,
    ) -> Result<Response<pb::DeleteSubnetResponse>, Status> {
        self.edge
            .call(req, "DeleteSubnet", |caller, r| async move {
                self.domain().delete_subnet(&caller, &r.subnet_id).await?;
                Ok(pb::DeleteSubnetResponse {})
            })
            .await
    }

    async fn modify_subnet_attribute(
        &self,
        req: Request<pb::ModifySubnetAttributeRequest>,
    ) -> Result<Response<pb::ModifySubnetAttributeResponse>, Status> {
        self.edge
            .call(req, "ModifySubnetAttribute", |caller, r| async move {
                self.domain()
                    .set_map_public_ip(&caller, &r.subnet_id, r.map_public_ip_on_launch)
                    .await?;
                Ok(pb::ModifySubnetAttributeResponse {})
            })
            .await
    }

    async fn create_security_group(
        &self,
        req: Request<pb::CreateSecurityGroupRequest>,
    ) -> Result<Response<pb::CreateSecurityGroupResponse>, Status> {
        self.edge
            .call(req, "CreateSecurityGroup", |caller, r| async move {
                let vpc = non_empty(r.vpc_id);
                let g = self
                    .domain()
                    .create_security_group(
                        &caller,
                        &r.group_name,
                        &r.description,
                        vpc.as_deref(),
                        &tags_in(r.tags),
                    )
                    .await?;
                Ok(pb::CreateSecurityGroupResponse {
                    security_group: Some(group_out(&g)),
                })
            })
            .await
    }

    async fn describe_security_groups(
        &self,
        req: Request<pb::DescribeSecurityGroupsRequest>,
    ) -> Result<Response<pb::DescribeSecurityGroupsResponse>, Status> {
        self.edge
            .call(req, "DescribeSecurityGroups", |caller, r| async move {
                let g = self
                    .domain()
                    .describe_security_groups(
                        &caller,
                        &r.group_ids,
                        &r.group_names,
                        &filters_in(r.filters),
                    )
                    .await?;
                Ok(pb::DescribeSecurityGroupsResponse {
                    security_groups: g.iter().map(group_out).collect(),
                })
            })
            .await
    }

    async fn delete_security_group(
        &self,
        req: Request<pb::DeleteSecurityGroupRequest>,
    ) -> Result<Response<pb::DeleteSecurityGroupResponse>, Status> {
        self.edge
            .call(req, "DeleteSecurityGroup", |caller, r| async move {
                self.domain()
                    .delete_security_group(&caller, &GroupRef::Id(r.group_id))
                    .await?;
                Ok(pb::DeleteSecurityGroupResponse {})
            })
            .await
    }

    async fn authorize_security_group(
        &self,
        req: Request<pb::AuthorizeSecurityGroupRequest>,
    ) -> Result<Response<pb::AuthorizeSecurityGroupResponse>, Status> {
        self.edge
            .call(req, "AuthorizeSecurityGroup", |caller, r| async move {
                let direction = direction_in(r.direction)?;
                let (_, rules) = self
                    .domain()
                    .authorize_security_group(
                        &caller,
                        &GroupRef::Id(r.group_id),
                        direction,
                        &permissions_in(r.permissions),
                    )
                    .await?;
                Ok(pb::AuthorizeSecurityGroupResponse {
                    rules: rules.iter().map(rule_out).collect(),
                })
            })
            .await
    }

    async fn revoke_security_group(
        &self,
        req: Request<pb::RevokeSecurityGroupRequest>,
    ) -> Result<Response<pb::RevokeSecurityGroupResponse>, Status> {
        self.edge
            .call(req, "RevokeSecurityGroup", |caller, r| async move {
                let direction = direction_in(r.direction)?;
                self.domain()
                    .revoke_security_group(
                        &caller,
                        &GroupRef::Id(r.group_id),
                        direction,
                        &permissions_in(r.permissions),
                        &r.rule_ids,
                    )
                    .await?;
                Ok(pb::RevokeSecurityGroupResponse {})
            })
            .await
    }

    async fn allocate_address(
        &self,
        req: Request<pb::AllocateAddressRequest>,
    ) -> Result<Response<pb::AllocateAddressResponse>, Status> {
        self.allocate_address_(req).await
    }

    async fn associate_address(
        &self,
        req: Request<pb::AssociateAddressRequest>,
    ) -> Result<Response<pb::AssociateAddressResponse>, Status> {
        self.associate_address_(req).await
    }

    async fn disassociate_address(
        &self,
        req: Request<pb::DisassociateAddressRequest>,
    ) -> Result<Response<pb::DisassociateAddressResponse>, Status> {
        self.disassociate_address_(req).await
    }

    async fn release_address(
        &self,
        req: Request<pb::ReleaseAddressRequest>,
    ) -> Result<Response<pb::ReleaseAddressResponse>, Status> {
        self.release_address_(req).await
    }

    async fn describe_addresses(
        &self,
        req: Request<pb::DescribeAddressesRequest>,
    ) -> Result<Response<pb::DescribeAddressesResponse>, Status> {
        self.describe_addresses_(req).await
    }

    async fn create_internet_gateway(
        &self,
        req: Request<pb::CreateInternetGatewayRequest>,
    ) -> Result<Response<pb::CreateInternetGatewayResponse>, Status> {
        self.create_internet_gateway_(req).await
    }

    async fn attach_internet_gateway(
        &self,
        req: Request<pb::AttachInternetGatewayRequest>,
    ) -> Result<Response<pb::AttachInternetGatewayResponse>, Status> {
        self.attach_internet_gateway_(req).await
    }

    async fn detach_internet_gateway(
        &self,
        req: Request<pb::DetachInternetGatewayRequest>,
    ) -> Result<Response<pb::DetachInternetGatewayResponse>, Status> {
        self.detach_internet_gateway_(req).await
    }

    async fn delete_internet_gateway(
        &self,
        req: Request<pb::DeleteInternetGatewayRequest>,
    ) -> Result<Response<pb::DeleteInternetGatewayResponse>, Status> {
        self.delete_internet_gateway_(req).await
    }

    async fn describe_internet_gateways(
        &self,
        req: Request<pb::DescribeInternetGatewaysRequest>,
    ) -> Result<Response<pb::DescribeInternetGatewaysResponse>, Status> {
        self.describe_internet_gateways_(req).await
    }

    async fn create_route_table(
        &self,
        req: Request<pb::CreateRouteTableRequest>,
    ) -> Result<Response<pb::CreateRouteTableResponse>, Status> {
        self.create_route_table_(req).await
    }

    async fn create_route(
        &self,
        req: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::CreateRouteResponse>, Status> {
        self.create_route_(req).await
    }

    async fn delete_route(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        self.delete_route_(req).await
    }

    async fn associate_route_table(
        &self,
        req: Request<pb::AssociateRouteTableRequest>,
    ) -> Result<Response<pb::AssociateRouteTableResponse>, Status> {
        self.associate_route_table_(req).await
    }

    async fn disassociate_route_table(
        &self,
        req: Request<pb::DisassociateRouteTableRequest>,
    ) -> Result<Response<pb::DisassociateRouteTableResponse>, Status> {
        self.disassociate_route_table_(req).await
    }

    async fn delete_route_table(
        &self,
        req: Request<pb::DeleteRouteTableRequest>,
    ) -> Result<Response<pb::DeleteRouteTableResponse>, Status> {
        self.delete_route_table_(req).await
    }

    async fn describe_route_tables(
        &self,
        req: Request<pb::DescribeRouteTablesRequest>,
    ) -> Result<Response<pb::DescribeRouteTablesResponse>, Status> {
        self.describe_route_tables_(req).await
    }

    async fn create_network_interface(
        &self,
        req: Request<pb::CreateNetworkInterfaceRequest>,
    ) -> Result<Response<pb::CreateNetworkInterfaceResponse>, Status> {
        self.create_network_interface_(req).await
    }

    async fn describe_network_interfaces(
        &self,
        req: Request<pb::DescribeNetworkInterfacesRequest>,
    ) -> Result<Response<pb::DescribeNetworkInterfacesResponse>, Status> {
        self.describe_network_interfaces_(req).await
    }

    async fn delete_network_interface(
        &self,
        req: Request<pb::DeleteNetworkInterfaceRequest>,
    ) -> Result<Response<pb::DeleteNetworkInterfaceResponse>, Status> {
        self.delete_network_interface_(req).await
    }

    async fn attach_network_interface(
        &self,
        req: Request<pb::AttachNetworkInterfaceRequest>,
    ) -> Result<Response<pb::AttachNetworkInterfaceResponse>, Status> {
        self.attach_network_interface_(req).await
    }

    async fn detach_network_interface(
        &self,
        req: Request<pb::DetachNetworkInterfaceRequest>,
    ) -> Result<Response<pb::DetachNetworkInterfaceResponse>, Status> {
        self.detach_network_interface_(req).await
    }

    async fn modify_network_interface_attribute(
        &self,
        req: Request<pb::ModifyNetworkInterfaceAttributeRequest>,
    ) -> Result<Response<pb::ModifyNetworkInterfaceAttributeResponse>, Status> {
        self.modify_network_interface_attribute_(req).await
    }
}
