//! Where one launch's time goes: from the start request (an assignment the
//! reconciler turned into `Start`) through each preparation step, the VMM
//! spawn, the VMM reporting its vCPUs running, the guest's first console
//! byte and its ready line. Logged once per boot as the `launch timeline`
//! event (level info), which `tests/bench/launch.sh` reads for its per-phase
//! breakdown:
//!
//! ```text
//! launch timeline instance=i-… assigned_unix_ms=… total_ms=112.4
//!   phases="dir=0.4 image=0.2 disk=0.3 net=0.9 tap=1.1 cgroup=0.5 spawn=3.0 running=4.1 first_byte=2.2 ready=99.7"
//! ```
//!
//! Each phase is the time since the previous mark, in milliseconds, in the
//! order the marks happened (`running` and `first_byte` may swap).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Marks of one launch.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: Instant,
    start_unix_ms: u64,
    marks: Vec<(&'static str, Duration)>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::begin()
    }
}

impl Timeline {
    /// Starts the clock now.
    pub fn begin() -> Timeline {
        Timeline {
            start: Instant::now(),
            start_unix_ms: crate::instance::now_ms(),
            marks: Vec::new(),
        }
    }

    /// Records that `step` ended now (once: a repeated mark is ignored).
    pub fn mark(&mut self, step: &'static str) {
        if !self.has(step) {
            self.marks.push((step, self.start.elapsed()));
        }
    }

    /// Whether `step` was marked.
    pub fn has(&self, step: &str) -> bool {
        self.marks.iter().any(|(s, _)| *s == step)
    }

    /// Wall-clock time of the start.
    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms
    }

    /// Time from the start to the last mark.
    pub fn total(&self) -> Duration {
        self.marks.last().map_or(Duration::ZERO, |(_, d)| *d)
    }

    /// `step=ms` pairs, each the time since the previous mark.
    pub fn phases(&self) -> String {
        let mut out = String::new();
        let mut prev = Duration::ZERO;
        for (step, at) in &self.marks {
            let ms = at.saturating_sub(prev).as_secs_f64() * 1000.0;
            let sep = if out.is_empty() { "" } else { " " };
            let _ = write!(out, "{sep}{step}={ms:.1}");
            prev = *at;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_deltas_in_mark_order_and_marks_are_once() {
        let mut t = Timeline::begin();
        t.mark("a");
        std::thread::sleep(Duration::from_millis(5));
        t.mark("b");
        t.mark("a");
        let p = t.phases();
        let parts: Vec<(&str, f64)> = p
            .split(' ')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k, v.parse().unwrap())
            })
            .collect();
        assert_eq!(parts.len(), 2, "{p}");
        assert_eq!(parts[0].0, "a");
        assert_eq!(parts[1].0, "b");
        assert!(parts[1].1 >= 5.0, "{p}");
        assert!(t.total() >= Duration::from_millis(5));
        assert!(t.has("b") && !t.has("c"));
    }
}
