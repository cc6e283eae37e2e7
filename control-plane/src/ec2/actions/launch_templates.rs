//! Launch template actions (EC2 2016-11-15): CreateLaunchTemplate,
//! CreateLaunchTemplateVersion, DescribeLaunchTemplates,
//! DescribeLaunchTemplateVersions, ModifyLaunchTemplate (default version),
//! DeleteLaunchTemplate, DeleteLaunchTemplateVersions: their form parsing
//! ([`parse`], called by [`crate::ec2::requests::Request::parse`]) and
//! their XML over [`crate::domain::autoscaling::templates`].

use base64::Engine as _;

use super::super::error::{Ec2Error, ErrorCode};
use super::super::query::Reader;
use super::super::xml::XmlWriter;
use super::{dry_run_ok, time_ms};
use crate::domain::autoscaling::templates::{
    parse_version, LaunchTemplate, LaunchTemplateData, LaunchTemplateVersion, TemplateRef,
    VersionSel,
};
use crate::domain::{Caller, Domain};

/// The actions of this module.
pub const ACTIONS: [&str; 7] = [
    "CreateLaunchTemplate",
    "CreateLaunchTemplateVersion",
    "DescribeLaunchTemplates",
    "DescribeLaunchTemplateVersions",
    "ModifyLaunchTemplate",
    "DeleteLaunchTemplate",
    "DeleteLaunchTemplateVersions",
];

/// A parsed launch template request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LtRequest {
    /// CreateLaunchTemplate.
    Create {
        /// Name.
        name: String,
        /// VersionDescription.
        description: String,
        /// LaunchTemplateData.
        data: LaunchTemplateData,
        /// DryRun.
        dry_run: bool,
    },
    /// CreateLaunchTemplateVersion.
    CreateVersion {
        /// Template.
        what: TemplateRef,
        /// SourceVersion.
        source: Option<VersionSel>,
        /// VersionDescription.
        description: String,
        /// LaunchTemplateData.
        data: LaunchTemplateData,
        /// DryRun.
        dry_run: bool,
    },
    /// DescribeLaunchTemplates.
    Describe {
        /// Ids and names (empty = all).
        refs: Vec<TemplateRef>,
        /// DryRun.
        dry_run: bool,
    },
    /// DescribeLaunchTemplateVersions.
    DescribeVersions {
        /// Template.
        what: TemplateRef,
        /// Versions (empty = all).
        versions: Vec<VersionSel>,
        /// DryRun.
        dry_run: bool,
    },
    /// ModifyLaunchTemplate.
    Modify {
        /// Template.
        what: TemplateRef,
        /// SetDefaultVersion.
        default_version: Option<u64>,
        /// DryRun.
        dry_run: bool,
    },
    /// DeleteLaunchTemplate.
    Delete {
        /// Template.
        what: TemplateRef,
        /// DryRun.
        dry_run: bool,
    },
    /// DeleteLaunchTemplateVersions.
    DeleteVersions {
        /// Template.
        what: TemplateRef,
        /// Version numbers.
        versions: Vec<u64>,
        /// DryRun.
        dry_run: bool,
    },
}

impl LtRequest {
    /// The action name.
    pub fn action(&self) -> &'static str {
        match self {
            LtRequest::Create { .. } => "CreateLaunchTemplate",
            LtRequest::CreateVersion { .. } => "CreateLaunchTemplateVersion",
            LtRequest::Describe { .. } => "DescribeLaunchTemplates",
            LtRequest::DescribeVersions { .. } => "DescribeLaunchTemplateVersions",
            LtRequest::Modify { .. } => "ModifyLaunchTemplate",
            LtRequest::Delete { .. } => "DeleteLaunchTemplate",
            LtRequest::DeleteVersions { .. } => "DeleteLaunchTemplateVersions",
        }
    }
    /// Whether `DryRun=true` was given.
    pub fn dry_run(&self) -> bool {
        match self {
            LtRequest::Create { dry_run, .. }
            | LtRequest::CreateVersion { dry_run, .. }
            | LtRequest::Describe { dry_run, .. }
            | LtRequest::DescribeVersions { dry_run, .. }
            | LtRequest::Modify { dry_run, .. }
            | LtRequest::Delete { dry_run, .. }
            | LtRequest::DeleteVersions { dry_run, .. } => *dry_run,
        }
    }
}

fn one_template(r: &mut Reader) -> Result<TemplateRef, Ec2Error> {
    let id = r.opt("LaunchTemplateId").filter(|s| !s.is_empty());
    let name = r.opt("LaunchTemplateName").filter(|s| !s.is_empty());
    match (id, name) {
        (Some(id), None) => Ok(TemplateRef::Id(id)),
        (None, Some(n)) => Ok(TemplateRef::Name(n)),
        (Some(_), Some(_)) => Err(Ec2Error::new(
            ErrorCode::InvalidParameterCombination,
            "Specify either LaunchTemplateId or LaunchTemplateName, not both",
        )),
        (None, None) => Err(Ec2Error::missing("LaunchTemplateId")),
    }
}

fn version_sel(s: &str) -> Result<VersionSel, Ec2Error> {
    parse_version(Some(s)).map_err(Ec2Error::from)
}

fn data(r: &mut Reader) -> Result<LaunchTemplateData, Ec2Error> {
    let p = "LaunchTemplateData";
    let user_data = match r.opt(&format!("{p}.UserData")) {
        None => None,
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| Ec2Error::invalid_value("Invalid BASE64 encoding of user data."))?,
        ),
    };
    let mut tags = Vec::new();
    for n in r.indices(&format!("{p}.TagSpecification"))? {
        let rt = r.required(&format!("{p}.TagSpecification.{n}.ResourceType"))?;
        let t = r.tags(&format!("{p}.TagSpecification.{n}.Tag"))?;
        // Only instance tags apply (volumes etc. do not exist here).
        if rt == "instance" {
            tags.extend(t.into_iter().map(|t| (t.key, t.value)));
        }
    }
    let mut sgs = r.list(&format!("{p}.SecurityGroupId"), 16)?;
    sgs.extend(r.list(&format!("{p}.SecurityGroupIds"), 16)?);
    Ok(LaunchTemplateData {
        image_id: r.opt(&format!("{p}.ImageId")).filter(|s| !s.is_empty()),
        instance_type: r
            .opt(&format!("{p}.InstanceType"))
            .filter(|s| !s.is_empty()),
        key_name: r.opt(&format!("{p}.KeyName")).filter(|s| !s.is_empty()),
        user_data,
        security_group_ids: sgs,
        tags,
    })
}

/// Parses one of [`ACTIONS`].
pub fn parse(action: &str, r: &mut Reader) -> Result<LtRequest, Ec2Error> {
    let req = match action {
        "CreateLaunchTemplate" => {
            let name = r.required("LaunchTemplateName")?;
            r.opt("ClientToken");
            // Tags of the template itself are accepted and not kept.
            let _ = r.tag_specifications("launch-template")?;
            LtRequest::Create {
                name,
                description: r.opt("VersionDescription").unwrap_or_default(),
                data: data(r)?,
                dry_run: r.dry_run()?,
            }
        }
        "CreateLaunchTemplateVersion" => {
            r.opt("ClientToken");
            LtRequest::CreateVersion {
                what: one_template(r)?,
                source: r
                    .opt("SourceVersion")
                    .map(|s| version_sel(&s))
                    .transpose()?,
                description: r.opt("VersionDescription").unwrap_or_default(),
                data: data(r)?,
                dry_run: r.dry_run()?,
            }
        }
        "DescribeLaunchTemplates" => {
            let mut refs: Vec<TemplateRef> = r
                .list("LaunchTemplateId", 200)?
                .into_iter()
                .map(TemplateRef::Id)
                .collect();
            refs.extend(
                r.list("LaunchTemplateName", 200)?
                    .into_iter()
                    .map(TemplateRef::Name),
            );
            r.int("MaxResults", 1, 200)?;
            r.opt("NextToken");
            LtRequest::Describe {
                refs,
                dry_run: r.dry_run()?,
            }
        }
        "DescribeLaunchTemplateVersions" => {
            let what = one_template(r)?;
            let mut versions = Vec::new();
            for v in r.list("LaunchTemplateVersion", 200)? {
                versions.push(version_sel(&v)?);
            }
            r.int("MaxResults", 1, 200)?;
            r.opt("NextToken");
            LtRequest::DescribeVersions {
                what,
                versions,
                dry_run: r.dry_run()?,
            }
        }
        "ModifyLaunchTemplate" => {
            r.opt("ClientToken");
            let what = one_template(r)?;
            let default_version = match r.opt("SetDefaultVersion") {
                None => None,
                Some(v) => match version_sel(&v)? {
                    VersionSel::Number(n) => Some(n),
                    _ => {
                        return Err(Ec2Error::invalid_value(
                            "SetDefaultVersion must be a version number",
                        ))
                    }
                },
            };
            LtRequest::Modify {
                what,
                default_version,
                dry_run: r.dry_run()?,
            }
        }
        "DeleteLaunchTemplate" => LtRequest::Delete {
            what: one_template(r)?,
            dry_run: r.dry_run()?,
        },
        "DeleteLaunchTemplateVersions" => {
            let what = one_template(r)?;
            let mut versions = Vec::new();
            for v in r.list("LaunchTemplateVersion", 200)? {
                match version_sel(&v)? {
                    VersionSel::Number(n) => versions.push(n),
                    _ => {
                        return Err(Ec2Error::invalid_value(
                            "LaunchTemplateVersion must be version numbers",
                        ))
                    }
                }
            }
            if versions.is_empty() {
                return Err(Ec2Error::missing("LaunchTemplateVersion"));
            }
            LtRequest::DeleteVersions {
                what,
                versions,
                dry_run: r.dry_run()?,
            }
        }
        other => {
            return Err(Ec2Error::new(
                ErrorCode::InvalidAction,
                format!("The action {other} is not valid for this web service."),
            ))
        }
    };
    Ok(req)
}

fn template_xml(w: &mut XmlWriter, t: &LaunchTemplate) {
    w.leaf("launchTemplateId", &t.id);
    w.leaf("launchTemplateName", &t.name);
    w.time("createTime", time_ms(t.created_ms));
    w.leaf("createdBy", format!("arn:aws:iam::{}:root", t.account));
    w.leaf("defaultVersionNumber", t.default_version);
    w.leaf("latestVersionNumber", t.latest_version);
    w.empty("tagSet");
}

fn version_xml(w: &mut XmlWriter, v: &LaunchTemplateVersion, default: bool, account: &str) {
    w.leaf("launchTemplateId", &v.template_id);
    w.leaf("launchTemplateName", &v.template_name);
    w.leaf("versionNumber", v.number);
    w.leaf("versionDescription", &v.description);
    w.time("createTime", time_ms(v.created_ms));
    w.leaf("createdBy", format!("arn:aws:iam::{account}:root"));
    w.bool("defaultVersion", default);
    w.elem("launchTemplateData", |w| {
        let d = &v.data;
        w.leaf_opt("imageId", d.image_id.as_deref());
        w.leaf_opt("instanceType", d.instance_type.as_deref());
        w.leaf_opt("keyName", d.key_name.as_deref());
        if let Some(u) = &d.user_data {
            w.leaf(
                "userData",
                base64::engine::general_purpose::STANDARD.encode(u),
            );
        }
        w.list("securityGroupIdSet", &d.security_group_ids, |w, s| {
            w.text(s);
        });
        if !d.tags.is_empty() {
            w.list("tagSpecificationSet", [()], |w, _| {
                w.leaf("resourceType", "instance");
                w.list("tagSet", &d.tags, |w, (k, v)| {
                    w.leaf("key", k);
                    w.leaf("value", v);
                });
            });
        }
    });
}

/// Performs a launch template request.
pub async fn handle(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    req: LtRequest,
) -> Result<String, Ec2Error> {
    let action = req.action();
    if req.dry_run() {
        caller.account()?;
        return dry_run_ok();
    }
    let account = caller.account()?.to_string();
    let mut w = XmlWriter::response(action, rid);
    match req {
        LtRequest::Create {
            name,
            description,
            data,
            ..
        } => {
            let (t, _) = d
                .create_launch_template(caller, &name, &description, data)
                .await?;
            w.elem("launchTemplate", |w| template_xml(w, &t));
        }
        LtRequest::CreateVersion {
            what,
            source,
            description,
            data,
            ..
        } => {
            let v = d
                .create_launch_template_version(caller, &what, source, &description, data)
                .await?;
            let t = d.launch_template(caller, &what).await?.value;
            w.elem("launchTemplateVersion", |w| {
                version_xml(w, &v, v.number == t.default_version, &account)
            });
        }
        LtRequest::Describe { refs, .. } => {
            let list = d.describe_launch_templates(caller, &refs).await?;
            w.list("launchTemplates", &list, template_xml);
        }
        LtRequest::DescribeVersions { what, versions, .. } => {
            let t = d.launch_template(caller, &what).await?.value;
            let list = d
                .describe_launch_template_versions(caller, &what, &versions)
                .await?;
            w.list("launchTemplateVersionSet", &list, |w, v| {
                version_xml(w, v, v.number == t.default_version, &account)
            });
        }
        LtRequest::Modify {
            what,
            default_version,
            ..
        } => {
            let t = match default_version {
                Some(n) => {
                    d.set_default_launch_template_version(caller, &what, n)
                        .await?
                }
                None => d.launch_template(caller, &what).await?.value,
            };
            w.elem("launchTemplate", |w| template_xml(w, &t));
        }
        LtRequest::Delete { what, .. } => {
            let t = d.delete_launch_template(caller, &what).await?;
            w.elem("launchTemplate", |w| template_xml(w, &t));
        }
        LtRequest::DeleteVersions { what, versions, .. } => {
            let t = d.launch_template(caller, &what).await?.value;
            let done = d
                .delete_launch_template_versions(caller, &what, &versions)
                .await?;
            w.list(
                "successfullyDeletedLaunchTemplateVersionSet",
                &done,
                |w, n| {
                    w.leaf("launchTemplateId", &t.id);
                    w.leaf("launchTemplateName", &t.name);
                    w.leaf("versionNumber", n);
                },
            );
            w.empty("unsuccessfullyDeletedLaunchTemplateVersionSet");
        }
    }
    Ok(w.finish())
}
