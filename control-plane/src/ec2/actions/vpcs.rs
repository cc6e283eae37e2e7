//! VPC actions (EC2 2016-11-15): CreateVpc, DescribeVpcs, DeleteVpc,
//! CreateSubnet, DescribeSubnets, DeleteSubnet, ModifySubnetAttribute, and
//! the security group actions of [`super::vpc_groups`], the public
//! addressing actions of [`super::vpc_public`] and the network interface
//! actions of [`super::vpc_enis`]: their form parsing
//! ([`parse`], called by [`crate::ec2::requests::Request::parse`]) and
//! their XML over [`crate::domain::vpc`].

use super::super::error::{Ec2Error, ErrorCode};
use super::super::query::{Filter, Reader};
use super::super::xml::XmlWriter;
use super::vpc_enis;
use super::vpc_groups::{self, GroupRequest};
use super::vpc_public;
use super::{domain_filters, dry_run_ok, return_true, tag_pairs};
use crate::domain::vpc::subnets::{CreateSubnetInput, SubnetView};
use crate::domain::vpc::Vpc;
use crate::domain::{Caller, Domain};
use crate::ec2::requests::MAX_IDS;

/// The actions of this module and [`super::vpc_groups`] (those of
/// [`super::vpc_public`] are parsed here too).
pub const ACTIONS: [&str; 15] = [
    "CreateVpc",
    "DescribeVpcs",
    "DeleteVpc",
    "CreateSubnet",
    "DescribeSubnets",
    "DeleteSubnet",
    "ModifySubnetAttribute",
    "CreateSecurityGroup",
    "DescribeSecurityGroups",
    "DeleteSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "DescribeSecurityGroupRules",
];

/// A parsed VPC request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpcRequest {
    /// CreateVpc.
    CreateVpc {
        /// `CidrBlock`.
        cidr: String,
        /// Tags.
        tags: Vec<(String, String)>,
    },
    /// DescribeVpcs.
    DescribeVpcs {
        /// `VpcId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// DeleteVpc.
    DeleteVpc {
        /// `VpcId`.
        id: String,
    },
    /// CreateSubnet.
    CreateSubnet(CreateSubnetInput),
    /// DescribeSubnets.
    DescribeSubnets {
        /// `SubnetId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// DeleteSubnet.
    DeleteSubnet {
        /// `SubnetId`.
        id: String,
    },
    /// ModifySubnetAttribute (`MapPublicIpOnLaunch.Value`).
    ModifySubnetAttribute {
        /// `SubnetId`.
        id: String,
        /// The new value.
        map_public_ip_on_launch: bool,
    },
    /// A security group action.
    Group(GroupRequest),
    /// An Elastic IP, internet gateway or route table action.
    Public(vpc_public::PublicRequest),
    /// A network interface action.
    Interface(vpc_enis::InterfaceRequest),
}

/// A parsed request with its action name and `DryRun`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcCall {
    /// One of [`ACTIONS`].
    pub action: &'static str,
    /// The request.
    pub req: VpcRequest,
    /// `DryRun`.
    pub dry_run: bool,
}

/// The parameters EC2 defines that this endpoint does not serve (IPv6,
/// dedicated tenancy, IPAM pools): refused rather than silently ignored.
fn refuse_unsupported(r: &mut Reader, names: &[&str]) -> Result<(), Ec2Error> {
    for n in names {
        if let Some(v) = r.opt(n) {
            let harmless = matches!((*n, v.as_str()), ("InstanceTenancy", "default"))
                || matches!(
                    (*n, v.to_ascii_lowercase().as_str()),
                    ("AmazonProvidedIpv6CidrBlock", "false")
                );
            if !harmless {
                return Err(Ec2Error::new(
                    ErrorCode::Unsupported,
                    format!("The parameter {n} is not supported by this endpoint (IPv4 VPCs with default tenancy only)"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses one of [`ACTIONS`].
pub fn parse(action: &str, r: &mut Reader) -> Result<VpcCall, Ec2Error> {
    let (name, req) = match action {
        "CreateVpc" => {
            refuse_unsupported(
                r,
                &[
                    "AmazonProvidedIpv6CidrBlock",
                    "InstanceTenancy",
                    "Ipv6CidrBlock",
                    "Ipv6Pool",
                    "Ipv4IpamPoolId",
                    "Ipv4NetmaskLength",
                ],
            )?;
            (
                "CreateVpc",
                VpcRequest::CreateVpc {
                    cidr: r.required("CidrBlock")?,
                    tags: tag_pairs(&r.tag_specifications("vpc")?),
                },
            )
        }
        "DescribeVpcs" => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            (
                "DescribeVpcs",
                VpcRequest::DescribeVpcs {
                    ids: r.list("VpcId", MAX_IDS)?,
                    filters: r.filters(None)?,
                },
            )
        }
        "DeleteVpc" => (
            "DeleteVpc",
            VpcRequest::DeleteVpc {
                id: r.required("VpcId")?,
            },
        ),
        "CreateSubnet" => {
            refuse_unsupported(r, &["Ipv6CidrBlock", "Ipv6Native", "OutpostArn"])?;
            (
                "CreateSubnet",
                VpcRequest::CreateSubnet(CreateSubnetInput {
                    vpc_id: r.required("VpcId")?,
                    cidr: r.required("CidrBlock")?,
                    availability_zone: r.opt("AvailabilityZone").filter(|s| !s.is_empty()),
                    availability_zone_id: r.opt("AvailabilityZoneId").filter(|s| !s.is_empty()),
                    tags: tag_pairs(&r.tag_specifications("subnet")?),
                }),
            )
        }
        "DescribeSubnets" => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            (
                "DescribeSubnets",
                VpcRequest::DescribeSubnets {
                    ids: r.list("SubnetId", MAX_IDS)?,
                    filters: r.filters(None)?,
                },
            )
        }
        "DeleteSubnet" => (
            "DeleteSubnet",
            VpcRequest::DeleteSubnet {
                id: r.required("SubnetId")?,
            },
        ),
        "ModifySubnetAttribute" => {
            let id = r.required("SubnetId")?;
            let Some(v) = r.bool("MapPublicIpOnLaunch.Value")? else {
                return Err(Ec2Error::new(
                    ErrorCode::Unsupported,
                    "Only the MapPublicIpOnLaunch attribute can be modified",
                ));
            };
            (
                "ModifySubnetAttribute",
                VpcRequest::ModifySubnetAttribute {
                    id,
                    map_public_ip_on_launch: v,
                },
            )
        }
        other if vpc_public::ACTIONS.contains(&other) => {
            let (name, p) = vpc_public::parse(other, r)?;
            (name, VpcRequest::Public(p))
        }
        other if vpc_enis::ACTIONS.contains(&other) => {
            let (name, p) = vpc_enis::parse(other, r)?;
            (name, VpcRequest::Interface(p))
        }
        other => {
            let (name, g) = vpc_groups::parse(other, r)?;
            (name, VpcRequest::Group(g))
        }
    };
    Ok(VpcCall {
        action: name,
        req,
        dry_run: r.dry_run()?,
    })
}

/// Runs a parsed request.
pub async fn handle(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    call: VpcCall,
) -> Result<String, Ec2Error> {
    if call.dry_run {
        caller.account()?;
        return dry_run_ok();
    }
    let action = call.action;
    match call.req {
        VpcRequest::CreateVpc { cidr, tags } => {
            let vpc = d.create_vpc(caller, &cidr, &tags).await?;
            let mut w = XmlWriter::response(action, rid);
            w.elem("vpc", |w| vpc_xml(w, &vpc));
            Ok(w.finish())
        }
        VpcRequest::DescribeVpcs { ids, filters } => {
            let vpcs = d
                .describe_vpcs(caller, &ids, &domain_filters(filters))
                .await?;
            let mut w = XmlWriter::response(action, rid);
            w.list("vpcSet", &vpcs, vpc_xml);
            Ok(w.finish())
        }
        VpcRequest::DeleteVpc { id } => {
            d.delete_vpc(caller, &id).await?;
            Ok(return_true(action, rid))
        }
        VpcRequest::CreateSubnet(input) => {
            let s = d.create_subnet(caller, input).await?;
            let view = d
                .describe_subnets(caller, &[s.id.to_string()], &[])
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Ec2Error::new(ErrorCode::InternalError, "the new subnet vanished")
                })?;
            let region = d.config().region.clone();
            let mut w = XmlWriter::response(action, rid);
            w.elem("subnet", |w| subnet_xml(w, &region, &view));
            Ok(w.finish())
        }
        VpcRequest::DescribeSubnets { ids, filters } => {
            let views = d
                .describe_subnets(caller, &ids, &domain_filters(filters))
                .await?;
            let region = d.config().region.clone();
            let mut w = XmlWriter::response(action, rid);
            w.list("subnetSet", &views, |w, v| subnet_xml(w, &region, v));
            Ok(w.finish())
        }
        VpcRequest::DeleteSubnet { id } => {
            d.delete_subnet(caller, &id).await?;
            Ok(return_true(action, rid))
        }
        VpcRequest::ModifySubnetAttribute {
            id,
            map_public_ip_on_launch,
        } => {
            d.set_map_public_ip(caller, &id, map_public_ip_on_launch)
                .await?;
            Ok(return_true(action, rid))
        }
        VpcRequest::Group(g) => vpc_groups::handle(d, caller, rid, action, g).await,
        VpcRequest::Public(p) => vpc_public::handle(d, caller, rid, action, p).await,
        VpcRequest::Interface(p) => vpc_enis::handle(d, caller, rid, action, p).await,
    }
}

/// Writes a `tagSet`.
pub(crate) fn tag_set<'a>(
    w: &mut XmlWriter,
    tags: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    w.list("tagSet", tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
}

fn vpc_xml(w: &mut XmlWriter, v: &Vpc) {
    w.leaf("vpcId", &v.id);
    w.leaf("ownerId", &v.account);
    w.leaf("state", "available");
    w.leaf("cidrBlock", &v.cidr);
    w.elem("cidrBlockAssociationSet", |w| {
        w.elem("item", |w| {
            w.leaf(
                "associationId",
                format!("vpc-cidr-assoc-{}", &v.id.as_str()["vpc-".len()..]),
            );
            w.leaf("cidrBlock", &v.cidr);
            w.elem("cidrBlockState", |w| {
                w.leaf("state", "associated");
            });
        });
    });
    w.empty("ipv6CidrBlockAssociationSet");
    w.leaf("dhcpOptionsId", "default");
    w.leaf("instanceTenancy", "default");
    w.bool("isDefault", v.is_default);
    tag_set(w, &v.tags);
}

fn subnet_xml(w: &mut XmlWriter, region: &str, v: &SubnetView) {
    let s = &v.subnet;
    w.leaf("subnetId", &s.id);
    w.leaf(
        "subnetArn",
        format!("arn:aws:ec2:{region}:{}:subnet/{}", s.account, s.id),
    );
    w.leaf("state", "available");
    w.leaf("ownerId", &s.account);
    w.leaf("vpcId", &s.vpc_id);
    w.leaf("cidrBlock", &s.cidr);
    w.empty("ipv6CidrBlockAssociationSet");
    w.leaf("availableIpAddressCount", v.available_ips);
    w.leaf("availabilityZone", &s.availability_zone);
    w.leaf("availabilityZoneId", &v.zone_id);
    w.bool("defaultForAz", s.default_for_az);
    w.bool("mapPublicIpOnLaunch", s.map_public_ip_on_launch);
    w.bool("assignIpv6AddressOnCreation", false);
    tag_set(w, &s.tags);
}
