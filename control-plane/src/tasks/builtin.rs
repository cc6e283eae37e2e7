//! The control plane's built-in background tasks, all leader-only:
//!
//! - `node-loss` (every `reconciler.interval_seconds`, and early when a
//!   liveness key changes): the node-loss rules of [`crate::domain::liveness`]
//!   (grace after the term's start, disruption rule, operator confirmations);
//! - `pending-reservations` (every `interval_seconds`): RunInstances calls
//!   written in batches whose caller died are finished
//!   ([`Domain::resume_pending_reservations`]);
//! - `instance-gc` (every min(60 s, `gc_terminated_after_seconds`)):
//!   terminated instances are deleted `gc_terminated_after_seconds` after
//!   termination ([`Domain::collect_terminated`]);
//! - `client-token-gc` (every 60 s): ClientToken records a day old whose
//!   instances are all gone ([`Domain::collect_client_tokens`]), and expired
//!   node enrolment tokens ([`Domain::collect_enrolment_tokens`]);
//! - `autoscaling` (every `interval_seconds`, and early when a group
//!   changes): the Auto Scaling controller
//!   ([`crate::domain::autoscaling::controller`]);
//! - `event-gc` (every 60 s): lifecycle events older than
//!   `events.retention_days` are deleted ([`Domain::collect_expired_events`]);
//! - `billing-export` (every 60 s, [`super::billing`]): the hourly usage CSV.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::liveness::Hearing;
use crate::domain::model::now_ms;
use crate::domain::Domain;
use crate::ids::NodeId;
use crate::tasks::{Mode, RunContext, RunFuture, Task};

/// Longest pause between garbage-collection scans (each lists every
/// instance).
pub const GC_PERIOD: Duration = Duration::from_secs(60);

/// A RunInstances call written in batches that has not ended this long
/// after it started is finished by the `pending-reservations` task.
pub const RESUME_PENDING_AFTER: Duration = Duration::from_secs(60);

/// Every built-in task over `domain`.
pub fn all(domain: &Arc<Domain>) -> Vec<Arc<dyn Task>> {
    vec![
        Arc::new(NodeLoss::new(domain.clone())),
        Arc::new(PendingReservations(domain.clone())),
        Arc::new(InstanceGc(domain.clone())),
        Arc::new(ClientTokenGc(domain.clone())),
        Arc::new(EventGc(domain.clone())),
        Arc::new(super::billing::BillingExport(domain.clone())),
        Arc::new(AutoScaling(domain.clone())),
    ]
}

fn interval(d: &Domain) -> Duration {
    Duration::from_secs(d.config().reconciler.interval_seconds.max(1))
}

/// `node-loss`.
#[derive(Debug)]
pub struct NodeLoss {
    domain: Arc<Domain>,
    /// (term id, nodes seen alive during that term).
    seen: Mutex<(u64, HashSet<NodeId>)>,
    /// (term id, end of the last successful run, when hearing resumed).
    heard: Mutex<(u64, Option<Instant>, Option<Instant>)>,
    /// (term id, the last run of that term that judged a disruption).
    disrupted: Mutex<(u64, Option<Instant>)>,
}

impl NodeLoss {
    /// Over a domain.
    pub fn new(domain: Arc<Domain>) -> Self {
        Self {
            domain,
            seen: Mutex::default(),
            heard: Mutex::default(),
            disrupted: Mutex::default(),
        }
    }

    /// How long this leader has been able to hear agents: since its term
    /// began, or since its own etcd access came back after a gap (runs
    /// failing for longer than two periods plus a heartbeat interval). An
    /// etcd stall silences every agent's heartbeat as much as a leader
    /// change does, so the grace starts again after one
    /// (domain/liveness.rs).
    fn hearing_for(&self, term: u64, term_age: Duration) -> Duration {
        let gap_limit = interval(&self.domain) * 2
            + Duration::from_secs(u64::from(
                self.domain.config().nodes.heartbeat_interval_seconds,
            ));
        let mut h = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        if h.0 != term {
            *h = (term, None, None);
        }
        if h.1.is_some_and(|last| last.elapsed() > gap_limit) {
            tracing::warn!(
                gap_ms = h.1.map(|l| l.elapsed().as_millis() as u64),
                "node-loss: etcd was out of reach; the liveness grace starts again"
            );
            h.2 = Some(Instant::now());
        }
        h.2.map_or(term_age, |r| r.elapsed().min(term_age))
    }

    fn heard_now(&self, term: u64) {
        let mut h = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        if h.0 == term {
            h.1 = Some(Instant::now());
        }
    }
}

impl Task for NodeLoss {
    fn name(&self) -> &'static str {
        "node-loss"
    }
    fn period(&self) -> Duration {
        interval(&self.domain)
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn activation(&self) -> Option<String> {
        Some(self.domain.store().keys().node_alives())
    }
    fn run<'a>(&'a self, ctx: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let Some(term) = &ctx.term else {
                return Ok("not leading".into());
            };
            let mut seen = {
                let mut s = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if s.0 != term.id {
                    *s = (term.id, HashSet::new());
                }
                std::mem::take(&mut s.1)
            };
            let led_for = self.hearing_for(term.id, term.started.elapsed());
            let since_disruption = {
                let mut d = self
                    .disrupted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if d.0 != term.id {
                    *d = (term.id, None);
                }
                d.1.map(|at| at.elapsed())
            };
            let hearing = Hearing {
                led_for,
                since_disruption,
            };
            let r = self.domain.handle_node_loss(hearing, &mut seen).await;
            self.seen.lock().unwrap_or_else(PoisonError::into_inner).1 = seen;
            let report = r?;
            self.heard_now(term.id);
            if report.disrupted {
                let mut d = self
                    .disrupted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if d.0 == term.id {
                    d.1 = Some(Instant::now());
                }
            }
            if report.stopped > 0 {
                tracing::info!(lost = report.stopped, "node-loss run");
            }
            Ok(report.summary())
        })
    }
}

/// `pending-reservations`.
#[derive(Debug)]
pub struct PendingReservations(pub Arc<Domain>);

impl Task for PendingReservations {
    fn name(&self) -> &'static str {
        "pending-reservations"
    }
    fn period(&self) -> Duration {
        interval(&self.0)
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let n = self
                .0
                .resume_pending_reservations(RESUME_PENDING_AFTER)
                .await?;
            if n > 0 {
                tracing::info!(resumed = n, "pending reservations finished");
            }
            Ok(format!("finished {n} pending reservations"))
        })
    }
}

/// `instance-gc`.
#[derive(Debug)]
pub struct InstanceGc(pub Arc<Domain>);

impl InstanceGc {
    fn after(&self) -> Duration {
        Duration::from_secs(self.0.config().reconciler.gc_terminated_after_seconds)
    }
}

impl Task for InstanceGc {
    fn name(&self) -> &'static str {
        "instance-gc"
    }
    fn period(&self) -> Duration {
        GC_PERIOD.min(self.after().max(Duration::from_secs(1)))
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let (n, _) = self.0.collect_terminated(self.after()).await?;
            if n > 0 {
                tracing::info!(collected = n, "terminated instances collected");
            }
            Ok(format!("deleted {n} terminated instances"))
        })
    }
}

/// `client-token-gc`.
#[derive(Debug)]
pub struct ClientTokenGc(pub Arc<Domain>);

impl Task for ClientTokenGc {
    fn name(&self) -> &'static str {
        "client-token-gc"
    }
    fn period(&self) -> Duration {
        GC_PERIOD
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let live = self.0.live_reservations().await?;
            let n = self.0.collect_client_tokens(&live, now_ms()).await?;
            let e = self.0.collect_enrolment_tokens().await?;
            Ok(format!(
                "deleted {n} ClientToken records, {e} expired enrolment tokens"
            ))
        })
    }
}

/// `event-gc`.
#[derive(Debug)]
pub struct EventGc(pub Arc<Domain>);

impl Task for EventGc {
    fn name(&self) -> &'static str {
        "event-gc"
    }
    fn period(&self) -> Duration {
        GC_PERIOD
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let n = self.0.collect_expired_events(now_ms()).await?;
            Ok(format!("deleted {n} expired events"))
        })
    }
}

/// `autoscaling`.
#[derive(Debug)]
pub struct AutoScaling(pub Arc<Domain>);

impl Task for AutoScaling {
    fn name(&self) -> &'static str {
        "autoscaling"
    }
    fn period(&self) -> Duration {
        interval(&self.0)
    }
    fn mode(&self) -> Mode {
        Mode::LeaderOnly
    }
    fn activation(&self) -> Option<String> {
        Some(self.0.store().asgs().prefix())
    }
    fn run<'a>(&'a self, _: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let r = self.0.reconcile_groups().await?;
            if r.launched + r.terminated + r.deleted > 0 {
                tracing::info!(
                    launched = r.launched,
                    terminated = r.terminated,
                    deleted = r.deleted,
                    "auto scaling pass"
                );
            }
            Ok(r.summary())
        })
    }
}
