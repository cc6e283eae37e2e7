//! Sampling: every [`PERIOD`], for each instance whose VMM runs, the CPU
//! time of the VMM's vCPU threads (`/proc/<pid>/task/<tid>/stat` of the
//! threads named `vcpu<N>`) and the guest I/O counters from the VMM's
//! `metrics` call; deltas against the previous sample of the same VMM
//! process become one [`Sample`] in the instance's rollups. The first sample
//! of a VMM process only sets the baseline (no deltas yet). A VMM that does
//! not answer its API within the timeout records `StatusCheckFailed` = 1.
//! Nothing here trusts the guest: all values are counted by the VMM or the
//! host kernel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nubis_vmm_api::{Action, GuestCounters};

use crate::host::vmm_process::{proc_stat, VmmApi, VmmRecord};
use crate::layout::{read_json, Layout};
use crate::metrics::store::{Metric, Sample, METRIC_COUNT};
use crate::metrics::Metrics;
use crate::types::InstanceId;

/// Sampling period.
pub const PERIOD: Duration = Duration::from_secs(10);

/// CPU time of a process's vCPU threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuTime {
    /// Number of vCPU threads found.
    pub threads: u32,
    /// Their user + system time, clock ticks.
    pub ticks: u64,
}

/// Reads the vCPU threads' CPU time of process `pid` (threads whose name
/// starts with `vcpu`); `None` when the process is gone.
pub fn vcpu_time(pid: i32) -> Option<VcpuTime> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut t = VcpuTime {
        threads: 0,
        ticks: 0,
    };
    for e in rd.flatten() {
        let dir = e.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with("vcpu") {
            continue;
        }
        if let Some(ticks) = thread_ticks(&dir.join("stat")) {
            t.threads += 1;
            t.ticks += ticks;
        }
    }
    Some(t)
}

/// utime + stime (fields 14 and 15) of a `stat` file.
fn thread_ticks(stat: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(stat).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let utime: u64 = f.get(14 - 3)?.parse().ok()?;
    let stime: u64 = f.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

/// What one VMM looked like at one sample.
#[derive(Debug, Clone, Copy)]
struct Reading {
    pid: i32,
    start_time: u64,
    at: Instant,
    cpu: VcpuTime,
    counters: Option<GuestCounters>,
}

/// Turns two readings of the same VMM process into metric values.
fn values(prev: Option<&Reading>, cur: &Reading, ticks_per_s: f64) -> [Option<f64>; METRIC_COUNT] {
    let mut v = [None; METRIC_COUNT];
    let set = |v: &mut [Option<f64>; METRIC_COUNT], m: Metric, x: f64| v[m as usize] = Some(x);
    set(
        &mut v,
        Metric::StatusCheckFailed,
        if cur.counters.is_some() { 0.0 } else { 1.0 },
    );
    let Some(prev) = prev.filter(|p| (p.pid, p.start_time) == (cur.pid, cur.start_time)) else {
        return v;
    };
    let dt = cur.at.duration_since(prev.at).as_secs_f64();
    if dt > 0.0 && cur.cpu.threads > 0 {
        let used = cur.cpu.ticks.saturating_sub(prev.cpu.ticks) as f64 / ticks_per_s;
        let pct = used / dt / f64::from(cur.cpu.threads) * 100.0;
        set(&mut v, Metric::CpuUtilization, pct.clamp(0.0, 100.0));
    }
    if let (Some(a), Some(b)) = (prev.counters, cur.counters) {
        let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
        set(&mut v, Metric::NetworkIn, d(a.net_in_bytes, b.net_in_bytes));
        set(
            &mut v,
            Metric::NetworkOut,
            d(a.net_out_bytes, b.net_out_bytes),
        );
        set(
            &mut v,
            Metric::NetworkPacketsIn,
            d(a.net_in_packets, b.net_in_packets),
        );
        set(
            &mut v,
            Metric::NetworkPacketsOut,
            d(a.net_out_packets, b.net_out_packets),
        );
        set(
            &mut v,
            Metric::DiskReadBytes,
            d(a.disk_read_bytes, b.disk_read_bytes),
        );
        set(
            &mut v,
            Metric::DiskWriteBytes,
            d(a.disk_write_bytes, b.disk_write_bytes),
        );
        set(
            &mut v,
            Metric::DiskReadOps,
            d(a.disk_read_ops, b.disk_read_ops),
        );
        set(
            &mut v,
            Metric::DiskWriteOps,
            d(a.disk_write_ops, b.disk_write_ops),
        );
    }
    v
}

/// The sampling loop's state.
#[derive(Debug)]
pub struct Sampler {
    layout: Layout,
    metrics: Arc<Metrics>,
    prev: HashMap<InstanceId, Reading>,
    ticks_per_s: f64,
}

impl Sampler {
    /// A sampler of the instances in `layout`, recording into `metrics`.
    pub fn new(layout: Layout, metrics: Arc<Metrics>) -> Sampler {
        Sampler {
            layout,
            metrics,
            prev: HashMap::new(),
            ticks_per_s: clock_ticks_per_second(),
        }
    }

    /// Samples every running VMM once; returns how many were sampled.
    pub async fn tick(&mut self) -> usize {
        let started = Instant::now();
        let ids = match self.layout.list() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot list instances");
                return 0;
            }
        };
        let mut calls = tokio::task::JoinSet::new();
        for id in ids {
            let dir = self.layout.instance(&id);
            let Ok(Some(rec)) = read_json::<VmmRecord>(&dir.vmm()) else {
                continue;
            };
            match proc_stat(rec.pid) {
                Some((state, start)) if start == rec.start_time && state != 'Z' => {}
                _ => continue,
            }
            calls.spawn(async move {
                let api = VmmApi::new(rec.api_socket.clone());
                let counters = api
                    .call(Action::Metrics)
                    .await
                    .ok()
                    .map(|m| GuestCounters::from_metrics(&m));
                (id, rec, counters)
            });
        }
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut seen = HashMap::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((id, rec, counters)) = joined else {
                continue;
            };
            let Some(cpu) = vcpu_time(rec.pid) else {
                continue;
            };
            let cur = Reading {
                pid: rec.pid,
                start_time: rec.start_time,
                at: Instant::now(),
                cpu,
                counters,
            };
            let values = values(self.prev.get(&id), &cur, self.ticks_per_s);
            let sample = Sample {
                at_s: now_s,
                values,
            };
            self.metrics.record(&id, &sample, counters);
            seen.insert(id, cur);
        }
        let n = seen.len();
        for gone in self.prev.keys().filter(|k| !seen.contains_key(*k)) {
            self.metrics.forget(gone);
        }
        self.prev = seen;
        self.metrics.observe_tick(started.elapsed(), n);
        n
    }

    /// Samples forever, every [`PERIOD`].
    pub async fn run(mut self) {
        let mut every = tokio::time::interval(PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(pid: i32, at: Instant, ticks: u64, counters: Option<GuestCounters>) -> Reading {
        Reading {
            pid,
            start_time: 7,
            at,
            cpu: VcpuTime { threads: 2, ticks },
            counters,
        }
    }

    #[test]
    fn values_are_deltas_of_the_same_process() {
        let t0 = Instant::now();
        let c0 = GuestCounters {
            net_in_bytes: 100,
            disk_write_ops: 3,
            ..Default::default()
        };
        let c1 = GuestCounters {
            net_in_bytes: 1100,
            disk_write_ops: 5,
            ..Default::default()
        };
        let a = reading(1, t0, 1000, Some(c0));
        // 10 s later, 2 vCPUs used 1500 ticks (15 s at 100 Hz): 75%.
        let b = reading(1, t0 + Duration::from_secs(10), 2500, Some(c1));
        let v = values(Some(&a), &b, 100.0);
        assert_eq!(v[Metric::CpuUtilization as usize], Some(75.0));
        assert_eq!(v[Metric::NetworkIn as usize], Some(1000.0));
        assert_eq!(v[Metric::DiskWriteOps as usize], Some(2.0));
        assert_eq!(v[Metric::StatusCheckFailed as usize], Some(0.0));
        // A restarted VMM (other pid): baseline only.
        let c = reading(2, t0 + Duration::from_secs(20), 10, Some(c1));
        let v = values(Some(&b), &c, 100.0);
        assert_eq!(v[Metric::CpuUtilization as usize], None);
        assert_eq!(v[Metric::NetworkIn as usize], None);
        // No API answer: status check failed, CPU still measured, no I/O.
        let d = reading(2, t0 + Duration::from_secs(30), 10 + 2000, None);
        let v = values(Some(&c), &d, 100.0);
        assert_eq!(v[Metric::StatusCheckFailed as usize], Some(1.0));
        assert_eq!(v[Metric::CpuUtilization as usize], Some(100.0));
        assert_eq!(v[Metric::NetworkIn as usize], None);
    }

    #[test]
    fn vcpu_time_reads_named_threads() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                let t = Instant::now();
                while !s.load(std::sync::atomic::Ordering::Relaxed)
                    && t.elapsed() < Duration::from_secs(5)
                {
                    std::hint::spin_loop();
                }
            })
            .expect("spawn");
        // The spinning thread's CPU time grows (however loaded the machine).
        let me = std::process::id() as i32;
        let first = vcpu_time(me).expect("own process");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut t = first;
        while t.ticks < first.ticks + 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            t = vcpu_time(me).expect("own process");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().expect("join");
        assert_eq!(t.threads, 1);
        assert!(
            t.ticks >= first.ticks + 5,
            "a spinning thread's ticks: {first:?} -> {t:?}"
        );
        assert_eq!(vcpu_time(i32::MAX), None);
    }
}
