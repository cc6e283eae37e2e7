//! Device rate limiters: token buckets for bandwidth (bytes/s) and operations
//! (requests or frames/s), each with a burst, and the timer that wakes a
//! throttled device when its buckets have refilled.
//!
//! A device asks [`RateLimiter::blocked`] before it takes the next request from
//! a queue and [`RateLimiter::consume`] after it has served it. A request is
//! never refused half-way: the buckets may go into debt by one request, and the
//! device then waits until the debt is repaid. Over any long interval the
//! throughput therefore stays at the configured rate (plus the burst), which is
//! what a tenant's instance type promises and what protects the host's disks
//! and links from a noisy neighbour.
//!
//! When blocked, the limiter arms its timerfd for the moment the buckets are
//! positive again; the device exposes that fd through
//! [`crate::devices::virtio::VirtioDevice::extra_fds`], and the event loop's
//! call to `process_extra` on it resumes the queue.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::timerfd::TimerFd;

/// One bucket: `rate` tokens per second, holding at most `burst` tokens (the
/// rate itself when no burst is given). A zero rate means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Sustained tokens per second (bytes or operations); 0 = no limit.
    pub rate: u64,
    /// Bucket size: how many tokens may be spent at once after an idle
    /// period. Default: one second's worth (`rate`).
    #[serde(default)]
    pub burst: Option<u64>,
}

/// The limits of one device: bandwidth and operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Bytes per second (disk: bytes read + written; net: bytes of the
    /// frames sent, or received for the receive limiter).
    #[serde(default)]
    pub bandwidth: BucketConfig,
    /// Operations per second (disk: requests; net: frames sent or received).
    #[serde(default)]
    pub ops: BucketConfig,
}

impl RateLimitConfig {
    /// True when neither bucket limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.rate == 0 && self.ops.rate == 0
    }
}

/// A token bucket. Tokens are counted in millionths so that refills of a few
/// microseconds are not lost to rounding.
#[derive(Debug)]
struct Bucket {
    /// Tokens per second.
    rate: u64,
    /// Capacity, in micro-tokens.
    capacity: i128,
    /// Current content, in micro-tokens; negative while in debt.
    level: i128,
    last: Instant,
}

const MICRO: i128 = 1_000_000;

impl Bucket {
    fn new(cfg: BucketConfig, now: Instant) -> Option<Bucket> {
        if cfg.rate == 0 {
            return None;
        }
        let capacity = i128::from(cfg.burst.unwrap_or(cfg.rate).max(1)) * MICRO;
        Some(Bucket {
            rate: cfg.rate,
            capacity,
            level: capacity,
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        // rate tokens/s = rate micro-tokens/us.
        let add = i128::from(self.rate) * elapsed.as_micros() as i128;
        self.level = (self.level + add).min(self.capacity);
    }

    fn consume(&mut self, tokens: u64) {
        self.level -= i128::from(tokens) * MICRO;
    }

    /// How long until the level is positive again (zero when it is).
    fn wait(&self) -> Duration {
        if self.level > 0 {
            return Duration::ZERO;
        }
        let missing = -self.level + 1;
        let rate = i128::from(self.rate);
        let micros = (missing + rate - 1) / rate;
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

/// Bandwidth and operation buckets of one device plus its wake-up timer.
#[derive(Debug)]
pub struct RateLimiter {
    bandwidth: Option<Bucket>,
    ops: Option<Bucket>,
    timer: TimerFd,
    armed: bool,
    throttled: u64,
}

impl RateLimiter {
    /// A limiter for `cfg`; `None` when `cfg` limits nothing (the device then
    /// pays no cost at all).
    pub fn new(cfg: &RateLimitConfig) -> std::io::Result<Option<RateLimiter>> {
        if cfg.is_unlimited() {
            return Ok(None);
        }
        let now = Instant::now();
        Ok(Some(RateLimiter {
            bandwidth: Bucket::new(cfg.bandwidth, now),
            ops: Bucket::new(cfg.ops, now),
            timer: TimerFd::new()?,
            armed: false,
            throttled: 0,
        }))
    }

    /// True when the device must not start another request now; the timer is
    /// then armed for when it may.
    pub fn blocked(&mut self) -> bool {
        self.blocked_at(Instant::now())
    }

    fn blocked_at(&mut self, now: Instant) -> bool {
        let mut wait = Duration::ZERO;
        for b in [&mut self.bandwidth, &mut self.ops].into_iter().flatten() {
            b.refill(now);
            wait = wait.max(b.wait());
        }
        if wait.is_zero() {
            return false;
        }
        if !self.armed {
            self.throttled += 1;
            // A failure to arm would stall the queue for good; serve instead.
            if let Err(e) = self.timer.reset(wait, None) {
                tracing::warn!(error = %e, "rate-limiter timer failed; not throttling");
                return false;
            }
            self.armed = true;
        }
        true
    }

    /// Accounts one served request of `bytes` bytes.
    pub fn consume(&mut self, bytes: u64) {
        if let Some(b) = &mut self.bandwidth {
            b.consume(bytes);
        }
        if let Some(b) = &mut self.ops {
            b.consume(1);
        }
    }

    /// The timer's fd, for the event loop.
    pub fn fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Acknowledges the timer's expiry (call when [`RateLimiter::fd`] is
    /// readable, then resume the queue).
    pub fn on_timer(&mut self) {
        let _ = self.timer.wait();
        self.armed = false;
    }

    /// How many times the device was throttled (for metrics).
    pub fn throttled(&self) -> u64 {
        self.throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(bw: u64, ops: u64) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            bandwidth: BucketConfig {
                rate: bw,
                burst: None,
            },
            ops: BucketConfig {
                rate: ops,
                burst: None,
            },
        })
        .unwrap()
        .unwrap()
    }

    #[test]
    fn unlimited_config_builds_no_limiter() {
        assert!(RateLimiter::new(&RateLimitConfig::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn bandwidth_debt_blocks_until_repaid() {
        let t0 = Instant::now();
        let mut l = limiter(1000, 0);
        assert!(!l.blocked_at(t0));
        l.consume(1500); // burst 1000, 500 in debt
        assert!(l.blocked_at(t0));
        // 0.4 s later: +400, still -100.
        assert!(l.blocked_at(t0 + Duration::from_millis(400)));
        // 0.6 s later: +600 in total, positive again.
        assert!(!l.blocked_at(t0 + Duration::from_millis(501)));
        assert_eq!(l.throttled(), 1);
    }

    #[test]
    fn ops_bucket_caps_requests_per_second() {
        let t0 = Instant::now();
        let mut l = limiter(0, 10);
        let mut served = 0;
        // Simulate a greedy device polled every millisecond for 2 s.
        for ms in 0..2000 {
            let now = t0 + Duration::from_millis(ms);
            while !l.blocked_at(now) {
                l.consume(4096);
                served += 1;
            }
        }
        // 10 of burst + 10/s for 2 s (one request of debt at most).
        assert!((29..=31).contains(&served), "served {served}");
    }

    #[test]
    fn timer_fires_when_tokens_are_back() {
        let mut l = limiter(100_000, 0);
        l.consume(100_000 + 2_000); // 20 ms of debt
        let start = Instant::now();
        assert!(l.blocked());
        let mut pfd = libc::pollfd {
            fd: l.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
        assert_eq!(n, 1, "timer did not fire");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(15),
            "fired after {waited:?}"
        );
        l.on_timer();
        assert!(!l.blocked());
    }
}
