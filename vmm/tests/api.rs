//! The API socket end to end with a hand-made guest that prints a dot
//! every few tens of milliseconds: describe, pause (output stops), resume
//! (output continues), typed rejections by state, metrics, Ctrl-Alt-Del
//! reaching the guest's keyboard controller, stop and SIGTERM ending the
//! VMM with status 0.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::*;

struct Vm {
    child: ChildGuard,
    socket: PathBuf,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(code: &[u8], extra: &[&str]) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    write_elf(&kernel, code, true);
    let socket = dir.path().join("api.sock");
    let console = dir.path().join("console.log");
    let mut args = vec![
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory-mib",
        "32",
        "--api-socket",
        socket.to_str().unwrap(),
        "--serial",
        console.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = vmm_cmd(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = ChildGuard::spawn(cmd);
    assert!(
        wait_for(GUEST_TIMEOUT, || socket.exists()),
        "API socket never appeared"
    );
    Vm {
        child,
        socket,
        console,
        _dir: dir,
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(GUEST_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn call(&mut self, op: &str) -> Value {
        writeln!(self.writer, "{{\"op\":\"{op}\"}}").unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad response {line:?}: {e}"))
    }

    fn ok(&mut self, op: &str) -> Value {
        let v = self.call(op);
        assert_eq!(v["ok"], true, "{op}: {v}");
        v["result"].clone()
    }

    fn rejected(&mut self, op: &str, kind: &str) {
        let v = self.call(op);
        assert_eq!(v["ok"], false, "{op}: {v}");
        assert_eq!(v["error"]["kind"], kind, "{op}: {v}");
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Prints '.' forever, about every 2^26 TSC cycles.
fn dots() -> Vec<u8> {
    let mut asm = Asm::new();
    asm.print("start\n");
    let top = asm.here();
    asm.mov_dx(0x3f8).mov_al(b'.').out_dx_al().tsc_delay();
    asm.jump_back(0xeb, top);
    asm.code
}

#[test]
fn pause_resume_describe_metrics_and_stop() {
    if !kvm() {
        return;
    }
    let mut vm = start(&dots(), &["--vcpus", "2"]);
    let mut api = Client::connect(&vm.socket);
    assert!(wait_for(GUEST_TIMEOUT, || size(&vm.console) > 10));

    let d = api.ok("describe");
    assert_eq!(d["state"], "running");
    assert_eq!(d["pid"], vm.child.pid());
    assert_eq!(d["vcpus_started"], true);
    assert_eq!(d["config"]["vcpus"], 2);
    assert_eq!(d["config"]["memory_mib"], 32);
    assert!(d["started_at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    api.rejected("resume", "invalid_state");

    api.ok("pause");
    assert_eq!(api.ok("describe")["state"], "paused");
    let paused_at = size(&vm.console);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(size(&vm.console), paused_at, "guest ran while paused");
    api.rejected("pause", "invalid_state");
    api.rejected("ctrl_alt_del", "invalid_state");

    api.ok("resume");
    assert_eq!(api.ok("describe")["state"], "running");
    assert!(
        wait_for(GUEST_TIMEOUT, || size(&vm.console) > paused_at + 3),
        "guest did not continue after resume"
    );

    let m = api.ok("metrics");
    assert!(m["exits_total"]["io_out"].as_u64().unwrap() > 5, "{m}");
    assert!(
        m["devices"]["serial"]["tx_bytes"].as_u64().unwrap() > 5,
        "{m}"
    );
    assert_eq!(m["vcpus"].as_array().unwrap().len(), 2);
    assert_eq!(m["vcpus"][1]["exits"]["io_out"], 0, "AP never started: {m}");

    let v = api.call("{bad json");
    assert_eq!(v["ok"], false);

    api.ok("stop");
    let status = vm.child.wait_timeout(GUEST_TIMEOUT).expect("no exit");
    assert_eq!(status.code(), Some(0), "{}", vm.child.stderr_text());
    assert!(!vm.socket.exists(), "socket left behind");
}

#[test]
fn sigterm_is_a_graceful_stop() {
    if !kvm() {
        return;
    }
    let mut vm = start(&dots(), &[]);
    assert!(wait_for(GUEST_TIMEOUT, || size(&vm.console) > 8));
    vm.child.signal(libc::SIGTERM);
    let status = vm.child.wait_timeout(GUEST_TIMEOUT).expect("no exit");
    assert_eq!(status.code(), Some(0));
    assert!(vm.child.stderr_text().contains("signal received"));
}

#[test]
fn ctrl_alt_del_reaches_the_guest_keyboard() {
    if !kvm() {
        return;
    }
    // Poll the i8042 for bytes; on the Del make code (set 1: 0x53) print
    // "CAD" and reset.
    let mut asm = Asm::new();
    asm.print("READY\n");
    let poll = asm.here();
    asm.in_al_imm(0x64).bytes(&[0xa8, 0x01]); // test al, 1
    asm.jump_back(0x74, poll); // jz poll
    asm.in_al_imm(0x60).bytes(&[0x3c, 0x53]); // cmp al, 0x53
    asm.jump_back(0x75, poll); // jne poll
    asm.print("CAD\n").reset();
    let mut vm = start(&asm.code, &[]);
    assert!(wait_for(GUEST_TIMEOUT, || size(&vm.console) >= 6));
    let mut api = Client::connect(&vm.socket);
    api.ok("ctrl_alt_del");
    let status = vm.child.wait_timeout(GUEST_TIMEOUT).expect("no exit");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&vm.console).unwrap(),
        "READY\nCAD\n"
    );
}
