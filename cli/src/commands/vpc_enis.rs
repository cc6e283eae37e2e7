//! `nubis network-interfaces ...`: elastic network interfaces over the
//! Networking API (`nubis.vpc.v1`), with the same EC2 error codes as the
//! EC2 actions.

use std::collections::BTreeMap;

use clap::Subcommand;
use nubis_proto::vpc::v1 as pb;
use serde::Serialize;

use super::vpcs::{filters, pb_tags, tags, ListArgs};
use super::Ctx;
use crate::cli::{tag_arg, TagArg};
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, Tabular};

/// `nubis network-interfaces ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkInterfacesCmd {
    /// Create an interface in a subnet (one private address of it).
    Create {
        /// Subnet id.
        subnet_id: String,
        /// The private address (default: the lowest free one).
        #[arg(long)]
        private_ip: Option<String>,
        /// A security group id (repeatable, at most 5; default: the VPC's
        /// default group).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// Delete an interface that is not attached (its address is released).
    Delete {
        /// Interface id (eni-…).
        network_interface_id: String,
    },
    /// Attach an interface to a stopped instance as a secondary interface
    /// (device index 1-3; no hot-plug: a running instance refuses it).
    Attach {
        /// Interface id.
        network_interface_id: String,
        /// Instance id.
        #[arg(long)]
        instance: String,
        /// Device index on the instance.
        #[arg(long, default_value_t = 1)]
        device_index: u32,
    },
    /// Detach a secondary interface from a stopped instance (a primary
    /// interface cannot be detached).
    Detach {
        /// Attachment id (eni-attach-…).
        attachment_id: String,
    },
    /// List your interfaces (instances' primary interfaces included).
    #[command(visible_alias = "ls")]
    List(ListArgs),
}

/// An interface.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    network_interface_id: String,
    vpc_id: String,
    subnet_id: String,
    availability_zone: String,
    private_ip_address: String,
    mac_address: String,
    security_group_ids: Vec<String>,
    description: String,
    status: String,
    instance_id: String,
    attachment_id: String,
    device_index: Option<u32>,
    delete_on_termination: Option<bool>,
    tags: BTreeMap<String, String>,
}

impl Tabular for InterfaceView {
    fn headers() -> &'static [&'static str] {
        &[
            "NETWORK_INTERFACE_ID",
            "SUBNET_ID",
            "PRIVATE_IP",
            "STATUS",
            "INSTANCE",
            "DEVICE",
            "GROUPS",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.network_interface_id.clone(),
            self.subnet_id.clone(),
            self.private_ip_address.clone(),
            self.status.clone(),
            self.instance_id.clone(),
            self.device_index.map(|d| d.to_string()).unwrap_or_default(),
            self.security_group_ids.join(","),
        ]
    }
}

impl From<pb::NetworkInterface> for InterfaceView {
    fn from(e: pb::NetworkInterface) -> Self {
        let a = e.attachment;
        Self {
            tags: tags(&e.tags),
            network_interface_id: e.network_interface_id,
            vpc_id: e.vpc_id,
            subnet_id: e.subnet_id,
            availability_zone: e.availability_zone,
            private_ip_address: e.private_ip_address,
            mac_address: e.mac_address,
            security_group_ids: e.security_group_ids,
            description: e.description,
            status: e.status,
            instance_id: a
                .as_ref()
                .map(|a| a.instance_id.clone())
                .unwrap_or_default(),
            attachment_id: a
                .as_ref()
                .map(|a| a.attachment_id.clone())
                .unwrap_or_default(),
            device_index: a.as_ref().map(|a| a.device_index),
            delete_on_termination: a.as_ref().map(|a| a.delete_on_termination),
        }
    }
}

/// What attach prints.
#[derive(Debug, Serialize)]
struct AttachmentOut {
    attachment_id: String,
}

/// Runs `nubis network-interfaces ...`.
pub async fn network_interfaces(ctx: &Ctx, cmd: NetworkInterfacesCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        NetworkInterfacesCmd::Create {
            subnet_id,
            private_ip,
            groups,
            description,
            tags,
        } => {
            let e = c
                .create_network_interface(pb::CreateNetworkInterfaceRequest {
                    subnet_id,
                    private_ip_address: private_ip.unwrap_or_default(),
                    security_group_ids: groups,
                    description: description.unwrap_or_default(),
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .network_interface
                .unwrap_or_default();
            emit(&render_record(ctx.format, &InterfaceView::from(e))?)
        }
        NetworkInterfacesCmd::Delete {
            network_interface_id,
        } => {
            c.delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                network_interface_id: network_interface_id.clone(),
            })
            .await?;
            eprintln!("deleted {network_interface_id}");
            Ok(())
        }
        NetworkInterfacesCmd::Attach {
            network_interface_id,
            instance,
            device_index,
        } => {
            let r = c
                .attach_network_interface(pb::AttachNetworkInterfaceRequest {
                    network_interface_id,
                    instance_id: instance,
                    device_index,
                })
                .await?
                .into_inner();
            emit(&render_record(
                ctx.format,
                &AttachmentOut {
                    attachment_id: r.attachment_id,
                },
            )?)
        }
        NetworkInterfacesCmd::Detach { attachment_id } => {
            c.detach_network_interface(pb::DetachNetworkInterfaceRequest {
                attachment_id: attachment_id.clone(),
            })
            .await?;
            eprintln!("detached {attachment_id}");
            Ok(())
        }
        NetworkInterfacesCmd::List(args) => {
            let r = c
                .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                    network_interface_ids: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<InterfaceView> = r
                .network_interfaces
                .into_iter()
                .map(InterfaceView::from)
                .collect();
            emit(&render_list(ctx.format, "network_interfaces", &views)?)
        }
    }
}
