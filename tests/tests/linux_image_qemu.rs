//! Image check for the `linux` guest image: boots `target/images/linux` in QEMU's
//! `microvm` machine under TCG (no firmware tables but the MP table, virtio-mmio
//! devices on the command line, an i8042), the machine model nubis-vmm offers, and
//! checks that the kernel reaches the initramfs, finds its CPUs, keyboard controller
//! and virtio devices, and resets the machine at the end.
//!
//! TCG, not KVM: the point is the image itself (on this project's PVM development
//! hosts a stock kernel cannot run user space under KVM; see
//! shared notes/environment.md). The VMM's own tests boot images under KVM.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Coarse guard only: the boot takes a few seconds under TCG on an idle machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const DISK_SECTORS: u64 = 6_144 + 7;
const NET_MAC: &str = "02:4e:42:00:00:2a";

/// Kills QEMU when the test ends, also on panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

fn manifest(dir: &Path) -> serde_json::Value {
    let raw = std::fs::read_to_string(dir.join("manifest.json")).expect("read manifest.json");
    serde_json::from_str(&raw).expect("manifest.json is JSON")
}

/// The built image and QEMU, or `None` (skip) when either is missing.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let image = nubis_tests::image_dir().join("linux");
    let have_image = ["manifest.json", "kernel", "initrd"]
        .iter()
        .all(|f| image.join(f).is_file());
    if !nubis_tests::prerequisite(
        have_image,
        "linux image in target/images/linux (run deploy/images/build.sh linux)",
    ) {
        return None;
    }
    let qemu = find_in_path("qemu-system-x86_64");
    if !nubis_tests::prerequisite(
        qemu.is_some(),
        "qemu-system-x86_64 (Debian qemu-system-x86)",
    ) {
        return None;
    }
    Some((image, qemu?))
}

#[test]
fn linux_manifest_describes_the_built_files() {
    let Some((image, _)) = prerequisites() else {
        return;
    };
    let m = manifest(&image);
    assert_eq!(m["name"], "linux");
    assert_eq!(m["kernel"], "kernel");
    assert_eq!(m["initrd"], "initrd");
    assert_eq!(m["bzimage"], "bzImage");
    let cmdline = m["cmdline"].as_str().expect("cmdline is a string");
    assert!(
        cmdline.contains("console=ttyS0") && cmdline.contains("reboot=k"),
        "{cmdline}"
    );
    assert!(m["pvm_cmdline_extra"]
        .as_str()
        .is_some_and(|s| s.contains("noxsave")));
    let patches = m["patches"].as_array().expect("patches");
    // Applied by default on PVM hosts (see deploy/images/linux/inputs.sh).
    let pvm_host = std::path::Path::new("/sys/module/kvm_pvm").is_dir();
    let pvm_forced = std::env::var("NUBIS_LINUX_PVM_PATCH").ok();
    if pvm_forced.is_none() && pvm_host {
        assert!(
            patches.iter().any(|p| p == "pvm-skip-int3-selftest.patch"),
            "{m}"
        );
    }
    let vmm = m["requires"]["vmm"].as_array().expect("requires.vmm");
    for feature in [
        "elf-pvh",
        "initrd",
        "serial",
        "i8042",
        "virtio-mmio",
        "mptable",
    ] {
        assert!(
            vmm.iter().any(|v| v == feature),
            "requires.vmm lacks {feature}: {m}"
        );
    }
    assert!(m["requires"]["min_memory_mib"]
        .as_u64()
        .is_some_and(|n| n >= 64));

    for (name, info) in m["files"].as_object().expect("files") {
        let data = std::fs::read(image.join(name)).expect("read image file");
        assert_eq!(info["size"], data.len() as u64, "{name}");
        let digest: String = <sha2::Sha256 as sha2::Digest>::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(info["sha256"], digest, "{name}");
    }
    let kernel = std::fs::read(image.join("kernel")).expect("read kernel");
    assert_eq!(&kernel[..4], b"\x7fELF", "kernel is an ELF vmlinux");
    let initrd = std::fs::read(image.join("initrd")).expect("read initrd");
    assert_eq!(&initrd[..6], b"070701", "initrd is a newc cpio archive");
    assert_eq!(m["initrd_format"], "newc-cpio");
}

#[test]
fn linux_image_boots_to_init_in_qemu_microvm() {
    let Some((image, qemu)) = prerequisites() else {
        return;
    };
    let m = manifest(&image);
    let cmdline = m["cmdline"]
        .as_str()
        .expect("cmdline is a string")
        .to_owned();

    let scratch = tempfile::tempdir().expect("tempdir");
    let disk = scratch.path().join("disk.raw");
    let f = std::fs::File::create(&disk).expect("create disk");
    f.set_len(DISK_SECTORS * 512).expect("size disk");
    drop(f);

    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max"])
        .args(["-smp", "2", "-m", "256"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(image.join("kernel"))
        .arg("-initrd")
        .arg(image.join("initrd"))
        .args(["-append", &cmdline])
        .arg("-drive")
        .arg(format!(
            "id=d0,file={},format=raw,if=none,cache=unsafe",
            disk.display()
        ))
        .args(["-device", "virtio-blk-device,drive=d0"])
        // A hub port with nothing else on the hub: the guest gets a NIC, no
        // packet leaves QEMU.
        .args(["-netdev", "hubport,id=n0,hubid=0"])
        .args([
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={NET_MAC}"),
        ])
        .args(["-device", "virtio-rng-device"])
        // The keyboard controller nubis-vmm emulates (microvm has none by default).
        .args(["-device", "i8042"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("start qemu"));

    let stdout = child.0.stdout.take().expect("qemu stdout");
    let mut stderr = child.0.stderr.take().expect("qemu stderr");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Collect the console until QEMU exits (the guest resets; -no-reboot) or time runs out.
    let start = Instant::now();
    let mut console = Vec::new();
    let mut status: Option<ExitStatus> = None;
    while start.elapsed() < BOOT_TIMEOUT {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => console.push(line.trim_end_matches('\r').to_owned()),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                status = child.0.wait().ok();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    if status.is_none() {
        let _ = child.0.kill();
        let _ = child.0.wait();
    }
    let qemu_err = err_reader.join().unwrap_or_default();
    let log = format!(
        "after {elapsed:?}, qemu status {status:?}\n--- console\n{}\n--- qemu stderr\n{qemu_err}",
        console.join("\n")
    );
    let has = |s: &str| console.iter().any(|l| l.trim() == s);

    assert!(has("NUBIS-LINUX-INIT-OK"), "init never ran\n{log}");
    assert!(
        console
            .iter()
            .any(|l| l.contains("Run /init as init process")),
        "{log}"
    );
    assert!(
        has("NUBIS-LINUX-CPUS 2"),
        "both CPUs from the MP table\n{log}"
    );
    assert!(
        console
            .iter()
            .any(|l| l.contains("serio: i8042 KBD port at 0x60,0x64 irq 1")),
        "i8042 driver\n{log}"
    );
    assert!(
        has(&format!("NUBIS-LINUX-BLOCK vda sectors={DISK_SECTORS}")),
        "virtio-blk disk\n{log}"
    );
    assert!(
        has(&format!("NUBIS-LINUX-NET eth0 mac={NET_MAC}")),
        "virtio-net\n{log}"
    );
    for id in ["0x0001", "0x0002", "0x0004"] {
        assert!(
            console
                .iter()
                .any(|l| l.starts_with("NUBIS-LINUX-VIRTIO ")
                    && l.ends_with(&format!("device-id={id}"))),
            "virtio device {id}\n{log}"
        );
    }
    assert!(has("NUBIS-LINUX-RNG virtio_rng.0"), "virtio-rng\n{log}");
    assert!(has("NUBIS-LINUX-RESET"), "{log}");
    assert!(!has("NUBIS-LINUX-RESET-FAILED"), "{log}");
    // The guest's reset ends QEMU cleanly (-no-reboot); a timeout or crash does not.
    assert!(
        status.is_some_and(|s| s.success()),
        "guest reset must end QEMU with status 0\n{log}"
    );
    eprintln!("linux image booted to init and reset in {elapsed:?} (TCG)");
}
