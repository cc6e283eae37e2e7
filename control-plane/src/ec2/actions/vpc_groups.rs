//! Security group actions: CreateSecurityGroup, DescribeSecurityGroups,
//! DeleteSecurityGroup, Authorize/RevokeSecurityGroupIngress/Egress and
//! DescribeSecurityGroupRules. `IpPermissions.N` are read as botocore
//! serialises them (`IpProtocol`, `FromPort`, `ToPort`, `IpRanges.M.CidrIp`,
//! `Groups.M.GroupId`; `UserIdGroupPairs.M.GroupId` is accepted too), and
//! the flat legacy form (`IpProtocol`, `FromPort`, `ToPort`, `CidrIp`,
//! `SourceSecurityGroupName`) as one permission.

use super::super::error::{Ec2Error, ErrorCode};
use super::super::query::{Filter, Reader};
use super::super::xml::XmlWriter;
use super::vpcs::tag_set;
use super::{domain_filters, return_true, tag_pairs};
use crate::domain::vpc::groups::{permissions, GroupRef, RuleView};
use crate::domain::vpc::rules::{Direction, PeerInput, PermissionInput};
use crate::domain::vpc::{RuleSource, SecurityGroup, SgRule};
use crate::domain::{Caller, Domain};
use crate::ec2::requests::MAX_IDS;

/// Most permissions, and peers per permission, in one request.
const MAX_PERMISSIONS: usize = 100;

/// A parsed security group request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRequest {
    /// CreateSecurityGroup.
    Create {
        /// `GroupName`.
        name: String,
        /// `GroupDescription`.
        description: String,
        /// `VpcId` (absent: the default VPC).
        vpc_id: Option<String>,
        /// Tags.
        tags: Vec<(String, String)>,
    },
    /// DescribeSecurityGroups.
    Describe {
        /// `GroupId.N`.
        ids: Vec<String>,
        /// `GroupName.N`.
        names: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
    /// DeleteSecurityGroup.
    Delete(GroupRef),
    /// Authorize*.
    Authorize {
        /// The group.
        group: GroupRef,
        /// Ingress or egress.
        direction: Direction,
        /// The permissions.
        perms: Vec<PermissionInput>,
    },
    /// Revoke*.
    Revoke {
        /// The group.
        group: GroupRef,
        /// Ingress or egress.
        direction: Direction,
        /// The permissions.
        perms: Vec<PermissionInput>,
        /// `SecurityGroupRuleId.N`.
        rule_ids: Vec<String>,
    },
    /// DescribeSecurityGroupRules.
    DescribeRules {
        /// `SecurityGroupRuleId.N`.
        ids: Vec<String>,
        /// Filters.
        filters: Vec<Filter>,
    },
}

fn group_ref(r: &mut Reader) -> Result<GroupRef, Ec2Error> {
    let id = r.opt("GroupId").filter(|s| !s.is_empty());
    let name = r.opt("GroupName").filter(|s| !s.is_empty());
    match (id, name) {
        (Some(id), _) => Ok(GroupRef::Id(id)),
        (None, Some(n)) => Ok(GroupRef::Name(n)),
        (None, None) => Err(Ec2Error::missing("GroupId")),
    }
}

fn port(r: &mut Reader, key: &str) -> Result<Option<i32>, Ec2Error> {
    match r.opt(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i32>().map(Some).map_err(|_| {
            Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter {key} is invalid. Expected an integer."
            ))
        }),
    }
}

fn peers(r: &mut Reader, prefix: &str, field: &str) -> Result<Vec<PeerInput>, Ec2Error> {
    let idx = r.indices(prefix)?;
    if idx.len() > MAX_PERMISSIONS {
        return Err(Ec2Error::invalid_value(format!(
            "The parameter {prefix} accepts at most {MAX_PERMISSIONS} values"
        )));
    }
    let mut out = Vec::new();
    for n in idx {
        out.push(PeerInput {
            value: r.required(&format!("{prefix}.{n}.{field}"))?,
            description: r
                .opt(&format!("{prefix}.{n}.Description"))
                .unwrap_or_default(),
        });
        // The owner of a peer group is the caller (no cross-account pairs).
        let _ = r.opt(&format!("{prefix}.{n}.UserId"));
    }
    Ok(out)
}

fn ip_permissions(r: &mut Reader) -> Result<Vec<PermissionInput>, Ec2Error> {
    let idx = r.indices("IpPermissions")?;
    if idx.len() > MAX_PERMISSIONS {
        return Err(Ec2Error::invalid_value(format!(
            "At most {MAX_PERMISSIONS} IpPermissions may be given"
        )));
    }
    let mut out = Vec::new();
    for n in idx {
        let p = format!("IpPermissions.{n}");
        for unsupported in ["Ipv6Ranges", "PrefixListIds"] {
            if !r.indices(&format!("{p}.{unsupported}"))?.is_empty() {
                return Err(Ec2Error::new(
                    ErrorCode::Unsupported,
                    format!("{unsupported} are not supported by this endpoint (IPv4 only)"),
                ));
            }
        }
        let mut groups = peers(r, &format!("{p}.Groups"), "GroupId")?;
        groups.extend(peers(r, &format!("{p}.UserIdGroupPairs"), "GroupId")?);
        out.push(PermissionInput {
            protocol: r.required(&format!("{p}.IpProtocol"))?,
            from_port: port(r, &format!("{p}.FromPort"))?,
            to_port: port(r, &format!("{p}.ToPort"))?,
            cidrs: peers(r, &format!("{p}.IpRanges"), "CidrIp")?,
            groups,
        });
    }
    // The flat legacy form: one permission.
    if let Some(proto) = r.opt("IpProtocol") {
        let mut cidrs = Vec::new();
        if let Some(c) = r.opt("CidrIp") {
            cidrs.push(PeerInput {
                value: c,
                description: String::new(),
            });
        }
        let mut groups = Vec::new();
        if let Some(g) = r.opt("SourceSecurityGroupId") {
            groups.push(PeerInput {
                value: g,
                description: String::new(),
            });
        }
        out.push(PermissionInput {
            protocol: proto,
            from_port: port(r, "FromPort")?,
            to_port: port(r, "ToPort")?,
            cidrs,
            groups,
        });
    }
    Ok(out)
}

/// Parses a security group action (the rest of [`super::vpcs::ACTIONS`]).
pub fn parse(action: &str, r: &mut Reader) -> Result<(&'static str, GroupRequest), Ec2Error> {
    let dir = |a: &str| {
        if a.ends_with("Egress") {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    };
    Ok(match action {
        "CreateSecurityGroup" => (
            "CreateSecurityGroup",
            GroupRequest::Create {
                name: r.required("GroupName")?,
                description: r.required("GroupDescription")?,
                vpc_id: r.opt("VpcId").filter(|s| !s.is_empty()),
                tags: tag_pairs(&r.tag_specifications("security-group")?),
            },
        ),
        "DescribeSecurityGroups" => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            (
                "DescribeSecurityGroups",
                GroupRequest::Describe {
                    ids: r.list("GroupId", MAX_IDS)?,
                    names: r.list("GroupName", MAX_IDS)?,
                    filters: r.filters(None)?,
                },
            )
        }
        "DeleteSecurityGroup" => ("DeleteSecurityGroup", GroupRequest::Delete(group_ref(r)?)),
        "AuthorizeSecurityGroupIngress" | "AuthorizeSecurityGroupEgress" => {
            let _ = r.tag_specifications("security-group-rule")?;
            (
                if action.ends_with("Egress") {
                    "AuthorizeSecurityGroupEgress"
                } else {
                    "AuthorizeSecurityGroupIngress"
                },
                GroupRequest::Authorize {
                    group: group_ref(r)?,
                    direction: dir(action),
                    perms: ip_permissions(r)?,
                },
            )
        }
        "RevokeSecurityGroupIngress" | "RevokeSecurityGroupEgress" => (
            if action.ends_with("Egress") {
                "RevokeSecurityGroupEgress"
            } else {
                "RevokeSecurityGroupIngress"
            },
            GroupRequest::Revoke {
                group: group_ref(r)?,
                direction: dir(action),
                perms: ip_permissions(r)?,
                rule_ids: r.list("SecurityGroupRuleId", MAX_IDS)?,
            },
        ),
        "DescribeSecurityGroupRules" => {
            let _ = (r.opt("MaxResults"), r.opt("NextToken"));
            (
                "DescribeSecurityGroupRules",
                GroupRequest::DescribeRules {
                    ids: r.list("SecurityGroupRuleId", MAX_IDS)?,
                    filters: r.filters(None)?,
                },
            )
        }
        other => {
            return Err(Ec2Error::new(
                ErrorCode::InvalidAction,
                format!("The action {other} is not valid for this web service."),
            ))
        }
    })
}

/// Runs a parsed security group request.
pub async fn handle(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    action: &'static str,
    req: GroupRequest,
) -> Result<String, Ec2Error> {
    let region = d.config().region.clone();
    match req {
        GroupRequest::Create {
            name,
            description,
            vpc_id,
            tags,
        } => {
            let g = d
                .create_security_group(caller, &name, &description, vpc_id.as_deref(), &tags)
                .await?;
            let mut w = XmlWriter::response(action, rid);
            w.bool("return", true);
            w.leaf("groupId", &g.id);
            w.leaf("securityGroupArn", arn(&region, &g));
            tag_set(&mut w, &g.tags);
            Ok(w.finish())
        }
        GroupRequest::Describe {
            ids,
            names,
            filters,
        } => {
            let groups = d
                .describe_security_groups(caller, &ids, &names, &domain_filters(filters))
                .await?;
            let mut w = XmlWriter::response(action, rid);
            w.list("securityGroupInfo", &groups, |w, g| {
                group_xml(w, &region, g)
            });
            Ok(w.finish())
        }
        GroupRequest::Delete(g) => {
            d.delete_security_group(caller, &g).await?;
            let mut w = XmlWriter::response(action, rid);
            w.bool("return", true);
            if let GroupRef::Id(id) = g {
                w.leaf("groupId", id);
            }
            Ok(w.finish())
        }
        GroupRequest::Authorize {
            group,
            direction,
            perms,
        } => {
            let (gid, added) = d
                .authorize_security_group(caller, &group, direction, &perms)
                .await?;
            let account = caller.account()?;
            let mut w = XmlWriter::response(action, rid);
            w.bool("return", true);
            w.list("securityGroupRuleSet", &added, |w, r| {
                rule_xml(
                    w,
                    &RuleView {
                        group_id: gid.clone(),
                        account: account.clone(),
                        is_egress: direction == Direction::Egress,
                        rule: r.clone(),
                    },
                )
            });
            Ok(w.finish())
        }
        GroupRequest::Revoke {
            group,
            direction,
            perms,
            rule_ids,
        } => {
            d.revoke_security_group(caller, &group, direction, &perms, &rule_ids)
                .await?;
            Ok(return_true(action, rid))
        }
        GroupRequest::DescribeRules { ids, filters } => {
            let rules = d
                .describe_security_group_rules(caller, &ids, &domain_filters(filters))
                .await?;
            let mut w = XmlWriter::response(action, rid);
            w.list("securityGroupRuleSet", &rules, rule_xml);
            Ok(w.finish())
        }
    }
}

fn arn(region: &str, g: &SecurityGroup) -> String {
    format!("arn:aws:ec2:{region}:{}:security-group/{}", g.account, g.id)
}

fn permissions_xml(w: &mut XmlWriter, name: &'static str, g: &SecurityGroup, list: &[SgRule]) {
    w.list(name, permissions(list), |w, ((proto, from, to), rules)| {
        w.leaf("ipProtocol", &proto);
        w.leaf_opt("fromPort", from);
        w.leaf_opt("toPort", to);
        let groups: Vec<(&str, &str)> = rules
            .iter()
            .filter_map(|r| match &r.peer {
                RuleSource::Group(id) => Some((id.as_str(), r.description.as_str())),
                RuleSource::Cidr(_) => None,
            })
            .collect();
        w.list("groups", groups, |w, (id, desc)| {
            w.leaf("groupId", id);
            w.leaf("userId", &g.account);
            if !desc.is_empty() {
                w.leaf("description", desc);
            }
        });
        let cidrs: Vec<(&str, &str)> = rules
            .iter()
            .filter_map(|r| match &r.peer {
                RuleSource::Cidr(c) => Some((c.as_str(), r.description.as_str())),
                RuleSource::Group(_) => None,
            })
            .collect();
        w.list("ipRanges", cidrs, |w, (c, desc)| {
            w.leaf("cidrIp", c);
            if !desc.is_empty() {
                w.leaf("description", desc);
            }
        });
        w.empty("ipv6Ranges");
        w.empty("prefixListIds");
    });
}

fn group_xml(w: &mut XmlWriter, region: &str, g: &SecurityGroup) {
    w.leaf("ownerId", &g.account);
    w.leaf("groupId", &g.id);
    w.leaf("groupName", &g.name);
    w.leaf("groupDescription", &g.description);
    w.leaf("vpcId", &g.vpc_id);
    w.leaf("securityGroupArn", arn(region, g));
    permissions_xml(w, "ipPermissions", g, &g.ingress);
    permissions_xml(w, "ipPermissionsEgress", g, &g.egress);
    tag_set(w, &g.tags);
}

fn rule_xml(w: &mut XmlWriter, v: &RuleView) {
    let r = &v.rule;
    w.leaf("securityGroupRuleId", &r.id);
    w.leaf("groupId", &v.group_id);
    w.leaf("groupOwnerId", &v.account);
    w.bool("isEgress", v.is_egress);
    w.leaf("ipProtocol", &r.protocol);
    w.leaf("fromPort", r.from_port.unwrap_or(-1));
    w.leaf("toPort", r.to_port.unwrap_or(-1));
    match &r.peer {
        RuleSource::Cidr(c) => {
            w.leaf("cidrIpv4", c);
        }
        RuleSource::Group(id) => {
            w.elem("referencedGroupInfo", |w| {
                w.leaf("groupId", id);
                w.leaf("userId", &v.account);
            });
        }
    }
    if !r.description.is_empty() {
        w.leaf("description", &r.description);
    }
    w.empty("tagSet");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ec2::requests::Request;
    use crate::ec2::ErrorCode;

    fn parse(pairs: &[(&str, &str)]) -> Result<Request, Ec2Error> {
        let mut form: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        form.insert("Version".into(), "2016-11-15".into());
        Request::parse(form)
    }

    #[test]
    fn ip_permissions_parse_as_botocore_sends_them() {
        let r = parse(&[
            ("Action", "AuthorizeSecurityGroupIngress"),
            ("GroupId", "sg-0123456789abcdef0"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.ToPort", "22"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ("IpPermissions.1.IpRanges.1.Description", "ssh"),
            ("IpPermissions.1.Groups.1.GroupId", "sg-1111111111111111a"),
            ("IpPermissions.2.IpProtocol", "icmp"),
            ("IpPermissions.2.FromPort", "-1"),
            ("IpPermissions.2.ToPort", "-1"),
            (
                "IpPermissions.2.UserIdGroupPairs.1.GroupId",
                "sg-2222222222222222b",
            ),
        ])
        .unwrap();
        let Request::Vpc(call) = r else {
            panic!("not a VPC request")
        };
        let VpcRequestView::Group(GroupRequest::Authorize {
            group,
            direction,
            perms,
        }) = call.req.into()
        else {
            panic!("not an authorize")
        };
        assert_eq!(group, GroupRef::Id("sg-0123456789abcdef0".into()));
        assert_eq!(direction, Direction::Ingress);
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[0].from_port, Some(22));
        assert_eq!(perms[0].cidrs[0].description, "ssh");
        assert_eq!(perms[0].groups[0].value, "sg-1111111111111111a");
        assert_eq!(perms[1].from_port, Some(-1));
        assert_eq!(perms[1].groups[0].value, "sg-2222222222222222b");
    }

    #[test]
    fn unsupported_and_unknown_parameters_are_refused() {
        let base = [
            ("Action", "AuthorizeSecurityGroupEgress"),
            ("GroupId", "sg-0123456789abcdef0"),
            ("IpPermissions.1.IpProtocol", "-1"),
        ];
        let mut v6 = base.to_vec();
        v6.push(("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "::/0"));
        assert_eq!(parse(&v6).unwrap_err().code, ErrorCode::Unsupported);
        let mut unknown = base.to_vec();
        unknown.push(("IpPermissions.1.Bogus", "1"));
        assert_eq!(
            parse(&unknown).unwrap_err().code,
            ErrorCode::UnknownParameter
        );
        let mut port = base.to_vec();
        port.push(("IpPermissions.1.FromPort", "eighty"));
        assert_eq!(
            parse(&port).unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(
            parse(&[("Action", "DeleteSecurityGroup")])
                .unwrap_err()
                .code,
            ErrorCode::MissingParameter
        );
    }

    /// The request without its wrapper (test convenience).
    enum VpcRequestView {
        Group(GroupRequest),
        Other,
    }

    impl From<super::super::vpcs::VpcRequest> for VpcRequestView {
        fn from(r: super::super::vpcs::VpcRequest) -> Self {
            match r {
                super::super::vpcs::VpcRequest::Group(g) => VpcRequestView::Group(g),
                _ => VpcRequestView::Other,
            }
        }
    }
}
