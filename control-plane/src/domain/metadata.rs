//! Instance metadata options (EC2 `InstanceMetadataOptions`): validation of
//! RunInstances `MetadataOptions` and ModifyInstanceMetadataOptions, and
//! what an assignment tells the node's metadata service (docs/imds.md).

use super::model::{AssignmentMetadata, Instance, MetadataOptions};
use super::placement::Plan;
use super::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::InstanceId;

/// Requested options as they arrive from either edge (EC2 wire values);
/// `None` keeps the current (or default) value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataOptionsInput {
    /// `optional` | `required`.
    pub http_tokens: Option<String>,
    /// 1..=64.
    pub http_put_response_hop_limit: Option<i64>,
    /// `enabled` | `disabled`.
    pub http_endpoint: Option<String>,
    /// `enabled` | `disabled`.
    pub http_protocol_ipv6: Option<String>,
    /// `enabled` | `disabled`.
    pub instance_metadata_tags: Option<String>,
}

impl MetadataOptionsInput {
    /// Whether nothing is requested.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

fn switch(name: &str, v: &str) -> Result<bool> {
    match v {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        _ => Err(Error::invalid(format!(
            "invalid value '{v}' for {name}: expected enabled or disabled"
        ))),
    }
}

/// `base` with `input` applied, every value checked.
pub fn apply_options(
    base: MetadataOptions,
    input: &MetadataOptionsInput,
) -> Result<MetadataOptions> {
    let mut o = base;
    if let Some(t) = &input.http_tokens {
        o.http_tokens_required = match t.as_str() {
            "optional" => false,
            "required" => true,
            _ => {
                return Err(Error::invalid(format!(
                    "invalid value '{t}' for HttpTokens: expected optional or required"
                )))
            }
        };
    }
    if let Some(h) = input.http_put_response_hop_limit {
        if !(1..=64).contains(&h) {
            return Err(Error::invalid(format!(
                "invalid value '{h}' for HttpPutResponseHopLimit: must be 1 to 64"
            )));
        }
        o.hop_limit = h as u8;
    }
    if let Some(v) = &input.http_endpoint {
        o.endpoint_enabled = switch("HttpEndpoint", v)?;
    }
    if let Some(v) = &input.http_protocol_ipv6 {
        o.ipv6_enabled = switch("HttpProtocolIpv6", v)?;
    }
    if let Some(v) = &input.instance_metadata_tags {
        o.tags_enabled = switch("InstanceMetadataTags", v)?;
    }
    Ok(o)
}

/// `pending` while the instance has not yet run with its options, else
/// `applied` (the node applies a change to a running VMM at once).
pub fn options_state(inst: &Instance) -> &'static str {
    if inst.state == super::lifecycle::State::Pending {
        "pending"
    } else {
        "applied"
    }
}

/// EC2 wire value of a switch.
pub fn enabled(b: bool) -> &'static str {
    if b {
        "enabled"
    } else {
        "disabled"
    }
}

/// EC2 wire value of `HttpTokens`.
pub fn http_tokens(o: &MetadataOptions) -> &'static str {
    if o.http_tokens_required {
        "required"
    } else {
        "optional"
    }
}

impl Domain {
    /// What the node's metadata service serves for `inst` (besides what the
    /// assignment carries anyway: type, user data, key).
    pub(super) fn assignment_metadata(&self, inst: &Instance) -> AssignmentMetadata {
        AssignmentMetadata {
            image_id: inst.image_id.to_string(),
            key_name: inst.key_name.clone().unwrap_or_default(),
            availability_zone: inst.availability_zone.clone(),
            region: self.cfg.region.clone(),
            launch_time_ms: inst.launch_time_ms,
            options: inst.metadata_options,
            tags: if inst.metadata_options.tags_enabled {
                inst.tags.clone()
            } else {
                Default::default()
            },
        }
    }

    /// ModifyInstanceMetadataOptions: changes the options of one of the
    /// caller's instances; a running instance's node applies them at once.
    /// Returns the instance and its new options.
    pub async fn modify_instance_metadata_options(
        &self,
        caller: &Caller,
        instance_id: &str,
        input: &MetadataOptionsInput,
    ) -> Result<(InstanceId, MetadataOptions)> {
        let account = caller.account()?;
        if instance_id.is_empty() {
            return Err(Error::missing("InstanceId"));
        }
        let id = InstanceId::parse(instance_id)?;
        if input.is_empty() {
            return Err(Error::missing(
                "HttpTokens, HttpPutResponseHopLimit or HttpEndpoint",
            ));
        }
        // Checked once before reading anything (bad input never touches etcd).
        apply_options(MetadataOptions::default(), input)?;
        let key = self.store.instances().key(&account, &id);
        let (_, after) = self
            .update_instance(&key, None, |inst| {
                if inst.state == super::lifecycle::State::Terminated {
                    return Err(Error::invalid_code(
                        "IncorrectInstanceState",
                        format!("the instance '{}' is terminated", inst.id),
                    ));
                }
                let opts = apply_options(inst.metadata_options, input)?;
                if opts == inst.metadata_options {
                    return Ok(None);
                }
                let mut new = inst.clone();
                new.metadata_options = opts;
                Ok(Some(Plan {
                    inst: new,
                    place: false,
                    release: false,
                    unassign: false,
                    assignment_changed: true,
                }))
            })
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found(
                    "InvalidInstanceID.NotFound",
                    format!("the instance ID '{id}' does not exist"),
                ),
                e => e,
            })?;
        Ok((id, after.metadata_options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(f: impl FnOnce(&mut MetadataOptionsInput)) -> MetadataOptionsInput {
        let mut i = MetadataOptionsInput::default();
        f(&mut i);
        i
    }

    #[test]
    fn defaults_are_ec2s() {
        let d = MetadataOptions::default();
        assert!(!d.http_tokens_required);
        assert_eq!(d.hop_limit, 1);
        assert!(d.endpoint_enabled && !d.ipv6_enabled && !d.tags_enabled);
    }

    #[test]
    fn values_are_applied_and_bad_ones_refused() {
        let o = apply_options(
            MetadataOptions::default(),
            &input(|i| {
                i.http_tokens = Some("required".into());
                i.http_put_response_hop_limit = Some(64);
                i.http_endpoint = Some("disabled".into());
                i.instance_metadata_tags = Some("enabled".into());
            }),
        )
        .expect("valid");
        assert!(o.http_tokens_required && !o.endpoint_enabled && o.tags_enabled);
        assert_eq!(o.hop_limit, 64);
        for bad in [
            input(|i| i.http_put_response_hop_limit = Some(0)),
            input(|i| i.http_put_response_hop_limit = Some(65)),
            input(|i| i.http_tokens = Some("Required".into())),
            input(|i| i.http_endpoint = Some("on".into())),
            input(|i| i.http_protocol_ipv6 = Some("".into())),
            input(|i| i.instance_metadata_tags = Some("yes".into())),
        ] {
            let e = apply_options(MetadataOptions::default(), &bad).expect_err("refused");
            assert!(e.to_string().contains("invalid value"), "{e}");
        }
    }
}
