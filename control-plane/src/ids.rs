//! Typed identifiers. Each parses (validating its shape) and displays as the
//! string EC2 clients see (parsing also accepts EC2's short form of 8 hex digits): `i-` + 17 hex, `r-` + 17 hex, `ami-` + 17 hex,
//! `key-` + 17 hex, `node-` + 17 hex, `subnet-` + 17 hex, `lt-` + 17 hex, `vpc-`, `sg-`, `sgr-`, `eipalloc-`, `eipassoc-`, `igw-`, `rtb-`, `rtbassoc-`, `eni-`, `eni-attach-` + 17 hex, account ids of 12 decimal digits.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

fn random_hex17() -> String {
    let bytes: [u8; 9] = rand::random();
    let mut s = hex::encode(bytes);
    s.truncate(17);
    s
}

/// EC2's two id lengths: 8 hex digits (older resources) or 17.
fn is_hex17(s: &str) -> bool {
    matches!(s.len(), 8 | 17) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $malformed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id prefix, including the dash.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_hex17()))
            }

            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, Error> {
                match s.strip_prefix($prefix) {
                    Some(rest) if is_hex17(rest) => Ok(Self(s.to_string())),
                    _ => Err(Error::invalid_code(
                        $malformed,
                        format!("invalid id: {:?} (expected {}<8 or 17 hex digits>)", s, $prefix),
                    )),
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }
    };
}

hex_id!(
    /// An instance id, `i-` + 17 hex digits.
    InstanceId, "i-", "InvalidInstanceID.Malformed"
);
hex_id!(
    /// A reservation id, `r-` + 17 hex digits.
    ReservationId, "r-", "InvalidReservationID.Malformed"
);
hex_id!(
    /// An image id, `ami-` + 17 hex digits.
    ImageId, "ami-", "InvalidAMIID.Malformed"
);
hex_id!(
    /// A key pair id, `key-` + 17 hex digits.
    KeyPairId, "key-", "InvalidKeyPair.Malformed"
);
hex_id!(
    /// A node (host) id, `node-` + 17 hex digits.
    NodeId, "node-", "InvalidParameterValue"
);
hex_id!(
    /// A launch template id, `lt-` + 17 hex digits.
    LaunchTemplateId, "lt-", "InvalidLaunchTemplateId.Malformed"
);
hex_id!(
    /// A subnet id, `subnet-` + 17 hex digits.
    SubnetId, "subnet-", "InvalidSubnetID.Malformed"
);

hex_id!(
    /// A VPC id, `vpc-` + 17 hex digits.
    VpcId, "vpc-", "InvalidVpcID.Malformed"
);
hex_id!(
    /// A security group id, `sg-` + 17 hex digits.
    SecurityGroupId, "sg-", "InvalidGroupId.Malformed"
);
hex_id!(
    /// A security group rule id, `sgr-` + 17 hex digits.
    SecurityGroupRuleId, "sgr-", "InvalidSecurityGroupRuleId.Malformed"
);
hex_id!(
    /// An Elastic IP allocation id, `eipalloc-` + 17 hex digits.
    AllocationId, "eipalloc-", "InvalidAllocationID.Malformed"
);
hex_id!(
    /// An Elastic IP association id, `eipassoc-` + 17 hex digits.
    AddressAssociationId, "eipassoc-", "InvalidAssociationID.Malformed"
);
hex_id!(
    /// An internet gateway id, `igw-` + 17 hex digits.
    InternetGatewayId, "igw-", "InvalidInternetGatewayID.Malformed"
);
hex_id!(
    /// A route table id, `rtb-` + 17 hex digits.
    RouteTableId, "rtb-", "InvalidRouteTableID.Malformed"
);
hex_id!(
    /// A route table association id, `rtbassoc-` + 17 hex digits.
    RouteTableAssociationId, "rtbassoc-", "InvalidAssociationID.Malformed"
);
hex_id!(
    /// An elastic network interface id, `eni-` + 17 hex digits.
    NetworkInterfaceId, "eni-", "InvalidNetworkInterfaceID.Malformed"
);
hex_id!(
    /// A network interface attachment id, `eni-attach-` + 17 hex digits.
    NetworkInterfaceAttachmentId, "eni-attach-", "InvalidAttachmentID.Malformed"
);

impl NetworkInterfaceId {
    /// The primary interface of an instance that was launched without an
    /// interface of its own: derived from the instance id (not stored).
    pub fn primary_of(instance: &InstanceId) -> Self {
        Self(format!("eni-{}", &instance.as_str()["i-".len()..]))
    }

    /// The instance whose derived primary interface this id would be.
    pub fn derived_instance(&self) -> InstanceId {
        InstanceId(format!("i-{}", &self.0["eni-".len()..]))
    }
}

impl NetworkInterfaceAttachmentId {
    /// The attachment of an instance's derived primary interface.
    pub fn primary_of(instance: &InstanceId) -> Self {
        Self(format!("eni-attach-{}", &instance.as_str()["i-".len()..]))
    }

    /// The instance whose derived primary attachment this id would be.
    pub fn derived_instance(&self) -> InstanceId {
        InstanceId(format!("i-{}", &self.0["eni-attach-".len()..]))
    }

    /// The attachment of a secondary interface (device index 1 or more):
    /// `eni-attach-` + the interface's hex.
    pub fn secondary_of(eni: &NetworkInterfaceId) -> Self {
        Self(format!("eni-attach-{}", &eni.as_str()["eni-".len()..]))
    }

    /// The interface whose secondary attachment this id would be.
    pub fn secondary_interface(&self) -> NetworkInterfaceId {
        NetworkInterfaceId(format!("eni-{}", &self.0["eni-attach-".len()..]))
    }
}

impl RouteTableId {
    /// The main route table of `vpc`: its id is derived from the VPC's, so
    /// creating it is idempotent (compare-absent on one key) for VPCs made
    /// before route tables existed.
    pub fn main_of(vpc: &VpcId) -> Self {
        Self(format!("rtb-{}", &vpc.as_str()["vpc-".len()..]))
    }
}

impl RouteTableAssociationId {
    /// The main association of `vpc`'s main route table.
    pub fn main_of(vpc: &VpcId) -> Self {
        Self(format!("rtbassoc-{}", &vpc.as_str()["vpc-".len()..]))
    }
}

impl SubnetId {
    /// The subnet of node address block `n` (one per node until VPCs exist):
    /// `subnet-` + `n` as 17 hex digits, so it is found without a lookup.
    pub fn for_block(n: u32) -> Self {
        Self(format!("subnet-{n:017x}"))
    }

    /// A fresh id for a VPC subnet: never one of the node-block ids of
    /// [`SubnetId::for_block`] (those have nine leading zero digits).
    pub fn generate_vpc() -> Self {
        loop {
            let id = Self::generate();
            if !id.0["subnet-".len()..].starts_with("000000000") {
                return id;
            }
        }
    }

    /// Whether this is the id of a node address block (not a VPC subnet).
    pub fn is_block(&self) -> bool {
        let hex = &self.0["subnet-".len()..];
        hex.len() == 17 && hex.starts_with("000000000")
    }
}

/// An account id: 12 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// The operator's own account (used when the operator credential calls
    /// the Compute API, e.g. to register public images).
    pub fn operator() -> Self {
        Self("000000000000".to_string())
    }

    /// A fresh random account id (never the operator's).
    pub fn generate() -> Self {
        loop {
            let n: u64 = rand::random::<u64>() % 1_000_000_000_000;
            if n != 0 {
                return Self(format!("{n:012}"));
            }
        }
    }

    /// Parses and validates an account id.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::invalid(format!(
                "invalid account id {s:?} (expected 12 digits)"
            )))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AccountId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(id: AccountId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        for _ in 0..100 {
            let i = InstanceId::generate();
            assert_eq!(i.as_str().len(), 19);
            assert_eq!(InstanceId::parse(i.as_str()).unwrap(), i);
            let a = ImageId::generate();
            assert_eq!(ImageId::parse(a.as_str()).unwrap(), a);
            let acc = AccountId::generate();
            assert_eq!(AccountId::parse(acc.as_str()).unwrap(), acc);
        }
    }

    #[test]
    fn malformed_ids_are_rejected_with_ec2_codes() {
        for bad in [
            "",
            "i-",
            "i-123",
            "i-0123456789abcdefg",
            "x-0123456789abcdef0",
            "i-0123456789ABCDEF0",
        ] {
            let e = InstanceId::parse(bad).unwrap_err();
            assert_eq!(e.code(), "InvalidInstanceID.Malformed", "{bad}");
        }
        assert_eq!(
            ImageId::parse("ami-1").unwrap_err().code(),
            "InvalidAMIID.Malformed"
        );
        assert!(AccountId::parse("12345").is_err());
        assert!(InstanceId::parse("i-0123456789abcdef0").is_ok());
        // EC2's short form, and nothing between the two lengths.
        assert!(InstanceId::parse("i-0123abcd").is_ok());
        assert!(ImageId::parse("ami-0123abcd").is_ok());
        assert!(InstanceId::parse("i-0123abcde").is_err());
        assert!(InstanceId::parse("i-0123456789abcdef01").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: InstanceId = serde_json::from_str("\"i-0123456789abcdef0\"").unwrap();
        assert_eq!(ok.as_str(), "i-0123456789abcdef0");
        assert!(serde_json::from_str::<InstanceId>("\"i-zz\"").is_err());
    }
}
