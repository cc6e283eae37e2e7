//! Boots hand-assembled guests through the real `nubis-vmm` binary: serial
//! output, both entry protocols, i8042 reset and triple fault ending the VM
//! with status 0, unknown port/MMIO accesses contained, console log cap.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use support::*;

fn run_guest(code: &[u8], pvh: bool, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    write_elf(&kernel, code, pvh);
    let mut args = vec!["--kernel", kernel.to_str().unwrap(), "--memory-mib", "32"];
    args.extend_from_slice(extra);
    let mut cmd = vmm_cmd(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut v).unwrap();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut v).unwrap();
        v
    });
    let status = child.wait_timeout(GUEST_TIMEOUT);
    drop(child);
    let (out, err) = (o.join().unwrap(), e.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("nubis-vmm did not exit in time; stderr: {err}"));
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn pvh_guest_prints_and_resets_with_status_0() {
    if !kvm() {
        return;
    }
    let mut asm = Asm::new();
    asm.print("NUBIS-TEST-HELLO pvh\n").reset();
    let (code, out, err) = run_guest(&asm.code, true, &[]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "NUBIS-TEST-HELLO pvh\n");
    assert!(err.contains("i8042"), "{err}");
}

#[test]
fn linux64_entry_guest_prints_and_resets_with_status_0() {
    if !kvm() {
        return;
    }
    let mut asm = Asm::new();
    asm.print("long mode\n").reset();
    let (code, out, err) = run_guest(&asm.code, false, &["--vcpus", "2"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "long mode\n");
    assert!(err.contains("Linux64"), "{err}");
}

#[test]
fn triple_fault_ends_the_vm_with_status_0() {
    if !kvm() {
        return;
    }
    let mut asm = Asm::new();
    // ud2 with no IDT: #UD -> #GP -> #DF -> triple fault.
    asm.print("before\n").bytes(&[0x0f, 0x0b]).spin();
    let (code, out, err) = run_guest(&asm.code, true, &[]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "before\n");
}

#[test]
fn unknown_port_and_mmio_accesses_are_contained() {
    if !kvm() {
        return;
    }
    let mut asm = Asm::new();
    asm.mov_dx(0x1234).in_al_dx().out_dx_al();
    // mov eax, [0xe0000000]; mov [0xe0000004], eax (32-bit absolute moffs):
    // the MMIO gap holds no device there.
    asm.bytes(&[0xa1, 0, 0, 0, 0xe0])
        .bytes(&[0xa3, 4, 0, 0, 0xe0]);
    asm.mov_dx(0x3f8);
    // Reads of absent devices return all-ones: print 'Y' only if so.
    asm.bytes(&[0x3d, 0xff, 0xff, 0xff, 0xff]); // cmp eax, 0xffffffff
    asm.bytes(&[0x75, 0x03]); // jne over "mov al, 'Y'; out dx, al"
    asm.mov_al(b'Y').out_dx_al();
    asm.print("\nstill running\n").reset();
    let (code, out, err) = run_guest(&asm.code, true, &[]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "Y\nstill running\n");
    assert!(err.contains("port access to no device"), "{err}");
    assert!(err.contains("MMIO access to no device"), "{err}");
}

#[test]
fn console_log_file_is_capped() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let mut asm = Asm::new();
    for i in 0..200 {
        asm.print(&format!("line {i:04}\n"));
    }
    asm.reset();
    let (code, out, err) = run_guest(
        &asm.code,
        true,
        &[
            "--serial",
            log.to_str().unwrap(),
            "--serial-max-bytes",
            "1024",
        ],
    );
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.len() <= 1024, "log is {} bytes", text.len());
    assert!(text.ends_with("line 0199\n"), "{text}");
    assert!(!text.contains("line 0000"));
}
