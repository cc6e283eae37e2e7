//! The escalation of a stop: a guest that ignores Ctrl-Alt-Del is stopped
//! through the VMM's `stop` after the graceful timeout (exit 0), a paused one
//! likewise, and a VMM that does not answer at all is SIGKILLed. Either way
//! the disk is kept and the instance is Stopped on request.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, have_prereqs, Env};
use nubis_agent::context::HostContext;
use nubis_agent::host::vmm_process::VmmApi;
use nubis_agent::instance::{InstanceHandle, Report};
use nubis_agent::runtime::{ReasonCode, Request, State};
use nubis_agent::types::{ImageName, InstanceId, InstanceSpec};

const WAIT: Duration = Duration::from_secs(120);

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec {
        id: InstanceId::new(id).unwrap(),
        image: ImageName::new("hello").unwrap(),
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

fn ctx(env: &Env) -> Arc<HostContext> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(rx);
    HostContext::new(env.config.clone(), tx).unwrap()
}

async fn boot(h: &InstanceHandle) -> Report {
    h.request(Request::Start, 1, false).await.unwrap().unwrap();
    let r = h
        .wait_for(WAIT, |r| r.ready || r.state == State::Failed)
        .await
        .unwrap();
    assert!(r.ready, "{r:?}");
    r
}

#[test]
fn paused_guest_is_stopped_by_the_vmm_stop() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let h = InstanceHandle::spawn_new(ctx(&env), spec("i-paus0001"));
        let r = boot(&h).await;
        let dir = env.config.state_dir.join("instances/i-paus0001");
        // A paused guest cannot answer Ctrl-Alt-Del.
        VmmApi::new(dir.join("api.sock"))
            .call(nubis_vmm_api::Action::Pause)
            .await
            .unwrap();
        let t = Instant::now();
        h.request(Request::Stop, 2, false).await.unwrap().unwrap();
        let s = h
            .wait_for(WAIT, |r| r.state == State::Stopped)
            .await
            .unwrap();
        assert_eq!(s.reason.unwrap().code, ReasonCode::UserInitiatedShutdown);
        assert_eq!(s.vmm_exit_code, Some(0), "the VMM's own stop exits 0");
        assert!(!alive(r.pid.unwrap()));
        assert!(t.elapsed() < WAIT);
        assert!(dir.join("disk.raw").is_file(), "disk kept");
        h.request(Request::Terminate, 3, true)
            .await
            .unwrap()
            .unwrap();
        h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
    });
}

#[test]
fn unresponsive_vmm_is_killed() {
    if !have_prereqs(true) {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        let h = InstanceHandle::spawn_new(ctx(&env), spec("i-hung0001"));
        let r = boot(&h).await;
        let pid = rustix::process::Pid::from_raw(r.pid.unwrap()).unwrap();
        // A frozen VMM answers nothing: neither Ctrl-Alt-Del nor stop.
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        h.request(Request::Stop, 2, false).await.unwrap().unwrap();
        let s = h.wait_for(WAIT, |r| r.state == State::Stopped).await;
        // Never leave a stopped process behind, whatever happened.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let s = s.unwrap();
        assert_eq!(s.reason.unwrap().code, ReasonCode::UserInitiatedShutdown);
        assert_eq!(s.vmm_exit_code, None, "ended by SIGKILL, not an exit");
        assert!(!alive(r.pid.unwrap()));
        h.request(Request::Terminate, 3, true)
            .await
            .unwrap()
            .unwrap();
        h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
    });
}

#[test]
fn guest_ignoring_ctrl_alt_del_is_stopped_after_the_graceful_timeout() {
    if !have_prereqs(true)
        || !common::prerequisite(
            common::image_dir().join("linux/manifest.json").is_file(),
            "linux image (deploy/images/build.sh linux)",
        )
    {
        return;
    }
    let env = Env::new();
    let rt = env.runtime();
    rt.block_on(async {
        // The Linux guest spends its first minutes in (interpreted, on PVM
        // hosts) early boot, long before its i8042 driver could see the
        // Ctrl-Alt-Del: only the VMM's stop ends it.
        let mut s = spec("i-linx0001");
        s.image = ImageName::new("linux").unwrap();
        s.memory_mib = 128;
        let h = InstanceHandle::spawn_new(ctx(&env), s);
        h.request(Request::Start, 1, false).await.unwrap().unwrap();
        let r = h
            .wait_for(WAIT, |r| {
                r.state != State::Starting
                    && r.state != State::Absent
                    && r.state != State::Preparing
            })
            .await
            .unwrap();
        assert_eq!(r.state, State::Running, "{r:?}");
        let t = Instant::now();
        h.request(Request::Stop, 2, false).await.unwrap().unwrap();
        let s = h
            .wait_for(WAIT, |r| r.state == State::Stopped)
            .await
            .unwrap();
        let took = t.elapsed();
        // On hardware KVM the guest may boot far enough within the graceful
        // timeout to honour Ctrl-Alt-Del itself (also a VMM exit 0); on PVM
        // hosts it cannot, so the escalation must have happened.
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            assert!(
                took >= Duration::from_secs(env.config.timeouts.graceful_stop_secs),
                "stopped after {took:?}: the guest reacted to Ctrl-Alt-Del?"
            );
        }
        assert_eq!(s.reason.unwrap().code, ReasonCode::UserInitiatedShutdown);
        assert_eq!(s.vmm_exit_code, Some(0));
        assert!(!alive(r.pid.unwrap()));
        h.request(Request::Terminate, 3, true)
            .await
            .unwrap()
            .unwrap();
        h.wait_for(WAIT, |r| r.state == State::Gone).await.unwrap();
    });
}
