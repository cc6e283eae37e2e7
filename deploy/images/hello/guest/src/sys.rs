//! Ring-3 side of the platform: the `int 0x80` service calls into the CPL0
//! stub ([`crate::boot`]), the IDT contents, the serial console, timing
//! (rdtsc), idling (LAPIC timer + `hlt` at CPL0) and reset.
//!
//! Port I/O is impossible from ring 3 under PVM (and IOPL is 0 anyway), so
//! every `in`/`out` is one service call; console output is one call per line
//! (`rep outsb` at CPL0).

use core::arch::asm;
use core::fmt;

use crate::boot;

const OP_WRITE: u64 = 1;
const OP_OUTB: u64 = 2;
const OP_INB: u64 = 3;
const OP_IDLE: u64 = 4;
const OP_WRMSR: u64 = 5;
const OP_TRIPLE_FAULT: u64 = 6;

const COM1: u16 = 0x3f8;

#[inline]
fn service(op: u64, a: u64, b: u64) -> u64 {
    let ret: u64;
    // SAFETY: the CPL0 service handler only touches the registers declared
    // here and the memory range we hand it for OP_WRITE (read only).
    unsafe {
        asm!(
            "int 0x80",
            inlateout("rax") op => ret,
            inlateout("rdi") a => _,
            inlateout("rsi") b => _,
            out("rcx") _,
            out("rdx") _,
            options(nostack)
        );
    }
    ret
}

/// Writes one byte to an I/O port (through CPL0).
pub fn outb(port: u16, value: u8) {
    service(OP_OUTB, u64::from(port), u64::from(value));
}

/// Reads one byte from an I/O port (through CPL0).
pub fn inb(port: u16) -> u8 {
    (service(OP_INB, u64::from(port), 0) & 0xff) as u8
}

/// Writes bytes to the serial console in one service call.
pub fn serial_write(bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        service(OP_WRITE, chunk.as_ptr() as u64, chunk.len() as u64);
    }
}

fn idt_gate(handler: u64, dpl: u8) -> (u64, u64) {
    let low = (handler & 0xffff)
        | (u64::from(boot::KERNEL_CS) << 16)
        | (u64::from(0x8e | (dpl << 5)) << 40)
        | ((handler >> 16) & 0xffff) << 48;
    (low, handler >> 32)
}

/// Fills the IDT: exceptions to the stubs, every other vector to the
/// interrupt handler, 0x80 to the ring-3 service gate. Runs first thing at
/// CPL3 (interrupts are disabled until then).
pub fn init_idt() {
    let stubs = boot::exception_stubs as *const () as u64;
    let irq = boot::irq_handler as *const () as u64;
    let service = boot::service_handler as *const () as u64;
    for vector in 0..256usize {
        let (low, high) = match vector {
            0..=31 => idt_gate(stubs + 16 * vector as u64, 0),
            boot::SERVICE_VECTOR => idt_gate(service, 3),
            _ => idt_gate(irq, 0),
        };
        // SAFETY: the IDT is a 4 KiB static owned by this module; nothing
        // reads it concurrently (single CPU, interrupts disabled).
        unsafe {
            let idt = &raw mut boot::idt_table;
            (*idt)[2 * vector] = low;
            (*idt)[2 * vector + 1] = high;
        }
    }
}

/// Programs COM1 for 115200 8N1 with FIFOs and masks the legacy PICs.
pub fn init_platform() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xc7);
    outb(COM1 + 4, 0x03);
}

/// A line being formatted for the console; written in one service call.
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Ends the line with `\n` and writes it.
    pub fn finish(mut self) {
        if self.len == self.buf.len() {
            self.flush();
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        self.flush();
    }

    fn flush(&mut self) {
        serial_write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints one console line (format arguments like `println!`).
#[macro_export]
macro_rules! console {
    ($($arg:tt)*) => {{
        let mut line = $crate::sys::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        line.finish();
    }};
}

/// Reads the time-stamp counter (allowed at CPL3: CR4.TSD is clear).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    KvmClock,
    Cpuid15,
    Cpuid16,
    Hypervisor,
    Assumed,
}

/// Estimates the TSC frequency in Hz: from KVM's pvclock scale when the
/// hypervisor is KVM, else CPUID (leaf 0x15, 0x16 or the hypervisor timing
/// leaf 0x40000010); otherwise assumes 2 GHz. Timing in
/// this guest only drives TCP/ARP timers, which tolerate a rough figure.
pub fn tsc_hz() -> (u64, TscSource) {
    use core::arch::x86_64::__cpuid;
    let max = __cpuid(0).eax;
    if let Some(hz) = kvmclock_tsc_hz() {
        return (hz, TscSource::KvmClock);
    }
    if max >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return (
                u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax),
                TscSource::Cpuid15,
            );
        }
    }
    if max >= 0x16 {
        let mhz = __cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return (u64::from(mhz) * 1_000_000, TscSource::Cpuid16);
        }
    }
    let hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    if hypervisor {
        let hmax = __cpuid(0x4000_0000).eax;
        if (0x4000_0010..0x4000_0100).contains(&hmax) {
            let khz = __cpuid(0x4000_0010).eax;
            if khz != 0 {
                return (u64::from(khz) * 1000, TscSource::Hypervisor);
            }
        }
    }
    (2_000_000_000, TscSource::Assumed)
}

/// KVM's per-vCPU time info (`pvclock_vcpu_time_info`).
#[repr(C, align(64))]
struct PvClock {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

static mut PVCLOCK: PvClock = PvClock {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};

const MSR_KVM_SYSTEM_TIME_NEW: u64 = 0x4b56_4d01;

/// The TSC frequency KVM uses to scale the TSC to nanoseconds: enable the
/// kvmclock MSR for a moment and read back the multiplier and shift.
fn kvmclock_tsc_hz() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    if __cpuid(1).ecx & (1 << 31) == 0 {
        return None;
    }
    let sig = __cpuid(0x4000_0000);
    if (sig.ebx, sig.ecx, sig.edx) != (0x4b4d_564b, 0x564b_4d56, 0x4d) || sig.eax < 0x4000_0001 {
        return None;
    }
    // KVM_FEATURE_CLOCKSOURCE2
    if __cpuid(0x4000_0001).eax & (1 << 3) == 0 {
        return None;
    }
    let clock = &raw mut PVCLOCK;
    service(OP_WRMSR, MSR_KVM_SYSTEM_TIME_NEW, clock as u64 | 1);
    let mut result = None;
    for _ in 0..1000 {
        // SAFETY: KVM writes the structure (a static we own) on this vCPU
        // only; volatile reads see its updates.
        let (v1, mul, shift, v2) = unsafe {
            let v1 = core::ptr::read_volatile(&raw const (*clock).version);
            let mul = core::ptr::read_volatile(&raw const (*clock).tsc_to_system_mul);
            let shift = core::ptr::read_volatile(&raw const (*clock).tsc_shift);
            let v2 = core::ptr::read_volatile(&raw const (*clock).version);
            (v1, mul, shift, v2)
        };
        if v1 == v2 && v1 != 0 && v1 % 2 == 0 && mul != 0 {
            let base = (1_000_000_000u128 << 32) / u128::from(mul);
            let hz = if shift >= 0 {
                base >> shift.unsigned_abs()
            } else {
                base << shift.unsigned_abs()
            };
            result = u64::try_from(hz).ok().filter(|hz| *hz >= 1_000_000);
            break;
        }
        core::hint::spin_loop();
    }
    service(OP_WRMSR, MSR_KVM_SYSTEM_TIME_NEW, 0);
    result
}

/// Busy-waits about `ms` milliseconds.
pub fn spin_ms(ms: u64, hz: u64) {
    let end = rdtsc().saturating_add(hz / 1000 * ms);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

const LAPIC_BASE: usize = 0xfee0_0000;
const LAPIC_VERSION: usize = 0x30;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INIT: usize = 0x380;
const LAPIC_TIMER_DIV: usize = 0x3e0;
const MSR_TSC_DEADLINE: u64 = 0x6e0;

fn lapic_read(reg: usize) -> u32 {
    // SAFETY: the LAPIC page is identity mapped (uncached); reads have no
    // side effects on the registers used here.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn lapic_write(reg: usize, value: u32) {
    // SAFETY: as above; the registers written configure only the timer.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, value) }
}

/// How the guest sleeps while it waits for network traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// LAPIC in TSC-deadline mode: `wrmsr` + `hlt` at CPL0.
    TscDeadline,
    /// LAPIC one-shot timer counting the bus clock (assumed ~1 GHz / 16).
    OneShot,
    /// No LAPIC: spin.
    Spin,
}

/// Sets up the LAPIC timer for [`sleep`], or reports that there is none.
pub fn init_idle() -> Idle {
    let version = lapic_read(LAPIC_VERSION);
    if version == 0 || version == u32::MAX {
        return Idle::Spin;
    }
    lapic_write(LAPIC_SVR, 0x1ff);
    let deadline = core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0;
    if deadline {
        lapic_write(LAPIC_LVT_TIMER, (2 << 17) | u32::from(boot::TIMER_VECTOR));
        Idle::TscDeadline
    } else {
        lapic_write(LAPIC_TIMER_DIV, 0x3);
        lapic_write(LAPIC_LVT_TIMER, u32::from(boot::TIMER_VECTOR));
        Idle::OneShot
    }
}

/// Sleeps at most `ticks` TSC ticks, waking early on any interrupt.
pub fn sleep(idle: Idle, ticks: u64, hz: u64) {
    match idle {
        Idle::TscDeadline => {
            service(OP_WRMSR, MSR_TSC_DEADLINE, rdtsc().saturating_add(ticks));
            service(OP_IDLE, 0, 0);
        }
        Idle::OneShot => {
            // Bus clock / 16 ~ 62.5 MHz on KVM; convert from TSC ticks.
            let us = ticks.saturating_mul(1_000_000) / hz.max(1);
            let count = us.saturating_mul(62).clamp(1, u64::from(u32::MAX));
            lapic_write(LAPIC_TIMER_INIT, count as u32);
            service(OP_IDLE, 0, 0);
        }
        Idle::Spin => {
            let end = rdtsc().saturating_add(ticks);
            while rdtsc() < end {
                core::hint::spin_loop();
            }
        }
    }
}

const IOAPIC_BASE: usize = 0xfec0_0000;
const LAPIC_ID: usize = 0x20;

fn ioapic_write(reg: u32, value: u32) {
    // SAFETY: the I/O APIC window is identity mapped (uncached); IOREGSEL
    // then IOWIN is its register protocol.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, reg);
        core::ptr::write_volatile((IOAPIC_BASE + 0x10) as *mut u32, value);
    }
}

fn ioapic_read(reg: u32) -> u32 {
    // SAFETY: as in ioapic_write.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, reg);
        core::ptr::read_volatile((IOAPIC_BASE + 0x10) as *const u32)
    }
}

/// Routes I/O APIC input `irq` (edge, active high) to the wake-up vector on
/// this CPU. `false` if there is no I/O APIC or no such input.
pub fn route_irq(irq: u32) -> bool {
    let version = ioapic_read(1);
    if version == 0 || version == u32::MAX {
        return false;
    }
    let max_entry = (version >> 16) & 0xff;
    if irq > max_entry {
        return false;
    }
    let apic_id = lapic_read(LAPIC_ID) >> 24;
    ioapic_write(0x11 + 2 * irq, apic_id << 24);
    ioapic_write(0x10 + 2 * irq, u32::from(boot::DEVICE_VECTOR));
    true
}

/// Masks or unmasks I/O APIC input `irq` (routed by [`route_irq`]). While
/// the guest polls anyway, a masked input spares it the VM exit each
/// device interrupt costs; an edge arriving while masked is lost, so unmask
/// before looking for work one last time and sleeping.
pub fn mask_irq(irq: u32, masked: bool) {
    let mask = if masked { 1 << 16 } else { 0 };
    ioapic_write(0x10 + 2 * irq, u32::from(boot::DEVICE_VECTOR) | mask);
}

const I8042_DATA: u16 = 0x60;
const I8042_STATUS: u16 = 0x64;

/// The i8042 keyboard controller, watched for Ctrl-Alt-Del.
pub struct Keyboard {
    present: bool,
    cad: nubis_hello_guest::keyboard::CtrlAltDel,
}

impl Keyboard {
    /// Probes for an i8042 (a missing one reads 0xff) and routes its
    /// interrupt (ISA IRQ 1) to the wake-up vector. Call after [`init_idle`].
    pub fn init(idle: Idle) -> Keyboard {
        let present = inb(I8042_STATUS) != 0xff;
        if present && idle != Idle::Spin {
            route_irq(1);
        }
        let mut keyboard = Keyboard {
            present,
            cad: Default::default(),
        };
        keyboard.poll();
        keyboard
    }

    /// Reads what the controller has buffered; `true` on Ctrl-Alt-Del.
    pub fn poll(&mut self) -> bool {
        if !self.present {
            return false;
        }
        for _ in 0..64 {
            let status = inb(I8042_STATUS);
            if status & 1 == 0 || status == 0xff {
                break;
            }
            let byte = inb(I8042_DATA);
            // Bit 5: the byte came from the auxiliary (mouse) port.
            if status & 0x20 == 0 && self.cad.feed(byte) {
                return true;
            }
        }
        false
    }
}

/// Waits for the next interrupt at CPL0 (`sti; hlt`). With no timer armed
/// and the PICs masked this sleeps for good without using the CPU.
pub fn halt() {
    service(OP_IDLE, 0, 0);
}

/// Resets the machine: prints `NUBIS-RESET`, pulses the i8042 reset line and,
/// if the VMM has no i8042 (or ignores it), triple-faults.
pub fn reset(hz: u64) -> ! {
    console!("NUBIS-RESET");
    outb(0x64, 0xfe);
    spin_ms(200, hz);
    service(OP_TRIPLE_FAULT, 0, 0);
    loop {
        core::hint::spin_loop();
    }
}
