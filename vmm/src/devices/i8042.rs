//! The i8042 keyboard controller at ports 0x60 (data) and 0x64
//! (status/command): enough of it for Linux's i8042/atkbd drivers to probe a
//! keyboard, for the guest to reset the machine (command 0xFE, which ends
//! the VM with status 0), and for the VMM to inject Ctrl-Alt-Del
//! (scancodes on IRQ 1).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// Base port of the controller.
pub const PORT_BASE: u64 = 0x60;
/// Ports decoded (0x60..=0x64).
pub const PORT_COUNT: u64 = 5;

const OFF_DATA: u64 = 0;
const OFF_STATUS: u64 = 4;

const STATUS_OBF: u8 = 1 << 0;
const STATUS_SYS: u8 = 1 << 2;
const STATUS_CMD: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

const CTR_KBD_INT: u8 = 1 << 0;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBD_DISABLE: u8 = 1 << 4;
const CTR_AUX_DISABLE: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
const KBD_CMD_SET_LEDS: u8 = 0xed;
const KBD_CMD_SCANCODE_SET: u8 = 0xf0;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_CMD_SET_RATE: u8 = 0xf3;
const KBD_CMD_RESET: u8 = 0xff;

const BUFFER_CAP: usize = 16;

/// Set 2 make and break codes of Ctrl, Alt, Del.
const CAD_SET2: [u8; 11] = [
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
];
/// The same keys as set 1 codes (what the guest sees with translation on).
const CAD_SET1: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

/// Counters of the controller.
#[derive(Debug, Default)]
pub struct I8042Metrics {
    /// Reset requests from the guest.
    pub resets: AtomicU64,
    /// Ctrl-Alt-Del sequences injected.
    pub ctrl_alt_del: AtomicU64,
    /// Register accesses by the guest.
    pub accesses: AtomicU64,
}

impl I8042Metrics {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "resets": self.resets.load(Ordering::Relaxed),
            "ctrl_alt_del": self.ctrl_alt_del.load(Ordering::Relaxed),
            "requests": self.accesses.load(Ordering::Relaxed),
        })
    }
}

/// A byte waiting in, or coming to, the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The next data-port write is the argument of this controller command.
    Controller(u8),
    /// The next data-port write is the argument of this keyboard command.
    Keyboard(u8),
}

/// The controller.
#[derive(Debug)]
pub struct I8042 {
    reset_evt: EventFd,
    kbd_irq: EventFd,
    status: u8,
    control: u8,
    outp: u8,
    buffer: VecDeque<u8>,
    pending: Option<Pending>,
    metrics: Arc<I8042Metrics>,
}

impl I8042 {
    /// A controller signalling `reset_evt` on CPU reset and `kbd_irq` (an
    /// irqfd on IRQ 1) when a byte is ready.
    pub fn new(reset_evt: EventFd, kbd_irq: EventFd) -> Self {
        I8042 {
            reset_evt,
            kbd_irq,
            status: STATUS_SYS | STATUS_UNLOCKED,
            control: CTR_KBD_INT | CTR_SYS | CTR_XLATE,
            outp: 0x01,
            buffer: VecDeque::new(),
            pending: None,
            metrics: Arc::new(I8042Metrics::default()),
        }
    }

    /// Shared counters.
    pub fn metrics(&self) -> Arc<I8042Metrics> {
        self.metrics.clone()
    }

    /// Queues the Ctrl-Alt-Del key presses and releases, in the scancode set
    /// the guest reads (set 1 when translation is on).
    pub fn inject_ctrl_alt_del(&mut self) {
        self.metrics.ctrl_alt_del.fetch_add(1, Ordering::Relaxed);
        let codes: &[u8] = if self.control & CTR_XLATE != 0 {
            &CAD_SET1
        } else {
            &CAD_SET2
        };
        for &c in codes {
            self.push(c);
        }
    }

    fn push(&mut self, byte: u8) {
        if self.buffer.len() < BUFFER_CAP {
            self.buffer.push_back(byte);
        }
        self.refill();
    }

    /// Reflects the buffer in the status register and raises IRQ 1 for a
    /// newly visible byte.
    fn refill(&mut self) {
        if self.status & STATUS_OBF != 0 || self.buffer.is_empty() {
            return;
        }
        self.status |= STATUS_OBF;
        if self.control & CTR_KBD_INT != 0 {
            if let Err(e) = self.kbd_irq.write(1) {
                tracing::warn!(error = %e, "i8042: cannot raise IRQ 1");
            }
        }
    }

    fn reply(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    fn read_data(&mut self) -> u8 {
        if self.status & STATUS_OBF == 0 {
            return self.buffer.front().copied().unwrap_or(0);
        }
        self.status &= !STATUS_OBF;
        let byte = self.buffer.pop_front().unwrap_or(0);
        self.refill();
        byte
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_CMD;
        match cmd {
            CMD_READ_CTR => self.reply(&[self.control]),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_AUX => {
                self.pending = Some(Pending::Controller(cmd))
            }
            CMD_AUX_DISABLE => self.control |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.control &= !CTR_AUX_DISABLE,
            // No auxiliary (mouse) port: report a clock-line fault.
            CMD_AUX_TEST => self.reply(&[0x01]),
            CMD_SELF_TEST => self.reply(&[0x55]),
            CMD_KBD_TEST => self.reply(&[0x00]),
            CMD_KBD_DISABLE => self.control |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.control &= !CTR_KBD_DISABLE,
            CMD_READ_OUTP => self.reply(&[self.outp]),
            CMD_RESET_CPU => {
                self.metrics.resets.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.reset_evt.write(1) {
                    tracing::error!(error = %e, "i8042: cannot signal reset");
                }
            }
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        self.status &= !STATUS_CMD;
        match self.pending.take() {
            Some(Pending::Controller(CMD_WRITE_CTR)) => {
                self.control = value;
                self.refill();
            }
            Some(Pending::Controller(CMD_WRITE_OUTP)) => self.outp = value,
            // Bytes for the absent mouse are dropped.
            Some(Pending::Controller(_)) => {}
            Some(Pending::Keyboard(_)) => self.reply(&[KBD_ACK]),
            None => self.keyboard_command(value),
        }
    }

    fn keyboard_command(&mut self, cmd: u8) {
        match cmd {
            KBD_CMD_RESET => {
                self.buffer.clear();
                self.status &= !STATUS_OBF;
                self.reply(&[KBD_ACK, KBD_SELF_TEST_OK]);
            }
            KBD_CMD_GET_ID => self.reply(&[KBD_ACK, 0xab, 0x83]),
            KBD_CMD_SET_LEDS | KBD_CMD_SET_RATE | KBD_CMD_SCANCODE_SET => {
                self.pending = Some(Pending::Keyboard(cmd));
                self.reply(&[KBD_ACK]);
            }
            _ => self.reply(&[KBD_ACK]),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.metrics.accesses.fetch_add(1, Ordering::Relaxed);
        if data.len() != 1 {
            data.fill(0xff);
            return;
        }
        data[0] = match offset {
            OFF_DATA => self.read_data(),
            OFF_STATUS => self.status,
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.metrics.accesses.fetch_add(1, Ordering::Relaxed);
        if data.len() != 1 {
            return;
        }
        match offset {
            OFF_DATA => self.write_data(data[0]),
            OFF_STATUS => self.command(data[0]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn dev() -> (I8042, EventFd, EventFd) {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let d = I8042::new(reset.try_clone().unwrap(), irq.try_clone().unwrap());
        (d, reset, irq)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    fn drain(d: &mut I8042) -> Vec<u8> {
        let mut out = Vec::new();
        while rd(d, OFF_STATUS) & STATUS_OBF != 0 {
            out.push(rd(d, OFF_DATA));
        }
        out
    }

    #[test]
    fn reset_command_signals() {
        let (mut d, reset, _) = dev();
        assert!(reset.read().is_err(), "no reset yet");
        d.write(OFF_STATUS, &[0xfe]);
        assert_eq!(reset.read().unwrap(), 1);
        assert_eq!(d.metrics().resets.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn controller_probe_sequence() {
        let (mut d, _, _) = dev();
        d.write(OFF_STATUS, &[CMD_SELF_TEST]);
        assert_eq!(drain(&mut d), vec![0x55]);
        d.write(OFF_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[0x45]);
        d.write(OFF_STATUS, &[CMD_READ_CTR]);
        assert_eq!(drain(&mut d), vec![0x45]);
        d.write(OFF_DATA, &[KBD_CMD_RESET]);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_SELF_TEST_OK]);
        d.write(OFF_DATA, &[KBD_CMD_GET_ID]);
        assert_eq!(drain(&mut d), vec![KBD_ACK, 0xab, 0x83]);
        d.write(OFF_DATA, &[KBD_CMD_SET_LEDS]);
        d.write(OFF_DATA, &[0x07]);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_ACK]);
        d.write(OFF_STATUS, &[CMD_KBD_TEST]);
        assert_eq!(drain(&mut d), vec![0]);
    }

    #[test]
    fn ctrl_alt_del_in_both_sets_with_irq() {
        let (mut d, _, irq) = dev();
        d.inject_ctrl_alt_del();
        assert!(irq.read().unwrap() >= 1);
        assert_eq!(drain(&mut d), CAD_SET1.to_vec());
        // Translation off: raw set 2.
        d.write(OFF_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[CTR_KBD_INT | CTR_SYS]);
        d.inject_ctrl_alt_del();
        assert_eq!(drain(&mut d), CAD_SET2.to_vec());
        assert_eq!(d.metrics().ctrl_alt_del.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn no_irq_when_disabled_in_ctr() {
        let (mut d, _, irq) = dev();
        d.write(OFF_STATUS, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[CTR_SYS]);
        let _ = irq.read();
        d.inject_ctrl_alt_del();
        assert!(irq.read().is_err());
        assert_eq!(rd(&mut d, OFF_STATUS) & STATUS_OBF, STATUS_OBF);
    }
}
