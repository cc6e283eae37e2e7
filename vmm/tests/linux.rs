//! Slow tier: boots the `linux` image (target/images/linux: ELF vmlinux with
//! a PVH note, bzImage, busybox initrd) through `nubis-vmm` with a virtio-blk
//! disk and a virtio-net device on a TAP in a test namespace.
//!
//! On PVM hosts (/sys/module/kvm_pvm) guest ring 0 is interpreted and Linux
//! cannot run user space (init's first `syscall` faults, the kernel panics
//! and, with `panic=-1 reboot=k`, resets through our i8042). There the test
//! boots the image's minimal initramfs (`initrd-min`, one 9 KB /init) with
//! the manifest's `pvm_cmdline_extra` and asserts what the kernel itself
//! shows: its virtio-blk driver probed our disk (its size line), its
//! virtio-net driver probed our NIC as eth0 with our MAC (kernel IP
//! autoconfiguration), "Run /init", then the reset ends the VMM with status
//! 0. About 2 minutes there (see deploy/images/linux/README.md). On hardware
//! KVM it asserts the busybox initramfs' own report and the reset.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// To "Run /init" on PVM (about 110 s on an idle machine, minutes more when
/// it is loaded) or the initramfs' reset on hardware KVM (about a second).
/// Together with [`GUEST_TIMEOUT`] below nextest's 10-minute limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(480);
const DISK_SECTORS: u64 = 65536;

struct Image {
    kernel: PathBuf,
    bzimage: PathBuf,
    initrd: PathBuf,
    /// The minimal initramfs (`/init` prints a line and resets).
    initrd_min: Option<PathBuf>,
    cmdline: String,
}

fn linux_image() -> Option<Image> {
    let dir = image_dir().join("linux");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).ok();
    if !prerequisite(
        manifest.is_some() && dir.join("kernel").exists() && dir.join("initrd").exists(),
        &format!("{} (deploy/images/build.sh linux)", dir.display()),
    ) {
        return None;
    }
    let m: serde_json::Value = serde_json::from_str(&manifest.unwrap()).unwrap();
    let mut cmdline = m["cmdline"].as_str().unwrap().to_string();
    if is_pvm() {
        // noxsave nofsgsbase clearcpuid=...: instructions PVM cannot run;
        // lapic=notscdeadline, no-kvmclock, pty.legacy_count=0: see "Under
        // PVM KVM" in deploy/images/linux/README.md.
        cmdline.push(' ');
        cmdline.push_str(m["pvm_cmdline_extra"].as_str().unwrap_or_default());
    }
    Some(Image {
        kernel: dir.join(m["kernel"].as_str().unwrap()),
        bzimage: dir.join(m["bzimage"].as_str().unwrap_or("bzImage")),
        initrd: dir.join(m["initrd"].as_str().unwrap()),
        initrd_min: m["initrd_min"].as_str().map(|f| dir.join(f)),
        cmdline,
    })
}

#[test]
fn bzimage_of_the_linux_image_loads_with_the_64_bit_protocol() {
    let Some(image) = linux_image() else {
        return;
    };
    let mem = nubis_vmm::vstate::memory::create(256).unwrap();
    let k = nubis_vmm::boot::load_kernel(&mem, &image.bzimage).unwrap();
    assert_eq!(k.entry.protocol, nubis_vmm::boot::BootProtocol::Linux64);
    assert_eq!(k.entry.addr, 0x10_0200);
    let k = nubis_vmm::boot::load_kernel(&mem, &image.kernel).unwrap();
    assert_eq!(k.entry.protocol, nubis_vmm::boot::BootProtocol::Pvh);
}

#[test]
fn slow_linux_boots_and_probes_disk_and_net() {
    if !kvm() {
        return;
    }
    let Some(image) = linux_image() else {
        return;
    };
    let pvm = is_pvm();
    let initrd = if pvm {
        // Unpacking the 2 MB busybox archive alone takes minutes of
        // interpreted ring 0 there, for a user space that cannot run.
        let min = image.initrd_min.clone().filter(|p| p.exists());
        if !prerequisite(
            min.is_some(),
            "initrd-min in the linux image (rebuild: deploy/images/build.sh linux)",
        ) {
            return;
        }
        min.unwrap()
    } else {
        image.initrd.clone()
    };
    let Some(ns) = NetNs::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_SECTORS * 512)
        .unwrap();
    let console = dir.path().join("console.log");
    let vcpus: u8 = if pvm { 1 } else { 2 };
    let cmdline = format!(
        "{} ip=10.0.0.2::10.0.0.1:255.255.255.0:nubis:eth0:off",
        image.cmdline
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, vmm_bin()])
        .args(["--kernel", image.kernel.to_str().unwrap()])
        .args(["--initrd", initrd.to_str().unwrap()])
        .args([
            "--cmdline",
            &cmdline,
            "--vcpus",
            &vcpus.to_string(),
            "--memory-mib",
            "256",
        ])
        .args(["--disk", &format!("{},id=nubis-disk", disk.display())])
        .args(["--net", &format!("tap={},mac=02:00:0a:00:00:02", ns.tap)])
        .args(["--serial", console.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = ChildGuard::spawn(cmd);
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    // On PVM the kernel panics when init dies at its first system call and
    // resets the machine (panic=-1, reboot=k); on hardware KVM init resets.
    let status = child.wait_timeout(BOOT_TIMEOUT);
    let text = log();
    eprintln!(
        "linux guest ended after {:?} (pvm: {pvm}): {status:?}",
        started.elapsed()
    );
    let Some(status) = status else {
        child.signal(libc::SIGTERM);
        let _ = child.wait_timeout(GUEST_TIMEOUT);
        panic!(
            "the guest did not reset within {BOOT_TIMEOUT:?}; console:\n{text}\nstderr:\n{}",
            child.stderr_text()
        );
    };
    assert_eq!(
        status.code(),
        Some(0),
        "console:\n{text}\nstderr:\n{}",
        child.stderr_text()
    );
    let ioapic = format!(
        "IOAPIC[0]: apic_id {}, version 17, address 0xfec00000, GSI 0-23",
        vcpus + 1
    );
    let cpus = format!("Processors: {vcpus}");
    let blk = format!("virtio_blk virtio0: [vda] {DISK_SECTORS} 512-byte logical blocks");
    let mut expected = vec![
        ioapic.as_str(),
        cpus.as_str(),
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
        "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
        "MPTABLE: OEM ID: NUBIS",
        "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6",
        "Registering device virtio-mmio.0 at 0xd0000000-0xd0000fff, IRQ 5.",
        "Registering device virtio-mmio.1 at 0xd0001000-0xd0001fff, IRQ 6.",
        "Registering device virtio-mmio.2 at 0xd0002000-0xd0002fff, IRQ 7.",
        // The kernel's virtio-blk driver read our capacity.
        blk.as_str(),
        // Its virtio-net driver probed our NIC as eth0 and read our MAC;
        // IP autoconfiguration brought it up.
        "IP-Config: Complete:",
        "device=eth0, hwaddr=02:00:0a:00:00:02, ipaddr=10.0.0.2",
        "Run /init as init process",
    ];
    let block = format!("NUBIS-LINUX-BLOCK vda sectors={DISK_SECTORS}");
    if !pvm {
        expected.extend([
            "NUBIS-LINUX-INIT-OK",
            "NUBIS-LINUX-CPUS 2",
            block.as_str(),
            "NUBIS-LINUX-NET eth0 mac=02:00:0a:00:00:02",
            "NUBIS-LINUX-RESET",
        ]);
    }
    for line in expected {
        assert!(text.contains(line), "no {line:?}:\n{text}");
    }
    if pvm {
        // Frames the guest sent through our virtio-net (IPv6 duplicate
        // address detection and MLD once eth0 is up; on PVM about 15 s of
        // guest time pass between that and init) arrived on the TAP, which
        // counts what the VMM writes to it as received.
        let path = format!("/sys/class/net/{}/statistics/rx_packets", ns.tap);
        let out = ns.exec(&["cat", &path]);
        let frames: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(
            frames > 0,
            "no guest frame reached the TAP; console:\n{text}"
        );
    }
}

#[test]
fn slow_linux_bzimage_boots_through_the_64_bit_entry() {
    if !kvm() {
        return;
    }
    let Some(image) = linux_image() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let cmdline = image.cmdline.clone();
    let mut cmd = vmm_cmd(&[
        "--kernel",
        image.bzimage.to_str().unwrap(),
        "--initrd",
        image.initrd.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--memory-mib",
        "256",
        "--serial",
        console.to_str().unwrap(),
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(cmd);
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    if is_pvm() {
        // Decompressing the xz payload at interpreted ring 0 takes far longer
        // than a test may, and the decompressor prints nothing without
        // CONFIG_X86_VERBOSE_BOOTUP. A wrong entry point or zero page
        // triple-faults (exit 0) or fails emulation (exit 1) within
        // milliseconds; the decompressor still running after 30 s is the
        // evidence here.
        std::thread::sleep(Duration::from_secs(30));
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "bzImage guest ended early: {}",
            child.stderr_text()
        );
        child.signal(libc::SIGTERM);
        let status = child.wait_timeout(GUEST_TIMEOUT).expect("no exit");
        assert_eq!(status.code(), Some(0));
    } else {
        let reached = wait_for(BOOT_TIMEOUT, || log().contains("NUBIS-LINUX-RESET"));
        assert!(reached, "bzImage did not reach init; console:\n{}", log());
        assert!(log().contains("NUBIS-LINUX-INIT-OK"));
        let status = child
            .wait_timeout(GUEST_TIMEOUT)
            .expect("no exit after reset");
        assert_eq!(status.code(), Some(0), "{}", child.stderr_text());
    }
}
