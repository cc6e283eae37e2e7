//! Image actions: DescribeImages, RegisterImage, DeregisterImage.
//!
//! `ImageLocation` names an image the agents have (a directory under their
//! image store, e.g. `hello`); there is no S3 bundle.

use super::{domain_filters, dry_run_ok, return_true, tag_pairs, time_ms};
use crate::domain::images::RegisterImageInput;
use crate::domain::model::Image;
use crate::domain::{Caller, Domain};
use crate::ec2::error::Ec2Error;
use crate::ec2::requests::{DeregisterImage, DescribeImages, RegisterImage};
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
            &domain_filters(r.filters),
            r.page.max_results.unwrap_or(0),
            r.page.next_token.as_deref(),
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

fn image(w: &mut XmlWriter, i: &Image) {
    w.leaf("imageId", &i.id);
    w.leaf("imageLocation", &i.image_location);
    w.leaf("imageState", "available");
    w.leaf("imageOwnerId", &i.owner);
    w.time("creationDate", time_ms(i.created_ms));
    w.bool("isPublic", i.public);
    w.leaf("architecture", &i.architecture);
    w.leaf("imageType", "machine");
    w.leaf("name", &i.name);
    w.leaf("description", &i.description);
    w.leaf("rootDeviceType", "instance-store");
    w.empty("blockDeviceMapping");
    w.leaf("virtualizationType", "hvm");
    w.leaf("platformDetails", "Linux/UNIX");
    w.list("tagSet", &i.tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
}
