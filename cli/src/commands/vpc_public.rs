//! `nubis addresses|internet-gateways|route-tables ...`: the public
//! addressing half of the Networking API (`nubis.vpc.v1`), with the same
//! EC2 error codes as the EC2 actions.

use std::collections::BTreeMap;

use clap::Subcommand;
use nubis_proto::vpc::v1 as pb;
use serde::Serialize;

use super::vpcs::{filters, pb_tags, tags, ListArgs};
use super::Ctx;
use crate::cli::{tag_arg, TagArg};
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, Tabular};

/// `nubis addresses ...` (Elastic IPs).
#[derive(Debug, Subcommand)]
pub enum AddressesCmd {
    /// Allocate an Elastic IP from the region's public pool.
    Allocate {
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// Associate an Elastic IP (allocation id or address) with an instance.
    Associate {
        /// Allocation id (eipalloc-…) or the public address.
        address: String,
        /// Instance id.
        #[arg(long)]
        instance: String,
        /// Move the address if it is associated elsewhere.
        #[arg(long)]
        allow_reassociation: bool,
    },
    /// Disassociate an Elastic IP (association id or address).
    Disassociate {
        /// Association id (eipassoc-…) or the public address.
        association: String,
    },
    /// Release an Elastic IP that is not associated.
    Release {
        /// Allocation id (eipalloc-…) or the public address.
        address: String,
    },
    /// List your Elastic IPs.
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// `nubis internet-gateways ...`.
#[derive(Debug, Subcommand)]
pub enum InternetGatewaysCmd {
    /// Create an internet gateway (detached).
    Create {
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// Attach a gateway to a VPC (one per VPC).
    Attach {
        /// Gateway id.
        internet_gateway_id: String,
        /// VPC id.
        vpc_id: String,
    },
    /// Detach a gateway from its VPC.
    Detach {
        /// Gateway id.
        internet_gateway_id: String,
        /// VPC id.
        vpc_id: String,
    },
    /// Delete a detached gateway.
    Delete {
        /// Gateway id.
        internet_gateway_id: String,
    },
    /// List your gateways.
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// `nubis route-tables ...`.
#[derive(Debug, Subcommand)]
pub enum RouteTablesCmd {
    /// Create a route table in a VPC (the local route only).
    Create {
        /// VPC id.
        vpc_id: String,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// Add a route to an internet gateway attached to the table's VPC.
    AddRoute {
        /// Route table id.
        route_table_id: String,
        /// Destination block, e.g. 0.0.0.0/0.
        destination: String,
        /// Internet gateway id.
        #[arg(long)]
        gateway: String,
    },
    /// Remove a route.
    DeleteRoute {
        /// Route table id.
        route_table_id: String,
        /// Destination block.
        destination: String,
    },
    /// Use this table for a subnet of its VPC.
    Associate {
        /// Route table id.
        route_table_id: String,
        /// Subnet id.
        subnet_id: String,
    },
    /// Remove a subnet's association (the subnet uses the main table again).
    Disassociate {
        /// Association id (rtbassoc-…).
        association_id: String,
    },
    /// Delete a table that is neither main nor associated.
    Delete {
        /// Route table id.
        route_table_id: String,
    },
    /// List your route tables with their routes and associations.
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// An Elastic IP.
#[derive(Debug, Serialize)]
pub struct AddressView {
    allocation_id: String,
    public_ip: String,
    association_id: String,
    instance_id: String,
    private_ip_address: String,
    tags: BTreeMap<String, String>,
}

impl Tabular for AddressView {
    fn headers() -> &'static [&'static str] {
        &["ALLOCATION_ID", "PUBLIC_IP", "INSTANCE", "ASSOCIATION_ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.allocation_id.clone(),
            self.public_ip.clone(),
            self.instance_id.clone(),
            self.association_id.clone(),
        ]
    }
}

impl From<pb::Address> for AddressView {
    fn from(a: pb::Address) -> Self {
        Self {
            tags: tags(&a.tags),
            allocation_id: a.allocation_id,
            public_ip: a.public_ip,
            association_id: a.association_id,
            instance_id: a.instance_id,
            private_ip_address: a.private_ip_address,
        }
    }
}

/// An internet gateway.
#[derive(Debug, Serialize)]
pub struct GatewayView {
    internet_gateway_id: String,
    vpc_id: String,
    tags: BTreeMap<String, String>,
}

impl Tabular for GatewayView {
    fn headers() -> &'static [&'static str] {
        &["INTERNET_GATEWAY_ID", "VPC_ID"]
    }
    fn row(&self) -> Vec<String> {
        vec![self.internet_gateway_id.clone(), self.vpc_id.clone()]
    }
}

impl From<pb::InternetGateway> for GatewayView {
    fn from(g: pb::InternetGateway) -> Self {
        Self {
            tags: tags(&g.tags),
            internet_gateway_id: g.internet_gateway_id,
            vpc_id: g.vpc_id,
        }
    }
}

/// A route, flat.
#[derive(Debug, Serialize)]
pub struct RouteView {
    destination: String,
    target: String,
    state: String,
}

/// An association, flat.
#[derive(Debug, Serialize)]
pub struct AssociationView {
    association_id: String,
    subnet_id: String,
    main: bool,
}

/// A route table.
#[derive(Debug, Serialize)]
pub struct TableView {
    route_table_id: String,
    vpc_id: String,
    main: bool,
    routes: Vec<RouteView>,
    associations: Vec<AssociationView>,
    tags: BTreeMap<String, String>,
}

impl Tabular for TableView {
    fn headers() -> &'static [&'static str] {
        &["ROUTE_TABLE_ID", "VPC_ID", "MAIN", "ROUTES", "SUBNETS"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.route_table_id.clone(),
            self.vpc_id.clone(),
            self.main.to_string(),
            self.routes
                .iter()
                .map(|r| format!("{} -> {} ({})", r.destination, r.target, r.state))
                .collect::<Vec<_>>()
                .join("; "),
            self.associations
                .iter()
                .filter(|a| !a.main)
                .map(|a| a.subnet_id.clone())
                .collect::<Vec<_>>()
                .join(","),
        ]
    }
}

impl From<pb::RouteTable> for TableView {
    fn from(t: pb::RouteTable) -> Self {
        Self {
            tags: tags(&t.tags),
            route_table_id: t.route_table_id,
            vpc_id: t.vpc_id,
            main: t.main,
            routes: t
                .routes
                .into_iter()
                .map(|r| RouteView {
                    destination: r.destination_cidr_block,
                    target: r.gateway_id,
                    state: r.state,
                })
                .collect(),
            associations: t
                .associations
                .into_iter()
                .map(|a| AssociationView {
                    association_id: a.association_id,
                    subnet_id: a.subnet_id,
                    main: a.main,
                })
                .collect(),
        }
    }
}

/// What an associate command prints.
#[derive(Debug, Serialize)]
struct AssociationOut {
    association_id: String,
}

/// `eipalloc-…`/`eipassoc-…` (per `prefix`) or an address.
fn id_or_ip(v: String, prefix: &str) -> (String, String) {
    if v.starts_with(prefix) {
        (v, String::new())
    } else {
        (String::new(), v)
    }
}

/// Runs `nubis addresses ...`.
pub async fn addresses(ctx: &Ctx, cmd: AddressesCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        AddressesCmd::Allocate { tags } => {
            let a = c
                .allocate_address(pb::AllocateAddressRequest {
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .address
                .unwrap_or_default();
            emit(&render_record(ctx.format, &AddressView::from(a))?)
        }
        AddressesCmd::Associate {
            address,
            instance,
            allow_reassociation,
        } => {
            let (allocation_id, public_ip) = id_or_ip(address, "eipalloc-");
            let r = c
                .associate_address(pb::AssociateAddressRequest {
                    allocation_id,
                    public_ip,
                    instance_id: instance,
                    allow_reassociation,
                    ..Default::default()
                })
                .await?
                .into_inner();
            emit(&render_record(
                ctx.format,
                &AssociationOut {
                    association_id: r.association_id,
                },
            )?)
        }
        AddressesCmd::Disassociate { association } => {
            let (association_id, public_ip) = id_or_ip(association.clone(), "eipassoc-");
            c.disassociate_address(pb::DisassociateAddressRequest {
                association_id,
                public_ip,
            })
            .await?;
            eprintln!("disassociated {association}");
            Ok(())
        }
        AddressesCmd::Release { address } => {
            let (allocation_id, public_ip) = id_or_ip(address.clone(), "eipalloc-");
            c.release_address(pb::ReleaseAddressRequest {
                allocation_id,
                public_ip,
            })
            .await?;
            eprintln!("released {address}");
            Ok(())
        }
        AddressesCmd::List(args) => {
            let r = c
                .describe_addresses(pb::DescribeAddressesRequest {
                    filters: filters(&args)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let views: Vec<AddressView> = r.addresses.into_iter().map(AddressView::from).collect();
            emit(&render_list(ctx.format, "addresses", &views)?)
        }
    }
}

/// Runs `nubis internet-gateways ...`.
pub async fn internet_gateways(ctx: &Ctx, cmd: InternetGatewaysCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        InternetGatewaysCmd::Create { tags } => {
            let g = c
                .create_internet_gateway(pb::CreateInternetGatewayRequest {
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .internet_gateway
                .unwrap_or_default();
            emit(&render_record(ctx.format, &GatewayView::from(g))?)
        }
        InternetGatewaysCmd::Attach {
            internet_gateway_id,
            vpc_id,
        } => {
            c.attach_internet_gateway(pb::AttachInternetGatewayRequest {
                internet_gateway_id: internet_gateway_id.clone(),
                vpc_id: vpc_id.clone(),
            })
            .await?;
            eprintln!("attached {internet_gateway_id} to {vpc_id}");
            Ok(())
        }
        InternetGatewaysCmd::Detach {
            internet_gateway_id,
            vpc_id,
        } => {
            c.detach_internet_gateway(pb::DetachInternetGatewayRequest {
                internet_gateway_id: internet_gateway_id.clone(),
                vpc_id: vpc_id.clone(),
            })
            .await?;
            eprintln!("detached {internet_gateway_id} from {vpc_id}");
            Ok(())
        }
        InternetGatewaysCmd::Delete {
            internet_gateway_id,
        } => {
            c.delete_internet_gateway(pb::DeleteInternetGatewayRequest {
                internet_gateway_id: internet_gateway_id.clone(),
            })
            .await?;
            eprintln!("deleted {internet_gateway_id}");
            Ok(())
        }
        InternetGatewaysCmd::List(args) => {
            let r = c
                .describe_internet_gateways(pb::DescribeInternetGatewaysRequest {
                    internet_gateway_ids: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<GatewayView> = r
                .internet_gateways
                .into_iter()
                .map(GatewayView::from)
                .collect();
            emit(&render_list(ctx.format, "internet_gateways", &views)?)
        }
    }
}

/// Runs `nubis route-tables ...`.
pub async fn route_tables(ctx: &Ctx, cmd: RouteTablesCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        RouteTablesCmd::Create { vpc_id, tags } => {
            let t = c
                .create_route_table(pb::CreateRouteTableRequest {
                    vpc_id,
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .route_table
                .unwrap_or_default();
            emit(&render_record(ctx.format, &TableView::from(t))?)
        }
        RouteTablesCmd::AddRoute {
            route_table_id,
            destination,
            gateway,
        } => {
            c.create_route(pb::CreateRouteRequest {
                route_table_id: route_table_id.clone(),
                destination_cidr_block: destination.clone(),
                gateway_id: gateway.clone(),
            })
            .await?;
            eprintln!("{route_table_id}: {destination} -> {gateway}");
            Ok(())
        }
        RouteTablesCmd::DeleteRoute {
            route_table_id,
            destination,
        } => {
            c.delete_route(pb::DeleteRouteRequest {
                route_table_id: route_table_id.clone(),
                destination_cidr_block: destination.clone(),
            })
            .await?;
            eprintln!("{route_table_id}: deleted the route to {destination}");
            Ok(())
        }
        RouteTablesCmd::Associate {
            route_table_id,
            subnet_id,
        } => {
            let r = c
                .associate_route_table(pb::AssociateRouteTableRequest {
                    route_table_id,
                    subnet_id,
                })
                .await?
                .into_inner();
            emit(&render_record(
                ctx.format,
                &AssociationOut {
                    association_id: r.association_id,
                },
            )?)
        }
        RouteTablesCmd::Disassociate { association_id } => {
            c.disassociate_route_table(pb::DisassociateRouteTableRequest {
                association_id: association_id.clone(),
            })
            .await?;
            eprintln!("disassociated {association_id}");
            Ok(())
        }
        RouteTablesCmd::Delete { route_table_id } => {
            c.delete_route_table(pb::DeleteRouteTableRequest {
                route_table_id: route_table_id.clone(),
            })
            .await?;
            eprintln!("deleted {route_table_id}");
            Ok(())
        }
        RouteTablesCmd::List(args) => {
            let r = c
                .describe_route_tables(pb::DescribeRouteTablesRequest {
                    route_table_ids: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<TableView> = r.route_tables.into_iter().map(TableView::from).collect();
            emit(&render_list(ctx.format, "route_tables", &views)?)
        }
    }
}
