//! vCPUs: creation and boot state, and the per-vCPU thread that runs
//! `KVM_RUN`, dispatches port-I/O and MMIO exits to the device buses, obeys
//! pause/resume/finish commands from the VMM loop, and reports how it ended.
//!
//! A vCPU blocked in `KVM_RUN` is interrupted by a "kick" signal
//! ([`kick_signal`]); the VMM loop re-kicks until the vCPU acknowledges, so a
//! signal that lands just before `KVM_RUN` is never lost for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use super::vm::Vm;
use crate::boot::{cpuid, msr, regs, EntryPoint};
use crate::devices::{is_quiet_port, Bus, UnhandledAccessLog};
use crate::error::{Error, Result};
use crate::vstate::memory::GuestMem;

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// Signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler; `KVM_RUN` then returns `EINTR`.
pub fn install_kick_handler() -> Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| Error::host("vCPU kick signal handler", e.into()))
}

/// Per-vCPU exit counters.
#[derive(Debug, Default)]
pub struct VcpuMetrics {
    io_in: AtomicU64,
    io_out: AtomicU64,
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    hlt: AtomicU64,
    shutdown: AtomicU64,
    system_event: AtomicU64,
    interrupted: AtomicU64,
    internal_error: AtomicU64,
    fail_entry: AtomicU64,
    other: AtomicU64,
    unhandled_pio: AtomicU64,
    unhandled_mmio: AtomicU64,
}

impl VcpuMetrics {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Exits by kind, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "io_in": l(&self.io_in),
            "io_out": l(&self.io_out),
            "mmio_read": l(&self.mmio_read),
            "mmio_write": l(&self.mmio_write),
            "hlt": l(&self.hlt),
            "shutdown": l(&self.shutdown),
            "system_event": l(&self.system_event),
            "interrupted": l(&self.interrupted),
            "internal_error": l(&self.internal_error),
            "fail_entry": l(&self.fail_entry),
            "other": l(&self.other),
            "unhandled_pio": l(&self.unhandled_pio),
            "unhandled_mmio": l(&self.unhandled_mmio),
        })
    }
}

/// What vCPU threads share: the buses and the rate limits of the
/// unhandled-access log.
#[derive(Debug, Default)]
pub struct IoContext {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// Unclaimed port accesses.
    pub unhandled_pio: UnhandledAccessLog,
    /// Unclaimed MMIO accesses.
    pub unhandled_mmio: UnhandledAccessLog,
}

/// A command from the VMM loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuCommand {
    /// Stop running guest code until resumed.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Leave the thread.
    Finish,
}

/// How a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    /// Told to finish.
    Finished,
    /// The guest reset or shut the machine down.
    Reset,
    /// An error the guest cannot recover from.
    Fault(String),
}

/// A report from a vCPU thread to the VMM loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuReport {
    /// Acknowledges [`VcpuCommand::Pause`].
    Paused(u8),
    /// Acknowledges [`VcpuCommand::Resume`].
    Resumed(u8),
    /// The thread is about to end.
    Exited(u8, VcpuEnd),
}

/// A configured vCPU, not yet running.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    metrics: Arc<VcpuMetrics>,
}

impl Vcpu {
    /// Creates vCPU `id` of `count` with CPUID, MSRs, FPU and LAPIC set up;
    /// the boot vCPU (`entry` given) also gets its boot registers. Other vCPUs
    /// wait in the in-kernel LAPIC for the guest's INIT/SIPI.
    pub fn new(vm: &Vm, id: u8, count: u8, entry: Option<EntryPoint>) -> Result<Self> {
        let err = |what| move |source| Error::Vcpu { id, what, source };
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(err("KVM_CREATE_VCPU"))?;
        let cpuid = cpuid::filter(vm.supported_cpuid(), id, count)?;
        fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
        let msrs = msr::boot_msrs()?;
        let set = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set != msrs.as_slice().len() {
            let failed = msrs.as_slice()[set].index;
            tracing::warn!(
                vcpu = id,
                msr = format_args!("{failed:#x}"),
                "KVM refused a boot MSR; skipping the rest"
            );
        }
        fd.set_fpu(&regs::boot_fpu()).map_err(err("KVM_SET_FPU"))?;
        let lapic = fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        fd.set_lapic(&regs::wire_lints(lapic))
            .map_err(err("KVM_SET_LAPIC"))?;
        if let Some(entry) = entry {
            let sregs = fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
            fd.set_sregs(&regs::boot_sregs(sregs, entry.protocol))
                .map_err(err("KVM_SET_SREGS"))?;
            fd.set_regs(&regs::boot_regs(entry))
                .map_err(err("KVM_SET_REGS"))?;
        }
        Ok(Vcpu {
            id,
            fd,
            metrics: Arc::new(VcpuMetrics::default()),
        })
    }

    /// This vCPU's counters.
    pub fn metrics(&self) -> Arc<VcpuMetrics> {
        self.metrics.clone()
    }

    /// Starts the vCPU thread.
    /// Returns once the thread has installed its seccomp filter.
    pub fn spawn(self, ctx: VcpuThreadContext) -> Result<JoinHandle<()>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || {
                let filtered = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu);
                let ok = filtered.is_ok();
                let _ = ready_tx.send(filtered);
                if ok {
                    self.run(ctx);
                }
            })
            .map_err(|e| Error::host("vCPU thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::host(
                "vCPU thread",
                std::io::Error::other("ended before starting"),
            )),
        }
    }

    fn report(&self, ctx: &VcpuThreadContext, report: VcpuReport) {
        // The VMM loop may be gone already while the process exits.
        let _ = ctx.reports.send(report);
        let _ = ctx.wake.write(1);
    }

    /// Handles pending commands; returns false when the thread must end.
    fn obey(&self, ctx: &VcpuThreadContext) -> bool {
        while let Ok(cmd) = ctx.commands.try_recv() {
            match cmd {
                VcpuCommand::Resume => {}
                VcpuCommand::Finish => return false,
                VcpuCommand::Pause => {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        if let (Ok(r), Ok(l)) = (self.fd.get_regs(), self.fd.get_lapic()) {
                            tracing::debug!(
                                vcpu = self.id,
                                rip = format_args!("{:#x}", r.rip),
                                rsp = format_args!("{:#x}", r.rsp),
                                rflags = format_args!("{:#x}", r.rflags),
                                isr = %crate::boot::regs::pending_vectors(&l, 0x100),
                                irr = %crate::boot::regs::pending_vectors(&l, 0x200),
                                "vCPU paused"
                            );
                        }
                    }
                    self.report(ctx, VcpuReport::Paused(self.id));
                    loop {
                        match ctx.commands.recv() {
                            Ok(VcpuCommand::Resume) => {
                                self.report(ctx, VcpuReport::Resumed(self.id));
                                break;
                            }
                            Ok(VcpuCommand::Pause) => self.report(ctx, VcpuReport::Paused(self.id)),
                            Ok(VcpuCommand::Finish) | Err(_) => return false,
                        }
                    }
                }
            }
        }
        true
    }

    fn run(mut self, ctx: VcpuThreadContext) {
        let end = loop {
            if !self.obey(&ctx) {
                break VcpuEnd::Finished;
            }
            if let Some(end) = self.run_once(&ctx.io) {
                break end;
            }
        };
        if end != VcpuEnd::Finished {
            tracing::info!(vcpu = self.id, ?end, "vCPU stopped");
        }
        self.report(&ctx, VcpuReport::Exited(self.id, end));
    }

    /// One `KVM_RUN`; `Some` when the vCPU must stop.
    fn run_once(&mut self, io: &IoContext) -> Option<VcpuEnd> {
        let m = &self.metrics;
        let id = self.id;
        match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    VcpuMetrics::bump(&m.io_in);
                    if !io.pio.read(u64::from(port), data) {
                        data.fill(0xff);
                        unhandled_pio(io, m, id, port, "read", data.len());
                    }
                    None
                }
                VcpuExit::IoOut(port, data) => {
                    VcpuMetrics::bump(&m.io_out);
                    if !io.pio.write(u64::from(port), data) {
                        unhandled_pio(io, m, id, port, "write", data.len());
                    }
                    None
                }
                VcpuExit::MmioRead(addr, data) => {
                    VcpuMetrics::bump(&m.mmio_read);
                    if !io.mmio.read(addr, data) {
                        data.fill(0xff);
                        unhandled_mmio(io, m, id, addr, "read", data.len());
                    }
                    None
                }
                VcpuExit::MmioWrite(addr, data) => {
                    VcpuMetrics::bump(&m.mmio_write);
                    if !io.mmio.write(addr, data) {
                        unhandled_mmio(io, m, id, addr, "write", data.len());
                    }
                    None
                }
                VcpuExit::Hlt => {
                    VcpuMetrics::bump(&m.hlt);
                    None
                }
                VcpuExit::Shutdown => {
                    VcpuMetrics::bump(&m.shutdown);
                    Some(VcpuEnd::Reset)
                }
                VcpuExit::SystemEvent(kind, _) => {
                    VcpuMetrics::bump(&m.system_event);
                    match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => Some(VcpuEnd::Reset),
                        other => Some(VcpuEnd::Fault(format!("system event {other}"))),
                    }
                }
                VcpuExit::InternalError => {
                    VcpuMetrics::bump(&m.internal_error);
                    Some(VcpuEnd::Fault(
                        "KVM internal error (emulation failure)".into(),
                    ))
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    VcpuMetrics::bump(&m.fail_entry);
                    Some(VcpuEnd::Fault(format!(
                        "VM entry failed: reason {reason:#x} on host cpu {cpu}"
                    )))
                }
                VcpuExit::Intr | VcpuExit::IrqWindowOpen => {
                    VcpuMetrics::bump(&m.interrupted);
                    None
                }
                other => {
                    VcpuMetrics::bump(&m.other);
                    Some(VcpuEnd::Fault(format!("unexpected exit {other:?}")))
                }
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                VcpuMetrics::bump(&m.interrupted);
                None
            }
            Err(e) => Some(VcpuEnd::Fault(format!("KVM_RUN failed: {e}"))),
        }
    }
}

fn unhandled_pio(io: &IoContext, m: &VcpuMetrics, vcpu: u8, port: u16, dir: &str, len: usize) {
    if is_quiet_port(port) {
        return;
    }
    VcpuMetrics::bump(&m.unhandled_pio);
    if io.unhandled_pio.record() {
        tracing::warn!(
            vcpu,
            port = format_args!("{port:#x}"),
            len,
            dir,
            total = io.unhandled_pio.count(),
            "guest port access to no device; ignored"
        );
    }
}

fn unhandled_mmio(io: &IoContext, m: &VcpuMetrics, vcpu: u8, addr: u64, dir: &str, len: usize) {
    VcpuMetrics::bump(&m.unhandled_mmio);
    if io.unhandled_mmio.record() {
        tracing::warn!(
            vcpu,
            addr = format_args!("{addr:#x}"),
            len,
            dir,
            total = io.unhandled_mmio.count(),
            "guest MMIO access to no device; ignored"
        );
    }
}

/// What a vCPU thread needs from the rest of the VMM.
#[derive(Debug)]
pub struct VcpuThreadContext {
    /// Device buses.
    pub io: Arc<IoContext>,
    /// Commands from the VMM loop.
    pub commands: Receiver<VcpuCommand>,
    /// Reports to the VMM loop.
    pub reports: Sender<VcpuReport>,
    /// Written after each report to wake the VMM loop.
    pub wake: EventFd,
    /// Keeps guest memory mapped while the vCPU runs.
    pub mem: GuestMem,
}
