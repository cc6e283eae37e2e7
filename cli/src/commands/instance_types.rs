//! `nubis admin instance-types list|put|delete`: the operator's catalogue.

use nubis_proto::compute::v1 as pb;

use super::zones::TypeView;
use super::Ctx;
use crate::cli::InstanceTypesCmd;
use crate::client::Client;
use crate::error::CliError;
use crate::output::{emit, render_list};

/// Runs an `admin instance-types` subcommand.
pub async fn run(ctx: &Ctx, client: &mut Client, cmd: InstanceTypesCmd) -> Result<(), CliError> {
    let views: Vec<TypeView> = match cmd {
        InstanceTypesCmd::List => client
            .admin
            .list_instance_types(pb::ListInstanceTypesRequest {})
            .await?
            .into_inner()
            .instance_types
            .into_iter()
            .map(TypeView::from)
            .collect(),
        InstanceTypesCmd::Put {
            name,
            vcpus,
            memory_mib,
        } => client
            .admin
            .put_instance_type(pb::PutInstanceTypeRequest {
                instance_type: name,
                vcpus,
                memory_mib,
            })
            .await?
            .into_inner()
            .instance_type
            .into_iter()
            .map(TypeView::from)
            .collect(),
        InstanceTypesCmd::Delete { name } => {
            client
                .admin
                .delete_instance_type(pb::DeleteInstanceTypeRequest {
                    instance_type: name.clone(),
                })
                .await?;
            eprintln!("deleted instance type {name}");
            return Ok(());
        }
    };
    emit(&render_list(ctx.format, "instance_types", &views)?)
}
