//! Queue helpers shared by every virtio device: popping and completing descriptor chains
//! through a [`QueueContext`], detecting queue corruption, validating the shape of a
//! descriptor chain, and rate-limiting the log lines a misbehaving guest can cause.

use std::fmt;
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

/// A descriptor chain borrowing guest memory.
pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// A queue the device can no longer trust: the device must be reset by the driver.
#[derive(Debug, thiserror::Error)]
#[error("queue {queue} is corrupt")]
pub struct QueueCorruption {
    /// Index of the queue.
    pub queue: usize,
    /// What the queue library reported.
    #[source]
    pub source: virtio_queue::Error,
}

/// What a device may do with the queues during one call from the transport.
#[derive(Debug)]
pub struct QueueContext<'a> {
    mem: &'a GuestMemoryMmap,
    queues: &'a mut [Queue],
    used: &'a mut [bool],
    log: &'a mut LogLimiter,
    device: &'static str,
}

impl<'a> QueueContext<'a> {
    /// Creates a context; `used` has one flag per queue, set when a chain was completed.
    pub(crate) fn new(
        mem: &'a GuestMemoryMmap,
        queues: &'a mut [Queue],
        used: &'a mut [bool],
        log: &'a mut LogLimiter,
        device: &'static str,
    ) -> Self {
        QueueContext {
            mem,
            queues,
            used,
            log,
            device,
        }
    }

    /// Guest memory.
    pub fn mem(&self) -> &'a GuestMemoryMmap {
        self.mem
    }

    /// Whether queue `index` exists and the driver marked it ready.
    pub fn is_ready(&self, index: usize) -> bool {
        self.queues.get(index).is_some_and(|q| q.ready())
    }

    /// Pops the next available descriptor chain of queue `index`, or `None` when the driver
    /// has made no more available (notifications are re-enabled before saying so, so that
    /// with `VIRTIO_RING_F_EVENT_IDX` the driver notifies about the next buffer).
    pub fn pop(&mut self, index: usize) -> Result<Option<Chain<'a>>, QueueCorruption> {
        let mem = self.mem;
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(None);
        };
        if !queue.ready() {
            return Ok(None);
        }
        let corrupt = |source| QueueCorruption {
            queue: index,
            source,
        };
        loop {
            let next = queue.iter(mem).map_err(corrupt)?.next();
            if let Some(chain) = next {
                return Ok(Some(chain));
            }
            if !queue.enable_notification(mem).map_err(corrupt)? {
                return Ok(None);
            }
        }
    }

    /// Returns a chain to the driver with `len` bytes written into its writable buffers.
    pub fn complete(&mut self, index: usize, head: u16, len: u32) -> Result<(), QueueCorruption> {
        let mem = self.mem;
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        queue
            .add_used(mem, head, len)
            .map_err(|source| QueueCorruption {
                queue: index,
                source,
            })?;
        if let Some(flag) = self.used.get_mut(index) {
            *flag = true;
        }
        Ok(())
    }

    /// Logs a guest error (rate-limited per device).
    pub fn guest_error(&mut self, queue: usize, what: impl fmt::Display) {
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                device = self.device,
                queue,
                suppressed,
                "guest driver error: {what}"
            );
        }
    }
}

/// Allows a burst of log lines per time window and counts what it suppressed, so a guest
/// cannot flood the host's logs.
#[derive(Debug)]
pub struct LogLimiter {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Lines allowed per window.
    pub const BURST: u32 = 10;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// A limiter with a full budget.
    pub fn new() -> Self {
        LogLimiter {
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be logged now (`n` lines were suppressed since the last one
    /// logged), `None` if it must be dropped.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Self::WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < Self::BURST {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The shape of a well-formed descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainShape {
    /// Number of descriptors.
    pub descriptors: u32,
    /// Total bytes of the device-readable descriptors.
    pub readable: u64,
    /// Total bytes of the device-writable descriptors.
    pub writable: u64,
}

/// Why a descriptor chain is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head descriptor could not be read (index beyond the queue, table outside memory).
    #[error("empty or unreadable descriptor chain")]
    Empty,
    /// The chain does not end: a loop, a `next` index beyond the queue, or a descriptor
    /// outside guest memory.
    #[error("descriptor chain does not terminate (loop or bad next index)")]
    Unterminated,
    /// A device-readable descriptor follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer {addr:#x}+{len} is outside guest memory")]
    OutOfGuestMemory {
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
}

/// Walks a chain and checks that it terminates, that readable descriptors precede writable
/// ones and that every buffer lies in guest memory.
pub fn validate_chain(chain: Chain<'_>) -> Result<ChainShape, ChainError> {
    let mem = chain.memory();
    let mut shape = ChainShape {
        descriptors: 0,
        readable: 0,
        writable: 0,
    };
    let mut last_has_next = false;
    let mut seen_writable = false;
    for desc in chain.clone() {
        shape.descriptors += 1;
        last_has_next = desc.has_next();
        let len = desc.len();
        if len > 0 && !GuestMemoryBackend::check_range(mem, desc.addr(), len as usize) {
            return Err(ChainError::OutOfGuestMemory {
                addr: desc.addr().0,
                len,
            });
        }
        if desc.is_write_only() {
            seen_writable = true;
            shape.writable += u64::from(len);
        } else {
            if seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            shape.readable += u64::from(len);
        }
    }
    if shape.descriptors == 0 {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Unterminated);
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_allows_a_burst_then_counts_suppressed() {
        let mut log = LogLimiter::new();
        for _ in 0..LogLimiter::BURST {
            assert_eq!(log.allow(), Some(0));
        }
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        // A new window reports what was dropped.
        log.window_start = Some(Instant::now() - LogLimiter::WINDOW);
        assert_eq!(log.allow(), Some(2));
        assert_eq!(log.allow(), Some(0));
    }
}
