//! `nubis tags add|remove|list`.

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::{pb_tags, Ctx};
use crate::cli::TagsCmd;
use crate::error::CliError;
use crate::output::{emit, render_list, Tabular};

/// One tag on one resource.
#[derive(Debug, Serialize)]
pub struct TagView {
    /// Resource id.
    pub resource_id: String,
    /// instance | image | key-pair.
    pub resource_type: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

impl Tabular for TagView {
    fn headers() -> &'static [&'static str] {
        &["RESOURCE_ID", "TYPE", "KEY", "VALUE"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.resource_id.clone(),
            self.resource_type.clone(),
            self.key.clone(),
            self.value.clone(),
        ]
    }
}

/// Runs a `tags` subcommand.
pub async fn run(ctx: &Ctx, cmd: TagsCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    match cmd {
        TagsCmd::Add { resources, tags } => {
            client
                .compute
                .create_tags(pb::CreateTagsRequest {
                    resource_ids: resources,
                    tags: pb_tags(&tags),
                })
                .await?;
            Ok(())
        }
        TagsCmd::Remove { resources, keys } => {
            client
                .compute
                .delete_tags(pb::DeleteTagsRequest {
                    resource_ids: resources,
                    tags: keys
                        .into_iter()
                        .map(|key| pb::DeleteTag { key, value: None })
                        .collect(),
                })
                .await?;
            Ok(())
        }
        TagsCmd::List { resources } => {
            let filters = if resources.is_empty() {
                Vec::new()
            } else {
                vec![pb::Filter {
                    name: "resource-id".into(),
                    values: resources,
                }]
            };
            let mut views = Vec::new();
            let mut next_token = String::new();
            loop {
                let resp = client
                    .compute
                    .describe_tags(pb::DescribeTagsRequest {
                        filters: filters.clone(),
                        max_results: 0,
                        next_token: next_token.clone(),
                    })
                    .await?
                    .into_inner();
                views.extend(resp.tags.into_iter().map(|t| TagView {
                    resource_id: t.resource_id,
                    resource_type: t.resource_type,
                    key: t.key,
                    value: t.value,
                }));
                if resp.next_token.is_empty() || resp.next_token == next_token {
                    break;
                }
                next_token = resp.next_token;
            }
            emit(&render_list(ctx.format, "tags", &views)?)
        }
    }
}
