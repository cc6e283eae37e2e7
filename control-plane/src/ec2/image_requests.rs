//! CopyImage, ModifyImageAttribute and DescribeImageAttribute requests, and
//! RegisterImage's root device parameters, parsed from the Query form.
//!
//! Owns the image attribute names EC2 defines (API 2016-11-15), the two
//! forms ModifyImageAttribute's launch permissions come in
//! (`LaunchPermission.Add.N.UserId|Group`, or `Attribute=launchPermission`
//! with `OperationType`, `UserId.N`, `UserGroup.N`) and which changes are
//! answered with EC2's error for an unavailable feature.

use crate::domain::image_sharing::{CopyImageInput, ImageChange, LaunchPermissionChange};
use crate::domain::model::ROOT_DEVICE_NAME;
use crate::ids::AccountId;

use super::error::{Ec2Error, ErrorCode};
use super::query::{Reader, Tag};
use super::requests::image_id;
use super::run_options::volume_size;

/// The attributes DescribeImageAttribute names.
pub const IMAGE_ATTRIBUTES: &[&str] = &[
    "description",
    "kernel",
    "ramdisk",
    "launchPermission",
    "productCodes",
    "blockDeviceMapping",
    "sriovNetSupport",
    "bootMode",
    "tpmSupport",
    "uefiData",
    "lastLaunchedTime",
    "imdsSupport",
    "deregistrationProtection",
];

/// `CopyImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyImage {
    pub input: CopyImageInput,
    /// `SourceRegion` (must be this endpoint's: checked by the action).
    pub source_region: String,
    pub tags: Vec<Tag>,
    pub dry_run: bool,
}

/// `DescribeImageAttribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeImageAttribute {
    pub image_id: String,
    /// One of [`IMAGE_ATTRIBUTES`].
    pub attribute: &'static str,
    pub dry_run: bool,
}

/// `ModifyImageAttribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyImageAttribute {
    pub image_id: String,
    pub change: ImageChange,
    pub dry_run: bool,
}

fn unsupported(what: &str) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::Unsupported,
        format!("{what} is not supported by this endpoint"),
    )
}

fn description(d: Option<String>) -> Result<Option<String>, Ec2Error> {
    match d {
        Some(d) if d.chars().count() > 255 => Err(Ec2Error::invalid_value(
            "Description must be at most 255 characters",
        )),
        d => Ok(d),
    }
}

/// Parses CopyImage.
pub fn copy(r: &mut Reader) -> Result<CopyImage, Ec2Error> {
    let source_region = r.required("SourceRegion")?;
    let source_image_id = image_id(&r.required("SourceImageId")?)?;
    let name = r.required("Name")?;
    let description = description(r.opt("Description"))?;
    let client_token = r.opt("ClientToken").unwrap_or_default();
    if client_token.len() > 64 {
        return Err(Ec2Error::invalid_value(
            "ClientToken must be at most 64 characters",
        ));
    }
    if r.bool("Encrypted")? == Some(true) || r.opt("KmsKeyId").is_some() {
        return Err(unsupported("Encrypted image copies"));
    }
    if r.opt("DestinationOutpostArn").is_some() {
        return Err(unsupported("Copying to an Outpost"));
    }
    let copy_tags = r.bool("CopyImageTags")?.unwrap_or(false);
    let _ = r.int("SnapshotCopyCompletionDurationMinutes", 15, 2880)?;
    Ok(CopyImage {
        input: CopyImageInput {
            source_image_id,
            name,
            description,
            client_token,
            copy_tags,
        },
        source_region,
        tags: r.tag_specifications("image")?,
        dry_run: r.dry_run()?,
    })
}

fn attribute_name(v: &str) -> Result<&'static str, Ec2Error> {
    super::attribute_requests::name_in(IMAGE_ATTRIBUTES, v)
}

/// Parses DescribeImageAttribute.
pub fn describe_attribute(r: &mut Reader) -> Result<DescribeImageAttribute, Ec2Error> {
    Ok(DescribeImageAttribute {
        image_id: image_id(&r.required("ImageId")?)?,
        attribute: attribute_name(&r.required("Attribute")?)?,
        dry_run: r.dry_run()?,
    })
}

fn account(v: &str) -> Result<AccountId, Ec2Error> {
    AccountId::parse(v).map_err(|_| {
        Ec2Error::new(
            ErrorCode::InvalidUserIdMalformed,
            format!(
                "User ID '{}' is not valid: expected 12 digits",
                v.chars().take(64).collect::<String>()
            ),
        )
    })
}

fn group(v: &str, c: &mut LaunchPermissionChange, add: bool) -> Result<(), Ec2Error> {
    if v != "all" {
        return Err(Ec2Error::invalid_value(format!(
            "Value ({}) for parameter Group is invalid. Expected: 'all'.",
            v.chars().take(64).collect::<String>()
        )));
    }
    if add {
        c.add_public = true;
    } else {
        c.remove_public = true;
    }
    Ok(())
}

/// `LaunchPermission.Add.N.*` / `LaunchPermission.Remove.N.*`.
fn launch_permission_struct(
    r: &mut Reader,
    c: &mut LaunchPermissionChange,
) -> Result<(), Ec2Error> {
    for (verb, add) in [("Add", true), ("Remove", false)] {
        let p = format!("LaunchPermission.{verb}");
        for n in r.indices(&p)? {
            let item = format!("{p}.{n}");
            if let Some(u) = r.opt(&format!("{item}.UserId")) {
                let a = account(&u)?;
                if add {
                    c.add_accounts.push(a);
                } else {
                    c.remove_accounts.push(a);
                }
            }
            if let Some(g) = r.opt(&format!("{item}.Group")) {
                group(&g, c, add)?;
            }
            for org in ["OrganizationArn", "OrganizationalUnitArn"] {
                if r.opt(&format!("{item}.{org}")).is_some() {
                    return Err(unsupported("Sharing with organizations"));
                }
            }
        }
    }
    Ok(())
}

/// Parses ModifyImageAttribute: `launchPermission` or `description`.
pub fn modify_attribute(r: &mut Reader) -> Result<ModifyImageAttribute, Ec2Error> {
    let image_id = image_id(&r.required("ImageId")?)?;
    let attribute = r.opt("Attribute").filter(|a| !a.is_empty());
    let mut lp = LaunchPermissionChange::default();
    launch_permission_struct(r, &mut lp)?;
    let op = r.opt("OperationType");
    let users = r.list("UserId", 1_000)?;
    let groups = r.list("UserGroup", 10)?;
    if !users.is_empty() || !groups.is_empty() {
        let add = match op.as_deref() {
            Some("add") => true,
            Some("remove") => false,
            Some(o) => {
                return Err(Ec2Error::invalid_value(format!(
                "Value ({o}) for parameter OperationType is invalid. Expected: 'add' or 'remove'."
            )))
            }
            None => return Err(Ec2Error::missing("OperationType")),
        };
        for u in &users {
            let a = account(u)?;
            if add {
                lp.add_accounts.push(a);
            } else {
                lp.remove_accounts.push(a);
            }
        }
        for g in &groups {
            group(g, &mut lp, add)?;
        }
    }
    for (key, what) in [
        ("ProductCode", "Product codes"),
        ("OrganizationArn", "Sharing with organizations"),
        ("OrganizationalUnitArn", "Sharing with organizations"),
    ] {
        if !r.take_prefix(key).is_empty() {
            return Err(unsupported(what));
        }
    }
    if r.opt("ImdsSupport.Value").is_some() {
        return Err(unsupported("ImdsSupport"));
    }
    let desc = match r.opt("Description.Value") {
        Some(d) => Some(d),
        None if attribute.as_deref() == Some("description") => {
            Some(r.opt("Value").unwrap_or_default())
        }
        None => None,
    };
    let lp_given = lp != LaunchPermissionChange::default();
    let change = match (attribute.as_deref(), lp_given, desc) {
        (Some("launchPermission") | None, true, None) => ImageChange::LaunchPermission(lp),
        (Some("description") | None, false, Some(d)) => {
            ImageChange::Description(description(Some(d))?.unwrap_or_default())
        }
        (Some("launchPermission"), false, None) => {
            return Err(Ec2Error::missing("LaunchPermission"))
        }
        (None, false, None) => return Err(Ec2Error::missing("Attribute")),
        (_, true, Some(_)) => {
            return Err(Ec2Error::new(
                ErrorCode::InvalidParameterCombination,
                "Fields for multiple attribute types specified: only one attribute can be modified per call",
            ))
        }
        (Some(a), _, _) => {
            let a = attribute_name(a)?;
            return Err(Ec2Error::invalid_value(format!(
                "The attribute {a} cannot be modified"
            )));
        }
    };
    let _ = r.opt("Value");
    Ok(ModifyImageAttribute {
        image_id,
        change,
        dry_run: r.dry_run()?,
    })
}

/// RegisterImage's `RootDeviceName`, `BlockDeviceMapping.N.*`,
/// `VirtualizationType`, `BootMode`, `EnaSupport`, `SriovNetSupport`:
/// the root device's `Ebs.VolumeSize` is the image's root disk size; other
/// devices and features are refused.
pub fn register_root_device(r: &mut Reader) -> Result<Option<u32>, Ec2Error> {
    if let Some(d) = r.opt("RootDeviceName") {
        if d != ROOT_DEVICE_NAME {
            return Err(Ec2Error::invalid_value(format!(
                "Value ({}) for parameter rootDeviceName is invalid: the root device is {ROOT_DEVICE_NAME}",
                d.chars().take(64).collect::<String>()
            )));
        }
    }
    match r.opt("VirtualizationType").as_deref() {
        None | Some("hvm") => {}
        Some(v) => return Err(unsupported(&format!("VirtualizationType {v}"))),
    }
    match r.opt("BootMode").as_deref() {
        None | Some("legacy-bios") => {}
        Some(v) => return Err(unsupported(&format!("BootMode {v}"))),
    }
    if r.bool("EnaSupport")? == Some(true) || r.opt("SriovNetSupport").is_some() {
        return Err(unsupported("Enhanced networking"));
    }
    let mut size = None;
    for n in r.indices("BlockDeviceMapping")? {
        let p = format!("BlockDeviceMapping.{n}");
        let device = r.required(&format!("{p}.DeviceName"))?;
        if device != ROOT_DEVICE_NAME {
            return Err(Ec2Error::new(
                ErrorCode::InvalidBlockDeviceMapping,
                format!("Only the root device {ROOT_DEVICE_NAME} can be mapped (got {device})"),
            ));
        }
        for (key, value) in r.take_prefix(&format!("{p}.Ebs")) {
            match key.rsplit('.').next().unwrap_or("") {
                "VolumeSize" => size = Some(volume_size(&key, &value)?),
                "DeleteOnTermination" if value.eq_ignore_ascii_case("true") => {}
                "VolumeType" if matches!(value.as_str(), "gp2" | "gp3" | "standard") => {}
                "Encrypted" if value.eq_ignore_ascii_case("false") => {}
                _ => return Err(unsupported(&format!("The parameter {key}={value}"))),
            }
        }
        for extra in ["VirtualName", "NoDevice"] {
            if r.opt(&format!("{p}.{extra}")).is_some() {
                return Err(unsupported(&format!("{p}.{extra}")));
            }
        }
    }
    Ok(size)
}
