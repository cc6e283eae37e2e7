//! DescribeInstanceAttribute, ModifyInstanceAttribute and
//! GetConsoleScreenshot requests: parsed from the Query form.
//!
//! Owns the attribute names EC2 defines, which of them ModifyInstanceAttribute
//! can change here (the rest answered with EC2's error for an unavailable
//! feature), and the rule that one call changes exactly one attribute.

use base64::Engine as _;

use crate::domain::attributes::AttributeChange;
use crate::domain::model::{ShutdownBehavior, ROOT_DEVICE_NAME};

use super::error::{Ec2Error, ErrorCode};
use super::query::Reader;
use super::requests::{instance_id, MAX_USER_DATA};

/// The attributes DescribeInstanceAttribute names (API 2016-11-15).
pub const ATTRIBUTES: &[&str] = &[
    "instanceType",
    "kernel",
    "ramdisk",
    "userData",
    "disableApiTermination",
    "instanceInitiatedShutdownBehavior",
    "rootDeviceName",
    "blockDeviceMapping",
    "productCodes",
    "sourceDestCheck",
    "groupSet",
    "ebsOptimized",
    "sriovNetSupport",
    "enaSupport",
    "enclaveOptions",
    "disableApiStop",
];

/// `DescribeInstanceAttribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeInstanceAttribute {
    pub instance_id: String,
    /// One of [`ATTRIBUTES`].
    pub attribute: &'static str,
    pub dry_run: bool,
}

/// `ModifyInstanceAttribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyInstanceAttribute {
    pub instance_id: String,
    /// `None`: a change to what the instance already is (e.g.
    /// `EbsOptimized=false`), accepted without effect.
    pub change: Option<AttributeChange>,
    pub dry_run: bool,
}

/// `GetConsoleScreenshot` (refused: instances have no graphical console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetConsoleScreenshot {
    pub instance_id: String,
    pub dry_run: bool,
}

fn attribute_name(v: &str) -> Result<&'static str, Ec2Error> {
    name_in(ATTRIBUTES, v)
}

/// `v` as one of the attribute names `names` (`InvalidParameterValue`
/// otherwise): for the instance and the image attribute actions.
pub(super) fn name_in(names: &[&'static str], v: &str) -> Result<&'static str, Ec2Error> {
    names.iter().copied().find(|a| *a == v).ok_or_else(|| {
        Ec2Error::invalid_value(format!(
            "Value ({}) for parameter attribute is invalid. Unknown attribute.",
            v.chars().take(64).collect::<String>()
        ))
    })
}

/// Parses DescribeInstanceAttribute.
pub fn describe(r: &mut Reader) -> Result<DescribeInstanceAttribute, Ec2Error> {
    Ok(DescribeInstanceAttribute {
        instance_id: instance_id(&r.required("InstanceId")?)?,
        attribute: attribute_name(&r.required("Attribute")?)?,
        dry_run: r.dry_run()?,
    })
}

/// Parses GetConsoleScreenshot.
pub fn screenshot(r: &mut Reader) -> Result<GetConsoleScreenshot, Ec2Error> {
    let instance_id = instance_id(&r.required("InstanceId")?)?;
    let _ = r.bool("WakeUp")?;
    Ok(GetConsoleScreenshot {
        instance_id,
        dry_run: r.dry_run()?,
    })
}

/// The `(attribute, value)` pairs given, in either of EC2's two forms:
/// `Attribute=name&Value=v` or `Name.Value=v` (`GroupId.N`,
/// `BlockDeviceMapping.N.*` for the list attributes).
fn given(r: &mut Reader) -> Result<Vec<(&'static str, String)>, Ec2Error> {
    let mut out = Vec::new();
    if let Some(a) = r.opt("Attribute").filter(|a| !a.is_empty()) {
        let a = attribute_name(&a)?;
        out.push((a, r.opt("Value").unwrap_or_default()));
    } else if r.opt("Value").is_some() {
        return Err(Ec2Error::missing("Attribute"));
    }
    for (param, attribute) in [
        ("InstanceType", "instanceType"),
        ("Kernel", "kernel"),
        ("Ramdisk", "ramdisk"),
        ("UserData", "userData"),
        ("DisableApiTermination", "disableApiTermination"),
        ("DisableApiStop", "disableApiStop"),
        (
            "InstanceInitiatedShutdownBehavior",
            "instanceInitiatedShutdownBehavior",
        ),
        ("SourceDestCheck", "sourceDestCheck"),
        ("EbsOptimized", "ebsOptimized"),
        ("SriovNetSupport", "sriovNetSupport"),
        ("EnaSupport", "enaSupport"),
    ] {
        if let Some(v) = r.opt(&format!("{param}.Value")) {
            out.push((attribute, v));
        }
    }
    let groups = r.list("GroupId", MAX_GROUPS + 1)?;
    if !groups.is_empty() {
        out.push(("groupSet", groups.join(",")));
    }
    let mappings = r.take_prefix("BlockDeviceMapping");
    if !mappings.is_empty() {
        out.push(("blockDeviceMapping", block_device_change(&mappings)?));
    }
    Ok(out)
}

/// ModifyInstanceAttribute's `BlockDeviceMapping.N.*`: only the root
/// device's `Ebs.DeleteOnTermination=true` (what it always is) is accepted.
fn block_device_change(m: &[(String, String)]) -> Result<String, Ec2Error> {
    let mut root = false;
    for (k, v) in m {
        match k.split('.').skip(2).collect::<Vec<_>>().join(".").as_str() {
            "DeviceName" if v == ROOT_DEVICE_NAME => root = true,
            "DeviceName" => {
                return Err(Ec2Error::new(
                    ErrorCode::InvalidBlockDeviceMapping,
                    format!("The device {v} is not attached to the instance"),
                ))
            }
            "Ebs.DeleteOnTermination" if v.eq_ignore_ascii_case("true") => {}
            _ => {
                return Err(Ec2Error::new(
                    ErrorCode::Unsupported,
                    format!("Changing {k} is not supported: the root disk is always deleted with the instance"),
                ))
            }
        }
    }
    if !root {
        return Err(Ec2Error::missing("BlockDeviceMapping.N.DeviceName"));
    }
    Ok(String::new())
}

/// Most security groups of an instance (EC2's default per interface).
pub const MAX_GROUPS: usize = 5;

/// `GroupId.N` (or `Value` of `Attribute=groupSet`, comma-joined here):
/// 1..=5 well-formed group ids.
fn group_set(value: &str) -> Result<Vec<crate::ids::SecurityGroupId>, Ec2Error> {
    let ids: Vec<&str> = value.split(',').filter(|g| !g.is_empty()).collect();
    if ids.is_empty() {
        return Err(Ec2Error::missing("GroupId.1"));
    }
    if ids.len() > MAX_GROUPS {
        return Err(Ec2Error::new(
            ErrorCode::Other(
                "SecurityGroupsPerInstanceLimitExceeded".into(),
                http::StatusCode::BAD_REQUEST,
            ),
            format!("An instance can have at most {MAX_GROUPS} security groups"),
        ));
    }
    ids.into_iter()
        .map(|g| crate::ids::SecurityGroupId::parse(g).map_err(Ec2Error::from))
        .collect()
}

fn bool_value(attribute: &str, v: &str) -> Result<bool, Ec2Error> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Ec2Error::invalid_value(format!(
            "Value ({v}) for parameter {attribute} is invalid. Expected: 'true' or 'false'."
        ))),
    }
}

fn unsupported(what: &str) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::Unsupported,
        format!("{what} is not supported by this endpoint"),
    )
}

/// Parses ModifyInstanceAttribute: exactly one attribute per call.
pub fn modify(r: &mut Reader) -> Result<ModifyInstanceAttribute, Ec2Error> {
    let instance_id = instance_id(&r.required("InstanceId")?)?;
    let mut given = given(r)?;
    if given.len() > 1 {
        return Err(Ec2Error::new(
            ErrorCode::InvalidParameterCombination,
            "Fields for multiple attribute types specified: only one attribute can be modified per call",
        ));
    }
    let Some((attribute, value)) = given.pop() else {
        return Err(Ec2Error::missing("Attribute"));
    };
    let change = match attribute {
        "instanceType" => Some(AttributeChange::InstanceType(
            super::requests::instance_type(&value)?,
        )),
        "userData" => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| Ec2Error::invalid_value("Invalid BASE64 encoding of user data."))?;
            if data.len() > MAX_USER_DATA {
                return Err(Ec2Error::invalid_value(format!(
                    "User data is limited to {MAX_USER_DATA} bytes"
                )));
            }
            Some(AttributeChange::UserData(data))
        }
        "disableApiTermination" => Some(AttributeChange::DisableApiTermination(bool_value(
            attribute, &value,
        )?)),
        "disableApiStop" => Some(AttributeChange::DisableApiStop(bool_value(
            attribute, &value,
        )?)),
        "sourceDestCheck" => Some(AttributeChange::SourceDestCheck(bool_value(
            attribute, &value,
        )?)),
        "instanceInitiatedShutdownBehavior" => {
            Some(AttributeChange::ShutdownBehavior(match value.as_str() {
                "stop" => ShutdownBehavior::Stop,
                "terminate" => ShutdownBehavior::Terminate,
                _ => {
                    return Err(Ec2Error::invalid_value(format!(
                    "Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid. \
                         Expected: 'stop' or 'terminate'."
                )))
                }
            }))
        }
        "ebsOptimized" | "enaSupport" => {
            if bool_value(attribute, &value)? {
                return Err(unsupported(attribute));
            }
            None
        }
        "blockDeviceMapping" => None,
        "groupSet" => Some(AttributeChange::SecurityGroups(group_set(&value)?)),
        "kernel" | "ramdisk" | "sriovNetSupport" => return Err(unsupported(attribute)),
        _ => {
            return Err(Ec2Error::invalid_value(format!(
                "The attribute {attribute} cannot be modified"
            )))
        }
    };
    Ok(ModifyInstanceAttribute {
        instance_id,
        change,
        dry_run: r.dry_run()?,
    })
}
