//! The public addressing half of the Networking service (Elastic IPs,
//! internet gateways, route tables): thin handlers over
//! [`crate::domain::vpc`], called by the trait methods of
//! [`super::vpc::NetworkingApi`].

use nubis_proto::vpc::v1 as pb;
use tonic::{Request, Response, Status};

use super::vpc::{filters_in, non_empty, tags_in, tags_out, NetworkingApi};
use crate::domain::vpc::addresses::{AddressRef, AssociateInput, ElasticIp};
use crate::domain::vpc::gateways::InternetGateway;
use crate::domain::vpc::routes::RouteTableView;
use crate::error::Error;

type Answer<T> = Result<Response<T>, Status>;

/// One of `id` (named `id_name`) or `ip`.
fn address_ref(id: String, ip: String, id_name: &str) -> Result<AddressRef, Error> {
    match (non_empty(id), non_empty(ip)) {
        (Some(_), Some(_)) => Err(Error::invalid_code(
            "InvalidParameterCombination",
            format!("Specify either {id_name} or public_ip, not both"),
        )),
        (Some(id), None) => Ok(AddressRef::Allocation(id)),
        (None, Some(ip)) => Ok(AddressRef::PublicIp(ip)),
        (None, None) => Err(Error::missing(id_name)),
    }
}

fn address_out(e: &ElasticIp) -> pb::Address {
    let a = e.association.as_ref();
    pb::Address {
        allocation_id: e.id.to_string(),
        public_ip: e.public_ip.clone(),
        association_id: a.map(|a| a.id.to_string()).unwrap_or_default(),
        instance_id: a.map(|a| a.instance_id.to_string()).unwrap_or_default(),
        network_interface_id: a.map(|a| a.interface_id()).unwrap_or_default(),
        private_ip_address: a.and_then(|a| a.private_ip.clone()).unwrap_or_default(),
        tags: tags_out(&e.tags),
    }
}

fn igw_out(g: &InternetGateway) -> pb::InternetGateway {
    pb::InternetGateway {
        internet_gateway_id: g.id.to_string(),
        vpc_id: g.vpc_id.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        tags: tags_out(&g.tags),
    }
}

fn table_out(v: &RouteTableView) -> pb::RouteTable {
    pb::RouteTable {
        route_table_id: v.table.id.to_string(),
        vpc_id: v.table.vpc_id.to_string(),
        main: v.table.main,
        routes: v
            .routes
            .iter()
            .map(|r| pb::Route {
                destination_cidr_block: r.destination.clone(),
                gateway_id: r.target.clone(),
                state: r.state.to_string(),
            })
            .collect(),
        associations: v
            .associations
            .iter()
            .map(|a| pb::RouteTableAssociation {
                association_id: a.id.to_string(),
                subnet_id: a
                    .subnet_id
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                main: a.main,
            })
            .collect(),
        tags: tags_out(&v.table.tags),
    }
}

impl NetworkingApi {
    pub(super) async fn allocate_address_(
        &self,
        req: Request<pb::AllocateAddressRequest>,
    ) -> Answer<pb::AllocateAddressResponse> {
        self.edge
            .call(req, "AllocateAddress", |caller, r| async move {
                let e = self
                    .domain()
                    .allocate_address(&caller, None, None, &tags_in(r.tags))
                    .await?;
                Ok(pb::AllocateAddressResponse {
                    address: Some(address_out(&e)),
                })
            })
            .await
    }

    pub(super) async fn associate_address_(
        &self,
        req: Request<pb::AssociateAddressRequest>,
    ) -> Answer<pb::AssociateAddressResponse> {
        self.edge
            .call(req, "AssociateAddress", |caller, r| async move {
                let input = AssociateInput {
                    address: address_ref(r.allocation_id, r.public_ip, "allocation_id")?,
                    instance_id: non_empty(r.instance_id),
                    network_interface_id: non_empty(r.network_interface_id),
                    private_ip: non_empty(r.private_ip_address),
                    allow_reassociation: r.allow_reassociation,
                };
                let id = self.domain().associate_address(&caller, &input).await?;
                Ok(pb::AssociateAddressResponse {
                    association_id: id.to_string(),
                })
            })
            .await
    }

    pub(super) async fn disassociate_address_(
        &self,
        req: Request<pb::DisassociateAddressRequest>,
    ) -> Answer<pb::DisassociateAddressResponse> {
        self.edge
            .call(req, "DisassociateAddress", |caller, r| async move {
                let a = address_ref(r.association_id, r.public_ip, "association_id")?;
                self.domain().disassociate_address(&caller, &a).await?;
                Ok(pb::DisassociateAddressResponse {})
            })
            .await
    }

    pub(super) async fn release_address_(
        &self,
        req: Request<pb::ReleaseAddressRequest>,
    ) -> Answer<pb::ReleaseAddressResponse> {
        self.edge
            .call(req, "ReleaseAddress", |caller, r| async move {
                let a = address_ref(r.allocation_id, r.public_ip, "allocation_id")?;
                self.domain().release_address(&caller, &a).await?;
                Ok(pb::ReleaseAddressResponse {})
            })
            .await
    }

    pub(super) async fn describe_addresses_(
        &self,
        req: Request<pb::DescribeAddressesRequest>,
    ) -> Answer<pb::DescribeAddressesResponse> {
        self.edge
            .call(req, "DescribeAddresses", |caller, r| async move {
                let all = self
                    .domain()
                    .describe_addresses(
                        &caller,
                        &r.allocation_ids,
                        &r.public_ips,
                        &filters_in(r.filters),
                    )
                    .await?;
                Ok(pb::DescribeAddressesResponse {
                    addresses: all.iter().map(address_out).collect(),
                })
            })
            .await
    }

    pub(super) async fn create_internet_gateway_(
        &self,
        req: Request<pb::CreateInternetGatewayRequest>,
    ) -> Answer<pb::CreateInternetGatewayResponse> {
        self.edge
            .call(req, "CreateInternetGateway", |caller, r| async move {
                let g = self
                    .domain()
                    .create_internet_gateway(&caller, &tags_in(r.tags))
                    .await?;
                Ok(pb::CreateInternetGatewayResponse {
                    internet_gateway: Some(igw_out(&g)),
                })
            })
            .await
    }

    pub(super) async fn attach_internet_gateway_(
        &self,
        req: Request<pb::AttachInternetGatewayRequest>,
    ) -> Answer<pb::AttachInternetGatewayResponse> {
        self.edge
            .call(req, "AttachInternetGateway", |caller, r| async move {
                self.domain()
                    .attach_internet_gateway(&caller, &r.internet_gateway_id, &r.vpc_id)
                    .await?;
                Ok(pb::AttachInternetGatewayResponse {})
            })
            .await
    }

    pub(super) async fn detach_internet_gateway_(
        &self,
        req: Request<pb::DetachInternetGatewayRequest>,
    ) -> Answer<pb::DetachInternetGatewayResponse> {
        self.edge
            .call(req, "DetachInternetGateway", |caller, r| async move {
                self.domain()
                    .detach_internet_gateway(&caller, &r.internet_gateway_id, &r.vpc_id)
                    .await?;
                Ok(pb::DetachInternetGatewayResponse {})
            })
            .await
    }

    pub(super) async fn delete_internet_gateway_(
        &self,
        req: Request<pb::DeleteInternetGatewayRequest>,
    ) -> Answer<pb::DeleteInternetGatewayResponse> {
        self.edge
            .call(req, "DeleteInternetGateway", |caller, r| async move {
                self.domain()
                    .delete_internet_gateway(&caller, &r.internet_gateway_id)
                    .await?;
                Ok(pb::DeleteInternetGatewayResponse {})
            })
            .await
    }

    pub(super) async fn describe_internet_gateways_(
        &self,
        req: Request<pb::DescribeInternetGatewaysRequest>,
    ) -> Answer<pb::DescribeInternetGatewaysResponse> {
        self.edge
            .call(req, "DescribeInternetGateways", |caller, r| async move {
                let all = self
                    .domain()
                    .describe_internet_gateways(
                        &caller,
                        &r.internet_gateway_ids,
                        &filters_in(r.filters),
                    )
                    .await?;
                Ok(pb::DescribeInternetGatewaysResponse {
                    internet_gateways: all.iter().map(igw_out).collect(),
                })
            })
            .await
    }

    pub(super) async fn create_route_table_(
        &self,
        req: Request<pb::CreateRouteTableRequest>,
    ) -> Answer<pb::CreateRouteTableResponse> {
        self.edge
            .call(req, "CreateRouteTable", |caller, r| async move {
                let d = self.domain();
                let t = d
                    .create_route_table(&caller, &r.vpc_id, &tags_in(r.tags))
                    .await?;
                let view = d
                    .describe_route_tables(&caller, &[t.id.to_string()], &[])
                    .await?;
                Ok(pb::CreateRouteTableResponse {
                    route_table: view.first().map(table_out),
                })
            })
            .await
    }

    pub(super) async fn create_route_(
        &self,
        req: Request<pb::CreateRouteRequest>,
    ) -> Answer<pb::CreateRouteResponse> {
        self.edge
            .call(req, "CreateRoute", |caller, r| async move {
                self.domain()
                    .create_route(
                        &caller,
                        &r.route_table_id,
                        &r.destination_cidr_block,
                        &r.gateway_id,
                    )
                    .await?;
                Ok(pb::CreateRouteResponse {})
            })
            .await
    }

    pub(super) async fn delete_route_(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Answer<pb::DeleteRouteResponse> {
        self.edge
            .call(req, "DeleteRoute", |caller, r| async move {
                self.domain()
                    .delete_route(&caller, &r.route_table_id, &r.destination_cidr_block)
                    .await?;
                Ok(pb::DeleteRouteResponse {})
            })
            .await
    }

    pub(super) async fn associate_route_table_(
        &self,
        req: Request<pb::AssociateRouteTableRequest>,
    ) -> Answer<pb::AssociateRouteTableResponse> {
        self.edge
            .call(req, "AssociateRouteTable", |caller, r| async move {
                let id = self
                    .domain()
                    .associate_route_table(&caller, &r.route_table_id, &r.subnet_id)
                    .await?;
                Ok(pb::AssociateRouteTableResponse {
                    association_id: id.to_string(),
                })
            })
            .await
    }

    pub(super) async fn disassociate_route_table_(
        &self,
        req: Request<pb::DisassociateRouteTableRequest>,
    ) -> Answer<pb::DisassociateRouteTableResponse> {
        self.edge
            .call(req, "DisassociateRouteTable", |caller, r| async move {
                self.domain()
                    .disassociate_route_table(&caller, &r.association_id)
                    .await?;
                Ok(pb::DisassociateRouteTableResponse {})
            })
            .await
    }

    pub(super) async fn delete_route_table_(
        &self,
        req: Request<pb::DeleteRouteTableRequest>,
    ) -> Answer<pb::DeleteRouteTableResponse> {
        self.edge
            .call(req, "DeleteRouteTable", |caller, r| async move {
                self.domain()
                    .delete_route_table(&caller, &r.route_table_id)
                    .await?;
                Ok(pb::DeleteRouteTableResponse {})
            })
            .await
    }

    pub(super) async fn describe_route_tables_(
        &self,
        req: Request<pb::DescribeRouteTablesRequest>,
    ) -> Answer<pb::DescribeRouteTablesResponse> {
        self.edge
            .call(req, "DescribeRouteTables", |caller, r| async move {
                let all = self
                    .domain()
                    .describe_route_tables(&caller, &r.route_table_ids, &filters_in(r.filters))
                    .await?;
                Ok(pb::DescribeRouteTablesResponse {
                    route_tables: all.iter().map(table_out).collect(),
                })
            })
            .await
    }
}
