//! The network interface half of the Networking service: thin handlers
//! over [`crate::domain::vpc::enis`] and [`crate::domain::vpc::eni_attach`],
//! called by the trait methods of [`super::vpc::NetworkingApi`].

use nubis_proto::vpc::v1 as pb;
use tonic::{Request, Response, Status};

use super::vpc::{filters_in, non_empty, tags_in, tags_out, NetworkingApi};
use crate::domain::vpc::enis::{CreateInterfaceInput, InterfaceChange, NetworkInterface};
use crate::error::Error;

type Answer<T> = Result<Response<T>, Status>;

fn interface_out(e: &NetworkInterface) -> pb::NetworkInterface {
    pb::NetworkInterface {
        network_interface_id: e.id.to_string(),
        vpc_id: e.vpc_id.to_string(),
        subnet_id: e.subnet_id.to_string(),
        availability_zone: e.availability_zone.clone(),
        private_ip_address: e.private_ip.clone(),
        mac_address: e.mac.clone(),
        security_group_ids: e.security_group_ids.iter().map(|g| g.to_string()).collect(),
        description: e.description.clone(),
        status: e.status().to_string(),
        attachment: e
            .attachment
            .as_ref()
            .map(|a| pb::NetworkInterfaceAttachment {
                attachment_id: a.id.to_string(),
                instance_id: a.instance_id.to_string(),
                device_index: a.device_index,
                delete_on_termination: a.delete_on_termination,
                attached_unix_ms: a.attached_ms,
            }),
        tags: tags_out(&e.tags),
    }
}

impl NetworkingApi {
    pub(super) async fn create_network_interface_(
        &self,
        req: Request<pb::CreateNetworkInterfaceRequest>,
    ) -> Answer<pb::CreateNetworkInterfaceResponse> {
        self.edge
            .call(req, "CreateNetworkInterface", |caller, r| async move {
                let input = CreateInterfaceInput {
                    subnet_id: non_empty(r.subnet_id).ok_or_else(|| Error::missing("subnet_id"))?,
                    private_ip: non_empty(r.private_ip_address),
                    group_ids: r.security_group_ids,
                    description: non_empty(r.description),
                    tags: tags_in(r.tags),
                };
                let e = self
                    .domain()
                    .create_network_interface(&caller, &input)
                    .await?;
                Ok(pb::CreateNetworkInterfaceResponse {
                    network_interface: Some(interface_out(&e)),
                })
            })
            .await
    }

    pub(super) async fn describe_network_interfaces_(
        &self,
        req: Request<pb::DescribeNetworkInterfacesRequest>,
    ) -> Answer<pb::DescribeNetworkInterfacesResponse> {
        self.edge
            .call(req, "DescribeNetworkInterfaces", |caller, r| async move {
                let all = self
                    .domain()
                    .describe_network_interfaces(
                        &caller,
                        &r.network_interface_ids,
                        &filters_in(r.filters),
                    )
                    .await?;
                Ok(pb::DescribeNetworkInterfacesResponse {
                    network_interfaces: all.iter().map(interface_out).collect(),
                })
            })
            .await
    }

    pub(super) async fn delete_network_interface_(
        &self,
        req: Request<pb::DeleteNetworkInterfaceRequest>,
    ) -> Answer<pb::DeleteNetworkInterfaceResponse> {
        self.edge
            .call(req, "DeleteNetworkInterface", |caller, r| async move {
                self.domain()
                    .delete_network_interface(&caller, &r.network_interface_id)
                    .await?;
                Ok(pb::DeleteNetworkInterfaceResponse {})
            })
            .await
    }

    pub(super) async fn attach_network_interface_(
        &self,
        req: Request<pb::AttachNetworkInterfaceRequest>,
    ) -> Answer<pb::AttachNetworkInterfaceResponse> {
        self.edge
            .call(req, "AttachNetworkInterface", |caller, r| async move {
                let id = self
                    .domain()
                    .attach_network_interface(
                        &caller,
                        &r.network_interface_id,
                        &r.instance_id,
                        r.device_index,
                    )
                    .await?;
                Ok(pb::AttachNetworkInterfaceResponse {
                    attachment_id: id.to_string(),
                })
            })
            .await
    }

    pub(super) async fn detach_network_interface_(
        &self,
        req: Request<pb::DetachNetworkInterfaceRequest>,
    ) -> Answer<pb::DetachNetworkInterfaceResponse> {
        self.edge
            .call(req, "DetachNetworkInterface", |caller, r| async move {
                self.domain()
                    .detach_network_interface(&caller, &r.attachment_id)
                    .await?;
                Ok(pb::DetachNetworkInterfaceResponse {})
            })
            .await
    }

    pub(super) async fn modify_network_interface_attribute_(
        &self,
        req: Request<pb::ModifyNetworkInterfaceAttributeRequest>,
    ) -> Answer<pb::ModifyNetworkInterfaceAttributeResponse> {
        self.edge
            .call(
                req,
                "ModifyNetworkInterfaceAttribute",
                |caller, r| async move {
                    let change = match (r.security_group_ids.is_empty(), r.description) {
                        (false, None) => InterfaceChange::Groups(r.security_group_ids),
                        (true, Some(d)) => InterfaceChange::Description(d),
                        (false, Some(_)) => {
                            return Err(Error::invalid_code(
                                "InvalidParameterCombination",
                                "Only one attribute can be modified at a time",
                            ))
                        }
                        (true, None) => return Err(Error::missing("security_group_ids")),
                    };
                    self.domain()
                        .modify_network_interface_attribute(
                            &caller,
                            &r.network_interface_id,
                            &change,
                        )
                        .await?;
                    Ok(pb::ModifyNetworkInterfaceAttributeResponse {})
                },
            )
            .await
    }
}
