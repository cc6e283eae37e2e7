//! `nubis.compute.v1.Admin` handlers (operator only; the domain checks).

use std::sync::Arc;

use nubis_proto::compute::v1 as pb;
use tonic::{Request, Response, Status};

use crate::api::compute::changes_out;
use crate::api::Edge;
use crate::domain::catalogue::{InstanceType, TypeLimits};
use crate::domain::model::{Account, Resources};
use crate::domain::quotas::QuotaView;
use crate::domain::views::NodeInfo;
use crate::domain::Domain;

/// The Admin service.
#[derive(Debug)]
pub struct AdminApi {
    edge: Edge,
}

impl AdminApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.compute.v1.Admin"),
        }
    }

    fn domain(&self) -> &Domain {
        self.edge.domain()
    }
}

fn res(r: Resources) -> pb::NodeResources {
    pb::NodeResources {
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
    }
}

fn account_out(a: &Account) -> pb::Account {
    pb::Account {
        account_id: a.id.to_string(),
        name: a.name.clone(),
        created_unix_ms: a.created_ms,
        access_key_ids: a.access_key_ids.clone(),
        disabled: a.disabled,
    }
}

/// Proto node info.
pub fn node_out(n: &NodeInfo) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: n.node.id.to_string(),
        host_id: n.node.host_id.clone(),
        availability_zone: n.node.availability_zone.clone(),
        state: if n.alive.is_some() { "ready" } else { "lost" }.into(),
        cordoned: n.node.cordoned,
        draining: n.node.draining,
        capacity: Some(res(n.node.capacity)),
        allocated: Some(res(n.alloc.used)),
        allocatable: Some(res(n.allocatable)),
        usage: Some(res(n.alive.as_ref().map(|a| a.usage).unwrap_or_default())),
        images: n
            .node
            .images
            .iter()
            .map(|i| pb::NodeImage {
                name: i.name.clone(),
                manifest_sha256: i.manifest_sha256.clone(),
            })
            .collect(),
        agent_version: n.node.agent_version.clone(),
        last_heartbeat_unix_ms: n.alive.as_ref().map(|a| a.heartbeat_ms).unwrap_or(0),
        instance_count: n.alloc.instances,
        registered_unix_ms: n.node.registered_ms,
        pending_approval: n.node.pending_approval,
    }
}

/// Proto instance type (also DescribeInstanceTypes on the Compute API).
pub fn type_out(t: InstanceType) -> pb::InstanceTypeInfo {
    pb::InstanceTypeInfo {
        instance_type: t.name,
        vcpus: t.vcpus,
        memory_mib: t.memory_mib,
        architecture: "x86_64".into(),
        hypervisor: "nubis-vmm".into(),
        limits: t.limits.map(|l| pb::InstanceTypeLimits {
            disk_bps: l.disk_bps,
            disk_iops: l.disk_iops,
            net_tx_bps: l.net_tx_bps,
            net_tx_pps: l.net_tx_pps,
            net_rx_bps: l.net_rx_bps,
            net_rx_pps: l.net_rx_pps,
        }),
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn list_instance_types(
        &self,
        req: Request<pb::ListInstanceTypesRequest>,
    ) -> Result<Response<pb::ListInstanceTypesResponse>, Status> {
        self.edge
            .call(req, "ListInstanceTypes", |caller, _| async move {
                let types = self.domain().list_instance_types(&caller).await?;
                Ok(pb::ListInstanceTypesResponse {
                    instance_types: types.into_iter().map(type_out).collect(),
                })
            })
            .await
    }

    async fn put_instance_type(
        &self,
        req: Request<pb::PutInstanceTypeRequest>,
    ) -> Result<Response<pb::PutInstanceTypeResponse>, Status> {
        self.edge
            .call(req, "PutInstanceType", |caller, r| async move {
                let t = InstanceType {
                    name: r.instance_type,
                    vcpus: r.vcpus,
                    memory_mib: r.memory_mib,
                    limits: r.limits.map(|l| TypeLimits {
                        disk_bps: l.disk_bps,
                        disk_iops: l.disk_iops,
                        net_tx_bps: l.net_tx_bps,
                        net_tx_pps: l.net_tx_pps,
                        net_rx_bps: l.net_rx_bps,
                        net_rx_pps: l.net_rx_pps,
                    }),
                };
                self.domain().put_instance_type(&caller, t.clone()).await?;
                Ok(pb::PutInstanceTypeResponse {
                    instance_type: Some(type_out(t)),
                })
            })
            .await
    }

    async fn delete_instance_type(
        &self,
        req: Request<pb::DeleteInstanceTypeRequest>,
    ) -> Result<Response<pb::DeleteInstanceTypeResponse>, Status> {
        self.edge
            .call(req, "DeleteInstanceType", |caller, r| async move {
                self.domain()
                    .delete_instance_type(&caller, &r.instance_type)
                    .await?;
                Ok(pb::DeleteInstanceTypeResponse {})
            })
            .await
    }

    async fn get_quotas(
        &self,
        req: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        self.edge
            .call(req, "GetQuotas", |caller, r| async move {
                let q = self.domain().get_quotas(&caller, &r.account_id).await?;
                Ok(pb::GetQuotasResponse {
                    account: Some(quotas_out(&r.account_id, &q)),
                })
            })
            .await
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::SetQuotaResponse>, Status> {
        self.edge
            .call(req, "SetQuota", |caller, r| async move {
                let q = self
                    .domain()
                    .set_quota(&caller, &r.account_id, &r.name, r.limit)
                    .await?;
                Ok(pb::SetQuotaResponse {
                    account: Some(quotas_out(&r.account_id, &q)),
                })
            })
            .await
    }

    async fn list_quotas(
        &self,
        req: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        self.edge
            .call(req, "ListQuotas", |caller, _| async move {
                let all = self.domain().list_quotas(&caller).await?;
                Ok(pb::ListQuotasResponse {
                    accounts: all.iter().map(|(a, q)| quotas_out(a.as_str(), q)).collect(),
                })
            })
            .await
    }

    async fn enrol_node(
        &self,
        req: Request<pb::EnrolNodeRequest>,
    ) -> Result<Response<pb::EnrolNodeResponse>, Status> {
        self.edge
            .call(req, "EnrolNode", |caller, r| async move {
                let (rec, secret) = self
                    .domain()
                    .create_enrolment_token(
                        &caller,
                        &r.host_id,
                        &r.availability_zone,
                        r.ttl_seconds,
                    )
                    .await?;
                Ok(pb::EnrolNodeResponse {
                    token_id: rec.token_id,
                    secret,
                    expires_unix_ms: rec.expires_ms,
                })
            })
            .await
    }

    async fn approve_node(
        &self,
        req: Request<pb::ApproveNodeRequest>,
    ) -> Result<Response<pb::ApproveNodeResponse>, Status> {
        self.edge
            .call(req, "ApproveNode", |caller, r| async move {
                let n = self.domain().approve_node(&caller, &r.node_id).await?;
                Ok(pb::ApproveNodeResponse {
                    node: Some(node_out(&n)),
                })
            })
            .await
    }

    async fn create_account(
        &self,
        req: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        self.edge
            .call(req, "CreateAccount", |caller, r| async move {
                let (a, key, secret) = self.domain().create_account(&caller, &r.name).await?;
                Ok(pb::CreateAccountResponse {
                    account: Some(account_out(&a)),
                    access_key_id: key,
                    secret_access_key: secret,
                })
            })
            .await
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        self.edge
            .call(req, "ListAccounts", |caller, _| async move {
                let a = self.domain().list_accounts(&caller).await?;
                Ok(pb::ListAccountsResponse {
                    accounts: a.iter().map(account_out).collect(),
                })
            })
            .await
    }

    async fn create_access_key(
        &self,
        req: Request<pb::CreateAccessKeyRequest>,
    ) -> Result<Response<pb::CreateAccessKeyResponse>, Status> {
        self.edge
            .call(req, "CreateAccessKey", |caller, r| async move {
                let (key, secret) = self
                    .domain()
                    .create_access_key(&caller, &r.account_id)
                    .await?;
                Ok(pb::CreateAccessKeyResponse {
                    access_key_id: key,
                    secret_access_key: secret,
                })
            })
            .await
    }

    async fn list_access_keys(
        &self,
        req: Request<pb::ListAccessKeysRequest>,
    ) -> Result<Response<pb::ListAccessKeysResponse>, Status> {
        self.edge
            .call(req, "ListAccessKeys", |caller, r| async move {
                let keys = self
                    .domain()
                    .list_access_keys(&caller, &r.account_id)
                    .await?;
                Ok(pb::ListAccessKeysResponse {
                    access_keys: keys
                        .into_iter()
                        .map(|k| pb::AccessKeyMetadata {
                            access_key_id: k.key_id,
                            created_unix_ms: k.created_ms,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn delete_access_key(
        &self,
        req: Request<pb::DeleteAccessKeyRequest>,
    ) -> Result<Response<pb::DeleteAccessKeyResponse>, Status> {
        self.edge
            .call(req, "DeleteAccessKey", |caller, r| async move {
                self.domain()
                    .delete_access_key(&caller, &r.access_key_id)
                    .await?;
                Ok(pb::DeleteAccessKeyResponse {})
            })
            .await
    }

    async fn set_account_disabled(
        &self,
        req: Request<pb::SetAccountDisabledRequest>,
    ) -> Result<Response<pb::SetAccountDisabledResponse>, Status> {
        self.edge
            .call(req, "SetAccountDisabled", |caller, r| async move {
                self.domain()
                    .set_account_disabled(&caller, &r.account_id, r.disabled)
                    .await?;
                Ok(pb::SetAccountDisabledResponse {})
            })
            .await
    }

    async fn delete_account(
        &self,
        req: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        self.edge
            .call(req, "DeleteAccount", |caller, r| async move {
                self.domain().delete_account(&caller, &r.account_id).await?;
                Ok(pb::DeleteAccountResponse {})
            })
            .await
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.edge
            .call(req, "ListNodes", |caller, r| async move {
                let zone =
                    (!r.availability_zone.is_empty()).then_some(r.availability_zone.as_str());
                let n = self.domain().list_nodes(&caller, zone).await?;
                Ok(pb::ListNodesResponse {
                    nodes: n.iter().map(node_out).collect(),
                })
            })
            .await
    }

    async fn cordon_node(
        &self,
        req: Request<pb::CordonNodeRequest>,
    ) -> Result<Response<pb::CordonNodeResponse>, Status> {
        self.edge
            .call(req, "CordonNode", |caller, r| async move {
                let n = self.domain().cordon_node(&caller, &r.node_id).await?;
                Ok(pb::CordonNodeResponse {
                    node: Some(node_out(&n)),
                })
            })
            .await
    }

    async fn uncordon_node(
        &self,
        req: Request<pb::UncordonNodeRequest>,
    ) -> Result<Response<pb::UncordonNodeResponse>, Status> {
        self.edge
            .call(req, "UncordonNode", |caller, r| async move {
                let n = self.domain().uncordon_node(&caller, &r.node_id).await?;
                Ok(pb::UncordonNodeResponse {
                    node: Some(node_out(&n)),
                })
            })
            .await
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        self.edge
            .call(req, "DrainNode", |caller, r| async move {
                let (n, changes) = self
                    .domain()
                    .drain_node(&caller, &r.node_id, r.force)
                    .await?;
                Ok(pb::DrainNodeResponse {
                    node: Some(node_out(&n)),
                    stopping_instances: changes_out(changes),
                })
            })
            .await
    }

    async fn confirm_node_lost(
        &self,
        req: Request<pb::ConfirmNodeLostRequest>,
    ) -> Result<Response<pb::ConfirmNodeLostResponse>, Status> {
        self.edge
            .call(req, "ConfirmNodeLost", |caller, r| async move {
                self.domain().confirm_node_lost(&caller, &r.node_id).await?;
                let n = self
                    .domain()
                    .list_nodes(&caller, None)
                    .await?
                    .into_iter()
                    .find(|n| n.node.id.as_str() == r.node_id);
                Ok(pb::ConfirmNodeLostResponse {
                    node: n.as_ref().map(node_out),
                })
            })
            .await
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.edge
            .call(req, "ListTasks", |caller, _r| async move {
                let v = self.domain().list_tasks(&caller).await?;
                Ok(pb::ListTasksResponse {
                    replica: v.replica,
                    leader: v.leader,
                    is_leader: v.is_leader,
                    tasks: v.tasks.iter().map(task_out).collect(),
                })
            })
            .await
    }
}

fn task_out(t: &crate::tasks::TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        name: t.name.clone(),
        mode: t.mode.to_string(),
        period_ms: t.period.as_millis() as u64,
        activation_prefix: t.activation.clone().unwrap_or_default(),
        active: t.active,
        running: t.running,
        runs: t.runs,
        failures: t.failures,
        activations: t.activations,
        last_start_unix_ms: t.last_start_ms,
        last_end_unix_ms: t.last_end_ms,
        last_duration_ms: t.last_duration.as_millis() as u64,
        last_error: t.last_error.clone().unwrap_or_default(),
        last_result: t.last_result.clone(),
        next_due_unix_ms: t.next_due_ms,
    }
}

fn quotas_out(account: &str, q: &[QuotaView]) -> pb::AccountQuotas {
    pb::AccountQuotas {
        account_id: account.to_string(),
        quotas: q
            .iter()
            .map(|v| pb::Quota {
                name: v.resource.name().to_string(),
                limit: v.limit.unwrap_or(0),
                unlimited: v.limit.is_none(),
                default_limit: v.default,
                overridden: v.overridden,
                usage: v.usage,
            })
            .collect(),
    }
}
