//! The Node API client (`proto/nubis/node/v1/node.proto`): registers this
//! host with the enrolment credential, heartbeats under the etcd lease the
//! control plane granted, follows `WatchAssignments` into the reconciler,
//! reports every instance change with `ReportInstance`, and answers console
//! requests. Reports go out from their own task the moment an instance
//! changes, several instances' at once (one RPC each, at most
//! [`REPORT_CONCURRENCY`] in flight, each instance's latest report only), so
//! a burst's reports neither queue behind each other nor hold up the
//! assignment stream. Transitional launch phases wait [`TRANSITIONAL_HOLD`]
//! first, so a fast boot costs the control plane one report instead of four.
//! Any failure (control-plane restart, lease expiry) ends the session; the
//! agent reconnects to the next control-plane endpoint it knows
//! ([`crate::failover`]; exponential back-off only after all failed, capped
//! at the heartbeat interval once registered) and registers again, listing
//! the instances it still runs. Its VMs keep running meanwhile, and a
//! re-registration reconciles rather than restarts them: the control plane
//! answers with the same assignments (a node-loss never changes desired
//! state), so nothing is relaunched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nubis_proto::auth::Credentials;
use nubis_proto::node::v1 as pb;
use pb::node_client::NodeClient;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::failover::Endpoints;
use crate::instance::{now_ms, Report, CONSOLE_TAIL_BYTES};
use crate::layout::{off_runtime, read_json};
use crate::reconcile::{Agent, DesiredInstance};
use crate::runtime::State;
use crate::types::{
    Desired, DeviceLimits, ExtraNetwork, ImageName, InstanceId, InstanceSpec, VpcAttachment,
};

/// The Node API client over a signed channel.
pub type Client = NodeClient<nubis_proto::auth::SignedChannel>;

/// Most `ReportInstance` calls in flight at once.
pub const REPORT_CONCURRENCY: usize = 16;

/// How long a launch's transitional phase (pending, booting, running but not
/// yet ready) waits before it is reported, so that phases passed within it
/// cost the control plane nothing: a launch whose guest is ready quickly is
/// reported once, as ready. Every other phase goes out at once.
pub const TRANSITIONAL_HOLD: Duration = Duration::from_millis(50);

/// The stream of changed instance ids, kept across sessions.
type Changes = Arc<Mutex<mpsc::UnboundedReceiver<InstanceId>>>;

/// Maps a report to the wire phase.
pub fn phase_of(r: &Report) -> pb::ObservedPhase {
    use pb::ObservedPhase as P;
    match r.state {
        // A reboot restarts the VMM; the instance stays running upstream.
        State::Running | State::Stopping | State::Stopped | State::Starting if r.rebooting => {
            P::Booting
        }
        State::Absent | State::Preparing => P::Pending,
        State::Starting => P::Booting,
        State::Running if r.ready => P::Ready,
        State::Running => P::Running,
        State::Stopping | State::Terminating => P::Stopping,
        State::Stopped => P::Stopped,
        State::Gone => P::Terminated,
        State::Failed => P::Failed,
    }
}

fn to_report_request(node_id: &str, r: &Report) -> pb::ReportInstanceRequest {
    pb::ReportInstanceRequest {
        node_id: node_id.to_string(),
        instance_id: r.id.to_string(),
        phase: phase_of(r) as i32,
        generation: r.generation,
        reason: r.reason.as_ref().map(|x| pb::Reason {
            code: x.code.code().to_string(),
            message: x.message.clone(),
        }),
        phase_since_unix_ms: r.since_unix_ms as i64,
        started_unix_ms: r.started_unix_ms.unwrap_or(0) as i64,
        ready_unix_ms: r.ready_unix_ms.unwrap_or(0) as i64,
        vmm_exit_code: r.vmm_exit_code,
    }
}

/// Converts an assignment into the reconciler's desired state, validating
/// everything that came over the wire.
pub fn desired_from_assignment(a: &pb::Assignment) -> Result<DesiredInstance> {
    let id = InstanceId::new(a.instance_id.clone())?;
    let desired = match pb::DesiredState::try_from(a.desired) {
        Ok(pb::DesiredState::Running) => Desired::Running,
        Ok(pb::DesiredState::Stopped) => Desired::Stopped,
        Ok(pb::DesiredState::Terminated) => Desired::Terminated,
        Ok(pb::DesiredState::Rebooting) => Desired::Rebooting,
        _ => {
            return Err(Error::Protocol(format!(
                "assignment {id}: unknown desired state {}",
                a.desired
            )))
        }
    };
    let s = a
        .spec
        .as_ref()
        .ok_or_else(|| Error::Protocol(format!("assignment {id} has no spec")))?;
    let net = s.network.as_ref();
    let ip = match net.map(|n| n.ip.as_str()).filter(|s| !s.is_empty()) {
        Some(ip) => Some(
            ip.parse()
                .map_err(|_| Error::Protocol(format!("assignment {id}: bad ip {ip:?}")))?,
        ),
        None => None,
    };
    let gateway = match net.map(|n| n.gateway.as_str()).filter(|s| !s.is_empty()) {
        Some(g) => Some(
            g.parse()
                .map_err(|_| Error::Protocol(format!("assignment {id}: bad gateway {g:?}")))?,
        ),
        None => None,
    };
    // proto3: 0 means unset; a usable prefix is never 0.
    let prefix_len = net.map(|n| n.prefix_len).filter(|p| *p != 0);
    let extra_networks = s
        .extra_networks
        .iter()
        .map(|n| extra_network_in(&id, n))
        .collect::<Result<_>>()?;
    let spec = InstanceSpec {
        id,
        image: ImageName::new(s.image_name.clone())?,
        vcpus: s.vcpus,
        memory_mib: u64::from(s.memory_mib),
        cmdline_extra: s.cmdline_extra.clone(),
        ip,
        prefix_len,
        gateway,
        mac: net.map(|n| n.mac.clone()).filter(|m| !m.is_empty()),
        image_manifest_sha256: Some(s.image_manifest_sha256.clone()).filter(|h| !h.is_empty()),
        metadata: s
            .metadata
            .as_ref()
            .map(|m| metadata_in(&a.instance_id, s, m)),
        // proto3: 0 means the image's own size.
        root_volume_gib: Some(s.root_volume_gib).filter(|g| *g != 0),
        limits: s.limits.as_ref().map(|l| DeviceLimits {
            disk_bps: l.disk_bps,
            disk_iops: l.disk_iops,
            net_tx_bps: l.net_tx_bps,
            net_tx_pps: l.net_tx_pps,
            net_rx_bps: l.net_rx_bps,
            net_rx_pps: l.net_rx_pps,
        }),
        // proto3: vni 0 means no VPC (the legacy bridge).
        vpc: net.filter(|n| n.vni != 0).map(|n| VpcAttachment {
            vni: n.vni,
            vpc_id: n.vpc_id.clone(),
            subnet_id: n.subnet_id.clone(),
            subnet_cidr: n.subnet_cidr.clone(),
            security_group_ids: n.security_group_ids.clone(),
        }),
        extra_networks,
    };
    spec.validate()?;
    Ok(DesiredInstance {
        spec,
        desired,
        generation: a.generation,
        force: a.force,
    })
}

/// A secondary interface of an assignment (Node API `extra_networks`).
fn extra_network_in(id: &InstanceId, n: &pb::NetworkSpec) -> Result<ExtraNetwork> {
    let bad = |what: &str| {
        Error::Protocol(format!(
            "assignment {id}: secondary interface {}: bad {what}",
            n.device_index
        ))
    };
    Ok(ExtraNetwork {
        device_index: n.device_index,
        interface_id: n.interface_id.clone(),
        ip: n.ip.parse().map_err(|_| bad("ip"))?,
        prefix_len: u8::try_from(n.prefix_len).map_err(|_| bad("prefix_len"))?,
        gateway: n.gateway.parse().map_err(|_| bad("gateway"))?,
        mac: n.mac.clone(),
        vpc: VpcAttachment {
            vni: n.vni,
            vpc_id: n.vpc_id.clone(),
            subnet_id: n.subnet_id.clone(),
            subnet_cidr: n.subnet_cidr.clone(),
            security_group_ids: n.security_group_ids.clone(),
        },
    })
}

/// The node credential as the agent keeps it (`<state_dir>/node-credential.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedCredential {
    access_key_id: String,
    secret: String,
}

/// Writes the credential readable by the agent's user only.
fn save_credential(path: &std::path::Path, c: &SavedCredential) -> Result<()> {
    if read_json::<SavedCredential>(path)
        .ok()
        .flatten()
        .is_some_and(|s| s.access_key_id == c.access_key_id && s.secret == c.secret)
    {
        return Ok(());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let io = |e| Error::io(format!("writing {}", tmp.display()), e);
    let text = serde_json::to_vec(c).map_err(|source| Error::Json {
        context: path.display().to_string(),
        source,
    })?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// The metadata service's configuration from an assignment (address and MAC
/// are filled in at launch, from the instance's network).
fn metadata_in(id: &str, s: &pb::InstanceSpec, m: &pb::InstanceMetadata) -> nubis_imds::ImdsConfig {
    let o = m.options.unwrap_or_default();
    let launch = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(m.launch_time_unix_ms) * 1_000_000,
    )
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    .replace_nanosecond(0)
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let launch_time = launch
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut tags: Vec<(String, String)> =
        m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    tags.sort();
    nubis_imds::ImdsConfig {
        metadata: nubis_imds::InstanceMetadata {
            instance_id: id.to_string(),
            account_id: m.account_id.clone(),
            ami_id: m.image_id.clone(),
            instance_type: s.instance_type.clone(),
            hostname: String::new(),
            local_ipv4: String::new(),
            public_ipv4: Some(m.public_ipv4.clone()).filter(|p| !p.is_empty()),
            mac: String::new(),
            availability_zone: m.availability_zone.clone(),
            region: m.region.clone(),
            security_groups: m.security_groups.clone(),
            launch_time,
            user_data: Some(s.user_data.clone()).filter(|u| !u.is_empty()),
            public_keys: (!s.ssh_public_key.is_empty())
                .then(|| nubis_imds::PublicKey {
                    name: m.key_name.clone(),
                    openssh: s.ssh_public_key.clone(),
                })
                .into_iter()
                .collect(),
            architecture: "x86_64".into(),
            tags,
            // Filled in at launch from the spec (`launch::metadata_of`).
            extra_interfaces: Vec::new(),
        },
        options: nubis_imds::MetadataOptions {
            http_tokens: if o.http_tokens_required {
                nubis_imds::HttpTokens::Required
            } else {
                nubis_imds::HttpTokens::Optional
            },
            http_put_response_hop_limit: u8::try_from(o.http_put_response_hop_limit)
                .ok()
                .filter(|h| (1..=64).contains(h))
                .unwrap_or(1),
            http_endpoint_enabled: !o.http_endpoint_disabled,
            http_protocol_ipv6_enabled: o.http_protocol_ipv6_enabled,
            instance_metadata_tags: o.instance_metadata_tags_enabled,
        },
    }
}

fn rpc(rpc: &'static str) -> impl Fn(tonic::Status) -> Error {
    move |source| Error::Rpc { rpc, source }
}

/// Runs the control-plane session forever, reconnecting with back-off.
pub async fn run(agent: Arc<Agent>, changed: mpsc::UnboundedReceiver<InstanceId>) -> Result<()> {
    let changed: Changes = Arc::new(Mutex::new(changed));
    let cfg = agent.context().config.clone();
    let max = Duration::from_secs(cfg.timeouts.reconnect_max_secs.max(1));
    let mut endpoints = Endpoints::new(cfg.control_plane_endpoints(), max)
        .ok_or_else(|| Error::ConfigInvalid("control_plane missing".into()))?;
    let (key, secret) = cfg.enrolment_credential()?;
    let tls = cfg.client_tls()?;
    tokio::spawn(agent.clone().run());
    let metrics = crate::metrics::server::start_all(
        &cfg.metrics,
        agent.context().layout.clone(),
        agent.context().firewall.enabled(),
    )
    .await?;
    // The heartbeat interval of the last registration: once known, retries
    // come at least that often (see [`Endpoints::cap_backoff`]).
    let mut heartbeat: Option<Duration> = None;
    loop {
        let started = tokio::time::Instant::now();
        let endpoint = endpoints.current().to_string();
        match session(
            &agent,
            &endpoint,
            tls.as_ref(),
            &key,
            &secret,
            &changed,
            &mut heartbeat,
            metrics.as_deref(),
        )
        .await
        {
            Ok(()) => tracing::warn!(endpoint, "control-plane session ended"),
            Err(e) => {
                tracing::warn!(endpoint, error = %crate::launch::chain(&e), "control-plane session failed")
            }
        }
        if let Some(h) = heartbeat {
            endpoints.cap_backoff(h);
        }
        let delay = endpoints.session_ended(started.elapsed());
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64).clamp(1, 250));
        tracing::info!(
            next = endpoints.current(),
            delay_ms = (delay + jitter).as_millis() as u64,
            "reconnecting"
        );
        tokio::time::sleep(delay + jitter).await;
    }
}

async fn images_present(agent: &Agent) -> Vec<pb::ImagePresent> {
    agent
        .images()
        .await
        .into_iter()
        .map(|i| pb::ImagePresent {
            name: i.name.to_string(),
            manifest_sha256: i.manifest_sha256,
        })
        .collect()
}

fn capacity(agent: &Agent) -> pb::Resources {
    let c = agent.capacity();
    pb::Resources {
        vcpus: c.vcpus,
        memory_mib: u32::try_from(c.memory_mib).unwrap_or(u32::MAX),
    }
}

// One more argument than clippy's default: the metrics listener.
#[allow(clippy::too_many_arguments)]
async fn session(
    agent: &Arc<Agent>,
    endpoint: &str,
    tls: Option<&nubis_proto::transport::ClientTls>,
    key: &str,
    secret: &str,
    changed: &Changes,
    heartbeat: &mut Option<Duration>,
    metrics: Option<&crate::metrics::server::Served>,
) -> Result<()> {
    let channel = match tls {
        Some(tls) => nubis_proto::transport::connect_tls(endpoint, tls).await,
        None => nubis_proto::transport::connect(endpoint).await,
    }
    .map_err(|source| Error::Connect {
        endpoint: endpoint.to_string(),
        source,
    })?;
    let instances: Vec<pb::ObservedInstance> = agent
        .reports()
        .iter()
        .map(|r| pb::ObservedInstance {
            instance_id: r.id.to_string(),
            phase: phase_of(r) as i32,
            generation: r.generation,
        })
        .collect();
    let mut request = pb::RegisterRequest {
        host_id: agent.host_id().to_string(),
        availability_zone: agent.context().config.availability_zone.clone(),
        capacity: Some(capacity(agent)),
        images: images_present(agent).await,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        instances,
        metrics_endpoint: metrics.map(|m| m.endpoint.clone()).unwrap_or_default(),
        enrolment_secret: String::new(),
        underlay_ip: agent
            .context()
            .vpc
            .underlay()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    // Re-registration uses the node's own credential when the agent has one:
    // a per-host enrolment token is consumed by the first registration.
    let cred_path = agent.context().layout.node_credential();
    let saved: Option<SavedCredential> = read_json(&cred_path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring an unreadable node credential file");
        None
    });
    let mut reg = None;
    if let Some(c) = saved {
        let mut own = NodeClient::new(nubis_proto::auth::Signed::new(
            channel.clone(),
            Credentials::new(c.access_key_id, c.secret),
        ));
        match own.register(request.clone()).await {
            Ok(r) => reg = Some(r.into_inner()),
            Err(st)
                if matches!(
                    st.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                tracing::warn!(error = %st, "the saved node credential was refused: enrolling with the token");
            }
            Err(st) => return Err(rpc("Register")(st)),
        }
    }
    let reg = match reg {
        Some(r) => r,
        None => {
            let (creds, enrolment_secret) = nubis_proto::auth::enrolment_signing(key, secret);
            request.enrolment_secret = enrolment_secret;
            NodeClient::new(nubis_proto::auth::Signed::new(channel.clone(), creds))
                .register(request)
                .await
                .map_err(rpc("Register"))?
                .into_inner()
        }
    };
    let cred = reg
        .credential
        .ok_or_else(|| Error::Protocol("RegisterResponse without credential".into()))?;
    let saved = SavedCredential {
        access_key_id: cred.access_key_id.clone(),
        secret: cred.secret.clone(),
    };
    off_runtime(|| save_credential(&cred_path, &saved))?;
    let node_id = reg.node_id.clone();
    tracing::info!(
        node = node_id,
        lease_ttl = reg.lease_ttl_seconds,
        "registered"
    );
    let creds = Credentials::new(cred.access_key_id, cred.secret);
    if let Some(m) = metrics {
        m.set_credential(creds.clone());
    }
    let client: Client = NodeClient::new(nubis_proto::auth::Signed::new(channel, creds));
    let mut watch = client
        .clone()
        .watch_assignments(pb::WatchAssignmentsRequest {
            node_id: node_id.clone(),
        })
        .await
        .map_err(rpc("WatchAssignments"))?
        .into_inner();

    let mut hb_every = Duration::from_secs(u64::from(reg.heartbeat_interval_seconds.max(1)));
    *heartbeat = Some(hb_every);
    let mut hb = tokio::time::interval(hb_every);
    hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Images built or removed after registration are reported about once a
    // minute (a non-empty list replaces the node's).
    let mut last_images = tokio::time::Instant::now();
    let mut c = client.clone();
    // Reports: everything once per session, then changes (own task).
    let _network = AbortOnDrop(tokio::spawn(network_loop(
        agent.context().clone(),
        client.clone(),
        node_id.clone(),
    )));
    let mut reporting = AbortOnDrop(tokio::spawn(report_loop(
        agent.clone(),
        client,
        node_id.clone(),
        changed.clone(),
    )));
    loop {
        tokio::select! {
            _ = hb.tick() => {
                let (used, running) = agent.usage();
                let images = if last_images.elapsed() >= Duration::from_secs(60) {
                    last_images = tokio::time::Instant::now();
                    images_present(agent).await
                } else {
                    Vec::new()
                };
                let resp = c.heartbeat(pb::HeartbeatRequest {
                    node_id: node_id.clone(),
                    capacity: Some(capacity(agent)),
                    usage: Some(pb::Resources {
                        vcpus: used.vcpus,
                        memory_mib: u32::try_from(used.memory_mib).unwrap_or(u32::MAX),
                    }),
                    running_instances: running,
                    images,
                }).await.map_err(rpc("Heartbeat"))?.into_inner();
                let every = Duration::from_secs(u64::from(resp.heartbeat_interval_seconds.max(1)));
                if every != hb_every {
                    hb_every = every;
                    hb = tokio::time::interval(hb_every);
                }
            }
            ev = watch.message() => {
                let Some(ev) = ev.map_err(rpc("WatchAssignments"))? else {
                    return Ok(());
                };
                handle_event(agent, &mut c, &node_id, ev).await?;
            }
            done = &mut reporting.0 => {
                return done.map_err(|e| Error::io("report task", std::io::Error::other(e)))?;
            }
        }
    }
}

/// Follows `WatchNetwork` for the session: each view is validated, kept as
/// the latest and applied to the VPC data plane. A control plane that does
/// not serve it yet (UNIMPLEMENTED) means "no view yet": logged once, asked
/// again with back-off, like any other failure of the stream (the session
/// itself goes on).
pub async fn network_loop(ctx: Arc<crate::context::HostContext>, client: Client, node_id: String) {
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut backoff = Duration::from_secs(1);
    let mut said_unimplemented = false;
    loop {
        let mut c = client.clone();
        match c
            .watch_network(pb::WatchNetworkRequest {
                node_id: node_id.clone(),
            })
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(v)) => {
                            backoff = Duration::from_secs(1);
                            let received = std::time::Instant::now();
                            let view = crate::host::vpc::NetView::from_proto(&v);
                            let revision = view.revision;
                            match ctx.vpc.set_view(view).await {
                                Ok(true) => match ctx.vpc.sync(&ctx.layout, false).await {
                                    Ok(s) => tracing::info!(
                                        revision,
                                        changed = s.changed(),
                                        took_ms = received.elapsed().as_millis() as u64,
                                        "network view applied"
                                    ),
                                    Err(e) => {
                                        tracing::error!(revision, error = %crate::launch::chain(&e), "cannot apply the network view (retried by the reconcile loop)")
                                    }
                                },
                                Ok(false) => {
                                    tracing::debug!(revision, "network view unchanged or older")
                                }
                                Err(e) => {
                                    tracing::error!(revision, error = %crate::launch::chain(&e), "cannot keep the network view")
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::info!("WatchNetwork stream ended");
                            break;
                        }
                        Err(st) => {
                            tracing::warn!(error = %st, "WatchNetwork stream failed");
                            break;
                        }
                    }
                }
            }
            Err(st) if st.code() == tonic::Code::Unimplemented => {
                if !said_unimplemented {
                    said_unimplemented = true;
                    tracing::info!("the control plane does not serve WatchNetwork yet: no network view (asking again with back-off)");
                }
            }
            Err(st) => tracing::warn!(error = %st, "WatchNetwork failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Aborts the task when the session ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports every instance now and every 30 s, and each change as it comes:
/// a changed instance's report goes out at once (transitional launch phases
/// after [`TRANSITIONAL_HOLD`]) unless one of its reports is in flight (then
/// its latest goes out when that returns), at most [`REPORT_CONCURRENCY`]
/// calls at a time.
async fn report_loop(
    agent: Arc<Agent>,
    client: Client,
    node_id: String,
    changed: Changes,
) -> Result<()> {
    let mut changed = changed.lock_owned().await;
    let mut r = Reporter {
        agent,
        client,
        node_id,
        sent: BTreeMap::new(),
        in_flight: JoinSet::new(),
        flying: BTreeSet::new(),
        due: BTreeSet::new(),
        held: BTreeMap::new(),
    };
    // The first tick is immediate: the full report of a new session.
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        // Only with a free slot: an expired hold waits for one, not spins.
        let next_hold = r.next_hold();
        tokio::select! {
            id = changed.recv() => {
                let Some(id) = id else { return Ok(()) };
                r.due.insert(id);
                while let Ok(id) = changed.try_recv() {
                    r.due.insert(id);
                }
                r.agent.poke();
            }
            _ = resync.tick() => {
                r.sent.clear();
                r.due.extend(r.agent.reports().into_iter().map(|x| x.id));
            }
            Some(done) = r.in_flight.join_next() => r.finished(done)?,
            _ = hold_expiry(next_hold) => {}
        }
        r.launch();
    }
}

/// The reporting task's state.
struct Reporter {
    agent: Arc<Agent>,
    client: Client,
    node_id: String,
    /// The last report the control plane accepted, per instance.
    sent: BTreeMap<InstanceId, pb::ReportInstanceRequest>,
    in_flight: JoinSet<Result<(Report, pb::ReportInstanceRequest, bool)>>,
    /// Instances with a call in flight.
    flying: BTreeSet<InstanceId>,
    /// Instances whose report may have changed since it was last sent.
    due: BTreeSet<InstanceId>,
    /// Due instances in a transitional phase, and when to send it anyway.
    held: BTreeMap<InstanceId, tokio::time::Instant>,
}

/// Resolves at the earliest hold's end; never without holds.
async fn hold_expiry(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Launch phases a newer one soon replaces.
fn transitional(phase: i32) -> bool {
    use pb::ObservedPhase as P;
    [P::Pending, P::Booting, P::Running]
        .iter()
        .any(|p| *p as i32 == phase)
}

impl Reporter {
    /// When the earliest hold ends, if a call could start then.
    fn next_hold(&self) -> Option<tokio::time::Instant> {
        if self.in_flight.len() >= REPORT_CONCURRENCY {
            return None;
        }
        self.held.values().min().copied()
    }

    /// Starts calls for due instances without one in flight, while slots last.
    fn launch(&mut self) {
        let ready: Vec<InstanceId> = self
            .due
            .iter()
            .filter(|id| !self.flying.contains(*id))
            .cloned()
            .collect();
        let now = tokio::time::Instant::now();
        for id in ready {
            if self.in_flight.len() >= REPORT_CONCURRENCY {
                return;
            }
            // Gone from the agent's table: nothing left to report.
            let Some(report) = self.agent.report(&id) else {
                self.due.remove(&id);
                self.held.remove(&id);
                continue;
            };
            let Some(job) = job_for(&self.node_id, report, self.sent.get(&id)) else {
                self.due.remove(&id);
                self.held.remove(&id);
                continue;
            };
            if transitional(job.req.phase) {
                let until = *self
                    .held
                    .entry(id.clone())
                    .or_insert(now + TRANSITIONAL_HOLD);
                if now < until {
                    continue;
                }
            }
            self.due.remove(&id);
            self.held.remove(&id);
            self.flying.insert(id);
            self.in_flight.spawn(send_report(
                self.agent.clone(),
                self.client.clone(),
                self.node_id.clone(),
                job,
            ));
        }
    }

    /// Records a finished call; an RPC error ends the session.
    fn finished(
        &mut self,
        done: std::result::Result<
            Result<(Report, pb::ReportInstanceRequest, bool)>,
            tokio::task::JoinError,
        >,
    ) -> Result<()> {
        let (r, req, assigned) =
            done.map_err(|e| Error::io("report call", std::io::Error::other(e)))??;
        self.flying.remove(&r.id);
        self.sent.insert(r.id.clone(), req);
        if !assigned && r.state != State::Gone {
            tracing::info!(instance = %r.id, "control plane says not assigned: destroying");
            self.agent.remove(&r.id);
        }
        Ok(())
    }
}

/// One report to send, and whether to push the console log first.
struct Job {
    report: Report,
    req: pb::ReportInstanceRequest,
    push_console: bool,
    first_ready: bool,
}

/// The call to make for `r`, or `None` when the control plane has it already.
fn job_for(node_id: &str, r: Report, old: Option<&pb::ReportInstanceRequest>) -> Option<Job> {
    let req = to_report_request(node_id, &r);
    let same = old.is_some_and(|old| {
        let mut o = old.clone();
        o.phase_since_unix_ms = req.phase_since_unix_ms;
        o == req
    });
    if same {
        return None;
    }
    let phase_changed = old.is_none_or(|old| old.phase != req.phase);
    // Keep the last output with the control plane: a terminated instance's
    // log goes with its directory.
    let push_console =
        phase_changed && matches!(r.state, State::Stopped | State::Failed | State::Terminating);
    let first_ready = phase_changed && req.phase == pb::ObservedPhase::Ready as i32;
    Some(Job {
        report: r,
        req,
        push_console,
        first_ready,
    })
}

async fn send_report(
    agent: Arc<Agent>,
    mut c: Client,
    node_id: String,
    job: Job,
) -> Result<(Report, pb::ReportInstanceRequest, bool)> {
    let r = job.report;
    if job.push_console {
        let output = agent.console(&r.id, CONSOLE_TAIL_BYTES).unwrap_or_default();
        let pushed = c
            .report_console(pb::ReportConsoleRequest {
                node_id: node_id.clone(),
                instance_id: r.id.to_string(),
                request_id: String::new(),
                output,
                captured_unix_ms: now_ms() as i64,
            })
            .await;
        // Best effort: e.g. an orphan's console is refused (not assigned).
        if let Err(e) = pushed {
            tracing::debug!(instance = %r.id, error = %e, "console push refused");
        }
    }
    let resp = c
        .report_instance(job.req.clone())
        .await
        .map_err(rpc("ReportInstance"))?
        .into_inner();
    if job.first_ready {
        let now = now_ms();
        let ready = r.ready_unix_ms.unwrap_or(now);
        tracing::info!(
            instance = %r.id,
            ready_unix_ms = ready,
            reported_unix_ms = now,
            after_ready_ms = now.saturating_sub(ready),
            "ready reported"
        );
    }
    Ok((r, job.req, resp.assigned))
}

async fn handle_event(
    agent: &Agent,
    c: &mut Client,
    node_id: &str,
    ev: pb::AssignmentEvent,
) -> Result<()> {
    use pb::assignment_event::Event;
    match ev.event {
        Some(Event::Snapshot(s)) => {
            let mut items = Vec::new();
            let mut keep = std::collections::BTreeSet::new();
            for a in &s.assignments {
                match desired_from_assignment(a) {
                    Ok(d) => items.push(d),
                    Err(e) => {
                        tracing::error!(instance = a.instance_id, error = %e, "rejecting assignment: keeping the instance as it is");
                        keep.extend(InstanceId::new(a.instance_id.clone()).ok());
                    }
                }
            }
            for id in &s.undecodable_instance_ids {
                tracing::error!(
                    instance = id,
                    "assignment unreadable in the control plane: keeping the instance as it is"
                );
                keep.extend(InstanceId::new(id.clone()).ok());
            }
            tracing::info!(
                assignments = items.len(),
                kept = keep.len(),
                "assignment snapshot"
            );
            agent.set_snapshot_keeping(items, keep);
        }
        Some(Event::Upsert(a)) => match desired_from_assignment(&a) {
            Ok(d) => agent.upsert(d),
            Err(e) => {
                tracing::error!(instance = a.instance_id, error = %e, "rejecting assignment: keeping the instance as it is");
                if let Ok(id) = InstanceId::new(a.instance_id.clone()) {
                    agent.keep_as_is(id);
                }
            }
        },
        Some(Event::UndecodableInstanceId(id)) => match InstanceId::new(id) {
            Ok(id) => {
                tracing::error!(instance = %id, "assignment unreadable in the control plane: keeping the instance as it is");
                agent.keep_as_is(id);
            }
            Err(e) => tracing::error!(error = %e, "bad undecodable instance id"),
        },
        Some(Event::RemovedInstanceId(id)) => match InstanceId::new(id) {
            Ok(id) => agent.remove(&id),
            Err(e) => tracing::error!(error = %e, "bad removed instance id"),
        },
        Some(Event::ConsoleRequest(r)) => {
            let max = match r.max_bytes {
                0 => CONSOLE_TAIL_BYTES,
                n => u64::from(n).min(CONSOLE_TAIL_BYTES),
            };
            let output = match InstanceId::new(r.instance_id.clone()) {
                Ok(id) => agent.console(&id, max).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let answered = c
                .report_console(pb::ReportConsoleRequest {
                    node_id: node_id.to_string(),
                    instance_id: r.instance_id.clone(),
                    request_id: r.request_id,
                    output,
                    captured_unix_ms: crate::instance::now_ms() as i64,
                })
                .await;
            // A refused answer (e.g. the instance was just unassigned) must
            // not end the session; a broken connection shows up elsewhere.
            if let Err(e) = answered {
                tracing::warn!(instance = r.instance_id, error = %e, "console answer refused");
            }
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
