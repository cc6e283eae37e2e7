//! Which control-plane endpoint the agent dials next, and how long it waits
//! first. The agent knows every replica (`control_plane` + `control_planes` in
//! its config); any replica serves any agent because all state is in etcd.
//! After a failed connection or an ended session it moves on to the next
//! endpoint at once, and backs off (doubling up to the configured maximum)
//! only once a whole round over the list has failed, so one dead replica costs
//! a reconnect of milliseconds, not a back-off period.

use std::time::Duration;

/// Back-off after the first round in which every endpoint failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Delay between endpoints of the same round.
const NEXT_ENDPOINT: Duration = Duration::from_millis(50);
/// A session that lasted this long counts as healthy: back-off starts over.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// The rotation over the endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    list: Vec<String>,
    current: usize,
    /// Endpoints that failed since the round began.
    failed_in_round: usize,
    backoff: Duration,
    max: Duration,
}

impl Endpoints {
    /// A rotation over `list` (must not be empty: the config validation
    /// guarantees one endpoint) with back-off capped at `max`.
    pub fn new(list: Vec<String>, max: Duration) -> Option<Self> {
        if list.is_empty() {
            return None;
        }
        Some(Self {
            list,
            current: 0,
            failed_in_round: 0,
            backoff: FIRST_BACKOFF,
            max: max.max(FIRST_BACKOFF),
        })
    }

    /// The endpoint to dial now.
    pub fn current(&self) -> &str {
        &self.list[self.current]
    }

    /// All endpoints, in order.
    pub fn all(&self) -> &[String] {
        &self.list
    }

    /// Caps the back-off at `cap` from now on (never below the first
    /// back-off): once registered, the agent retries at least once per
    /// heartbeat interval, so after a control-plane outage it is back within
    /// the grace the new leader gives every node (docs/operations.md).
    pub fn cap_backoff(&mut self, cap: Duration) {
        self.max = self.max.min(cap.max(FIRST_BACKOFF));
        self.backoff = self.backoff.min(self.max);
    }

    /// Records that the session with [`Endpoints::current`] ended after
    /// `lasted`, moves to the next endpoint and returns how long to wait
    /// before dialling it (without jitter).
    pub fn session_ended(&mut self, lasted: Duration) -> Duration {
        if lasted >= HEALTHY_SESSION {
            self.failed_in_round = 0;
            self.backoff = FIRST_BACKOFF;
        }
        self.failed_in_round += 1;
        self.current = (self.current + 1) % self.list.len();
        if self.failed_in_round < self.list.len() {
            return NEXT_ENDPOINT;
        }
        // A whole round failed: back off before the next one.
        self.failed_in_round = 0;
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_capped_at_the_heartbeat_interval_once_known() {
        let mut e = Endpoints::new(vec!["a".into()], Duration::from_secs(30)).expect("one");
        for _ in 0..10 {
            e.session_ended(Duration::ZERO);
        }
        assert_eq!(e.session_ended(Duration::ZERO), Duration::from_secs(30));
        e.cap_backoff(Duration::from_secs(2));
        assert_eq!(e.session_ended(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(e.session_ended(Duration::ZERO), Duration::from_secs(2));
    }

    fn eps(n: usize) -> Endpoints {
        let list = (1..=n).map(|i| format!("unix:///cp{i}.sock")).collect();
        Endpoints::new(list, Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn every_endpoint_is_tried_in_turn_before_backing_off() {
        let mut e = eps(3);
        let quick = Duration::from_millis(10);
        assert_eq!(e.current(), "unix:///cp1.sock");
        assert_eq!(e.session_ended(quick), NEXT_ENDPOINT);
        assert_eq!(e.current(), "unix:///cp2.sock");
        assert_eq!(e.session_ended(quick), NEXT_ENDPOINT);
        assert_eq!(e.current(), "unix:///cp3.sock");
        // The third failure ends the round: back-off, doubling per round.
        assert_eq!(e.session_ended(quick), Duration::from_millis(250));
        assert_eq!(e.current(), "unix:///cp1.sock");
        for _ in 0..2 {
            assert_eq!(e.session_ended(quick), NEXT_ENDPOINT);
        }
        assert_eq!(e.session_ended(quick), Duration::from_millis(500));
        for _ in 0..3 {
            e.session_ended(quick);
        }
        for _ in 0..6 {
            e.session_ended(quick);
        }
        for _ in 0..2 {
            e.session_ended(quick);
        }
        assert_eq!(e.session_ended(quick), Duration::from_secs(2), "capped");
    }

    #[test]
    fn a_healthy_session_moves_on_at_once_and_resets_the_back_off() {
        let mut e = eps(3);
        let quick = Duration::from_millis(10);
        for _ in 0..6 {
            e.session_ended(quick);
        }
        assert_eq!(e.current(), "unix:///cp1.sock");
        // cp1 served for a long time, then died: cp2 is dialled right away.
        assert_eq!(e.session_ended(HEALTHY_SESSION), NEXT_ENDPOINT);
        assert_eq!(e.current(), "unix:///cp2.sock");
        e.session_ended(quick);
        assert_eq!(
            e.session_ended(quick),
            Duration::from_millis(250),
            "back-off starts over after a healthy session"
        );
    }

    #[test]
    fn a_single_endpoint_backs_off_like_before() {
        let mut e = eps(1);
        let quick = Duration::from_millis(10);
        assert_eq!(e.session_ended(quick), Duration::from_millis(250));
        assert_eq!(e.session_ended(quick), Duration::from_millis(500));
        assert_eq!(e.current(), "unix:///cp1.sock");
        assert!(Endpoints::new(Vec::new(), Duration::from_secs(1)).is_none());
    }
}
