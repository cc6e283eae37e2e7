//! The 16550A UART at 0x3f8 (IRQ 4, through an irqfd): the guest console.
//! Register emulation is vm-superio's; this module owns the output side
//! (stdout or a size-capped log file) and the byte counters.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::Serial;

use super::{BusDevice, IrqLine};

/// Base port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of ports the UART decodes.
pub const PORT_COUNT: u64 = 8;

/// Counters of the serial console.
#[derive(Debug, Default)]
pub struct SerialMetrics {
    /// Bytes the guest transmitted.
    pub tx_bytes: AtomicU64,
    /// Bytes lost because the output failed.
    pub tx_lost_bytes: AtomicU64,
    /// Register reads and writes by the guest.
    pub accesses: AtomicU64,
}

impl SerialEvents for SerialMetrics {
    fn buffer_read(&self) {}
    fn out_byte(&self) {
        self.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {
        self.tx_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn in_buffer_empty(&self) {}
}

impl SerialMetrics {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tx_bytes": self.tx_bytes.load(Ordering::Relaxed),
            "tx_lost_bytes": self.tx_lost_bytes.load(Ordering::Relaxed),
            "requests": self.accesses.load(Ordering::Relaxed),
        })
    }
}

/// A console log file capped at `max` bytes: when a write would exceed the
/// cap, the file is cut down to its newest `max / 2` bytes first.
#[derive(Debug)]
pub struct CappedFile {
    file: File,
    len: u64,
    max: Option<u64>,
}

impl CappedFile {
    /// Opens (creating, appending to) `path`.
    pub fn open(path: &Path, max: Option<u64>) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(CappedFile { file, len, max })
    }

    fn trim(&mut self, keep: u64) -> io::Result<()> {
        let keep = keep.min(self.len);
        let mut tail = vec![0u8; keep as usize];
        self.file.seek(SeekFrom::Start(self.len - keep))?;
        self.file.read_exact(&mut tail)?;
        self.file.set_len(0)?;
        self.file.write_all(&tail)?;
        self.len = keep;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(max) = self.max {
            if self.len + buf.len() as u64 > max {
                let keep = (max / 2).saturating_sub(buf.len() as u64);
                self.trim(keep)?;
            }
        }
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Output sink of the console.
pub type SerialOut = Box<dyn Write + Send>;

/// The COM1 device on the port I/O bus.
pub struct SerialDevice {
    uart: Serial<IrqLine, Arc<SerialMetrics>, SerialOut>,
    metrics: Arc<SerialMetrics>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: IrqLine, out: SerialOut) -> Self {
        let metrics = Arc::new(SerialMetrics::default());
        SerialDevice {
            uart: Serial::with_events(irq, metrics.clone(), out),
            metrics,
        }
    }

    /// Shared counters.
    pub fn metrics(&self) -> Arc<SerialMetrics> {
        self.metrics.clone()
    }

    /// Flushes the output sink.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.metrics.accesses.fetch_add(1, Ordering::Relaxed);
        if data.len() != 1 || offset >= PORT_COUNT {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.metrics.accesses.fetch_add(1, Ordering::Relaxed);
        if data.len() != 1 || offset >= PORT_COUNT {
            return;
        }
        if let Err(e) = self.uart.write(offset as u8, data[0]) {
            tracing::warn!(error = %e, "serial write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_and_counts() {
        let sink = Sink::default();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(IrqLine(irq.try_clone().unwrap()), Box::new(sink.clone()));
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert_eq!(dev.metrics().tx_bytes.load(Ordering::Relaxed), 3);
        // Enable the THR-empty interrupt: the UART raises its line.
        dev.write(1, &[0x02]);
        assert!(irq.read().unwrap() >= 1);
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
    }

    #[test]
    fn capped_file_keeps_newest_half() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut f = CappedFile::open(&path, Some(1000)).unwrap();
        for i in 0..300u32 {
            writeln!(f, "{:09}", i).unwrap();
        }
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.len() <= 1000, "{}", content.len());
        assert!(content.ends_with("000000299\n"));
        assert!(!content.contains("000000000\n"));
        // Reopening continues from the existing size.
        let mut f = CappedFile::open(&path, Some(1000)).unwrap();
        f.write_all(&[b'x'; 600]).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
    }
}
