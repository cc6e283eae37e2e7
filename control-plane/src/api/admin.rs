//! `nubis.compute.v1.Admin` handlers (operator only; the domain checks).

use std::sync::Arc;

use nubis_proto::compute::v1 as pb;
use tonic::{Request, Response, Status};

use crate::api::compute::state_out;
use crate::api::{authenticate, to_status};
use crate::domain::model::{Account, Resources};
use crate::domain::views::NodeInfo;
use crate::domain::{Caller, Domain};

/// The Admin service.
#[derive(Debug)]
pub struct AdminApi {
    domain: Arc<Domain>,
}

impl AdminApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self { domain }
    }

    async fn auth<T>(&self, req: &Request<T>, method: &str) -> Result<Caller, Status> {
        authenticate(
            &self.domain,
            req,
            &format!("/nubis.compute.v1.Admin/{method}"),
        )
        .await
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
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn create_account(
        &self,
        req: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let caller = self.auth(&req, "CreateAccount").await?;
        let r = req.into_inner();
        let (a, key, secret) = self
            .domain
            .create_account(&caller, &r.name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(account_out(&a)),
            access_key_id: key,
            secret_access_key: secret,
        }))
    }

    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = self.auth(&req, "ListAccounts").await?;
        let a = self
            .domain
            .list_accounts(&caller)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: a.iter().map(account_out).collect(),
        }))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let caller = self.auth(&req, "ListNodes").await?;
        let r = req.into_inner();
        let zone = (!r.availability_zone.is_empty()).then_some(r.availability_zone.as_str());
        let n = self
            .domain
            .list_nodes(&caller, zone)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: n.iter().map(node_out).collect(),
        }))
    }

    async fn cordon_node(
        &self,
        req: Request<pb::CordonNodeRequest>,
    ) -> Result<Response<pb::CordonNodeResponse>, Status> {
        let caller = self.auth(&req, "CordonNode").await?;
        let r = req.into_inner();
        let n = self
            .domain
            .cordon_node(&caller, &r.node_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CordonNodeResponse {
            node: Some(node_out(&n)),
        }))
    }

    async fn uncordon_node(
        &self,
        req: Request<pb::UncordonNodeRequest>,
    ) -> Result<Response<pb::UncordonNodeResponse>, Status> {
        let caller = self.auth(&req, "UncordonNode").await?;
        let r = req.into_inner();
        let n = self
            .domain
            .uncordon_node(&caller, &r.node_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UncordonNodeResponse {
            node: Some(node_out(&n)),
        }))
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let caller = self.auth(&req, "DrainNode").await?;
        let r = req.into_inner();
        let (n, changes) = self
            .domain
            .drain_node(&caller, &r.node_id, r.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DrainNodeResponse {
            node: Some(node_out(&n)),
            stopping_instances: changes
                .into_iter()
                .map(|c| pb::InstanceStateChange {
                    instance_id: c.instance_id.to_string(),
                    current_state: Some(state_out(c.current)),
                    previous_state: Some(state_out(c.previous)),
                })
                .collect(),
        }))
    }

    async fn confirm_node_lost(
        &self,
        req: Request<pb::ConfirmNodeLostRequest>,
    ) -> Result<Response<pb::ConfirmNodeLostResponse>, Status> {
        let caller = self.auth(&req, "ConfirmNodeLost").await?;
        let r = req.into_inner();
        self.domain
            .confirm_node_lost(&caller, &r.node_id)
            .await
            .map_err(to_status)?;
        let n = self
            .domain
            .list_nodes(&caller, None)
            .await
            .map_err(to_status)?
            .into_iter()
            .find(|n| n.node.id.as_str() == r.node_id);
        Ok(Response::new(pb::ConfirmNodeLostResponse {
            node: n.as_ref().map(node_out),
        }))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = self.auth(&req, "ListTasks").await?;
        let v = self.domain.list_tasks(&caller).await.map_err(to_status)?;
        Ok(Response::new(pb::ListTasksResponse {
            replica: v.replica,
            leader: v.leader,
            is_leader: v.is_leader,
            tasks: v.tasks.iter().map(task_out).collect(),
        }))
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
