//! Boots the `hello` test guest (target/images/hello/kernel, a PVH ELF)
//! through the real `nubis-vmm` binary: ready line and reset, two vCPUs,
//! disk checksum and a write verified on the host, ping and HTTP from a TAP
//! in a network namespace the test creates, and control over the API.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

fn hello_kernel() -> Option<PathBuf> {
    let k = image_dir().join("hello/kernel");
    prerequisite(
        k.exists(),
        &format!("{} (deploy/images/build.sh hello)", k.display()),
    )
    .then_some(k)
}

struct Hello {
    child: ChildGuard,
    console: PathBuf,
    dir: tempfile::TempDir,
}

impl Hello {
    fn start(cmdline: &str, extra: &[&str], netns: Option<&str>) -> Option<Hello> {
        if !kvm() {
            return None;
        }
        let kernel = hello_kernel()?;
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let mut args: Vec<String> = vec![
            "--kernel".into(),
            kernel.to_str().unwrap().into(),
            "--memory-mib".into(),
            "64".into(),
            "--cmdline".into(),
            cmdline.into(),
            "--serial".into(),
            console.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, vmm_bin()]).args(&args);
                c
            }
            None => {
                let mut c = Command::new(vmm_bin());
                c.args(&args);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Some(Hello {
            child: ChildGuard::spawn(cmd),
            console,
            dir,
        })
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn wait_line(&mut self, prefix: &str) -> String {
        let found = wait_for(GUEST_TIMEOUT, || {
            self.console().lines().any(|l| l.starts_with(prefix))
        });
        if !found {
            let _ = self.child.0.kill();
            panic!(
                "no {prefix:?} line; console:\n{}\nstderr:\n{}",
                self.console(),
                self.child.stderr_text()
            );
        }
        self.console()
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .to_string()
    }

    fn exit_code(&mut self) -> i32 {
        let status = self.child.wait_timeout(GUEST_TIMEOUT);
        let status = status
            .unwrap_or_else(|| panic!("nubis-vmm did not exit; console:\n{}", self.console()));
        status.code().unwrap_or(-1)
    }
}

#[test]
fn ready_line_then_reset_exits_0() {
    let Some(mut vm) = Hello::start("nubis.id=i-ready nubis.reset=1", &[], None) else {
        return;
    };
    assert_eq!(vm.exit_code(), 0, "{}", vm.child.stderr_text());
    let console = vm.console();
    assert!(console.contains("NUBIS-CPUS 1\n"), "{console}");
    assert!(console.contains("NUBIS-GUEST-READY i-ready\n"), "{console}");
    assert!(console.contains("NUBIS-RESET\n"), "{console}");
}

#[test]
fn two_vcpus_are_in_the_mp_table() {
    let Some(mut vm) = Hello::start("nubis.id=i-smp nubis.reset=1", &["--vcpus", "2"], None) else {
        return;
    };
    assert_eq!(vm.exit_code(), 0, "{}", vm.child.stderr_text());
    assert!(vm.console().contains("NUBIS-CPUS 2\n"), "{}", vm.console());
}

#[test]
fn disk_checksum_and_host_verified_write() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let mut image: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 512) as u8).collect();
    image[..16].copy_from_slice(b"nubis disk test\n");
    std::fs::write(&disk, &image).unwrap();
    let sector0 = hex(&Sha256::digest(&image[..512]));
    let disk_arg = format!("{},id=data", disk.display());
    let Some(mut vm) = Hello::start(
        "nubis.id=i-disk nubis.disk_write=1 nubis.reset=1",
        &["--disk", &disk_arg],
        None,
    ) else {
        return;
    };
    assert_eq!(vm.exit_code(), 0, "{}", vm.child.stderr_text());
    let console = vm.console();
    let want = format!("NUBIS-DISK sector0-sha256={sector0} capacity-sectors=2048\n");
    assert!(console.contains(&want), "want {want:?} in:\n{console}");
    assert!(
        console.contains("NUBIS-DISK-WRITTEN sector=1\n"),
        "{console}"
    );
    let after = std::fs::read(&disk).unwrap();
    let mut expected = b"NUBIS-DISK-WRITE i-disk\n".to_vec();
    expected.resize(512, 0);
    assert_eq!(&after[512..1024], &expected[..]);
    assert_eq!(&after[..512], &image[..512], "sector 0 changed");
    assert_eq!(&after[1024..], &image[1024..], "other sectors changed");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn ping_and_http_from_a_tap_in_a_namespace() {
    if !kvm() || hello_kernel().is_none() {
        return;
    }
    let Some(ns) = NetNs::create() else {
        return;
    };
    let net = format!("tap={},mac=02:00:0a:00:00:02", ns.tap);
    let Some(mut vm) = Hello::start(
        "nubis.id=i-net ip=10.0.0.2/24 gw=10.0.0.1",
        &["--net", &net],
        Some(&ns.name),
    ) else {
        return;
    };
    let line = vm.wait_line("NUBIS-NET ");
    assert!(line.starts_with("NUBIS-NET ip=10.0.0.2/24"), "{line}");
    vm.wait_line("NUBIS-GUEST-READY i-net");
    let ping = ns.exec(&["ping", "-c", "3", "-W", "10", "10.0.0.2"]);
    assert!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let curl = ns.exec(&["curl", "-sS", "-m", "30", "http://10.0.0.2/"]);
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "NUBIS-HELLO i-net\n",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let reset = ns.exec(&["curl", "-sS", "-m", "30", "http://10.0.0.2/reset"]);
    assert!(reset.status.success());
    assert_eq!(vm.exit_code(), 0);
}

fn api_call(sock: &Path, op: &str) -> Value {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(GUEST_TIMEOUT)).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "{{\"op\":\"{op}\"}}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn pause_resume_and_ctrl_alt_del_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let Some(mut vm) = Hello::start(
        "nubis.id=i-api",
        &["--api-socket", sock.to_str().unwrap(), "--vcpus", "2"],
        None,
    ) else {
        return;
    };
    vm.wait_line("NUBIS-GUEST-READY i-api");
    assert_eq!(api_call(&sock, "pause")["ok"], true);
    assert_eq!(api_call(&sock, "describe")["result"]["state"], "paused");
    assert_eq!(api_call(&sock, "resume")["ok"], true);
    assert_eq!(api_call(&sock, "describe")["result"]["state"], "running");
    let m = api_call(&sock, "metrics");
    assert!(
        m["result"]["devices"]["serial"]["tx_bytes"]
            .as_u64()
            .unwrap()
            > 20,
        "{m}"
    );
    // The guest answers Ctrl-Alt-Del by resetting, which ends the VM with 0.
    assert_eq!(api_call(&sock, "ctrl_alt_del")["ok"], true);
    vm.wait_line("NUBIS-CTRL-ALT-DEL");
    assert_eq!(vm.exit_code(), 0);
    assert!(vm.console().contains("NUBIS-RESET\n"));
    drop(vm.dir);
}
