//! Virtio devices over the virtio-mmio transport: all of the VMM's virtio queue
//! handling lives in this one module tree.
//!
//! What this module owns:
//! - [`mmio`]: the virtio-mmio (version 2, "modern") transport, [`VirtioMmioDevice`]: the
//!   register file, the device-status state machine, feature negotiation (the transport
//!   always offers `VIRTIO_F_VERSION_1` and `VIRTIO_RING_F_EVENT_IDX` and refuses
//!   `FEATURES_OK` without `VIRTIO_F_VERSION_1`), queue set-up, config space, the interrupt
//!   status/ack registers and reset.
//! - [`queue`]: helpers every device uses: [`QueueContext`] (pop a chain, complete it, detect
//!   queue corruption), descriptor-chain validation and the rate-limited guest-error log.
//! - [`block`], [`net`], [`rng`]: the devices, each implementing [`VirtioDevice`].
//!
//! # Interface for the rest of the VMM
//!
//! ```text
//! VirtioMmioDevice::new(device: Box<dyn VirtioDevice + Send>, mem: GuestMemoryMmap) -> Result<Self, Error>
//! fn mmio_read(&mut self, offset: u64, data: &mut [u8])     // offset within the device's MMIO window
//! fn mmio_write(&mut self, offset: u64, data: &[u8])
//! fn queue_evts(&self) -> &[EventFd]     // one per queue: register as KVM ioeventfd at
//!                                        // base + 0x50 with datamatch = queue index
//! fn interrupt_evt(&self) -> &EventFd    // register as irqfd on the device's GSI
//! fn process_queue(&mut self, queue_index: usize)   // call when that queue's eventfd fires;
//!                                                   // it drains the eventfd itself
//! fn extra_fds(&self) -> Vec<RawFd>      // e.g. the TAP fd: watch for readability
//! fn edge_triggered(&self, fd: RawFd) -> bool  // watch that one with EPOLLET (a throttled TAP)
//! fn process_extra(&mut self, fd: RawFd) // call when one of them is readable; it reads
//!                                        // until EAGAIN, so edge- or level-triggered both work
//! fn metrics(&self) -> serde_json::Value
//! fn device_type(&self) -> u32           // VIRTIO_ID_BLOCK / VIRTIO_ID_NET / VIRTIO_ID_RNG
//! ```
//!
//! Constructors: [`block::Block::new`], [`net::Net::new`], [`rng::Rng::new`]. Their errors are
//! one enum, [`Error`]; [`Error::exit_status`] maps it to the `nubis-vmm` exit status contract
//! (6 = network, 7 = disk, 1 = anything else).
//!
//! Every device uses one MMIO window of [`MMIO_WINDOW_SIZE`] bytes.
//!
//! # Metrics
//!
//! [`VirtioMmioDevice::metrics`] returns one JSON object per device: the transport's
//! `type`, `status`, `needs_reset`, `interrupts`, `resets`, `queue_corruptions`, and the
//! device's counters. Every device has `requests`, `bytes_read`, `bytes_written` and
//! `errors` (block: bytes read from / written to the disk; net: bytes taken from the guest
//! for the TAP / delivered to the guest; rng: bytes of entropy written to the guest), plus
//! its own (`reads`, `writes`, `flushes`, `get_ids`, `capacity_sectors`; `rx_frames`,
//! `tx_frames`, `rx_dropped`, `tx_dropped`, `mac`, `tap`).
//!
//! # Guest misbehaviour
//!
//! Nothing the guest writes into its memory or registers can panic the VMM. A malformed request
//! (bad sizes, wrong descriptor direction, addresses outside guest memory, a loop in a
//! descriptor chain) is logged (rate-limited) and completed with an error status where the
//! protocol has one (`VIRTIO_BLK_S_IOERR` / `VIRTIO_BLK_S_UNSUPP`), otherwise the chain is
//! returned to the guest with a used length of 0. Corruption of a queue itself (an available
//! index that jumps by more than the queue size, rings outside guest memory) marks the device
//! `NEEDS_RESET`, raises a configuration-change interrupt and stops processing until the
//! driver resets the device.

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(any(test, feature = "fuzzing"))]
pub mod testing;

use std::os::fd::RawFd;
use std::path::PathBuf;

pub use mmio::VirtioMmioDevice;
pub use queue::{QueueContext, QueueCorruption};

/// Size of one virtio-mmio device's MMIO window (registers plus config space).
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Feature bit: the device complies with virtio 1.0 or later (`VIRTIO_F_VERSION_1`).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Feature bit: used/available event indices for notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Errors from creating virtio devices and their transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk image could not be opened.
    #[error("cannot open disk image {path}")]
    DiskOpen {
        /// The image path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk image could not be inspected or read.
    #[error("cannot read disk image {path}")]
    DiskRead {
        /// The image path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The disk image is not a regular file or block device, or is smaller than one sector.
    #[error("disk image {path} is unusable: {reason}")]
    DiskUnusable {
        /// The image path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The disk id is longer than 20 bytes or not printable ASCII.
    #[error("disk id {id:?} must be 1 to 20 printable ASCII characters")]
    InvalidDiskId {
        /// The rejected id.
        id: String,
    },
    /// The TAP name is empty, too long or contains characters an interface name cannot have.
    #[error("invalid TAP device name {name:?}")]
    InvalidTapName {
        /// The rejected name.
        name: String,
    },
    /// No network interface of that name exists (the VMM never creates TAP devices).
    #[error("TAP device {name} does not exist")]
    TapNotFound {
        /// The TAP name.
        name: String,
    },
    /// Opening `/dev/net/tun` or configuring the TAP device failed.
    #[error("cannot use TAP device {name} ({operation})")]
    Tap {
        /// The TAP name.
        name: String,
        /// The step that failed, e.g. `TUNSETIFF`.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The MAC address is multicast or all-zero.
    #[error("invalid guest MAC address {mac:02x?}: must be unicast and not all-zero")]
    InvalidMac {
        /// The rejected address.
        mac: [u8; 6],
    },
    /// The host's random number source does not work.
    #[error("host entropy source (getrandom) unavailable")]
    Entropy(#[source] getrandom::Error),
    /// An eventfd could not be created.
    #[error("cannot create eventfd")]
    EventFd(#[source] std::io::Error),
    /// A device declared an unusable queue (no queues, or a maximum size that is not a power of two).
    #[error("device declares an invalid queue")]
    InvalidQueue(#[source] virtio_queue::Error),
    /// The timer of a device's rate limiter could not be created.
    #[error("cannot create the rate limiter's timer")]
    RateLimiter {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The `nubis-vmm` exit status for this error: 2 = bad configuration (MAC),
    /// 6 = network (TAP), 7 = disk, 1 = other.
    pub fn exit_status(&self) -> i32 {
        use nubis_vmm_api::exit_code;
        match self {
            Error::DiskOpen { .. }
            | Error::DiskRead { .. }
            | Error::DiskUnusable { .. }
            | Error::InvalidDiskId { .. } => exit_code::DISK,
            Error::InvalidTapName { .. } | Error::TapNotFound { .. } | Error::Tap { .. } => {
                exit_code::NETWORK
            }
            Error::InvalidMac { .. } => exit_code::CONFIG,
            Error::Entropy(_)
            | Error::EventFd(_)
            | Error::InvalidQueue(_)
            | Error::RateLimiter { .. } => exit_code::INTERNAL,
        }
    }
}

/// A virtio device model, driven by the [`VirtioMmioDevice`] transport.
///
/// The transport owns the queues and guest memory and lends them to the device through a
/// [`QueueContext`] for each call; the device owns its backend (file, TAP, entropy).
pub trait VirtioDevice: Send {
    /// The virtio device id (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// A short name for logs and metrics (`block`, `net`, `rng`).
    fn name(&self) -> &'static str;
    /// Device-specific feature bits offered to the driver. The transport adds
    /// `VIRTIO_F_VERSION_1` and `VIRTIO_RING_F_EVENT_IDX` itself.
    fn device_features(&self) -> u64;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads from the device configuration space. Bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes to the device configuration space. The default ignores writes (none of our
    /// devices has a writable field the transport offers).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Called when the driver sets `DRIVER_OK`, with the features it accepted.
    fn activate(&mut self, acked_features: u64);
    /// Processes the available buffers of queue `queue_index`.
    fn process_queue(
        &mut self,
        ctx: &mut QueueContext<'_>,
        queue_index: usize,
    ) -> Result<(), QueueCorruption>;
    /// Host file descriptors the event loop must watch for readability.
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// True when `fd` (one of [`VirtioDevice::extra_fds`]) must be watched
    /// edge-triggered: the device may leave it readable on purpose (a TAP
    /// whose frames wait while receive is throttled) and resumes reading on
    /// its own (a rate limiter's timer), so level-triggered epoll would spin.
    fn edge_triggered(&self, _fd: RawFd) -> bool {
        false
    }
    /// Called when one of [`VirtioDevice::extra_fds`] is readable.
    fn process_extra(
        &mut self,
        _ctx: &mut QueueContext<'_>,
        _fd: RawFd,
    ) -> Result<(), QueueCorruption> {
        Ok(())
    }
    /// Returns the device to its initial state (the transport has reset the queues).
    fn reset(&mut self);
    /// Counters: requests, bytes read/written, errors, device-specific extras.
    fn metrics(&self) -> serde_json::Value;
}
