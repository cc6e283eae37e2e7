//! Waiting for instances to reach a state, with progress on stderr (one line
//! per observed change, so it reads well on a terminal and in CI logs).
//!
//! One RPC per poll, on the channel the command already has: for
//! [`Target::Ready`], DescribeInstanceStatus with all instances included
//! (state and instance status `ok` = the guest printed its ready line, in one
//! answer); for the other targets DescribeInstances (by `instance-id`
//! filter, so instances that vanish after termination are not an error).
//! DescribeInstances is also called once at the end (the records returned)
//! and when an instance can no longer reach the target (for its state
//! reason): it fails early, e.g. when an instance stopped with a `Server.*`
//! reason while we waited for it to run.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use nubis_proto::compute::v1 as pb;

use super::instances::state_name;
use crate::client::Client;
use crate::error::CliError;

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// State `running`.
    Running,
    /// State `running` and instance status `ok`.
    Ready,
    /// State `stopped`.
    Stopped,
    /// State `terminated` (or gone).
    Terminated,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Running => "running",
            Target::Ready => "ready",
            Target::Stopped => "stopped",
            Target::Terminated => "terminated",
        }
    }
}

/// Where one instance stands with respect to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reached.
    Done,
    /// Not yet.
    Waiting,
    /// Can no longer reach it; the text says why.
    Failed(String),
}

/// Decides one instance's verdict from its state name, state reason and
/// readiness.
pub fn judge(
    target: Target,
    state: &str,
    reason: Option<&pb::StateReason>,
    ready: bool,
) -> Verdict {
    let why = || match reason {
        Some(r) if !r.code.is_empty() || !r.message.is_empty() => {
            format!("{state} ({}: {})", r.code, r.message)
        }
        _ => state.to_string(),
    };
    match target {
        Target::Running | Target::Ready => match state {
            "running" if target == Target::Running || ready => Verdict::Done,
            "pending" | "running" => Verdict::Waiting,
            _ => Verdict::Failed(why()),
        },
        Target::Stopped => match state {
            "stopped" => Verdict::Done,
            "terminated" | "shutting-down" => Verdict::Failed(why()),
            _ => Verdict::Waiting,
        },
        Target::Terminated => match state {
            "terminated" | "" => Verdict::Done,
            _ => Verdict::Waiting,
        },
    }
}

/// What one poll saw of an instance.
#[derive(Debug, Clone, Default)]
struct Seen {
    state: String,
    zone: String,
    ready: bool,
    /// Set when the poll returned the whole record (DescribeInstances).
    record: Option<pb::Instance>,
}

/// DescribeInstances of `ids` (by filter: vanished ones are just absent).
async fn describe_ids(
    client: &mut Client,
    ids: &[String],
) -> Result<BTreeMap<String, pb::Instance>, CliError> {
    let found = super::instances::describe(
        client,
        Vec::new(),
        vec![pb::Filter {
            name: "instance-id".into(),
            values: ids.to_vec(),
        }],
    )
    .await?;
    Ok(found
        .into_iter()
        .map(|i| (i.instance_id.clone(), i))
        .collect())
}

/// One poll: one RPC (see the module doc).
async fn observe(
    client: &mut Client,
    ids: &[String],
    target: Target,
) -> Result<BTreeMap<String, Seen>, CliError> {
    if target != Target::Ready {
        return Ok(describe_ids(client, ids)
            .await?
            .into_iter()
            .map(|(id, i)| {
                let seen = Seen {
                    state: state_name(&i),
                    zone: i.availability_zone.clone(),
                    ready: false,
                    record: Some(i),
                };
                (id, seen)
            })
            .collect());
    }
    let resp = client
        .compute
        .describe_instance_status(pb::DescribeInstanceStatusRequest {
            instance_ids: ids.to_vec(),
            filters: Vec::new(),
            include_all_instances: true,
            max_results: 0,
            next_token: String::new(),
        })
        .await?
        .into_inner();
    Ok(resp
        .instance_statuses
        .into_iter()
        .map(|s| {
            let seen = Seen {
                state: s
                    .instance_state
                    .as_ref()
                    .map(|st| st.name.clone())
                    .unwrap_or_default(),
                zone: s.availability_zone.clone(),
                ready: s
                    .instance_status
                    .as_ref()
                    .is_some_and(|st| st.status == "ok"),
                record: None,
            };
            (s.instance_id, seen)
        })
        .collect())
}

/// Waits until every instance in `ids` reaches `target`; prints progress to
/// stderr; returns the final descriptions (in `ids` order).
pub async fn wait_for(
    client: &mut Client,
    ids: &[String],
    target: Target,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<pb::Instance>, CliError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut err = std::io::stderr();
    loop {
        let seen = observe(client, ids, target).await?;
        let mut pending = Vec::new();
        for id in ids {
            let inst = seen.get(id.as_str());
            let state = inst.map(|s| s.state.clone()).unwrap_or_default();
            let is_ready = inst.is_some_and(|s| s.ready);
            let shown = if is_ready {
                "ready".to_string()
            } else {
                state.clone()
            };
            let shown = if shown.is_empty() {
                "gone".to_string()
            } else {
                shown
            };
            if last.get(id) != Some(&shown) {
                let prev = last.insert(id.clone(), shown.clone());
                let zone = inst.map(|i| i.zone.as_str()).unwrap_or("");
                let arrow = match prev {
                    Some(p) => format!("{p} -> {shown}"),
                    None => shown.clone(),
                };
                // Progress is best effort: a closed stderr must not fail the wait.
                let _ = writeln!(
                    err,
                    "[{:>6.1}s] {id}  {arrow}  {zone}",
                    start.elapsed().as_secs_f64()
                );
            }
            if inst.is_none() && target != Target::Terminated {
                return Err(CliError::NotFound(format!(
                    "instance {id} does not exist (or is not visible to this account)"
                )));
            }
            match judge(target, &state, None, is_ready) {
                Verdict::Done => {}
                Verdict::Waiting => pending.push(format!("{id} ({shown})")),
                Verdict::Failed(mut why) => {
                    // The status poll carries no reason: fetch the record.
                    let record = match inst.and_then(|i| i.record.clone()) {
                        Some(r) => Some(r),
                        None => describe_ids(client, std::slice::from_ref(id))
                            .await?
                            .remove(id),
                    };
                    if let Some(r) = &record {
                        if let Verdict::Failed(w) =
                            judge(target, &state, r.state_reason.as_ref(), is_ready)
                        {
                            why = w;
                        }
                    }
                    return Err(CliError::Wait(format!(
                        "instance {id} will not become {}: it is {why}",
                        target.label()
                    )));
                }
            }
        }
        if pending.is_empty() {
            let _ = writeln!(
                err,
                "[{:>6.1}s] {} instance(s) {}",
                start.elapsed().as_secs_f64(),
                ids.len(),
                target.label()
            );
            let have_records = ids
                .iter()
                .all(|id| seen.get(id).is_none_or(|s| s.record.is_some()));
            let mut records: BTreeMap<String, pb::Instance> = if have_records {
                seen.into_iter()
                    .filter_map(|(id, s)| s.record.map(|r| (id, r)))
                    .collect()
            } else {
                describe_ids(client, ids).await?
            };
            return Ok(ids.iter().filter_map(|id| records.remove(id)).collect());
        }
        if Instant::now() >= deadline {
            return Err(CliError::Wait(format!(
                "timed out after {}s waiting for {} to be {}: {}",
                timeout.as_secs(),
                if pending.len() == 1 {
                    "an instance"
                } else {
                    "instances"
                },
                target.label(),
                pending.join(", ")
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: &str) -> pb::StateReason {
        pb::StateReason {
            code: code.into(),
            message: "node lost".into(),
        }
    }

    #[test]
    fn running_targets() {
        assert_eq!(
            judge(Target::Running, "running", None, false),
            Verdict::Done
        );
        assert_eq!(
            judge(Target::Ready, "running", None, false),
            Verdict::Waiting
        );
        assert_eq!(judge(Target::Ready, "running", None, true), Verdict::Done);
        assert_eq!(
            judge(Target::Ready, "pending", None, false),
            Verdict::Waiting
        );
        let r = reason("Server.InternalError");
        match judge(Target::Ready, "stopped", Some(&r), false) {
            Verdict::Failed(why) => assert!(why.contains("Server.InternalError: node lost")),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            judge(Target::Running, "terminated", None, false),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn stop_and_terminate_targets() {
        assert_eq!(
            judge(Target::Stopped, "stopping", None, false),
            Verdict::Waiting
        );
        assert_eq!(
            judge(Target::Stopped, "stopped", None, false),
            Verdict::Done
        );
        assert!(matches!(
            judge(Target::Stopped, "terminated", None, false),
            Verdict::Failed(_)
        ));
        assert_eq!(
            judge(Target::Terminated, "shutting-down", None, false),
            Verdict::Waiting
        );
        assert_eq!(
            judge(Target::Terminated, "terminated", None, false),
            Verdict::Done
        );
        assert_eq!(judge(Target::Terminated, "", None, false), Verdict::Done);
    }
}
