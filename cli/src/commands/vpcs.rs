//! `nubis vpcs|subnets|security-groups ...`: the Networking API
//! (`nubis.vpc.v1`), with the same EC2 error codes as the EC2 actions.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use nubis_proto::vpc::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{tag_arg, TagArg};
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, Tabular};

/// `nubis vpcs ...`.
#[derive(Debug, Subcommand)]
pub enum VpcsCmd {
    /// Create a VPC (a /16 to /28 IPv4 block).
    Create {
        /// CIDR block, e.g. 10.0.0.0/16.
        cidr_block: String,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// List your VPCs (the default VPC included).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete a VPC without subnets or groups of its own.
    Delete {
        /// VPC id.
        vpc_id: String,
    },
}

/// `nubis subnets ...`.
#[derive(Debug, Subcommand)]
pub enum SubnetsCmd {
    /// Create a subnet of a VPC in one zone.
    Create {
        /// VPC id.
        vpc_id: String,
        /// CIDR block inside the VPC's, /16 to /28.
        cidr_block: String,
        /// Availability zone (name).
        #[arg(long)]
        zone: String,
        /// A tag, KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// List your subnets.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete a subnet without instances.
    Delete {
        /// Subnet id.
        subnet_id: String,
    },
    /// Whether instances launched here get a public address.
    SetMapPublicIp {
        /// Subnet id.
        subnet_id: String,
        /// on | off.
        #[arg(value_parser = ["on", "off"])]
        value: String,
    },
}

/// `nubis security-groups ...`.
#[derive(Debug, Subcommand)]
pub enum SecurityGroupsCmd {
    /// Create a group (no ingress; all egress, as EC2).
    Create {
        /// Group name, unique in its VPC.
        name: String,
        /// Description.
        #[arg(long)]
        description: String,
        /// VPC id (default: your default VPC).
        #[arg(long)]
        vpc: Option<String>,
    },
    /// List your groups with their rules.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete a group no instance or other group's rule uses.
    Delete {
        /// Group id.
        group_id: String,
    },
    /// Allow traffic: one protocol and port range, from (to, with --egress)
    /// CIDRs and/or other groups' members.
    Authorize(RuleArgs),
    /// Remove rules given the same way as `authorize`.
    Revoke(RuleArgs),
}

/// Filters of a `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// EC2 filter NAME=VALUE[,VALUE...] (repeatable), e.g. vpc-id=vpc-0123...
    #[arg(long = "filter", value_name = "NAME=VALUES")]
    pub filters: Vec<String>,
}

/// One permission of `authorize`/`revoke`.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Group id.
    pub group_id: String,
    /// Outbound rules instead of inbound.
    #[arg(long)]
    pub egress: bool,
    /// tcp | udp | icmp | all | a protocol number.
    #[arg(long)]
    pub protocol: String,
    /// Port or range (tcp/udp: 80 or 8000-8080; icmp: TYPE or TYPE-CODE).
    #[arg(long)]
    pub port: Option<String>,
    /// A peer CIDR (repeatable).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// A peer security group (repeatable).
    #[arg(long = "source-group")]
    pub groups: Vec<String>,
}

/// A VPC.
#[derive(Debug, Serialize)]
pub struct VpcView {
    vpc_id: String,
    cidr_block: String,
    is_default: bool,
    default_security_group_id: String,
    tags: BTreeMap<String, String>,
}

impl Tabular for VpcView {
    fn headers() -> &'static [&'static str] {
        &["VPC_ID", "CIDR", "DEFAULT", "DEFAULT_GROUP"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.vpc_id.clone(),
            self.cidr_block.clone(),
            self.is_default.to_string(),
            self.default_security_group_id.clone(),
        ]
    }
}

pub(crate) fn tags(t: &[pb::Tag]) -> BTreeMap<String, String> {
    t.iter().map(|t| (t.key.clone(), t.value.clone())).collect()
}

pub(crate) fn pb_tags(t: &[TagArg]) -> Vec<pb::Tag> {
    t.iter()
        .map(|t| pb::Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

impl From<pb::Vpc> for VpcView {
    fn from(v: pb::Vpc) -> Self {
        Self {
            tags: tags(&v.tags),
            vpc_id: v.vpc_id,
            cidr_block: v.cidr_block,
            is_default: v.is_default,
            default_security_group_id: v.default_security_group_id,
        }
    }
}

/// A subnet.
#[derive(Debug, Serialize)]
pub struct SubnetView {
    subnet_id: String,
    vpc_id: String,
    cidr_block: String,
    availability_zone: String,
    available_ip_address_count: u64,
    default_for_az: bool,
    map_public_ip_on_launch: bool,
    tags: BTreeMap<String, String>,
}

impl Tabular for SubnetView {
    fn headers() -> &'static [&'static str] {
        &["SUBNET_ID", "VPC_ID", "CIDR", "ZONE", "FREE", "DEFAULT"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.subnet_id.clone(),
            self.vpc_id.clone(),
            self.cidr_block.clone(),
            self.availability_zone.clone(),
            self.available_ip_address_count.to_string(),
            self.default_for_az.to_string(),
        ]
    }
}

impl From<pb::Subnet> for SubnetView {
    fn from(s: pb::Subnet) -> Self {
        Self {
            tags: tags(&s.tags),
            subnet_id: s.subnet_id,
            vpc_id: s.vpc_id,
            cidr_block: s.cidr_block,
            availability_zone: s.availability_zone,
            available_ip_address_count: s.available_ip_address_count,
            default_for_az: s.default_for_az,
            map_public_ip_on_launch: s.map_public_ip_on_launch,
        }
    }
}

/// A rule, flat.
#[derive(Debug, Serialize)]
pub struct RuleView {
    rule_id: String,
    protocol: String,
    ports: String,
    peer: String,
    description: String,
}

fn rule_view(r: pb::Rule) -> RuleView {
    let ports = match (r.from_port, r.to_port) {
        (Some(f), Some(t)) if f == t => f.to_string(),
        (Some(f), Some(t)) => format!("{f}-{t}"),
        _ => "all".into(),
    };
    let peer = match r.peer {
        Some(pb::rule::Peer::Cidr(c)) => c,
        Some(pb::rule::Peer::GroupId(g)) => g,
        None => String::new(),
    };
    RuleView {
        rule_id: r.rule_id,
        protocol: if r.protocol == "-1" {
            "all".into()
        } else {
            r.protocol
        },
        ports,
        peer,
        description: r.description,
    }
}

/// A security group.
#[derive(Debug, Serialize)]
pub struct GroupView {
    group_id: String,
    group_name: String,
    vpc_id: String,
    description: String,
    ingress: Vec<RuleView>,
    egress: Vec<RuleView>,
    tags: BTreeMap<String, String>,
}

impl Tabular for GroupView {
    fn headers() -> &'static [&'static str] {
        &["GROUP_ID", "NAME", "VPC_ID", "INGRESS", "EGRESS"]
    }
    fn row(&self) -> Vec<String> {
        let rules = |rs: &[RuleView]| {
            rs.iter()
                .map(|r| format!("{}/{} {}", r.protocol, r.ports, r.peer))
                .collect::<Vec<_>>()
                .join("; ")
        };
        vec![
            self.group_id.clone(),
            self.group_name.clone(),
            self.vpc_id.clone(),
            rules(&self.ingress),
            rules(&self.egress),
        ]
    }
}

impl From<pb::SecurityGroup> for GroupView {
    fn from(g: pb::SecurityGroup) -> Self {
        Self {
            tags: tags(&g.tags),
            group_id: g.group_id,
            group_name: g.group_name,
            vpc_id: g.vpc_id,
            description: g.description,
            ingress: g.ingress.into_iter().map(rule_view).collect(),
            egress: g.egress.into_iter().map(rule_view).collect(),
        }
    }
}

pub(crate) fn filters(args: &ListArgs) -> Result<Vec<pb::Filter>, CliError> {
    args.filters
        .iter()
        .map(|raw| {
            let (name, values) = raw
                .split_once('=')
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--filter {raw:?} is not NAME=VALUE[,VALUE...] (e.g. vpc-id=vpc-0123456789abcdef0)"
                    ))
                })?;
            Ok(pb::Filter {
                name: name.to_string(),
                values: values.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// `80` → (80, 80); `8000-8080` → (8000, 8080); `-1` → (-1, -1) for ICMP.
fn port_range(s: &str) -> Result<(i32, i32), CliError> {
    let bad = || CliError::Usage(format!("--port {s:?} is not PORT or FROM-TO"));
    let parse = |p: &str| p.parse::<i32>().map_err(|_| bad());
    match s.strip_prefix('-').map_or(s, |_| "").split_once('-') {
        Some((f, t)) => Ok((parse(f)?, parse(t)?)),
        None => {
            let p = parse(s)?;
            Ok((p, p))
        }
    }
}

fn permission(a: &RuleArgs) -> Result<(pb::Direction, pb::Permission), CliError> {
    if a.cidrs.is_empty() && a.groups.is_empty() {
        return Err(CliError::Usage(
            "give at least one --cidr or --source-group".into(),
        ));
    }
    let protocol = if a.protocol == "all" {
        "-1".to_string()
    } else {
        a.protocol.clone()
    };
    let (from_port, to_port) = match &a.port {
        Some(p) => {
            let (f, t) = port_range(p)?;
            (Some(f), Some(t))
        }
        None => (None, None),
    };
    let peers = |v: &[String]| {
        v.iter()
            .map(|x| pb::Peer {
                value: x.clone(),
                description: String::new(),
            })
            .collect()
    };
    let direction = if a.egress {
        pb::Direction::Egress
    } else {
        pb::Direction::Ingress
    };
    Ok((
        direction,
        pb::Permission {
            protocol,
            from_port,
            to_port,
            cidrs: peers(&a.cidrs),
            group_ids: peers(&a.groups),
        },
    ))
}

/// Runs `nubis vpcs ...`.
pub async fn vpcs(ctx: &Ctx, cmd: VpcsCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        VpcsCmd::Create { cidr_block, tags } => {
            let v = c
                .create_vpc(pb::CreateVpcRequest {
                    cidr_block,
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .vpc
                .unwrap_or_default();
            emit(&render_record(ctx.format, &VpcView::from(v))?)
        }
        VpcsCmd::List(args) => {
            let r = c
                .describe_vpcs(pb::DescribeVpcsRequest {
                    vpc_ids: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<VpcView> = r.vpcs.into_iter().map(VpcView::from).collect();
            emit(&render_list(ctx.format, "vpcs", &views)?)
        }
        VpcsCmd::Delete { vpc_id } => {
            c.delete_vpc(pb::DeleteVpcRequest {
                vpc_id: vpc_id.clone(),
            })
            .await?;
            eprintln!("deleted {vpc_id}");
            Ok(())
        }
    }
}

/// Runs `nubis subnets ...`.
pub async fn subnets(ctx: &Ctx, cmd: SubnetsCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        SubnetsCmd::Create {
            vpc_id,
            cidr_block,
            zone,
            tags,
        } => {
            let s = c
                .create_subnet(pb::CreateSubnetRequest {
                    vpc_id,
                    cidr_block,
                    availability_zone: zone,
                    availability_zone_id: String::new(),
                    tags: pb_tags(&tags),
                })
                .await?
                .into_inner()
                .subnet
                .unwrap_or_default();
            emit(&render_record(ctx.format, &SubnetView::from(s))?)
        }
        SubnetsCmd::List(args) => {
            let r = c
                .describe_subnets(pb::DescribeSubnetsRequest {
                    subnet_ids: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<SubnetView> = r.subnets.into_iter().map(SubnetView::from).collect();
            emit(&render_list(ctx.format, "subnets", &views)?)
        }
        SubnetsCmd::Delete { subnet_id } => {
            c.delete_subnet(pb::DeleteSubnetRequest {
                subnet_id: subnet_id.clone(),
            })
            .await?;
            eprintln!("deleted {subnet_id}");
            Ok(())
        }
        SubnetsCmd::SetMapPublicIp { subnet_id, value } => {
            c.modify_subnet_attribute(pb::ModifySubnetAttributeRequest {
                subnet_id,
                map_public_ip_on_launch: value == "on",
            })
            .await?;
            Ok(())
        }
    }
}

/// Runs `nubis security-groups ...`.
pub async fn security_groups(ctx: &Ctx, cmd: SecurityGroupsCmd) -> Result<(), CliError> {
    let mut c = ctx.client().await?.networking;
    match cmd {
        SecurityGroupsCmd::Create {
            name,
            description,
            vpc,
        } => {
            let g = c
                .create_security_group(pb::CreateSecurityGroupRequest {
                    group_name: name,
                    description,
                    vpc_id: vpc.unwrap_or_default(),
                    tags: Vec::new(),
                })
                .await?
                .into_inner()
                .security_group
                .unwrap_or_default();
            emit(&render_record(ctx.format, &GroupView::from(g))?)
        }
        SecurityGroupsCmd::List(args) => {
            let r = c
                .describe_security_groups(pb::DescribeSecurityGroupsRequest {
                    group_ids: Vec::new(),
                    group_names: Vec::new(),
                    filters: filters(&args)?,
                })
                .await?
                .into_inner();
            let views: Vec<GroupView> =
                r.security_groups.into_iter().map(GroupView::from).collect();
            emit(&render_list(ctx.format, "security_groups", &views)?)
        }
        SecurityGroupsCmd::Delete { group_id } => {
            c.delete_security_group(pb::DeleteSecurityGroupRequest {
                group_id: group_id.clone(),
            })
            .await?;
            eprintln!("deleted {group_id}");
            Ok(())
        }
        SecurityGroupsCmd::Authorize(a) => {
            let (direction, p) = permission(&a)?;
            let r = c
                .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
                    group_id: a.group_id,
                    direction: direction as i32,
                    permissions: vec![p],
                })
                .await?
                .into_inner();
            let views: Vec<RuleView> = r.rules.into_iter().map(rule_view).collect();
            emit(&render_list(ctx.format, "rules", &views)?)
        }
        SecurityGroupsCmd::Revoke(a) => {
            let (direction, p) = permission(&a)?;
            c.revoke_security_group(pb::RevokeSecurityGroupRequest {
                group_id: a.group_id,
                direction: direction as i32,
                permissions: vec![p],
                rule_ids: Vec::new(),
            })
            .await?;
            Ok(())
        }
    }
}

impl Tabular for RuleView {
    fn headers() -> &'static [&'static str] {
        &["RULE_ID", "PROTOCOL", "PORTS", "PEER"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.rule_id.clone(),
            self.protocol.clone(),
            self.ports.clone(),
            self.peer.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_permissions_parse() {
        assert_eq!(port_range("80").unwrap(), (80, 80));
        assert_eq!(port_range("8000-8080").unwrap(), (8000, 8080));
        assert_eq!(port_range("-1").unwrap(), (-1, -1));
        assert!(port_range("http").is_err());
        assert!(port_range("1-x").is_err());
        let a = RuleArgs {
            group_id: "sg-1".into(),
            egress: false,
            protocol: "all".into(),
            port: None,
            cidrs: vec![],
            groups: vec![],
        };
        assert!(permission(&a).is_err(), "a rule needs a peer");
        let a = RuleArgs {
            cidrs: vec!["10.0.0.0/8".into()],
            ..a
        };
        let (d, p) = permission(&a).unwrap();
        assert_eq!(d, pb::Direction::Ingress);
        assert_eq!(p.protocol, "-1");
        assert_eq!((p.from_port, p.to_port), (None, None));
    }
}
