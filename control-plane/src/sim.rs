//! A simulated node agent speaking the Node API over gRPC (like omicron's
//! simulated sled agent): it registers, heartbeats, follows its assignment
//! stream and reports instances as if VMs booted instantly (pending ->
//! booting -> ready; stop -> stopped; terminate -> terminated), answers
//! console requests, and can be told to stop heartbeating (node loss). With
//! an underlay address it also follows its `WatchNetwork` stream and keeps
//! every network view it receives ([`SimAgent::wait_view`]).
//! Used by the control plane's tests and by tests/bench/scheduler.sh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nubis_proto::auth::Credentials;
use nubis_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tokio::task::JoinHandle;
use tonic::Status;

type Client = NodeClient<nubis_proto::auth::SignedChannel>;

/// How the simulated agent behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Host identity.
    pub host_id: String,
    /// Zone.
    pub zone: String,
    /// vCPUs offered.
    pub vcpus: u32,
    /// MiB offered.
    pub memory_mib: u32,
    /// Images present (name, manifest sha256).
    pub images: Vec<(String, String)>,
    /// Follow the assignment stream and report (false: register + heartbeat only).
    pub run_instances: bool,
    /// Send heartbeats.
    pub heartbeat: bool,
    /// Instances (id, generation) this host still runs when it registers:
    /// a host coming back to the control plane with its VMs.
    pub resume: Vec<(String, u64)>,
    /// The metrics endpoint it registers (empty: none).
    pub metrics_endpoint: String,
    /// The underlay address it registers (empty: none, and no network
    /// view is followed).
    pub underlay_ip: String,
}

impl SimOptions {
    /// A node with the `hello` image.
    pub fn new(host_id: &str, zone: &str, vcpus: u32, memory_mib: u32) -> Self {
        Self {
            host_id: host_id.into(),
            zone: zone.into(),
            vcpus,
            memory_mib,
            images: vec![("hello".into(), "0".repeat(64))],
            run_instances: true,
            heartbeat: true,
            resume: vec![],
            metrics_endpoint: String::new(),
            underlay_ip: String::new(),
        }
    }

    /// The same with an underlay address: the agent follows its network view.
    pub fn with_underlay(mut self, ip: &str) -> Self {
        self.underlay_ip = ip.into();
        self
    }
}

/// The network views a simulated agent received, with when each arrived.
pub type Views = Arc<Mutex<Vec<(std::time::Instant, pb::NetworkView)>>>;

/// What the simulated agent last did to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimPhase {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Terminated.
    Terminated,
}

/// A running simulated agent.
#[derive(Debug)]
pub struct SimAgent {
    /// Node id assigned by the control plane.
    pub node_id: String,
    /// Instances it runs, with reboot counts.
    pub instances: Arc<Mutex<HashMap<String, (SimPhase, u32)>>>,
    /// Per instance, the assignment generation last applied and how many
    /// times it was launched (desired `running` applied) by this agent.
    pub applied: Arc<Mutex<HashMap<String, (u64, u32)>>>,
    /// The node credential the control plane issued at registration.
    pub credential: Credentials,
    /// Every network view received (with an underlay address only).
    pub views: Views,
    tasks: Vec<JoinHandle<()>>,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

fn now_ms() -> i64 {
    crate::domain::model::now_ms()
}

impl SimAgent {
    /// Connects to `endpoint` (`unix:PATH` or `http://...`), registers with
    /// the enrolment token and starts its loops.
    pub async fn start(
        endpoint: &str,
        enrol: Credentials,
        opts: SimOptions,
    ) -> Result<Self, Status> {
        let channel = nubis_proto::transport::connect(endpoint)
            .await
            .map_err(unavailable)?;
        let (enrol, enrolment_secret) =
            nubis_proto::auth::enrolment_signing(&enrol.access_key_id, &enrol.secret);
        let mut enrol_client =
            NodeClient::new(nubis_proto::auth::Signed::new(channel.clone(), enrol));
        let reg = enrol_client
            .register(pb::RegisterRequest {
                host_id: opts.host_id.clone(),
                availability_zone: opts.zone.clone(),
                capacity: Some(pb::Resources {
                    vcpus: opts.vcpus,
                    memory_mib: opts.memory_mib,
                }),
                images: opts
                    .images
                    .iter()
                    .map(|(n, s)| pb::ImagePresent {
                        name: n.clone(),
                        manifest_sha256: s.clone(),
                    })
                    .collect(),
                agent_version: "sim".into(),
                enrolment_secret,
                underlay_ip: opts.underlay_ip.clone(),
                instances: opts
                    .resume
                    .iter()
                    .map(|(id, generation)| pb::ObservedInstance {
                        instance_id: id.clone(),
                        phase: pb::ObservedPhase::Ready as i32,
                        generation: *generation,
                    })
                    .collect(),
                metrics_endpoint: opts.metrics_endpoint.clone(),
            })
            .await?
            .into_inner();
        let cred = reg
            .credential
            .ok_or_else(|| Status::internal("no credential in RegisterResponse"))?;
        let credential = Credentials::new(cred.access_key_id, cred.secret);
        let client: Client =
            NodeClient::new(nubis_proto::auth::Signed::new(channel, credential.clone()));
        let node_id = reg.node_id.clone();
        let instances = Arc::new(Mutex::new(
            opts.resume
                .iter()
                .map(|(id, _)| (id.clone(), (SimPhase::Running, 0)))
                .collect::<HashMap<_, _>>(),
        ));
        let applied = Arc::new(Mutex::new(
            opts.resume
                .iter()
                .map(|(id, g)| (id.clone(), (*g, 0)))
                .collect::<HashMap<_, _>>(),
        ));
        let mut tasks = Vec::new();
        if opts.heartbeat {
            let mut c = client.clone();
            let id = node_id.clone();
            let period = Duration::from_secs(u64::from(reg.heartbeat_interval_seconds.max(1)));
            let inst = instances.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let running = inst
                        .lock()
                        .map(|m| m.values().filter(|(p, _)| *p == SimPhase::Running).count() as u32)
                        .unwrap_or(0);
                    let r = c
                        .heartbeat(pb::HeartbeatRequest {
                            node_id: id.clone(),
                            capacity: None,
                            usage: None,
                            running_instances: running,
                            images: vec![],
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(node = %id, error = %e, "sim heartbeat failed");
                    }
                }
            }));
        }
        if opts.run_instances {
            let c = client.clone();
            let id = node_id.clone();
            let inst = instances.clone();
            let done = applied.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = follow(c, id.clone(), inst, done).await {
                    tracing::warn!(node = %id, error = %e, "sim assignment stream ended");
                }
            }));
        }
        let views: Views = Arc::default();
        if !opts.underlay_ip.is_empty() {
            let c = client.clone();
            let id = node_id.clone();
            let v = views.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = follow_network(c, id.clone(), v).await {
                    tracing::warn!(node = %id, error = %e, "sim network stream ended");
                }
            }));
        }
        Ok(Self {
            node_id,
            instances,
            applied,
            credential,
            views,
            tasks,
        })
    }

    /// The node credential (to re-register the same host later).
    pub fn credential(&self) -> Credentials {
        self.credential.clone()
    }

    /// Stops everything (heartbeats stop: the node will be lost).
    pub fn kill(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Phase of an instance.
    pub fn phase(&self, id: &str) -> Option<(SimPhase, u32)> {
        self.instances.lock().ok()?.get(id).copied()
    }

    /// The instances it runs now with their applied generations (what it
    /// would list when registering again).
    pub fn running(&self) -> Vec<(String, u64)> {
        let (Ok(inst), Ok(applied)) = (self.instances.lock(), self.applied.lock()) else {
            return vec![];
        };
        inst.iter()
            .filter(|(_, (p, _))| *p == SimPhase::Running)
            .filter_map(|(id, _)| applied.get(id).map(|(g, _)| (id.clone(), *g)))
            .collect()
    }

    /// The newest network view received, if any.
    pub fn view(&self) -> Option<pb::NetworkView> {
        self.views.lock().ok()?.last().map(|(_, v)| v.clone())
    }

    /// Waits (up to `timeout`) for a received view for which `pred` holds,
    /// looking only at views received after `since`; returns it with when it
    /// arrived.
    pub async fn wait_view(
        &self,
        since: std::time::Instant,
        timeout: Duration,
        pred: impl Fn(&pb::NetworkView) -> bool,
    ) -> Option<(std::time::Instant, pb::NetworkView)> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let found = self.views.lock().ok().and_then(|vs| {
                vs.iter()
                    .rev()
                    .find(|(at, v)| *at >= since && pred(v))
                    .cloned()
            });
            if found.is_some() || std::time::Instant::now() >= end {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many times it launched an instance (desired `running` applied).
    pub fn launches(&self, id: &str) -> u32 {
        self.applied
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(|(_, n)| *n))
            .unwrap_or(0)
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn report(
    c: &mut Client,
    node: &str,
    id: &str,
    phase: pb::ObservedPhase,
    generation: u64,
) -> Result<bool, Status> {
    Ok(c.report_instance(pb::ReportInstanceRequest {
        node_id: node.to_string(),
        instance_id: id.to_string(),
        phase: phase as i32,
        generation,
        reason: None,
        phase_since_unix_ms: now_ms(),
        started_unix_ms: now_ms(),
        ready_unix_ms: if phase == pb::ObservedPhase::Ready {
            now_ms()
        } else {
            0
        },
        vmm_exit_code: None,
    })
    .await?
    .into_inner()
    .assigned)
}

async fn apply(
    c: &mut Client,
    node: &str,
    a: &pb::Assignment,
    applied: &Mutex<HashMap<String, (u64, u32)>>,
    inst: &Mutex<HashMap<String, (SimPhase, u32)>>,
) -> Result<(), Status> {
    let seen = applied
        .lock()
        .ok()
        .and_then(|m| m.get(&a.instance_id).copied());
    if seen.is_some_and(|(g, _)| g >= a.generation) {
        return Ok(());
    }
    let mut launches = seen.map(|(_, n)| n).unwrap_or(0);
    use pb::DesiredState as D;
    use pb::ObservedPhase as O;
    let set = |p: SimPhase, reboot: bool| {
        if let Ok(mut m) = inst.lock() {
            let e = m.entry(a.instance_id.clone()).or_insert((p, 0));
            e.0 = p;
            if reboot {
                e.1 += 1;
            }
        }
    };
    match D::try_from(a.desired).unwrap_or(D::Unspecified) {
        D::Running => {
            launches += 1;
            report(c, node, &a.instance_id, O::Booting, a.generation).await?;
            set(SimPhase::Running, false);
            report(c, node, &a.instance_id, O::Ready, a.generation).await?;
        }
        D::Rebooting => {
            set(SimPhase::Running, true);
            report(c, node, &a.instance_id, O::Ready, a.generation).await?;
        }
        D::Stopped => {
            set(SimPhase::Stopped, false);
            report(c, node, &a.instance_id, O::Stopped, a.generation).await?;
        }
        D::Terminated => {
            set(SimPhase::Terminated, false);
            report(c, node, &a.instance_id, O::Terminated, a.generation).await?;
        }
        D::Unspecified => {}
    }
    if let Ok(mut m) = applied.lock() {
        m.insert(a.instance_id.clone(), (a.generation, launches));
    }
    Ok(())
}

async fn follow(
    mut c: Client,
    node: String,
    inst: Arc<Mutex<HashMap<String, (SimPhase, u32)>>>,
    applied: Arc<Mutex<HashMap<String, (u64, u32)>>>,
) -> Result<(), Status> {
    let mut stream = c
        .watch_assignments(pb::WatchAssignmentsRequest {
            node_id: node.clone(),
        })
        .await?
        .into_inner();
    use pb::assignment_event::Event as E;
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(E::Snapshot(s)) => {
                for a in &s.assignments {
                    apply(&mut c, &node, a, &applied, &inst).await?;
                }
            }
            Some(E::Upsert(a)) => apply(&mut c, &node, &a, &applied, &inst).await?,
            Some(E::RemovedInstanceId(id)) => {
                if let Ok(mut m) = applied.lock() {
                    m.remove(&id);
                }
                if let Ok(mut m) = inst.lock() {
                    m.remove(&id);
                }
            }
            // The simulated agent keeps such an instance as it is, like a real one.
            Some(E::UndecodableInstanceId(_)) => {}
            Some(E::ConsoleRequest(r)) => {
                let out = format!(
                    "sim console of {}\nNUBIS-GUEST-READY {}\n",
                    r.instance_id, r.instance_id
                );
                c.report_console(pb::ReportConsoleRequest {
                    node_id: node.clone(),
                    instance_id: r.instance_id,
                    request_id: r.request_id,
                    output: out.into_bytes(),
                    captured_unix_ms: now_ms(),
                })
                .await?;
            }
            None => {}
        }
    }
    Ok(())
}

async fn follow_network(mut c: Client, node: String, views: Views) -> Result<(), Status> {
    let mut stream = c
        .watch_network(pb::WatchNetworkRequest { node_id: node })
        .await?
        .into_inner();
    while let Some(v) = stream.message().await? {
        if let Ok(mut m) = views.lock() {
            m.push((std::time::Instant::now(), v));
        }
    }
    Ok(())
}
