//! Emulated devices and the two buses (port I/O and MMIO) vCPU exits are
//! dispatched on. Each device owns its registers; the buses only route.
//! Accesses nobody claims are logged (rate-limited) and absorbed: reads
//! return all-ones, writes are dropped, and the guest keeps running.

pub mod i8042;
pub mod ratelimit;
pub mod serial;
pub mod virtio;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

/// A device on a bus. `offset` is relative to the device's base.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared, lockable bus device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Two devices claim overlapping ranges.
#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
pub struct BusOverlap {
    /// Base of the rejected range.
    pub base: u64,
    /// Length of the rejected range.
    pub len: u64,
}

/// An address space (port I/O or MMIO) mapping ranges to devices.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u64, u64)> = self.devices.iter().map(|(b, (l, _))| (*b, *l)).collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// Adds `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).ok_or(BusOverlap { base, len })?;
        let overlaps = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(b, (l, _))| b + l > base);
        if len == 0 || overlaps {
            return Err(BusOverlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        (addr + size as u64 <= base + len).then_some((addr - base, dev))
    }

    /// Dispatches a read; false when no device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; false when no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

impl BusDevice for virtio::VirtioMmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.mmio_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.mmio_write(offset, data);
    }
}

/// Locks a device, recovering it if a previous holder panicked (device
/// state is plain registers, still meaningful after a panic elsewhere).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ports Linux probes that have no device here; accesses are absorbed
/// without logging (POST code, other COM ports, PCI config, PIC/ELCR...).
pub fn is_quiet_port(port: u16) -> bool {
    matches!(port,
        0x80 | 0x2e8..=0x2ef | 0x2f8..=0x2ff | 0x3e8..=0x3ef | 0xcf8..=0xcff | 0x4d0 | 0x4d1
        | 0x87 | 0xed | 0x70 | 0x71)
}

/// Counts accesses nobody claims and logs them at a decaying rate: the first
/// ten, then every power of two.
#[derive(Debug, Default)]
pub struct UnhandledAccessLog {
    count: AtomicU64,
}

impl UnhandledAccessLog {
    /// Records one access; true when this one should be logged.
    pub fn record(&self) -> bool {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        n <= 10 || n.is_power_of_two()
    }

    /// Accesses recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// An interrupt line backed by an eventfd registered as a KVM irqfd.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let mut bus = Bus::default();
        let dev = Arc::new(Mutex::new(Recorder(Vec::new())));
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3f0, 9, dev.clone()).is_err());
        assert!(bus.insert(0x3ff, 1, dev.clone()).is_err());
        assert!(bus.insert(0x3f0, 0, dev.clone()).is_err());
        bus.insert(0x400, 1, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fb, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.write(0x3f8, &[7]));
        assert!(!bus.write(0x3f7, &[7]));
        assert!(!bus.read(0x3ff, &mut [0u8; 2]));
        assert_eq!(lock(&dev).0, vec![(0, vec![7])]);
    }

    #[test]
    fn unhandled_log_decays() {
        let log = UnhandledAccessLog::default();
        let logged = (0..1000).filter(|_| log.record()).count();
        assert_eq!(logged, 10 + 6); // 1..=10, then 16, 32, 64, 128, 256, 512
        assert_eq!(log.count(), 1000);
    }
}
