//! Image actions: DescribeImages, RegisterImage, DeregisterImage,
//! CopyImage, DescribeImageAttribute, ModifyImageAttribute.
//!
//! `ImageLocation` names an image the agents have (a directory under their
//! image store, e.g. `hello`); there is no S3 bundle. An image's root disk
//! is shown as an EBS mapping of `/dev/xvda` made from snapshot `snap-` +
//! the image's hex, of the image's size.

use super::{domain_filters, dry_run_ok, return_true, tag_pairs, time_ms};
use crate::domain::image_sharing::ImageChange;
use crate::domain::images::{owner_alias, shown_volume_gib, snapshot_id, RegisterImageInput};
use crate::domain::model::{Image, ROOT_DEVICE_NAME};
use crate::domain::{Caller, Domain};
use crate::ec2::error::{Ec2Error, ErrorCode};
use crate::ec2::requests::{
    CopyImage, DeregisterImage, DescribeImageAttribute, DescribeImages, ModifyImageAttribute,
    RegisterImage,
};
use crate::ec2::xml::XmlWriter;
use crate::ids::ImageId;

/// DescribeImages, paged with `MaxResults` (5..=1000) and `NextToken`.
pub async fn describe(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeImages,
) -> Result<String, Ec2Error> {
    let (images, next) = d
        .describe_images_page(
            caller,
            &r.image_ids,
            &r.owners,
            &r.executable_by,
            &domain_filters(r.filters),
            crate::domain::images::ImagePage {
                max_results: r.page.max_results.unwrap_or(0),
                next_token: r.page.next_token.as_deref(),
            },
        )
        .await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeImages", rid);
    w.list("imagesSet", &images, image);
    w.leaf_opt("nextToken", next);
    Ok(w.finish())
}

/// RegisterImage.
pub async fn register(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: RegisterImage,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        caller.account()?;
        return dry_run_ok();
    }
    let img = d
        .register_image(
            caller,
            RegisterImageInput {
                name: r.name,
                description: r.description.unwrap_or_default(),
                image_location: r.image_location.unwrap_or_default(),
                architecture: "x86_64".into(),
                root_volume_gib: r.root_volume_gib.unwrap_or(0),
                ..RegisterImageInput::default()
            },
        )
        .await?;
    if !r.tags.is_empty() {
        d.create_tags(caller, &[img.id.to_string()], &tag_pairs(&r.tags))
            .await?;
    }
    let mut w = XmlWriter::response("RegisterImage", rid);
    w.leaf("imageId", &img.id);
    Ok(w.finish())
}

/// DeregisterImage.
pub async fn deregister(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DeregisterImage,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        let account = caller.account()?;
        d.visible_image(&account, &ImageId::parse(&r.image_id)?)
            .await?;
        return dry_run_ok();
    }
    d.deregister_image(caller, &r.image_id).await?;
    Ok(return_true("DeregisterImage", rid))
}

/// CopyImage (within this region only).
pub async fn copy(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: CopyImage,
) -> Result<String, Ec2Error> {
    let region = &d.config().region;
    if &r.source_region != region {
        return Err(Ec2Error::new(
            ErrorCode::InvalidParameterValue,
            format!(
                "Value ({}) for parameter SourceRegion is invalid: images are copied within region {region} only",
                r.source_region.chars().take(64).collect::<String>()
            ),
        ));
    }
    if r.dry_run {
        let account = caller.account()?;
        d.visible_image(&account, &ImageId::parse(&r.input.source_image_id)?)
            .await?;
        return dry_run_ok();
    }
    let img = d.copy_image(caller, r.input).await?;
    if !r.tags.is_empty() {
        d.create_tags(caller, &[img.id.to_string()], &tag_pairs(&r.tags))
            .await?;
    }
    let mut w = XmlWriter::response("CopyImage", rid);
    w.leaf("imageId", &img.id);
    Ok(w.finish())
}

/// DescribeImageAttribute (the owner's images only).
pub async fn describe_attribute(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeImageAttribute,
) -> Result<String, Ec2Error> {
    let i = d.image_attributes(caller, &r.image_id).await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeImageAttribute", rid);
    w.leaf("imageId", &i.id);
    let value = |w: &mut XmlWriter, name: &'static str, v: &str| {
        w.elem(name, |w| {
            w.leaf("value", v);
        });
    };
    match r.attribute {
        "description" => value(&mut w, "description", &i.description),
        "launchPermission" => {
            let mut items: Vec<(bool, String)> = i
                .launch_permissions
                .iter()
                .map(|a| (false, a.to_string()))
                .collect();
            if i.public {
                items.insert(0, (true, "all".into()));
            }
            w.list("launchPermission", &items, |w, (group, v)| {
                w.leaf(if *group { "group" } else { "userId" }, v);
            });
        }
        "blockDeviceMapping" => block_device_mapping(&mut w, &i),
        "bootMode" => value(&mut w, "bootMode", "legacy-bios"),
        "imdsSupport" => {
            w.empty("imdsSupport");
        }
        "deregistrationProtection" => value(&mut w, "deregistrationProtection", "disabled"),
        "lastLaunchedTime" => {
            w.empty("lastLaunchedTime");
        }
        other => {
            w.empty(other);
        }
    }
    Ok(w.finish())
}

/// ModifyImageAttribute (owner only; `Group=all` operator only).
pub async fn modify_attribute(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: ModifyImageAttribute,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        d.image_attributes(caller, &r.image_id).await?;
        if let ImageChange::LaunchPermission(c) = &r.change {
            if (c.add_public || c.remove_public) && !caller.is_operator() {
                return Err(Ec2Error::new(
                    ErrorCode::UnauthorizedOperation,
                    "only the operator makes images public or private (Group=all)",
                ));
            }
        }
        return dry_run_ok();
    }
    d.modify_image_attribute(caller, &r.image_id, &r.change)
        .await?;
    Ok(return_true("ModifyImageAttribute", rid))
}

/// The image's root device as an EBS mapping.
fn block_device_mapping(w: &mut XmlWriter, i: &Image) {
    w.list("blockDeviceMapping", std::slice::from_ref(i), |w, i| {
        w.leaf("deviceName", ROOT_DEVICE_NAME);
        w.elem("ebs", |w| {
            w.leaf("snapshotId", snapshot_id(&i.id));
            w.leaf("volumeSize", shown_volume_gib(i));
            w.bool("deleteOnTermination", true);
            w.leaf("volumeType", "gp2");
            w.bool("encrypted", false);
        });
    });
}

fn image(w: &mut XmlWriter, i: &Image) {
    w.leaf("imageId", &i.id);
    w.leaf("imageLocation", &i.image_location);
    w.leaf("imageState", "available");
    w.leaf("imageOwnerId", &i.owner);
    w.leaf_opt("imageOwnerAlias", owner_alias(i));
    w.time("creationDate", time_ms(i.created_ms));
    w.bool("isPublic", i.public);
    w.leaf("architecture", &i.architecture);
    w.leaf("imageType", "machine");
    w.leaf("name", &i.name);
    w.leaf("description", &i.description);
    w.leaf("rootDeviceType", "ebs");
    w.leaf("rootDeviceName", ROOT_DEVICE_NAME);
    block_device_mapping(w, i);
    w.leaf("virtualizationType", "hvm");
    w.leaf("hypervisor", "xen");
    w.leaf("bootMode", "legacy-bios");
    w.leaf("platformDetails", "Linux/UNIX");
    w.leaf("usageOperation", "RunInstances");
    w.bool("enaSupport", false);
    w.list("tagSet", &i.tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
}
