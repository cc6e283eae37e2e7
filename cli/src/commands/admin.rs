//! `nubis admin nodes list|cordon|uncordon|drain|confirm-lost`,
//! `nubis admin quotas get|set|list` and `nubis admin tasks`.

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use super::Ctx;
use crate::cli::{AdminCmd, NodesCmd, QuotasCmd};
use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// `admin nodes enrol`: the token (shown only once).
#[derive(Debug, Serialize)]
pub struct EnrolmentTokenView {
    /// Token id (`[enrolment] key_id`).
    pub token_id: String,
    /// Secret (`[enrolment] secret`), shown only once.
    pub secret: String,
    /// `ID:SECRET`, as `deploy/install.sh agent --enrolment-token` takes it.
    pub token: String,
    /// Unusable after (Unix ms).
    pub expires_unix_ms: i64,
}

/// vCPUs and memory.
#[derive(Debug, Serialize, Default)]
pub struct ResourcesView {
    /// vCPUs.
    pub vcpus: u32,
    /// MiB.
    pub memory_mib: u32,
}

impl From<Option<pb::NodeResources>> for ResourcesView {
    fn from(r: Option<pb::NodeResources>) -> Self {
        let r = r.unwrap_or_default();
        Self {
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
        }
    }
}

/// A node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node id.
    pub node_id: String,
    /// Host id.
    pub host_id: String,
    /// Zone.
    pub availability_zone: String,
    /// ready | lost.
    pub state: String,
    /// No new placements.
    pub cordoned: bool,
    /// Being drained.
    pub draining: bool,
    /// Held until `nubis admin nodes approve`.
    pub pending_approval: bool,
    /// Instances placed.
    pub instance_count: u32,
    /// Reported capacity.
    pub capacity: ResourcesView,
    /// Placed.
    pub allocated: ResourcesView,
    /// Placeable after overcommit.
    pub allocatable: ResourcesView,
    /// Image names present.
    pub images: Vec<String>,
    /// Agent version.
    pub agent_version: String,
    /// Last heartbeat.
    pub last_heartbeat: String,
}

impl From<pb::NodeInfo> for NodeView {
    fn from(n: pb::NodeInfo) -> Self {
        Self {
            node_id: n.node_id,
            host_id: n.host_id,
            availability_zone: n.availability_zone,
            state: n.state,
            cordoned: n.cordoned,
            draining: n.draining,
            pending_approval: n.pending_approval,
            instance_count: n.instance_count,
            capacity: n.capacity.into(),
            allocated: n.allocated.into(),
            allocatable: n.allocatable.into(),
            images: n.images.into_iter().map(|i| i.name).collect(),
            agent_version: n.agent_version,
            last_heartbeat: rfc3339_ms(n.last_heartbeat_unix_ms),
        }
    }
}

impl Tabular for NodeView {
    fn headers() -> &'static [&'static str] {
        &[
            "NODE_ID",
            "HOST",
            "ZONE",
            "STATE",
            "SCHEDULING",
            "INSTANCES",
            "VCPUS(ALLOC/MAX)",
            "MEMORY_MIB(ALLOC/MAX)",
            "LAST_HEARTBEAT",
        ]
    }
    fn row(&self) -> Vec<String> {
        let scheduling = if self.pending_approval {
            "pending-approval"
        } else if self.draining {
            "draining"
        } else if self.cordoned {
            "cordoned"
        } else {
            "enabled"
        };
        vec![
            self.node_id.clone(),
            self.host_id.clone(),
            self.availability_zone.clone(),
            self.state.clone(),
            scheduling.to_string(),
            self.instance_count.to_string(),
            format!("{}/{}", self.allocated.vcpus, self.allocatable.vcpus),
            format!(
                "{}/{}",
                self.allocated.memory_mib, self.allocatable.memory_mib
            ),
            self.last_heartbeat.clone(),
        ]
    }
}

/// One quota of one account.
#[derive(Debug, Serialize)]
pub struct QuotaView {
    /// Account id.
    pub account_id: String,
    /// running-instances | vcpus | images | key-pairs.
    pub name: String,
    /// The limit in force (`None`: not limited, the operator account).
    pub limit: Option<u64>,
    /// The configured default.
    pub default: u64,
    /// True when set for this account.
    pub overridden: bool,
    /// Current usage.
    pub usage: u64,
}

impl QuotaView {
    fn of(a: pb::AccountQuotas) -> Vec<Self> {
        a.quotas
            .into_iter()
            .map(|q| Self {
                account_id: a.account_id.clone(),
                name: q.name,
                limit: (!q.unlimited).then_some(q.limit),
                default: q.default_limit,
                overridden: q.overridden,
                usage: q.usage,
            })
            .collect()
    }
}

impl Tabular for QuotaView {
    fn headers() -> &'static [&'static str] {
        &["ACCOUNT_ID", "QUOTA", "LIMIT", "DEFAULT", "USAGE"]
    }
    fn row(&self) -> Vec<String> {
        let limit = match self.limit {
            None => "unlimited".to_string(),
            Some(l) if self.overridden => format!("{l} (set)"),
            Some(l) => l.to_string(),
        };
        vec![
            self.account_id.clone(),
            self.name.clone(),
            limit,
            self.default.to_string(),
            self.usage.to_string(),
        ]
    }
}

/// Runs an `admin` subcommand.
pub async fn run(ctx: &Ctx, cmd: AdminCmd) -> Result<(), CliError> {
    let mut client = ctx.client().await?;
    match cmd {
        AdminCmd::Accounts(cmd) => super::accounts::run(ctx, &mut client, cmd).await,
        AdminCmd::Nodes(NodesCmd::List { zone }) => {
            let resp = client
                .admin
                .list_nodes(pb::ListNodesRequest {
                    availability_zone: zone.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let views: Vec<NodeView> = resp.nodes.into_iter().map(NodeView::from).collect();
            emit(&render_list(ctx.format, "nodes", &views)?)
        }
        AdminCmd::Nodes(NodesCmd::Cordon { node_id }) => {
            let resp = client
                .admin
                .cordon_node(pb::CordonNodeRequest { node_id })
                .await?
                .into_inner();
            print_node(ctx.format, resp.node)
        }
        AdminCmd::Nodes(NodesCmd::Uncordon { node_id }) => {
            let resp = client
                .admin
                .uncordon_node(pb::UncordonNodeRequest { node_id })
                .await?
                .into_inner();
            print_node(ctx.format, resp.node)
        }
        AdminCmd::Nodes(NodesCmd::Drain { node_id, force }) => {
            let resp = client
                .admin
                .drain_node(pb::DrainNodeRequest { node_id, force })
                .await?
                .into_inner();
            for c in &resp.stopping_instances {
                eprintln!("stopping {}", c.instance_id);
            }
            print_node(ctx.format, resp.node)
        }
        AdminCmd::Nodes(NodesCmd::Enrol {
            host_id,
            zone,
            ttl_seconds,
        }) => {
            let resp = client
                .admin
                .enrol_node(pb::EnrolNodeRequest {
                    host_id,
                    availability_zone: zone.unwrap_or_default(),
                    ttl_seconds: ttl_seconds.unwrap_or(0),
                })
                .await?
                .into_inner();
            if ctx.format == Format::Table {
                eprintln!("one-time enrolment token; its secret is shown only this once");
            }
            emit(&render_record(
                ctx.format,
                &EnrolmentTokenView {
                    token: format!("{}:{}", resp.token_id, resp.secret),
                    token_id: resp.token_id,
                    secret: resp.secret,
                    expires_unix_ms: resp.expires_unix_ms,
                },
            )?)
        }
        AdminCmd::Nodes(NodesCmd::Approve { node_id }) => {
            let resp = client
                .admin
                .approve_node(pb::ApproveNodeRequest { node_id })
                .await?
                .into_inner();
            print_node(ctx.format, resp.node)
        }
        AdminCmd::Nodes(NodesCmd::ConfirmLost { node_id }) => {
            let resp = client
                .admin
                .confirm_node_lost(pb::ConfirmNodeLostRequest { node_id })
                .await?
                .into_inner();
            if ctx.format == Format::Table {
                eprintln!("confirmed lost: its instances are stopped at the next node-loss run");
            }
            print_node(ctx.format, resp.node)
        }
        AdminCmd::Quotas(cmd) => {
            let accounts = match cmd {
                QuotasCmd::Get { account_id } => client
                    .admin
                    .get_quotas(pb::GetQuotasRequest { account_id })
                    .await?
                    .into_inner()
                    .account
                    .into_iter()
                    .collect(),
                QuotasCmd::Set {
                    account_id,
                    name,
                    limit,
                    reset,
                } => client
                    .admin
                    .set_quota(pb::SetQuotaRequest {
                        account_id,
                        name,
                        limit: if reset { None } else { limit },
                    })
                    .await?
                    .into_inner()
                    .account
                    .into_iter()
                    .collect(),
                QuotasCmd::List => {
                    client
                        .admin
                        .list_quotas(pb::ListQuotasRequest {})
                        .await?
                        .into_inner()
                        .accounts
                }
            };
            let views: Vec<QuotaView> = accounts.into_iter().flat_map(QuotaView::of).collect();
            emit(&render_list(ctx.format, "quotas", &views)?)
        }
        AdminCmd::InstanceTypes(cmd) => super::instance_types::run(ctx, &mut client, cmd).await,
        AdminCmd::Tasks => {
            let resp = client
                .admin
                .list_tasks(pb::ListTasksRequest {})
                .await?
                .into_inner();
            super::tasks::print(ctx.format, resp)
        }
    }
}

fn print_node(format: Format, node: Option<pb::NodeInfo>) -> Result<(), CliError> {
    let views: Vec<NodeView> = node.into_iter().map(NodeView::from).collect();
    emit(&render_list(format, "nodes", &views)?)
}
