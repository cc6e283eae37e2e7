//! One task per instance, the only owner of that instance's state (after
//! propolis' state driver). Requests arrive on a queue and are accepted or
//! denied by [`crate::runtime::admit`]; VMM exits, start/stop timers and
//! console readiness are events of the same loop, so the task never blocks
//! on a long wait and always answers requests. Launch preparation is in
//! [`crate::launch`].
//!
//! The task publishes a [`Report`] (watch channel) on every change and
//! persists `state.json`, so a restarted agent recovers every instance
//! ([`InstanceHandle::recover`]), re-adopting running VMMs.
//!
//! While a VMM starts and until its guest is ready, the task watches the
//! instance directory ([`crate::host::dirwatch`]): the API socket appearing
//! and every console write wake it at once, so the VMM running and the
//! ready line are seen within a scheduling delay, not a polling period (the
//! timers stay as a fallback). Each boot's [`Timeline`] is logged when the
//! guest is ready.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::context::HostContext;
use crate::error::{Error, Result};
use crate::host::dirwatch::DirWatch;
use crate::host::vmm_process::{
    exit_of, exit_status_path, read_exit_record, VmmApi, VmmExit, VmmProcess, VmmRecord,
};
use crate::launch;
use crate::layout::{off_runtime, read_json, tail, write_json, InstanceDir, PersistedState};
use crate::runtime::{admit, Admission, Denied, ReasonCode, Request, State, StateReason};
use crate::timeline::Timeline;
use crate::types::{InstanceId, InstanceSpec};
use nubis_vmm_api::Action;

/// The console bytes returned by [`InstanceHandle::console`].
pub const CONSOLE_TAIL_BYTES: u64 = 64 * 1024;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the agent observes of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Instance id.
    pub id: InstanceId,
    /// Lifecycle state.
    pub state: State,
    /// Why, when stopped or failed.
    pub reason: Option<StateReason>,
    /// Guest printed its ready line in this boot.
    pub ready: bool,
    /// When the guest became ready.
    pub ready_unix_ms: Option<u64>,
    /// When the current VMM started.
    pub started_unix_ms: Option<u64>,
    /// When the state was entered.
    pub since_unix_ms: u64,
    /// Current VMM pid.
    pub pid: Option<i32>,
    /// Exit status of the last VMM, when observed.
    pub vmm_exit_code: Option<i32>,
    /// Last applied assignment generation.
    pub generation: u64,
    /// A reboot is in progress: the VMM is being stopped and started again
    /// (reported as booting, so the instance stays running upstream).
    pub rebooting: bool,
    /// vCPUs and memory in use while a VMM exists.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u64,
}

struct Command {
    req: Request,
    generation: u64,
    force: bool,
    /// The secondary interfaces a start brings (they change only while the
    /// instance is stopped); `None`: as before.
    extra_networks: Option<Vec<crate::types::ExtraNetwork>>,
    reply: Option<oneshot::Sender<Result<Admission, Denied>>>,
}

/// The handle the reconciler keeps for each instance (cheap to clone).
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    id: InstanceId,
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<Report>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}(gen {})", self.req, self.generation)
    }
}

impl InstanceHandle {
    /// Starts the task for a new instance (state `Absent`).
    pub fn spawn_new(ctx: Arc<HostContext>, spec: InstanceSpec) -> InstanceHandle {
        let dir = ctx.layout.instance(&spec.id);
        let d = Driver::new(ctx, spec, dir, State::Absent, None, 0, None);
        d.run()
    }

    /// A handle for an instance that is already gone here (no task).
    pub fn gone(id: InstanceId, generation: u64) -> InstanceHandle {
        let (tx, _rx) = mpsc::channel(1);
        let (_stx, status) = watch::channel(Report {
            id: id.clone(),
            state: State::Gone,
            reason: None,
            ready: false,
            ready_unix_ms: None,
            started_unix_ms: None,
            since_unix_ms: now_ms(),
            pid: None,
            vmm_exit_code: None,
            generation,
            rebooting: false,
            vcpus: 0,
            memory_mib: 0,
        });
        InstanceHandle { id, tx, status }
    }

    /// Recovers an instance from its directory after an agent restart:
    /// re-adopts its VMM when that still runs, otherwise restores the
    /// recorded state. `Ok(None)` when the directory holds no spec (a launch
    /// that crashed before it was recorded): the directory is removed.
    pub fn recover(ctx: Arc<HostContext>, id: &InstanceId) -> Result<Option<InstanceHandle>> {
        let dir = ctx.layout.instance(id);
        let Some(spec) = dir.read_spec()? else {
            tracing::warn!(instance = %id, "removing instance directory without spec");
            dir.remove()?;
            return Ok(None);
        };
        let persisted: Option<PersistedState> = read_json(&dir.state())?;
        let (mut state, mut reason, generation, mut exit) = match persisted {
            Some(p) => (p.state, p.reason, p.generation, p.vmm_exit_code),
            None => (State::Preparing, None, 0, None),
        };
        let recorded: Option<VmmRecord> = read_json(&dir.vmm()).unwrap_or(None);
        let unrecorded = recorded.is_none();
        let record = recorded.or_else(|| find_vmm_by_socket(&dir));
        let mut vmm = None;
        if let Some(r) = &record {
            match VmmProcess::adopt(r) {
                Ok(p) => {
                    tracing::info!(instance = %id, pid = r.pid, "re-adopted running VMM");
                    if unrecorded {
                        // The previous agent died between spawn and record:
                        // record it now, as a launch would have.
                        if let Err(e) = write_json(&dir.vmm(), r) {
                            tracing::error!(instance = %id, error = %e, "cannot record the re-adopted VMM");
                        }
                    }
                    vmm = Some(p);
                }
                Err(e) => tracing::info!(instance = %id, error = %e, "recorded VMM is gone"),
            }
        }
        match (vmm.is_some(), state) {
            // Keep stopping/terminating where we left off.
            (true, State::Stopping | State::Terminating) => {}
            (true, _) => state = State::Starting,
            (false, State::Stopping) => {
                state = State::Stopped;
                reason = Some(StateReason::new(
                    ReasonCode::UserInitiatedShutdown,
                    "stopped while the agent was restarting",
                ));
            }
            (false, State::Starting | State::Running) => {
                // Its exit record (host/vmm_process.rs) tells how it ended.
                let recorded = record
                    .as_ref()
                    .and_then(|r| read_exit_record(&exit_status_path(&r.api_socket), r));
                match recorded {
                    Some(r) => {
                        let stderr = tail(&dir.stderr(), 512).unwrap_or_default();
                        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
                        let (to, why) = unrequested_exit(exit_of(&r), &stderr);
                        tracing::info!(instance = %id, pid = r.pid, exit_code = r.exit_code,
                            reason = %r.reason, "the VMM exited while the agent was down");
                        state = to;
                        reason = Some(why);
                        exit = match exit_of(&r) {
                            VmmExit::Code(c) => Some(c),
                            _ => None,
                        };
                    }
                    None => {
                        state = State::Stopped;
                        reason = Some(StateReason::new(
                            ReasonCode::VmmExitedUnobserved,
                            "the VMM exited while the agent was not running; exit status unknown",
                        ));
                    }
                }
            }
            (false, State::Preparing | State::Absent) => {
                state = State::Stopped;
                reason = Some(StateReason::new(
                    ReasonCode::InternalError,
                    "the agent restarted during launch; start it again",
                ));
            }
            (false, _) => {}
        }
        if vmm.is_none() {
            let _ = std::fs::remove_file(dir.vmm());
        }
        let mut d = Driver::new(ctx, spec, dir, state, reason, generation, exit);
        d.vmm = vmm;
        if d.vmm.is_some() && matches!(state, State::Stopping | State::Terminating) {
            // Re-send the VMM `stop` on the first tick.
            d.stop = Some(StopProgress {
                phase: StopPhase::Graceful,
                deadline: Instant::now(),
            });
        }
        d.start_deadline = Instant::now() + d.ctx.config.timeouts.start();
        d.resume_terminate = state == State::Terminating;
        Ok(Some(d.run()))
    }

    /// The instance id.
    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// The latest report.
    pub fn report(&self) -> Report {
        self.status.borrow().clone()
    }

    /// A receiver of report changes.
    pub fn subscribe(&self) -> watch::Receiver<Report> {
        self.status.clone()
    }

    /// Sends a request and waits for its admission.
    pub async fn request(
        &self,
        req: Request,
        generation: u64,
        force: bool,
    ) -> Result<std::result::Result<Admission, Denied>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command {
            req,
            generation,
            force,
            extra_networks: None,
            reply: Some(reply),
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| Error::TaskGone(self.id.to_string()))?;
        rx.await.map_err(|_| Error::TaskGone(self.id.to_string()))
    }

    /// Queues a request without waiting (reconciler path). Returns false when
    /// the queue is full or the task has ended.
    pub fn send(&self, req: Request, generation: u64, force: bool) -> bool {
        self.tx
            .try_send(Command {
                req,
                generation,
                force,
                extra_networks: None,
                reply: None,
            })
            .is_ok()
    }

    /// Queues a start with the spec's current secondary interfaces (see
    /// [`Self::send`]).
    pub fn send_start(&self, spec: &InstanceSpec, generation: u64) -> bool {
        self.tx
            .try_send(Command {
                req: Request::Start,
                generation,
                force: false,
                extra_networks: Some(spec.extra_networks.clone()),
                reply: None,
            })
            .is_ok()
    }

    /// Waits until `pred` holds for the report, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Report) -> bool,
    ) -> std::result::Result<Report, Report> {
        let mut rx = self.status.clone();
        let res = tokio::time::timeout(timeout, rx.wait_for(|r| pred(r))).await;
        match res {
            Ok(Ok(r)) => Ok(r.clone()),
            _ => Err(self.report()),
        }
    }
}

/// The state and reason after a VMM exit nobody asked for: the same for a
/// child the agent reaped, a re-adopted VMM's exit record, and a record found
/// at recovery. `stderr` is the tail of the VMM's stderr.
fn unrequested_exit(exit: VmmExit, stderr: &str) -> (State, StateReason) {
    match exit {
        VmmExit::Code(0) => (
            State::Stopped,
            StateReason::new(
                ReasonCode::InstanceInitiatedShutdown,
                "the guest reset or shut itself down",
            ),
        ),
        VmmExit::Code(c) => (
            State::Failed,
            StateReason::new(
                ReasonCode::from_vmm_exit_code(c),
                format!("nubis-vmm exited with status {c}: {stderr}"),
            ),
        ),
        VmmExit::Signal(s) if s == libc::SIGSYS => (
            State::Failed,
            StateReason::new(
                ReasonCode::VmmCrashed,
                format!(
                    "nubis-vmm killed by signal {s} (SIGSYS): it made a system call its \
                     seccomp filter forbids"
                ),
            ),
        ),
        VmmExit::Signal(s) => (
            State::Failed,
            StateReason::new(
                ReasonCode::VmmCrashed,
                format!("nubis-vmm killed by signal {s}"),
            ),
        ),
        VmmExit::Unobserved => (
            State::Stopped,
            StateReason::new(
                ReasonCode::VmmExitedUnobserved,
                "the re-adopted VMM exited; its exit status is not observable",
            ),
        ),
    }
}

/// Finds a VMM of this instance without `vmm.json` (crash between spawn and
/// recording): a process whose command line holds the instance's socket.
fn find_vmm_by_socket(dir: &InstanceDir) -> Option<VmmRecord> {
    let sock = dir.api_socket();
    let want = sock.as_os_str().as_encoded_bytes().to_vec();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).any(|a| a == want.as_slice()) {
            let (_, start_time) = crate::host::vmm_process::proc_stat(pid)?;
            return Some(VmmRecord {
                pid,
                start_time,
                api_socket: sock,
                nonce: crate::host::vmm_process::cmdline_nonce(pid),
            });
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopPhase {
    /// Ctrl-Alt-Del sent; waiting for the guest.
    Graceful,
    /// VMM `stop` sent; waiting for the VMM.
    Hard,
    /// SIGKILL sent.
    Kill,
}

#[derive(Debug)]
struct StopProgress {
    phase: StopPhase,
    deadline: Instant,
}

/// What to do once the VMM has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Stay,
    Start,
}

struct Driver {
    ctx: Arc<HostContext>,
    spec: InstanceSpec,
    dir: InstanceDir,
    api: VmmApi,
    state: State,
    reason: Option<StateReason>,
    since: u64,
    generation: u64,
    exit_code: Option<i32>,
    vmm: Option<VmmProcess>,
    stop: Option<StopProgress>,
    after_stop: AfterStop,
    /// From an admitted reboot until its new VMM runs (or it fails, or a
    /// stop/terminate takes over).
    rebooting: bool,
    start_deadline: Instant,
    started_ms: Option<u64>,
    ready_ms: Option<u64>,
    console_offset: u64,
    console_carry: Vec<u8>,
    resume_terminate: bool,
    /// The current boot's timeline (from the start request to ready).
    timeline: Option<Timeline>,
    /// Watch on the instance directory while the VMM starts and the guest
    /// boots; `watch_tried` avoids retrying a failed watch every turn.
    watch: Option<DirWatch>,
    watch_tried: bool,
    status: watch::Sender<Report>,
    status_rx: watch::Receiver<Report>,
}

/// The bytes of `path` from `offset` to its current end (at most 1 MiB).
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    f.take(1 << 20).read_to_end(&mut out)?;
    Ok(out)
}

async fn dir_changed(w: &Option<DirWatch>) {
    match w {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

async fn wait_vmm(v: &mut Option<VmmProcess>) -> VmmExit {
    match v {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(
        ctx: Arc<HostContext>,
        spec: InstanceSpec,
        dir: InstanceDir,
        state: State,
        reason: Option<StateReason>,
        generation: u64,
        exit_code: Option<i32>,
    ) -> Driver {
        let api = VmmApi::new(dir.api_socket());
        let report = Report {
            id: spec.id.clone(),
            state,
            reason: reason.clone(),
            ready: false,
            ready_unix_ms: None,
            started_unix_ms: None,
            since_unix_ms: now_ms(),
            pid: None,
            vmm_exit_code: exit_code,
            generation,
            rebooting: false,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
        };
        let (status, status_rx) = watch::channel(report);
        Driver {
            ctx,
            spec,
            dir,
            api,
            state,
            reason,
            since: now_ms(),
            generation,
            exit_code,
            vmm: None,
            stop: None,
            after_stop: AfterStop::Stay,
            rebooting: false,
            start_deadline: Instant::now(),
            started_ms: None,
            ready_ms: None,
            console_offset: 0,
            console_carry: Vec::new(),
            resume_terminate: false,
            timeline: None,
            watch: None,
            watch_tried: false,
            status,
            status_rx,
        }
    }

    fn run(self) -> InstanceHandle {
        let (tx, rx) = mpsc::channel(64);
        let handle = InstanceHandle {
            id: self.spec.id.clone(),
            tx,
            status: self.status_rx.clone(),
        };
        tokio::spawn(self.main_loop(rx));
        handle
    }

    async fn main_loop(mut self, mut rx: mpsc::Receiver<Command>) {
        self.publish();
        if self.resume_terminate {
            self.terminate(false).await;
        }
        while self.state != State::Gone {
            self.update_watch();
            let tick = self.next_tick();
            tokio::select! {
                exit = wait_vmm(&mut self.vmm) => self.on_vmm_exit(exit).await,
                _ = dir_changed(&self.watch) => self.on_dir_change().await,
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_command(c).await,
                    // The agent is shutting down: leave the VMM running.
                    None => return,
                },
                _ = tokio::time::sleep_until(tick) => self.on_tick().await,
            }
        }
        // Gone: answer late requests with a denial until the handle is dropped.
        while let Some(c) = rx.recv().await {
            if let Some(r) = c.reply {
                let _ = r.send(admit(State::Gone, c.req));
            }
        }
    }

    /// Whether the task waits for something to appear in its directory: the
    /// VMM starting or the guest's ready line.
    fn awaits_files(&self) -> bool {
        self.stop.is_none()
            && self.vmm.is_some()
            && (self.state == State::Starting
                || (self.state == State::Running && self.ready_ms.is_none()))
    }

    /// Keeps the directory watch exactly while [`Self::awaits_files`].
    fn update_watch(&mut self) {
        if !self.awaits_files() {
            self.watch = None;
            self.watch_tried = false;
        } else if self.watch.is_none() && !self.watch_tried {
            self.watch_tried = true;
            self.watch = self.ctx.watcher.watch(self.dir.path());
        }
    }

    /// Something changed in the instance directory.
    async fn on_dir_change(&mut self) {
        if !self.awaits_files() {
            return;
        }
        if self.state == State::Starting {
            let has_output = std::fs::metadata(self.dir.console()).is_ok_and(|m| m.len() > 0);
            if has_output {
                if let Some(tl) = &mut self.timeline {
                    tl.mark("first_byte");
                }
            }
            self.poll_started().await;
        } else {
            self.scan_console();
        }
    }

    fn next_tick(&self) -> Instant {
        let now = Instant::now();
        if let Some(s) = &self.stop {
            return s.deadline;
        }
        match self.state {
            // A failed clean-up is retried.
            State::Terminating if self.vmm.is_none() => now + Duration::from_secs(5),
            State::Starting => now + Duration::from_millis(100),
            State::Running if self.ready_ms.is_none() => now + Duration::from_millis(200),
            _ => now + Duration::from_secs(3600),
        }
    }

    fn publish(&self) {
        let r = Report {
            id: self.spec.id.clone(),
            state: self.state,
            reason: self.reason.clone(),
            ready: self.ready_ms.is_some(),
            ready_unix_ms: self.ready_ms,
            started_unix_ms: self.started_ms,
            since_unix_ms: self.since,
            pid: self.vmm.as_ref().map(|v| v.record().pid),
            vmm_exit_code: self.exit_code,
            generation: self.generation,
            rebooting: self.rebooting,
            vcpus: self.spec.vcpus,
            memory_mib: self.spec.memory_mib,
        };
        self.status.send_if_modified(|old| {
            if *old == r {
                false
            } else {
                *old = r;
                true
            }
        });
        let _ = self.ctx.changed.send(self.spec.id.clone());
    }

    fn persist(&self) {
        if self.state == State::Gone || self.state == State::Absent || !self.dir.path().is_dir() {
            return;
        }
        let p = PersistedState {
            state: self.state,
            reason: self.reason.clone(),
            generation: self.generation,
            vmm_exit_code: self.exit_code,
        };
        if let Err(e) = off_runtime(|| write_json(&self.dir.state(), &p)) {
            tracing::error!(instance = %self.spec.id, error = %e, "cannot persist state");
        }
    }

    fn goto(&mut self, to: State, reason: Option<StateReason>) {
        if let Err(e) = self.state.transition(to) {
            debug_assert!(false, "{e}");
            tracing::error!(instance = %self.spec.id, error = %e, "state machine violation");
        }
        tracing::info!(
            instance = %self.spec.id,
            from = %self.state,
            to = %to,
            reason = reason.as_ref().map(|r| r.code.code()),
            "state change"
        );
        if !matches!(to, State::Stopping | State::Stopped | State::Starting) {
            // The reboot's new VMM runs, or it ended otherwise.
            self.rebooting = false;
        }
        self.state = to;
        self.reason = reason;
        self.since = now_ms();
        self.persist();
        self.publish();
    }

    async fn on_command(&mut self, c: Command) {
        let adm = admit(self.state, c.req);
        tracing::debug!(instance = %self.spec.id, req = ?c.req, state = %self.state, ?adm, "request");
        if adm == Ok(Admission::Proceed) {
            // Set before the new generation is published: no report of the
            // reboot's generation may say running (old VMM) or stopped.
            self.rebooting = c.req == Request::Reboot;
        }
        if adm.is_ok() && c.generation > self.generation {
            self.generation = c.generation;
            // A request that proceeds publishes the new generation with its
            // first state change: a report of the new generation must never
            // carry the old state (e.g. `stopped` right after a start).
            if adm == Ok(Admission::AlreadyDone) {
                self.persist();
                self.publish();
            }
        }
        if let Some(r) = c.reply {
            let _ = r.send(adm);
        }
        if adm != Ok(Admission::Proceed) {
            return;
        }
        if let (Request::Start, Some(extra)) = (c.req, c.extra_networks) {
            if extra != self.spec.extra_networks {
                tracing::info!(instance = %self.spec.id, interfaces = extra.len() + 1, "network interfaces changed while stopped");
                self.spec.extra_networks = extra;
            }
        }
        match c.req {
            Request::Start => self.start().await,
            Request::Stop => self.begin_stop(c.force, AfterStop::Stay).await,
            Request::Reboot => self.begin_stop(c.force, AfterStop::Start).await,
            Request::Terminate => self.terminate(c.force).await,
        }
    }

    /// Prepare (idempotently) and spawn a VMM.
    async fn start(&mut self) {
        let mut tl = Timeline::begin();
        if self.state == State::Absent {
            self.goto(State::Preparing, None);
        } else if self.state != State::Starting {
            // Stopped or Failed: re-check everything, then spawn a fresh VMM.
            self.goto(State::Starting, None);
        }
        let launch = match launch::prepare_timed(&self.ctx, &self.spec, &self.dir, &mut tl).await {
            Ok(l) => l,
            Err(reason) => {
                self.fail(reason);
                return;
            }
        };
        // Watch before the spawn so that no early change is missed.
        self.watch = self.ctx.watcher.watch(self.dir.path());
        self.watch_tried = true;
        match launch::spawn(&self.ctx, &self.spec, &self.dir, &launch) {
            Ok(p) => {
                tl.mark("spawn");
                self.timeline = Some(tl);
                self.vmm = Some(p);
                self.exit_code = None;
                self.started_ms = Some(now_ms());
                self.ready_ms = None;
                self.console_offset = 0;
                self.console_carry.clear();
                self.start_deadline = Instant::now() + self.ctx.config.timeouts.start();
                if self.state == State::Preparing {
                    self.goto(State::Starting, None);
                } else {
                    self.persist();
                    self.publish();
                }
            }
            Err(reason) => self.fail(reason),
        }
    }

    fn fail(&mut self, reason: StateReason) {
        tracing::warn!(instance = %self.spec.id, code = reason.code.code(), msg = %reason.message, "instance failed");
        self.goto(State::Failed, Some(reason));
    }

    async fn begin_stop(&mut self, force: bool, after: AfterStop) {
        self.after_stop = after;
        if self.state != State::Terminating {
            self.goto(State::Stopping, None);
        }
        if force {
            self.hard_stop().await;
            return;
        }
        match self.api.call(Action::CtrlAltDel).await {
            Ok(_) => {
                self.stop = Some(StopProgress {
                    phase: StopPhase::Graceful,
                    deadline: Instant::now() + self.ctx.config.timeouts.graceful_stop(),
                });
            }
            Err(e) => {
                tracing::info!(instance = %self.spec.id, error = %e, "ctrl_alt_del failed; stopping");
                self.hard_stop().await;
            }
        }
    }

    async fn hard_stop(&mut self) {
        match self.api.call(Action::Stop).await {
            Ok(_) => {
                self.stop = Some(StopProgress {
                    phase: StopPhase::Hard,
                    deadline: Instant::now() + self.ctx.config.timeouts.hard_stop(),
                });
            }
            Err(e) => {
                tracing::info!(instance = %self.spec.id, error = %e, "VMM stop failed; killing");
                self.kill();
            }
        }
    }

    fn kill(&mut self) {
        if let Some(v) = &self.vmm {
            v.kill();
        }
        self.stop = Some(StopProgress {
            phase: StopPhase::Kill,
            deadline: Instant::now() + Duration::from_secs(10),
        });
    }

    async fn on_tick(&mut self) {
        if let Some(s) = &self.stop {
            if Instant::now() >= s.deadline {
                match s.phase {
                    StopPhase::Graceful => self.hard_stop().await,
                    StopPhase::Hard => self.kill(),
                    StopPhase::Kill => {
                        tracing::error!(instance = %self.spec.id, "VMM survives SIGKILL; retrying");
                        self.kill();
                    }
                }
            }
            return;
        }
        match self.state {
            State::Terminating if self.vmm.is_none() => self.cleanup().await,
            State::Starting => self.poll_started().await,
            State::Running if self.ready_ms.is_none() => self.scan_console(),
            _ => {}
        }
    }

    async fn poll_started(&mut self) {
        match self.api.describe().await {
            Ok(d) if d.state == nubis_vmm_api::vm_state::RUNNING && d.vcpus_started => {
                if let Some(ms) = d.started_at_unix_ms {
                    self.started_ms = Some(ms);
                }
                if let Some(tl) = &mut self.timeline {
                    tl.mark("running");
                }
                self.goto(State::Running, None);
                self.scan_console();
            }
            Ok(_) | Err(_) if Instant::now() < self.start_deadline => {}
            other => {
                let why = match other {
                    Ok(d) => format!("VMM still {:?} after the start timeout", d.state),
                    Err(e) => format!("VMM API not answering after the start timeout: {e}"),
                };
                let reason = StateReason::new(ReasonCode::StartTimeout, why);
                self.goto(State::Stopping, Some(reason));
                self.hard_stop().await;
            }
        }
    }

    fn scan_console(&mut self) {
        let path = self.dir.console();
        let Ok(md) = std::fs::metadata(&path) else {
            return;
        };
        if md.len() < self.console_offset {
            // The VMM trimmed the capped log: rescan what is left.
            self.console_offset = 0;
            self.console_carry.clear();
        }
        let Ok(new) = read_from(&path, self.console_offset) else {
            return;
        };
        self.console_offset += new.len() as u64;
        if !new.is_empty() {
            if let Some(tl) = &mut self.timeline {
                tl.mark("first_byte");
            }
        }
        let mut buf = std::mem::take(&mut self.console_carry);
        buf.extend_from_slice(&new);
        let needle = format!("NUBIS-GUEST-READY {}", self.spec.id);
        let found = buf
            .split(|b| *b == b'\n')
            .any(|l| l.starts_with(needle.as_bytes()) && l[needle.len()..].trim_ascii().is_empty());
        if found {
            self.ready_ms = Some(now_ms());
            tracing::info!(instance = %self.spec.id, "guest ready");
            self.publish();
            if let Some(mut tl) = self.timeline.take() {
                tl.mark("ready");
                let phases = tl.phases();
                tracing::info!(
                    instance = %self.spec.id,
                    assigned_unix_ms = tl.start_unix_ms(),
                    total_ms = format!("{:.1}", tl.total().as_secs_f64() * 1000.0).as_str(),
                    phases = phases.as_str(),
                    "launch timeline"
                );
            }
            return;
        }
        // Keep the unfinished last line for the next scan.
        let keep = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.console_carry = buf[keep..].iter().rev().take(4096).rev().copied().collect();
    }

    async fn on_vmm_exit(&mut self, exit: VmmExit) {
        let pid = self.vmm.as_ref().map(|v| v.record().pid);
        self.vmm = None;
        self.stop = None;
        let _ = std::fs::remove_file(self.dir.vmm());
        self.exit_code = match exit {
            VmmExit::Code(c) => Some(c),
            _ => None,
        };
        self.started_ms = None;
        self.ready_ms = None;
        self.timeline = None;
        tracing::info!(instance = %self.spec.id, ?pid, ?exit, state = %self.state, "VMM exited");
        match self.state {
            State::Stopping | State::Terminating => {
                if self.state == State::Terminating {
                    self.cleanup().await;
                    return;
                }
                let timed_out = self
                    .reason
                    .take()
                    .filter(|r| r.code == ReasonCode::StartTimeout);
                if let Some(reason) = timed_out {
                    self.goto(State::Failed, Some(reason));
                    return;
                }
                let reason =
                    StateReason::new(ReasonCode::UserInitiatedShutdown, "stopped on request");
                self.goto(State::Stopped, Some(reason));
                if self.after_stop == AfterStop::Start {
                    self.after_stop = AfterStop::Stay;
                    self.start().await;
                }
            }
            _ => {
                let stderr = tail(&self.dir.stderr(), 512).unwrap_or_default();
                let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
                let (to, reason) = unrequested_exit(exit, &stderr);
                self.goto(to, Some(reason));
            }
        }
    }

    /// Terminate: stop the VMM if any (the exit handler then cleans up), or
    /// clean up right away.
    async fn terminate(&mut self, force: bool) {
        if self.state != State::Terminating {
            self.goto(
                State::Terminating,
                Some(StateReason::new(
                    ReasonCode::UserInitiatedShutdown,
                    "terminated on request",
                )),
            );
        }
        if self.vmm.is_some() {
            if self.stop.is_none() {
                self.begin_stop(force, AfterStop::Stay).await;
            }
        } else {
            self.cleanup().await;
        }
    }

    /// Removes TAP, cgroup and directory; idempotent. On failure the state
    /// stays Terminating and the next terminate request retries.
    async fn cleanup(&mut self) {
        match launch::destroy(&self.ctx, &self.spec, &self.dir).await {
            Ok(()) => {
                let reason = self.reason.clone();
                self.goto(State::Gone, reason);
            }
            Err(e) => {
                tracing::error!(instance = %self.spec.id, error = %e, "clean-up failed; will retry");
                self.reason = Some(StateReason::new(ReasonCode::InternalError, e.to_string()));
                self.persist();
                self.publish();
            }
        }
    }
}
