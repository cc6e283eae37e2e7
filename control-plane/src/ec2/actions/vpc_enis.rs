//! Elastic network interface actions (EC2 2016-11-15):
//! CreateNetworkInterface, DescribeNetworkInterfaces,
//! DeleteNetworkInterface, AttachNetworkInterface, DetachNetworkInterface,
//! ModifyNetworkInterfaceAttribute: form parsing (called by
//! [`super::vpcs::parse`]) and XML over [`crate::domain::vpc::enis`].

use super::super::error::{Ec2Error, ErrorCode};
use super::super::query::{Filter, Reader};
use super::super::xml::XmlWriter;
use super::vpcs::tag_set;
use super::{domain_filters, return_true, tag_pairs, time_ms};
use crate::domain::vpc::enis::{CreateInterfaceInput, InterfaceChange, NetworkInterface};
use crate::domain::{Caller, Domain};
use crate::ec2::requests::MAX_IDS;

/// The actions of this module.
pub const ACTIONS: [&str; 6] = [
    "CreateNetworkInterface",
    "DescribeNetworkInterfaces",
    "DeleteNetworkInterface",
    "AttachNetworkInterface",
    "DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
];

/// A parsed network interface request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceRequest {
    /// CreateNetworkInterface.
    Create(CreateInterfaceInput),
    /// DescribeNetworkInterfaces.
    Describe {
        /// `NetworkInterfaceId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// DeleteNetworkInterface.
    Delete {
        /// `NetworkInterfaceId`.
        id: String,
    },
    /// AttachNetworkInterface.
    Attach {
        /// `NetworkInterfaceId`.
        id: String,
        /// `InstanceId`.
        instance: String,
        /// `DeviceIndex`.
        device_index: u32,
    },
    /// DetachNetworkInterface.
    Detach {
        /// `AttachmentId`.
        attachment: String,
    },
    /// ModifyNetworkInterfaceAttribute.
    Modify {
        /// `NetworkInterfaceId`.
        id: String,
        /// The attribute.
        change: InterfaceChange,
    },
}

fn unsupported(r: &mut Reader, prefixes: &[&str], why: &str) -> Result<(), Ec2Error> {
    for p in prefixes {
        if let Some((k, _)) = r.take_prefix(p).into_iter().find(|(_, v)| !v.is_empty()) {
            return Err(Ec2Error::new(
                ErrorCode::Unsupported,
                format!("The parameter {k} is not supported by this endpoint ({why})"),
            ));
        }
    }
    Ok(())
}

/// Parses one of [`ACTIONS`].
pub fn parse(action: &str, r: &mut Reader) -> Result<(&'static str, InterfaceRequest), Ec2Error> {
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
        "CreateNetworkInterface" => {
            unsupported(
                r,
                &[
                    "Ipv4Prefix",
                    "Ipv4PrefixCount",
                    "Ipv6Prefix",
                    "Ipv6PrefixCount",
                    "Ipv6Addresses",
                    "Ipv6AddressCount",
                    "EnablePrimaryIpv6",
                    "PrivateIpAddresses",
                    "SecondaryPrivateIpAddressCount",
                    "InterfaceType",
                    "ConnectionTrackingSpecification",
                    "Operator",
                ],
                "one private IPv4 address per interface",
            )?;
            let _ = r.opt("ClientToken");
            InterfaceRequest::Create(CreateInterfaceInput {
                subnet_id: r.required("SubnetId")?,
                private_ip: r.opt("PrivateIpAddress").filter(|s| !s.is_empty()),
                group_ids: r.list("SecurityGroupId", MAX_IDS)?,
                description: r.opt("Description"),
                tags: tag_pairs(&r.tag_specifications("network-interface")?),
            })
        }
        "DescribeNetworkInterfaces" => {
            let _ = (
                r.opt("MaxResults"),
                r.opt("NextToken"),
                r.opt("IncludeManagedResources"),
            );
            InterfaceRequest::Describe {
                ids: r.list("NetworkInterfaceId", MAX_IDS)?,
                filters: r.filters(None)?,
            }
        }
        "DeleteNetworkInterface" => InterfaceRequest::Delete {
            id: r.required("NetworkInterfaceId")?,
        },
        "AttachNetworkInterface" => {
            unsupported(
                r,
                &["NetworkCardIndex", "EnaSrdSpecification", "EnaQueueCount"],
                "one network card",
            )?;
            let id = r.required("NetworkInterfaceId")?;
            let instance = r.required("InstanceId")?;
            let device_index = r
                .int("DeviceIndex", 0, 31)?
                .ok_or_else(|| Ec2Error::missing("DeviceIndex"))?;
            InterfaceRequest::Attach {
                id,
                instance,
                device_index,
            }
        }
        "DetachNetworkInterface" => {
            let _ = r.bool("Force")?;
            InterfaceRequest::Detach {
                attachment: r.required("AttachmentId")?,
            }
        }
        _ => {
            unsupported(
                r,
                &[
                    "SourceDestCheck",
                    "EnaSrdSpecification",
                    "EnablePrimaryIpv6",
                    "ConnectionTrackingSpecification",
                    "AssociatePublicIpAddress",
                    "AssociatedSubnetId",
                ],
                "only SecurityGroupId.N, Description and Attachment.DeleteOnTermination can be modified",
            )?;
            let id = r.required("NetworkInterfaceId")?;
            let groups = r.list("SecurityGroupId", MAX_IDS)?;
            let description = r.opt("Description.Value");
            let attachment = r.opt("Attachment.AttachmentId");
            let delete = r.bool("Attachment.DeleteOnTermination")?;
            let change = match (groups.is_empty(), description) {
                (true, None) if attachment.is_some() || delete.is_some() => {
                    InterfaceChange::DeleteOnTermination {
                        attachment: attachment
                            .ok_or_else(|| Ec2Error::missing("Attachment.AttachmentId"))?,
                        delete: delete
                            .ok_or_else(|| Ec2Error::missing("Attachment.DeleteOnTermination"))?,
                    }
                }
                _ if attachment.is_some() || delete.is_some() => {
                    return Err(Ec2Error::new(
                        ErrorCode::InvalidParameterCombination,
                        "Only one attribute can be modified at a time",
                    ))
                }
                (false, None) => InterfaceChange::Groups(groups),
                (true, Some(d)) => InterfaceChange::Description(d),
                (false, Some(_)) => {
                    return Err(Ec2Error::new(
                        ErrorCode::InvalidParameterCombination,
                        "Only one attribute can be modified at a time",
                    ))
                }
                (true, None) => return Err(Ec2Error::missing("SecurityGroupId")),
            };
            InterfaceRequest::Modify { id, change }
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
    req: InterfaceRequest,
) -> Result<String, Ec2Error> {
    let mut w = XmlWriter::response(action, rid);
    match req {
        InterfaceRequest::Create(input) => {
            let e = d.create_network_interface(caller, &input).await?;
            let names = d.group_names(caller, &e.security_group_ids).await?;
            w.elem("networkInterface", |w| interface_xml(w, &e, &names));
        }
        InterfaceRequest::Describe { ids, filters } => {
            let all = d
                .describe_network_interfaces(caller, &ids, &domain_filters(filters))
                .await?;
            let groups: Vec<_> = all
                .iter()
                .flat_map(|e| e.security_group_ids.iter().cloned())
                .collect();
            let names = d.group_names(caller, &groups).await?;
            w.list("networkInterfaceSet", &all, |w, e| {
                interface_xml(w, e, &names)
            });
        }
        InterfaceRequest::Delete { id } => {
            d.delete_network_interface(caller, &id).await?;
            return Ok(return_true(action, rid));
        }
        InterfaceRequest::Attach {
            id,
            instance,
            device_index,
        } => {
            let a = d
                .attach_network_interface(caller, &id, &instance, device_index)
                .await?;
            w.leaf("attachmentId", a);
            w.leaf("networkCardIndex", 0);
        }
        InterfaceRequest::Detach { attachment } => {
            d.detach_network_interface(caller, &attachment).await?;
            return Ok(return_true(action, rid));
        }
        InterfaceRequest::Modify { id, change } => {
            d.modify_network_interface_attribute(caller, &id, &change)
                .await?;
            return Ok(return_true(action, rid));
        }
    }
    Ok(w.finish())
}

/// One `networkInterface` (EC2's `NetworkInterface` shape).
fn interface_xml(
    w: &mut XmlWriter,
    e: &NetworkInterface,
    names: &std::collections::BTreeMap<String, String>,
) {
    w.leaf("networkInterfaceId", &e.id);
    w.leaf("subnetId", &e.subnet_id);
    w.leaf("vpcId", &e.vpc_id);
    w.leaf("availabilityZone", &e.availability_zone);
    w.leaf("description", &e.description);
    w.leaf("ownerId", &e.account);
    w.bool("requesterManaged", false);
    w.leaf("status", e.status());
    w.leaf("macAddress", &e.mac);
    w.leaf("privateIpAddress", &e.private_ip);
    w.bool("sourceDestCheck", true);
    w.list("groupSet", &e.security_group_ids, |w, g| {
        w.leaf("groupId", g);
        w.leaf_opt("groupName", names.get(g.as_str()));
    });
    if let Some(a) = &e.attachment {
        w.elem("attachment", |w| {
            w.leaf("attachmentId", &a.id);
            w.leaf("instanceId", &a.instance_id);
            w.leaf("instanceOwnerId", &e.account);
            w.leaf("deviceIndex", a.device_index);
            w.leaf("networkCardIndex", 0);
            w.leaf("status", "attached");
            w.time("attachTime", time_ms(a.attached_ms));
            w.bool("deleteOnTermination", a.delete_on_termination);
        });
    }
    tag_set(w, &e.tags);
    w.list("privateIpAddressesSet", [&e.private_ip], |w, ip| {
        w.leaf("privateIpAddress", ip);
        w.bool("primary", true);
    });
    w.empty("ipv6AddressesSet");
    w.leaf("interfaceType", "interface");
}
