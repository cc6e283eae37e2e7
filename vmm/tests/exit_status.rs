//! `--exit-status-file`: every exit whose path is known leaves a whole JSON
//! record with the process's exit status: usage and configuration errors, a
//! guest reset (the `hello` guest), a graceful SIGTERM stop, and a fatal
//! signal (after which the process still dies of that signal, or, as a pid
//! namespace's init, exits 128 + signal with the signal in its record).

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use support::*;

fn read_record(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no exit-status record at {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["unix_ms"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
    assert!(v["pid"].as_u64().unwrap() > 0, "{v}");
    assert!(v["reason"].is_string(), "{v}");
    v
}

/// Runs the VMM to completion; returns its exit status and the record.
fn run_with_record(args: &[&str], status: &Path) -> (i32, Value) {
    let mut all: Vec<&str> = args.to_vec();
    let status_arg = status.to_str().unwrap();
    all.extend(["--exit-status-file", status_arg]);
    let out = vmm_cmd(&all).output().unwrap();
    let code = out.status.code().unwrap();
    (code, read_record(status))
}

#[test]
fn usage_and_config_errors_leave_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("exit.json");
    // Rejected by the argument parser itself.
    let (code, v) = run_with_record(&["--bogus"], &status);
    assert_eq!((code, v["exit_code"].as_i64()), (2, Some(2)), "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("usage"), "{v}");
    // Parsed, then rejected by validation.
    std::fs::remove_file(&status).unwrap();
    let (code, v) = run_with_record(&["--kernel", "/k", "--vcpus", "0"], &status);
    assert_eq!((code, v["exit_code"].as_i64()), (2, Some(2)), "{v}");
    assert!(v["reason"].as_str().unwrap().contains("vcpus 0"), "{v}");
    // Other statuses are recorded as they are (3: kernel missing).
    let (code, v) = run_with_record(&["--kernel", "/no/such/vmlinux"], &status);
    assert_eq!((code, v["exit_code"].as_i64()), (3, Some(3)), "{v}");
    assert!(!dir.path().join(".exit.json.tmp").exists());
}

#[test]
fn config_file_field_is_used_even_when_the_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("exit.json");
    let cfg = dir.path().join("vm.json");
    let body = serde_json::json!({
        "kernel": "/k",
        "vcpus": 0,
        "exit_status_file": status,
    });
    std::fs::write(&cfg, body.to_string()).unwrap();
    let out = vmm_cmd(&["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v = read_record(&status);
    assert_eq!(v["exit_code"], 2, "{v}");
    // The flag overrides the file's field.
    let other = dir.path().join("other.json");
    let out = vmm_cmd(&[
        "--config",
        cfg.to_str().unwrap(),
        "--exit-status-file",
        other.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(read_record(&other)["exit_code"], 2);
}

fn hello_kernel() -> Option<PathBuf> {
    let k = image_dir().join("hello/kernel");
    prerequisite(
        k.exists(),
        &format!("{} (deploy/images/build.sh hello)", k.display()),
    )
    .then_some(k)
}

#[test]
fn guest_reset_leaves_status_0() {
    if !kvm() {
        return;
    }
    let Some(kernel) = hello_kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("exit.json");
    let console = dir.path().join("console.log");
    let mut cmd = vmm_cmd(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory-mib",
        "64",
        "--cmdline",
        "nubis.id=i-exit nubis.reset=1",
        "--serial",
        console.to_str().unwrap(),
        "--exit-status-file",
        status.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut vm = ChildGuard::spawn(cmd);
    let st = vm.wait_timeout(GUEST_TIMEOUT).expect("VMM did not exit");
    assert_eq!(st.code(), Some(0), "{}", vm.stderr_text());
    let v = read_record(&status);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["reason"], "guest reset", "{v}");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(vm.0.id())), "{v}");
    assert!(v.get("signal").is_none(), "{v}");
}

/// A hand-made guest that prints a line and spins.
fn spinning_vm(dir: &Path, status: &Path) -> ChildGuard {
    spinning_vm_via(dir, status, &[], &[])
}

/// [`spinning_vm`] started by `wrapper` (a command prefix) with `extra`
/// arguments.
fn spinning_vm_via(dir: &Path, status: &Path, wrapper: &[&str], extra: &[&str]) -> ChildGuard {
    let kernel = dir.join("kernel");
    let mut asm = Asm::new();
    asm.print("up\n").spin();
    write_elf(&kernel, &asm.code, true);
    let console = dir.join("console.log");
    // The previous VM's console must not count as this one's.
    let _ = std::fs::remove_file(&console);
    let mut cmd = vmm_cmd(&[
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory-mib",
        "32",
        "--serial",
        console.to_str().unwrap(),
        "--exit-status-file",
        status.to_str().unwrap(),
    ]);
    if !wrapper.is_empty() {
        let vmm: Vec<_> = std::iter::once(cmd.get_program().to_owned())
            .chain(cmd.get_args().map(ToOwned::to_owned))
            .collect();
        cmd = std::process::Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).args(vmm).stdin(Stdio::null());
    }
    cmd.args(extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let vm = ChildGuard::spawn(cmd);
    let up = wait_for(GUEST_TIMEOUT, || {
        std::fs::read_to_string(&console).is_ok_and(|c| c.contains("up\n"))
    });
    assert!(up, "guest did not start");
    vm
}

#[test]
fn sigterm_leaves_status_0_and_fatal_signal_its_number() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("exit.json");

    let mut vm = spinning_vm(dir.path(), &status);
    vm.signal(libc::SIGTERM);
    let st = vm.wait_timeout(GUEST_TIMEOUT).expect("VMM did not stop");
    assert_eq!(st.code(), Some(0));
    let v = read_record(&status);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["reason"], "stopped by signal 15", "{v}");

    // SIGHUP is fatal (not a graceful stop): recorded, then the process
    // still dies of it.
    std::fs::remove_file(&status).unwrap();
    let mut vm = spinning_vm(dir.path(), &status);
    vm.signal(libc::SIGHUP);
    let st = vm.wait_timeout(GUEST_TIMEOUT).expect("VMM did not die");
    assert_eq!(st.signal(), Some(libc::SIGHUP), "{st:?}");
    let v = read_record(&status);
    assert_eq!(v["exit_code"], 128 + libc::SIGHUP, "{v}");
    assert_eq!(v["signal"], libc::SIGHUP, "{v}");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(vm.0.id())), "{v}");

    // SIGKILL cannot be caught: no record is left.
    std::fs::remove_file(&status).unwrap();
    let mut vm = spinning_vm(dir.path(), &status);
    vm.signal(libc::SIGKILL);
    vm.wait_timeout(GUEST_TIMEOUT).expect("VMM did not die");
    assert!(!status.exists());
}

/// The only child of process `pid`.
fn only_child(pid: i32) -> i32 {
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let kids: Vec<i32> = kids
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    kids[0]
}

/// As its pid namespace's init (how the agent starts it), the VMM ignores
/// the default action of a signal sent with `kill`: its handler writes the
/// record (with the nonce) and ends the process with 128 + signal, also for
/// SIGSEGV and SIGSYS, which a fault or the seccomp filter would raise.
#[test]
fn as_pid_1_a_fatal_signal_exits_128_plus_it_and_records_it() {
    if !kvm() || !prerequisite(is_root(), "root (a pid namespace)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("exit.json");
    for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGSYS, libc::SIGHUP] {
        let _ = std::fs::remove_file(&status);
        // `unshare --fork` relays its child's exit status.
        let mut vm = spinning_vm_via(
            dir.path(),
            &status,
            &["unshare", "--pid", "--fork", "--kill-child"],
            &["--exit-status-nonce", "n-0123_abc"],
        );
        let vmm = only_child(vm.pid());
        let ns = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
        assert!(
            ns.lines()
                .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
            "{ns}"
        );
        // SAFETY: plain kill(2) on the VMM this test started.
        unsafe { libc::kill(vmm, sig) };
        let st = vm.wait_timeout(GUEST_TIMEOUT).expect("VMM did not end");
        assert_eq!(st.code(), Some(128 + sig), "signal {sig}: {st:?}");
        let v = read_record(&status);
        assert_eq!(v["signal"], sig, "{v}");
        assert_eq!(v["exit_code"], 128 + sig, "{v}");
        assert_eq!(v["pid"], 1, "{v}");
        assert_eq!(v["nonce"], "n-0123_abc", "{v}");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
