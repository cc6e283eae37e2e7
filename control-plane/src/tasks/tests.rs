//! Registry behaviour without etcd: periods, activation, error status, and
//! leader-only tasks gated on a term.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::error::Error;
use crate::store::Fence;

struct Counter {
    name: &'static str,
    mode: Mode,
    period: Duration,
    runs: AtomicU64,
    fail: bool,
}

impl Counter {
    fn new(name: &'static str, mode: Mode, period: Duration) -> Arc<Self> {
        Arc::new(Self {
            name,
            mode,
            period,
            runs: AtomicU64::new(0),
            fail: false,
        })
    }
    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

impl Task for Counter {
    fn name(&self) -> &'static str {
        self.name
    }
    fn period(&self) -> Duration {
        self.period
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn activation(&self) -> Option<String> {
        Some(format!("/x/{}/", self.name))
    }
    fn run<'a>(&'a self, ctx: &'a RunContext) -> RunFuture<'a> {
        Box::pin(async move {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if self.mode == Mode::LeaderOnly {
                assert!(ctx.term.is_some(), "a leader-only task ran without a term");
            }
            if self.fail {
                return Err(Error::Internal(format!("boom {n}")));
            }
            Ok(format!("run {n}"))
        })
    }
}

struct Harness {
    registry: Arc<Registry>,
    lead: watch::Sender<Option<Term>>,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

fn start(tasks: Vec<Arc<dyn Task>>) -> Harness {
    let registry = Arc::new(Registry::new(tasks).with_debounce(Duration::from_millis(10)));
    let (lead, lrx) = watch::channel(None);
    let (stop, srx) = watch::channel(false);
    let join = tokio::spawn(registry.clone().run(lrx, srx));
    Harness {
        registry,
        lead,
        stop,
        join,
    }
}

impl Harness {
    fn status(&self, name: &str) -> TaskStatus {
        self.registry
            .statuses()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }
    async fn finish(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.join)
            .await
            .expect("the registry stops on shutdown")
            .unwrap();
    }
}

fn term() -> Term {
    Term::new(Fence::new(b"/test/election/1".to_vec(), 1))
}

/// Waits (real time, up to 10 s) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn per_replica_tasks_run_every_period_and_keep_status() {
    let t = Counter::new("tick", Mode::PerReplica, Duration::from_millis(400));
    let h = start(vec![t.clone()]);
    eventually("first run", || t.runs() == 1).await;
    let first = tokio::time::Instant::now();
    eventually("second run", || t.runs() == 2).await;
    assert!(
        first.elapsed() >= Duration::from_millis(350),
        "ran again before its period: {:?}",
        first.elapsed()
    );
    let s = h.status("tick");
    assert_eq!(s.runs, 2);
    assert_eq!(s.failures, 0);
    assert_eq!(s.last_result, "run 2");
    assert!(s.active);
    assert_eq!(s.mode, "per-replica");
    assert!(s.next_due_ms >= s.last_end_ms && s.last_end_ms >= s.last_start_ms);
    h.finish().await;
}

#[tokio::test]
async fn an_activation_runs_a_task_early_once_per_burst() {
    let t = Counter::new("act", Mode::PerReplica, Duration::from_secs(3600));
    let h = start(vec![t.clone()]);
    eventually("first run", || t.runs() == 1).await;
    assert_eq!(
        h.registry.activations(),
        vec![("act", "/x/act/".to_string())]
    );
    // A burst of changes within the debounce: one early run.
    for _ in 0..5 {
        assert!(h.registry.activate("act"));
    }
    eventually("activated run", || t.runs() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.runs(), 2, "one run per burst, none without activation");
    assert_eq!(h.status("act").activations, 1);
    assert!(!h.registry.activate("nope"));
    h.finish().await;
}

#[tokio::test]
async fn a_failing_run_is_recorded_and_the_task_keeps_running() {
    let t = Arc::new(Counter {
        name: "flaky",
        mode: Mode::PerReplica,
        period: Duration::from_millis(50),
        runs: AtomicU64::new(0),
        fail: true,
    });
    let h = start(vec![t.clone()]);
    eventually("two runs", || h.status("flaky").runs >= 2).await;
    let s = h.status("flaky");
    assert_eq!(s.runs, s.failures, "{s:?}");
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .starts_with("internal error"),
        "{s:?}"
    );
    assert!(s.last_error.as_deref().unwrap().contains("boom"), "{s:?}");
    assert_eq!(s.last_result, "", "no success yet");
    h.finish().await;
}

#[tokio::test]
async fn leader_only_tasks_run_only_while_leading() {
    let leader = Counter::new("lead", Mode::LeaderOnly, Duration::from_millis(50));
    let every = Counter::new("every", Mode::PerReplica, Duration::from_millis(50));
    let h = start(vec![leader.clone(), every.clone()]);
    eventually("per-replica runs", || every.runs() >= 4).await;
    assert_eq!(leader.runs(), 0, "not leader: never runs");
    let s = h.status("lead");
    assert!(!s.active);
    assert_eq!(s.next_due_ms, 0);

    h.lead.send_replace(Some(term()));
    eventually("leader runs", || leader.runs() >= 3).await;
    assert!(h.status("lead").active);

    h.lead.send_replace(None);
    eventually("inactive", || !h.status("lead").active).await;
    let before = leader.runs();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(leader.runs(), before, "stops when leadership ends");

    // A new term: runs again.
    h.lead.send_replace(Some(term()));
    eventually("runs in the new term", || leader.runs() > before).await;
    h.finish().await;
}

#[test]
fn duplicate_names_are_dropped() {
    let a = Counter::new("same", Mode::PerReplica, Duration::from_secs(1));
    let b = Counter::new("same", Mode::LeaderOnly, Duration::from_secs(1));
    let r = Registry::new(vec![a, b]);
    let s = r.statuses();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].mode, "per-replica");
}
