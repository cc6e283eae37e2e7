//! `nubis admin tasks`: the background tasks of the replica that answers
//! (runs, last result or error, next run) and which replica leads.

use nubis_proto::compute::v1 as pb;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{emit, render_list, render_record, rfc3339_ms, Format, Tabular};

/// One task.
#[derive(Debug, Serialize)]
pub struct TaskView {
    /// Name.
    pub name: String,
    /// leader-only | per-replica.
    pub mode: String,
    /// Period in milliseconds.
    pub period_ms: u64,
    /// Watch prefix that runs it early ("" = none).
    pub activation_prefix: String,
    /// Runs on this replica now.
    pub active: bool,
    /// A run is in progress.
    pub running: bool,
    /// Completed runs.
    pub runs: u64,
    /// Failed runs.
    pub failures: u64,
    /// Runs started by a watch event.
    pub activations: u64,
    /// Last start.
    pub last_start: String,
    /// Last end.
    pub last_end: String,
    /// Last duration in milliseconds.
    pub last_duration_ms: u64,
    /// Last error ("" = none).
    pub last_error: String,
    /// Last result.
    pub last_result: String,
    /// Next run ("" = waiting for leadership).
    pub next_due: String,
}

impl From<pb::TaskStatus> for TaskView {
    fn from(t: pb::TaskStatus) -> Self {
        let time = |ms: i64| {
            if ms > 0 {
                rfc3339_ms(ms)
            } else {
                String::new()
            }
        };
        Self {
            name: t.name,
            mode: t.mode,
            period_ms: t.period_ms,
            activation_prefix: t.activation_prefix,
            active: t.active,
            running: t.running,
            runs: t.runs,
            failures: t.failures,
            activations: t.activations,
            last_start: time(t.last_start_unix_ms),
            last_end: time(t.last_end_unix_ms),
            last_duration_ms: t.last_duration_ms,
            last_error: t.last_error,
            last_result: t.last_result,
            next_due: time(t.next_due_unix_ms),
        }
    }
}

impl Tabular for TaskView {
    fn headers() -> &'static [&'static str] {
        &[
            "TASK", "MODE", "PERIOD", "ACTIVE", "RUNS", "FAILED", "LAST_END", "LAST_MS", "RESULT",
        ]
    }
    fn row(&self) -> Vec<String> {
        let result = if self.last_error.is_empty() {
            self.last_result.clone()
        } else {
            format!("error: {}", self.last_error)
        };
        vec![
            self.name.clone(),
            self.mode.clone(),
            format!("{}s", self.period_ms as f64 / 1000.0),
            if self.running {
                "running".into()
            } else {
                self.active.to_string()
            },
            self.runs.to_string(),
            self.failures.to_string(),
            self.last_end.clone(),
            self.last_duration_ms.to_string(),
            result,
        ]
    }
}

/// The whole answer (`-o json`).
#[derive(Debug, Serialize)]
pub struct TasksView {
    /// The answering replica.
    pub replica: String,
    /// The leader ("" = none).
    pub leader: String,
    /// Whether the answering replica leads.
    pub is_leader: bool,
    /// Its tasks.
    pub tasks: Vec<TaskView>,
}

/// Prints a `ListTasks` answer: a table (leadership on stderr) or the record.
pub fn print(format: Format, resp: pb::ListTasksResponse) -> Result<(), CliError> {
    let view = TasksView {
        replica: resp.replica,
        leader: resp.leader,
        is_leader: resp.is_leader,
        tasks: resp.tasks.into_iter().map(TaskView::from).collect(),
    };
    if format == Format::Table {
        eprintln!(
            "replica {} ({}); leader: {}",
            view.replica,
            if view.is_leader { "leader" } else { "standby" },
            if view.leader.is_empty() {
                "none"
            } else {
                &view.leader
            }
        );
        return emit(&render_list(format, "tasks", &view.tasks)?);
    }
    emit(&render_record(format, &view)?)
}
