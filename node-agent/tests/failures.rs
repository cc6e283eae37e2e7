//! Failure reporting: each failure ends in the right state with a typed
//! reason while the agent keeps serving other instances.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{alive, have_prereqs, image_dir, Env};
use nubis_agent::config::Config;
use nubis_agent::context::HostContext;
use nubis_agent::host::image::sha256_file;
use nubis_agent::instance::{InstanceHandle, Report};
use nubis_agent::runtime::{ReasonCode, Request, State};
use nubis_agent::types::{ImageName, InstanceId, InstanceSpec};

const WAIT: Duration = Duration::from_secs(120);

fn spec(id: &str, image: &str) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).unwrap(),
        image: ImageName::new(image).unwrap(),
        vcpus: 1,
        memory_mib: 64,
        cmdline_extra: String::new(),
        ip: None,
        mac: None,
        prefix_len: None,
        gateway: None,
        image_manifest_sha256: None,
        metadata: None,
        root_volume_gib: None,
        limits: None,
        vpc: None,
        extra_networks: Vec::new(),
    }
}

fn ctx(config: Config) -> Arc<HostContext> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    HostContext::new(config, tx).unwrap()
}

/// Writes an image `<dir>/<name>` with `kernel` bytes; `digest` overrides
/// the manifest's sha256 of the kernel.
fn write_image(dir: &Path, name: &str, kernel: &[u8], digest: Option<&str>) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("kernel"), kernel).unwrap();
    let sha = digest
        .map(str::to_string)
        .unwrap_or_else(|| sha256_file(&d.join("kernel")).unwrap());
    let m = serde_json::json!({
        "name": name, "kernel": "kernel", "initrd": null, "cmdline": "nubis.id=unknown",
        "requires": {"vmm": ["elf-pvh"], "min_memory_mib": 32},
        "files": {"kernel": {"sha256": sha, "size": kernel.len()}}
    });
    std::fs::write(d.join("manifest.json"), m.to_string()).unwrap();
}

async fn settle(h: &InstanceHandle) -> Report {
    h.request(Request::Start, 1, false).await.unwrap().unwrap();
    match h
        .wait_for(WAIT, |r| {
            matches!(r.state, State::Failed | State::Stopped) || r.ready
        })
        .await
    {
        Ok(r) | Err(r) => r,
    }
}

async fn h_start(h: &InstanceHandle, generation: u64) {
    h.request(Request::Start, generation, false)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn image_and_vmm_failures_have_reasons_and_others_keep_running() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let images = tempfile::tempdir().unwrap();
    let hello = std::fs::read(image_dir().join("hello/kernel")).unwrap();
    write_image(images.path(), "hello", &hello, None);
    write_image(images.path(), "badsum", &hello, Some(&"0".repeat(64)));
    write_image(images.path(), "badkernel", b"this is not a kernel", None);
    let mut cfg = env.config.clone();
    cfg.image_dir = images.path().to_path_buf();
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(cfg);
        let good = InstanceHandle::spawn_new(ctx.clone(), spec("i-good0001", "hello"));
        let missing = InstanceHandle::spawn_new(ctx.clone(), spec("i-miss0001", "nosuch"));
        let badsum = InstanceHandle::spawn_new(ctx.clone(), spec("i-bsum0001", "badsum"));
        let badk = InstanceHandle::spawn_new(ctx.clone(), spec("i-bker0001", "badkernel"));
        let (g, m, s, k) = tokio::join!(
            settle(&good),
            settle(&missing),
            settle(&badsum),
            settle(&badk)
        );

        assert_eq!(m.state, State::Failed, "{m:?}");
        assert_eq!(
            m.reason.as_ref().unwrap().code.code(),
            "Server.ImageNotFound"
        );
        assert_eq!(s.state, State::Failed, "{s:?}");
        let r = s.reason.unwrap();
        assert_eq!(r.code, ReasonCode::ImageInvalid);
        assert!(r.message.contains("sha256"), "{}", r.message);
        assert_eq!(k.state, State::Failed, "{k:?}");
        assert_eq!(k.vmm_exit_code, Some(3), "{k:?}");
        assert_eq!(k.reason.unwrap().code, ReasonCode::KernelInvalid);
        // The image itself was not modified by anything.
        assert_eq!(
            std::fs::read(images.path().join("hello/kernel")).unwrap(),
            hello
        );

        // The healthy instance is unaffected.
        assert!(g.ready && g.state == State::Running, "{g:?}");

        // A VMM killed by a signal is a crash.
        let pid = g.pid.unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let r = good
            .wait_for(WAIT, |r| r.state == State::Failed)
            .await
            .unwrap();
        assert_eq!(r.reason.unwrap().code.code(), "Server.VmmCrashed");
        assert!(!alive(pid));

        // A failed instance can be started again (fresh VMM, same disk).
        h_start(&good, 2).await;
        let r = good.wait_for(WAIT, |r| r.ready).await;
        assert!(r.is_ok(), "{r:?}");

        for (i, h) in [&good, &missing, &badsum, &badk].into_iter().enumerate() {
            h.request(Request::Terminate, 10 + i as u64, true)
                .await
                .unwrap()
                .unwrap();
            h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(env.config.state_dir.join("instances"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    });
}

#[test]
fn tap_failure_is_network_setup_failed() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    // A "bridge" that is not a bridge: TAPs cannot be enslaved to it.
    let (ok, _) = env
        .netns
        .ip(&["tuntap", "add", "dev", "nbdummy0", "mode", "tap"]);
    assert!(ok);
    let mut cfg = env.config.clone();
    cfg.network.bridge = "nbdummy0".into();
    let rt = env.runtime();
    rt.block_on(async {
        let h = InstanceHandle::spawn_new(ctx(cfg), spec("i-ntap0001", "hello"));
        let r = settle(&h).await;
        assert_eq!(r.state, State::Failed, "{r:?}");
        let reason = r.reason.unwrap();
        assert_eq!(reason.code.code(), "Server.NetworkSetupFailed");
        assert!(reason.message.contains("master"), "{}", reason.message);
        // Terminate still cleans up the half-made instance.
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
        assert!(env.netns.links_with_prefix("nbt").is_empty());
    });
}

#[test]
fn unusable_spec_networks_fail_the_instance_with_a_reason() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let mut cfg = env.config.clone();
    // No default subnet: only specs that bring one can launch.
    cfg.network.bridge_address = None;
    let rt = env.runtime();
    rt.block_on(async {
        let ctx = ctx(cfg);
        let mut bad = spec("i-nnet0001", "hello");
        bad.ip = Some("10.77.0.1".parse().unwrap());
        bad.gateway = Some("10.77.0.1".parse().unwrap());
        bad.prefix_len = Some(16);
        let none = spec("i-nnet0002", "hello");
        for (s, want) in [(bad, "is the gateway"), (none, "bridge_address")] {
            let h = InstanceHandle::spawn_new(ctx.clone(), s);
            let r = settle(&h).await;
            assert_eq!(r.state, State::Failed, "{r:?}");
            let reason = r.reason.unwrap();
            assert_eq!(reason.code.code(), "Server.NetworkSetupFailed");
            assert!(reason.message.contains(want), "{}", reason.message);
            h.request(Request::Terminate, 2, true)
                .await
                .unwrap()
                .unwrap();
            h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
        }
        assert!(env.netns.links_with_prefix("nbt").is_empty());
    });
}

#[test]
fn cgroup_failure_is_cgroup_setup_failed() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    // A "cgroup2 mount" without controllers, limits enforced.
    let fake = tempfile::tempdir().unwrap();
    let mut cfg = env.config.clone();
    cfg.cgroup.mount = Some(fake.path().to_path_buf());
    cfg.cgroup.enforce_limits = true;
    let rt = env.runtime();
    rt.block_on(async {
        let h = InstanceHandle::spawn_new(ctx(cfg), spec("i-cgrp0001", "hello"));
        let r = settle(&h).await;
        assert_eq!(r.state, State::Failed, "{r:?}");
        let reason = r.reason.unwrap();
        assert_eq!(reason.code.code(), "Server.CgroupSetupFailed");
        assert!(reason.message.contains("cgroup"), "{}", reason.message);
        assert!(r.pid.is_none());
        h.request(Request::Terminate, 2, true)
            .await
            .unwrap()
            .unwrap();
        h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
    });
}
