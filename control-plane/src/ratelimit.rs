//! Per-account request rate limiting, shared by the EC2 gateway (and its
//! CloudWatch endpoint) and the gRPC edge (`Domain::authenticate`).
//!
//! Owns one token bucket per account (per replica): `rate` tokens a second up
//! to `burst`. A request that finds its bucket empty is answered with
//! `RequestLimitExceeded` (EC2) or `RESOURCE_EXHAUSTED` (gRPC), which clients
//! retry with back-off. Buckets idle
//! long enough to be full again are dropped, so the map stays bounded by the
//! number of recently active accounts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per account.
    pub rate: f64,
    /// Largest burst per account.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        // Of the order of EC2's own token buckets; clients polling with
        // waiters (one request / 15 s per waiter) stay far below.
        Self {
            rate: 20.0,
            burst: 100.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by account.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter applying `limit` to every account.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `account` at time `now`; false when none is left.
    pub fn try_acquire_at(&self, account: &str, now: Instant) -> bool {
        let RateLimit { rate, burst } = self.limit;
        // A poisoned lock only means another request panicked mid-update;
        // the map itself is still consistent.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 10_000 {
            let full_after = Duration::from_secs_f64(burst / rate.max(f64::MIN_POSITIVE));
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        let b = buckets.entry(account.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now.max(b.at);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token for `account` now.
    pub fn try_acquire(&self, account: &str) -> bool {
        self.try_acquire_at(account, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_account() {
        let l = RateLimiter::new(RateLimit {
            rate: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.try_acquire_at("a", t0)));
        assert!(!l.try_acquire_at("a", t0));
        // Another account is unaffected.
        assert!(l.try_acquire_at("b", t0));
        // Half a second refills one token at 2/s.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.try_acquire_at("a", t1));
        assert!(!l.try_acquire_at("a", t1));
        // Never more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert!((0..3).all(|_| l.try_acquire_at("a", t2)));
        assert!(!l.try_acquire_at("a", t2));
    }
}
