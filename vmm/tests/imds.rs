//! The instance metadata service inside `nubis-vmm`, seen from the `hello`
//! guest (which fetches an IMDSv2 token, its instance id, user data and
//! public key at boot and prints `NUBIS-IMDS` lines): each VM reads only its
//! own data, 16 KiB of binary user data arrive byte for byte, a disabled
//! endpoint does not answer, the API's `reload_metadata` reaches a running
//! VMM, and the bench mode reports latencies.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl imds-test";

struct Vm {
    child: ChildGuard,
    console: PathBuf,
    api: PathBuf,
    metadata: PathBuf,
    _dir: tempfile::TempDir,
}

fn metadata(id: &str, user_data: Option<&[u8]>, options: Value) -> Value {
    use base64::Engine as _;
    json!({
        "metadata": {
            "instance_id": id, "account_id": "123456789012", "ami_id": "ami-0123456789abcdef0",
            "instance_type": "t3.nano", "hostname": "ip-10-0-0-2.nubis-1.compute.internal",
            "local_ipv4": "10.0.0.2", "mac": "02:00:0a:00:00:02",
            "availability_zone": "nubis-1a", "region": "nubis-1",
            "launch_time": "2026-12-06T05:00:00Z",
            "user_data": user_data.map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            "public_keys": [{"name": "imds-test", "openssh": KEY}]
        },
        "options": options,
    })
}

impl Vm {
    /// Boots hello with one NIC on `ns`'s TAP and the metadata `md`.
    fn start(ns: &NetNs, id: &str, md: &Value, extra_cmdline: &str) -> Option<Vm> {
        if !kvm() {
            return None;
        }
        let kernel = image_dir().join("hello/kernel");
        if !prerequisite(
            kernel.exists(),
            "hello image (deploy/images/build.sh hello)",
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let api = dir.path().join("api.sock");
        let metadata = dir.path().join("metadata.json");
        std::fs::write(&metadata, md.to_string()).unwrap();
        let net = format!("tap={},mac=02:00:0a:00:00:02", ns.tap);
        let cmdline = format!("nubis.id={id} ip=10.0.0.2/24 gw=10.0.0.1 {extra_cmdline}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, vmm_bin()])
            .args(["--kernel", kernel.to_str().unwrap(), "--memory-mib", "64"])
            .args(["--cmdline", &cmdline, "--net", &net])
            .args(["--serial", console.to_str().unwrap()])
            .args(["--api-socket", api.to_str().unwrap()])
            .args(["--metadata-file", metadata.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Some(Vm {
            child: ChildGuard::spawn(cmd),
            console,
            api,
            metadata,
            _dir: dir,
        })
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The first console line starting with `prefix` (waits for it).
    /// The console's complete lines: the VMM writes the serial port's bytes
    /// as the guest sends them, so the last line may still be half written.
    fn complete_lines(&self) -> String {
        let c = self.console();
        let end = c.rfind('\n').map_or(0, |i| i + 1);
        c[..end].to_string()
    }

    fn line(&mut self, prefix: &str) -> String {
        if !wait_for(GUEST_TIMEOUT, || {
            self.complete_lines().lines().any(|l| l.starts_with(prefix))
        }) {
            let _ = self.child.0.kill();
            panic!(
                "no {prefix:?} line; console:\n{}\nstderr:\n{}",
                self.console(),
                self.child.stderr_text()
            );
        }
        self.complete_lines()
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .to_string()
    }

    fn api(&self, op: &str) -> Value {
        api_call(&self.api, op)
    }
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn guest_reads_its_own_metadata_and_16k_user_data_round_trips() {
    let Some(ns) = NetNs::create() else { return };
    let data: Vec<u8> = (0..16 * 1024u32).map(|i| (i * 131 + i / 7) as u8).collect();
    let md = metadata(
        "i-0imdsown",
        Some(&data),
        json!({"http_tokens": "required"}),
    );
    let Some(mut vm) = Vm::start(&ns, "i-0imdsown", &md, "") else {
        return;
    };
    assert_eq!(
        vm.line("NUBIS-IMDS instance-id="),
        "NUBIS-IMDS instance-id=i-0imdsown"
    );
    assert_eq!(
        vm.line("NUBIS-IMDS user-data-bytes="),
        format!(
            "NUBIS-IMDS user-data-bytes=16384 sha256={}",
            hex(&Sha256::digest(&data))
        )
    );
    assert_eq!(
        vm.line("NUBIS-IMDS public-key="),
        format!("NUBIS-IMDS public-key={KEY}")
    );
    // The guest serves what it read: byte for byte over the TAP.
    let out = ns.exec(&["curl", "-sS", "-m", "30", "http://10.0.0.2/user-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, data);
    // Nothing for the metadata address reached the host side of the TAP:
    // from there, 169.254.169.254 does not exist.
    let host = ns.exec(&[
        "curl",
        "-sS",
        "-m",
        "3",
        "http://169.254.169.254/latest/meta-data/",
    ]);
    assert!(
        !host.status.success(),
        "the host side must not reach the service"
    );
    let m = vm.api("metrics");
    let virtio = m["result"]["devices"]["virtio"].as_array().unwrap();
    let net = virtio.iter().find(|d| d["type"] == "net").unwrap();
    assert!(
        net["metrics"]["imds_frames_in"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert!(
        net["metrics"]["imds_frames_out"].as_u64().unwrap() > 0,
        "{m}"
    );
}

#[test]
fn two_instances_each_see_only_their_own_id() {
    let (Some(a_ns), Some(b_ns)) = (NetNs::create(), NetNs::create()) else {
        return;
    };
    let a_md = metadata(
        "i-0aaaaaaaaaaaaaaaa",
        Some(b"#!/bin/sh\necho a\n"),
        json!({}),
    );
    let b_md = metadata("i-0bbbbbbbbbbbbbbbb", None, json!({}));
    let Some(mut a) = Vm::start(&a_ns, "i-0aaaaaaaaaaaaaaaa", &a_md, "") else {
        return;
    };
    let Some(mut b) = Vm::start(&b_ns, "i-0bbbbbbbbbbbbbbbb", &b_md, "") else {
        return;
    };
    assert_eq!(
        a.line("NUBIS-IMDS instance-id="),
        "NUBIS-IMDS instance-id=i-0aaaaaaaaaaaaaaaa"
    );
    assert_eq!(
        b.line("NUBIS-IMDS instance-id="),
        "NUBIS-IMDS instance-id=i-0bbbbbbbbbbbbbbbb"
    );
    assert_eq!(
        b.line("NUBIS-IMDS user-data-bytes="),
        "NUBIS-IMDS user-data-bytes=0"
    );
    assert!(a
        .line("NUBIS-IMDS user-data-bytes=")
        .starts_with("NUBIS-IMDS user-data-bytes=17 "));
    assert!(!a.console().contains("i-0bbbbbbbbbbbbbbbb"));
    assert!(!b.console().contains("i-0aaaaaaaaaaaaaaaa"));
}

#[test]
fn disabled_endpoint_does_not_answer_and_reload_reaches_the_running_vmm() {
    let Some(ns) = NetNs::create() else { return };
    let md = metadata("i-0imdsoff", None, json!({"http_endpoint_enabled": false}));
    let Some(mut vm) = Vm::start(&ns, "i-0imdsoff", &md, "") else {
        return;
    };
    assert_eq!(vm.line("NUBIS-IMDS "), "NUBIS-IMDS unavailable");
    vm.line("NUBIS-GUEST-READY");
    // ModifyInstanceMetadataOptions as the agent delivers it.
    let on = metadata(
        "i-0imdsoff",
        None,
        json!({"http_tokens": "required", "http_put_response_hop_limit": 3}),
    );
    std::fs::write(&vm.metadata, on.to_string()).unwrap();
    let r = vm.api("reload_metadata");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["options"]["http_tokens"], "required", "{r}");
    assert_eq!(
        r["result"]["options"]["http_put_response_hop_limit"], 3,
        "{r}"
    );
    // A broken file is refused and the service keeps its data.
    std::fs::write(&vm.metadata, "{not json").unwrap();
    let r = vm.api("reload_metadata");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["kind"], "bad_request", "{r}");
}

#[test]
fn bench_mode_reports_latencies() {
    let Some(ns) = NetNs::create() else { return };
    let md = metadata("i-0imdsbench", None, json!({}));
    let Some(mut vm) = Vm::start(&ns, "i-0imdsbench", &md, "nubis.imds_bench=200") else {
        return;
    };
    let line = vm.line("NUBIS-IMDS-BENCH ");
    eprintln!("{line}");
    assert!(
        line.starts_with("NUBIS-IMDS-BENCH n=200 failed=0 "),
        "{line}"
    );
}
