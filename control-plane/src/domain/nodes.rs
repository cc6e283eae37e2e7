//! Nodes: agent registration (enrolment token -> node credential, etcd
//! lease, address block), heartbeats (lease renewal), assignment streams,
//! observed-state and console reports, the operator's node operations, zone
//! health, and the garbage collection the background tasks run (node-loss
//! rules are in [`crate::domain::liveness`]).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::mpsc;

use crate::domain::accounts::{random_secret, random_upper};
use crate::domain::enrolment::{check_host_id, RegisterGrant};
use crate::domain::filters::{self, Filter};
use crate::domain::ipam;
use crate::domain::lifecycle::{Event, Phase, State};
use crate::domain::model::{
    now_ms, Assignment, ConsoleRequest, Node, NodeAlive, NodeImage, Observed, Principal, Resources,
    StateReason,
};
use crate::domain::views::{NodeInfo, StateChange, Zone};
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, NodeId, ReservationId, SubnetId};
use crate::scheduler;
use crate::store::keys::DesiredKey;
use crate::store::watch::{watch_prefix, WatchItem};
use crate::store::{decode, Tx};

/// Register parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterInput {
    /// Stable host identity.
    pub host_id: String,
    /// Zone.
    pub availability_zone: String,
    /// Capacity offered.
    pub capacity: Resources,
    /// Images present.
    pub images: Vec<NodeImage>,
    /// Agent version.
    pub agent_version: String,
    /// Instances already running: (id, phase, generation).
    pub instances: Vec<(String, Phase, u64)>,
    /// The agent's metrics endpoint (`host:port`, may be empty).
    pub metrics_endpoint: String,
    /// The per-host enrolment token's secret (empty otherwise).
    pub enrolment_secret: String,
    /// The host's underlay IPv4 address (empty: no VPC data plane).
    pub underlay_ip: String,
}

/// Checks an agent's underlay address: empty (no VPC data plane) or a
/// unicast IPv4 address other hosts can send to (not loopback, multicast,
/// unspecified or broadcast). Returns it in canonical form.
pub fn check_underlay_ip(ip: &str) -> Result<String> {
    if ip.is_empty() {
        return Ok(String::new());
    }
    let addr: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| Error::invalid(format!("underlay_ip {ip:?} is not an IPv4 address")))?;
    if addr.is_loopback() || addr.is_multicast() || addr.is_unspecified() || addr.is_broadcast() {
        return Err(Error::invalid(format!(
            "underlay_ip {addr} cannot be a tunnel endpoint (loopback, multicast, unspecified or broadcast)"
        )));
    }
    Ok(addr.to_string())
}

/// Register result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Node id.
    pub node_id: NodeId,
    /// Lease TTL.
    pub lease_ttl_seconds: u32,
    /// Heartbeat period.
    pub heartbeat_interval_seconds: u32,
    /// Node credential key id.
    pub access_key_id: String,
    /// Node credential secret.
    pub secret: String,
}

/// Heartbeat parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatInput {
    /// Capacity (0 = unchanged).
    pub capacity: Resources,
    /// Usage.
    pub usage: Resources,
    /// Running VMMs.
    pub running: u32,
    /// Images (empty = unchanged).
    pub images: Vec<NodeImage>,
}

/// Heartbeat result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// Lease TTL.
    pub lease_ttl_seconds: u32,
    /// Heartbeat period.
    pub heartbeat_interval_seconds: u32,
    /// Node cordoned.
    pub cordoned: bool,
}

/// An agent's report about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInput {
    /// Instance.
    pub instance_id: String,
    /// Phase.
    pub phase: Phase,
    /// Generation observed.
    pub generation: u64,
    /// Reason.
    pub reason: Option<StateReason>,
    /// Phase entered.
    pub since_ms: i64,
    /// Guest ready.
    pub ready_ms: i64,
}

/// What an agent's assignment stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Every assignment (authoritative), and the instances whose assignment
    /// does not decode (the agent keeps them as they are).
    Snapshot(Vec<Assignment>, Vec<InstanceId>),
    /// The instance's assignment changed but does not decode: keep it as is.
    Undecodable(InstanceId),
    /// New or changed.
    Upsert(Box<Assignment>),
    /// No longer assigned.
    Removed(InstanceId),
    /// Console wanted.
    Console(ConsoleRequest),
}

/// An assignment that does not decode: logged loudly with its key (in
/// `e`), and the instance id the agent must keep as it is. Never taken for
/// "not assigned", which would make the agent terminate the VM.
fn unreadable(instance: &str, e: &Error) -> Option<InstanceId> {
    tracing::error!(
        instance,
        error = %e,
        "assignment does not decode: the agent is told to keep the instance as it is"
    );
    InstanceId::parse(instance).ok()
}

/// How long a ClientToken record is kept at least (EC2 keeps a token
/// answering for a day and more); after that it goes once no instance of its
/// reservation is left.
pub const CLIENT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Filter names DescribeAvailabilityZones supports.
pub const ZONE_FILTERS: &[&str] = &["zone-name", "state", "region-name", "zone-id"];

fn node_not_found(id: &str) -> Error {
    Error::not_found(
        "InvalidNodeID.NotFound",
        format!("the node '{id}' does not exist"),
    )
}

impl Domain {
    /// Register (an enrolment token, the node itself, or the operator; see
    /// [`crate::domain::enrolment`] for who may register what). Nothing is
    /// written before the caller is authorized for the host id.
    pub async fn register_node(
        &self,
        caller: &Caller,
        input: RegisterInput,
    ) -> Result<Registration> {
        check_host_id(&input.host_id)?;
        self.check_zone(&input.availability_zone)?;
        crate::domain::metrics::check_endpoint(&input.metrics_endpoint)?;
        let mut input = input;
        input.underlay_ip = check_underlay_ip(&input.underlay_ip)?;
        self.check_node_capacity(&input.capacity)?;
        for im in &input.images {
            if !validation::is_name(&im.name, 64) {
                return Err(Error::invalid(format!("bad image name {:?}", im.name)));
            }
        }
        let ttl = self.cfg.nodes.lease_ttl_seconds;
        let mut lease = None;
        for _ in 0..64 {
            let existing = self.store.nodes().by_host(&input.host_id).await?;
            let grant = self
                .authorize_register(caller, &input, existing.as_ref().map(|e| &e.value))
                .await?;
            let lease_id = match lease {
                Some(l) => l,
                None => {
                    let l = self.store.grant_lease(i64::from(ttl)).await?;
                    lease = Some(l);
                    l
                }
            };
            let reg = match existing {
                None => self.create_node(&input, lease_id, &grant).await?,
                Some(id) => self.renew_node(&id.value, &input, lease_id, &grant).await?,
            };
            if let Some((node_id, key_id, secret)) = reg {
                for (id, phase, generation) in &input.instances {
                    let r = ReportInput {
                        instance_id: id.clone(),
                        phase: *phase,
                        generation: *generation,
                        reason: None,
                        since_ms: now_ms(),
                        ready_ms: 0,
                    };
                    if let Err(e) = self.apply_report(&node_id, &r).await {
                        tracing::warn!(node = %node_id, instance = %id, error = %e, "ignoring startup report");
                    }
                }
                let running: HashSet<String> = input
                    .instances
                    .iter()
                    .filter(|(_, p, _)| matches!(p, Phase::Running | Phase::Ready | Phase::Booting))
                    .map(|(id, _, _)| id.clone())
                    .collect();
                if let Err(e) = self.settle_returned_node(&node_id, &running).await {
                    tracing::warn!(node = %node_id, error = %e, "settling node-lost instances");
                }
                tracing::info!(node = %node_id, host = %input.host_id, zone = %input.availability_zone, "node registered");
                return Ok(Registration {
                    node_id,
                    lease_ttl_seconds: ttl,
                    heartbeat_interval_seconds: self.cfg.nodes.heartbeat_interval_seconds,
                    access_key_id: key_id,
                    secret,
                });
            }
        }
        if let Some(l) = lease {
            let _ = self.store.revoke_lease(l).await;
        }
        Err(Error::Contention("node registration".into()))
    }

    /// The host id of a node this replica knows (api/peer.rs binds it to the
    /// caller's client certificate).
    pub fn node_host_id(&self, node: &NodeId) -> Option<String> {
        self.nodes.get(node).map(|v| v.node.host_id)
    }

    /// A new node credential, or (the node re-registering itself) the one it
    /// already holds, so an agent never has to persist a rotated credential
    /// mid-registration.
    async fn node_credential(
        &self,
        grant: &RegisterGrant,
        current_key_id: Option<&str>,
    ) -> Result<(String, String, bool)> {
        if let (RegisterGrant::OwnCredential, Some(k)) = (grant, current_key_id) {
            if let Some(key) = self.store.access_keys().get(k).await? {
                let secret = self.secret_of(&key.value)?;
                return Ok((key.value.key_id, secret, false));
            }
        }
        Ok((format!("NKND{}", random_upper(16)), random_secret(), true))
    }

    async fn create_node(
        &self,
        input: &RegisterInput,
        lease: i64,
        grant: &RegisterGrant,
    ) -> Result<Option<(NodeId, String, String)>> {
        let (key_id, secret, _) = self.node_credential(grant, None).await?;
        let (key_id, secret) = (key_id.as_str(), secret.as_str());
        let held = self.cfg.nodes.require_approval;
        let nodes = self.store.nodes();
        let id = NodeId::generate();
        let mut block = nodes.ip_blocks_taken().await? as u32;
        loop {
            if block >= self.network.blocks() {
                return Err(Error::invalid(
                    "the region network has no free node address block",
                ));
            }
            let node = Node {
                id: id.clone(),
                host_id: input.host_id.clone(),
                availability_zone: input.availability_zone.clone(),
                capacity: input.capacity,
                images: input.images.clone(),
                agent_version: input.agent_version.clone(),
                cordoned: held,
                draining: false,
                registered_ms: now_ms(),
                lease_id: lease,
                credential_key_id: key_id.to_string(),
                ip_block: block,
                metrics_endpoint: input.metrics_endpoint.clone(),
                pending_approval: held,
                underlay_ip: input.underlay_ip.clone(),
            };
            let mut tx = Tx::new();
            nodes.stage_create(
                &mut tx,
                &node,
                &NodeAlive {
                    lease_id: lease,
                    heartbeat_ms: now_ms(),
                    ..Default::default()
                },
            )?;
            self.store.ipam().stage_subnet(
                &mut tx,
                &SubnetId::for_block(block),
                &ipam::block_subnet(&self.network, block, &input.availability_zone, &id),
            )?;
            self.store.access_keys().stage_put(
                &mut tx,
                &self.access_key_record(key_id, secret, Principal::Node { node: id.clone() })?,
            )?;
            if let RegisterGrant::Token(t) = grant {
                self.store.enrolment_tokens().stage_consume(&mut tx, t);
            }
            if let Some(rev) = self.store.commit(tx).await? {
                self.nodes.note_node(node, rev);
                return Ok(Some((id, key_id.to_string(), secret.to_string())));
            }
            if nodes.host_taken(&input.host_id).await? {
                return Ok(None); // same host registered concurrently: decide again
            }
            if let RegisterGrant::Token(t) = grant {
                if self
                    .store
                    .enrolment_tokens()
                    .get(&t.value.token_id)
                    .await?
                    .as_ref()
                    .map(|c| c.mod_revision)
                    != Some(t.mod_revision)
                {
                    return Ok(None); // the token was used meanwhile: decide again
                }
            }
            block += 1;
        }
    }

    async fn renew_node(
        &self,
        id: &NodeId,
        input: &RegisterInput,
        lease: i64,
        grant: &RegisterGrant,
    ) -> Result<Option<(NodeId, String, String)>> {
        let nodes = self.store.nodes();
        let cur = nodes
            .get(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("host index points at missing node {id}")))?;
        let old = cur.value.clone();
        let (key_id, secret, rotated) = self
            .node_credential(grant, Some(&old.credential_key_id))
            .await?;
        let (key_id, secret) = (key_id.as_str(), secret.as_str());
        if old.availability_zone != input.availability_zone {
            let alloc = nodes.alloc(id).await?;
            if alloc.is_some_and(|a| a.value.instances > 0) {
                return Err(Error::invalid(format!(
                    "node {id} has instances in zone {}; it cannot move to {}",
                    old.availability_zone, input.availability_zone
                )));
            }
        }
        let mut node = old.clone();
        node.availability_zone = input.availability_zone.clone();
        node.capacity = input.capacity;
        node.images = input.images.clone();
        node.agent_version = input.agent_version.clone();
        node.lease_id = lease;
        node.credential_key_id = key_id.to_string();
        node.metrics_endpoint = input.metrics_endpoint.clone();
        node.underlay_ip = input.underlay_ip.clone();
        let access_keys = self.store.access_keys();
        let mut tx = Tx::new();
        nodes.stage_replace(&mut tx, &cur, &node)?;
        nodes.stage_alive(
            &mut tx,
            id,
            &NodeAlive {
                lease_id: lease,
                heartbeat_ms: now_ms(),
                ..Default::default()
            },
            lease,
        )?;
        if rotated {
            access_keys.stage_put(
                &mut tx,
                &self.access_key_record(key_id, secret, Principal::Node { node: id.clone() })?,
            )?;
            access_keys.stage_delete(&mut tx, &old.credential_key_id);
        }
        if let RegisterGrant::Token(t) = grant {
            self.store.enrolment_tokens().stage_consume(&mut tx, t);
        }
        match self.store.commit(tx).await? {
            Some(rev) => {
                self.nodes.note_node(node, rev);
                if rotated {
                    self.creds.forget(&old.credential_key_id);
                }
                if old.lease_id != lease {
                    let _ = self.store.revoke_lease(old.lease_id).await;
                }
                Ok(Some((id.clone(), key_id.to_string(), secret.to_string())))
            }
            None => Ok(None),
        }
    }

    async fn node_record(&self, id: &NodeId) -> Result<crate::store::Versioned<Node>> {
        self.store
            .nodes()
            .get(id)
            .await?
            .ok_or_else(|| node_not_found(id.as_str()))
    }

    /// Heartbeat: renews the node's lease; fails with `NodeLost` (NOT_FOUND)
    /// when it expired (the agent must register again).
    pub async fn heartbeat(
        &self,
        caller: &Caller,
        node_id: &str,
        input: HeartbeatInput,
    ) -> Result<HeartbeatOutcome> {
        let id = NodeId::parse(node_id)?;
        caller.require_node(&id)?;
        let mut view = match self.nodes.get(&id) {
            Some(v) => v.node,
            None => self.node_record(&id).await?.value,
        };
        let lost = || Error::not_found("NodeLost", "the node's lease expired; register again");
        if self.store.keep_alive_once(view.lease_id).await?.is_none() {
            // The cache may not have seen a re-registration through another
            // replica yet: check the record before declaring the lease gone.
            let fresh = self.node_record(&id).await?.value;
            if fresh.lease_id == view.lease_id
                || self.store.keep_alive_once(fresh.lease_id).await?.is_none()
            {
                return Err(lost());
            }
            view = fresh;
        }
        let images_changed = !input.images.is_empty() && input.images != view.images;
        let cap_changed = input.capacity.vcpus > 0 && input.capacity != view.capacity;
        if cap_changed {
            self.check_node_capacity(&input.capacity)?;
        }
        if images_changed || cap_changed {
            for _ in 0..16 {
                let cur = self.node_record(&id).await?;
                let mut n = cur.value.clone();
                if images_changed {
                    n.images = input.images.clone();
                }
                if cap_changed {
                    n.capacity = input.capacity;
                }
                let mut tx = Tx::new();
                self.store.nodes().stage_replace(&mut tx, &cur, &n)?;
                if let Some(rev) = self.store.commit(tx).await? {
                    self.nodes.note_node(n, rev);
                    break;
                }
            }
        }
        let prev = self.nodes.alive(&id);
        let stale = prev.as_ref().is_none_or(|p| {
            p.usage != input.usage
                || p.running != input.running
                || now_ms() - p.heartbeat_ms > 30_000
        });
        if stale {
            let alive = NodeAlive {
                lease_id: view.lease_id,
                heartbeat_ms: now_ms(),
                usage: input.usage,
                running: input.running,
            };
            // Only while the lease lives: the put must not resurrect a lost node.
            let nodes = self.store.nodes();
            let mut tx = Tx::new();
            nodes.expect_alive(&mut tx, &id);
            nodes.stage_alive(&mut tx, &id, &alive, view.lease_id)?;
            if self.store.commit(tx).await?.is_none() {
                return Err(lost());
            }
        }
        Ok(HeartbeatOutcome {
            lease_ttl_seconds: self.cfg.nodes.lease_ttl_seconds,
            heartbeat_interval_seconds: self.cfg.nodes.heartbeat_interval_seconds,
            cordoned: view.cordoned,
        })
    }

    /// The node's assignment stream: a snapshot, then changes (and a new
    /// snapshot after any re-list). Ends when the receiver is dropped.
    pub async fn watch_assignments(
        &self,
        caller: &Caller,
        node_id: &str,
    ) -> Result<mpsc::Receiver<NodeEvent>> {
        let id = NodeId::parse(node_id)?;
        caller.require_node(&id)?;
        self.node_record(&id).await?;
        let store = self.store.clone();
        let mut rx = watch_prefix(store.clone(), store.assignments().desired_tree(&id));
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let events = match item {
                    WatchItem::Snapshot { kvs, .. } => {
                        let mut list = Vec::new();
                        let mut undecodable = Vec::new();
                        let mut consoles = Vec::new();
                        for (k, v, _) in kvs {
                            match store.assignments().parse_desired(&id, &k) {
                                Some(DesiredKey::Assignment(i)) => {
                                    match decode::<Assignment>(k.as_bytes(), &v) {
                                        Ok(a) => list.push(a),
                                        Err(e) => undecodable.extend(unreadable(i, &e)),
                                    }
                                }
                                Some(DesiredKey::Console(_)) => {
                                    match decode::<ConsoleRequest>(k.as_bytes(), &v) {
                                        Ok(c) => consoles.push(NodeEvent::Console(c)),
                                        Err(e) => {
                                            tracing::warn!(error = %e, "console request dropped")
                                        }
                                    }
                                }
                                None => {}
                            }
                        }
                        let mut ev = vec![NodeEvent::Snapshot(list, undecodable)];
                        ev.extend(consoles);
                        ev
                    }
                    WatchItem::Put { key, value, .. } => {
                        match store.assignments().parse_desired(&id, &key) {
                            Some(DesiredKey::Assignment(i)) => {
                                match decode::<Assignment>(key.as_bytes(), &value) {
                                    Ok(a) => vec![NodeEvent::Upsert(Box::new(a))],
                                    Err(e) => unreadable(i, &e)
                                        .map(NodeEvent::Undecodable)
                                        .into_iter()
                                        .collect(),
                                }
                            }
                            Some(DesiredKey::Console(_)) => {
                                match decode::<ConsoleRequest>(key.as_bytes(), &value) {
                                    Ok(c) => vec![NodeEvent::Console(c)],
                                    Err(e) => {
                                        tracing::warn!(error = %e, "console request dropped");
                                        vec![]
                                    }
                                }
                            }
                            None => vec![],
                        }
                    }
                    WatchItem::Delete { key, .. } => {
                        match store.assignments().parse_desired(&id, &key) {
                            Some(DesiredKey::Assignment(i)) => InstanceId::parse(i)
                                .map(|i| vec![NodeEvent::Removed(i)])
                                .unwrap_or_default(),
                            _ => vec![],
                        }
                    }
                };
                for e in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(out)
    }

    /// ReportInstance: returns whether the instance is (still) assigned to the node.
    pub async fn report_instance(
        &self,
        caller: &Caller,
        node_id: &str,
        r: ReportInput,
    ) -> Result<bool> {
        let id = NodeId::parse(node_id)?;
        caller.require_node(&id)?;
        self.apply_report(&id, &r).await
    }

    async fn apply_report(&self, node: &NodeId, r: &ReportInput) -> Result<bool> {
        let iid = InstanceId::parse(&r.instance_id)?;
        let Some(a) = self.store.assignments().get(node, &iid).await? else {
            return Ok(false);
        };
        let key = self.store.instances().key(&a.value.account, &iid);
        let observed = Observed {
            phase: r.phase,
            generation: r.generation,
            since_ms: r.since_ms,
            ready_ms: r.ready_ms,
            reason: r.reason.clone(),
        };
        self.apply_event(
            &key,
            &Event::Observed {
                phase: r.phase,
                reason: r.reason.clone(),
            },
            false,
            Some(observed),
        )
        .await?;
        Ok(true)
    }

    /// ReportConsole: stores the output (newest 64 KiB).
    pub async fn report_console(
        &self,
        caller: &Caller,
        node_id: &str,
        instance_id: &str,
        request_id: &str,
        output: &[u8],
        captured_ms: i64,
    ) -> Result<()> {
        let id = NodeId::parse(node_id)?;
        caller.require_node(&id)?;
        let iid = InstanceId::parse(instance_id)?;
        if !self.store.assignments().exists(&id, &iid).await? {
            return Err(Error::not_found(
                "InvalidInstanceID.NotFound",
                format!("instance {iid} is not assigned to node {id}"),
            ));
        }
        if request_id.len() > 64 {
            return Err(Error::invalid("request id too long"));
        }
        self.store_console(&iid, request_id, output, captured_ms)
            .await
    }

    /// ListNodes (operator).
    pub async fn list_nodes(&self, caller: &Caller, zone: Option<&str>) -> Result<Vec<NodeInfo>> {
        caller.require_operator()?;
        self.nodes.refresh().await?;
        let oc = self.overcommit();
        Ok(self
            .nodes
            .views()
            .into_iter()
            .filter(|v| zone.is_none_or(|z| v.node.availability_zone == z))
            .map(|v| NodeInfo {
                allocatable: scheduler::allocatable(&v.node, oc),
                alive: self.nodes.alive(&v.node.id),
                node: v.node,
                alloc: v.alloc,
            })
            .collect())
    }

    async fn set_node_flags(
        &self,
        caller: &Caller,
        node_id: &str,
        cordoned: bool,
        draining: bool,
    ) -> Result<NodeInfo> {
        caller.require_operator()?;
        let id = NodeId::parse(node_id)?;
        let nodes = self.store.nodes();
        for _ in 0..16 {
            let cur = self.node_record(&id).await?;
            if cur.value.pending_approval && !cordoned {
                return Err(Error::incorrect_state(
                    "IncorrectNodeState",
                    format!("node {id} is waiting for approval: approve it (ApproveNode)"),
                ));
            }
            let mut n = cur.value.clone();
            n.cordoned = cordoned;
            n.draining = draining;
            let mut tx = Tx::new();
            nodes.stage_replace(&mut tx, &cur, &n)?;
            if let Some(rev) = self.store.commit(tx).await? {
                self.nodes.note_node(n.clone(), rev);
                let v = self.nodes.get(&id);
                return Ok(NodeInfo {
                    allocatable: scheduler::allocatable(&n, self.overcommit()),
                    alive: self.nodes.alive(&id),
                    alloc: v.map(|v| v.alloc).unwrap_or_default(),
                    node: n,
                });
            }
        }
        Err(Error::Contention(nodes.key(&id)))
    }

    /// CordonNode.
    pub async fn cordon_node(&self, caller: &Caller, node_id: &str) -> Result<NodeInfo> {
        self.set_node_flags(caller, node_id, true, false).await
    }

    /// UncordonNode (also ends draining).
    pub async fn uncordon_node(&self, caller: &Caller, node_id: &str) -> Result<NodeInfo> {
        self.set_node_flags(caller, node_id, false, false).await
    }

    /// DrainNode: cordon, then stop every running or pending instance.
    pub async fn drain_node(
        &self,
        caller: &Caller,
        node_id: &str,
        force: bool,
    ) -> Result<(NodeInfo, Vec<StateChange>)> {
        let info = self.set_node_flags(caller, node_id, true, true).await?;
        let assignments = self
            .store
            .assignments()
            .of_node(&info.node.id)
            .collect()
            .await?;
        let mut changes = Vec::new();
        for (_, a) in assignments {
            let key = self
                .store
                .instances()
                .key(&a.value.account, &a.value.instance_id);
            match self.apply_event(&key, &Event::Stop, force, None).await {
                Ok(c) => changes.push(c),
                Err(e) if e.code() == "IncorrectInstanceState" => {}
                Err(e) => return Err(e),
            }
        }
        Ok((info, changes))
    }

    /// DescribeAvailabilityZones.
    pub async fn describe_zones(&self, names: &[String], filters: &[Filter]) -> Result<Vec<Zone>> {
        filters::check(filters, ZONE_FILTERS)?;
        for n in names {
            self.check_zone(n)?;
        }
        let views = self.nodes.views();
        let region = self.cfg.region.clone();
        Ok(self
            .cfg
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| names.is_empty() || names.contains(z))
            .map(|(i, z)| {
                let up = views
                    .iter()
                    .any(|v| v.alive && &v.node.availability_zone == z && !v.node.cordoned);
                Zone {
                    name: z.clone(),
                    state: if up { "available" } else { "impaired" },
                    region: region.clone(),
                    zone_id: format!("{region}-az{}", i + 1),
                }
            })
            .filter(|z| {
                filters.iter().all(|f| match f.name.as_str() {
                    "zone-name" => filters::any_matches(&f.values, &[&z.name]),
                    "state" => filters::any_matches(&f.values, &[z.state]),
                    "region-name" => filters::any_matches(&f.values, &[&z.region]),
                    "zone-id" => filters::any_matches(&f.values, &[&z.zone_id]),
                    _ => false,
                })
            })
            .collect())
    }

    /// Deletes instances terminated longer than `after` ago (with their
    /// console output, and their reservation's user data once no instance of
    /// it is left), reading the instances page by page. Returns how many,
    /// and the reservations that still have instances.
    pub async fn collect_terminated(
        &self,
        after: Duration,
    ) -> Result<(usize, HashSet<ReservationId>)> {
        let cutoff = now_ms() - after.as_millis() as i64;
        let mut doomed = Vec::new();
        let mut live_reservations = HashSet::new();
        let mut pages = self.store.instances().all();
        while let Some(page) = pages.next().await? {
            for (k, v) in page {
                let dead = v.value.state == State::Terminated
                    && v.value.terminated_ms.is_some_and(|t| t <= cutoff);
                if dead {
                    doomed.push((k, v));
                } else {
                    live_reservations.insert(v.value.reservation_id);
                }
            }
        }
        let mut n = 0;
        for (k, v) in doomed {
            let mut tx = Tx::new();
            tx.delete_if_unchanged(&k, &v);
            self.store.consoles().stage_delete(&mut tx, &v.value.id);
            if !live_reservations.contains(&v.value.reservation_id) {
                self.store
                    .user_data()
                    .stage_delete(&mut tx, &v.value.reservation_id);
            }
            if self.store.commit(tx).await?.is_some() {
                n += 1;
            }
        }
        Ok((n, live_reservations))
    }

    /// Reservations that still have an instance record.
    pub async fn live_reservations(&self) -> Result<HashSet<ReservationId>> {
        let mut live = HashSet::new();
        let mut pages = self.store.instances().all();
        while let Some(page) = pages.next().await? {
            live.extend(page.into_iter().map(|(_, v)| v.value.reservation_id));
        }
        Ok(live)
    }

    /// Deletes ClientToken records older than [`CLIENT_TOKEN_TTL`] (at
    /// `now`) whose reservation is complete and not in `live` (no instance
    /// record left).
    /// Each delete compares the record's revision, so a record rewritten
    /// meanwhile survives. Returns how many were deleted.
    pub async fn collect_client_tokens(
        &self,
        live: &HashSet<ReservationId>,
        now: i64,
    ) -> Result<usize> {
        let cutoff = now - CLIENT_TOKEN_TTL.as_millis() as i64;
        let mut n = 0;
        let mut pages = self.store.client_tokens().all();
        while let Some(page) = pages.next().await? {
            for (k, v) in page {
                // No instance ids: a large reservation still being written in
                // batches (its saga completes the record): never collected.
                if v.value.created_ms > cutoff
                    || v.value.instance_ids.is_empty()
                    || live.contains(&v.value.reservation_id)
                {
                    continue;
                }
                if self.store.repo().delete_if_unchanged(&k, &v).await? {
                    n += 1;
                }
            }
        }
        if n > 0 {
            tracing::info!(tokens = n, "expired ClientToken records collected");
        }
        Ok(n)
    }
}

/// Base64 helper for edges that need it.
pub fn b64_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}
