//! Security group rules: validation of EC2 `IpPermissions` as EC2 checks
//! them (protocol names or numbers, TCP/UDP port ranges 0..=65535 with
//! FromPort <= ToPort, ICMP type/code -1..=255, IPv4 CIDR peers, group
//! peers) and their expansion into one [`SgRule`] per peer.

use super::{Cidr, RuleSource, SgRule};
use crate::error::{Error, Result};
use crate::ids::{SecurityGroupId, SecurityGroupRuleId};

/// Most rules per group and direction (EC2's default quota).
pub const MAX_RULES_PER_DIRECTION: usize = 60;
/// Longest rule description.
pub const MAX_DESCRIPTION: usize = 255;

/// Inbound or outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Inbound (`AuthorizeSecurityGroupIngress`).
    Ingress,
    /// Outbound (`AuthorizeSecurityGroupEgress`).
    Egress,
}

/// One peer of a permission with its description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInput {
    /// A CIDR (`IpRanges.N.CidrIp`) or a group id (`UserIdGroupPairs.N.GroupId`).
    pub value: String,
    /// `Description`.
    pub description: String,
}

/// One EC2 `IpPermission` as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionInput {
    /// `IpProtocol`.
    pub protocol: String,
    /// `FromPort`.
    pub from_port: Option<i32>,
    /// `ToPort`.
    pub to_port: Option<i32>,
    /// `IpRanges`.
    pub cidrs: Vec<PeerInput>,
    /// `UserIdGroupPairs` (group ids).
    pub groups: Vec<PeerInput>,
}

/// All traffic from the members of `group` (the default group's ingress).
pub fn all_from_group(group: &SecurityGroupId) -> SgRule {
    SgRule {
        id: SecurityGroupRuleId::generate(),
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        peer: RuleSource::Group(group.clone()),
        description: String::new(),
    }
}

/// All traffic to anywhere (every group's initial egress).
pub fn all_to_anywhere() -> SgRule {
    SgRule {
        id: SecurityGroupRuleId::generate(),
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        peer: RuleSource::Cidr("0.0.0.0/0".into()),
        description: String::new(),
    }
}

/// The canonical protocol: `tcp`, `udp`, `icmp`, `-1` or a number 0..=255.
pub fn protocol(p: &str) -> Result<String> {
    let lower = p.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => "icmp",
        "-1" | "all" => "-1",
        "icmpv6" | "58" => {
            return Err(Error::invalid(
                "IPv6 is not supported: IpProtocol icmpv6 cannot be used",
            ))
        }
        n if !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()) => {
            match n.parse::<u16>() {
                Ok(v) if v <= 255 => return Ok(v.to_string()),
                _ => return Err(bad_protocol(p)),
            }
        }
        _ => return Err(bad_protocol(p)),
    };
    Ok(canonical.into())
}

fn bad_protocol(p: &str) -> Error {
    Error::invalid(format!(
        "Invalid value '{p}' for IP protocol. Unknown protocol."
    ))
}

/// The port range stored for `protocol` (canonical) as EC2 validates it.
pub fn ports(
    protocol: &str,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<(Option<i32>, Option<i32>)> {
    match protocol {
        "tcp" | "udp" => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(Error::invalid(
                    "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange",
                ));
            };
            if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) {
                return Err(Error::invalid(format!(
                    "Invalid value '{f}-{t}' for portRange: ports are 0 to 65535"
                )));
            }
            if f > t {
                return Err(Error::invalid(format!(
                    "Invalid TCP/UDP port range: FromPort {f} is greater than ToPort {t}"
                )));
            }
            Ok((Some(f), Some(t)))
        }
        "icmp" => {
            let (Some(ty), Some(code)) = (from, to) else {
                return Err(Error::invalid(
                    "Invalid value 'Must specify both ICMP type and code' for icmpTypeCode",
                ));
            };
            if !(-1..=255).contains(&ty) || !(-1..=255).contains(&code) {
                return Err(Error::invalid(format!(
                    "Invalid ICMP type/code {ty}/{code}: each is -1 to 255"
                )));
            }
            if ty == -1 && code != -1 {
                return Err(Error::invalid(
                    "Invalid ICMP code: with ICMP type -1 (all) the code must be -1",
                ));
            }
            Ok((Some(ty), Some(code)))
        }
        // All traffic, or a protocol without ports: ports are not kept.
        _ => Ok((None, None)),
    }
}

fn description(d: &str) -> Result<String> {
    if d.chars().count() > MAX_DESCRIPTION || !d.chars().all(super::groups::allowed_char) {
        return Err(Error::invalid(format!(
            "Invalid rule description: at most {MAX_DESCRIPTION} characters of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{{}}!$*"
        )));
    }
    Ok(d.to_string())
}

/// Validates `perms` and expands them into one rule per peer, with fresh
/// ids. A permission without peers, or the same rule twice, is an error.
pub fn expand(perms: &[PermissionInput]) -> Result<Vec<SgRule>> {
    if perms.is_empty() {
        return Err(Error::missing("IpPermissions"));
    }
    let mut out: Vec<SgRule> = Vec::new();
    for p in perms {
        let proto = protocol(&p.protocol)?;
        let (from, to) = ports(&proto, p.from_port, p.to_port)?;
        if p.cidrs.is_empty() && p.groups.is_empty() {
            return Err(Error::invalid(
                "An IpPermission must name at least one source or destination (IpRanges or UserIdGroupPairs)",
            ));
        }
        let mut peers = Vec::new();
        for c in &p.cidrs {
            let block = Cidr::parse(&c.value)
                .map_err(|_| Error::invalid(format!("CIDR block {} is malformed", c.value)))?;
            peers.push((
                RuleSource::Cidr(block.to_string()),
                description(&c.description)?,
            ));
        }
        for g in &p.groups {
            peers.push((
                RuleSource::Group(SecurityGroupId::parse(&g.value)?),
                description(&g.description)?,
            ));
        }
        for (peer, description) in peers {
            let rule = SgRule {
                id: SecurityGroupRuleId::generate(),
                protocol: proto.clone(),
                from_port: from,
                to_port: to,
                peer,
                description,
            };
            if out.iter().any(|r| r.same_as(&rule)) {
                return Err(Error::invalid_code(
                    "InvalidPermission.Duplicate",
                    "the same permission is given twice in the request",
                ));
            }
            out.push(rule);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(p: &str, f: Option<i32>, t: Option<i32>, cidr: &str) -> PermissionInput {
        PermissionInput {
            protocol: p.into(),
            from_port: f,
            to_port: t,
            cidrs: vec![PeerInput {
                value: cidr.into(),
                description: String::new(),
            }],
            groups: vec![],
        }
    }

    #[test]
    fn protocols_and_ports_are_validated_as_ec2_does() {
        assert_eq!(protocol("TCP").unwrap(), "tcp");
        assert_eq!(protocol("6").unwrap(), "tcp");
        assert_eq!(protocol("17").unwrap(), "udp");
        assert_eq!(protocol("1").unwrap(), "icmp");
        assert_eq!(protocol("all").unwrap(), "-1");
        assert_eq!(protocol("47").unwrap(), "47");
        for bad in ["", "tcpx", "256", "-2", "1000", "icmpv6"] {
            assert!(protocol(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ports("tcp", Some(22), Some(22)).unwrap(),
            (Some(22), Some(22))
        );
        assert!(ports("tcp", Some(22), None).is_err());
        assert!(ports("udp", Some(100), Some(99)).is_err());
        assert!(ports("tcp", Some(-1), Some(80)).is_err());
        assert!(ports("tcp", Some(0), Some(65536)).is_err());
        assert_eq!(
            ports("icmp", Some(-1), Some(-1)).unwrap(),
            (Some(-1), Some(-1))
        );
        assert_eq!(ports("icmp", Some(8), Some(0)).unwrap(), (Some(8), Some(0)));
        assert!(ports("icmp", Some(-1), Some(3)).is_err());
        assert!(ports("icmp", Some(256), Some(0)).is_err());
        assert_eq!(ports("-1", Some(5), Some(1)).unwrap(), (None, None));
    }

    #[test]
    fn expansion_is_one_rule_per_peer_and_refuses_bad_input() {
        let mut p = perm("tcp", Some(80), Some(80), "10.0.0.0/8");
        p.cidrs.push(PeerInput {
            value: "192.168.0.0/16".into(),
            description: "lan".into(),
        });
        p.groups.push(PeerInput {
            value: "sg-0123456789abcdef0".into(),
            description: String::new(),
        });
        let rules = expand(&[p.clone()]).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[1].description, "lan");
        assert!(expand(&[p.clone(), p]).is_err(), "duplicate in one request");
        assert!(expand(&[]).is_err());
        assert!(expand(&[perm("tcp", Some(80), Some(80), "10.0.0.1/8")]).is_err());
        assert!(expand(&[perm("tcp", Some(80), Some(80), "nonsense")]).is_err());
        let mut no_peer = perm("tcp", Some(80), Some(80), "10.0.0.0/8");
        no_peer.cidrs.clear();
        assert!(expand(&[no_peer]).is_err());
        let mut bad_group = perm("tcp", Some(80), Some(80), "10.0.0.0/8");
        bad_group.groups.push(PeerInput {
            value: "sg-xyz".into(),
            description: String::new(),
        });
        assert_eq!(
            expand(&[bad_group]).unwrap_err().code(),
            "InvalidGroupId.Malformed"
        );
    }
}
