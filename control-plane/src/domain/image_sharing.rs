//! What an image's owner does with it beyond registering: CopyImage (within
//! the region), ModifyImageAttribute (`launchPermission`, `description`)
//! and the attributes DescribeImageAttribute reads.
//!
//! Owns the rules: only the owner (or the operator) changes an image; only
//! the operator makes an image public (`Group=all`), as only the operator
//! registers public ones; a copy is a new image of the caller made from one
//! it may launch, idempotent on `ClientToken` (the token fixes the new
//! image's id, so a retry, or a race of two, creates one image). An image the
//! caller may not launch is `InvalidAMIID.NotFound` to it; one it may launch
//! but does not own is `UnauthorizedOperation` to change.

use sha2::{Digest, Sha256};

use crate::domain::images::not_found;
use crate::domain::model::{now_ms, Image};
use crate::domain::{Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId};

/// Most accounts one image is shared with.
pub const MAX_LAUNCH_PERMISSIONS: usize = 1_000;

/// CopyImage parameters (the source region is checked by the edge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyImageInput {
    /// The image copied.
    pub source_image_id: String,
    /// The copy's name (3..=128 characters, unique among the caller's).
    pub name: String,
    /// The copy's description (none: the source's).
    pub description: Option<String>,
    /// Idempotency token (empty: none).
    pub client_token: String,
    /// Copy the source's tags (`CopyImageTags`).
    pub copy_tags: bool,
}

/// A change of an image's launch permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPermissionChange {
    /// Accounts granted.
    pub add_accounts: Vec<AccountId>,
    /// Accounts no longer granted.
    pub remove_accounts: Vec<AccountId>,
    /// `Group=all` added: public.
    pub add_public: bool,
    /// `Group=all` removed: private.
    pub remove_public: bool,
}

/// What ModifyImageAttribute changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChange {
    /// `launchPermission`.
    LaunchPermission(LaunchPermissionChange),
    /// `description`.
    Description(String),
}

/// The id of the copy `token` makes for `account`: the same token always
/// names the same image.
fn copy_id(account: &AccountId, token: &str) -> Result<ImageId> {
    let mut h = Sha256::new();
    h.update(account.as_str().as_bytes());
    h.update([0]);
    h.update(token.as_bytes());
    let hex = hex::encode(h.finalize());
    ImageId::parse(&format!("{}{}", ImageId::PREFIX, &hex[..17]))
}

impl Domain {
    /// An image the caller may launch, and whether it may change it.
    async fn image_for(&self, caller: &Caller, id: &str) -> Result<(Image, bool)> {
        let account = caller.account()?;
        let id = ImageId::parse(id)?;
        let img = self.visible_image(&account, &id).await?;
        let owns = img.owner == account || caller.is_operator();
        Ok((img, owns))
    }

    /// The image `id` for DescribeImageAttribute: owner only, as EC2 (a
    /// grantee may launch and describe it, not read its attributes).
    pub async fn image_attributes(&self, caller: &Caller, id: &str) -> Result<Image> {
        let (img, owns) = self.image_for(caller, id).await?;
        if !owns {
            return Err(Error::Unauthorized(format!(
                "image {} belongs to another account",
                img.id
            )));
        }
        Ok(img)
    }

    /// ModifyImageAttribute.
    pub async fn modify_image_attribute(
        &self,
        caller: &Caller,
        id: &str,
        change: &ImageChange,
    ) -> Result<Image> {
        let img = self.image_attributes(caller, id).await?;
        if let ImageChange::Description(d) = change {
            if d.chars().count() > 255 {
                return Err(Error::invalid("descriptions are at most 255 characters"));
            }
        }
        if let ImageChange::LaunchPermission(c) = change {
            if (c.add_public || c.remove_public) && !caller.is_operator() {
                return Err(Error::Unauthorized(
                    "only the operator makes images public or private (Group=all)".into(),
                ));
            }
            if c.add_public && c.remove_public {
                return Err(Error::invalid_code(
                    "InvalidParameterCombination",
                    "the group 'all' cannot be both added and removed",
                ));
            }
            // Any well-formed account id may be granted, as on EC2: whether
            // an account exists is not revealed.
        }
        let key = self.store.images().key(&img.id);
        let updated = self
            .store
            .repo::<Image>()
            .update(&key, |cur| {
                let mut next = cur.clone();
                match change {
                    ImageChange::Description(d) => next.description = d.clone(),
                    ImageChange::LaunchPermission(c) => {
                        next.launch_permissions
                            .retain(|a| !c.remove_accounts.contains(a));
                        for a in &c.add_accounts {
                            if !next.launch_permissions.contains(a) && a != &next.owner {
                                next.launch_permissions.push(a.clone());
                            }
                        }
                        if next.launch_permissions.len() > MAX_LAUNCH_PERMISSIONS {
                            return Err(Error::invalid_code(
                                "ResourceLimitExceeded",
                                format!(
                                    "an image can be shared with at most {MAX_LAUNCH_PERMISSIONS} accounts"
                                ),
                            ));
                        }
                        if c.add_public {
                            next.public = true;
                        }
                        if c.remove_public {
                            next.public = false;
                        }
                    }
                }
                Ok((next != *cur).then_some(next))
            })
            .await?;
        updated.ok_or_else(|| not_found(img.id.as_str()))
    }

    /// CopyImage: a new image of the caller with the source's contents.
    pub async fn copy_image(&self, caller: &Caller, input: CopyImageInput) -> Result<Image> {
        let account = caller.account()?;
        super::images::check_name(&input.name)?;
        if let Some(d) = &input.description {
            if d.chars().count() > 255 {
                return Err(Error::invalid("descriptions are at most 255 characters"));
            }
        }
        if input.client_token.len() > 64 {
            return Err(Error::invalid("ClientToken must be at most 64 characters"));
        }
        let id = match input.client_token.as_str() {
            "" => ImageId::generate(),
            t => copy_id(&account, t)?,
        };
        // A retry with the same token answers the copy it made.
        if !input.client_token.is_empty() {
            if let Some(done) = self.store.images().get(&id).await? {
                return same_copy(done.value, &input, &account);
            }
        }
        let (src, _) = self.image_for(caller, &input.source_image_id).await?;
        self.check_name_free(&account, &input.name).await?;
        let copy = Image {
            id,
            name: input.name.clone(),
            description: input
                .description
                .clone()
                .unwrap_or_else(|| src.description.clone()),
            image_location: src.image_location.clone(),
            manifest_sha256: src.manifest_sha256.clone(),
            owner: account.clone(),
            public: false,
            architecture: src.architecture.clone(),
            created_ms: now_ms(),
            min_memory_mib: src.min_memory_mib,
            tags: if input.copy_tags {
                src.tags
                    .iter()
                    .filter(|(k, _)| !k.starts_with("aws:"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                Default::default()
            },
            root_volume_gib: src.root_volume_gib,
            launch_permissions: Vec::new(),
            client_token: input.client_token.clone(),
        };
        // The copy and its images-quota charge in one transaction, as
        // RegisterImage (compared on the usage record).
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let quota = self.quota_state(&account).await?;
            quota.check(crate::domain::quotas::Resource::Images, 1)?;
            let mut tx = crate::store::Tx::new();
            tx.create(&self.store.images().key(&copy.id), &copy)?;
            quota.stage(
                &mut tx,
                &self.usage_key(&account),
                &[(crate::domain::quotas::Resource::Images, 1)],
            )?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(copy);
            }
            if let Some(done) = self.store.images().get(&copy.id).await? {
                // Another call with the same token won the race.
                if !input.client_token.is_empty() {
                    return same_copy(done.value, &input, &account);
                }
                return Err(Error::Contention("image id".into()));
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("image quota".into()))
    }
}

/// The copy an earlier call with the same token made, if it asked for the
/// same thing.
fn same_copy(done: Image, input: &CopyImageInput, account: &AccountId) -> Result<Image> {
    if &done.owner != account || done.name != input.name || done.client_token != input.client_token
    {
        return Err(Error::invalid_code(
            "IdempotentParameterMismatch",
            "the client token was already used with different parameters",
        ));
    }
    Ok(done)
}
