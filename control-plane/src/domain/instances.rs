//! Instances: Describe*, Start/Stop/Reboot/Terminate, agent observations
//! and console output (RunInstances is [`launch`](super::launch)).
//!
//! Every change goes through `Domain::update_instance` ([`placement`]),
//! which applies a [`lifecycle`] transition and writes the instance, its
//! assignment and the node's allocation in one compare-and-swap transaction
//! (retrying on conflict), so capacity is never double-booked or leaked.
//!
//! [`placement`]: crate::domain::placement

use std::time::Duration;

use base64::Engine as _;

use crate::domain::filters::{self, Filter};
use crate::domain::lifecycle::{self, Desired, Event, Outcome, Phase, State};
use crate::domain::model::{
    now_ms, Assignment, ConsoleRecord, ConsoleRequest, Instance, NetworkAssignment, Observed,
};
use crate::domain::placement::Plan;
use crate::domain::views::{self, ConsoleOutput, InstanceStatus, Reservation, StateChange};
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, NodeId};
use crate::store::Versioned;

/// Largest console output kept and returned.
pub const CONSOLE_MAX: usize = 64 * 1024;
/// Console output younger than this is returned as stored, without asking
/// the instance's node again (GetConsoleOutput throttling: a tenant polling in
/// a loop costs its host one capture and etcd one write per second at most).
pub const CONSOLE_REFRESH_MIN: Duration = Duration::from_secs(1);
/// Page size of unpaged describes.
pub const DEFAULT_PAGE: u32 = 1000;

/// The operator-only DescribeInstances filter by node.
pub const NODE_ID_FILTER: &str = "node-id";

/// Filter names DescribeInstances supports.
pub const INSTANCE_FILTERS: &[&str] = &[
    "instance-state-name",
    "instance-state-code",
    "availability-zone",
    "instance-type",
    "image-id",
    "instance-id",
    "reservation-id",
    "key-name",
    "private-ip-address",
    "node-id",
    "tag:",
    "tag-key",
    "tag-value",
    "owner-id",
    "launch-time",
    "instance-lifecycle",
    "placement-group-name",
    "ip-address",
    "dns-name",
    "private-dns-name",
    "subnet-id",
    "vpc-id",
    "instance.group-id",
    "architecture",
    "hypervisor",
    "root-device-type",
    "root-device-name",
    "virtualization-type",
    "monitoring-state",
    "tenancy",
    "placement-tenancy",
    "ami-launch-index",
    "client-token",
    "block-device-mapping.device-name",
    "block-device-mapping.volume-id",
    "block-device-mapping.status",
    "block-device-mapping.delete-on-termination",
];

/// The id the instance's root disk is shown under (`vol-` + the instance's
/// hex): the disk lives and dies with the instance, there are no separate
/// volumes.
pub fn root_volume_id(id: &InstanceId) -> String {
    format!("vol-{}", &id.as_str()[InstanceId::PREFIX.len()..])
}

/// Filter names DescribeInstanceStatus supports.
pub const STATUS_FILTERS: &[&str] = &[
    "availability-zone",
    "instance-state-name",
    "instance-state-code",
    "system-status.status",
    "instance-status.status",
];

/// RunInstances parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInstancesInput {
    /// `ami-...`.
    pub image_id: String,
    /// Catalogue name.
    pub instance_type: String,
    /// At least this many or nothing.
    pub min_count: u32,
    /// At most this many.
    pub max_count: u32,
    /// Zone (None = scheduler's choice).
    pub availability_zone: Option<String>,
    /// Tags for every instance.
    pub tags: Vec<(String, String)>,
    /// Raw user data.
    pub user_data: Vec<u8>,
    /// Key pair name.
    pub key_name: Option<String>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Launch options (EC2's defaults when not given).
    pub options: crate::domain::model::LaunchOptions,
    /// `MetadataOptions`.
    pub metadata_options: crate::domain::metadata::MetadataOptionsInput,
}

/// Describe parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeInput {
    /// Ids (empty = all).
    pub instance_ids: Vec<String>,
    /// Filters.
    pub filters: Vec<Filter>,
    /// Page size (0 = default page).
    pub max_results: u32,
    /// Continuation.
    pub next_token: Option<String>,
}

pub(super) fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

fn not_found(ids: &[String]) -> Error {
    Error::not_found(
        "InvalidInstanceID.NotFound",
        format!("the instance IDs '{}' do not exist", ids.join(", ")),
    )
}

/// Encodes a continuation token (opaque to clients).
pub fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

/// Decodes a continuation token.
pub fn decode_token(tok: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Error::invalid_code("InvalidNextToken", "the NextToken is not valid"))
}

/// Decodes a continuation token that must be a key under `prefix`.
pub fn decode_token_under(tok: &str, prefix: &str) -> Result<String> {
    let last = decode_token(tok)?;
    if !last.starts_with(prefix) {
        return Err(Error::invalid_code(
            "InvalidNextToken",
            "the NextToken is not valid",
        ));
    }
    Ok(last)
}

impl Domain {
    pub(super) fn assignment_of(
        &self,
        inst: &Instance,
        network: &NetworkAssignment,
        user_data_b64: String,
        ssh: String,
    ) -> Assignment {
        Assignment {
            instance_id: inst.id.clone(),
            account: inst.account.clone(),
            desired: inst.desired,
            generation: inst.generation,
            force: inst.force,
            image_name: inst.image_location.clone(),
            image_sha256: inst.image_sha256.clone(),
            instance_type: inst.instance_type.clone(),
            vcpus: inst.vcpus,
            memory_mib: inst.memory_mib,
            user_data_b64,
            network: network.clone(),
            cmdline_extra: format!("nubis.id={}", inst.id),
            ssh_public_key: ssh,
            metadata: Some(self.assignment_metadata(inst)),
            root_volume_gib: inst.options.root_volume_gib.unwrap_or(0),
            // The type's limits now (a type deleted meanwhile has none).
            limits: self
                .instance_type(&inst.instance_type)
                .ok()
                .and_then(|t| t.limits),
            security_group_ids: inst
                .vpc
                .as_ref()
                .map(|v| v.security_group_ids.clone())
                .unwrap_or_default(),
            secondary_interfaces: crate::domain::vpc::eni_secondary::secondaries_of(inst).to_vec(),
        }
    }

    /// Reads one instance of the caller's account.
    pub async fn instance(&self, caller: &Caller, id: &str) -> Result<Versioned<Instance>> {
        let account = caller.account()?;
        let id = InstanceId::parse(id)?;
        self.store
            .instances()
            .get(&account, &id)
            .await?
            .ok_or_else(|| not_found(&[id.to_string()]))
    }

    /// DescribeInstances.
    pub async fn describe_instances(
        &self,
        caller: &Caller,
        input: DescribeInput,
    ) -> Result<(Vec<Reservation>, Option<String>)> {
        let (instances, next) = self
            .select_instances(caller, &input, INSTANCE_FILTERS, instance_matches)
            .await?;
        Ok((views::group(instances), next))
    }

    async fn select_instances(
        &self,
        caller: &Caller,
        input: &DescribeInput,
        supported: &[&str],
        matches: fn(&Domain, &Instance, &Filter) -> bool,
    ) -> Result<(Vec<Instance>, Option<String>)> {
        let account = caller.account()?;
        filters::check(&input.filters, supported)?;
        // Only the operator may filter by node: a tenant could otherwise
        // learn, digit by digit (wildcards), which host it shares with whom.
        if !caller.is_operator() && input.filters.iter().any(|f| f.name == NODE_ID_FILTER) {
            return Err(Error::invalid(format!(
                "the filter '{NODE_ID_FILTER}' is only available to the operator"
            )));
        }
        validation::max_results(input.max_results)?;
        if !input.instance_ids.is_empty() {
            if input.max_results != 0 || input.next_token.is_some() {
                return Err(Error::invalid(
                    "MaxResults/NextToken cannot be used together with InstanceIds",
                ));
            }
            let mut ids = Vec::new();
            for s in &input.instance_ids {
                ids.push(InstanceId::parse(s)?);
            }
            ids.sort();
            ids.dedup();
            let got = self.store.instances().get_many(&account, &ids).await?;
            let missing: Vec<String> = ids
                .iter()
                .zip(&got)
                .filter(|(_, g)| g.is_none())
                .map(|(i, _)| i.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(not_found(&missing));
            }
            let out = got
                .into_iter()
                .flatten()
                .map(|v| v.value)
                .filter(|i| input.filters.iter().all(|f| matches(self, i, f)))
                .collect();
            return Ok((out, None));
        }
        let prefix = if caller.is_operator() {
            self.store.instances().all_prefix()
        } else {
            self.store.instances().account_prefix(&account)
        };
        let page = if input.max_results == 0 {
            DEFAULT_PAGE
        } else {
            input.max_results
        } as usize;
        let mut after = match &input.next_token {
            Some(t) => Some(decode_token_under(t, &prefix)?),
            None => None,
        };
        let mut out = Vec::new();
        // Lowered for the rest of the call when records are too large for
        // one etcd response (store::MAX_RESPONSE_BYTES).
        let mut cap = crate::store::MAX_PAGE;
        loop {
            let chunk = ((page - out.len()).max(100) as i64).min(cap);
            // A read is capped at store::MAX_PAGE: `more` (not the count)
            // says whether the prefix is done.
            let read = self
                .store
                .instances()
                .page_under(&prefix, after.as_deref(), chunk)
                .await?;
            cap = read.limit;
            let exhausted = !read.more;
            for (k, v) in read.items {
                after = Some(k);
                if input.filters.iter().all(|f| matches(self, &v.value, f)) {
                    out.push(v.value);
                    if out.len() == page {
                        // More may follow: hand out a token unless the prefix is done.
                        let more = self
                            .store
                            .list_from::<Instance>(&prefix, after.as_deref(), 1)
                            .await?
                            .0
                            .is_empty();
                        let more = !more;
                        return Ok((
                            out,
                            if more {
                                after.map(|a| encode_token(&a))
                            } else {
                                None
                            },
                        ));
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }

    /// DescribeInstanceStatus.
    pub async fn describe_instance_status(
        &self,
        caller: &Caller,
        input: DescribeInput,
        include_all: bool,
    ) -> Result<(Vec<InstanceStatus>, Option<String>)> {
        let (instances, next) = self
            .select_instances(caller, &input, STATUS_FILTERS, status_matches)
            .await?;
        let out = instances
            .iter()
            .filter(|i| include_all || i.state == State::Running)
            .map(|i| self.status_of(i))
            .collect();
        Ok((out, next))
    }

    fn status_of(&self, i: &Instance) -> InstanceStatus {
        let (system, instance) = match (&i.node_id, i.state) {
            (Some(n), State::Pending | State::Running) => {
                if self.nodes.alive(n).is_none() {
                    ("impaired", "insufficient-data")
                } else {
                    let inst = match i.observed.as_ref().map(|o| o.phase) {
                        Some(Phase::Ready) => "ok",
                        Some(Phase::Failed) => "impaired",
                        _ => "initializing",
                    };
                    ("ok", inst)
                }
            }
            _ => ("not-applicable", "not-applicable"),
        };
        InstanceStatus {
            instance_id: i.id.clone(),
            availability_zone: i.availability_zone.clone(),
            state: i.state,
            system_status: system,
            instance_status: instance,
        }
    }

    /// StartInstances.
    pub async fn start_instances(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<Vec<StateChange>> {
        self.user_action(caller, ids, Event::Start, false).await
    }

    /// StopInstances.
    pub async fn stop_instances(
        &self,
        caller: &Caller,
        ids: &[String],
        force: bool,
    ) -> Result<Vec<StateChange>> {
        self.user_action(caller, ids, Event::Stop, force).await
    }

    /// RebootInstances.
    pub async fn reboot_instances(&self, caller: &Caller, ids: &[String]) -> Result<()> {
        self.user_action(caller, ids, Event::Reboot, false)
            .await
            .map(|_| ())
    }

    /// TerminateInstances.
    pub async fn terminate_instances(
        &self,
        caller: &Caller,
        ids: &[String],
    ) -> Result<Vec<StateChange>> {
        self.user_action(caller, ids, Event::Terminate, false).await
    }

    async fn user_action(
        &self,
        caller: &Caller,
        ids: &[String],
        event: Event,
        force: bool,
    ) -> Result<Vec<StateChange>> {
        let account = caller.account()?;
        if ids.is_empty() {
            return Err(Error::missing("InstanceId"));
        }
        // Validate everything (ids, existence, legality) before changing anything.
        let mut parsed = Vec::new();
        for s in ids {
            parsed.push(InstanceId::parse(s)?);
        }
        let got = self.store.instances().get_many(&account, &parsed).await?;
        let missing: Vec<String> = parsed
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.is_none())
            .map(|(i, _)| i.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(not_found(&missing));
        }
        for g in got.iter().flatten() {
            check_protection(&g.value, &event)?;
            lifecycle::apply(g.value.state, &event)?;
        }
        let mut out = Vec::new();
        for i in &parsed {
            let key = self.store.instances().key(&account, i);
            out.push(self.apply_event(&key, &event, force, None).await?);
        }
        Ok(out)
    }

    /// Applies a lifecycle event to the instance at `key` (retrying on
    /// conflict). `observed` is recorded with agent reports.
    pub(crate) async fn apply_event(
        &self,
        key: &str,
        event: &Event,
        force: bool,
        observed: Option<Observed>,
    ) -> Result<StateChange> {
        self.apply_event_guarded(key, event, force, observed, None)
            .await
    }

    /// Node loss: like [`Self::apply_event`] with [`Event::NodeLost`], but
    /// only while the node's liveness key is still absent (a node that
    /// re-registered in the meantime keeps its instances).
    pub(crate) async fn apply_node_lost(&self, key: &str, node: &NodeId) -> Result<StateChange> {
        let guard = self.store.nodes().alive_key(node);
        self.apply_event_guarded(key, &Event::NodeLost, true, None, Some(&guard))
            .await
    }

    async fn apply_event_guarded(
        &self,
        key: &str,
        event: &Event,
        force: bool,
        observed: Option<Observed>,
        absent_guard: Option<&str>,
    ) -> Result<StateChange> {
        let (before, after) = self
            .update_instance(key, absent_guard, |inst| {
                // Stopped by node loss, its node not yet back (desired still
                // running): the node's word decides (domain::liveness).
                let lost_waiting = inst.state == State::Stopped && inst.desired == Desired::Running;
                let event = match event {
                    Event::HostReturnedWithout if !lost_waiting => return Ok(None),
                    Event::Observed { phase, .. } if lost_waiting => match phase {
                        Phase::Running | Phase::Ready => &Event::Recovered,
                        Phase::Stopped | Phase::Failed | Phase::Terminated => {
                            &Event::HostReturnedWithout
                        }
                        _ => event,
                    },
                    _ => event,
                };
                let mut new = inst.clone();
                let mut assignment_changed = false;
                if let Some(o) = &observed {
                    if o.generation < inst.generation {
                        return Ok(None); // stale report
                    }
                    new.observed = Some(o.clone());
                    // Only the reboot's own generation ends it: the agent
                    // reports its restart as `booting` and the new VMM as
                    // running, so an older report cannot.
                    if inst.desired == Desired::Rebooting
                        && o.generation == inst.generation
                        && matches!(o.phase, Phase::Running | Phase::Ready)
                    {
                        new.desired = Desired::Running;
                        assignment_changed = true;
                    }
                }
                let t =
                    match lifecycle::apply_with(inst.state, event, inst.options.shutdown_behavior)?
                    {
                        Outcome::Unchanged => {
                            if observed.is_some() && new != *inst {
                                return Ok(Some(Plan {
                                    inst: new,
                                    place: false,
                                    release: false,
                                    unassign: false,
                                    assignment_changed,
                                }));
                            }
                            return Ok(None);
                        }
                        Outcome::Change(t) => t,
                    };
                new.state = t.to;
                if let Some(r) = t.reason {
                    new.state_reason = Some(r);
                } else if t.to == State::Running {
                    new.state_reason = None;
                }
                if let Some(r) = t.transition_reason {
                    new.state_transition_reason = r;
                }
                if let Some(d) = t.desired {
                    new.desired = d;
                    new.generation += 1;
                    new.force = force;
                    assignment_changed = true;
                }
                if t.to == State::Terminated {
                    new.terminated_ms = Some(now_ms());
                }
                if t.place {
                    new.launch_time_ms = now_ms();
                    new.observed = None;
                }
                Ok(Some(Plan {
                    inst: new,
                    place: t.place,
                    release: t.release,
                    unassign: t.unassign,
                    assignment_changed,
                }))
            })
            .await?;
        Ok(StateChange {
            instance_id: after.id.clone(),
            previous: before.state,
            current: after.state,
        })
    }

    /// GetConsoleOutput: the last stored copy when it is younger than
    /// [`CONSOLE_REFRESH_MIN`] or the instance has no live node; otherwise asks
    /// the node for fresh output (up to `wait`), falling back to the stored
    /// copy. Callers of one instance share one pending request (on every
    /// replica), so however often a tenant calls, its instance's node is asked
    /// at most once per [`CONSOLE_REFRESH_MIN`] and etcd gets at most one
    /// console write per instance in that time.
    pub async fn console_output(
        &self,
        caller: &Caller,
        id: &str,
        wait: Duration,
    ) -> Result<ConsoleOutput> {
        let inst = self.instance(caller, id).await?.value;
        let stored = |rec: Option<Versioned<ConsoleRecord>>| match rec {
            Some(r) => ConsoleOutput {
                instance_id: inst.id.clone(),
                timestamp_ms: r.value.captured_ms,
                output: unb64(&r.value.output_b64),
            },
            None => ConsoleOutput {
                instance_id: inst.id.clone(),
                timestamp_ms: 0,
                output: Vec::new(),
            },
        };
        let last = self.store.consoles().get(&inst.id).await?;
        let node = match &inst.node_id {
            Some(n) if self.nodes.alive(n).is_some() => n.clone(),
            _ => return Ok(stored(last)),
        };
        let fresh = last.as_ref().is_some_and(|r| {
            let age = crate::domain::model::now_ms().saturating_sub(r.value.captured_ms);
            (0..CONSOLE_REFRESH_MIN.as_millis() as i64).contains(&age)
        });
        if fresh {
            return Ok(stored(last));
        }
        let mut request = ConsoleRequest {
            request_id: hex::encode(rand::random::<[u8; 8]>()),
            instance_id: inst.id.clone(),
            max_bytes: CONSOLE_MAX as u32,
        };
        let lease = self.store.grant_lease(30).await?;
        let mine = match self
            .store
            .consoles()
            .request_once(&node, &request, lease)
            .await
        {
            Ok(None) => true,
            Ok(Some(pending)) => {
                request = pending;
                false
            }
            Err(e) => {
                let _ = self.store.revoke_lease(lease).await;
                return Err(e);
            }
        };
        if !mine {
            let _ = self.store.revoke_lease(lease).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let rec = self.store.consoles().get(&inst.id).await?;
            if rec
                .as_ref()
                .is_some_and(|r| r.value.request_id == request.request_id)
                || tokio::time::Instant::now() >= deadline
            {
                if mine {
                    let _ = self.store.revoke_lease(lease).await;
                }
                return Ok(stored(rec));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stores console output an agent reported.
    pub(crate) async fn store_console(
        &self,
        inst: &InstanceId,
        request_id: &str,
        output: &[u8],
        captured_ms: i64,
    ) -> Result<()> {
        let out = if output.len() > CONSOLE_MAX {
            &output[output.len() - CONSOLE_MAX..]
        } else {
            output
        };
        self.store
            .consoles()
            .put(
                inst,
                &ConsoleRecord {
                    request_id: request_id.to_string(),
                    output_b64: b64(out),
                    captured_ms,
                },
            )
            .await
    }
}

fn instance_matches(d: &Domain, i: &Instance, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &i.tags) {
        return m;
    }
    let v = &f.values;
    let code = i.state.code().to_string();
    match f.name.as_str() {
        "instance-state-name" => filters::any_matches(v, &[i.state.name()]),
        "instance-state-code" => filters::any_matches(v, &[&code]),
        "availability-zone" => filters::any_matches(v, &[&i.availability_zone]),
        "instance-type" => filters::any_matches(v, &[&i.instance_type]),
        "image-id" => filters::any_matches(v, &[i.image_id.as_str()]),
        "instance-id" => filters::any_matches(v, &[i.id.as_str()]),
        "reservation-id" => filters::any_matches(v, &[i.reservation_id.as_str()]),
        "key-name" => i
            .key_name
            .as_deref()
            .is_some_and(|k| filters::any_matches(v, &[k])),
        "private-ip-address" => i
            .network
            .as_ref()
            .is_some_and(|n| filters::any_matches(v, &[&n.ip])),
        "node-id" => i
            .node_id
            .as_ref()
            .is_some_and(|n| filters::any_matches(v, &[n.as_str()])),
        "owner-id" => filters::any_matches(v, &[i.account.as_str()]),
        "launch-time" => filters::any_matches(v, &[&iso_ms(i.launch_time_ms)]),
        "private-dns-name" => i.network.as_ref().is_some_and(|n| {
            filters::any_matches(
                v,
                &[&format!("ip-{}.nubis.internal", n.ip.replace('.', "-"))],
            )
        }),
        "subnet-id" => i
            .vpc
            .as_ref()
            .and_then(|x| x.subnet_id.as_ref())
            .or_else(|| i.network.as_ref().and_then(|n| n.subnet_id.as_ref()))
            .is_some_and(|s| filters::any_matches(v, &[s.as_str()])),
        "vpc-id" => i
            .vpc
            .as_ref()
            .and_then(|x| x.vpc_id.as_ref())
            .is_some_and(|x| filters::any_matches(v, &[x.as_str()])),
        "instance.group-id" => i.vpc.as_ref().is_some_and(|x| {
            x.security_group_ids
                .iter()
                .any(|g| filters::any_matches(v, &[g.as_str()]))
        }),
        "architecture" => filters::any_matches(v, &["x86_64"]),
        "hypervisor" => filters::any_matches(v, &["xen"]),
        "root-device-type" => filters::any_matches(v, &["ebs"]),
        "root-device-name" | "block-device-mapping.device-name" => {
            filters::any_matches(v, &[crate::domain::model::ROOT_DEVICE_NAME])
        }
        "block-device-mapping.volume-id" => filters::any_matches(v, &[&root_volume_id(&i.id)]),
        "block-device-mapping.status" => filters::any_matches(v, &["attached"]),
        "block-device-mapping.delete-on-termination" => filters::any_matches(v, &["true"]),
        "virtualization-type" => filters::any_matches(v, &["hvm"]),
        "monitoring-state" => filters::any_matches(
            v,
            &[if i.options.monitoring {
                "enabled"
            } else {
                "disabled"
            }],
        ),
        "tenancy" | "placement-tenancy" => filters::any_matches(v, &["default"]),
        "ami-launch-index" => filters::any_matches(v, &[&i.launch_index.to_string()]),
        "client-token" => filters::any_matches(v, &[&i.client_token]),
        // On-demand instances only (no lifecycle), no placement groups, no
        // public addresses or DNS names: these filters match nothing.
        "instance-lifecycle" | "placement-group-name" | "ip-address" | "dns-name" => false,
        _ => {
            let _ = d;
            false
        }
    }
}

/// `launch-time` as DescribeInstances shows it (`2026-01-02T03:04:05.000Z`).
fn iso_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn status_matches(d: &Domain, i: &Instance, f: &Filter) -> bool {
    let s = d.status_of(i);
    let v = &f.values;
    let code = i.state.code().to_string();
    match f.name.as_str() {
        "availability-zone" => filters::any_matches(v, &[&i.availability_zone]),
        "instance-state-name" => filters::any_matches(v, &[i.state.name()]),
        "instance-state-code" => filters::any_matches(v, &[&code]),
        "system-status.status" => filters::any_matches(v, &[s.system_status]),
        "instance-status.status" => filters::any_matches(v, &[s.instance_status]),
        _ => false,
    }
}

/// `DisableApiTermination` / `DisableApiStop`: TerminateInstances and
/// StopInstances refuse with `OperationNotPermitted` (as EC2 does, also with
/// `Force`).
fn check_protection(inst: &Instance, event: &Event) -> Result<()> {
    let (blocked, attribute, verb) = match event {
        Event::Terminate => (
            inst.options.disable_api_termination,
            "disableApiTermination",
            "terminated",
        ),
        Event::Stop => (inst.options.disable_api_stop, "disableApiStop", "stopped"),
        _ => (false, "", ""),
    };
    if blocked {
        return Err(Error::incorrect_state(
            "OperationNotPermitted",
            format!(
                "The instance '{}' may not be {verb}. Modify its '{attribute}' instance \
                 attribute and try again.",
                inst.id
            ),
        ));
    }
    Ok(())
}
