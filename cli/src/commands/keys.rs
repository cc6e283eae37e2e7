//! `nubis keys create|import|list|delete`.

use std::collections::BTreeMap;

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::{read_file, tag_map, Ctx};
use crate::cli::KeysCmd;
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// A key pair.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Key pair id.
    pub key_pair_id: String,
    /// Name.
    pub key_name: String,
    /// ed25519 | rsa.
    pub key_type: String,
    /// Fingerprint, as EC2 computes it.
    pub key_fingerprint: String,
    /// Creation time.
    pub create_time: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl Tabular for KeyView {
    fn headers() -> &'static [&'static str] {
        &["KEY_NAME", "KEY_PAIR_ID", "TYPE", "FINGERPRINT", "CREATED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.key_name.clone(),
            self.key_pair_id.clone(),
            self.key_type.clone(),
            self.key_fingerprint.clone(),
            self.create_time.clone(),
        ]
    }
}

impl From<pb::KeyPairInfo> for KeyView {
    fn from(k: pb::KeyPairInfo) -> Self {
        Self {
            tags: tag_map(&k.tags),
            key_pair_id: k.key_pair_id,
            key_name: k.key_name,
            key_type: k.key_type,
            key_fingerprint: k.key_fingerprint,
            create_time: rfc3339_ms(k.create_time_unix_ms),
        }
    }
}

/// `keys create` in JSON: the key and its private material.
#[derive(Debug, Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    key: KeyView,
    key_material: String,
}

fn write_private(path: &std::path::Path, material: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(material.as_bytes()).map_err(io)
}

/// Runs a `keys` subcommand.
pub async fn run(ctx: &Ctx, cmd: KeysCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    match cmd {
        KeysCmd::Create {
            name,
            key_type,
            out,
        } => {
            let resp = client
                .compute
                .create_key_pair(pb::CreateKeyPairRequest {
                    key_name: name,
                    key_type,
                    tags: Vec::new(),
                })
                .await?
                .into_inner();
            let key = KeyView::from(resp.key_pair.unwrap_or_default());
            if let Some(path) = &out {
                write_private(path, &resp.key_material)?;
                return emit(&render_record(ctx.format, &key)?);
            }
            match ctx.format {
                // The private key alone on stdout, so `nubis keys create k > k.pem` works.
                Format::Table => {
                    eprintln!(
                        "created key pair {} ({}); the private key below is shown only once",
                        key.key_name, key.key_fingerprint
                    );
                    emit(&resp.key_material)
                }
                Format::Json => emit(&render_record(
                    Format::Json,
                    &CreatedKey {
                        key,
                        key_material: resp.key_material,
                    },
                )?),
            }
        }
        KeysCmd::Import { name, public_key } => {
            let material = read_file(&public_key)?;
            let resp = client
                .compute
                .import_key_pair(pb::ImportKeyPairRequest {
                    key_name: name,
                    public_key_material: material,
                    tags: Vec::new(),
                })
                .await?
                .into_inner();
            emit(&render_record(
                ctx.format,
                &KeyView::from(resp.key_pair.unwrap_or_default()),
            )?)
        }
        KeysCmd::List => {
            let resp = client
                .compute
                .describe_key_pairs(pb::DescribeKeyPairsRequest::default())
                .await?
                .into_inner();
            let views: Vec<KeyView> = resp.key_pairs.into_iter().map(KeyView::from).collect();
            emit(&render_list(ctx.format, "key_pairs", &views)?)
        }
        KeysCmd::Delete { name } => {
            client
                .compute
                .delete_key_pair(pb::DeleteKeyPairRequest {
                    key_name: name,
                    key_pair_id: String::new(),
                })
                .await?;
            Ok(())
        }
    }
}
