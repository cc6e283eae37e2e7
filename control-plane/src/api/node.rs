//! `nubis.node.v1.Node` handlers (agents).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use nubis_proto::node::v1 as pb;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};

use crate::api::peer::Peer;
use crate::api::Edge;
use crate::domain::lifecycle::{Desired, Phase};
use crate::domain::model::{Assignment, AssignmentMetadata, NodeImage, Resources, StateReason};
use crate::domain::nodes::{b64_decode, HeartbeatInput, NodeEvent, RegisterInput, ReportInput};
use crate::domain::vpc::view::{NetworkView, RuleView};
use crate::domain::Domain;
use crate::error::Error;

/// The Node service.
#[derive(Debug)]
pub struct NodeApi {
    edge: Edge,
}

impl NodeApi {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            edge: Edge::new(domain, "nubis.node.v1.Node").requiring_node_certificates(),
        }
    }

    fn domain(&self) -> &Domain {
        self.edge.domain()
    }
}

fn res_in(r: Option<pb::Resources>) -> Resources {
    r.map(|r| Resources {
        vcpus: r.vcpus,
        memory_mib: r.memory_mib,
    })
    .unwrap_or_default()
}

fn images_in(i: Vec<pb::ImagePresent>) -> Vec<NodeImage> {
    i.into_iter()
        .map(|i| NodeImage {
            name: i.name,
            manifest_sha256: i.manifest_sha256,
        })
        .collect()
}

/// Domain phase of a proto phase.
pub fn phase_in(p: i32) -> Result<Phase, Error> {
    use pb::ObservedPhase as O;
    Ok(match O::try_from(p) {
        Ok(O::Pending) => Phase::Pending,
        Ok(O::Booting) => Phase::Booting,
        Ok(O::Running) => Phase::Running,
        Ok(O::Ready) => Phase::Ready,
        Ok(O::Stopping) => Phase::Stopping,
        Ok(O::Stopped) => Phase::Stopped,
        Ok(O::Terminated) => Phase::Terminated,
        Ok(O::Failed) => Phase::Failed,
        _ => return Err(Error::invalid(format!("unknown observed phase {p}"))),
    })
}

fn desired_out(d: Desired) -> pb::DesiredState {
    match d {
        Desired::Running => pb::DesiredState::Running,
        Desired::Stopped => pb::DesiredState::Stopped,
        Desired::Terminated => pb::DesiredState::Terminated,
        Desired::Rebooting => pb::DesiredState::Rebooting,
    }
}

/// Proto assignment.
pub fn assignment_out(a: &Assignment) -> pb::Assignment {
    pb::Assignment {
        instance_id: a.instance_id.to_string(),
        desired: desired_out(a.desired) as i32,
        generation: a.generation,
        force: a.force,
        spec: Some(pb::InstanceSpec {
            image_name: a.image_name.clone(),
            image_manifest_sha256: a.image_sha256.clone(),
            vcpus: a.vcpus,
            memory_mib: a.memory_mib,
            user_data: b64_decode(&a.user_data_b64),
            network: Some(pb::NetworkSpec {
                ip: a.network.ip.clone(),
                prefix_len: u32::from(a.network.prefix_len),
                gateway: a.network.gateway.clone(),
                mac: a.network.mac.clone(),
                vni: a.network.vpc.as_ref().map_or(0, |v| v.vni),
                vpc_id: a
                    .network
                    .vpc
                    .as_ref()
                    .map(|v| v.vpc_id.to_string())
                    .unwrap_or_default(),
                subnet_id: match &a.network.vpc {
                    Some(_) => a
                        .network
                        .subnet_id
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    None => String::new(),
                },
                subnet_cidr: a
                    .network
                    .vpc
                    .as_ref()
                    .map(|v| v.subnet_cidr.clone())
                    .unwrap_or_default(),
                security_group_ids: a.security_group_ids.iter().map(|g| g.to_string()).collect(),
                device_index: 0,
                interface_id: String::new(),
            }),
            extra_networks: extra_networks_out(a),
            cmdline_extra: a.cmdline_extra.clone(),
            ssh_public_key: a.ssh_public_key.clone(),
            instance_type: a.instance_type.clone(),
            metadata: a.metadata.as_ref().map(|m| metadata_out(a, m)),
            root_volume_gib: a.root_volume_gib,
            limits: a.limits.map(|l| pb::DeviceLimits {
                disk_bps: l.disk_bps,
                disk_iops: l.disk_iops,
                net_tx_bps: l.net_tx_bps,
                net_tx_pps: l.net_tx_pps,
                net_rx_bps: l.net_rx_bps,
                net_rx_pps: l.net_rx_pps,
            }),
        }),
    }
}

/// The secondary interfaces of an assignment, in the primary's VPC (none
/// without one: they exist only in VPCs).
fn extra_networks_out(a: &Assignment) -> Vec<pb::NetworkSpec> {
    let Some(vpc) = &a.network.vpc else {
        return Vec::new();
    };
    a.secondary_interfaces
        .iter()
        .filter_map(|s| {
            let cidr = crate::domain::vpc::Cidr::parse(&s.subnet_cidr).ok()?;
            Some(pb::NetworkSpec {
                ip: s.ip.clone(),
                prefix_len: u32::from(cidr.prefix_len()),
                gateway: crate::domain::vpc::private_addresses::gateway_of(&cidr).to_string(),
                mac: s.mac.clone(),
                vni: vpc.vni,
                vpc_id: vpc.vpc_id.to_string(),
                subnet_id: s.subnet_id.to_string(),
                subnet_cidr: s.subnet_cidr.clone(),
                security_group_ids: s.security_group_ids.iter().map(|g| g.to_string()).collect(),
                device_index: s.device_index,
                interface_id: s.interface_id.to_string(),
            })
        })
        .collect()
}

fn metadata_out(a: &Assignment, m: &AssignmentMetadata) -> pb::InstanceMetadata {
    pb::InstanceMetadata {
        account_id: a.account.to_string(),
        image_id: m.image_id.clone(),
        key_name: m.key_name.clone(),
        availability_zone: m.availability_zone.clone(),
        region: m.region.clone(),
        launch_time_unix_ms: m.launch_time_ms,
        options: Some(pb::MetadataOptions {
            http_tokens_required: m.options.http_tokens_required,
            http_put_response_hop_limit: u32::from(m.options.hop_limit),
            http_endpoint_disabled: !m.options.endpoint_enabled,
            http_protocol_ipv6_enabled: m.options.ipv6_enabled,
            instance_metadata_tags_enabled: m.options.tags_enabled,
        }),
        tags: m.tags.clone().into_iter().collect(),
        security_groups: Vec::new(),
        public_ipv4: String::new(),
    }
}

fn event_out(e: NodeEvent) -> pb::AssignmentEvent {
    use pb::assignment_event::Event as E;
    let ev = match e {
        NodeEvent::Snapshot(list, undecodable) => E::Snapshot(pb::AssignmentSnapshot {
            assignments: list.iter().map(assignment_out).collect(),
            undecodable_instance_ids: undecodable.iter().map(|i| i.to_string()).collect(),
        }),
        NodeEvent::Undecodable(id) => E::UndecodableInstanceId(id.to_string()),
        NodeEvent::Upsert(a) => E::Upsert(assignment_out(&a)),
        NodeEvent::Removed(id) => E::RemovedInstanceId(id.to_string()),
        NodeEvent::Console(c) => E::ConsoleRequest(pb::ConsoleRequest {
            request_id: c.request_id,
            instance_id: c.instance_id.to_string(),
            max_bytes: c.max_bytes,
        }),
    };
    pb::AssignmentEvent { event: Some(ev) }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::AssignmentEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::node_server::Node for NodeApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "Register", |caller, r| async move {
                peer.check_host(&r.host_id)?;
                let mut instances = Vec::new();
                for o in r.instances {
                    instances.push((o.instance_id, phase_in(o.phase)?, o.generation));
                }
                let input = RegisterInput {
                    host_id: r.host_id,
                    availability_zone: r.availability_zone,
                    capacity: res_in(r.capacity),
                    images: images_in(r.images),
                    agent_version: r.agent_version,
                    instances,
                    metrics_endpoint: r.metrics_endpoint,
                    enrolment_secret: r.enrolment_secret,
                    underlay_ip: r.underlay_ip,
                };
                let reg = self.domain().register_node(&caller, input).await?;
                Ok(pb::RegisterResponse {
                    node_id: reg.node_id.to_string(),
                    lease_ttl_seconds: reg.lease_ttl_seconds,
                    heartbeat_interval_seconds: reg.heartbeat_interval_seconds,
                    credential: Some(pb::NodeCredential {
                        access_key_id: reg.access_key_id,
                        secret: reg.secret,
                    }),
                })
            })
            .await
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "Heartbeat", |caller, r| async move {
                peer.check_node(self.domain(), &r.node_id)?;
                let input = HeartbeatInput {
                    capacity: res_in(r.capacity),
                    usage: res_in(r.usage),
                    running: r.running_instances,
                    images: images_in(r.images),
                };
                let out = self.domain().heartbeat(&caller, &r.node_id, input).await?;
                Ok(pb::HeartbeatResponse {
                    lease_ttl_seconds: out.lease_ttl_seconds,
                    heartbeat_interval_seconds: out.heartbeat_interval_seconds,
                    cordoned: out.cordoned,
                })
            })
            .await
    }

    type WatchAssignmentsStream = EventStream;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "WatchAssignments", |caller, r| async move {
                peer.check_node(self.domain(), &r.node_id)?;
                let mut rx = self.domain().watch_assignments(&caller, &r.node_id).await?;
                Ok(async_stream(move |tx| async move {
                    while let Some(e) = rx.recv().await {
                        if tx.send(Ok(event_out(e))).await.is_err() {
                            return;
                        }
                    }
                }))
            })
            .await
    }

    async fn report_instance(
        &self,
        req: Request<pb::ReportInstanceRequest>,
    ) -> Result<Response<pb::ReportInstanceResponse>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "ReportInstance", |caller, r| async move {
                peer.check_node(self.domain(), &r.node_id)?;
                let reason = r
                    .reason
                    .filter(|x| !x.code.is_empty())
                    .map(|x| StateReason {
                        code: x.code,
                        message: x.message,
                    });
                let input = ReportInput {
                    instance_id: r.instance_id,
                    phase: phase_in(r.phase)?,
                    generation: r.generation,
                    reason,
                    since_ms: r.phase_since_unix_ms,
                    ready_ms: r.ready_unix_ms,
                };
                let assigned = self
                    .domain()
                    .report_instance(&caller, &r.node_id, input)
                    .await?;
                Ok(pb::ReportInstanceResponse { assigned })
            })
            .await
    }

    async fn report_console(
        &self,
        req: Request<pb::ReportConsoleRequest>,
    ) -> Result<Response<pb::ReportConsoleResponse>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "ReportConsole", |caller, r| async move {
                peer.check_node(self.domain(), &r.node_id)?;
                self.domain()
                    .report_console(
                        &caller,
                        &r.node_id,
                        &r.instance_id,
                        &r.request_id,
                        &r.output,
                        r.captured_unix_ms,
                    )
                    .await?;
                Ok(pb::ReportConsoleResponse {})
            })
            .await
    }

    type WatchNetworkStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::NetworkView, Status>> + Send + 'static>,
    >;

    async fn watch_network(
        &self,
        req: Request<pb::WatchNetworkRequest>,
    ) -> Result<Response<Self::WatchNetworkStream>, Status> {
        let peer = Peer::of(self.domain(), &req);
        self.edge
            .call(req, "WatchNetwork", |caller, r| async move {
                peer.check_node(self.domain(), &r.node_id)?;
                let rx = self.domain().watch_network(&caller, &r.node_id).await?;
                let s = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|v| Ok(network_view_out(v)));
                Ok(Box::pin(s) as Self::WatchNetworkStream)
            })
            .await
    }
}

/// Proto network view.
pub fn network_view_out(v: NetworkView) -> pb::NetworkView {
    let rule = |r: RuleView| pb::SecurityRule {
        protocol: r.protocol,
        from_port: r.from_port,
        to_port: r.to_port,
        cidr: r.cidr,
        peer_group_id: r.peer_group_id,
    };
    pb::NetworkView {
        revision: v.revision,
        vpcs: v
            .vpcs
            .into_iter()
            .map(|x| pb::VpcView {
                vpc_id: x.vpc_id.to_string(),
                vni: x.vni,
                cidr: x.cidr,
                subnets: x
                    .subnets
                    .into_iter()
                    .map(|s| pb::SubnetView {
                        subnet_id: s.subnet_id,
                        cidr: s.cidr,
                        gateway: s.gateway,
                        internet_route: s.internet_route,
                    })
                    .collect(),
                endpoints: x
                    .endpoints
                    .into_iter()
                    .map(|e| pb::Endpoint {
                        instance_id: e.instance_id,
                        ip: e.ip,
                        mac: e.mac,
                        subnet_id: e.subnet_id,
                        node_underlay_ip: e.node_underlay_ip,
                        node_id: e.node_id,
                        security_group_ids: e.security_group_ids,
                        public_ip: e.public_ip,
                        device_index: e.device_index,
                        interface_id: e.interface_id,
                    })
                    .collect(),
                security_groups: x
                    .security_groups
                    .into_iter()
                    .map(|g| pb::SecurityGroupView {
                        group_id: g.group_id,
                        ingress: g.ingress.into_iter().map(rule).collect(),
                        egress: g.egress.into_iter().map(rule).collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(f: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::AssignmentEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
