//! The rollup store: per instance, three ring files of fixed-size slots, one
//! per resolution (1 min kept 15 days, 5 min kept 63 days, 1 h kept 455
//! days, as CloudWatch). Why files and not an embedded database: see
//! docs/metrics.md.
//!
//! A slot holds the start of its period (seconds since the Unix epoch, 0 =
//! never written) and, for each [`Metric`], the sample count, sum, minimum
//! and maximum of the samples in that period. The slot of period start `t`
//! at resolution `r` is `(t / r) % slots(r)`: a slot whose stored start is
//! not the period asked for is stale (older data wrapped over) and reads as
//! empty. Each sample rewrites the open slot of every resolution with one
//! `pwrite` at a fixed offset, so a crash loses at most the last sample and
//! never corrupts older periods; recording the same sample twice after a
//! restart is not possible because the open aggregates are reloaded from
//! disk and samples older than the open slot's last sample are refused.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

/// The metrics of namespace `AWS/EC2` the agent samples, in slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// vCPU thread CPU time, percent of the instance's vCPUs.
    CpuUtilization,
    /// Bytes received by the guest.
    NetworkIn,
    /// Bytes sent by the guest.
    NetworkOut,
    /// Frames received by the guest.
    NetworkPacketsIn,
    /// Frames sent by the guest.
    NetworkPacketsOut,
    /// Bytes read from disks.
    DiskReadBytes,
    /// Bytes written to disks.
    DiskWriteBytes,
    /// Read requests.
    DiskReadOps,
    /// Write requests.
    DiskWriteOps,
    /// 1 when the VMM did not answer its API, else 0.
    StatusCheckFailed,
}

/// Number of metrics per slot.
pub const METRIC_COUNT: usize = 10;

impl Metric {
    /// Every metric, in slot order.
    pub const ALL: [Metric; METRIC_COUNT] = [
        Metric::CpuUtilization,
        Metric::NetworkIn,
        Metric::NetworkOut,
        Metric::NetworkPacketsIn,
        Metric::NetworkPacketsOut,
        Metric::DiskReadBytes,
        Metric::DiskWriteBytes,
        Metric::DiskReadOps,
        Metric::DiskWriteOps,
        Metric::StatusCheckFailed,
    ];

    /// The CloudWatch name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::CpuUtilization => "CPUUtilization",
            Metric::NetworkIn => "NetworkIn",
            Metric::NetworkOut => "NetworkOut",
            Metric::NetworkPacketsIn => "NetworkPacketsIn",
            Metric::NetworkPacketsOut => "NetworkPacketsOut",
            Metric::DiskReadBytes => "DiskReadBytes",
            Metric::DiskWriteBytes => "DiskWriteBytes",
            Metric::DiskReadOps => "DiskReadOps",
            Metric::DiskWriteOps => "DiskWriteOps",
            Metric::StatusCheckFailed => "StatusCheckFailed",
        }
    }

    /// The metric of a CloudWatch name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A resolution and how long it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// Period width, seconds.
    pub period_s: u64,
    /// Retention, seconds.
    pub retention_s: u64,
}

impl Resolution {
    /// Slots in the ring.
    pub fn slots(self) -> u64 {
        self.retention_s / self.period_s
    }
}

const DAY: u64 = 86_400;

/// The resolutions, finest first.
pub const RESOLUTIONS: [Resolution; 3] = [
    Resolution {
        period_s: 60,
        retention_s: 15 * DAY,
    },
    Resolution {
        period_s: 300,
        retention_s: 63 * DAY,
    },
    Resolution {
        period_s: 3600,
        retention_s: 455 * DAY,
    },
];

/// Count, sum, minimum and maximum of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Number of samples.
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stat {
    /// One sample.
    pub fn of(v: f64) -> Stat {
        Stat {
            count: 1.0,
            sum: v,
            min: v,
            max: v,
        }
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: Stat) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// One sample of every metric at one time (`None`: not measured this time,
/// e.g. the first sample after a VMM start has no deltas yet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When, seconds since the Unix epoch.
    pub at_s: u64,
    /// Values in [`Metric::ALL`] order.
    pub values: [Option<f64>; METRIC_COUNT],
}

/// Slot: period start + last sample time + 4 f64 per metric.
const SLOT_BYTES: usize = 16 + METRIC_COUNT * 32;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    start_s: u64,
    last_sample_s: u64,
    stats: [Option<Stat>; METRIC_COUNT],
}

impl Slot {
    fn empty(start_s: u64) -> Slot {
        Slot {
            start_s,
            last_sample_s: 0,
            stats: [None; METRIC_COUNT],
        }
    }

    fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(&self.start_s.to_le_bytes());
        b[8..16].copy_from_slice(&self.last_sample_s.to_le_bytes());
        for (i, s) in self.stats.iter().enumerate() {
            let o = 16 + i * 32;
            let s = s.unwrap_or(Stat {
                count: 0.0,
                sum: 0.0,
                min: 0.0,
                max: 0.0,
            });
            for (j, v) in [s.count, s.sum, s.min, s.max].into_iter().enumerate() {
                b[o + j * 8..o + j * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    fn decode(b: &[u8]) -> Slot {
        let u = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            a
        };
        let mut slot = Slot::empty(u64::from_le_bytes(u(0)));
        slot.last_sample_s = u64::from_le_bytes(u(8));
        for (i, s) in slot.stats.iter_mut().enumerate() {
            let o = 16 + i * 32;
            let f = |j: usize| f64::from_le_bytes(u(o + j * 8));
            let count = f(0);
            // A count that is not a positive finite number is no data
            // (never written, or a torn or foreign file).
            if count.is_finite() && count > 0.0 {
                *s = Some(Stat {
                    count,
                    sum: f(1),
                    min: f(2),
                    max: f(3),
                });
            }
        }
        slot
    }
}

/// The ring file of one resolution.
#[derive(Debug)]
struct Ring {
    res: Resolution,
    file: File,
    path: PathBuf,
    open: Option<Slot>,
}

impl Ring {
    fn open(dir: &Path, res: Resolution) -> Result<Ring> {
        let path = dir.join(format!("{}s.ring", res.period_s));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        // Sparse: only slots written take disk space.
        file.set_len(res.slots() * SLOT_BYTES as u64)
            .map_err(io_err(&path))?;
        Ok(Ring {
            res,
            file,
            path,
            open: None,
        })
    }

    fn offset(&self, start_s: u64) -> u64 {
        (start_s / self.res.period_s) % self.res.slots() * SLOT_BYTES as u64
    }

    fn read(&self, start_s: u64) -> Result<Option<Slot>> {
        let mut b = [0u8; SLOT_BYTES];
        self.file
            .read_exact_at(&mut b, self.offset(start_s))
            .map_err(io_err(&self.path))?;
        let s = Slot::decode(&b);
        Ok((s.start_s == start_s).then_some(s))
    }

    fn record(&mut self, sample: &Sample) -> Result<()> {
        let start = sample.at_s - sample.at_s % self.res.period_s;
        let mut slot = match self.open {
            Some(s) if s.start_s == start => s,
            _ => self.read(start)?.unwrap_or(Slot::empty(start)),
        };
        if slot.last_sample_s >= sample.at_s && slot.last_sample_s != 0 {
            // Already recorded (or the clock went back): never count twice.
            self.open = Some(slot);
            return Ok(());
        }
        slot.last_sample_s = sample.at_s;
        for (stat, v) in slot.stats.iter_mut().zip(sample.values) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                match stat {
                    Some(s) => s.merge(Stat::of(v)),
                    None => *stat = Some(Stat::of(v)),
                }
            }
        }
        self.file
            .write_all_at(&slot.encode(), self.offset(start))
            .map_err(io_err(&self.path))?;
        self.open = Some(slot);
        Ok(())
    }

    /// Slots with data for `metric` whose period starts in `[from, to)`.
    fn scan(&self, metric: Metric, from: u64, to: u64) -> Result<Vec<(u64, Stat)>> {
        let p = self.res.period_s;
        let mut out = Vec::new();
        let mut t = from.div_ceil(p) * p;
        // A range longer than the ring reads each slot once.
        let first = to.saturating_sub(self.res.retention_s).max(t);
        t = first.div_ceil(p) * p;
        let mut buf = vec![0u8; SLOT_BYTES * 256];
        while t < to {
            let n = ((to - t).div_ceil(p)).min(256);
            // Stay within the file: stop the chunk at the ring's end.
            let idx = (t / p) % self.res.slots();
            let n = n.min(self.res.slots() - idx) as usize;
            let chunk = &mut buf[..n * SLOT_BYTES];
            self.file
                .read_exact_at(chunk, idx * SLOT_BYTES as u64)
                .map_err(io_err(&self.path))?;
            for (k, b) in chunk.chunks_exact(SLOT_BYTES).enumerate() {
                let start = t + k as u64 * p;
                let s = Slot::decode(b);
                if s.start_s == start {
                    if let Some(st) = s.stats[metric.index()] {
                        out.push((start, st));
                    }
                }
            }
            t += n as u64 * p;
        }
        Ok(out)
    }
}

/// The rollups of one instance.
#[derive(Debug)]
pub struct InstanceSeries {
    rings: Vec<Ring>,
}

impl InstanceSeries {
    /// Opens (creating) the ring files in `dir`.
    pub fn open(dir: &Path) -> Result<InstanceSeries> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let rings = RESOLUTIONS
            .iter()
            .map(|r| Ring::open(dir, *r))
            .collect::<Result<Vec<_>>>()?;
        Ok(InstanceSeries { rings })
    }

    /// Adds a sample to every resolution.
    pub fn record(&mut self, sample: &Sample) -> Result<()> {
        for r in &mut self.rings {
            r.record(sample)?;
        }
        Ok(())
    }

    /// Statistics of `metric` in buckets of `period_s` (a multiple of 60)
    /// starting at `from_s`, over `[from_s, to_s)`, as of `now_s`: reads the
    /// finest resolution that divides the period and still holds `from_s`
    /// (else the coarsest that divides it). Returns only buckets with data,
    /// oldest first.
    pub fn query(
        &self,
        metric: Metric,
        from_s: u64,
        to_s: u64,
        period_s: u64,
        now_s: u64,
    ) -> Result<Vec<(u64, Stat)>> {
        if period_s == 0 || to_s <= from_s {
            return Ok(Vec::new());
        }
        let age = now_s.saturating_sub(from_s);
        let dividing = self
            .rings
            .iter()
            .filter(|r| period_s.is_multiple_of(r.res.period_s));
        let ring = dividing
            .clone()
            .find(|r| age <= r.res.retention_s)
            .or_else(|| dividing.clone().next_back());
        let Some(ring) = ring else {
            return Ok(Vec::new());
        };
        let mut buckets: Vec<(u64, Stat)> = Vec::new();
        for (start, st) in ring.scan(metric, from_s, to_s)? {
            let b = from_s + (start - from_s) / period_s * period_s;
            match buckets.last_mut() {
                Some((bs, acc)) if *bs == b => acc.merge(st),
                _ => buckets.push((b, st)),
            }
        }
        Ok(buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: u64, cpu: f64) -> Sample {
        let mut values = [None; METRIC_COUNT];
        values[Metric::CpuUtilization.index()] = Some(cpu);
        values[Metric::NetworkIn.index()] = Some(100.0);
        Sample { at_s, values }
    }

    const T0: u64 = 1_800_000_000; // a multiple of 3600

    #[test]
    fn names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
        assert_eq!(Metric::from_name("cpuutilization"), None);
        assert_eq!(RESOLUTIONS.map(|r| r.slots()), [21_600, 18_144, 10_920]);
    }

    #[test]
    fn rollups_aggregate_per_period_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = InstanceSeries::open(dir.path()).expect("open");
        // 3 minutes of 10-s samples: minute k has cpu = 10*k .. 10*k+5.
        for i in 0..18u64 {
            s.record(&sample(T0 + i * 10, (i / 6 * 10 + i % 6) as f64))
                .expect("record");
        }
        let q = s
            .query(Metric::CpuUtilization, T0, T0 + 180, 60, T0 + 180)
            .expect("query");
        assert_eq!(q.len(), 3);
        for (k, (start, st)) in q.iter().enumerate() {
            let k = k as u64;
            assert_eq!(*start, T0 + 60 * k);
            assert_eq!(st.count, 6.0);
            assert_eq!(st.min, (10 * k) as f64);
            assert_eq!(st.max, (10 * k + 5) as f64);
            assert_eq!(st.sum, (60 * k + 15) as f64);
        }
        // One 180-s bucket = all 18 samples; NetworkIn sums 18 x 100.
        let net = s
            .query(Metric::NetworkIn, T0, T0 + 180, 180, T0 + 180)
            .expect("query");
        assert_eq!(
            net,
            vec![(
                T0,
                Stat {
                    count: 18.0,
                    sum: 1800.0,
                    min: 100.0,
                    max: 100.0
                }
            )]
        );
        // Unmeasured metrics have no data.
        assert!(s
            .query(Metric::DiskReadOps, T0, T0 + 180, 60, T0 + 180)
            .expect("query")
            .is_empty());
        drop(s);
        // Reopen (agent restart): the data is there, a repeated sample is
        // not counted twice, a new one in the open minute is.
        let mut s = InstanceSeries::open(dir.path()).expect("reopen");
        s.record(&sample(T0 + 170, 99.0)).expect("repeat");
        s.record(&sample(T0 + 175, 7.0)).expect("new");
        let q = s
            .query(Metric::CpuUtilization, T0 + 120, T0 + 180, 60, T0 + 180)
            .expect("query");
        assert_eq!(q[0].1.count, 7.0);
        assert_eq!(q[0].1.max, 25.0);
        assert_eq!(q[0].1.min, 7.0);
    }

    #[test]
    fn old_ranges_read_coarser_rollups_and_wrapped_slots_are_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = InstanceSeries::open(dir.path()).expect("open");
        s.record(&sample(T0 + 5, 50.0)).expect("record");
        // 20 days later the 1-min ring no longer covers T0: with a period
        // of 3600 the hourly ring answers.
        let now = T0 + 20 * DAY;
        let q = s
            .query(Metric::CpuUtilization, T0, T0 + 3600, 3600, now)
            .expect("query");
        assert_eq!(q, vec![(T0, Stat::of(50.0))]);
        // Same slot index a full 1-min ring later: stale data is not returned.
        let later = T0 + 15 * DAY;
        s.record(&sample(later + 5, 1.0)).expect("record");
        let q = s
            .query(Metric::CpuUtilization, T0, T0 + 60, 60, T0 + 60)
            .expect("query");
        assert!(q.is_empty(), "{q:?}");
        let q = s
            .query(Metric::CpuUtilization, later, later + 60, 60, later + 60)
            .expect("query");
        assert_eq!(q, vec![(later, Stat::of(1.0))]);
    }

    #[test]
    fn ranges_crossing_the_ring_end_and_bad_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = InstanceSeries::open(dir.path()).expect("open");
        // Pick a start whose 1-min slot index is the ring's last.
        let slots = RESOLUTIONS[0].slots();
        let base = (T0 / 60 / slots + 1) * slots * 60 - 60;
        for i in 0..3 {
            s.record(&sample(base + i * 60, i as f64)).expect("record");
        }
        let q = s
            .query(Metric::CpuUtilization, base, base + 180, 60, base + 180)
            .expect("query");
        assert_eq!(
            q.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![base, base + 60, base + 120]
        );
        assert!(s
            .query(Metric::CpuUtilization, base + 180, base, 60, base)
            .expect("q")
            .is_empty());
        assert!(s
            .query(Metric::CpuUtilization, base, base + 180, 0, base)
            .expect("q")
            .is_empty());
        // A file of garbage decodes as no data rather than failing.
        std::fs::write(dir.path().join("60s.ring"), vec![0xffu8; 4096]).expect("write");
        let s = InstanceSeries::open(dir.path()).expect("reopen");
        assert!(s
            .query(Metric::CpuUtilization, base, base + 180, 60, base + 180)
            .expect("q")
            .is_empty());
    }
}
