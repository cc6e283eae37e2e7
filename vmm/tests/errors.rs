//! Every bad input named by the command-line contract ends `nubis-vmm` with
//! a clear message and its own exit status, without a panic.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;
use support::*;

fn run(args: &[&str]) -> Output {
    vmm_cmd(args).output().unwrap()
}

fn assert_exit(args: &[&str], code: i32, needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "args {args:?}, stderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "args {args:?}: stderr lacks {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn good_kernel(dir: &std::path::Path) -> String {
    let path = dir.join("kernel");
    let mut asm = Asm::new();
    asm.print("x\n").reset();
    write_elf(&path, &asm.code, true);
    path.to_str().unwrap().to_string()
}

#[test]
fn help_documents_every_flag() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--vcpus",
        "--memory-mib",
        "--disk",
        "--net",
        "--serial",
        "--serial-max-bytes",
        "--api-socket",
        "--config",
        "--exit-status-file",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(text.contains("Exit status"));
}

#[test]
fn bad_usage_is_status_2() {
    assert_exit(&["--bogus"], 2, "unexpected argument");
    assert_exit(&[], 2, "--kernel");
    assert_exit(&["--kernel", "/k", "--vcpus", "0"], 2, "vcpus 0");
    assert_exit(&["--kernel", "/k", "--vcpus", "many"], 2, "invalid value");
    assert_exit(&["--kernel", "/k", "--disk", "/d,rw"], 2, "unknown option");
    assert_exit(&["--kernel", "/k", "--net", "tap=x,mac=zz"], 2, "mac");
    assert_exit(
        &["--kernel", "/k", "--serial-max-bytes", "4096"],
        2,
        "serial file path",
    );
}

#[test]
fn bad_config_file_is_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vm.json");
    std::fs::write(&cfg, r#"{"kernel": "/k", "vcpu": 2}"#).unwrap();
    assert_exit(&["--config", cfg.to_str().unwrap()], 2, "unknown field");
    std::fs::write(&cfg, "not json").unwrap();
    assert_exit(
        &["--config", cfg.to_str().unwrap()],
        2,
        "cannot parse config",
    );
    assert_exit(&["--config", "/no/such/file.json"], 2, "cannot read config");
    assert_exit(
        &["--config", cfg.to_str().unwrap(), "--kernel", "/k"],
        2,
        "cannot be used with",
    );
}

#[test]
fn kernel_missing_or_malformed_is_status_3() {
    let dir = tempfile::tempdir().unwrap();
    assert_exit(&["--kernel", "/no/such/vmlinux"], 3, "cannot read kernel");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x55u8; 8192]).unwrap();
    assert_exit(
        &["--kernel", junk.to_str().unwrap()],
        3,
        "not an ELF vmlinux or a bzImage",
    );
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, b"\x7fELF\x02\x01\x01").unwrap();
    assert_exit(
        &["--kernel", truncated.to_str().unwrap()],
        3,
        "cannot load kernel",
    );
}

#[test]
fn initrd_missing_or_too_large_is_status_4() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    assert_exit(
        &["--kernel", &kernel, "--initrd", "/no/such/initrd"],
        4,
        "cannot read initrd",
    );
    let big = dir.path().join("big.cpio");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap(); // sparse: 64 MiB initrd, 32 MiB guest
    assert_exit(
        &[
            "--kernel",
            &kernel,
            "--memory-mib",
            "32",
            "--initrd",
            big.to_str().unwrap(),
        ],
        4,
        "does not fit",
    );
}

#[test]
fn memory_out_of_range_is_status_5() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    assert_exit(
        &["--kernel", &kernel, "--memory-mib", "4"],
        5,
        "outside the supported range",
    );
    assert_exit(
        &["--kernel", &kernel, "--memory-mib", "100000000"],
        5,
        "outside the supported range",
    );
    // A kernel whose segment ends beyond guest memory.
    let huge = dir.path().join("huge");
    let mut asm = Asm::new();
    asm.spin();
    asm.code.resize(20 << 20, 0x90);
    write_elf(&huge, &asm.code, true);
    assert_exit(
        &["--kernel", huge.to_str().unwrap(), "--memory-mib", "16"],
        5,
        "kernel needs guest memory",
    );
}

#[test]
fn unusable_disk_is_status_7() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    assert_exit(
        &["--kernel", &kernel, "--disk", "/no/such/disk.img"],
        7,
        "disk0",
    );
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    assert_exit(
        &["--kernel", &kernel, "--disk", empty.to_str().unwrap()],
        7,
        "disk0",
    );
}

#[test]
fn api_socket_problem_is_status_9() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    let sock = dir.path().join("missing-dir/api.sock");
    assert_exit(
        &["--kernel", &kernel, "--api-socket", sock.to_str().unwrap()],
        9,
        "cannot serve API socket",
    );
}

#[test]
fn missing_tap_is_status_6() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    assert_exit(
        &["--kernel", &kernel, "--net", "tap=nbvmm-absent0"],
        6,
        "does not exist",
    );
}

#[test]
fn kvm_unavailable_is_status_8() {
    // Hide /dev/kvm behind /dev/null in a private mount namespace.
    let have_unshare = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !prerequisite(have_unshare, "unshare --mount (root)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = good_kernel(dir.path());
    // Without /dev/kvm at all the VMM must fail the same way.
    let hide = if std::path::Path::new("/dev/kvm").exists() {
        "mount --bind /dev/null /dev/kvm && "
    } else {
        ""
    };
    let script = format!("{hide}exec {} --kernel {kernel}", vmm_bin());
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("KVM"), "{stderr}");
}
