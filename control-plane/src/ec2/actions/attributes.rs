//! Instance attribute actions: DescribeInstanceAttribute,
//! ModifyInstanceAttribute, and GetConsoleScreenshot (refused).

use base64::Engine as _;

use super::{dry_run_ok, return_true};
use crate::domain::attributes::InstanceAttributes;
use crate::domain::model::ROOT_DEVICE_NAME;
use crate::domain::{Caller, Domain};
use crate::ec2::error::{Ec2Error, ErrorCode};
use crate::ec2::requests::{
    DescribeInstanceAttribute, GetConsoleScreenshot, ModifyInstanceAttribute,
};
use crate::ec2::xml::XmlWriter;

/// DescribeInstanceAttribute: the one attribute asked for.
pub async fn describe(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeInstanceAttribute,
) -> Result<String, Ec2Error> {
    let a = d.instance_attributes(caller, &r.instance_id).await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeInstanceAttribute", rid);
    w.leaf("instanceId", &a.instance.id);
    attribute(&mut w, r.attribute, &a);
    Ok(w.finish())
}

fn value(w: &mut XmlWriter, name: &'static str, v: impl std::fmt::Display) {
    w.elem(name, |w| {
        w.leaf("value", v);
    });
}

/// Writes `attribute` (one of `attribute_requests::ATTRIBUTES`) as EC2 does.
fn attribute(w: &mut XmlWriter, attribute: &'static str, a: &InstanceAttributes) {
    let i = &a.instance;
    let o = &i.options;
    match attribute {
        "instanceType" => value(w, "instanceType", &i.instance_type),
        "userData" if a.user_data.is_empty() => {
            w.empty("userData");
        }
        "userData" => value(
            w,
            "userData",
            base64::engine::general_purpose::STANDARD.encode(&a.user_data),
        ),
        "disableApiTermination" => value(w, "disableApiTermination", o.disable_api_termination),
        "disableApiStop" => value(w, "disableApiStop", o.disable_api_stop),
        "instanceInitiatedShutdownBehavior" => value(
            w,
            "instanceInitiatedShutdownBehavior",
            o.shutdown_behavior.as_str(),
        ),
        "rootDeviceName" => value(w, "rootDeviceName", ROOT_DEVICE_NAME),
        "sourceDestCheck" => value(w, "sourceDestCheck", o.source_dest_check),
        "ebsOptimized" => value(w, "ebsOptimized", false),
        "enaSupport" => value(w, "enaSupport", false),
        "enclaveOptions" => {
            w.elem("enclaveOptions", |w| {
                w.leaf("enabled", false);
            });
        }
        "blockDeviceMapping" => super::instances::block_device_mapping(w, i),
        "productCodes" => {
            w.empty("productCodes");
        }
        "groupSet" => super::instances::group_set(w, i),
        "kernel" => {
            w.empty("kernel");
        }
        "ramdisk" => {
            w.empty("ramdisk");
        }
        _ => {
            w.empty("sriovNetSupport");
        }
    }
}

/// ModifyInstanceAttribute.
pub async fn modify(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: ModifyInstanceAttribute,
) -> Result<String, Ec2Error> {
    if r.dry_run || r.change.is_none() {
        // Existence (and ownership) is checked for no-op changes too.
        d.instance(caller, &r.instance_id).await?;
        if r.dry_run {
            return dry_run_ok();
        }
    }
    if let Some(change) = &r.change {
        d.modify_instance_attribute(caller, &r.instance_id, change)
            .await?;
    }
    Ok(return_true("ModifyInstanceAttribute", rid))
}

/// GetConsoleScreenshot: instances have a serial console only.
pub async fn screenshot(
    d: &Domain,
    caller: &Caller,
    _rid: &str,
    r: GetConsoleScreenshot,
) -> Result<String, Ec2Error> {
    d.instance(caller, &r.instance_id).await?;
    Err(Ec2Error::new(
        ErrorCode::Unsupported,
        "Instances of this endpoint have no graphical console: use GetConsoleOutput",
    ))
}
