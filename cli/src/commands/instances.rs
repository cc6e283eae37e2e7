//! `nubis instances run|list|describe|start|stop|reboot|terminate|console|wait`.

use std::collections::BTreeMap;

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::wait::{wait_for, Target};
use super::{filter, pb_tags, read_file, tag_map, Ctx};
use crate::cli::{
    InstancesCmd, ListInstancesArgs, MetadataOptionsArgs, RunArgs, WaitArgs, WaitState,
};
use crate::client::Client;
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// Largest user data accepted (raw bytes), as in EC2.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// One instance as shown to users (table row / JSON record).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance id.
    pub instance_id: String,
    /// State name (pending, running, ...).
    pub state: String,
    /// Code of the last state change's reason (e.g. `Server.InternalError`).
    pub state_reason_code: String,
    /// Message of the last state change's reason.
    pub state_reason_message: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Instance type.
    pub instance_type: String,
    /// Image id.
    pub image_id: String,
    /// Private IPv4 address.
    pub private_ip_address: String,
    /// MAC address.
    pub mac_address: String,
    /// Public IPv4 address (empty: none).
    pub public_ip_address: String,
    /// VPC.
    pub vpc_id: String,
    /// Subnet.
    pub subnet_id: String,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// Network interfaces by device index (in a VPC).
    pub network_interfaces: Vec<InterfaceView>,
    /// Launch time, RFC 3339.
    pub launch_time: String,
    /// Key pair name.
    pub key_name: String,
    /// Reservation id.
    pub reservation_id: String,
    /// Node (operators only).
    pub node_id: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl From<&pb::Instance> for InstanceView {
    fn from(i: &pb::Instance) -> Self {
        let reason = i.state_reason.clone().unwrap_or_default();
        Self {
            instance_id: i.instance_id.clone(),
            state: state_name(i),
            state_reason_code: reason.code,
            state_reason_message: reason.message,
            availability_zone: i.availability_zone.clone(),
            instance_type: i.instance_type.clone(),
            image_id: i.image_id.clone(),
            private_ip_address: i.private_ip_address.clone(),
            mac_address: i.mac_address.clone(),
            public_ip_address: i.public_ip_address.clone(),
            vpc_id: i.vpc_id.clone(),
            subnet_id: i.subnet_id.clone(),
            security_group_ids: i.security_group_ids.clone(),
            network_interfaces: i
                .network_interfaces
                .iter()
                .map(InterfaceView::from)
                .collect(),
            launch_time: rfc3339_ms(i.launch_time_unix_ms),
            key_name: i.key_name.clone(),
            reservation_id: i.reservation_id.clone(),
            node_id: i.node_id.clone(),
            vcpus: i.vcpus,
            memory_mib: i.memory_mib,
            tags: tag_map(&i.tags),
        }
    }
}

/// One network interface of an instance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterfaceView {
    /// Interface id.
    pub network_interface_id: String,
    /// Device index (0: primary).
    pub device_index: u32,
    /// Attachment id.
    pub attachment_id: String,
    /// Subnet.
    pub subnet_id: String,
    /// Private IPv4 address.
    pub private_ip_address: String,
    /// MAC address.
    pub mac_address: String,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// Deleted with the instance.
    pub delete_on_termination: bool,
}

impl From<&pb::InstanceNetworkInterface> for InterfaceView {
    fn from(n: &pb::InstanceNetworkInterface) -> Self {
        Self {
            network_interface_id: n.network_interface_id.clone(),
            device_index: n.device_index,
            attachment_id: n.attachment_id.clone(),
            subnet_id: n.subnet_id.clone(),
            private_ip_address: n.private_ip_address.clone(),
            mac_address: n.mac_address.clone(),
            security_group_ids: n.security_group_ids.clone(),
            delete_on_termination: n.delete_on_termination,
        }
    }
}

impl Tabular for InstanceView {
    fn headers() -> &'static [&'static str] {
        &[
            "INSTANCE_ID",
            "STATE",
            "ZONE",
            "TYPE",
            "IMAGE",
            "PRIVATE_IP",
            "PUBLIC_IP",
            "LAUNCHED",
            "NAME",
            "REASON",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.instance_id.clone(),
            self.state.clone(),
            self.availability_zone.clone(),
            self.instance_type.clone(),
            self.image_id.clone(),
            self.private_ip_address.clone(),
            if self.public_ip_address.is_empty() {
                "-".into()
            } else {
                self.public_ip_address.clone()
            },
            self.launch_time.clone(),
            self.tags.get("Name").cloned().unwrap_or_default(),
            self.state_reason_code.clone(),
        ]
    }
}

/// A state change returned by start/stop/terminate.
#[derive(Debug, Clone, Serialize)]
pub struct StateChangeView {
    /// Instance id.
    pub instance_id: String,
    /// State before the call.
    pub previous_state: String,
    /// State after the call.
    pub current_state: String,
}

impl Tabular for StateChangeView {
    fn headers() -> &'static [&'static str] {
        &["INSTANCE_ID", "PREVIOUS_STATE", "CURRENT_STATE"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.instance_id.clone(),
            self.previous_state.clone(),
            self.current_state.clone(),
        ]
    }
}

fn change_views(changes: &[pb::InstanceStateChange]) -> Vec<StateChangeView> {
    changes
        .iter()
        .map(|c| StateChangeView {
            instance_id: c.instance_id.clone(),
            previous_state: c.previous_state.clone().map(|s| s.name).unwrap_or_default(),
            current_state: c.current_state.clone().map(|s| s.name).unwrap_or_default(),
        })
        .collect()
}

/// The state name of an instance (empty when absent).
pub fn state_name(i: &pb::Instance) -> String {
    i.state.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

/// Runs an `instances` subcommand.
pub async fn run(ctx: &Ctx, cmd: InstancesCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    match cmd {
        InstancesCmd::Run(args) => run_instances(ctx, &mut client, *args).await,
        InstancesCmd::List(args) => {
            let filters = list_filters(&args)?;
            let list = describe(&mut client, Vec::new(), filters).await?;
            print_instances(ctx.format, &list)
        }
        InstancesCmd::Describe { ids } => {
            let list = describe(&mut client, ids, Vec::new()).await?;
            print_instances(ctx.format, &list)
        }
        InstancesCmd::Start { ids, wait } => {
            let resp = client
                .compute
                .start_instances(pb::StartInstancesRequest {
                    instance_ids: ids.clone(),
                })
                .await?
                .into_inner();
            finish_change(
                ctx,
                &mut client,
                ids,
                &resp.starting_instances,
                &wait,
                Target::Running,
            )
            .await
        }
        InstancesCmd::Stop { ids, force, wait } => {
            let resp = client
                .compute
                .stop_instances(pb::StopInstancesRequest {
                    instance_ids: ids.clone(),
                    force,
                })
                .await?
                .into_inner();
            finish_change(
                ctx,
                &mut client,
                ids,
                &resp.stopping_instances,
                &wait,
                Target::Stopped,
            )
            .await
        }
        InstancesCmd::Terminate { ids, wait } => {
            let resp = client
                .compute
                .terminate_instances(pb::TerminateInstancesRequest {
                    instance_ids: ids.clone(),
                })
                .await?
                .into_inner();
            finish_change(
                ctx,
                &mut client,
                ids,
                &resp.terminating_instances,
                &wait,
                Target::Terminated,
            )
            .await
        }
        InstancesCmd::ModifyMetadataOptions { id, metadata } => {
            let Some(options) = metadata_options(&metadata) else {
                return Err(CliError::Usage(
                    "give at least one of --http-tokens, --http-put-response-hop-limit, \
                     --http-endpoint, --http-protocol-ipv6, --instance-metadata-tags"
                        .into(),
                ));
            };
            let r = client
                .compute
                .modify_instance_metadata_options(pb::ModifyInstanceMetadataOptionsRequest {
                    instance_id: id,
                    options: Some(options),
                })
                .await?
                .into_inner();
            let o = r.instance_metadata_options.unwrap_or_default();
            println!(
                "{} http-tokens={} hop-limit={} http-endpoint={} ipv6={} tags={} ({})",
                r.instance_id,
                o.http_tokens,
                o.http_put_response_hop_limit,
                o.http_endpoint,
                o.http_protocol_ipv6,
                o.instance_metadata_tags,
                o.state
            );
            Ok(())
        }
        InstancesCmd::Reboot { ids } => {
            client
                .compute
                .reboot_instances(pb::RebootInstancesRequest { instance_ids: ids })
                .await?;
            Ok(())
        }
        InstancesCmd::Console { id, latest } => console(ctx, &mut client, id, latest).await,
        InstancesCmd::Wait {
            ids,
            state,
            timeout,
            poll_interval,
        } => {
            let target = match state {
                WaitState::Running => Target::Running,
                WaitState::Ready => Target::Ready,
                WaitState::Stopped => Target::Stopped,
                WaitState::Terminated => Target::Terminated,
            };
            let list = wait_for(&mut client, &ids, target, timeout, poll_interval).await?;
            print_instances(ctx.format, &list)
        }
    }
}

fn print_instances(format: Format, list: &[pb::Instance]) -> Result<(), CliError> {
    let views: Vec<InstanceView> = list.iter().map(InstanceView::from).collect();
    emit(&render_list(format, "instances", &views)?)
}

async fn finish_change(
    ctx: &Ctx,
    client: &mut Client,
    ids: Vec<String>,
    changes: &[pb::InstanceStateChange],
    wait: &WaitArgs,
    target: Target,
) -> Result<(), CliError> {
    if wait.wait {
        let list = wait_for(client, &ids, target, wait.timeout, wait.poll_interval).await?;
        print_instances(ctx.format, &list)
    } else {
        emit(&render_list(
            ctx.format,
            "instances",
            &change_views(changes),
        )?)
    }
}

/// Builds the DescribeInstances filters of `instances list`.
pub fn list_filters(args: &ListInstancesArgs) -> Result<Vec<pb::Filter>, CliError> {
    let mut filters = Vec::new();
    if !args.state.is_empty() {
        filters.push(pb::Filter {
            name: "instance-state-name".into(),
            values: args.state.clone(),
        });
    }
    if let Some(z) = &args.zone {
        filters.push(filter("availability-zone", &[z]));
    }
    for t in &args.tags {
        filters.push(filter(&format!("tag:{}", t.key), &[&t.value]));
    }
    for raw in &args.filters {
        let (name, values) = raw.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--filter {raw:?} is not NAME=VALUE[,VALUE...] (e.g. instance-type=t3.nano)"
            ))
        })?;
        if name.is_empty() || values.is_empty() {
            return Err(CliError::Usage(format!(
                "--filter {raw:?} needs a name and at least one value"
            )));
        }
        filters.push(pb::Filter {
            name: name.to_string(),
            values: values.split(',').map(str::to_string).collect(),
        });
    }
    Ok(filters)
}

/// DescribeInstances, following pages, flattened over reservations.
pub async fn describe(
    client: &mut Client,
    ids: Vec<String>,
    filters: Vec<pb::Filter>,
) -> Result<Vec<pb::Instance>, CliError> {
    let mut out = Vec::new();
    let mut next_token = String::new();
    loop {
        let resp = client
            .compute
            .describe_instances(pb::DescribeInstancesRequest {
                instance_ids: ids.clone(),
                filters: filters.clone(),
                max_results: 0,
                next_token: next_token.clone(),
            })
            .await?
            .into_inner();
        out.extend(resp.reservations.into_iter().flat_map(|r| r.instances));
        if resp.next_token.is_empty() || resp.next_token == next_token {
            break;
        }
        next_token = resp.next_token;
    }
    Ok(out)
}

/// Resolves `--image`: an `ami-` id is used as is; anything else is looked up
/// by image name among the images the account can see.
async fn resolve_image(client: &mut Client, image: &str) -> Result<String, CliError> {
    if crate::cli::image_id(image).is_ok() {
        return Ok(image.to_string());
    }
    let resp = client
        .compute
        .describe_images(pb::DescribeImagesRequest {
            image_ids: Vec::new(),
            filters: vec![filter("name", &[image]), filter("state", &["available"])],
            ..Default::default()
        })
        .await?
        .into_inner();
    match resp.images.as_slice() {
        [one] => Ok(one.image_id.clone()),
        [] => Err(CliError::NotFound(format!(
            "no available image named {image:?}; see `nubis images list` or register it with \
             `nubis images register --name {image}`"
        ))),
        many => Err(CliError::Usage(format!(
            "{} images are named {image:?} ({}); pass an image id instead",
            many.len(),
            many.iter()
                .map(|i| i.image_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The requested metadata options (`None` when none is given).
fn metadata_options(a: &MetadataOptionsArgs) -> Option<pb::InstanceMetadataOptionsRequest> {
    let r = pb::InstanceMetadataOptionsRequest {
        http_tokens: a.http_tokens.clone().unwrap_or_default(),
        http_put_response_hop_limit: a.http_put_response_hop_limit.unwrap_or(0),
        http_endpoint: a.http_endpoint.clone().unwrap_or_default(),
        http_protocol_ipv6: a.http_protocol_ipv6.clone().unwrap_or_default(),
        instance_metadata_tags: a.instance_metadata_tags.clone().unwrap_or_default(),
    };
    (r != pb::InstanceMetadataOptionsRequest::default()).then_some(r)
}

async fn run_instances(ctx: &Ctx, client: &mut Client, args: RunArgs) -> Result<(), CliError> {
    let user_data = match &args.user_data {
        Some(path) => {
            let data = read_file(path)?;
            if data.len() > MAX_USER_DATA {
                return Err(CliError::Usage(format!(
                    "user data {} is {} bytes; at most {MAX_USER_DATA} are allowed",
                    path.display(),
                    data.len()
                )));
            }
            data
        }
        None => Vec::new(),
    };
    let image_id = resolve_image(client, &args.image).await?;
    let resp = client
        .compute
        .run_instances(pb::RunInstancesRequest {
            image_id,
            instance_type: args.instance_type.clone(),
            min_count: args.count,
            max_count: args.count,
            availability_zone: args.zone.clone().unwrap_or_default(),
            tags: pb_tags(&args.tags),
            user_data,
            key_name: args.key_name.clone().unwrap_or_default(),
            // As the AWS SDKs do: a fresh token per invocation unless one is
            // given, so the call is idempotent on the server side too (a
            // large reservation finished by the reconciler after an error
            // is the one the token names, never a second one on retry).
            client_token: args
                .client_token
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            root_volume_gib: args.root_volume_gib.unwrap_or(0),
            subnet_id: args.subnet.clone().unwrap_or_default(),
            security_group_ids: args.security_groups.clone(),
            metadata_options: metadata_options(&args.metadata),
        })
        .await?
        .into_inner();
    let instances = resp.reservation.map(|r| r.instances).unwrap_or_default();
    if args.wait.wait {
        let ids: Vec<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
        let list = wait_for(
            client,
            &ids,
            Target::Ready,
            args.wait.timeout,
            args.wait.poll_interval,
        )
        .await?;
        print_instances(ctx.format, &list)
    } else {
        print_instances(ctx.format, &instances)
    }
}

/// Console output as a JSON record.
#[derive(Debug, Serialize)]
struct ConsoleView {
    instance_id: String,
    timestamp: String,
    output: String,
}

async fn console(ctx: &Ctx, client: &mut Client, id: String, latest: bool) -> Result<(), CliError> {
    let resp = client
        .compute
        .get_console_output(pb::GetConsoleOutputRequest {
            instance_id: id,
            latest,
        })
        .await?
        .into_inner();
    match ctx.format {
        Format::Table => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(&resp.output).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(CliError::Output),
            }
        }
        Format::Json => emit(&render_record(
            Format::Json,
            &ConsoleView {
                instance_id: resp.instance_id,
                timestamp: rfc3339_ms(resp.timestamp_unix_ms),
                output: String::from_utf8_lossy(&resp.output).into_owned(),
            },
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::TagArg;

    fn instance() -> pb::Instance {
        pb::Instance {
            instance_id: "i-0abc".into(),
            image_id: "ami-01".into(),
            instance_type: "t3.nano".into(),
            state: Some(pb::InstanceState {
                code: 80,
                name: "stopped".into(),
            }),
            state_reason: Some(pb::StateReason {
                code: "Server.InternalError".into(),
                message: "node lost".into(),
            }),
            availability_zone: "nubis-local-1b".into(),
            private_ip_address: "10.0.0.5".into(),
            launch_time_unix_ms: 1_000,
            tags: vec![pb::Tag {
                key: "Name".into(),
                value: "web".into(),
            }],
            network_interfaces: vec![
                pb::InstanceNetworkInterface {
                    network_interface_id: "eni-0abc".into(),
                    device_index: 0,
                    private_ip_address: "10.0.0.5".into(),
                    delete_on_termination: true,
                    ..Default::default()
                },
                pb::InstanceNetworkInterface {
                    network_interface_id: "eni-0def".into(),
                    device_index: 1,
                    attachment_id: "eni-attach-0def".into(),
                    private_ip_address: "10.0.1.9".into(),
                    security_group_ids: vec!["sg-01".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn instance_view_table_and_json() {
        let v = InstanceView::from(&instance());
        assert_eq!(
            v.row(),
            vec![
                "i-0abc",
                "stopped",
                "nubis-local-1b",
                "t3.nano",
                "ami-01",
                "10.0.0.5",
                "-",
                "1970-01-01T00:00:01Z",
                "web",
                "Server.InternalError"
            ]
        );
        let j: serde_json::Value =
            serde_json::from_str(&render_list(Format::Json, "instances", &[v]).unwrap()).unwrap();
        let rec = &j["instances"][0];
        assert_eq!(rec["state"], "stopped");
        assert_eq!(rec["state_reason_message"], "node lost");
        assert_eq!(rec["tags"]["Name"], "web");
        assert_eq!(rec["vcpus"], 0);
        let nics = &rec["network_interfaces"];
        assert_eq!(nics[0]["network_interface_id"], "eni-0abc");
        assert_eq!(nics[0]["delete_on_termination"], true);
        assert_eq!(nics[1]["device_index"], 1);
        assert_eq!(nics[1]["attachment_id"], "eni-attach-0def");
        assert_eq!(nics[1]["private_ip_address"], "10.0.1.9");
        assert_eq!(nics[1]["security_group_ids"][0], "sg-01");
    }

    #[test]
    fn list_filters_are_built_and_checked() {
        let args = ListInstancesArgs {
            state: vec!["running".into(), "pending".into()],
            zone: Some("z1".into()),
            tags: vec![TagArg {
                key: "env".into(),
                value: "prod".into(),
            }],
            filters: vec!["instance-type=a,b".into()],
        };
        let f = list_filters(&args).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].name, "instance-state-name");
        assert_eq!(f[0].values, vec!["running", "pending"]);
        assert_eq!(f[2].name, "tag:env");
        assert_eq!(f[3].values, vec!["a", "b"]);

        for bad in ["noequals", "=x", "name="] {
            let args = ListInstancesArgs {
                state: vec![],
                zone: None,
                tags: vec![],
                filters: vec![bad.into()],
            };
            assert!(
                matches!(list_filters(&args), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }
}
