//! The usage ledger as a pure function: lifecycle events -> per-instance
//! running intervals -> billed seconds inside a time window.
//!
//! Rules (EC2 Linux per-second billing):
//! - only `running` is billed: an interval opens at the event whose new
//!   state is `running` and closes at the next event of the same instance
//!   whose new state is anything else (`stopping`, `shutting-down`,
//!   `terminated`, a rollback);
//! - times are whole seconds: an event at `t` ms counts at `floor(t/1000)`,
//!   so every window, hour and interval boundary is a whole second and the
//!   seconds of adjacent windows add up exactly;
//! - each start bills at least [`MIN_BILLED_SECONDS`]: a closed interval
//!   shorter than that is billed as `[start, start + 60 s)`; an open
//!   (still running) interval is billed up to `now` only (its minimum is
//!   owed when it closes, and only seconds after `now` are added then, so an
//!   hour already exported never changes);
//! - the instance type and zone of an interval are those of its opening
//!   event (a type changes only while stopped).
//!
//! Events are grouped by instance and ordered by the instance's own event
//! sequence, not by time, so replicas' clock skew cannot reorder one
//! instance's changes.

use std::collections::HashMap;

use crate::domain::events::InstanceEvent;
use crate::domain::lifecycle::State;
use crate::ids::{AccountId, InstanceId};

/// The shortest billed run of one start.
pub const MIN_BILLED_SECONDS: i64 = 60;

/// One run of one instance in `running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// Owner.
    pub account: AccountId,
    /// Instance.
    pub instance_id: InstanceId,
    /// Instance type (the SKU).
    pub instance_type: String,
    /// Zone.
    pub availability_zone: String,
    /// Entered `running` (seconds since the epoch).
    pub start_s: i64,
    /// Left `running`; none while it still runs.
    pub end_s: Option<i64>,
}

impl Interval {
    /// The end of the billed span: closed runs are billed at least
    /// [`MIN_BILLED_SECONDS`]; open ones up to `now_s`.
    pub fn billed_end(&self, now_s: i64) -> i64 {
        match self.end_s {
            Some(e) => e.max(self.start_s + MIN_BILLED_SECONDS),
            None => now_s.max(self.start_s),
        }
    }

    /// Billed seconds of this run inside `[from_s, to_s)`.
    pub fn seconds_in(&self, from_s: i64, to_s: i64, now_s: i64) -> i64 {
        let lo = self.start_s.max(from_s);
        let hi = self.billed_end(now_s).min(to_s);
        (hi - lo).max(0)
    }
}

/// Seconds of an event time in ms (floor, also for times before 1970).
pub fn seconds_of(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// The running intervals of `events` (any order, any mix of instances and
/// accounts). `horizon_s`: where the events start (an instance whose first
/// known event leaves `running`, because older events are gone, is taken to
/// have run since then). Intervals come out ordered by instance, then time.
pub fn intervals(events: &[InstanceEvent], horizon_s: i64) -> Vec<Interval> {
    let mut by_instance: HashMap<(&AccountId, &InstanceId), Vec<&InstanceEvent>> = HashMap::new();
    for ev in events {
        by_instance
            .entry((&ev.account, &ev.instance_id))
            .or_default()
            .push(ev);
    }
    let mut keys: Vec<_> = by_instance.keys().copied().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let Some(evs) = by_instance.get_mut(&key) else {
            continue;
        };
        evs.sort_by_key(|e| e.seq);
        let mut open: Option<Interval> = None;
        for (i, ev) in evs.iter().enumerate() {
            let t = seconds_of(ev.time_ms);
            if i == 0 && ev.old_state == Some(State::Running) && ev.new_state != State::Running {
                // Its opening event is older than the horizon.
                out.push(Interval {
                    account: ev.account.clone(),
                    instance_id: ev.instance_id.clone(),
                    instance_type: ev.instance_type.clone(),
                    availability_zone: ev.availability_zone.clone(),
                    start_s: horizon_s.min(t),
                    end_s: Some(t),
                });
                continue;
            }
            match (&mut open, ev.new_state == State::Running) {
                (None, true) => {
                    open = Some(Interval {
                        account: ev.account.clone(),
                        instance_id: ev.instance_id.clone(),
                        instance_type: ev.instance_type.clone(),
                        availability_zone: ev.availability_zone.clone(),
                        start_s: t,
                        end_s: None,
                    });
                }
                (Some(run), false) => {
                    // A clock that lagged cannot end a run before it began.
                    run.end_s = Some(t.max(run.start_s));
                    out.extend(open.take());
                }
                _ => {}
            }
        }
        out.extend(open);
    }
    out
}

/// The whole hours (start second, billed seconds) an interval's billed span
/// covers inside `[from_s, to_s)`, in order; hours with no second are left
/// out.
pub fn hours(iv: &Interval, from_s: i64, to_s: i64, now_s: i64) -> Vec<(i64, i64)> {
    let lo = iv.start_s.max(from_s);
    let hi = iv.billed_end(now_s).min(to_s);
    let mut out = Vec::new();
    let mut h = lo.div_euclid(3600) * 3600;
    while h < hi {
        let s = (h + 3600).min(hi) - h.max(lo);
        if s > 0 {
            out.push((h, s));
        }
        h += 3600;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::events::EventKind;

    fn ev(id: &InstanceId, seq: u64, old: Option<State>, new: State, ms: i64) -> InstanceEvent {
        InstanceEvent {
            account: AccountId::parse("111122223333").unwrap_or_else(|_| AccountId::operator()),
            instance_id: id.clone(),
            seq,
            kind: if seq == 0 {
                EventKind::Created
            } else if new == State::Terminated {
                EventKind::Terminated
            } else {
                EventKind::StateChange
            },
            old_state: old,
            new_state: new,
            instance_type: "t3.micro".into(),
            vcpus: 2,
            memory_mib: 1024,
            availability_zone: "z-a".into(),
            node_id: None,
            time_ms: ms,
            reason: None,
        }
    }

    /// run 61 s, stop, start, run 10 s, terminate (times in ms from `t0`).
    pub(crate) fn issue_sequence(id: &InstanceId, t0: i64) -> Vec<InstanceEvent> {
        use State::*;
        vec![
            ev(id, 0, None, Pending, t0),
            ev(id, 1, Some(Pending), Running, t0 + 2_000),
            ev(id, 2, Some(Running), Stopping, t0 + 63_000),
            ev(id, 3, Some(Stopping), Stopped, t0 + 64_000),
            ev(id, 4, Some(Stopped), Pending, t0 + 70_000),
            ev(id, 5, Some(Pending), Running, t0 + 71_500),
            ev(id, 6, Some(Running), ShuttingDown, t0 + 81_500),
            ev(id, 7, Some(ShuttingDown), Terminated, t0 + 83_000),
        ]
    }

    #[test]
    fn issue_example_bills_61_plus_60_seconds() {
        let id = InstanceId::generate();
        let t0 = 1_780_000_000_000;
        let mut evs = issue_sequence(&id, t0);
        // Order must not matter (clock skew between replicas).
        evs.reverse();
        let ivs = intervals(&evs, 0);
        assert_eq!(ivs.len(), 2);
        assert_eq!(ivs[0].end_s.map(|e| e - ivs[0].start_s), Some(61));
        assert_eq!(ivs[1].end_s.map(|e| e - ivs[1].start_s), Some(10));
        let now = t0 / 1000 + 1_000;
        let total: i64 = ivs.iter().map(|i| i.seconds_in(0, i64::MAX, now)).sum();
        assert_eq!(total, 61 + 60);
    }

    #[test]
    fn open_runs_bill_up_to_now_and_never_more_later_in_the_past() {
        let id = InstanceId::generate();
        let evs = vec![
            ev(&id, 0, None, State::Pending, 1_000_000),
            ev(&id, 1, Some(State::Pending), State::Running, 3_590_000),
        ];
        let ivs = intervals(&evs, 0);
        assert_eq!(ivs.len(), 1);
        assert_eq!(ivs[0].end_s, None);
        // Exported at 3605: hour 0 has 10 s, hour 1 has 5 s so far.
        assert_eq!(hours(&ivs[0], 0, 7200, 3605), vec![(0, 10), (3600, 5)]);
        // It stops at 3605 (15 s run): the minimum fills seconds after now,
        // hour 0 is unchanged.
        let mut more = evs.clone();
        more.push(ev(&id, 2, Some(State::Running), State::Stopping, 3_605_000));
        let ivs = intervals(&more, 0);
        assert_eq!(hours(&ivs[0], 0, 7200, 9999), vec![(0, 10), (3600, 50)]);
    }

    #[test]
    fn hours_split_a_run_exactly() {
        let iv = Interval {
            account: AccountId::operator(),
            instance_id: InstanceId::generate(),
            instance_type: "t3.micro".into(),
            availability_zone: "z".into(),
            start_s: 3000,
            end_s: Some(11_000),
        };
        let h = hours(&iv, 0, 100_000, 100_000);
        assert_eq!(h, vec![(0, 600), (3600, 3600), (7200, 3600), (10_800, 200)]);
        assert_eq!(h.iter().map(|x| x.1).sum::<i64>(), 8000);
        // Windows that cut the run add up to the run.
        let a = iv.seconds_in(0, 5000, 100_000);
        let b = iv.seconds_in(5000, 100_000, 100_000);
        assert_eq!(a + b, 8000);
        assert_eq!(iv.seconds_in(20_000, 30_000, 100_000), 0);
    }

    #[test]
    fn runs_older_than_the_horizon_start_there() {
        let id = InstanceId::generate();
        let evs = vec![ev(&id, 7, Some(State::Running), State::Stopping, 50_000)];
        let ivs = intervals(&evs, 20);
        assert_eq!(ivs.len(), 1);
        assert_eq!((ivs[0].start_s, ivs[0].end_s), (20, Some(50)));
    }

    #[test]
    fn never_running_bills_nothing() {
        let id = InstanceId::generate();
        let evs = vec![
            ev(&id, 0, None, State::Pending, 1_000),
            ev(&id, 1, Some(State::Pending), State::ShuttingDown, 2_000),
            ev(&id, 2, Some(State::ShuttingDown), State::Terminated, 3_000),
        ];
        assert!(intervals(&evs, 0).is_empty());
    }

    /// Property: for random event sequences and random window cuts, the
    /// seconds of the pieces add up to the seconds of the whole, and every
    /// closed run bills at least the minimum.
    #[test]
    fn windows_are_additive_for_random_sequences() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let cycle = [
            State::Pending,
            State::Running,
            State::Stopping,
            State::Stopped,
        ];
        for _ in 0..200 {
            let id = InstanceId::generate();
            let mut t = rng.random_range(0..10_000_000i64);
            let n = rng.random_range(1..20usize);
            let mut evs = Vec::new();
            for seq in 0..n {
                let new = cycle[seq % 4];
                let old = (seq > 0).then(|| cycle[(seq - 1) % 4]);
                evs.push(ev(&id, seq as u64, old, new, t));
                t += rng.random_range(0..200_000i64);
            }
            let now = t / 1000 + rng.random_range(0..100i64);
            let ivs = intervals(&evs, 0);
            let whole: i64 = ivs.iter().map(|i| i.seconds_in(0, i64::MAX, now)).sum();
            let cut = rng.random_range(0..now.max(1));
            let parts: i64 = ivs
                .iter()
                .map(|i| i.seconds_in(0, cut, now) + i.seconds_in(cut, i64::MAX, now))
                .sum();
            assert_eq!(whole, parts);
            let by_hour: i64 = ivs
                .iter()
                .flat_map(|i| hours(i, 0, i64::MAX / 2, now))
                .map(|h| h.1)
                .sum();
            assert_eq!(whole, by_hour);
            for i in ivs.iter().filter(|i| i.end_s.is_some()) {
                assert!(i.seconds_in(0, i64::MAX, now) >= MIN_BILLED_SECONDS);
            }
        }
    }
}
