//! Public addressing actions (EC2 2016-11-15): Elastic IPs
//! (AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
//! DescribeAddresses), internet gateways (Create/Attach/Detach/Delete/
//! DescribeInternetGateways) and route tables (CreateRouteTable,
//! CreateRoute, DeleteRoute, AssociateRouteTable, DisassociateRouteTable,
//! DeleteRouteTable, DescribeRouteTables): form parsing (called by
//! [`super::vpcs::parse`]) and XML over [`crate::domain::vpc`].

use super::super::error::{Ec2Error, ErrorCode};
use super::super::query::{Filter, Reader};
use super::super::xml::XmlWriter;
use super::vpcs::tag_set;
use super::{domain_filters, return_true, tag_pairs};
use crate::domain::vpc::addresses::{AddressRef, AssociateInput, ElasticIp};
use crate::domain::vpc::gateways::InternetGateway;
use crate::domain::vpc::routes::RouteTableView;
use crate::domain::{Caller, Domain};
use crate::ec2::requests::MAX_IDS;

/// The actions of this module.
pub const ACTIONS: [&str; 17] = [
    "AllocateAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "ReleaseAddress",
    "DescribeAddresses",
    "CreateInternetGateway",
    "AttachInternetGateway",
    "DetachInternetGateway",
    "DeleteInternetGateway",
    "DescribeInternetGateways",
    "CreateRouteTable",
    "CreateRoute",
    "DeleteRoute",
    "AssociateRouteTable",
    "DisassociateRouteTable",
    "DeleteRouteTable",
    "DescribeRouteTables",
];

/// A parsed public addressing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicRequest {
    /// AllocateAddress.
    Allocate {
        /// `Domain`.
        domain: Option<String>,
        /// `Address` (refused: `Unsupported`).
        address: Option<String>,
        /// Tags (`elastic-ip`).
        tags: Vec<(String, String)>,
    },
    /// AssociateAddress.
    Associate(AssociateInput),
    /// DisassociateAddress (`AssociationId` or `PublicIp`).
    Disassociate(AddressRef),
    /// ReleaseAddress (`AllocationId` or `PublicIp`).
    Release(AddressRef),
    /// DescribeAddresses.
    DescribeAddresses {
        /// `AllocationId.N`.
        allocation_ids: Vec<String>,
        /// `PublicIp.N`.
        public_ips: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// CreateInternetGateway.
    CreateIgw {
        /// Tags (`internet-gateway`).
        tags: Vec<(String, String)>,
    },
    /// AttachInternetGateway.
    AttachIgw {
        /// `InternetGatewayId`.
        igw: String,
        /// `VpcId`.
        vpc: String,
    },
    /// DetachInternetGateway.
    DetachIgw {
        /// `InternetGatewayId`.
        igw: String,
        /// `VpcId`.
        vpc: String,
    },
    /// DeleteInternetGateway.
    DeleteIgw {
        /// `InternetGatewayId`.
        igw: String,
    },
    /// DescribeInternetGateways.
    DescribeIgws {
        /// `InternetGatewayId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// CreateRouteTable.
    CreateTable {
        /// `VpcId`.
        vpc: String,
        /// Tags (`route-table`).
        tags: Vec<(String, String)>,
    },
    /// CreateRoute.
    CreateRoute {
        /// `RouteTableId`.
        table: String,
        /// `DestinationCidrBlock`.
        destination: String,
        /// `GatewayId`.
        gateway: String,
    },
    /// DeleteRoute.
    DeleteRoute {
        /// `RouteTableId`.
        table: String,
        /// `DestinationCidrBlock`.
        destination: String,
    },
    /// AssociateRouteTable.
    AssociateTable {
        /// `RouteTableId`.
        table: String,
        /// `SubnetId`.
        subnet: String,
    },
    /// DisassociateRouteTable.
    DisassociateTable {
        /// `AssociationId`.
        association: String,
    },
    /// DeleteRouteTable.
    DeleteTable {
        /// `RouteTableId`.
        table: String,
    },
    /// DescribeRouteTables.
    DescribeTables {
        /// `RouteTableId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
}

fn unsupported(r: &mut Reader, names: &[&str], why: &str) -> Result<(), Ec2Error> {
    for n in names {
        if r.opt(n).is_some() {
            return Err(Ec2Error::new(
                ErrorCode::Unsupported,
                format!("The parameter {n} is not supported by this endpoint ({why})"),
            ));
        }
    }
    Ok(())
}

/// `AllocationId` or `PublicIp` (one of them).
fn address_ref(r: &mut Reader, id_param: &str) -> Result<AddressRef, Ec2Error> {
    match (r.opt(id_param), r.opt("PublicIp")) {
        (Some(_), Some(_)) => Err(Ec2Error::new(
            ErrorCode::InvalidParameterCombination,
            format!("Specify either {id_param} or PublicIp, not both"),
        )),
        (Some(id), None) => Ok(AddressRef::Allocation(id)),
        (None, Some(ip)) => Ok(AddressRef::PublicIp(ip)),
        (None, None) => Err(Ec2Error::missing(id_param)),
    }
}

/// Parses one of [`ACTIONS`].
pub fn parse(action: &str, r: &mut Reader) -> Result<(&'static str, PublicRequest), Ec2Error> {
    let name = ACTIONS
        .iter()
        .find(|a| **a == action)
        .copied()
        .ok_or_else(|| {
            Ec2Error::new(
                ErrorCode::InvalidAction,
                format!("The action {action} is not valid for this web service."),
            )
        })?;
    let req = match name {
        "AllocateAddress" => {
            unsupported(
                r,
                &[
                    "PublicIpv4Pool",
                    "NetworkBorderGroup",
                    "CustomerOwnedIpv4Pool",
                    "IpamPoolId",
                ],
                "one public pool per region",
            )?;
            PublicRequest::Allocate {
                domain: r.opt("Domain"),
                address: r.opt("Address"),
                tags: tag_pairs(&r.tag_specifications("elastic-ip")?),
            }
        }
        "AssociateAddress" => PublicRequest::Associate(AssociateInput {
            address: address_ref(r, "AllocationId")?,
            instance_id: r.opt("InstanceId").filter(|s| !s.is_empty()),
            network_interface_id: r.opt("NetworkInterfaceId").filter(|s| !s.is_empty()),
            private_ip: r.opt("PrivateIpAddress").filter(|s| !s.is_empty()),
            allow_reassociation: r.bool("AllowReassociation")?.unwrap_or(false),
        }),
        "DisassociateAddress" => PublicRequest::Disassociate(address_ref(r, "AssociationId")?),
        "ReleaseAddress" => {
            unsupported(r, &["NetworkBorderGroup"], "one public pool per region")?;
            PublicRequest::Release(address_ref(r, "AllocationId")?)
        }
        "DescribeAddresses" => PublicRequest::DescribeAddresses {
            allocation_ids: r.list("AllocationId", MAX_IDS)?,
            public_ips: r.list("PublicIp", MAX_IDS)?,
            filters: r.filters(None)?,
        },
        "CreateInternetGateway" => PublicRequest::CreateIgw {
            tags: tag_pairs(&r.tag_specifications("internet-gateway")?),
        },
        "AttachInternetGateway" => PublicRequest::AttachIgw {
            igw: r.required("InternetGatewayId")?,
            vpc: r.required("VpcId")?,
        },
        "DetachInternetGateway" => PublicRequest::DetachIgw {
            igw: r.required("InternetGatewayId")?,
            vpc: r.required("VpcId")?,
        },
        "DeleteInternetGateway" => PublicRequest::DeleteIgw {
            igw: r.required("InternetGatewayId")?,
        },
        "DescribeInternetGateways" => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            PublicRequest::DescribeIgws {
                ids: r.list("InternetGatewayId", MAX_IDS)?,
                filters: r.filters(None)?,
            }
        }
        "CreateRouteTable" => {
            let _ = r.opt("ClientToken");
            PublicRequest::CreateTable {
                vpc: r.required("VpcId")?,
                tags: tag_pairs(&r.tag_specifications("route-table")?),
            }
        }
        "CreateRoute" => {
            unsupported(
                r,
                &[
                    "DestinationIpv6CidrBlock",
                    "DestinationPrefixListId",
                    "VpcEndpointId",
                    "EgressOnlyInternetGatewayId",
                    "NatGatewayId",
                    "TransitGatewayId",
                    "LocalGatewayId",
                    "CarrierGatewayId",
                    "InstanceId",
                    "NetworkInterfaceId",
                    "VpcPeeringConnectionId",
                    "CoreNetworkArn",
                ],
                "routes target internet gateways only",
            )?;
            PublicRequest::CreateRoute {
                table: r.required("RouteTableId")?,
                destination: r.required("DestinationCidrBlock")?,
                gateway: r.required("GatewayId")?,
            }
        }
        "DeleteRoute" => {
            unsupported(
                r,
                &["DestinationIpv6CidrBlock", "DestinationPrefixListId"],
                "IPv4 routes only",
            )?;
            PublicRequest::DeleteRoute {
                table: r.required("RouteTableId")?,
                destination: r.required("DestinationCidrBlock")?,
            }
        }
        "AssociateRouteTable" => {
            unsupported(r, &["GatewayId"], "tables are associated with subnets only")?;
            PublicRequest::AssociateTable {
                table: r.required("RouteTableId")?,
                subnet: r.required("SubnetId")?,
            }
        }
        "DisassociateRouteTable" => PublicRequest::DisassociateTable {
            association: r.required("AssociationId")?,
        },
        "DeleteRouteTable" => PublicRequest::DeleteTable {
            table: r.required("RouteTableId")?,
        },
        _ => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            PublicRequest::DescribeTables {
                ids: r.list("RouteTableId", MAX_IDS)?,
                filters: r.filters(None)?,
            }
        }
    };
    Ok((name, req))
}

/// Runs a parsed request (DryRun was answered by the caller).
pub async fn handle(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    action: &'static str,
    req: PublicRequest,
) -> Result<String, Ec2Error> {
    let mut w = XmlWriter::response(action, rid);
    match req {
        PublicRequest::Allocate {
            domain,
            address,
            tags,
        } => {
            let e = d
                .allocate_address(caller, domain.as_deref(), address.as_deref(), &tags)
                .await?;
            w.leaf("publicIp", &e.public_ip);
            w.leaf("domain", "vpc");
            w.leaf("allocationId", &e.id);
        }
        PublicRequest::Associate(input) => {
            let id = d.associate_address(caller, &input).await?;
            w.bool("return", true);
            w.leaf("associationId", id);
        }
        PublicRequest::Disassociate(a) => {
            d.disassociate_address(caller, &a).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::Release(a) => {
            d.release_address(caller, &a).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DescribeAddresses {
            allocation_ids,
            public_ips,
            filters,
        } => {
            let all = d
                .describe_addresses(
                    caller,
                    &allocation_ids,
                    &public_ips,
                    &domain_filters(filters),
                )
                .await?;
            w.list("addressesSet", &all, address_xml);
        }
        PublicRequest::CreateIgw { tags } => {
            let g = d.create_internet_gateway(caller, &tags).await?;
            w.elem("internetGateway", |w| igw_xml(w, &g));
        }
        PublicRequest::AttachIgw { igw, vpc } => {
            d.attach_internet_gateway(caller, &igw, &vpc).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DetachIgw { igw, vpc } => {
            d.detach_internet_gateway(caller, &igw, &vpc).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DeleteIgw { igw } => {
            d.delete_internet_gateway(caller, &igw).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DescribeIgws { ids, filters } => {
            let all = d
                .describe_internet_gateways(caller, &ids, &domain_filters(filters))
                .await?;
            w.list("internetGatewaySet", &all, igw_xml);
        }
        PublicRequest::CreateTable { vpc, tags } => {
            let t = d.create_route_table(caller, &vpc, &tags).await?;
            let view = d
                .describe_route_tables(caller, &[t.id.to_string()], &[])
                .await?;
            let v = view.first().ok_or_else(|| {
                Ec2Error::new(ErrorCode::InternalError, "the new route table vanished")
            })?;
            w.elem("routeTable", |w| table_xml(w, v));
        }
        PublicRequest::CreateRoute {
            table,
            destination,
            gateway,
        } => {
            d.create_route(caller, &table, &destination, &gateway)
                .await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DeleteRoute { table, destination } => {
            d.delete_route(caller, &table, &destination).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::AssociateTable { table, subnet } => {
            let id = d.associate_route_table(caller, &table, &subnet).await?;
            w.leaf("associationId", id);
            w.elem("associationState", |w| {
                w.leaf("state", "associated");
            });
        }
        PublicRequest::DisassociateTable { association } => {
            d.disassociate_route_table(caller, &association).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DeleteTable { table } => {
            d.delete_route_table(caller, &table).await?;
            return Ok(return_true(action, rid));
        }
        PublicRequest::DescribeTables { ids, filters } => {
            let all = d
                .describe_route_tables(caller, &ids, &domain_filters(filters))
                .await?;
            w.list("routeTableSet", &all, table_xml);
        }
    }
    Ok(w.finish())
}

fn address_xml(w: &mut XmlWriter, e: &ElasticIp) {
    w.leaf("publicIp", &e.public_ip);
    w.leaf("allocationId", &e.id);
    w.leaf("domain", "vpc");
    if let Some(a) = &e.association {
        w.leaf("instanceId", &a.instance_id);
        w.leaf("associationId", &a.id);
        w.leaf("networkInterfaceId", a.interface_id());
        w.leaf("networkInterfaceOwnerId", &e.account);
        w.leaf_opt("privateIpAddress", a.private_ip.as_ref());
        w.leaf_opt("subnetId", a.subnet_id.as_ref());
    }
    tag_set(w, &e.tags);
}

fn igw_xml(w: &mut XmlWriter, g: &InternetGateway) {
    w.leaf("internetGatewayId", &g.id);
    w.leaf("ownerId", &g.account);
    w.list("attachmentSet", g.vpc_id.iter(), |w, v| {
        w.leaf("vpcId", v);
        w.leaf("state", "available");
    });
    tag_set(w, &g.tags);
}

fn table_xml(w: &mut XmlWriter, v: &RouteTableView) {
    let t = &v.table;
    w.leaf("routeTableId", &t.id);
    w.leaf("vpcId", &t.vpc_id);
    w.leaf("ownerId", &t.account);
    w.list("routeSet", &v.routes, |w, r| {
        w.leaf("destinationCidrBlock", &r.destination);
        w.leaf("gatewayId", &r.target);
        w.leaf("state", r.state);
        w.leaf("origin", r.origin);
    });
    w.list("associationSet", &v.associations, |w, a| {
        w.leaf("routeTableAssociationId", &a.id);
        w.leaf("routeTableId", &t.id);
        w.bool("main", a.main);
        w.leaf_opt("subnetId", a.subnet_id.as_ref());
        w.elem("associationState", |w| {
            w.leaf("state", "associated");
        });
    });
    w.empty("propagatingVgwSet");
    tag_set(w, &t.tags);
}
