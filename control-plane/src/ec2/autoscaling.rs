//! The Auto Scaling API (Query protocol, version 2011-01-01) on the
//! gateway's listener: requests whose SigV4 credential scope names the
//! `autoscaling` service come here ([`super::sigv4::Service`]).
//!
//! Owns the parsing of the Auto Scaling actions' forms (lists as
//! `Name.member.N`), their XML answers (namespace
//! `https://autoscaling.amazonaws.com/doc/2011-01-01/`, results in
//! `<{Action}Result>`, lists of `<member>`) and the Auto Scaling error
//! document (`<ErrorResponse><Error><Type>Sender</Type><Code>…`). The work
//! is the domain's ([`crate::domain::autoscaling`]).

mod policies;

use std::collections::BTreeMap;

use super::error::{Ec2Error, ErrorCode};
use super::query::Reader;
use super::xml::{escape_into, timestamp};
use crate::domain::autoscaling::templates::TemplateRef;
use crate::domain::autoscaling::{
    Activity, AutoScalingGroup, CreateGroupInput, GroupInstance, GroupTag, UpdateGroupInput,
};
use crate::domain::{Caller, Domain};

/// The Auto Scaling API version served.
pub const API_VERSION: &str = "2011-01-01";

/// The Auto Scaling namespace.
pub const NAMESPACE: &str = "https://autoscaling.amazonaws.com/doc/2011-01-01/";

/// Most members of one list parameter.
const MAX_LIST: usize = 100;

/// The Auto Scaling error document for `e`. Parameter errors are the API's
/// `ValidationError`; 5xx are `Receiver` errors, the rest `Sender`.
pub fn error_xml(e: &Ec2Error, request_id: &str) -> String {
    let code = match e.code.as_str() {
        "MissingParameter"
        | "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "UnknownParameter" => "ValidationError",
        c if c.starts_with("InvalidInstanceID") || c.starts_with("InvalidLaunchTemplate") => {
            "ValidationError"
        }
        c => c,
    };
    let kind = if e.status().is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let mut s = String::with_capacity(256);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"");
    s.push_str(NAMESPACE);
    s.push_str("\"><Error><Type>");
    s.push_str(kind);
    s.push_str("</Type><Code>");
    escape_into(&mut s, code);
    s.push_str("</Code><Message>");
    escape_into(&mut s, &e.message);
    s.push_str("</Message></Error><RequestId>");
    escape_into(&mut s, request_id);
    s.push_str("</RequestId></ErrorResponse>");
    s
}

/// A small writer of one Auto Scaling response.
struct Doc {
    buf: String,
    action: &'static str,
    result: bool,
}

impl Doc {
    fn new(action: &'static str, result: bool) -> Self {
        let mut buf = String::with_capacity(512);
        buf.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        buf.push_str(action);
        buf.push_str("Response xmlns=\"");
        buf.push_str(NAMESPACE);
        buf.push_str("\">");
        let mut d = Self {
            buf,
            action,
            result,
        };
        if result {
            d.open_dyn(&format!("{action}Result"));
        }
        d
    }
    fn open_dyn(&mut self, name: &str) {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
    }
    fn close_dyn(&mut self, name: &str) {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
    }
    fn elem(&mut self, name: &str, f: impl FnOnce(&mut Self)) {
        self.open_dyn(name);
        f(self);
        self.close_dyn(name);
    }
    fn leaf(&mut self, name: &str, text: impl std::fmt::Display) {
        self.open_dyn(name);
        escape_into(&mut self.buf, &text.to_string());
        self.close_dyn(name);
    }
    fn members<T>(
        &mut self,
        name: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Self, T),
    ) {
        self.open_dyn(name);
        for it in items {
            self.elem("member", |d| f(d, it));
        }
        self.close_dyn(name);
    }
    fn finish(mut self, request_id: &str) -> String {
        if self.result {
            self.close_dyn(&format!("{}Result", self.action));
        }
        self.elem("ResponseMetadata", |d| d.leaf("RequestId", request_id));
        self.close_dyn(&format!("{}Response", self.action));
        self.buf
    }
}

fn time_ms(ms: i64) -> String {
    timestamp(super::actions::time_ms(ms))
}

fn validation(message: impl Into<String>) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::Other("ValidationError".into(), http::StatusCode::BAD_REQUEST),
        message,
    )
}

fn size(r: &mut Reader, key: &str) -> Result<Option<u32>, Ec2Error> {
    r.int(key, 0, crate::domain::autoscaling::MAX_GROUP_SIZE)
        .map_err(|e| validation(e.message))
}

fn template_ref(r: &mut Reader) -> Result<Option<(TemplateRef, Option<String>)>, Ec2Error> {
    let id = r.opt("LaunchTemplate.LaunchTemplateId");
    let name = r.opt("LaunchTemplate.LaunchTemplateName");
    let version = r.opt("LaunchTemplate.Version");
    match (id, name) {
        (Some(_), Some(_)) => Err(validation(
            "Valid requests must contain either LaunchTemplateId or LaunchTemplateName",
        )),
        (Some(id), None) => Ok(Some((TemplateRef::Id(id), version))),
        (None, Some(n)) => Ok(Some((TemplateRef::Name(n), version))),
        (None, None) => Ok(None),
    }
}

fn group_tags(r: &mut Reader) -> Result<Vec<GroupTag>, Ec2Error> {
    let idx = r.indices("Tags.member")?;
    if idx.len() > 50 {
        return Err(validation("At most 50 tags may be given"));
    }
    let mut out = Vec::new();
    for n in idx {
        let key = r
            .opt(&format!("Tags.member.{n}.Key"))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| validation(format!("Tags.member.{n}.Key is required")))?;
        let value = r.opt(&format!("Tags.member.{n}.Value")).unwrap_or_default();
        let propagate = r
            .bool(&format!("Tags.member.{n}.PropagateAtLaunch"))?
            .unwrap_or(false);
        r.opt(&format!("Tags.member.{n}.ResourceId"));
        r.opt(&format!("Tags.member.{n}.ResourceType"));
        out.push(GroupTag {
            key,
            value,
            propagate_at_launch: propagate,
        });
    }
    Ok(out)
}

/// Performs one Auto Scaling request for `caller`.
pub async fn dispatch(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    form: BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
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
        Some(v) if v == API_VERSION => {}
        v => {
            return Err(validation(format!(
                "Version ({}) is not supported; this endpoint serves {API_VERSION}",
                v.unwrap_or_default()
            )))
        }
    }
    match action.as_str() {
        "CreateAutoScalingGroup" => {
            if r.opt("LaunchConfigurationName").is_some() || r.opt("InstanceId").is_some() {
                return Err(validation(
                    "Only LaunchTemplate is supported (no launch configurations)",
                ));
            }
            let (template, version) = match template_ref(&mut r)? {
                Some((t, v)) => (Some(t), v),
                None => (None, None),
            };
            let input = CreateGroupInput {
                name: r.required("AutoScalingGroupName")?,
                template,
                version,
                min_size: size(&mut r, "MinSize")?.ok_or_else(|| Ec2Error::missing("MinSize"))?,
                max_size: size(&mut r, "MaxSize")?.ok_or_else(|| Ec2Error::missing("MaxSize"))?,
                desired: size(&mut r, "DesiredCapacity")?,
                zones: r.list("AvailabilityZones.member", MAX_LIST)?,
                vpc_zone_identifier: r.opt("VPCZoneIdentifier"),
                grace_seconds: r.int("HealthCheckGracePeriod", 0, 7200)?,
                tags: group_tags(&mut r)?,
                protect_new: r.bool("NewInstancesProtectedFromScaleIn")?.unwrap_or(false),
                default_cooldown: r.int("DefaultCooldown", 0, 86_400)?,
            };
            r.opt("HealthCheckType");
            d.create_auto_scaling_group(caller, input).await?;
            Ok(Doc::new("CreateAutoScalingGroup", false).finish(rid))
        }
        "UpdateAutoScalingGroup" => {
            let zones = r.list("AvailabilityZones.member", MAX_LIST)?;
            let vpc = r.opt("VPCZoneIdentifier");
            let mut all_zones = zones;
            if let Some(v) = vpc {
                all_zones.extend(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
            let input = UpdateGroupInput {
                name: r.required("AutoScalingGroupName")?,
                min_size: size(&mut r, "MinSize")?,
                max_size: size(&mut r, "MaxSize")?,
                desired: size(&mut r, "DesiredCapacity")?,
                zones: (!all_zones.is_empty()).then_some(all_zones),
                grace_seconds: r.int("HealthCheckGracePeriod", 0, 7200)?,
                template: template_ref(&mut r)?,
                protect_new: r.bool("NewInstancesProtectedFromScaleIn")?,
                default_cooldown: r.int("DefaultCooldown", 0, 86_400)?,
            };
            d.update_auto_scaling_group(caller, input).await?;
            Ok(Doc::new("UpdateAutoScalingGroup", false).finish(rid))
        }
        "SetDesiredCapacity" => {
            let name = r.required("AutoScalingGroupName")?;
            let n = size(&mut r, "DesiredCapacity")?
                .ok_or_else(|| Ec2Error::missing("DesiredCapacity"))?;
            let honor = r.bool("HonorCooldown")?.unwrap_or(false);
            d.set_desired_capacity_honoring(caller, &name, n, honor)
                .await?;
            Ok(Doc::new("SetDesiredCapacity", false).finish(rid))
        }
        "DescribeAutoScalingGroups" => {
            let names = r.list("AutoScalingGroupNames.member", MAX_LIST)?;
            let with_instances = d.describe_groups_with_instances(caller, &names).await?;
            let mut doc = Doc::new("DescribeAutoScalingGroups", true);
            doc.members("AutoScalingGroups", with_instances, |w, (g, insts)| {
                group_xml(w, d, &g, &insts)
            });
            Ok(doc.finish(rid))
        }
        "DescribeAutoScalingInstances" => {
            let ids = r.list("InstanceIds.member", 50)?;
            let list = d.describe_auto_scaling_instances(caller, &ids).await?;
            let mut doc = Doc::new("DescribeAutoScalingInstances", true);
            doc.members("AutoScalingInstances", list, |w, gi| {
                w.leaf("AutoScalingGroupName", &gi.group);
                instance_xml(w, &gi, None);
            });
            Ok(doc.finish(rid))
        }
        "TerminateInstanceInAutoScalingGroup" => {
            let id = r.required("InstanceId")?;
            let dec = r
                .bool("ShouldDecrementDesiredCapacity")?
                .ok_or_else(|| Ec2Error::missing("ShouldDecrementDesiredCapacity"))?;
            let a = d.terminate_instance_in_group(caller, &id, dec).await?;
            let mut doc = Doc::new("TerminateInstanceInAutoScalingGroup", true);
            doc.elem("Activity", |w| activity_xml(w, &a));
            Ok(doc.finish(rid))
        }
        "SetInstanceProtection" => {
            let name = r.required("AutoScalingGroupName")?;
            let ids = r.list("InstanceIds.member", 50)?;
            if ids.is_empty() {
                return Err(Ec2Error::missing("InstanceIds"));
            }
            let p = r
                .bool("ProtectedFromScaleIn")?
                .ok_or_else(|| Ec2Error::missing("ProtectedFromScaleIn"))?;
            d.set_instance_protection(caller, &name, &ids, p).await?;
            Ok(Doc::new("SetInstanceProtection", true).finish(rid))
        }
        "SetInstanceHealth" => {
            let id = r.required("InstanceId")?;
            let status = r.required("HealthStatus")?;
            let healthy = match status.as_str() {
                "Healthy" => true,
                "Unhealthy" => false,
                _ => return Err(validation("HealthStatus must be Healthy or Unhealthy")),
            };
            r.bool("ShouldRespectGracePeriod")?;
            d.set_instance_health(caller, &id, healthy).await?;
            Ok(Doc::new("SetInstanceHealth", false).finish(rid))
        }
        "DescribeScalingActivities" => {
            let name = r.opt("AutoScalingGroupName");
            let max = r.int("MaxRecords", 1, 100)?.unwrap_or(100) as usize;
            let list = d
                .describe_scaling_activities(caller, name.as_deref(), max)
                .await?;
            let mut doc = Doc::new("DescribeScalingActivities", true);
            doc.members("Activities", list, |w, a| activity_xml(w, &a));
            Ok(doc.finish(rid))
        }
        "DeleteAutoScalingGroup" => {
            let name = r.required("AutoScalingGroupName")?;
            let force = r.bool("ForceDelete")?.unwrap_or(false);
            d.delete_auto_scaling_group(caller, &name, force).await?;
            Ok(Doc::new("DeleteAutoScalingGroup", false).finish(rid))
        }
        "SuspendProcesses" | "ResumeProcesses" => {
            let name = r.required("AutoScalingGroupName")?;
            let procs = r.list("ScalingProcesses.member", 20)?;
            let suspend = action == "SuspendProcesses";
            d.set_processes_suspended(caller, &name, &procs, suspend)
                .await?;
            let a: &'static str = if suspend {
                "SuspendProcesses"
            } else {
                "ResumeProcesses"
            };
            Ok(Doc::new(a, false).finish(rid))
        }
        other => match policies::dispatch(d, caller, rid, other, &mut r).await? {
            Some(doc) => Ok(doc),
            None => Err(Ec2Error::new(
                ErrorCode::InvalidAction,
                format!("The action {other} is not valid for this web service."),
            )),
        },
    }
}

fn template_xml(w: &mut Doc, g: &AutoScalingGroup, version: Option<&str>) {
    w.elem("LaunchTemplate", |w| {
        w.leaf("LaunchTemplateId", &g.template.id);
        w.leaf("LaunchTemplateName", &g.template.name);
        w.leaf("Version", version.unwrap_or(&g.template.version));
    });
}

fn instance_xml(w: &mut Doc, gi: &GroupInstance, g: Option<&AutoScalingGroup>) {
    let i = &gi.instance;
    w.leaf("InstanceId", &i.id);
    w.leaf("InstanceType", &i.instance_type);
    w.leaf("AvailabilityZone", &i.availability_zone);
    w.leaf("LifecycleState", gi.lifecycle);
    w.leaf(
        "HealthStatus",
        if gi.healthy { "HEALTHY" } else { "UNHEALTHY" },
    );
    if let Some(g) = g {
        let v = i
            .tags
            .get(crate::domain::autoscaling::controller::TEMPLATE_VERSION_TAG)
            .map(String::as_str);
        template_xml(w, g, v);
    }
    w.leaf("ProtectedFromScaleIn", gi.protected);
}

fn group_xml(w: &mut Doc, d: &Domain, g: &AutoScalingGroup, insts: &[GroupInstance]) {
    w.leaf("AutoScalingGroupName", &g.name);
    w.leaf("AutoScalingGroupARN", d.group_arn(g));
    template_xml(w, g, None);
    w.leaf("MinSize", g.min_size);
    w.leaf("MaxSize", g.max_size);
    w.leaf("DesiredCapacity", g.desired);
    w.leaf("DefaultCooldown", g.default_cooldown);
    w.members("AvailabilityZones", &g.zones, |w, z| {
        w.buf.push_str(&esc(z))
    });
    w.leaf("HealthCheckType", "EC2");
    w.leaf("HealthCheckGracePeriod", g.grace_seconds);
    w.members("Instances", insts, |w, gi| instance_xml(w, gi, Some(g)));
    w.leaf("CreatedTime", time_ms(g.created_ms));
    w.members("SuspendedProcesses", &g.suspended, |w, p| {
        w.leaf("ProcessName", p);
        w.leaf("SuspensionReason", "User suspended");
    });
    w.leaf("VPCZoneIdentifier", "");
    w.members("Tags", &g.tags, |w, t| {
        w.leaf("ResourceId", &g.name);
        w.leaf("ResourceType", "auto-scaling-group");
        w.leaf("Key", &t.key);
        w.leaf("Value", &t.value);
        w.leaf("PropagateAtLaunch", t.propagate_at_launch);
    });
    w.members("TerminationPolicies", ["Default"], |w, p| w.buf.push_str(p));
    w.leaf("NewInstancesProtectedFromScaleIn", g.protect_new);
    if g.deleting {
        w.leaf("Status", "Delete in progress");
    }
}

fn esc(s: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, s);
    out
}

fn activity_xml(w: &mut Doc, a: &Activity) {
    w.leaf("ActivityId", &a.id);
    w.leaf("AutoScalingGroupName", &a.group);
    w.leaf("Description", &a.description);
    w.leaf("Cause", &a.cause);
    w.leaf("StartTime", time_ms(a.start_ms));
    if let Some(e) = a.end_ms {
        w.leaf("EndTime", time_ms(e));
    }
    w.leaf("StatusCode", a.status.as_str());
    if !a.message.is_empty() {
        w.leaf("StatusMessage", &a.message);
    }
    w.leaf(
        "Progress",
        if a.status == crate::domain::autoscaling::ActivityStatus::InProgress {
            50
        } else {
            100
        },
    );
}
