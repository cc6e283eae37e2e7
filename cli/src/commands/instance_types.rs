//! `nubis admin instance-types list|put|delete`: the operator's catalogue.

use nubis_proto::compute::v1 as pb;

use super::zones::TypeView;
use super::Ctx;
use crate::cli::{InstanceTypesCmd, TypeLimitsArgs};
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
            limits,
        } => client
            .admin
            .put_instance_type(pb::PutInstanceTypeRequest {
                instance_type: name,
                vcpus,
                memory_mib,
                limits: limits_in(&limits),
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

/// The request's limits: none unless at least one flag was given.
fn limits_in(a: &TypeLimitsArgs) -> Option<pb::InstanceTypeLimits> {
    let all = [
        a.disk_bps,
        a.disk_iops,
        a.net_tx_bps,
        a.net_tx_pps,
        a.net_rx_bps,
        a.net_rx_pps,
    ];
    all.iter()
        .any(Option::is_some)
        .then(|| pb::InstanceTypeLimits {
            disk_bps: a.disk_bps.unwrap_or(0),
            disk_iops: a.disk_iops.unwrap_or(0),
            net_tx_bps: a.net_tx_bps.unwrap_or(0),
            net_tx_pps: a.net_tx_pps.unwrap_or(0),
            net_rx_bps: a.net_rx_bps.unwrap_or(0),
            net_rx_pps: a.net_rx_pps.unwrap_or(0),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_sent_only_when_one_is_given() {
        assert_eq!(limits_in(&TypeLimitsArgs::default()), None);
        let l = limits_in(&TypeLimitsArgs {
            disk_iops: Some(500),
            ..TypeLimitsArgs::default()
        })
        .unwrap();
        assert_eq!((l.disk_iops, l.disk_bps, l.net_rx_pps), (500, 0, 0));
    }
}
