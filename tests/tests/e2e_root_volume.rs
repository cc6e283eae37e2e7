//! End to end: the root volume size. An instance launched with a larger
//! root volume (`nubis instances run --root-volume-gib`, EC2's root
//! BlockDeviceMapping `Ebs.VolumeSize`) gets a disk file of that size from
//! its agent — sparse, so it costs no space — and the hello guest sees that
//! capacity on its virtio-blk device; a stop and start (the agent prepares
//! the instance again) keeps it as it is. A size below the image's is
//! refused by the control plane with `InvalidBlockDeviceMapping` and
//! launches nothing.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nubis_tests::cluster::ops::{field, ids_of};
use nubis_tests::cluster::{self, Cluster, ClusterSpec};

const GIB: u64 = 1 << 30;

/// The capacity (512-byte sectors) from the last `NUBIS-DISK` console line.
fn last_capacity(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.split("capacity-sectors=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .next_back()
}

/// The disk file's size and the bytes it really occupies.
fn disk_sizes(c: &Cluster, id: &str) -> (u64, u64) {
    let disk = c.instance_disk(id).expect("the instance's disk file");
    let md = std::fs::metadata(&disk).expect("stat the disk file");
    (md.len(), md.blocks() * 512)
}

#[test]
fn larger_root_volume_reaches_the_disk_and_the_guest() {
    if !cluster::prerequisites_met() {
        return;
    }
    let c = Cluster::start(ClusterSpec::three_zones(2)).expect("cluster starts");
    let t = c.tenant.clone().expect("a tenant");
    let zone = cluster::zone('a');
    let v = c
        .try_run_hello(&t, 1, Some(&zone), &["--root-volume-gib", "3"])
        .json();
    let ids = ids_of(&v);
    let id = ids[0].clone();
    c.wait_state(&t, &ids, "ready");
    let (len, used) = disk_sizes(&c, &id);
    assert_eq!(len, 3 * GIB, "disk file size");
    assert!(
        used < 64 << 20,
        "the grown disk is not sparse: {used} bytes"
    );
    let console = c.wait_console(&t, &id, "capacity-sectors=", 1);
    assert_eq!(last_capacity(&console), Some(3 * GIB / 512), "{console}");

    // An instance without a size keeps the image's (the hello image has no
    // disk: the agent's blank disk, 8 MiB by default).
    let plain = c.run_hello(&t, 1, Some(&zone));
    c.wait_state(&t, &plain, "ready");
    assert_eq!(disk_sizes(&c, &plain[0]).0, 8 << 20);

    // Stop and start: prepared again, the disk stays as it is.
    let out = c.tenant_cli(&["instances", "stop", &id, "--wait", "--timeout", "120s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(disk_sizes(&c, &id).0, 3 * GIB);
    let out = c.tenant_cli(&["instances", "start", &id, "--wait", "--timeout", "120s"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.wait_state(&t, &ids, "ready");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let console = c.console(&t, &id);
        if console.matches("capacity-sectors=").count() >= 1
            && console.contains(&format!("NUBIS-GUEST-READY {id}"))
        {
            assert_eq!(last_capacity(&console), Some(3 * GIB / 512), "{console}");
            break;
        }
        assert!(Instant::now() < end, "no disk line after start:\n{console}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(disk_sizes(&c, &id).0, 3 * GIB);

    // An image whose disk is 2 GiB refuses 1 GiB, and launches nothing.
    let out = c.admin_cli(&[
        "images",
        "register",
        "--name",
        "hello-2g",
        "--location",
        "hello",
        "--public",
        "--root-volume-gib",
        "2",
        "-o",
        "json",
    ]);
    let sized = out.json()["image_id"]
        .as_str()
        .expect("image_id")
        .to_string();
    let run_sized = |gib: &str| {
        c.tenant_cli(&[
            "instances",
            "run",
            "--image",
            &sized,
            "--type",
            "t3.nano",
            "--root-volume-gib",
            gib,
            "-o",
            "json",
        ])
    };
    let before = c.list_instances(&t, &[]).len();
    let out = run_sized("1");
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("InvalidBlockDeviceMapping")
            && out.stderr.contains("expect size >= 2GB"),
        "{}",
        out.stderr
    );
    assert_eq!(c.list_instances(&t, &[]).len(), before);
    let ok = run_sized("2");
    let ids2 = ids_of(&ok.json());
    let ready = c.wait_state(&t, &ids2, "ready");
    assert_eq!(field(&ready[0], "state"), "running");
    assert_eq!(disk_sizes(&c, &ids2[0]).0, 2 * GIB);
}
