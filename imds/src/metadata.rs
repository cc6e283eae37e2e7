//! The data one instance's metadata service serves, and its access options.
//!
//! The node agent builds an [`InstanceMetadata`] and a [`MetadataOptions`]
//! and hands them to the VMM as JSON (user data is base64 in JSON).

use serde::{Deserialize, Serialize};

/// One public key of the instance (`/latest/meta-data/public-keys/N/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// The key pair's name (`public-keys/` lists `0=<name>`).
    pub name: String,
    /// The public key in OpenSSH one-line form (`ssh-ed25519 AAAA... name`).
    pub openssh: String,
}

/// Everything the metadata service tells one instance about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    pub instance_id: String,
    /// The owning account (identity document `accountId`, interface `owner-id`).
    pub account_id: String,
    pub ami_id: String,
    pub instance_type: String,
    /// Private DNS name (`hostname`, `local-hostname`).
    pub hostname: String,
    pub local_ipv4: String,
    #[serde(default)]
    pub public_ipv4: Option<String>,
    /// The instance's primary MAC, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub availability_zone: String,
    pub region: String,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Launch time, RFC 3339 (identity document `pendingTime`).
    pub launch_time: String,
    /// Raw user data (decoded; base64 in JSON).
    #[serde(default, with = "base64_opt")]
    pub user_data: Option<Vec<u8>>,
    #[serde(default)]
    pub public_keys: Vec<PublicKey>,
    /// CPU architecture for the identity document (`x86_64`).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// Instance tags (`/latest/meta-data/tags/instance/`, served only when
    /// [`MetadataOptions::instance_metadata_tags`] is on).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The instance's secondary network interfaces (device number 1 or
    /// more), listed beside the primary one under
    /// `network/interfaces/macs/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_interfaces: Vec<InterfaceMetadata>,
}

/// A secondary network interface (`network/interfaces/macs/<mac>/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceMetadata {
    /// `device-number` (its device index).
    pub device_number: u32,
    /// `interface-id` (`eni-...`).
    pub interface_id: String,
    /// `mac`, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// `local-ipv4s`.
    pub local_ipv4: String,
    /// `security-group-ids`.
    pub security_group_ids: Vec<String>,
    /// `subnet-id`.
    pub subnet_id: String,
    /// `subnet-ipv4-cidr-block`.
    pub subnet_cidr: String,
    /// `vpc-id`.
    pub vpc_id: String,
}

fn default_architecture() -> String {
    "x86_64".to_owned()
}

/// Whether IMDSv2 session tokens are required (`HttpTokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 requests (no token) are answered too; a token, if sent, must be valid.
    #[default]
    Optional,
    /// Every GET must carry a valid token.
    Required,
}

/// The instance's metadata options, as EC2's `InstanceMetadataOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataOptions {
    pub http_tokens: HttpTokens,
    /// IP TTL / hop limit of every packet the service sends (1..=64).
    pub http_put_response_hop_limit: u8,
    /// `HttpEndpoint=disabled`: nothing answers at the metadata address.
    pub http_endpoint_enabled: bool,
    /// `HttpProtocolIpv6=enabled`: answer at `fd00:ec2::254` as well.
    pub http_protocol_ipv6_enabled: bool,
    /// `InstanceMetadataTags=enabled`: serve `/latest/meta-data/tags/instance/`.
    pub instance_metadata_tags: bool,
}

impl Default for MetadataOptions {
    /// EC2's defaults for RunInstances without `MetadataOptions`: tokens
    /// optional, hop limit 1 (EC2's documented default for instances
    /// launched without an AMI setting), endpoint enabled, IPv6 disabled,
    /// tags not served.
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::Optional,
            http_put_response_hop_limit: 1,
            http_endpoint_enabled: true,
            http_protocol_ipv6_enabled: false,
            instance_metadata_tags: false,
        }
    }
}

impl MetadataOptions {
    /// The hop limit actually applied (out-of-range values clamp to 1..=64).
    pub fn hop_limit(&self) -> u8 {
        self.http_put_response_hop_limit.clamp(1, 64)
    }
}

/// What the node agent hands a VMM (a JSON file, rewritten and reloaded to
/// change it at run time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImdsConfig {
    pub metadata: InstanceMetadata,
    #[serde(default)]
    pub options: MetadataOptions,
}

mod base64_opt {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            STANDARD
                .decode(t.as_bytes())
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_base64_in_json_and_round_trips() {
        let md = crate::http::tests::sample();
        let json = serde_json::to_string(&md).expect("serialize");
        assert!(
            json.contains("\"user_data\":\"I2Nsb3VkLWNvbmZpZwo=\""),
            "{json}"
        );
        let back: InstanceMetadata = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, md);
    }

    #[test]
    fn options_default_to_ec2_defaults_and_parse_partially() {
        let o: MetadataOptions =
            serde_json::from_str(r#"{"http_tokens":"required"}"#).expect("parse");
        assert_eq!(o.http_tokens, HttpTokens::Required);
        assert_eq!(o.http_put_response_hop_limit, 1);
        assert!(o.http_endpoint_enabled);
        assert!(!o.http_protocol_ipv6_enabled);
        assert!(serde_json::from_str::<MetadataOptions>(r#"{"http_tokens":"maybe"}"#).is_err());
    }
}
