//! `nubis images list|register|deregister`.

use std::collections::BTreeMap;

use nubis_proto::compute::v1 as pb;
use serde::Serialize;
use sha2::Digest;

use super::{read_file, tag_map, Ctx};
use crate::cli::ImagesCmd;
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Tabular};

/// An image.
#[derive(Debug, Serialize)]
pub struct ImageView {
    /// Image id.
    pub image_id: String,
    /// Name.
    pub name: String,
    /// Image directory name on the hosts.
    pub image_location: String,
    /// available | deregistered.
    pub state: String,
    /// Visible to every account.
    pub public: bool,
    /// Owner account.
    pub owner_id: String,
    /// Minimum memory.
    pub min_memory_mib: u32,
    /// Required manifest hash (empty: any).
    pub manifest_sha256: String,
    /// Architecture.
    pub architecture: String,
    /// Creation time.
    pub creation_date: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl Tabular for ImageView {
    fn headers() -> &'static [&'static str] {
        &[
            "IMAGE_ID",
            "NAME",
            "LOCATION",
            "STATE",
            "PUBLIC",
            "MIN_MEMORY_MIB",
            "OWNER",
            "CREATED",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.image_id.clone(),
            self.name.clone(),
            self.image_location.clone(),
            self.state.clone(),
            self.public.to_string(),
            self.min_memory_mib.to_string(),
            self.owner_id.clone(),
            self.creation_date.clone(),
        ]
    }
}

impl From<pb::Image> for ImageView {
    fn from(i: pb::Image) -> Self {
        Self {
            tags: tag_map(&i.tags),
            image_id: i.image_id,
            name: i.name,
            image_location: i.image_location,
            state: i.state,
            public: i.public,
            owner_id: i.owner_id,
            min_memory_mib: i.min_memory_mib,
            manifest_sha256: i.manifest_sha256,
            architecture: i.architecture,
            creation_date: rfc3339_ms(i.creation_date_unix_ms),
            description: i.description,
        }
    }
}

/// `--manifest`: 64 hex digits as is, otherwise a file whose sha256 is taken.
pub fn manifest_sha256(arg: &str) -> Result<String, CliError> {
    if arg.len() == 64 && arg.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(arg.to_ascii_lowercase());
    }
    let data = read_file(std::path::Path::new(arg))?;
    Ok(hex::encode(sha2::Sha256::digest(&data)))
}

/// The size in GiB, rounded up, of the root disk a manifest.json names
/// (`"disk"`, sized in `"files"` by deploy/images/build.sh); `None` when
/// `arg` is not such a file or the image has no disk.
pub fn manifest_root_gib(arg: &str) -> Option<u32> {
    let data = std::fs::read(arg).ok()?;
    let m: serde_json::Value = serde_json::from_slice(&data).ok()?;
    let disk = m.get("disk")?.as_str()?;
    let bytes = m.get("files")?.get(disk)?.get("size")?.as_u64()?;
    u32::try_from(bytes.div_ceil(1 << 30))
        .ok()
        .filter(|g| *g > 0)
}

#[derive(Debug, Serialize)]
struct Registered {
    image_id: String,
}

/// Runs an `images` subcommand.
pub async fn run(ctx: &Ctx, cmd: ImagesCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    match cmd {
        ImagesCmd::List => {
            let resp = client
                .compute
                .describe_images(pb::DescribeImagesRequest::default())
                .await?
                .into_inner();
            let views: Vec<ImageView> = resp.images.into_iter().map(ImageView::from).collect();
            emit(&render_list(ctx.format, "images", &views)?)
        }
        ImagesCmd::Register {
            name,
            location,
            description,
            manifest,
            min_memory_mib,
            root_volume_gib,
            public,
        } => {
            let manifest_sha256 = match &manifest {
                Some(m) => manifest_sha256(m)?,
                None => String::new(),
            };
            let root_volume_gib = root_volume_gib
                .or_else(|| manifest.as_deref().and_then(manifest_root_gib))
                .unwrap_or(0);
            let resp = client
                .compute
                .register_image(pb::RegisterImageRequest {
                    image_location: location.unwrap_or_else(|| name.clone()),
                    name,
                    description,
                    manifest_sha256,
                    public,
                    min_memory_mib,
                    architecture: String::new(),
                    root_volume_gib,
                })
                .await?
                .into_inner();
            emit(&render_record(
                ctx.format,
                &Registered {
                    image_id: resp.image_id,
                },
            )?)
        }
        ImagesCmd::Deregister { image_id } => {
            client
                .compute
                .deregister_image(pb::DeregisterImageRequest { image_id })
                .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_size_from_a_manifest_with_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        std::fs::write(
            &p,
            r#"{"disk":"rootfs.ext4","files":{"rootfs.ext4":{"sha256":"ab","size":1073741825}}}"#,
        )
        .unwrap();
        assert_eq!(manifest_root_gib(p.to_str().unwrap()), Some(2));
        std::fs::write(&p, r#"{"kernel":"kernel","files":{}}"#).unwrap();
        assert_eq!(manifest_root_gib(p.to_str().unwrap()), None);
        assert_eq!(manifest_root_gib(&"ab".repeat(32)), None);
    }

    #[test]
    fn manifest_hash_from_hex_or_file() {
        let hex64 = "AB".repeat(32);
        assert_eq!(manifest_sha256(&hex64).unwrap(), "ab".repeat(32));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            manifest_sha256(p.to_str().unwrap()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            manifest_sha256("/nonexistent/manifest.json"),
            Err(CliError::ReadFile { .. })
        ));
    }
}
