//! Images (AMIs): a registered name for an image agents have on disk
//! (`image_location` = the name in deploy/images, optionally pinned to a
//! manifest sha256). Public images (operator) are visible to every account;
//! others only to their owner.

use crate::domain::filters::{self, Filter};
use crate::domain::model::{now_ms, Image};
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, ImageId};

/// Filter names DescribeImages supports.
pub const IMAGE_FILTERS: &[&str] = &[
    "image-id",
    "name",
    "state",
    "owner-id",
    "is-public",
    "architecture",
    "tag:",
    "tag-key",
    "tag-value",
];

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
}

fn not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidAMIID.NotFound",
        format!("the image id '[{id}]' does not exist"),
    )
}

impl Domain {
    /// RegisterImage.
    pub async fn register_image(
        &self,
        caller: &Caller,
        input: RegisterImageInput,
    ) -> Result<Image> {
        let account = caller.account()?;
        let n = input.name.chars().count();
        if !(3..=128).contains(&n)
            || !input
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
        {
            return Err(Error::invalid(
                "image names are 3 to 128 characters: letters, digits, ( ) [ ] space . / - ' @ _",
            ));
        }
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
        let mut pages = self.store.images().all();
        let mut taken = false;
        while let Some(page) = pages.next().await? {
            taken |= page
                .iter()
                .any(|(_, v)| v.value.owner == account && v.value.name == input.name);
        }
        if taken {
            return Err(Error::AlreadyExists {
                code: "InvalidAMIName.Duplicate".into(),
                message: format!("an image named '{}' already exists", input.name),
            });
        }
        let image = Image {
            id: ImageId::generate(),
            name: input.name,
            description: input.description,
            image_location: input.image_location,
            manifest_sha256: input.manifest_sha256.to_ascii_lowercase(),
            owner: account,
            public: input.public,
            architecture: arch,
            created_ms: now_ms(),
            min_memory_mib: input.min_memory_mib,
            tags: Default::default(),
        };
        if !self.store.images().create(&image).await? {
            return Err(Error::Contention("image id".into()));
        }
        Ok(image)
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
        if img.public || &img.owner == account || *account == AccountId::operator() {
            Ok(img)
        } else {
            Err(not_found(id.as_str()))
        }
    }

    /// DescribeImages.
    pub async fn describe_images(
        &self,
        caller: &Caller,
        ids: &[String],
        owners: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Image>> {
        let account = caller.account()?;
        filters::check(filters, IMAGE_FILTERS)?;
        let mut wanted = Vec::new();
        for s in ids {
            wanted.push(ImageId::parse(s)?);
        }
        let mut owner_ids = Vec::new();
        for o in owners {
            if o == "self" {
                owner_ids.push(account.clone());
            } else if o == "amazon" || o == "nubis" {
                // The platform's own images, as EC2's `amazon` alias names
                // Amazon's: those the operator account registered.
                owner_ids.push(AccountId::operator());
            } else {
                owner_ids.push(AccountId::parse(o)?);
            }
        }
        let all = self.store.images().all().collect().await?;
        let visible: Vec<Image> = all
            .into_iter()
            .map(|(_, v)| v.value)
            .filter(|i| i.public || i.owner == account || caller.is_operator())
            .collect();
        if !wanted.is_empty() {
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|w| !visible.iter().any(|i| &i.id == *w))
                .map(|w| w.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(not_found(&missing.join(", ")));
            }
        }
        Ok(visible
            .into_iter()
            .filter(|i| wanted.is_empty() || wanted.contains(&i.id))
            .filter(|i| owner_ids.is_empty() || owner_ids.contains(&i.owner))
            .filter(|i| filters.iter().all(|f| image_matches(i, f)))
            .collect())
    }

    /// DeregisterImage (owner only; running instances are not affected).
    pub async fn deregister_image(&self, caller: &Caller, id: &str) -> Result<()> {
        let account = caller.account()?;
        let id = ImageId::parse(id)?;
        let key = self.store.images().key(&id);
        let cur = self
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
        if !self.store.repo().delete_if_unchanged(&key, &cur).await? {
            return Err(Error::Contention(key));
        }
        Ok(())
    }
}

fn image_matches(i: &Image, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &i.tags) {
        return m;
    }
    let v = &f.values;
    match f.name.as_str() {
        "image-id" => filters::any_matches(v, &[i.id.as_str()]),
        "name" => filters::any_matches(v, &[&i.name]),
        "state" => filters::any_matches(v, &["available"]),
        "owner-id" => filters::any_matches(v, &[i.owner.as_str()]),
        "is-public" => filters::any_matches(v, &[if i.public { "true" } else { "false" }]),
        "architecture" => filters::any_matches(v, &[&i.architecture]),
        _ => false,
    }
}
