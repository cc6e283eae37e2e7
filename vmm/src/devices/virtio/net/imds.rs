//! The instance metadata service on a virtio-net device: the guest's
//! transmitted frames for 169.254.169.254 / fd00:ec2::254 go to a
//! [`nubis_imds::Responder`] instead of the TAP, and its answers are
//! delivered into the guest's receive queue ahead of TAP frames. A timerfd
//! wakes the event loop for the responder's TCP timers; an eventfd delivers
//! run-time updates (the API's `reload_metadata`) from the VMM loop through
//! a [`MetadataHandle`].

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nubis_imds::{ImdsConfig, Responder};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

/// Shortest timer armed (a zero duration would disarm a timerfd).
const MIN_TIMER: Duration = Duration::from_micros(100);

type Mailbox = Arc<Mutex<Option<ImdsConfig>>>;

/// The responder and its wake-ups, owned by the net device.
#[derive(Debug)]
pub struct MetadataPort {
    responder: Responder,
    timer: TimerFd,
    wake: EventFd,
    mailbox: Mailbox,
    /// Frames taken from / given to the guest.
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
}

/// Hands new metadata to a running device (from the VMM loop).
#[derive(Debug)]
pub struct MetadataHandle {
    wake: EventFd,
    mailbox: Mailbox,
}

impl MetadataHandle {
    /// Queues `config` for the device and wakes it.
    pub fn update(&self, config: ImdsConfig) -> std::io::Result<()> {
        *self.mailbox.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        self.wake.write(1)
    }
}

impl MetadataPort {
    /// A port serving `config` to the guest whose MAC is `guest_mac`.
    pub fn new(config: ImdsConfig, guest_mac: [u8; 6]) -> std::io::Result<(Self, MetadataHandle)> {
        let wake = EventFd::new(EFD_NONBLOCK)?;
        let mailbox: Mailbox = Arc::new(Mutex::new(None));
        let handle = MetadataHandle {
            wake: wake.try_clone()?,
            mailbox: mailbox.clone(),
        };
        let port = Self {
            responder: Responder::new(config.metadata, config.options, Some(guest_mac)),
            timer: TimerFd::new()?,
            wake,
            mailbox,
            frames_in: 0,
            frames_out: 0,
        };
        Ok((port, handle))
    }

    /// The fds the event loop watches for this port.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.timer.as_raw_fd(), self.wake.as_raw_fd()]
    }

    /// Whether a frame the guest sent (without virtio header) is ours.
    pub fn intercepts(&self, frame: &[u8]) -> bool {
        self.responder.intercepts(frame)
    }

    /// Takes a frame the guest sent to the metadata service.
    pub fn receive(&mut self, frame: &[u8]) {
        self.frames_in += 1;
        self.responder.receive(frame, Instant::now());
    }

    /// The next frame for the guest.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        let f = self.responder.transmit(Instant::now())?;
        self.frames_out += 1;
        Some(f)
    }

    /// Handles readability of one of [`Self::fds`]; false if `fd` is not ours.
    pub fn on_fd(&mut self, fd: RawFd) -> bool {
        if fd == self.timer.as_raw_fd() {
            // Reading (not blocking: epoll said it expired) clears it; it is
            // re-armed from the responder's next deadline.
            let _ = self.timer.clear();
            true
        } else if fd == self.wake.as_raw_fd() {
            let _ = self.wake.read();
            let update = self
                .mailbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(config) = update {
                self.responder.update(config.metadata, config.options);
                tracing::info!(
                    instance = %self.responder.metadata().instance_id,
                    options = ?self.responder.options(),
                    "instance metadata updated"
                );
            }
            true
        } else {
            false
        }
    }

    /// Arms the timer for the responder's next deadline (or disarms it).
    pub fn rearm(&mut self) {
        let now = Instant::now();
        let result = match self.responder.poll_at(now) {
            Some(at) => self
                .timer
                .reset(at.saturating_duration_since(now).max(MIN_TIMER), None),
            None => self.timer.clear(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "metadata service timer");
        }
    }

    /// The options in force (for `describe`-style reporting and tests).
    pub fn options(&self) -> nubis_imds::MetadataOptions {
        *self.responder.options()
    }
}
