//! The background-task registry: every piece of background work of a
//! replica is a named [`Task`] with a period, a [`Mode`] (leader-only or
//! per-replica) and optionally a watch prefix whose changes run it early
//! (debounced). The registry runs each task on its own loop, keeps its
//! [`TaskStatus`] (runs, last start/end/duration, last error, last result,
//! next due) for the Admin `ListTasks` call, and gates leader-only tasks on
//! this replica's leadership ([`election`]): they run only while this replica
//! holds the etcd election, inside its [`Fence`](crate::store::Fence), so a
//! deposed leader's late writes fail.
//!
//! Tasks are level-triggered and idempotent: each run re-reads the world and
//! fixes what differs, so a new leader simply starts running them. The
//! built-in tasks (node loss, pending reservations, instance and ClientToken
//! garbage collection) are in [`builtin`].

pub mod billing;
pub mod builtin;
pub mod election;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::domain::model::now_ms;
use crate::error::Result;

pub use election::{Leadership, Term};

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only on the replica holding the election, fenced by its term.
    LeaderOnly,
    /// On every replica.
    PerReplica,
}

impl Mode {
    /// `leader-only` / `per-replica`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::LeaderOnly => "leader-only",
            Mode::PerReplica => "per-replica",
        }
    }
}

/// What a run sees: this replica's leadership term, if it leads (always
/// `Some` for a leader-only task).
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The term this run belongs to.
    pub term: Option<Term>,
}

/// A boxed future of a task run: a one-line summary of what it did.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<String>> + Send + 'a>>;

/// One kind of background work.
pub trait Task: Send + Sync + 'static {
    /// Unique name, e.g. `node-loss`.
    fn name(&self) -> &'static str;
    /// Pause between the end of a run and the next.
    fn period(&self) -> Duration;
    /// Leader-only or per-replica.
    fn mode(&self) -> Mode;
    /// An etcd key prefix (full key) whose changes run the task early.
    fn activation(&self) -> Option<String> {
        None
    }
    /// One run.
    fn run<'a>(&'a self, ctx: &'a RunContext) -> RunFuture<'a>;
}

/// A task's status on this replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStatus {
    /// Name.
    pub name: String,
    /// `leader-only` / `per-replica`.
    pub mode: &'static str,
    /// Period.
    pub period: Duration,
    /// Activation prefix, if any.
    pub activation: Option<String>,
    /// Whether this replica runs it now (leader-only: only while leading).
    pub active: bool,
    /// Whether a run is in progress.
    pub running: bool,
    /// Completed runs.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Runs started early by a watch event.
    pub activations: u64,
    /// Last run's start (Unix ms, 0 = never).
    pub last_start_ms: i64,
    /// Last run's end (Unix ms, 0 = never).
    pub last_end_ms: i64,
    /// Last run's duration.
    pub last_duration: Duration,
    /// Last run's error (None when it succeeded).
    pub last_error: Option<String>,
    /// Last successful run's summary.
    pub last_result: String,
    /// When the next run is due (Unix ms; 0 = waiting for leadership).
    pub next_due_ms: i64,
}

/// How long a watch activation waits for more changes before running.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

struct Entry {
    task: Arc<dyn Task>,
    status: Mutex<TaskStatus>,
    wake: Notify,
}

/// The registry (cheap to share behind an `Arc`).
pub struct Registry {
    entries: Vec<Arc<Entry>>,
    debounce: Duration,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.entries.len())
            .finish()
    }
}

impl Registry {
    /// A registry of `tasks` (names must be unique; a duplicate is dropped).
    pub fn new(tasks: Vec<Arc<dyn Task>>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let entries = tasks
            .into_iter()
            .filter(|t| {
                let fresh = seen.insert(t.name());
                if !fresh {
                    tracing::error!(task = t.name(), "duplicate task name ignored");
                }
                fresh
            })
            .map(|task| {
                let status = TaskStatus {
                    name: task.name().to_string(),
                    mode: task.mode().name(),
                    period: task.period(),
                    activation: task.activation(),
                    ..Default::default()
                };
                Arc::new(Entry {
                    task,
                    status: Mutex::new(status),
                    wake: Notify::new(),
                })
            })
            .collect();
        Self {
            entries,
            debounce: DEBOUNCE,
        }
    }

    /// Sets the activation debounce (tests).
    pub fn with_debounce(mut self, d: Duration) -> Self {
        self.debounce = d;
        self
    }

    /// Every task's status, in registration order.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.entries
            .iter()
            .map(|e| lock(&e.status).clone())
            .collect()
    }

    /// `(task name, activation prefix)` of tasks activated by watches.
    pub fn activations(&self) -> Vec<(&'static str, String)> {
        self.entries
            .iter()
            .filter_map(|e| e.task.activation().map(|p| (e.task.name(), p)))
            .collect()
    }

    /// Runs the named task early (after the debounce); false when unknown.
    pub fn activate(&self, name: &str) -> bool {
        match self.entries.iter().find(|e| e.task.name() == name) {
            Some(e) => {
                e.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Runs every task's loop until `shutdown` turns true. Leader-only
    /// tasks run while `leadership` holds a term.
    pub async fn run(
        self: Arc<Self>,
        leadership: watch::Receiver<Option<Term>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut set = JoinSet::new();
        for e in &self.entries {
            set.spawn(task_loop(
                e.clone(),
                self.debounce,
                leadership.clone(),
                shutdown.clone(),
            ));
        }
        while set.join_next().await.is_some() {}
    }
}

fn lock(m: &Mutex<TaskStatus>) -> std::sync::MutexGuard<'_, TaskStatus> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms_after(d: Duration) -> i64 {
    now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

async fn task_loop(
    e: Arc<Entry>,
    debounce: Duration,
    mut leadership: watch::Receiver<Option<Term>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let leader_only = e.task.mode() == Mode::LeaderOnly;
    let period = e.task.period();
    let mut early = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let term = leadership.borrow_and_update().clone();
        if leader_only && term.is_none() {
            {
                let mut s = lock(&e.status);
                s.active = false;
                s.next_due_ms = 0;
            }
            tokio::select! {
                r = leadership.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let started = Instant::now();
        {
            let mut s = lock(&e.status);
            s.active = true;
            s.running = true;
            s.last_start_ms = now_ms();
            if early {
                s.activations += 1;
            }
        }
        let ctx = RunContext { term: term.clone() };
        let fut = e.task.run(&ctx);
        let result = match (leader_only, &term) {
            (true, Some(t)) => {
                // A lost term ends the run at once (its writes would fail).
                let mut lost = leadership.clone();
                let id = t.id;
                tokio::select! {
                    r = t.fence.clone().scope(fut) => Some(r),
                    _ = async { lost.wait_for(|l| l.as_ref().map(|t| t.id) != Some(id)).await.map(|_| ()) } => None,
                }
            }
            _ => Some(fut.await),
        };
        let took = started.elapsed();
        {
            let mut s = lock(&e.status);
            s.running = false;
            s.last_end_ms = now_ms();
            s.last_duration = took;
            match result {
                Some(Ok(summary)) => {
                    s.runs += 1;
                    s.last_error = None;
                    s.last_result = summary;
                }
                Some(Err(err)) => {
                    s.runs += 1;
                    s.failures += 1;
                    tracing::warn!(task = e.task.name(), error = %err, "task run failed");
                    s.last_error = Some(err.to_string());
                }
                None => {
                    s.last_error = Some("leadership lost during the run".into());
                }
            }
            s.next_due_ms = ms_after(period);
        }
        // Wait for the period, an activation, a leadership change or shutdown.
        early = false;
        let current = term.as_ref().map(|t| t.id);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = e.wake.notified() => {
                early = true;
                tokio::time::sleep(debounce).await;
                // Activations during the debounce are covered by this run.
                tokio::select! {
                    biased;
                    _ = e.wake.notified() => {}
                    _ = std::future::ready(()) => {}
                }
            }
            r = async { leadership.wait_for(|l| l.as_ref().map(|t| t.id) != current).await.map(|_| ()) }, if leader_only => {
                if r.is_err() { return }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// A replica's running tasks and campaign, as the Admin API sees them.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The campaign.
    pub leadership: Arc<Leadership>,
}

/// What `ListTasks` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksView {
    /// The answering replica's identity.
    pub replica: String,
    /// The current leader's identity (empty: none; `unknown (…)` when etcd cannot say).
    pub leader: String,
    /// Whether the answering replica leads.
    pub is_leader: bool,
    /// Its tasks.
    pub tasks: Vec<TaskStatus>,
}

/// Starts the built-in tasks, the campaign and the activation watches of a
/// replica; they stop when `shutdown` turns true.
pub fn start(
    domain: &Arc<crate::domain::Domain>,
    identity: String,
    shutdown: &watch::Receiver<bool>,
) -> (Handle, Vec<tokio::task::JoinHandle<()>>) {
    let store = domain.store().clone();
    let leadership = Leadership::new(store.clone(), identity);
    let registry = Arc::new(Registry::new(builtin::all(domain)));
    let mut joins = vec![
        tokio::spawn(
            leadership
                .clone()
                .run(domain.config().reconciler.clone(), shutdown.clone()),
        ),
        tokio::spawn(
            registry
                .clone()
                .run(leadership.subscribe(), shutdown.clone()),
        ),
    ];
    for (name, prefix) in registry.activations() {
        let mut rx = crate::store::watch::watch_prefix(store.clone(), prefix);
        let reg = registry.clone();
        let mut stop = shutdown.clone();
        joins.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(_) => { reg.activate(name); }
                        None => return,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }));
    }
    (
        Handle {
            registry,
            leadership,
        },
        joins,
    )
}

impl Handle {
    /// The status of this replica's tasks and who leads (when etcd cannot
    /// say, the statuses are still shown, with the leader unknown).
    pub async fn view(&self) -> Result<TasksView> {
        let leader = match self.leadership.leader().await {
            Ok(l) => l.unwrap_or_default(),
            Err(e) => format!("unknown ({e})"),
        };
        Ok(TasksView {
            replica: self.leadership.identity().to_string(),
            leader,
            is_leader: self.leadership.is_leader(),
            tasks: self.registry.statuses(),
        })
    }
}

#[cfg(test)]
mod tests;
