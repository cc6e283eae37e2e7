//! Images (AMIs): a registered name for an image agents have on disk
//! (`image_location` = the name in deploy/images, optionally pinned to a
//! manifest sha256), with the size of its root disk.
//!
//! Owns who sees and launches an image: public images (the operator's) are
//! launchable by every account, the others by their owner and the accounts
//! the owner granted a launch permission ([`Image::launch_permissions`],
//! changed by ModifyImageAttribute in [`super::image_sharing`], which also
//! owns CopyImage). An image an account may not launch is, to it, one that
//! does not exist (`InvalidAMIID.NotFound`).

use crate::domain::filters::{self, Filter};
use crate::domain::model::{now_ms, Image, ROOT_DEVICE_NAME};
use crate::domain::quotas::Resource;
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId};
use crate::store::Tx;

/// Filter names DescribeImages supports.
pub const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "owner-id",
    "owner-alias",
    "is-public",
    "architecture",
    "image-type",
    "root-device-type",
    "root-device-name",
    "virtualization-type",
    "hypervisor",
    "description",
    "block-device-mapping.device-name",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "block-device-mapping.delete-on-termination",
    "block-device-mapping.encrypted",
    "tag:",
    "tag-key",
    "tag-value",
];

/// The alias DescribeImages shows (`imageOwnerAlias`) and `Owner.N` accepts
/// for the operator's images, as EC2's for Amazon's own.
pub const OPERATOR_ALIAS: &str = "amazon";

/// The id of the snapshot an image's root volume is shown made from
/// (`snap-` + the image's hex): images have no separate snapshots.
pub fn snapshot_id(id: &ImageId) -> String {
    format!("snap-{}", &id.as_str()[ImageId::PREFIX.len()..])
}

/// The root volume size an image shows (`volumeSize`): its disk's, at least
/// 1 GiB (EC2's smallest volume).
pub fn shown_volume_gib(i: &Image) -> u32 {
    i.root_volume_gib.max(1)
}

/// May `account` launch (and so see) image `i`?
pub fn launchable_by(i: &Image, account: &AccountId) -> bool {
    i.public
        || &i.owner == account
        || *account == AccountId::operator()
        || i.launch_permissions.contains(account)
}

/// RegisterImage parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterImageInput {
    /// AMI name (3..=128 characters).
    pub name: String,
    /// Free text (<= 255).
    pub description: String,
    /// Agent image name.
    pub image_location: String,
    /// Pinned manifest (64 hex or empty).
    pub manifest_sha256: String,
    /// Visible to all (operator only).
    pub public: bool,
    /// Minimum memory.
    pub min_memory_mib: u32,
    /// x86_64 (default).
    pub architecture: String,
    /// Size of the image's root disk in GiB (0: not known).
    pub root_volume_gib: u32,
}

pub(super) fn not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidAMIID.NotFound",
        format!("the image id '[{id}]' does not exist"),
    )
}

/// EC2's rule for image names.
pub(super) fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if !(3..=128).contains(&n)
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
    {
        return Err(Error::invalid(
            "image names are 3 to 128 characters: letters, digits, ( ) [ ] space . / - ' @ _",
        ));
    }
    Ok(())
}

/// Which page of DescribeImages: `max_results` 5..=1000 (0 = every
/// match) and the `next_token` of the previous answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImagePage<'a> {
    /// Page size; 0 = no paging.
    pub max_results: u32,
    /// Where the previous page ended.
    pub next_token: Option<&'a str>,
}

impl ImagePage<'_> {
    /// Every match in one answer.
    pub const ALL: ImagePage<'static> = ImagePage {
        max_results: 0,
        next_token: None,
    };
}

impl Domain {
    /// `InvalidAMIName.Duplicate` when `account` has an image named `name`.
    pub(super) async fn check_name_free(&self, account: &AccountId, name: &str) -> Result<()> {
        let mut pages = self.store.images().all();
        let mut taken = false;
        while let Some(page) = pages.next().await? {
            taken |= page
                .iter()
                .any(|(_, v)| &v.value.owner == account && v.value.name == name);
        }
        if taken {
            return Err(Error::AlreadyExists {
                code: "InvalidAMIName.Duplicate".into(),
                message: format!("an image named '{name}' already exists"),
            });
        }
        Ok(())
    }

    /// RegisterImage.
    pub async fn register_image(
        &self,
        caller: &Caller,
        input: RegisterImageInput,
    ) -> Result<Image> {
        let account = caller.account()?;
        check_name(&input.name)?;
        if input.description.chars().count() > 255 {
            return Err(Error::invalid("descriptions are at most 255 characters"));
        }
        if !validation::is_name(&input.image_location, 64) {
            return Err(Error::invalid(
                "ImageLocation must be the name of an image agents have (letters, digits, - _ .)",
            ));
        }
        let sha_ok = input.manifest_sha256.is_empty()
            || (input.manifest_sha256.len() == 64
                && input.manifest_sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        if !sha_ok {
            return Err(Error::invalid("manifest sha256 must be 64 hex digits"));
        }
        if input.public && !caller.is_operator() {
            return Err(Error::Unauthorized(
                "only the operator registers public images".into(),
            ));
        }
        self.authorize_image_location(caller, &input.image_location)
            .await?;
        let arch = if input.architecture.is_empty() {
            "x86_64".to_string()
        } else {
            input.architecture.clone()
        };
        if arch != "x86_64" {
            return Err(Error::invalid("the only supported architecture is x86_64"));
        }
        if input.root_volume_gib > super::launch::MAX_ROOT_VOLUME_GIB {
            return Err(Error::invalid(format!(
                "the root volume size must be at most {} GiB",
                super::launch::MAX_ROOT_VOLUME_GIB
            )));
        }
        self.check_name_free(&account, &input.name).await?;
        let image = Image {
            id: ImageId::generate(),
            name: input.name,
            description: input.description,
            image_location: input.image_location,
            manifest_sha256: input.manifest_sha256.to_ascii_lowercase(),
            owner: account.clone(),
            public: input.public,
            architecture: arch,
            created_ms: now_ms(),
            min_memory_mib: input.min_memory_mib,
            tags: Default::default(),
            root_volume_gib: input.root_volume_gib,
            launch_permissions: Vec::new(),
            client_token: String::new(),
        };
        // The image and its quota charge in one transaction (compared on
        // the usage record: racing registrations cannot pass the limit).
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let quota = self.quota_state(&account).await?;
            quota.check(Resource::Images, 1)?;
            let mut tx = Tx::new();
            tx.create(&self.store.images().key(&image.id), &image)?;
            quota.stage(&mut tx, &self.usage_key(&account), &[(Resource::Images, 1)])?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(image);
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention("image quota".into()))
    }

    /// An image the account may launch or see.
    pub async fn visible_image(&self, account: &AccountId, id: &ImageId) -> Result<Image> {
        let img = self
            .store
            .images()
            .get(id)
            .await?
            .ok_or_else(|| not_found(id.as_str()))?
            .value;
        if launchable_by(&img, account) {
            Ok(img)
        } else {
            Err(not_found(id.as_str()))
        }
    }

    /// DescribeImages: the images the caller may launch (owned, public,
    /// shared with it; the operator sees every image; tags and launch
    /// permissions only of its own), narrowed by `ids`,
    /// `owners` (`self`, `amazon`, account ids), `executable_by` (`self`,
    /// `all`, account ids: explicit launch permissions) and `filters`;
    /// every match in one answer.
    pub async fn describe_images(
        &self,
        caller: &Caller,
        ids: &[String],
        owners: &[String],
        executable_by: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Image>> {
        Ok(self
            .describe_images_page(caller, ids, owners, executable_by, filters, ImagePage::ALL)
            .await?
            .0)
    }

    /// DescribeImages with EC2's paging: `max_results` 5..=1000 (0 = every
    /// match), `next_token` from the previous answer (not with `ids`). The
    /// store is read page by page (never the whole `images/` prefix at
    /// once); the token is the last image key returned.
    pub async fn describe_images_page(
        &self,
        caller: &Caller,
        ids: &[String],
        owners: &[String],
        executable_by: &[String],
        filters: &[Filter],
        page: ImagePage<'_>,
    ) -> Result<(Vec<Image>, Option<String>)> {
        let ImagePage {
            max_results,
            next_token,
        } = page;
        let account = caller.account()?;
        filters::check(filters, IMAGE_FILTERS)?;
        validation::max_results(max_results)?;
        let mut wanted = Vec::new();
        for s in ids {
            wanted.push(ImageId::parse(s)?);
        }
        let owner_ids = owners
            .iter()
            .map(|o| owner_of(o, &account))
            .collect::<Result<Vec<_>>>()?;
        let executors = executable_by
            .iter()
            .map(|e| match e.as_str() {
                "all" => Ok(None),
                "self" => Ok(Some(account.clone())),
                other => AccountId::parse(other).map(Some),
            })
            .collect::<Result<Vec<_>>>()?;
        let visible = |i: &Image| launchable_by(i, &account) || caller.is_operator();
        // Owner and launch-permission criteria read the stored image; tags
        // and launch permissions are the owner's, so others see neither (and
        // their filters match what they see).
        let keep = |raw: Image| -> Option<Image> {
            let chosen = (owner_ids.is_empty() || owner_ids.contains(&raw.owner))
                && (executors.is_empty()
                    || executors.iter().any(|e| match e {
                        None => raw.public,
                        Some(a) => raw.launch_permissions.contains(a),
                    }));
            if !chosen {
                return None;
            }
            let mut i = raw;
            if i.owner != account && !caller.is_operator() {
                i.tags.clear();
                i.launch_permissions.clear();
            }
            filters.iter().all(|f| image_matches(&i, f)).then_some(i)
        };
        if !wanted.is_empty() {
            if max_results != 0 || next_token.is_some() {
                return Err(Error::invalid(
                    "MaxResults/NextToken cannot be used together with ImageIds",
                ));
            }
            wanted.sort();
            wanted.dedup();
            let keys: Vec<String> = wanted.iter().map(|w| self.store.images().key(w)).collect();
            let got = self.store.get_many::<Image>(&keys).await?;
            let mut missing = Vec::new();
            let mut out = Vec::new();
            let mut found = Vec::new();
            for (w, g) in wanted.iter().zip(got) {
                match g.map(|v| v.value).filter(|i| visible(i)) {
                    Some(i) => found.push(i),
                    None => missing.push(w.as_str()),
                }
            }
            if !missing.is_empty() {
                return Err(not_found(&missing.join(", ")));
            }
            out.extend(found.into_iter().filter_map(keep));
            return Ok((out, None));
        }
        let prefix = self.store.keys().images();
        let mut after = match next_token {
            Some(t) => Some(crate::domain::instances::decode_token_under(t, &prefix)?),
            None => None,
        };
        let want = if max_results == 0 {
            usize::MAX
        } else {
            max_results as usize
        };
        let mut out = Vec::new();
        let mut limit = crate::store::MAX_PAGE;
        loop {
            let read = self
                .store
                .repo::<Image>()
                .page(&prefix, after.as_deref(), limit)
                .await?;
            limit = read.limit;
            let mut rest = read.items.into_iter().peekable();
            while let Some((k, v)) = rest.next() {
                after = Some(k);
                if let Some(i) = Some(v.value).filter(|i| visible(i)).and_then(keep) {
                    out.push(i);
                    if out.len() == want {
                        // A token only when keys follow (they may all be
                        // filtered out: the next call then answers none).
                        let more = rest.peek().is_some()
                            || (read.more
                                && self
                                    .store
                                    .first_key(
                                        &next_key(after.as_deref().unwrap_or_default()),
                                        &crate::store::prefix_end(&prefix),
                                    )
                                    .await?
                                    .is_some());
                        let token = after
                            .filter(|_| more)
                            .map(|a| crate::domain::instances::encode_token(&a));
                        return Ok((out, token));
                    }
                }
            }
            if !read.more {
                return Ok((out, None));
            }
        }
    }

    /// DeregisterImage (owner only; running instances are not affected).
    pub async fn deregister_image(&self, caller: &Caller, id: &str) -> Result<()> {
        let account = caller.account()?;
        let id = ImageId::parse(id)?;
        let key = self.store.images().key(&id);
        let mut cur = self
            .store
            .images()
            .get(&id)
            .await?
            .ok_or_else(|| not_found(id.as_str()))?;
        if cur.value.owner != account && !caller.is_operator() {
            if cur.value.public {
                return Err(Error::Unauthorized(
                    "the image belongs to another account".into(),
                ));
            }
            return Err(not_found(id.as_str()));
        }
        // Deleted with its owner's quota release, both compared: a repeated
        // deregistration finds no image and releases nothing.
        for attempt in 0..crate::store::repo::MAX_CAS_ATTEMPTS {
            let quota = self.quota_state(&cur.value.owner).await?;
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&key, &cur);
            quota.stage(
                &mut tx,
                &self.usage_key(&cur.value.owner),
                &[(Resource::Images, -1)],
            )?;
            if self.store.commit(tx).await?.is_some() {
                return Ok(());
            }
            match self.store.images().get(&id).await? {
                // Changed meanwhile (its tags), or the usage record was.
                Some(now) => cur = now,
                // Deregistered meanwhile by another call.
                None => return Err(not_found(id.as_str())),
            }
            crate::store::backoff(attempt).await;
        }
        Err(Error::Contention(key))
    }
}

/// An `Owner.N` value: `self`, the operator's alias, or an account id.
fn owner_of(o: &str, account: &AccountId) -> Result<AccountId> {
    match o {
        "self" => Ok(account.clone()),
        // The platform's own images, as EC2's `amazon` alias names Amazon's.
        OPERATOR_ALIAS | "nubis" => Ok(AccountId::operator()),
        _ => AccountId::parse(o).map_err(|_| {
            Error::invalid(format!(
                "Value ({o}) for parameter owners is invalid: expected self, {OPERATOR_ALIAS} or a 12-digit account id"
            ))
        }),
    }
}

/// The alias of an image's owner (`imageOwnerAlias`), if it has one.
pub fn owner_alias(i: &Image) -> Option<&'static str> {
    (i.owner == AccountId::operator()).then_some(OPERATOR_ALIAS)
}

/// The smallest key after `key`.
fn next_key(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}

fn image_matches(i: &Image, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &i.tags) {
        return m;
    }
    let v = &f.values;
    let one = |s: &str| filters::any_matches(v, &[s]);
    match f.name.as_str() {
        "image-id" => one(i.id.as_str()),
        "name" => one(&i.name),
        "state" => one("available"),
        "owner-id" => one(i.owner.as_str()),
        "owner-alias" => owner_alias(i).is_some_and(one),
        "is-public" => one(if i.public { "true" } else { "false" }),
        "architecture" => one(&i.architecture),
        "image-type" => one("machine"),
        "root-device-type" => one("ebs"),
        "root-device-name" | "block-device-mapping.device-name" => one(ROOT_DEVICE_NAME),
        "virtualization-type" => one("hvm"),
        "hypervisor" => one("xen"),
        "description" => one(&i.description),
        "block-device-mapping.snapshot-id" => one(&snapshot_id(&i.id)),
        "block-device-mapping.volume-size" => one(&shown_volume_gib(i).to_string()),
        "block-device-mapping.volume-type" => one("gp2"),
        "block-device-mapping.delete-on-termination" => one("true"),
        "block-device-mapping.encrypted" => one("false"),
        _ => false,
    }
}
