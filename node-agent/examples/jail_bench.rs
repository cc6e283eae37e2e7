//! Jail benchmark (run by `tests/bench/jail.sh`, not a test): boots the
//! `hello` guest in pairs, once with the VMM jail off (a plain clone + exec
//! in the agent's namespaces, `--no-seccomp`, the VMM opening `/dev/kvm`
//! itself) and once on, exactly as the agent launches it: `jail::prepare`
//! (uid, chown, `/dev/kvm` fd, root plan) then `pidns::spawn` with a new pid
//! namespace and `Jail::enter` in the child (IPC/UTS/network/mount
//! namespaces, pivot_root, rlimits, capabilities, uid, no_new_privs), then
//! the VMM's seccomp filters. Which of the pair goes first alternates.
//!
//! Prints start -> `NUBIS-GUEST-READY` on the console (the VMM's stdout, a
//! pipe) and start -> exit after the guest's reset, per kind, and the median
//! of the paired differences (on - off) with its quartiles and a bootstrap
//! 95% confidence interval.
//!
//! Usage: `jail_bench VMM KERNEL PAIRS` as root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Read as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nubis_agent::config::JailConfig;
use nubis_agent::host::{jail, pidns};

const CMDLINE: &str = "nubis.id=bench nubis.reset=1";

struct Boot {
    ready_ms: f64,
    exit_ms: f64,
}

/// One measured column: its name and how to read it from a boot.
type Field = (&'static str, fn(&Boot) -> f64);

fn boot(vmm: &Path, kernel: &Path, work: &Path, jailed: bool) -> Boot {
    let t0 = Instant::now();
    let mut args: Vec<String> = vec![
        "--kernel".into(),
        kernel.display().to_string(),
        "--memory-mib".into(),
        "64".into(),
        "--cmdline".into(),
        CMDLINE.into(),
    ];
    let prepared = if jailed {
        let dir = work.join("instances").join("i-bench");
        let disk = dir.join("disk.raw");
        let console = dir.join("console.log");
        let cfg = JailConfig {
            enabled: true,
            uid_base: 990_000,
            uid_count: 1,
            max_open_files: 1024,
            pivot_root: true,
        };
        let files = jail::JailFiles {
            state_dir: work,
            instances: &work.join("instances"),
            dir: &dir,
            disk: &disk,
            console: &console,
            metadata: None,
            tap: None,
            extra_taps: Vec::new(),
            console_max_bytes: 1 << 20,
            binary: vmm,
            kernel,
            initrd: None,
        };
        let j = jail::prepare(&cfg, &files).expect("jail::prepare");
        args.extend(["--kvm-fd".into(), j.kvm_fd().to_string()]);
        Some(j)
    } else {
        args.push("--no-seccomp".into());
        None
    };
    let program = pidns::Program::new(vmm, &args).unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let stdio = pidns::Stdio {
        stdin: null(),
        stdout: out_w.into(),
        stderr: null(),
    };
    let pre_exec = || -> std::io::Result<()> {
        if let Some(j) = &prepared {
            j.enter()?;
        }
        Ok(())
    };
    let child = pidns::spawn(&program, &stdio, jailed, &pre_exec).expect("spawn");
    drop(stdio);
    drop(prepared);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut ready = None;
    loop {
        let n = out_r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if ready.is_none() && buf.windows(17).any(|w| w == b"NUBIS-GUEST-READY") {
            ready = Some(t0.elapsed());
        }
    }
    let st = rustix::process::waitid(
        rustix::process::WaitId::PidFd(child.pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    )
    .unwrap()
    .unwrap();
    let end = t0.elapsed();
    assert_eq!(
        st.exit_status(),
        Some(0),
        "jailed={jailed}: {:?}",
        String::from_utf8_lossy(&buf[buf.len().saturating_sub(300)..])
    );
    Boot {
        ready_ms: ready.expect("no NUBIS-GUEST-READY").as_secs_f64() * 1e3,
        exit_ms: end.as_secs_f64() * 1e3,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn sorted(xs: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = xs.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (vmm, kernel, pairs): (PathBuf, PathBuf, usize) = (
        std::fs::canonicalize(&a[1]).unwrap(),
        std::fs::canonicalize(&a[2]).unwrap(),
        a[3].parse().unwrap(),
    );
    let work = tempfile::Builder::new()
        .prefix("nbjail-")
        .tempdir()
        .unwrap();
    let dir = work.path().join("instances").join("i-bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("disk.raw"), b"").unwrap();
    let load0 = load();
    let mut off = Vec::new();
    let mut on = Vec::new();
    for i in 0..pairs {
        for jailed in if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let b = boot(&vmm, &kernel, work.path(), jailed);
            if jailed {
                on.push(b)
            } else {
                off.push(b)
            }
        }
    }
    println!(
        "hello guest, 64 MiB, 1 vCPU, {pairs} pairs (ms: min / median / max); \
         load average {load0} at start, {} at end",
        load()
    );
    println!("{:12} {:>26} {:>26}", "", "ready line", "exit after reset");
    let col = |xs: &[Boot], f: fn(&Boot) -> f64| {
        let s = sorted(xs.iter().map(f));
        format!(
            "{:7.1} /{:7.1} /{:7.1}",
            s[0],
            quantile(&s, 0.5),
            s[s.len() - 1]
        )
    };
    let fields: [Field; 2] = [
        ("ready line", |b| b.ready_ms),
        ("exit after reset", |b| b.exit_ms),
    ];
    for (name, xs) in [("jail off", &off), ("jail on", &on)] {
        println!(
            "{name:12} {:>26} {:>26}",
            col(xs, fields[0].1),
            col(xs, fields[1].1)
        );
    }
    println!("paired differences on - off (ms): median [p25, p75], bootstrap 95% CI of the median");
    for (name, f) in fields {
        let d: Vec<f64> = on.iter().zip(&off).map(|(a, b)| f(a) - f(b)).collect();
        let s = sorted(d.iter().copied());
        let mut meds = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let sample = sorted((0..d.len()).map(|_| d[rand::random_range(0..d.len())]));
            meds.push(quantile(&sample, 0.5));
        }
        let meds = sorted(meds);
        println!(
            "{name:18} {:7.2} [{:6.2}, {:6.2}]   CI {:6.2} .. {:6.2}",
            quantile(&s, 0.5),
            quantile(&s, 0.25),
            quantile(&s, 0.75),
            quantile(&meds, 0.025),
            quantile(&meds, 0.975)
        );
    }
}
