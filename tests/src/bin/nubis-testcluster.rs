//! `nubis-testcluster`: brings up a whole local Nubis cluster (etcd, a control
//! plane, agents in their own network namespaces) for test suites written in
//! other languages (e.g. the EC2 engineer's python tests), prints its endpoints
//! and credentials as one JSON line, and tears everything down on SIGINT,
//! SIGTERM or SIGHUP (or, with `--until-stdin-eof`, when stdin closes).
//!
//! ```text
//! nubis-testcluster up [--json] [--per-host N] [--lease-ttl SECS] [--no-tenant]
//!                      [--no-ec2] [--ha] [--until-stdin-eof]
//!     --ha: three etcd members and three control-plane replicas
//! nubis-testcluster sweep     # remove leftovers of killed harness processes
//! ```
//!
//! Binaries come from the workspace target directory (`cargo build --workspace
//! --bins` first) or `$NUBIS_BIN_DIR`; images from `$NUBIS_IMAGE_DIR` or
//! `target/images`.

use std::io::Read;

use nubis_tests::cluster::{self, Cluster, ClusterSpec};

const USAGE: &str = "usage: nubis-testcluster up [--json] [--per-host N] [--lease-ttl SECS] \
                     [--no-tenant] [--no-ec2] [--ha] [--until-stdin-eof]\n       nubis-testcluster sweep";

fn usage(msg: &str) -> ! {
    eprintln!("nubis-testcluster: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it and
    // pthread_sigmask only changes this thread's mask (children get a fresh
    // mask from std::process::Command).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        usage("missing command")
    };
    match cmd.as_str() {
        "sweep" => {
            cluster::sys::sweep_leftovers();
            return;
        }
        "up" => {}
        "-h" | "--help" => {
            println!("{USAGE}");
            return;
        }
        other => usage(&format!("unknown command {other:?}")),
    }
    let mut spec = ClusterSpec::three_zones(4);
    let mut json = false;
    let mut until_eof = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> u32 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a number")))
        };
        match a.as_str() {
            "--json" => json = true,
            "--per-host" => {
                let n = num("--per-host");
                spec = ClusterSpec {
                    agents: ClusterSpec::three_zones(n).agents,
                    ..spec
                };
            }
            "--lease-ttl" => {
                let n = num("--lease-ttl");
                if n < 2 {
                    usage("--lease-ttl must be at least 2");
                }
                spec.lease_ttl_seconds = n;
                spec.heartbeat_interval_seconds = (n / 3).max(1);
            }
            "--no-tenant" => spec.create_tenant = false,
            "--no-ec2" => spec.ec2_gateway = false,
            "--ha" => spec = spec.ha(),
            "--until-stdin-eof" => until_eof = true,
            other => usage(&format!("unknown option {other:?}")),
        }
    }
    let missing = cluster::missing_prerequisites();
    if !missing.is_empty() {
        eprintln!(
            "nubis-testcluster: prerequisites missing: {}",
            missing.join("; ")
        );
        std::process::exit(3);
    }
    let set = block_signals();
    let mut c = match Cluster::start(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nubis-testcluster: cluster did not come up: {e}");
            std::process::exit(1);
        }
    };
    let d = c.describe();
    if json {
        println!("{d}");
    } else {
        println!(
            "cluster {} up\n  gRPC:  {}\n  EC2:   {}\n  logs:  {}\n(SIGINT/SIGTERM tears it down)",
            c.id,
            c.grpc_endpoint,
            c.ec2_endpoint,
            c.dir.join("logs").display()
        );
    }
    if until_eof {
        // A thread waits for EOF, then signals the main thread.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            // SAFETY: raising a signal at our own process touches no memory.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
        });
    }
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals; sigwait writes `sig`.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    eprintln!("nubis-testcluster: signal {sig}, tearing down {}", c.id);
    c.teardown();
}
