//! Tag actions: CreateTags, DeleteTags, DescribeTags over instances, images,
//! key pairs, Elastic IPs, internet gateways and route tables of the
//! caller's account.

use super::{domain_filters, dry_run_ok, return_true, tag_pairs};
use crate::domain::tags::TagDescription;
use crate::domain::{Caller, Domain};
use crate::ec2::error::Ec2Error;
use crate::ec2::requests::{CreateTags, DeleteTags, DescribeTags};
use crate::ec2::xml::XmlWriter;

/// CreateTags.
pub async fn create(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: CreateTags,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        caller.account()?;
        return dry_run_ok();
    }
    d.create_tags(caller, &r.resource_ids, &tag_pairs(&r.tags))
        .await?;
    Ok(return_true("CreateTags", rid))
}

/// DeleteTags.
pub async fn delete(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DeleteTags,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        caller.account()?;
        return dry_run_ok();
    }
    d.delete_tags(caller, &r.resource_ids, &r.tags).await?;
    Ok(return_true("DeleteTags", rid))
}

/// DescribeTags with pagination.
pub async fn describe(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeTags,
) -> Result<String, Ec2Error> {
    let (tags, next) = d
        .describe_tags(
            caller,
            &domain_filters(r.filters),
            r.page.max_results.unwrap_or(0),
            r.page.next_token.as_deref(),
        )
        .await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeTags", rid);
    w.list("tagSet", &tags, |w, t: &TagDescription| {
        w.leaf("resourceId", &t.resource_id);
        w.leaf("resourceType", t.resource_type);
        w.leaf("key", &t.key);
        w.leaf("value", &t.value);
    });
    w.leaf_opt("nextToken", next);
    Ok(w.finish())
}
