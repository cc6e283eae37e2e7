//! The VMM event loop: one thread owning the VM's [`VmState`], waiting on
//! epoll for guest resets (i8042), vCPU reports, API requests, SIGTERM/SIGINT
//! and virtio queue/back-end events, and driving the vCPU threads.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::api::ApiServer;
use crate::config::VmConfig;
use crate::devices::i8042::{I8042Metrics, I8042};
use crate::devices::lock;
use crate::devices::serial::{SerialDevice, SerialMetrics};
use crate::devices::virtio::VirtioMmioDevice;
use crate::error::{Error, Result};
use crate::rpc::{Request, VmmAction, VmmActionError, VmmOutcome};
use crate::signals::SignalFd;
use crate::state::{Event, StopReason, VmState};
use crate::vstate::vcpu::{kick_signal, VcpuCommand, VcpuEnd, VcpuMetrics, VcpuReport};
use crate::vstate::vm::Vm;

/// How long to keep kicking vCPUs that do not acknowledge a command.
const VCPU_ACK_TIMEOUT: Duration = Duration::from_secs(5);
const KICK_INTERVAL: Duration = Duration::from_millis(5);

const TOKEN_RESET: u64 = 1;
const TOKEN_VCPU: u64 = 2;
const TOKEN_API: u64 = 3;
const TOKEN_SIGNAL: u64 = 4;
/// Virtio tokens: kind in bits 56.., device index in 40..56, value below.
const TOKEN_QUEUE: u64 = 5 << 56;
const TOKEN_EXTRA: u64 = 6 << 56;

/// A virtio-mmio device as the VMM placed it.
pub struct VirtioSlot {
    /// The transport and device.
    pub device: Arc<Mutex<VirtioMmioDevice>>,
    /// Short type name (`block`, `net`, `rng`).
    pub kind: &'static str,
    /// MMIO base address.
    pub base: u64,
    /// Interrupt line.
    pub irq: u32,
}

impl std::fmt::Debug for VirtioSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioSlot")
            .field("kind", &self.kind)
            .field("base", &self.base)
            .field("irq", &self.irq)
            .finish()
    }
}

/// A running vCPU thread as seen from the VMM loop.
#[derive(Debug)]
pub struct VcpuHandle {
    /// Command channel.
    pub commands: Sender<VcpuCommand>,
    /// The thread.
    pub thread: Option<JoinHandle<()>>,
    /// Exit counters.
    pub metrics: Arc<VcpuMetrics>,
    /// Whether the thread reported its end.
    pub exited: bool,
}

/// Everything the event loop owns.
#[derive(Debug)]
pub struct Vmm {
    /// The configuration the VM was built from.
    pub config: VmConfig,
    /// Runtime state (changed only by [`Vmm::transition`]).
    pub state: VmState,
    /// When the vCPUs were started.
    pub started_at_unix_ms: u64,
    /// Keeps the VM (and its memory slots) alive.
    pub vm: Vm,
    /// vCPU threads.
    pub vcpus: Vec<VcpuHandle>,
    /// vCPU reports.
    pub vcpu_reports: Receiver<VcpuReport>,
    /// Written with each vCPU report.
    pub vcpu_evt: EventFd,
    /// Signalled by the i8042 on guest reset.
    pub reset_evt: EventFd,
    /// The i8042.
    pub i8042: Arc<Mutex<I8042>>,
    /// i8042 counters.
    pub i8042_metrics: Arc<I8042Metrics>,
    /// The console UART.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Console counters.
    pub serial_metrics: Arc<SerialMetrics>,
    /// virtio-mmio devices.
    pub virtio: Vec<VirtioSlot>,
    /// API requests, when an API socket is configured.
    pub api_requests: Receiver<Request>,
    /// Written with each API request.
    pub api_evt: EventFd,
    /// The API thread.
    pub api: Option<ApiServer>,
    /// SIGTERM / SIGINT.
    pub signals: SignalFd,
    /// Updates the metadata service, when one is configured.
    pub metadata: Option<crate::devices::virtio::net::MetadataHandle>,
}

/// A back-end fd (a TAP) that reports an error or hang-up stays in that state
/// (a deleted TAP never comes back to this fd): level-triggered epoll would
/// report it forever and the loop would spin. It is dropped from the set and
/// logged once; the device keeps serving the guest (its transmit path counts
/// the frames the dead TAP refuses as dropped).
fn forget_failed_fd(epoll: &Epoll, slot: &VirtioSlot, dev: u64, fd: RawFd) {
    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
    tracing::warn!(
        device = dev,
        kind = slot.kind,
        "host back-end reported an error or hang-up (TAP deleted?); no longer watched, \
         the device keeps answering the guest and drops what it sends"
    );
}

impl Vmm {
    fn transition(&mut self, event: Event) -> std::result::Result<(), VmmActionError> {
        let next = self.state.next(&event)?;
        tracing::debug!(from = %self.state, to = %next, ?event, "state change");
        self.state = next;
        Ok(())
    }

    fn epoll(&self) -> Result<Epoll> {
        let epoll = Epoll::new().map_err(|e| Error::host("epoll", e))?;
        let add_with = |fd: RawFd, token: u64, events: EventSet| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .map_err(|e| Error::host("epoll registration", e))
        };
        let add = |fd: RawFd, token: u64| add_with(fd, token, EventSet::IN);
        add(self.reset_evt.as_raw_fd(), TOKEN_RESET)?;
        add(self.vcpu_evt.as_raw_fd(), TOKEN_VCPU)?;
        add(self.api_evt.as_raw_fd(), TOKEN_API)?;
        add(self.signals.as_raw_fd(), TOKEN_SIGNAL)?;
        for (i, slot) in self.virtio.iter().enumerate() {
            let dev = lock(&slot.device);
            for (q, evt) in dev.queue_evts().iter().enumerate() {
                add(evt.as_raw_fd(), TOKEN_QUEUE | (i as u64) << 40 | q as u64)?;
            }
            for fd in dev.extra_fds() {
                let events = if dev.edge_triggered(fd) {
                    EventSet::IN | EventSet::EDGE_TRIGGERED
                } else {
                    EventSet::IN
                };
                add_with(fd, TOKEN_EXTRA | (i as u64) << 40 | fd as u64, events)?;
            }
        }
        Ok(epoll)
    }

    /// Runs until the VM ends; returns why.
    pub fn run(mut self) -> Result<StopReason> {
        let epoll = self.epoll()?;
        crate::seccomp::apply(crate::seccomp::ThreadKind::EventLoop)?;
        let _ = self.transition(Event::Started);
        let mut events = vec![EpollEvent::default(); 64];
        let reason = 'outer: loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::host("epoll wait", e)),
            };
            for ev in &events[..n] {
                if let Some(reason) = self.handle(&epoll, ev) {
                    break 'outer reason;
                }
            }
        };
        Ok(self.shutdown(reason))
    }

    fn handle(&mut self, epoll: &Epoll, ev: &EpollEvent) -> Option<StopReason> {
        let token = ev.data();
        match token {
            TOKEN_RESET => {
                let _ = self.reset_evt.read();
                tracing::info!("guest requested reset through the i8042");
                Some(StopReason::GuestReset)
            }
            TOKEN_VCPU => {
                let _ = self.vcpu_evt.read();
                let mut stop = None;
                while let Ok(report) = self.vcpu_reports.try_recv() {
                    stop = stop.or(self.on_report(report));
                }
                stop
            }
            TOKEN_API => {
                let _ = self.api_evt.read();
                let mut stop = None;
                while let Ok(req) = self.api_requests.try_recv() {
                    let (outcome, s) = self.perform(req.action);
                    let _ = req.reply.send(outcome);
                    stop = stop.or(s);
                }
                stop
            }
            TOKEN_SIGNAL => self.signals.read().map(|sig| {
                tracing::info!(signal = sig, "signal received; stopping");
                StopReason::Signal(sig)
            }),
            t if t >> 56 == TOKEN_QUEUE >> 56 => {
                let (dev, q) = ((t >> 40) & 0xffff, t & 0xff_ffff_ffff);
                if let Some(slot) = self.virtio.get(dev as usize) {
                    lock(&slot.device).process_queue(q as usize);
                }
                None
            }
            t if t >> 56 == TOKEN_EXTRA >> 56 => {
                let (dev, fd) = ((t >> 40) & 0xffff, t & 0xff_ffff_ffff);
                if let Some(slot) = self.virtio.get(dev as usize) {
                    lock(&slot.device).process_extra(fd as RawFd);
                    if ev
                        .event_set()
                        .intersects(EventSet::ERROR | EventSet::HANG_UP)
                    {
                        forget_failed_fd(epoll, slot, dev, fd as RawFd);
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn on_report(&mut self, report: VcpuReport) -> Option<StopReason> {
        match report {
            VcpuReport::Exited(id, end) => {
                if let Some(v) = self.vcpus.get_mut(id as usize) {
                    v.exited = true;
                }
                match end {
                    VcpuEnd::Finished => None,
                    VcpuEnd::Reset => Some(StopReason::GuestReset),
                    VcpuEnd::Fault(reason) => {
                        Some(StopReason::VcpuFault(format!("vCPU {id}: {reason}")))
                    }
                }
            }
            VcpuReport::Paused(_) | VcpuReport::Resumed(_) => None,
        }
    }

    /// Sends `cmd` to every live vCPU and, unless resuming, kicks them until
    /// each acknowledges with a report accepted by `acked`. Stop reasons
    /// reported meanwhile are returned.
    fn command_vcpus(
        &mut self,
        cmd: VcpuCommand,
        acked: fn(&VcpuReport) -> Option<u8>,
    ) -> Option<StopReason> {
        let mut waiting: Vec<bool> = self.vcpus.iter().map(|v| !v.exited).collect();
        for (v, w) in self.vcpus.iter().zip(waiting.iter_mut()) {
            if *w && v.commands.send(cmd).is_err() {
                *w = false;
            }
        }
        let mut stop = None;
        let deadline = Instant::now() + VCPU_ACK_TIMEOUT;
        while waiting.iter().any(|w| *w) && Instant::now() < deadline {
            if cmd != VcpuCommand::Resume {
                for (v, w) in self.vcpus.iter().zip(&waiting) {
                    if let (true, Some(t)) = (*w, &v.thread) {
                        let _ = t.kill(kick_signal());
                    }
                }
            }
            while let Ok(report) = self.vcpu_reports.recv_timeout(KICK_INTERVAL) {
                if let Some(id) = acked(&report) {
                    if let Some(w) = waiting.get_mut(id as usize) {
                        *w = false;
                    }
                }
                if let VcpuReport::Exited(id, _) = &report {
                    if let Some(w) = waiting.get_mut(*id as usize) {
                        *w = false;
                    }
                }
                stop = stop.or(self.on_report(report));
            }
        }
        if waiting.iter().any(|w| *w) {
            tracing::warn!(?cmd, "some vCPUs did not acknowledge in time");
        }
        stop
    }

    fn perform(&mut self, action: VmmAction) -> (VmmOutcome, Option<StopReason>) {
        let empty = || serde_json::json!({});
        match action {
            VmmAction::Describe => (Ok(self.describe()), None),
            VmmAction::Metrics => (Ok(self.metrics()), None),
            VmmAction::Pause => {
                if let Err(e) = self.transition(Event::Pause) {
                    return (Err(e), None);
                }
                let stop = self.command_vcpus(VcpuCommand::Pause, |r| match r {
                    VcpuReport::Paused(id) => Some(*id),
                    _ => None,
                });
                (Ok(empty()), stop)
            }
            VmmAction::Resume => {
                if let Err(e) = self.transition(Event::Resume) {
                    return (Err(e), None);
                }
                let stop = self.command_vcpus(VcpuCommand::Resume, |r| match r {
                    VcpuReport::Resumed(id) => Some(*id),
                    _ => None,
                });
                (Ok(empty()), stop)
            }
            VmmAction::CtrlAltDel => {
                if self.state != VmState::Running {
                    let err = crate::state::InvalidTransition {
                        state: self.state,
                        event: "send ctrl_alt_del",
                    };
                    return (Err(err.into()), None);
                }
                lock(&self.i8042).inject_ctrl_alt_del();
                (Ok(empty()), None)
            }
            VmmAction::ReloadMetadata => (self.reload_metadata(), None),
            VmmAction::Stop => match self.state.next(&Event::Stop(StopReason::Requested)) {
                Ok(_) => (Ok(empty()), Some(StopReason::Requested)),
                Err(e) => (Err(e.into()), None),
            },
        }
    }

    /// Rereads the metadata file and hands it to the running service.
    fn reload_metadata(&self) -> VmmOutcome {
        let (Some(handle), Some(path)) = (&self.metadata, &self.config.metadata_file) else {
            return Err(VmmActionError::BadRequest(
                "no metadata service configured".into(),
            ));
        };
        let config = crate::config::load_metadata(path)
            .map_err(|e| VmmActionError::BadRequest(e.to_string()))?;
        let options = serde_json::to_value(config.options).unwrap_or_default();
        handle
            .update(config)
            .map_err(|e| VmmActionError::Internal(format!("metadata update: {e}")))?;
        Ok(serde_json::json!({ "options": options }))
    }

    fn describe(&self) -> serde_json::Value {
        let describe = nubis_vmm_api::Describe {
            state: self.state.as_str().to_string(),
            pid: Some(std::process::id()),
            config: &self.config,
            vcpus_started: matches!(self.state, VmState::Running | VmState::Paused),
            started_at_unix_ms: Some(self.started_at_unix_ms),
        };
        serde_json::to_value(describe).unwrap_or_default()
    }

    fn metrics(&self) -> serde_json::Value {
        let vcpus: Vec<serde_json::Value> = self
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, v)| serde_json::json!({"id": i, "exits": v.metrics.to_json()}))
            .collect();
        let mut totals = serde_json::Map::new();
        for v in &self.vcpus {
            if let serde_json::Value::Object(m) = v.metrics.to_json() {
                for (k, val) in m {
                    let sum = totals.get(&k).and_then(|x| x.as_u64()).unwrap_or(0)
                        + val.as_u64().unwrap_or(0);
                    totals.insert(k, sum.into());
                }
            }
        }
        let virtio: Vec<serde_json::Value> = self
            .virtio
            .iter()
            .map(|s| {
                serde_json::json!({
                    "type": s.kind,
                    "mmio_base": s.base,
                    "irq": s.irq,
                    "metrics": lock(&s.device).metrics(),
                })
            })
            .collect();
        serde_json::json!({
            "vcpus": vcpus,
            "exits_total": totals,
            "devices": {
                "serial": self.serial_metrics.to_json(),
                "i8042": self.i8042_metrics.to_json(),
                "virtio": virtio,
            },
        })
    }

    /// Stops vCPUs and threads, answers late API requests, flushes the
    /// console; returns the reason the VM ended.
    fn shutdown(mut self, reason: StopReason) -> StopReason {
        let _ = self.transition(Event::Stop(reason.clone()));
        tracing::info!(?reason, "stopping microVM");
        // Keep answering requests that arrive while we stop.
        let late = self.command_vcpus(VcpuCommand::Finish, |r| match r {
            VcpuReport::Exited(id, _) => Some(*id),
            _ => None,
        });
        if let Some(late) = late {
            tracing::debug!(?late, "vCPU report during shutdown");
        }
        for v in &mut self.vcpus {
            if v.exited {
                if let Some(t) = v.thread.take() {
                    let _ = t.join();
                }
            }
        }
        while let Ok(req) = self.api_requests.try_recv() {
            let (outcome, _) = self.perform(req.action);
            let _ = req.reply.send(outcome);
        }
        // Requests still queued now are answered "shutting down" by the API
        // thread when their reply channel drops with the receiver.
        drop(std::mem::replace(
            &mut self.api_requests,
            std::sync::mpsc::channel().1,
        ));
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
        lock(&self.serial).flush();
        let _ = self.transition(Event::Finished);
        reason
    }
}
