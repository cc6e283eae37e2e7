//! Typed EC2 requests, one per supported action, parsed and validated from
//! the Query form.
//!
//! Owns what each action accepts (parameter names exactly as botocore
//! serialises them), the syntactic validation of every field (ID formats,
//! ranges, lengths, base64) and the allowed filter names. Semantic checks
//! (does the image exist, is there capacity) belong to the domain layer.

use crate::domain::metadata::MetadataOptionsInput;
use std::collections::BTreeMap;

use base64::Engine as _;

pub use super::attribute_requests::{
    DescribeInstanceAttribute, GetConsoleScreenshot, ModifyInstanceAttribute,
};
use super::error::{Ec2Error, ErrorCode};
pub use super::image_requests::{CopyImage, DescribeImageAttribute, ModifyImageAttribute};
use super::query::{Filter, Reader, Tag};

/// The only API version served.
pub const API_VERSION: &str = "2016-11-15";
/// Largest decoded `UserData` (EC2's limit).
pub const MAX_USER_DATA: usize = 16 * 1024;
/// Largest `MinCount`/`MaxCount` this edge parses (a sanity bound on the
/// number); the per-call limit itself is the domain's
/// (`domain::validation::MAX_COUNT`, `InstanceLimitExceeded` above it, as EC2
/// answers a request beyond the account's instance limit).
pub const MAX_RUN_COUNT: u32 = 100_000;
/// Most IDs in one `InstanceId.N` list.
pub const MAX_IDS: usize = 1_000;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    RunInstances(RunInstances),
    DescribeInstances(DescribeInstances),
    StartInstances(InstanceIds),
    StopInstances(InstanceIds),
    RebootInstances(InstanceIds),
    TerminateInstances(InstanceIds),
    GetConsoleOutput(GetConsoleOutput),
    ModifyInstanceMetadataOptions(ModifyInstanceMetadataOptions),
    DescribeInstanceStatus(DescribeInstanceStatus),
    DescribeAvailabilityZones(DescribeNamed),
    DescribeRegions(DescribeNamed),
    DescribeInstanceTypes(DescribeInstanceTypes),
    DescribeImages(DescribeImages),
    RegisterImage(RegisterImage),
    DeregisterImage(DeregisterImage),
    CopyImage(CopyImage),
    DescribeImageAttribute(DescribeImageAttribute),
    ModifyImageAttribute(ModifyImageAttribute),
    CreateKeyPair(CreateKeyPair),
    ImportKeyPair(ImportKeyPair),
    DescribeKeyPairs(DescribeKeyPairs),
    DeleteKeyPair(DeleteKeyPair),
    CreateTags(CreateTags),
    DeleteTags(DeleteTags),
    DescribeTags(DescribeTags),
    DescribeInstanceAttribute(DescribeInstanceAttribute),
    ModifyInstanceAttribute(ModifyInstanceAttribute),
    GetConsoleScreenshot(GetConsoleScreenshot),
    DescribeInstanceTypeOfferings(DescribeInstanceTypeOfferings),
    /// A launch template action (parsed in `actions::launch_templates`).
    LaunchTemplate(super::actions::launch_templates::LtRequest),
    /// A VPC, subnet or security group action (parsed in `actions::vpcs`).
    Vpc(super::actions::vpcs::VpcCall),
}

/// `DescribeInstanceTypeOfferings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeInstanceTypeOfferings {
    /// `LocationType` as given (`region` when absent; checked by the domain).
    pub location_type: String,
    pub filters: Vec<Filter>,
    pub page: Page,
    pub dry_run: bool,
}

/// Pagination parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// `MaxResults`.
    pub max_results: Option<u32>,
    /// `NextToken` as received (opaque).
    pub next_token: Option<String>,
}

/// `RunInstances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstances {
    /// Empty when only the launch template names the image.
    pub image_id: String,
    /// `LaunchTemplate.LaunchTemplateId`/`LaunchTemplateName` and `Version`.
    pub launch_template: Option<(
        crate::domain::autoscaling::templates::TemplateRef,
        Option<String>,
    )>,
    pub instance_type: Option<String>,
    pub min_count: u32,
    pub max_count: u32,
    pub availability_zone: Option<String>,
    pub key_name: Option<String>,
    /// Decoded user data.
    pub user_data: Option<Vec<u8>>,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
    /// Every other parameter group (see [`super::run_options`]).
    pub options: crate::domain::model::LaunchOptions,
    pub metadata_options: MetadataOptionsInput,
    pub dry_run: bool,
}

/// `ModifyInstanceMetadataOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyInstanceMetadataOptions {
    pub instance_id: String,
    pub options: MetadataOptionsInput,
    pub dry_run: bool,
}

/// `DescribeInstances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeInstances {
    pub instance_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub page: Page,
    pub dry_run: bool,
}

/// `Start/Stop/Reboot/TerminateInstances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIds {
    pub instance_ids: Vec<String>,
    /// `Force` (StopInstances only).
    pub force: bool,
    pub dry_run: bool,
}

/// `GetConsoleOutput`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetConsoleOutput {
    pub instance_id: String,
    pub latest: bool,
    pub dry_run: bool,
}

/// `DescribeInstanceStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeInstanceStatus {
    pub instance_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub include_all_instances: bool,
    pub page: Page,
    pub dry_run: bool,
}

/// `DescribeAvailabilityZones` (`ZoneName.N`) and `DescribeRegions` (`RegionName.N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeNamed {
    pub names: Vec<String>,
    pub filters: Vec<Filter>,
    /// `AllAvailabilityZones` / `AllRegions`.
    pub all: bool,
    pub dry_run: bool,
}

/// `DescribeInstanceTypes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeInstanceTypes {
    pub instance_types: Vec<String>,
    pub filters: Vec<Filter>,
    pub page: Page,
    pub dry_run: bool,
}

/// `DescribeImages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeImages {
    pub image_ids: Vec<String>,
    /// `Owner.N`: `self`, `amazon`, an account ID...
    pub owners: Vec<String>,
    /// `ExecutableBy.N`: `self`, `all`, an account ID.
    pub executable_by: Vec<String>,
    pub filters: Vec<Filter>,
    pub page: Page,
    pub dry_run: bool,
}

/// `RegisterImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterImage {
    pub name: String,
    /// Where the image's files are (a Nubis image name or directory).
    pub image_location: Option<String>,
    pub description: Option<String>,
    /// The root device's `Ebs.VolumeSize` (GiB).
    pub root_volume_gib: Option<u32>,
    pub tags: Vec<Tag>,
    pub dry_run: bool,
}

/// `DeregisterImage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeregisterImage {
    pub image_id: String,
    pub dry_run: bool,
}

/// Key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

/// `CreateKeyPair`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateKeyPair {
    pub key_name: String,
    /// `KeyType` when given (the domain picks the default).
    pub key_type: Option<KeyType>,
    pub tags: Vec<Tag>,
    pub dry_run: bool,
}

/// `ImportKeyPair`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportKeyPair {
    pub key_name: String,
    /// The OpenSSH public key line (decoded from the base64 blob).
    pub public_key: String,
    pub tags: Vec<Tag>,
    pub dry_run: bool,
}

/// `DescribeKeyPairs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeKeyPairs {
    pub key_names: Vec<String>,
    pub key_pair_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub include_public_key: bool,
    pub dry_run: bool,
}

/// `DeleteKeyPair`: by name or by ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteKeyPair {
    pub key_name: Option<String>,
    pub key_pair_id: Option<String>,
    pub dry_run: bool,
}

/// `CreateTags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTags {
    pub resource_ids: Vec<String>,
    pub tags: Vec<Tag>,
    pub dry_run: bool,
}

/// `DeleteTags`: a tag without a value deletes the key whatever its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTags {
    pub resource_ids: Vec<String>,
    pub tags: Vec<(String, Option<String>)>,
    pub dry_run: bool,
}

/// `DescribeTags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTags {
    pub filters: Vec<Filter>,
    pub page: Page,
    pub dry_run: bool,
}

impl Request {
    /// The action name (as in `Action=`).
    pub fn action(&self) -> &'static str {
        match self {
            Request::RunInstances(_) => "RunInstances",
            Request::DescribeInstances(_) => "DescribeInstances",
            Request::StartInstances(_) => "StartInstances",
            Request::StopInstances(_) => "StopInstances",
            Request::RebootInstances(_) => "RebootInstances",
            Request::TerminateInstances(_) => "TerminateInstances",
            Request::GetConsoleOutput(_) => "GetConsoleOutput",
            Request::ModifyInstanceMetadataOptions(_) => "ModifyInstanceMetadataOptions",
            Request::DescribeInstanceStatus(_) => "DescribeInstanceStatus",
            Request::DescribeAvailabilityZones(_) => "DescribeAvailabilityZones",
            Request::DescribeRegions(_) => "DescribeRegions",
            Request::DescribeInstanceTypes(_) => "DescribeInstanceTypes",
            Request::DescribeImages(_) => "DescribeImages",
            Request::RegisterImage(_) => "RegisterImage",
            Request::DeregisterImage(_) => "DeregisterImage",
            Request::CopyImage(_) => "CopyImage",
            Request::DescribeImageAttribute(_) => "DescribeImageAttribute",
            Request::ModifyImageAttribute(_) => "ModifyImageAttribute",
            Request::CreateKeyPair(_) => "CreateKeyPair",
            Request::ImportKeyPair(_) => "ImportKeyPair",
            Request::DescribeKeyPairs(_) => "DescribeKeyPairs",
            Request::DeleteKeyPair(_) => "DeleteKeyPair",
            Request::CreateTags(_) => "CreateTags",
            Request::DeleteTags(_) => "DeleteTags",
            Request::DescribeTags(_) => "DescribeTags",
            Request::DescribeInstanceAttribute(_) => "DescribeInstanceAttribute",
            Request::ModifyInstanceAttribute(_) => "ModifyInstanceAttribute",
            Request::GetConsoleScreenshot(_) => "GetConsoleScreenshot",
            Request::DescribeInstanceTypeOfferings(_) => "DescribeInstanceTypeOfferings",
            Request::LaunchTemplate(x) => x.action(),
            Request::Vpc(x) => x.action,
        }
    }

    /// Parses a decoded form. Checks `Action` and `Version`, every field, and
    /// that no unknown parameter is left.
    pub fn parse(form: BTreeMap<String, String>) -> Result<Request, Ec2Error> {
        let mut r = Reader::new(form);
        let action = match r.opt("Action") {
            Some(a) if !a.is_empty() => a,
            _ => {
                return Err(Ec2Error::new(
                    ErrorCode::MissingAction,
                    "The request must contain the parameter Action",
                ))
            }
        };
        match r.opt("Version") {
            None => return Err(Ec2Error::missing("Version")),
            Some(v) if v != API_VERSION => {
                return Err(Ec2Error::invalid_value(format!(
                    "Version ({v}) is not supported; this endpoint serves {API_VERSION}"
                )))
            }
            Some(_) => {}
        }
        let req = match action.as_str() {
            "RunInstances" => Request::RunInstances(run_instances(&mut r)?),
            "DescribeInstances" => Request::DescribeInstances(DescribeInstances {
                instance_ids: instance_ids(&mut r, false)?,
                filters: r.filters(None)?,
                page: page(&mut r, 5, 1000)?,
                dry_run: r.dry_run()?,
            }),
            "StartInstances" => Request::StartInstances(ids_action(&mut r, false)?),
            "StopInstances" => Request::StopInstances(ids_action(&mut r, true)?),
            "RebootInstances" => Request::RebootInstances(ids_action(&mut r, false)?),
            "TerminateInstances" => Request::TerminateInstances(ids_action(&mut r, false)?),
            "ModifyInstanceMetadataOptions" => {
                Request::ModifyInstanceMetadataOptions(ModifyInstanceMetadataOptions {
                    instance_id: instance_id(&r.required("InstanceId")?)?,
                    options: metadata_options(&mut r, "")?,
                    dry_run: r.dry_run()?,
                })
            }
            "GetConsoleOutput" => Request::GetConsoleOutput(GetConsoleOutput {
                instance_id: instance_id(&r.required("InstanceId")?)?,
                latest: r.bool("Latest")?.unwrap_or(false),
                dry_run: r.dry_run()?,
            }),
            "DescribeInstanceStatus" => Request::DescribeInstanceStatus(DescribeInstanceStatus {
                instance_ids: instance_ids(&mut r, false)?,
                filters: r.filters(None)?,
                include_all_instances: r.bool("IncludeAllInstances")?.unwrap_or(false),
                page: page(&mut r, 5, 1000)?,
                dry_run: r.dry_run()?,
            }),
            "DescribeAvailabilityZones" => Request::DescribeAvailabilityZones(DescribeNamed {
                names: r.list("ZoneName", 100)?,
                filters: r.filters(None)?,
                all: r.bool("AllAvailabilityZones")?.unwrap_or(false),
                dry_run: r.dry_run()?,
            }),
            "DescribeRegions" => Request::DescribeRegions(DescribeNamed {
                names: r.list("RegionName", 100)?,
                filters: r.filters(Some(&["region-name", "endpoint", "opt-in-status"]))?,
                all: r.bool("AllRegions")?.unwrap_or(false),
                dry_run: r.dry_run()?,
            }),
            "DescribeInstanceTypes" => Request::DescribeInstanceTypes(DescribeInstanceTypes {
                instance_types: r.list("InstanceType", 100)?,
                filters: r.filters(Some(INSTANCE_TYPE_FILTERS))?,
                page: page(&mut r, 5, 100)?,
                dry_run: r.dry_run()?,
            }),
            "DescribeImages" => Request::DescribeImages(DescribeImages {
                image_ids: r
                    .list("ImageId", MAX_IDS)?
                    .iter()
                    .map(|s| image_id(s))
                    .collect::<Result<_, _>>()?,
                owners: r.list("Owner", 100)?,
                executable_by: r.list("ExecutableBy", 100)?,
                filters: r.filters(None)?,
                page: {
                    let _ = r.bool("IncludeDeprecated")?;
                    let _ = r.bool("IncludeDisabled")?;
                    page(&mut r, 5, 1000)?
                },
                dry_run: r.dry_run()?,
            }),
            "RegisterImage" => Request::RegisterImage(RegisterImage {
                name: image_name(&r.required("Name")?)?,
                image_location: r.opt("ImageLocation").filter(|s| !s.is_empty()),
                description: match r.opt("Description") {
                    Some(d) if d.chars().count() > 255 => {
                        return Err(Ec2Error::invalid_value(
                            "Description must be at most 255 characters",
                        ))
                    }
                    d => d,
                },
                root_volume_gib: super::image_requests::register_root_device(&mut r)?,
                tags: {
                    match r.opt("Architecture").as_deref() {
                        None | Some("x86_64") => {}
                        Some(a) => {
                            return Err(Ec2Error::invalid_value(format!(
                                "Architecture '{a}' is not supported; only x86_64"
                            )))
                        }
                    }
                    r.tag_specifications("image")?
                },
                dry_run: r.dry_run()?,
            }),
            "DeregisterImage" => Request::DeregisterImage(DeregisterImage {
                image_id: image_id(&r.required("ImageId")?)?,
                dry_run: r.dry_run()?,
            }),
            "CopyImage" => Request::CopyImage(super::image_requests::copy(&mut r)?),
            "DescribeImageAttribute" => {
                Request::DescribeImageAttribute(super::image_requests::describe_attribute(&mut r)?)
            }
            "ModifyImageAttribute" => {
                Request::ModifyImageAttribute(super::image_requests::modify_attribute(&mut r)?)
            }
            "CreateKeyPair" => Request::CreateKeyPair(CreateKeyPair {
                key_name: key_name(&r.required("KeyName")?)?,
                key_type: match r.opt("KeyType").as_deref() {
                    None => None,
                    Some("rsa") => Some(KeyType::Rsa),
                    Some("ed25519") => Some(KeyType::Ed25519),
                    Some(t) => {
                        return Err(Ec2Error::invalid_value(format!("Invalid KeyType '{t}'")))
                    }
                },
                tags: {
                    match r.opt("KeyFormat").as_deref() {
                        None | Some("pem") => {}
                        Some(f) => {
                            return Err(Ec2Error::invalid_value(format!(
                                "Unsupported KeyFormat '{f}': only pem is supported"
                            )))
                        }
                    }
                    r.tag_specifications("key-pair")?
                },
                dry_run: r.dry_run()?,
            }),
            "ImportKeyPair" => Request::ImportKeyPair(ImportKeyPair {
                key_name: key_name(&r.required("KeyName")?)?,
                public_key: public_key(&r.required("PublicKeyMaterial")?)?,
                tags: r.tag_specifications("key-pair")?,
                dry_run: r.dry_run()?,
            }),
            "DescribeKeyPairs" => Request::DescribeKeyPairs(DescribeKeyPairs {
                key_names: r.list("KeyName", MAX_IDS)?,
                key_pair_ids: r.list("KeyPairId", MAX_IDS)?,
                filters: r.filters(None)?,
                include_public_key: r.bool("IncludePublicKey")?.unwrap_or(false),
                dry_run: r.dry_run()?,
            }),
            "DeleteKeyPair" => {
                let key_name = r.opt("KeyName").filter(|s| !s.is_empty());
                let key_pair_id = r.opt("KeyPairId").filter(|s| !s.is_empty());
                if key_name.is_none() && key_pair_id.is_none() {
                    return Err(Ec2Error::missing("KeyName"));
                }
                Request::DeleteKeyPair(DeleteKeyPair {
                    key_name,
                    key_pair_id,
                    dry_run: r.dry_run()?,
                })
            }
            "CreateTags" => Request::CreateTags(CreateTags {
                resource_ids: resource_ids(&mut r)?,
                tags: {
                    let t = r.tags("Tag")?;
                    if t.is_empty() {
                        return Err(Ec2Error::missing("Tag"));
                    }
                    t
                },
                dry_run: r.dry_run()?,
            }),
            "DeleteTags" => Request::DeleteTags(DeleteTags {
                resource_ids: resource_ids(&mut r)?,
                tags: r.tag_keys("Tag", false)?,
                dry_run: r.dry_run()?,
            }),
            "DescribeTags" => Request::DescribeTags(DescribeTags {
                filters: r.filters(None)?,
                page: page(&mut r, 5, 1000)?,
                dry_run: r.dry_run()?,
            }),
            "DescribeInstanceAttribute" => {
                Request::DescribeInstanceAttribute(super::attribute_requests::describe(&mut r)?)
            }
            "ModifyInstanceAttribute" => {
                Request::ModifyInstanceAttribute(super::attribute_requests::modify(&mut r)?)
            }
            "DescribeInstanceTypeOfferings" => {
                Request::DescribeInstanceTypeOfferings(DescribeInstanceTypeOfferings {
                    location_type: r
                        .opt("LocationType")
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| "region".to_owned()),
                    filters: r.filters(Some(&["location", "instance-type"]))?,
                    page: page(&mut r, 5, 1000)?,
                    dry_run: r.dry_run()?,
                })
            }
            "GetConsoleScreenshot" => {
                Request::GetConsoleScreenshot(super::attribute_requests::screenshot(&mut r)?)
            }
            a if super::actions::launch_templates::ACTIONS.contains(&a) => {
                Request::LaunchTemplate(super::actions::launch_templates::parse(a, &mut r)?)
            }
            a if super::actions::vpcs::ACTIONS.contains(&a)
                || super::actions::vpc_public::ACTIONS.contains(&a)
                || super::actions::vpc_enis::ACTIONS.contains(&a) =>
            {
                Request::Vpc(super::actions::vpcs::parse(a, &mut r)?)
            }
            other => {
                return Err(Ec2Error::new(
                    ErrorCode::InvalidAction,
                    format!("The action {other} is not valid for this web service."),
                ))
            }
        };
        r.finish()?;
        Ok(req)
    }

    /// Whether `DryRun=true` was given.
    pub fn dry_run(&self) -> bool {
        match self {
            Request::RunInstances(x) => x.dry_run,
            Request::DescribeInstances(x) => x.dry_run,
            Request::StartInstances(x)
            | Request::StopInstances(x)
            | Request::RebootInstances(x)
            | Request::TerminateInstances(x) => x.dry_run,
            Request::GetConsoleOutput(x) => x.dry_run,
            Request::ModifyInstanceMetadataOptions(x) => x.dry_run,
            Request::DescribeInstanceStatus(x) => x.dry_run,
            Request::DescribeAvailabilityZones(x) | Request::DescribeRegions(x) => x.dry_run,
            Request::DescribeInstanceTypes(x) => x.dry_run,
            Request::DescribeImages(x) => x.dry_run,
            Request::RegisterImage(x) => x.dry_run,
            Request::DeregisterImage(x) => x.dry_run,
            Request::CopyImage(x) => x.dry_run,
            Request::DescribeImageAttribute(x) => x.dry_run,
            Request::ModifyImageAttribute(x) => x.dry_run,
            Request::CreateKeyPair(x) => x.dry_run,
            Request::ImportKeyPair(x) => x.dry_run,
            Request::DescribeKeyPairs(x) => x.dry_run,
            Request::DeleteKeyPair(x) => x.dry_run,
            Request::CreateTags(x) => x.dry_run,
            Request::DeleteTags(x) => x.dry_run,
            Request::DescribeTags(x) => x.dry_run,
            Request::DescribeInstanceAttribute(x) => x.dry_run,
            Request::ModifyInstanceAttribute(x) => x.dry_run,
            Request::GetConsoleScreenshot(x) => x.dry_run,
            Request::DescribeInstanceTypeOfferings(x) => x.dry_run,
            Request::LaunchTemplate(x) => x.dry_run(),
            Request::Vpc(x) => x.dry_run,
        }
    }
}

/// Filters `DescribeInstanceTypes` understands (evaluated by the domain).
pub const INSTANCE_TYPE_FILTERS: &[&str] = crate::domain::catalogue::FILTERS;

/// RunInstances' `LaunchTemplate.*` parameters.
fn launch_template_param(
    r: &mut Reader,
) -> Result<
    Option<(
        crate::domain::autoscaling::templates::TemplateRef,
        Option<String>,
    )>,
    Ec2Error,
> {
    use crate::domain::autoscaling::templates::TemplateRef;
    let id = r.opt("LaunchTemplate.LaunchTemplateId");
    let name = r.opt("LaunchTemplate.LaunchTemplateName");
    let version = r.opt("LaunchTemplate.Version");
    match (id, name) {
        (Some(_), Some(_)) => Err(Ec2Error::new(
            ErrorCode::InvalidParameterCombination,
            "LaunchTemplate takes either LaunchTemplateId or LaunchTemplateName, not both",
        )),
        (Some(id), None) => Ok(Some((TemplateRef::Id(id), version))),
        (None, Some(n)) => Ok(Some((TemplateRef::Name(n), version))),
        (None, None) if version.is_some() => {
            Err(Ec2Error::missing("LaunchTemplate.LaunchTemplateId"))
        }
        (None, None) => Ok(None),
    }
}

fn run_instances(r: &mut Reader) -> Result<RunInstances, Ec2Error> {
    let launch_template = launch_template_param(r)?;
    let image_id = match r.opt("ImageId") {
        Some(i) => image_id(&i)?,
        None if launch_template.is_some() => String::new(),
        None => return Err(Ec2Error::missing("ImageId")),
    };
    let min_count = r
        .int("MinCount", 1, MAX_RUN_COUNT)?
        .ok_or_else(|| Ec2Error::missing("MinCount"))?;
    let max_count = r
        .int("MaxCount", 1, MAX_RUN_COUNT)?
        .ok_or_else(|| Ec2Error::missing("MaxCount"))?;
    if min_count > max_count {
        return Err(Ec2Error::invalid_value(format!(
            "MinCount ({min_count}) must not be greater than MaxCount ({max_count})"
        )));
    }
    let instance_type = r
        .opt("InstanceType")
        .map(|t| instance_type(&t))
        .transpose()?;
    let availability_zone = r
        .opt("Placement.AvailabilityZone")
        .filter(|z| !z.is_empty());
    if let Some(z) = &availability_zone {
        if z.len() > 64 || !z.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Ec2Error::invalid_value(format!(
                "Invalid availability zone: [{z}]"
            )));
        }
    }
    let key_name = r.opt("KeyName").map(|k| key_name(&k)).transpose()?;
    let user_data = match r.opt("UserData") {
        None => None,
        Some(b64) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| Ec2Error::invalid_value("Invalid BASE64 encoding of user data."))?;
            if data.len() > MAX_USER_DATA {
                return Err(Ec2Error::invalid_value(format!(
                    "User data is limited to {MAX_USER_DATA} bytes"
                )));
            }
            Some(data)
        }
    };
    let tags = r.tag_specifications("instance")?;
    let client_token = r.opt("ClientToken").filter(|t| !t.is_empty());
    if let Some(t) = &client_token {
        if t.len() > 64 || !t.is_ascii() {
            return Err(Ec2Error::invalid_value(
                "ClientToken must be at most 64 ASCII characters",
            ));
        }
    }
    let metadata_options = metadata_options(r, "MetadataOptions.")?;
    Ok(RunInstances {
        metadata_options,
        image_id,
        launch_template,
        instance_type,
        min_count,
        max_count,
        availability_zone,
        key_name,
        user_data,
        tags,
        client_token,
        options: super::run_options::parse(r)?,
        dry_run: r.dry_run()?,
    })
}

/// `HttpTokens`, `HttpPutResponseHopLimit`, `HttpEndpoint`,
/// `HttpProtocolIpv6`, `InstanceMetadataTags` under `prefix` (values are
/// checked by the domain).
fn metadata_options(r: &mut Reader, prefix: &str) -> Result<MetadataOptionsInput, Ec2Error> {
    let mut get = |name: &str| r.opt(&format!("{prefix}{name}"));
    let hop = match get("HttpPutResponseHopLimit") {
        None => None,
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| {
            Ec2Error::invalid_value(format!(
                "invalid value '{v}' for HttpPutResponseHopLimit: must be 1 to 64"
            ))
        })?),
    };
    Ok(MetadataOptionsInput {
        http_tokens: get("HttpTokens"),
        http_put_response_hop_limit: hop,
        http_endpoint: get("HttpEndpoint"),
        http_protocol_ipv6: get("HttpProtocolIpv6"),
        instance_metadata_tags: get("InstanceMetadataTags"),
    })
}

fn ids_action(r: &mut Reader, stop: bool) -> Result<InstanceIds, Ec2Error> {
    let instance_ids = instance_ids(r, true)?;
    let force = if stop {
        if r.bool("Hibernate")? == Some(true) {
            return Err(Ec2Error::new(
                ErrorCode::UnauthorizedOperation,
                "Hibernation is not supported by this endpoint",
            ));
        }
        r.bool("Force")?.unwrap_or(false)
    } else {
        false
    };
    Ok(InstanceIds {
        instance_ids,
        force,
        dry_run: r.dry_run()?,
    })
}

fn instance_ids(r: &mut Reader, required: bool) -> Result<Vec<String>, Ec2Error> {
    let ids = r.list("InstanceId", MAX_IDS)?;
    if required && ids.is_empty() {
        return Err(Ec2Error::missing("InstanceId"));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = instance_id(&id)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn resource_ids(r: &mut Reader) -> Result<Vec<String>, Ec2Error> {
    let ids = r.list("ResourceId", MAX_IDS)?;
    if ids.is_empty() {
        return Err(Ec2Error::missing("ResourceId"));
    }
    for id in &ids {
        let ok = match id.split_once('-') {
            Some((p, rest)) => {
                matches!(p, "i" | "ami" | "key" | "eipalloc" | "igw" | "rtb" | "eni")
                    && !rest.is_empty()
                    && rest.len() <= 32
            }
            None => false,
        } && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(Ec2Error::new(
                ErrorCode::InvalidParameterValue,
                format!("Invalid id: \"{id}\""),
            ));
        }
    }
    Ok(ids)
}

fn page(r: &mut Reader, min: u32, max: u32) -> Result<Page, Ec2Error> {
    Ok(Page {
        max_results: r.int("MaxResults", min, max)?,
        next_token: r.opt("NextToken").filter(|t| !t.is_empty()),
    })
}

fn is_hex_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| {
        matches!(h.len(), 8 | 17)
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Checks an instance ID's form (`i-` and 8 or 17 lower-case hex digits, as EC2).
pub fn instance_id(s: &str) -> Result<String, Ec2Error> {
    if is_hex_id(s, "i-") {
        Ok(s.to_owned())
    } else {
        Err(Ec2Error::new(
            ErrorCode::InvalidInstanceIdMalformed,
            format!("Invalid id: \"{}\" (expecting \"i-...\")", truncate(s)),
        ))
    }
}

/// Checks an image ID's form (`ami-` and 8 or 17 lower-case hex digits, as EC2).
pub fn image_id(s: &str) -> Result<String, Ec2Error> {
    if is_hex_id(s, "ami-") {
        Ok(s.to_owned())
    } else {
        Err(Ec2Error::new(
            ErrorCode::InvalidAmiIdMalformed,
            format!("Invalid id: \"{}\" (expecting \"ami-...\")", truncate(s)),
        ))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(super) fn instance_type(s: &str) -> Result<String, Ec2Error> {
    let ok = s.len() <= 32
        && s.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Ec2Error::invalid_value(format!(
            "Invalid value '{}' for InstanceType.",
            truncate(s)
        )))
    }
}

fn key_name(s: &str) -> Result<String, Ec2Error> {
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Ec2Error::invalid_value(
            "Key names must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(s.to_owned())
}

fn image_name(s: &str) -> Result<String, Ec2Error> {
    let ok = (3..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" ()[]./-'@_".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Ec2Error::invalid_value(
            "Image names must be 3 to 128 characters: letters, digits, spaces and ()[]./-'@_",
        ))
    }
}

/// Decodes `PublicKeyMaterial` (base64 of an OpenSSH public key line or an
/// RFC 4716 block, as the AWS SDKs send it); the domain parses the key.
fn public_key(b64: &str) -> Result<String, Ec2Error> {
    let bad = || {
        Ec2Error::new(
            ErrorCode::InvalidKeyFormat,
            "Key is not in valid OpenSSH public key format",
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    if raw.len() > crate::domain::keymaterial::MAX_MATERIAL {
        return Err(bad());
    }
    String::from_utf8(raw).map_err(|_| bad())
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
